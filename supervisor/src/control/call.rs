//! `supervisorctl call`: a JSON request turned into the plugin's protobuf
//! message using the descriptors it declared at handshake, sent through
//! the same channel as any call, and the answer turned back into JSON.

use std::str::FromStr;
use std::time::Duration;

use bytes::Buf;
use prost::Message;
use prost_reflect::{DynamicMessage, MessageDescriptor};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use crate::Supervisor;

/// Encodes and decodes messages known only at run time.
struct DynamicCodec {
    output: MessageDescriptor,
}

struct DynEncoder;
struct DynDecoder(MessageDescriptor);

impl Encoder for DynEncoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn encode(&mut self, item: DynamicMessage, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst).map_err(|e| Status::internal(format!("encoding the request: {e}")))
    }
}

impl Decoder for DynDecoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<DynamicMessage>, Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        DynamicMessage::decode(self.0.clone(), bytes)
            .map(Some)
            .map_err(|e| Status::internal(format!("the plugin's response is not a valid {}: {e}", self.0.full_name())))
    }
}

impl Codec for DynamicCodec {
    type Encode = DynamicMessage;
    type Decode = DynamicMessage;
    type Encoder = DynEncoder;
    type Decoder = DynDecoder;

    fn encoder(&mut self) -> DynEncoder {
        DynEncoder
    }

    fn decoder(&mut self) -> DynDecoder {
        DynDecoder(self.output.clone())
    }
}

/// Calls `method` ("pkg.Service/Method") of `plugin` with a JSON request.
pub async fn call_json(
    sup: &Supervisor,
    plugin: &str,
    method: &str,
    json: &str,
    timeout: Duration,
) -> Result<String, Status> {
    let p = sup.plugin(plugin).map_err(|e| Status::not_found(e.to_string()))?;
    let contract = p.contract().ok_or_else(|| {
        Status::unavailable(format!(
            "plugin {plugin:?} has not declared its contract yet: it is {}",
            p.describe_state()
        ))
    })?;
    let (service, name) = method.rsplit_once('/').ok_or_else(|| {
        Status::invalid_argument(format!("method {method:?} must be written Service/Method, e.g. echo.v1.Echo/Echo"))
    })?;
    let sd = contract.pool.get_service_by_name(service).ok_or_else(|| {
        Status::not_found(format!(
            "plugin {plugin:?} does not declare service {service:?} (it declares: {})",
            contract.services.join(", ")
        ))
    })?;
    let md = sd.methods().find(|m| m.name() == name).ok_or_else(|| {
        let names: Vec<String> = sd.methods().map(|m| m.name().to_owned()).collect();
        Status::not_found(format!("service {service} has no method {name:?} (it has: {})", names.join(", ")))
    })?;
    if md.is_client_streaming() || md.is_server_streaming() {
        return Err(Status::unimplemented(format!("{method} is a streaming method; `call` makes unary calls")));
    }
    let mut de = serde_json::Deserializer::from_str(json);
    let request = DynamicMessage::deserialize(md.input(), &mut de).and_then(|m| de.end().map(|()| m)).map_err(|e| {
        Status::invalid_argument(format!("the request is not a valid {} in JSON: {e}", md.input().full_name()))
    })?;
    let channel = sup.channel(plugin).map_err(|e| Status::not_found(e.to_string()))?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| Status::unavailable(format!("plugin {plugin:?} is not ready: {e}")))?;
    let path = http::uri::PathAndQuery::from_str(&format!("/{}/{}", sd.full_name(), md.name()))
        .map_err(|e| Status::invalid_argument(format!("bad method path: {e}")))?;
    let mut req = tonic::Request::new(request);
    // tonic panics encoding a timeout past 8 digits of hours: the config
    // bounds durations, and this keeps any other caller's from reaching it.
    req.set_timeout(timeout.min(crate::config::units::MAX_DURATION));
    let resp = grpc.unary(req, path, DynamicCodec { output: md.output() }).await?;
    serde_json::to_string(&resp.into_inner())
        .map_err(|e| Status::internal(format!("rendering the response as JSON: {e}")))
}
