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
    let procfs = is_proc(proc_root);
    for pid in pids.iter().take(MAX_PROCS) {
        if let Some(n) = count_dir(&proc_root.join(pid.to_string()).join("fd"), procfs) {
            *total.get_or_insert(0) += n;
        }
    }
    total
}

/// The entries of a `/proc/PID/fd` directory. Since Linux 6.2 its size is that count,
/// which the kernel takes from the descriptor bitmap: far cheaper than listing the
/// entries (a thousand instances' and the daemon's own tables, read every few seconds,
/// were most of an idle daemon's CPU). A size of 0 (an older kernel, or no
/// descriptors), or a directory not on procfs (`procfs` false: the tests' fakes), is
/// listed.
fn count_dir(dir: &Path, procfs: bool) -> Option<u64> {
    let size = std::fs::metadata(dir).ok()?.len();
    if procfs && size > 0 {
        return Some(size.min(MAX_FDS as u64));
    }
    let entries = std::fs::read_dir(dir).ok()?;
    Some(entries.take(MAX_FDS).filter(Result::is_ok).count() as u64)
}

/// Whether `dir` is on procfs (the fakes the tests build are not).
fn is_proc(dir: &Path) -> bool {
    nix::sys::statfs::statfs(dir).is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::PROC_SUPER_MAGIC)
}

/// The soft `RLIMIT_NOFILE` of `pid`: asked of the kernel (`prlimit`, one call; refused
/// for a process of another user unless the daemon has `CAP_SYS_RESOURCE`), else "Max
/// open files" in `/proc/PID/limits`.
pub fn nofile_of(proc_root: &Path, pid: u32) -> Option<u64> {
    if proc_root == Path::new("/proc")
        && let Ok(pid) = i32::try_from(pid)
    {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: prlimit only reads the limit into `limit`, which outlives the call; a
        // null new limit changes nothing.
        if unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut limit) } == 0 {
            // As the file's "unlimited" reads.
            return (limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur);
        }
    }
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
    /// Reads the processes of `procs` (an instance's cgroup members). `known`: a descriptor
    /// limit read of a process lately, taken for that process instead of asking again.
    pub fn of(proc_root: &Path, procs: Vec<u32>, known: Option<Nofile>) -> Self {
        let fds = fds_of(proc_root, &procs);
        let nofile = match (&procs[..], known) {
            (&[pid], Some(k)) if k.pid == pid => Some(k.limit),
            (&[pid], _) => nofile_of(proc_root, pid),
            _ => None,
        };
        Self { procs, fds, nofile }
    }
}

/// The descriptor limit of one process, as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nofile {
    pub pid: u32,
    pub limit: u64,
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
        fds: count_dir(&dir.join("fd"), is_proc(dir)),
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

    /// A limit read lately is taken for its process without reading it again; another
    /// process's, or several processes, are not given it.
    #[test]
    fn a_known_descriptor_limit_is_taken_for_its_process_only() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("10/fd")).unwrap();
        std::fs::write(
            root.path().join("10/limits"),
            "Max open files            1000                 1000                 files\n",
        )
        .unwrap();
        let known = |pid, limit| Some(Nofile { pid, limit });
        assert_eq!(ProcReading::of(root.path(), vec![10], None).nofile, Some(1000), "read");
        assert_eq!(ProcReading::of(root.path(), vec![10], known(10, 64)).nofile, Some(64), "taken, not read");
        assert_eq!(ProcReading::of(root.path(), vec![10], known(11, 64)).nofile, Some(1000), "another pid's: read");
        assert_eq!(ProcReading::of(root.path(), vec![10, 11], known(10, 64)).nofile, None, "not one process");
    }

    #[test]
    fn a_real_descriptor_table_is_counted_as_listing_it_would() {
        // Another process's table, which no other test changes meanwhile: a child with
        // what it inherits and 0..=2 more dup'ed by the shell.
        let mut base = None;
        for extra in 0..3 {
            let redirects: String = (0..extra).map(|i| format!(" {}>&1", 3 + i)).collect();
            // Killed and reaped however this ends: a failed check must not leave it behind.
            struct Reap(std::process::Child);
            impl Drop for Reap {
                fn drop(&mut self) {
                    let _ = self.0.kill();
                    let _ = self.0.wait();
                }
            }
            let child = Reap(
                std::process::Command::new("sh")
                    .args(["-c", &format!("exec sleep 5{redirects}")])
                    .stdin(std::process::Stdio::null())
                    .spawn()
                    .unwrap(),
            );
            let dir = Path::new("/proc").join(child.0.id().to_string()).join("fd");
            // Once sh has become sleep with its redirections made, and sleep is asleep: named
            // at exec, it still has its start to run (the loader and libc open and close
            // files: ld.so.cache, libc, the locale archive), so a table read as soon as the
            // name changed could still shrink (seen one run in seventy-five on a busy machine).
            crate::test_procs::wait_named_and_asleep(child.0.id() as i32, "sleep");
            let listed = std::fs::read_dir(&dir).unwrap().count() as u64;
            let counted = count_dir(&dir, is_proc(&dir));
            drop(child);
            assert_eq!(listed, *base.get_or_insert(listed) + extra);
            assert_eq!(counted, Some(listed), "{extra} descriptors beyond the standard three");
        }
    }

    #[test]
    fn a_process_descriptor_limit_is_asked_of_the_kernel_as_limits_tells_it() {
        // Another process, with a soft limit below its hard one: the soft one is its limit.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "ulimit -Sn 100 && exec sleep 5"])
            .stdin(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        let from_file = || nofile_in(&Path::new("/proc").join(pid.to_string()));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while from_file() != Some(100) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let asked = nofile_of(Path::new("/proc"), pid);
        let file = from_file();
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(file, Some(100), "the shell did not lower its limit");
        assert_eq!(asked, Some(100));
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
