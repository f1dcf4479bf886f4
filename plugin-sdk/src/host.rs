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

impl HostChannel {
    /// Calls go over `channel` from now on.
    pub(crate) fn connect(&self, channel: H2Channel) {
        let _ = self.conn.set(channel);
    }
}

impl tower::Service<http::Request<Body>> for HostChannel {
    type Response = http::Response<ResponseBody>;
    type Error = HostChannelError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        let Some(mut channel) = self.conn.get().cloned() else {
            return Box::pin(async { Err(HostChannelError::NotConnected) });
        };
        // Made while handling a call, it gets no more time than that call has left,
        // unless the author set a shorter one.
        if let Some(left) = crate::deadline::left() {
            if left.is_zero() {
                let expired = tonic::Status::deadline_exceeded("the deadline of the call being handled has passed");
                return Box::pin(async { Err(HostChannelError::Expired(expired)) });
            }
            let own = req.headers().get("grpc-timeout").and_then(|v| crate::deadline::parse(v.to_str().ok()?));
            if own.is_none_or(|own| own > left)
                && let Ok(v) = http::HeaderValue::from_str(&crate::deadline::format(left))
            {
                req.headers_mut().insert("grpc-timeout", v);
            }
        }
        Box::pin(async move { Ok(tower::Service::call(&mut channel, req).await?) })
    }
}
