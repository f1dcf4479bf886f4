//! Usage and event counters of one cgroup (`Stats`) and whether it still holds processes.

use std::io;
use std::path::Path;
use std::sync::Arc;

use super::controller::{Controller, Version};
use super::error::{CgroupError, Result};
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

/// What one control file of a reading gives, and so how its text is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum File {
    /// v2 `memory.current`, v1 `memory.usage_in_bytes`.
    MemoryCurrent,
    /// v2 `memory.peak`, v1 `memory.max_usage_in_bytes`; absent on older kernels.
    MemoryPeak,
    /// `oom_kill` of v2 `memory.events`, v1 `memory.oom_control`.
    OomKills,
    /// `memory.stat`, whose keys depend on the interface.
    MemoryHeld(Version),
    /// The unified `cpu.stat`: the usage, and the throttling too when the cpu controller
    /// is there (one read for both).
    UnifiedCpuStat {
        throttling: bool,
    },
    /// v1 `cpuacct.usage`, in nanoseconds.
    CpuacctUsage,
    /// The cpu controller's `cpu.stat` where it is not the unified one: the throttling.
    CpuStat(Version),
    PidsCurrent,
    /// `max` of `pids.events`: the forks refused.
    PidsEvents,
}

impl File {
    /// An absent file is no value (a kernel too old for it), not an error.
    fn optional(self) -> bool {
        matches!(self, File::MemoryPeak | File::MemoryHeld(_))
    }

    /// Takes the file's `text` into `s`.
    fn take(self, text: &str, s: &mut Stats) -> std::result::Result<(), &'static str> {
        match self {
            File::MemoryCurrent => s.memory_current = Some(parse::u64_value(text)?),
            File::MemoryPeak => s.memory_peak = Some(parse::u64_value(text)?),
            File::OomKills => s.oom_kills = parse::keyed(text, "oom_kill")?,
            File::MemoryHeld(Version::V2) => s.memory_held = held(text, "anon", "shmem")?,
            File::MemoryHeld(Version::V1) => {
                s.memory_held = held(text, "total_rss", "total_shmem")?.or(held(text, "rss", "shmem")?);
            }
            File::UnifiedCpuStat { throttling } => {
                s.cpu_usage_usec = parse::keyed(text, "usage_usec")?;
                if throttling {
                    throttled(text, Version::V2, s)?;
                }
            }
            File::CpuacctUsage => s.cpu_usage_usec = Some(parse::u64_value(text)? / 1000),
            File::CpuStat(version) => throttled(text, version, s)?,
            File::PidsCurrent => s.pids_current = Some(parse::u64_value(text)?),
            File::PidsEvents => s.pids_max_hits = parse::keyed(text, "max")?,
        }
        Ok(())
    }
}

/// The throttling counters of a cpu controller's `cpu.stat`.
fn throttled(text: &str, version: Version, s: &mut Stats) -> std::result::Result<(), &'static str> {
    s.cpu_nr_throttled = parse::keyed(text, "nr_throttled")?;
    s.cpu_throttled_usec = match version {
        Version::V2 => parse::keyed(text, "throttled_usec")?,
        Version::V1 => parse::keyed(text, "throttled_time")?.map(|ns| ns / 1000),
    };
    Ok(())
}

/// The control files a reading of one cgroup's counters takes ([`Stats`]) and its process
/// list, found once for the cgroup and read as often as wanted. The sampler keeps one per
/// instance it reads: finding them again each reading went through the cgroup's directory
/// in each hierarchy (a vector and a path apiece, on pages nothing else touches since),
/// and where memory idle for a second costs microseconds a page to touch again that was
/// a third of an idle daemon's CPU with a thousand instances. So the paths lie end to end
/// in one string.
#[derive(Debug)]
pub struct StatFiles {
    fs: Arc<dyn CgroupFs>,
    /// Every file's absolute path, one after the other.
    paths: String,
    /// Each counter file, and where its path ends in `paths` (it begins where the one
    /// before ended).
    files: Vec<(File, usize)>,
    /// Where the path of the `cgroup.procs` read for the processes ends, after all the
    /// others; none without a hierarchy.
    procs: Option<usize>,
}

impl StatFiles {
    pub(crate) fn new(fs: Arc<dyn CgroupFs>, layout: &Layout, set: &CgroupSet) -> Self {
        let mut plan: Vec<(File, &Path, &str)> = Vec::new();
        match set.for_controller(layout, Controller::Memory) {
            Some((Version::V2, dir)) => plan.extend([
                (File::MemoryCurrent, dir, "memory.current"),
                (File::MemoryPeak, dir, "memory.peak"),
                (File::OomKills, dir, "memory.events"),
                (File::MemoryHeld(Version::V2), dir, "memory.stat"),
            ]),
            Some((Version::V1, dir)) => plan.extend([
                (File::MemoryCurrent, dir, "memory.usage_in_bytes"),
                (File::MemoryPeak, dir, "memory.max_usage_in_bytes"),
                (File::OomKills, dir, "memory.oom_control"),
                (File::MemoryHeld(Version::V1), dir, "memory.stat"),
            ]),
            None => {}
        }
        // On v2 the cpu controller's counters are in the unified cpu.stat: each file read is
        // paid per instance read, so it is read once for both.
        let cpu = set.for_controller(layout, Controller::Cpu);
        let unified = set.unified();
        if let Some(dir) = unified {
            let throttling = cpu.is_some_and(|(v, cpu)| v == Version::V2 && cpu == dir);
            plan.push((File::UnifiedCpuStat { throttling }, dir, "cpu.stat"));
        } else if let Some((_, dir)) = set.for_controller(layout, Controller::Cpuacct) {
            plan.push((File::CpuacctUsage, dir, "cpuacct.usage"));
        }
        match cpu {
            Some((version, dir)) if !(version == Version::V2 && Some(dir) == unified) => {
                plan.push((File::CpuStat(version), dir, "cpu.stat"));
            }
            _ => {}
        }
        if let Some((_, dir)) = set.for_controller(layout, Controller::Pids) {
            plan.extend([(File::PidsCurrent, dir, "pids.current"), (File::PidsEvents, dir, "pids.events")]);
        }
        let mut paths = String::new();
        let mut push = |dir: &Path, name: &str| {
            paths.push_str(&dir.join(name).to_string_lossy());
            paths.len()
        };
        let files = plan.into_iter().map(|(file, dir, name)| (file, push(dir, name))).collect();
        let procs = set.dirs().next().map(|(_, dir)| push(dir, "cgroup.procs"));
        Self { fs, paths, files, procs }
    }

    /// Each counter file's path, in the order read.
    fn paths(&self) -> impl Iterator<Item = (File, &Path)> {
        let starts = std::iter::once(0).chain(self.files.iter().map(|(_, end)| *end));
        self.files.iter().zip(starts).map(|((file, end), start)| (*file, Path::new(&self.paths[start..*end])))
    }

    /// The counters as they are now.
    pub fn read(&self) -> Result<Stats> {
        let mut s = Stats::default();
        for (file, path) in self.paths() {
            // Each path is read as it was kept: joined again, it would be copied each time.
            let text = match self.fs.read(path) {
                Ok(text) => text,
                Err(e) if file.optional() && e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => return Err(read_error(path, source)),
            };
            file.take(&text, &mut s).map_err(|reason| parse_error(path, &text, reason))?;
        }
        Ok(s)
    }

    /// The pids in the cgroup (the unified hierarchy's view where there is one).
    pub fn procs(&self) -> Result<Vec<u32>> {
        let Some(end) = self.procs else { return Ok(Vec::new()) };
        let path = Path::new(&self.paths[self.files.last().map_or(0, |(_, end)| *end)..end]);
        let text = self.fs.read(path).map_err(|source| read_error(path, source))?;
        parse::pids(&text).map_err(|reason| parse_error(path, &text, reason))
    }
}

/// A control file's path as its cgroup's directory and its own name, for errors.
fn split(path: &Path) -> (&Path, &str) {
    let dir = path.parent().unwrap_or(path);
    (dir, path.file_name().and_then(|n| n.to_str()).unwrap_or_default())
}

fn read_error(path: &Path, source: io::Error) -> CgroupError {
    let (dir, file) = split(path);
    CgroupError::Read { cgroup: dir.to_path_buf(), file: file.to_owned(), source }
}

fn parse_error(path: &Path, text: &str, reason: &'static str) -> CgroupError {
    let (dir, file) = split(path);
    fs::parse_error(dir, file, text, reason)
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
