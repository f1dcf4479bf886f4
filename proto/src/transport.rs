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
            // Callers end calls in crowds (a deadline, a caller's connection
            // closing, calls reset past the gateway's stall budget), and the
            // plugin's answers to them are often still on their way. h2
            // remembers only 50 streams it reset; frames for one it forgot
            // cost a RST_STREAM back, and after 1024 of those it closes the
            // connection: every call of the plugin would fail for what some
            // callers did. So it remembers every stream that can have data
            // in flight, and never counts those resets against the plugin
            // (our own child: its misbehaviour costs it alone).
            .max_concurrent_reset_streams(RESETS_REMEMBERED)
            .max_local_error_reset_streams(None)
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

/// The connection's window, shared by every stream on it: what a plugin
/// may have sent and the supervisor not yet read, so also the memory a
/// plugin can make it hold. Every caller of a plugin instance shares its
/// one connection, so unread answers must not be able to use this up: it
/// is 1024 streams' worth, and the gateway lets at most half that many
/// calls stall behind callers that do not read (`max_stalled_calls`),
/// resetting the others as soon as they fall behind.
pub const CONNECTION_WINDOW: u32 = 1024 * STREAM_WINDOW;

/// Streams a channel remembers having reset, for a second, so that what
/// the plugin had already sent on them is dropped quietly: a crowd's
/// worth. Past it, each frame for a forgotten stream costs a RST_STREAM
/// back, no more.
const RESETS_REMEMBERED: usize = 4096;

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

/// Streams the rest of a body that was not complete at send time. Each
/// frame is sent once the stream has room for it, or for [`MIN_DATA_FRAME`]
/// of it, so the body is read at most a frame ahead of the peer and h2
/// never sends a sliver of it first: h2 sends whatever window a stream was
/// given, and a stream that asked for one byte while the connection's
/// window was shut (many calls at once) sends a 1-byte DATA frame per
/// frame. A peer on h2 (plugins' servers are) counts small DATA frames it
/// holds and closes the connection past a budget (`ENHANCE_YOUR_CALM`,
/// "too_many_data_frames"): every call of the plugin would fail.
async fn pump(mut body: Body, mut send: h2::SendStream<Bytes>) {
    loop {
        let next = tokio::select! {
            f = body.frame() => f,
            _ = futures_util::future::poll_fn(|cx| send.poll_reset(cx)) => return,
        };
        let result = match next {
            Some(Ok(frame)) => {
                let ended = body.is_end_stream() || frame.is_trailers();
                if let Some(data) = frame.data_ref()
                    && !room_for(&mut send, data.len()).await
                {
                    return;
                }
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

/// The least of a frame a stream waits to have room for before it is
/// sent: well above the 256 bytes under which h2 counts a DATA frame as
/// overhead, well below any stream window a plugin's server opens.
const MIN_DATA_FRAME: usize = 1024;

/// Waits until `send` has room for `len` bytes, or [`MIN_DATA_FRAME`] of
/// them; false when the stream has gone.
async fn room_for(send: &mut h2::SendStream<Bytes>, len: usize) -> bool {
    let least = len.min(MIN_DATA_FRAME);
    send.reserve_capacity(len);
    while send.capacity() < least {
        match futures_util::future::poll_fn(|cx| send.poll_capacity(cx)).await {
            Some(Ok(_)) => {}
            _ => return false,
        }
    }
    true
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tower::Service;

    use super::*;

    /// A request body whose one 16 KiB message comes only after the call
    /// has started, as a streaming caller's does.
    fn late_body(ready: tokio::sync::watch::Receiver<bool>) -> Body {
        let stream = futures_util::stream::once(async move {
            let mut ready = ready;
            let _ = ready.wait_for(|r| *r).await;
            Ok::<_, tonic::Status>(Frame::data(Bytes::from(vec![7u8; 16 << 10])))
        });
        Body::new(http_body_util::StreamBody::new(stream))
    }

    /// One HTTP/2 frame.
    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len().to_be_bytes();
        let mut f = vec![len[5], len[6], len[7], kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[tokio::test]
    async fn a_crowd_of_calls_ended_while_the_plugin_still_answers_them_keeps_its_connection() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        const CALLS: u32 = 2000;
        let (client_io, server_io) = tokio::io::duplex(16 << 20);
        let (mut from_client, mut to_client) = tokio::io::split(server_io);
        // A plugin by hand: it answers every call, and sends data on each
        // after the supervisor has ended them all, as a plugin does whose
        // answers were on their way.
        tokio::spawn(async move {
            let mut sink = vec![0u8; 1 << 16];
            while from_client.read(&mut sink).await.is_ok_and(|n| n > 0) {}
        });
        to_client.write_all(&frame(0x4, 0, 0, &[])).await.unwrap();
        let (channel, conn) = H2Channel::handshake(client_io).await.unwrap();
        let conn = tokio::spawn(conn);
        let mut calls = Vec::new();
        for _ in 0..CALLS {
            let mut ch = channel.clone();
            let req = http::Request::post("/t.T/M").body(Body::empty()).unwrap();
            calls.push(tokio::spawn(async move { ch.call(req).await }));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let streams = (0..CALLS).map(|i| 2 * i + 1);
        let mut answers = Vec::new();
        for id in streams.clone() {
            // :status 200
            answers.extend(frame(0x1, 0x4, id, &[0x88]));
        }
        to_client.write_all(&answers).await.unwrap();
        for c in calls {
            drop(c.await.unwrap().expect("answered"));
        }
        let mut late = Vec::new();
        for id in streams {
            late.extend(frame(0x0, 0, id, b"late data"));
        }
        to_client.write_all(&late).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!conn.is_finished(), "the connection was closed: {:?}", conn.await);
        // And it still carries calls.
        let mut ch = channel.clone();
        let next =
            tokio::spawn(async move { ch.call(http::Request::post("/t.T/M").body(Body::empty()).unwrap()).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        to_client.write_all(&frame(0x1, 0x5, 2 * CALLS + 1, &[0x88])).await.unwrap();
        let status = tokio::time::timeout(Duration::from_secs(2), next).await.expect("no answer").unwrap();
        assert_eq!(status.map(|r| r.status()).map_err(|e| e.to_string()), Ok(http::StatusCode::OK));
    }

    #[tokio::test]
    async fn many_calls_at_once_on_a_shut_window_send_no_slivers_the_peer_would_close_the_connection_for() {
        const CALLS: usize = 200;
        let (client_io, server_io) = tokio::io::duplex(1 << 20);
        // A server on h2 with a small connection window, as a busy plugin's
        // is: h2 allows it about 128 small DATA frames unread.
        let server = tokio::spawn(async move {
            let mut conn = h2::server::Builder::new()
                .initial_connection_window_size(65_535)
                .handshake::<_, Bytes>(server_io)
                .await
                .unwrap();
            let mut bodies = Vec::new();
            // Takes every call before reading any body, then reads them all.
            while bodies.len() < CALLS {
                match conn.accept().await {
                    Some(Ok((req, respond))) => bodies.push((req.into_body(), respond)),
                    Some(Err(e)) => return Err(e),
                    None => return Ok(0),
                }
            }
            let readers: Vec<_> = bodies
                .into_iter()
                .map(|(mut body, mut respond)| {
                    tokio::spawn(async move {
                        let mut read = 0;
                        while let Some(Ok(data)) = body.data().await {
                            read += data.len();
                            let _ = body.flow_control().release_capacity(data.len());
                        }
                        let _ = respond.send_response(http::Response::new(()), true);
                        read
                    })
                })
                .collect();
            let reader = async move {
                let mut read = 0;
                for r in readers {
                    read += r.await.unwrap_or(0);
                }
                read
            };
            tokio::pin!(reader);
            let read = tokio::select! {
                read = &mut reader => read,
                closed = futures_util::future::poll_fn(|cx| conn.poll_closed(cx)) => return closed.map(|()| 0),
            };
            // The answers still have to leave.
            tokio::spawn(async move { futures_util::future::poll_fn(|cx| conn.poll_closed(cx)).await });
            Ok(read)
        });
        let (channel, conn) = H2Channel::handshake(client_io).await.unwrap();
        let conn = tokio::spawn(conn);
        let (go, ready) = tokio::sync::watch::channel(false);
        let mut calls = Vec::new();
        for _ in 0..CALLS {
            let mut ch = channel.clone();
            let req = http::Request::post("/t.T/M").body(late_body(ready.clone())).unwrap();
            calls.push(tokio::spawn(async move { ch.call(req).await.map(|r| r.status()) }));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        go.send(true).unwrap();
        let read = tokio::time::timeout(Duration::from_secs(10), server).await.expect("server hung").unwrap();
        assert_eq!(read.map_err(|e| e.to_string()), Ok(CALLS * (16 << 10)), "the server closed the connection");
        for c in calls {
            assert_eq!(c.await.unwrap().unwrap(), http::StatusCode::OK);
        }
        conn.abort();
    }
}
