//! The daemon against operator mistakes and signals: a second daemon on the
//! same cgroup subtree, stop signals at every moment of start-up and
//! shutdown, SIGHUP, and starts that fail: each ends cleanly, and nothing
//! running or left on the host belongs to nobody.

use std::time::{Duration, Instant};

use plugin_integration::daemon::{config, plugin, unique_cgroup_name};
use plugin_integration::pb::echo::EchoRequest;
use plugin_integration::pb::echo::echo_client::EchoClient;
use plugin_integration::procfs::{cgroup_dirs_named, wait_asleep_in_nanosleep};
use plugin_integration::{Daemon, alive, bins, connect};

const UP: Duration = Duration::from_secs(30);
const EXIT: Duration = Duration::from_secs(30);

fn echo_and_zoo() -> String {
    config(&format!("{}{}", plugin("echo", &bins::example("echo"), ""), plugin("zoo", &bins::zoo(), "")))
}

/// After the daemon is gone: no cgroup of its subtree, no process it spawned,
/// no socket in its runtime directory.
fn assert_nothing_left(d: &Daemon, what: &str) {
    let name = d.cgroup_name();
    let deadline = Instant::now() + Duration::from_secs(5);
    while d.spawned_pids().iter().any(|p| alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for pid in d.spawned_pids() {
        assert!(!alive(pid), "{what}: plugin pid {pid} outlived the daemon\nlog:\n{}", d.log_text());
    }
    let left = cgroup_dirs_named(&name);
    assert!(left.is_empty(), "{what}: cgroups left behind: {left:?}\nlog:\n{}", d.log_text());
    for socket in [d.control(), d.gateway()] {
        assert!(!socket.exists(), "{what}: {} left behind", socket.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_the_same_subtree_refuses_and_leaves_the_first_alone() {
    let cfg = config(&plugin("echo", &bins::example("echo"), ""));
    let first = Daemon::start(&cfg);
    let pid = first.wait_state("echo-0", "running", UP)["pid"].as_i64().unwrap() as i32;

    // Same subtree (the config names it), its own runtime directory.
    let mut second = Daemon::spawn(&cfg);
    let status = second.wait_exit(EXIT).expect("the second daemon exits");
    assert_eq!(status.code(), Some(1), "{}", second.log_text());
    let log = second.log_text();
    let subtree = first.cgroup_name();
    assert!(log.contains(&format!("(pid {})", first.pid())), "names the running daemon's pid: {log}");
    assert!(log.contains(&subtree) && log.contains("belongs to a running plugin-supervisor"), "{log}");

    // The first one did not notice.
    assert!(alive(first.pid()));
    assert!(alive(pid), "the first daemon's plugin was killed");
    assert_eq!(first.instance("echo-0")["pid"].as_i64(), Some(i64::from(pid)));
    let mut echo = EchoClient::new(connect(&first.gateway()).await.unwrap());
    let r = echo.echo(EchoRequest { message: "still here".into() }).await.unwrap();
    assert_eq!(r.into_inner().message, "still here");
    assert!(!cgroup_dirs_named(&subtree).is_empty(), "the first daemon's subtree stays");
}

/// Two daemons on one state_dir rewrote each other's state.json, forgot each other's
/// rollouts and swept each other's kept binaries; and the file, which keeps config text
/// whole, was readable by every local user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_the_same_state_dir_refuses_and_the_state_is_its_owners_alone() {
    use std::os::unix::fs::PermissionsExt;
    let shared = tempfile::tempdir().unwrap();
    let state = shared.path().join("state");
    let cfg = config(&plugin("echo", &bins::example("echo"), ""))
        .replace("state_dir = \"state\"", &format!("state_dir = {:?}", state.display().to_string()));
    let first = Daemon::start(&cfg);
    first.wait_state("echo-0", "running", UP);
    let stopped = first.ctl(&["stop", "echo"]);
    assert!(stopped.status.success(), "{stopped:?}");
    let mode = |name: &str| std::fs::metadata(state.join(name)).unwrap().permissions().mode() & 0o777;
    assert_eq!((mode(""), mode("state.json"), mode("lock")), (0o700, 0o600, 0o600));

    // Its own runtime directory and cgroup subtree: only the state_dir is shared.
    let mut second = Daemon::spawn(&cfg.replace(&first.cgroup_name(), &unique_cgroup_name()));
    let status = second.wait_exit(EXIT).expect("the second daemon exits");
    assert_eq!(status.code(), Some(1), "{}", second.log_text());
    let log = second.log_text();
    let refused = format!(
        "state_dir {}: in use by a running plugin-supervisor (pid {}); a second one needs a state_dir of its own",
        state.display(),
        first.pid()
    );
    assert_eq!(log.matches(&refused).count(), 1, "{log}");
    assert!(second.spawned_pids().is_empty(), "{log}");
    assert!(alive(first.pid()));
    let kept = std::fs::read_to_string(state.join("state.json")).unwrap();
    assert!(kept.contains("\"echo\""), "the first one's state is as it left it: {kept}");
}

/// A signal's end for a daemon signalled `when`: a clean exit, or death by
/// the signal's default action before `main` could catch it (a few
/// milliseconds after exec on a loaded machine), which is clean only if the
/// daemon had not begun: it had not even made its runtime directory.
fn assert_clean_exit(d: &Daemon, status: std::process::ExitStatus, sig: i32, when: &str) {
    use std::os::unix::process::ExitStatusExt;
    if status.signal() == Some(sig) {
        assert!(!d.runtime.exists(), "{when}: killed by the signal after start-up began\nlog:\n{}", d.log_text());
    } else {
        assert!(status.success(), "{when}: {status:?}\nlog:\n{}", d.log_text());
    }
    assert_nothing_left(d, when);
}

#[test]
fn a_stop_signal_at_any_moment_of_start_up_ends_in_a_clean_exit() {
    // From before the config is read to after the plugins run.
    for delay_ms in [1, 3, 5, 10, 15, 20, 30, 50, 80, 150, 400] {
        let mut d = Daemon::spawn(&echo_and_zoo());
        std::thread::sleep(Duration::from_millis(delay_ms));
        // The later ones must land once the daemon catches signals, which it does
        // before it makes its runtime directory: on a loaded machine 80 ms after
        // spawn may still be the loader's, where the default action kills.
        let catching = delay_ms >= 80;
        if catching {
            let deadline = Instant::now() + UP;
            while !d.runtime.exists() {
                assert!(Instant::now() < deadline, "no runtime directory: {}", d.log_text());
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        d.signal(libc::SIGTERM);
        let when = format!("SIGTERM after {delay_ms} ms");
        let status = d.wait_exit(EXIT).unwrap_or_else(|| {
            // What the kernel says of its signals, should this ever happen again.
            let signals = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap_or_default();
            let signals: Vec<&str> =
                signals.lines().filter(|l| l.starts_with("Sig") || l.starts_with("ShdPnd")).collect();
            panic!("{when}: still running; {signals:?}\nlog:\n{}", d.log_text())
        });
        assert_clean_exit(&d, status, libc::SIGTERM, &when);
        if catching {
            assert!(status.success(), "{when}: the signal was not caught: {status:?}");
        }
    }
}

#[test]
fn a_second_signal_after_one_during_start_up_still_ends_in_a_clean_exit() {
    // The first signal alone must end the daemon; a second one, while it
    // stops or after, must not leave anything behind either.
    for (first, second) in [(10, 1), (20, 300), (40, 300), (60, 300), (80, 300), (120, 300)] {
        let mut d = Daemon::spawn(&echo_and_zoo());
        std::thread::sleep(Duration::from_millis(first));
        d.signal(libc::SIGINT);
        std::thread::sleep(Duration::from_millis(second));
        d.signal(libc::SIGTERM);
        let status = d.wait_exit(EXIT).expect("exits");
        assert_clean_exit(&d, status, libc::SIGINT, &format!("signals at {first} and {} ms", first + second));
    }
}

#[test]
fn a_second_signal_kills_a_slow_drain_at_once() {
    let cfg = config(&plugin(
        "zoo",
        &bins::zoo(),
        "stop_timeout = \"30s\"\ncall_timeout = \"60s\"\nargs = [\"--blocking-sleep\"]",
    ));
    let mut d = Daemon::start(&cfg);
    d.wait_state("zoo-0", "running", UP);
    // A call the drain would wait 30 s for.
    let mut busy = std::process::Command::new(bins::supervisorctl())
        .arg("--socket")
        .arg(d.control())
        .args(["call", "zoo", "zoo.v1.Zoo/Sleep", "--data", r#"{"ms":40000}"#])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The call is in the plugin (its one thread asleep in it) before the signal.
    let pid = d.instance("zoo-0")["pid"].as_i64().unwrap() as i32;
    assert!(wait_asleep_in_nanosleep(pid, UP), "the call never reached the plugin: {}", d.log_text());
    d.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(500));
    assert!(d.wait_exit(Duration::ZERO).is_none(), "the first signal drains: {}", d.log_text());
    let second = Instant::now();
    d.signal(libc::SIGTERM);
    let status = d.wait_exit(EXIT).expect("exits");
    let took = second.elapsed();
    let _ = busy.kill();
    let _ = busy.wait();
    assert!(status.success(), "{status:?}\nlog:\n{}", d.log_text());
    assert!(took < Duration::from_secs(10), "the second signal did not cut the 30 s drain short: {took:?}");
    assert!(d.log_text().contains("second stop signal"), "{}", d.log_text());
    assert_nothing_left(&d, "a slow drain cut short");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_at_any_moment_never_kills_the_daemon_and_applies_the_config_once_it_runs() {
    let mut d = Daemon::spawn(&config(&plugin("echo", &bins::example("echo"), "")));
    // During start-up, but after the daemon's first lines caught it (its runtime
    // directory is made after that): SIGHUP's default action would kill it.
    let deadline = Instant::now() + UP;
    while !d.runtime.exists() {
        assert!(Instant::now() < deadline, "no runtime directory: {}", d.log_text());
        std::thread::sleep(Duration::from_millis(1));
    }
    d.signal(libc::SIGHUP);
    d.wait_control(UP);
    // The one caught during start-up is applied once the daemon runs.
    let applied = |d: &Daemon| d.log_text().matches("update: no changes").count();
    let pid = d.wait_state("echo-0", "running", UP)["pid"].as_i64().unwrap() as i32;
    // One at a time: the kernel merges a signal sent while the same one is pending.
    for n in 2..=3 {
        d.signal(libc::SIGHUP);
        let deadline = Instant::now() + Duration::from_secs(5);
        while applied(&d) < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(applied(&d), n, "{}", d.log_text());
    }
    assert!(d.wait_exit(Duration::from_millis(200)).is_none(), "SIGHUP killed the daemon");
    assert!(alive(pid));
    assert_eq!(d.instance("echo-0")["pid"].as_i64(), Some(i64::from(pid)), "the plugin was not restarted");
    let mut echo = EchoClient::new(connect(&d.gateway()).await.unwrap());
    assert_eq!(echo.echo(EchoRequest { message: "hup".into() }).await.unwrap().into_inner().message, "hup");
}

#[test]
fn a_start_that_fails_leaves_nothing_behind_and_says_its_cause_once() {
    /// What is broken, how the scratch directory is broken, the cause the log names.
    type Case = (&'static str, fn(&std::path::Path), &'static str);
    let cases: [Case; 3] = [
        (
            "state.json that is not text",
            |dir| {
                std::fs::create_dir_all(dir.join("state")).unwrap();
                std::fs::write(dir.join("state/state.json"), b"\xff\xfe not json").unwrap();
            },
            "state.json: stream did not contain valid UTF-8",
        ),
        (
            "state.json that does not parse",
            |dir| {
                std::fs::create_dir_all(dir.join("state")).unwrap();
                std::fs::write(dir.join("state/state.json"), "{\n  \"quotas\": [oops\n").unwrap();
            },
            "state.json: line 2",
        ),
        ("a state_dir that is a file", |dir| std::fs::write(dir.join("state"), "").unwrap(), "state_dir "),
    ];
    for (what, prepare, cause) in cases {
        let mut d = Daemon::spawn_with(&echo_and_zoo(), prepare);
        let status = d.wait_exit(EXIT).unwrap_or_else(|| panic!("{what}: the daemon keeps running"));
        assert_eq!(status.code(), Some(1), "{what}: {}", d.log_text());
        let log = d.log_text();
        assert_eq!(log.matches(cause).count(), 1, "{what}: the cause, once: {log}");
        let error = log.lines().find(|l| l.starts_with("plugin-supervisor: ")).unwrap_or_default();
        let last = error.rsplit(": ").next().unwrap_or_default();
        assert_eq!(error.matches(last).count(), 1, "{what}: the cause is said once: {error}");
        assert!(d.spawned_pids().is_empty(), "{what}: no plugin started: {log}");
        assert_nothing_left(&d, what);
    }
}
