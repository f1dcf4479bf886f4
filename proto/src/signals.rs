//! Stop signals (SIGTERM, SIGINT) as an async stream, through a pipe that
//! an async-signal-safe handler writes to.
//!
//! tokio's own signal support creates a socketpair when any runtime starts
//! (whether or not signals are used), which the hardened seccomp tiers
//! forbid; with tokio's `signal` feature compiled into the workspace it
//! would end up in every plugin. This needs only `pipe2`, `read` and
//! `write`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Delivers the numbers of the signals it was set up for.
pub struct Signals {
    rx: tokio::net::unix::pipe::Receiver,
    _write: OwnedFd,
}

/// Signals caught from the moment [`Signals::catch`] returned, waiting in
/// the pipe until a runtime exists to read them.
pub struct Caught {
    read: OwnedFd,
    write: OwnedFd,
}

impl Signals {
    /// Catches `signals` from now on; their default action no longer runs.
    /// Needs a tokio runtime; [`Signals::catch`] does not.
    pub fn new(signals: &[i32]) -> io::Result<Self> {
        Self::catch(signals)?.stream()
    }

    /// Catches `signals` from now on, before any runtime exists: a program
    /// calls this first thing, so no later moment dies of a default action.
    pub fn catch(signals: &[i32]) -> io::Result<Caught> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two new descriptors into the array.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors are fresh and owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let raw = write.as_raw_fd();
        // All of them are held back while the handlers go in, one by one: a second
        // signal arriving between two registrations (a SIGINT caught, a SIGTERM not
        // yet) would otherwise take its default action and kill the process. What
        // arrives meanwhile is delivered to its handler once they are all in.
        // SAFETY: sigset_t is plain data that sigemptyset initialises; sigaddset with a
        // signal number it rejects leaves the set as it was.
        let mut held: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: see above.
        let mut before: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: both sets are valid, initialised sigset_t values; pthread_sigmask only
        // changes the calling thread's mask.
        let rc = unsafe {
            libc::sigemptyset(&mut held);
            for &sig in signals {
                libc::sigaddset(&mut held, sig);
            }
            libc::pthread_sigmask(libc::SIG_BLOCK, &held, &mut before)
        };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        let registered = signals.iter().try_for_each(|&sig| {
            let byte = sig as u8;
            // SAFETY: the handler only calls write(2), which is
            // async-signal-safe, on a descriptor kept open by `write`
            // for as long as the handler can run (the process lifetime:
            // every user keeps its `Signals` until exit: the daemon, the
            // SDK's plugins, `supervisorctl onboard`).
            unsafe {
                signal_hook::low_level::register(sig, move || {
                    libc::write(raw, (&byte as *const u8).cast(), 1);
                })
            }
            .map(drop)
        });
        // SAFETY: `before` is the mask pthread_sigmask gave back above.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &before, std::ptr::null_mut()) };
        registered?;
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(Caught { read, write })
    }
}

impl Caught {
    /// The caught signals as an async stream; within a tokio runtime.
    pub fn stream(self) -> io::Result<Signals> {
        Ok(Signals { rx: tokio::net::unix::pipe::Receiver::from_owned_fd(self.read)?, _write: self.write })
    }
}

impl Signals {
    /// The next caught signal.
    pub async fn recv(&mut self) -> io::Result<i32> {
        let mut b = [0u8; 1];
        loop {
            self.rx.readable().await?;
            match self.rx.try_read(&mut b) {
                Ok(1) => return Ok(i32::from(b[0])),
                Ok(_) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }
}
