//! The RBAC commands through the real binary: output, exit codes, stored
//! snapshots, and the classic ServiceAccount walkthrough.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tokenwatch"));
    c.env_remove("TOKENWATCH_DATA_DIR");
    c
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

const ROLE: &str = "apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: role-example
  namespace: default
rules:
- apiGroups: [\"\"]
  resources: [pods]
  verbs: [get, list]
";

const BINDING: &str = "apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: rolebinding-example
  namespace: default
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: role-example
subjects:
- kind: ServiceAccount
  name: sa-example
  namespace: default
";

const SA: &str = "system:serviceaccount:default:sa-example";

#[test]
fn walkthrough_sa_example() {
    let dir = tempfile::tempdir().unwrap();
    let role = write(dir.path(), "role.yaml", ROLE);
    let binding = write(dir.path(), "binding.yaml", BINDING);

    // Before the binding: the 403 a real cluster gives.
    let o = run(&["can-i", "list", "pods", "--as", SA, "--rbac", &role]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o), "no\n");

    let with = || {
        vec![
            "--as",
            SA,
            "--rbac",
            role.as_str(),
            "--rbac",
            binding.as_str(),
        ]
    };
    for verb in ["get", "list"] {
        let mut args = vec!["can-i", verb, "pods"];
        args.extend(with());
        let o = run(&args);
        assert_eq!(
            (o.status.code(), stdout(&o)),
            (Some(0), "yes\n".to_owned()),
            "{verb}"
        );
    }
    let denied: &[&[&str]] = &[
        &["can-i", "get", "pods", "--subresource", "log"],
        &["can-i", "list", "pods", "-n", "kube-system"],
        &["can-i", "list", "pods", "-A"],
        &["can-i", "get", "namespaces/default"],
        &["can-i", "delete", "pods"],
        &["can-i", "get", "pods.apps"],
    ];
    for case in denied {
        let mut args = case.to_vec();
        args.extend(with());
        let o = run(&args);
        assert_eq!(o.status.code(), Some(1), "{case:?}: {}", stdout(&o));
    }
    // The request form and JSON output name the binding and role.
    let mut args = vec![
        "can-i",
        "--request",
        "GET /api/v1/namespaces/default/pods/web-0",
        "-o",
        "json",
    ];
    args.extend(with());
    let o = run(&args);
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["reason"],
        r#"RBAC: allowed by RoleBinding "rolebinding-example/default" of Role "role-example" to ServiceAccount "sa-example/default""#
    );
    assert_eq!(v["binding"]["name"], "rolebinding-example");
    assert_eq!(v["role"]["name"], "role-example");
    assert_eq!(v["attributes"]["verb"], "get");
    assert_eq!(v["attributes"]["name"], "web-0");
    assert_eq!(v["user"]["groups"][0], "system:serviceaccounts");
    let mut args = vec![
        "can-i",
        "--request",
        "GET /api/v1/namespaces/default/pods/web-0/log",
    ];
    args.extend(with());
    assert_eq!(run(&args).status.code(), Some(1));
    // --no-implicit-groups and --as-group.
    let mut args = vec![
        "can-i",
        "get",
        "pods",
        "--no-implicit-groups",
        "--as-group",
        "x",
        "-o",
        "json",
    ];
    args.extend(with());
    let v: serde_json::Value = serde_json::from_slice(&run(&args).stdout).unwrap();
    assert_eq!(v["user"]["groups"], serde_json::json!(["x"]));
    // --list.
    let mut args = vec!["can-i", "--list"];
    args.extend(with());
    let o = run(&args);
    assert_eq!(o.status.code(), Some(0));
    assert!(
        stdout(&o).contains("pods") && stdout(&o).contains("[get list]"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn request_info_prints_api_server_fields_or_error() {
    let o = run(&[
        "request-info",
        "DELETE",
        "/apis/apps/v1/namespaces/prod/deployments",
    ]);
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for (k, want) in [
        ("verb", "deletecollection"),
        ("apiPrefix", "apis"),
        ("apiGroup", "apps"),
        ("apiVersion", "v1"),
        ("namespace", "prod"),
        ("resource", "deployments"),
        ("subresource", ""),
        ("name", ""),
    ] {
        assert_eq!(v[k], want, "{k}");
    }
    assert_eq!(v["isResourceRequest"], true);
    let o = run(&["request-info", "GET", "/api/v1/watch"]);
    assert_eq!(o.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["error"],
        "unable to determine kind and namespace from url, /api/v1/watch"
    );
}

#[test]
fn batch_streams_answers_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let role = write(dir.path(), "role.yaml", ROLE);
    let binding = write(dir.path(), "binding.yaml", BINDING);
    let mut child = bin()
        .args(["can-i", "--batch", "-", "--rbac", &role, "--rbac", &binding])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let input = format!(
        "{{\"user\":\"{SA}\",\"verb\":\"list\",\"resource\":\"pods\",\"namespace\":\"default\"}}\n\
         {{\"user\":\"{SA}\",\"verb\":\"list\",\"resource\":\"pods\",\"namespace\":\"other\"}}\n"
    );
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["allowed"], true);
    assert_eq!(
        lines[1],
        serde_json::json!({"allowed": false, "reason": ""})
    );
}

#[test]
fn import_store_at_and_diff() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let role = write(dir.path(), "role.yaml", ROLE);
    let both = write(
        dir.path(),
        "both.yaml",
        &format!(
            "{ROLE}---\n{BINDING}---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: sa-example}}\n"
        ),
    );
    let o = run(&[
        "rbac",
        "import",
        &role,
        "--at",
        "2025-01-01T00:00:00Z",
        "--data-dir",
        data,
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = run(&[
        "rbac",
        "import",
        &both,
        "--at",
        "2025-02-01T00:00:00Z",
        "--data-dir",
        data,
    ]);
    assert_eq!(o.status.code(), Some(0));
    assert!(
        stdout(&o).contains("skipped 1 other objects: 1 ServiceAccount"),
        "{}",
        stdout(&o)
    );
    let o = run(&["rbac", "list-snapshots", "--data-dir", data, "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);

    let at = |t: &str| {
        run(&[
            "can-i",
            "list",
            "pods",
            "--as",
            SA,
            "--data-dir",
            data,
            "--at",
            t,
        ])
        .status
        .code()
    };
    assert_eq!(at("2025-01-15T00:00:00Z"), Some(1));
    assert_eq!(at("2025-02-01T00:00:00Z"), Some(0));
    assert_eq!(at("now"), Some(0));
    // Before any snapshot: an error naming the time.
    let o = run(&[
        "can-i",
        "list",
        "pods",
        "--as",
        SA,
        "--data-dir",
        data,
        "--at",
        "2024-01-01T00:00:00Z",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("no RBAC snapshot imported at or before 2024-01-01")
    );

    let o = run(&[
        "rbac",
        "diff",
        "2025-01-15T00:00:00Z",
        "2025-02-15T00:00:00Z",
        "--data-dir",
        data,
        "-o",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let changes = v.as_array().unwrap();
    assert_eq!(changes.len(), 2, "{v}");
    for c in changes {
        assert_eq!(c["gained"], true);
        assert_eq!(c["subject"]["name"], "sa-example");
        assert_eq!(c["via"], "RoleBinding default/rolebinding-example");
    }
    // Files work too, and the reverse direction loses.
    let o = run(&["rbac", "diff", &both, &role]);
    assert!(
        stdout(&o).contains("- lost") && stdout(&o).contains("list pods in default"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn bad_input_behaves_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    // Malformed YAML: error naming file and document, nothing stored.
    let bad = write(
        dir.path(),
        "bad.yaml",
        &format!("{ROLE}---\nkind: Role\nmetadata: [oops\n"),
    );
    let o = run(&["rbac", "import", &bad, "--data-dir", data]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bad.yaml, document 2: invalid YAML"), "{err}");
    let o = run(&["rbac", "list-snapshots", "--data-dir", data, "-o", "json"]);
    assert_eq!(stdout(&o).trim(), "[]", "nothing half-imported");
    // A bad field.
    let field = write(
        dir.path(),
        "field.yaml",
        &ROLE.replace("verbs: [get, list]", "verbs: get"),
    );
    let o = run(&["can-i", "get", "pods", "--as", "x", "--rbac", &field]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("field.yaml, document 1: field `rules[0].verbs`: expected a list")
    );
    // Duplicates that differ.
    let dup = write(
        dir.path(),
        "dup.yaml",
        &format!("{ROLE}---\n{}", ROLE.replace("list]", "watch]")),
    );
    let o = run(&["can-i", "get", "pods", "--as", "x", "--rbac", &dup]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("duplicate Role \"default/role-example\""));
    // A binding to a missing role: no, with the API server's reason.
    let binding = write(dir.path(), "binding.yaml", BINDING);
    let o = run(&["can-i", "list", "pods", "--as", SA, "--rbac", &binding]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stdout(&o),
        "no - RBAC: role.rbac.authorization.k8s.io \"role-example\" not found\n"
    );
    // Bad --request.
    let o = run(&[
        "can-i",
        "--request",
        "GET /api/v1/watch",
        "--as",
        "x",
        "--rbac",
        &binding,
    ]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn who_can_rules_and_risk_on_the_default_policy() {
    let policy = fixtures().join("k8s-bootstrap-rbac");
    let files: Vec<String> = [
        "cluster-roles.yaml",
        "cluster-role-bindings.yaml",
        "namespace-roles.yaml",
        "namespace-role-bindings.yaml",
    ]
    .iter()
    .map(|f| policy.join(f).display().to_string())
    .collect();
    let mut rbac: Vec<&str> = Vec::new();
    for f in &files {
        rbac.push("--rbac");
        rbac.push(f);
    }
    let mut args = vec!["who-can", "create", "serviceaccounts/token", "-o", "json"];
    args.extend(&rbac);
    let o = run(&args);
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let names: Vec<&str> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert!(names.contains(&"system:masters"), "{names:?}");
    let mut args = vec!["rules", "--as", "nobody", "-A"];
    args.extend(&rbac);
    let o = run(&args);
    assert!(
        stdout(&o).contains("selfsubjectaccessreviews.authorization.k8s.io"),
        "{}",
        stdout(&o)
    );
    assert!(stdout(&o).contains("[/healthz]"), "{}", stdout(&o));
    let mut args = vec!["rbac", "risk", "-o", "json"];
    args.extend(&rbac);
    let o = run(&args);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["name"], "system:masters", "cluster-admin ranks first");
    assert_eq!(v[0]["findings"][0]["binding"], "cluster-admin");
}
