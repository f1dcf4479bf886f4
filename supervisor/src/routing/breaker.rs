//! The circuit breaker: after `failures` consecutive calls the plugin failed
//! (`UNAVAILABLE`, `INTERNAL`, `UNKNOWN`, `DEADLINE_EXCEEDED`, `DATA_LOSS`, from the plugin
//! or its deadline), calls fail fast with UNAVAILABLE for a backoff; then one probe call
//! goes through (half-open) and its outcome closes the circuit or opens it again for a
//! doubled backoff. linkerd's consecutive-failures accrual, with its defaults.
//!
//! A probe is decided by its status; one whose answer began and is still running
//! [`PROBE_STREAM_GRACE`] later is a stream the plugin is serving, and that decides it
//! (success): otherwise a long stream as the probe would hold the circuit half-open, every
//! other call failing fast, for as long as it ran.
//!
//! One breaker per plugin, owned by the [`Plugin`](crate::instance::Plugin): the gateway and
//! every embedded channel share it. A closed circuit costs a call one atomic load on the
//! way in and, on the way out, one load (a success after a success writes nothing).

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tonic::body::Body;

use super::discovery::Board;
use super::outcomes::plugin_failed;
use super::record::{Outermost, Sink, Source, local, recorded};
use super::wrap::{Answer, Wrapped, Wraps};
use crate::config::protection::BreakerConfig;
use crate::instance::Plugin;
use crate::observe::events::{EventBus, EventKind};

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

/// The circuit's state, as `status` and `supervisor_circuit_state` show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitState {
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half-open",
        }
    }

    /// The value of `supervisor_circuit_state`.
    pub fn gauge(self) -> i64 {
        match self {
            CircuitState::Closed => 0,
            CircuitState::Open => 1,
            CircuitState::HalfOpen => 2,
        }
    }
}

#[derive(Debug)]
pub struct Breaker {
    plugin: String,
    epoch: Instant,
    state: AtomicU8,
    /// Consecutive failures while closed.
    failures: AtomicU32,
    /// Consecutive openings without a successful probe: the backoff's exponent.
    opens: AtomicU32,
    /// When it last opened, in Unix milliseconds (for people).
    opened_unix_ms: AtomicU64,
    /// When the next probe may go, in milliseconds since `epoch`.
    probe_at_ms: AtomicU64,
    opened_total: AtomicU64,
    /// Where its openings and closings go: events, and the gateway's health board,
    /// whose `Watch` streams then answer at once.
    reports: OnceLock<(Arc<EventBus>, Arc<Board>)>,
}

/// What the breaker says of a call about to go.
#[derive(Debug)]
pub enum Verdict {
    Pass,
    /// The one call that decides a half-open circuit.
    Probe,
    /// Fail fast, with this message.
    Reject(String),
}

/// What a call's end says of the plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Success,
    Failure,
    /// Nothing: the caller cancelled, or a layer of ours answered.
    Neither,
}

impl Breaker {
    pub fn new(plugin: &str) -> Self {
        Self {
            plugin: plugin.to_owned(),
            epoch: Instant::now(),
            state: AtomicU8::new(CLOSED),
            failures: AtomicU32::new(0),
            opens: AtomicU32::new(0),
            opened_unix_ms: AtomicU64::new(0),
            probe_at_ms: AtomicU64::new(0),
            opened_total: AtomicU64::new(0),
            reports: OnceLock::new(),
        }
    }

    /// Its openings and closings are events on `events`, and changes of health on
    /// `health`, from now on.
    pub(crate) fn report_to(&self, events: &Arc<EventBus>, health: &Arc<Board>) {
        let _ = self.reports.set((events.clone(), health.clone()));
    }

    pub fn is_closed(&self) -> bool {
        self.state.load(Ordering::Acquire) == CLOSED
    }

    pub fn state(&self) -> CircuitState {
        match self.state.load(Ordering::Acquire) {
            CLOSED => CircuitState::Closed,
            OPEN => CircuitState::Open,
            _ => CircuitState::HalfOpen,
        }
    }

    /// Times it opened (a failed probe opening it again included).
    pub fn opened_total(&self) -> u64 {
        self.opened_total.load(Ordering::Relaxed)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// How it stands, for people: "closed", "open since ..., next probe in ...",
    /// "half-open: a probe call decides".
    pub fn describe(&self) -> String {
        match self.state() {
            CircuitState::Closed => "closed".into(),
            CircuitState::Open => {
                let since = UNIX_EPOCH + Duration::from_millis(self.opened_unix_ms.load(Ordering::Relaxed));
                let wait = self.probe_at_ms.load(Ordering::Relaxed).saturating_sub(self.now_ms());
                format!(
                    "open since {}, next probe in {}",
                    humantime::format_rfc3339_millis(since),
                    humantime::format_duration(Duration::from_millis(wait))
                )
            }
            CircuitState::HalfOpen => "half-open: a probe call decides".into(),
        }
    }

    /// Whether a call may go now.
    pub fn check(&self, cfg: &BreakerConfig) -> Verdict {
        match self.state.load(Ordering::Acquire) {
            CLOSED => Verdict::Pass,
            // Turned off (`failures = 0`) while open: calls go again.
            _ if cfg.failures == 0 => {
                self.close();
                Verdict::Pass
            }
            OPEN if self.now_ms() >= self.probe_at_ms.load(Ordering::Acquire)
                && self.state.compare_exchange(OPEN, HALF_OPEN, Ordering::AcqRel, Ordering::Acquire).is_ok() =>
            {
                Verdict::Probe
            }
            _ => Verdict::Reject(format!("plugin {:?}: circuit {}", self.plugin, self.describe())),
        }
    }

    /// A call (`probe`: the probe) ended so.
    fn record(&self, cfg: &BreakerConfig, probe: bool, outcome: Outcome) {
        if cfg.failures == 0 {
            return;
        }
        if probe {
            match outcome {
                Outcome::Success => self.close(),
                Outcome::Failure => self.open(cfg, "its probe call failed"),
                // No verdict: the next call probes.
                Outcome::Neither => {
                    self.probe_at_ms.store(0, Ordering::Release);
                    self.state.store(OPEN, Ordering::Release);
                }
            }
            return;
        }
        match outcome {
            Outcome::Success => {
                if self.failures.load(Ordering::Relaxed) != 0 {
                    self.failures.store(0, Ordering::Relaxed);
                }
            }
            Outcome::Failure => {
                let n = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
                // Through HALF_OPEN, which admits no call: OPEN is published only once its
                // probe time is, or a call in between would probe at once (the old time).
                if n >= cfg.failures
                    && self.state.compare_exchange(CLOSED, HALF_OPEN, Ordering::AcqRel, Ordering::Acquire).is_ok()
                {
                    self.open(cfg, &format!("{n} consecutive failures"));
                }
            }
            Outcome::Neither => {}
        }
    }

    fn open(&self, cfg: &BreakerConfig, why: &str) {
        let opens = self.opens.fetch_add(1, Ordering::AcqRel);
        let backoff = backoff(cfg, opens, rand::random::<f64>());
        self.opened_unix_ms.store(
            SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0)),
            Ordering::Relaxed,
        );
        let probe_at = self.now_ms().saturating_add(u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX));
        self.probe_at_ms.store(probe_at, Ordering::Release);
        self.state.store(OPEN, Ordering::Release);
        self.opened_total.fetch_add(1, Ordering::Relaxed);
        let backoff =
            humantime::format_duration(Duration::from_millis(u64::try_from(backoff.as_millis()).unwrap_or(0)));
        let message = format!("circuit opened after {why}: calls fail fast for {backoff}, then one probe decides");
        self.emit(EventKind::CircuitOpened, message, &[("backoff", backoff.to_string())]);
    }

    fn close(&self) {
        self.failures.store(0, Ordering::Relaxed);
        self.opens.store(0, Ordering::Relaxed);
        if self.state.swap(CLOSED, Ordering::AcqRel) != CLOSED {
            self.emit(EventKind::CircuitClosed, "circuit closed: its probe call succeeded".into(), &[]);
        }
    }

    fn emit(&self, kind: EventKind, message: String, fields: &[(&str, String)]) {
        match self.reports.get() {
            Some((events, health)) => {
                events.emit(&self.plugin, "", kind, message, fields);
                health.bump();
            }
            None => tracing::info!(plugin = %self.plugin, kind = kind.as_str(), "{message}"),
        }
    }
}

/// The backoff after `opens` openings in a row: `min_backoff` doubled each time, at most
/// `max_backoff`, spread over ±`jitter` of itself by `unit` (in [0, 1)).
fn backoff(cfg: &BreakerConfig, opens: u32, unit: f64) -> Duration {
    let base = cfg.min_backoff.saturating_mul(1u32 << opens.min(20)).min(cfg.max_backoff);
    base.mul_f64((1.0 + cfg.jitter * (2.0 * unit - 1.0)).max(0.0))
}

/// How long a probe whose answer has begun may run before its running decides it.
pub const PROBE_STREAM_GRACE: Duration = Duration::from_secs(1);

fn outcome(code: tonic::Code, source: Source) -> Outcome {
    match code {
        _ if !source.is_plugins() || code == tonic::Code::Cancelled => Outcome::Neither,
        code if plugin_failed(code) => Outcome::Failure,
        _ => Outcome::Success,
    }
}

/// Records what the calls it let through came to.
#[derive(Debug)]
struct BreakerSink {
    plugin: Arc<Plugin>,
}

impl Sink for BreakerSink {
    fn record(&self, code: tonic::Code, source: Source, _took: Duration) {
        self.plugin.breaker.record(&self.plugin.spec().protection.breaker, false, outcome(code, source));
    }
}

/// Records the probe's outcome, unless the probe was decided before it ended (then it
/// counts as any call).
#[derive(Debug)]
struct ProbeSink {
    plugin: Arc<Plugin>,
    decided: AtomicBool,
}

impl ProbeSink {
    /// The probe's verdict, once: the first of its end and its grace running out.
    fn decide(&self, outcome: Outcome) -> bool {
        if self.decided.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.plugin.breaker.record(&self.plugin.spec().protection.breaker, true, outcome);
        true
    }
}

impl Sink for ProbeSink {
    fn record(&self, code: tonic::Code, source: Source, _took: Duration) {
        let outcome = outcome(code, source);
        if !self.decide(outcome) {
            // Decided while it ran: its end counts as any call's.
            self.plugin.breaker.record(&self.plugin.spec().protection.breaker, false, outcome);
        }
    }
}

#[derive(Clone, Debug)]
pub struct BreakerLayer {
    pub plugin: Arc<Plugin>,
}

impl<S> tower::Layer<S> for BreakerLayer {
    type Service = Wrapped<Guard, S>;

    fn layer(&self, inner: S) -> Self::Service {
        // The sink of passed calls is made once per stack: a call only clones it.
        let pass = Arc::new(BreakerSink { plugin: self.plugin.clone() });
        Wrapped::new(Guard { plugin: self.plugin.clone(), pass }, inner)
    }
}

/// The circuit's check around each call of one stack.
#[derive(Clone, Debug)]
pub struct Guard {
    plugin: Arc<Plugin>,
    pass: Arc<BreakerSink>,
}

impl Wraps for Guard {
    fn around<S>(&self, req: http::Request<Body>, next: &mut S) -> Answer
    where
        S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
        S::Future: Send + 'static,
    {
        match self.plugin.breaker.check(&self.plugin.spec().protection.breaker) {
            Verdict::Pass => Box::pin(recorded(self.pass.clone(), Outermost(false), next.call(req))),
            Verdict::Probe => {
                let probe = Arc::new(ProbeSink { plugin: self.plugin.clone(), decided: AtomicBool::new(false) });
                let answer = recorded(probe.clone(), Outermost(false), next.call(req));
                Box::pin(async move {
                    let resp = answer.await?;
                    if super::grpc_status(resp.headers()).is_none() {
                        // The answer began; still running after the grace, the plugin is
                        // serving it. The timer holds the sink alone, for the grace at most.
                        tokio::spawn(async move {
                            tokio::time::sleep(PROBE_STREAM_GRACE).await;
                            probe.decide(Outcome::Success);
                        });
                    }
                    Ok(resp)
                })
            }
            Verdict::Reject(msg) => {
                let refused = local(tonic::Status::unavailable(msg), Source::Breaker);
                Box::pin(std::future::ready(Ok(refused)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;
    use tower::{Service, ServiceExt};

    use super::*;

    fn plugin(keys: &str) -> Arc<Plugin> {
        let config: crate::config::Config = format!(
            "[supervisor.sandbox]\nallow_unsandboxed = true\n[[plugin]]\nname = \"p\"\nbinary = \"/bin/true\"\ntier = \"none\"\n[plugin.breaker]\n{keys}"
        )
        .parse()
        .unwrap();
        Arc::new(Plugin::new(config.specs().remove(0), 10))
    }

    /// A plugin that answers every call with the code `answer` holds now, in trailers after
    /// one message; counts the calls that reach it.
    fn plugin_answering(
        answer: Arc<AtomicU8>,
        reached: Arc<AtomicU32>,
    ) -> tower::util::BoxCloneSyncService<http::Request<Body>, http::Response<Body>, Infallible> {
        tower::util::BoxCloneSyncService::new(tower::service_fn(move |_req: http::Request<Body>| {
            reached.fetch_add(1, Ordering::SeqCst);
            let code = answer.load(Ordering::SeqCst);
            async move {
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", code.to_string().parse().unwrap());
                let frames = vec![
                    Ok::<_, tonic::Status>(http_body::Frame::data(bytes::Bytes::from_static(b"\0\0\0\0\0"))),
                    Ok(http_body::Frame::trailers(trailers)),
                ];
                Ok(http::Response::new(Body::new(http_body_util::StreamBody::new(futures_util::stream::iter(frames)))))
            }
        }))
    }

    async fn call(
        svc: &mut Wrapped<
            Guard,
            impl Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible, Future: Send + 'static>,
        >,
    ) -> (String, String) {
        let resp = svc.ready().await.unwrap().call(http::Request::new(Body::empty())).await.unwrap();
        if let Some(code) = resp.headers().get("grpc-status") {
            let msg = tonic::Status::from_header_map(resp.headers()).unwrap().message().to_owned();
            return (code.to_str().unwrap().to_owned(), msg);
        }
        let trailers = resp.into_body().collect().await.unwrap().trailers().cloned().unwrap();
        (trailers["grpc-status"].to_str().unwrap().to_owned(), String::new())
    }

    #[tokio::test]
    async fn failures_in_a_row_open_the_circuit_a_probe_closes_it_or_opens_it_again() {
        let p = plugin("failures = 3\nmin_backoff = \"500ms\"\nmax_backoff = \"5s\"\njitter = 0\n");
        let (answer, reached) = (Arc::new(AtomicU8::new(13)), Arc::new(AtomicU32::new(0)));
        let mut svc =
            tower::Layer::layer(&BreakerLayer { plugin: p.clone() }, plugin_answering(answer.clone(), reached.clone()));
        // Two failures, a success: the count starts again.
        for _ in 0..2 {
            assert_eq!(call(&mut svc).await.0, "13");
        }
        answer.store(0, Ordering::SeqCst);
        assert_eq!(call(&mut svc).await.0, "0");
        answer.store(14, Ordering::SeqCst);
        for _ in 0..2 {
            assert_eq!(call(&mut svc).await.0, "14");
        }
        assert!(p.circuit_closed(), "not yet three in a row");
        // An answer that is not a failure of the plugin's (NOT_FOUND) is no failure either.
        answer.store(5, Ordering::SeqCst);
        assert_eq!(call(&mut svc).await.0, "5");
        answer.store(14, Ordering::SeqCst);
        for _ in 0..3 {
            assert_eq!(call(&mut svc).await.0, "14");
        }
        assert!(!p.circuit_closed());
        assert_eq!(p.breaker.state(), CircuitState::Open);
        assert_eq!(p.breaker.opened_total(), 1);
        // Open: calls fail fast, never reaching the plugin.
        let before = reached.load(Ordering::SeqCst);
        let (code, msg) = call(&mut svc).await;
        assert_eq!(code, "14");
        assert!(msg.starts_with("plugin \"p\": circuit open since 20"), "{msg}");
        assert!(msg.contains(", next probe in "), "{msg}");
        assert_eq!(reached.load(Ordering::SeqCst), before, "failed fast");
        // After the backoff one probe goes; it fails: open again, for twice as long. (A
        // late wake-up only ever adds; the "still open" look below has 450 ms of margin.)
        tokio::time::sleep(Duration::from_millis(550)).await;
        assert_eq!(call(&mut svc).await.0, "14");
        assert_eq!(reached.load(Ordering::SeqCst), before + 1, "the probe reached the plugin");
        assert_eq!(p.breaker.state(), CircuitState::Open);
        assert_eq!(p.breaker.opened_total(), 2);
        tokio::time::sleep(Duration::from_millis(550)).await;
        call(&mut svc).await;
        assert_eq!(reached.load(Ordering::SeqCst), before + 1, "the second backoff is 1 s");
        // The plugin recovers: the next probe succeeds and closes the circuit.
        answer.store(0, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(call(&mut svc).await.0, "0");
        assert!(p.circuit_closed());
        assert_eq!(call(&mut svc).await.0, "0");
        assert_eq!(reached.load(Ordering::SeqCst), before + 3);
    }

    #[tokio::test]
    async fn while_the_probe_is_out_other_calls_fail_fast_and_a_probe_without_verdict_lets_the_next_call_probe() {
        let p = plugin("failures = 1\nmin_backoff = \"10ms\"\njitter = 0\n");
        let cfg = p.spec().protection.breaker;
        p.breaker.record(&cfg, false, Outcome::Failure);
        assert_eq!(p.breaker.state(), CircuitState::Open);
        tokio::time::sleep(Duration::from_millis(15)).await;
        assert!(matches!(p.breaker.check(&cfg), Verdict::Probe));
        let Verdict::Reject(msg) = p.breaker.check(&cfg) else { panic!("a second call while the probe is out") };
        assert_eq!(msg, "plugin \"p\": circuit half-open: a probe call decides");
        // The probe's caller hung up: no verdict, and the next call is the probe.
        p.breaker.record(&cfg, true, Outcome::Neither);
        assert!(matches!(p.breaker.check(&cfg), Verdict::Probe));
        p.breaker.record(&cfg, true, Outcome::Success);
        assert!(p.circuit_closed());
    }

    /// An embedding host may drop a call's future before polling it: the probe it was
    /// then has no verdict, and the next call probes (the circuit was half-open for good).
    #[tokio::test]
    async fn a_probe_dropped_before_it_ran_lets_the_next_call_probe() {
        let p = plugin("failures = 1\nmin_backoff = \"10ms\"\njitter = 0\n");
        let (answer, reached) = (Arc::new(AtomicU8::new(14)), Arc::new(AtomicU32::new(0)));
        let mut svc =
            tower::Layer::layer(&BreakerLayer { plugin: p.clone() }, plugin_answering(answer.clone(), reached.clone()));
        assert_eq!(call(&mut svc).await.0, "14");
        assert_eq!(p.breaker.state(), CircuitState::Open);
        tokio::time::sleep(Duration::from_millis(15)).await;
        let unpolled = svc.ready().await.unwrap().call(http::Request::new(Body::empty()));
        drop(unpolled);
        answer.store(0, Ordering::SeqCst);
        assert_eq!(call(&mut svc).await, ("0".to_owned(), String::new()), "the next call was the probe");
        assert!(p.circuit_closed());
    }

    #[tokio::test]
    async fn a_stream_as_the_probe_decides_it_once_it_has_run_its_grace_not_when_it_ends() {
        let p = plugin("failures = 1\nmin_backoff = \"10ms\"\njitter = 0\n");
        let cfg = p.spec().protection.breaker;
        // The plugin answers with headers and a stream that runs on (nothing more yet).
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<http_body::Frame<bytes::Bytes>, tonic::Status>>(1);
        let rx = std::sync::Mutex::new(Some(rx));
        let streaming = tower::service_fn(move |_req: http::Request<Body>| {
            let rx = rx.lock().unwrap().take().expect("one call");
            let body = http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
            async move { Ok::<_, Infallible>(http::Response::new(Body::new(body))) }
        });
        let mut svc = tower::Layer::layer(&BreakerLayer { plugin: p.clone() }, streaming);
        p.breaker.record(&cfg, false, Outcome::Failure);
        tokio::time::sleep(Duration::from_millis(15)).await;
        let stream = svc.ready().await.unwrap().call(http::Request::new(Body::empty())).await.unwrap();
        assert_eq!(p.breaker.state(), CircuitState::HalfOpen, "the probe is out");
        tokio::time::sleep(PROBE_STREAM_GRACE / 2).await;
        assert_eq!(p.breaker.state(), CircuitState::HalfOpen, "within its grace, its status may still decide");
        let deadline = Instant::now() + PROBE_STREAM_GRACE * 3;
        while !p.circuit_closed() {
            assert!(Instant::now() < deadline, "a stream running past its grace closes the circuit");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Its end, a failure, counts as any call's: one of `failures` in a row.
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("14"));
        tx.send(Ok(http_body::Frame::trailers(trailers))).await.unwrap();
        drop(tx);
        let _ = stream.into_body().collect().await;
        assert_eq!(p.breaker.state(), CircuitState::Open, "failures = 1: the stream's failure opens it again");
    }

    #[test]
    fn the_backoff_doubles_up_to_its_cap_within_its_jitter() {
        let cfg = BreakerConfig::default();
        assert_eq!(backoff(&cfg, 0, 0.5), Duration::from_secs(1));
        assert_eq!(backoff(&cfg, 3, 0.5), Duration::from_secs(8));
        assert_eq!(backoff(&cfg, 30, 0.5), Duration::from_secs(60));
        assert_eq!(backoff(&cfg, 0, 0.0), Duration::from_millis(500));
        assert!(backoff(&cfg, 0, 0.999) < Duration::from_millis(1500));
    }
}
