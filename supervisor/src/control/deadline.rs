//! The caller's deadline on a lifecycle command: `supervisorctl` sends how
//! long it waits (`grpc-timeout`), and a start, stop or restart answers by
//! then with the state reached so far instead of outliving its caller.

use std::future::Future;
use std::time::Duration;

use tonic::Status;
use tonic::metadata::MetadataMap;

use crate::routing::deadline::parse_grpc_timeout;
use crate::supervisor::Acted;
use crate::{Supervisor, SupervisorError};

/// How long a command may wait before answering: the caller's deadline less
/// a margin for the answer's way back; None when the caller set none.
pub(super) fn answer_within(metadata: &MetadataMap) -> Option<Duration> {
    let d = parse_grpc_timeout(metadata.get("grpc-timeout")?.to_str().ok()?)?;
    Some(d.saturating_sub((d / 10).min(Duration::from_millis(500))))
}

/// Runs a lifecycle command for at most `within`; past it, answers with the
/// plugin's state then, as not yet what was asked (the command itself goes on: it was
/// already issued).
pub(super) async fn bounded(
    sup: &Supervisor,
    name: &str,
    within: Option<Duration>,
    command: impl Future<Output = Result<Acted, SupervisorError>>,
) -> Result<Acted, Status> {
    let result = match within {
        Some(limit) => match tokio::time::timeout(limit, command).await {
            Ok(r) => r,
            Err(_) => sup.plugin(name).map(|p| Acted { said: p.describe_state(), reached: false }),
        },
        None => command.await,
    };
    result.map_err(super::to_status)
}

#[cfg(test)]
mod tests {
    use super::*;

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
