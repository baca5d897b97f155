//! Table tests for the authorizer, after the Go tests of
//! `plugin/pkg/auth/authorizer/rbac/rbac_test.go` (TestAuthorizer,
//! TestRuleMatches), `pkg/apis/rbac/v1/evaluation_helpers_test.go` and
//! `pkg/registry/rbac/validation/rule_test.go` (appliesTo, describers).

use tokenwatch_core::rbac::authorizer::{
    GoQuoted, Wildcards, decide, non_resource_url_matches, resource_matches, rule_allows,
    subject_applies,
};
use tokenwatch_core::rbac::model::{Binding, PolicyRule, RbacObjects, Role, RoleRef, Subject};
use tokenwatch_core::rbac::{Attributes, Authorizer, Snapshot, UserInfo};

fn list(s: &str) -> Vec<String> {
    if s.is_empty() {
        Vec::new()
    } else {
        s.split(',').map(str::to_owned).collect()
    }
}

/// `newRule(verbs, apiGroups, resources, nonResourceURLs)` of the Go test.
fn rule(verbs: &str, groups: &str, resources: &str, urls: &str) -> PolicyRule {
    PolicyRule {
        verbs: list(verbs),
        api_groups: groups.split(',').map(str::to_owned).collect(),
        resources: list(resources),
        resource_names: Vec::new(),
        non_resource_urls: list(urls),
    }
}

fn cluster_role(name: &str, rules: Vec<PolicyRule>) -> Role {
    Role {
        name: name.into(),
        rules,
        ..Role::default()
    }
}

fn role(ns: &str, name: &str, rules: Vec<PolicyRule>) -> Role {
    Role {
        name: name.into(),
        namespace: Some(ns.into()),
        rules,
        ..Role::default()
    }
}

/// Subjects as `Kind:name` or `ServiceAccount:ns:name`.
fn subjects(specs: &[&str]) -> Vec<Subject> {
    specs
        .iter()
        .map(|s| {
            let (kind, rest) = s.split_once(':').unwrap();
            let (namespace, name) = if kind == "ServiceAccount" {
                rest.split_once(':')
                    .map_or((String::new(), rest.to_owned()), |(n, m)| {
                        (n.to_owned(), m.to_owned())
                    })
            } else {
                (String::new(), rest.to_owned())
            };
            Subject {
                kind: kind.into(),
                api_group: String::new(),
                name,
                namespace,
            }
        })
        .collect()
}

fn crb(name: &str, role: &str, subs: &[&str]) -> Binding {
    Binding {
        name: name.into(),
        namespace: None,
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: role.into(),
        },
        subjects: subjects(subs),
    }
}

fn rb(ns: &str, name: &str, kind: &str, role: &str, subs: &[&str]) -> Binding {
    Binding {
        name: name.into(),
        namespace: Some(ns.into()),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: kind.into(),
            name: role.into(),
        },
        subjects: subjects(subs),
    }
}

fn user(name: &str, groups: &str) -> UserInfo {
    UserInfo::new(name, list(groups))
}

/// (user, groups, verb, resource, subresource, namespace, apiGroup)
type Case<'a> = (
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
);

fn check(snapshot: &Snapshot, pass: &[Case<'_>], fail: &[Case<'_>]) {
    for (want, cases) in [(true, pass), (false, fail)] {
        for &(u, g, verb, resource, sub, ns, group) in cases {
            let user = user(u, g);
            let attrs = Attributes::resource(verb, group, resource, ns, "").with_subresource(sub);
            let d = decide(snapshot, &attrs, &user);
            assert_eq!(
                d.allowed, want,
                "{u} [{g}] {verb} {resource}/{sub} in {ns:?}"
            );
            // The allowing rule's `*`s, read from its filter, are the
            // rule's own.
            assert_eq!(d.wildcards(), d.rule().map(Wildcards::of));
        }
    }
}

#[test]
fn authorizer_role_binding_to_cluster_role() {
    let snapshot = Snapshot::build(RbacObjects {
        cluster_roles: vec![cluster_role("admin", vec![rule("*", "*", "*", "*")])],
        role_bindings: vec![rb(
            "ns1",
            "b",
            "ClusterRole",
            "admin",
            &["User:admin", "Group:admins"],
        )],
        ..RbacObjects::default()
    });
    check(
        &snapshot,
        &[
            ("admin", "", "get", "Pods", "", "ns1", ""),
            ("admin", "", "watch", "Pods", "", "ns1", ""),
            ("admin", "group1", "watch", "Foobar", "", "ns1", ""),
            ("joe", "admins", "watch", "Foobar", "", "ns1", ""),
            ("joe", "group1,admins", "watch", "Foobar", "", "ns1", ""),
        ],
        &[
            ("admin", "", "GET", "Pods", "", "ns2", ""),
            ("admin", "", "GET", "Nodes", "", "", ""),
            ("admin", "admins", "GET", "Pods", "", "ns2", ""),
            ("admin", "admins", "GET", "Nodes", "", "", ""),
        ],
    );
}

#[test]
fn authorizer_non_resource_urls() {
    let snapshot = Snapshot::build(RbacObjects {
        cluster_roles: vec![
            cluster_role(
                "non-resource-url-getter",
                vec![rule("get", "", "", "/apis")],
            ),
            cluster_role("non-resource-url", vec![rule("*", "", "", "/apis")]),
            cluster_role(
                "non-resource-url-prefix",
                vec![rule("get", "", "", "/apis/*")],
            ),
        ],
        cluster_role_bindings: vec![
            crb("a", "non-resource-url-getter", &["User:foo", "Group:bar"]),
            crb("b", "non-resource-url", &["User:admin", "Group:admin"]),
            crb(
                "c",
                "non-resource-url-prefix",
                &["User:prefixed", "Group:prefixed"],
            ),
        ],
        ..RbacObjects::default()
    });
    let pass = [
        ("foo", "", "get", "/apis"),
        ("", "bar", "get", "/apis"),
        ("admin", "", "get", "/apis"),
        ("", "admin", "get", "/apis"),
        ("admin", "", "watch", "/apis"),
        ("", "admin", "watch", "/apis"),
        ("prefixed", "", "get", "/apis/v1"),
        ("", "prefixed", "get", "/apis/v1"),
        ("prefixed", "", "get", "/apis/v1/foobar"),
        ("", "prefixed", "get", "/apis/v1/foorbar"),
    ];
    let fail = [
        ("foo", "", "watch", "/apis"),
        ("", "bar", "watch", "/apis"),
        ("foo", "", "get", "/api/v1"),
        ("", "bar", "get", "/api/v1"),
        ("admin", "", "get", "/api/v1"),
        ("", "admin", "get", "/api/v1"),
        ("prefixed", "", "get", "/api/v1"),
        ("", "prefixed", "get", "/api/v1"),
    ];
    for (want, cases) in [(true, &pass[..]), (false, &fail[..])] {
        for &(u, g, verb, path) in cases {
            let user = user(u, g);
            let d = decide(&snapshot, &Attributes::non_resource(verb, path), &user);
            assert_eq!(d.allowed, want, "{u} [{g}] {verb} {path}");
        }
    }
}

#[test]
fn authorizer_subresource_resolution() {
    let whole = Snapshot::build(RbacObjects {
        cluster_roles: vec![cluster_role("admin", vec![rule("*", "*", "pods", "*")])],
        role_bindings: vec![rb(
            "ns1",
            "b",
            "ClusterRole",
            "admin",
            &["User:admin", "Group:admins"],
        )],
        ..RbacObjects::default()
    });
    check(
        &whole,
        &[("admin", "", "get", "pods", "", "ns1", "")],
        &[("admin", "", "get", "pods", "status", "ns1", "")],
    );
    let status = Snapshot::build(RbacObjects {
        cluster_roles: vec![cluster_role(
            "admin",
            vec![rule("*", "*", "pods/status", "*")],
        )],
        role_bindings: vec![rb(
            "ns1",
            "b",
            "ClusterRole",
            "admin",
            &["User:admin", "Group:admins"],
        )],
        ..RbacObjects::default()
    });
    check(
        &status,
        &[("admin", "", "get", "pods", "status", "ns1", "")],
        &[("admin", "", "get", "pods", "", "ns1", "")],
    );
}

fn res(
    verb: &'static str,
    group: &'static str,
    resource: &'static str,
    sub: &'static str,
) -> Attributes<'static> {
    Attributes::resource(verb, group, resource, "", "").with_subresource(sub)
}

#[test]
fn rule_matches_table() {
    // TestRuleMatches: (rule, [(request, expected)]).
    let star_verb = rule("*", "group1", "resource1", "");
    let star_group = rule("verb1", "*", "resource1", "");
    let star_resource = rule("verb1", "group1", "*", "");
    let tuples = rule("verb1,verb2", "group1,group2", "resource1,resource2", "");
    let sub = rule("*", "*", "resource1/subresource1", "");
    for (verb, group, resource, want_star_verb, want_star_group, want_star_resource) in [
        ("verb1", "group1", "resource1", true, true, true),
        ("verb1", "group2", "resource1", false, true, false),
        ("verb1", "group1", "resource2", false, false, true),
        ("verb1", "group2", "resource2", false, false, false),
        ("verb2", "group1", "resource1", true, false, false),
        ("verb2", "group2", "resource1", false, false, false),
        ("verb2", "group1", "resource2", false, false, false),
        ("verb2", "group2", "resource2", false, false, false),
    ] {
        let a = res(verb, group, resource, "");
        assert_eq!(
            rule_allows(&a, &star_verb),
            want_star_verb,
            "star verb {a:?}"
        );
        assert_eq!(
            rule_allows(&a, &star_group),
            want_star_group,
            "star group {a:?}"
        );
        assert_eq!(
            rule_allows(&a, &star_resource),
            want_star_resource,
            "star resource {a:?}"
        );
        assert!(rule_allows(&a, &tuples), "tuple expansion {a:?}");
    }
    for (verb, group, resource, subresource, want) in [
        ("verb1", "group1", "resource1", "subresource1", true),
        ("verb1", "group2", "resource1", "subresource2", false),
        ("verb1", "group1", "resource2", "subresource1", false),
        ("verb1", "group2", "resource2", "subresource1", false),
        ("verb2", "group1", "resource1", "subresource1", true),
        ("verb2", "group2", "resource1", "subresource2", false),
        ("verb2", "group1", "resource2", "subresource1", false),
        ("verb2", "group2", "resource2", "subresource1", false),
    ] {
        assert_eq!(
            rule_allows(&res(verb, group, resource, subresource), &sub),
            want,
            "{resource}/{subresource}"
        );
    }
    let star_url = rule("verb1", "", "", "*");
    let subpath = rule("verb1", "", "", "/foo/*");
    let exact = rule("*", "", "", "/foo,/foo/bar/one");
    for (verb, url, want_star, want_subpath, want_exact) in [
        ("verb1", "/foo", true, false, true),
        ("verb1", "/foo/bar", true, true, false),
        ("verb1", "/foo/baz", true, true, false),
        ("verb1", "/foo/bar/one", true, true, true),
        ("verb1", "/foo/baz/one", true, true, false),
        ("verb1", "/notfoo", true, false, false),
        ("verb1", "/notfoo/bar", true, false, false),
        ("verb2", "/foo", false, false, true),
        ("verb2", "/foo/bar/one", false, false, true),
        ("verb2", "/foo/baz/one", false, false, false),
    ] {
        let a = Attributes::non_resource(verb, url);
        assert_eq!(rule_allows(&a, &star_url), want_star, "* {verb} {url}");
        assert_eq!(
            rule_allows(&a, &subpath),
            want_subpath,
            "/foo/* {verb} {url}"
        );
        assert_eq!(rule_allows(&a, &exact), want_exact, "exact {verb} {url}");
    }
}

#[test]
fn evaluation_helpers() {
    // ResourceMatches: */subresource, exact combined, no partial globs.
    let scale = rule("get", "*", "*/scale", "");
    assert!(resource_matches(&scale, "deployments", "scale"));
    assert!(resource_matches(&scale, "replicasets", "scale"));
    assert!(!resource_matches(&scale, "deployments", ""));
    assert!(!resource_matches(&scale, "deployments", "status"));
    assert!(
        !resource_matches(&scale, "deployments", "xscale"),
        "length must match exactly"
    );
    let combined = rule("get", "*", "pods/log", "");
    assert!(resource_matches(&combined, "pods", "log"));
    assert!(!resource_matches(&combined, "pods", ""));
    assert!(!resource_matches(&combined, "pod", "s/log"));
    let star_sub = rule("get", "*", "pods/*", "");
    assert!(
        !resource_matches(&star_sub, "pods", "log"),
        "`pods/*` is not a glob"
    );
    // Case-sensitive everywhere.
    assert!(!resource_matches(&rule("get", "*", "pods", ""), "Pods", ""));
    // NonResourceURLMatches trims every trailing `*`; only a trailing one globs.
    let stars = rule("get", "", "", "/foo**");
    assert!(non_resource_url_matches(&stars, "/foobar"));
    assert!(!non_resource_url_matches(
        &rule("get", "", "", "/foo/*/bar"),
        "/foo/x/bar"
    ));
    assert!(non_resource_url_matches(
        &rule("get", "", "", "/foo/*/bar"),
        "/foo/*/bar"
    ));
    // ResourceNameMatches.
    let named = PolicyRule {
        resource_names: list("a,b"),
        ..rule("get", "", "configmaps", "")
    };
    assert!(rule_allows(
        &Attributes::resource("get", "", "configmaps", "ns", "a"),
        &named
    ));
    assert!(!rule_allows(
        &Attributes::resource("get", "", "configmaps", "ns", "c"),
        &named
    ));
    assert!(
        !rule_allows(
            &Attributes::resource("list", "", "configmaps", "ns", ""),
            &named
        ),
        "names never match a list"
    );
    // A resource rule never allows a non-resource request and the reverse.
    assert!(!rule_allows(
        &Attributes::non_resource("get", "/api"),
        &rule("get", "*", "*", "")
    ));
    assert!(!rule_allows(
        &res("get", "", "pods", ""),
        &rule("get", "", "", "*")
    ));
    // Empty verbs/groups match nothing.
    assert!(!rule_allows(
        &res("get", "", "pods", ""),
        &rule("", "", "pods", "")
    ));
}

#[test]
fn applies_to_subjects() {
    // rule_test.go TestAppliesTo, adapted: (subjects, user, groups, namespace, applies).
    let cases: &[(&[&str], &str, &str, &str, bool)] = &[
        (&["User:foobar"], "foobar", "", "", true),
        (&["User:foobar"], "foo", "", "", false),
        (&["Group:foobar"], "foo", "foobar", "", true),
        (&["Group:foobar"], "foobar", "foo", "", false),
        (
            &["ServiceAccount:kube-system:default"],
            "system:serviceaccount:kube-system:default",
            "",
            "",
            true,
        ),
        (
            &["ServiceAccount:kube-system:default"],
            "system:serviceaccount:default:default",
            "",
            "",
            false,
        ),
        (
            &["ServiceAccount:default"],
            "system:serviceaccount:kube-system:default",
            "",
            "kube-system",
            true,
        ),
        (
            &["ServiceAccount:default"],
            "system:serviceaccount:kube-system:default",
            "",
            "",
            false,
        ),
        (
            &["ServiceAccount:default"],
            "system:serviceaccount:kube-system:default",
            "",
            "other",
            false,
        ),
        (
            &["ServiceAccount:kube-system:default"],
            "system:serviceaccount:kube-system:defaultx",
            "",
            "",
            false,
        ),
        (&["Unknown:foobar"], "foobar", "foobar", "ns", false),
    ];
    for &(subs, u, g, ns, want) in cases {
        let user = user(u, g);
        let got = subjects(subs).iter().any(|s| subject_applies(&user, s, ns));
        assert_eq!(got, want, "{subs:?} {u} [{g}] in {ns:?}");
    }
}

fn policy_with_missing() -> Snapshot {
    Snapshot::build(RbacObjects {
        cluster_roles: vec![cluster_role(
            "reader",
            vec![rule("get,list", "", "pods", "")],
        )],
        roles: vec![role(
            "ns1",
            "local",
            vec![rule("get", "", "configmaps", "")],
        )],
        cluster_role_bindings: vec![
            crb("z-reader", "reader", &["Group:readers"]),
            crb(
                "a-reader",
                "reader",
                &["Group:other", "User:jane", "Group:readers"],
            ),
            crb("gone-1", "missing-a", &["User:jane"]),
            crb("gone-2", "missing-b", &["Group:readers"]),
            crb("gone-3", "missing-a", &["Group:readers"]),
            Binding {
                role_ref: RoleRef {
                    kind: "Role".into(),
                    ..crb("x", "local", &[]).role_ref
                },
                ..crb("crb-to-role", "local", &["User:bob"])
            },
        ],
        role_bindings: vec![
            rb(
                "ns1",
                "local",
                "Role",
                "local",
                &["ServiceAccount:sa", "User:jane"],
            ),
            rb("ns1", "weird", "Widget", "x", &["User:carol"]),
            rb(
                "ns1",
                "to-cluster",
                "ClusterRole",
                "reader",
                &["ServiceAccount:ns2:remote"],
            ),
        ],
    })
}

#[test]
fn decisions_rebuilt_from_their_parts_give_the_same_answer_and_reason() {
    let auth = Authorizer::new(std::sync::Arc::new(policy_with_missing()));
    let users = [
        UserInfo::new("jane", list("readers")),
        UserInfo::new("jane", vec![]),
        UserInfo::new("bob", list("readers")),
        UserInfo::service_account("ns1", "sa"),
        UserInfo::service_account("ns2", "remote"),
    ];
    let mut reasons = std::collections::BTreeSet::new();
    for user in &users {
        for verb in ["get", "list", "delete"] {
            for resource in ["pods", "configmaps", "secrets"] {
                for ns in ["", "ns1", "ns2"] {
                    let attrs = Attributes::resource(verb, "", resource, ns, "x");
                    let d = auth.decide(&attrs, user);
                    let rebuilt = auth.decision(d.parts(), &attrs, user);
                    assert_eq!(rebuilt.parts(), d.parts());
                    assert_eq!(rebuilt.allowed, d.allowed);
                    let reason = d.reason().to_string();
                    assert_eq!(
                        rebuilt.reason().to_string(),
                        reason,
                        "{verb} {resource} in {ns:?}"
                    );
                    reasons.insert(reason);
                }
            }
        }
    }
    // Allows, a denial without errors, and denials naming missing roles.
    assert!(reasons.iter().any(|r| r.starts_with("RBAC: allowed by ")));
    assert!(reasons.contains(""));
    assert!(reasons.iter().any(|r| r.contains("not found")));
}

#[test]
fn reasons_match_the_api_server() {
    let s = policy_with_missing();
    let jane = UserInfo::new("jane", list("readers"));
    let d = decide(
        &s,
        &Attributes::resource("list", "", "pods", "ns1", ""),
        &jane,
    );
    assert!(d.allowed);
    // The first binding by name, and its first subject that applies.
    assert_eq!(
        d.reason().to_string(),
        r#"RBAC: allowed by ClusterRoleBinding "a-reader" of ClusterRole "reader" to User "jane""#
    );
    assert_eq!(d.binding().unwrap().name, "a-reader");
    assert_eq!(d.role().unwrap().name, "reader");

    let d = decide(
        &s,
        &Attributes::resource("get", "", "configmaps", "ns1", "x"),
        &jane,
    );
    assert_eq!(
        d.reason().to_string(),
        r#"RBAC: allowed by RoleBinding "local/ns1" of Role "local" to User "jane""#
    );
    let sa = UserInfo::service_account("ns1", "sa");
    let d = decide(
        &s,
        &Attributes::resource("get", "", "configmaps", "ns1", ""),
        &sa,
    );
    assert_eq!(
        d.reason().to_string(),
        r#"RBAC: allowed by RoleBinding "local/ns1" of Role "local" to ServiceAccount "sa/ns1""#
    );
    let remote = UserInfo::service_account("ns2", "remote");
    let d = decide(
        &s,
        &Attributes::resource("get", "", "pods", "ns1", ""),
        &remote,
    );
    assert_eq!(
        d.reason().to_string(),
        r#"RBAC: allowed by RoleBinding "to-cluster/ns1" of ClusterRole "reader" to ServiceAccount "remote/ns2""#
    );
    assert!(
        !decide(
            &s,
            &Attributes::resource("get", "", "pods", "ns2", ""),
            &remote
        )
        .allowed
    );

    // Denied: the distinct errors of applying bindings, bracketed when more than one.
    let d = decide(
        &s,
        &Attributes::resource("delete", "", "pods", "", ""),
        &jane,
    );
    assert!(!d.allowed);
    assert_eq!(
        d.reason().to_string(),
        r#"RBAC: [clusterrole.rbac.authorization.k8s.io "missing-a" not found, clusterrole.rbac.authorization.k8s.io "missing-b" not found]"#
    );
    let only_a = UserInfo::new("jane", vec![]);
    assert_eq!(
        decide(
            &s,
            &Attributes::resource("delete", "", "pods", "", ""),
            &only_a
        )
        .reason()
        .to_string(),
        r#"RBAC: clusterrole.rbac.authorization.k8s.io "missing-a" not found"#
    );
    // A ClusterRoleBinding naming a Role looks it up with no namespace: not found.
    let bob = UserInfo::new("bob", vec![]);
    assert_eq!(
        decide(
            &s,
            &Attributes::resource("get", "", "configmaps", "ns1", ""),
            &bob
        )
        .reason()
        .to_string(),
        r#"RBAC: role.rbac.authorization.k8s.io "local" not found"#
    );
    let carol = UserInfo::new("carol", vec![]);
    assert_eq!(
        decide(
            &s,
            &Attributes::resource("get", "", "configmaps", "ns1", ""),
            &carol
        )
        .reason()
        .to_string(),
        r#"RBAC: unsupported role reference kind: "Widget""#
    );
    // RoleBindings are not consulted without a namespace.
    assert_eq!(
        decide(
            &s,
            &Attributes::resource("get", "", "configmaps", "", ""),
            &carol
        )
        .reason()
        .to_string(),
        ""
    );
    // Nobody: empty reason.
    let nobody = UserInfo::new("nobody", vec![]);
    assert_eq!(
        decide(
            &s,
            &Attributes::resource("get", "", "pods", "ns1", ""),
            &nobody
        )
        .reason()
        .to_string(),
        ""
    );
    // Errors follow binding-name order (gone-2 before gone-3).
    let dup = UserInfo::new("x", list("readers,other"));
    let d = decide(
        &s,
        &Attributes::resource("delete", "", "pods", "", ""),
        &dup,
    );
    assert_eq!(
        d.reason().to_string(),
        r#"RBAC: [clusterrole.rbac.authorization.k8s.io "missing-b" not found, clusterrole.rbac.authorization.k8s.io "missing-a" not found]"#
    );
}

#[test]
fn go_quoting() {
    assert_eq!(GoQuoted("a\"b\\c").to_string(), r#""a\"b\\c""#);
    assert_eq!(GoQuoted("tab\there\n").to_string(), r#""tab\there\n""#);
    assert_eq!(GoQuoted("\u{1}é").to_string(), "\"\\x01é\"");
}

#[test]
fn impersonation_groups() {
    let sa = UserInfo::impersonated("system:serviceaccount:ns:name", &[]);
    assert_eq!(
        sa.groups,
        [
            "system:serviceaccounts",
            "system:serviceaccounts:ns",
            "system:authenticated"
        ]
    );
    assert_eq!(sa, UserInfo::service_account("ns", "name"));
    let sa_with = UserInfo::impersonated("system:serviceaccount:ns:name", &["g".into()]);
    assert_eq!(
        sa_with.groups,
        ["g", "system:authenticated"],
        "explicit groups replace the SA groups"
    );
    let bad_sa = UserInfo::impersonated("system:serviceaccount:Bad_NS:name", &[]);
    assert_eq!(
        bad_sa.groups,
        ["system:authenticated"],
        "not a valid SA name: a plain user"
    );
    let anon = UserInfo::impersonated("system:anonymous", &[]);
    assert_eq!(anon.groups, ["system:unauthenticated"]);
    let unauth = UserInfo::impersonated("jane", &["system:unauthenticated".into()]);
    assert_eq!(unauth.groups, ["system:unauthenticated"]);
    let jane = UserInfo::impersonated("jane", &["dev".into(), "system:authenticated".into()]);
    assert_eq!(jane.groups, ["dev", "system:authenticated"]);
    assert_eq!(
        UserInfo::service_account("a", "b").service_account_parts(),
        Some(("a", "b"))
    );
}

#[test]
fn snapshot_and_authorizer_are_shareable() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Snapshot>();
    shareable::<tokenwatch_core::rbac::Authorizer>();
}
