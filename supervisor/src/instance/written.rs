//! The instance's connection counted as it is written: how many bytes the supervisor has
//! written to the plugin's socket so far (so the onboarding check knows a call's request
//! reached the socket of a plugin it holds stopped).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `io`, with every byte written to it counted in `written`.
pub struct Counted<IO> {
    io: IO,
    written: Arc<AtomicU64>,
}

impl<IO> Counted<IO> {
    pub fn new(io: IO, written: Arc<AtomicU64>) -> Self {
        Self { io, written }
    }

    fn count(&self, done: &Poll<io::Result<usize>>) {
        if let Poll::Ready(Ok(n)) = done {
            self.written.fetch_add(*n as u64, Ordering::Relaxed);
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Counted<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Counted<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let done = Pin::new(&mut self.io).poll_write(cx, buf);
        self.count(&done);
        done
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let done = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.count(&done);
        done
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn what_is_written_is_counted_and_what_is_read_is_not() {
        let (ours, mut theirs) = tokio::net::UnixStream::pair().unwrap();
        let written = Arc::new(AtomicU64::new(0));
        let mut counted = Counted::new(ours, written.clone());
        counted.write_all(b"hello").await.unwrap();
        let slices = [io::IoSlice::new(b"ab"), io::IoSlice::new(b"cde")];
        let n = counted.write_vectored(&slices).await.unwrap();
        assert_eq!(written.load(Ordering::Relaxed), 5 + n as u64);
        theirs.write_all(b"back").await.unwrap();
        let mut got = [0u8; 4];
        counted.read_exact(&mut got).await.unwrap();
        assert_eq!((&got, written.load(Ordering::Relaxed)), (b"back", 5 + n as u64));
    }
}
