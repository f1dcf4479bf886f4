//! A revision of a plugin: a config entry and the verified image it runs, and the
//! instances that run them. A plugin has one serving revision; a reload brings a new one
//! up beside it, and the old one drains away once the new one serves.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use tokio::sync::watch;

use super::launcher::Image;
use super::{Contract, Instance, Live};
use crate::config::{PluginSpec, QuotaConfig};

#[derive(Debug)]
pub struct Revision {
    /// 1 for the revision a plugin starts with, then one more per reload.
    pub number: u64,
    pub spec: Arc<PluginSpec>,
    /// The verified binary its instances execute, shared by them, kept while the
    /// revision is (so a rollback never depends on the file on disk).
    pub image: Mutex<Option<Arc<Image>>>,
    pub instances: Vec<Arc<Instance>>,
    /// What its instances declared at their last handshake.
    pub contract: ArcSwapOption<Contract>,
    /// Set once: its instances drain, stop, and are not started again.
    retired: watch::Sender<bool>,
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
            spec,
            image: Mutex::new(None),
            instances,
            contract: ArcSwapOption::empty(),
            retired: watch::channel(false).0,
            next: AtomicUsize::new(0),
        }
    }

    /// The quotas its instances start with now, under the operator's `overrides`.
    pub fn quota(&self, tier: Option<&crate::sandbox::tier::Quota>, overrides: &QuotaConfig) -> QuotaConfig {
        crate::sandbox::quota::effective(tier, &self.spec.quota, overrides)
    }

    /// A ready instance, round robin.
    pub fn pick(&self) -> Option<Arc<Live>> {
        let n = self.instances.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n).find_map(|i| self.instances[(start + i) % n].live.load_full())
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
