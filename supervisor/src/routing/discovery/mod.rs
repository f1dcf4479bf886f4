//! Discovery on the gateway, as gRPC tools expect it: server reflection
//! (`grpc.reflection.v1` and `v1alpha`) over the contracts the running plugins
//! declared, and `grpc.health.v1` for their services, `plugin:NAME` and the gateway
//! itself. Both answer from the plugins as they are at each request, and only
//! about plugins the caller may call.
//!
//! Their streams are bounded in number ([`places`]) and in idleness: a request that has
//! not ended, and a reflection stream with no next request, within the gateway's
//! `idle_timeout` are ended, so that a caller cannot hold a stream's task and buffers for
//! as long as it keeps its connection.

pub mod follow;
pub mod health;
pub mod places;
pub mod reflection;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock, RwLock};
use std::time::Duration;

use prost_reflect::DescriptorPool;
use tonic::body::Body;
use tower::Service;

pub use follow::Board;

use crate::instance::{Contract, Plugin};

/// Whether the caller whose request carries these extensions (its peer credentials)
/// may call the plugin named: a plugin it may not call is invisible to it here.
pub type MayCall = Arc<dyn Fn(&http::Extensions, &str) -> bool + Send + Sync>;

/// The header a caller names the plugin it means with, when several serve a service.
pub const PLUGIN_HEADER: &str = "x-plugin";

/// Health's "circuit closed" input: a plugin whose circuit is open does not serve.
pub trait Circuits: Send + Sync {
    fn closed(&self, plugin: &str) -> bool;

    /// Changes whenever some circuit opens or closes, so `Watch` streams answer at
    /// once; None: they learn of it with the next other change.
    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
}

/// Every circuit closed: until the gateway has a breaker.
pub struct AllClosed;

impl Circuits for AllClosed {
    fn closed(&self, _plugin: &str) -> bool {
        true
    }
}

/// The services the gateway answers itself.
pub const HEALTH: &str = "grpc.health.v1.Health";
pub const REFLECTION_V1: &str = "grpc.reflection.v1.ServerReflection";
pub const REFLECTION_V1ALPHA: &str = "grpc.reflection.v1alpha.ServerReflection";

/// The gateway's own services, described as a plugin's are, so tools see them too.
static OWN: LazyLock<Arc<Contract>> = LazyLock::new(|| {
    let mut pool = DescriptorPool::new();
    for set in [
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ] {
        // Built into this binary, and tested to decode.
        if let Err(e) = pool.decode_file_descriptor_set(set) {
            tracing::error!(error = %e, "the gateway's own descriptors do not decode");
        }
    }
    let services = [HEALTH, REFLECTION_V1, REFLECTION_V1ALPHA].map(str::to_owned).to_vec();
    Arc::new(Contract { descriptor_set: pool.encode_to_vec(), pool, services })
});

/// Who asks: the request's extensions (its connection's peer credentials) and the
/// plugin it named with `x-plugin`, if any.
#[derive(Clone, Debug)]
pub struct Caller {
    extensions: http::Extensions,
    plugin: Option<String>,
}

impl Caller {
    pub fn of<T>(req: &tonic::Request<T>) -> Self {
        // A header that is not text names a plugin, one there is not (routing says the same):
        // dropped, it would widen the answer to every plugin the caller may call.
        let plugin =
            req.metadata().get(PLUGIN_HEADER).map(|v| String::from_utf8_lossy(v.as_encoded_bytes()).into_owned());
        Self { extensions: req.extensions().clone(), plugin }
    }

    #[cfg(test)]
    pub fn anyone() -> Self {
        Self { extensions: http::Extensions::new(), plugin: None }
    }
}

/// The plugins, as discovery sees them, and who may see which.
pub struct Discovery {
    plugins: RwLock<BTreeMap<String, Arc<Plugin>>>,
    board: Arc<Board>,
    may_call: MayCall,
    circuits: Arc<dyn Circuits>,
    watches: Arc<places::Places>,
    reflections: Arc<places::Places>,
    /// How long a request to health or reflection may take to end, and a reflection
    /// stream wait for its next one: the gateway's `idle_timeout`.
    idle: Duration,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery").field("plugins", &self.plugins).finish_non_exhaustive()
    }
}

impl Discovery {
    /// Every plugin visible to every caller, every circuit closed.
    pub fn new(plugins: &[Arc<Plugin>], board: Arc<Board>) -> Self {
        let plugins = plugins.iter().map(|p| (p.name.clone(), p.clone())).collect();
        Self {
            plugins: RwLock::new(plugins),
            board,
            may_call: Arc::new(|_, _| true),
            circuits: Arc::new(AllClosed),
            watches: places::Places::new(health::WATCHES, health::MAX_WATCHES),
            reflections: places::Places::new(reflection::STREAMS, reflection::MAX_STREAMS),
            idle: crate::config::gateway::GatewaySection::default().idle_timeout,
        }
    }

    /// Follows at most `max` health `Watch` streams at once.
    #[cfg(test)]
    pub fn with_max_watches(mut self, max: usize) -> Self {
        self.watches = places::Places::new(health::WATCHES, max);
        self
    }

    /// Holds at most `max` reflection streams at once.
    #[cfg(test)]
    pub fn with_max_reflections(mut self, max: usize) -> Self {
        self.reflections = places::Places::new(reflection::STREAMS, max);
        self
    }

    /// Ends requests, and reflection streams, idle for `idle`.
    pub fn with_idle(mut self, idle: Duration) -> Self {
        self.idle = idle;
        self
    }

    /// Shows a caller only the plugins `may_call` lets it call.
    pub fn with_may_call(mut self, may_call: MayCall) -> Self {
        self.may_call = may_call;
        self
    }

    /// Takes circuits' state from `circuits`.
    pub fn with_circuits(mut self, circuits: Arc<dyn Circuits>) -> Self {
        self.circuits = circuits;
        self
    }

    pub(crate) fn add(&self, p: &Arc<Plugin>) {
        self.plugins.write().unwrap_or_else(std::sync::PoisonError::into_inner).insert(p.name.clone(), p.clone());
        self.board.bump();
    }

    pub(crate) fn remove(&self, plugin: &str) {
        self.plugins.write().unwrap_or_else(std::sync::PoisonError::into_inner).remove(plugin);
        self.board.bump();
    }

    /// The plugins `caller` may call (only the one it named, if it named one), in name
    /// order.
    fn visible(&self, caller: &Caller) -> Vec<Arc<Plugin>> {
        let plugins = self.plugins.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        plugins
            .values()
            .filter(|p| caller.plugin.as_ref().is_none_or(|named| *named == p.name))
            .filter(|p| (self.may_call)(&caller.extensions, &p.name))
            .cloned()
            .collect()
    }

    /// What reflection answers from for `caller`: the gateway's own services, then
    /// the contracts of the plugins it may call that have an instance ready, in name
    /// order.
    fn contracts(&self, caller: &Caller) -> Vec<Arc<Contract>> {
        let mut all = vec![OWN.clone()];
        let running = self.visible(caller).into_iter().filter(|p| p.serving().has_ready());
        all.extend(running.filter_map(|p| p.contract()));
        all
    }
}

/// Whether the gateway answers calls to `service` itself.
pub fn answers(service: &str) -> bool {
    matches!(service, HEALTH | REFLECTION_V1 | REFLECTION_V1ALPHA)
}

/// The gateway's own services, for [`answers`]' requests.
#[derive(Clone)]
pub struct Services {
    v1: reflection::V1Server,
    v1alpha: reflection::V1alphaServer,
    health: health::Server,
    idle: Duration,
}

impl Services {
    pub fn new(discovery: Arc<Discovery>) -> Self {
        Self {
            v1: reflection::v1_server(discovery.clone()),
            v1alpha: reflection::v1alpha_server(discovery.clone()),
            idle: discovery.idle,
            health: health::server(discovery),
        }
    }

    /// Answers a request to one of the services [`answers`] names.
    pub fn call(
        &mut self,
        service: &str,
        req: http::Request<Body>,
    ) -> Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>> {
        match service {
            REFLECTION_V1 => Box::pin(self.v1.call(req)),
            REFLECTION_V1ALPHA => Box::pin(self.v1alpha.call(req)),
            _ => {
                // Both of health's methods answer once their request has ended: one that
                // never ends would hold its task for as long as the connection lasts.
                let (idle, answer) = (self.idle, self.health.call(req));
                Box::pin(async move {
                    match tokio::time::timeout(idle, answer).await {
                        Ok(answered) => answered,
                        Err(_) => Ok(idle_request(HEALTH, idle).into_http()),
                    }
                })
            }
        }
    }
}

/// What a request to `service` that has not ended within `idle` (the gateway's
/// `idle_timeout`) is answered.
fn idle_request(service: &str, idle: Duration) -> tonic::Status {
    tonic::Status::deadline_exceeded(format!(
        "{service}: the request did not end within the gateway's idle_timeout ({}); send it whole",
        crate::config::units::format_duration(idle)
    ))
}

#[cfg(test)]
mod tests;
