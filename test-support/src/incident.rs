//! A generated incident for the replay tests: real ES256-signed bound
//! tokens (decoded by tokenwatch's identity module, so subjects, JTIs and
//! bound pods are the tokens' own), the trail export lines a node would
//! have written about them, and the kube-apiserver audit events of the
//! calls they made, one token stolen and used from another address.
//!
//! The story, from T0 = 2025-06-01T10:00:00Z on node `node-a`:
//! - `python3` (pid 4242) in `shop/web-0` reads the web token (JTI
//!   [`WEB_JTI`]) and connects from [`POD_IP`]; it reads two configmaps;
//! - `worker` in `shop/worker-0` reads its token, which has no JTI (an
//!   older cluster's), and reads one configmap: joined by subject + pod;
//! - at T0+10 min `cat` (pid 6666) in `shop/debug-7` reads the web token:
//!   the agent flags it `foreign-token`;
//! - from T0+15 min the web token is used from [`THIEF_IP`]: it lists
//!   secrets cluster-wide and reads one (allowed by a ClusterRoleBinding),
//!   then tries exec, nodes and clusterrolebindings (three 403s);
//! - one request of the web pod was allowed live but is not in the
//!   snapshot (drift), and one event is a `RequestReceived` stage.

use crate::tokens as identity_common;

use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use tokenwatch_core::correlate::{
    Connection, ENTRY_SCHEMA_VERSION, EntryKind, Finding, FindingKind, PodRef, Reader, Severity,
    TokenInfo, TrailEntry,
};
use tokenwatch_core::identity::{Identity, KeySet};

/// Unix seconds of T0.
pub const T0: i64 = 1_748_772_000;
pub const WEB_JTI: &str = "6a0f4d0e-3b9c-4f7e-9a51-0d6c1a2b3c4d";
pub const WEB_POD_UID: &str = "0b4e2c1a-9d8f-4a3b-8c7d-6e5f4a3b2c1d";
pub const WORKER_POD_UID: &str = "7c6b5a49-3827-4160-9f8e-7d6c5b4a3928";
pub const POD_IP: &str = "10.244.1.5";
pub const WORKER_IP: &str = "10.244.1.9";
pub const THIEF_IP: &str = "203.0.113.50";
pub const WEB_SA: &str = "system:serviceaccount:shop:web";
pub const WORKER_SA: &str = "system:serviceaccount:shop:worker";

/// The RBAC in force: web and worker read configmaps in shop; web also
/// lists secrets cluster-wide (the over-grant the thief uses); worker
/// holds secrets read it never uses.
pub const POLICY: &str = "
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: config-reader, namespace: shop}
rules:
- apiGroups: ['']
  resources: [configmaps]
  verbs: [get, list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: config-readers, namespace: shop}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: config-reader}
subjects:
- {kind: ServiceAccount, name: web, namespace: shop}
- {kind: ServiceAccount, name: worker, namespace: shop}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: secret-reader}
rules:
- apiGroups: ['']
  resources: [secrets]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: web-secrets}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: secret-reader}
subjects:
- {kind: ServiceAccount, name: web, namespace: shop}
- {kind: ServiceAccount, name: worker, namespace: shop}
";

pub struct Incident {
    pub trail_lines: Vec<String>,
    pub audit_lines: Vec<String>,
    /// Fingerprints of the tokens (never the tokens themselves).
    pub fingerprints: Vec<String>,
    /// The signed tokens, to check that no output contains them.
    pub raw_tokens: Vec<String>,
}

fn rfc3339(offset_secs: i64, micros: u32) -> String {
    let t = std::time::UNIX_EPOCH
        + std::time::Duration::from_secs(u64::try_from(T0 + offset_secs).unwrap())
        + std::time::Duration::from_micros(u64::from(micros));
    humantime::format_rfc3339_micros(t).to_string()
}

fn claims(sa: &str, pod: &str, pod_uid: &str, jti: Option<&str>) -> Value {
    let mut c = json!({
        "aud": ["https://kubernetes.default.svc.cluster.local"],
        "exp": T0 + 3600, "iat": T0 - 60, "nbf": T0 - 60,
        "iss": "https://kubernetes.default.svc.cluster.local",
        "sub": format!("system:serviceaccount:shop:{sa}"),
        "kubernetes.io": {
            "namespace": "shop",
            "node": {"name": "node-a", "uid": "5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d"},
            "pod": {"name": pod, "uid": pod_uid},
            "serviceaccount": {"name": sa, "uid": "e56b64e1-4415-4ee8-9cdf-78026924a7e5"},
            "warnafter": T0 + 3000
        }
    });
    if let Some(j) = jti {
        c["jti"] = json!(j);
    }
    c
}

/// What the agent would record about a token: claims and fingerprint.
fn token_info(raw: &str, keys: &KeySet) -> TokenInfo {
    let id = Identity::from_token(&identity_common::secret(raw), keys).expect("token decodes");
    assert!(
        matches!(
            id.signature,
            tokenwatch_core::identity::SignatureCheck::Verified { .. }
        ),
        "{:?}",
        id.signature
    );
    let s = &id.summary;
    TokenInfo {
        kind: id.kind.as_str().to_owned(),
        subject: id.user.as_ref().map(|u| u.username.clone()),
        namespace: s.namespace.clone(),
        service_account: s.service_account.as_ref().map(|o| o.name.clone()),
        jti: s.jti.clone(),
        fingerprint: id.fingerprint.clone(),
        bound_pod: s.pod.as_ref().map(|p| PodRef {
            uid: p.uid.clone().unwrap_or_default(),
            name: Some(p.name.clone()),
            namespace: s.namespace.clone(),
            ..PodRef::default()
        }),
        node_name: s.node.as_ref().map(|n| n.name.clone()),
        issuer: s.issuer.clone(),
        audiences: s.audiences.clone(),
        expires_at: s.expires_at,
        validity: "valid".into(),
        signature: "verified".into(),
        file: None,
    }
}

fn reader(comm: &str, pid: u32, pod: &str, pod_uid: &str) -> Reader {
    Reader {
        tgid: pid,
        pid,
        ppid: 1,
        uid: 1000,
        gid: 1000,
        comm: comm.into(),
        exe: Some(format!("/usr/bin/{comm}")),
        cgroup_id: 4242,
        mnt_ns: 4_026_532_000,
        pod: Some(PodRef {
            uid: pod_uid.into(),
            name: Some(pod.into()),
            namespace: Some("shop".into()),
            container_id: Some("c0ffee".into()),
            runtime: Some("containerd".into()),
            ..PodRef::default()
        }),
        ..Reader::default()
    }
}

fn entry(
    kind: EntryKind,
    at: i64,
    reader: Reader,
    token: &TokenInfo,
    connection: Option<&str>,
    findings: Vec<Finding>,
) -> TrailEntry {
    TrailEntry {
        schema: ENTRY_SCHEMA_VERSION,
        kind,
        time: rfc3339(at, 0),
        node: "node-a".into(),
        reader: Some(reader),
        token: Some(token.clone()),
        rbac: None,
        connection: connection.map(|ip| Connection {
            saddr: ip.into(),
            sport: 40_000,
            daddr: "10.96.0.1".into(),
            dport: 443,
            established: Some(true),
        }),
        findings,
        message: None,
        repeated: None,
    }
}

/// An audit event as kube-apiserver writes it.
#[expect(clippy::too_many_arguments, reason = "one event's fields, spelled out")]
pub fn audit_event(
    at: i64,
    stage: &str,
    user: &str,
    extra: &Value,
    ip: &str,
    verb: &str,
    uri: &str,
    object_ref: Option<Value>,
    code: u16,
    decision: Option<(&str, &str)>,
) -> String {
    let sa_ns = user.split(':').nth(2).unwrap_or("shop");
    let mut e = json!({
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
        "auditID": format!("{:08x}-0000-4000-8000-{:012x}", at, i64::from(code) * 1000 + at % 1000),
        "stage": stage, "requestURI": uri, "verb": verb,
        "user": {"username": user, "uid": "e56b64e1-4415-4ee8-9cdf-78026924a7e5",
                 "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{sa_ns}"), "system:authenticated"],
                 "extra": extra},
        "sourceIPs": [ip], "userAgent": "python-requests/2.31",
        "responseStatus": {"metadata": {}, "code": code},
        "requestReceivedTimestamp": rfc3339(at, 120),
        "stageTimestamp": rfc3339(at, 9_000),
    });
    if let Some(o) = object_ref {
        e["objectRef"] = o;
    }
    if let Some((d, r)) = decision {
        e["annotations"] =
            json!({"authorization.k8s.io/decision": d, "authorization.k8s.io/reason": r});
    }
    if code == 403 {
        e["responseStatus"]["status"] = json!("Failure");
        e["responseStatus"]["reason"] = json!("Forbidden");
        e["responseStatus"]["message"] = json!(format!("forbidden: User \"{user}\" cannot {verb}"));
    }
    serde_json::to_string(&e).unwrap()
}

fn bound_extra(jti: Option<&str>, pod: &str, pod_uid: &str) -> Value {
    let mut x = json!({
        "authentication.kubernetes.io/node-name": ["node-a"],
        "authentication.kubernetes.io/node-uid": ["5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d"],
        "authentication.kubernetes.io/pod-name": [pod],
        "authentication.kubernetes.io/pod-uid": [pod_uid],
    });
    if let Some(j) = jti {
        x["authentication.kubernetes.io/credential-id"] = json!([format!("JTI={j}")]);
    }
    x
}

const ALLOW_CONFIG: &str = "RBAC: allowed by RoleBinding \"config-readers/shop\" of Role \"config-reader\" to ServiceAccount \"web/shop\"";
const ALLOW_SECRETS: &str = "RBAC: allowed by ClusterRoleBinding \"web-secrets\" of ClusterRole \"secret-reader\" to ServiceAccount \"web/shop\"";

/// Builds the incident.
pub fn incident() -> Incident {
    let pair = identity_common::p256_pair();
    let key = pair.encoding_key(Algorithm::ES256);
    let mut keys = KeySet::new();
    keys.add_pem(pair.public_pem.as_bytes(), std::path::Path::new("sa.pub"))
        .expect("public key");
    let web_raw = identity_common::sign(
        Algorithm::ES256,
        &key,
        None,
        &claims("web", "web-0", WEB_POD_UID, Some(WEB_JTI)),
    );
    let worker_raw = identity_common::sign(
        Algorithm::ES256,
        &key,
        None,
        &claims("worker", "worker-0", WORKER_POD_UID, None),
    );
    let web = token_info(&web_raw, &keys);
    let worker = token_info(&worker_raw, &keys);
    assert_eq!(web.jti.as_deref(), Some(WEB_JTI));
    assert_eq!(worker.jti, None);

    let web_reader = reader("python3", 4242, "web-0", WEB_POD_UID);
    let entries = [
        entry(
            EntryKind::TokenRead,
            0,
            web_reader.clone(),
            &web,
            None,
            vec![],
        ),
        entry(
            EntryKind::TokenUse,
            1,
            web_reader.clone(),
            &web,
            Some(POD_IP),
            vec![],
        ),
        entry(
            EntryKind::TokenRead,
            30,
            reader("worker", 5151, "worker-0", WORKER_POD_UID),
            &worker,
            None,
            vec![],
        ),
        entry(
            EntryKind::TokenUse,
            31,
            reader("worker", 5151, "worker-0", WORKER_POD_UID),
            &worker,
            Some(WORKER_IP),
            vec![],
        ),
        entry(EntryKind::TokenRead, 60, web_reader, &web, None, vec![]),
        entry(
            EntryKind::TokenRead,
            600,
            reader(
                "cat",
                6666,
                "debug-7",
                "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a",
            ),
            &web,
            None,
            vec![Finding {
                kind: FindingKind::ForeignToken,
                severity: Severity::High,
                reason: "a process in shop/debug-7 read the token of shop/web-0".into(),
            }],
        ),
    ];
    // Trail export lines as `trail export` writes them (hashes are not checked by replay).
    let trail_lines = entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            serde_json::to_string(&json!({
                "seq": i as u64 + 1,
                "time": e.time,
                "prev_hash": format!("{:064x}", i),
                "hash": format!("{:064x}", i + 1),
                "entry": e,
            }))
            .unwrap()
        })
        .collect();

    let web_x = bound_extra(Some(WEB_JTI), "web-0", WEB_POD_UID);
    let worker_x = bound_extra(None, "worker-0", WORKER_POD_UID);
    let cm = |name: &str| json!({"resource": "configmaps", "namespace": "shop", "name": name, "apiVersion": "v1"});
    let allow_cfg = Some(("allow", ALLOW_CONFIG));
    let audit_lines = vec![
        audit_event(
            2,
            "RequestReceived",
            WEB_SA,
            &web_x,
            POD_IP,
            "get",
            "/api/v1/namespaces/shop/configmaps/app-config",
            Some(cm("app-config")),
            200,
            None,
        ),
        audit_event(
            2,
            "ResponseComplete",
            WEB_SA,
            &web_x,
            POD_IP,
            "get",
            "/api/v1/namespaces/shop/configmaps/app-config",
            Some(cm("app-config")),
            200,
            allow_cfg,
        ),
        audit_event(
            5,
            "ResponseComplete",
            WEB_SA,
            &web_x,
            POD_IP,
            "list",
            "/api/v1/namespaces/shop/configmaps?limit=500",
            Some(json!({"resource": "configmaps", "namespace": "shop", "apiVersion": "v1"})),
            200,
            allow_cfg,
        ),
        audit_event(
            40,
            "ResponseComplete",
            WORKER_SA,
            &worker_x,
            WORKER_IP,
            "get",
            "/api/v1/namespaces/shop/configmaps/jobs",
            Some(cm("jobs")),
            200,
            Some((
                "allow",
                "RBAC: allowed by RoleBinding \"config-readers/shop\" of Role \"config-reader\" to ServiceAccount \"worker/shop\"",
            )),
        ),
        // Allowed live by a Role the snapshot does not have: drift.
        audit_event(
            120,
            "ResponseComplete",
            WEB_SA,
            &web_x,
            POD_IP,
            "update",
            "/api/v1/namespaces/shop/configmaps/app-config",
            Some(cm("app-config")),
            200,
            Some((
                "allow",
                "RBAC: allowed by RoleBinding \"config-writers/shop\" of Role \"config-writer\" to ServiceAccount \"web/shop\"",
            )),
        ),
        // The stolen token, from elsewhere, after the flagged read.
        audit_event(
            900,
            "ResponseComplete",
            WEB_SA,
            &web_x,
            THIEF_IP,
            "list",
            "/api/v1/secrets?limit=500",
            Some(json!({"resource": "secrets", "apiVersion": "v1"})),
            200,
            Some(("allow", ALLOW_SECRETS)),
        ),
        audit_event(
            905,
            "ResponseComplete",
            WEB_SA,
            &web_x,
            THIEF_IP,
            "get",
            "/api/v1/namespaces/kube-system/secrets/admin-token",
            Some(
                json!({"resource": "secrets", "namespace": "kube-system", "name": "admin-token", "apiVersion": "v1"}),
            ),
            200,
            Some(("allow", ALLOW_SECRETS)),
        ),
        audit_event(
            910,
            "ResponseComplete",
            WEB_SA,
            &web_x,
            THIEF_IP,
            "create",
            "/api/v1/namespaces/shop/pods/web-0/exec?command=sh",
            Some(
                json!({"resource": "pods", "namespace": "shop", "name": "web-0", "subresource": "exec", "apiVersion": "v1"}),
            ),
            403,
            Some(("forbid", "")),
        ),
        audit_event(
            915,
            "ResponseComplete",
            WEB_SA,
            &web_x,
            THIEF_IP,
            "list",
            "/api/v1/nodes",
            Some(json!({"resource": "nodes", "apiVersion": "v1"})),
            403,
            Some(("forbid", "")),
        ),
        audit_event(
            920,
            "ResponseComplete",
            WEB_SA,
            &web_x,
            THIEF_IP,
            "create",
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            Some(
                json!({"resource": "clusterrolebindings", "apiGroup": "rbac.authorization.k8s.io", "apiVersion": "v1"}),
            ),
            403,
            Some(("forbid", "")),
        ),
    ];
    Incident {
        trail_lines,
        audit_lines,
        fingerprints: vec![web.fingerprint, worker.fingerprint],
        raw_tokens: vec![web_raw, worker_raw],
    }
}

/// Writes the incident to `dir`: `trail.jsonl`, `audit.log`, `rbac.yaml`.
pub fn write_incident(dir: &std::path::Path) -> Incident {
    let inc = incident();
    std::fs::write(dir.join("trail.jsonl"), inc.trail_lines.join("\n") + "\n").unwrap();
    std::fs::write(dir.join("audit.log"), inc.audit_lines.join("\n") + "\n").unwrap();
    std::fs::write(dir.join("rbac.yaml"), POLICY).unwrap();
    inc
}
