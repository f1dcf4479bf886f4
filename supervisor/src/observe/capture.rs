//! Reads a plugin's stdout and stderr line by line into its log buffer, through the
//! plugin's rate limit. Lines over the limit are read and dropped up to the reader's
//! budget; beyond it the pipe is left unread for a while, so a plugin writing as fast as
//! it can blocks in `write()` on its own pipe instead of costing the supervisor a core
//! (see [`super::limit`]). Lines are bounded; every byte read that is not part of a kept
//! line (a dropped line, the rest of a line cut at its longest) is charged to the budget,
//! and a kept line costs the rate limit a token per started KiB.

use std::cell::RefCell;
use std::future::poll_fn;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use tokio::io::ReadBuf;

use super::logs::{Gate, LogBuffer, Stream};

/// Longer lines are cut and marked.
pub const MAX_LINE: usize = 16 * 1024;
/// A pipe holds 64 KiB by default: every read is of that size, so a flood is taken a
/// pipe's worth at a time.
const READ: usize = 64 * 1024;

thread_local! {
    /// The buffer every reader on this thread reads into, used only within one poll: a
    /// reader whose pipe is quiet holds none. With a buffer each (2 KiB while quiet, a
    /// pipe's worth in a flood), a thousand instances' two readers held 4 MB of the
    /// daemon's memory (`bench --only scale --named`).
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; READ]);
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
    let mut lines = Lines::default();
    loop {
        if let Some(wait) = gate.pause() {
            tokio::time::sleep(wait).await;
        }
        // What a read brings is taken in within the same poll, so the buffer it went into
        // is free again by the time any other reader polls.
        let more = poll_fn(|cx| {
            let mut take = |buf: &mut [u8]| {
                let mut into = ReadBuf::new(buf);
                match Pin::new(&mut rx).poll_read(cx, &mut into) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Err(_)) => Poll::Ready(false),
                    Poll::Ready(Ok(())) if into.filled().is_empty() => Poll::Ready(false),
                    Poll::Ready(Ok(())) => {
                        lines.take(into.filled(), &mut gate);
                        Poll::Ready(true)
                    }
                }
            };
            // Polls do not nest, so the buffer is always free; were it not, a buffer of
            // this read's own would do.
            SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
                Ok(mut buf) => take(&mut buf),
                Err(_) => take(&mut vec![0; READ]),
            })
        })
        .await;
        if !more {
            break;
        }
        // The daemon runs on one thread: a full pipe is always ready to read, so between
        // reads the calls of other plugins get their turn.
        tokio::task::yield_now().await;
    }
    lines.end(&mut gate);
}

/// The line being read, across reads.
#[derive(Default)]
struct Lines {
    line: Vec<u8>,
    /// After cutting a long line, the rest of it up to the newline is skipped.
    skipping: bool,
}

impl Lines {
    fn take(&mut self, read: &[u8], gate: &mut Gate) {
        for chunk in read.split_inclusive(|b| *b == b'\n') {
            let (body, ends) = match chunk.strip_suffix(b"\n") {
                Some(b) => (b, true),
                None => (chunk, false),
            };
            // What is read past a line's longest is thrown away, and costs as much as a
            // dropped line: charged to the drop budget, so that one endless line (or many
            // long ones) is read no faster than a flood of short ones.
            if self.skipping {
                gate.skipped(chunk.len());
                self.skipping = !ends;
                continue;
            }
            let room = MAX_LINE.saturating_sub(self.line.len());
            // A long line whose end comes in the same read is cut here too.
            let cut = body.len() > room;
            let take = body.len().min(room);
            if cut {
                gate.skipped(body.len() - take);
            }
            // A whole line in one read (most are) goes out from the read itself.
            if ends && self.line.is_empty() {
                emit(gate, &body[..take], cut);
                continue;
            }
            self.line.extend_from_slice(&body[..take]);
            if ends {
                self.emit_held(gate, cut);
            } else if self.line.len() >= MAX_LINE {
                self.emit_held(gate, true);
                self.skipping = true;
            }
        }
    }

    /// The line held across reads goes out, and its room with it once large: a thousand
    /// instances' readers each keeping the room of the longest line they ever saw (up to
    /// 16 KiB) would hold 32 MB.
    fn emit_held(&mut self, gate: &mut Gate, truncated: bool) {
        emit(gate, &self.line, truncated);
        if self.line.capacity() > KEPT_ROOM {
            self.line = Vec::new();
        } else {
            self.line.clear();
        }
    }

    /// The pipe closed: a last line without its newline is kept too.
    fn end(&mut self, gate: &mut Gate) {
        if !self.line.is_empty() {
            self.emit_held(gate, false);
        }
    }
}

/// The most room a reader keeps for a line between reads.
const KEPT_ROOM: usize = 1024;

fn emit(gate: &mut Gate, line: &[u8], truncated: bool) {
    if gate.admit(line.len()) {
        let mut text = String::from_utf8_lossy(line).into_owned();
        if truncated {
            text.push_str(" [line truncated]");
        }
        gate.push(gate.line("", text, Default::default()));
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use tokio::io::AsyncWriteExt;

    use super::*;
    use crate::observe::limit::LogLimit;

    /// A line longer than a read's end is held across reads; once out, a long one's room
    /// is let go, and a line whole in one read is never copied into it.
    #[test]
    fn a_reader_keeps_no_room_for_a_long_line_once_it_is_out() {
        let b = Arc::new(LogBuffer::new("p", 100, LogLimit::default()));
        let mut gate = Gate::new(b.clone(), "p-0".into(), Stream::Stdout);
        let mut reader = Lines::default();
        let long = "x".repeat(8 * 1024);
        reader.take(long.as_bytes(), &mut gate);
        assert_eq!(reader.line.len(), long.len(), "held: its end is still to come");
        reader.take(b"y\nshort\n", &mut gate);
        assert!(reader.line.capacity() < long.len(), "still holds {} bytes of room", reader.line.capacity());
        reader.take(b"par", &mut gate);
        reader.take(b"ts\n", &mut gate);
        reader.take(b"last, unended", &mut gate);
        reader.end(&mut gate);
        let got = lines(&b);
        assert_eq!(got.len(), 4);
        assert_eq!(
            (got[0].len(), &got[1..]),
            (long.len() + 1, &["short".to_owned(), "parts".into(), "last, unended".into()][..])
        );
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
