//! Trail benchmarks (issue 5): append rate with the hash chain and every
//! index, with and without the fsync of `flush`, and query by subject on a
//! 100,000-record trail.
//!
//! Entries are the realistic ones of the trail tests (a pod's process
//! reading a bound token, with claims, RBAC summary, connection and
//! findings; about 1.6 KB of JSON each).
//! Run: `cargo bench -p tokenwatch --bench trail`.

#[path = "../tests/trail_common/mod.rs"]
mod trail_common;

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokenwatch_core::correlate::TrailEntry;
use tokenwatch_host::trail::{Query, Trail};

/// Records per measured append batch.
const BATCH: usize = 10_000;
/// Records in the query trail.
const QUERY_RECORDS: usize = 100_000;

fn entries(n: usize) -> Vec<TrailEntry> {
    (0..n).map(trail_common::entry).collect()
}

fn append(c: &mut Criterion) {
    let entries = entries(BATCH);
    let json_len: usize = entries
        .iter()
        .map(|e| serde_json::to_vec(e).unwrap().len())
        .sum();
    eprintln!("mean entry JSON: {} bytes", json_len / BATCH);
    let mut g = c.benchmark_group("trail_append");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(20);
    // One trail for all iterations, as the agent has: it grows by 10,000
    // records per iteration.
    let dir = tempfile::tempdir().unwrap();
    let trail = Trail::open(dir.path()).unwrap();
    g.bench_function("append_10k", |b| {
        b.iter(|| {
            for e in &entries {
                black_box(trail.append(e).unwrap());
            }
        });
    });
    g.bench_function("append_10k_then_flush", |b| {
        b.iter(|| {
            for e in &entries {
                black_box(trail.append(e).unwrap());
            }
            black_box(trail.flush().unwrap());
        });
    });
    g.finish();
    trail.flush().unwrap();
    assert!(trail.verify().unwrap().intact);
}

fn query(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let trail = Trail::open(dir.path()).unwrap();
    for i in 0..QUERY_RECORDS {
        trail.append(&trail_common::entry(i)).unwrap();
    }
    trail.flush().unwrap();
    let subject = Query {
        subject: Some(trail_common::subject(7)),
        ..Query::default()
    };
    let n = trail.query(&subject).unwrap().count();
    eprintln!("query by subject on {QUERY_RECORDS} records: {n} matches");
    let mut g = c.benchmark_group("trail_query_100k");
    g.sample_size(10);
    g.bench_function("subject", |b| {
        b.iter(|| {
            assert_eq!(trail.query(&subject).unwrap().count(), n);
        });
    });
    g.bench_function("subject_limit_100", |b| {
        let q = Query {
            limit: Some(100),
            ..subject.clone()
        };
        b.iter(|| black_box(trail.query(&q).unwrap().count()));
    });
    let jti = Query {
        jti: Some("jti-4242".into()),
        ..Query::default()
    };
    g.bench_function("jti", |b| {
        b.iter(|| assert_eq!(trail.query(&jti).unwrap().count(), 10));
    });
    g.bench_function("verify", |b| {
        b.iter(|| assert!(trail.verify().unwrap().intact));
    });
    g.finish();
}

criterion_group!(benches, append, query);
criterion_main!(benches);
