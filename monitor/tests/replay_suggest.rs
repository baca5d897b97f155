//! `replay --suggest-roles` on Kubernetes' default RBAC policy plus a
//! ServiceAccount bound to the aggregated `edit` ClusterRole: the suggested
//! roles, put in place of its binding, allow every call it was allowed and
//! nothing else (probed with the authorizer and by replaying the log again),
//! and the report says which dangerous permissions `edit` gave it unused.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use serde_json::{Value, json};
use tokenwatch_core::rbac::{Attributes, Authorizer, Snapshot, UserInfo, import};
use tokenwatch_core::replay::decide::Policy;
use tokenwatch_core::replay::{Options, replay, roles};

const SA: &str = "system:serviceaccount:shop:web";

fn bootstrap() -> Vec<PathBuf> {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/k8s-bootstrap-rbac");
    [
        "cluster-roles.yaml",
        "cluster-role-bindings.yaml",
        "namespace-roles.yaml",
        "namespace-role-bindings.yaml",
        "controller-roles-featuregates.yaml",
        "controller-role-bindings.yaml",
    ]
    .iter()
    .map(|f| dir.join(f))
    .collect()
}

const EDIT_BINDING: &str = "apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: web-edit, namespace: shop}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: edit}
subjects:
- {kind: ServiceAccount, name: web, namespace: shop}
";

fn call(second: u32, verb: &str, uri: &str, object_ref: Value) -> Value {
    json!({
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
        "auditID": format!("a-{second}"), "stage": "ResponseComplete",
        "requestURI": uri, "verb": verb,
        "user": {"username": SA, "groups": ["system:serviceaccounts", "system:serviceaccounts:shop", "system:authenticated"]},
        "sourceIPs": ["10.244.1.5"], "objectRef": object_ref,
        "responseStatus": {"metadata": {}, "code": 200},
        "requestReceivedTimestamp": format!("2025-06-01T10:00:{second:02}.000000Z"),
        "stageTimestamp": format!("2025-06-01T10:00:{second:02}.000000Z"),
        "annotations": {"authorization.k8s.io/decision": "allow", "authorization.k8s.io/reason": "RBAC: allowed by RoleBinding \"web-edit/shop\" of ClusterRole \"edit\" to ServiceAccount \"web/shop\""}
    })
}

fn log(dir: &Path) -> PathBuf {
    let events = [
        call(
            1,
            "get",
            "/api/v1/namespaces/shop/configmaps/web-config",
            json!({"resource": "configmaps", "namespace": "shop", "name": "web-config", "apiVersion": "v1"}),
        ),
        call(
            2,
            "list",
            "/api/v1/namespaces/shop/pods",
            json!({"resource": "pods", "namespace": "shop", "apiVersion": "v1"}),
        ),
        call(
            3,
            "watch",
            "/api/v1/namespaces/shop/pods?watch=1",
            json!({"resource": "pods", "namespace": "shop", "apiVersion": "v1"}),
        ),
        call(
            4,
            "patch",
            "/apis/apps/v1/namespaces/shop/deployments/web/scale",
            json!({"resource": "deployments", "subresource": "scale", "namespace": "shop", "name": "web", "apiGroup": "apps", "apiVersion": "v1"}),
        ),
        call(
            5,
            "create",
            "/api/v1/namespaces/shop/events",
            json!({"resource": "events", "namespace": "shop", "apiVersion": "v1"}),
        ),
        call(
            6,
            "get",
            "/api/v1/namespaces/shop/configmaps/web-config",
            json!({"resource": "configmaps", "namespace": "shop", "name": "web-config", "apiVersion": "v1"}),
        ),
        // Discovery: a non-resource URL every authenticated user may get.
        call(7, "get", "/apis", Value::Null),
    ];
    let path = dir.join("audit.log");
    std::fs::write(
        &path,
        events.iter().map(|e| format!("{e}\n")).collect::<String>(),
    )
    .unwrap();
    path
}

#[test]
fn suggestion_allows_exactly_the_observed_calls() {
    let dir = tempfile::tempdir().unwrap();
    let binding = dir.path().join("web-edit.yaml");
    std::fs::write(&binding, EDIT_BINDING).unwrap();
    let audit = log(dir.path());
    let mut files = bootstrap();
    files.push(binding.clone());
    let mut policy = Policy::from_files(&files, "default").expect("policy");
    let options = Options {
        audits: vec![audit.clone()],
        collect_calls: true,
        ..Options::default()
    };
    let report = replay(&options, &mut policy, &mut |_| {}).expect("replay");
    assert_eq!(report.stats.drift, 0, "edit allows every call");
    let suggestions = roles::suggest_roles(&report, &policy);
    assert_eq!(suggestions.len(), 1, "{suggestions:?}");
    let s = &suggestions[0];
    assert_eq!(
        (s.subject.as_str(), s.calls, s.check.as_str()),
        (SA, 6, "ok")
    );
    // Side by side: edit gives dangerous permissions it never used.
    assert!(
        s.hints
            .iter()
            .any(|h| h.contains("read-secrets") && h.contains("RoleBinding/shop/web-edit")),
        "{:?}",
        s.hints
    );
    assert!(
        s.held
            .iter()
            .any(|h| h.check == "create-pods" && h.used == 0)
    );

    // The YAML imports, and in place of web-edit it allows the observed calls ...
    let yaml = roles::to_yaml(&suggestions);
    let suggested = import::import_str("suggested.yaml", &yaml).expect("suggestion imports");
    assert_eq!(suggested.objects.cluster_roles.len(), 1);
    assert_eq!(
        suggested.objects.cluster_roles[0].rules[0].non_resource_urls,
        ["/apis"],
        "the one call outside a namespace"
    );
    let base = import::import_paths(&bootstrap(), "default")
        .unwrap()
        .objects;
    let mut objects = base.clone();
    objects.roles.extend(suggested.objects.roles.clone());
    objects
        .role_bindings
        .extend(suggested.objects.role_bindings.clone());
    let authz = Authorizer::new(Arc::new(Snapshot::build(objects)));
    let user = UserInfo::service_account("shop", "web");
    for a in [
        Attributes::resource("get", "", "configmaps", "shop", "web-config"),
        Attributes::resource("list", "", "pods", "shop", ""),
        Attributes::resource("watch", "", "pods", "shop", ""),
        Attributes::resource("patch", "apps", "deployments", "shop", "web")
            .with_subresource("scale"),
        Attributes::resource("create", "", "events", "shop", ""),
    ] {
        assert!(authz.decide(&a, &user).allowed, "{a:?}");
    }
    // ... and nothing the log did not show.
    for a in [
        Attributes::resource("get", "", "secrets", "shop", "db"),
        Attributes::resource("list", "", "configmaps", "shop", ""),
        Attributes::resource("get", "", "configmaps", "shop", "other"),
        Attributes::resource("get", "", "pods", "shop", "web-0"),
        Attributes::resource("list", "", "pods", "default", ""),
        Attributes::resource("patch", "apps", "deployments", "shop", "web"),
        Attributes::resource("patch", "apps", "deployments", "shop", "db")
            .with_subresource("scale"),
        Attributes::resource("create", "", "pods", "shop", ""),
        Attributes::resource("create", "", "pods", "shop", "web-0").with_subresource("exec"),
        Attributes::resource("delete", "", "events", "shop", "e"),
    ] {
        assert!(!authz.decide(&a, &user).allowed, "{a:?}");
    }

    // The binary, twice: the suggestion, then the same log replayed against
    // the defaults plus the suggestion (no web-edit): no drift.
    let out = Command::new(env!("CARGO_BIN_EXE_tokenwatch"))
        .args(["replay", "--no-progress", "--suggest-roles", "--audit"])
        .arg(&audit)
        .args(
            bootstrap()
                .iter()
                .flat_map(|f| [std::ffi::OsString::from("--rbac"), f.clone().into()]),
        )
        .arg("--rbac")
        .arg(&binding)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("# system:serviceaccount:shop:web: 6 distinct allowed calls"),
        "{text}"
    );
    assert!(
        text.contains("kind: Role\n") && text.contains("resourceNames:"),
        "{text}"
    );
    let file = dir.path().join("suggested.yaml");
    std::fs::write(&file, &text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tokenwatch"))
        .args(["replay", "--no-progress", "-o", "json", "--audit"])
        .arg(&audit)
        .args(
            bootstrap()
                .iter()
                .flat_map(|f| [std::ffi::OsString::from("--rbac"), f.clone().into()]),
        )
        .arg("--rbac")
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success());
    let stats: Value = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["type"] == "stats")
        .unwrap();
    assert_eq!(
        (stats["agree"].as_u64(), stats["drift"].as_u64()),
        (Some(7), Some(0)),
        "{stats}"
    );

    // -o json carries the same suggestion.
    let out = Command::new(env!("CARGO_BIN_EXE_tokenwatch"))
        .args([
            "replay",
            "--no-progress",
            "--suggest-roles",
            "-o",
            "json",
            "--audit",
        ])
        .arg(&audit)
        .args(
            bootstrap()
                .iter()
                .flat_map(|f| [std::ffi::OsString::from("--rbac"), f.clone().into()]),
        )
        .arg("--rbac")
        .arg(&binding)
        .output()
        .unwrap();
    let line: Value =
        serde_json::from_slice(out.stdout.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(
        (line["type"].as_str(), line["check"].as_str()),
        (Some("suggestion"), Some("ok"))
    );
    assert_eq!(line["objects"]["roles"][0]["namespace"], "shop");
}
