//! The Prometheus scrape endpoint: `GET /metrics` over HTTP/1.1 on the
//! `metrics_listen` address. Nothing else is served there: other paths are
//! 404 and other methods 405, so the port exposes only what `supervisorctl
//! metrics` prints. Connections are few, short and closed after one answer,
//! so clients that connect and stall cannot use up the supervisor's
//! descriptors.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::metrics::CONTENT_TYPE;
use crate::Supervisor;

/// Scrapers served at once; more are turned away until one finishes.
const MAX_CONNECTIONS: usize = 8;

/// A scrape must send its request within this, and be answered within
/// `CONNECTION_LIMIT`; a client that stalls loses its connection.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECTION_LIMIT: Duration = Duration::from_secs(30);

/// Answers scrapes on `listener` until the task is dropped, which also ends
/// every connection it serves.
pub async fn serve(listener: tokio::net::TcpListener, sup: Arc<Supervisor>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next() => continue,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!("metrics: {MAX_CONNECTIONS} scrapes in progress, turning one away");
            continue;
        };
        let sup = sup.clone();
        connections.spawn(async move {
            let _slot = slot;
            let svc = hyper::service::service_fn(move |req| {
                let sup = sup.clone();
                async move { Ok::<_, Infallible>(respond(req.method(), req.uri().path(), || sup.metrics_text())) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), svc);
            match tokio::time::timeout(CONNECTION_LIMIT, conn).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "metrics connection ended with an error"),
                Err(_) => tracing::debug!("metrics connection closed after {CONNECTION_LIMIT:?}"),
            }
        });
    }
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
