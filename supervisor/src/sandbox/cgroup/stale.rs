//! Start-up sweep: after a crash the next start kills and removes whatever the previous run
//! left beneath the subtree root, in every hierarchy, before building a fresh subtree.

use std::path::{Path, PathBuf};

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
    cleanup_stale_keeping(fs, root, &[])
}

/// [`cleanup_stale`], except that the directories in `keep` (`root`'s, whose locks say who
/// owns the subtree) are emptied but not removed.
pub(crate) fn cleanup_stale_keeping(fs: &dyn CgroupFs, root: &CgroupSet, keep: &[PathBuf]) -> Result<Removal> {
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
        let removal = if keep.iter().any(|k| k == top) { remove_children(fs, top)? } else { try_remove_tree(fs, top)? };
        if let pending @ Removal::Pending { .. } = removal {
            outcome = pending;
        }
    }
    Ok(outcome)
}

/// Removes every cgroup below `dir`, keeping `dir`.
fn remove_children(fs: &dyn CgroupFs, dir: &Path) -> Result<Removal> {
    for child in fs::child_dirs(fs, dir)? {
        if let pending @ Removal::Pending { .. } = try_remove_tree(fs, &dir.join(child))? {
            return Ok(pending);
        }
    }
    Ok(Removal::Removed)
}
