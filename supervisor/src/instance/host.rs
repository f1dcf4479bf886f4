//! The Host service the supervisor serves to one instance on its fd 4:
//! the SDK's structured log records land in the plugin's log buffer.

use std::sync::Arc;

use plugin_proto::control::v1::LogLine;
use plugin_proto::host::v1::host_server::{Host, HostServer};
use plugin_proto::host::v1::{Level, LogRecord, LogSummary};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::observe::logs::LogBuffer;

pub struct HostService {
    pub instance: String,
    pub logs: Arc<LogBuffer>,
}

/// The most fields kept from one record; a plugin cannot make us hold more.
const MAX_FIELDS: usize = 64;
const MAX_TEXT: usize = 16 * 1024;

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

#[tonic::async_trait]
impl Host for HostService {
    async fn log(&self, req: Request<Streaming<LogRecord>>) -> Result<Response<LogSummary>, Status> {
        let mut stream = req.into_inner();
        let mut received = 0u64;
        while let Some(record) = stream.next().await {
            let r = record?;
            received += 1;
            if r.dropped_before > 0 {
                // The SDK drops rather than blocks; say so where the gap is.
                self.logs.push(LogLine {
                    unix_nanos: r.unix_nanos,
                    instance: self.instance.clone(),
                    stream: "sdk".into(),
                    level: "warn".into(),
                    text: format!("[{} log records dropped by the plugin: its buffer was full]", r.dropped_before),
                    fields: Default::default(),
                });
            }
            let mut fields: std::collections::HashMap<String, String> =
                r.fields.into_iter().take(MAX_FIELDS).map(|(k, v)| (cut(k), cut(v))).collect();
            if !r.target.is_empty() {
                fields.insert("target".into(), cut(r.target));
            }
            self.logs.push(LogLine {
                unix_nanos: r.unix_nanos,
                instance: self.instance.clone(),
                stream: "sdk".into(),
                level: level_name(r.level).into(),
                text: cut(r.message),
                fields,
            });
        }
        Ok(Response::new(LogSummary { received }))
    }
}

pub fn server(instance: String, logs: Arc<LogBuffer>) -> HostServer<HostService> {
    HostServer::new(HostService { instance, logs })
}
