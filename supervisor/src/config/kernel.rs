//! What the kernel and the cgroup filesystem will take, checked with the rest
//! of the config (so `check-config` and the daemon agree, and nothing is
//! refused only once it runs): plugin names as cgroup directory names,
//! quotas within the kernel's ranges, the subtree's name and parent.

use super::load::{Problems, Seg};
use super::{Config, QuotaConfig};
use crate::sandbox::cgroup;
use crate::sandbox::tier::Quota;

/// Why a plugin name cannot be a cgroup directory (`cgroup.procs`,
/// `memory.max` would collide with control files).
pub(super) fn cgroup_name_problem(name: &str) -> Option<String> {
    cgroup::validate_name("plugin", name).err().map(|e| e.to_string())
}

/// Checks `[supervisor.cgroup]`: the daemon builds `<parent>/<name>` in every
/// hierarchy, so `name` must be one plain directory name and `parent` a
/// cgroup path that stays inside the cgroup filesystem.
pub(super) fn check_cgroup_section(config: &Config, p: &mut Problems<'_>) {
    let c = &config.supervisor.cgroup;
    if let Err(e) = cgroup::validate_name("subtree", &c.name) {
        p.at(&[Seg::Key("supervisor"), Seg::Key("cgroup"), Seg::Key("name")], e.to_string());
    }
    if let Some(parent) = &c.parent
        && let Err(e) = cgroup::validate_parent(parent)
    {
        p.at(&[Seg::Key("supervisor"), Seg::Key("cgroup"), Seg::Key("parent")], e.to_string());
    }
}

/// The quotas a plugin's instances get (the tier's, overridden by the
/// config's) must be ones the kernel accepts; else every start would fail.
pub(super) fn quota_problem(tier: Option<&Quota>, q: &QuotaConfig) -> Option<String> {
    let own = crate::sandbox::quota::limits(q);
    if let Err(e) = own.validate() {
        return Some(e.to_string());
    }
    let effective = crate::sandbox::quota::effective(tier, q, &QuotaConfig::default());
    crate::sandbox::quota::limits(&effective).validate().err().map(|e| format!("with the tier's defaults: {e}"))
}
