//! Removing cgroups once they are empty, as a poll: nothing here sleeps or waits, a busy
//! cgroup is reported `Pending` and the caller retries on its own schedule.

use std::io;
use std::path::{Path, PathBuf};

use super::error::{CgroupError, Result};
use super::fs::{self, CgroupFs};
use super::paths::CgroupSet;

#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub enum Removal {
    Removed,
    /// The cgroup still has processes (dying ones included) or children; try again later.
    Pending {
        cgroup: PathBuf,
    },
}

impl Removal {
    pub fn is_removed(&self) -> bool {
        matches!(self, Removal::Removed)
    }
}

fn try_rmdir(fs: &dyn CgroupFs, dir: &Path) -> Result<Removal> {
    match fs.rmdir(dir) {
        Ok(()) => Ok(Removal::Removed),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Removal::Removed),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::ENOTEMPTY)) => {
            Ok(Removal::Pending { cgroup: dir.to_path_buf() })
        }
        Err(source) => Err(CgroupError::Rmdir { cgroup: dir.to_path_buf(), source }),
    }
}

/// Removes one cgroup (a leaf) in every hierarchy; already-removed directories count as done.
pub(crate) fn try_remove_set(fs: &dyn CgroupFs, set: &CgroupSet) -> Result<Removal> {
    let mut outcome = Removal::Removed;
    for (_, dir) in set.dirs() {
        if let pending @ Removal::Pending { .. } = try_rmdir(fs, dir)? {
            outcome = pending;
        }
    }
    Ok(outcome)
}

/// Removes `dir` and every cgroup below it, deepest first.
pub(crate) fn try_remove_tree(fs: &dyn CgroupFs, dir: &Path) -> Result<Removal> {
    if !fs.exists(dir) {
        return Ok(Removal::Removed);
    }
    for child in fs::child_dirs(fs, dir)? {
        if let pending @ Removal::Pending { .. } = try_remove_tree(fs, &dir.join(child))? {
            return Ok(pending);
        }
    }
    try_rmdir(fs, dir)
}

/// Every cgroup directory from `dir` down, parents before children.
pub(crate) fn walk(fs: &dyn CgroupFs, dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if !fs.exists(dir) {
        return Ok(out);
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for child in fs::child_dirs(fs, &d)?.into_iter().rev() {
            stack.push(d.join(child));
        }
        out.push(d);
    }
    Ok(out)
}
