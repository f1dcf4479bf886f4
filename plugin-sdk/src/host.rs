//! The plugin's channel to its host: calls over the connection the supervisor
//! gave it on fd 4, to the services an embedding host offers and to the plugins
//! its config lets it call (`calls = [...]`), routed, limited and authorized by
//! the supervisor like the gateway's calls. An ordinary tonic channel that needs
//! no socket of its own, so it works under L3.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use plugin_proto::transport::{ChannelError, H2Channel, ResponseBody};
use tonic::body::Body;

/// A cloneable channel to the host; give it to a tonic client
/// (`TokenClient::new(plugin.host_channel())`). Made before the plugin serves, it
/// connects when [`crate::Plugin::serve`] starts.
#[derive(Clone, Debug, Default)]
pub struct HostChannel {
    conn: Arc<OnceLock<H2Channel>>,
}

/// Why a call on the host channel failed before an answer came.
#[derive(Debug, thiserror::Error)]
pub enum HostChannelError {
    /// Not started by a supervisor (run by hand, or in a test without a host).
    #[error("no host connection: the plugin was not started by a supervisor (fd 4)")]
    NotConnected,
    #[error("host connection: {0}")]
    Channel(#[from] ChannelError),
    /// Made while handling a call whose deadline has passed: not sent.
    #[error("not sent: the deadline of the call being handled has passed")]
    Expired(#[source] tonic::Status),
}

impl HostChannelError {
    /// The status a tonic client on the channel answers with, this error as its source:
    /// tonic reads no code out of an h2 error it finds in a chain, so each would reach
    /// the plugin's code as UNKNOWN. A connection that is not there, or takes no more calls,
    /// is UNAVAILABLE (a call may be tried again); the stream's own reset says its code.
    pub fn into_status(self) -> tonic::Status {
        use tonic::Code;
        let code = match &self {
            HostChannelError::NotConnected => Code::Unavailable,
            HostChannelError::Expired(status) | HostChannelError::Channel(ChannelError::Body(status)) => status.code(),
            HostChannelError::Channel(e) if e.closed() || e.unprocessed() => Code::Unavailable,
            HostChannelError::Channel(ChannelError::H2(e) | ChannelError::NotSent(e)) => match e.reason() {
                Some(h2::Reason::CANCEL) => Code::Cancelled,
                Some(h2::Reason::ENHANCE_YOUR_CALM) => Code::ResourceExhausted,
                _ if e.is_io() => Code::Unavailable,
                _ => Code::Internal,
            },
        };
        let mut status = tonic::Status::new(code, self.to_string());
        status.set_source(Arc::new(self));
        status
    }
}

impl HostChannel {
    /// Calls go over `channel` from now on.
    pub(crate) fn connect(&self, channel: H2Channel) {
        let _ = self.conn.set(channel);
    }
}

impl tower::Service<http::Request<Body>> for HostChannel {
    type Response = http::Response<ResponseBody>;
    /// A [`HostChannelError`] as the status it means ([`HostChannelError::into_status`]),
    /// which it carries as its source.
    type Error = tonic::Status;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        let Some(mut channel) = self.conn.get().cloned() else {
            return Box::pin(async { Err(HostChannelError::NotConnected.into_status()) });
        };
        // Made while handling a call, it gets no more time than that call has left,
        // unless the author set a shorter one.
        if let Some(left) = crate::deadline::left() {
            if left.is_zero() {
                let expired = tonic::Status::deadline_exceeded("the deadline of the call being handled has passed");
                return Box::pin(async { Err(HostChannelError::Expired(expired).into_status()) });
            }
            let own = req.headers().get("grpc-timeout").and_then(|v| crate::deadline::parse(v.to_str().ok()?));
            if own.is_none_or(|own| own > left)
                && let Ok(v) = http::HeaderValue::from_str(&crate::deadline::format(left))
            {
                req.headers_mut().insert("grpc-timeout", v);
            }
        }
        Box::pin(async move {
            tower::Service::call(&mut channel, req).await.map_err(|e| HostChannelError::Channel(e).into_status())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tonic client on the channel sees the code the failure means, not UNKNOWN, and
    /// the SDK's error as the status's source.
    #[tokio::test]
    async fn a_call_without_a_host_fails_unavailable_saying_why() {
        let mut client = tonic_health::pb::health_client::HealthClient::new(HostChannel::default());
        let req = tonic_health::pb::HealthCheckRequest { service: String::new() };
        let status = client.check(req).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(status.message(), "no host connection: the plugin was not started by a supervisor (fd 4)");
        let source = std::error::Error::source(&status).and_then(|s| s.downcast_ref::<HostChannelError>());
        assert!(matches!(source, Some(HostChannelError::NotConnected)), "{source:?}");
    }

    /// A connection gone before the call was sent is UNAVAILABLE too.
    #[tokio::test]
    async fn a_call_on_a_closed_connection_fails_unavailable() {
        let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
        let served = tokio::spawn(async move {
            let conn = h2::server::handshake(theirs).await.unwrap();
            drop(conn);
        });
        let (channel, conn) = H2Channel::handshake(ours).await.unwrap();
        tokio::spawn(conn);
        served.await.unwrap();
        let host = HostChannel::default();
        host.connect(channel);
        let mut client = tonic_health::pb::health_client::HealthClient::new(host);
        let req = tonic_health::pb::HealthCheckRequest { service: String::new() };
        let status = client.check(req).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    }
}
