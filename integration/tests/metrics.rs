//! Metrics as operators scrape them: calls by plugin and gRPC code with
//! their latency, lifecycle events, and each instance's state, restarts and
//! resource use; the same through `supervisorctl metrics` and through
//! `GET /metrics` on `metrics_listen`.

use std::io::{Read, Write};
use std::time::Duration;

use plugin_integration::daemon::{config_with, plugin};
use plugin_integration::pb::echo::EchoRequest;
use plugin_integration::pb::echo::echo_client::EchoClient;
use plugin_integration::pb::zoo::SleepRequest;
use plugin_integration::pb::zoo::zoo_client::ZooClient;
use plugin_integration::{Daemon, bins, connect};

const UP: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A plain HTTP/1.1 request, as Prometheus makes it: (status line and
/// headers, body); both empty when the server hangs up without answering.
fn http_get(port: u16, path: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = String::new();
    if write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").is_ok() {
        // A reset (the request was turned away) leaves what was read.
        let _ = s.read_to_string(&mut out);
    }
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (head.to_owned(), body.to_owned())
}

/// The value of the series `name{labels}` in `text`.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn calls_events_and_instances_are_scraped_the_same_both_ways() {
    let port = free_port();
    let plugins = format!(
        "{}{}",
        plugin("zoo", &bins::zoo(), "call_timeout = \"300ms\""),
        plugin("echo", &bins::example("echo"), ""),
    );
    let d = Daemon::start(&config_with(&format!("metrics_listen = \"127.0.0.1:{port}\""), &plugins));
    d.wait_state("zoo-0", "running", UP);
    let before = d.wait_state("echo-0", "running", UP);

    let ch = connect(&d.gateway()).await.unwrap();
    let mut echo = EchoClient::new(ch.clone());
    for _ in 0..3 {
        echo.echo(EchoRequest { message: "hi".into() }).await.unwrap();
    }
    let err = ZooClient::new(ch).sleep(SleepRequest { ms: 2000 }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded);
    let out = d.ctl(&["call", "echo", "echo.v1.Echo/Echo", "--data", r#"{"message":"m"}"#]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // kill -9: one restart and one "exited" event.
    let old = before["pid"].as_i64().unwrap() as i32;
    // SAFETY: kill(2) on the pid the supervisor reports for its instance.
    unsafe { libc::kill(old, libc::SIGKILL) };
    d.wait_for("echo-0", UP, "restarted", |v| {
        v["state"] == "running" && v["restarts"] == 1 && v["pid"].as_i64() != Some(i64::from(old))
    });
    // Usage comes from the 1 s sampler.
    d.wait_for("zoo-0", UP, "sampled", |v| v["usage"]["memory_current"].as_u64().is_some_and(|m| m > 0));

    let out = d.ctl(&["metrics"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (head, scraped) = http_get(port, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: application/openmetrics-text"), "{head}");

    for text in [String::from_utf8_lossy(&out.stdout).to_string(), scraped] {
        let v = |series: &str| value(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
        assert_eq!(v(r#"supervisor_calls_total{plugin="echo",code="OK",source="plugin"}"#), 4.0);
        assert_eq!(v(r#"supervisor_calls_total{plugin="zoo",code="DEADLINE_EXCEEDED",source="deadline"}"#), 1.0);
        assert_eq!(v(r#"supervisor_call_duration_seconds_count{plugin="echo"}"#), 4.0);
        assert!(v(r#"supervisor_call_duration_seconds_sum{plugin="zoo"}"#) >= 0.29, "the deadline call took 300 ms");
        assert_eq!(v(r#"supervisor_events_total{plugin="echo",kind="exited"}"#), 1.0);
        assert_eq!(v(r#"supervisor_instance_up{plugin="echo",plugin_instance="echo-0",revision="1"}"#), 1.0);
        assert_eq!(
            v(r#"supervisor_instance_state{plugin="zoo",plugin_instance="zoo-0",revision="1",state="running"}"#),
            1.0
        );
        assert_eq!(
            v(r#"supervisor_instance_restarts_total{plugin="echo",plugin_instance="echo-0",revision="1"}"#),
            1.0
        );
        assert!(v(r#"supervisor_instance_memory_bytes{plugin="zoo",plugin_instance="zoo-0",revision="1"}"#) > 0.0);
        assert!(v(r#"supervisor_instance_pids{plugin="zoo",plugin_instance="zoo-0",revision="1"}"#) >= 1.0);
        // Every phase of the starts (two of echo, the second after the kill) and of the
        // crash's teardown.
        for phase in ["verify", "spawn", "handshake", "init", "health"] {
            let count = v(&format!(r#"supervisor_phase_duration_seconds_count{{plugin="echo",phase="{phase}"}}"#));
            assert_eq!(count, 2.0, "{phase}");
        }
        assert_eq!(v(r#"supervisor_phase_duration_seconds_count{plugin="echo",phase="teardown"}"#), 1.0);
        assert!(v(r#"supervisor_phase_duration_seconds_sum{plugin="zoo",phase="spawn"}"#) > 0.0);
        // The crash's teardown, proven clean.
        assert_eq!(v(r#"supervisor_teardowns_total{plugin="echo",result="clean"}"#), 1.0);
        assert_eq!(v(r#"supervisor_teardown_duration_seconds_count{plugin="echo",result="clean"}"#), 1.0);
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    // `status --phases`: the last start's and stop's, per instance, in ms.
    let out = d.ctl(&["status", "echo", "--phases"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "last start and stop of each instance, in ms:", "{text}");
    let header: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(header, ["INSTANCE", "REV", "VERIFY", "SPAWN", "HANDSHAKE", "INIT", "HEALTH", "DRAIN", "TEARDOWN"]);
    let row: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(&row[..2], ["echo-0", "1"], "{text}");
    assert!(row[2..7].iter().all(|ms| ms.parse::<f64>().is_ok_and(|ms| ms >= 0.0)), "{text}");
    assert!(row[3].parse::<f64>().unwrap() > 0.0, "a spawn takes time: {text}");
    assert_eq!(row[7], "-", "no stop yet (a crash has no drain): {text}");
    assert!(row[8].parse::<f64>().is_ok(), "the crash's teardown: {text}");
    let json = d.instance("echo-0");
    let phases: Vec<&str> = json["phases"].as_array().unwrap().iter().map(|p| p["phase"].as_str().unwrap()).collect();
    assert_eq!(phases, ["verify", "spawn", "handshake", "init", "health", "teardown"], "{json}");

    let (head, _) = http_get(port, "/");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
}

#[test]
fn stalled_scrapers_are_limited_and_do_not_block_the_next_ones_for_good() {
    let port = free_port();
    let d = Daemon::start(&config_with(
        &format!("metrics_listen = \"127.0.0.1:{port}\""),
        &plugin("echo", &bins::example("echo"), ""),
    ));
    d.wait_state("echo-0", "running", UP);
    // Eight clients connect and send nothing.
    let stalled: Vec<_> = (0..8).map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    // A ninth is turned away at once rather than queued behind them.
    let (head, _) = http_get(port, "/metrics");
    assert!(head.is_empty(), "served beyond the limit: {head}");
    // Once they go, scrapes are answered again.
    drop(stalled);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (head, body) = http_get(port, "/metrics");
        if head.starts_with("HTTP/1.1 200") {
            assert!(
                body.contains("supervisor_instance_up{plugin=\"echo\",plugin_instance=\"echo-0\",revision=\"1\"} 1"),
                "{body}"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "scrapes are still refused: {head:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A daemon's metrics outgrow gRPC's default 4 MiB answer long before its 1,024 plugins:
/// here 1,024 stopped ones with long names make about 5.6 MB. `supervisorctl metrics` (and
/// `top`, which reads them every interval) failed with "decoded message length too large"
/// and exit 1 past about 250 running plugins.
#[test]
fn metrics_of_a_full_config_reach_supervisorctl_whole() {
    let names: Vec<String> = (0..1024).map(|i| format!("p{i:04}-{}", "x".repeat(58))).collect();
    let entries: String = names
        .iter()
        .map(|n| plugin(n, std::path::Path::new("/bin/true"), "tier = \"none\"\nautostart = false"))
        .collect();
    let d = Daemon::start(&config_with("sandbox.allow_unsandboxed = true", &entries));
    let out = d.ctl(&["metrics"]);
    assert!(out.status.success(), "metrics failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.len() > 4 << 20, "the test needs more than 4 MiB of metrics, had {}", text.len());
    for name in [&names[0], &names[1023]] {
        assert!(text.contains(&format!("plugin=\"{name}\"")), "{name} is missing");
    }
}
