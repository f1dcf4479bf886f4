//! The deadline of the call a handler is working on, as its caller set it
//! (`grpc-timeout`), so that calls the handler makes through the host channel
//! inherit what is left of it: a caller that gives up does not leave a chain of
//! calls running on its behalf.

use std::time::{Duration, Instant};

tokio::task_local! {
    static DEADLINE: Option<Instant>;
}

/// The deadline a request's headers carry, counted from now.
pub fn of(headers: &http::HeaderMap) -> Option<Instant> {
    headers.get("grpc-timeout").and_then(|v| parse(v.to_str().ok()?)).map(|d| Instant::now() + d)
}

/// Runs `fut`, a handler's, under `deadline`.
pub fn scope<F: std::future::Future>(
    deadline: Option<Instant>,
    fut: F,
) -> impl std::future::Future<Output = F::Output> {
    DEADLINE.scope(deadline, fut)
}

/// Runs `f`, a poll of a handler's answer stream, under `deadline`: a stream is polled
/// after its handler returned, outside [`scope`], and calls it makes through the host
/// channel are the call's as much.
pub fn sync_scope<R>(deadline: Option<Instant>, f: impl FnOnce() -> R) -> R {
    DEADLINE.sync_scope(deadline, f)
}

/// What is left of the current call's deadline, when the handler's call has one.
pub fn left() -> Option<Duration> {
    DEADLINE.try_with(|d| *d).ok().flatten().map(|d| d.saturating_duration_since(Instant::now()))
}

/// `grpc-timeout` as gRPC writes it: at most 8 digits and a unit.
pub fn parse(v: &str) -> Option<Duration> {
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at_checked(v.len() - 1)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
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

/// `d`, more than zero, as a `grpc-timeout` value (at most 8 digits), rounded down: the
/// call out must end no later than the call in.
pub fn format(d: Duration) -> String {
    let (us, ms) = (d.as_micros(), d.as_millis());
    if us < 100_000_000 {
        format!("{}u", us.max(1))
    } else if ms < 100_000_000 {
        format!("{ms}m")
    } else {
        format!("{}S", d.as_secs().min(99_999_999))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_read_as_grpc_writes_them() {
        assert_eq!(parse("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse("5u"), Some(Duration::from_micros(5)));
        assert_eq!(parse("m"), None);
        assert_eq!(parse("123456789m"), None, "more than 8 digits");
        assert_eq!(parse("12x"), None);
        assert_eq!(parse("-1m"), None);
        assert_eq!(parse("+5m"), None);
        assert_eq!(parse("5é"), None);
    }

    #[test]
    fn what_is_left_is_written_rounded_down_in_at_most_8_digits() {
        assert_eq!(format(Duration::from_nanos(1_500_900)), "1500u");
        assert_eq!(format(Duration::from_secs(99)), "99000000u");
        assert_eq!(format(Duration::from_secs(100)), "100000m");
        assert_eq!(format(Duration::from_secs(200_000)), "200000S");
    }

    #[tokio::test]
    async fn a_handler_sees_the_deadline_of_its_call_and_none_outside_one() {
        assert_eq!(left(), None);
        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-timeout", "500m".parse().unwrap());
        let seen = scope(of(&headers), async { left() }).await.unwrap();
        assert!(seen <= Duration::from_millis(500) && seen > Duration::from_millis(400), "{seen:?}");
        assert_eq!(scope(of(&http::HeaderMap::new()), async { left() }).await, None);
    }
}
