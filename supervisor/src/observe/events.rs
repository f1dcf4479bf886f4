//! Lifecycle events (spawned, ready, exited, refused, restarting, ...):
//! a bounded history for `supervisorctl events` and a broadcast for
//! followers; a slow follower misses events instead of slowing anyone.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use plugin_proto::control::v1::Event;
use tokio::sync::broadcast;

#[derive(Debug)]
pub struct EventBus {
    history: Mutex<VecDeque<Event>>,
    capacity: usize,
    tx: broadcast::Sender<Event>,
}

impl EventBus {
    pub fn new(capacity: usize) -> Self {
        Self { history: Mutex::new(VecDeque::new()), capacity: capacity.max(1), tx: broadcast::channel(1024).0 }
    }

    /// Records an event and logs it.
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
        let ev = Event {
            unix_nanos: super::unix_nanos(),
            plugin: plugin.to_owned(),
            instance: instance.to_owned(),
            kind: kind.to_owned(),
            message,
            fields: fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect::<BTreeMap<_, _>>()
                .into_iter()
                .collect(),
        };
        if let Ok(mut h) = self.history.lock() {
            if h.len() == self.capacity {
                h.pop_front();
            }
            h.push_back(ev.clone());
        }
        let _ = self.tx.send(ev);
    }

    /// The kept history, oldest first, and a receiver for what follows.
    pub fn subscribe(&self) -> (Vec<Event>, broadcast::Receiver<Event>) {
        // Subscribe under the lock so nothing falls between the two.
        let h = self.history.lock();
        let rx = self.tx.subscribe();
        (h.map(|h| h.iter().cloned().collect()).unwrap_or_default(), rx)
    }

    pub fn history(&self) -> Vec<Event> {
        self.history.lock().map(|h| h.iter().cloned().collect()).unwrap_or_default()
    }
}
