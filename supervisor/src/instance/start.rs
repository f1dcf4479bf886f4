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

use super::handshake::{self, Accepted, SUPPORTED_PROTOCOLS};
use super::running::{Fences, Running, exited};
use super::{Instance, Plugin};
use crate::config::PluginSpec;
use crate::integrity::{Policy, SearchConfig, VerifiedImage};
use crate::observe::capture;
use crate::sandbox::confine::{ConfineError, ImageGrants};
use crate::sandbox::pidfd::{self, ExitStatus};
use crate::sandbox::spawn::SpawnPlan;
use crate::sandbox::tier::{Verdict, ViolationAction};
use crate::supervisor::Shared;

/// Why an instance did not start.
#[derive(Debug)]
pub enum StartError {
    /// It cannot run as configured; retrying will not help.
    Refused(String),
    /// It failed in a way a retry may fix.
    Failed(String),
}

/// A plugin's verified binary and what Landlock grants it, shared by its
/// instances until the file on disk changes.
#[derive(Debug)]
pub struct PluginImage {
    pub image: VerifiedImage,
    pub grants: ImageGrants,
}

/// The plugin's verified image, reused while the file on disk is
/// unchanged, and verified afresh (off the async thread) when it changed.
async fn image(plugin: &Plugin, spec: &Arc<PluginSpec>) -> Result<Arc<PluginImage>, StartError> {
    if let Some(img) = plugin.image.lock().ok().and_then(|g| g.clone())
        && img.image.is_current()
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
        let image = VerifiedImage::load(&spec.name, &spec.binary, &policy).map_err(|e| e.to_string())?;
        // The loader's files are granted under Landlock; a library that
        // cannot be found is reported now rather than as a crash at start.
        let loader = image
            .binary()
            .loader_files(&SearchConfig::host())
            .map_err(|e| format!("plugin {:?}: resolving the libraries it needs: {e}", spec.name))?;
        Ok::<_, String>(PluginImage { image, grants: ImageGrants::new(loader.paths().into_iter().collect()) })
    })
    .await
    .map_err(|e| StartError::Failed(format!("verifying the binary panicked: {e}")))?
    .map_err(StartError::Refused)?;
    let img = Arc::new(loaded);
    if let Ok(mut slot) = plugin.image.lock() {
        *slot = Some(img.clone());
    }
    Ok(img)
}

pub async fn start(plugin: &Arc<Plugin>, inst: &Arc<Instance>, shared: &Arc<Shared>) -> Result<Running, StartError> {
    let spec = plugin.spec.load_full();
    let image = image(plugin, &spec).await?;
    let sha256 = image.image.binary().digest().to_hex();
    let signed_version = image.image.binary().signature().map(|s| s.version.clone());
    let quota = plugin.quota(shared.sandbox.tier(&spec.tier).map(|t| &t.quota));
    let confined = shared.sandbox.confine(&spec, &inst.id, &quota, &image.grants).map_err(|e| match e {
        ConfineError::Refused(r) => StartError::Refused(r),
        ConfineError::Failed(r) => StartError::Failed(r),
    })?;
    let cgroup = confined.cgroup.map(Arc::new);
    inst.cgroup.store(cgroup.clone());
    let fences = Fences {
        cgroup: cgroup.clone(),
        violation: Arc::default(),
        seccomp: confined.seccomp.is_some(),
        quota,
        tier: spec.tier.clone(),
        notes: confined.notes,
    };
    inst.update(|s| {
        s.sha256 = sha256;
        s.tier = fences.tier.clone();
        s.quota = fences.quota.clone();
        s.notes = fences.notes.clone();
    });
    let binary: OwnedFd =
        image.image.exec_file().map_err(|e| StartError::Failed(format!("duplicating the binary image: {e}")))?.into();
    let (io, child_fds) =
        crate::sandbox::instance_io().map_err(|e| StartError::Failed(format!("creating sockets: {e}")))?;
    let (argv, env) = crate::sandbox::argv_env(&spec, &inst.id);
    let plan = SpawnPlan { plugin: spec.name.clone(), binary, argv, env, fds: child_fds, sandbox: confined.child };
    let spawned = match shared.spawner.spawn(plan).await {
        Ok(s) => s,
        Err(e) => {
            if let Some(cg) = &cgroup {
                let _ = cg.kill();
                let _ = cg.try_remove();
            }
            return Err(StartError::Refused(e.to_string()));
        }
    };
    let pid = spawned.pid;
    inst.update(|s| s.pid = Some(pid));
    shared.events.emit(
        &plugin.name,
        &inst.id,
        "spawned",
        format!("spawned pid {pid} ({})", fences.tier),
        &[("pid", pid.to_string())],
    );

    // SAFETY: the OwnedFd moves into the AsyncFd, which keeps it open and
    // unchanged for its whole life.
    let registered = unsafe { AsyncFd::register_with_interest(spawned.pidfd, tokio::io::Interest::READABLE) };
    let pidfd = Arc::new(registered.map_err(|e| StartError::Failed(format!("watching pid {pid}: {e}")))?);
    let (exit_tx, exit) = watch::channel(None);
    let tasks = vec![tokio::spawn({
        let pidfd = pidfd.clone();
        async move {
            let status = pidfd::wait(&pidfd).await.unwrap_or(ExitStatus::Exited(-1));
            let _ = exit_tx.send(Some(status));
        }
    })];
    // From here on, dropping `running` (any error below, or a cancelled
    // start) kills the instance.
    let mut running = Running { pid, pidfd, channel: None, exit, tasks, since: Instant::now(), accepted: None, fences };
    if let (Some(listener), Some(action)) = (spawned.seccomp_listener, confined.seccomp) {
        running.tasks.push(tokio::spawn(watch_seccomp(
            listener,
            action,
            running.fences.clone(),
            running.pidfd.clone(),
            plugin.clone(),
            inst.id.clone(),
            shared.clone(),
        )));
    }
    for (fd, stream) in [(io.stdout, "stdout"), (io.stderr, "stderr")] {
        running.tasks.push(
            capture::spawn(fd, stream, inst.id.clone(), plugin.logs.clone())
                .map_err(|e| StartError::Failed(format!("capturing {stream}: {e}")))?,
        );
    }
    let host = to_tokio(io.host).map_err(|e| StartError::Failed(format!("host socket: {e}")))?;
    let host_svc = super::host::server(inst.id.clone(), plugin.logs.clone());
    running.tasks.push(tokio::spawn(crate::net::serve_h2(host, host_svc)));

    let stream = to_tokio(io.plugin).map_err(|e| StartError::Failed(format!("plugin socket: {e}")))?;
    let (channel, conn) =
        H2Channel::handshake(stream).await.map_err(|e| StartError::Failed(format!("HTTP/2 setup: {e}")))?;
    running.tasks.push(tokio::spawn(async move {
        let _ = conn.await;
    }));
    let greeted = greet(&spec, &inst.id, channel.clone(), &running, shared, signed_version.as_deref()).await;
    match greeted {
        Ok(accepted) => {
            running.channel = Some(channel);
            running.accepted = Some(accepted);
            Ok(running)
        }
        Err(e) => {
            running.kill();
            let _ = tokio::time::timeout(Duration::from_secs(5), running.exited()).await;
            running.clean_up().await;
            Err(e)
        }
    }
}

/// Serves the instance's seccomp listener: a forbidden call either ends the
/// instance (its state then names the call) or fails with the tier's errno
/// (an event names it).
async fn watch_seccomp(
    listener: OwnedFd,
    action: ViolationAction,
    fences: Fences,
    pidfd: Arc<AsyncFd<OwnedFd>>,
    plugin: Arc<Plugin>,
    instance: String,
    shared: Arc<Shared>,
) {
    crate::sandbox::notify::serve(listener, action, |v| {
        let report = v.to_string();
        match v.verdict {
            Verdict::Kill => {
                if let Ok(mut slot) = fences.violation.lock() {
                    slot.get_or_insert_with(|| report.clone());
                }
                fences.kill(pidfd.get_ref());
                shared.events.emit(&plugin.name, &instance, "seccomp", report, &[("syscall", v.syscall.to_string())]);
            }
            Verdict::Deny { .. } => {
                shared.events.emit(&plugin.name, &instance, "seccomp", report, &[("syscall", v.syscall.to_string())]);
            }
        }
    })
    .await;
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
    running: &Running,
    shared: &Shared,
    signed_version: Option<&str>,
) -> Result<Accepted, StartError> {
    let mut exit = running.exit.clone();
    let mut client = PluginLifecycleClient::new(channel);
    let timeout = spec.handshake_timeout;
    let req = HandshakeRequest {
        protocol_versions: SUPPORTED_PROTOCOLS.to_vec(),
        supervisor_version: env!("CARGO_PKG_VERSION").into(),
        expected_name: spec.name.clone(),
        instance: instance.to_owned(),
    };
    // A known cause (a seccomp kill, an OOM kill) is named; otherwise the
    // likely one is guessed.
    let died = |status: Option<ExitStatus>, phase: &str| {
        StartError::Refused(match status {
            Some(st) if running.reason(st) != st.to_string() => format!("{} during start-up", running.reason(st)),
            Some(st) => format!("{st} before answering the {phase}: not a plugin, or it crashed at start"),
            None => format!("ended before answering the {phase}: not a plugin, or it crashed at start"),
        })
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
