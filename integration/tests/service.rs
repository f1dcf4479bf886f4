//! The daemon under a service manager, speaking systemd's notify protocol to a datagram
//! socket this test reads in the manager's place (the systemd VM lane checks the same
//! under a real systemd): `READY=1` only once the autostart plugins have started, a
//! `STATUS=` line that follows them, `RELOADING=1` and `READY=1` around an update,
//! watchdog pings when `WATCHDOG_USEC` asks for them, `STOPPING=1` at a stop signal; and
//! a manager that stops reading costs the daemon nothing.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use plugin_integration::daemon::{config, plugin};
use plugin_integration::{Daemon, bins};

const UP: Duration = Duration::from_secs(30);

/// The manager's end of `NOTIFY_SOCKET`: like systemd, it reads every message as it
/// comes (a thread keeps them for the test), or, `deaf`, never reads.
struct Manager {
    path: std::path::PathBuf,
    messages: Option<std::sync::mpsc::Receiver<String>>,
    _sock: Option<UnixDatagram>,
    _dir: tempfile::TempDir,
}

impl Manager {
    fn new() -> Self {
        let (dir, path, sock) = Self::socket();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = sock.recv(&mut buf) {
                if tx.send(String::from_utf8_lossy(&buf[..n]).into_owned()).is_err() {
                    return;
                }
            }
        });
        Self { path, messages: Some(rx), _sock: None, _dir: dir }
    }

    fn deaf() -> Self {
        let (dir, path, sock) = Self::socket();
        Self { path, messages: None, _sock: Some(sock), _dir: dir }
    }

    fn socket() -> (tempfile::TempDir, std::path::PathBuf, UnixDatagram) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        (dir, path, sock)
    }

    fn env(&self) -> String {
        self.path.display().to_string()
    }

    /// The next message, if one comes within `within`.
    fn next(&self, within: Duration) -> Option<String> {
        self.messages.as_ref()?.recv_timeout(within).ok()
    }

    /// Every message up to and including the first that `done` accepts.
    fn until(&self, within: Duration, done: impl Fn(&str) -> bool) -> Vec<String> {
        let end = Instant::now() + within;
        let mut seen = Vec::new();
        while let Some(m) = self.next(end.saturating_duration_since(Instant::now())) {
            let last = done(&m);
            seen.push(m);
            if last {
                return seen;
            }
        }
        panic!("not seen within {within:?}; the manager got {seen:#?}");
    }
}

fn says(m: &str, line: &str) -> bool {
    m.lines().any(|l| l == line)
}

fn status_in(m: &str) -> Option<&str> {
    m.lines().find_map(|l| l.strip_prefix("STATUS="))
}

#[test]
fn ready_waits_for_the_autostart_plugins_and_reloads_stops_and_the_status_line_are_told() {
    let manager = Manager::new();
    let plugins = format!(
        "{}{}",
        plugin("echo", &bins::example("echo"), ""),
        plugin("slow", &bins::zoo(), "args = [\"--name\", \"slow\", \"--start-delay-ms\", \"1500\"]\n")
    );
    let spawned = Instant::now();
    let mut d =
        Daemon::spawn_with_env(&config(&plugins), &[("NOTIFY_SOCKET", &manager.env()), ("WATCHDOG_USEC", "400000")]);

    // READY=1 comes once the slow plugin has started: not before its 1.5 s, and when it
    // comes every instance runs.
    let before = manager.until(UP, |m| says(m, "READY=1"));
    let took = spawned.elapsed();
    let ready = before.last().unwrap();
    let states: Vec<(String, String)> = d
        .status()
        .iter()
        .map(|v| (v["instance"].as_str().unwrap().to_owned(), v["state"].as_str().unwrap().to_owned()))
        .collect();
    assert!(took >= Duration::from_millis(1500), "ready after {took:?}, before the slow plugin could start");
    assert_eq!(states, [("echo-0".to_owned(), "running".to_owned()), ("slow-0".to_owned(), "running".to_owned())]);
    assert_eq!(status_in(ready), Some("2 plugins running"), "{ready:?}");
    // Watchdog pings go every half period (200 ms): fifteen in the next three seconds
    // when nothing is late; at least six leaves a loaded machine its stalls.
    let end = Instant::now() + Duration::from_secs(3);
    let mut pings = 0;
    while let Some(m) = manager.next(end.saturating_duration_since(Instant::now())) {
        pings += usize::from(says(&m, "WATCHDOG=1"));
    }
    assert!(pings >= 6, "{pings} watchdog pings in three seconds");

    // The status line follows the plugins.
    let out = d.ctl(&["stop", "slow"]);
    assert!(out.status.success(), "{out:?}");
    manager.until(UP, |m| status_in(m) == Some("1 plugin running, 1 stopped"));

    // An update is a reload to the manager: RELOADING=1 (with the monotonic clock, which
    // systemd 253 wants) when it begins, READY=1 when it is applied.
    let text = std::fs::read_to_string(&d.config).unwrap();
    let added = plugin("echo2", &bins::zoo(), "args = [\"--name\", \"echo2\"]\n");
    std::fs::write(&d.config, format!("{text}{added}")).unwrap();
    let out = d.ctl(&["update"]);
    assert!(out.status.success(), "{out:?}");
    let around = manager.until(UP, |m| says(m, "READY=1"));
    let reloading = around.iter().position(|m| says(m, "RELOADING=1")).unwrap_or_else(|| panic!("{around:#?}"));
    assert!(around[reloading].lines().any(|l| l.starts_with("MONOTONIC_USEC=")), "{around:#?}");
    assert!(reloading < around.len() - 1, "{around:#?}");
    d.wait_state("echo2-0", "running", UP);
    manager.until(UP, |m| status_in(m) == Some("2 plugins running, 1 stopped"));

    // A stop signal: STOPPING=1, and the daemon goes.
    d.signal(libc::SIGTERM);
    manager.until(UP, |m| says(m, "STOPPING=1"));
    let exit = d.wait_exit(UP);
    assert!(exit.is_some_and(|s| s.success()), "{exit:?}");
}

#[test]
fn a_manager_that_stops_reading_costs_the_daemon_nothing() {
    // Nobody reads this socket: once its queue is full a send would block.
    let manager = Manager::deaf();
    let mut d = Daemon::spawn_with_env(
        &config(&plugin("echo", &bins::example("echo"), "")),
        &[("NOTIFY_SOCKET", &manager.env()), ("WATCHDOG_USEC", "1000")],
    );
    d.wait_control(UP);
    d.wait_state("echo-0", "running", UP);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !d.log_text().contains("the service manager is not reading its notify socket") {
        assert!(Instant::now() < deadline, "{}", d.log_tail(20));
        std::thread::sleep(Duration::from_millis(100));
    }
    // The daemon still answers at once, and stops cleanly.
    let t = Instant::now();
    assert!(d.ctl(&["status", "echo"]).status.success());
    assert!(t.elapsed() < Duration::from_secs(5), "status took {:?}", t.elapsed());
    let exit = d.stop_with(libc::SIGTERM, UP);
    assert!(exit.is_some_and(|s| s.success()), "{exit:?}\n{}", d.log_tail(20));
}
