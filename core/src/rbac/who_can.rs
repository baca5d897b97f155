//! Who may do a thing: the subjects of every binding whose role has a rule
//! allowing the request, like kubectl-who-can.
//!
//! ClusterRoleBindings always count. RoleBindings count in the request's
//! namespace, or in every namespace when asked for all (each then judged
//! as a request in its own namespace). Subjects are listed as bound: a
//! `Group` subject means every member of the group; a ServiceAccount
//! subject without namespace gets its RoleBinding's namespace. Bindings
//! whose role is missing grant nothing and are listed apart.

use serde::Serialize;

use super::authorizer::{Attributes, rule_allows};
use super::model::{KIND_GROUP, KIND_SERVICE_ACCOUNT, KIND_USER, Subject};
use super::snapshot::{BindingEntry, RoleResolution, Snapshot};

/// Where `who_can` looks for RoleBindings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamespaceScope<'a> {
    /// The request's own namespace (none for a cluster-scoped request).
    Request,
    /// Every namespace.
    All,
    /// This namespace, overriding the request's.
    Only(&'a str),
}

/// One subject allowed through one binding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WhoCanEntry {
    /// Subject kind.
    pub kind: String,
    /// Subject name.
    pub name: String,
    /// ServiceAccount namespace (defaulted), empty for users and groups.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// `ClusterRoleBinding` or `RoleBinding`.
    pub binding_kind: &'static str,
    /// `name` or `namespace/name`.
    pub binding: String,
    /// `ClusterRole` or `Role`.
    pub role_kind: String,
    /// Role name.
    pub role: String,
}

/// Result of [`who_can`].
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WhoCan {
    /// Allowed subjects, in binding order.
    pub entries: Vec<WhoCanEntry>,
    /// Bindings (display names) skipped because their role is missing.
    pub missing_roles: Vec<String>,
}

/// Lists the subjects allowed to make the request `attrs`.
#[must_use]
pub fn who_can(snapshot: &Snapshot, attrs: &Attributes<'_>, scope: NamespaceScope<'_>) -> WhoCan {
    let mut out = WhoCan::default();
    let mut consider = |entry: &BindingEntry, attrs: &Attributes<'_>| {
        if let RoleResolution::Missing(_) = entry.role {
            if !entry.binding.subjects.is_empty() {
                out.missing_roles.push(entry.binding.display_name());
            }
            return;
        }
        if !snapshot
            .rules(&entry.role)
            .iter()
            .any(|r| rule_allows(attrs, r))
        {
            return;
        }
        let b = &entry.binding;
        let binding_ns = b.namespace.as_deref().unwrap_or("");
        for s in &b.subjects {
            if subject_can_match(s, binding_ns) {
                out.entries.push(entry_for(s, binding_ns, entry));
            }
        }
    };
    for entry in snapshot.cluster_bindings() {
        consider(entry, attrs);
    }
    match scope {
        NamespaceScope::All => {
            for ns in snapshot.binding_namespaces() {
                let mut a = *attrs;
                a.namespace = ns;
                for entry in snapshot.namespace_bindings(ns) {
                    consider(entry, &a);
                }
            }
        }
        NamespaceScope::Only(ns) => {
            let mut a = *attrs;
            a.namespace = ns;
            for entry in snapshot.namespace_bindings(ns) {
                consider(entry, &a);
            }
        }
        NamespaceScope::Request => {
            if !attrs.namespace.is_empty() {
                for entry in snapshot.namespace_bindings(attrs.namespace) {
                    consider(entry, attrs);
                }
            }
        }
    }
    out
}

/// Whether any user can match `s` at all (the authorizer ignores unknown
/// kinds and ServiceAccounts without a namespace in ClusterRoleBindings).
fn subject_can_match(s: &Subject, binding_ns: &str) -> bool {
    match s.kind.as_str() {
        KIND_USER | KIND_GROUP => true,
        KIND_SERVICE_ACCOUNT => !(s.namespace.is_empty() && binding_ns.is_empty()),
        _ => false,
    }
}

fn entry_for(s: &Subject, binding_ns: &str, entry: &BindingEntry) -> WhoCanEntry {
    let namespace = if s.kind == KIND_SERVICE_ACCOUNT && s.namespace.is_empty() {
        binding_ns.to_owned()
    } else if s.kind == KIND_SERVICE_ACCOUNT {
        s.namespace.clone()
    } else {
        String::new()
    };
    WhoCanEntry {
        kind: s.kind.clone(),
        name: s.name.clone(),
        namespace,
        binding_kind: entry.binding.kind(),
        binding: entry.binding.display_name(),
        role_kind: entry.binding.role_ref.kind.clone(),
        role: entry.binding.role_ref.name.clone(),
    }
}
