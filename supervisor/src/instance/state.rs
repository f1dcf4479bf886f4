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
    /// How far from serving: running, on its way (starting), on its way out (stopping),
    /// out (stopped), out for now (backoff), out until the operator acts (failed).
    pub fn distance_from_running(self) -> u8 {
        match self {
            State::Running => 0,
            State::Starting => 1,
            State::Stopping => 2,
            State::Stopped => 3,
            State::Backoff => 4,
            State::Failed => 5,
        }
    }

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
    /// When `usage` was read: a rate (CPU per second) is the difference of two readings
    /// over the time between them, not between two looks at a cached one.
    pub usage_read_at: Option<std::time::SystemTime>,
    /// In backoff: when the next attempt is due.
    pub retry_at: Option<Instant>,
    /// How long each phase of its last start took, then of its last stop.
    pub phases: crate::observe::phases::Timings,
    /// What the checks after its last end found.
    pub teardown: Option<crate::observe::teardown::LastTeardown>,
    /// Leaks suspected now, as their events said them.
    pub leaks: Vec<String>,
    /// A start of this instance has begun (it is no longer "not started").
    pub tried: bool,
    /// How its last process ended, by itself (not stopped): kept past a quick restart,
    /// which clears `reason`, so whoever watched that process learns how it ended.
    pub last_exit: Option<LastExit>,
}

/// A process of the instance that ended by itself, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastExit {
    pub pid: i32,
    pub reason: String,
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
            usage_read_at: None,
            retry_at: None,
            phases: Default::default(),
            teardown: None,
            leaks: Vec::new(),
            tried: false,
            last_exit: None,
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

    /// "backoff (exited with code 1; next attempt in 2.4s)", for messages
    /// naming the state.
    pub fn describe(&self) -> String {
        let reason = self.reason_now();
        if reason.is_empty() { self.state.to_string() } else { format!("{} ({reason})", self.state) }
    }

    /// Why the instance is in its state, as of now: in backoff, with the time
    /// left until the next attempt (counting down, not frozen at the start).
    pub fn reason_now(&self) -> String {
        self.reason_at(Instant::now())
    }

    pub fn reason_at(&self, now: Instant) -> String {
        match (self.state, self.retry_at) {
            (State::Backoff, Some(at)) => format!("{}; next attempt {}", self.reason, time_left(at, now)),
            _ => self.reason.clone(),
        }
    }

    /// Whether its first start is over, however it went: it runs, failed, waits to start
    /// again, or ended under its restart policy.
    pub fn start_ended(&self) -> bool {
        self.tried && self.state != State::Starting
    }

    /// The last sampled usage, while there is a process to use anything.
    pub fn current_usage(&self) -> Option<crate::sandbox::cgroup::Stats> {
        self.pid.and(self.usage)
    }
}

/// "in 2.4s", "in 1m 5s"; "due now" once the time has come.
fn time_left(at: Instant, now: Instant) -> String {
    let left = at.saturating_duration_since(now);
    if left.is_zero() {
        return "due now".into();
    }
    // Rounded up, so "in 0.0s" never shows.
    let tenths = left.as_millis().div_ceil(100);
    if tenths < 600 {
        return format!("in {}.{}s", tenths / 10, tenths % 10);
    }
    let secs = std::time::Duration::from_secs(left.as_millis().div_ceil(1000) as u64);
    format!("in {}", crate::config::units::format_duration(secs))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_backoff_reason_counts_down_to_the_next_attempt() {
        let start = Instant::now();
        let s = Status {
            state: State::Backoff,
            reason: "exited with code 1".into(),
            retry_at: Some(start + Duration::from_millis(3000)),
            ..Status::default()
        };
        assert_eq!(s.reason_at(start), "exited with code 1; next attempt in 3.0s");
        assert_eq!(s.reason_at(start + Duration::from_millis(1250)), "exited with code 1; next attempt in 1.8s");
        assert_eq!(s.reason_at(start + Duration::from_millis(2999)), "exited with code 1; next attempt in 0.1s");
        assert_eq!(s.reason_at(start + Duration::from_secs(4)), "exited with code 1; next attempt due now");
        let long = Status { retry_at: Some(start + Duration::from_secs(95)), ..s.clone() };
        assert_eq!(long.reason_at(start), "exited with code 1; next attempt in 1m 35s");
        // Out of backoff, the reason is just the reason.
        let running = Status { state: State::Starting, ..s };
        assert_eq!(running.reason_at(start), "exited with code 1");
    }

    #[test]
    fn usage_shows_only_while_there_is_a_process() {
        let usage = crate::sandbox::cgroup::Stats { memory_current: Some(5 << 20), ..Default::default() };
        let gone = Status { state: State::Backoff, pid: None, usage: Some(usage), ..Status::default() };
        assert_eq!(gone.current_usage(), None);
        let live = Status { state: State::Running, pid: Some(42), ..gone };
        assert_eq!(live.current_usage(), Some(usage));
    }
}
