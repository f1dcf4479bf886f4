//! A revision of a plugin: a config entry and the verified image it runs, and the
//! instances that run them. A plugin has one serving revision; a reload brings a new one
//! up beside it, and the old one drains away once the new one serves.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::watch;

use super::launcher::Image;
use super::{Contract, Instance, Live};
use crate::config::{PluginSpec, QuotaConfig};

#[derive(Debug)]
pub struct Revision {
    /// 1 for the revision a plugin starts with, then one more per reload.
    pub number: u64,
    /// Replaced only by an update of keys that apply live (`call_timeout`, `quota`, ...):
    /// what needs a new process makes a new revision instead.
    spec: ArcSwap<PluginSpec>,
    /// The verified binary its instances execute, shared by them, kept while the
    /// revision is (so a rollback never depends on the file on disk).
    pub image: Mutex<Option<Arc<Image>>>,
    /// Held while the image is loaded: replicas starting together wait for the first one's
    /// load instead of each verifying (copying and hashing) the binary again, a thousand
    /// copies of it at once for a thousand replicas.
    pub(crate) image_loading: tokio::sync::Mutex<()>,
    pub instances: Vec<Arc<Instance>>,
    /// What its instances declared at their last handshake.
    pub contract: ArcSwapOption<Contract>,
    /// What its calls came to, as the routing stack recorded them.
    pub outcomes: crate::routing::outcomes::Outcomes,
    /// Set once: its instances drain, stop, and are not started again.
    retired: watch::Sender<bool>,
    /// Its processes not yet torn down.
    pub(crate) alive: Arc<AtomicUsize>,
    next: AtomicUsize,
}

impl Revision {
    pub(super) fn new(
        number: u64,
        spec: Arc<PluginSpec>,
        ids: &AtomicUsize,
        changed: &Arc<watch::Sender<u64>>,
    ) -> Self {
        let instances = (0..spec.replicas)
            .map(|_| {
                let n = ids.fetch_add(1, Ordering::Relaxed);
                Arc::new(Instance {
                    id: format!("{}-{n}", spec.name),
                    revision: number,
                    status: Mutex::default(),
                    live: ArcSwapOption::empty(),
                    cgroup: ArcSwapOption::empty(),
                    changed: changed.clone(),
                })
            })
            .collect();
        Self {
            number,
            spec: ArcSwap::new(spec),
            image: Mutex::new(None),
            image_loading: tokio::sync::Mutex::new(()),
            instances,
            contract: ArcSwapOption::empty(),
            outcomes: Default::default(),
            retired: watch::channel(false).0,
            alive: Arc::default(),
            next: AtomicUsize::new(0),
        }
    }

    /// The config entry it runs.
    pub fn spec(&self) -> Arc<PluginSpec> {
        self.spec.load_full()
    }

    /// Takes an entry that differs from its own only in keys that apply to running
    /// processes (see `config::changes`).
    pub(crate) fn set_live_spec(&self, spec: Arc<PluginSpec>) {
        self.spec.store(spec);
    }

    /// The quotas its instances start with now, under the operator's `overrides`.
    pub fn quota(&self, tier: Option<&crate::sandbox::tier::Quota>, overrides: &QuotaConfig) -> QuotaConfig {
        crate::sandbox::quota::effective(tier, &self.spec.load().quota, overrides)
    }

    /// A ready instance, round robin.
    pub fn pick(&self) -> Option<Arc<Live>> {
        let n = self.instances.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n).find_map(|i| self.instances[(start + i) % n].live.load_full())
    }

    /// Its ready instances, each once, starting at the next in round-robin order; `advance`
    /// moves the order on (a call's first pick does, the one retry of a refused call not,
    /// so that the next call still starts at the next instance).
    pub fn ready_round_robin(&self, advance: bool) -> impl Iterator<Item = Arc<Live>> + '_ {
        let n = self.instances.len();
        let start = if advance { self.next.fetch_add(1, Ordering::Relaxed) } else { self.next.load(Ordering::Relaxed) };
        (0..n).filter_map(move |i| self.instances[(start + i) % n].live.load_full())
    }

    /// Some instance is ready for calls.
    pub fn has_ready(&self) -> bool {
        self.instances.iter().any(|i| i.live.load().is_some())
    }

    /// A ready instance other than `not` (for the one retry of a call an instance
    /// refused).
    pub fn pick_other(&self, not: &Live) -> Option<Arc<Live>> {
        self.instances.iter().filter_map(|i| i.live.load_full()).find(|l| l.pid != not.pid)
    }

    /// Its instances drain, stop and stay stopped.
    pub(crate) fn retire(&self) {
        self.retired.send_replace(true);
    }

    pub fn is_retired(&self) -> bool {
        *self.retired.borrow()
    }

    pub(crate) fn retirement(&self) -> watch::Receiver<bool> {
        self.retired.subscribe()
    }
}
