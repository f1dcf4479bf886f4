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
use super::gateway::{Answer, Gateway};
use super::stalls::StallBudget;
use crate::instance::{Plugin, Revision};

/// Services an embedding host offers its plugins over their host channel: a plugin's
/// `host_channel()` reaches them by their gRPC service name, before any plugin serving
/// the same name. Every plugin may call them (the host decides in its handlers, where
/// `x-plugin-caller` names the calling plugin).
#[derive(Clone, Default)]
pub struct HostServices {
    names: Arc<HashSet<String>>,
    routes: tonic::service::Routes,
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
        self
    }

    fn serves(&self, service: &str) -> bool {
        self.names.contains(service)
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
            let mut routes = self.host.routes.clone();
            return Box::pin(async move { routes.call(req).await });
        }
        // Read at each call: `calls` is live (an update writes it into every revision).
        let spec = self.rev.spec();
        let peer = Peer::plugin_instance(name, spec.ids.0, spec.ids.1);
        self.gateway.call_from(name, &spec.calls, peer, req)
    }
}
