//! The control socket under a flood: a uid it does not admit connecting and closing in a
//! loop is counted, not logged and recorded once per connection (which pushed every
//! lifecycle event out of the history), and an admitted peer holding thousands of silent
//! connections can take neither the daemon's descriptors nor its answers to others.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use plugin_integration::daemon::{config_with, plugin};
use plugin_integration::flood::metric;
use plugin_integration::procfs::open_fds;
use plugin_integration::raw::IdleCrowd;
use plugin_integration::{Daemon, bins};

const NOBODY: u32 = 65534;

/// `supervisorctl args...`, given up (killed) after `within`: before the fix a daemon out of
/// descriptors never answered.
fn ctl_within(d: &Daemon, within: Duration, args: &[&str]) -> Output {
    Command::new("timeout")
        .arg("-s")
        .arg("KILL")
        .arg(within.as_secs().to_string())
        .arg(bins::supervisorctl())
        .arg("--socket")
        .arg(d.control())
        .args(args)
        .output()
        .expect("run supervisorctl")
}

fn refused_total(d: &Daemon) -> Option<f64> {
    let text = String::from_utf8_lossy(&ctl_within(d, Duration::from_secs(10), &["metrics"]).stdout).to_string();
    metric(&text, "supervisor_events_total{plugin=\"\",kind=\"control-refused\"}")
}

#[test]
fn a_refused_uid_connecting_in_a_loop_is_counted_said_once_per_interval_and_keeps_the_history() {
    let cfg = config_with("control_socket_mode = \"0666\"", &plugin("echo", &bins::example("echo"), ""));
    let d = Daemon::start(&cfg);
    d.wait_state("echo-0", "running", Duration::from_secs(30));
    for p in [d.dir.path(), d.runtime.as_path()] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // Connects and closes as fast as it can for 2 s, then says how often it did.
    let script = "use IO::Socket::UNIX; use Time::HiRes qw(time); my ($n, $end) = (0, time + 2); \
                  while (time < $end) { my $s = IO::Socket::UNIX->new(Peer => $ARGV[0]) \
                  or next; close $s; $n++ } print $n";
    let out = Command::new("perl")
        .arg("-e")
        .arg(script)
        .arg(d.control())
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .expect("run the flood");
    let flood: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().expect("the flood's count");
    assert!(flood > 1000, "too small a flood to push the history out: {flood}");

    // One event (the first, at once), not one each: the plugin's own events are still there.
    // Read before the counts are polled: within the 10 s that may take, the rest are said.
    let events = d.events();
    let refused: Vec<_> = events.iter().filter(|e| e["kind"] == "control-refused").collect();
    let rest = format!("refused {} control connections from uid {NOBODY}", flood - 1);
    // On a slow machine the rest may have been said already (10 s after the first), once.
    let said_already = refused.len() == 2 && refused[1]["message"].as_str().is_some_and(|m| m.starts_with(&rest));
    assert!(refused.len() == 1 || said_already, "{refused:#?}");
    assert_eq!(refused[0]["message"], format!("refused a control connection from uid {NOBODY}"));
    assert!(events.iter().any(|e| e["kind"] == "spawned" && e["instance"] == "echo-0"), "{events:#?}");
    assert!(events.iter().any(|e| e["kind"] == "ready" && e["instance"] == "echo-0"), "{events:#?}");
    // Every refusal is counted.
    let deadline = Instant::now() + Duration::from_secs(10);
    while refused_total(&d) != Some(flood as f64) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(refused_total(&d), Some(flood as f64));
    // The rest are said once the interval is over, with their count.
    let said = d.wait_event("control-refused", &rest, Duration::from_secs(15));
    assert_eq!(said["fields"]["refused"], (flood - 1).to_string(), "{said:#?}");
    let logged = d.log_text().lines().filter(|l| l.contains("control connection")).count();
    assert_eq!(logged, 2, "{}", d.log_tail(20));
}

#[test]
fn thousands_of_silent_control_connections_leave_commands_answered_and_restarts_working() {
    // 1400 descriptors: the gateway keeps its default fd_reserve (1024) free, and 2000
    // connections would take every one before the fix.
    let cfg = config_with("", &plugin("echo", &bins::example("echo"), ""));
    let d = Daemon::start_with_nofile(&cfg, 1400);
    let first = d.wait_state("echo-0", "running", Duration::from_secs(30));
    let crowd = IdleCrowd::open(&d.control(), 2000).expect("open the crowd");
    assert_eq!(crowd.opened, 2000);
    // The crowd's connections sent the preface and nothing more: they are closed for a
    // newcomer once connected a second (MIN_AGE), and younger ones are not.
    std::thread::sleep(Duration::from_secs(2));

    let status = ctl_within(&d, Duration::from_secs(10), &["status"]);
    assert_eq!(status.status.code(), Some(0), "{}\n{}", String::from_utf8_lossy(&status.stderr), d.log_tail(20));
    let fds = open_fds(d.pid()).len();
    // Its own (about 60) and 128 control connections, far below the limit less the reserve.
    assert!(fds < 400, "the daemon holds {fds} descriptors with the crowd connected");

    // A plugin killed now starts again.
    let pid = first["pid"].as_i64().expect("a pid");
    // SAFETY: killing the plugin process the daemon started for this test.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let again = d.wait_for("echo-0", Duration::from_secs(30), "running again with a new pid", |v| {
        v["state"] == "running" && v["pid"].as_i64().is_some_and(|p| p != pid)
    });
    assert_eq!(again["restarts"], 1);
    let log = d.log_text();
    assert!(!log.contains("Too many open files"), "{}", d.log_tail(20));
    drop(crowd);
}

#[test]
fn followers_past_their_share_of_the_control_connections_are_refused_and_commands_still_get_in() {
    // fd_reserve 64: 8 control connections, of which 6 may hold follow streams.
    let cfg = config_with("", &plugin("echo", &bins::example("echo"), "")).replacen(
        "[supervisor.defaults]",
        "[supervisor.gateway]\nfd_reserve = 64\n\n[supervisor.defaults]",
        1,
    );
    let d = Daemon::start(&cfg);
    d.wait_state("echo-0", "running", Duration::from_secs(30));
    // As many followers as the socket takes connections: before the fix each was served,
    // and no command got in for ten minutes.
    let mut followers: Vec<_> = (0..8)
        .map(|_| {
            Command::new(bins::supervisorctl())
                .arg("--socket")
                .arg(d.control())
                .args(["events", "-f"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("run a follower")
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut refused = Vec::new();
    while refused.len() < 2 {
        assert!(Instant::now() < deadline, "followers past their share were not refused: {refused:?}");
        let mut i = 0;
        while i < followers.len() {
            if followers[i].try_wait().expect("a follower's status").is_some() {
                refused.push(followers.remove(i).wait_with_output().expect("a follower's output"));
            } else {
                i += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for out in &refused {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{stderr}");
        assert!(stderr.contains("6 control connections hold follow streams"), "{stderr}");
        assert!(stderr.contains("the rest kept for commands"), "{stderr}");
    }
    // Six follow; a command (a liveness probe, `ExecReload=supervisorctl update`) gets in.
    let status = ctl_within(&d, Duration::from_secs(10), &["status"]);
    assert_eq!(status.status.code(), Some(0), "{}\n{}", String::from_utf8_lossy(&status.stderr), d.log_tail(20));
    assert!(followers.iter_mut().all(|f| f.try_wait().unwrap().is_none()), "a follower within its share ended");
    for mut f in followers {
        let _ = f.kill();
        let _ = f.wait();
    }
}

#[test]
fn the_accept_loop_answers_others_while_newcomers_wait_for_the_connections_closed_for_them() {
    use plugin_integration::raw::busy_connection;
    use std::io::Write;
    // fd_reserve 128: 16 control connections.
    let cfg = config_with("control_socket_mode = \"0666\"", &plugin("echo", &bins::example("echo"), "")).replacen(
        "[supervisor.defaults]",
        "[supervisor.gateway]\nfd_reserve = 128\n\n[supervisor.defaults]",
        1,
    );
    let d = Daemon::start(&cfg);
    d.wait_state("echo-0", "running", Duration::from_secs(30));
    for p in [d.dir.path(), d.runtime.as_path()] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // 16 connections that made a call (of no method: answered at once) and read nothing
    // since: idle, each closed for a newcomer only after its grace, for it never acks the
    // GOAWAY's PING.
    let stuck: Vec<_> = (0..16)
        .map(|_| busy_connection(&d.control(), "/no.Such/Method", &[0; 5], Duration::from_secs(10)).expect("a call"))
        .collect();
    // 16 newcomers at once: each has a stuck one closed for it and waits for it to end.
    let newcomers: Vec<_> = (0..16)
        .map(|_| {
            let mut s = std::os::unix::net::UnixStream::connect(d.control()).expect("connect");
            s.write_all(plugin_integration::raw::PREFACE).expect("the preface");
            s
        })
        .collect();
    // Meanwhile a uid the socket does not admit is told so at once. Before the fix the
    // accept loop waited for each newcomer's room in turn (a second or so each).
    let started = Instant::now();
    let refused = Command::new(bins::supervisorctl())
        .arg("--socket")
        .arg(d.control())
        .arg("status")
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .expect("run supervisorctl as nobody");
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("permission denied: uid 65534"), "{stderr}");
    assert!(took < Duration::from_secs(3), "the refusal took {took:?}: the accept loop waited for room");
    drop((stuck, newcomers));
}
