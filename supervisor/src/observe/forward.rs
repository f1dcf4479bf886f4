//! The daemon's stderr: its own tracing output and the plugin log lines it forwards, one
//! line each, in the format of the daemon's own logs (`--log-format text|json`), a plugin's
//! with the plugin, instance, stream, level and the SDK's structured fields, so that
//! journald or any log shipper collects them. What a plugin wrote cannot act on a terminal
//! showing them: text escapes its control characters, JSON writes those it would leave raw
//! as `\uXXXX`.
//!
//! Only lines the rate limit kept are forwarded. No log write ever waits on stderr: the
//! daemon's own lines and forwarded ones go through one queue, bounded in bytes, to a
//! thread of their own, so a slow stderr (a full pipe to a stalled shipper) never holds up
//! the daemon's runtime thread; what does not fit in the queue is dropped and counted, and
//! the thread says how many before the next line it writes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, UNIX_EPOCH};

use plugin_proto::control::v1::LogLine;
use serde_json::{Value, json};

/// How forwarded lines (and the daemon's own logs) are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// As `tracing-subscriber` writes by default: time, level, target, message, fields.
    Text,
    /// One JSON object a line, as `tracing-subscriber`'s json formatter writes.
    Json,
}

/// Bytes waiting for the writer: seconds of every plugin's default rate of ordinary lines,
/// and what a slow stderr can make the daemon hold, whatever the lines' sizes.
pub const MAX_QUEUED_BYTES: usize = 8 << 20;

enum Item {
    Plugin(Arc<str>, LogLine),
    /// One event of the daemon's own, formatted.
    Own(Vec<u8>),
    /// Answered once everything before it is written.
    Flush(SyncSender<()>),
}

/// What the queue's senders and its writer share.
#[derive(Default)]
struct Counts {
    /// Bytes in the queue.
    queued: AtomicUsize,
    /// Dropped since the writer last said so.
    dropped: AtomicU64,
    /// Plugin lines dropped since the daemon started, for metrics.
    dropped_total: AtomicU64,
}

/// The queue to the writer thread; the writer ends when it is gone.
struct Queue {
    tx: Sender<(Item, usize)>,
    counts: Arc<Counts>,
    forward_plugins: AtomicBool,
}

impl Queue {
    fn new() -> (Self, Receiver<(Item, usize)>, Arc<Counts>) {
        let (tx, rx) = channel();
        let counts = Arc::<Counts>::default();
        (Self { tx, counts: counts.clone(), forward_plugins: AtomicBool::new(true) }, rx, counts)
    }

    /// Queues `item` of `bytes`, or counts it dropped; never waits on the writer.
    fn offer(&self, item: Item, bytes: usize) -> bool {
        let c = &self.counts;
        let room = c.queued.fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
            (q.saturating_add(bytes) <= MAX_QUEUED_BYTES).then_some(q + bytes)
        });
        let sent = room.is_ok() && self.tx.send((item, bytes)).is_ok();
        if !sent {
            if room.is_ok() {
                c.queued.fetch_sub(bytes, Ordering::AcqRel);
            }
            c.dropped.fetch_add(1, Ordering::Relaxed);
        }
        sent
    }

    fn forward(&self, plugin: &Arc<str>, line: &LogLine) {
        if !self.forward_plugins.load(Ordering::Relaxed) {
            return;
        }
        if !self.offer(Item::Plugin(plugin.clone(), line.clone()), size(line)) {
            self.counts.dropped_total.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// About what a line holds in the queue.
fn size(line: &LogLine) -> usize {
    let fields: usize = line.fields.iter().map(|(k, v)| k.len() + v.len() + 48).sum();
    128 + line.text.len() + line.instance.len() + line.stream.len() + line.level.len() + fields
}

static QUEUE: OnceLock<Queue> = OnceLock::new();

/// Starts the writer thread for the life of the process: the daemon's own logs (written
/// through [`own_writer`]) and, if `forward_plugins`, every kept plugin log line go to
/// stderr through it from now on. Once per process (the daemon's start); a second call
/// changes nothing.
pub fn install(format: Format, forward_plugins: bool) -> std::io::Result<()> {
    let (q, rx, counts) = Queue::new();
    q.forward_plugins.store(forward_plugins, Ordering::Relaxed);
    std::thread::Builder::new()
        .name("log-write".into())
        .spawn(move || write_all(rx, format, &counts, &mut std::io::stderr()))?;
    let _ = QUEUE.set(q);
    Ok(())
}

/// Hands `line` of `plugin` to the writer, or counts it dropped; never waits.
pub(super) fn send(plugin: &Arc<str>, line: &LogLine) {
    if let Some(q) = QUEUE.get() {
        q.forward(plugin, line);
    }
}

/// Plugin lines not forwarded because the daemon's output was too slow, since it started.
pub fn dropped_total() -> u64 {
    QUEUE.get().map_or(0, |q| q.counts.dropped_total.load(Ordering::Relaxed))
}

/// Waits, at most `limit`, for what is queued to be written: at the daemon's end.
pub fn flush(limit: Duration) {
    let Some(q) = QUEUE.get() else { return };
    let (tx, rx) = sync_channel(1);
    let _ = q.tx.send((Item::Flush(tx), 0));
    let _ = rx.recv_timeout(limit);
}

/// Where the daemon's own tracing output goes: to the writer thread once [`install`]ed
/// (lossy: an event that does not fit in the queue is dropped and counted), straight to
/// stderr before.
pub fn own_writer() -> OwnWriter {
    OwnWriter(None)
}

/// The daemon's queue, or (in tests) one of their own.
#[derive(Clone)]
pub struct OwnWriter(Option<Arc<Queue>>);

impl OwnWriter {
    fn queue(&self) -> Option<&Queue> {
        self.0.as_deref().or_else(|| QUEUE.get())
    }
}

impl Write for OwnWriter {
    /// tracing-subscriber writes each event in one call, so one event is one item.
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.queue() {
            Some(q) => {
                q.offer(Item::Own(buf.to_vec()), buf.len());
                Ok(buf.len())
            }
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for OwnWriter {
    type Writer = OwnWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

fn write_all(rx: Receiver<(Item, usize)>, format: Format, q: &Counts, out: &mut impl Write) {
    let mut text = Vec::new();
    while let Ok((item, bytes)) = rx.recv() {
        q.queued.fetch_sub(bytes, Ordering::AcqRel);
        text.clear();
        let lost = q.dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            text.extend_from_slice(own_note(format, lost).as_bytes());
            text.push(b'\n');
        }
        match item {
            Item::Plugin(plugin, line) => {
                text.extend_from_slice(render(format, &plugin, &line).as_bytes());
                text.push(b'\n');
            }
            // The daemon's own events may quote a plugin too (a reason, a refusal).
            Item::Own(event) => match (format, String::from_utf8(event)) {
                (Format::Json, Ok(json)) => text.extend_from_slice(json_for_terminal(json).as_bytes()),
                (_, Ok(event)) => text.extend_from_slice(event.as_bytes()),
                (_, Err(e)) => text.extend_from_slice(e.as_bytes()),
            },
            Item::Flush(done) => {
                let _ = out.write_all(&text);
                let _ = out.flush();
                let _ = done.try_send(());
                continue;
            }
        }
        // One write per line: lines do not interleave. A failed write (stderr closed)
        // loses the line, nothing more.
        let _ = out.write_all(&text);
    }
}

/// RFC 3339 in UTC with microseconds, as `tracing-subscriber` writes its timestamps.
fn timestamp(unix_nanos: u64) -> String {
    humantime::format_rfc3339_micros(UNIX_EPOCH + Duration::from_nanos(unix_nanos)).to_string()
}

fn level(line: &LogLine) -> String {
    if line.level.is_empty() { "INFO".to_owned() } else { line.level.to_uppercase() }
}

/// Control characters (a terminal escape, a carriage return, an SDK message's newline)
/// are escaped in text: a plugin cannot forge a line of the daemon's log or rewrite the
/// operator's terminal. `supervisorctl` shows what plugins wrote through it too.
pub fn clean(s: &str) -> String {
    if !s.chars().any(escaped) {
        return s.to_owned();
    }
    s.chars().map(|c| if escaped(c) { c.escape_default().to_string() } else { c.to_string() }).collect()
}

/// Whether `c` is escaped in text: a control character, or one that `char::is_control`
/// does not count but that changes how the rest of a line is shown: the bidirectional
/// marks, embeddings, overrides and isolates (Unicode's Bidi_Control: with them a line can
/// show its words in another order than they were written) and the line and paragraph
/// separators (a line break to some viewers).
pub fn escaped(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        || matches!(c, '\u{2028}' | '\u{2029}')
}

/// `json` (serde_json's text) as it may reach a terminal or a log viewer. JSON escapes the
/// C0 controls (ESC among them) but lets DEL, the C1 controls (U+009B is CSI to terminals
/// that take 8-bit controls), the bidirectional controls and the Unicode line breaks
/// through raw, so a plugin's string could still act on the operator's terminal through
/// JSON output (`supervisorctl --json`, the daemon's `--log-format json`): those are
/// written as `\uXXXX`, which is the same JSON.
pub fn json_for_terminal(json: String) -> String {
    // serde_json writes every C0 control escaped but the pretty form's own line breaks, so
    // only what it leaves raw (all in the Basic Multilingual Plane, and all inside strings:
    // outside them JSON has no character `escaped` names but whitespace) is rewritten.
    let raw = |c: char| c != '\n' && escaped(c);
    if !json.chars().any(raw) {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if raw(c) {
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

/// A plugin's field name in text, as logfmt takes it: a space, `=` or `"` in it becomes
/// `_`, so that a name cannot end the field and start another.
fn key(k: &str) -> String {
    clean(k).chars().map(|c| if c.is_whitespace() || c == '=' || c == '"' { '_' } else { c }).collect()
}

/// A plugin's field value in text, quoted as logfmt does when it holds a space, `=` or
/// `"` (or is empty), so that a value cannot forge another field.
fn value(v: &str) -> String {
    if !v.is_empty() && !v.chars().any(|c| c.is_whitespace() || c == '=' || c == '"') {
        return clean(v);
    }
    format!("\"{}\"", clean(&v.replace('\\', "\\\\").replace('"', "\\\"")))
}

/// The target a forwarded line names: what the SDK said it came from, else `plugin`.
fn target(line: &LogLine) -> &str {
    line.fields.get("target").map_or("plugin", String::as_str)
}

/// One forwarded line, without its newline. The plugin, instance and stream are the
/// supervisor's to say: in JSON they sit beside `fields`, where a plugin's own fields
/// cannot replace them.
pub fn render(format: Format, plugin: &str, line: &LogLine) -> String {
    let fields: BTreeMap<&str, &str> =
        line.fields.iter().filter(|(k, _)| *k != "target").map(|(k, v)| (k.as_str(), v.as_str())).collect();
    match format {
        Format::Json => {
            let mut f = serde_json::Map::new();
            f.insert("message".into(), Value::from(line.text.as_str()));
            for (k, v) in &fields {
                if *k != "message" {
                    f.insert((*k).into(), Value::from(*v));
                }
            }
            // What the plugin wrote reaches the daemon's stderr, and whoever reads it there.
            json_for_terminal(
                json!({
                    "timestamp": timestamp(line.unix_nanos),
                    "level": level(line),
                    "fields": f,
                    "target": target(line),
                    "plugin": plugin,
                    "instance": line.instance,
                    "stream": line.stream,
                })
                .to_string(),
            )
        }
        Format::Text => {
            let mut s = format!(
                "{} {:>5} {}: {} plugin={} instance={} stream={}",
                timestamp(line.unix_nanos),
                level(line),
                clean(target(line)),
                clean(&line.text),
                clean(plugin),
                clean(&line.instance),
                line.stream
            );
            for (k, v) in fields {
                s.push_str(&format!(" {}={}", key(k), value(v)));
            }
            s
        }
    }
}

/// The writer's own word on lines it could not forward.
fn own_note(format: Format, lost: u64) -> String {
    let message = format!("suppressed {lost} messages: log lines not written, this output was too slow");
    let now = super::unix_nanos();
    match format {
        Format::Json => json!({
            "timestamp": timestamp(now),
            "level": "WARN",
            "fields": {"message": message, "suppressed": lost},
            "target": module_path!(),
        })
        .to_string(),
        Format::Text => format!("{}  WARN {}: {message}", timestamp(now), module_path!()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line() -> LogLine {
        LogLine {
            unix_nanos: 1_700_000_000_123_456_789,
            instance: "echo-0".into(),
            stream: "sdk".into(),
            level: "warn".into(),
            text: "slow \x1b[2Jcall\nforged".into(),
            fields: [
                ("target".into(), "echo::calls".into()),
                ("ms".into(), "12".into()),
                ("plugin".into(), "evil".into()),
            ]
            .into(),
        }
    }

    /// Characters that reorder or break what a terminal (or a log viewer) shows without
    /// being control characters to `char::is_control`: the bidirectional overrides and
    /// isolates (a line of a plugin's could show its words in another order, "Trojan Source"
    /// style) and the Unicode line and paragraph separators (a line break to some viewers).
    #[test]
    fn bidirectional_controls_and_unicode_line_breaks_are_escaped_too() {
        let text = "ok \u{202e}deliaf\u{202c} \u{2066}x\u{2069}\u{200f}\u{61c}\u{2028}next\u{2029}";
        assert_eq!(
            clean(text),
            "ok \\u{202e}deliaf\\u{202c} \\u{2066}x\\u{2069}\\u{200f}\\u{61c}\\u{2028}next\\u{2029}"
        );
        assert_eq!(clean("plain · ünïcode ✓"), "plain · ünïcode ✓", "other characters are kept as they are");
    }

    #[test]
    fn json_lines_carry_the_plugin_instance_stream_and_fields() {
        let v: Value = serde_json::from_str(&render(Format::Json, "echo", &line())).unwrap();
        assert_eq!(v["timestamp"], "2023-11-14T22:13:20.123456Z");
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["target"], "echo::calls");
        assert_eq!(
            (v["plugin"].as_str(), v["instance"].as_str(), v["stream"].as_str()),
            (Some("echo"), Some("echo-0"), Some("sdk"))
        );
        assert_eq!(v["fields"], json!({"message": "slow \x1b[2Jcall\nforged", "ms": "12", "plugin": "evil"}));
    }

    /// JSON lets DEL, the C1 controls (U+009B: CSI to some terminals), the bidirectional
    /// controls and U+2028/U+2029 through raw: in the daemon's JSON lines, forwarded or its
    /// own, a plugin's text has them as `\uXXXX`, the same JSON.
    #[test]
    fn json_lines_escape_what_a_terminal_may_act_on_and_stay_the_same_json() {
        let nasty = "a\u{9b}2J b\u{7f} c\u{85}d\u{202e}e\u{2028}f\u{2069} ü";
        let sent = LogLine {
            text: nasty.into(),
            instance: format!("echo-0{nasty}"),
            fields: [("target".into(), format!("t{nasty}")), (format!("k{nasty}"), nasty.into())].into(),
            ..line()
        };
        let shown = render(Format::Json, "echo", &sent);
        assert!(!shown.chars().any(escaped), "{shown:?}");
        assert!(shown.contains(r"a\u009b2J b\u007f c\u0085d\u202ee\u2028f\u2069 ü"), "{shown}");
        let v: Value = serde_json::from_str(&shown).unwrap();
        assert_eq!(v["fields"]["message"], nasty, "the same JSON");
        assert_eq!(v["fields"][format!("k{nasty}")], nasty);
        assert_eq!(v["instance"], format!("echo-0{nasty}"));
        assert_eq!(v["target"], format!("t{nasty}"));

        // The daemon's own events (a reason quoting a plugin) are written so too.
        let (q, rx, counts) = Queue::new();
        let own = format!("{}\n", json!({"fields": {"message": format!("refused: {nasty}")}}));
        assert!(q.offer(Item::Own(own.clone().into_bytes()), own.len()));
        drop(q);
        let mut out = Vec::new();
        write_all(rx, Format::Json, &counts, &mut out);
        let out = String::from_utf8(out).unwrap();
        assert!(!out.trim_end_matches('\n').chars().any(escaped), "{out:?}");
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["fields"]["message"], format!("refused: {nasty}"));
    }

    #[test]
    fn text_lines_are_one_line_whatever_the_plugin_wrote() {
        let text = render(Format::Text, "echo", &line());
        assert_eq!(
            text,
            "2023-11-14T22:13:20.123456Z  WARN echo::calls: slow \\u{1b}[2Jcall\\nforged plugin=echo instance=echo-0 stream=sdk ms=12 plugin=evil"
        );
        let plain = LogLine { level: String::new(), stream: "stdout".into(), fields: Default::default(), ..line() };
        assert!(
            render(Format::Text, "echo", &plain).contains("  INFO plugin: slow"),
            "{}",
            render(Format::Text, "echo", &plain)
        );
    }

    #[test]
    fn text_field_values_are_quoted_so_they_cannot_forge_fields() {
        let forged = LogLine {
            fields: [
                ("note".into(), "1 plugin=evil".into()),
                ("a b=c".into(), "x".into()),
                ("q".into(), "say \"hi\" \\".into()),
                ("empty".into(), String::new()),
            ]
            .into(),
            ..line()
        };
        let text = render(Format::Text, "echo", &forged);
        let fields = &text[text.find(" stream=sdk ").unwrap() + 12..];
        assert_eq!(fields, r#"a_b_c=x empty="" note="1 plugin=evil" q="say \"hi\" \\""#);
    }

    #[test]
    fn the_writer_says_what_it_dropped_before_the_next_line() {
        let (q, rx, counts) = Queue::new();
        counts.dropped.store(7, Ordering::Relaxed);
        assert!(q.offer(Item::Plugin("echo".into(), line()), 100));
        let own = format!("{}  INFO plugin_supervisor: own\n", timestamp(0));
        assert!(q.offer(Item::Own(own.clone().into_bytes()), own.len()));
        let (tx, done) = sync_channel(1);
        q.offer(Item::Flush(tx), 0);
        drop(q);
        let mut out = Vec::new();
        write_all(rx, Format::Json, &counts, &mut out);
        done.try_recv().expect("the flush was answered");
        let out = String::from_utf8(out).unwrap();
        let mut lines = out.lines();
        let note: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!(note["fields"]["suppressed"], 7, "{out}");
        let fwd: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!(fwd["plugin"], "echo");
        assert_eq!(lines.next(), Some(own.trim_end()));
        assert_eq!(counts.dropped.load(Ordering::Relaxed), 0);
        assert_eq!(counts.queued.load(Ordering::Relaxed), 0);
    }

    /// A stderr that does not move: what waits for it is bounded in bytes, whatever the
    /// lines' sizes (an SDK record can be about 100 KiB), and the rest is counted.
    #[test]
    fn the_queue_is_bounded_in_bytes() {
        let (q, _rx, counts) = Queue::new();
        let big = LogLine { text: "b".repeat(96 * 1024), fields: Default::default(), ..line() };
        let plugin: Arc<str> = "echo".into();
        for _ in 0..1000 {
            q.forward(&plugin, &big);
        }
        let queued = counts.queued.load(Ordering::Relaxed);
        assert!(queued <= MAX_QUEUED_BYTES, "{queued} bytes queued");
        let kept = 1000 - counts.dropped_total.load(Ordering::Relaxed);
        assert_eq!(kept as usize, MAX_QUEUED_BYTES / size(&big), "lines queued");
        assert_eq!(counts.dropped.load(Ordering::Relaxed), 1000 - kept);
    }

    /// The daemon's own tracing output never waits on a stderr that does not move: its
    /// events are queued or dropped, and the runtime thread goes on.
    #[test]
    fn the_daemons_own_logs_never_block_on_a_stalled_output() {
        struct Stalled(Receiver<()>);
        impl Write for Stalled {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                let _ = self.0.recv();
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let (q, rx, counts) = Queue::new();
        let q = Arc::new(q);
        let (release, stalled) = channel();
        let writer = counts.clone();
        let thread = std::thread::spawn(move || write_all(rx, Format::Text, &writer, &mut Stalled(stalled)));
        let subscriber = tracing_subscriber::fmt().with_writer(OwnWriter(Some(q.clone()))).finish();
        let t0 = std::time::Instant::now();
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..20_000 {
                tracing::info!(i, filler = %"f".repeat(1000), "an event of the daemon's own");
            }
        });
        let took = t0.elapsed();
        assert!(took < Duration::from_secs(10), "{took:?}");
        assert!(counts.queued.load(Ordering::Relaxed) <= MAX_QUEUED_BYTES);
        let dropped = counts.dropped.load(Ordering::Relaxed);
        assert!(dropped > 10_000, "{dropped}");
        // Let the writer go and end.
        drop(q);
        drop(release);
        thread.join().unwrap();
    }
}
