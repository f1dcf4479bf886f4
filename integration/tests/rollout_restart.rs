//! What a restart of the supervisor makes of a canary rollout it cut short, with real
//! processes: it never comes back on a revision no step judged (the supervisor stopped
//! while the canary was still in its handshake), nor on one the config file no longer
//! names (the plugin removed from the file while the supervisor was down, and added back
//! later with another version).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use plugin_integration::daemon::{config, plugin};
use plugin_integration::{Daemon, bins};
use serde_json::Value;

const UP: Duration = Duration::from_secs(30);

/// Long steps: the rollout is still at its first one when the supervisor stops.
const ROLLOUT: &str =
    "[plugin.rollout]\nstrategy = \"canary\"\nsteps = [25, 50, 100]\nstep_interval = \"600s\"\nmin_calls = 20\n";

/// The zoo with `args`, rolled out as a canary.
fn zoo(args: &str, replicas: u32) -> String {
    plugin("zoo", &bins::zoo(), &format!("replicas = {replicas}\nargs = {args}\n{ROLLOUT}"))
}

/// A plugin beside the zoo, which the edits below leave alone.
fn echo() -> String {
    plugin("echo", &bins::example("echo"), "")
}

/// Writes the zoo's `args` into the daemon's config.
fn set_args(d: &Daemon, args: &str) {
    let text = std::fs::read_to_string(&d.config).unwrap();
    let start = text.find("args = ").unwrap();
    let end = start + text[start..].find('\n').unwrap();
    std::fs::write(&d.config, format!("{}args = {args}{}", &text[..start], &text[end..])).unwrap();
}

fn update(d: &Daemon) -> (Option<i32>, String) {
    let out = d.ctl(&["update"]);
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code(), said.trim().to_owned())
}

/// The state file as the daemon left it.
fn state(d: &Daemon) -> Value {
    let text = std::fs::read_to_string(d.dir.path().join("state/state.json")).unwrap_or_else(|_| "{}".into());
    serde_json::from_str(&text).unwrap()
}

/// The stable binaries kept under `state/images` for `plugin`.
fn kept_images(d: &Daemon, plugin: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(d.dir.path().join("state/images")) else { return Vec::new() };
    dir.flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("{plugin}-")))
        .collect()
}

/// The versions the zoo's instances answer with, in instance order.
fn zoo_versions(d: &Daemon) -> Vec<String> {
    d.status().iter().filter(|v| v["name"] == "zoo").map(|v| v["version"].as_str().unwrap_or("").to_owned()).collect()
}

/// Stops the daemon with SIGTERM, as a service manager does; it must end cleanly.
fn sigterm(d: &mut Daemon) {
    let status = d.stop_with(libc::SIGTERM, Duration::from_secs(20));
    assert!(status.is_some_and(|s| s.success()), "the daemon did not stop cleanly: {status:?}\n{}", d.log_tail(40));
}

#[test]
fn a_plugin_removed_while_the_supervisor_was_down_and_added_back_starts_from_its_new_entry() {
    let mut d = Daemon::start(&config(&format!("{}{}", echo(), zoo("[\"--version\", \"1.0.1\"]", 1))));
    d.wait_state("echo-0", "running", UP);
    d.wait_state("zoo-0", "running", UP);
    set_args(&d, "[\"--version\", \"7.0.0\"]");
    let (code, said) = update(&d);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.starts_with("zoo: revision 2 takes 25% of calls as a canary"), "{said}");
    sigterm(&mut d);
    assert_eq!(state(&d)["rollouts"]["zoo"]["phase"], "running", "the rollout under way is kept: {}", state(&d));
    assert_eq!(kept_images(&d, "zoo").len(), 1, "with its stable binary");

    // Removed from the file while the supervisor is down: the next start forgets what was
    // kept of its rollout, as `update` forgets a plugin it removes.
    let text = std::fs::read_to_string(&d.config).unwrap();
    let entry = zoo("[\"--version\", \"7.0.0\"]", 1);
    assert!(text.contains(&entry));
    std::fs::write(&d.config, text.replace(&entry, "")).unwrap();
    d.restart_after_crash();
    d.wait_state("echo-0", "running", UP);
    let names: Vec<Value> = d.status().iter().map(|v| v["name"].clone()).collect();
    assert_eq!(names, ["echo"]);
    assert_eq!(state(&d)["rollouts"]["zoo"], Value::Null, "{}", state(&d));
    assert_eq!(kept_images(&d, "zoo"), Vec::<String>::new(), "the stable binary kept for it goes too");
    d.wait_event("removed", "not in the config file at start", UP);
    assert!(d.log_text().contains("zoo"), "the log names the plugin");

    // Added back with another version: it runs that one, and so does the next start.
    std::fs::write(
        &d.config,
        format!("{}{}", std::fs::read_to_string(&d.config).unwrap(), zoo("[\"--version\", \"9.0.0\"]", 1)),
    )
    .unwrap();
    let (code, said) = update(&d);
    assert_eq!((code, said.as_str()), (Some(0), "zoo: added"));
    d.wait_state("zoo-0", "running", UP);
    assert_eq!(zoo_versions(&d), ["9.0.0"]);
    d.restart();
    d.wait_state("zoo-0", "running", UP);
    assert_eq!(zoo_versions(&d), ["9.0.0"], "not the version of the rollout cut short\n{}", d.log_tail(40));
    let out = d.ctl(&["rollout", "status", "zoo"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no rollout to show"), "{out:?}");
}

#[test]
fn a_supervisor_stopped_while_the_canary_is_in_its_handshake_comes_back_on_the_stable_revision() {
    let mut d = Daemon::start(&config(&zoo("[\"--version\", \"1.1.0\"]", 2)));
    d.wait_state("zoo-0", "running", UP);
    d.wait_state("zoo-1", "running", UP);
    // A version that fails every other call, and takes 3 s to come to its handshake: the
    // supervisor is stopped while the canary is still starting, before any step.
    set_args(&d, "[\"--version\", \"9.9.9-bad\", \"--start-delay-ms\", \"3000\", \"--fail-every\", \"2\"]");
    let updating = Command::new(bins::supervisorctl())
        .arg("--socket")
        .arg(d.control())
        .arg("update")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + UP;
    while !d.status().iter().any(|v| v["revision"] == 2 && v["state"] == "starting" && v["pid"].is_i64()) {
        assert!(Instant::now() < deadline, "the canary never started: {:?}", d.status());
        std::thread::sleep(Duration::from_millis(25));
    }
    sigterm(&mut d);
    let out = updating.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "plugin \"zoo\": the supervisor is stopping", "{out:?}");

    d.restart_after_crash();
    d.wait_state("zoo-0", "running", UP);
    d.wait_state("zoo-1", "running", UP);
    assert_eq!(
        zoo_versions(&d),
        ["1.1.0", "1.1.0"],
        "the stable revision, not the unjudged canary\n{}",
        d.log_tail(40)
    );
    let out = d.ctl(&["rollout", "status", "zoo", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["phase"], "interrupted", "{report}");
    assert_eq!(report["share"], 0, "the canary takes no call: {report}");
    d.wait_event("rollout-interrupted", "the stable revision serves", UP);
}
