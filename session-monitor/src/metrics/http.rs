//! The HTTP endpoint: `/metrics` for Prometheus, `/healthz` and `/readyz` for
//! Kubernetes probes. HTTP/1.1 only, GET and HEAD only.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Context as _, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    header::{ACCEPT, ALLOW, CONTENT_TYPE, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::Semaphore, task::JoinHandle};

use super::{Health, Metrics};

/// Content type of the Prometheus text format, the default answer of `/metrics`.
pub const PROMETHEUS_CONTENT_TYPE: &str =
    prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Content type of the OpenMetrics text format, answered when the scraper's `Accept`
/// header asks for it (Prometheus does).
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Connections served at once; further ones wait in the listen backlog.
const MAX_CONNECTIONS: usize = 32;
/// A client must send its request headers within this time, or it is disconnected.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds `addr` and serves the endpoints on it until the returned task is aborted;
/// returns the bound address (port 0 picks a free port). Fails, naming the address,
/// when it cannot be bound.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    health: Health,
) -> Result<(JoinHandle<()>, SocketAddr)> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot serve metrics on {addr}"))?;
    let bound = listener.local_addr().unwrap_or(addr);
    tracing::info!(addr = %bound, "serving /metrics, /healthz and /readyz");
    Ok((spawn_server(listener, metrics, health), bound))
}

/// Serves the endpoints on an already bound listener.
fn spawn_server(listener: TcpListener, metrics: Arc<Metrics>, health: Health) -> JoinHandle<()> {
    tokio::spawn(accept_loop(listener, metrics, health))
}

async fn accept_loop(listener: TcpListener, metrics: Arc<Metrics>, health: Health) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            Err(err) => {
                // Out of file descriptors and the like: pause instead of spinning.
                tracing::warn!("metrics endpoint: accepting a connection: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = Arc::clone(&metrics);
        let health = health.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let response = respond(&request, &metrics, &health);
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(err) = connection.await {
                tracing::debug!("metrics endpoint: connection: {err}");
            }
            drop(slot);
        });
    }
}

/// The answer to one request.
fn respond<B>(request: &Request<B>, metrics: &Metrics, health: &Health) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match request.uri().path() {
        "/metrics" => {
            let wants_openmetrics = request
                .headers()
                .get_all(ACCEPT)
                .iter()
                .filter_map(|value| value.to_str().ok())
                .any(|value| value.contains("application/openmetrics-text"));
            metrics.set_ready(health.readiness().is_ok());
            let (body, content_type) = if wants_openmetrics {
                (metrics.encode_openmetrics(), OPENMETRICS_CONTENT_TYPE)
            } else {
                (metrics.encode(), PROMETHEUS_CONTENT_TYPE)
            };
            with_type(StatusCode::OK, body, content_type)
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => match health.readiness() {
            Ok(()) => text(StatusCode::OK, "ready\n"),
            Err(reason) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {reason}\n"),
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz or /readyz\n",
        ),
    }
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<Full<Bytes>> {
    with_type(status, body.into(), "text/plain; charset=utf-8")
}

fn with_type(
    status: StatusCode,
    body: String,
    content_type: &'static str,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// Starts the server on an ephemeral loopback port.
    async fn start(health: Health) -> (SocketAddr, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (addr, spawn_server(listener, Metrics::new(false), health))
    }

    /// One request over a real socket; returns the status code, the headers (lower
    /// case) and the body.
    async fn get(
        addr: SocketAddr,
        method: &str,
        path: &str,
        accept: Option<&str>,
    ) -> (u16, String, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let accept = accept
            .map(|a| format!("Accept: {a}\r\n"))
            .unwrap_or_default();
        let request =
            format!("{method} {path} HTTP/1.1\r\nHost: test\r\n{accept}Connection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = String::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut raw))
            .await
            .expect("the server answers")
            .unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").expect("a complete response");
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .expect("a status line");
        (status, head.to_ascii_lowercase(), body.to_string())
    }

    #[tokio::test]
    async fn health_endpoints_follow_the_core() {
        let health = Health::new();
        let (addr, server) = start(health.clone()).await;

        let (status, _, body) = get(addr, "GET", "/healthz", None).await;
        assert_eq!((status, body.as_str()), (200, "ok\n"));

        let (status, _, body) = get(addr, "GET", "/readyz", None).await;
        assert_eq!(status, 503);
        assert_eq!(body, "not ready: kernel probes are not attached\n");
        assert_eq!(body.lines().count(), 1);

        health.set_probes_attached(true);
        let (status, _, body) = get(addr, "GET", "/readyz", None).await;
        assert_eq!(status, 503);
        assert!(body.contains("ring buffer"), "{body}");

        health.set_ringbuf_reading(true);
        let (status, _, body) = get(addr, "GET", "/readyz", None).await;
        assert_eq!((status, body.as_str()), (200, "ready\n"));

        health.set_ringbuf_reading(false);
        let (status, _, _) = get(addr, "GET", "/readyz", None).await;
        assert_eq!(status, 503);
        // Liveness does not depend on readiness.
        let (status, _, _) = get(addr, "GET", "/healthz", None).await;
        assert_eq!(status, 200);
        server.abort();
    }

    #[tokio::test]
    async fn metrics_are_served_in_the_format_asked_for() {
        let (addr, server) = start(Health::new()).await;

        let (status, head, body) = get(addr, "GET", "/metrics", None).await;
        assert_eq!(status, 200);
        assert!(
            head.contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
            "{head}"
        );
        assert!(body.contains("# TYPE session_monitor_sessions_started_total counter"));
        assert!(!body.contains("# EOF"));

        let accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
        let (status, head, body) = get(addr, "GET", "/metrics", Some(accept)).await;
        assert_eq!(status, 200);
        assert!(
            head.contains("content-type: application/openmetrics-text; version=1.0.0"),
            "{head}"
        );
        assert!(body.contains("# TYPE session_monitor_sessions_started counter"));
        assert!(body.ends_with("# EOF\n"));

        let (status, _, body) = get(addr, "HEAD", "/metrics", None).await;
        assert_eq!((status, body.as_str()), (200, ""));
        server.abort();
    }

    #[tokio::test]
    async fn other_paths_and_methods_are_refused() {
        let (addr, server) = start(Health::new()).await;
        let (status, _, _) = get(addr, "GET", "/", None).await;
        assert_eq!(status, 404);
        let (status, head, _) = get(addr, "POST", "/metrics", None).await;
        assert_eq!(status, 405);
        assert!(head.contains("allow: get, head"), "{head}");
        server.abort();
    }
}
