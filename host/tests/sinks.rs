//! The agent's sinks: OTLP/HTTP logs reach a collector (a loopback server
//! reading the real OTLP JSON), a full queue drops and counts instead of
//! blocking, and a dead collector is counted as errors.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpListener,
    sync::{Arc, atomic::Ordering::Relaxed, mpsc},
    time::{Duration, Instant},
};

use serde_json::Value;
use tokenwatch_core::correlate::{
    ENTRY_SCHEMA_VERSION, EntryKind, Finding, FindingKind, Severity, TokenInfo, TrailEntry,
};
use tokenwatch_host::{
    metrics::Metrics,
    sinks::{SinkConfig, Sinks, file::FileConfig, otlp::OtlpConfig},
};

fn entry(n: usize) -> Arc<TrailEntry> {
    Arc::new(TrailEntry {
        schema: ENTRY_SCHEMA_VERSION,
        kind: EntryKind::TokenRead,
        time: "2026-01-01T00:00:00.000000001Z".into(),
        node: "node-1".into(),
        reader: None,
        token: Some(TokenInfo {
            kind: "bound".into(),
            subject: Some("system:serviceaccount:shop:web".into()),
            jti: Some(format!("jti-{n}")),
            fingerprint: "sha256:00".into(),
            validity: "valid".into(),
            signature: "verified".into(),
            ..TokenInfo::default()
        }),
        rbac: None,
        connection: None,
        findings: vec![Finding {
            kind: FindingKind::HostReader,
            severity: Severity::High,
            reason: "test".into(),
        }],
        message: None,
        repeated: None,
    })
}

/// A collector: accepts connections, reads one HTTP request each, answers
/// 200, and hands the JSON body to the test.
fn collector() -> (String, mpsc::Receiver<(String, Value)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(50) {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let mut length = 0;
            loop {
                let mut header = String::new();
                reader.read_line(&mut header).unwrap();
                if header.trim().is_empty() {
                    break;
                }
                if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
                .unwrap();
            let json: Value = serde_json::from_slice(&body).unwrap();
            if tx.send((request_line, json)).is_err() {
                break;
            }
        }
    });
    (format!("http://{addr}"), rx)
}

#[test]
fn otlp_logs_reach_the_collector_in_the_otlp_json_shape() {
    let (endpoint, rx) = collector();
    let metrics = Arc::new(Metrics::default());
    let config = SinkConfig {
        otlp: Some(OtlpConfig {
            endpoint,
            timeout: Duration::from_secs(5),
        }),
        queue_capacity: 100,
        ..SinkConfig::default()
    };
    let sinks = Sinks::start(&config, Arc::clone(&metrics)).unwrap();
    for n in 0..3 {
        sinks.send(&entry(n));
    }
    sinks.close();
    let mut records = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while records.len() < 3 {
        let (line, body) = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the collector got nothing");
        assert!(line.starts_with("POST /v1/logs "), "{line}");
        let resource = &body["resourceLogs"][0];
        assert!(
            resource["resource"]["attributes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["key"] == "service.name")
        );
        records.extend(
            resource["scopeLogs"][0]["logRecords"]
                .as_array()
                .unwrap()
                .clone(),
        );
    }
    let first = &records[0];
    assert_eq!(first["severityText"], "ERROR");
    assert_eq!(first["timeUnixNano"], "1767225600000000001");
    let body: Value = serde_json::from_str(first["body"]["stringValue"].as_str().unwrap()).unwrap();
    assert_eq!(body["kind"], "token-read");
    let attrs = first["attributes"].as_array().unwrap();
    let attr = |k: &str| {
        attrs
            .iter()
            .find(|a| a["key"] == k)
            .map(|a| a["value"]["stringValue"].clone())
    };
    assert_eq!(
        attr("tokenwatch.subject"),
        Some(Value::from("system:serviceaccount:shop:web"))
    );
    assert_eq!(
        attr("tokenwatch.findings"),
        Some(Value::from("host-reader"))
    );
    assert_eq!(metrics.sink_errors[2].load(Relaxed), 0);
}

#[test]
fn a_dead_collector_counts_errors_and_a_full_queue_counts_drops_without_blocking() {
    // A port nothing listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics = Arc::new(Metrics::default());
    let dir = tempfile::tempdir().unwrap();
    let config = SinkConfig {
        otlp: Some(OtlpConfig {
            endpoint: format!("http://127.0.0.1:{port}"),
            timeout: Duration::from_secs(2),
        }),
        file: Some(FileConfig {
            path: dir.path().join("out.jsonl"),
            max_bytes: 1 << 20,
            keep: 1,
        }),
        queue_capacity: 4,
        ..SinkConfig::default()
    };
    let sinks = Sinks::start(&config, Arc::clone(&metrics)).unwrap();
    let start = Instant::now();
    for n in 0..2_000 {
        sinks.send(&entry(n));
    }
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "send blocked: {:?}",
        start.elapsed()
    );
    sinks.close();
    let otlp_drops = metrics.sink_drops[2].load(Relaxed);
    let otlp_errors = metrics.sink_errors[2].load(Relaxed);
    assert!(otlp_drops > 0, "the OTLP queue never filled");
    assert_eq!(
        otlp_drops + otlp_errors,
        2_000,
        "every entry is either dropped or failed"
    );
    // The file sink is fast: whatever it did not drop is in the file, whole.
    let written = std::fs::read_to_string(dir.path().join("out.jsonl"))
        .unwrap()
        .lines()
        .count() as u64;
    assert_eq!(written + metrics.sink_drops[1].load(Relaxed), 2_000);
}

#[test]
fn a_bad_otlp_endpoint_is_refused_at_start() {
    let config = SinkConfig {
        otlp: Some(OtlpConfig {
            endpoint: "collector:4318".into(),
            timeout: Duration::from_secs(1),
        }),
        ..SinkConfig::default()
    };
    let err = Sinks::start(&config, Arc::new(Metrics::default())).unwrap_err();
    assert!(err.to_string().contains("invalid OTLP endpoint"), "{err}");
}

#[test]
fn checkpoints_reach_every_sink_as_their_own_kind() {
    use tokenwatch_host::trail::{Trail, checkpoint::CheckpointSigner};
    let (endpoint, rx) = collector();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out.jsonl");
    let metrics = Arc::new(Metrics::default());
    let config = SinkConfig {
        file: Some(FileConfig {
            path: file.clone(),
            max_bytes: 1 << 20,
            keep: 1,
        }),
        otlp: Some(OtlpConfig {
            endpoint,
            timeout: Duration::from_secs(5),
        }),
        queue_capacity: 100,
        ..SinkConfig::default()
    };
    let sinks = Sinks::start(&config, Arc::clone(&metrics)).unwrap();
    let trail = Trail::open(&dir.path().join("data")).unwrap();
    trail.append(&entry(0)).unwrap();
    let signer = CheckpointSigner::generate("tokenwatch/node-1").unwrap();
    let signed = trail.checkpoint(&signer, "node-1").unwrap();
    sinks.send(&entry(1));
    sinks.send_checkpoint(signed.to_line());
    sinks.close();
    // The file: an entry line, then the checkpoint line with its note.
    let lines: Vec<Value> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["kind"], "checkpoint");
    assert_eq!(lines[1]["seq"], 1);
    assert_eq!(lines[1]["note"], signed.note.as_str());
    // OTLP: a log record of its own kind.
    let mut records = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while records.len() < 2 {
        let (_, body) = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the collector got nothing");
        records.extend(
            body["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
                .as_array()
                .unwrap()
                .clone(),
        );
    }
    let cp = records
        .iter()
        .find(|r| {
            r["attributes"].as_array().unwrap().iter().any(|a| {
                a["key"] == "event.name" && a["value"]["stringValue"] == "tokenwatch.checkpoint"
            })
        })
        .expect("a checkpoint log record");
    let body: Value = serde_json::from_str(cp["body"]["stringValue"].as_str().unwrap()).unwrap();
    assert_eq!(body["kind"], "checkpoint");
    assert_eq!(body["origin"], signed.checkpoint.origin.as_str());
    let seq = cp["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["key"] == "tokenwatch.seq")
        .unwrap();
    assert_eq!(seq["value"]["intValue"], "1");
}
