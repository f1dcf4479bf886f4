//! Canary rollout: a new revision that passed every check of a reload takes a growing
//! share of calls beside the stable one, step by step (`[plugin.rollout]`). Each step is
//! judged on its own calls ([`judge`]); a pass moves to the next step and the last one
//! promotes the canary; a failure, a crash of a canary instance or the operator's abort
//! rolls back, the stable revision taking every call again. The operator can pause,
//! resume, promote or abort it with `supervisorctl rollout`.

pub mod judge;
mod report;
pub mod saved;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

pub use report::{Phase, Report, StepRecord};

use self::judge::{Judgement, Numbers, Reference, judge};
use crate::config::rollout::RolloutConfig;
use crate::instance::state::State;
use crate::instance::{Plugin, Revision};
use crate::observe::events::EventKind;
use crate::reload::ReloadError;
use crate::supervisor::Shared;

/// What the operator asks of a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Status,
    Pause,
    Resume,
    Promote,
    Abort,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Status => "status",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Promote => "promote",
            Action::Abort => "abort",
        }
    }
}

/// Why a rollout command was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error("unknown plugin {}", crate::config::shown_name(.0))]
    UnknownPlugin(String),
    #[error("plugin {0:?}: no rollout to show (none has run since the supervisor started, or a reload replaced it)")]
    NoRollout(String),
    #[error("plugin {plugin:?}: cannot {action}: the rollout is {phase}{}", if .note.is_empty() { String::new() } else { format!(" ({})", .note) })]
    NotNow { plugin: String, action: &'static str, phase: Phase, note: String },
    #[error(transparent)]
    Reload(#[from] Box<ReloadError>),
}

/// The report as `rollout status --json` prints it.
pub fn report_json(r: &Report) -> String {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("step".into(), r.current_step().into());
    }
    v.to_string()
}

type Reply = oneshot::Sender<Result<String, RolloutError>>;

/// One rollout of a plugin: its report (kept after it ends, for `rollout status`) and,
/// while it runs, the way to its driver.
#[derive(Debug)]
pub struct Rollout {
    report: Mutex<Report>,
    commands: Mutex<Option<mpsc::Sender<(Action, Reply)>>>,
}

impl Rollout {
    fn new(report: Report, commands: Option<mpsc::Sender<(Action, Reply)>>) -> Self {
        Self { report: Mutex::new(report), commands: Mutex::new(commands) }
    }

    /// A rollout the supervisor found interrupted at its start: the stable revision
    /// serves; `rollout resume` starts the canary again.
    pub(crate) fn interrupted(report: Report) -> Self {
        Self::new(report, None)
    }

    pub fn report(&self) -> Report {
        self.report.lock().map(|r| r.clone()).unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Running or paused: the canary takes calls.
    pub fn is_active(&self) -> bool {
        matches!(self.report().phase, Phase::Running | Phase::Paused)
    }

    /// A rollout found interrupted is given up by the operator: the stable revision
    /// serves on.
    pub(crate) fn give_up(&self, note: String) {
        self.update(|r| r.end(Phase::RolledBack, note));
    }

    fn update(&self, f: impl FnOnce(&mut Report)) {
        let mut r = self.report.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut r);
    }

    /// Hands `action` to the driver and waits for what it did.
    pub(crate) async fn command(&self, plugin: &str, action: Action) -> Result<String, RolloutError> {
        let tx = self.commands.lock().ok().and_then(|c| c.clone());
        let not_now = || {
            let r = self.report();
            RolloutError::NotNow { plugin: plugin.to_owned(), action: action.as_str(), phase: r.phase, note: r.note }
        };
        let Some(tx) = tx else { return Err(not_now()) };
        let (reply, answer) = oneshot::channel();
        if tx.send((action, reply)).await.is_err() {
            return Err(not_now());
        }
        answer.await.unwrap_or_else(|_| Err(not_now()))
    }
}

/// Starts a canary rollout of `canary` beside `stable` (both running, the canary checked
/// as a reload checks it): its first step takes effect before this returns; the driver
/// runs on in a task of its own. Returns the first step's share. `generation` is the
/// operator's command in force when the reload spawned the canary: a stop or restart
/// since, even one that lands while this keeps the rollout, withdraws it rather than
/// being taken for the canary's crash.
pub(crate) async fn begin(
    shared: &Arc<Shared>,
    p: &Arc<Plugin>,
    stable: Arc<Revision>,
    canary: Arc<Revision>,
    generation: u64,
) -> u8 {
    let cfg = canary.spec().rollout.clone();
    let first = cfg.steps.first().copied().unwrap_or(100);
    let (tx, rx) = mpsc::channel(4);
    let report = Report::new(&p.name, stable.number, canary.number, &cfg.steps);
    let ro = Arc::new(Rollout::new(report, Some(tx)));
    p.set_rollout(ro.clone());
    // Kept before the canary takes a call: a restart from here on finds the stable
    // revision. The reload kept it already, before the canary started, unless the stable
    // revision had no instance ready then (the same record again is not written).
    keep(shared, p, &stable, &canary).await;
    p.set_split(Some((&canary, first)));
    let driver = Driver { shared: shared.clone(), p: p.clone(), stable, canary, ro, rx, cfg, generation };
    shared.tasks.spawn(driver.run());
    first
}

/// Keeps what a restart needs to bring `stable` back instead of `canary` ([`saved::keep`]),
/// off the runtime's threads: it may copy the stable binary.
pub(crate) async fn keep(shared: &Arc<Shared>, p: &Arc<Plugin>, stable: &Arc<Revision>, canary: &Arc<Revision>) {
    let keep = {
        let (shared, p, stable, canary) = (shared.clone(), p.clone(), stable.clone(), canary.clone());
        tokio::task::spawn_blocking(move || saved::keep(&shared, &p, &stable, &canary))
    };
    if let Err(e) = keep.await {
        tracing::warn!(plugin = %p.name, error = %e, "keeping the rollout ended abnormally");
    }
}

/// How a rollout ends.
enum End {
    Promoted(String),
    /// A verdict on the canary: it is not tried again with the same entry and binary.
    RolledBack {
        why: String,
        numbers: Option<Numbers>,
    },
    /// The operator stopped or restarted the plugin: no verdict on the canary, which goes;
    /// the stable revision stays, and the rollout is interrupted (`rollout resume` starts
    /// the canary again), as a restart of the supervisor leaves it.
    Withdrawn(String),
    /// The supervisor stops: the rollout is left as it is, to be found interrupted.
    Shutdown,
}

/// What woke the driver.
enum Wake {
    Due,
    Command(Action, Reply),
    Crashed(String),
    /// The operator stopped or restarted the plugin (a command of another generation).
    Commanded(String),
    Shutdown,
}

/// The result of a pause.
enum Paused {
    Resumed,
    Ended(End),
}

/// What a command given during a step changes.
enum Obeyed {
    /// The rollout is paused now.
    Paused,
    Ended(End),
}

struct Driver {
    shared: Arc<Shared>,
    p: Arc<Plugin>,
    stable: Arc<Revision>,
    canary: Arc<Revision>,
    ro: Arc<Rollout>,
    rx: mpsc::Receiver<(Action, Reply)>,
    cfg: RolloutConfig,
    /// The operator's command in force when the rollout began.
    generation: u64,
}

/// The start of a step's window: the two revisions' counts and the time.
struct Window {
    canary: crate::routing::outcomes::Tally,
    stable: crate::routing::outcomes::Tally,
    started: Instant,
    intervals: u32,
}

impl Driver {
    async fn run(mut self) {
        let end = self.steps().await;
        // Commands that come now are told the rollout is over.
        if let Ok(mut c) = self.ro.commands.lock() {
            c.take();
        }
        match end {
            End::Promoted(why) => self.promote(&why),
            End::RolledBack { why, numbers } => self.roll_back(&why, numbers, Phase::RolledBack),
            End::Withdrawn(why) => self.roll_back(&why, None, Phase::Interrupted),
            End::Shutdown => {}
        }
    }

    fn window(&self) -> Window {
        Window {
            canary: self.canary.outcomes.snapshot(),
            stable: self.stable.outcomes.snapshot(),
            started: Instant::now(),
            intervals: 1,
        }
    }

    fn numbers_since(&self, w: &Window, reference: Reference) -> Numbers {
        let c = self.canary.outcomes.snapshot().since(&w.canary);
        let s = self.stable.outcomes.snapshot().since(&w.stable);
        match judge(&self.cfg, &c, &s, reference) {
            Judgement::Pass(n) | Judgement::TooFew(n) | Judgement::Fail { numbers: n, .. } => n,
        }
    }

    async fn steps(&mut self) -> End {
        // What the stable revision's callers gave up on before the rollout, for a step
        // with too few stable calls of its own (a single step at 100%, say).
        let mut reference = Reference::before(&self.stable.outcomes.snapshot());
        let steps = self.cfg.steps.clone();
        let mut step = 0;
        loop {
            let share = steps[step];
            self.p.set_split(Some((&self.canary, share)));
            self.ro.update(|r| r.enter(step, share));
            self.emit(
                EventKind::RolloutStep,
                format!(
                    "revision {} takes {share}% of calls (step {} of {}); revision {} the rest",
                    self.canary.number,
                    step + 1,
                    steps.len(),
                    self.stable.number
                ),
            );
            let mut w = self.window();
            loop {
                let due = w.started + self.cfg.step_interval.saturating_mul(w.intervals);
                match self.next(Some(due)).await {
                    Wake::Shutdown => return End::Shutdown,
                    Wake::Crashed(why) => {
                        return End::RolledBack { why, numbers: Some(self.numbers_since(&w, reference)) };
                    }
                    Wake::Commanded(why) => return End::Withdrawn(why),
                    Wake::Command(action, reply) => match self.obey(action, reply, step) {
                        Some(Obeyed::Ended(end)) => return end,
                        Some(Obeyed::Paused) => match self.paused().await {
                            Paused::Resumed => w = self.window(),
                            Paused::Ended(end) => return end,
                        },
                        None => {}
                    },
                    Wake::Due => {
                        let c = self.canary.outcomes.snapshot().since(&w.canary);
                        let s = self.stable.outcomes.snapshot().since(&w.stable);
                        match judge(&self.cfg, &c, &s, reference) {
                            Judgement::Pass(numbers) => {
                                reference = reference.after(&s);
                                self.ro.update(|r| r.judged(step, share, true, "passed".into(), numbers.clone()));
                                if step + 1 == steps.len() {
                                    return End::Promoted(format!("passed its last step: {numbers}"));
                                }
                                step += 1;
                                break;
                            }
                            Judgement::Fail { why, numbers } => {
                                self.ro.update(|r| r.judged(step, share, false, why.clone(), numbers.clone()));
                                return End::RolledBack {
                                    why: format!("step {} ({share}%): {why}", step + 1),
                                    numbers: Some(numbers),
                                };
                            }
                            Judgement::TooFew(numbers) if w.intervals < 3 => {
                                w.intervals += 1;
                                self.ro.update(|r| {
                                    r.note = format!("step extended: {numbers} of min_calls {}", self.cfg.min_calls)
                                });
                            }
                            Judgement::TooFew(numbers) => {
                                let note = format!(
                                    "paused: step {} saw {} canary calls in three step_intervals, fewer than min_calls {}",
                                    step + 1,
                                    numbers.canary_calls,
                                    self.cfg.min_calls
                                );
                                self.ro.update(|r| r.pause(note.clone()));
                                self.emit(EventKind::RolloutPaused, note);
                                match self.paused().await {
                                    Paused::Resumed => w = self.window(),
                                    Paused::Ended(end) => return end,
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Carries out a command given while the step runs (or while paused: then a pause is
    /// not asked for).
    fn obey(&self, action: Action, reply: Reply, step: usize) -> Option<Obeyed> {
        let plugin = self.p.name.clone();
        match action {
            Action::Status => {
                let _ = reply.send(Ok(self.ro.report().to_string()));
                None
            }
            Action::Pause => {
                let note = format!("paused by the operator at step {}", step + 1);
                self.ro.update(|r| r.pause(note.clone()));
                self.emit(EventKind::RolloutPaused, note.clone());
                let _ = reply.send(Ok(format!("{plugin}: {note}")));
                Some(Obeyed::Paused)
            }
            Action::Resume => {
                let r = self.ro.report();
                let _ =
                    reply.send(Err(RolloutError::NotNow { plugin, action: "resume", phase: r.phase, note: r.note }));
                None
            }
            Action::Promote => {
                let _ = reply.send(Ok(format!("{plugin}: revision {} promoted", self.canary.number)));
                Some(Obeyed::Ended(End::Promoted("promoted by the operator".into())))
            }
            Action::Abort => {
                let _ = reply.send(Ok(format!("{plugin}: rolled back to revision {}", self.stable.number)));
                Some(Obeyed::Ended(End::RolledBack { why: "aborted by the operator".into(), numbers: None }))
            }
        }
    }

    /// Waits, paused (the canary keeps its share), for resume, promote or abort.
    async fn paused(&mut self) -> Paused {
        loop {
            match self.next(None).await {
                Wake::Due => {}
                Wake::Shutdown => return Paused::Ended(End::Shutdown),
                Wake::Crashed(why) => return Paused::Ended(End::RolledBack { why, numbers: None }),
                Wake::Commanded(why) => return Paused::Ended(End::Withdrawn(why)),
                Wake::Command(Action::Resume, reply) => {
                    self.ro.update(|r| {
                        r.phase = Phase::Running;
                        r.note.clear();
                    });
                    let msg = format!("{}: rollout resumed at step {}", self.p.name, self.ro.report().step + 1);
                    self.emit(EventKind::RolloutResumed, msg.clone());
                    let _ = reply.send(Ok(msg));
                    return Paused::Resumed;
                }
                Wake::Command(Action::Pause, reply) => {
                    let r = self.ro.report();
                    let _ = reply.send(Err(RolloutError::NotNow {
                        plugin: self.p.name.clone(),
                        action: "pause",
                        phase: r.phase,
                        note: r.note,
                    }));
                }
                Wake::Command(action, reply) => {
                    let step = self.ro.report().step;
                    if let Some(Obeyed::Ended(end)) = self.obey(action, reply, step) {
                        return Paused::Ended(end);
                    }
                }
            }
        }
    }

    /// Waits for the step's end (`due`), a command, a canary instance that fails, the
    /// operator's stop or restart of the plugin, or the supervisor stopping.
    async fn next(&mut self, due: Option<Instant>) -> Wake {
        let mut shutdown = self.shared.shutdown.subscribe();
        let canary = self.canary.clone();
        let generation = self.generation;
        // A command bumps the generation (and a restart counts as a restart of the canary's
        // instances): checked first, so that the operator's restart is not taken for a crash.
        // A start of a plugin already running is acknowledged, not acted on: only a stop or
        // a restart is.
        let commanded = move |p: &Plugin| p.desired.borrow().commanded_since(generation);
        let fell = |p: &Plugin| commanded(p) || failed(&canary).is_some();
        let until = async {
            match due {
                Some(due) => tokio::time::sleep_until(due.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = shutdown.wait_for(|s| *s) => Wake::Shutdown,
            _ = self.p.wait_until(Duration::from_secs(365 * 86400), fell) => {
                // A canary instance the supervisor's own stopping ended is no crash. The
                // biased branch above does not always catch that: `wait_for` is under
                // tokio's co-operative budget, and with the task's budget spent it is
                // Pending even when the flag is set, while this branch's check is not. CI
                // once kept a shutdown's stop as a crash (rolled back, not interrupted).
                if *self.shared.shutdown.borrow() {
                    Wake::Shutdown
                } else if commanded(&self.p) {
                    let what = if self.p.desired.borrow().run { "restarted" } else { "stopped" };
                    Wake::Commanded(format!("the operator {what} the plugin"))
                } else {
                    Wake::Crashed(failed(&self.canary).unwrap_or_default())
                }
            }
            cmd = self.rx.recv() => match cmd {
                Some((action, reply)) => Wake::Command(action, reply),
                None => Wake::Shutdown,
            },
            () = until => Wake::Due,
        }
    }

    fn promote(&self, why: &str) {
        // What is kept goes first: a reload that begins once the phase says the rollout is
        // over keeps its own.
        saved::forget(&self.shared, &self.p.name);
        self.p.promote(&self.canary);
        let msg = format!(
            "revision {} serves every call ({why}); revision {} drains",
            self.canary.number, self.stable.number
        );
        self.ro.update(|r| r.end(Phase::Promoted, msg.clone()));
        self.emit(EventKind::Promoted, msg);
        crate::reload::drain_away(&self.shared, &self.p, self.stable.clone());
    }

    /// Back to the stable revision, the rollout `RolledBack` (a verdict on the canary: it
    /// is not tried again with the same entry and binary) or `Interrupted` (none: `rollout
    /// resume` starts it again).
    fn roll_back(&self, why: &str, numbers: Option<Numbers>, phase: Phase) {
        saved::set_phase(&self.shared, &self.p.name, phase, why);
        self.p.set_split(None);
        let mut msg = format!("revision {} serves every call again: {why}", self.stable.number);
        if let Some(n) = &numbers {
            msg.push_str(&format!(" [{n}]"));
        }
        if phase == Phase::Interrupted {
            msg.push_str(&format!("; `supervisorctl rollout resume {}` starts the canary again", self.p.name));
        }
        self.ro.update(|r| r.end(phase, msg.clone()));
        let kind = if phase == Phase::Interrupted { EventKind::RolloutInterrupted } else { EventKind::RolledBack };
        self.emit(kind, msg);
        crate::reload::drain_away(&self.shared, &self.p, self.canary.clone());
    }

    fn emit(&self, kind: EventKind, message: String) {
        self.shared.events.emit(&self.p.name, "", kind, message, &[("revision", self.canary.number.to_string())]);
    }
}

/// A canary instance that failed, or ended and is not running (an exit the restart
/// policy does not restart counts too: its share would silently go to the stable revision).
fn failed(canary: &Revision) -> Option<String> {
    if let Some((instance, reason)) = crate::reload::first_failure(canary) {
        return Some(format!("canary instance {instance} failed: {reason}"));
    }
    canary.instances.iter().find_map(|i| {
        let s = i.status();
        matches!(s.state, State::Stopped).then(|| format!("canary instance {} ended: {}", i.id, s.describe()))
    })
}

#[cfg(test)]
mod tests;
