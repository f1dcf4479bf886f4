//! The control socket's connections: how many may be open at once, how long one may take
//! to send the HTTP/2 preface, which one makes room for a newcomer at the bound, and how
//! many follow streams (`events -f`, `tail -f`) may be open across them. Without these an
//! admitted peer (a runaway script running as root) could hold the daemon's every
//! descriptor with connections that never ask anything, and then no plugin could restart
//! and no command be answered: the control socket's connections must fit within
//! `fd_reserve`.
//!
//! The bound is strict: a connection counts from its admission until its task has ended
//! and its descriptor is closed, also while it is closing. There is no idle timeout (it
//! would add nothing to the bound, and `supervisorctl top -d 300` keeps one connection
//! idle between looks): at the bound a newcomer takes the place of, in this order,
//!
//! 1. the connection that has waited longest for its first request, once connected at
//!    least [`MIN_AGE`] (a younger one may have its first request on the way);
//! 2. the one idle longest (told GOAWAY; a request that raced it in is still served);
//! 3. with no silent connection left at all, the one whose requests have all been open
//!    longest, past [`LONG_REQUEST`] (told GOAWAY, its streams reset after a grace).
//!
//! The third is what keeps operators (`ExecReload=supervisorctl update`, a liveness probe)
//! from being locked out by connections whose requests never end: a client that sends
//! HEADERS without END_STREAM, a reader that stopped reading a long `tail`, a
//! server-streaming `call`. Follow streams count there too: they are bounded by their own
//! count, but 128 connections each following would lock everyone else out as surely, and
//! a follower cut after ten minutes or more reconnects (`tail -n` gives it what it
//! missed). They go only when nothing silent or idle is left, and the one busy longest
//! goes first. With none to take the place of, the newcomer is refused, and told why.

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
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
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
/// holds its place in a history and a task's buffers (about 30 KiB, so 30 MiB at most).
/// Enough for per-plugin log shipping on a large host (the daemon runs up to 1,000
/// plugins), with clients that multiplex their streams on a few connections.
pub const MAX_FOLLOWS: usize = 1024;
/// Requests one control connection may have open at once; `supervisorctl` sends one.
const STREAMS_PER_CONNECTION: u32 = 16;
/// How long a new connection has to send the HTTP/2 preface and its SETTINGS: as long as
/// the gateway's `preface_timeout` default. Only the preface is timed: a client may connect
/// early and ask later (`supervisorctl call -d @-` reading a slow stdin, a gRPC client
/// waiting for its channel to be ready); such a connection is first to go at the bound.
const PREFACE: Duration = Duration::from_secs(5);
/// How long a connection has been open before it may be closed, silent, for a newcomer:
/// its first request may already sit unread in its socket.
pub const MIN_AGE: Duration = Duration::from_secs(1);
/// How long every request open on a connection must have been open before the
/// connection may be closed for a newcomer: twice the longest `supervisorctl` waits for a
/// command (`update`, `reload`, `rollout`: 300 s), so no command that ends is cut.
pub const LONG_REQUEST: Duration = Duration::from_secs(600);
/// How long a connection told GOAWAY, closed with no request open, has to take its last
/// answers; only requests it started within it are served to their end. One closed for
/// requests open past [`LONG_REQUEST`] has its streams reset at once.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// How long a newcomer waits for the connection closed for it to end: a silent or busy one
/// ends at once, an idle one (or a silent one with bytes waiting unread) once it has read
/// GOAWAY (or after [`CLOSE_GRACE`]). It waits
/// in a task of its own, never in the accept loop.
pub const ROOM_WAIT: Duration = Duration::from_secs(2);
/// Newcomers waiting at once for a connection closed for them to end; more are refused.
pub const MAX_WAITING: usize = 16;

/// The control socket's bounds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub connections: usize,
    pub follows: usize,
    /// How long a new connection has to send the HTTP/2 preface.
    pub preface: Duration,
    /// See [`MIN_AGE`].
    pub min_age: Duration,
    /// See [`LONG_REQUEST`].
    pub long_request: Duration,
}

impl Limits {
    /// The bounds for a daemon whose gateway keeps `fd_reserve` descriptors free: at most
    /// an eighth of them (and at most [`MAX_CONNECTIONS`]) for control connections.
    pub fn within(fd_reserve: u64) -> Self {
        let share = usize::try_from(fd_reserve / RESERVE_SHARE).unwrap_or(usize::MAX);
        Self {
            connections: share.clamp(1, MAX_CONNECTIONS),
            follows: MAX_FOLLOWS,
            preface: PREFACE,
            min_age: MIN_AGE,
            long_request: LONG_REQUEST,
        }
    }
}

/// No control connection can make room for a newcomer: it is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the supervisor's control socket is serving {limit} connections, as many as it takes at once, and none can \
     make room now (each has a command or a follow stream (events -f, tail -f) open, has just connected, or is \
     closing); try again shortly"
)]
pub struct Full {
    pub limit: usize,
}

/// Connections that may hold follow streams at once out of `limit`: the rest, at least two
/// (an eighth of a large bound), are kept for commands (`ExecReload=supervisorctl update`,
/// liveness probes), which followers never lock out.
pub fn follow_connections(limit: usize) -> usize {
    limit.saturating_sub((limit / 8).max(2))
}

/// Why a connection was closed for a newcomer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Evicted {
    /// It had made no request.
    Silent,
    /// It had none open.
    Idle,
    /// Every request open on it had been open past the bound.
    Busy,
}

/// Every open control connection, by id: those that have not made a request yet and those
/// that have but have none open, each in the order they became so.
pub struct Conns {
    limits: Limits,
    state: Mutex<State>,
    /// Told each time a connection stops counting.
    freed: Notify,
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
    /// Places kept for newcomers waiting for a connection closed for them to end.
    reserved: usize,
    /// Connections with a follow stream open.
    following: usize,
}

struct Entry {
    /// When each request open on it started.
    requests: Vec<Instant>,
    /// Its key in `fresh` or `idle` while it has no request open and is not closing.
    idle_key: Option<u64>,
    used: bool,
    /// When it was admitted, or last had no request open.
    since: Instant,
    /// Since when, and why, it has been closing.
    closing: Option<(Instant, Evicted)>,
    close: Arc<Notify>,
    /// Follow streams open on it.
    follows: usize,
}

impl Entry {
    /// When the newest request open on it started.
    fn newest(&self) -> Option<Instant> {
        self.requests.iter().max().copied()
    }
}

impl Conns {
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self { limits, state: Mutex::new(State::default()), freed: Notify::new() })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned one is still whole.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn limit(&self) -> usize {
        self.limits.connections
    }

    /// Takes a new connection, if one more fits (those closing count until their task
    /// has ended, and places kept for newcomers waiting for them are taken).
    pub fn admit(self: &Arc<Self>) -> Result<Conn, Full> {
        self.admit_at(Instant::now())
    }

    fn admit_at(self: &Arc<Self>, now: Instant) -> Result<Conn, Full> {
        let mut st = self.lock();
        if st.open.len() + st.reserved >= self.limits.connections {
            return Err(Full { limit: self.limits.connections });
        }
        Ok(self.insert(&mut st, now))
    }

    fn insert(self: &Arc<Self>, st: &mut State, now: Instant) -> Conn {
        st.next += 1;
        let (id, key) = (st.next, st.next);
        let close = Arc::new(Notify::new());
        let entry = Entry {
            requests: Vec::new(),
            idle_key: Some(key),
            used: false,
            since: now,
            closing: None,
            close: close.clone(),
            follows: 0,
        };
        st.open.insert(id, entry);
        st.fresh.insert(key, id);
        Conn { id, conns: self.clone(), close }
    }

    /// At the bound: tells one connection to close to make room for a newcomer (see the
    /// module's header for which) and keeps its place for the newcomer, who waits for it
    /// with [`Room::wait`] (it counts until its task has ended). Refused when none may be
    /// closed now, or [`MAX_WAITING`] newcomers wait already.
    pub fn make_room(self: &Arc<Self>) -> Result<(Evicted, Room), Full> {
        let full = Full { limit: self.limits.connections };
        let mut st = self.lock();
        if st.reserved >= MAX_WAITING {
            return Err(full);
        }
        let why = self.evict_locked(&mut st, Instant::now()).ok_or(full)?;
        st.reserved += 1;
        Ok((why, Room { conns: self.clone(), kept: true }))
    }

    #[cfg(test)]
    fn evict_at(&self, now: Instant) -> Option<Evicted> {
        self.evict_locked(&mut self.lock(), now)
    }

    fn evict_locked(&self, st: &mut State, now: Instant) -> Option<Evicted> {
        let (id, why) = if let Some((&key, &id)) = st.fresh.first_key_value()
            && st.open.get(&id).is_some_and(|e| now >= e.since + self.limits.min_age)
        {
            st.fresh.remove(&key);
            (id, Evicted::Silent)
        } else if let Some((_, id)) = st.idle.pop_first() {
            (id, Evicted::Idle)
        } else if !st.fresh.is_empty() {
            // Silent ones too young to close: they will be old enough within MIN_AGE (or
            // closed without a preface), sooner than a busy one should be cut.
            return None;
        } else {
            let long = self.limits.long_request;
            let (&id, _) = st
                .open
                .iter()
                .filter(|(_, e)| e.closing.is_none())
                .filter_map(|(id, e)| e.newest().filter(|&at| now >= at + long).map(|at| (id, at)))
                .min_by_key(|&(_, at)| at)?;
            (id, Evicted::Busy)
        };
        let e = st.open.get_mut(&id)?;
        e.idle_key = None;
        e.closing = Some((now, why));
        e.close.notify_one();
        Some(why)
    }

    /// Takes a kept place once the connections counted leave room for it.
    fn take_kept(self: &Arc<Self>) -> Option<Conn> {
        let mut st = self.lock();
        // Those waiting come first: a place freed is theirs, not a later newcomer's.
        if st.open.len() >= self.limits.connections {
            return None;
        }
        st.reserved -= 1;
        Some(self.insert(&mut st, Instant::now()))
    }

    /// Connections counted: open, or closing with their task not ended yet.
    pub fn open(&self) -> usize {
        self.lock().open.len()
    }

    fn request_started(&self, id: u64, now: Instant) {
        let mut st = self.lock();
        let st = &mut *st;
        let Some(e) = st.open.get_mut(&id) else { return };
        // Also when it is closing: a request that raced the GOAWAY is served to its end.
        e.requests.push(now);
        e.used = true;
        if let Some(key) = e.idle_key.take() {
            st.idle.remove(&key);
            st.fresh.remove(&key);
        }
    }

    fn request_ended(&self, id: u64, started: Instant, now: Instant) {
        let mut st = self.lock();
        st.next += 1;
        let key = st.next;
        let st = &mut *st;
        let Some(e) = st.open.get_mut(&id) else { return };
        if let Some(i) = e.requests.iter().position(|&at| at == started) {
            e.requests.swap_remove(i);
        }
        if e.requests.is_empty() {
            e.since = now;
            if e.closing.is_none() {
                e.idle_key = Some(key);
                st.idle.insert(key, id);
            }
        }
    }

    fn entry<T>(&self, id: u64, f: impl FnOnce(&Entry) -> T) -> Option<T> {
        self.lock().open.get(&id).map(f)
    }

    /// For a closing connection: `Ok` when it is to be cut now, else when to look again.
    /// One closed for requests open past the bound is cut at once. One closed with no
    /// request open has [`CLOSE_GRACE`]; a request it started within that grace (one that
    /// raced the GOAWAY) is served to its end, or until it has been open past the bound.
    /// Later ones push nothing back (a peer that never acks the GOAWAY's PING could open
    /// streams for ever), so it is cut by `told + CLOSE_GRACE + long_request` at the latest.
    fn cut_at(&self, id: u64, now: Instant) -> Result<(), Instant> {
        let at = self
            .entry(id, |e| {
                let (told, why) = e.closing?;
                if why == Evicted::Busy {
                    return Some(told);
                }
                let honoured = told + CLOSE_GRACE;
                let newest = e.requests.iter().filter(|&&at| at <= honoured).max();
                let at = match newest {
                    None => told.max(e.since) + CLOSE_GRACE,
                    Some(&newest) => honoured.max(newest + self.limits.long_request),
                };
                Some(at.min(honoured + self.limits.long_request))
            })
            .flatten();
        match at {
            Some(at) if now < at => Err(at),
            _ => Ok(()),
        }
    }

    fn closed(&self, id: u64) {
        {
            let mut st = self.lock();
            if let Some(e) = st.open.remove(&id) {
                if let Some(key) = e.idle_key {
                    st.fresh.remove(&key);
                    st.idle.remove(&key);
                }
                if e.follows > 0 {
                    st.following -= 1;
                }
            }
        }
        self.freed.notify_waiters();
    }

    /// Notes a follow stream opened on connection `id`, refused when it would make one
    /// connection more holding follow streams than [`follow_connections`] allows.
    fn follow(&self, id: u64) -> Result<(), tonic::Status> {
        let mut st = self.lock();
        let st = &mut *st;
        let allowed = follow_connections(self.limits.connections);
        let Some(e) = st.open.get_mut(&id) else { return Ok(()) };
        if e.follows == 0 {
            if st.following >= allowed {
                return Err(tonic::Status::resource_exhausted(format!(
                    "{allowed} control connections hold follow streams (events -f, tail -f), as many as the \
                     supervisor's control socket lets follow at once ({} connections, the rest kept for commands); \
                     end one, or read without following",
                    self.limits.connections
                )));
            }
            st.following += 1;
        }
        e.follows += 1;
        Ok(())
    }

    fn unfollow(&self, id: u64) {
        let mut st = self.lock();
        let st = &mut *st;
        let Some(e) = st.open.get_mut(&id) else { return };
        e.follows = e.follows.saturating_sub(1);
        if e.follows == 0 {
            st.following -= 1;
        }
    }
}

/// A place kept for a newcomer at the bound, until the connection closed for it has ended;
/// given back when dropped untaken.
pub struct Room {
    conns: Arc<Conns>,
    kept: bool,
}

impl Room {
    /// Waits, at most `within`, for the place kept to be free, and takes it.
    pub async fn wait(mut self, within: Duration) -> Result<Conn, Full> {
        let deadline = Instant::now() + within;
        loop {
            let freed = self.conns.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(conn) = self.conns.take_kept() {
                self.kept = false;
                return Ok(conn);
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                let conn = self.conns.take_kept().ok_or(Full { limit: self.conns.limits.connections })?;
                self.kept = false;
                return Ok(conn);
            }
        }
    }
}

impl Drop for Room {
    fn drop(&mut self) {
        if self.kept {
            self.conns.lock().reserved -= 1;
        }
    }
}

/// One admitted control connection; it counts until dropped (by its task, as it ends).
pub struct Conn {
    id: u64,
    conns: Arc<Conns>,
    close: Arc<Notify>,
}

impl Conn {
    /// Resolves, with why, when it is to close for a newcomer.
    pub async fn evicted(&self) -> Evicted {
        self.close.notified().await;
        self.conns.entry(self.id, |e| e.closing.map(|(_, why)| why)).flatten().unwrap_or(Evicted::Idle)
    }

    fn handle(&self) -> Handle {
        Handle { id: self.id, conns: self.conns.clone() }
    }

    /// Whether it has made a request.
    fn used(&self) -> bool {
        self.conns.entry(self.id, |e| e.used).unwrap_or(true)
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.conns.closed(self.id);
    }
}

/// What a connection's requests note themselves with (each request carries it in its
/// extensions); it does not keep it counting.
#[derive(Clone)]
pub struct Handle {
    id: u64,
    conns: Arc<Conns>,
}

impl Handle {
    /// Marks a request open until the guard is dropped.
    fn request(&self) -> Open {
        let started = Instant::now();
        self.conns.request_started(self.id, started);
        Open { handle: self.clone(), started }
    }
}

/// A request open on a connection, until its answer has been sent or abandoned.
struct Open {
    handle: Handle,
    started: Instant,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.handle.conns.request_ended(self.handle.id, self.started, Instant::now());
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

    /// A slot for one more follow stream on connection `on`, held as long as the stream;
    /// refused when as many are open as may be, or when `on` would be one connection more
    /// holding follow streams than leaves room for commands ([`follow_connections`]).
    pub fn take(&self, on: Option<&Handle>) -> Result<FollowSlot, tonic::Status> {
        let permit = self.slots.clone().try_acquire_owned().map_err(|_| {
            tonic::Status::resource_exhausted(format!(
                "{} follow streams (events -f, tail -f) are open on the supervisor's control socket, as many as it \
                 serves at once; end one, or read without following",
                self.limit
            ))
        })?;
        if let Some(on) = on {
            on.conns.follow(on.id)?;
        }
        Ok(FollowSlot { _permit: permit, on: on.cloned() })
    }
}

/// One follow stream's place, held as long as the stream.
pub struct FollowSlot {
    _permit: OwnedSemaphorePermit,
    on: Option<Handle>,
}

impl Drop for FollowSlot {
    fn drop(&mut self) {
        if let Some(on) = &self.on {
            on.conns.unfollow(on.id);
        }
    }
}

const CLOSING_ERROR: &str = "control connection ended with an error as it closed";

/// How a connection's serving ended, said when it was an error.
fn said(ended: Result<(), hyper::Error>, what: &'static str) {
    if let Err(e) = ended {
        tracing::debug!(error = %e, "{what}");
    }
}

/// Serves one admitted connection with `svc` until it ends, is closed for a newcomer, or
/// has not sent the HTTP/2 preface within `limits.preface`. Once sent, it may wait for its
/// first request, and between requests, as long as it likes: it is closed only for a
/// newcomer at the bound.
pub async fn serve<S>(io: tokio::net::UnixStream, svc: S, conn: Conn, limits: Limits)
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let prefaced = Arc::new(AtomicBool::new(false));
    // Open for as long as `served`, which owns the socket, is: to the end of this function.
    let fd = std::os::fd::AsRawFd::as_raw_fd(&io);
    let io = Watched { io, head: [0; PREFACE_HEAD], seen: 0, prefaced: prefaced.clone() };
    let tracked = Tracked { inner: svc, conn: conn.handle() };
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder.max_concurrent_streams(STREAMS_PER_CONNECTION);
    let served = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(tracked));
    tokio::pin!(served);
    let preface = tokio::time::sleep(limits.preface);
    tokio::pin!(preface);
    let mut timed = true;
    loop {
        tokio::select! {
            // `served` first: with a request's HEADERS read by the runtime and the
            // eviction told at once, the request is taken (and the connection known as
            // used) before the eviction is looked at. Bytes the runtime has not seen yet
            // are asked of the kernel below.
            biased;
            ended = served.as_mut() => return said(ended, "control connection ended with an error"),
            why = conn.evicted() => {
                tracing::debug!(?why, "control connection closed to make room for a new one");
                // One that has asked nothing is closed at once, so the newcomer waiting
                // for its descriptor need not; it was silent past MIN_AGE. Unless bytes
                // wait in its socket: its first request may be among them, come since the
                // runtime last looked at its sockets (so `served`, polled first, could
                // not see them), and a graceful close serves it.
                if why == Evicted::Silent && !conn.used() && !unread(fd) {
                    return;
                }
                break;
            }
            () = &mut preface, if timed => {
                if !prefaced.load(Ordering::Relaxed) && !conn.used() {
                    tracing::debug!(timeout = ?limits.preface, "control connection sent no HTTP/2 preface in time");
                    return;
                }
                timed = false;
            }
        }
    }
    // GOAWAY: a request already on its way is still served, and nothing newer is taken.
    served.as_mut().graceful_shutdown();
    loop {
        // Polled before the deadline is looked at: a request read now (the task may wake
        // late) is noted before it could be cut unread.
        if let Poll::Ready(ended) = std::future::poll_fn(|cx| Poll::Ready(served.as_mut().poll(cx))).await {
            return said(ended, CLOSING_ERROR);
        }
        let next = match conn.conns.cut_at(conn.id, Instant::now()) {
            Ok(()) => return,
            Err(at) => at,
        };
        tokio::select! {
            biased;
            ended = served.as_mut() => return said(ended, CLOSING_ERROR),
            () = tokio::time::sleep_until(next) => {}
        }
    }
}

/// Whether bytes wait unread in the socket `fd`, asked of the kernel: the runtime's view
/// of a socket is only as new as its last look at them all.
fn unread(fd: std::os::fd::RawFd) -> bool {
    use nix::sys::socket::{MsgFlags, recv};
    let mut byte = [0u8; 1];
    recv(fd, &mut byte, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT).is_ok_and(|n| n > 0)
}

/// The client's preface and the header of its SETTINGS frame.
const PREFACE_HEAD: usize = 24 + 9;

/// The connection's socket, noting once the client's preface and SETTINGS have been read.
struct Watched {
    io: tokio::net::UnixStream,
    head: [u8; PREFACE_HEAD],
    /// Bytes read so far (counted only until the preface is whole).
    seen: usize,
    prefaced: Arc<AtomicBool>,
}

impl Watched {
    fn note(&mut self, read: &[u8]) {
        if read.is_empty() || self.prefaced.load(Ordering::Relaxed) {
            return;
        }
        if self.seen < PREFACE_HEAD {
            let n = (PREFACE_HEAD - self.seen).min(read.len());
            self.head[self.seen..self.seen + n].copy_from_slice(&read[..n]);
        }
        self.seen = self.seen.saturating_add(read.len());
        if self.seen >= PREFACE_HEAD {
            // Not checked here: a malformed preface fails the HTTP/2 handshake.
            let [a, b, c] = [self.head[24], self.head[25], self.head[26]];
            let settings = u32::from_be_bytes([0, a, b, c]) as usize;
            if self.seen >= PREFACE_HEAD + settings {
                self.prefaced.store(true, Ordering::Relaxed);
            }
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            this.note(&buf.filled()[before..]);
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// The control service, noting each request open on its connection until its answer ends.
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    conn: Handle,
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

    fn call(&mut self, mut req: http::Request<Incoming>) -> Self::Future {
        let open = self.conn.request();
        req.extensions_mut().insert(self.conn.clone());
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

    /// Time is a parameter here: `at(s)` is `s` seconds after the start.
    fn clock() -> impl Fn(f64) -> Instant {
        let t0 = Instant::now();
        move |s| t0 + Duration::from_secs_f64(s)
    }

    fn limits(connections: usize) -> Limits {
        Limits { connections, ..Limits::within(1024) }
    }

    fn told_to_close(c: &Conn) -> bool {
        c.conns.entry(c.id, |e| e.closing.is_some()).unwrap_or(true)
    }

    #[test]
    fn a_silent_connection_makes_room_only_once_old_enough_and_counts_until_its_task_ends() {
        let at = clock();
        let conns = Conns::new(limits(2));
        let a = conns.admit_at(at(0.0)).unwrap();
        let b = conns.admit_at(at(0.5)).unwrap();
        assert_eq!(conns.admit_at(at(0.9)).err(), Some(Full { limit: 2 }));
        // Both connected less than MIN_AGE ago: their first request may be on its way.
        assert_eq!(conns.evict_at(at(0.9)), None);
        assert!(!told_to_close(&a) && !told_to_close(&b));
        assert_eq!(conns.evict_at(at(1.0)), Some(Evicted::Silent));
        assert!(told_to_close(&a) && !told_to_close(&b), "the one waiting longest goes first");
        // Closing, it still holds its descriptor: it counts, and cannot be closed again.
        assert_eq!(conns.open(), 2);
        assert_eq!(conns.admit_at(at(1.0)).err(), Some(Full { limit: 2 }));
        assert_eq!(conns.evict_at(at(1.6)), Some(Evicted::Silent), "b, now old enough");
        assert_eq!(conns.evict_at(at(1.6)), None, "only closing ones are left");
        drop(a);
        assert_eq!(conns.open(), 1);
        let c = conns.admit_at(at(1.6)).unwrap();
        drop((b, c));
        assert_eq!(conns.open(), 0);
    }

    #[test]
    fn an_idle_connection_makes_room_before_a_busy_one_and_a_request_that_races_its_close_is_served() {
        let at = clock();
        let conns = Conns::new(limits(3));
        let busy = conns.admit_at(at(0.0)).unwrap();
        let idle = conns.admit_at(at(0.0)).unwrap();
        let young = conns.admit_at(at(0.0)).unwrap();
        conns.request_started(busy.id, at(0.0));
        conns.request_started(idle.id, at(0.1));
        conns.request_ended(idle.id, at(0.1), at(0.2));
        conns.request_started(young.id, at(0.3));
        conns.request_ended(young.id, at(0.3), at(0.4));
        // `idle` has been idle longest; `busy` is never closed for a newcomer while its
        // request is young.
        assert_eq!(conns.evict_at(at(0.5)), Some(Evicted::Idle));
        assert!(told_to_close(&idle) && !told_to_close(&busy) && !told_to_close(&young));
        // A request it had sent already is taken as it closes: it is served to its end,
        // not cut after the grace, and the connection counts meanwhile.
        conns.request_started(idle.id, at(0.5));
        assert_eq!(conns.cut_at(idle.id, at(0.5) + CLOSE_GRACE * 5), Err(at(0.5) + LONG_REQUEST));
        conns.request_ended(idle.id, at(0.5), at(200.0));
        assert_eq!(conns.cut_at(idle.id, at(200.0)), Err(at(200.0) + CLOSE_GRACE));
        assert_eq!(conns.cut_at(idle.id, at(200.0) + CLOSE_GRACE), Ok(()));
        assert_eq!(conns.open(), 3);
        assert_eq!(conns.evict_at(at(201.0)), Some(Evicted::Idle), "young");
        assert_eq!(conns.evict_at(at(201.0)), None, "busy's request is not yet open past LONG_REQUEST");
        drop((busy, idle, young));
    }

    #[test]
    fn with_every_connection_busy_past_the_bound_the_one_busy_longest_makes_room() {
        let at = clock();
        let long = LONG_REQUEST.as_secs_f64();
        let conns = Conns::new(limits(3));
        let a = conns.admit_at(at(0.0)).unwrap();
        let b = conns.admit_at(at(0.0)).unwrap();
        let c = conns.admit_at(at(0.0)).unwrap();
        // a: two requests, the newer at 20 s; b: one since 10 s.
        conns.request_started(a.id, at(0.0));
        conns.request_started(a.id, at(20.0));
        conns.request_started(b.id, at(10.0));
        assert_eq!(conns.evict_at(at(0.5)), None, "c is too young, the others busy");
        conns.request_started(c.id, at(30.0));
        // An `update` waits up to 300 s: nothing is closed before LONG_REQUEST.
        assert_eq!(conns.evict_at(at(10.0 + long - 1.0)), None);
        assert_eq!(conns.evict_at(at(10.0 + long)), Some(Evicted::Busy));
        assert!(told_to_close(&b) && !told_to_close(&a), "b has been busy longest: a had a request at 20 s");
        // Its streams are reset at once: they are open past the bound already.
        let told = at(10.0 + long);
        assert_eq!(conns.cut_at(b.id, told), Ok(()));
        drop(b);
        // d connected and has said nothing yet: it will be old enough soon, so no busy one
        // is cut for it, though a is past the bound.
        let d = conns.admit_at(at(20.0 + long - 0.5)).unwrap();
        assert_eq!(conns.evict_at(at(20.0 + long)), None);
        assert_eq!(conns.evict_at(at(20.0 + long + 0.5)), Some(Evicted::Silent));
        assert_eq!(conns.evict_at(at(20.0 + long + 0.5)), Some(Evicted::Busy));
        assert!(told_to_close(&a) && !told_to_close(&c));
        assert_eq!(conns.evict_at(at(20.0 + long + 0.5)), None, "c's request is not yet open past the bound");
        drop((a, c, d));
    }

    #[test]
    fn a_newcomer_s_place_is_kept_while_it_waits_and_at_most_16_wait() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let conns = Conns::new(Limits { min_age: Duration::ZERO, ..limits(20) });
        let mut held: Vec<_> = (0..20).map(|_| conns.admit().unwrap()).collect();
        let mut rooms = Vec::new();
        for _ in 0..MAX_WAITING {
            let (why, room) = conns.make_room().expect("a silent connection makes room");
            assert_eq!(why, Evicted::Silent);
            rooms.push(room);
        }
        // Four silent connections are left, but 16 newcomers wait already: refused.
        assert_eq!(conns.make_room().err(), Some(Full { limit: 20 }));
        assert!(told_to_close(&held[0]) && !told_to_close(&held[19]));
        // A connection closed for a newcomer ends: its place is the newcomer's.
        drop(held.remove(0));
        assert_eq!(conns.open(), 19);
        assert!(conns.admit().is_err(), "a place kept for a newcomer was taken by another");
        let first = rooms.remove(0);
        let conn = rt.block_on(first.wait(Duration::ZERO)).expect("the place kept is taken at once");
        assert_eq!(conns.open(), 20);
        assert!(conns.make_room().is_ok(), "fewer than 16 wait now");
        // Those that gave up waiting give their places back, for anyone once a connection
        // closed ends.
        drop(rooms);
        assert!(conns.admit().is_err());
        drop(held.remove(0));
        assert!(conns.admit().is_ok());
        drop((conn, held));
    }

    #[test]
    fn a_closing_connection_serves_only_requests_started_within_the_grace_and_a_busy_one_is_cut_at_once() {
        let at = clock();
        let long = LONG_REQUEST.as_secs_f64();
        let grace = CLOSE_GRACE.as_secs_f64();
        let conns = Conns::new(limits(2));
        let idle = conns.admit_at(at(0.0)).unwrap();
        let busy = conns.admit_at(at(0.0)).unwrap();
        conns.request_started(idle.id, at(0.0));
        conns.request_ended(idle.id, at(0.0), at(0.1));
        conns.request_started(busy.id, at(0.0));
        assert_eq!(conns.evict_at(at(1.0)), Some(Evicted::Idle));
        // Nothing open: the grace.
        assert_eq!(conns.cut_at(idle.id, at(1.0)), Err(at(1.0 + grace)));
        // A request that raced the GOAWAY in, within the grace, is served to its end.
        conns.request_started(idle.id, at(1.0 + grace / 2.0));
        assert_eq!(conns.cut_at(idle.id, at(2.0 + grace)), Err(at(1.0 + grace / 2.0 + long)));
        // Requests started after it (a peer that never acks the shutdown's PING, opening
        // streams in a loop) push nothing back, however many.
        for i in 1..100 {
            conns.request_started(idle.id, at(1.0 + grace + f64::from(i)));
        }
        assert_eq!(conns.cut_at(idle.id, at(200.0)), Err(at(1.0 + grace / 2.0 + long)));
        assert_eq!(conns.cut_at(idle.id, at(1.0 + grace / 2.0 + long)), Ok(()));
        // Nor do requests that end and start again after the grace: `told + grace + long`
        // is the latest it is cut.
        let other = Conns::new(limits(1));
        let c = other.admit_at(at(0.0)).unwrap();
        other.request_started(c.id, at(0.0));
        other.request_ended(c.id, at(0.0), at(0.1));
        assert_eq!(other.evict_at(at(1.0)), Some(Evicted::Idle));
        for i in 0..2000 {
            let t = 3.0 + f64::from(i);
            other.request_started(c.id, at(t));
            other.request_ended(c.id, at(t), at(t + 0.5));
        }
        assert_eq!(other.cut_at(c.id, at(5000.0)), Ok(()));
        assert_eq!(other.cut_at(c.id, at(1.0)), Err(at(1.0 + grace + long)));
        drop(c);
        // A busy connection's requests are open past the bound already: no grace.
        assert_eq!(conns.evict_at(at(long)), Some(Evicted::Busy));
        assert_eq!(conns.cut_at(busy.id, at(long)), Ok(()));
        drop((idle, busy));
    }

    #[test]
    fn connections_holding_follow_streams_leave_room_for_commands() {
        assert_eq!(follow_connections(8), 6);
        assert_eq!(follow_connections(16), 14);
        assert_eq!(follow_connections(128), 112);
        assert_eq!(follow_connections(2), 0);
        let conns = Conns::new(limits(8));
        let follows = Follows::new(MAX_FOLLOWS);
        let cs: Vec<_> = (0..8).map(|_| conns.admit().unwrap()).collect();
        let mut slots: Vec<_> = cs[..6].iter().map(|c| follows.take(Some(&c.handle())).unwrap()).collect();
        // One following already may follow more: it takes no more room from commands.
        let again = follows.take(Some(&cs[0].handle())).expect("a second follow stream on one connection");
        let Err(refused) = follows.take(Some(&cs[6].handle())) else { panic!("a 7th connection followed") };
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(refused.message().starts_with("6 control connections hold follow streams"), "{refused:?}");
        assert!(refused.message().contains("(8 connections, the rest kept for commands)"), "{refused:?}");
        assert_eq!(follows.slots.available_permits(), MAX_FOLLOWS - 7, "a refused follow keeps no slot");
        // Only once each of its follow streams has ended does a connection stop following.
        drop(slots.remove(0));
        assert!(follows.take(Some(&cs[6].handle())).is_err());
        drop(again);
        let seventh = follows.take(Some(&cs[6].handle())).expect("room once one stopped following");
        // One that closes stops following, its streams dropped after it or not.
        let mut cs = cs;
        drop(cs.remove(1));
        let eighth = follows.take(Some(&cs[6].handle())).expect("room once a follower closed");
        drop((slots, seventh, eighth, cs));
        assert_eq!(conns.lock().following, 0);
    }

    #[test]
    fn control_connections_take_an_eighth_of_the_reserve_at_most_128_and_follow_1024_streams() {
        assert_eq!(Limits::within(1024).connections, 128);
        assert_eq!(Limits::within(1 << 20).connections, 128);
        assert_eq!(Limits::within(64).connections, 8);
        assert_eq!(Limits::within(1024).preface, Duration::from_secs(5));
        assert_eq!(Limits::within(64).follows, 1024);
    }

    #[test]
    fn follow_streams_past_the_bound_are_refused_until_one_ends() {
        let follows = Follows::new(2);
        let one = follows.take(None).unwrap();
        let _two = follows.take(None).unwrap();
        let Err(refused) = follows.take(None) else { panic!("a follow stream past the bound was taken") };
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(refused.message().starts_with("2 follow streams (events -f, tail -f) are open"), "{refused:?}");
        drop(one);
        assert!(follows.take(None).is_ok());
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

    /// Answers every request after `after`, with an empty body.
    fn answering(
        after: Duration,
    ) -> impl tower::Service<
        http::Request<Body>,
        Response = http::Response<Body>,
        Error = Infallible,
        Future = impl Send + 'static,
    > + Clone
    + Send
    + 'static {
        tower::service_fn(move |_| async move {
            tokio::time::sleep(after).await;
            Ok::<_, Infallible>(http::Response::new(Body::empty()))
        })
    }

    fn short() -> Limits {
        Limits {
            preface: Duration::from_millis(300),
            min_age: Duration::from_millis(300),
            long_request: Duration::from_millis(300),
            ..Limits::within(1024)
        }
    }

    /// A connection served on a socket pair, with an HTTP/2 client on the other end.
    async fn client(
        conns: &Arc<Conns>,
        svc: impl tower::Service<
            http::Request<Body>,
            Response = http::Response<Body>,
            Error = Infallible,
            Future = impl Send + 'static,
        > + Clone
        + Send
        + 'static,
        limits: Limits,
    ) -> (h2::client::SendRequest<Bytes>, tokio::task::JoinHandle<()>) {
        let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
        let served = tokio::spawn(serve(ours, svc, conns.admit().unwrap(), limits));
        let (client, h2) = h2::client::handshake(theirs).await.unwrap();
        tokio::spawn(async move {
            let _ = h2.await;
        });
        (client, served)
    }

    async fn ask(client: &mut h2::client::SendRequest<Bytes>) -> Result<http::StatusCode, h2::Error> {
        let req = http::Request::post("http://control/c.C/Ask").body(()).unwrap();
        let (answer, _) = client.clone().ready().await?.send_request(req, true)?;
        Ok(answer.await?.status())
    }

    #[tokio::test]
    async fn a_connection_that_sends_no_preface_is_closed_but_a_follow_stream_is_not() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let conns = Conns::new(limits(8));
        // A follower: one request, whose answer never ends.
        let (mut client, follower) = client(&conns, following(), short()).await;
        let req = http::Request::post("http://control/c.C/Follow").body(()).unwrap();
        let (answer, send) = client.send_request(req, false).unwrap();
        let mut body = answer.await.unwrap().into_body();
        // Only a part of the preface, then nothing.
        let (ours, mut silent) = tokio::net::UnixStream::pair().unwrap();
        let served = tokio::spawn(serve(ours, following(), conns.admit().unwrap(), short()));
        assert_eq!(conns.open(), 2);
        silent.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();

        let mut buf = [0u8; 256];
        let read = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match silent.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(read.is_ok(), "a connection that sent no preface was held past its preface timeout");
        tokio::time::timeout(Duration::from_secs(5), served).await.expect("its task ended").unwrap();
        assert_eq!(conns.open(), 1);
        // Many preface and long-request bounds later, the follower is still served.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert!(!follower.is_finished(), "a follow stream was timed out");
        assert!(tokio::time::timeout(Duration::from_millis(50), body.data()).await.is_err(), "its answer ended");
        drop((body, send, client));
        tokio::time::timeout(Duration::from_secs(10), follower).await.expect("it ended with its client").unwrap();
        assert_eq!(conns.open(), 0);
    }
    #[tokio::test]
    async fn a_client_that_sent_its_preface_may_ask_long_after_and_ask_again_after_a_long_pause() {
        let conns = Conns::new(limits(8));
        // Connected eagerly (a gRPC channel made ready, `call -d @-` reading its stdin):
        // the preface is sent, the first request comes well after the preface timeout. 2 s
        // for the preface: time enough on a loaded machine for its task to read it.
        let limits = Limits { preface: Duration::from_secs(2), ..short() };
        let (mut client, served) = client(&conns, answering(Duration::ZERO), limits).await;
        tokio::time::sleep(Duration::from_millis(3000)).await;
        assert_eq!(ask(&mut client).await.expect("the first request, 3 s after the preface"), 200);
        // As `top -d N` does: a pause between looks, here longer than the preface (and 5
        // long-request) bounds; no idle timeout closes it.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(ask(&mut client).await.expect("the next request, 2.5 s later"), 200);
        assert!(!served.is_finished());
        assert_eq!(conns.open(), 1);
        drop(client);
        tokio::time::timeout(Duration::from_secs(10), served).await.expect("it ended with its client").unwrap();
        assert_eq!(conns.open(), 0);
    }

    #[tokio::test]
    async fn a_connection_busy_past_the_bound_closed_for_a_newcomer_has_its_streams_reset_and_frees_its_place() {
        let conns = Conns::new(Limits { connections: 1, ..short() });
        let (mut client, served) = client(&conns, following(), short()).await;
        let req = http::Request::post("http://control/c.C/Follow").body(()).unwrap();
        let (answer, _send) = client.send_request(req, false).unwrap();
        let mut body = answer.await.unwrap().into_body();
        assert!(conns.admit().is_err());
        // Open past the bound (300 ms here), the follow stream makes room.
        let deadline = Instant::now() + Duration::from_secs(10);
        let room = loop {
            if let Ok((why, room)) = conns.make_room() {
                assert_eq!(why, Evicted::Busy);
                break room;
            }
            assert!(Instant::now() < deadline, "a connection busy past the bound never made room");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(conns.admit().is_err(), "the place it frees is kept for the newcomer");
        let ended = tokio::time::timeout(Duration::from_secs(10), body.data()).await.expect("its stream was reset");
        assert!(!matches!(ended, Some(Ok(_))), "{ended:?}");
        tokio::time::timeout(Duration::from_secs(10), served).await.expect("its task ended").unwrap();
        let conn = room.wait(Duration::from_secs(1)).await.expect("the newcomer takes the place kept");
        assert!(conns.admit().is_err(), "the bound is strict");
        drop(conn);
        assert!(conns.admit().is_ok());
    }

    /// Waits, holding the thread, until a HEADERS frame sits unread in `socket`.
    fn headers_unread(socket: &std::os::unix::net::UnixStream) {
        use std::os::fd::AsRawFd;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: peeks into a local buffer of the length given, on an open socket.
            let n = unsafe {
                libc::recv(socket.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_PEEK | libc::MSG_DONTWAIT)
            };
            let mut at = 0;
            while let Ok(n) = usize::try_from(n)
                && at + 9 <= n
            {
                if buf[at + 3] == 0x1 {
                    return;
                }
                at += 9 + (usize::from(buf[at]) << 16 | usize::from(buf[at + 1]) << 8 | usize::from(buf[at + 2]));
            }
            assert!(std::time::Instant::now() < deadline, "the request was never written");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The daemon's side is held (its runtime does nothing) until a request sits in its
    /// socket `peek`; then a newcomer closes the connection, `why` as far as the registry
    /// knows. The request must be answered (`asked`), and the connection's task end.
    async fn served_as_closed_for_a_newcomer(
        conns: &Arc<Conns>,
        peek: std::os::unix::net::UnixStream,
        why: Evicted,
        asked: std::sync::mpsc::Receiver<Result<http::StatusCode, String>>,
        served: tokio::task::JoinHandle<()>,
    ) {
        headers_unread(&peek);
        drop(peek);
        assert_eq!(conns.make_room().map(|(why, _)| why), Ok(why));
        let answer = tokio::task::spawn_blocking(move || asked.recv()).await.unwrap().unwrap();
        assert_eq!(answer, Ok(http::StatusCode::OK), "a request taken as the connection closed ({why:?}) was cut");
        tokio::time::timeout(Duration::from_secs(10), served).await.expect("its task ended").unwrap();
        assert_eq!(conns.open(), 0);
    }

    #[test]
    fn a_request_sent_as_its_idle_connection_is_closed_for_a_newcomer_is_served_to_its_end() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let conns = Conns::new(limits(1));
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        theirs.set_nonblocking(true).unwrap();
        // The client runs on its own thread, so it writes while the daemon's side is held.
        let (said, asked) = std::sync::mpsc::channel();
        let (go, going) = std::sync::mpsc::channel::<()>();
        let clientside = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let (mut client, h2) =
                    h2::client::handshake(tokio::net::UnixStream::from_std(theirs).unwrap()).await.unwrap();
                tokio::spawn(async move {
                    let _ = h2.await;
                });
                said.send(ask(&mut client).await.map_err(|e| e.to_string())).unwrap();
                going.recv().unwrap();
                // Sent as the connection is closed for a newcomer.
                said.send(ask(&mut client).await.map_err(|e| e.to_string())).unwrap();
            });
        });
        rt.block_on(async {
            ours.set_nonblocking(true).unwrap();
            let peek = ours.try_clone().unwrap();
            let ours = tokio::net::UnixStream::from_std(ours).unwrap();
            // Its answers take 1.5 s, longer than the grace a closing connection has.
            let served = tokio::spawn(serve(
                ours,
                answering(Duration::from_millis(1500)),
                conns.admit().unwrap(),
                Limits { preface: Duration::from_millis(300), ..limits(1) },
            ));
            let first = tokio::task::spawn_blocking(move || asked.recv().map(|a| (a, asked))).await.unwrap().unwrap();
            let (first, asked) = first;
            assert_eq!(first, Ok(http::StatusCode::OK));
            go.send(()).unwrap();
            // Idle as far as the registry knows.
            served_as_closed_for_a_newcomer(&conns, peek, Evicted::Idle, asked, served).await;
        });
        clientside.join().unwrap();
    }

    #[test]
    fn a_first_request_sent_as_its_silent_connection_is_closed_for_a_newcomer_is_served() {
        // A connection that has asked nothing is closed at once for a newcomer, unless its
        // first request is already in its socket: the connection is polled before the
        // eviction is looked at, so the request is taken, and the connection counts as
        // used and closes gracefully instead.
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let bounds = Limits { min_age: Duration::from_millis(200), ..limits(1) };
        let conns = Conns::new(bounds.clone());
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        theirs.set_nonblocking(true).unwrap();
        let (said, asked) = std::sync::mpsc::channel();
        let (go, going) = std::sync::mpsc::channel::<()>();
        let (ready, prefaced) = std::sync::mpsc::channel::<()>();
        let clientside = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let (mut client, mut h2) =
                    h2::client::handshake(tokio::net::UnixStream::from_std(theirs).unwrap()).await.unwrap();
                let mut ping = h2.ping_pong().unwrap();
                tokio::spawn(async move {
                    let _ = h2.await;
                });
                // A PING answered: the daemon has read the preface and everything before
                // it, and the connection has still asked nothing.
                ping.ping(h2::Ping::opaque()).await.unwrap();
                ready.send(()).unwrap();
                going.recv().unwrap();
                said.send(ask(&mut client).await.map_err(|e| e.to_string())).unwrap();
            });
        });
        rt.block_on(async {
            ours.set_nonblocking(true).unwrap();
            let peek = ours.try_clone().unwrap();
            let ours = tokio::net::UnixStream::from_std(ours).unwrap();
            let served = tokio::spawn(serve(ours, answering(Duration::ZERO), conns.admit().unwrap(), bounds));
            // Prefaced, silent, and old enough to be closed at once.
            tokio::task::spawn_blocking(move || prefaced.recv()).await.unwrap().unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            go.send(()).unwrap();
            // Silent as far as the registry knows.
            served_as_closed_for_a_newcomer(&conns, peek, Evicted::Silent, asked, served).await;
        });
        clientside.join().unwrap();
    }
}
