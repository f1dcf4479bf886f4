//! The leak watch as the sampler drives it: one [`Watch`] per running instance (and one
//! for the supervisor itself), fed each second, and what a suspected leak leads to: a
//! `leak` event once per episode, the `status` note, the metrics, and with
//! `action = "replace"` a reload of the plugin with the entry it runs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::probe;
use super::watch::{Episode, Limit, Limits, Reading, Resource, Watch};
use crate::config::leaks::{Action, LeaksConfig};
use crate::instance::{Instance, Plugin};
use crate::observe::events::EventKind;
use crate::sandbox::cgroup::Stats;
use crate::supervisor::Shared;

/// The instance label of the supervisor's own leak events and series (its plugin label is
/// empty: no plugin can be named that).
pub const SUPERVISOR: &str = "supervisor";

const NAMES: [&str; 4] = ["memory", "fds", "tasks", "cpu"];

/// Replacements in a row (each followed by a leak again within two windows) after which a
/// plugin's leaks are only reported: its new instances leak too, and replacing them every
/// window would only churn.
const MAX_IN_A_ROW: u32 = 3;

pub(crate) struct Watches {
    clock: Instant,
    /// By instance id: its plugin, the process watched, and its watch.
    instances: HashMap<String, Watched>,
    own: Watch,
    own_config: LeaksConfig,
    /// When each plugin was last replaced for a leak (at most once a window), and how
    /// many replacements in a row were followed by another leak within two windows.
    replaced: HashMap<String, (Instant, u32)>,
}

/// One instance's leak watch, and what its metrics say.
struct Watched {
    plugin: String,
    /// The process watched: another one is watched afresh.
    pid: Option<i32>,
    watch: Watch,
    /// What `supervisor_leak_suspected` and its slope say of each resource (in
    /// [`Resource::ALL`]'s order), once written.
    shown: [Option<(bool, f64)>; Resource::ALL.len()],
}

impl Watches {
    pub fn new(own_window: Duration) -> Self {
        Self {
            clock: Instant::now(),
            instances: HashMap::new(),
            own: Watch::default(),
            own_config: LeaksConfig::of_supervisor(own_window),
            replaced: HashMap::new(),
        }
    }

    fn now(&self) -> f64 {
        self.clock.elapsed().as_secs_f64()
    }

    /// Forgets the instances not in `listed` (gone with a reload, an update, a stop), and
    /// their series.
    pub fn retain(&mut self, shared: &Shared, listed: &std::collections::HashSet<String>) {
        self.instances.retain(|id, Watched { plugin, .. }| {
            let keep = listed.contains(id);
            if !keep {
                shared.metrics.forget_leaks(plugin, id, &NAMES);
            }
            keep
        });
        let plugins: std::collections::HashSet<&str> = self.instances.values().map(|w| w.plugin.as_str()).collect();
        let live: Vec<String> = shared.plugins.all().iter().map(|p| p.name.clone()).collect();
        self.replaced.retain(|name, _| live.contains(name) || plugins.contains(name.as_str()));
    }

    /// `inst` has no process now: its history goes.
    pub fn stopped(&mut self, shared: &Shared, inst: &Instance) {
        if let Some(Watched { plugin, .. }) = self.instances.remove(&inst.id) {
            shared.metrics.forget_leaks(&plugin, &inst.id, &NAMES);
        }
    }

    /// Takes `inst`'s reading; returns the leaks suspected in it now (its status note).
    pub fn instance(
        &mut self,
        shared: &Arc<Shared>,
        p: &Arc<Plugin>,
        cfg: &LeaksConfig,
        inst: &Instance,
        stats: &Stats,
        read: &probe::ProcReading,
    ) -> Vec<String> {
        let now = self.now();
        let reading = Reading {
            memory: stats.memory_held,
            fds: read.fds,
            tasks: stats.pids_current,
            cpu_usec: stats.cpu_usage_usec,
        };
        let (quota, status_pid) = inst.with_status(|st| (st.quota.clone(), st.pid));
        let mut limits = Limits::default();
        if let Some(m) = quota.memory_max {
            limits.set(Resource::Memory, Limit { name: "memory_max", shown: m.to_string(), value: m.0 as f64 });
        }
        if let Some(n) = quota.pids_max {
            limits.set(Resource::Tasks, Limit { name: "pids_max", shown: n.to_string(), value: n as f64 });
        }
        if let Some(c) = quota.cpu {
            limits.set(
                Resource::Cpu,
                Limit { name: "cpu", shown: c.to_string(), value: f64::from(c.basis_points) / 100.0 },
            );
        }
        // The descriptor limit is per process: it is the instance's only while it has one.
        if let Some(n) = read.nofile {
            limits.set(Resource::Fds, Limit { name: "nofile", shown: n.to_string(), value: n as f64 });
        }
        let Watched { pid, watch, shown, .. } = self.instances.entry(inst.id.clone()).or_insert_with(|| Watched {
            plugin: p.name.clone(),
            pid: status_pid,
            watch: Watch::default(),
            shown: Default::default(),
        });
        // A restarted instance is another process: what the last one used says nothing of it.
        if *pid != status_pid {
            *pid = status_pid;
            *watch = Watch::default();
        }
        let began = watch.observe(now, reading, cfg, &limits);
        for (r, shown) in Resource::ALL.into_iter().zip(shown.iter_mut()) {
            let e = watch.suspected(r);
            let now_shown = (e.is_some(), e.map_or(0.0, |e| e.per_min));
            // Only a change is written: each write looks up two series by their labels,
            // four resources every reading of every instance.
            if *shown != Some(now_shown) {
                shared.metrics.set_leak(&p.name, &inst.id, r.as_str(), now_shown.0, now_shown.1);
                *shown = Some(now_shown);
            }
        }
        let notes = watch.episodes().map(|e| e.message.clone()).collect();
        for e in began {
            // A draining revision's instance goes anyway; a reload replaces the serving one.
            // CPU is not replaced for: a rise of it is as often more work as a leak.
            let wanted =
                cfg.action == Action::Replace && e.resource != Resource::Cpu && inst.revision == p.serving().number;
            let replace = wanted && self.replace_due(&p.name, cfg.window);
            report(shared, &p.name, &inst.id, &e, replace);
            if replace {
                let again =
                    self.replaced.get(&p.name).is_some_and(|(at, _)| at.elapsed() < cfg.window.saturating_mul(2));
                let in_a_row = if again { self.replaced.get(&p.name).map_or(0, |(_, n)| *n) + 1 } else { 1 };
                self.replaced.insert(p.name.clone(), (Instant::now(), in_a_row));
                replace_plugin(shared, p, &inst.id);
            } else if wanted && self.given_up(&p.name, cfg.window) {
                shared.events.emit(
                    &p.name,
                    &inst.id,
                    EventKind::Leak,
                    format!(
                        "not replaced again: replaced {MAX_IN_A_ROW} times in a row, each new instance leaking again within two windows; reported only"
                    ),
                    &[("resource", e.resource.as_str().to_owned())],
                );
            }
        }
        notes
    }

    /// Due for a replacement: none for a window, and not given up on.
    fn replace_due(&self, plugin: &str, window: Duration) -> bool {
        self.replaced.get(plugin).is_none_or(|(at, _)| at.elapsed() >= window) && !self.given_up(plugin, window)
    }

    /// Replaced [`MAX_IN_A_ROW`] times in a row, each time to leak again, the last within
    /// two windows: a leak that begins later is not "in a row" any more.
    fn given_up(&self, plugin: &str, window: Duration) -> bool {
        self.replaced.get(plugin).is_some_and(|(at, n)| *n >= MAX_IN_A_ROW && at.elapsed() < window.saturating_mul(2))
    }

    /// Takes the supervisor's own reading: its footprint metrics, and its leaks.
    pub fn own(&mut self, shared: &Shared, me: &probe::Own) {
        let now = self.now();
        shared.metrics.set_own(me);
        let mut limits = Limits::default();
        if let Some(n) = me.nofile {
            limits.set(Resource::Fds, Limit { name: "nofile", shown: n.to_string(), value: n as f64 });
        }
        let reading = Reading { memory: me.rss_anon, fds: me.fds, tasks: me.threads, cpu_usec: None };
        let began = self.own.observe(now, reading, &self.own_config, &limits);
        for r in [Resource::Memory, Resource::Fds, Resource::Tasks] {
            let e = self.own.suspected(r);
            shared.metrics.set_leak("", SUPERVISOR, r.as_str(), e.is_some(), e.map_or(0.0, |e| e.per_min));
        }
        for e in began {
            report(shared, "", SUPERVISOR, &e, false);
        }
    }
}

fn report(shared: &Shared, plugin: &str, instance: &str, e: &Episode, replace: bool) {
    shared.metrics.record_leak(plugin, e.resource.as_str());
    let mut fields = vec![("resource", e.resource.as_str().to_owned()), ("per_min", format!("{}", e.per_min))];
    if replace {
        fields.push(("action", "replace".to_owned()));
    }
    shared.events.emit(plugin, instance, EventKind::Leak, e.message.clone(), &fields);
}

/// Reloads `p` with the entry its serving revision runs: a new revision beside the
/// leaking one, checked, switched to, and the old one drained, as any reload does, so no
/// call is lost. It replaces every replica of the plugin, not only `instance`: a reload is
/// the one path that brings instances up beside the serving ones without a gap.
fn replace_plugin(shared: &Arc<Shared>, p: &Arc<Plugin>, instance: &str) {
    let (shared2, p2, instance) = (shared.clone(), p.clone(), instance.to_owned());
    shared.tasks.spawn(async move {
        let source = crate::reload::Source::Replace;
        match crate::reload::spawned(shared2.clone(), p2.clone(), source, Default::default()).await {
            Ok(done) => tracing::info!(plugin = %p2.name, %instance, to = done.to, "replaced for a suspected leak"),
            // Said where the operator looks: the leak stays, and is reported, not replaced.
            Err(e) => shared2.events.emit(
                &p2.name,
                &instance,
                EventKind::Leak,
                format!("could not replace the leaking instance: {e}"),
                &[],
            ),
        }
    });
}
