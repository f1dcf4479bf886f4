//! The faults the onboarding check injects into the plugin's running instance, one after
//! another in the baseline's scratch supervisor: kill -9, SIGTERM during a call, a call
//! past its deadline, a burst above its limits, and its memory limit. Each is bounded in
//! time and leaves the instance running again for the next; [`super::verdict`] judges
//! what each saw.
//!
//! A call that must find the plugin unable to answer (the deadline, the burst) finds it
//! held with SIGSTOP: the request reaches the plugin's socket and waits there, so the
//! deadline expires at the plugin, and the burst's admitted calls stay in flight, however
//! fast the plugin answers otherwise.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::verdict::{self, Fault, Policy};
use super::{Exercise, READY_WITHIN};
use crate::config::units::ByteSize;
use crate::control::call::{call_json, call_json_padded};
use crate::instance::state::State;
use crate::instance::{Live, Plugin};
use crate::quotas::QuotaChange;
use crate::{Supervisor, SupervisorError};

/// How long a fault's call may take when it is meant to be answered: as long as the plugin
/// may take to start. The burst's queued calls wait through rounds of `max_in_flight`, the
/// padded calls carry megabytes, and a loaded host slows each; a bound this loose fails
/// only a plugin that does not answer at all.
const ANSWER_WITHIN: Duration = READY_WITHIN;
/// The deadline of the call made while the instance is held.
const SHORT_DEADLINE: Duration = Duration::from_millis(100);
/// Calls fired in the burst beyond what `max_in_flight` and `max_queued` take.
const BURST_EXTRA: usize = 4;
/// What the burst's limits are lowered to in the scratch config, so the burst stays small.
pub const BURST_LIMIT: u32 = 4;
/// How long a plugin past its memory limit may take to be killed.
const OOM_WITHIN: Duration = Duration::from_secs(5);
/// The limit that puts a plugin below what it uses where the kernel takes one (cgroup v2).
const BELOW_ANY_PLUGIN: ByteSize = ByteSize(1 << 20);
/// Where cgroup v1 refuses that: the room left above what the plugin uses, and the calls,
/// each padded past it, that take it there (under the 4 MiB gRPC receives by default).
const ROOM: u64 = 2 << 20;
const PAD: usize = 3 << 20;
const PADDED_CALLS: usize = 4;
/// How long past its stop_timeout the check still watches for the plugin's exit, so that a
/// late one is reported with its time. Exiting after its stop_timeout fails (the
/// supervisor's own stop would have signalled it by then).
const SLACK: Duration = Duration::from_millis(250);
/// How long the call of the SIGTERM check may take to be admitted.
const ADMITTED_WITHIN: Duration = Duration::from_secs(1);
/// How long an admitted call's request may take to reach the held plugin's socket; one
/// that does not is no call in flight to drain, and the check is skipped.
const IN_THE_SOCKET: Duration = Duration::from_secs(2);

/// The plugin under test in a scratch supervisor.
struct Target<'a> {
    sup: &'a Supervisor,
    name: &'a str,
    p: Arc<Plugin>,
    call: Option<&'a Exercise>,
    policy: Policy,
}

/// Injects every fault, in turn, into `name`'s instance. `lowered`: the burst's limits
/// were lowered from the entry's own.
pub async fn run(
    sup: &Supervisor,
    name: &str,
    call: Option<&Exercise>,
    lowered: bool,
) -> Result<Vec<Fault>, SupervisorError> {
    let p = sup.plugin(name)?;
    let policy = Policy::of(p.spec().restart);
    let t = Target { sup, name, p, call, policy };
    let mut faults = vec![kill9(&t).await];
    for next in ["SIGTERM", "deadline", "burst", "memory limit"] {
        let fault = match t.back_running().await {
            Err(why) => Fault::skipped(next, "", why),
            Ok(live) => match next {
                "SIGTERM" => sigterm(&t, &live).await,
                "deadline" => deadline(&t, &live).await,
                "burst" => burst(&t, &live, lowered).await,
                _ => memory(&t, &live).await,
            },
        };
        faults.push(fault);
    }
    Ok(faults)
}

/// Brought back with [`hold`]: SIGCONT when it goes, through the instance's own signaller,
/// whatever state the instance is in by then (the operator's `signal` skips one that is
/// not running, and would leave it stopped).
struct Held(Arc<Live>);

impl Drop for Held {
    fn drop(&mut self) {
        if let Err(e) = self.0.signals.send(libc::SIGCONT) {
            tracing::warn!(pid = self.0.pid, error = %e, "onboard: cannot SIGCONT the held instance");
        }
    }
}

/// Stops `live`'s processes until the guard goes. The guard comes first, so that a stop
/// that reached some of them is undone, whatever happens next.
///
/// It returns once every thread of the instance's process is stopped: kill() returns when
/// the stop is only pending, and until the one thread the kernel chose to take it runs
/// (on a loaded host, a while), the others run on and may take and answer the very call
/// meant to find the plugin held.
async fn hold(live: &Arc<Live>) -> Result<Held, String> {
    let held = Held(live.clone());
    match live.signals.send(libc::SIGSTOP) {
        Ok(Some(_)) => {}
        Ok(None) => return Err("the instance is no longer signalled (it is stopping)".to_owned()),
        Err(e) => return Err(format!("SIGSTOP: {e}")),
    }
    let within = Instant::now() + STOPPED_WITHIN;
    while !all_threads_stopped(live.pid) {
        if Instant::now() >= within {
            return Err(format!("its threads were not all stopped within {STOPPED_WITHIN:?} of SIGSTOP"));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(held)
}

/// How long the threads of a held instance may take to stop.
const STOPPED_WITHIN: Duration = Duration::from_secs(2);

/// Whether every thread of `pid` is stopped (`T`), or gone.
fn all_threads_stopped(pid: i32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return true };
    tasks.flatten().all(|t| {
        std::fs::read_to_string(t.path().join("stat")).map_or(true, |stat| {
            // The state follows the command's closing parenthesis, which may hold any byte.
            stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next()).is_none_or(|s| s == 'T')
        })
    })
}

impl<'a> Target<'a> {
    fn live(&self) -> Option<Arc<Live>> {
        self.p.instances().first()?.live.load_full()
    }

    fn pid(&self) -> Option<i32> {
        self.live().map(|l| l.pid)
    }

    fn status(&self) -> crate::instance::state::Status {
        self.p.instances().first().map(|i| i.status()).unwrap_or_default()
    }

    /// A new instance, not `old`, runs.
    fn runs_other_than(&self, old: i32) -> bool {
        let s = self.status();
        s.state == State::Running && s.pid.is_some_and(|p| p != old) && self.live().is_some()
    }

    /// When `cond` held, polled until `within`.
    async fn until(&self, within: Duration, cond: impl Fn(&Self) -> bool) -> Option<Instant> {
        self.seen(within, |t| cond(t).then_some(())).await.map(|(at, ())| at)
    }

    /// The first thing `look` saw, and when, polled until `within`: what is read where the
    /// change is seen, since the instance may move on by the next look.
    async fn seen<T>(&self, within: Duration, look: impl Fn(&Self) -> Option<T>) -> Option<(Instant, T)> {
        let at = Instant::now();
        loop {
            if let Some(seen) = look(self) {
                return Some((Instant::now(), seen));
            }
            if at.elapsed() >= within {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// The status once `pid` has ended by itself, within `within`, with how it ended as
    /// its reason: kept by the instance, as a restart after a short backoff clears the
    /// status's own reason sooner than a look on a busy machine may come (it did in CI,
    /// and the memory fault's check then saw an OOM kill reported as "").
    async fn ended(&self, pid: i32, within: Duration) -> Option<crate::instance::state::Status> {
        let look = |t: &Self| {
            let s = t.status();
            // Gone from the status too: its state then says what followed the end.
            let exit = s.last_exit.clone().filter(|e| e.pid == pid && s.pid != Some(pid))?;
            Some(crate::instance::state::Status { reason: exit.reason, ..s })
        };
        self.seen(within, look).await.map(|(_, s)| s)
    }

    fn signal(&self, sig: i32) -> Result<(), String> {
        crate::control::signal::send(self.sup, self.name, sig).map(|_| ()).map_err(|e| e.to_string())
    }

    /// Running for the next fault: started again when the last one left it down.
    async fn back_running(&self) -> Result<Arc<Live>, String> {
        if matches!(self.status().state, State::Stopped | State::Failed) {
            self.sup.start_plugin(self.name, READY_WITHIN).await.map_err(|e| format!("not started again: {e}"))?;
        }
        let up = |t: &Self| t.status().state == State::Running && t.live().is_some();
        match self.until(READY_WITHIN, up).await.and_then(|_| self.live()) {
            Some(live) => Ok(live),
            None => Err(format!("the instance did not run again: it is {}", self.p.describe_state())),
        }
    }

    async fn call(&self, call: &Exercise, timeout: Duration) -> Result<String, tonic::Status> {
        call_json(self.sup, self.name, &call.method, &call.json, timeout).await
    }
}

fn words(s: &tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

/// Killed with SIGKILL: a new instance should run, unless `restart = "never"`.
async fn kill9(t: &Target<'_>) -> Fault {
    let Some(before) = t.pid() else {
        return Fault::skipped("kill -9", "", format!("no instance runs: it is {}", t.p.describe_state()));
    };
    let at = Instant::now();
    // One that exited meanwhile has nothing to kill; the state then says why.
    let _ = t.signal(libc::SIGKILL);
    let after_failure = t.policy.after_failure;
    let settled = |t: &Target<'_>| {
        t.runs_other_than(before) || (!after_failure && matches!(t.status().state, State::Failed | State::Stopped))
    };
    let restarted = t.until(READY_WITHIN, settled).await.filter(|_| t.runs_other_than(before));
    verdict::kill9(&verdict::Kill9Seen {
        policy: t.policy,
        restarted: restarted.map(|r| r - at),
        waited: READY_WITHIN,
        state: t.p.describe_state(),
    })
}

/// SIGTERM while a call is in flight: the call should be answered and the plugin drain and
/// exit 0 within its stop_timeout. The call is made while the instance is held, so that
/// it is in the plugin's socket when the signal comes: a call the plugin's drain found
/// not yet sent would be refused (its GOAWAY), which is no cut call, and a call as quick as
/// echo's would otherwise seldom be in flight at all.
async fn sigterm(t: &Target<'_>, live: &Arc<Live>) -> Fault {
    const DONE: &str = "SIGTERM during a call";
    let Some(call) = t.call else {
        return Fault::skipped("SIGTERM", DONE, "no --call to have in flight");
    };
    let pid = live.pid;
    let stop_timeout = t.p.spec().stop_timeout;
    let held = match hold(live).await {
        Ok(h) => h,
        Err(e) => return Fault::skipped("SIGTERM", DONE, format!("not held: {e}")),
    };
    // Written to its connection before the call: what the supervisor writes past it (the
    // call's HEADERS and DATA, nothing else is under way) waits in the socket of the plugin,
    // stopped and reading nothing. Admitted alone, a call may not be written yet, and the
    // drain's GOAWAY would then refuse it: no call in flight.
    let written = live.written();
    let answered = std::sync::OnceLock::<Instant>::new();
    // Its answer may come only once the drain let it finish: stop_timeout past the signal.
    let within = ADMITTED_WITHIN + IN_THE_SOCKET + stop_timeout + SLACK;
    let answer = async {
        let answer = t.call(call, within).await;
        let _ = answered.set(Instant::now());
        answer
    };
    let signaller = async {
        let settled = |_: &Target<'_>| live.in_flight() > 0 || answered.get().is_some();
        t.until(ADMITTED_WITHIN, settled).await;
        if live.in_flight() == 0 {
            return Err(NotSignalled::NotAdmitted);
        }
        if t.until(IN_THE_SOCKET, |_| live.written() > written).await.is_none() {
            return Err(NotSignalled::NotInTheSocket);
        }
        let at = Instant::now();
        let signalled = t.signal(libc::SIGTERM);
        drop(held);
        signalled.map_err(NotSignalled::Signal)?;
        // Gone: its end kept as its last exit, as the supervisor saw it exit (before its
        // teardown). Not its live handle dropped: that goes as soon as its connection
        // closes, which a plugin may do well before it exits.
        let exited = t.until(stop_timeout + SLACK, |t| t.status().last_exit.is_some_and(|e| e.pid == pid)).await;
        Ok((at, exited.map(|e| e - at)))
    };
    let (answer, signalled) = tokio::join!(answer, signaller);
    let (signalled_at, exited) = match signalled {
        Ok(seen) => seen,
        Err(NotSignalled::NotAdmitted) => {
            return verdict::sigterm_not_in_flight(&call.method, answer.map(|_| ()).map_err(|s| words(&s)));
        }
        Err(NotSignalled::NotInTheSocket) => {
            return Fault::skipped(
                "SIGTERM",
                DONE,
                format!(
                    "the call was admitted but not written to the plugin's socket within {}: no call in flight to drain",
                    crate::config::units::format_duration(IN_THE_SOCKET)
                ),
            );
        }
        Err(NotSignalled::Signal(e)) => return Fault::skipped("SIGTERM", DONE, format!("not signalled: {e}")),
    };
    let in_flight = answer.map(|_| ()).map_err(|s| words(&s));
    if exited.is_none() {
        // Through its own signaller: stopping, it is no longer running for the operator's
        // `signal`. One that exited meanwhile has nothing to kill.
        let _ = live.signals.send(libc::SIGKILL);
    }
    let status = t.ended(pid, READY_WITHIN).await.unwrap_or_else(|| t.status());
    verdict::sigterm(&verdict::SigtermSeen {
        method: call.method.clone(),
        stop_timeout,
        in_flight,
        answered: answered.get().map(|a| a.saturating_duration_since(signalled_at)),
        exited,
        clean: exited.is_some() && status.reason.contains("exited with code 0"),
        ended: status.reason.clone(),
        policy: t.policy,
        restarted: matches!(status.state, State::Backoff | State::Starting | State::Running),
    })
}

/// Why the SIGTERM check sent no signal.
enum NotSignalled {
    /// The call was never admitted: it failed before (or was answered at once).
    NotAdmitted,
    /// Admitted, its request never reached the plugin's socket.
    NotInTheSocket,
    Signal(String),
}

/// A call whose deadline passes while the plugin holds it: DEADLINE_EXCEEDED, and the same
/// instance answers the next.
async fn deadline(t: &Target<'_>, live: &Arc<Live>) -> Fault {
    let Some(call) = t.call else {
        return Fault::skipped("deadline", "a call past its deadline", "no --call to make past its deadline");
    };
    let late = match hold(live).await {
        Ok(held) => {
            let answer = t.call(call, SHORT_DEADLINE).await;
            drop(held);
            answer
        }
        Err(e) => return Fault::skipped("deadline", "a call past its deadline", format!("not held: {e}")),
    };
    let after = t.call(call, ANSWER_WITHIN).await.map(|_| ()).map_err(|s| words(&s));
    let now = (t.status().state == State::Running).then(|| t.pid()).flatten();
    verdict::deadline(&verdict::DeadlineSeen {
        method: call.method.clone(),
        deadline: SHORT_DEADLINE,
        late: late.map(|_| ()).map_err(|s| (s.code(), s.message().to_owned())),
        after,
        pid: (live.pid, now),
    })
}

/// More calls at once than `max_in_flight` and `max_queued` take, while the instance holds
/// the admitted ones: the rest are shed at once with RESOURCE_EXHAUSTED.
async fn burst(t: &Target<'_>, live: &Arc<Live>, lowered: bool) -> Fault {
    let Some(call) = t.call else {
        return Fault::skipped("burst", "calls above max_in_flight", "no --call to make at once");
    };
    let limits = t.p.spec().protection;
    let room = (limits.max_in_flight + limits.max_queued) as usize;
    let fired = room + BURST_EXTRA;
    let shed_before = t.p.queue.shed();
    let held = match hold(live).await {
        Ok(h) => h,
        Err(e) => return Fault::skipped("burst", "calls above max_in_flight", format!("not held: {e}")),
    };
    let calls = futures_util::future::join_all((0..fired).map(|_| async {
        let at = Instant::now();
        let answer = t.call(call, ANSWER_WITHIN).await;
        (at.elapsed(), answer)
    }));
    let release = async {
        let shed = |t: &Target<'_>| t.p.queue.shed() - shed_before >= BURST_EXTRA as u64;
        t.until(Duration::from_secs(1), shed).await;
        drop(held);
    };
    let (answers, ()) = tokio::join!(calls, release);
    let mut seen = verdict::BurstSeen {
        max_in_flight: limits.max_in_flight,
        max_queued: limits.max_queued,
        lowered,
        fired,
        succeeded: 0,
        shed: 0,
        slowest_shed: Duration::ZERO,
        other: None,
    };
    for (took, answer) in answers {
        match answer {
            Ok(_) => seen.succeeded += 1,
            Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                seen.shed += 1;
                seen.slowest_shed = seen.slowest_shed.max(took);
            }
            Err(s) => {
                let other = seen.other.get_or_insert_with(|| (0, words(&s)));
                other.0 += 1;
            }
        }
    }
    verdict::burst(&seen)
}

fn mib(bytes: u64) -> String {
    format!("{:.1}M", bytes as f64 / f64::from(1 << 20))
}

/// Its memory limit put below what it uses: its end should be reported as an OOM kill, and
/// it restarted as its policy says. The limit is given back before it starts again.
async fn memory(t: &Target<'_>, live: &Arc<Live>) -> Fault {
    const WHAT: &str = "memory limit lowered below what the instance uses";
    let cgroup = t.p.instances().first().and_then(|i| i.cgroup.load_full());
    let Some(cg) = cgroup.filter(|_| t.p.spec().tier != crate::config::UNSANDBOXED) else {
        return Fault::skipped("memory limit", WHAT, "no memory limit without a cgroup");
    };
    let Some(used) = cg.stats().ok().and_then(|s| s.memory_current) else {
        return Fault::skipped("memory limit", WHAT, "the instance's cgroup has no memory controller here");
    };
    let pid = live.pid;
    let set = |limit: ByteSize| {
        let change = QuotaChange { memory_max: Some(Some(limit)), ..QuotaChange::default() };
        t.sup.change_quota(t.name, &change, true)
    };
    let pushed = match set(BELOW_ANY_PLUGIN) {
        Ok(_) => Ok(format!(
            "memory limit lowered to {BELOW_ANY_PLUGIN}, below the {} it used (a forced quota change)",
            mib(used)
        )),
        // cgroup v1 refuses a limit below what the cgroup uses (EBUSY: without swap its
        // anonymous memory cannot be reclaimed): the limit goes just above it, and calls
        // padded past that room take the plugin over it. Any other refusal is what it says.
        Err(SupervisorError::QuotaRefused { ref source, .. }) if source.raw_os_error() == Some(libc::EBUSY) => {
            match t.call {
                None => Err(Fault::skipped(
                    "memory limit",
                    WHAT,
                    "this host's memory controller (cgroup v1) refuses a limit below what the plugin uses, and without --call nothing makes it allocate past one",
                )),
                Some(call) => {
                    // What it uses now that the kernel reclaimed what it could.
                    let used = cg.stats().ok().and_then(|s| s.memory_current).unwrap_or(used);
                    let limit = ByteSize((used.div_ceil(1 << 20) << 20) + ROOM);
                    match set(limit) {
                        Ok(_) => {
                            let padded = (0..PADDED_CALLS)
                                .map(|_| call_json_padded(t.sup, t.name, &call.method, &call.json, PAD, ANSWER_WITHIN));
                            futures_util::future::join_all(padded).await;
                            Ok(format!(
                                "memory limit set to {limit}, just above the {} it used (cgroup v1 refuses one below), then {PADDED_CALLS} calls of {} padded with {} each",
                                mib(used),
                                call.method,
                                ByteSize(PAD as u64)
                            ))
                        }
                        Err(e) => Err(failed_to_set(e)),
                    }
                }
            }
        }
        Err(e) => Err(failed_to_set(e)),
    };
    let done = match pushed {
        Ok(done) => done,
        Err(fault) => {
            give_back(t);
            return fault;
        }
    };
    let gone = t.until(OOM_WITHIN, |t| t.pid() != Some(pid)).await;
    // At once, so that its next instance, however soon it starts, has the limit it had.
    give_back(t);
    // Not killed: nothing to wait for (it still runs, with its limit back).
    let reason = match gone {
        Some(_) => Some(t.ended(pid, READY_WITHIN).await.unwrap_or_else(|| t.status()).reason),
        None => None,
    };
    let restarted = match gone {
        Some(gone) if t.policy.after_failure => {
            t.until(READY_WITHIN, |t| t.runs_other_than(pid)).await.map(|r| r - gone)
        }
        _ => None,
    };
    verdict::memory(&verdict::MemorySeen { done, reason, policy: t.policy, restarted, state: t.p.describe_state() })
}

fn failed_to_set(e: SupervisorError) -> Fault {
    Fault {
        fault: "memory limit",
        done: "memory limit lowered below what the instance uses".into(),
        expected: "its end reported as an OOM kill".into(),
        happened: format!("the limit could not be changed: {e}"),
        outcome: verdict::Outcome::Failed,
        ms: None,
    }
}

/// The plugin's own memory limit again.
fn give_back(t: &Target<'_>) {
    let change = QuotaChange { memory_max: Some(None), ..QuotaChange::default() };
    if let Err(e) = t.sup.change_quota(t.name, &change, false) {
        tracing::warn!(plugin = t.name, error = %e, "onboard: cannot give the plugin its memory limit back");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_held_once_every_thread_of_it_is_stopped() {
        // Killed and reaped however the test ends.
        struct Reaped(std::process::Child);
        impl Drop for Reaped {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let child = Reaped(std::process::Command::new("sleep").arg("30").spawn().unwrap());
        let pid = i32::try_from(child.0.id()).unwrap();
        assert!(!all_threads_stopped(pid), "a running process is not held");
        // SAFETY: signalling the child this test started.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
        let within = Instant::now() + Duration::from_secs(5);
        while !all_threads_stopped(pid) {
            assert!(Instant::now() < within, "not seen stopped");
            std::thread::sleep(Duration::from_millis(1));
        }
        // SAFETY: as above.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
        let within = Instant::now() + Duration::from_secs(5);
        while all_threads_stopped(pid) {
            assert!(Instant::now() < within, "still seen stopped after SIGCONT");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
