//! The verdict on each injected fault, from what was seen while it ran: what was
//! done, what was expected, what happened, and whether that passes. Pure, so the
//! judgement is tested on its own (`faults` makes the observations).

use std::time::Duration;

use serde::Serialize;

use crate::config::units::format_duration;

/// How a fault check ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Passed,
    Failed,
    /// Not tried, for the reason in `happened`.
    Skipped,
}

/// One injected fault in the report.
#[derive(Debug, Serialize)]
pub struct Fault {
    /// Which fault: `kill -9`, `SIGTERM`, `deadline`, `burst`, `memory limit`.
    pub fault: &'static str,
    pub done: String,
    pub expected: String,
    pub happened: String,
    pub outcome: Outcome,
    /// The time that says how it went: to run again (kill -9, memory limit), to exit
    /// (SIGTERM); none when it did not.
    pub ms: Option<u64>,
}

impl Fault {
    pub fn skipped(fault: &'static str, done: &str, why: impl Into<String>) -> Self {
        Self {
            fault,
            done: done.to_owned(),
            expected: String::new(),
            happened: why.into(),
            outcome: Outcome::Skipped,
            ms: None,
        }
    }

    fn judged(fault: &'static str, done: String, expected: String, happened: String, passed: bool) -> Self {
        let outcome = if passed { Outcome::Passed } else { Outcome::Failed };
        Self { fault, done, expected, happened, outcome, ms: None }
    }

    fn with_ms(mut self, d: Option<Duration>) -> Self {
        self.ms = d.map(ms);
        self
    }
}

pub fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What `restart` makes of an instance that ended, for the words of the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// The entry's `restart`, as written in the config.
    pub name: &'static str,
    /// It restarts one that was killed or failed.
    pub after_failure: bool,
    /// It restarts one that exited 0.
    pub after_success: bool,
}

impl Policy {
    pub fn of(p: crate::config::RestartPolicy) -> Self {
        use crate::config::RestartPolicy::*;
        match p {
            Always => Self { name: "always", after_failure: true, after_success: true },
            OnFailure => Self { name: "on-failure", after_failure: true, after_success: false },
            Never => Self { name: "never", after_failure: false, after_success: false },
        }
    }
}

/// The instance killed with SIGKILL.
#[derive(Debug)]
pub struct Kill9Seen {
    pub policy: Policy,
    /// From the kill to a new instance running, when one did within the wait.
    pub restarted: Option<Duration>,
    /// The wait.
    pub waited: Duration,
    /// The plugin's state when the wait ended.
    pub state: String,
}

pub fn kill9(k: &Kill9Seen) -> Fault {
    let done = "SIGKILL to the running instance".to_owned();
    let (expected, happened, passed) = match (k.policy.after_failure, k.restarted) {
        (true, Some(t)) => (restart_expected(k.policy), format!("restarted, running again in {} ms", ms(t)), true),
        (true, None) => (
            restart_expected(k.policy),
            format!("NOT restarted within {}; it is {}", format_duration(k.waited), k.state),
            false,
        ),
        (false, None) => (left_down(k.policy), format!("not restarted; it is {}", k.state), true),
        (false, Some(t)) => (left_down(k.policy), format!("restarted anyway, in {} ms", ms(t)), false),
    };
    Fault::judged("kill -9", done, expected, happened, passed).with_ms(k.restarted)
}

fn restart_expected(p: Policy) -> String {
    format!("a new instance running (restart = \"{}\")", p.name)
}

fn left_down(p: Policy) -> String {
    format!("left down (restart = \"{}\")", p.name)
}

/// A call's end, in words: `OK`, or its code and message.
pub type Answer = Result<(), String>;

/// SIGTERM sent to an instance while it worked on a call.
#[derive(Debug)]
pub struct SigtermSeen {
    pub method: String,
    pub stop_timeout: Duration,
    /// What the call in flight when the signal went got (with none in flight, the check
    /// is skipped: [`sigterm_not_in_flight`]).
    pub in_flight: Answer,
    /// From the signal to the call's answer (or failure).
    pub answered: Option<Duration>,
    /// From the signal to the process gone, when it was within the wait.
    pub exited: Option<Duration>,
    /// How the process ended (its exit status), or the state it was in when the wait ended.
    pub ended: String,
    /// It exited with status 0: it drained, rather than dying of the signal.
    pub clean: bool,
    pub policy: Policy,
    /// What the supervisor did next: restarted it, or left it stopped.
    pub restarted: bool,
}

pub fn sigterm(s: &SigtermSeen) -> Fault {
    let done = format!(
        "SIGTERM to the instance during a call of {}, both while it was held (SIGSTOP), then SIGCONT",
        s.method
    );
    let expected = format!(
        "the call answered, the instance drained and exited 0 within its stop_timeout ({})",
        format_duration(s.stop_timeout)
    );
    let call = match &s.in_flight {
        Ok(()) => "the call in flight answered OK".to_owned(),
        Err(e) => format!("the call in flight FAILED ({e})"),
    };
    // A drain that waits on a stream still open (a stock gRPC GracefulStop waits on the
    // supervisor's own health Watch) outlasts its deadline with its calls answered in time;
    // a call that itself outlasted it says why already.
    let answered_in_time = s.in_flight.is_ok() && s.answered.is_some_and(|a| a <= s.stop_timeout);
    let hint = if answered_in_time && s.exited.is_none_or(|exited| exited > s.stop_timeout) { DRAIN_HINT } else { "" };
    let Some(exited) = s.exited else {
        let happened = format!(
            "still running {} (its stop_timeout) after SIGTERM; {call}; killed after the wait{hint}",
            format_duration(s.stop_timeout)
        );
        return Fault::judged("SIGTERM", done, expected, happened, false);
    };
    let then = match (s.restarted, s.clean) {
        (true, _) => format!("restarted (restart = \"{}\")", s.policy.name),
        (false, true) => format!("left stopped, as restart = \"{}\" does after a clean exit", s.policy.name),
        (false, false) => format!("left down (restart = \"{}\")", s.policy.name),
    };
    let how = if s.clean { "drained and exited 0".to_owned() } else { format!("did not drain: {}", s.ended) };
    // Later than its stop_timeout fails, however little: the supervisor's own stop would
    // have signalled it by then.
    let late = exited > s.stop_timeout;
    let when = if late {
        format!("in {} ms, after its stop_timeout ({})", ms(exited), format_duration(s.stop_timeout))
    } else {
        format!("in {} ms", ms(exited))
    };
    let happened = format!("{how} {when}; {call}; {then}{hint}");
    let passed = s.clean && !late && s.in_flight.is_ok();
    Fault::judged("SIGTERM", done, expected, happened, passed).with_ms(Some(exited))
}

/// Why a drain may outlast its stop_timeout with its calls answered.
pub const DRAIN_HINT: &str =
    "; a plugin's drain waits on open streams: end health Watch streams when draining (docs/protocol.md)";

/// The SIGTERM check's call was never admitted, so no call was in flight to drain and no
/// signal was sent: skipped, naming what the call got (a request the method does not
/// take, a server-streaming method, a name that does not resolve ...).
pub fn sigterm_not_in_flight(method: &str, answer: Answer) -> Fault {
    let why = match answer {
        Err(e) => format!("the call of {method} failed before it was in flight ({e}): no call to have in flight"),
        Ok(()) => format!("the call of {method} was answered without being seen in flight: no call to have in flight"),
    };
    Fault::skipped("SIGTERM", "SIGTERM during a call", why)
}

/// A call made while the plugin could not answer within its deadline, then a normal one.
#[derive(Debug)]
pub struct DeadlineSeen {
    pub method: String,
    pub deadline: Duration,
    /// The call past its deadline: its gRPC code and message, or OK.
    pub late: Result<(), (tonic::Code, String)>,
    /// The call after it.
    pub after: Answer,
    /// The pid that served before, and the one running after (none: not running).
    pub pid: (i32, Option<i32>),
}

pub fn deadline(d: &DeadlineSeen) -> Fault {
    let done = format!(
        "a call of {} with a {} deadline while the instance was held (SIGSTOP), then SIGCONT and a call with time to answer",
        d.method,
        format_duration(d.deadline)
    );
    // The first half is the supervisor's (the plugin, stopped, cannot answer): only the
    // second tests the plugin.
    let expected =
        "DEADLINE_EXCEEDED (given by the supervisor while the instance is held), then the same instance answers (the plugin keeps serving)"
            .to_owned();
    let (late, late_ok) = match &d.late {
        Err((tonic::Code::DeadlineExceeded, _)) => ("DEADLINE_EXCEEDED".to_owned(), true),
        Err((code, msg)) => (format!("{code:?} ({msg}) instead of DEADLINE_EXCEEDED"), false),
        Ok(()) => ("answered OK within the deadline".to_owned(), false),
    };
    let same = d.pid.1 == Some(d.pid.0);
    let after = match (&d.after, same) {
        (Ok(()), true) => format!("the same instance (pid {}) answered the next call", d.pid.0),
        (Ok(()), false) => format!("the next call was answered, but pid {} no longer runs", d.pid.0),
        (Err(e), _) => format!("the next call FAILED ({e})"),
    };
    let passed = late_ok && d.after.is_ok() && same;
    Fault::judged("deadline", done, expected, format!("{late}; {after}"), passed)
}

/// Calls fired at once while the instance was held, more than its limits take.
#[derive(Debug)]
pub struct BurstSeen {
    pub max_in_flight: u32,
    pub max_queued: u32,
    /// The limits were lowered for the check (from the entry's own, or the defaults).
    pub lowered: bool,
    pub fired: usize,
    pub succeeded: usize,
    /// Answered RESOURCE_EXHAUSTED.
    pub shed: usize,
    /// The longest a shed call took to be answered.
    pub slowest_shed: Duration,
    /// The first answer that was neither OK nor RESOURCE_EXHAUSTED, and how many there were.
    pub other: Option<(usize, String)>,
}

/// A shed call is answered at once: this long is already not.
pub const SHED_AT_ONCE: Duration = Duration::from_millis(250);

pub fn burst(b: &BurstSeen) -> Fault {
    let room = (b.max_in_flight + b.max_queued) as usize;
    let lowered = if b.lowered { " (lowered for the check)" } else { "" };
    let done = format!(
        "{} calls at once while the instance was held (SIGSTOP), with max_in_flight = {} and max_queued = {}{lowered}",
        b.fired, b.max_in_flight, b.max_queued
    );
    let expected =
        format!("{room} admitted and answered, {} shed at once with RESOURCE_EXHAUSTED", b.fired.saturating_sub(room));
    let mut happened = format!(
        "{} answered, {} shed with RESOURCE_EXHAUSTED in at most {} ms",
        b.succeeded,
        b.shed,
        ms(b.slowest_shed)
    );
    if let Some((n, first)) = &b.other {
        happened.push_str(&format!("; {n} FAILED otherwise, first: {first}"));
    }
    let passed = b.succeeded == room
        && b.shed == b.fired.saturating_sub(room)
        && b.other.is_none()
        && b.slowest_shed <= SHED_AT_ONCE;
    Fault::judged("burst", done, expected, happened, passed)
}

/// The instance pushed past its memory limit.
#[derive(Debug)]
pub struct MemorySeen {
    /// How: the limit lowered below its use, or set just above it and calls padded past it.
    pub done: String,
    /// The reason its end was given, when it ended within the wait.
    pub reason: Option<String>,
    pub policy: Policy,
    /// From its end to a new instance running.
    pub restarted: Option<Duration>,
    pub state: String,
}

pub fn memory(m: &MemorySeen) -> Fault {
    let expected = if m.policy.after_failure {
        format!("its end reported as an OOM kill, and a new instance running (restart = \"{}\")", m.policy.name)
    } else {
        format!("its end reported as an OOM kill, and left down (restart = \"{}\")", m.policy.name)
    };
    let Some(reason) = &m.reason else {
        let happened = format!("it was not killed; it is {}", m.state);
        return Fault::judged("memory limit", m.done.clone(), expected, happened, false);
    };
    let oom = reason.contains("out of memory");
    let said = if oom { reason.clone() } else { format!("reported as {reason:?}, not as an OOM kill") };
    let (then, restart_ok) = match (m.policy.after_failure, m.restarted) {
        (true, Some(t)) => (format!("running again in {} ms", ms(t)), true),
        (true, None) => (format!("NOT restarted; it is {}", m.state), false),
        (false, None) => ("left down".to_owned(), true),
        (false, Some(_)) => ("restarted anyway".to_owned(), false),
    };
    Fault::judged("memory limit", m.done.clone(), expected, format!("{said}; {then}"), oom && restart_ok)
        .with_ms(m.restarted)
}

/// The line of `failed` for a fault that failed.
pub fn failure(f: &Fault) -> Option<String> {
    (f.outcome == Outcome::Failed).then(|| format!("{}: {}", f.fault, f.happened))
}
