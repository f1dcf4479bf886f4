//! Every call into the plugin passes here: counted while in flight (for the
//! drain), and a panic inside a handler, or in the stream of its answer, becomes
//! an `INTERNAL` status while the process keeps serving.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};

use futures_util::FutureExt;
use tonic::body::Body;

/// The paths of `grpc.health.v1.Health`, whose calls are not counted in flight.
const HEALTH: &str = "/grpc.health.v1.Health/";

/// Counts calls in flight, from their arrival until their answer's end.
#[derive(Clone, Debug, Default)]
pub struct InFlight(Arc<AtomicU32>);

impl InFlight {
    pub fn get(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }

    fn enter(&self) -> InFlightGuard {
        self.0.fetch_add(1, Ordering::Relaxed);
        InFlightGuard(self.0.clone())
    }
}

struct InFlightGuard(Arc<AtomicU32>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Wraps the plugin's services with [`CallGuard`].
#[derive(Clone, Debug)]
pub struct CallGuardLayer {
    pub in_flight: InFlight,
}

impl<S> tower::Layer<S> for CallGuardLayer {
    type Service = CallGuard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallGuard { inner, in_flight: self.in_flight.clone() }
    }
}

#[derive(Clone, Debug)]
pub struct CallGuard<S> {
    inner: S,
    in_flight: InFlight,
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    plugin_proto::panics::message(payload).unwrap_or("non-string panic payload")
}

fn panic_response(method: &str, payload: &(dyn Any + Send)) -> http::Response<Body> {
    let msg = panic_message(payload);
    tracing::error!(method, panic = msg, "handler panicked; answering INTERNAL and serving on");
    tonic::Status::internal(format!("plugin handler for {method} panicked: {msg}")).into_http()
}

impl<S, B, RB> tower::Service<http::Request<B>> for CallGuard<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    RB: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    RB::Error: Into<tonic::codegen::StdError>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = req.uri().path().to_owned();
        // The supervisor's health watch stands open as long as the plugin serves, and the
        // drain ends it: it is no call the drain waits for.
        let guard = (!method.starts_with(HEALTH)).then(|| self.in_flight.enter());
        let deadline = crate::deadline::of(req.headers());
        // A handler may panic while building its future, not only while it runs.
        let fut = std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(req)));
        // The handler runs inside: its calls through the host channel inherit the deadline.
        Box::pin(crate::deadline::scope(deadline, async move {
            let fut = match fut {
                Ok(fut) => fut,
                Err(payload) => return Ok(panic_response(&method, payload.as_ref())),
            };
            match AssertUnwindSafe(fut).catch_unwind().await {
                // Counted until its answer's stream ends, not once the handler returned it:
                // a stream under way is a call in progress.
                Ok(Ok(resp)) => Ok(resp.map(|body| {
                    Body::new(Guarded { inner: Body::new(body), method, done: false, deadline, _in_flight: guard })
                })),
                Ok(Err(e)) => Err(e),
                Err(payload) => Ok(panic_response(&method, payload.as_ref())),
            }
        }))
    }
}

/// An answer's body, whose stream a panic may end too (a stream's `poll_next` is the
/// author's code): the caller then gets INTERNAL naming the method, as for a panic in the
/// handler, instead of a reset stream it would take for CANCELLED.
struct Guarded {
    inner: Body,
    method: String,
    done: bool,
    /// The call's deadline, under which the stream is polled as the handler ran.
    deadline: Option<std::time::Instant>,
    /// The call's place in [`InFlight`], given back when the answer is dropped (sent, or
    /// given up by the caller).
    _in_flight: Option<InFlightGuard>,
}

impl http_body::Body for Guarded {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, tonic::Status>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        let inner = &mut this.inner;
        let polled = crate::deadline::sync_scope(this.deadline, || {
            std::panic::catch_unwind(AssertUnwindSafe(|| Pin::new(inner).poll_frame(cx)))
        });
        match polled {
            Ok(polled) => polled,
            Err(payload) => {
                this.done = true;
                this.inner = Body::empty();
                let msg = panic_message(payload.as_ref());
                tracing::error!(method = this.method, panic = msg, "answer stream panicked; ending it INTERNAL");
                let status = tonic::Status::internal(format!("plugin handler for {} panicked: {msg}", this.method));
                let mut trailers = http::HeaderMap::new();
                if status.add_header(&mut trailers).is_err() {
                    // Only a message that cannot be a header fails; the code alone still can.
                    let _ = tonic::Status::internal("").add_header(&mut trailers);
                }
                Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    /// A server-streaming answer whose stream panics after its first message ends with
    /// INTERNAL naming the method, after what it sent.
    #[tokio::test]
    async fn a_panic_in_an_answer_stream_ends_it_internal() {
        let service = tower::service_fn(|_req: http::Request<Body>| {
            let frames = futures_util::stream::iter(0..2).map(|i| {
                assert!(i == 0, "the second message");
                Ok::<_, tonic::Status>(http_body::Frame::data(bytes::Bytes::from_static(b"first")))
            });
            async move { Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::StreamBody::new(frames))) }
        });
        let guard = CallGuardLayer { in_flight: InFlight::default() };
        let req = http::Request::builder().uri("/t.v1.T/Watch").body(Body::empty()).unwrap();
        let resp = tower::Layer::layer(&guard, service).oneshot(req).await.unwrap();
        let answer = resp.into_body().collect().await.unwrap();
        let trailers = answer.trailers().cloned().expect("trailers");
        assert_eq!(answer.to_bytes(), "first");
        let status = tonic::Status::from_header_map(&trailers).expect("a status");
        assert_eq!(status.code(), tonic::Code::Internal);
        assert_eq!(status.message(), "plugin handler for /t.v1.T/Watch panicked: the second message");
    }

    /// An answer stream is polled under its call's deadline, as its handler ran: the host
    /// calls a server stream makes get no more time than the call has left. They got none
    /// (the stream is polled after the handler returned, outside its scope).
    #[tokio::test]
    async fn an_answer_stream_runs_under_its_calls_deadline() {
        let service = tower::service_fn(|_req: http::Request<Body>| {
            let frames = futures_util::stream::iter(0..1).map(|_| {
                let left = crate::deadline::left().map_or(0, |d| d.as_millis());
                Ok::<_, tonic::Status>(http_body::Frame::data(bytes::Bytes::from(left.to_string())))
            });
            async move { Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::StreamBody::new(frames))) }
        });
        let guard = CallGuardLayer { in_flight: InFlight::default() };
        let req =
            http::Request::builder().uri("/t.v1.T/Watch").header("grpc-timeout", "5S").body(Body::empty()).unwrap();
        let resp = tower::Layer::layer(&guard, service).oneshot(req).await.unwrap();
        let answer = resp.into_body().collect().await.unwrap().to_bytes();
        let left: u128 = std::str::from_utf8(&answer).unwrap().parse().unwrap();
        assert!((4_000..=5_000).contains(&left), "{left} ms left of 5 s");
    }
}
