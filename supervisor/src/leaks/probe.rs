//! What the cgroup files do not say, read from `/proc`: the descriptors an instance's
//! processes hold, the descriptor limit they run under, and the supervisor's own memory,
//! descriptors and threads. Bounded work: at most [`MAX_PROCS`] processes and
//! [`MAX_FDS`] entries each are looked at per reading.

use std::path::Path;

/// The most processes of one instance whose descriptors are counted per reading; a
/// plugin that forks more is counted short (its task count says so anyway).
pub const MAX_PROCS: usize = 256;
/// The most descriptors counted in one process.
pub const MAX_FDS: usize = 1 << 16;

/// Descriptors open in `pids` together; `None` when none could be read (all gone, or
/// `/proc` hidden).
pub fn fds_of(proc_root: &Path, pids: &[u32]) -> Option<u64> {
    let mut total = None;
    for pid in pids.iter().take(MAX_PROCS) {
        if let Some(n) = count_dir(&proc_root.join(pid.to_string()).join("fd")) {
            *total.get_or_insert(0) += n;
        }
    }
    total
}

fn count_dir(dir: &Path) -> Option<u64> {
    let entries = std::fs::read_dir(dir).ok()?;
    Some(entries.take(MAX_FDS).filter(Result::is_ok).count() as u64)
}

/// The soft `RLIMIT_NOFILE` of `pid` ("Max open files" in `/proc/PID/limits`).
pub fn nofile_of(proc_root: &Path, pid: u32) -> Option<u64> {
    nofile_in(&proc_root.join(pid.to_string()))
}

/// The soft `RLIMIT_NOFILE` of the process whose `/proc` directory is `dir`.
fn nofile_in(dir: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join("limits")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

/// What `/proc` says of one instance's processes: read off the runtime's thread (a
/// process's descriptor table can be long), then handed to its watch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcReading {
    pub procs: Vec<u32>,
    pub fds: Option<u64>,
    /// The descriptor limit, when the instance has a single process.
    pub nofile: Option<u64>,
}

impl ProcReading {
    /// Reads the processes of `procs` (an instance's cgroup members).
    pub fn of(proc_root: &Path, procs: Vec<u32>) -> Self {
        let fds = fds_of(proc_root, &procs);
        let nofile = match procs[..] {
            [pid] => nofile_of(proc_root, pid),
            _ => None,
        };
        Self { procs, fds, nofile }
    }
}

/// The supervisor's own footprint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Own {
    /// Bytes resident, anonymous (what a leak grows) and all.
    pub rss_anon: Option<u64>,
    pub rss: Option<u64>,
    pub fds: Option<u64>,
    pub threads: Option<u64>,
    /// Its descriptor limit.
    pub nofile: Option<u64>,
}

/// Reads the footprint of the process whose `/proc` directory is `dir`.
pub fn own(dir: &Path) -> Own {
    let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.split_whitespace().next()?.parse().ok())
    };
    Own {
        rss_anon: field("RssAnon").map(|kib: u64| kib * 1024),
        rss: field("VmRSS").map(|kib: u64| kib * 1024),
        fds: count_dir(&dir.join("fd")),
        threads: field("Threads"),
        nofile: nofile_in(dir),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_are_summed_over_the_processes_and_a_gone_one_is_skipped() {
        let root = tempfile::tempdir().unwrap();
        for (pid, n) in [(10, 3), (11, 5)] {
            let fd = root.path().join(format!("{pid}/fd"));
            std::fs::create_dir_all(&fd).unwrap();
            for i in 0..n {
                std::fs::write(fd.join(i.to_string()), "").unwrap();
            }
        }
        assert_eq!(fds_of(root.path(), &[10, 11, 12]), Some(8));
        assert_eq!(fds_of(root.path(), &[12]), None);
        std::fs::write(
            root.path().join("10/limits"),
            "Limit                     Soft Limit           Hard Limit           Units\nMax processes             unlimited            unlimited            processes\nMax open files            1000                 1000                 files\n",
        )
        .unwrap();
        assert_eq!(nofile_of(root.path(), 10), Some(1000));
        assert_eq!(nofile_of(root.path(), 11), None);
    }

    #[test]
    fn the_supervisor_reads_its_own_footprint() {
        let me = own(Path::new("/proc/self"));
        assert!(me.rss.is_some_and(|r| r > 0) && me.rss_anon.is_some_and(|a| a > 0), "{me:?}");
        assert!(me.fds.is_some_and(|n| n >= 3), "{me:?}");
        assert!(me.threads.is_some_and(|n| n >= 1), "{me:?}");
        let root = tempfile::tempdir().unwrap();
        std::fs::write(
            root.path().join("status"),
            "Name:\tx\nVmRSS:\t    2048 kB\nRssAnon:\t    1024 kB\nThreads:\t7\n",
        )
        .unwrap();
        std::fs::create_dir(root.path().join("fd")).unwrap();
        assert_eq!(
            own(root.path()),
            Own { rss_anon: Some(1 << 20), rss: Some(2 << 20), fds: Some(0), threads: Some(7), nofile: None }
        );
    }
}
