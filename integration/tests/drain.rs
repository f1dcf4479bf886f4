//! A drain ends a long stream cleanly when its handler listens for it: the zoo's `Count`
//! with `until_shutdown` selects on the SDK's `ShutdownSignal`, and a stop or a reload of
//! the plugin ends a stream held through the gateway at once, with a last message saying
//! why and status OK, long before the drain deadline (`stop_timeout`). The same stream
//! without `until_shutdown` pays the drain no heed and is cut when the deadline passes:
//! the plugin exits under it, and the caller is told UNAVAILABLE.

use std::time::{Duration, Instant};

use plugin_integration::daemon::{config, plugin};
use plugin_integration::pb::zoo::CountRequest;
use plugin_integration::pb::zoo::zoo_client::ZooClient;
use plugin_integration::{Daemon, bins, connect};

const UP: Duration = Duration::from_secs(30);
/// The zoo's `stop_timeout`: the drain deadline its Shutdown call gives.
const STOP_TIMEOUT: Duration = Duration::from_secs(12);
/// How soon a stream that listens must end once the drain is asked for: "well before
/// the deadline" (a third of it: the slack a loaded machine needs).
const PROMPTLY: Duration = Duration::from_secs(4);

/// A stream held through the gateway, read to its end.
struct Held {
    texts: Vec<String>,
    /// None: it ended with OK.
    error: Option<tonic::Status>,
    ended: Instant,
}

/// Opens an endless `Count` (a message every 100 ms) through the gateway and, once its
/// first message came, reads it on in a task until it ends.
async fn hold(d: &Daemon, until_shutdown: bool) -> tokio::task::JoinHandle<Held> {
    let mut zoo = ZooClient::new(connect(&d.gateway()).await.unwrap());
    let request = CountRequest { count: u32::MAX, text: "tick".into(), interval_ms: 100, until_shutdown };
    let mut stream = zoo.count(request).await.expect("the stream opens").into_inner();
    let first = stream.message().await.expect("a first message").expect("not the end");
    assert_eq!(first.text, "tick 0");
    tokio::spawn(async move {
        let mut held = Held { texts: vec![first.text], error: None, ended: Instant::now() };
        loop {
            match stream.message().await {
                Ok(Some(t)) => held.texts.push(t.text),
                Ok(None) => break,
                Err(status) => {
                    held.error = Some(status);
                    break;
                }
            }
        }
        held.ended = Instant::now();
        held
    })
}

async fn ended(held: tokio::task::JoinHandle<Held>) -> Held {
    tokio::time::timeout(STOP_TIMEOUT * 3, held).await.expect("the stream ended").expect("the reader ran")
}

fn running_pid(d: &Daemon, id: &str) -> i64 {
    d.wait_state(id, "running", UP)["pid"].as_i64().expect("a pid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_hears_the_drain_ends_with_ok_at_once_and_one_that_does_not_is_cut_at_the_deadline() {
    // A call_timeout well past everything here: only the drain may end these streams.
    let entry = format!("stop_timeout = \"{}s\"\ncall_timeout = \"120s\"", STOP_TIMEOUT.as_secs());
    let d = Daemon::start(&config(&plugin("zoo", &bins::zoo(), &entry)));
    let first = running_pid(&d, "zoo-0");

    // Stopped by the operator: the stream says why, and ends with OK.
    let held = hold(&d, true).await;
    let asked = Instant::now();
    let out = d.ctl(&["stop", "zoo"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stop_took = asked.elapsed();
    let held = ended(held).await;
    assert!(held.error.is_none(), "the stream ended with {:?}, not OK", held.error);
    assert_eq!(held.texts.last().map(String::as_str), Some("drained: operator request"), "{:?}", held.texts);
    assert!(held.texts.len() >= 2 && held.texts[held.texts.len() - 2].starts_with("tick "), "{:?}", held.texts);
    let took = held.ended - asked;
    assert!(took < PROMPTLY, "the stream ended {took:?} after the stop was asked for (deadline {STOP_TIMEOUT:?})");
    assert!(stop_took < PROMPTLY, "the stop took {stop_took:?}: the plugin drained at once");
    let stopped = d.wait_event("stopped", &format!("pid {first} stopped"), UP);
    let message = stopped["message"].as_str().unwrap_or_default();
    assert!(message.contains("(operator request): exited with code 0"), "a clean drain: {message}");

    // Replaced by a reload: the old instance's stream says so.
    assert!(d.ctl(&["start", "zoo"]).status.success());
    let second = running_pid(&d, "zoo-0");
    let held = hold(&d, true).await;
    let asked = Instant::now();
    let out = d.ctl(&["reload", "zoo"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let held = ended(held).await;
    assert!(held.error.is_none(), "the stream ended with {:?}, not OK", held.error);
    assert_eq!(held.texts.last().map(String::as_str), Some("drained: replaced by a new revision"));
    let stopped = d.wait_event("stopped", &format!("pid {second} stopped"), UP);
    let message = stopped["message"].as_str().unwrap_or_default();
    assert!(message.contains("(replaced by a new revision): exited with code 0"), "a clean drain: {message}");
    // The reload waits for the new revision, not for the old one's drain.
    assert!(held.ended - asked < UP);

    // The contrast: a handler that ignores the drain is cut when its deadline passes; the
    // stop waits past it (`--wait` longer than stop_timeout), so it answers stopped.
    let third = running_pid(&d, "zoo-1");
    let held = hold(&d, false).await;
    let asked = Instant::now();
    let wait = format!("{}s", STOP_TIMEOUT.as_secs() + 10);
    let out = d.ctl(&["--wait", &wait, "stop", "zoo"]);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let held = ended(held).await;
    let took = held.ended - asked;
    assert!(
        took >= STOP_TIMEOUT.mul_f64(0.9) && took < STOP_TIMEOUT + Duration::from_secs(4),
        "cut {took:?} after the stop was asked for, not at the drain deadline {STOP_TIMEOUT:?}"
    );
    assert!(held.texts.iter().all(|t| t.starts_with("tick ")), "{:?}", held.texts);
    let status = held.error.expect("the cut stream does not end with OK");
    assert_eq!(
        (status.code(), status.message()),
        (
            tonic::Code::Unavailable,
            format!("plugin \"zoo\" (pid {third}): connection lost mid-call: stream closed because of a broken pipe")
                .as_str()
        )
    );
}

/// A plugin that has drained exits at once, though a blocking job one of its handlers
/// started (the zoo's `stuck_blocking`: a `spawn_blocking` that sleeps two minutes) is
/// still running: dropping the runtime waited for it, and the plugin, drained, was killed
/// at its stop timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_job_still_running_does_not_hold_a_drained_plugins_exit() {
    let entry = format!("stop_timeout = \"{}s\"", STOP_TIMEOUT.as_secs());
    let d = Daemon::start(&config(&plugin("zoo", &bins::zoo(), &entry)));
    let pid = running_pid(&d, "zoo-0");
    let mut zoo = ZooClient::new(connect(&d.gateway()).await.unwrap());
    let req = plugin_integration::pb::zoo::SyscallRequest { name: "stuck_blocking".into(), ..Default::default() };
    assert_eq!(zoo.syscall(req).await.unwrap().into_inner().result, 0);
    let asked = Instant::now();
    let out = d.ctl(&["stop", "zoo"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let took = asked.elapsed();
    let stopped = d.wait_event("stopped", &format!("pid {pid} stopped"), UP);
    let message = stopped["message"].as_str().unwrap_or_default();
    assert!(message.contains("(operator request): exited with code 0"), "a clean exit: {message}");
    assert!(took < PROMPTLY, "the stop took {took:?} (stop timeout {STOP_TIMEOUT:?})");
}

/// The zoo under the SDK's test harness, whose stop gives it `drain`.
async fn zoo_draining_for(drain: Duration) -> plugin_sdk::testing::TestPlugin {
    plugin_sdk::testing::Options::named("zoo")
        .stop_timeout(drain)
        .start_binary(bins::zoo())
        .await
        .expect("the zoo starts")
}

/// A drain that runs to its deadline (a call that pays it no heed) with a blocking job
/// stuck leaves the plugin its log flush and its wait for blocking jobs only within the
/// supervisor's grace past the deadline: the wait alone took it there (the flush could
/// take 500 ms more), and the plugin, about to exit by itself, was sent SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_that_runs_to_its_deadline_still_ends_the_plugin_within_the_grace_after_it() {
    use plugin_integration::pb::zoo::{SleepRequest, SyscallRequest};
    let drain = Duration::from_millis(500);
    let plugin = zoo_draining_for(drain).await;
    let mut zoo = ZooClient::new(plugin.channel());
    let req = SyscallRequest { name: "stuck_blocking".into(), ..Default::default() };
    assert_eq!(zoo.syscall(req).await.expect("a stuck blocking job").into_inner().result, 0);
    let mut sleeper = zoo.clone();
    let heedless = tokio::spawn(async move { sleeper.sleep(SleepRequest { ms: 60_000 }).await });
    plugin.wait_for_log(|l| l.message == "sleeping").await.expect("the sleep began");
    let stopped = plugin.shutdown().await.expect("a stop");
    assert_eq!(stopped.in_flight, Some(1), "{stopped:?}");
    assert!(stopped.ended.is_clean(), "{stopped:?}");
    let grace = plugin_sdk::plugin_proto::launch::EXIT_AFTER_DRAIN;
    assert!(stopped.took >= drain && stopped.took < drain + grace, "took {:?}", stopped.took);
    heedless.abort();
}

/// A drain whose calls are done at once leaves a blocking job about to end its whole
/// grace (250 ms): the supervisor's connection closing at the drain's end was taken for
/// the deadline, and the grace cut to what the deadline's bound left of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_done_early_still_waits_for_a_blocking_job_about_to_end() {
    use plugin_integration::pb::zoo::SyscallRequest;
    use plugin_sdk::testing::LogSource;
    let plugin = zoo_draining_for(Duration::from_secs(5)).await;
    let mut zoo = ZooClient::new(plugin.channel());
    let req = SyscallRequest { name: "brief_blocking".into(), ..Default::default() };
    assert_eq!(zoo.syscall(req).await.expect("a brief blocking job").into_inner().result, 0);
    let stopped = plugin.shutdown().await.expect("a stop");
    assert_eq!(stopped.in_flight, Some(0), "{stopped:?}");
    assert!(stopped.ended.is_clean(), "{stopped:?}");
    assert!(
        stopped.logs.iter().any(|l| l.source == LogSource::Stderr && l.message == "zoo: the brief blocking job ended"),
        "the job was cut: {stopped:?}"
    );
}
