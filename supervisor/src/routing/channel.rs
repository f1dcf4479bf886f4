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
use plugin_proto::transport::ChannelError;
use tonic::body::Body;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder};

use super::deadline::DeadlineLayer;
use super::record::{Local, RecordLayer};
use super::split::{SplitLayer, Target};
use crate::instance::{Live, Plugin, Revision};
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
        let Some((live, admitted)) = admit(&self.plugin, &rev, None) else {
            let msg = format!("plugin {:?} is {}", self.plugin.name, self.plugin.describe_state());
            let mut refused = tonic::Status::unavailable(msg).into_http();
            refused.extensions_mut().insert(Local);
            return Box::pin(async move { Ok(refused) });
        };
        let plugin = self.plugin.clone();
        Box::pin(async move {
            // A request held whole (every unary call) can be sent again, once, when the
            // instance never processed it: one of a revision being replaced refuses new
            // streams while it drains.
            let (req, again) = keep_whole(req);
            let failed = match live.channel.clone().call(req).await {
                Ok(resp) => return Ok(resp.map(Body::new)),
                Err(e) => e,
            };
            drop(admitted);
            if failed.unprocessed()
                && let (Some(again), Some((other, _admitted))) = (again, admit(&plugin, &rev, Some(&live)))
            {
                match other.channel.clone().call(again).await {
                    Ok(resp) => return Ok(resp.map(Body::new)),
                    Err(e) => return Ok(unreachable(&plugin, &other, &e)),
                }
            }
            Ok(unreachable(&plugin, &live, &failed))
        })
    }
}

/// A ready instance of `rev` (other than `not`) that admits the call, else one of another
/// revision that takes calls: a canary whose instance just went, or a revision replaced
/// since the call chose it, leaves the call to the one serving. One that is closing this
/// very moment is already out of the pick, so the next pick finds another (or none).
fn admit(plugin: &Plugin, rev: &Revision, not: Option<&Live>) -> Option<(Arc<Live>, crate::instance::Admitted)> {
    let current = plugin.takes_calls(rev);
    for attempt in 0..4 {
        let own = match not {
            _ if !current || attempt >= 2 => None,
            None => rev.pick(),
            Some(not) => rev.pick_other(not),
        };
        let live = match own {
            Some(live) => live,
            None => plugin.pick_other_than(rev.number, not)?,
        };
        if let Some(admitted) = live.admit() {
            return Some((live, admitted));
        }
    }
    None
}

fn unreachable(plugin: &Plugin, live: &Live, e: &ChannelError) -> http::Response<Body> {
    tonic::Status::unavailable(format!("plugin {:?} (pid {}): connection failed: {e}", plugin.name, live.pid))
        .into_http()
}

/// `req`, and a copy of it when its body is already complete (nothing to wait for: it can
/// be replayed), else None.
fn keep_whole(req: http::Request<Body>) -> (http::Request<Body>, Option<http::Request<Body>>) {
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
    let first = http::Request::from_parts(parts, copy(&frames));
    (first, Some(again))
}

/// The routing stack for one plugin, outermost first:
/// - record the call's outcome for the plugin, as the caller sees it (every answer,
///   the supervisor's own included);
/// - split: choose the revision (a canary's share, else the serving one) and record the
///   outcome against it; above the deadline, so that a call the plugin did not answer in
///   time counts against the revision that was slow, and below the plugin's record, so
///   the plugin's totals hold every revision;
/// - hold the call to its deadline (the chosen revision's `call_timeout`);
/// - send it to a ready instance of that revision.
pub fn stack(plugin: Arc<Plugin>, metrics: Arc<Metrics>) -> Channel {
    let serving = plugin.clone();
    let limit = move |ext: &http::Extensions| {
        ext.get::<Target>().map_or_else(|| serving.spec().call_timeout, |t| t.0.spec().call_timeout)
    };
    let svc = ServiceBuilder::new()
        .layer(RecordLayer { calls: Arc::new(metrics.plugin_calls(&plugin.name)) })
        .layer(SplitLayer { plugin: plugin.clone() })
        .layer(DeadlineLayer::reading(limit))
        .service(PluginService { plugin });
    BoxCloneSyncService::new(svc)
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
            assert_eq!(collected.to_bytes(), format!("call {i}"));
        }
        assert_eq!(refused.load(Ordering::Relaxed), 1, "the refusing instance saw one of them");
        assert_eq!(answered.load(Ordering::Relaxed), 2, "the other answered both, one of them the second time");
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
