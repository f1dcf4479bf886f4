//! Stopping one instance: ask it to drain, then insist. The process is
//! gone when this returns.

use std::time::Duration;

use plugin_proto::plugin::v1::ShutdownRequest;
use plugin_proto::plugin::v1::plugin_lifecycle_client::PluginLifecycleClient;

use super::running::Running;
use crate::sandbox::pidfd::{self, ExitStatus};

/// How long SIGTERM gets after the drain deadline, before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(1);

pub async fn stop(running: &mut Running, drain: Duration, reason: &str) -> ExitStatus {
    let Some(channel) = running.channel.clone() else {
        running.kill();
        return running.exited().await;
    };
    let mut client = PluginLifecycleClient::new(channel);
    let req = ShutdownRequest {
        drain_deadline_ms: drain.as_millis().min(u128::from(u32::MAX)) as u32,
        reason: reason.to_owned(),
    };
    // A plugin that does not answer quickly gets the signals below anyway.
    let _ =
        tokio::time::timeout(Duration::from_secs(1).min(drain.max(Duration::from_millis(100))), client.shutdown(req))
            .await;
    if let Ok(status) = tokio::time::timeout(drain.saturating_add(Duration::from_millis(250)), running.exited()).await {
        return status;
    }
    let _ = pidfd::send_signal(running.pidfd.get_ref(), libc::SIGTERM);
    if let Ok(status) = tokio::time::timeout(TERM_GRACE, running.exited()).await {
        return status;
    }
    running.kill();
    running.exited().await
}
