//! Plugin instances over their whole life: spawn, handshake, init, serve,
//! exit, restart, stop — one task per instance, driven by the operator's
//! desired state.

pub mod backoff;
mod contract;
pub mod error;
pub mod handshake;
pub mod host;
mod images;
pub mod launcher;
mod proof;
mod revision;
mod runner;
mod running;
pub mod said;
pub mod sandboxed;
pub mod signal;
mod start;
pub mod state;
mod stop;
mod teardown;
mod written;

#[cfg(test)]
pub(crate) mod fake;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use plugin_proto::transport::H2Channel;
use tokio::sync::watch;

use crate::config::{PluginSpec, QuotaConfig};
use crate::observe::logs::LogBuffer;
pub use contract::Contract;
pub use revision::Revision;
pub(crate) use runner::run;
pub(crate) use running::Disconnect;
use state::{State, Status};
pub use stop::TERM_GRACE;

/// What the operator wants of a plugin. Every command bumps `generation`,
/// which is how a running instance learns it must act.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Desired {
    pub run: bool,
    pub generation: u64,
    /// The generation of the last stop or restart (0: none). A number, not a flag on
    /// the latest command: the channel keeps only the latest, and a start landing after
    /// a restart or a stop, before an instance saw either, would otherwise erase it
    /// (a stop and a start then make a restart).
    pub interrupted: u64,
}

impl Desired {
    /// The operator has stopped or restarted the plugin since command `current` (a
    /// start meanwhile leaves what runs, or a start under way, to go on).
    pub fn commanded_since(&self, current: u64) -> bool {
        self.generation != current && (!self.run || self.interrupted > current)
    }
}

/// A live instance, ready for calls.
///
/// Before an instance is asked to drain, every call already routed to it must have gone
/// out: its drain answers GOAWAY and then closes the connection, and a request written
/// after that close fails with a broken pipe, not as a refusal the router may send
/// elsewhere. So a call is admitted before it is sent ([`Live::admit`]), and the instance
/// is closed to new ones, and its admitted calls waited for until they reached the plugin
/// (their answers begun), before it drains ([`Live::close`]). Not until they ended: a
/// drain lets the streams the plugin took run on, and a long stream hears of the drain
/// (the SDK's shutdown signal) only once it is asked for.
#[derive(Debug)]
pub struct Live {
    pub channel: H2Channel,
    pub pid: i32,
    /// Admitted calls not yet answered (or failed).
    admitted: std::sync::atomic::AtomicUsize,
    /// Admitted calls whose answer has not begun: the plugin may not have their request.
    unsent: std::sync::atomic::AtomicUsize,
    closing: std::sync::atomic::AtomicBool,
    /// What its plugin says of its own health while it runs (its `grpc.health.v1`
    /// status, kept by its health follower): calls go around an instance that says
    /// NOT_SERVING (see [`crate::routing::limit`]).
    serving: Arc<std::sync::atomic::AtomicBool>,
    /// The plugin's queue of calls waiting for a place ([`crate::routing::limit`]), told
    /// when a call ends.
    queue: Option<Arc<crate::routing::limit::Queue>>,
    /// What sends the operator's signals to its process while it is ready.
    pub signals: signal::Armed,
    /// Bytes the supervisor has written to its connection (fd 3) so far.
    written: Arc<std::sync::atomic::AtomicU64>,
    /// Told when a call finds its connection closed to new calls.
    disconnect: Disconnect,
}

/// Why an instance did not admit a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotAdmitted {
    /// It works on as many calls as it may.
    Full,
    /// It is closing for its drain.
    Closing,
}

impl Live {
    pub fn new(channel: H2Channel, pid: i32) -> Self {
        Self {
            channel,
            pid,
            admitted: Default::default(),
            unsent: Default::default(),
            closing: Default::default(),
            serving: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            queue: None,
            signals: signal::Armed::default(),
            written: Default::default(),
            disconnect: Default::default(),
        }
    }

    /// Tells `disconnect` when a call finds its connection closed (see [`Live::closed`]).
    pub fn with_disconnect(mut self, disconnect: Disconnect) -> Self {
        self.disconnect = disconnect;
        self
    }

    /// A call to it failed with `e`: when that says its connection takes no more calls,
    /// the instance is done for, whatever its process does.
    pub fn call_failed(&self, e: &plugin_proto::transport::ChannelError) {
        if e.closed() {
            self.disconnect.say(e.failed(), || format!("a call found its connection closed: {e}"));
        }
    }

    /// Counts what is written to its connection in `written` (see [`Live::written`]).
    pub fn with_written(mut self, written: Arc<std::sync::atomic::AtomicU64>) -> Self {
        self.written = written;
        self
    }

    /// Bytes written to its connection so far: what grows past a reading while its process
    /// is stopped waits in its socket.
    pub fn written(&self) -> u64 {
        self.written.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The operator's signals reach its process through `signaller` (see [`signal`]).
    pub fn with_signaller(mut self, signaller: Option<signal::Signaller>) -> Self {
        self.signals = signal::Armed::new(signaller);
        self
    }

    /// Whether its plugin says it serves: one atomic load, on every call's pick.
    pub fn says_serving(&self) -> bool {
        self.serving.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The flag [`Live::says_serving`] reads, for the follower of its health to set.
    pub fn serving_flag(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.serving.clone()
    }

    /// Its calls' ends wake the plugin's queued calls.
    pub fn with_queue(mut self, queue: Arc<crate::routing::limit::Queue>) -> Self {
        self.queue = Some(queue);
        self
    }

    /// Admitted calls not yet answered: what it works on now.
    pub fn in_flight(&self) -> usize {
        self.admitted.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Admits one call, until the returned guard goes; None once the instance closes.
    pub fn admit(self: &Arc<Self>) -> Option<Admitted> {
        self.admit_within(usize::MAX).ok()
    }

    /// Admits one call when fewer than `limit` are admitted, until the returned guard goes.
    pub fn admit_within(self: &Arc<Self>, limit: usize) -> Result<Admitted, NotAdmitted> {
        use std::sync::atomic::Ordering::SeqCst;
        // Never counted past the limit, not even for a moment: a call that then found it
        // full would wrongly be turned to the queue, and giving the count back would have to
        // wake a waiter (which, retrying, would wake itself).
        let mut n = self.admitted.load(SeqCst);
        loop {
            if n >= limit {
                return Err(NotAdmitted::Full);
            }
            match self.admitted.compare_exchange_weak(n, n + 1, SeqCst, SeqCst) {
                Ok(_) => break,
                Err(now) => n = now,
            }
        }
        self.unsent.fetch_add(1, SeqCst);
        // Paired with `close`: either this sees `closing`, or `close` sees the count. A
        // closing instance takes no calls, so nobody waits for the place given back.
        if self.closing.load(SeqCst) {
            self.unsent.fetch_sub(1, SeqCst);
            self.admitted.fetch_sub(1, SeqCst);
            return Err(NotAdmitted::Closing);
        }
        Ok(Admitted { live: self.clone(), unsent: true })
    }

    /// Admits no more calls, and waits (at most `within`) until the admitted ones have
    /// reached the plugin, their answers begun: they were sent before the drain begins,
    /// and from there the plugin's own drain lets them finish. Returns how long it waited:
    /// nothing when no call was on its way.
    pub async fn close(&self, within: Duration) -> Duration {
        use std::sync::atomic::Ordering::SeqCst;
        self.closing.store(true, SeqCst);
        if self.unsent.load(SeqCst) == 0 {
            return Duration::ZERO;
        }
        let began = tokio::time::Instant::now();
        let deadline = began + within;
        while self.unsent.load(SeqCst) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        began.elapsed()
    }
}

/// One admitted call to a [`Live`] instance.
#[derive(Debug)]
pub struct Admitted {
    live: Arc<Live>,
    /// Its answer has not begun ([`Admitted::sent`] not called).
    unsent: bool,
}

impl Admitted {
    /// The plugin's answer began (its headers came): the plugin has the call, and a
    /// drain no longer needs to wait for it to go out. Its place within `max_in_flight`
    /// is kept until the guard goes.
    pub fn sent(&mut self) {
        if std::mem::replace(&mut self.unsent, false) {
            self.live.unsent.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.sent();
        self.live.admitted.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        if let Some(q) = &self.live.queue {
            q.released();
        }
    }
}

/// One replica slot of a revision.
#[derive(Debug)]
pub struct Instance {
    pub id: String,
    /// The revision it belongs to.
    pub revision: u64,
    pub status: Mutex<Status>,
    pub live: ArcSwapOption<Live>,
    /// The cgroup leaf of the process while it exists, for sampling and
    /// live quota changes.
    pub cgroup: ArcSwapOption<crate::sandbox::cgroup::Instance>,
    /// Bumped on every status change; shared by the plugin's instances so
    /// waiters wake on any of them instead of polling.
    changed: Arc<watch::Sender<u64>>,
}

impl Instance {
    /// Its process is gone and its cgroup removed (or left for cleanup). The sampler reads
    /// an instance it keeps only when it is due, seconds apart among many: told, it walks
    /// again at its next round and clears the usage and leak notes of the process gone.
    pub(crate) fn process_gone(&self) {
        self.cgroup.store(None);
        instances_changed();
    }

    pub fn status(&self) -> Status {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Its state alone, without a copy of the whole status.
    pub fn state(&self) -> State {
        self.with_status(|s| s.state)
    }

    /// What `f` takes from its status, without a copy of the rest (its strings lie on
    /// pages of their own: the sampler, reading a thousand instances, paid for each).
    pub fn with_status<R>(&self, f: impl FnOnce(&Status) -> R) -> R {
        match self.status.lock() {
            Ok(s) => f(&s),
            Err(_) => f(&Status::default()),
        }
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut Status)) {
        if let Ok(mut s) = self.status.lock() {
            f(&mut s);
        }
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// How many times, in this process, a plugin's revisions came or went, a plugin joined or
/// left a supervisor's set, or an instance's process ended: the sampler walks the plugins
/// for their instances again only once it moved (a walk touches every plugin's and
/// instance's memory: walking every second was most of an idle daemon's CPU with a
/// thousand instances). One count for the process, which embedded supervisors share: a
/// move for another costs a walk, never a missed instance.
static INSTANCES_CHANGED: AtomicU64 = AtomicU64::new(0);

/// Says that instances came or went, or a process of one ended; after the change is in
/// place, so a walk that read the count before it walks again.
pub(crate) fn instances_changed() {
    INSTANCES_CHANGED.fetch_add(1, Ordering::Release);
}

/// The count [`instances_changed`] moves.
pub(crate) fn instances_generation() -> u64 {
    INSTANCES_CHANGED.load(Ordering::Acquire)
}

/// A configured plugin: its revisions and their instances, and what the operator said
/// of it.
#[derive(Debug)]
pub struct Plugin {
    pub name: String,
    pub desired: watch::Sender<Desired>,
    pub logs: Arc<LogBuffer>,
    /// Quotas the operator set at run time (persisted), over the config's.
    pub overrides: ArcSwap<QuotaConfig>,
    /// Held while a quota change is applied, so changes do not interleave.
    pub(crate) quota_lock: Mutex<()>,
    /// Held while a reload runs: one at a time per plugin.
    pub(crate) reload_lock: Arc<tokio::sync::Mutex<()>>,
    /// The revision taking calls.
    serving: ArcSwap<Revision>,
    /// While a canary rollout runs: the revision it moves calls to, and their share.
    split: ArcSwapOption<crate::routing::split::Split>,
    /// The last rollout (running, or how it ended).
    rollout: ArcSwapOption<crate::rollout::Rollout>,
    /// Every revision that has instances: the serving one, a reload's new one while it is
    /// checked, old ones while they drain.
    revisions: Mutex<Vec<Arc<Revision>>>,
    /// Instance ids are `<name>-<n>`, unique across revisions.
    next_instance: AtomicUsize,
    next_revision: AtomicU64,
    changed: Arc<watch::Sender<u64>>,
    /// Its processes not yet torn down, across revisions.
    pub(crate) alive: Arc<AtomicUsize>,
    /// Calls waiting for a place within `max_in_flight`, across its instances.
    pub queue: Arc<crate::routing::limit::Queue>,
    /// Its circuit breaker, shared by the gateway and every embedded channel.
    pub breaker: crate::routing::breaker::Breaker,
    /// Messages refused for their size.
    pub too_large: crate::routing::size::TooLarge,
    /// The gateway's routes while the gateway routes to it: they list the services of
    /// its revisions that take calls, set again whenever those change (see `reroute`).
    routes: ArcSwapOption<crate::routing::table::RouteTable>,
    /// Held while its routes are set, so that two settings do not cross.
    route_lock: Mutex<()>,
}

impl Plugin {
    pub fn new(spec: PluginSpec, log_lines: usize) -> Self {
        let changed = Arc::new(watch::channel(0).0);
        let next_instance = AtomicUsize::new(0);
        let desired = watch::channel(Desired { run: spec.autostart, generation: 0, interrupted: 0 }).0;
        let first = Arc::new(Revision::new(1, Arc::new(spec), &next_instance, &changed));
        Self {
            name: first.spec().name.clone(),
            breaker: crate::routing::breaker::Breaker::new(&first.spec().name),
            desired,
            logs: Arc::new(LogBuffer::new(&first.spec().name, log_lines, first.spec().log_limit)),
            overrides: ArcSwap::from_pointee(QuotaConfig::default()),
            quota_lock: Mutex::new(()),
            reload_lock: Arc::default(),
            serving: ArcSwap::new(first.clone()),
            split: ArcSwapOption::empty(),
            rollout: ArcSwapOption::empty(),
            revisions: Mutex::new(vec![first]),
            next_instance,
            next_revision: AtomicU64::new(2),
            changed,
            alive: Arc::default(),
            queue: Arc::default(),
            too_large: Default::default(),
            routes: ArcSwapOption::empty(),
            route_lock: Mutex::new(()),
        }
    }

    /// The gateway routes to it by `routes` from now on (None: no longer; its services
    /// are released).
    pub(crate) fn route_by(&self, routes: Option<Arc<crate::routing::table::RouteTable>>) {
        let _one = self.route_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(old) = self.routes.swap(routes) {
            old.release(&self.name);
        }
        drop(_one);
        self.reroute();
    }

    /// Sets its routes to the services its revisions that take calls declared: the
    /// serving one and a rollout's canary. A revision being checked, refused, or draining
    /// adds nothing, so no call reaches a plugin through a service only such a revision
    /// declared, and one a new revision dropped stops being its at the switch.
    pub(crate) fn reroute(&self) {
        let one = self.route_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.reroute_holding(&one);
    }

    /// [`Plugin::reroute`], for a caller that holds the route lock: it changes what the
    /// routes are computed from and must not have that seen half done.
    fn reroute_holding(&self, _one: &std::sync::MutexGuard<'_, ()>) {
        let Some(routes) = self.routes.load_full() else { return };
        let canary = self.split().map(|s| s.canary.clone());
        let mut services: Vec<String> = Vec::new();
        for rev in [Some(self.serving()), canary].into_iter().flatten() {
            if let Some(contract) = rev.contract.load_full() {
                for s in &contract.services {
                    if !services.contains(s) {
                        services.push(s.clone());
                    }
                }
            }
        }
        routes.set(&self.name, &services);
    }

    /// Whether `peer` is one of its live instances: of the uid a revision of it runs as
    /// now (never a host account's, which others share), and inside that revision's
    /// instances' cgroups (which a host process with the same uid, a systemd
    /// `DynamicUser` service given one from the same range, is not).
    pub fn runs(&self, peer: &crate::routing::callers::Peer) -> bool {
        let revisions = self.revisions();
        let mut ours = revisions.iter().filter(|r| {
            let spec = r.spec();
            !spec.uid_shared && spec.ids.0 == peer.uid
        });
        let Some(first) = ours.next() else { return false };
        let Some(cgroups) = peer.cgroups() else { return false };
        std::iter::once(first)
            .chain(ours)
            .flat_map(|r| r.instances.iter())
            .any(|i| i.cgroup.load().as_ref().is_some_and(|c| c.holds(cgroups)))
    }

    /// `inst` takes calls through `live` from now on. Calls queued for a place try it
    /// at once: a place on a new instance is as good as one given back.
    pub(crate) fn went_live(&self, inst: &Instance, live: Live) {
        inst.live.store(Some(Arc::new(live.with_queue(self.queue.clone()))));
        self.queue.more_room();
    }

    /// `rev`'s instance declared `contract` at its handshake.
    pub(crate) fn declared(&self, rev: &Revision, contract: Arc<Contract>) {
        rev.contract.store(Some(contract));
        self.reroute();
    }

    /// Whether its circuit is closed: calls go to it (as opposed to failing fast after a run
    /// of failures, or waiting for a probe's verdict). One atomic load.
    pub fn circuit_closed(&self) -> bool {
        self.breaker.is_closed()
    }

    /// The revision taking calls.
    pub fn serving(&self) -> Arc<Revision> {
        self.serving.load_full()
    }

    /// The config entry of the revision taking calls.
    pub fn spec(&self) -> Arc<PluginSpec> {
        self.serving.load().spec()
    }

    /// The contract the serving revision declared.
    pub fn contract(&self) -> Option<Arc<Contract>> {
        self.serving.load().contract.load_full()
    }

    /// Every instance of every revision, the serving revision's first.
    pub fn instances(&self) -> Vec<Arc<Instance>> {
        let serving = self.serving();
        let mut all: Vec<Arc<Instance>> = serving.instances.clone();
        for r in self.revisions.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter() {
            if r.number != serving.number {
                all.extend(r.instances.iter().cloned());
            }
        }
        all
    }

    /// The revisions with instances, oldest first.
    pub fn revisions(&self) -> Vec<Arc<Revision>> {
        self.revisions.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// A new revision for `spec`, with instances (not yet started) and ids of their own;
    /// it takes no calls until [`Plugin::promote`].
    pub(crate) fn new_revision(&self, spec: Arc<PluginSpec>) -> Arc<Revision> {
        let number = self.next_revision.fetch_add(1, Ordering::Relaxed);
        let rev = Arc::new(Revision::new(number, spec, &self.next_instance, &self.changed));
        self.revisions.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(rev.clone());
        instances_changed();
        rev
    }

    /// The last rollout since the supervisor started (or the one it found interrupted).
    pub fn rollout(&self) -> Option<Arc<crate::rollout::Rollout>> {
        self.rollout.load_full()
    }

    pub(crate) fn set_rollout(&self, ro: Arc<crate::rollout::Rollout>) {
        self.rollout.store(Some(ro));
    }

    pub(crate) fn clear_rollout(&self) {
        self.rollout.store(None);
    }

    /// The canary split in force, if a rollout runs.
    pub fn split(&self) -> Option<Arc<crate::routing::split::Split>> {
        self.split.load_full()
    }

    /// `share` percent of calls go to `canary` from now on (None: every call goes to the
    /// serving revision).
    pub(crate) fn set_split(&self, split: Option<(&Arc<Revision>, u8)>) {
        self.split.store(split.map(|(rev, share)| Arc::new(crate::routing::split::Split::new(rev.clone(), share))));
        self.reroute();
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
        // Queued calls may find a place on the canary now.
        self.queue.more_room();
    }

    /// Calls go to `rev` from now on (and none to a canary); its log limit is the plugin's.
    pub(crate) fn promote(&self, rev: &Arc<Revision>) {
        self.logs.set_limit(rev.spec().log_limit);
        // Both switches under the route lock: a reroute from elsewhere between them would
        // see the old revision serving with no canary, and drop the services only `rev`
        // declares while it takes calls.
        let one = self.route_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Serving first: a call placed between the two (without the lock) then finds `rev`
        // serving, or `rev` as the canary, never the old revision alone.
        self.serving.store(rev.clone());
        self.split.store(None);
        self.reroute_holding(&one);
        drop(one);
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
        // Queued calls find their places on the revision now serving.
        self.queue.more_room();
    }

    /// Forgets `rev` once its instances are gone (its image goes with it).
    pub(crate) fn forget(&self, rev: &Revision) {
        self.revisions.lock().unwrap_or_else(std::sync::PoisonError::into_inner).retain(|r| r.number != rev.number);
        instances_changed();
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The quotas an instance of the serving revision starts with now.
    pub fn quota(&self, tier: Option<&crate::sandbox::tier::Quota>) -> QuotaConfig {
        self.serving.load().quota(tier, &self.overrides.load())
    }

    /// A ready instance of the serving revision, round robin.
    pub fn pick(&self) -> Option<Arc<Live>> {
        self.serving.load().pick()
    }

    /// A ready instance of the serving revision other than `not` (for the one retry of a
    /// call an instance refused).
    pub fn pick_other(&self, not: &Live) -> Option<Arc<Live>> {
        self.serving.load().pick_other(not)
    }

    /// Each instance of the serving revision: its state, id, and state as said.
    fn each_state(&self) -> Vec<(State, String, String)> {
        let serving = self.serving.load();
        serving
            .instances
            .iter()
            .map(|i| {
                let st = i.status();
                (st.state, i.id.clone(), st.describe())
            })
            .collect()
    }

    /// "running", or the instances' state with its reason, for answers to the operator
    /// and messages about why the plugin cannot take a call. Replicas in different states
    /// are each named, after the state furthest from running and how many are in it:
    /// "failed (1 of 2): echo-0 running, echo-1 failed (refused: ...)". The first word
    /// then says whether every instance came up (`supervisorctl start` exits on it); the
    /// first instance's alone said "running" with its replica failed.
    pub fn describe_state(&self) -> String {
        let each = self.each_state();
        let Some((_, _, first)) = each.first() else { return "without instances".into() };
        if each.iter().all(|(_, _, said)| said == first) {
            return first.clone();
        }
        let worst =
            each.iter().map(|(state, ..)| *state).max_by_key(|s| s.distance_from_running()).unwrap_or(State::Running);
        let count = each.iter().filter(|(state, ..)| *state == worst).count();
        let named: Vec<String> = each.iter().map(|(_, id, said)| format!("{id} {said}")).collect();
        format!("{worst} ({count} of {}): {}", each.len(), named.join(", "))
    }

    /// The answer to a stop: "stopped" once no instance runs, its instances that had
    /// failed before the stop (and stay failed, for the operator) named after it:
    /// "stopped (1 of 2 had failed): echo-0 stopped (stopped by request), echo-1 failed
    /// (...)". Led by "failed", as [`Plugin::describe_state`] leads, a stop that stopped
    /// all there was to stop made `supervisorctl stop` exit 1. Else as `describe_state`.
    pub fn describe_stopped(&self) -> String {
        let each = self.each_state();
        let failed = each.iter().filter(|(state, ..)| *state == State::Failed).count();
        if failed == 0 || !each.iter().all(|(state, ..)| matches!(state, State::Stopped | State::Failed)) {
            return self.describe_state();
        }
        let named: Vec<String> = each.iter().map(|(_, id, said)| format!("{id} {said}")).collect();
        format!("stopped ({failed} of {} had failed): {}", each.len(), named.join(", "))
    }

    /// Records a command; returns its generation.
    /// Whether the operator (or `autostart`) wants it running now.
    pub fn wants_running(&self) -> bool {
        self.desired.borrow().run
    }

    pub fn set_desired(&self, run: bool, restart: bool) -> u64 {
        let mut generation = 0;
        self.desired.send_modify(|d| {
            d.run = run;
            d.generation += 1;
            if restart || !run {
                d.interrupted = d.generation;
            }
            generation = d.generation;
        });
        generation
    }

    /// Waits until every instance of the serving revision has acted on command
    /// `generation` and is in one of `states`, or the timeout; true when reached.
    pub async fn wait_for(&self, generation: u64, states: &[State], timeout: Duration) -> bool {
        self.wait_until(timeout, |p| p.reached(generation, states)).await
    }

    /// Whether every instance of the serving revision has acted on command `generation`
    /// and is in one of `states`.
    pub fn reached(&self, generation: u64, states: &[State]) -> bool {
        self.serving.load().instances.iter().all(|i| {
            let s = i.status();
            s.generation >= generation && states.contains(&s.state)
        })
    }

    /// Whether a start or restart came after command `generation`: the plugin is wanted
    /// running again, whatever that command asked.
    pub fn restarted_since(&self, generation: u64) -> bool {
        let d = *self.desired.borrow();
        d.run && d.generation > generation
    }

    /// Waits until `cond` holds (checked whenever an instance's status changes), or the
    /// timeout; true when it holds.
    pub async fn wait_until(&self, timeout: Duration, cond: impl Fn(&Plugin) -> bool) -> bool {
        let mut rx = self.changed.subscribe();
        let waited = tokio::time::timeout(timeout, async {
            loop {
                rx.borrow_and_update();
                if cond(self) || rx.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        waited.is_ok() && cond(self)
    }
}
