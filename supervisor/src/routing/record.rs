//! The recording layer: each call's gRPC status code and duration go to a sink (the
//! plugin's metrics; a revision's outcomes, which a rollout judges). The code is read from
//! the response headers of a trailers-only answer, else from the trailers as they pass; a
//! caller that goes away first, before or after the response headers, is counted as
//! CANCELLED.

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
use crate::observe::metrics::PluginCalls;

/// Where a call's outcome goes.
pub trait Sink: Send + Sync + std::fmt::Debug + 'static {
    fn record(&self, code: tonic::Code, took: Duration);
}

impl Sink for PluginCalls {
    fn record(&self, code: tonic::Code, took: Duration) {
        PluginCalls::record(self, code, took);
    }
}

/// Set on an answer the supervisor gave itself (no instance ready, ...): it says nothing
/// of how a revision behaves, so a revision's outcomes leave it out.
#[derive(Clone, Copy, Debug)]
pub struct Local;

#[derive(Clone, Debug)]
pub struct RecordLayer {
    pub calls: Arc<PluginCalls>,
}

impl<S> tower::Layer<S> for RecordLayer {
    type Service = Record<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Record { inner, calls: self.calls.clone() }
    }
}

#[derive(Clone, Debug)]
pub struct Record<S> {
    inner: S,
    calls: Arc<PluginCalls>,
}

impl<S> tower::Service<http::Request<Body>> for Record<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        Box::pin(recorded(self.calls.clone(), false, self.inner.call(req)))
    }
}

/// `response`, with its outcome recorded into `sink` once known; `skip_local` leaves out
/// the supervisor's own answers (marked [`Local`]).
pub(super) async fn recorded<F>(
    sink: Arc<dyn Sink>,
    skip_local: bool,
    response: F,
) -> Result<http::Response<Body>, Infallible>
where
    F: Future<Output = Result<http::Response<Body>, Infallible>>,
{
    // Dropped with this future if the caller hangs up while the plugin
    // is still working, which records the call as CANCELLED.
    let mut call = Call { sink, start: Instant::now(), recorded: false };
    let response = response.await?;
    if skip_local && response.extensions().get::<Local>().is_some() {
        call.recorded = true;
        return Ok(response);
    }
    if let Some(code) = grpc_status(response.headers()) {
        call.end(code);
        return Ok(response);
    }
    Ok(response.map(|inner| Body::new(RecordedBody { inner, call })))
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
    fn end(&mut self, code: tonic::Code) {
        if !self.recorded {
            self.recorded = true;
            self.sink.record(code, self.start.elapsed());
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.end(tonic::Code::Cancelled);
    }
}

/// The response body, passed through unchanged, watching for the trailers.
struct RecordedBody {
    inner: Body,
    call: Call,
}

impl http_body::Body for RecordedBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(grpc_status) {
                    self.call.end(code);
                }
            }
            Poll::Ready(Some(Err(status))) => {
                let code = status.code();
                self.call.end(code);
            }
            // A gRPC response must end with its status.
            Poll::Ready(None) => self.call.end(tonic::Code::Unknown),
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
            self.call.end(tonic::Code::Unknown);
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
        metrics.render(&[]).contains(&format!("supervisor_calls_total{{plugin=\"echo\",code=\"{code}\"}} 1\n"))
    }

    async fn call(svc: &mut Record<Inner>) -> http::Response<Body> {
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
    async fn a_body_ending_without_a_status_is_unknown() {
        let (layer, metrics) = layer();
        let mut svc = tower::Layer::layer(&layer, answering(|| http::Response::new(Body::empty())));
        call(&mut svc).await.into_body().collect().await.unwrap();
        assert!(count(&metrics, "UNKNOWN"));
    }
}
