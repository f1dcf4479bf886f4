//! The echo plugin: `echo.v1.Echo/Echo` answers with the message it was sent.
//!
//! The smallest complete plugin: a tonic service, its descriptors, one call
//! to `serve`.

use plugin_sdk::tonic::{Request, Response, Status};

mod pb {
    include!(concat!(env!("OUT_DIR"), "/echo.v1.rs"));
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/echo.binpb"));
}

use pb::echo_server::{Echo, EchoServer};
use pb::{EchoRequest, EchoResponse};

struct EchoService;

#[plugin_sdk::tonic::async_trait]
impl Echo for EchoService {
    async fn echo(&self, req: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        let message = req.into_inner().message;
        plugin_sdk::tracing::debug!(len = message.len(), "echo");
        Ok(Response::new(EchoResponse { message }))
    }
}

fn main() {
    plugin_sdk::Plugin::new("echo", env!("CARGO_PKG_VERSION"))
        .descriptors(pb::FILE_DESCRIPTOR_SET)
        .service(EchoServer::new(EchoService))
        .serve()
}
