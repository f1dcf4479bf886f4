//! Forks a child that sandboxes itself the way the supervisor's spawn
//! does (fds, RLIMIT_NOFILE, namespaces, no-new-privs, seccomp last, the
//! listener sent back with sendmsg, execveat of fd 1000), and always reaps
//! it.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use plugin_supervisor::sandbox::tier::{CompiledFilter, EXEC_FD, EXEC_FLAGS};

/// Where the child gets the socket it sends the listener on; close-on-exec
/// so the plugin never sees it.
const LISTENER_SOCKET_FD: RawFd = 5;

/// Exit codes of a child that failed before its work began, by step.
pub mod step {
    pub const PARENT_GONE: i32 = 101;
    pub const DUP: i32 = 102;
    pub const RLIMIT: i32 = 104;
    pub const UNSHARE: i32 = 105;
    pub const NO_NEW_PRIVS: i32 = 106;
    pub const INSTALL: i32 = 107;
    pub const SEND_LISTENER: i32 = 108;
    pub const EXEC: i32 = 109;
}

/// What runs once the filter is in place.
pub enum Work {
    /// `execveat(EXEC_FD, "", argv, envp, AT_EMPTY_PATH)` of `binary`.
    Exec { binary: OwnedFd, argv: Vec<CString> },
    /// A function returning the exit code. It runs between fork and exit in
    /// a child of a multi-threaded process: raw syscalls only, no
    /// allocation.
    Call(fn() -> i32),
}

/// One child to start.
pub struct Plan<'a> {
    pub filter: &'a CompiledFilter,
    /// Deliver violations to a listener (`SECCOMP_FILTER_FLAG_NEW_LISTENER`)
    /// sent back to the parent; without it the filter acts alone.
    pub listener: bool,
    pub nofile: u32,
    /// `CLONE_NEW*` flags to unshare before the filter (needs root).
    pub unshare: libc::c_int,
    /// Sockets to hand over, in order, as fds 3, 4, ...
    pub fds: Vec<OwnedFd>,
    pub work: Work,
}

/// A started child; killed and reaped when dropped, whatever happened.
pub struct Child {
    pub pid: libc::pid_t,
    reaped: bool,
}

/// How a child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    Exited(i32),
    Signaled(i32),
}

impl Child {
    /// Waits up to `timeout` for the child to end; kills it after that and
    /// reports the timeout.
    pub fn wait(&mut self, timeout: Duration) -> Result<Ended, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut status = 0;
            // SAFETY: waitpid on our own child with a valid status pointer.
            let rc = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
            if rc == self.pid {
                self.reaped = true;
                return Ok(if libc::WIFSIGNALED(status) {
                    Ended::Signaled(libc::WTERMSIG(status))
                } else {
                    Ended::Exited(libc::WEXITSTATUS(status))
                });
            }
            if rc < 0 {
                return Err(format!("waitpid {}: {}", self.pid, io::Error::last_os_error()));
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(format!("child {} did not end within {timeout:?}", self.pid));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn kill(&mut self) {
        if self.reaped {
            return;
        }
        // SAFETY: signalling and reaping our own unreaped child; the pid
        // cannot have been reused before we reap it.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
        self.reaped = true;
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Everything the child needs, built before fork so the child allocates
/// nothing.
struct Prepared<'a> {
    fprog: plugin_supervisor::sandbox::tier::SockFprog<'a>,
    /// (source fd, target fd, close-on-exec)
    moves: Vec<(RawFd, RawFd, bool)>,
    exec: Option<(Vec<CString>, Vec<*const libc::c_char>, [*const libc::c_char; 1])>,
    call: Option<fn() -> i32>,
}

/// Starts `plan`; with a listener, also returns the listener fd the child
/// sent.
pub fn spawn(plan: Plan<'_>) -> io::Result<(Child, Option<OwnedFd>)> {
    // fds 3 and 4 at most, below the listener socket at 5.
    assert!(plan.fds.len() <= 2, "at most two fds are handed over");
    let (ours, theirs) = UnixStream::pair()?;
    let mut moves: Vec<(RawFd, RawFd, bool)> =
        plan.fds.iter().zip(3..).map(|(fd, target)| (fd.as_raw_fd(), target, false)).collect();
    moves.push((theirs.as_raw_fd(), LISTENER_SOCKET_FD, true));
    let (exec, call, binary) = match plan.work {
        Work::Exec { binary, argv } => {
            moves.push((binary.as_raw_fd(), EXEC_FD, true));
            let mut pointers: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
            pointers.push(std::ptr::null());
            (Some((argv, pointers, [std::ptr::null()])), None, Some(binary))
        }
        Work::Call(f) => (None, Some(f), None),
    };
    let prepared = Prepared { fprog: plan.filter.as_sock_fprog(), moves, exec, call };
    let flags = if plan.listener { libc::SECCOMP_FILTER_FLAG_NEW_LISTENER } else { 0 };
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };

    // SAFETY: the child runs only `child_main`, which makes raw syscalls on
    // data prepared above and never returns; the parent continues normally.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        child_main(&prepared, parent, plan.nofile, plan.unshare, flags);
    }
    let child = Child { pid, reaped: false };
    // The child holds its own copies now.
    drop((theirs, binary, plan.fds));
    let listener = if plan.listener {
        Some(receive_fd(&ours).map_err(|e| io::Error::other(format!("listener from child {pid}: {e}")))?)
    } else {
        None
    };
    Ok((child, listener))
}

/// The child's side: never returns.
fn child_main(p: &Prepared<'_>, parent: libc::pid_t, nofile: u32, unshare: libc::c_int, flags: libc::c_ulong) -> ! {
    // SAFETY: every call below is a raw syscall (or glibc's thin wrapper)
    // on fds, constants and memory prepared before fork and still mapped;
    // nothing allocates or takes a lock, as required after fork in a
    // multi-threaded process. Failures end the child with `_exit`.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 || libc::getppid() != parent {
            fail(step::PARENT_GONE);
        }
        // Lift every source above the targets first, so no move clobbers a
        // source still to be moved.
        let mut lifted = [0 as RawFd; 4];
        for (slot, &(source, _, _)) in lifted.iter_mut().zip(&p.moves) {
            *slot = libc::fcntl(source, libc::F_DUPFD_CLOEXEC, 900);
            if *slot < 0 {
                fail(step::DUP);
            }
        }
        for (&from, &(_, target, cloexec)) in lifted.iter().zip(&p.moves) {
            let flag = if cloexec { libc::O_CLOEXEC } else { 0 };
            if libc::dup3(from, target, flag) < 0 {
                fail(step::DUP);
            }
        }
        // Only 0-2, the handed-over fds, the listener socket and EXEC_FD
        // stay open, as in a plugin.
        for fd in 3..LISTENER_SOCKET_FD {
            if !p.moves.iter().any(|&(_, target, _)| target == fd) {
                libc::close(fd);
            }
        }
        let (after_socket, exec_fd) = ((LISTENER_SOCKET_FD + 1) as libc::c_uint, EXEC_FD as libc::c_uint);
        libc::syscall(libc::SYS_close_range, after_socket, exec_fd - 1, 0);
        libc::syscall(libc::SYS_close_range, exec_fd + 1, libc::c_uint::MAX, 0);
        let limit = libc::rlimit { rlim_cur: libc::rlim_t::from(nofile), rlim_max: libc::rlim_t::from(nofile) };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            fail(step::RLIMIT);
        }
        if unshare != 0 && libc::unshare(unshare) != 0 {
            fail(step::UNSHARE);
        }
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            fail(step::NO_NEW_PRIVS);
        }
        let rc = libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, flags, p.fprog.as_ptr());
        if rc < 0 {
            fail(step::INSTALL);
        }
        if flags & libc::SECCOMP_FILTER_FLAG_NEW_LISTENER != 0 && send_fd(LISTENER_SOCKET_FD, rc as RawFd).is_err() {
            fail(step::SEND_LISTENER);
        }
        if let Some((_, argv, envp)) = &p.exec {
            libc::syscall(libc::SYS_execveat, EXEC_FD, c"".as_ptr(), argv.as_ptr(), envp.as_ptr(), EXEC_FLAGS);
            fail(step::EXEC);
        }
        let code = p.call.map_or(0, |f| f());
        libc::_exit(code)
    }
}

fn fail(code: i32) -> ! {
    // SAFETY: _exit ends the process at once; nothing of the parent's
    // state (buffers, atexit handlers) is touched.
    unsafe { libc::_exit(code) }
}

/// Sends `fd` over `socket` as SCM_RIGHTS; allocation-free.
fn send_fd(socket: RawFd, fd: RawFd) -> Result<(), ()> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
    // Room for one cmsg carrying one int, aligned for cmsghdr.
    let mut space = [0u64; 4];
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = space.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE only computes a size.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(size_of::<RawFd>() as u32) } as usize;
    // SAFETY: msg_control points at `space`, large enough for the one
    // header CMSG_FIRSTHDR returns and its int payload.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<RawFd>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
    }
    // SAFETY: msg and everything it points to are alive for the call.
    let sent = unsafe { libc::sendmsg(socket, &msg, libc::MSG_NOSIGNAL) };
    if sent == 1 { Ok(()) } else { Err(()) }
}

/// Receives one fd sent with [`send_fd`], waiting at most 10 s.
fn receive_fd(socket: &UnixStream) -> io::Result<OwnedFd> {
    socket.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
    let mut space = [0u64; 4];
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = space.as_mut_ptr().cast();
    msg.msg_controllen = size_of_val(&space);
    // SAFETY: msg points at live buffers of the stated sizes.
    let got = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel filled msg_control; CMSG_FIRSTHDR checks its length.
    let cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    // SAFETY: a non-null cmsg lies within `space`.
    if got == 0 || cmsg.is_null() || unsafe { (*cmsg).cmsg_type } != libc::SCM_RIGHTS {
        return Err(io::Error::other("the child sent no fd (it died before sending)"));
    }
    // SAFETY: an SCM_RIGHTS message carries at least one int; the fd is
    // now ours alone.
    Ok(unsafe { OwnedFd::from_raw_fd(std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>())) })
}
