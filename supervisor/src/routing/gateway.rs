//! The gateway host applications call on `gateway.sock`: routed by the
//! gRPC service name a plugin declared, forwarded as raw HTTP/2 frames (the
//! payload is never decoded).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use tonic::body::Body;
use tower::Service;

use super::channel::{Channel, stack};
use super::table::RouteTable;
use crate::instance::Plugin;
use crate::observe::metrics::Metrics;

/// Routes a request to the plugin serving its service.
#[derive(Clone)]
pub struct Gateway {
    routes: Arc<RouteTable>,
    channels: Arc<RwLock<HashMap<String, Channel>>>,
}

impl Gateway {
    pub fn new(routes: Arc<RouteTable>, plugins: &[Arc<Plugin>], metrics: &Arc<Metrics>) -> Self {
        let channels = plugins.iter().map(|p| (p.name.clone(), stack(p.clone(), metrics.clone()))).collect();
        Self { routes, channels: Arc::new(RwLock::new(channels)) }
    }

    /// Routes to `p` from now on (a plugin `update` added).
    pub(crate) fn add(&self, p: &Arc<Plugin>, metrics: &Arc<Metrics>) {
        if let Ok(mut channels) = self.channels.write() {
            channels.insert(p.name.clone(), stack(p.clone(), metrics.clone()));
        }
    }

    /// Routes to `plugin` no more (a plugin `update` removed); its services are free.
    pub(crate) fn remove(&self, plugin: &str) {
        if let Ok(mut channels) = self.channels.write() {
            channels.remove(plugin);
        }
        self.routes.release(plugin);
    }

    fn channel_for(&self, service: &str) -> Option<Channel> {
        let plugin = self.routes.lookup(service)?;
        self.channels.read().ok()?.get(&plugin).cloned()
    }
}

/// "/pkg.Service/Method" → "pkg.Service".
fn service_of(path: &str) -> Option<&str> {
    let rest = path.strip_prefix('/')?;
    let (service, method) = rest.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/')).then_some(service)
}

impl Service<http::Request<Body>> for Gateway {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let path = req.uri().path().to_owned();
        let Some(service) = service_of(&path) else {
            let msg = format!("malformed gRPC path {path:?}: expected /package.Service/Method");
            return Box::pin(async move { Ok(tonic::Status::unimplemented(msg).into_http()) });
        };
        match self.channel_for(service) {
            Some(mut ch) => Box::pin(async move { ch.call(req).await }),
            None => {
                let known = self.routes.services().join(", ");
                let msg = format!("unknown service {service}: no plugin declares it (served: {known})");
                Box::pin(async move { Ok(tonic::Status::unimplemented(msg).into_http()) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::service_of;

    #[test]
    fn paths_name_a_service_and_a_method() {
        assert_eq!(service_of("/echo.v1.Echo/Echo"), Some("echo.v1.Echo"));
        assert_eq!(service_of("/echo.v1.Echo/"), None);
        assert_eq!(service_of("echo.v1.Echo/Echo"), None);
        assert_eq!(service_of("/a/b/c"), None);
        assert_eq!(service_of("//Echo"), None);
    }
}
