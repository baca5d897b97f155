//! Realistic trail entries for the trail tests and the benchmark's twin:
//! token reads and uses from a handful of pods, ServiceAccounts and
//! namespaces, with RBAC summaries and findings, chosen deterministically
//! from an index.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of this shared module"
)]

use tokenwatch_core::correlate::{
    Connection, ENTRY_SCHEMA_VERSION, EntryKind, Finding, FindingKind, PodRef, RbacSummary, Reader,
    RiskItem, Severity, TokenFileRef, TokenInfo, TrailEntry,
};
use tokenwatch_host::store;

/// Namespaces used.
pub const NAMESPACES: [&str; 3] = ["shop", "payments", "kube-system"];

/// The ServiceAccount of entry `i`: `sa-{i % 5}` in namespace `i % 3`.
pub fn subject(i: usize) -> String {
    format!("system:serviceaccount:{}:sa-{}", NAMESPACES[i % 3], i % 5)
}

/// The reader pod of entry `i`: `{ns}/web-{i % 7}`, UID `uid-{ns}-{i % 7}`.
pub fn pod(i: usize) -> (String, String, String) {
    let ns = NAMESPACES[i % 3].to_owned();
    let name = format!("web-{}", i % 7);
    let uid = format!("uid-{ns}-{}", i % 7);
    (ns, name, uid)
}

/// The JTI of entry `i`: one per 10 entries.
pub fn jti(i: usize) -> String {
    format!("jti-{:04}", i / 10)
}

/// The findings of entry `i`.
pub fn findings(i: usize) -> Vec<FindingKind> {
    let mut out = Vec::new();
    if i.is_multiple_of(4) {
        out.push(FindingKind::ForeignToken);
    }
    if i.is_multiple_of(6) {
        out.push(FindingKind::PrivilegedSubject);
    }
    if i.is_multiple_of(11) {
        out.push(FindingKind::HostReader);
    }
    out
}

/// Entry number `i`.
pub fn entry(i: usize) -> TrailEntry {
    let (ns, name, uid) = pod(i);
    let token_ns = NAMESPACES[i % 3];
    let host = i.is_multiple_of(11);
    TrailEntry {
        schema: ENTRY_SCHEMA_VERSION,
        kind: if i.is_multiple_of(2) {
            EntryKind::TokenRead
        } else {
            EntryKind::TokenUse
        },
        time: "2026-05-17T10:00:00.123456789Z".into(),
        node: "node-a".into(),
        reader: Some(Reader {
            tgid: 4000 + u32::try_from(i % 1000).unwrap_or(0),
            pid: 4000 + u32::try_from(i % 1000).unwrap_or(0),
            ppid: 1,
            uid: 1000,
            gid: 1000,
            comm: if host { "cat".into() } else { "python3".into() },
            exe: Some("/usr/bin/python3.12".into()),
            ancestry: vec!["/bin/sh".into(), "/usr/bin/containerd-shim-runc-v2".into()],
            cgroup_id: 0xdead_0000 + u64::try_from(i % 7).unwrap_or(0),
            mnt_ns: 4_026_532_000,
            pod: (!host).then(|| PodRef {
                uid: uid.clone(),
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                container_id: Some(
                    "3f1c0e6b2a9d4c7e8f0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6a".into(),
                ),
                runtime: Some("containerd".into()),
                ..PodRef::default()
            }),
            ..Reader::default()
        }),
        token: Some(TokenInfo {
            kind: "bound".into(),
            subject: Some(subject(i)),
            namespace: Some(token_ns.into()),
            service_account: Some(format!("sa-{}", i % 5)),
            jti: Some(jti(i)),
            fingerprint: format!("sha256:{:064x}", i / 10),
            bound_pod: Some(PodRef {
                uid: uid.clone(),
                name: Some(name),
                namespace: Some(ns),
                ..PodRef::default()
            }),
            node_name: Some("node-a".into()),
            issuer: Some("https://kubernetes.default.svc.cluster.local".into()),
            audiences: vec!["https://kubernetes.default.svc.cluster.local".into()],
            expires_at: Some(1_779_000_000),
            validity: "valid".into(),
            signature: "verified".into(),
            file: Some(TokenFileRef {
                path: Some("/var/run/secrets/kubernetes.io/serviceaccount/token".into()),
                dev: 2049,
                ino: 1_234_567 + u64::try_from(i % 7).unwrap_or(0),
                volume_pod_uid: Some(uid),
                ..TokenFileRef::default()
            }),
        }),
        rbac: Some(RbacSummary {
            snapshot: "2026-05-17T09:00:00.000000000Z".into(),
            can_read_secrets: i.is_multiple_of(6),
            can_create_pods: false,
            can_exec: i.is_multiple_of(6),
            risks: if i.is_multiple_of(6) {
                vec![RiskItem {
                    check: "read-secrets".into(),
                    severity: "high".into(),
                    scope: token_ns.into(),
                    binding: format!("RoleBinding/{token_ns}/secret-reader"),
                    role: "ClusterRole/secret-reader".into(),
                }]
            } else {
                Vec::new()
            },
        }),
        connection: (i % 2 == 1).then(|| Connection {
            saddr: "10.244.1.17".into(),
            sport: 40_000 + u16::try_from(i % 20_000).unwrap_or(0),
            daddr: "10.96.0.1".into(),
            dport: 443,
            established: Some(true),
        }),
        findings: findings(i)
            .into_iter()
            .map(|kind| Finding {
                kind,
                severity: Severity::High,
                reason: format!("{} seen for entry {i}", kind.as_str()),
            })
            .collect(),
        message: None,
        repeated: None,
    }
}

/// Opens the trail tree of a trail directly, for tampering.
pub fn raw_tree(db: &sled::Db) -> sled::Tree {
    store::tree(db, store::trees::TRAIL).unwrap()
}

/// The key and value of the block holding record `seq` (the last block
/// starting at or before it).
pub fn block_of(tree: &sled::Tree, seq: u64) -> (Vec<u8>, Vec<u8>) {
    let key = |s: u64| {
        let mut k = vec![b'b'];
        k.extend_from_slice(&s.to_be_bytes());
        k
    };
    let (k, v) = tree
        .range(key(0)..=key(seq))
        .next_back()
        .expect("a block holds the record")
        .unwrap();
    (k.to_vec(), v.to_vec())
}

/// Rewrites the lines of the block holding record `seq` directly in the
/// tree: `edit` gets the lines (with the block's first seq) and returns the
/// new ones, which are written back as a plain (uncompressed) block, the
/// form earlier builds wrote and readers still accept.
pub fn edit_block(db: &sled::Db, seq: u64, edit: impl FnOnce(u64, Vec<String>) -> Vec<String>) {
    let tree = raw_tree(db);
    let (k, v) = block_of(&tree, seq);
    let first = u64::from_be_bytes(k[1..].try_into().unwrap());
    let body = tokenwatch_host::trail::record::block_body(first, &v).unwrap();
    let lines: Vec<String> = std::str::from_utf8(&body)
        .unwrap()
        .split('\n')
        .map(str::to_owned)
        .collect();
    let mut new = vec![1u8];
    new.extend_from_slice(edit(first, lines).join("\n").as_bytes());
    tree.insert(k, new).unwrap();
}

/// Rewrites the line of record `seq` with `edit`.
pub fn edit_line(db: &sled::Db, seq: u64, edit: impl FnOnce(&str) -> String) {
    edit_block(db, seq, |first, mut lines| {
        let i = usize::try_from(seq - first).unwrap();
        lines[i] = edit(&lines[i]);
        lines
    });
}

/// Removes the line of record `seq` from its block.
pub fn remove_line(db: &sled::Db, seq: u64) {
    edit_block(db, seq, |first, mut lines| {
        lines.remove(usize::try_from(seq - first).unwrap());
        lines
    });
}

/// Cuts the trail back so that record `keep` is the last one, as someone
/// with root on the node would: later records, their blocks and units go,
/// and the chain head is rewritten to record `keep`, so the chain alone
/// still verifies. Only checkpoints shipped off the node can tell.
pub fn cut_back(db: &sled::Db, keep: u64) {
    let tree = raw_tree(db);
    let key = |p: u8, s: u64| {
        let mut k = vec![p];
        k.extend_from_slice(&s.to_be_bytes());
        k
    };
    edit_block(db, keep, |first, mut lines| {
        lines.truncate(usize::try_from(keep - first + 1).unwrap());
        lines
    });
    for prefix in [b'b', b'u'] {
        let later: Vec<_> = tree
            .range(key(prefix, keep + 1)..=key(prefix, u64::MAX))
            .map(|kv| kv.unwrap().0)
            .collect();
        for k in later {
            tree.remove(k).unwrap();
        }
    }
    let hash = {
        let (k, v) = block_of(&tree, keep);
        let first = u64::from_be_bytes(k[1..].try_into().unwrap());
        let body = tokenwatch_host::trail::record::block_body(first, &v).unwrap();
        let line = tokenwatch_host::trail::record::lines(&body)
            .last()
            .unwrap()
            .to_vec();
        tokenwatch_host::trail::record::decode_line(keep, &line)
            .unwrap()
            .record
            .hash
    };
    let head = tokenwatch_host::trail::ChainPoint {
        seq: keep,
        hash,
        appended_bytes: 0,
    };
    tree.insert(b"mhead", store::encode(&head).unwrap())
        .unwrap();
    db.flush().unwrap();
}
