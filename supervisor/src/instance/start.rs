//! Bringing one instance up: open the verified binary, spawn it with its
//! connections, and hold it to the handshake and init within the timeout.
//! Any failure leaves nothing running.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use plugin_proto::plugin::v1::plugin_lifecycle_client::PluginLifecycleClient;
use plugin_proto::plugin::v1::{HandshakeRequest, InitRequest};
use plugin_proto::transport::H2Channel;
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::handshake::{self, Accepted, SUPPORTED_PROTOCOLS};
use super::{Instance, Plugin};
use crate::config::PluginSpec;
use crate::integrity::{Policy, VerifiedImage};
use crate::observe::capture;
use crate::sandbox::pidfd::{self, ExitStatus};
use crate::sandbox::spawn::{ChildSandbox, SpawnPlan};
use crate::supervisor::Shared;

/// A started instance.
pub struct Running {
    pub pid: i32,
    pub pidfd: Arc<AsyncFd<OwnedFd>>,
    pub channel: H2Channel,
    /// Becomes Some once the process has exited and been reaped.
    pub exit: watch::Receiver<Option<ExitStatus>>,
    pub tasks: Vec<JoinHandle<()>>,
    pub since: Instant,
    pub accepted: Accepted,
}

impl Running {
    pub async fn exited(&mut self) -> ExitStatus {
        // A reaper gone without a status counts as killed.
        exited(&mut self.exit).await.unwrap_or(ExitStatus::Signaled { signal: libc::SIGKILL, core_dumped: false })
    }

    pub fn kill(&self) {
        let _ = pidfd::send_signal(self.pidfd.get_ref(), libc::SIGKILL);
    }

    /// Done with the instance: the helper tasks (log capture, host service)
    /// stop, and the process is killed if it somehow still runs.
    pub fn release(self) {}
}

impl Drop for Running {
    fn drop(&mut self) {
        // Whoever drops a Running without stopping it (a cancelled task, a
        // shutdown) must not leave the process behind.
        if self.exit.borrow().is_none() {
            self.kill();
        }
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Kills a half-started child if the start is abandoned midway.
struct KillOnDrop(Option<Arc<AsyncFd<OwnedFd>>>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(fd) = &self.0 {
            let _ = pidfd::send_signal(fd.get_ref(), libc::SIGKILL);
        }
    }
}

/// Why an instance did not start.
#[derive(Debug)]
pub enum StartError {
    /// It cannot run as configured; retrying will not help.
    Refused(String),
    /// It failed in a way a retry may fix.
    Failed(String),
}

/// The plugin's verified image, reused while the file on disk is
/// unchanged, and verified afresh (off the async thread) when it changed.
async fn image(plugin: &Plugin, spec: &Arc<PluginSpec>) -> Result<Arc<VerifiedImage>, StartError> {
    if let Some(img) = plugin.image.lock().ok().and_then(|g| g.clone())
        && img.is_current()
    {
        return Ok(img);
    }
    let spec = spec.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        let policy = Policy {
            expected_sha256: spec.integrity.sha256,
            require_signature: spec.integrity.require_signature,
            trusted_keys: &spec.integrity.trusted_keys,
            ..Policy::default()
        };
        VerifiedImage::load(&spec.name, &spec.binary, &policy)
    })
    .await
    .map_err(|e| StartError::Failed(format!("verifying the binary panicked: {e}")))?
    .map_err(|e| StartError::Refused(e.to_string()))?;
    let img = Arc::new(loaded);
    if let Ok(mut slot) = plugin.image.lock() {
        *slot = Some(img.clone());
    }
    Ok(img)
}

pub async fn start(plugin: &Arc<Plugin>, inst: &Arc<Instance>, shared: &Arc<Shared>) -> Result<Running, StartError> {
    let spec = plugin.spec.load_full();
    let image = image(plugin, &spec).await?;
    let sha256 = image.binary().digest().to_hex();
    inst.update(|s| s.sha256 = sha256.clone());
    let signed_version = image.binary().signature().map(|s| s.version.clone());
    let binary: OwnedFd =
        image.exec_file().map_err(|e| StartError::Failed(format!("duplicating the binary image: {e}")))?.into();
    let (io, child_fds) =
        crate::sandbox::instance_io().map_err(|e| StartError::Failed(format!("creating sockets: {e}")))?;
    let (argv, env) = crate::sandbox::argv_env(&spec, &inst.id);
    let plan =
        SpawnPlan { plugin: spec.name.clone(), binary, argv, env, fds: child_fds, sandbox: ChildSandbox::default() };
    let spawned = shared.spawner.spawn(plan).await.map_err(|e| StartError::Refused(e.to_string()))?;
    let pid = spawned.pid;
    inst.update(|s| s.pid = Some(pid));
    shared.events.emit(&plugin.name, &inst.id, "spawned", format!("spawned pid {pid}"), &[("pid", pid.to_string())]);

    // SAFETY: the OwnedFd moves into the AsyncFd, which keeps it open and
    // unchanged for its whole life.
    let registered = unsafe { AsyncFd::register_with_interest(spawned.pidfd, tokio::io::Interest::READABLE) };
    let pidfd = Arc::new(registered.map_err(|e| StartError::Failed(format!("watching pid {pid}: {e}")))?);
    let mut guard = KillOnDrop(Some(pidfd.clone()));
    let (exit_tx, exit) = watch::channel(None);
    let mut tasks = vec![tokio::spawn({
        let pidfd = pidfd.clone();
        async move {
            let status = pidfd::wait(&pidfd).await.unwrap_or(ExitStatus::Exited(-1));
            let _ = exit_tx.send(Some(status));
        }
    })];
    let mut running = None;
    let result = async {
        for (fd, stream) in [(io.stdout, "stdout"), (io.stderr, "stderr")] {
            tasks.push(
                capture::spawn(fd, stream, inst.id.clone(), plugin.logs.clone())
                    .map_err(|e| StartError::Failed(format!("capturing {stream}: {e}")))?,
            );
        }
        let host = to_tokio(io.host).map_err(|e| StartError::Failed(format!("host socket: {e}")))?;
        let host_svc = super::host::server(inst.id.clone(), plugin.logs.clone());
        tasks.push(tokio::spawn(crate::net::serve_h2(host, host_svc)));

        let stream = to_tokio(io.plugin).map_err(|e| StartError::Failed(format!("plugin socket: {e}")))?;
        let (channel, conn) =
            H2Channel::handshake(stream).await.map_err(|e| StartError::Failed(format!("HTTP/2 setup: {e}")))?;
        tasks.push(tokio::spawn(async move {
            let _ = conn.await;
        }));
        let accepted = greet(&spec, &inst.id, channel.clone(), exit.clone(), shared, signed_version.as_deref()).await?;
        running = Some((channel, accepted));
        Ok(())
    }
    .await;
    match (result, running) {
        (Ok(()), Some((channel, accepted))) => {
            guard.0 = None;
            Ok(Running { pid, pidfd, channel, exit, tasks, since: Instant::now(), accepted })
        }
        (result, _) => {
            let _ = pidfd::send_signal(pidfd.get_ref(), libc::SIGKILL);
            let mut exit = exit;
            let _ = tokio::time::timeout(Duration::from_secs(5), exited(&mut exit)).await;
            for t in tasks {
                t.abort();
            }
            Err(result.err().unwrap_or_else(|| StartError::Failed("start did not complete".into())))
        }
    }
}

/// The exit status once the process has ended (None if the reaper vanished).
async fn exited(rx: &mut watch::Receiver<Option<ExitStatus>>) -> Option<ExitStatus> {
    rx.wait_for(Option::is_some).await.ok().and_then(|r| *r)
}

fn to_tokio(s: std::os::unix::net::UnixStream) -> std::io::Result<tokio::net::UnixStream> {
    s.set_nonblocking(true)?;
    tokio::net::UnixStream::from_std(s)
}

/// Handshake and init, each within the handshake timeout, each racing the
/// process's exit so a binary that dies early is reported as such.
async fn greet(
    spec: &PluginSpec,
    instance: &str,
    channel: H2Channel,
    mut exit: watch::Receiver<Option<ExitStatus>>,
    shared: &Shared,
    signed_version: Option<&str>,
) -> Result<Accepted, StartError> {
    let mut client = PluginLifecycleClient::new(channel);
    let timeout = spec.handshake_timeout;
    let req = HandshakeRequest {
        protocol_versions: SUPPORTED_PROTOCOLS.to_vec(),
        supervisor_version: env!("CARGO_PKG_VERSION").into(),
        expected_name: spec.name.clone(),
        instance: instance.to_owned(),
    };
    let died = |status: Option<ExitStatus>, phase: &str| {
        let status = status.map_or_else(|| "ended".to_owned(), |s| s.to_string());
        StartError::Refused(format!("{status} before answering the {phase}: not a plugin, or it crashed at start"))
    };
    let mut exit_after_error = exit.clone();
    let resp = tokio::select! {
        r = tokio::time::timeout(timeout, client.handshake(req)) => match r {
            Err(_) => return Err(StartError::Refused(format!("no handshake within {}: not a plugin, or hung at start", crate::config::units::format_duration(timeout)))),
            Ok(Err(status)) if status.code() == tonic::Code::FailedPrecondition => {
                return Err(StartError::Refused(format!("plugin refused the handshake: {}", status.message())));
            }
            Ok(Err(status)) => {
                // The connection may have failed because the process died.
                if let Ok(s) = tokio::time::timeout(Duration::from_millis(200), exited(&mut exit_after_error)).await {
                    return Err(died(s, "handshake"));
                }
                return Err(StartError::Refused(format!("handshake failed: {:?}: {}", status.code(), status.message())));
            }
            Ok(Ok(r)) => r.into_inner(),
        },
        s = exited(&mut exit) => return Err(died(s, "handshake")),
    };
    let accepted = handshake::check(spec, resp, signed_version).map_err(StartError::Refused)?;
    if let Err((service, owner)) = shared.routes.claim(&spec.name, &accepted.declared.services) {
        return Err(StartError::Refused(format!("service {service} is already served by plugin {owner:?}")));
    }
    let init =
        InitRequest { config_json: spec.config_json.clone(), data_dir: String::new(), instance: instance.to_owned() };
    tokio::select! {
        r = tokio::time::timeout(timeout, client.init(init)) => match r {
            Err(_) => Err(StartError::Failed(format!("init did not finish within {}", crate::config::units::format_duration(timeout)))),
            Ok(Err(status)) if status.code() == tonic::Code::Unavailable => Err(StartError::Failed(format!("init failed: {}", status.message()))),
            Ok(Err(status)) => Err(StartError::Refused(format!("init refused: {:?}: {}", status.code(), status.message()))),
            Ok(Ok(_)) => Ok(accepted),
        },
        s = exited(&mut exit) => Err(died(s, "init")),
    }
}
