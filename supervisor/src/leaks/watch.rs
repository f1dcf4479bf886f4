//! One watched thing's usage over its window (an instance, or the supervisor itself): the
//! samples kept, judged now and then, and the leak episodes that follow: one report when
//! a rise is first suspected, kept as a note while it lasts, ended once a whole window has
//! passed without it.

use std::collections::VecDeque;
use std::time::Duration;

use super::trend;
use crate::config::leaks::LeaksConfig;
use crate::config::units::format_duration;

/// What is watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    /// Anonymous memory, bytes.
    Memory,
    /// Open file descriptors over all the processes.
    Fds,
    /// Processes and threads.
    Tasks,
    /// CPU use, percent of one core.
    Cpu,
}

impl Resource {
    pub const ALL: [Resource; 4] = [Resource::Memory, Resource::Fds, Resource::Tasks, Resource::Cpu];

    /// The `resource` label and the word the event uses. Interface.
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Memory => "memory",
            Resource::Fds => "fds",
            Resource::Tasks => "tasks",
            Resource::Cpu => "cpu",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The smallest rise per minute worth reporting, in the resource's unit.
    fn threshold(self, cfg: &LeaksConfig) -> f64 {
        match self {
            Resource::Memory => cfg.memory_per_min.0 as f64,
            Resource::Fds => cfg.fds_per_min,
            Resource::Tasks => cfg.tasks_per_min,
            Resource::Cpu => cfg.cpu_per_min,
        }
    }

    /// "+2.4 MiB/min", "+12/min", "+3.5%/min".
    fn rate(self, per_min: f64) -> String {
        match self {
            Resource::Memory if per_min >= MIB => format!("+{:.1} MiB/min", per_min / MIB),
            Resource::Memory => format!("+{:.0} KiB/min", per_min / 1024.0),
            Resource::Cpu => format!("+{:.1}%/min", per_min),
            Resource::Fds | Resource::Tasks if per_min >= 10.0 => format!("+{per_min:.0}/min"),
            Resource::Fds | Resource::Tasks => format!("+{per_min:.1}/min"),
        }
    }
}

const MIB: f64 = 1048576.0;

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One reading, each value `None` where this host (or this moment) has no source for it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reading {
    pub memory: Option<u64>,
    pub fds: Option<u64>,
    pub tasks: Option<u64>,
    /// Cumulative CPU time, microseconds (turned into a rate here).
    pub cpu_usec: Option<u64>,
}

/// A limit a rising resource runs into, as the operator wrote it ("memory_max 128M").
#[derive(Debug, Clone, PartialEq)]
pub struct Limit {
    pub name: &'static str,
    pub shown: String,
    /// In the resource's unit.
    pub value: f64,
}

/// The limits that apply now, per resource.
#[derive(Debug, Clone, Default)]
pub struct Limits(pub [Option<Limit>; 4]);

impl Limits {
    pub fn set(&mut self, r: Resource, limit: Limit) {
        self.0[r.index()] = Some(limit);
    }
}

/// A suspected leak while it lasts.
#[derive(Debug, Clone, PartialEq)]
pub struct Episode {
    pub resource: Resource,
    /// The rate when it was suspected, per minute.
    pub per_min: f64,
    /// `leak suspected: memory +2.4 MiB/min over 10m, reaches memory_max 128M in ~41m`.
    pub message: String,
    /// When it was last judged rising (seconds on the watch's clock).
    last_seen: f64,
}

/// About the most samples a series keeps (a ninth more at most, for the slack below): the
/// window is sampled more sparsely when it is longer than this many seconds, so memory
/// stays bounded whatever the window.
const MAX_SAMPLES: usize = 600;
/// The most points a judgement looks at (quadratic cost). Samples closer together than a
/// window over this many are merged into one point anyway.
pub const MAX_POINTS: usize = 60;

#[derive(Debug, Default)]
struct Series(VecDeque<(f64, f64)>);

#[derive(Debug, Default)]
pub struct Watch {
    series: [Series; 4],
    episodes: [Option<Episode>; 4],
    last_cpu: Option<(f64, u64)>,
    last_judged: Option<f64>,
}

impl Watch {
    /// Takes the reading made at `now` (seconds on any clock that only goes forward), and
    /// judges the window when it is due. Returns the episodes that began now.
    pub fn observe(&mut self, now: f64, reading: Reading, cfg: &LeaksConfig, limits: &Limits) -> Vec<Episode> {
        let window = cfg.window.as_secs_f64();
        let every = (window / MAX_SAMPLES as f64).max(0.0);
        let cpu = reading.cpu_usec.and_then(|usec| {
            let rate = self
                .last_cpu
                .and_then(|(t, before)| (now > t).then(|| usec.saturating_sub(before) as f64 / 1e4 / (now - t)));
            self.last_cpu = Some((now, usec));
            rate
        });
        let values =
            [reading.memory.map(|v| v as f64), reading.fds.map(|v| v as f64), reading.tasks.map(|v| v as f64), cpu];
        for (s, v) in self.series.iter_mut().zip(values) {
            // The window changes live with `update`: what is older than it goes, but for
            // the newest point at or before its start, so that the series spans the whole
            // window however the samples fall. Trimmed to the window itself, a series read
            // a little late each time (a busy host) never held a full window, and a leak was
            // never judged.
            while s.0.get(1).is_some_and(|(t, _)| *t <= now - window) {
                s.0.pop_front();
            }
            // A tenth of slack: a tick a hair early is not a sample lost.
            if let Some(v) = v
                && s.0.back().is_none_or(|(t, _)| now - t >= 0.9 * every)
            {
                s.0.push_back((now, v));
            }
        }
        let due = self.last_judged.is_none_or(|t| now - t >= 0.9 * (window / MAX_POINTS as f64).max(1.0));
        if !due {
            return Vec::new();
        }
        self.last_judged = Some(now);
        let mut began = Vec::new();
        for r in Resource::ALL {
            let series = &self.series[r.index()].0;
            // Judged only over a full window: a start's warm-up is a step in the first one.
            let full = series.front().is_some_and(|(t, _)| now - t >= 0.95 * window);
            let points: Vec<(f64, f64)> = series.iter().copied().collect();
            let verdict = full.then(|| trend::judge(&trend::reduce(&points, MAX_POINTS), cfg.significance));
            let per_min = verdict.map_or(0.0, |v| v.slope * 60.0);
            let suspected = verdict.is_some_and(|v| v.rising()) && per_min >= r.threshold(cfg);
            let slot = &mut self.episodes[r.index()];
            match (suspected, slot.as_mut()) {
                (true, Some(e)) => e.last_seen = now,
                (true, None) => {
                    let level = verdict.map_or(0.0, |v| v.level);
                    let e = Episode {
                        resource: r,
                        per_min,
                        message: message(r, per_min, cfg.window, level, limits.0[r.index()].as_ref()),
                        last_seen: now,
                    };
                    began.push(e.clone());
                    *slot = Some(e);
                }
                // Over once a whole window passed without it: a leak judged on and off
                // near its threshold is one episode, not one per judgement.
                (false, Some(e)) if now - e.last_seen >= window => *slot = None,
                (false, _) => {}
            }
        }
        began
    }

    /// The leaks suspected now.
    pub fn episodes(&self) -> impl Iterator<Item = &Episode> {
        self.episodes.iter().flatten()
    }

    pub fn suspected(&self, r: Resource) -> Option<&Episode> {
        self.episodes[r.index()].as_ref()
    }
}

/// `leak suspected: memory +2.4 MiB/min over 10m, reaches memory_max 128M in ~41m`; no
/// `reaches` clause without a limit.
pub fn message(r: Resource, per_min: f64, window: Duration, level: f64, limit: Option<&Limit>) -> String {
    let mut m = format!("leak suspected: {r} {} over {}", r.rate(per_min), format_duration(window));
    if let Some(l) = limit {
        let minutes = ((l.value - level) / per_min).max(0.0);
        m.push_str(&format!(", reaches {} {} in ~{}", l.name, l.shown, eta(minutes)));
    }
    m
}

/// "41m", "2h 5m", "40s": minutes once it is a minute or more.
fn eta(minutes: f64) -> String {
    let secs = (minutes * 60.0).min(1e9);
    let rounded = if secs >= 60.0 { (secs / 60.0).round() * 60.0 } else { secs.round() };
    format_duration(Duration::from_secs(rounded as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::units::ByteSize;

    fn cfg(window: u64) -> LeaksConfig {
        LeaksConfig { window: Duration::from_secs(window), ..LeaksConfig::default() }
    }

    fn memory_limit(bytes: u64) -> Limits {
        let mut l = Limits::default();
        l.set(Resource::Memory, Limit { name: "memory_max", shown: ByteSize(bytes).to_string(), value: bytes as f64 });
        l
    }

    #[test]
    fn the_message_says_the_rate_the_window_and_when_the_limit_is_reached() {
        let limit = memory_limit(128 << 20);
        let m = message(Resource::Memory, 2.4 * MIB, Duration::from_secs(600), 29.6 * MIB, limit.0[0].as_ref());
        assert_eq!(m, "leak suspected: memory +2.4 MiB/min over 10m, reaches memory_max 128M in ~41m");
        let pids = Limit { name: "pids_max", shown: "64".into(), value: 64.0 };
        assert_eq!(
            message(Resource::Tasks, 12.0, Duration::from_secs(15), 4.0, Some(&pids)),
            "leak suspected: tasks +12/min over 15s, reaches pids_max 64 in ~5m"
        );
        assert_eq!(
            message(Resource::Fds, 1.5, Duration::from_secs(3600), 40.0, None),
            "leak suspected: fds +1.5/min over 1h"
        );
        assert_eq!(
            message(Resource::Memory, 300.0 * 1024.0, Duration::from_secs(60), 0.0, None),
            "leak suspected: memory +300 KiB/min over 1m"
        );
        let cpu = Limit { name: "cpu", shown: "50%".into(), value: 50.0 };
        assert_eq!(
            message(Resource::Cpu, 30.0, Duration::from_secs(600), 40.0, Some(&cpu)),
            "leak suspected: cpu +30.0%/min over 10m, reaches cpu 50% in ~20s"
        );
    }

    #[test]
    fn a_steady_leak_is_reported_once_after_a_full_window_and_ends_a_window_after_it_stops() {
        let mut w = Watch::default();
        let c = cfg(20);
        let limits = memory_limit(256 << 20);
        let mut began = Vec::new();
        // 64 KiB a second, from 10 MiB: 3.75 MiB a minute.
        for t in 0..60u64 {
            let reading = Reading {
                memory: Some((10 << 20) + t * (64 << 10)),
                fds: Some(9),
                tasks: Some(3),
                cpu_usec: Some(t * 1000),
            };
            for e in w.observe(t as f64, reading, &c, &limits) {
                began.push((t, e));
            }
        }
        assert_eq!(began.len(), 1, "one report for one episode: {began:?}");
        let (at, e) = &began[0];
        assert_eq!(*at, 19, "judged first once the window is full");
        assert_eq!(e.resource, Resource::Memory);
        assert!(
            e.message.starts_with("leak suspected: memory +3.8 MiB/min over 20s, reaches memory_max 256M in ~"),
            "{}",
            e.message
        );
        assert!(w.suspected(Resource::Memory).is_some());
        assert!(w.suspected(Resource::Fds).is_none() && w.suspected(Resource::Cpu).is_none());
        // It stops: still suspected for a window, then over.
        let flat = Reading { memory: Some(200 << 20), ..Default::default() };
        for t in 60..75 {
            assert!(w.observe(t as f64, flat, &c, &limits).is_empty());
        }
        assert!(w.suspected(Resource::Memory).is_some(), "an episode outlives a judgement or two without it");
        for t in 75..100 {
            w.observe(t as f64, flat, &c, &limits);
        }
        assert!(w.suspected(Resource::Memory).is_none(), "a window without it ends it");
    }

    #[test]
    fn readings_a_little_late_each_time_still_fill_the_window_and_a_leak_is_judged() {
        let mut w = Watch::default();
        let c = cfg(10);
        let limits = Limits::default();
        // Read every 1.003 s (the sampler's reads wait on a busy host), 512 KiB a second.
        let mut began = None;
        for k in 0..30u64 {
            let now = k as f64 * 1.003;
            let reading = Reading { memory: Some((2 << 20) + k * (512 << 10)), ..Default::default() };
            if !w.observe(now, reading, &c, &limits).is_empty() {
                began = Some(now);
                break;
            }
        }
        let at = began.expect("a steady leak read a little late each time was never judged");
        assert!(at < 12.0, "judged {at} s in, not once the first window was full");
    }

    #[test]
    fn ticks_a_hair_early_lose_no_sample_and_no_judgement() {
        let mut w = Watch::default();
        let c = cfg(20);
        let mut began = Vec::new();
        for i in 0..25u64 {
            let t = i as f64 * 0.999;
            began.extend(
                w.observe(t, Reading { tasks: Some(3 + i), ..Default::default() }, &c, &Limits::default())
                    .into_iter()
                    .map(|e| (i, e)),
            );
        }
        assert_eq!(
            w.series[Resource::Tasks.index()].0.len(),
            22,
            "a window of 20 s, each tick kept, and the one before it"
        );
        assert_eq!(began.len(), 1, "{began:?}");
        assert_eq!(began[0].0, 20, "judged at the first tick with a full window");
    }

    #[test]
    fn a_rise_below_the_threshold_is_not_reported() {
        let mut w = Watch::default();
        let c = LeaksConfig { fds_per_min: 120.0, ..cfg(20) };
        for t in 0..40u64 {
            // One a second: 60 a minute, under 120.
            assert!(
                w.observe(t as f64, Reading { fds: Some(10 + t), ..Default::default() }, &c, &Limits::default())
                    .is_empty()
            );
        }
        let c = LeaksConfig { fds_per_min: 30.0, ..cfg(20) };
        let began = w.observe(40.0, Reading { fds: Some(50), ..Default::default() }, &c, &Limits::default());
        assert_eq!(began.len(), 1, "thresholds apply live");
        assert_eq!(began[0].message, "leak suspected: fds +60/min over 20s");
    }

    #[test]
    fn a_rising_cpu_rate_is_a_cpu_leak_and_a_steady_one_is_not() {
        let mut w = Watch::default();
        let c = cfg(20);
        let mut used = 0u64;
        for t in 0..30u64 {
            // Steady 50% of a core.
            used += 500_000;
            assert!(
                w.observe(t as f64, Reading { cpu_usec: Some(used), ..Default::default() }, &c, &Limits::default())
                    .is_empty()
            );
        }
        let mut w = Watch::default();
        let mut used = 0u64;
        let mut began = Vec::new();
        for t in 0..30u64 {
            // One more percent of a core each second: 60% a minute.
            used += t * 10_000;
            began.extend(w.observe(
                t as f64,
                Reading { cpu_usec: Some(used), ..Default::default() },
                &c,
                &Limits::default(),
            ));
        }
        assert_eq!(began.len(), 1, "{began:?}");
        assert_eq!(began[0].message, "leak suspected: cpu +60.0%/min over 20s");
    }

    #[test]
    fn a_long_window_keeps_a_bounded_sample_and_judges_now_and_then() {
        let mut w = Watch::default();
        let c = cfg(24 * 3600);
        let mut began = 0;
        for t in 0..(25 * 3600u64) {
            // 20 kB a second: 1.1 MiB a minute.
            let reading = Reading { memory: Some(t * 20_000), ..Default::default() };
            began += w.observe(t as f64, reading, &c, &Limits::default()).len();
        }
        assert!(w.series[0].0.len() <= MAX_SAMPLES * 10 / 9 + 1, "{}", w.series[0].0.len());
        assert_eq!(began, 1, "reported once, after a day");
    }
}
