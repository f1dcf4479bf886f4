//! `supervisorctl` exits by one table, as operators script it: 0 success, 1 failure,
//! 2 usage, 3 `status` with an instance not running and serving, 4 no such plugin,
//! 5 the supervisor unreachable or refusing us; and `pid` and `signal` act on the
//! running instances.

use std::process::{Command, Output};
use std::time::Duration;

use plugin_integration::daemon::{config, plugin};
use plugin_integration::{Daemon, bins};

const UP: Duration = Duration::from_secs(30);

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn code(d: &Daemon, args: &[&str]) -> Option<i32> {
    let out = d.ctl(args);
    out.status.code()
}

#[test]
fn status_exits_0_only_while_every_selected_instance_runs_and_serves() {
    let plugins = [
        plugin("zoo", &bins::zoo(), ""),
        plugin("idle", &bins::zoo(), "autostart = false"),
        plugin("sick", &bins::zoo(), "args = [\"--name\", \"sick\", \"--not-serving\"]"),
    ]
    .concat();
    let d = Daemon::start(&config(&plugins));
    d.wait_state("zoo-0", "running", UP);
    d.wait_state("sick-0", "running", UP);
    assert_eq!(code(&d, &["status", "zoo"]), Some(0), "running and serving");
    assert_eq!(code(&d, &["status", "zoo", "--json"]), Some(0));
    assert_eq!(d.instance("zoo-0")["serving"], true);

    let out = d.ctl(&["status", "idle"]);
    assert_eq!(out.status.code(), Some(3), "stopped: {}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("stopped"), "the table is printed all the same");
    assert_eq!(code(&d, &["status", "idle", "--json"]), Some(3));
    assert_eq!(code(&d, &["status", "idle", "--phases"]), Some(3));

    // Running, but its own health says NOT_SERVING: not serving.
    let sick = d.instance("sick-0");
    assert_eq!((sick["state"].as_str(), &sick["serving"]), (Some("running"), &serde_json::json!(false)), "{sick}");
    assert!(sick["notes"].to_string().contains("NOT_SERVING"), "{sick}");
    assert_eq!(code(&d, &["status", "sick"]), Some(3));
    // All plugins: one not serving is enough.
    assert_eq!(code(&d, &["status"]), Some(3));

    // Stopping (draining) ends in stopped: 3; started again, 0.
    assert!(d.ctl(&["stop", "zoo"]).status.success());
    assert_eq!(code(&d, &["status", "zoo"]), Some(3));
    assert!(d.ctl(&["start", "zoo"]).status.success());
    d.wait_state("zoo-0", "running", UP);
    assert_eq!(code(&d, &["status", "zoo"]), Some(0));
}

#[test]
fn every_command_naming_an_unknown_plugin_exits_4() {
    let d = Daemon::start(&config(&plugin("zoo", &bins::zoo(), "")));
    let commands: [&[&str]; 19] = [
        &["status", "ghost"],
        &["start", "ghost"],
        &["stop", "ghost"],
        &["restart", "ghost"],
        &["reload", "ghost"],
        &["update", "ghost"],
        &["rollout", "status", "ghost"],
        &["tail", "ghost"],
        &["events", "--plugin", "ghost"],
        &["quota", "ghost"],
        &["list", "ghost"],
        &["describe", "ghost"],
        &["pid", "ghost"],
        &["signal", "TERM", "ghost"],
        // Named beside another bad argument: the plugin is what is told.
        &["signal", "NOPE", "ghost"],
        &["quota", "ghost", "--cpu", "bogus"],
        &["status", "ghost", "--json"],
        &["top", "ghost", "--once"],
        &["top", "ghost", "--json"],
    ];
    for args in commands {
        let out = d.ctl(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(4), "{args:?}: {err}");
        assert!(err.contains("ghost"), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: one line: {err}");
        // An empty name is no plugin either, never "every plugin" (which the control API
        // reads it as): `pid "$UNSET"` printed every plugin's pids.
        let empty: Vec<&str> = args.iter().map(|a| if *a == "ghost" { "" } else { a }).collect();
        let out = d.ctl(&empty);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(4), "{empty:?}: {err}{}", String::from_utf8_lossy(&out.stdout));
        assert!(err.contains("unknown plugin \"\""), "{empty:?}: {err}");
    }
    assert_eq!(code(&d, &["config", ""]), Some(4));
    // A name longer than any plugin's is shown cut, with its length, not echoed whole.
    let long = "x".repeat(100_000);
    let out = d.ctl(&["status", &long]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{}", &err[..err.len().min(300)]);
    assert!(err.contains("... (100000 bytes)") && err.len() < 300, "{}", &err[..err.len().min(300)]);
    // `call` keeps grpcurl's convention: 64 + NOT_FOUND.
    assert_eq!(code(&d, &["call", "ghost", "zoo.v1.Zoo/Echo"]), Some(64 + 5));
}

#[test]
fn an_unreachable_supervisor_exits_5_naming_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    for args in
        [&["status"][..], &["start", "zoo"], &["pid", "zoo"], &["top", "--once"], &["call", "zoo", "zoo.v1.Zoo/Echo"]]
    {
        let out = Command::new(bins::supervisorctl()).arg("--socket").arg(&socket).args(args).output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(5), "{args:?}: {err}");
        assert!(
            err.starts_with(&format!("supervisorctl: cannot reach the supervisor at {}: ", socket.display())),
            "{args:?}: {err}"
        );
    }
    // A path no socket can have is the operator's to fix (exit 2, not 5); commands that
    // never connect do not mind it.
    let out = Command::new(bins::supervisorctl()).args(["--socket", "", "status"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--socket is empty"), "{}", stderr(&out));
    let out = Command::new(bins::supervisorctl()).args(["--socket", "", "plugin", "--help"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // `call` reads and checks its request before it connects (the daemon closes a
    // connection that asks nothing for long, and stdin may be slow): a bad one is a usage
    // error even with no supervisor there.
    let mut child = Command::new(bins::supervisorctl())
        .arg("--socket")
        .arg(&socket)
        .args(["call", "zoo", "zoo.v1.Zoo/Echo", "-d", "@-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"{not json").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--data @- is not valid JSON"), "{}", stderr(&out));
}

#[test]
fn a_usage_error_exits_2_and_help_shows_the_table() {
    let out = Command::new(bins::supervisorctl()).args(["status", "--no-such-flag"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = Command::new(bins::supervisorctl()).args(["signal", "TERM"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "a missing NAME: {}", stderr(&out));
    let help = Command::new(bins::supervisorctl()).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for line in ["Exit status:", "3   status: not every selected instance is running and serving", "4   no such plugin"]
    {
        assert!(help.contains(line), "{line:?} not in --help:\n{help}");
    }
}

#[test]
fn pid_prints_each_running_instance_and_signal_reaches_it_through_the_supervisor() {
    let plugins = [
        plugin("zoo", &bins::zoo(), "replicas = 2\nrestart = \"always\""),
        plugin("idle", &bins::zoo(), "autostart = false"),
    ]
    .concat();
    let d = Daemon::start(&config(&plugins));
    let pids: Vec<i64> =
        ["zoo-0", "zoo-1"].iter().map(|id| d.wait_state(id, "running", UP)["pid"].as_i64().unwrap()).collect();

    let out = d.ctl(&["pid", "zoo"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut printed: Vec<i64> = String::from_utf8_lossy(&out.stdout).lines().map(|l| l.parse().unwrap()).collect();
    printed.sort_unstable();
    let mut expected = pids.clone();
    expected.sort_unstable();
    assert_eq!(printed, expected);
    let json: serde_json::Value = serde_json::from_slice(&d.ctl(&["pid", "zoo", "--json"]).stdout).unwrap();
    assert_eq!(json[0], serde_json::json!({"instance": "zoo-0", "pid": pids[0]}), "{json}");

    // None running: 1, saying so.
    let out = d.ctl(&["pid", "idle"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out).trim(), "supervisorctl: idle: no running instance (idle-0 stopped)");

    // TERM ends each instance; the restart policy brings it back with a new pid.
    let restarts = |id: &str| d.instance(id)["restarts"].as_u64().unwrap();
    let before = [restarts("zoo-0"), restarts("zoo-1")];
    let out = d.ctl(&["signal", "TERM", "zoo"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(said, format!("zoo-0: SIGTERM sent to pid {}\nzoo-1: SIGTERM sent to pid {}\n", pids[0], pids[1]));
    for (i, id) in ["zoo-0", "zoo-1"].iter().enumerate() {
        let after = d.wait_for(id, UP, "restarted", |v| {
            v["state"] == "running" && v["restarts"].as_u64() > Some(before[i]) && v["pid"].as_i64() != Some(pids[i])
        });
        assert_ne!(after["pid"].as_i64(), Some(pids[i]));
        // Nothing of the supervisor held on to the ended process (its pidfd included).
        assert_eq!(after["teardown"]["result"], "clean", "{after}");
    }

    // A signal by number, with --json.
    let now = d.instance("zoo-0")["pid"].as_i64().unwrap();
    let out = d.ctl(&["signal", "15", "zoo", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["signal"], "SIGTERM");
    assert_eq!(json["instances"][0], serde_json::json!({"instance": "zoo-0", "pid": now, "processes": 1}), "{json}");

    // What is no signal is refused, naming it, and nothing is sent: a usage error.
    for bad in ["0", "65", "NOPE"] {
        let out = d.ctl(&["signal", bad, "zoo"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{bad}: {err}");
        assert!(err.contains(&format!("{bad:?} is not a signal to send")), "{bad}: {err}");
        assert!(err.contains("InvalidArgument"), "{bad}: {err}");
    }
    // No running instance: 1.
    let out = d.ctl(&["signal", "HUP", "idle"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("plugin \"idle\" has no running instance to signal"), "{}", stderr(&out));
}

#[test]
fn bad_input_the_daemon_checks_is_a_usage_error_and_an_invalid_config_a_failure() {
    let plugins = format!("{}{}", plugin("zoo", &bins::zoo(), ""), plugin("later", &bins::zoo(), "autostart = false"));
    let d = Daemon::start(&config(&plugins));
    d.wait_state("zoo-0", "running", UP);
    let cases: [(&[&str], &str); 8] = [
        (&["quota", "zoo", "--memory", "bogus"], "plugin \"zoo\": "),
        (&["quota", "zoo", "--cpu", "250"], "plugin \"zoo\": "),
        (&["call", "zoo", "zoo.v1.Zoo/Echo", "--data", "{bad"], "--data is not valid JSON"),
        (&["call", "zoo", "zoo.v1.Zoo/Echo", "--data", "{\"no_such_field\": 1}"], "is not a valid zoo.v1."),
        (&["call", "zoo", "Echo", "--data", "{}"], "must be written Service/Method"),
        // Whatever the plugin's state: one never started has no contract yet (exit 78 before).
        (&["call", "later", "Echo", "--data", "{}"], "must be written Service/Method"),
        (
            &["call", "zoo", "zoo.v1.Zoo/Echo", "--data", "@/nonexistent/request.json"],
            "--data @/nonexistent/request.json",
        ),
        // Read no further than the daemon takes (it read until memory ran out).
        (
            &["call", "zoo", "zoo.v1.Zoo/Echo", "--data", "@/dev/zero"],
            "--data @/dev/zero: the request is over 4194304 bytes",
        ),
    ];
    for (args, says) in cases {
        let out = d.ctl(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    // The instance was not touched by any of it.
    assert_eq!(code(&d, &["status", "zoo"]), Some(0));

    // An invalid config file is INVALID_ARGUMENT from the daemon too, but no usage error:
    // the command was right, the file is not.
    std::fs::write(&d.config, "[[plugin]]\nname = 3\n").unwrap();
    let out = d.ctl(&["update"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("supervisor.toml"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signal_reaches_every_process_in_the_instances_cgroup() {
    use plugin_integration::pb::zoo::Text;
    use plugin_integration::pb::zoo::zoo_client::ZooClient;

    let d = Daemon::start(&config(&plugin("zoo", &bins::zoo(), "")));
    let main = d.wait_state("zoo-0", "running", UP)["pid"].as_i64().unwrap();
    // A grandchild in a session of its own, reparented away from the plugin: still in the
    // instance's cgroup, which is what `signal` goes by.
    let mut zoo = ZooClient::new(plugin_integration::connect(&d.gateway()).await.unwrap());
    let escapee = zoo.escape(Text::default()).await.unwrap().into_inner().pid as i32;
    let state = |pid: i64| plugin_integration::procfs::status_field(pid as i32, "State").unwrap_or_default();

    // STOP, which neither ends nor restarts anything: each process shows it got it.
    let out = tokio::task::block_in_place(|| d.ctl(&["signal", "STOP", "zoo"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("zoo-0: SIGSTOP sent to pid {main} and 1 more process in its cgroup\n")
    );
    let deadline = std::time::Instant::now() + UP;
    while !(state(main).starts_with('T') && state(i64::from(escapee)).starts_with('T')) {
        assert!(
            std::time::Instant::now() < deadline,
            "not both stopped: {} / {}",
            state(main),
            state(i64::from(escapee))
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = tokio::task::block_in_place(|| d.ctl(&["signal", "CONT", "zoo", "--json"]));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["instances"][0], serde_json::json!({"instance": "zoo-0", "pid": main, "processes": 2}), "{json}");
    while state(i64::from(escapee)).starts_with('T') || state(main).starts_with('T') {
        assert!(std::time::Instant::now() < deadline, "not both continued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(d.instance("zoo-0")["pid"].as_i64(), Some(main), "nothing was restarted");
}

/// A service the plugin's descriptors describe but it does not serve is unknown to `call`,
/// as to `describe` and the gateway: NOT_FOUND, exit 69. It was sent to the plugin, which
/// answered UNIMPLEMENTED (exit 76).
#[test]
fn a_call_to_a_service_only_described_is_not_found() {
    let d = Daemon::start(&config(&plugin("zoo", &bins::zoo(), "args = [\"--describe-echo-too\"]")));
    d.wait_state("zoo-0", "running", UP);
    let out = d.ctl(&["call", "zoo", "echo.v1.Echo/Echo", "--data", r#"{"message":"hi"}"#]);
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("does not declare service \"echo.v1.Echo\" (it declares: zoo.v1.Zoo)"),
        "{}",
        stderr(&out)
    );
    // Its own service still answers.
    let out = d.ctl(&["call", "zoo", "zoo.v1.Zoo/Echo", "--data", r#"{"text":"hi"}"#]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// A start, stop or restart exits 0 only when it got what it asked: a start whose `--wait`
/// ran out while the plugin was still starting answered `slow: starting` and exited 0, as
/// if it ran (only "failed" and "backoff" in the answer's words made it exit 1).
#[test]
fn a_start_answered_before_the_plugin_runs_exits_1() {
    let d = Daemon::start(&config(&plugin(
        "slow",
        &bins::zoo(),
        "args = [\"--name\", \"slow\", \"--start-delay-ms\", \"3000\"]\nautostart = false",
    )));
    let out = d.ctl(&["--wait", "1s", "start", "slow"]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{said}{}", stderr(&out));
    assert!(said.starts_with("slow: starting"), "{said}");
    d.wait_state("slow-0", "running", UP);
    // Once it runs, the same command says so and succeeds; a stop too.
    let out = d.ctl(&["start", "slow"]);
    assert_eq!(out.status.code(), Some(0), "{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    let out = d.ctl(&["stop", "slow"]);
    assert_eq!(out.status.code(), Some(0), "{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
}

/// The largest request `call --data @FILE` takes (4 MiB of JSON) reaches the plugin: the
/// daemon's control socket took at most 4 MiB for the whole request, names included, so
/// one just under the CLI's limit was refused OUT_OF_RANGE (exit 75) naming neither.
#[test]
fn a_call_request_as_large_as_the_cli_takes_reaches_the_plugin() {
    let d = Daemon::start(&config(&plugin("zoo", &bins::zoo(), "")));
    d.wait_state("zoo-0", "running", UP);
    let (head, tail) = (r#"{"text":""#, r#""}"#);
    let text = "x".repeat((4 << 20) - head.len() - tail.len());
    let file = d.dir.path().join("request.json");
    std::fs::write(&file, format!("{head}{text}{tail}")).unwrap();
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 4 << 20);
    let data = format!("@{}", file.display());
    let out = d.ctl(&["call", "zoo", "zoo.v1.Zoo/Echo", "--data", &data]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["text"].as_str().map(str::len), Some(text.len()));
    // One byte more is the CLI's to refuse, naming --data and the limit.
    std::fs::write(&file, format!("{head}{text}x{tail}")).unwrap();
    let out = d.ctl(&["call", "zoo", "zoo.v1.Zoo/Echo", "--data", &data]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("the request is over 4194304 bytes"), "{}", stderr(&out));
}
