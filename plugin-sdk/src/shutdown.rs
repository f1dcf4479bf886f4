//! One way to begin stopping, whatever asks for it (the Shutdown RPC,
//! SIGTERM, SIGINT, or the supervisor's end of the socket closing), the
//! drain deadline that bounds it, and the handle a plugin's handlers watch it
//! through ([`ShutdownSignal`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// The drain a SIGTERM or SIGINT starts, unless one that ends sooner is under way:
/// what an operator's `supervisorctl signal TERM` gives the plugin. In the
/// supervisor's own stop sequence SIGTERM comes only once the Shutdown
/// call's drain deadline has passed, and SIGKILL a second later.
pub const SIGNAL_DRAIN: Duration = Duration::from_secs(5);

/// A drain under way: why it began, and how long the plugin has (from when it
/// began) before the calls still in flight are cut and the process exits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drain {
    /// What asked: the supervisor's reason (`operator request`, `replaced by a
    /// new revision`, `supervisor shutdown`), `signal`, or `supervisor
    /// connection closed`.
    pub reason: Arc<str>,
    /// The drain deadline.
    pub within: Duration,
}

/// Shared by everything that may ask the plugin to stop.
#[derive(Clone, Debug)]
pub struct Shutdown {
    tx: watch::Sender<Option<Asked>>,
}

/// The drain in force and when it ends.
#[derive(Clone, Debug)]
struct Asked {
    drain: Drain,
    ends: tokio::time::Instant,
    /// The earliest end of the drains asked for, which the supervisor's stop sequence
    /// counts from: the cut when its connection closes (at the end of every drain, the
    /// calls done) tells the handlers, but does not move this.
    deadline: tokio::time::Instant,
}

impl Shutdown {
    pub fn new() -> Self {
        Self { tx: watch::channel(None).0 }
    }

    /// Starts the drain, or cuts the one under way short: the drain in force is the one
    /// that ends first, each counted from when it was asked. Compared by their lengths
    /// alone, a SIGTERM's 5 s two seconds before a stop's minute ran out replaced it, and
    /// a handler told 5 s was cut after 2.
    pub fn trigger(&self, drain: Duration, why: &str) {
        self.ask(drain, why, true);
    }

    /// Cuts the drain short because the supervisor's end of the connection closed: nobody
    /// can call or stop the plugin any more. The exit's deadline stays that of the drain
    /// under way, if one is.
    pub fn connection_closed(&self) {
        self.ask(Duration::ZERO, "supervisor connection closed", false);
    }

    /// `asked`: whether this drain is one the supervisor's stop sequence (or an operator's
    /// signal) counts its grace from.
    fn ask(&self, drain: Duration, why: &str, asked: bool) {
        let now = tokio::time::Instant::now();
        let ends = now.checked_add(drain).unwrap_or_else(|| now + Duration::from_secs(86400 * 365));
        self.tx.send_if_modified(|cur| {
            let deadline = match cur {
                Some(under_way) => {
                    if asked && ends < under_way.deadline {
                        under_way.deadline = ends;
                    }
                    if under_way.ends <= ends {
                        return false;
                    }
                    under_way.deadline
                }
                None => ends,
            };
            tracing::info!(reason = why, drain_ms = drain.as_millis() as u64, "shutting down");
            *cur = Some(Asked { drain: Drain { reason: why.into(), within: drain }, ends, deadline });
            true
        });
    }

    /// Resolves once a shutdown was asked for, with its reason and drain deadline.
    pub async fn requested(&self) -> Drain {
        let mut rx = self.tx.subscribe();
        loop {
            if let Some(asked) = rx.borrow_and_update().clone() {
                return asked.drain;
            }
            if rx.changed().await.is_err() {
                return Drain { reason: "gone".into(), within: Duration::ZERO };
            }
        }
    }

    /// Resolves once the drain's deadline has passed: the earliest end of every drain
    /// asked for, each counted from when it was asked. A shorter drain asked for during a
    /// longer one (a SIGTERM's 5 s during a stop's minute) ends the wait by its own end.
    pub async fn deadline_passed(&self) {
        let mut rx = self.tx.subscribe();
        loop {
            let end = rx.borrow_and_update().as_ref().map(|asked| asked.ends);
            let changed = async {
                if rx.changed().await.is_err() {
                    // No sender is left to ask for a shorter one.
                    std::future::pending::<()>().await;
                }
            };
            match end {
                Some(at) => tokio::select! {
                    () = tokio::time::sleep_until(at) => return,
                    () = changed => {}
                },
                None => changed.await,
            }
        }
    }

    /// Asks for this shutdown whenever `outside` is asked for; never resolves.
    pub async fn follow(&self, outside: &Shutdown) {
        if !self.tx.same_channel(&outside.tx) {
            let d = outside.requested().await;
            self.trigger(d.within, &d.reason);
        }
        std::future::pending().await
    }

    /// The deadline the supervisor counts its grace before SIGTERM from: the earliest end
    /// of the drains asked for (see [`Asked::deadline`]); the moment the connection closed
    /// when that came first.
    pub fn exit_deadline(&self) -> Option<tokio::time::Instant> {
        self.tx.borrow().as_ref().map(|asked| asked.deadline)
    }

    fn now(&self) -> Option<Drain> {
        self.tx.borrow().as_ref().map(|asked| asked.drain.clone())
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

/// Tells a plugin's handlers that the plugin drains, so that a long stream can
/// end cleanly (a last message, then OK) instead of being cut when the drain
/// deadline passes. Got from [`Plugin::shutdown_signal`](crate::Plugin::shutdown_signal)
/// before `serve`, cloned into each service; it fires on the supervisor's
/// Shutdown call (a stop, restart or reload, the supervisor's own shutdown),
/// SIGTERM or SIGINT, or the supervisor's end of the connection closing.
///
/// Unary calls need nothing of it: they are let finish. It is for handlers that
/// would otherwise run until the deadline, a server stream that never ends by
/// itself above all:
///
/// ```
/// use plugin_sdk::tokio_stream::wrappers::ReceiverStream;
/// use plugin_sdk::{ShutdownSignal, tokio, tonic};
///
/// /// Sends `tick N` every second until the plugin drains, then says so and ends with OK.
/// fn ticks(shutdown: ShutdownSignal) -> ReceiverStream<Result<String, tonic::Status>> {
///     let (tx, rx) = tokio::sync::mpsc::channel(4);
///     tokio::spawn(async move {
///         for n in 0u64.. {
///             tokio::select! {
///                 drain = shutdown.requested() => {
///                     let _ = tx.send(Ok(format!("drained: {}", drain.reason))).await;
///                     return; // the stream ends here, with OK
///                 }
///                 () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
///             }
///             if tx.send(Ok(format!("tick {n}"))).await.is_err() {
///                 return; // the caller went away
///             }
///         }
///     });
///     ReceiverStream::new(rx)
/// }
///
/// // Taken before `serve`, given to the service that streams.
/// let plugin = plugin_sdk::Plugin::new("ticker", "1.0.0");
/// let shutdown = plugin.shutdown_signal();
/// # let _ = (ticks, shutdown);
/// ```
#[derive(Clone, Debug)]
pub struct ShutdownSignal(pub(crate) Shutdown);

impl ShutdownSignal {
    /// Resolves once the plugin began to drain (at once if it has), with why
    /// and how long it has. Cancel-safe: select on it beside the handler's work.
    pub async fn requested(&self) -> Drain {
        self.0.requested().await
    }

    /// Whether the plugin drains.
    pub fn is_requested(&self) -> bool {
        self.0.now().is_some()
    }

    /// The drain under way, if one is.
    pub fn drain(&self) -> Option<Drain> {
        self.0.now()
    }
}

/// The signals that drain a plugin.
pub const DRAINING_SIGNALS: [i32; 2] = [libc::SIGTERM, libc::SIGINT];

/// Turns [`DRAINING_SIGNALS`], `caught` since before the runtime existed, into a shutdown
/// (through a pipe: tokio's own signal support would create a socketpair, which hardened
/// tiers forbid). One caught before this runs drains the plugin now.
pub fn watch_signals(caught: plugin_proto::signals::Caught, shutdown: Shutdown) -> std::io::Result<()> {
    let mut signals = caught.stream()?;
    tokio::spawn(async move {
        while signals.recv().await.is_ok() {
            shutdown.trigger(SIGNAL_DRAIN, "signal");
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_signal_taken_before_the_drain_fires_with_its_reason_and_the_shortest_deadline() {
        let shutdown = Shutdown::new();
        let signal = ShutdownSignal(shutdown.clone());
        assert!(!signal.is_requested());
        let waiting = tokio::spawn({
            let signal = signal.clone();
            async move { signal.requested().await }
        });
        shutdown.trigger(Duration::from_secs(5), "operator request");
        shutdown.trigger(Duration::from_secs(9), "signal");
        let drain = tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("fired").unwrap();
        assert_eq!(drain, Drain { reason: "operator request".into(), within: Duration::from_secs(5) });
        assert!(signal.is_requested());
        shutdown.trigger(Duration::ZERO, "supervisor connection closed");
        assert_eq!(
            signal.drain().map(|d| (d.reason, d.within)),
            Some(("supervisor connection closed".into(), Duration::ZERO))
        );
    }

    /// The supervisor's connection closing cuts the drain short for the handlers but not
    /// the exit's deadline, which the supervisor counts its grace from: every drain ends
    /// with the connection closing, and one done early took that moment for its deadline.
    #[tokio::test]
    async fn the_connection_closing_cuts_the_drain_but_not_the_exits_deadline() {
        use tokio::time::Instant;
        // `asked` within [before, after] was counted from a moment between the two.
        let within = |at: Option<Instant>, before: Instant, after: Instant, drain: Duration| {
            at.is_some_and(|at| at >= before + drain && at <= after + drain)
        };
        let shutdown = Shutdown::new();
        assert_eq!(shutdown.exit_deadline(), None);
        let before = Instant::now();
        shutdown.trigger(Duration::from_secs(5), "operator request");
        let after = Instant::now();
        shutdown.connection_closed();
        assert_eq!(shutdown.now().map(|d| d.within), Some(Duration::ZERO), "the handlers are told at once");
        let at = shutdown.exit_deadline();
        assert!(within(at, before, after, Duration::from_secs(5)), "{at:?} is not 5 s after {before:?}");
        // A shorter drain asked for since still counts.
        let before = Instant::now();
        shutdown.trigger(Duration::from_secs(1), "signal");
        let after = Instant::now();
        let at = shutdown.exit_deadline();
        assert!(within(at, before, after, Duration::from_secs(1)), "{at:?} is not 1 s after {before:?}");
        // With no drain asked, the connection closing is the deadline.
        let closed = Shutdown::new();
        let before = Instant::now();
        closed.connection_closed();
        let after = Instant::now();
        assert!(within(closed.exit_deadline(), before, after, Duration::ZERO));
    }

    /// A shorter drain asked later that would end after the one under way changes
    /// nothing: the plugin still has what it was told.
    #[tokio::test]
    async fn a_later_shorter_drain_that_ends_later_leaves_the_one_under_way() {
        let shutdown = Shutdown::new();
        let signal = ShutdownSignal(shutdown.clone());
        let t0 = tokio::time::Instant::now();
        shutdown.trigger(Duration::from_millis(400), "operator request");
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Ends at 500 ms at the earliest: after the stop's 400.
        shutdown.trigger(Duration::from_millis(200), "signal");
        assert_eq!(
            signal.drain().map(|d| (d.reason, d.within)),
            Some(("operator request".into(), Duration::from_millis(400)))
        );
        tokio::time::timeout(Duration::from_secs(5), shutdown.deadline_passed()).await.expect("the deadline passed");
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(400), "the deadline passed after {took:?}");
    }

    #[tokio::test]
    async fn a_followed_shutdown_is_passed_on_with_its_reason() {
        let (inside, outside) = (Shutdown::new(), Shutdown::new());
        let following = tokio::spawn({
            let (inside, outside) = (inside.clone(), outside.clone());
            async move { inside.follow(&outside).await }
        });
        outside.trigger(Duration::from_millis(1500), "signal");
        let drain = tokio::time::timeout(Duration::from_secs(5), inside.requested()).await.expect("passed on");
        assert_eq!((&*drain.reason, drain.within), ("signal", Duration::from_millis(1500)));
        following.abort();
    }
}
