//! Per-subject summaries: calls by verb and resource, denied calls, drift,
//! and dangerous permissions used against those held.
//!
//! A call *uses* a dangerous permission (the checks of
//! [`crate::rbac::risk`]) when the cluster allowed it and its attributes
//! are that permission: get/list/watch `secrets` is `read-secrets`, create
//! `pods` is `create-pods`, create `pods/exec` is `pods-exec`, and so on;
//! an allow by a rule with `*` verbs or resources uses the wildcard. What
//! the subject *holds* is [`crate::rbac::risk::assess`] on the snapshot of
//! its last call. A permission held and never used in the replay is a
//! least-privilege hint.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::bytes::{InlineStr, NameTable, same_str};
use crate::rbac::authorizer::Wildcards;
use crate::rbac::risk::{self, Check};
use crate::rbac::{Attributes, Snapshot, UserInfo};

/// Distinct verb/resource keys kept per subject (the rest count as `(other)`).
pub const MAX_VERB_RESOURCES: usize = 100;
/// Distinct allowed calls kept per ServiceAccount for role suggestions.
pub const MAX_OBSERVED: usize = 4096;

/// The dangerous permission a call exercises, from its attributes.
///
/// Runs on every allowed call of a replay, so it branches on the verb
/// first and compares with [`same_str`] (inline, no call into libc's
/// `memcmp` per candidate string).
#[must_use]
pub fn check_used(a: &Attributes<'_>) -> Option<Check> {
    if !a.is_resource_request {
        return None;
    }
    let (g, r, s, v) = (a.api_group, a.resource, a.subresource, a.verb);
    let is = |x: &str, y: &str| same_str(x, y);
    let any = |x: &str, ys: &[&str]| ys.iter().any(|y| same_str(x, y));
    let core = g.is_empty();
    let pods_sub = |s: &str| {
        if is(s, "exec") {
            Some(Check::PodsExec)
        } else if is(s, "attach") {
            Some(Check::PodsAttach)
        } else {
            None
        }
    };
    if is(v, "get") || is(v, "list") || is(v, "watch") {
        if !core {
            return None;
        }
        if s.is_empty() {
            return is(r, "secrets").then_some(Check::ReadSecrets);
        }
        if !is(v, "get") {
            return None;
        }
        if is(r, "pods") {
            return pods_sub(s);
        }
        return (is(r, "nodes") && is(s, "proxy")).then_some(Check::NodesProxy);
    }
    if is(v, "create") {
        if s.is_empty() {
            let workload = if core {
                if is(r, "pods") {
                    return Some(Check::CreatePods);
                }
                is(r, "replicationcontrollers")
            } else if is(g, "apps") {
                any(
                    r,
                    &["deployments", "daemonsets", "statefulsets", "replicasets"],
                )
            } else {
                is(g, "batch") && any(r, &["jobs", "cronjobs"])
            };
            return workload.then_some(Check::CreateWorkloads);
        }
        if !core {
            return None;
        }
        if is(r, "pods") {
            return pods_sub(s);
        }
        if is(r, "serviceaccounts") && is(s, "token") {
            return Some(Check::CreateServiceAccountTokens);
        }
        return (is(r, "nodes") && is(s, "proxy")).then_some(Check::NodesProxy);
    }
    if is(v, "impersonate") {
        return any(
            r,
            &["users", "groups", "serviceaccounts", "uids", "userextras"],
        )
        .then_some(Check::Impersonate);
    }
    if is(v, "escalate") || is(v, "bind") {
        if !(is(g, "rbac.authorization.k8s.io")
            && any(r, &["roles", "clusterroles"])
            && s.is_empty())
        {
            return None;
        }
        return Some(if is(v, "bind") {
            Check::Bind
        } else {
            Check::Escalate
        });
    }
    if is(v, "update") || is(v, "patch") {
        return (is(g, "certificates.k8s.io")
            && is(r, "certificatesigningrequests")
            && is(s, "approval"))
        .then_some(Check::ApproveCsr);
    }
    None
}

/// The wildcard checks an allowing rule with these `*`s exercises.
pub fn wildcards_used(rule: Wildcards) -> impl Iterator<Item = Check> {
    [
        rule.verbs.then_some(Check::WildcardVerbs),
        rule.resources.then_some(Check::WildcardResources),
    ]
    .into_iter()
    .flatten()
}

/// A dangerous permission held, and how often the replay saw it used.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HeldPermission {
    /// The check.
    pub check: &'static str,
    /// Severity.
    pub severity: String,
    /// `cluster-wide` or the namespace.
    pub scope: String,
    /// `Kind/name` of the binding.
    pub binding: String,
    /// `Kind/name` of the role.
    pub role: String,
    /// Calls that used it.
    pub used: u64,
}

/// One subject's summary.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SubjectSummary {
    /// User name (the impersonated user when impersonating).
    pub user: String,
    /// Groups as first seen.
    pub groups: Vec<String>,
    /// Evaluated calls.
    pub calls: u64,
    /// Denied calls.
    pub denied: u64,
    /// Calls whose decision drifted.
    pub drift: u64,
    /// Calls decided outside RBAC.
    pub outside_rbac: u64,
    /// First call.
    pub first: String,
    /// Last call.
    pub last: String,
    /// Calls per `verb resource[/subresource]`.
    pub by_verb_resource: BTreeMap<String, u64>,
    /// Dangerous permissions used, per check.
    pub used: BTreeMap<&'static str, u64>,
    /// Dangerous permissions held (snapshot of the last call).
    pub held: Vec<HeldPermission>,
    /// Least-privilege hints.
    pub hints: Vec<String>,
    /// Snapshot index of the last call.
    #[serde(skip)]
    pub snapshot: Option<usize>,
    /// Distinct allowed calls (ServiceAccounts, when collecting for
    /// `--suggest-roles`).
    #[serde(skip)]
    pub observed: Vec<crate::rbac::OwnedAttributes>,
    #[serde(skip)]
    observed_seen: rustc_hash::FxHashSet<u64>,
    /// Distinct allowed calls over [`MAX_OBSERVED`] (the suggestion then
    /// misses them).
    #[serde(skip_serializing_if = "is_zero")]
    pub observed_dropped: u64,
}

#[expect(clippy::trivially_copy_pass_by_ref, reason = "serde's signature")]
fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Facts about one evaluated call, for [`Subjects::record`].
#[derive(Debug, Clone, Copy)]
pub struct SubjectCall<'e> {
    /// Attributes, when determined.
    pub attributes: Option<Attributes<'e>>,
    /// Denied (recorded forbid or 403).
    pub denied: bool,
    /// Allowed by the cluster (or, unrecorded, by the snapshot).
    pub allowed: bool,
    /// Drifted.
    pub drift: bool,
    /// Outside RBAC.
    pub outside_rbac: bool,
    /// Time text.
    pub time: &'e str,
    /// Snapshot index.
    pub snapshot: Option<usize>,
}

/// The longest call time kept inline in [`SubjectHot`] (RFC 3339 with
/// nanoseconds is 30 bytes); a longer one goes to the summary's `last`.
const INLINE_TIME: usize = 32;

/// Distinct `verb resource` counts kept in [`SubjectHot`] itself; more
/// go to a vector beside them.
const INLINE_KINDS: usize = 7;

/// What every call of a subject reads and writes, three adjacent cache
/// lines, apart from its [`SubjectSummary`] (hundreds of bytes, and its
/// `last` a heap string of its own): a replay of many subjects waits on
/// memory more than it computes, and `perf` showed the heap list of
/// counts missing the cache on most calls. Moved into the summary at
/// [`Subjects::finish`].
#[derive(Debug, Default)]
#[repr(C, align(64))]
struct SubjectHot {
    calls: u64,
    denied: u64,
    drift: u64,
    outside_rbac: u64,
    /// Snapshot index of the last call.
    snapshot: Option<u32>,
    /// How many of `kinds` and `counts` are in use.
    kinds_len: u8,
    /// Calls per `verb resource[/subresource]`, by the id of the key in
    /// [`Subjects`]'s `kinds` (named and sorted into `by_verb_resource` at
    /// the end): the first few here, the rest in `more`.
    kinds: [u32; INLINE_KINDS],
    /// The time of the last call; empty when the summary's `last` holds
    /// it (too long to keep here).
    last: InlineStr<INLINE_TIME>,
    counts: [u64; INLINE_KINDS],
    more: Vec<(u32, u64)>,
}

const _: () = assert!(std::mem::size_of::<SubjectHot>() == 192);

impl SubjectHot {
    /// Distinct kinds counted.
    fn distinct(&self) -> usize {
        usize::from(self.kinds_len) + self.more.len()
    }

    fn has(&self, kind: u32) -> bool {
        self.kinds[..usize::from(self.kinds_len)].contains(&kind)
            || self.more.iter().any(|&(k, _)| k == kind)
    }

    /// One more call of `kind`.
    fn count(&mut self, kind: u32) {
        let used = usize::from(self.kinds_len);
        if let Some(at) = self.kinds[..used].iter().position(|&k| k == kind) {
            self.counts[at] += 1;
        } else if let Some((_, n)) = self.more.iter_mut().find(|(k, _)| *k == kind) {
            *n += 1;
        } else if used < INLINE_KINDS {
            self.kinds[used] = kind;
            self.counts[used] = 1;
            self.kinds_len += 1;
        } else {
            self.more.push((kind, 1));
        }
    }

    /// Every kind and its count.
    fn counted(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        let used = usize::from(self.kinds_len);
        self.kinds[..used]
            .iter()
            .copied()
            .zip(self.counts[..used].iter().copied())
            .chain(self.more.iter().copied())
    }

    fn set_last(&mut self, time: &str, summary: &mut SubjectSummary) {
        if !self.last.set(time) {
            time.clone_into(&mut summary.last);
        }
    }
}

/// All subjects.
#[derive(Debug, Default)]
pub struct Subjects {
    /// Subject name -> index in `summaries` and `hot`.
    map: NameTable<u32>,
    summaries: Vec<SubjectSummary>,
    hot: Vec<SubjectHot>,
    /// `verb resource[/subresource]` keys of every subject's counts, by id.
    kinds: NameTable<u32>,
    /// Keep each ServiceAccount's distinct allowed calls (for role suggestions).
    pub collect_calls: bool,
    /// Reused to build count keys without allocating.
    scratch: String,
}

impl Subjects {
    /// No subject yet; `collect_calls` keeps each ServiceAccount's distinct
    /// allowed calls (for role suggestions).
    #[must_use]
    pub fn collecting(collect_calls: bool) -> Self {
        Self {
            collect_calls,
            ..Self::default()
        }
    }

    /// Records a call by `user`; `allowing_rule` is the `*`s of the
    /// snapshot rule that allowed it, if any.
    pub fn record(
        &mut self,
        user: &UserInfo,
        call: &SubjectCall<'_>,
        allowing_rule: Option<Wildcards>,
    ) {
        let next = u32::try_from(self.summaries.len()).unwrap_or(u32::MAX);
        let i = *self.map.get_or_insert_with(&user.name, || next) as usize;
        if i == self.summaries.len() {
            self.summaries.push(SubjectSummary {
                user: user.name.clone(),
                groups: user.groups.clone(),
                calls: 0,
                denied: 0,
                drift: 0,
                outside_rbac: 0,
                first: call.time.to_owned(),
                last: String::new(),
                by_verb_resource: BTreeMap::new(),
                used: BTreeMap::new(),
                held: Vec::new(),
                hints: Vec::new(),
                snapshot: None,
                observed: Vec::new(),
                observed_seen: rustc_hash::FxHashSet::default(),
                observed_dropped: 0,
            });
            self.hot.push(SubjectHot::default());
        }
        let (Some(h), Some(s)) = (self.hot.get_mut(i), self.summaries.get_mut(i)) else {
            return;
        };
        h.calls += 1;
        h.denied += u64::from(call.denied);
        h.drift += u64::from(call.drift);
        h.outside_rbac += u64::from(call.outside_rbac);
        h.set_last(call.time, s);
        if let Some(snapshot) = call.snapshot.and_then(|n| u32::try_from(n).ok()) {
            h.snapshot = Some(snapshot);
        }
        if let Some(a) = &call.attributes {
            let what = if !a.is_resource_request {
                a.path
            } else {
                a.resource
            };
            let key = &mut self.scratch;
            key.clear();
            key.push_str(a.verb);
            key.push(' ');
            key.push_str(what);
            if !a.subresource.is_empty() {
                key.push('/');
                key.push_str(a.subresource);
            }
            let next = u32::try_from(self.kinds.len()).unwrap_or(u32::MAX);
            let kind = *self.kinds.get_or_insert_with(key, || next);
            let kind = if h.distinct() < MAX_VERB_RESOURCES || h.has(kind) {
                kind
            } else {
                let next = u32::try_from(self.kinds.len()).unwrap_or(u32::MAX);
                *self.kinds.get_or_insert_with("(other)", || next)
            };
            h.count(kind);
            if call.allowed
                && self.collect_calls
                && user
                    .name
                    .starts_with(crate::rbac::model::SERVICE_ACCOUNT_USER_PREFIX)
            {
                use std::hash::{Hash as _, Hasher as _};
                let mut h = rustc_hash::FxHasher::default();
                (
                    a.verb,
                    a.is_resource_request,
                    a.namespace,
                    a.api_group,
                    a.resource,
                    a.subresource,
                    a.name,
                    a.path,
                )
                    .hash(&mut h);
                let key = h.finish();
                if !s.observed_seen.contains(&key) {
                    if s.observed.len() < MAX_OBSERVED {
                        s.observed_seen.insert(key);
                        s.observed.push(crate::rbac::OwnedAttributes::from(*a));
                    } else {
                        s.observed_dropped += 1;
                    }
                }
            }
            if call.allowed {
                if let Some(c) = check_used(a) {
                    *s.used.entry(c.id()).or_default() += 1;
                }
                if let Some(rule) = allowing_rule {
                    for c in wildcards_used(rule) {
                        *s.used.entry(c.id()).or_default() += 1;
                    }
                }
            }
        }
    }

    /// Concludes with what each subject holds (`snapshot_of` gives the
    /// snapshot by index); most calls first.
    #[must_use]
    pub fn finish(
        self,
        snapshot_of: &dyn Fn(usize) -> Option<std::sync::Arc<Snapshot>>,
    ) -> Vec<SubjectSummary> {
        let mut kinds: Vec<String> = vec![String::new(); self.kinds.len()];
        for (name, &id) in self.kinds.iter() {
            if let Some(slot) = kinds.get_mut(id as usize) {
                name.clone_into(slot);
            }
        }
        let mut out = self.summaries;
        for (s, h) in out.iter_mut().zip(self.hot) {
            s.calls = h.calls;
            s.denied = h.denied;
            s.drift = h.drift;
            s.outside_rbac = h.outside_rbac;
            s.snapshot = h.snapshot.map(|n| n as usize);
            if let Some(last) = h.last.get() {
                last.clone_into(&mut s.last);
            }
            s.by_verb_resource = h
                .counted()
                .map(|(id, n)| (kinds.get(id as usize).cloned().unwrap_or_default(), n))
                .collect();
            let Some(snapshot) = s.snapshot.and_then(snapshot_of) else {
                continue;
            };
            let user = UserInfo::new(s.user.clone(), s.groups.clone());
            let mut seen: Vec<(Check, String)> = Vec::new();
            for f in risk::assess(&snapshot, &user) {
                let scope = f
                    .namespace
                    .clone()
                    .map_or_else(|| "cluster-wide".to_owned(), |ns| format!("namespace {ns}"));
                let used = s.used.get(f.check.id()).copied().unwrap_or(0);
                let severity = serde_json::to_value(f.severity)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                let held = HeldPermission {
                    check: f.check.id(),
                    severity,
                    scope: scope.clone(),
                    binding: format!("{}/{}", f.binding_kind, f.binding),
                    role: format!("{}/{}", f.role_kind, f.role),
                    used,
                };
                if used == 0 && !seen.contains(&(f.check, scope.clone())) {
                    seen.push((f.check, scope.clone()));
                    s.hints.push(format!(
                        "holds {} {scope} through {} ({}), never used it in {} calls: a least-privilege candidate",
                        f.check.id(),
                        held.binding,
                        held.role,
                        s.calls
                    ));
                }
                s.held.push(held);
            }
        }
        out.sort_by(|a, b| b.calls.cmp(&a.calls).then_with(|| a.user.cmp(&b.user)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rbac::model::PolicyRule;

    /// The rules of [`check_used`] written as one plain `match` (what it
    /// was before it branched on the verb): the two must agree on every
    /// combination of the strings either one names, and near misses.
    fn check_used_by_match(a: &Attributes<'_>) -> Option<Check> {
        if !a.is_resource_request {
            return None;
        }
        let (g, r, s, v) = (a.api_group, a.resource, a.subresource, a.verb);
        let workload = matches!(
            (g, r),
            (
                "apps",
                "deployments" | "daemonsets" | "statefulsets" | "replicasets"
            ) | ("batch", "jobs" | "cronjobs")
                | ("", "replicationcontrollers")
        );
        Some(match (g, r, s, v) {
            ("", "secrets", "", "get" | "list" | "watch") => Check::ReadSecrets,
            ("", "pods", "", "create") => Check::CreatePods,
            (_, _, "", "create") if workload => Check::CreateWorkloads,
            ("", "pods", "exec", "create" | "get") => Check::PodsExec,
            ("", "pods", "attach", "create" | "get") => Check::PodsAttach,
            ("", "serviceaccounts", "token", "create") => Check::CreateServiceAccountTokens,
            (
                _,
                "users" | "groups" | "serviceaccounts" | "uids" | "userextras",
                _,
                "impersonate",
            ) => Check::Impersonate,
            ("rbac.authorization.k8s.io", "roles" | "clusterroles", "", "escalate") => {
                Check::Escalate
            }
            ("rbac.authorization.k8s.io", "roles" | "clusterroles", "", "bind") => Check::Bind,
            ("", "nodes", "proxy", "get" | "create") => Check::NodesProxy,
            (
                "certificates.k8s.io",
                "certificatesigningrequests",
                "approval",
                "update" | "patch",
            ) => Check::ApproveCsr,
            _ => return None,
        })
    }

    #[test]
    fn checks_agree_with_the_plain_match_on_every_combination() {
        let groups = [
            "",
            "apps",
            "batch",
            "rbac.authorization.k8s.io",
            "certificates.k8s.io",
            "app",
            "rbac.authorization.k8s.ia",
            "é",
        ];
        let resources = [
            "secrets",
            "pods",
            "deployments",
            "daemonsets",
            "statefulsets",
            "replicasets",
            "jobs",
            "cronjobs",
            "replicationcontrollers",
            "serviceaccounts",
            "users",
            "groups",
            "uids",
            "userextras",
            "roles",
            "clusterroles",
            "nodes",
            "certificatesigningrequests",
            "secret",
            "podsx",
            "cronjobz",
            "configmaps",
            "*",
            "",
        ];
        let subresources = [
            "", "exec", "attach", "token", "proxy", "approval", "status", "execs",
        ];
        let verbs = [
            "get",
            "list",
            "watch",
            "create",
            "impersonate",
            "escalate",
            "bind",
            "update",
            "patch",
            "delete",
            "deletecollection",
            "*",
            "gets",
            "",
            "bin",
        ];
        let mut found = std::collections::BTreeSet::new();
        for g in groups {
            for r in resources {
                for s in subresources {
                    for v in verbs {
                        let a = Attributes::resource(v, g, r, "ns", "n").with_subresource(s);
                        let want = check_used_by_match(&a);
                        assert_eq!(check_used(&a), want, "{v} {g}/{r}/{s}");
                        found.extend(want.map(Check::id));
                    }
                }
            }
            let a = Attributes::non_resource("get", "/api/v1/secrets");
            assert_eq!(check_used(&a), None);
        }
        // Every check a call can exercise (all but the two wildcards) is
        // reached above.
        assert_eq!(found.len(), 11, "{found:?}");
    }

    #[test]
    fn checks_from_attributes() {
        let a = Attributes::resource("list", "", "secrets", "", "");
        assert_eq!(check_used(&a), Some(Check::ReadSecrets));
        let a = Attributes::resource("create", "", "pods", "d", "p").with_subresource("exec");
        assert_eq!(check_used(&a), Some(Check::PodsExec));
        let a = Attributes::resource("create", "apps", "deployments", "d", "");
        assert_eq!(check_used(&a), Some(Check::CreateWorkloads));
        let a = Attributes::resource("get", "", "pods", "d", "");
        assert_eq!(check_used(&a), None);
        assert_eq!(
            check_used(&Attributes::non_resource("get", "/healthz")),
            None
        );
        let rule = PolicyRule {
            verbs: vec!["*".into()],
            resources: vec!["pods".into()],
            ..PolicyRule::default()
        };
        assert_eq!(
            wildcards_used(Wildcards::of(&rule)).collect::<Vec<_>>(),
            [Check::WildcardVerbs]
        );
    }

    /// Counts per `verb resource` are exact up to the cap, and every call
    /// past it lands in `(other)`, per subject.
    #[test]
    fn verb_resource_counts_cap_into_other() {
        let mut subjects = Subjects::default();
        let alice = UserInfo::new("alice".to_owned(), Vec::new());
        let bob = UserInfo::new("bob".to_owned(), Vec::new());
        let resources: Vec<String> = (0..MAX_VERB_RESOURCES + 5)
            .map(|i| format!("r{i}"))
            .collect();
        for round in 0..2 {
            for (i, r) in resources.iter().enumerate() {
                let call = SubjectCall {
                    attributes: Some(Attributes::resource("get", "", r, "", "")),
                    denied: false,
                    allowed: true,
                    drift: false,
                    outside_rbac: false,
                    time: "2025-06-01T00:00:00Z",
                    snapshot: None,
                };
                subjects.record(&alice, &call, None);
                if round == 0 && i < 3 {
                    subjects.record(&bob, &call, None);
                }
            }
        }
        let out = subjects.finish(&|_| None);
        let alice = out.iter().find(|s| s.user == "alice").unwrap();
        assert_eq!(alice.by_verb_resource.len(), MAX_VERB_RESOURCES + 1);
        assert_eq!(alice.by_verb_resource["get r0"], 2);
        assert_eq!(alice.by_verb_resource["get r99"], 2);
        // The last kept beside the subject's counters and the first after.
        assert_eq!(alice.by_verb_resource["get r6"], 2);
        assert_eq!(alice.by_verb_resource["get r7"], 2);
        assert_eq!(alice.calls, 2 * resources.len() as u64);
        assert_eq!(alice.by_verb_resource["(other)"], 10);
        assert!(!alice.by_verb_resource.contains_key("get r100"));
        let bob = out.iter().find(|s| s.user == "bob").unwrap();
        assert_eq!(bob.by_verb_resource.len(), 3);
        assert_eq!(bob.by_verb_resource["get r2"], 1);
    }

    /// The last call's time is kept whatever its length, and the first
    /// call's too.
    #[test]
    fn first_and_last_times_of_any_length() {
        let long = "2025-06-01T00:00:00.123456789123456789+01:00";
        for times in [
            vec!["2025-06-01T00:00:00Z", long],
            vec![long, "2025-06-01T00:00:01.000001Z"],
            vec![long, "2025-06-01T00:00:01Z", long],
            vec!["é"],
        ] {
            let mut subjects = Subjects::default();
            let alice = UserInfo::new("alice".to_owned(), Vec::new());
            for t in &times {
                let call = SubjectCall {
                    attributes: None,
                    denied: true,
                    allowed: false,
                    drift: false,
                    outside_rbac: false,
                    time: t,
                    snapshot: Some(3),
                };
                subjects.record(&alice, &call, None);
            }
            let out = subjects.finish(&|_| None);
            assert_eq!(out[0].first, times[0]);
            assert_eq!(out[0].last, *times.last().unwrap(), "{times:?}");
            assert_eq!(out[0].denied, times.len() as u64);
            assert_eq!(out[0].snapshot, Some(3));
        }
    }
}
