//! `--json` on every supervisorctl command that prints data: each prints valid
//! JSON (one document, or one per line for the streams), the same whether or
//! not stdout is a terminal, with times carrying their date and zone; and
//! `config [NAME]` shows the configuration in force with run-time overrides
//! marked.

use std::process::Output;
use std::time::Duration;

use plugin_integration::daemon::{config, plugin};
use plugin_integration::{Daemon, bins};
use serde_json::Value;

const UP: Duration = Duration::from_secs(30);

fn stdout(out: &Output, what: &str) -> String {
    assert!(out.status.success(), "{what}: {:?}: {}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The JSON documents printed: one pretty-printed document, or one per line.
fn documents(text: &str, what: &str) -> Vec<Value> {
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        return vec![v];
    }
    let docs: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {l:?}\nall:\n{text}")))
        .collect();
    assert!(!docs.is_empty(), "{what}: printed nothing");
    docs
}

/// An RFC 3339 time in UTC: `2026-12-03T16:45:05.123Z`.
fn is_dated(t: &Value) -> bool {
    t.as_str().is_some_and(|t| t.len() == 24 && t.as_bytes()[10] == b'T' && t.ends_with('Z'))
}

#[test]
fn every_data_command_prints_valid_json() {
    let d = Daemon::start(&config(&plugin("echo", &bins::example("echo"), "")));
    d.wait_state("echo-0", "running", UP);
    // Its first log record, which comes on a stream of its own, apart from the state:
    // `tail` has something to print.
    let until = std::time::Instant::now() + UP;
    while d.ctl(&["tail", "echo"]).stdout.is_empty() {
        assert!(std::time::Instant::now() < until, "echo logged nothing");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let proto = bins::repo().join("plugin-sdk/echo-plugin/proto/echo.proto");
    let proto = proto.to_str().unwrap();
    let commands: Vec<Vec<&str>> = vec![
        vec!["status"],
        vec!["status", "echo", "--phases"],
        vec!["reread"],
        vec!["tail", "echo"],
        vec!["events"],
        vec!["events", "--plugin", "echo"],
        vec!["list"],
        vec!["describe", "echo"],
        vec!["quota", "echo"],
        vec!["call", "echo", "echo.v1.Echo/Echo", "--data", r#"{"message":"hi"}"#],
        vec!["config"],
        vec!["config", "echo"],
        vec!["top"],
        vec!["top", "echo", "--once", "-d", "0.5"],
        vec!["doctor"],
        vec!["contract", "diff", proto, proto],
    ];
    for args in &commands {
        let what = args.join(" ");
        let text = stdout(&d.ctl(&[&args[..], &["--json"]].concat()), &what);
        let docs = documents(&text, &what);
        match args[0] {
            "events" => assert!(docs.iter().all(|e| is_dated(&e["time"])), "{what}: {text}"),
            "tail" => assert!(docs.iter().all(|l| is_dated(&l["time"])), "{what}: {text}"),
            "top" => assert!(docs.len() == 1 && is_dated(&docs[0]["time"]), "{what}: {text}"),
            _ => {}
        }
    }
    // On a terminal (a pty from util-linux's `script`) the output is the same.
    for args in [&["config", "echo", "--json"][..], &["list", "--json"][..], &["quota", "echo", "--json"][..]] {
        let piped = stdout(&d.ctl(args), &args.join(" "));
        let line =
            format!("'{}' --socket '{}' {}", bins::supervisorctl().display(), d.control().display(), args.join(" "));
        let on_tty = std::process::Command::new("script").args(["-qec", &line, "/dev/null"]).output().unwrap();
        let on_tty = stdout(&on_tty, &format!("{} on a terminal", args.join(" "))).replace("\r\n", "\n");
        assert_eq!(on_tty, piped, "{}", args.join(" "));
    }
    // With no rollout to show, `rollout --json` prints nothing on stdout that is not JSON:
    // its refusal goes to stderr (its JSON answers are tested in rollout.rs and the
    // binary's unit tests).
    let out = d.ctl(&["rollout", "status", "echo", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.is_empty() && String::from_utf8_lossy(&out.stderr).contains("no rollout to show"), "{out:?}");
    // `plugin verify` says why a binary is invalid in JSON too (exit 1).
    let keys = tempfile::tempdir().unwrap();
    let (secret, public) = (keys.path().join("k.secret"), keys.path().join("k.pub"));
    stdout(
        &d.ctl(&["plugin", "keygen", "--secret", secret.to_str().unwrap(), "--public", public.to_str().unwrap()]),
        "keygen",
    );
    let echo = bins::example("echo");
    let out = d.ctl(&["plugin", "verify", "--json", "--trusted-key", public.to_str().unwrap(), echo.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let v = &documents(&String::from_utf8_lossy(&out.stdout), "plugin verify")[0];
    assert_eq!(v["valid"], false, "{v}");
    assert!(v["reason"].as_str().is_some_and(|r| !r.is_empty()), "{v}");
}

#[test]
fn text_times_carry_date_and_zone() {
    let d = Daemon::start(&config(&plugin("echo", &bins::example("echo"), "")));
    d.wait_state("echo-0", "running", UP);
    let events = stdout(&d.ctl(&["events", "--plugin", "echo"]), "events");
    let first = events.lines().next().unwrap_or_default();
    let stamp = first.split_whitespace().next().unwrap_or_default();
    assert!(is_dated(&Value::from(stamp)), "{first}");
}

#[test]
fn config_shows_every_key_in_force_and_marks_run_time_overrides() {
    let d = Daemon::start(&config(&plugin(
        "echo",
        &bins::example("echo"),
        "replicas = 1\n[plugin.quota]\npids_max = 40\n",
    )));
    d.wait_state("echo-0", "running", UP);
    let before: Vec<Value> = serde_json::from_str(&stdout(&d.ctl(&["config", "echo", "--json"]), "config")).unwrap();
    let s = &before[0]["settings"];
    assert_eq!(before[0]["name"], "echo");
    assert_eq!(s["replicas"]["source"], "file", "{s}");
    assert_eq!(s["quota.pids_max"], serde_json::json!({"value": 40, "source": "file", "overridden": false}));
    // The section's defaults and built-in defaults are there, with their values.
    assert_eq!(s["stop_timeout"], serde_json::json!({"value": "2s", "source": "default", "overridden": false}));
    assert_eq!(s["max_in_flight"]["value"], 64, "{s}");
    assert_eq!(s["quota.memory_max"]["source"], "tier", "{s}");

    let set = stdout(&d.ctl(&["quota", "echo", "--memory", "96M", "--json"]), "quota");
    let in_force = serde_json::from_str::<Value>(&set).unwrap()["quota"]["memory_max"].clone();
    let after: Vec<Value> = serde_json::from_str(&stdout(&d.ctl(&["config", "echo", "--json"]), "config")).unwrap();
    let m = &after[0]["settings"]["quota.memory_max"];
    assert_eq!(m, &serde_json::json!({"value": in_force, "source": "runtime", "overridden": true}));
    assert_eq!(after[0]["settings"]["quota.pids_max"]["overridden"], false);
    let text = stdout(&d.ctl(&["config", "echo"]), "config");
    let line = text.lines().find(|l| l.starts_with("quota.memory_max = ")).unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains(in_force.as_str().unwrap()) && line.ends_with("# overridden at run time (supervisorctl quota)"),
        "{line}"
    );

    let out = d.ctl(&["config", "nosuch"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nosuch"), "{err}");
}
