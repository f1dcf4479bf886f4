//! One gRPC channel over one already-connected stream: the socketpair ends
//! the supervisor and its plugins talk on.
//!
//! tonic's `Channel` reconnects through a `Buffer` worker task, which costs a
//! task hop per call and assumes it can dial again; a socketpair cannot be
//! redialled, so both sides use hyper's HTTP/2 connection directly.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::uri::{Authority, Scheme};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};

/// The request body every channel carries.
pub type Body = tonic::body::Body;

/// A cloneable handle for sending gRPC requests on one HTTP/2 connection.
#[derive(Clone, Debug)]
pub struct H2Channel {
    tx: hyper::client::conn::http2::SendRequest<Body>,
}

/// The future that drives the connection; spawn it, and it completes when the
/// peer closes the stream or the connection fails.
pub type Connection = Pin<Box<dyn Future<Output = Result<(), hyper::Error>> + Send>>;

impl H2Channel {
    /// Starts HTTP/2 on `io` (prior knowledge, no upgrade) and returns the
    /// channel and the connection future the caller must spawn.
    pub async fn handshake<IO>(io: IO) -> Result<(Self, Connection), hyper::Error>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            // Calls on a local socket are small and frequent: a larger
            // window avoids WINDOW_UPDATE round trips on bigger payloads.
            .initial_stream_window_size(1 << 20)
            .initial_connection_window_size(4 << 20)
            .handshake(TokioIo::new(io))
            .await?;
        Ok((Self { tx }, Box::pin(conn)))
    }

    /// True once the connection is gone; no request can succeed after that.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

impl tower::Service<http::Request<Body>> for H2Channel {
    type Response = http::Response<Incoming>;
    type Error = hyper::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.tx.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        // HTTP/2 needs :scheme and :authority; generated clients built on a
        // bare service send only a path.
        if req.uri().scheme().is_none() {
            let mut parts = req.uri().clone().into_parts();
            parts.scheme = Some(Scheme::HTTP);
            parts.authority = Some(Authority::from_static("plugin"));
            if let Ok(uri) = http::Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
        Box::pin(self.tx.send_request(req))
    }
}
