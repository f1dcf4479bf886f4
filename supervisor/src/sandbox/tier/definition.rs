//! One tier, assembled from its tier file and its seccomp policy.

use std::path::{Path, PathBuf};

use super::compile::{Delivery, compile};
use super::error::TierError;
use super::file::TierFile;
use super::filter::CompiledFilter;
use super::policy::SeccompPolicy;
use super::quota::Quota;
use super::required::check_required;
use super::settings::{Landlock, Limits, Namespaces};
use super::violation::ViolationAction;

/// A loaded, compiled and checked tier.
#[derive(Clone, Debug)]
pub struct Tier {
    /// The name plugins' configs use, e.g. `L2`.
    pub name: String,
    /// What the tier is for, for `status` and `doctor`.
    pub description: String,
    /// The tier file it was loaded from.
    pub path: PathBuf,
    /// The tier it was checked to be strictly tighter than.
    pub tighter_than: Option<String>,
    /// Landlock settings.
    pub landlock: Landlock,
    /// Namespaces the plugin starts in.
    pub namespaces: Namespaces,
    /// Default cgroup limits.
    pub quota: Quota,
    /// Resource limits.
    pub limits: Limits,
    /// The filter to install, violations delivered as user notifications.
    pub program: CompiledFilter,
    /// What the supervisor does on a notified violation.
    pub violation: ViolationAction,
    /// The seccomp policy as read, for comparisons and explanations.
    pub policy: SeccompPolicy,
}

impl Tier {
    /// Loads the tier file at `path` and the policy it names, compiles the
    /// policy and checks it allows the spawn sequence. Whether it is
    /// tighter than its `tighter_than` tier is checked by the tier set.
    pub fn load(path: &Path) -> Result<Self, TierError> {
        let file = TierFile::read(path)?;
        let policy = SeccompPolicy::read(&file.seccomp_path(path))?;
        let program = compile(&policy, Delivery::Notify)?;
        check_required(&file.name, &policy, &program)?;
        Ok(Self {
            name: file.name,
            description: file.description,
            path: path.to_owned(),
            tighter_than: file.tighter_than,
            landlock: file.landlock,
            namespaces: file.namespaces,
            quota: file.quota,
            limits: file.limits,
            program,
            violation: policy.violation(),
            policy,
        })
    }

    /// Compiles the tier's policy again with another delivery, e.g.
    /// [`Delivery::Direct`] where user notification is unavailable.
    pub fn compile(&self, delivery: Delivery) -> Result<CompiledFilter, TierError> {
        compile(&self.policy, delivery)
    }
}
