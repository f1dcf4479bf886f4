//! Streaming calls end to end, each kind (server, client, bidirectional)
//! through the gateway (a hyper HTTP/2 client on `gateway.sock`, as tonic's
//! own channel is) and through an embedded channel: they complete; a
//! deadline (the caller's `grpc-timeout`, or the plugin's `call_timeout`)
//! ends them with DEADLINE_EXCEEDED and cancels the plugin's handler; a
//! caller that hangs up cancels the plugin's handler; a plugin killed in the
//! middle ends the caller's stream with UNAVAILABLE at once. The zoo plugin
//! counts its streaming handlers begun, finished and cancelled (`Tally`).

use std::time::{Duration, Instant};

use plugin_integration::daemon::{config, config_with, plugin};
use plugin_integration::pb::zoo::zoo_client::ZooClient;
use plugin_integration::pb::zoo::{CountRequest, StreamTally, Text};
use plugin_integration::{Daemon, alive, bins};
use plugin_supervisor::Supervisor;
use plugin_supervisor::config::Config;
use tonic::body::Body;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tower::util::BoxCloneSyncService;

const UP: Duration = Duration::from_secs(30);
/// How soon the plugin must see a cancellation, and a caller an ended plugin: at once,
/// with the slack a loaded machine needs (what is late never comes at all).
const PROMPTLY: Duration = Duration::from_secs(10);

/// Either way of calling, so the same scenarios run over both. (A concrete
/// error type: a boxed one trips rustc's higher-ranked `Send` check on
/// spawned calls.)
type Calls = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, tonic::Status>;
type Zoo = ZooClient<Calls>;

#[derive(Clone, Copy, Debug)]
enum Kind {
    Server,
    Client,
    Bidi,
}

const KINDS: [Kind; 3] = [Kind::Server, Kind::Client, Kind::Bidi];

/// A caller's socket to the gateway (none for an embedded channel).
struct Line(Option<std::os::unix::net::UnixStream>);

impl Line {
    /// Shuts the socket, as the kernel does for a caller that dies (hyper
    /// keeps its connection open while any stream on it is).
    fn hang_up(&self) {
        if let Some(socket) = &self.0 {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// A zoo plugin served by a daemon (called through its gateway) or by a
/// supervisor in this process (called through its embedded channel).
enum Fixture {
    Gateway(Daemon),
    Embedded(Box<Supervisor>, #[allow(dead_code)] tempfile::TempDir),
}

impl Fixture {
    /// A daemon with the zoo; `extra` goes into its `[[plugin]]` entry.
    fn gateway(extra: &str) -> Self {
        let d = Daemon::start(&config(&plugin("zoo", &bins::zoo(), extra)));
        d.wait_state("zoo-0", "running", UP);
        Fixture::Gateway(d)
    }

    async fn embedded(extra: &str) -> Self {
        let text = config_with("", &plugin("zoo", &bins::zoo(), extra))
            .replace("[supervisor.cgroup]\n", "[supervisor.cgroup]\nmove_self = false\n");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("embedded.toml");
        std::fs::write(&path, text).unwrap();
        let sup = Supervisor::start(Config::load(&path).unwrap()).await.unwrap();
        sup.wait_running("zoo", UP).await.unwrap();
        Fixture::Embedded(Box::new(sup), dir)
    }

    /// A client on a connection of its own (through the gateway), or on
    /// the embedded channel.
    async fn zoo(&self) -> Zoo {
        self.caller().await.0
    }

    /// [`Fixture::zoo`], and its connection to the gateway, if any.
    async fn caller(&self) -> (Zoo, Line) {
        let mut line = Line(None);
        let calls = match self {
            Fixture::Gateway(d) => {
                let socket = std::os::unix::net::UnixStream::connect(d.gateway()).unwrap();
                line.0 = Some(socket.try_clone().unwrap());
                socket.set_nonblocking(true).unwrap();
                let io = hyper_util::rt::TokioIo::new(tokio::net::UnixStream::from_std(socket).unwrap());
                let (send, conn) = hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .handshake::<_, Body>(io)
                    .await
                    .unwrap();
                tokio::spawn(conn);
                let svc = tower::service_fn(move |req: http::Request<Body>| {
                    let mut send = send.clone();
                    async move {
                        send.send_request(req)
                            .await
                            .map(|r| r.map(Body::new))
                            .map_err(|e| tonic::Status::from_error(Box::new(e)))
                    }
                });
                Calls::new(svc)
            }
            Fixture::Embedded(sup, _) => {
                let channel = sup.channel("zoo").unwrap();
                Calls::new(tower::ServiceExt::map_err(channel, |never| match never {}))
            }
        };
        (ZooClient::with_origin(calls, http::Uri::from_static("http://gateway")), line)
    }

    fn pid(&self) -> i32 {
        match self {
            Fixture::Gateway(d) => d.instance("zoo-0")["pid"].as_i64().unwrap_or(0) as i32,
            Fixture::Embedded(sup, _) => sup.plugin("zoo").unwrap().instances()[0].status().pid.unwrap_or(0),
        }
    }

    /// Kills the plugin's process; waits until its next instance runs.
    async fn kill_plugin_and(&self, while_down: impl AsyncFnOnce()) {
        let pid = self.pid();
        assert!(pid > 0, "the zoo has a process");
        // SAFETY: kill(2) of a plugin process this test's supervisor started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        while_down().await;
        let deadline = Instant::now() + UP;
        while self.pid() == pid || self.pid() == 0 || !self.running() {
            assert!(Instant::now() < deadline, "the zoo did not come back after pid {pid} was killed");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(!alive(pid));
    }

    fn running(&self) -> bool {
        match self {
            Fixture::Gateway(d) => d.instance("zoo-0")["state"] == "running",
            Fixture::Embedded(sup, _) => {
                sup.plugin("zoo").unwrap().instances()[0].status().state.to_string() == "running"
            }
        }
    }

    /// Which limit a deadline test runs into, as the status names it.
    fn limit(&self) -> &'static str {
        match self {
            Fixture::Gateway(_) => "the caller's grpc-timeout",
            Fixture::Embedded(..) => "the plugin's call_timeout",
        }
    }

    async fn shutdown(self) {
        if let Fixture::Embedded(sup, _) = self {
            sup.shutdown().await;
        }
    }
}

async fn tally(zoo: &mut Zoo) -> StreamTally {
    zoo.tally(Text::default()).await.expect("tally").into_inner()
}

/// Waits until the zoo's tally satisfies `pred`, up to `within`.
async fn tally_until(zoo: &mut Zoo, within: Duration, what: &str, pred: impl Fn(&StreamTally) -> bool) -> StreamTally {
    let deadline = Instant::now() + within;
    loop {
        let t = tally(zoo).await;
        if pred(&t) {
            return t;
        }
        assert!(Instant::now() < deadline, "{what} within {within:?}: {t:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn text(s: &str) -> Text {
    Text { text: s.to_owned() }
}

/// A request stream the test feeds; it stays open while the sender lives.
fn open_stream() -> (tokio::sync::mpsc::Sender<Text>, ReceiverStream<Text>) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    (tx, ReceiverStream::new(rx))
}

fn endless_count() -> CountRequest {
    CountRequest { count: 100_000, text: "n".into(), interval_ms: 50, ..Default::default() }
}

/// A request with `timeout` as its `grpc-timeout`, if any.
fn with_timeout<T>(message: T, timeout: Option<Duration>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    if let Some(t) = timeout {
        r.set_timeout(t);
    }
    r
}

async fn completes(f: &Fixture) {
    let mut zoo = f.zoo().await;
    for kind in KINDS {
        let before = tally(&mut zoo).await;
        match kind {
            Kind::Server => {
                let mut s = zoo
                    .count(CountRequest { count: 5, text: "n".into(), interval_ms: 1, ..Default::default() })
                    .await
                    .unwrap();
                let mut got = Vec::new();
                while let Some(m) = s.get_mut().message().await.unwrap() {
                    got.push(m.text);
                }
                assert_eq!(got, ["n 0", "n 1", "n 2", "n 3", "n 4"]);
            }
            Kind::Client => {
                let (tx, stream) = open_stream();
                let call = tokio::spawn({
                    let mut zoo = zoo.clone();
                    async move { zoo.collect(stream).await }
                });
                for t in ["a", "b", "c"] {
                    tx.send(text(t)).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                drop(tx);
                assert_eq!(call.await.unwrap().unwrap().into_inner().text, "a b c");
            }
            Kind::Bidi => {
                let (tx, stream) = open_stream();
                let mut answers = zoo.chat(stream).await.unwrap().into_inner();
                for t in ["a", "b", "c"] {
                    tx.send(text(t)).await.unwrap();
                    assert_eq!(answers.message().await.unwrap().unwrap().text, format!("{t}!"), "{kind:?}");
                }
                drop(tx);
                assert_eq!(answers.message().await.unwrap(), None, "the answers end with OK");
            }
        }
        let after = tally_until(&mut zoo, PROMPTLY, "the handler finished", |t| t.finished > before.finished).await;
        assert_eq!((after.started, after.cancelled), (before.started + 1, before.cancelled), "{kind:?}: {after:?}");
    }
}

/// The deadline is `timeout` (the caller's), or else the plugin's `call_timeout`.
async fn deadline_mid_stream(f: &Fixture, timeout: Option<Duration>) {
    let mut zoo = f.zoo().await;
    for kind in KINDS {
        let before = tally(&mut zoo).await;
        let started = Instant::now();
        // The caller's request stream stays open past the deadline (a caller
        // need not close it): the deadline alone must end the plugin's call.
        let (status, _open) = match kind {
            Kind::Server => {
                let mut s = zoo.count(with_timeout(endless_count(), timeout)).await.unwrap().into_inner();
                assert_eq!(s.message().await.unwrap().unwrap().text, "n 0");
                let status = loop {
                    match s.message().await {
                        Ok(Some(_)) => {}
                        Ok(None) => panic!("an endless count ended with OK"),
                        Err(status) => break status,
                    }
                };
                (status, None)
            }
            Kind::Client => {
                let (tx, stream) = open_stream();
                tx.send(text("a")).await.unwrap();
                (zoo.collect(with_timeout(stream, timeout)).await.unwrap_err(), Some(tx))
            }
            Kind::Bidi => {
                let (tx, stream) = open_stream();
                let mut answers = zoo.chat(with_timeout(stream, timeout)).await.unwrap().into_inner();
                tx.send(text("a")).await.unwrap();
                assert_eq!(answers.message().await.unwrap().unwrap().text, "a!");
                (answers.message().await.unwrap_err(), Some(tx))
            }
        };
        let took = started.elapsed();
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{kind:?}: {status:?}");
        assert!(status.message().contains(f.limit()), "{kind:?}: {status:?}");
        assert!(took < Duration::from_secs(8), "{kind:?}: the deadline came after {took:?}");
        tally_until(&mut zoo, PROMPTLY, &format!("{kind:?}: the plugin's handler cancelled at the deadline"), |t| {
            t.cancelled > before.cancelled
        })
        .await;
    }
}

async fn caller_hangs_up(f: &Fixture) {
    let mut zoo = f.zoo().await;
    for kind in KINDS {
        let before = tally(&mut zoo).await;
        // The caller's own connection, so that hanging up is its alone.
        let (mut caller, line) = f.caller().await;
        // What the caller holds open while the handler runs.
        let held: Box<dyn std::any::Any + Send> = match kind {
            Kind::Server => {
                let mut s = caller.count(endless_count()).await.unwrap().into_inner();
                assert_eq!(s.message().await.unwrap().unwrap().text, "n 0");
                drop(s);
                Box::new(())
            }
            Kind::Client => {
                let (tx, stream) = open_stream();
                tx.send(text("a")).await.unwrap();
                let call = tokio::spawn(async move { caller.collect(stream).await });
                tally_until(&mut zoo, PROMPTLY, "Collect began", |t| t.started > before.started).await;
                // The request stream stays open: only the call is dropped.
                call.abort();
                let _ = call.await;
                Box::new(tx)
            }
            Kind::Bidi => {
                let (tx, stream) = open_stream();
                let mut answers = caller.chat(stream).await.unwrap().into_inner();
                tx.send(text("a")).await.unwrap();
                assert_eq!(answers.message().await.unwrap().unwrap().text, "a!");
                // Through an embedded channel, dropping the answers is hanging up. A
                // caller of the gateway whose HTTP/2 client (hyper's, here) keeps its
                // request stream open once it stops reading has not hung up until it
                // closes its connection (or resets the stream).
                drop(answers);
                line.hang_up();
                Box::new(tx)
            }
        };
        tally_until(
            &mut zoo,
            PROMPTLY,
            &format!("{kind:?}: the plugin's handler cancelled when its caller hung up"),
            |t| t.cancelled > before.cancelled,
        )
        .await;
        drop(held);
    }
}

async fn plugin_killed_mid_stream(f: &Fixture) {
    for kind in KINDS {
        let mut zoo = f.zoo().await;
        let status = match kind {
            Kind::Server => {
                let mut s = zoo.count(endless_count()).await.unwrap().into_inner();
                assert_eq!(s.message().await.unwrap().unwrap().text, "n 0");
                let mut status = None;
                f.kill_plugin_and(async || {
                    let ended = tokio::time::timeout(PROMPTLY, async {
                        loop {
                            match s.message().await {
                                Ok(Some(_)) => {}
                                Ok(None) => panic!("the stream ended with OK when its plugin was killed"),
                                Err(status) => break status,
                            }
                        }
                    });
                    status = Some(ended.await.expect("the stream ended promptly when its plugin was killed"));
                })
                .await;
                status
            }
            Kind::Client => {
                let (tx, stream) = open_stream();
                tx.send(text("a")).await.unwrap();
                let before = tally(&mut zoo).await;
                let call = tokio::spawn({
                    let mut zoo = zoo.clone();
                    async move { zoo.collect(stream).await }
                });
                tally_until(&mut zoo, PROMPTLY, "Collect began", |t| t.started > before.started).await;
                let mut status = None;
                f.kill_plugin_and(async || {
                    let ended = tokio::time::timeout(PROMPTLY, call).await;
                    status =
                        Some(ended.expect("the call ended promptly when its plugin was killed").unwrap().unwrap_err());
                })
                .await;
                drop(tx);
                status
            }
            Kind::Bidi => {
                let (tx, stream) = open_stream();
                let mut answers = zoo.chat(stream).await.unwrap().into_inner();
                tx.send(text("a")).await.unwrap();
                assert_eq!(answers.message().await.unwrap().unwrap().text, "a!");
                let mut status = None;
                f.kill_plugin_and(async || {
                    let ended = tokio::time::timeout(PROMPTLY, answers.message()).await;
                    status = Some(ended.expect("the stream ended promptly when its plugin was killed").unwrap_err());
                })
                .await;
                drop(tx);
                status
            }
        };
        let status = status.unwrap();
        assert_eq!(status.code(), tonic::Code::Unavailable, "{kind:?}: {status:?}");
        assert!(status.message().contains("plugin \"zoo\""), "{kind:?}: the status names the plugin: {status:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_of_stream_completes_through_the_gateway() {
    completes(&Fixture::gateway("")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_of_stream_completes_through_an_embedded_channel() {
    let f = Fixture::embedded("").await;
    completes(&f).await;
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_deadline_ends_each_kind_of_stream_through_the_gateway_and_cancels_the_handler() {
    deadline_mid_stream(&Fixture::gateway(""), Some(Duration::from_secs(2))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugins_call_timeout_ends_each_kind_of_stream_through_an_embedded_channel_and_cancels_the_handler() {
    let f = Fixture::embedded("call_timeout = \"2s\"").await;
    deadline_mid_stream(&f, None).await;
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_hanging_up_cancels_the_handler_of_each_kind_of_stream_through_the_gateway() {
    caller_hangs_up(&Fixture::gateway("")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_hanging_up_cancels_the_handler_of_each_kind_of_stream_through_an_embedded_channel() {
    let f = Fixture::embedded("").await;
    caller_hangs_up(&f).await;
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_killed_mid_stream_ends_each_kind_of_call_through_the_gateway_with_unavailable() {
    plugin_killed_mid_stream(&Fixture::gateway("")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_killed_mid_stream_ends_each_kind_of_call_through_an_embedded_channel_with_unavailable() {
    let f = Fixture::embedded("").await;
    plugin_killed_mid_stream(&f).await;
    f.shutdown().await;
}

/// `supervisorctl call zoo ARGS...`, with `stdin` on its standard input.
fn ctl_call(d: &Daemon, args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new(bins::supervisorctl())
        .arg("--socket")
        .arg(d.control())
        .args(["call", "zoo"])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// Every JSON document `out` printed, in order.
fn documents(out: &std::process::Output) -> Vec<serde_json::Value> {
    serde_json::Deserializer::from_slice(&out.stdout).into_iter().map(Result::unwrap).collect()
}

#[test]
fn supervisorctl_call_streams_reads_its_request_from_a_file_or_stdin_and_exits_64_plus_the_code() {
    let f = Fixture::gateway("");
    let Fixture::Gateway(d) = &f else { unreachable!() };
    let one = serde_json::json!({"text": "a"});
    for method in ["zoo.v1.Zoo/Echo", "/zoo.v1.Zoo/Echo", "zoo.v1.Zoo.Echo"] {
        let out = ctl_call(d, &[method, "-d", r#"{"text":"a"}"#], "");
        assert!(out.status.success(), "{method}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(documents(&out), std::slice::from_ref(&one), "{method}");
    }
    let file = d.dir.path().join("request.json");
    std::fs::write(&file, r#"{"text":"a"}"#).unwrap();
    let out = ctl_call(d, &["zoo.v1.Zoo/Echo", "-d", &format!("@{}", file.display())], "");
    assert_eq!((out.status.code(), documents(&out)), (Some(0), vec![one.clone()]), "-d @file");
    let out = ctl_call(d, &["zoo.v1.Zoo/Echo", "-d", "@-"], r#"{"text":"a"}"#);
    assert_eq!((out.status.code(), documents(&out)), (Some(0), vec![one]), "-d @-");

    // Server streaming: one document per message.
    let out = ctl_call(d, &["zoo.v1.Zoo/Count", "-d", r#"{"count":4,"text":"n","interval_ms":10}"#], "");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let texts: Vec<_> = documents(&out).into_iter().map(|v| v["text"].as_str().unwrap().to_owned()).collect();
    assert_eq!(texts, ["n 0", "n 1", "n 2", "n 3"]);

    // Error statuses: 64 + the gRPC code.
    let stderr = |out: &std::process::Output| String::from_utf8_lossy(&out.stderr).into_owned();
    let out = ctl_call(d, &["zoo.v1.Zoo/Collect"], "");
    assert_eq!(out.status.code(), Some(64 + 12), "UNIMPLEMENTED: {}", stderr(&out));
    assert!(stderr(&out).contains("client-streaming method"), "{}", stderr(&out));
    let out = ctl_call(d, &["zoo.v1.Zoo/Nothing"], "");
    assert_eq!(out.status.code(), Some(64 + 5), "NOT_FOUND: {}", stderr(&out));
    // A plugin there is not: NOT_FOUND too, whether or not the call names its deadline.
    for extra in [&[][..], &["--timeout", "1s"][..]] {
        let out = d.ctl(&[&["call", "nope", "zoo.v1.Zoo/Echo"][..], extra].concat());
        assert_eq!(out.status.code(), Some(64 + 5), "no such plugin {extra:?}: {}", stderr(&out));
    }
    let out = ctl_call(d, &["zoo.v1.Zoo/Sleep", "-d", r#"{"ms":3000}"#, "--timeout", "200ms"], "");
    assert_eq!(out.status.code(), Some(64 + 4), "DEADLINE_EXCEEDED: {}", stderr(&out));
    let out = ctl_call(d, &["zoo.v1.Zoo/Count", "-d", r#"{"count":100000,"interval_ms":20}"#, "--timeout", "2s"], "");
    assert_eq!(out.status.code(), Some(64 + 4), "DEADLINE_EXCEEDED mid-stream: {}", stderr(&out));
    assert!(!documents(&out).is_empty(), "the messages before the deadline were printed");
    assert!(d.ctl(&["stop", "zoo"]).status.success());
    let out = ctl_call(d, &["zoo.v1.Zoo/Echo"], "");
    assert_eq!(out.status.code(), Some(64 + 14), "UNAVAILABLE: {}", stderr(&out));
}
