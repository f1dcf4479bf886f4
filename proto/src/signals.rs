//! Stop signals (SIGTERM, SIGINT) as an async stream, through a pipe that
//! an async-signal-safe handler writes to.
//!
//! tokio's own signal support creates a socketpair when any runtime starts
//! (whether or not signals are used), which the hardened seccomp tiers
//! forbid; with tokio's `signal` feature compiled into the workspace it
//! would end up in every plugin. This needs only `pipe2`, `read` and
//! `write`.

use std::io;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};

/// Delivers the numbers of the signals it was set up for.
pub struct Signals {
    rx: tokio::net::unix::pipe::Receiver,
}

/// Signals caught from the moment [`Signals::catch`] returned, waiting in
/// the pipe until a runtime exists to read them.
pub struct Caught {
    read: OwnedFd,
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
        // The handlers stay for the life of the process, so the descriptor they write to
        // does too: never closed, its number is never another file's. Closed with the
        // stream (a plugin's runtime shut down while its blocking jobs end, say), a file
        // opened next could take the number, and a late SIGTERM wrote into it. A copy of
        // the read end is kept with it, so a write finds a reader and raises no SIGPIPE;
        // once the pipe is full, a write fails (it does not block) and is dropped.
        let _never_closed = read.try_clone()?.into_raw_fd();
        let raw = write.into_raw_fd();
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
            // async-signal-safe, on a descriptor never closed (above), so
            // open for as long as the handler can run.
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
        Ok(Caught { read })
    }
}

impl Caught {
    /// The caught signals as an async stream; within a tokio runtime.
    pub fn stream(self) -> io::Result<Signals> {
        Ok(Signals { rx: tokio::net::unix::pipe::Receiver::from_owned_fd(self.read)? })
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

#[cfg(test)]
mod tests {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    use super::Signals;

    /// A signal that comes once its stream is gone (a plugin's runtime shut down while its
    /// blocking jobs end, and the supervisor's SIGTERM) writes into no file opened since,
    /// whatever number that file took: the pipe's were closed with the stream, and the
    /// handler wrote its byte into whichever file took the write end's.
    #[test]
    fn a_signal_after_its_stream_is_gone_writes_into_no_file_opened_since() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let signals = rt.block_on(async { Signals::new(&[libc::SIGUSR2]) }).unwrap();
        drop(signals);
        drop(rt);
        // Files taking the lowest free numbers, as a blocking job's would.
        let files: Vec<OwnedFd> = (0..16)
            .map(|_| {
                // SAFETY: memfd_create returns a new descriptor, owned by nobody else.
                let fd = unsafe { libc::memfd_create(c"signals-test".as_ptr(), libc::MFD_CLOEXEC) };
                assert!(fd >= 0, "{}", std::io::Error::last_os_error());
                // SAFETY: see above.
                unsafe { OwnedFd::from_raw_fd(fd) }
            })
            .collect();
        // SAFETY: raise runs this thread's handler for SIGUSR2, ours.
        assert_eq!(unsafe { libc::raise(libc::SIGUSR2) }, 0);
        for file in &files {
            // SAFETY: fstat writes only into the zeroed buffer we own.
            let size = unsafe {
                let mut st: libc::stat = std::mem::zeroed();
                assert_eq!(libc::fstat(file.as_raw_fd(), &mut st), 0);
                st.st_size
            };
            assert_eq!(size, 0, "the signal's byte went into fd {}", file.as_raw_fd());
        }
    }
}
