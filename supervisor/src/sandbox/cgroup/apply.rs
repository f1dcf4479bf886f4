//! Writing `Limits` into a cgroup and reading them back, on whichever hierarchy gives each
//! controller.

use std::path::Path;

use super::controller::{Controller, Version};
use super::error::{CgroupError, Result};
use super::fs::{self, CgroupFs};
use super::layout::Layout;
use super::limits::{FileWrite, Limits, cpu_writes, memory_writes, pids_writes};
use super::parse;
use super::paths::CgroupSet;

/// Fails, naming the controller, when a set quota cannot be enforced on this host.
pub(crate) fn check_available(layout: &Layout, limits: &Limits) -> Result<()> {
    match limits.requested().into_iter().find(|(c, _)| layout.source(*c).is_none()) {
        Some((controller, quota)) => Err(CgroupError::ControllerUnavailable { controller, quota }),
        None => Ok(()),
    }
}

fn run(fs: &dyn CgroupFs, dir: &Path, writes: Vec<FileWrite>) -> Result<()> {
    for fw in writes {
        if fw.optional && !fs.exists(&dir.join(fw.file)) {
            continue;
        }
        fs::write(fs, dir, fw.file, &fw.value)?;
    }
    Ok(())
}

/// Applies every quota the host can enforce; unset quotas are lifted. A write the kernel
/// refuses (EBUSY for a v1 memory limit below what the group uses, say) puts back what was
/// in force before, so a refused change never leaves half of itself behind.
pub(crate) fn apply(fs: &dyn CgroupFs, layout: &Layout, set: &CgroupSet, limits: &Limits) -> Result<()> {
    limits.validate()?;
    check_available(layout, limits)?;
    let before = read_back(fs, layout, set);
    let result = write_all(fs, layout, set, limits);
    if let (Err(refused), Ok(before)) = (&result, before)
        && before != *limits
        && let Err(e) = write_all(fs, layout, set, &before)
    {
        tracing::warn!(cgroup = ?set, error = %e, refused = %refused, "cannot put the previous limits back");
    }
    result
}

fn write_all(fs: &dyn CgroupFs, layout: &Layout, set: &CgroupSet, limits: &Limits) -> Result<()> {
    if let Some((version, dir)) = set.for_controller(layout, Controller::Memory) {
        let current = match version {
            Version::V1 => fs::parsed(fs, dir, "memory.limit_in_bytes", parse::v1_limit)?,
            Version::V2 => None,
        };
        run(fs, dir, memory_writes(version, limits, current))?;
    }
    if let Some((version, dir)) = set.for_controller(layout, Controller::Cpu) {
        run(fs, dir, cpu_writes(version, limits))?;
    }
    if let Some((_, dir)) = set.for_controller(layout, Controller::Pids) {
        run(fs, dir, pids_writes(limits))?;
    }
    Ok(())
}

/// The quotas in force, as the kernel reports them (v1 memory values are page-rounded).
pub(crate) fn read_back(fs: &dyn CgroupFs, layout: &Layout, set: &CgroupSet) -> Result<Limits> {
    let mut l = Limits::default();
    match set.for_controller(layout, Controller::Memory) {
        Some((Version::V2, dir)) => {
            l.memory_max = fs::parsed(fs, dir, "memory.max", parse::max_or_u64)?;
            l.memory_high = fs::parsed(fs, dir, "memory.high", parse::max_or_u64)?;
        }
        Some((Version::V1, dir)) => {
            l.memory_max = fs::parsed(fs, dir, "memory.limit_in_bytes", parse::v1_limit)?;
            l.memory_high = fs::parsed(fs, dir, "memory.soft_limit_in_bytes", parse::v1_limit)?;
        }
        None => {}
    }
    match set.for_controller(layout, Controller::Cpu) {
        Some((Version::V2, dir)) => l.cpu_max = fs::parsed(fs, dir, "cpu.max", parse::cpu_max)?,
        Some((Version::V1, dir)) => {
            let quota = fs::parsed(fs, dir, "cpu.cfs_quota_us", parse::v1_limit)?;
            let period = fs::parsed(fs, dir, "cpu.cfs_period_us", parse::u64_value)?;
            l.cpu_max = quota.map(|q| (q, period));
        }
        None => {}
    }
    if let Some((_, dir)) = set.for_controller(layout, Controller::Pids) {
        l.pids_max = fs::parsed(fs, dir, "pids.max", parse::max_or_u64)?;
    }
    Ok(l)
}
