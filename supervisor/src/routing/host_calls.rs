//! Where an instance's calls over its host channel (fd 4) go, beside its logs: to a
//! service the embedding host registered, or else through the gateway's routing, as an
//! instance of its plugin, to the plugins its `calls` lists. go-plugin's `GRPCBroker`
//! opens a listener per broker stream; here the channel is the connection the instance
//! already has, so it needs no socket and works under L3.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;

use tonic::body::Body;
use tonic::server::NamedService;
use tower::Service;

use super::callers::Peer;
use super::deadline::{Deadline, DeadlineLayer, Expires};
use super::gateway::{Answer, Gateway};
use super::stalls::StallBudget;
use crate::instance::{Plugin, Revision};

/// Services an embedding host offers its plugins over their host channel: a plugin's
/// `host_channel()` reaches them by their gRPC service name, before any plugin serving
/// the same name. Every plugin may call them (the host decides in its handlers, where
/// `x-plugin-caller` names the calling plugin).
#[derive(Clone)]
pub struct HostServices {
    names: Arc<HashSet<String>>,
    routes: tonic::service::Routes,
    /// `routes` held to each call's `grpc-timeout`, made once as services are added: a
    /// call clones it (a few reference counts) rather than building the layer again.
    bounded: Deadline<tonic::service::Routes>,
}

impl Default for HostServices {
    fn default() -> Self {
        let routes = tonic::service::Routes::default();
        Self { names: Arc::default(), bounded: bounded(routes.clone()), routes }
    }
}

/// `routes` under the Deadline layer: the call's `grpc-timeout`, with no call_timeout of
/// the host's.
fn bounded(routes: tonic::service::Routes) -> Deadline<tonic::service::Routes> {
    use tower::Layer;
    DeadlineLayer::fixed(crate::config::units::MAX_DURATION).layer(routes)
}

impl std::fmt::Debug for HostServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostServices").field("names", &self.names).finish()
    }
}

/// The request header that names, to a host service, the plugin calling it.
pub const CALLER_HEADER: &str = "x-plugin-caller";

impl HostServices {
    pub fn new() -> Self {
        Self::default()
    }

    /// Offers a tonic-generated service (`TokenServer::new(MyTokens)`) to every plugin.
    pub fn add_service<S>(mut self, svc: S) -> Self
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        Arc::make_mut(&mut self.names).insert(S::NAME.to_owned());
        self.routes = self.routes.add_service(svc);
        self.bounded = bounded(self.routes.clone());
        self
    }

    fn serves(&self, service: &str) -> bool {
        self.names.contains(service)
    }

    /// Calls the host's own service, held to the call's `grpc-timeout` as a plugin's
    /// call_timeout holds calls to it: the host's handler is not served by a tonic server
    /// that would, and a plugin calling out from no handler of its own, and waiting, would
    /// wait for a hung handler for ever. Without one the call is not bounded here: the
    /// host's service has no call_timeout. Nor is its answer then stamped with a deadline
    /// a year away, which would keep a stall place for that long for a plugin not reading
    /// it, where an answer without one gives its place up once the plugin takes none of it
    /// for a while.
    fn call(&self, req: http::Request<Body>) -> Answer {
        if req.headers().contains_key(super::deadline::GRPC_TIMEOUT) {
            let mut bounded = self.bounded.clone();
            Box::pin(async move {
                let mut answer = bounded.call(req).await?;
                // A deadline further off than a stall without one may last (the plugin's
                // own `grpc-timeout: 99999999H`, which nothing of the host's bounds) would
                // keep its stall place that long: such an answer is held as one without a
                // deadline, given up once its reader takes none of it for a while.
                let far = tokio::time::Instant::now() + super::server::UNDEADLINED_STALL;
                if answer.extensions().get::<Expires>().is_some_and(|e| e.0 > far) {
                    answer.extensions_mut().remove::<Expires>();
                }
                Ok(answer)
            })
        } else {
            let mut routes = self.routes.clone();
            Box::pin(async move { routes.call(req).await })
        }
    }
}

/// What every instance's host calls need: the embedding host's services, and the
/// gateway's routing to plugins.
#[derive(Clone)]
pub(crate) struct HostCalls {
    host: HostServices,
    gateway: Gateway,
    /// Calls out stalled behind plugins that do not read their answers, across every
    /// instance: within the gateway's own bound, shared with its callers, and at most half
    /// of it.
    stalls: Arc<StallBudget>,
}

impl std::fmt::Debug for HostCalls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostCalls").field("host", &self.host).finish_non_exhaustive()
    }
}

impl HostCalls {
    pub(crate) fn new(host: HostServices, gateway: Gateway) -> Self {
        // Half the gateway's places at most: plugins calling out and not reading their
        // answers cannot take every place from the gateway's callers.
        let whole = gateway.stalls();
        let stalls = StallBudget::share_of(&whole, whole.limit() / 2);
        Self { host, gateway, stalls }
    }

    /// Where the host calls of `rev`'s instances go: `rev`'s config says what they may
    /// call and who they are, not the serving revision's (a canary's new `calls` are its
    /// own).
    pub(crate) fn outbound(&self, plugin: &Arc<Plugin>, rev: &Arc<Revision>) -> Outbound {
        Outbound {
            host: self.host.clone(),
            gateway: self.gateway.clone(),
            plugin: plugin.name.clone(),
            rev: rev.clone(),
            stalls: self.stalls.clone(),
        }
    }
}

/// Where one plugin's instances' host calls go.
#[derive(Clone)]
pub struct Outbound {
    host: HostServices,
    gateway: Gateway,
    plugin: String,
    rev: Arc<Revision>,
    stalls: Arc<StallBudget>,
}

impl Outbound {
    /// The budget of calls out stalled behind callers that do not read, shared by all.
    pub(crate) fn stalls(&self) -> Arc<StallBudget> {
        self.stalls.clone()
    }

    /// Sends `req`, made by an instance of the plugin, where its service is served.
    pub fn call(&self, mut req: http::Request<Body>) -> Answer {
        let name = &self.plugin;
        // Whatever the plugin wrote there, the host is told who it is.
        match http::HeaderValue::from_str(name) {
            Ok(v) => req.headers_mut().insert(CALLER_HEADER, v),
            Err(_) => req.headers_mut().remove(CALLER_HEADER),
        };
        // A malformed path is the gateway's to answer.
        if super::gateway::service_of(req.uri().path()).is_some_and(|s| self.host.serves(s)) {
            return self.host.call(req);
        }
        // Read at each call: `calls` is live (an update writes it into every revision).
        let spec = self.rev.spec();
        let peer = Peer::plugin_instance(name, spec.ids.0, spec.ids.1);
        self.gateway.call_from(name, &spec.calls, peer, req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host service whose every call hangs.
    #[derive(Clone)]
    struct Hung;

    impl NamedService for Hung {
        const NAME: &'static str = "test.v1.Hung";
    }

    impl Service<http::Request<Body>> for Hung {
        type Response = http::Response<Body>;
        type Error = Infallible;
        type Future = std::future::Pending<Result<Self::Response, Infallible>>;

        fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<Body>) -> Self::Future {
            std::future::pending()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_to_a_hung_host_service_ends_at_its_grpc_timeout() {
        let host = HostServices::new().add_service(Hung);
        let req = http::Request::builder()
            .uri("/test.v1.Hung/Wait")
            .header("content-type", "application/grpc")
            .header("grpc-timeout", "200m")
            .body(Body::empty())
            .unwrap();
        let started = tokio::time::Instant::now();
        let answer = tokio::time::timeout(std::time::Duration::from_secs(60), host.call(req))
            .await
            .expect("answered at its deadline, not left waiting")
            .unwrap();
        assert_eq!(started.elapsed(), std::time::Duration::from_millis(200));
        let status = tonic::Status::from_header_map(answer.headers()).expect("a trailers-only status");
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    }

    /// A host service that answers with a body (a stream).
    #[derive(Clone)]
    struct Streams;

    impl NamedService for Streams {
        const NAME: &'static str = "test.v1.Streams";
    }

    impl Service<http::Request<Body>> for Streams {
        type Response = http::Response<Body>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Self::Response, Infallible>>;

        fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<Body>) -> Self::Future {
            let body = Body::new(http_body_util::Full::new(bytes::Bytes::from_static(b"\0\0\0\0\0")));
            std::future::ready(Ok(http::Response::new(body)))
        }
    }

    fn streams_call(timeout: Option<&str>) -> http::Request<Body> {
        let mut req = http::Request::builder().uri("/test.v1.Streams/Watch").header("content-type", "application/grpc");
        if let Some(t) = timeout {
            req = req.header("grpc-timeout", t);
        }
        req.body(Body::empty()).unwrap()
    }

    /// The gateway's pipe gives an answer without a deadline its stall place back once its
    /// reader takes none of it for a while; one a year away kept it for the year.
    #[tokio::test]
    async fn a_host_services_answer_carries_a_deadline_only_when_the_call_asked_one_near_enough() {
        let host = HostServices::new().add_service(Streams);
        let answer = host.call(streams_call(None)).await.unwrap();
        assert_eq!(answer.extensions().get::<super::super::deadline::Expires>(), None);
        let answer = host.call(streams_call(Some("5S"))).await.unwrap();
        assert!(answer.extensions().get::<super::super::deadline::Expires>().is_some());
        // One asked of the plugin's own will, far off: held as none.
        let answer = host.call(streams_call(Some("99999999H"))).await.unwrap();
        assert_eq!(answer.extensions().get::<super::super::deadline::Expires>(), None);
    }
}
