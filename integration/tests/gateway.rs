//! The gateway under hostile and ordinary callers, over the real
//! `gateway.sock`: one caller that never reads its responses stalls only its
//! own calls, and stock gRPC C-core clients work unchanged.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use std::path::PathBuf;

use plugin_integration::daemon::{config, plugin};
use plugin_integration::pb::echo::EchoRequest;
use plugin_integration::pb::echo::echo_client::EchoClient;
use plugin_integration::raw::{StalledCaller, end_of, grpc_frame};
use plugin_integration::{Daemon, bins, connect};

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
        .arg(repo.join("plugin-sdk/examples/proto"))
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
