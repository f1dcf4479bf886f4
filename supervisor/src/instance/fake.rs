//! A launcher for the lifecycle's tests: each "process" is an SDK plugin served inside the
//! test process on one end of a socketpair, so starting, greeting, serving, crashing,
//! restarting and stopping run for real without root, cgroups or a fork.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::BodyExt;
use tokio::sync::watch;
use tonic::body::Body;
use tonic::server::NamedService;

use std::time::Instant;

use super::error::{Cause, StartError};
use super::launcher::{BoxFuture, Fencing, Image, LaunchRequest, Launched, Launcher, Others, OthersNow, Process};
use crate::Supervisor;
use crate::config::Config;
use crate::config::PluginSpec;
use crate::observe::teardown::{Found, Verdict};
use crate::sandbox::cgroup::test_hosts::{create, hybrid};
use crate::sandbox::cgroup::{Subtree, SubtreeConfig};
use crate::sandbox::pidfd::ExitStatus;
use crate::state::StateStore;

/// What the next process of an instance does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Serves `fake.v1.Fake` (an echo), declaring itself as `name`.
    Serve { name: String },
    /// Exits with `code` before answering anything.
    Exit { code: i32 },
    /// Takes the connection and never answers.
    Hang,
    /// Serves a contract that breaks `fake.v1.Fake` (its message's field changes type).
    ServeBreaking { name: String },
    /// Serves, then exits with code 1 after `after`.
    ServeThenExit { after: Duration },
    /// Serves, then closes its connection and exits 0 after `after`: an end the default
    /// restart policy (`on-failure`) leaves stopped.
    ServeThenExitZero { after: Duration },
    /// Serves, then closes its connection after `after` and lives on, doing nothing.
    ServeThenHangUp { after: Duration },
    /// Serves, then ends its connection after `after` with GOAWAY ENHANCE_YOUR_CALM (as a
    /// plugin's h2 ends a connection it took for an attack) and exits 0 at once.
    ServeThenBreakAndExitZero { after: Duration },
    /// Refuses its init with `message` (INVALID_ARGUMENT: not retried).
    RefuseInit { message: String },
    /// Serves, but answers every `fail_every`-th call (0: none) with INTERNAL, and each
    /// call only after `delay`: a version that fails some calls, or is slower.
    ServeFlawed { fail_every: u64, delay: Duration },
}

/// Processes, by fake pid.
#[derive(Debug, Default)]
struct Table {
    exits: HashMap<i32, watch::Sender<Option<ExitStatus>>>,
    /// Each teardown, in order: the plugin, and what else of it was alive.
    teardowns: Vec<(String, Others)>,
    /// What the next teardown of a plugin's instance finds, per plugin.
    leaves: HashMap<String, Vec<Found>>,
}

/// Launches [`Behaviour`]s; by default every process serves under its plugin's name.
#[derive(Debug)]
pub struct FakeLauncher {
    /// What the next launches do, in order, per plugin; then `Serve`.
    script: Mutex<HashMap<String, Vec<Behaviour>>>,
    launches: Mutex<Vec<(String, i32)>>,
    table: Arc<Mutex<Table>>,
    next_pid: AtomicI32,
    /// Launches wait while this is false.
    open: watch::Sender<bool>,
    /// Instances get cgroup leaves on a fake kernel (a hybrid host), when set.
    cgroups: Option<Subtree>,
    /// The fake host under `cgroups`.
    cgroup_fs: Option<Arc<crate::sandbox::cgroup::fake_fs::FakeFs>>,
    /// Plugins removed for good, in order.
    forgotten: Mutex<Vec<String>>,
    /// Images made (verified afresh rather than taken from the revision's cache).
    images_made: AtomicUsize,
}

impl FakeLauncher {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::without_cgroups())
    }

    fn without_cgroups() -> Self {
        Self {
            script: Mutex::default(),
            launches: Mutex::default(),
            table: Arc::default(),
            next_pid: AtomicI32::new(100_000),
            open: watch::channel(true).0,
            cgroups: None,
            cgroup_fs: None,
            forgotten: Mutex::default(),
            images_made: AtomicUsize::new(0),
        }
    }

    /// A launcher whose instances get cgroup leaves on a fake hybrid host, so quotas are
    /// set and read back.
    pub fn with_cgroups() -> Arc<Self> {
        let (fs, layout) = hybrid();
        let config = SubtreeConfig { name: "s".into(), parent: None, move_self: false };
        let tree = create(&fs, Arc::new(layout), &config).expect("a subtree on the fake host");
        Arc::new(Self { cgroups: Some(tree), cgroup_fs: Some(fs), ..Self::without_cgroups() })
    }

    /// The fake host [`FakeLauncher::with_cgroups`] made, to set what its files say.
    pub fn cgroup_fs(&self) -> Option<Arc<crate::sandbox::cgroup::fake_fs::FakeFs>> {
        self.cgroup_fs.clone()
    }

    /// Launches wait (after counting themselves) until [`FakeLauncher::release`].
    pub fn hold(&self) {
        self.open.send_replace(false);
    }

    pub fn release(&self) {
        self.open.send_replace(true);
    }

    /// The next processes of `plugin` do these, in order.
    pub fn script(&self, plugin: &str, behaviours: &[Behaviour]) {
        self.script.lock().unwrap().entry(plugin.to_owned()).or_default().extend_from_slice(behaviours);
    }

    /// The next teardown of one of `plugin`'s instances finds `found`.
    pub fn leave(&self, plugin: &str, found: Found) {
        self.table.lock().unwrap().leaves.entry(plugin.to_owned()).or_default().push(found);
    }

    /// Every teardown so far: the plugin, and how many of its other instances were alive.
    pub fn teardowns(&self) -> Vec<(String, Others)> {
        self.table.lock().unwrap().teardowns.clone()
    }

    /// The plugins removed for good, in order.
    pub fn forgotten(&self) -> Vec<String> {
        self.forgotten.lock().unwrap().clone()
    }

    /// How many processes `plugin`'s instances have been given.
    pub fn launches(&self, plugin: &str) -> usize {
        self.launches.lock().unwrap().iter().filter(|(p, _)| p == plugin).count()
    }

    /// How many images were made rather than taken from a revision's cache.
    pub fn images_made(&self) -> usize {
        self.images_made.load(Ordering::Relaxed)
    }

    /// The process `pid` ends as if it had crashed with exit code `code`.
    pub fn crash(&self, pid: i32, code: i32) {
        if let Some(tx) = self.table.lock().unwrap().exits.get(&pid) {
            tx.send_if_modified(|s| s.is_none() && s.replace(ExitStatus::Exited(code)).is_none());
        }
    }

    fn next(&self, spec: &PluginSpec) -> Behaviour {
        let mut script = self.script.lock().unwrap();
        match script.get_mut(&spec.name) {
            Some(queue) if !queue.is_empty() => queue.remove(0),
            _ => Behaviour::Serve { name: spec.name.clone() },
        }
    }
}

impl Launcher for FakeLauncher {
    fn image(
        &self,
        spec: Arc<PluginSpec>,
        cached: Option<Arc<Image>>,
    ) -> BoxFuture<'_, Result<Arc<Image>, StartError>> {
        Box::pin(async move {
            // The file's real digest where there is one, as the real launcher's: an update
            // compares it with what is on disk. A cached image is kept while the file is
            // unchanged, as the real launcher keeps one while its stat stamp is.
            let sha256 = std::fs::File::open(&spec.binary)
                .and_then(|f| crate::integrity::Sha256Digest::of_file(&f))
                .map_or_else(|_| format!("fake-{}", spec.name), |d| d.to_hex());
            if let Some(cached) = cached.filter(|c| c.sha256 == sha256) {
                return Ok(cached);
            }
            self.images_made.fetch_add(1, Ordering::Relaxed);
            // A real verification takes a while (a copy and a hash): others may start meanwhile.
            tokio::task::yield_now().await;
            Ok(Arc::new(Image { sha256, signed_version: None, writable_exec: None, payload: Arc::new(()), held: None }))
        })
    }

    fn save_image(&self, _image: &Image, _to: &std::path::Path) -> std::io::Result<bool> {
        Ok(false)
    }

    fn launch(&self, req: LaunchRequest) -> BoxFuture<'_, Result<Launched, StartError>> {
        Box::pin(async move {
            let behaviour = self.next(&req.spec);
            let pid = self.next_pid.fetch_add(1, Ordering::Relaxed);
            self.launches.lock().unwrap().push((req.spec.name.clone(), pid));
            let _ = self.open.subscribe().wait_for(|open| *open).await;
            let cgroup = match &self.cgroups {
                Some(tree) => {
                    let limits = crate::sandbox::quota::limits(&req.quota);
                    let leaf = tree.create_instance(&req.spec.name, &req.instance, &limits).map_err(|e| {
                        StartError::Failed {
                            plugin: req.spec.name.clone(),
                            instance: req.instance.clone(),
                            cause: Cause::Confine(e.to_string()),
                        }
                    })?;
                    Some(Arc::new(leaf))
                }
                None => None,
            };
            let io = |source| StartError::Failed {
                plugin: req.spec.name.clone(),
                instance: req.instance.clone(),
                cause: Cause::Io { what: "creating the socketpair", source },
            };
            let (ours, theirs) = tokio::net::UnixStream::pair().map_err(io)?;
            let (exit_tx, exit) = watch::channel(None);
            self.table.lock().unwrap().exits.insert(pid, exit_tx.clone());
            let instance = req.instance.clone();
            let name_of = req.spec.name.clone();
            let task = tokio::spawn(async move {
                let status = match behaviour {
                    Behaviour::Serve { name } => {
                        let served = plugin_sdk::testing::serve_connection(sdk_plugin(&name), theirs, instance).await;
                        ExitStatus::Exited(i32::from(served.is_err()))
                    }
                    Behaviour::ServeBreaking { name } => {
                        let plugin = plugin_sdk::Plugin::new(&name, "2.0.0")
                            .descriptors(&descriptors(FAKE_PROTO_BREAKING))
                            .service(FakeService::default());
                        let served = plugin_sdk::testing::serve_connection(plugin, theirs, instance).await;
                        ExitStatus::Exited(i32::from(served.is_err()))
                    }
                    Behaviour::ServeFlawed { fail_every, delay } => {
                        let flaw = Flaw { fail_every, delay, calls: Arc::default() };
                        let plugin = sdk_plugin_with(&name_of, FakeService { flaw });
                        let served = plugin_sdk::testing::serve_connection(plugin, theirs, instance).await;
                        ExitStatus::Exited(i32::from(served.is_err()))
                    }
                    Behaviour::ServeThenExit { after } => {
                        let name = name_of.clone();
                        let serving = plugin_sdk::testing::serve_connection(sdk_plugin(&name), theirs, instance);
                        let _ = tokio::time::timeout(after, serving).await;
                        ExitStatus::Exited(1)
                    }
                    Behaviour::ServeThenExitZero { after } => {
                        let (fd, _serving) = serve_for(&name_of, theirs, instance, after).await;
                        // As a process's exit closes its socket (the server's connection
                        // task holds this one).
                        let _ = nix::sys::socket::shutdown(fd.as_raw_fd(), nix::sys::socket::Shutdown::Both);
                        ExitStatus::Exited(0)
                    }
                    Behaviour::ServeThenHangUp { after } => {
                        let (fd, _serving) = serve_for(&name_of, theirs, instance, after).await;
                        // The server's connection task holds the socket: shut down, it reads
                        // and writes nothing more, and the supervisor's end sees it closed.
                        let _ = nix::sys::socket::shutdown(fd.as_raw_fd(), nix::sys::socket::Shutdown::Both);
                        std::future::pending::<ExitStatus>().await
                    }
                    Behaviour::ServeThenBreakAndExitZero { after } => {
                        let (fd, _serving) = serve_for(&name_of, theirs, instance, after).await;
                        // GOAWAY ENHANCE_YOUR_CALM (0xb), last stream 0: what h2 sends a
                        // peer it takes for an attacker, before it closes the connection.
                        let calm = [0, 0, 8, 0x7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xb];
                        let _ = nix::unistd::write(&fd, &calm);
                        // Exits at once (the task ends, its socket with it): before the
                        // supervisor may have read what it sent.
                        ExitStatus::Exited(0)
                    }
                    Behaviour::RefuseInit { message } => {
                        let plugin = sdk_plugin(&name_of)
                            .on_init(move |_| Err(tonic::Status::invalid_argument(message.clone())));
                        let served = plugin_sdk::testing::serve_connection(plugin, theirs, instance).await;
                        ExitStatus::Exited(i32::from(served.is_err()))
                    }
                    Behaviour::Exit { code } => ExitStatus::Exited(code),
                    Behaviour::Hang => {
                        let _held = theirs;
                        std::future::pending::<ExitStatus>().await
                    }
                };
                exit_tx.send_if_modified(|s| s.is_none() && s.replace(status).is_none());
            });
            let process = FakeProcess { pid, exit, task, table: self.table.clone(), plugin: req.spec.name.clone() };
            Ok(Launched {
                process: Box::new(process),
                conn: ours,
                fencing: Fencing { tier: req.spec.tier.clone(), quota: req.quota, notes: Vec::new(), cgroup },
            })
        })
    }

    fn tier_quota(&self, _tier: &str) -> Option<crate::sandbox::tier::Quota> {
        None
    }

    fn forget_plugin<'a>(&'a self, plugin: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Some(tree) = &self.cgroups {
                let _ = tree.remove_plugin(plugin);
            }
            self.forgotten.lock().unwrap().push(plugin.to_owned());
        })
    }

    fn teardown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    fn teardown_blocking(&self, _limit: Duration) {}
}

/// A served plugin as a process: it ends when its task does, or is made to.
struct FakeProcess {
    pid: i32,
    exit: watch::Receiver<Option<ExitStatus>>,
    task: tokio::task::JoinHandle<()>,
    table: Arc<Mutex<Table>>,
    plugin: String,
}

impl FakeProcess {
    fn end(&self, signal: i32) {
        self.task.abort();
        if let Some(tx) = self.table.lock().unwrap().exits.get(&self.pid) {
            tx.send_if_modified(|s| {
                s.is_none() && s.replace(ExitStatus::Signaled { signal, core_dumped: false }).is_none()
            });
        }
    }
}

impl Process for FakeProcess {
    fn pid(&self) -> i32 {
        self.pid
    }

    fn exit(&self) -> watch::Receiver<Option<ExitStatus>> {
        self.exit.clone()
    }

    fn kill(&self) {
        self.end(libc::SIGKILL);
    }

    fn terminate(&self) {
        self.end(libc::SIGTERM);
    }

    /// Every signal ends a fake process, as its default action would.
    fn signaller(&self) -> crate::instance::signal::Signaller {
        let (task, table, pid) = (self.task.abort_handle(), self.table.clone(), self.pid);
        crate::instance::signal::Signaller::new(move |signal| {
            task.abort();
            if let Some(tx) = table.lock().unwrap().exits.get(&pid) {
                tx.send_if_modified(|s| {
                    s.is_none() && s.replace(ExitStatus::Signaled { signal, core_dumped: false }).is_none()
                });
            }
            Ok(1)
        })
    }

    fn reason(&self, status: ExitStatus) -> String {
        status.to_string()
    }

    fn clean_up(self: Box<Self>, others: OthersNow) -> BoxFuture<'static, Verdict> {
        let mut table = self.table.lock().unwrap();
        table.teardowns.push((self.plugin.clone(), others()));
        let found = table.leaves.remove(&self.plugin).unwrap_or_default();
        Box::pin(async move { Verdict { found, took: Duration::from_micros(10), ..Verdict::default() } })
    }
}

impl Drop for FakeProcess {
    fn drop(&mut self) {
        // A process handle dropped unstopped kills its process, as the real one does.
        if self.exit.borrow().is_none() {
            self.end(libc::SIGKILL);
        }
        self.task.abort();
        self.table.lock().unwrap().exits.remove(&self.pid);
    }
}

/// The contract the fake plugins serve: one echo method over a one-string message.
const FAKE_PROTO: &str = r#"syntax = "proto3";
package fake.v1;
message Text { string text = 1; }
service Fake { rpc Echo(Text) returns (Text); }
"#;

/// [`FAKE_PROTO`] broken: the field changes type.
const FAKE_PROTO_BREAKING: &str = r#"syntax = "proto3";
package fake.v1;
message Text { int64 text = 1; }
service Fake { rpc Echo(Text) returns (Text); }
"#;

fn descriptors(proto: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("fake.proto"), proto).expect("write fake.proto");
    let set = protox::compile(["fake.proto"], [dir.path()]).expect("fake.proto compiles");
    prost::Message::encode_to_vec(&set)
}

/// The server of [`Behaviour`]s that serve a while and then end their own way: `name`
/// served on `theirs` for `after` (or until it ended), then a descriptor of the same
/// socket, valid however the server ended, and the server, unpolled from then on.
async fn serve_for(
    name: &str,
    theirs: tokio::net::UnixStream,
    instance: String,
    after: Duration,
) -> (std::os::fd::OwnedFd, Pin<Box<dyn Future<Output = Result<(), plugin_sdk::SdkError>> + Send>>) {
    use std::os::fd::AsFd;
    let socket = theirs.as_fd().try_clone_to_owned().expect("a descriptor to spare");
    let mut serving = Box::pin(plugin_sdk::testing::serve_connection(sdk_plugin(name), theirs, instance));
    let _ = tokio::time::timeout(after, &mut serving).await;
    (socket, serving)
}

/// An SDK plugin named `name` serving [`FakeService`].
fn sdk_plugin(name: &str) -> plugin_sdk::Plugin {
    sdk_plugin_with(name, FakeService::default())
}

fn sdk_plugin_with(name: &str, service: FakeService) -> plugin_sdk::Plugin {
    static ENCODED: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let encoded = ENCODED.get_or_init(|| descriptors(FAKE_PROTO));
    plugin_sdk::Plugin::new(name, "1.0.0").descriptors(encoded).service(service)
}

/// How a [`FakeService`] falls short.
#[derive(Clone, Debug, Default)]
pub struct Flaw {
    fail_every: u64,
    delay: Duration,
    calls: Arc<std::sync::atomic::AtomicU64>,
}

/// `fake.v1.Fake`: answers every call with its own request, which for `Echo` is a valid
/// answer (same message type), without decoding it; or as its flaw says.
#[derive(Clone, Debug, Default)]
pub struct FakeService {
    flaw: Flaw,
}

impl NamedService for FakeService {
    const NAME: &'static str = "fake.v1.Fake";
}

impl tower::Service<http::Request<Body>> for FakeService {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let flaw = self.flaw.clone();
        Box::pin(async move {
            let data = req.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
            if !flaw.delay.is_zero() {
                tokio::time::sleep(flaw.delay).await;
            }
            let n = flaw.calls.fetch_add(1, Ordering::Relaxed) + 1;
            if flaw.fail_every > 0 && n.is_multiple_of(flaw.fail_every) {
                return Ok(tonic::Status::internal(format!("call {n} failed on purpose")).into_http());
            }
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
            let frames =
                vec![Ok::<_, tonic::Status>(http_body::Frame::data(data)), Ok(http_body::Frame::trailers(trailers))];
            let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
            let mut response = http::Response::new(Body::new(body));
            response.headers_mut().insert("content-type", http::HeaderValue::from_static("application/grpc"));
            Ok(response)
        })
    }
}

/// The message of `fake.v1.Fake/Echo`, for clients in tests.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Text {
    #[prost(string, tag = "1")]
    pub text: String,
}

/// Calls `fake.v1.Fake/Echo` on `channel` (a plugin's routed channel, or one instance's).
pub async fn echo<C>(channel: C, text: &str) -> Result<String, tonic::Status>
where
    C: tonic::client::GrpcService<tonic::body::Body>,
    C::Error: Into<tonic::codegen::StdError>,
    C::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <C::ResponseBody as http_body::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    echo_within(channel, text, None).await
}

/// [`echo`], with `deadline` as the caller's `grpc-timeout` when there is one.
pub async fn echo_within<C>(channel: C, text: &str, deadline: Option<Duration>) -> Result<String, tonic::Status>
where
    C: tonic::client::GrpcService<tonic::body::Body>,
    C::Error: Into<tonic::codegen::StdError>,
    C::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <C::ResponseBody as http_body::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.into().to_string()))?;
    let path = http::uri::PathAndQuery::from_static("/fake.v1.Fake/Echo");
    let codec = tonic_prost::ProstCodec::<Text, Text>::default();
    let mut request = tonic::Request::new(Text { text: text.to_owned() });
    if let Some(deadline) = deadline {
        request.set_timeout(deadline);
    }
    let answer = grpc.unary(request, path, codec).await?;
    Ok(answer.into_inner().text)
}

// ---------------------------------------------------------------- a supervisor over it

pub(crate) const UP: Duration = Duration::from_secs(10);

/// Calls `fake` in a loop until stopped: how many, and every failure's words.
pub(crate) struct Load {
    stop: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    pub(crate) fn start(sup: &Supervisor) -> Self {
        Self::start_within(sup, None)
    }

    /// As [`Load::start`], each call with `deadline` as its caller's `grpc-timeout`.
    pub(crate) fn start_within(sup: &Supervisor, deadline: Option<Duration>) -> Self {
        let (stop, calls, failures) = (Arc::new(AtomicBool::new(false)), Arc::default(), Arc::default());
        let channel = sup.channel("fake").unwrap();
        let task = tokio::spawn({
            let (stop, calls, failures): (Arc<AtomicBool>, Arc<AtomicUsize>, Arc<Mutex<Vec<String>>>) =
                (stop.clone(), Arc::clone(&calls), Arc::clone(&failures));
            async move {
                while !stop.load(Ordering::Relaxed) {
                    match echo_within(channel.clone(), "steady", deadline).await {
                        Ok(text) if text == "steady" => {}
                        Ok(other) => failures.lock().unwrap().push(format!("answered {other:?}")),
                        Err(e) => failures.lock().unwrap().push(format!("{:?}: {}", e.code(), e.message())),
                    }
                    calls.fetch_add(1, Ordering::Relaxed);
                    tokio::task::yield_now().await;
                }
            }
        });
        Load { stop, calls, failures, task }
    }

    /// Waits until it has made `n` calls.
    pub(crate) async fn made(&self, n: usize) {
        let deadline = Instant::now() + UP;
        while self.calls.load(Ordering::Relaxed) < n {
            assert!(Instant::now() < deadline, "the load made no {n} calls");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    pub(crate) async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        (self.calls.load(Ordering::Relaxed), self.failures.lock().unwrap().clone())
    }
}

pub(crate) struct Fixture {
    pub sup: Supervisor,
    pub fake: Arc<FakeLauncher>,
    _dir: tempfile::TempDir,
}

/// A supervisor over the fake launcher, with `plugins` (`[[plugin]]` entries) and quick
/// timeouts; `script` says what the first processes of a plugin do.
pub(crate) fn fixture(plugins: &str, script: &[(&str, &[Behaviour])]) -> Fixture {
    fixture_over(FakeLauncher::new(), plugins, script)
}

pub(crate) fn fixture_over(fake: Arc<FakeLauncher>, plugins: &str, script: &[(&str, &[Behaviour])]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[supervisor]\nstate_dir = \"state\"\n\n[supervisor.sandbox]\nallow_unsandboxed = true\n\n\
         [supervisor.defaults]\ntier = \"none\"\nhandshake_timeout = \"1s\"\nstop_timeout = \"1s\"\n\n\
         [supervisor.defaults.backoff]\ninitial = \"50ms\"\nmax = \"200ms\"\n\n{plugins}"
    );
    let path = dir.path().join("supervisor.toml");
    std::fs::write(&path, text).unwrap();
    let config = Config::load(&path).unwrap();
    let state = StateStore::open(&dir.path().join("state")).unwrap();
    for (plugin, behaviours) in script {
        fake.script(plugin, behaviours);
    }
    let sup = Supervisor::with_launcher(config, state, fake.clone(), Default::default());
    Fixture { sup, fake, _dir: dir }
}

/// Stops `sup` and starts a supervisor again on the same state directory, over a
/// fresh fake launcher, with `plugins` as its config file's entries.
pub(crate) async fn restart(sup: Supervisor, plugins: &str) -> (Supervisor, Arc<FakeLauncher>) {
    sup.shutdown().await;
    let path = sup.config().source.clone().unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let head = &text[..text.find("[[plugin]]").unwrap()];
    std::fs::write(&path, format!("{head}{plugins}")).unwrap();
    let config = Config::load(&path).unwrap();
    // The state directory is the stopped one's until it is gone, as a daemon's is until
    // its process ends.
    drop(sup);
    let state = StateStore::open(&config.resolve(&config.supervisor.state_dir)).unwrap();
    let fake = FakeLauncher::new();
    (Supervisor::with_launcher(config, state, fake.clone(), Default::default()), fake)
}

/// Waits until the plugin `fake` has one revision left (the others drained and went);
/// its number.
pub(crate) async fn one_revision_left(sup: &Supervisor) -> u64 {
    let p = sup.plugin("fake").unwrap();
    assert!(p.wait_until(UP, |p| p.revisions().len() == 1).await, "a revision never drained away");
    p.revisions()[0].number
}

pub(crate) fn plugin(name: &str, extra: &str) -> String {
    format!("[[plugin]]\nname = {name:?}\nbinary = \"/bin/true\"\n{extra}\n")
}

/// Waits until `pred` holds for the first instance of `plugin`.
pub(crate) async fn until(sup: &Supervisor, plugin: &str, what: &str, pred: impl Fn(&super::state::Status) -> bool) {
    let inst = sup.plugin(plugin).unwrap().instances()[0].clone();
    let deadline = Instant::now() + UP;
    while !pred(&inst.status()) {
        assert!(Instant::now() < deadline, "{plugin} never became {what}: {:?}", inst.status());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
