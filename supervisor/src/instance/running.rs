//! A started instance and what the supervisor holds of it: the process (through the
//! launcher's handle), the channel it serves on, and what it declared at handshake.

use std::time::Instant;

use plugin_proto::transport::H2Channel;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::handshake::Accepted;
use super::launcher::Process;
use crate::sandbox::pidfd::ExitStatus;

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
    /// Taken by the clean-up.
    process: Option<Box<dyn Process>>,
    exit: watch::Receiver<Option<ExitStatus>>,
    /// What drives the connection to it.
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl Running {
    pub fn new(process: Box<dyn Process>) -> Self {
        let exit = process.exit();
        let pid = process.pid();
        Self {
            pid,
            channel: None,
            phases: Default::default(),
            since: Instant::now(),
            accepted: None,
            process: Some(process),
            exit,
            tasks: Default::default(),
        }
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

    pub fn kill(&self) {
        if let Some(p) = &self.process {
            p.kill();
        }
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

    /// After the main process is gone: kills whatever else is left of it and releases
    /// what was held for it.
    pub async fn clean_up(mut self) {
        self.abort_tasks();
        if let Some(process) = self.process.take() {
            process.clean_up().await;
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
