//! The trail on real sled files in temp dirs: append and query by every
//! index, time ranges, combined filters, export schema, verify, tampering
//! (rewrite, delete, reorder, relink, truncate), retention by age and size,
//! reopening, concurrent readers.

mod trail_common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokenwatch_core::correlate::FindingKind;
use tokenwatch_host::trail::verify::verify_lines;
use tokenwatch_host::trail::{GENESIS_HASH, Problem, Query, Record, Trail, TrailError};
use trail_common::{edit_block, edit_line, entry, raw_tree, remove_line};

const N: usize = 300;

/// A trail with entries `0..n` (seq = i + 1), flushed.
fn filled(n: usize) -> (tempfile::TempDir, Trail) {
    let dir = tempfile::tempdir().unwrap();
    let trail = Trail::open(dir.path()).unwrap();
    for i in 0..n {
        assert_eq!(trail.append(&entry(i)).unwrap(), i as u64 + 1);
    }
    assert_eq!(trail.flush().unwrap(), n as u64);
    (dir, trail)
}

/// A trail with entries `0..n`, flushed every `unit` records (each flush
/// writes one unit, the granularity of retention).
fn filled_in_units(n: usize, unit: usize) -> (tempfile::TempDir, Trail) {
    let dir = tempfile::tempdir().unwrap();
    let trail = Trail::open(dir.path()).unwrap();
    for i in 0..n {
        trail.append(&entry(i)).unwrap();
        if (i + 1) % unit == 0 {
            trail.flush().unwrap();
        }
    }
    trail.flush().unwrap();
    (dir, trail)
}

fn all(trail: &Trail, q: &Query) -> Vec<Record> {
    trail
        .query(q)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

fn seqs(records: &[Record]) -> Vec<u64> {
    records.iter().map(|r| r.seq).collect()
}

/// Seqs of the entries `0..n` for which `pred(i)` holds.
fn expected(n: usize, pred: impl Fn(usize) -> bool) -> Vec<u64> {
    (0..n).filter(|&i| pred(i)).map(|i| i as u64 + 1).collect()
}

fn intact(trail: &Trail) -> tokenwatch_host::trail::VerifyReport {
    let report = trail.verify().unwrap();
    assert!(report.intact, "{report:?}");
    report
}

/// More records than the applier's queue holds: appends wait for it,
/// nothing is lost or reordered, and a handle dropped without a flush
/// closes the store (its sealed units written) so it can be reopened at once.
#[test]
fn many_units_through_the_applier_then_drop_and_reopen() {
    use tokenwatch_host::trail::{BATCH_RECORDS, QUEUE_UNITS};
    let n = BATCH_RECORDS * (QUEUE_UNITS + 3) + 17;
    let (dir, trail) = filled(n);
    assert_eq!(all(&trail, &Query::default()).len(), n);
    assert_eq!(intact(&trail).checked, n as u64);
    for i in n..n + BATCH_RECORDS {
        trail.append(&entry(i)).unwrap();
    }
    drop(trail);
    let trail = Trail::open(dir.path()).expect("the store is closed when the last handle drops");
    // The sealed unit was written; nothing was flushed after it, but a
    // clean drop loses nothing that was sealed.
    assert_eq!(trail.stats().unwrap().records, (n + BATCH_RECORDS) as u64);
    assert_eq!(
        trail.append(&entry(0)).unwrap(),
        (n + BATCH_RECORDS + 1) as u64
    );
    trail.flush().unwrap();
    intact(&trail);
}

#[test]
fn append_assigns_seqs_and_chains_hashes() {
    let (_dir, trail) = filled(50);
    let records = all(&trail, &Query::default());
    assert_eq!(seqs(&records), (1..=50).collect::<Vec<_>>());
    assert_eq!(records[0].prev_hash, GENESIS_HASH);
    for pair in records.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash);
        assert!(pair[1].time_unix_nanos >= pair[0].time_unix_nanos);
    }
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.entry, entry(i));
        assert_eq!(r.trail_schema, 1);
        assert_eq!(r.hash.len(), 64);
        let t = humantime::parse_rfc3339(&r.time).unwrap();
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap().as_nanos(),
            u128::from(r.time_unix_nanos)
        );
    }
    let report = intact(&trail);
    assert_eq!(report.checked, 50);
    assert_eq!(report.last_hash.as_deref(), Some(records[49].hash.as_str()));
}

#[test]
fn query_by_each_index() {
    let (_dir, trail) = filled(N);
    let q = |f: &dyn Fn(&mut Query)| {
        let mut q = Query::default();
        f(&mut q);
        seqs(&all(&trail, &q))
    };
    let subject = trail_common::subject(7);
    assert_eq!(
        q(&|q| q.subject = Some(subject.clone())),
        expected(N, |i| trail_common::subject(i) == subject)
    );
    // Pod by namespace/name, by UID, and by name + namespace.
    let (ns, name, uid) = trail_common::pod(8);
    let same_pod = |i: usize| !i.is_multiple_of(11) && trail_common::pod(i) == trail_common::pod(8);
    assert_eq!(
        q(&|q| q.pod = Some(format!("{ns}/{name}"))),
        expected(N, same_pod)
    );
    assert_eq!(q(&|q| q.pod = Some(uid.clone())), expected(N, same_pod));
    assert_eq!(
        q(&|q| {
            q.pod = Some(name.clone());
            q.namespace = Some(ns.clone());
        }),
        expected(N, same_pod)
    );
    // Namespace: the reader pod's or the token's (the same here).
    assert_eq!(
        q(&|q| q.namespace = Some("payments".into())),
        expected(N, |i| i % 3 == 1)
    );
    assert_eq!(
        q(&|q| q.jti = Some("jti-0012".into())),
        expected(N, |i| i / 10 == 12)
    );
    for kind in FindingKind::ALL {
        assert_eq!(
            q(&|q| q.finding = Some(kind)),
            expected(N, |i| trail_common::findings(i).contains(&kind)),
            "{kind:?}"
        );
    }
    // Unknown values select nothing.
    assert!(q(&|q| q.subject = Some("system:serviceaccount:x:y".into())).is_empty());
    assert!(q(&|q| q.pod = Some("nope/nope".into())).is_empty());
}

#[test]
fn combined_filters_and_limit() {
    let (_dir, trail) = filled(N);
    let got = all(
        &trail,
        &Query {
            namespace: Some("shop".into()),
            finding: Some(FindingKind::ForeignToken),
            ..Query::default()
        },
    );
    assert_eq!(
        seqs(&got),
        expected(N, |i| i.is_multiple_of(3) && i.is_multiple_of(4))
    );
    let got = all(
        &trail,
        &Query {
            subject: Some(trail_common::subject(0)),
            finding: Some(FindingKind::PrivilegedSubject),
            jti: Some("jti-0003".into()),
            ..Query::default()
        },
    );
    assert_eq!(
        seqs(&got),
        expected(N, |i| trail_common::subject(i) == trail_common::subject(0)
            && i.is_multiple_of(6)
            && i / 10 == 3)
    );
    let got = all(
        &trail,
        &Query {
            namespace: Some("kube-system".into()),
            limit: Some(4),
            ..Query::default()
        },
    );
    assert_eq!(seqs(&got), expected(N, |i| i % 3 == 2)[..4].to_vec());
}

#[test]
fn time_ranges() {
    let (_dir, trail) = filled(40);
    let records = all(&trail, &Query::default());
    let at = |r: &Record| UNIX_EPOCH + Duration::from_nanos(r.time_unix_nanos);
    let (lo, hi) = (&records[10], &records[29]);
    let window = |since: Option<SystemTime>, until: Option<SystemTime>, extra: &Query| {
        let q = Query {
            since,
            until,
            ..extra.clone()
        };
        seqs(&all(&trail, &q))
    };
    let by_time = |pred: &dyn Fn(&Record) -> bool| -> Vec<u64> {
        records.iter().filter(|r| pred(r)).map(|r| r.seq).collect()
    };
    let none = Query::default();
    assert_eq!(
        window(Some(at(lo)), Some(at(hi)), &none),
        by_time(
            &|r| r.time_unix_nanos >= lo.time_unix_nanos && r.time_unix_nanos <= hi.time_unix_nanos
        )
    );
    assert_eq!(
        window(Some(at(hi)), None, &none),
        by_time(&|r| r.time_unix_nanos >= hi.time_unix_nanos)
    );
    assert_eq!(
        window(None, Some(at(lo)), &none),
        by_time(&|r| r.time_unix_nanos <= lo.time_unix_nanos)
    );
    let shop = Query {
        namespace: Some("shop".into()),
        ..Query::default()
    };
    assert_eq!(
        window(Some(at(lo)), Some(at(hi)), &shop),
        by_time(&|r| r.time_unix_nanos >= lo.time_unix_nanos
            && r.time_unix_nanos <= hi.time_unix_nanos
            && r.entry.namespaces().contains(&"shop"))
    );
    // Relative: everything was appended within the last hour, nothing in the future.
    let now = SystemTime::now();
    let hour_ago = tokenwatch_host::trail::parse_time("1h", now).unwrap();
    assert_eq!(window(Some(hour_ago), None, &none).len(), 40);
    assert!(window(Some(now + Duration::from_secs(60)), None, &none).is_empty());
}

#[test]
fn export_is_the_exact_schema_and_verifies_on_its_own() {
    let (_dir, trail) = filled(60);
    let mut out = Vec::new();
    assert_eq!(trail.export(&mut out, &Query::default()).unwrap(), 60);
    let text = String::from_utf8(out.clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 60);
    let records = all(&trail, &Query::default());
    for (line, record) in lines.iter().zip(&records) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let obj = v.as_object().unwrap();
        let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        let mut sorted = vec![
            "entry",
            "hash",
            "prev_hash",
            "seq",
            "time",
            "time_unix_nanos",
            "trail_schema",
        ];
        sorted.sort_unstable();
        assert_eq!(keys, sorted, "serde_json sorts keys");
        assert!(line.starts_with("{\"trail_schema\":1,\"seq\":"), "{line}");
        assert_eq!(v["trail_schema"], 1);
        assert_eq!(v["seq"], record.seq);
        assert_eq!(v["time"], record.time.as_str());
        assert_eq!(v["time_unix_nanos"], record.time_unix_nanos);
        assert_eq!(v["prev_hash"], record.prev_hash.as_str());
        assert_eq!(v["hash"], record.hash.as_str());
        assert_eq!(v["entry"]["schema"], 3, "entry schema 3 (issue 13)");
        let back: Record = serde_json::from_str(line).unwrap();
        assert_eq!(&back, record);
        // The hash is SHA-256 of the documented input, recomputed from the line.
        let entry_json = &line[line.find(",\"entry\":").unwrap() + 9..line.len() - 1];
        let input = format!(
            "tokenwatch-trail/v1\n{}\n{}\n{}\n{}\n{entry_json}",
            record.seq, record.time_unix_nanos, record.time, record.prev_hash
        );
        use sha2::Digest as _;
        assert_eq!(hex::encode(sha2::Sha256::digest(input)), record.hash);
    }
    let report = verify_lines(out.as_slice()).unwrap();
    assert!(report.intact, "{report:?}");
    assert_eq!(report.checked, 60);
    // A changed exported line is named.
    let tampered: String = lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let l = if i == 2 {
                l.replacen("\"node\":\"node-a\"", "\"node\":\"node-b\"", 1)
            } else {
                (*l).to_owned()
            };
            l + "\n"
        })
        .collect();
    let report = verify_lines(tampered.as_bytes()).unwrap();
    assert_eq!(report.checked, 2);
    let f = report.failure.unwrap();
    assert_eq!((f.seq, f.problem), (3, Problem::Hash));
    // A dropped line is named.
    let dropped: String = lines
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 20)
        .map(|(_, l)| format!("{l}\n"))
        .collect();
    let f = verify_lines(dropped.as_bytes()).unwrap().failure.unwrap();
    assert_eq!((f.seq, f.problem), (21, Problem::Missing));
    // A filtered export holds exactly the matching records.
    let mut out = Vec::new();
    let q = Query {
        finding: Some(FindingKind::HostReader),
        ..Query::default()
    };
    let n = trail.export(&mut out, &q).unwrap();
    assert_eq!(n as usize, expected(60, |i| i.is_multiple_of(11)).len());
}

#[test]
fn reopening_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let last_hash = {
        let trail = Trail::open(dir.path()).unwrap();
        for i in 0..10 {
            trail.append(&entry(i)).unwrap();
        }
        assert_eq!(trail.flush().unwrap(), 10);
        all(&trail, &Query::default())[9].hash.clone()
    };
    let trail = Trail::open(dir.path()).unwrap();
    assert_eq!(trail.durable_seq(), 10);
    assert_eq!(trail.append(&entry(10)).unwrap(), 11);
    trail.flush().unwrap();
    let r = all(
        &trail,
        &Query {
            limit: Some(100),
            ..Query::default()
        },
    );
    assert_eq!(r[10].seq, 11);
    assert_eq!(r[10].prev_hash, last_hash);
    intact(&trail);
}

fn failure(trail: &Trail) -> (u64, Problem, String) {
    let report = trail.verify().unwrap();
    assert!(!report.intact);
    let f = report.failure.unwrap();
    (f.seq, f.problem, f.detail)
}

#[test]
fn tampering_with_a_value_is_named() {
    let (_dir, trail) = filled(30);
    edit_line(trail.db(), 17, |l| l.replacen("sa-", "sa-evil-", 1));
    let (seq, problem, detail) = failure(&trail);
    assert_eq!((seq, problem), (17, Problem::Hash), "{detail}");
    assert!(detail.contains("changed after it was written"), "{detail}");
    assert_eq!(trail.verify().unwrap().checked, 16);
}

#[test]
fn tampering_with_the_hash_too_breaks_the_next_link() {
    let (_dir, trail) = filled(30);
    let r = all(&trail, &Query::default()).remove(11);
    let mut forged = r.clone();
    forged.entry.node = "node-evil".into();
    let json = serde_json::to_vec(&forged.entry).unwrap();
    let hash = tokenwatch_host::trail::record::compute_hash(
        r.seq,
        r.time_unix_nanos,
        &r.time,
        &r.prev_hash,
        &json,
    );
    let line = format!(
        "{{\"trail_schema\":1,\"seq\":{},\"time\":\"{}\",\"time_unix_nanos\":{},\"prev_hash\":\"{}\",\"hash\":\"{hash}\",\"entry\":{}}}",
        r.seq,
        r.time,
        r.time_unix_nanos,
        r.prev_hash,
        String::from_utf8(json).unwrap()
    );
    edit_line(trail.db(), 12, |_| line.clone());
    let (seq, problem, detail) = failure(&trail);
    assert_eq!((seq, problem), (13, Problem::PrevHash), "{detail}");
}

#[test]
fn deleting_a_record_is_named() {
    let (_dir, trail) = filled(30);
    remove_line(trail.db(), 9);
    let (seq, problem, detail) = failure(&trail);
    assert_eq!((seq, problem), (9, Problem::Missing), "{detail}");
    assert!(detail.contains("record 9 is missing"), "{detail}");
    // The first record too.
    let (_dir, trail) = filled(5);
    remove_line(trail.db(), 1);
    assert_eq!(failure(&trail).0, 1);
}

#[test]
fn deleting_the_tail_is_named() {
    let (_dir, trail) = filled(30);
    for seq in (28..=30).rev() {
        remove_line(trail.db(), seq);
    }
    let (seq, problem, detail) = failure(&trail);
    assert_eq!((seq, problem), (28, Problem::Missing), "{detail}");
    assert!(detail.contains("28 to 30"), "{detail}");
}

#[test]
fn reordering_is_named() {
    let (_dir, trail) = filled(30);
    edit_block(trail.db(), 5, |first, mut lines| {
        let i = usize::try_from(5 - first).unwrap();
        lines.swap(i, i + 1);
        lines
    });
    let (seq, problem, detail) = failure(&trail);
    assert_eq!((seq, problem), (5, Problem::Misplaced), "{detail}");
    assert!(
        detail.contains("record 6 is stored where record 5 belongs"),
        "{detail}"
    );
    // Whole blocks swapped.
    let (_dir, trail) = filled(300);
    let tree = raw_tree(trail.db());
    let blocks: Vec<(sled::IVec, sled::IVec)> =
        tree.scan_prefix(b"b").collect::<Result<_, _>>().unwrap();
    assert!(blocks.len() >= 3, "records are packed in several blocks");
    tree.insert(&blocks[1].0, blocks[2].1.clone()).unwrap();
    tree.insert(&blocks[2].0, blocks[1].1.clone()).unwrap();
    let first_of_second = u64::from_be_bytes(blocks[1].0[1..].try_into().unwrap());
    let (seq, _, detail) = failure(&trail);
    assert_eq!(seq, first_of_second, "{detail}");
}

#[test]
fn garbage_is_named_and_queries_report_it() {
    let (_dir, trail) = filled(10);
    edit_line(trail.db(), 4, |_| "{not json".to_owned());
    let (seq, problem, detail) = failure(&trail);
    assert_eq!((seq, problem), (4, Problem::Undecodable), "{detail}");
    let err = trail
        .query(&Query::default())
        .unwrap()
        .find_map(Result::err)
        .unwrap();
    assert!(
        matches!(
            err,
            TrailError::Record(tokenwatch_core::trail::RecordError::DecodeRecord { seq: 4, .. })
        ),
        "{err}"
    );
}

#[test]
fn retention_by_age_keeps_the_chain_verifiable() {
    let (dir, trail) = filled_in_units(100, 10);
    let records = all(&trail, &Query::default());
    // Pretend it is one hour after record 40 was appended; keep one hour.
    let keep = Duration::from_secs(3600);
    let now = UNIX_EPOCH + Duration::from_nanos(records[39].time_unix_nanos) + keep;
    let report = trail.apply_retention_at(now, Some(keep), None).unwrap();
    // Whole units of 10 go: the units ending before record 40.
    let pruned = 30;
    assert_eq!(report.pruned_records, pruned);
    let anchor = report.anchor.unwrap();
    assert_eq!(anchor.seq, pruned);
    assert_eq!(anchor.hash, records[pruned as usize - 1].hash);
    let v = intact(&trail);
    assert_eq!(v.first_seq, Some(pruned + 1));
    let stats = trail.stats().unwrap();
    assert_eq!(stats.pruned_records, pruned);
    assert_eq!(stats.records, 100 - pruned);
    assert_eq!(stats.first.unwrap().seq, pruned + 1);
    // Pruned records are gone from the indexes too.
    let host = all(
        &trail,
        &Query {
            finding: Some(FindingKind::HostReader),
            ..Query::default()
        },
    );
    assert!(host.iter().all(|r| r.seq > pruned));
    let host_kept = expected(100, |i| i.is_multiple_of(11) && i as u64 >= pruned).len() as u64;
    assert_eq!(stats.findings["host-reader"], host_kept);
    // Appends continue, and after a reopen too.
    assert_eq!(trail.append(&entry(100)).unwrap(), 101);
    trail.flush().unwrap();
    drop(trail);
    let trail = Trail::open(dir.path()).unwrap();
    assert_eq!(trail.append(&entry(101)).unwrap(), 102);
    trail.flush().unwrap();
    assert_eq!(intact(&trail).checked, 102 - pruned);
}

#[test]
fn retention_by_size_keeps_the_chain_verifiable() {
    let (_dir, trail) = filled_in_units(200, 10);
    let before = trail.stats().unwrap();
    let limit = before.logical_bytes / 2;
    let report = trail.apply_retention(None, Some(limit)).unwrap();
    let after = trail.stats().unwrap();
    assert!(after.logical_bytes <= limit, "{after:?}");
    assert!(
        report.pruned_records > 80 && report.pruned_records < 120,
        "{report:?}"
    );
    assert_eq!(after.records, 200 - report.pruned_records);
    assert_eq!(
        after.logical_bytes + report.pruned_bytes,
        before.logical_bytes
    );
    intact(&trail);
    // A second pass with the same limit deletes nothing.
    assert_eq!(
        trail
            .apply_retention(None, Some(limit))
            .unwrap()
            .pruned_records,
        0
    );
    // Pruning everything leaves an anchor the next record chains to.
    let report = trail.apply_retention(None, Some(0)).unwrap();
    let anchor = report.anchor.unwrap();
    assert_eq!(anchor.seq, 200);
    assert_eq!(trail.stats().unwrap().records, 0);
    intact(&trail);
    assert_eq!(trail.append(&entry(0)).unwrap(), 201);
    trail.flush().unwrap();
    let r = all(&trail, &Query::default());
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].prev_hash, anchor.hash);
    intact(&trail);
}

#[test]
fn readers_run_while_one_task_appends() {
    fn send_sync<T: Send + Sync + Clone>() {}
    send_sync::<Trail>();
    let (_dir, trail) = filled(100);
    let reader = trail.clone();
    let handle = std::thread::spawn(move || {
        let mut seen = 0;
        for _ in 0..20 {
            let n = reader
                .query(&Query {
                    namespace: Some("shop".into()),
                    ..Query::default()
                })
                .unwrap()
                .count();
            assert!(n >= seen, "records never disappear");
            seen = n;
            assert!(reader.verify().unwrap().intact);
        }
        seen
    });
    for i in 100..3000 {
        trail.append(&entry(i)).unwrap();
    }
    trail.flush().unwrap();
    assert!(handle.join().unwrap() >= 34);
    assert_eq!(intact(&trail).checked, 3000);
}

#[test]
fn read_only_open_needs_an_existing_dir() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let err = Trail::open_existing(&missing).unwrap_err();
    assert!(matches!(err, TrailError::FindDataDir { .. }), "{err}");
    assert!(!missing.exists());
}

#[test]
fn a_flush_is_due_only_after_an_append_or_another_write() {
    let dir = tempfile::tempdir().unwrap();
    {
        let trail = Trail::open(dir.path()).unwrap();
        assert!(!trail.unflushed(), "a new trail has nothing to flush");
        trail.append(&entry(0)).unwrap();
        assert!(trail.unflushed());
        trail.flush().unwrap();
        assert!(!trail.unflushed());
        // The agent's baseline shares the database.
        trail.note_db_write();
        assert!(trail.unflushed());
        trail.flush().unwrap();
        assert!(!trail.unflushed());
    }
    // Reopened: what is on disk is durable.
    let trail = Trail::open(dir.path()).unwrap();
    assert!(!trail.unflushed());
    trail.append(&entry(1)).unwrap();
    assert!(trail.unflushed());
}
