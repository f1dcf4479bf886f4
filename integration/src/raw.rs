//! Raw HTTP/2 clients on the gateway socket, for what generated clients
//! never do: advertise a stream window of 0 and never read, hold
//! connections open doing nothing, connect without the HTTP/2 preface.

use std::path::Path;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::net::UnixStream;

/// `msg` as one gRPC message frame (uncompressed, length-prefixed).
pub fn grpc_frame(msg: &impl prost::Message) -> Bytes {
    let mut buf = BytesMut::with_capacity(5 + msg.encoded_len());
    buf.put_u8(0);
    buf.put_u32(msg.encoded_len() as u32);
    msg.encode(&mut buf).expect("encoding into a sized buffer");
    buf.freeze()
}

/// A caller that sent its requests and takes no byte of any response: its
/// connection advertises a stream window of 0 and releases none, until
/// [`StalledCaller::open_window`].
pub struct StalledCaller {
    pub responses: Vec<h2::client::ResponseFuture>,
    conn: tokio::task::JoinHandle<()>,
    open: Option<tokio::sync::oneshot::Sender<()>>,
    _send: h2::client::SendRequest<Bytes>,
}

/// The stream window a stalled caller opens to when it starts reading.
const READING_WINDOW: u32 = 1 << 20;

impl StalledCaller {
    /// Sends `calls` requests of `path` with `body` (a gRPC frame) each.
    pub async fn start(gateway: &Path, path: &str, body: Bytes, calls: usize) -> anyhow::Result<Self> {
        let io = UnixStream::connect(gateway).await?;
        let (send, mut conn) = h2::client::Builder::new().initial_window_size(0).handshake::<_, Bytes>(io).await?;
        let (open, opened) = tokio::sync::oneshot::channel();
        let conn = tokio::spawn(async move {
            tokio::select! {
                _ = &mut conn => return,
                Ok(()) = opened => {}
            }
            let _ = conn.set_initial_window_size(READING_WINDOW);
            conn.set_target_window_size(READING_WINDOW);
            let _ = conn.await;
        });
        let mut responses = Vec::with_capacity(calls);
        for _ in 0..calls {
            let mut ready = send.clone().ready().await?;
            let req = http::Request::post(format!("http://gateway{path}"))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(())?;
            let (response, mut stream) = ready.send_request(req, false)?;
            // h2 queues what the window does not yet allow.
            stream.send_data(body.clone(), true)?;
            responses.push(response);
        }
        Ok(Self { responses, conn, open: Some(open), _send: send })
    }

    /// Waits for every response's headers (HEADERS frames need no window):
    /// the calls have reached the plugin and it has answered.
    pub async fn answered(&mut self) -> anyhow::Result<Vec<h2::RecvStream>> {
        let mut bodies = Vec::new();
        for r in self.responses.drain(..) {
            let resp = r.await?;
            anyhow::ensure!(resp.status() == 200, "response status {}", resp.status());
            bodies.push(resp.into_body());
        }
        Ok(bodies)
    }

    /// Waits for each call's headers, or its reset (the reason) if the
    /// gateway reset it first.
    pub async fn settled(&mut self) -> anyhow::Result<Vec<Result<h2::RecvStream, h2::Reason>>> {
        let mut calls = Vec::new();
        for r in self.responses.drain(..) {
            match r.await {
                Ok(resp) => {
                    anyhow::ensure!(resp.status() == 200, "response status {}", resp.status());
                    calls.push(Ok(resp.into_body()));
                }
                Err(e) => calls.push(Err(e.reason().ok_or_else(|| anyhow::anyhow!("not a reset: {e}"))?)),
            }
        }
        Ok(calls)
    }

    /// Starts taking the answers: the connection's stream windows open
    /// (read them with [`read_answer`]).
    pub fn open_window(&mut self) {
        if let Some(open) = self.open.take() {
            let _ = open.send(());
        }
    }

    /// Whether the connection has ended (closed by the gateway, typically).
    pub fn ended(&self) -> bool {
        self.conn.is_finished()
    }
}

/// The reason the gateway reset `body` with, if it has; `None` while the
/// stream is open. Does not wait, and takes nothing.
pub fn reset_now(body: &mut h2::RecvStream) -> Option<h2::Reason> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match body.poll_data(&mut cx) {
        std::task::Poll::Ready(Some(Err(e))) => Some(e.reason().unwrap_or(h2::Reason::INTERNAL_ERROR)),
        _ => None,
    }
}

/// Reads a whole answer, releasing window as it goes: how many bytes came
/// and the trailers' `grpc-status`.
pub async fn read_answer(mut body: h2::RecvStream) -> Result<(usize, String), h2::Error> {
    let mut len = 0;
    while let Some(data) = body.data().await {
        let data = data?;
        len += data.len();
        let _ = body.flow_control().release_capacity(data.len());
    }
    let trailers = body.trailers().await?.unwrap_or_default();
    let status = trailers.get("grpc-status").and_then(|v| v.to_str().ok()).unwrap_or("none").to_owned();
    Ok((len, status))
}

impl Drop for StalledCaller {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

/// How a stalled response stream ended, from the caller's side: the reset
/// reason the gateway sent, or what came instead. Never releases capacity.
pub async fn end_of(mut body: h2::RecvStream, within: Duration) -> Result<h2::Reason, String> {
    let ended = tokio::time::timeout(within, async {
        match body.data().await {
            Some(Ok(d)) => Err(format!("{} bytes arrived on a window of 0", d.len())),
            Some(Err(e)) => e.reason().ok_or_else(|| format!("not a reset: {e}")),
            None => match body.trailers().await {
                Ok(t) => Err(format!("the stream ended with trailers {t:?}")),
                Err(e) => e.reason().ok_or_else(|| format!("not a reset: {e}")),
            },
        }
    })
    .await;
    ended.unwrap_or_else(|_| Err(format!("still open after {within:?}")))
}

/// The client connection preface and an empty SETTINGS frame: after this a
/// connection is open and idle as far as HTTP/2 goes.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";

/// Connects to `gateway` and makes one call of `path` with `body` (a gRPC
/// frame), taking no byte of its answer (a stream window of 0); returns
/// once the answer's headers have come, so the call is open. HTTP/2 by
/// hand, so that what the gateway sends afterwards (a GOAWAY) can be seen.
pub fn busy_connection(
    gateway: &Path,
    path: &str,
    body: &[u8],
    within: Duration,
) -> std::io::Result<std::os::unix::net::UnixStream> {
    use std::io::{Read, Write};
    let frame = |kind: u8, flags: u8, stream: u32, payload: &[u8]| {
        let len = payload.len().to_be_bytes();
        let mut f = vec![len[5], len[6], len[7], kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    };
    // HPACK: :method POST and :scheme http from the static table; :path,
    // :authority and content-type as literals on static names; te new.
    let mut block = vec![0x83, 0x86, 0x04, path.len() as u8];
    block.extend_from_slice(path.as_bytes());
    block.extend_from_slice(&[0x01, 7]);
    block.extend_from_slice(b"gateway");
    block.extend_from_slice(&[0x0f, 0x10, 16]);
    block.extend_from_slice(b"application/grpc");
    block.extend_from_slice(&[0x00, 2]);
    block.extend_from_slice(b"te");
    block.push(8);
    block.extend_from_slice(b"trailers");
    let mut s = std::os::unix::net::UnixStream::connect(gateway)?;
    // The preface, then SETTINGS_INITIAL_WINDOW_SIZE = 0.
    s.write_all(&PREFACE[..24])?;
    s.write_all(&frame(0x4, 0, 0, &[0, 4, 0, 0, 0, 0]))?;
    s.write_all(&frame(0x1, 0x4, 1, &block))?;
    s.write_all(&frame(0x0, 0x1, 1, body))?;
    s.set_read_timeout(Some(within))?;
    loop {
        let mut head = [0u8; 9];
        s.read_exact(&mut head)?;
        let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload)?;
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        match head[3] {
            0x1 if stream == 1 => return Ok(s),
            0x3 | 0x7 => return Err(std::io::Error::other(format!("the call was refused (frame type {})", head[3]))),
            _ => {}
        }
    }
}

/// Connects to `gateway`, sends the preface, then nothing.
pub fn idle_connection(gateway: &Path) -> std::io::Result<std::os::unix::net::UnixStream> {
    use std::io::Write;
    let mut s = std::os::unix::net::UnixStream::connect(gateway)?;
    s.write_all(PREFACE)?;
    Ok(s)
}

/// A GOAWAY frame: the last stream the sender took, and its error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoAway {
    pub last_stream: u32,
    pub code: u32,
}

/// Reads `s` until the gateway closes it, within `within`: the GOAWAY
/// frames it sent first, or why not.
pub fn goaway_then_closed(s: &std::os::unix::net::UnixStream, within: Duration) -> Result<Vec<GoAway>, String> {
    use std::io::Read;
    let deadline = std::time::Instant::now() + within;
    let mut s = s;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(format!("still open after {within:?}"));
        }
        let _ = s.set_read_timeout(Some(left));
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Err(format!("still open after {within:?}"));
            }
            Err(e) => return Err(format!("reset without a clean close: {e}")),
        }
    }
    let mut goaways = Vec::new();
    let mut at = 0;
    while at + 9 <= got.len() {
        let len = (usize::from(got[at]) << 16) | (usize::from(got[at + 1]) << 8) | usize::from(got[at + 2]);
        let (kind, body) = (got[at + 3], at + 9);
        if body + len > got.len() {
            return Err(format!("a truncated frame of type {kind}"));
        }
        if kind == 0x7 && len >= 8 {
            let word = |i: usize| u32::from_be_bytes([got[i], got[i + 1], got[i + 2], got[i + 3]]);
            goaways.push(GoAway { last_stream: word(body) & 0x7fff_ffff, code: word(body + 4) });
        }
        at = body + len;
    }
    if goaways.is_empty() { Err("closed without a GOAWAY".into()) } else { Ok(goaways) }
}

/// True when the gateway closes `s` within `within` (whatever it sent
/// before, SETTINGS or GOAWAY, is read and dropped).
pub fn closed_within(s: &std::os::unix::net::UnixStream, within: Duration) -> bool {
    use std::io::Read;
    let deadline = std::time::Instant::now() + within;
    let mut buf = [0u8; 4096];
    let mut s = s;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return false;
        }
        let _ = s.set_read_timeout(Some(left));
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// Idle connections held by child processes, so that a crowd can be larger
/// than this process's descriptor limit. Dropping it ends the children,
/// which closes every connection at once.
pub struct IdleCrowd {
    children: Vec<(libc::pid_t, std::os::fd::OwnedFd)>,
    /// Connections the children opened.
    pub opened: usize,
}

/// What one child process holds at most.
const PER_CHILD: usize = 9000;

impl IdleCrowd {
    /// Opens `n` idle connections (preface sent, then nothing) to `gateway`.
    pub fn open(gateway: &Path, n: usize) -> std::io::Result<Self> {
        use std::os::fd::AsRawFd;
        use std::os::unix::ffi::OsStrExt;

        // SAFETY: a zeroed sockaddr_un is a valid (empty) address.
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let path = gateway.as_os_str().as_bytes();
        if path.len() >= addr.sun_path.len() {
            return Err(std::io::Error::other("socket path too long"));
        }
        for (d, s) in addr.sun_path.iter_mut().zip(path) {
            *d = *s as libc::c_char;
        }
        let mut crowd = Self { children: Vec::new(), opened: 0 };
        let mut left = n;
        while left > 0 {
            let share = left.min(PER_CHILD);
            left -= share;
            let (ready_r, ready_w) = nix_pipe()?;
            let (hold_r, hold_w) = nix_pipe()?;
            // SAFETY: the child calls only async-signal-safe functions
            // (close_range, socket, connect, write, read, _exit) on memory
            // prepared before the fork.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                // SAFETY: as above; the child never returns.
                unsafe { crowd_child(&addr, share, ready_w.as_raw_fd(), hold_r.as_raw_fd()) }
            }
            if pid < 0 {
                return Err(std::io::Error::last_os_error());
            }
            drop((ready_w, hold_r));
            let mut count = [0u8; 4];
            // SAFETY: reading 4 bytes into a local array from our pipe.
            let got = unsafe { libc::read(ready_r.as_raw_fd(), count.as_mut_ptr().cast(), 4) };
            crowd.opened += if got == 4 { u32::from_ne_bytes(count) as usize } else { 0 };
            crowd.children.push((pid, hold_w));
        }
        Ok(crowd)
    }
}

fn nix_pipe() -> std::io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills a local array with two new descriptors we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The child: closes every inherited descriptor but its two pipe ends (so
/// it holds no other test's pipe open), opens `share` idle connections,
/// reports how many, and waits for the parent to let go.
///
/// # Safety
/// Only to be called in a freshly forked child.
unsafe fn crowd_child(addr: &libc::sockaddr_un, share: usize, ready: i32, hold: i32) -> ! {
    // SAFETY: async-signal-safe system calls on descriptors and memory this
    // child owns.
    unsafe {
        let (lo, hi) = (ready.min(hold) as u32, ready.max(hold) as u32);
        libc::close_range(3, lo - 1, 0);
        libc::close_range(lo + 1, hi - 1, 0);
        libc::close_range(hi + 1, u32::MAX, 0);
        let mut opened: u32 = 0;
        for _ in 0..share {
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            if fd < 0 {
                break;
            }
            let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
            if libc::connect(fd, (addr as *const libc::sockaddr_un).cast(), len) != 0 {
                libc::close(fd);
                break;
            }
            libc::write(fd, PREFACE.as_ptr().cast(), PREFACE.len());
            opened += 1;
        }
        libc::write(ready, (&raw const opened).cast(), 4);
        let mut byte = 0u8;
        libc::read(hold, (&raw mut byte).cast(), 1);
        libc::_exit(0)
    }
}

impl Drop for IdleCrowd {
    fn drop(&mut self) {
        for (pid, hold) in self.children.drain(..) {
            drop(hold);
            let mut status = 0;
            // SAFETY: reaping our own child, which exits once `hold` closes.
            unsafe { libc::waitpid(pid, &mut status, 0) };
        }
    }
}
