//! Metrics in Prometheus (OpenMetrics text) form: calls by plugin and gRPC
//! code with their latency, lifecycle events by kind, counted as they
//! happen (and dropped with a plugin `update` removes); and each instance's
//! state and resource use, read from its status when scraped.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use plugin_proto::control::v1::InstanceStatus;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::routing::record::Source;

type Labels = Vec<(&'static str, String)>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

/// The label naming a plugin instance (`echo-0`) on per-instance series.
pub const INSTANCE_LABEL: &str = "plugin_instance";

/// The content type of [`Metrics::render`]'s text, for HTTP scrapes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Call latency buckets: 25 µs to about 13 s, doubling; a call through the
/// gateway takes about 40 µs on the reference host.
fn call_buckets() -> Histogram {
    Histogram::new(exponential_buckets(25e-6, 2.0, 20))
}

/// Phase buckets: 50 µs to about 100 s, doubling; a spawn takes about 1 ms, a drain up to
/// a plugin's `stop_timeout`.
fn phase_buckets() -> Histogram {
    Histogram::new(exponential_buckets(50e-6, 2.0, 22))
}

/// The counters the supervisor keeps while it runs.
#[derive(Debug)]
pub struct Metrics {
    calls: Family<Labels, Counter>,
    call_seconds: Histograms,
    events: Family<Labels, Counter>,
    phase_seconds: Histograms,
    teardowns: Family<Labels, Counter>,
    teardown_seconds: Histograms,
    leaks: Leaks,
    /// What each plugin put in the families, by name: the plugin as it is now, or one
    /// `update` removed (until a plugin of that name is added, or nothing of the removed
    /// one can record any more).
    plugins: Mutex<HashMap<String, Arc<Mutex<Owned>>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            calls: Family::default(),
            call_seconds: Family::new_with_constructor(call_buckets),
            events: Family::default(),
            phase_seconds: Family::new_with_constructor(phase_buckets),
            teardowns: Family::default(),
            teardown_seconds: Family::new_with_constructor(phase_buckets),
            leaks: Leaks::default(),
            plugins: Mutex::default(),
        }
    }
}

/// The series one plugin put in the families, so that its removal takes them all (whatever
/// their labels). Shared by the call handles of every channel to it: a plugin removed and
/// added back under the same name is another one.
#[derive(Debug, Default)]
struct Owned {
    /// Set when `update` removed the plugin. Its series are gone then, and what is recorded
    /// for it afterwards is kept nowhere: a call still in flight on its channel (an
    /// embedded host may hold that channel for ever, each call on it now UNAVAILABLE), or
    /// an event of an instance still draining. Nothing of it comes back, and one of the
    /// same name added later starts from zero.
    removed: bool,
    calls: HashSet<Labels>,
    seconds: HashSet<Labels>,
    events: HashSet<Labels>,
    phases: HashSet<Labels>,
    teardowns: HashSet<Labels>,
    leaks: HashSet<Labels>,
}

/// A removed plugin, as [`Metrics::remove_plugin`] left it.
#[derive(Debug)]
pub struct Removed(Arc<Mutex<Owned>>);

// Every change under these locks is one insert or removal (or a flag), never left half-made
// by a panic elsewhere: a poisoned lock is still good to use.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One plugin's call series, looked up once so recording a call costs no
/// allocation or map lookup; a code's series appears with its first call.
#[derive(Debug)]
pub struct PluginCalls {
    plugin: String,
    calls: Family<Labels, Counter>,
    /// By source, then by code.
    by_code: [[OnceLock<Counter>; CODES]; SOURCES],
    seconds: Histogram,
    owned: Arc<Mutex<Owned>>,
}

/// gRPC codes run from 0 (OK) to 16 (UNAUTHENTICATED).
const CODES: usize = 17;
const SOURCES: usize = Source::ALL.len();

impl PluginCalls {
    /// A call ended with `code` (from `source`) after `elapsed`.
    pub fn record(&self, code: tonic::Code, source: Source, elapsed: Duration) {
        let slot = (code as usize).min(CODES - 1);
        let from = Source::ALL.iter().position(|s| *s == source).unwrap_or(0);
        self.by_code[from][slot]
            .get_or_init(|| {
                let labels = vec![
                    ("plugin", self.plugin.clone()),
                    ("code", code_name(code).to_owned()),
                    ("source", source.as_str().to_owned()),
                ];
                // Under the lock a removal takes: a series is made before it (and goes
                // with it), or not at all.
                let mut owned = lock(&self.owned);
                if owned.removed {
                    return Counter::default();
                }
                let counter = self.calls.get_or_create_owned(&labels);
                owned.calls.insert(labels);
                counter
            })
            .inc();
        // After a removal, the counters and histogram held here are out of the families:
        // what they count shows nowhere.
        self.seconds.observe(elapsed.as_secs_f64());
    }
}

impl Metrics {
    /// The call series of `plugin`, for its routing stack.
    pub fn plugin_calls(&self, plugin: &str) -> PluginCalls {
        let owned = self.owned(plugin);
        let labels = vec![("plugin", plugin.to_owned())];
        let seconds = {
            let mut o = lock(&owned);
            if o.removed {
                call_buckets()
            } else {
                let histogram = self.call_seconds.get_or_create_owned(&labels);
                o.seconds.insert(labels);
                histogram
            }
        };
        PluginCalls {
            plugin: plugin.to_owned(),
            calls: self.calls.clone(),
            by_code: std::array::from_fn(|_| std::array::from_fn(|_| OnceLock::new())),
            seconds,
            owned,
        }
    }

    /// A lifecycle event of `kind` happened to `plugin`.
    pub fn record_event(&self, plugin: &str, kind: super::events::EventKind) {
        let Some(owned) = self.known(plugin) else { return };
        let mut o = lock(&owned);
        if o.removed {
            return;
        }
        let labels = vec![("plugin", plugin.to_owned()), ("kind", kind.as_str().to_owned())];
        self.events.get_or_create(&labels).inc();
        o.events.insert(labels);
    }

    /// A phase of one of `plugin`'s instances took `took`.
    pub fn record_phase(&self, plugin: &str, phase: super::phases::Phase, took: Duration) {
        let Some(owned) = self.known(plugin) else { return };
        let mut o = lock(&owned);
        if o.removed {
            return;
        }
        let labels = vec![("plugin", plugin.to_owned()), ("phase", phase.as_str().to_owned())];
        self.phase_seconds.get_or_create(&labels).observe(took.as_secs_f64());
        o.phases.insert(labels);
    }

    /// An instance of `plugin` ended and its teardown's checks came to `outcome`, taking
    /// `took`.
    pub fn record_teardown(&self, plugin: &str, outcome: super::teardown::Outcome, took: Duration) {
        let Some(owned) = self.known(plugin) else { return };
        let mut o = lock(&owned);
        if o.removed {
            return;
        }
        let labels = vec![("plugin", plugin.to_owned()), ("result", outcome.as_str().to_owned())];
        self.teardowns.get_or_create(&labels).inc();
        self.teardown_seconds.get_or_create(&labels).observe(took.as_secs_f64());
        o.teardowns.insert(labels);
    }

    /// A leak of `resource` was suspected in one of `plugin`'s instances (`plugin` is
    /// empty for the supervisor itself).
    pub fn record_leak(&self, plugin: &str, resource: &str) {
        let Some(owned) = self.known(plugin) else { return };
        let mut o = lock(&owned);
        if o.removed {
            return;
        }
        let labels = vec![("plugin", plugin.to_owned()), ("resource", resource.to_owned())];
        self.leaks.total.get_or_create(&labels).inc();
        o.leaks.insert(labels);
    }

    /// Whether a leak of `resource` is suspected in `instance` now, at what rise per
    /// minute (in the resource's unit: bytes, descriptors, tasks, percent of a core).
    pub fn set_leak(&self, plugin: &str, instance: &str, resource: &str, suspected: bool, per_min: f64) {
        let labels = leak_labels(plugin, instance, resource);
        self.leaks.suspected.get_or_create(&labels).set(i64::from(suspected));
        self.leaks.slope.get_or_create(&labels).set(if suspected { per_min } else { 0.0 });
    }

    /// `instance` is gone: its leak series go with it.
    pub fn forget_leaks(&self, plugin: &str, instance: &str, resources: &[&str]) {
        for r in resources {
            let labels = leak_labels(plugin, instance, r);
            self.leaks.suspected.remove(&labels);
            self.leaks.slope.remove(&labels);
        }
    }

    /// The supervisor's own footprint, as last read.
    pub fn set_own(&self, own: &crate::leaks::probe::Own) {
        let set = |g: &Gauge, v: Option<u64>| g.set(v.map_or(0, |v| i64::try_from(v).unwrap_or(i64::MAX)));
        set(&self.leaks.own_rss, own.rss);
        set(&self.leaks.own_anon, own.rss_anon);
        set(&self.leaks.own_fds, own.fds);
        set(&self.leaks.own_threads, own.threads);
    }

    /// What `plugin` has put in the families, when it is one of the plugins: made when its
    /// calls are first counted (its routing stack is built before any instance of it
    /// starts) or it is added, and for the supervisor itself (`""`). What is said of a
    /// plugin no longer there (a removed one's cgroup removed at last by a retry, the
    /// removal of one kept from before a restart) makes no series: made at its mention,
    /// a removed plugin's series came back, never to go, and a plugin added later under
    /// its name counted on from them.
    fn known(&self, plugin: &str) -> Option<Arc<Mutex<Owned>>> {
        if plugin.is_empty() {
            return Some(self.owned(plugin));
        }
        lock(&self.plugins).get(plugin).cloned()
    }

    /// What `plugin` has put in the families (made at its first mention).
    fn owned(&self, plugin: &str) -> Arc<Mutex<Owned>> {
        let mut plugins = lock(&self.plugins);
        match plugins.get(plugin) {
            Some(o) => o.clone(),
            None => plugins.entry(plugin.to_owned()).or_default().clone(),
        }
    }

    /// `update` removed `plugin`: its call, latency and event series go, and what is
    /// recorded for it from now on is kept nowhere (see [`Owned::removed`]).
    pub fn remove_plugin(&self, plugin: &str) -> Removed {
        let owned = self.owned(plugin);
        let mut o = lock(&owned);
        o.removed = true;
        for labels in o.calls.drain() {
            self.calls.remove(&labels);
        }
        for labels in o.seconds.drain() {
            self.call_seconds.remove(&labels);
        }
        for labels in o.events.drain() {
            self.events.remove(&labels);
        }
        for labels in o.phases.drain() {
            self.phase_seconds.remove(&labels);
        }
        for labels in o.teardowns.drain() {
            self.teardowns.remove(&labels);
            self.teardown_seconds.remove(&labels);
        }
        for labels in o.leaks.drain() {
            self.leaks.total.remove(&labels);
        }
        drop(o);
        Removed(owned)
    }

    /// A plugin named `plugin` is added: it counts from zero, whatever a removed one of
    /// that name still records.
    pub fn add_plugin(&self, plugin: &str) {
        let mut plugins = lock(&self.plugins);
        if plugins.get(plugin).is_some_and(|o| lock(o).removed) {
            plugins.remove(plugin);
        }
        plugins.entry(plugin.to_owned()).or_default();
    }

    /// Forgets a removed plugin once nothing of it records any more (its instances are
    /// gone), so that plugins coming and going leave nothing behind; a plugin of that name
    /// added since is left as it is.
    pub fn release(&self, plugin: &str, removed: Removed) {
        let mut plugins = lock(&self.plugins);
        if plugins.get(plugin).is_some_and(|o| Arc::ptr_eq(o, &removed.0)) {
            plugins.remove(plugin);
        }
    }

    /// Everything, as OpenMetrics text, with the instances' gauges taken
    /// from `instances` (the rows `status` shows).
    pub fn render(&self, instances: &[InstanceStatus]) -> String {
        self.render_with(instances, &[])
    }

    /// [`Metrics::render`], with each revision's calls and share of calls.
    pub fn render_with(&self, instances: &[InstanceStatus], revisions: &[RevisionRow]) -> String {
        self.render_all(instances, revisions, &[])
    }

    /// [`Metrics::render_with`], with what each plugin's log streams kept and dropped.
    pub fn render_all(&self, instances: &[InstanceStatus], revisions: &[RevisionRow], logs: &[LogRow]) -> String {
        self.render_protected(instances, revisions, logs, &[])
    }

    /// [`Metrics::render_all`], with what each plugin's protection layers decided.
    pub fn render_protected(
        &self,
        instances: &[InstanceStatus],
        revisions: &[RevisionRow],
        logs: &[LogRow],
        protection: &[ProtectionRow],
    ) -> String {
        let mut registry = Registry::with_prefix("supervisor");
        registry.register(
            "calls",
            "Calls to plugins, by plugin, gRPC status code and its source (the plugin, or which layer of ours)",
            self.calls.clone(),
        );
        registry.register_with_unit(
            "call_duration",
            "Time from a call's request to its last byte, by plugin",
            Unit::Seconds,
            self.call_seconds.clone(),
        );
        registry.register("events", "Lifecycle events, by plugin and kind", self.events.clone());
        registry.register_with_unit(
            "phase_duration",
            "Time each phase of an instance's life took (verify, spawn, handshake, init, health, drain, teardown), by plugin",
            Unit::Seconds,
            self.phase_seconds.clone(),
        );
        registry.register(
            "teardowns",
            "Instance ends whose teardown was checked, by plugin and result (clean, cleaned, leftover)",
            self.teardowns.clone(),
        );
        registry.register_with_unit(
            "teardown_duration",
            "Time the clean-up and checks after an instance's end took, by plugin and result",
            Unit::Seconds,
            self.teardown_seconds.clone(),
        );
        self.leaks.register(&mut registry);
        InstanceGauges::from_rows(instances).register(&mut registry);
        RevisionSeries::from_rows(revisions).register(&mut registry);
        LogSeries::from_rows(logs).register(&mut registry);
        ProtectionSeries::from_rows(protection).register(&mut registry);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }
}

fn leak_labels(plugin: &str, instance: &str, resource: &str) -> Labels {
    vec![("plugin", plugin.to_owned()), (INSTANCE_LABEL, instance.to_owned()), ("resource", resource.to_owned())]
}

/// The leak watch's series, and the supervisor's own footprint it watches.
#[derive(Debug, Default)]
struct Leaks {
    total: Family<Labels, Counter>,
    suspected: Family<Labels, Gauge>,
    slope: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    own_rss: Gauge,
    own_anon: Gauge,
    own_fds: Gauge,
    own_threads: Gauge,
}

impl Leaks {
    fn register(&self, r: &mut Registry) {
        r.register("leaks", "Leaks suspected, by plugin and resource (memory, fds, tasks, cpu)", self.total.clone());
        r.register(
            "leak_suspected",
            "1 while a leak of the resource is suspected in the instance (plugin \"\" is the supervisor), else 0",
            self.suspected.clone(),
        );
        r.register(
            "leak_slope",
            "The suspected leak's rise per minute: bytes, descriptors, tasks or percent of a core",
            self.slope.clone(),
        );
        r.register_with_unit(
            "process_resident_memory",
            "The supervisor's resident memory",
            Unit::Bytes,
            self.own_rss.clone(),
        );
        r.register_with_unit(
            "process_anon_memory",
            "The supervisor's resident anonymous memory (what a leak grows)",
            Unit::Bytes,
            self.own_anon.clone(),
        );
        r.register("process_open_fds", "Descriptors the supervisor holds open", self.own_fds.clone());
        r.register("process_threads", "The supervisor's threads", self.own_threads.clone());
    }
}

/// Per-instance values, built afresh for each scrape so instances that are
/// gone leave no stale series.
#[derive(Default)]
struct InstanceGauges {
    up: Family<Labels, Gauge>,
    state: Family<Labels, Gauge>,
    restarts: Family<Labels, Counter>,
    uptime: Family<Labels, Gauge>,
    memory: Family<Labels, Gauge>,
    cpu: Family<Labels, Counter<f64, std::sync::atomic::AtomicU64>>,
    throttled: Family<Labels, Counter<f64, std::sync::atomic::AtomicU64>>,
    pids: Family<Labels, Gauge>,
    oom_kills: Family<Labels, Counter>,
    pids_max_hits: Family<Labels, Counter>,
}

impl InstanceGauges {
    fn from_rows(rows: &[InstanceStatus]) -> Self {
        let g = Self::default();
        for row in rows {
            // Not `instance`: Prometheus sets that label to the scraped target
            // and renames a clashing one to `exported_instance`.
            // The revision follows the instance: during a reload, old and new are told apart.
            let id = vec![
                ("plugin", row.name.clone()),
                (INSTANCE_LABEL, row.instance.clone()),
                ("revision", row.revision.to_string()),
            ];
            g.up.get_or_create(&id).set(i64::from(row.state == "running"));
            let mut with_state = id.clone();
            with_state.push(("state", row.state.clone()));
            g.state.get_or_create(&with_state).set(1);
            g.restarts.get_or_create(&id).inc_by(u64::from(row.restarts));
            g.uptime.get_or_create(&id).set(i64::try_from(row.uptime_s).unwrap_or(i64::MAX));
            if let Some(u) = &row.usage {
                g.memory.get_or_create(&id).set(i64::try_from(u.memory_current).unwrap_or(i64::MAX));
                g.cpu.get_or_create(&id).inc_by(u.cpu_usage_usec as f64 / 1e6);
                g.throttled.get_or_create(&id).inc_by(u.cpu_throttled_usec as f64 / 1e6);
                g.pids.get_or_create(&id).set(i64::try_from(u.pids_current).unwrap_or(i64::MAX));
                g.oom_kills.get_or_create(&id).inc_by(u.oom_kills);
                g.pids_max_hits.get_or_create(&id).inc_by(u.pids_max_hits);
            }
        }
        g
    }

    fn register(self, r: &mut Registry) {
        r.register("instance_up", "1 when the instance is running, else 0", self.up);
        r.register("instance_state", "The instance's state, as the state label", self.state);
        r.register("instance_restarts", "Times the instance was restarted", self.restarts);
        r.register_with_unit("instance_uptime", "Time since the instance became ready", Unit::Seconds, self.uptime);
        r.register_with_unit("instance_memory", "Memory charged to the instance's cgroup", Unit::Bytes, self.memory);
        r.register_with_unit("instance_cpu", "CPU time used by the instance's cgroup", Unit::Seconds, self.cpu);
        r.register_with_unit(
            "instance_cpu_throttled",
            "Time the instance's cgroup was held back by its CPU quota",
            Unit::Seconds,
            self.throttled,
        );
        r.register("instance_pids", "Processes and threads in the instance's cgroup", self.pids);
        r.register("instance_oom_kills", "Processes the kernel killed at the memory limit", self.oom_kills);
        r.register("instance_pids_max_hits", "Forks refused by the instance's pids limit", self.pids_max_hits);
    }
}

/// One revision of a plugin as a scrape sees it: what its calls came to (as a rollout
/// judges them) and the share of calls it takes now.
#[derive(Debug, Clone)]
pub struct RevisionRow {
    pub plugin: String,
    pub revision: u64,
    /// Calls routed to it and answered (or failed) by the plugin; cancelled ones are not.
    pub calls: u64,
    /// Of those, the ones whose code means the plugin failed.
    pub failed: u64,
    /// Percent of the plugin's calls it takes now: 100 serving alone, a canary's share and
    /// the rest during a rollout, 0 while it drains.
    pub share: u8,
}

/// Per-revision values, built afresh for each scrape: revisions come and go with reloads.
#[derive(Default)]
struct RevisionSeries {
    calls: Family<Labels, Counter>,
    failed: Family<Labels, Counter>,
    share: Family<Labels, Gauge>,
}

impl RevisionSeries {
    fn from_rows(rows: &[RevisionRow]) -> Self {
        let s = Self::default();
        for row in rows {
            let id = vec![("plugin", row.plugin.clone()), ("revision", row.revision.to_string())];
            s.calls.get_or_create(&id).inc_by(row.calls);
            s.failed.get_or_create(&id).inc_by(row.failed);
            s.share.get_or_create(&id).set(i64::from(row.share));
        }
        s
    }

    fn register(self, r: &mut Registry) {
        r.register("revision_calls", "Calls a revision's instances answered, by plugin and revision", self.calls);
        r.register(
            "revision_failed_calls",
            "Calls a revision failed (UNKNOWN, INTERNAL, UNAVAILABLE, DEADLINE_EXCEEDED, DATA_LOSS)",
            self.failed,
        );
        r.register("revision_share", "Percent of the plugin's calls the revision takes now", self.share);
    }
}

/// One plugin's log stream as a scrape sees it. Read from the plugin's log buffer at each
/// scrape: a plugin `update` removed has no row, so its series go with it.
#[derive(Debug, Clone)]
pub struct LogRow {
    pub plugin: String,
    pub counts: super::logs::StreamCounts,
}

#[derive(Default)]
struct LogSeries {
    lines: Family<Labels, Counter>,
    dropped: Family<Labels, Counter>,
    forward_dropped: Counter,
}

impl LogSeries {
    fn from_rows(rows: &[LogRow]) -> Self {
        let s = Self::default();
        for row in rows {
            let id = vec![("plugin", row.plugin.clone()), ("stream", row.counts.stream.as_str().to_owned())];
            s.lines.get_or_create(&id).inc_by(row.counts.kept);
            s.dropped.get_or_create(&id).inc_by(row.counts.dropped);
        }
        s.forward_dropped.inc_by(super::forward::dropped_total());
        s
    }

    fn register(self, r: &mut Registry) {
        r.register(
            "log_lines",
            "Lines of plugin output kept (in tail, and forwarded), by plugin and stream",
            self.lines,
        );
        r.register(
            "log_lines_dropped",
            "Lines of plugin output dropped over the plugin's log_rate (and SDK records its SDK dropped while the supervisor read slowly), by plugin and stream",
            self.dropped,
        );
        r.register(
            "log_forward_dropped",
            "Kept plugin log lines not forwarded to the daemon's output because it was too slow",
            self.forward_dropped,
        );
    }
}

/// One plugin's protection layers as a scrape sees them: read from the plugin at each
/// scrape (its counters live as long as it is configured), so a removed plugin's series go.
#[derive(Debug, Clone)]
pub struct ProtectionRow {
    pub plugin: String,
    /// Calls the concurrency limit shed.
    pub shed: u64,
    /// `supervisor_circuit_state`: 0 closed, 1 open, 2 half-open.
    pub circuit: i64,
    /// Times the circuit opened.
    pub opened: u64,
    /// Messages refused for their size: requests, responses.
    pub too_large: (u64, u64),
}

#[derive(Default)]
struct ProtectionSeries {
    shed: Family<Labels, Counter>,
    circuit: Family<Labels, Gauge>,
    opened: Family<Labels, Counter>,
    too_large: Family<Labels, Counter>,
}

impl ProtectionSeries {
    fn from_rows(rows: &[ProtectionRow]) -> Self {
        let s = Self::default();
        for row in rows {
            let id = vec![("plugin", row.plugin.clone())];
            s.shed.get_or_create(&id).inc_by(row.shed);
            s.circuit.get_or_create(&id).set(row.circuit);
            s.opened.get_or_create(&id).inc_by(row.opened);
            for (direction, n) in [("request", row.too_large.0), ("response", row.too_large.1)] {
                let mut labels = id.clone();
                labels.push(("direction", direction.to_owned()));
                s.too_large.get_or_create(&labels).inc_by(n);
            }
        }
        s
    }

    fn register(self, r: &mut Registry) {
        r.register(
            "calls_shed",
            "Calls shed with RESOURCE_EXHAUSTED: every instance at max_in_flight and max_queued calls waiting",
            self.shed,
        );
        r.register("circuit_state", "The plugin's circuit breaker: 0 closed, 1 open, 2 half-open", self.circuit);
        r.register("circuit_opened", "Times the plugin's circuit breaker opened", self.opened);
        r.register(
            "calls_too_large",
            "Calls refused with RESOURCE_EXHAUSTED for a message over max_request_bytes or max_response_bytes, by direction",
            self.too_large,
        );
    }
}

/// The gRPC name of `code`, as operators know it from grpcurl and the spec.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use plugin_proto::control::v1::ResourceUsage;

    use super::*;
    use crate::observe::events::EventKind;

    fn row(name: &str, state: &str, usage: Option<ResourceUsage>) -> InstanceStatus {
        InstanceStatus {
            name: name.into(),
            instance: format!("{name}-0"),
            state: state.into(),
            restarts: 3,
            uptime_s: 42,
            usage,
            revision: 1,
            ..Default::default()
        }
    }

    #[test]
    fn each_revision_has_its_calls_failures_and_share() {
        let rows = [
            RevisionRow { plugin: "echo".into(), revision: 1, calls: 900, failed: 2, share: 75 },
            RevisionRow { plugin: "echo".into(), revision: 2, calls: 300, failed: 30, share: 25 },
        ];
        let text = Metrics::default().render_with(&[], &rows);
        for line in [
            "supervisor_revision_calls_total{plugin=\"echo\",revision=\"1\"} 900\n",
            "supervisor_revision_failed_calls_total{plugin=\"echo\",revision=\"2\"} 30\n",
            "supervisor_revision_share{plugin=\"echo\",revision=\"1\"} 75\n",
            "supervisor_revision_share{plugin=\"echo\",revision=\"2\"} 25\n",
        ] {
            assert!(text.contains(line), "{line}{text}");
        }
        assert!(!Metrics::default().render(&[]).contains("supervisor_revision_share{"), "none without revisions");
    }

    #[test]
    fn log_lines_kept_and_dropped_are_counted_by_plugin_and_stream() {
        use crate::observe::logs::{Stream, StreamCounts};
        let rows = [
            LogRow { plugin: "echo".into(), counts: StreamCounts { stream: Stream::Stdout, kept: 10, dropped: 5 } },
            LogRow { plugin: "echo".into(), counts: StreamCounts { stream: Stream::Sdk, kept: 3, dropped: 0 } },
        ];
        let text = Metrics::default().render_all(&[], &[], &rows);
        for line in [
            "supervisor_log_lines_total{plugin=\"echo\",stream=\"stdout\"} 10\n",
            "supervisor_log_lines_dropped_total{plugin=\"echo\",stream=\"stdout\"} 5\n",
            "supervisor_log_lines_total{plugin=\"echo\",stream=\"sdk\"} 3\n",
            "supervisor_log_forward_dropped_total 0\n",
        ] {
            assert!(text.contains(line), "{line}{text}");
        }
    }

    #[test]
    fn during_a_reload_each_instance_says_its_revision() {
        let old = row("echo", "stopping", None);
        let new = InstanceStatus { instance: "echo-1".into(), revision: 2, ..row("echo", "running", None) };
        let text = Metrics::default().render(&[old, new]);
        assert!(
            text.contains("supervisor_instance_up{plugin=\"echo\",plugin_instance=\"echo-0\",revision=\"1\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("supervisor_instance_up{plugin=\"echo\",plugin_instance=\"echo-1\",revision=\"2\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn calls_are_counted_by_plugin_and_code_and_timed() {
        let m = Metrics::default();
        let echo = m.plugin_calls("echo");
        echo.record(tonic::Code::Ok, Source::Plugin, Duration::from_micros(40));
        echo.record(tonic::Code::Ok, Source::Plugin, Duration::from_micros(60));
        // A second handle for the same plugin (another channel) adds up.
        m.plugin_calls("echo").record(tonic::Code::DeadlineExceeded, Source::Deadline, Duration::from_secs(2));
        let text = m.render(&[]);
        assert!(text.contains("supervisor_calls_total{plugin=\"echo\",code=\"OK\",source=\"plugin\"} 2\n"), "{text}");
        assert!(
            text.contains("supervisor_calls_total{plugin=\"echo\",code=\"DEADLINE_EXCEEDED\",source=\"deadline\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("supervisor_call_duration_seconds_count{plugin=\"echo\"} 3\n"), "{text}");
        // 40 µs and 60 µs fall at or under 0.0001 s; the 2 s call does not.
        assert!(text.contains("supervisor_call_duration_seconds_bucket{le=\"0.0001\",plugin=\"echo\"} 2\n"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn instances_show_state_restarts_and_usage() {
        let m = Metrics::default();
        m.add_plugin("auth");
        m.record_event("auth", EventKind::Exited);
        let usage = ResourceUsage {
            memory_current: 5 << 20,
            cpu_usage_usec: 1_500_000,
            pids_current: 4,
            oom_kills: 1,
            ..Default::default()
        };
        let text = m.render(&[row("echo", "running", Some(usage)), row("auth", "backoff", None)]);
        for line in [
            "supervisor_events_total{plugin=\"auth\",kind=\"exited\"} 1",
            "supervisor_instance_up{plugin=\"echo\",plugin_instance=\"echo-0\",revision=\"1\"} 1",
            "supervisor_instance_up{plugin=\"auth\",plugin_instance=\"auth-0\",revision=\"1\"} 0",
            "supervisor_instance_state{plugin=\"auth\",plugin_instance=\"auth-0\",revision=\"1\",state=\"backoff\"} 1",
            "supervisor_instance_restarts_total{plugin=\"echo\",plugin_instance=\"echo-0\",revision=\"1\"} 3",
            "supervisor_instance_uptime_seconds{plugin=\"echo\",plugin_instance=\"echo-0\",revision=\"1\"} 42",
            "supervisor_instance_memory_bytes{plugin=\"echo\",plugin_instance=\"echo-0\",revision=\"1\"} 5242880",
            "supervisor_instance_cpu_seconds_total{plugin=\"echo\",plugin_instance=\"echo-0\",revision=\"1\"} 1.5",
            "supervisor_instance_pids{plugin=\"echo\",plugin_instance=\"echo-0\",revision=\"1\"} 4",
            "supervisor_instance_oom_kills_total{plugin=\"echo\",plugin_instance=\"echo-0\",revision=\"1\"} 1",
        ] {
            assert!(text.contains(&format!("{line}\n")), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains("instance_memory_bytes{plugin=\"auth\""), "no usage, no series: {text}");
    }

    #[test]
    fn leaks_are_counted_flagged_and_forgotten_with_their_instance_and_plugin() {
        let m = Metrics::default();
        m.set_leak("echo", "echo-0", "memory", true, 2.5 * 1048576.0);
        m.set_leak("echo", "echo-0", "fds", false, 0.0);
        m.add_plugin("echo");
        m.record_leak("echo", "memory");
        m.record_leak("", "fds");
        m.set_own(&crate::leaks::probe::Own {
            rss_anon: Some(3 << 20),
            rss: Some(5 << 20),
            fds: Some(17),
            threads: Some(6),
            nofile: None,
        });
        let text = m.render(&[]);
        for line in [
            "supervisor_leak_suspected{plugin=\"echo\",plugin_instance=\"echo-0\",resource=\"memory\"} 1",
            "supervisor_leak_suspected{plugin=\"echo\",plugin_instance=\"echo-0\",resource=\"fds\"} 0",
            "supervisor_leak_slope{plugin=\"echo\",plugin_instance=\"echo-0\",resource=\"memory\"} 2621440.0",
            "supervisor_leaks_total{plugin=\"echo\",resource=\"memory\"} 1",
            "supervisor_leaks_total{plugin=\"\",resource=\"fds\"} 1",
            "supervisor_process_resident_memory_bytes 5242880",
            "supervisor_process_anon_memory_bytes 3145728",
            "supervisor_process_open_fds 17",
            "supervisor_process_threads 6",
        ] {
            assert!(text.contains(&format!("{line}\n")), "missing {line:?} in\n{text}");
        }
        m.forget_leaks("echo", "echo-0", &["memory", "fds"]);
        m.remove_plugin("echo");
        let text = m.render(&[]);
        assert!(!text.contains("plugin=\"echo\""), "{text}");
    }

    #[test]
    fn a_gone_instance_leaves_no_series() {
        let m = Metrics::default();
        assert!(m.render(&[row("echo", "running", None)]).contains("plugin_instance=\"echo-0\""));
        assert!(!m.render(&[]).contains("plugin_instance=\"echo-0\""));
    }

    /// Once a removed plugin is forgotten (its instances gone), what is said of it later
    /// (its cgroup removed at last by a retry, an hour on) makes no series: such a series
    /// came back, never to go, and a plugin added later under the name counted on from it.
    /// Nor does what is said of a plugin never configured (a rollout kept from before a
    /// restart, whose plugin is gone).
    #[test]
    fn what_is_said_of_a_plugin_no_longer_there_makes_no_series() {
        let m = Metrics::default();
        m.plugin_calls("gone").record(tonic::Code::Ok, Source::Plugin, Duration::from_micros(40));
        m.record_event("gone", EventKind::Exited);
        let removed = m.remove_plugin("gone");
        m.release("gone", removed);
        m.record_event("gone", EventKind::Teardown);
        m.record_teardown("gone", crate::observe::teardown::Outcome::Cleaned, Duration::from_millis(1));
        m.record_leak("gone", "memory");
        m.record_phase("gone", crate::observe::phases::Phase::Teardown, Duration::from_millis(1));
        m.record_event("never-configured", EventKind::Removed);
        let text = m.render(&[]);
        assert!(!text.contains("plugin=\"gone\"") && !text.contains("never-configured"), "{text}");
        // Added again, it counts from zero.
        m.add_plugin("gone");
        m.record_event("gone", EventKind::Teardown);
        assert!(m.render(&[]).contains("supervisor_events_total{plugin=\"gone\",kind=\"teardown\"} 1\n"));
    }

    #[test]
    fn a_removed_plugins_series_go_and_nothing_it_records_afterwards_brings_them_back() {
        let m = Metrics::default();
        let gone = m.plugin_calls("gone");
        gone.record(tonic::Code::Ok, Source::Plugin, Duration::from_micros(40));
        m.record_event("gone", EventKind::Exited);
        m.plugin_calls("stays").record(tonic::Code::Ok, Source::Plugin, Duration::from_micros(40));
        m.record_event("stays", EventKind::Exited);
        assert!(m.render(&[]).contains("supervisor_calls_total{plugin=\"gone\",code=\"OK\",source=\"plugin\"} 1\n"));

        let removed = m.remove_plugin("gone");
        // A call still in flight on a channel an embedded host holds ends now, with a code
        // seen before and with one not; an instance still draining says it stopped; a
        // handle is made for the name before any plugin has it again.
        gone.record(tonic::Code::Ok, Source::Plugin, Duration::from_micros(40));
        gone.record(tonic::Code::Unavailable, Source::Plugin, Duration::from_micros(40));
        m.record_event("gone", EventKind::Stopped);
        m.plugin_calls("gone").record(tonic::Code::Internal, Source::Plugin, Duration::from_micros(40));
        let text = m.render(&[]);
        assert!(!text.contains("plugin=\"gone\""), "{text}");
        for line in [
            "supervisor_calls_total{plugin=\"stays\",code=\"OK\",source=\"plugin\"} 1",
            "supervisor_call_duration_seconds_count{plugin=\"stays\"} 1",
            "supervisor_events_total{plugin=\"stays\",kind=\"exited\"} 1",
        ] {
            assert!(text.contains(&format!("{line}\n")), "missing {line:?} in\n{text}");
        }

        // Added back, a plugin of that name counts from zero; the old handle, nowhere.
        m.add_plugin("gone");
        let again = m.plugin_calls("gone");
        again.record(tonic::Code::Ok, Source::Plugin, Duration::from_micros(40));
        gone.record(tonic::Code::Ok, Source::Plugin, Duration::from_micros(40));
        m.record_event("gone", EventKind::Ready);
        // The removed one's instances are gone at last: the new one is left as it is.
        m.release("gone", removed);
        again.record(tonic::Code::Ok, Source::Plugin, Duration::from_micros(40));
        let text = m.render(&[]);
        for line in [
            "supervisor_calls_total{plugin=\"gone\",code=\"OK\",source=\"plugin\"} 2",
            "supervisor_call_duration_seconds_count{plugin=\"gone\"} 2",
            "supervisor_events_total{plugin=\"gone\",kind=\"ready\"} 1",
        ] {
            assert!(text.contains(&format!("{line}\n")), "missing {line:?} in\n{text}");
        }
        assert_eq!(text.matches("supervisor_events_total{plugin=\"gone\"").count(), 1, "{text}");
        assert_eq!(text.matches("supervisor_calls_total{plugin=\"gone\"").count(), 1, "{text}");
    }

    #[test]
    fn plugins_coming_and_going_leave_nothing_behind() {
        let m = Metrics::default();
        for i in 0..100 {
            let name = format!("p{i}");
            let calls = m.plugin_calls(&name);
            m.record_event(&name, EventKind::Ready);
            let removed = m.remove_plugin(&name);
            // Its channel is still held, and used, after its instances are gone.
            m.release(&name, removed);
            calls.record(tonic::Code::Unavailable, Source::Plugin, Duration::from_micros(40));
        }
        assert_eq!(lock(&m.plugins).len(), 0);
        assert!(!m.render(&[]).contains("plugin=\"p"), "{}", m.render(&[]));
    }

    /// The label names of every series in `text`.
    fn label_names(text: &str) -> Vec<String> {
        let mut names = Vec::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((_, rest)) = line.split_once('{') else { continue };
            let Some((labels, _)) = rest.rsplit_once('}') else { continue };
            for pair in labels.split("\",") {
                names.extend(pair.split_once('=').map(|(k, _)| k.trim_start_matches(',').to_owned()));
            }
        }
        names
    }

    #[test]
    fn no_series_has_a_label_prometheus_reserves_for_its_targets() {
        let m = Metrics::default();
        m.record_event("echo", EventKind::Exited);
        m.plugin_calls("echo").record(tonic::Code::Ok, Source::Plugin, Duration::from_micros(40));
        let usage = ResourceUsage { memory_current: 1, ..Default::default() };
        let names = label_names(&m.render(&[row("echo", "running", Some(usage))]));
        assert!(names.iter().any(|n| n == "plugin_instance"), "{names:?}");
        for reserved in ["instance", "job"] {
            assert!(!names.iter().any(|n| n == reserved), "a {reserved:?} label: {names:?}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::default();
        m.add_plugin("we\"ird\nname");
        m.record_event("we\"ird\nname", EventKind::Exited);
        let text = m.render(&[]);
        assert!(text.contains(r#"plugin="we\"ird\nname""#), "{text}");
    }
}
