//! The recording layer: each call's gRPC status code and duration go to a sink (the
//! plugin's metrics; a revision's outcomes, which a rollout judges). The code is read from
//! the response headers of a trailers-only answer, else from the trailers as they pass; a
//! caller that goes away first, before or after the response headers, is counted as
//! CANCELLED. Each outcome also says where its code came from ([`Source`]): the plugin, or
//! which layer of ours answered in its place.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::Frame;
use tonic::body::Body;

use super::grpc_status;
use super::wrap::{Answer, Wrapped, Wraps};
use crate::observe::metrics::PluginCalls;

/// Where a call's outcome goes.
pub trait Sink: Send + Sync + std::fmt::Debug + 'static {
    fn record(&self, code: tonic::Code, source: Source, took: Duration);
}

impl Sink for PluginCalls {
    fn record(&self, code: tonic::Code, source: Source, took: Duration) {
        PluginCalls::record(self, code, source, took);
    }
}

/// Where a call's code came from: the plugin's own answer (or its connection failing), or
/// the layer of ours that answered instead. The `source` label of `supervisor_calls_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Plugin,
    /// The deadline layer: the plugin did not answer within its `call_timeout`.
    Deadline,
    /// The deadline layer, for the caller's sake: the caller's own `grpc-timeout`, shorter
    /// than the plugin's and than a second, ran out, or the answer waited on a caller that
    /// was not taking it. Nobody's verdict on the plugin: a caller cannot open the circuit
    /// for every other caller by asking too little time or by not reading.
    Caller,
    /// The concurrency limit shed the call, or its deadline passed while it waited in the
    /// queue for a place (before the plugin saw it).
    Limit,
    /// The circuit breaker failed the call fast.
    Breaker,
    /// A message over the size limits.
    Size,
    /// Anything else the supervisor answered itself (no instance ready, ...).
    Supervisor,
}

impl Source {
    pub const ALL: [Source; 7] = [
        Source::Plugin,
        Source::Deadline,
        Source::Caller,
        Source::Limit,
        Source::Breaker,
        Source::Size,
        Source::Supervisor,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Source::Plugin => "plugin",
            Source::Deadline => "deadline",
            Source::Caller => "caller",
            Source::Limit => "limit",
            Source::Breaker => "breaker",
            Source::Size => "size",
            Source::Supervisor => "supervisor",
        }
    }

    fn from_bytes(b: &[u8]) -> Source {
        Source::ALL.into_iter().find(|s| s.as_str().as_bytes() == b).unwrap_or(Source::Plugin)
    }

    /// The outcome says how the plugin behaved: its answer, or its slowness. What a limit
    /// or the breaker of ours refused is nobody's verdict on the plugin (nor on a canary).
    pub fn is_plugins(self) -> bool {
        matches!(self, Source::Plugin | Source::Deadline)
    }

    /// Trailers that end a call as this layer decided (its status already in them): the
    /// recording layers read the source from them, and the outermost one takes it out.
    pub fn mark(self, trailers: &mut http::HeaderMap) {
        trailers.insert(SOURCE_TRAILER, http::HeaderValue::from_static(self.as_str()));
    }
}

/// The trailer a layer of ours marks its own ending of a streamed answer with; it never
/// leaves the stack (the outermost recording layer removes it). Only ever set beside a
/// status other than OK, so answers that succeed are never searched for it.
pub(super) const SOURCE_TRAILER: &str = "x-supervisor-source";

/// Set on an answer a layer of ours gave itself (trailers only), with which layer.
#[derive(Clone, Copy, Debug)]
pub struct Local(pub Source);

/// A trailers-only answer of `source` with `status`.
pub fn local(status: tonic::Status, source: Source) -> http::Response<Body> {
    let mut response = status.into_http();
    response.extensions_mut().insert(Local(source));
    response
}

#[derive(Clone, Debug)]
pub struct RecordLayer {
    pub calls: Arc<PluginCalls>,
}

impl<S> tower::Layer<S> for RecordLayer {
    type Service = Wrapped<Self, S>;

    fn layer(&self, inner: S) -> Self::Service {
        Wrapped::new(self.clone(), inner)
    }
}

impl Wraps for RecordLayer {
    fn around<S>(&self, req: http::Request<Body>, next: &mut S) -> Answer
    where
        S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
        S::Future: Send + 'static,
    {
        Box::pin(recorded(self.calls.clone(), Outermost(true), next.call(req)))
    }
}

/// Whether a recording is the stack's outermost: it takes the source marker out of the
/// trailers, so that it never reaches a caller.
#[derive(Clone, Copy, Debug)]
pub(super) struct Outermost(pub bool);

/// `response`, with its outcome recorded into `sink` once known.
pub(super) fn recorded<F>(
    sink: Arc<dyn Sink>,
    outermost: Outermost,
    response: F,
) -> impl Future<Output = Result<http::Response<Body>, Infallible>>
where
    F: Future<Output = Result<http::Response<Body>, Infallible>>,
{
    // Dropped with this future if the caller hangs up while the plugin is still working,
    // which records the call as CANCELLED; made now, not when the future is first polled,
    // so that a future dropped unpolled is recorded too (a breaker's probe would otherwise
    // hold the circuit half-open for good).
    let mut call = Call { sink, start: Instant::now(), recorded: false };
    async move {
        let response = response.await?;
        if let Some(code) = grpc_status(response.headers()) {
            let source = response.extensions().get::<Local>().map_or(Source::Plugin, |l| l.0);
            call.end(code, source);
            return Ok(response);
        }
        Ok(response.map(|inner| Body::new(RecordedBody { inner, call, outermost: outermost.0 })))
    }
}

/// A call, recorded once: with its code when it ends, as CANCELLED when it
/// is dropped unfinished.
#[derive(Debug)]
struct Call {
    sink: Arc<dyn Sink>,
    start: Instant,
    recorded: bool,
}

impl Call {
    fn end(&mut self, code: tonic::Code, source: Source) {
        if !self.recorded {
            self.recorded = true;
            self.sink.record(code, source, self.start.elapsed());
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.end(tonic::Code::Cancelled, Source::Plugin);
    }
}

/// The response body, passed through unchanged (but for the source marker, taken out by
/// the outermost recording), watching for the trailers.
struct RecordedBody {
    inner: Body,
    call: Call,
    outermost: bool,
}

impl http_body::Body for RecordedBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &mut polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_mut()
                    && let Some(code) = grpc_status(trailers)
                {
                    let marker = match code {
                        tonic::Code::Ok => None,
                        _ if self.outermost => trailers.remove(SOURCE_TRAILER),
                        _ => trailers.get(SOURCE_TRAILER).cloned(),
                    };
                    let source = marker.map_or(Source::Plugin, |v| Source::from_bytes(v.as_bytes()));
                    self.call.end(code, source);
                }
            }
            Poll::Ready(Some(Err(status))) => {
                let code = status.code();
                self.call.end(code, Source::Plugin);
            }
            // A gRPC response must end with its status.
            Poll::Ready(None) => self.call.end(tonic::Code::Unknown, Source::Plugin),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for RecordedBody {
    fn drop(&mut self) {
        // A body that ended without a status; otherwise `Call`'s own drop
        // counts the caller that stopped reading as CANCELLED.
        if http_body::Body::is_end_stream(&self.inner) {
            self.call.end(tonic::Code::Unknown, Source::Plugin);
        }
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;
    use http_body_util::BodyExt;
    use tower::util::BoxCloneSyncService;
    use tower::{Service, ServiceExt};

    use super::*;
    use crate::observe::metrics::Metrics;

    type Inner = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, Infallible>;

    fn answering(make: fn() -> http::Response<Body>) -> Inner {
        BoxCloneSyncService::new(tower::service_fn(move |_req: http::Request<Body>| async move {
            Ok::<_, Infallible>(make())
        }))
    }

    fn streamed(code: &'static str) -> http::Response<Body> {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", code.parse().unwrap());
        let frames =
            vec![Ok::<_, tonic::Status>(Frame::data(Bytes::from_static(b"\0\0\0\0\0"))), Ok(Frame::trailers(trailers))];
        let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
        http::Response::new(Body::new(body))
    }

    fn layer() -> (RecordLayer, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::default());
        (RecordLayer { calls: Arc::new(metrics.plugin_calls("echo")) }, metrics)
    }

    fn count(metrics: &Metrics, code: &str) -> bool {
        metrics
            .render(&[])
            .contains(&format!("supervisor_calls_total{{plugin=\"echo\",code=\"{code}\",source=\"plugin\"}} 1\n"))
    }

    async fn call(svc: &mut Wrapped<RecordLayer, Inner>) -> http::Response<Body> {
        svc.ready().await.unwrap().call(http::Request::new(Body::empty())).await.unwrap()
    }

    #[tokio::test]
    async fn the_code_comes_from_the_trailers_once_the_body_is_read() {
        let (layer, metrics) = layer();
        let mut svc = tower::Layer::layer(&layer, answering(|| streamed("0")));
        let response = call(&mut svc).await;
        assert!(!metrics.render(&[]).contains("supervisor_calls_total{"), "not before the trailers");
        response.into_body().collect().await.unwrap();
        assert!(count(&metrics, "OK"));
    }

    #[tokio::test]
    async fn a_trailers_only_answer_is_counted_at_once() {
        let (layer, metrics) = layer();
        let mut svc = tower::Layer::layer(&layer, answering(|| tonic::Status::unavailable("down").into_http()));
        let _response = call(&mut svc).await;
        assert!(count(&metrics, "UNAVAILABLE"));
    }

    #[tokio::test]
    async fn a_body_dropped_unread_counts_as_cancelled() {
        let (layer, metrics) = layer();
        let mut svc = tower::Layer::layer(&layer, answering(|| streamed("4")));
        drop(call(&mut svc).await);
        assert!(count(&metrics, "CANCELLED"));
        assert!(!metrics.render(&[]).contains("DEADLINE_EXCEEDED"));
    }

    #[tokio::test]
    async fn a_caller_hanging_up_before_the_answer_counts_as_cancelled() {
        let (layer, metrics) = layer();
        let never: Inner = BoxCloneSyncService::new(tower::service_fn(|_req: http::Request<Body>| {
            std::future::pending::<Result<http::Response<Body>, Infallible>>()
        }));
        let mut svc = tower::Layer::layer(&layer, never);
        let pending = svc.ready().await.unwrap().call(http::Request::new(Body::empty()));
        let timed_out = tokio::time::timeout(std::time::Duration::from_millis(20), pending).await;
        assert!(timed_out.is_err(), "the plugin never answers");
        assert!(count(&metrics, "CANCELLED"));
    }

    #[tokio::test]
    async fn a_layers_own_ending_counts_under_its_source_and_its_marker_never_leaves_the_stack() {
        let (layer, metrics) = layer();
        let mut svc = tower::Layer::layer(
            &layer,
            answering(|| {
                let mut trailers = HeaderMap::new();
                trailers.insert("grpc-status", "8".parse().unwrap());
                Source::Size.mark(&mut trailers);
                let frames = vec![Ok::<_, tonic::Status>(Frame::trailers(trailers))];
                http::Response::new(Body::new(http_body_util::StreamBody::new(futures_util::stream::iter(frames))))
            }),
        );
        let trailers = call(&mut svc).await.into_body().collect().await.unwrap().trailers().cloned().unwrap();
        assert_eq!(trailers["grpc-status"], "8");
        assert!(!trailers.contains_key(SOURCE_TRAILER), "{trailers:?}");
        let text = metrics.render(&[]);
        assert!(
            text.contains("supervisor_calls_total{plugin=\"echo\",code=\"RESOURCE_EXHAUSTED\",source=\"size\"} 1\n"),
            "{text}"
        );
        // A trailers-only answer of ours says its source in its extensions.
        let mut svc =
            tower::Layer::layer(&layer, answering(|| local(tonic::Status::unavailable("open"), Source::Breaker)));
        let _ = call(&mut svc).await;
        let text = metrics.render(&[]);
        assert!(
            text.contains("supervisor_calls_total{plugin=\"echo\",code=\"UNAVAILABLE\",source=\"breaker\"} 1\n"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_body_ending_without_a_status_is_unknown() {
        let (layer, metrics) = layer();
        let mut svc = tower::Layer::layer(&layer, answering(|| http::Response::new(Body::empty())));
        call(&mut svc).await.into_body().collect().await.unwrap();
        assert!(count(&metrics, "UNKNOWN"));
    }
}
