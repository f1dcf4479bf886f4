//! Every call into the plugin passes here: counted while in flight (for the
//! drain), and a panic inside a handler becomes an `INTERNAL` status while
//! the process keeps serving.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};

use futures_util::FutureExt;
use tonic::body::Body;

/// Counts calls in flight.
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
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-string panic payload")
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
        let guard = self.in_flight.enter();
        let method = req.uri().path().to_owned();
        let deadline = crate::deadline::of(req.headers());
        // A handler may panic while building its future, not only while it runs.
        let fut = std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(req)));
        // The handler runs inside: its calls through the host channel inherit the deadline.
        Box::pin(crate::deadline::scope(deadline, async move {
            let _guard = guard;
            let fut = match fut {
                Ok(fut) => fut,
                Err(payload) => return Ok(panic_response(&method, payload.as_ref())),
            };
            match AssertUnwindSafe(fut).catch_unwind().await {
                Ok(Ok(resp)) => Ok(resp.map(Body::new)),
                Ok(Err(e)) => Err(e),
                Err(payload) => Ok(panic_response(&method, payload.as_ref())),
            }
        }))
    }
}
