//! The plugin side of the lifecycle contract: answer the handshake with the
//! declared contract, run the author's init hook, and start the drain when
//! asked to shut down.

use std::sync::Mutex;
use std::time::Duration;

use plugin_proto::plugin::v1::plugin_lifecycle_server::PluginLifecycle;
use plugin_proto::plugin::v1::{
    HandshakeRequest, HandshakeResponse, InitRequest, InitResponse, ShutdownRequest, ShutdownResponse,
};
use tonic::{Request, Response, Status};

use crate::calls::InFlight;
use crate::shutdown::Shutdown;
use crate::{InitContext, InitHook};

pub struct Lifecycle {
    pub name: String,
    pub version: String,
    pub protocol_versions: Vec<u32>,
    pub services: Vec<String>,
    pub descriptor_set: Vec<u8>,
    pub init: Mutex<Option<InitHook>>,
    pub instance: String,
    pub shutdown: Shutdown,
    pub in_flight: InFlight,
}

#[tonic::async_trait]
impl PluginLifecycle for Lifecycle {
    async fn handshake(&self, req: Request<HandshakeRequest>) -> Result<Response<HandshakeResponse>, Status> {
        let offered = &req.get_ref().protocol_versions;
        let Some(chosen) = self.protocol_versions.iter().copied().filter(|v| offered.contains(v)).max() else {
            return Err(Status::failed_precondition(format!(
                "no common protocol version: the supervisor offers {offered:?}, plugin {} (sdk {}) speaks {:?}",
                self.name,
                crate::SDK_VERSION,
                self.protocol_versions
            )));
        };
        tracing::debug!(protocol = chosen, supervisor = %req.get_ref().supervisor_version, "handshake");
        Ok(Response::new(HandshakeResponse {
            name: self.name.clone(),
            version: self.version.clone(),
            sdk_version: crate::SDK_VERSION.to_owned(),
            protocol_version: chosen,
            services: self.services.clone(),
            file_descriptor_set: self.descriptor_set.clone(),
        }))
    }

    async fn init(&self, req: Request<InitRequest>) -> Result<Response<InitResponse>, Status> {
        let req = req.into_inner();
        let config = if req.config_json.is_empty() {
            serde_json::Value::Object(Default::default())
        } else {
            serde_json::from_str(&req.config_json)
                .map_err(|e| Status::invalid_argument(format!("plugin config is not valid JSON: {e}")))?
        };
        let ctx = InitContext {
            config,
            data_dir: (!req.data_dir.is_empty()).then(|| req.data_dir.into()),
            instance: if req.instance.is_empty() { self.instance.clone() } else { req.instance },
        };
        // The hook runs under the lock, and stays in its slot: a supervisor may re-run init
        // on a reconnect. A hook that panics (answered INTERNAL by the call guard) poisons
        // the lock, so a later init is refused rather than answered OK with no hook run.
        let mut hook = self.init.lock().map_err(|_| Status::internal("init hook poisoned by an earlier panic"))?;
        if let Some(hook) = hook.as_mut() {
            hook(&ctx)?;
        }
        drop(hook);
        tracing::info!(instance = %ctx.instance, "initialised");
        Ok(Response::new(InitResponse {}))
    }

    async fn shutdown(&self, req: Request<ShutdownRequest>) -> Result<Response<ShutdownResponse>, Status> {
        let req = req.into_inner();
        // This call is itself in flight.
        let in_flight = self.in_flight.get().saturating_sub(1);
        let reason = if req.reason.is_empty() { "supervisor request".to_owned() } else { req.reason };
        self.shutdown.trigger(Duration::from_millis(u64::from(req.drain_deadline_ms)), &reason);
        Ok(Response::new(ShutdownResponse { in_flight }))
    }
}
