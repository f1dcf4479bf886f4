//! The caller's deadline on a lifecycle command: `supervisorctl` sends how
//! long it waits (`grpc-timeout`), and a start, stop or restart answers by
//! then with the state reached so far instead of outliving its caller.

use std::future::Future;
use std::time::Duration;

use tonic::Status;
use tonic::metadata::MetadataMap;

use crate::{Supervisor, SupervisorError};

/// How long a command may wait before answering: the caller's deadline less
/// a margin for the answer's way back; None when the caller set none.
pub(super) fn answer_within(metadata: &MetadataMap) -> Option<Duration> {
    let d = grpc_timeout(metadata.get("grpc-timeout")?.to_str().ok()?)?;
    Some(d.saturating_sub((d / 10).min(Duration::from_millis(500))))
}

/// `grpc-timeout`: at most 8 digits and a unit (gRPC over HTTP/2 spec).
fn grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at_checked(value.len().checked_sub(1)?)?;
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

/// Runs a lifecycle command for at most `within`; past it, answers with the
/// plugin's state then (the command itself goes on: it was already issued).
pub(super) async fn bounded(
    sup: &Supervisor,
    name: &str,
    within: Option<Duration>,
    command: impl Future<Output = Result<String, SupervisorError>>,
) -> Result<String, Status> {
    let result = match within {
        Some(limit) => match tokio::time::timeout(limit, command).await {
            Ok(r) => r,
            Err(_) => sup.plugin(name).map(|p| p.describe_state()),
        },
        None => command.await,
    };
    result.map_err(super::to_status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_as_the_spec_writes_them() {
        assert_eq!(grpc_timeout("10S"), Some(Duration::from_secs(10)));
        assert_eq!(grpc_timeout("1500m"), Some(Duration::from_millis(1500)));
        assert_eq!(grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(grpc_timeout("99999999u"), Some(Duration::from_micros(99_999_999)));
        for bad in ["", "S", "10", "10s", "123456789S", "-1S", "1.5S"] {
            assert_eq!(grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_answer_leaves_a_margin_for_its_way_back() {
        let mut m = MetadataMap::new();
        assert_eq!(answer_within(&m), None);
        m.insert("grpc-timeout", "10S".parse().unwrap());
        assert_eq!(answer_within(&m), Some(Duration::from_millis(9500)));
        m.insert("grpc-timeout", "1S".parse().unwrap());
        assert_eq!(answer_within(&m), Some(Duration::from_millis(900)));
    }
}
