//! `grpc.health.v1.Health` on the gateway. The service name is one a plugin declared,
//! `plugin:NAME`, or "" for the gateway itself (which serves while it answers).
//!
//! A plugin serves while an instance of its serving revision is ready, the plugin
//! itself says it serves (followed while it runs: [`super::follow`]) and its circuit
//! is closed. A service serves while any plugin that declared it, and that the
//! caller may call, serves; a caller that names one with `x-plugin` asks about that
//! one alone. A service no plugin the caller may call has declared, and a plugin it
//! may not call, are unknown (`NOT_FOUND`; `SERVICE_UNKNOWN` from `Watch`), as
//! grpc's own health service answers.
//!
//! `Watch` streams are bounded gateway-wide ([`MAX_WATCHES`], [`super::places`]): each
//! is woken by every change of any plugin's health, so callers holding a crowd of them
//! would otherwise cost the daemon memory and a herd of wake-ups without bound. Past
//! the bounds a new `Watch` is refused with RESOURCE_EXHAUSTED, saying so; `Check` is
//! always answered. Either's request must end within the gateway's `idle_timeout`
//! ([`super::Services::call`]).

use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use super::{Caller, Discovery};
use crate::instance::Plugin;

/// The prefix of a service name that asks about a plugin as a whole.
pub const PLUGIN_PREFIX: &str = "plugin:";
/// A health request is a service name: this is ample.
const MAX_REQUEST: usize = 4 << 10;

/// The most health `Watch` streams the gateway follows at once.
pub const MAX_WATCHES: usize = 1024;

/// How a refused `Watch` is told.
pub const WATCHES: super::places::Kind = super::places::Kind {
    streams: "health Watch streams",
    gateway: "follows",
    instead: "use Check, or end a Watch first",
};

pub type Server = HealthServer<HealthService>;

pub fn server(discovery: Arc<Discovery>) -> Server {
    HealthServer::new(HealthService { discovery }).max_decoding_message_size(MAX_REQUEST)
}

pub struct HealthService {
    discovery: Arc<Discovery>,
}

impl Discovery {
    /// Whether `p` serves now.
    fn serves(&self, p: &Plugin) -> bool {
        let ready = p.serving().instances.iter().any(|i| i.live.load().is_some() && self.board.says_serving(&i.id));
        ready && self.circuits.closed(&p.name)
    }

    /// The status of `service` for `caller`; None when it is unknown to it.
    pub fn health(&self, caller: &Caller, service: &str) -> Option<ServingStatus> {
        if service.is_empty() {
            return Some(ServingStatus::Serving);
        }
        let visible = self.visible(caller);
        let serving = |serves: bool| if serves { ServingStatus::Serving } else { ServingStatus::NotServing };
        if let Some(name) = service.strip_prefix(PLUGIN_PREFIX) {
            return visible.iter().find(|p| p.name == name).map(|p| serving(self.serves(p)));
        }
        // Declared at the serving revision's last handshake: a stopped plugin's services
        // are known, and do not serve.
        let declaring: Vec<_> =
            visible.iter().filter(|p| p.contract().is_some_and(|c| c.services.iter().any(|s| s == service))).collect();
        if declaring.is_empty() {
            return None;
        }
        Some(serving(declaring.iter().any(|p| self.serves(p))))
    }
}

fn unknown(service: &str) -> Status {
    Status::not_found(format!("unknown service {service:?}"))
}

type Statuses = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(&self, req: Request<HealthCheckRequest>) -> Result<Response<HealthCheckResponse>, Status> {
        let caller = Caller::of(&req);
        let service = &req.get_ref().service;
        match self.discovery.health(&caller, service) {
            Some(status) => Ok(Response::new(HealthCheckResponse { status: status as i32 })),
            None => Err(unknown(service)),
        }
    }

    type WatchStream = Statuses;

    /// The status now, then each change of it. What the stream holds is a name and two
    /// counters, whatever happens meanwhile: changes that come faster than the caller
    /// reads are folded into the next answer, never queued.
    async fn watch(&self, req: Request<HealthCheckRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let caller = Caller::of(&req);
        let service = req.into_inner().service;
        let d = self.discovery.clone();
        let uid = caller.extensions.get::<crate::routing::callers::Peer>().map(|p| p.uid);
        let place = d.watches.take(uid)?;
        let epoch = d.board.subscribe();
        let circuits = d.circuits.changes();
        let state = (d, caller, service, epoch, circuits, None::<ServingStatus>);
        let stream =
            futures_util::stream::unfold(state, |(d, caller, service, mut epoch, mut circuits, last)| async move {
                loop {
                    epoch.borrow_and_update();
                    if let Some(c) = circuits.as_mut() {
                        c.borrow_and_update();
                    }
                    let now = d.health(&caller, &service).unwrap_or(ServingStatus::ServiceUnknown);
                    if last != Some(now) {
                        let answer = HealthCheckResponse { status: now as i32 };
                        return Some((Ok(answer), (d, caller, service, epoch, circuits, Some(now))));
                    }
                    let circuit_changed = async {
                        match circuits.as_mut() {
                            Some(c) => c.changed().await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        changed = epoch.changed() => if changed.is_err() { return None },
                        changed = circuit_changed => if changed.is_err() { circuits = None },
                    }
                }
            });
        // The place is held as long as the stream, however it ends.
        let stream = futures_util::StreamExt::map(stream, move |answer| {
            let _held = &place;
            answer
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::discovery::follow::Board;

    fn watch(svc: &HealthService, uid: u32) -> Result<Statuses, Status> {
        let mut req = Request::new(HealthCheckRequest { service: String::new() });
        req.extensions_mut().insert(crate::routing::callers::Peer::new(uid, uid, None, &[]));
        futures_util::FutureExt::now_or_never(svc.watch(req)).expect("answered at once").map(Response::into_inner)
    }

    #[test]
    fn watch_streams_past_the_bounds_are_refused_and_an_ended_one_gives_its_place_back() {
        let discovery = Discovery::new(&[], Arc::new(Board::default())).with_max_watches(8);
        let svc = HealthService { discovery: Arc::new(discovery) };
        // One caller holds at most a quarter of the places.
        let first = watch(&svc, 1000).expect("a place");
        let _second = watch(&svc, 1000).expect("a place");
        let refused = watch(&svc, 1000).map(|_| ()).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            refused.message(),
            "this caller already holds 2 health Watch streams, the most one caller may: use Check, or end a Watch first"
        );
        // Others still get theirs, up to the gateway's bound.
        let others: Vec<_> = [1001, 1001, 1002, 1002, 1003, 1003].map(|uid| watch(&svc, uid).expect("a place")).into();
        let refused = watch(&svc, 1004).map(|_| ()).unwrap_err();
        assert_eq!(
            refused.message(),
            "the gateway already follows 8 health Watch streams, its most: use Check, or end a Watch first"
        );
        let check = Request::new(HealthCheckRequest { service: String::new() });
        let answer = futures_util::FutureExt::now_or_never(svc.check(check)).unwrap().unwrap();
        assert_eq!(answer.into_inner().status, ServingStatus::Serving as i32, "Check is still answered");
        drop(first);
        let _again = watch(&svc, 1000).expect("the place given back is taken again");
        drop(others);
    }
}
