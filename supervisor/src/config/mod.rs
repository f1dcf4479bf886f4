//! The supervisor's configuration: what operators write in TOML, checked
//! whole before anything runs.

pub(crate) mod call_graph;
pub mod changes;
mod data_dir;
pub mod gateway;
mod kernel;
pub mod leaks;
mod load;
pub mod protection;
pub mod rollout;
pub mod units;
mod users;
mod validate;

use std::path::PathBuf;
use std::time::Duration;

use std::sync::Arc;

use serde::Deserialize;

use crate::integrity::{PublicKey, Sha256Digest};
pub use load::{ConfigError, MAX_CONFIG_BYTES, MAX_PLUGINS, MAX_PROBLEMS, MAX_REPLICAS, Problem, fuzz_one, parse};
use units::Mode;
pub use validate::{MAX_EVENT_HISTORY, MAX_LOG_LINES, name_problem, shown_name};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub supervisor: SupervisorSection,
    #[serde(default, rename = "plugin")]
    pub plugins: Vec<PluginConfig>,
    /// Where the config was read from; relative paths in it resolve against
    /// this file's directory.
    #[serde(skip)]
    pub source: Option<PathBuf>,
    /// Filled by validation.
    #[serde(skip)]
    specs: Vec<PluginSpec>,
    /// The tiers, loaded by validation when a plugin is sandboxed.
    #[serde(skip)]
    tiers: Option<Arc<crate::sandbox::tier::TierSet>>,
    /// The text it was read from.
    #[serde(skip)]
    pub(crate) text: Origin,
}

/// The config file and text a plugin entry was read from: a rollout that a restart
/// interrupts brings its stable revision back from it (the file may hold the canary's
/// entry by then). Printed as its length; compared by nothing.
#[derive(Clone, Default)]
pub struct Origin(pub Option<Arc<(PathBuf, String)>>);

impl Origin {
    pub fn path(&self) -> Option<&std::path::Path> {
        self.0.as_ref().map(|o| o.0.as_path())
    }

    pub fn text(&self) -> Option<&str> {
        self.0.as_ref().map(|o| o.1.as_str())
    }
}

impl std::fmt::Debug for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Origin({} bytes)", self.text().map_or(0, str::len))
    }
}

/// The `[supervisor]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisorSection {
    /// Holds `control.sock` and `gateway.sock`.
    #[serde(default = "default_runtime_dir")]
    pub runtime_dir: PathBuf,
    /// Mode of `control.sock`; the peer's uid is checked as well.
    #[serde(default = "default_control_mode")]
    pub control_socket_mode: Mode,
    /// Mode of `gateway.sock`, which host applications connect to.
    #[serde(default = "default_gateway_mode")]
    pub gateway_socket_mode: Mode,
    /// Uids allowed on the control socket besides root and the supervisor's own.
    #[serde(default)]
    pub control_allowed_uids: Vec<u32>,
    /// Where Prometheus scrapes `GET /metrics` (e.g. "127.0.0.1:9464");
    /// unset, metrics are only on the control socket (`supervisorctl metrics`).
    #[serde(default)]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Lines of stdout, stderr and SDK logs kept per plugin for `tail`.
    #[serde(default = "default_log_lines")]
    pub log_lines: usize,
    /// Lifecycle events kept for `events`.
    #[serde(default = "default_event_history")]
    pub event_history: usize,
    /// How long a rise of the supervisor's own memory, descriptors or threads must last to
    /// be reported as a leak (the plugins' thresholds apply).
    #[serde(default = "leaks::default_supervisor_window", with = "units::duration")]
    pub leak_window: Duration,
    #[serde(default)]
    pub defaults: PluginDefaults,
    /// Public keys (`ed25519:<hex>`) whose signatures are accepted.
    #[serde(default)]
    pub trusted_keys: Vec<String>,
    /// Every plugin must carry a signature by a trusted key.
    #[serde(default)]
    pub require_signatures: bool,
    /// Plugins in these tiers must carry a signature by a trusted key.
    #[serde(default)]
    pub require_signatures_for_tiers: Vec<String>,
    /// Where the tier files (`L1.toml`, `L1.seccomp.json`, ...) are.
    #[serde(default = "default_policies_dir")]
    pub policies_dir: PathBuf,
    /// Where desired state changed at run time (quotas) is kept.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    #[serde(default)]
    pub cgroup: CgroupSection,
    #[serde(default)]
    pub sandbox: SandboxSection,
    #[serde(default)]
    pub gateway: gateway::GatewaySection,
}

impl Default for SupervisorSection {
    fn default() -> Self {
        Self {
            runtime_dir: default_runtime_dir(),
            control_socket_mode: default_control_mode(),
            gateway_socket_mode: default_gateway_mode(),
            control_allowed_uids: Vec::new(),
            metrics_listen: None,
            log_lines: default_log_lines(),
            event_history: default_event_history(),
            leak_window: leaks::default_supervisor_window(),
            defaults: PluginDefaults::default(),
            trusted_keys: Vec::new(),
            require_signatures: false,
            require_signatures_for_tiers: Vec::new(),
            policies_dir: default_policies_dir(),
            state_dir: default_state_dir(),
            cgroup: CgroupSection::default(),
            sandbox: SandboxSection::default(),
            gateway: gateway::GatewaySection::default(),
        }
    }
}

fn default_policies_dir() -> PathBuf {
    PathBuf::from("/etc/plugin-supervisor/policies")
}
fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/plugin-supervisor")
}

/// `[supervisor.cgroup]`: where the delegated subtree goes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CgroupSection {
    /// The subtree's directory name beneath the parent.
    #[serde(default = "default_cgroup_name")]
    pub name: String,
    /// The parent cgroup (a path within each hierarchy); default: the cgroup
    /// the supervisor was started in.
    pub parent: Option<PathBuf>,
    /// Move the daemon into the subtree's `supervisor` leaf (needed on pure
    /// cgroup v2 to enable controllers for the plugins).
    #[serde(default = "default_true")]
    pub move_self: bool,
}

impl Default for CgroupSection {
    fn default() -> Self {
        Self { name: default_cgroup_name(), parent: None, move_self: true }
    }
}

fn default_cgroup_name() -> String {
    "plugin-supervisor".into()
}

/// `[supervisor.sandbox]`: supervisor-wide sandbox settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxSection {
    /// Uids (and gids) handed to plugins without a `user`: each plugin gets
    /// its own, derived from its name, so plugins cannot signal each other.
    #[serde(default = "default_uid_range")]
    pub uid_range: [u32; 2],
    /// Permit `tier = "none"` (no sandbox at all): for development and
    /// benchmarks only.
    #[serde(default)]
    pub allow_unsandboxed: bool,
}

impl Default for SandboxSection {
    fn default() -> Self {
        Self { uid_range: default_uid_range(), allow_unsandboxed: false }
    }
}

/// systemd's range for dynamic users: not used by ordinary accounts.
fn default_uid_range() -> [u32; 2] {
    [61184, 65519]
}

/// The standard runtime directory; `supervisorctl` looks here by default.
pub const DEFAULT_RUNTIME_DIR: &str = "/run/plugin-supervisor";

fn default_runtime_dir() -> PathBuf {
    PathBuf::from(DEFAULT_RUNTIME_DIR)
}
fn default_control_mode() -> Mode {
    Mode(0o600)
}
fn default_gateway_mode() -> Mode {
    Mode(0o660)
}
fn default_log_lines() -> usize {
    2000
}
fn default_event_history() -> usize {
    1000
}

/// `[supervisor.defaults]`: what a plugin entry gets when it says nothing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginDefaults {
    #[serde(default = "default_handshake_timeout", with = "units::duration")]
    pub handshake_timeout: Duration,
    #[serde(default = "default_call_timeout", with = "units::duration")]
    pub call_timeout: Duration,
    /// How long a stopping plugin may drain before it is killed.
    #[serde(default = "default_stop_timeout", with = "units::duration")]
    pub stop_timeout: Duration,
    #[serde(default)]
    pub restart: RestartPolicy,
    #[serde(default)]
    pub backoff: Backoff,
    /// The tier a plugin runs in unless it names one.
    #[serde(default = "default_tier")]
    pub tier: String,
}

fn default_tier() -> String {
    "L1".into()
}

impl Default for PluginDefaults {
    fn default() -> Self {
        Self {
            tier: default_tier(),
            handshake_timeout: default_handshake_timeout(),
            call_timeout: default_call_timeout(),
            stop_timeout: default_stop_timeout(),
            restart: RestartPolicy::default(),
            backoff: Backoff::default(),
        }
    }
}

fn default_handshake_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_call_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_stop_timeout() -> Duration {
    Duration::from_secs(5)
}

/// When an instance that ended is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Whenever it ends, even cleanly.
    Always,
    /// When it crashes, is killed, or exits non-zero.
    #[default]
    OnFailure,
    /// Never; the instance stays stopped or failed.
    Never,
}

/// Exponential backoff between restarts, with jitter and a cap.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    #[serde(default = "default_backoff_initial", with = "units::duration")]
    pub initial: Duration,
    #[serde(default = "default_backoff_max", with = "units::duration")]
    pub max: Duration,
    #[serde(default = "default_backoff_multiplier")]
    pub multiplier: f64,
    /// Fraction of the delay randomised either way, 0 to 1.
    #[serde(default = "default_backoff_jitter")]
    pub jitter: f64,
    /// An instance that ran this long resets the backoff to `initial`.
    #[serde(default = "default_backoff_reset", with = "units::duration")]
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: default_backoff_initial(),
            max: default_backoff_max(),
            multiplier: default_backoff_multiplier(),
            jitter: default_backoff_jitter(),
            reset_after: default_backoff_reset(),
        }
    }
}

fn default_backoff_initial() -> Duration {
    Duration::from_millis(200)
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(30)
}
fn default_backoff_multiplier() -> f64 {
    2.0
}
fn default_backoff_jitter() -> f64 {
    0.2
}
fn default_backoff_reset() -> Duration {
    Duration::from_secs(60)
}

/// One `[[plugin]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Must equal the name the plugin declares at handshake.
    pub name: String,
    /// Path to the plugin executable, relative to the config file's directory.
    pub binary: PathBuf,
    #[serde(default)]
    pub args: Vec<String>,
    /// Names of the supervisor's environment variables passed through; the
    /// rest of the environment is cleared.
    #[serde(default)]
    pub env: Vec<String>,
    /// Handed to the plugin at init, as JSON.
    #[serde(default)]
    pub config: toml::Table,
    #[serde(default = "default_replicas")]
    pub replicas: u32,
    /// Start with the supervisor; otherwise wait for `supervisorctl start`.
    #[serde(default = "default_true")]
    pub autostart: bool,
    pub restart: Option<RestartPolicy>,
    pub backoff: Option<Backoff>,
    #[serde(default, with = "units::duration::option")]
    pub handshake_timeout: Option<Duration>,
    #[serde(default, with = "units::duration::option")]
    pub call_timeout: Option<Duration>,
    #[serde(default, with = "units::duration::option")]
    pub stop_timeout: Option<Duration>,
    /// Pins the binary: its SHA-256 must be this (hex).
    pub sha256: Option<String>,
    /// A semver range the plugin's declared version must match, e.g. ">=1.2, <2".
    pub version: Option<String>,
    /// Pins the contract: `.proto` files or encoded descriptor sets of the
    /// services the plugin must serve; a breaking change refuses it.
    #[serde(default)]
    pub contract: Vec<PathBuf>,
    /// Extra import directories for the `.proto` files in `contract`.
    #[serde(default)]
    pub contract_includes: Vec<PathBuf>,
    /// This plugin must carry a signature by a trusted key.
    pub require_signature: Option<bool>,
    /// The sandbox tier (a tier file in `policies_dir`), or "none".
    pub tier: Option<String>,
    /// Quotas overriding the tier's defaults.
    #[serde(default)]
    pub quota: QuotaConfig,
    /// Run as this account (name), instead of a dedicated dynamic uid.
    pub user: Option<String>,
    /// Run as this uid (and `gid`), instead of a dedicated dynamic uid.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// A directory the plugin may read and write (created, owned by its uid).
    pub data_dir: Option<PathBuf>,
    /// Refuse to start unless Landlock enforces every rule (overrides the tier).
    pub landlock_required: Option<bool>,
    /// A network namespace of its own even where the tier gives none: the
    /// host's abstract unix sockets are then out of its reach on any kernel.
    #[serde(default)]
    pub network_namespace: bool,
    /// How a change to this plugin reaches its callers.
    #[serde(default)]
    pub rollout: rollout::RolloutConfig,
    /// How its instances are watched for leaks.
    #[serde(default)]
    pub leaks: leaks::LeaksConfig,
    /// Lines of output (stdout, stderr and SDK records together) kept per second, on
    /// average, across the plugin's instances; the rest are dropped and counted.
    pub log_rate: Option<u32>,
    /// Lines kept at once after a quiet time.
    pub log_burst: Option<u32>,
    /// Who may call it through the gateway (`uid:USER`, `gid:GROUP`, `plugin:NAME`);
    /// absent: whoever can open `gateway.sock`.
    pub callers: Option<Vec<String>>,
    /// The plugins it may call through its host channel (fd 4), by name; the called
    /// plugin's own `callers` and limits apply as well. Absent: none.
    #[serde(default)]
    pub calls: Vec<String>,
    /// The name the binary declares at handshake, when the entry is named otherwise
    /// (one binary configured under several names); absent: `name`.
    pub declared_name: Option<String>,
    /// The only services it may declare at handshake (protobuf full names): one
    /// declaring another is refused, so it cannot make itself a candidate for calls
    /// to a service another plugin serves. Absent: any.
    pub services: Option<Vec<String>>,
    /// Calls one instance works on at once; more wait in a queue of `max_queued`, and
    /// beyond that are shed with RESOURCE_EXHAUSTED.
    pub max_in_flight: Option<u32>,
    pub max_queued: Option<u32>,
    /// The largest gRPC message a caller may send, and a plugin may answer.
    pub max_request_bytes: Option<units::ByteSize>,
    pub max_response_bytes: Option<units::ByteSize>,
    /// When calls stop going to a plugin that keeps failing.
    #[serde(default)]
    pub breaker: protection::BreakerConfig,
}

/// `[plugin.quota]`: each value overrides the tier's default.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_max: Option<units::ByteSize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_high: Option<units::ByteSize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<units::CpuShare>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids_max: Option<u64>,
    /// Start even where the host cannot enforce a quota (status says which).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
}

fn default_replicas() -> u32 {
    1
}
fn default_true() -> bool {
    true
}

/// A plugin entry with the defaults applied and paths resolved.
#[derive(Debug, Clone)]
pub struct PluginSpec {
    pub name: String,
    pub binary: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub config_json: String,
    pub replicas: u32,
    pub autostart: bool,
    pub restart: RestartPolicy,
    pub backoff: Backoff,
    pub handshake_timeout: Duration,
    pub call_timeout: Duration,
    pub stop_timeout: Duration,
    /// What must be true of the binary before it runs.
    pub integrity: IntegritySpec,
    pub version_req: Option<semver::VersionReq>,
    /// The pinned contract, compiled when the config was loaded.
    pub contract: Option<Arc<prost_types::FileDescriptorSet>>,
    /// The tier name; "none" runs unsandboxed.
    pub tier: String,
    pub quota: QuotaConfig,
    /// (uid, gid) the plugin runs as.
    pub ids: (u32, u32),
    /// The uid was configured (`user` or `uid`) rather than given from `uid_range`: the host
    /// may use it too, so what else runs or is kept under it is not the plugin's.
    pub uid_shared: bool,
    pub data_dir: Option<PathBuf>,
    pub landlock_required: Option<bool>,
    /// A network namespace of its own, whatever the tier says.
    pub network_namespace: bool,
    pub rollout: rollout::RolloutConfig,
    pub leaks: leaks::LeaksConfig,
    /// `log_rate` and `log_burst`.
    pub log_limit: crate::observe::limit::LogLimit,
    /// Who may call it through the gateway, resolved; None: anyone who can open the socket.
    pub callers: Option<crate::routing::callers::Callers>,
    /// The plugins it may call through its host channel.
    pub calls: Vec<String>,
    /// The name its binary must declare at handshake (`declared_name`, else `name`).
    pub declared_name: String,
    /// The only services it may declare (`services`); None: any.
    pub services: Option<Vec<String>>,
    /// The limits and the circuit breaker of the routing stack.
    pub protection: protection::Protection,
    /// The config text the entry was read from.
    pub origin: Origin,
}

/// The tier name that means "no sandbox" (development only).
pub const UNSANDBOXED: &str = "none";

/// The binary checks for one plugin.
#[derive(Debug, Clone, Default)]
pub struct IntegritySpec {
    pub sha256: Option<Sha256Digest>,
    pub require_signature: bool,
    pub trusted_keys: Arc<Vec<PublicKey>>,
}

impl Config {
    /// The plugin entries with defaults applied, paths resolved and pins
    /// parsed (a loaded config has passed validation, so they parse).
    pub fn specs(&self) -> Vec<PluginSpec> {
        self.specs.clone()
    }

    /// Resolves a path from the config against the config file's directory.
    pub fn resolve(&self, p: &std::path::Path) -> PathBuf {
        match self.source.as_ref().and_then(|s| s.parent()) {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p.to_path_buf(),
        }
    }
}

pub(crate) fn toml_to_json(t: &toml::Table) -> serde_json::Value {
    fn value(v: &toml::Value) -> serde_json::Value {
        match v {
            toml::Value::String(s) => s.clone().into(),
            toml::Value::Integer(i) => (*i).into(),
            toml::Value::Float(f) => serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, Into::into),
            toml::Value::Boolean(b) => (*b).into(),
            toml::Value::Datetime(d) => d.to_string().into(),
            toml::Value::Array(a) => a.iter().map(value).collect(),
            toml::Value::Table(t) => toml_to_json(t),
        }
    }
    serde_json::Value::Object(t.iter().map(|(k, v)| (k.clone(), value(v))).collect::<serde_json::Map<_, _>>())
}

impl Config {
    pub(crate) fn set_origin(&mut self, path: PathBuf, text: &str) {
        self.text = Origin(Some(Arc::new((path, text.to_owned()))));
    }

    pub(crate) fn set_checked(&mut self, specs: Vec<PluginSpec>, tiers: Option<Arc<crate::sandbox::tier::TierSet>>) {
        self.specs = specs;
        self.tiers = tiers;
    }

    /// The loaded tiers (None when no plugin is sandboxed).
    pub fn tiers(&self) -> Option<&Arc<crate::sandbox::tier::TierSet>> {
        self.tiers.as_ref()
    }
}
