//! Raw `clone3(2)` with `CLONE_PIDFD | CLONE_INTO_CGROUP`, plus the fork + `pidfd_open(2)`
//! fallback for kernels without them.
//!
//! Our own layer over `libc::syscall`: nix 0.32 wraps neither clone3 nor pidfds, std's pidfd
//! API is unstable, and cgroups-rs only moves processes after they run. The child returns
//! from the syscall on a copy of the parent's stack, exactly as with fork(2) (std's Command
//! does the same for its pidfd support).

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// From include/uapi/linux/sched.h. Ours rather than libc's: libc declares
/// `CLONE_INTO_CGROUP` as a `c_int` the value overflows (deprecated since libc 0.2.188).
const CLONE_PIDFD: u64 = 0x1000;
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` up to `cgroup` (CLONE_ARGS_SIZE_VER2, 88 bytes): all fields are u64
/// on every architecture, so no per-arch layout is needed.
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

#[derive(Debug)]
pub enum Forked {
    /// We are the new process.
    Child,
    Parent {
        pid: libc::pid_t,
        /// `None` only on the fallback path of kernels older than 5.3.
        pidfd: Option<OwnedFd>,
    },
}

/// Whether a clone3 failure means "this kernel cannot do it" (so fork is the way) rather
/// than a real error: ENOSYS without clone3 (or under seccomp profiles that hide it), E2BIG
/// when clone3 predates the `cgroup` field, EINVAL when the flag is unknown (before 5.7).
pub fn is_unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::E2BIG | libc::EINVAL))
}

/// `clone3(CLONE_PIDFD | CLONE_INTO_CGROUP)`: the child is in the cgroup of `cgroup_dir` (a
/// v2 directory fd) before its first instruction, and the parent gets a pidfd for it.
///
/// # Safety
/// As for fork(2) in a multi-threaded process: in the `Child` branch only async-signal-safe
/// operations are allowed (no allocation, no locks, no `std::io` printing) until `execve` or
/// `_exit`, and the child must never return into code that expects the parent's threads.
/// Unlike libc's fork(), a raw clone runs no atfork handlers: the child's copies of libc's
/// internal locks (malloc, stdio) are in whatever state other threads held them, and its
/// thread descriptor still names the parent thread. So no malloc, no pthread calls and no
/// libc `fork()` in the child (it takes the malloc locks and can deadlock); raw syscalls
/// are fine.
pub unsafe fn clone_into_cgroup(cgroup_dir: BorrowedFd<'_>) -> io::Result<Forked> {
    // SAFETY: forwarded from this function's own contract.
    unsafe { clone_into_cgroup_with(cgroup_dir, 0) }
}

/// [`clone_into_cgroup`] with extra `CLONE_NEW*` flags, so the child also
/// starts in new namespaces (a new PID namespace can only be had this way).
///
/// # Safety
/// As for [`clone_into_cgroup`].
pub unsafe fn clone_into_cgroup_with(cgroup_dir: BorrowedFd<'_>, namespaces: u64) -> io::Result<Forked> {
    let mut pidfd: libc::c_int = -1;
    let fd = u64::try_from(cgroup_dir.as_raw_fd()).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    let mut args = CloneArgs {
        flags: CLONE_PIDFD | CLONE_INTO_CGROUP | namespaces,
        pidfd: &raw mut pidfd as u64,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: fd,
        ..CloneArgs::default()
    };
    // SAFETY: `args` is a valid clone_args of the size passed and outlives the call; the
    // kernel writes the pidfd into `pidfd`, which is live. stack = 0 makes the child run on
    // a copy-on-write copy of this stack like fork(2); the caller upholds fork's rules for
    // the child (see the function's safety section).
    let ret = unsafe { libc::syscall(libc::SYS_clone3, &raw mut args, mem::size_of::<CloneArgs>()) };
    match ret {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => {
            let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::EOVERFLOW))?;
            // SAFETY: with CLONE_PIDFD a successful clone3 stored a fresh fd that nothing
            // else owns.
            let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
            Ok(Forked::Parent { pid, pidfd: Some(pidfd) })
        }
    }
}

/// fork(2), then `pidfd_open` in the parent when the kernel has it.
///
/// # Safety
/// Same rules for the `Child` branch as [`clone_into_cgroup`].
pub unsafe fn fork_with_pidfd() -> io::Result<Forked> {
    // SAFETY: fork has no memory-safety preconditions of its own; what the child may do
    // afterwards is the caller's contract (see the safety section).
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        // The child is ours and unreaped, so the pid cannot have been reused yet.
        pid => Ok(Forked::Parent { pid, pidfd: crate::sandbox::pidfd::open(pid).ok() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clone_args_matches_the_kernel_v2_size() {
        assert_eq!(mem::size_of::<CloneArgs>(), 88);
    }

    #[test]
    fn unsupported_errnos() {
        for e in [libc::ENOSYS, libc::E2BIG, libc::EINVAL] {
            assert!(is_unsupported(&io::Error::from_raw_os_error(e)));
        }
        assert!(!is_unsupported(&io::Error::from_raw_os_error(libc::EBUSY)));
        assert!(!is_unsupported(&io::Error::from_raw_os_error(libc::EACCES)));
    }
}
