//! Canary rollouts with real processes. A plugin whose entry says `strategy = "canary"`
//! is reloaded into a canary that takes a growing share of calls: a good one is promoted
//! step by step without a failed call, and new versions that fail one call in ten, are
//! three times slower, or crash are each rolled back on their own, with the numbers of
//! the verdict in `supervisorctl rollout status`. The load runs through the gateway, and
//! through an embedded channel in a supervisor in this process.

use std::time::{Duration, Instant};

use plugin_integration::daemon::{config, config_with, plugin};
use plugin_integration::load::{Load, Outcome, STEADY};
use plugin_integration::pb::zoo::Text;
use plugin_integration::pb::zoo::zoo_client::ZooClient;
use plugin_integration::{Daemon, bins, connect};
use plugin_supervisor::Supervisor;
use plugin_supervisor::config::Config;
use plugin_supervisor::reload::ReloadOptions;
use plugin_supervisor::rollout::{Action, Phase};
use serde_json::Value;

const UP: Duration = Duration::from_secs(30);

/// Quick steps; latencies under 50 ms are not judged as ratios (a debug build on a loaded
/// machine makes the p99 of a few dozen calls anything up to that), so where slowness is
/// the point the version is made slow in tens of milliseconds and the floor lowered.
const ROLLOUT: &str = "[plugin.rollout]\nstrategy = \"canary\"\nsteps = [20, 50, 100]\nstep_interval = \"1s\"\nmin_calls = 20\np99_floor = \"50ms\"\n";

async fn echo<C>(mut client: ZooClient<C>) -> Result<String, tonic::Status>
where
    C: tonic::client::GrpcService<tonic::body::Body>,
    C::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    C::ResponseBody: tonic::codegen::Body<Data = bytes::Bytes> + Send + 'static,
    <C::ResponseBody as tonic::codegen::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    client.echo(Text { text: STEADY.into() }).await.map(|r| r.into_inner().text)
}

/// The zoo with `args`, rolled out as a canary.
fn zoo(args: &str) -> String {
    zoo_rolled_out(args, ROLLOUT)
}

fn zoo_rolled_out(args: &str, rollout: &str) -> String {
    plugin("zoo", &bins::zoo(), &format!("replicas = 2\nargs = {args}\n{rollout}"))
}

/// Writes the zoo's entry with `args` into the daemon's config and reloads it: the canary
/// starts.
fn reload_into(d: &Daemon, args: &str) -> String {
    let text = std::fs::read_to_string(&d.config).unwrap();
    let start = text.find("args = ").unwrap();
    let end = start + text[start..].find('\n').unwrap();
    std::fs::write(&d.config, format!("{}args = {args}{}", &text[..start], &text[end..])).unwrap();
    let out = tokio::task::block_in_place(|| d.ctl(&["reload", "zoo"]));
    assert!(out.status.success(), "reload: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `rollout status zoo --json`, once its phase is `phase`.
fn wait_phase(d: &Daemon, phase: &str) -> Value {
    let deadline = Instant::now() + UP;
    loop {
        let out = d.ctl(&["rollout", "status", "zoo", "--json"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        if report["phase"] == phase {
            return report;
        }
        assert!(Instant::now() < deadline, "the rollout never became {phase}: {report}\n{}", d.log_tail(40));
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until only revision `rev`'s instances are left.
fn only_revision(d: &Daemon, rev: u64) {
    let deadline = Instant::now() + UP;
    while !d.status().iter().all(|v| v["revision"] == rev) {
        assert!(Instant::now() < deadline, "revisions other than {rev} stayed: {:?}", d.status());
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn gateway_load(d: &Daemon, callers: usize) -> Load {
    let mut load = Load::new();
    for _ in 0..callers {
        let client = ZooClient::new(connect(&d.gateway()).await.unwrap());
        load.caller(move || echo(client.clone()));
    }
    load
}

/// Every failure the load saw is one of `allowed`'s words.
fn only_failures_like(seen: &Outcome, allowed: &[&str]) {
    assert!(seen.failures.iter().all(|f| allowed.iter().any(|a| f.contains(a))), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_canary_is_promoted_step_by_step_without_a_failed_call() {
    let d = Daemon::start(&config(&zoo("[\"--version\", \"1.0.0\"]")));
    d.wait_state("zoo-0", "running", UP);
    d.wait_state("zoo-1", "running", UP);
    let load = gateway_load(&d, 2).await;
    let said = reload_into(&d, "[\"--version\", \"1.1.0\"]");
    assert!(said.starts_with("zoo: revision 2 takes 20% of calls as a canary (pid "), "{said}");
    // While it runs, status shows both revisions and each one's share.
    let rows = d.status();
    let notes = |rev: u64| -> Vec<String> {
        rows.iter()
            .filter(|v| v["revision"] == rev)
            .flat_map(|v| v["notes"].as_array().cloned().unwrap_or_default())
            .map(|n| n.as_str().unwrap_or("").to_owned())
            .collect()
    };
    // At its first step, or (on a machine slow to ask) a later one: a second's step may
    // have passed, or two, since the reload answered.
    let (step, share) = [(1, 20), (2, 50), (3, 100)]
        .into_iter()
        .find(|(step, _)| notes(2).iter().any(|n| n.contains(&format!("rollout running at step {step} of 3"))))
        .unwrap_or_else(|| panic!("no step running: {rows:?}"));
    let canary = format!("canary: {share}% of calls, rollout running at step {step} of 3");
    let stable = format!("stable: {}% of calls", 100 - share);
    assert!(notes(2).iter().any(|n| n.starts_with(&canary)), "{rows:?}");
    assert!(notes(1).iter().any(|n| n.starts_with(&stable)), "{rows:?}");
    let report = wait_phase(&d, "promoted");
    let judged = report["judged"].as_array().unwrap();
    let steps: Vec<(u64, bool)> =
        judged.iter().map(|s| (s["share"].as_u64().unwrap(), s["passed"].as_bool().unwrap())).collect();
    assert_eq!(steps, [(20, true), (50, true), (100, true)], "{report}");
    assert!(judged.iter().all(|s| s["numbers"]["canary_calls"].as_u64().unwrap() >= 20), "{report}");
    only_revision(&d, 2);
    let seen = load.finish().await;
    assert_eq!(seen.failed, 0, "{seen:?}\n{}", d.log_tail(40));
    assert!(seen.calls > 200, "{seen:?}");
    assert!(d.instance("zoo-2")["version"] == "1.1.0", "{:?}", d.status());
    d.wait_event("promoted", "revision 2 serves every call", UP);
    // The text form names both revisions and every step.
    let text = String::from_utf8_lossy(&d.ctl(&["rollout", "status", "zoo"]).stdout).into_owned();
    assert!(text.starts_with("zoo: rollout promoted — revision 2 (canary) beside revision 1 (stable)"), "{text}");
    assert_eq!(text.matches(": passed: passed [canary ").count(), 3, "{text}");
}

/// The verdict of the rolled-back rollout in `report`: its failed step's numbers.
fn failed_step(report: &Value) -> &Value {
    eprintln!("rolled back: {}", report["note"]);
    report["judged"].as_array().unwrap().iter().find(|s| s["passed"] == false).unwrap_or_else(|| panic!("{report}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canaries_that_fail_calls_are_slower_or_crash_are_rolled_back_on_their_own() {
    // The stable version answers in 30 ms, so that three times slower stands far above
    // what scheduling adds to a p99 on a busy two-core machine (some 10 ms).
    // Each instance fails every tenth of its own calls: a step is judged on enough calls
    // for that to be one in ten of the step's. A p99 over 1.5 times the stable one's
    // fails: scheduling on a busy machine adds tens of milliseconds to both p99s, which
    // brings three times slower calls to a p99 ratio of 2.3 to 2.9 here.
    let rollout = ROLLOUT
        .replace("min_calls = 20", "min_calls = 60\nmax_p99_ratio = 1.5")
        .replace("\"1s\"", "\"2s\"")
        .replace("\"50ms\"", "\"5ms\"");
    let d = Daemon::start(&config(&zoo_rolled_out("[\"--echo-delay-ms\", \"30\"]", &rollout)));
    d.wait_state("zoo-0", "running", UP);
    d.wait_state("zoo-1", "running", UP);
    let pids = |d: &Daemon| -> Vec<i64> { d.status().iter().filter_map(|v| v["pid"].as_i64()).collect() };
    let stable_pids = pids(&d);
    let load = gateway_load(&d, 4).await;

    // One call in ten fails.
    reload_into(&d, "[\"--echo-delay-ms\", \"30\", \"--fail-every\", \"10\"]");
    let report = wait_phase(&d, "rolled-back");
    let step = failed_step(&report);
    let rate = step["numbers"]["error_rate"].as_f64().unwrap();
    assert!((0.07..0.13).contains(&rate), "{report}");
    assert!(step["verdict"].as_str().unwrap().ends_with("over max_error_rate 1.0%"), "{report}");
    assert!(report["note"].as_str().unwrap().contains("failed ("), "the numbers are in the note: {report}");
    only_revision(&d, 1);

    // Three times slower.
    reload_into(&d, "[\"--echo-delay-ms\", \"90\"]");
    let report = wait_phase(&d, "rolled-back");
    let step = failed_step(&report);
    let ratio = step["numbers"]["p99_ratio"].as_f64().unwrap();
    assert!(ratio > 1.5 && ratio < 4.5, "{report}");
    assert!(step["verdict"].as_str().unwrap().starts_with("p99 "), "{report}");
    assert!(step["numbers"]["canary_p99"].as_u64().unwrap() >= 90_000, "{report}");
    only_revision(&d, 1);

    // Crashes during its first step.
    reload_into(&d, "[\"--echo-delay-ms\", \"30\", \"--die-after-ms\", \"1500\"]");
    let report = wait_phase(&d, "rolled-back");
    let note = report["note"].as_str().unwrap();
    assert!(note.contains("canary instance zoo-") && note.contains("failed: exited with code 3"), "{report}");
    assert!(note.contains("[canary "), "with the numbers seen until then: {report}");
    eprintln!("rolled back: {note}");
    only_revision(&d, 1);

    let seen = load.finish().await;
    // Only the canaries' own failures reached callers: the failing version's INTERNALs,
    // and calls in flight on the instance that crashed.
    only_failures_like(&seen, &["failed on purpose", "connection failed", "broken pipe", "stream closed"]);
    assert!(seen.failed * 20 < seen.calls, "{seen:?}");
    let kinds: Vec<String> = d
        .events()
        .iter()
        .filter(|e| e["kind"] == "rolled-back")
        .map(|e| e["message"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds.len(), 3, "{kinds:?}");
    // The stable revision served on, the same processes.
    assert!(d.status().iter().all(|v| v["revision"] == 1 && v["state"] == "running"), "{:?}", d.status());
    assert_eq!(pids(&d), stable_pids);
}

/// Callers through an embedded channel to `sup` and through its gateway on `socket`, at
/// the same time.
async fn both_loads(sup: &Supervisor, socket: &std::path::Path) -> Load {
    let mut load = Load::new();
    let embedded = ZooClient::new(sup.channel("zoo").unwrap());
    load.caller(move || echo(embedded.clone()));
    let gateway = ZooClient::new(connect(socket).await.unwrap());
    load.caller(move || echo(gateway.clone()));
    load
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_host_and_gateway_callers_at_once_see_a_canary_promoted_and_a_bad_one_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("embedded.toml");
    let text = config_with("", &zoo("[\"--version\", \"1.0.0\"]"))
        .replace("[supervisor.cgroup]\n", "[supervisor.cgroup]\nmove_self = false\n");
    std::fs::write(&path, &text).unwrap();
    let sup = Supervisor::start(Config::load(&path).unwrap()).await.unwrap();
    sup.wait_running("zoo", UP).await.unwrap();
    // The supervisor's gateway, served here as the daemon serves it.
    let socket = dir.path().join("gateway.sock");
    let limits = plugin_supervisor::routing::server::Limits::new(Default::default()).unwrap();
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let served = tokio::spawn(plugin_supervisor::routing::server::serve(listener, sup.gateway(), limits));
    let load = both_loads(&sup, &socket).await;
    let until = |phase: Phase| {
        let sup = &sup;
        async move {
            let deadline = Instant::now() + UP;
            loop {
                let (_, report) = sup.rollout("zoo", Action::Status).await.unwrap();
                let report = report.unwrap();
                if report.phase == phase {
                    return report;
                }
                assert!(Instant::now() < deadline, "never {phase}: {report}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    std::fs::write(&path, text.replace("\"1.0.0\"", "\"1.1.0\"")).unwrap();
    let done = sup.reload("zoo", ReloadOptions::default()).await.unwrap();
    assert_eq!(done.canary, Some(20));
    let report = until(Phase::Promoted).await;
    assert_eq!(report.judged.len(), 3, "{report}");
    let seen = load.finish().await;
    assert_eq!(seen.failed, 0, "{seen:?}");

    let load = both_loads(&sup, &socket).await;
    std::fs::write(&path, text.replace("\"1.0.0\"", "\"1.2.0\", \"--fail-every\", \"10\"")).unwrap();
    sup.reload("zoo", ReloadOptions::default()).await.unwrap();
    let report = until(Phase::RolledBack).await;
    assert!(report.judged[0].verdict.starts_with("error rate"), "{report}");
    assert_eq!(sup.plugin("zoo").unwrap().serving().number, 2, "the promoted revision serves on");
    let seen = load.finish().await;
    only_failures_like(&seen, &["failed on purpose"]);
    served.abort();
    sup.shutdown().await;
}

/// Copies `from` over `to` as a rebuild does: a new file renamed over the old path, one
/// byte longer so that its digest differs.
fn rebuild(from: &std::path::Path, to: &std::path::Path, extra: u8) {
    let new = to.with_extension("new");
    let mut bytes = std::fs::read(from).unwrap();
    bytes.push(extra);
    std::fs::write(&new, bytes).unwrap();
    std::fs::set_permissions(&new, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::rename(&new, to).unwrap();
}

fn shas(d: &Daemon) -> Vec<String> {
    d.status().iter().map(|v| v["sha256"].as_str().unwrap_or("").to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_under_way_comes_back_interrupted_on_the_stable_binary_after_a_restart() {
    // The plugin's binary is rebuilt in place for the canary: only the copy the supervisor
    // kept can bring the stable revision back.
    let bin_dir = tempfile::tempdir().unwrap();
    let binary = bin_dir.path().join("zoo");
    rebuild(&bins::zoo(), &binary, 1);
    let slow = ROLLOUT.replace("\"1s\"", "\"600s\"");
    let mut d = Daemon::start(&config(&plugin("zoo", &binary, &format!("args = []\n{slow}"))));
    d.wait_state("zoo-0", "running", UP);
    let stable = shas(&d);
    rebuild(&bins::zoo(), &binary, 2);
    let said = tokio::task::block_in_place(|| d.ctl(&["reload", "zoo"]));
    assert!(String::from_utf8_lossy(&said.stdout).contains("takes 20% of calls as a canary"), "{said:?}");
    let canary = d.instance("zoo-1")["sha256"].as_str().unwrap().to_owned();
    assert_ne!(vec![canary.clone()], stable);

    tokio::task::block_in_place(|| d.restart());
    d.wait_state("zoo-0", "running", UP);
    assert_eq!(shas(&d), stable, "back on the stable binary, not the file's");
    let report = wait_phase(&d, "interrupted");
    assert_eq!(
        (report["stable_revision"].as_u64(), report["canary_revision"].as_u64()),
        (Some(1), Some(2)),
        "{report}"
    );
    let notes = d.instance("zoo-0")["notes"].to_string();
    assert!(notes.contains("rollout resume zoo"), "{notes}");
    d.wait_event("rollout-interrupted", "the stable revision serves", UP);
    // Calls are answered meanwhile, by the stable revision.
    let mut client = ZooClient::new(connect(&d.gateway()).await.unwrap());
    assert_eq!(echo(client.clone()).await.unwrap(), STEADY);

    let out = tokio::task::block_in_place(|| d.ctl(&["rollout", "resume", "zoo"]));
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success() && said.starts_with("zoo: revision 2 takes 20% of calls as a canary"), "{out:?}");
    wait_phase(&d, "running");
    let out = tokio::task::block_in_place(|| d.ctl(&["rollout", "promote", "zoo"]));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "zoo: revision 2 promoted", "{out:?}");
    wait_phase(&d, "promoted");
    only_revision(&d, 2);
    assert_eq!(shas(&d), std::slice::from_ref(&canary));
    assert_eq!(client.echo(Text { text: "after".into() }).await.unwrap().into_inner().text, "after");

    // Promoted, nothing of it is kept: the next start runs the file as it is.
    tokio::task::block_in_place(|| d.restart());
    d.wait_state("zoo-0", "running", UP);
    assert_eq!(shas(&d), [canary]);
    let out = d.ctl(&["rollout", "status", "zoo"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no rollout to show (none has run since the supervisor started"),
        "{out:?}"
    );
    let kept = std::fs::read_dir(d.config.parent().unwrap().join("state/images")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(kept, 0, "the stable binary's copy went with the rollout");
}
