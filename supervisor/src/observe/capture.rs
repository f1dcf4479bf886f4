//! Reads a plugin's stdout and stderr line by line into its log buffer.
//! Reading never stops while the pipe is open, so a plugin that floods its
//! output cannot block on a full pipe because of us; lines are bounded.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use plugin_proto::control::v1::LogLine;
use tokio::io::AsyncReadExt;

use super::logs::LogBuffer;

/// Longer lines are cut and marked.
const MAX_LINE: usize = 16 * 1024;

/// Spawns the reader; it ends when every writer of the pipe is gone.
pub fn spawn(
    fd: OwnedFd,
    stream: &'static str,
    instance: String,
    buffer: Arc<LogBuffer>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let mut rx = tokio::net::unix::pipe::Receiver::from_owned_fd(fd)?;
    Ok(tokio::spawn(async move {
        let mut buf = vec![0u8; 8192];
        let mut line: Vec<u8> = Vec::new();
        // After cutting a long line, the rest of it up to the newline is skipped.
        let mut skipping = false;
        let emit = |line: &mut Vec<u8>, truncated: bool| {
            let mut text = String::from_utf8_lossy(line).into_owned();
            if truncated {
                text.push_str(" [line truncated]");
            }
            buffer.push(LogLine {
                unix_nanos: super::unix_nanos(),
                instance: instance.clone(),
                stream: stream.to_owned(),
                level: String::new(),
                text,
                fields: Default::default(),
            });
            line.clear();
        };
        loop {
            let n = match rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            for chunk in buf[..n].split_inclusive(|b| *b == b'\n') {
                let (body, ends) = match chunk.strip_suffix(b"\n") {
                    Some(b) => (b, true),
                    None => (chunk, false),
                };
                if skipping {
                    skipping = !ends;
                    continue;
                }
                let room = MAX_LINE.saturating_sub(line.len());
                line.extend_from_slice(&body[..body.len().min(room)]);
                if ends {
                    emit(&mut line, false);
                } else if line.len() >= MAX_LINE {
                    emit(&mut line, true);
                    skipping = true;
                }
            }
        }
        if !line.is_empty() {
            emit(&mut line, false);
        }
    }))
}
