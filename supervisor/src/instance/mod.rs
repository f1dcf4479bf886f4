//! Plugin instances over their whole life: spawn, handshake, init, serve,
//! exit, restart, stop — one task per instance, driven by the operator's
//! desired state.

pub mod backoff;
pub mod error;
pub mod handshake;
pub mod host;
pub mod launcher;
mod runner;
mod running;
pub mod sandboxed;
mod start;
pub mod state;
mod stop;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use plugin_proto::transport::H2Channel;
use prost_reflect::DescriptorPool;
use tokio::sync::watch;

use crate::config::{PluginSpec, QuotaConfig};
use crate::observe::logs::LogBuffer;
pub(crate) use runner::run;
use state::{State, Status};

/// What the operator wants of a plugin. Every command bumps `generation`,
/// which is how a running instance learns it must act.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Desired {
    pub run: bool,
    pub generation: u64,
    /// The command restarts instances that are running (a plain start
    /// leaves them be).
    pub restart: bool,
}

/// A live instance, ready for calls.
#[derive(Debug)]
pub struct Live {
    pub channel: H2Channel,
    pub pid: i32,
}

/// The contract the plugin declared at its last handshake.
#[derive(Debug)]
pub struct Contract {
    pub pool: DescriptorPool,
    pub services: Vec<String>,
}

/// One replica slot of a plugin.
#[derive(Debug)]
pub struct Instance {
    pub id: String,
    pub status: Mutex<Status>,
    pub live: ArcSwapOption<Live>,
    /// The cgroup leaf of the process while it exists, for sampling and
    /// live quota changes.
    pub cgroup: ArcSwapOption<crate::sandbox::cgroup::Instance>,
    /// Bumped on every status change; shared by the plugin's instances so
    /// waiters wake on any of them instead of polling.
    changed: Arc<watch::Sender<u64>>,
}

impl Instance {
    pub fn status(&self) -> Status {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut Status)) {
        if let Ok(mut s) = self.status.lock() {
            f(&mut s);
        }
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// A configured plugin and its instances.
#[derive(Debug)]
pub struct Plugin {
    pub name: String,
    pub spec: ArcSwap<PluginSpec>,
    pub desired: watch::Sender<Desired>,
    pub instances: Vec<Arc<Instance>>,
    pub logs: Arc<LogBuffer>,
    pub contract: ArcSwapOption<Contract>,
    /// The verified binary every instance executes, shared by replicas.
    pub image: Mutex<Option<Arc<launcher::Image>>>,
    /// Quotas the operator set at run time (persisted), over the config's.
    pub overrides: ArcSwap<QuotaConfig>,
    /// Held while a quota change is applied, so changes do not interleave.
    pub(crate) quota_lock: Mutex<()>,
    next: AtomicUsize,
    changed: Arc<watch::Sender<u64>>,
}

impl Plugin {
    pub fn new(spec: PluginSpec, log_lines: usize) -> Self {
        let changed = Arc::new(watch::channel(0).0);
        let instances = (0..spec.replicas)
            .map(|i| {
                Arc::new(Instance {
                    id: format!("{}-{i}", spec.name),
                    status: Mutex::default(),
                    live: ArcSwapOption::empty(),
                    cgroup: ArcSwapOption::empty(),
                    changed: changed.clone(),
                })
            })
            .collect();
        Self {
            name: spec.name.clone(),
            desired: watch::channel(Desired { run: spec.autostart, generation: 0, restart: false }).0,
            spec: ArcSwap::from_pointee(spec),
            instances,
            logs: Arc::new(LogBuffer::new(log_lines)),
            contract: ArcSwapOption::empty(),
            image: Mutex::new(None),
            overrides: ArcSwap::from_pointee(QuotaConfig::default()),
            quota_lock: Mutex::new(()),
            next: AtomicUsize::new(0),
            changed,
        }
    }

    /// The quotas an instance starts with now.
    pub fn quota(&self, tier: Option<&crate::sandbox::tier::Quota>) -> QuotaConfig {
        crate::sandbox::quota::effective(tier, &self.spec.load().quota, &self.overrides.load())
    }

    /// A ready instance, round robin.
    pub fn pick(&self) -> Option<Arc<Live>> {
        let n = self.instances.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n).find_map(|i| self.instances[(start + i) % n].live.load_full())
    }

    /// "running", or the first instance's state with its reason, for
    /// messages about why the plugin cannot take a call.
    pub fn describe_state(&self) -> String {
        self.instances.first().map(|i| i.status().describe()).unwrap_or_else(|| "without instances".into())
    }

    /// Records a command; returns its generation.
    pub fn set_desired(&self, run: bool, restart: bool) -> u64 {
        let mut generation = 0;
        self.desired.send_modify(|d| {
            d.run = run;
            d.restart = restart;
            d.generation += 1;
            generation = d.generation;
        });
        generation
    }

    /// Waits until every instance has acted on command `generation` and is
    /// in one of `states`, or the timeout; true when reached.
    pub async fn wait_for(&self, generation: u64, states: &[State], timeout: Duration) -> bool {
        let mut rx = self.changed.subscribe();
        let reached = || {
            self.instances.iter().all(|i| {
                let s = i.status();
                s.generation >= generation && states.contains(&s.state)
            })
        };
        let waited = tokio::time::timeout(timeout, async {
            loop {
                rx.borrow_and_update();
                if reached() || rx.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        waited.is_ok() && reached()
    }
}
