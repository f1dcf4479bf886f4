//! What a plugin's gRPC framework answers a request it cannot decode: INTERNAL, by
//! gRPC's own table of codes, yet the caller's doing, so that a caller sending bytes that
//! do not decode can neither open the circuit for every other caller nor fail a canary.
//!
//! Told apart by the frameworks' words (tonic and prost, grpc-go, gRPC C-core) and by the
//! request itself not decoding as the method's input in the contract the revision
//! declared: each call keeps cheap clones of the data it forwards, up to [`KEPT`]. The
//! words alone would hide a plugin's own failures (one passing on a downstream decode
//! error unchanged: Go's `return nil, err`, Rust's `?`); they decide alone only for a
//! request over [`KEPT`], or one not yet all forwarded, or a revision without a contract.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

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
    // tonic: a message compressed as named that does not decompress.
    "Error decompressing: ",
    // grpc-go.
    "grpc: error unmarshalling request",
    "grpc: failed to unmarshal the received message",
    "grpc: compressed flag set with identity or empty encoding",
    "grpc: failed to decompress the received message",
    // gRPC C-core (Python, Ruby, C++).
    "Exception deserializing request!",
];

/// The request data a call keeps to judge a decode failure by; past it the words alone
/// decide. Unary requests are far smaller; a caller could not make the plugin's own
/// failures its doing with a large request without sending one that does not decode.
pub(super) const KEPT: usize = 64 << 10;

/// What a call keeps of its request, to judge an INTERNAL answer by.
pub(super) struct Asked {
    /// The request's, a cheap clone (its parts are reference-counted bytes).
    uri: http::Uri,
    /// The encoding the request named for its compressed messages.
    encoding: Encoding,
    contract: Option<Arc<Contract>>,
    kept: Arc<Mutex<Kept>>,
}

/// The request's data as it went to the plugin: copied, since a clone of the bytes would
/// keep alive the whole read buffer of the caller's connection it was cut from, for as
/// long as the answer lasts.
#[derive(Default)]
struct Kept {
    data: Vec<u8>,
    /// All of it went.
    ended: bool,
    /// More than [`KEPT`]: none of it is kept.
    over: bool,
}

impl Kept {
    fn add(&mut self, data: &[u8]) {
        if self.over {
            return;
        }
        if self.data.len() + data.len() > KEPT {
            self.over = true;
            self.data = Vec::new();
        } else {
            self.data.extend_from_slice(data);
        }
    }
}

impl Asked {
    pub(super) fn new(req: &http::Request<tonic::body::Body>, contract: Option<Arc<Contract>>) -> Self {
        Asked { uri: req.uri().clone(), encoding: Encoding::of(req.headers()), contract, kept: Arc::default() }
    }

    /// The request's data, held whole already.
    pub(super) fn whole(self, data: &[Bytes]) -> Self {
        let mut kept = Kept { ended: true, ..Kept::default() };
        data.iter().for_each(|d| kept.add(d));
        Asked { kept: Arc::new(Mutex::new(kept)), ..self }
    }

    /// `body`, its data kept as it goes.
    pub(super) fn keeping(&self, body: tonic::body::Body) -> tonic::body::Body {
        tonic::body::Body::new(Keeping { inner: body, kept: self.kept.clone() })
    }

    /// Whether `answer` (a trailers-only answer's headers, or trailers) is a framework's
    /// INTERNAL for a request that did not decode: the request, when all of it was kept
    /// and the revision declared a contract, indeed does not decode as the method's input.
    pub(super) fn callers_doing(&self, answer: &http::HeaderMap) -> bool {
        if !said_so(answer) {
            return false;
        }
        let Some(contract) = &self.contract else { return true };
        // The request has gone whole by now, or the words decide: nobody else waits on it.
        let kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        if kept.over || !kept.ended {
            return true;
        }
        does_not_decode(&contract.pool, self.uri.path(), self.encoding, &kept.data)
    }
}

/// What a request's `grpc-encoding` names for its compressed messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Encoding {
    /// None (or `identity`): a message flagged compressed does not decode.
    Identity,
    /// Read here, up to [`KEPT`] decompressed.
    Gzip,
    /// Another (deflate, zstd): not read here, so the words decide, as past [`KEPT`].
    Other,
}

impl Encoding {
    fn of(headers: &http::HeaderMap) -> Self {
        match headers.get("grpc-encoding").map(http::HeaderValue::as_bytes) {
            None | Some(b"identity") => Encoding::Identity,
            Some(b"gzip") => Encoding::Gzip,
            Some(_) => Encoding::Other,
        }
    }
}

/// A gzip member decompressed, or `None` when it does not decompress or comes to more
/// than `limit` (a small request may expand to much more: it is not expanded past that).
fn gunzipped(message: &[u8], limit: usize) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    let mut reader = flate2::read::GzDecoder::new(message).take(limit as u64 + 1);
    reader.read_to_end(&mut out).ok()?;
    (out.len() <= limit).then_some(out)
}

/// A request body whose data is kept as it is read.
struct Keeping {
    inner: tonic::body::Body,
    kept: Arc<Mutex<Kept>>,
}

impl http_body::Body for Keeping {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(next) = &polled {
            let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
            match next {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        kept.add(data);
                    }
                    kept.ended = frame.is_trailers() || self.inner.is_end_stream();
                }
                None => kept.ended = true,
                Some(Err(_)) => {}
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
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

/// Whether `data` is not a method input of `pool` in gRPC's framing: no message, one
/// cut short, one flagged compressed without an encoding named, or one that does not
/// decode (decompressed first, when gzip). A method the contract does not know cannot be
/// told: it counts as decoding. A message in another encoding, or one gzip expands past
/// [`KEPT`], is not read here: the words decide, as for a request over [`KEPT`] (it
/// counted as decoding, and so tiny compressed garbage opened a plugin's circuit for
/// every caller).
fn does_not_decode(pool: &DescriptorPool, path: &str, encoding: Encoding, body: &[u8]) -> bool {
    let Some((service, method)) = path.strip_prefix('/').and_then(|p| p.split_once('/')) else {
        return false;
    };
    let Some(input) = pool.get_service_by_name(service).and_then(|s| s.methods().find(|m| m.name() == method)) else {
        return false;
    };
    let input = input.input();
    let mut rest = body;
    let mut inflate_left = KEPT;
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
        let decodes = |message: &[u8]| prost_reflect::DynamicMessage::decode(input.clone(), message).is_ok();
        match (compressed, encoding) {
            (0, _) if !decodes(message) => return true,
            (0, _) => {}
            // One budget for the whole request, on the runtime's thread: many small members
            // each expanding to KEPT would otherwise cost a thousand times the request.
            (1, Encoding::Gzip) => match gunzipped(message, inflate_left) {
                Some(plain) if decodes(&plain) => inflate_left -= plain.len(),
                _ => return true,
            },
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

    fn asked(path: &str, encoded: bool, contract: Option<Contract>) -> Asked {
        let mut req = http::Request::post(path).body(tonic::body::Body::empty()).unwrap();
        if encoded {
            req.headers_mut().insert("grpc-encoding", http::HeaderValue::from_static("gzip"));
        }
        Asked::new(&req, contract.map(Arc::new))
    }

    /// Whether `answer` is the caller's doing for a request of `data`, held whole.
    fn whole(answer: &http::HeaderMap, data: &[Bytes]) -> bool {
        asked("/t.v1.T/Echo", false, Some(contract())).whole(data).callers_doing(answer)
    }

    #[test]
    fn internal_in_a_frameworks_words_for_a_request_that_does_not_decode_is_the_callers_doing() {
        let said = answer(tonic::Code::Internal, "failed to decode Protobuf message: invalid varint");
        let garbage = [framed(0, b"\xff\xff\xff")];
        assert!(whole(&said, &garbage));
        assert!(whole(&said, &[framed(0, b"\x0a\x05hi")]), "cut short");
        assert!(whole(&said, &[]), "no message");
        assert!(whole(&said, &[framed(1, b"\x0a\x02hi")]), "compressed, no encoding");
        let go = answer(tonic::Code::Internal, "grpc: error unmarshalling request: unexpected EOF");
        assert!(whole(&go, &garbage));
    }

    #[test]
    fn the_same_words_of_a_request_that_decodes_are_the_plugins_own_failure() {
        // A plugin passing on a downstream plugin's decode error, say.
        let said = answer(tonic::Code::Internal, "failed to decode Protobuf message: invalid wire type");
        assert!(!whole(&said, &[framed(0, b"\x0a\x02hi")]));
        // Other words, or another code: the plugin's.
        let garbage = [framed(0, b"\xff\xff\xff")];
        assert!(!whole(&answer(tonic::Code::Internal, "database unreachable"), &garbage));
        assert!(!whole(&answer(tonic::Code::Unknown, "failed to decode Protobuf message"), &garbage));
        let elsewhere = asked("/t.v1.Other/Echo", false, Some(contract())).whole(&garbage);
        assert!(!elsewhere.callers_doing(&said), "a method the contract does not know");
        let named = asked("/t.v1.T/Echo", true, Some(contract())).whole(&[framed(1, &gzip(b"\x0a\x02hi"))]);
        assert!(!named.callers_doing(&said), "compressed as named, and it decodes once decompressed");
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(data).unwrap();
        z.finish().unwrap()
    }

    /// A request compressed as named is decompressed to be judged: a tiny gzipped
    /// garbage request, or one that does not decompress, opened the circuit for every
    /// caller, counted as the plugin's failure (tonic's words for it were not known).
    #[test]
    fn a_compressed_request_that_does_not_decode_or_decompress_is_the_callers_doing() {
        let said = answer(tonic::Code::Internal, "failed to decode Protobuf message: invalid wire type");
        let gzipped_garbage = asked("/t.v1.T/Echo", true, Some(contract())).whole(&[framed(1, &gzip(b"\xff\xff\xff"))]);
        assert!(gzipped_garbage.callers_doing(&said));
        let not_gzip = asked("/t.v1.T/Echo", true, Some(contract())).whole(&[framed(1, b"\x1f\x8b garbage")]);
        let tonic_said =
            answer(tonic::Code::Internal, "Error decompressing: invalid gzip header, while sending request");
        assert!(not_gzip.callers_doing(&tonic_said), "tonic's words");
        let go_said =
            answer(tonic::Code::Internal, "grpc: failed to decompress the received message: gzip: invalid header");
        assert!(not_gzip.callers_doing(&go_said), "grpc-go's words");
        // A bomb is not expanded past KEPT: the words decide, as for a large request.
        let bomb = asked("/t.v1.T/Echo", true, Some(contract())).whole(&[framed(1, &gzip(&vec![0u8; 4 * KEPT]))]);
        assert!(bomb.callers_doing(&said));
        // Nor are many members, each within it, past KEPT together. (Each decodes: an
        // unknown field of length-delimited bytes.)
        let mut field = vec![0x1a, 0x80, 0x80, 0x01];
        field.resize(4 + (16 << 10), 0);
        let member = framed(1, &gzip(&field));
        let many = asked("/t.v1.T/Echo", true, Some(contract())).whole(&vec![member.clone(); 8]);
        assert!(many.callers_doing(&said), "past the budget: the words decide");
        let few = asked("/t.v1.T/Echo", true, Some(contract())).whole(&vec![member; 3]);
        assert!(!few.callers_doing(&said), "within it, each decodes: the plugin's own failure");
    }

    #[tokio::test]
    async fn a_request_sent_in_parts_is_kept_as_it_goes_and_judged_once_all_of_it_went() {
        use http_body_util::BodyExt;
        let said = answer(tonic::Code::Internal, "failed to decode Protobuf message: invalid wire type");
        let sent = |parts: Vec<Bytes>| {
            let a = asked("/t.v1.T/Echo", false, Some(contract()));
            let frames = parts.into_iter().map(|b| Ok::<_, tonic::Status>(http_body::Frame::data(b)));
            let body = a.keeping(tonic::body::Body::new(http_body_util::StreamBody::new(futures_util::stream::iter(
                frames.collect::<Vec<_>>(),
            ))));
            (a, body)
        };
        // A request that decodes, in two parts: the plugin's own failure.
        let good = framed(0, b"\x0a\x02hi");
        let (a, body) = sent(vec![good.slice(..3), good.slice(3..)]);
        assert!(a.callers_doing(&said), "not all of it went yet: the words decide");
        body.collect().await.unwrap();
        assert!(!a.callers_doing(&said));
        // Garbage in parts: the caller's.
        let garbage = framed(0, b"\xff\xff\xff");
        let (a, body) = sent(vec![garbage.slice(..2), garbage.slice(2..)]);
        body.collect().await.unwrap();
        assert!(a.callers_doing(&said));
        // Past what is kept, the words decide.
        let big = framed(0, &vec![0x0a; KEPT]);
        let (a, body) = sent(vec![big]);
        body.collect().await.unwrap();
        assert!(a.callers_doing(&said));
    }

    #[test]
    fn without_a_contract_the_words_decide() {
        let said = answer(tonic::Code::Internal, "failed to decode Protobuf message: invalid varint");
        let a = asked("/t.v1.T/Echo", false, None).whole(&[framed(0, b"\x0a\x02hi")]);
        assert!(a.callers_doing(&said));
        assert!(!a.callers_doing(&answer(tonic::Code::Internal, "database unreachable")));
    }
}
