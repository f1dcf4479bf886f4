//! Shared helpers for the real-kernel tests: a cleanup guard around a uniquely named
//! subtree, child processes that join a leaf before running, and bounded polling.
#![allow(dead_code)]

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use plugin_supervisor::sandbox::cgroup::{
    CgroupError, CgroupFs, ForkMode, Instance, JoinPath, Layout, RealFs, Spawned, Subtree, SubtreeConfig,
};

static NEXT: AtomicU32 = AtomicU32::new(0);

pub fn unique_name() -> String {
    format!("pstest-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

pub fn layout() -> Arc<Layout> {
    let layout = Arc::new(Layout::detect(&RealFs, None).expect("detect the host's cgroup layout"));
    static SWEEP: Once = Once::new();
    SWEEP.call_once(|| sweep_dead_runs(&layout));
    layout
}

/// Removes subtrees of earlier test runs that were killed before their guards ran (their
/// names carry the pid of a process that no longer exists).
fn sweep_dead_runs(layout: &Layout) {
    for (_, h) in layout.hierarchies() {
        let Some(own) = h.own_dir() else { continue };
        for name in RealFs.child_dirs(&own).unwrap_or_default() {
            let Some(pid) = name
                .strip_prefix("pstest-")
                .and_then(|rest| rest.split('-').next())
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if Path::new(&format!("/proc/{pid}")).exists() {
                continue;
            }
            let config = SubtreeConfig { name, parent: None, move_self: false };
            if let Err(e) = remove_stale(layout, &config) {
                eprintln!("sweep: {}: {e}", config.name);
            }
        }
    }
}

/// A subtree under a unique name that is killed and removed on drop, also when the test
/// fails: teardown first, then the start-up sweep as a backstop.
pub struct Guard {
    pub layout: Arc<Layout>,
    pub config: SubtreeConfig,
    pub subtree: Option<Subtree>,
}

impl Guard {
    pub fn new(move_self: bool) -> Guard {
        let layout = layout();
        let config = SubtreeConfig { name: unique_name(), parent: None, move_self };
        let fs: Arc<dyn CgroupFs> = Arc::new(RealFs);
        let lock = Subtree::lock(&RealFs, &layout, &config).expect("lock the subtree");
        let subtree = Subtree::create(fs, layout.clone(), &config, lock).expect("create the subtree");
        Guard { layout, config, subtree: Some(subtree) }
    }

    pub fn subtree(&self) -> &Subtree {
        self.subtree.as_ref().expect("subtree present")
    }

    /// Every directory of the subtree root, for "was everything removed" checks.
    pub fn roots(&self) -> Vec<PathBuf> {
        self.subtree().root().dirs().map(|(_, d)| d.to_path_buf()).collect()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        if let Some(mut st) = self.subtree.take() {
            while Instant::now() < deadline {
                match st.teardown() {
                    Ok(r) if r.is_removed() => break,
                    Ok(_) => std::thread::sleep(Duration::from_millis(10)),
                    Err(e) => {
                        eprintln!("guard: teardown failed: {e}");
                        break;
                    }
                }
            }
        }
        if self.config.move_self {
            // If teardown could not move us back, do it here so the sweep below can run.
            for (_, h) in self.layout.hierarchies() {
                if let Some(dir) = h.own_dir() {
                    let _ = RealFs.write(&dir.join("cgroup.procs"), &std::process::id().to_string());
                }
            }
        }
        if let Err(e) = remove_stale(&self.layout, &self.config) {
            eprintln!("guard: cleanup of {} failed: {e}", self.config.name);
        }
    }
}

/// What the start-up sweep does with a subtree left by a dead run (lock it, kill and
/// remove what is below), then removes the locked root too. Waits at most 10 s.
pub fn remove_stale(layout: &Layout, config: &SubtreeConfig) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    // Tests run side by side in this process, and a child another test forks holds copies
    // of every descriptor, this lock's included, until that test kills it.
    let lock = loop {
        match Subtree::lock(&RealFs, layout, config) {
            Ok(lock) => break lock,
            Err(e @ CgroupError::InUse { .. }) if Instant::now() > deadline => return Err(e.to_string()),
            Err(CgroupError::InUse { .. }) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(e.to_string()),
        }
    };
    loop {
        match Subtree::cleanup_stale(&RealFs, layout, config, &lock).map_err(|e| e.to_string())? {
            r if r.is_removed() => break,
            _ if Instant::now() > deadline => return Err("still not removed after 10 s".into()),
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    for dir in lock.dirs() {
        RealFs.rmdir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    Ok(())
}

pub fn poll_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn remove_instance(inst: &Instance) {
    poll_until("instance removal", Duration::from_secs(10), || inst.try_remove().expect("try_remove").is_removed());
    for (_, dir) in inst.cgroups().dirs() {
        assert!(!dir.exists(), "{} still exists", dir.display());
    }
}

pub struct Child {
    pub pid: libc::pid_t,
    pub pidfd: Option<OwnedFd>,
    pub path: JoinPath,
}

/// Forks a child that joins `inst` and then runs `body`, which must be async-signal-safe
/// (raw libc calls on memory prepared before the fork). Returns once the child has joined
/// every leaf. The child exits 0 when `body` returns and 125 when joining failed.
pub fn spawn_into(inst: &Instance, mode: ForkMode, body: impl FnOnce()) -> Child {
    let join = inst.join_fds().expect("join fds");
    let (ready_r, ready_w) = pipe();
    // SAFETY: the child branch only calls join_in_child (write(2)), write_byte, the
    // async-signal-safe body and _exit.
    match unsafe { join.spawn(mode) }.expect("spawn") {
        Spawned::Child(token) => {
            if join.join_in_child(token).is_err() {
                // SAFETY: _exit is async-signal-safe and ends the child here.
                unsafe { libc::_exit(125) };
            }
            write_byte(&ready_w, b'j');
            body();
            // SAFETY: as above.
            unsafe { libc::_exit(0) }
        }
        Spawned::Parent { pid, pidfd, path } => {
            drop(ready_w);
            assert_eq!(read_byte(&ready_r), Some(b'j'), "child {pid} failed to join");
            Child { pid, pidfd, path }
        }
    }
}

/// Child body: sleep until killed.
pub fn pause_forever() {
    loop {
        // SAFETY: pause(2) has no arguments and is async-signal-safe.
        unsafe { libc::pause() };
    }
}

/// waitpid with a 20 s bound, so a stuck child fails the test instead of hanging it.
pub fn wait(pid: libc::pid_t) -> libc::c_int {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status into a live local.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        assert!(rc >= 0, "waitpid({pid}): {}", std::io::Error::last_os_error());
        if rc == pid {
            return status;
        }
        assert!(Instant::now() < deadline, "child {pid} did not exit within 20 s");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// fork(2) as a raw syscall, for children started by raw clone3: glibc's fork() takes the
/// malloc and stdio locks, which another thread of the test process may have held at the
/// moment of the clone, so it can deadlock there. Returns what fork returns.
pub fn raw_fork() -> libc::c_long {
    // SAFETY: clone with only SIGCHLD and no stack is fork; the callers' children run only
    // async-signal-safe code.
    unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_ulong, 0usize, 0usize, 0usize, 0usize) }
}

pub fn killed_by(status: libc::c_int) -> Option<libc::c_int> {
    libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status))
}

pub fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array we pass.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both fds are fresh from pipe2 and owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Async-signal-safe one-byte write, for children.
pub fn write_byte(fd: &OwnedFd, b: u8) {
    // SAFETY: writes one byte from a live local to an fd we hold.
    unsafe { libc::write(fd.as_raw_fd(), (&raw const b).cast(), 1) };
}

/// Async-signal-safe one-byte read, for children; `None` on EOF or error.
pub fn read_byte(fd: &OwnedFd) -> Option<u8> {
    let mut b = 0u8;
    // SAFETY: reads one byte into a live local from an fd we hold.
    let n = unsafe { libc::read(fd.as_raw_fd(), (&raw mut b).cast(), 1) };
    (n == 1).then_some(b)
}

/// One-byte read for the parent, bounded to 20 s: copies of the write end inherited by
/// children of concurrently running tests can keep EOF from ever arriving.
pub fn read_byte_bounded(fd: &OwnedFd) -> Option<u8> {
    let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: polls one live pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, 20_000) };
    assert!(n > 0, "no byte within 20 s");
    read_byte(fd)
}

/// The process is gone or a zombie (exited, waiting for a reaper that is not us).
pub fn is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
    }
}

/// The cgroup path of `pid` in each hierarchy of the layout, from `/proc/<pid>/cgroup`.
pub fn cgroup_paths_of(pid: libc::pid_t, layout: &Layout) -> Vec<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("read /proc/pid/cgroup");
    let members = plugin_supervisor::sandbox::cgroup::parse_proc_cgroup(&text).expect("parse /proc/pid/cgroup");
    layout
        .hierarchies()
        .map(|(_, h)| {
            let m = members
                .iter()
                .find(|m| match h.version {
                    plugin_supervisor::sandbox::cgroup::Version::V2 => m.is_v2(),
                    plugin_supervisor::sandbox::cgroup::Version::V1 => {
                        h.controllers.iter().any(|c| m.controllers.iter().any(|n| n == c.name()))
                    }
                })
                .expect("a /proc/pid/cgroup line for every hierarchy");
            m.path.clone()
        })
        .collect()
}

/// What `/proc/<pid>/cgroup` shows for a cgroup directory of hierarchy `h`.
pub fn cgroup_path_of_dir(layout: &Layout, dir: &Path) -> PathBuf {
    let h =
        layout.hierarchies().map(|(_, h)| h).find(|h| dir.starts_with(&h.mount_point)).expect("dir inside a hierarchy");
    Path::new("/").join(&h.mount_root).join(dir.strip_prefix(&h.mount_point).expect("prefix"))
}

pub fn cstring(s: &str) -> CString {
    CString::new(s).expect("no NUL")
}
