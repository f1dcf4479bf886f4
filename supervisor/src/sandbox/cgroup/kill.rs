//! Killing every process in a cgroup so none escapes: `cgroup.kill` where the kernel has it
//! (5.14+, also on the hybrid unified mount), else freeze, SIGKILL every listed pid, thaw,
//! and repeat while new pids show up.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::controller::{Controller, Version};
use super::error::{CgroupError, Result};
use super::fs::{self, CgroupFs};
use super::layout::Layout;
use super::paths::CgroupSet;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KillStrategy {
    /// `cgroup.kill` when present, else `FreezeAndSignal`.
    #[default]
    Auto,
    /// The fallback for kernels without `cgroup.kill`; selectable so hosts that have
    /// `cgroup.kill` can still exercise it.
    FreezeAndSignal,
}

/// Upper bound on listing rounds; more than a few only happen when something keeps forking
/// faster than we list, which a freezer prevents.
const MAX_ROUNDS: u32 = 64;

/// Refuses to go on when this process is in the cgroup: killing it would kill the supervisor.
pub(crate) fn ensure_not_self(fs: &dyn CgroupFs, dir: &Path) -> Result<()> {
    let me = fs.self_pid();
    if fs::procs(fs, dir)?.contains(&me) {
        return Err(CgroupError::ContainsSelf { cgroup: dir.to_path_buf(), pid: me });
    }
    Ok(())
}

/// Sends SIGKILL to the processes of the cgroup. It returns once every remaining process has
/// been signalled; they leave `cgroup.procs` when the kernel has finished them, which
/// `populated()` and `try_remove()` observe.
pub(crate) fn kill(fs: &dyn CgroupFs, layout: &Layout, set: &CgroupSet, strategy: KillStrategy) -> Result<()> {
    for (_, dir) in set.dirs() {
        ensure_not_self(fs, dir)?;
    }
    if strategy == KillStrategy::Auto
        && let Some(dir) = set.unified()
        && fs.exists(&dir.join("cgroup.kill"))
    {
        return fs::write(fs, dir, "cgroup.kill", "1");
    }
    freeze_and_signal(fs, layout, set)
}

struct Freezer<'a> {
    dir: &'a Path,
    file: &'static str,
    frozen: &'static str,
    thawed: &'static str,
}

fn freezer<'a>(fs: &dyn CgroupFs, layout: &Layout, set: &'a CgroupSet) -> Option<Freezer<'a>> {
    let f = match set.for_controller(layout, Controller::Freezer)? {
        (Version::V2, dir) => Freezer { dir, file: "cgroup.freeze", frozen: "1", thawed: "0" },
        (Version::V1, dir) => Freezer { dir, file: "freezer.state", frozen: "FROZEN", thawed: "THAWED" },
    };
    fs.exists(&f.dir.join(f.file)).then_some(f)
}

fn freeze_and_signal(fs: &dyn CgroupFs, layout: &Layout, set: &CgroupSet) -> Result<()> {
    // Frozen tasks cannot fork, and a task with SIGKILL pending cannot complete a fork, so
    // a few listings catch every child even if the freeze has not settled yet. SIGKILL ends
    // a v2-frozen task at once; a v1-frozen one dies on the thaw, before its next instruction.
    let freezer = freezer(fs, layout, set);
    if let Some(f) = &freezer {
        fs::write(fs, f.dir, f.file, f.frozen)?;
    }
    let result = signal_until_only_dying(fs, set);
    let thawed = match &freezer {
        Some(f) => fs::write(fs, f.dir, f.file, f.thawed),
        None => Ok(()),
    };
    result.and(thawed)
}

fn listed<'a>(fs: &dyn CgroupFs, set: &'a CgroupSet) -> Result<BTreeMap<u32, &'a Path>> {
    let mut all = BTreeMap::new();
    for (_, dir) in set.dirs() {
        for pid in fs::procs(fs, dir)? {
            all.entry(pid).or_insert(dir);
        }
    }
    Ok(all)
}

fn signal_until_only_dying(fs: &dyn CgroupFs, set: &CgroupSet) -> Result<()> {
    // A pid signalled earlier that is still listed is dying (or v1-frozen until the thaw);
    // only pids never seen before mean something forked past us.
    let mut signalled = BTreeSet::new();
    for _ in 0..MAX_ROUNDS {
        let pids = listed(fs, set)?;
        if pids.keys().all(|p| signalled.contains(p)) {
            return Ok(());
        }
        for (pid, dir) in pids {
            signal(fs, dir, pid)?;
            signalled.insert(pid);
        }
        std::thread::yield_now();
    }
    let fresh: Vec<(u32, &Path)> = listed(fs, set)?.into_iter().filter(|(p, _)| !signalled.contains(p)).collect();
    match fresh.first() {
        None => Ok(()),
        Some((_, dir)) => Err(CgroupError::KillIncomplete {
            cgroup: dir.to_path_buf(),
            pids: fresh.iter().map(|(p, _)| *p).collect(),
            rounds: MAX_ROUNDS,
        }),
    }
}

fn signal(fs: &dyn CgroupFs, dir: &Path, pid: u32) -> Result<()> {
    fs.kill(pid).map_err(|source| CgroupError::Signal { cgroup: dir.to_path_buf(), pid, source })
}

/// One pass of SIGKILL over the pids listed in `dir` (for sweeping stale cgroups, where the
/// caller polls anyway).
pub(crate) fn signal_listed(fs: &dyn CgroupFs, dir: &Path) -> Result<()> {
    for pid in fs::procs(fs, dir)? {
        signal(fs, dir, pid)?;
    }
    Ok(())
}
