//! The supervisor's end of a plugin's seccomp filter: every call the tier
//! does not allow arrives here as a user notification, is named, and is
//! either answered with the tier's errno or ends the instance.
//!
//! The notification ioctls are not in nix; this is the thin layer over them.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::tier::{Verdict, Violation, ViolationAction};

/// Receives one pending notification.
fn receive(fd: &OwnedFd) -> io::Result<libc::seccomp_notif> {
    // SAFETY: the kernel requires a zeroed struct; it is plain data.
    let mut notif: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    // SAFETY: NOTIF_RECV writes one seccomp_notif into the buffer we own.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_RECV, &mut notif) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(notif) }
}

/// Answers a notification; the target may already be gone (ENOENT).
fn answer(fd: &OwnedFd, resp: &mut libc::seccomp_notif_resp) {
    // SAFETY: NOTIF_SEND reads one seccomp_notif_resp from memory we own.
    unsafe { libc::ioctl(fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_SEND, resp) };
}

/// Serves `listener` until every process under the filter is gone.
/// `on_violation` hears about each forbidden call; for a kill it must kill
/// the instance (the pending call is then ended by the kernel). What it returns is how
/// long to wait before answering the next: the plugin's next forbidden call waits with it.
pub async fn serve(
    listener: OwnedFd,
    action: ViolationAction,
    mut on_violation: impl FnMut(Violation) -> Option<Duration>,
) {
    serve_each(listener, |fd, notif| handle(fd, action, notif, &mut on_violation)).await;
}

/// Serves the listener of the onboarding check's learning filter: `on_call`
/// hears about every notified call, which then continues as if no filter
/// were there (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`).
pub async fn serve_learning(listener: OwnedFd, mut on_call: impl FnMut(&libc::seccomp_data)) {
    serve_each(listener, |fd, notif| {
        on_call(&notif.data);
        let mut resp = libc::seccomp_notif_resp {
            id: notif.id,
            val: 0,
            error: 0,
            flags: libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
        };
        answer(fd, &mut resp);
        None
    })
    .await;
}

/// Serves every notification with `each`, waiting as long as it says before the next.
async fn serve_each(listener: OwnedFd, mut each: impl FnMut(&OwnedFd, &libc::seccomp_notif) -> Option<Duration>) {
    // SAFETY: the OwnedFd moves into the AsyncFd, which keeps it open.
    let fd = match unsafe { AsyncFd::register_with_interest(listener, Interest::READABLE) } {
        Ok(fd) => fd,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the seccomp listener");
            return;
        }
    };
    loop {
        let Ok(mut guard) = fd.readable().await else { return };
        // RECV blocks when nothing is pending, so it is only called when
        // poll says a notification is there.
        let mut served = 0u32;
        loop {
            // A plugin whose every call is notified (the learning pass) keeps this busy
            // for as long as it runs: other tasks get their turn between batches.
            served = served.wrapping_add(1);
            if served.is_multiple_of(64) {
                tokio::task::yield_now().await;
            }
            match pending(fd.get_ref()) {
                Pending::Nothing => {
                    guard.clear_ready();
                    break;
                }
                Pending::HungUp => return,
                Pending::Notification => {}
            }
            match receive(fd.get_ref()) {
                Ok(notif) => {
                    if let Some(wait) = each(fd.get_ref(), &notif) {
                        tokio::time::sleep(wait).await;
                    }
                }
                // The target died or the call was interrupted: nothing to answer.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EINTR)) => {}
                Err(_) => return,
            }
        }
    }
}

fn handle(
    fd: &OwnedFd,
    action: ViolationAction,
    notif: &libc::seccomp_notif,
    on_violation: &mut impl FnMut(Violation) -> Option<Duration>,
) -> Option<Duration> {
    let v = action.decide(&notif.data);
    let mut resp = v.response(notif.id).unwrap_or(libc::seccomp_notif_resp {
        id: notif.id,
        val: 0,
        error: -libc::EPERM,
        flags: 0,
    });
    if matches!(v.verdict, Verdict::Kill) {
        // Kill first: the call must not resume before the process dies.
        let wait = on_violation(v);
        answer(fd, &mut resp);
        wait
    } else {
        answer(fd, &mut resp);
        on_violation(v)
    }
}

enum Pending {
    Notification,
    Nothing,
    /// Every process under the filter has exited.
    HungUp,
}

fn pending(fd: &OwnedFd) -> Pending {
    let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: poll with a zero timeout on one pollfd we own.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    if n <= 0 {
        Pending::Nothing
    } else if p.revents & libc::POLLIN != 0 {
        Pending::Notification
    } else if p.revents & (libc::POLLHUP | libc::POLLERR) != 0 {
        Pending::HungUp
    } else {
        Pending::Nothing
    }
}
