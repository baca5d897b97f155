//! `/healthz`, `/readyz` and `/metrics` over plain HTTP/1.1 (one request per
//! connection, GET only): enough for kubelet probes and Prometheus, with no
//! web framework in the agent.

use std::{
    sync::{Arc, atomic::Ordering::Relaxed},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

use super::metrics::Metrics;

/// What `/readyz` checks.
#[derive(Debug)]
pub struct Readiness {
    /// Whether an RBAC snapshot is required before the agent is ready.
    pub needs_snapshot: bool,
    /// Required capabilities the process lacks (`CAP_...`), named in the 503.
    pub missing_capabilities: Vec<&'static str>,
}

fn response(status: &str, content_type: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The reply to one request line.
#[must_use]
pub fn route(request_line: &str, metrics: &Metrics, readiness: &Readiness) -> String {
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    if method != "GET" && method != "HEAD" {
        return response("405 Method Not Allowed", "text/plain", "only GET\n");
    }
    match path {
        "/healthz" => response("200 OK", "text/plain", "ok\n"),
        "/readyz" => {
            let attached = metrics.sensor_attached.load(Relaxed);
            let snapshot = metrics.snapshot_loaded_unix.load(Relaxed) != 0;
            if !attached && !readiness.missing_capabilities.is_empty() {
                response(
                    "503 Service Unavailable",
                    "text/plain",
                    &format!(
                        "sensor not attached: missing {}\n",
                        readiness.missing_capabilities.join(", ")
                    ),
                )
            } else if !attached {
                response(
                    "503 Service Unavailable",
                    "text/plain",
                    "sensor not attached\n",
                )
            } else if readiness.needs_snapshot && !snapshot {
                response(
                    "503 Service Unavailable",
                    "text/plain",
                    "no RBAC snapshot loaded\n",
                )
            } else {
                response("200 OK", "text/plain", "ready\n")
            }
        }
        "/metrics" => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            response("200 OK", "text/plain; version=0.0.4", &metrics.render(now))
        }
        _ => response("404 Not Found", "text/plain", "not found\n"),
    }
}

async fn serve_one(mut stream: TcpStream, metrics: Arc<Metrics>, readiness: Arc<Readiness>) {
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    // Read until the end of the request line (bounded in size and time).
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        while len < buf.len() {
            match stream.read(&mut buf[len..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => len += n,
            }
            if buf[..len].windows(2).any(|w| w == b"\r\n") {
                break;
            }
        }
    })
    .await;
    if read.is_err() {
        return;
    }
    let text = String::from_utf8_lossy(&buf[..len]);
    let line = text.lines().next().unwrap_or("");
    let reply = route(line, &metrics, &readiness);
    let _ = stream.write_all(reply.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Serves until the listener fails.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, readiness: Arc<Readiness>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(serve_one(
            stream,
            Arc::clone(&metrics),
            Arc::clone(&readiness),
        ));
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
            missing_capabilities: vec!["CAP_BPF"],
        };
        assert!(route("GET /readyz HTTP/1.1", &m, &no_bpf).contains("503 Service Unavailable\r\n"));
        assert!(route("GET /readyz HTTP/1.1", &m, &no_bpf).ends_with("missing CAP_BPF\n"));
        assert!(route("GET /healthz HTTP/1.1", &m, &needs).starts_with("HTTP/1.1 200"));
        assert!(route("GET /readyz HTTP/1.1", &m, &needs).contains("sensor not attached"));
        m.sensor_attached.store(true, Relaxed);
        assert!(route("GET /readyz HTTP/1.1", &m, &needs).contains("no RBAC snapshot"));
        m.snapshot_loaded_unix.store(1, Relaxed);
        assert!(route("GET /readyz HTTP/1.1", &m, &needs).starts_with("HTTP/1.1 200"));
        assert!(
            route("GET /metrics HTTP/1.1", &m, &needs).contains("tokenwatch_sensor_attached 1")
        );
        assert!(route("POST /metrics HTTP/1.1", &m, &needs).starts_with("HTTP/1.1 405"));
        assert!(route("GET /nope HTTP/1.1", &m, &needs).starts_with("HTTP/1.1 404"));
    }
}
