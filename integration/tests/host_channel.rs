//! The host channel with real processes: a plugin under L3 (no sockets at all) calls
//! another plugin over fd 4, allowed by its `calls` and the other's `callers`, within
//! the deadline of the call it is handling; plugins whose config does not allow the
//! call are refused, saying why; and an embedding host's own service is called by a
//! plugin, which the host is told the name of.

use std::time::{Duration, Instant};

use plugin_integration::daemon::{config, config_with, plugin};
use plugin_integration::pb::echo::echo_server::{Echo, EchoServer};
use plugin_integration::pb::echo::{EchoRequest, EchoResponse};
use plugin_integration::pb::zoo::zoo_client::ZooClient;
use plugin_integration::pb::zoo::{CallHostRequest, SyscallRequest};
use plugin_integration::{Daemon, bins, connect};
use plugin_supervisor::config::Config;
use plugin_supervisor::{HostServices, Supervisor};

const UP: Duration = Duration::from_secs(30);

/// A `grpc-timeout` value as gRPC writes it.
fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    let (n, unit) = v.split_at_checked(v.len().checked_sub(1)?)?;
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        "M" => Duration::from_secs(n * 60),
        "H" => Duration::from_secs(n * 3600),
        _ => return None,
    })
}

/// `from` asked, through the gateway, to call `target`'s `Echo` over its host channel.
fn ask(from: &str, target: &str, text: &str) -> tonic::Request<CallHostRequest> {
    let mut req =
        tonic::Request::new(CallHostRequest { text: text.into(), plugin: target.into(), service: String::new() });
    req.metadata_mut().insert("x-plugin", from.parse().unwrap());
    req
}

#[tokio::test]
async fn a_plugin_under_l3_calls_the_plugins_its_config_allows_and_no_other() {
    let zoo = bins::zoo();
    let entry = |extra: &str| format!("declared_name = \"zoo\"\n{extra}");
    let d = Daemon::start(&config(
        &[
            plugin("caller", &zoo, &entry("tier = \"L3\"\ncalls = [\"target\", \"slow\"]")),
            plugin("target", &zoo, &entry("callers = [\"plugin:caller\"]")),
            plugin("slow", &zoo, &entry("callers = [\"plugin:caller\"]\nargs = [\"--echo-delay-ms\", \"5000\"]")),
            // Lists target, which does not admit it.
            plugin("intruder", &zoo, &entry("calls = [\"target\"]")),
            // Lists nothing.
            plugin("stranger", &zoo, &entry("")),
            // The only plugin serving echo.v1.Echo; caller does not list it.
            plugin("guarded", &bins::example("echo"), "declared_name = \"echo\"\ncallers = [\"plugin:caller\"]"),
        ]
        .concat(),
    ));
    for p in ["caller", "target", "slow", "intruder", "stranger", "guarded"] {
        d.wait_state(&format!("{p}-0"), "running", UP);
    }
    let mut zoo = ZooClient::new(connect(&d.gateway()).await.unwrap());

    let answer = zoo.call_host(ask("caller", "target", "over fd 4")).await.unwrap().into_inner();
    assert_eq!(answer.text, "over fd 4");
    // The call went through the routing stack as a call to target, and is counted there.
    let metrics = d.ctl(&["metrics"]);
    let text = String::from_utf8_lossy(&metrics.stdout);
    assert!(
        text.lines().any(|l| l.starts_with("supervisor_calls_total{") && l.contains("plugin=\"target\"")),
        "no call to target counted:\n{text}"
    );

    // The stranger's own config lists no plugin serving the service: it is told so.
    let refused = zoo.call_host(ask("stranger", "target", "hello")).await.unwrap_err();
    assert_eq!(
        (refused.code(), refused.message()),
        (
            tonic::Code::PermissionDenied,
            "plugin \"stranger\" may not call zoo.v1.Zoo: its `calls` lists no plugin serving it"
        )
    );
    // The intruder lists target, which does not admit it, and not the plugins open to all
    // that serve the service too: its own config refuses, as for the stranger, and
    // nothing says target serves it.
    let refused = zoo.call_host(ask("intruder", "target", "hello")).await.unwrap_err();
    assert_eq!(
        (refused.code(), refused.message()),
        (
            tonic::Code::PermissionDenied,
            "plugin \"intruder\" may not call zoo.v1.Zoo: its `calls` lists no plugin serving it"
        )
    );
    // A service served only by a plugin that does not admit it: as if nothing served it,
    // whatever its `calls` lists. One admitted but not listed is told its `calls` refuses.
    let echo = |from: &str| {
        let mut req =
            tonic::Request::new(CallHostRequest { text: "hi".into(), plugin: String::new(), service: "echo".into() });
        req.metadata_mut().insert("x-plugin", from.parse().unwrap());
        req
    };
    for from in ["intruder", "stranger"] {
        let refused = zoo.call_host(echo(from)).await.unwrap_err();
        assert_eq!(
            (refused.code(), refused.message()),
            (tonic::Code::Unimplemented, "unknown service echo.v1.Echo"),
            "{from}"
        );
    }
    let refused = zoo.call_host(echo("caller")).await.unwrap_err();
    assert_eq!(
        (refused.code(), refused.message()),
        (
            tonic::Code::PermissionDenied,
            "plugin \"caller\" may not call echo.v1.Echo: its `calls` lists no plugin serving it"
        )
    );

    // The call out carries what is left of the deadline of the call being handled: the
    // called plugin sees a grpc-timeout within it (without one, the supervisor would
    // give it the whole call_timeout).
    let mut timed = ask("caller", "target", "grpc-timeout?");
    // (4 s, under the 5 s call_timeout: the three hops in between may take a second on a
    // loaded machine, and still the target sees the caller's deadline, not its own.)
    timed.set_timeout(Duration::from_secs(4));
    let seen = zoo.call_host(timed).await.unwrap().into_inner().text;
    let left = parse_grpc_timeout(&seen).unwrap_or_else(|| panic!("target saw grpc-timeout {seen:?}"));
    assert!(left <= Duration::from_secs(4) && left > Duration::from_secs(2), "target saw {seen}");
    let mut untimed = ask("caller", "target", "grpc-timeout?");
    untimed.metadata_mut().remove("grpc-timeout");
    let seen = zoo.call_host(untimed).await.unwrap().into_inner().text;
    assert!(parse_grpc_timeout(&seen).is_some_and(|d| d > Duration::from_secs(2)), "without a deadline: {seen}");

    // And a call that outlives its deadline is cut, with its call out: slow would take 5 s.
    let mut hurried = ask("caller", "slow", "in time?");
    hurried.set_timeout(Duration::from_millis(400));
    let t0 = Instant::now();
    let late = zoo.call_host(hurried).await.unwrap_err();
    assert_eq!(late.code(), tonic::Code::DeadlineExceeded, "{late:?}");
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());

    // And the caller could not have made a socket of its own: under L3 trying kills it.
    let mut socket = tonic::Request::new(SyscallRequest { name: "socket".into(), ..Default::default() });
    socket.metadata_mut().insert("x-plugin", "caller".parse().unwrap());
    match zoo.syscall(socket).await {
        Ok(made) => assert!(made.get_ref().result < 0, "L3 let the caller make a socket: {made:?}"),
        Err(killed) => assert_eq!(killed.code(), tonic::Code::Unavailable, "{killed:?}"),
    }
}

/// The embedding host's own Echo: says who called it.
struct HostEcho;

#[tonic::async_trait]
impl Echo for HostEcho {
    async fn echo(&self, req: tonic::Request<EchoRequest>) -> Result<tonic::Response<EchoResponse>, tonic::Status> {
        let caller = req.metadata().get("x-plugin-caller").and_then(|v| v.to_str().ok()).unwrap_or("?").to_owned();
        Ok(tonic::Response::new(EchoResponse { message: format!("host to {caller}: {}", req.into_inner().message) }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedding_hosts_own_service_is_called_by_its_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("embedded.toml");
    let text = config_with("", &plugin("zoo", &bins::zoo(), "tier = \"L3\""))
        .replace("[supervisor.cgroup]\n", "[supervisor.cgroup]\nmove_self = false\n");
    std::fs::write(&path, text).unwrap();
    let host = HostServices::new().add_service(EchoServer::new(HostEcho));
    let sup = Supervisor::start_with_host(Config::load(&path).unwrap(), host).await.unwrap();
    sup.wait_running("zoo", UP).await.unwrap();
    let mut zoo = ZooClient::new(sup.channel("zoo").unwrap());
    let req = CallHostRequest { text: "hello".into(), plugin: String::new(), service: "echo".into() };
    let answer = zoo.call_host(req).await;
    sup.shutdown().await;
    assert_eq!(answer.unwrap().into_inner().text, "host to zoo: hello");
}

#[tokio::test]
async fn without_an_embedding_host_a_plugin_calling_a_host_service_is_told_it_is_unknown() {
    let d = Daemon::start(&config(&plugin("zoo", &bins::zoo(), "")));
    d.wait_state("zoo-0", "running", UP);
    let mut zoo = ZooClient::new(connect(&d.gateway()).await.unwrap());
    let req = CallHostRequest { text: "hello".into(), plugin: String::new(), service: "echo".into() };
    let unknown = zoo.call_host(req).await.unwrap_err();
    assert_eq!((unknown.code(), unknown.message()), (tonic::Code::Unimplemented, "unknown service echo.v1.Echo"));
}
