//! What `top` shows: each plugin and its instances, from two looks at the
//! daemon in a row. An instance's CPU is the growth of its cgroup's CPU time
//! between the daemon's last two readings of it over the time between them
//! (the daemon reads each cgroup about once a second, whenever we ask); a
//! plugin's calls per second, error rate and p99 are its call counters'
//! growth between our two looks (the daemon counts calls per plugin, not per
//! instance).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use plugin_proto::control::v1::{InstanceStatus, ResourceUsage};

use super::calls::{Calls, Rates};

/// One look at the daemon.
#[derive(Clone, Debug)]
pub struct Sample {
    /// When the counters were read, for the time between two looks.
    pub taken: Instant,
    /// The same moment on the wall clock, to show.
    pub unix_nanos: u64,
    pub instances: Vec<InstanceStatus>,
    /// Each plugin's call counters.
    pub calls: BTreeMap<String, Calls>,
}

/// One instance as `top` shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct InstanceRow {
    pub instance: String,
    pub revision: u64,
    pub state: String,
    pub pid: Option<u32>,
    /// Percent of one CPU, as top and systemd-cgtop count it; None until two readings.
    pub cpu: Option<f64>,
    pub memory: Option<u64>,
    pub tasks: Option<u64>,
}

/// One plugin: its instances' sums, and its calls.
#[derive(Clone, Debug, PartialEq)]
pub struct PluginRow {
    pub name: String,
    /// The instances' state when they share one, else how many of them run ("1/2 running").
    pub state: String,
    pub cpu: Option<f64>,
    pub memory: Option<u64>,
    pub tasks: Option<u64>,
    pub calls: Rates,
    /// By CPU, the busiest first.
    pub instances: Vec<InstanceRow>,
}

/// Everything shown at one refresh.
#[derive(Clone, Debug, PartialEq)]
pub struct View {
    pub unix_nanos: u64,
    /// The time between the two looks the calls are counted over.
    pub interval: Duration,
    /// By CPU, the busiest first.
    pub plugins: Vec<PluginRow>,
}

/// The looks taken so far: the last one, and each instance's last two distinct
/// readings of its cgroup.
#[derive(Debug, Default)]
pub struct History {
    last: Option<Sample>,
    /// By instance: the reading before the last one, and the last one.
    readings: HashMap<String, (Option<ResourceUsage>, ResourceUsage)>,
}

impl History {
    /// Takes in a new look; from the second one on, what it shows.
    pub fn push(&mut self, now: Sample) -> Option<View> {
        let shown: HashSet<&str> = now.instances.iter().map(|i| i.instance.as_str()).collect();
        self.readings.retain(|id, _| shown.contains(id.as_str()));
        for i in &now.instances {
            let Some(u) = i.usage.filter(|u| u.read_unix_nanos != 0) else {
                // No process, no reading: a new one starts afresh.
                self.readings.remove(&i.instance);
                continue;
            };
            match self.readings.get_mut(&i.instance) {
                Some((_, last)) if last.read_unix_nanos == u.read_unix_nanos => {}
                Some((before, last)) => *before = Some(std::mem::replace(last, u)),
                None => {
                    self.readings.insert(i.instance.clone(), (None, u));
                }
            }
        }
        let view = self.last.as_ref().map(|before| self.view(before, &now));
        self.last = Some(now);
        view
    }

    fn view(&self, before: &Sample, now: &Sample) -> View {
        let interval = now.taken.saturating_duration_since(before.taken);
        let mut by_plugin: BTreeMap<&str, Vec<InstanceRow>> = BTreeMap::new();
        for i in &now.instances {
            let usage = i.usage.as_ref();
            let cpu =
                self.readings.get(&i.instance).and_then(|(b, last)| b.as_ref().and_then(|b| cpu_percent(b, last)));
            by_plugin.entry(i.name.as_str()).or_default().push(InstanceRow {
                instance: i.instance.clone(),
                revision: i.revision,
                state: i.state.clone(),
                pid: (i.pid != 0).then_some(i.pid),
                cpu,
                memory: usage.map(|u| u.memory_current),
                tasks: usage.map(|u| u.pids_current),
            });
        }
        let mut plugins: Vec<PluginRow> = by_plugin
            .into_iter()
            .map(|(name, mut instances)| {
                instances.sort_by(|a, b| busiest(a.cpu, b.cpu).then_with(|| a.instance.cmp(&b.instance)));
                let calls =
                    now.calls.get(name).map_or_else(Rates::default, |c| c.since(before.calls.get(name), interval));
                PluginRow {
                    name: name.to_owned(),
                    state: summary(&instances),
                    cpu: sum(instances.iter().map(|i| i.cpu)),
                    memory: sum(instances.iter().map(|i| i.memory)),
                    tasks: sum(instances.iter().map(|i| i.tasks)),
                    calls,
                    instances,
                }
            })
            .collect();
        plugins.sort_by(|a, b| busiest(a.cpu, b.cpu).then_with(|| a.name.cmp(&b.name)));
        View { unix_nanos: now.unix_nanos, interval, plugins }
    }
}

/// Percent of one CPU used between two readings of a cgroup; None when they
/// cannot tell (the same moment, or a counter that went down: a new cgroup).
pub fn cpu_percent(before: &ResourceUsage, now: &ResourceUsage) -> Option<f64> {
    let nanos = now.read_unix_nanos.checked_sub(before.read_unix_nanos).filter(|n| *n > 0)?;
    let used_usec = now.cpu_usage_usec.checked_sub(before.cpu_usage_usec)?;
    Some(used_usec as f64 * 1e3 / nanos as f64 * 100.0)
}

/// The busier first; what is not known last.
fn busiest(a: Option<f64>, b: Option<f64>) -> std::cmp::Ordering {
    b.unwrap_or(-1.0).total_cmp(&a.unwrap_or(-1.0))
}

/// The sum of what is known; None when nothing is.
fn sum<T: std::iter::Sum<T>>(values: impl Iterator<Item = Option<T>>) -> Option<T> {
    let known: Vec<T> = values.flatten().collect();
    if known.is_empty() { None } else { Some(known.into_iter().sum()) }
}

fn summary(instances: &[InstanceRow]) -> String {
    match instances.first() {
        Some(first) if instances.iter().all(|i| i.state == first.state) => first.state.clone(),
        _ => {
            let running = instances.iter().filter(|i| i.state == "running").count();
            format!("{running}/{} running", instances.len())
        }
    }
}

impl View {
    /// The instances shown, and how many of them run.
    pub fn instance_counts(&self) -> (usize, usize) {
        let all = self.plugins.iter().flat_map(|p| &p.instances);
        let running = all.clone().filter(|i| i.state == "running").count();
        (all.count(), running)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn instance(name: &str, n: u32, state: &str, usage: Option<(u64, u64, u64)>) -> InstanceStatus {
        InstanceStatus {
            name: name.into(),
            instance: format!("{name}-{n}"),
            state: state.into(),
            revision: 1,
            pid: usage.map_or(0, |_| 100 + n),
            usage: usage.map(|(cpu_usage_usec, read_unix_nanos, memory_current)| ResourceUsage {
                cpu_usage_usec,
                read_unix_nanos,
                memory_current,
                pids_current: 3,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn sample(start: Instant, at_s: u64, instances: Vec<InstanceStatus>, calls: &[(&str, f64)]) -> Sample {
        Sample {
            taken: start + Duration::from_secs(at_s),
            unix_nanos: 1_796_316_305 * SEC + at_s * SEC,
            instances,
            calls: calls
                .iter()
                .map(|(p, n)| ((*p).to_owned(), Calls { total: *n, failed: 0.0, buckets: vec![] }))
                .collect(),
        }
    }

    #[test]
    fn cpu_is_the_cgroups_time_over_the_time_between_its_readings() {
        let before = ResourceUsage { cpu_usage_usec: 1_000_000, read_unix_nanos: 10 * SEC, ..Default::default() };
        // 250 ms of CPU in 500 ms: half a CPU.
        let now =
            ResourceUsage { cpu_usage_usec: 1_250_000, read_unix_nanos: 10 * SEC + SEC / 2, ..Default::default() };
        assert_eq!(cpu_percent(&before, &now), Some(50.0));
        assert_eq!(cpu_percent(&now, &now), None, "one reading tells nothing");
        let restarted = ResourceUsage { cpu_usage_usec: 10, read_unix_nanos: 11 * SEC, ..Default::default() };
        assert_eq!(cpu_percent(&now, &restarted), None, "a new cgroup's counter starts again");
    }

    #[test]
    fn the_first_look_shows_nothing_and_the_second_the_rates_between_them() {
        let t = Instant::now();
        let mut h = History::default();
        assert_eq!(
            h.push(sample(t, 0, vec![instance("echo", 0, "running", Some((0, SEC, 10)))], &[("echo", 100.0)])),
            None
        );
        let v = h
            .push(sample(t, 2, vec![instance("echo", 0, "running", Some((400_000, 2 * SEC, 10)))], &[("echo", 300.0)]))
            .unwrap();
        assert_eq!(v.interval, Duration::from_secs(2));
        let echo = &v.plugins[0];
        assert_eq!(echo.calls.per_second, 100.0);
        assert_eq!(echo.instances[0].cpu, Some(40.0));
        assert_eq!((echo.memory, echo.tasks, echo.state.as_str()), (Some(10), Some(3), "running"));
        assert_eq!(echo.instances[0].pid, Some(100));
    }

    #[test]
    fn a_reading_seen_again_keeps_the_cpu_of_the_last_two_distinct_ones() {
        let t = Instant::now();
        let mut h = History::default();
        h.push(sample(t, 0, vec![instance("echo", 0, "running", Some((0, SEC, 1)))], &[]));
        h.push(sample(t, 1, vec![instance("echo", 0, "running", Some((100_000, 2 * SEC, 1)))], &[]));
        // The daemon had not read the cgroup again: the same reading, the same CPU.
        let v = h.push(sample(t, 2, vec![instance("echo", 0, "running", Some((100_000, 2 * SEC, 1)))], &[])).unwrap();
        assert_eq!(v.plugins[0].instances[0].cpu, Some(10.0));
        // A stopped instance has no reading; started again, it needs two new ones.
        let v = h.push(sample(t, 3, vec![instance("echo", 0, "backoff", None)], &[])).unwrap();
        assert_eq!((v.plugins[0].instances[0].cpu, v.plugins[0].cpu, v.plugins[0].memory), (None, None, None));
        let v = h.push(sample(t, 4, vec![instance("echo", 0, "running", Some((5, 5 * SEC, 1)))], &[])).unwrap();
        assert_eq!(v.plugins[0].instances[0].cpu, None);
    }

    #[test]
    fn plugins_and_their_instances_are_sorted_by_cpu_with_sums_and_a_state_summary() {
        let t = Instant::now();
        let looks = |at: u64, busy: u64| {
            vec![
                instance("idle", 0, "running", Some((0, at * SEC, 5))),
                instance("busy", 0, "running", Some((at * 10_000, at * SEC, 5))),
                instance("busy", 1, "backoff", None),
                instance("busy", 2, "running", Some((at * busy, at * SEC, 7))),
            ]
        };
        let mut h = History::default();
        h.push(sample(t, 1, looks(1, 500_000), &[]));
        let v = h.push(sample(t, 2, looks(2, 500_000), &[])).unwrap();
        let names: Vec<&str> = v.plugins.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["busy", "idle"]);
        let busy = &v.plugins[0];
        let order: Vec<&str> = busy.instances.iter().map(|i| i.instance.as_str()).collect();
        assert_eq!(order, ["busy-2", "busy-0", "busy-1"], "unknown CPU last");
        assert_eq!(busy.cpu, Some(51.0));
        assert_eq!((busy.memory, busy.tasks), (Some(12), Some(6)));
        assert_eq!(busy.state, "2/3 running");
        assert_eq!(busy.calls, Rates::default(), "no calls counted: none per second");
        assert_eq!(v.instance_counts(), (4, 3));
    }
}
