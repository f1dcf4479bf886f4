//! The one connection a plugin serves on, as tonic's server wants it: an
//! incoming stream that never ends, and a stream that starts the shutdown
//! when the supervisor's end goes away.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;

use crate::shutdown::Shutdown;

/// The supervisor's connection; dropped by tonic when the connection ends.
pub struct Watched {
    io: UnixStream,
    shutdown: Shutdown,
}

impl Drop for Watched {
    fn drop(&mut self) {
        // Without the supervisor nobody can call us or stop us: leave.
        self.shutdown.connection_closed();
    }
}

impl tonic::transport::server::Connected for Watched {
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
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

/// Yields the one connection, then stays pending: tonic's server returns as
/// soon as its incoming stream ends, which would end the plugin.
pub fn incoming(io: UnixStream, shutdown: Shutdown) -> impl Stream<Item = io::Result<Watched>> {
    futures_util::stream::once(async move { Ok(Watched { io, shutdown }) }).chain(futures_util::stream::pending())
}
