//! Durations are bounded where they are read: one past a year is refused
//! with the file, line and key, and the longest one accepted is carried
//! through a call (added to clocks, encoded as `grpc-timeout`) unharmed.

use std::process::Command;
use std::time::Duration;

use plugin_integration::daemon::{config, plugin};
use plugin_integration::{Daemon, bins};

#[test]
fn an_overflowing_call_timeout_is_refused_naming_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("supervisor.toml");
    let text = config(&plugin("echo", &bins::example("echo"), "call_timeout = \"999999999999h\""));
    std::fs::write(&path, &text).unwrap();
    let out = Command::new(bins::supervisor()).arg("check-config").arg(&path).output().unwrap();
    assert!(!out.status.success());
    let line = text.lines().position(|l| l.contains("999999999999h")).unwrap() + 1;
    let err = String::from_utf8_lossy(&out.stderr);
    let expected = format!(
        "{}:{line}: plugin[0].call_timeout: duration \"999999999999h\" is too long: at most 365 days",
        path.display()
    );
    assert_eq!(err.trim(), expected);
}

#[test]
fn the_longest_call_timeout_accepted_carries_a_call() {
    let d = Daemon::start(&config(&plugin("echo", &bins::example("echo"), "call_timeout = \"365d\"")));
    d.wait_state("echo-0", "running", Duration::from_secs(30));
    let out = d.ctl(&["call", "echo", "echo.v1.Echo/Echo", "--data", r#"{"message":"a year"}"#]);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), d.log_text());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v, serde_json::json!({"message": "a year"}));
    assert!(!d.log_text().contains("panicked"), "{}", d.log_text());
}
