//! Sends the plugin's `tracing` events to the supervisor as structured log
//! records over the host connection (fd 4), keeping their fields.
//!
//! The buffer is bounded, in records and in bytes, and never blocks the plugin: when the
//! supervisor reads slowly, records are dropped and the count travels with the next one.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use plugin_proto::host::v1::{Level, LogRecord, host_client::HostClient};
use plugin_proto::transport::H2Channel;
use tokio::sync::{mpsc, watch};
use tracing::field::{Field, Visit};
use tracing_log::AsLog;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::{EnvFilter, Layer};

/// Records buffered before dropping starts.
const BUFFER: usize = 4096;

/// Bytes of records buffered (their text: see [`size`]) before dropping starts, whatever
/// their count: 4096 records cut to what the supervisor keeps could hold gigabytes. Ordinary
/// records (a few hundred bytes) reach [`BUFFER`] first; the largest record a callsite can
/// make (about half a MiB, see [`cut`]) fits an empty buffer.
const MAX_BUFFERED_BYTES: usize = 1 << 20;

/// The longest message or field value a record carries, in bytes, its ` [truncated]` mark
/// included: what the supervisor keeps of one (docs/protocol.md, "record text").
const MAX_TEXT: usize = 16 * 1024;

/// Environment variable holding the plugin's log filter (`info` by default).
pub const FILTER_ENV: &str = "PLUGIN_LOG";

/// The tasks that carry the log stream: the host connection's driver, the stream's writer
/// and the transport's pump of its records. Their own events are not forwarded: each would
/// go out in a frame whose sending is an event again (h2 logs every frame at debug, and more
/// at trace), for ever, with the plugin idle, drowning its records within the supervisor's
/// `log_rate`. Tokio never reuses a task's id; there are a few of them.
static CARRIERS: Mutex<Vec<tokio::task::Id>> = Mutex::new(Vec::new());

/// Marks the task `id` as one that carries the log stream.
pub fn carrier(id: tokio::task::Id) {
    if let Ok(mut carriers) = CARRIERS.lock()
        && !carriers.contains(&id)
    {
        carriers.push(id);
    }
}

/// Whether the running task carries the log stream.
fn carrying() -> bool {
    tokio::task::try_id().is_some_and(|id| CARRIERS.lock().is_ok_and(|carriers| carriers.contains(&id)))
}

struct HostLayer {
    tx: mpsc::Sender<LogRecord>,
    dropped: Arc<AtomicU64>,
    /// The bytes of the records in `tx`'s buffer, given back as [`Buffered`] takes them.
    bytes: Arc<AtomicUsize>,
}

/// The records waiting to be sent, as the log stream takes them.
struct Buffered {
    rx: mpsc::Receiver<LogRecord>,
    bytes: Arc<AtomicUsize>,
}

impl Buffered {
    async fn recv(&mut self) -> Option<LogRecord> {
        let r = self.rx.recv().await;
        self.taken(r)
    }

    fn try_recv(&mut self) -> Option<LogRecord> {
        let r = self.rx.try_recv().ok();
        self.taken(r)
    }

    fn taken(&self, r: Option<LogRecord>) -> Option<LogRecord> {
        if let Some(r) = &r {
            self.bytes.fetch_sub(size(r), Ordering::AcqRel);
        }
        r
    }
}

/// The buffer between the plugin's events and the log stream.
fn buffer() -> (HostLayer, Buffered) {
    let (tx, rx) = mpsc::channel(BUFFER);
    let bytes = Arc::<AtomicUsize>::default();
    (HostLayer { tx, dropped: Arc::default(), bytes: bytes.clone() }, Buffered { rx, bytes })
}

/// What a record holds in the buffer, as counted against [`MAX_BUFFERED_BYTES`]: its text.
fn size(r: &LogRecord) -> usize {
    r.message.len() + r.target.len() + r.fields.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
}

#[derive(Default)]
struct Fields {
    message: String,
    fields: HashMap<String, String>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.fields.insert(field.name().to_owned(), value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.fields.insert(field.name().to_owned(), format!("{value:?}"));
        }
    }
}

fn level(l: &tracing::Level) -> Level {
    match *l {
        tracing::Level::TRACE => Level::Trace,
        tracing::Level::DEBUG => Level::Debug,
        tracing::Level::INFO => Level::Info,
        tracing::Level::WARN => Level::Warn,
        tracing::Level::ERROR => Level::Error,
    }
}

impl<S: tracing::Subscriber> Layer<S> for HostLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        // Only the transport's crates and this one log from the tasks that carry the log
        // stream: the plugin's own events are not held up by the lock `carrying` takes.
        let transport = ["h2", "hyper", "tonic", "tower", "tokio", "plugin_sdk"]
            .iter()
            .any(|c| meta.target().strip_prefix(c).is_some_and(|rest| rest.is_empty() || rest.starts_with("::")));
        if transport && carrying() {
            return;
        }
        let mut f = Fields::default();
        event.record(&mut f);
        let unix_nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
        // Cut here, not only by the supervisor: a record over its 4 MiB message limit ends
        // the whole log stream, and the process's later records with it; and the buffer
        // holds records, so what it may hold is bounded only if each record is.
        let record = LogRecord {
            unix_nanos,
            level: level(meta.level()) as i32,
            target: cut(meta.target().to_owned()),
            message: cut(f.message),
            fields: {
                let mut fields = f.fields;
                for v in fields.values_mut() {
                    *v = cut(std::mem::take(v));
                }
                fields
            },
            dropped_before: self.dropped.swap(0, Ordering::Relaxed),
        };
        let bytes = size(&record);
        let room = self.bytes.fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
            (b.saturating_add(bytes) <= MAX_BUFFERED_BYTES).then_some(b + bytes)
        });
        if room.is_err() {
            self.dropped.fetch_add(1 + record.dropped_before, Ordering::Relaxed);
            return;
        }
        if let Err(mpsc::error::TrySendError::Full(r) | mpsc::error::TrySendError::Closed(r)) = self.tx.try_send(record)
        {
            self.bytes.fetch_sub(bytes, Ordering::AcqRel);
            self.dropped.fetch_add(1 + r.dropped_before, Ordering::Relaxed);
        }
    }
}

/// `s` cut to [`MAX_TEXT`] bytes at a character boundary, ending in ` [truncated]` when cut
/// (the supervisor's mark, so it keeps the cut record as it is). A field's name is a
/// `tracing` callsite's identifier, and a callsite has at most 32 fields: a record cut so is
/// at most about 1 MiB.
fn cut(mut s: String) -> String {
    const MARK: &str = " [truncated]";
    if s.len() > MAX_TEXT {
        let mut end = MAX_TEXT - MARK.len();
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str(MARK);
    }
    s
}

/// The plugin's log filter: [`FILTER_ENV`] when set, else `info`.
fn filter() -> EnvFilter {
    let (filter, said) = filter_from(std::env::var(FILTER_ENV));
    if let Some(said) = said {
        // Before any subscriber exists: stderr, which the supervisor keeps.
        eprintln!("{said}");
    }
    filter
}

/// The filter `value` (of [`FILTER_ENV`]) gives, and what to say when it gives none: a
/// value that does not parse was taken for `info` without a word.
fn filter_from(value: Result<String, std::env::VarError>) -> (EnvFilter, Option<String>) {
    let info = || EnvFilter::new("info");
    match value {
        Err(std::env::VarError::NotPresent) => (info(), None),
        Err(std::env::VarError::NotUnicode(v)) => {
            (info(), Some(format!("ignoring {FILTER_ENV}={v:?}: not UTF-8 text; logging at info")))
        }
        Ok(v) => match EnvFilter::try_new(&v) {
            Ok(filter) => (filter, None),
            Err(e) => (info(), Some(format!("ignoring {FILTER_ENV}={v:?}: {e}; logging at info"))),
        },
    }
}

/// The running log stream; [`LogStream::flush`] ends it once every buffered
/// record is on its way.
pub struct LogStream {
    done: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl LogStream {
    /// Sends what is buffered, ends the stream and waits (bounded) for the
    /// supervisor to acknowledge it.
    pub async fn flush(self, limit: Duration) {
        let _ = self.done.send(true);
        let _ = tokio::time::timeout(limit, self.task).await;
    }
}

/// Installs the global subscriber. With a host connection, events go there;
/// without one they go to stderr, which the supervisor captures too.
pub fn install(host: Option<H2Channel>) -> Option<LogStream> {
    let Some(channel) = host else {
        let _ = tracing_subscriber::fmt().with_env_filter(filter()).with_writer(std::io::stderr).try_init();
        return None;
    };
    let (layer, rx) = buffer();
    // Fails only when a global subscriber was set before `serve`: it stays, and no stream
    // is started for records that would never come.
    let ours = tracing_subscriber::registry().with(layer.with_filter(filter()));
    if tracing::subscriber::set_global_default(ours).is_err() {
        return None;
    }
    // The `log` crate's records too, unless a `log` logger was set before `serve`
    // (`env_logger::init()`): ours stands all the same. (`try_init` did both and failed
    // on the second, which was taken for a failure of the first: every record dropped.)
    let _ = tracing_log::LogTracer::init_with_filter(tracing::level_filters::LevelFilter::current().as_log());
    let (done, done_rx) = watch::channel(false);
    // The subscriber keeps its sender for the life of the process, so the
    // stream ends on `done` rather than on the channel closing.
    let records = futures_util::stream::unfold((rx, done_rx, false), |(mut rx, mut done, flushing)| async move {
        // Polled by the task that sends the stream's frames: the transport's pump.
        if let Some(id) = tokio::task::try_id() {
            carrier(id);
        }
        if !flushing {
            let next = tokio::select! {
                r = rx.recv() => Some(r),
                _ = done.wait_for(|d| *d) => None,
            };
            if let Some(r) = next {
                return r.map(|r| (r, (rx, done, false)));
            }
        }
        rx.try_recv().map(|r| (r, (rx, done, true)))
    });
    let task = tokio::spawn(async move {
        let mut client = HostClient::new(channel);
        if let Err(status) = client.log(records).await {
            eprintln!("plugin log stream to the supervisor ended: {status}");
        }
    });
    carrier(task.id());
    Some(LogStream { done, task })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PLUGIN_LOG that does not parse is said, naming the variable and the value, and
    /// logging goes on at info; it was taken for info without a word.
    #[test]
    fn a_log_filter_that_does_not_parse_is_said_not_dropped() {
        let (filter, said) = filter_from(Ok("info,h2=loud".into()));
        let said = said.expect("a word about it");
        assert!(said.starts_with("ignoring PLUGIN_LOG=\"info,h2=loud\": "), "{said}");
        assert!(said.ends_with("; logging at info"), "{said}");
        assert_eq!(filter.to_string(), "info");
        let (filter, said) = filter_from(Ok("debug,h2=warn".into()));
        assert_eq!((filter.to_string(), said), ("h2=warn,debug".to_owned(), None));
        let (filter, said) = filter_from(Err(std::env::VarError::NotPresent));
        assert_eq!((filter.to_string(), said), ("info".to_owned(), None));
        let (_, said) = filter_from(Err(std::env::VarError::NotUnicode(std::ffi::OsString::from("x"))));
        assert!(said.is_some_and(|s| s.contains("not UTF-8")));
    }

    /// A record of any size used to go out whole: one over the supervisor's 4 MiB message
    /// limit ended the log stream, and every later record of the process was lost.
    #[test]
    fn a_huge_message_or_field_goes_out_cut_to_what_the_supervisor_keeps() {
        let (layer, mut rx) = buffer();
        let huge = "é".repeat(3 << 20);
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
            tracing::info!(payload = %huge, "{huge}");
        });
        let record = rx.try_recv().expect("a record");
        assert_eq!(record.message.len(), MAX_TEXT, "{}", &record.message[record.message.len() - 20..]);
        assert!(record.message.ends_with("é [truncated]"), "{}", &record.message[record.message.len() - 20..]);
        assert_eq!(record.fields["payload"].len(), MAX_TEXT);
        assert!(record.fields["payload"].ends_with(" [truncated]"));
        assert_eq!(record.dropped_before, 0);
    }

    /// Bounded by count alone, the buffer held up to 4096 records of up to about half a
    /// MiB each: gigabytes, for a supervisor that reads slowly. A flood of large records
    /// keeps it within its bytes, and the next record sent says how many were left out.
    #[test]
    fn a_flood_of_large_records_keeps_the_buffer_within_its_bytes() {
        const FLOOD: u64 = 1000;
        let (layer, mut rx) = buffer();
        let bytes = layer.bytes.clone();
        let big = "x".repeat(2 * MAX_TEXT);
        let held = tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
            for _ in 0..FLOOD {
                tracing::info!(a = %big, b = %big, c = %big, "{big}");
            }
            let mut held = Vec::new();
            while let Some(r) = rx.try_recv() {
                held.push(r);
            }
            tracing::info!("after the flood");
            held
        });
        let buffered: usize = held.iter().map(size).sum();
        assert!(buffered <= MAX_BUFFERED_BYTES, "{buffered} bytes in {} records buffered", held.len());
        assert_eq!(held.len(), MAX_BUFFERED_BYTES / size(&held[0]), "as many as fit");
        let next = rx.try_recv().expect("a record once there was room");
        assert_eq!(next.message, "after the flood");
        assert_eq!(next.dropped_before, FLOOD - held.len() as u64, "what was left out is counted");
        assert_eq!(bytes.load(Ordering::Relaxed), 0, "every byte given back as the records are taken");
    }
}
