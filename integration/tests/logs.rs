//! Logs that cannot flood, end to end: a plugin writing to stdout, or logging through
//! its SDK, as fast as it can costs the daemon little and leaves a sibling's call p99
//! close to what it is without the flood (same run, windows with and without the flood
//! taken in turn: see `plugin_integration::flood`); what was dropped shows in `tail` and
//! the metrics, and kept lines reach the daemon's output.
//!
//! The figures (at most 10% of a core, p99 within 1.5x) are measured in the
//! release build by `bench --only logflood`, which says ok or MISSED against them. Here,
//! in a debug build beside other tests, the same measure is looser (the SDK case's p99
//! ratio went over 1.5x in 3 of 7 debug runs): the bounds below hold with margin there
//! and still fail when the limit stops working (a flood read at full speed costs the
//! daemon most of a core and the sibling several times its p99).

use std::time::{Duration, Instant};

use plugin_integration::daemon::{config, plugin};
use plugin_integration::pb::zoo::PrintRequest;
use plugin_integration::pb::zoo::zoo_client::ZooClient;
use plugin_integration::{Daemon, bins, connect};
use serde_json::Value;

const UP: Duration = Duration::from_secs(30);
/// The debug-build bounds (see above): the daemon's CPU over the flood, as a share of a
/// core, and the sibling's p99 with the flood over without.
const MOST_CPU: f64 = 0.25;
const MOST_P99_RATIO: f64 = 3.0;
/// One daemon at a time: two floods at once, or a daemon starting beside a flood, would
/// be measured with it.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn flood_is_contained(stream: &str) {
    let _one = ONE_AT_A_TIME.lock().await;
    let (f, d) = plugin_integration::flood::measure(stream).await.unwrap();
    let figures = &f.json;
    println!("{figures}");
    assert!(f.daemon_cpu <= MOST_CPU, "the flood cost the daemon {:.1}% of a core: {figures}", f.daemon_cpu * 100.0);
    assert!(f.p99_ratio <= MOST_P99_RATIO, "the sibling's p99 rose {:.2}x during the flood: {figures}", f.p99_ratio);
    // The limit kept at most log_rate of the flood, and dropped the rest.
    assert!(f.kept > 1000.0 && f.kept <= f.most_kept, "at most {}: {figures}", f.most_kept);
    assert!(f.dropped > f.kept, "{figures}");

    // Each gap is said where it is, with the stream and instance.
    let tail = String::from_utf8_lossy(&d.ctl(&["tail", "-n", "2000", "flood"]).stdout).into_owned();
    let note = tail.lines().find(|l| l.contains("suppressed ")).unwrap_or_else(|| panic!("no note in\n{tail}"));
    assert!(note.contains(&format!(" flood-0 {stream} WARN suppressed ")), "{note}");
    assert!(note.contains("messages (over the plugin's log_rate 1000/s, log_burst 2000) suppressed="), "{note}");
    // Kept lines are forwarded to the daemon's output (text, the default), marked with the
    // plugin, instance and stream.
    let forwarded = format!("plugin=flood instance=flood-0 stream={stream}");
    assert!(d.log_text().lines().any(|l| l.contains(&forwarded)), "{}", d.log_tail(20));
}

#[tokio::test]
async fn a_plugin_flooding_stdout_costs_the_daemon_little_and_not_its_sibling() {
    flood_is_contained("stdout").await;
}

#[tokio::test]
async fn a_plugin_flooding_its_sdk_log_costs_the_daemon_little_and_not_its_sibling() {
    flood_is_contained("sdk").await;
}

#[tokio::test]
async fn the_daemon_writes_its_own_and_forwarded_plugin_logs_as_json() {
    let _one = ONE_AT_A_TIME.lock().await;
    let d = Daemon::start_with_args(&config(&plugin("zoo", &bins::zoo(), "")), &["--log-format", "json"]);
    d.wait_state("zoo-0", "running", UP);
    let mut zoo = ZooClient::new(connect(&d.gateway()).await.unwrap());
    zoo.print(PrintRequest { text: "hello".into(), lines: 2 }).await.unwrap();
    let deadline = Instant::now() + UP;
    let lines = loop {
        let text = d.log_text();
        // The last line may be only partly written while the daemon is still logging.
        let whole = &text[..text.rfind('\n').map_or(0, |end| end + 1)];
        let lines: Vec<Value> =
            whole.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
        let sdk = |v: &Value| v["stream"] == "sdk" && v["fields"]["message"] == "printed";
        if lines.iter().any(sdk) && lines.iter().filter(|v| v["fields"]["message"] == "hello 1").count() == 1 {
            break lines;
        }
        assert!(Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The daemon's own, as tracing-subscriber's json formatter writes them.
    assert!(
        lines
            .iter()
            .any(|v| v["target"].as_str().is_some_and(|t| t.starts_with("plugin_supervisor")) && v["level"] == "INFO"),
        "{lines:?}"
    );
    // A plugin's stdout line and an SDK record with its structured fields.
    let out = lines.iter().find(|v| v["fields"]["message"] == "hello 1").unwrap();
    assert_eq!(
        (&out["plugin"], &out["instance"], &out["stream"], &out["level"]),
        (&"zoo".into(), &"zoo-0".into(), &"stdout".into(), &"INFO".into()),
        "{out}"
    );
    let rec = lines.iter().find(|v| v["stream"] == "sdk" && v["fields"]["message"] == "printed").unwrap();
    assert_eq!(
        (&rec["fields"]["lines"], &rec["fields"]["text"], &rec["instance"]),
        (&"2".into(), &"hello".into(), &"zoo-0".into()),
        "{rec}"
    );
    assert!(rec["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{rec}");
}

/// A plugin whose `main` set a `log` logger before `serve` (as `env_logger::init()`
/// does) still sends its `tracing` records: the SDK took the `log` bridge's refusal for
/// its subscriber's, and dropped every record, its own panics and drain notes too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_reach_the_supervisor_though_a_log_logger_was_set_first() {
    let _one = ONE_AT_A_TIME.lock().await;
    let plugin = plugin_sdk::testing::Options::named("zoo")
        .arg("--log-logger-first")
        .start_binary(bins::zoo())
        .await
        .expect("the zoo starts");
    let mut zoo = ZooClient::new(plugin.channel());
    let req = PrintRequest { lines: 0, text: "after a log logger".into() };
    assert_eq!(zoo.print(req).await.expect("Print").into_inner().text, "printed 0");
    let line = plugin.wait_for_log(|l| l.message == "printed").await.expect("the record");
    assert_eq!(line.fields.get("text").map(String::as_str), Some("after a log logger"), "{line:?}");
    let stopped = plugin.shutdown().await.expect("a stop");
    assert!(stopped.ended.is_clean(), "{stopped:?}");
}

/// Every panic of a handler is in the plugin's log, and Rust's own report of it reaches
/// stderr at most once a second (a line saying where and why in its place otherwise): each report was a synchronous write on the plugin's one
/// thread, and the supervisor reads stderr at a bounded rate, so a caller making a handler
/// panic in a loop could stall everything the plugin does.
#[tokio::test]
async fn a_handler_panicking_in_a_loop_is_logged_each_time_and_reported_on_stderr_once_a_second() {
    let _one = ONE_AT_A_TIME.lock().await;
    use plugin_integration::pb::zoo::Text;
    use plugin_sdk::testing::LogSource;
    let plugin = plugin_sdk::testing::Options::named("zoo").start_binary(bins::zoo()).await.unwrap();
    let mut zoo = ZooClient::new(plugin.channel());
    let t0 = Instant::now();
    for i in 0..100 {
        let status = zoo.panic(Text { text: format!("#{i}") }).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Internal, "{status:?}");
    }
    let seconds = t0.elapsed().as_secs() + 1;
    // Each stream is in order, but the two are read apart: the last panic's line on
    // stderr may come before its log record (waiting for either one alone lost the other
    // on a loaded machine), so wait for both.
    let last = "zoo was asked to panic: #99";
    plugin.wait_for_log(|l| l.source != LogSource::Stderr && l.message.contains(last)).await.unwrap();
    plugin.wait_for_log(|l| l.source == LogSource::Stderr && l.message.contains(last)).await.unwrap();
    let logs = plugin.logs();
    let logged = logs.iter().filter(|l| l.source != LogSource::Stderr && l.message.starts_with("panic: ")).count();
    let reported = logs.iter().filter(|l| l.source == LogSource::Stderr && l.message.contains("panicked at")).count();
    assert_eq!(logged, 100);
    assert!((1..=seconds as usize).contains(&reported), "{reported} reports on stderr in {seconds} s");
    // Each of the others is a line saying where and why (a panic that ends the process
    // may leave no log record).
    let lines = logs.iter().filter(|l| l.source == LogSource::Stderr && l.message.starts_with("panic at "));
    let said: Vec<&str> = lines.map(|l| l.message.as_str()).collect();
    assert_eq!(said.len() + reported, 100, "{said:?}");
    assert!(
        said.iter()
            .all(|l| l.contains(": zoo was asked to panic: #")
                && l.ends_with("(Rust's report of it skipped: one a second)")),
        "{said:?}"
    );
    assert!(plugin.shutdown().await.unwrap().ended.is_clean());
}
