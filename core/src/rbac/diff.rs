//! Who gained and who lost which permissions between two snapshots.
//!
//! Each binding's rules are broken down, per subject named in the binding,
//! into atomic permissions `(scope, verb, group, resource, name)` or
//! `(scope, verb, URL)`; wildcards stay literal (`*` is one permission, not
//! an expansion), so a change from `get,list` to `*` shows as gaining `*`
//! and losing `get` and `list`. The diff is the set difference per subject,
//! with the binding that granted each permission.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use super::model::KIND_SERVICE_ACCOUNT;
use super::snapshot::Snapshot;

/// A subject as named in bindings (ServiceAccount namespace defaulted).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct SubjectKey {
    /// Kind.
    pub kind: String,
    /// Name.
    pub name: String,
    /// ServiceAccount namespace.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

impl fmt::Display for SubjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// One atomic permission.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Permission {
    /// Namespace it holds in; empty for cluster-wide.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Verb.
    pub verb: String,
    /// API group (resource permissions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_group: Option<String>,
    /// Resource (resource permissions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// Resource name, when the rule is limited to names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_name: Option<String>,
    /// Non-resource URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub non_resource_url: Option<String>,
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ", self.verb)?;
        if let Some(url) = &self.non_resource_url {
            f.write_str(url)?;
        } else {
            let resource = self.resource.as_deref().unwrap_or_default();
            match self.api_group.as_deref() {
                Some("") | None => f.write_str(resource)?,
                Some(g) => write!(f, "{resource}.{g}")?,
            }
            if let Some(n) = &self.resource_name {
                write!(f, "/{n}")?;
            }
        }
        if self.namespace.is_empty() {
            f.write_str(" (cluster-wide)")
        } else {
            write!(f, " in {}", self.namespace)
        }
    }
}

/// One gained or lost permission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    /// The subject.
    pub subject: SubjectKey,
    /// `true` gained, `false` lost.
    pub gained: bool,
    /// The permission.
    pub permission: Permission,
    /// Binding (`Kind name`) that grants it in the snapshot that has it.
    pub via: String,
}

type Grants = BTreeMap<SubjectKey, BTreeMap<Permission, String>>;

/// Every permission of every subject in `snapshot`, with the first binding
/// (in visiting order) that grants it.
#[must_use]
pub fn permissions(snapshot: &Snapshot) -> Grants {
    let mut out: Grants = BTreeMap::new();
    for entry in snapshot.bindings() {
        let b = &entry.binding;
        let ns = b.namespace.clone().unwrap_or_default();
        let via = format!("{} {}", b.kind(), b.display_name());
        let mut perms: Vec<Permission> = Vec::new();
        for rule in snapshot.rules(&entry.role) {
            for verb in &rule.verbs {
                for group in &rule.api_groups {
                    for resource in &rule.resources {
                        let names: Vec<Option<String>> = if rule.resource_names.is_empty() {
                            vec![None]
                        } else {
                            rule.resource_names.iter().cloned().map(Some).collect()
                        };
                        for name in names {
                            perms.push(Permission {
                                namespace: ns.clone(),
                                verb: verb.clone(),
                                api_group: Some(group.clone()),
                                resource: Some(resource.clone()),
                                resource_name: name,
                                non_resource_url: None,
                            });
                        }
                    }
                }
                // Non-resource URLs only mean something cluster-wide.
                if b.namespace.is_none() {
                    for url in &rule.non_resource_urls {
                        perms.push(Permission {
                            namespace: String::new(),
                            verb: verb.clone(),
                            api_group: None,
                            resource: None,
                            resource_name: None,
                            non_resource_url: Some(url.clone()),
                        });
                    }
                }
            }
        }
        for s in &b.subjects {
            let namespace = if s.kind == KIND_SERVICE_ACCOUNT {
                if s.namespace.is_empty() {
                    ns.clone()
                } else {
                    s.namespace.clone()
                }
            } else {
                String::new()
            };
            let key = SubjectKey {
                kind: s.kind.clone(),
                name: s.name.clone(),
                namespace,
            };
            let held = out.entry(key).or_default();
            for p in &perms {
                held.entry(p.clone()).or_insert_with(|| via.clone());
            }
        }
    }
    out.retain(|_, perms| !perms.is_empty());
    out
}

/// Permissions in `after` but not `before` (gained) and the reverse (lost),
/// by subject, then permission.
#[must_use]
pub fn diff(before: &Snapshot, after: &Snapshot) -> Vec<Change> {
    let a = permissions(before);
    let b = permissions(after);
    let subjects: BTreeSet<&SubjectKey> = a.keys().chain(b.keys()).collect();
    let empty = BTreeMap::new();
    let mut out = Vec::new();
    for subject in subjects {
        let pa = a.get(subject).unwrap_or(&empty);
        let pb = b.get(subject).unwrap_or(&empty);
        for (perm, via) in pb {
            if !pa.contains_key(perm) {
                out.push(Change {
                    subject: subject.clone(),
                    gained: true,
                    permission: perm.clone(),
                    via: via.clone(),
                });
            }
        }
        for (perm, via) in pa {
            if !pb.contains_key(perm) {
                out.push(Change {
                    subject: subject.clone(),
                    gained: false,
                    permission: perm.clone(),
                    via: via.clone(),
                });
            }
        }
    }
    out
}
