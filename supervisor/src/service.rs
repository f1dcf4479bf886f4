//! What the daemon tells the service manager that started it, in systemd's notify
//! protocol (`sd_notify(3)`, through the `sd-notify` crate): `READY=1` once its sockets
//! are up and its autostart plugins have started, `RELOADING=1` and `READY=1` again
//! around each config update, `STOPPING=1`, a one-line `STATUS=` kept current, and
//! `WATCHDOG=1` pings when the manager asked for them.
//!
//! The messages go out from a thread of their own: a datagram to a manager that has
//! stopped reading blocks its sender, and the runtime's one thread must never wait on
//! that. They keep their order; past [`QUEUE`] unsent ones, new ones are dropped (said
//! once in the log). Without `NOTIFY_SOCKET` nothing is started and nothing is sent.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sd_notify::NotifyState;

use crate::instance::Plugin;
use crate::instance::state::State;

/// Messages waiting for the sending thread; a manager that reads keeps this near empty.
pub const QUEUE: usize = 64;
/// How long the daemon waits for its autostart plugins before it says it is ready
/// anyway (the status line then says what is still starting): below systemd's default
/// start timeout of 90 s, so a plugin slow to start is reported, not the daemon failed.
pub const READY_WAIT: Duration = Duration::from_secs(60);
/// How often the status line is looked at (and sent if it changed).
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// One message to the manager.
#[derive(Debug)]
enum Message {
    Ready(String),
    /// With the monotonic clock's reading (`MONOTONIC_USEC`), which systemd 253 and
    /// later want with it.
    Reloading(Option<NotifyState<'static>>),
    Stopping,
    Status(String),
    Watchdog,
    /// Answered once everything before it was sent.
    Flush(mpsc::Sender<()>),
}

/// The daemon's side of the notify protocol. One per daemon: it owns the sending thread
/// and what was said last.
#[derive(Debug)]
pub struct Notifier {
    tx: Option<SyncSender<Message>>,
    /// `READY=1` was said: a reload says it again only then (a reload before it must not
    /// end the manager's wait for the start).
    ready: AtomicBool,
    last_status: Mutex<String>,
    dropped: AtomicBool,
    /// `STOPPING=1` was said: an update still finishing says no `READY=1` after it.
    stopping: AtomicBool,
}

impl Notifier {
    /// A notifier for the manager `NOTIFY_SOCKET` names, or one that sends nothing.
    pub fn from_env() -> Arc<Self> {
        let tx = std::env::var_os("NOTIFY_SOCKET").and_then(|_| {
            let (tx, rx) = mpsc::sync_channel::<Message>(QUEUE);
            let spawned = std::thread::Builder::new().name("sd-notify".into()).spawn(move || send_all(&rx));
            match spawned {
                Ok(_) => Some(tx),
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the thread that notifies the service manager");
                    None
                }
            }
        });
        Self::sending_to(tx)
    }

    fn sending_to(tx: Option<SyncSender<Message>>) -> Arc<Self> {
        Arc::new(Self {
            tx,
            ready: AtomicBool::new(false),
            last_status: Mutex::default(),
            dropped: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
        })
    }

    /// Whether a manager is listening (`NOTIFY_SOCKET` was set).
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    fn send(&self, m: Message) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(m) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                if !self.dropped.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        queued = QUEUE,
                        "the service manager is not reading its notify socket: messages dropped"
                    );
                }
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// `READY=1`, with the status line; nothing once `STOPPING=1` was said. A start
    /// cut short by the shutdown ends the wait for it, and systemd, which ignores
    /// `STOPPING=1` from a unit still activating, would take a late `READY=1` as the
    /// unit now active.
    pub fn ready(&self, status: String) {
        if self.stopping.load(Ordering::SeqCst) {
            tracing::debug!("stopping: READY=1 not said");
            return;
        }
        self.ready.store(true, Ordering::SeqCst);
        self.remember(&status);
        self.send(Message::Ready(status));
    }

    /// `RELOADING=1` now and `READY=1` when the guard goes: around a config update.
    pub fn reloading(self: &Arc<Self>) -> Reloading {
        // Once stopping, a reload says nothing: RELOADING=1 after STOPPING=1 would tell the
        // service manager the unit is back to reloading while it goes.
        let said = self.ready.load(Ordering::SeqCst) && !self.stopping.load(Ordering::SeqCst);
        if said {
            self.send(Message::Reloading(NotifyState::monotonic_usec_now().ok()));
        }
        Reloading { notifier: self.clone(), said }
    }

    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.send(Message::Stopping);
    }

    /// `STATUS=` if it differs from what was said last.
    pub fn status(&self, line: String) {
        if self.remember(&line) {
            self.send(Message::Status(line));
        }
    }

    pub fn watchdog(&self) {
        self.send(Message::Watchdog);
    }

    /// Whether `line` is new; it is remembered.
    fn remember(&self, line: &str) -> bool {
        let mut last = self.last_status.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if *last == line {
            return false;
        }
        line.clone_into(&mut last);
        true
    }

    /// Waits up to `within` until what was queued is sent: before the daemon exits.
    pub fn flush(&self, within: Duration) {
        let (done, sent) = mpsc::channel();
        self.send(Message::Flush(done));
        if self.tx.is_some() {
            let _ = sent.recv_timeout(within);
        }
    }
}

/// A config update under way: says `READY=1` again when dropped, however it ended.
#[must_use]
pub struct Reloading {
    notifier: Arc<Notifier>,
    said: bool,
}

impl Drop for Reloading {
    fn drop(&mut self) {
        if self.said && !self.notifier.stopping.load(Ordering::SeqCst) {
            let status = self.notifier.last_status.lock().map(|s| s.clone()).unwrap_or_default();
            self.notifier.send(Message::Ready(status));
        }
    }
}

fn send_all(rx: &mpsc::Receiver<Message>) {
    let mut failed = false;
    while let Ok(m) = rx.recv() {
        let states = match &m {
            Message::Ready(s) => vec![NotifyState::Ready, NotifyState::Status(s)],
            Message::Reloading(clock) => [NotifyState::Reloading].into_iter().chain(clock.clone()).collect(),
            Message::Stopping => vec![NotifyState::Stopping],
            Message::Status(s) => vec![NotifyState::Status(s)],
            Message::Watchdog => vec![NotifyState::Watchdog],
            Message::Flush(done) => {
                let _ = done.send(());
                continue;
            }
        };
        if let Err(e) = sd_notify::notify(&states) {
            // Said once: a manager that went away would otherwise fill the log.
            if !failed {
                tracing::warn!(error = %e, "cannot notify the service manager (NOTIFY_SOCKET)");
            }
            failed = true;
        }
    }
}

/// How a plugin is, for the status line: the worst of its serving instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Standing {
    Running,
    Starting,
    Backoff,
    Failed,
    Stopping,
    Stopped,
}

impl Standing {
    fn of(p: &Plugin) -> Self {
        p.serving()
            .instances
            .iter()
            .map(|i| match i.status().state {
                State::Running => Standing::Running,
                State::Starting => Standing::Starting,
                State::Backoff => Standing::Backoff,
                State::Failed => Standing::Failed,
                State::Stopping => Standing::Stopping,
                State::Stopped => Standing::Stopped,
            })
            .max_by_key(|s| s.rank())
            .unwrap_or(Standing::Stopped)
    }

    /// Which instance's standing speaks for the plugin: what needs the operator first.
    fn rank(self) -> u8 {
        match self {
            Standing::Running => 0,
            Standing::Stopped => 1,
            Standing::Stopping => 2,
            Standing::Starting => 3,
            Standing::Backoff => 4,
            Standing::Failed => 5,
        }
    }

    fn words(self) -> &'static str {
        match self {
            Standing::Running => "running",
            Standing::Starting => "starting",
            Standing::Backoff => "in backoff",
            Standing::Failed => "failed",
            Standing::Stopping => "stopping",
            Standing::Stopped => "stopped",
        }
    }
}

/// The one-line status: "3 plugins running, 1 in backoff".
pub fn status_line(standings: impl IntoIterator<Item = Standing>) -> String {
    let mut counts = std::collections::BTreeMap::<Standing, usize>::new();
    for s in standings {
        *counts.entry(s).or_default() += 1;
    }
    if counts.is_empty() {
        return "no plugins configured".into();
    }
    counts
        .iter()
        .enumerate()
        .map(|(i, (s, n))| {
            let noun = match (i, *n) {
                (0, 1) => "plugin ",
                (0, _) => "plugins ",
                _ => "",
            };
            format!("{n} {noun}{}", s.words())
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The status line of what runs now.
pub fn status_of(plugins: &[Arc<Plugin>]) -> String {
    status_line(plugins.iter().map(|p| Standing::of(p)))
}

/// Whether a plugin's start is over: the operator does not want it running, or each of
/// its serving instances is running, or its first start ended (it failed, waits to
/// start again, or exited under its restart policy).
pub fn settled(p: &Plugin) -> bool {
    !p.wants_running() || p.serving().instances.iter().all(|i| i.status().start_ended())
}

/// Tells the manager what the daemon is doing for as long as it runs: `READY=1` once
/// every autostart plugin's start is over (or after [`READY_WAIT`]), then the status line
/// whenever it changes, and watchdog pings if asked for. Runs on the runtime's thread, so
/// a runtime that stops turning stops the pings, which is what the watchdog is for.
pub async fn report(sup: Arc<crate::Supervisor>, notifier: Arc<Notifier>) {
    let watchdog = sd_notify::watchdog_enabled();
    // Twice per period, as sd_watchdog_enabled(3) advises.
    let every = watchdog.map_or(STATUS_EVERY, |w| STATUS_EVERY.min(w / 2)).max(Duration::from_millis(10));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = sup.wait_started(READY_WAIT);
    tokio::pin!(started);
    let mut ready = false;
    loop {
        tokio::select! {
            all = &mut started, if !ready => {
                if !all {
                    tracing::warn!(waited = ?READY_WAIT, "ready before every autostart plugin's start is over");
                }
                notifier.ready(status_of(&sup.plugins()));
                ready = true;
            }
            _ = tick.tick() => {
                if ready {
                    notifier.status(status_of(&sup.plugins()));
                }
                if watchdog.is_some() {
                    notifier.watchdog();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_line_counts_plugins_by_how_they_are() {
        use Standing::*;
        assert_eq!(status_line([Running, Running, Backoff, Running]), "3 plugins running, 1 in backoff");
        assert_eq!(status_line([Running]), "1 plugin running");
        assert_eq!(status_line([Failed, Stopped, Starting]), "1 plugin starting, 1 failed, 1 stopped");
        assert_eq!(status_line([]), "no plugins configured");
    }

    #[test]
    fn an_instance_that_needs_the_operator_speaks_for_its_plugin() {
        let worst = |s: &[Standing]| s.iter().copied().max_by_key(|s| s.rank()).unwrap();
        assert_eq!(worst(&[Standing::Running, Standing::Backoff, Standing::Running]), Standing::Backoff);
        assert_eq!(worst(&[Standing::Starting, Standing::Failed]), Standing::Failed);
        assert_eq!(worst(&[Standing::Running, Standing::Stopped]), Standing::Stopped);
    }

    #[test]
    fn without_a_manager_nothing_is_started_and_each_call_is_a_no_op() {
        let n = Notifier::sending_to(None);
        assert!(!n.enabled());
        n.ready("1 plugin running".into());
        drop(n.reloading());
        n.status("2 plugins running".into());
        n.watchdog();
        n.stopping();
        n.flush(Duration::from_millis(1));
        assert!(n.stopping.load(Ordering::SeqCst));
        // The status is still remembered, so a later change is told apart from a repeat.
        assert!(!n.remember("2 plugins running"));
        assert!(n.remember("3 plugins running"));
    }

    #[test]
    fn no_ready_is_said_after_stopping() {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let n = Notifier::sending_to(Some(tx));
        n.stopping();
        n.ready("1 plugin running".into());
        drop(n.reloading());
        let said: Vec<Message> = rx.try_iter().collect();
        assert!(matches!(said.as_slice(), [Message::Stopping]), "said after STOPPING=1: {said:?}");
    }

    /// A config update that begins after a stop signal, the daemon ready before it.
    #[test]
    fn no_reloading_is_said_after_stopping() {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let n = Notifier::sending_to(Some(tx));
        n.ready("1 plugin running".into());
        n.stopping();
        drop(n.reloading());
        let said: Vec<Message> = rx.try_iter().collect();
        assert!(matches!(said.as_slice(), [Message::Ready(_), Message::Stopping]), "said after STOPPING=1: {said:?}");
    }
}
