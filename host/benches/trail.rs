//! Trail benchmarks (issue 5): append rate with the hash chain and every
//! index, with and without the fsync of `flush`, and query by subject on a
//! 100,000-record trail. Signed checkpoints (issue 17): append rate with a
//! checkpoint every 100 ms beside it (100 times the agent's default rate),
//! side by side with the plain rate in the same run, and the cost of one
//! checkpoint (flush, sign, store) on its own.
//!
//! Entries are the realistic ones of the trail tests (a pod's process
//! reading a bound token, with claims, RBAC summary, connection and
//! findings; about 1.6 KB of JSON each).
//! Run: `cargo bench -p tokenwatch-host --bench trail`.

#[path = "../tests/trail_common/mod.rs"]
mod trail_common;

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokenwatch_core::correlate::TrailEntry;
use tokenwatch_host::trail::checkpoint::CheckpointSigner;
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
    // The same appends while another thread checkpoints every 100 ms, as
    // the agent's checkpoint task does every 10 s.
    let signer = CheckpointSigner::generate("tokenwatch/bench").unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let made = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                trail.checkpoint(&signer, "bench").unwrap();
                made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        });
        g.bench_function("append_10k_checkpoints_every_100ms", |b| {
            b.iter(|| {
                for e in &entries {
                    black_box(trail.append(e).unwrap());
                }
            });
        });
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    eprintln!(
        "checkpoints made beside the appends: {}",
        made.load(std::sync::atomic::Ordering::Relaxed)
    );
    g.finish();
    trail.flush().unwrap();
    assert!(trail.verify().unwrap().intact);
    let mut g = c.benchmark_group("trail_checkpoint");
    g.sample_size(20);
    g.bench_function("flush_sign_store", |b| {
        b.iter(|| black_box(trail.checkpoint(&signer, "bench").unwrap()));
    });
    g.finish();
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
