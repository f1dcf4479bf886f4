//! Hot reload: a plugin's new revision (its config entry read again, its binary verified
//! again) brought up beside the serving one, checked before any call reaches it (handshake
//! and init, its contract against the serving one, health, a moment of staying up), then
//! switched to at once, and the old revision drained away. A failure at any step stops the
//! new instances and leaves the old revision serving, untouched.

use std::sync::Arc;
use std::time::{Duration, Instant};

use plugin_proto::transport::H2Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::config::rollout::Strategy;
use crate::config::{Config, ConfigError};
use crate::instance::said::plugin_said;
use crate::instance::state::State;
use crate::instance::{Plugin, Revision};
use crate::observe::events::EventKind;
use crate::supervisor::{Shared, spawn_revision};

mod loader;
pub mod update;
pub use update::{PluginUpdateError, UpdateError, Updated};

/// How long the new instances must stay up, once ready, before the switch: a version that
/// crashes right after its handshake is refused rather than switched to.
const SETTLE: Duration = Duration::from_millis(500);

/// What the operator allows a reload.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReloadOptions {
    /// Switch even when the new contract breaks the serving one.
    pub allow_breaking: bool,
    /// It resumes an interrupted rollout, and goes on only while it still is one.
    pub resume: bool,
}

/// A reload that happened.
#[derive(Clone, Debug)]
pub struct Reloaded {
    pub plugin: String,
    pub from: u64,
    pub to: u64,
    /// The new instances' processes (none for a plugin that is stopped).
    pub pids: Vec<i32>,
    pub took: Duration,
    /// Compatible changes of the contract, and breaking ones allowed by the operator.
    pub changes: Vec<String>,
    /// The share of calls the new revision takes as a canary, when its plugin rolls out
    /// changes as canaries (None: it takes every call).
    pub canary: Option<u8>,
}

impl std::fmt::Display for Reloaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pids: Vec<String> = self.pids.iter().map(i32::to_string).collect();
        match self.canary {
            Some(share) => write!(f, "{}: revision {} takes {share}% of calls as a canary", self.plugin, self.to)?,
            None => write!(f, "{}: revision {} serves", self.plugin, self.to)?,
        }
        if !pids.is_empty() {
            write!(f, " (pid {})", pids.join(", "))?;
        }
        match self.canary {
            Some(_) => write!(
                f,
                " after {} ms; revision {} takes the rest (follow it with `supervisorctl rollout status {}`)",
                self.took.as_millis(),
                self.from,
                self.plugin
            ),
            None => write!(f, " after {} ms; revision {} drains", self.took.as_millis(), self.from),
        }
    }
}

/// Why a reload was refused; the serving revision was left as it was.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("unknown plugin {}", crate::config::shown_name(.0))]
    UnknownPlugin(String),
    #[error("plugin {0:?}: a reload is already under way")]
    InProgress(String),
    #[error(
        "plugin {0:?}: a canary rollout is under way; promote or abort it first (supervisorctl rollout promote|abort)"
    )]
    RolloutUnderWay(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("plugin {plugin:?} is no longer in {file}")]
    NotConfigured { plugin: String, file: String },
    #[error("plugin {plugin:?}: the new binary was refused: {cause}")]
    Image { plugin: String, cause: String },
    #[error("plugin {plugin:?}: the new revision's {instance} did not start: {reason}")]
    NotStarted { plugin: String, instance: String, reason: String },
    #[error("plugin {plugin:?}: the new revision did not start within {} ms: {states}", .waited.as_millis())]
    StartTimeout { plugin: String, waited: Duration, states: String },
    #[error(
        "plugin {plugin:?}: the new contract breaks the serving one in {} place(s): {} (reload with --allow-breaking to accept)",
        .breaks.len(), .breaks.join("; ")
    )]
    Breaking { plugin: String, breaks: Vec<String> },
    #[error("plugin {plugin:?}: the new revision's {instance} does not serve: {why}")]
    Unhealthy { plugin: String, instance: String, why: String },
    #[error("plugin {plugin:?}: the new revision's {instance} did not stay up: {reason}")]
    Unsteady { plugin: String, instance: String, reason: String },
    #[error("plugin {0:?}: the supervisor is stopping")]
    ShuttingDown(String),
    /// The operator stopped or restarted the plugin while its new revision was starting:
    /// that command is obeyed, and the reload, whose checks it would foil, ends.
    #[error(
        "plugin {plugin:?}: {by} while its new revision was starting: the new revision is not taken (update again)"
    )]
    Interrupted { plugin: String, by: &'static str },
    #[error("plugin {plugin:?}: the reload ended abnormally: {reason}")]
    Aborted { plugin: String, reason: String },
    #[error(
        "plugin {0:?}: the interrupted rollout was given up, or the plugin stopped, before its resume began; nothing was started"
    )]
    NotResumed(String),
    #[error(
        "plugin {plugin:?}: its entry in the file would close a cycle of calls with the others as they run: {cycle}: {}",
        crate::config::call_graph::WHY
    )]
    CallCycle { plugin: String, cycle: String },
    #[error("plugin {plugin:?}: uid {uid} is still the running plugin {other:?}'s; nothing was started")]
    UidInUse { plugin: String, uid: u32, other: String },
}

/// Where a reload takes the plugin's new config entry from.
pub(crate) enum Source {
    /// The config file, read (and validated whole) again.
    File(std::path::PathBuf),
    /// An entry already read (by `update`).
    Entry(Box<crate::config::PluginSpec>),
    /// The entry the serving revision runs: only the binary is read again.
    Serving,
    /// The serving revision again, exactly as it runs (its entry and the image it
    /// verified, never what the file at its path is now): new processes for old ones, as
    /// a leak's `action = "replace"` wants. It switches at once whatever the rollout
    /// strategy, and leaves what is kept of a rollout (interrupted, rolled back) as it is.
    Replace,
}

/// `name`'s entry in the config `file`, loaded whole (a file with any error is refused).
/// The rest of the config is dropped here, on the loader thread, with the load's garbage.
fn entry_of(file: &std::path::Path, name: &str) -> Result<Option<crate::config::PluginSpec>, ConfigError> {
    Config::load(file).map(|config| config.specs().into_iter().find(|s| s.name == name))
}

/// Reloads `p` with the entry `source` gives: see the
/// module's description. Runs to its end even when its caller goes away (the daemon
/// spawns it), so no half-started revision is ever left behind.
pub(crate) async fn reload(
    shared: Arc<Shared>,
    p: Arc<Plugin>,
    source: Source,
    opts: ReloadOptions,
) -> Result<Reloaded, ReloadError> {
    let started = Instant::now();
    // Its revision would never start (see `Tasks`), and what it kept would outlive the
    // supervisor's hold on its state.
    if *shared.shutdown.borrow() {
        return Err(ReloadError::ShuttingDown(p.name.clone()));
    }
    let _one = p.reload_lock.try_lock().map_err(|_| ReloadError::InProgress(p.name.clone()))?;
    if p.rollout().is_some_and(|r| r.is_active()) {
        return Err(ReloadError::RolloutUnderWay(p.name.clone()));
    }
    // A resume's reload takes the lock only once its task first runs: an abort in between
    // gave the rollout up, and the canary is no longer wanted.
    let resumable = || {
        p.rollout().is_some_and(|r| r.report().phase == crate::rollout::Phase::Interrupted)
            && p.desired.borrow().run
            && p.serving().has_ready()
    };
    if opts.resume && !resumable() {
        return Err(ReloadError::NotResumed(p.name.clone()));
    }
    let replace = matches!(source, Source::Replace);
    let spec = Arc::new(match source {
        Source::File(file) => {
            // Loading reads files (the config, its contracts) and compiles contracts.
            let read = loader::on_loader({
                let (file, name) = (file.clone(), p.name.clone());
                move || entry_of(&file, &name)
            });
            let spec = read
                .await
                .map_err(|e| ReloadError::Aborted { plugin: p.name.clone(), reason: e.to_string() })??
                .ok_or_else(|| ReloadError::NotConfigured {
                    plugin: p.name.clone(),
                    file: file.display().to_string(),
                })?;
            // The file was checked whole, but the others may run older entries.
            if let Some(cycle) = cycle_closed(&shared, &p, &spec) {
                return Err(ReloadError::CallCycle { plugin: p.name.clone(), cycle });
            }
            // As `update` refuses it: the file was checked whole, but another plugin may
            // still run under the uid this entry moves the plugin to. (Two plugins the file
            // gives one `user` share it from their start, as the file allows.)
            if let Some(other) = update::uid_owner(&shared, &spec).filter(|_| spec.ids.0 != p.spec().ids.0) {
                return Err(ReloadError::UidInUse {
                    plugin: p.name.clone(),
                    uid: spec.ids.0,
                    other: other.name.clone(),
                });
            }
            spec
        }
        Source::Entry(spec) => *spec,
        Source::Serving | Source::Replace => (*p.spec()).clone(),
    });
    let old = p.serving();
    let kept = if replace { old.image.lock().ok().and_then(|g| g.clone()) } else { None };
    let image = match kept {
        Some(image) => image,
        // The binary is verified afresh: a rebuild in place is what this is for.
        None => shared
            .launcher
            .image(spec.clone(), None)
            .await
            .map_err(|e| ReloadError::Image { plugin: p.name.clone(), cause: e.cause().to_string() })?,
    };
    let rev = p.new_revision(spec.clone());
    if let Ok(mut slot) = rev.image.lock() {
        *slot = Some(image);
    }
    shared.events.emit(
        &p.name,
        "",
        EventKind::Reload,
        format!("revision {} starting beside revision {}", rev.number, old.number),
        &[("revision", rev.number.to_string())],
    );
    // A canary's rollout is kept before its instances start, not once its checks pass: a
    // supervisor stopped (or killed) while the canary is still in its handshake comes back
    // on the stable revision with the rollout interrupted, never on the file's entry, which
    // no step judged, taking every call.
    let canary = |p: &Plugin, old: &Revision| {
        !replace && spec.rollout.strategy == Strategy::Canary && p.desired.borrow().run && old.has_ready()
    };
    let kept_before = if canary(&p, &old) {
        let before = shared.state.rollout(&p.name);
        crate::rollout::keep(&shared, &p, &old, &rev).await;
        Some(before)
    } else {
        None
    };
    let commanded = Commanded::since(&p);
    spawn_revision(&shared, &p, &rev);
    let checked =
        if p.desired.borrow().run { check(&shared, &p, &old, &rev, opts, commanded).await } else { Ok(Vec::new()) };
    let changes = match checked {
        Ok(changes) => changes,
        Err(e) => {
            shared.events.emit(&p.name, "", EventKind::ReloadRefused, e.to_string(), &[]);
            abandon(&p, &rev).await;
            // Refused, the canary began no rollout. Unless the supervisor is stopping: then
            // the rollout kept is what brings the stable revision back at the next start.
            if let Some(before) = kept_before
                && !*shared.shutdown.borrow()
            {
                crate::rollout::saved::put_back(&shared, &p.name, before);
            }
            return Err(e);
        }
    };
    let pids = rev.instances.iter().filter_map(|i| i.status().pid).collect();
    let mut done = Reloaded {
        plugin: p.name.clone(),
        from: old.number,
        to: rev.number,
        pids,
        took: Duration::ZERO,
        changes,
        canary: None,
    };
    // A canary needs a stable revision that serves beside it: a stopped plugin's new
    // revision, or one beside a revision with no instance ready, replaces it at once.
    if canary(&p, &old) {
        // The generation the checks held to: a stop or restart after them (or during the
        // rollout's keeping) is the operator's, not a crash of the canary.
        done.canary = Some(crate::rollout::begin(&shared, &p, old, rev.clone(), commanded.generation).await);
        done.took = started.elapsed();
        shared.events.emit(&p.name, "", EventKind::Reloaded, done.to_string(), &[("revision", rev.number.to_string())]);
        return Ok(done);
    }
    p.promote(&rev);
    // A reload that serves ends what was kept of an interrupted rollout, and an explicit
    // one makes a rolled-back revision no longer one to skip.
    if !replace {
        if shared.state.rollout(&p.name).is_some() {
            crate::rollout::saved::forget(&shared, &p.name);
        }
        // Nor is an interrupted or rolled-back rollout of it anything to show or resume
        // now (a running one refused this reload).
        p.clear_rollout();
    }
    done.took = started.elapsed();
    shared.events.emit(&p.name, "", EventKind::Reloaded, done.to_string(), &[("revision", rev.number.to_string())]);
    // The old revision's instances finish their calls, stop and go; the reload's caller
    // does not wait for that.
    drain_away(&shared, &p, old);
    Ok(done)
}

/// Retires `rev` (no call reaches it any more): its instances finish their calls, stop
/// and go, and then it is forgotten, in a task of its own.
pub(crate) fn drain_away(shared: &Shared, p: &Arc<Plugin>, rev: Arc<Revision>) {
    rev.retire();
    let drained = p.clone();
    shared.tasks.spawn(async move {
        let grace = rev.spec().stop_timeout.saturating_add(Duration::from_secs(5));
        drained.wait_until(grace, |_| stopped(&rev)).await;
        drained.forget(&rev);
    });
}

/// [`reload`] in a task of its own: it runs to its end even if its caller stops waiting,
/// so no half-started revision is ever left behind.
pub(crate) async fn spawned(
    shared: Arc<Shared>,
    p: Arc<Plugin>,
    source: Source,
    opts: ReloadOptions,
) -> Result<Reloaded, ReloadError> {
    let name = p.name.clone();
    let task = tokio::spawn(reload(shared, p, source, opts));
    task.await.unwrap_or_else(|e| Err(ReloadError::Aborted { plugin: name, reason: e.to_string() }))
}

/// A stop or restart of the plugin the operator asked for after the reload began: the new
/// instances obey it too (a restart would count against them as a failure, a stop leave
/// them stopped until the wait for them ran out), so it ends the reload.
#[derive(Clone, Copy)]
struct Commanded {
    generation: u64,
}

impl Commanded {
    fn since(p: &Plugin) -> Self {
        Self { generation: p.desired.borrow().generation }
    }

    /// What the operator did since, if a stop or restart.
    fn by(self, p: &Plugin) -> Option<&'static str> {
        let now = *p.desired.borrow();
        if !now.commanded_since(self.generation) {
            // Nothing, or a start of a plugin already running: acknowledged, not acted on.
            None
        } else if !now.run {
            Some("the operator stopped it")
        } else {
            Some("the operator restarted it")
        }
    }

    fn check(self, p: &Plugin) -> Result<(), ReloadError> {
        match self.by(p) {
            Some(by) => Err(ReloadError::Interrupted { plugin: p.name.clone(), by }),
            None => Ok(()),
        }
    }
}

/// Every check the new revision must pass before it takes a call; the contract changes
/// it brings.
async fn check(
    shared: &Shared,
    p: &Plugin,
    old: &Revision,
    rev: &Revision,
    opts: ReloadOptions,
    commanded: Commanded,
) -> Result<Vec<String>, ReloadError> {
    started(shared, p, rev, commanded).await?;
    let changes = compare_contracts(p, old, rev, opts)?;
    for inst in &rev.instances {
        let Some(live) = inst.live.load_full() else { continue };
        serving(live.channel.clone()).await.map_err(|why| ReloadError::Unhealthy {
            plugin: p.name.clone(),
            instance: inst.id.clone(),
            why,
        })?;
    }
    settled(shared, p, rev, commanded).await?;
    Ok(changes)
}

/// Waits until every new instance has passed its handshake and init, or one failed.
async fn started(shared: &Shared, p: &Plugin, rev: &Revision, commanded: Commanded) -> Result<(), ReloadError> {
    let waited = rev.spec().handshake_timeout.saturating_mul(2).saturating_add(Duration::from_secs(5));
    let over = |_: &Plugin| {
        *shared.shutdown.borrow()
            || commanded.by(p).is_some()
            || rev.instances.iter().all(|i| i.status().state == State::Running)
            || first_failure(rev).is_some()
    };
    p.wait_until(waited, over).await;
    if *shared.shutdown.borrow() {
        return Err(ReloadError::ShuttingDown(p.name.clone()));
    }
    commanded.check(p)?;
    if let Some((instance, reason)) = first_failure(rev) {
        return Err(ReloadError::NotStarted { plugin: p.name.clone(), instance, reason });
    }
    if rev.instances.iter().all(|i| i.status().state == State::Running) {
        return Ok(());
    }
    let states: Vec<String> = rev.instances.iter().map(|i| format!("{} {}", i.id, i.status().describe())).collect();
    Err(ReloadError::StartTimeout { plugin: p.name.clone(), waited, states: states.join(", ") })
}

/// An instance that failed to start, or started and ended, with why. An end its restart
/// policy leaves stopped (an exit 0 under `on-failure`) counts as much as a crash: the
/// revision switched to would serve nothing. (`Stopping`, on the way to one of these
/// with the cause still to come, does not count yet: see [`settled`].)
pub(crate) fn first_failure(rev: &Revision) -> Option<(String, String)> {
    rev.instances.iter().find_map(|i| {
        let s = i.status();
        let stopped = s.tried && s.state == State::Stopped;
        let ended = stopped || matches!(s.state, State::Failed | State::Backoff) || s.restarts > 0;
        ended.then(|| (i.id.clone(), if s.reason.is_empty() { s.describe() } else { s.reason.clone() }))
    })
}

/// The new instances stay up for a moment: one that crashes right after its handshake
/// is caught here, not after the switch. One whose connection closed meanwhile is waited
/// for until it has ended (its exit, the cause a refusal names) or its stop timeout has
/// passed.
async fn settled(shared: &Shared, p: &Plugin, rev: &Revision, commanded: Commanded) -> Result<(), ReloadError> {
    let fell = |_: &Plugin| first_failure(rev).is_some() || *shared.shutdown.borrow() || commanded.by(p).is_some();
    p.wait_until(SETTLE, fell).await;
    let stopping = |_: &Plugin| rev.instances.iter().any(|i| i.status().state == State::Stopping);
    if !fell(p) && stopping(p) {
        let waited = rev.spec().stop_timeout.saturating_add(Duration::from_secs(1));
        p.wait_until(waited, |p| fell(p) || !stopping(p)).await;
    }
    // Its instances stop because the supervisor does: no fault of theirs.
    if *shared.shutdown.borrow() {
        return Err(ReloadError::ShuttingDown(p.name.clone()));
    }
    commanded.check(p)?;
    let going = || {
        rev.instances.iter().find_map(|i| {
            let s = i.status();
            (s.state == State::Stopping).then(|| (i.id.clone(), s.describe()))
        })
    };
    match first_failure(rev).or_else(going) {
        Some((instance, reason)) => Err(ReloadError::Unsteady { plugin: p.name.clone(), instance, reason }),
        None => Ok(()),
    }
}

/// The new contract against the serving one, for every service the serving one declared:
/// a breaking change refuses the reload unless allowed. A contract pin changed in the same
/// config change is the new reference instead (the handshake already held the new
/// revision to it).
fn compare_contracts(
    p: &Plugin,
    old: &Revision,
    rev: &Revision,
    opts: ReloadOptions,
) -> Result<Vec<String>, ReloadError> {
    use crate::contract::{Scope, Side, decode_descriptor_set, diff};
    let (Some(before), Some(after)) = (old.contract.load_full(), rev.contract.load_full()) else {
        return Ok(Vec::new());
    };
    if old.spec().contract != rev.spec().contract {
        return Ok(Vec::new());
    }
    let decode = |bytes: &[u8], side| decode_descriptor_set(bytes, side).map_err(|e| e.to_string());
    let (old_set, new_set) = match (decode(&before.descriptor_set, Side::Old), decode(&after.descriptor_set, Side::New))
    {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            return Err(ReloadError::Breaking {
                plugin: p.name.clone(),
                breaks: vec![format!("the contracts cannot be compared: {e}")],
            });
        }
    };
    let report = diff(&old_set, &new_set, Scope::services(before.services.iter().cloned()));
    let breaks: Vec<String> = report.breaking().map(ToString::to_string).collect();
    if !breaks.is_empty() && !opts.allow_breaking {
        return Err(ReloadError::Breaking { plugin: p.name.clone(), breaks });
    }
    Ok(report.changes().iter().map(ToString::to_string).collect())
}

/// A cycle of `calls` that `p` running `spec` would close with the other plugins as they
/// run (any of their revisions' entries).
fn cycle_closed(shared: &Shared, p: &Plugin, spec: &crate::config::PluginSpec) -> Option<String> {
    let running = shared.plugins.all();
    let graph: Vec<(String, Vec<String>)> = running
        .iter()
        .map(|r| (r.name.clone(), if r.name == p.name { spec.calls.clone() } else { update::calls_out(r) }))
        .collect();
    let plugins: Vec<(&str, &[String])> = graph.iter().map(|(n, c)| (n.as_str(), c.as_slice())).collect();
    // Only a cycle through `p` is this reload's doing; one among the others' draining
    // revisions is not.
    let at = plugins.iter().position(|(n, _)| *n == p.name)?;
    crate::config::call_graph::cycle_through(&plugins, at).map(|c| c.said)
}

/// How long a new instance has to answer the reload's health check.
const HEALTH_WAIT: Duration = Duration::from_secs(5);

/// `grpc.health.v1` says the instance serves, within [`HEALTH_WAIT`]. The channel does
/// not enforce the deadline it sends: a plugin whose runtime blocked after its init
/// would otherwise hold the reload, and every `update` and SIGHUP queued behind it.
async fn serving(channel: H2Channel) -> Result<(), String> {
    let mut client = HealthClient::new(channel);
    let mut req = tonic::Request::new(tonic_health::pb::HealthCheckRequest { service: String::new() });
    req.set_timeout(HEALTH_WAIT);
    match tokio::time::timeout(HEALTH_WAIT, client.check(req)).await {
        Ok(Ok(r)) if r.get_ref().status == ServingStatus::Serving as i32 => Ok(()),
        Ok(Ok(r)) => Err(format!(
            "health check answered {:?}",
            ServingStatus::try_from(r.get_ref().status).unwrap_or(ServingStatus::Unknown)
        )),
        // The plugin's own words: kept to one escaped line, as everywhere they are quoted.
        Ok(Err(status)) => Err(format!("health check failed: {:?}: {}", status.code(), plugin_said(status.message()))),
        Err(_) => Err(format!("health check not answered within {HEALTH_WAIT:?}")),
    }
}

/// Every instance of `rev` has stopped (for good, once it is retired).
pub(crate) fn stopped(rev: &Revision) -> bool {
    rev.instances.iter().all(|i| matches!(i.status().state, State::Stopped | State::Failed))
}

/// Stops a new revision that did not pass, and forgets it.
async fn abandon(p: &Plugin, rev: &Arc<Revision>) {
    rev.retire();
    let grace = rev.spec().stop_timeout.saturating_add(Duration::from_secs(5));
    p.wait_until(grace, |_| stopped(rev)).await;
    p.forget(rev);
}

#[cfg(test)]
mod tests;
