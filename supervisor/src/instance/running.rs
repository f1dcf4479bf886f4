//! A started instance and what the supervisor holds of it: the process (through the
//! launcher's handle), the channel it serves on, and what it declared at handshake.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use plugin_proto::transport::H2Channel;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::handshake::Accepted;
use super::launcher::{OthersNow, Process};
use crate::observe::teardown::Verdict;
use crate::sandbox::pidfd::ExitStatus;

/// One process not yet torn down, counted while it lives, by its plugin and by its
/// revision: the teardown of the plugin's last one may remove what the plugin's uid keeps
/// (IPC objects), which its other instances share while any runs; that of a retired
/// revision's last one proves its image released.
#[derive(Debug)]
pub struct Alive {
    plugin: Arc<AtomicUsize>,
    revision: Arc<AtomicUsize>,
}

impl Alive {
    pub fn new(plugin: &Arc<AtomicUsize>, revision: &Arc<AtomicUsize>) -> Self {
        plugin.fetch_add(1, Ordering::SeqCst);
        revision.fetch_add(1, Ordering::SeqCst);
        Self { plugin: plugin.clone(), revision: revision.clone() }
    }

    /// Uncounts this one; how many others are left, of the plugin and of the revision.
    pub fn release(self) -> (usize, usize) {
        let (plugin, revision) = (self.plugin.clone(), self.revision.clone());
        drop(self);
        (plugin.load(Ordering::SeqCst), revision.load(Ordering::SeqCst))
    }
}

impl Drop for Alive {
    fn drop(&mut self) {
        self.plugin.fetch_sub(1, Ordering::SeqCst);
        self.revision.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Says once an instance's connection takes no more calls, and why: its driver ended (the
/// plugin closed it, or it failed), or the plugin answered a call with GOAWAY. A plugin
/// that does either and lives on would otherwise be "running" for ever, every call to it
/// failing. Said once; the first cause is kept.
#[derive(Clone, Debug)]
pub struct Disconnect(Arc<watch::Sender<Option<Said>>>);

/// Why an instance's connection takes no more calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Said {
    pub why: String,
    /// It failed (an error code: a GOAWAY with one, as when the plugin's h2 took what it
    /// was sent for an attack, or a protocol error), rather than closed as a drain closes
    /// it. A plugin
    /// whose connection failed has failed, whatever its exit code says: it exits 0 once
    /// nobody can call it, and would not be restarted on failure.
    pub failed: bool,
}

impl Default for Disconnect {
    fn default() -> Self {
        Self(Arc::new(watch::Sender::new(None)))
    }
}

impl Disconnect {
    pub fn say(&self, failed: bool, why: impl FnOnce() -> String) {
        self.0.send_if_modified(|said| {
            if said.is_some() {
                return false;
            }
            // The peer's words may be in it (a GOAWAY's debug data).
            *said = Some(Said { why: super::said::plugin_said(&why()), failed });
            true
        });
    }

    /// Resolves with the cause once it is said.
    pub async fn said(&self) -> Said {
        let mut rx = self.0.subscribe();
        let said = rx.wait_for(Option::is_some).await.ok().and_then(|said| said.clone());
        match said {
            Some(said) => said,
            // Never: this handle keeps a sender.
            None => std::future::pending().await,
        }
    }
}

/// A started instance.
pub struct Running {
    pub pid: i32,
    /// Set once the handshake succeeded (start returns only such instances).
    pub channel: Option<H2Channel>,
    pub since: Instant,
    /// Set once the handshake and init succeeded.
    pub accepted: Option<Accepted>,
    /// How long each phase of its start took.
    pub phases: crate::observe::phases::Timings,
    /// Whether its first health check (at its start) said it serves.
    pub serving_at_start: bool,
    /// Bytes written to its connection so far ([`super::Live::written`]).
    pub written: Arc<std::sync::atomic::AtomicU64>,
    /// Taken by the clean-up.
    process: Option<Box<dyn Process>>,
    exit: watch::Receiver<Option<ExitStatus>>,
    /// What drives the connection to it.
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
    /// Counts it among its plugin's processes until it is torn down.
    alive: Option<Alive>,
    disconnect: Disconnect,
}

impl Running {
    pub fn new(process: Box<dyn Process>, alive: Alive) -> Self {
        let exit = process.exit();
        let pid = process.pid();
        Self {
            pid,
            channel: None,
            written: Default::default(),
            phases: Default::default(),
            serving_at_start: false,
            since: Instant::now(),
            accepted: None,
            process: Some(process),
            exit,
            tasks: Default::default(),
            alive: Some(alive),
            disconnect: Disconnect::default(),
        }
    }

    /// What says that its connection takes no more calls.
    pub fn disconnect(&self) -> Disconnect {
        self.disconnect.clone()
    }

    /// Keeps `task` as long as the instance (it is aborted with it).
    pub fn hold(&self, task: JoinHandle<()>) {
        self.tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(task);
    }

    fn abort_tasks(&self) {
        for t in self.tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).drain(..) {
            t.abort();
        }
    }

    /// Becomes `Some` once the process has ended.
    pub fn exit_watch(&self) -> watch::Receiver<Option<ExitStatus>> {
        self.exit.clone()
    }

    pub async fn exited(&mut self) -> ExitStatus {
        // A reaper gone without a status counts as killed.
        exited(&mut self.exit).await.unwrap_or(ExitStatus::Signaled { signal: libc::SIGKILL, core_dumped: false })
    }

    /// Kills the main process alone (see [`Process::kill_main`]).
    pub fn kill_main(&self) {
        if let Some(p) = &self.process {
            p.kill_main();
        }
    }

    /// What sends the operator's signals to the main process (None once cleaned up).
    pub fn signaller(&self) -> Option<super::signal::Signaller> {
        self.process.as_ref().map(|p| p.signaller())
    }

    pub fn terminate(&self) {
        if let Some(p) = &self.process {
            p.terminate();
        }
    }

    /// Why the instance ended, in the words operators see.
    pub fn reason(&self, status: ExitStatus) -> String {
        self.process.as_ref().map_or_else(|| status.to_string(), |p| p.reason(status))
    }

    /// After the main process is gone: kills whatever else is left of it, releases what
    /// was held for it, and says what the checks after it found.
    /// Uncounts it among its plugin's and revision's processes (see [`Alive`]); how many
    /// of each are left. Concurrent teardowns of the last two each see the other
    /// uncounted, or the later one sees none: at least one of them acts as the last.
    pub fn release(&mut self) -> Option<(usize, usize)> {
        self.alive.take().map(Alive::release)
    }

    pub async fn clean_up(mut self, others: OthersNow) -> Verdict {
        let tasks: Vec<JoinHandle<()>> =
            self.tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).drain(..).collect();
        for t in &tasks {
            t.abort();
        }
        // The connection's driver owns the supervisor's end of the plugin's socket: it is
        // closed once the task is gone, before the teardown looks.
        for t in tasks {
            let _ = t.await;
        }
        match self.process.take() {
            Some(process) => process.clean_up(others).await,
            None => Verdict::default(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Dropped without a clean-up (a cancelled start, a shutdown): the process handle's
        // own drop kills what is left.
        self.abort_tasks();
    }
}

/// The exit status once the process has ended (None if the reaper vanished).
pub async fn exited(rx: &mut watch::Receiver<Option<ExitStatus>>) -> Option<ExitStatus> {
    rx.wait_for(Option::is_some).await.ok().and_then(|r| *r)
}
