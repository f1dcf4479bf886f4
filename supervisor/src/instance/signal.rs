//! Signals an operator sends to a running instance (`supervisorctl signal`): to its main
//! process through the handle the supervisor holds of it (its pidfd), never by a pid that
//! could have been reused by then, then to every other process in the instance's cgroup
//! (each through a pidfd opened and checked to be in the cgroup), and only while the
//! instance is ready.

use std::io;
use std::sync::Mutex;

/// Sends a signal to an instance's processes, saying how many got it; built by the
/// [`super::launcher::Process`] that owns them.
pub struct Signaller(Box<dyn Fn(i32) -> io::Result<usize> + Send + Sync>);

impl Signaller {
    pub fn new(send: impl Fn(i32) -> io::Result<usize> + Send + Sync + 'static) -> Self {
        Self(Box::new(send))
    }
}

impl std::fmt::Debug for Signaller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signaller")
    }
}

/// A ready instance's signaller, until [`Armed::disarm`]: after that nothing signals the
/// process any more, and no signal is under way (the process's teardown may then prove
/// that nothing of the supervisor still holds its pidfd).
#[derive(Debug, Default)]
pub struct Armed(Mutex<Option<Signaller>>);

impl Armed {
    pub fn new(signaller: Option<Signaller>) -> Self {
        Self(Mutex::new(signaller))
    }

    /// Sends `sig`: how many processes got it, or None once disarmed.
    pub fn send(&self, sig: i32) -> io::Result<Option<usize>> {
        let held = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match held.as_ref() {
            Some(s) => (s.0)(sig).map(Some),
            None => Ok(None),
        }
    }

    pub fn disarm(&self) {
        drop(self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI32, Ordering};

    use super::*;

    #[test]
    fn a_disarmed_instance_is_signalled_no_more() {
        let got = Arc::new(AtomicI32::new(0));
        let seen = got.clone();
        let armed = Armed::new(Some(Signaller::new(move |sig| {
            seen.store(sig, Ordering::SeqCst);
            Ok(1)
        })));
        assert_eq!(armed.send(libc::SIGUSR1).unwrap(), Some(1));
        assert_eq!(got.load(Ordering::SeqCst), libc::SIGUSR1);
        armed.disarm();
        assert_eq!(armed.send(libc::SIGTERM).unwrap(), None);
        assert_eq!(got.load(Ordering::SeqCst), libc::SIGUSR1);
    }
}
