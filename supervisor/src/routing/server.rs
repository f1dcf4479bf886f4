//! The gateway's HTTP/2 server on `gateway.sock`, on the h2 crate rather
//! than hyper so that each answer is paced by its own caller: what a caller
//! does not take waits in a bounded per-call buffer (and then in the
//! plugin's stream window, never its connection's), and a call whose caller
//! still has not taken its answer at the deadline is reset on both sides.
//! hyper stops looking at a response while the caller's window is shut, so
//! it could do neither. Connections are bounded as `[supervisor.gateway]`
//! says ([`super::conns`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::poll_fn;
use http_body::Body as _;
use http_body_util::BodyExt;
use plugin_proto::transport::{ResponseBody, STREAM_WINDOW};
use tokio::net::UnixListener;
use tokio::time::Instant;
use tonic::body::Body;
use tower::Service;

use super::authority::Repair;
use super::conns::{CallGuard, Conn, Conns};
use super::deadline::Expires;
use super::gateway::Gateway;
use crate::config::gateway::GatewaySection;

/// What a caller has not taken yet, per call, before the plugin's stream is
/// left unread: one stream window, so a stalled call holds at most twice
/// that.
const CALL_BUFFER: usize = STREAM_WINDOW as usize;
/// What one caller's connection may have sent and the gateway not yet
/// forwarded, across its calls: only that caller waits when it is used up.
const CALLER_CONNECTION_WINDOW: u32 = 16 * STREAM_WINDOW;
/// How long an idle connection closed by the gateway has to take its GOAWAY.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Decoded header bytes a request may carry (hyper's default too).
const MAX_HEADER_LIST: u32 = 16 << 10;

/// Accepts host applications on `listener` until the task is dropped.
pub async fn serve(listener: UnixListener, gateway: Gateway, limits: GatewaySection) {
    let limit = connection_budget(&limits);
    let conns = Conns::new(limit);
    let limits = Arc::new(limits);
    loop {
        match listener.accept().await {
            Ok((stream, _)) => match conns.admit() {
                Ok(conn) => {
                    tokio::spawn(connection(stream, gateway.clone(), conn, limits.clone()));
                    if conns.full() {
                        // Let the connection just evicted close its socket before the next
                        // accept: in a flood, accepts would otherwise run ahead of the
                        // closes and eat into the descriptor reserve.
                        tokio::task::yield_now().await;
                    }
                }
                Err(refused) => {
                    tracing::debug!(?refused, limit, "gateway connection refused: every connection has a call open");
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "gateway accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// `max_connections`, or fewer when the descriptor limit less the reserve
/// cannot hold that many.
fn connection_budget(limits: &GatewaySection) -> usize {
    let nofile =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft);
    let room = usize::try_from(nofile.saturating_sub(limits.fd_reserve)).unwrap_or(usize::MAX);
    if room < limits.max_connections {
        tracing::warn!(
            nofile,
            fd_reserve = limits.fd_reserve,
            max_connections = limits.max_connections,
            connections = room,
            "the descriptor limit less fd_reserve leaves the gateway fewer connections than max_connections"
        );
    }
    room.min(limits.max_connections)
}

/// Serves one connection until it ends, is idle too long, or is evicted.
async fn connection(io: tokio::net::UnixStream, gateway: Gateway, conn: Conn, limits: Arc<GatewaySection>) {
    let handshake = h2::server::Builder::new()
        .max_concurrent_streams(limits.max_concurrent_streams)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CALLER_CONNECTION_WINDOW)
        .max_header_list_size(MAX_HEADER_LIST)
        .handshake::<_, Bytes>(Repair::new(io));
    let mut h2 = tokio::select! {
        shaken = tokio::time::timeout(limits.preface_timeout, handshake) => match shaken {
            Ok(Ok(h2)) => h2,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "gateway connection failed its HTTP/2 handshake");
                return;
            }
            Err(_) => {
                tracing::debug!(timeout = ?limits.preface_timeout, "gateway connection sent no HTTP/2 preface in time");
                return;
            }
        },
        () = conn.evicted() => return,
    };
    let idle_check = tokio::time::sleep(limits.idle_timeout);
    tokio::pin!(idle_check);
    loop {
        tokio::select! {
            next = h2.accept() => match next {
                Some(Ok((req, respond))) => {
                    tokio::spawn(call(req, respond, gateway.clone(), conn.call()));
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "gateway connection failed");
                    return;
                }
                None => return,
            },
            () = conn.evicted() => {
                tracing::debug!("gateway connection closed to make room for a new one");
                return;
            }
            () = &mut idle_check => {
                let now = Instant::now();
                match conn.idle_since() {
                    Some(since) if now >= since + limits.idle_timeout => break,
                    Some(since) => idle_check.as_mut().reset(since + limits.idle_timeout),
                    None => idle_check.as_mut().reset(now + limits.idle_timeout),
                }
            }
        }
    }
    tracing::debug!(idle_timeout = ?limits.idle_timeout, "closing an idle gateway connection");
    h2.graceful_shutdown();
    let _ = tokio::time::timeout(CLOSE_GRACE, poll_fn(|cx| h2.poll_closed(cx))).await;
}

/// One call: routed, then its answer piped to the caller.
async fn call(
    req: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    mut gateway: Gateway,
    _open: CallGuard,
) {
    let req = req.map(|recv| Body::new(ResponseBody::new(recv)));
    let response = tokio::select! {
        routed = gateway.call(req) => match routed {
            Ok(response) => response,
            Err(never) => match never {},
        },
        // The caller gave up first: dropping the call resets the plugin's stream.
        _ = poll_fn(|cx| respond.poll_reset(cx)) => return,
    };
    pipe(respond, response).await;
}

/// How the answer ends once its data is out.
enum Tail {
    Trailers(http::HeaderMap),
    End,
}

/// What the plugin has answered and the caller not yet taken.
#[derive(Default)]
struct Untaken {
    queue: VecDeque<Bytes>,
    bytes: usize,
    tail: Option<Tail>,
    big: Option<BigCall>,
}

impl Untaken {
    /// Whether to read more of the answer: not past its end, nor more than
    /// [`CALL_BUFFER`] ahead of the caller.
    fn wants_more(&self) -> bool {
        self.tail.is_none() && self.bytes < CALL_BUFFER
    }

    fn take(&mut self, frame: Option<Result<http_body::Frame<Bytes>, tonic::Status>>) {
        match frame {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    self.bytes += data.len();
                    self.queue.push_back(data);
                    if self.bytes >= CALL_BUFFER / 2 && self.big.is_none() {
                        self.big = Some(BigCall::new());
                    }
                }
                Err(frame) => self.tail = Some(frame.into_trailers().map_or(Tail::End, Tail::Trailers)),
            },
            Some(Err(status)) => {
                let mut trailers = http::HeaderMap::new();
                let _ = status.add_header(&mut trailers);
                self.tail = Some(Tail::Trailers(trailers));
            }
            None => self.tail = Some(Tail::End),
        }
    }

    /// Sends what the caller's window takes now; true once all is sent.
    fn send(&mut self, send: &mut h2::SendStream<Bytes>) -> Result<bool, h2::Error> {
        while let Some(front) = self.queue.front_mut() {
            send.reserve_capacity(self.bytes);
            let room = send.capacity();
            if room == 0 {
                return Ok(false);
            }
            let chunk =
                if front.len() <= room { self.queue.pop_front().unwrap_or_default() } else { front.split_to(room) };
            self.bytes -= chunk.len();
            let last = self.queue.is_empty() && matches!(self.tail, Some(Tail::End));
            send.send_data(chunk, last)?;
            if last {
                return Ok(true);
            }
        }
        match self.tail.take() {
            Some(Tail::Trailers(t)) => send.send_trailers(t).map(|()| true),
            Some(Tail::End) => send.send_data(Bytes::new(), true).map(|()| true),
            None => Ok(false),
        }
    }
}

/// Sends the answer as the caller's window allows, reading ahead of it by
/// at most [`CALL_BUFFER`]; resets the call when its deadline passes with
/// data still untaken.
async fn pipe(mut respond: h2::server::SendResponse<Bytes>, response: http::Response<Body>) {
    let (parts, mut body) = response.into_parts();
    let expires = parts.extensions.get::<Expires>().map(|e| e.0);
    let mut untaken = Untaken::default();
    // What the plugin has already sent leaves with the headers, in one
    // write when the caller's window allows (a unary answer, typically).
    while untaken.wants_more() && !body.is_end_stream() {
        match body.frame().now_or_never() {
            Some(frame) => untaken.take(frame),
            None => break,
        }
    }
    let ended = body.is_end_stream() && untaken.queue.is_empty() && untaken.tail.is_none();
    let Ok(mut send) = respond.send_response(http::Response::from_parts(parts, ()), ended) else { return };
    if ended {
        return;
    }
    let mut expired = false;
    let expiry = tokio::time::sleep_until(expires.unwrap_or_else(far_future));
    tokio::pin!(expiry);
    loop {
        match untaken.send(&mut send) {
            Ok(true) | Err(_) => return,
            Ok(false) => {}
        }
        if expired && !untaken.queue.is_empty() {
            // Past the deadline with an answer the caller has not taken.
            send.send_reset(h2::Reason::CANCEL);
            return;
        }
        let read = untaken.wants_more();
        tokio::select! {
            frame = body.frame(), if read => untaken.take(frame),
            // More window, or the caller reset the stream (then dropping
            // the body resets the plugin's).
            more = caller(&mut send, !untaken.queue.is_empty()) => {
                if !more {
                    return;
                }
            }
            // The deadline: with nothing untaken, the body itself ends as
            // DEADLINE_EXCEEDED on its next poll; otherwise reset, above.
            () = &mut expiry, if !expired => expired = true,
        }
    }
}

/// Calls that have buffered much for a slow caller, in flight. When the
/// last one ends, the allocator is asked to give back what they used:
/// glibc keeps large freed buffers in its arenas, and the daemon's RSS
/// would stay at the peak a stalled caller pushed it to.
static BIG_CALLS: AtomicUsize = AtomicUsize::new(0);

struct BigCall;

impl BigCall {
    fn new() -> Self {
        BIG_CALLS.fetch_add(1, Ordering::Relaxed);
        Self
    }
}

impl Drop for BigCall {
    fn drop(&mut self) {
        if BIG_CALLS.fetch_sub(1, Ordering::Relaxed) == 1 {
            super::conns::trim_heap();
        }
    }
}

/// Resolves with true when the caller's window has grown (watched only if
/// `waiting`), with false when the caller has reset the stream.
async fn caller(send: &mut h2::SendStream<Bytes>, waiting: bool) -> bool {
    poll_fn(|cx| {
        if send.poll_reset(cx).is_ready() {
            return Poll::Ready(false);
        }
        if !waiting {
            return Poll::Pending;
        }
        send.poll_capacity(cx).map(|more| matches!(more, Some(Ok(_))))
    })
    .await
}

fn far_future() -> Instant {
    Instant::now() + crate::config::units::MAX_DURATION
}
