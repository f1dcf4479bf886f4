//! What a plugin's gRPC framework answers a request it cannot decode: INTERNAL, by
//! gRPC's own table of codes, yet the caller's doing. Told apart by the frameworks' words
//! (tonic and prost, grpc-go, gRPC C-core), so that a caller sending bytes that do not
//! decode can neither open the circuit for every other caller nor fail a canary. A plugin
//! that says these words of its own failures only hides them from its own breaker.

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

/// Whether `headers` (an answer's trailers-only headers, or its trailers) say INTERNAL in
/// the words a gRPC framework uses for a request it could not decode.
pub(super) fn by_the_caller(headers: &http::HeaderMap) -> bool {
    if headers.get("grpc-status").map(http::HeaderValue::as_bytes) != Some(b"13") {
        return false;
    }
    // Decoded as the caller reads it (grpc-message is percent-encoded).
    tonic::Status::from_header_map(headers).is_some_and(|s| SAID.iter().any(|said| s.message().starts_with(said)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(code: tonic::Code, message: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        tonic::Status::new(code, message).add_header(&mut headers).unwrap();
        headers
    }

    #[test]
    fn internal_in_a_frameworks_words_for_a_request_it_could_not_decode_is_the_callers_doing() {
        let tonic = "failed to decode Protobuf message: invalid varint";
        assert!(by_the_caller(&answer(tonic::Code::Internal, tonic)));
        assert!(by_the_caller(&answer(tonic::Code::Internal, "grpc: error unmarshalling request: unexpected EOF")));
        assert!(by_the_caller(&answer(tonic::Code::Internal, "Exception deserializing request!")));
        // The plugin's own failures stay its own.
        assert!(!by_the_caller(&answer(tonic::Code::Internal, "database unreachable")));
        assert!(!by_the_caller(&answer(tonic::Code::Unknown, tonic)), "only INTERNAL is the frameworks' code for it");
        assert!(!by_the_caller(&http::HeaderMap::new()));
    }
}
