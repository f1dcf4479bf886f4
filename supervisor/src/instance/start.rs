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
use super::running::{Alive, Running, exited};
use super::said::plugin_said;
use super::{Instance, Plugin, Revision};
use crate::config::PluginSpec;
use crate::observe::events::EventKind;
use crate::observe::phases::{Phase as TimedPhase, Stopwatch};
use crate::sandbox::pidfd::ExitStatus;
use crate::supervisor::Shared;

/// The revision's verified image, the same for every start of its instances: a revision
/// is its image and its entry. A file rebuilt in place is a new revision for `update` or
/// `reload` to check (its contract against the serving one's), never what a revision
/// restarts into: not the stable side in the middle of a canary (into the canary's code),
/// not a rolled-back revision (into the code rolled back), not one whose reload was
/// refused. Only the first start of a revision that has none yet verifies the file.
async fn image(rev: &Revision, shared: &Shared) -> Result<Arc<Image>, StartError> {
    let _one_at_a_time = rev.image_loading.lock().await;
    let cached = rev.image.lock().ok().and_then(|g| g.clone());
    if let Some(image) = cached {
        return Ok(image);
    }
    let image = shared.launcher.image(rev.spec(), None).await?;
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

/// Brings the instance up. Once its process exists, `cancel` resolving (the supervisor
/// stops, the revision is retired) ends the start: the process is killed and its teardown
/// proven and said, as after any end, and the start fails with [`Cause::Cancelled`].
pub async fn start(
    plugin: &Arc<Plugin>,
    rev: &Arc<Revision>,
    inst: &Arc<Instance>,
    shared: &Arc<Shared>,
    cancel: impl std::future::Future<Output = &'static str>,
) -> Result<Running, StartError> {
    let spec = rev.spec();
    let mut cancel = std::pin::pin!(cancel);
    let cancelled = |why| error(&spec, &inst.id, false, Cause::Cancelled(why));
    let mut watch = Stopwatch::default();
    let image = tokio::select! {
        r = image(rev, shared) => r,
        why = &mut cancel => return Err(cancelled(why)),
    };
    let image = image.map_err(|e| match e {
        // The image is the plugin's; the error is this instance's.
        StartError::Refused { plugin, cause, .. } => StartError::Refused { plugin, instance: inst.id.clone(), cause },
        StartError::Failed { plugin, cause, .. } => StartError::Failed { plugin, instance: inst.id.clone(), cause },
    })?;
    watch.lap(TimedPhase::Verify);
    let quota = rev.quota(shared.launcher.tier_quota(&spec.tier).as_ref(), &plugin.overrides.load());
    // Counted from before the process exists: a teardown's search of the plugin's uid
    // meanwhile must leave this one be.
    let alive = Alive::new(&plugin.alive, &rev.alive);
    let launch = shared.launcher.launch(LaunchRequest {
        spec: spec.clone(),
        instance: inst.id.clone(),
        image: image.clone(),
        quota,
        logs: plugin.logs.clone(),
        events: shared.events.clone(),
        calls_out: shared.host_calls.get().map(|h| h.outbound(plugin, rev)),
    });
    // Dropped unfinished, a launch leaves nothing running (the process handle kills).
    let launched = tokio::select! {
        r = launch => r?,
        why = &mut cancel => return Err(cancelled(why)),
    };
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
    let mut running = Running::new(launched.process, alive);
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

    let greeted = async {
        let (channel, accepted) =
            greet(&spec, &inst.id, launched.conn, &running, image.signed_version.as_deref(), &mut watch).await?;
        let unhealthy = health(channel.clone(), spec.handshake_timeout).await;
        if let Some(why) = &unhealthy {
            inst.update(|s| s.notes.push(format!("its first health check: {why}")));
        }
        watch.lap(TimedPhase::Health);
        Ok((channel, accepted, unhealthy.is_none()))
    };
    let greeted = tokio::select! {
        r = greeted => r,
        why = &mut cancel => Err(cancelled(why)),
    };
    match greeted {
        Ok((channel, accepted, serving)) => {
            running.serving_at_start = serving;
            running.channel = Some(channel);
            running.accepted = Some(accepted);
            running.phases = watch.into_timings();
            Ok(running)
        }
        Err(e) => {
            running.kill_main();
            drop(image);
            let _ = tokio::time::timeout(Duration::from_secs(5), running.exited()).await;
            let verdict = super::teardown::tear_down(running, plugin, rev, inst).await;
            super::teardown::report(plugin, inst, shared, verdict);
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
    let conn = super::written::Counted::new(conn, running.written.clone());
    let (channel, driver) = match H2Channel::handshake_with(&crate::routing::buffers::plugin_connection(), conn).await {
        Ok(shaken) => shaken,
        Err(e) => {
            // Writing the preface fails when the process has already gone.
            if let Ok(s) = tokio::time::timeout(Duration::from_millis(200), exited(&mut exit_after_error)).await {
                return Err(died(s, Phase::Handshake));
            }
            return Err(failed(Cause::Http2(e)));
        }
    };
    let disconnect = running.disconnect();
    running.hold(tokio::spawn(async move {
        let ended = driver.await;
        // An error code (a GOAWAY with one, a protocol error) is a failure; a GOAWAY without
        // one is a drain's, and an I/O error may follow the cleanest drain.
        let failed = ended.as_ref().is_err_and(plugin_proto::transport::h2_failed);
        disconnect.say(failed, || match ended {
            Ok(()) => "it closed the connection".to_owned(),
            Err(e) => format!("the connection failed: {e}"),
        });
    }));
    let mut client = PluginLifecycleClient::new(channel.clone());
    let resp = tokio::select! {
        r = tokio::time::timeout(timeout, client.handshake(req)) => match r {
            Err(_) => return Err(refused(Cause::HandshakeTimeout(timeout))),
            Ok(Err(status)) if status.code() == tonic::Code::FailedPrecondition => {
                return Err(refused(Cause::HandshakeRefused(plugin_said(status.message()))));
            }
            Ok(Err(status)) => {
                // The connection may have failed because the process died.
                if let Ok(s) = tokio::time::timeout(Duration::from_millis(200), exited(&mut exit_after_error)).await {
                    return Err(died(s, Phase::Handshake));
                }
                let cause = Cause::HandshakeFailed { code: status.code(), message: plugin_said(status.message()) };
                // Our end's doing (a header flood ended the connection): a failed start,
                // tried again, as at init; the plugin's own answer is a refusal.
                return Err(if plugin_proto::transport::from_our_end(&status) { failed(cause) } else { refused(cause) });
            }
            Ok(Ok(r)) => r.into_inner(),
        },
        s = exited(&mut exit) => return Err(died(s, Phase::Handshake)),
    };
    // Parsing the descriptors (up to a MiB of them) takes a while: not on the runtime's
    // one thread, which every call and every other instance waits on meanwhile.
    let (owned, signed) = (spec.clone(), signed_version.map(str::to_owned));
    let checked = tokio::task::spawn_blocking(move || handshake::check(&owned, resp, signed.as_deref())).await;
    let accepted = match checked {
        // Its words are in it (names its descriptors gave, the services it serves).
        Ok(checked) => checked.map_err(|why| refused(Cause::Declared(plugin_said(&why))))?,
        Err(e) => return Err(failed(Cause::HandshakeCheckPanicked(e.to_string()))),
    };
    watch.lap(TimedPhase::Handshake);
    let init = InitRequest {
        config_json: spec.config_json.clone(),
        data_dir: spec.data_dir.as_ref().map(|d| d.display().to_string()).unwrap_or_default(),
        instance: instance.to_owned(),
    };
    tokio::select! {
        r = tokio::time::timeout(timeout, client.init(init)) => match r {
            Err(_) => Err(failed(Cause::InitTimeout(timeout))),
            // Not an answer of the plugin's (its connection failed, or our end refused
            // what it sent): a failure to start again, not a refusal to wait on.
            Ok(Err(status)) if status.code() == tonic::Code::Unavailable || plugin_proto::transport::from_our_end(&status) => {
                Err(failed(Cause::InitFailed(plugin_said(status.message()))))
            }
            Ok(Err(status)) => Err(refused(Cause::InitRefused { code: status.code(), message: plugin_said(status.message()) })),
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
        Ok(Err(status)) => Some(format!("{:?}: {}", status.code(), plugin_said(status.message()))),
        Err(_) => Some(format!("no answer within {within:?}")),
    }
}
