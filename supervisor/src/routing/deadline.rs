//! The deadline layer: a call gets the shorter of the caller's
//! `grpc-timeout` and the plugin's configured call timeout, the plugin is
//! told the deadline, and a call that overruns, answer included, ends as
//! DEADLINE_EXCEEDED. The response carries its deadline ([`Expires`]) so
//! the gateway can reset a caller that does not take it in time.

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

const GRPC_TIMEOUT: &str = "grpc-timeout";

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
}

impl DeadlineLayer {
    pub fn fixed(limit: Duration) -> Self {
        Self { limit: Arc::new(move |_: &http::Extensions| limit) }
    }

    /// The limit `read` says at each call.
    pub fn reading(read: impl Fn(&http::Extensions) -> Duration + Send + Sync + 'static) -> Self {
        Self { limit: Arc::new(read) }
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
        Deadline { inner, limit: self.limit.clone() }
    }
}

#[derive(Clone)]
pub struct Deadline<S> {
    inner: S,
    limit: Limit,
}

/// When a call's time is up: set on every response that has a body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expires(pub Instant);

impl<S, B> tower::Service<http::Request<B>> for Deadline<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let asked = req.headers().get(GRPC_TIMEOUT).and_then(|v| v.to_str().ok()).and_then(parse_grpc_timeout);
        let limit = (self.limit)(req.extensions());
        let timeout = asked.map_or(limit, |a| a.min(limit));
        if let Ok(v) = HeaderValue::from_str(&encode_grpc_timeout(timeout)) {
            req.headers_mut().insert(GRPC_TIMEOUT, v);
        }
        let fut = self.inner.call(req);
        let started = Instant::now();
        let expires = Expires(started.checked_add(timeout).unwrap_or_else(|| started + MAX));
        Box::pin(async move {
            let why = Why { timeout, callers: asked.is_some_and(|a| a <= timeout) };
            match tokio::time::timeout_at(expires.0, fut).await {
                // The plugin is told the deadline too, and tonic reports its
                // own expiry as CANCELLED: at the deadline, that is this.
                Ok(Ok(resp)) if is_cancelled(&resp) && started.elapsed() + SLACK >= timeout => {
                    Ok(why.status().into_http())
                }
                Ok(Ok(resp)) => Ok(held_to(resp, expires, why)),
                Ok(Err(e)) => Err(e),
                Err(_) => Ok(why.status().into_http()),
            }
        })
    }
}

/// Far enough for any deadline; tokio's clock takes it without overflow.
const MAX: Duration = crate::config::units::MAX_DURATION;

/// Which limit a call ran into.
#[derive(Clone, Copy, Debug)]
struct Why {
    timeout: Duration,
    callers: bool,
}

impl Why {
    fn status(self) -> tonic::Status {
        let who = if self.callers { "the caller's grpc-timeout" } else { "the plugin's call_timeout" };
        tonic::Status::deadline_exceeded(format!("deadline of {:?} ({who}) exceeded", self.timeout))
    }
}

/// A response with a body is held to the deadline too: a plugin that
/// answers and then stalls, or streams past it, is cut off there.
fn held_to(resp: http::Response<Body>, expires: Expires, why: Why) -> http::Response<Body> {
    if super::grpc_status(resp.headers()).is_some() {
        return resp;
    }
    let (mut parts, inner) = resp.into_parts();
    parts.extensions.insert(expires);
    let body = DeadlineBody { inner, expires: expires.0, why, sleep: None, ended: false };
    http::Response::from_parts(parts, Body::new(body))
}

/// The response body until the deadline; then the plugin's stream is
/// dropped (which resets it and gives its window back) and the caller gets
/// DEADLINE_EXCEEDED as trailers.
struct DeadlineBody {
    inner: Body,
    expires: Instant,
    why: Why,
    /// Registered only once the body has had to wait.
    sleep: Option<Pin<Box<Sleep>>>,
    ended: bool,
}

impl DeadlineBody {
    fn expire(&mut self) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        self.inner = Body::empty();
        self.ended = true;
        let mut trailers = http::HeaderMap::new();
        match self.why.status().add_header(&mut trailers) {
            Ok(()) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
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
        if Instant::now() >= this.expires {
            return this.expire();
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                if frame.as_ref().is_none_or(|f| f.as_ref().is_ok_and(Frame::is_trailers)) {
                    this.ended = true;
                }
                return Poll::Ready(frame);
            }
            Poll::Pending => {}
        }
        let expires = this.expires;
        let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(expires)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => this.expire(),
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
