//! Bringing one instance up: the plugin's verified image, a process from the launcher, and
//! the handshake and init it is held to within the timeout. Any failure leaves nothing
//! running.

use std::sync::Arc;
use std::time::Duration;

use plugin_proto::plugin::v1::plugin_lifecycle_client::PluginLifecycleClient;
use plugin_proto::plugin::v1::{HandshakeRequest, InitRequest};
use plugin_proto::transport::H2Channel;

use super::error::{Cause, Phase, StartError};
use super::handshake::{self, Accepted, SUPPORTED_PROTOCOLS};
use super::launcher::{Image, LaunchRequest};
use super::running::{Running, exited};
use super::{Instance, Plugin, Revision};
use crate::config::PluginSpec;
use crate::observe::events::EventKind;
use crate::observe::phases::{Phase as TimedPhase, Stopwatch};
use crate::sandbox::pidfd::ExitStatus;
use crate::supervisor::Shared;

/// The revision's verified image: the one its instances run while the binary is
/// unchanged, verified afresh when it changed.
async fn image(rev: &Revision, shared: &Shared) -> Result<Arc<Image>, StartError> {
    let cached = rev.image.lock().ok().and_then(|g| g.clone());
    let image = shared.launcher.image(rev.spec(), cached).await?;
    if let Ok(mut slot) = rev.image.lock() {
        *slot = Some(image.clone());
    }
    Ok(image)
}

/// `cause`, refused or failed, as this instance's.
fn error(spec: &PluginSpec, instance: &str, refused: bool, cause: Cause) -> StartError {
    let (plugin, instance) = (spec.name.clone(), instance.to_owned());
    if refused {
        StartError::Refused { plugin, instance, cause }
    } else {
        StartError::Failed { plugin, instance, cause }
    }
}

pub async fn start(
    plugin: &Arc<Plugin>,
    rev: &Arc<Revision>,
    inst: &Arc<Instance>,
    shared: &Arc<Shared>,
) -> Result<Running, StartError> {
    let spec = rev.spec();
    let mut watch = Stopwatch::default();
    let image = image(rev, shared).await.map_err(|e| match e {
        // The image is the plugin's; the error is this instance's.
        StartError::Refused { plugin, cause, .. } => StartError::Refused { plugin, instance: inst.id.clone(), cause },
        StartError::Failed { plugin, cause, .. } => StartError::Failed { plugin, instance: inst.id.clone(), cause },
    })?;
    watch.lap(TimedPhase::Verify);
    let quota = rev.quota(shared.launcher.tier_quota(&spec.tier).as_ref(), &plugin.overrides.load());
    let launched = shared
        .launcher
        .launch(LaunchRequest {
            spec: spec.clone(),
            instance: inst.id.clone(),
            image: image.clone(),
            quota,
            logs: plugin.logs.clone(),
            events: shared.events.clone(),
        })
        .await?;
    let mut fencing = launched.fencing;
    inst.cgroup.store(fencing.cgroup.clone());
    // A quota change made while the process was being launched reached the instances
    // whose cgroups existed then, not this one: it takes what is in force now. (The
    // change and this are never interleaved: both run on the daemon's one thread.)
    let now = rev.quota(shared.launcher.tier_quota(&spec.tier).as_ref(), &plugin.overrides.load());
    if now != fencing.quota
        && let Some(cg) = &fencing.cgroup
    {
        match crate::quotas::apply_to(cg, &now) {
            Ok(()) => fencing.quota = now,
            Err(e) => {
                tracing::warn!(plugin = %plugin.name, instance = %inst.id, error = %e, "a quota changed during the start could not be set; the earlier one stays")
            }
        }
    }
    watch.lap(TimedPhase::Spawn);
    // From here on, dropping `running` (any error below, or a cancelled start) kills the
    // instance.
    let mut running = Running::new(launched.process);
    let pid = running.pid;
    inst.update(|s| {
        s.sha256 = image.sha256.clone();
        s.tier = fencing.tier.clone();
        s.quota = fencing.quota.clone();
        s.notes = fencing.notes.clone();
        s.pid = Some(pid);
    });
    shared.events.emit(
        &plugin.name,
        &inst.id,
        EventKind::Spawned,
        format!("spawned pid {pid} ({})", fencing.tier),
        &[("pid", pid.to_string())],
    );

    let greeted = greet(&spec, &inst.id, launched.conn, &running, shared, image.signed_version.as_deref(), &mut watch);
    match greeted.await {
        Ok((channel, accepted)) => {
            if let Some(why) = health(channel.clone(), spec.handshake_timeout).await {
                inst.update(|s| s.notes.push(format!("its first health check: {why}")));
            }
            watch.lap(TimedPhase::Health);
            running.channel = Some(channel);
            running.accepted = Some(accepted);
            running.phases = watch.into_timings();
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

/// HTTP/2 on the plugin's connection, then the handshake and init, each within the
/// handshake timeout, each racing the process's exit so a binary that dies early is
/// reported as such.
async fn greet(
    spec: &PluginSpec,
    instance: &str,
    conn: tokio::net::UnixStream,
    running: &Running,
    shared: &Shared,
    signed_version: Option<&str>,
    watch: &mut Stopwatch,
) -> Result<(H2Channel, Accepted), StartError> {
    let mut exit = running.exit_watch();
    let timeout = spec.handshake_timeout;
    let refused = |cause| error(spec, instance, true, cause);
    let failed = |cause| error(spec, instance, false, cause);
    let req = HandshakeRequest {
        protocol_versions: SUPPORTED_PROTOCOLS.to_vec(),
        supervisor_version: env!("CARGO_PKG_VERSION").into(),
        expected_name: spec.name.clone(),
        instance: instance.to_owned(),
    };
    // A known cause (a seccomp kill, an OOM kill) is named; otherwise the likely one is
    // guessed.
    let died = |status: Option<ExitStatus>, phase: Phase| {
        refused(match status {
            Some(st) if running.reason(st) != st.to_string() => Cause::KilledStarting(running.reason(st)),
            Some(st) => Cause::DiedStarting { status: st.to_string(), phase },
            None => Cause::EndedStarting(phase),
        })
    };
    let mut exit_after_error = exit.clone();
    let (channel, driver) = match H2Channel::handshake(conn).await {
        Ok(shaken) => shaken,
        Err(e) => {
            // Writing the preface fails when the process has already gone.
            if let Ok(s) = tokio::time::timeout(Duration::from_millis(200), exited(&mut exit_after_error)).await {
                return Err(died(s, Phase::Handshake));
            }
            return Err(failed(Cause::Http2(e)));
        }
    };
    running.hold(tokio::spawn(async move {
        let _ = driver.await;
    }));
    let mut client = PluginLifecycleClient::new(channel.clone());
    let resp = tokio::select! {
        r = tokio::time::timeout(timeout, client.handshake(req)) => match r {
            Err(_) => return Err(refused(Cause::HandshakeTimeout(timeout))),
            Ok(Err(status)) if status.code() == tonic::Code::FailedPrecondition => {
                return Err(refused(Cause::HandshakeRefused(status.message().to_owned())));
            }
            Ok(Err(status)) => {
                // The connection may have failed because the process died.
                if let Ok(s) = tokio::time::timeout(Duration::from_millis(200), exited(&mut exit_after_error)).await {
                    return Err(died(s, Phase::Handshake));
                }
                return Err(refused(Cause::HandshakeFailed { code: status.code(), message: status.message().to_owned() }));
            }
            Ok(Ok(r)) => r.into_inner(),
        },
        s = exited(&mut exit) => return Err(died(s, Phase::Handshake)),
    };
    let accepted = handshake::check(spec, resp, signed_version).map_err(|why| refused(Cause::Declared(why)))?;
    watch.lap(TimedPhase::Handshake);
    if let Err((service, owner)) = shared.routes.claim(&spec.name, &accepted.declared.services) {
        return Err(refused(Cause::ServiceTaken { service, owner }));
    }
    let init = InitRequest {
        config_json: spec.config_json.clone(),
        data_dir: spec.data_dir.as_ref().map(|d| d.display().to_string()).unwrap_or_default(),
        instance: instance.to_owned(),
    };
    tokio::select! {
        r = tokio::time::timeout(timeout, client.init(init)) => match r {
            Err(_) => Err(failed(Cause::InitTimeout(timeout))),
            Ok(Err(status)) if status.code() == tonic::Code::Unavailable => Err(failed(Cause::InitFailed(status.message().to_owned()))),
            Ok(Err(status)) => Err(refused(Cause::InitRefused { code: status.code(), message: status.message().to_owned() })),
            Ok(Ok(_)) => {
                watch.lap(TimedPhase::Init);
                Ok((channel, accepted))
            }
        },
        s = exited(&mut exit) => Err(died(s, Phase::Init)),
    }
}

/// The instance's first `grpc.health.v1` check (the plugin as a whole), timed as a phase of
/// its start: None when it serves, else what it said. A start goes on either way (the
/// check that refuses is a reload's, before calls switch); status notes what it said.
async fn health(channel: H2Channel, within: Duration) -> Option<String> {
    use tonic_health::pb::health_check_response::ServingStatus;
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    let mut req = tonic::Request::new(tonic_health::pb::HealthCheckRequest { service: String::new() });
    req.set_timeout(within);
    match tokio::time::timeout(within, client.check(req)).await {
        Ok(Ok(r)) if r.get_ref().status == ServingStatus::Serving as i32 => None,
        Ok(Ok(r)) => {
            Some(format!("{:?}", ServingStatus::try_from(r.get_ref().status).unwrap_or(ServingStatus::Unknown)))
        }
        Ok(Err(status)) => Some(format!("{:?}: {}", status.code(), status.message())),
        Err(_) => Some(format!("no answer within {within:?}")),
    }
}
