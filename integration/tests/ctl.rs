//! `supervisorctl` behaves as a Unix tool: it ends quietly when the reader
//! of its output goes away, gives up on a daemon that does not answer
//! (after `--wait`, 10 s by default), and prints as many past lines as asked.

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use plugin_integration::daemon::{config, plugin};
use plugin_integration::pb::zoo::PrintRequest;
use plugin_integration::pb::zoo::zoo_client::ZooClient;
use plugin_integration::{Daemon, bins, connect};

const UP: Duration = Duration::from_secs(30);

fn ctl(socket: &Path) -> Command {
    let mut c = Command::new(bins::supervisorctl());
    c.arg("--socket").arg(socket);
    c
}

/// The write end of a pipe whose reader is already gone.
fn closed_pipe() -> std::io::PipeWriter {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    writer
}

/// Waits for `child` at most `limit`; kills it (and says so) past that.
fn wait_bounded(mut child: Child, limit: Duration) -> (Output, Duration) {
    let start = Instant::now();
    while start.elapsed() < limit {
        if child.try_wait().unwrap().is_some() {
            return (child.wait_with_output().unwrap(), start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    panic!("still running after {limit:?}; stderr: {}", String::from_utf8_lossy(&out.stderr));
}

/// Ended by SIGPIPE, as `yes | head -1` ends `yes`: no panic, no message.
fn assert_ended_quietly(out: &Output, what: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{what}: {:?}, stderr: {err}", out.status);
    assert!(err.is_empty(), "{what}: {err}");
}

/// A follow that the daemon's stop cuts ends saying so (exit 5), not in h2's words alone.
#[test]
fn a_follow_cut_by_the_daemons_stop_says_the_supervisor_closed_the_connection() {
    let mut d = Daemon::start(&config(&plugin("echo", &bins::example("echo"), "")));
    d.wait_state("echo-0", "running", UP);
    let mut child =
        ctl(&d.control()).args(["events", "-f"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // Its history printed: it follows now.
    let mut first = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut first).unwrap();
    assert!(!first.is_empty(), "no event printed");
    assert!(d.stop_with(libc::SIGTERM, UP).is_some_and(|s| s.success()));
    let (out, _) = wait_bounded(child, Duration::from_secs(20));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.starts_with("supervisorctl: the supervisor closed the connection (did it stop?): "), "{err}");
}

#[test]
fn a_reader_that_goes_away_ends_every_command_quietly() {
    let d = Daemon::start(&config(&plugin("echo", &bins::example("echo"), "")));
    d.wait_state("echo-0", "running", UP);
    let commands: [&[&str]; 5] = [
        &["status"],
        &["metrics"],
        &["events"],
        &["call", "echo", "echo.v1.Echo/Echo", "--data", r#"{"message":"hi"}"#],
        &["doctor"],
    ];
    for args in commands {
        let child = ctl(&d.control()).args(args).stdout(closed_pipe()).stderr(Stdio::piped()).spawn().unwrap();
        let (out, _) = wait_bounded(child, UP);
        assert_ended_quietly(&out, &args.join(" "));
    }

    // `supervisorctl events -f | grep -m1 -q ready`: the reader leaves after
    // one line, and the next event ends the follower.
    let mut child =
        ctl(&d.control()).args(["events", "-f"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert!(!first.is_empty());
    let out = d.ctl(&["restart", "echo"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (out, _) = wait_bounded(child, UP);
    assert_ended_quietly(&out, "events -f");
}

/// A control socket that accepts connections and never says a word.
fn silent_socket(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("control.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming() {
            held.push(s);
        }
    });
    path
}

#[test]
fn a_daemon_that_never_answers_is_given_up_on() {
    let dir = tempfile::tempdir().unwrap();
    let socket = silent_socket(dir.path());
    // Without --wait, 10 seconds.
    let child = ctl(&socket).arg("status").stderr(Stdio::piped()).spawn().unwrap();
    let (out, took) = wait_bounded(child, Duration::from_secs(30));
    assert!(String::from_utf8_lossy(&out.stderr).contains("within 10s"), "{out:?}");
    // A daemon that does not answer cannot be reached: the table's 5, as when nothing
    // listens, and not the 1 of a command that ran and failed.
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    assert!(took >= Duration::from_millis(9900) && took < Duration::from_secs(15), "took {took:?}");
    let commands: [&[&str]; 7] = [
        &["status"],
        &["metrics"],
        &["start", "echo"],
        &["quota", "echo", "--pids", "9"],
        &["call", "echo", "echo.v1.Echo/Echo"],
        &["events", "-f"],
        &["tail", "-f", "echo"],
    ];
    let expected = format!("supervisorctl: no answer from the supervisor at {} within 1s", socket.display());
    for args in commands {
        let child = ctl(&socket).args(["--wait", "1s"]).args(args).stderr(Stdio::piped()).spawn().unwrap();
        let (out, took) = wait_bounded(child, Duration::from_secs(20));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(5), "{args:?}: {err}");
        assert!(err.starts_with(&expected), "{args:?}: {err}");
        assert!(took < Duration::from_secs(8), "{args:?} took {took:?}");
    }
    // A call with its own timeout waits that and --wait, and says where it waited.
    let args = ["--wait", "1s", "call", "--timeout", "1s", "echo", "echo.v1.Echo/Echo"];
    let child = ctl(&socket).args(args).stderr(Stdio::piped()).spawn().unwrap();
    let (out, _) = wait_bounded(child, Duration::from_secs(20));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    let expected =
        format!("supervisorctl: no answer from the supervisor at {} within 2s (is it stuck?", socket.display());
    assert!(err.starts_with(&expected), "{err}");
}

#[tokio::test]
async fn tail_prints_as_many_past_lines_as_asked_and_0_prints_none() {
    let d = Daemon::start(&config(&plugin("zoo", &bins::zoo(), "")));
    d.wait_state("zoo-0", "running", UP);
    let mut zoo = ZooClient::new(connect(&d.gateway()).await.unwrap());
    zoo.print(PrintRequest { lines: 5, text: "old".into() }).await.unwrap();
    let tail = |n: &str| {
        let out = d.ctl(&["tail", "-n", n, "zoo"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect::<Vec<_>>()
    };
    // Captured output arrives asynchronously: wait for the last line.
    let deadline = Instant::now() + UP;
    while !tail("50").iter().any(|l| l.contains("printed")) {
        assert!(Instant::now() < deadline, "{:?}", tail("50"));
        std::thread::sleep(Duration::from_millis(25));
    }
    assert_eq!(tail("0"), Vec::<String>::new());
    assert_eq!(tail("2").len(), 2);

    // Following with -n 0: only what comes next.
    let mut child = ctl(&d.control()).args(["tail", "-f", "-n", "0", "zoo"]).stdout(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // The follower is subscribed once its (empty) backlog is served; printing
    // until it reads makes sure one lands after that, however late that is.
    let printer = tokio::spawn(async move {
        loop {
            zoo.print(PrintRequest { lines: 1, text: "fresh".into() }).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let first = tokio::time::timeout(UP, tokio::task::spawn_blocking(move || lines.next())).await;
    let _ = child.kill();
    let _ = child.wait();
    printer.abort();
    let first = first.expect("the follower printed nothing").unwrap().unwrap().unwrap();
    assert!(first.contains("fresh"), "{first}");
}

#[test]
fn start_answers_within_the_wait_with_the_state_reached() {
    // A plugin that never answers its handshake (5 s allowed in tests).
    let d = Daemon::start(&config(&plugin("zoo", &bins::zoo(), "args = [\"--hang\"]\nautostart = false")));
    let t = Instant::now();
    let child = ctl(&d.control()).args(["--wait", "2s", "start", "zoo"]).stdout(Stdio::piped()).spawn().unwrap();
    let (out, took) = wait_bounded(child, UP);
    // Its 2 s, not the handshake's 5 (with what slack a loaded machine needs and that leaves).
    assert!(took < Duration::from_millis(4900), "took {took:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "zoo: starting");
    // The start goes on: the handshake deadline then fails it.
    d.wait_for("zoo-0", UP, "past its handshake", |v| v["state"] != "starting");
    assert!(t.elapsed() >= Duration::from_secs(4));
}

/// A call without `--timeout` waits the plugin's `call_timeout` and `--wait`, no longer: it
/// waited up to a year on a daemon that took the call and then stalled (here stopped by
/// SIGSTOP while the plugin sleeps in the call).
#[test]
fn a_call_without_a_timeout_gives_up_on_a_stalled_daemon_after_the_plugins_call_timeout() {
    // Budgets a loaded machine keeps: --wait covers the connection and the config asked
    // for, call_timeout the wait for the plugin's sleep and the SIGSTOP.
    let entry = "call_timeout = \"10s\"\nargs = [\"--blocking-sleep\"]";
    let d = Daemon::start(&config(&plugin("zoo", &bins::zoo(), entry)));
    let pid = d.wait_state("zoo-0", "running", UP)["pid"].as_i64().unwrap() as i32;
    let args = ["--wait", "3s", "call", "zoo", "zoo.v1.Zoo/Sleep", "--data", r#"{"ms": 60000}"#];
    let child = ctl(&d.control()).args(args).stderr(Stdio::piped()).spawn().unwrap();
    assert!(plugin_integration::procfs::wait_asleep_in_nanosleep(pid, UP), "the call never reached the plugin");
    /// Wakes the daemon however the test ends, before it is stopped.
    struct Continued<'a>(&'a Daemon);
    impl Drop for Continued<'_> {
        fn drop(&mut self) {
            self.0.signal(libc::SIGCONT);
        }
    }
    d.signal(libc::SIGSTOP);
    let _continued = Continued(&d);
    let (out, took) = wait_bounded(child, Duration::from_secs(40));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    let expected = format!("supervisorctl: no answer from the supervisor at {} within 13s", d.control().display());
    assert!(err.starts_with(&expected), "{err}");
    assert!(took < Duration::from_secs(25), "took {took:?}");
}
