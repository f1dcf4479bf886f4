//! The buffers each plugin instance's two HTTP/2 connections start with: the
//! supervisor's client on fd 3 and its server for the plugin's host channel on
//! fd 4. A daemon holds two per instance, a thousand instances hold two
//! thousand, and most sit idle, so what each starts with is most of what an
//! idle instance costs the daemon.
//!
//! h2 starts every connection with a 16 KiB write buffer, an 8 KiB read
//! buffer and a 4 KiB HPACK scratch buffer, and mostly in memory the daemon
//! touched before (it allocated and freed while starting the instance), so
//! resident. The settings below are the vendored h2's (vendor/README.md).
//! Measured with `bench --only scale --named` (1,000 instances, release, the
//! log stream's codec starting small too, `plugin_proto::codec`): RSS 93 MB with
//! these settings; 106 MB with fd 4's alone; 118 MB with h2's defaults. Each
//! buffer grows as traffic needs; the write and HPACK buffers keep what they
//! grew to, the read buffer goes back to its starting size whenever it empties.

use plugin_proto::transport::H2Channel;

/// Decoded header bytes a plugin's answer may carry in its headers, and again in its
/// trailers. h2 lets a peer send 16 MiB, which the supervisor decodes and holds for each
/// call in flight, in its own memory and not the plugin's; a caller's request may carry
/// 16 KiB (`routing::server`), and this leaves room for a long status message.
pub(crate) const MAX_ANSWER_HEADERS: u32 = 64 << 10;

/// The client on fd 3, which carries every call to the instance. Its buffers stay
/// large enough that a crowd of small calls' frames (16 callers' are about 5 KiB)
/// leave in one write and arrive in one read: with a 1 KiB read buffer, which tokio-util
/// gives back to its first size whenever it empties, the daemon spent 30.5 µs of CPU
/// per gateway call at 16 callers against 27.5 µs at 8 KiB (`bench --only gateway`).
pub(crate) fn plugin_connection() -> h2::client::Builder {
    let mut builder = H2Channel::builder();
    builder
        .max_header_list_size(MAX_ANSWER_HEADERS)
        .initial_read_buffer_capacity(8 * 1024)
        .initial_write_buffer_capacity(8 * 1024)
        .initial_hpack_decode_capacity(0);
    builder
}

/// The server on fd 4: the plugin's log stream and its calls out, rarely busy.
pub(crate) fn host_connection(builder: &mut h2::server::Builder) -> &mut h2::server::Builder {
    builder.initial_read_buffer_capacity(1024).initial_write_buffer_capacity(1024).initial_hpack_decode_capacity(0)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;

    /// What one side received: a header's value and the body.
    async fn received(mut body: h2::RecvStream) -> Vec<u8> {
        let mut data = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
            data.extend_from_slice(&chunk);
        }
        data
    }

    /// Carries a request and its answer, each with a header past one frame (sent as
    /// CONTINUATION frames) and a body many times the buffers, over a socketpair
    /// between `client` and `server`; panics naming what did not arrive whole.
    async fn round_trip(client: h2::client::Builder, mut server: h2::server::Builder) {
        let header = "h".repeat(40 * 1024);
        let body = Bytes::from((0..60 * 1024).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
        let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
        let (h, b) = (header.clone(), body.clone());
        let served = tokio::spawn(async move {
            let mut conn = server.max_header_list_size(1 << 20).handshake::<_, Bytes>(theirs).await.unwrap();
            let (req, mut respond) = conn.accept().await.unwrap().unwrap();
            tokio::spawn(async move { while conn.accept().await.is_some() {} });
            let (parts, recv) = req.into_parts();
            let got = (parts.headers["big"].to_str().unwrap().len(), received(recv).await);
            let answer = http::Response::builder().header("big", h).body(()).unwrap();
            let mut send = respond.send_response(answer, false).unwrap();
            send.reserve_capacity(b.len());
            send.send_data(b, true).unwrap();
            got
        });
        let mut client = client;
        let (mut client, conn) = client.max_header_list_size(1 << 20).handshake::<_, Bytes>(ours).await.unwrap();
        tokio::spawn(conn);
        let request = http::Request::post("http://plugin/a.A/M").header("big", header.clone()).body(()).unwrap();
        let (response, mut send) = client.send_request(request, false).unwrap();
        send.reserve_capacity(body.len());
        send.send_data(body.clone(), true).unwrap();
        let response = tokio::time::timeout(Duration::from_secs(5), response).await.expect("no answer").unwrap();
        let (parts, recv) = response.into_parts();
        assert_eq!(parts.headers["big"].len(), header.len(), "the answer's header");
        assert_eq!(received(recv).await, body, "the answer's body");
        let (header_len, request_body) = served.await.unwrap();
        assert_eq!(header_len, header.len(), "the request's header");
        assert_eq!(request_body, body, "the request's body");
    }

    /// The connections as the supervisor makes them: each buffer starts small and grows.
    #[tokio::test]
    async fn connections_with_small_buffers_carry_headers_and_bodies_larger_than_them() {
        let mut server = h2::server::Builder::new();
        host_connection(&mut server);
        round_trip(plugin_connection(), server).await;
    }

    /// What a plugin's answer of headers (or trailers) `size` bytes long comes to through
    /// the supervisor's client: its headers' size, or the error.
    async fn answer_with_headers(size: usize, trailers: bool) -> Result<usize, String> {
        let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
        tokio::spawn(async move {
            let mut conn = h2::server::handshake(theirs).await.unwrap();
            while let Some(Ok((_, mut respond))) = conn.accept().await {
                let big = http::HeaderValue::from_str(&"h".repeat(size)).unwrap();
                if trailers {
                    let mut send = respond.send_response(http::Response::new(()), false).unwrap();
                    let mut t = http::HeaderMap::new();
                    t.insert("grpc-message", big);
                    let _ = send.send_trailers(t);
                } else {
                    let answer = http::Response::builder().header("big", big).body(()).unwrap();
                    let _ = respond.send_response(answer, true);
                }
            }
        });
        let (mut client, conn) = plugin_connection().handshake::<_, Bytes>(ours).await.unwrap();
        tokio::spawn(conn);
        let request = http::Request::post("http://plugin/a.A/M").body(()).unwrap();
        let (response, _send) = client.send_request(request, true).unwrap();
        let response = tokio::time::timeout(Duration::from_secs(5), response).await.expect("no answer");
        let (parts, mut body) = response.map_err(|e| e.to_string())?.into_parts();
        if trailers {
            let t = tokio::time::timeout(Duration::from_secs(5), body.trailers()).await.expect("no trailers");
            return t
                .map_err(|e| e.to_string())
                .map(|t| t.and_then(|t| t.get("grpc-message").map(http::HeaderValue::len)).unwrap_or(0));
        }
        Ok(parts.headers.get("big").map_or(0, http::HeaderValue::len))
    }

    /// A plugin answering every call with megabytes of headers had the supervisor decode
    /// and hold them, per call in flight, up to h2's default of 16 MiB each: memory of the
    /// supervisor's, not the plugin's. Bounded as a caller's request headers are bounded
    /// by the gateway, with room for a long status message.
    #[tokio::test]
    async fn a_plugins_answer_headers_and_trailers_are_bounded() {
        for trailers in [false, true] {
            assert_eq!(answer_with_headers(60 << 10, trailers).await, Ok(60 << 10), "trailers: {trailers}");
            // Megabytes: the connection ends at the header block's fourth frame, before
            // any of it is held (a plugin doing this is restarted; its calls fail).
            let flood = answer_with_headers(2 << 20, trailers).await;
            assert_eq!(
                flood,
                Err("connection error detected: detected excessive load generating behavior \
                     (b\"too_many_continuations\")"
                    .into()),
                "trailers: {trailers}"
            );
        }
        // Just over: the call alone fails (its headers), or the field over the bound is
        // dropped (its trailers: the gateway then ends the answer INTERNAL when it was
        // the status).
        let over = answer_with_headers(80 << 10, false).await;
        assert_eq!(over, Err("stream error detected: unspecific protocol error detected".into()));
        assert_eq!(answer_with_headers(80 << 10, true).await, Ok(0), "the trailer over the bound is dropped");
    }

    /// Buffers asked to start at nothing still work: the write buffer is raised to what
    /// one frame needs, the others grow from empty.
    #[tokio::test]
    async fn buffers_asked_to_start_empty_still_carry_everything() {
        let mut client = h2::client::Builder::new();
        client.initial_read_buffer_capacity(0).initial_write_buffer_capacity(0).initial_hpack_decode_capacity(0);
        let mut server = h2::server::Builder::new();
        server.initial_read_buffer_capacity(0).initial_write_buffer_capacity(0).initial_hpack_decode_capacity(0);
        round_trip(client, server).await;
    }
}
