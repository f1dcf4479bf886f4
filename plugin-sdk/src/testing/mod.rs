//! Testing a plugin in a plain `#[tokio::test]`, with no supervisor and no
//! root: the harness starts the plugin as the supervisor does (in this process
//! on a socketpair, or its built binary as a child process with fds 3 and 4),
//! makes the handshake and holds the answer to the supervisor's checks, and
//! gives the test a channel to the plugin's services. go-plugin's
//! `TestPluginGRPCConn`, with the real handshake.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! # #[derive(Clone)]
//! # struct MyEcho;
//! # impl tonic::server::NamedService for MyEcho {
//! #     const NAME: &'static str = "echo.v1.Echo";
//! # }
//! # impl tower::Service<http::Request<tonic::body::Body>> for MyEcho {
//! #     type Response = http::Response<tonic::body::Body>;
//! #     type Error = std::convert::Infallible;
//! #     type Future = std::future::Ready<Result<Self::Response, Self::Error>>;
//! #     fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
//! #         std::task::Poll::Ready(Ok(()))
//! #     }
//! #     fn call(&mut self, _: http::Request<tonic::body::Body>) -> Self::Future {
//! #         std::future::ready(Ok(tonic::Status::unimplemented("").into_http()))
//! #     }
//! # }
//! # const ECHO_DESCRIPTORS: &[u8] = &[];
//! # let my_plugin = || {
//! #     plugin_sdk::Plugin::new("echo", "0.1.0")
//! #         .descriptors(ECHO_DESCRIPTORS)
//! #         .service(MyEcho)
//! # };
//! use plugin_sdk::testing;
//!
//! let plugin = testing::start(my_plugin()).await?; // or, as a child process:
//! // testing::start_binary("echo", env!("CARGO_BIN_EXE_echo")).await?
//! assert_eq!(plugin.handshake().name, "echo");
//! plugin.init(plugin_sdk::serde_json::json!({"greeting": "hi"})).await?; // as [plugin.config]
//! let channel = plugin.channel(); // for any tonic client: EchoClient::new(channel)
//! let stopped = plugin.shutdown().await?; // the supervisor's stop: Shutdown, then drain
//! assert!(stopped.ended.is_clean(), "{stopped:?}");
//! # Ok(()) }
//! ```
//!
//! A plugin the supervisor would refuse is refused here too, with the cause as a
//! [`HarnessError`] variant: another name than its config entry's
//! ([`Options::named`]), no protocol version in common, a version that is not
//! semver, an SDK outside the supported range, descriptors that do not decode or
//! do not describe a service it declares. The sandbox is not applied: a syscall a
//! tier forbids is found by running the plugin under the supervisor.

mod check;
mod child;
mod error;
mod logs;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use plugin_proto::plugin::v1::plugin_lifecycle_client::PluginLifecycleClient;
use plugin_proto::plugin::v1::{HandshakeRequest, HandshakeResponse, InitRequest, ShutdownRequest};
use plugin_proto::transport::H2Channel;
use prost_reflect::DescriptorPool;
use tokio::net::UnixStream;
use tokio::task::JoinHandle;

pub use error::{HarnessError, Phase};
pub use logs::{LogLine, LogSource, MAX_KEPT_BYTES, MAX_KEPT_LINES};

use super::{Plugin, SdkError, shutdown};

/// Serves `plugin` on `conn`, one end of a connected socket pair whose
/// other end speaks to it as the supervisor does (handshake, init,
/// calls, shutdown), until a shutdown has drained or the other end is
/// gone. Nothing process-wide is touched: no signal handlers, no global
/// logger, no panic hook, so many plugins can be served in one process.
/// ([`start`] does this and speaks the other end.)
pub async fn serve_connection(
    plugin: Plugin,
    conn: tokio::net::UnixStream,
    instance: impl Into<String>,
) -> Result<(), SdkError> {
    plugin.serve_on(conn, instance.into(), shutdown::Shutdown::new()).await
}

/// Serves `plugin` in this process, as the supervisor would see it, under the
/// name it declares. See [`Options`] to expect another name or change timeouts.
pub async fn start(plugin: Plugin) -> Result<TestPlugin, HarnessError> {
    Options::default().start(plugin).await
}

/// Runs the plugin binary at `path` as the supervisor runs the entry `name`
/// (the name its handshake must answer with): a cleared environment with the
/// cookie and instance id, fds 3 and 4, working directory `/`.
pub async fn start_binary(name: &str, path: impl AsRef<Path>) -> Result<TestPlugin, HarnessError> {
    Options::named(name).start_binary(path).await
}

/// What the supervisor's config entry for the plugin would say; the defaults are
/// the supervisor's.
#[derive(Clone, Debug)]
pub struct Options {
    name: Option<String>,
    instance: Option<String>,
    handshake_timeout: Duration,
    stop_timeout: Duration,
    data_dir: Option<PathBuf>,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            name: None,
            instance: None,
            handshake_timeout: Duration::from_secs(5),
            stop_timeout: Duration::from_secs(5),
            data_dir: None,
            args: Vec::new(),
            env: Vec::new(),
        }
    }
}

impl Options {
    /// The entry's name: the plugin must answer the handshake with it. Without
    /// it, an in-process plugin is expected to declare its own name and a binary
    /// its file name.
    pub fn named(name: impl Into<String>) -> Self {
        Self { name: Some(name.into()), ..Self::default() }
    }

    /// The instance id (default `NAME-0`).
    pub fn instance(mut self, id: impl Into<String>) -> Self {
        self.instance = Some(id.into());
        self
    }

    /// How long the handshake, init and a health check may each take (default 5 s).
    pub fn handshake_timeout(mut self, limit: Duration) -> Self {
        self.handshake_timeout = limit;
        self
    }

    /// The drain deadline [`TestPlugin::shutdown`] gives the plugin (default 5 s).
    pub fn stop_timeout(mut self, limit: Duration) -> Self {
        self.stop_timeout = limit;
        self
    }

    /// The data directory sent at init; also a child's working directory.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// An argument for the binary (the entry's `args`).
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// An environment variable for the binary (the entry's `env` passes the
    /// daemon's own; here the value is given). Nothing else is inherited.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Serves `plugin` in this process on a socketpair and makes the handshake.
    pub async fn start(self, plugin: Plugin) -> Result<TestPlugin, HarnessError> {
        let name = self.name.clone().unwrap_or_else(|| plugin.name.clone());
        let instance = self.instance.clone().unwrap_or_else(|| format!("{name}-0"));
        let (ours, theirs) = UnixStream::pair().map_err(HarnessError::Connect)?;
        let conn = std::os::fd::AsFd::as_fd(&theirs).try_clone_to_owned().map_err(HarnessError::Connect)?;
        let drain = shutdown::Shutdown::new();
        let task = tokio::spawn(plugin.serve_on(theirs, instance.clone(), drain.clone()));
        let served = InProcess { task, conn, drain };
        let process = Process { kind: Kind::InProcess(served), outcome: None, reported: None, readers: Vec::new() };
        self.greet(Greeting {
            name,
            instance,
            conn: ours,
            process,
            logs: logs::Logs::default(),
            tasks: Tasks::default(),
        })
        .await
    }

    /// Runs the binary at `path` as a child process and makes the handshake.
    pub async fn start_binary(self, path: impl AsRef<Path>) -> Result<TestPlugin, HarnessError> {
        let path = path.as_ref();
        let name = self
            .name
            .clone()
            .unwrap_or_else(|| path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
        let instance = self.instance.clone().unwrap_or_else(|| format!("{name}-0"));
        let dir = self.data_dir.clone().unwrap_or_else(|| PathBuf::from("/"));
        let launch = child::Launch { path, args: &self.args, env: &self.env, instance: &instance, dir: &dir };
        let spawned = child::spawn(&launch).map_err(|source| HarnessError::Spawn { path: path.to_owned(), source })?;
        let logs = logs::Logs::default();
        let mut tasks = Tasks::default();
        tasks.0.push(tokio::spawn(logs::serve_host(spawned.host, logs.clone())));
        let readers = vec![
            tokio::spawn(logs::read_lines(spawned.stdout, LogSource::Stdout, logs.clone())),
            tokio::spawn(logs::read_lines(spawned.stderr, LogSource::Stderr, logs.clone())),
        ];
        let process = Process { kind: Kind::Child(spawned.child), outcome: None, reported: None, readers };
        self.greet(Greeting { name, instance, conn: spawned.plugin, process, logs, tasks }).await
    }

    /// HTTP/2 on the plugin's connection, then the handshake within the timeout,
    /// racing the plugin's end, as the supervisor does.
    async fn greet(self, g: Greeting) -> Result<TestPlugin, HarnessError> {
        let Greeting { name, instance, conn, mut process, logs, tasks } = g;
        let limit = self.handshake_timeout;
        let (channel, driver) = match H2Channel::handshake(conn).await {
            Ok(shaken) => shaken,
            Err(e) => {
                // Writing the preface fails when the plugin has already gone.
                return Err(process.died_within(Phase::Handshake, &logs).await.unwrap_or(HarnessError::Http2(e)));
            }
        };
        // Not aborted with the other tasks: it ends when the plugin's end closes, and
        // must read what the plugin sent until then (the answers of a drain).
        let driver = tokio::spawn(async move {
            let _ = driver.await;
        });
        let mut client = PluginLifecycleClient::new(channel.clone());
        let req = HandshakeRequest {
            protocol_versions: check::OFFERED.to_vec(),
            supervisor_version: format!("plugin-sdk testing {}", crate::SDK_VERSION),
            expected_name: name.clone(),
            instance: instance.clone(),
        };
        let answer = tokio::select! {
            r = tokio::time::timeout(limit, client.handshake(req)) => Some(r),
            r = process.ended() => { r?; None }
        };
        let resp = match answer {
            None => return Err(process.died(Phase::Handshake, &logs).await),
            Some(Err(_)) => return Err(HarnessError::HandshakeTimeout(limit)),
            Some(Ok(Err(status))) if status.code() == tonic::Code::FailedPrecondition => {
                return Err(HarnessError::HandshakeRefused(status.message().to_owned()));
            }
            Some(Ok(Err(status))) => {
                // The call may have failed because the plugin ended.
                let failed =
                    HarnessError::HandshakeFailed { code: status.code(), message: status.message().to_owned() };
                return Err(process.died_within(Phase::Handshake, &logs).await.unwrap_or(failed));
            }
            Some(Ok(Ok(resp))) => resp.into_inner(),
        };
        let contract = check::check(&name, &resp)?;
        Ok(TestPlugin {
            handshake: resp,
            contract,
            channel,
            instance,
            options: self,
            process: tokio::sync::Mutex::new(process),
            logs,
            driver,
            _tasks: tasks,
        })
    }
}

struct Greeting {
    name: String,
    instance: String,
    conn: UnixStream,
    process: Process,
    logs: logs::Logs,
    tasks: Tasks,
}

/// A plugin that passed the handshake. Dropped, it is killed (a child) or
/// stopped (in process) at once; [`TestPlugin::shutdown`] stops it as the
/// supervisor does.
#[derive(Debug)]
pub struct TestPlugin {
    handshake: HandshakeResponse,
    contract: DescriptorPool,
    channel: H2Channel,
    instance: String,
    options: Options,
    process: tokio::sync::Mutex<Process>,
    logs: logs::Logs,
    driver: JoinHandle<()>,
    _tasks: Tasks,
}

impl TestPlugin {
    /// The plugin's answer to the handshake: name, version, SDK version, protocol
    /// version, services and their descriptors.
    pub fn handshake(&self) -> &HandshakeResponse {
        &self.handshake
    }

    /// The declared contract, decoded: its services, methods and message types.
    pub fn contract(&self) -> &DescriptorPool {
        &self.contract
    }

    /// A channel to the plugin's services (the connection the handshake was
    /// made on), for any tonic-generated client.
    pub fn channel(&self) -> H2Channel {
        self.channel.clone()
    }

    /// The child's pid; none in process.
    pub fn pid(&self) -> Option<u32> {
        match &self.process.try_lock().ok()?.kind {
            Kind::Child(child) => Some(child.id()),
            Kind::InProcess(_) => None,
        }
    }

    /// Sends Init as the supervisor does after the handshake, with `config` as
    /// the entry's `[plugin.config]` table (a JSON object) and the data directory
    /// and instance id of the [`Options`]. The supervisor routes no call to the
    /// plugin before init succeeds; the harness leaves that to the test.
    pub async fn init(&self, config: serde_json::Value) -> Result<(), HarnessError> {
        let req = InitRequest {
            config_json: config.to_string(),
            data_dir: self.options.data_dir.as_ref().map(|d| d.display().to_string()).unwrap_or_default(),
            instance: self.instance.clone(),
        };
        let limit = self.options.handshake_timeout;
        let mut client = PluginLifecycleClient::new(self.channel.clone());
        let mut process = self.process.lock().await;
        let answer = tokio::select! {
            r = tokio::time::timeout(limit, client.init(req)) => Some(r),
            r = process.ended() => { r?; None }
        };
        match answer {
            None => Err(process.died(Phase::Init, &self.logs).await),
            Some(Err(_)) => Err(HarnessError::InitTimeout(limit)),
            Some(Ok(Err(status))) => {
                let refused = HarnessError::Init { code: status.code(), message: status.message().to_owned() };
                Err(process.died_within(Phase::Init, &self.logs).await.unwrap_or(refused))
            }
            Some(Ok(Ok(_))) => Ok(()),
        }
    }

    /// Whether the plugin says it serves (`grpc.health.v1` Check of the service
    /// named ""), as the supervisor asks after init.
    pub async fn serving(&self) -> Result<bool, HarnessError> {
        use tonic_health::pb::health_check_response::ServingStatus;
        let limit = self.options.handshake_timeout;
        let mut client = tonic_health::pb::health_client::HealthClient::new(self.channel.clone());
        let mut req = tonic::Request::new(tonic_health::pb::HealthCheckRequest { service: String::new() });
        req.set_timeout(limit);
        match tokio::time::timeout(limit, client.check(req)).await {
            Ok(Ok(r)) => Ok(r.get_ref().status == ServingStatus::Serving as i32),
            Ok(Err(status)) => Err(HarnessError::Health { code: status.code(), message: status.message().to_owned() }),
            Err(_) => Err(HarnessError::Health {
                code: tonic::Code::DeadlineExceeded,
                message: format!("no answer within {limit:?}"),
            }),
        }
    }

    /// The log lines the plugin sent so far, oldest first: a child's records on fd 4 and
    /// its stdout and stderr lines. An in-process plugin's `tracing` events go to the
    /// test's own subscriber instead (none unless the test installs one). The newest
    /// [`MAX_KEPT_LINES`] lines (and [`MAX_KEPT_BYTES`] of text) are kept; older ones are
    /// dropped and counted in [`TestPlugin::logs_dropped`].
    pub fn logs(&self) -> Vec<LogLine> {
        self.logs.snapshot()
    }

    /// How many of the plugin's oldest log lines were dropped to stay within the bounds.
    pub fn logs_dropped(&self) -> u64 {
        self.logs.dropped()
    }

    /// The first log line `matches` accepts, waiting for it as long as a handshake may take.
    /// Only the lines kept are looked at: one dropped past the bound before the wait began
    /// is not found ([`TestPlugin::logs_dropped`] says whether any were).
    pub async fn wait_for_log(&self, matches: impl Fn(&LogLine) -> bool) -> Result<LogLine, HarnessError> {
        self.logs.wait_for(matches, self.options.handshake_timeout).await
    }

    /// Stops the plugin as the supervisor's stop does: Shutdown with the drain
    /// deadline (`stop_timeout`), answered within 1 s; then the plugin has the
    /// deadline and 250 ms to end by itself, SIGTERM then 1 s more, then SIGKILL
    /// (in process: the task is dropped). Says how it ended.
    pub async fn shutdown(self) -> Result<Stopped, HarnessError> {
        let drain = self.options.stop_timeout;
        let mut process = self.process.into_inner();
        let asked = Instant::now();
        let mut client = PluginLifecycleClient::new(self.channel.clone());
        let req = ShutdownRequest {
            drain_deadline_ms: u32::try_from(drain.as_millis()).unwrap_or(u32::MAX),
            reason: "test harness shutdown".into(),
        };
        let answer_within = drain.min(Duration::from_secs(1)).max(Duration::from_millis(100));
        let in_flight = match tokio::time::timeout(answer_within, client.shutdown(req)).await {
            Ok(Ok(answer)) => Some(answer.into_inner().in_flight),
            _ => None,
        };
        let ended = match tokio::time::timeout(drain + plugin_proto::launch::EXIT_AFTER_DRAIN, process.ended()).await {
            Ok(r) => {
                r?;
                match (process.outcome.take(), process.reported) {
                    (Some(outcome), _) => outcome.ended(),
                    // An earlier step's error said how it ended.
                    (None, Some(earlier)) => return Err(HarnessError::Ended { phase: earlier }),
                    (None, None) => Ended::Killed,
                }
            }
            Err(_) => process.force().await?,
        };
        let took = asked.elapsed();
        // What the plugin answered before it closed its end is still to be read.
        let _ = tokio::time::timeout(Duration::from_secs(1), self.driver).await;
        process.settle_output().await;
        Ok(Stopped { in_flight, ended, took, logs: self.logs.snapshot() })
    }
}

/// How [`TestPlugin::shutdown`] went.
#[derive(Debug)]
pub struct Stopped {
    /// The calls in flight the plugin reported in its answer to Shutdown; none
    /// when it did not answer within the wait.
    pub in_flight: Option<u32>,
    pub ended: Ended,
    /// From the Shutdown call to the plugin's end.
    pub took: Duration,
    /// Every log line the plugin sent, its last ones included (within the bounds
    /// [`TestPlugin::logs`] keeps).
    pub logs: Vec<LogLine>,
}

/// How a plugin ended.
#[derive(Debug)]
pub enum Ended {
    /// By itself within the drain deadline, with exit status 0 (in process:
    /// `serve` returned without an error): a clean drain.
    Clean,
    /// By itself, with a non-zero status or a signal the harness did not send.
    Exited(ExitStatus),
    /// In process: serving failed with this error.
    Failed(SdkError),
    /// In process: its task panicked.
    Panicked(String),
    /// Still running past the drain deadline and 250 ms: SIGTERM ended it, with this status.
    Terminated(ExitStatus),
    /// Still running 1 s after SIGTERM (in process: past the deadline): killed.
    Killed,
}

impl Ended {
    /// The plugin drained and exited 0 by itself.
    pub fn is_clean(&self) -> bool {
        matches!(self, Ended::Clean)
    }
}

impl Outcome {
    fn ended(self) -> Ended {
        match self {
            Outcome::Served(Ok(())) => Ended::Clean,
            Outcome::Served(Err(e)) => Ended::Failed(e),
            Outcome::Panicked(message) => Ended::Panicked(message),
            Outcome::Exit(status) if status.success() => Ended::Clean,
            Outcome::Exit(status) => Ended::Exited(status),
        }
    }
}

/// How the plugin's process or task ended.
#[derive(Debug)]
enum Outcome {
    Served(Result<(), SdkError>),
    Panicked(String),
    Exit(ExitStatus),
}

#[derive(Debug)]
enum Kind {
    InProcess(InProcess),
    Child(child::Child),
}

/// A plugin served in this process, and what ends all it runs when it is stopped, as a
/// process's exit would. tonic serves the connection, and hyper each call, in tasks of
/// their own that ending the serving task does not reach: a handler waiting for the drain
/// (the documented way to end a stream) ran on after the test stopped the plugin, until
/// the test's runtime ended.
#[derive(Debug)]
struct InProcess {
    task: JoinHandle<Result<(), SdkError>>,
    /// A copy of the plugin's end of its connection: shut down, the connection ends, and
    /// with it every call still running.
    conn: std::os::fd::OwnedFd,
    /// The plugin's drain: triggered, handlers listening for it end.
    drain: shutdown::Shutdown,
}

impl InProcess {
    /// Ends the plugin and everything it left running.
    fn end(&self) {
        self.drain.trigger(Duration::ZERO, "stopped by the test harness");
        self.task.abort();
        self.close();
    }

    /// Closes the plugin's connection both ways (every call on it ends).
    fn close(&self) {
        // SAFETY: shutdown on a descriptor this struct owns; it changes the socket's
        // state, not the descriptor's, and reads nothing from memory.
        unsafe { libc::shutdown(std::os::fd::AsRawFd::as_raw_fd(&self.conn), libc::SHUT_RDWR) };
    }
}

/// The plugin's task or process, its outcome once ended, and the readers of a
/// child's stdout and stderr.
#[derive(Debug)]
struct Process {
    kind: Kind,
    outcome: Option<Outcome>,
    /// The phase whose error already said how the plugin ended (its outcome moved into
    /// that error): the plugin is not waited for again (a task's handle, awaited twice,
    /// panics), and later steps say it had ended.
    reported: Option<Phase>,
    readers: Vec<JoinHandle<()>>,
}

impl Process {
    /// Waits until the plugin has ended and keeps its outcome. Cancel-safe.
    async fn ended(&mut self) -> Result<(), HarnessError> {
        if self.outcome.is_some() || self.reported.is_some() {
            return Ok(());
        }
        let outcome = match &mut self.kind {
            Kind::InProcess(served) => {
                let outcome = match (&mut served.task).await {
                    Ok(served) => Outcome::Served(served),
                    Err(e) => Outcome::Panicked(e.to_string()),
                };
                // Its calls end with it, as with a process that exits.
                served.close();
                outcome
            }
            Kind::Child(child) => Outcome::Exit(child.exited().await.map_err(HarnessError::Wait)?),
        };
        self.outcome = Some(outcome);
        Ok(())
    }

    /// Lets a child's last output arrive, for a moment.
    async fn settle_output(&mut self) {
        let readers = std::mem::take(&mut self.readers);
        let _ = tokio::time::timeout(Duration::from_millis(500), futures_util::future::join_all(readers)).await;
    }

    /// Why the plugin ended during `phase`, once it has.
    async fn died(&mut self, phase: Phase, logs: &logs::Logs) -> HarnessError {
        self.settle_output().await;
        let Some(outcome) = self.outcome.take() else {
            return match self.reported {
                // Said when an earlier step failed: it ended then.
                Some(earlier) => HarnessError::Ended { phase: earlier },
                None => HarnessError::Wait(std::io::Error::other("the plugin's end was not recorded")),
            };
        };
        self.reported = Some(phase);
        match outcome {
            Outcome::Served(Err(source)) => HarnessError::Stopped { phase, source },
            Outcome::Served(Ok(())) => HarnessError::Ended { phase },
            Outcome::Panicked(message) => HarnessError::Panicked { phase, message },
            Outcome::Exit(status) => HarnessError::Exited { phase, status, stderr: logs.stderr_tail() },
        }
    }

    /// When a call failed: the plugin's end as its cause, if it ended within 200 ms.
    async fn died_within(&mut self, phase: Phase, logs: &logs::Logs) -> Option<HarnessError> {
        match tokio::time::timeout(Duration::from_millis(200), self.ended()).await {
            Ok(Ok(())) => Some(self.died(phase, logs).await),
            Ok(Err(e)) => Some(e),
            Err(_) => None,
        }
    }

    /// SIGTERM, a second, SIGKILL; in process, the task is dropped.
    async fn force(&mut self) -> Result<Ended, HarnessError> {
        let child = match &mut self.kind {
            Kind::Child(child) => child,
            Kind::InProcess(served) => {
                served.end();
                return Ok(Ended::Killed);
            }
        };
        child.signal(libc::SIGTERM).map_err(HarnessError::Wait)?;
        if let Ok(status) = tokio::time::timeout(Duration::from_secs(1), child.exited()).await {
            return Ok(Ended::Terminated(status.map_err(HarnessError::Wait)?));
        }
        child.signal(libc::SIGKILL).map_err(HarnessError::Wait)?;
        child.exited().await.map_err(HarnessError::Wait)?;
        Ok(Ended::Killed)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // A child kills itself on drop (see child.rs); a task must be told.
        if let Kind::InProcess(served) = &self.kind {
            served.end();
        }
    }
}

/// Background tasks of one plugin under test (its connection, its host
/// service), ended with it.
#[derive(Debug, Default)]
struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}
