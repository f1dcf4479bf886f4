//! What keeps a plugin's log output from flooding the supervisor: the per-plugin rate
//! limit on lines kept (`log_rate`, `log_burst`), and the budget each reader has for
//! reading lines it then drops, beyond which it leaves the plugin's pipe (or log stream)
//! unread for a while.
//!
//! Why both: dropping alone still costs a read, a copy and a scan for every byte a
//! plugin writes, so a plugin writing as fast as it can would cost the supervisor a core;
//! pausing alone would make any plugin that logs a little over its rate block in
//! `write()` and slow down with its logs. Dropping up to a budget and pausing beyond it
//! keeps a plugin that logs somewhat too much running at full speed, and makes one that
//! floods wait on its own pipe, which costs the supervisor nothing.

use std::time::{Duration, Instant};

/// A plugin's log rate limit, from its `[[plugin]]` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimit {
    /// Lines kept per second, on average (`log_rate`).
    pub rate: u32,
    /// Lines kept at once after a quiet time (`log_burst`).
    pub burst: u32,
}

/// A thousand lines a second is more than a person reads and more than a healthy service
/// logs; each kept line costs the supervisor a few microseconds (ring, followers, the
/// forwarded copy), so the limit keeps a flood at a fraction of a percent of a core. The
/// burst lets a start-up or a crash say two seconds' worth at once.
impl Default for LogLimit {
    fn default() -> Self {
        Self { rate: 1000, burst: 2000 }
    }
}

/// The largest `log_rate` and `log_burst` the config accepts: beyond, the limit no longer
/// bounds what a flood costs.
pub const MAX_LOG_RATE: u32 = 100_000;
pub const MAX_LOG_BURST: u32 = 1_000_000;

/// A token bucket of lines, shared by every stream of every instance of a plugin.
///
/// Once empty it keeps dropping until a second's worth (or the burst, if smaller) has come
/// back, then keeps that many at once: on average it keeps exactly `rate` lines a second,
/// as a plain token bucket would, but a flood shows in `tail` as runs of kept lines and
/// one "suppressed N messages" per gap, not one line kept and one suppressed note per
/// millisecond.
#[derive(Debug)]
pub struct Bucket {
    limit: LogLimit,
    tokens: f64,
    last: Instant,
    suppressing: bool,
}

impl Bucket {
    /// A full bucket.
    pub fn new(limit: LogLimit, now: Instant) -> Self {
        Self { limit, tokens: f64::from(limit.burst), last: now, suppressing: false }
    }

    pub fn limit(&self) -> LogLimit {
        self.limit
    }

    /// The limit from now on; what was saved up stays, up to the new burst.
    pub fn set_limit(&mut self, limit: LogLimit) {
        self.limit = limit;
        self.tokens = self.tokens.min(f64::from(limit.burst));
    }

    /// Whether one more line, worth `cost` tokens (see [`line_cost`]), may be kept at
    /// `now`. A line dearer than the burst costs the burst: it can still be kept after a
    /// quiet time.
    pub fn take(&mut self, now: Instant, cost: u32) -> bool {
        let cost = f64::from(cost.clamp(1, self.limit.burst.max(1)));
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * f64::from(self.limit.rate)).min(f64::from(self.limit.burst));
        if self.suppressing {
            let resume = f64::from(self.limit.rate.min(self.limit.burst).max(1));
            if self.tokens < resume {
                return false;
            }
            self.suppressing = false;
        }
        if self.tokens >= cost {
            self.tokens -= cost;
            true
        } else {
            self.suppressing = true;
            false
        }
    }
}

/// The tokens a kept line of `len` bytes costs: one per started KiB. `log_rate` lines of
/// a few words, or a sixteenth as many of the longest (16 KiB), so that what is kept,
/// stored and forwarded is bounded in bytes too (about `log_rate` KiB a second), not only
/// in lines.
pub fn line_cost(len: usize) -> u32 {
    u32::try_from(len.div_ceil(1024).max(1)).unwrap_or(u32::MAX)
}

/// What one reader may read and drop per second: about 10,000 lines of 40 bytes. At this
/// rate reading and dropping costs the supervisor well under 1% of a core (measured:
/// README, "Logs that cannot flood"); a plugin that writes more waits on its pipe.
pub const DROP_BYTES_PER_SEC: f64 = 1024.0 * 1024.0;
/// Each dropped line or record counts at least this many bytes against the budget: the
/// work per line (a split, a lock, a count) matters more than its length for short ones.
pub const DROP_LINE_COST: usize = 64;
/// A paused reader waits until the budget has this much again: one read's worth, so that
/// a flood is read in few large reads rather than many small ones.
const RESUME_BYTES: f64 = 64.0 * 1024.0;

/// One reader's budget for dropped lines (a token bucket of bytes).
#[derive(Debug)]
pub struct DropBudget {
    bytes: f64,
    last: Instant,
}

impl DropBudget {
    pub fn new(now: Instant) -> Self {
        Self { bytes: DROP_BYTES_PER_SEC, last: now }
    }

    /// A line (or record) of `len` bytes was read and dropped.
    pub fn spend(&mut self, len: usize) {
        self.bytes -= len.max(DROP_LINE_COST) as f64;
    }

    /// `len` bytes were read and thrown away that are not a line of their own (the rest
    /// of a line cut at its longest): charged as they are.
    pub fn spend_bytes(&mut self, len: usize) {
        self.bytes -= len as f64;
    }

    /// How long the reader must leave its source unread before the next read, if at all.
    pub fn pause(&mut self, now: Instant) -> Option<Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.bytes = (self.bytes + elapsed * DROP_BYTES_PER_SEC).min(DROP_BYTES_PER_SEC);
        (self.bytes < 0.0).then(|| Duration::from_secs_f64((RESUME_BYTES - self.bytes) / DROP_BYTES_PER_SEC))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(b: &mut Bucket, at: Instant, n: usize) -> usize {
        (0..n).filter(|_| b.take(at, 1)).count()
    }

    #[test]
    fn a_full_bucket_keeps_the_burst_then_drops() {
        let t0 = Instant::now();
        let mut b = Bucket::new(LogLimit { rate: 10, burst: 30 }, t0);
        assert_eq!(kept(&mut b, t0, 100), 30);
        // Tokens trickle back, but one gap is one run of drops: nothing is kept until a
        // second's worth is back.
        assert_eq!(kept(&mut b, t0 + Duration::from_millis(500), 100), 0);
        assert_eq!(kept(&mut b, t0 + Duration::from_millis(1000), 100), 10);
    }

    #[test]
    fn under_a_flood_it_keeps_the_rate_on_average() {
        let t0 = Instant::now();
        let limit = LogLimit { rate: 1000, burst: 2000 };
        let mut b = Bucket::new(limit, t0);
        // 100,000 lines a second for ten seconds, one every 10 µs.
        let kept = (0..1_000_000u64).filter(|i| b.take(t0 + Duration::from_micros(i * 10), 1)).count();
        // The burst, then 1000 a second (the last run may be cut by the end).
        assert!((10_000..=12_000).contains(&kept), "{kept}");
    }

    #[test]
    fn long_lines_cost_a_token_per_started_kib() {
        assert_eq!((line_cost(0), line_cost(1024), line_cost(1025), line_cost(16 * 1024)), (1, 1, 2, 16));
        let t0 = Instant::now();
        let mut b = Bucket::new(LogLimit { rate: 1000, burst: 2000 }, t0);
        // The burst is 2000 short lines, or 125 of 16 KiB.
        assert_eq!((0..1000).filter(|_| b.take(t0, line_cost(16 * 1024))).count(), 125);
        // A line dearer than the whole burst is kept once the burst is back.
        let mut tiny = Bucket::new(LogLimit { rate: 1, burst: 2 }, t0);
        assert!(tiny.take(t0, 16));
        assert!(!tiny.take(t0, 16));
    }

    #[test]
    fn lines_under_the_rate_are_all_kept() {
        let t0 = Instant::now();
        let mut b = Bucket::new(LogLimit { rate: 100, burst: 1 }, t0);
        assert!((0..1000u64).all(|i| b.take(t0 + Duration::from_millis(i * 10), 1)));
    }

    #[test]
    fn a_lower_limit_takes_effect_at_once() {
        let t0 = Instant::now();
        let mut b = Bucket::new(LogLimit::default(), t0);
        b.set_limit(LogLimit { rate: 1, burst: 3 });
        assert_eq!(kept(&mut b, t0, 100), 3);
    }

    #[test]
    fn the_readme_example_is_valid_and_says_the_defaults() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
        let section = &readme[readme.find("## Plugin logs").unwrap()..];
        let block = &section[section.find("```toml\n").unwrap() + 8..];
        let block = &block[..block.find("```").unwrap()];
        let block = block.replace("binary = \"chatty\"", "binary = \"/bin/true\"");
        let text = format!("[supervisor.sandbox]\nallow_unsandboxed = true\n{block}tier = \"none\"\n");
        let config: crate::config::Config = text.parse().unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(config.specs()[0].log_limit, LogLimit::default());
        assert!(section.contains(&format!("about {} MiB a second", DROP_BYTES_PER_SEC / (1024.0 * 1024.0))));
        assert!(section.contains(&format!("at least {DROP_LINE_COST} bytes")));
    }

    #[test]
    fn a_reader_over_its_drop_budget_pauses_until_a_read_is_affordable() {
        let t0 = Instant::now();
        let mut d = DropBudget::new(t0);
        d.spend(512 * 1024);
        assert_eq!(d.pause(t0), None);
        for _ in 0..1000 {
            d.spend(1);
        }
        // 1000 one-byte lines count 64 bytes each.
        assert_eq!(d.pause(t0), None);
        d.spend(512 * 1024);
        let wait = d.pause(t0).expect("over budget");
        let expected = (64.0 * 1000.0 + 64.0 * 1024.0) / DROP_BYTES_PER_SEC;
        assert!((wait.as_secs_f64() - expected).abs() < 1e-3, "{wait:?}");
        assert_eq!(d.pause(t0 + wait), None);
    }
}
