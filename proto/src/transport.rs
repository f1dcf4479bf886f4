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

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use http::uri::{Authority, Scheme};
use http_body::Frame;
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::message_ends::MessageEnds;
use crate::small_frames::{JOIN_WAIT, SMALL_FRAME, Unanswered};

/// The request body every channel carries.
pub type Body = tonic::body::Body;

/// A cloneable handle for sending gRPC requests on one HTTP/2 connection.
#[derive(Clone, Debug)]
pub struct H2Channel {
    tx: h2::client::SendRequest<Bytes>,
    /// Small DATA frames its streams sent alone that the peer has not answered.
    unanswered: Arc<std::sync::atomic::AtomicUsize>,
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

/// Whether a connection's end `e` is a failure rather than a drain: see
/// [`ChannelError::failed`].
pub fn h2_failed(e: &h2::Error) -> bool {
    e.reason().is_some_and(|r| r != h2::Reason::NO_ERROR)
}

/// What of a channel's transport `status` came from, when it did: tonic makes a status of
/// the peer's answer and of a failure of the connection alike.
enum Transport<'a> {
    Channel(&'a ChannelError),
    H2(&'a h2::Error),
}

fn transport_of(status: &tonic::Status) -> Option<Transport<'_>> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = cause {
        if let Some(c) = e.downcast_ref::<ChannelError>() {
            return Some(Transport::Channel(c));
        }
        if let Some(h) = e.downcast_ref::<h2::Error>() {
            return Some(Transport::H2(h));
        }
        cause = e.source();
    }
    None
}

/// Whether `status` came from this end of a channel: its connection failed, or h2 here
/// refused what the peer sent. Not a status the peer answered, nor a stream or connection
/// the peer itself reset or closed (GOAWAY), which are its answers too.
pub fn from_our_end(status: &tonic::Status) -> bool {
    match transport_of(status) {
        Some(Transport::Channel(ChannelError::H2(h) | ChannelError::NotSent(h)) | Transport::H2(h)) => !h.is_remote(),
        Some(Transport::Channel(ChannelError::Body(_))) => true,
        None => false,
    }
}

/// Whether `status` came from a channel's own transport (its connection failed, or a
/// frame was refused) rather than from an answer of the peer's.
pub fn from_transport(status: &tonic::Status) -> bool {
    transport_of(status).is_some()
}

impl ChannelError {
    /// h2 refused to send the request itself (a connection-specific header from an
    /// embedding host): such a refusal carries no reason and is neither I/O nor GOAWAY. It
    /// says nothing of the connection, and another would refuse it too.
    pub fn request_refused(&self) -> bool {
        matches!(self, ChannelError::NotSent(e) if !e.is_io() && !e.is_go_away() && e.reason().is_none())
    }

    /// The connection takes no more calls: it was gone or closing before this one was sent,
    /// or the peer said GOAWAY.
    pub fn closed(&self) -> bool {
        match self {
            ChannelError::NotSent(_) => !self.request_refused(),
            ChannelError::H2(e) => e.is_go_away() && e.is_remote(),
            ChannelError::Body(_) => false,
        }
    }

    /// The connection failed, rather than closed as a drain closes it: an error code
    /// either end gave it (a GOAWAY with one, a protocol error). An I/O error is not
    /// counted: a socket closed with bytes unread (a WINDOW_UPDATE sent after the plugin's
    /// last read) reads as ECONNRESET after the cleanest of drains.
    pub fn failed(&self) -> bool {
        match self {
            ChannelError::NotSent(e) | ChannelError::H2(e) => h2_failed(e),
            ChannelError::Body(_) => false,
        }
    }

    /// The peer never processed the request, by HTTP/2's own account: it was not sent,
    /// refused (REFUSED_STREAM), or above the last stream a GOAWAY let through. Such a call
    /// can be sent elsewhere without running twice.
    pub fn unprocessed(&self) -> bool {
        match self {
            // Not h2's refusal of the request itself: another instance would refuse it too.
            ChannelError::NotSent(_) => !self.request_refused(),
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
        Self::handshake_with(&Self::builder(), io).await
    }

    /// The settings [`H2Channel::handshake`] uses, for a caller to add its own
    /// (the supervisor starts its many plugin connections' buffers small)
    /// before [`H2Channel::handshake_with`].
    pub fn builder() -> h2::client::Builder {
        let mut builder = h2::client::Builder::new();
        builder
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
            // gRPC never pushes, and h2 keeps every pushed stream nobody reads: a plugin
            // pushing in a loop would grow the supervisor's memory, not its own, without
            // bound. Off, a PUSH_PROMISE is a protocol error that ends the connection.
            .enable_push(false);
        builder
    }

    /// [`H2Channel::handshake`] with `builder`'s settings.
    pub async fn handshake_with<IO>(builder: &h2::client::Builder, io: IO) -> Result<(Self, Connection), h2::Error>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, conn) = builder.handshake(io).await?;
        Ok((Self { tx, unanswered: Arc::default() }, Box::pin(conn)))
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
    /// Held while the answer is wanted: dropped, it tells the request's
    /// pump that the caller is gone (see [`pump`]).
    _wanted: Option<tokio::sync::oneshot::Sender<()>>,
    /// The streaming request's small frames the peer has not answered, and where the
    /// answer's messages stand, to count them.
    unanswered: Option<Arc<Unanswered>>,
    answers: MessageEnds,
}

impl ResponseBody {
    pub fn new(recv: h2::RecvStream) -> Self {
        Self {
            recv,
            data_done: false,
            finished: false,
            _wanted: None,
            unanswered: None,
            answers: MessageEnds::default(),
        }
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
                    let this = &mut *self;
                    if let Some(unanswered) = &this.unanswered {
                        unanswered.answered(this.answers.ended_in(&bytes));
                    }
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

/// The least of a body a non-final DATA frame carries when more of the body
/// is already at hand: well above the 256 bytes under which h2 counts a DATA
/// frame as overhead, well below any stream window a plugin's server opens
/// (a body waits for twice this much room at most; h2, hyper, grpc-go and
/// C-core open 64 KiB or more).
const MIN_DATA_FRAME: usize = 1024;

/// How much of a body is taken from it ahead of the peer's window.
const READ_AHEAD: usize = 64 << 10;

/// What a request body still has to send.
enum Out {
    Data(Bytes),
    Trailers(http::HeaderMap),
}

/// A request body on its way to the peer, and what was taken from it and
/// not yet sent.
///
/// Data is handed to h2 a frame at a time, only as much as the stream has
/// room for, each frame of at least [`MIN_DATA_FRAME`] unless it is all the
/// body has at hand (a whole body smaller than that goes with the headers:
/// [`Outgoing::send_whole`]): h2 sends whatever window a stream was given, so a
/// frame handed to it early goes out in slivers when many calls share a
/// shut connection window (the peer's h2 answers each small frame it reads
/// with a small WINDOW_UPDATE, shared out to the next stream waiting, and
/// so on). A peer on h2 (plugins' servers are) counts the small non-final
/// DATA frames it holds, and empty ones over the connection's life, and
/// closes the connection past a budget (`ENHANCE_YOUR_CALM`,
/// "too_many_data_frames"): every call of the plugin would fail for what a
/// crowd of callers sent. So small frames are joined, empty ones dropped,
/// and a body's end rides on its last data whenever the end is known by
/// the time the data can leave. A streaming request's small frames are
/// counted until the peer answers as many messages, and past a few a small
/// frame waits a little for more to join it ([`crate::small_frames`]): the
/// same budget, spent by a caller's short messages to a handler that reads
/// them slower than they come.
struct Outgoing {
    body: Body,
    queued: VecDeque<Out>,
    /// Data bytes in `queued`.
    bytes: usize,
    /// The body has nothing after `queued`.
    ended: bool,
    /// Where the request stands, for the deadline's judgement: taken from its extensions.
    progress: Option<RequestProgress>,
    /// Until the first message is whole.
    first: Option<MessageEnds>,
    /// The small frames this stream sent alone that the peer has not answered: for a
    /// body still coming when the call began (a streaming request's, as a rule) only.
    unanswered: Option<Arc<Unanswered>>,
    /// Until when the small frame at the queue's head waits for more to join it.
    join_until: Option<tokio::time::Instant>,
    /// The queue's head is a small frame waiting for more to join it.
    held: bool,
}

impl Outgoing {
    fn new(body: Body, progress: Option<RequestProgress>) -> Self {
        let first = progress.as_ref().map(|_| MessageEnds::default());
        Self {
            body,
            queued: VecDeque::new(),
            bytes: 0,
            ended: false,
            progress,
            first,
            unanswered: None,
            join_until: None,
            held: false,
        }
    }

    /// Whether a frame of `n` bytes waits for more of the body to join it: a small one,
    /// while more may come, of a stream with many small frames unanswered, until its
    /// wait is over. The first such look starts the wait.
    fn joins(&mut self, n: usize) -> bool {
        if n >= SMALL_FRAME || self.ended || !self.unanswered.as_ref().is_some_and(|u| u.many()) {
            return false;
        }
        let until = *self.join_until.get_or_insert_with(|| tokio::time::Instant::now() + JOIN_WAIT);
        tokio::time::Instant::now() < until
    }

    /// Says that the call waits on its caller for more of the request, or no longer does.
    fn waiting_on_caller(&self, waiting: bool) {
        RequestProgress::set(self.progress.as_ref(), WAITING_ON_CALLER, waiting);
    }

    fn push(&mut self, frame: Frame<Bytes>) {
        match frame.into_data() {
            // An empty DATA frame carries nothing; the end of the body is
            // `ended`'s business.
            Ok(data) if data.is_empty() => {}
            Ok(data) => {
                if let Some(first) = &mut self.first
                    && first.ended_in(&data) > 0
                {
                    self.first = None;
                    RequestProgress::set(self.progress.as_ref(), FIRST_MESSAGE_WHOLE, true);
                }
                self.bytes += data.len();
                match self.queued.back_mut() {
                    Some(Out::Data(back)) if back.len() < MIN_DATA_FRAME => {
                        let mut joined = BytesMut::with_capacity(back.len() + data.len());
                        joined.extend_from_slice(back);
                        joined.extend_from_slice(&data);
                        *back = joined.freeze();
                    }
                    _ => self.queued.push_back(Out::Data(data)),
                }
            }
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    self.queued.push_back(Out::Trailers(t));
                    self.ended = true;
                }
            }
        }
    }

    /// Takes the frames the body has ready now, without waiting, up to
    /// [`READ_AHEAD`] of them queued.
    fn take_ready(&mut self) -> Result<(), tonic::Status> {
        while !self.ended && self.bytes < READ_AHEAD {
            match self.body.frame().now_or_never() {
                Some(Some(Ok(f))) => self.push(f),
                Some(Some(Err(e))) => return Err(e),
                Some(None) => self.ended = true,
                None => break,
            }
        }
        Ok(())
    }

    /// Sends what the stream has room for now; true once the stream has
    /// been ended.
    fn send_ready(&mut self, send: &mut h2::SendStream<Bytes>) -> Result<bool, h2::Error> {
        if self.bytes > 0 {
            send.reserve_capacity(self.bytes);
        }
        self.send_queued(send, |len, send| sendable(len, send.capacity()))
    }

    /// Hands a whole body to h2 at once, whatever room its new stream has: true, as a
    /// whole body ends its stream. h2 gives a new stream room only once its connection
    /// task opens the stream, after the call that made it returns, and then sends what
    /// the stream holds in the same write as the headers. Waiting for room instead made
    /// every unary call spawn a pump, and its request leave in two writes that the
    /// plugin read apart. h2 still keeps to the peer's windows; where the stream opens
    /// with less room than the body (the connection's window all but shut, by a plugin
    /// not reading what it was sent) it sends the part that fits, and the rest as room
    /// comes. For bodies under [`MIN_DATA_FRAME`] only, so that what a peer may hold of
    /// such parts is small frames of small bodies, not a larger body's frames cut up
    /// (2,000 bodies of 300 or 1,023 bytes at once on a shut window, cut so, keep the
    /// connection).
    fn send_whole(&mut self, send: &mut h2::SendStream<Bytes>) -> Result<bool, h2::Error> {
        debug_assert!(self.ended, "a body sent whole has ended");
        self.send_queued(send, |len, _| len)
    }

    /// Hands h2 the queued frames, of each data frame as much as `room` says (nothing:
    /// the stream waits for room) unless it waits to be joined (`held`); true once the
    /// stream has been ended.
    fn send_queued(
        &mut self,
        send: &mut h2::SendStream<Bytes>,
        room: impl Fn(usize, &h2::SendStream<Bytes>) -> usize,
    ) -> Result<bool, h2::Error> {
        self.held = false;
        while let Some(out) = self.queued.pop_front() {
            let last = self.ended && self.queued.is_empty();
            match out {
                Out::Trailers(t) => {
                    send.send_trailers(t)?;
                    return Ok(true);
                }
                Out::Data(mut data) => {
                    let n = room(data.len(), send);
                    self.held = n > 0 && self.joins(n);
                    if n == 0 || self.held {
                        self.queued.push_front(Out::Data(data));
                        return Ok(false);
                    }
                    self.join_until = None;
                    if n < SMALL_FRAME
                        && !(last && n == data.len())
                        && let Some(unanswered) = &self.unanswered
                    {
                        unanswered.sent();
                    }
                    let chunk = data.split_to(n);
                    self.bytes -= n;
                    send.send_data(chunk, last && data.is_empty())?;
                    if !data.is_empty() {
                        self.queued.push_front(Out::Data(data));
                    } else if last {
                        return Ok(true);
                    }
                }
            }
        }
        if self.ended {
            send.send_data(Bytes::new(), true)?;
            return Ok(true);
        }
        Ok(false)
    }
}

/// The largest DATA frame every peer takes (SETTINGS_MAX_FRAME_SIZE's
/// least). Data is handed to h2 a frame at a time: h2 cuts what it is
/// given at the peer's frame size, and the cut's tail would be a sliver.
const MAX_FRAME: usize = 16 << 10;

/// How much of `len` bytes of data to send as one frame with `room` in the
/// stream's window: all of it if it fits; else a part of at least
/// [`MIN_DATA_FRAME`] that leaves at least as much; else nothing yet.
fn sendable(len: usize, room: usize) -> usize {
    let room = room.min(MAX_FRAME);
    if room >= len {
        len
    } else if room >= MIN_DATA_FRAME && len >= 2 * MIN_DATA_FRAME {
        room.min(len - MIN_DATA_FRAME)
    } else {
        0
    }
}

/// Streams the rest of a body that was not all sent with its headers,
/// reading it at most [`READ_AHEAD`] ahead of the peer's window. Once the
/// answer is no longer wanted (`unwanted` resolves: the call's future or its
/// response body was dropped, by a caller that hung up or a deadline), the
/// stream is reset: h2 resets a stream only when every handle to it is gone,
/// and this pump holds one for as long as the request body stays open, so
/// the peer's handler would otherwise run on for a caller that left.
/// Set in a request's extensions, it says where the request stands: whether the call waits
/// on its caller for more of it (everything taken so far has been sent to the plugin,
/// or waits only for more to join it, and the rest has not come), and whether its first
/// message has come whole. A deadline that
/// passes while the plugin does not take what it was sent (its window shut) or does not
/// open the stream is the plugin's; one that passes while the call waits on its caller may
/// be the caller's (the deadline layer judges, by the method's kind).
#[derive(Clone, Debug, Default)]
pub struct RequestProgress(std::sync::Arc<std::sync::atomic::AtomicU8>);

/// [`RequestProgress`]'s bits.
const WAITING_ON_CALLER: u8 = 1;
const FIRST_MESSAGE_WHOLE: u8 = 2;

impl RequestProgress {
    /// Whether the call waits on its caller for more of its request now, and whether the
    /// request's first message (its length prefix and all it announces) has been taken
    /// whole: read together, as the pump changes them together.
    pub fn now(&self) -> (bool, bool) {
        let bits = self.0.load(std::sync::atomic::Ordering::Relaxed);
        (bits & WAITING_ON_CALLER != 0, bits & FIRST_MESSAGE_WHOLE != 0)
    }

    fn set(progress: Option<&Self>, bit: u8, on: bool) {
        if let Some(p) = progress {
            match on {
                true => p.0.fetch_or(bit, std::sync::atomic::Ordering::Relaxed),
                false => p.0.fetch_and(!bit, std::sync::atomic::Ordering::Relaxed),
            };
        }
    }
}

async fn pump(mut out: Outgoing, mut send: h2::SendStream<Bytes>, unwanted: tokio::sync::oneshot::Receiver<()>) {
    tokio::pin!(unwanted);
    loop {
        if out.take_ready().is_err() {
            send.send_reset(h2::Reason::CANCEL);
            return;
        }
        match out.send_ready(&mut send) {
            Ok(false) => {}
            Ok(true) | Err(_) => return,
        }
        if out.queued.is_empty() || out.held {
            // A small frame waiting to be joined waits, as an empty queue does, on the
            // caller for more of the body; and on its wait's end, to leave alone.
            let join = out.join_until.filter(|_| out.held);
            out.waiting_on_caller(true);
            // Lazy, so that a wait with no frame held builds no timer.
            let join_over = async {
                match join {
                    Some(until) => tokio::time::sleep_until(until).await,
                    None => std::future::pending().await,
                }
            };
            let next = tokio::select! {
                f = out.body.frame() => Some(f),
                () = join_over => None,
                _ = futures_util::future::poll_fn(|cx| send.poll_reset(cx)) => return,
                _ = &mut unwanted => {
                    send.send_reset(h2::Reason::CANCEL);
                    return;
                }
            };
            out.waiting_on_caller(false);
            // The wait is over: the frame leaves alone.
            let Some(next) = next else { continue };
            match next {
                Some(Ok(frame)) => out.push(frame),
                None => out.ended = true,
                Some(Err(_)) => {
                    send.send_reset(h2::Reason::CANCEL);
                    return;
                }
            }
        } else {
            // Waits for more room; the end of the body may come meanwhile.
            let room = futures_util::future::poll_fn(|cx| {
                if send.poll_reset(cx).is_ready() {
                    return Poll::Ready(None);
                }
                if unwanted.as_mut().poll(cx).is_ready() {
                    send.send_reset(h2::Reason::CANCEL);
                    return Poll::Ready(None);
                }
                send.poll_capacity(cx)
            })
            .await;
            if !matches!(room, Some(Ok(_))) {
                return;
            }
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
        let on_connection = self.unanswered.clone();
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            // HTTP/2 needs :scheme and :authority; generated clients built
            // on a bare service send only a path.
            if parts.uri.scheme().is_none() {
                let mut uri = std::mem::take(&mut parts.uri).into_parts();
                uri.scheme = Some(Scheme::HTTP);
                uri.authority = Some(Authority::from_static("plugin"));
                parts.uri = http::Uri::from_parts(uri).unwrap_or_default();
            }
            let progress = parts.extensions.get::<RequestProgress>().cloned();
            let mut out = Outgoing::new(body, progress);
            out.take_ready().map_err(ChannelError::Body)?;
            let mut tx = tx.ready().await.map_err(ChannelError::NotSent)?;
            let eos = out.ended && out.queued.is_empty();
            if !out.ended {
                out.unanswered = Some(Arc::new(Unanswered::on(on_connection)));
            }
            let unanswered = out.unanswered.clone();
            let (response, mut send) =
                tx.send_request(http::Request::from_parts(parts, ()), eos).map_err(ChannelError::NotSent)?;
            // A whole small body (a unary call's) leaves with the headers; of any other,
            // what the stream has room for now. Only a request not sent whole has a pump,
            // and pays for a task and a channel.
            let sent = eos
                || if out.ended && out.bytes < MIN_DATA_FRAME {
                    out.send_whole(&mut send)?
                } else {
                    out.send_ready(&mut send)?
                };
            let wanted = if !sent {
                let (wanted, unwanted) = tokio::sync::oneshot::channel();
                tokio::spawn(pump(out, send, unwanted));
                Some(wanted)
            } else {
                None
            };
            let response = response.await?;
            Ok(response.map(|recv| ResponseBody { _wanted: wanted, unanswered, ..ResponseBody::new(recv) }))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tower::Service;

    use super::*;

    /// A plugin's h2 that takes what it is sent for an attack says GOAWAY ENHANCE_YOUR_CALM
    /// and closes its socket, often with bytes of ours unread: the read after the GOAWAY
    /// then fails with ECONNRESET, which hid the reason (the vendored h2's change), and a
    /// plugin exiting 0 after it was not restarted.
    #[tokio::test]
    async fn a_goaway_with_an_error_code_ends_the_connection_as_such_though_a_reset_follows() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (ours, mut theirs) = tokio::net::UnixStream::pair().unwrap();
        let client = tokio::spawn(async move {
            let (mut channel, conn) = H2Channel::handshake(ours).await?;
            // A call under way: the connection reads on after the GOAWAY, for its answer.
            let call = channel.call(http::Request::post("/t.v1.T/M").body(Body::empty()).unwrap());
            let answer = tokio::spawn(async move { call.await.map(|_| ()) });
            let ended = conn.await;
            answer.abort();
            ended
        });
        // The client's preface, SETTINGS and its call's HEADERS (type 1, flags END_STREAM
        // and END_HEADERS), read.
        let mut buf = vec![0u8; 4096];
        let mut read = 0;
        while !buf[24..read.max(24)].windows(2).any(|w| w == [0x1, 0x5]) || read < 24 + 9 + 9 {
            let n = theirs.read(&mut buf[read..]).await.unwrap();
            assert!(n > 0, "the client hung up");
            read += n;
        }
        // Our SETTINGS, then GOAWAY ENHANCE_YOUR_CALM (0xb) letting stream 1 finish.
        let settings = [0, 0, 0, 0x4, 0, 0, 0, 0, 0];
        let calm = [0, 0, 8, 0x7, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0xb];
        theirs.write_all(&[&settings[..], &calm[..]].concat()).await.unwrap();
        // The client's SETTINGS ACK comes (a frame head, 9 bytes); left unread, our close
        // resets its socket.
        let acked = async {
            loop {
                theirs.readable().await.unwrap();
                let mut peek = [0u8; 9];
                use std::os::fd::AsRawFd;
                // SAFETY: recv into a buffer we own, of its length, on a socket we own;
                // MSG_PEEK leaves what it sees unread.
                let n = unsafe {
                    libc::recv(
                        theirs.as_raw_fd(),
                        peek.as_mut_ptr().cast(),
                        peek.len(),
                        libc::MSG_PEEK | libc::MSG_DONTWAIT,
                    )
                };
                assert!(n != 0, "the client hung up");
                if n >= 9 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), acked).await.expect("the client's SETTINGS ACK");
        drop(theirs);
        let ended = tokio::time::timeout(Duration::from_secs(10), client).await.unwrap().unwrap();
        let err = ended.expect_err("the connection ended with an error code");
        assert_eq!(err.reason(), Some(h2::Reason::ENHANCE_YOUR_CALM), "{err:?}");
        assert!(h2_failed(&err));
    }

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

    #[test]
    fn a_first_message_is_whole_once_its_prefix_and_all_it_announces_have_passed_in_any_pieces() {
        let mut first = MessageEnds::default();
        assert!(first.ended_in(&[0, 0, 0]) == 0, "a part of the prefix");
        assert!(first.ended_in(&[0, 3, b'a']) == 0, "the prefix says 3 bytes; one came");
        assert!(first.ended_in(b"bc") > 0);
        let mut empty = MessageEnds::default();
        assert!(empty.ended_in(&[0, 0, 0, 0, 0]) > 0, "a message of no bytes is whole with its prefix");
        let mut big = MessageEnds::default();
        assert!(big.ended_in(&[1, 0, 1, 0, 0]) == 0);
        assert!(big.ended_in(&[0; 65535]) == 0);
        assert!(big.ended_in(&[0; 2]) > 0, "more than the message: the next one has begun");
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
    async fn a_request_h2_refuses_to_send_says_nothing_of_the_connection() {
        let (client_io, server_io) = tokio::io::duplex(1 << 20);
        tokio::spawn(async move {
            let mut conn = h2::server::handshake(server_io).await.unwrap();
            while conn.accept().await.is_some() {}
        });
        let (mut channel, conn) = H2Channel::handshake(client_io).await.unwrap();
        tokio::spawn(conn);
        // A connection-specific header, which HTTP/2 forbids: the caller's doing.
        let req = http::Request::post("http://plugin/a.A/M").header("connection", "close").body(Body::empty()).unwrap();
        let Err(refused) = channel.call(req).await else { panic!("sent a request with a connection header") };
        assert!(matches!(refused, ChannelError::NotSent(_)), "{refused:?}");
        assert!(!refused.closed(), "{refused:?} said the connection closed");
    }

    /// How many bytes of `frame`, repeated, a peer that never reads gets into a channel's
    /// connection within `for_` after the handshake: what the channel took in without
    /// being able to answer it.
    async fn flooded_with(frame: &'static [u8], for_: Duration, reading: bool) -> usize {
        use tokio::io::AsyncWriteExt;
        let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
        let (channel, conn) = H2Channel::handshake(ours).await.unwrap();
        let driver = tokio::spawn(conn);
        let (mut read_half, mut theirs) = theirs.into_split();
        if reading {
            tokio::spawn(async move { tokio::io::copy(&mut read_half, &mut tokio::io::sink()).await });
        }
        // The server's preface: an empty SETTINGS. The client's preface and settings are
        // left unread, as everything after (unless `reading`).
        theirs.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
        let batch: Vec<u8> = frame.iter().copied().cycle().take(frame.len() * 4096).collect();
        let mut written = 0;
        let until = tokio::time::Instant::now() + for_;
        loop {
            match tokio::time::timeout_at(until, theirs.write_all(&batch)).await {
                Ok(Ok(())) => written += batch.len(),
                Ok(Err(e)) => panic!("the channel closed its connection after {written} bytes: {e}"),
                // Blocked: the channel stopped reading.
                Err(_) => break,
            }
        }
        assert!(!driver.is_finished(), "the connection ended");
        drop(channel);
        written
    }

    /// A plugin sending PINGs (each wants a PONG back) or SETTINGS (each wants an ACK) and
    /// reading nothing: the channel stops reading once its answers cannot leave, so what
    /// it takes in stays within its socket's and its read buffer's size instead of growing
    /// a queue of answers in the supervisor.
    #[tokio::test]
    async fn a_peer_flooding_pings_or_settings_and_reading_nothing_is_not_read_without_end() {
        const PING: &[u8] = &[0, 0, 8, 6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
        const SETTINGS: &[u8] = &[0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100];
        for (name, frame) in [("PING", PING), ("SETTINGS", SETTINGS)] {
            let taken = flooded_with(frame, Duration::from_secs(1), false).await;
            assert!(taken < 2 << 20, "{name}: a channel took in {taken} bytes of a flood it could not answer");
            // The measure tells the two apart: from a peer that reads its answers, the
            // same flood is taken in as fast as it comes.
            let answered = flooded_with(frame, Duration::from_secs(2), true).await;
            assert!(answered > 4 << 20, "{name}: only {answered} bytes of a flood whose answers were read");
        }
    }

    /// Counts the writes made through it.
    struct Writes<IO> {
        io: IO,
        count: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    }

    impl<IO> Writes<IO> {
        fn counted(&self, written: &Poll<std::io::Result<usize>>) {
            if matches!(written, Poll::Ready(Ok(_))) {
                self.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    }

    impl<IO: AsyncRead + Unpin> AsyncRead for Writes<IO> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.io).poll_read(cx, buf)
        }
    }

    impl<IO: AsyncWrite + Unpin> AsyncWrite for Writes<IO> {
        fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
            let written = Pin::new(&mut self.io).poll_write(cx, buf);
            self.counted(&written);
            written
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[std::io::IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            let written = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
            self.counted(&written);
            written
        }

        fn is_write_vectored(&self) -> bool {
            self.io.is_write_vectored()
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.io).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.io).poll_shutdown(cx)
        }
    }

    /// A unary call's request leaves in one write, its headers and its message together,
    /// as the plugin then reads it: the message waited for room the stream gets only once
    /// opened, in a task of its own, and left in a second write.
    #[tokio::test]
    async fn a_whole_request_leaves_in_one_write_with_its_headers() {
        let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
        let (got, mut received) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut conn = h2::server::handshake(theirs).await.unwrap();
            while let Some(Ok((req, mut respond))) = conn.accept().await {
                let got = got.clone();
                tokio::spawn(async move {
                    let mut body = req.into_body();
                    let mut message = Vec::new();
                    while let Some(chunk) = body.data().await {
                        message.extend_from_slice(&chunk.unwrap());
                    }
                    got.send(message).unwrap();
                    respond.send_response(http::Response::new(()), true).unwrap();
                });
            }
        });
        let writes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (mut channel, conn) = H2Channel::handshake(Writes { io: ours, count: writes.clone() }).await.unwrap();
        tokio::spawn(conn);
        const MESSAGE: &[u8] = b"\0\0\0\0\x05hello";
        // The first call also carries the connection's own frames (its SETTINGS' ACK).
        for call in 0..3 {
            let before = writes.load(std::sync::atomic::Ordering::SeqCst);
            let req = http::Request::post("/t.v1.T/M")
                .body(Body::new(http_body_util::Full::new(Bytes::from_static(MESSAGE))))
                .unwrap();
            channel.call(req).await.unwrap();
            assert_eq!(received.recv().await.unwrap(), MESSAGE);
            let took = writes.load(std::sync::atomic::Ordering::SeqCst) - before;
            if call > 0 {
                assert_eq!(took, 1, "call {call}: the request left in {took} writes");
            }
        }
    }

    #[tokio::test]
    async fn a_peer_cannot_push_streams_at_a_channel() {
        let (client_io, server_io) = tokio::io::duplex(1 << 20);
        let server = tokio::spawn(async move {
            let mut conn = h2::server::handshake(server_io).await.unwrap();
            let (_, mut respond) = conn.accept().await.unwrap().unwrap();
            tokio::spawn(async move { while conn.accept().await.is_some() {} });
            let pushed = http::Request::get("http://plugin/pushed").body(()).unwrap();
            respond.push_request(pushed).map(|_| ()).map_err(|e| e.to_string())
        });
        let (mut channel, conn) = H2Channel::handshake(client_io).await.unwrap();
        tokio::spawn(conn);
        let req = http::Request::post("http://plugin/a.A/M").body(Body::empty()).unwrap();
        let _call = tokio::spawn(async move { channel.call(req).await });
        let pushed = tokio::time::timeout(Duration::from_secs(5), server).await.unwrap().unwrap();
        let refused = pushed.expect_err("the channel let its peer push a stream");
        assert!(refused.contains("push"), "{refused}");
    }

    /// What the server of one call saw of its request body once the caller
    /// stopped wanting the answer (`answer_headers`: it had answered its
    /// headers first), with the request body still open: reset or not.
    async fn server_sees_reset_when_the_answer_is_not_wanted(answer_headers: bool) -> bool {
        let (client_io, server_io) = tokio::io::duplex(1 << 20);
        let (seen, saw) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut conn = h2::server::handshake(server_io).await.unwrap();
            let (req, mut respond) = conn.accept().await.unwrap().unwrap();
            tokio::spawn(async move { while conn.accept().await.is_some() {} });
            let _send = answer_headers.then(|| respond.send_response(http::Response::new(()), false).unwrap());
            let mut body = req.into_body();
            let reset = loop {
                match body.data().await {
                    Some(Ok(d)) => drop(body.flow_control().release_capacity(d.len())),
                    Some(Err(e)) => break e.reason() == Some(h2::Reason::CANCEL),
                    None => break false,
                }
            };
            let _ = seen.send(reset);
        });
        let (channel, conn) = H2Channel::handshake(client_io).await.unwrap();
        tokio::spawn(conn);
        // A request body that never ends while the test runs.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, tonic::Status>>(1);
        tx.send(Ok(Frame::data(Bytes::from_static(b"first")))).await.unwrap();
        let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
        let mut ch = channel.clone();
        let call =
            ch.call(http::Request::post("/t.T/M").body(Body::new(http_body_util::StreamBody::new(stream))).unwrap());
        if answer_headers {
            drop(call.await.expect("answered"));
        } else {
            // The caller gives up before the answer's headers.
            assert!(tokio::time::timeout(Duration::from_millis(100), call).await.is_err());
        }
        let seen = tokio::time::timeout(Duration::from_secs(2), saw).await;
        drop(tx);
        seen.is_ok_and(|r| r == Ok(true))
    }

    #[tokio::test]
    async fn a_streaming_request_whose_answer_is_dropped_is_reset_for_the_peer() {
        assert!(server_sees_reset_when_the_answer_is_not_wanted(true).await, "the request stream went on");
    }

    #[tokio::test]
    async fn a_streaming_request_whose_call_is_dropped_before_its_answer_is_reset_for_the_peer() {
        assert!(server_sees_reset_when_the_answer_is_not_wanted(false).await, "the request stream went on");
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

    /// Makes `bodies.len()` calls at once on a channel to an h2 server with
    /// a small connection window, as a busy plugin's is (h2 then allows
    /// about 128 small DATA frames unread); `go` lets late bodies come once
    /// every call is open. The server takes every call before reading any
    /// body, then reads them all; returns the bytes it read and the
    /// smallest DATA frame it read that did not end its body, or why it
    /// closed the connection.
    async fn crowd_on_a_shut_window(
        bodies: Vec<Body>,
        go: Option<tokio::sync::watch::Sender<bool>>,
    ) -> Result<(usize, usize), String> {
        let calls_n = bodies.len();
        let (client_io, server_io) = tokio::io::duplex(1 << 20);
        let (all_open, opened) = tokio::sync::oneshot::channel();
        let server = tokio::spawn(async move {
            let mut conn = h2::server::Builder::new()
                .initial_connection_window_size(65_535)
                .handshake::<_, Bytes>(server_io)
                .await
                .unwrap();
            let mut bodies = Vec::new();
            while bodies.len() < calls_n {
                match conn.accept().await {
                    Some(Ok((req, respond))) => bodies.push((req.into_body(), respond)),
                    Some(Err(e)) => return Err(e),
                    None => return Ok((0, 0)),
                }
            }
            let _ = all_open.send(());
            let readers: Vec<_> = bodies
                .into_iter()
                .map(|(mut body, mut respond)| {
                    tokio::spawn(async move {
                        let (mut read, mut smallest, mut previous) = (0, usize::MAX, None);
                        while let Some(Ok(data)) = body.data().await {
                            read += data.len();
                            let _ = body.flow_control().release_capacity(data.len());
                            smallest = smallest.min(previous.replace(data.len()).unwrap_or(usize::MAX));
                        }
                        let _ = respond.send_response(http::Response::new(()), true);
                        (read, smallest)
                    })
                })
                .collect();
            let reader = async move {
                let (mut read, mut smallest) = (0, usize::MAX);
                for r in readers {
                    let (n, least) = r.await.unwrap_or((0, 0));
                    read += n;
                    smallest = smallest.min(least);
                }
                (read, smallest)
            };
            tokio::pin!(reader);
            let read = tokio::select! {
                read = &mut reader => read,
                closed = futures_util::future::poll_fn(|cx| conn.poll_closed(cx)) => return closed.map(|()| (0, 0)),
            };
            // The answers still have to leave.
            tokio::spawn(async move { futures_util::future::poll_fn(|cx| conn.poll_closed(cx)).await });
            Ok(read)
        });
        let (channel, conn) = H2Channel::handshake(client_io).await.unwrap();
        let conn = tokio::spawn(conn);
        let mut calls = Vec::new();
        for body in bodies {
            let mut ch = channel.clone();
            let req = http::Request::post("/t.T/M").body(body).unwrap();
            calls.push(tokio::spawn(async move { ch.call(req).await.map(|r| r.status()) }));
        }
        if let Some(go) = go {
            // Every call is open, waiting for its body.
            let _ = opened.await;
            go.send(true).unwrap();
        }
        let read = tokio::time::timeout(Duration::from_secs(10), server).await.expect("server hung").unwrap();
        let read = read.map_err(|e| e.to_string())?;
        for c in calls {
            assert_eq!(c.await.unwrap().map_err(|e| e.to_string()), Ok(http::StatusCode::OK));
        }
        conn.abort();
        Ok(read)
    }

    #[tokio::test]
    async fn many_calls_at_once_on_a_shut_window_send_no_slivers_the_peer_would_close_the_connection_for() {
        const CALLS: usize = 200;
        let (go, ready) = tokio::sync::watch::channel(false);
        let bodies = (0..CALLS).map(|_| late_body(ready.clone())).collect();
        let (read, smallest) =
            crowd_on_a_shut_window(bodies, Some(go)).await.expect("the server closed the connection");
        assert_eq!(read, CALLS * (16 << 10));
        assert!(smallest >= MIN_DATA_FRAME, "a DATA frame of {smallest} bytes left before the body's end");
    }

    /// A request body whose frames come only after the call has started,
    /// all at once, as a streaming caller's (or a caller's whose request the
    /// gateway took in pieces) does; its end is told only by the next poll,
    /// as a body taken from an h2 stream tells it.
    fn late_frames(ready: tokio::sync::watch::Receiver<bool>, lens: &[usize]) -> Body {
        let frames: Vec<_> =
            lens.iter().map(|&n| Ok::<_, tonic::Status>(Frame::data(Bytes::from(vec![7u8; n])))).collect();
        let stream = futures_util::StreamExt::flatten(futures_util::stream::once(async move {
            let mut ready = ready;
            let _ = ready.wait_for(|r| *r).await;
            futures_util::stream::iter(frames)
        }));
        Body::new(http_body_util::StreamBody::new(Box::pin(stream)))
    }

    #[tokio::test]
    async fn many_calls_whose_bodies_come_in_small_frames_send_none_the_peer_would_close_the_connection_for() {
        // A gRPC message's 5-byte prefix apart from the message, then a
        // message of a frame and a bit: small frames each, were they
        // passed on as they came.
        const CALLS: usize = 200;
        let (go, ready) = tokio::sync::watch::channel(false);
        let bodies = (0..CALLS).map(|_| late_frames(ready.clone(), &[5, 16384, 11])).collect();
        let (read, smallest) =
            crowd_on_a_shut_window(bodies, Some(go)).await.expect("the server closed the connection");
        assert_eq!(read, CALLS * (5 + 16384 + 11));
        assert!(smallest >= MIN_DATA_FRAME, "a DATA frame of {smallest} bytes left before the body's end");
    }

    #[tokio::test]
    async fn empty_data_frames_in_bodies_are_not_passed_on() {
        // h2 closes a connection that sends it 100 empty DATA frames not
        // ending their stream, in the connection's whole life: as many
        // calls whose callers send one each must not end every call.
        const CALLS: usize = 150;
        let (go, ready) = tokio::sync::watch::channel(false);
        let bodies = (0..CALLS).map(|_| late_frames(ready.clone(), &[0, 16, 0])).collect();
        let (read, _) = crowd_on_a_shut_window(bodies, Some(go)).await.expect("the server closed the connection");
        assert_eq!(read, CALLS * 16);
    }

    #[tokio::test]
    async fn the_end_of_a_body_rides_on_its_last_data_when_it_is_known_in_time() {
        // A message of a frame and a bit, its end told only once the bit
        // is taken: the bit and END_STREAM leave together, not the bit
        // alone (a small frame the peer holds) and an empty frame after.
        const CALLS: usize = 200;
        let (go, ready) = tokio::sync::watch::channel(false);
        let bodies = (0..CALLS).map(|_| late_frames(ready.clone(), &[16384, 11])).collect();
        let (read, smallest) =
            crowd_on_a_shut_window(bodies, Some(go)).await.expect("the server closed the connection");
        assert_eq!(read, CALLS * (16384 + 11));
        assert!(smallest >= MIN_DATA_FRAME, "a DATA frame of {smallest} bytes left before the body's end");
    }

    #[tokio::test]
    async fn many_small_whole_bodies_at_once_on_a_shut_window_keep_the_connection() {
        // Handed to h2 with their headers: where a stream opens with less room than its
        // body, h2 sends the part that fits, a small frame the peer may hold. Bodies of
        // 12 bytes fit the window whole (each ends its stream in its one frame); the
        // others outgrow it and are cut.
        const CALLS: usize = 2000;
        for len in [12, 300, MIN_DATA_FRAME - 1] {
            let bodies =
                (0..CALLS).map(|_| Body::new(http_body_util::Full::new(Bytes::from(vec![7u8; len])))).collect();
            let (read, _) = crowd_on_a_shut_window(bodies, None)
                .await
                .unwrap_or_else(|e| panic!("bodies of {len} bytes: the server closed the connection: {e}"));
            assert_eq!(read, CALLS * len);
        }
    }

    #[tokio::test]
    async fn many_complete_bodies_at_once_on_a_shut_window_send_no_slivers_either() {
        // Unary requests of 5 KB, complete when sent: what a crowd of
        // callers sends through the gateway. They share the connection's
        // window out in pieces that do not fall on their bounds.
        const CALLS: usize = 200;
        const LEN: usize = 5003;
        let bodies = (0..CALLS).map(|_| Body::new(http_body_util::Full::new(Bytes::from(vec![7u8; LEN])))).collect();
        let (read, smallest) = crowd_on_a_shut_window(bodies, None).await.expect("the server closed the connection");
        assert_eq!(read, CALLS * LEN);
        assert!(smallest >= MIN_DATA_FRAME, "a DATA frame of {smallest} bytes left before the body's end");
    }

    /// A streaming request body fed from `rx`, a frame at a time.
    fn fed(rx: tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, tonic::Status>>) -> Body {
        Body::new(http_body_util::StreamBody::new(tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    const MESSAGE: Bytes = Bytes::from_static(&[0, 0, 0, 0, 0]);

    /// `calls` calls at once whose bodies are `n` messages of 5 bytes each, to an h2
    /// server with its default budget for the overhead of small DATA frames it holds
    /// unread (about 130 of these). `chat` (one call): the server reads each message as
    /// it comes and answers it, and the caller sends the next once answered; else the
    /// callers send one a millisecond, and the server reads none until every body has
    /// ended (its handler busy). The sizes of the DATA frames the server read, or why
    /// it closed the connection.
    async fn short_messages(calls: usize, n: usize, chat: bool) -> Result<Vec<usize>, String> {
        let (client_io, server_io) = tokio::io::duplex(1 << 20);
        let (go, mut went) = tokio::sync::watch::channel(false);
        let server = tokio::spawn(async move {
            let mut conn =
                h2::server::Builder::new().handshake::<_, Bytes>(server_io).await.map_err(|e| e.to_string())?;
            let mut taken = Vec::new();
            while taken.len() < calls {
                let (req, mut respond) = conn.accept().await.expect("a call").map_err(|e| e.to_string())?;
                let answer = respond.send_response(http::Response::new(()), false).map_err(|e| e.to_string())?;
                taken.push((req.into_body(), answer));
            }
            let closed = tokio::spawn(async move { futures_util::future::poll_fn(|cx| conn.poll_closed(cx)).await });
            if !chat {
                let _ = went.wait_for(|g| *g).await;
            }
            let mut frames = Vec::new();
            for (mut body, mut answer) in taken {
                while let Some(data) = body.data().await {
                    let Ok(data) = data else {
                        let why = closed.await.unwrap().err();
                        return Err(why.map_or_else(|| "the stream failed".into(), |e| e.to_string()));
                    };
                    if data.is_empty() {
                        continue; // The body's end, alone.
                    }
                    frames.push(data.len());
                    let _ = body.flow_control().release_capacity(data.len());
                    if chat {
                        // A gRPC message: "ok".
                        let ok = Bytes::from_static(&[0, 0, 0, 0, 2, b'o', b'k']);
                        answer.send_data(ok, false).map_err(|e| e.to_string())?;
                    }
                }
                answer.send_data(Bytes::new(), true).map_err(|e| e.to_string())?;
            }
            Ok(frames)
        });
        let (channel, conn) = H2Channel::handshake(client_io).await.unwrap();
        let conn = tokio::spawn(conn);
        let callers: Vec<_> = (0..calls)
            .map(|_| {
                let mut channel = channel.clone();
                tokio::spawn(async move {
                    let (tx, rx) = tokio::sync::mpsc::channel(1);
                    let req = http::Request::post("/t.T/M").body(fed(rx)).unwrap();
                    let mut answers = channel.call(req).await.map_err(|e| e.to_string())?.into_body();
                    for _ in 0..n {
                        // The stream gone (the connection closed): the server says why.
                        if tx.send(Ok(Frame::data(MESSAGE))).await.is_err() {
                            break;
                        }
                        if chat {
                            match tokio::time::timeout(Duration::from_secs(5), answers.frame()).await {
                                Ok(Some(Ok(f))) if f.is_data() => {}
                                other => return Err(format!("no answer: {other:?}")),
                            }
                        } else {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    }
                    Ok::<_, String>(answers)
                })
            })
            .collect();
        let mut answers = Vec::new();
        for caller in callers {
            answers.push(caller.await.unwrap()?);
        }
        let _ = go.send(true);
        let frames = tokio::time::timeout(Duration::from_secs(10), server).await.expect("server hung").unwrap()?;
        drop(answers);
        conn.abort();
        Ok(frames)
    }

    /// What an h2 server counted against its budget, every frame of `frames` unread but
    /// the last of each body (which ended it, unless the end came alone: 251 bytes short).
    fn overhead(frames: &[usize], calls: usize) -> usize {
        frames.iter().map(|&len| SMALL_FRAME.saturating_sub(len)).sum::<usize>().saturating_sub(calls * 251)
    }

    // On a paused clock (it moves only when every task waits): the messages' pace and the
    // wait for them to be joined are exact however loaded the machine is.
    #[tokio::test(start_paused = true)]
    async fn short_messages_a_peer_does_not_read_leave_joined_before_its_h2_would_close_the_connection() {
        const N: usize = 400;
        let frames = short_messages(1, N, false).await.unwrap_or_else(|e| panic!("the call failed: {e}"));
        assert_eq!(frames.iter().sum::<usize>(), N * 5, "{frames:?}");
        assert!(overhead(&frames, 1) < 25_600, "{} bytes of overhead: {frames:?}", overhead(&frames, 1));
        assert!(frames.len() < N / 4, "few were joined: {frames:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn short_messages_of_many_streams_at_once_wait_to_be_joined_though_each_has_few() {
        // 8 calls of 24 messages: each under its own count, all together over the
        // connection's, and 192 frames alone would cost the server 48,192.
        const CALLS: usize = 8;
        const N: usize = 24;
        let frames = short_messages(CALLS, N, false).await.unwrap_or_else(|e| panic!("the calls failed: {e}"));
        assert_eq!(frames.iter().sum::<usize>(), CALLS * N * 5, "{frames:?}");
        let cost = overhead(&frames, CALLS);
        assert!(cost < 25_600, "{cost} bytes of overhead: {frames:?}");
        assert!(frames.len() < CALLS * N / 2, "few were joined: {frames:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn short_messages_of_a_chat_the_peer_answers_each_leave_one_by_one_at_once() {
        const N: usize = 400;
        let started = tokio::time::Instant::now();
        let frames = short_messages(1, N, true).await.unwrap_or_else(|e| panic!("the chat failed: {e}"));
        assert_eq!(frames, vec![5; N], "a chat's message waited to be joined");
        // The clock moves only when every task waits on it: nothing did.
        assert!(started.elapsed() < JOIN_WAIT, "a chat's messages waited {:?}", started.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn a_small_frame_waiting_to_be_joined_leaves_alone_once_its_wait_is_over() {
        use crate::small_frames::UNANSWERED;
        let (client_io, server_io) = tokio::io::duplex(1 << 20);
        // The server reads each frame as it comes, and answers nothing.
        let (arrived_tx, mut arrived) = tokio::sync::mpsc::unbounded_channel();
        let server = tokio::spawn(async move {
            let mut conn = h2::server::Builder::new().handshake::<_, Bytes>(server_io).await.unwrap();
            let (req, _respond) = conn.accept().await.unwrap().unwrap();
            tokio::spawn(async move { futures_util::future::poll_fn(|cx| conn.poll_closed(cx)).await });
            let mut body = req.into_body();
            while let Some(Ok(data)) = body.data().await {
                let _ = body.flow_control().release_capacity(data.len());
                if !data.is_empty() {
                    let _ = arrived_tx.send((data.len(), tokio::time::Instant::now()));
                }
            }
        });
        let (mut channel, conn) = H2Channel::handshake(client_io).await.unwrap();
        let conn = tokio::spawn(conn);
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let call =
            tokio::spawn(async move { channel.call(http::Request::post("/t.T/M").body(fed(rx)).unwrap()).await });
        // Each of these leaves alone: the next is sent once the server has it.
        for _ in 0..UNANSWERED {
            tx.send(Ok(Frame::data(MESSAGE))).await.expect("the stream ended");
            let (len, _) = tokio::time::timeout(Duration::from_secs(5), arrived.recv()).await.unwrap().unwrap();
            assert_eq!(len, 5);
        }
        let sent = tokio::time::Instant::now();
        tx.send(Ok(Frame::data(MESSAGE))).await.expect("the stream ended");
        let (len, at) = tokio::time::timeout(Duration::from_secs(5), arrived.recv()).await.unwrap().unwrap();
        assert_eq!(len, 5, "nothing came to join it");
        let waited = at - sent;
        assert!(waited >= JOIN_WAIT, "it left after {waited:?}, without waiting to be joined");
        assert!(waited < Duration::from_secs(2), "it waited {waited:?}, as if for the body's end");
        drop(tx);
        tokio::time::timeout(Duration::from_secs(5), server).await.expect("server hung").unwrap();
        call.abort();
        conn.abort();
    }
}
