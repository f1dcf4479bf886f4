//! One way to begin stopping, whatever asks for it (the Shutdown RPC,
//! SIGTERM, SIGINT, or the supervisor's end of the socket closing), and the
//! drain deadline that bounds it.

use std::os::fd::OwnedFd;
use std::time::Duration;

use tokio::sync::watch;

/// Used when SIGTERM asks us to stop: the supervisor's grace period is
/// longer, so we finish first.
pub const SIGNAL_DRAIN: Duration = Duration::from_secs(5);

/// Shared by everything that may ask the plugin to stop.
#[derive(Clone, Debug)]
pub struct Shutdown {
    tx: watch::Sender<Option<Duration>>,
}

impl Shutdown {
    pub fn new() -> Self {
        Self { tx: watch::channel(None).0 }
    }

    /// Starts the drain; the first request's deadline wins unless a later one is shorter.
    pub fn trigger(&self, drain: Duration, why: &str) {
        self.tx.send_if_modified(|cur| match cur {
            Some(d) if *d <= drain => false,
            _ => {
                tracing::info!(reason = why, drain_ms = drain.as_millis() as u64, "shutting down");
                *cur = Some(drain);
                true
            }
        });
    }

    /// Resolves once a shutdown was asked for, with its drain deadline.
    pub async fn requested(&self) -> Duration {
        let mut rx = self.tx.subscribe();
        loop {
            if let Some(d) = *rx.borrow_and_update() {
                return d;
            }
            if rx.changed().await.is_err() {
                return Duration::ZERO;
            }
        }
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

/// Turns SIGTERM and SIGINT into a shutdown.
///
/// tokio's signal driver would create a socketpair, which the hardened
/// seccomp tiers forbid; a pipe written by an async-signal-safe handler
/// needs only `pipe2`, `read` and `write`.
pub fn watch_signals(shutdown: Shutdown) -> std::io::Result<()> {
    let (rd, wr) = pipe()?;
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::low_level::pipe::register(sig, wr.try_clone()?)?;
    }
    let rx = tokio::net::unix::pipe::Receiver::from_owned_fd(rd)?;
    tokio::spawn(async move {
        let mut buf = [0u8; 8];
        loop {
            if rx.readable().await.is_err() {
                return;
            }
            match rx.try_read(&mut buf) {
                Ok(0) => return,
                Ok(_) => shutdown.trigger(SIGNAL_DRAIN, "signal"),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    });
    Ok(())
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array we own.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    use std::os::fd::FromRawFd;
    // SAFETY: pipe2 succeeded, so both are fresh descriptors nobody else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}
