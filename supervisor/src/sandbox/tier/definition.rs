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

    /// Whether the tier's filter refuses memory both writable and executable, asked for
    /// either way (`mmap` of a new mapping, `mprotect` of an existing one). A binary the
    /// kernel maps so at exec (an RWX segment, an executable stack) would have such memory
    /// from its first instruction, where the filter sees no call: it is refused under such
    /// a tier ([`crate::integrity::ElfInfo::writable_and_executable`]).
    pub fn forbids_writable_exec(&self) -> bool {
        use super::arch::AUDIT_ARCH_X86_64;
        use super::sim::{SeccompData, allows};
        const SOME_ADDRESS: u64 = 0x7f12_3450_0000;
        let rwx = (libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC) as u64;
        let anonymous = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
        let calls = [
            (libc::SYS_mprotect, [SOME_ADDRESS, 4096, rwx, 0, 0, 0]),
            (libc::SYS_mmap, [0, 4096, rwx, anonymous, u64::MAX, 0]),
        ];
        calls.iter().all(|(nr, args)| {
            let data = SeccompData::new(AUDIT_ARCH_X86_64, *nr as i32, *args);
            // A program that cannot be simulated is not taken to forbid anything.
            allows(self.program.instructions(), &data).is_ok_and(|allowed| !allowed)
        })
    }

    /// Compiles the tier's policy again with another delivery, e.g.
    /// [`Delivery::Direct`] where user notification is unavailable.
    pub fn compile(&self, delivery: Delivery) -> Result<CompiledFilter, TierError> {
        compile(&self.policy, delivery)
    }
}
