//! `update` (and SIGHUP): the config file read again, validated whole, and applied to what
//! runs. Removed plugins drain, stop and go; changed ones take keys that apply live in
//! place and are hot-reloaded for the rest; added ones start. An invalid file changes
//! nothing, and plugins the change does not name are not touched.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::changes::{Changes, RereadError, Running, changes};
use crate::config::{Config, PluginSpec, UNSANDBOXED};
use crate::instance::Plugin;
use crate::instance::state::State;
use crate::observe::events::EventKind;
use crate::reload::{ReloadError, ReloadOptions, Reloaded, Source};
use crate::routing::gateway::Gateway;
use crate::supervisor::{Shared, spawn_revision};
use crate::{Supervisor, SupervisorError};

/// Why an update applied nothing.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error(transparent)]
    Reread(#[from] RereadError),
    #[error("{0:?} is neither running nor in {1}")]
    UnknownPlugin(String, String),
    #[error("the supervisor is stopping: nothing was updated")]
    ShuttingDown,
    #[error("the update ended abnormally: {0}")]
    Aborted(String),
    /// The file has no cycle, but the plugins named would close one with the others as
    /// they run (`update a` where `a` now calls `b`, and the running `b` still calls `a`).
    #[error("updating only {only}: {cycle}, as the others run now: {}", crate::config::call_graph::WHY)]
    CallCycle { only: String, cycle: String },
}

/// What went wrong with one plugin of an update; the others were applied.
#[derive(Debug, thiserror::Error)]
pub enum PluginUpdateError {
    #[error(transparent)]
    Reload(#[from] ReloadError),
    #[error(transparent)]
    Live(#[from] SupervisorError),
    #[error(
        "plugin {plugin:?}: tier {tier:?} was not loaded when the supervisor started (its sandbox is built once): restart the supervisor to run it"
    )]
    TierNotLoaded { plugin: String, tier: String },
    #[error("plugin {plugin:?}: uid {uid} is still the running plugin {other:?}'s; not started")]
    UidInUse { plugin: String, uid: u32, other: String },
    /// Added and started, but its start did not end running (it stays configured, and
    /// its restart policy goes on): a service manager's reload must not report success.
    #[error("plugin {plugin:?}: added, but {instance} is not running: {state}")]
    AddedNotRunning { plugin: String, instance: String, state: String },
}

/// What an update did, plugin by plugin.
#[derive(Debug, Default)]
pub struct Updated {
    pub added: Vec<String>,
    /// Removed; false where its instances were still stopping when the answer was given
    /// (they are killed at their `stop_timeout`, and the plugin is gone either way).
    pub removed: Vec<(String, bool)>,
    /// Changed in place: the plugin and the keys (quotas with the ones now in force).
    pub live: Vec<(String, String)>,
    pub reloaded: Vec<Reloaded>,
    pub failed: Vec<PluginUpdateError>,
    /// Changed, but left as they run, with why: a revision rolled back is not tried again
    /// (an explicit `reload` does), nor is a rollout a restart interrupted resumed.
    pub held: Vec<String>,
    /// `[supervisor]` keys that differ, left as they are until a restart.
    pub restart_only: Vec<&'static str>,
}

impl Updated {
    /// One line per plugin touched, then the keys left for a restart.
    pub fn lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .removed
            .iter()
            .map(
                |(n, stopped)| {
                    if *stopped { format!("{n}: removed") } else { format!("{n}: removed (still stopping)") }
                },
            )
            .collect();
        lines.extend(self.live.iter().map(|(n, keys)| format!("{n}: applied in place: {keys}")));
        lines.extend(self.reloaded.iter().map(ToString::to_string));
        lines.extend(self.added.iter().map(|n| format!("{n}: added")));
        lines.extend(self.held.iter().cloned());
        lines.extend(self.failed.iter().map(ToString::to_string));
        if !self.restart_only.is_empty() {
            lines.push(format!("supervisor: left until a restart: {}", self.restart_only.join(", ")));
        }
        if lines.is_empty() {
            lines.push("no changes".to_owned());
        }
        lines
    }
}

impl Supervisor {
    /// Applies the config file to what runs: all of its changes, or (with `names`) those
    /// of the plugins named. The file is validated whole first; an invalid one changes
    /// nothing. One update runs at a time, in a task of its own: it runs to its end even
    /// if its caller goes away, so no plugin is ever left half-removed. A plugin whose
    /// change fails (a refused reload, say) keeps running as it was; the others are
    /// applied, and the answer lists both.
    pub async fn update(&self, names: &[String], opts: ReloadOptions) -> Result<Updated, UpdateError> {
        let job = Job { shared: self.shared().clone(), gateway: self.gateway(), started: self.config().clone() };
        let names = names.to_vec();
        let task = tokio::spawn(async move { job.run(&names, opts).await });
        task.await.unwrap_or_else(|e| Err(UpdateError::Aborted(e.to_string())))
    }
}

/// The config file read again (against the config the supervisor `started` with), and
/// what it changes in what runs now: each plugin as its serving revision was made, its
/// binary as it is on disk now.
pub(crate) async fn read_again(shared: &Shared, started: &Config) -> Result<(PathBuf, Config, Changes), RereadError> {
    let file = started.source.clone().ok_or(RereadError::NoFile)?;
    // Each plugin's serving revision: its entry, its image's digest, the services it declared.
    type Serving = (Arc<PluginSpec>, Option<String>, Option<Vec<String>>);
    let running: Vec<Serving> = shared
        .plugins
        .all()
        .iter()
        .map(|p| {
            let rev = p.serving();
            let sha256 = rev.image.lock().ok().and_then(|i| i.as_ref().map(|i| i.sha256.clone()));
            let declared = rev.contract.load_full().map(|c| c.services.clone());
            (rev.spec(), sha256, declared)
        })
        .collect();
    let started = started.clone();
    // Loading compiles contracts and reads files: on the loader thread, off the runtime's.
    let load = super::loader::on_loader({
        let file = file.clone();
        move || Config::load(&file)
    });
    let next = load.await.map_err(|e| RereadError::Aborted(e.to_string()))??;
    // Hashing every plugin's binary on disk takes a while: on the blocking pool, not
    // behind the loader, where it would hold every reload's load meanwhile.
    let compare = tokio::task::spawn_blocking(move || {
        let running = running.iter().map(|(spec, sha256, declared)| Running {
            spec,
            sha256: sha256.as_deref(),
            declared: declared.as_deref(),
        });
        let changes = changes(&started, running, &next, crate::integrity::sha256_on_disk);
        (next, changes)
    });
    let (next, changes) = compare.await.map_err(|e| RereadError::Aborted(e.to_string()))?;
    Ok((file, next, changes))
}

/// Why `update` leaves `p` as it runs although its entry (or binary) changed: a rollout of
/// it is under way (the file names its canary), the change is the revision last rolled
/// back (the same entry and binary), or `p` has a rollout that was interrupted, which only
/// the operator's `rollout resume` or `abort` settles.
async fn held(shared: &Arc<Shared>, p: &Plugin, spec: &PluginSpec) -> Option<String> {
    use crate::rollout::Phase;
    let name = &p.name;
    match p.rollout().map(|r| r.report().phase) {
        Some(Phase::Interrupted) => {
            return Some(format!(
                "{name}: not changed: its rollout was interrupted; `supervisorctl rollout resume {name}` or `rollout abort {name}` first"
            ));
        }
        Some(Phase::Running | Phase::Paused) => {
            return Some(format!(
                "{name}: not changed: a rollout is under way (`supervisorctl rollout status {name}`); it is promoted or rolled back first"
            ));
        }
        _ => {}
    }
    // A rollout promoted while this update read the file (`rollout promote` raced it) may
    // serve this very entry now: nothing is left to change. The entries first; only the
    // same entry needs its binary hashed again (off the runtime's threads), to tell a
    // rebuild in place.
    let serving = p.serving();
    let now = serving.spec();
    let keys = crate::config::changes::Running { spec: &now, sha256: None, declared: None };
    if crate::config::changes::plugin_changes(&keys, spec, |_| None).is_empty() {
        let sha256 = serving.image.lock().ok().and_then(|i| i.as_ref().map(|i| i.sha256.clone()));
        let entry = spec.clone();
        let rebuilt = tokio::task::spawn_blocking(move || {
            let running = crate::config::changes::Running { spec: &now, sha256: sha256.as_deref(), declared: None };
            !crate::config::changes::plugin_changes(&running, &entry, crate::integrity::sha256_on_disk).is_empty()
        })
        .await
        .unwrap_or(true);
        if !rebuilt {
            return Some(format!(
                "{name}: no changes: revision {} serves this entry (promoted meanwhile)",
                serving.number
            ));
        }
    }
    // It may hash the binary: off the runtime's threads.
    let (kept, entry) = (shared.clone(), spec.clone());
    let rejected = tokio::task::spawn_blocking(move || crate::rollout::saved::rolled_back_as(&kept, &entry))
        .await
        .ok()
        .flatten()?;
    Some(format!(
        "{name}: not tried again: revision {} with this entry and binary was rolled back ({}); edit it, rebuild it, or `supervisorctl reload {name}` to try it anyway",
        rejected.canary_revision, rejected.why
    ))
}

/// What an update works with, owned: it runs in a task of its own.
struct Job {
    shared: Arc<Shared>,
    gateway: Gateway,
    started: Config,
}

impl Job {
    async fn run(&self, names: &[String], opts: ReloadOptions) -> Result<Updated, UpdateError> {
        let shared = &self.shared;
        let _one = shared.updating.lock().await;
        if *shared.shutdown.borrow() {
            return Err(UpdateError::ShuttingDown);
        }
        // Under the lock, so that two updates are one reload each to the service manager.
        let _reloading = shared.service.get().map(|n| n.reloading());
        let (file, next, mut changes) = read_again(shared, &self.started).await?;
        if !names.is_empty() {
            for n in names {
                if shared.plugins.get(n).is_none() && !changes.added.contains(n) {
                    return Err(UpdateError::UnknownPlugin(n.clone(), file.display().to_string()));
                }
            }
            keep_only(&mut changes, names);
            if let Some(cycle) = cycle_left(shared, &next, &changes) {
                let only: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
                return Err(UpdateError::CallCycle { only: only.join(", "), cycle });
            }
        }
        let specs: Vec<PluginSpec> = next.specs();
        let entry = |name: &str| specs.iter().find(|s| s.name == name).cloned();
        let mut done = Updated { restart_only: changes.restart_only.clone(), ..Updated::default() };
        // Removed first: their uids are then free for the plugins added last. Changed
        // ones before added ones, for the same reason.
        for name in &changes.removed {
            if let Some(stopped) = self.remove(name).await {
                done.removed.push((name.clone(), stopped));
            }
        }
        for change in &changes.changed {
            let (Some(p), Some(spec)) = (shared.plugins.get(&change.name), entry(&change.name)) else { continue };
            // Who may call is the operator's word on the plugin, not on a revision: it
            // applies now, whatever becomes of a new revision the same edit needs (held,
            // refused, or serving later with this same entry).
            // In every revision with instances (a canary's, and a draining one's).
            let mut access = Vec::new();
            if change.keys.iter().any(|k| k.key == "callers") {
                set_callers(&p, &spec);
                access.push("callers");
            }
            // What it may call, likewise (each instance's calls out read its own
            // revision's).
            if change.keys.iter().any(|k| k.key == "calls") {
                set_calls(&p, &spec);
                access.push("calls");
            }
            if change.live_only() {
                let log_limit = spec.log_limit;
                let spec_again = spec.clone();
                match crate::quotas::apply_live(shared, &p, Arc::new(spec)) {
                    Ok(quota) => {
                        p.logs.set_limit(log_limit);
                        let keys: Vec<String> = change
                            .keys
                            .iter()
                            .map(|k| if k.key == "quota" { format!("quota ({quota})") } else { k.key.to_owned() })
                            .collect();
                        let keys = keys.join(", ");
                        shared.events.emit(&p.name, "", EventKind::Updated, format!("applied in place: {keys}"), &[]);
                        done.live.push((p.name.clone(), keys));
                    }
                    Err(e) => {
                        // The quotas' refusal is theirs alone: the entry's other live keys
                        // apply all the same (a caller taken off `callers` beside a memory
                        // limit below what runs now kept calling, and the answer blamed
                        // only the quotas).
                        let others: Vec<&str> = change.keys.iter().map(|k| k.key).filter(|k| *k != "quota").collect();
                        if !others.is_empty() {
                            set_live_keys_but_quota(&p, &spec_again);
                            p.logs.set_limit(log_limit);
                            let keys = others.join(", ");
                            let said = format!("applied in place: {keys}; the quotas were not");
                            shared.events.emit(&p.name, "", EventKind::Updated, said, &[]);
                            done.live.push((p.name.clone(), format!("{keys} (not the quotas)")));
                        }
                        done.failed.push(e.into());
                    }
                }
            } else if let Some(why) = held(shared, &p, &spec).await {
                done.held.push(match access.as_slice() {
                    [] => why,
                    applied => format!("{why}; applied in place all the same: {}", applied.join(", ")),
                });
            } else {
                let name = p.name.clone();
                let refused = match self.runnable(&spec, Some(p.spec().ids.0)) {
                    Err(e) => Some(e),
                    Ok(()) => match super::spawned(shared.clone(), p, Source::Entry(Box::new(spec)), opts).await {
                        Ok(r) => {
                            done.reloaded.push(r);
                            None
                        }
                        Err(e) => Some(e.into()),
                    },
                };
                if let Some(e) = refused {
                    // The plugin runs on as it was, but for who may call it and what it
                    // may call, which applied above: the answer says so beside the refusal.
                    if !access.is_empty() {
                        let keys = access.join(", ");
                        let said = format!("applied in place: {keys}; the rest of the change was refused");
                        shared.events.emit(&name, "", EventKind::Updated, said, &[]);
                        done.live.push((name, format!("{keys} (the rest of the change was refused)")));
                    }
                    done.failed.push(e);
                }
            }
        }
        for name in &changes.added {
            let Some(spec) = entry(name) else { continue };
            match self.runnable(&spec, None) {
                Ok(()) => {
                    self.add(spec);
                    done.added.push(name.clone());
                }
                Err(e) => done.failed.push(e),
            }
        }
        // Applied means started: `update`, and a service manager's reload that runs it,
        // returns once each added plugin's start is over (running, failed, or waiting to
        // start again), as the daemon's own readiness waits for the autostart plugins.
        let until = tokio::time::Instant::now() + crate::service::READY_WAIT;
        for p in done.added.iter().filter_map(|n| shared.plugins.get(n)) {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            p.wait_until(left, |p| crate::service::settled(p) || *shared.shutdown.borrow()).await;
        }
        // One the operator wants running whose start ended otherwise (failed, or waiting
        // to start again) is a failure of this update, said with its state.
        let mut added = Vec::with_capacity(done.added.len());
        for name in std::mem::take(&mut done.added) {
            let down = shared.plugins.get(&name).filter(|p| p.wants_running()).and_then(|p| {
                let serving = p.serving();
                serving.instances.iter().map(|i| (i.id.clone(), i.status())).find(|(_, s)| s.state != State::Running)
            });
            match down {
                Some((instance, status)) => done.failed.push(PluginUpdateError::AddedNotRunning {
                    plugin: name,
                    instance,
                    state: status.describe(),
                }),
                None => added.push(name),
            }
        }
        done.added = added;
        Ok(done)
    }

    /// What the running sandbox cannot give `spec`: a tier it did not load at start, or
    /// the uid of another running plugin (whose own change may not have moved it), when
    /// `spec` moves to it from `running_uid` (two plugins the file gives one `user` share
    /// it from their start, as the file allows).
    fn runnable(&self, spec: &PluginSpec, running_uid: Option<u32>) -> Result<(), PluginUpdateError> {
        if spec.tier != UNSANDBOXED && self.started.tiers().and_then(|t| t.get(&spec.tier)).is_none() {
            return Err(PluginUpdateError::TierNotLoaded { plugin: spec.name.clone(), tier: spec.tier.clone() });
        }
        match uid_owner(&self.shared, spec).filter(|_| running_uid != Some(spec.ids.0)) {
            Some(other) => Err(PluginUpdateError::UidInUse {
                plugin: spec.name.clone(),
                uid: spec.ids.0,
                other: other.name.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Starts `spec` as a new plugin (when it says `autostart`), routed to like the others.
    fn add(&self, spec: PluginSpec) {
        let shared = &self.shared;
        // A rollout kept of an earlier plugin of this name (one whose removal could not be
        // written) is no part of this one: it starts from its entry, and no restart brings
        // back that rollout's stable revision in its place.
        if shared.state.rollout(&spec.name).is_some() {
            tracing::info!(plugin = %spec.name, "added: the rollout kept of an earlier plugin of this name is forgotten");
            crate::rollout::saved::forget(shared, &spec.name);
        }
        let p = Arc::new(Plugin::new(spec, self.started.supervisor.log_lines));
        shared.metrics.add_plugin(&p.name);
        crate::quotas::restore(&p, shared);
        crate::kept_stopped::restore(&p, shared);
        p.breaker.report_to(&shared.events, &shared.health);
        shared.plugins.insert(p.clone());
        self.gateway.add(&p, &shared.metrics);
        spawn_revision(shared, &p, &p.serving());
        shared.events.emit(&p.name, "", EventKind::Added, "added from the config file", &[]);
    }

    /// Drains and stops every instance of `name` and forgets the plugin: its routes, its
    /// metric series, its saved quota overrides and stop, and (once its instances are
    /// gone) its cgroup set. Calls to it are then answered as to an unknown service.
    /// Whether its instances had stopped within its `stop_timeout` and a little more; None
    /// when there was no such plugin.
    async fn remove(&self, name: &str) -> Option<bool> {
        let shared = &self.shared;
        let p = shared.plugins.get(name)?;
        // No reload of it may start a revision that would outlive it.
        let no_reload = p.reload_lock.clone().lock_owned().await;
        // Calls stop coming through the gateway before it drains, not once it has.
        self.gateway.remove(name);
        p.set_desired(false, false);
        for rev in p.revisions() {
            rev.retire();
        }
        let waited = p.spec().stop_timeout.saturating_add(Duration::from_secs(2));
        let all_stopped = |p: &Plugin| p.revisions().iter().all(|rev| super::stopped(rev));
        let stopped = p.wait_until(waited, all_stopped).await;
        shared.plugins.remove(name);
        let series = shared.metrics.remove_plugin(name);
        // Its rollout's kept stable binary goes with what is kept of the rollout.
        crate::rollout::saved::forget(shared, name);
        // A plugin of the same name added later starts from its config, not from these.
        if let Err(e) = shared.state.forget(name) {
            tracing::warn!(plugin = name, error = %e, "a removed plugin's quota overrides and stop could not be forgotten");
        }
        let said = if stopped {
            "removed from the config file: drained and stopped"
        } else {
            "removed from the config file: still stopping"
        };
        shared.events.emit(name, "", EventKind::Removed, said, &[]);
        // Its retired instances stop for sure (killed at their stop_timeout); the cgroup
        // set goes once they have.
        let (shared, name) = (shared.clone(), name.to_owned());
        self.shared.tasks.spawn(async move {
            let _no_reload = no_reload;
            if p.wait_until(Duration::from_secs(60), all_stopped).await {
                // No instance of it is left to record an event.
                shared.metrics.release(&name, series);
            }
            shared.launcher.forget_plugin(&name).await;
        });
        Some(stopped)
    }
}

/// Every revision's entry with `spec`'s `callers`, the rest as it runs: a canary left with
/// the old ones would bring them back when promoted.
fn set_callers(p: &Plugin, spec: &PluginSpec) {
    for rev in p.revisions().into_iter().chain([p.serving()]) {
        let mut now = PluginSpec::clone(&rev.spec());
        now.callers = spec.callers.clone();
        rev.set_live_spec(Arc::new(now));
    }
    tracing::info!(plugin = %p.name, "callers applied in place");
}

/// Every revision's entry with `spec`'s live keys but its quotas, which stay as they run.
fn set_live_keys_but_quota(p: &Plugin, spec: &PluginSpec) {
    for rev in p.revisions().into_iter().chain([p.serving()]) {
        let now = rev.spec();
        let next = PluginSpec { quota: now.quota.clone(), ..crate::config::changes::with_live_keys(&now, spec) };
        rev.set_live_spec(Arc::new(next));
    }
}

/// Every revision's entry with `spec`'s `calls`, the rest as it runs.
fn set_calls(p: &Plugin, spec: &PluginSpec) {
    for rev in p.revisions().into_iter().chain([p.serving()]) {
        let mut now = PluginSpec::clone(&rev.spec());
        now.calls = spec.calls.clone();
        rev.set_live_spec(Arc::new(now));
    }
    tracing::info!(plugin = %p.name, "calls applied in place");
}

/// A cycle of `calls` among the plugins as they would run once `changes` (some plugins'
/// only) are applied: the file's entries for those, the others' as they run. The file was
/// checked whole, but not this mix of it and what runs.
fn cycle_left(shared: &Shared, next: &Config, changes: &Changes) -> Option<String> {
    let running = shared.plugins.all();
    let touched = |n: &str| changes.added.iter().any(|a| a == n) || changes.changed.iter().any(|c| c.name == n);
    // In the file's order, so that a cycle is named from the same plugin the file's check
    // would name it from.
    let mut order: Vec<&str> = next.plugins.iter().map(|p| p.name.as_str()).collect();
    for p in &running {
        if !order.contains(&p.name.as_str()) {
            order.push(&p.name);
        }
    }
    let mut graph: Vec<(&str, Vec<String>)> = Vec::new();
    for name in order {
        if changes.removed.iter().any(|r| r == name) {
            continue;
        }
        let calls = if touched(name) {
            next.plugins.iter().find(|p| p.name == name).map(|p| p.calls.clone())
        } else {
            running.iter().find(|p| p.name == name).map(|p| calls_out(p))
        };
        if let Some(calls) = calls {
            graph.push((name, calls));
        }
    }
    let plugins: Vec<(&str, &[String])> = graph.iter().map(|(n, c)| (*n, c.as_slice())).collect();
    crate::config::call_graph::cycles(&plugins).into_iter().next().map(|c| c.said)
}

/// The running plugin other than `spec`'s whose uid `spec` names, if any: two plugins
/// under one uid could reach each other's processes, files and IPC objects.
pub(super) fn uid_owner(shared: &Shared, spec: &PluginSpec) -> Option<Arc<Plugin>> {
    shared.plugins.all().into_iter().find(|p| p.name != spec.name && p.spec().ids.0 == spec.ids.0)
}

/// The plugins `p` may call as it runs: each instance calls out by its own revision's
/// entry, and any of them may.
pub(super) fn calls_out(p: &Plugin) -> Vec<String> {
    let mut calls: Vec<String> = Vec::new();
    for rev in p.revisions().into_iter().chain([p.serving()]) {
        for c in &rev.spec().calls {
            if !calls.contains(c) {
                calls.push(c.clone());
            }
        }
    }
    calls
}

/// Only the changes of the plugins `names` names (supervisor keys are still reported).
fn keep_only(c: &mut Changes, names: &[String]) {
    c.added.retain(|n| names.contains(n));
    c.removed.retain(|n| names.contains(n));
    c.changed.retain(|p| names.contains(&p.name));
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::instance::state::State;

    use super::*;
    use crate::instance::fake::{UP, echo, fixture, plugin};

    /// Rewrites the fixture's config file: `edit` turns the text into the new one.
    fn edit(sup: &Supervisor, edit: impl FnOnce(String) -> String) {
        let path = sup.config().source.clone().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let new = edit(text.clone());
        assert_ne!(new, text, "the edit changes the file");
        std::fs::write(&path, new).unwrap();
    }

    fn pid(sup: &Supervisor, name: &str) -> Option<i32> {
        sup.plugin(name).unwrap().serving().instances[0].status().pid
    }

    fn kinds(sup: &Supervisor, plugin: &str) -> Vec<String> {
        sup.events().subscribe().0.into_iter().filter(|e| e.plugin == plugin).map(|e| e.kind).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn live_keys_apply_in_place_and_the_rest_through_a_reload() {
        let f = fixture(&plugin("fake", "call_timeout = \"5s\""), &[]);
        f.sup.wait_running("fake", UP).await.unwrap();
        let before = pid(&f.sup, "fake");
        edit(&f.sup, |t| t.replace("call_timeout = \"5s\"", "call_timeout = \"7s\""));
        let done = f.sup.update(&[], ReloadOptions::default()).await.unwrap();
        assert_eq!(done.lines(), ["fake: applied in place: call_timeout"], "{done:?}");
        let p = f.sup.plugin("fake").unwrap();
        assert_eq!(
            (p.spec().call_timeout, p.serving().number, pid(&f.sup, "fake")),
            (Duration::from_secs(7), 1, before)
        );
        // Said once, as an update (the instance's own "ready" may come after it).
        let said = kinds(&f.sup, "fake");
        assert_eq!(said.iter().filter(|k| *k == "updated").count(), 1, "{said:?}");
        assert!(!said.iter().any(|k| k == "reload"), "{said:?}");

        edit(&f.sup, |t| t.replace("call_timeout = \"7s\"", "call_timeout = \"7s\"\nargs = [\"--new\"]"));
        let done = f.sup.update(&[], ReloadOptions::default()).await.unwrap();
        assert_eq!(done.reloaded.len(), 1, "{done:?}");
        assert_eq!(p.serving().number, 2);
        assert_eq!(p.spec().args, ["--new"]);
        assert_ne!(pid(&f.sup, "fake"), before);
        assert_eq!(echo(f.sup.channel("fake").unwrap(), "after").await.unwrap(), "after");

        // Read again, the same file changes nothing.
        let done = f.sup.update(&[], ReloadOptions::default()).await.unwrap();
        assert_eq!(done.lines(), ["no changes"]);
        f.sup.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_removed_plugin_drains_and_goes_and_one_added_serves_its_service() {
        let f = fixture(&plugin("fake", ""), &[]);
        f.sup.wait_running("fake", UP).await.unwrap();
        let old = f.sup.plugin("fake").unwrap();
        // An embedded host's channel to it, used before and kept after.
        let held = f.sup.channel("fake").unwrap();
        assert_eq!(echo(held.clone(), "before").await.unwrap(), "before");
        assert!(
            f.sup.metrics_text().contains("supervisor_calls_total{plugin=\"fake\",code=\"OK\",source=\"plugin\"} 1\n")
        );
        // "other" serves the same service, and is its only plugin once "fake" is gone.
        edit(&f.sup, |t| t.replace("name = \"fake\"", "name = \"other\""));
        let done = f.sup.update(&[], ReloadOptions::default()).await.unwrap();
        assert_eq!(done.lines(), ["fake: removed", "other: added"]);
        assert_eq!(done.removed, [("fake".to_owned(), true)]);
        // The added plugin's start is over when the update answers: it runs.
        let states: Vec<State> = f.sup.plugin("other").unwrap().instances().iter().map(|i| i.status().state).collect();
        assert_eq!(states, [State::Running]);
        assert!(matches!(f.sup.plugin("fake"), Err(SupervisorError::UnknownPlugin(n)) if n == "fake"));
        assert!(old.instances().iter().all(|i| i.status().state == State::Stopped), "drained and stopped");
        let deadline = std::time::Instant::now() + UP;
        while f.fake.forgotten().is_empty() {
            assert!(std::time::Instant::now() < deadline, "its cgroup set was never forgotten");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(f.fake.forgotten(), ["fake"]);
        assert_eq!(kinds(&f.sup, "fake").last().map(String::as_str), Some("removed"));
        f.sup.wait_running("other", UP).await.unwrap();
        assert_eq!(echo(f.sup.channel("other").unwrap(), "moved").await.unwrap(), "moved");
        let names: Vec<String> = f.sup.plugins().iter().map(|p| p.name.clone()).collect();
        assert_eq!(names, ["other"]);
        // Its calls, latencies and events are gone from the metrics, and a call on the
        // channel still held brings none back.
        let err = echo(held, "late").await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
        let text = f.sup.metrics_text();
        assert!(!text.contains("plugin=\"fake\""), "{text}");
        assert!(text.contains("supervisor_calls_total{plugin=\"other\",code=\"OK\",source=\"plugin\"} 1\n"), "{text}");
        f.sup.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_removed_plugin_is_not_routed_by_the_gateway_while_it_drains() {
        use crate::instance::fake::Behaviour;
        let slow = Behaviour::ServeFlawed { fail_every: 0, delay: Duration::from_secs(5) };
        let f = fixture(&plugin("fake", ""), &[("fake", &[slow])]);
        f.sup.wait_running("fake", UP).await.unwrap();
        let (gw, anyone) = (f.sup.gateway(), http::Extensions::new());
        assert!(gw.may_call(&anyone, "fake"));
        // A call in flight keeps it draining.
        let slow_call = tokio::spawn(echo(f.sup.channel("fake").unwrap(), "slow"));
        tokio::time::sleep(Duration::from_millis(200)).await;
        edit(&f.sup, |t| t.replace("name = \"fake\"", "name = \"other\""));
        // Unrouted soon after the update begins (a loaded machine may take a while to
        // reread the file). The call (5 s, so it cannot end by itself first however long
        // that takes) is then in flight until the drain that follows cuts it (stop_timeout
        // 1 s).
        let during = async {
            let until = std::time::Instant::now() + Duration::from_secs(4);
            while gw.may_call(&anyone, "fake") && std::time::Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (slow_call.is_finished(), gw.may_call(&anyone, "fake"))
        };
        let (done, (finished, routed)) = tokio::join!(f.sup.update(&[], ReloadOptions::default()), during);
        assert_eq!(done.unwrap().lines(), ["fake: removed", "other: added"]);
        assert_eq!((finished, routed), (false, false), "while its call was in flight, the gateway knew it no more");
        f.sup.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_invalid_file_changes_nothing() {
        let f = fixture(&plugin("fake", ""), &[]);
        f.sup.wait_running("fake", UP).await.unwrap();
        let before = pid(&f.sup, "fake");
        edit(&f.sup, |t| t.replace("name = \"fake\"", "name = \"fake\"\nreplicas = \"two\""));
        let err = f.sup.update(&[], ReloadOptions::default()).await.unwrap_err();
        assert!(matches!(err, UpdateError::Reread(RereadError::Config(_))), "{err:?}");
        assert!(err.to_string().contains("replicas"), "{err}");
        assert_eq!(pid(&f.sup, "fake"), before);
        assert_eq!(f.sup.plugin("fake").unwrap().serving().number, 1);
        f.sup.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn names_limit_an_update_to_those_plugins() {
        let plugins = format!("{}{}", plugin("fake", "call_timeout = \"5s\""), plugin("idle", "autostart = false"));
        let f = fixture(&plugins, &[]);
        f.sup.wait_running("fake", UP).await.unwrap();
        edit(&f.sup, |t| {
            t.replace("call_timeout = \"5s\"", "call_timeout = \"6s\"")
                .replace("autostart = false", "autostart = false\ncall_timeout = \"9s\"")
        });
        let done = f.sup.update(&["idle".to_owned()], ReloadOptions::default()).await.unwrap();
        assert_eq!(done.lines(), ["idle: applied in place: call_timeout"]);
        assert_eq!(f.sup.plugin("fake").unwrap().spec().call_timeout, Duration::from_secs(5), "not named");
        assert_eq!(f.sup.plugin("idle").unwrap().spec().call_timeout, Duration::from_secs(9));

        let err = f.sup.update(&["nope".to_owned()], ReloadOptions::default()).await.unwrap_err();
        assert!(matches!(&err, UpdateError::UnknownPlugin(n, _) if n == "nope"), "{err:?}");
        assert_eq!(f.sup.plugin("fake").unwrap().spec().call_timeout, Duration::from_secs(5), "nothing applied");
        f.sup.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_quota_changed_in_the_file_reaches_the_running_cgroups_under_the_operators_override() {
        use crate::instance::fake::{FakeLauncher, fixture_over};
        let f = fixture_over(FakeLauncher::with_cgroups(), &plugin("fake", "[plugin.quota]\npids_max = 64"), &[]);
        f.sup.wait_running("fake", UP).await.unwrap();
        let before = pid(&f.sup, "fake");
        let limits = |sup: &Supervisor| {
            let inst = sup.plugin("fake").unwrap().instances()[0].clone();
            (inst.cgroup.load_full().unwrap().limits().unwrap().pids_max, inst.status().quota.pids_max)
        };
        edit(&f.sup, |t| t.replace("pids_max = 64", "pids_max = 48"));
        let done = f.sup.update(&[], ReloadOptions::default()).await.unwrap();
        assert_eq!(done.lines(), ["fake: applied in place: quota (pids 48)"]);
        assert_eq!(limits(&f.sup), (Some(48), Some(48)));
        assert_eq!(pid(&f.sup, "fake"), before, "no new process");

        // The operator's run-time word keeps winning over the file's.
        let change = crate::quotas::QuotaChange::parse("", "", "", "32").unwrap();
        f.sup.change_quota("fake", &change, false).unwrap();
        edit(&f.sup, |t| t.replace("pids_max = 48", "pids_max = 40"));
        let done = f.sup.update(&[], ReloadOptions::default()).await.unwrap();
        assert_eq!(done.lines(), ["fake: applied in place: quota (pids 32)"]);
        assert_eq!(f.sup.plugin("fake").unwrap().spec().quota.pids_max, Some(40), "the file's word is kept");
        assert_eq!(limits(&f.sup), (Some(32), Some(32)));
        f.sup.shutdown().await;
    }

    /// During a canary rollout: who may call, taken away by an update, stays taken away
    /// once the canary is promoted; the operator's quota change leaves each revision the
    /// quotas of its own entry.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn during_a_canary_callers_reach_every_revision_and_quotas_keep_each_revisions_own() {
        use crate::config::units::ByteSize;
        use crate::instance::Revision;
        use crate::instance::fake::{FakeLauncher, fixture_over};
        use crate::rollout::{Action, Phase};
        use crate::routing::callers::{Callers, Rule};
        let entry = "callers = [\"uid:1\", \"uid:2\"]\n[plugin.quota]\nmemory_max = \"64M\"\n[plugin.rollout]\n\
                     strategy = \"canary\"\nsteps = [10, 100]\nstep_interval = \"60s\"";
        let f = fixture_over(FakeLauncher::with_cgroups(), &plugin("fake", entry), &[]);
        f.sup.wait_running("fake", UP).await.unwrap();
        edit(&f.sup, |t| {
            t.replace("memory_max = \"64M\"", "memory_max = \"256M\"")
                .replace("name = \"fake\"", "name = \"fake\"\nargs = [\"--new\"]")
        });
        let done = f.sup.update(&[], ReloadOptions::default()).await.unwrap();
        assert!(done.lines()[0].contains("as a canary"), "{:?}", done.lines());
        let p = f.sup.plugin("fake").unwrap();
        let canary = p.split().expect("a canary split").canary.clone();
        let memory_max = |rev: &Revision| {
            let inst = rev.instances[0].clone();
            (inst.cgroup.load_full().unwrap().limits().unwrap().memory_max, inst.status().quota.memory_max)
        };
        let mib = |n: u64| n << 20;
        let change = crate::quotas::QuotaChange::parse("", "", "50%", "").unwrap();
        f.sup.change_quota("fake", &change, false).unwrap();
        assert_eq!(memory_max(&p.serving()), (Some(mib(64)), Some(ByteSize(mib(64)))));
        assert_eq!(memory_max(&canary), (Some(mib(256)), Some(ByteSize(mib(256)))), "the canary's own entry");

        edit(&f.sup, |t| t.replace("callers = [\"uid:1\", \"uid:2\"]", "callers = [\"uid:1\"]"));
        let done = f.sup.update(&[], ReloadOptions::default()).await.unwrap();
        assert_eq!(
            done.lines(),
            ["fake: not changed: a rollout is under way (`supervisorctl rollout status fake`); it is promoted or \
              rolled back first; applied in place all the same: callers"]
        );
        let one = Some(Callers(vec![Rule::Uid(1)]));
        assert_eq!((p.spec().callers.clone(), canary.spec().callers.clone()), (one.clone(), one.clone()));
        f.sup.rollout("fake", Action::Promote).await.unwrap();
        let began = std::time::Instant::now();
        while !p.rollout().is_some_and(|r| r.report().phase == Phase::Promoted) {
            assert!(began.elapsed() < UP, "never promoted");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!((p.serving().number, p.spec().callers.clone()), (canary.number, one), "uid 2 stays out");
        f.sup.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_entry_a_rollout_promoted_while_the_update_read_the_file_is_left_as_it_serves() {
        use crate::rollout::Action;
        let rollout = "[plugin.rollout]\nstrategy = \"canary\"\nsteps = [10, 100]\nstep_interval = \"60s\"";
        let f = fixture(&plugin("fake", rollout), &[]);
        f.sup.wait_running("fake", UP).await.unwrap();
        edit(&f.sup, |t| t.replace("name = \"fake\"", "name = \"fake\"\nargs = [\"--new\"]"));
        let done = f.sup.update(&[], ReloadOptions::default()).await.unwrap();
        assert!(done.lines()[0].contains("as a canary"), "{:?}", done.lines());
        // What an update that read the file before this promotion goes on with.
        let entry = f.sup.config().specs().remove(0);
        let mut read = crate::config::Config::load(f.sup.config().source.as_ref().unwrap()).unwrap().specs().remove(0);
        assert_eq!(read.args, ["--new"], "the file's entry");
        assert!(entry.args.is_empty(), "the started config's");
        f.sup.rollout("fake", Action::Promote).await.unwrap();
        let p = f.sup.plugin("fake").unwrap();
        let began = std::time::Instant::now();
        while !p.rollout().is_some_and(|r| r.report().phase == crate::rollout::Phase::Promoted) {
            assert!(began.elapsed() < UP, "never promoted");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let said = held(f.sup.shared(), &p, &read).await;
        assert_eq!(said.as_deref(), Some("fake: no changes: revision 2 serves this entry (promoted meanwhile)"));
        // An entry that differs from what serves is no more held than before.
        read.args = vec!["--newer".into()];
        assert_eq!(held(f.sup.shared(), &p, &read).await, None);
        f.sup.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn callers_apply_in_place_even_when_the_same_edit_needs_a_revision_that_is_refused() {
        use crate::instance::fake::Behaviour;
        use crate::routing::callers::{Callers, Rule};
        let serve = Behaviour::Serve { name: "fake".into() };
        // The reload's new revision does not start.
        let f = fixture(&plugin("fake", "callers = [\"uid:1\"]"), &[("fake", &[serve, Behaviour::Exit { code: 3 }])]);
        f.sup.wait_running("fake", UP).await.unwrap();
        edit(&f.sup, |t| t.replace("callers = [\"uid:1\"]", "callers = [\"uid:2\"]\nargs = [\"--new\"]"));
        let done = f.sup.update(&[], ReloadOptions::default()).await.unwrap();
        // What applied is said beside the refusal: the answer was the refusal alone.
        assert_eq!(done.lines()[0], "fake: applied in place: callers (the rest of the change was refused)", "{done:?}");
        assert!(done.lines()[1].contains("did not start"), "{done:?}");
        let p = f.sup.plugin("fake").unwrap();
        assert_eq!(p.serving().number, 1, "the old revision serves on");
        assert_eq!(p.spec().callers, Some(Callers(vec![Rule::Uid(2)])), "with the new callers");
        assert!(p.spec().args.is_empty(), "and nothing else of the new entry");
        f.sup.shutdown().await;
    }

    /// A live edit whose quota the kernel or the instances' use refuses: the rest of it
    /// applies all the same, and the answer says what did and what did not.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_caller_taken_off_callers_is_taken_off_though_the_same_edits_quota_is_refused() {
        use crate::config::units::ByteSize;
        use crate::instance::fake::{FakeLauncher, fixture_over};
        use crate::routing::callers::{Callers, Rule};
        let fake = FakeLauncher::with_cgroups();
        let fs = fake.cgroup_fs().unwrap();
        let entry = "callers = [\"uid:1\", \"uid:2\"]\ncall_timeout = \"20s\"\n[plugin.quota]\nmemory_max = \"256M\"";
        let f = fixture_over(fake, &plugin("fake", entry), &[]);
        f.sup.wait_running("fake", UP).await.unwrap();
        let p = f.sup.plugin("fake").unwrap();
        // The instance uses 100 MiB now.
        let cg = p.serving().instances[0].cgroup.load_full().unwrap();
        let (_, dir) = cg.cgroups().dirs().find(|(_, d)| d.starts_with("/sys/fs/cgroup/memory")).unwrap();
        fs.set_file(&format!("{}/memory.usage_in_bytes", dir.display()), &format!("{}\n", 100u64 << 20));
        edit(&f.sup, |t| {
            t.replace("[\"uid:1\", \"uid:2\"]", "[\"uid:1\"]")
                .replace("\"20s\"", "\"5s\"")
                .replace("\"256M\"", "\"32M\"")
        });
        let done = f.sup.update(&[], ReloadOptions::default()).await.unwrap();
        let lines = done.lines();
        assert_eq!(lines[0], "fake: applied in place: call_timeout, callers (not the quotas)", "{lines:?}");
        assert!(lines[1].contains("memory 32M is below what fake-0 uses now"), "{lines:?}");
        assert_eq!(p.spec().callers, Some(Callers(vec![Rule::Uid(1)])), "uid 2 may call no more");
        assert_eq!(p.spec().call_timeout, Duration::from_secs(5));
        assert_eq!(p.spec().quota.memory_max, Some(ByteSize(256 << 20)), "the quotas as they were");
        f.sup.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_taken_away_are_taken_away_even_when_the_same_edit_needs_a_revision_that_is_refused() {
        use crate::instance::fake::Behaviour;
        let serve = Behaviour::Serve { name: "fake".into() };
        let other = plugin("other", "autostart = false");
        let text = format!("{}{other}", plugin("fake", "calls = [\"other\"]"));
        let f = fixture(&text, &[("fake", &[serve, Behaviour::Exit { code: 3 }])]);
        f.sup.wait_running("fake", UP).await.unwrap();
        edit(&f.sup, |t| t.replace("calls = [\"other\"]", "args = [\"--new\"]"));
        let done = f.sup.update(&[], ReloadOptions::default()).await.unwrap();
        assert_eq!(done.lines()[0], "fake: applied in place: calls (the rest of the change was refused)", "{done:?}");
        assert!(done.lines()[1].contains("did not start"), "{done:?}");
        let p = f.sup.plugin("fake").unwrap();
        assert_eq!(p.serving().number, 1, "the old revision serves on");
        assert!(p.spec().calls.is_empty(), "but may call nothing any more: {:?}", p.spec().calls);
        assert!(p.spec().args.is_empty(), "and nothing else of the new entry");
        f.sup.shutdown().await;
    }

    /// The file has no cycle, but applying one plugin's entry alone would close one with
    /// the other as it runs; both together open none.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn updating_one_plugin_alone_may_not_close_a_cycle_of_calls() {
        let text = format!("{}{}", plugin("a", "autostart = false"), plugin("b", "autostart = false\ncalls = [\"a\"]"));
        let f = fixture(&text, &[]);
        edit(&f.sup, |t| t.replace("name = \"a\"\n", "name = \"a\"\ncalls = [\"b\"]\n").replace("calls = [\"a\"]", ""));
        let err = f.sup.update(&["a".into()], ReloadOptions::default()).await.unwrap_err();
        assert!(matches!(err, UpdateError::CallCycle { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "updating only \"a\": plugin \"a\": calls \"b\", which calls \"a\", as the others run now: {}",
                crate::config::call_graph::WHY
            )
        );
        assert!(f.sup.plugin("a").unwrap().spec().calls.is_empty(), "nothing was applied");
        let done = f.sup.update(&["a".into(), "b".into()], ReloadOptions::default()).await.unwrap();
        assert_eq!(done.live.len(), 2, "{done:?}");
        assert_eq!(f.sup.plugin("a").unwrap().spec().calls, ["b"]);
        assert!(f.sup.plugin("b").unwrap().spec().calls.is_empty());
        f.sup.shutdown().await;
    }

    /// `reload a` reads only a's entry: one that would close a cycle with the others as
    /// they run is refused as `update a` is.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reload_may_not_close_a_cycle_of_calls_either() {
        let text = format!("{}{}", plugin("a", "autostart = false"), plugin("b", "autostart = false\ncalls = [\"a\"]"));
        let f = fixture(&text, &[]);
        edit(&f.sup, |t| t.replace("name = \"a\"\n", "name = \"a\"\ncalls = [\"b\"]\n").replace("calls = [\"a\"]", ""));
        let err = f.sup.reload("a", ReloadOptions::default()).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "plugin \"a\": its entry in the file would close a cycle of calls with the others as they run: \
                 plugin \"a\": calls \"b\", which calls \"a\": {}",
                crate::config::call_graph::WHY
            )
        );
        assert_eq!(f.sup.plugin("a").unwrap().serving().number, 1, "nothing was started");
        f.sup.shutdown().await;
    }

    /// `systemctl reload` runs `update`: a plugin added whose start did not end running
    /// fails it, said with the instance's state; one added not to start (autostart off)
    /// is simply added.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_added_plugin_whose_start_fails_fails_the_update_saying_its_state() {
        use crate::instance::fake::Behaviour;
        let f = fixture(&plugin("fake", ""), &[("bad", &[Behaviour::Exit { code: 1 }])]);
        f.sup.wait_running("fake", UP).await.unwrap();
        edit(&f.sup, |t| format!("{t}{}{}", plugin("bad", "restart = \"never\""), plugin("idle", "autostart = false")));
        let done = f.sup.update(&[], ReloadOptions::default()).await.unwrap();
        assert_eq!(done.added, ["idle"], "{done:?}");
        let lines = done.lines();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(lines[0], "idle: added");
        assert!(lines[1].starts_with("plugin \"bad\": added, but bad-0 is not running: "), "{lines:?}");
        assert!(lines[1].contains("exited with code 1"), "{lines:?}");
        assert!(f.sup.plugin("bad").is_ok(), "it stays configured, under its restart policy");
        f.sup.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_plugin_added_with_a_running_plugins_uid_moves_that_one_first_or_waits() {
        use crate::instance::fake::Behaviour;
        let serve = Behaviour::Serve { name: "fake".into() };
        // The first reload of "fake" does not start; the second does.
        let f = fixture(&plugin("fake", ""), &[("fake", &[serve.clone(), Behaviour::Exit { code: 3 }, serve])]);
        f.sup.wait_running("fake", UP).await.unwrap();
        let (uid, gid) = f.sup.plugin("fake").unwrap().spec().ids;
        let twin = plugin("twin", &format!("uid = {uid}\ngid = {gid}\nautostart = false"));
        edit(&f.sup, |t| format!("{t}{twin}"));
        // Its uid taken, "fake" is given another one (a new revision), which fails here:
        // "twin" is not started beside a plugin with the same identity.
        let done = f.sup.update(&[], ReloadOptions::default()).await.unwrap();
        let lines = done.lines();
        assert!(lines[0].starts_with("plugin \"fake\": the new revision's fake-1 did not start"), "{lines:?}");
        assert_eq!(lines[1], format!("plugin \"twin\": uid {uid} is still the running plugin \"fake\"'s; not started"));
        assert!(matches!(f.sup.plugin("twin"), Err(SupervisorError::UnknownPlugin(_))));
        // Once "fake" moves, "twin" comes.
        let done = f.sup.update(&[], ReloadOptions::default()).await.unwrap();
        let lines = done.lines();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].starts_with("fake: revision 3 serves"), "{lines:?}");
        assert_eq!(lines[1], "twin: added");
        assert_ne!(f.sup.plugin("fake").unwrap().spec().ids.0, uid);
        f.sup.shutdown().await;
    }

    /// `reload NAME` reads only its entry, and is refused a running plugin's uid as
    /// `update NAME` is (both ran under one uid).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reload_may_not_take_a_running_plugins_uid_either() {
        let f = fixture(&format!("{}{}", plugin("fake", ""), plugin("other", "")), &[]);
        f.sup.wait_running("fake", UP).await.unwrap();
        f.sup.wait_running("other", UP).await.unwrap();
        let (uid, gid) = f.sup.plugin("fake").unwrap().spec().ids;
        edit(&f.sup, |t| t.replace("name = \"other\"\n", &format!("name = \"other\"\nuid = {uid}\ngid = {gid}\n")));
        let err = f.sup.reload("other", ReloadOptions::default()).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("plugin \"other\": uid {uid} is still the running plugin \"fake\"'s; nothing was started")
        );
        assert_ne!(f.sup.plugin("other").unwrap().spec().ids.0, uid, "nothing was applied");
        f.sup.shutdown().await;
    }

    /// Two plugins the file gives one user share it from their start: a reload or an
    /// update of one that keeps it is no move onto the other's uid.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn plugins_sharing_a_user_from_the_start_may_still_be_reloaded_and_updated() {
        let shared = "user = \"nobody\"";
        let f = fixture(&format!("{}{}", plugin("fake", shared), plugin("other", shared)), &[]);
        f.sup.wait_running("fake", UP).await.unwrap();
        f.sup.wait_running("other", UP).await.unwrap();
        assert_eq!(f.sup.plugin("fake").unwrap().spec().ids.0, f.sup.plugin("other").unwrap().spec().ids.0);
        f.sup.reload("other", ReloadOptions::default()).await.unwrap();
        edit(&f.sup, |t| t.replacen(shared, &format!("{shared}\nargs = [\"--again\"]"), 2));
        let done = f.sup.update(&["other".into()], ReloadOptions::default()).await.unwrap();
        assert!(done.failed.is_empty(), "{:?}", done.lines());
        assert_eq!(f.sup.plugin("other").unwrap().spec().args, ["--again"]);
        f.sup.shutdown().await;
    }
}
