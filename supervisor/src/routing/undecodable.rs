//! What a plugin's gRPC framework answers a request it cannot decode: INTERNAL, by
//! gRPC's own table of codes, yet the caller's doing, so that a caller sending bytes that
//! do not decode can neither open the circuit for every other caller nor fail a canary.
//!
//! Told apart by the frameworks' words (tonic and prost, grpc-go, gRPC C-core) and, where
//! the request was held whole (a unary one that had fully arrived when it was routed),
//! by the request itself not decoding as the method's input in the contract the revision
//! declared. The words alone would hide some of a plugin's own failures (one passing on a
//! downstream decode error unchanged: Go's `return nil, err`, Rust's `?`); they are all
//! there is for a request that arrived in parts, which a caller can always arrange, so
//! there the words decide: a plugin can hide its failures from its own breaker that way,
//! a caller cannot open it for the others.

use bytes::{Buf, Bytes};
use prost_reflect::DescriptorPool;

use crate::instance::Contract;

/// How the frameworks begin what they say of a request that does not decode.
const SAID: &[&str] = &[
    // prost's DecodeError, as tonic-prost answers it.
    "failed to decode Protobuf message",
    // tonic: a unary call without its message, cut short, or flagged compressed wrongly.
    "Missing request message.",
    "Unexpected EOF decoding stream.",
    "protocol error: received message with compressed-flag but no grpc-encoding was specified",
    "protocol error: received message with invalid compression flag",
    // grpc-go.
    "grpc: error unmarshalling request",
    "grpc: failed to unmarshal the received message",
    "grpc: compressed flag set with identity or empty encoding",
    // gRPC C-core (Python, Ruby, C++).
    "Exception deserializing request!",
];

/// A request held whole: its path, whether it named an encoding, and its body's data.
pub(super) struct Whole<'a> {
    pub path: &'a str,
    pub encoded: bool,
    pub data: &'a [Bytes],
}

/// Whether `answer` (a trailers-only answer's headers, or trailers) is a framework's
/// INTERNAL for a request that did not decode: `request` (held whole), when there is one
/// and a contract to read it by, indeed does not decode as the method's input.
pub(super) fn callers_doing(
    answer: &http::HeaderMap,
    request: Option<&Whole<'_>>,
    contract: Option<&Contract>,
) -> bool {
    said_so(answer)
        && match (request, contract) {
            (Some(request), Some(contract)) => does_not_decode(&contract.pool, request),
            _ => true,
        }
}

/// Whether `headers` say INTERNAL in the words a gRPC framework uses for a request it
/// could not decode.
fn said_so(headers: &http::HeaderMap) -> bool {
    if headers.get("grpc-status").map(http::HeaderValue::as_bytes) != Some(b"13") {
        return false;
    }
    // Decoded as the caller reads it (grpc-message is percent-encoded).
    tonic::Status::from_header_map(headers).is_some_and(|s| SAID.iter().any(|said| s.message().starts_with(said)))
}

/// Whether `request` is not a method input of `pool` in gRPC's framing: no message, one
/// cut short, one flagged compressed without an encoding named, or one that does not
/// decode. A method the contract does not know, or a message compressed as named, cannot
/// be told: it counts as decoding.
fn does_not_decode(pool: &DescriptorPool, request: &Whole<'_>) -> bool {
    let Some((service, method)) = request.path.strip_prefix('/').and_then(|p| p.split_once('/')) else {
        return false;
    };
    let Some(input) = pool.get_service_by_name(service).and_then(|s| s.methods().find(|m| m.name() == method)) else {
        return false;
    };
    let input = input.input();
    let mut body: Vec<u8> = Vec::with_capacity(request.data.iter().map(Bytes::len).sum());
    for d in request.data {
        body.extend_from_slice(d);
    }
    let mut rest = &body[..];
    if rest.is_empty() {
        return true;
    }
    while !rest.is_empty() {
        if rest.len() < 5 {
            return true;
        }
        let compressed = rest.get_u8();
        let len = rest.get_u32() as usize;
        if rest.len() < len {
            return true;
        }
        let (message, after) = rest.split_at(len);
        match compressed {
            0 => {
                if prost_reflect::DynamicMessage::decode(input.clone(), message).is_err() {
                    return true;
                }
            }
            1 if request.encoded => return false,
            _ => return true,
        }
        rest = after;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(code: tonic::Code, message: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        tonic::Status::new(code, message).add_header(&mut headers).unwrap();
        headers
    }

    fn contract() -> Contract {
        let dir = tempfile::tempdir().unwrap();
        let proto = "syntax = \"proto3\";\npackage t.v1;\nmessage Text { string text = 1; }\n\
                     service T { rpc Echo(Text) returns (Text); }\n";
        std::fs::write(dir.path().join("t.proto"), proto).unwrap();
        let set = protox::compile(["t.proto"], [dir.path()]).unwrap();
        let bytes = prost::Message::encode_to_vec(&set);
        Contract {
            pool: DescriptorPool::decode(bytes.as_slice()).unwrap(),
            services: vec!["t.v1.T".into()],
            descriptor_set: bytes,
        }
    }

    fn framed(flag: u8, message: &[u8]) -> Bytes {
        let mut b = vec![flag];
        b.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
        b.extend_from_slice(message);
        Bytes::from(b)
    }

    fn whole(data: &[Bytes]) -> Whole<'_> {
        Whole { path: "/t.v1.T/Echo", encoded: false, data }
    }

    #[test]
    fn internal_in_a_frameworks_words_for_a_request_that_does_not_decode_is_the_callers_doing() {
        let c = contract();
        let said = answer(tonic::Code::Internal, "failed to decode Protobuf message: invalid varint");
        let garbage = [framed(0, b"\xff\xff\xff")];
        assert!(callers_doing(&said, Some(&whole(&garbage)), Some(&c)));
        assert!(callers_doing(&said, Some(&whole(&[framed(0, b"\x0a\x05hi")])), Some(&c)), "cut short");
        assert!(callers_doing(&said, Some(&whole(&[])), Some(&c)), "no message");
        assert!(callers_doing(&said, Some(&whole(&[framed(1, b"\x0a\x02hi")])), Some(&c)), "compressed, no encoding");
        let go = answer(tonic::Code::Internal, "grpc: error unmarshalling request: unexpected EOF");
        assert!(callers_doing(&go, Some(&whole(&garbage)), Some(&c)));
    }

    #[test]
    fn the_same_words_of_a_request_that_decodes_are_the_plugins_own_failure() {
        // A plugin passing on a downstream plugin's decode error, say.
        let c = contract();
        let said = answer(tonic::Code::Internal, "failed to decode Protobuf message: invalid wire type");
        let good = [framed(0, b"\x0a\x02hi")];
        assert!(!callers_doing(&said, Some(&whole(&good)), Some(&c)));
        // Other words, or another code: the plugin's.
        let garbage = [framed(0, b"\xff\xff\xff")];
        let db = answer(tonic::Code::Internal, "database unreachable");
        assert!(!callers_doing(&db, Some(&whole(&garbage)), Some(&c)));
        assert!(!callers_doing(&db, None, None));
        let unknown = answer(tonic::Code::Unknown, "failed to decode Protobuf message");
        assert!(!callers_doing(&unknown, Some(&whole(&garbage)), Some(&c)));
        let elsewhere = Whole { path: "/t.v1.Other/Echo", encoded: false, data: &garbage };
        assert!(!callers_doing(&said, Some(&elsewhere), Some(&c)), "a method the contract does not know");
        let named = Whole { path: "/t.v1.T/Echo", encoded: true, data: &[framed(1, b"\x1f\x8b")] };
        assert!(!callers_doing(&said, Some(&named), Some(&c)), "compressed as named: not checked");
    }

    #[test]
    fn without_a_request_held_whole_or_a_contract_the_words_decide() {
        // A caller can always send its request in parts: it may not open the circuit so.
        let said = answer(tonic::Code::Internal, "failed to decode Protobuf message: invalid varint");
        assert!(callers_doing(&said, None, Some(&contract())));
        assert!(callers_doing(&said, Some(&whole(&[framed(0, b"\xff")])), None), "no contract declared");
    }
}
