//! What a plugin under test said: the records it sent to the host on fd 4
//! (served here as the supervisor serves `plugin.host.v1.Host`), and its
//! stdout and stderr, line by line.

use std::collections::BTreeMap;
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

/// Every line so far, shared by the tasks that take them in.
#[derive(Clone, Debug)]
pub struct Logs(Arc<watch::Sender<Vec<LogLine>>>);

impl Default for Logs {
    fn default() -> Self {
        Self(Arc::new(watch::channel(Vec::new()).0))
    }
}

impl Logs {
    fn push(&self, line: LogLine) {
        self.0.send_modify(|lines| lines.push(line));
    }

    pub fn snapshot(&self) -> Vec<LogLine> {
        self.0.borrow().clone()
    }

    /// The first line `matches` accepts, waiting up to `limit` for it.
    pub async fn wait_for(&self, matches: impl Fn(&LogLine) -> bool, limit: Duration) -> Result<LogLine, HarnessError> {
        let mut rx = self.0.subscribe();
        let lines = tokio::time::timeout(limit, rx.wait_for(|lines| lines.iter().any(&matches)))
            .await
            .map_err(|_| HarnessError::NoSuchLog(limit))?
            .map_err(|_| HarnessError::NoSuchLog(limit))?;
        lines.iter().find(|l| matches(l)).cloned().ok_or(HarnessError::NoSuchLog(limit))
    }

    /// The last lines of stderr, for an error that says why a plugin ended.
    pub fn stderr_tail(&self) -> String {
        let lines = self.0.borrow();
        let stderr: Vec<&str> =
            lines.iter().filter(|l| l.source == LogSource::Stderr).map(|l| l.message.as_str()).collect();
        stderr[stderr.len().saturating_sub(10)..].join("\n")
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
