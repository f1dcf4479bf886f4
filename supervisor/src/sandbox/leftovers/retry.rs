//! Instance cgroups a teardown could not remove at once (still busy after its grace) are
//! tried again in the background, so that nothing else waits for them; each is reported
//! when it finally goes, or when the retries give up. (IPC objects are not retried: root's
//! `IPC_RMID` either works or names why it cannot, and a later try could hit an object a
//! new instance of the plugin made under the same key.)

use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use crate::observe::events::{EventBus, EventKind};
use crate::sandbox::cgroup::{self, Removal};

/// How often the background task tries again.
pub const PERIOD: Duration = Duration::from_secs(2);
/// Retries before giving up on one leftover (about an hour).
const ATTEMPTS: u32 = 1800;
/// At most this many leftovers are kept for retries; more are only reported.
const CAPACITY: usize = 1024;

struct Entry {
    plugin: String,
    instance: String,
    cgroup: Arc<cgroup::Instance>,
    attempts: u32,
    events: Arc<EventBus>,
}

/// The leaves being retried.
pub struct Retries {
    /// `None` once closed: the supervisor stopped and its subtree went, so a path kept
    /// here may by now name a leaf of another supervisor on the same config.
    entries: Mutex<Option<Vec<Entry>>>,
}

impl Default for Retries {
    fn default() -> Self {
        Self { entries: Mutex::new(Some(Vec::new())) }
    }
}

/// Why a leaf was not kept for retries.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotKept {
    #[error("too many leftovers are being retried already ({CAPACITY})")]
    Full,
    #[error("the supervisor has stopped: its leftovers are no longer retried")]
    Closed,
}

impl std::fmt::Debug for Retries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retries").field("pending", &self.len()).finish()
    }
}

impl Retries {
    /// Starts the background task; it ends when the returned `Arc` is dropped.
    pub fn start() -> Arc<Self> {
        let retries = Arc::new(Self::default());
        tokio::spawn(run(Arc::downgrade(&retries)));
        retries
    }

    fn lock(&self) -> MutexGuard<'_, Option<Vec<Entry>>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps `cgroup` for retries.
    pub fn push(
        &self,
        plugin: &str,
        instance: &str,
        cgroup: Arc<cgroup::Instance>,
        events: Arc<EventBus>,
    ) -> Result<(), NotKept> {
        let mut guard = self.lock();
        let entries = guard.as_mut().ok_or(NotKept::Closed)?;
        if entries.len() >= CAPACITY {
            return Err(NotKept::Full);
        }
        entries.push(Entry { plugin: plugin.to_owned(), instance: instance.to_owned(), cgroup, attempts: 0, events });
        Ok(())
    }

    /// `instance` starts again: its leaf's path is about to be taken over (the start
    /// removes what is left there itself), so a retry must not touch it any more.
    pub fn forget(&self, plugin: &str, instance: &str) {
        if let Some(entries) = self.lock().as_mut() {
            entries.retain(|e| !(e.plugin == plugin && e.instance == instance));
        }
    }

    /// The supervisor's subtree was taken down, and with it every leaf kept here: the
    /// entries go untried and nothing is kept any more. A leaf's path outlives the
    /// supervisor, and a host may start another one on the same config, whose instance
    /// gets the same leaf: a retry would kill it.
    pub fn close(&self) {
        if let Some(dropped) = self.lock().take()
            && !dropped.is_empty()
        {
            tracing::debug!(leftovers = dropped.len(), "retries closed with the subtree's teardown");
        }
    }

    pub fn len(&self) -> usize {
        self.lock().as_ref().map_or(0, Vec::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One round: each leaf is tried once; what went, or what is given up on, is reported
    /// and forgotten. The list stays locked for the round, so [`Retries::forget`] never
    /// races an attempt on a leaf a start is taking over.
    pub fn round(&self) {
        let mut said = Vec::new();
        {
            let mut guard = self.lock();
            let Some(entries) = guard.as_mut() else { return };
            entries.retain_mut(|e| {
                e.attempts += 1;
                let _ = e.cgroup.kill();
                let gone = matches!(e.cgroup.try_remove(), Ok(Removal::Removed));
                let what = format!("cgroup of {}", e.cgroup.name());
                if gone {
                    said.push((
                        e.events.clone(),
                        e.plugin.clone(),
                        e.instance.clone(),
                        format!("teardown leftover removed on retry {}: {what}", e.attempts),
                        "cleaned",
                    ));
                } else if e.attempts >= ATTEMPTS {
                    said.push((
                        e.events.clone(),
                        e.plugin.clone(),
                        e.instance.clone(),
                        format!("teardown leftover given up after {} retries: {what}", e.attempts),
                        "leftover",
                    ));
                }
                !gone && e.attempts < ATTEMPTS
            });
        }
        for (events, plugin, instance, message, result) in said {
            events.emit(&plugin, &instance, EventKind::Teardown, message, &[("result", result.into())]);
        }
    }
}

async fn run(retries: Weak<Retries>) {
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let Some(r) = retries.upgrade() else { return };
        if !r.is_empty() {
            // On the daemon's one runtime thread, as the starts that take leaves over are:
            // a round (a kill and an rmdir per leaf, rarely any) never interleaves with one.
            r.round();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::metrics::Metrics;
    use crate::sandbox::cgroup::test_hosts::{create, hybrid};
    use crate::sandbox::cgroup::{Limits, SubtreeConfig};

    fn leaf(name: &str) -> Arc<cgroup::Instance> {
        let (fs, layout) = hybrid();
        let cfg = SubtreeConfig { name: "s".into(), parent: None, move_self: false };
        let tree = create(&fs, Arc::new(layout), &cfg).unwrap();
        Arc::new(tree.create_instance("p", name, &Limits::default()).unwrap())
    }

    #[tokio::test]
    async fn a_leaf_that_goes_on_a_later_try_is_reported_and_forgotten_and_a_restarted_one_is_left_be() {
        let events = Arc::new(EventBus::new(16, Arc::new(Metrics::default())));
        let retries = Retries::default();
        assert_eq!(retries.push("p", "p-0", leaf("p-0"), events.clone()), Ok(()));
        assert_eq!(retries.push("p", "p-1", leaf("p-1"), events.clone()), Ok(()));
        // p-1 starts again before the round: its entry goes untried.
        retries.forget("p", "p-1");
        retries.round();
        assert!(retries.is_empty());
        let (seen, _) = events.subscribe();
        let said: Vec<&str> = seen.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(said, ["teardown leftover removed on retry 1: cgroup of p-0"]);
        assert_eq!(seen[0].kind, "teardown");
    }

    #[test]
    fn the_list_is_bounded() {
        let events = Arc::new(EventBus::new(16, Arc::new(Metrics::default())));
        let retries = Retries::default();
        let cg = leaf("p-0");
        for _ in 0..CAPACITY {
            assert_eq!(retries.push("p", "p-0", cg.clone(), events.clone()), Ok(()));
        }
        assert_eq!(retries.push("p", "p-0", cg, events), Err(NotKept::Full));
        assert_eq!(retries.len(), CAPACITY);
    }
}
