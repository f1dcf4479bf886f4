//! Discovery through the real `gateway.sock`, with the clients generic tools use:
//! Python's stock `grpcio-reflection` lists and describes what the running plugins
//! serve (over `grpc.reflection.v1` and `v1alpha`), `grpcio-health-checking` sees a
//! plugin's health follow its stop and start (`Check` and `Watch`); a caller outside a
//! plugin's `callers` finds neither its services nor their health; and
//! `supervisorctl list` and `describe` print the same contracts.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use plugin_integration::daemon::{config, plugin};
use plugin_integration::{Daemon, bins};
use serde_json::json;

const UP: Duration = Duration::from_secs(30);

/// The Python with `grpcio`, `grpcio-reflection` and `grpcio-health-checking` that
/// scripts/test-all.sh installs beside the build (`<target>/py-grpc`), or
/// `PLUGIN_TEST_PYTHON`.
fn grpc_python() -> PathBuf {
    let python = std::env::var_os("PLUGIN_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| bins::profile_dir().parent().expect("target dir").join("py-grpc/bin/python"));
    let ok = Command::new(&python)
        .args(["-c", "import grpc, grpc_reflection, grpc_health"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "{} cannot import grpc, grpc_reflection and grpc_health: run scripts/test-all.sh, or \
         `target/py-grpc/bin/python -m pip install -r integration/python/requirements.txt`, or set PLUGIN_TEST_PYTHON",
        python.display()
    );
    python
}

fn client(python: &PathBuf) -> Command {
    let mut c = Command::new(python);
    c.arg(bins::repo().join("integration/python/discovery_client.py"));
    c
}

fn echo_and_zoo() -> Daemon {
    let plugins = format!("{}{}", plugin("echo", &bins::example("echo"), ""), plugin("zoo", &bins::zoo(), ""));
    let d = Daemon::start(&config(&plugins));
    d.wait_state("echo-0", "running", UP);
    d.wait_state("zoo-0", "running", UP);
    d
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

#[test]
fn a_stock_reflection_client_lists_and_describes_what_the_plugins_serve_over_v1_and_v1alpha() {
    let python = grpc_python();
    let d = echo_and_zoo();
    for version in ["v1", "v1alpha"] {
        let out = client(&python).arg("reflect").arg(d.gateway()).arg(version).output().unwrap();
        assert!(out.status.success(), "{version}: {}\ndaemon log:\n{}", text(&out.stderr), d.log_text());
        let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            got,
            json!({
                "services": [
                    "echo.v1.Echo",
                    "grpc.health.v1.Health",
                    "grpc.reflection.v1.ServerReflection",
                    "grpc.reflection.v1alpha.ServerReflection",
                    "zoo.v1.Zoo",
                ],
                "echo": {"Echo": ["echo.v1.EchoRequest", "echo.v1.EchoResponse"]},
                "echo_file": "echo.proto",
                "count": {"input": "zoo.v1.CountRequest", "output": "zoo.v1.Text", "server_streaming": true},
                "count_request": {"count": 1, "text": 2, "interval_ms": 3, "until_shutdown": 4},
                "unknown": "not found",
            }),
            "{version}"
        );
    }
    // A stopped plugin is no longer listed.
    assert!(d.ctl(&["stop", "zoo"]).status.success());
    let out = client(&python).arg("reflect").arg(d.gateway()).arg("v1").output().unwrap();
    assert!(!out.status.success(), "zoo.v1.Zoo still described after zoo stopped");
    assert!(text(&out.stderr).contains("zoo.v1.Zoo"), "{}", text(&out.stderr));
}

/// Each status a `Watch` of `service` sends, as its lines come.
fn watch(python: &PathBuf, d: &Daemon, service: &str, count: usize) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut child = client(python)
        .arg("watch")
        .arg(d.gateway())
        .arg(service)
        .arg(count.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

#[test]
fn health_says_serving_then_not_serving_after_a_stop_and_serving_again_after_a_start() {
    let python = grpc_python();
    let d = echo_and_zoo();
    let check = |service: &str| {
        let out = client(&python).arg("check").arg(d.gateway()).arg(service).output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout).trim().to_owned()
    };
    for service in ["", "echo.v1.Echo", "plugin:echo", "zoo.v1.Zoo"] {
        assert_eq!(check(service), "SERVING", "{service:?}");
    }
    for unknown in ["nope.v1.Nope", "plugin:nope"] {
        assert_eq!(check(unknown), "error NOT_FOUND", "{unknown}");
    }
    let (mut watching, statuses) = watch(&python, &d, "plugin:echo", 3);
    let next = || statuses.recv_timeout(UP).expect("no status from Watch in time");
    assert_eq!(next(), "SERVING");

    let stop = d.ctl(&["stop", "echo"]);
    assert!(stop.status.success(), "{}", text(&stop.stderr));
    assert_eq!(next(), "NOT_SERVING");
    assert_eq!(check("plugin:echo"), "NOT_SERVING");
    assert_eq!(check("echo.v1.Echo"), "NOT_SERVING", "a stopped plugin's service is known, and down");
    assert_eq!(check("zoo.v1.Zoo"), "SERVING", "its neighbour is untouched");

    let start = d.ctl(&["start", "echo"]);
    assert!(start.status.success(), "{}", text(&start.stderr));
    assert_eq!(next(), "SERVING");
    assert_eq!(check("echo.v1.Echo"), "SERVING");
    assert!(watching.wait().unwrap().success());
}

const ECHO_DESCRIBED: &str = "echo.v1.Echo is a service:
service Echo {
  rpc Echo ( .echo.v1.EchoRequest ) returns ( .echo.v1.EchoResponse );
}

echo.v1.EchoRequest is a message:
message EchoRequest {
  string message = 1;
}

echo.v1.EchoResponse is a message:
message EchoResponse {
  string message = 1;
}
";

#[test]
fn supervisorctl_lists_and_describes_the_plugins_contracts() {
    let d = echo_and_zoo();
    let out = d.ctl(&["list", "echo"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "echo (running, revision 1)\n  echo.v1.Echo\n    Echo\n");

    let out = d.ctl(&["list", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed[0]["name"], "echo");
    assert_eq!(listed[1]["name"], "zoo");
    let count = listed[1]["services"][0]["methods"].as_array().unwrap().iter().find(|m| m["name"] == "Count").cloned();
    assert_eq!(
        count,
        Some(json!({"name": "Count", "input": "zoo.v1.CountRequest", "output": "zoo.v1.Text",
                    "client_streaming": false, "server_streaming": true}))
    );

    let out = d.ctl(&["describe", "echo"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), ECHO_DESCRIBED);
    let out = d.ctl(&["describe", "zoo", "zoo.v1.Zoo/Count"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with(
            "zoo.v1.Zoo.Count is a method:\nrpc Count ( .zoo.v1.CountRequest ) returns ( stream .zoo.v1.Text );\n\n\
             zoo.v1.CountRequest is a message:\nmessage CountRequest {\n  uint32 count = 1;\n"
        ),
        "{}",
        text(&out.stdout)
    );
    // Described from the last handshake also while stopped.
    assert!(d.ctl(&["stop", "echo"]).status.success());
    let out = d.ctl(&["describe", "echo", "--json"]);
    let described: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        described["symbols"][0],
        json!({"name": "echo.v1.Echo", "kind": "service",
        "proto": "service Echo {\n  rpc Echo ( .echo.v1.EchoRequest ) returns ( .echo.v1.EchoResponse );\n}"})
    );

    // No such plugin exits 4; an unknown symbol of a plugin that exists, 1.
    for (args, code, says) in [
        (&["describe", "nope"][..], 4, "unknown plugin \"nope\""),
        (&["list", "nope"][..], 4, "unknown plugin \"nope\""),
        (
            &["describe", "echo", "echo.v1.Nope"][..],
            1,
            "plugin echo serves no service echo.v1.Nope (it serves: echo.v1.Echo)",
        ),
        (
            &["describe", "echo", "echo.v1.Echo/Nope"][..],
            1,
            "service echo.v1.Echo has no method Nope (its methods: Echo)",
        ),
    ] {
        let out = d.ctl(args);
        assert_eq!(out.status.code(), Some(code), "{args:?}");
        assert!(text(&out.stderr).contains(says), "{args:?}: {}", text(&out.stderr));
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

/// A caller's uid outside the default `uid_range` (61184–65519), so no plugin is given it,
/// and one `callers` admits.
const STRANGER_UID: u32 = 70102;
const ALLOWED_UID: u32 = 70101;

/// `discovery_caller` with `args`, run as `uid` (group the same, no others): its stdout.
fn as_uid(uid: u32, args: &[&std::ffi::OsStr]) -> String {
    let mut cmd = Command::new(bins::discovery_caller());
    cmd.args(args);
    // SAFETY: setgroups, setgid and setuid are async-signal-safe system calls that read
    // nothing of this process's memory but the empty group list.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            if libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(uid) != 0 || libc::setuid(uid) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "as {uid}: {args:?}: {}", text(&out.stderr));
    text(&out.stdout).trim().to_owned()
}

#[test]
fn a_caller_outside_callers_finds_neither_the_service_nor_its_health() {
    let plugins = format!(
        "{}{}",
        plugin("echo", &bins::example("echo"), &format!("callers = [\"uid:{ALLOWED_UID}\"]")),
        plugin("zoo", &bins::zoo(), "")
    );
    let d = Daemon::start(&plugin_integration::daemon::config_with("gateway_socket_mode = \"0666\"\n", &plugins));
    // Other users reach the socket through the test's scratch directories.
    for dir in [d.dir.path(), d.runtime.as_path()] {
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o711)).unwrap();
    }
    d.wait_state("echo-0", "running", UP);
    d.wait_state("zoo-0", "running", UP);
    let gateway = d.gateway();
    let list = |uid| as_uid(uid, &[gateway.as_os_str(), "list".as_ref()]);
    let check = |uid, service: &str| as_uid(uid, &[gateway.as_os_str(), "check".as_ref(), service.as_ref()]);

    let everything = r#"["echo.v1.Echo","grpc.health.v1.Health","grpc.reflection.v1.ServerReflection","grpc.reflection.v1alpha.ServerReflection","zoo.v1.Zoo"]"#;
    assert_eq!(list(ALLOWED_UID), everything);
    assert_eq!(check(ALLOWED_UID, "echo.v1.Echo"), "SERVING");
    // To a stranger, echo's service does not exist: not listed, no health to check.
    assert_eq!(list(STRANGER_UID), everything.replace("\"echo.v1.Echo\",", ""));
    assert_eq!(check(STRANGER_UID, "echo.v1.Echo"), "error NOT_FOUND");
    assert_eq!(check(STRANGER_UID, "zoo.v1.Zoo"), "SERVING");
}
