//! The gateway's HTTP/2 server on `gateway.sock`, on the h2 crate rather
//! than hyper so that each answer is paced by its own caller: what a caller
//! does not take waits in a bounded per-call buffer (and then in the
//! plugin's stream window, never its connection's), and a call whose caller
//! still has not taken its answer at the deadline is reset on both sides.
//! hyper stops looking at a response while the caller's window is shut, so
//! it could do neither. Calls stalled behind callers that do not read are
//! bounded across the gateway ([`super::stalls`]), connections as
//! `[supervisor.gateway]` says ([`super::conns`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
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
use super::callers::Peer;
use super::conns::{CallGuard, Conn, Conns, TooFewDescriptors, connection_budget};
use super::deadline::Expires;
use super::gateway::Gateway;
use super::quiet::Quiet;
use super::stalls::{ByCaller, StallBudget, Stalled};
use super::trim::BigCall;
use crate::config::gateway::GatewaySection;

/// What a caller has not taken yet, per call, before the plugin's stream is
/// left unread: one stream window, so a stalled call holds at most twice
/// that.
const CALL_BUFFER: usize = STREAM_WINDOW as usize;
/// What one caller's connection may have sent and the gateway not yet
/// forwarded, across its calls: only that caller waits when it is used up.
const CALLER_CONNECTION_WINDOW: u32 = 16 * STREAM_WINDOW;
/// What h2 itself may hold of one answer, written but not yet taken by the peer's
/// socket. Past this the rest waits in the call's own buffer, where the stall budget and
/// the deadline see it; at h2's default (400 KiB) a caller granting large windows and
/// then reading nothing had any answer up to that size taken off the call, which then
/// ended and freed its place, its bytes held by h2 until the connection closed.
const SEND_BUFFER: usize = 64 << 10;
/// How long a connection closed for idleness has, after its GOAWAY, to
/// send the calls it had on their way, and to take the final GOAWAY.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// How long a closing connection's last frames may take to leave: only a
/// peer that does not read its socket makes them wait.
const LAST_WORDS: Duration = Duration::from_millis(100);
/// Decoded header bytes a request may carry (hyper's default too).
const MAX_HEADER_LIST: u32 = 16 << 10;
/// How long a stalled answer without a deadline of its own keeps its place while its
/// caller takes none of it.
pub(super) const UNDEADLINED_STALL: Duration = Duration::from_secs(30);
/// How often calls reset for stalling past the budget are reported.
static STALL_RESETS: Quiet = Quiet::new(Duration::from_secs(10));
/// Chunks of an answer smaller than this, coming one after another while the caller
/// takes none, are copied together rather than queued each: [`CALL_BUFFER`] counts
/// payload bytes, and a plugin answering a byte a frame would otherwise queue a quarter
/// of a million entries a call, each keeping alive the read buffer it was cut from. A
/// chunk queued as it came carries at least this much payload for the read buffer it
/// keeps alive.
const SMALL_CHUNK: usize = 4 << 10;
/// The most chunks copied together hold: one HTTP/2 frame's worth (the default maximum
/// frame size), so what is queued is at least this less a small chunk an entry.
const MERGED_CHUNK: usize = 16 << 10;

/// `[supervisor.gateway]` as the daemon's descriptor limit allows it.
pub struct Limits {
    section: GatewaySection,
    connections: usize,
}

impl Limits {
    /// Checks the section against the daemon's descriptor limit: its hard
    /// one, which the daemon raises its soft one to when it starts.
    pub fn new(section: GatewaySection) -> Result<Self, TooFewDescriptors> {
        let nofile = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map_or(1024, |(soft, hard)| soft.max(hard));
        let connections = connection_budget(&section, nofile)?;
        Ok(Self { section, connections })
    }
}

/// What every connection and call of the gateway shares.
struct Shared {
    limits: GatewaySection,
    stalls: ByCaller,
}

/// Accepts host applications on `listener` until the task is dropped.
pub async fn serve(listener: UnixListener, gateway: Gateway, limits: Limits) {
    let conns = Conns::new(limits.connections);
    let shared = Arc::new(Shared { stalls: ByCaller::new(gateway.stalls()), limits: limits.section });
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let conn = conns.admit();
                tokio::spawn(connection(stream, gateway.clone(), conn, shared.clone()));
                if conns.full() {
                    // Let the connection just evicted say GOAWAY and close its
                    // socket before the next accept: in a flood, accepts would
                    // otherwise run ahead of the closes and eat into the
                    // descriptor reserve.
                    tokio::task::yield_now().await;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "gateway accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

type Server = h2::server::Connection<Repair<plugin_proto::socket::QuietStream>, Bytes>;

/// Serves one connection until it ends, is idle too long, or is evicted.
async fn connection(io: tokio::net::UnixStream, gateway: Gateway, conn: Conn, shared: Arc<Shared>) {
    let limits = &shared.limits;
    // Who connected, once: each call carries it for the `callers` check. A peer the
    // kernel cannot name may call nothing, so it is not served at all.
    let peer = match Peer::of(&io) {
        Ok(peer) => peer,
        Err(e) => {
            tracing::warn!(error = %e, "gateway connection refused: its peer credentials cannot be read");
            return;
        }
    };
    // Registered for reading only: the caller taking an answer does not wake the daemon
    // for room it does not need (`plugin_proto::socket` says when that pays).
    let io = match plugin_proto::socket::QuietStream::from_tokio(io) {
        Ok(io) => io,
        Err(e) => {
            tracing::warn!(error = %e, "gateway connection refused: its socket cannot be registered");
            return;
        }
    };
    let stalls = shared.stalls.share(peer.uid);
    let handshake = answering()
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
    // Idle for `idle_timeout`, the connection is told GOAWAY (graceful: the
    // calls it had on their way are still served); once idle again for
    // CLOSE_GRACE, it is closed.
    let mut closing = false;
    let mut pace = Pace::default();
    let idle_check = tokio::time::sleep(limits.idle_timeout);
    tokio::pin!(idle_check);
    loop {
        tokio::select! {
            next = pace.accept(&mut h2) => match next {
                Some(Ok((mut req, respond))) => {
                    req.extensions_mut().insert(peer.clone());
                    tokio::spawn(call(req, respond, gateway.clone(), conn.call(), stalls.clone()));
                    pace.accepted().await;
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "gateway connection failed");
                    return;
                }
                // Closed, after a graceful GOAWAY once its calls were done.
                None => return,
            },
            () = conn.evicted() => {
                tracing::debug!("gateway connection closed to make room for a new one");
                go_away_now(&mut h2).await;
                return;
            }
            () = &mut idle_check => {
                let now = Instant::now();
                let wait = if closing { CLOSE_GRACE } else { limits.idle_timeout };
                match conn.idle_since() {
                    Some(since) if now >= since + wait => {
                        if closing {
                            go_away_now(&mut h2).await;
                            return;
                        }
                        tracing::debug!(idle_timeout = ?limits.idle_timeout, "closing an idle gateway connection");
                        h2.graceful_shutdown();
                        closing = true;
                        idle_check.as_mut().reset(now + CLOSE_GRACE);
                    }
                    Some(since) => idle_check.as_mut().reset(since + wait),
                    None => idle_check.as_mut().reset(now + wait),
                }
            }
        }
    }
}

/// Calls taken from one burst a connection sent before the calls taken run.
const BURST_TURN: u32 = 4;

/// Takes a connection's calls a few at a time. A caller's burst of calls arrives in one
/// read; taken all at once, every call of it would reach the plugin in one write only
/// after the last was routed, the plugin would answer them all in one write too, and so
/// on down the line: the burst would cross the daemon, the plugin and the caller as one
/// convoy, one process at a time, leaving the other CPU idle. Letting the calls taken so
/// far run every [`BURST_TURN`] calls sends them on to the plugin while the rest of the
/// burst is still being taken, so the plugin works beside the daemon. Measured in
/// `bench --only gateway` (16 callers, one connection), runs alternating: 41,000-49,000
/// calls/s with turns of 4 against 20,000-24,000 taking the burst whole (0.97-1.24x
/// go-plugin's against 0.59-0.74x), CPU per call 38-45 µs against 46-53; turns of 2 or 3
/// gave 34,000-45,000, of 6 or 8, 36,000-43,000, and a turn after every call, with a
/// write per call, 23,700-26,800 at 71-74 µs a call.
#[derive(Default)]
struct Pace {
    /// Calls taken since the connection last had none waiting, or since the last turn.
    taken: u32,
}

impl Pace {
    /// The connection's next call (or its end), noting whether it had to be waited for.
    async fn accept(
        &mut self,
        h2: &mut h2::server::Connection<impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin, Bytes>,
    ) -> Option<Result<(http::Request<h2::RecvStream>, h2::server::SendResponse<Bytes>), h2::Error>> {
        poll_fn(|cx| {
            let next = h2.poll_accept(cx);
            if next.is_pending() {
                // The burst is over: the calls taken have run by the time this is polled again.
                self.taken = 0;
            }
            next
        })
        .await
    }

    /// After a call was taken and its task spawned: every [`BURST_TURN`] calls of a
    /// burst, the calls' tasks run before the next is taken.
    async fn accepted(&mut self) {
        self.taken += 1;
        if self.taken >= BURST_TURN {
            self.taken = 0;
            tokio::task::yield_now().await;
        }
    }
}

/// Says GOAWAY at once, naming the last call the connection took, and
/// closes it once that is out. Calls that arrived but were not taken are
/// refused first (REFUSED_STREAM), so the caller knows exactly which calls
/// ran and may retry the others (RFC 9113, 8.7) instead of seeing a reset
/// socket with a call in doubt.
async fn go_away_now(h2: &mut Server) {
    // Each accept also writes out what is queued, the refusals included.
    while let Some(Some(Ok((_, mut respond)))) = h2.accept().now_or_never() {
        respond.send_reset(h2::Reason::REFUSED_STREAM);
    }
    h2.abrupt_shutdown(h2::Reason::NO_ERROR);
    let _ = tokio::time::timeout(LAST_WORDS, poll_fn(|cx| h2.poll_closed(cx))).await;
}

/// One call: routed, then its answer piped to the caller.
async fn call(
    req: http::Request<h2::RecvStream>,
    respond: h2::server::SendResponse<Bytes>,
    gateway: Gateway,
    _open: CallGuard,
    stalls: Arc<StallBudget>,
) {
    route_and_pipe(req, respond, gateway, &stalls).await;
}

/// `req` answered by `svc`, and the answer piped to the caller as its window allows.
async fn route_and_pipe<S>(
    req: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    mut svc: S,
    stalls: &Arc<StallBudget>,
) where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = std::convert::Infallible>,
{
    let req = req.map(|recv| Body::new(ResponseBody::new(recv)));
    let response = tokio::select! {
        routed = svc.call(req) => match routed {
            Ok(response) => response,
            Err(never) => match never {},
        },
        // The caller gave up first: dropping the call resets the plugin's stream.
        _ = poll_fn(|cx| respond.poll_reset(cx)) => return,
    };
    pipe(respond, response, stalls).await;
}

/// Serves one instance's host connection (its fd 4) with `svc` until it closes, at most
/// `max_streams` streams at once. Each answer, to a log stream or to a call out, is piped
/// as a gateway call's is: a plugin that does not read the answers to its calls out
/// holds at most a buffer per call, and the plugins it called are let go at the call's
/// deadline, whether or not it reads (hyper would wait on its window for ever).
pub(crate) async fn serve_host<S>(io: tokio::net::UnixStream, svc: S, max_streams: u32, stalls: Arc<StallBudget>)
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    // No preface timeout: a plugin need never speak on fd 4, and the task ends with it.
    let handshake = super::buffers::host_connection(&mut answering())
        .max_concurrent_streams(max_streams)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CALLER_CONNECTION_WINDOW)
        .max_header_list_size(MAX_HEADER_LIST)
        .handshake::<_, Bytes>(Repair::new(io));
    // Boxed: held in place, the handshake made every instance's host task larger for the
    // life of the instance by its own size (host::serve 4,040 bytes against 2,864 boxed).
    let mut h2 = match Box::pin(handshake).await {
        Ok(h2) => h2,
        Err(e) => {
            tracing::debug!(error = %e, "host connection failed its HTTP/2 handshake");
            return;
        }
    };
    let mut pace = Pace::default();
    loop {
        match pace.accept(&mut h2).await {
            Some(Ok((req, respond))) => {
                let (svc, stalls) = (svc.clone(), stalls.clone());
                tokio::spawn(async move { route_and_pipe(req, respond, svc, &stalls).await });
                pace.accepted().await;
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "host connection failed");
                return;
            }
            None => return,
        }
    }
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
    /// Small chunks copied together, to go after `queue`'s last entry.
    merged: BytesMut,
    bytes: usize,
    tail: Option<Tail>,
    big: Option<BigCall>,
}

impl Untaken {
    /// Whether all the data taken has been sent.
    fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.merged.is_empty()
    }

    /// Queues `data`. A small chunk after another is copied beside it: a lone one, such as
    /// a unary answer, is queued as it came, without a copy.
    fn push(&mut self, data: Bytes) {
        if data.len() >= SMALL_CHUNK {
            self.queue_merged();
            self.queue.push_back(data);
            return;
        }
        if self.merged.len() + data.len() > MERGED_CHUNK {
            self.queue_merged();
        }
        if self.merged.is_empty() {
            match self.queue.back() {
                // Alone: as it came.
                None => {
                    self.queue.push_back(data);
                    return;
                }
                Some(last) if last.len() < SMALL_CHUNK => {
                    self.merged.reserve(MERGED_CHUNK);
                    let last = self.queue.pop_back().unwrap_or_default();
                    self.merged.extend_from_slice(&last);
                }
                // After a large chunk: copied, so as not to keep a read buffer alive for it.
                Some(_) => self.merged.reserve(MERGED_CHUNK),
            }
        }
        self.merged.extend_from_slice(&data);
    }

    /// Queues the chunks copied together so far: in an allocation of their size when they
    /// fill under half of theirs (a few small chunks between large ones would otherwise
    /// each keep a frame's worth of memory for a few bytes).
    fn queue_merged(&mut self) {
        if self.merged.is_empty() {
            return;
        }
        let merged = std::mem::take(&mut self.merged);
        let queued =
            if merged.capacity() > 2 * merged.len() { Bytes::copy_from_slice(&merged) } else { merged.freeze() };
        self.queue.push_back(queued);
    }

    /// Whether to read more of the answer: not past its end, nor more than
    /// [`CALL_BUFFER`] ahead of the caller.
    fn wants_more(&self) -> bool {
        self.tail.is_none() && !self.full()
    }

    /// A buffer's worth ahead of the caller: the answer is read no further.
    fn full(&self) -> bool {
        self.bytes >= CALL_BUFFER
    }

    fn take(&mut self, frame: Option<Result<http_body::Frame<Bytes>, tonic::Status>>) {
        match frame {
            Some(Ok(frame)) => match frame.into_data() {
                // An empty DATA frame carries only END_STREAM, which the body
                // says next; queued, it would wait for a window of 0 forever.
                Ok(data) if data.is_empty() => {}
                Ok(data) => {
                    self.bytes += data.len();
                    self.push(data);
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
        loop {
            if self.queue.is_empty() {
                self.queue_merged();
            }
            let Some(front) = self.queue.front_mut() else { break };
            send.reserve_capacity(self.bytes);
            let room = send.capacity();
            if room == 0 {
                return Ok(false);
            }
            let chunk =
                if front.len() <= room { self.queue.pop_front().unwrap_or_default() } else { front.split_to(room) };
            self.bytes -= chunk.len();
            let last = self.is_empty() && matches!(self.tail, Some(Tail::End));
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

/// The HTTP/2 server both of the gateway's kinds of callers (host applications on
/// gateway.sock, plugins calling out on fd 4) are answered by.
fn answering() -> h2::server::Builder {
    let mut builder = h2::server::Builder::new();
    builder.max_send_buffer_size(SEND_BUFFER);
    builder
}

/// Sends the answer as the caller's window allows, reading ahead of it by
/// at most [`CALL_BUFFER`]; resets the call when its deadline passes with
/// data still untaken, or at once when its buffer is full and `stalls` has
/// no place left for it.
async fn pipe(mut respond: h2::server::SendResponse<Bytes>, response: http::Response<Body>, stalls: &Arc<StallBudget>) {
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
    let ended = body.is_end_stream() && untaken.is_empty() && untaken.tail.is_none();
    let Ok(mut send) = respond.send_response(http::Response::from_parts(parts, ()), ended) else { return };
    if ended {
        return;
    }
    let mut expired = false;
    let mut stalled: Option<Stalled> = None;
    // Without a deadline: since when the caller has taken none of what is untaken.
    let mut waited_on: Option<Instant> = None;
    let expiry = tokio::time::sleep_until(expires.unwrap_or_else(far_future));
    tokio::pin!(expiry);
    loop {
        match untaken.send(&mut send) {
            Ok(true) | Err(_) => return,
            Ok(false) => {}
        }
        // What is left after sending all the caller's window takes waits on
        // the caller. A call full that way needs a place among the stalled
        // ones, kept until its caller has caught up; with none left, a call
        // that falls behind at all is reset at once: it would need one once
        // full, and filling first would only cost a buffer.
        if untaken.is_empty() {
            stalled = None;
            if waited_on.take().is_some() {
                expiry.as_mut().reset(far_future());
                expired = false;
            }
        } else if expires.is_none() && waited_on.is_none() {
            // An answer without a deadline (the gateway's own reflection and health
            // streams, a host service's) waits on its caller for at most UNDEADLINED_STALL
            // at a time, full or not: below a buffer's worth it takes no stall place, and
            // would otherwise hold its bytes for as long as the caller stays connected
            // (its connection, busy with it, is never idle).
            waited_on = Some(Instant::now());
            expiry.as_mut().reset(Instant::now() + UNDEADLINED_STALL);
            expired = false;
        }
        if !untaken.is_empty() && stalled.is_none() && (untaken.full() || stalls.spent()) {
            stalled = stalls.stall();
            if stalled.is_none() {
                // Dropping the body resets the plugin's stream, which gives
                // its share of the plugin connection's window back; what
                // the crowd of such calls used is given back to the system
                // once they have gone (at most one trim every few seconds).
                send.send_reset(h2::Reason::CANCEL);
                super::trim::crowd_gone();
                if let Some(held_back) = STALL_RESETS.due() {
                    tracing::warn!(
                        places = stalls.limit(),
                        more = held_back,
                        "a gateway call was reset: its caller is not taking its answer, and the places its \
                         caller may hold among max_stalled_calls (a quarter of them; for plugins' calls out, \
                         half) or all of them are taken by calls waiting on callers that do not read"
                    );
                }
                return;
            }
        }
        if expired && !untaken.is_empty() {
            // Past the deadline, or stalled without one for UNDEADLINED_STALL, with an
            // answer the caller has not taken.
            if expires.is_none() {
                tracing::debug!(wait = ?UNDEADLINED_STALL, "a gateway answer without a deadline was reset: its caller took none of it");
            }
            send.send_reset(h2::Reason::CANCEL);
            return;
        }
        let read = untaken.wants_more();
        tokio::select! {
            frame = body.frame(), if read => untaken.take(frame),
            // More window, or the caller reset the stream (then dropping
            // the body resets the plugin's).
            more = caller(&mut send, !untaken.is_empty()) => {
                if !more {
                    return;
                }
                // The caller took some: it is slow, not gone.
                if waited_on.is_some() {
                    waited_on = Some(Instant::now());
                    expiry.as_mut().reset(Instant::now() + UNDEADLINED_STALL);
                    expired = false;
                }
            }
            // The deadline: with nothing untaken, the body itself ends as
            // DEADLINE_EXCEEDED on its next poll; otherwise reset, above.
            () = &mut expiry, if !expired => expired = true,
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

#[cfg(test)]
mod tests {
    use http_body::Frame;

    use super::*;

    /// Serves one call on an in-memory HTTP/2 connection with `body` as the
    /// plugin's answer; what the caller received, data and trailers.
    async fn answered_with(frames: Vec<Frame<Bytes>>) -> (Vec<u8>, Option<http::HeaderMap>) {
        let (client_io, server_io) = tokio::io::duplex(1 << 20);
        tokio::spawn(async move {
            let mut h2 = h2::server::handshake(server_io).await.unwrap();
            let (_, respond) = h2.accept().await.unwrap().unwrap();
            let stream = futures_util::stream::iter(frames.into_iter().map(Ok::<_, tonic::Status>));
            let answer = http::Response::new(Body::new(http_body_util::StreamBody::new(stream)));
            tokio::spawn(async move { pipe(respond, answer, &StallBudget::new(1)).await });
            let _ = poll_fn(|cx| h2.poll_closed(cx)).await;
        });
        let (mut client, conn) = h2::client::handshake(client_io).await.unwrap();
        tokio::spawn(conn);
        let (response, _) =
            client.send_request(http::Request::post("http://gw/a.A/M").body(()).unwrap(), true).unwrap();
        let mut body = response.await.unwrap().into_body();
        let mut data = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
            data.extend_from_slice(&chunk);
        }
        (data, body.trailers().await.unwrap())
    }

    /// What the budget held after `waited` while the caller of a 384 KiB answer took
    /// nothing, with the answer under a deadline (`expires`) or none, and how the caller's
    /// stream had ended by then.
    async fn unread(expires: Option<Instant>, waited: Duration) -> (usize, Option<h2::Reason>) {
        unread_of(3, expires, waited).await
    }

    /// `unread`, of an answer of `frames` frames of 128 KiB.
    async fn unread_of(frames: usize, expires: Option<Instant>, waited: Duration) -> (usize, Option<h2::Reason>) {
        let (client_io, server_io) = tokio::io::duplex(1 << 20);
        let budget = StallBudget::new(4);
        let held = budget.clone();
        let served = tokio::spawn(async move {
            let mut h2 = h2::server::handshake(server_io).await.unwrap();
            let (_, respond) = h2.accept().await.unwrap().unwrap();
            let frames = (0..frames).map(|_| Ok::<_, tonic::Status>(Frame::data(Bytes::from(vec![0u8; 128 << 10]))));
            let mut answer = http::Response::new(Body::new(http_body_util::StreamBody::new(
                futures_util::stream::iter(frames.collect::<Vec<_>>()),
            )));
            if let Some(at) = expires {
                answer.extensions_mut().insert(Expires(at));
            }
            tokio::spawn(async move { pipe(respond, answer, &budget).await });
            let _ = poll_fn(|cx| h2.poll_closed(cx)).await;
        });
        // A caller that takes nothing: its stream's window is shut.
        let (mut client, conn) =
            h2::client::Builder::new().initial_window_size(0).handshake::<_, Bytes>(client_io).await.unwrap();
        tokio::spawn(conn);
        let (response, _) =
            client.send_request(http::Request::post("http://gw/a.A/M").body(()).unwrap(), true).unwrap();
        // Reset with its headers or after them.
        let ended = tokio::time::timeout(waited, async {
            match response.await {
                Ok(answer) => answer.into_body().data().await.and_then(|r| r.err()),
                Err(e) => Some(e),
            }
        })
        .await;
        let stalled = held.stalled();
        served.abort();
        (stalled, ended.ok().flatten().and_then(|e| e.reason()))
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_without_a_deadline_keeps_a_stall_place_only_while_its_caller_takes_some() {
        // Under a deadline it waits in a place, which the deadline will end.
        assert_eq!(unread(Some(Instant::now() + Duration::from_secs(3600)), UNDEADLINED_STALL * 2).await, (1, None));
        // Without one, its place goes once the caller has taken nothing for a while.
        assert_eq!(unread(None, UNDEADLINED_STALL / 2).await, (1, None));
        assert_eq!(unread(None, UNDEADLINED_STALL * 2).await, (0, Some(h2::Reason::CANCEL)));
    }

    /// A caller granting large windows, then reading nothing: what h2 holds of the answer
    /// is bounded, and the rest stays with the call, held to its deadline.
    #[tokio::test(start_paused = true)]
    async fn an_answer_to_a_caller_that_reads_nothing_stays_the_calls_whatever_its_window() {
        let (client_io, server_io) = tokio::io::duplex(16 << 10);
        let (accepted_tx, accepted) = tokio::sync::oneshot::channel();
        let (frames_tx, frames) = tokio::sync::mpsc::unbounded_channel::<Result<Frame<Bytes>, tonic::Status>>();
        let frames = futures_util::stream::unfold(frames, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
        let (ended_tx, ended) = tokio::sync::oneshot::channel();
        let deadline = Instant::now() + Duration::from_secs(1);
        tokio::spawn(async move {
            let mut h2 = answering().handshake::<_, Bytes>(server_io).await.unwrap();
            let (_, respond) = h2.accept().await.unwrap().unwrap();
            let _ = accepted_tx.send(());
            let mut answer = http::Response::new(Body::new(http_body_util::StreamBody::new(frames)));
            answer.extensions_mut().insert(Expires(deadline));
            tokio::spawn(async move {
                pipe(respond, answer, &StallBudget::new(1)).await;
                let _ = ended_tx.send(Instant::now());
            });
            let _ = poll_fn(|cx| h2.poll_closed(cx)).await;
        });
        let reading = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let client_io = ReadsUntil { io: client_io, reading: reading.clone() };
        let (mut client, conn) = h2::client::Builder::new()
            .initial_window_size(1 << 30)
            .initial_connection_window_size(1 << 30)
            .handshake::<_, Bytes>(client_io)
            .await
            .unwrap();
        tokio::spawn(conn);
        let _response = client.send_request(http::Request::post("http://gw/a.A/M").body(()).unwrap(), true).unwrap();
        accepted.await.unwrap();
        // From here the caller reads nothing, its socket open.
        reading.store(false, std::sync::atomic::Ordering::Relaxed);
        for _ in 0..30 {
            frames_tx.send(Ok(Frame::data(Bytes::from(vec![0u8; 10 << 10])))).unwrap();
        }
        frames_tx.send(Ok(Frame::trailers(http::HeaderMap::new()))).unwrap();
        let ended = ended.await.unwrap();
        assert!(ended >= deadline, "the call ended {:?} before its deadline", deadline - ended);
    }

    /// A socket whose reader stops reading once `reading` is false.
    struct ReadsUntil {
        io: tokio::io::DuplexStream,
        reading: Arc<std::sync::atomic::AtomicBool>,
    }

    impl tokio::io::AsyncRead for ReadsUntil {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            if !self.reading.load(std::sync::atomic::Ordering::Relaxed) {
                return Poll::Pending;
            }
            std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
        }
    }

    impl tokio::io::AsyncWrite for ReadsUntil {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
        }

        fn poll_flush(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.io).poll_flush(cx)
        }

        fn poll_shutdown(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
        }
    }

    /// Below a buffer's worth an answer takes no stall place: it held its bytes for as long
    /// as its caller stayed connected (reflection's answers, asked for by anyone who may
    /// open gateway.sock, on every stream of every connection).
    #[tokio::test(start_paused = true)]
    async fn an_answer_without_a_deadline_its_caller_takes_none_of_is_reset_full_or_not() {
        assert_eq!(unread_of(1, None, UNDEADLINED_STALL / 2).await, (0, None));
        assert_eq!(unread_of(1, None, UNDEADLINED_STALL * 2).await, (0, Some(h2::Reason::CANCEL)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_reading_slowly_keeps_an_answer_without_a_deadline_for_as_long_as_it_reads() {
        let (client_io, server_io) = tokio::io::duplex(1 << 20);
        let budget = StallBudget::new(4);
        let held = budget.clone();
        tokio::spawn(async move {
            let mut h2 = h2::server::handshake(server_io).await.unwrap();
            let (_, respond) = h2.accept().await.unwrap().unwrap();
            let frames: Vec<_> =
                (0..3).map(|_| Ok::<_, tonic::Status>(Frame::data(Bytes::from(vec![0u8; 128 << 10])))).collect();
            let answer =
                http::Response::new(Body::new(http_body_util::StreamBody::new(futures_util::stream::iter(frames))));
            tokio::spawn(async move { pipe(respond, answer, &budget).await });
            let _ = poll_fn(|cx| h2.poll_closed(cx)).await;
        });
        let (mut client, conn) =
            h2::client::Builder::new().initial_window_size(16 << 10).handshake::<_, Bytes>(client_io).await.unwrap();
        tokio::spawn(conn);
        let (response, _) =
            client.send_request(http::Request::post("http://gw/a.A/M").body(()).unwrap(), true).unwrap();
        let mut body = response.await.unwrap().into_body();
        let started = Instant::now();
        let (mut got, mut stalled_seen) = (0, false);
        // A window's worth every 20 s: never 30 s without taking some, for minutes in all.
        while let Some(chunk) = body.data().await {
            let chunk = chunk.expect("the answer was reset while its caller was reading it");
            got += chunk.len();
            let _ = body.flow_control().release_capacity(chunk.len());
            stalled_seen |= held.stalled() == 1;
            tokio::time::sleep(Duration::from_secs(20)).await;
        }
        assert_eq!(got, 3 * (128 << 10));
        assert!(stalled_seen, "the answer never stalled: the test shows nothing");
        assert!(started.elapsed() > UNDEADLINED_STALL * 4, "read in {:?}", started.elapsed());
        assert_eq!(held.stalled(), 0, "its place was given back");
    }

    /// An in-memory connection whose server takes `calls` calls through a [`Pace`], each
    /// answered by a task of its own; the log says in which order calls were taken ("took
    /// i") and their tasks ran ("ran i"). `after_taking(i)` runs once call i was taken and
    /// paced.
    struct Paced {
        client: h2::client::SendRequest<Bytes>,
        log: Arc<std::sync::Mutex<Vec<String>>>,
        served: tokio::task::JoinHandle<()>,
    }

    impl Paced {
        async fn new(calls: usize, mut after_taking: impl FnMut(usize) + Send + 'static) -> Self {
            let (client_io, server_io) = tokio::io::duplex(1 << 20);
            let (client, conn) = h2::client::handshake(client_io).await.unwrap();
            tokio::spawn(conn);
            let mut h2 = h2::server::handshake(server_io).await.unwrap();
            let log = Arc::new(std::sync::Mutex::new(Vec::new()));
            let served = tokio::spawn({
                let log = log.clone();
                async move {
                    let mut pace = Pace::default();
                    for i in 0..calls {
                        let (_, mut respond) = pace.accept(&mut h2).await.unwrap().unwrap();
                        log.lock().unwrap().push(format!("took {i}"));
                        let log = log.clone();
                        tokio::spawn(async move {
                            log.lock().unwrap().push(format!("ran {i}"));
                            let _ = respond.send_response(http::Response::new(()), true);
                        });
                        pace.accepted().await;
                        after_taking(i);
                    }
                    // Drives the connection until the answers are out.
                    let _ = tokio::time::timeout(Duration::from_millis(200), poll_fn(|cx| h2.poll_closed(cx))).await;
                }
            });
            Self { client, log, served }
        }

        /// `n` calls sent at once: queued before the client's connection task writes any.
        fn burst(&mut self, n: usize) -> Vec<h2::client::ResponseFuture> {
            (0..n)
                .map(|_| {
                    let req = http::Request::post("http://gw/a.A/M").body(()).unwrap();
                    self.client.send_request(req, true).unwrap().0
                })
                .collect()
        }

        fn logged(&self) -> usize {
            self.log.lock().unwrap().len()
        }

        /// Once every answer came back OK: the log.
        async fn log_once_answered(self, answers: Vec<h2::client::ResponseFuture>) -> Vec<String> {
            for answer in answers {
                assert_eq!(answer.await.unwrap().status(), http::StatusCode::OK);
            }
            self.served.abort();
            self.log.lock().unwrap().clone()
        }
    }

    fn position(log: &[String], entry: &str) -> usize {
        log.iter().position(|l| l == entry).unwrap_or_else(|| panic!("no {entry:?} in {log:?}"))
    }

    #[tokio::test]
    async fn a_burst_of_calls_is_taken_a_turn_at_a_time_with_the_calls_taken_running_between_turns() {
        let mut paced = Paced::new(10, |_| {}).await;
        let answers = paced.burst(10);
        let log = paced.log_once_answered(answers).await;
        let took = |i: usize| position(&log, &format!("took {i}"));
        let ran = |i: usize| position(&log, &format!("ran {i}"));
        // The first turn's calls ran before the next turn was taken, and so on.
        for (turn, next) in [(0..4, 4), (4..8, 8)] {
            for i in turn {
                assert!(ran(i) < took(next), "call {i} did not run before call {next} was taken: {log:?}");
            }
        }
        // Within a turn, no call ran before the turn was taken whole.
        assert!(took(3) < ran(0), "{log:?}");
    }

    #[tokio::test]
    async fn a_turn_counts_the_calls_of_one_burst_only() {
        let (took_three, mut three_taken) = tokio::sync::mpsc::unbounded_channel();
        let mut paced = Paced::new(6, move |i| {
            if i == 2 {
                let _ = took_three.send(());
            }
        })
        .await;
        // Two bursts of three calls, the second once the first is taken, its calls have
        // run and the connection waits for more.
        let mut answers = paced.burst(3);
        three_taken.recv().await.unwrap();
        let ran = async {
            while paced.logged() < 6 {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), ran).await.expect("the first burst's calls ran");
        answers.extend(paced.burst(3));
        let log = paced.log_once_answered(answers).await;
        // Three calls of a burst are less than a turn: the second burst is taken whole
        // before its calls run, however many the connection took before it.
        assert!(position(&log, "took 5") < position(&log, "ran 3"), "{log:?}");
    }

    #[tokio::test]
    async fn an_empty_last_data_frame_ends_the_answer_instead_of_hanging_it() {
        // h2 hands an empty DATA frame up only when it carries END_STREAM.
        let frames = vec![Frame::data(Bytes::from_static(b"abc")), Frame::data(Bytes::new())];
        let answered = tokio::time::timeout(Duration::from_secs(2), answered_with(frames)).await;
        assert_eq!(answered.expect("the answer hung on its empty last frame"), (b"abc".to_vec(), None));
    }

    /// The buffer counted payload bytes alone: a plugin answering a byte a frame to a
    /// caller that takes nothing queued 262,144 entries a call before the buffer was full,
    /// each keeping alive the h2 read buffer it was cut from.
    #[test]
    fn an_answer_a_byte_a_frame_fills_the_buffer_in_a_few_entries() {
        let mut untaken = Untaken::default();
        let mut taken = 0;
        // The caller's window is 0: nothing is sent, and the answer is read while the
        // buffer wants more.
        for _ in 0..300_000 {
            if !untaken.wants_more() {
                break;
            }
            untaken.take(Some(Ok(Frame::data(Bytes::from_static(b"x")))));
            taken += 1;
        }
        assert_eq!((taken, untaken.bytes), (CALL_BUFFER, CALL_BUFFER), "it stops taking at the buffer's size");
        let held: usize = untaken.queue.iter().map(Bytes::len).sum::<usize>() + untaken.merged.capacity();
        assert_eq!(
            (untaken.queue.len(), untaken.merged.len(), held),
            (CALL_BUFFER / MERGED_CHUNK - 1, MERGED_CHUNK, CALL_BUFFER),
            "frame-sized entries, the last still being filled"
        );
    }

    #[tokio::test]
    async fn small_chunks_copied_together_reach_the_caller_whole_and_in_order() {
        let chunk = |i: usize| {
            let len = if i % 1000 == 999 { 3000 } else { 1 + i % 3 };
            Bytes::from(vec![(i % 251) as u8; len])
        };
        let frames: Vec<_> = (0..40_000).map(|i| Frame::data(chunk(i))).collect();
        let expected: Vec<u8> = (0..40_000).flat_map(|i| chunk(i).to_vec()).collect();
        let answered = tokio::time::timeout(Duration::from_secs(30), answered_with(frames)).await;
        let (data, trailers) = answered.expect("the answer hung");
        assert_eq!(trailers, None);
        assert!(data == expected, "{} bytes came of {}", data.len(), expected.len());
    }

    #[tokio::test]
    async fn trailers_after_data_reach_the_caller() {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let frames = vec![Frame::data(Bytes::from_static(b"abc")), Frame::trailers(trailers.clone())];
        let answered = tokio::time::timeout(Duration::from_secs(2), answered_with(frames)).await;
        assert_eq!(answered.expect("the answer hung"), (b"abc".to_vec(), Some(trailers)));
    }
}
