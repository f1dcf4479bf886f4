//! The plugin's `grpc.health.v1` service, whose `Watch` streams end once the plugin
//! drains: a watcher's stream never ends by itself, so a drain begun by a signal (which the
//! supervisor's own health stream does not know of) would otherwise last until its deadline.

use std::pin::Pin;

use futures_util::StreamExt;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_server::Health;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::HealthService;

use crate::shutdown::Shutdown;

/// tonic-health's service, its watches ended by the drain.
pub struct DrainingHealth {
    pub inner: HealthService,
    pub shutdown: Shutdown,
}

type Watch = Pin<Box<dyn futures_util::Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for DrainingHealth {
    async fn check(&self, request: Request<HealthCheckRequest>) -> Result<Response<HealthCheckResponse>, Status> {
        self.inner.check(request).await
    }

    type WatchStream = Watch;

    async fn watch(&self, request: Request<HealthCheckRequest>) -> Result<Response<Watch>, Status> {
        let stream = self.inner.watch(request).await?.into_inner();
        let shutdown = self.shutdown.clone();
        // Ends with OK: the watcher learns the plugin is going from the stream's end and the
        // connection's GOAWAY, as it would from any server stopping.
        let until_drain = stream.take_until(async move {
            shutdown.requested().await;
        });
        Ok(Response::new(Box::pin(until_drain)))
    }
}
