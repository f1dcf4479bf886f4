//! A started instance and what the supervisor holds of it: the process
//! (by pidfd), its channel, its cgroup, and what it was killed for; and the
//! words for why it ended.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use plugin_proto::transport::H2Channel;
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::handshake::Accepted;
use crate::config::QuotaConfig;
use crate::config::units::ByteSize;
use crate::sandbox::cgroup::{self, Removal};
use crate::sandbox::pidfd::{self, ExitStatus};
use crate::sandbox::tier::ARCH_KILL_REPORT;

/// A started instance.
pub struct Running {
    pub pid: i32,
    pub pidfd: Arc<AsyncFd<OwnedFd>>,
    /// Set once the handshake succeeded (start returns only such instances).
    pub channel: Option<H2Channel>,
    /// Becomes Some once the process has exited and been reaped.
    pub exit: watch::Receiver<Option<ExitStatus>>,
    pub tasks: Vec<JoinHandle<()>>,
    pub since: Instant,
    /// Set once the handshake and init succeeded.
    pub accepted: Option<Accepted>,
    pub fences: Fences,
}

/// What fences a running instance, and what they reported.
#[derive(Clone, Debug, Default)]
pub struct Fences {
    pub cgroup: Option<Arc<cgroup::Instance>>,
    /// Set by the seccomp listener when a forbidden call killed the instance.
    pub violation: Arc<Mutex<Option<String>>>,
    /// A seccomp filter is installed (so SIGSYS means the arch check).
    pub seccomp: bool,
    pub quota: QuotaConfig,
    pub tier: String,
    /// Quotas the host could not enforce.
    pub notes: Vec<String>,
}

impl Fences {
    /// Kills every process of the instance: the whole cgroup when there is
    /// one (a double-forked escapee included), else the main process.
    pub fn kill(&self, pidfd: &OwnedFd) {
        if let Some(cg) = &self.cgroup
            && let Err(e) = cg.kill()
        {
            tracing::warn!(error = %e, "cgroup kill failed; signalling the main process");
        }
        let _ = pidfd::send_signal(pidfd, libc::SIGKILL);
    }
}

impl Running {
    pub async fn exited(&mut self) -> ExitStatus {
        // A reaper gone without a status counts as killed.
        exited(&mut self.exit).await.unwrap_or(ExitStatus::Signaled { signal: libc::SIGKILL, core_dumped: false })
    }

    pub fn kill(&self) {
        self.fences.kill(self.pidfd.get_ref());
    }

    /// Why the instance ended, in the words operators see: a seccomp
    /// violation or an OOM kill is named as such, never as a bare signal.
    pub fn reason(&self, status: ExitStatus) -> String {
        if let Ok(Some(v)) = self.fences.violation.lock().map(|v| v.clone()) {
            return v;
        }
        let killed = matches!(status, ExitStatus::Signaled { signal: libc::SIGKILL, .. });
        if killed
            && let Some(cg) = &self.fences.cgroup
            && cg.stats().ok().and_then(|s| s.oom_kills).is_some_and(|n| n > 0)
        {
            return format!("killed: out of memory (limit {})", oom_limit(cg, &self.fences.quota));
        }
        if self.fences.seccomp && matches!(status, ExitStatus::Signaled { signal: libc::SIGSYS, .. }) {
            return ARCH_KILL_REPORT.to_owned();
        }
        status.to_string()
    }

    /// After the main process is gone: kills whatever else is left in the
    /// cgroup and removes it, waiting (bounded) for the stragglers to exit.
    pub async fn clean_up(self) {
        if let Some(cg) = &self.fences.cgroup {
            let _ = cg.kill();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            loop {
                match cg.try_remove() {
                    Ok(Removal::Removed) => break,
                    Ok(Removal::Pending { .. }) if tokio::time::Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    other => {
                        tracing::warn!(result = ?other, cgroup = ?cg.cgroups(), "instance cgroup not removed; the next start or shutdown retries");
                        break;
                    }
                }
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Whoever drops a Running without stopping it (a cancelled task, a
        // shutdown) must not leave a process behind.
        if self.exit.borrow().is_none() {
            self.kill();
        } else if let Some(cg) = &self.fences.cgroup {
            let _ = cg.kill();
        }
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The memory limit in force when the OOM killer struck: read from the
/// cgroup, since a live `quota` change may have moved it since the spawn;
/// the spawn-time quota only when the cgroup cannot tell.
fn oom_limit(cg: &cgroup::Instance, at_spawn: &QuotaConfig) -> String {
    match cg.limits() {
        Ok(l) => l.memory_max.map_or_else(|| "none".to_owned(), |b| ByteSize(b).to_string()),
        Err(_) => at_spawn.memory_max.map_or_else(|| "unknown".to_owned(), |m| m.to_string()),
    }
}

/// The exit status once the process has ended (None if the reaper vanished).
pub async fn exited(rx: &mut watch::Receiver<Option<ExitStatus>>) -> Option<ExitStatus> {
    rx.wait_for(Option::is_some).await.ok().and_then(|r| *r)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::sandbox::cgroup::test_hosts::{create, hybrid};
    use crate::sandbox::cgroup::{Limits, SubtreeConfig};

    #[test]
    fn the_oom_reason_names_the_limit_in_force_not_the_one_at_spawn() {
        let (fs, layout) = hybrid();
        let cfg = SubtreeConfig { name: "s".into(), parent: None, move_self: false };
        let tree = create(&fs, Arc::new(layout), &cfg).unwrap();
        let at_spawn = QuotaConfig { memory_max: Some(ByteSize(64 << 20)), ..Default::default() };
        let cg = tree.create_instance("p", "p-0", &Limits { memory_max: Some(64 << 20), ..Limits::default() }).unwrap();
        assert_eq!(oom_limit(&cg, &at_spawn), "64M");
        // A live quota change lowered it.
        cg.set_limits(&Limits { memory_max: Some(6 << 20), ..Limits::default() }).unwrap();
        assert_eq!(oom_limit(&cg, &at_spawn), "6M");
    }
}
