//! A channel to one plugin: each call goes to a ready instance (round
//! robin), and a plugin with none ready answers UNAVAILABLE naming its
//! state. Wrapped in the routing layers, this is what the gateway forwards
//! to and what embedded hosts get from `Supervisor::channel`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder};

use super::deadline::DeadlineLayer;
use super::record::RecordLayer;
use crate::instance::Plugin;
use crate::observe::metrics::Metrics;

/// A cloneable channel to a plugin, usable with any tonic-generated client:
/// `EchoClient::new(supervisor.channel("echo")?)`.
pub type Channel = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, Infallible>;

/// The innermost service: pick an instance, forward the request as is.
#[derive(Clone, Debug)]
pub struct PluginService {
    plugin: Arc<Plugin>,
}

impl Service<http::Request<Body>> for PluginService {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Readiness is per instance and decided per call.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let Some(live) = self.plugin.pick() else {
            let msg = format!("plugin {:?} is {}", self.plugin.name, self.plugin.describe_state());
            return Box::pin(async move { Ok(tonic::Status::unavailable(msg).into_http()) });
        };
        let mut channel = live.channel.clone();
        let plugin = self.plugin.clone();
        Box::pin(async move {
            match channel.call(req).await {
                Ok(resp) => Ok(resp.map(Body::new)),
                Err(e) => Ok(tonic::Status::unavailable(format!(
                    "plugin {:?} (pid {}): connection failed: {e}",
                    plugin.name, live.pid
                ))
                .into_http()),
            }
        })
    }
}

/// The routing stack for one plugin, outermost first: record the call's
/// outcome (as the caller sees it, deadline included), hold it to its
/// deadline, send it to a ready instance.
pub fn stack(plugin: Arc<Plugin>, metrics: Arc<Metrics>) -> Channel {
    let limit = plugin.spec.load().call_timeout;
    let svc = ServiceBuilder::new()
        .layer(RecordLayer { calls: Arc::new(metrics.plugin_calls(&plugin.name)) })
        .layer(DeadlineLayer { limit })
        .service(PluginService { plugin });
    BoxCloneSyncService::new(svc)
}
