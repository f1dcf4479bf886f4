//! Connecting to the control socket, with errors that tell the operator
//! what to check, and waiting for the daemon's answers no longer than
//! `--wait`: a daemon that accepts and never answers ends the command.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use plugin_proto::control::v1::PluginRef;
use plugin_proto::control::v1::control_client::ControlClient;
use plugin_proto::transport::H2Channel;
use plugin_supervisor::config::units::format_duration;
use plugin_supervisor::daemon::MAX_SOCKET_PATH;
use plugin_supervisor::observe::forward::clean;

use crate::exit::{Exit, Failure};

pub type Client = ControlClient<H2Channel>;

/// How long to wait for the daemon (`--wait`), and where it is.
#[derive(Clone, Debug)]
pub struct Wait {
    pub socket: PathBuf,
    pub limit: Duration,
}

impl Wait {
    /// Why the command gave up: a daemon that accepts and never answers is one that
    /// cannot be reached (exit 5), as one that does not listen, not a command that ran
    /// and failed.
    pub fn silent(&self) -> Failure {
        self.silent_after(self.limit)
    }

    /// [`Wait::silent`] after waiting `waited` (a call's own timeout and `--wait`).
    pub fn silent_after(&self, waited: Duration) -> Failure {
        Failure::new(
            Exit::Unreachable,
            format!(
                "no answer from the supervisor at {} within {} (is it stuck? --wait sets how long to wait)",
                self.socket.display(),
                format_duration(waited)
            ),
        )
    }

    /// A request that tells the daemon the deadline, so what waits there
    /// (a start, a drain) answers in time with how far it got.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(message);
        r.set_timeout(self.limit);
        r
    }

    /// The daemon's answer, if it comes within the limit.
    pub async fn answer<T>(
        &self,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, Failure> {
        match tokio::time::timeout(self.limit, call).await {
            Ok(r) => r.map(tonic::Response::into_inner).map_err(|s| Failure::status(&s)),
            Err(_) => Err(self.silent()),
        }
    }

    /// The next item of a stream: within the limit, or (following) whenever
    /// it comes.
    pub async fn next<T>(&self, stream: &mut tonic::Streaming<T>, follow: bool) -> Result<Option<T>, Failure> {
        let item = if follow {
            stream.message().await
        } else {
            tokio::time::timeout(self.limit, stream.message()).await.map_err(|_| self.silent())?
        };
        item.map_err(|s| Failure::status(&s))
    }
}

/// The largest answer taken from the daemon. tonic's default, 4 MiB, is the metrics of
/// about 250 running plugins or 750 stopped ones, and a daemon runs 1,000; the daemon is
/// the operator's own, so the bound only keeps a broken one from taking all memory.
pub const MAX_ANSWER: usize = 256 << 20;

/// The control connection; what keeps it from being made exits 5.
pub async fn connect(w: &Wait) -> Result<Client, Failure> {
    let socket = &w.socket;
    // Checked here, not as the option is parsed: commands that never connect ignore it.
    socket_problem(socket).map_or(Ok(()), |p| Err(Failure::new(Exit::Usage, format!("--socket {p}"))))?;
    let connected = tokio::time::timeout(w.limit, async {
        let stream = tokio::net::UnixStream::connect(socket).await.map_err(|e| unreachable(socket, &e))?;
        let (channel, conn) = H2Channel::handshake(stream)
            .await
            .map_err(|e| format!("control connection to {}: {e}", socket.display()))?;
        tokio::spawn(conn);
        Ok(ControlClient::new(channel).max_decoding_message_size(MAX_ANSWER))
    });
    match connected.await {
        Ok(made) => made.map_err(|reason: String| Failure::new(Exit::Unreachable, reason)),
        Err(_) => Err(w.silent()),
    }
}

/// Why `socket` cannot be a socket's path, if it cannot.
pub fn socket_problem(socket: &Path) -> Option<String> {
    let len = socket.as_os_str().len();
    match len {
        0 => Some("is empty: give the control socket's path".into()),
        n if n > MAX_SOCKET_PATH => {
            Some(format!("{} is {n} bytes, more than the {MAX_SOCKET_PATH} a socket's path may have", socket.display()))
        }
        _ => None,
    }
}

fn unreachable(socket: &Path, e: &std::io::Error) -> String {
    let hint = match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            " (is plugin-supervisor running? see --socket)"
        }
        std::io::ErrorKind::PermissionDenied => {
            // SAFETY: getuid has no preconditions.
            let uid = unsafe { libc::getuid() };
            return format!(
                "cannot reach the supervisor at {}: {e} (uid {uid} may not open the socket: the supervisor admits \
                 root and its own uid, and the uids in control_allowed_uids when control_socket_mode lets them open it)",
                socket.display()
            );
        }
        _ => "",
    };
    format!("cannot reach the supervisor at {}: {e}{hint}", socket.display())
}

pub fn plugin(name: String) -> PluginRef {
    PluginRef { name }
}

/// A one-line reason for a failed control call.
pub fn reason(status: &tonic::Status) -> String {
    let said = match status.code() {
        tonic::Code::Unknown | tonic::Code::Internal if status.message().is_empty() => {
            format!("{status}")
        }
        code => format!("{} ({code:?})", status.message()),
    };
    // A connection cut under a command (the daemon stopped or restarted, typically under
    // `tail -f`): h2's words alone ("stream closed because of a broken pipe") say neither.
    let refused = status.metadata().contains_key(crate::exit::REFUSED_KEY);
    if !refused && crate::exit::refused_or_cut(status) {
        return format!("the supervisor closed the connection (did it stop?): {said}");
    }
    // The daemon's words may quote a plugin (a reason it gave, a name it declared), and a
    // call's are the plugin's own, relayed.
    terminal_text(&said)
}

/// `text` as it may reach the operator's terminal: every control character but the line
/// break escaped, so that no escape sequence in it can clear, retitle or rewrite the
/// terminal; the daemon's own multi-line answers (a config's problems) keep their lines.
pub fn terminal_text(text: &str) -> String {
    text.split('\n').map(clean).collect::<Vec<_>>().join("\n")
}
