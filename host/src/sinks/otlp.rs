//! OTLP/HTTP logs (JSON encoding) to an OpenTelemetry collector: batches
//! of up to [`BATCH`] entries, or whatever arrived within a second, posted
//! to `<endpoint>/v1/logs`. Each entry is a log record whose body is the
//! entry's JSON line and whose attributes carry the fields a pipeline
//! routes on (kind, node, subject, pod, JTI, findings). A signed
//! checkpoint is a log record of its own kind: `event.name`
//! `tokenwatch.checkpoint`, with the origin and seq as attributes and the
//! checkpoint's JSON line (which holds the signed note) as its body.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        mpsc::{Receiver, RecvTimeoutError},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde_json::{Value, json};

use super::{Outgoing, Payload, SinkError};
use crate::trail::checkpoint::CheckpointLine;

/// Largest batch per request.
pub const BATCH: usize = 512;

/// Where to send.
#[derive(Debug, Clone)]
pub struct OtlpConfig {
    /// `http://host:port` (the collector's OTLP/HTTP receiver).
    pub endpoint: String,
    /// Per-request timeout.
    pub timeout: Duration,
}

/// A client bound to one collector.
#[derive(Debug)]
pub struct OtlpClient {
    url: String,
    agent: ureq::Agent,
}

fn attr(key: &str, value: &str) -> Value {
    json!({"key": key, "value": {"stringValue": value}})
}

/// The OTLP JSON for a batch of entries.
#[must_use]
pub fn encode(batch: &[Outgoing], node: &str) -> Value {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let records: Vec<Value> = batch
        .iter()
        .map(|item| {
            let e = match &item.payload {
                Payload::Entry(e) => e,
                Payload::Checkpoint(c) => return encode_checkpoint(c, &item.line, now),
            };
            let time = humantime::parse_rfc3339(&e.time)
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(now, |d| d.as_nanos());
            let worst = e.findings.iter().map(|f| f.severity).max();
            let (number, text) = match worst {
                None => (9, "INFO"),
                Some(crate::correlate::Severity::Info | crate::correlate::Severity::Low) => {
                    (10, "INFO")
                }
                Some(crate::correlate::Severity::Medium) => (13, "WARN"),
                Some(crate::correlate::Severity::High) => (17, "ERROR"),
                Some(crate::correlate::Severity::Critical) => (21, "FATAL"),
            };
            let mut attributes = vec![
                attr("tokenwatch.kind", e.kind.as_str()),
                attr("k8s.node.name", &e.node),
            ];
            if let Some(subject) = e.subject() {
                attributes.push(attr("tokenwatch.subject", subject));
            }
            if let Some(pod) = e.pod_key() {
                attributes.push(attr("tokenwatch.pod", &pod));
            }
            if let Some(jti) = e.jti() {
                attributes.push(attr("tokenwatch.jti", jti));
            }
            if !e.findings.is_empty() {
                let names: Vec<&str> = e.findings.iter().map(|f| f.kind.as_str()).collect();
                attributes.push(attr("tokenwatch.findings", &names.join(",")));
            }
            json!({
                "timeUnixNano": time.to_string(),
                "observedTimeUnixNano": now.to_string(),
                "severityNumber": number,
                "severityText": text,
                "body": {"stringValue": item.line.as_ref()},
                "attributes": attributes,
            })
        })
        .collect();
    json!({
        "resourceLogs": [{
            "resource": {"attributes": [attr("service.name", "tokenwatch"), attr("k8s.node.name", node)]},
            "scopeLogs": [{"scope": {"name": "tokenwatch", "version": env!("CARGO_PKG_VERSION")}, "logRecords": records}]
        }]
    })
}

/// The log record of a checkpoint.
fn encode_checkpoint(c: &CheckpointLine, line: &str, now: u128) -> Value {
    let time = humantime::parse_rfc3339(&c.time)
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(now, |d| d.as_nanos());
    json!({
        "timeUnixNano": time.to_string(),
        "observedTimeUnixNano": now.to_string(),
        "severityNumber": 9,
        "severityText": "INFO",
        "body": {"stringValue": line},
        "attributes": [
            attr("event.name", "tokenwatch.checkpoint"),
            attr("tokenwatch.kind", crate::trail::checkpoint::CHECKPOINT_KIND),
            attr("k8s.node.name", &c.node),
            attr("tokenwatch.origin", &c.origin),
            json!({"key": "tokenwatch.seq", "value": {"intValue": c.seq.to_string()}}),
        ],
    })
}

impl OtlpClient {
    /// A client for `config.endpoint`.
    ///
    /// # Errors
    /// [`SinkError::ParseOtlpEndpoint`] for anything but an http(s) URL.
    pub fn new(config: OtlpConfig) -> Result<Self, SinkError> {
        let endpoint = config.endpoint.trim_end_matches('/');
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
            || endpoint.len() < 10
        {
            return Err(SinkError::ParseOtlpEndpoint(config.endpoint.clone()));
        }
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(config.timeout))
            .http_status_as_error(true)
            .build()
            .new_agent();
        Ok(Self {
            url: format!("{endpoint}/v1/logs"),
            agent,
        })
    }

    /// Posts one batch.
    ///
    /// # Errors
    /// [`SinkError::SendOtlp`] when the collector cannot be reached or answers with an error.
    pub fn post(&self, batch: &[Outgoing]) -> Result<(), SinkError> {
        let node = batch.first().map_or("", |o| match &o.payload {
            Payload::Entry(e) => e.node.as_str(),
            Payload::Checkpoint(c) => c.node.as_str(),
        });
        let body = encode(batch, node).to_string();
        self.agent
            .post(&self.url)
            .header("Content-Type", "application/json")
            .send(body.as_bytes())
            .map(|_| ())
            .map_err(|source| SinkError::SendOtlp {
                url: self.url.clone(),
                source: Box::new(source),
            })
    }

    /// Sends until the queue closes; failed batches are counted in `errors`
    /// (entries) and dropped: the trail keeps everything anyway.
    pub fn run(&self, rx: &Receiver<Outgoing>, errors: &AtomicU64) {
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            let closed = match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(item) => {
                    batch.push(item);
                    while batch.len() < BATCH {
                        match rx.try_recv() {
                            Ok(item) => batch.push(item),
                            Err(_) => break,
                        }
                    }
                    false
                }
                Err(RecvTimeoutError::Timeout) => false,
                Err(RecvTimeoutError::Disconnected) => true,
            };
            if !batch.is_empty() {
                if let Err(err) = self.post(&batch) {
                    errors.fetch_add(batch.len() as u64, Relaxed);
                    tracing::warn!(error = %crate::error::error_chain(&err), entries = batch.len(), "OTLP sink");
                }
                batch.clear();
            }
            if closed {
                return;
            }
        }
    }
}
