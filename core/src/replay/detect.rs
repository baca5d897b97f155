//! Default detections on audit events, and the stolen-token signals that
//! need no trail: each finding has a stable `kind`, a severity, the
//! subject, and the first event that raised it (file and line).
//!
//! | kind | severity | when |
//! | --- | --- | --- |
//! | `permission-discovery` | medium | a ServiceAccount creates a SelfSubjectAccessReview or SelfSubjectRulesReview |
//! | `rbac-write-by-service-account` | high (medium when denied) | a ServiceAccount writes roles or bindings, or uses `escalate`/`bind`/`impersonate` |
//! | `impersonation-by-service-account` | high | a ServiceAccount's request carries `impersonatedUser` |
//! | `secrets-burst` | high | one subject reads [`DetectConfig::secrets_burst`] distinct secrets within [`DetectConfig::secrets_window_secs`] |
//! | `exec-by-service-account` | high (medium when denied) | a ServiceAccount on `pods/exec` or `pods/attach`, whatever the verb |
//! | `anonymous-allowed` | high | `system:anonymous` allowed, outside the health and version endpoints |
//! | `legacy-token-used` | medium | the authenticator annotated a legacy (Secret-based) token |
//! | `stale-token` | medium | the `stale-token` annotation, or a failed authentication (401) from an address of a pod's token after that pod was deleted |
//!
//! Findings are folded per (kind, subject, what): a thousand execs by one
//! ServiceAccount into one pod are one finding with a count. State is
//! bounded: per-subject secret windows and per-pod addresses are capped.

use std::collections::VecDeque;
use std::hash::{Hash as _, Hasher as _};

use rustc_hash::{FxHashMap, FxHasher};
use serde::Serialize;

use super::event::AuditEvent;
use super::input::Location;
use crate::rbac::Attributes;
use crate::rbac::model::{RBAC_GROUP, SERVICE_ACCOUNT_USER_PREFIX};

/// The anonymous user.
pub const ANONYMOUS: &str = "system:anonymous";
/// Distinct findings kept (the rest are counted in `dropped`).
pub const MAX_DETECTIONS: usize = 10_000;
/// Subjects whose secret reads are windowed.
const MAX_SECRET_SUBJECTS: usize = 100_000;
/// Reads kept in one subject's window.
const MAX_WINDOW_READS: usize = 10_000;
/// Pods whose token addresses are remembered (for stale-token).
const MAX_PODS: usize = 100_000;
/// Addresses remembered per pod.
const MAX_ADDRS_PER_POD: usize = 4;
/// Paths every cluster serves to anyone: not a finding when anonymous.
const PUBLIC_PATHS: [&str; 4] = ["/healthz", "/livez", "/readyz", "/version"];

/// Settings of the default detections.
#[derive(Debug, Clone)]
pub struct DetectConfig {
    /// Distinct secrets read by one subject that make a burst (default 10).
    pub secrets_burst: usize,
    /// The burst's window in seconds (default 60).
    pub secrets_window_secs: u64,
    /// Users besides `system:node:*` allowed to mint tokens without a
    /// finding (default: `system:kube-controller-manager`, which mints for
    /// its controllers).
    pub mint_allow: Vec<String>,
}

impl Default for DetectConfig {
    fn default() -> Self {
        Self {
            secrets_burst: 10,
            secrets_window_secs: 60,
            mint_allow: vec!["system:kube-controller-manager".to_owned()],
        }
    }
}

impl DetectConfig {
    /// Whether `user` may mint tokens without a finding: a node's kubelet
    /// or an allowlisted user.
    #[must_use]
    pub fn mint_allowed(&self, user: &str) -> bool {
        user.starts_with("system:node:") || self.mint_allow.iter().any(|u| u == user)
    }
}

/// One finding.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Detection {
    /// Stable name (see the module docs).
    pub kind: &'static str,
    /// `high`, `medium` or `low`.
    pub severity: &'static str,
    /// The user it is about.
    pub subject: String,
    /// In words.
    pub message: String,
    /// First event.
    pub first_time: String,
    /// Last event.
    pub last_time: String,
    /// Events folded into it.
    pub count: u64,
    /// Where the first event is.
    pub location: Location,
}

/// What the engine knows about one event when it asks for detections.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'e> {
    /// The event.
    pub ev: &'e AuditEvent<'e>,
    /// Its attributes, when determined.
    pub attrs: Option<&'e Attributes<'e>>,
    /// The user RBAC decides for.
    pub user: &'e str,
    /// The authenticated user.
    pub auth_user: &'e str,
    /// The cluster allowed it (recorded decision, else 2xx/3xx).
    pub allowed: bool,
    /// Time, when it parses.
    pub nanos: Option<i64>,
    /// Where it is.
    pub location: &'e Location,
}

#[derive(Default)]
struct SecretWindow {
    order: VecDeque<(i64, u64)>,
    last_seen: FxHashMap<u64, i64>,
    /// Whether the current burst was reported (re-armed when the window empties below the threshold).
    reported: bool,
}

/// Bytes of an address held inline: the longest text Go's `net.IP`
/// prints (a full IPv6 address, 39 characters).
const ADDR_INLINE: usize = 39;

/// The addresses a pod's token connected from, up to
/// [`MAX_ADDRS_PER_POD`]. Each is held inline when it fits, so the check
/// every call makes reads the map's entry and nothing behind it; a longer
/// text (not an address the API server prints) goes to the heap.
#[derive(Default)]
struct PodAddrs {
    inline: [crate::bytes::InlineStr<ADDR_INLINE>; MAX_ADDRS_PER_POD],
    long: Vec<String>,
}

impl PodAddrs {
    fn with(ip: &str) -> Self {
        let mut a = Self::default();
        a.push(ip);
        a
    }

    fn len(&self) -> usize {
        self.inline.iter().filter(|a| a.get().is_some()).count() + self.long.len()
    }

    fn contains(&self, ip: &str) -> bool {
        self.inline.iter().any(|a| a.is(ip))
            || self.long.iter().any(|a| crate::bytes::same_str(a, ip))
    }

    /// Adds `ip` (the caller checks [`Self::contains`] and the cap).
    fn push(&mut self, ip: &str) {
        let held = self
            .inline
            .iter_mut()
            .find(|a| a.get().is_none())
            .is_some_and(|slot| slot.set(ip));
        if !held {
            self.long.push(ip.to_owned());
        }
    }

    fn iter(&self) -> impl Iterator<Item = &str> {
        self.inline
            .iter()
            .filter_map(crate::bytes::InlineStr::get)
            .chain(self.long.iter().map(String::as_str))
    }
}

/// The detections' state over one replay.
#[derive(Default)]
pub struct Detector {
    config: DetectConfig,
    index: FxHashMap<u64, usize>,
    found: Vec<Detection>,
    /// Findings over [`MAX_DETECTIONS`].
    pub dropped: u64,
    secrets: FxHashMap<String, SecretWindow>,
    /// Hash of a pod's (namespace, name) -> addresses its token connected from.
    pod_addrs: FxHashMap<u64, PodAddrs>,
    /// Address -> (`ns/name` of the deleted pod it belonged to, delete time).
    deleted_addrs: FxHashMap<String, (String, i64)>,
}

fn pod_key(namespace: &str, name: &str) -> u64 {
    let mut h = FxHasher::default();
    (namespace, name).hash(&mut h);
    h.finish()
}

fn is_service_account(user: &str) -> bool {
    user.starts_with(SERVICE_ACCOUNT_USER_PREFIX)
}

fn path_of(uri: &str) -> &str {
    uri.split(['?', '#']).next().unwrap_or("")
}

fn is_public_path(path: &str) -> bool {
    let path = path.trim_end_matches('/');
    PUBLIC_PATHS.iter().any(|p| {
        path.strip_prefix(p)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

impl Detector {
    /// A detector with these settings.
    #[must_use]
    pub fn new(config: DetectConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &DetectConfig {
        &self.config
    }

    /// Folds a finding in; returns its kind for the event's flags.
    #[expect(clippy::too_many_arguments, reason = "one finding's fields")]
    fn raise(
        &mut self,
        kind: &'static str,
        severity: &'static str,
        subject: &str,
        what: &str,
        message: impl FnOnce() -> String,
        time: &str,
        location: &Location,
    ) -> &'static str {
        let mut h = FxHasher::default();
        (kind, severity, subject, what).hash(&mut h);
        let key = h.finish();
        if let Some(&i) = self.index.get(&key) {
            let d = &mut self.found[i];
            d.count += 1;
            time.clone_into(&mut d.last_time);
            return kind;
        }
        if self.found.len() >= MAX_DETECTIONS {
            self.dropped += 1;
            return kind;
        }
        self.index.insert(key, self.found.len());
        self.found.push(Detection {
            kind,
            severity,
            subject: subject.to_owned(),
            message: message(),
            first_time: time.to_owned(),
            last_time: time.to_owned(),
            count: 1,
            location: location.clone(),
        });
        kind
    }

    /// Runs every detection on one evaluated event; pushes the kinds raised
    /// onto `flags`.
    pub fn observe(&mut self, o: &Observed<'_>, flags: &mut Vec<&'static str>) {
        let ev = o.ev;
        let time = ev.time_text();
        let sa = is_service_account(o.user);
        if let Some(a) = o.attrs.filter(|a| a.is_resource_request) {
            let severity = if o.allowed { "high" } else { "medium" };
            let (g, r, s, v) = (a.api_group, a.resource, a.subresource, a.verb);
            if sa
                && g == "authorization.k8s.io"
                && matches!(r, "selfsubjectaccessreviews" | "selfsubjectrulesreviews")
            {
                flags.push(self.raise(
                    "permission-discovery",
                    "medium",
                    o.user,
                    r,
                    || format!("{} created {r}: it is listing what it may do", o.user),
                    time,
                    o.location,
                ));
            }
            let rbac_object = g == RBAC_GROUP
                && matches!(
                    r,
                    "roles" | "clusterroles" | "rolebindings" | "clusterrolebindings"
                );
            let rbac_write = (rbac_object
                && matches!(
                    v,
                    "create"
                        | "update"
                        | "patch"
                        | "delete"
                        | "deletecollection"
                        | "escalate"
                        | "bind"
                ))
                || v == "impersonate";
            if sa && rbac_write && !aggregation_controller(o.user, r, v) {
                let target = if a.namespace.is_empty() {
                    format!("{r} {}", a.name)
                } else {
                    format!("{r} {}/{}", a.namespace, a.name)
                };
                let verdict = if o.allowed { "allowed" } else { "denied" };
                flags.push(self.raise(
                    "rbac-write-by-service-account",
                    severity,
                    o.user,
                    &format!("{v} {target}"),
                    || format!("{} did {v} on {target} ({verdict})", o.user),
                    time,
                    o.location,
                ));
            }
            if sa && g.is_empty() && r == "pods" && matches!(s, "exec" | "attach") {
                let pod = format!("{}/{}", a.namespace, a.name);
                let verdict = if o.allowed { "allowed" } else { "denied" };
                flags.push(self.raise(
                    "exec-by-service-account",
                    severity,
                    o.user,
                    &format!("{s} {pod}"),
                    || format!("{} ran pods/{s} ({v}) in {pod} ({verdict})", o.user),
                    time,
                    o.location,
                ));
            }
            if o.allowed
                && g.is_empty()
                && r == "secrets"
                && s.is_empty()
                && v == "get"
                && !a.name.is_empty()
                && let Some(n) = o.nanos
            {
                self.secret_read(o, a, n, flags);
            }
            if o.allowed && g.is_empty() && r == "pods" && s.is_empty() && v == "delete" {
                self.pod_deleted(a.namespace, a.name, o.nanos);
            }
        }
        if ev.impersonated_user.is_some() && is_service_account(o.auth_user) {
            flags.push(self.raise(
                "impersonation-by-service-account",
                "high",
                o.auth_user,
                o.user,
                || format!("{} impersonated {}", o.auth_user, o.user),
                time,
                o.location,
            ));
        }
        if o.user == ANONYMOUS && o.allowed {
            let path = match o.attrs {
                Some(a) if !a.is_resource_request => a.path,
                _ => path_of(ev.request_uri()),
            };
            if !is_public_path(path) {
                flags.push(self.raise(
                    "anonymous-allowed",
                    "high",
                    o.user,
                    path,
                    || {
                        format!(
                            "an unauthenticated {} {} was allowed",
                            ev.verb(),
                            ev.request_uri()
                        )
                    },
                    time,
                    o.location,
                ));
            }
        }
        if let Some(legacy) = ev.annotation(|a| a.legacy_token.as_ref()) {
            let manual = ev.annotation(|a| a.legacy_token_manual_secret.as_ref());
            let auto = ev.annotation(|a| a.legacy_token_autogenerated_secret.as_ref());
            let subject = if legacy.is_empty() {
                o.auth_user
            } else {
                legacy
            };
            let (secret, how) = match (manual, auto) {
                (Some(s), _) => (s, "a Secret made by hand"),
                (None, Some(s)) => (s, "an auto-generated Secret"),
                (None, None) => ("", "a Secret"),
            };
            let ns = crate::rbac::authorizer::split_service_account_user(subject)
                .map_or("", |(ns, _)| ns);
            flags.push(self.raise(
                "legacy-token-used",
                "medium",
                subject,
                secret,
                || {
                    if secret.is_empty() {
                        format!(
                            "a legacy (Secret-based, never-expiring) token of {subject} was used (the API server before 1.28 does not name the Secret)"
                        )
                    } else {
                        format!(
                            "a legacy (never-expiring) token of {subject} from {how}, Secret {ns}/{secret}, was used"
                        )
                    }
                },
                time,
                o.location,
            ));
        }
        if let Some(stale) = ev.annotation(|a| a.stale_token.as_ref()) {
            let jti = ev.user.as_ref().and_then(|u| u.jti()).unwrap_or("");
            flags.push(self.raise(
                "stale-token",
                "medium",
                o.auth_user,
                jti,
                || {
                    let of = if jti.is_empty() {
                        String::new()
                    } else {
                        format!(" (JTI={jti})")
                    };
                    format!(
                        "a stale bound token{of} was presented: {}",
                        stale.chars().take(200).collect::<String>()
                    )
                },
                time,
                o.location,
            ));
        }
        self.remember_pod_address(ev, o.auth_user);
    }

    /// A request that failed authentication (401): the token's pod may be
    /// gone. These events carry no user; the address joins them.
    pub fn observe_unauthenticated(&mut self, ev: &AuditEvent<'_>, location: &Location) {
        if ev.code() != Some(401) {
            return;
        }
        let Some(ip) = ev.source_ip() else { return };
        let Some((pod, deleted)) = self.deleted_addrs.get(ip) else {
            return;
        };
        if ev.time_nanos().is_none_or(|t| t < *deleted) {
            return;
        }
        let pod = pod.clone();
        let ip = ip.to_owned();
        self.raise(
            "stale-token",
            "medium",
            "",
            &pod,
            || {
                format!(
                    "authentication failed from {ip} after pod {pod} was deleted: something still presents the deleted pod's token"
                )
            },
            ev.time_text(),
            location,
        );
    }

    fn secret_read(
        &mut self,
        o: &Observed<'_>,
        a: &Attributes<'_>,
        now: i64,
        flags: &mut Vec<&'static str>,
    ) {
        let threshold = self.config.secrets_burst.max(1);
        let window_ns = i64::try_from(self.config.secrets_window_secs)
            .unwrap_or(i64::MAX / 1_000_000_000)
            .saturating_mul(1_000_000_000);
        if !self.secrets.contains_key(o.user) && self.secrets.len() >= MAX_SECRET_SUBJECTS {
            return;
        }
        let w = self.secrets.entry(o.user.to_owned()).or_default();
        let mut h = FxHasher::default();
        (a.namespace, a.name).hash(&mut h);
        let name = h.finish();
        w.order.push_back((now, name));
        w.last_seen.insert(name, now);
        while let Some(&(t, n)) = w.order.front() {
            if t >= now.saturating_sub(window_ns) && w.order.len() <= MAX_WINDOW_READS {
                break;
            }
            w.order.pop_front();
            if w.last_seen.get(&n) == Some(&t) {
                w.last_seen.remove(&n);
            }
        }
        if w.last_seen.len() < threshold {
            w.reported = false;
            return;
        }
        if w.reported {
            return;
        }
        w.reported = true;
        let distinct = w.last_seen.len();
        let secs = self.config.secrets_window_secs;
        flags.push(self.raise(
            "secrets-burst",
            "high",
            o.user,
            "",
            || {
                format!(
                    "{} read {distinct} distinct secrets within {secs} s (threshold {threshold})",
                    o.user
                )
            },
            o.ev.time_text(),
            o.location,
        ));
    }

    fn remember_pod_address(&mut self, ev: &AuditEvent<'_>, auth_user: &str) {
        let Some(user) = ev.user.as_ref() else { return };
        let Some(pod) = user.pod_name() else { return };
        let Some(ip) = ev.source_ip() else { return };
        let Some((ns, _)) = crate::rbac::authorizer::split_service_account_user(auth_user) else {
            return;
        };
        let key = pod_key(ns, pod);
        if let Some(addrs) = self.pod_addrs.get_mut(&key) {
            if !addrs.contains(ip) && addrs.len() < MAX_ADDRS_PER_POD {
                addrs.push(ip);
            }
        } else if self.pod_addrs.len() < MAX_PODS {
            self.pod_addrs.insert(key, PodAddrs::with(ip));
        }
    }

    fn pod_deleted(&mut self, ns: &str, name: &str, nanos: Option<i64>) {
        let Some(t) = nanos else { return };
        if let Some(addrs) = self.pod_addrs.get(&pod_key(ns, name)) {
            let pod = format!("{ns}/{name}");
            for a in addrs.iter() {
                self.deleted_addrs.insert(a.to_owned(), (pod.clone(), t));
            }
        }
    }

    /// The findings, most severe first, then by first time.
    #[must_use]
    pub fn finish(self) -> (Vec<Detection>, u64) {
        let mut found = self.found;
        found.sort_by(|a, b| {
            severity_rank(a.severity)
                .cmp(&severity_rank(b.severity))
                .then_with(|| a.first_time.cmp(&b.first_time))
        });
        (found, self.dropped)
    }
}

/// Controllers whose RBAC writes are their job, not a finding (Elastic's
/// rule excludes the same two): the ClusterRole aggregation controller
/// rewrites aggregated ClusterRoles, the garbage collector deletes roles and
/// bindings whose owner is gone.
fn aggregation_controller(user: &str, resource: &str, verb: &str) -> bool {
    (user == "system:serviceaccount:kube-system:clusterrole-aggregation-controller"
        && resource == "clusterroles"
        && matches!(verb, "update" | "patch"))
        || (user == "system:serviceaccount:kube-system:generic-garbage-collector"
            && matches!(verb, "delete" | "deletecollection"))
}

/// 0 for high, 1 medium, 2 low.
#[must_use]
pub fn severity_rank(s: &str) -> u8 {
    match s {
        "high" => 0,
        "medium" => 1,
        _ => 2,
    }
}

/// The strings of a `Text` list, for tests.
#[cfg(test)]
fn texts(v: &[super::event::Text<'_>]) -> Vec<String> {
    v.iter().map(|t| t.as_str().to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_addresses_short_and_long_are_kept_and_found() {
        let long = "a".repeat(ADDR_INLINE + 1);
        let full_v6 = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        assert_eq!(full_v6.len(), ADDR_INLINE);
        for order in [
            ["10.0.0.1", full_v6, long.as_str(), ""],
            ["", long.as_str(), "::ffff:10.0.0.1", "é"],
        ] {
            let mut a = PodAddrs::with(order[0]);
            for (n, ip) in order.iter().enumerate().skip(1) {
                assert_eq!(a.len(), n);
                assert!(!a.contains(ip), "{ip:?} before it was added");
                a.push(ip);
                assert!(a.contains(ip), "{ip:?}");
            }
            assert_eq!(a.len(), 4);
            let mut kept: Vec<&str> = a.iter().collect();
            kept.sort_unstable();
            let mut want = order.to_vec();
            want.sort_unstable();
            assert_eq!(kept, want);
            let shorter = "a".repeat(ADDR_INLINE);
            assert!(!a.contains("10.0.0.2") && !a.contains(&shorter));
        }
    }

    #[test]
    fn public_paths() {
        for p in [
            "/healthz",
            "/healthz/etcd",
            "/livez",
            "/readyz/",
            "/version",
            "/version/",
        ] {
            assert!(is_public_path(p), "{p}");
        }
        for p in ["/healthzx", "/api/v1/pods", "/", "/metrics", "/versions"] {
            assert!(!is_public_path(p), "{p}");
        }
        assert_eq!(path_of("/version?timeout=32s"), "/version");
    }

    #[test]
    fn mint_allowlist() {
        let c = DetectConfig::default();
        assert!(c.mint_allowed("system:node:n1"));
        assert!(c.mint_allowed("system:kube-controller-manager"));
        assert!(!c.mint_allowed("alice"));
        assert!(!c.mint_allowed("system:serviceaccount:shop:web"));
    }

    #[test]
    fn claimed_and_connection_addresses() {
        let ev =
            AuditEvent::parse(br#"{"sourceIPs":["203.0.113.9","10.0.0.9","10.1.1.1"]}"#).unwrap();
        assert_eq!(ev.source_ip(), Some("10.1.1.1"));
        assert_eq!(
            ev.claimed_ips().collect::<Vec<_>>(),
            ["203.0.113.9", "10.0.0.9"]
        );
        assert_eq!(texts(ev.source_ips.as_deref().unwrap()).len(), 3);
        let ev = AuditEvent::parse(br#"{"sourceIPs":[]}"#).unwrap();
        assert_eq!(ev.source_ip(), None);
        assert_eq!(ev.claimed_ips().count(), 0);
    }
}
