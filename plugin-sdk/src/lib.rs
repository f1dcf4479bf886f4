//! Write a plugin for plugin-supervisor: implement your tonic service and
//! call one function.
//!
//! ```no_run
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
//! // Your tonic-generated server (`EchoServer::new(MyEcho)` in examples/echo.rs) and
//! // the descriptors of its contract (compiled in build.rs: see below).
//! let my_service = MyEcho;
//! plugin_sdk::Plugin::new("echo", env!("CARGO_PKG_VERSION"))
//!     .descriptors(ECHO_DESCRIPTORS)
//!     .service(my_service)
//!     .serve()
//! ```
//!
//! `serve` handles the rest: the handshake that declares the plugin's
//! contract, `grpc.health.v1` (its own: a plugin does not add it), logs to the supervisor with their structured
//! fields, a handler panic answered as `INTERNAL` while the process keeps
//! serving, and a graceful drain on the Shutdown call, SIGTERM or SIGINT,
//! which handlers of long streams hear through [`Plugin::shutdown_signal`].
//! Started by hand, the binary says it is a plugin and exits non-zero.
//!
//! Compile your `.proto` files in `build.rs` with
//! `plugin_proto::build::compile` (no `protoc` needed), and test the plugin in
//! a plain `#[tokio::test]` with [`testing`]: a real handshake, no supervisor.

mod blocking;
mod calls;
mod cancel;
mod deadline;
mod descriptors;
mod health_watch;
mod host;
mod io;
mod launch;
mod lifecycle;
mod logging;
mod shutdown;
pub mod testing;

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use plugin_proto::plugin::v1::plugin_lifecycle_server::PluginLifecycleServer;
use plugin_proto::transport::H2Channel;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;

pub use descriptors::DescriptorError;
pub use host::{HostChannel, HostChannelError};
pub use launch::NotSupervised;
pub use logging::FILTER_ENV;
pub use shutdown::{Drain, SIGNAL_DRAIN, ShutdownSignal};
// What a plugin crate needs beyond `prost` and `tonic`, reachable from here: the code
// `plugin_proto::build` generates names `::plugin_sdk::tonic_prost`, and a streaming
// handler wants tokio's tasks and channels and tokio-stream's wrappers.
pub use {plugin_proto, serde_json, tokio, tokio_stream, tonic, tonic_prost, tracing};

/// The version of this SDK, declared at handshake.
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Streams the supervisor may have reset before the plugin took them, at once: calls
/// given up behind a handler that blocks the plugin's thread for seconds under load.
/// Past it the plugin ends its connection, and its supervisor restarts it.
const PENDING_ACCEPT_RESETS: usize = 1 << 16;

/// Decoded header bytes a call may bring the plugin.
const MAX_HEADER_LIST: u32 = 32 << 10;

/// What a plugin's init hook receives.
#[derive(Debug, Clone)]
pub struct InitContext {
    /// The plugin's `config` table from the supervisor configuration.
    pub config: serde_json::Value,
    /// A directory the plugin may write to, when the operator gave it one.
    pub data_dir: Option<PathBuf>,
    /// This instance's id, e.g. `echo-0`.
    pub instance: String,
}

type InitHook = Box<dyn FnMut(&InitContext) -> Result<(), tonic::Status> + Send>;

/// Why a plugin stopped serving with an error.
#[derive(Debug, thiserror::Error)]
pub enum SdkError {
    #[error(transparent)]
    NotSupervised(#[from] NotSupervised),
    #[error(transparent)]
    Descriptors(#[from] DescriptorError),
    #[error("plugin i/o setup failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("host connection (fd 4) handshake failed: {0}")]
    Host(#[from] h2::Error),
    #[error("serving failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    /// A service added that the plugin cannot serve: one the SDK serves itself (the
    /// lifecycle, `grpc.health.v1.Health`), one whose name is not a protobuf full name,
    /// or one added twice.
    #[error("plugin {plugin:?} cannot serve {why}")]
    Service { plugin: String, why: String },
}

/// How long a plugin that has drained waits for its handlers' blocking jobs before it
/// exits: one about to end ends, one stuck does not hold the exit.
const BLOCKING_GRACE: Duration = Duration::from_millis(250);
/// How long a plugin that has drained waits for its last log records to reach the host.
const LOG_FLUSH: Duration = Duration::from_millis(500);
/// Of the supervisor's [`EXIT_AFTER_DRAIN`](plugin_proto::launch::EXIT_AFTER_DRAIN), what
/// the steps after a drain that ran to its deadline leave for the exit itself and the
/// Shutdown answer's way back.
const EXIT_MARGIN: Duration = Duration::from_millis(150);

/// The latest the steps after serving (the log flush, the blocking jobs' grace) may run
/// to once `shutdown` drained: within the supervisor's grace past the drain deadline. The
/// flush's 500 ms and the grace's 250 ms after a drain that ran to its deadline took the
/// plugin past it, and the supervisor sent SIGTERM to a plugin about to exit by itself.
/// A drain whose calls were done early leaves them their whole time up to that bound.
/// None when serving ended with no drain at all (an error).
fn exit_by(shutdown: &shutdown::Shutdown) -> Option<std::time::Instant> {
    let after = plugin_proto::launch::EXIT_AFTER_DRAIN.saturating_sub(EXIT_MARGIN);
    shutdown.exit_deadline().and_then(|at| at.into_std().checked_add(after))
}

/// `limit`, cut to what is left before `by`.
fn within(limit: Duration, by: Option<std::time::Instant>) -> Duration {
    by.map_or(limit, |by| limit.min(by.saturating_duration_since(std::time::Instant::now())))
}

/// A plugin under construction: its identity, contract and services.
pub struct Plugin {
    name: String,
    version: String,
    descriptor_sets: Vec<Vec<u8>>,
    services: Vec<String>,
    routes: RoutesBuilder,
    init: Option<InitHook>,
    protocol_versions: Vec<u32>,
    spin: Duration,
    health: tonic_health::server::HealthReporter,
    serving_at_start: bool,
    host: HostChannel,
    shutdown: shutdown::Shutdown,
    /// Why the first service refused by [`Plugin::service`] cannot be served: `serve`
    /// says so and serves nothing (the routes would panic on it).
    refused: Option<String>,
}

/// The plugin's `grpc.health.v1` status, which its services and hooks may change: a
/// plugin that knows it cannot serve (a dependency down, a cache not warm) says so, and
/// a supervisor does not switch calls to a new revision that says it does not serve,
/// sends a running instance that says so no calls while another replica serves, and
/// shows it in `supervisorctl status`.
#[derive(Clone, Debug)]
pub struct Health(tonic_health::server::HealthReporter);

impl Health {
    /// Whether the plugin as a whole serves (the status of the service named "").
    pub async fn set_serving(&self, serving: bool) {
        let status =
            if serving { tonic_health::ServingStatus::Serving } else { tonic_health::ServingStatus::NotServing };
        self.0.set_service_status("", status).await;
    }
}

impl Plugin {
    /// `name` must equal the name the operator gives the plugin in the
    /// supervisor's config; `version` is its semver version.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            version: version.into(),
            descriptor_sets: Vec::new(),
            services: Vec::new(),
            routes: RoutesBuilder::default(),
            init: None,
            protocol_versions: vec![plugin_proto::PROTOCOL_VERSION],
            spin: plugin_proto::spin::DEFAULT,
            health: tonic_health::server::HealthReporter::new(),
            serving_at_start: true,
            host: HostChannel::default(),
            shutdown: shutdown::Shutdown::new(),
            refused: None,
        }
    }

    /// A handle that tells handlers when the plugin begins to drain: see
    /// [`ShutdownSignal`].
    pub fn shutdown_signal(&self) -> ShutdownSignal {
        ShutdownSignal(self.shutdown.clone())
    }

    /// A handle to the plugin's health status, for its services and hooks.
    pub fn health(&self) -> Health {
        Health(self.health.clone())
    }

    /// A channel to the host, for the plugin's services to call what the host offers:
    /// an embedding host's own services, and the plugins this one's config lists in
    /// `calls` (routed, limited and authorized by the supervisor, which also tells the
    /// called plugin who calls in `x-plugin-caller`). Made while handling a call (in the
    /// handler's own task, or its answer stream: a task it spawns does not inherit this),
    /// a call on it gets no more time than that call has left. Usable once the plugin serves;
    /// before, or without a supervisor, a call fails `UNAVAILABLE`, with
    /// [`HostChannelError::NotConnected`] as the status's source.
    pub fn host_channel(&self) -> HostChannel {
        self.host.clone()
    }

    /// Starts saying NOT_SERVING, until [`Health::set_serving`] says otherwise. A reload
    /// refuses a new revision that says so when it is checked, before calls switch to it;
    /// a running instance that says so gets no calls while another replica of the plugin
    /// serves (none at all, answered UNAVAILABLE by the supervisor, when none does).
    pub fn not_serving(mut self) -> Self {
        self.serving_at_start = false;
        self
    }

    /// Adds an encoded `FileDescriptorSet` describing served services (the
    /// `descriptors.binpb` that `plugin_proto::build::compile` writes).
    pub fn descriptors(mut self, encoded: &[u8]) -> Self {
        self.descriptor_sets.push(encoded.to_vec());
        self
    }

    /// Serves a tonic-generated service (`EchoServer::new(MyEcho)`).
    pub fn service<S>(mut self, svc: S) -> Self
    where
        S: tower::Service<
                http::Request<tonic::body::Body>,
                Response = http::Response<tonic::body::Body>,
                Error = Infallible,
            > + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        // What tonic's routes would panic on (a name that is not a protobuf full name
        // may hold `{`, `*` or `:`, which the router reads as its own syntax). Any other
        // name the supervisor does not take (one of its own) it refuses at the
        // handshake, naming the cause where the operator looks.
        let sdks_own = [
            plugin_proto::plugin::v1::plugin_lifecycle_server::SERVICE_NAME,
            tonic_health::pb::health_server::SERVICE_NAME,
        ];
        let why = match plugin_proto::declared::service(S::NAME) {
            Err(e @ plugin_proto::declared::Undeclarable::NotAFullName(_)) => {
                Some(e.to_string().replacen("plugin declares ", "", 1))
            }
            _ if sdks_own.contains(&S::NAME) => Some(format!("service {:?}, which the SDK serves itself", S::NAME)),
            _ if self.services.iter().any(|s| s == S::NAME) => Some(format!("service {:?} twice", S::NAME)),
            _ => None,
        };
        match why {
            Some(why) => {
                self.refused.get_or_insert(why);
            }
            None => {
                self.services.push(S::NAME.to_owned());
                self.routes.add_service(svc);
            }
        }
        self
    }

    /// Runs once the supervisor sends the plugin its config, before any
    /// call is routed to it; an error refuses the instance with its message.
    ///
    /// It runs on the plugin's one runtime thread (tier L3 allows no other), so until it
    /// returns the plugin answers nothing. A stop or restart meanwhile cancels the start
    /// and kills the plugin at once, with no drain, and an init longer than the
    /// `handshake_timeout` fails the start. Keep it short: start slow asynchronous work
    /// (connecting out) in a spawned task and report it through [`Health`].
    pub fn on_init<F>(mut self, hook: F) -> Self
    where
        F: FnMut(&InitContext) -> Result<(), tonic::Status> + Send + 'static,
    {
        self.init = Some(Box::new(hook));
        self
    }

    /// How long the idle runtime watches for the next call before it sleeps
    /// (default 50 µs; zero turns it off). Watching saves a CPU wake-up per
    /// call under sequential load at the price of up to that much CPU per idle;
    /// it stops while its watches find nothing and starts again when calls come
    /// close together.
    pub fn spin(mut self, window: Duration) -> Self {
        self.spin = window;
        self
    }

    /// For testing the supervisor's refusals: speak other protocol versions.
    #[doc(hidden)]
    pub fn protocol_versions(mut self, versions: &[u32]) -> Self {
        self.protocol_versions = versions.to_vec();
        self
    }

    /// Serves until shut down, then exits the process: 0 after a clean
    /// drain, 1 on error or when started by hand.
    pub fn serve(self) -> ! {
        // Caught first: the supervisor starts a plugin with every signal at its default,
        // and a SIGTERM (a stop, the daemon shutting down) arriving while the runtime and
        // the host connection come up would kill the process, a crash to the supervisor,
        // instead of draining it once the runtime runs.
        let caught = match plugin_proto::signals::Signals::catch(&shutdown::DRAINING_SIGNALS) {
            Ok(caught) => caught,
            Err(e) => {
                eprintln!("{}: cannot catch SIGTERM and SIGINT: {e}", self.name);
                std::process::exit(1);
            }
        };
        let inherited = match launch::inherited(&self.name) {
            Ok(i) => i,
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        };
        // One thread: a call then crosses no thread inside the plugin, which
        // on these machines saves a cross-CPU wake-up per call.
        // fd 3 rather than the epoll: a plugin in L3 cannot read /proc.
        let rt = match plugin_proto::spin::install(
            blocking::counted(tokio::runtime::Builder::new_current_thread().enable_all()),
            Some(plugin_proto::launch::PLUGIN_FD),
            self.spin,
        )
        .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("{}: cannot start the runtime: {e}", self.name);
                std::process::exit(1);
            }
        };
        let shutdown = self.shutdown.clone();
        let code = match rt.block_on(self.run(inherited, caught)) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("plugin stopped: {e}");
                1
            }
        };
        blocking::shut_down(rt, std::time::Instant::now() + within(BLOCKING_GRACE, exit_by(&shutdown)));
        std::process::exit(code)
    }

    async fn run(self, inherited: launch::Inherited, caught: plugin_proto::signals::Caught) -> Result<(), SdkError> {
        let host = match inherited.host {
            Some(stream) => {
                stream.set_nonblocking(true)?;
                let (channel, conn) = H2Channel::handshake(tokio::net::UnixStream::from_std(stream)?).await?;
                // It carries the log stream: its own events are not forwarded on it.
                logging::carrier(tokio::spawn(conn).id());
                self.host.connect(channel.clone());
                Some(channel)
            }
            None => None,
        };
        let log = logging::install(host);
        install_panic_hook(log.is_some());
        let shutdown = self.shutdown.clone();
        shutdown::watch_signals(caught, shutdown.clone())?;
        inherited.plugin.set_nonblocking(true)?;
        let conn = tokio::net::UnixStream::from_std(inherited.plugin)?;
        let served = self.serve_on(conn, inherited.instance, shutdown.clone()).await;
        if let Some(log) = log {
            log.flush(within(LOG_FLUSH, exit_by(&shutdown))).await;
        }
        served
    }

    /// Serves the lifecycle, health and the plugin's services on `conn`
    /// until a shutdown (asked by the supervisor, or through `outside`)
    /// has drained. Touches nothing process-wide: the process's logging,
    /// panic hook and signals are [`Plugin::serve`]'s business.
    async fn serve_on(
        self,
        conn: tokio::net::UnixStream,
        instance: String,
        outside: shutdown::Shutdown,
    ) -> Result<(), SdkError> {
        // The plugin's own shutdown is the one its handlers hold (`shutdown_signal`);
        // whatever asks from outside asks it.
        let shutdown = self.shutdown.clone();
        let follow = shutdown.follow(&outside);
        if let Some(why) = self.refused {
            return Err(SdkError::Service { plugin: self.name, why });
        }
        let descriptor_set = descriptors::merge(&self.descriptor_sets, &self.services)?;
        let health = self.health.clone();
        let health_service = tonic_health::pb::health_server::HealthServer::new(health_watch::DrainingHealth {
            inner: tonic_health::server::HealthService::from_health_reporter(health.clone()),
            shutdown: shutdown.clone(),
        });
        for service in &self.services {
            health.set_service_status(service, tonic_health::ServingStatus::Serving).await;
        }
        if !self.serving_at_start {
            health.set_service_status("", tonic_health::ServingStatus::NotServing).await;
        }
        let in_flight = calls::InFlight::default();
        let lifecycle = lifecycle::Lifecycle {
            name: self.name.clone(),
            version: self.version,
            protocol_versions: self.protocol_versions,
            services: self.services.clone(),
            descriptor_set,
            init: Mutex::new(self.init),
            instance,
            shutdown: shutdown.clone(),
            in_flight: in_flight.clone(),
        };
        let mut routes = self.routes;
        routes.add_service(PluginLifecycleServer::new(lifecycle));
        routes.add_service(health_service);

        let drain_signal = {
            let shutdown = shutdown.clone();
            let services = self.services.clone();
            async move {
                shutdown.requested().await;
                for service in &services {
                    health.set_service_status(service, tonic_health::ServingStatus::NotServing).await;
                }
            }
        };
        // Streams the supervisor resets before this end takes them (their callers gave up
        // while the plugin was busy) are not an attack: the supervisor carries every
        // caller's calls on this one connection, and bounds them itself. h2's default (20)
        // ends the connection with ENHANCE_YOUR_CALM past that, which a burst of calls
        // timing out behind one slow handler reaches.
        let serve = tonic::transport::Server::builder()
            .http2_max_pending_accept_reset_streams(Some(PENDING_ACCEPT_RESETS))
            // Above the gateway's 16 KiB: the supervisor adds headers of its own (a
            // deadline, the calling plugin) to what a caller sent within that.
            .http2_max_header_list_size(MAX_HEADER_LIST)
            .layer(cancel::CancelLayer)
            .layer(calls::CallGuardLayer { in_flight: in_flight.clone() })
            .add_routes(routes.routes())
            .serve_with_incoming_shutdown(io::incoming(conn, shutdown.clone()), drain_signal);
        let deadline = shutdown.deadline_passed();
        tokio::select! {
            res = serve => res?,
            () = follow => {}
            () = deadline => {
                tracing::warn!(in_flight = in_flight.get(), "drain deadline passed; exiting with calls in flight");
            }
        }
        Ok(())
    }
}

/// Reports a panic through the plugin's logs as well as stderr; the call
/// guard then answers the call with `INTERNAL`.
/// Every panic goes to the log; with the log stream on fd 4 (`logged`), Rust's own report
/// on stderr comes at most once a second ([`PANIC_REPORT_EVERY`]), and a line saying where
/// and why in its place otherwise (a panic that ends the process may leave no log record).
/// A handler that panics on what a caller sends is caught and answered INTERNAL, and the
/// plugin serves on; but each report is a synchronous write to stderr on the plugin's one
/// thread (with a backtrace to symbolise under RUST_BACKTRACE), and the supervisor reads
/// stderr at a bounded rate: a caller making it panic in a loop stalled every call, health
/// check and drain.
fn install_panic_hook(logged: bool) {
    let default = std::panic::take_hook();
    let reports = PanicReports::default();
    std::panic::set_hook(Box::new(move |info| {
        let location = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        tracing::error!(%location, "panic: {info}");
        if !logged || reports.due(std::time::Instant::now()) {
            return default(info);
        }
        let why = plugin_proto::panics::message(info.payload()).unwrap_or("Box<dyn Any>");
        eprintln!("panic at {location}: {why} (Rust's report of it skipped: one a second)");
    }));
}

/// How often Rust's own panic report reaches stderr when the log has every panic.
const PANIC_REPORT_EVERY: Duration = Duration::from_secs(1);

/// When the last panic report was written.
#[derive(Default)]
struct PanicReports(std::sync::Mutex<Option<std::time::Instant>>);

impl PanicReports {
    /// Whether Rust's own report of a panic at `now` is written.
    fn due(&self, now: std::time::Instant) -> bool {
        // A panic while the lock is held (in this very code) must not deadlock: no report.
        let Ok(mut last) = self.0.try_lock() else { return false };
        match *last {
            Some(at) if now.saturating_duration_since(at) < PANIC_REPORT_EVERY => false,
            _ => {
                *last = Some(now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::task::{Context, Poll};

    use super::*;

    #[test]
    fn rusts_panic_report_is_due_at_most_once_a_second() {
        let reports = PanicReports::default();
        let t0 = std::time::Instant::now();
        assert!(reports.due(t0));
        assert!(!reports.due(t0 + Duration::from_millis(10)));
        assert!(!reports.due(t0 + Duration::from_millis(999)));
        assert!(reports.due(t0 + PANIC_REPORT_EVERY));
        assert!(reports.due(t0 + PANIC_REPORT_EVERY * 3));
    }

    /// A service whose calls never end, under a name the proto crate's descriptors describe:
    /// with `answer`, their answer begins (headers) and its stream never ends. `under_way`
    /// counts the handlers running.
    #[derive(Clone, Default)]
    struct Hang {
        answer: bool,
        under_way: Arc<std::sync::atomic::AtomicUsize>,
    }

    /// One handler running while it lives.
    struct UnderWay(Arc<std::sync::atomic::AtomicUsize>);

    impl UnderWay {
        fn new(count: &Arc<std::sync::atomic::AtomicUsize>) -> Self {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Self(count.clone())
        }
    }

    impl Drop for UnderWay {
        fn drop(&mut self) {
            self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    impl NamedService for Hang {
        const NAME: &'static str = "supervisor.v1.Control";
    }

    type Answer = std::pin::Pin<Box<dyn Future<Output = Result<http::Response<tonic::body::Body>, Infallible>> + Send>>;

    impl tower::Service<http::Request<tonic::body::Body>> for Hang {
        type Response = http::Response<tonic::body::Body>;
        type Error = Infallible;
        type Future = Answer;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _req: http::Request<tonic::body::Body>) -> Self::Future {
            let under_way = UnderWay::new(&self.under_way);
            if !self.answer {
                return Box::pin(async move {
                    let _under_way = under_way;
                    std::future::pending().await
                });
            }
            let frames = futures_util::stream::pending::<Result<http_body::Frame<bytes::Bytes>, tonic::Status>>();
            let body = tonic::body::Body::new(http_body_util::StreamBody::new(frames));
            Box::pin(async move {
                Ok(http::Response::builder().header("content-type", "application/grpc").body(body).unwrap())
            })
        }
    }

    /// Serves a plugin of [`Hang`] in process; its shutdown, and a channel to it.
    async fn hang(answer: bool) -> (shutdown::Shutdown, H2Channel, tokio::task::JoinHandle<Result<(), SdkError>>) {
        let plugin = Plugin::new("hang", "0.1.0")
            .descriptors(plugin_proto::FILE_DESCRIPTOR_SET)
            .service(Hang { answer, ..Hang::default() });
        let inner = plugin.shutdown.clone();
        let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
        let served = tokio::spawn(plugin.serve_on(theirs, "hang-0".into(), shutdown::Shutdown::new()));
        let (channel, conn) = H2Channel::handshake(ours).await.unwrap();
        tokio::spawn(conn);
        (inner, channel, served)
    }

    fn hanging_call(
        channel: &H2Channel,
    ) -> tokio::task::JoinHandle<
        Result<http::Response<plugin_proto::transport::ResponseBody>, plugin_proto::transport::ChannelError>,
    > {
        let req = http::Request::post("http://plugin/supervisor.v1.Control/Status")
            .header("content-type", "application/grpc")
            .body(tonic::body::Body::empty())
            .unwrap();
        tokio::spawn(tower::Service::call(&mut channel.clone(), req))
    }

    /// The harness stops a plugin served in process as a process's exit would: nothing it
    /// ran goes on. tonic and hyper run the connection and each call in tasks of their own,
    /// which ending the serving task did not reach: a call ignoring the drain ran on after
    /// the test had stopped the plugin, until the test's runtime ended.
    #[tokio::test]
    async fn a_plugin_the_harness_stopped_leaves_no_call_running() {
        let hang = Hang::default();
        let calls = hang.under_way.clone();
        let plugin = Plugin::new("held", "0.1.0").descriptors(plugin_proto::FILE_DESCRIPTOR_SET).service(hang);
        let under_test = crate::testing::Options::named("held")
            .stop_timeout(Duration::from_millis(200))
            .start(plugin)
            .await
            .unwrap();
        let _call = hanging_call(&under_test.channel());
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while calls.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            assert!(std::time::Instant::now() < until, "the call never reached its handler");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let stopped = under_test.shutdown().await.unwrap();
        assert_eq!(stopped.in_flight, Some(1), "{stopped:?}");
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while calls.load(std::sync::atomic::Ordering::SeqCst) != 0 {
            assert!(std::time::Instant::now() < until, "the call still runs 5 s after the plugin was stopped");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A call whose answer streams is in progress until its stream ends: Shutdown counts
    /// it. It used to stop counting once the handler had returned the stream.
    #[tokio::test]
    async fn shutdown_counts_a_stream_under_way_as_in_flight() {
        let (_, channel, served) = hang(true).await;
        let call = hanging_call(&channel);
        let answer = tokio::time::timeout(Duration::from_secs(5), call).await.expect("headers").unwrap().unwrap();
        assert_eq!(answer.status(), http::StatusCode::OK);
        let mut lifecycle = plugin_proto::plugin::v1::plugin_lifecycle_client::PluginLifecycleClient::new(channel);
        let req = plugin_proto::plugin::v1::ShutdownRequest { drain_deadline_ms: 100, reason: "test".into() };
        let stopped = lifecycle.shutdown(req).await.unwrap().into_inner();
        assert_eq!(stopped.in_flight, 1, "the stream under way");
        drop(answer);
        let ended = tokio::time::timeout(Duration::from_secs(5), served).await;
        assert!(matches!(ended, Ok(Ok(Ok(())))), "{ended:?}");
    }

    /// A shorter drain asked for during a longer one (a SIGTERM's 5 s during a stop's
    /// minute) ends the plugin by its own deadline: the exit used to wait for the first.
    #[tokio::test]
    async fn a_shorter_drain_asked_for_later_cuts_the_wait_short() {
        let (inner, channel, served) = hang(false).await;
        let call = hanging_call(&channel);
        tokio::time::sleep(Duration::from_millis(100)).await;
        inner.trigger(Duration::from_secs(60), "operator request");
        tokio::time::sleep(Duration::from_millis(100)).await;
        inner.trigger(Duration::from_millis(200), "signal");
        let ended = tokio::time::timeout(Duration::from_secs(5), served).await;
        assert!(matches!(ended, Ok(Ok(Ok(())))), "still draining 5 s after a 200 ms drain was asked: {ended:?}");
        call.abort();
    }

    /// [`Hang`] under a name the router would read as its own syntax.
    #[derive(Clone)]
    struct Braced(Hang);

    impl NamedService for Braced {
        const NAME: &'static str = "t.v1.{T}";
    }

    impl tower::Service<http::Request<tonic::body::Body>> for Braced {
        type Response = http::Response<tonic::body::Body>;
        type Error = Infallible;
        type Future = Answer;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            self.0.poll_ready(cx)
        }

        fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
            self.0.call(req)
        }
    }

    /// A service the SDK serves itself, one whose name is no protobuf full name, or one
    /// added twice, is refused by `serve` with its name: tonic's routes panicked on each,
    /// the plugin exiting 101.
    #[tokio::test]
    async fn a_service_of_the_sdks_own_one_misnamed_or_one_added_twice_is_refused_by_name() {
        let cases = [
            (
                Plugin::new("echo", "0.1.0").service(Braced(Hang::default())),
                "plugin \"echo\" cannot serve service \"t.v1.{T}\" which is not a protobuf full name",
            ),
            (
                Plugin::new("echo", "0.1.0").service(tonic_health::server::health_reporter().1),
                "plugin \"echo\" cannot serve service \"grpc.health.v1.Health\", which the SDK serves itself",
            ),
            (
                Plugin::new("echo", "0.1.0").service(Hang::default()).service(Hang { answer: true, ..Hang::default() }),
                "plugin \"echo\" cannot serve service \"supervisor.v1.Control\" twice",
            ),
        ];
        for (plugin, said) in cases {
            match crate::testing::start(plugin).await {
                Err(crate::testing::HarnessError::Stopped { source: e @ SdkError::Service { .. }, .. }) => {
                    assert_eq!(e.to_string(), said);
                }
                other => panic!("expected SdkError::Service, got {:?}", other.map(|_| ())),
            }
        }
    }
}
