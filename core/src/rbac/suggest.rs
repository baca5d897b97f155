//! Least-privilege roles from observed calls: per ServiceAccount, the
//! Roles and ClusterRoles (with their bindings) that grant exactly the
//! calls a replay saw the cluster allow, after these expansions, and
//! nothing else:
//!
//! 1. **Scope.** A call in a namespace is granted by a Role in that
//!    namespace; a call with no namespace (cluster-scoped resources, and
//!    all-namespace lists) by a ClusterRole, which RBAC can only grant
//!    cluster-wide; non-resource URLs by a ClusterRole, exact paths.
//! 2. **Names.** `get`, `update`, `patch` and `delete` keep `resourceNames`
//!    when every observed call of that verb on that resource named an object
//!    and there were at most [`MAX_NAMES`] names; otherwise (and always for
//!    `create`, `list`, `watch`, `deletecollection`, which RBAC cannot limit
//!    by a name the request does not carry) the rule covers every name.
//! 3. **Verbs** are never widened (`get` does not bring `list`), no `*`
//!    anywhere; a call whose verb, group or resource is literally `*` (or
//!    whose URL ends in `*`) cannot be granted exactly and is left out
//!    ([`grantable`]).
//!
//! [`check`] verifies a suggestion both ways: every observed call is
//! allowed with the suggestion in place of the subject's own bindings
//! (groups' bindings stay, as the subject keeps its groups), and every grant
//! of the suggestion, enumerated rule by rule, is an observed call after the
//! expansions above, so a wildcard role cannot pass. audit2rbac's rule
//! shaping was the reference for (2); unlike audit2rbac this starts from the
//! cluster's RBAC and says what the current bindings grant that was never
//! used.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Serialize;

use super::authorizer::{Authorizer, OwnedAttributes, UserInfo, split_service_account_user};
use super::model::{
    ALL, Binding, KIND_CLUSTER_ROLE, KIND_ROLE, KIND_SERVICE_ACCOUNT, PolicyRule, RBAC_GROUP,
    RbacObjects, Role, RoleRef, Subject,
};
use super::snapshot::Snapshot;

/// Names kept in one rule's `resourceNames` before it covers every name.
pub const MAX_NAMES: usize = 10;
/// Verbs whose rules may keep `resourceNames`.
const NAMED_VERBS: [&str; 4] = ["get", "update", "patch", "delete"];

/// Errors of a suggestion's check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SuggestError {
    /// The subject is not a ServiceAccount user name.
    #[error("{user:?} is not a ServiceAccount (system:serviceaccount:NS:NAME)")]
    ParseServiceAccount {
        /// The user name.
        user: String,
    },
    /// An observed call is denied with the suggestion in place.
    #[error("the suggestion denies an observed call: {call}")]
    DenyObservedCall {
        /// The call, in words.
        call: String,
    },
    /// The suggestion grants something no observed call (after the
    /// expansions) needs.
    #[error("the suggestion grants more than was observed: {grant}")]
    GrantUnobserved {
        /// The grant, in words.
        grant: String,
    },
}

/// A suggestion for one ServiceAccount.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Suggestion {
    /// The ServiceAccount user.
    pub subject: String,
    /// The roles (namespaced Roles and ClusterRoles) and their bindings.
    pub objects: RbacObjects,
    /// Observed calls it was made from.
    pub calls: usize,
}

fn describe(a: &OwnedAttributes) -> String {
    if !a.is_resource_request {
        return format!("{} {}", a.verb, a.path);
    }
    let mut s = format!("{} ", a.verb);
    if !a.api_group.is_empty() {
        s.push_str(&a.api_group);
        s.push('/');
    }
    s.push_str(&a.resource);
    if !a.subresource.is_empty() {
        s.push('/');
        s.push_str(&a.subresource);
    }
    if !a.namespace.is_empty() {
        s.push_str(" in ");
        s.push_str(&a.namespace);
    }
    if !a.name.is_empty() {
        s.push_str(" named ");
        s.push_str(&a.name);
    }
    s
}

fn resource_key(a: &OwnedAttributes) -> String {
    if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    }
}

/// (group, verbs, names) -> resources: the rules of one scope.
type RulesOfScope = BTreeMap<(String, Vec<String>, Vec<String>), BTreeSet<String>>;

/// (scope, group, resource[/sub], verb) -> names (None = every name).
type Grants = BTreeMap<(String, String, String, String), Option<BTreeSet<String>>>;

/// Whether a call can be granted exactly: RBAC reads `*` in verbs, groups
/// and resources, and a trailing `*` in a URL, as a wildcard, so a call
/// naming one literally is left out of suggestions (and of their check).
#[must_use]
pub fn grantable(a: &OwnedAttributes) -> bool {
    if a.is_resource_request {
        ![&a.verb, &a.api_group, &a.resource, &a.subresource]
            .iter()
            .any(|f| f.contains('*'))
    } else {
        a.verb != ALL && !a.path.ends_with('*')
    }
}

/// The grants the observed calls need, after the expansions of the module docs.
fn needed(calls: &[OwnedAttributes]) -> (Grants, BTreeMap<String, BTreeSet<String>>) {
    let mut grants: Grants = BTreeMap::new();
    // verb -> paths
    let mut non_resource: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for a in calls.iter().filter(|a| grantable(a)) {
        if !a.is_resource_request {
            non_resource
                .entry(a.verb.clone())
                .or_default()
                .insert(a.path.clone());
            continue;
        }
        let key = (
            a.namespace.clone(),
            a.api_group.clone(),
            resource_key(a),
            a.verb.clone(),
        );
        let named = NAMED_VERBS.contains(&a.verb.as_str()) && !a.name.is_empty();
        match grants.get_mut(&key) {
            Some(None) => {}
            Some(Some(names)) => {
                if named {
                    names.insert(a.name.clone());
                    if names.len() > MAX_NAMES {
                        grants.insert(key, None);
                    }
                } else {
                    grants.insert(key, None);
                }
            }
            None => {
                let names = named.then(|| BTreeSet::from([a.name.clone()]));
                grants.insert(key, names);
            }
        }
    }
    (grants, non_resource)
}

fn role_name(sa: &str) -> String {
    format!("tokenwatch-suggested:{sa}")
}

/// The least-privilege roles for `user` (a ServiceAccount) from the calls
/// the cluster allowed it.
///
/// # Errors
/// [`SuggestError::ParseServiceAccount`] when `user` is not a ServiceAccount.
pub fn suggest(user: &str, calls: &[OwnedAttributes]) -> Result<Suggestion, SuggestError> {
    let (sa_ns, sa_name) =
        split_service_account_user(user).ok_or_else(|| SuggestError::ParseServiceAccount {
            user: user.to_owned(),
        })?;
    let (grants, non_resource) = needed(calls);
    // scope -> (group, names) -> verbs -> resources; then merged.
    let mut by_scope: BTreeMap<String, RulesOfScope> = BTreeMap::new();
    // First: per (scope, group, resource, names) the verbs.
    let mut verbs_of: BTreeMap<(String, String, String, Vec<String>), BTreeSet<String>> =
        BTreeMap::new();
    for ((scope, group, resource, verb), names) in &grants {
        let names: Vec<String> = names.iter().flatten().cloned().collect();
        verbs_of
            .entry((scope.clone(), group.clone(), resource.clone(), names))
            .or_default()
            .insert(verb.clone());
    }
    // Then rules with the same group, verbs and names share one rule.
    for ((scope, group, resource, names), verbs) in verbs_of {
        by_scope
            .entry(scope)
            .or_default()
            .entry((group, verbs.into_iter().collect(), names))
            .or_default()
            .insert(resource);
    }
    let name = role_name(sa_name);
    let subject = Subject {
        kind: KIND_SERVICE_ACCOUNT.to_owned(),
        api_group: String::new(),
        name: sa_name.to_owned(),
        namespace: sa_ns.to_owned(),
    };
    let mut objects = RbacObjects::default();
    let mut cluster_rules: Vec<PolicyRule> = Vec::new();
    for (scope, rules) in by_scope {
        let rules: Vec<PolicyRule> = rules
            .into_iter()
            .map(|((group, verbs, names), resources)| PolicyRule {
                verbs,
                api_groups: vec![group],
                resources: resources.into_iter().collect(),
                resource_names: names,
                non_resource_urls: Vec::new(),
            })
            .collect();
        if scope.is_empty() {
            cluster_rules.extend(rules);
        } else {
            objects.roles.push(Role {
                name: name.clone(),
                namespace: Some(scope.clone()),
                rules,
                ..Role::default()
            });
            objects.role_bindings.push(Binding {
                name: name.clone(),
                namespace: Some(scope),
                role_ref: RoleRef {
                    api_group: RBAC_GROUP.to_owned(),
                    kind: KIND_ROLE.to_owned(),
                    name: name.clone(),
                },
                subjects: vec![subject.clone()],
            });
        }
    }
    let mut by_paths: BTreeMap<Vec<String>, BTreeSet<String>> = BTreeMap::new();
    for (verb, paths) in non_resource {
        by_paths
            .entry(paths.into_iter().collect())
            .or_default()
            .insert(verb);
    }
    for (paths, verbs) in by_paths {
        cluster_rules.push(PolicyRule {
            verbs: verbs.into_iter().collect(),
            non_resource_urls: paths,
            ..PolicyRule::default()
        });
    }
    if !cluster_rules.is_empty() {
        let cluster_name = format!("tokenwatch-suggested:{sa_ns}:{sa_name}");
        objects.cluster_roles.push(Role {
            name: cluster_name.clone(),
            namespace: None,
            rules: cluster_rules,
            ..Role::default()
        });
        objects.cluster_role_bindings.push(Binding {
            name: cluster_name.clone(),
            namespace: None,
            role_ref: RoleRef {
                api_group: RBAC_GROUP.to_owned(),
                kind: KIND_CLUSTER_ROLE.to_owned(),
                name: cluster_name,
            },
            subjects: vec![subject],
        });
    }
    Ok(Suggestion {
        subject: user.to_owned(),
        objects,
        calls: calls.iter().filter(|a| grantable(a)).count(),
    })
}

/// `current` with `user`'s own ServiceAccount subjects removed from every
/// binding and `suggestion`'s objects added.
#[must_use]
pub fn substitute(current: &RbacObjects, user: &str, suggestion: &RbacObjects) -> RbacObjects {
    let mut objects = current.clone();
    let strip = |bindings: &mut Vec<Binding>| {
        for b in bindings.iter_mut() {
            let ns = b.namespace.clone().unwrap_or_default();
            b.subjects
                .retain(|s| s.service_account_user(&ns).as_deref() != Some(user));
        }
    };
    strip(&mut objects.role_bindings);
    strip(&mut objects.cluster_role_bindings);
    objects.roles.extend(suggestion.roles.iter().cloned());
    objects
        .cluster_roles
        .extend(suggestion.cluster_roles.iter().cloned());
    objects
        .role_bindings
        .extend(suggestion.role_bindings.iter().cloned());
    objects
        .cluster_role_bindings
        .extend(suggestion.cluster_role_bindings.iter().cloned());
    objects
}

/// Checks a suggestion both ways against the calls it was made from (see
/// the module docs); `current` is the snapshot's objects.
///
/// # Errors
/// The first call denied, or the first grant beyond the observed calls.
pub fn check(
    suggestion: &RbacObjects,
    user: &UserInfo,
    calls: &[OwnedAttributes],
    current: &RbacObjects,
) -> Result<(), SuggestError> {
    let replaced = Authorizer::new(Arc::new(Snapshot::build(substitute(
        current, &user.name, suggestion,
    ))));
    for call in calls.iter().filter(|a| grantable(a)) {
        if !replaced.decide(&call.as_attributes(), user).allowed {
            return Err(SuggestError::DenyObservedCall {
                call: describe(call),
            });
        }
    }
    let (grants, non_resource) = needed(calls);
    let unobserved = |grant: String| Err(SuggestError::GrantUnobserved { grant });
    let roles = suggestion
        .roles
        .iter()
        .map(|r| (r.namespace.clone().unwrap_or_default(), r))
        .chain(suggestion.cluster_roles.iter().map(|r| (String::new(), r)));
    for (scope, role) in roles {
        for rule in &role.rules {
            let wild = |v: &[String]| v.iter().any(|x| x == ALL || x.ends_with('*'));
            if wild(&rule.verbs)
                || wild(&rule.api_groups)
                || wild(&rule.resources)
                || wild(&rule.non_resource_urls)
            {
                return unobserved(format!("a wildcard in {}", role.name));
            }
            for verb in &rule.verbs {
                for path in &rule.non_resource_urls {
                    if !scope.is_empty()
                        || !non_resource.get(verb).is_some_and(|p| p.contains(path))
                    {
                        return unobserved(format!("{verb} {path}"));
                    }
                }
                for group in &rule.api_groups {
                    for resource in &rule.resources {
                        let key = (scope.clone(), group.clone(), resource.clone(), verb.clone());
                        let what = format!("{verb} {group}/{resource} in {scope:?}");
                        match grants.get(&key) {
                            None => return unobserved(what),
                            Some(None) => {}
                            Some(Some(names)) => {
                                if rule.resource_names.is_empty() {
                                    return unobserved(format!("{what}, every name"));
                                }
                                if let Some(n) =
                                    rule.resource_names.iter().find(|n| !names.contains(*n))
                                {
                                    return unobserved(format!("{what} named {n}"));
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    // Bindings of the suggestion reference only its roles and bind only the user.
    for b in suggestion
        .role_bindings
        .iter()
        .chain(&suggestion.cluster_role_bindings)
    {
        let ns = b.namespace.clone().unwrap_or_default();
        if b.subjects
            .iter()
            .any(|s| s.service_account_user(&ns).as_deref() != Some(user.name.as_str()))
        {
            return unobserved(format!("binding {} to another subject", b.display_name()));
        }
    }
    Ok(())
}

/// The suggestion as Kubernetes YAML documents (`---` separated).
///
/// # Errors
/// serde's error (not expected for these types).
pub fn to_yaml(objects: &RbacObjects) -> Result<String, serde_yaml_ng::Error> {
    let mut out = String::new();
    let meta = |name: &str, ns: Option<&String>| {
        let mut m = serde_yaml_ng::Mapping::new();
        m.insert("name".into(), name.into());
        if let Some(ns) = ns {
            m.insert("namespace".into(), ns.as_str().into());
        }
        serde_yaml_ng::Value::Mapping(m)
    };
    let mut push = |kind: &str,
                    name: &str,
                    ns: Option<&String>,
                    body: Vec<(&str, serde_yaml_ng::Value)>|
     -> Result<(), serde_yaml_ng::Error> {
        let mut doc = serde_yaml_ng::Mapping::new();
        doc.insert("apiVersion".into(), "rbac.authorization.k8s.io/v1".into());
        doc.insert("kind".into(), kind.into());
        doc.insert("metadata".into(), meta(name, ns));
        for (k, v) in body {
            doc.insert(k.into(), v);
        }
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&doc)?);
        Ok(())
    };
    for (kind, roles) in [
        ("Role", &objects.roles),
        ("ClusterRole", &objects.cluster_roles),
    ] {
        for r in roles {
            push(
                kind,
                &r.name,
                r.namespace.as_ref(),
                vec![("rules", serde_yaml_ng::to_value(&r.rules)?)],
            )?;
        }
    }
    for (kind, bindings) in [
        ("RoleBinding", &objects.role_bindings),
        ("ClusterRoleBinding", &objects.cluster_role_bindings),
    ] {
        for b in bindings {
            push(
                kind,
                &b.name,
                b.namespace.as_ref(),
                vec![
                    ("roleRef", serde_yaml_ng::to_value(&b.role_ref)?),
                    ("subjects", serde_yaml_ng::to_value(&b.subjects)?),
                ],
            )?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(verb: &str, group: &str, resource: &str, ns: &str, name: &str) -> OwnedAttributes {
        OwnedAttributes {
            verb: verb.into(),
            is_resource_request: true,
            namespace: ns.into(),
            api_group: group.into(),
            resource: resource.into(),
            name: name.into(),
            ..OwnedAttributes::default()
        }
    }

    const SA: &str = "system:serviceaccount:shop:web";

    fn user() -> UserInfo {
        UserInfo::service_account("shop", "web")
    }

    #[test]
    fn exact_rules_with_names_and_scopes() {
        let mut exec = res("create", "", "pods", "shop", "db-0");
        exec.subresource = "exec".into();
        let calls = vec![
            res("get", "", "configmaps", "shop", "web-config"),
            res("get", "", "configmaps", "shop", "feature-flags"),
            res("list", "", "pods", "shop", ""),
            res("watch", "", "pods", "shop", ""),
            res("list", "", "nodes", "", ""),
            res("get", "apps", "deployments", "other", ""),
            exec,
            OwnedAttributes {
                verb: "get".into(),
                path: "/metrics".into(),
                ..OwnedAttributes::default()
            },
        ];
        let s = suggest(SA, &calls).unwrap();
        let o = &s.objects;
        assert_eq!(o.roles.len(), 2);
        let shop = o
            .roles
            .iter()
            .find(|r| r.namespace.as_deref() == Some("shop"))
            .unwrap();
        assert!(shop.rules.iter().any(|r| r.resources == ["configmaps"]
            && r.verbs == ["get"]
            && r.resource_names == ["feature-flags", "web-config"]));
        assert!(
            shop.rules
                .iter()
                .any(|r| r.resources == ["pods"] && r.verbs == ["list", "watch"])
        );
        assert!(shop.rules.iter().any(|r| r.resources == ["pods/exec"]
            && r.verbs == ["create"]
            && r.resource_names.is_empty()));
        let cluster = &o.cluster_roles[0];
        assert!(
            cluster
                .rules
                .iter()
                .any(|r| r.resources == ["nodes"] && r.verbs == ["list"])
        );
        assert!(
            cluster
                .rules
                .iter()
                .any(|r| r.non_resource_urls == ["/metrics"])
        );
        check(o, &user(), &calls, &RbacObjects::default()).unwrap();
        let yaml = to_yaml(o).unwrap();
        assert!(yaml.contains("kind: RoleBinding") && yaml.contains("resourceNames:"));
        // The YAML is importable RBAC that gives the same objects.
        let back = crate::rbac::import::import_str("s.yaml", &yaml).unwrap();
        assert_eq!(back.objects.roles.len(), 2);
        assert_eq!(back.objects.cluster_role_bindings.len(), 1);
    }

    #[test]
    fn many_names_or_an_unnamed_call_cover_every_name() {
        let mut calls: Vec<_> = (0..=MAX_NAMES)
            .map(|i| res("get", "", "secrets", "shop", &format!("s{i}")))
            .collect();
        calls.push(res("delete", "", "pods", "shop", "a"));
        calls.push(res("delete", "", "pods", "shop", ""));
        let s = suggest(SA, &calls).unwrap();
        let rules = &s.objects.roles[0].rules;
        assert!(
            rules.iter().all(|r| r.resource_names.is_empty()),
            "{rules:?}"
        );
        check(&s.objects, &user(), &calls, &RbacObjects::default()).unwrap();
    }

    #[test]
    fn wider_suggestions_fail_the_check() {
        let calls = vec![res("get", "", "configmaps", "shop", "web-config")];
        let good = suggest(SA, &calls).unwrap().objects;
        check(&good, &user(), &calls, &RbacObjects::default()).unwrap();
        let widen = |f: &dyn Fn(&mut PolicyRule)| {
            let mut o = good.clone();
            f(&mut o.roles[0].rules[0]);
            check(&o, &user(), &calls, &RbacObjects::default())
        };
        for bad in [
            widen(&|r| r.verbs = vec!["*".into()]),
            widen(&|r| r.resources = vec!["*".into()]),
            widen(&|r| r.verbs.push("list".into())),
            widen(&|r| r.resource_names.clear()),
            widen(&|r| r.resource_names.push("other".into())),
            widen(&|r| r.resources.push("secrets".into())),
        ] {
            assert!(
                matches!(bad, Err(SuggestError::GrantUnobserved { .. })),
                "{bad:?}"
            );
        }
        // A Role moved to another namespace both denies the call and grants too much.
        let mut o = good.clone();
        o.roles[0].namespace = Some("other".into());
        o.role_bindings[0].namespace = Some("other".into());
        assert!(check(&o, &user(), &calls, &RbacObjects::default()).is_err());
        // Narrower: denies an observed call.
        let mut o = good;
        o.roles[0].rules[0].resource_names = vec!["nope".into()];
        assert!(matches!(
            check(&o, &user(), &calls, &RbacObjects::default()),
            Err(SuggestError::DenyObservedCall { .. })
        ));
        assert!(matches!(
            suggest("alice", &calls),
            Err(SuggestError::ParseServiceAccount { .. })
        ));
    }

    #[test]
    fn substitute_removes_only_the_subjects_own_bindings() {
        let current = RbacObjects {
            cluster_role_bindings: vec![Binding {
                name: "admin".into(),
                namespace: None,
                role_ref: RoleRef {
                    api_group: RBAC_GROUP.into(),
                    kind: KIND_CLUSTER_ROLE.into(),
                    name: "cluster-admin".into(),
                },
                subjects: vec![
                    Subject {
                        kind: KIND_SERVICE_ACCOUNT.into(),
                        name: "web".into(),
                        namespace: "shop".into(),
                        ..Subject::default()
                    },
                    Subject {
                        kind: KIND_SERVICE_ACCOUNT.into(),
                        name: "other".into(),
                        namespace: "shop".into(),
                        ..Subject::default()
                    },
                ],
            }],
            ..RbacObjects::default()
        };
        let out = substitute(&current, SA, &RbacObjects::default());
        assert_eq!(out.cluster_role_bindings[0].subjects.len(), 1);
        assert_eq!(out.cluster_role_bindings[0].subjects[0].name, "other");
    }
}
