//! The host connection the supervisor serves to one instance on its fd 4: the Host
//! service, where the SDK's structured log records land in the plugin's log buffer
//! (through the plugin's log rate limit and one drop budget for all the instance's
//! streams), and the instance's own calls out ([`Outbound`]).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};

use plugin_proto::host::v1::host_server::{Host, HostServer};
use plugin_proto::host::v1::{Level, LogRecord, LogSummary};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};
use tower::Service;

use crate::observe::logs::{Gate, LogBuffer, SharedBudget, Stream};
use crate::routing::host_calls::Outbound;
use crate::routing::stalls::StallBudget;

pub struct HostService {
    instance: String,
    logs: Arc<LogBuffer>,
    /// One budget for every log stream the instance opens: a plugin that opens many
    /// streams is read no faster than one that opens one.
    budget: SharedBudget,
    /// Log streams open now.
    log_streams: Arc<AtomicU32>,
}

/// The most fields kept from one record; a plugin cannot make us hold more.
pub const MAX_FIELDS: usize = 64;
/// The longest message, target, field name or value kept.
pub const MAX_TEXT: usize = 16 * 1024;
/// The most bytes of fields (names and values) kept from one record: a record is at most
/// about 96 KiB whatever the plugin sends (64 fields of 16 KiB names and values would be
/// 2 MiB), which bounds what a kept record costs the ring, `tail -f` and the forwarder.
const MAX_FIELDS_BYTES: usize = 64 * 1024;
/// The field that says what was left out of a record's fields.
const FIELDS_CUT: &str = "fields_truncated";
/// Streams open at once on one instance's host connection: its log streams and its
/// calls out together. It bounds what one instance can have in flight through the host.
pub const MAX_STREAMS: u32 = 64;
/// Log streams open at once on one instance's host connection. The SDK opens one; a few
/// more let a restarted stream overlap the old one's end.
pub const MAX_LOG_STREAMS: u32 = 4;
/// What taking in a record costs beside its text (h2 framing, a protobuf decode, a map),
/// charged to the drop budget when it is dropped: about a thousand records a second are
/// read only to be dropped; beyond that the SDK drops them in the plugin, which costs the
/// supervisor nothing.
const RECORD_COST: usize = 1024;
/// What a log stream's codec may have read past the record it just decoded (the rest of
/// an HTTP/2 frame, 16 KiB by default): bytes not yet any record's, so not yet charged.
const READ_AHEAD: u64 = 64 * 1024;
/// A gRPC message's prefix: a flag and a 4-byte length.
const GRPC_PREFIX: u64 = 5;

/// The bytes a log stream's body has brought so far (its DATA frames' payloads), counted
/// as the codec reads them. A stream is charged for what it took to receive, not only for
/// what of its records decodes: a field a record does not have, or a map key sent again
/// and again, is read and decoded all the same and kept nowhere.
#[derive(Clone, Debug, Default)]
pub struct Received(Arc<AtomicU64>);

impl Received {
    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A request body that counts what it brings into [`Received`].
struct Counting {
    inner: tonic::body::Body,
    received: Received,
}

impl http_body::Body for Counting {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Status>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.received.0.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

fn level_name(l: i32) -> &'static str {
    match Level::try_from(l).unwrap_or(Level::Unspecified) {
        Level::Trace => "trace",
        Level::Debug => "debug",
        Level::Info => "info",
        Level::Warn => "warn",
        Level::Error => "error",
        Level::Unspecified => "",
    }
}

fn cut(mut s: String) -> String {
    if s.len() > MAX_TEXT {
        let mut end = MAX_TEXT;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str(" [truncated]");
    }
    s
}

/// A record's fields as kept: each name and value cut at [`MAX_TEXT`], at most
/// [`MAX_FIELDS`] of them and [`MAX_FIELDS_BYTES`] together, in name order; what did not
/// fit is said in [`FIELDS_CUT`].
fn kept_fields(fields: HashMap<String, String>) -> HashMap<String, String> {
    let mut all: Vec<(String, String)> = fields.into_iter().collect();
    all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let total = all.len();
    let mut left = MAX_FIELDS_BYTES;
    let mut kept = HashMap::new();
    for (k, v) in all {
        if kept.len() == MAX_FIELDS {
            break;
        }
        let (k, v) = (cut(k), cut(v));
        if k.len() + v.len() > left {
            break;
        }
        left -= k.len() + v.len();
        kept.insert(k, v);
    }
    if kept.len() < total {
        let out = total - kept.len();
        kept.insert(FIELDS_CUT.into(), format!("{out} of {total} fields left out (over {MAX_FIELDS} or 64 KiB)"));
    }
    kept
}

impl HostService {
    pub fn new(instance: String, logs: Arc<LogBuffer>) -> Self {
        Self { instance, logs, budget: crate::observe::logs::budget(), log_streams: Arc::default() }
    }

    /// Takes in one log stream's records, whose body has brought `wire` bytes so far; the
    /// number received.
    async fn take_in(
        &self,
        mut stream: impl tokio_stream::Stream<Item = Result<LogRecord, Status>> + Unpin,
        wire: &Received,
    ) -> Result<u64, Status> {
        let mut gate = Gate::sharing(self.logs.clone(), self.instance.clone(), Stream::Sdk, self.budget.clone());
        let mut received = 0u64;
        // The bytes of `wire` charged so far: each record's own encoding, and what came
        // beside the records.
        let mut charged = 0u64;
        // Over the rate limit, records are read and dropped up to the budget; beyond it
        // the stream is left unread for a while: h2 flow control then stops the SDK's
        // sender, and the SDK drops records rather than block the plugin, and says how many
        // with the next one it sends (`dropped_before`).
        loop {
            if let Some(wait) = gate.pause() {
                tokio::time::sleep(wait).await;
            }
            let Some(record) = stream.next().await else { break };
            let r = match record {
                Ok(r) => r,
                Err(status) => {
                    // A record that does not decode (one over the message size) ends the
                    // stream: said in the plugin's own log, where its author looks, or
                    // its logs would just stop.
                    let note =
                        format!("the supervisor ended this log stream: {}", super::said::plugin_said(status.message()));
                    if gate.admit_costing(note.len(), RECORD_COST + note.len()) {
                        let line = gate.line("error", note, HashMap::new());
                        gate.push(line);
                    }
                    return Err(status);
                }
            };
            received += 1;
            // What came beyond the records' own encoding (and the codec's read-ahead) is
            // what a record held that decodes to nothing kept: read and thrown away, as a
            // line's rest past its longest is, and charged to the drop budget as that is.
            charged += prost::Message::encoded_len(&r) as u64 + GRPC_PREFIX;
            let beside = wire.get().saturating_sub(charged.saturating_add(READ_AHEAD));
            if beside > 0 {
                gate.skipped(usize::try_from(beside).unwrap_or(usize::MAX));
                charged += beside;
            }
            // The daemon runs on one thread, and a stream full of records is always ready:
            // the calls of other plugins get their turn between batches.
            if received.is_multiple_of(32) {
                tokio::task::yield_now().await;
            }
            if r.dropped_before > 0 {
                gate.lost(r.dropped_before);
            }
            let fields = r.fields.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
            let text = r.message.len() + r.target.len();
            let kept = text.min(2 * MAX_TEXT) + fields.min(MAX_FIELDS_BYTES);
            if !gate.admit_costing(kept, RECORD_COST + text + fields) {
                continue;
            }
            // A kept record's text past what is kept was read and decoded all the same.
            gate.skipped((text + fields).saturating_sub(kept));
            let mut fields = kept_fields(r.fields);
            if !r.target.is_empty() {
                fields.insert("target".into(), cut(r.target));
            }
            let mut line = gate.line(level_name(r.level), cut(r.message), fields);
            line.unix_nanos = when(r.unix_nanos, line.unix_nanos);
            gate.push(line);
        }
        Ok(received)
    }
}

#[tonic::async_trait]
impl Host for HostService {
    async fn log(&self, req: Request<Streaming<LogRecord>>) -> Result<Response<LogSummary>, Status> {
        let _open = OpenStream::count(&self.log_streams)?;
        // Counted by the host connection (`HostConn`) as the body is read.
        let wire = req.extensions().get::<Received>().cloned().unwrap_or_default();
        let received = self.take_in(req.into_inner(), &wire).await?;
        Ok(Response::new(LogSummary { received }))
    }
}

/// One open log stream, counted while it lives.
struct OpenStream(Arc<AtomicU32>);

impl OpenStream {
    fn count(open: &Arc<AtomicU32>) -> Result<Self, Status> {
        if open.fetch_add(1, Ordering::SeqCst) >= MAX_LOG_STREAMS {
            open.fetch_sub(1, Ordering::SeqCst);
            return Err(Status::resource_exhausted(format!(
                "{MAX_LOG_STREAMS} log streams are open on this host connection already"
            )));
        }
        Ok(Self(open.clone()))
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What one instance's host connection serves: the Host service, and its calls out.
#[derive(Clone)]
struct HostConn {
    logs: HostServer<HostService>,
    out: Option<Outbound>,
}

impl Service<http::Request<tonic::body::Body>> for HostConn {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = crate::routing::gateway::Answer;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        use tonic::server::NamedService;
        let host = req.uri().path().strip_prefix('/').and_then(|p| p.strip_prefix(HostServer::<HostService>::NAME));
        if host.is_some_and(|rest| rest.starts_with('/')) {
            let mut logs = self.logs.clone();
            let received = Received::default();
            let (mut parts, body) = req.into_parts();
            parts.extensions.insert(received.clone());
            let req = http::Request::from_parts(parts, tonic::body::Body::new(Counting { inner: body, received }));
            return Box::pin(async move { logs.call(req).await });
        }
        match &self.out {
            Some(out) => out.call(req),
            None => Box::pin(async move {
                Ok(Status::unimplemented("this host offers its plugins no services but their logs").into_http())
            }),
        }
    }
}

/// Serves `instance`'s host connection until it closes: its logs, and where `out` is
/// given, its calls out.
pub async fn serve(io: tokio::net::UnixStream, instance: String, logs: Arc<LogBuffer>, out: Option<Outbound>) {
    // Calls whose callers do not read their answers are bounded across the daemon's host
    // connections when it routes calls out; a connection for logs alone has its own.
    let stalls = out.as_ref().map_or_else(|| StallBudget::new(MAX_STREAMS as usize), Outbound::stalls);
    let svc = HostConn { logs: HostServer::new(HostService::new(instance, logs)), out };
    crate::routing::server::serve_host(io, svc, MAX_STREAMS, stalls).await;
}

/// How far before its arrival a record's own time is taken: an SDK stamps a record when
/// it is made, and sends it within moments unless its stream waits on the rate limit.
const STAMPED_BEFORE: u64 = 10 * 60 * 1_000_000_000;
/// How far after its arrival (clocks of one host agree).
const STAMPED_AFTER: u64 = 1_000_000_000;

/// The time a record is shown at: its own, unless unset or far from `received` (a plugin
/// could otherwise file its lines at 1970, or among the future's, out of order).
fn when(stamped: u64, received: u64) -> u64 {
    if stamped >= received.saturating_sub(STAMPED_BEFORE) && stamped <= received.saturating_add(STAMPED_AFTER) {
        stamped
    } else {
        received
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::observe::limit::LogLimit;

    fn record(message: String) -> Result<LogRecord, Status> {
        Ok(LogRecord { message, ..Default::default() })
    }

    #[tokio::test]
    async fn a_record_that_does_not_decode_ends_the_stream_saying_so_in_the_plugins_log() {
        let logs = Arc::new(LogBuffer::new("p", 10, LogLimit::default()));
        let host = HostService::new("p-0".into(), logs.clone());
        let too_large =
            Status::out_of_range("decoded message length too large: found 5242885 bytes, the limit is: 4194304");
        let stream = tokio_stream::iter(vec![record("before".into()), Err(too_large), record("after".into())]);
        let ended = host.take_in(stream, &Received::default()).await.unwrap_err();
        assert_eq!(ended.code(), tonic::Code::OutOfRange);
        let got: Vec<(String, String)> = logs.subscribe(10).0.into_iter().map(|l| (l.level, l.text)).collect();
        assert_eq!(
            got,
            [
                (String::new(), "before".to_owned()),
                (
                    "error".to_owned(),
                    "the supervisor ended this log stream: decoded message length too large: found 5242885 bytes, \
                     the limit is: 4194304"
                        .to_owned()
                )
            ]
        );
    }

    /// A plugin cannot file its lines at 1970 or in the future: a record's own time is
    /// kept only near its arrival.
    #[tokio::test]
    async fn a_record_keeps_its_own_time_only_near_its_arrival() {
        let logs = Arc::new(LogBuffer::new("p", 10, LogLimit::default()));
        let host = HostService::new("p-0".into(), logs.clone());
        let now = crate::observe::unix_nanos();
        let at = |unix_nanos: u64| Ok(LogRecord { message: "m".into(), unix_nanos, ..Default::default() });
        let stamps = [now - 2_000_000_000, 0, 1, now + 3600 * 1_000_000_000];
        host.take_in(tokio_stream::iter(stamps.map(at)), &Received::default()).await.unwrap();
        let shown: Vec<u64> = logs.subscribe(10).0.into_iter().map(|l| l.unix_nanos).collect();
        assert_eq!(shown[0], now - 2_000_000_000, "two seconds before: its own");
        for (i, t) in shown.iter().enumerate().skip(1) {
            assert!(*t >= now && *t < now + 60_000_000_000, "record {i} at {t}: its arrival, not {}", stamps[i]);
        }
    }

    /// A plugin over its rate that opens a second stream finds the budget the first one
    /// spent: it is paused as the first would have been, not read at full speed again.
    #[tokio::test]
    async fn an_instances_streams_share_one_drop_budget() {
        let logs = Arc::new(LogBuffer::new("p", 10, LogLimit { rate: 1, burst: 1 }));
        let host = HostService::new("p-0".into(), logs.clone());
        // 2 KiB a record with its cost: the first stream spends about 2 MiB.
        let records = |n| tokio_stream::iter((0..n).map(|_| record("z".repeat(1024))));
        assert_eq!(host.take_in(records(1000), &Received::default()).await.unwrap(), 1000);
        let t0 = Instant::now();
        assert_eq!(host.take_in(records(400), &Received::default()).await.unwrap(), 400);
        // A budget of its own would have let all 0.8 MiB through at once.
        let took = t0.elapsed();
        assert!(took > Duration::from_millis(400), "the second stream was read in {took:?}");
        assert!(logs.counts()[2].dropped >= 1398, "{:?}", logs.counts());
        assert_eq!(
            logs.counts()[2].kept + logs.counts()[2].dropped,
            1400,
            "every record is counted: {:?}",
            logs.counts()
        );
    }

    /// What a record brings beside what decodes (a field the record does not have) is
    /// charged to the drop budget as it is read, kept record or not: a plugin sending
    /// 1.5 MB a record of it for a one-byte message is soon read no faster than the budget.
    #[tokio::test]
    async fn what_a_record_brings_beside_its_fields_is_charged_though_the_record_is_kept() {
        let logs = Arc::new(LogBuffer::new("p", 10, LogLimit::default()));
        let host = HostService::new("p-0".into(), logs.clone());
        let wire = Received::default();
        let brought = wire.clone();
        let stream = tokio_stream::iter(0..2).map(move |_| {
            brought.0.fetch_add(1_500_000, Ordering::Relaxed);
            record("x".into())
        });
        let t0 = Instant::now();
        assert_eq!(host.take_in(stream, &wire).await.unwrap(), 2);
        assert_eq!(logs.counts()[2].kept, 2, "both records are kept: {:?}", logs.counts());
        // About 2.9 MB charged against 1 MiB of budget a second: the stream is left unread
        // for about 0.45 s after the first record and 1.4 s after the second (before it
        // is seen to end).
        let took = t0.elapsed();
        assert!(took > Duration::from_millis(1500), "two records taken in {took:?}");
    }

    /// The same over a real host connection: the bytes are counted as its body is read.
    #[tokio::test]
    async fn a_log_stream_of_records_padded_with_unknown_fields_is_paused() {
        /// A `LogRecord` with a field it does not have.
        #[derive(Clone, PartialEq, prost::Message)]
        struct Padded {
            #[prost(string, tag = "4")]
            message: String,
            #[prost(bytes = "vec", tag = "99")]
            pad: Vec<u8>,
        }
        let (server, client) = tokio::net::UnixStream::pair().unwrap();
        let logs = Arc::new(LogBuffer::new("p", 10, LogLimit::default()));
        let served = tokio::spawn(serve(server, "p-0".into(), logs.clone(), None));
        let (channel, conn) = plugin_proto::transport::H2Channel::handshake(client).await.unwrap();
        let driven = tokio::spawn(conn);
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.unwrap();
        let padded = Padded { message: "x".into(), pad: vec![7; 1 << 20] };
        let records = tokio_stream::iter(vec![padded; 3]);
        let path = http::uri::PathAndQuery::from_static("/plugin.host.v1.Host/Log");
        let codec = tonic_prost::ProstCodec::<Padded, LogSummary>::default();
        let t0 = Instant::now();
        let summary = grpc.client_streaming(tonic::Request::new(records), path, codec).await.unwrap();
        assert_eq!(summary.get_ref().received, 3);
        // The first MiB is within the budget; the second puts it a MiB short, which the
        // stream waits out before the third record is read.
        let took = t0.elapsed();
        assert!(took > Duration::from_millis(700), "3 MiB taken in {took:?}");
        assert_eq!(logs.counts()[2].kept, 3, "{:?}", logs.counts());
        driven.abort();
        served.abort();
    }

    /// 64 fields of 16 KiB names and values would be 2 MiB in one record: kept, it is
    /// cut to 64 KiB of fields and says so.
    #[tokio::test]
    async fn a_records_fields_are_cut_at_64_kib_and_marked() {
        // Room for the 64 KiB line beside the next (10 lines hold only 20 KiB).
        let logs = Arc::new(LogBuffer::new("p", 100, LogLimit::default()));
        let host = HostService::new("p-0".into(), logs.clone());
        let fields: HashMap<String, String> =
            (0..64).map(|i| (format!("{i:02}{}", "k".repeat(16 * 1024 - 2)), "v".repeat(16 * 1024))).collect();
        let big = LogRecord { message: "big".into(), fields, ..Default::default() };
        let small =
            LogRecord { message: "small".into(), fields: [("a".into(), "1".into())].into(), ..Default::default() };
        host.take_in(tokio_stream::iter([Ok(big), Ok(small)]), &Received::default()).await.unwrap();
        let lines = logs.subscribe(10).0;
        assert_eq!(lines.len(), 2);
        let size =
            |l: &plugin_proto::control::v1::LogLine| l.fields.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        assert!(size(&lines[0]) <= MAX_FIELDS_BYTES + 100, "{} bytes of fields kept", size(&lines[0]));
        assert_eq!(lines[0].fields[FIELDS_CUT], "62 of 64 fields left out (over 64 or 64 KiB)");
        assert!(lines[0].fields.keys().any(|k| k.starts_with("00")), "fields are kept in name order");
        assert_eq!(lines[1].fields, [("a".to_owned(), "1".to_owned())].into());
    }

    /// A plugin opening log streams without end gets a few; the rest are refused, and a
    /// closed one makes room.
    #[test]
    fn an_instance_keeps_only_a_few_log_streams_open() {
        let open = Arc::new(AtomicU32::new(0));
        let kept: Vec<OpenStream> = (0..MAX_LOG_STREAMS).map(|_| OpenStream::count(&open).unwrap()).collect();
        let refused = OpenStream::count(&open).err().unwrap();
        assert_eq!(
            (refused.code(), refused.message()),
            (tonic::Code::ResourceExhausted, "4 log streams are open on this host connection already")
        );
        drop(kept);
        assert_eq!(open.load(Ordering::SeqCst), 0);
        assert!(OpenStream::count(&open).is_ok());
    }

    /// The log stream's codec starts its buffers at 512 bytes (`plugin_proto::codec`): records
    /// many times that, between small ones, arrive whole over a real host connection.
    #[tokio::test]
    async fn records_larger_than_the_codecs_first_buffer_arrive_whole() {
        let (server, client) = tokio::net::UnixStream::pair().unwrap();
        let logs = Arc::new(LogBuffer::new("p", 10, LogLimit::default()));
        let served = tokio::spawn(serve(server, "p-0".into(), logs.clone(), None));
        let (channel, conn) = plugin_proto::transport::H2Channel::handshake(client).await.unwrap();
        let driven = tokio::spawn(conn);
        let messages = ["a".to_owned(), "b".repeat(3000), "c".to_owned(), "d".repeat(MAX_TEXT)];
        let stream = tokio_stream::iter(messages.clone().map(|message| LogRecord { message, ..Default::default() }));
        plugin_proto::host::v1::host_client::HostClient::new(channel).log(stream).await.unwrap();
        let got: Vec<String> = logs.subscribe(10).0.into_iter().map(|l| l.text).collect();
        let lengths = |v: &[String]| v.iter().map(|m| (m.len(), m.chars().next())).collect::<Vec<_>>();
        assert_eq!(lengths(&got), lengths(&messages));
        assert!(got == messages, "the records' text changed on the way");
        driven.abort();
        served.abort();
    }

    /// The host connection lets the plugin open only a few streams at once.
    #[tokio::test]
    async fn the_host_connection_allows_few_streams() {
        let (server, client) = tokio::net::UnixStream::pair().unwrap();
        let logs = Arc::new(LogBuffer::new("p", 10, LogLimit::default()));
        let served = tokio::spawn(serve(server, "p-0".into(), logs, None));
        let (send, conn) = h2::client::handshake(client).await.unwrap();
        let driven = tokio::spawn(conn);
        let mut send = send.ready().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        // The server's settings arrive after the handshake.
        while send.current_max_send_streams() == usize::MAX && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
            send = send.ready().await.unwrap();
        }
        assert_eq!(send.current_max_send_streams(), MAX_STREAMS as usize);
        drop(send);
        driven.abort();
        served.abort();
    }
}
