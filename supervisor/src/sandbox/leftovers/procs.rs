//! Processes of one uid, anywhere on the host, and the cgroups they are in: how a teardown
//! finds what outlived an instance outside its cgroup leaf.

use std::path::Path;

/// A process running as the uid asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proc {
    pub pid: i32,
    /// Its command name (`/proc/PID/comm`).
    pub comm: String,
    /// `/proc/PID/cgroup` as the kernel wrote it: one `ID:CONTROLLERS:PATH` line per
    /// hierarchy.
    pub cgroup: String,
}

impl Proc {
    /// It is in a leaf of an instance of `plugin`, of this supervisor or another one
    /// (`.../plugins/PLUGIN/INSTANCE`): a live instance's, or one whose own teardown
    /// handles it.
    pub fn in_instance_of(&self, plugin: &str) -> bool {
        let marker = format!("/plugins/{plugin}/");
        self.cgroup.lines().any(|l| {
            l.split_once(':').and_then(|(_, rest)| rest.split_once(':')).is_some_and(|(_, path)| path.contains(&marker))
        })
    }
}

/// The real, effective, saved and filesystem uids of a `/proc/PID/status` text.
pub fn status_uids(status: &str) -> Option<[u32; 4]> {
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    let mut ids = line.split_whitespace().map(|s| s.parse::<u32>().ok());
    Some([ids.next()??, ids.next()??, ids.next()??, ids.next()??])
}

/// Whether a `/proc/PID/status` text is a process that has exited (a zombie, or dead):
/// it holds no file, mapping or IPC attachment and can make none, whether or not its
/// parent ever reaps it. A leader thread that exited while other threads of it run shows
/// as a zombie too, with them in its `Threads:`: that process runs on.
pub fn status_exited(status: &str) -> bool {
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim_start);
    let dead = field("State:").is_some_and(|s| matches!(s.chars().next(), Some('Z' | 'X')));
    let threads = field("Threads:").and_then(|t| t.parse::<u32>().ok()).unwrap_or(1);
    dead && threads <= 1
}

/// Every process under `proc_root` (normally `/proc`) that runs with `uid` as any of its
/// uids. A process that ends while it is read is skipped, as is one that has exited and
/// waits to be reaped: counted, an orphan its reaper never waits for would keep the
/// uid's files and IPC objects for good.
pub fn of_uid(proc_root: &Path, uid: u32) -> std::io::Result<Vec<Proc>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(proc_root)? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let dir = entry.path();
        let Ok(status) = std::fs::read_to_string(dir.join("status")) else { continue };
        if !status_uids(&status).is_some_and(|ids| ids.contains(&uid)) || status_exited(&status) {
            continue;
        }
        // The process names itself: escaped, it cannot forge a line or move a terminal.
        let comm =
            crate::observe::forward::clean(std::fs::read_to_string(dir.join("comm")).unwrap_or_default().trim_end());
        let cgroup = std::fs::read_to_string(dir.join("cgroup")).unwrap_or_default();
        out.push(Proc { pid, comm, cgroup });
    }
    out.sort_by_key(|p| p.pid);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tsleep\nUmask:\t0022\nState:\tS (sleeping)\nPid:\t42\nUid:\t61234\t61234\t61234\t61234\nGid:\t61234\t61234\t61234\t61234\nThreads:\t1\n";

    #[test]
    fn the_four_uids_are_read_from_the_status_text() {
        assert_eq!(status_uids(STATUS), Some([61234; 4]));
        assert_eq!(status_uids("Name:\tx\nUid:\t0\t1000\t0\t0\n"), Some([0, 1000, 0, 0]));
        assert_eq!(status_uids("Name:\tx\n"), None);
        assert_eq!(status_uids("Uid:\t1\t2\n"), None, "a cut line is not read as uids");
    }

    #[test]
    fn a_process_is_in_an_instance_when_any_hierarchy_puts_it_in_a_leaf_of_the_plugin() {
        let p = |cgroup: &str| Proc { pid: 1, comm: "x".into(), cgroup: cgroup.into() };
        let hybrid = "12:pids:/ps-a/plugins/zoo/zoo-0\n0::/ps-a/plugins/zoo/zoo-0\n";
        assert!(p(hybrid).in_instance_of("zoo"));
        assert!(p("0::/other-supervisor/plugins/zoo/zoo-7\n").in_instance_of("zoo"));
        assert!(!p(hybrid).in_instance_of("zo"), "a plugin whose name is a prefix is another plugin");
        assert!(!p("0::/ps-a/supervisor\n").in_instance_of("zoo"));
        assert!(!p("0::/user.slice/plugins/zoo\n").in_instance_of("zoo"), "the plugin's directory is not a leaf");
    }

    #[test]
    fn a_zombie_of_the_uid_is_not_a_process_of_it_still_running() {
        let root = tempfile::tempdir().unwrap();
        for (pid, state) in [(41, "Z (zombie)"), (42, "S (sleeping)"), (43, "X (dead)")] {
            let dir = root.path().join(pid.to_string());
            std::fs::create_dir(&dir).unwrap();
            let status = STATUS.replace("S (sleeping)", state).replace("Pid:\t42", &format!("Pid:\t{pid}"));
            std::fs::write(dir.join("status"), status).unwrap();
        }
        let found: Vec<i32> = of_uid(root.path(), 61234).unwrap().iter().map(|p| p.pid).collect();
        assert_eq!(found, [42]);
        assert!(status_exited(&STATUS.replace("S (sleeping)", "Z (zombie)")));
        assert!(!status_exited(STATUS));
        // Its leader thread gone, two others running: not exited.
        let leader_gone = STATUS.replace("S (sleeping)", "Z (zombie)").replace("Threads:\t1", "Threads:\t3");
        assert_ne!(leader_gone, STATUS.replace("S (sleeping)", "Z (zombie)"), "the fixture names its threads");
        assert!(!status_exited(&leader_gone));
    }

    #[test]
    fn the_scan_finds_this_process_by_its_uid_and_nothing_for_an_unused_uid() {
        // SAFETY: getuid has no preconditions.
        let me = unsafe { libc::getuid() };
        let found = of_uid(Path::new("/proc"), me).unwrap();
        assert!(found.iter().any(|p| p.pid == std::process::id() as i32), "{found:?}");
        assert!(of_uid(Path::new("/proc"), 4_000_000_000).unwrap().is_empty());
    }
}
