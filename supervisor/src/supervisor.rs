//! The supervisor as a library: start it from a config, get channels to
//! plugins, drive their lifecycle, shut it down. The daemon is this plus
//! the control and gateway sockets.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::config::changes::{Changes, RereadError};
use crate::instance::launcher::Launcher;
use crate::instance::sandboxed::SandboxLauncher;
use crate::instance::state::State;
use crate::instance::{self, Plugin};
use crate::observe::events::EventBus;
use crate::observe::metrics::Metrics;
use crate::plugin_set::PluginSet;
use crate::reload::{ReloadError, ReloadOptions, Reloaded, Source};
use crate::routing::gateway::Gateway;
use crate::routing::host_calls::{HostCalls, HostServices};
use crate::routing::table::RouteTable;
use crate::routing::{Channel, channel};
use crate::state::StateStore;

/// What a start, stop or restart answers: the state reached, and whether it is the one
/// the command asked for.
#[derive(Debug)]
pub(crate) struct Acted {
    pub said: String,
    pub reached: bool,
}

/// How the answer to a stop that a later start or restart overrode begins.
const OVERRIDDEN: &str = "overridden by a later start or restart";

/// How long a stop may go on past `stop_timeout` before it is answered as under way:
/// the drain's floor (up to 0.5 s), the quarter second the exit is awaited past the
/// drain deadline, SIGTERM's second of grace, and the teardown's wait for stragglers in a
/// killed cgroup (5 s), with a little to spare.
const STOP_PAST_TIMEOUT: Duration = Duration::from_secs(8);

/// What every instance task shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub events: Arc<EventBus>,
    pub metrics: Arc<Metrics>,
    /// How instances are brought up, and the sandbox taken down.
    pub launcher: Arc<dyn Launcher>,
    pub routes: Arc<RouteTable>,
    /// What each ready instance's plugin says of its own health (gateway health reads it).
    pub health: Arc<crate::routing::discovery::Board>,
    /// Set once: every instance stops (and no new one starts).
    pub shutdown: watch::Sender<bool>,
    /// Set once, during shutdown: stop without waiting for drains.
    pub hurry: watch::Sender<bool>,
    pub state: StateStore,
    pub plugins: PluginSet,
    /// Held by an update from its reading of the file to its end: one at a time.
    pub updating: tokio::sync::Mutex<()>,
    /// The instances' tasks (and the sampler's), awaited at shutdown.
    pub tasks: Tasks,
    /// The service manager the daemon tells of its reloads, once the daemon sets it.
    pub service: std::sync::OnceLock<Arc<crate::service::Notifier>>,
    /// Where instances' calls over their host channel go; set before any instance starts.
    pub host_calls: std::sync::OnceLock<crate::routing::host_calls::HostCalls>,
}

/// Tasks spawned at start and by reloads; shutdown waits for them, then closes the list:
/// a task spawned late (by a reload under way, or asked of a supervisor shut down) is not
/// started, so nothing it does reaches the cgroups, state or images another supervisor on
/// the same config may hold by then.
#[derive(Debug)]
pub(crate) struct Tasks(Mutex<Option<Vec<JoinHandle<()>>>>);

impl Tasks {
    fn new() -> Self {
        Self(Mutex::new(Some(Vec::new())))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Vec<JoinHandle<()>>>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut tasks = self.lock();
        let Some(tasks) = tasks.as_mut() else {
            tracing::debug!("the supervisor has shut down: a task asked of it is not started");
            return;
        };
        // Reloads come and go: what ended is forgotten, so the list stays as long as
        // what runs.
        tasks.retain(|t| !t.is_finished());
        tasks.push(tokio::spawn(task));
    }

    /// What runs, to wait for; with none left, the list is closed for good.
    fn take_or_close(&self) -> Vec<JoinHandle<()>> {
        let mut tasks = self.lock();
        let taken = tasks.as_mut().map(std::mem::take).unwrap_or_default();
        if taken.is_empty() {
            *tasks = None;
        }
        taken
    }

    /// Aborts them all; whether there were any (none once closed: `shutdown` waited for
    /// them and tore down what they left).
    fn abort(&self) -> bool {
        let tasks = self.lock();
        let Some(tasks) = tasks.as_ref() else { return false };
        for t in tasks {
            t.abort();
        }
        !tasks.is_empty()
    }
}

/// Starts a task for each instance of `rev`.
pub(crate) fn spawn_revision(shared: &Arc<Shared>, p: &Arc<Plugin>, rev: &Arc<crate::instance::Revision>) {
    for inst in &rev.instances {
        shared.tasks.spawn(instance::run(p.clone(), rev.clone(), inst.clone(), shared.clone()));
    }
}

/// Errors from the library API.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("unknown plugin {}", crate::config::shown_name(.0))]
    UnknownPlugin(String),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error(transparent)]
    Sandbox(#[from] crate::sandbox::confine::SandboxError),
    #[error("plugin {plugin:?}: {reason}")]
    Quota { plugin: String, reason: String },
    #[error(
        "plugin {plugin:?}: the kernel refused the change for {instance}: {source}; the previous quotas stay in force and nothing was saved"
    )]
    QuotaRefused {
        plugin: String,
        instance: String,
        #[source]
        source: Box<crate::sandbox::cgroup::CgroupError>,
    },
    #[error(
        "plugin {plugin:?}: memory {limit} is below what {instance} uses now ({used:.1}M): the kernel would reclaim and then OOM-kill it; force the change (supervisorctl quota --force) to lower it anyway",
        used = .usage.bytes() as f64 / f64::from(1 << 20)
    )]
    MemoryBelowUsage {
        plugin: String,
        instance: String,
        limit: crate::config::units::ByteSize,
        usage: crate::config::units::ByteSize,
    },
    #[error("plugin {plugin:?} did not reach {wanted} within {waited:?}; it is {state}")]
    Timeout { plugin: String, wanted: &'static str, waited: Duration, state: String },
}

/// A running supervisor.
pub struct Supervisor {
    shared: Arc<Shared>,
    config: Config,
    gateway: Gateway,
}

impl Supervisor {
    /// Starts every plugin the config marks `autostart` (in the background:
    /// use [`Supervisor::wait_running`] to wait for one).
    pub async fn start(config: Config) -> Result<Self, SupervisorError> {
        Self::start_with_host(config, HostServices::default()).await
    }

    /// Like [`Supervisor::start`], and offers `host`'s services to every plugin over its
    /// host channel (`plugin_sdk::Plugin::host_channel`).
    pub async fn start_with_host(config: Config, host: HostServices) -> Result<Self, SupervisorError> {
        raise_nofile_limit();
        // Whatever can fail comes before the sandbox, which is built last:
        // a start that fails leaves no cgroup behind.
        let state = StateStore::open(&config.resolve(&config.supervisor.state_dir))?;
        let launcher = Arc::new(SandboxLauncher::start(&config).await?);
        Ok(Self::with_launcher(config, state, launcher, host))
    }

    /// The onboarding check's scratch supervisor: every instance runs under the learning
    /// filter, which lets every call through and records it in `recorder`. Deliberately
    /// not public: no embedder or config reaches a plugin run without its tier's filter.
    pub(crate) async fn start_learning(
        config: Config,
        recorder: Arc<crate::onboard::record::Recorder>,
    ) -> Result<Self, SupervisorError> {
        raise_nofile_limit();
        let state = StateStore::open(&config.resolve(&config.supervisor.state_dir))?;
        let launcher = Arc::new(SandboxLauncher::start_with(&config, Some(recorder)).await?);
        Ok(Self::with_launcher(config, state, launcher, HostServices::default()))
    }

    /// A supervisor whose instances `launcher` brings up (the lifecycle's tests give it
    /// one that runs plugins in-process).
    pub(crate) fn with_launcher(
        config: Config,
        state: StateStore,
        launcher: Arc<dyn Launcher>,
        host: HostServices,
    ) -> Self {
        let metrics = Arc::new(Metrics::default());
        let shared = Arc::new(Shared {
            events: Arc::new(EventBus::new(config.supervisor.event_history, metrics.clone())),
            metrics,
            launcher,
            routes: Arc::new(RouteTable::default()),
            health: Arc::default(),
            shutdown: watch::channel(false).0,
            hurry: watch::channel(false).0,
            state,
            plugins: PluginSet::default(),
            updating: tokio::sync::Mutex::new(()),
            tasks: Tasks::new(),
            service: std::sync::OnceLock::new(),
            host_calls: std::sync::OnceLock::new(),
        });
        let plugins: Vec<Arc<Plugin>> = config
            .specs()
            .into_iter()
            .map(|spec| {
                // Counted from here: what is said of a plugin not configured makes no series.
                shared.metrics.add_plugin(&spec.name);
                crate::rollout::saved::restore(&shared, spec, config.supervisor.log_lines)
            })
            .collect();
        crate::rollout::saved::forget_unconfigured(&shared, &plugins);
        crate::rollout::saved::sweep_images(&shared);
        for p in &plugins {
            // The operator's earlier quota changes and stops outlive this restart.
            crate::quotas::restore(p, &shared);
            crate::kept_stopped::restore(p, &shared);
            p.breaker.report_to(&shared.events, &shared.health);
            shared.plugins.insert(p.clone());
        }
        // Before any instance starts: each one's host channel routes through it.
        let limits = &config.supervisor.gateway;
        let gateway = Gateway::new(shared.routes.clone(), &plugins, &shared.metrics, shared.health.clone(), limits);
        let _ = shared.host_calls.set(HostCalls::new(host, gateway.clone()));
        for p in &plugins {
            spawn_revision(&shared, p, &p.serving());
        }
        shared.tasks.spawn(crate::sampler::run(shared.clone(), config.supervisor.leak_window));
        Self { shared, config, gateway }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn plugin(&self, name: &str) -> Result<Arc<Plugin>, SupervisorError> {
        self.shared.plugins.get(name).ok_or_else(|| SupervisorError::UnknownPlugin(name.to_owned()))
    }

    /// Every plugin, in name order.
    pub fn plugins(&self) -> Vec<Arc<Plugin>> {
        self.shared.plugins.all()
    }

    /// A channel to `plugin` in this process: no gateway hop, the same
    /// routing layers (deadline, balancing over replicas) as the gateway.
    pub fn channel(&self, plugin: &str) -> Result<Channel, SupervisorError> {
        Ok(channel::stack(self.plugin(plugin)?.clone(), self.shared.metrics.clone()))
    }

    /// The service the gateway socket serves, routing by gRPC service name.
    pub fn gateway(&self) -> Gateway {
        self.gateway.clone()
    }

    pub fn events(&self) -> &EventBus {
        &self.shared.events
    }

    /// Calls, events and every instance's state and usage, as OpenMetrics
    /// text for Prometheus.
    pub fn metrics_text(&self) -> String {
        let rows = crate::control::status_rows(self, "").unwrap_or_default();
        self.shared.metrics.render_protected(&rows, &self.revision_rows(), &self.log_rows(), &self.protection_rows())
    }

    /// What each plugin's protection layers decided.
    fn protection_rows(&self) -> Vec<crate::observe::metrics::ProtectionRow> {
        let rows = self.plugins().into_iter().map(|p| crate::observe::metrics::ProtectionRow {
            plugin: p.name.clone(),
            shed: p.queue.shed(),
            circuit: p.breaker.state().gauge(),
            opened: p.breaker.opened_total(),
            too_large: (p.too_large.requests(), p.too_large.responses()),
        });
        rows.collect()
    }

    /// What each plugin's log streams kept and dropped.
    fn log_rows(&self) -> Vec<crate::observe::metrics::LogRow> {
        let plugins = self.plugins();
        let rows = plugins.iter().flat_map(|p| p.logs.counts().map(|counts| (p.name.clone(), counts)));
        rows.map(|(plugin, counts)| crate::observe::metrics::LogRow { plugin, counts }).collect()
    }

    /// Every revision of every plugin, with its calls and share of calls.
    fn revision_rows(&self) -> Vec<crate::observe::metrics::RevisionRow> {
        let mut rows = Vec::new();
        for p in self.plugins() {
            let serving = p.serving().number;
            let split = p.split();
            for rev in p.revisions() {
                let tally = rev.outcomes.snapshot();
                let share = match &split {
                    Some(s) if s.canary.number == rev.number => s.share,
                    Some(s) if rev.number == serving => 100 - s.share,
                    None if rev.number == serving => 100,
                    _ => 0,
                };
                rows.push(crate::observe::metrics::RevisionRow {
                    plugin: p.name.clone(),
                    revision: rev.number,
                    calls: tally.calls,
                    failed: tally.failed,
                    share,
                });
            }
        }
        rows
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Tells `notifier` of every config update from now on (`RELOADING=1`, then `READY=1`).
    /// The daemon sets it; a host embedding the supervisor is its own service.
    pub fn notify_service(&self, notifier: Arc<crate::service::Notifier>) {
        let _ = self.shared.service.set(notifier);
    }

    /// Waits until every plugin's start is over (see [`crate::service::settled`]), up to
    /// `timeout`; true when they all are.
    pub async fn wait_started(&self, timeout: Duration) -> bool {
        let until = tokio::time::Instant::now() + timeout;
        for p in self.plugins() {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            if !p.wait_until(left, crate::service::settled).await {
                return false;
            }
        }
        true
    }

    /// Waits until every instance of `plugin` is running.
    pub async fn wait_running(&self, plugin: &str, timeout: Duration) -> Result<(), SupervisorError> {
        let p = self.plugin(plugin)?;
        if p.wait_for(0, &[State::Running], timeout).await {
            return Ok(());
        }
        Err(SupervisorError::Timeout {
            plugin: plugin.into(),
            wanted: "running",
            waited: timeout,
            state: p.describe_state(),
        })
    }

    /// Starts a plugin's instances (again, after a failure) and waits up to
    /// `timeout` for them to run; returns the state they reached.
    pub async fn start_plugin(&self, name: &str, timeout: Duration) -> Result<String, SupervisorError> {
        Ok(self.run_plugin(name, false, timeout).await?.said)
    }

    /// Stops a plugin's instances, draining them, and waits until they are down. A start or
    /// restart coming after it overrides it: the answer then begins "overridden by a later
    /// start or restart". The stop is kept across restarts of the supervisor, until a start
    /// or restart.
    pub async fn stop_plugin(&self, name: &str) -> Result<String, SupervisorError> {
        Ok(self.stop_acted(name).await?.said)
    }

    /// Stops and starts a plugin's instances.
    pub async fn restart_plugin(&self, name: &str, timeout: Duration) -> Result<String, SupervisorError> {
        Ok(self.run_plugin(name, true, timeout).await?.said)
    }

    /// [`Supervisor::start_plugin`], saying whether every instance ran.
    pub(crate) async fn start_acted(&self, name: &str, timeout: Duration) -> Result<Acted, SupervisorError> {
        self.run_plugin(name, false, timeout).await
    }

    /// [`Supervisor::restart_plugin`], saying whether every instance ran again.
    pub(crate) async fn restart_acted(&self, name: &str, timeout: Duration) -> Result<Acted, SupervisorError> {
        self.run_plugin(name, true, timeout).await
    }

    /// [`Supervisor::stop_plugin`], saying whether no instance runs (or a later start or
    /// restart overrode the stop).
    pub(crate) async fn stop_acted(&self, name: &str) -> Result<Acted, SupervisorError> {
        let p = self.plugin(name)?;
        let (g, unsaved) = crate::kept_stopped::command(&self.shared, &p, false, false);
        let grace = p.spec().stop_timeout.saturating_add(STOP_PAST_TIMEOUT);
        let done = |p: &Plugin| p.restarted_since(g) || p.reached(g, &[State::Stopped, State::Failed]);
        if !p.wait_until(grace, done).await {
            return Err(SupervisorError::Timeout {
                plugin: name.into(),
                wanted: "stopped",
                waited: grace,
                state: p.describe_state(),
            });
        }
        if p.restarted_since(g) {
            // The instances stop, then start again for it: the stop is not waited for.
            let said = with_unsaved(format!("{OVERRIDDEN}, now {}", p.describe_state()), unsaved);
            return Ok(Acted { said, reached: true });
        }
        Ok(Acted { said: with_unsaved(p.describe_stopped(), unsaved), reached: true })
    }

    /// Starts (or restarts) a plugin's instances and waits for them to run,
    /// fail or back off; a restart also gets the time to drain.
    async fn run_plugin(&self, name: &str, restart: bool, timeout: Duration) -> Result<Acted, SupervisorError> {
        let p = self.plugin(name)?;
        let (g, unsaved) = crate::kept_stopped::command(&self.shared, &p, true, restart);
        let wait = if restart { p.spec().stop_timeout.saturating_add(timeout) } else { timeout };
        p.wait_for(g, &[State::Running, State::Failed, State::Backoff], wait).await;
        // Judged with what is said, in one look: each instance acted on this command (a
        // restart's, not the run before it) and runs.
        let reached = p.reached(g, &[State::Running]);
        Ok(Acted { said: with_unsaved(p.describe_state(), unsaved), reached })
    }

    /// Stops every plugin (draining each) and waits for their tasks.
    pub async fn shutdown(&self) {
        // `send_replace`, not `send`: right after start no instance task may
        // have run yet to subscribe, and `send` changes nothing without
        // receivers, so the tasks would then start their plugins anyway.
        self.shared.shutdown.send_replace(true);
        // Until none is left: a reload under way may still add some.
        loop {
            let tasks = self.shared.tasks.take_or_close();
            if tasks.is_empty() {
                break;
            }
            for t in tasks {
                let _ = t.await;
            }
        }
        self.shared.launcher.teardown().await;
        // A host may start another supervisor on this state_dir before it drops this
        // one: nothing runs any more, so nothing is left to save.
        self.shared.state.release();
    }
}

impl Supervisor {
    /// Replaces `name`'s instances with a new revision while it serves: its config entry
    /// is read again (from the file the config was loaded from) and its binary verified
    /// again; the new instances start beside the old ones and are checked before any call
    /// reaches them; then calls switch to them at once and the old ones drain away. A
    /// refused reload leaves the serving revision as it was. Runs to its end even if the
    /// caller stops waiting.
    pub async fn reload(&self, name: &str, opts: ReloadOptions) -> Result<Reloaded, ReloadError> {
        let p = self.plugin(name).map_err(|_| ReloadError::UnknownPlugin(name.to_owned()))?;
        let source = self.config.source.clone().map_or(Source::Serving, Source::File);
        crate::reload::spawned(self.shared.clone(), p, source, opts).await
    }

    /// Reads the config file again, validated whole, and says what it would change in
    /// what runs now (each plugin as its serving revision was made, its binary as it is on
    /// disk now). Nothing is applied.
    pub async fn reread(&self) -> Result<(std::path::PathBuf, Changes), RereadError> {
        crate::reload::update::read_again(&self.shared, &self.config).await.map(|(file, _, changes)| (file, changes))
    }

    /// What the operator asks of `name`'s rollout: its report (`status`), or `pause`,
    /// `resume`, `promote`, `abort`, answered with what was done. `resume` of a rollout the
    /// supervisor found interrupted at its start brings the canary up again from the
    /// config file, as a reload does.
    pub async fn rollout(
        &self,
        name: &str,
        action: crate::rollout::Action,
    ) -> Result<(String, Option<crate::rollout::Report>), crate::rollout::RolloutError> {
        use crate::rollout::{Action, Phase, RolloutError};
        let p = self.plugin(name).map_err(|_| RolloutError::UnknownPlugin(name.to_owned()))?;
        let ro = p.rollout().ok_or_else(|| RolloutError::NoRollout(name.to_owned()))?;
        let report = ro.report();
        match action {
            Action::Status => Ok((report.to_string(), Some(report))),
            Action::Resume if report.phase == Phase::Interrupted => {
                // A stopped plugin's reload replaces its revision unchecked by calls: the
                // canary needs the stable revision serving beside it.
                // Nor does one beside a stable revision with no instance ready: it would
                // replace it unjudged.
                if !p.desired.borrow().run || !p.serving().has_ready() {
                    let note = format!("the plugin is not running; `supervisorctl start {name}` first");
                    return Err(RolloutError::NotNow {
                        plugin: name.to_owned(),
                        action: "resume",
                        phase: report.phase,
                        note,
                    });
                }
                let resume = ReloadOptions { resume: true, ..ReloadOptions::default() };
                let done = self.reload(name, resume).await.map_err(Box::new)?;
                self.shared.events.emit(
                    name,
                    "",
                    crate::observe::events::EventKind::RolloutResumed,
                    done.to_string(),
                    &[],
                );
                Ok((done.to_string(), p.rollout().map(|r| r.report())))
            }
            Action::Abort if report.phase == Phase::Interrupted => {
                // A resume starting the canary holds the plugin's reload, and the phase stays
                // interrupted until the canary runs: given up meanwhile, the rollout would be
                // said given up and then run all the same. Held, no resume starts meanwhile.
                let Ok(_no_resume) = p.reload_lock.try_lock() else {
                    return Err(RolloutError::NotNow {
                        plugin: name.to_owned(),
                        action: "abort",
                        phase: report.phase,
                        note: format!(
                            "a reload of it is under way, such as a resume starting the canary; try again once it is \
                             over (`supervisorctl rollout status {name}`)"
                        ),
                    });
                };
                crate::rollout::saved::give_up(&self.shared, &p, &ro);
                Ok((
                    format!("{name}: the interrupted rollout was given up; the stable revision serves on"),
                    Some(ro.report()),
                ))
            }
            _ => {
                let said = ro.command(name, action).await?;
                Ok((said, Some(ro.report())))
            }
        }
    }

    /// During [`Supervisor::shutdown`]: kill the plugins still draining
    /// instead of waiting for them (the shutdown still ends cleanly, with
    /// every cgroup removed). The daemon does this on a second stop signal.
    pub fn hurry(&self) {
        self.shared.hurry.send_replace(true);
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        // Dropped without shutdown(): instance tasks stop, and with them
        // (Running's drop) their processes.
        self.shared.shutdown.send_replace(true);
        // shutdown() empties the task list and tears the subtree down; a
        // drop without it kills the instances' cgroups and removes them here.
        if self.shared.tasks.abort() {
            self.shared.launcher.teardown_blocking(Duration::from_secs(2));
        }
    }
}

/// A command's answer: the state reached, and what could not be saved.
fn with_unsaved(state: String, unsaved: Option<String>) -> String {
    match unsaved {
        Some(said) => format!("{state}; {said}"),
        None => state,
    }
}

/// Each plugin costs the supervisor several descriptors; the default soft
/// limit (1024) would cap how many it can run.
fn raise_nofile_limit() {
    // SAFETY: getrlimit/setrlimit on our own process with a stack buffer.
    unsafe {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
