//! The shell the plugin stack's own layers share (record, breaker, split, size): each
//! says what it does around one call ([`Wraps::around`]); [`Wrapped`] holds it with the
//! next service and is the `tower` service between them.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::body::Body;

/// What a layer of the stack answers a call with.
pub type Answer = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

/// A layer's work around one call, given the next service.
pub trait Wraps {
    fn around<S>(&self, req: http::Request<Body>, next: &mut S) -> Answer
    where
        S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
        S::Future: Send + 'static;
}

/// A layer's work and the service after it.
#[derive(Clone, Debug)]
pub struct Wrapped<W, S> {
    wraps: W,
    inner: S,
}

impl<W, S> Wrapped<W, S> {
    pub fn new(wraps: W, inner: S) -> Self {
        Self { wraps, inner }
    }
}

impl<W: Wraps, S> tower::Service<http::Request<Body>> for Wrapped<W, S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Answer;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Answer {
        self.wraps.around(req, &mut self.inner)
    }
}
