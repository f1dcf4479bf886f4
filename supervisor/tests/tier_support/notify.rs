//! A stand-in supervisor: receives the child's seccomp notifications,
//! decides with the tier's violation action, answers or kills, and keeps
//! what it decided for the test to read.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use plugin_supervisor::sandbox::tier::{Verdict, Violation, ViolationAction};

pub struct Supervisor {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<io::Result<Vec<Violation>>>>,
}

impl Supervisor {
    /// Starts answering notifications from `listener` for child `pid`.
    pub fn start(listener: OwnedFd, pid: libc::pid_t, action: ViolationAction) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || serve(&listener, pid, action, &flag));
        Self { stop, thread: Some(thread) }
    }

    /// Stops (the child should have ended) and returns the violations seen.
    pub fn finish(mut self) -> Vec<Violation> {
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(Ok(violations))) => violations,
            Some(Ok(Err(e))) => panic!("notification loop failed: {e}"),
            Some(Err(_)) => panic!("notification loop panicked"),
            None => Vec::new(),
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(
    listener: &OwnedFd,
    pid: libc::pid_t,
    action: ViolationAction,
    stop: &AtomicBool,
) -> io::Result<Vec<Violation>> {
    let mut seen = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let mut poll = libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd for the duration of the call.
        let ready = unsafe { libc::poll(&mut poll, 1, 20) };
        if ready < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if poll.revents & libc::POLLIN != 0 {
            // SAFETY: the kernel requires a zeroed seccomp_notif; plain data.
            let mut notif: libc::seccomp_notif = unsafe { std::mem::zeroed() };
            // SAFETY: NOTIF_RECV writes one seccomp_notif into `notif`.
            let rc = unsafe { libc::ioctl(listener.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_RECV, &mut notif) };
            if rc < 0 {
                // ENOENT: the caller died before we read it.
                continue;
            }
            let violation = action.decide(&notif.data);
            seen.push(violation);
            match (violation.verdict, violation.response(notif.id)) {
                (Verdict::Deny { .. }, Some(mut response)) => {
                    // SAFETY: NOTIF_SEND reads one seccomp_notif_resp.
                    unsafe { libc::ioctl(listener.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_SEND, &mut response) };
                }
                _ => {
                    // SAFETY: signalling our own child, not yet reaped (the
                    // test reaps it after this loop is told to stop).
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        } else if poll.revents & (libc::POLLHUP | libc::POLLERR) != 0 {
            // Every task using the filter is gone.
            break;
        }
    }
    Ok(seen)
}
