//! Lifecycle events (spawned, ready, exited, refused, restarting, ...):
//! a bounded history for `supervisorctl events`, which followers read on
//! from; a slow follower misses events instead of slowing anyone.

use std::sync::Arc;

use plugin_proto::control::v1::Event;

use super::metrics::Metrics;
use super::ring::{Follower, Ring};

/// What happened, as a kind: the `kind` field of an event, the `kind`
/// label of `supervisor_events_total`. The names are interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A process was started for an instance.
    Spawned,
    /// An instance passed its handshake and init and takes calls.
    Ready,
    /// An instance's process ended on its own.
    Exited,
    /// An instance was stopped on purpose.
    Stopped,
    /// An instance cannot run as configured; it waits for the operator.
    Refused,
    /// A start failed in a way a retry may fix.
    StartFailed,
    /// An instance waits before its next start.
    Backoff,
    /// An instance keeps failing; it is still retried, at the capped delay.
    CrashLoop,
    /// A forbidden system call was denied, or killed the instance.
    Seccomp,
    /// The task limit refused forks.
    PidsLimit,
    /// The CPU quota held an instance back.
    CpuThrottled,
    /// A quota change was applied.
    Quota,
    /// A quota change (or a persisted one at start) was refused by the kernel.
    QuotaRefused,
    /// A peer the control socket does not admit tried to connect.
    ControlRefused,
    /// A follower fell behind and missed events (sent to that follower only).
    Missed,
    /// A reload began: a new revision starts beside the serving one.
    Reload,
    /// A reload ended with the new revision serving.
    Reloaded,
    /// A reload was refused; the serving revision was left as it was.
    ReloadRefused,
    /// `update` added the plugin (from the config file).
    Added,
    /// `update` removed the plugin: its instances drained and stopped.
    Removed,
    /// `update` applied changed keys to the running instances, without a new process.
    Updated,
    /// A command took effect but could not be written to the state file: a restart of the
    /// supervisor will not keep it.
    NotSaved,
    /// A canary rollout moved to a step: its share of calls changed.
    RolloutStep,
    /// A canary rollout paused (the operator, or a step that saw too few calls).
    RolloutPaused,
    /// A paused or interrupted rollout goes on.
    RolloutResumed,
    /// A canary passed its last step and serves every call; the old revision drains.
    Promoted,
    /// A canary failed a step, crashed or was aborted: the stable revision serves every call
    /// again and the canary drains.
    RolledBack,
    /// The supervisor restarted during a rollout: the stable revision serves, the rollout
    /// waits for `rollout resume`.
    RolloutInterrupted,
    /// What the checks after an instance's end found it left, and what was done about it.
    Teardown,
    /// A sustained rise of an instance's memory, descriptors, tasks or CPU (or of the
    /// supervisor's own) was found over its leak window.
    Leak,
    /// A plugin's circuit breaker opened: its calls fail fast until a probe call succeeds.
    CircuitOpened,
    /// A plugin's circuit breaker closed again: its probe call succeeded.
    CircuitClosed,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Spawned => "spawned",
            EventKind::Ready => "ready",
            EventKind::Exited => "exited",
            EventKind::Stopped => "stopped",
            EventKind::Refused => "refused",
            EventKind::StartFailed => "start-failed",
            EventKind::Backoff => "backoff",
            EventKind::CrashLoop => "crash-loop",
            EventKind::Seccomp => "seccomp",
            EventKind::PidsLimit => "pids-limit",
            EventKind::CpuThrottled => "cpu-throttled",
            EventKind::Quota => "quota",
            EventKind::QuotaRefused => "quota-refused",
            EventKind::ControlRefused => "control-refused",
            EventKind::Missed => "missed",
            EventKind::Reload => "reload",
            EventKind::Reloaded => "reloaded",
            EventKind::ReloadRefused => "reload-refused",
            EventKind::Added => "added",
            EventKind::Removed => "removed",
            EventKind::Updated => "updated",
            EventKind::NotSaved => "not-saved",
            EventKind::RolloutStep => "rollout-step",
            EventKind::RolloutPaused => "rollout-paused",
            EventKind::RolloutResumed => "rollout-resumed",
            EventKind::Promoted => "promoted",
            EventKind::RolledBack => "rolled-back",
            EventKind::RolloutInterrupted => "rollout-interrupted",
            EventKind::Teardown => "teardown",
            EventKind::Leak => "leak",
            EventKind::CircuitOpened => "circuit-opened",
            EventKind::CircuitClosed => "circuit-closed",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug)]
pub struct EventBus {
    ring: Ring<Event>,
    metrics: Arc<Metrics>,
}

impl EventBus {
    pub fn new(capacity: usize, metrics: Arc<Metrics>) -> Self {
        Self { ring: Ring::new(capacity), metrics }
    }

    /// Records an event, counts it and logs it.
    pub fn emit(
        &self,
        plugin: &str,
        instance: &str,
        kind: EventKind,
        message: impl Into<String>,
        fields: &[(&str, String)],
    ) {
        self.count(plugin, kind);
        self.keep(plugin, instance, kind, message, fields);
    }

    /// Counts an event in `supervisor_events_total` only, neither keeping nor logging it:
    /// for events a flood repeats, kept and logged at most once in a while with
    /// [`EventBus::keep`], so that they cannot push every other event out of the history.
    pub fn count(&self, plugin: &str, kind: EventKind) {
        self.metrics.record_event(plugin, kind);
    }

    /// Records and logs an event without counting it (it was counted with [`EventBus::count`]).
    pub fn keep(
        &self,
        plugin: &str,
        instance: &str,
        kind: EventKind,
        message: impl Into<String>,
        fields: &[(&str, String)],
    ) {
        let message = message.into();
        let name = kind.as_str();
        tracing::info!(plugin, instance, kind = name, "{message}");
        self.ring.push(Event {
            unix_nanos: super::unix_nanos(),
            plugin: plugin.to_owned(),
            instance: instance.to_owned(),
            kind: name.to_owned(),
            message,
            fields: fields.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect(),
        });
    }

    /// The kept history, oldest first, and a follower reading on from after it.
    pub fn subscribe(&self) -> (Vec<Event>, Follower<Event>) {
        self.ring.subscribe(usize::MAX)
    }

    /// A reader of the whole history in place, then of what comes next.
    pub fn read_back(&self) -> Follower<Event> {
        self.ring.read_back(usize::MAX)
    }
}
