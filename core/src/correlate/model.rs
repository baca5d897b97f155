//! What the agent records: one [`TrailEntry`] per observation, with the
//! reader, the token's identity (never the token), the subject's RBAC
//! summary, the connection, and the findings. This is the payload the
//! trail stores, exports (JSON lines, schema [`ENTRY_SCHEMA_VERSION`]) and
//! indexes, and what `replay` reads back.

use serde::{Deserialize, Serialize};

/// Version of the [`TrailEntry`] JSON schema (documented in `docs/trail.md`).
/// Version 2 (fanotify sensor, issue 12) added `reader.named_by`,
/// `reader.uncertain` and `token.file.seen`; version 3 (issue 13) added
/// `repeated` (folded repeats). Earlier entries still read.
pub const ENTRY_SCHEMA_VERSION: u32 = 3;

/// What an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum EntryKind {
    /// A process read a token file.
    TokenRead,
    /// A process connected to the API server after it (or its container)
    /// read a token: that token was probably used.
    TokenUse,
    /// A connect to the API server with no token read before it.
    ApiContact,
    /// The agent itself: started, stopped, loaded a snapshot.
    Agent,
}

impl EntryKind {
    /// The kebab-case name used in JSON and on the command line.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TokenRead => "token-read",
            Self::TokenUse => "token-use",
            Self::ApiContact => "api-contact",
            Self::Agent => "agent",
        }
    }
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// Unusual.
    Low,
    /// Suspicious.
    Medium,
    /// Likely an attack or a serious misconfiguration.
    High,
    /// Act now.
    Critical,
}

/// The kinds of finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingKind {
    /// The reader's pod is not the pod the token is bound to (or whose volume holds it).
    ForeignToken,
    /// A host process other than the kubelet read a pod's token.
    HostReader,
    /// A process the workload has not been seen to use read its pod's token.
    UnexpectedReader,
    /// A legacy, never-expiring Secret-based token.
    LegacyToken,
    /// The token has expired.
    ExpiredToken,
    /// The token is past its `warnafter` time (stale).
    StaleToken,
    /// The token's signature did not verify (invalid, or unknown key).
    UnverifiedSignature,
    /// The token's subject holds dangerous permissions.
    PrivilegedSubject,
    /// A process contacted the API server with no token read by it or its container.
    ApiContactWithoutToken,
}

impl FindingKind {
    /// Every kind, in order.
    pub const ALL: [Self; 9] = [
        Self::ForeignToken,
        Self::HostReader,
        Self::UnexpectedReader,
        Self::LegacyToken,
        Self::ExpiredToken,
        Self::StaleToken,
        Self::UnverifiedSignature,
        Self::PrivilegedSubject,
        Self::ApiContactWithoutToken,
    ];

    /// This kind's bit in a set of kinds (see [`FindingKind::set_of`]).
    #[must_use]
    pub const fn bit(self) -> u16 {
        1 << self as u16
    }

    /// The set of kinds among `findings`, as bits.
    #[must_use]
    pub fn set_of(findings: &[Finding]) -> u16 {
        findings.iter().fold(0, |set, f| set | f.kind.bit())
    }

    /// The kebab-case name used in JSON, metrics and on the command line.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ForeignToken => "foreign-token",
            Self::HostReader => "host-reader",
            Self::UnexpectedReader => "unexpected-reader",
            Self::LegacyToken => "legacy-token",
            Self::ExpiredToken => "expired-token",
            Self::StaleToken => "stale-token",
            Self::UnverifiedSignature => "unverified-signature",
            Self::PrivilegedSubject => "privileged-subject",
            Self::ApiContactWithoutToken => "api-contact-without-token",
        }
    }

    /// Parses the kebab-case name.
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// One finding: what, how bad, and why, in plain words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// What was found.
    pub kind: FindingKind,
    /// How bad it is.
    pub severity: Severity,
    /// Why, in a sentence a person can act on.
    pub reason: String,
}

/// The pod (and container) a process runs in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRef {
    /// Pod UID.
    pub uid: String,
    /// Pod name, when known (from its own bound token, or the API server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Pod namespace, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Container ID (runtime-specific hex), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// Container runtime (`containerd`, `cri-o`, `docker`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// The container's image (its status's `image`), from the API server;
    /// with the workload, the learned baseline's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// `Kind/name` of the controller that owns the pod (a Deployment for its
    /// ReplicaSets' pods), from the API server; the learned baseline's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    /// The pod's ServiceAccount (`spec.serviceAccountName`), from the API server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// The pod's labels, from the API server.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
}

impl PodRef {
    /// `namespace/name`, or the UID when the name is unknown.
    #[must_use]
    pub fn key(&self) -> String {
        match (&self.namespace, &self.name) {
            (Some(ns), Some(name)) => format!("{ns}/{name}"),
            _ => self.uid.clone(),
        }
    }
}

/// The process behind an observation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reader {
    /// Process id.
    pub tgid: u32,
    /// Thread id.
    pub pid: u32,
    /// Parent process id.
    pub ppid: u32,
    /// uid.
    pub uid: u32,
    /// gid.
    pub gid: u32,
    /// comm.
    pub comm: String,
    /// Executable, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    /// Executables of the parent chain, nearest first, as far as known.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ancestry: Vec<String>,
    /// cgroup v2 id.
    pub cgroup_id: u64,
    /// Mount namespace inode.
    pub mnt_ns: u32,
    /// The pod, or `None` for a host process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodRef>,
    /// How the reader was named (`event`, `pidfd`, `proc`, `lineage`,
    /// `unknown`; docs/events.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub named_by: Option<String>,
    /// The pid may have been reused before the reader was named: these
    /// facts may be another process's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub uncertain: bool,
}

/// A token as the trail keeps it: claims and fingerprint, never the token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// `legacy`, `bound` or `other`.
    pub kind: String,
    /// The username the API server derives (`system:serviceaccount:NS:NAME`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// ServiceAccount namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// ServiceAccount name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// `jti`, when present (the join key with API-server audit logs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// `sha256:<hex>` of the token.
    pub fingerprint: String,
    /// The pod a bound token is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound_pod: Option<PodRef>,
    /// The node a bound token names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// `iss`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// `aud`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// `exp`, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// Validity at the time of the observation: `valid`, `expired`,
    /// `not-yet-valid`, `stale`, `never-expires`.
    pub validity: String,
    /// Signature result: `verified`, `invalid-signature`, `unknown-key-id`, `not-checked`.
    pub signature: String,
    /// The token file: path as opened, and (dev, ino).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<TokenFileRef>,
}

/// Which file held the token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenFileRef {
    /// Path as the reader opened it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
    /// UID of the pod whose volume holds the file, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_pod_uid: Option<String>,
    /// Which of `open`, `access`, `close` the sensor saw for this access
    /// (fanotify gives neither the syscall nor a byte count).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seen: Vec<String>,
}

/// One dangerous permission a subject holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RiskItem {
    /// The check (`read-secrets`, `create-pods`, `pods-exec`, ...).
    pub check: String,
    /// Severity as `rbac risk` ranks it.
    pub severity: String,
    /// Where it applies: `cluster-wide` or a namespace.
    pub scope: String,
    /// The binding that grants it (`Kind/namespace/name`).
    pub binding: String,
    /// The role it comes from.
    pub role: String,
}

/// The subject's RBAC powers in the snapshot current at the time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RbacSummary {
    /// Which snapshot decided (its id or source).
    pub snapshot: String,
    /// May read secrets (get/list/watch) somewhere.
    pub can_read_secrets: bool,
    /// May create pods (or workloads) somewhere.
    pub can_create_pods: bool,
    /// May exec or attach into pods somewhere.
    pub can_exec: bool,
    /// Every dangerous permission, as `rbac risk` reports it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub risks: Vec<RiskItem>,
}

/// A TCP connection to the API server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    /// Source address.
    pub saddr: String,
    /// Source port (0 if the kernel had not chosen one when it was seen).
    pub sport: u16,
    /// API-server address.
    pub daddr: String,
    /// API-server port.
    pub dport: u16,
    /// Whether the connection was established, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub established: Option<bool>,
}

/// One observation, as stored in the trail (without the trail's own
/// sequence number and hashes, which wrap it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrailEntry {
    /// Schema version ([`ENTRY_SCHEMA_VERSION`]).
    pub schema: u32,
    /// What it records.
    pub kind: EntryKind,
    /// When it was observed (RFC 3339, UTC).
    pub time: String,
    /// The node it was observed on.
    pub node: String,
    /// The process, for token reads, uses and API contacts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reader: Option<Reader>,
    /// The token read or used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<TokenInfo>,
    /// The token subject's RBAC summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rbac: Option<RbacSummary>,
    /// The connection, for token uses and API contacts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<Connection>,
    /// What was found (empty for a plain, expected observation).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<Finding>,
    /// For agent entries: what happened, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// For a folded record: the repeats of one (process, pod, token,
    /// findings) combination it stands for. Absent on every other entry
    /// (a first access stands for one sensor event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeated: Option<Repeated>,
}

/// The repeats a folded record stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repeated {
    /// Sensor events folded into this record (at least 1).
    pub count: u64,
    /// Time of the first of them (RFC 3339, UTC).
    pub first: String,
    /// Time of the last of them (RFC 3339, UTC); the entry's `time` too.
    pub last: String,
}

impl TrailEntry {
    /// The subject the entry is about (the token's username).
    #[must_use]
    pub fn subject(&self) -> Option<&str> {
        self.token.as_ref().and_then(|t| t.subject.as_deref())
    }

    /// The reader's pod as `namespace/name` (or the UID when the name is unknown).
    #[must_use]
    pub fn pod_key(&self) -> Option<String> {
        Some(self.reader.as_ref()?.pod.as_ref()?.key())
    }

    /// Namespaces the entry concerns: the reader pod's and the token's.
    #[must_use]
    pub fn namespaces(&self) -> Vec<&str> {
        let mut out = Vec::new();
        if let Some(ns) = self
            .reader
            .as_ref()
            .and_then(|r| r.pod.as_ref())
            .and_then(|p| p.namespace.as_deref())
        {
            out.push(ns);
        }
        if let Some(ns) = self.token.as_ref().and_then(|t| t.namespace.as_deref())
            && !out.contains(&ns)
        {
            out.push(ns);
        }
        out
    }

    /// The token's JTI.
    #[must_use]
    pub fn jti(&self) -> Option<&str> {
        self.token.as_ref().and_then(|t| t.jti.as_deref())
    }

    /// Token accesses the sensor reported that this entry stands for: the
    /// folded count, 1 for any other token read, 0 for other kinds.
    #[must_use]
    pub fn accesses(&self) -> u64 {
        match (self.kind, &self.repeated) {
            (EntryKind::TokenRead, Some(r)) => r.count,
            (EntryKind::TokenRead, None) => 1,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finding_names_round_trip() {
        for kind in FindingKind::ALL {
            assert_eq!(FindingKind::parse(kind.as_str()), Some(kind));
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
        assert_eq!(FindingKind::parse("nope"), None);
    }

    #[test]
    fn entry_keys() {
        let entry = TrailEntry {
            schema: ENTRY_SCHEMA_VERSION,
            kind: EntryKind::TokenRead,
            time: "2026-01-01T00:00:00Z".into(),
            node: "node-a".into(),
            reader: Some(Reader {
                pod: Some(PodRef {
                    uid: "u1".into(),
                    name: Some("web-0".into()),
                    namespace: Some("shop".into()),
                    ..PodRef::default()
                }),
                ..Reader::default()
            }),
            token: Some(TokenInfo {
                subject: Some("system:serviceaccount:shop:web".into()),
                namespace: Some("shop".into()),
                jti: Some("j-1".into()),
                ..TokenInfo::default()
            }),
            rbac: None,
            connection: None,
            findings: Vec::new(),
            message: None,
            repeated: None,
        };
        assert_eq!(entry.pod_key().as_deref(), Some("shop/web-0"));
        assert_eq!(entry.namespaces(), vec!["shop"]);
        assert_eq!(entry.jti(), Some("j-1"));
        assert_eq!(entry.subject(), Some("system:serviceaccount:shop:web"));
        let back: TrailEntry =
            serde_json::from_str(&serde_json::to_string(&entry).unwrap()).unwrap();
        assert_eq!(back, entry);
    }
}
