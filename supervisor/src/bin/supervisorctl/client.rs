//! Connecting to the control socket, with errors that tell the operator
//! what to check.

use std::path::Path;

use plugin_proto::control::v1::PluginRef;
use plugin_proto::control::v1::control_client::ControlClient;
use plugin_proto::transport::H2Channel;

pub type Client = ControlClient<H2Channel>;

pub async fn connect(socket: &Path) -> Result<Client, String> {
    let stream = tokio::net::UnixStream::connect(socket).await.map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                " (is plugin-supervisor running? see --socket)"
            }
            std::io::ErrorKind::PermissionDenied => " (the control socket admits root and the supervisor's own user)",
            _ => "",
        };
        format!("cannot reach the supervisor at {}: {e}{hint}", socket.display())
    })?;
    let (channel, conn) =
        H2Channel::handshake(stream).await.map_err(|e| format!("control connection to {}: {e}", socket.display()))?;
    tokio::spawn(conn);
    Ok(ControlClient::new(channel))
}

pub fn plugin(name: String) -> PluginRef {
    PluginRef { name }
}

/// A one-line reason for a failed control call.
pub fn reason(status: &tonic::Status) -> String {
    match status.code() {
        tonic::Code::Unknown | tonic::Code::Internal if status.message().is_empty() => {
            format!("{status}")
        }
        code => format!("{} ({code:?})", status.message()),
    }
}
