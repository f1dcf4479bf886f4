//! The phases of an instance's life, each timed: how long verifying its image, spawning
//! its process, the handshake, init and first health check took to bring it up, and the
//! drain and teardown that took it down. They go to one histogram
//! (`supervisor_phase_duration_seconds{plugin,phase}`), to the `ready` and `stopped`
//! events, and to `status --phases`.

use std::time::{Duration, Instant};

/// One phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// The binary verified into its image (digest, signature, ELF); a cached image is a
    /// look at the file's stamp.
    Verify,
    /// From the launch request to a process running the plugin (cgroup, namespaces,
    /// clone, exec).
    Spawn,
    /// HTTP/2 on its connection and the handshake answered and checked.
    Handshake,
    /// The plugin's config handed over and accepted.
    Init,
    /// The first `grpc.health.v1` check answered.
    Health,
    /// From asking it to stop to its process gone.
    Drain,
    /// What was held for it released (its cgroup leaves removed, its descriptors closed).
    Teardown,
}

impl Phase {
    pub const ALL: [Phase; 7] =
        [Phase::Verify, Phase::Spawn, Phase::Handshake, Phase::Init, Phase::Health, Phase::Drain, Phase::Teardown];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Verify => "verify",
            Phase::Spawn => "spawn",
            Phase::Handshake => "handshake",
            Phase::Init => "init",
            Phase::Health => "health",
            Phase::Drain => "drain",
            Phase::Teardown => "teardown",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Phases as they were timed, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Timings(pub Vec<(Phase, Duration)>);

impl Timings {
    pub fn push(&mut self, phase: Phase, took: Duration) {
        self.0.push((phase, took));
    }

    pub fn total(&self) -> Duration {
        self.0.iter().map(|(_, d)| *d).sum()
    }

    pub fn get(&self, phase: Phase) -> Option<Duration> {
        self.0.iter().find(|(p, _)| *p == phase).map(|(_, d)| *d)
    }
}

/// Milliseconds with one decimal, as the events print them.
pub fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

impl std::fmt::Display for Timings {
    /// `spawn 0.6, handshake 0.9, init 0.4` (milliseconds).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(p, d)| format!("{p} {}", ms(*d))).collect();
        f.write_str(&parts.join(", "))
    }
}

/// Times the phases of one start or one stop.
#[derive(Debug)]
pub struct Stopwatch {
    at: Instant,
    timings: Timings,
}

impl Default for Stopwatch {
    fn default() -> Self {
        Self { at: Instant::now(), timings: Timings::default() }
    }
}

impl Stopwatch {
    /// `phase` ended now; the next one begins.
    pub fn lap(&mut self, phase: Phase) -> Duration {
        let now = Instant::now();
        let took = now.duration_since(self.at);
        self.at = now;
        self.timings.push(phase, took);
        took
    }

    pub fn timings(&self) -> &Timings {
        &self.timings
    }

    pub fn into_timings(self) -> Timings {
        self.timings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn laps_are_consecutive_and_print_as_the_events_say_them() {
        let mut w = Stopwatch::default();
        std::thread::sleep(Duration::from_millis(2));
        let spawn = w.lap(Phase::Spawn);
        let handshake = w.lap(Phase::Handshake);
        assert!(spawn >= Duration::from_millis(2) && handshake < spawn, "{spawn:?} {handshake:?}");
        assert_eq!(w.timings().get(Phase::Spawn), Some(spawn));
        assert_eq!(w.timings().get(Phase::Init), None);
        let t = Timings(vec![(Phase::Spawn, Duration::from_micros(600)), (Phase::Init, Duration::from_micros(1460))]);
        assert_eq!(t.to_string(), "spawn 0.6, init 1.5");
        assert_eq!(ms(t.total()), "2.1");
    }
}
