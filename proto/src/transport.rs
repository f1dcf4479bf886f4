//! One gRPC channel over one already-connected stream: the socketpair ends
//! the supervisor and its plugins talk on.
//!
//! Written on the `h2` crate rather than hyper's client or tonic's
//! `Channel`: hyper opens a stream and then pipes the request body from a
//! separate task, so HEADERS and DATA leave in two writes and the peer
//! often wakes twice per call. Here a body that is already complete (every
//! unary request) is queued with its headers and leaves in one write; a
//! streaming body is pumped with flow control as usual. tonic's `Channel`
//! also adds a `Buffer` task hop per call and assumes it can redial, which a
//! socketpair cannot.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_util::FutureExt;
use http::uri::{Authority, Scheme};
use http_body::{Body as _, Frame};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite};

/// The request body every channel carries.
pub type Body = tonic::body::Body;

/// A cloneable handle for sending gRPC requests on one HTTP/2 connection.
#[derive(Clone, Debug)]
pub struct H2Channel {
    tx: h2::client::SendRequest<Bytes>,
}

/// Why a call on a channel failed before a response arrived.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("HTTP/2: {0}")]
    H2(#[from] h2::Error),
    /// The request never left: the connection was gone, or closing, before it was sent.
    #[error("HTTP/2: not sent: {0}")]
    NotSent(h2::Error),
    #[error("request body: {0}")]
    Body(tonic::Status),
}

impl ChannelError {
    /// The peer never processed the request, by HTTP/2's own account: it was not sent,
    /// refused (REFUSED_STREAM), or above the last stream a GOAWAY let through. Such a call
    /// can be sent elsewhere without running twice.
    pub fn unprocessed(&self) -> bool {
        match self {
            ChannelError::NotSent(_) => true,
            ChannelError::H2(e) => e.reason() == Some(h2::Reason::REFUSED_STREAM) || (e.is_go_away() && e.is_remote()),
            ChannelError::Body(_) => false,
        }
    }
}

/// The future that drives the connection; spawn it. It completes when the
/// peer closes the stream or the connection fails.
pub type Connection = Pin<Box<dyn Future<Output = Result<(), h2::Error>> + Send>>;

impl H2Channel {
    /// Starts HTTP/2 on `io` (prior knowledge, no upgrade) and returns the
    /// channel and the connection future the caller must spawn.
    pub async fn handshake<IO>(io: IO) -> Result<(Self, Connection), h2::Error>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, conn) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .handshake(io)
            .await?;
        Ok((Self { tx }, Box::pin(conn)))
    }
}

/// What one stream may have received and not yet had read: the most a
/// call whose reader stalls can hold of the connection, and of memory.
/// Large enough that a call on a local socket rarely waits for a
/// WINDOW_UPDATE.
pub const STREAM_WINDOW: u32 = 256 << 10;

/// The connection's window, shared by every stream on it. Every caller of a
/// plugin instance shares its one connection, so unread responses must not
/// be able to use this up: it is 4096 stalled streams' worth (the
/// supervisor resets a stalled call by its deadline). It bounds nothing
/// else: memory is spent only on data that was sent.
pub const CONNECTION_WINDOW: u32 = 4096 * STREAM_WINDOW;

/// A body read from an HTTP/2 stream: DATA frames (their flow-control
/// window released as they are read), then trailers. Responses on a
/// channel are these, and so are requests the gateway accepts.
pub struct ResponseBody {
    recv: h2::RecvStream,
    data_done: bool,
    finished: bool,
}

impl ResponseBody {
    pub fn new(recv: h2::RecvStream) -> Self {
        Self { recv, data_done: false, finished: false }
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        if self.finished {
            return Poll::Ready(None);
        }
        if !self.data_done {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(bytes)) => {
                    let _ = self.recv.flow_control().release_capacity(bytes.len());
                    return Poll::Ready(Some(Ok(Frame::data(bytes))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => self.data_done = true,
            }
        }
        let trailers = ready!(self.recv.poll_trailers(cx));
        self.finished = true;
        match trailers {
            Ok(Some(t)) => Poll::Ready(Some(Ok(Frame::trailers(t)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.finished || self.recv.is_end_stream()
    }
}

/// Takes the body frames that are ready now, without waiting.
fn ready_frames(body: &mut Body) -> Result<(Vec<Frame<Bytes>>, bool), tonic::Status> {
    let mut frames = Vec::new();
    loop {
        match body.frame().now_or_never() {
            Some(Some(Ok(f))) => frames.push(f),
            Some(Some(Err(e))) => return Err(e),
            Some(None) => return Ok((frames, true)),
            None => return Ok((frames, false)),
        }
    }
}

/// Sends `frames`; `ended` says whether the body has nothing more.
fn send_frames(send: &mut h2::SendStream<Bytes>, frames: Vec<Frame<Bytes>>, ended: bool) -> Result<(), h2::Error> {
    let n = frames.len();
    for (i, frame) in frames.into_iter().enumerate() {
        let last = ended && i + 1 == n;
        match frame.into_data() {
            Ok(data) => send.send_data(data, last)?,
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    // Trailers end the stream whatever `ended` says.
                    return send.send_trailers(t);
                }
            }
        }
    }
    if ended && n == 0 {
        send.send_data(Bytes::new(), true)?;
    }
    Ok(())
}

/// Streams the rest of a body that was not complete at send time, waiting
/// for flow-control capacity before taking each frame.
async fn pump(mut body: Body, mut send: h2::SendStream<Bytes>) {
    loop {
        send.reserve_capacity(1);
        if send.capacity() == 0 {
            match futures_util::future::poll_fn(|cx| send.poll_capacity(cx)).await {
                Some(Ok(_)) => {}
                _ => return,
            }
        }
        let next = tokio::select! {
            f = body.frame() => f,
            _ = futures_util::future::poll_fn(|cx| send.poll_reset(cx)) => return,
        };
        let result = match next {
            Some(Ok(frame)) => {
                let ended = body.is_end_stream() || frame.is_trailers();
                send_frames(&mut send, vec![frame], ended)
            }
            None => send.send_data(Bytes::new(), true),
            Some(Err(_)) => {
                send.send_reset(h2::Reason::CANCEL);
                return;
            }
        };
        if result.is_err() || body.is_end_stream() {
            return;
        }
    }
}

impl tower::Service<http::Request<Body>> for H2Channel {
    type Response = http::Response<ResponseBody>;
    type Error = ChannelError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Stream concurrency is waited for inside the call.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let tx = self.tx.clone();
        Box::pin(async move {
            let (mut parts, mut body) = req.into_parts();
            // HTTP/2 needs :scheme and :authority; generated clients built
            // on a bare service send only a path.
            if parts.uri.scheme().is_none() {
                let mut uri = std::mem::take(&mut parts.uri).into_parts();
                uri.scheme = Some(Scheme::HTTP);
                uri.authority = Some(Authority::from_static("plugin"));
                parts.uri = http::Uri::from_parts(uri).unwrap_or_default();
            }
            let (frames, ended) = ready_frames(&mut body).map_err(ChannelError::Body)?;
            let mut tx = tx.ready().await.map_err(ChannelError::NotSent)?;
            let eos = ended && frames.is_empty();
            let (response, mut send) =
                tx.send_request(http::Request::from_parts(parts, ()), eos).map_err(ChannelError::NotSent)?;
            if !eos {
                send_frames(&mut send, frames, ended)?;
                if !ended {
                    tokio::spawn(pump(body, send));
                }
            }
            let response = response.await?;
            Ok(response.map(ResponseBody::new))
        })
    }
}
