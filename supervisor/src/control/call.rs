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

/// The largest field number protobuf has: no message declares it, so every decoder
/// skips it (after receiving it whole).
const PAD_FIELD: u32 = (1 << 29) - 1;

/// `encoded` with `pad` zero bytes more, in a length-delimited field no message declares.
pub(crate) fn padded(mut encoded: Vec<u8>, pad: usize) -> Vec<u8> {
    prost::encoding::encode_key(PAD_FIELD, prost::encoding::WireType::LengthDelimited, &mut encoded);
    prost::encoding::encode_varint(pad as u64, &mut encoded);
    encoded.resize(encoded.len() + pad, 0);
    encoded
}

/// "pkg.Service/Method", "/pkg.Service/Method" (the HTTP/2 path) or
/// "pkg.Service.Method" (grpcurl's spelling), as (service, method).
pub fn split_method(method: &str) -> Option<(&str, &str)> {
    let bare = method.strip_prefix('/').unwrap_or(method);
    let (service, name) = if bare.contains('/') { bare.rsplit_once('/')? } else { bare.rsplit_once('.')? };
    (!service.is_empty() && !name.is_empty() && !service.contains('/')).then_some((service, name))
}

/// A JSON call resolved against the plugin's declared contract.
struct Resolved {
    method: prost_reflect::MethodDescriptor,
    request: DynamicMessage,
    grpc: tonic::client::Grpc<crate::routing::Channel>,
    path: http::uri::PathAndQuery,
}

fn resolve(sup: &Supervisor, plugin: &str, method: &str, json: &str) -> Result<Resolved, Status> {
    let p = sup.plugin(plugin).map_err(|e| Status::not_found(e.to_string()))?;
    // How the method is written is the command's own fault, whatever the plugin's state.
    let (service, name) = split_method(method).ok_or_else(|| {
        super::usage::bad_argument(format!(
            "method {method:?} must be written Service/Method or Service.Method, e.g. echo.v1.Echo/Echo"
        ))
    })?;
    let contract = p.contract().ok_or_else(|| {
        Status::unavailable(format!(
            "plugin {plugin:?} has not declared its contract yet: it is {}",
            p.describe_state()
        ))
    })?;
    // Served, not merely described: a plugin's descriptors may carry services it does not
    // serve (another plugin's, imported files'), which it would answer UNIMPLEMENTED.
    let sd = contract
        .pool
        .get_service_by_name(service)
        .filter(|_| contract.services.iter().any(|s| s == service))
        .ok_or_else(|| {
            Status::not_found(format!(
                "plugin {plugin:?} does not declare service {service:?} (it declares: {})",
                contract.services.join(", ")
            ))
        })?;
    let md = sd.methods().find(|m| m.name() == name).ok_or_else(|| {
        let names: Vec<String> = sd.methods().map(|m| m.name().to_owned()).collect();
        Status::not_found(format!("service {service} has no method {name:?} (it has: {})", names.join(", ")))
    })?;
    if md.is_client_streaming() {
        let kind = if md.is_server_streaming() { "bidirectional-streaming" } else { "client-streaming" };
        return Err(Status::unimplemented(format!(
            "{service}/{name} is a {kind} method; `call` makes unary and server-streaming calls"
        )));
    }
    let mut de = serde_json::Deserializer::from_str(json);
    let request = DynamicMessage::deserialize(md.input(), &mut de).and_then(|m| de.end().map(|()| m)).map_err(|e| {
        super::usage::bad_argument(format!("the request is not a valid {} in JSON: {e}", md.input().full_name()))
    })?;
    let channel = sup.channel(plugin).map_err(|e| Status::not_found(e.to_string()))?;
    let path = http::uri::PathAndQuery::from_str(&format!("/{}/{}", sd.full_name(), md.name()))
        .map_err(|e| super::usage::bad_argument(format!("bad method path: {e}")))?;
    Ok(Resolved { method: md, request, grpc: tonic::client::Grpc::new(channel), path })
}

impl Resolved {
    fn request(&self, timeout: Duration) -> tonic::Request<DynamicMessage> {
        let mut req = tonic::Request::new(self.request.clone());
        // tonic panics encoding a timeout past 8 digits of hours: the config
        // bounds durations, and this keeps any other caller's from reaching it.
        req.set_timeout(timeout.min(crate::config::units::MAX_DURATION));
        req
    }

    async fn ready(&mut self, plugin: &str) -> Result<(), Status> {
        self.grpc.ready().await.map_err(|e| Status::unavailable(format!("plugin {plugin:?} is not ready: {e}")))
    }
}

fn to_json(message: &DynamicMessage) -> Result<String, Status> {
    serde_json::to_string(message).map_err(|e| Status::internal(format!("rendering the response as JSON: {e}")))
}

/// Calls `method` ("pkg.Service/Method") of `plugin` with a JSON request.
pub async fn call_json(
    sup: &Supervisor,
    plugin: &str,
    method: &str,
    json: &str,
    timeout: Duration,
) -> Result<String, Status> {
    unary(resolve(sup, plugin, method, json)?, plugin, method, timeout).await
}

/// [`call_json`] with `pad` bytes more in the request, in a field the plugin does not
/// declare: the plugin receives and buffers them whole, then answers as it would without
/// them. What makes any plugin hold memory for a call (the onboarding check's memory limit).
pub async fn call_json_padded(
    sup: &Supervisor,
    plugin: &str,
    method: &str,
    json: &str,
    pad: usize,
    timeout: Duration,
) -> Result<String, Status> {
    let mut call = resolve(sup, plugin, method, json)?;
    // Decoded again, the padding is an unknown field, which the message keeps and encodes.
    let bytes = padded(call.request.encode_to_vec(), pad);
    call.request = DynamicMessage::decode(call.method.input(), &bytes[..])
        .map_err(|e| Status::internal(format!("padding the request: {e}")))?;
    unary(call, plugin, method, timeout).await
}

async fn unary(mut call: Resolved, plugin: &str, method: &str, timeout: Duration) -> Result<String, Status> {
    if call.method.is_server_streaming() {
        return Err(Status::unimplemented(format!(
            "{method} is a server-streaming method; this API makes unary calls (CallStream makes both)"
        )));
    }
    call.ready(plugin).await?;
    let codec = DynamicCodec { output: call.method.output() };
    let resp =
        call.grpc.unary(call.request(timeout), call.path.clone(), codec).await.map_err(super::usage::from_plugin)?;
    to_json(&resp.into_inner())
}

/// The JSON documents of a unary or server-streaming call, one per message as the
/// plugin sends it; the plugin's error status ends the stream.
pub async fn call_json_stream(
    sup: &Supervisor,
    plugin: &str,
    method: &str,
    json: &str,
    timeout: Duration,
) -> Result<impl futures_util::Stream<Item = Result<String, Status>> + Send + use<>, Status> {
    use futures_util::StreamExt;
    let mut call = resolve(sup, plugin, method, json)?;
    call.ready(plugin).await?;
    let codec = DynamicCodec { output: call.method.output() };
    let resp = call
        .grpc
        .server_streaming(call.request(timeout), call.path.clone(), codec)
        .await
        .map_err(super::usage::from_plugin)?;
    Ok(resp.into_inner().map(|m| m.map_err(super::usage::from_plugin).and_then(|m| to_json(&m))))
}

#[cfg(test)]
mod tests {
    use super::split_method;

    #[test]
    fn a_padded_request_decodes_as_the_request_it_pads() {
        use prost::Message;
        let request = prost_types::Duration { seconds: 7, nanos: 9 };
        let padded = super::padded(request.encode_to_vec(), 1 << 20);
        assert!(padded.len() > 1 << 20);
        assert_eq!(prost_types::Duration::decode(&padded[..]).unwrap(), request);
    }

    #[test]
    fn methods_are_spelled_with_a_slash_a_leading_slash_or_a_dot() {
        for spelling in ["echo.v1.Echo/Echo", "/echo.v1.Echo/Echo", "echo.v1.Echo.Echo"] {
            assert_eq!(split_method(spelling), Some(("echo.v1.Echo", "Echo")), "{spelling}");
        }
        for bad in ["Echo", "/echo.v1.Echo/", "echo.v1.Echo/", ".Echo", "a/b/c", "//Echo", ""] {
            assert_eq!(split_method(bad), None, "{bad}");
        }
    }
}
