//! The RBAC authorizer: the decision kube-apiserver's RBAC authorizer
//! (`plugin/pkg/auth/authorizer/rbac/rbac.go` with the rule resolver of
//! `pkg/registry/rbac/validation/rule.go`) makes for a request.
//!
//! - ClusterRoleBindings apply in every namespace and to cluster-scoped
//!   requests; RoleBindings only when the request's namespace is theirs.
//! - A subject applies when: `User` — the name equals the user's; `Group` —
//!   the user has the group; `ServiceAccount` — the user is
//!   `system:serviceaccount:<ns>:<name>`, `<ns>` defaulting to the
//!   RoleBinding's namespace (a ServiceAccount subject without namespace in
//!   a ClusterRoleBinding matches nobody). Other kinds never apply.
//! - A rule allows a resource request when verb, API group, resource
//!   (`resource`, `resource/subresource`, `*/subresource` or `*`) and
//!   resourceNames (empty = all) match; a non-resource request when verb
//!   and a nonResourceURL match (`*`, exact, or a trailing-`*` prefix).
//!   Matching is case-sensitive.
//! - The first allowing rule decides: reason `RBAC: allowed by
//!   ClusterRoleBinding "b" of ClusterRole "r" to User "u"` (RoleBinding:
//!   `"name/namespace"`; ServiceAccount subject: `"name/namespace"`).
//! - Otherwise the decision is *no opinion* (a 403 when RBAC is the last
//!   authorizer) and the reason is empty, or `RBAC: <err>` / `RBAC: [<err>,
//!   <err>]` listing, without repeats, the missing roles of bindings that
//!   applied (`clusterrole.rbac.authorization.k8s.io "x" not found`).
//!
//! The API server lists bindings from an informer cache in no fixed order;
//! we visit ClusterRoleBindings by name, then the namespace's RoleBindings by
//! name, so the allowing binding named is the first in that order. The
//! decision itself does not depend on order.
//!
//! [`Authorizer::decide`] allocates nothing: it looks the user and each of
//! its groups up in the snapshot's subject index and walks only the
//! bindings found there. Only the reason text, when asked for, allocates.

use std::fmt::{self, Write as _};
use std::sync::Arc;

use crate::bytes::{Name, same_str};

use serde::{Deserialize, Serialize};

use super::model::{
    ALL, Binding, KIND_GROUP, KIND_SERVICE_ACCOUNT, KIND_USER, PolicyRule, Role,
    SERVICE_ACCOUNT_USER_PREFIX, Subject,
};
use super::request_info::RequestInfo;
use super::snapshot::{
    BindingId, RequestAtoms, RequestBits, RoleResolution, Snapshot, SubjectIndex,
};

/// Group of every authenticated user.
pub const GROUP_AUTHENTICATED: &str = "system:authenticated";
/// Group of unauthenticated requests.
pub const GROUP_UNAUTHENTICATED: &str = "system:unauthenticated";
/// Group of every ServiceAccount.
pub const GROUP_SERVICE_ACCOUNTS: &str = "system:serviceaccounts";
/// User name of unauthenticated requests.
pub const USER_ANONYMOUS: &str = "system:anonymous";

/// Who is asking: a user name and groups.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    /// User name.
    pub name: String,
    /// Groups, used exactly as given.
    #[serde(default)]
    pub groups: Vec<String>,
}

impl UserInfo {
    /// A user with exactly these groups.
    #[must_use]
    pub fn new(name: impl Into<String>, groups: Vec<String>) -> Self {
        Self {
            name: name.into(),
            groups,
        }
    }

    /// A ServiceAccount as its token authenticates: user
    /// `system:serviceaccount:<ns>:<name>`, groups `system:serviceaccounts`,
    /// `system:serviceaccounts:<ns>` and `system:authenticated`.
    #[must_use]
    pub fn service_account(namespace: &str, name: &str) -> Self {
        Self {
            name: format!("{SERVICE_ACCOUNT_USER_PREFIX}{namespace}:{name}"),
            groups: vec![
                GROUP_SERVICE_ACCOUNTS.to_owned(),
                format!("{GROUP_SERVICE_ACCOUNTS}:{namespace}"),
                GROUP_AUTHENTICATED.to_owned(),
            ],
        }
    }

    /// The user the API server's impersonation filter builds for
    /// `--as name --as-group g...` (what `kubectl --as` sends): a valid
    /// ServiceAccount user name without explicit groups gets the
    /// ServiceAccount groups; then `system:authenticated` is added unless
    /// the groups already hold it or `system:unauthenticated`; for
    /// `system:anonymous`, `system:unauthenticated` is added instead.
    #[must_use]
    pub fn impersonated(name: &str, groups: &[String]) -> Self {
        let mut all: Vec<String> = groups.to_vec();
        if groups.is_empty()
            && let Some((ns, _)) = split_service_account_user(name)
        {
            all.push(GROUP_SERVICE_ACCOUNTS.to_owned());
            all.push(format!("{GROUP_SERVICE_ACCOUNTS}:{ns}"));
        }
        if name == USER_ANONYMOUS {
            if !all.iter().any(|g| g == GROUP_UNAUTHENTICATED) {
                all.push(GROUP_UNAUTHENTICATED.to_owned());
            }
        } else if !all
            .iter()
            .any(|g| g == GROUP_AUTHENTICATED || g == GROUP_UNAUTHENTICATED)
        {
            all.push(GROUP_AUTHENTICATED.to_owned());
        }
        Self {
            name: name.to_owned(),
            groups: all,
        }
    }

    /// `(namespace, name)` if this is a ServiceAccount user.
    #[must_use]
    pub fn service_account_parts(&self) -> Option<(&str, &str)> {
        split_service_account_user(&self.name)
    }
}

/// apiserver `serviceaccount.SplitUsername`: `system:serviceaccount:NS:NAME`
/// with a DNS-label namespace and a DNS-subdomain name.
#[must_use]
pub fn split_service_account_user(user: &str) -> Option<(&str, &str)> {
    let rest = user.strip_prefix(SERVICE_ACCOUNT_USER_PREFIX)?;
    let colon = rest.bytes().position(|b| b == b':')?;
    let (ns, name) = (rest.get(..colon)?, rest.get(colon + 1..)?);
    // A DNS subdomain holds no `:`, so `NS:NAME:MORE` is refused here.
    (is_dns_label(ns.as_bytes()) && is_dns_subdomain(name)).then_some((ns, name))
}

fn is_dns_label(b: &[u8]) -> bool {
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            b.len() <= 63 && alnum(first) && alnum(last) && b.iter().all(|c| alnum(c) || *c == b'-')
        }
        _ => false,
    }
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.as_bytes().split(|&b| b == b'.').all(is_dns_label)
}

/// The attributes of one request (`authorizer.Attributes`), borrowed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Attributes<'a> {
    /// Verb (`get`, `list`, ... for resources; lower-case method otherwise).
    pub verb: &'a str,
    /// Whether this is a resource request.
    pub is_resource_request: bool,
    /// Namespace; empty for cluster-scoped or all-namespace requests.
    pub namespace: &'a str,
    /// API group (`""` = core).
    pub api_group: &'a str,
    /// Resource.
    pub resource: &'a str,
    /// Subresource.
    pub subresource: &'a str,
    /// Object name.
    pub name: &'a str,
    /// URL path (non-resource requests).
    pub path: &'a str,
}

impl<'a> Attributes<'a> {
    /// A resource request.
    #[must_use]
    pub fn resource(
        verb: &'a str,
        api_group: &'a str,
        resource: &'a str,
        namespace: &'a str,
        name: &'a str,
    ) -> Self {
        Self {
            verb,
            is_resource_request: true,
            namespace,
            api_group,
            resource,
            name,
            ..Self::default()
        }
    }

    /// The same request for a subresource.
    #[must_use]
    pub fn with_subresource(mut self, subresource: &'a str) -> Self {
        self.subresource = subresource;
        self
    }

    /// A non-resource request.
    #[must_use]
    pub fn non_resource(verb: &'a str, path: &'a str) -> Self {
        Self {
            verb,
            path,
            ..Self::default()
        }
    }

    /// The attributes of a parsed request.
    #[must_use]
    pub fn from_request_info(info: &'a RequestInfo) -> Self {
        Self {
            verb: &info.verb,
            is_resource_request: info.is_resource_request,
            namespace: &info.namespace,
            api_group: &info.api_group,
            resource: &info.resource,
            subresource: &info.subresource,
            name: &info.name,
            path: &info.path,
        }
    }
}

/// Owned attributes, with the field names the API server uses; the form
/// printed by `can-i -o json` and read by `can-i --batch`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OwnedAttributes {
    /// Verb.
    pub verb: String,
    /// Whether this is a resource request.
    pub is_resource_request: bool,
    /// Namespace.
    pub namespace: String,
    /// API group.
    pub api_group: String,
    /// Resource.
    pub resource: String,
    /// Subresource.
    pub subresource: String,
    /// Name.
    pub name: String,
    /// Path.
    pub path: String,
}

impl OwnedAttributes {
    /// Borrowed view.
    #[must_use]
    pub fn as_attributes(&self) -> Attributes<'_> {
        Attributes {
            verb: &self.verb,
            is_resource_request: self.is_resource_request,
            namespace: &self.namespace,
            api_group: &self.api_group,
            resource: &self.resource,
            subresource: &self.subresource,
            name: &self.name,
            path: &self.path,
        }
    }
}

impl From<Attributes<'_>> for OwnedAttributes {
    fn from(a: Attributes<'_>) -> Self {
        Self {
            verb: a.verb.to_owned(),
            is_resource_request: a.is_resource_request,
            namespace: a.namespace.to_owned(),
            api_group: a.api_group.to_owned(),
            resource: a.resource.to_owned(),
            subresource: a.subresource.to_owned(),
            name: a.name.to_owned(),
            path: a.path.to_owned(),
        }
    }
}

/// `VerbMatches`.
#[must_use]
pub fn verb_matches(rule: &PolicyRule, verb: &str) -> bool {
    rule.verbs.iter().any(|v| v == ALL || same_str(v, verb))
}

/// `APIGroupMatches`.
#[must_use]
pub fn api_group_matches(rule: &PolicyRule, group: &str) -> bool {
    rule.api_groups
        .iter()
        .any(|g| g == ALL || same_str(g, group))
}

/// `ResourceMatches`: `combined` is `resource` or `resource/subresource`.
#[must_use]
pub fn resource_matches(rule: &PolicyRule, resource: &str, subresource: &str) -> bool {
    rule.resources.iter().any(|r| {
        if r == ALL {
            return true;
        }
        if subresource.is_empty() {
            return same_str(r, resource);
        }
        // `resource/subresource` without building the string.
        if r.len() == resource.len() + 1 + subresource.len()
            && r.starts_with(resource)
            && r.as_bytes()[resource.len()] == b'/'
            && r.ends_with(subresource)
        {
            return true;
        }
        r.len() == subresource.len() + 2 && r.starts_with("*/") && r.ends_with(subresource)
    })
}

/// `ResourceNameMatches`.
#[must_use]
pub fn resource_name_matches(rule: &PolicyRule, name: &str) -> bool {
    rule.resource_names.is_empty() || rule.resource_names.iter().any(|n| same_str(n, name))
}

/// `NonResourceURLMatches`.
#[must_use]
pub fn non_resource_url_matches(rule: &PolicyRule, path: &str) -> bool {
    rule.non_resource_urls.iter().any(|u| {
        u == ALL || u == path || (u.ends_with('*') && path.starts_with(u.trim_end_matches('*')))
    })
}

/// `RuleAllows`.
#[must_use]
pub fn rule_allows(attrs: &Attributes<'_>, rule: &PolicyRule) -> bool {
    verb_matches(rule, attrs.verb) && rule_allows_but_verb(attrs, rule)
}

/// [`rule_allows`] but for the verb, which the caller has matched (the
/// snapshot's rule filters match every known verb exactly).
fn rule_allows_but_verb(attrs: &Attributes<'_>, rule: &PolicyRule) -> bool {
    if attrs.is_resource_request {
        api_group_matches(rule, attrs.api_group)
            && resource_matches(rule, attrs.resource, attrs.subresource)
            && resource_name_matches(rule, attrs.name)
    } else {
        non_resource_url_matches(rule, attrs.path)
    }
}

/// `appliesToUser`: whether `subject` of a binding in `namespace` (empty
/// for a ClusterRoleBinding) applies to `user`.
#[must_use]
pub fn subject_applies(user: &UserInfo, subject: &Subject, namespace: &str) -> bool {
    match subject.kind.as_str() {
        KIND_USER => same_str(&user.name, &subject.name),
        KIND_GROUP => user.groups.iter().any(|g| same_str(g, &subject.name)),
        KIND_SERVICE_ACCOUNT => {
            let ns = if subject.namespace.is_empty() {
                namespace
            } else {
                &subject.namespace
            };
            !ns.is_empty()
                && user
                    .name
                    .strip_prefix(SERVICE_ACCOUNT_USER_PREFIX)
                    .and_then(|r| r.strip_prefix(ns))
                    .and_then(|r| r.strip_prefix(':'))
                    .is_some_and(|n| same_str(n, &subject.name))
        }
        _ => false,
    }
}

/// Index of the first subject of `binding` that applies to `user`.
#[must_use]
pub fn first_applying_subject(user: &UserInfo, binding: &Binding) -> Option<usize> {
    let ns = binding.namespace.as_deref().unwrap_or("");
    binding
        .subjects
        .iter()
        .position(|s| subject_applies(user, s, ns))
}

/// Decides requests against one snapshot.
#[derive(Debug, Clone)]
pub struct Authorizer {
    snapshot: Arc<Snapshot>,
}

/// Where an allow came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    /// The binding.
    pub binding: BindingId,
    /// Index of the rule within the role.
    pub rule: u32,
}

/// The outcome of [`Authorizer::decide`].
#[derive(Debug, Clone, Copy)]
pub struct Decision<'r> {
    /// Allowed, or no opinion (denied when RBAC is the last authorizer).
    pub allowed: bool,
    /// Allowing binding and rule.
    pub source: Option<Source>,
    /// Whether a binding that applied named a missing role.
    pub had_errors: bool,
    snapshot: &'r Snapshot,
    user: &'r UserInfo,
    namespace: &'r str,
}

impl<'r> Decision<'r> {
    /// The binding that allowed the request.
    #[must_use]
    pub fn binding(&self) -> Option<&'r Binding> {
        let s = self.source?;
        self.snapshot.binding(s.binding).map(|e| &e.binding)
    }

    /// The subject of that binding that matched the user.
    #[must_use]
    pub fn subject(&self) -> Option<&'r Subject> {
        let b = self.binding()?;
        first_applying_subject(self.user, b).map(|i| &b.subjects[i])
    }

    /// The role that allowed the request.
    #[must_use]
    pub fn role(&self) -> Option<&'r Role> {
        let s = self.source?;
        let entry = self.snapshot.binding(s.binding)?;
        self.snapshot.role(&entry.role)
    }

    /// The rule that allowed the request.
    #[must_use]
    pub fn rule(&self) -> Option<&'r PolicyRule> {
        let s = self.source?;
        self.role()?.rules.get(s.rule as usize)
    }

    /// The `*`s of the rule that allowed the request, from its filter (the
    /// rule's strings are not read: a replay asks this of every allowed
    /// call).
    #[must_use]
    pub fn wildcards(&self) -> Option<Wildcards> {
        let s = self.source?;
        let entry = self.snapshot.binding(s.binding)?;
        let filter = self
            .snapshot
            .rule_filters(&entry.role)
            .get(s.rule as usize)?;
        Some(filter.wildcards())
    }

    /// What the decision found, without its borrows: [`Authorizer::decision`]
    /// rebuilds the same decision from it without scanning the rules
    /// again (a replay formats the reason of the calls it lists, after
    /// it has moved on to other work).
    #[must_use]
    pub fn parts(&self) -> DecisionParts {
        DecisionParts {
            allowed: self.allowed,
            source: self.source,
            had_errors: self.had_errors,
        }
    }

    /// The reason string the API server gives (see the module docs).
    #[must_use]
    pub fn reason(&self) -> Reason<'r> {
        Reason { decision: *self }
    }
}

/// A [`Decision`] without its borrows ([`Decision::parts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecisionParts {
    allowed: bool,
    source: Option<Source>,
    had_errors: bool,
}

impl DecisionParts {
    /// Whether the decision allowed the request.
    #[must_use]
    pub fn allowed(&self) -> bool {
        self.allowed
    }
}

/// The reason text of a decision; formats without allocating for allows.
#[derive(Debug, Clone, Copy)]
pub struct Reason<'r> {
    decision: Decision<'r>,
}

impl fmt::Display for Reason<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.decision;
        if d.allowed {
            let (Some(b), Some(subject)) = (d.binding(), d.subject()) else {
                return Ok(());
            };
            f.write_str("RBAC: allowed by ")?;
            describe_binding(f, b, subject)
        } else if d.had_errors {
            let errors = collect_errors(d.snapshot, d.user, d.namespace);
            f.write_str("RBAC: ")?;
            if errors.len() == 1 {
                f.write_str(errors[0])
            } else {
                f.write_char('[')?;
                for (i, e) in errors.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    f.write_str(e)?;
                }
                f.write_char(']')
            }
        } else {
            Ok(())
        }
    }
}

/// Writes `ClusterRoleBinding "b" of ClusterRole "r" to User "u"` (the
/// describer of the rule resolver).
///
/// # Errors
/// Only those of the writer.
pub fn describe_binding(f: &mut dyn fmt::Write, b: &Binding, subject: &Subject) -> fmt::Result {
    match &b.namespace {
        Some(ns) => write!(
            f,
            "RoleBinding {} of {} {} to ",
            GoQuoted(&format!("{}/{ns}", b.name)),
            b.role_ref.kind,
            GoQuoted(&b.role_ref.name)
        )?,
        None => write!(
            f,
            "ClusterRoleBinding {} of {} {} to ",
            GoQuoted(&b.name),
            b.role_ref.kind,
            GoQuoted(&b.role_ref.name)
        )?,
    }
    if subject.kind == KIND_SERVICE_ACCOUNT {
        let ns = if subject.namespace.is_empty() {
            b.namespace.as_deref().unwrap_or("")
        } else {
            &subject.namespace
        };
        write!(
            f,
            "{} {}",
            subject.kind,
            GoQuoted(&format!("{}/{ns}", subject.name))
        )
    } else {
        write!(f, "{} {}", subject.kind, GoQuoted(&subject.name))
    }
}

/// The distinct error texts of applying bindings with missing roles, in
/// visiting order (what `utilerrors.NewAggregate` prints).
fn collect_errors<'s>(snapshot: &'s Snapshot, user: &UserInfo, namespace: &str) -> Vec<&'s str> {
    let mut ids: Vec<BindingId> = Vec::new();
    let mut gather = |index: &SubjectIndex| {
        if let Some(list) = index.users.get(&user.name) {
            ids.extend(list);
        }
        for g in &user.groups {
            if let Some(list) = index.groups.get(g) {
                ids.extend(list);
            }
        }
    };
    gather(&snapshot.cluster_index);
    if !namespace.is_empty()
        && let Some(index) = snapshot.namespace_index.get(&Name(namespace))
    {
        gather(index);
    }
    ids.sort_unstable();
    ids.dedup();
    let mut out: Vec<&str> = Vec::new();
    for id in ids {
        if let Some(RoleResolution::Missing(msg)) = snapshot.binding(id).map(|e| &e.role)
            && !out.contains(&&**msg)
        {
            out.push(msg);
        }
    }
    out
}

impl Authorizer {
    /// An authorizer over `snapshot`.
    #[must_use]
    pub fn new(snapshot: Arc<Snapshot>) -> Self {
        Self { snapshot }
    }

    /// The snapshot.
    #[must_use]
    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snapshot
    }

    /// Decides `attrs` for `user`, as the RBAC authorizer would.
    #[must_use]
    pub fn decide<'r>(&'r self, attrs: &Attributes<'r>, user: &'r UserInfo) -> Decision<'r> {
        decide(&self.snapshot, attrs, user)
    }

    /// The decision [`Self::decide`] gave for `attrs` and `user`, from its
    /// [`Decision::parts`]: the same answer and reason, no scan.
    #[must_use]
    pub fn decision<'r>(
        &'r self,
        parts: DecisionParts,
        attrs: &Attributes<'r>,
        user: &'r UserInfo,
    ) -> Decision<'r> {
        Decision {
            allowed: parts.allowed,
            source: parts.source,
            had_errors: parts.had_errors,
            snapshot: &self.snapshot,
            user,
            namespace: attrs.namespace,
        }
    }
}

/// [`Authorizer::decide`] on a borrowed snapshot.
#[must_use]
pub fn decide<'r>(
    snapshot: &'r Snapshot,
    attrs: &Attributes<'r>,
    user: &'r UserInfo,
) -> Decision<'r> {
    let mut best: Option<Source> = None;
    let mut had_errors = false;
    scan(
        snapshot,
        &snapshot.cluster_index,
        attrs,
        user,
        &mut best,
        &mut had_errors,
    );
    if best.is_none()
        && !attrs.namespace.is_empty()
        && let Some(index) = snapshot.namespace_index.get(&Name(attrs.namespace))
    {
        scan(snapshot, index, attrs, user, &mut best, &mut had_errors);
    }
    Decision {
        allowed: best.is_some(),
        source: best,
        had_errors,
        snapshot,
        user,
        namespace: attrs.namespace,
    }
}

/// Walks the bindings of `index` that apply to `user`, keeping in `best`
/// the lowest binding id with an allowing rule.
fn scan(
    snapshot: &Snapshot,
    index: &SubjectIndex,
    attrs: &Attributes<'_>,
    user: &UserInfo,
    best: &mut Option<Source>,
    had_errors: &mut bool,
) {
    let request = RequestBits::new(
        attrs.verb,
        attrs.is_resource_request,
        attrs.api_group,
        attrs.resource,
    );
    let atoms = &snapshot.atoms;
    let ids = RequestAtoms::new(atoms, attrs.api_group, attrs.resource, attrs.subresource);
    let mut name_id = None;
    let mut name = || *name_id.get_or_insert_with(|| atoms.get(attrs.name));
    let mut walk = |list: &[BindingId]| {
        for &id in list {
            if best.is_some_and(|b| id >= b.binding) {
                return;
            }
            let entry = &snapshot.bindings()[id as usize];
            if let RoleResolution::Missing(_) = entry.role {
                *had_errors = true;
                continue;
            }
            // The rules' strings are read only for an unknown verb or a
            // non-resource request: the filters hold the rest.
            let filters = snapshot.rule_filters(&entry.role);
            let rule = |i: usize| snapshot.rules(&entry.role).get(i);
            // A known verb (a bit) that passes the filter is in the rule
            // (or the rule has `*`): only unknown verbs are compared.
            if let Some(i) = filters.iter().enumerate().position(|(i, f)| {
                f.may_allow(&request)
                    && (request.verb != 0 || rule(i).is_some_and(|r| verb_matches(r, attrs.verb)))
                    && if attrs.is_resource_request {
                        f.allows_resource(atoms, &ids, &mut name)
                    } else {
                        rule(i).is_some_and(|r| non_resource_url_matches(r, attrs.path))
                    }
            }) {
                *best = Some(Source {
                    binding: id,
                    rule: u32::try_from(i).unwrap_or(u32::MAX),
                });
                return;
            }
        }
    };
    if let Some(list) = index.users.get(&user.name) {
        walk(list);
    }
    for g in &user.groups {
        if let Some(list) = index.groups.get(g) {
            walk(list);
        }
    }
}

/// Whether a rule lists `*` among its verbs and among its resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Wildcards {
    /// `*` in `verbs`.
    pub verbs: bool,
    /// `*` in `resources`.
    pub resources: bool,
}

impl Wildcards {
    /// The `*`s of `rule`.
    #[must_use]
    pub fn of(rule: &PolicyRule) -> Self {
        Self {
            verbs: rule.verbs.iter().any(|v| v == ALL),
            resources: rule.resources.iter().any(|r| r == ALL),
        }
    }
}

/// Formats a string as Go's `%q` does (`strconv.Quote`).
#[derive(Debug, Clone, Copy)]
pub struct GoQuoted<'a>(pub &'a str);

impl fmt::Display for GoQuoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('"')?;
        for c in self.0.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                '\u{7}' => f.write_str("\\a")?,
                '\u{8}' => f.write_str("\\b")?,
                '\u{c}' => f.write_str("\\f")?,
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                '\u{b}' => f.write_str("\\v")?,
                c if (c as u32) < 0x20 || c as u32 == 0x7f => write!(f, "\\x{:02x}", c as u32)?,
                c if c.is_control() => {
                    if (c as u32) < 0x10000 {
                        write!(f, "\\u{:04x}", c as u32)?;
                    } else {
                        write!(f, "\\U{:08x}", c as u32)?;
                    }
                }
                c => f.write_char(c)?,
            }
        }
        f.write_char('"')
    }
}

#[cfg(test)]
mod tests {
    use super::split_service_account_user as split;

    /// `serviceaccount.SplitUsername`: a DNS-label namespace and a
    /// DNS-subdomain name, nothing else.
    #[test]
    fn service_account_user_names() {
        assert_eq!(
            split("system:serviceaccount:ns-41:sa-5"),
            Some(("ns-41", "sa-5"))
        );
        assert_eq!(
            split("system:serviceaccount:kube-system:a.b-c.d0"),
            Some(("kube-system", "a.b-c.d0"))
        );
        let label = "a".repeat(63);
        let long = format!("system:serviceaccount:{label}:{label}");
        assert_eq!(split(&long), Some((label.as_str(), label.as_str())));
        let subdomain = [label.as_str(); 4].join(".");
        assert_eq!(subdomain.len(), 255);
        for bad in [
            "",
            "system:serviceaccount:",
            "system:serviceaccount:ns",
            "system:serviceaccount::sa",
            "system:serviceaccount:ns:",
            "system:serviceaccount:ns:sa:extra",
            "system:serviceaccount:NS:sa",
            "system:serviceaccount:ns:Sa",
            "system:serviceaccount:-ns:sa",
            "system:serviceaccount:ns-:sa",
            "system:serviceaccount:ns:sa-",
            "system:serviceaccount:ns:a..b",
            "system:serviceaccount:ns:.a",
            "system:serviceaccount:n.s:sa",
            "system:serviceaccount:ns:é",
            "system:serviceaccount:é:sa",
            "system:serviceaccounts:ns:sa",
            "user@example.com",
            &format!("system:serviceaccount:{label}a:sa"),
            &format!("system:serviceaccount:ns:{label}a"),
            &format!("system:serviceaccount:ns:{subdomain}"),
        ] {
            assert_eq!(split(bad), None, "{bad:?}");
        }
    }
}
