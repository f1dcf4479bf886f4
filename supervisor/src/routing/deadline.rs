//! The deadline layer: a call gets the shorter of the caller's
//! `grpc-timeout` and the plugin's configured call timeout, the plugin is
//! told the deadline, and a call that overruns ends as DEADLINE_EXCEEDED.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::HeaderValue;

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

impl<S, B> tower::Service<http::Request<B>> for Deadline<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
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
        let started = tokio::time::Instant::now();
        Box::pin(async move {
            let who = if asked.is_some_and(|a| a <= timeout) {
                "the caller's grpc-timeout"
            } else {
                "the plugin's call_timeout"
            };
            let exceeded =
                || tonic::Status::deadline_exceeded(format!("deadline of {timeout:?} ({who}) exceeded")).into_http();
            match tokio::time::timeout(timeout, fut).await {
                // The plugin is told the deadline too, and tonic reports its
                // own expiry as CANCELLED: at the deadline, that is this.
                Ok(Ok(resp)) if is_cancelled(&resp) && started.elapsed() + SLACK >= timeout => Ok(exceeded()),
                Ok(r) => r,
                Err(_) => Ok(exceeded()),
            }
        })
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
