//! `/healthz`, `/readyz` and `/metrics` over HTTP/1.1 (GET and HEAD),
//! served by hyper: enough for kubelet probes and Prometheus, with no web
//! framework in the agent.

use std::{
    convert::Infallible,
    sync::{Arc, atomic::Ordering::Relaxed},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use http_body_util::Full;
pub use hyper::{Method, StatusCode};
use hyper::{Request, Response, header, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// What `/readyz` checks.
#[derive(Debug)]
pub struct Readiness {
    /// Whether an RBAC snapshot is required before the agent is ready.
    pub needs_snapshot: bool,
    /// Required capabilities the process lacks (`CAP_...`), named in the 503.
    pub missing_capabilities: Vec<&'static str>,
}

/// One reply: status, content type and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The HTTP status.
    pub status: StatusCode,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
}

fn reply(status: StatusCode, content_type: &'static str, body: impl Into<String>) -> Reply {
    Reply {
        status,
        content_type,
        body: body.into(),
    }
}

/// The reply to a request for `path` with `method`.
#[must_use]
pub fn route(method: &Method, path: &str, metrics: &Metrics, readiness: &Readiness) -> Reply {
    if method != Method::GET && method != Method::HEAD {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "only GET\n");
    }
    match path {
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n"),
        "/readyz" => {
            let attached = metrics.sensor_attached.load(Relaxed);
            let snapshot = metrics.snapshot_loaded_unix.load(Relaxed) != 0;
            if !attached && !readiness.missing_capabilities.is_empty() {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!(
                        "sensor not attached: missing {}\n",
                        readiness.missing_capabilities.join(", ")
                    ),
                )
            } else if !attached {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "sensor not attached\n",
                )
            } else if readiness.needs_snapshot && !snapshot {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "no RBAC snapshot loaded\n",
                )
            } else {
                reply(StatusCode::OK, "text/plain", "ready\n")
            }
        }
        "/metrics" => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            reply(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                metrics.render(now),
            )
        }
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

fn respond(
    request: &Request<hyper::body::Incoming>,
    metrics: &Metrics,
    readiness: &Readiness,
) -> Response<Full<Bytes>> {
    let r = route(request.method(), request.uri().path(), metrics, readiness);
    let body = if request.method() == Method::HEAD {
        Bytes::new()
    } else {
        Bytes::from(r.body)
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = r.status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(r.content_type),
    );
    response
}

/// How long a client may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves until the task is dropped. A failing accept (e.g. out of file
/// descriptors) waits before the next try instead of spinning.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, readiness: Arc<Readiness>) {
    let mut failures = 0;
    loop {
        let stream = crate::net::next_connection("http", &mut failures, || listener.accept()).await;
        let (metrics, readiness) = (Arc::clone(&metrics), Arc::clone(&readiness));
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let response = respond(&request, &metrics, &readiness);
                async move { Ok::<_, Infallible>(response) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            if let Err(err) = builder
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %err, "HTTP client connection");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let m = Metrics::default();
        let needs = Readiness {
            needs_snapshot: true,
            missing_capabilities: Vec::new(),
        };
        let no_bpf = Readiness {
            needs_snapshot: false,
            missing_capabilities: vec!["CAP_SYS_ADMIN"],
        };
        let unready = route(&Method::GET, "/readyz", &m, &no_bpf);
        assert_eq!(unready.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(unready.body, "sensor not attached: missing CAP_SYS_ADMIN\n");
        let get = |path| route(&Method::GET, path, &m, &needs);
        assert_eq!(get("/healthz").status, StatusCode::OK);
        assert!(get("/readyz").body.contains("sensor not attached"));
        m.sensor_attached.store(true, Relaxed);
        assert!(get("/readyz").body.contains("no RBAC snapshot"));
        m.snapshot_loaded_unix.store(1, Relaxed);
        assert_eq!(get("/readyz").status, StatusCode::OK);
        assert!(
            get("/metrics")
                .body
                .contains("tokenwatch_sensor_attached 1")
        );
        assert_eq!(
            route(&Method::POST, "/metrics", &m, &needs).status,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(get("/nope").status, StatusCode::NOT_FOUND);
    }

    /// The real server on a loopback port, spoken to over TCP.
    #[tokio::test]
    async fn serves_http_over_loopback() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Arc::new(Metrics::default());
        metrics.sensor_attached.store(true, Relaxed);
        let server = tokio::spawn(serve(
            listener,
            metrics,
            Arc::new(Readiness {
                needs_snapshot: false,
                missing_capabilities: Vec::new(),
            }),
        ));
        for (request, expect) in [
            (
                "GET /readyz?verbose HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                "HTTP/1.1 200 OK",
            ),
            (
                "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                "tokenwatch_sensor_attached 1",
            ),
            (
                "DELETE /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                "HTTP/1.1 405",
            ),
            ("nonsense\r\n\r\n", "HTTP/1.1 400"),
        ] {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut text = String::new();
            tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut text))
                .await
                .expect("the server answers")
                .unwrap();
            assert!(text.contains(expect), "{request:?} got {text:?}");
        }
        server.abort();
    }
}
