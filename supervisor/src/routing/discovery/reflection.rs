//! gRPC server reflection (`grpc.reflection.v1` and `v1alpha`) over the contracts of
//! the running plugins a caller may call. The message types and server traits are
//! tonic-reflection's; the implementation is ours: its builder serves a fixed set of
//! descriptors, while ours change as plugins start, stop, reload and come and go,
//! and differ per caller.
//!
//! A request is answered from the first contract that has what it asks for, the
//! gateway's own first and then the plugins' in name order, with the transitive
//! dependencies of the file from that same contract: two plugins may declare files
//! of the same name with different contents.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use prost::Message;
use prost_reflect::{DescriptorPool, FileDescriptor};
use tonic::{Request, Response, Status, Streaming};
use tonic_reflection::pb::{v1, v1alpha};
use v1::server_reflection_request::MessageRequest;
use v1::server_reflection_response::MessageResponse;

use super::{Caller, Discovery};
use crate::instance::Contract;

/// A reflection request is a name or two: this is ample, and keeps what a caller can
/// make the gateway decode small.
const MAX_REQUEST: usize = 64 << 10;

/// The most reflection streams (both versions together) the gateway holds at once:
/// about 12 KiB each while idle.
pub const MAX_STREAMS: usize = 1024;

/// How a refused reflection stream is told.
pub const STREAMS: super::places::Kind = super::places::Kind {
    streams: "reflection streams",
    gateway: "holds",
    instead: "ask on a stream already open, or end one first",
};

pub type V1Server = v1::server_reflection_server::ServerReflectionServer<Reflection>;
pub type V1alphaServer = v1alpha::server_reflection_server::ServerReflectionServer<Reflection>;

pub fn v1_server(discovery: Arc<Discovery>) -> V1Server {
    V1Server::new(Reflection { discovery }).max_decoding_message_size(MAX_REQUEST)
}

pub fn v1alpha_server(discovery: Arc<Discovery>) -> V1alphaServer {
    V1alphaServer::new(Reflection { discovery }).max_decoding_message_size(MAX_REQUEST)
}

/// Both versions' service.
pub struct Reflection {
    discovery: Arc<Discovery>,
}

type Answers<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// One answer per request, each computed only when the caller's side takes the last
/// one: a caller that sends requests without reading answers stops the gateway
/// reading them (HTTP/2 flow control does the rest), and one that hangs up drops
/// the stream, and with it this. A caller that sends no next request within the
/// discovery's idle bound has its stream ended, and its place among the streams with it.
fn answers<Q, A>(
    discovery: Arc<Discovery>,
    caller: Caller,
    requests: Streaming<Q>,
    answer: fn(&Discovery, &Caller, Q) -> A,
) -> Result<Answers<A>, Status>
where
    Q: Send + 'static,
    A: Send + 'static,
{
    let uid = caller.extensions.get::<crate::routing::callers::Peer>().map(|p| p.uid);
    let place = discovery.reflections.take(uid)?;
    let state = Some((requests, discovery, caller, place));
    Ok(Box::pin(futures_util::stream::unfold(state, move |state| async move {
        let (mut requests, d, caller, place) = state?;
        match tokio::time::timeout(d.idle, requests.message()).await {
            Ok(Ok(Some(q))) => {
                let a = answer(&d, &caller, q);
                Some((Ok(a), Some((requests, d, caller, place))))
            }
            // The caller is done asking: the answers end, OK.
            Ok(Ok(None)) => None,
            // A request that does not decode (or is too large) ends the answers with
            // why, rather than with an OK that hides it.
            Ok(Err(status)) => Some((Err(status), None)),
            Err(_) => Some((Err(idle_stream(d.idle)), None)),
        }
    })))
}

/// What ends a reflection stream with no request for `idle`.
fn idle_stream(idle: std::time::Duration) -> Status {
    Status::deadline_exceeded(format!(
        "reflection: no request for the gateway's idle_timeout ({}); the stream is ended, open another to ask more",
        crate::config::units::format_duration(idle)
    ))
}

#[tonic::async_trait]
impl v1::server_reflection_server::ServerReflection for Reflection {
    type ServerReflectionInfoStream = Answers<v1::ServerReflectionResponse>;

    async fn server_reflection_info(
        &self,
        req: Request<Streaming<v1::ServerReflectionRequest>>,
    ) -> Result<Response<Self::ServerReflectionInfoStream>, Status> {
        let caller = Caller::of(&req);
        Ok(Response::new(answers(self.discovery.clone(), caller, req.into_inner(), reflect)?))
    }
}

#[tonic::async_trait]
impl v1alpha::server_reflection_server::ServerReflection for Reflection {
    type ServerReflectionInfoStream = Answers<v1alpha::ServerReflectionResponse>;

    async fn server_reflection_info(
        &self,
        req: Request<Streaming<v1alpha::ServerReflectionRequest>>,
    ) -> Result<Response<Self::ServerReflectionInfoStream>, Status> {
        let caller = Caller::of(&req);
        Ok(Response::new(answers(self.discovery.clone(), caller, req.into_inner(), reflect_v1alpha)?))
    }
}

/// Answers a v1 request for `caller`.
pub fn reflect(d: &Discovery, caller: &Caller, req: v1::ServerReflectionRequest) -> v1::ServerReflectionResponse {
    let message_response = answer(&d.contracts(caller), req.message_request.as_ref());
    v1::ServerReflectionResponse {
        valid_host: req.host.clone(),
        original_request: Some(req),
        message_response: Some(message_response),
    }
}

/// v1alpha's messages are v1's, field for field and number for number: the request is
/// answered as v1 and the answer re-read as v1alpha.
pub(super) fn reflect_v1alpha(
    d: &Discovery,
    caller: &Caller,
    req: v1alpha::ServerReflectionRequest,
) -> v1alpha::ServerReflectionResponse {
    let as_v1 = v1::ServerReflectionRequest::decode(req.encode_to_vec().as_slice()).unwrap_or_default();
    let answer = reflect(d, caller, as_v1);
    v1alpha::ServerReflectionResponse::decode(answer.encode_to_vec().as_slice()).unwrap_or_else(|e| {
        v1alpha::ServerReflectionResponse {
            valid_host: req.host.clone(),
            original_request: Some(req),
            message_response: Some(v1alpha::server_reflection_response::MessageResponse::ErrorResponse(
                v1alpha::ErrorResponse { error_code: tonic::Code::Internal as i32, error_message: e.to_string() },
            )),
        }
    })
}

fn error(code: tonic::Code, message: String) -> MessageResponse {
    MessageResponse::ErrorResponse(v1::ErrorResponse { error_code: code as i32, error_message: message })
}

/// The answer to one request, from `contracts` (in the order they are searched).
pub fn answer(contracts: &[Arc<Contract>], req: Option<&MessageRequest>) -> MessageResponse {
    let pools = || contracts.iter().map(|c| &c.pool);
    match req {
        None => error(tonic::Code::InvalidArgument, "the request asks nothing (no message_request)".into()),
        Some(MessageRequest::ListServices(_)) => {
            let names: BTreeSet<&str> = contracts.iter().flat_map(|c| c.services.iter().map(String::as_str)).collect();
            MessageResponse::ListServicesResponse(v1::ListServiceResponse {
                service: names.into_iter().map(|name| v1::ServiceResponse { name: name.to_owned() }).collect(),
            })
        }
        Some(MessageRequest::FileByFilename(name)) => {
            let owner = |c: &Contract| owns_file(c, name);
            match owners_first(contracts, owner).find_map(|c| c.pool.get_file_by_name(name)) {
                Some(file) => with_dependencies(&file),
                None => error(tonic::Code::NotFound, format!("file {name:?} not found")),
            }
        }
        Some(MessageRequest::FileContainingSymbol(symbol)) => {
            let owner = |c: &Contract| owns_symbol(c, symbol);
            match owners_first(contracts, owner).find_map(|c| file_of_symbol(&c.pool, symbol)) {
                Some(file) => with_dependencies(&file),
                None => error(tonic::Code::NotFound, format!("symbol {symbol:?} not found")),
            }
        }
        Some(MessageRequest::FileContainingExtension(ext)) => {
            let number = u32::try_from(ext.extension_number).ok();
            let found = pools().find_map(|p| {
                p.get_message_by_name(&ext.containing_type)?.get_extension(number?).map(|e| e.parent_file())
            });
            match found {
                Some(file) => with_dependencies(&file),
                None => error(
                    tonic::Code::NotFound,
                    format!("extension {} of {:?} not found", ext.extension_number, ext.containing_type),
                ),
            }
        }
        Some(MessageRequest::AllExtensionNumbersOfType(name)) => {
            let types: Vec<_> = pools().filter_map(|p| p.get_message_by_name(name)).collect();
            if types.is_empty() {
                return error(tonic::Code::NotFound, format!("type {name:?} not found"));
            }
            let numbers: BTreeSet<i32> =
                types.iter().flat_map(|t| t.extensions().filter_map(|e| i32::try_from(e.number()).ok())).collect();
            MessageResponse::AllExtensionNumbersResponse(v1::ExtensionNumberResponse {
                base_type_name: name.clone(),
                extension_number: numbers.into_iter().collect(),
            })
        }
    }
}

/// `contracts`, those `owner` ranks first (lowest) ahead, each rank in the order given.
/// A plugin's descriptors may describe more than the services it declares, another
/// plugin's among them, differently: searched in name order alone, plugin `aaa` shipping
/// its own `bank.v1.Bank` answered for the real one's plugin, and a tool describing the
/// service then encoded calls, routed to the real plugin, by the wrong schema.
fn owners_first(contracts: &[Arc<Contract>], owner: impl Fn(&Contract) -> u8) -> impl Iterator<Item = &Contract> {
    let mut ranked: Vec<(u8, &Contract)> = contracts.iter().map(|c| (owner(c), c.as_ref())).collect();
    ranked.sort_by_key(|(rank, _)| *rank);
    ranked.into_iter().map(|(_, c)| c)
}

/// How much `c` owns `symbol`: 0 if it declares the service the symbol is or is a member
/// of, 1 if it declares a service in the symbol's package, else 2.
fn owns_symbol(c: &Contract, symbol: &str) -> u8 {
    let within = |scope: &str| symbol.strip_prefix(scope).is_some_and(|rest| rest.is_empty() || rest.starts_with('.'));
    if c.services.iter().any(|s| within(s)) {
        return 0;
    }
    let package = |s: &str| s.rsplit_once('.').map_or("", |(package, _)| package).to_owned();
    if c.services.iter().any(|s| !package(s).is_empty() && within(&package(s))) { 1 } else { 2 }
}

/// 0 if `c` declares a service defined in the file `name`, else 1.
fn owns_file(c: &Contract, name: &str) -> u8 {
    let defines = |s: &String| c.pool.get_service_by_name(s).is_some_and(|s| s.parent_file().name() == name);
    if c.services.iter().any(defines) { 0 } else { 1 }
}

/// The file that defines `symbol` in `pool`: a service, method, message, enum (at any
/// depth of nesting), field, oneof, enum value or extension.
fn file_of_symbol(pool: &DescriptorPool, symbol: &str) -> Option<FileDescriptor> {
    if let Some(s) = pool.get_service_by_name(symbol) {
        return Some(s.parent_file());
    }
    if let Some(m) = pool.get_message_by_name(symbol) {
        return Some(m.parent_file());
    }
    if let Some(e) = pool.get_enum_by_name(symbol) {
        return Some(e.parent_file());
    }
    if let Some(x) = pool.get_extension_by_name(symbol) {
        return Some(x.parent_file());
    }
    let (parent, member) = symbol.rsplit_once('.')?;
    if let Some(s) = pool.get_service_by_name(parent) {
        return s.methods().any(|m| m.name() == member).then(|| s.parent_file());
    }
    if let Some(m) = pool.get_message_by_name(parent) {
        let found = m.get_field_by_name(member).is_some() || m.oneofs().any(|o| o.name() == member);
        return found.then(|| m.parent_file());
    }
    // Enum values are named in their enum's scope, beside the enum.
    pool.all_enums().find(|e| e.values().any(|v| v.full_name() == symbol)).map(|e| e.parent_file())
}

/// `file`, then every file it depends on, directly or not, each once.
fn with_dependencies(file: &FileDescriptor) -> MessageResponse {
    let mut seen = HashSet::new();
    let mut queue = VecDeque::from([file.clone()]);
    let mut encoded = Vec::new();
    while let Some(f) = queue.pop_front() {
        if !seen.insert(f.name().to_owned()) {
            continue;
        }
        encoded.push(f.encode_to_vec());
        queue.extend(f.dependencies());
    }
    MessageResponse::FileDescriptorResponse(v1::FileDescriptorResponse { file_descriptor_proto: encoded })
}
