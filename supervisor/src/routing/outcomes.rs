//! What one revision's calls came to: how many, how many failed in a way that means the
//! plugin failed, how many their callers gave up on, and their latencies, counted from
//! the moment the routing stack chose the revision. A rollout judges a step on the difference of two snapshots, so the
//! counters only ever grow and a snapshot is a few hundred loads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Latency buckets per doubling: a bucket is 2^(1/8) = 9% wide, fine enough that a p99
/// ratio near a threshold is not decided by where bucket edges fall, coarse enough to
/// stay a small fixed array (2 KiB per revision).
const PER_DOUBLING: f64 = 8.0;
/// Buckets from 1 µs up to 2^32 µs (71 minutes): longer calls share the last.
const BUCKETS: usize = 32 * PER_DOUBLING as usize + 1;

/// The codes that mean the plugin failed the call; the others are answers (a caller's bad
/// argument, a missing entity) or the caller's own doing (CANCELLED).
pub fn plugin_failed(code: tonic::Code) -> bool {
    use tonic::Code::{DataLoss, DeadlineExceeded, Internal, Unavailable, Unknown};
    matches!(code, Unknown | Internal | Unavailable | DeadlineExceeded | DataLoss)
}

/// The running counts of one revision.
#[derive(Debug)]
pub struct Outcomes {
    calls: AtomicU64,
    failed: AtomicU64,
    abandoned: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
}

impl Default for Outcomes {
    fn default() -> Self {
        Self {
            calls: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            abandoned: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Outcomes {
    /// One call that the plugin answered (or failed) with `code` after `took`. A call the
    /// caller gave up on (CANCELLED) says nothing of the plugin by itself: it is counted
    /// apart, see [`Outcomes::abandoned`].
    pub fn record(&self, code: tonic::Code, took: Duration) {
        if code == tonic::Code::Cancelled {
            self.abandoned();
            return;
        }
        self.calls.fetch_add(1, Ordering::Relaxed);
        if plugin_failed(code) {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        self.buckets[bucket(took)].fetch_add(1, Ordering::Relaxed);
    }

    /// One call its caller gave up on before the plugin answered: it hung up, or its own
    /// short deadline ran out. One such call is the caller's business; a revision whose
    /// calls callers give up on far more often than the other's is slow or hangs.
    pub fn abandoned(&self) {
        self.abandoned.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Tally {
        Tally {
            calls: self.calls.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            abandoned: self.abandoned.load(Ordering::Relaxed),
            buckets: self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect(),
        }
    }
}

fn bucket(took: Duration) -> usize {
    let us = took.as_micros().max(1) as f64;
    ((us.log2() * PER_DOUBLING).ceil() as usize).min(BUCKETS - 1)
}

/// The upper bound of bucket `i`.
fn upper(i: usize) -> Duration {
    Duration::from_secs_f64(2f64.powf(i as f64 / PER_DOUBLING) / 1e6)
}

/// Counts at one moment, or between two.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    pub calls: u64,
    pub failed: u64,
    /// Calls given up by their callers, not among `calls`.
    pub abandoned: u64,
    buckets: Vec<u64>,
}

impl Tally {
    /// What happened after `earlier` (a snapshot of the same revision).
    pub fn since(&self, earlier: &Tally) -> Tally {
        let buckets = self
            .buckets
            .iter()
            .enumerate()
            .map(|(i, n)| n.saturating_sub(earlier.buckets.get(i).copied().unwrap_or(0)))
            .collect();
        Tally {
            calls: self.calls.saturating_sub(earlier.calls),
            failed: self.failed.saturating_sub(earlier.failed),
            abandoned: self.abandoned.saturating_sub(earlier.abandoned),
            buckets,
        }
    }

    /// The share of calls that failed, 0 without calls.
    pub fn error_rate(&self) -> f64 {
        if self.calls == 0 { 0.0 } else { self.failed as f64 / self.calls as f64 }
    }

    /// The share of all its calls, answered or not, that their callers gave up on; 0
    /// without calls.
    pub fn abandon_rate(&self) -> f64 {
        let all = self.calls + self.abandoned;
        if all == 0 { 0.0 } else { self.abandoned as f64 / all as f64 }
    }

    /// The 99th percentile latency, as its bucket's upper bound (at most 9% over the
    /// truth); None without calls.
    pub fn p99(&self) -> Option<Duration> {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return None;
        }
        // The smallest latency at or above which 1% of the calls lie.
        let rank = total - total / 100;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(upper(i));
            }
        }
        Some(upper(BUCKETS - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_p99_is_within_a_bucket_of_the_truth() {
        let o = Outcomes::default();
        for i in 0..1000u64 {
            // 990 calls of 1 ms and 10 of 30 ms: the p99 is the 990th, 1 ms.
            o.record(tonic::Code::Ok, if i % 100 == 0 { ms(30) } else { ms(1) });
        }
        let p99 = o.snapshot().p99().unwrap();
        assert!(p99 >= ms(1) && p99 <= ms(1) * 11 / 10, "{p99:?}");
        for _ in 0..20 {
            o.record(tonic::Code::Ok, ms(30));
        }
        let p99 = o.snapshot().p99().unwrap();
        assert!(p99 >= ms(30) && p99 <= ms(33), "with 3% slow calls the p99 is slow: {p99:?}");
    }

    #[test]
    fn only_codes_that_mean_the_plugin_failed_are_failures_and_cancelled_calls_are_not_counted() {
        let o = Outcomes::default();
        for code in [
            tonic::Code::Ok,
            tonic::Code::InvalidArgument,
            tonic::Code::NotFound,
            tonic::Code::Internal,
            tonic::Code::Unavailable,
            tonic::Code::DeadlineExceeded,
            tonic::Code::Cancelled,
        ] {
            o.record(code, ms(1));
        }
        let t = o.snapshot();
        assert_eq!((t.calls, t.failed), (6, 3));
        assert!((t.error_rate() - 0.5).abs() < 1e-9);
    }

    #[test]
    fn a_window_is_the_difference_of_two_snapshots() {
        let o = Outcomes::default();
        for _ in 0..100 {
            o.record(tonic::Code::Ok, ms(100));
        }
        let start = o.snapshot();
        for _ in 0..50 {
            o.record(tonic::Code::Internal, Duration::from_micros(200));
        }
        let window = o.snapshot().since(&start);
        assert_eq!((window.calls, window.failed), (50, 50));
        assert!(window.p99().unwrap() < ms(1), "the slow calls before the window are not in it");
        assert_eq!(Tally::default().p99(), None);
    }
}
