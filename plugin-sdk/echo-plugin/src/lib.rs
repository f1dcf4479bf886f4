//! src/lib.rs: the plugin, serving `echo.v1.Echo`; src/main.rs serves it to the supervisor.
use tonic::{Request, Response, Status};

pub mod pb {
    tonic::include_proto!("echo.v1");
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.binpb"));
}

struct MyEcho;

#[tonic::async_trait]
impl pb::echo_server::Echo for MyEcho {
    async fn echo(&self, request: Request<pb::EchoRequest>) -> Result<Response<pb::EchoResponse>, Status> {
        Ok(Response::new(pb::EchoResponse { message: request.into_inner().message }))
    }
}

/// The plugin, served by src/main.rs and tested in-process by tests/echo.rs.
pub fn plugin() -> plugin_sdk::Plugin {
    plugin_sdk::Plugin::new("echo", env!("CARGO_PKG_VERSION"))
        .descriptors(pb::FILE_DESCRIPTOR_SET)
        .service(pb::echo_server::EchoServer::new(MyEcho))
        // Optional: the plugin's [plugin.config] table, as JSON.
        .on_init(|ctx| {
            plugin_sdk::tracing::info!(config = %ctx.config, "configured");
            Ok(())
        })
}
