//! The Prometheus scrape endpoint: `GET /metrics` over HTTP/1.1 on the
//! `metrics_listen` address. Nothing else is served there: other paths are
//! 404 and other methods 405, so the port exposes only what `supervisorctl
//! metrics` prints.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::metrics::CONTENT_TYPE;
use crate::Supervisor;

/// Answers scrapes on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, sup: Arc<Supervisor>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let sup = sup.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let sup = sup.clone();
                        async move { Ok::<_, Infallible>(answer(&req, || sup.metrics_text())) }
                    });
                    let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "metrics connection ended with an error");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

fn answer(req: &http::Request<Incoming>, text: impl FnOnce() -> String) -> http::Response<Full<Bytes>> {
    respond(req.method(), req.uri().path(), text)
}

fn respond(method: &http::Method, path: &str, text: impl FnOnce() -> String) -> http::Response<Full<Bytes>> {
    let (status, content_type, body) = match (method, path) {
        (&http::Method::GET | &http::Method::HEAD, "/metrics") => (http::StatusCode::OK, CONTENT_TYPE, text()),
        (_, "/metrics") => {
            (http::StatusCode::METHOD_NOT_ALLOWED, "text/plain", "only GET is served on /metrics\n".to_owned())
        }
        _ => (http::StatusCode::NOT_FOUND, "text/plain", "metrics are served on /metrics\n".to_owned()),
    };
    let mut response = http::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_get_on_metrics_is_answered_with_the_text() {
        let text = || "supervisor_x 1\n# EOF\n".to_owned();
        let ok = respond(&http::Method::GET, "/metrics", text);
        assert_eq!(ok.status(), http::StatusCode::OK);
        assert_eq!(ok.headers()[http::header::CONTENT_TYPE], CONTENT_TYPE);
        assert_eq!(respond(&http::Method::POST, "/metrics", text).status(), http::StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(respond(&http::Method::GET, "/", text).status(), http::StatusCode::NOT_FOUND);
        assert_eq!(respond(&http::Method::GET, "/metrics/../x", text).status(), http::StatusCode::NOT_FOUND);
    }
}
