//! One way to begin stopping, whatever asks for it (the Shutdown RPC,
//! SIGTERM, SIGINT, or the supervisor's end of the socket closing), and the
//! drain deadline that bounds it.

use std::time::Duration;

use tokio::sync::watch;

/// The drain a SIGTERM or SIGINT starts, unless a shorter one is under way:
/// what an operator's `supervisorctl signal TERM` gives the plugin. In the
/// supervisor's own stop sequence SIGTERM comes only once the Shutdown
/// call's drain deadline has passed, and SIGKILL a second later.
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

/// Turns SIGTERM and SIGINT into a shutdown (through a pipe: tokio's own
/// signal support would create a socketpair, which hardened tiers forbid).
pub fn watch_signals(shutdown: Shutdown) -> std::io::Result<()> {
    let mut signals = plugin_proto::signals::Signals::new(&[libc::SIGTERM, libc::SIGINT])?;
    tokio::spawn(async move {
        while signals.recv().await.is_ok() {
            shutdown.trigger(SIGNAL_DRAIN, "signal");
        }
    });
    Ok(())
}
