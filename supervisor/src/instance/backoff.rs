//! Delays between restarts: exponential with jitter and a cap, reset after
//! an instance stays up; and crash-loop detection, so a plugin that keeps
//! dying is reported as such while it keeps being retried at the cap.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::Backoff;

/// Failures within this window count towards a crash loop.
const LOOP_WINDOW: Duration = Duration::from_secs(120);
/// This many failures within the window is a crash loop.
const LOOP_FAILURES: usize = 5;

#[derive(Debug)]
pub struct Restarts {
    cfg: Backoff,
    consecutive: u32,
    recent: VecDeque<Instant>,
}

impl Restarts {
    pub fn new(cfg: Backoff) -> Self {
        Self { cfg, consecutive: 0, recent: VecDeque::new() }
    }

    /// Called when an instance that was running ends; a long run forgives
    /// earlier failures.
    pub fn ran_for(&mut self, d: Duration) {
        if d >= self.cfg.reset_after {
            self.consecutive = 0;
            self.recent.clear();
        }
    }

    /// Records a failure at `now` and returns the delay before the next try.
    pub fn next_delay(&mut self, now: Instant, jitter_unit: f64) -> Duration {
        self.recent.push_back(now);
        while self.recent.front().is_some_and(|t| now.duration_since(*t) > LOOP_WINDOW) {
            self.recent.pop_front();
        }
        let exp = self.cfg.multiplier.powi(self.consecutive.min(64) as i32);
        self.consecutive = self.consecutive.saturating_add(1);
        let base = self.cfg.initial.as_secs_f64() * exp;
        let capped = base.min(self.cfg.max.as_secs_f64());
        // jitter_unit in [0, 1) spreads the delay over ±jitter.
        let factor = 1.0 + self.cfg.jitter * (2.0 * jitter_unit - 1.0);
        // A max near Duration::MAX is 2^64 s as an f64, one past what a
        // Duration holds: fall back to the cap instead of panicking.
        Duration::try_from_secs_f64((capped * factor).clamp(0.0, self.cfg.max.as_secs_f64())).unwrap_or(self.cfg.max)
    }

    /// Some(count) when the recent failures make a crash loop.
    pub fn crash_loop(&self) -> Option<usize> {
        (self.recent.len() >= LOOP_FAILURES).then_some(self.recent.len())
    }

    pub fn reset(&mut self) {
        self.consecutive = 0;
        self.recent.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Backoff {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
            multiplier: 2.0,
            jitter: 0.0,
            reset_after: Duration::from_secs(10),
        }
    }

    #[test]
    fn delays_double_up_to_the_cap_and_stay_there() {
        let mut r = Restarts::new(cfg());
        let now = Instant::now();
        let delays: Vec<_> = (0..8).map(|_| r.next_delay(now, 0.5).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 2000, 2000, 2000]);
    }

    #[test]
    fn jitter_spreads_but_never_exceeds_the_cap() {
        let mut c = cfg();
        c.jitter = 0.5;
        let mut lo = Restarts::new(c);
        let mut hi = Restarts::new(c);
        let now = Instant::now();
        assert_eq!(lo.next_delay(now, 0.0), Duration::from_millis(50));
        assert_eq!(hi.next_delay(now, 0.999_999).as_millis(), 149);
        for _ in 0..10 {
            assert!(hi.next_delay(now, 0.999_999) <= c.max);
        }
    }

    #[test]
    fn five_quick_failures_are_a_crash_loop_and_a_long_run_forgives() {
        let mut r = Restarts::new(cfg());
        let now = Instant::now();
        for _ in 0..4 {
            r.next_delay(now, 0.5);
        }
        assert_eq!(r.crash_loop(), None);
        r.next_delay(now, 0.5);
        assert_eq!(r.crash_loop(), Some(5));
        r.ran_for(Duration::from_secs(11));
        assert_eq!(r.crash_loop(), None);
        assert_eq!(r.next_delay(now, 0.5), Duration::from_millis(100));
    }

    #[test]
    fn the_largest_configurable_durations_do_not_panic() {
        let max = crate::config::units::MAX_DURATION;
        let mut c = cfg();
        (c.initial, c.max, c.multiplier, c.jitter) = (max, max, 100.0, 1.0);
        let mut r = Restarts::new(c);
        let now = Instant::now();
        for unit in [0.0, 0.5, 0.999_999] {
            assert!(r.next_delay(now, unit) <= max);
        }
    }

    #[test]
    fn old_failures_leave_the_window() {
        let mut r = Restarts::new(cfg());
        let t0 = Instant::now();
        for _ in 0..4 {
            r.next_delay(t0, 0.5);
        }
        r.next_delay(t0 + LOOP_WINDOW + Duration::from_secs(1), 0.5);
        assert_eq!(r.crash_loop(), None);
    }
}
