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
use plugin_integration::pb::zoo::SleepRequest;
use plugin_integration::pb::zoo::zoo_client::ZooClient;
use plugin_integration::raw::{StalledCaller, closed_within, end_of, grpc_frame, idle_connection};
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
    let call_timeout = Duration::from_secs(3);
    let d = Daemon::start(&config(&plugin("echo", &bins::example("echo"), "call_timeout = \"3s\"")));
    d.wait_state("echo-0", "running", UP);

    // Ten 1 MB requests whose 1 MB answers the caller never takes.
    let big = grpc_frame(&EchoRequest { message: "x".repeat(1 << 20) });
    let mut stalled = StalledCaller::start(&d.gateway(), "/echo.v1.Echo/Echo", big, 10).await.unwrap();
    let sent = Instant::now();
    let bodies = stalled.answered().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Another caller through the gateway is answered at once...
    let mut echo = EchoClient::new(connect(&d.gateway()).await.unwrap());
    let answer = tokio::time::timeout(Duration::from_secs(2), echo.echo(EchoRequest { message: "hello".into() })).await;
    let answer = answer.expect("a well-behaved call hung behind the stalled caller").unwrap();
    assert_eq!(answer.into_inner().message, "hello");
    // ... and so is `supervisorctl call`.
    let out = tokio::task::block_in_place(|| {
        ctl_within(&d, &["call", "echo", "echo.v1.Echo/Echo", "--data", r#"{"message":"hi"}"#], Duration::from_secs(2))
    })
    .expect("supervisorctl call hung behind the stalled caller");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json, serde_json::json!({"message": "hi"}));

    // The stalled calls are reset by their deadline, not held open.
    for body in bodies {
        let left = (sent + call_timeout + Duration::from_secs(1)).saturating_duration_since(Instant::now());
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
    let silent = std::os::unix::net::UnixStream::connect(d.gateway()).unwrap();
    let t = Instant::now();
    assert!(closed_within(&silent, Duration::from_secs(3)), "a connection without the preface was kept");
    assert!(t.elapsed() >= Duration::from_millis(250), "closed before preface_timeout: {:?}", t.elapsed());

    // Preface sent, then nothing: idle from the start.
    let idle = idle_connection(&d.gateway()).unwrap();
    let t = Instant::now();
    assert!(closed_within(&idle, Duration::from_secs(4)), "an idle connection was kept");
    assert!(t.elapsed() >= Duration::from_millis(900), "closed before idle_timeout: {:?}", t.elapsed());

    // A call longer than idle_timeout is not idleness.
    let mut zoo = ZooClient::new(connect(&d.gateway()).await.unwrap());
    let slept = zoo.sleep(SleepRequest { ms: 1800 }).await.expect("a call in flight was cut by idle_timeout");
    assert_eq!(slept.into_inner().text, "slept 1800ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_max_connections_the_connection_idle_longest_makes_room() {
    let text = config_with("", &plugin("zoo", &bins::zoo(), "")).replacen(
        "[supervisor.defaults]",
        &format!("{}[supervisor.defaults]", gateway_section("max_connections = 20")),
        1,
    );
    let d = Daemon::start(&text);
    d.wait_state("zoo-0", "running", UP);

    // The first connection is busy with a slow call; 19 idle ones fill the rest.
    let mut busy = ZooClient::new(connect(&d.gateway()).await.unwrap());
    let slow = tokio::spawn(async move { busy.sleep(SleepRequest { ms: 3000 }).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut idle = Vec::new();
    for _ in 0..19 {
        idle.push(idle_connection(&d.gateway()).unwrap());
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(200));

    // A new caller is served: the connection idle longest made room for it,
    // and then for each of five more newcomers, in order.
    let mut echo = ZooClient::new(connect(&d.gateway()).await.unwrap());
    let r = echo.echo(plugin_integration::pb::zoo::Text { text: "in".into() }).await.unwrap();
    assert_eq!(r.into_inner().text, "in");
    let mut newcomers = Vec::new();
    for _ in 0..5 {
        newcomers.push(idle_connection(&d.gateway()).unwrap());
        std::thread::sleep(Duration::from_millis(5));
    }
    let closed: Vec<bool> =
        tokio::task::block_in_place(|| idle.iter().map(|s| closed_within(s, Duration::from_millis(300))).collect());
    let expected: Vec<bool> = (0..19).map(|i| i < 6).collect();
    assert_eq!(closed, expected, "the six idle longest, and only they, were closed");

    // The busy connection was never taken, and the control socket answers.
    let slept = slow.await.unwrap().expect("the busy connection was closed");
    assert_eq!(slept.into_inner().text, "slept 3000ms");
    assert!(d.ctl(&["status"]).status.success());
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

    // More connections than the daemon has descriptors.
    let flood: Vec<_> = (0..2 * NOFILE).filter_map(|_| idle_connection(&d.gateway()).ok()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let fds = procfs::open_fds(d.pid()).len() as u64;
    assert!(fds <= NOFILE - 900, "the gateway ate into the reserve: {fds} of {NOFILE} descriptors open");

    // The control socket answers, a killed plugin comes back, callers are served.
    let out = d.ctl(&["status"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
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
