//! The dead man's switch: a tiny process, forked when the cgroup subtree is built, that
//! sleeps until the supervisor dies and then kills every plugin process at once by writing
//! the subtree's `plugins/cgroup.kill`.
//!
//! A plugin's own process already dies with the supervisor (its parent-death signal), but
//! what it forked does not: it would live on until the next start's cleanup, or forever if
//! there is none. Chosen over a PID namespace per instance, whose init's death would kill
//! the rest, because that changes every plugin's world: it would run as pid 1, which
//! ignores signals it has no handler for (a plain SIGTERM would do nothing to a non-SDK
//! plugin), must reap orphans itself (unreaped, they pile up against `pids_max`) and sees
//! `getppid()` as 0; and a PID namespace is only to be had with clone3. The switch costs one
//! sleeping process per supervisor, works the same for every tier and for embedding hosts,
//! and needs only `cgroup.kill` (Linux 5.14), which the kill path already relies on.
//!
//! Our own thin layer: nothing in nix or std forks a child that must run no Rust code.

use std::ffi::c_int;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;

use super::cgroup::{Forked, fork_with_pidfd};
use super::pidfd;

/// The armed switch. Dropping it disarms it: the watcher is killed and reaped (it must be
/// gone before the subtree it sits in can be removed).
#[derive(Debug)]
pub struct Deadman {
    pid: libc::pid_t,
    pidfd: OwnedFd,
}

impl Deadman {
    /// Arms the switch over `kill_file`, a v2 `cgroup.kill`: once this process is gone,
    /// however it ended, "1" is written there.
    pub fn arm(kill_file: &Path) -> io::Result<Self> {
        // Opened before the fork: the watcher then needs no path lookup, and a kill file
        // that cannot be opened is an error here rather than a silent no-op later.
        let kill: OwnedFd = std::fs::OpenOptions::new().write(true).open(kill_file)?.into();
        // SAFETY: getpid has no preconditions.
        let me = pidfd::open(unsafe { libc::getpid() })?;
        // SAFETY: the child branch runs only `watch`, which makes raw async-signal-safe
        // syscalls on the two descriptors opened above and never returns.
        match unsafe { fork_with_pidfd() }? {
            // SAFETY: we are the freshly forked child; see above.
            Forked::Child => unsafe { watch(me.as_raw_fd(), kill.as_raw_fd()) },
            Forked::Parent { pid, pidfd: Some(pidfd) } => Ok(Self { pid, pidfd }),
            Forked::Parent { pid, pidfd: None } => {
                // SAFETY: killing and reaping our own just-forked, unreaped child by pid:
                // without a pidfd (kernels before 5.3) there is no other handle.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, std::ptr::null_mut(), 0);
                }
                Err(io::Error::from_raw_os_error(libc::ENOSYS))
            }
        }
    }

    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }
}

impl Drop for Deadman {
    fn drop(&mut self) {
        pidfd::kill_and_reap(&self.pidfd);
    }
}

/// The watcher: waits for `parent` (a pidfd) to become readable, which it does when the
/// process has exited, then writes the kill file.
///
/// # Safety
/// Only called in a freshly forked child: raw syscalls only, no allocation, no locks.
unsafe fn watch(parent: RawFd, kill: RawFd) -> ! {
    // SAFETY: every call below is an async-signal-safe syscall wrapper on plain data.
    unsafe {
        // Signals meant for the supervisor's process group (Ctrl-C in its terminal, a
        // service manager's SIGTERM) must not end the switch before it is needed: only
        // SIGKILL (from the supervisor disarming it) does.
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
        // Nothing else the supervisor had open stays open here: not its sockets, not the
        // subtree's lock (which must go with the supervisor), not its stdout/stderr.
        close_all_but(parent.min(kill), parent.max(kill));
        libc::prctl(libc::PR_SET_NAME, c"ps-deadman".as_ptr() as libc::c_ulong, 0, 0, 0);
        let mut pfd = libc::pollfd { fd: parent, events: libc::POLLIN, revents: 0 };
        loop {
            if libc::poll(&mut pfd, 1, -1) > 0 {
                break;
            }
            // Unable to watch (never expected): leave the plugins be rather than kill
            // them under a supervisor that may well be alive.
            if *libc::__errno_location() != libc::EINTR {
                libc::_exit(1);
            }
        }
        libc::write(kill, c"1".as_ptr().cast(), 1);
        libc::_exit(0)
    }
}

/// Closes every descriptor except `a` and `b` (a <= b).
///
/// # Safety
/// Async-signal-safe; for the forked child.
unsafe fn close_all_but(a: RawFd, b: RawFd) {
    let ranges = [(0, a - 1), (a + 1, b - 1), (b + 1, c_int::MAX)];
    for (first, last) in ranges {
        if first <= last {
            // SAFETY: close_range only closes descriptors in the range.
            unsafe { libc::syscall(libc::SYS_close_range, first as u32, last as u32, 0) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_procs::{state, wait_named_and_asleep};

    #[test]
    fn the_watcher_sleeps_holding_only_its_two_descriptors_and_dies_when_disarmed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cgroup.kill");
        std::fs::write(&file, "").unwrap();
        let d = Deadman::arm(&file).unwrap();
        let pid = d.pid();
        // The watcher names itself after closing what it inherited and then goes to sleep,
        // so its descriptors are counted only once it is named and asleep: counted first, a
        // watcher that closed and named itself between the two readings was caught with the
        // supervisor's descriptors (CI, on a busy machine); named but not yet in its poll,
        // it is still runnable.
        wait_named_and_asleep(pid, "ps-deadman");
        let fds: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().collect();
        assert_eq!(fds.len(), 2, "the watcher holds the pidfd and the kill file only");
        drop(d);
        assert_eq!(state(pid), None, "disarming kills and reaps it");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "", "a disarmed switch writes nothing");
    }
}
