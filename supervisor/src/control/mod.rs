//! The control API on `control.sock`, which `supervisorctl` speaks: status,
//! lifecycle commands, log tail, events, JSON calls, quotas and metrics.
//! Only root, the supervisor's own uid and configured uids may use it; any
//! other peer is told so on each call ([`refusal`]), and its refusals are said at most
//! once per interval ([`tally`]). Its connections are bounded within the descriptors kept
//! for it and for plugin restarts ([`conns`]).

pub mod call;
pub mod config_view;
pub mod conns;
mod contracts;
mod deadline;
pub mod refusal;
pub(crate) mod signal;
pub mod tally;
pub mod usage;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use plugin_proto::control::v1::control_server::{Control, ControlServer};
use plugin_proto::control::v1::{
    ActionResponse, CallRequest, CallResponse, ChangedKey, ConfigRequest, ConfigResponse, ContractsRequest,
    ContractsResponse, Event, EventsRequest, InstanceStatus, LogLine, MetricsRequest, MetricsResponse, PhaseTiming,
    PluginChange, PluginRef, Quota, QuotaRequest, QuotaResponse, ReloadRequest, RereadRequest, RereadResponse,
    ResourceUsage, RolloutAction, RolloutRequest, RolloutResponse, SignalRequest, SignalResponse, SignalledInstance,
    StatusRequest, StatusResponse, TailRequest, UpdateRequest, UpdateResponse,
};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use crate::config::changes::{Apply, RereadError};
use crate::observe::events::EventKind;
use crate::observe::ring::{Follower, Next};
use crate::quotas::QuotaChange;
use crate::reload::{ReloadError, ReloadOptions, UpdateError};
use crate::{Supervisor, SupervisorError};

/// Past lines a tail request without a count gets.
const DEFAULT_TAIL_LINES: usize = 50;

/// How long start/restart wait for the plugin to come up before answering, when the
/// caller sets no deadline of its own.
const COMMAND_WAIT: Duration = Duration::from_secs(15);

/// How long start/restart wait for the plugin: as long as the caller waits for the answer
/// (`supervisorctl --wait`, less the margin for the way back), and a little less, so that
/// the command's own answer (with its note when the command could not be saved) is ready
/// before the caller's deadline cuts it to the bare state; else [`COMMAND_WAIT`].
fn command_wait(within: Option<Duration>) -> Duration {
    within.map_or(COMMAND_WAIT, |within| within.saturating_sub((within / 20).min(Duration::from_millis(250))))
}

pub struct ControlService {
    pub sup: Arc<Supervisor>,
    /// Slots for follow streams (`events -f`, `tail -f`), which may stay open for days.
    follows: conns::Follows,
}

impl ControlService {
    pub fn new(sup: Arc<Supervisor>, follows: conns::Follows) -> Self {
        Self { sup, follows }
    }

    /// A follow stream's slot when `follow` is set, on the connection `on` (from the
    /// request's extensions).
    fn follow_slot(&self, follow: bool, on: Option<&conns::Handle>) -> Result<Option<conns::FollowSlot>, Status> {
        follow.then(|| self.follows.take(on)).transpose()
    }
}

/// The answer to a start, stop or restart of `name`: what it reached, and whether that is
/// what it asked (the CLI's exit code).
fn answer(name: &str, acted: crate::supervisor::Acted) -> ActionResponse {
    ActionResponse { message: format!("{name}: {}", acted.said), reached: Some(acted.reached) }
}

fn to_status(e: SupervisorError) -> Status {
    match e {
        SupervisorError::UnknownPlugin(_) => Status::not_found(e.to_string()),
        SupervisorError::Timeout { .. } => Status::deadline_exceeded(e.to_string()),
        SupervisorError::Quota { .. } => usage::bad_argument(e.to_string()),
        SupervisorError::QuotaRefused { .. } | SupervisorError::MemoryBelowUsage { .. } => {
            Status::failed_precondition(e.to_string())
        }
        SupervisorError::State(_) | SupervisorError::Sandbox(_) => Status::internal(e.to_string()),
    }
}

fn reload_status(e: &ReloadError) -> Status {
    match e {
        ReloadError::UnknownPlugin(_) => Status::not_found(e.to_string()),
        ReloadError::InProgress(_) | ReloadError::Interrupted { .. } => Status::aborted(e.to_string()),
        ReloadError::Config(_) | ReloadError::NotConfigured { .. } => Status::invalid_argument(e.to_string()),
        ReloadError::ShuttingDown(_) | ReloadError::Aborted { .. } => Status::unavailable(e.to_string()),
        _ => Status::failed_precondition(e.to_string()),
    }
}

fn reread_status(e: &RereadError) -> Status {
    match e {
        RereadError::Config(_) => Status::invalid_argument(e.to_string()),
        RereadError::NoFile => Status::failed_precondition(e.to_string()),
        RereadError::Aborted(_) => Status::internal(e.to_string()),
    }
}

/// Status rows, one per instance, for all plugins or one.
pub fn status_rows(sup: &Supervisor, name: &str) -> Result<Vec<InstanceStatus>, SupervisorError> {
    let plugins: Vec<_> = if name.is_empty() { sup.plugins() } else { vec![sup.plugin(name)?] };
    let mut rows = Vec::new();
    for p in plugins {
        let kept_stopped = sup.shared().state.stopped(&p.name);
        let rollout = p.rollout().map(|r| r.report());
        let split = p.split();
        let serving = p.serving().number;
        let circuit = (!p.circuit_closed()).then(|| format!("circuit {}", p.breaker.describe()));
        for inst in &p.instances() {
            let s = inst.status();
            let mut notes = s.notes.clone();
            let ready = s.state == crate::instance::state::State::Running && inst.live.load().is_some();
            let says_serving = sup.shared().health.says_serving(&inst.id);
            if ready && !says_serving {
                notes.push("health: NOT_SERVING (the plugin says so)".to_owned());
            }
            notes.extend(circuit.clone());
            if kept_stopped {
                notes.push(crate::kept_stopped::NOTE.to_owned());
            }
            notes.extend(rollout_note(rollout.as_ref(), split.as_deref(), serving, inst.revision));
            rows.push(InstanceStatus {
                name: p.name.clone(),
                instance: inst.id.clone(),
                state: s.state.to_string(),
                reason: s.reason_now(),
                pid: s.pid.map_or(0, |p| p as u32),
                restarts: s.restarts,
                version: s.declared.version.clone(),
                uptime_s: s.uptime_s(),
                sdk_version: s.declared.sdk_version.clone(),
                protocol_version: s.declared.protocol_version,
                services: s.declared.services.clone(),
                sha256: s.sha256.clone(),
                tier: s.tier.clone(),
                quota: Some(quota_message(&s.quota)),
                usage: s.current_usage().as_ref().map(|u| usage_message(u, s.usage_read_at)),
                notes,
                revision: inst.revision,
                phases: s
                    .phases
                    .0
                    .iter()
                    .map(|(phase, took)| PhaseTiming {
                        phase: phase.as_str().to_owned(),
                        micros: u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
                    })
                    .collect(),
                teardown: s.teardown.as_ref().map(|t| plugin_proto::control::v1::Teardown {
                    result: t.verdict.outcome().as_str().to_owned(),
                    micros: u64::try_from(t.verdict.took.as_micros()).unwrap_or(u64::MAX),
                    found: t.verdict.found.iter().map(ToString::to_string).collect(),
                    unchecked: t.verdict.unchecked.clone(),
                    unix_nanos: t.unix_nanos,
                }),
                leaks: s.leaks.clone(),
                circuit: p.breaker.state().as_str().to_owned(),
                serving: ready && says_serving && p.circuit_closed(),
            });
        }
    }
    Ok(rows)
}

/// What a rollout means for an instance of revision `revision`: its share of calls while
/// one runs, how the last one ended, or that a restart interrupted it.
fn rollout_note(
    report: Option<&crate::rollout::Report>,
    split: Option<&crate::routing::split::Split>,
    serving: u64,
    revision: u64,
) -> Option<String> {
    use crate::rollout::Phase;
    let r = report?;
    let step = format!("step {} of {}", r.current_step(), r.steps.len());
    match (r.phase, split) {
        (Phase::Running | Phase::Paused, Some(split)) if revision == split.canary.number => {
            Some(format!("canary: {}% of calls, rollout {} at {step}", split.share, r.phase))
        }
        (Phase::Running | Phase::Paused, Some(split)) if revision == serving => {
            Some(format!("stable: {}% of calls, rollout {} at {step}", 100 - split.share, r.phase))
        }
        (Phase::RolledBack, _) if revision == serving => {
            Some(format!("rollout of revision {} rolled back: {}", r.canary_revision, r.note))
        }
        // Its note says what interrupted it (a restart of the supervisor, the operator's
        // stop) and what resumes it.
        (Phase::Interrupted, _) if revision == serving => {
            Some(format!("rollout of revision {}: {}", r.canary_revision, r.note))
        }
        _ => None,
    }
}

/// Quotas as operators write them.
pub fn quota_message(q: &crate::config::QuotaConfig) -> Quota {
    let s = |v: Option<String>| v.unwrap_or_default();
    Quota {
        memory_max: s(q.memory_max.map(|v| v.to_string())),
        memory_high: s(q.memory_high.map(|v| v.to_string())),
        cpu: s(q.cpu.map(|v| v.to_string())),
        pids_max: s(q.pids_max.map(|v| v.to_string())),
    }
}

fn usage_message(u: &crate::sandbox::cgroup::Stats, read_at: Option<std::time::SystemTime>) -> ResourceUsage {
    let read_unix_nanos = read_at
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    ResourceUsage {
        memory_current: u.memory_current.unwrap_or(0),
        cpu_usage_usec: u.cpu_usage_usec.unwrap_or(0),
        cpu_nr_throttled: u.cpu_nr_throttled.unwrap_or(0),
        cpu_throttled_usec: u.cpu_throttled_usec.unwrap_or(0),
        pids_current: u.pids_current.unwrap_or(0),
        oom_kills: u.oom_kills.unwrap_or(0),
        pids_max_hits: u.pids_max_hits.unwrap_or(0),
        read_unix_nanos,
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// What a follower of `events` that fell behind is told. The history is every plugin's,
/// so a follower of one plugin cannot know how many of those it missed were that
/// plugin's: it is told the whole count, as such.
fn missed_events(n: u64, name: &str) -> String {
    if name.is_empty() {
        format!("{n} events skipped: this reader fell behind")
    } else {
        format!("{n} events of all plugins skipped, {name:?}'s among them: this reader fell behind")
    }
}

/// What `rx` has in its backlog, read in place as the client takes it, then (when
/// following, with a follow stream's slot held as long as the stream) what the history
/// gets next; a reader that falls behind is told how much it missed.
fn backlog_then_follow<T: Clone + Send + 'static>(
    rx: Follower<T>,
    follow: Option<conns::FollowSlot>,
    keep: impl Fn(&T) -> bool + Send + Sync + 'static,
    missed: impl Fn(u64) -> T + Send + Sync + 'static,
    closed: Option<Status>,
) -> BoxStream<T> {
    let stream = futures_util::stream::unfold(Some((rx, follow, keep, missed, closed)), |state| async move {
        let (mut rx, follow, keep, missed, closed) = state?;
        loop {
            if follow.is_none() && !rx.in_backlog() {
                return None;
            }
            match rx.next().await {
                Next::Entry(v) if keep(&v) => return Some((Ok(v), Some((rx, follow, keep, missed, closed)))),
                Next::Entry(_) => continue,
                Next::Missed(n) => {
                    let m = missed(n);
                    return Some((Ok(m), Some((rx, follow, keep, missed, closed))));
                }
                // Its source is gone: the follow ends, with why when there is one to say.
                Next::Closed => return closed.filter(|_| follow.is_some()).map(|why| (Err(why), None)),
            }
        }
    });
    Box::pin(stream)
}

#[tonic::async_trait]
impl Control for ControlService {
    async fn status(&self, req: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let instances = status_rows(&self.sup, &req.get_ref().name).map_err(to_status)?;
        Ok(Response::new(StatusResponse { instances }))
    }

    async fn start(&self, req: Request<PluginRef>) -> Result<Response<ActionResponse>, Status> {
        let within = deadline::answer_within(req.metadata());
        let name = &req.get_ref().name;
        let acted =
            deadline::bounded(&self.sup, name, within, self.sup.start_acted(name, command_wait(within))).await?;
        Ok(Response::new(answer(name, acted)))
    }

    async fn stop(&self, req: Request<PluginRef>) -> Result<Response<ActionResponse>, Status> {
        let within = deadline::answer_within(req.metadata());
        let name = &req.get_ref().name;
        let acted = deadline::bounded(&self.sup, name, within, self.sup.stop_acted(name)).await?;
        Ok(Response::new(answer(name, acted)))
    }

    async fn restart(&self, req: Request<PluginRef>) -> Result<Response<ActionResponse>, Status> {
        let within = deadline::answer_within(req.metadata());
        let name = &req.get_ref().name;
        let acted =
            deadline::bounded(&self.sup, name, within, self.sup.restart_acted(name, command_wait(within))).await?;
        Ok(Response::new(answer(name, acted)))
    }

    async fn reload(&self, req: Request<ReloadRequest>) -> Result<Response<ActionResponse>, Status> {
        let req = req.into_inner();
        let opts = ReloadOptions { allow_breaking: req.allow_breaking, ..ReloadOptions::default() };
        match self.sup.reload(&req.name, opts).await {
            Ok(done) => Ok(Response::new(ActionResponse { message: done.to_string(), reached: Some(true) })),
            Err(e) => Err(reload_status(&e)),
        }
    }

    async fn reread(&self, _: Request<RereadRequest>) -> Result<Response<RereadResponse>, Status> {
        let (file, c) = self.sup.reread().await.map_err(|e| reread_status(&e))?;
        let changed = c
            .changed
            .into_iter()
            .map(|p| PluginChange {
                name: p.name,
                keys: p
                    .keys
                    .into_iter()
                    .map(|k| ChangedKey { key: k.key.to_owned(), live: k.apply == Apply::Live })
                    .collect(),
            })
            .collect();
        Ok(Response::new(RereadResponse {
            file: file.display().to_string(),
            added: c.added,
            removed: c.removed,
            changed,
            restart_only: c.restart_only.into_iter().map(str::to_owned).collect(),
        }))
    }

    async fn update(&self, req: Request<UpdateRequest>) -> Result<Response<UpdateResponse>, Status> {
        let req = req.into_inner();
        let opts = ReloadOptions { allow_breaking: req.allow_breaking, ..ReloadOptions::default() };
        match self.sup.update(&req.names, opts).await {
            Ok(done) => Ok(Response::new(UpdateResponse {
                lines: done.lines(),
                failed: u32::try_from(done.failed.len()).unwrap_or(u32::MAX),
            })),
            Err(e @ UpdateError::UnknownPlugin(..)) => Err(Status::not_found(e.to_string())),
            Err(UpdateError::Reread(e)) => Err(reread_status(&e)),
            Err(e @ UpdateError::ShuttingDown) => Err(Status::unavailable(e.to_string())),
            Err(e @ UpdateError::Aborted(_)) => Err(Status::internal(e.to_string())),
            // The file is valid; what runs is what makes this subset of it impossible.
            Err(e @ UpdateError::CallCycle { .. }) => Err(Status::failed_precondition(e.to_string())),
        }
    }

    async fn rollout(&self, req: Request<RolloutRequest>) -> Result<Response<RolloutResponse>, Status> {
        use crate::rollout::{Action, RolloutError};
        let req = req.into_inner();
        let action = match RolloutAction::try_from(req.action) {
            Ok(RolloutAction::Status) => Action::Status,
            Ok(RolloutAction::Pause) => Action::Pause,
            Ok(RolloutAction::Resume) => Action::Resume,
            Ok(RolloutAction::Promote) => Action::Promote,
            Ok(RolloutAction::Abort) => Action::Abort,
            Err(_) => return Err(usage::bad_argument(format!("unknown rollout action {}", req.action))),
        };
        match self.sup.rollout(&req.name, action).await {
            Ok((message, report)) => Ok(Response::new(RolloutResponse {
                message,
                report_json: report.map(|r| crate::rollout::report_json(&r)).unwrap_or_default(),
            })),
            Err(e @ RolloutError::UnknownPlugin(_)) => Err(Status::not_found(e.to_string())),
            Err(e @ (RolloutError::NoRollout(_) | RolloutError::NotNow { .. })) => {
                Err(Status::failed_precondition(e.to_string()))
            }
            Err(RolloutError::Reload(e)) => Err(reload_status(&e)),
        }
    }

    type TailStream = BoxStream<LogLine>;

    async fn tail(&self, req: Request<TailRequest>) -> Result<Response<Self::TailStream>, Status> {
        let on = req.extensions().get::<conns::Handle>().cloned();
        let req = req.into_inner();
        let p = self.sup.plugin(&req.name).map_err(to_status)?;
        let slot = self.follow_slot(req.follow, on.as_ref())?;
        let n = req.lines.map_or(DEFAULT_TAIL_LINES, |n| n as usize);
        let rx = p.logs.read_back(n);
        let missed = |n: u64| LogLine {
            unix_nanos: crate::observe::unix_nanos(),
            stream: "supervisor".into(),
            text: format!("[{n} lines skipped: this reader fell behind]"),
            ..Default::default()
        };
        // Its log's sender goes with the plugin: `update` removed it.
        let removed = Status::not_found(format!("plugin {:?} was removed", req.name));
        Ok(Response::new(backlog_then_follow(rx, slot, |_| true, missed, Some(removed))))
    }

    type EventsStream = BoxStream<Event>;

    async fn events(&self, req: Request<EventsRequest>) -> Result<Response<Self::EventsStream>, Status> {
        let on = req.extensions().get::<conns::Handle>().cloned();
        let req = req.into_inner();
        if !req.name.is_empty() {
            self.sup.plugin(&req.name).map_err(to_status)?;
        }
        let slot = self.follow_slot(req.follow, on.as_ref())?;
        let rx = self.sup.events().read_back();
        let name = req.name.clone();
        let keep = move |e: &Event| name.is_empty() || e.plugin == name;
        let missed = move |n: u64| Event {
            unix_nanos: crate::observe::unix_nanos(),
            kind: EventKind::Missed.as_str().into(),
            message: missed_events(n, &req.name),
            ..Default::default()
        };
        Ok(Response::new(backlog_then_follow(rx, slot, keep, missed, None)))
    }

    async fn quota(&self, req: Request<QuotaRequest>) -> Result<Response<QuotaResponse>, Status> {
        let req = req.into_inner();
        // The plugin first: an unknown one is exit 4 whatever else is wrong, as for every
        // command naming one.
        self.sup.plugin(&req.name).map_err(to_status)?;
        let set = req.set.unwrap_or_default();
        let change = QuotaChange::parse(&set.memory_max, &set.memory_high, &set.cpu, &set.pids_max)
            .map_err(|e| usage::bad_argument(format!("plugin {:?}: {e}", req.name)))?;
        let (quota, message) = self.sup.change_quota(&req.name, &change, req.force).map_err(to_status)?;
        Ok(Response::new(QuotaResponse { quota: Some(quota_message(&quota)), message }))
    }

    async fn call(&self, req: Request<CallRequest>) -> Result<Response<CallResponse>, Status> {
        let req = req.into_inner();
        let timeout = if req.timeout_ms == 0 {
            self.sup.plugin(&req.plugin).map_err(to_status)?.spec().call_timeout
        } else {
            Duration::from_millis(u64::from(req.timeout_ms))
        };
        let json = call::call_json(&self.sup, &req.plugin, &req.method, &req.json, timeout).await?;
        Ok(Response::new(CallResponse { json }))
    }

    type CallStreamStream = BoxStream<CallResponse>;

    async fn call_stream(&self, req: Request<CallRequest>) -> Result<Response<Self::CallStreamStream>, Status> {
        use futures_util::StreamExt;
        let req = req.into_inner();
        let timeout = if req.timeout_ms == 0 {
            self.sup.plugin(&req.plugin).map_err(to_status)?.spec().call_timeout
        } else {
            Duration::from_millis(u64::from(req.timeout_ms))
        };
        let answers = call::call_json_stream(&self.sup, &req.plugin, &req.method, &req.json, timeout).await?;
        Ok(Response::new(Box::pin(answers.map(|json| json.map(|json| CallResponse { json })))))
    }

    async fn metrics(&self, _req: Request<MetricsRequest>) -> Result<Response<MetricsResponse>, Status> {
        Ok(Response::new(MetricsResponse { text: self.sup.metrics_text() }))
    }

    async fn contracts(&self, req: Request<ContractsRequest>) -> Result<Response<ContractsResponse>, Status> {
        let plugins = contracts::of(&self.sup, &req.get_ref().name).map_err(to_status)?;
        Ok(Response::new(ContractsResponse { plugins }))
    }

    async fn signal(&self, req: Request<SignalRequest>) -> Result<Response<SignalResponse>, Status> {
        use signal::SignalError;
        let req = req.into_inner();
        // The plugin first, as `quota` does: an unknown one is exit 4 whatever the signal.
        let known = self.sup.plugin(&req.name).map(drop).map_err(|_| SignalError::UnknownPlugin(req.name.clone()));
        let answer = known
            .and_then(|()| signal::parse(&req.signal))
            .and_then(|sig| Ok((sig, signal::send(&self.sup, &req.name, sig)?)));
        match answer {
            Ok((sig, sent)) => Ok(Response::new(SignalResponse {
                signal: crate::sandbox::pidfd::signal_name(sig),
                instances: sent
                    .into_iter()
                    .map(|s| SignalledInstance {
                        instance: s.instance,
                        pid: u32::try_from(s.pid).unwrap_or(0),
                        processes: u32::try_from(s.processes).unwrap_or(u32::MAX),
                    })
                    .collect(),
            })),
            Err(e @ SignalError::UnknownPlugin(_)) => Err(Status::not_found(e.to_string())),
            Err(e @ SignalError::NotASignal { .. }) => Err(usage::bad_argument(e.to_string())),
            Err(e @ SignalError::NoneRunning(_)) => Err(Status::failed_precondition(e.to_string())),
            Err(e @ SignalError::Send { .. }) => Err(Status::internal(e.to_string())),
        }
    }

    async fn config(&self, req: Request<ConfigRequest>) -> Result<Response<ConfigResponse>, Status> {
        let plugins = config_view::of(&self.sup, &req.get_ref().name).map_err(to_status)?;
        Ok(Response::new(ConfigResponse { plugins }))
    }
}

/// The largest control request taken: a `call`'s request of up to [`MAX_CALL_JSON`] with
/// its plugin and method names. At tonic's default, 4 MiB for the whole message, a request
/// the CLI let through as at most 4 MiB was refused as too large, naming neither `--data`
/// nor the limit.
const MAX_CONTROL_REQUEST: usize = MAX_CALL_JSON + (64 << 10);

/// The largest JSON request `supervisorctl call` sends (`--data`).
pub const MAX_CALL_JSON: usize = 4 << 20;

/// Serves the control API on `listener`, refusing peers whose uid is not allowed, and
/// holding at most as many connections and follow streams as `limits` says.
pub async fn serve(
    listener: tokio::net::UnixListener,
    sup: Arc<Supervisor>,
    allowed_uids: Vec<u32>,
    limits: conns::Limits,
) {
    // SAFETY: geteuid has no preconditions.
    let own = unsafe { libc::geteuid() };
    let svc = ControlServer::new(ControlService::new(sup.clone(), conns::Follows::new(limits.follows)))
        .max_decoding_message_size(MAX_CONTROL_REQUEST);
    let refusals = refusal::Refusals::default();
    let open = conns::Conns::new(limits.clone());
    let mut floods = Floods::default();
    // What newcomers waiting for room (in tasks of their own) come to: admitted, or not.
    let (outcomes, mut outcome) = mpsc::unbounded_channel::<(Flood, u32)>();
    loop {
        let due = floods.next_due();
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some((flood, uid)) = outcome.recv() => {
                floods.note(&sup, open.limit(), flood, uid);
                continue;
            }
            () = until(due) => {
                for (flood, said) in floods.due(tokio::time::Instant::now()) {
                    floods.say(&sup, open.limit(), flood, &said);
                }
                continue;
            }
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                floods.accept_error = e.to_string();
                floods.note(&sup, open.limit(), Flood::AcceptFailed, 0);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let uid = match stream.peer_cred() {
            Ok(c) => c.uid(),
            Err(e) => {
                tracing::warn!(error = %e, "control: cannot read the peer's credentials; refusing");
                continue;
            }
        };
        if uid != 0 && uid != own && !allowed_uids.contains(&uid) {
            // Each counted (supervisor_events_total), kept in the history and logged at
            // most once per interval with the count.
            sup.events().count("", EventKind::ControlRefused);
            floods.note(&sup, open.limit(), Flood::Refused, uid);
            // Told why, rather than cut off: its client can say what to do about it.
            refusals.refuse(stream, uid);
            continue;
        }
        match open.admit() {
            Ok(conn) => {
                tokio::spawn(conns::serve(stream, svc.clone(), conn, limits.clone()));
            }
            Err(_) => match open.make_room() {
                Ok((_, room)) => {
                    // The bound is strict: the newcomer waits for the descriptor of the
                    // connection closed for it (at once for a silent or busy one, and for
                    // one that took a request as it was closed, not past ROOM_WAIT), in a
                    // task of its own: the accept loop goes on answering others meanwhile.
                    let (svc, limits, refusals, outcomes) =
                        (svc.clone(), limits.clone(), refusals.clone(), outcomes.clone());
                    tokio::spawn(async move {
                        match room.wait(conns::ROOM_WAIT).await {
                            Ok(conn) => {
                                let _ = outcomes.send((Flood::Evicted, uid));
                                conns::serve(stream, svc, conn, limits).await;
                            }
                            Err(full) => {
                                let _ = outcomes.send((Flood::RoomLate, uid));
                                refusals.no_room(stream, uid, full);
                            }
                        }
                    });
                }
                Err(full) => {
                    floods.note(&sup, open.limit(), Flood::Full, uid);
                    refusals.no_room(stream, uid, full);
                }
            },
        }
    }
}

/// What the accept loop says at most once per interval, each counted on its own: a peer
/// connecting in a loop repeats them thousands of times a second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flood {
    /// A uid the control socket does not admit.
    Refused,
    /// A connection closed to make room for a newcomer (counted by the newcomer's uid).
    Evicted,
    /// A newcomer refused, with no connection able to make room.
    Full,
    /// A newcomer refused: the connection closed for it did not end in time.
    RoomLate,
    /// An accept that failed.
    AcceptFailed,
}

const FLOODS: [Flood; 5] = [Flood::Refused, Flood::Evicted, Flood::Full, Flood::RoomLate, Flood::AcceptFailed];

struct Floods {
    tallies: [tally::Tally; 5],
    /// The last accept error, said with the count.
    accept_error: String,
}

impl Default for Floods {
    fn default() -> Self {
        Self { tallies: std::array::from_fn(|_| tally::Tally::new(tally::SAID_EVERY)), accept_error: String::new() }
    }
}

impl Floods {
    fn tally(&mut self, flood: Flood) -> &mut tally::Tally {
        &mut self.tallies[flood as usize]
    }

    /// Counts one from `uid`, and says what is due.
    fn note(&mut self, sup: &Supervisor, limit: usize, flood: Flood, uid: u32) {
        if let Some(said) = self.tally(flood).note(uid, tokio::time::Instant::now()) {
            self.say(sup, limit, flood, &said);
        }
    }

    /// When the next held back count is due.
    fn next_due(&self) -> Option<tokio::time::Instant> {
        self.tallies.iter().filter_map(tally::Tally::next_due).min()
    }

    /// Every count held back that is due at `now`.
    fn due(&mut self, now: tokio::time::Instant) -> Vec<(Flood, tally::Said)> {
        FLOODS.into_iter().filter_map(|flood| self.tally(flood).due(now).map(|said| (flood, said))).collect()
    }

    fn say(&self, sup: &Supervisor, limit: usize, flood: Flood, said: &tally::Said) {
        let uids = said.uids_text();
        match flood {
            Flood::Refused => keep_refused(sup, said),
            Flood::Evicted => tracing::warn!(
                max_connections = limit,
                closed = said.count,
                newcomer_uids = %uids,
                "the control socket is at its connection limit: closed connections (silent longest, else idle \
                 longest, else busy longest past the bound) to make room for new ones from newcomer_uids"
            ),
            Flood::Full => tracing::warn!(
                max_connections = limit,
                refused = said.count,
                uids = %uids,
                "the control socket is at its connection limit and no connection could make room (each busy, just \
                 connected or closing): refused new ones"
            ),
            Flood::RoomLate => tracing::warn!(
                max_connections = limit,
                refused = said.count,
                uids = %uids,
                wait = ?conns::ROOM_WAIT,
                "the control socket is at its connection limit: connections closed to make room for new ones did \
                 not end within the wait (each took a request as it was closed): refused the new ones"
            ),
            Flood::AcceptFailed => {
                tracing::warn!(error = %self.accept_error, failures = said.count, "control accept failed");
            }
        }
    }
}

/// Sleeps until `at`, or for ever without it.
async fn until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Keeps and logs one `control-refused` event for the refusals `said` counts.
fn keep_refused(sup: &Supervisor, said: &tally::Said) {
    let message = if said.count == 1 {
        format!("refused a control connection from uid {}", said.uids_text())
    } else {
        format!(
            "refused {} control connections from {} {} (said at most once every {}s)",
            said.count,
            said.uid_word(),
            said.uids_text(),
            tally::SAID_EVERY.as_secs()
        )
    };
    let fields = [("refused", said.count.to_string()), ("uids", said.uids_text())];
    sup.events().keep("", "", EventKind::ControlRefused, message, &fields);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_and_restart_wait_as_long_as_their_caller_does() {
        // `supervisorctl --wait 2m start slow`: it waited 15 s and answered "starting".
        let mut m = tonic::metadata::MetadataMap::new();
        m.insert("grpc-timeout", "2M".parse().unwrap());
        assert_eq!(command_wait(deadline::answer_within(&m)), Duration::from_millis(119_250));
        m.insert("grpc-timeout", "30S".parse().unwrap());
        assert_eq!(command_wait(deadline::answer_within(&m)), Duration::from_millis(29_250));
        assert_eq!(command_wait(None), COMMAND_WAIT, "a caller without a deadline");
    }

    #[test]
    fn a_follower_of_one_plugin_is_told_its_missed_count_is_of_all_plugins() {
        assert_eq!(missed_events(3, ""), "3 events skipped: this reader fell behind");
        assert_eq!(
            missed_events(3, "echo"),
            "3 events of all plugins skipped, \"echo\"'s among them: this reader fell behind"
        );
    }

    #[test]
    fn each_flood_is_counted_on_its_own_and_every_one_held_back_is_said_when_due() {
        let t0 = tokio::time::Instant::now();
        let mut floods = Floods::default();
        let note = |floods: &mut Floods, flood, uid, at| floods.tally(flood).note(uid, at).map(|s| s.count);
        // The first of each is said at once: a refusal for want of room is not held back
        // behind an eviction, to be said later as one.
        assert_eq!(note(&mut floods, Flood::Evicted, 0, t0), Some(1));
        assert_eq!(note(&mut floods, Flood::Full, 1000, t0), Some(1));
        assert_eq!(note(&mut floods, Flood::AcceptFailed, 0, t0), Some(1));
        for _ in 0..3 {
            assert_eq!(note(&mut floods, Flood::Evicted, 0, t0 + Duration::from_secs(1)), None);
        }
        assert_eq!(note(&mut floods, Flood::Full, 1000, t0 + Duration::from_secs(2)), None);
        assert_eq!(note(&mut floods, Flood::AcceptFailed, 0, t0 + Duration::from_secs(3)), None);
        assert_eq!(floods.next_due(), Some(t0 + tally::SAID_EVERY));
        assert!(floods.due(t0 + tally::SAID_EVERY - Duration::from_millis(1)).is_empty());
        // The burst stopped: every count held back is said once due, under its own name.
        let said: Vec<_> = floods.due(t0 + tally::SAID_EVERY).into_iter().map(|(f, s)| (f, s.count, s.uids)).collect();
        assert_eq!(
            said,
            [(Flood::Evicted, 3, vec![0]), (Flood::Full, 1, vec![1000]), (Flood::AcceptFailed, 1, vec![0])]
        );
        assert_eq!(floods.next_due(), None);
    }
}
