//! What the kernel says about a process: its `/proc` status lines, open
//! descriptors, CPU time, context switches and time waited for a CPU, and the files
//! of the cgroups it is in.

use std::path::PathBuf;

use plugin_supervisor::sandbox::cgroup::{Controller, Layout, RealFs};

/// A `/proc/<pid>/status` field ("Seccomp", "NoNewPrivs", "Uid", ...).
pub fn status_field(pid: i32, field: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    field_in(&text, field).map(str::to_owned)
}

/// One field's value in a `/proc/.../status` text.
fn field_in<'a>(status: &'a str, field: &str) -> Option<&'a str> {
    status.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':').map(str::trim))
}

/// The descriptor numbers the process has open.
pub fn open_fds(pid: i32) -> Vec<i32> {
    let mut fds: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default();
    fds.sort_unstable();
    fds
}

/// The names of the process's threads (`/proc/<pid>/task/*/comm`), sorted.
pub fn thread_names(pid: i32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
                .map(|n| n.trim().to_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort_unstable();
    names
}

/// User plus system CPU time of the process (all threads), in seconds.
pub fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3, utime 14, stime 15 (1-based).
    let ticks = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(14) + ticks(15)) / hz
}

/// How often one thread left its CPU: `voluntary` when it slept (waiting for a call, a
/// write's room, a timer), `involuntary` when it was preempted or yielded to another
/// task. With [`run_delay_seconds`], what tells a benchmark whether a runtime's thread
/// was woken from sleep for each call or was still runnable when the call came.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Switches {
    pub voluntary: u64,
    pub involuntary: u64,
}

/// The context switches in one `/proc/.../status` text; `None` without the lines.
fn switches_in(status: &str) -> Option<Switches> {
    let field = |name: &str| field_in(status, name)?.parse::<u64>().ok();
    Some(Switches { voluntary: field("voluntary_ctxt_switches")?, involuntary: field("nonvoluntary_ctxt_switches")? })
}

/// The seconds a task waited runnable for a CPU, from one `/proc/.../schedstat` text
/// ("on-CPU ns, waiting ns, timeslices"); `None` where the kernel keeps no such figures
/// (built without `CONFIG_SCHED_INFO`).
fn run_delay_in(schedstat: &str) -> Option<f64> {
    let waited: u64 = schedstat.split_whitespace().nth(1)?.parse().ok()?;
    Some(waited as f64 / 1e9)
}

/// The context switches so far of `pid`'s main thread, where the daemon, a plugin and
/// the benchmark each run their runtime. One thread's counts only ever grow; a sum over
/// the process's threads would lose those of a thread that ended meanwhile (a blocking
/// pool's, idle). `None` for a process that is gone.
pub fn switches(pid: i32) -> Option<Switches> {
    switches_in(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// The seconds `pid`'s main thread has waited runnable for a CPU so far (see
/// [`run_delay_in`]); `None` where the kernel does not say, or for a process that is gone.
pub fn run_delay_seconds(pid: i32) -> Option<f64> {
    run_delay_in(&std::fs::read_to_string(format!("/proc/{pid}/schedstat")).ok()?)
}

/// The directory of the cgroup that gives `controller` to `pid`.
pub fn cgroup_dir(pid: i32, controller: Controller) -> Option<PathBuf> {
    let layout = Layout::detect(&RealFs, None).ok()?;
    let h = layout.hierarchy(layout.source(controller)?)?;
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let member = plugin_supervisor::sandbox::cgroup::parse_proc_cgroup(&text).ok()?;
    let v2 = h.version == plugin_supervisor::sandbox::cgroup::Version::V2;
    let m = member
        .into_iter()
        .find(|m| if v2 { m.is_v2() } else { m.controllers.iter().any(|c| c == controller.name()) })?;
    h.dir_of(&m.path)
}

/// The directory of `pid`'s cgroup in the unified hierarchy, as this process sees it
/// mounted.
pub fn unified_dir(pid: i32) -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    plugin_supervisor::sandbox::cgroup::unified_dir(&mountinfo, &cgroup)
}

/// The memory limit in force for `pid`, in bytes (v1 or v2).
pub fn memory_limit(pid: i32) -> Option<u64> {
    let dir = cgroup_dir(pid, Controller::Memory)?;
    ["memory.max", "memory.limit_in_bytes"]
        .iter()
        .find_map(|f| std::fs::read_to_string(dir.join(f)).ok()?.trim().parse().ok())
}

/// The task limit in force for `pid`.
pub fn pids_limit(pid: i32) -> Option<u64> {
    let dir = cgroup_dir(pid, Controller::Pids)?;
    std::fs::read_to_string(dir.join("pids.max")).ok()?.trim().parse().ok()
}

/// Every cgroup directory called `name`, in every hierarchy (a subtree root
/// sits at most a few levels down from its mount).
pub fn cgroup_dirs_named(name: &str) -> Vec<PathBuf> {
    fn walk(dir: &std::path::Path, depth: usize, name: &str, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let path = e.path();
            if e.file_name() == name {
                out.push(path);
            } else if depth < 6 {
                walk(&path, depth + 1, name, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(std::path::Path::new("/sys/fs/cgroup"), 0, name, &mut out);
    out
}

/// The pid, as this process's PID namespace numbers it, of the process that the PID
/// namespace of `ns_member` numbers `ns_pid` (its `NSpid` line's last number), if any.
pub fn pid_outside(ns_member: i32, ns_pid: i32) -> Option<i32> {
    let ns = std::fs::read_link(format!("/proc/{ns_member}/ns/pid")).ok()?;
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let nspid = status_field(pid, "NSpid")?;
        let inner: i32 = nspid.split_whitespace().last()?.parse().ok()?;
        (inner == ns_pid && std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok()? == ns).then_some(pid)
    })
}

/// The process's state letter (`R`, `S`, `Z`...), while `/proc` has an entry for it at all.
pub fn state(pid: i32) -> Option<char> {
    status_field(pid, "State")?.chars().next()
}

/// Waits up to `within` until the process's main thread sleeps in `nanosleep` or
/// `clock_nanosleep` (as `std::thread::sleep` does), from `/proc/PID/syscall`: proof a
/// blocking handler has the thread, where a fixed pause only hopes for it. False if it
/// never did; panics naming the error when `/proc/PID/syscall` cannot be read (the
/// process gone, or ptrace access refused), which is not the plugin's doing.
pub fn wait_asleep_in_nanosleep(pid: i32, within: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        let line = std::fs::read_to_string(format!("/proc/{pid}/syscall"))
            .unwrap_or_else(|e| panic!("/proc/{pid}/syscall: {e}"));
        let nr: Option<i64> = line.split_whitespace().next().and_then(|n| n.parse().ok());
        if nr.is_some_and(|n| n == libc::SYS_nanosleep || n == libc::SYS_clock_nanosleep) {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_text_gives_both_kinds_of_switch() {
        let status = "Name:\techo\nThreads:\t1\nvoluntary_ctxt_switches:\t1204\nnonvoluntary_ctxt_switches:\t37\n";
        assert_eq!(switches_in(status), Some(Switches { voluntary: 1204, involuntary: 37 }));
        assert_eq!(switches_in("Name:\techo\n"), None, "a kernel without the lines says nothing");
    }

    #[test]
    fn a_schedstat_text_gives_the_time_waited_for_a_cpu() {
        assert_eq!(run_delay_in("2301000 4500000 17\n"), Some(0.0045));
        assert_eq!(run_delay_in("0 0 0\n"), Some(0.0));
        assert_eq!(run_delay_in(""), None);
    }

    #[test]
    fn each_sleep_of_a_thread_is_one_voluntary_switch_of_it() {
        // This test's own thread (others run beside it), by the same reader the
        // benchmark applies to a process's main thread.
        let mine = || switches_in(&std::fs::read_to_string("/proc/thread-self/status").unwrap()).unwrap();
        let before = mine();
        for _ in 0..3 {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let after = mine();
        let slept = after.voluntary - before.voluntary;
        assert!((3..=4).contains(&slept), "three sleeps, {slept} switches: {before:?} then {after:?}");
        let me = i32::try_from(std::process::id()).unwrap();
        assert!(switches(me).is_some());
        let kept = std::path::Path::new("/proc/self/schedstat").exists();
        assert_eq!(run_delay_seconds(me).is_some(), kept, "the time waited is there where the kernel keeps it");
        assert_eq!(switches(-1), None, "no such process");
        assert_eq!(run_delay_seconds(-1), None, "no such process");
    }
}
