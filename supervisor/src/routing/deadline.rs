//! The deadline layer: a call gets the shorter of the caller's
//! `grpc-timeout` and the plugin's configured call timeout, the plugin is
//! told the deadline, and a call that overruns, answer included, ends as
//! DEADLINE_EXCEEDED. The request carries its deadline ([`Expires`]) so a
//! call queued for a place stops waiting there, and so does the response, so
//! the gateway can reset a caller that does not take it in time.
//!
//! Whose fault the deadline was is the `source` of its status: the plugin's
//! ([`Source::Deadline`]) only when the plugin's own `call_timeout` ran out
//! while the plugin owed the next message; the caller's ([`Source::Caller`])
//! when the caller asked for less time, still owed part of its request, or
//! when the plugin's next message was there and the caller had not taken the
//! ones before it. Only the plugin's
//! count towards its circuit and its canary.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use http_body::Frame;
use tokio::time::{Instant, Sleep};
use tonic::body::Body;

use plugin_proto::transport::RequestProgress;

use super::record::{Source, local};
use super::split::Target;

pub(crate) const GRPC_TIMEOUT: &str = "grpc-timeout";

/// Parses a `grpc-timeout` value ("100m", "5S", ...).
pub fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    // At most 8 digits and a unit (gRPC over HTTP/2); no sign, no fraction.
    let (digits, unit) = v.split_at_checked(v.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The answer to a call whose `grpc-timeout` is not one: its value quoted (at most 40
/// bytes of it, escaped), and what one looks like.
fn malformed(v: &HeaderValue) -> http::Response<Body> {
    let said = String::from_utf8_lossy(v.as_bytes());
    let quoted: String = format!("{said:?}").chars().take(40).collect();
    let why = format!(
        "malformed grpc-timeout {quoted}: it must be 1 to 8 digits and a unit (H, M, S, m, u or n), as in \"500m\""
    );
    local(tonic::Status::internal(why), Source::Caller)
}

/// Tells the plugin, in `grpc-timeout`, the time left until `until`.
pub fn tell_time_left(headers: &mut http::HeaderMap, until: Instant) {
    let left = until.saturating_duration_since(Instant::now());
    if let Ok(v) = HeaderValue::from_str(&encode_grpc_timeout(left)) {
        headers.insert(GRPC_TIMEOUT, v);
    }
}

/// Encodes a duration as `grpc-timeout` (at most 8 digits).
pub fn encode_grpc_timeout(d: Duration) -> String {
    let us = d.as_micros();
    if us < 100_000_000 {
        format!("{}u", us.max(1))
    } else if d.as_millis() < 100_000_000 {
        format!("{}m", d.as_millis())
    } else {
        format!("{}S", d.as_secs().min(99_999_999))
    }
}

/// The plugin's limit on a call, read for each call: a reload or a config update may
/// change it while callers hold the channel.
/// It reads the request's extensions: the revision a canary split chose has its own.
type Limit = Arc<dyn Fn(&http::Extensions) -> Duration + Send + Sync>;

#[derive(Clone)]
pub struct DeadlineLayer {
    limit: Limit,
    streams_requests: StreamsRequests,
}

/// Whether the method at a call's path streams its requests as [`Blame`] judges them (the
/// revision the split chose, if any, declared the method's kind), asked only when a
/// deadline passes while the call waits on its caller.
type StreamsRequests = Arc<dyn Fn(Option<&Target>, &str) -> bool + Send + Sync>;

impl DeadlineLayer {
    pub fn fixed(limit: Duration) -> Self {
        Self::reading(move |_: &http::Extensions| limit)
    }

    /// The limit `read` says at each call.
    pub fn reading(read: impl Fn(&http::Extensions) -> Duration + Send + Sync + 'static) -> Self {
        Self { limit: Arc::new(read), streams_requests: Arc::new(|_: Option<&Target>, _: &str| false) }
    }

    /// Says which methods take a stream of requests: one whose caller has sent a whole
    /// first message and waits may be waiting on the plugin's answer, so a deadline then
    /// is the plugin's. Without it every method is taken to take one message.
    pub fn knowing_streams(
        mut self,
        streams_requests: impl Fn(Option<&Target>, &str) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.streams_requests = Arc::new(streams_requests);
        self
    }
}

impl std::fmt::Debug for DeadlineLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadlineLayer").field("limit", &(self.limit)(&http::Extensions::new())).finish()
    }
}

impl<S> tower::Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Deadline { inner, limit: self.limit.clone(), streams_requests: self.streams_requests.clone() }
    }
}

#[derive(Clone)]
pub struct Deadline<S> {
    inner: S,
    limit: Limit,
    streams_requests: StreamsRequests,
}

/// When a call's time is up: set on every response that has a body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expires(pub Instant);

impl<S> tower::Service<http::Request<Body>> for Deadline<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        let asked = match req.headers().get(GRPC_TIMEOUT) {
            None => None,
            Some(v) => match v.to_str().ok().and_then(parse_grpc_timeout) {
                Some(asked) => Some(asked),
                // A deadline the caller meant but did not say: run under another one (the
                // plugin's call_timeout) and the caller would never know. Refused, naming
                // it, as grpc-go refuses it (INTERNAL).
                None => return Box::pin(std::future::ready(Ok(malformed(v)))),
            },
        };
        let limit = (self.limit)(req.extensions());
        let timeout = asked.map_or(limit, |a| a.min(limit));
        if let Ok(v) = HeaderValue::from_str(&encode_grpc_timeout(timeout)) {
            req.headers_mut().insert(GRPC_TIMEOUT, v);
        }
        let started = Instant::now();
        let expires = Expires(started.checked_add(timeout).unwrap_or_else(|| started + MAX));
        req.extensions_mut().insert(expires);
        let progress = RequestProgress::default();
        req.extensions_mut().insert(progress.clone());
        let blame = Blame {
            progress,
            uri: req.uri().clone(),
            target: req.extensions().get::<Target>().cloned(),
            streams_requests: self.streams_requests.clone(),
        };
        let fut = self.inner.call(req);
        Box::pin(async move {
            let why = Why { timeout, callers: asked.is_some_and(|a| a < limit) };
            match tokio::time::timeout_at(expires.0, fut).await {
                // The plugin is told the deadline too, and tonic reports its
                // own expiry as CANCELLED: at the deadline, that is this.
                Ok(Ok(resp)) if is_cancelled(&resp) && started.elapsed() + SLACK >= timeout => {
                    Ok(unanswered(why, &blame))
                }
                Ok(Ok(resp)) => Ok(held_to(resp, expires, why, blame)),
                Ok(Err(e)) => Err(e),
                // A call still queued for a place has been answered by the limit by now:
                // its wait ends at this same instant, and it is polled first.
                Err(_) => Ok(unanswered(why, &blame)),
            }
        })
    }
}

/// Our answer to a call whose deadline came before the plugin's answer did: the plugin's
/// lateness, unless the caller still owed part of its request then (a caller that sends a
/// unary call's headers and never its message would otherwise open the plugin's circuit
/// for everyone, and fail its canary).
fn unanswered(why: Why, blame: &Blame) -> http::Response<Body> {
    let (status, source) = blame.judge(why);
    local(status, source)
}

/// What decides, when a deadline passes while the plugin owes its next message, whether
/// the caller kept it waiting instead.
struct Blame {
    progress: RequestProgress,
    uri: http::Uri,
    /// The revision the call went to: a canary may declare a method another kind.
    target: Option<Target>,
    streams_requests: StreamsRequests,
}

impl Blame {
    /// The caller's, when the call waits on it for more of its request and the plugin
    /// cannot have begun on it: a method streaming both ways needs its first message at
    /// least, any other all of its request (a client-streaming one answers at its end).
    /// A caller of a bidirectional method that sends one message and then waits is waiting
    /// on the plugin's answer as far as anyone can tell: that deadline is the plugin's.
    fn caller_owes(&self) -> bool {
        let (waiting, first_whole) = self.progress.now();
        waiting && (!first_whole || !(self.streams_requests)(self.target.as_ref(), self.uri.path()))
    }

    fn judge(&self, why: Why) -> (tonic::Status, Source) {
        if !self.caller_owes() {
            return (why.status(), why.source());
        }
        let msg = format!(
            "deadline of {:?} ({}) exceeded: the caller had not sent all of its request",
            why.timeout,
            why.who()
        );
        (tonic::Status::deadline_exceeded(msg), Source::Caller)
    }
}

/// Far enough for any deadline; tokio's clock takes it without overflow.
const MAX: Duration = crate::config::units::MAX_DURATION;

/// A caller's own deadline at least this long that the plugin misses counts against the
/// plugin; a shorter one is the caller's choice.
pub const CALLERS_COUNT_FROM: Duration = Duration::from_secs(1);

/// Which limit a call ran into.
#[derive(Clone, Copy, Debug)]
struct Why {
    timeout: Duration,
    callers: bool,
}

impl Why {
    fn status(self) -> tonic::Status {
        tonic::Status::deadline_exceeded(format!("deadline of {:?} ({}) exceeded", self.timeout, self.who()))
    }

    fn who(self) -> &'static str {
        if self.callers { "the caller's grpc-timeout" } else { "the plugin's call_timeout" }
    }

    /// While the plugin owed the answer: its fault under its own limit, and under a caller's
    /// of a second or more (or the deadlock of a plugin would hide behind the deadlines
    /// every real client sets); a caller asking less chose to give up that soon.
    fn source(self) -> Source {
        if self.callers && self.timeout < CALLERS_COUNT_FROM { Source::Caller } else { Source::Deadline }
    }
}

/// A response with a body is held to the deadline too: a plugin that
/// answers and then stalls, or streams past it, is cut off there.
fn held_to(resp: http::Response<Body>, expires: Expires, why: Why, blame: Blame) -> http::Response<Body> {
    if super::grpc_status(resp.headers()).is_some() {
        return resp;
    }
    let (mut parts, inner) = resp.into_parts();
    parts.extensions.insert(expires);
    let body = DeadlineBody {
        inner,
        expires: expires.0,
        why,
        blame,
        sleep: None,
        ended: false,
        waiting: false,
        handed: Instant::now(),
    };
    http::Response::from_parts(parts, Body::new(body))
}

/// The response body until the deadline; then the plugin's stream is
/// dropped (which resets it and gives its window back) and the caller gets
/// DEADLINE_EXCEEDED as trailers.
struct DeadlineBody {
    inner: Body,
    expires: Instant,
    why: Why,
    /// Whether the caller kept the plugin waiting on its request.
    blame: Blame,
    /// Registered only once the body has had to wait.
    sleep: Option<Pin<Box<Sleep>>>,
    ended: bool,
    /// The reader waits on the plugin: the last poll found nothing.
    waiting: bool,
    /// When the reader was last handed a frame.
    handed: Instant,
}

/// A reader back within this long of its last frame was keeping up with the plugin.
const KEEPING_UP: Duration = Duration::from_millis(1);

impl DeadlineBody {
    /// Ends the answer at the deadline. `waiting_on_caller`: the plugin's next message (or
    /// its end) was already there, untaken; then the time ran out on the caller's side.
    fn expire(&mut self, waiting_on_caller: bool) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        self.inner = Body::empty();
        self.ended = true;
        let (status, source) = if waiting_on_caller {
            let msg = format!(
                "deadline of {:?} ({}) exceeded: the answer was waiting for the caller to read it",
                self.why.timeout,
                self.why.who()
            );
            (tonic::Status::deadline_exceeded(msg), Source::Caller)
        } else {
            self.blame.judge(self.why)
        };
        let mut trailers = http::HeaderMap::new();
        match status.add_header(&mut trailers) {
            Ok(()) => {
                source.mark(&mut trailers);
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
            Err(status) => Poll::Ready(Some(Err(status))),
        }
    }
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        let now = Instant::now();
        if now >= this.expires {
            // The time ran out on the caller's side only when the reader had fallen behind
            // (it was not waiting, and came back late) and the plugin's next message, or
            // its end, was already here untaken (what stops a plugin sending under flow
            // control). A reader that was waiting, or a plugin with nothing more, is the
            // plugin's lateness: its own trailers arriving just after ours included.
            let behind = !this.waiting && now.saturating_duration_since(this.handed) > KEEPING_UP;
            let ahead = behind && matches!(Pin::new(&mut this.inner).poll_frame(cx), Poll::Ready(Some(Ok(_)) | None));
            return this.expire(ahead);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                if frame.as_ref().is_none_or(|f| f.as_ref().is_ok_and(Frame::is_trailers)) {
                    this.ended = true;
                }
                this.waiting = false;
                this.handed = now;
                return Poll::Ready(frame);
            }
            Poll::Pending => this.waiting = true,
        }
        let expires = this.expires;
        let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(expires)));
        match sleep.as_mut().poll(cx) {
            // The plugin owed its next message, and it did not come in time.
            Poll::Ready(()) => this.expire(false),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// How early a plugin's "cancelled" still counts as the deadline passing
/// (its clock started a little after ours).
const SLACK: Duration = Duration::from_millis(2);

fn is_cancelled<B>(resp: &http::Response<B>) -> bool {
    super::grpc_status(resp.headers()) == Some(tonic::Code::Cancelled)
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use http_body_util::BodyExt;
    use tower::{Service, ServiceExt};

    use super::*;

    /// A plugin's answer: headers and one message at once, then nothing
    /// more, ever; `dropped` tells when the supervisor let go of it.
    fn stalls_after_one_message(dropped: Arc<AtomicBool>) -> http::Response<Body> {
        struct Stream {
            sent: bool,
            dropped: Arc<AtomicBool>,
        }
        impl http_body::Body for Stream {
            type Data = Bytes;
            type Error = tonic::Status;
            fn poll_frame(
                mut self: Pin<&mut Self>,
                _: &mut Context<'_>,
            ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
                if std::mem::replace(&mut self.sent, true) {
                    Poll::Pending
                } else {
                    Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\0")))))
                }
            }
        }
        impl Drop for Stream {
            fn drop(&mut self) {
                self.dropped.store(true, Ordering::SeqCst);
            }
        }
        http::Response::new(Body::new(Stream { sent: false, dropped }))
    }

    #[tokio::test]
    async fn a_malformed_grpc_timeout_is_refused_naming_it_and_the_plugin_never_sees_the_call() {
        let reached = Arc::new(AtomicBool::new(false));
        let r = reached.clone();
        let plugin = tower::service_fn(move |_req: http::Request<Body>| {
            r.store(true, Ordering::SeqCst);
            async move { Ok::<_, Infallible>(http::Response::new(Body::empty())) }
        });
        let mut svc = tower::Layer::layer(&DeadlineLayer::fixed(Duration::from_secs(30)), plugin);
        for (value, quoted) in [("1.5S", "\"1.5S\""), ("10s", "\"10s\""), ("123456789m", "\"123456789m\"")] {
            let req = http::Request::builder().header(GRPC_TIMEOUT, value).body(Body::empty()).unwrap();
            let resp = svc.ready().await.unwrap().call(req).await.unwrap();
            let status = tonic::Status::from_header_map(resp.headers()).expect("a status");
            assert_eq!(status.code(), tonic::Code::Internal, "{value}");
            assert!(status.message().starts_with(&format!("malformed grpc-timeout {quoted}: it must be")), "{status}");
            assert_eq!(answered_by(&resp).0, Source::Caller);
        }
        assert!(!reached.load(Ordering::SeqCst), "a call with a malformed deadline reached the plugin");
        // A well-formed one goes through.
        let req = http::Request::builder().header(GRPC_TIMEOUT, "5S").body(Body::empty()).unwrap();
        svc.ready().await.unwrap().call(req).await.unwrap();
        assert!(reached.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn an_answer_that_stalls_ends_at_the_deadline_and_lets_the_plugin_stream_go() {
        let dropped = Arc::new(AtomicBool::new(false));
        let d = dropped.clone();
        let plugin = tower::service_fn(move |_req: http::Request<Body>| {
            let d = d.clone();
            async move { Ok::<_, Infallible>(stalls_after_one_message(d)) }
        });
        let limit = Duration::from_millis(300);
        let mut svc = tower::Layer::layer(&DeadlineLayer::fixed(limit), plugin);
        let started = Instant::now();
        let resp = svc.ready().await.unwrap().call(http::Request::new(Body::empty())).await.unwrap();
        let expires = resp.extensions().get::<Expires>().unwrap().0;
        assert!(expires >= started + limit && expires <= Instant::now() + limit);
        let mut body = resp.into_body();
        assert!(body.frame().await.unwrap().unwrap().is_data());
        let end = body.frame().await.unwrap().unwrap().into_trailers().unwrap();
        assert!(Instant::now() >= expires, "ended {:?} early", expires - Instant::now());
        assert_eq!(end.get("grpc-status").unwrap(), "4");
        assert!(
            end.get("grpc-message")
                .unwrap()
                .to_str()
                .unwrap()
                .contains("300ms%20(the%20plugin's%20call_timeout)%20exceeded"),
            "{end:?}"
        );
        assert!(dropped.load(Ordering::SeqCst), "the plugin's stream is let go at the deadline");
        assert!(body.frame().await.is_none());
    }

    /// The source a call's end was marked with, and its message.
    fn ended_by(trailers: &http::HeaderMap) -> (&str, String) {
        let source = trailers.get(super::super::record::SOURCE_TRAILER).map_or("plugin", |v| v.to_str().unwrap());
        (source, message(trailers))
    }

    fn message(headers: &http::HeaderMap) -> String {
        headers.get("grpc-message").map(|v| v.to_str().unwrap().replace("%20", " ")).unwrap_or_default()
    }

    /// The source of an answer of ours without a body, and its message.
    fn answered_by(resp: &http::Response<Body>) -> (Source, String) {
        let source = resp.extensions().get::<super::super::record::Local>().expect("answered by a layer of ours").0;
        (source, message(resp.headers()))
    }

    #[tokio::test]
    async fn an_answer_the_plugin_had_sent_but_the_caller_had_not_taken_by_the_deadline_is_the_callers_delay() {
        // The plugin sent its whole answer at once; the caller takes nothing until past
        // the deadline (the caller's window was shut: the gateway stopped reading).
        let plugin = tower::service_fn(|_req: http::Request<Body>| async {
            let frames: Vec<Result<Frame<Bytes>, tonic::Status>> =
                (0..3).map(|_| Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\0")))).collect();
            Ok::<_, Infallible>(http::Response::new(Body::new(http_body_util::StreamBody::new(
                futures_util::stream::iter(frames),
            ))))
        });
        // Long enough that no stall of a loaded machine between the call and its
        // first frame reaches it.
        let limit = Duration::from_millis(300);
        let mut svc = tower::Layer::layer(&DeadlineLayer::fixed(limit), plugin);
        let resp = svc.ready().await.unwrap().call(http::Request::new(Body::empty())).await.unwrap();
        let mut body = resp.into_body();
        assert!(body.frame().await.unwrap().unwrap().is_data());
        tokio::time::sleep(limit + Duration::from_millis(20)).await;
        let end = body.frame().await.unwrap().unwrap().into_trailers().unwrap();
        assert_eq!(end.get("grpc-status").unwrap(), "4");
        assert_eq!(
            ended_by(&end),
            (
                "caller",
                "deadline of 300ms (the plugin's call_timeout) exceeded: the answer was waiting for the caller to \
                 read it"
                    .to_string()
            )
        );
    }

    #[tokio::test]
    async fn a_plugin_that_owes_its_next_message_at_the_deadline_is_the_one_that_was_late() {
        let plugin = tower::service_fn(|_req: http::Request<Body>| async {
            Ok::<_, Infallible>(stalls_after_one_message(Arc::new(AtomicBool::new(false))))
        });
        // Long enough that no stall of a loaded machine between the call and its
        // first frame reaches it.
        let limit = Duration::from_millis(300);
        let mut svc = tower::Layer::layer(&DeadlineLayer::fixed(limit), plugin);
        let resp = svc.ready().await.unwrap().call(http::Request::new(Body::empty())).await.unwrap();
        let mut body = resp.into_body();
        assert!(body.frame().await.unwrap().unwrap().is_data());
        // Taken late, and still the plugin had nothing more: its lateness, not the caller's.
        tokio::time::sleep(limit + Duration::from_millis(20)).await;
        let end = body.frame().await.unwrap().unwrap().into_trailers().unwrap();
        assert_eq!(ended_by(&end), ("deadline", "deadline of 300ms (the plugin's call_timeout) exceeded".to_string()));
    }

    #[tokio::test]
    async fn a_reader_waiting_at_the_deadline_blames_the_plugin_even_if_its_own_end_came_just_after() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, tonic::Status>>(2);
        let rx = std::sync::Mutex::new(Some(rx));
        let plugin = tower::service_fn(move |_req: http::Request<Body>| {
            let rx = rx.lock().unwrap().take().unwrap();
            let body = http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
            async move { Ok::<_, Infallible>(http::Response::new(Body::new(body))) }
        });
        // Long enough that no stall of a loaded machine between the call and its
        // first frame reaches it.
        let limit = Duration::from_millis(300);
        let mut svc = tower::Layer::layer(&DeadlineLayer::fixed(limit), plugin);
        let resp = svc.ready().await.unwrap().call(http::Request::new(Body::empty())).await.unwrap();
        let mut body = resp.into_body();
        assert!(futures_util::FutureExt::now_or_never(body.frame()).is_none(), "the reader waits on the plugin");
        tokio::time::sleep(limit + Duration::from_millis(20)).await;
        // The plugin keeps its own deadline: its status is there, a moment after ours.
        let mut late = http::HeaderMap::new();
        late.insert("grpc-status", HeaderValue::from_static("4"));
        tx.send(Ok(Frame::trailers(late))).await.unwrap();
        let end = body.frame().await.unwrap().unwrap().into_trailers().unwrap();
        assert_eq!(ended_by(&end), ("deadline", "deadline of 300ms (the plugin's call_timeout) exceeded".to_string()));
    }

    /// Who a call to a plugin that never answers is answered by, under the plugin's
    /// `limit` and the caller's `grpc-timeout`.
    async fn never_answered(limit: Duration, grpc_timeout: &'static str) -> (Source, String) {
        let never = tower::service_fn(|_req: http::Request<Body>| {
            std::future::pending::<Result<http::Response<Body>, Infallible>>()
        });
        let mut svc = tower::Layer::layer(&DeadlineLayer::fixed(limit), never);
        let mut req = http::Request::new(Body::empty());
        req.headers_mut().insert(GRPC_TIMEOUT, HeaderValue::from_static(grpc_timeout));
        let resp = svc.ready().await.unwrap().call(req).await.unwrap();
        answered_by(&resp)
    }

    #[tokio::test]
    async fn a_callers_own_shorter_grpc_timeout_is_the_callers_not_the_plugins() {
        assert_eq!(
            never_answered(Duration::from_secs(5), "30m").await,
            (Source::Caller, "deadline of 30ms (the caller's grpc-timeout) exceeded".to_string())
        );
        // A caller's deadline of a second or more that the plugin misses is the plugin's.
        assert_eq!(
            never_answered(Duration::from_secs(5), "1S").await,
            (Source::Deadline, "deadline of 1s (the caller's grpc-timeout) exceeded".to_string())
        );
        // Asking exactly the plugin's own limit leaves it the plugin's.
        assert_eq!(
            never_answered(Duration::from_millis(30), "30m").await,
            (Source::Deadline, "deadline of 30ms (the plugin's call_timeout) exceeded".to_string())
        );
    }

    #[tokio::test]
    async fn the_request_carries_its_deadline_for_the_queue() {
        let seen = tower::service_fn(|req: http::Request<Body>| async move {
            let expires = req.extensions().get::<Expires>().copied();
            let mut resp = http::Response::new(Body::empty());
            resp.extensions_mut().insert(expires);
            Ok::<_, Infallible>(resp)
        });
        let mut svc = tower::Layer::layer(&DeadlineLayer::fixed(Duration::from_secs(7)), seen);
        let before = Instant::now();
        let resp = svc.ready().await.unwrap().call(http::Request::new(Body::empty())).await.unwrap();
        let asked = resp.extensions().get::<Option<Expires>>().unwrap().expect("the request's deadline");
        assert!(asked.0 >= before + Duration::from_secs(7) && asked.0 <= Instant::now() + Duration::from_secs(7));
    }

    #[tokio::test]
    async fn the_largest_deadlines_neither_overflow_nor_panic() {
        let plugin = tower::service_fn(|_req: http::Request<Body>| async {
            Ok::<_, Infallible>(http::Response::new(Body::empty()))
        });
        let mut svc = tower::Layer::layer(&DeadlineLayer::fixed(Duration::MAX), plugin);
        let mut req = http::Request::new(Body::empty());
        req.headers_mut().insert(GRPC_TIMEOUT, HeaderValue::from_static("99999999H"));
        let resp = svc.ready().await.unwrap().call(req).await.unwrap();
        assert!(resp.extensions().get::<Expires>().is_some());
    }

    #[test]
    fn grpc_timeout_round_trips_and_refuses_garbage() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("x"), None);
        assert_eq!(parse_grpc_timeout("123456789m"), None);
        assert_eq!(parse_grpc_timeout("10q"), None);
        assert_eq!(parse_grpc_timeout("99999999u"), Some(Duration::from_micros(99_999_999)));
        for bad in ["", "S", "10", "10s", "123456789S", "-1S", "+1S", "1.5S", "1é"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
        for d in [Duration::from_micros(7), Duration::from_secs(3), Duration::from_secs(400_000)] {
            assert_eq!(parse_grpc_timeout(&encode_grpc_timeout(d)), Some(d));
        }
    }
}
