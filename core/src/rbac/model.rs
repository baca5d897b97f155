//! The RBAC objects a snapshot is made of, shaped like `rbac.authorization.k8s.io/v1`.
//!
//! These are plain data: what the importer produced and what the snapshot
//! store keeps. Field names serialise in the Kubernetes spelling
//! (`apiGroups`, `resourceNames`, `roleRef`, ...) so that a stored snapshot
//! reads like the objects it came from. The indexed, queryable form is
//! [`super::Snapshot`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `rbac.authorization.k8s.io`, the API group of RBAC objects and of
/// `User`/`Group` subjects.
pub const RBAC_GROUP: &str = "rbac.authorization.k8s.io";
/// `*` in `verbs`, `apiGroups`, `resources` and `nonResourceURLs`.
pub const ALL: &str = "*";
/// Subject kind `User`.
pub const KIND_USER: &str = "User";
/// Subject kind `Group`.
pub const KIND_GROUP: &str = "Group";
/// Subject kind `ServiceAccount`.
pub const KIND_SERVICE_ACCOUNT: &str = "ServiceAccount";
/// Role reference kind `Role`.
pub const KIND_ROLE: &str = "Role";
/// Role reference kind `ClusterRole`.
pub const KIND_CLUSTER_ROLE: &str = "ClusterRole";
/// Object kind `RoleBinding`.
pub const KIND_ROLE_BINDING: &str = "RoleBinding";
/// Object kind `ClusterRoleBinding`.
pub const KIND_CLUSTER_ROLE_BINDING: &str = "ClusterRoleBinding";
/// Prefix of every ServiceAccount user name.
pub const SERVICE_ACCOUNT_USER_PREFIX: &str = "system:serviceaccount:";

/// One rule of a Role or ClusterRole (`rbacv1.PolicyRule`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PolicyRule {
    /// Verbs, or `*`.
    pub verbs: Vec<String>,
    /// API groups (`""` is the core group), or `*`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub api_groups: Vec<String>,
    /// Resources, `resource/subresource`, `*/subresource`, or `*`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    /// Object names the rule is limited to; empty means all.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
    /// Non-resource URLs; a trailing `*` is a prefix glob.
    #[serde(rename = "nonResourceURLs", skip_serializing_if = "Vec::is_empty")]
    pub non_resource_urls: Vec<String>,
}

/// One requirement of a label selector (`matchExpressions[]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LabelSelectorRequirement {
    /// Label key.
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: String,
    /// Values for `In`/`NotIn`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// A label selector (`metav1.LabelSelector`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LabelSelector {
    /// Labels that must be present with these values.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Further requirements, all of which must hold.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

impl LabelSelector {
    /// Whether `labels` satisfy this selector, as `metav1.LabelSelectorAsSelector`
    /// then `Matches` would say. An empty selector matches everything. The
    /// importer has already rejected unknown operators.
    #[must_use]
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|req| {
                let value = labels.get(&req.key);
                match req.operator.as_str() {
                    "In" => value.is_some_and(|v| req.values.contains(v)),
                    "NotIn" => value.is_none_or(|v| !req.values.contains(v)),
                    "Exists" => value.is_some(),
                    "DoesNotExist" => value.is_none(),
                    _ => false,
                }
            })
    }
}

/// `aggregationRule` of a ClusterRole.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AggregationRule {
    /// Cluster roles whose labels match any of these selectors contribute
    /// their rules.
    pub cluster_role_selectors: Vec<LabelSelector>,
}

/// A Role (namespaced) or ClusterRole (`namespace` is `None`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Role {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`; `None` for a ClusterRole.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// `metadata.labels`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The rules. For an aggregated ClusterRole, what the aggregation
    /// controller computed (the snapshot recomputes it).
    pub rules: Vec<PolicyRule>,
    /// `aggregationRule` (ClusterRoles only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aggregation_rule: Option<AggregationRule>,
}

/// A subject of a binding.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Subject {
    /// `User`, `Group` or `ServiceAccount` (anything else never matches).
    pub kind: String,
    /// `apiGroup` (informational; RBAC ignores it when matching).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub api_group: String,
    /// User, group or ServiceAccount name.
    pub name: String,
    /// ServiceAccount namespace; empty means the binding's namespace.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

impl Subject {
    /// The user name a ServiceAccount subject stands for, with the namespace
    /// defaulted to `binding_namespace` as the authorizer does; `None` for
    /// other kinds or when no namespace can be found.
    #[must_use]
    pub fn service_account_user(&self, binding_namespace: &str) -> Option<String> {
        if self.kind != KIND_SERVICE_ACCOUNT {
            return None;
        }
        let ns = if self.namespace.is_empty() {
            binding_namespace
        } else {
            &self.namespace
        };
        (!ns.is_empty()).then(|| format!("{SERVICE_ACCOUNT_USER_PREFIX}{ns}:{}", self.name))
    }
}

/// `roleRef` of a binding.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RoleRef {
    /// `rbac.authorization.k8s.io`.
    pub api_group: String,
    /// `Role` or `ClusterRole`.
    pub kind: String,
    /// Name of the role.
    pub name: String,
}

/// A RoleBinding (namespaced) or ClusterRoleBinding (`namespace` is `None`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Binding {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`; `None` for a ClusterRoleBinding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The role granted.
    pub role_ref: RoleRef,
    /// Who it is granted to (may be empty, e.g. `system:node`).
    pub subjects: Vec<Subject>,
}

impl Binding {
    /// `RoleBinding` or `ClusterRoleBinding`.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        if self.namespace.is_some() {
            KIND_ROLE_BINDING
        } else {
            KIND_CLUSTER_ROLE_BINDING
        }
    }

    /// `namespace/name` for a RoleBinding, `name` for a ClusterRoleBinding.
    #[must_use]
    pub fn display_name(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}/{}", self.name),
            None => self.name.clone(),
        }
    }
}

/// All RBAC objects of one snapshot, as imported.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RbacObjects {
    /// Roles.
    pub roles: Vec<Role>,
    /// ClusterRoles.
    pub cluster_roles: Vec<Role>,
    /// RoleBindings.
    pub role_bindings: Vec<Binding>,
    /// ClusterRoleBindings.
    pub cluster_role_bindings: Vec<Binding>,
}

impl RbacObjects {
    /// Number of objects of the four kinds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.roles.len()
            + self.cluster_roles.len()
            + self.role_bindings.len()
            + self.cluster_role_bindings.len()
    }

    /// Whether there is no object at all.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn req(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: values.iter().map(|v| (*v).to_owned()).collect(),
        }
    }

    #[test]
    fn label_selector_operators() {
        let l = labels(&[("a", "1"), ("b", "2")]);
        let empty = LabelSelector::default();
        assert!(empty.matches(&l));
        assert!(empty.matches(&BTreeMap::new()));
        let cases: &[(LabelSelectorRequirement, bool)] = &[
            (req("a", "In", &["1", "3"]), true),
            (req("a", "In", &["3"]), false),
            (req("c", "In", &["1"]), false),
            (req("a", "NotIn", &["3"]), true),
            (req("a", "NotIn", &["1"]), false),
            (req("c", "NotIn", &["1"]), true),
            (req("a", "Exists", &[]), true),
            (req("c", "Exists", &[]), false),
            (req("c", "DoesNotExist", &[]), true),
            (req("a", "DoesNotExist", &[]), false),
        ];
        for (r, want) in cases {
            let sel = LabelSelector {
                match_labels: BTreeMap::new(),
                match_expressions: vec![r.clone()],
            };
            assert_eq!(sel.matches(&l), *want, "{r:?}");
        }
        let sel = LabelSelector {
            match_labels: labels(&[("a", "1")]),
            match_expressions: vec![req("b", "In", &["9"])],
        };
        assert!(!sel.matches(&l), "all parts must hold");
    }

    #[test]
    fn service_account_user_defaults_namespace() {
        let s = Subject {
            kind: KIND_SERVICE_ACCOUNT.into(),
            name: "sa".into(),
            ..Subject::default()
        };
        assert_eq!(
            s.service_account_user("ns").as_deref(),
            Some("system:serviceaccount:ns:sa")
        );
        assert_eq!(s.service_account_user(""), None);
        let user = Subject {
            kind: KIND_USER.into(),
            name: "sa".into(),
            ..Subject::default()
        };
        assert_eq!(user.service_account_user("ns"), None);
    }
}
