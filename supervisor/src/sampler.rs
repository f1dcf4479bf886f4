//! Each running instance's cgroup is read, once a second while there are few: status
//! shows the usage, hitting the task limit or being throttled to the CPU quota
//! becomes an event, and the leak watch takes the reading (and the
//! supervisor's own). The periodic timer also keeps the runtime's timer
//! wheel awake, so per-call deadline timers do not have to wake it.
//!
//! The reads are the sampler's cost, a dozen files per instance: with many instances
//! each is read less often ([`interval`]), so a daemon with a thousand stays near idle.
//! On some hosts memory idle for a second costs microseconds a page to touch again, so
//! what a reading touches counts too: an instance's control files are found once per
//! cgroup and kept in its entry ([`StatFiles`]), and a reading names its instance by its
//! place, not by a copy of its id.
//! Finding which instances there are is a cost too: a walk over every plugin, revision
//! and instance touches memory no call has touched since, and at a thousand instances a
//! walk each second was most of an idle daemon's CPU. The instances found are kept, and
//! walked for again only after instances came or went ([`Walks`]): each round reads
//! those due from what the last walk found. An instance with no process is looked at
//! each round (its cgroup may come back), so many stopped instances still cost a touch
//! each a second.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use crate::instance::state::State;
use crate::instance::{Instance, Plugin, Revision};
use crate::leaks::probe::{Nofile, ProcReading};
use crate::leaks::watch::MAX_POINTS;
use crate::observe::events::EventKind;
use crate::sandbox::cgroup::{StatFiles, Stats};
use crate::supervisor::Shared;

const PERIOD: Duration = Duration::from_secs(1);
/// About how many instances are read per second once there are more than this: each
/// is then read every `instances / READS_PER_SECOND` seconds, but never less often than
/// its leak watch can use (see [`interval`]).
const READS_PER_SECOND: u32 = 100;

/// How often an instance is read among `instances`, watched for leaks over `window`:
/// every [`PERIOD`] while there are at most [`READS_PER_SECOND`]; past that, spread so
/// that about that many are read per second, but at least as often as the leak watch
/// judges points (a window over [`MAX_POINTS`]): a short window keeps its detail
/// whatever the count. The supervisor's own reading, watched over `leak_window`, is
/// spread the same way (its descriptor table grows with the instances).
pub(crate) fn interval(instances: usize, window: Duration) -> Duration {
    let spread = PERIOD.saturating_mul(u32::try_from(instances).unwrap_or(u32::MAX)) / READS_PER_SECOND;
    let points = window / u32::try_from(MAX_POINTS).unwrap_or(u32::MAX);
    PERIOD.max(spread.min(points))
}
/// Whether an instance whose next reading is `next_read` is read at the tick at `now`.
/// Half a period of slack: a tick that fires a little before the reading is due must not
/// push it to the next round (read every second would become read every two).
fn due(next_read: Option<Instant>, now: Instant) -> bool {
    next_read.is_none_or(|at| at <= now + PERIOD / 2)
}

/// Whether the plugins are walked for their instances this round: the first round, and
/// any after instances came or went ([`crate::instance::instances_changed`]).
#[derive(Default)]
struct Walks {
    /// The count as the last walk began.
    walked: Option<u64>,
}

impl Walks {
    /// Whether a walk is due when the count is at `generation`; if so, it is taken as done.
    fn due(&mut self, generation: u64) -> bool {
        let due = self.walked != Some(generation);
        self.walked = Some(generation);
        due
    }
}

/// At most one throttling event per instance in this long.
const THROTTLE_EVENT_GAP: Duration = Duration::from_secs(30);

/// How long a process's descriptor limit, once read, is taken as it was. Asked every
/// reading, it was a tenth of an idle daemon's CPU with a thousand instances where root
/// lacks `CAP_SYS_RESOURCE` (`prlimit` on a plugin running as another user is then
/// refused, and `/proc/PID/limits` read instead). A sampled instance runs under a tier,
/// which sets its soft and hard limits alike before exec: the plugin may lower its soft
/// limit and raise it back, no further. The limit serves only the leak watch's estimate
/// of when descriptors reach it, so a change seen up to a minute late is a small error.
const NOFILE_REREAD: Duration = Duration::from_secs(60);

/// An instance as the last walk found it: held weakly, so that the sampler keeps no
/// plugin, revision (its image) or instance past its time.
struct Tracked {
    plugin: Weak<Plugin>,
    revision: Weak<Revision>,
    instance: Weak<Instance>,
}

impl Tracked {
    fn upgrade(&self) -> Option<(Arc<Plugin>, Arc<Revision>, Arc<Instance>)> {
        Some((self.plugin.upgrade()?, self.revision.upgrade()?, self.instance.upgrade()?))
    }
}

#[derive(Default)]
struct Seen {
    /// The instance's id.
    id: String,
    /// Where it is, from the last walk that found it.
    tracked: Option<Tracked>,
    /// The cgroup the counters below were read from, none since its last process ended.
    /// Held weakly: it keeps the allocation (so another cgroup is never taken for it), not
    /// the cgroup.
    cgroup: Option<Weak<crate::sandbox::cgroup::Instance>>,
    /// The control files a reading of that cgroup takes, found when it was first read.
    files: Option<Arc<StatFiles>>,
    pids_max_hits: u64,
    nr_throttled: u64,
    last_throttle_event: Option<Instant>,
    /// When it is to be read next (at once when new).
    next_read: Option<Instant>,
    /// How often it is read, as its last reading set (none yet: every round).
    every: Duration,
    /// Its process's descriptor limit as last read, and when.
    nofile: Option<(Nofile, Instant)>,
    /// Whether it was running (its handshake done) when this round's reading began. Its
    /// process joins its cgroup before the spawner sets the tier's limits and execs: a
    /// limit read before then would be the daemon's.
    running: bool,
}

impl Seen {
    /// The instance is read from `cg` this round. Each start of an instance makes its cgroup
    /// anew, with counters from zero: one restarted between two rounds (a crash restarted
    /// after the default 200 ms, an operator's `restart`, a round every few seconds among
    /// many instances) is never seen without a cgroup, and compared with its last process's
    /// counts it said no refused fork and no throttling until it had outdone them.
    fn reading(&mut self, cg: &Arc<crate::sandbox::cgroup::Instance>) {
        if !self.cgroup.as_ref().is_some_and(|seen| std::ptr::eq(seen.as_ptr(), Arc::as_ptr(cg))) {
            self.cgroup = Some(Arc::downgrade(cg));
            self.files = Some(Arc::new(cg.stat_files()));
            self.pids_max_hits = 0;
            self.nr_throttled = 0;
            self.nofile = None;
        }
    }

    /// Its process is gone (no cgroup): what was read of it goes, and it is looked at each
    /// round until it runs again. Whether anything was read of it (the first time since).
    fn process_gone(&mut self) -> bool {
        let read = self.cgroup.is_some();
        *self = Seen { id: std::mem::take(&mut self.id), tracked: self.tracked.take(), ..Seen::default() };
        read
    }

    /// [`Seen::process_gone`], and once for each process, its usage and leak notes leave
    /// its status and its leak watch its series.
    fn stopped(&mut self, shared: &Shared, leaks: &mut crate::leaks::sampling::Watches, inst: &Instance) {
        if !self.process_gone() {
            return;
        }
        leaks.stopped(shared, inst);
        // No process, no usage: what the last one used is not kept.
        if inst.with_status(|st| st.usage.is_some() || !st.leaks.is_empty()) {
            inst.update(|st| {
                st.usage = None;
                st.usage_read_at = None;
                st.leaks.clear();
            });
        }
    }

    /// This round reads the instance from `cg`, in `state`: the descriptor limit to take
    /// instead of reading it again, if any.
    fn begin(&mut self, cg: &Arc<crate::sandbox::cgroup::Instance>, state: State, now: Instant) -> Option<Nofile> {
        self.reading(cg);
        self.running = state == State::Running;
        self.known_nofile(now)
    }

    /// The descriptor limit to take at `now` instead of reading it again: one read less
    /// than [`NOFILE_REREAD`] ago.
    fn known_nofile(&self, now: Instant) -> Option<Nofile> {
        self.nofile.filter(|(_, at)| now.saturating_duration_since(*at) < NOFILE_REREAD).map(|(n, _)| n)
    }

    /// Keeps the limit `read` found at `now`, when it was read then (of a single process
    /// that was running, not taken from what was known). None found (unlimited, or not
    /// read: the process going, the daemon out of descriptors) is asked again next time.
    fn nofile_read(&mut self, read: &ProcReading, now: Instant) {
        let ([pid], Some(limit)) = (&read.procs[..], read.nofile) else { return };
        if !self.running || self.known_nofile(now).is_some_and(|k| k.pid == *pid) {
            return;
        }
        self.nofile = Some((Nofile { pid: *pid, limit }, now));
    }

    /// The forks refused since the last reading, when there are any, from the cgroup's
    /// count of them (`hits`).
    fn refused_forks(&mut self, hits: u64) -> Option<u64> {
        let new = hits.checked_sub(self.pids_max_hits).filter(|n| *n > 0);
        self.pids_max_hits = hits;
        new
    }
}

pub(crate) async fn run(shared: Arc<Shared>, own_leak_window: Duration) {
    let mut seen: Vec<Seen> = Vec::new();
    let mut leaks = crate::leaks::sampling::Watches::new(own_leak_window);
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut shutdown = shared.shutdown.subscribe();
    let (mut walks, mut count) = (Walks::default(), 0);
    let mut own_next: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let now = Instant::now();
        if walks.due(crate::instance::instances_generation()) {
            count = walk(&shared, &mut seen, &mut leaks);
        }
        // Every file read of the round (cgroup counters, each instance's descriptor table,
        // the supervisor's own, which holds a descriptor per caller's connection) is made
        // off the runtime's one thread, so calls never wait behind it.
        // Only the instances due are read this round; the others keep their last reading.
        // What a reading needs is kept in its entry (its files, found once per cgroup), and
        // it is named by its place: each piece of memory touched seconds apart is paid for.
        let mut jobs: Vec<Job> = Vec::new();
        for (at, s) in seen.iter_mut().enumerate() {
            if !due(s.next_read, now) {
                continue;
            }
            let Some(inst) = s.tracked.as_ref().and_then(|t| t.instance.upgrade()) else { continue };
            let cg = inst.cgroup.load();
            let Some(cg) = cg.as_ref() else {
                s.stopped(&shared, &mut leaks, &inst);
                continue;
            };
            // A cgroup that cannot be read is tried again as often as it is read.
            s.next_read = Some(now + s.every.max(PERIOD));
            let known = s.begin(cg, inst.state(), now);
            if let Some(files) = &s.files {
                jobs.push((at, files.clone(), known));
            }
        }
        let own_due = own_next.is_none_or(|at| at <= now);
        if own_due {
            own_next = Some(now + interval(count, own_leak_window));
        }
        let read = tokio::task::spawn_blocking(move || read_all(own_due, jobs)).await;
        let Ok((own, read)) = read else { continue };
        if let Some(own) = own {
            leaks.own(&shared, &own);
        }
        for (at, (stats, read_at, procs)) in read {
            // No walk since the jobs were taken: each is still at its place.
            let Some(s) = seen.get_mut(at) else { continue };
            let Some((p, rev, inst)) = s.tracked.as_ref().and_then(Tracked::upgrade) else { continue };
            if inst.cgroup.load().is_none() {
                s.stopped(&shared, &mut leaks, &inst);
                continue;
            }
            let spec = rev.spec();
            // Its own revision's leak window: the one its leak watch judges by.
            s.every = interval(count, spec.leaks.window);
            s.next_read = Some(now + s.every);
            s.nofile_read(&procs, now);
            let quota = inst.with_status(|st| st.quota.clone());
            if let Some(hits) = stats.pids_max_hits
                && let Some(refused) = s.refused_forks(hits)
            {
                let limit = quota.pids_max.map_or_else(|| "?".into(), |n| n.to_string());
                shared.events.emit(
                    &p.name,
                    &inst.id,
                    EventKind::PidsLimit,
                    format!("task limit reached: pids.max {limit} refused {refused} fork(s)"),
                    &[("pids_max_hits", hits.to_string())],
                );
            }
            if let Some(n) = stats.cpu_nr_throttled
                && n > s.nr_throttled
            {
                let due = s.last_throttle_event.is_none_or(|t| t.elapsed() >= THROTTLE_EVENT_GAP);
                if due {
                    let cpu = quota.cpu.map_or_else(|| "?".into(), |c| c.to_string());
                    shared.events.emit(
                        &p.name,
                        &inst.id,
                        EventKind::CpuThrottled,
                        format!("held to its CPU quota ({cpu}): throttled in {} scheduling periods so far", n),
                        &[("nr_throttled", n.to_string())],
                    );
                    s.last_throttle_event = Some(Instant::now());
                }
                s.nr_throttled = n;
            }
            let notes = leaks.instance(&shared, &p, &spec.leaks, &inst, &stats, &procs);
            inst.update(|st| {
                st.usage = Some(stats);
                st.usage_read_at = Some(read_at);
                st.leaks = notes;
            });
        }
    }
}

/// Finds every plugin's instances as they are now, for the rounds until the next walk:
/// the new ones are read at the next round, the gone forgotten (their series too), and
/// those whose process ended lose what was read of it. Returns how many there are.
fn walk(shared: &Shared, seen: &mut Vec<Seen>, leaks: &mut crate::leaks::sampling::Watches) -> usize {
    let found: Vec<(Arc<Plugin>, Arc<Revision>, Arc<Instance>)> = shared
        .plugins
        .all()
        .into_iter()
        .flat_map(|p| p.revisions().into_iter().map(move |rev| (p.clone(), rev)))
        .flat_map(|(p, rev)| rev.instances.clone().into_iter().map(move |i| (p.clone(), rev.clone(), i)))
        .collect();
    // Instances come and go with reloads and updates: what is no longer listed is
    // forgotten, so this stays as long as what runs.
    let listed: std::collections::HashSet<String> = found.iter().map(|(_, _, i)| i.id.clone()).collect();
    leaks.retain(shared, &listed);
    let mut before: HashMap<String, Seen> = std::mem::take(seen).into_iter().map(|s| (s.id.clone(), s)).collect();
    let count = found.len();
    for (p, rev, inst) in found {
        let mut s = before.remove(&inst.id).unwrap_or_else(|| Seen { id: inst.id.clone(), ..Seen::default() });
        s.tracked = Some(Tracked {
            plugin: Arc::downgrade(&p),
            revision: Arc::downgrade(&rev),
            instance: Arc::downgrade(&inst),
        });
        if inst.cgroup.load().is_none() {
            s.stopped(shared, leaks, &inst);
        }
        seen.push(s);
    }
    count
}

/// An instance to read this round: its place among those seen, its cgroup's files, and
/// its process's descriptor limit when known.
type Job = (usize, Arc<StatFiles>, Option<Nofile>);

/// One round's readings: the supervisor's own footprint, and each instance's cgroup
/// counters, when they were read, and its processes, by its place (an instance whose
/// cgroup cannot be read is left out).
type Readings = (Option<crate::leaks::probe::Own>, Vec<(usize, (Stats, SystemTime, ProcReading))>);

fn read_all(own: bool, jobs: Vec<Job>) -> Readings {
    let own = own.then(|| crate::leaks::probe::own(std::path::Path::new("/proc/self")));
    let read = jobs
        .into_iter()
        .filter_map(|(at, files, nofile)| {
            let read_at = SystemTime::now();
            let stats = files.read().ok()?;
            let procs = ProcReading::of(std::path::Path::new("/proc"), files.procs().unwrap_or_default(), nofile);
            Some((at, (stats, read_at, procs)))
        })
        .collect();
    (own, read)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_reading_due_just_after_a_tick_is_taken_at_that_tick() {
        let now = Instant::now();
        assert!(due(None, now), "a new instance is read at once");
        assert!(due(Some(now + Duration::from_millis(3)), now), "a tick a little early still reads it");
        assert!(due(Some(now - Duration::from_millis(3)), now));
        assert!(!due(Some(now + Duration::from_millis(900)), now), "not yet: it was read at the last tick");
    }

    fn leaf() -> Arc<crate::sandbox::cgroup::Instance> {
        use crate::sandbox::cgroup::test_hosts::{create, hybrid};
        use crate::sandbox::cgroup::{Limits, SubtreeConfig};
        let (fs, layout) = hybrid();
        let cfg = SubtreeConfig { name: "s".into(), parent: None, move_self: false };
        let tree = create(&fs, Arc::new(layout), &cfg).unwrap();
        Arc::new(tree.create_instance("p", "p-0", &Limits::default()).unwrap())
    }

    /// An instance restarted between two readings runs in a new cgroup, whose counters
    /// start from zero: its refused forks are said, though fewer than the last process's.
    #[test]
    fn refused_forks_are_counted_from_the_cgroup_they_were_read_from() {
        let mut seen = Seen::default();
        let first = leaf();
        seen.reading(&first);
        assert_eq!(seen.refused_forks(500), Some(500));
        assert_eq!(seen.refused_forks(500), None, "none since");
        assert_eq!(seen.refused_forks(520), Some(20));
        seen.reading(&first);
        assert_eq!(seen.refused_forks(520), None, "the same cgroup read again");
        let restarted = leaf();
        seen.reading(&restarted);
        assert_eq!(seen.refused_forks(300), Some(300), "the new cgroup's own count");
    }

    /// A cgroup's files are found at its first reading and kept while it is read: a
    /// new cgroup (the instance started again) has its own, and a process gone, none.
    #[test]
    fn a_cgroups_files_are_found_once_and_kept_until_the_cgroup_changes() {
        let mut seen = Seen::default();
        let first = leaf();
        seen.reading(&first);
        let files = seen.files.clone().expect("found at the first reading");
        seen.reading(&first);
        assert!(Arc::ptr_eq(&files, seen.files.as_ref().unwrap()), "the same cgroup: not found again");
        seen.reading(&leaf());
        assert!(!Arc::ptr_eq(&files, seen.files.as_ref().unwrap()), "a new cgroup's own");
        assert!(seen.process_gone());
        assert!(seen.files.is_none(), "no process, no files");
    }

    fn one_process(pid: u32, nofile: Option<u64>) -> ProcReading {
        ProcReading { procs: vec![pid], fds: Some(3), nofile }
    }

    /// What a round takes as known follows the instance's state at its start: a process
    /// not yet running has its limit read, and not kept.
    #[test]
    fn a_descriptor_limit_is_kept_only_from_a_running_instance() {
        let (mut seen, cg, t0) = (Seen::default(), leaf(), Instant::now());
        assert_eq!(seen.begin(&cg, State::Starting, t0), None);
        seen.nofile_read(&one_process(7, Some(1 << 20)), t0);
        assert_eq!(seen.begin(&cg, State::Running, t0 + S), None, "read while starting: not kept");
        seen.nofile_read(&one_process(7, Some(1000)), t0 + S);
        assert_eq!(seen.begin(&cg, State::Running, t0 + 2 * S), Some(Nofile { pid: 7, limit: 1000 }));
        // None found is asked again.
        seen.nofile_read(&one_process(7, None), t0 + NOFILE_REREAD + S);
        assert_eq!(seen.begin(&cg, State::Running, t0 + NOFILE_REREAD + 2 * S), None);
    }

    /// A process's descriptor limit is read again only once NOFILE_REREAD has passed, or
    /// for another process or cgroup.
    #[test]
    fn a_descriptor_limit_is_read_again_after_a_minute_or_for_another_process() {
        let (mut seen, cg, t0) = (Seen::default(), leaf(), Instant::now());
        assert_eq!(seen.begin(&cg, State::Running, t0), None, "never read");
        seen.nofile_read(&one_process(7, Some(1024)), t0);
        let known = Some(Nofile { pid: 7, limit: 1024 });
        assert_eq!(seen.known_nofile(t0 + 10 * S), known);
        // Taken at 10 s, not read then: it is still the reading of t0 that ages.
        seen.nofile_read(&one_process(7, Some(1024)), t0 + 10 * S);
        assert_eq!(seen.known_nofile(t0 + 59 * S), known);
        assert_eq!(seen.known_nofile(t0 + NOFILE_REREAD), None, "a minute old: read again");
        seen.nofile_read(&one_process(7, Some(4096)), t0 + NOFILE_REREAD);
        assert_eq!(seen.known_nofile(t0 + NOFILE_REREAD + S), Some(Nofile { pid: 7, limit: 4096 }));
        // Another process of the instance is read at once, and kept from then.
        seen.nofile_read(&one_process(8, Some(64)), t0 + 70 * S);
        assert_eq!(seen.known_nofile(t0 + 71 * S), Some(Nofile { pid: 8, limit: 64 }));
        // Several processes have no one limit: what was known stays as it was.
        seen.nofile_read(&ProcReading { procs: vec![8, 9], fds: Some(6), nofile: None }, t0 + 72 * S);
        assert_eq!(seen.known_nofile(t0 + 73 * S), Some(Nofile { pid: 8, limit: 64 }));
        // A new cgroup (the instance started again) knows nothing of the last process.
        seen.reading(&leaf());
        assert_eq!(seen.known_nofile(t0 + 73 * S), None);
        seen.nofile_read(&one_process(8, Some(64)), t0 + 73 * S);
        seen.reading(&cg);
        assert_eq!(seen.known_nofile(t0 + 74 * S), None, "back to the first cgroup: read again");
    }

    /// The plugins are walked at the first round, then only after instances came or went.
    #[test]
    fn the_plugins_are_walked_again_only_after_instances_came_or_went() {
        let mut walks = Walks::default();
        assert!(walks.due(7), "the first round walks");
        assert!(!walks.due(7), "nothing changed");
        assert!(!walks.due(7));
        assert!(walks.due(8), "a revision came, or a plugin");
        assert!(!walks.due(8));
    }

    /// A stopped instance's readings go once: counts from a new cgroup start afresh, it
    /// is read at the next round, and it keeps its place from the walk.
    #[test]
    fn a_stopped_instance_forgets_what_was_read_of_its_process() {
        let (mut seen, cg, t0) = (Seen::default(), leaf(), Instant::now());
        seen.tracked = Some(Tracked { plugin: Weak::new(), revision: Weak::new(), instance: Weak::new() });
        seen.begin(&cg, State::Running, t0);
        seen.next_read = Some(t0 + 10 * S);
        assert_eq!(seen.refused_forks(40), Some(40));
        seen.nofile_read(&one_process(7, Some(1024)), t0);
        assert!(seen.process_gone(), "read since it started");
        assert!(seen.tracked.is_some(), "still where the walk found it");
        assert!(seen.next_read.is_none(), "looked at next round");
        assert_eq!(seen.known_nofile(t0), None);
        assert_eq!(seen.refused_forks(40), Some(40), "counted afresh");
        assert!(!seen.process_gone(), "nothing read since: its status is left alone");
    }

    #[test]
    fn a_few_instances_are_read_every_second() {
        for n in [0, 1, 50, 100] {
            assert_eq!(interval(n, Duration::from_secs(600)), S, "{n} instances");
        }
    }

    #[test]
    fn many_instances_are_spread_to_about_a_hundred_reads_a_second() {
        assert_eq!(interval(200, Duration::from_secs(600)), 2 * S);
        assert_eq!(interval(1000, Duration::from_secs(600)), 10 * S);
        // Never less often than the leak watch judges points: a tenth-minute window's.
        assert_eq!(interval(1000, Duration::from_secs(300)), 5 * S);
        assert_eq!(interval(100_000, Duration::from_secs(600)), 10 * S);
    }

    #[test]
    fn a_short_leak_window_keeps_its_detail_whatever_the_count() {
        assert_eq!(interval(1000, Duration::from_secs(10)), S);
        assert_eq!(interval(1000, Duration::from_secs(90)), Duration::from_millis(1500));
    }

    #[test]
    fn the_supervisor_itself_is_read_as_often_as_its_hour_window_and_the_count_allow() {
        assert_eq!(interval(1, Duration::from_secs(3600)), S);
        assert_eq!(interval(1000, Duration::from_secs(3600)), 10 * S);
        assert_eq!(interval(10_000, Duration::from_secs(3600)), 60 * S);
    }
}
