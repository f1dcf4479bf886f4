//! Reads a plugin's stdout and stderr line by line into its log buffer, through the
//! plugin's rate limit. Lines over the limit are read and dropped up to the reader's
//! budget; beyond it the pipe is left unread for a while, so a plugin writing as fast as
//! it can blocks in `write()` on its own pipe instead of costing the supervisor a core
//! (see [`super::limit`]). Lines are bounded; every byte read that is not part of a kept
//! line (a dropped line, the rest of a line cut at its longest) is charged to the budget,
//! and a kept line costs the rate limit a token per started KiB.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use tokio::io::AsyncReadExt;

use super::logs::{Gate, LogBuffer, Stream};

/// Longer lines are cut and marked.
pub const MAX_LINE: usize = 16 * 1024;
/// A pipe holds 64 KiB by default: a flood is taken in reads of that size.
const READ: usize = 64 * 1024;
/// What a reader holds while its pipe is quiet: most output comes a line or a few at a
/// time, and a thousand instances' readers each holding a flood's buffer would be 128 MiB.
const QUIET_READ: usize = 2 * 1024;

/// The buffer for the next read, after one of `n` bytes into `len`: a full read means more
/// is waiting (a flood, taken in reads of a pipe's size), a short one that the pipe is
/// drained.
fn next_read_size(n: usize, len: usize) -> usize {
    if n == len { READ } else { QUIET_READ }
}

/// Spawns the reader of `stream` ("stdout" or "stderr"); it ends when every writer of the
/// pipe is gone.
pub fn spawn(
    fd: OwnedFd,
    stream: &'static str,
    instance: String,
    buffer: Arc<LogBuffer>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let rx = tokio::net::unix::pipe::Receiver::from_owned_fd(fd)?;
    let stream = if stream == "stdout" { Stream::Stdout } else { Stream::Stderr };
    Ok(tokio::spawn(read(rx, Gate::new(buffer, instance, stream))))
}

async fn read(mut rx: impl tokio::io::AsyncRead + Unpin, mut gate: Gate) {
    let mut buf = vec![0u8; QUIET_READ];
    let mut line: Vec<u8> = Vec::new();
    // After cutting a long line, the rest of it up to the newline is skipped.
    let mut skipping = false;
    let emit = |gate: &mut Gate, line: &mut Vec<u8>, truncated: bool| {
        if gate.admit(line.len()) {
            let mut text = String::from_utf8_lossy(line).into_owned();
            if truncated {
                text.push_str(" [line truncated]");
            }
            gate.push(gate.line("", text, Default::default()));
        }
        line.clear();
    };
    loop {
        if let Some(wait) = gate.pause() {
            tokio::time::sleep(wait).await;
        }
        let n = match rx.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // The daemon runs on one thread: a full pipe is always ready to read, so between
        // reads the calls of other plugins get their turn.
        tokio::task::yield_now().await;
        for chunk in buf[..n].split_inclusive(|b| *b == b'\n') {
            let (body, ends) = match chunk.strip_suffix(b"\n") {
                Some(b) => (b, true),
                None => (chunk, false),
            };
            // What is read past a line's longest is thrown away, and costs as much as a
            // dropped line: charged to the drop budget, so that one endless line (or many
            // long ones) is read no faster than a flood of short ones.
            if skipping {
                gate.skipped(chunk.len());
                skipping = !ends;
                continue;
            }
            let room = MAX_LINE.saturating_sub(line.len());
            // A long line whose end comes in the same read is cut here too.
            let cut = body.len() > room;
            let take = body.len().min(room);
            line.extend_from_slice(&body[..take]);
            if cut {
                gate.skipped(body.len() - take);
            }
            if ends {
                emit(&mut gate, &mut line, cut);
            } else if line.len() >= MAX_LINE {
                emit(&mut gate, &mut line, true);
                skipping = true;
            }
        }
        let size = next_read_size(n, buf.len());
        if size != buf.len() {
            buf = vec![0u8; size];
        }
    }
    if !line.is_empty() {
        emit(&mut gate, &mut line, false);
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use tokio::io::AsyncWriteExt;

    use super::*;
    use crate::observe::limit::LogLimit;

    #[test]
    fn a_quiet_pipe_is_read_with_a_small_buffer_and_a_flood_with_a_pipes_worth() {
        assert_eq!(next_read_size(QUIET_READ, QUIET_READ), READ, "a full read: more is waiting");
        assert_eq!(next_read_size(READ, READ), READ, "still flooding");
        assert_eq!(next_read_size(100, READ), QUIET_READ, "drained: back to the small one");
        assert_eq!(next_read_size(10, QUIET_READ), QUIET_READ);
    }

    fn lines(b: &LogBuffer) -> Vec<String> {
        b.subscribe(usize::MAX).0.into_iter().map(|l| l.text).collect()
    }

    #[tokio::test]
    async fn lines_are_split_cut_and_kept_in_order() {
        let b = Arc::new(LogBuffer::new("p", 100, LogLimit::default()));
        let (mut w, r) = tokio::io::duplex(1024);
        let task = tokio::spawn(read(r, Gate::new(b.clone(), "p-0".into(), Stream::Stdout)));
        let long = "x".repeat(MAX_LINE + 10);
        w.write_all(b"one\ntw").await.unwrap();
        w.write_all(format!("o\n{long}\nthree").as_bytes()).await.unwrap();
        drop(w);
        task.await.unwrap();
        let got = lines(&b);
        assert_eq!(got.len(), 4, "{:?}", got.iter().map(|l| l.len()).collect::<Vec<_>>());
        assert_eq!((got[0].as_str(), got[1].as_str(), got[3].as_str()), ("one", "two", "three"));
        let ends: Vec<(usize, &str)> = got.iter().map(|l| (l.len(), &l[l.len().saturating_sub(20)..])).collect();
        let cut = got[2].strip_suffix(" [line truncated]").unwrap_or_else(|| panic!("not marked: {ends:?}"));
        assert!(cut.len() == MAX_LINE && cut.bytes().all(|b| b == b'x'), "{} bytes", cut.len());
    }

    /// A writer that never stops: the reader keeps the rate, drops up to its budget and
    /// then reads no more than the budget allows, so the writer is held back.
    #[tokio::test]
    async fn a_flood_is_limited_then_left_unread() {
        let b = Arc::new(LogBuffer::new("p", 10_000, LogLimit { rate: 100, burst: 100 }));
        let (mut w, r) = tokio::io::duplex(64 * 1024);
        let task = tokio::spawn(read(r, Gate::new(b.clone(), "p-0".into(), Stream::Stderr)));
        let chunk = "flood line of about forty bytes, on and on\n".repeat(1000);
        let t0 = Instant::now();
        let mut written = 0usize;
        while t0.elapsed() < Duration::from_millis(1500) {
            if tokio::time::timeout(Duration::from_millis(50), w.write_all(chunk.as_bytes())).await.is_err() {
                continue;
            }
            written += chunk.len();
        }
        drop(w);
        task.await.unwrap();
        let took = t0.elapsed().as_secs_f64();
        let c = b.counts()[1];
        // The burst, then about 100 a second.
        assert!(c.kept >= 100 && c.kept <= 100 + (took * 100.0) as u64 + 100, "{c:?}");
        // What was read and dropped stayed near the budget (1 MiB/s at 64 bytes a line,
        // plus the buffer's worth), far below what the writer would have written.
        let dropped_bytes = c.dropped as f64 * 64.0;
        assert!(dropped_bytes < (took + 1.0) * crate::observe::limit::DROP_BYTES_PER_SEC, "{c:?} in {took}s");
        assert!(written < 8 << 20, "the writer was held back: {written} bytes in {took}s");
        let texts = lines(&b);
        assert!(texts.iter().any(|t| t.starts_with("suppressed ")), "{:?}", &texts[..5]);
    }

    /// Writes `chunk` again and again for `run`, or until the reader stops reading: the
    /// bytes taken and the seconds it took.
    async fn write_for(w: &mut tokio::io::DuplexStream, chunk: &[u8], run: Duration) -> (usize, f64) {
        let t0 = Instant::now();
        let mut written = 0usize;
        while t0.elapsed() < run {
            if tokio::time::timeout(Duration::from_millis(50), w.write_all(chunk)).await.is_ok() {
                written += chunk.len();
            }
        }
        (written, t0.elapsed().as_secs_f64())
    }

    /// One line that never ends: its first 16 KiB are a line, the rest is thrown away and
    /// charged, so the writer is held back as a flood of lines would be.
    #[tokio::test]
    async fn an_endless_line_is_left_unread_like_a_flood() {
        let b = Arc::new(LogBuffer::new("p", 100, LogLimit::default()));
        let (mut w, r) = tokio::io::duplex(64 * 1024);
        let task = tokio::spawn(read(r, Gate::new(b.clone(), "p-0".into(), Stream::Stdout)));
        let (written, took) = write_for(&mut w, &[b'x'; 64 * 1024], Duration::from_millis(1500)).await;
        drop(w);
        task.await.unwrap();
        // The budget's first second, then its rate, plus what the pipes hold.
        let most = (1.0 + took) * crate::observe::limit::DROP_BYTES_PER_SEC + 512.0 * 1024.0;
        assert!((written as f64) < most, "the writer was not held back: {written} bytes in {took:.2}s");
        let got = lines(&b);
        assert_eq!(got.len(), 1, "{:?}", got.iter().map(String::len).collect::<Vec<_>>());
        assert!(got[0].ends_with(" [line truncated]"));
    }

    /// Lines of 16 KiB: each kept one costs 16 tokens, so what is kept is bounded in bytes
    /// (about log_rate KiB a second after the burst), and so is what is read.
    #[tokio::test]
    async fn long_lines_are_kept_by_size() {
        let limit = LogLimit { rate: 1000, burst: 2000 };
        let b = Arc::new(LogBuffer::new("p", 10_000, limit));
        let (mut w, r) = tokio::io::duplex(64 * 1024);
        let task = tokio::spawn(read(r, Gate::new(b.clone(), "p-0".into(), Stream::Stdout)));
        let line = format!("{}\n", "y".repeat(MAX_LINE - 1));
        let (written, took) = write_for(&mut w, line.repeat(4).as_bytes(), Duration::from_millis(1500)).await;
        drop(w);
        task.await.unwrap();
        let c = b.counts()[0];
        let kept_kib = c.kept as f64 * 16.0;
        let most_kib = f64::from(limit.burst) + took * f64::from(limit.rate) + 16.0;
        assert!(kept_kib <= most_kib, "kept {kept_kib} KiB in {took:.2}s (at most {most_kib}): {c:?}");
        assert!(c.kept >= 100, "{c:?}");
        let most_read = most_kib * 1024.0 + (1.0 + took) * crate::observe::limit::DROP_BYTES_PER_SEC + 512.0 * 1024.0;
        assert!((written as f64) < most_read, "the writer was not held back: {written} bytes in {took:.2}s");
    }
}
