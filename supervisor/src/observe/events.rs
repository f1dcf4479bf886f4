//! Lifecycle events (spawned, ready, exited, refused, restarting, ...):
//! a bounded history for `supervisorctl events` and a broadcast for
//! followers; a slow follower misses events instead of slowing anyone.

use std::sync::Arc;

use plugin_proto::control::v1::Event;
use tokio::sync::broadcast;

use super::metrics::Metrics;
use super::ring::Ring;

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
        kind: &str,
        message: impl Into<String>,
        fields: &[(&str, String)],
    ) {
        let message = message.into();
        tracing::info!(plugin, instance, kind, "{message}");
        self.metrics.record_event(plugin, kind);
        self.ring.push(Event {
            unix_nanos: super::unix_nanos(),
            plugin: plugin.to_owned(),
            instance: instance.to_owned(),
            kind: kind.to_owned(),
            message,
            fields: fields.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect(),
        });
    }

    /// The kept history, oldest first, and a receiver for what follows.
    pub fn subscribe(&self) -> (Vec<Event>, broadcast::Receiver<Event>) {
        self.ring.subscribe(usize::MAX)
    }
}
