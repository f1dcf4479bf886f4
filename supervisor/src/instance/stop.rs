//! Stopping one instance: ask it to drain, then insist. The process is
//! gone when this returns.

use std::future::Future;
use std::time::Duration;

use plugin_proto::plugin::v1::ShutdownRequest;
use plugin_proto::plugin::v1::plugin_lifecycle_client::PluginLifecycleClient;
use tokio::sync::watch;

use super::running::Running;
use crate::sandbox::pidfd::ExitStatus;

/// How long SIGTERM gets after the drain deadline, before SIGKILL.
pub const TERM_GRACE: Duration = Duration::from_secs(1);

/// Stops `running`: the Shutdown call, the drain, SIGTERM, SIGKILL. Once
/// `hurry` turns true (a second stop signal to the daemon) the waiting ends
/// and the instance is killed at once.
pub async fn stop(
    running: &mut Running,
    drain: Duration,
    reason: &str,
    mut hurry: watch::Receiver<bool>,
) -> ExitStatus {
    let Some(channel) = running.channel.clone() else {
        running.kill_main();
        return running.exited().await;
    };
    let mut client = PluginLifecycleClient::new(channel);
    let req = ShutdownRequest {
        drain_deadline_ms: drain.as_millis().min(u128::from(u32::MAX)) as u32,
        reason: reason.to_owned(),
    };
    let patient = async {
        // A plugin that does not answer quickly gets the signals below anyway.
        let asked = Duration::from_secs(1).min(drain.max(Duration::from_millis(100)));
        let _ = tokio::time::timeout(asked, client.shutdown(req)).await;
        if let Ok(status) =
            tokio::time::timeout(drain.saturating_add(plugin_proto::launch::EXIT_AFTER_DRAIN), running.exited()).await
        {
            return Some(status);
        }
        running.terminate();
        tokio::time::timeout(TERM_GRACE, running.exited()).await.ok()
    };
    if let Some(status) = unless_hurried(patient, &mut hurry).await.flatten() {
        return status;
    }
    running.kill_main();
    running.exited().await
}

/// `work`'s output, or None as soon as `hurry` is (or becomes) true.
async fn unless_hurried<T>(work: impl Future<Output = T>, hurry: &mut watch::Receiver<bool>) -> Option<T> {
    tokio::select! {
        out = work => Some(out),
        _ = hurry.wait_for(|h| *h) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hurrying_cuts_a_wait_short_and_a_finished_wait_is_kept() {
        let (tx, mut rx) = watch::channel(false);
        assert_eq!(unless_hurried(async { 7 }, &mut rx).await, Some(7));
        let slow = tokio::time::sleep(Duration::from_secs(3600));
        let hurried = tokio::spawn(async move { unless_hurried(slow, &mut rx).await });
        tx.send_replace(true);
        let out = tokio::time::timeout(Duration::from_secs(5), hurried).await.expect("not cut short").unwrap();
        assert_eq!(out, None);
        // Already hurried when the wait begins: it does not begin.
        let mut late = tx.subscribe();
        assert_eq!(unless_hurried(std::future::pending::<()>(), &mut late).await, None);
    }
}
