//! `supervisorctl top` as an operator sees it: in a real terminal (a tmux
//! pane) beside a plugin under a steady call load, its rows show the plugin
//! and its instance, their state and calls per second, and are redrawn each
//! second; `q` and Ctrl-C end it and give the terminal back as it was (the
//! alternate screen left, the cursor shown, the tty's settings restored).
//! `--once` and `--json` print one sample, piped.

use std::time::Duration;

use plugin_integration::daemon::{config, plugin};
use plugin_integration::load::{Load, STEADY};
use plugin_integration::pb::echo::EchoRequest;
use plugin_integration::pb::echo::echo_client::EchoClient;
use plugin_integration::tmux::{Tmux, quote};
use plugin_integration::{Daemon, bins, connect};
use serde_json::Value;

const UP: Duration = Duration::from_secs(30);
const SHOWN: Duration = Duration::from_secs(20);

/// A daemon serving echo, and callers calling it about a hundred times a second.
async fn echo_under_load() -> (Daemon, Load) {
    let d = Daemon::start(&config(&plugin("echo", &bins::example("echo"), "")));
    d.wait_state("echo-0", "running", UP);
    let mut load = Load::new();
    let client = EchoClient::new(connect(&d.gateway()).await.unwrap());
    load.caller(move || {
        let mut c = client.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            c.echo(EchoRequest { message: STEADY.into() }).await.map(|r| r.into_inner().message)
        }
    });
    (d, load)
}

/// `supervisorctl top ARGS` as a shell line for the pane, colour allowed.
fn top_line(d: &Daemon, args: &str) -> String {
    format!(
        "env -u NO_COLOR {} --socket {} top {args}",
        quote(&bins::supervisorctl().display().to_string()),
        quote(&d.control().display().to_string())
    )
}

/// The cell of `column` in `row`, by where the header has it: numbers are aligned
/// right (they end where the header's name ends), words left.
fn cell<'a>(screen: &'a str, row_start: &str, column: &str) -> Option<&'a str> {
    let header = screen.lines().find(|l| l.starts_with("PLUGIN/INSTANCE"))?;
    let row = screen.lines().find(|l| l.starts_with(row_start))?;
    let at = header.find(column)?;
    if column == "STATE" {
        return row.get(at..)?.split_whitespace().next();
    }
    row.get(..at + column.len())?.split_whitespace().last()
}

fn calls_per_second(screen: &str) -> f64 {
    cell(screen, "echo ", "CALLS/S").and_then(|c| c.parse().ok()).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_terminal_top_shows_each_instance_live_and_q_gives_the_terminal_back() {
    let (d, load) = echo_under_load().await;
    tokio::task::block_in_place(|| {
        let pane = Tmux::run(&format!("echo before top; {}", top_line(&d, "")), 160, 30);
        let first = pane.wait_for("echo's row with calls per second", SHOWN, |s| calls_per_second(s) > 0.0);
        // The plugin's row has its calls, the instance's row (indented) its state and pid.
        assert_eq!(cell(&first, "echo ", "STATE"), Some("running"), "{first}");
        assert_eq!(cell(&first, "  echo-0", "STATE"), Some("running"), "{first}");
        let pid = d.instance("echo-0")["pid"].as_i64().unwrap().to_string();
        assert_eq!(cell(&first, "  echo-0", "PID"), Some(pid.as_str()), "{first}");
        assert_eq!(cell(&first, "echo ", "ERR%"), Some("0.0"), "every call succeeds: {first}");
        assert!(cell(&first, "echo ", "P99").is_some_and(|p| p.ends_with("ms") || p.ends_with('s')), "{first}");
        // The first line says when, with date and zone, and the totals.
        let when =
            |s: &str| s.lines().next().unwrap_or_default().split_whitespace().next().unwrap_or_default().to_owned();
        let stamp = when(&first);
        assert!(stamp.len() == 24 && stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T', "{first}");
        assert!(first.lines().next().unwrap().contains("instances 1 (1 running)"), "{first}");
        // top owns the alternate screen and hides the cursor while it runs.
        assert_eq!(pane.format("#{alternate_on}"), "1");
        assert_eq!(pane.format("#{cursor_flag}"), "0");
        // It refreshes: a second later the time has moved on.
        let later = pane.wait_for("a refresh", SHOWN, |s| !when(s).is_empty() && when(s) != stamp);
        assert!(calls_per_second(&later) > 0.0, "{later}");
        // The instance's CPU shows once the daemon has read its cgroup twice since it
        // started (about once a second; a look may find the same reading again).
        let known = |s: &str, column: &str| cell(s, "  echo-0", column).is_some_and(|v| v != "-");
        let read = pane.wait_for("echo-0's CPU", SHOWN, |s| known(s, "CPU%"));
        for column in ["CPU%", "MEMORY", "TASKS"] {
            assert!(known(&read, column), "{column} of echo-0: {read}");
        }
        assert!(!read.lines().next().unwrap_or_default().contains("cpu -"), "{read}");

        pane.keys(&["q"]);
        assert_eq!(pane.wait_done(SHOWN), "[done exit 0, terminal same]");
        let after = pane.screen();
        assert!(after.contains("before top"), "the screen from before is back: {after}");
        assert!(!after.contains("PLUGIN/INSTANCE"), "top's screen is gone: {after}");
        assert_eq!(pane.format("#{alternate_on}"), "0");
        assert_eq!(pane.format("#{cursor_flag}"), "1");
    });
    let seen = load.finish().await;
    assert_eq!(seen.failed, 0, "{:?}", seen.failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_ends_top_as_q_does() {
    let (d, _load) = echo_under_load().await;
    tokio::task::block_in_place(|| {
        let pane = Tmux::run(&top_line(&d, "echo -d 0.5"), 160, 30);
        pane.wait_for("echo's row", SHOWN, |s| s.lines().any(|l| l.starts_with("  echo-0")));
        pane.keys(&["C-c"]);
        assert_eq!(pane.wait_done(SHOWN), "[done exit 0, terminal same]");
        assert_eq!(pane.format("#{alternate_on}"), "0");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_prints_one_sample_and_json_the_same_figures() {
    let (d, load) = echo_under_load().await;
    let (text, json) = tokio::task::block_in_place(|| {
        let text = d.ctl(&["top", "--once"]);
        assert!(text.status.success(), "{}", String::from_utf8_lossy(&text.stderr));
        // Taken over two seconds, so the daemon has read the cgroup twice in it.
        let json = d.ctl(&["top", "echo", "--json", "-d", "2"]);
        assert!(json.status.success(), "{}", String::from_utf8_lossy(&json.stderr));
        (String::from_utf8(text.stdout).unwrap(), String::from_utf8(json.stdout).unwrap())
    });
    assert!(!text.contains('\x1b'), "no colour when piped: {text:?}");
    assert!(calls_per_second(&text) > 0.0, "{text}");
    assert_eq!(cell(&text, "  echo-0", "STATE"), Some("running"), "{text}");
    assert_eq!(text.lines().count(), 4, "summary, header, plugin, instance: {text}");

    let v: Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    // Two seconds between the samples, and what asking for the second took.
    let interval = v["interval_seconds"].as_f64().unwrap_or_default();
    assert!((2.0..4.0).contains(&interval), "{v}");
    let echo = &v["plugins"][0];
    assert_eq!(echo["name"], "echo", "{v}");
    assert!(echo["calls_per_second"].as_f64().is_some_and(|c| c > 10.0), "{v}");
    assert_eq!(echo["error_rate"], 0.0, "{v}");
    assert!(echo["p99_seconds"].as_f64().is_some_and(|p| p > 0.0 && p < 1.0), "{v}");
    let i = &echo["instances"][0];
    assert_eq!((&i["instance"], &i["state"]), (&Value::from("echo-0"), &Value::from("running")), "{v}");
    assert!(i["cpu_percent"].as_f64().is_some_and(|c| c >= 0.0), "{v}");
    assert!(i["memory_bytes"].as_u64().is_some_and(|m| m > 0), "{v}");
    assert!(i["tasks"].as_u64().is_some_and(|t| t >= 1), "{v}");
    assert_eq!(v["totals"]["instances"], 1, "{v}");
    let seen = load.finish().await;
    assert_eq!(seen.failed, 0, "{:?}", seen.failures);
}
