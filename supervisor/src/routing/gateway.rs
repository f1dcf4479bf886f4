//! The gateway host applications call on `gateway.sock`: routed by the
//! gRPC service name a plugin declared (and the `x-plugin` header where
//! several plugins serve it), among the plugins the caller may call,
//! forwarded as raw HTTP/2 frames (the payload is never decoded).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use tonic::body::Body;
use tower::Service;

use super::callers::Peer;
use super::channel::{Channel, stack};
use super::discovery::{self, Discovery};
use super::table::RouteTable;
use crate::instance::Plugin;
use crate::observe::metrics::Metrics;

/// The request header naming the plugin a call is for, where several serve its service.
pub const PLUGIN_HEADER: &str = "x-plugin";

/// A plugin the gateway routes to: its channel, and the plugin for who may call it.
#[derive(Clone)]
struct Route {
    channel: Channel,
    plugin: Arc<Plugin>,
}

/// Routes a request to the plugin serving its service.
#[derive(Clone)]
pub struct Gateway {
    routes: Arc<RouteTable>,
    channels: Arc<RwLock<HashMap<String, Route>>>,
    /// What the gateway answers itself: reflection and health.
    discovery: Arc<Discovery>,
    own: discovery::Services,
    /// Calls stalled behind readers that do not take their answers: callers' and plugins'
    /// calls out alike, as both hold windows of the same plugin connections.
    stalls: Arc<super::stalls::StallBudget>,
}

/// Where a call goes, as its caller may know.
enum Lookup {
    To(Channel),
    /// No plugin the caller may call serves it (or the one it named does not).
    Unknown,
    /// Several do, and the caller named none of them.
    Ambiguous(Vec<String>),
    /// Some plugins serving it admit the plugin calling through its host channel, but its
    /// `calls` lists none of them.
    NotListed,
}

type Routes = Arc<RwLock<HashMap<String, Route>>>;

impl Gateway {
    pub fn new(
        routes: Arc<RouteTable>,
        plugins: &[Arc<Plugin>],
        metrics: &Arc<Metrics>,
        health: Arc<discovery::Board>,
        limits: &crate::config::gateway::GatewaySection,
    ) -> Self {
        let channels: Routes =
            Arc::new(RwLock::new(plugins.iter().map(|p| (p.name.clone(), route(p, metrics))).collect()));
        for p in plugins {
            p.route_by(Some(routes.clone()));
        }
        // Reflection and health hide what the caller may not call, by the same rule.
        let visible = channels.clone();
        let discovery = Arc::new(
            Discovery::new(plugins, health)
                .with_idle(limits.idle_timeout)
                .with_may_call(Arc::new(move |ext: &http::Extensions, plugin: &str| may_call(&visible, ext, plugin)))
                .with_circuits(Arc::new(Circuits(channels.clone()))),
        );
        let own = discovery::Services::new(discovery.clone());
        Self { routes, channels, discovery, own, stalls: super::stalls::StallBudget::new(limits.max_stalled_calls) }
    }

    /// The bound on stalled calls, shared by the gateway's callers and the plugins'
    /// calls out.
    pub(crate) fn stalls(&self) -> Arc<super::stalls::StallBudget> {
        self.stalls.clone()
    }

    /// Routes to `p` from now on (a plugin `update` added).
    pub(crate) fn add(&self, p: &Arc<Plugin>, metrics: &Arc<Metrics>) {
        if let Ok(mut channels) = self.channels.write() {
            channels.insert(p.name.clone(), route(p, metrics));
        }
        self.discovery.add(p);
        p.route_by(Some(self.routes.clone()));
    }

    /// Routes to `plugin` no more (a plugin `update` removed): it is no longer among the
    /// owners of the services it served, while other plugins serving them keep them.
    pub(crate) fn remove(&self, plugin: &str) {
        let removed = self.channels.write().ok().and_then(|mut channels| channels.remove(plugin));
        if let Some(route) = removed {
            route.plugin.route_by(None);
        }
        self.discovery.remove(plugin);
        self.routes.release(plugin);
    }

    /// Whether the caller of the request whose extensions are `ext` may call `plugin`
    /// through the gateway: the plugin exists and its `callers` (read at each call, so a
    /// live update applies at once) admit the connection's peer. A request without a
    /// peer (not from `gateway.sock`) may call only plugins open to everyone.
    pub fn may_call(&self, ext: &http::Extensions, plugin: &str) -> bool {
        may_call(&self.channels, ext, plugin)
    }

    /// The plugin a call to `service` goes to: the one its caller named in `x-plugin`,
    /// or the only one serving it among those the caller may call. Plugins the caller
    /// may not call are left out before anything is decided, so that what it is told
    /// never depends on them.
    ///
    /// `calls` is what a plugin calling through its host channel may call: the plugins its
    /// own config lists. It is told its `calls` refuses only when some plugin that admits
    /// it serves the service: that a plugin it may not call serves one is not its to learn.
    fn lookup(&self, ext: &http::Extensions, service: &str, named: Option<&str>, calls: Option<&[String]>) -> Lookup {
        let mut candidates = self.routes.owners(service);
        candidates.retain(|p| self.may_call(ext, p));
        if let Some(calls) = calls {
            let admitted = !candidates.is_empty();
            candidates.retain(|p| calls.contains(p));
            if admitted && candidates.is_empty() {
                return Lookup::NotListed;
            }
        }
        let chosen = match named {
            Some(name) => candidates.iter().find(|p| *p == name),
            None if candidates.len() > 1 => return Lookup::Ambiguous(candidates),
            None => candidates.first(),
        };
        let channel = chosen.and_then(|p| self.channels.read().ok()?.get(p).map(|r| r.channel.clone()));
        channel.map_or(Lookup::Unknown, Lookup::To)
    }
}

/// Health's "circuit closed": each plugin's own breaker, shared with its embedded
/// channels. Its changes reach `Watch` through the health board (`Breaker::report_to`).
struct Circuits(Routes);

impl discovery::Circuits for Circuits {
    fn closed(&self, plugin: &str) -> bool {
        self.0.read().ok().and_then(|c| c.get(plugin).map(|r| r.plugin.circuit_closed())).unwrap_or(true)
    }
}

fn may_call(channels: &Routes, ext: &http::Extensions, plugin: &str) -> bool {
    let Some(target) = channels.read().ok().and_then(|c| c.get(plugin).map(|r| r.plugin.clone())) else {
        return false;
    };
    match &target.spec().callers {
        None => true,
        Some(callers) => {
            ext.get::<Peer>().is_some_and(|peer| callers.admit(peer, &|name, peer| runs(channels, name, peer)))
        }
    }
}

/// Whether `peer` is one of the live instances of the plugin `name`.
fn runs(channels: &Routes, name: &str, peer: &Peer) -> bool {
    if let Some(known) = peer.known_plugin() {
        return known == name;
    }
    let plugin = channels.read().ok().and_then(|c| c.get(name).map(|r| r.plugin.clone()));
    plugin.is_some_and(|p| p.runs(peer))
}

fn route(p: &Arc<Plugin>, metrics: &Arc<Metrics>) -> Route {
    Route { channel: stack(p.clone(), metrics.clone()), plugin: p.clone() }
}

/// "/pkg.Service/Method" → "pkg.Service".
pub(crate) fn service_of(path: &str) -> Option<&str> {
    let rest = path.strip_prefix('/')?;
    let (service, method) = rest.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/')).then_some(service)
}

/// What a call to a service no plugin serves gets, and so also one to a plugin its
/// caller may not call: it names only what the caller asked for.
fn unknown_service(service: &str) -> tonic::Status {
    tonic::Status::unimplemented(format!("unknown service {service}"))
}

fn ambiguous(service: &str, candidates: &[String]) -> tonic::Status {
    tonic::Status::failed_precondition(format!(
        "service {service} is served by several plugins ({}): name one in the {PLUGIN_HEADER} header",
        candidates.join(", ")
    ))
}

/// `req` as a host application sent it, without the header only the supervisor may set:
/// which plugin calls.
fn from_host_application(mut req: http::Request<Body>) -> http::Request<Body> {
    req.headers_mut().remove(super::host_calls::CALLER_HEADER);
    req
}

/// What a plugin calling a service its `calls` does not allow gets: said to it, as it is
/// its own config that refuses (the plugins serving it are not named).
fn not_listed(caller: &str, service: &str) -> tonic::Status {
    tonic::Status::permission_denied(format!(
        "plugin {caller:?} may not call {service}: its `calls` lists no plugin serving it"
    ))
}

/// What the gateway answers a request with.
pub(crate) type Answer = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

impl Gateway {
    /// Routes `req` to the plugin serving its service, as asked by the caller whose
    /// extensions it carries; `calls` narrows the candidates for a plugin's host channel.
    fn route(&self, mut req: http::Request<Body>, calls: Option<(&str, &[String])>) -> Answer {
        if calls.is_none() {
            req = from_host_application(req);
        }
        let path = req.uri().path().to_owned();
        let Some(service) = service_of(&path) else {
            let msg = format!("malformed gRPC path {path:?}: expected /package.Service/Method");
            return Box::pin(async move { Ok(tonic::Status::unimplemented(msg).into_http()) });
        };
        // Reflection and health are the gateway's own, before any plugin's; they are for
        // host applications, not for plugins, which know what they call.
        if discovery::answers(service) {
            if calls.is_some() {
                let refused = unknown_service(service);
                return Box::pin(async move { Ok(refused.into_http()) });
            }
            return self.own.clone().call(service, req);
        }
        // A header that is not text names no plugin there is.
        let named = req.headers().get(PLUGIN_HEADER).map(|v| v.to_str().unwrap_or("\0"));
        let refused = match self.lookup(req.extensions(), service, named, calls.map(|c| c.1)) {
            Lookup::To(mut ch) => return Box::pin(async move { ch.call(req).await }),
            Lookup::Unknown => unknown_service(service),
            Lookup::Ambiguous(candidates) => ambiguous(service, &candidates),
            Lookup::NotListed => not_listed(calls.map_or("", |c| c.0), service),
        };
        Box::pin(async move { Ok(refused.into_http()) })
    }

    /// A call an instance of `caller` makes through its host channel: routed as a gateway
    /// call from that instance (so the called plugin's `callers`, limits and breaker
    /// apply, and the caller's deadline, in `grpc-timeout`, bounds it), among only the
    /// plugins `caller`'s `calls` lists.
    pub(crate) fn call_from(&self, caller: &str, calls: &[String], peer: Peer, mut req: http::Request<Body>) -> Answer {
        req.extensions_mut().insert(peer);
        self.route(req, Some((caller, calls)))
    }
}

impl Service<http::Request<Body>> for Gateway {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Answer;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        self.route(req, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn paths_name_a_service_and_a_method() {
        assert_eq!(service_of("/echo.v1.Echo/Echo"), Some("echo.v1.Echo"));
        assert_eq!(service_of("/echo.v1.Echo/"), None);
        assert_eq!(service_of("echo.v1.Echo/Echo"), None);
        assert_eq!(service_of("/a/b/c"), None);
        assert_eq!(service_of("//Echo"), None);
    }

    const ECHO: &str = "echo.v1.Echo";

    /// A gateway over plugins that are stopped: a call routed to one is answered
    /// UNAVAILABLE naming it, which tells where it went. `entries` are extra keys per
    /// plugin; `services` what each declared.
    fn gateway(entries: &[(&str, &str, &[&str])]) -> Gateway {
        let mut text = "[supervisor.sandbox]\nallow_unsandboxed = true\n".to_owned();
        for (name, extra, _) in entries {
            text += &format!(
                "[[plugin]]\nname = {name:?}\nbinary = \"/bin/true\"\ntier = \"none\"\nautostart = false\n{extra}\n"
            );
        }
        let config: Config = text.parse().unwrap();
        let plugins: Vec<Arc<Plugin>> = config.specs().into_iter().map(|s| Arc::new(Plugin::new(s, 10))).collect();
        let routes = Arc::new(RouteTable::default());
        let limits = crate::config::gateway::GatewaySection { max_stalled_calls: 16, ..Default::default() };
        let gw = Gateway::new(routes.clone(), &plugins, &Arc::new(Metrics::default()), Arc::default(), &limits);
        // As their serving revisions would have declared.
        for (name, _, services) in entries {
            routes.set(name, &services.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
        }
        gw
    }

    fn peer(uid: u32, gid: u32, groups: &[u32]) -> Peer {
        Peer::new(uid, gid, Some(1), groups)
    }

    /// The code and message a call gets.
    async fn call(gw: &Gateway, peer: Option<Peer>, service: &str, plugin: Option<&str>) -> (tonic::Code, String) {
        let mut req = http::Request::post(format!("http://gw/{service}/M")).body(Body::empty()).unwrap();
        if let Some(name) = plugin {
            req.headers_mut().insert(PLUGIN_HEADER, name.parse().unwrap());
        }
        if let Some(p) = peer {
            req.extensions_mut().insert(p);
        }
        let response = gw.clone().call(req).await.unwrap();
        let status = tonic::Status::from_header_map(response.headers()).expect("a trailers-only answer");
        (status.code(), status.message().to_owned())
    }

    fn went_to(plugin: &str) -> (tonic::Code, String) {
        (tonic::Code::Unavailable, format!("plugin {plugin:?} is stopped (not started)"))
    }

    fn unknown(service: &str) -> (tonic::Code, String) {
        (tonic::Code::Unimplemented, format!("unknown service {service}"))
    }

    /// Both kinds of stalled call hold windows of the same plugin connections, which the
    /// bound keeps to half of each: with a budget each, together they could fill one. Calls
    /// out take half the places at most, so plugins cannot lock callers out of them.
    #[test]
    fn callers_and_plugins_calling_out_share_one_bound_on_stalled_calls() {
        let gw = gateway(&[("echo", "", &[ECHO])]);
        let host = super::super::host_calls::HostCalls::new(super::super::host_calls::HostServices::new(), gw.clone());
        let echo = gw.channels.read().unwrap()["echo"].plugin.clone();
        let out = host.outbound(&echo, &echo.serving());
        let held: Vec<_> = (0..16).map(|_| gw.stalls().stall().expect("a place")).collect();
        assert!(out.stalls().spent(), "the callers' stalls left the calls out a bound of their own");
        assert!(out.stalls().stall().is_none());
        drop(held);
        // Calls out take half the places at most, leaving the rest to the callers.
        let out_held: Vec<_> = (0..8).map(|_| out.stalls().stall().expect("a place for a call out")).collect();
        assert!(out.stalls().stall().is_none(), "calls out took more than half the places");
        let callers: Vec<_> = (0..8).map(|_| gw.stalls().stall().expect("a place left to callers")).collect();
        assert!(gw.stalls().spent());
        drop((out_held, callers));
    }

    #[tokio::test]
    async fn the_only_plugin_serving_a_service_is_reached_without_a_header() {
        let gw = gateway(&[("echo", "", &[ECHO]), ("zoo", "", &["zoo.v1.Zoo"])]);
        assert_eq!(call(&gw, None, ECHO, None).await, went_to("echo"));
        assert_eq!(call(&gw, None, ECHO, Some("echo")).await, went_to("echo"));
    }

    #[tokio::test]
    async fn x_plugin_picks_among_plugins_serving_one_service() {
        let gw = gateway(&[("a", "", &[ECHO]), ("b", "", &[ECHO])]);
        assert_eq!(call(&gw, None, ECHO, Some("a")).await, went_to("a"));
        assert_eq!(call(&gw, None, ECHO, Some("b")).await, went_to("b"));
    }

    #[tokio::test]
    async fn an_ambiguous_call_is_refused_naming_the_candidates() {
        let gw = gateway(&[("a", "", &[ECHO]), ("b", "", &[ECHO]), ("c", "", &["other.v1.Other"])]);
        assert_eq!(
            call(&gw, None, ECHO, None).await,
            (
                tonic::Code::FailedPrecondition,
                "service echo.v1.Echo is served by several plugins (a, b): name one in the x-plugin header".into()
            )
        );
    }

    #[tokio::test]
    async fn a_header_naming_a_plugin_that_does_not_serve_it_is_an_unknown_service() {
        let gw = gateway(&[("a", "", &[ECHO]), ("c", "", &["other.v1.Other"])]);
        assert_eq!(call(&gw, None, ECHO, Some("c")).await, unknown(ECHO));
        assert_eq!(call(&gw, None, ECHO, Some("ghost")).await, unknown(ECHO));
        let mut req = http::Request::post(format!("http://gw/{ECHO}/M")).body(Body::empty()).unwrap();
        req.headers_mut().insert(PLUGIN_HEADER, http::HeaderValue::from_bytes(b"\xffa").unwrap());
        let response = gw.clone().call(req).await.unwrap();
        assert_eq!(
            tonic::Status::from_header_map(response.headers()).unwrap().message(),
            "unknown service echo.v1.Echo"
        );
    }

    #[tokio::test]
    async fn an_unknown_service_is_named_alone() {
        let gw = gateway(&[("a", "", &[ECHO]), ("c", "", &["other.v1.Other"])]);
        assert_eq!(call(&gw, None, "nope.v1.Nope", None).await, unknown("nope.v1.Nope"));
    }

    #[tokio::test]
    async fn a_caller_outside_callers_gets_the_unknown_service_answer() {
        let gw = gateway(&[("a", "callers = [\"uid:1000\", \"gid:50\"]", &[ECHO])]);
        let stranger = peer(1001, 100, &[7]);
        assert_eq!(call(&gw, Some(stranger.clone()), ECHO, None).await, unknown(ECHO));
        assert_eq!(call(&gw, Some(stranger), ECHO, Some("a")).await, unknown(ECHO));
        assert_eq!(call(&gw, None, ECHO, None).await, unknown(ECHO), "no peer, no admission");
        assert_eq!(call(&gw, Some(peer(1000, 100, &[])), ECHO, None).await, went_to("a"));
        assert_eq!(call(&gw, Some(peer(1001, 100, &[50])), ECHO, None).await, went_to("a"));
    }

    #[tokio::test]
    async fn plugins_a_caller_may_not_call_are_no_candidates() {
        let gw = gateway(&[("a", "callers = [\"uid:1000\"]", &[ECHO]), ("b", "", &[ECHO])]);
        // Only b is visible to a stranger: not ambiguous, and a is never named.
        assert_eq!(call(&gw, Some(peer(1001, 1, &[])), ECHO, None).await, went_to("b"));
        let (code, msg) = call(&gw, Some(peer(1000, 1, &[])), ECHO, None).await;
        assert_eq!((code, msg.contains("(a, b)")), (tonic::Code::FailedPrecondition, true), "{msg}");
    }

    /// What `caller`, listing `calls`, gets for a call out to `service`.
    async fn call_out(gw: &Gateway, caller: &str, calls: &[&str], service: &str) -> (tonic::Code, String) {
        let calls: Vec<String> = calls.iter().map(|c| (*c).to_owned()).collect();
        let req = http::Request::post(format!("http://gw/{service}/M")).body(Body::empty()).unwrap();
        let response = gw.call_from(caller, &calls, Peer::plugin_instance(caller, 7, 7), req).await.unwrap();
        let status = tonic::Status::from_header_map(response.headers()).expect("a trailers-only answer");
        (status.code(), status.message().to_owned())
    }

    #[tokio::test]
    async fn a_plugin_calls_out_only_to_plugins_its_calls_lists_and_whose_callers_admit_it() {
        let gw = gateway(&[
            ("a", "callers = [\"plugin:me\"]", &[ECHO]),
            ("b", "callers = [\"plugin:other\"]", &["b.v1.B"]),
            ("me", "", &["me.v1.Me"]),
            ("other", "", &["other.v1.Other"]),
        ]);
        assert_eq!(call_out(&gw, "me", &["a", "b"], ECHO).await, went_to("a"));
        // b does not admit it: as if nothing served the service.
        assert_eq!(call_out(&gw, "me", &["a", "b"], "b.v1.B").await, unknown("b.v1.B"));
        // Its own config refuses: it is told so, and no plugin is named.
        assert_eq!(
            call_out(&gw, "me", &["b"], ECHO).await,
            (
                tonic::Code::PermissionDenied,
                "plugin \"me\" may not call echo.v1.Echo: its `calls` lists no plugin serving it".into()
            )
        );
        assert_eq!(call_out(&gw, "me", &["a"], "nope.v1.Nope").await, unknown("nope.v1.Nope"));
        // Reflection and health are for host applications.
        let reflection = "grpc.reflection.v1.ServerReflection";
        assert_eq!(call_out(&gw, "me", &["a"], reflection).await, unknown(reflection));
        // The instance is known as "me" by its connection: another plugin's rule is not met.
        assert_eq!(call_out(&gw, "other", &["a"], ECHO).await, unknown(ECHO));
    }

    /// A plugin's `calls` was checked before the `callers` of the plugins serving the
    /// service: listing none of them, it was told PERMISSION_DENIED, and so learned that
    /// a plugin it may not call served the service.
    #[tokio::test]
    async fn a_service_only_plugins_not_admitting_the_caller_serve_is_unknown_to_it_whatever_its_calls_lists() {
        let gw = gateway(&[
            ("a", "callers = [\"plugin:me\"]", &[ECHO]),
            ("b", "callers = [\"plugin:other\"]", &["b.v1.B"]),
            ("me", "", &["me.v1.Me"]),
            ("other", "", &["other.v1.Other"]),
        ]);
        // Served only by b, which does not admit it: as a service nobody serves.
        assert_eq!(call_out(&gw, "me", &["a"], "b.v1.B").await, unknown("b.v1.B"));
        assert_eq!(call_out(&gw, "me", &[], "b.v1.B").await, unknown("b.v1.B"));
        // One that admits it serves it, and its `calls` does not list that one: told so.
        assert_eq!(
            call_out(&gw, "me", &["b"], ECHO).await,
            (
                tonic::Code::PermissionDenied,
                "plugin \"me\" may not call echo.v1.Echo: its `calls` lists no plugin serving it".into()
            )
        );
    }

    #[test]
    fn a_host_application_cannot_say_which_plugin_calls() {
        use super::super::host_calls::CALLER_HEADER;
        let mut req = http::Request::post(format!("http://gw/{ECHO}/M")).body(Body::empty()).unwrap();
        req.headers_mut().insert(CALLER_HEADER, "auth".parse().unwrap());
        assert_eq!(from_host_application(req).headers().get(CALLER_HEADER), None);
    }

    #[test]
    fn may_call_follows_callers_and_knows_only_configured_plugins() {
        let gw = gateway(&[("a", "callers = [\"plugin:b\"]", &[ECHO]), ("b", "", &[ECHO])]);
        let b_uid = gw.channels.read().unwrap()["b"].plugin.spec().ids.0;
        let mut ext = http::Extensions::new();
        assert!(!gw.may_call(&ext, "a"));
        assert!(gw.may_call(&ext, "b"));
        assert!(!gw.may_call(&ext, "ghost"));
        // b's uid, but no instance of b runs: whoever has that uid now is not b (a
        // dynamic uid moves when plugins are added, and may be another's since).
        ext.insert(peer(b_uid, b_uid, &[]));
        assert!(!gw.may_call(&ext, "a"));
        ext.insert(peer(b_uid + 1, b_uid, &[b_uid]));
        assert!(!gw.may_call(&ext, "a"));
    }
}
