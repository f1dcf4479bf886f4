//! Starting a plugin process: everything is prepared in the parent, and the
//! child between fork and exec only makes raw, async-signal-safe syscalls
//! in a fixed order, ending with the seccomp filter and `execveat` of the
//! descriptor that was verified.
//!
//! Spawns run on one long-lived thread: the parent-death signal follows the
//! thread that forked, so a short-lived blocking-pool thread would take its
//! plugins with it when it retires.

use std::ffi::{CString, c_char, c_int};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use super::cgroup::{self, ForkMode, JoinFds};
use super::netns::NetnsPool;
use super::pidfd;

/// Which side of the fork we are on.
enum Fork {
    Child(Option<cgroup::ChildJoin>),
    Parent { pid: libc::pid_t, pidfd: Option<OwnedFd> },
}

/// The verified binary sits here at exec time. The plugin's hard
/// `RLIMIT_NOFILE` is below it, so after start the plugin can never hold
/// this descriptor number again, which is what lets a seccomp rule allow
/// exactly one `execveat(EXEC_FD, "", .., AT_EMPTY_PATH)`.
pub const EXEC_FD: RawFd = 1000;
/// Reports a failed step (or passes the seccomp listener) to the parent;
/// close-on-exec, so a successful exec shows up as end-of-file.
pub(crate) const STATUS_FD: RawFd = 1001;
/// The Landlock ruleset, kept open until the child restricts itself.
const LANDLOCK_FD: RawFd = 1002;
/// Scratch descriptors while moving fds into place.
const TEMP_FD_MIN: RawFd = 1003;
/// How long a child may take from fork to exec.
const EXEC_TIMEOUT: Duration = Duration::from_secs(10);

/// A resource limit for the child: (resource, soft, hard).
pub type Rlimit = (libc::__rlimit_resource_t, u64, u64);

/// The kernel fences applied between fork and exec; each part is optional
/// so the same path serves every tier and unsandboxed development runs.
#[derive(Debug, Default)]
pub struct ChildSandbox {
    /// The instance's cgroup leaves: the child is cloned into the v2 leaf
    /// and writes itself into the v1 leaves before it runs a single
    /// instruction of the plugin.
    pub cgroup: Option<JoinFds>,
    /// `CLONE_NEW*` flags: given to clone3, or (fork fallback) to `unshare`
    /// in the child.
    pub clone_flags: c_int,
    pub rlimits: Vec<Rlimit>,
    /// (uid, gid) to switch to; supplementary groups are dropped.
    pub creds: Option<(libc::uid_t, libc::gid_t)>,
    pub no_new_privs: bool,
    /// The working directory (the plugin's data directory); `/` when unset,
    /// so a plugin never works in whatever directory the daemon started in.
    pub cwd: Option<CString>,
    /// A Landlock ruleset fd to restrict the child with.
    pub landlock: Option<OwnedFd>,
    /// A seccomp program; installed last, with a user-notification listener
    /// handed back to the parent so violations can be reported by name.
    pub seccomp: Option<Vec<libc::sock_filter>>,
}

/// Everything one spawn needs, prepared in the parent.
#[derive(Debug)]
pub struct SpawnPlan {
    pub plugin: String,
    /// The binary, opened once and verified; executed as is.
    pub binary: OwnedFd,
    pub argv: Vec<CString>,
    pub env: Vec<CString>,
    /// The child's fds 0, 1, 2, 3 and 4, in that order.
    pub fds: [OwnedFd; 5],
    pub sandbox: ChildSandbox,
}

/// A started child.
#[derive(Debug)]
pub struct Spawned {
    pub pid: libc::pid_t,
    pub pidfd: OwnedFd,
    pub seccomp_listener: Option<OwnedFd>,
}

/// Declares [`Step`], its wire numbers (from 1, in order) and what each
/// step does, from one list.
macro_rules! steps {
    ($first:ident => $first_what:literal, $($name:ident => $what:literal,)*) => {
        /// The steps the child takes, in order; a failure names its step.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(u32)]
        pub enum Step {
            $first = 1,
            $($name,)*
        }

        impl Step {
            const ALL: &[Step] = &[Step::$first, $(Step::$name,)*];

            pub fn describe(self) -> &'static str {
                match self {
                    Step::$first => $first_what,
                    $(Step::$name => $what,)*
                }
            }
        }
    };
}

steps! {
    Signals => "resetting signal dispositions",
    Setsid => "starting a new session",
    ParentDeathSignal => "setting the parent-death signal",
    ParentGone => "checking the supervisor is alive",
    JoinCgroup => "joining the instance's cgroups",
    JoinNetns => "joining its network namespace",
    ArrangeFds => "placing descriptors 0-4",
    CloseFds => "closing inherited descriptors",
    Unshare => "creating namespaces",
    Rlimit => "setting resource limits",
    Chdir => "entering its working directory",
    DropGroups => "dropping supplementary groups",
    Setgid => "switching group",
    Setuid => "switching user",
    CheckCreds => "confirming the user, group and supplementary groups took effect",
    NoNewPrivs => "setting no-new-privileges",
    Landlock => "applying Landlock rules",
    Seccomp => "installing the seccomp filter",
    SendListener => "handing over the seccomp listener",
    Exec => "executing the plugin binary",
}

/// Marks the message that carries the seccomp listener rather than an error.
const LISTENER_MSG: u32 = 0xffff_ffff;

impl Step {
    fn from_u32(v: u32) -> Option<Self> {
        Self::ALL.get(usize::try_from(v).ok()?.checked_sub(1)?).copied()
    }
}

/// Why a spawn failed.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("plugin {plugin:?}: {what}: {source}")]
    Io { plugin: String, what: &'static str, source: io::Error },
    #[error("plugin {plugin:?}: child failed {}: {}", step.describe(), io::Error::from_raw_os_error(*errno))]
    Child { plugin: String, step: Step, errno: i32 },
    #[error("plugin {plugin:?}: child did not exec within {EXEC_TIMEOUT:?}")]
    Timeout { plugin: String },
    #[error("plugin {plugin:?}: {source}")]
    Fork { plugin: String, source: cgroup::CgroupError },
    #[error("the spawner thread is gone")]
    SpawnerGone,
}

struct Job {
    plan: SpawnPlan,
    reply: tokio::sync::oneshot::Sender<Result<Spawned, SpawnError>>,
}

/// The long-lived thread every plugin is forked from.
#[derive(Clone, Debug)]
pub struct Spawner {
    tx: std::sync::mpsc::Sender<Job>,
}

impl Spawner {
    pub fn start() -> io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new().name("plugin-spawner".into()).spawn(move || {
            let netns = NetnsPool::default();
            while let Ok(job) = rx.recv() {
                // Nobody waits for this child any more (the start was
                // abandoned): it must not outlive that.
                if let Err(Ok(orphan)) = job.reply.send(spawn_now(job.plan, &netns)) {
                    pidfd::kill_and_reap(&orphan.pidfd);
                }
            }
        })?;
        Ok(Self { tx })
    }

    pub async fn spawn(&self, plan: SpawnPlan) -> Result<Spawned, SpawnError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.tx.send(Job { plan, reply }).map_err(|_| SpawnError::SpawnerGone)?;
        rx.await.map_err(|_| SpawnError::SpawnerGone)?
    }
}

/// Pointers and numbers only: this is all the child touches.
struct Raw<'a> {
    parent: libc::pid_t,
    fds: [RawFd; 5],
    binary: RawFd,
    status: RawFd,
    landlock: RawFd,
    argv: *const *const c_char,
    envp: *const *const c_char,
    /// A network namespace to join (`setns`), or -1.
    netns: RawFd,
    unshare: c_int,
    rlimits: &'a [Rlimit],
    cwd: *const c_char,
    creds: Option<(libc::uid_t, libc::gid_t)>,
    no_new_privs: bool,
    seccomp: Option<libc::sock_fprog>,
}

fn io_err<'a>(plugin: &'a str, what: &'static str) -> impl FnOnce(io::Error) -> SpawnError + 'a {
    move |source| SpawnError::Io { plugin: plugin.to_owned(), what, source }
}

fn spawn_now(plan: SpawnPlan, pool: &NetnsPool) -> Result<Spawned, SpawnError> {
    let plugin = plan.plugin.clone();
    // A network namespace made ahead of time is joined instead of created.
    let mut namespaces = plan.sandbox.clone_flags;
    let netns = if namespaces & libc::CLONE_NEWNET != 0 { pool.take() } else { None };
    if netns.is_some() {
        namespaces &= !libc::CLONE_NEWNET;
    }
    let (status_parent, status_child) = seqpacket_pair().map_err(io_err(&plugin, "creating the status socket"))?;
    let argv: Vec<*const c_char> = plan.argv.iter().map(|s| s.as_ptr()).chain([std::ptr::null()]).collect();
    let envp: Vec<*const c_char> = plan.env.iter().map(|s| s.as_ptr()).chain([std::ptr::null()]).collect();
    let seccomp = plan
        .sandbox
        .seccomp
        .as_ref()
        .map(|prog| libc::sock_fprog { len: prog.len() as u16, filter: prog.as_ptr() as *mut libc::sock_filter });
    let mut raw = Raw {
        // SAFETY: getpid has no preconditions.
        parent: unsafe { libc::getpid() },
        fds: [0, 1, 2, 3, 4].map(|i| plan.fds[i].as_raw_fd()),
        binary: plan.binary.as_raw_fd(),
        status: status_child.as_raw_fd(),
        landlock: plan.sandbox.landlock.as_ref().map_or(-1, AsRawFd::as_raw_fd),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        netns: netns.as_ref().map_or(-1, AsRawFd::as_raw_fd),
        unshare: namespaces,
        rlimits: &plan.sandbox.rlimits,
        cwd: plan.sandbox.cwd.as_deref().unwrap_or(c"/").as_ptr(),
        creds: plan.sandbox.creds,
        no_new_privs: plan.sandbox.no_new_privs,
        seccomp,
    };
    // SAFETY: forking a multi-threaded process is sound as long as the
    // child only makes async-signal-safe calls until exec: the child branch
    // below only joins cgroups through pre-opened fds and runs `child_main`,
    // which touches nothing but the prepared `raw` data and raw syscalls.
    let forked = unsafe {
        match &plan.sandbox.cgroup {
            Some(join) => join.spawn_with(ForkMode::Auto, namespaces as u32 as u64).map(|s| match s {
                cgroup::Spawned::Child(token) => Fork::Child(Some(token)),
                cgroup::Spawned::Parent { pid, pidfd, .. } => Fork::Parent { pid, pidfd },
            }),
            None => cgroup::fork_with_pidfd()
                .map(|f| match f {
                    cgroup::Forked::Child => Fork::Child(None),
                    cgroup::Forked::Parent { pid, pidfd } => Fork::Parent { pid, pidfd },
                })
                .map_err(|source| cgroup::CgroupError::Spawn { call: "fork", source }),
        }
    };
    let (pid, pidfd) = match forked {
        Err(e) => return Err(SpawnError::Fork { plugin, source: e }),
        Ok(Fork::Child(token)) => {
            // clone3 already gave the child its namespaces.
            if token.is_some_and(|t| t.cloned()) {
                raw.unshare = 0;
            }
            if let (Some(token), Some(join)) = (token, &plan.sandbox.cgroup)
                && let Err(e) = join.join_in_child(token)
            {
                // SAFETY: the forked child reporting a failed step; errno
                // set from the error first, async-signal-safe throughout.
                unsafe {
                    *libc::__errno_location() = e.raw_os_error().unwrap_or(libc::EIO);
                    fail(raw.status, Step::JoinCgroup)
                }
            }
            // SAFETY: we are the freshly forked child; see above.
            unsafe { child_main(&raw) }
        }
        Ok(Fork::Parent { pid, pidfd }) => (pid, pidfd),
    };
    // The child owns its copies now; ours must not keep its sockets alive.
    drop(status_child);
    if let Some(fd) = netns {
        pool.retire(fd);
    }
    drop(plan);
    let Some(pidfd) = pidfd else {
        // Kernels before 5.3: no pidfd, the pid is the only handle.
        kill_and_reap_pid(pid);
        return Err(io_err(&plugin, "opening a pidfd (Linux 5.3 or later is needed)")(io::Error::from_raw_os_error(
            libc::ENOSYS,
        )));
    };
    match await_exec(&status_parent) {
        Ok(listener) => Ok(Spawned { pid, pidfd, seccomp_listener: listener }),
        Err(e) => {
            pidfd::kill_and_reap(&pidfd);
            Err(match e {
                ExecWait::Failed { step, errno } => SpawnError::Child { plugin, step, errno },
                ExecWait::Timeout => SpawnError::Timeout { plugin },
                ExecWait::Io(e) => io_err(&plugin, "reading the child's status")(e),
            })
        }
    }
}

fn kill_and_reap_pid(pid: libc::pid_t) {
    // SAFETY: signalling and reaping our own child by pid; it is unreaped,
    // so the pid still names it.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
}

enum ExecWait {
    Failed { step: Step, errno: i32 },
    Timeout,
    Io(io::Error),
}

fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: socketpair writes two new descriptors into the array.
    let rc = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are fresh and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Waits for end-of-file (exec succeeded), collecting the seccomp listener
/// if the child sends one, or for a failure report.
fn await_exec(status: &OwnedFd) -> Result<Option<OwnedFd>, ExecWait> {
    let deadline = Instant::now() + EXEC_TIMEOUT;
    let mut listener = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ExecWait::Timeout);
        }
        let mut pfd = libc::pollfd { fd: status.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: poll on one pollfd we own.
        let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(ExecWait::Io(e));
        }
        if n == 0 {
            continue;
        }
        let mut msg = [0u32; 2];
        let (len, fd) = recv_with_fd(status, &mut msg).map_err(ExecWait::Io)?;
        if len == 0 {
            return Ok(listener);
        }
        if msg[0] == LISTENER_MSG {
            listener = fd;
            continue;
        }
        let step = Step::from_u32(msg[0]).unwrap_or(Step::Exec);
        return Err(ExecWait::Failed { step, errno: msg[1] as i32 });
    }
}

fn recv_with_fd(sock: &OwnedFd, msg: &mut [u32; 2]) -> io::Result<(usize, Option<OwnedFd>)> {
    // Room for one descriptor in the control message.
    let mut cbuf = [0u64; 4];
    let mut iov = libc::iovec { iov_base: msg.as_mut_ptr().cast(), iov_len: std::mem::size_of_val(msg) };
    // SAFETY: msghdr is plain data; zeroed then filled with pointers to
    // buffers that outlive the call.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    hdr.msg_control = cbuf.as_mut_ptr().cast();
    hdr.msg_controllen = std::mem::size_of_val(&cbuf);
    // SAFETY: recvmsg writes only into the buffers described by `hdr`.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut hdr, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fd = None;
    // SAFETY: walking the control messages the kernel wrote into `cbuf`,
    // with the libc macros that bound-check against msg_controllen.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&hdr);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let raw = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>());
                fd = Some(OwnedFd::from_raw_fd(raw));
            }
            cmsg = libc::CMSG_NXTHDR(&hdr, cmsg);
        }
    }
    Ok((n as usize, fd))
}

/// Reports `step`'s errno to the parent and exits.
///
/// # Safety
/// Only called in the forked child.
unsafe fn fail(status: RawFd, step: Step) -> ! {
    // SAFETY: errno location, write and _exit are async-signal-safe.
    unsafe {
        let errno = *libc::__errno_location();
        let msg = [step as u32, errno as u32];
        libc::write(status, msg.as_ptr().cast(), std::mem::size_of_val(&msg));
        libc::_exit(127)
    }
}

/// The child between fork and exec.
///
/// # Safety
/// Only called in the forked child, with `r` prepared by the parent.
unsafe fn child_main(r: &Raw<'_>) -> ! {
    let mut status = r.status;
    // Used only inside the unsafe block below.
    macro_rules! check {
        ($step:expr, $call:expr) => {
            if $call < 0 {
                fail(status, $step)
            }
        };
    }
    // SAFETY: every call in this block is a raw, async-signal-safe syscall
    // wrapper operating on data prepared before the fork.
    unsafe {
        // Signals: an empty mask, and default dispositions (the Rust
        // runtime ignores SIGPIPE, and exec keeps ignored signals ignored).
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        check!(Step::Signals, libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()));
        for sig in 1..32 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        check!(Step::Setsid, libc::setsid());
        // Set now too, though the change of credentials below clears it: what the
        // child does as root until then (a chdir on a hung mount) must not outlive us.
        check!(Step::ParentDeathSignal, libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0));
        // The supervisor may have died between fork and prctl.
        if libc::getppid() != r.parent {
            *libc::__errno_location() = libc::ESRCH;
            fail(status, Step::ParentGone);
        }
        // Still root here, as joining needs; the fd is close-on-exec and
        // closed with the other inherited ones below.
        if r.netns >= 0 {
            check!(Step::JoinNetns, libc::setns(r.netns, libc::CLONE_NEWNET));
        }
        // Move every source above the targets first, so no source is
        // clobbered by another's dup2.
        let mut tmp = [0 as RawFd; 8];
        let srcs = [r.fds[0], r.fds[1], r.fds[2], r.fds[3], r.fds[4], r.binary, r.status, r.landlock];
        for (i, &src) in srcs.iter().enumerate() {
            tmp[i] = if src < 0 { -1 } else { libc::fcntl(src, libc::F_DUPFD_CLOEXEC, TEMP_FD_MIN) };
            check!(Step::ArrangeFds, if src < 0 { 0 } else { tmp[i] });
        }
        check!(Step::ArrangeFds, libc::dup3(tmp[6], STATUS_FD, libc::O_CLOEXEC));
        status = STATUS_FD;
        for (target, &t) in tmp[..5].iter().enumerate() {
            // dup2 leaves the target without close-on-exec: inherited.
            check!(Step::ArrangeFds, libc::dup2(t, target as RawFd));
        }
        check!(Step::ArrangeFds, libc::dup3(tmp[5], EXEC_FD, libc::O_CLOEXEC));
        if tmp[7] >= 0 {
            check!(Step::ArrangeFds, libc::dup3(tmp[7], LANDLOCK_FD, libc::O_CLOEXEC));
        } else {
            // Neither closing range below covers this number: without a ruleset to put
            // there, whatever the parent held at it (not close-on-exec, from a host
            // application or the daemon's own parent) would reach the plugin.
            libc::close(LANDLOCK_FD);
        }
        check!(Step::CloseFds, close_range(5, (EXEC_FD - 1) as u32));
        check!(Step::CloseFds, close_range(TEMP_FD_MIN as u32, u32::MAX));

        // A PID namespace needs clone3: unshare would only move our children.
        if r.unshare != 0 {
            check!(Step::Unshare, libc::unshare(r.unshare & !libc::CLONE_NEWPID));
        }
        for &(res, soft, hard) in r.rlimits {
            let lim = libc::rlimit { rlim_cur: soft, rlim_max: hard };
            check!(Step::Rlimit, libc::setrlimit(res, &lim));
        }
        // Still root: the data directory is the plugin's own, but a parent
        // directory on its path need not be open to the plugin's uid.
        check!(Step::Chdir, libc::chdir(r.cwd));
        if let Some((uid, gid)) = r.creds {
            // Raw syscalls, not glibc's wrappers: those broadcast the change
            // to every thread glibc believes the process has (the parent's,
            // gone in this child), under a lock another parent thread may
            // have held at the clone, which would hang the child forever.
            check!(Step::DropGroups, libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) as c_int);
            check!(Step::Setgid, libc::syscall(libc::SYS_setresgid, gid, gid, gid) as c_int);
            check!(Step::Setuid, libc::syscall(libc::SYS_setresuid, uid, uid, uid) as c_int);
            // A success is not proof: a seccomp profile the supervisor itself runs under
            // (a container runtime's) can answer these calls 0 without making them, and
            // the plugin would then run as root. Read every id back from the kernel.
            check!(Step::CheckCreds, creds_are(uid, gid));
            // The kernel clears the parent-death signal when the credentials change: set
            // it again, or a plugin outlives a killed supervisor wherever no cgroup kills
            // it. The supervisor may have died since the first check.
            check!(
                Step::ParentDeathSignal,
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0)
            );
            if libc::getppid() != r.parent {
                *libc::__errno_location() = libc::ESRCH;
                fail(status, Step::ParentGone);
            }
        }
        if r.no_new_privs {
            check!(Step::NoNewPrivs, libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0));
        }
        if r.landlock >= 0 {
            check!(Step::Landlock, libc::syscall(libc::SYS_landlock_restrict_self, LANDLOCK_FD, 0) as c_int);
            libc::close(LANDLOCK_FD);
        }
        if let Some(prog) = &r.seccomp {
            const SECCOMP_SET_MODE_FILTER: libc::c_ulong = 1;
            const SECCOMP_FILTER_FLAG_NEW_LISTENER: libc::c_ulong = 1 << 3;
            let listener = libc::syscall(
                libc::SYS_seccomp,
                SECCOMP_SET_MODE_FILTER,
                SECCOMP_FILTER_FLAG_NEW_LISTENER,
                prog as *const libc::sock_fprog,
            ) as c_int;
            check!(Step::Seccomp, listener);
            check!(Step::SendListener, send_fd(STATUS_FD, listener));
        }
        let empty = c"";
        libc::syscall(libc::SYS_execveat, EXEC_FD, empty.as_ptr(), r.argv, r.envp, libc::AT_EMPTY_PATH);
        fail(status, Step::Exec)
    }
}

/// 0 when the real, effective and saved uid are all `uid`, likewise the gids `gid`, and
/// no supplementary group is left; else -1, with errno EPERM, or the error of a read that
/// failed (a seccomp profile answering ENOSYS is named as such, not as ids unchanged).
///
/// # Safety
/// Async-signal-safe (raw syscalls on stack data); used in the forked child.
unsafe fn creds_are(uid: libc::uid_t, gid: libc::gid_t) -> c_int {
    let (mut ruid, mut euid, mut suid) = (libc::uid_t::MAX, libc::uid_t::MAX, libc::uid_t::MAX);
    let (mut rgid, mut egid, mut sgid) = (libc::gid_t::MAX, libc::gid_t::MAX, libc::gid_t::MAX);
    // SAFETY: getresuid/getresgid write three ids each into stack variables we own;
    // getgroups with a size of 0 only counts and writes nothing. A failed one leaves its
    // errno, which the caller reports.
    unsafe {
        if libc::syscall(libc::SYS_getresuid, &mut ruid, &mut euid, &mut suid) != 0
            || libc::syscall(libc::SYS_getresgid, &mut rgid, &mut egid, &mut sgid) != 0
        {
            return -1;
        }
        let groups = libc::syscall(libc::SYS_getgroups, 0, std::ptr::null_mut::<libc::gid_t>());
        if groups < 0 {
            return -1;
        }
        if groups == 0 && [ruid, euid, suid] == [uid; 3] && [rgid, egid, sgid] == [gid; 3] {
            return 0;
        }
        *libc::__errno_location() = libc::EPERM;
    }
    -1
}

/// # Safety
/// Async-signal-safe; used in the forked child.
unsafe fn close_range(first: u32, last: u32) -> c_int {
    // SAFETY: close_range only closes descriptors in the range.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) } as c_int;
    // SAFETY: reading errno in the same thread.
    if rc < 0 && unsafe { *libc::__errno_location() } == libc::ENOSYS {
        // Kernels before 5.9: close them one by one.
        let top = last.min(65535);
        for fd in first..=top {
            // SAFETY: closing a descriptor number; EBADF is harmless.
            unsafe { libc::close(fd as c_int) };
        }
        return 0;
    }
    rc
}

/// Sends `fd` over `sock` with the listener marker.
///
/// # Safety
/// Async-signal-safe; used in the forked child.
unsafe fn send_fd(sock: RawFd, fd: RawFd) -> c_int {
    let msg = [LISTENER_MSG, 0u32];
    let mut cbuf = [0u64; 4];
    // SAFETY: building a msghdr on the stack over stack buffers and calling
    // sendmsg, which reads only them.
    unsafe {
        let mut iov = libc::iovec { iov_base: msg.as_ptr() as *mut libc::c_void, iov_len: std::mem::size_of_val(&msg) };
        let mut hdr: libc::msghdr = std::mem::zeroed();
        hdr.msg_iov = &mut iov;
        hdr.msg_iovlen = 1;
        hdr.msg_control = cbuf.as_mut_ptr().cast();
        hdr.msg_controllen = libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) as usize;
        let cmsg = libc::CMSG_FIRSTHDR(&hdr);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
        libc::sendmsg(sock, &hdr, 0) as c_int
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kills and reaps the child if the test ends before it died as expected.
    struct Reaped(Option<OwnedFd>);

    impl Drop for Reaped {
        fn drop(&mut self) {
            if let Some(fd) = self.0.take() {
                pidfd::kill_and_reap(&fd);
            }
        }
    }

    /// `/bin/sleep 60` as uid and gid `nobody`, through the daemon's spawn path.
    fn sleeper_as_nobody() -> SpawnPlan {
        let null = || -> OwnedFd { std::fs::File::open("/dev/null").unwrap().into() };
        SpawnPlan {
            plugin: "sleeper".into(),
            binary: std::fs::File::open("/bin/sleep").unwrap().into(),
            argv: vec![c"sleep".into(), c"60".into()],
            env: Vec::new(),
            fds: [null(), null(), null(), null(), null()],
            sandbox: ChildSandbox { creds: Some((65534, 65534)), no_new_privs: true, ..ChildSandbox::default() },
        }
    }

    #[tokio::test]
    async fn a_child_running_under_its_own_uid_dies_with_the_thread_that_spawned_it() {
        let spawner = Spawner::start().unwrap();
        let spawned = spawner.spawn(sleeper_as_nobody()).await.unwrap_or_else(|e| panic!("{e}"));
        let child = Reaped(Some(spawned.pidfd));
        let pidfd = child.0.as_ref().unwrap();
        assert_eq!(pidfd::try_wait(pidfd).unwrap(), None, "the child runs");
        // The spawner's thread ends with its last handle: the child's parent is gone, as
        // when the supervisor is killed.
        drop(spawner);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut ended = None;
        while ended.is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            ended = pidfd::try_wait(pidfd).unwrap();
        }
        assert_eq!(
            ended,
            Some(pidfd::ExitStatus::Signaled { signal: libc::SIGKILL, core_dumped: false }),
            "the child's parent-death signal outlived its change of uid"
        );
    }

    /// A filter that makes `setgroups`, `setresgid` and `setresuid` return 0 without doing
    /// anything, as a container runtime's profile can: the child is still root. With
    /// `unreadable`, `getresuid` fails with ENOSYS too.
    fn credential_changes_faked(unreadable: bool) -> Vec<libc::sock_filter> {
        let ld = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
        let jeq = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
        let ret = (libc::BPF_RET | libc::BPF_K) as u16;
        let insn = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
        // Never matched (no syscall has that number) unless asked for.
        let getresuid = if unreadable { libc::SYS_getresuid as u32 } else { u32::MAX };
        vec![
            insn(ld, 0, 0, 0),
            insn(jeq, 4, 0, getresuid),
            insn(jeq, 4, 0, libc::SYS_setgroups as u32),
            insn(jeq, 3, 0, libc::SYS_setresgid as u32),
            insn(jeq, 2, 0, libc::SYS_setresuid as u32),
            insn(ret, 0, 0, libc::SECCOMP_RET_ALLOW),
            insn(ret, 0, 0, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
            insn(ret, 0, 0, libc::SECCOMP_RET_ERRNO),
        ]
    }

    #[test]
    fn a_change_of_uid_that_did_not_happen_fails_the_spawn() {
        // Ids read back unchanged: EPERM; ids that cannot be read: that read's error.
        for (unreadable, expected) in [(false, libc::EPERM), (true, libc::ENOSYS)] {
            creds_checked(unreadable, expected);
        }
    }

    fn creds_checked(unreadable: bool, expected: i32) {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: switching to another uid needs root");
            return;
        }
        // The filter binds only the thread that installs it (no TSYNC) and the children
        // it forks; it ends with the thread.
        let result = std::thread::spawn(move || {
            let prog = credential_changes_faked(unreadable);
            let fprog = libc::sock_fprog { len: prog.len() as u16, filter: prog.as_ptr() as *mut libc::sock_filter };
            // SAFETY: installs a filter on this thread only, from a program that outlives the call.
            let rc = unsafe { libc::syscall(libc::SYS_seccomp, 1 as libc::c_ulong, 0 as libc::c_ulong, &fprog) };
            assert_eq!(rc, 0, "installing the test filter: {}", io::Error::last_os_error());
            spawn_now(sleeper_as_nobody(), &NetnsPool::default())
        })
        .join()
        .unwrap();
        match result {
            Err(SpawnError::Child { step: Step::CheckCreds, errno, .. }) => assert_eq!(errno, expected),
            Err(e) => panic!("refused for another reason: {e}"),
            Ok(spawned) => {
                let _reaped = Reaped(Some(spawned.pidfd));
                panic!("the child runs as root although it was to run as nobody");
            }
        }
    }

    /// Closes the descriptor a test placed, also when the test fails.
    struct Placed(RawFd);

    impl Drop for Placed {
        fn drop(&mut self) {
            // SAFETY: closing the descriptor this test itself put at that number.
            unsafe { libc::close(self.0) };
        }
    }

    #[test]
    fn a_descriptor_inherited_at_the_landlock_number_does_not_reach_a_child_without_landlock() {
        // SAFETY: F_GETFD only asks whether the number is in use.
        if unsafe { libc::fcntl(LANDLOCK_FD, libc::F_GETFD) } >= 0 {
            eprintln!("skipped: descriptor {LANDLOCK_FD} is in use in this process");
            return;
        }
        // Not close-on-exec, as a descriptor a host application or the daemon's own
        // parent left open can be.
        let file = std::fs::File::open("/dev/null").unwrap();
        // SAFETY: dup2 onto a number this process does not use (checked above).
        assert_eq!(unsafe { libc::dup2(file.as_raw_fd(), LANDLOCK_FD) }, LANDLOCK_FD);
        let _placed = Placed(LANDLOCK_FD);
        let null = || -> OwnedFd { std::fs::File::open("/dev/null").unwrap().into() };
        let sink = || -> OwnedFd { std::fs::OpenOptions::new().write(true).open("/dev/null").unwrap().into() };
        let probe = format!("/proc/self/fd/{LANDLOCK_FD}");
        let plan = SpawnPlan {
            plugin: "probe".into(),
            binary: std::fs::File::open("/bin/ls").unwrap().into(),
            argv: vec![c"ls".into(), CString::new(probe).unwrap()],
            env: Vec::new(),
            // ls must be able to write, or it exits 2 for that.
            fds: [null(), sink(), sink(), null(), null()],
            sandbox: ChildSandbox::default(),
        };
        let spawned = spawn_now(plan, &NetnsPool::default()).unwrap_or_else(|e| panic!("{e}"));
        let child = Reaped(Some(spawned.pidfd));
        let pidfd = child.0.as_ref().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut ended = None;
        while ended.is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
            ended = pidfd::try_wait(pidfd).unwrap();
        }
        // ls exits 2 when the path is not there: the descriptor was not inherited.
        assert_eq!(ended, Some(pidfd::ExitStatus::Exited(2)), "descriptor {LANDLOCK_FD} reached the plugin");
    }

    #[test]
    fn each_step_is_known_by_its_number_from_one() {
        for (i, &step) in Step::ALL.iter().enumerate() {
            assert_eq!(step as u32, i as u32 + 1);
            assert_eq!(Step::from_u32(step as u32), Some(step));
        }
        assert_eq!(Step::from_u32(0), None);
        assert_eq!(Step::from_u32(Step::ALL.len() as u32 + 1), None);
        assert_eq!(Step::from_u32(LISTENER_MSG), None);
        assert_eq!(Step::JoinNetns.describe(), "joining its network namespace");
    }
}
