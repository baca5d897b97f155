//! Token timelines: which processes read a token (from the trail) and
//! which API calls it made (from the audit log).
//!
//! - Trail records (`trail export` lines `{seq, time, prev_hash, hash,
//!   entry}`, or bare `TrailEntry` lines) are read first, from every file
//!   and node; each token (by JTI, else by fingerprint) collects its
//!   readers, the addresses its bound pod connects from (`connection.saddr`
//!   of entries by processes in that pod), and the first time a process
//!   reading it was flagged (`foreign-token`, `host-reader`,
//!   `unexpected-reader`).
//! - Audit events join a token by `user.extra[credential-id] = JTI=<jti>`;
//!   without a JTI, by subject + bound pod (`pod-uid`, else `pod-name`
//!   extras) + time window (from five minutes before the first read to the
//!   token's expiry, or an hour after the last read). JTIs only in the
//!   audit log get a timeline of their own.
//! - Each call is flagged: `foreign-ip` (its source IP is not one its
//!   bound pod was seen connecting from), `after-flagged-read`, `forbidden`
//!   (403). A token with [`PROBE_THRESHOLD`] forbidden calls or more is
//!   probing its permissions.
//!
//! Memory is bounded: readers and calls kept per token are capped (the
//! counts stay exact).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash as _, Hasher as _};

use rustc_hash::{FxHashSet, FxHasher};

use serde::Serialize;

use super::input::{Location, Problems};
use super::time::{format_nanos, parse_nanos};
use crate::bytes::{InlineStr, Name, NameMap, NameTable};
use crate::correlate::{EntryKind, FindingKind, PodRef, TrailEntry};

/// Forbidden calls from which a token counts as probing its permissions.
pub const PROBE_THRESHOLD: u64 = 3;
/// Readers kept per token.
pub const MAX_READS: usize = 200;
/// Calls kept per token read in the trail.
pub const MAX_CALLS_TRAIL: usize = 1000;
/// Calls kept per token seen only in the audit log.
pub const MAX_CALLS_AUDIT_ONLY: usize = 20;
/// Tokens seen only in the audit log that get a timeline (the rest are counted).
pub const MAX_AUDIT_ONLY_TOKENS: usize = 10_000;
/// Before the first read, how early a call may still join by subject + pod.
const WINDOW_BEFORE_NS: i64 = 5 * 60 * 1_000_000_000;
/// After the last read (when the expiry is unknown), how late.
const WINDOW_AFTER_NS: i64 = 60 * 60 * 1_000_000_000;

/// One reader of a token (repeated reads by the same process are folded).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadRecord {
    /// First read.
    pub time: String,
    /// Last read.
    pub last_time: String,
    /// Reads folded into this record.
    pub count: u64,
    /// `token-read` or `token-use`.
    pub kind: &'static str,
    /// Node.
    pub node: String,
    /// Process id.
    pub tgid: u32,
    /// uid.
    pub uid: u32,
    /// comm.
    pub comm: String,
    /// Executable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    /// The reader's pod (`namespace/name`, or UID), `None` for a host process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// The reader's pod UID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// Source address of the connection, for uses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<String>,
    /// Findings the agent recorded.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<String>,
}

/// When a process reading the token was first flagged.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FlaggedRead {
    /// When.
    pub time: String,
    /// Nanoseconds.
    #[serde(skip)]
    pub nanos: i64,
    /// The process (`comm` (pid N) in pod P on node X).
    pub process: String,
    /// The findings.
    pub findings: Vec<String>,
}

/// One API call made with a token.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallRecord {
    /// Request time.
    pub time: String,
    /// Verb.
    pub verb: String,
    /// What it was about: `resource[/sub] ns/name` or the path.
    pub target: String,
    /// Response code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<i64>,
    /// The client address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<String>,
    /// The replay's outcome for it.
    pub outcome: &'static str,
    /// `foreign-ip`, `after-flagged-read`, `forbidden`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<&'static str>,
    /// Where the event is in the input.
    pub location: Location,
}

/// What the replay concludes about a token.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TimelineFinding {
    /// `foreign-source-ip`, `use-after-flagged-read`, `multiple-source-addresses`,
    /// `minted-outside-kubelet`, `permission-probing`, `claimed-source-address`,
    /// `forbidden-calls`.
    pub kind: &'static str,
    /// `high`, `medium`, `low`.
    pub severity: &'static str,
    /// In words.
    pub message: String,
}

/// Everything known about one token.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenTimeline {
    /// The JTI.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// The fingerprint (trail tokens).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// `bound`, `legacy`, `other`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_kind: Option<String>,
    /// The subject (user name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The pod the token is bound to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bound_pod: Option<PodRef>,
    /// The node the token names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Expiry (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Whether the trail saw it read.
    pub in_trail: bool,
    /// Readers, first read first.
    pub reads: Vec<ReadRecord>,
    /// Reads and uses the trail recorded of it (a folded record counts its repeats).
    pub reads_total: u64,
    /// Addresses its bound pod connected from.
    pub pod_ips: BTreeSet<String>,
    /// When a reader was first flagged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flagged: Option<FlaggedRead>,
    /// Calls kept (capped), in input order.
    pub calls: Vec<CallRecord>,
    /// All calls.
    pub calls_total: u64,
    /// Calls per source IP.
    pub calls_by_ip: BTreeMap<String, u64>,
    /// Forbidden calls.
    pub forbidden: u64,
    /// Calls from a foreign IP.
    pub foreign_calls: u64,
    /// Calls after a flagged read.
    pub after_flag_calls: u64,
    /// Hashes of the distinct (verb, target) denied.
    #[serde(skip)]
    denied_seen: FxHashSet<u64>,
    /// The first few of them, in words.
    #[serde(skip)]
    denied_targets: Vec<String>,
    /// Calls per connection address while counting, with the first call's time.
    #[serde(skip)]
    ip_counts: NameMap<String, (u64, String)>,
    /// Who minted it (from the audit log).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minted: Option<Minting>,
    /// Claimed addresses (`X-Forwarded-For`, `X-Real-Ip`) that differ
    /// from every address of the token's earlier calls.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub claimed_new: Vec<ClaimedAddress>,
    /// Every address (connection or claimed) its calls came with.
    #[serde(skip)]
    seen_ips: FxHashSet<String>,
    /// What the replay concludes.
    pub findings: Vec<TimelineFinding>,
    #[serde(skip)]
    first_read: i64,
    #[serde(skip)]
    last_read: i64,
    #[serde(skip)]
    expires_nanos: Option<i64>,
    #[serde(skip)]
    first_foreign: Option<String>,
}

impl TokenTimeline {
    fn new() -> Self {
        Self {
            jti: None,
            fingerprint: None,
            token_kind: None,
            subject: None,
            bound_pod: None,
            node_name: None,
            expires_at: None,
            in_trail: false,
            reads: Vec::new(),
            reads_total: 0,
            pod_ips: BTreeSet::new(),
            flagged: None,
            calls: Vec::new(),
            calls_total: 0,
            calls_by_ip: BTreeMap::new(),
            forbidden: 0,
            foreign_calls: 0,
            after_flag_calls: 0,
            denied_seen: FxHashSet::default(),
            denied_targets: Vec::new(),
            ip_counts: NameMap::default(),
            minted: None,
            claimed_new: Vec::new(),
            seen_ips: FxHashSet::default(),
            findings: Vec::new(),
            first_read: i64::MAX,
            last_read: i64::MIN,
            expires_nanos: None,
            first_foreign: None,
        }
    }

    /// A short name: the JTI, else the fingerprint's first 16 hex digits.
    #[must_use]
    pub fn label(&self) -> String {
        let mut out = String::new();
        self.write_label(&mut out);
        out
    }

    /// Appends [`Self::label`] to `out`.
    pub fn write_label(&self, out: &mut String) {
        if let Some(j) = &self.jti {
            out.push_str("JTI=");
            out.push_str(j);
            return;
        }
        match &self.fingerprint {
            Some(f) => out.extend(f.chars().take(23)),
            None => out.push('-'),
        }
    }

    /// Whether the replay flagged it.
    #[must_use]
    pub fn flagged_by_replay(&self) -> bool {
        self.findings.iter().any(|f| f.severity != "low")
    }

    fn window_contains(&self, t: i64) -> bool {
        if self.first_read == i64::MAX {
            return false;
        }
        let end = self
            .expires_nanos
            .unwrap_or(self.last_read.saturating_add(WINDOW_AFTER_NS));
        t >= self.first_read.saturating_sub(WINDOW_BEFORE_NS) && t <= end
    }
}

/// Facts about one audit call, for [`TokenIndex::record_call`].
#[derive(Debug, Clone, Copy)]
pub struct CallFacts<'e> {
    /// Event time (ns), if known.
    pub nanos: Option<i64>,
    /// Time text.
    pub time: &'e str,
    /// User name.
    pub subject: &'e str,
    /// JTI from the credential id.
    pub jti: Option<&'e str>,
    /// `pod-uid` extra.
    pub pod_uid: Option<&'e str>,
    /// `pod-name` extra.
    pub pod_name: Option<&'e str>,
    /// Verb.
    pub verb: &'e str,
    /// Target text.
    pub target: &'e str,
    /// Code.
    pub code: Option<i64>,
    /// Whether it was denied (403 or a recorded forbid).
    pub denied: bool,
    /// The connection's address (the last `sourceIPs` entry).
    pub source_ip: Option<&'e str>,
    /// The addresses the client claimed (`sourceIPs` before the last).
    pub claimed_ips: &'e [super::event::Text<'e>],
    /// The replay's outcome name.
    pub outcome: &'static str,
}

/// Who minted a token: a `create serviceaccounts/token` whose
/// `authentication.kubernetes.io/issued-credential-id` names its JTI. The
/// token itself (`status.token` at level `RequestResponse`) is never read.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Minting {
    /// When.
    pub time: String,
    /// The user who asked for it.
    pub by: String,
    /// The ServiceAccount it is for (`namespace/name`).
    pub service_account: String,
    /// The object it is bound to (`Pod ns/name (uid U)`), when the audit
    /// level recorded the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bound_to: Option<String>,
    /// Audiences asked for, when recorded.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// Lifetime asked for, in seconds, when recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiration_seconds: Option<i64>,
    /// Whether the minter is a node's kubelet or allowlisted.
    pub expected_minter: bool,
    /// Where the event is.
    pub location: Location,
}

/// A claimed address seen for the first time on a token.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimedAddress {
    /// The address claimed.
    pub address: String,
    /// The connection it came through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// When.
    pub time: String,
}

/// Distinct claimed addresses remembered per token.
const MAX_CLAIMED: usize = 64;
/// Distinct connection addresses counted per token.
const MAX_TOKEN_IPS: usize = 256;

/// The longest connection address kept inline in [`Hot`] (any IPv4
/// address and most IPv6 ones); a longer one is counted through the map.
const INLINE_IP: usize = 31;

/// What every call of a token reads and writes, one cache line, apart
/// from its [`TokenTimeline`] (about 1 KB over many lines, with maps whose
/// keys are heap strings): a replay of many tokens waits on memory more
/// than it computes, so a call of the common kind (an address seen just
/// before, nothing to flag or keep) touches only this line. The total is
/// copied into the timeline at [`TokenIndex::finish`]; the rarer counters
/// (forbidden, foreign, after a flagged read) stay in the timeline.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
struct Hot {
    calls_total: u64,
    /// Calls from `last_ip` not yet added to the timeline's `ip_counts`
    /// (where `last_ip` has its entry).
    last_ip_pending: u64,
    /// When a reader was first flagged (the timeline's `flagged`);
    /// `i64::MAX` when none.
    flagged_nanos: i64,
    /// `calls.len()` of the timeline.
    kept_calls: u32,
    in_trail: bool,
    has_subject: bool,
    has_bound_pod: bool,
    has_pod_ips: bool,
    /// The connection address of the latest counted call, when it fits.
    last_ip: InlineStr<INLINE_IP>,
}

const _: () = assert!(std::mem::size_of::<Hot>() == 64);

impl Default for Hot {
    fn default() -> Self {
        Self {
            calls_total: 0,
            last_ip_pending: 0,
            flagged_nanos: i64::MAX,
            kept_calls: 0,
            in_trail: false,
            has_subject: false,
            has_bound_pod: false,
            has_pod_ips: false,
            last_ip: InlineStr::default(),
        }
    }
}

impl Hot {
    /// Adds the pending calls of the latest address to `ip_counts`.
    fn settle_last_ip(&mut self, ip_counts: &mut NameMap<String, (u64, String)>) {
        if self.last_ip_pending == 0 {
            return;
        }
        if let Some(ip) = self.last_ip.get()
            && let Some((count, _)) = ip_counts.get_mut(&Name(ip))
        {
            *count += self.last_ip_pending;
        }
        self.last_ip_pending = 0;
    }
}

/// Trail and audit-only tokens, indexed for the join.
#[derive(Debug, Default)]
pub struct TokenIndex {
    tokens: Vec<TokenTimeline>,
    /// Per token (same index), what its calls touch.
    hot: Vec<Hot>,
    by_jti: NameTable<usize>,
    by_fingerprint: HashMap<String, usize>,
    /// (subject, `uid:<uid>` or `name:<ns>/<name>`) -> tokens without JTI.
    by_subject_pod: HashMap<(String, String), Vec<usize>>,
    /// Trail entries read.
    pub trail_entries: u64,
    /// Audit-only tokens not given a timeline (over the cap).
    pub audit_only_dropped: u64,
    audit_only: usize,
}

const READER_FINDINGS: [FindingKind; 3] = [
    FindingKind::ForeignToken,
    FindingKind::HostReader,
    FindingKind::UnexpectedReader,
];

impl TokenIndex {
    /// An empty index.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Tokens read in the trail.
    #[must_use]
    pub fn trail_tokens(&self) -> usize {
        self.hot.iter().filter(|h| h.in_trail).count()
    }

    /// Reads trail records from `reader` (JSON lines), reporting bad lines.
    pub fn read_trail(
        &mut self,
        file: &str,
        reader: &mut dyn std::io::BufRead,
        problems: &mut Problems,
    ) {
        let mut line_no = 0u64;
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) => {
                    problems.record(
                        Location {
                            file: file.into(),
                            line: line_no + 1,
                            item: None,
                        },
                        format!("read failed, rest of file skipped: {e}"),
                    );
                    return;
                }
            }
            line_no += 1;
            let text = buf.trim_ascii();
            if text.is_empty() {
                continue;
            }
            match parse_trail_line(text) {
                Ok(entry) => self.add_entry(&entry),
                Err(e) => problems.record(
                    Location {
                        file: file.into(),
                        line: line_no,
                        item: None,
                    },
                    format!("trail record: {e}"),
                ),
            }
        }
    }

    /// Adds one trail entry.
    pub fn add_entry(&mut self, entry: &TrailEntry) {
        self.trail_entries += 1;
        if !matches!(entry.kind, EntryKind::TokenRead | EntryKind::TokenUse) {
            return;
        }
        let Some(token) = &entry.token else { return };
        let idx = if let Some(j) = &token.jti {
            self.by_jti.get(j).copied()
        } else {
            self.by_fingerprint.get(&token.fingerprint).copied()
        };
        let idx = idx.unwrap_or_else(|| {
            let i = self.tokens.len();
            let mut t = TokenTimeline::new();
            t.jti.clone_from(&token.jti);
            if let Some(j) = &token.jti {
                self.by_jti.get_or_insert_with(j, || i);
            } else {
                self.by_fingerprint.insert(token.fingerprint.clone(), i);
            }
            self.tokens.push(t);
            self.hot.push(Hot::default());
            i
        });
        let nanos = parse_nanos(&entry.time).unwrap_or(0);
        // A folded record stands for `count` reads from `first` to `last`.
        let (times, first_time) = match &entry.repeated {
            Some(r) => (r.count.max(1), r.first.as_str()),
            None => (1, entry.time.as_str()),
        };
        let first_nanos = parse_nanos(first_time).unwrap_or(nanos);
        let t = &mut self.tokens[idx];
        let hot = &mut self.hot[idx];
        if !t.in_trail {
            t.in_trail = true;
            hot.in_trail = true;
            if !token.fingerprint.is_empty() {
                t.fingerprint = Some(token.fingerprint.clone());
            }
            t.token_kind = Some(token.kind.clone());
            t.subject.clone_from(&token.subject);
            t.bound_pod.clone_from(&token.bound_pod);
            t.node_name.clone_from(&token.node_name);
            t.expires_nanos = token.expires_at.and_then(|s| s.checked_mul(1_000_000_000));
            t.expires_at = t.expires_nanos.map(format_nanos);
            hot.has_subject = t.subject.is_some();
            hot.has_bound_pod = t.bound_pod.is_some();
            if t.jti.is_none()
                && let (Some(subject), Some(pod)) = (&token.subject, &token.bound_pod)
            {
                let mut keys = vec![format!("uid:{}", pod.uid)];
                if let (Some(ns), Some(name)) = (&pod.namespace, &pod.name) {
                    keys.push(format!("name:{ns}/{name}"));
                } else if let (Some(ns), Some(name)) = (&token.namespace, &pod.name) {
                    keys.push(format!("name:{ns}/{name}"));
                }
                for k in keys {
                    self.by_subject_pod
                        .entry((subject.clone(), k))
                        .or_default()
                        .push(idx);
                }
            }
        }
        t.reads_total += times;
        t.first_read = t.first_read.min(first_nanos);
        t.last_read = t.last_read.max(nanos);
        let reader = entry.reader.as_ref();
        let reader_pod_uid = reader.and_then(|r| r.pod.as_ref()).map(|p| p.uid.clone());
        let source_ip = entry.connection.as_ref().map(|c| c.saddr.clone());
        if let Some(ip) = &source_ip {
            let own_pod = match (&t.bound_pod, &reader_pod_uid) {
                (Some(bound), Some(uid)) => bound.uid == *uid,
                (Some(_), None) => false,
                (None, _) => true,
            };
            if own_pod && !ip.is_empty() {
                t.pod_ips.insert(ip.clone());
                hot.has_pod_ips = true;
            }
        }
        let findings: Vec<String> = entry
            .findings
            .iter()
            .map(|f| f.kind.as_str().to_owned())
            .collect();
        let kind = entry.kind.as_str();
        let process = |r: &crate::correlate::Reader| {
            let pod = entry
                .pod_key()
                .map_or_else(|| "the host".to_owned(), |p| format!("pod {p}"));
            format!(
                "{} (pid {}) in {pod} on node {}",
                r.comm, r.tgid, entry.node
            )
        };
        if let Some(r) = reader {
            let flagged: Vec<String> = entry
                .findings
                .iter()
                .filter(|f| READER_FINDINGS.contains(&f.kind))
                .map(|f| f.kind.as_str().to_owned())
                .collect();
            if !flagged.is_empty() && t.flagged.as_ref().is_none_or(|f| nanos < f.nanos) {
                hot.flagged_nanos = nanos;
                t.flagged = Some(FlaggedRead {
                    time: entry.time.clone(),
                    nanos,
                    process: process(r),
                    findings: flagged,
                });
            }
            let existing = t.reads.iter_mut().find(|x| {
                x.node == entry.node
                    && x.tgid == r.tgid
                    && x.comm == r.comm
                    && x.kind == kind
                    && x.pod_uid == reader_pod_uid
                    && x.source_ip == source_ip
            });
            if let Some(x) = existing {
                x.count += times;
                if nanos >= parse_nanos(&x.last_time).unwrap_or(i64::MIN) {
                    x.last_time.clone_from(&entry.time);
                }
                if first_nanos < parse_nanos(&x.time).unwrap_or(i64::MAX) {
                    x.time = first_time.to_owned();
                }
                for f in findings {
                    if !x.findings.contains(&f) {
                        x.findings.push(f);
                    }
                }
            } else if t.reads.len() < MAX_READS {
                t.reads.push(ReadRecord {
                    time: first_time.to_owned(),
                    last_time: entry.time.clone(),
                    count: times,
                    kind,
                    node: entry.node.clone(),
                    tgid: r.tgid,
                    uid: r.uid,
                    comm: r.comm.clone(),
                    exe: r.exe.clone(),
                    pod: entry.pod_key(),
                    pod_uid: reader_pod_uid,
                    source_ip,
                    findings,
                });
            }
        }
    }

    /// The token a call joins, creating an audit-only timeline for an
    /// unknown JTI (within the cap).
    fn join(&mut self, call: &CallFacts<'_>) -> Option<usize> {
        if let Some(jti) = call.jti {
            let i = self.audit_only_token(jti)?;
            let hot = &mut self.hot[i];
            if hot.has_subject
                && (hot.has_bound_pod || call.pod_uid.is_none() && call.pod_name.is_none())
            {
                return Some(i);
            }
            let t = &mut self.tokens[i];
            if t.subject.is_none() {
                t.subject = Some(call.subject.to_owned());
            }
            hot.has_subject = true;
            if t.bound_pod.is_none() && (call.pod_uid.is_some() || call.pod_name.is_some()) {
                hot.has_bound_pod = true;
                let ns = crate::rbac::authorizer::split_service_account_user(call.subject)
                    .map(|(ns, _)| ns.to_owned());
                t.bound_pod = Some(PodRef {
                    uid: call.pod_uid.unwrap_or_default().to_owned(),
                    name: call.pod_name.map(str::to_owned),
                    namespace: ns,
                    ..PodRef::default()
                });
            }
            return Some(i);
        }
        let nanos = call.nanos?;
        let mut keys: Vec<String> = Vec::new();
        if let Some(uid) = call.pod_uid {
            keys.push(format!("uid:{uid}"));
        }
        if let (Some(name), Some((ns, _))) = (
            call.pod_name,
            crate::rbac::authorizer::split_service_account_user(call.subject),
        ) {
            keys.push(format!("name:{ns}/{name}"));
        }
        for k in keys {
            if let Some(list) = self.by_subject_pod.get(&(call.subject.to_owned(), k))
                && let Some(&i) = list
                    .iter()
                    .find(|&&i| self.tokens[i].window_contains(nanos))
            {
                return Some(i);
            }
        }
        None
    }

    /// The token of `jti`, given an audit-only timeline when new (within
    /// the cap).
    fn audit_only_token(&mut self, jti: &str) -> Option<usize> {
        if let Some(&i) = self.by_jti.get(jti) {
            return Some(i);
        }
        if self.audit_only >= MAX_AUDIT_ONLY_TOKENS {
            self.audit_only_dropped += 1;
            return None;
        }
        self.audit_only += 1;
        let i = self.tokens.len();
        let mut t = TokenTimeline::new();
        t.jti = Some(jti.to_owned());
        self.tokens.push(t);
        self.hot.push(Hot::default());
        self.by_jti.get_or_insert_with(jti, || i);
        Some(i)
    }

    /// Records who minted the token `jti` (its timeline starts there).
    pub fn record_mint(&mut self, jti: &str, minting: Minting) {
        let Some(i) = self.audit_only_token(jti) else {
            return;
        };
        let t = &mut self.tokens[i];
        if t.subject.is_none()
            && let Some((ns, name)) = minting.service_account.split_once('/')
        {
            t.subject = Some(format!(
                "{}{ns}:{name}",
                crate::rbac::model::SERVICE_ACCOUNT_USER_PREFIX
            ));
            self.hot[i].has_subject = true;
        }
        if t.minted.is_none() {
            t.minted = Some(minting);
        }
    }

    /// Joins a call to its token and records it; returns the token index
    /// and appends the call's flags to `flags` (the caller's list, reused
    /// from call to call: a forbidden call allocates nothing here).
    pub fn record_call(
        &mut self,
        call: &CallFacts<'_>,
        location: &Location,
        flags: &mut Vec<&'static str>,
    ) -> Option<usize> {
        let i = self.join(call)?;
        let hot = &mut self.hot[i];
        let start = flags.len();
        // The common call (an address seen just before, nothing to flag,
        // nothing more to keep) reads and writes only `hot`.
        if let Some(ip) = call.source_ip
            && hot.has_pod_ips
            && !self.tokens[i].pod_ips.contains(ip)
        {
            let t = &mut self.tokens[i];
            flags.push("foreign-ip");
            t.foreign_calls += 1;
            if t.first_foreign.is_none() {
                t.first_foreign = Some(call.time.to_owned());
            }
        }
        if let Some(n) = call.nanos
            && n > hot.flagged_nanos
        {
            flags.push("after-flagged-read");
            self.tokens[i].after_flag_calls += 1;
        }
        if call.denied {
            let t = &mut self.tokens[i];
            flags.push("forbidden");
            t.forbidden += 1;
            // Distinct targets matter only until eight are kept.
            if t.denied_targets.len() < 8 && t.denied_seen.len() < 1024 {
                let mut h = FxHasher::default();
                (call.verb, call.target).hash(&mut h);
                if t.denied_seen.insert(h.finish()) {
                    t.denied_targets
                        .push(format!("{} {}", call.verb, call.target));
                }
            }
        }
        let earlier = hot.calls_total > 0;
        if !call.claimed_ips.is_empty() {
            let t = &mut self.tokens[i];
            for claimed in call.claimed_ips.iter().map(super::event::Text::as_str) {
                if claimed.is_empty() || t.seen_ips.contains(claimed) {
                    continue;
                }
                if earlier && t.claimed_new.len() < MAX_CLAIMED {
                    if !flags[start..].contains(&"claimed-address") {
                        flags.push("claimed-address");
                    }
                    t.claimed_new.push(ClaimedAddress {
                        address: claimed.to_owned(),
                        via: call.source_ip.map(str::to_owned),
                        time: call.time.to_owned(),
                    });
                }
                if t.seen_ips.len() < MAX_TOKEN_IPS {
                    t.seen_ips.insert(claimed.to_owned());
                }
            }
        }
        hot.calls_total += 1;
        if let Some(ip) = call.source_ip {
            if hot.last_ip.is(ip) {
                hot.last_ip_pending += 1;
            } else {
                let t = &mut self.tokens[i];
                hot.settle_last_ip(&mut t.ip_counts);
                if let Some((n, _)) = t.ip_counts.get_mut(&Name(ip)) {
                    *n += 1;
                    hot.last_ip.set(ip);
                } else if t.ip_counts.len() < MAX_TOKEN_IPS {
                    t.ip_counts.insert(ip.to_owned(), (1, call.time.to_owned()));
                    if t.seen_ips.len() < MAX_TOKEN_IPS {
                        t.seen_ips.insert(ip.to_owned());
                    }
                    hot.last_ip.set(ip);
                } else {
                    hot.last_ip.clear();
                }
            }
        }
        let cap = if hot.in_trail {
            MAX_CALLS_TRAIL
        } else {
            MAX_CALLS_AUDIT_ONLY
        };
        let kept = hot.kept_calls as usize;
        let flagged = flags.len() > start;
        if kept < cap || flagged && kept < cap * 2 {
            hot.kept_calls += 1;
            self.tokens[i].calls.push(CallRecord {
                time: call.time.to_owned(),
                verb: call.verb.to_owned(),
                target: call.target.to_owned(),
                code: call.code,
                source_ip: call.source_ip.map(str::to_owned),
                outcome: call.outcome,
                flags: flags[start..].to_vec(),
                location: location.clone(),
            });
        }
        Some(i)
    }

    /// The token at `i`.
    #[must_use]
    pub fn get(&self, i: usize) -> Option<&TokenTimeline> {
        self.tokens.get(i)
    }

    /// Concludes: findings per token; returns the timelines, flagged
    /// ones first, then trail tokens, then by first call.
    #[must_use]
    pub fn finish(mut self) -> Vec<TokenTimeline> {
        for (t, hot) in self.tokens.iter_mut().zip(&mut self.hot) {
            hot.settle_last_ip(&mut t.ip_counts);
            t.calls_total = hot.calls_total;
            let ips = std::mem::take(&mut t.ip_counts);
            let mut first_by_ip: Vec<(String, String)> = ips
                .iter()
                .map(|(ip, (_, first))| (first.clone(), ip.clone()))
                .collect();
            first_by_ip.sort();
            t.calls_by_ip = ips.into_iter().map(|(ip, (n, _))| (ip, n)).collect();
            if t.foreign_calls > 0 {
                let foreign: Vec<String> = t
                    .calls_by_ip
                    .iter()
                    .filter(|(ip, _)| !t.pod_ips.contains(*ip))
                    .map(|(ip, n)| format!("{ip} ({n} calls)"))
                    .collect();
                let own: Vec<&str> = t.pod_ips.iter().map(String::as_str).collect();
                t.findings.push(TimelineFinding {
                    kind: "foreign-source-ip",
                    severity: "high",
                    message: format!(
                        "used from {} from {}, not from its bound pod's address {}: the token was probably copied",
                        foreign.join(", "),
                        t.first_foreign.as_deref().unwrap_or("?"),
                        own.join(", ")
                    ),
                });
            }
            if t.after_flag_calls > 0
                && let Some(f) = &t.flagged
            {
                t.findings.push(TimelineFinding {
                    kind: "use-after-flagged-read",
                    severity: "high",
                    message: format!(
                        "{} calls after {} was flagged ({}) at {}",
                        t.after_flag_calls,
                        f.process,
                        f.findings.join(", "),
                        f.time
                    ),
                });
            }
            if t.forbidden >= PROBE_THRESHOLD {
                let mut targets: Vec<&str> = t.denied_targets.iter().map(String::as_str).collect();
                targets.sort_unstable();
                t.findings.push(TimelineFinding {
                    kind: "permission-probing",
                    severity: "medium",
                    message: format!(
                        "{} forbidden calls ({}): the subject is probing its permissions",
                        t.forbidden,
                        targets.join("; ")
                    ),
                });
            } else if t.forbidden > 0 {
                t.findings.push(TimelineFinding {
                    kind: "forbidden-calls",
                    severity: "low",
                    message: format!("{} forbidden call(s)", t.forbidden),
                });
            }
            if let Some(m) = &t.minted
                && !m.expected_minter
            {
                let sa_minter =
                    m.by.starts_with(crate::rbac::model::SERVICE_ACCOUNT_USER_PREFIX);
                t.findings.push(TimelineFinding {
                    kind: "minted-outside-kubelet",
                    severity: if sa_minter { "high" } else { "medium" },
                    message: format!(
                        "minted at {} by {} for {}{}: no kubelet wrote it to a pod, so no node's agent sees it read",
                        m.time,
                        m.by,
                        m.service_account,
                        m.bound_to
                            .as_ref()
                            .map_or_else(String::new, |b| format!(", bound to {b}"))
                    ),
                });
            }
            if t.bound_pod.is_some() && first_by_ip.len() >= 2 {
                let list: Vec<String> = first_by_ip
                    .iter()
                    .map(|(first, ip)| {
                        format!(
                            "{ip} ({} calls from {first})",
                            t.calls_by_ip.get(ip).copied().unwrap_or(0)
                        )
                    })
                    .collect();
                t.findings.push(TimelineFinding {
                    kind: "multiple-source-addresses",
                    severity: "high",
                    message: format!(
                        "a pod-bound token connected from {} addresses: {}; a pod has one address, so the token is used elsewhere too",
                        first_by_ip.len(),
                        list.join(", ")
                    ),
                });
            }
            if !t.claimed_new.is_empty() {
                let list: Vec<String> = t
                    .claimed_new
                    .iter()
                    .map(|c| {
                        format!(
                            "{} at {} via {}",
                            c.address,
                            c.time,
                            c.via.as_deref().unwrap_or("?")
                        )
                    })
                    .collect();
                t.findings.push(TimelineFinding {
                    kind: "claimed-source-address",
                    severity: "medium",
                    message: format!(
                        "calls claimed (X-Forwarded-For / X-Real-Ip) an address none of its earlier calls came from: {}",
                        list.join("; ")
                    ),
                });
            }
            t.reads
                .sort_by_key(|r| parse_nanos(&r.time).unwrap_or(i64::MIN));
            // Most severe first; the order of the pushes above within one severity.
            t.findings
                .sort_by_key(|f| super::detect::severity_rank(f.severity));
        }
        let mut tokens = self.tokens;
        tokens.sort_by_key(|t| (!t.flagged_by_replay(), !t.in_trail, t.first_read));
        tokens
    }
}

/// A trail line: an export record `{seq, time, prev_hash, hash, entry}` or a bare entry.
fn parse_trail_line(text: &[u8]) -> Result<TrailEntry, serde_json::Error> {
    #[derive(serde::Deserialize)]
    struct Export {
        entry: TrailEntry,
    }
    let value: serde_json::Value = serde_json::from_slice(text)?;
    if value.get("entry").is_some() {
        serde_json::from_value::<Export>(value).map(|e| e.entry)
    } else {
        serde_json::from_value(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::correlate::{ENTRY_SCHEMA_VERSION, Reader, Repeated, TokenInfo};

    fn read(time: &str, repeated: Option<Repeated>) -> TrailEntry {
        TrailEntry {
            schema: ENTRY_SCHEMA_VERSION,
            kind: EntryKind::TokenRead,
            time: time.into(),
            node: "node-a".into(),
            reader: Some(Reader {
                tgid: 42,
                comm: "cat".into(),
                ..Reader::default()
            }),
            token: Some(TokenInfo {
                jti: Some("jti-1".into()),
                fingerprint: "sha256:ab".into(),
                ..TokenInfo::default()
            }),
            rbac: None,
            connection: None,
            findings: Vec::new(),
            message: None,
            repeated,
        }
    }

    #[test]
    fn a_folded_record_counts_its_repeats_and_its_span() {
        let mut index = TokenIndex::new();
        index.add_entry(&read("2026-01-01T00:00:00Z", None));
        index.add_entry(&read(
            "2026-01-01T00:01:00Z",
            Some(Repeated {
                count: 4999,
                first: "2026-01-01T00:00:01Z".into(),
                last: "2026-01-01T00:01:00Z".into(),
            }),
        ));
        let t = &index.tokens[0];
        assert_eq!(t.reads_total, 5000);
        assert_eq!(t.reads.len(), 1, "one process: one reader row");
        let r = &t.reads[0];
        assert_eq!(r.count, 5000);
        assert_eq!(r.time, "2026-01-01T00:00:00Z");
        assert_eq!(r.last_time, "2026-01-01T00:01:00Z");
    }

    fn call<'e>(jti: &'e str, time: &'e str, ip: Option<&'e str>, denied: bool) -> CallFacts<'e> {
        CallFacts {
            nanos: parse_nanos(time),
            time,
            subject: "system:serviceaccount:ns:sa",
            jti: Some(jti),
            pod_uid: Some("uid-1"),
            pod_name: Some("pod-1"),
            verb: "get",
            target: "pods",
            code: Some(if denied { 403 } else { 200 }),
            denied,
            source_ip: ip,
            claimed_ips: &[],
            outcome: "agree",
        }
    }

    #[test]
    fn calls_are_counted_per_address_whatever_order_the_addresses_come_in() {
        let location = Location {
            file: "a.log".into(),
            line: 1,
            item: None,
        };
        let long = "fe80:0000:0000:0000:0000:0000:0000:0001%a-zone-name-longer-than-inline";
        let sequence = [
            "10.0.0.1", "10.0.0.1", "10.0.0.2", "10.0.0.1", long, long, "10.0.0.2", "10.0.0.2", "",
            "", "10.0.0.1", "10.0.0.1",
        ];
        let mut index = TokenIndex::new();
        for (n, ip) in sequence.iter().enumerate() {
            let time = format!("2026-01-01T00:00:{n:02}Z");
            index.record_call(
                &call("jti-1", &time, Some(ip), n == 2),
                &location,
                &mut Vec::new(),
            );
        }
        // Calls without an address count as calls only (and the repeat of
        // the last address above is still counted).
        index.record_call(
            &call("jti-1", "2026-01-01T00:00:30Z", None, false),
            &location,
            &mut Vec::new(),
        );
        // Another token's calls do not mix in.
        index.record_call(
            &call("jti-2", "2026-01-01T00:00:31Z", Some("10.0.0.1"), false),
            &location,
            &mut Vec::new(),
        );
        let tokens = index.finish();
        let t = tokens
            .iter()
            .find(|t| t.jti.as_deref() == Some("jti-1"))
            .expect("jti-1");
        assert_eq!(t.calls_total, 13);
        assert_eq!(t.forbidden, 1);
        let want: BTreeMap<String, u64> = [("10.0.0.1", 5), ("10.0.0.2", 3), (long, 2), ("", 2)]
            .into_iter()
            .map(|(ip, n)| (ip.to_owned(), n))
            .collect();
        assert_eq!(t.calls_by_ip, want);
        let multi = t
            .findings
            .iter()
            .find(|f| f.kind == "multiple-source-addresses")
            .expect("a pod-bound token from several addresses");
        assert!(
            multi
                .message
                .contains("10.0.0.1 (5 calls from 2026-01-01T00:00:00Z)")
                && multi
                    .message
                    .contains("10.0.0.2 (3 calls from 2026-01-01T00:00:02Z)"),
            "{}",
            multi.message
        );
        let other = tokens
            .iter()
            .find(|t| t.jti.as_deref() == Some("jti-2"))
            .expect("jti-2");
        assert_eq!(other.calls_by_ip.get("10.0.0.1"), Some(&1));
        assert_eq!(other.calls_total, 1);
    }

    #[test]
    fn a_token_counts_at_most_its_cap_of_addresses_and_every_call() {
        let location = Location {
            file: "a.log".into(),
            line: 1,
            item: None,
        };
        let ips: Vec<String> = (0..MAX_TOKEN_IPS + 10)
            .map(|i| format!("10.1.{}.{}", i / 256, i % 256))
            .collect();
        let mut index = TokenIndex::new();
        for round in 0..2 {
            for ip in &ips {
                index.record_call(
                    &call(
                        "jti-1",
                        &format!("2026-01-01T00:0{round}:00Z"),
                        Some(ip),
                        false,
                    ),
                    &location,
                    &mut Vec::new(),
                );
            }
        }
        let tokens = index.finish();
        let t = &tokens[0];
        assert_eq!(t.calls_total, 2 * ips.len() as u64);
        assert_eq!(t.calls_by_ip.len(), MAX_TOKEN_IPS);
        assert!(
            t.calls_by_ip.values().all(|&n| n == 2),
            "{:?}",
            t.calls_by_ip
        );
        assert!(!t.calls_by_ip.contains_key(&ips[MAX_TOKEN_IPS]));
    }
}
