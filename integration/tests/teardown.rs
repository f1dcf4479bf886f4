//! Every end of an instance is followed by a proof that it left nothing behind, with real
//! processes: the verdict after each kind of end, a double-forked child left behind, IPC
//! objects left by the plugin's uid, a kill in the middle of a call, and the daemon's own
//! descriptors and memory over a thousand start/stop cycles. Plugin names are this file's
//! own, so their uids are not another test's.

use std::time::{Duration, Instant};

use plugin_integration::daemon::{Daemon, config, config_with, plugin};
use plugin_integration::pb::zoo::zoo_client::ZooClient;
use plugin_integration::pb::zoo::*;
use plugin_integration::{alive, bins, connect};
use serde_json::Value;

/// Generous: the VM lane runs about 20 times slower.
const UP: Duration = Duration::from_secs(60);

/// The zoo under the name `name` (its handshake answers to it), with `extra` keys.
fn zoo_named(name: &str, extra: &str) -> String {
    plugin(name, &bins::zoo(), &format!("args = [\"--name\", \"{name}\"]\n{extra}"))
}

async fn zoo(d: &Daemon) -> ZooClient<plugin_proto::transport::H2Channel> {
    ZooClient::new(connect(&d.gateway()).await.expect("gateway"))
}

fn pid_of(d: &Daemon, id: &str) -> i32 {
    d.wait_state(id, "running", UP)["pid"].as_i64().unwrap() as i32
}

/// The `teardown` verdicts of `plugin`'s instance ends, oldest first (not the reports of
/// background retries, which have no duration).
fn teardowns(d: &Daemon, plugin: &str) -> Vec<Value> {
    d.events()
        .into_iter()
        .filter(|e| e["kind"] == "teardown" && e["plugin"] == plugin && e["fields"]["micros"].is_string())
        .collect()
}

/// Waits until `plugin` has had `n` teardowns; returns them.
fn wait_teardowns(d: &Daemon, plugin: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + UP;
    loop {
        let seen = teardowns(d, plugin);
        if seen.len() >= n {
            return seen;
        }
        assert!(Instant::now() < deadline, "{} of {n} teardowns of {plugin}: {seen:#?}", seen.len());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn result(e: &Value) -> &str {
    e["fields"]["result"].as_str().unwrap_or_default()
}

fn message(e: &Value) -> &str {
    e["message"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_of_end_is_followed_by_a_clean_verdict() {
    let plugins =
        format!("{}{}", zoo_named("td-ends", ""), plugin("td-refused", &bins::zoo(), "args = [\"--name\", \"other\"]"));
    let mut d = Daemon::start(&config(&plugins));
    pid_of(&d, "td-ends-0");
    // A refusal at the handshake.
    d.wait_state("td-refused-0", "failed", UP);
    let refused = wait_teardowns(&d, "td-refused", 1);
    assert_eq!(result(&refused[0]), "clean", "{refused:#?}");
    // A stop, a restart, a reload, a crash: each is one teardown, each clean.
    assert!(d.ctl(&["stop", "td-ends"]).status.success());
    wait_teardowns(&d, "td-ends", 1);
    assert!(d.ctl(&["start", "td-ends"]).status.success());
    assert!(d.ctl(&["restart", "td-ends"]).status.success());
    wait_teardowns(&d, "td-ends", 2);
    let out = d.ctl(&["reload", "td-ends"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_teardowns(&d, "td-ends", 3);
    // The old revision's sealed image went with it: the daemon holds the new one's only.
    let images = std::fs::read_dir(format!("/proc/{}/fd", d.pid()))
        .unwrap()
        .flatten()
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.display().to_string().starts_with("/memfd:td-ends")))
        .count();
    assert_eq!(images, 1, "sealed images of td-ends the daemon holds after a reload");
    let id = d.status().into_iter().find(|r| r["name"] == "td-ends").unwrap()["instance"].as_str().unwrap().to_owned();
    let pid = pid_of(&d, &id);
    // SAFETY: kill(2) of the plugin this test's daemon started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let ends = wait_teardowns(&d, "td-ends", 4);
    for e in &ends {
        assert_eq!(result(e), "clean", "{e:#}");
        assert!(message(e).starts_with("teardown clean in "), "{e:#}");
    }
    // Status keeps the last verdict.
    let row = d.wait_state(&id, "running", UP);
    assert_eq!(row["teardown"]["result"], "clean", "{row:#}");
    let metrics = String::from_utf8_lossy(&d.ctl(&["metrics"]).stdout).into_owned();
    assert!(metrics.contains("supervisor_teardowns_total{plugin=\"td-ends\",result=\"clean\"} 4"), "{metrics}");
    assert!(metrics.contains("supervisor_teardown_duration_seconds_count{plugin=\"td-ends\",result=\"clean\"} 4"));
    // A shutdown: the daemon's own log has the verdict of the instance it stopped.
    d.stop_with(libc::SIGTERM, UP);
    let log = d.log_text();
    let last = log.lines().rev().find(|l| l.contains("teardown") && l.contains(&id)).unwrap_or_default();
    assert!(last.contains("teardown clean in "), "{last}\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_double_forked_child_left_behind_is_named_killed_and_gone() {
    let d = Daemon::start(&config(&zoo_named("td-fork", "")));
    pid_of(&d, "td-fork-0");
    let escapee = zoo(&d).await.escape(Text::default()).await.expect("escape").into_inner().pid as i32;
    assert!(alive(escapee));
    assert!(d.ctl(&["stop", "td-fork"]).status.success());
    let verdict = wait_teardowns(&d, "td-fork", 1).remove(0);
    assert_eq!(result(&verdict), "cleaned", "{verdict:#}");
    // Its command name is the sealed image's (`memfd:td-fork`): it runs what was verified.
    let said = format!("process {escapee} (memfd:td-fork) outlived the instance (killed)");
    assert!(message(&verdict).contains(&said), "{verdict:#}");
    assert!(!alive(escapee), "the escapee outlived the teardown that says it was killed");
}

/// The System V IPC objects `uid` owns, as `/proc/sysvipc` lists them.
fn ipc_of(uid: u32) -> Vec<String> {
    let mut found = Vec::new();
    for table in ["shm", "sem", "msg"] {
        let text = std::fs::read_to_string(format!("/proc/sysvipc/{table}")).unwrap();
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        let uid_col = header.iter().position(|h| *h == "uid").unwrap();
        for l in lines {
            let cells: Vec<&str> = l.split_whitespace().collect();
            if cells.get(uid_col) == Some(&uid.to_string().as_str()) {
                found.push(format!("{table} {}", cells[1]));
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipc_objects_of_the_plugins_uid_are_removed_once_no_instance_of_it_remains() {
    // The tiers refuse System V IPC outright; a plugin run unsandboxed can make objects.
    let d = Daemon::start(&config_with(
        "\n[supervisor.sandbox]\nallow_unsandboxed = true\n",
        &zoo_named("td-ipc", "tier = \"none\""),
    ));
    let pid = pid_of(&d, "td-ipc-0");
    let uid: u32 = plugin_integration::procfs::status_field(pid, "Uid")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let mut z = zoo(&d).await;
    for call in ["shmget", "semget", "msgget"] {
        let r = z.syscall(SyscallRequest { name: call.into(), ..Default::default() }).await.unwrap().into_inner();
        assert!(r.result >= 0, "{call}: {r:?}");
    }
    assert_eq!(ipc_of(uid).len(), 3, "{:?}", ipc_of(uid));
    // A reload: the new instance runs as the same uid, so the old one's teardown leaves
    // the objects be, and says so.
    assert!(d.ctl(&["reload", "td-ipc"]).status.success());
    let first = wait_teardowns(&d, "td-ipc", 1).remove(0);
    assert!(
        message(&first).contains("IPC objects of its uid: 1 other instance(s) of the plugin still run as it"),
        "{first:#}"
    );
    assert_eq!(ipc_of(uid).len(), 3);
    // The last instance goes: they go with it.
    assert!(d.ctl(&["stop", "td-ipc"]).status.success());
    let last = wait_teardowns(&d, "td-ipc", 2).remove(1);
    assert_eq!(result(&last), "cleaned", "{last:#}");
    for kind in ["shared memory", "semaphore set", "message queue"] {
        assert!(message(&last).contains(kind), "{kind}: {last:#}");
    }
    assert_eq!(ipc_of(uid), Vec::<String>::new(), "left on the host");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_killed_in_the_middle_of_a_call_leaves_nothing() {
    let d = Daemon::start(&config(&zoo_named("td-kill", "")));
    let pid = pid_of(&d, "td-kill-0");
    let mut z = zoo(&d).await;
    let call = tokio::spawn(async move { z.sleep(SleepRequest { ms: 30_000 }).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // SAFETY: kill(2) of the plugin this test's daemon started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let err = tokio::time::timeout(UP, call).await.expect("the call ends").unwrap().expect_err("it cannot succeed");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    let verdict = wait_teardowns(&d, "td-kill", 1).remove(0);
    assert_eq!(result(&verdict), "clean", "{verdict:#}");
    assert!(!alive(pid));
}

fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// What the daemon's descriptors refer to, by kind (`socket`, `pipe`, `anon_inode:[pidfd]`,
/// a path, ...), sorted: what to compare when the count differs.
fn fd_kinds(pid: i32) -> Vec<String> {
    let mut kinds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .map(|t| {
                    let t = t.display().to_string();
                    t.split_once(":[").map_or(t.clone(), |(kind, _)| kind.to_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    kinds.sort();
    kinds
}

fn rss_kib(pid: i32) -> u64 {
    plugin_integration::procfs::status_field(pid, "VmRSS").unwrap().trim_end_matches(" kB").trim().parse().unwrap()
}

/// Waits for the network-namespace pool to let go of retired namespaces (it does once
/// spawning has been quiet for a second) and for the daemon's descriptors to settle.
fn quiet_fds(pid: i32) -> usize {
    // The pool's quiet time is a second; its count is steady while it waits, so the wait
    // comes first.
    std::thread::sleep(Duration::from_millis(2500));
    let mut last = fd_count(pid);
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(500));
        let now = fd_count(pid);
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_start_stop_cycles_leave_the_daemons_descriptors_and_memory_as_they_were() {
    let cycles: usize = std::env::var("TEARDOWN_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    // Small event and log rings: they fill during the warm-up, so what they hold does not
    // count as growth.
    let d =
        Daemon::start(&config_with("event_history = 100\nlog_lines = 100", &zoo_named("td-cycles", "tier = \"L3\"")));
    pid_of(&d, "td-cycles-0");
    let daemon = d.pid();
    let cycle = |n: usize| {
        for _ in 0..n {
            // A restart exits 0 once the plugin runs again: a loaded machine may take long.
            let out = d.ctl(&["--wait", "60s", "restart", "td-cycles"]);
            assert!(
                out.status.success(),
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    };
    // Warm up: the allocator's arenas, the runtime's threads, the pool and the rings reach
    // their size.
    let warm_up = (cycles / 10).clamp(30, 100);
    cycle(warm_up);
    let (fds, rss) = (quiet_fds(daemon), rss_kib(daemon));
    let kinds = fd_kinds(daemon);
    let began = Instant::now();
    cycle(cycles);
    let took = began.elapsed();
    // The pool lets its retired namespaces go, and makes its spares, in its own time: the
    // count must come back to where it was within a few quiet seconds, and stay there.
    let mut fds_after = quiet_fds(daemon);
    let deadline = Instant::now() + Duration::from_secs(15);
    while fds_after != fds && Instant::now() < deadline {
        fds_after = quiet_fds(daemon);
    }
    let rss_after = rss_kib(daemon);
    eprintln!(
        "{cycles} restarts in {took:?} ({:?} each): fds {fds} -> {fds_after}, rss {rss} -> {rss_after} KiB",
        took / cycles as u32
    );
    assert_eq!(fds_after, fds, "the daemon's descriptors after {cycles} cycles: {kinds:?} then {:?}", fd_kinds(daemon));
    assert!(rss_after as f64 <= rss as f64 * 1.05, "the daemon's RSS grew from {rss} to {rss_after} KiB");
    // Every end had a verdict, and each was clean.
    let metrics = String::from_utf8_lossy(&d.ctl(&["metrics"]).stdout).into_owned();
    let clean = format!("supervisor_teardowns_total{{plugin=\"td-cycles\",result=\"clean\"}} {}\n", warm_up + cycles);
    assert!(metrics.contains(&clean), "{clean}{metrics}");
    assert!(!metrics.contains("result=\"cleaned\"") && !metrics.contains("result=\"leftover\""), "{metrics}");
}
