//! Giving freed heap back to the system after a crowd has gone: glibc keeps
//! what thousands of connections, or of answers buffered for slow callers,
//! used in its arenas, and the daemon's RSS would stay at the peak. A trim
//! costs the allocations after it page faults and holds the allocator's
//! locks while it runs, so it never follows an ordinary call: only a crowd
//! going, at most once per [`TRIM_INTERVAL`] (a trim asked for sooner runs
//! when the interval is up), and off the runtime's thread.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

const TRIM_INTERVAL: Duration = Duration::from_secs(5);
/// Calls buffering much for slow callers at once that make a crowd (with
/// half a MiB each, a few MiB): one large answer to a caller with a small
/// window is not one.
const BIG_CROWD: usize = 8;

/// When to trim, and the calls buffering much now.
#[derive(Default)]
struct Policy {
    last: Option<Instant>,
    /// A trim is already set for later.
    scheduled: bool,
    big: usize,
    big_peak: usize,
}

/// What to do about a trim asked for.
#[derive(Debug, PartialEq, Eq)]
enum Ask {
    Now,
    At(Instant),
    /// One is set for later already.
    Nothing,
}

impl Policy {
    const fn new() -> Self {
        Self { last: None, scheduled: false, big: 0, big_peak: 0 }
    }

    fn ask(&mut self, now: Instant) -> Ask {
        if self.scheduled {
            return Ask::Nothing;
        }
        match self.last {
            Some(last) if now < last + TRIM_INTERVAL => {
                self.scheduled = true;
                Ask::At(last + TRIM_INTERVAL)
            }
            _ => {
                self.last = Some(now);
                Ask::Now
            }
        }
    }

    /// A trim set for later runs now.
    fn run_scheduled(&mut self, now: Instant) {
        self.scheduled = false;
        self.last = Some(now);
    }

    fn big_started(&mut self) {
        self.big += 1;
        self.big_peak = self.big_peak.max(self.big);
    }

    /// True when a crowd of big calls has mostly gone.
    fn big_ended(&mut self) -> bool {
        self.big = self.big.saturating_sub(1);
        if self.big_peak >= BIG_CROWD && self.big <= self.big_peak / 4 {
            self.big_peak = self.big;
            return true;
        }
        false
    }
}

static POLICY: Mutex<Policy> = Mutex::new(Policy::new());

fn policy() -> std::sync::MutexGuard<'static, Policy> {
    // Nothing panics while holding the lock; a poisoned one is still whole.
    POLICY.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A crowd (of connections, of big calls) has gone: give its memory back.
pub fn crowd_gone() {
    let ask = policy().ask(Instant::now());
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        if ask != Ask::Nothing {
            trim_heap();
        }
        return;
    };
    match ask {
        Ask::Now => drop(rt.spawn_blocking(trim_heap)),
        Ask::At(at) => drop(rt.spawn(async move {
            tokio::time::sleep_until(at).await;
            policy().run_scheduled(Instant::now());
            let _ = tokio::task::spawn_blocking(trim_heap).await;
        })),
        Ask::Nothing => {}
    }
}

fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator's own.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A call that has buffered much for a slow caller, while in flight.
pub struct BigCall(());

impl BigCall {
    pub fn new() -> Self {
        policy().big_started();
        Self(())
    }
}

impl Drop for BigCall {
    fn drop(&mut self) {
        let gone = policy().big_ended();
        if gone {
            crowd_gone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_calls_one_at_a_time_never_ask_for_a_trim() {
        let mut p = Policy::new();
        for _ in 0..1000 {
            p.big_started();
            assert!(!p.big_ended(), "a single large answer is no crowd");
        }
    }

    #[test]
    fn a_crowd_of_big_calls_asks_once_when_it_has_mostly_gone() {
        let mut p = Policy::new();
        for _ in 0..20 {
            p.big_started();
        }
        let asked: Vec<bool> = (0..20).map(|_| p.big_ended()).collect();
        // 20 → 5 left: gone; the peak is then 5, no crowd.
        assert_eq!(asked.iter().filter(|a| **a).count(), 1);
        assert!(asked[14]);
    }

    #[test]
    fn trims_run_at_most_once_per_interval_and_one_asked_for_sooner_runs_later() {
        let mut p = Policy::new();
        let t = Instant::now();
        assert_eq!(p.ask(t), Ask::Now);
        assert_eq!(p.ask(t + Duration::from_secs(1)), Ask::At(t + TRIM_INTERVAL));
        for s in 2..5 {
            assert_eq!(p.ask(t + Duration::from_secs(s)), Ask::Nothing, "one is set already");
        }
        p.run_scheduled(t + TRIM_INTERVAL);
        assert_eq!(p.ask(t + TRIM_INTERVAL + Duration::from_secs(1)), Ask::At(t + 2 * TRIM_INTERVAL));
        p.run_scheduled(t + 2 * TRIM_INTERVAL);
        assert_eq!(p.ask(t + 3 * TRIM_INTERVAL), Ask::Now);
    }
}
