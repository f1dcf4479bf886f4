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
/// connection advertises a stream window of 0 and never releases any.
pub struct StalledCaller {
    pub responses: Vec<h2::client::ResponseFuture>,
    conn: tokio::task::JoinHandle<()>,
    _send: h2::client::SendRequest<Bytes>,
}

impl StalledCaller {
    /// Sends `calls` requests of `path` with `body` (a gRPC frame) each.
    pub async fn start(gateway: &Path, path: &str, body: Bytes, calls: usize) -> anyhow::Result<Self> {
        let io = UnixStream::connect(gateway).await?;
        let (send, conn) = h2::client::Builder::new().initial_window_size(0).handshake::<_, Bytes>(io).await?;
        let conn = tokio::spawn(async move {
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
        Ok(Self { responses, conn, _send: send })
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

/// Connects to `gateway`, sends the preface, then nothing.
pub fn idle_connection(gateway: &Path) -> std::io::Result<std::os::unix::net::UnixStream> {
    use std::io::Write;
    let mut s = std::os::unix::net::UnixStream::connect(gateway)?;
    s.write_all(PREFACE)?;
    Ok(s)
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
