//! Message size limits: `max_request_bytes` and `max_response_bytes` per plugin, enforced
//! as the bytes pass, never by holding a whole message. Each gRPC message starts with a
//! 5-byte prefix (a compression flag and its length as a big-endian u32), which is read as
//! the DATA frames go by; the first prefix declaring more than the limit ends the call
//! there, before the rest of that message is read or sent:
//! - a request: its body fails, so the call is refused (or its stream reset) toward the
//!   plugin, and the caller gets RESOURCE_EXHAUSTED;
//! - a response: the plugin's stream is dropped (which resets it) and the caller gets
//!   RESOURCE_EXHAUSTED in trailers after the messages before it.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use http_body::Frame;
use tonic::body::Body;

use super::record::{Source, local};
use super::split::Target;
use super::wrap::{Answer, Wrapped, Wraps};
use crate::instance::Plugin;

/// Messages refused for their size, by direction, since the plugin was configured.
#[derive(Debug, Default)]
pub struct TooLarge {
    request: AtomicU64,
    response: AtomicU64,
}

impl TooLarge {
    pub fn requests(&self) -> u64 {
        self.request.load(Ordering::Relaxed)
    }

    pub fn responses(&self) -> u64 {
        self.response.load(Ordering::Relaxed)
    }
}

/// Where the message boundaries of a gRPC stream fall, read a frame at a time.
#[derive(Debug, Default)]
struct Messages {
    /// Bytes of the current message's payload still to come.
    remaining: u64,
    /// The prefix read so far, when one is split across frames.
    prefix: [u8; 5],
    have: usize,
}

/// A message's prefix declared more than the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Over {
    declared: u64,
    /// Where in the frame the offending prefix starts (0 when it began in an earlier one).
    at: usize,
}

impl Messages {
    fn feed(&mut self, data: &[u8], limit: u64) -> Result<(), Over> {
        let mut i = 0;
        while i < data.len() {
            if self.remaining > 0 {
                let skip = self.remaining.min((data.len() - i) as u64);
                self.remaining -= skip;
                i += skip as usize;
                continue;
            }
            let take = (5 - self.have).min(data.len() - i);
            self.prefix[self.have..self.have + take].copy_from_slice(&data[i..i + take]);
            self.have += take;
            i += take;
            if self.have == 5 {
                self.have = 0;
                let declared =
                    u64::from(u32::from_be_bytes([self.prefix[1], self.prefix[2], self.prefix[3], self.prefix[4]]));
                if declared > limit {
                    return Err(Over { declared, at: i.saturating_sub(5) });
                }
                self.remaining = declared;
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
enum Direction {
    Request,
    Response,
}

fn status(plugin: &str, direction: Direction, declared: u64, limit: u64) -> tonic::Status {
    let (what, key) = match direction {
        Direction::Request => ("request", "max_request_bytes"),
        Direction::Response => ("response", "max_response_bytes"),
    };
    tonic::Status::resource_exhausted(format!(
        "plugin {plugin:?}: {what} message of {declared} bytes is over {key} {limit}"
    ))
}

/// Set by a request body that went over its limit, seen by its response.
#[derive(Debug, Default)]
struct Trip {
    /// The declared length that went over, 0 until then.
    declared: AtomicU64,
    response: AtomicWaker,
}

impl Trip {
    fn tripped(&self) -> Option<u64> {
        match self.declared.load(Ordering::Acquire) {
            0 => None,
            n => Some(n),
        }
    }
}

/// The request body, checked as it goes to the plugin.
struct SizedRequest {
    inner: Body,
    messages: Messages,
    limit: u64,
    trip: Arc<Trip>,
    plugin: Arc<Plugin>,
}

impl http_body::Body for SizedRequest {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Some(declared) = this.trip.tripped() {
            return Poll::Ready(Some(Err(status(&this.plugin.name, Direction::Request, declared, this.limit))));
        }
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
            && let Err(over) = this.messages.feed(data, this.limit)
        {
            this.plugin.too_large.request.fetch_add(1, Ordering::Relaxed);
            // What the caller still sends is not read: the stream toward the plugin is
            // refused or reset by the channel when this body fails.
            this.inner = Body::empty();
            this.trip.declared.store(over.declared.max(1), Ordering::Release);
            this.trip.response.wake();
            return Poll::Ready(Some(Err(status(&this.plugin.name, Direction::Request, over.declared, this.limit))));
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.trip.tripped().is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The response body, checked as it goes to the caller; it also ends the call when the
/// request went over its limit after the answer began (a streaming request).
struct SizedResponse {
    inner: Body,
    messages: Messages,
    limits: (u64, u64),
    trip: Arc<Trip>,
    plugin: Arc<Plugin>,
    /// The trailers to end with, once the data before them is out.
    ending: Option<tonic::Status>,
    ended: bool,
}

impl SizedResponse {
    fn end(&mut self, status: &tonic::Status) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        self.ended = true;
        self.inner = Body::empty();
        let mut trailers = http::HeaderMap::new();
        if let Err(e) = status.add_header(&mut trailers) {
            return Poll::Ready(Some(Err(e)));
        }
        Source::Size.mark(&mut trailers);
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }
}

impl http_body::Body for SizedResponse {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        if let Some(status) = this.ending.take() {
            return this.end(&status);
        }
        this.trip.response.register(cx.waker());
        if let Some(declared) = this.trip.tripped() {
            return this.end(&status(&this.plugin.name, Direction::Request, declared, this.limits.0));
        }
        let mut polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &mut polled
            && let Some(data) = frame.data_mut()
            && let Err(over) = this.messages.feed(data, this.limits.1)
        {
            this.plugin.too_large.response.fetch_add(1, Ordering::Relaxed);
            let refused = status(&this.plugin.name, Direction::Response, over.declared, this.limits.1);
            if over.at == 0 {
                return this.end(&refused);
            }
            // The messages before it still reach the caller.
            let before = data.split_to(over.at);
            this.inner = Body::empty();
            this.ending = Some(refused);
            return Poll::Ready(Some(Ok(Frame::data(before))));
        }
        match &polled {
            Poll::Ready(Some(Ok(frame))) if frame.is_trailers() => this.ended = true,
            Poll::Ready(None) => this.ended = true,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.ended || (self.ending.is_none() && self.inner.is_end_stream())
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[derive(Clone, Debug)]
pub struct SizeLayer {
    pub plugin: Arc<Plugin>,
}

impl<S> tower::Layer<S> for SizeLayer {
    type Service = Wrapped<Self, S>;

    fn layer(&self, inner: S) -> Self::Service {
        Wrapped::new(self.clone(), inner)
    }
}

impl Wraps for SizeLayer {
    fn around<S>(&self, req: http::Request<Body>, next: &mut S) -> Answer
    where
        S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
        S::Future: Send + 'static,
    {
        let p = match req.extensions().get::<Target>() {
            Some(t) => t.0.spec().protection,
            None => self.plugin.spec().protection,
        };
        let limits = (p.max_request_bytes, p.max_response_bytes);
        let trip = Arc::new(Trip::default());
        let plugin = self.plugin.clone();
        let req = req.map(|inner| {
            Body::new(SizedRequest {
                inner,
                messages: Messages::default(),
                limit: limits.0,
                trip: trip.clone(),
                plugin: plugin.clone(),
            })
        });
        let mut answer = Box::pin(next.call(req));
        let mut trip = Some(trip);
        Box::pin(std::future::poll_fn(move |cx| {
            let Some(t) = trip.as_ref() else { return Poll::Pending };
            t.response.register(cx.waker());
            let refused = |declared| {
                let s = status(&plugin.name, Direction::Request, declared, limits.0);
                Poll::Ready(Ok(local(s, Source::Size)))
            };
            if let Some(declared) = t.tripped() {
                return refused(declared);
            }
            let Poll::Ready(Ok(response)) = answer.as_mut().poll(cx) else { return Poll::Pending };
            // The channel's own answer to a request that failed before it left.
            if let Some(declared) = t.tripped() {
                return refused(declared);
            }
            let Some(trip) = trip.take() else { return Poll::Pending };
            if super::grpc_status(response.headers()).is_some() {
                return Poll::Ready(Ok(response));
            }
            let plugin = plugin.clone();
            Poll::Ready(Ok(response.map(|inner| {
                Body::new(SizedResponse {
                    inner,
                    messages: Messages::default(),
                    limits,
                    trip,
                    plugin,
                    ending: None,
                    ended: false,
                })
            })))
        }))
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;
    use tower::{Service, ServiceExt};

    use super::*;

    fn prefix(len: u32) -> Vec<u8> {
        let mut p = vec![0u8];
        p.extend_from_slice(&len.to_be_bytes());
        p
    }

    #[test]
    fn message_prefixes_are_found_across_frames_and_the_first_over_the_limit_is_named() {
        let mut m = Messages::default();
        // Two messages of 3 bytes in one frame, then a prefix split over three frames.
        let mut frame = prefix(3);
        frame.extend_from_slice(b"abc");
        frame.extend_from_slice(&prefix(3));
        frame.extend_from_slice(b"def");
        assert_eq!(m.feed(&frame, 10), Ok(()));
        let big = prefix(11);
        assert_eq!(m.feed(&big[..2], 10), Ok(()));
        assert_eq!(m.feed(&big[2..4], 10), Ok(()));
        assert_eq!(m.feed(&big[4..], 10), Err(Over { declared: 11, at: 0 }));
        // A prefix whole in a frame, after a message: it is cut where it starts.
        let mut m = Messages::default();
        let mut frame = prefix(2);
        frame.extend_from_slice(b"ok");
        frame.extend_from_slice(&prefix(1 << 30));
        assert_eq!(m.feed(&frame, 10), Err(Over { declared: 1 << 30, at: 7 }));
        // A message of exactly the limit passes, in pieces.
        let mut m = Messages::default();
        assert_eq!(m.feed(&prefix(10), 10), Ok(()));
        assert_eq!(m.feed(&[0; 4], 10), Ok(()));
        assert_eq!(m.feed(&[0; 6], 10), Ok(()));
        assert_eq!(m.remaining, 0);
    }

    fn plugin(keys: &str) -> Arc<Plugin> {
        let config: crate::config::Config = format!(
            "[supervisor.sandbox]\nallow_unsandboxed = true\n[[plugin]]\nname = \"p\"\nbinary = \"/bin/true\"\ntier = \"none\"\n{keys}"
        )
        .parse()
        .unwrap();
        Arc::new(Plugin::new(config.specs().remove(0), 10))
    }

    type Frames = tokio::sync::mpsc::Sender<Result<Frame<Bytes>, tonic::Status>>;

    fn streamed() -> (Frames, Body) {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        (tx, Body::new(http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    /// A plugin that reads the request as it comes (into `read`) and answers with `answer`'s
    /// frames, streamed as the test sends them.
    fn echoing_plugin(
        read: Arc<std::sync::Mutex<Vec<u8>>>,
        answer: Arc<std::sync::Mutex<Option<Body>>>,
    ) -> tower::util::BoxCloneSyncService<http::Request<Body>, http::Response<Body>, Infallible> {
        tower::util::BoxCloneSyncService::new(tower::service_fn(move |req: http::Request<Body>| {
            let read = read.clone();
            let body = answer.lock().unwrap().take().unwrap_or_else(Body::empty);
            async move {
                let mut incoming = req.into_body();
                tokio::spawn(async move {
                    while let Some(Ok(frame)) = incoming.frame().await {
                        if let Some(d) = frame.data_ref() {
                            read.lock().unwrap().extend_from_slice(d);
                        }
                    }
                    // The request failed or ended: like h2, the answer goes on regardless.
                });
                Ok(http::Response::new(body))
            }
        }))
    }

    #[tokio::test]
    async fn a_request_message_declared_over_the_limit_is_refused_before_its_bytes_arrive() {
        let p = plugin("max_request_bytes = 16\n");
        let read = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (answer_tx, answer) = streamed();
        let inner = echoing_plugin(read.clone(), Arc::new(std::sync::Mutex::new(Some(answer))));
        let mut svc = tower::Layer::layer(&SizeLayer { plugin: p.clone() }, inner);
        let (tx, body) = streamed();
        let response = svc.ready().await.unwrap().call(http::Request::new(body));
        let mut small = prefix(4);
        small.extend_from_slice(b"ping");
        tx.send(Ok(Frame::data(Bytes::from(small.clone())))).await.unwrap();
        // The answer has begun (a streaming call), then a 1 GiB message is announced.
        answer_tx.send(Ok(Frame::data(Bytes::from(prefix(0))))).await.unwrap();
        let response = response.await.unwrap();
        let mut body = response.into_body();
        assert_eq!(body.frame().await.unwrap().unwrap().into_data().unwrap(), Bytes::from(prefix(0)));
        tx.send(Ok(Frame::data(Bytes::from(prefix(1 << 30))))).await.unwrap();
        let end = tokio::time::timeout(std::time::Duration::from_secs(1), body.frame())
            .await
            .expect("the caller is told at once")
            .unwrap()
            .unwrap()
            .into_trailers()
            .unwrap();
        assert_eq!(end["grpc-status"], "8", "RESOURCE_EXHAUSTED");
        assert_eq!(
            tonic::Status::from_header_map(&end).unwrap().message(),
            "plugin \"p\": request message of 1073741824 bytes is over max_request_bytes 16"
        );
        assert_eq!(end[super::super::record::SOURCE_TRAILER], "size");
        assert_eq!(*read.lock().unwrap(), small, "the plugin saw the first message, nothing of the big one");
        assert_eq!((p.too_large.requests(), p.too_large.responses()), (1, 0));
    }

    #[tokio::test]
    async fn a_whole_request_over_the_limit_gets_resource_exhausted_and_the_plugin_nothing() {
        let p = plugin("max_request_bytes = 16\n");
        // The channel: a body that fails before the request leaves is its UNAVAILABLE.
        let inner = tower::service_fn(|req: http::Request<Body>| async move {
            let failed = req.into_body().collect().await.is_err();
            assert!(failed, "the request body fails");
            Ok::<_, Infallible>(tonic::Status::unavailable("request body failed").into_http())
        });
        let mut svc = tower::Layer::layer(&SizeLayer { plugin: p.clone() }, inner);
        let mut big = prefix(17);
        big.extend_from_slice(&[7; 17]);
        let resp = svc
            .ready()
            .await
            .unwrap()
            .call(http::Request::new(Body::new(http_body_util::Full::new(Bytes::from(big)))))
            .await
            .unwrap();
        assert_eq!(resp.headers()["grpc-status"], "8");
        assert!(matches!(
            resp.extensions().get::<super::super::record::Local>(),
            Some(super::super::record::Local(Source::Size))
        ));
    }

    #[tokio::test]
    async fn a_response_message_declared_over_the_limit_ends_the_answer_after_the_messages_before_it() {
        let p = plugin("max_response_bytes = 8\n");
        let (answer_tx, answer) = streamed();
        let inner = echoing_plugin(Arc::default(), Arc::new(std::sync::Mutex::new(Some(answer))));
        let mut svc = tower::Layer::layer(&SizeLayer { plugin: p.clone() }, inner);
        let resp = svc.ready().await.unwrap().call(http::Request::new(Body::empty())).await.unwrap();
        let mut frame = prefix(2);
        frame.extend_from_slice(b"hi");
        frame.extend_from_slice(&prefix(9));
        answer_tx.send(Ok(Frame::data(Bytes::from(frame)))).await.unwrap();
        let mut body = resp.into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&first[..], b"\0\0\0\0\x02hi", "the message before it");
        let end = body.frame().await.unwrap().unwrap().into_trailers().unwrap();
        assert_eq!(end["grpc-status"], "8");
        assert_eq!(
            tonic::Status::from_header_map(&end).unwrap().message(),
            "plugin \"p\": response message of 9 bytes is over max_response_bytes 8"
        );
        assert!(body.frame().await.is_none());
        // The plugin's stream was let go: what it sends now goes nowhere.
        assert!(answer_tx.send(Ok(Frame::data(Bytes::from_static(b"rest")))).await.is_err(), "stream dropped");
        assert_eq!((p.too_large.requests(), p.too_large.responses()), (0, 1));
    }
}
