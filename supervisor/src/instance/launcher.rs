//! The seam under the lifecycle: the one narrow interface through which the instance state
//! machine and the restart policy (and reload and rollout after them) reach the kernel.
//! `SandboxLauncher` is the real one: verified images, cgroups, seccomp, Landlock and a
//! forked process. Tests use one that serves an SDK plugin inside the test process over a
//! socketpair, so the lifecycle's logic runs without root (in the manner of youki's
//! `Syscall` trait and containerd's shim trait).

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::error::StartError;
use crate::config::{PluginSpec, QuotaConfig};
use crate::observe::events::EventBus;
use crate::observe::logs::LogBuffer;
use crate::observe::teardown::Verdict;
use crate::sandbox::cgroup;
use crate::sandbox::pidfd::ExitStatus;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A plugin binary verified and ready to run, shared by the instances that run it.
#[derive(Clone)]
pub struct Image {
    /// Hex SHA-256 of what runs.
    pub sha256: String,
    /// The version its signature vouches for, when it is signed.
    pub signed_version: Option<String>,
    /// Memory the kernel maps writable and executable when it runs (an executable
    /// stack, an RWX segment), which a tier forbidding such memory refuses.
    pub writable_exec: Option<&'static str>,
    /// What the launcher that made it needs to run it (the real one's sealed copy of the
    /// file and its Landlock grants); only that launcher looks inside.
    pub payload: Arc<dyn Any + Send + Sync>,
    /// The sealed copy's identity, so that its release can be proven once no revision
    /// uses it (None when the launcher holds no such copy).
    pub held: Option<crate::sandbox::leftovers::held::Held>,
}

impl fmt::Debug for Image {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Image").field("sha256", &self.sha256).field("signed_version", &self.signed_version).finish()
    }
}

/// One instance to bring up.
pub struct LaunchRequest {
    pub spec: Arc<PluginSpec>,
    pub instance: String,
    pub image: Arc<Image>,
    /// The quotas it starts with (the tier's, the config's, the operator's overrides).
    pub quota: QuotaConfig,
    /// Where its output and log records go.
    pub logs: Arc<LogBuffer>,
    /// Where what the launcher alone sees (a seccomp violation) is reported.
    pub events: Arc<EventBus>,
    /// Where its calls over its host channel go, beside its logs.
    pub calls_out: Option<crate::routing::host_calls::Outbound>,
}

/// How an instance is fenced, as status shows it.
#[derive(Clone, Debug, Default)]
pub struct Fencing {
    pub tier: String,
    pub quota: QuotaConfig,
    /// Quotas the host could not enforce.
    pub notes: Vec<String>,
    /// Its cgroup leaf, for sampling and live quota changes.
    pub cgroup: Option<Arc<cgroup::Instance>>,
}

/// A process started for an instance, not yet greeted.
pub struct Launched {
    pub process: Box<dyn Process>,
    /// The supervisor's end of the connection the plugin serves on (its fd 3).
    pub conn: tokio::net::UnixStream,
    pub fencing: Fencing,
}

/// The plugin's other instances still alive when one ends: what the teardown's look at its
/// uid must leave be (they share it, reload surges and replicas alike).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Others {
    /// Instances of the plugin (any revision) with a process.
    pub live: usize,
    /// Those of them that run without a cgroup: their processes cannot be told from
    /// leftovers by where they are.
    pub uncgrouped: usize,
}

/// Asked by a teardown when it searches the plugin's uid (late, so that an instance started
/// meanwhile counts).
pub type OthersNow = Box<dyn Fn() -> Others + Send + Sync>;

/// A started plugin process as the lifecycle handles it. Dropping it without
/// [`Process::clean_up`] kills whatever of it is left.
pub trait Process: Send + Sync {
    fn pid(&self) -> i32;
    /// Becomes `Some` once the process has ended.
    fn exit(&self) -> watch::Receiver<Option<ExitStatus>>;
    /// Kills it and everything it started, now.
    fn kill(&self);
    /// Kills the main process alone: what it left is for the teardown to find, name and
    /// kill (a stop's last resort, a failed start).
    fn kill_main(&self) {
        self.kill();
    }
    /// Asks it to stop (SIGTERM).
    fn terminate(&self);
    /// What sends signals to the main process, through the handle held of it (a pidfd),
    /// never by pid.
    fn signaller(&self) -> super::signal::Signaller;
    /// Why it ended, in the words operators see: a seccomp violation or an OOM kill is
    /// named as such, never as a bare signal.
    fn reason(&self, status: ExitStatus) -> String;
    /// Once it has ended: kills what it left, releases what was held for it, and checks
    /// that nothing of it remains (see [`Others`] for what else may still run as its uid).
    fn clean_up(self: Box<Self>, others: OthersNow) -> BoxFuture<'static, Verdict>;
}

/// Brings plugin processes up and takes the sandbox down.
pub trait Launcher: Send + Sync + fmt::Debug {
    /// The verified image of `spec`'s binary: `cached` again while it is still what the
    /// binary is, else verified afresh.
    fn image(&self, spec: Arc<PluginSpec>, cached: Option<Arc<Image>>)
    -> BoxFuture<'_, Result<Arc<Image>, StartError>>;
    /// Writes the bytes `image` runs to the new file `to`: a rollout keeps its stable
    /// revision's binary so that a restart can bring it back after the file at its path
    /// was rebuilt. False when this launcher holds no bytes (the fake one).
    fn save_image(&self, image: &Image, to: &std::path::Path) -> std::io::Result<bool>;
    /// Starts one instance: fenced, connected, not yet greeted.
    fn launch(&self, req: LaunchRequest) -> BoxFuture<'_, Result<Launched, StartError>>;
    /// The default quotas of `tier`, when the launcher knows it.
    fn tier_quota(&self, tier: &str) -> Option<crate::sandbox::tier::Quota>;
    /// `plugin` was removed for good and its instances have stopped: what the launcher
    /// keeps for it (its cgroup set) goes too.
    fn forget_plugin<'a>(&'a self, plugin: &'a str) -> BoxFuture<'a, ()>;
    /// Takes down what is left of every instance (the supervisor is stopping).
    fn teardown(&self) -> BoxFuture<'_, ()>;
    /// [`Launcher::teardown`] for callers that cannot wait asynchronously, within `limit`.
    fn teardown_blocking(&self, limit: Duration);
}
