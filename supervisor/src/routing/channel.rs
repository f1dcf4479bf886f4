//! A channel to one plugin: each call goes to a ready instance (round
//! robin), and a plugin with none ready answers UNAVAILABLE naming its
//! state. Wrapped in the routing layers, this is what the gateway forwards
//! to and what embedded hosts get from `Supervisor::channel`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use http_body::Frame;
use http_body_util::{BodyExt, BodyStream, StreamBody};
use plugin_proto::transport::{ChannelError, ResponseBody};
use tonic::body::Body;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder};

use super::breaker::BreakerLayer;
use super::deadline::{DeadlineLayer, Expires};
use super::limit::{self, Refused};
use super::record::{RecordLayer, Source, local};
use super::size::SizeLayer;
use super::split::{Placed, SplitLayer, Target};
use super::undecodable::Asked;
use crate::instance::{Live, Plugin};
use crate::observe::metrics::Metrics;

/// A cloneable channel to a plugin, usable with any tonic-generated client:
/// `EchoClient::new(supervisor.channel("echo")?)`.
pub type Channel = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, Infallible>;

/// The innermost service: pick an instance, forward the request as is.
#[derive(Clone, Debug)]
pub struct PluginService {
    plugin: Arc<Plugin>,
}

impl Service<http::Request<Body>> for PluginService {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Readiness is per instance and decided per call.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let rev = req.extensions().get::<Target>().map_or_else(|| self.plugin.serving(), |t| t.0.clone());
        let plugin = self.plugin.clone();
        let until = req.extensions().get::<Expires>().map(|e| e.0);
        let placed = req.extensions().get::<Placed>().cloned();
        Box::pin(async move {
            let mut req = req;
            let asked = tokio::time::Instant::now();
            let (live, mut admitted) = match limit::admit(&plugin, &rev, None, until).await {
                Ok((live, admitted, number)) => {
                    // The call's outcome goes to the revision that answers it.
                    if let Some(placed) = &placed {
                        placed.set(number);
                    }
                    (live, admitted)
                }
                Err(Refused::NotReady) => {
                    let msg = format!("plugin {:?} is {}", plugin.name, plugin.describe_state());
                    return Ok(local(tonic::Status::unavailable(msg), Source::Supervisor));
                }
                Err(refused @ Refused::NotServing) => {
                    return Ok(local(refused.status(&plugin.name), Source::Supervisor));
                }
                // Shed, or its deadline passed in the queue: the plugin never saw it.
                Err(refused) => return Ok(local(refused.status(&plugin.name), Source::Limit)),
            };
            // A call that waited in the queue tells the plugin the time it has left.
            if let Some(until) = until
                && asked.elapsed() > QUEUED
            {
                super::deadline::tell_time_left(req.headers_mut(), until);
            }
            // A request held whole (every unary call) can be sent again, once, when the
            // instance never processed it: one of a revision being replaced refuses new
            // streams while it drains.
            let asked = Asked::new(&req, rev.contract.load_full());
            let (req, kept) = keep_whole(req);
            // What went to the plugin is kept, to tell whether the caller's request decoded
            // should the plugin say it did not.
            let (req, asked) = match &kept {
                Some(kept) => (req, asked.whole(&kept.data)),
                None => (req.map(|body| asked.keeping(body)), asked),
            };
            let failed = match live.channel.clone().call(req).await {
                Ok(resp) => {
                    admitted.sent();
                    return Ok(answer(&plugin, &live, resp, admitted, asked));
                }
                Err(e) => e,
            };
            drop(admitted);
            live.call_failed(&failed);
            if failed.unprocessed()
                && let Some(Kept { again, .. }) = kept
            {
                let (other, mut admitted) = match limit::admit(&plugin, &rev, Some(&live), until).await {
                    Ok((other, admitted, number)) => {
                        if let Some(placed) = &placed {
                            placed.set(number);
                        }
                        (other, admitted)
                    }
                    // No other instance (that serves): the first one's failure is the answer.
                    Err(Refused::NotReady | Refused::NotServing) => {
                        return Ok(unreachable(&plugin, &live, &failed));
                    }
                    Err(refused) => return Ok(local(refused.status(&plugin.name), Source::Limit)),
                };
                let mut again = again;
                if let Some(until) = until {
                    super::deadline::tell_time_left(again.headers_mut(), until);
                }
                match other.channel.clone().call(again).await {
                    Ok(resp) => {
                        admitted.sent();
                        return Ok(answer(&plugin, &other, resp, admitted, asked));
                    }
                    Err(e) => {
                        other.call_failed(&e);
                        return Ok(unreachable(&plugin, &other, &e));
                    }
                }
            }
            Ok(unreachable(&plugin, &live, &failed))
        })
    }
}

/// A call admitted later than this after it asked waited in the queue.
const QUEUED: std::time::Duration = std::time::Duration::from_millis(1);

/// The instance's answer, whose stream ends UNAVAILABLE naming the plugin if its
/// connection is lost on the way (the process died or closed it): tonic would call
/// that UNKNOWN, which tells a caller nothing of a plugin that went away. The call holds
/// its place within `max_in_flight` until its answer ends (a stream's headers come at
/// once), and the plugin's trailers cannot say a layer of ours answered.
fn answer(
    plugin: &Arc<Plugin>,
    live: &Live,
    resp: http::Response<ResponseBody>,
    admitted: crate::instance::Admitted,
    asked: Asked,
) -> http::Response<Body> {
    let (plugin, pid) = (plugin.clone(), live.pid);
    let trailers_only = super::grpc_status(resp.headers()).is_some();
    // A trailers-only answer is one HEADERS frame that ends the stream. One that says a
    // status and keeps its stream open would pass every layer as over (its deadline, size
    // limit and outcome are all taken from the headers) while it streams on and holds its
    // place within `max_in_flight`: it is refused, and dropping it resets its stream.
    if trailers_only && !http_body::Body::is_end_stream(resp.body()) {
        drop((resp, admitted));
        return tonic::Status::internal(format!(
            "plugin {:?} (pid {pid}) said a grpc-status in its answer's headers but kept the answer open",
            plugin.name
        ))
        .into_http();
    }
    // The plugin refused the call's headers as too many (its own bound may be below the
    // gateway's once the supervisor's headers are added): said so, as the caller's doing,
    // not as an HTTP status that tonic calls UNKNOWN.
    if resp.status() == http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE && !trailers_only {
        drop((resp, admitted));
        let said = format!("plugin {:?} (pid {pid}) refused the call's headers as too large (HTTP 431)", plugin.name);
        return local(tonic::Status::resource_exhausted(said), Source::Caller);
    }
    let mut resp = resp;
    if trailers_only && asked.callers_doing(resp.headers()) {
        resp.extensions_mut().insert(super::record::Local(Source::Caller));
    }
    let named = plugin.clone();
    resp.map(|body| {
        let body = body.map_frame(move |mut frame| {
            if let Some(trailers) = frame.trailers_mut() {
                trailers.remove(super::record::SOURCE_TRAILER);
                if asked.callers_doing(trailers) {
                    let caller = http::HeaderValue::from_static(Source::Caller.as_str());
                    trailers.insert(super::record::SOURCE_TRAILER, caller);
                }
            }
            frame
        });
        let body = body.map_err(move |e| {
            let _held = &admitted;
            if e.is_io() || e.is_go_away() {
                tonic::Status::unavailable(format!(
                    "plugin {:?} (pid {pid}): connection lost mid-call: {e}",
                    plugin.name
                ))
            } else if e.is_reset() && !e.is_remote() && !e.is_library() {
                // We reset it: the caller's request failed while the answer came (CANCELLED
                // is no failure of the plugin's to the breaker or a canary's judgement).
                tonic::Status::cancelled(format!("plugin {:?} (pid {pid}): {REQUEST_FAILED}: {e}", plugin.name))
            } else {
                // tonic's code for it (a reset's reason), said as the plugin's doing.
                let said = format!("plugin {:?} (pid {pid}): its answer failed: {e}", plugin.name);
                tonic::Status::new(tonic::Status::from_error(Box::new(e)).code(), said)
            }
        });
        if trailers_only {
            return Body::new(body);
        }
        let said = move || format!("plugin {:?} (pid {pid}) ended its answer without a grpc-status", named.name);
        Body::new(super::unended::Unended::new(body, said))
    })
}

fn unreachable(plugin: &Plugin, live: &Live, e: &ChannelError) -> http::Response<Body> {
    let said = |what: &str| format!("plugin {:?} (pid {}): {what}: {e}", plugin.name, live.pid);
    let reset = |h: &h2::Error| h.is_reset() && !h.is_go_away();
    match e {
        // A stream the plugin reset is its answer to this call alone, not a failed connection.
        ChannelError::H2(h) if reset(h) && h.is_remote() => {
            tonic::Status::unavailable(said("it reset the call")).into_http()
        }
        // h2 itself reset it: the answer broke HTTP/2, or its headers were past what the
        // supervisor holds.
        ChannelError::H2(h) if reset(h) && h.is_library() => tonic::Status::unavailable(said(&format!(
            "its answer broke HTTP/2 or its headers were over the supervisor's {} KiB",
            super::buffers::MAX_ANSWER_HEADERS >> 10
        )))
        .into_http(),
        // We reset it, or never sent it, because the caller's request failed on its way:
        // nothing the plugin did, so nothing the breaker or a canary's judgement counts.
        ChannelError::H2(h) if reset(h) => local(tonic::Status::cancelled(said(REQUEST_FAILED)), Source::Caller),
        ChannelError::Body(_) => local(tonic::Status::cancelled(said(REQUEST_FAILED)), Source::Caller),
        // h2 refused the request itself (a connection-specific header from an embedding
        // host): the caller's request, not the plugin's connection.
        ChannelError::NotSent(_) if e.request_refused() => {
            local(tonic::Status::invalid_argument(said("HTTP/2 cannot carry the call's request")), Source::Caller)
        }
        _ => tonic::Status::unavailable(said("connection failed")).into_http(),
    }
}

/// What a call whose own request failed on its way to the plugin is told.
const REQUEST_FAILED: &str = "the call's request failed on its way";

/// `req`, and a copy of it when its body is already complete (nothing to wait for: it can
/// be replayed), else None.
fn keep_whole(req: http::Request<Body>) -> (http::Request<Body>, Option<Kept>) {
    let (parts, mut body) = req.into_parts();
    let mut frames = Vec::new();
    loop {
        match body.frame().now_or_never() {
            Some(Some(Ok(frame))) => frames.push(frame),
            // The end: the whole body is here.
            Some(None) => break,
            // More to come (a stream), or an error its sender will see: not held whole.
            next @ (Some(Some(Err(_))) | None) => {
                let taken: Vec<Result<Frame<Bytes>, tonic::Status>> =
                    frames.into_iter().map(Ok).chain(next.flatten()).collect();
                let rest = futures_util::stream::iter(taken).chain(BodyStream::new(body));
                return (http::Request::from_parts(parts, Body::new(StreamBody::new(rest))), None);
            }
        }
    }
    let copy = |frames: &[Frame<Bytes>]| {
        let frames: Vec<Result<Frame<Bytes>, tonic::Status>> = frames
            .iter()
            .map(|f| match (f.data_ref(), f.trailers_ref()) {
                (Some(data), _) => Ok(Frame::data(data.clone())),
                (None, trailers) => Ok(Frame::trailers(trailers.cloned().unwrap_or_default())),
            })
            .collect();
        Body::new(StreamBody::new(futures_util::stream::iter(frames)))
    };
    let mut again = http::Request::new(copy(&frames));
    *again.method_mut() = parts.method.clone();
    *again.uri_mut() = parts.uri.clone();
    *again.version_mut() = parts.version;
    *again.headers_mut() = parts.headers.clone();
    let data = frames.iter().filter_map(|f| f.data_ref().cloned()).collect();
    let first = http::Request::from_parts(parts, copy(&frames));
    (first, Some(Kept { again, data }))
}

/// A request held whole: a copy to send again, and its data (cheap clones of the same
/// bytes).
struct Kept {
    again: http::Request<Body>,
    data: Vec<Bytes>,
}

/// The routing stack for one plugin, outermost first. The cheapest refusal comes first,
/// and each layer sees what the layers under it decided:
/// - record the call's outcome for the plugin, as the caller sees it (every answer, ours
///   included, with the layer it came from as `source`); outermost, so nothing escapes it;
/// - breaker: a plugin that keeps failing fails calls fast, before a revision is chosen or
///   a byte is read; it learns from what the layers under it let through, the plugin's
///   own outcomes only (a shed or a refused size says nothing of the plugin);
/// - split: choose the revision (a canary's share, else the serving one) and record the
///   plugin's own outcomes against it (not ours: a shed is not the canary's fault); above
///   the deadline, so that a call the plugin did not answer in time counts against the
///   revision that was slow, and below the plugin's record, so the plugin's totals hold
///   every revision;
/// - size: read the messages' length prefixes as they pass, refusing one over the chosen
///   revision's limits; above the deadline, so that its refusal is never taken for
///   slowness;
/// - hold the call to its deadline (the chosen revision's `call_timeout`), which also
///   bounds a call's wait in the limit's queue;
/// - send it to a ready instance of that revision with room under `max_in_flight`
///   (waiting in the plugin's small queue, else shed: see [`limit`]). The limit is per
///   instance, so it is applied where the instance is picked, before the plugin's
///   connection (whose stream limit would queue instead of shedding).
pub fn stack(plugin: Arc<Plugin>, metrics: Arc<Metrics>) -> Channel {
    let serving = plugin.clone();
    let limit = move |ext: &http::Extensions| {
        ext.get::<Target>().map_or_else(|| serving.spec().call_timeout, |t| t.0.spec().call_timeout)
    };
    let svc = ServiceBuilder::new()
        .layer(RecordLayer { calls: Arc::new(metrics.plugin_calls(&plugin.name)) })
        .layer(BreakerLayer { plugin: plugin.clone() })
        .layer(SplitLayer { plugin: plugin.clone() })
        .layer(SizeLayer { plugin: plugin.clone() })
        .layer(DeadlineLayer::reading(limit).knowing_streams({
            let plugin = plugin.clone();
            move |target: Option<&Target>, path: &str| {
                let contract = target.map_or_else(|| plugin.contract(), |t| t.0.contract.load_full());
                streams_requests(contract.as_deref(), path)
            }
        }))
        .service(PluginService { plugin });
    BoxCloneSyncService::new(svc)
}

/// Whether the method at `path` (`/package.Service/Method`) streams both ways, by the
/// contract the call's revision declared. A client-streaming method answers once its
/// request has ended, so it is judged as one taking one message.
fn streams_requests(contract: Option<&crate::instance::Contract>, path: &str) -> bool {
    let Some((service, method)) = path.strip_prefix('/').and_then(|p| p.split_once('/')) else { return false };
    let Some(contract) = contract else { return false };
    contract
        .pool
        .get_service_by_name(service)
        .is_some_and(|s| s.methods().any(|m| m.name() == method && m.is_client_streaming() && m.is_server_streaming()))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use plugin_proto::transport::H2Channel;
    use tower::ServiceExt;

    use super::*;
    use crate::config::Config;

    /// An HTTP/2 server on one end of a socketpair, and a channel to it: it answers every
    /// stream with its body and status OK, or (`refuse`) refuses it unprocessed.
    async fn instance(refuse: bool, seen: Arc<AtomicUsize>) -> H2Channel {
        let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
        tokio::spawn(async move {
            let mut conn = h2::server::handshake(theirs).await.unwrap();
            while let Some(Ok((req, mut respond))) = conn.accept().await {
                seen.fetch_add(1, Ordering::Relaxed);
                if refuse {
                    respond.send_reset(h2::Reason::REFUSED_STREAM);
                    continue;
                }
                tokio::spawn(async move {
                    let mut body = req.into_body();
                    let mut data = Vec::new();
                    while let Some(Ok(chunk)) = body.data().await {
                        let _ = body.flow_control().release_capacity(chunk.len());
                        data.extend_from_slice(&chunk);
                    }
                    let mut send = respond.send_response(http::Response::new(()), false).unwrap();
                    send.send_data(Bytes::from(data), false).unwrap();
                    let mut trailers = http::HeaderMap::new();
                    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                    // A plugin claiming a layer of ours answered: it must not be believed.
                    trailers.insert(super::super::record::SOURCE_TRAILER, http::HeaderValue::from_static("limit"));
                    send.send_trailers(trailers).unwrap();
                });
            }
        });
        let (channel, conn) = H2Channel::handshake(ours).await.unwrap();
        tokio::spawn(conn);
        channel
    }

    fn plugin_with(channels: Vec<H2Channel>) -> Arc<Plugin> {
        let config: Config = "[supervisor.sandbox]\nallow_unsandboxed = true\n[[plugin]]\nname = \"echo\"\nbinary = \"/bin/true\"\ntier = \"none\"\nreplicas = 2\n".parse().unwrap();
        let plugin = Arc::new(Plugin::new(config.specs().remove(0), 10));
        for (i, (inst, channel)) in plugin.instances().iter().zip(channels).enumerate() {
            inst.live.store(Some(Arc::new(Live::new(channel, 100 + i as i32))));
        }
        plugin
    }

    fn request(body: Body) -> http::Request<Body> {
        http::Request::builder().uri("/echo.v1.Echo/Echo").body(body).unwrap()
    }

    #[tokio::test]
    async fn a_whole_request_an_instance_refused_unprocessed_goes_to_another_once() {
        let (refused, answered) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let plugin = plugin_with(vec![instance(true, refused.clone()).await, instance(false, answered.clone()).await]);
        let svc = PluginService { plugin };
        // Round robin: among two calls, one goes to the refusing instance first.
        for i in 0..2 {
            let resp = svc.clone().oneshot(request(Body::new(format!("call {i}")))).await.unwrap();
            assert_eq!(resp.headers().get("grpc-status"), None, "not a trailers-only error");
            let collected = resp.into_body().collect().await.unwrap();
            assert_eq!(collected.trailers().and_then(|t| t.get("grpc-status")).unwrap(), "0");
            assert_eq!(collected.trailers().and_then(|t| t.get(super::super::record::SOURCE_TRAILER)), None);
            assert_eq!(collected.to_bytes(), format!("call {i}"));
        }
        assert_eq!(refused.load(Ordering::Relaxed), 1, "the refusing instance saw one of them");
        assert_eq!(answered.load(Ordering::Relaxed), 2, "the other answered both, one of them the second time");
    }

    #[tokio::test]
    async fn a_call_that_finds_its_instance_gone_away_says_the_instance_is_done_for() {
        let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
        tokio::spawn(async move {
            let mut conn = h2::server::handshake(theirs).await.unwrap();
            conn.graceful_shutdown();
            while let Some(Ok(_)) = conn.accept().await {}
            // Alive, its socket open, taking no calls.
            let _held = conn;
            std::future::pending::<()>().await
        });
        let (channel, conn) = H2Channel::handshake(ours).await.unwrap();
        tokio::spawn(conn);
        let config: Config = "[supervisor.sandbox]\nallow_unsandboxed = true\n[[plugin]]\nname = \"echo\"\nbinary = \"/bin/true\"\ntier = \"none\"\n".parse().unwrap();
        let plugin = Arc::new(Plugin::new(config.specs().remove(0), 10));
        let disconnect = crate::instance::Disconnect::default();
        plugin.instances()[0].live.store(Some(Arc::new(Live::new(channel, 100).with_disconnect(disconnect.clone()))));
        // Once its GOAWAY has arrived.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let resp = PluginService { plugin }.oneshot(request(Body::new("hello".to_owned()))).await.unwrap();
        assert_eq!(resp.headers().get("grpc-status").unwrap(), "14", "UNAVAILABLE");
        let said = tokio::time::timeout(std::time::Duration::from_secs(5), disconnect.said()).await;
        let said = said.expect("the instance was not told");
        assert!(said.why.starts_with("a call found its connection closed: HTTP/2: not sent: "), "{said:?}");
        assert!(!said.failed, "a GOAWAY without an error is a drain's: {said:?}");
    }

    /// A plugin of one instance whose server resets every call, before its answer begins or
    /// (`midway`) after its headers and some data.
    async fn resetting(midway: bool) -> PluginService {
        let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
        tokio::spawn(async move {
            let mut conn = h2::server::handshake(theirs).await.unwrap();
            while let Some(Ok((_, mut respond))) = conn.accept().await {
                if midway {
                    let mut send = respond.send_response(http::Response::new(()), false).unwrap();
                    send.send_data(Bytes::from_static(b"\0\0\0\0\x05hel"), false).unwrap();
                    // Once what was sent is out (the connection is driven meanwhile).
                    tokio::spawn(async move {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        send.send_reset(h2::Reason::INTERNAL_ERROR);
                    });
                } else {
                    respond.send_reset(h2::Reason::INTERNAL_ERROR);
                }
            }
        });
        let (channel, conn) = H2Channel::handshake(ours).await.unwrap();
        tokio::spawn(conn);
        let config: Config = "[supervisor.sandbox]\nallow_unsandboxed = true\n[[plugin]]\nname = \"echo\"\nbinary = \"/bin/true\"\ntier = \"none\"\n".parse().unwrap();
        let plugin = Arc::new(Plugin::new(config.specs().remove(0), 10));
        plugin.instances()[0].live.store(Some(Arc::new(Live::new(channel, 100))));
        PluginService { plugin }
    }

    #[tokio::test]
    async fn a_call_the_plugin_reset_is_said_as_the_plugins_doing() {
        let resp = resetting(false).await.oneshot(request(Body::new("hello".to_owned()))).await.unwrap();
        assert_eq!(resp.headers().get("grpc-status").unwrap(), "14", "UNAVAILABLE");
        let said = resp.headers().get("grpc-message").unwrap().to_str().unwrap();
        assert!(said.starts_with("plugin%20%22echo%22%20(pid%20100):%20it%20reset%20the%20call:%20"), "{said}");
        let resp = resetting(true).await.oneshot(request(Body::new("hello".to_owned()))).await.unwrap();
        let failed = resp.into_body().collect().await.unwrap_err();
        assert_eq!(failed.code(), tonic::Code::Internal, "{failed:?}");
        assert!(failed.message().starts_with("plugin \"echo\" (pid 100): its answer failed: "), "{failed:?}");
    }

    #[tokio::test]
    async fn an_answer_whose_headers_are_over_the_bound_fails_the_call_naming_the_plugin() {
        let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
        tokio::spawn(async move {
            let mut conn = h2::server::handshake(theirs).await.unwrap();
            while let Some(Ok((_, mut respond))) = conn.accept().await {
                let big = http::HeaderValue::from_str(&"h".repeat(80 << 10)).unwrap();
                let _ = respond.send_response(http::Response::builder().header("big", big).body(()).unwrap(), true);
            }
        });
        let (channel, conn) =
            H2Channel::handshake_with(&super::super::buffers::plugin_connection(), ours).await.unwrap();
        tokio::spawn(conn);
        let config: Config = "[supervisor.sandbox]\nallow_unsandboxed = true\n[[plugin]]\nname = \"echo\"\nbinary = \"/bin/true\"\ntier = \"none\"\n".parse().unwrap();
        let plugin = Arc::new(Plugin::new(config.specs().remove(0), 10));
        plugin.instances()[0].live.store(Some(Arc::new(Live::new(channel, 100))));
        let resp = PluginService { plugin }.oneshot(request(Body::new("hello".to_owned()))).await.unwrap();
        let status = tonic::Status::from_header_map(resp.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(
            status.message(),
            "plugin \"echo\" (pid 100): its answer broke HTTP/2 or its headers were over the supervisor's 64 KiB: \
             HTTP/2: stream error detected: unspecific protocol error detected"
        );
    }

    /// A caller sending bytes that do not decode gets INTERNAL from the plugin's framework:
    /// marked the caller's doing when the request indeed does not decode as the contract's
    /// input, so that it can neither open the circuit for the others nor fail a canary. The
    /// same words of a request that decodes stay the plugin's.
    #[tokio::test]
    async fn internal_for_a_request_that_does_not_decode_is_marked_the_callers_doing() {
        let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
        tokio::spawn(async move {
            let mut conn = h2::server::handshake(theirs).await.unwrap();
            let mut n = 0;
            while let Some(Ok((_, mut respond))) = conn.accept().await {
                n += 1;
                let said =
                    if n == 3 { "database unreachable" } else { "failed to decode Protobuf message: invalid varint" };
                let mut head = http::Response::builder().header("content-type", "application/grpc");
                let mut status = http::HeaderMap::new();
                tonic::Status::internal(said).add_header(&mut status).unwrap();
                head.headers_mut().unwrap().extend(status);
                respond.send_response(head.body(()).unwrap(), true).unwrap();
            }
        });
        let (channel, conn) = H2Channel::handshake(ours).await.unwrap();
        tokio::spawn(conn);
        let config: Config = "[supervisor.sandbox]\nallow_unsandboxed = true\n[[plugin]]\nname = \"echo\"\nbinary = \"/bin/true\"\ntier = \"none\"\n".parse().unwrap();
        let plugin = Arc::new(Plugin::new(config.specs().remove(0), 10));
        plugin.instances()[0].live.store(Some(Arc::new(Live::new(channel, 100))));
        let dir = tempfile::tempdir().unwrap();
        let proto = "syntax = \"proto3\";\npackage echo.v1;\nmessage M { string m = 1; }\nservice Echo { rpc Echo(M) returns (M); }\n";
        std::fs::write(dir.path().join("e.proto"), proto).unwrap();
        let set = prost::Message::encode_to_vec(&protox::compile(["e.proto"], [dir.path()]).unwrap());
        let contract = crate::instance::Contract::shared(set, vec!["echo.v1.Echo".into()]).unwrap();
        plugin.serving().contract.store(Some(contract));
        let svc = PluginService { plugin };
        let local = |resp: &http::Response<Body>| resp.extensions().get::<super::super::record::Local>().map(|l| l.0);
        let framed = |m: &'static [u8]| {
            let mut b = vec![0, 0, 0, 0, u8::try_from(m.len()).unwrap()];
            b.extend_from_slice(m);
            Body::new(http_body_util::Full::new(Bytes::from(b)))
        };
        let garbage = svc.clone().oneshot(request(framed(b"\xff\xff\xff"))).await.unwrap();
        assert_eq!(local(&garbage), Some(Source::Caller));
        // The same words of a request that decodes: the plugin's own (passed on, say).
        let decodes = svc.clone().oneshot(request(framed(b"\x0a\x02hi"))).await.unwrap();
        assert_eq!(local(&decodes), None);
        // The plugin's own failure stays its own.
        let own = svc.oneshot(request(framed(b"\xff\xff\xff"))).await.unwrap();
        assert_eq!(local(&own), None);
        assert_eq!(tonic::Status::from_header_map(own.headers()).unwrap().message(), "database unreachable");
    }

    #[tokio::test]
    async fn a_call_whose_request_fails_on_its_way_is_said_as_such_not_as_the_plugins_doing() {
        // The caller's doing, marked so: the breaker and a canary's judgement skip it.
        let status = |resp: http::Response<Body>| {
            let source = resp.extensions().get::<super::super::record::Local>().map(|l| l.0.as_str());
            assert_eq!(source, Some("caller"), "{resp:?}");
            tonic::Status::from_header_map(resp.headers()).expect("a status")
        };
        let plugin = plugin_with(vec![instance(false, Arc::new(AtomicUsize::new(0))).await]);
        // Failed before anything was sent.
        let frames: Vec<Result<Frame<Bytes>, tonic::Status>> =
            vec![Ok(Frame::data(Bytes::from_static(b"part"))), Err(tonic::Status::cancelled("caller went"))];
        let body = Body::new(http_body_util::StreamBody::new(futures_util::stream::iter(frames)));
        let early = status(PluginService { plugin: plugin.clone() }.oneshot(request(body)).await.unwrap());
        assert_eq!(early.code(), tonic::Code::Cancelled, "no failure of the plugin's");
        let said = "plugin \"echo\" (pid 100): the call's request failed on its way: request body: ";
        assert!(early.message().starts_with(said), "{early:?}");
        // Failed once its first part was on its way: we reset the stream.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, tonic::Status>>(1);
        tx.send(Ok(Frame::data(Bytes::from_static(b"part")))).await.unwrap();
        let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
        let call = PluginService { plugin }.oneshot(request(Body::new(http_body_util::StreamBody::new(stream))));
        let failing = async {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            tx.send(Err(tonic::Status::cancelled("caller went"))).await.unwrap();
        };
        let (resp, ()) = tokio::join!(call, failing);
        let late = status(resp.unwrap());
        assert_eq!(late.code(), tonic::Code::Cancelled);
        assert!(
            late.message().starts_with("plugin \"echo\" (pid 100): the call's request failed on its way: "),
            "{late:?}"
        );
    }

    #[tokio::test]
    async fn an_answer_that_ends_without_a_status_ends_internal_naming_the_plugin() {
        let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
        tokio::spawn(async move {
            let mut conn = h2::server::handshake(theirs).await.unwrap();
            while let Some(Ok((_, mut respond))) = conn.accept().await {
                let mut send = respond.send_response(http::Response::new(()), false).unwrap();
                send.send_data(Bytes::from_static(b"\0\0\0\0\0"), true).unwrap();
            }
        });
        let (channel, conn) = H2Channel::handshake(ours).await.unwrap();
        tokio::spawn(conn);
        let config: Config = "[supervisor.sandbox]\nallow_unsandboxed = true\n[[plugin]]\nname = \"echo\"\nbinary = \"/bin/true\"\ntier = \"none\"\n".parse().unwrap();
        let plugin = Arc::new(Plugin::new(config.specs().remove(0), 10));
        plugin.instances()[0].live.store(Some(Arc::new(Live::new(channel, 100))));
        let resp = PluginService { plugin }.oneshot(request(Body::new("hello".to_owned()))).await.unwrap();
        let collected = resp.into_body().collect().await.unwrap();
        let status = tonic::Status::from_header_map(collected.trailers().expect("a status was added")).unwrap();
        assert_eq!(status.code(), tonic::Code::Internal);
        assert_eq!(status.message(), "plugin \"echo\" (pid 100) ended its answer without a grpc-status");
    }

    #[tokio::test]
    async fn an_answer_that_says_a_status_in_its_headers_but_streams_on_is_refused_and_reset() {
        let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
        let (reset_tx, reset_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut conn = h2::server::handshake(theirs).await.unwrap();
            let (_, mut respond) = conn.accept().await.unwrap().unwrap();
            tokio::spawn(async move { while conn.accept().await.is_some() {} });
            let headers = http::Response::builder().header("grpc-status", "0").body(()).unwrap();
            let mut send = respond.send_response(headers, false).unwrap();
            send.send_data(Bytes::from_static(b"\0\0\0\0\x05hello"), false).unwrap();
            let reason = futures_util::future::poll_fn(|cx| send.poll_reset(cx)).await;
            let _ = reset_tx.send(reason.ok());
        });
        let (channel, conn) = H2Channel::handshake(ours).await.unwrap();
        tokio::spawn(conn);
        let plugin = plugin_with(vec![channel]);
        let resp =
            PluginService { plugin: plugin.clone() }.oneshot(request(Body::new("hello".to_owned()))).await.unwrap();
        let status = tonic::Status::from_header_map(resp.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::Internal);
        assert_eq!(
            status.message(),
            "plugin \"echo\" (pid 100) said a grpc-status in its answer's headers but kept the answer open"
        );
        assert!(http_body::Body::is_end_stream(resp.body()), "the caller's answer is over");
        let reset = tokio::time::timeout(std::time::Duration::from_secs(5), reset_rx).await;
        assert_eq!(reset.expect("the plugin's stream was not reset").unwrap(), Some(h2::Reason::CANCEL));
    }

    /// The status a call through the whole stack ends with, at a 300 ms `call_timeout`,
    /// when the plugin's server reads its request (`reads`) or reads nothing of it, and
    /// the caller sends `frames` of the request and then (`ends`) ends it or not.
    async fn past_the_deadline(reads: bool, frames: usize, ends: bool) -> tonic::Status {
        past_the_deadline_at("/echo.v1.Echo/Echo", reads, frames.into(), ends, false, Declared::Serving).await
    }

    /// Which revision declared `t.v1.T` ([`streaming_contract`]) and takes the call.
    #[derive(Clone, Copy, PartialEq)]
    enum Declared {
        /// The serving revision, alone.
        Serving,
        /// A canary taking every call; the serving revision declared nothing.
        Canary,
    }

    /// [`past_the_deadline`] of a call to `path`, as a plugin that declared `t.v1.T`
    /// (in the revision `declared` says), the caller sending
    /// `sent` bytes of 64 KiB messages; the plugin's server answers its headers at once
    /// (`headers_first`) or nothing.
    async fn past_the_deadline_at(
        path: &str,
        reads: bool,
        sent: Sent,
        ends: bool,
        headers_first: bool,
        declared: Declared,
    ) -> tonic::Status {
        let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
        tokio::spawn(async move {
            let mut conn = h2::server::handshake(theirs).await.unwrap();
            while let Some(Ok((req, respond))) = conn.accept().await {
                tokio::spawn(async move {
                    let mut respond = respond;
                    let _answering = headers_first.then(|| respond.send_response(http::Response::new(()), false));
                    let mut body = req.into_body();
                    while reads && let Some(Ok(chunk)) = body.data().await {
                        let _ = body.flow_control().release_capacity(chunk.len());
                    }
                    std::future::pending::<()>().await;
                });
            }
        });
        let (channel, conn) = H2Channel::handshake(ours).await.unwrap();
        tokio::spawn(conn);
        let config: Config = "[supervisor.sandbox]\nallow_unsandboxed = true\n[[plugin]]\nname = \"echo\"\n\
                              binary = \"/bin/true\"\ntier = \"none\"\ncall_timeout = \"300ms\"\n"
            .parse()
            .unwrap();
        let plugin = Arc::new(Plugin::new(config.specs().remove(0), 10));
        let taking = match declared {
            Declared::Serving => plugin.serving(),
            Declared::Canary => {
                let canary = plugin.new_revision(plugin.spec());
                plugin.set_split(Some((&canary, 100)));
                canary
            }
        };
        taking.instances[0].live.store(Some(Arc::new(Live::new(channel, 100))));
        plugin.declared(&taking, streaming_contract());
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, tonic::Status>>(256);
        // Messages of 64 KiB: a few fill a plugin's stream window that is not read.
        let mut message = vec![0u8; 5 + (64 << 10)];
        message[1..5].copy_from_slice(&(64u32 << 10).to_be_bytes());
        let bytes: Vec<u8> = message.iter().copied().cycle().take(sent.0).collect();
        for chunk in bytes.chunks(16 << 10) {
            tx.send(Ok(Frame::data(Bytes::copy_from_slice(chunk)))).await.unwrap();
        }
        if ends {
            drop(tx);
        } else {
            std::mem::forget(tx);
        }
        let body = Body::new(http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)));
        let req = http::Request::builder().uri(path).body(body).unwrap();
        let resp = super::stack(plugin, Arc::new(Metrics::default())).oneshot(req).await.unwrap();
        match tonic::Status::from_header_map(resp.headers()) {
            Some(status) => status,
            None => match resp.into_body().collect().await {
                Ok(answer) => answer.trailers().and_then(tonic::Status::from_header_map).expect("a status"),
                Err(e) => e,
            },
        }
    }

    /// A contract of one service, `t.v1.T`, whose `Chat` streams both ways, `Collect` takes
    /// a stream of requests for one answer, and `Unary` one message each way.
    fn streaming_contract() -> Arc<crate::instance::Contract> {
        use prost::Message;
        use prost_types::{DescriptorProto, FileDescriptorProto, FileDescriptorSet, MethodDescriptorProto};
        let method = |name: &str, client: bool, server: bool| MethodDescriptorProto {
            name: Some(name.into()),
            input_type: Some(".t.v1.M".into()),
            output_type: Some(".t.v1.M".into()),
            client_streaming: Some(client),
            server_streaming: Some(server),
            ..Default::default()
        };
        let file = FileDescriptorProto {
            name: Some("t.proto".into()),
            package: Some("t.v1".into()),
            message_type: vec![DescriptorProto { name: Some("M".into()), ..Default::default() }],
            service: vec![prost_types::ServiceDescriptorProto {
                name: Some("T".into()),
                method: vec![method("Chat", true, true), method("Collect", true, false), method("Unary", false, false)],
                ..Default::default()
            }],
            syntax: Some("proto3".into()),
            ..Default::default()
        };
        let set = FileDescriptorSet { file: vec![file] }.encode_to_vec();
        crate::instance::Contract::shared(set, vec!["t.v1.T".into()]).unwrap()
    }

    /// Bytes of the request the caller sends: so many whole messages, or a part of one.
    struct Sent(usize);

    impl From<usize> for Sent {
        fn from(messages: usize) -> Self {
            Sent(messages * (5 + (64 << 10)))
        }
    }

    #[tokio::test]
    async fn on_a_method_streaming_both_ways_a_caller_that_sent_its_first_message_whole_is_not_blamed_for_the_wait() {
        let plugin_late = "deadline of 300ms (the plugin's call_timeout) exceeded";
        let caller_late = format!("{plugin_late}: the caller had not sent all of its request");
        for headers_first in [false, true] {
            // Part of the first message, then nothing: the caller's.
            let part =
                past_the_deadline_at("/t.v1.T/Chat", true, Sent(1000), false, headers_first, Declared::Serving).await;
            assert_eq!(part.message(), caller_late, "headers first: {headers_first}");
            // A whole message, the stream still open: the plugin had something to answer.
            let one =
                past_the_deadline_at("/t.v1.T/Chat", true, 1.into(), false, headers_first, Declared::Serving).await;
            assert_eq!((one.code(), one.message()), (tonic::Code::DeadlineExceeded, plugin_late));
            // A method answering once its request has ended waits for that end.
            for method in ["/t.v1.T/Collect", "/t.v1.T/Unary"] {
                let open = past_the_deadline_at(method, true, 1.into(), false, headers_first, Declared::Serving).await;
                assert_eq!(open.message(), caller_late, "{method}, headers first: {headers_first}");
            }
        }
    }

    /// A canary may declare a method the serving revision does not (a rollout adding a
    /// streaming method): its calls are judged by the canary's contract, the one serving them.
    #[tokio::test]
    async fn a_method_only_the_canary_declared_is_judged_by_the_canarys_contract() {
        let plugin_late = "deadline of 300ms (the plugin's call_timeout) exceeded";
        let one = past_the_deadline_at("/t.v1.T/Chat", true, 1.into(), false, false, Declared::Canary).await;
        assert_eq!((one.code(), one.message()), (tonic::Code::DeadlineExceeded, plugin_late));
        let part = past_the_deadline_at("/t.v1.T/Chat", true, Sent(1000), false, false, Declared::Canary).await;
        assert_eq!(part.message(), format!("{plugin_late}: the caller had not sent all of its request"));
    }

    #[tokio::test]
    async fn a_deadline_the_caller_s_unsent_request_caused_is_the_caller_s_and_one_the_plugin_s_reading_caused_is_not()
    {
        let plugin_late = "deadline of 300ms (the plugin's call_timeout) exceeded";
        let caller_late = format!("{plugin_late}: the caller had not sent all of its request");
        // Headers and a message, then nothing: the plugin waits on the caller.
        let withheld = past_the_deadline(true, 1, false).await;
        assert_eq!((withheld.code(), withheld.message()), (tonic::Code::DeadlineExceeded, caller_late.as_str()));
        // The caller sent it all; the plugin read it and did not answer.
        let whole = past_the_deadline(true, 1, true).await;
        assert_eq!((whole.code(), whole.message()), (tonic::Code::DeadlineExceeded, plugin_late));
        // The caller has more ready than the plugin reads: the plugin's window holds it up.
        let unread = past_the_deadline(false, 16, false).await;
        assert_eq!((unread.code(), unread.message()), (tonic::Code::DeadlineExceeded, plugin_late));
    }

    #[tokio::test]
    async fn a_request_still_streaming_is_not_sent_twice() {
        let refused = Arc::new(AtomicUsize::new(0));
        let answered = Arc::new(AtomicUsize::new(0));
        let plugin = plugin_with(vec![instance(true, refused.clone()).await, instance(true, answered.clone()).await]);
        let svc = PluginService { plugin };
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, tonic::Status>>(1);
        let stream = Body::new(StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)));
        let resp = svc.oneshot(request(stream)).await.unwrap();
        drop(tx);
        assert_eq!(resp.headers().get("grpc-status").unwrap(), "14", "UNAVAILABLE");
        assert_eq!(refused.load(Ordering::Relaxed) + answered.load(Ordering::Relaxed), 1, "sent once only");
    }
}

#[cfg(test)]
mod queued {
    use std::time::Duration;

    use plugin_proto::transport::H2Channel;
    use tokio::sync::mpsc;
    use tower::ServiceExt;

    use super::*;
    use crate::config::Config;
    use crate::routing::deadline::parse_grpc_timeout;

    /// An instance that reports each call's `grpc-timeout` and answers it (OK, empty) only
    /// when told to.
    async fn instance(seen: mpsc::UnboundedSender<Option<Duration>>, mut go: mpsc::UnboundedReceiver<()>) -> H2Channel {
        let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
        tokio::spawn(async move {
            let mut conn = h2::server::handshake(theirs).await.unwrap();
            let (calls, mut pending) = mpsc::unbounded_channel();
            tokio::spawn(async move {
                while let Some(mut respond) = pending.recv().await {
                    go.recv().await;
                    let mut ok = http::Response::new(());
                    ok.headers_mut().insert("grpc-status", http::HeaderValue::from_static("0"));
                    let _ = h2::server::SendResponse::<Bytes>::send_response(&mut respond, ok, true);
                }
            });
            while let Some(Ok((req, respond))) = conn.accept().await {
                let asked =
                    req.headers().get("grpc-timeout").and_then(|v| v.to_str().ok()).and_then(parse_grpc_timeout);
                let _ = seen.send(asked);
                let _ = calls.send(respond);
            }
        });
        let (channel, conn) = H2Channel::handshake(ours).await.unwrap();
        tokio::spawn(conn);
        channel
    }

    // On a paused clock: a loaded machine would otherwise take over the queue's 1 ms to
    // admit the first call, which then counts as having waited.
    #[tokio::test(start_paused = true)]
    async fn a_call_that_waited_in_the_queue_tells_the_plugin_the_time_it_has_left() {
        let config: Config = "[supervisor.sandbox]\nallow_unsandboxed = true\n[[plugin]]\nname = \"p\"\nbinary = \"/bin/true\"\ntier = \"none\"\nmax_in_flight = 1\nmax_queued = 1\n".parse().unwrap();
        let plugin = Arc::new(Plugin::new(config.specs().remove(0), 10));
        let (seen_tx, mut seen) = mpsc::unbounded_channel();
        let (go, go_rx) = mpsc::unbounded_channel();
        plugin.went_live(&plugin.serving().instances[0], Live::new(instance(seen_tx, go_rx).await, 100));
        let svc = PluginService { plugin };
        let call = |within: Duration| {
            let mut req = http::Request::builder().uri("/p.v1.P/Get").body(Body::empty()).unwrap();
            req.headers_mut().insert("grpc-timeout", "2S".parse().unwrap());
            req.extensions_mut().insert(Expires(tokio::time::Instant::now() + within));
            svc.clone().oneshot(req)
        };
        let first = tokio::spawn(call(Duration::from_secs(2)));
        assert_eq!(seen.recv().await.unwrap(), Some(Duration::from_secs(2)), "a call admitted at once is untouched");
        let second = tokio::spawn(call(Duration::from_secs(2)));
        tokio::time::sleep(Duration::from_millis(400)).await;
        go.send(()).unwrap();
        first.await.unwrap().unwrap();
        let told = seen.recv().await.unwrap().expect("a grpc-timeout");
        assert!(told <= Duration::from_millis(1600), "the plugin was told {told:?}, not the time left after the queue");
        assert!(told >= Duration::from_millis(500), "{told:?}");
        go.send(()).unwrap();
        second.await.unwrap().unwrap();
    }
}
