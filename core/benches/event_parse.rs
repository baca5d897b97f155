//! The audit-event reader against the serde derive it replaced (issue 16):
//! per event, on a ServiceAccount's bound-token event as the replay
//! benchmark generates it (about 1.2 KB) and on the real events of the
//! Panther fixture log.
//! Run: `cargo bench -p tokenwatch-core --bench event_parse`.

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokenwatch_core::replay::event::AuditEvent;

/// One event in the shape `cargo xtask bench replay` writes most.
const SERVICE_ACCOUNT_EVENT: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"0d83b3e2-9a21-487a-854c-4c79f1fe9d67","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/ns-41/pods","verb":"list","user":{"username":"system:serviceaccount:ns-41:sa-5","uid":"6a8e6b4c-95db-4c5e-8b15-c657c29bfd1b","groups":["system:serviceaccounts","system:serviceaccounts:ns-41","system:authenticated"],"extra":{"authentication.kubernetes.io/credential-id":["JTI=64762afc-e873-4a50-84fc-1d7567927786"],"authentication.kubernetes.io/node-name":["node-15"],"authentication.kubernetes.io/node-uid":["d27214b2-33d3-4d26-8207-c7a117d25f9d"],"authentication.kubernetes.io/pod-name":["sa-5-7d9f8c6b5-x5k41"],"authentication.kubernetes.io/pod-uid":["a4ee8b72-6edd-4677-82cb-b700f7f26152"]}},"sourceIPs":["10.244.15.38"],"userAgent":"app-5/v1.4.2 (linux/amd64) kubernetes/4c9411e","objectRef":{"resource":"pods","namespace":"ns-41","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":200},"requestReceivedTimestamp":"2025-06-01T00:00:00.001664Z","stageTimestamp":"2025-06-01T00:00:00.003164Z","annotations":{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":"RBAC: allowed by RoleBinding \"sa-5-binding/ns-41\" of Role \"sa-5-role\" to ServiceAccount \"sa-5/ns-41\""}}"#;

fn panther_events() -> Vec<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/audit-logs/panther-labs-panther-analysis/derived-events.jsonl");
    std::fs::read_to_string(path)
        .expect("panther fixture")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("event_parse/service_account");
    group.throughput(Throughput::Elements(1));
    let bytes = SERVICE_ACCOUNT_EVENT.as_bytes();
    group.bench_function("reader", |b| {
        b.iter(|| AuditEvent::parse(black_box(bytes)).map(|e| e.verb().len()));
    });
    group.bench_function("serde", |b| {
        b.iter(|| AuditEvent::parse_reference(black_box(bytes)).map(|e| e.verb().len()));
    });
    group.finish();

    let events = panther_events();
    let mut group = c.benchmark_group("event_parse/panther_fixture");
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function("reader", |b| {
        b.iter(|| {
            events
                .iter()
                .filter(|e| AuditEvent::parse(black_box(e.as_bytes())).is_ok())
                .count()
        });
    });
    group.bench_function("serde", |b| {
        b.iter(|| {
            events
                .iter()
                .filter(|e| AuditEvent::parse_reference(black_box(e.as_bytes())).is_ok())
                .count()
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
