//! Each plugin's captured output (stdout, stderr and SDK log records) in a
//! bounded ring for `supervisorctl tail`, which `tail -f` reads on from;
//! the plugin's log rate limit, what it kept and dropped per stream, and the
//! "suppressed N messages" note each reader leaves where it dropped lines.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use plugin_proto::control::v1::LogLine;

use super::limit::{Bucket, DropBudget, LogLimit, line_cost};
use super::ring::{Follower, Ring};

/// Where a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
    /// Records the plugin's SDK sent over the Host service (fd 4).
    Sdk,
}

impl Stream {
    pub const ALL: [Stream; 3] = [Stream::Stdout, Stream::Stderr, Stream::Sdk];

    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::Sdk => "sdk",
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    kept: AtomicU64,
    dropped: AtomicU64,
}

#[derive(Debug)]
pub struct LogBuffer {
    plugin: Arc<str>,
    ring: Ring<LogLine>,
    bucket: Mutex<Bucket>,
    counts: [Counts; 3],
}

/// Lines one plugin's stream kept and dropped since it was added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamCounts {
    pub stream: Stream,
    pub kept: u64,
    pub dropped: u64,
}

/// The bytes a plugin's buffer may hold for each line of `log_lines`. A line may be up
/// to ~96 KiB (an SDK record's message, target and fields), so a bound on the count alone
/// let 2000 lines hold ~190 MiB per plugin; with this, the default 2000 hold at most
/// 4 MiB, while lines of ordinary size still fill all 2000.
pub const LOG_BYTES_PER_LINE: usize = 2 * 1024;

/// What a kept line is counted as holding: its strings, and the struct and map entries
/// around them, which a flood of empty lines would otherwise hold for free.
pub fn line_bytes(line: &LogLine) -> usize {
    const LINE: usize = 128;
    const FIELD: usize = 64;
    let fields: usize = line.fields.iter().map(|(k, v)| FIELD + k.len() + v.len()).sum();
    LINE + line.instance.len() + line.stream.len() + line.level.len() + line.text.len() + fields
}

impl LogBuffer {
    /// Keeps the last `capacity` lines, within `capacity` × [`LOG_BYTES_PER_LINE`] bytes.
    pub fn new(plugin: &str, capacity: usize, limit: LogLimit) -> Self {
        Self {
            plugin: plugin.into(),
            ring: Ring::bounded(capacity, capacity.saturating_mul(LOG_BYTES_PER_LINE), line_bytes),
            bucket: Mutex::new(Bucket::new(limit, Instant::now())),
            counts: Default::default(),
        }
    }

    pub fn plugin(&self) -> &str {
        &self.plugin
    }

    /// The limit from now on (a live config change, or a new revision promoted).
    pub fn set_limit(&self, limit: LogLimit) {
        self.bucket.lock().unwrap_or_else(PoisonError::into_inner).set_limit(limit);
    }

    pub fn limit(&self) -> LogLimit {
        self.bucket.lock().unwrap_or_else(PoisonError::into_inner).limit()
    }

    /// Keeps `line` for `tail` and forwards it to the daemon's output (when forwarding is
    /// on). Lines reach here through a [`Gate`], or are the supervisor's own notes.
    pub fn push(&self, line: LogLine) {
        super::forward::send(&self.plugin, &line);
        self.ring.push(line);
    }

    /// The last `n` lines and a follower reading on from after them.
    pub fn subscribe(&self, n: usize) -> (Vec<LogLine>, Follower<LogLine>) {
        self.ring.subscribe(n)
    }

    /// A reader of the last `n` lines in place, then of what comes next.
    pub fn read_back(&self, n: usize) -> Follower<LogLine> {
        self.ring.read_back(n)
    }

    /// What each stream kept and dropped, for metrics.
    pub fn counts(&self) -> [StreamCounts; 3] {
        Stream::ALL.map(|stream| {
            let c = &self.counts[stream as usize];
            StreamCounts { stream, kept: c.kept.load(Ordering::Relaxed), dropped: c.dropped.load(Ordering::Relaxed) }
        })
    }

    /// Whether the rate limit lets one more line of `stream`, `len` bytes long, through;
    /// counted either way.
    fn take(&self, stream: Stream, now: Instant, len: usize) -> bool {
        let kept = self.bucket.lock().unwrap_or_else(PoisonError::into_inner).take(now, line_cost(len));
        let c = &self.counts[stream as usize];
        if kept { &c.kept } else { &c.dropped }.fetch_add(1, Ordering::Relaxed);
        kept
    }

    fn count_dropped(&self, stream: Stream, n: u64) {
        let dropped = &self.counts[stream as usize].dropped;
        let _ = dropped.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| Some(d.saturating_add(n)));
    }
}

/// A budget for lines read only to be dropped, shared by the readers that draw on it: one
/// per pipe, one per instance for all its SDK streams (a plugin that opens many streams
/// does not get a budget for each).
pub type SharedBudget = Arc<Mutex<DropBudget>>;

pub fn budget() -> SharedBudget {
    Arc::new(Mutex::new(DropBudget::new(Instant::now())))
}

/// The most lines one SDK record may say were lost before it (`dropped_before`). The SDK
/// counts what it drops while its stream is stalled, which can be many more than its
/// buffer holds; but a plugin cannot have produced more than four billion records
/// between two it sent, and a count from a bad plugin then cannot peg the metric.
pub const MAX_LOST: u64 = u32::MAX as u64;

/// One reader's way into its plugin's buffer (one instance's stdout, stderr or SDK log
/// stream): the rate limit, the budget for lines read only to be dropped, and the count
/// of lines dropped since the last one kept, said as "suppressed N messages" in front of
/// the next kept line (or when the reader ends) with the stream and instance they were
/// dropped from, as journald does.
#[derive(Debug)]
pub struct Gate {
    buffer: Arc<LogBuffer>,
    instance: String,
    stream: Stream,
    suppressed: u64,
    budget: SharedBudget,
}

impl Gate {
    /// A reader with a drop budget of its own.
    pub fn new(buffer: Arc<LogBuffer>, instance: String, stream: Stream) -> Self {
        Self::sharing(buffer, instance, stream, budget())
    }

    /// A reader drawing on `budget` with others.
    pub fn sharing(buffer: Arc<LogBuffer>, instance: String, stream: Stream, budget: SharedBudget) -> Self {
        Self { buffer, instance, stream, suppressed: 0, budget }
    }

    fn budget(&self) -> std::sync::MutexGuard<'_, DropBudget> {
        self.budget.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether to keep a line of `len` bytes read now. A kept line costs the rate limit a
    /// token per started KiB; a dropped one costs the drop budget its length (at least
    /// [`super::limit::DROP_LINE_COST`]).
    pub fn admit(&mut self, len: usize) -> bool {
        self.admit_costing(len, len)
    }

    /// As [`Self::admit`], for a line of `len` bytes that cost `read` bytes' worth of work
    /// to take in (an SDK record's framing and decoding), charged if it is dropped.
    pub fn admit_costing(&mut self, len: usize, read: usize) -> bool {
        if self.buffer.take(self.stream, Instant::now(), len) {
            self.note();
            true
        } else {
            self.suppressed = self.suppressed.saturating_add(1);
            self.budget().spend(read);
            false
        }
    }

    /// `len` bytes were read and thrown away that belong to no kept line (the rest of a
    /// line cut at its longest): charged to the drop budget as they are.
    pub fn skipped(&mut self, len: usize) {
        self.budget().spend_bytes(len);
    }

    /// `n` lines were lost before they reached the supervisor (the SDK dropped them
    /// because its stream was read slowly): dropped, as far as the operator can tell.
    /// Taken as at most [`MAX_LOST`]: the count is the plugin's word.
    pub fn lost(&mut self, n: u64) {
        let n = n.min(MAX_LOST);
        self.suppressed = self.suppressed.saturating_add(n);
        self.buffer.count_dropped(self.stream, n);
    }

    /// How long to leave the source unread before the next read, if at all.
    pub fn pause(&mut self) -> Option<Duration> {
        self.budget().pause(Instant::now())
    }

    /// A line of this reader's instance and stream.
    pub fn line(&self, level: &str, text: String, fields: std::collections::HashMap<String, String>) -> LogLine {
        LogLine {
            unix_nanos: super::unix_nanos(),
            instance: self.instance.clone(),
            stream: self.stream.as_str().to_owned(),
            level: level.to_owned(),
            text,
            fields,
        }
    }

    pub fn push(&self, line: LogLine) {
        self.buffer.push(line);
    }

    fn note(&mut self) {
        if self.suppressed == 0 {
            return;
        }
        let n = std::mem::take(&mut self.suppressed);
        let limit = self.buffer.limit();
        let fields = [("suppressed".to_owned(), n.to_string())].into();
        let text =
            format!("suppressed {n} messages (over the plugin's log_rate {}/s, log_burst {})", limit.rate, limit.burst);
        self.buffer.push(self.line("warn", text, fields));
    }
}

impl Drop for Gate {
    /// A reader that ends (its pipe closed, its stream ended or failed, its instance
    /// stopped) says what it dropped last.
    fn drop(&mut self) {
        self.note();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(b: &LogBuffer) -> Vec<String> {
        b.subscribe(usize::MAX).0.into_iter().map(|l| format!("{} {} {}", l.instance, l.stream, l.text)).collect()
    }

    #[test]
    fn dropped_lines_are_counted_and_said_at_the_gap_with_stream_and_instance() {
        let b = Arc::new(LogBuffer::new("p", 100, LogLimit { rate: 1, burst: 2 }));
        let mut out = Gate::new(b.clone(), "p-0".into(), Stream::Stdout);
        let mut err = Gate::new(b.clone(), "p-1".into(), Stream::Stderr);
        for i in 0..5 {
            if out.admit(10) {
                out.push(out.line("", format!("out {i}"), Default::default()));
            }
        }
        // The bucket is the plugin's: another instance's stream finds it empty too.
        assert!(!err.admit(10));
        b.set_limit(LogLimit { rate: 1_000_000, burst: 100 });
        std::thread::sleep(Duration::from_millis(5));
        assert!(out.admit(10));
        out.push(out.line("", "out 5".into(), Default::default()));
        drop(err);
        assert_eq!(
            texts(&b),
            [
                "p-0 stdout out 0",
                "p-0 stdout out 1",
                "p-0 stdout suppressed 3 messages (over the plugin's log_rate 1000000/s, log_burst 100)",
                "p-0 stdout out 5",
                "p-1 stderr suppressed 1 messages (over the plugin's log_rate 1000000/s, log_burst 100)",
            ]
        );
        let note = &b.subscribe(3).0[0];
        assert_eq!(note.level, "warn");
        assert_eq!(note.fields["suppressed"], "3");
        let counts = b.counts();
        assert_eq!(counts[0], StreamCounts { stream: Stream::Stdout, kept: 3, dropped: 3 });
        assert_eq!(counts[1], StreamCounts { stream: Stream::Stderr, kept: 0, dropped: 1 });
        assert_eq!(counts[2], StreamCounts { stream: Stream::Sdk, kept: 0, dropped: 0 });
    }

    #[test]
    fn what_the_sdk_lost_counts_as_dropped() {
        let b = Arc::new(LogBuffer::new("p", 100, LogLimit::default()));
        let mut sdk = Gate::new(b.clone(), "p-0".into(), Stream::Sdk);
        sdk.lost(40);
        assert!(sdk.admit(10));
        assert_eq!(b.counts()[2], StreamCounts { stream: Stream::Sdk, kept: 1, dropped: 40 });
        assert!(texts(&b)[0].starts_with("p-0 sdk suppressed 40 messages"), "{:?}", texts(&b));
    }

    #[test]
    fn a_lost_count_from_the_plugin_cannot_overflow() {
        let b = Arc::new(LogBuffer::new("p", 100, LogLimit::default()));
        let mut sdk = Gate::new(b.clone(), "p-0".into(), Stream::Sdk);
        for _ in 0..3 {
            sdk.lost(u64::MAX);
        }
        assert!(sdk.admit(10));
        let dropped = b.counts()[2].dropped;
        assert_eq!(dropped, 3 * MAX_LOST, "{dropped}");
        assert!(texts(&b)[0].starts_with(&format!("p-0 sdk suppressed {dropped} messages")), "{:?}", texts(&b));
    }

    fn line(i: usize, text_len: usize) -> LogLine {
        let fields = [("target".to_owned(), "t".repeat(text_len)), (format!("k{i}"), "v".repeat(text_len))];
        LogLine {
            instance: "p-0".into(),
            stream: "sdk".into(),
            text: format!("{i:08}{}", "x".repeat(text_len)),
            fields: fields.into(),
            ..Default::default()
        }
    }

    #[test]
    fn large_lines_are_kept_within_the_byte_bound_newest_first() {
        let b = LogBuffer::new("p", 2000, LogLimit::default());
        let bound = 2000 * LOG_BYTES_PER_LINE;
        // Records as large as the SDK's are kept: ~96 KiB each.
        for i in 0..300 {
            b.push(line(i, 32 * 1024));
        }
        let kept = b.subscribe(usize::MAX).0;
        let held: usize = kept.iter().map(line_bytes).sum();
        assert!(held <= bound, "{held} bytes held, over {bound}");
        assert!(held + line_bytes(&kept[0]) > bound, "no more went than needed: {held} of {bound}");
        assert_eq!(kept.len(), 41, "4000 KiB of ~96 KiB lines");
        let numbers: Vec<usize> = kept.iter().map(|l| l.text[..8].parse().unwrap()).collect();
        assert_eq!(numbers, (259..300).collect::<Vec<_>>(), "the newest, in order");
        assert_eq!(b.subscribe(1).0[0].text[..8], *"00000299");
    }

    #[test]
    fn lines_of_ordinary_size_still_fill_log_lines() {
        let b = LogBuffer::new("p", 2000, LogLimit::default());
        for i in 0..2500 {
            b.push(line(i, 300));
        }
        let kept = b.subscribe(usize::MAX).0;
        assert_eq!(kept.len(), 2000);
        assert_eq!(kept[0].text[..8], *"00000500");
    }

    #[test]
    fn a_reader_that_only_drops_is_paused() {
        let b = Arc::new(LogBuffer::new("p", 10, LogLimit { rate: 1, burst: 1 }));
        let mut g = Gate::new(b, "p-0".into(), Stream::Stdout);
        // 1 MiB of 100-byte lines is about 10,500 of them.
        let mut admitted = 0;
        for _ in 0..20_000 {
            admitted += usize::from(g.admit(100));
        }
        assert!(admitted <= 2, "{admitted}");
        assert!(g.pause().is_some_and(|wait| wait > Duration::from_millis(50)), "{:?}", g.pause());
    }
}
