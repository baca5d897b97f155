//! The authorizer against Kubernetes' real default policy and real add-on
//! manifests (`tests/fixtures/`).

use std::path::PathBuf;

use tokenwatch_core::rbac::authorizer::decide;
use tokenwatch_core::rbac::import::{Importer, import_paths};
use tokenwatch_core::rbac::model::ALL;
use tokenwatch_core::rbac::risk::{Check, assess};
use tokenwatch_core::rbac::snapshot::RoleResolution;
use tokenwatch_core::rbac::who_can::{NamespaceScope, who_can};
use tokenwatch_core::rbac::{Attributes, Snapshot, UserInfo};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// The default policy: the consistent cluster-roles/bindings pair, the
/// namespace roles/bindings pair, and the controller roles that the newest
/// controller bindings refer to (SOURCES.md explains the version skew).
const DEFAULT_POLICY: [&str; 6] = [
    "cluster-roles.yaml",
    "cluster-role-bindings.yaml",
    "namespace-roles.yaml",
    "namespace-role-bindings.yaml",
    "controller-roles-featuregates.yaml",
    "controller-role-bindings.yaml",
];

fn importer_with_defaults() -> Importer {
    let mut importer = Importer::default();
    for f in DEFAULT_POLICY {
        importer
            .add_path(&fixtures().join("k8s-bootstrap-rbac").join(f))
            .unwrap_or_else(|e| panic!("{f}: {e}"));
    }
    importer
}

fn default_policy() -> Snapshot {
    Snapshot::build(importer_with_defaults().finish().objects)
}

const EXTRA_BINDINGS: &str = "
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: viewers, namespace: team}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}
subjects: [{kind: User, name: viewer}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: editors, namespace: team}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: edit}
subjects: [{kind: User, name: editor}]
";

#[test]
fn default_policy_imports_with_the_counts_sources_md_gives() {
    let report = importer_with_defaults().finish();
    let o = &report.objects;
    assert_eq!(o.cluster_roles.len(), 31 + 44);
    assert_eq!(o.cluster_role_bindings.len(), 10 + 38);
    assert_eq!(o.roles.len(), 7);
    assert_eq!(o.role_bindings.len(), 7);
    assert_eq!(report.skipped_total(), 0);
    let s = Snapshot::build(report.objects);
    assert!(s.aggregation().converged);
    // The one controller binding whose role is newer than the role files.
    let missing: Vec<&str> = s
        .bindings()
        .iter()
        .filter(|e| matches!(e.role, RoleResolution::Missing(_)))
        .map(|e| e.binding.name.as_str())
        .collect();
    assert_eq!(missing, ["system:controller:podcheckpoint-controller"]);
}

#[test]
fn aggregated_view_cannot_read_secrets_edit_can() {
    let mut importer = importer_with_defaults();
    importer.add_text("extra.yaml", EXTRA_BINDINGS).unwrap();
    let s = Snapshot::build(importer.finish().objects);
    let view = s.cluster_role("view").unwrap();
    assert!(!view.rules.is_empty(), "view's rules come from aggregation");
    let viewer = UserInfo::impersonated("viewer", &[]);
    let editor = UserInfo::impersonated("editor", &[]);
    let get_secret = Attributes::resource("get", "", "secrets", "team", "db");
    assert!(!decide(&s, &get_secret, &viewer).allowed);
    let d = decide(&s, &get_secret, &editor);
    assert!(d.allowed);
    assert_eq!(
        d.reason().to_string(),
        r#"RBAC: allowed by RoleBinding "editors/team" of ClusterRole "edit" to User "editor""#
    );
    for verb in ["get", "list", "watch"] {
        assert!(
            decide(
                &s,
                &Attributes::resource(verb, "", "pods", "team", ""),
                &viewer
            )
            .allowed,
            "view {verb} pods"
        );
    }
    assert!(
        decide(
            &s,
            &Attributes::resource("list", "apps", "deployments", "team", ""),
            &viewer
        )
        .allowed
    );
    assert!(
        !decide(
            &s,
            &Attributes::resource("create", "apps", "deployments", "team", ""),
            &viewer
        )
        .allowed
    );
    assert!(
        decide(
            &s,
            &Attributes::resource("create", "apps", "deployments", "team", ""),
            &editor
        )
        .allowed
    );
    assert!(
        decide(
            &s,
            &Attributes::resource("create", "", "pods", "team", "").with_subresource("exec"),
            &editor
        )
        .allowed
    );
    assert!(
        !decide(
            &s,
            &Attributes::resource("get", "", "secrets", "other", ""),
            &editor
        )
        .allowed,
        "only in team"
    );
    // edit holds no RBAC write; admin would.
    assert!(
        !decide(
            &s,
            &Attributes::resource(
                "create",
                "rbac.authorization.k8s.io",
                "rolebindings",
                "team",
                ""
            ),
            &editor
        )
        .allowed
    );
}

#[test]
fn service_account_without_bindings_has_only_discovery() {
    let s = default_policy();
    let sa = UserInfo::service_account("default", "lonely");
    let d = decide(&s, &Attributes::non_resource("get", "/api"), &sa);
    assert!(d.allowed);
    assert_eq!(
        d.reason().to_string(),
        r#"RBAC: allowed by ClusterRoleBinding "system:discovery" of ClusterRole "system:discovery" to Group "system:authenticated""#
    );
    let d = decide(&s, &Attributes::non_resource("get", "/healthz"), &sa);
    assert!(d.allowed);
    let role = d.binding().unwrap().role_ref.name.as_str();
    assert!(
        role == "system:discovery" || role == "system:public-info-viewer",
        "{role}"
    );
    assert!(decide(&s, &Attributes::non_resource("get", "/version/"), &sa).allowed);
    assert!(!decide(&s, &Attributes::non_resource("post", "/api"), &sa).allowed);
    assert!(!decide(&s, &Attributes::non_resource("get", "/metrics"), &sa).allowed);
    let d = decide(
        &s,
        &Attributes::resource("list", "", "pods", "default", ""),
        &sa,
    );
    assert!(!d.allowed);
    assert_eq!(d.reason().to_string(), "");
    // system:basic-user: may ask about itself.
    assert!(
        decide(
            &s,
            &Attributes::resource(
                "create",
                "authorization.k8s.io",
                "selfsubjectaccessreviews",
                "",
                ""
            ),
            &sa
        )
        .allowed
    );
    // Anonymous: public-info-viewer only.
    let anon = UserInfo::impersonated("system:anonymous", &[]);
    let d = decide(&s, &Attributes::non_resource("get", "/healthz"), &anon);
    assert_eq!(
        d.reason().to_string(),
        r#"RBAC: allowed by ClusterRoleBinding "system:public-info-viewer" of ClusterRole "system:public-info-viewer" to Group "system:unauthenticated""#
    );
    assert!(!decide(&s, &Attributes::non_resource("get", "/api"), &anon).allowed);
}

#[test]
fn controller_service_accounts_hold_what_their_roles_say() {
    let s = default_policy();
    let mut checked = 0;
    for entry in s.cluster_bindings() {
        let b = &entry.binding;
        if !b.name.starts_with("system:controller:") {
            continue;
        }
        let rules = s.rules(&entry.role);
        for subject in &b.subjects {
            assert_eq!(subject.kind, "ServiceAccount", "{}", b.name);
            let user = UserInfo::service_account(&subject.namespace, &subject.name);
            for rule in rules {
                for verb in &rule.verbs {
                    let verb = if verb == ALL { "get" } else { verb.as_str() };
                    for group in &rule.api_groups {
                        for resource in &rule.resources {
                            let (res, sub) = resource.split_once('/').unwrap_or((resource, ""));
                            let res = if res == ALL { "anything" } else { res };
                            let sub = if sub == ALL { "" } else { sub };
                            let name = rule.resource_names.first().map_or("", String::as_str);
                            for ns in ["", "kube-system", "default"] {
                                let a = Attributes::resource(verb, group, res, ns, name)
                                    .with_subresource(sub);
                                assert!(decide(&s, &a, &user).allowed, "{}: {a:?}", b.name);
                                checked += 1;
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(checked > 1_000, "{checked}");
    let deploy = UserInfo::service_account("kube-system", "deployment-controller");
    assert!(
        decide(
            &s,
            &Attributes::resource("update", "apps", "replicasets", "default", ""),
            &deploy
        )
        .allowed
    );
    assert!(
        !decide(
            &s,
            &Attributes::resource("get", "", "secrets", "default", ""),
            &deploy
        )
        .allowed
    );
    assert!(
        !decide(
            &s,
            &Attributes::resource("create", "", "pods", "default", ""),
            &deploy
        )
        .allowed
    );
    // The same account name in another namespace holds nothing of it.
    let impostor = UserInfo::service_account("default", "deployment-controller");
    assert!(
        !decide(
            &s,
            &Attributes::resource("update", "apps", "replicasets", "default", ""),
            &impostor
        )
        .allowed
    );
    // Its binding's role is missing: no opinion, with the API server's error.
    let pc = UserInfo::service_account("kube-system", "podcheckpoint-controller");
    let d = decide(
        &s,
        &Attributes::resource("get", "", "pods", "default", ""),
        &pc,
    );
    assert_eq!(
        d.reason().to_string(),
        r#"RBAC: clusterrole.rbac.authorization.k8s.io "system:controller:podcheckpoint-controller" not found"#
    );
}

#[test]
fn namespace_roles_bind_in_kube_system_only() {
    let s = default_policy();
    let signer = UserInfo::service_account("kube-system", "bootstrap-signer");
    let a = Attributes::resource("list", "", "secrets", "kube-system", "");
    let d = decide(&s, &a, &signer);
    assert!(d.allowed);
    assert_eq!(
        d.reason().to_string(),
        r#"RBAC: allowed by RoleBinding "system:controller:bootstrap-signer/kube-system" of Role "system:controller:bootstrap-signer" to ServiceAccount "bootstrap-signer/kube-system""#
    );
    assert!(
        !decide(
            &s,
            &Attributes::resource("list", "", "secrets", "default", ""),
            &signer
        )
        .allowed
    );
    assert!(
        !decide(
            &s,
            &Attributes::resource("list", "", "secrets", "", ""),
            &signer
        )
        .allowed
    );
}

#[test]
fn who_can_read_secrets_cluster_wide() {
    let s = default_policy();
    let result = who_can(
        &s,
        &Attributes::resource("get", "", "secrets", "", ""),
        NamespaceScope::Request,
    );
    let names: Vec<String> = result
        .entries
        .iter()
        .map(|e| format!("{} {}", e.kind, e.name))
        .collect();
    assert!(
        names.contains(&"Group system:masters".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"User system:kube-controller-manager".to_owned()),
        "{names:?}"
    );
    assert!(
        !names.iter().any(|n| n.contains("bootstrap-signer")),
        "RoleBindings do not count cluster-wide"
    );
    let ks = who_can(
        &s,
        &Attributes::resource("get", "", "secrets", "kube-system", ""),
        NamespaceScope::Request,
    );
    assert!(
        ks.entries
            .iter()
            .any(|e| e.name == "bootstrap-signer" && e.namespace == "kube-system")
    );
    assert_eq!(
        result.missing_roles,
        ["system:controller:podcheckpoint-controller"]
    );
}

#[test]
fn risk_names_rule_and_binding() {
    let s = default_policy();
    let masters = UserInfo::impersonated("admin", &["system:masters".into()]);
    let findings = assess(&s, &masters);
    let wildcard = findings
        .iter()
        .find(|f| f.check == Check::WildcardVerbs)
        .unwrap();
    assert_eq!(wildcard.binding, "cluster-admin");
    assert_eq!(wildcard.role, "cluster-admin");
    assert_eq!(wildcard.namespace, None);
    let lonely = UserInfo::service_account("default", "lonely");
    assert!(assess(&s, &lonely).is_empty(), "{:?}", assess(&s, &lonely));
    let signer = UserInfo::service_account("kube-system", "bootstrap-signer");
    let f = assess(&s, &signer);
    assert!(f.iter().any(|f| f.check == Check::ReadSecrets && f.namespace.as_deref() == Some("kube-system")), "{f:?}");
    let csr = UserInfo::service_account("kube-system", "certificate-controller");
    assert!(
        assess(&s, &csr)
            .iter()
            .any(|f| f.check == Check::ApproveCsr),
        "{:?}",
        assess(&s, &csr)
    );
}

#[test]
fn real_world_manifests_import_and_aggregate_into_defaults() {
    let rw = fixtures().join("rbac-real-world");
    for dir in [
        "ingress-nginx",
        "prometheus-operator",
        "argo-cd",
        "kube-state-metrics",
        "kops-addons",
    ] {
        let report =
            import_paths(&[rw.join(dir)], "default").unwrap_or_else(|e| panic!("{dir}: {e}"));
        assert!(!report.objects.is_empty(), "{dir}");
        if dir == "ingress-nginx" {
            assert!(
                report.skipped.get("Deployment").is_some_and(|n| *n > 0),
                "{:?}",
                report.skipped
            );
            assert_eq!(report.skipped.get("ServiceAccount"), Some(&2));
        }
    }
    // cert-manager aggregates into the bootstrap view role.
    let mut importer = importer_with_defaults();
    importer
        .add_path(&rw.join("kops-addons/certmanager.io-k8s-1.16.rbac-only.yaml"))
        .unwrap();
    importer.add_text("extra.yaml", EXTRA_BINDINGS).unwrap();
    let s = Snapshot::build(importer.finish().objects);
    let viewer = UserInfo::impersonated("viewer", &[]);
    assert!(
        decide(
            &s,
            &Attributes::resource("list", "cert-manager.io", "certificates", "team", ""),
            &viewer
        )
        .allowed
    );
    assert!(
        !decide(
            &s,
            &Attributes::resource("delete", "cert-manager.io", "certificates", "team", ""),
            &viewer
        )
        .allowed
    );
    // argo-cd's namespace-less Roles land in the import namespace.
    let argo = import_paths(&[rw.join("argo-cd")], "argocd").unwrap();
    assert!(
        argo.objects
            .roles
            .iter()
            .all(|r| r.namespace.as_deref() == Some("argocd"))
    );
}
