//! Start-up sweep: after a crash the next start kills and removes whatever the previous run
//! left beneath the subtree root, in every hierarchy, before building a fresh subtree.

use super::error::Result;
use super::fs::{self, CgroupFs};
use super::kill::{ensure_not_self, signal_listed};
use super::layout::HierarchyId;
use super::paths::CgroupSet;
use super::remove::{Removal, try_remove_tree, walk};

/// Kills every process below `root` and removes its cgroups, deepest first. Returns
/// `Pending` while killed processes are still exiting: call it again (each call kills again,
/// which also catches anything that forked in between). Refuses (`ContainsSelf`) when this
/// process sits in that tree, rather than killing the supervisor.
pub fn cleanup_stale(fs: &dyn CgroupFs, root: &CgroupSet) -> Result<Removal> {
    let mut trees = Vec::new();
    for (id, dir) in root.dirs() {
        let dirs = walk(fs, dir)?;
        for d in &dirs {
            ensure_not_self(fs, d)?;
        }
        trees.push((id, dir, dirs));
    }
    for (id, top, dirs) in &trees {
        let recursive_kill = *id == HierarchyId::Unified && fs.exists(&top.join("cgroup.kill"));
        if recursive_kill {
            fs::write(fs, top, "cgroup.kill", "1")?;
        } else {
            for d in dirs {
                signal_listed(fs, d)?;
            }
        }
    }
    let mut outcome = Removal::Removed;
    for (_, top, _) in &trees {
        if let pending @ Removal::Pending { .. } = try_remove_tree(fs, top)? {
            outcome = pending;
        }
    }
    Ok(outcome)
}
