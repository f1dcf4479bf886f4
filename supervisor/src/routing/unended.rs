//! A plugin's answer that ends without a `grpc-status` (no trailers, and none in its
//! headers) is given one, `INTERNAL`, naming the plugin: without it the caller's gRPC
//! library reports a "missing grpc-status trailer, possibly truncated by a proxy", which
//! names nothing and blames a proxy, and the outcome layers would not count the plugin's
//! fault.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

/// `inner`, ending with `INTERNAL` (what `said` says, asked only then) if it ends without
/// trailers or an error.
pub struct Unended<B, F> {
    inner: B,
    /// Taken once the answer's end is known to carry a status.
    said: Option<F>,
}

impl<B, F> Unended<B, F> {
    pub fn new(inner: B, said: F) -> Self {
        Self { inner, said: Some(said) }
    }
}

impl<B, F> Body for Unended<B, F>
where
    B: Body<Data = Bytes, Error = tonic::Status> + Unpin,
    F: FnOnce() -> String + Unpin,
{
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let this = &mut *self;
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if frame.is_trailers() {
                    this.said = None;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => {
                this.said = None;
                Poll::Ready(Some(Err(e)))
            }
            None => Poll::Ready(this.said.take().map(|said| {
                let mut trailers = http::HeaderMap::new();
                let _ = tonic::Status::internal(said()).add_header(&mut trailers);
                Ok(Frame::trailers(trailers))
            })),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.said.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        // Trailers are no part of the size.
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, StreamBody};

    use super::*;

    fn body(frames: Vec<Frame<Bytes>>) -> impl Body<Data = Bytes, Error = tonic::Status> {
        let frames: Vec<Result<Frame<Bytes>, tonic::Status>> = frames.into_iter().map(Ok).collect();
        let said = || "plugin \"p\" (pid 7) ended its answer without a grpc-status".to_owned();
        Unended::new(StreamBody::new(futures_util::stream::iter(frames)), said)
    }

    #[tokio::test]
    async fn an_answer_ending_without_a_status_ends_internal_naming_the_plugin() {
        let collected = body(vec![Frame::data(Bytes::from_static(b"abc"))]).collect().await.unwrap();
        let trailers = collected.trailers().cloned().expect("trailers were added");
        assert_eq!(collected.to_bytes(), "abc");
        let status = tonic::Status::from_header_map(&trailers).unwrap();
        assert_eq!(status.code(), tonic::Code::Internal);
        assert_eq!(status.message(), "plugin \"p\" (pid 7) ended its answer without a grpc-status");
    }

    #[tokio::test]
    async fn an_answer_with_its_own_trailers_keeps_them() {
        let mut own = http::HeaderMap::new();
        own.insert("grpc-status", http::HeaderValue::from_static("0"));
        let collected =
            body(vec![Frame::data(Bytes::from_static(b"abc")), Frame::trailers(own.clone())]).collect().await.unwrap();
        assert_eq!(collected.trailers(), Some(&own));
    }
}
