//! What a plugin under test said: the records it sent to the host on fd 4
//! (served here as the supervisor serves `plugin.host.v1.Host`), and its
//! stdout and stderr, line by line.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use plugin_proto::host::v1::host_server::{Host, HostServer};
use plugin_proto::host::v1::{Level, LogRecord, LogSummary};
use tokio::io::{AsyncBufReadExt, AsyncReadExt};
use tokio::net::UnixStream;
use tokio::net::unix::pipe;
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};

use super::HarnessError;

/// Where a log line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogSource {
    /// A structured record sent to the host on fd 4 (the SDK's `tracing` events).
    Host,
    Stdout,
    Stderr,
}

/// One line of a plugin's logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    pub source: LogSource,
    /// The record's level; none for stdout and stderr.
    pub level: Option<tracing::Level>,
    /// The record's target (module path); empty for stdout and stderr.
    pub target: String,
    pub message: String,
    /// The record's structured fields, values as text.
    pub fields: BTreeMap<String, String>,
}

fn level(l: i32) -> Option<tracing::Level> {
    match Level::try_from(l).ok()? {
        Level::Trace => Some(tracing::Level::TRACE),
        Level::Debug => Some(tracing::Level::DEBUG),
        Level::Info => Some(tracing::Level::INFO),
        Level::Warn => Some(tracing::Level::WARN),
        Level::Error => Some(tracing::Level::ERROR),
        Level::Unspecified => None,
    }
}

impl From<LogRecord> for LogLine {
    fn from(r: LogRecord) -> Self {
        LogLine {
            source: LogSource::Host,
            level: level(r.level),
            target: r.target,
            message: r.message,
            fields: r.fields.into_iter().collect(),
        }
    }
}

/// The most lines a harness keeps of one plugin; older ones are dropped and counted.
pub const MAX_KEPT_LINES: usize = 100_000;
/// The most text (messages, targets, fields) a harness keeps of one plugin.
pub const MAX_KEPT_BYTES: usize = 64 * 1024 * 1024;

/// The lines kept, newest last, and how many older ones were dropped to keep within
/// [`MAX_KEPT_LINES`] and [`MAX_KEPT_BYTES`]: a plugin logging in a loop through a long
/// test (a soak, a fuzz run) filled the test's memory, and each new line made every
/// waiting test look at all of them again.
#[derive(Debug, Default)]
struct Kept {
    lines: VecDeque<LogLine>,
    bytes: usize,
    dropped: u64,
}

impl Kept {
    fn size(line: &LogLine) -> usize {
        line.message.len() + line.target.len() + line.fields.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
    }

    fn push(&mut self, line: LogLine) {
        self.bytes += Self::size(&line);
        self.lines.push_back(line);
        while self.lines.len() > MAX_KEPT_LINES || (self.bytes > MAX_KEPT_BYTES && self.lines.len() > 1) {
            let Some(old) = self.lines.pop_front() else { break };
            self.bytes -= Self::size(&old);
            self.dropped += 1;
        }
    }

    /// How many lines have come in all, the dropped ones included.
    fn total(&self) -> u64 {
        self.dropped + self.lines.len() as u64
    }
}

/// The lines so far, shared by the tasks that take them in.
#[derive(Clone, Debug)]
pub struct Logs(Arc<watch::Sender<Kept>>);

impl Default for Logs {
    fn default() -> Self {
        Self(Arc::new(watch::channel(Kept::default()).0))
    }
}

impl Logs {
    fn push(&self, line: LogLine) {
        self.0.send_modify(|kept| kept.push(line));
    }

    /// The lines kept, oldest first.
    pub fn snapshot(&self) -> Vec<LogLine> {
        self.0.borrow().lines.iter().cloned().collect()
    }

    /// How many of the oldest lines were dropped to stay within the harness's bounds.
    pub fn dropped(&self) -> u64 {
        self.0.borrow().dropped
    }

    /// The first line `matches` accepts, waiting up to `limit` for it. Each line is
    /// looked at once, as it comes.
    pub async fn wait_for(&self, matches: impl Fn(&LogLine) -> bool, limit: Duration) -> Result<LogLine, HarnessError> {
        let mut rx = self.0.subscribe();
        // Lines, counted from the plugin's first, already looked at.
        let mut looked: u64 = 0;
        let found = tokio::time::timeout(limit, async {
            loop {
                {
                    let kept = rx.borrow_and_update();
                    let new = usize::try_from(looked.saturating_sub(kept.dropped)).unwrap_or(usize::MAX);
                    if let Some(line) = kept.lines.iter().skip(new).find(|l| matches(l)) {
                        return Some(line.clone());
                    }
                    looked = kept.total();
                }
                rx.changed().await.ok()?;
            }
        })
        .await;
        found.ok().flatten().ok_or(HarnessError::NoSuchLog(limit))
    }

    /// The last lines of stderr, for an error that says why a plugin ended.
    pub fn stderr_tail(&self) -> String {
        let kept = self.0.borrow();
        let mut tail: Vec<&str> = kept
            .lines
            .iter()
            .rev()
            .filter(|l| l.source == LogSource::Stderr)
            .take(10)
            .map(|l| l.message.as_str())
            .collect();
        tail.reverse();
        tail.join("\n")
    }
}

struct Recorder(Logs);

#[tonic::async_trait]
impl Host for Recorder {
    async fn log(&self, req: Request<Streaming<LogRecord>>) -> Result<Response<LogSummary>, Status> {
        let mut records = req.into_inner();
        let mut received = 0;
        while let Some(record) = records.message().await? {
            self.0.push(record.into());
            received += 1;
        }
        Ok(Response::new(LogSummary { received }))
    }
}

/// Serves the host service on our end of the plugin's fd 4 until the plugin closes it.
pub async fn serve_host(conn: UnixStream, logs: Logs) {
    let incoming =
        futures_util::stream::once(async move { Ok::<_, std::io::Error>(conn) }).chain(futures_util::stream::pending());
    let served = tonic::transport::Server::builder()
        .add_service(HostServer::new(Recorder(logs)))
        .serve_with_incoming(incoming)
        .await;
    if let Err(e) = served {
        tracing::debug!(error = %e, "the test harness's host service ended");
    }
}

/// The longest stdout or stderr line kept, in bytes, as the supervisor keeps it.
const MAX_LINE: usize = 16 * 1024;

/// Reads `pipe` line by line into `logs` until the plugin closes it; a line longer than
/// [`MAX_LINE`] is cut there and marked ` [line truncated]`, the rest of it skipped, as the
/// supervisor does: a plugin writing an endless line does not fill the test's memory.
pub async fn read_lines(pipe: pipe::Receiver, source: LogSource, logs: Logs) {
    let mut reader = tokio::io::BufReader::new(pipe);
    let mut line = Vec::new();
    loop {
        line.clear();
        // One byte past the longest: a line of exactly that length, and its newline, is whole.
        match (&mut reader).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let cut = line.len() > MAX_LINE && line.last() != Some(&b'\n');
        line.truncate(MAX_LINE);
        let mut text = String::from_utf8_lossy(&line).trim_end_matches(['\n', '\r']).to_owned();
        if cut {
            text.push_str(" [line truncated]");
        }
        logs.push(LogLine { source, level: None, target: String::new(), message: text, fields: BTreeMap::new() });
        if cut && !skip_line(&mut reader).await {
            return;
        }
    }
}

/// Skips what is left of a line, its newline included; false once the pipe has ended.
async fn skip_line(reader: &mut (impl tokio::io::AsyncBufRead + Unpin)) -> bool {
    loop {
        let (used, ended) = match reader.fill_buf().await {
            Ok([]) | Err(_) => return false,
            Ok(buf) => match buf.iter().position(|b| *b == b'\n') {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            },
        };
        reader.consume(used);
        if ended {
            return true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(n: usize, text_len: usize) -> LogLine {
        let mut message = format!("#{n} ");
        message.extend(std::iter::repeat_n('x', text_len));
        LogLine { source: LogSource::Stdout, level: None, target: String::new(), message, fields: BTreeMap::new() }
    }

    /// A plugin logging without end keeps the newest lines within the bounds; the oldest
    /// are dropped and counted. Every line was kept, so a long test's memory grew with it.
    #[test]
    fn the_harness_keeps_the_newest_lines_within_its_bounds() {
        let logs = Logs::default();
        for n in 0..MAX_KEPT_LINES + 10 {
            logs.push(line(n, 0));
        }
        let kept = logs.snapshot();
        assert_eq!(kept.len(), MAX_KEPT_LINES);
        assert_eq!(kept[0].message, "#10 ");
        assert_eq!(kept.last().unwrap().message, format!("#{} ", MAX_KEPT_LINES + 9));
        assert_eq!(logs.dropped(), 10);
        // Long lines: the bytes bound, well before the lines' one.
        let logs = Logs::default();
        let per_line = 16 * 1024;
        let fit = MAX_KEPT_BYTES / (per_line + 8);
        for n in 0..fit + 100 {
            logs.push(line(n, per_line));
        }
        let kept: usize = logs.snapshot().iter().map(Kept::size).sum();
        assert!(kept <= MAX_KEPT_BYTES, "{kept} bytes kept");
        assert!(kept > MAX_KEPT_BYTES - 2 * (per_line + 8), "{kept} bytes kept");
        assert!(logs.dropped() >= 100, "{} dropped", logs.dropped());
    }

    /// A wait finds a line that came before it began and one that comes while it waits,
    /// even after older lines were dropped.
    #[tokio::test]
    async fn a_wait_finds_lines_kept_before_it_and_lines_that_come_during_it() {
        let logs = Logs::default();
        for n in 0..MAX_KEPT_LINES + 5 {
            logs.push(line(n, 0));
        }
        let limit = Duration::from_secs(10);
        let early = logs.wait_for(|l| l.message == "#7 ", limit).await.unwrap();
        assert_eq!(early.message, "#7 ");
        let gone = logs.wait_for(|l| l.message == "#3 ", Duration::from_millis(50)).await.unwrap_err();
        assert!(matches!(gone, HarnessError::NoSuchLog(_)), "{gone:?}");
        // Each line is looked at once: the waiter, woken after all of these came, looks at
        // the kept ones once before it waits and at each new one once, the first of them
        // (the line it waits for) included.
        let looks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let waiting = {
            let (logs, looks) = (logs.clone(), looks.clone());
            tokio::spawn(async move {
                let matches = |l: &LogLine| {
                    looks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    l.message == "late"
                };
                logs.wait_for(matches, limit).await
            })
        };
        tokio::task::yield_now().await;
        assert_eq!(looks.load(std::sync::atomic::Ordering::Relaxed), MAX_KEPT_LINES, "the kept lines, once");
        let mut late = line(0, 0);
        late.message = "late".into();
        logs.push(late);
        for n in 0..1000 {
            logs.push(line(n, 0));
        }
        assert_eq!(waiting.await.unwrap().unwrap().message, "late");
        assert_eq!(looks.load(std::sync::atomic::Ordering::Relaxed), MAX_KEPT_LINES + 1, "then the new one");
    }
}
