//! Dangerous permissions: which subjects hold them, through which rule and
//! binding.
//!
//! Each [`Check`] is a set of probe requests; a rule triggers the check
//! when it allows one of the probes (resourceNames aside: a rule limited to
//! names still triggers, flagged `restricted` and one severity lower).
//! Wildcard checks look at the rule itself. A finding through a
//! ClusterRoleBinding is cluster-wide; through a RoleBinding it is limited
//! to that namespace and one severity lower.
//!
//! [`assess`] answers for one user (every binding that applies to the user
//! or any of its groups, in every namespace); [`rank`] goes through every
//! subject named in any binding and orders them by score.

use std::collections::BTreeMap;

use serde::Serialize;

use super::authorizer::{
    UserInfo, api_group_matches, first_applying_subject, resource_matches, verb_matches,
};
use super::model::{ALL, KIND_SERVICE_ACCOUNT, PolicyRule, Subject};
use super::snapshot::{BindingEntry, BindingId, Snapshot, SubjectIndex};

/// A dangerous permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    /// get/list/watch secrets.
    ReadSecrets,
    /// create pods.
    CreatePods,
    /// create deployments, daemonsets, statefulsets, replicasets, jobs,
    /// cronjobs or replicationcontrollers.
    CreateWorkloads,
    /// pods/exec.
    PodsExec,
    /// pods/attach.
    PodsAttach,
    /// create serviceaccounts/token (mint tokens for any SA in scope).
    CreateServiceAccountTokens,
    /// impersonate users, groups, service accounts or uids.
    Impersonate,
    /// escalate on roles/clusterroles.
    Escalate,
    /// bind roles/clusterroles.
    Bind,
    /// nodes/proxy (kubelet API, exec on any pod of the node).
    NodesProxy,
    /// approve certificate signing requests.
    ApproveCsr,
    /// `*` in verbs.
    WildcardVerbs,
    /// `*` in resources.
    WildcardResources,
}

impl Check {
    /// Every check.
    pub const ALL: [Check; 13] = [
        Check::ReadSecrets,
        Check::CreatePods,
        Check::CreateWorkloads,
        Check::PodsExec,
        Check::PodsAttach,
        Check::CreateServiceAccountTokens,
        Check::Impersonate,
        Check::Escalate,
        Check::Bind,
        Check::NodesProxy,
        Check::ApproveCsr,
        Check::WildcardVerbs,
        Check::WildcardResources,
    ];

    /// Stable identifier.
    #[must_use]
    pub fn id(self) -> &'static str {
        match self {
            Check::ReadSecrets => "read-secrets",
            Check::CreatePods => "create-pods",
            Check::CreateWorkloads => "create-workloads",
            Check::PodsExec => "pods-exec",
            Check::PodsAttach => "pods-attach",
            Check::CreateServiceAccountTokens => "create-serviceaccount-tokens",
            Check::Impersonate => "impersonate",
            Check::Escalate => "escalate",
            Check::Bind => "bind",
            Check::NodesProxy => "nodes-proxy",
            Check::ApproveCsr => "approve-csr",
            Check::WildcardVerbs => "wildcard-verbs",
            Check::WildcardResources => "wildcard-resources",
        }
    }

    /// Severity when granted cluster-wide without resourceNames.
    #[must_use]
    pub fn base_severity(self) -> Severity {
        match self {
            Check::CreatePods
            | Check::CreateWorkloads
            | Check::PodsExec
            | Check::PodsAttach
            | Check::ApproveCsr => Severity::High,
            _ => Severity::Critical,
        }
    }

    /// (verbs, group, resources) probed; empty for the wildcard checks.
    fn probes(
        self,
    ) -> &'static [(
        &'static [&'static str],
        &'static str,
        &'static [&'static str],
    )] {
        match self {
            Check::ReadSecrets => &[(&["get", "list", "watch"], "", &["secrets"])],
            Check::CreatePods => &[(&["create"], "", &["pods"])],
            Check::CreateWorkloads => &[
                (
                    &["create"],
                    "apps",
                    &["deployments", "daemonsets", "statefulsets", "replicasets"],
                ),
                (&["create"], "batch", &["jobs", "cronjobs"]),
                (&["create"], "", &["replicationcontrollers"]),
            ],
            Check::PodsExec => &[(&["create", "get"], "", &["pods/exec"])],
            Check::PodsAttach => &[(&["create", "get"], "", &["pods/attach"])],
            Check::CreateServiceAccountTokens => &[(&["create"], "", &["serviceaccounts/token"])],
            Check::Impersonate => &[
                (
                    &["impersonate"],
                    "",
                    &["users", "groups", "serviceaccounts"],
                ),
                (
                    &["impersonate"],
                    "authentication.k8s.io",
                    &["uids", "userextras/scopes"],
                ),
            ],
            Check::Escalate => &[(
                &["escalate"],
                "rbac.authorization.k8s.io",
                &["roles", "clusterroles"],
            )],
            Check::Bind => &[(
                &["bind"],
                "rbac.authorization.k8s.io",
                &["roles", "clusterroles"],
            )],
            Check::NodesProxy => &[(&["get", "create"], "", &["nodes/proxy"])],
            Check::ApproveCsr => &[(
                &["update", "patch"],
                "certificates.k8s.io",
                &["certificatesigningrequests/approval"],
            )],
            Check::WildcardVerbs | Check::WildcardResources => &[],
        }
    }

    /// Whether `rule` grants this permission (resourceNames ignored).
    #[must_use]
    pub fn triggered_by(self, rule: &PolicyRule) -> bool {
        match self {
            Check::WildcardVerbs => rule.verbs.iter().any(|v| v == ALL),
            Check::WildcardResources => rule.resources.iter().any(|r| r == ALL),
            _ => self.probes().iter().any(|(verbs, group, resources)| {
                verbs.iter().any(|verb| verb_matches(rule, verb))
                    && api_group_matches(rule, group)
                    && resources.iter().any(|res| {
                        let (resource, sub) = res.split_once('/').unwrap_or((res, ""));
                        resource_matches(rule, resource, sub)
                    })
            }),
        }
    }
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Minor.
    Low,
    /// Notable.
    Medium,
    /// Serious.
    High,
    /// Equivalent or close to cluster admin.
    Critical,
}

impl Severity {
    fn lower(self) -> Self {
        match self {
            Severity::Critical => Severity::High,
            Severity::High => Severity::Medium,
            Severity::Medium | Severity::Low => Severity::Low,
        }
    }

    /// Points towards a subject's score.
    #[must_use]
    pub fn score(self) -> u32 {
        match self {
            Severity::Critical => 10,
            Severity::High => 5,
            Severity::Medium => 2,
            Severity::Low => 1,
        }
    }
}

/// One dangerous permission held through one rule of one binding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RiskFinding {
    /// What is dangerous.
    pub check: Check,
    /// How dangerous, after scope and resourceNames.
    pub severity: Severity,
    /// Namespace the permission is limited to; `None` is cluster-wide.
    pub namespace: Option<String>,
    /// Whether the rule is limited to resourceNames.
    pub restricted: bool,
    /// `ClusterRoleBinding` or `RoleBinding`.
    pub binding_kind: &'static str,
    /// `name` or `namespace/name`.
    pub binding: String,
    /// `ClusterRole` or `Role`.
    pub role_kind: String,
    /// Role name.
    pub role: String,
    /// Index of the rule in the role.
    pub rule_index: usize,
    /// The rule.
    pub rule: PolicyRule,
    /// The binding's subject this came through.
    pub subject: Subject,
}

fn findings_for_binding(
    snapshot: &Snapshot,
    entry: &BindingEntry,
    subject: &Subject,
) -> Vec<RiskFinding> {
    let mut out = Vec::new();
    let b = &entry.binding;
    for (i, rule) in snapshot.rules(&entry.role).iter().enumerate() {
        for check in Check::ALL {
            if !check.triggered_by(rule) {
                continue;
            }
            let restricted = !rule.resource_names.is_empty()
                && !matches!(check, Check::WildcardVerbs | Check::WildcardResources);
            let mut severity = check.base_severity();
            if b.namespace.is_some() {
                severity = severity.lower();
            }
            if restricted {
                severity = severity.lower();
            }
            out.push(RiskFinding {
                check,
                severity,
                namespace: b.namespace.clone(),
                restricted,
                binding_kind: b.kind(),
                binding: b.display_name(),
                role_kind: b.role_ref.kind.clone(),
                role: b.role_ref.name.clone(),
                rule_index: i,
                rule: rule.clone(),
                subject: subject.clone(),
            });
        }
    }
    out
}

/// Every dangerous permission `user` holds, through any binding that
/// applies to it in any namespace; most severe first.
#[must_use]
pub fn assess(snapshot: &Snapshot, user: &UserInfo) -> Vec<RiskFinding> {
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
    for index in snapshot.namespace_index.values() {
        gather(index);
    }
    ids.sort_unstable();
    ids.dedup();
    let mut out = Vec::new();
    for id in ids {
        let Some(entry) = snapshot.binding(id) else {
            continue;
        };
        let Some(i) = first_applying_subject(user, &entry.binding) else {
            continue;
        };
        out.extend(findings_for_binding(
            snapshot,
            entry,
            &entry.binding.subjects[i],
        ));
    }
    out.sort_by_key(|f| std::cmp::Reverse(f.severity));
    out
}

/// A subject named in some binding and what it holds.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SubjectRisk {
    /// Kind.
    pub kind: String,
    /// Name.
    pub name: String,
    /// ServiceAccount namespace (defaulted from the RoleBinding).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Sum of the findings' severity points.
    pub score: u32,
    /// Highest severity among the findings.
    pub max_severity: Severity,
    /// The findings, most severe first.
    pub findings: Vec<RiskFinding>,
}

/// Every subject with at least one finding, highest score first. Findings
/// are those granted to the subject itself, not through groups it may
/// belong to (use [`assess`] for a user).
#[must_use]
pub fn rank(snapshot: &Snapshot) -> Vec<SubjectRisk> {
    let mut by_subject: BTreeMap<(String, String, String), Vec<RiskFinding>> = BTreeMap::new();
    for entry in snapshot.bindings() {
        let ns = entry.binding.namespace.as_deref().unwrap_or("");
        let mut seen: Vec<(String, String, String)> = Vec::new();
        for subject in &entry.binding.subjects {
            let sa_ns = if subject.kind == KIND_SERVICE_ACCOUNT {
                if subject.namespace.is_empty() {
                    ns.to_owned()
                } else {
                    subject.namespace.clone()
                }
            } else {
                String::new()
            };
            let key = (subject.kind.clone(), subject.name.clone(), sa_ns);
            if seen.contains(&key) {
                continue;
            }
            seen.push(key.clone());
            let findings = findings_for_binding(snapshot, entry, subject);
            if !findings.is_empty() {
                by_subject.entry(key).or_default().extend(findings);
            }
        }
    }
    let mut out: Vec<SubjectRisk> = by_subject
        .into_iter()
        .map(|((kind, name, namespace), mut findings)| {
            findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
            SubjectRisk {
                kind,
                name,
                namespace,
                score: findings.iter().map(|f| f.severity.score()).sum(),
                max_severity: findings.first().map_or(Severity::Low, |f| f.severity),
                findings,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.max_severity
            .cmp(&a.max_severity)
            .then(b.score.cmp(&a.score))
            .then_with(|| (&a.kind, &a.name, &a.namespace).cmp(&(&b.kind, &b.name, &b.namespace)))
    });
    out
}
