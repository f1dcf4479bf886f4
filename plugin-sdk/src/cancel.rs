//! A caller's cancellation of a streaming request, as the plugin's handler
//! sees it: an error, never a clean end of the stream.
//!
//! tonic's decoder takes a request stream that ends in CANCELLED (the peer
//! reset it with `RST_STREAM(CANCEL)`, which is how a caller hangs up) for
//! the stream's end: a client-streaming handler would then finish as if the
//! caller had sent everything, and answer a call nobody waits for. This
//! thin layer turns that error into ABORTED, naming the cause, so the
//! handler's next read fails instead; tonic offers no setting for it.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Frame;
use tonic::body::Body;

/// Wraps every request body in [`Cancellable`].
#[derive(Clone, Copy, Debug, Default)]
pub struct CancelLayer;

impl<S> tower::Layer<S> for CancelLayer {
    type Service = CancelService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CancelService { inner }
    }
}

#[derive(Clone, Debug)]
pub struct CancelService<S> {
    inner: S,
}

impl<S> tower::Service<http::Request<Body>> for CancelService<S>
where
    S: tower::Service<http::Request<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        self.inner.call(req.map(|body| Body::new(Cancellable(body))))
    }
}

/// A request body whose CANCELLED error reads as ABORTED.
struct Cancellable(Body);

impl http_body::Body for Cancellable {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        Pin::new(&mut self.0).poll_frame(cx).map(|frame| match frame {
            Some(Err(status)) if status.code() == tonic::Code::Cancelled => Some(Err(tonic::Status::aborted(format!(
                "the caller cancelled the call: its request stream was reset ({})",
                status.message()
            )))),
            other => other,
        })
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.0.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn a_cancelled_request_stream_is_an_error_not_its_end() {
        let frames = vec![Ok(Frame::data(Bytes::from_static(b"a"))), Err(tonic::Status::cancelled("reset"))];
        let body = Body::new(http_body_util::StreamBody::new(futures_util::stream::iter(frames)));
        let mut body = Cancellable(body);
        assert!(body.frame().await.unwrap().unwrap().is_data());
        let err = body.frame().await.unwrap().unwrap_err();
        assert_eq!(err.code(), tonic::Code::Aborted);
        assert!(err.message().contains("the caller cancelled the call"), "{err:?}");
    }
}
