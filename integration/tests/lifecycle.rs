//! The walking skeleton, end to end with real processes: the example
//! config, calls through the gateway and the CLI, restarts after kill -9,
//! panics, refusals, deadlines, and a clean stop on SIGTERM/SIGINT.

use std::time::{Duration, Instant};

use plugin_integration::daemon::{config, example_config, plugin};
use plugin_integration::pb::echo::EchoRequest;
use plugin_integration::pb::echo::echo_client::EchoClient;
use plugin_integration::pb::token::token_validator_client::TokenValidatorClient;
use plugin_integration::pb::token::{IssueRequest, ValidateRequest};
use plugin_integration::pb::zoo::zoo_client::ZooClient;
use plugin_integration::pb::zoo::{SleepRequest, Text};
use plugin_integration::procfs::wait_asleep_in_nanosleep;
use plugin_integration::{Daemon, alive, bins, connect};

const UP: Duration = Duration::from_secs(30);

fn token_plugin() -> String {
    plugin(
        "token-validator",
        &bins::example("token_validator"),
        "[plugin.config]\nsecret = \"0123456789abcdef-test-secret\"\n",
    )
}

fn pid_of(d: &Daemon, id: &str) -> i32 {
    d.instance(id)["pid"].as_i64().unwrap_or(0) as i32
}

#[tokio::test]
async fn the_example_config_starts_and_serves_both_example_plugins() {
    let d = Daemon::start(&example_config());
    d.wait_state("echo-0", "running", UP);
    d.wait_state("token-validator-0", "running", UP);

    let mut echo = EchoClient::new(connect(&d.gateway()).await.unwrap());
    let r = echo.echo(EchoRequest { message: "hello".into() }).await.unwrap();
    assert_eq!(r.into_inner().message, "hello");

    let mut tokens = TokenValidatorClient::new(connect(&d.gateway()).await.unwrap());
    let issued = tokens
        .issue(IssueRequest { subject: "alice".into(), scopes: vec!["read".into()], audience: "api".into(), ttl_s: 60 })
        .await
        .unwrap()
        .into_inner();
    let checked = tokens
        .validate(ValidateRequest { token: issued.token.clone(), audience: "api".into() })
        .await
        .unwrap()
        .into_inner();
    assert!(checked.valid, "{checked:?}");
    assert_eq!(checked.subject, "alice");
    let forged = tokens
        .validate(ValidateRequest { token: format!("{}x", issued.token), audience: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert!(!forged.valid);
    assert_eq!(forged.reason, "bad signature");
}

#[test]
fn supervisorctl_call_round_trips_json_through_the_declared_descriptors() {
    let d = Daemon::start(&config(&plugin("echo", &bins::example("echo"), "")));
    d.wait_state("echo-0", "running", UP);
    let out = d.ctl(&["call", "echo", "echo.v1.Echo/Echo", "--data", r#"{"message":"hi"}"#]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v, serde_json::json!({"message": "hi"}));

    // Bad input gets a one-line reason and a non-zero exit.
    for (args, reason) in [
        (vec!["call", "echo", "echo.v1.Echo/Echo", "--data", "{not json"], "--data is not valid JSON"),
        (vec!["call", "echo", "echo.v1.Echo/Echo", "--data", r#"{"nope":1}"#], "not a valid echo.v1.EchoRequest"),
        (vec!["call", "echo", "echo.v1.Echo/Shout", "--data", "{}"], "has no method \"Shout\""),
        (vec!["call", "echo", "nope.v1.X/Y", "--data", "{}"], "does not declare service \"nope.v1.X\""),
        (vec!["call", "ghost", "echo.v1.Echo/Echo"], "unknown plugin \"ghost\""),
        (vec!["stop", "ghost"], "unknown plugin \"ghost\""),
    ] {
        let out = d.ctl(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(err.contains(reason), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
}

#[tokio::test]
async fn kill_9_restarts_the_plugin_with_a_new_pid_while_the_other_keeps_serving() {
    let plugins = format!("{}{}", plugin("echo", &bins::example("echo"), "restart = \"always\""), token_plugin());
    let d = Daemon::start(&config(&plugins));
    let before = d.wait_state("echo-0", "running", UP);
    d.wait_state("token-validator-0", "running", UP);
    let old_pid = before["pid"].as_i64().unwrap() as i32;
    assert_eq!(before["restarts"], 0);

    // The sibling is called throughout; not one call may fail.
    let gw = d.gateway();
    let sibling = tokio::spawn(async move {
        let mut c = TokenValidatorClient::new(connect(&gw).await.unwrap());
        let mut ok = 0;
        let end = Instant::now() + Duration::from_secs(3);
        while Instant::now() < end {
            let r = c.validate(ValidateRequest { token: "x.y".into(), audience: String::new() }).await;
            assert!(r.is_ok(), "sibling call failed: {r:?}");
            ok += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        ok
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // SAFETY: killing the plugin process by pid.
    unsafe { libc::kill(old_pid, libc::SIGKILL) };
    let after = tokio::task::spawn_blocking(move || {
        let after = d.wait_for("echo-0", UP, "restarted", |v| {
            v["state"] == "running" && v["pid"].as_i64() != Some(i64::from(old_pid))
        });
        (d, after)
    })
    .await
    .unwrap();
    let (d, after) = after;
    assert_eq!(after["restarts"], 1);
    assert!(sibling.await.unwrap() > 10);
    let events = String::from_utf8_lossy(&d.ctl(&["events", "--plugin", "echo"]).stdout).to_string();
    assert!(events.contains(&format!("pid {old_pid} killed by signal 9 (SIGKILL)")), "{events}");
    let mut echo = EchoClient::new(connect(&d.gateway()).await.unwrap());
    assert_eq!(echo.echo(EchoRequest { message: "back".into() }).await.unwrap().into_inner().message, "back");
}

#[tokio::test]
async fn a_handler_panic_answers_internal_and_the_next_call_succeeds() {
    let d = Daemon::start(&config(&plugin("zoo", &bins::zoo(), "")));
    d.wait_state("zoo-0", "running", UP);
    let pid = pid_of(&d, "zoo-0");
    let mut zoo = ZooClient::new(connect(&d.gateway()).await.unwrap());
    let err = zoo.panic(Text { text: "boom".into() }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Internal);
    assert!(err.message().contains("zoo was asked to panic: boom"), "{}", err.message());
    let ok = zoo.echo(Text { text: "still here".into() }).await.unwrap();
    assert_eq!(ok.into_inner().text, "still here");
    assert_eq!(pid_of(&d, "zoo-0"), pid, "the process kept serving");
}

#[test]
fn refused_handshakes_are_reported_with_their_cause_and_affect_nothing_else() {
    let zoo = bins::zoo();
    let plugins = [
        plugin("echo", &bins::example("echo"), ""),
        plugin("wrong-name", &zoo, "args = [\"--name\", \"impostor\"]"),
        plugin("old-protocol", &zoo, "args = [\"--protocol\", \"99\"]"),
        plugin("not-a-plugin", std::path::Path::new("/bin/true"), ""),
        plugin("silent", &zoo, "args = [\"--hang\"]\nhandshake_timeout = \"1s\""),
        plugin("bad-config", &zoo, "args = [\"--name\", \"bad-config\", \"--init-fail\", \"missing key `secret`\"]"),
    ]
    .concat();
    let d = Daemon::start(&config(&plugins));
    d.wait_state("echo-0", "running", UP);
    let expect = [
        ("wrong-name-0", "plugin answered the handshake as \"impostor\", but the config names it \"wrong-name\""),
        ("old-protocol-0", "no common protocol version: the supervisor offers [1], plugin zoo"),
        ("not-a-plugin-0", "exited with code 0 before answering the handshake: not a plugin"),
        ("silent-0", "no handshake within 1s"),
        ("bad-config-0", "init refused: InvalidArgument: missing key `secret`"),
    ];
    for (id, cause) in expect {
        let v = d.wait_state(id, "failed", UP);
        let reason = v["reason"].as_str().unwrap();
        assert!(reason.starts_with("refused: ") && reason.contains(cause), "{id}: {reason}");
        assert!(v["pid"].is_null());
    }
    // No call ever reached them: the refused services are not routed.
    let out = d.ctl(&["call", "wrong-name", "zoo.v1.Zoo/Echo", "--data", "{}"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("has not declared its contract"));
    let echo = d.ctl(&["call", "echo", "echo.v1.Echo/Echo", "--data", r#"{"message":"fine"}"#]);
    assert!(echo.status.success());
    // `start` tries again, and reports the same cause.
    let again = d.ctl(&["start", "wrong-name"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("impostor"));
}

#[tokio::test]
async fn deadlines_unknown_services_and_down_plugins_get_the_right_codes() {
    let plugins = format!(
        "{}{}",
        plugin("zoo", &bins::zoo(), "call_timeout = \"2s\""),
        plugin("echo", &bins::example("echo"), "autostart = false"),
    );
    let d = Daemon::start(&config(&plugins));
    d.wait_state("zoo-0", "running", UP);
    let ch = connect(&d.gateway()).await.unwrap();

    // The caller's grpc-timeout, shorter than the configured call timeout.
    let mut zoo = ZooClient::new(ch.clone());
    let mut req = tonic::Request::new(SleepRequest { ms: 2000 });
    req.set_timeout(Duration::from_millis(100));
    let t = Instant::now();
    let err = zoo.sleep(req).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");
    assert!(t.elapsed() < Duration::from_millis(1500));
    // No grpc-timeout: the plugin's call_timeout (2s) applies.
    let err = zoo.sleep(SleepRequest { ms: 10_000 }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded);
    assert!(err.message().contains("call_timeout"), "{}", err.message());
    // Within the deadline all is well.
    assert_eq!(zoo.sleep(SleepRequest { ms: 10 }).await.unwrap().into_inner().text, "slept 10ms");

    // A service nobody declares.
    let mut grpc = tonic::client::Grpc::new(ch.clone());
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<Text, Text>::default();
    let err = grpc
        .unary(tonic::Request::new(Text::default()), "/ghost.v1.Ghost/Boo".parse().unwrap(), codec)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    assert!(err.message().contains("unknown service ghost.v1.Ghost"), "{}", err.message());

    // A plugin that is down: start it once so its service is known, stop it.
    assert!(d.ctl(&["start", "echo"]).status.success());
    assert!(d.ctl(&["stop", "echo"]).status.success());
    let mut echo = EchoClient::new(ch);
    let err = echo.echo(EchoRequest { message: "x".into() }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(err.message().contains("plugin \"echo\" is stopped"), "{}", err.message());
}

#[tokio::test]
async fn stopping_a_plugin_drains_calls_in_flight() {
    let zoo_args = "stop_timeout = \"5s\"\nargs = [\"--blocking-sleep\"]";
    let d = Daemon::start(&config(&plugin("zoo", &bins::zoo(), zoo_args)));
    let pid = d.wait_state("zoo-0", "running", UP)["pid"].as_i64().unwrap() as i32;
    let mut zoo = ZooClient::new(connect(&d.gateway()).await.unwrap());
    let call = tokio::spawn(async move { zoo.sleep(SleepRequest { ms: 700 }).await });
    // The call is in the plugin (its one thread asleep in it) before the stop.
    let asleep = tokio::task::spawn_blocking(move || wait_asleep_in_nanosleep(pid, UP)).await.unwrap();
    assert!(asleep, "the call never reached the plugin");
    let (d, out) = tokio::task::spawn_blocking(move || {
        let out = d.ctl(&["stop", "zoo"]);
        (d, out)
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let answered = call.await.unwrap().expect("the in-flight call finished during the drain");
    assert_eq!(answered.into_inner().text, "slept 700ms");
    assert_eq!(d.instance("zoo-0")["state"], "stopped");
}

fn stop_leaves_nothing_behind(sig: i32) {
    let plugins =
        format!("{}{}", plugin("echo", &bins::example("echo"), "replicas = 2"), plugin("zoo", &bins::zoo(), ""));
    let mut d = Daemon::start(&config(&plugins));
    let mut pids = Vec::new();
    for id in ["echo-0", "echo-1", "zoo-0"] {
        pids.push(d.wait_state(id, "running", UP)["pid"].as_i64().unwrap() as i32);
    }
    let control = d.control();
    let status = d.stop_with(sig, Duration::from_secs(20)).expect("daemon exits");
    assert!(status.success(), "daemon exit status {status:?}");
    for pid in pids {
        assert!(!alive(pid), "plugin pid {pid} outlived the daemon");
    }
    assert!(!control.exists(), "control socket removed");
}

#[test]
fn sigterm_stops_every_plugin_and_leaves_no_process() {
    stop_leaves_nothing_behind(libc::SIGTERM);
}

#[test]
fn sigint_stops_every_plugin_and_leaves_no_process() {
    stop_leaves_nothing_behind(libc::SIGINT);
}

#[test]
fn a_plugin_started_by_hand_says_what_it_is_and_exits_non_zero() {
    let out = std::process::Command::new(bins::example("echo")).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("echo is a plugin for plugin-supervisor"), "{err}");
    assert!(err.contains("started by the supervisor, not by hand"), "{err}");
}

#[test]
fn tail_shows_stdout_stderr_and_sdk_logs_and_events_show_the_lifecycle() {
    let d = Daemon::start(&config(&plugin("zoo", &bins::zoo(), "")));
    d.wait_state("zoo-0", "running", UP);
    let out = d.ctl(&["call", "zoo", "zoo.v1.Zoo/Print", "--data", r#"{"lines":2,"text":"marker"}"#]);
    assert!(out.status.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let tail = String::from_utf8_lossy(&d.ctl(&["tail", "zoo", "-n", "100"]).stdout).to_string();
        let seen = [
            "stdout marker 1",
            "stderr marker 1 (stderr)",
            "sdk INFO printed",
            "text=marker",
            "stdout zoo zoo starting",
        ]
        .iter()
        .all(|s| tail.contains(s));
        if seen {
            break;
        }
        assert!(Instant::now() < deadline, "tail lacks expected lines:\n{tail}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let events = String::from_utf8_lossy(&d.ctl(&["events", "--json"]).stdout).to_string();
    let kinds: Vec<String> = events
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["spawned", "ready"]);
}

#[test]
fn a_plugin_stopped_by_the_operator_stays_stopped_across_daemon_restarts_until_started() {
    let plugins = format!("{}{}", plugin("echo", &bins::example("echo"), ""), plugin("zoo", &bins::zoo(), ""));
    let mut d = Daemon::start(&config(&plugins));
    d.wait_state("echo-0", "running", UP);
    let out = d.ctl(&["stop", "echo"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "echo: stopped (stopped by request)\n");
    let kept =
        "stopped by the operator (supervisorctl stop): kept stopped across supervisor restarts until start or restart";

    d.restart();
    d.wait_state("zoo-0", "running", UP);
    // Its instance's task has seen it is not to run.
    let echo = d.wait_for("echo-0", UP, "held", |v| v["reason"] == "stopped by request");
    assert_eq!((&echo["state"], &echo["pid"]), (&"stopped".into(), &serde_json::Value::Null), "{echo}");
    assert_eq!(echo["notes"], serde_json::json!([kept]), "{echo}");
    let spawned: Vec<_> = d.events().into_iter().filter(|e| e["plugin"] == "echo" && e["kind"] == "spawned").collect();
    assert!(spawned.is_empty(), "{spawned:?}");

    let out = d.ctl(&["start", "echo"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "echo: running\n");
    assert_eq!(d.instance("echo-0")["notes"], serde_json::json!([]));

    d.restart();
    d.wait_state("echo-0", "running", UP);
}

#[test]
fn status_json_has_the_documented_fields() {
    let d = Daemon::start(&config(&plugin("echo", &bins::example("echo"), "")));
    let v = d.wait_state("echo-0", "running", UP);
    for key in ["name", "state", "pid", "restarts", "version", "uptime_s"] {
        assert!(v.get(key).is_some(), "missing {key} in {v}");
    }
    assert_eq!(v["name"], "echo");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert!(v["pid"].as_i64().unwrap() > 0);
    assert_eq!(v["sha256"].as_str().unwrap().len(), 64);
    let table = String::from_utf8_lossy(&d.ctl(&["status"]).stdout).to_string();
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains("echo-0") && table.contains("running"), "{table}");
}

#[test]
fn a_crash_loop_is_reported_in_the_state_and_retried_at_the_capped_delay() {
    let entry = "args = [\"--die-after-ms\", \"150\"]\nrestart = \"always\"\n[plugin.backoff]\ninitial = \"50ms\"\nmax = \"300ms\"";
    let plugins = format!("{}{}", plugin("echo", &bins::example("echo"), ""), plugin("zoo", &bins::zoo(), entry));
    let d = Daemon::start(&config(&plugins));
    let v = d.wait_for("zoo-0", UP, "in a crash loop", |v| {
        v["reason"].as_str().is_some_and(|r| r.starts_with("crash loop: "))
    });
    let reason = v["reason"].as_str().unwrap();
    assert!(reason.contains("last: exited with code 3"), "{reason}");
    assert!(reason.contains("; next attempt "), "{reason}");
    let restarts = v["restarts"].as_u64().unwrap();
    assert!(restarts >= 4, "{v}");
    // It keeps being retried, not given up on.
    d.wait_for("zoo-0", UP, "retried again", |v| v["restarts"].as_u64().is_some_and(|n| n >= restarts + 2));
    assert!(d.events().iter().any(|e| e["kind"] == "crash-loop"));
    // The sibling is unaffected.
    assert_eq!(d.instance("echo-0")["state"], "running");
    assert_eq!(d.instance("echo-0")["restarts"], 0);
}

/// The seconds in "...; next attempt in 2.4s".
fn seconds_left(reason: &str) -> f64 {
    let (_, left) = reason.rsplit_once("next attempt in ").unwrap_or_else(|| panic!("no time left in {reason:?}"));
    left.trim_end_matches('s').parse().unwrap_or_else(|_| panic!("not seconds: {reason:?}"))
}

#[test]
fn status_counts_down_to_the_next_attempt() {
    let entry = "args = [\"--die-after-ms\", \"300\"]\n[plugin.backoff]\ninitial = \"6s\"\nmax = \"6s\"\njitter = 0.0";
    let d = Daemon::start(&config(&plugin("zoo", &bins::zoo(), entry)));
    let first = d.wait_state("zoo-0", "backoff", UP)["reason"].as_str().unwrap().to_owned();
    assert!(first.contains("exited with code 3"), "{first}");
    std::thread::sleep(Duration::from_millis(1500));
    let later = d.instance("zoo-0")["reason"].as_str().unwrap().to_owned();
    let (a, b) = (seconds_left(&first), seconds_left(&later));
    assert!(a <= 6.0 && b <= a - 1.0, "the time left did not count down: {first:?} then {later:?}");
    let text = String::from_utf8_lossy(&d.ctl(&["status", "zoo"]).stdout).into_owned();
    assert!(text.contains("; next attempt in "), "{text}");
}

#[test]
fn an_instance_without_a_process_shows_no_usage() {
    let d = Daemon::start(&config(&plugin("zoo", &bins::zoo(), "")));
    d.wait_state("zoo-0", "running", UP);
    d.wait_for("zoo-0", UP, "sampled", |v| v["usage"]["memory_current"].as_u64().is_some_and(|m| m > 0));
    let out = d.ctl(&["stop", "zoo"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v = d.instance("zoo-0");
    assert_eq!(v["state"], "stopped");
    assert!(v["usage"].is_null(), "usage of a process that is gone: {v}");
    // Nor later, once the sampler has been round.
    std::thread::sleep(Duration::from_millis(1200));
    assert!(d.instance("zoo-0")["usage"].is_null());
    let table = String::from_utf8_lossy(&d.ctl(&["status", "zoo"]).stdout).into_owned();
    let row = table.lines().find(|l| l.starts_with("zoo ")).unwrap_or_else(|| panic!("{table}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    // NAME INSTANCE REV STATE PID RESTARTS VERSION UPTIME TIER MEMORY TASKS ...
    assert_eq!((cells[9], cells[10]), ("-", "-"), "{table}");
}
