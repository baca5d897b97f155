//! The rules a user holds in a namespace (`RulesFor`, what a
//! SelfSubjectRulesReview and `kubectl auth can-i --list` show).
//!
//! Rules come from every ClusterRoleBinding that applies and, when a
//! namespace is given, every RoleBinding there that applies, in visiting
//! order; missing roles are reported as errors beside the rules.
//! [`table_rows`] compacts them into kubectl's four columns.

use std::collections::BTreeMap;

use serde::Serialize;

use super::authorizer::{UserInfo, first_applying_subject};
use super::model::{Binding, PolicyRule};
use super::snapshot::{BindingId, RoleResolution, Snapshot, SubjectIndex};
use crate::bytes::Name;

/// One rule and where it comes from.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HeldRule<'s> {
    /// The rule.
    pub rule: &'s PolicyRule,
    /// Kind of the binding (`ClusterRoleBinding`/`RoleBinding`).
    pub binding_kind: &'static str,
    /// `name` or `namespace/name` of the binding.
    pub binding: String,
    /// Kind of the role.
    pub role_kind: &'s str,
    /// Name of the role.
    pub role: &'s str,
}

/// Rules and resolution errors.
#[derive(Debug, Clone, Serialize)]
pub struct RulesFor<'s> {
    /// The rules, in visiting order.
    pub rules: Vec<HeldRule<'s>>,
    /// Missing-role errors, distinct, in visiting order.
    pub errors: Vec<&'s str>,
}

/// Ids of the bindings that apply to `user` in `namespace` (empty: cluster
/// bindings only), ascending.
#[must_use]
pub fn applying_bindings(snapshot: &Snapshot, user: &UserInfo, namespace: &str) -> Vec<BindingId> {
    let mut ids = Vec::new();
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
    // The index is keyed by exact names; confirm with the authorizer's own test.
    ids.retain(|&id| {
        snapshot
            .binding(id)
            .is_some_and(|e| first_applying_subject(user, &e.binding).is_some())
    });
    ids
}

/// The rules `user` holds in `namespace`.
#[must_use]
pub fn rules_for<'s>(snapshot: &'s Snapshot, user: &UserInfo, namespace: &str) -> RulesFor<'s> {
    let mut out = RulesFor {
        rules: Vec::new(),
        errors: Vec::new(),
    };
    for id in applying_bindings(snapshot, user, namespace) {
        let Some(entry) = snapshot.binding(id) else {
            continue;
        };
        if let RoleResolution::Missing(msg) = &entry.role {
            if !out.errors.contains(&&**msg) {
                out.errors.push(msg);
            }
            continue;
        }
        let b: &Binding = &entry.binding;
        for rule in snapshot.rules(&entry.role) {
            out.rules.push(HeldRule {
                rule,
                binding_kind: b.kind(),
                binding: b.display_name(),
                role_kind: &b.role_ref.kind,
                role: &b.role_ref.name,
            });
        }
    }
    out
}

/// One line of `kubectl auth can-i --list`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TableRow {
    /// `resource.group` (`resource` for the core group); empty for URLs.
    pub resources: String,
    /// Non-resource URLs.
    pub non_resource_urls: Vec<String>,
    /// Resource names.
    pub resource_names: Vec<String>,
    /// Verbs.
    pub verbs: Vec<String>,
}

/// Breaks rules down to one row per `resource.group` (and per URL) and
/// merges the verbs of rows that differ only in verbs, like kubectl.
#[must_use]
pub fn table_rows(rules: &[HeldRule<'_>]) -> Vec<TableRow> {
    let mut merged: BTreeMap<(String, Vec<String>, Vec<String>), Vec<String>> = BTreeMap::new();
    let mut add = |key: (String, Vec<String>, Vec<String>), verbs: &[String]| {
        let entry = merged.entry(key).or_default();
        for v in verbs {
            if !entry.contains(v) {
                entry.push(v.clone());
            }
        }
    };
    for held in rules {
        let rule = held.rule;
        for group in &rule.api_groups {
            for resource in &rule.resources {
                let name = if group.is_empty() {
                    resource.clone()
                } else {
                    format!("{resource}.{group}")
                };
                add((name, Vec::new(), rule.resource_names.clone()), &rule.verbs);
            }
        }
        for url in &rule.non_resource_urls {
            add((String::new(), vec![url.clone()], Vec::new()), &rule.verbs);
        }
    }
    let mut rows: Vec<TableRow> = merged
        .into_iter()
        .map(|((resources, urls, names), mut verbs)| {
            verbs.sort();
            TableRow {
                resources,
                non_resource_urls: urls,
                resource_names: names,
                verbs,
            }
        })
        .collect();
    // Resource rows first, then URL rows, as kubectl prints them.
    rows.sort_by(|a, b| {
        (
            a.resources.is_empty(),
            &a.resources,
            &a.non_resource_urls,
            &a.resource_names,
        )
            .cmp(&(
                b.resources.is_empty(),
                &b.resources,
                &b.non_resource_urls,
                &b.resource_names,
            ))
    });
    rows
}
