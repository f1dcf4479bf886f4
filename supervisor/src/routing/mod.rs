//! Getting a call to a plugin: the service-name table, the per-plugin
//! channel that balances over ready instances, the protection layers
//! (concurrency limit, circuit breaker, message sizes), the deadline and
//! recording layers, and the gateway that host applications connect to. The gateway,
//! the embedded library and the plugins' host channels use the same stack.

mod authority;
pub mod breaker;
pub(crate) mod buffers;
pub mod callers;
pub mod channel;
mod conns;
pub mod deadline;
pub mod discovery;
pub mod gateway;
pub mod host_calls;
pub mod limit;
pub mod outcomes;
mod quiet;
pub mod record;
pub mod server;
pub mod size;
pub mod split;
pub(crate) mod stalls;
pub mod table;
mod trim;
mod undecodable;
mod unended;
mod wrap;

pub use channel::Channel;

/// The gRPC status in `headers` (a trailers-only answer's headers, or
/// trailers), if any.
fn grpc_status(headers: &http::HeaderMap) -> Option<tonic::Code> {
    headers.get("grpc-status").map(|v| tonic::Code::from_bytes(v.as_bytes()))
}
