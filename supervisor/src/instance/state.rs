//! What an instance is doing, as operators see it: a small state machine
//! whose every state carries the reason it is in it.

use std::fmt;
use std::time::Instant;

/// The states shown to users.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Spawned; handshake and init under way.
    Starting,
    /// Ready for calls.
    Running,
    /// Ended and waiting to be restarted.
    Backoff,
    /// Draining and exiting.
    Stopping,
    /// Not running, by request or by restart policy.
    Stopped,
    /// Not running because it cannot run as configured; needs the operator.
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Running => "running",
            State::Backoff => "backoff",
            State::Stopping => "stopping",
            State::Stopped => "stopped",
            State::Failed => "failed",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the plugin declared at its last successful handshake.
#[derive(Clone, Debug, Default)]
pub struct Declared {
    pub version: String,
    pub sdk_version: String,
    pub protocol_version: u32,
    pub services: Vec<String>,
}

/// One instance's status, kept under a mutex and copied out for readers.
#[derive(Clone, Debug)]
pub struct Status {
    pub state: State,
    pub reason: String,
    pub pid: Option<i32>,
    pub restarts: u32,
    pub running_since: Option<Instant>,
    pub declared: Declared,
    pub sha256: String,
    /// The command generation this instance last acted on.
    pub generation: u64,
    pub tier: String,
    pub quota: crate::config::QuotaConfig,
    /// Quotas the host could not enforce.
    pub notes: Vec<String>,
    /// Resource use at the last sample.
    pub usage: Option<crate::sandbox::cgroup::Stats>,
}

impl Default for Status {
    fn default() -> Self {
        Self {
            state: State::Stopped,
            reason: "not started".into(),
            pid: None,
            restarts: 0,
            running_since: None,
            declared: Declared::default(),
            sha256: String::new(),
            generation: 0,
            tier: String::new(),
            quota: crate::config::QuotaConfig::default(),
            notes: Vec::new(),
            usage: None,
        }
    }
}

impl Status {
    pub fn uptime_s(&self) -> u64 {
        match (self.state, self.running_since) {
            (State::Running, Some(t)) => t.elapsed().as_secs(),
            _ => 0,
        }
    }

    /// "backoff (exited with code 1)", for messages naming the state.
    pub fn describe(&self) -> String {
        if self.reason.is_empty() { self.state.to_string() } else { format!("{} ({})", self.state, self.reason) }
    }
}
