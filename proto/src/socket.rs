//! A Unix stream socket the runtime watches for reading only, and for room to
//! write only while a write waits for it.
//!
//! tokio's `UnixStream` registers every socket for readability and
//! writability, edge-triggered. A Unix socket's writer is told it may write
//! again each time its reader takes data (the kernel's `unix_write_space`
//! wakes every waiter on the socket), so a process that had written a
//! request or an answer was woken again, with nothing to do, as soon as the
//! other end read it: asleep, it paid a wake-up (on these virtual machines,
//! often of an idle CPU); watching ([`crate::spin`]), it took the event for
//! work. In `bench --only gateway`, the caller slept twice per sequential
//! call, once for its answer and once for nothing. Here a write goes straight
//! to the socket; only one that finds it full has the socket registered for
//! writability as well, until a write gets through.
//!
//! `gateway.sock`'s connections use it at both ends: the daemon's, and a
//! caller's that connects with [`QuietStream::connect`]. The plugins'
//! connections keep tokio's registration at both ends: there, the event of
//! the daemon taking a plugin's answer is what kept the plugin's watch going
//! until the next request of sequential calls came. In `bench --only
//! gateway` on an Intel Xeon host, builds alternating round by round in one
//! hour (medians of six or eight rounds):
//! - quiet on every socket, the plugin slept once per sequential call (0.61
//!   times before) and the p50 went from 0.94x go-plugin's to 1.30x (on an
//!   AMD EPYC host, earlier, every socket quiet and a plugin's end alone
//!   quiet had each made the p50 worse too: README, Benchmarks);
//! - quiet on `gateway.sock`'s connections only, the p50 went from 1.04x to
//!   0.73x, and CPU per call at 16 callers from 1.17x to 1.10x (the caller's
//!   from 10.25 µs to 9.38, the daemon's from 22.38 to 21.00); the daemon's
//!   end of the plugin connection quiet as well changed neither.
//!
//! tokio cannot change a registration's interest, so the socket is
//! deregistered and registered again (two `epoll_ctl` calls each way, only
//! when a peer does not keep up). Its wakers go with the old registration:
//! the last task to wait for reading is woken to wait again, so a reader
//! never sleeps through data that came while the socket was re-registered.
//! A second descriptor for writability (a `dup`) would have avoided that, but
//! every stalled caller's connection would then hold two of the gateway's
//! descriptors, which `fd_reserve` counts one each.

use std::io::{self, IoSlice, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// A connected Unix stream socket in the runtime of the task that made it.
#[derive(Debug)]
pub struct QuietStream {
    /// The socket, none only after it could not be registered again.
    io: Option<AsyncFd<UnixStream>>,
    /// Whether it is registered for room to write too: a write is waiting.
    waiting_for_room: bool,
    /// The last task whose read found nothing: woken when the registration changes.
    reader: Option<Waker>,
    /// The runtime it was registered with, which each registration again is made in.
    runtime: tokio::runtime::Handle,
}

impl QuietStream {
    /// Takes `stream` (made non-blocking here) into the current runtime, watched for
    /// reading only.
    pub fn new(stream: UnixStream) -> io::Result<Self> {
        stream.set_nonblocking(true)?;
        Ok(Self {
            io: Some(register(stream, Interest::READABLE)?),
            waiting_for_room: false,
            reader: None,
            runtime: tokio::runtime::Handle::current(),
        })
    }

    /// Takes a socket tokio registered both ways out of that registration.
    pub fn from_tokio(stream: tokio::net::UnixStream) -> io::Result<Self> {
        Self::new(stream.into_std()?)
    }

    /// Connects to the socket at `path`.
    pub async fn connect(path: impl AsRef<std::path::Path>) -> io::Result<Self> {
        Self::from_tokio(tokio::net::UnixStream::connect(path).await?)
    }

    /// Whether a write is waiting for room (the socket is registered for it).
    pub fn waiting_for_room(&self) -> bool {
        self.waiting_for_room
    }

    fn io(&self) -> io::Result<&AsyncFd<UnixStream>> {
        self.io.as_ref().ok_or_else(lost)
    }

    /// Registers the socket anew, for writability too while `room` (a write waits for
    /// it). The reader waiting on the old registration is woken to wait on the new one,
    /// or, where none could be made, to find the socket gone.
    fn reregister(&mut self, room: bool) -> io::Result<()> {
        let registered = self.io.take().ok_or_else(lost);
        let interest = if room { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
        let _in_its_runtime = self.runtime.enter();
        let done = registered.and_then(|r| register(r.into_inner(), interest));
        if let Some(reader) = self.reader.take() {
            reader.wake();
        }
        self.io = Some(done?);
        self.waiting_for_room = room;
        Ok(())
    }

    /// Writes `len` bytes at most with `write`, at once while the socket has room, else
    /// when it has.
    fn poll_write_with(
        &mut self,
        cx: &mut Context<'_>,
        len: usize,
        write: impl Fn(&UnixStream) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        if !self.waiting_for_room {
            match write(self.io()?.get_ref()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.reregister(true)?,
                done => return Poll::Ready(done),
            }
        }
        let io = self.io()?;
        let done = loop {
            let mut guard = ready!(io.poll_write_ready(cx))?;
            match guard.try_io(|s| write(s.get_ref())) {
                // Short: the socket is full again, and the next write will wait for room
                // as this one did. It stays registered for it rather than paying two
                // registrations a chunk to a peer that reads slowly.
                Ok(Ok(n)) if n < len => {
                    guard.clear_ready();
                    return Poll::Ready(Ok(n));
                }
                Ok(done) => break done,
                Err(_would_block) => {}
            }
        };
        // Room to spare: the next write goes straight to the socket. Should that
        // registration fail, what was just written is reported as an error: the socket is
        // of no more use, and the connection ends either way.
        self.reregister(false)?;
        Poll::Ready(done)
    }
}

/// What every use of a socket that could not be registered again gets.
fn lost() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the socket could not be registered with the runtime again")
}

/// Registers `stream` with the current runtime for `interest`.
fn register(stream: UnixStream, interest: Interest) -> io::Result<AsyncFd<UnixStream>> {
    // SAFETY: the stream owns its descriptor, which stays open and the same until the
    // `AsyncFd` drops it or gives the stream back; nothing here closes or replaces it.
    Ok(unsafe { AsyncFd::register_with_interest(stream, interest) }?)
}

impl AsRawFd for QuietStream {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.io.as_ref().map_or(-1, AsRawFd::as_raw_fd)
    }
}

impl AsyncRead for QuietStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(io) = this.io.as_ref() else { return Poll::Ready(Err(lost())) };
        loop {
            let mut guard = match io.poll_read_ready(cx) {
                Poll::Ready(guard) => guard?,
                Poll::Pending => {
                    if !this.reader.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                        this.reader = Some(cx.waker().clone());
                    }
                    return Poll::Pending;
                }
            };
            // SAFETY: nothing here de-initializes the unfilled part: `read(2)` only writes
            // bytes into it, and only those it returns are then marked filled.
            let unfilled = unsafe { buf.unfilled_mut() };
            let len = unfilled.len();
            let read = guard.try_io(|s| {
                // SAFETY: the pointer and length are those of `unfilled`, writable memory
                // that outlives the call; the descriptor is the guard's open socket.
                let n = unsafe { libc::read(s.as_raw_fd(), unfilled.as_mut_ptr().cast(), len) };
                usize::try_from(n).map_err(|_| io::Error::last_os_error())
            });
            match read {
                Ok(Ok(n)) => {
                    // As tokio's UnixStream does: a read short of the buffer emptied the
                    // socket, so the next one waits for an edge instead of finding EAGAIN.
                    if n > 0 && n < len {
                        guard.clear_ready();
                    }
                    // SAFETY: `read(2)` wrote these `n` bytes at the start of `unfilled`.
                    unsafe { buf.assume_init(n) };
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                // Not readable after all: the readiness is cleared, wait for the next.
                Err(_would_block) => {}
            }
        }
    }
}

impl AsyncWrite for QuietStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_with(cx, buf.len(), |mut s| s.write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let len = bufs.iter().map(|b| b.len()).sum();
        self.get_mut().poll_write_with(cx, len, |mut s| s.write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.io()?.get_ref().shutdown(std::net::Shutdown::Write))
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// How often a current-thread runtime woke while a stream made by `make` waited for
    /// its answer: its request written, the peer takes it, and then answers.
    fn wake_ups_waiting_for_an_answer<S>(make: fn(UnixStream) -> S) -> usize
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let (parked, woke) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (parking, waking, parks_now) = (parked.clone(), woke.clone(), parked.clone());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .on_thread_park(move || {
                parking.fetch_add(1, Ordering::SeqCst);
            })
            .on_thread_unpark(move || {
                waking.fetch_add(1, Ordering::SeqCst);
            })
            .build()
            .unwrap();
        let (asked, told) = std::sync::mpsc::channel();
        let peer = std::thread::spawn(move || {
            // Each step once the runtime has gone to sleep after the last (or, where
            // nothing woke it, after a while), so that each event wakes it on its own.
            let asleep_after = |parks: usize, at_most: Duration| {
                let since = std::time::Instant::now();
                while parked.load(Ordering::SeqCst) <= parks && since.elapsed() < at_most {
                    std::thread::sleep(Duration::from_millis(1));
                }
                parked.load(Ordering::SeqCst)
            };
            let parks = asleep_after(told.recv().unwrap(), SOON);
            theirs.read_exact(&mut [0]).unwrap();
            asleep_after(parks, Duration::from_millis(200));
            theirs.write_all(b"y").unwrap();
        });
        let woken = rt.block_on(async move {
            let mut s = make(ours);
            s.write_all(b"x").await.unwrap();
            let before = woke.load(Ordering::SeqCst);
            asked.send(parks_now.load(Ordering::SeqCst)).unwrap();
            s.read_exact(&mut [0]).await.unwrap();
            woke.load(Ordering::SeqCst) - before
        });
        peer.join().unwrap();
        woken
    }

    #[test]
    fn a_writer_is_not_woken_when_its_peer_takes_what_it_wrote() {
        let tokio_stream = |s: UnixStream| {
            s.set_nonblocking(true).unwrap();
            tokio::net::UnixStream::from_std(s).unwrap()
        };
        assert_eq!(
            wake_ups_waiting_for_an_answer(tokio_stream),
            2,
            "tokio's stream wakes once for the room its request left, once for the answer"
        );
        assert_eq!(wake_ups_waiting_for_an_answer(|s| QuietStream::new(s).unwrap()), 1, "woken for the answer only");
    }

    /// Within this, a step that should happen does.
    const SOON: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn a_write_waiting_for_room_leaves_reads_going_and_ends_once_the_peer_reads() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let (mut r, mut w) = tokio::io::split(QuietStream::new(ours).unwrap());
        // A reader waiting before the write fills the socket: the registration it waits
        // on is replaced under it.
        let first = tokio::spawn(async move {
            let mut got = [0; 5];
            r.read_exact(&mut got).await.unwrap();
            (r, got)
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        const BIG: usize = 8 << 20;
        let writer = tokio::spawn(async move {
            w.write_all(&vec![7; BIG]).await.unwrap();
            w
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!writer.is_finished(), "8 MiB fit in the socket: the test proves nothing");
        theirs.write_all(b"hello").unwrap();
        let (mut r, got) = tokio::time::timeout(SOON, first).await.expect("the read slept through its data").unwrap();
        assert_eq!(&got, b"hello");
        assert!(!writer.is_finished(), "the write ended though nobody read");

        // A reader waiting while the write gets its room: the registration changes back.
        let second = tokio::spawn(async move {
            let mut got = [0; 5];
            r.read_exact(&mut got).await.unwrap();
            got
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let drained = tokio::task::spawn_blocking(move || {
            let mut all = vec![0; BIG];
            theirs.read_exact(&mut all).unwrap();
            assert!(all.iter().all(|b| *b == 7));
            theirs
        });
        let mut theirs = tokio::time::timeout(SOON, drained).await.expect("the peer read nothing").unwrap();
        tokio::time::timeout(SOON, writer).await.expect("the write never got its room").unwrap();
        theirs.write_all(b"again").unwrap();
        let got = tokio::time::timeout(SOON, second).await.expect("the read slept through its data").unwrap();
        assert_eq!(&got, b"again");
    }

    #[tokio::test]
    async fn a_write_to_a_closed_peer_fails_and_so_does_a_waiting_one() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let mut s = QuietStream::new(ours).unwrap();
        let filled = tokio::time::timeout(Duration::from_millis(100), s.write_all(&vec![1; 8 << 20])).await;
        assert!(filled.is_err(), "8 MiB fit in the socket: {filled:?}");
        assert!(s.waiting_for_room());
        drop(theirs);
        let e = tokio::time::timeout(SOON, s.write_all(b"more")).await.expect("the waiting write hung").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe, "{e}");
        assert!(!s.waiting_for_room(), "the failed write still waits for room");
        // Written straight to the socket now, and failing the same.
        let e = s.write_all(b"more").await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe, "{e}");
    }

    #[tokio::test]
    async fn a_slow_reader_keeps_a_long_write_registered_for_room_until_it_is_all_taken() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let mut s = QuietStream::new(ours).unwrap();
        const BIG: usize = 4 << 20;
        let drained = tokio::task::spawn_blocking(move || {
            // A chunk a millisecond, as a peer reading slowly would: the writer finds the
            // socket full between them.
            let mut left = BIG;
            let mut chunk = vec![0; 64 << 10];
            while left > 0 {
                std::thread::sleep(Duration::from_millis(1));
                let n = theirs.read(&mut chunk[..left.min(64 << 10)]).unwrap();
                assert!(n > 0, "the write ended early");
                left -= n;
            }
            theirs
        });
        let data = vec![3; BIG];
        let mut written = 0;
        let mut short_writes_waiting = 0;
        while written < BIG {
            let n =
                tokio::time::timeout(SOON, s.write(&data[written..])).await.expect("a write never got room").unwrap();
            written += n;
            if written < BIG && s.waiting_for_room() {
                short_writes_waiting += 1;
            }
        }
        assert!(short_writes_waiting > 0, "no write waited for room while more was to come");
        assert!(!s.waiting_for_room(), "the write that took the rest left it registered for room");
        let mut theirs = tokio::time::timeout(SOON, drained).await.unwrap().unwrap();
        theirs.write_all(b"z").unwrap();
        let mut got = [0];
        tokio::time::timeout(SOON, s.read_exact(&mut got)).await.expect("no read after the writes").unwrap();
        assert_eq!(got, *b"z");
    }
}
