//! The correlator: typed sensor events, already enriched with the pod and
//! the token's identity, in; trail entries with findings out. Pure logic:
//! no kernel, no files, no clock of its own (time comes from the events).
//!
//! - A token access (fanotify) is recorded at once the first time a
//!   process accesses a token file, whatever syscall made it: the entry
//!   says which of open, access and close were seen. Its repeats are folded
//!   (see [`super::fold`]): one record per window with the exact count.
//! - In the syscall path-match mode, a token read is an observation once
//!   per open: at the first read that returned bytes (a client library's
//!   `read` + `read` = 0 + `close` is one observation, not three); repeated
//!   observations are folded in the same way.
//! - A connect to the API server is recorded when its outcome is known, as a
//!   token use when the same process (or, failing that, the same container)
//!   read a token within the use window (flagged `foreign-token` when the
//!   user is in another pod than the token's, `host-reader` when it is a
//!   host process), else as an API contact without a
//!   token.
//! - Findings about the token or its subject (legacy, expired, stale,
//!   unverified, privileged) are repeated for the same token and reader at
//!   most once per `finding_repeat`, so a pod re-reading its token every
//!   minute does not flood the trail; findings about the reader
//!   (foreign-token, host-reader, unexpected-reader) are always reported.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::Duration,
};

use super::{
    baseline::{Baseline, BaselineConfig, Verdict},
    fold::{Counted, FoldKey, Folds, seen_bits},
    model::{
        Connection, ENTRY_SCHEMA_VERSION, EntryKind, Finding, FindingKind, PodRef, RbacSummary,
        Reader, RiskItem, Severity, TokenFileRef, TokenInfo, TrailEntry,
    },
};
use crate::{
    event::{ConnectDetail, Detail, EventKind, SensorEvent},
    identity::{Identity, SignatureCheck, TokenKind, ValidityState},
    rbac::{self, Snapshot, risk::Check},
};

/// Correlation settings (the agent's config fills these in).
#[derive(Debug, Clone)]
pub struct CorrelateConfig {
    /// This node's name, written into every entry.
    pub node_name: String,
    /// How long after a token read a connect counts as that token's use.
    pub use_window: Duration,
    /// Host executables (path or file name) allowed to read pods' tokens.
    pub host_readers: Vec<String>,
    /// Host executables allowed to contact the API server without reading a token.
    pub host_api_clients: Vec<String>,
    /// The learned baseline's settings.
    pub baseline: BaselineConfig,
    /// Minimum time between two identical token/subject findings for the same reader.
    pub finding_repeat: Duration,
    /// The longest span one folded record of repeated accesses covers.
    pub fold_window: Duration,
}

impl Default for CorrelateConfig {
    fn default() -> Self {
        Self {
            node_name: String::new(),
            use_window: Duration::from_secs(600),
            // The kubelet writes the tokens; it does not need to be reported.
            host_readers: vec!["kubelet".into()],
            // Node components that authenticate with certificates or their own tokens.
            host_api_clients: vec!["kubelet".into(), "kube-proxy".into()],
            baseline: BaselineConfig::default(),
            finding_repeat: Duration::from_secs(3600),
            fold_window: Duration::from_secs(60),
        }
    }
}

/// A sensor event with what the agent knows around it.
#[derive(Debug, Clone)]
pub struct Enriched {
    /// The event.
    pub event: SensorEvent,
    /// The process's pod (`None` for a host process).
    pub pod: Option<PodRef>,
    /// For token file events: the token's identity, when it could be read.
    pub identity: Option<Arc<Identity>>,
    /// For token file events: the pod whose volume holds the file, when known.
    pub volume_pod_uid: Option<String>,
}

/// The RBAC snapshot in force, and a cache of subject summaries.
#[derive(Debug)]
pub struct RbacContext {
    snapshot: Arc<Snapshot>,
    label: String,
    cache: HashMap<String, RbacSummary>,
}

impl RbacContext {
    /// Wraps a snapshot; `label` names it in entries (an id, a path, a time).
    #[must_use]
    pub fn new(snapshot: Arc<Snapshot>, label: impl Into<String>) -> Self {
        Self {
            snapshot,
            label: label.into(),
            cache: HashMap::new(),
        }
    }

    /// The snapshot's label.
    #[must_use]
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The summary for a user (cached per snapshot).
    pub fn summary(&mut self, username: &str, groups: &[String]) -> RbacSummary {
        if let Some(hit) = self.cache.get(username) {
            return hit.clone();
        }
        let user = rbac::UserInfo::new(username, groups.to_vec());
        let findings = rbac::risk::assess(&self.snapshot, &user);
        let has = |checks: &[Check]| findings.iter().any(|f| checks.contains(&f.check));
        let summary = RbacSummary {
            snapshot: self.label.clone(),
            can_read_secrets: has(&[Check::ReadSecrets, Check::WildcardResources]),
            can_create_pods: has(&[
                Check::CreatePods,
                Check::CreateWorkloads,
                Check::WildcardResources,
            ]),
            can_exec: has(&[
                Check::PodsExec,
                Check::PodsAttach,
                Check::NodesProxy,
                Check::WildcardResources,
            ]),
            risks: findings
                .iter()
                .map(|f| RiskItem {
                    check: f.check.id().to_owned(),
                    severity: format!("{:?}", f.severity).to_lowercase(),
                    scope: f
                        .namespace
                        .clone()
                        .unwrap_or_else(|| "cluster-wide".to_owned()),
                    binding: format!("{}/{}", f.binding_kind, f.binding),
                    role: format!("{}/{}", f.role_kind, f.role),
                })
                .collect(),
        };
        self.cache.insert(username.to_owned(), summary.clone());
        summary
    }
}

#[derive(Debug, Clone)]
struct OpenFd {
    path: Option<String>,
    reported: bool,
}

#[derive(Debug, Clone)]
struct RecentRead {
    at_ns: u64,
    token: TokenInfo,
    rbac: Option<RbacSummary>,
}

/// A connect held until a token read by its process may have reached us.
#[derive(Debug)]
struct Undecided {
    attempt: Enriched,
    detail: ConnectDetail,
    time: SensorEvent,
}

/// How long a connect with no token read before it waits for one that may
/// still be on its way (fanotify and the eBPF ring buffer are read apart)
/// before it is recorded as an API contact without a token.
pub const CONTACT_GRACE: Duration = Duration::from_secs(1);
const GRACE_NS: u64 = CONTACT_GRACE.as_nanos() as u64;

#[derive(Debug, Clone)]
struct PendingConnect {
    event: Enriched,
    seen_ns: u64,
}

/// How long an attempt may wait for its outcome before it is recorded without one.
const CONNECT_OUTCOME_WAIT: Duration = Duration::from_secs(180);
/// Processes whose lineage is remembered (exec events).
const LINEAGE_CAPACITY: usize = 16_384;

/// The correlator's state.
#[derive(Debug)]
pub struct Correlator {
    config: CorrelateConfig,
    rbac: Option<RbacContext>,
    baseline: Baseline,
    open_fds: HashMap<(u32, i32), OpenFd>,
    /// Repeated accesses being counted.
    folds: Folds,
    by_process: HashMap<u32, RecentRead>,
    by_container: HashMap<u64, RecentRead>,
    pending: HashMap<u64, PendingConnect>,
    undecided: Vec<Undecided>,
    repeats: HashMap<(FindingKind, String, String), u64>,
    lineage: HashMap<u32, (u32, String)>,
    lineage_order: VecDeque<u32>,
}

fn basename(exe: &str) -> &str {
    exe.rsplit('/').next().unwrap_or(exe)
}

fn listed(list: &[String], exe: Option<&str>, comm: &str) -> bool {
    list.iter()
        .any(|entry| exe.is_some_and(|e| e == entry || basename(e) == entry) || comm == entry)
}

fn signature_name(check: &SignatureCheck) -> &'static str {
    match check {
        SignatureCheck::Verified { .. } => "verified",
        SignatureCheck::InvalidSignature { .. } => "invalid-signature",
        SignatureCheck::UnknownKeyId { .. } => "unknown-key-id",
        SignatureCheck::AlgorithmNotAccepted { .. } => "algorithm-not-accepted",
        SignatureCheck::NotChecked => "not-checked",
    }
}

fn validity_name(state: ValidityState) -> &'static str {
    match state {
        ValidityState::Valid => "valid",
        ValidityState::Stale => "stale",
        ValidityState::NotYetValid => "not-yet-valid",
        ValidityState::Expired => "expired",
        ValidityState::NeverExpires => "never-expires",
    }
}

/// Seconds since the epoch of an RFC 3339 time (the sensor's `time`).
fn unix_seconds(time: &str) -> i64 {
    humantime::parse_rfc3339(time)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() as i64)
}

impl Correlator {
    /// A correlator with no RBAC snapshot yet.
    #[must_use]
    pub fn new(config: CorrelateConfig) -> Self {
        let folds = Folds::new(u64::try_from(config.fold_window.as_nanos()).unwrap_or(u64::MAX));
        Self {
            baseline: Baseline::new(config.baseline.clone()),
            config,
            rbac: None,
            open_fds: HashMap::new(),
            folds,
            by_process: HashMap::new(),
            by_container: HashMap::new(),
            pending: HashMap::new(),
            undecided: Vec::new(),
            repeats: HashMap::new(),
            lineage: HashMap::new(),
            lineage_order: VecDeque::new(),
        }
    }

    /// Switches to a new RBAC snapshot (summaries are recomputed).
    pub fn set_rbac(&mut self, rbac: RbacContext) {
        self.rbac = Some(rbac);
    }

    /// The label of the snapshot in force.
    #[must_use]
    pub fn rbac_label(&self) -> Option<&str> {
        self.rbac.as_ref().map(RbacContext::label)
    }

    /// The learned baseline (to store it, or restore a stored one).
    pub fn baseline_mut(&mut self) -> &mut Baseline {
        &mut self.baseline
    }

    /// Consumes one event; returns the entries it completes (often none).
    pub fn observe(&mut self, input: Enriched) -> Vec<TrailEntry> {
        let ev = &input.event;
        let key = |fd| (ev.process.tgid, fd);
        match (&ev.kind, &ev.detail) {
            (EventKind::Exec, Detail::Process(p)) => {
                self.remember_lineage(
                    ev.process.tgid,
                    ev.process.ppid,
                    p.filename.clone().unwrap_or_default(),
                );
                Vec::new()
            }
            (EventKind::Exit, _) => {
                self.by_process.remove(&ev.process.tgid);
                self.open_fds
                    .retain(|(tgid, _), _| *tgid != ev.process.tgid);
                self.folds
                    .exited(ev.process.tgid, ev.process.start_ns, ev.monotonic_ns);
                Vec::new()
            }
            (EventKind::TokenAccess, Detail::File(f)) => {
                self.access(&input, f.path.as_deref(), f.dev, f.ino, &f.seen)
            }
            (EventKind::TokenOpen, Detail::File(f)) => {
                self.open_fds.insert(
                    key(f.fd),
                    OpenFd {
                        path: f.path.clone(),
                        reported: false,
                    },
                );
                Vec::new()
            }
            (EventKind::TokenClose, Detail::File(f)) => {
                self.open_fds.remove(&key(f.fd));
                Vec::new()
            }
            (EventKind::TokenRead, Detail::File(f)) => {
                if f.bytes.unwrap_or(0) <= 0 {
                    return Vec::new();
                }
                let state = self.open_fds.entry(key(f.fd)).or_insert(OpenFd {
                    path: f.path.clone(),
                    reported: false,
                });
                if state.reported {
                    return Vec::new();
                }
                state.reported = true;
                let path = state.path.clone();
                self.access(&input, path.as_deref(), f.dev, f.ino, &[])
            }
            (EventKind::Connect, Detail::Connect(c)) => {
                self.pending.insert(
                    c.sock_id,
                    PendingConnect {
                        event: input.clone(),
                        seen_ns: ev.monotonic_ns,
                    },
                );
                self.expire_pending(ev.monotonic_ns)
            }
            (EventKind::ConnectResult, Detail::Connect(c)) => {
                let attempt = self.pending.remove(&c.sock_id).map(|p| p.event);
                let mut out = self.expire_pending(ev.monotonic_ns);
                out.extend(self.connect(attempt.as_ref().unwrap_or(&input), c, ev));
                out
            }
            _ => Vec::new(),
        }
    }

    /// One token access (a fanotify event, or an open's first read): the
    /// first of its combination is recorded at once, its repeats are
    /// counted into a folded record.
    fn access(
        &mut self,
        input: &Enriched,
        path: Option<&str>,
        dev: u64,
        ino: u64,
        seen: &[&str],
    ) -> Vec<TrailEntry> {
        let ev = &input.event;
        let key = FoldKey::new(ev.process.tgid, ev.process.start_ns, dev, ino);
        let bits = seen_bits(seen);
        let mut out = Vec::new();
        match self.folds.count(key, ev.monotonic_ns, &ev.time, bits) {
            Counted::Folded => self.refresh_use(input),
            Counted::Evaluate { closed } => {
                out.extend(closed.map(|b| *b));
                let (mut entry, kinds) = self.token_read(input, path.map(str::to_owned), dev, ino);
                if let Some(file) = entry.token.as_mut().and_then(|t| t.file.as_mut()) {
                    file.seen = seen.iter().map(|s| (*s).to_owned()).collect();
                }
                if !self.folds.record(key, kinds, &entry, ev.monotonic_ns, bits) {
                    out.push(entry);
                }
            }
        }
        if !self.undecided.is_empty() {
            out.extend(self.settle(ev.monotonic_ns));
        }
        out
    }

    /// Decides the connects held for want of a token read: a token use when
    /// their process (or container) has read a token since, an API contact
    /// when [`CONTACT_GRACE`] has passed by `now_ns` without one.
    fn settle(&mut self, now_ns: u64) -> Vec<TrailEntry> {
        let mut out = Vec::new();
        for held in std::mem::take(&mut self.undecided) {
            let at = held.attempt.event.monotonic_ns;
            if let Some(read) = self.recent_read(&held.attempt, at) {
                out.push(self.token_use(&held.attempt, &held.detail, &held.time, read));
            } else if now_ns.saturating_sub(held.time.monotonic_ns) >= GRACE_NS
                || now_ns == u64::MAX
            {
                out.push(self.api_contact(&held.attempt, &held.detail, &held.time));
            } else {
                self.undecided.push(held);
            }
        }
        out
    }

    /// A folded access still starts the use window of the token it read.
    fn refresh_use(&mut self, input: &Enriched) {
        let now_ns = input.event.monotonic_ns;
        if let Some(read) = self.by_process.get_mut(&input.event.process.tgid) {
            read.at_ns = read.at_ns.max(now_ns);
        }
        if input.pod.is_some()
            && let Some(read) = self.by_container.get_mut(&input.event.process.cgroup_id)
        {
            read.at_ns = read.at_ns.max(now_ns);
        }
    }

    /// Folded records whose window has passed or whose process exited, as
    /// of `now_ns` (monotonic): the agent calls this on a timer.
    pub fn tick(&mut self, now_ns: u64) -> Vec<TrailEntry> {
        let mut out = self.settle(now_ns);
        out.extend(self.folds.due(now_ns));
        out
    }

    /// Records attempts whose outcome never came (older than the wait).
    fn expire_pending(&mut self, now_ns: u64) -> Vec<TrailEntry> {
        let wait = CONNECT_OUTCOME_WAIT.as_nanos() as u64;
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| now_ns.saturating_sub(p.seen_ns) > wait)
            .map(|(k, _)| *k)
            .collect();
        let attempts: Vec<PendingConnect> = expired
            .into_iter()
            .filter_map(|k| self.pending.remove(&k))
            .collect();
        attempts.iter().filter_map(|p| self.unanswered(p)).collect()
    }

    /// Records an attempt that has no outcome.
    fn unanswered(&mut self, pending: &PendingConnect) -> Option<TrailEntry> {
        let Detail::Connect(detail) = &pending.event.event.detail else {
            return None;
        };
        self.connect(&pending.event, detail, &pending.event.event)
    }

    /// Records every attempt still waiting for its outcome and every
    /// pending folded record (at shutdown).
    pub fn drain(&mut self) -> Vec<TrailEntry> {
        let pending: Vec<PendingConnect> = self.pending.drain().map(|(_, p)| p).collect();
        let mut out: Vec<TrailEntry> = pending.iter().filter_map(|p| self.unanswered(p)).collect();
        out.extend(self.settle(u64::MAX));
        out.extend(self.folds.drain());
        out
    }

    fn remember_lineage(&mut self, tgid: u32, ppid: u32, exe: String) {
        if self.lineage.insert(tgid, (ppid, exe)).is_none() {
            self.lineage_order.push_back(tgid);
            while self.lineage_order.len() > LINEAGE_CAPACITY {
                if let Some(old) = self.lineage_order.pop_front() {
                    self.lineage.remove(&old);
                }
            }
        }
    }

    fn reader(&self, input: &Enriched) -> Reader {
        let p = &input.event.process;
        let mut ancestry = Vec::new();
        if let Some(parent) = &p.parent_exe {
            ancestry.push(parent.clone());
        }
        let mut next = p.ppid;
        for _ in 0..8 {
            let Some((ppid, _)) = self.lineage.get(&next) else {
                break;
            };
            let Some((_, exe)) = self.lineage.get(ppid) else {
                break;
            };
            ancestry.push(exe.clone());
            next = *ppid;
        }
        Reader {
            tgid: p.tgid,
            pid: p.pid,
            ppid: p.ppid,
            uid: p.uid,
            gid: p.gid,
            comm: p.comm.clone(),
            exe: p.exe.clone(),
            ancestry,
            cgroup_id: p.cgroup_id,
            mnt_ns: p.mnt_ns,
            pod: input.pod.clone(),
            named_by: Some(p.named_by.to_owned()),
            uncertain: p.uncertain,
        }
    }

    fn token_info(identity: &Identity, at: i64, file: Option<TokenFileRef>) -> TokenInfo {
        let s = &identity.summary;
        let (namespace, service_account) = match (&s.namespace, &s.service_account) {
            (Some(ns), Some(sa)) => (Some(ns.clone()), Some(sa.name.clone())),
            _ => (s.namespace.clone(), None),
        };
        TokenInfo {
            kind: match identity.kind {
                TokenKind::Legacy => "legacy",
                TokenKind::Bound => "bound",
                TokenKind::Other => "other",
            }
            .to_owned(),
            subject: identity.user.as_ref().map(|u| u.username.clone()),
            namespace: namespace.clone(),
            service_account,
            jti: s.jti.clone(),
            fingerprint: identity.fingerprint.clone(),
            bound_pod: s.pod.as_ref().map(|pod| PodRef {
                uid: pod.uid.clone().unwrap_or_default(),
                name: Some(pod.name.clone()),
                namespace,
                ..PodRef::default()
            }),
            node_name: s.node.as_ref().map(|n| n.name.clone()),
            issuer: s.issuer.clone(),
            audiences: s.audiences.clone(),
            expires_at: s.expires_at,
            validity: validity_name(identity.validity_at(at).state).to_owned(),
            signature: signature_name(&identity.signature).to_owned(),
            file,
        }
    }

    /// Whether a finding of `kind` about `token` for `reader` is due again.
    fn due(&mut self, kind: FindingKind, fingerprint: &str, reader: &Reader, now_ns: u64) -> bool {
        let who = format!(
            "{}|{}",
            reader.pod.as_ref().map_or("host", |p| p.uid.as_str()),
            reader.exe.as_deref().unwrap_or(&reader.comm)
        );
        let key = (kind, fingerprint.to_owned(), who);
        let repeat = self.config.finding_repeat.as_nanos() as u64;
        match self.repeats.get(&key) {
            Some(&last) if now_ns.saturating_sub(last) < repeat => false,
            _ => {
                self.repeats.insert(key, now_ns);
                true
            }
        }
    }

    /// The full record of a token read, and the set of finding kinds that
    /// apply to it (before the repeat interval thins the token's own).
    fn token_read(
        &mut self,
        input: &Enriched,
        path: Option<String>,
        dev: u64,
        ino: u64,
    ) -> (TrailEntry, u16) {
        let ev = &input.event;
        let now_ns = ev.monotonic_ns;
        let reader = self.reader(input);
        let file = TokenFileRef {
            path,
            dev,
            ino,
            volume_pod_uid: input.volume_pod_uid.clone(),
            seen: Vec::new(),
        };
        let mut findings = Vec::new();
        let Some(identity) = input.identity.as_deref() else {
            // The file could not be parsed as a token: still a read of a token file.
            let entry = self.entry(
                EntryKind::TokenRead,
                ev,
                Some(reader),
                None,
                None,
                None,
                Vec::new(),
            );
            let entry = TrailEntry {
                message: Some("the file read is not a parsable token".into()),
                token: Some(TokenInfo {
                    kind: "unparsable".into(),
                    validity: "unknown".into(),
                    signature: "not-checked".into(),
                    file: Some(file),
                    ..TokenInfo::default()
                }),
                ..entry
            };
            return (entry, 0);
        };
        let token = Self::token_info(identity, unix_seconds(&ev.time), Some(file));
        let rbac = match (&identity.user, self.rbac.as_mut()) {
            (Some(user), Some(ctx)) => Some(ctx.summary(&user.username, &user.groups)),
            _ => None,
        };

        // Whose token is it, and whose pod reads it?
        let owner_pod = token
            .bound_pod
            .as_ref()
            .map(|p| p.uid.clone())
            .filter(|u| !u.is_empty())
            .or_else(|| input.volume_pod_uid.clone());
        match (&reader.pod, &owner_pod) {
            (Some(pod), Some(owner)) if &pod.uid != owner => findings.push(Finding {
                kind: FindingKind::ForeignToken,
                severity: Severity::High,
                reason: format!(
                    "{} in pod {} read the token of {} bound to pod {}",
                    reader.exe.as_deref().unwrap_or(&reader.comm),
                    pod.key(),
                    token.subject.as_deref().unwrap_or("an unknown subject"),
                    token
                        .bound_pod
                        .as_ref()
                        .map_or_else(|| owner.clone(), PodRef::key),
                ),
            }),
            (Some(pod), _) => {
                let pod_name = pod.name.clone().unwrap_or_else(|| pod.uid.clone());
                let namespace = pod.namespace.clone().unwrap_or_default();
                let exe = reader.exe.clone().unwrap_or_else(|| reader.comm.clone());
                let image = pod.image.as_deref();
                let verdict = match &pod.workload {
                    Some(workload) => self
                        .baseline
                        .observe_workload(&namespace, workload, image, &exe, now_ns),
                    None => self
                        .baseline
                        .observe(&namespace, &pod_name, image, &exe, now_ns),
                };
                if let Verdict::Unexpected { after_learning } = verdict {
                    findings.push(Finding {
                        kind: FindingKind::UnexpectedReader,
                        severity: Severity::Medium,
                        reason: format!(
                            "{exe} read pod {}'s own token; {}",
                            pod.key(),
                            if after_learning {
                                "the workload was not seen to read it with this program while it was learned"
                            } else {
                                "shells and file tools are never part of a workload's learned readers"
                            }
                        ),
                    });
                }
            }
            (None, _)
                if !listed(
                    &self.config.host_readers,
                    reader.exe.as_deref(),
                    &reader.comm,
                ) =>
            {
                findings.push(Finding {
                    kind: FindingKind::HostReader,
                    severity: Severity::High,
                    reason: format!(
                        "host process {} (pid {}) read the token of {}",
                        reader.exe.as_deref().unwrap_or(&reader.comm),
                        reader.tgid,
                        token.subject.as_deref().unwrap_or("an unknown subject"),
                    ),
                });
            }
            (None, _) => {}
        }

        // About the token itself and its subject: at most once per repeat interval.
        let mut about_token = Vec::new();
        match identity.kind {
            TokenKind::Legacy => about_token.push((
                FindingKind::LegacyToken,
                Severity::Medium,
                "a legacy Secret-based token: it never expires and is not bound to a pod"
                    .to_owned(),
            )),
            TokenKind::Bound | TokenKind::Other => {}
        }
        match identity.validity_at(unix_seconds(&ev.time)).state {
            ValidityState::Expired => about_token.push((FindingKind::ExpiredToken, Severity::Medium, "the token has expired (the API server would reject it); the kubelet should have rotated it".to_owned())),
            ValidityState::Stale => about_token.push((FindingKind::StaleToken, Severity::Low, "the token is past its warnafter time: a client is holding on to an old token".to_owned())),
            _ => {}
        }
        if identity.signature.is_failure() {
            about_token.push((
                FindingKind::UnverifiedSignature,
                Severity::High,
                format!(
                    "the token's signature does not verify ({})",
                    signature_name(&identity.signature)
                ),
            ));
        }
        if let Some(summary) = &rbac
            && !summary.risks.is_empty()
        {
            let worst = summary
                .risks
                .iter()
                .map(|r| r.severity.as_str())
                .max_by_key(|s| severity_rank(s))
                .unwrap_or("high");
            let checks: Vec<&str> = summary
                .risks
                .iter()
                .map(|r| r.check.as_str())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            about_token.push((
                FindingKind::PrivilegedSubject,
                if severity_rank(worst) >= 4 {
                    Severity::Critical
                } else {
                    Severity::High
                },
                format!(
                    "{} holds dangerous permissions: {}",
                    token.subject.as_deref().unwrap_or("the subject"),
                    checks.join(", ")
                ),
            ));
        }
        let kinds = about_token
            .iter()
            .fold(FindingKind::set_of(&findings), |set, (kind, _, _)| {
                set | kind.bit()
            });
        for (kind, severity, reason) in about_token {
            if self.due(kind, &token.fingerprint, &reader, now_ns) {
                findings.push(Finding {
                    kind,
                    severity,
                    reason,
                });
            }
        }

        let recent = RecentRead {
            at_ns: now_ns,
            token: token.clone(),
            rbac: rbac.clone(),
        };
        self.by_process.insert(reader.tgid, recent.clone());
        if reader.pod.is_some() {
            self.by_container.insert(reader.cgroup_id, recent);
        }
        let entry = self.entry(
            EntryKind::TokenRead,
            ev,
            Some(reader),
            Some(token),
            rbac,
            None,
            findings,
        );
        (entry, kinds)
    }

    /// The token read that `attempt`'s process, or failing that its
    /// container, made within the use window of `at_ns` (a read seen after
    /// the connect counts: the two come from different sources).
    fn recent_read(&self, attempt: &Enriched, at_ns: u64) -> Option<RecentRead> {
        let window = self.config.use_window.as_nanos() as u64;
        let fresh = |r: &&RecentRead| at_ns.saturating_sub(r.at_ns) <= window;
        let p = &attempt.event.process;
        self.by_process
            .get(&p.tgid)
            .filter(fresh)
            .or_else(|| {
                attempt
                    .pod
                    .as_ref()
                    .and_then(|_| self.by_container.get(&p.cgroup_id))
                    .filter(fresh)
            })
            .cloned()
    }

    /// A connect to the API server: `attempt` names the process (its
    /// context is the caller's), `detail` has the addresses and outcome,
    /// `time_source` the time to record. A token use when the process (or
    /// its container) read a token within the use window; else held for
    /// [`CONTACT_GRACE`], because the read that came before it may reach us
    /// after it (fanotify and eBPF are two queues), then an API contact.
    fn connect(
        &mut self,
        attempt: &Enriched,
        detail: &ConnectDetail,
        time_source: &SensorEvent,
    ) -> Option<TrailEntry> {
        if let Some(read) = self.recent_read(attempt, attempt.event.monotonic_ns) {
            return Some(self.token_use(attempt, detail, time_source, read));
        }
        self.undecided.push(Undecided {
            attempt: attempt.clone(),
            detail: detail.clone(),
            time: time_source.clone(),
        });
        None
    }

    fn connection(detail: &ConnectDetail) -> Connection {
        Connection {
            saddr: detail.saddr.to_string(),
            sport: detail.sport,
            daddr: detail.daddr.to_string(),
            dport: detail.dport,
            established: detail.established,
        }
    }

    fn token_use(
        &self,
        attempt: &Enriched,
        detail: &ConnectDetail,
        time_source: &SensorEvent,
        read: RecentRead,
    ) -> TrailEntry {
        let reader = self.reader(attempt);
        let connection = Self::connection(detail);
        let findings = self.use_findings(&reader, &read.token, &connection);
        self.entry(
            EntryKind::TokenUse,
            time_source,
            Some(reader),
            Some(read.token),
            read.rbac,
            Some(connection),
            findings,
        )
    }

    fn api_contact(
        &self,
        attempt: &Enriched,
        detail: &ConnectDetail,
        time_source: &SensorEvent,
    ) -> TrailEntry {
        let reader = self.reader(attempt);
        let connection = Self::connection(detail);
        let allowed = reader.pod.is_none()
            && listed(
                &self.config.host_api_clients,
                reader.exe.as_deref(),
                &reader.comm,
            );
        let findings = if allowed {
            Vec::new()
        } else {
            vec![Finding {
                kind: FindingKind::ApiContactWithoutToken,
                severity: Severity::Medium,
                reason: format!(
                    "{} {} connected to the API server at {}:{} without reading a token first: a copied or minted credential?",
                    reader.pod.as_ref().map_or_else(
                        || "host process".to_owned(),
                        |p| format!("in pod {}", p.key())
                    ),
                    reader.exe.as_deref().unwrap_or(&reader.comm),
                    connection.daddr,
                    connection.dport,
                ),
            }]
        };
        self.entry(
            EntryKind::ApiContact,
            time_source,
            Some(reader),
            None,
            None,
            Some(connection),
            findings,
        )
    }

    /// Findings of a token's use: the use of a stolen token is the moment
    /// of the incident that matters most, so it is flagged at the use as at
    /// the read. A process in another pod than the token's is
    /// `foreign-token`; a host process (not an allowed host reader) using a
    /// pod's token is `host-reader`; both high.
    fn use_findings(
        &self,
        reader: &Reader,
        token: &TokenInfo,
        connection: &Connection,
    ) -> Vec<Finding> {
        let owner = token
            .bound_pod
            .as_ref()
            .map(|p| p.uid.clone())
            .filter(|u| !u.is_empty())
            .or_else(|| token.file.as_ref().and_then(|f| f.volume_pod_uid.clone()));
        let Some(owner) = owner else {
            return Vec::new();
        };
        let who = reader.exe.as_deref().unwrap_or(&reader.comm);
        let subject = token.subject.as_deref().unwrap_or("an unknown subject");
        let owner_pod = token
            .bound_pod
            .as_ref()
            .map_or_else(|| owner.clone(), PodRef::key);
        let target = format!("{}:{}", connection.daddr, connection.dport);
        match &reader.pod {
            Some(pod) if pod.uid != owner => vec![Finding {
                kind: FindingKind::ForeignToken,
                severity: Severity::High,
                reason: format!(
                    "{who} in pod {} used the token of {subject} bound to pod {owner_pod} to reach the API server at {target}",
                    pod.key(),
                ),
            }],
            Some(_) => Vec::new(),
            None if listed(
                &self.config.host_readers,
                reader.exe.as_deref(),
                &reader.comm,
            ) =>
            {
                Vec::new()
            }
            None => vec![Finding {
                kind: FindingKind::HostReader,
                severity: Severity::High,
                reason: format!(
                    "host process {who} (pid {}) used the token of {subject} bound to pod {owner_pod} to reach the API server at {target}",
                    reader.tgid,
                ),
            }],
        }
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one constructor for every entry kind keeps the fields in one place"
    )]
    fn entry(
        &self,
        kind: EntryKind,
        ev: &SensorEvent,
        reader: Option<Reader>,
        token: Option<TokenInfo>,
        rbac: Option<RbacSummary>,
        connection: Option<Connection>,
        findings: Vec<Finding>,
    ) -> TrailEntry {
        TrailEntry {
            schema: ENTRY_SCHEMA_VERSION,
            kind,
            time: ev.time.clone(),
            node: self.config.node_name.clone(),
            reader,
            token,
            rbac,
            connection,
            findings,
            message: None,
            repeated: None,
        }
    }
}

fn severity_rank(name: &str) -> u8 {
    match name {
        "critical" => 4,
        "high" => 3,
        "medium" => 2,
        "low" => 1,
        _ => 0,
    }
}
