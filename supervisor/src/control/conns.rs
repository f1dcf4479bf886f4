//! The control socket's connections: how many may be open at once, how long one may wait
//! before its first request or sit idle between requests, and how many follow streams
//! (`events -f`, `tail -f`) may be open across them. Without these an admitted peer (a
//! runaway script running as root) could hold the daemon's every descriptor with
//! connections that never ask anything, and then no plugin could restart and no command be
//! answered: the control socket's connections must fit within `fd_reserve`.
//!
//! At the bound a newcomer takes the place of the connection waiting longest for its
//! first request, else of the one idle longest, as the gateway's connections do
//! (`routing::conns`): a flood of silent connections cannot lock an operator out. A
//! connection with a request open (a command running, a follow stream) is never closed
//! for a newcomer: with all of them busy the newcomer is refused, and told why.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tonic::body::Body;

/// Control connections at most, when `fd_reserve` is large enough: far more than
/// operators and their scripts open at once, and a small share of the default reserve.
pub const MAX_CONNECTIONS: usize = 128;
/// The share of `fd_reserve` control connections may hold: the rest is for plugin
/// restarts (each needs a few descriptors: the binary's copy, pipes, a pidfd, sockets).
const RESERVE_SHARE: u64 = 8;
/// Follow streams (`events -f`, `tail -f`) open at once across the control socket: each
/// holds a broadcast receiver and a task's buffers (about 30 KiB).
pub const MAX_FOLLOWS: usize = 64;
/// Requests one control connection may have open at once; `supervisorctl` sends one.
const STREAMS_PER_CONNECTION: u32 = 16;
/// How long a new connection has to make its first request (the HTTP/2 preface first):
/// as long as the gateway's `preface_timeout` default.
const FIRST_REQUEST: Duration = Duration::from_secs(5);
/// How long a connection that has made requests may sit with none open. `supervisorctl
/// top` asks every few seconds on one connection.
const IDLE: Duration = Duration::from_secs(60);
/// How long a connection told GOAWAY has to take its last answers.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The control socket's bounds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub connections: usize,
    pub follows: usize,
    pub first_request: Duration,
    pub idle: Duration,
}

impl Limits {
    /// The bounds for a daemon whose gateway keeps `fd_reserve` descriptors free: at most
    /// an eighth of them (and at most [`MAX_CONNECTIONS`]) for control connections.
    pub fn within(fd_reserve: u64) -> Self {
        let share = usize::try_from(fd_reserve / RESERVE_SHARE).unwrap_or(usize::MAX);
        Self {
            connections: share.clamp(1, MAX_CONNECTIONS),
            follows: MAX_FOLLOWS,
            first_request: FIRST_REQUEST,
            idle: IDLE,
        }
    }
}

/// Every control connection has a request open: a newcomer is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the supervisor's control socket is serving {limit} connections, each with a command or a follow stream \
     (events -f, tail -f) open, as many as it takes at once; try again once one has ended"
)]
pub struct Full {
    pub limit: usize,
}

/// Every open control connection, by id: those that have not made a request yet and those
/// that have but have none open, each in the order they became so.
pub struct Conns {
    limit: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Orders idleness; never reused.
    next: u64,
    open: HashMap<u64, Entry>,
    /// Idle order → connection, for those that never made a request.
    fresh: BTreeMap<u64, u64>,
    /// The same, for those that have.
    idle: BTreeMap<u64, u64>,
}

struct Entry {
    requests: usize,
    /// Its key in `fresh` or `idle` while it has no request open.
    idle_key: Option<u64>,
    used: bool,
    idle_since: Instant,
    close: Arc<Notify>,
}

/// A connection taken, and whether another was closed to make room for it.
pub struct Admitted {
    pub conn: Conn,
    pub evicted: bool,
}

impl Conns {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self { limit, state: Mutex::new(State::default()) })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned one is still whole.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Takes a new connection. At the bound, the one waiting longest for its first request,
    /// else the one idle longest, is told to close and stops counting at once; with every
    /// one busy, the newcomer is refused.
    pub fn admit(self: &Arc<Self>) -> Result<Admitted, Full> {
        let mut st = self.lock();
        let mut evicted = false;
        if st.open.len() >= self.limit {
            let Some((_, id)) = st.fresh.pop_first().or_else(|| st.idle.pop_first()) else {
                return Err(Full { limit: self.limit });
            };
            if let Some(e) = st.open.remove(&id) {
                e.close.notify_one();
                evicted = true;
            }
        }
        st.next += 1;
        let (id, key) = (st.next, st.next);
        let close = Arc::new(Notify::new());
        let entry =
            Entry { requests: 0, idle_key: Some(key), used: false, idle_since: Instant::now(), close: close.clone() };
        st.open.insert(id, entry);
        st.fresh.insert(key, id);
        Ok(Admitted { conn: Conn { id, conns: self.clone(), close, used: AtomicBool::new(false) }, evicted })
    }

    /// Whether the next connection takes an open one's place (or is refused).
    pub fn full(&self) -> bool {
        self.lock().open.len() >= self.limit
    }

    pub fn open(&self) -> usize {
        self.lock().open.len()
    }

    fn request_started(&self, id: u64) {
        let mut st = self.lock();
        let st = &mut *st;
        let Some(e) = st.open.get_mut(&id) else { return };
        e.requests += 1;
        if let Some(key) = e.idle_key.take() {
            if e.used { &mut st.idle } else { &mut st.fresh }.remove(&key);
            e.used = true;
        }
    }

    fn request_ended(&self, id: u64) {
        let mut st = self.lock();
        st.next += 1;
        let key = st.next;
        let st = &mut *st;
        let Some(e) = st.open.get_mut(&id) else { return };
        e.requests = e.requests.saturating_sub(1);
        if e.requests == 0 {
            e.idle_key = Some(key);
            e.idle_since = Instant::now();
            st.idle.insert(key, id);
        }
    }

    /// Since when the connection has had no request open, and whether it ever had one;
    /// `None` while it has one (or once it no longer counts).
    fn idle_since(&self, id: u64) -> Option<(Instant, bool)> {
        let st = self.lock();
        st.open.get(&id).filter(|e| e.requests == 0).map(|e| (e.idle_since, e.used))
    }

    fn closed(&self, id: u64) {
        let mut st = self.lock();
        if let Some(e) = st.open.remove(&id)
            && let Some(key) = e.idle_key
        {
            if e.used { &mut st.idle } else { &mut st.fresh }.remove(&key);
        }
    }
}

/// One open control connection; dropping it stops it counting.
pub struct Conn {
    id: u64,
    conns: Arc<Conns>,
    close: Arc<Notify>,
    used: AtomicBool,
}

impl Conn {
    /// Resolves when a newcomer has taken this connection's place.
    pub async fn evicted(&self) {
        self.close.notified().await;
    }

    /// Marks a request open until the guard is dropped.
    pub fn request(self: &Arc<Self>) -> Open {
        self.conns.request_started(self.id);
        self.used.store(true, Ordering::Relaxed);
        Open { conn: self.clone() }
    }

    pub fn idle_since(&self) -> Option<(Instant, bool)> {
        self.conns.idle_since(self.id)
    }

    /// Whether it has made a request; once closed for a newcomer it no longer counts, and
    /// what it was is kept here.
    fn used(&self) -> bool {
        self.used.load(Ordering::Relaxed)
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.conns.closed(self.id);
    }
}

/// A request open on a connection, until its answer has been sent or abandoned.
pub struct Open {
    conn: Arc<Conn>,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.conn.conns.request_ended(self.conn.id);
    }
}

/// The follow streams open across the control socket.
#[derive(Clone, Debug)]
pub struct Follows {
    limit: usize,
    slots: Arc<Semaphore>,
}

impl Follows {
    pub fn new(limit: usize) -> Self {
        Self { limit, slots: Arc::new(Semaphore::new(limit)) }
    }

    /// A slot for one more follow stream, held as long as the stream; refused when as many
    /// are open as may be.
    pub fn take(&self) -> Result<OwnedSemaphorePermit, tonic::Status> {
        self.slots.clone().try_acquire_owned().map_err(|_| {
            tonic::Status::resource_exhausted(format!(
                "{} follow streams (events -f, tail -f) are open on the supervisor's control socket, as many as it \
                 serves at once; end one, or read without following",
                self.limit
            ))
        })
    }
}

/// Serves one admitted connection with `svc` until it ends, is closed for a newcomer, has
/// made no request within `first_request`, or has had none open for `idle`.
pub async fn serve<S>(io: tokio::net::UnixStream, svc: S, conn: Conn, limits: Limits)
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let conn = Arc::new(conn);
    let tracked = Tracked { inner: svc, conn: conn.clone() };
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder.max_concurrent_streams(STREAMS_PER_CONNECTION);
    let served = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(tracked));
    tokio::pin!(served);
    let check = tokio::time::sleep(limits.first_request);
    tokio::pin!(check);
    loop {
        tokio::select! {
            ended = served.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(error = %e, "control connection ended with an error");
                }
                return;
            }
            () = conn.evicted() => {
                tracing::debug!("control connection closed to make room for a new one");
                // One that has asked nothing is closed at once: in a flood of them, a
                // grace for each would hold thousands of descriptors.
                if conn.used() {
                    break;
                }
                return;
            }
            () = &mut check => {
                let now = Instant::now();
                match conn.idle_since() {
                    // Dropped: it has asked nothing, so nothing is lost.
                    Some((since, false)) if now >= since + limits.first_request => {
                        tracing::debug!(timeout = ?limits.first_request, "control connection made no request in time");
                        return;
                    }
                    Some((since, true)) if now >= since + limits.idle => {
                        tracing::debug!(timeout = ?limits.idle, "closing an idle control connection");
                        break;
                    }
                    Some((since, used)) => check.as_mut().reset(since + if used { limits.idle } else { limits.first_request }),
                    // A request is open (a follow stream may stay open for days): checked again later.
                    None => check.as_mut().reset(now + limits.idle),
                }
            }
        }
    }
    // GOAWAY, so a request on its way is refused cleanly rather than cut off.
    served.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(CLOSE_GRACE, served).await;
}

/// The control service, noting each request open on its connection until its answer ends.
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    conn: Arc<Conn>,
}

impl<S> tower::Service<http::Request<Incoming>> for Tracked<S>
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

    fn call(&mut self, req: http::Request<Incoming>) -> Self::Future {
        let open = self.conn.request();
        let answer = self.inner.call(req.map(Body::new));
        Box::pin(async move {
            let response = answer.await?;
            Ok(response.map(|body| Body::new(Answer { body, _open: open })))
        })
    }
}

/// An answer's body, holding its request open until it has been sent or abandoned.
struct Answer {
    body: Body,
    _open: Open,
}

impl http_body::Body for Answer {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, tonic::Status>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn told_to_close(c: &Conn) -> bool {
        tokio::time::timeout(Duration::from_millis(100), c.evicted()).await.is_ok()
    }

    #[tokio::test]
    async fn at_the_bound_a_silent_connection_makes_room_and_with_every_one_busy_a_newcomer_is_refused() {
        let conns = Conns::new(3);
        let a = Arc::new(conns.admit().unwrap().conn);
        let b = Arc::new(conns.admit().unwrap().conn);
        let c = conns.admit().unwrap().conn;
        // `a` made a request and is idle again; `b` follows; `c` has asked nothing.
        drop(a.request());
        let follow = b.request();
        let d = conns.admit().unwrap();
        assert!(d.evicted && told_to_close(&c).await, "c, which never asked anything, made room");
        assert!(!told_to_close(&a).await && !told_to_close(&b).await);
        assert_eq!(conns.open(), 3, "c stopped counting when it was told to close");
        let d = Arc::new(d.conn);
        let _asking = d.request();
        let e = conns.admit().unwrap();
        assert!(e.evicted && told_to_close(&a).await, "a, idle, made room for e");
        let _asking_too = Arc::new(e.conn).request();
        // Every connection has a request open (b a follow stream): the newcomer is refused.
        assert_eq!(conns.admit().err(), Some(Full { limit: 3 }));
        assert!(!told_to_close(&b).await, "a follow stream is never closed for a newcomer");
        drop(follow);
        let f = conns.admit().unwrap();
        assert!(f.evicted && told_to_close(&b).await, "b is idle once its follow stream ended, and makes room");
        drop((a, b, c));
        assert_eq!(conns.open(), 3, "d, e and f");
    }

    #[test]
    fn control_connections_take_an_eighth_of_the_reserve_at_most_128() {
        assert_eq!(Limits::within(1024).connections, 128);
        assert_eq!(Limits::within(1 << 20).connections, 128);
        assert_eq!(Limits::within(64).connections, 8);
        assert_eq!(Limits::within(1024).first_request, Duration::from_secs(5));
    }

    #[test]
    fn follow_streams_past_the_bound_are_refused_until_one_ends() {
        let follows = Follows::new(2);
        let one = follows.take().unwrap();
        let _two = follows.take().unwrap();
        let refused = follows.take().unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(refused.message().starts_with("2 follow streams (events -f, tail -f) are open"), "{refused:?}");
        drop(one);
        assert!(follows.take().is_ok());
    }

    /// Answers every request with a body that never ends, as a follow stream's.
    fn following() -> impl tower::Service<
        http::Request<Body>,
        Response = http::Response<Body>,
        Error = Infallible,
        Future = impl Send + 'static,
    > + Clone
    + Send
    + 'static {
        tower::service_fn(|_| async {
            let body = http_body_util::StreamBody::new(futures_util::stream::pending::<
                Result<http_body::Frame<Bytes>, tonic::Status>,
            >());
            Ok::<_, Infallible>(http::Response::new(Body::new(body)))
        })
    }

    fn short() -> Limits {
        Limits { first_request: Duration::from_millis(300), idle: Duration::from_millis(300), ..Limits::within(1024) }
    }

    #[tokio::test]
    async fn a_connection_that_asks_nothing_is_closed_but_a_follow_stream_is_not() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let conns = Conns::new(8);
        // Only a part of the preface, then nothing.
        let (ours, mut silent) = tokio::net::UnixStream::pair().unwrap();
        let served = tokio::spawn(serve(ours, following(), conns.admit().unwrap().conn, short()));
        silent.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
        // A follower: one request, whose answer never ends.
        let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
        let follower = tokio::spawn(serve(ours, following(), conns.admit().unwrap().conn, short()));
        let (mut client, h2) = h2::client::handshake(theirs).await.unwrap();
        let driven = tokio::spawn(h2);
        let req = http::Request::post("http://control/c.C/Follow").body(()).unwrap();
        let (answer, send) = client.send_request(req, false).unwrap();
        let mut body = answer.await.unwrap().into_body();
        assert_eq!(conns.open(), 2);

        let mut buf = [0u8; 256];
        let read = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                match silent.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(read.is_ok(), "a connection that asked nothing was held past its first-request timeout");
        tokio::time::timeout(Duration::from_secs(1), served).await.expect("its task ended").unwrap();
        // Many idle timeouts later the follower is still served.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(conns.open(), 1);
        assert!(!follower.is_finished() && !driven.is_finished(), "a follow stream was timed out");
        assert!(tokio::time::timeout(Duration::from_millis(50), body.data()).await.is_err(), "its answer ended");
        // Once it stops following, the connection is idle, and closed after the idle timeout.
        drop((body, send, client));
        tokio::time::timeout(Duration::from_secs(3), follower).await.expect("an idle connection was kept").unwrap();
        assert_eq!(conns.open(), 0);
    }
}
