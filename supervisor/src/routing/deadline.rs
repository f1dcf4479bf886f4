//! The deadline layer: a call gets the shorter of the caller's
//! `grpc-timeout` and the plugin's configured call timeout, the plugin is
//! told the deadline, and a call that overruns, answer included, ends as
//! DEADLINE_EXCEEDED. The response carries its deadline ([`Expires`]) so
//! the gateway can reset a caller that does not take it in time.

use std::future::Future;
use std::pin::Pin;
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
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (num, unit) = v.split_at(v.len() - 1);
    let n: u64 = num.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
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

#[derive(Clone, Debug)]
pub struct DeadlineLayer {
    pub limit: Duration,
}

impl<S> tower::Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Deadline { inner, limit: self.limit }
    }
}

#[derive(Clone, Debug)]
pub struct Deadline<S> {
    inner: S,
    limit: Duration,
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
        let timeout = asked.map_or(self.limit, |a| a.min(self.limit));
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
                Ok(Ok(resp)) if is_cancelled(&resp) && started.elapsed() + SLACK >= timeout => Ok(why.status().into_http()),
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
    use super::*;

    #[test]
    fn grpc_timeout_round_trips_and_refuses_garbage() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("x"), None);
        assert_eq!(parse_grpc_timeout("123456789m"), None);
        assert_eq!(parse_grpc_timeout("10q"), None);
        for d in [Duration::from_micros(7), Duration::from_secs(3), Duration::from_secs(400_000)] {
            assert_eq!(parse_grpc_timeout(&encode_grpc_timeout(d)), Some(d));
        }
    }
}
