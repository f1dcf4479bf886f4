//! Serving gRPC on single accepted connections and Unix sockets: binding
//! with the right mode from the first moment, and the peer's credentials.

use std::convert::Infallible;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::UnixListener;

/// Serves HTTP/2 (gRPC) on one connection until it closes.
pub async fn serve_h2<IO, S, B>(io: IO, svc: S)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve_h2_with(io, svc, None).await;
}

/// As [`serve_h2`], with at most `max_streams` streams open at once on the connection
/// (hyper's default, 200, when `None`).
pub async fn serve_h2_with<IO, S, B>(io: IO, svc: S, max_streams: Option<u32>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let svc = tower::ServiceExt::map_request(svc, |req: http::Request<Incoming>| req.map(tonic::body::Body::new));
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    if let Some(max) = max_streams {
        builder.max_concurrent_streams(max);
    }
    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(svc));
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// What [`bind_unix`] binds first beside the socket's place: `.b` and eight hex digits,
/// a private directory, and `/s` in it. The path then has as many bytes past the
/// directory as `control.sock` or `gateway.sock`, so a directory whose sockets' paths
/// fit the kernel's limit can bind them.
const PRIVATE_PREFIX: &str = ".b";
/// The bytes of that path past `dir/`.
pub const BIND_NAME_LEN: usize = PRIVATE_PREFIX.len() + 8 + "/s".len();
/// Tries at a private directory's name before giving up: one is taken only by a
/// concurrent bind that drew the same digits, or one killed before it cleaned up.
const PRIVATE_TRIES: usize = 8;

/// Binds a Unix socket at `path` that is never reachable with looser
/// permissions than `mode`: it is bound in a private directory, chmod-ed,
/// then renamed into place. A stale socket left by a dead process is
/// replaced; a live one is an error. The path bound first is `dir/` and
/// [`BIND_NAME_LEN`] bytes long, whatever `path`'s own name.
pub async fn bind_unix(path: &Path, mode: u32) -> io::Result<UnixListener> {
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{} is in use by a running process", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let private = make_private_dir(dir)?;
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700))?;
    let result = (|| {
        let tmp = private.join("s");
        let listener = UnixListener::bind(&tmp)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
        std::fs::rename(&tmp, path)?;
        Ok(listener)
    })();
    let _ = std::fs::remove_dir_all(&private);
    result
}

fn make_private_dir(dir: &Path) -> io::Result<PathBuf> {
    let mut tries = 0;
    loop {
        let private = dir.join(format!("{PRIVATE_PREFIX}{:08x}", rand::random::<u32>()));
        match std::fs::create_dir(&private) {
            Ok(()) => return Ok(private),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries + 1 < PRIVATE_TRIES => tries += 1,
            Err(e) => return Err(e),
        }
    }
}
