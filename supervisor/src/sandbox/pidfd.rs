//! Process handles that cannot be confused with a recycled pid: open a
//! pidfd, wait for the exit asynchronously, signal through it.
//!
//! nix has no pidfd API, so this is the thin layer over the raw syscalls.

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    Exited(i32),
    Signaled { signal: i32, core_dumped: bool },
}

impl ExitStatus {
    pub fn success(self) -> bool {
        self == ExitStatus::Exited(0)
    }
}

/// The conventional name of a signal, "SIGKILL"; "signal 34" for one without a name
/// (the real-time signals).
pub fn signal_name(sig: i32) -> String {
    match nix::sys::signal::Signal::try_from(sig) {
        Ok(s) => s.as_str().to_owned(),
        Err(_) => format!("signal {sig}"),
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ExitStatus::Exited(code) => write!(f, "exited with code {code}"),
            ExitStatus::Signaled { signal, core_dumped } => {
                write!(f, "killed by signal {signal} ({})", signal_name(signal))?;
                if core_dumped {
                    write!(f, ", core dumped")?;
                }
                Ok(())
            }
        }
    }
}

/// Opens a pidfd for our own unreaped child (its pid cannot be reused
/// before we reap it, so there is no race).
pub fn open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags (0) and touches no memory of ours.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = libc::c_int::try_from(ret).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: a successful pidfd_open returns a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends `sig` to the process behind `pidfd`; a process that already
/// exited is not an error.
pub fn send_signal(pidfd: &OwnedFd, sig: i32) -> io::Result<()> {
    signal_if_alive(pidfd, sig).map(drop)
}

/// [`send_signal`], saying whether the process was still there to get it (false: it had
/// exited, ESRCH).
pub fn signal_if_alive(pidfd: &OwnedFd, sig: i32) -> io::Result<bool> {
    // SAFETY: pidfd_send_signal with a valid pidfd, a signal number, no
    // siginfo and no flags.
    let rc = unsafe { libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), sig, std::ptr::null::<u8>(), 0) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ESRCH) {
            return Ok(false);
        }
        return Err(e);
    }
    Ok(true)
}

/// Reaps the process if it has exited.
pub fn try_wait(pidfd: &OwnedFd) -> io::Result<Option<ExitStatus>> {
    // SAFETY: siginfo_t is plain data; zeroed is a valid "nothing yet" value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid with P_PIDFD writes only into `info`.
    let rc = unsafe {
        libc::waitid(libc::P_PIDFD, pidfd.as_raw_fd() as libc::id_t, &mut info, libc::WEXITED | libc::WNOHANG)
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: reading si_pid/si_status of a siginfo filled by waitid.
    let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
    if pid == 0 {
        return Ok(None);
    }
    Ok(Some(match info.si_code {
        libc::CLD_EXITED => ExitStatus::Exited(status),
        libc::CLD_DUMPED => ExitStatus::Signaled { signal: status, core_dumped: true },
        _ => ExitStatus::Signaled { signal: status, core_dumped: false },
    }))
}

/// Kills the process behind `pidfd` and waits (blocking) until it is reaped. By pidfd
/// rather than pid: an embedding host that reaps children itself may have reaped it
/// already, and its pid may name another process by now.
pub fn kill_and_reap(pidfd: &OwnedFd) {
    let _ = send_signal(pidfd, libc::SIGKILL);
    let mut pfd = libc::pollfd { fd: pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: poll on one pollfd we own; a pidfd polls readable once the process exited.
    // Bounded: SIGKILL was sent, and if something else reaped it, it is readable too.
    unsafe { libc::poll(&mut pfd, 1, 10_000) };
    let _ = try_wait(pidfd);
}

/// Waits for the process to exit and reaps it.
pub async fn wait(pidfd: &AsyncFd<OwnedFd>) -> io::Result<ExitStatus> {
    loop {
        let mut guard = pidfd.readable().await?;
        if let Some(status) = try_wait(pidfd.get_ref())? {
            return Ok(status);
        }
        guard.clear_ready();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pidfd_of_self_and_of_nothing() {
        let me = libc::pid_t::try_from(std::process::id()).unwrap();
        match open(me) {
            Ok(_) => {}
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ENOSYS), "{e}"),
        }
        assert!(open(-1).is_err());
    }
}
