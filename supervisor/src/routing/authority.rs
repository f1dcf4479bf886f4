//! Repairs the `:authority` that gRPC C-core clients (Python `grpcio`, Ruby,
//! PHP, C++) send on `unix:` targets: the %-encoded socket path, which the
//! h2 crate refuses (`RST_STREAM` PROTOCOL_ERROR on every call) and offers
//! no setting to accept.
//!
//! A thin layer between the socket and h2, on the bytes h2 reads: it looks
//! at the first header block of a connection. When its `:authority` parses,
//! the layer steps aside for good and costs nothing more. When it does not,
//! the connection is one of those clients, and every header block on it is
//! decoded (HPACK, mirroring the client's dynamic table) and encoded again
//! with `:authority: localhost`, what C-core itself sent before 1.57. Every
//! other frame passes unchanged.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE_LEN: usize = 24;
const FRAME_HEAD: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// h2's SETTINGS_MAX_FRAME_SIZE, which the gateway leaves at the default.
const MAX_FRAME: usize = 16_384;
/// HPACK's default table size; neither side of this layer changes it.
const TABLE_SIZE: usize = 4096;
/// Bounds on a header block, encoded and decoded: far above what gRPC
/// sends, far below what would cost memory (an HPACK "bomb" repeats table
/// entries by one-byte references).
const MAX_BLOCK: usize = 64 << 10;
const MAX_DECODED: usize = 256 << 10;
/// Frames a header block may come in: a block within [`MAX_BLOCK`] needs no more than
/// a few, and each frame is kept while the first block is undecided, so empty
/// CONTINUATION frames would otherwise grow it without bound (h2's own bound on them
/// never sees the frames this layer holds back).
const MAX_BLOCK_FRAMES: usize = 64;
/// What replaces an `:authority` that is not one.
const LOCALHOST: &[u8] = b"localhost";

/// Reads through `io`, repairing header blocks when the client needs it.
pub struct Repair<IO> {
    io: IO,
    /// `None` once the connection is known not to need repair.
    parse: Option<Box<Parse>>,
}

impl<IO> Repair<IO> {
    pub fn new(io: IO) -> Self {
        Self { io, parse: Some(Box::default()) }
    }
}

#[derive(Default)]
struct Parse {
    /// Read from the socket, not yet looked at.
    input: BytesMut,
    /// Looked at, ready for h2.
    output: BytesMut,
    preface_seen: usize,
    /// Bytes of the current frame passed through unchanged.
    passing_frame: usize,
    block: Option<Block>,
    /// Set once a header block needed repair: every later block is redone.
    codec: Option<Codec>,
    /// The first block needed no repair: hand over what is buffered, then
    /// step aside.
    passing: bool,
    /// Mirrors the client's table until the first block is decided.
    first: Option<loona_hpack::Decoder<'static>>,
}

struct Codec {
    decoder: loona_hpack::Decoder<'static>,
    encoder: loona_hpack::Encoder<'static>,
}

/// A header block being gathered from HEADERS and CONTINUATION frames.
struct Block {
    stream: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
    fragment: BytesMut,
    /// The frames as received, while the first block is undecided.
    raw: BytesMut,
    /// The frames it came in so far.
    frames: usize,
}

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

fn decoder() -> loona_hpack::Decoder<'static> {
    let mut d = loona_hpack::Decoder::new();
    d.set_max_allowed_table_size(TABLE_SIZE);
    d
}

impl Parse {
    /// Moves what can be decided from `input` to `output`.
    fn process(&mut self) -> io::Result<()> {
        loop {
            if self.passing {
                self.output.unsplit(self.input.split());
                return Ok(());
            }
            if self.preface_seen < PREFACE_LEN {
                let n = (PREFACE_LEN - self.preface_seen).min(self.input.len());
                self.output.unsplit(self.input.split_to(n));
                self.preface_seen += n;
                if self.preface_seen < PREFACE_LEN {
                    return Ok(());
                }
                continue;
            }
            if self.passing_frame > 0 {
                let n = self.passing_frame.min(self.input.len());
                if n == 0 {
                    return Ok(());
                }
                self.output.unsplit(self.input.split_to(n));
                self.passing_frame -= n;
                continue;
            }
            if self.input.len() < FRAME_HEAD {
                return Ok(());
            }
            let len =
                (usize::from(self.input[0]) << 16) | (usize::from(self.input[1]) << 8) | usize::from(self.input[2]);
            let kind = self.input[3];
            if kind != HEADERS && kind != CONTINUATION {
                if self.block.is_some() {
                    return Err(invalid("a header block was interrupted by another frame"));
                }
                self.output.unsplit(self.input.split_to(FRAME_HEAD));
                self.passing_frame = len;
                continue;
            }
            if len > MAX_FRAME {
                return Err(invalid(format!("a {len}-byte header frame exceeds the {MAX_FRAME}-byte frame size")));
            }
            if self.input.len() < FRAME_HEAD + len {
                self.input.reserve(FRAME_HEAD + len - self.input.len());
                return Ok(());
            }
            let frame = self.input.split_to(FRAME_HEAD + len);
            self.header_frame(frame)?;
        }
    }

    fn header_frame(&mut self, frame: BytesMut) -> io::Result<()> {
        let (kind, flags) = (frame[3], frame[4]);
        let stream = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let mut payload = &frame[FRAME_HEAD..];
        if kind == HEADERS {
            if self.block.is_some() {
                return Err(invalid("a header block was interrupted by another HEADERS frame"));
            }
            if flags & PADDED != 0 {
                let (&pad, rest) = payload.split_first().ok_or_else(|| invalid("padded HEADERS without padding"))?;
                let end =
                    rest.len().checked_sub(usize::from(pad)).ok_or_else(|| invalid("padding exceeds the frame"))?;
                payload = &rest[..end];
            }
            let priority = if flags & PRIORITY != 0 {
                let (p, rest) = payload.split_at_checked(5).ok_or_else(|| invalid("short PRIORITY fields"))?;
                payload = rest;
                Some([p[0], p[1], p[2], p[3], p[4]])
            } else {
                None
            };
            self.block = Some(Block {
                stream,
                end_stream: flags & END_STREAM != 0,
                priority,
                fragment: BytesMut::from(payload),
                raw: BytesMut::new(),
                frames: 0,
            });
        }
        let block = self.block.as_mut().ok_or_else(|| invalid("CONTINUATION without a header block"))?;
        if block.stream != stream {
            return Err(invalid("CONTINUATION on another stream"));
        }
        if kind == CONTINUATION {
            block.fragment.extend_from_slice(payload);
        }
        block.frames += 1;
        if block.frames > MAX_BLOCK_FRAMES {
            return Err(invalid(format!("a header block in more than {MAX_BLOCK_FRAMES} frames")));
        }
        if block.fragment.len() > MAX_BLOCK {
            return Err(invalid(format!("a header block over {MAX_BLOCK} bytes")));
        }
        if self.codec.is_none() {
            block.raw.unsplit(frame);
        }
        if flags & END_HEADERS != 0 {
            let block = self.block.take().ok_or_else(|| invalid("no header block"))?;
            self.end_of_block(block)?;
        }
        Ok(())
    }

    fn end_of_block(&mut self, block: Block) -> io::Result<()> {
        let table = match &mut self.codec {
            Some(codec) => &mut codec.decoder,
            None => self.first.get_or_insert_with(decoder),
        };
        let mut fields = decode(table, &block.fragment)?;
        let mut repaired = false;
        for (name, value) in &mut fields {
            if name.as_slice() == b":authority" && http::uri::Authority::try_from(value.as_slice()).is_err() {
                *value = LOCALHOST.to_vec();
                repaired = true;
            }
        }
        let codec = match &mut self.codec {
            Some(codec) => codec,
            None if !repaired => {
                self.output.unsplit(block.raw);
                self.passing = true;
                self.first = None;
                return Ok(());
            }
            None => {
                tracing::debug!(stream = block.stream, "repairing the :authority of a C-core gRPC client");
                let decoder = self.first.take().unwrap_or_else(decoder);
                self.codec.insert(Codec { decoder, encoder: loona_hpack::Encoder::new() })
            }
        };
        let encoded = codec.encoder.encode(fields.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        write_block(&mut self.output, &block, &encoded);
        Ok(())
    }
}

fn decode(decoder: &mut loona_hpack::Decoder<'static>, fragment: &[u8]) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut fields = Vec::new();
    let mut size = 0usize;
    decoder
        .decode_with_cb(fragment, |name, value| {
            size = size.saturating_add(name.len() + value.len() + 32);
            if size <= MAX_DECODED {
                fields.push((name.into_owned(), value.into_owned()));
            }
        })
        .map_err(|e| invalid(format!("header block does not decode: {e}")))?;
    if size > MAX_DECODED {
        return Err(invalid(format!("a header list over {MAX_DECODED} bytes")));
    }
    Ok(fields)
}

/// Writes `encoded` as HEADERS and as many CONTINUATION frames as needed.
fn write_block(out: &mut BytesMut, block: &Block, encoded: &[u8]) {
    let prio = block.priority.map_or(0, |_| 5);
    let first = encoded.len().min(MAX_FRAME - prio);
    let (head, mut rest) = encoded.split_at(first);
    let mut flags = if block.end_stream { END_STREAM } else { 0 };
    if block.priority.is_some() {
        flags |= PRIORITY;
    }
    if rest.is_empty() {
        flags |= END_HEADERS;
    }
    frame_head(out, head.len() + prio, HEADERS, flags, block.stream);
    if let Some(p) = block.priority {
        out.put_slice(&p);
    }
    out.put_slice(head);
    while !rest.is_empty() {
        let n = rest.len().min(MAX_FRAME);
        let flags = if n == rest.len() { END_HEADERS } else { 0 };
        frame_head(out, n, CONTINUATION, flags, block.stream);
        out.put_slice(&rest[..n]);
        rest.advance(n);
    }
}

fn frame_head(out: &mut BytesMut, len: usize, kind: u8, flags: u8, stream: u32) {
    out.put_uint(len as u64, 3);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32(stream);
}

impl<IO: AsyncRead + Unpin> AsyncRead for Repair<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            let Some(parse) = this.parse.as_mut() else {
                return Pin::new(&mut this.io).poll_read(cx, buf);
            };
            if !parse.output.is_empty() {
                let n = parse.output.len().min(buf.remaining());
                buf.put_slice(&parse.output.split_to(n));
                if parse.passing && parse.output.is_empty() && parse.input.is_empty() {
                    this.parse = None;
                }
                return Poll::Ready(Ok(()));
            }
            if parse.passing {
                this.parse = None;
                continue;
            }
            parse.input.reserve(8 << 10);
            let before = parse.input.len();
            ready!(read_into(&mut this.io, cx, &mut parse.input))?;
            if parse.input.len() == before {
                // End of stream: whatever is left is incomplete; h2 sees EOF.
                return Poll::Ready(Ok(()));
            }
            parse.process()?;
        }
    }
}

/// Reads what the socket has into the spare capacity of `dst`.
fn read_into<IO: AsyncRead + Unpin>(io: &mut IO, cx: &mut Context<'_>, dst: &mut BytesMut) -> Poll<io::Result<()>> {
    let spare = dst.spare_capacity_mut();
    let mut rb = ReadBuf::uninit(spare);
    ready!(Pin::new(io).poll_read(cx, &mut rb))?;
    let n = rb.filled().len();
    // SAFETY: `poll_read` initialised the first `n` bytes of the spare capacity.
    unsafe { dst.set_len(dst.len() + n) };
    Poll::Ready(Ok(()))
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Repair<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use tokio::io::AsyncWriteExt;

    use super::*;

    const MAGIC: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    /// A block of `stream` that ends it, as [`write_block`] wants it described.
    fn ending(stream: u32) -> Block {
        Block { stream, end_stream: true, priority: None, fragment: BytesMut::new(), raw: BytesMut::new(), frames: 0 }
    }

    /// What a client writes: the preface, empty SETTINGS, then one HEADERS
    /// frame per request, from one HPACK encoder (so later requests refer
    /// to table entries the first one added).
    fn client_bytes(authorities: &[&str]) -> Vec<u8> {
        let mut out = BytesMut::from(MAGIC);
        frame_head(&mut out, 0, 0x4, 0, 0);
        let mut encoder = loona_hpack::Encoder::new();
        for (i, authority) in authorities.iter().enumerate() {
            let fields: [(&[u8], &[u8]); 5] = [
                (b":method", b"POST"),
                (b":scheme", b"http"),
                (b":path", b"/echo.v1.Echo/Echo"),
                (b":authority", authority.as_bytes()),
                (b"content-type", b"application/grpc"),
            ];
            let block = encoder.encode(fields);
            let stream = 1 + 2 * i as u32;
            write_block(&mut out, &ending(stream), &block);
        }
        out.to_vec()
    }

    /// The authorities h2 accepted the requests with.
    async fn served(authorities: &[&str]) -> Vec<String> {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        client.write_all(&client_bytes(authorities)).await.unwrap();
        let mut h2 = h2::server::handshake(Repair::new(server)).await.unwrap();
        let mut seen = Vec::new();
        for _ in authorities {
            let (req, _respond) = h2.accept().await.expect("a request").expect("accepted");
            assert_eq!(req.uri().path(), "/echo.v1.Echo/Echo");
            seen.push(req.uri().authority().map(|a| a.to_string()).unwrap_or_default());
        }
        seen
    }

    #[tokio::test]
    async fn a_percent_encoded_socket_path_becomes_localhost_on_every_request() {
        let path = "%2Frun%2Fplugin-supervisor%2Fgateway.sock";
        let seen = served(&[path, path, path]).await;
        assert_eq!(seen, ["localhost", "localhost", "localhost"]);
    }

    #[tokio::test]
    async fn a_valid_authority_is_left_alone() {
        let seen = served(&["gateway:50051", "gateway:50051"]).await;
        assert_eq!(seen, ["gateway:50051", "gateway:50051"]);
    }

    #[test]
    fn the_layer_steps_aside_after_a_valid_first_block_and_not_after_a_repaired_one() {
        for (authority, aside) in [("localhost", true), ("%2Ftmp%2Fs.sock", false), ("/tmp/s.sock", false)] {
            let mut p = Parse { input: BytesMut::from(&client_bytes(&[authority])[..]), ..Parse::default() };
            p.process().unwrap();
            assert_eq!(p.passing, aside, "{authority}");
            assert_eq!(p.codec.is_some(), !aside, "{authority}");
        }
    }

    #[test]
    fn a_block_split_over_continuation_frames_is_reassembled() {
        let long = format!("/{}", "x".repeat(40_000));
        let mut encoder = loona_hpack::Encoder::new();
        let encoded = encoder.encode([(&b":authority"[..], &b"%2Fs"[..]), (b":path", long.as_bytes())]);
        let mut input = BytesMut::from(MAGIC);
        let b = ending(1);
        write_block(&mut input, &b, &encoded);
        let mut p = Parse { input, ..Parse::default() };
        p.process().unwrap();
        // Re-encoded, and split again within the frame size.
        let out = p.output.split_off(PREFACE_LEN);
        let mut decoder = decoder();
        let mut fragment = Vec::new();
        let mut rest = &out[..];
        while !rest.is_empty() {
            let len = (usize::from(rest[0]) << 16) | (usize::from(rest[1]) << 8) | usize::from(rest[2]);
            assert!(len <= MAX_FRAME);
            fragment.extend_from_slice(&rest[FRAME_HEAD..FRAME_HEAD + len]);
            rest = &rest[FRAME_HEAD + len..];
        }
        let fields = decode(&mut decoder, &fragment).unwrap();
        assert_eq!(fields[0], (b":authority".to_vec(), b"localhost".to_vec()));
        assert_eq!(fields[1].1, long.as_bytes());
    }

    #[test]
    fn bombs_and_broken_frames_end_the_connection_with_a_reason() {
        // One big entry referenced over and over decodes to far more than
        // the block's bytes.
        let mut encoder = loona_hpack::Encoder::new();
        let big = "v".repeat(3000);
        let mut block = encoder.encode([(&b":authority"[..], &b"%2F"[..]), (b"x-big", big.as_bytes())]);
        block.extend(std::iter::repeat_n(0x80 | 62, 200));
        let mut input = BytesMut::from(MAGIC);
        let b = ending(1);
        write_block(&mut input, &b, &block);
        let err = Parse { input, ..Parse::default() }.process().unwrap_err();
        assert!(err.to_string().contains("header list over"), "{err}");

        let mut input = BytesMut::from(MAGIC);
        frame_head(&mut input, 3, CONTINUATION, END_HEADERS, 1);
        input.put_slice(b"abc");
        let err = Parse { input, ..Parse::default() }.process().unwrap_err();
        assert_eq!(err.to_string(), "CONTINUATION without a header block");
    }

    #[test]
    fn a_header_block_of_endless_empty_continuation_frames_ends_the_connection_holding_little() {
        // A HEADERS frame that does not end its block, then empty CONTINUATION frames: each
        // was kept while the first block was undecided (600 MiB from one caller in 7 s).
        let mut input = BytesMut::from(MAGIC);
        frame_head(&mut input, 0, HEADERS, 0, 1);
        for _ in 0..100_000 {
            frame_head(&mut input, 0, CONTINUATION, 0, 1);
        }
        let mut p = Parse { input, ..Parse::default() };
        let err = p.process().unwrap_err();
        assert_eq!(err.to_string(), format!("a header block in more than {MAX_BLOCK_FRAMES} frames"));
        let held = p.block.as_ref().map_or(0, |b| b.raw.len() + b.fragment.len());
        assert!(held <= (MAX_BLOCK_FRAMES + 1) * FRAME_HEAD, "{held} bytes held");
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..2048), headers in any::<bool>()) {
            let mut input = BytesMut::from(MAGIC);
            if headers {
                // Steer into the header path: a HEADERS frame of the rest.
                frame_head(&mut input, data.len(), HEADERS, data.first().copied().unwrap_or(0), 1);
            }
            input.extend_from_slice(&data);
            let _ = Parse { input, ..Parse::default() }.process();
        }
    }
}
