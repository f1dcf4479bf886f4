//! The gateway under hostile and ordinary callers, over the real
//! `gateway.sock`: one caller that never reads its responses stalls only its
//! own calls, connections are bounded and idle ones closed without locking
//! real callers (or the control socket, or restarts) out, and stock gRPC
//! C-core clients work unchanged.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use std::path::PathBuf;

use plugin_integration::daemon::{config, config_with, plugin};
use plugin_integration::pb::echo::EchoRequest;
use plugin_integration::pb::echo::echo_client::EchoClient;
use plugin_integration::pb::zoo::zoo_client::ZooClient;
use plugin_integration::pb::zoo::{CountRequest, SleepRequest, Text};
use plugin_integration::raw::{
    GoAway, StalledCaller, busy_connection, closed_within, end_of, goaway_then_closed, grpc_frame, idle_connection,
    read_answer, reset_now,
};
use plugin_integration::{Daemon, bins, connect, procfs};

const UP: Duration = Duration::from_secs(30);

/// Runs `supervisorctl args...`, killing it if it has not finished within
/// `within`; `None` when it had to be killed.
fn ctl_within(d: &Daemon, args: &[&str], within: Duration) -> Option<std::process::Output> {
    let mut child = Command::new(bins::supervisorctl())
        .arg("--socket")
        .arg(d.control())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run supervisorctl");
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return child.wait_with_output().ok();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_never_reads_stalls_only_its_own_calls() {
    let call_timeout = Duration::from_secs(10);
    let d = Daemon::start(&config(&plugin("echo", &bins::example("echo"), "call_timeout = \"10s\"")));
    d.wait_state("echo-0", "running", UP);

    // Ten 1 MB requests whose 1 MB answers the caller never takes.
    let big = grpc_frame(&EchoRequest { message: "x".repeat(1 << 20) });
    let mut stalled = StalledCaller::start(&d.gateway(), "/echo.v1.Echo/Echo", big, 10).await.unwrap();
    let sent = Instant::now();
    let bodies = stalled.answered().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Another caller through the gateway is answered at once...
    let mut echo = EchoClient::new(connect(&d.gateway()).await.unwrap());
    // Well within the stalled calls' 10 s; a hung call would wait for them.
    let answer = tokio::time::timeout(Duration::from_secs(5), echo.echo(EchoRequest { message: "hello".into() })).await;
    let answer = answer.expect("a well-behaved call hung behind the stalled caller").unwrap();
    assert_eq!(answer.into_inner().message, "hello");
    // ... and so is `supervisorctl call`.
    let out = tokio::task::block_in_place(|| {
        ctl_within(&d, &["call", "echo", "echo.v1.Echo/Echo", "--data", r#"{"message":"hi"}"#], Duration::from_secs(5))
    })
    .expect("supervisorctl call hung behind the stalled caller");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json, serde_json::json!({"message": "hi"}));

    // The stalled calls are reset by their deadline, not held open.
    for body in bodies {
        let left = (sent + call_timeout + Duration::from_secs(3)).saturating_duration_since(Instant::now());
        assert_eq!(end_of(body, left).await, Ok(h2::Reason::CANCEL));
    }
    assert!(sent.elapsed() >= call_timeout - Duration::from_millis(100), "reset before the deadline");
}

/// The Python with `grpcio` and `grpcio-tools` that scripts/test-all.sh
/// installs beside the build (`<target>/py-grpc`), or `PLUGIN_TEST_PYTHON`.
fn grpc_python() -> PathBuf {
    let python = std::env::var_os("PLUGIN_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| bins::profile_dir().parent().expect("target dir").join("py-grpc/bin/python"));
    let ok = Command::new(&python).args(["-c", "import grpc, grpc_tools"]).output().is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "{} cannot import grpc and grpc_tools: run scripts/test-all.sh, or `python3 -m venv target/py-grpc && \
         target/py-grpc/bin/pip install -r integration/python/requirements.txt`, or set PLUGIN_TEST_PYTHON",
        python.display()
    );
    python
}

#[test]
fn a_stock_grpcio_client_calls_unary_and_server_streaming_methods_unchanged() {
    let python = grpc_python();
    let plugins = format!("{}{}", plugin("echo", &bins::example("echo"), ""), plugin("zoo", &bins::zoo(), ""));
    let d = Daemon::start(&config(&plugins));
    d.wait_state("echo-0", "running", UP);
    d.wait_state("zoo-0", "running", UP);

    // Stubs generated now, from the contracts the plugins serve.
    let stubs = tempfile::tempdir().unwrap();
    let repo = bins::repo();
    let protoc = Command::new(&python)
        .args(["-m", "grpc_tools.protoc"])
        .arg("-I")
        .arg(repo.join("plugin-sdk/echo-plugin/proto"))
        .arg("-I")
        .arg(repo.join("integration/proto"))
        .arg(format!("--python_out={}", stubs.path().display()))
        .arg(format!("--grpc_python_out={}", stubs.path().display()))
        .args(["echo.proto", "zoo.proto"])
        .output()
        .unwrap();
    assert!(protoc.status.success(), "{}", String::from_utf8_lossy(&protoc.stderr));

    let out = Command::new(&python)
        .arg(repo.join("integration/python/grpc_client.py"))
        .arg(d.gateway())
        .arg(stubs.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the grpcio client failed:\n{stderr}\ndaemon log:\n{}", d.log_text());
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        got,
        serde_json::json!({
            "unary": "from python",
            "streamed": ["tick 0", "tick 1", "tick 2", "tick 3", "tick 4"],
        })
    );
}

/// Raises this test process's soft descriptor limit to `want`, or fails
/// saying why the test cannot run as written.
fn raise_own_nofile(want: u64) {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit on this process with a stack buffer.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        assert!(
            lim.rlim_max >= want,
            "this test needs {want} descriptors; the hard limit is {}: raise it (ulimit -Hn)",
            lim.rlim_max
        );
        if lim.rlim_cur < want {
            lim.rlim_cur = want;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
    }
}

fn gateway_section(keys: &str) -> String {
    format!("[supervisor.gateway]\n{keys}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_prefaceless_connections_are_closed_after_their_timeouts() {
    let keys = "idle_timeout = \"1s\"\npreface_timeout = \"300ms\"";
    let text = config_with("", &plugin("zoo", &bins::zoo(), "")).replacen(
        "[supervisor.defaults]",
        &format!("{}[supervisor.defaults]", gateway_section(keys)),
        1,
    );
    let d = Daemon::start(&text);
    d.wait_state("zoo-0", "running", UP);

    // Connected, and never a byte of HTTP/2.
    // Timed from before the connect: the daemon's clock starts at its accept.
    let t = Instant::now();
    let silent = std::os::unix::net::UnixStream::connect(d.gateway()).unwrap();
    assert!(closed_within(&silent, Duration::from_secs(3)), "a connection without the preface was kept");
    assert!(t.elapsed() >= Duration::from_millis(250), "closed before preface_timeout: {:?}", t.elapsed());

    // Preface sent, then nothing: idle from the start.
    let t = Instant::now();
    let idle = idle_connection(&d.gateway()).unwrap();
    assert!(closed_within(&idle, Duration::from_secs(4)), "an idle connection was kept");
    assert!(t.elapsed() >= Duration::from_millis(900), "closed before idle_timeout: {:?}", t.elapsed());

    // A call longer than idle_timeout is not idleness.
    let mut zoo = ZooClient::new(connect(&d.gateway()).await.unwrap());
    let slept = zoo.sleep(SleepRequest { ms: 1800 }).await.expect("a call in flight was cut by idle_timeout");
    assert_eq!(slept.into_inner().text, "slept 1800ms");
}

fn with_gateway_keys(keys: &str, plugins: &str) -> String {
    config_with("", plugins).replacen(
        "[supervisor.defaults]",
        &format!("{}[supervisor.defaults]", gateway_section(keys)),
        1,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_max_connections_the_connection_idle_longest_makes_room_and_is_told_goaway() {
    let d = Daemon::start(&with_gateway_keys("max_connections = 20", &plugin("zoo", &bins::zoo(), "")));
    d.wait_state("zoo-0", "running", UP);

    // The first connection is busy with a call that streams one message
    // now and the next in 3 s; 19 idle ones fill the rest.
    let mut busy = ZooClient::new(connect(&d.gateway()).await.unwrap());
    let slow = CountRequest { count: 2, text: "busy".into(), interval_ms: 3000, ..Default::default() };
    let mut slow = busy.count(slow).await.unwrap().into_inner();
    assert_eq!(slow.message().await.unwrap().unwrap().text, "busy 0", "the call is open");
    let idle: Vec<_> = (0..19).map(|_| idle_connection(&d.gateway()).unwrap()).collect();

    // A new caller is served: the connection idle longest made room for it,
    // and then for each of five more newcomers, in order.
    let mut echo = ZooClient::new(connect(&d.gateway()).await.unwrap());
    let r = echo.echo(Text { text: "in".into() }).await.unwrap();
    assert_eq!(r.into_inner().text, "in");
    let newcomers: Vec<_> = (0..5).map(|_| idle_connection(&d.gateway()).unwrap()).collect();
    // Each was told GOAWAY (naming no call: it had taken none) before it
    // was closed, so a caller that sent a call just then knows it never ran.
    let closed: Vec<_> = tokio::task::block_in_place(|| {
        idle[..6].iter().map(|s| goaway_then_closed(s, Duration::from_secs(2))).collect()
    });
    assert_eq!(closed, vec![Ok(vec![GoAway { last_stream: 0, code: 0 }]); 6], "the six idle longest");
    let open: Vec<bool> = tokio::task::block_in_place(|| {
        idle[6..].iter().map(|s| !closed_within(s, Duration::from_millis(50))).collect()
    });
    assert_eq!(open, vec![true; 13], "only the six idle longest were closed");

    // The busy connection was never taken, and the control socket answers.
    let last = slow.message().await.expect("the busy connection was closed").unwrap();
    assert_eq!(last.text, "busy 1");
    assert!(d.control_answers());
    drop(newcomers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_connection_busy_the_one_busy_longest_makes_room() {
    let zoo = plugin("zoo", &bins::zoo(), "call_timeout = \"60s\"");
    let d = Daemon::start(&with_gateway_keys("max_connections = 16", &zoo));
    d.wait_state("zoo-0", "running", UP);
    let gw = d.gateway();

    // An attacker holds every connection, each with a call open (one
    // message now, the next in a minute, taken by nobody).
    let (call, _) = count_call(4, 2, 60_000);
    let open_call = || busy_connection(&gw, COUNT, &call, Duration::from_secs(5)).unwrap();
    let busy: Vec<_> = tokio::task::block_in_place(|| (0..16).map(|_| open_call()).collect());

    // A caller arrives and is served, in place of the connection busy longest.
    let mut zoo = ZooClient::new(connect(&gw).await.unwrap());
    let answer = tokio::time::timeout(Duration::from_secs(5), zoo.echo(Text { text: "in".into() })).await;
    let answer = answer.expect("the call hung").expect("refused: every connection had a call open");
    assert_eq!(answer.into_inner().text, "in");
    // That connection is told GOAWAY naming the call it had taken.
    let first = tokio::task::block_in_place(|| goaway_then_closed(&busy[0], Duration::from_secs(2)));
    assert_eq!(first, Ok(vec![GoAway { last_stream: 1, code: 0 }]));

    // Three more arrive: the caller's connection, idle since its call, goes
    // first; then those busy longest, in order, and only they.
    let more: Vec<_> = tokio::task::block_in_place(|| (0..3).map(|_| open_call()).collect());
    let gone: Vec<_> = tokio::task::block_in_place(|| {
        busy[1..3].iter().map(|s| goaway_then_closed(s, Duration::from_secs(2))).collect()
    });
    assert_eq!(gone, vec![Ok(vec![GoAway { last_stream: 1, code: 0 }]); 2]);
    let open: Vec<bool> = tokio::task::block_in_place(|| {
        busy[3..].iter().map(|s| !closed_within(s, Duration::from_millis(50))).collect()
    });
    assert_eq!(open, vec![true; 13], "only the connections busy longest were closed");

    // Said in the log once, not once per connection closed.
    let log = d.log_text();
    assert_eq!(log.matches("to make room for new callers").count(), 1, "{log}");
    assert!(log.contains("WARN"), "{log}");
    drop(more);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fd_reserve_keeps_the_control_socket_and_restarts_working_under_a_flood() {
    // Spawning a plugin places the binary's descriptor above 1000.
    const NOFILE: u64 = 2048;
    let text = config_with("", &plugin("echo", &bins::example("echo"), "restart = \"always\"")).replacen(
        "[supervisor.defaults]",
        &format!("{}[supervisor.defaults]", gateway_section("fd_reserve = 1024")),
        1,
    );
    let d = Daemon::start_with_nofile(&text, NOFILE);
    let before = d.wait_state("echo-0", "running", UP);

    // More connections than the daemon has descriptors, every one of them
    // opened: this process needs the descriptors too.
    raise_own_nofile(2 * NOFILE + 256);
    let flood: Vec<_> = (0..2 * NOFILE)
        .map(|i| idle_connection(&d.gateway()).unwrap_or_else(|e| panic!("connection {i} of the flood: {e}")))
        .collect();
    assert_eq!(flood.len() as u64, 2 * NOFILE);
    std::thread::sleep(Duration::from_millis(300));
    let fds = procfs::open_fds(d.pid()).len() as u64;
    assert!(fds <= NOFILE - 900, "the gateway ate into the reserve: {fds} of {NOFILE} descriptors open");

    // The control socket answers, a killed plugin comes back, callers are served.
    assert!(d.control_answers(), "the control socket stopped answering");
    let old = before["pid"].as_i64().unwrap() as i32;
    // SAFETY: killing the plugin process this test started, by pid.
    unsafe { libc::kill(old, libc::SIGKILL) };
    let after = tokio::task::block_in_place(|| {
        d.wait_for("echo-0", UP, "restarted", |v| v["state"] == "running" && v["pid"].as_i64() != Some(i64::from(old)))
    });
    assert_eq!(after["restarts"], 1);
    let mut echo = EchoClient::new(connect(&d.gateway()).await.unwrap());
    assert_eq!(echo.echo(EchoRequest { message: "still".into() }).await.unwrap().into_inner().message, "still");
    assert!(!d.log_text().contains("Too many open files"), "{}", d.log_text());
    drop(flood);
}

const COUNT: &str = "/zoo.v1.Zoo/Count";

/// A `Count` request whose answer is `count` messages of `len` bytes each,
/// `interval_ms` apart, and that answer's size on the wire.
fn count_call(len: usize, count: u32, interval_ms: u32) -> (bytes::Bytes, usize) {
    let text = "x".repeat(len);
    let answer = (0..count).map(|i| grpc_frame(&Text { text: format!("{text} {i}") }).len()).sum();
    (grpc_frame(&CountRequest { count, text, interval_ms, ..Default::default() }), answer)
}

fn rss_kib(pid: i32) -> u64 {
    procfs::status_field(pid, "VmRSS").and_then(|v| v.trim_end_matches("kB").trim().parse().ok()).unwrap_or(0)
}

/// The highest RSS of `pid` until the returned flag is set, sampled every
/// 10 ms on a thread of its own.
fn rss_peak(pid: i32) -> (std::sync::Arc<std::sync::atomic::AtomicBool>, std::thread::JoinHandle<u64>) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let sampler = std::thread::spawn(move || {
        let mut peak = 0;
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            peak = peak.max(rss_kib(pid));
            std::thread::sleep(Duration::from_millis(10));
        }
        peak
    });
    (stop, sampler)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_that_never_read_use_up_neither_a_plugins_connection_nor_the_daemons_memory() {
    // A quarter of the default max_stalled_calls (256): what one caller (a uid, here
    // root, for every connection) may hold.
    const BUDGET: usize = 64;
    // 6000 calls that never read: without the budget they all stalled, far
    // more than a plugin connection's window held (then 4096 streams'
    // worth), and every other call to the plugin waited for their deadline.
    const CONNS: usize = 60;
    const PER_CONN: usize = 100;
    // Well before the calls' deadline (60 s), however busy the daemon is
    // reading what the plugin pushed for the crowd before it was reset.
    const PROMPTLY: Duration = Duration::from_secs(15);
    // The zoo holds the crowd's answers, 1.7 GB of them.
    let zoo = plugin(
        "zoo",
        &bins::zoo(),
        // No limit on calls in flight short of the crowd: what is under test is the stall
        // budget, not the shedding that would otherwise answer most of the crowd.
        "call_timeout = \"60s\"\nmax_in_flight = 8192\nmax_queued = 0\n[plugin.quota]\nmemory_max = \"4G\"\nmemory_high = \"4G\"",
    );
    let d = Daemon::start(&config(&zoo));
    d.wait_state("zoo-0", "running", UP);
    let mut well = ZooClient::new(connect(&d.gateway()).await.unwrap());
    assert_eq!(well.echo(Text { text: "warm".into() }).await.unwrap().into_inner().text, "warm");
    let rss0 = rss_kib(d.pid());

    // Answers of 640 KiB: more than a call buffers for its caller and the
    // plugin's stream window together.
    let (call, answer_len) = count_call(16 << 10, 40, 0);
    // A slow caller stalls first; callers that stall later cannot take its place.
    let mut early = StalledCaller::start(&d.gateway(), COUNT, call.clone(), 1).await.unwrap();
    let early_body = early.answered().await.unwrap().pop().unwrap();
    // The daemon reads its 512 KiB in a few milliseconds.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let (stop, sampler) = rss_peak(d.pid());
    let mut crowd = Vec::new();
    for _ in 0..CONNS {
        crowd.push(StalledCaller::start(&d.gateway(), COUNT, call.clone(), PER_CONN).await.unwrap());
    }
    let mut calls = Vec::new();
    for c in &mut crowd {
        calls.extend(c.settled().await.unwrap());
    }
    let total = calls.len();
    assert_eq!(total, CONNS * PER_CONN);

    // Until every call past the budget has been reset, a well-behaved caller
    // keeps being answered.
    let mut slowest = Duration::ZERO;
    loop {
        let t = Instant::now();
        let echo = tokio::time::timeout(PROMPTLY, well.echo(Text { text: "through".into() })).await;
        let echo = echo.expect("a well-behaved call hung behind callers that never read");
        assert_eq!(echo.unwrap().into_inner().text, "through");
        slowest = slowest.max(t.elapsed());
        for c in &mut calls {
            if let Ok(body) = c
                && let Some(reason) = reset_now(body)
            {
                *c = Err(reason);
            }
        }
        let reset = calls.iter().filter(|c| c.is_err()).count();
        if reset >= total - (BUDGET - 1) {
            break;
        }
        assert!(t.elapsed() < PROMPTLY, "{reset} of {total} calls stalled past the budget were reset");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.join().unwrap();

    // Each call past the caller's share was reset (CANCEL) as it fell behind;
    // exactly its worth stay, the slow caller who stalled first among them.
    let held = calls.iter().filter(|c| c.is_ok()).count();
    assert_eq!(held, BUDGET - 1, "stalled calls held beside the early one");
    assert!(calls.iter().all(|c| matches!(c, Ok(_) | Err(h2::Reason::CANCEL))));
    // `supervisorctl call` shares the plugin's connection: answered too.
    let out = tokio::task::block_in_place(|| {
        ctl_within(&d, &["call", "zoo", "zoo.v1.Zoo/Echo", "--data", r#"{"text":"hi"}"#], Duration::from_secs(5))
    })
    .expect("supervisorctl call hung behind callers that never read");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Memory: the share's buffers (512 KiB each) and one plugin
    // connection's window at most, never the crowd's 3 GB. What the crowd
    // used is given back once it has gone, by a trim that runs at most
    // every 5 s: wait for it, a while.
    let settled_by = Instant::now() + Duration::from_secs(12);
    let mut rss1 = rss_kib(d.pid());
    while rss1.saturating_sub(rss0) >= 384 << 10 && Instant::now() < settled_by {
        tokio::time::sleep(Duration::from_millis(100)).await;
        rss1 = rss_kib(d.pid());
    }
    assert!(
        rss1.saturating_sub(rss0) < 384 << 10,
        "the daemon grew by {} KiB under {total} stalled calls",
        rss1.saturating_sub(rss0)
    );
    // At the peak, before the resets: the share's buffers (32 MiB), one plugin
    // connection's window (256 MiB) and the crowd's requests in flight (96 MiB), with the
    // allocator's slack on top (measured peaks: 390 to 790 MiB above the start). A
    // daemon that held the crowd's answers would be past 3 GB.
    assert!(peak - rss0 < 1 << 20, "the daemon peaked {} KiB above its start under {total} stalled calls", peak - rss0);

    // The slow caller reads at last, and gets its whole answer.
    early.open_window();
    let (len, status) = tokio::time::timeout(Duration::from_secs(10), read_answer(early_body))
        .await
        .expect("the early caller's answer did not come")
        .expect("the early caller's call was reset");
    assert_eq!((len, status.as_str()), (answer_len, "0"));
    eprintln!(
        "{total} calls that never read: {held} held, the rest reset; slowest well-behaved call {slowest:?}; daemon RSS \
         {rss0} KiB before, peak {peak} KiB, {rss1} KiB after"
    );
}

#[test]
fn a_descriptor_limit_that_leaves_the_gateway_too_few_connections_refuses_to_start() {
    let mut d = Daemon::spawn_with_nofile(&with_gateway_keys("fd_reserve = 1090", ""), 1100);
    let status = d.wait_exit(Duration::from_secs(20)).expect("the daemon ran with room for 10 gateway connections");
    assert!(!status.success());
    let log = d.log_text();
    assert!(
        log.contains(
            "[supervisor.gateway] fd_reserve = 1090 leaves the gateway 10 of the daemon's 1100 descriptors \
             (RLIMIT_NOFILE), fewer than the 16 connections it needs (max_connections = 1024)"
        ),
        "{log}"
    );
    assert!(!d.gateway().exists() && !d.control().exists(), "a refused start left its sockets");
}

/// Minor page faults of `pid` so far.
fn minor_faults(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // After the command: minflt is field 10 (1-based).
    stat.rsplit(')').next().unwrap().split_whitespace().nth(7).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_answers_one_after_another_cost_the_daemon_no_page_faults() {
    // Batches of calls, judged by the one with the fewest faults: what a
    // call costs the daemon in its steady state. A machine busy with
    // something else (another daemon's crowd beside this one) changes when
    // the daemon's threads run, how much of an answer piles up at once and
    // in which malloc arena, and costs some batches fresh pages, up to
    // most of them; a trim after each answer costs every call of every
    // batch ~70 to 110 faults.
    const BATCHES: usize = 9;
    const CALLS: u64 = 20;
    let d = Daemon::start(&config(&plugin("echo", &bins::example("echo"), "call_timeout = \"30s\"")));
    d.wait_state("echo-0", "running", UP);
    // 1 MiB answers, read ahead of this caller's 256 KiB window: each buffers
    // much for its caller. Giving the heap back after each would fault its
    // buffers in again on the next: a trim per call is a latency spike.
    let mut echo = EchoClient::new(connect(&d.gateway()).await.unwrap());
    let big = EchoRequest { message: "x".repeat(1 << 20) };
    for _ in 0..20 {
        echo.echo(big.clone()).await.unwrap();
    }
    let mut per_call = Vec::new();
    for _ in 0..BATCHES {
        let before = minor_faults(d.pid());
        for _ in 0..CALLS {
            assert_eq!(echo.echo(big.clone()).await.unwrap().into_inner().message.len(), 1 << 20);
        }
        per_call.push((minor_faults(d.pid()) - before) / CALLS);
    }
    let fewest = per_call.iter().min().copied().unwrap_or_default();
    assert!(
        fewest < 8,
        "{fewest} page faults per large answer in the best batch (per batch: {per_call:?}): the heap is given back \
         after each"
    );
    eprintln!("page faults per large answer, per batch: {per_call:?}");
}
