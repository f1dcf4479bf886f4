//! The onboarding check (`supervisorctl onboard`): runs one plugin of a
//! config in scratch supervisors and reports whether it is ready for
//! production: its integrity and contract, the tightest tier that fits the
//! syscalls it made (recorded by a permissive learning pass), its
//! performance baseline beside the echo example's, and how it takes faults.

mod faults;
pub mod fit;
pub(crate) mod record;
mod report;
mod scratch;
#[cfg(test)]
mod tests;
pub mod verdict;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use plugin_proto::signals::Signals;
use serde::Serialize;

use crate::config::Config;
use crate::sandbox::tier::TierSet;
use crate::supervisor::{Supervisor, SupervisorError};
use fit::{FitError, TierDenial, TierOrder};
use record::Recorder;

pub use report::render_text;

/// How long a plugin may take to reach running in a scratch supervisor.
pub(crate) const READY_WITHIN: Duration = Duration::from_secs(30);
/// How often the learning pass makes the `--call`.
const LEARNING_CALLS: usize = 5;
/// How long an instance is left alone before its idle memory is read, and the
/// learning pass watches an idle plugin (timers, housekeeping).
const IDLE: Duration = Duration::from_millis(300);

/// What to check.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where the plugin's entry comes from.
    pub target: Target,
    /// The plugin entry's name.
    pub plugin: String,
    /// The call that exercises it, if any.
    pub call: Option<Exercise>,
    /// The echo example's binary, measured beside the plugin.
    pub baseline_echo: Option<PathBuf>,
    /// How many calls the baseline times.
    pub calls: usize,
}

/// The plugin to check: an entry of a supervisor config, or a binary run under a tier.
#[derive(Clone, Debug)]
pub enum Target {
    /// The supervisor config holding the plugin (its tiers and settings apply).
    Config(PathBuf),
    /// A binary, under `tier` of the tier files in `policies`, with every other setting
    /// the supervisor's default.
    Binary { binary: PathBuf, tier: String, policies: PathBuf },
}

/// A call that exercises the plugin: `package.Service/Method` and its JSON.
#[derive(Clone, Debug)]
pub struct Exercise {
    pub method: String,
    pub json: String,
}

/// Why no report can be made at all (a failed check is a report).
#[derive(Debug, thiserror::Error)]
pub enum OnboardError {
    #[error("{}: {message}", path.display())]
    Config { path: PathBuf, message: String },
    #[error("{}: cannot read it: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("no plugin {plugin:?} in {}", path.display())]
    NoSuchPlugin { plugin: String, path: PathBuf },
    #[error("--binary {}: {reason}", path.display())]
    Binary { path: PathBuf, reason: String },
    #[error("--tier {tier}: {reason}")]
    UnknownTier { tier: String, reason: String },
    #[error("the onboarding check runs plugins in a scratch supervisor, which needs root (as the daemon does)")]
    NotRoot,
    #[error("the scratch directory: {0}")]
    Scratch(std::io::Error),
    #[error("{what}: {source}")]
    Supervisor { what: &'static str, source: SupervisorError },
    /// Ended early by a signal; the scratch supervisors were shut down first.
    #[error("interrupted by {signal}: the plugin's scratch supervisor was stopped and its directory removed")]
    Interrupted { signal: &'static str },
}

/// The signals that end a check early (Ctrl-C, a service manager's stop, a closed
/// terminal), caught by the caller for the life of its process ([`INTERRUPTING`]): one
/// that comes between two phases still ends the next, and a scratch supervisor is
/// always shut down, not left with its plugin running in its cgroup.
struct Interrupt<'a>(&'a mut Signals);

/// The signals [`run`] ends a check early on, when its caller catches them.
pub const INTERRUPTING: [i32; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

impl Interrupt<'_> {
    /// Fails at once when a signal came already, so no scratch supervisor starts after it.
    fn check(&mut self) -> Result<(), OnboardError> {
        match futures_util::FutureExt::now_or_never(self.received()) {
            Some(signal) => Err(OnboardError::Interrupted { signal }),
            None => Ok(()),
        }
    }

    /// `work`'s result, unless a signal comes first. The caller then shuts its scratch
    /// supervisor down either way.
    async fn first<T>(&mut self, work: impl Future<Output = T>) -> Result<T, OnboardError> {
        tokio::select! {
            done = work => Ok(done),
            signal = self.received() => Err(OnboardError::Interrupted { signal }),
        }
    }

    async fn received(&mut self) -> &'static str {
        loop {
            match self.0.recv().await {
                Ok(libc::SIGINT) => return "SIGINT",
                Ok(libc::SIGTERM) => return "SIGTERM",
                Ok(libc::SIGHUP) => return "SIGHUP",
                Ok(_) => continue,
                // The pipe failed: no signal can be told apart any more, and the check
                // goes on as it would have without this.
                Err(_) => std::future::pending::<()>().await,
            }
        }
    }
}

/// The whole report.
#[derive(Debug, Serialize)]
pub struct Report {
    pub plugin: String,
    pub integrity: Integrity,
    pub tier_fit: TierFitSection,
    pub baseline: Baseline,
    /// The echo example measured in the same run; `None` when its binary was not found.
    pub echo_baseline: Option<Baseline>,
    /// Each injected fault, in the order they were injected.
    pub faults: Vec<verdict::Fault>,
    /// Every failed check, in words; empty when all passed.
    pub failed: Vec<String>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.failed.is_empty()
    }
}

/// Integrity and contract, as the supervisor checked them before the plugin ran.
#[derive(Debug, Serialize)]
pub struct Integrity {
    pub sha256: String,
    /// The version its signature vouches for, when signed by a trusted key.
    pub signed_version: Option<String>,
    /// The binary's architecture (checked against this host's before it ran).
    pub architecture: String,
    /// Memory the kernel maps writable and executable when the binary runs (an
    /// executable stack, an RWX segment): tiers forbidding such memory refuse it.
    pub writable_exec: Option<String>,
    /// The handshake passed: name, protocol and SDK versions, contract decoded.
    pub handshake: bool,
    pub version: String,
    pub sdk_version: String,
    pub services: Vec<String>,
    /// The entry pins a contract, which the declared one was checked against
    /// (a breaking change fails the handshake).
    pub contract_pinned: bool,
}

/// The learning pass's verdict.
#[derive(Debug, Serialize)]
pub struct TierFitSection {
    /// The tier the config gives the plugin.
    pub configured: String,
    /// Why there is no verdict (nothing recorded), when there is none.
    pub error: Option<String>,
    pub recorded: Vec<fit::SyscallCount>,
    /// The tightest tier covering every recorded call; `None` when none does.
    pub tightest: Option<String>,
    /// What each tighter tier would deny, tightest first.
    pub tighter: Vec<TierDenial>,
    /// What the configured tier would deny (the plugin would fail or be killed there).
    pub configured_denies: Vec<String>,
}

/// Performance of one plugin in a scratch supervisor, under its own tier.
#[derive(Debug, Serialize)]
pub struct Baseline {
    pub plugin: String,
    /// The tier it ran under: its own, or when its own would deny what the plugin does,
    /// the tightest that fits (the loosest when calls went unjudged).
    pub tier: String,
    /// From the supervisor's start to the instance running (spawn, handshake, init).
    pub ready_ms: u64,
    /// Resident memory of the idle instance.
    pub idle_rss_kib: Option<u64>,
    pub calls: Option<CallTimes>,
}

/// Latency of one method over a series of sequential calls.
#[derive(Debug, Serialize)]
pub struct CallTimes {
    pub method: String,
    pub count: usize,
    pub errors: usize,
    /// The first error, in words.
    pub first_error: Option<String>,
    pub p50_us: u64,
    pub p99_us: u64,
}

/// Runs the check, ending it early on any of [`INTERRUPTING`] that `signals` delivers.
pub async fn run(opts: &Options, signals: &mut Signals) -> Result<Report, OnboardError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(OnboardError::NotRoot);
    }
    checked(opts, &mut Interrupt(signals)).await
}

async fn checked(opts: &Options, interrupt: &mut Interrupt<'_>) -> Result<Report, OnboardError> {
    // A config made from the binary: what is wrong with the plugin's entry is the
    // binary's, as named (not a file's).
    let entry_error = |e: OnboardError| match (&opts.target, e) {
        (Target::Binary { binary, .. }, OnboardError::Config { message, .. }) => {
            OnboardError::Binary { path: binary.clone(), reason: format!("as plugin {:?}: {message}", opts.plugin) }
        }
        (_, e) => e,
    };
    let (path, text) = match &opts.target {
        Target::Config(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|source| OnboardError::Read { path: path.clone(), source })?;
            (path.clone(), text)
        }
        Target::Binary { binary, tier, policies } => {
            (binary.clone(), scratch::binary_config(binary, tier, policies, &opts.plugin)?)
        }
    };
    let scratch = tempfile::Builder::new().prefix("onboard-").tempdir().map_err(OnboardError::Scratch)?;
    // The plugin, under its own uid, reaches its scratch data_dir by path through this.
    std::fs::set_permissions(scratch.path(), std::os::unix::fs::PermissionsExt::from_mode(0o711))
        .map_err(OnboardError::Scratch)?;
    let learn = scratch::Run { dir: scratch.path().join("learn"), name: "learn", tier: None, burst: false };
    let learn_config = scratch::config(&path, &text, &opts.plugin, &learn).map_err(entry_error)?;
    let (integrity, tier_fit, tier) = learning_pass(learn_config, &path, opts, interrupt).await?;
    let base = scratch::Run { dir: scratch.path().join("base"), name: "base", tier, burst: true };
    let config = scratch::config(&path, &text, &opts.plugin, &base).map_err(entry_error)?;
    let lowered = scratch::burst_lowered(&path, &text, &opts.plugin).map_err(entry_error)?;
    let (baseline, faults) =
        measure(config, &opts.plugin, opts.call.as_ref(), opts.calls, Some(lowered), interrupt).await?;
    let echo_baseline = match &opts.baseline_echo {
        Some(echo) => {
            let config = scratch::echo_config(&path, &text, echo, &scratch.path().join("echo"), "echo")?;
            let call = Exercise { method: "echo.v1.Echo/Echo".into(), json: r#"{"message":"hi"}"#.into() };
            Some(measure(config, "echo", Some(&call), opts.calls, None, interrupt).await?.0)
        }
        None => None,
    };
    let mut failed = Vec::new();
    if let Some(e) = &tier_fit.error {
        failed.push(format!("tier fit: {e}"));
    } else if !tier_fit.configured_denies.is_empty() {
        failed.push(format!(
            "tier fit: the configured tier {} would deny {}; the tightest tier that fits is {}",
            tier_fit.configured,
            tier_fit.configured_denies.join(", "),
            tier_fit.tightest.as_deref().unwrap_or("none")
        ));
    }
    if let Some(c) = &baseline.calls
        && c.errors > 0
    {
        failed.push(format!(
            "baseline: {} of {} calls of {} failed: {}",
            c.errors,
            c.count,
            c.method,
            c.first_error.as_deref().unwrap_or("")
        ));
    }
    failed.extend(faults.iter().filter_map(verdict::failure));
    Ok(Report { plugin: opts.plugin.clone(), integrity, tier_fit, baseline, echo_baseline, faults, failed })
}

/// Runs the plugin under the learning filter, exercises it, and judges what it did; says
/// too which tier to measure it under, when not its own ([`measured_under`]).
async fn learning_pass(
    config: Config,
    path: &Path,
    opts: &Options,
    interrupt: &mut Interrupt<'_>,
) -> Result<(Integrity, TierFitSection, Option<String>), OnboardError> {
    let name = opts.plugin.as_str();
    // Loaded by the config only when a plugin is sandboxed; an unsandboxed one is
    // judged against the same directory's tiers.
    let tiers = match config.tiers() {
        Some(t) => t.clone(),
        None => Arc::new(
            TierSet::load_dir(&config.resolve(&config.supervisor.policies_dir))
                .map_err(|e| OnboardError::Config { path: path.to_owned(), message: e.to_string() })?,
        ),
    };
    let recorder = Arc::new(Recorder::new(TierOrder::of(&tiers)));
    let configured = config.specs().first().map(|s| s.tier.clone()).unwrap_or_default();
    let pinned = config.specs().first().is_some_and(|s| s.contract.is_some());
    interrupt.check()?;
    let sup = Supervisor::start_learning(config, recorder.clone())
        .await
        .map_err(|source| OnboardError::Supervisor { what: "starting the learning pass", source })?;
    let ran = async {
        running(&sup, name).await?;
        let integrity = integrity(&sup, name, pinned)?;
        if let Some(call) = &opts.call {
            for _ in 0..LEARNING_CALLS {
                // A failing call is still a call the plugin handled; the baseline reports errors.
                let _ = crate::control::call::call_json(&sup, name, &call.method, &call.json, READY_WITHIN).await;
            }
        }
        tokio::time::sleep(IDLE).await;
        sup.stop_plugin(name).await?;
        Ok::<_, SupervisorError>(integrity)
    };
    let ran = interrupt.first(ran).await;
    sup.shutdown().await;
    let integrity = ran?.map_err(|source| OnboardError::Supervisor { what: "the learning pass", source })?;
    let left_out = recorder.left_out();
    let mut section = match fit::fit(recorder.order(), &recorder.calls(), integrity.writable_exec.as_deref()) {
        Ok(v) => TierFitSection {
            configured_denies: if configured == crate::config::UNSANDBOXED {
                Vec::new()
            } else {
                v.denied_by(&configured).map(<[String]>::to_vec).unwrap_or_default()
            },
            configured,
            error: None,
            recorded: v.recorded,
            tightest: v.tightest,
            tighter: v.tighter,
        },
        Err(e @ (FitError::NothingRecorded | FitError::NoTiers)) => {
            unjudged(configured, &e, recorder.order(), integrity.writable_exec.as_deref())
        }
    };
    if left_out > 0 {
        // Past the recorder's bound the verdict would rest on part of what it did.
        section.error = Some(format!(
            "the plugin made more than {} distinct calls; {left_out} were not recorded, so no tier can be vouched for",
            record::MAX_DISTINCT
        ));
    }
    let measure = measured_under(&section, recorder.order(), integrity.writable_exec.is_some());
    Ok((integrity, section, measure))
}

/// The verdict when no syscall can be judged (`error`). Memory writable and executable
/// from exec (`wx`) is known from the binary alone: a configured tier refusing it at start
/// is said to deny it, and the tightest taking it is where the plugin can be measured.
fn unjudged(configured: String, error: &FitError, order: &TierOrder, wx: Option<&str>) -> TierFitSection {
    let wx = wx.filter(|_| order.forbids_writable_exec(&configured));
    TierFitSection {
        configured,
        error: Some(error.to_string()),
        recorded: Vec::new(),
        tightest: wx.and_then(|_| order.tightest_allowing_writable_exec()).map(str::to_owned),
        tighter: Vec::new(),
        configured_denies: wx.map(|what| vec![fit::writable_exec(what)]).unwrap_or_default(),
    }
}

/// The tier the baseline runs under: the plugin's own, unless it is known to deny what the
/// plugin does. Then, with every call judged, the tightest tier that fits. With the fit
/// incomplete (calls left unrecorded, or none recorded and only the binary's W+X memory to
/// go by), the loosest tier proven looser than that fit that takes the binary: a call nobody
/// saw may need more than the tightest fit of those seen allows, and a baseline killed
/// halfway measures nothing. Known denied is known all the same: the plugin's own tier
/// would kill it before anything could be measured.
fn measured_under(fit: &TierFitSection, order: &TierOrder, writable_exec: bool) -> Option<String> {
    if fit.configured_denies.is_empty() {
        return None;
    }
    let fits = fit.tightest.as_ref()?;
    match fit.error {
        None => Some(fits.clone()),
        Some(_) => Some(order.loosest_above(fits, writable_exec)),
    }
}

/// Waits until `name` runs, or fails at once when it cannot run as configured.
async fn running(sup: &Supervisor, name: &str) -> Result<(), SupervisorError> {
    use crate::instance::state::State;
    let p = sup.plugin(name)?;
    let at = Instant::now();
    let ended = p.wait_for(0, &[State::Running, State::Failed], READY_WITHIN).await;
    let all_running = p.instances().iter().all(|i| i.status().state == State::Running);
    if ended && all_running {
        return Ok(());
    }
    Err(SupervisorError::Timeout {
        plugin: name.into(),
        wanted: "running",
        waited: at.elapsed(),
        state: p.describe_state(),
    })
}

fn integrity(sup: &Supervisor, name: &str, contract_pinned: bool) -> Result<Integrity, SupervisorError> {
    let plugin = sup.plugin(name)?;
    let image = plugin.serving().image.lock().ok().and_then(|i| i.clone());
    let signed_version = image.as_ref().and_then(|i| i.signed_version.clone());
    let writable_exec = image.as_ref().and_then(|i| i.writable_exec).map(str::to_owned);
    let status = plugin.instances().first().map(|i| i.status()).unwrap_or_default();
    Ok(Integrity {
        sha256: status.sha256,
        signed_version,
        architecture: crate::integrity::Machine::host().name(),
        writable_exec,
        handshake: true,
        version: status.declared.version,
        sdk_version: status.declared.sdk_version,
        services: status.declared.services,
        contract_pinned,
    })
}

/// Starts `plugin` alone under its own tier and times it; then, when `faults` says whether
/// its burst limits were lowered, injects the faults.
async fn measure(
    config: Config,
    plugin: &str,
    call: Option<&Exercise>,
    count: usize,
    faults: Option<bool>,
    interrupt: &mut Interrupt<'_>,
) -> Result<(Baseline, Vec<verdict::Fault>), OnboardError> {
    let tier = config.specs().first().map(|s| s.tier.clone()).unwrap_or_default();
    interrupt.check()?;
    let started = Instant::now();
    let sup = Supervisor::start(config)
        .await
        .map_err(|source| OnboardError::Supervisor { what: "starting the baseline", source })?;
    let ran = async {
        running(&sup, plugin).await?;
        let ready = started.elapsed();
        tokio::time::sleep(IDLE).await;
        let pid = sup.plugin(plugin)?.instances().first().and_then(|i| i.status().pid);
        let idle_rss_kib = pid.and_then(rss_kib);
        let calls = match call {
            Some(c) => Some(time_calls(&sup, plugin, c, count).await),
            None => None,
        };
        let baseline = Baseline {
            plugin: plugin.to_owned(),
            tier,
            ready_ms: u64::try_from(ready.as_millis()).unwrap_or(u64::MAX),
            idle_rss_kib,
            calls,
        };
        let faults = match faults {
            Some(lowered) => faults::run(&sup, plugin, call, lowered).await?,
            None => Vec::new(),
        };
        Ok::<_, SupervisorError>((baseline, faults))
    };
    let ran = interrupt.first(ran).await;
    sup.shutdown().await;
    ran?.map_err(|source| OnboardError::Supervisor { what: "the baseline", source })
}

async fn time_calls(sup: &Supervisor, plugin: &str, call: &Exercise, count: usize) -> CallTimes {
    let mut took = Vec::with_capacity(count);
    let mut errors = 0;
    let mut first_error = None;
    for _ in 0..count {
        let at = Instant::now();
        let answer = crate::control::call::call_json(sup, plugin, &call.method, &call.json, READY_WITHIN).await;
        took.push(at.elapsed());
        if let Err(status) = answer {
            errors += 1;
            first_error.get_or_insert_with(|| format!("{:?}: {}", status.code(), status.message()));
        }
    }
    CallTimes {
        method: call.method.clone(),
        count,
        errors,
        first_error,
        p50_us: percentile(&mut took, 50),
        p99_us: percentile(&mut took, 99),
    }
}

/// The `p`th percentile (nearest rank) in microseconds; 0 for no samples.
fn percentile(samples: &mut [Duration], p: usize) -> u64 {
    if samples.is_empty() {
        return 0;
    }
    samples.sort_unstable();
    let rank = (samples.len() * p).div_ceil(100).max(1);
    u64::try_from(samples[rank - 1].as_micros()).unwrap_or(u64::MAX)
}

fn rss_kib(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The echo example beside `exe` (`supervisorctl` in a build's target
/// directory has it in `examples/`; an install beside itself).
pub fn echo_beside(exe: &Path) -> Option<PathBuf> {
    let dir = exe.parent()?;
    [dir.join("examples").join("echo"), dir.join("echo")].into_iter().find(|p| p.is_file())
}
