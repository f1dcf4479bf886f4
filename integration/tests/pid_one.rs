//! The daemon as process 1 of its PID namespace, as a container's entrypoint runs it: what
//! a plugin leaves behind is reaped, not kept as a zombie, and SIGTERM still ends it
//! cleanly. Plugin names are this file's own.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use plugin_integration::daemon::{Daemon, config, plugin, timeout_factor};
use plugin_integration::pb::zoo::Text;
use plugin_integration::pb::zoo::zoo_client::ZooClient;
use plugin_integration::{bins, connect, procfs};
use plugin_supervisor::init::LEAF;

/// Generous: the VM lane runs about 20 times slower.
const UP: Duration = Duration::from_secs(60);

/// The field of `/proc/<pid>/stat` that tells this process from a later one of its pid.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')').next()?.split_whitespace().nth(19)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_process_one_the_daemon_reaps_what_a_plugin_left_and_ends_on_sigterm() {
    let name = "p1-fork";
    // A quota: process 1's cgroup must leave room for its subtree's controllers.
    let entry = format!("args = [\"--name\", \"{name}\"]\n[plugin.quota]\nmemory_max = \"64M\"");
    let plugins = plugin(name, &bins::zoo(), &entry);
    // Declared before the daemon, so dropped after it: whatever way the test ends, process
    // 1's leaf goes once process 1 has.
    // Where process 1 will make it: beneath the cgroup this test runs in, which process 1
    // starts in.
    let leaf = RemovedAtDrop(procfs::unified_dir(std::process::id() as i32).map(|at| at.join(LEAF)));
    let mut d = Daemon::start_as_pid_one(&config(&plugins));
    let running = d.wait_state("p1-fork-0", "running", UP);
    let plugin_pid = running["pid"].as_i64().and_then(|p| i32::try_from(p).ok()).expect("a pid");
    let init = d.inner_pid().expect("the namespace's process 1");
    assert_eq!(procfs::status_field(init, "NSpid").unwrap().split_whitespace().last(), Some("1"));
    let cgroup = procfs::unified_dir(init).expect("process 1's cgroup v2 directory");
    let mut zoo = ZooClient::new(connect(&d.gateway()).await.expect("gateway"));
    let escaped = zoo.escape(Text::default()).await.expect("escape").into_inner().pid as i32;
    // The plugin numbers it as the daemon's namespace does; this test's namespace otherwise.
    let escapee = procfs::pid_outside(init, escaped).expect("the escapee, seen from here");
    let born = start_time(escapee).expect("the escapee's start");
    let plugin_pid = procfs::pid_outside(init, plugin_pid).expect("the plugin, seen from here");
    assert_eq!(procfs::memory_limit(plugin_pid), Some(64 << 20), "the plugin runs under its quota");
    assert_eq!(procfs::state(escapee).map(|s| s != 'Z'), Some(true), "the escapee runs before the stop");
    let out = d.ctl(&["stop", name]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Killed by the teardown and then reaped: no entry left in /proc at all, not even a
    // zombie's (whose uid would keep the teardown from ever clearing that uid's files).
    let deadline = Instant::now() + Duration::from_secs(15) * timeout_factor();
    while start_time(escapee) == Some(born) {
        assert!(
            Instant::now() < deadline,
            "the escapee {escapee} ({escaped} in the namespace) is still there, state {:?}",
            procfs::state(escapee)
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Process 1 stays in a leaf of its own: the daemon's cgroup can then enable
    // controllers for the subtree beneath it (cgroup v2's no-internal-processes rule).
    assert!(cgroup.ends_with(LEAF), "process 1 is in {}", cgroup.display());

    // Every other signal is forwarded too: SIGHUP applies the config file.
    d.signal(libc::SIGHUP);
    let deadline = Instant::now() + UP;
    while !d.log_text().contains("update: no changes signal=\"SIGHUP\"") {
        assert!(Instant::now() < deadline, "SIGHUP did not reach the daemon:\n{}", d.log_tail(30));
        std::thread::sleep(Duration::from_millis(50));
    }

    // A signal the daemon has no handler for is dropped by process 1, as the kernel drops
    // it for a process 1: forwarded, SIGUSR1 ended the daemon undrained.
    d.signal(libc::SIGUSR1);
    std::thread::sleep(Duration::from_millis(200));
    let out = d.ctl(&["status", "--json"]);
    assert!(out.stdout.starts_with(b"["), "the daemon answers after SIGUSR1:\n{}", d.log_tail(30));

    let status = d.stop_with(libc::SIGTERM, UP).expect("the daemon exits on SIGTERM");
    assert_eq!(status.code(), Some(0), "{status:?}\n{}", d.log_tail(30));
    let log = d.log_text();
    assert!(log.lines().any(|l| l.ends_with("plugin_supervisor::daemon: stopped")), "{}", d.log_tail(30));
    if let Some(at) = &leaf.0 {
        assert!(!at.exists(), "process 1 left its leaf {} behind", at.display());
    }
}

/// Process 1's cgroup leaf, removed when the test ends: retried while process 1, killed
/// with its namespace when the test failed, may still be in it.
struct RemovedAtDrop(Option<PathBuf>);

impl Drop for RemovedAtDrop {
    fn drop(&mut self) {
        let Some(dir) = &self.0 else { return };
        let deadline = Instant::now() + Duration::from_secs(10) * timeout_factor();
        while dir.exists() && std::fs::remove_dir(dir).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
