//! The task that owns one instance: it starts it, watches it, applies the
//! restart policy with backoff, and obeys start/stop/restart and shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::backoff::Restarts;
use super::error::StartError;
use super::running::{Running, Said};
use super::start;
use super::state::State;
use super::{Instance, Live, Plugin, Revision};
use crate::config::RestartPolicy;
use crate::config::units::format_duration;
use crate::observe::events::EventKind;
use crate::observe::phases::{Phase, Stopwatch, Timings};
use crate::sandbox::pidfd::ExitStatus;
use crate::supervisor::Shared;

/// How attending a running instance ended.
enum Outcome {
    /// Stopped on purpose: by the operator, or for good (`leave`: the supervisor is
    /// stopping, or the revision was replaced).
    Stopped { leave: bool },
    /// The process ended on its own.
    Exited { success: bool, reason: String, ran: Duration },
}

/// How long an exited plugin's connection has to say how it ended.
const CONNECTION_END_WAIT: Duration = Duration::from_millis(500);

/// What ended a running instance.
enum Ended {
    /// The process exited on its own, after its connection failed (why) when it did.
    Exited(ExitStatus, Duration, Option<String>),
    /// Its connection takes no more calls (why), and the process did not exit within its
    /// `stop_timeout` after, or (then with what cut the wait short) before the supervisor
    /// stopped waiting.
    Disconnected(Said, Option<&'static str>),
    /// The operator asked for a stop or restart.
    Commanded,
    /// The supervisor is shutting down, or the revision was retired.
    Leaving,
}

/// What ends an instance's task for good: the supervisor stopping, or its revision
/// retired (a reload replaced it).
struct Leaving {
    shutdown: watch::Receiver<bool>,
    retired: watch::Receiver<bool>,
}

impl Leaving {
    fn now(&self) -> bool {
        *self.shutdown.borrow() || *self.retired.borrow()
    }

    /// Resolves once it is time to leave (at once if it already is).
    async fn wait(&mut self) {
        tokio::select! {
            _ = self.shutdown.wait_for(|stop| *stop) => {}
            _ = self.retired.wait_for(|gone| *gone) => {}
        }
    }

    fn why(&self) -> &'static str {
        if *self.shutdown.borrow() { "supervisor shutdown" } else { "replaced by a new revision" }
    }
}

pub(crate) async fn run(plugin: Arc<Plugin>, rev: Arc<Revision>, inst: Arc<Instance>, shared: Arc<Shared>) {
    let mut leaving = Leaving { shutdown: shared.shutdown.subscribe(), retired: rev.retirement() };
    supervise(&plugin, &rev, &inst, &shared, &mut leaving).await;
    // Gone for good: whatever it was doing (starting, waiting to restart) is over.
    inst.update(|s| {
        if !matches!(s.state, State::Stopped | State::Failed) {
            s.state = State::Stopped;
            s.reason = format!("stopped: {}", leaving.why());
        }
        s.pid = None;
        s.running_since = None;
        s.retry_at = None;
    });
}

/// Whose instance it is: its plugin, revision, itself, and what every instance shares.
type Whose<'a> = (&'a Arc<Plugin>, &'a Arc<Revision>, &'a Arc<Instance>, &'a Arc<Shared>);

/// The instance's life until it is time to leave.
async fn supervise(
    plugin: &Arc<Plugin>,
    rev: &Arc<Revision>,
    inst: &Arc<Instance>,
    shared: &Arc<Shared>,
    leaving: &mut Leaving,
) {
    let mut desired = plugin.desired.subscribe();
    let mut restarts = Restarts::new(rev.spec().backoff);
    let mut started_before = false;
    // Set when the instance must not start again until the operator acts
    // (refused, or ended under the restart policy): the generation it waits past.
    let mut held: Option<u64> = None;
    loop {
        if leaving.now() {
            return;
        }
        let want = *desired.borrow_and_update();
        if !want.run || held.is_some_and(|g| g == want.generation) {
            inst.update(|s| {
                if !want.run && (s.state != State::Failed || s.reason.is_empty()) {
                    s.state = State::Stopped;
                    s.reason = "stopped by request".into();
                    s.pid = None;
                }
                s.generation = want.generation;
            });
            tokio::select! {
                _ = desired.changed() => { restarts.reset(); held = None; continue; }
                _ = leaving.wait() => return,
            }
        }
        held = None;
        if started_before {
            inst.update(|s| s.restarts += 1);
        }
        started_before = true;
        inst.update(|s| {
            s.state = State::Starting;
            s.tried = true;
            s.reason = String::new();
            s.retry_at = None;
            s.pid = None;
            s.generation = want.generation;
        });

        // Leaving cancels the start, and so does the operator's stop or restart (a start
        // that hangs would otherwise keep them waiting for up to three handshake
        // timeouts); one whose process exists is torn down (and its verdict said) before
        // the start returns.
        let mut cancel = Leaving { shutdown: leaving.shutdown.clone(), retired: leaving.retired.clone() };
        let mut commands = desired.clone();
        // The start, and in `attend` the stop and the teardown, are boxed: held in place,
        // the largest of them set the size of this task, one per instance, for all of its
        // life (6,072 bytes in a release build, against 2,896 boxed).
        let started = Box::pin(start::start(plugin, rev, inst, shared, async move {
            tokio::select! {
                () = cancel.wait() => cancel.why(),
                () = stopped_or_restarted(&mut commands, want.generation) => "stopped or restarted by request",
            }
        }))
        .await;
        if started.is_err() {
            // Its process is gone and its cgroup removed, as after any start.
            inst.process_gone();
        }
        if leaving.now() && started.is_err() {
            return;
        }
        // Cancelled by the operator's command: obeyed next, not a failed start.
        if started.is_err() && desired.borrow().commanded_since(want.generation) {
            continue;
        }
        // The command generation this instance answers to: a start acknowledged while it
        // runs moves it on, and what follows its end (held under the restart policy, or
        // the backoff an operator's command cuts short) is measured from there. Measured
        // from the start's, a `start` of a running plugin made its next end look
        // commanded: restarted under `restart = "never"`, or with no backoff and its crash
        // history cleared.
        let mut seen = want.generation;
        let started = match started {
            Ok(running) => {
                let outcome = attend((plugin, rev, inst, shared), running, &mut desired, leaving, &mut seen).await;
                Ok(outcome)
            }
            Err(e) => Err(e),
        };
        // The process is gone and its cgroup removed (or left for cleanup).
        inst.process_gone();
        let failure = match started {
            Err(e @ StartError::Refused { .. }) => {
                let reason = e.cause().to_string();
                shared.events.emit(&plugin.name, &inst.id, EventKind::Refused, reason.clone(), &[]);
                inst.update(|s| {
                    s.state = State::Failed;
                    s.reason = format!("refused: {reason}");
                    s.pid = None;
                });
                held = Some(want.generation);
                continue;
            }
            Err(e @ StartError::Failed { .. }) => {
                let reason = e.cause().to_string();
                shared.events.emit(&plugin.name, &inst.id, EventKind::StartFailed, reason.clone(), &[]);
                reason
            }
            Ok(outcome) => match outcome {
                Outcome::Stopped { leave: true } => return,
                Outcome::Stopped { leave: false } => continue,
                Outcome::Exited { success, reason, ran } => {
                    restarts.ran_for(ran);
                    let restart = match rev.spec().restart {
                        RestartPolicy::Always => true,
                        RestartPolicy::OnFailure => !success,
                        RestartPolicy::Never => false,
                    };
                    if !restart {
                        inst.update(|s| {
                            s.state = if success { State::Stopped } else { State::Failed };
                            s.reason = reason;
                            s.pid = None;
                            s.running_since = None;
                        });
                        held = Some(seen);
                        continue;
                    }
                    reason
                }
            },
        };

        // Back off, then try again; the operator can cut the wait short.
        let delay = restarts.next_delay(Instant::now(), rand::random::<f64>());
        let looping = restarts.crash_loop();
        let why = match looping {
            Some(n) => format!("crash loop: {n} failures in the last 2 minutes; last: {failure}"),
            None => failure,
        };
        inst.update(|s| {
            s.state = State::Backoff;
            // Status renders the time left from retry_at when it is read.
            s.reason = why.clone();
            s.retry_at = Some(Instant::now() + delay);
            s.pid = None;
            s.running_since = None;
        });
        shared.events.emit(
            &plugin.name,
            &inst.id,
            if looping.is_some() { EventKind::CrashLoop } else { EventKind::Backoff },
            format!("{why}; next attempt in {}", format_duration(round(delay))),
            &[],
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = changed_generation(&mut desired, seen) => { restarts.reset(); }
            _ = leaving.wait() => return,
        }
    }
}

/// After its process ended without being asked to (`reason`): kept as its last exit, torn
/// down, and said.
async fn ended_on_its_own((plugin, rev, inst, shared): Whose<'_>, running: Running, reason: String) {
    let pid = running.pid;
    inst.update(|s| s.last_exit = Some(super::state::LastExit { pid, reason: reason.clone() }));
    let mut watch = Stopwatch::default();
    // Unboxed: this whole step is boxed where it is awaited.
    let verdict = super::teardown::tear_down(running, plugin, rev, inst).await;
    let teardown = watch.lap(Phase::Teardown);
    ended_phases((plugin, rev, inst, shared), watch.into_timings());
    shared.events.emit(
        &plugin.name,
        &inst.id,
        EventKind::Exited,
        format!("pid {pid} {reason} (teardown {} ms)", crate::observe::phases::ms(teardown)),
        &[],
    );
    super::teardown::report(plugin, inst, shared, verdict);
}

/// The phases of an instance's end, counted and kept in its status after its start's.
fn ended_phases((plugin, _, inst, shared): Whose<'_>, timings: Timings) {
    for (phase, took) in &timings.0 {
        shared.metrics.record_phase(&plugin.name, *phase, *took);
    }
    inst.update(|s| {
        s.phases.0.retain(|(p, _)| !matches!(p, Phase::Drain | Phase::Teardown));
        s.phases.0.extend(timings.0);
    });
}

/// The most of `stop_timeout` (a tenth of it) the plugin's own drain keeps, however
/// long the wait for routed calls before it took.
const DRAIN_FLOOR: Duration = Duration::from_millis(500);

fn round(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

/// Resolves once [`super::Desired::commanded_since`]; never if the plugin is gone.
async fn stopped_or_restarted(rx: &mut watch::Receiver<super::Desired>, current: u64) {
    if rx.wait_for(|d| d.commanded_since(current)).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Resolves when the operator issues a new command.
async fn changed_generation(rx: &mut watch::Receiver<super::Desired>, current: u64) {
    let _ = rx.wait_for(|d| d.generation != current).await;
}

/// Publishes a started instance for calls and watches it until it exits or
/// is stopped; returns with the process gone and its cgroup removed.
async fn attend(
    (plugin, rev, inst, shared): Whose<'_>,
    mut running: Running,
    desired: &mut watch::Receiver<super::Desired>,
    leaving: &mut Leaving,
    generation: &mut u64,
) -> Outcome {
    let (Some(accepted), Some(channel)) = (running.accepted.take(), running.channel.clone()) else {
        running.kill_main();
        let status = running.exited().await;
        let verdict = Box::pin(super::teardown::tear_down(running, plugin, rev, inst)).await;
        super::teardown::report(plugin, inst, shared, verdict);
        return Outcome::Exited {
            success: false,
            reason: format!("{status} (start did not complete)"),
            ran: Duration::ZERO,
        };
    };
    let declared = accepted.declared.clone();
    plugin.declared(rev, accepted.contract);
    let disconnect = running.disconnect();
    let live = Live::new(channel.clone(), running.pid)
        .with_signaller(running.signaller())
        .with_written(running.written.clone())
        .with_disconnect(disconnect.clone());
    // Its own health is followed while it is ready (the gateway's health service says it,
    // and calls go around it while it says NOT_SERVING).
    let queue = plugin.queue.clone();
    let follower = shared.health.follow(
        &inst.id,
        channel,
        running.serving_at_start,
        live.serving_flag(),
        Arc::new(move || queue.more_room()),
    );
    // Callable before it is said to run: whoever waits for "running" may call at once.
    plugin.went_live(inst, live);
    shared.health.bump();
    let phases = std::mem::take(&mut running.phases);
    inst.update(|s| {
        s.state = State::Running;
        s.reason = String::new();
        s.running_since = Some(Instant::now());
        s.declared = declared.clone();
        // The start's phases replace the last start's; the last stop's stay, after them.
        s.phases.0.retain(|(p, _)| matches!(p, Phase::Drain | Phase::Teardown));
        s.phases.0.splice(0..0, phases.0.iter().copied());
    });
    for (phase, took) in &phases.0 {
        shared.metrics.record_phase(&plugin.name, *phase, *took);
    }
    shared.events.emit(
        &plugin.name,
        &inst.id,
        EventKind::Ready,
        format!(
            "pid {} ready in {} ms ({phases}): version {}, services {}",
            running.pid,
            crate::observe::phases::ms(phases.total()),
            declared.version,
            declared.services.join(", ")
        ),
        &[("pid", running.pid.to_string()), ("version", declared.version.clone())],
    );
    let ended = loop {
        tokio::select! {
            status = running.exited() => {
                // An exit that says it succeeded: its connection may have failed just before,
                // its end not read yet. With the process gone it ends at once (unless a child
                // of the plugin holds its socket open, hence the bound).
                let said = if status.success() {
                    tokio::time::timeout(CONNECTION_END_WAIT, disconnect.said()).await.ok()
                } else {
                    None
                };
                let failed = said.filter(|said| said.failed).map(|said| said.why);
                break Ended::Exited(status, running.since.elapsed(), failed);
            }
            why = disconnect.said() => break Ended::Disconnected(why, None),
            _ = changed_generation(desired, *generation) => {
                let d = *desired.borrow_and_update();
                if !d.commanded_since(*generation) {
                    // Already running: a start is acknowledged, not acted on.
                    *generation = d.generation;
                    inst.update(|s| s.generation = d.generation);
                    continue;
                }
                break Ended::Commanded;
            }
            _ = leaving.wait() => break Ended::Leaving,
        }
    };
    let live = inst.live.swap(None);
    // No operator's signal reaches it from here on, nor is one under way.
    if let Some(l) = &live {
        l.signals.disarm();
    }
    // Before any drain: a plugin drains once its calls are done, and the follower's
    // health stream never is.
    Box::pin(follower.stop()).await;
    let pid = running.pid;
    let stop_timeout = rev.spec().stop_timeout;
    let ended = match ended {
        // A plugin draining on its own closes its connection first and exits once its
        // calls are done: that is an exit like any other. A hurried stop or the
        // supervisor leaving does not wait for it.
        Ended::Disconnected(said, _) => {
            inst.update(|s| {
                s.state = State::Stopping;
                s.reason = format!("its connection closed ({}): waiting for it to exit", said.why);
            });
            let mut hurry = shared.hurry.subscribe();
            let exited = tokio::select! {
                exited = tokio::time::timeout(stop_timeout, running.exited()) => exited.map_err(|_| None),
                _ = hurry.wait_for(|h| *h) => Err(Some("a second stop signal to the supervisor")),
                () = leaving.wait() => Err(Some(leaving.why())),
            };
            match exited {
                Ok(status) => Ended::Exited(status, running.since.elapsed(), said.failed.then_some(said.why)),
                Err(cut) => Ended::Disconnected(said, cut),
            }
        }
        other => other,
    };
    match ended {
        Ended::Exited(status, ran, failed) => {
            let mut reason = running.reason(status);
            if let Some(why) = &failed {
                reason = format!("{reason}, after its connection to the supervisor failed ({why})");
            }
            Box::pin(ended_on_its_own((plugin, rev, inst, shared), running, reason.clone())).await;
            Outcome::Exited { success: status.success() && failed.is_none(), reason, ran }
        }
        Ended::Disconnected(Said { why, .. }, cut) => {
            // Alive and unreachable: stopped, and then restarted as its restart policy
            // says of a failure.
            let ran = running.since.elapsed();
            let status = Box::pin(super::stop::stop(
                &mut running,
                Duration::ZERO,
                "connection closed",
                shared.hurry.subscribe(),
            ))
            .await;
            let waited = match cut {
                None => format!("it did not exit within {}", format_duration(stop_timeout)),
                Some(cut) => format!("it was stopped before it exited ({cut})"),
            };
            let reason = format!("its connection to the supervisor closed ({why}) and {waited}; {status}");
            Box::pin(ended_on_its_own((plugin, rev, inst, shared), running, reason.clone())).await;
            Outcome::Exited { success: false, reason, ran }
        }
        other => {
            let leave = matches!(other, Ended::Leaving);
            inst.update(|s| {
                s.state = State::Stopping;
                s.reason = "draining".into();
            });
            let why = if leave { leaving.why() } else { "operator request" };
            // The drain begins with the wait for the calls already routed to it, and both
            // share stop_timeout: SIGTERM comes when it is over, whatever took it. The
            // plugin's own drain keeps a little of it (DRAIN_FLOOR), so that streams
            // listening for the drain can still end themselves with OK.
            let mut watch = Stopwatch::default();
            let mut waited = Duration::ZERO;
            if let Some(live) = live {
                // A hurried stop (a second stop signal) does not wait for them either.
                let mut hurry = shared.hurry.subscribe();
                tokio::select! {
                    w = live.close(stop_timeout) => waited = w,
                    _ = hurry.wait_for(|h| *h) => {}
                }
            }
            let left = stop_timeout.saturating_sub(waited).max((stop_timeout / 10).min(DRAIN_FLOOR));
            let status = Box::pin(super::stop::stop(&mut running, left, why, shared.hurry.subscribe())).await;
            watch.lap(Phase::Drain);
            let verdict = Box::pin(super::teardown::tear_down(running, plugin, rev, inst)).await;
            watch.lap(Phase::Teardown);
            let timings = watch.into_timings();
            shared.events.emit(
                &plugin.name,
                &inst.id,
                EventKind::Stopped,
                format!("pid {pid} stopped ({why}): {status} ({timings})"),
                &[],
            );
            ended_phases((plugin, rev, inst, shared), timings);
            super::teardown::report(plugin, inst, shared, verdict);
            inst.update(|s| {
                s.state = State::Stopped;
                s.reason = format!("stopped: {why}");
                s.pid = None;
                s.running_since = None;
            });
            Outcome::Stopped { leave }
        }
    }
}
