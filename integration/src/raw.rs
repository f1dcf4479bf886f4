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
        loop {
            match body.data().await {
                Some(Ok(d)) => return Err(format!("{} bytes arrived on a window of 0", d.len())),
                Some(Err(e)) => return e.reason().ok_or_else(|| format!("not a reset: {e}")),
                None => match body.trailers().await {
                    Ok(t) => return Err(format!("the stream ended with trailers {t:?}")),
                    Err(e) => return e.reason().ok_or_else(|| format!("not a reset: {e}")),
                },
            }
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
