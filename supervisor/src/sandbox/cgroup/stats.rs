//! Usage and event counters of one cgroup (`Stats`) and whether it still holds processes.

use super::controller::{Controller, Version};
use super::error::Result;
use super::fs::{self, CgroupFs};
use super::layout::Layout;
use super::parse;
use super::paths::CgroupSet;

/// Counters for `status` and events. A field is `None` when this host has no source for it
/// (controller not available, or a kernel too old for the file or key), never a made-up 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes; v2 `memory.current`, v1 `memory.usage_in_bytes`.
    pub memory_current: Option<u64>,
    /// Bytes; v2 `memory.peak` (kernel 5.19+), v1 `memory.max_usage_in_bytes`.
    pub memory_peak: Option<u64>,
    /// Bytes the kernel cannot reclaim without swap: anonymous memory (heap, stacks) and
    /// shared memory (tmpfs files, `/dev/shm`, memfds, SysV segments), which fill the
    /// cgroup toward `memory_max` alike. Not the page cache, which the kernel reclaims and
    /// which only says what files were read. v2 `memory.stat` `anon` + `shmem`, v1
    /// `memory.stat` `total_rss` + `total_shmem` (the cgroup and below), else `rss` +
    /// `shmem`; a kernel without the shmem key counts anon alone. What a leak grows.
    pub memory_held: Option<u64>,
    /// Microseconds; unified `cpu.stat` `usage_usec` (present even without the cpu
    /// controller), else v1 `cpuacct.usage`.
    pub cpu_usage_usec: Option<u64>,
    pub cpu_nr_throttled: Option<u64>,
    /// Microseconds; v2 `throttled_usec`, v1 `throttled_time` (ns) / 1000.
    pub cpu_throttled_usec: Option<u64>,
    pub pids_current: Option<u64>,
    /// OOM kills inside the cgroup: v2 `memory.events` / v1 `memory.oom_control` `oom_kill`.
    pub oom_kills: Option<u64>,
    /// Forks refused by `pids.max` (`pids.events` `max`).
    pub pids_max_hits: Option<u64>,
}

/// `anon` + `shmem` of a `memory.stat`, by those keys' names; None without `anon`.
fn held(text: &str, anon: &str, shmem: &str) -> std::result::Result<Option<u64>, &'static str> {
    let Some(anon) = parse::keyed(text, anon)? else { return Ok(None) };
    Ok(Some(anon.saturating_add(parse::keyed(text, shmem)?.unwrap_or(0))))
}

pub(crate) fn read(fs: &dyn CgroupFs, layout: &Layout, set: &CgroupSet) -> Result<Stats> {
    let mut s = Stats::default();
    match set.for_controller(layout, Controller::Memory) {
        Some((Version::V2, dir)) => {
            s.memory_current = Some(fs::parsed(fs, dir, "memory.current", parse::u64_value)?);
            s.memory_peak = fs::parsed_optional(fs, dir, "memory.peak", parse::u64_value)?;
            s.oom_kills = fs::parsed(fs, dir, "memory.events", |t| parse::keyed(t, "oom_kill"))?;
            s.memory_held = fs::parsed_optional(fs, dir, "memory.stat", |t| held(t, "anon", "shmem"))?.flatten();
        }
        Some((Version::V1, dir)) => {
            s.memory_current = Some(fs::parsed(fs, dir, "memory.usage_in_bytes", parse::u64_value)?);
            s.memory_peak = fs::parsed_optional(fs, dir, "memory.max_usage_in_bytes", parse::u64_value)?;
            s.oom_kills = fs::parsed(fs, dir, "memory.oom_control", |t| parse::keyed(t, "oom_kill"))?;
            s.memory_held = fs::parsed_optional(fs, dir, "memory.stat", |t| {
                Ok(held(t, "total_rss", "total_shmem")?.or(held(t, "rss", "shmem")?))
            })?
            .flatten();
        }
        None => {}
    }
    // The unified cpu.stat, kept: on v2 the cpu controller's counters are in the same file,
    // and each file read is paid per instance read.
    let mut unified_cpu_stat = None;
    if let Some(dir) = set.unified() {
        let text = fs::read(fs, dir, "cpu.stat")?;
        s.cpu_usage_usec = fs::with_context(dir, "cpu.stat", &text, parse::keyed(&text, "usage_usec"))?;
        unified_cpu_stat = Some((dir, text));
    } else if let Some((_, dir)) = set.for_controller(layout, Controller::Cpuacct) {
        s.cpu_usage_usec = Some(fs::parsed(fs, dir, "cpuacct.usage", parse::u64_value)? / 1000);
    }
    match set.for_controller(layout, Controller::Cpu) {
        Some((Version::V2, dir)) => {
            let text = match unified_cpu_stat {
                Some((unified, text)) if unified == dir => text,
                _ => fs::read(fs, dir, "cpu.stat")?,
            };
            s.cpu_nr_throttled = fs::with_context(dir, "cpu.stat", &text, parse::keyed(&text, "nr_throttled"))?;
            s.cpu_throttled_usec = fs::with_context(dir, "cpu.stat", &text, parse::keyed(&text, "throttled_usec"))?;
        }
        Some((Version::V1, dir)) => {
            let text = fs::read(fs, dir, "cpu.stat")?;
            s.cpu_nr_throttled = fs::with_context(dir, "cpu.stat", &text, parse::keyed(&text, "nr_throttled"))?;
            s.cpu_throttled_usec =
                fs::with_context(dir, "cpu.stat", &text, parse::keyed(&text, "throttled_time"))?.map(|ns| ns / 1000);
        }
        None => {}
    }
    if let Some((_, dir)) = set.for_controller(layout, Controller::Pids) {
        s.pids_current = Some(fs::parsed(fs, dir, "pids.current", parse::u64_value)?);
        s.pids_max_hits = fs::parsed(fs, dir, "pids.events", |t| parse::keyed(t, "max"))?;
    }
    Ok(s)
}

/// Whether any process is left in the cgroup (or, on v2, below it).
pub(crate) fn populated(fs: &dyn CgroupFs, set: &CgroupSet) -> Result<bool> {
    if let Some(dir) = set.unified() {
        return fs::parsed(fs, dir, "cgroup.events", |t| parse::keyed_required(t, "populated")).map(|p| p != 0);
    }
    for (_, dir) in set.dirs() {
        if !fs::procs(fs, dir)?.is_empty() {
            return Ok(true);
        }
    }
    Ok(false)
}
