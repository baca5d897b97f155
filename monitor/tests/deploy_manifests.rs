//! The install manifests: the kustomize base and the Helm chart's default
//! rendering must be the same objects, deserialize into the k8s-openapi
//! types without losing a field, and pass the checks that matter (least
//! privilege, documented capabilities, probes on paths the agent serves,
//! config keys the agent reads). Kustomize is rendered by the small subset
//! below (and compared with `kubectl kustomize` when kubectl is installed);
//! the chart by a renderer for exactly the template constructs it uses,
//! which fails on any other. The Dockerfile is checked against the build
//! the README and xtask describe.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    sync::Arc,
};

use k8s_openapi::api::{
    apps::v1::DaemonSet,
    core::v1::{ConfigMap, Namespace, Service, ServiceAccount},
    rbac::v1::{ClusterRole, ClusterRoleBinding},
};
use serde::Deserialize as _;
use serde_json::Value;
use tokenwatch_core::rbac::{Attributes, Authorizer, Snapshot, UserInfo, import};
use tokenwatch_host::agent::{AgentConfig, http};
use tokenwatch_host::metrics::Metrics;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn yaml_docs(text: &str, what: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{what}: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

fn key(v: &Value) -> (String, String, String) {
    (
        v["kind"].as_str().unwrap_or("").to_owned(),
        v["metadata"]["namespace"].as_str().unwrap_or("").to_owned(),
        v["metadata"]["name"].as_str().unwrap_or("").to_owned(),
    )
}

fn by_key(objects: Vec<Value>) -> BTreeMap<(String, String, String), Value> {
    let mut map = BTreeMap::new();
    for o in objects {
        assert!(
            map.insert(key(&o), o.clone()).is_none(),
            "duplicate {:?}",
            key(&o)
        );
    }
    map
}

const CLUSTER_SCOPED: [&str; 3] = ["Namespace", "ClusterRole", "ClusterRoleBinding"];

/// `kustomize build` for what our kustomizations use: `resources` (files),
/// `components` (with `resources`), `namespace`.
fn kustomize(dir: &Path, components: &[&Path]) -> Vec<Value> {
    let k: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap())
            .unwrap();
    let known = ["apiVersion", "kind", "namespace", "resources", "components"];
    for field in k.as_object().unwrap().keys() {
        assert!(
            known.contains(&field.as_str()),
            "kustomization field {field} is not rendered by this test"
        );
    }
    let mut out = Vec::new();
    let mut files: Vec<PathBuf> = k["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| dir.join(r.as_str().unwrap()))
        .collect();
    for c in components {
        let ck: Value = serde_yaml_ng::from_str(
            &std::fs::read_to_string(c.join("kustomization.yaml")).unwrap(),
        )
        .unwrap();
        assert!(
            ck["patches"].is_null(),
            "component patches are not rendered here"
        );
        for r in ck["resources"].as_array().unwrap() {
            files.push(c.join(r.as_str().unwrap()));
        }
    }
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for mut doc in yaml_docs(&text, &file.display().to_string()) {
            if let Some(ns) = k["namespace"].as_str() {
                let kind = doc["kind"].as_str().unwrap_or("").to_owned();
                if !CLUSTER_SCOPED.contains(&kind.as_str()) {
                    doc["metadata"]["namespace"] = Value::String(ns.to_owned());
                }
            }
            out.push(doc);
        }
    }
    out
}

// ---- a renderer for the Helm template constructs the chart uses ----

fn lookup<'a>(ctx: &'a Value, path: &str) -> &'a Value {
    let mut v = ctx;
    for part in path.trim_start_matches('.').split('.') {
        v = &v[part];
    }
    assert!(!v.is_null(), "template refers to a missing value {path}");
    v
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("a structured value printed without toYaml: {other}"),
    }
}

fn indent(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    format!("{pad}{}", text.replace('\n', &format!("\n{pad}")))
}

/// One `{{ }}` pipeline: `.Path`, `toYaml .Path`, then `| quote`, `| nindent N`, `| indent N`.
fn pipeline(expr: &str, ctx: &Value) -> String {
    let mut stages = expr.split('|').map(str::trim);
    let first = stages.next().unwrap();
    let mut out = if let Some(path) = first.strip_prefix("toYaml ") {
        serde_yaml_ng::to_string(lookup(ctx, path.trim()))
            .unwrap()
            .trim_end()
            .to_owned()
    } else if first.starts_with('.') {
        scalar(lookup(ctx, first))
    } else {
        panic!("template construct not rendered by this test: {expr}")
    };
    for stage in stages {
        let words: Vec<&str> = stage.split_whitespace().collect();
        out = match words.as_slice() {
            ["quote"] => format!("{out:?}"),
            ["nindent", n] => format!("\n{}", indent(&out, n.parse().unwrap())),
            ["indent", n] => indent(&out, n.parse().unwrap()),
            _ => panic!("template function not rendered by this test: {stage}"),
        };
    }
    out
}

fn render_template(text: &str, ctx: &Value) -> String {
    let mut out = String::new();
    // Whether output is on, per open `if`.
    let mut stack: Vec<bool> = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let (before, after) = rest.split_at(start);
        let end = after.find("}}").expect("unclosed {{");
        let mut action = &after[2..end];
        let trim_left = action.starts_with('-');
        let trim_right = action.ends_with('-');
        action = action.trim_start_matches('-').trim_end_matches('-').trim();
        let on = stack.iter().all(|b| *b);
        if on {
            out.push_str(before);
        }
        if trim_left {
            let kept = out.trim_end().len();
            if on {
                out.truncate(kept);
            }
        }
        rest = &after[end + 2..];
        if trim_right {
            rest = rest.trim_start();
        }
        if let Some(cond) = action.strip_prefix("if ") {
            stack.push(truthy(lookup(ctx, cond.trim())));
        } else if action == "end" {
            stack.pop().expect("{{ end }} without {{ if }}");
        } else if on {
            out.push_str(&pipeline(action, ctx));
        }
    }
    assert!(stack.is_empty(), "unclosed {{{{ if }}}}");
    out.push_str(rest);
    out
}

fn helm_template(overrides: &[(&str, Value)]) -> Vec<Value> {
    let chart = root().join("deploy/helm/tokenwatch");
    let mut values: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(chart.join("values.yaml")).unwrap())
            .unwrap();
    for (path, v) in overrides {
        let mut target = &mut values;
        for part in path.split('.') {
            target = &mut target[part];
        }
        *target = v.clone();
    }
    let chart_meta: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(chart.join("Chart.yaml")).unwrap())
            .unwrap();
    let ctx = serde_json::json!({
        "Values": values,
        "Release": {"Name": "tokenwatch", "Namespace": "default"},
        "Chart": {"Name": chart_meta["name"], "Version": chart_meta["version"], "AppVersion": chart_meta["appVersion"]},
    });
    let mut files: Vec<PathBuf> = std::fs::read_dir(chart.join("templates"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let rendered = render_template(&text, &ctx);
        out.extend(yaml_docs(&rendered, &file.display().to_string()));
    }
    out
}

fn base() -> Vec<Value> {
    kustomize(&root().join("deploy/kustomize/base"), &[])
}

/// Deserializes into the k8s-openapi type and back: a misspelt or
/// misplaced field (which the type would drop) fails here.
fn typed<T: serde::de::DeserializeOwned + serde::Serialize>(v: &Value) -> T {
    let t: T = serde_json::from_value(v.clone())
        .unwrap_or_else(|e| panic!("{:?} does not deserialize: {e}", key(v)));
    let back = serde_json::to_value(&t).unwrap();
    assert_eq!(
        &back,
        v,
        "{:?} loses or changes fields in the typed form",
        key(v)
    );
    t
}

fn find<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

#[test]
fn kustomize_and_helm_render_the_same_objects() {
    let kustomized = by_key(base());
    let helm = by_key(helm_template(&[]));
    assert_eq!(
        kustomized.keys().collect::<Vec<_>>(),
        helm.keys().collect::<Vec<_>>()
    );
    for (k, v) in &kustomized {
        assert_eq!(v, &helm[k], "{k:?} differs between kustomize and helm");
    }
    let kinds: BTreeSet<&str> = kustomized.keys().map(|k| k.0.as_str()).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "DaemonSet",
            "Namespace",
            "Service",
            "ServiceAccount"
        ])
    );
    // The optional ServiceMonitor: same object both ways.
    let with_sm = by_key(kustomize(
        &root().join("deploy/kustomize/base"),
        &[&root().join("deploy/kustomize/components/servicemonitor")],
    ));
    let helm_sm = by_key(helm_template(&[(
        "serviceMonitor.enabled",
        Value::Bool(true),
    )]));
    assert_eq!(with_sm, helm_sm);
}

#[test]
fn kubectl_kustomize_agrees_when_installed() {
    let Ok(out) = std::process::Command::new("kubectl")
        .args(["kustomize"])
        .arg(root().join("deploy/kustomize/base"))
        .output()
    else {
        eprintln!("kubectl is not installed: compared with the built-in renderer only");
        return;
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let real = by_key(yaml_docs(
        &String::from_utf8_lossy(&out.stdout),
        "kubectl kustomize",
    ));
    assert_eq!(real, by_key(base()));
}

#[test]
fn every_object_is_a_valid_typed_object() {
    for objects in [base(), helm_template(&[])] {
        for o in &objects {
            match o["kind"].as_str().unwrap() {
                "Namespace" => drop(typed::<Namespace>(o)),
                "ServiceAccount" => drop(typed::<ServiceAccount>(o)),
                "ClusterRole" => drop(typed::<ClusterRole>(o)),
                "ClusterRoleBinding" => drop(typed::<ClusterRoleBinding>(o)),
                "ConfigMap" => drop(typed::<ConfigMap>(o)),
                "DaemonSet" => drop(typed::<DaemonSet>(o)),
                "Service" => drop(typed::<Service>(o)),
                other => panic!("unexpected kind {other}"),
            }
        }
    }
}

const ALLOWED_RULES: [(&str, &str); 5] = [
    ("rbac.authorization.k8s.io", "roles"),
    ("rbac.authorization.k8s.io", "clusterroles"),
    ("rbac.authorization.k8s.io", "rolebindings"),
    ("rbac.authorization.k8s.io", "clusterrolebindings"),
    ("", "pods"),
];

#[test]
fn cluster_role_grants_only_read_of_rbac_and_pods() {
    let objects = base();
    let role: ClusterRole = typed(find(&objects, "ClusterRole"));
    for rule in role.rules.iter().flatten() {
        assert!(rule.resource_names.is_none() && rule.non_resource_urls.is_none());
        for verb in &rule.verbs {
            assert!(
                ["get", "list", "watch"].contains(&verb.as_str()),
                "verb {verb}"
            );
        }
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                assert!(
                    ALLOWED_RULES.contains(&(group.as_str(), resource.as_str())),
                    "{group}/{resource} is not on the list"
                );
            }
        }
    }
    // And as kube-apiserver would decide it, with our own authorizer.
    let mut text = String::new();
    for kind in ["ClusterRole", "ClusterRoleBinding"] {
        text.push_str(&serde_json::to_string(find(&objects, kind)).unwrap());
        text.push('\n');
    }
    let report = import::import_str("rendered", &text).unwrap();
    let authz = Authorizer::new(Arc::new(Snapshot::build(report.objects)));
    let sa = UserInfo::service_account("tokenwatch", "tokenwatch");
    let may = |verb: &str, group: &str, resource: &str| {
        authz
            .decide(&Attributes::resource(verb, group, resource, "", ""), &sa)
            .allowed
    };
    for (group, resource) in ALLOWED_RULES {
        for verb in ["get", "list", "watch"] {
            assert!(
                may(verb, group, resource),
                "{verb} {group}/{resource} denied"
            );
        }
    }
    for (verb, group, resource) in [
        ("get", "", "secrets"),
        ("list", "", "nodes"),
        ("create", "", "pods"),
        ("delete", "", "pods"),
        ("get", "", "pods/log"),
        ("create", "", "pods/exec"),
        ("create", "", "serviceaccounts/token"),
        ("update", "rbac.authorization.k8s.io", "clusterroles"),
        ("bind", "rbac.authorization.k8s.io", "clusterroles"),
        ("escalate", "rbac.authorization.k8s.io", "roles"),
        ("list", "apps", "deployments"),
    ] {
        assert!(
            !may(verb, group, resource),
            "{verb} {group}/{resource} allowed"
        );
    }
}

/// The reasons documented in docs/capabilities.md, by capability.
fn documented_capabilities() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(root().join("docs/capabilities.md")).unwrap();
    let mut caps = BTreeMap::new();
    for line in text.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() >= 4
            && let Some(cap) = cells[1].trim_matches('`').strip_prefix("CAP_")
        {
            caps.insert(cap.to_owned(), cells[2].to_owned());
        }
    }
    caps
}

fn pod_spec(objects: &[Value]) -> k8s_openapi::api::core::v1::PodSpec {
    let ds: DaemonSet = typed(find(objects, "DaemonSet"));
    ds.spec.unwrap().template.spec.unwrap()
}

#[test]
fn daemonset_is_least_privilege_and_documented() {
    let documented = documented_capabilities();
    for (name, objects) in [("kustomize", base()), ("helm", helm_template(&[]))] {
        let spec = pod_spec(&objects);
        assert_eq!(spec.host_pid, Some(true), "{name}");
        assert_eq!(spec.host_network, None, "{name}: no host network");
        assert!(spec.priority_class_name.is_some(), "{name}");
        assert!(
            spec.tolerations
                .iter()
                .flatten()
                .any(|t| t.operator.as_deref() == Some("Exists") && t.key.is_none()),
            "{name}: must tolerate every taint"
        );
        assert_eq!(spec.automount_service_account_token, Some(false), "{name}");
        assert_eq!(spec.containers.len(), 1);
        let c = &spec.containers[0];
        let sc = c.security_context.as_ref().unwrap();
        assert_ne!(sc.privileged, Some(true), "{name}: privileged");
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{name}");
        assert_eq!(sc.read_only_root_filesystem, Some(true), "{name}");
        let caps = sc.capabilities.as_ref().unwrap();
        assert_eq!(
            caps.drop.as_deref(),
            Some(&["ALL".to_owned()][..]),
            "{name}"
        );
        let added = caps.add.clone().unwrap_or_default();
        for cap in &added {
            let reason = documented
                .get(cap)
                .unwrap_or_else(|| panic!("{name}: CAP_{cap} is not in docs/capabilities.md"));
            assert!(reason.len() > 20, "CAP_{cap} has no reason");
        }
        // Exactly these: SYS_ADMIN (fanotify, and accepted by the kernel
        // for bpf() and perf_event_open()), DAC_READ_SEARCH, SYS_PTRACE,
        // SYS_RESOURCE (RLIMIT_MEMLOCK for the eBPF maps before 5.11).
        let mut sorted = added.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            ["DAC_READ_SEARCH", "SYS_ADMIN", "SYS_PTRACE", "SYS_RESOURCE"],
            "{name}: the capability set"
        );

        // Requests and limits.
        let res = c.resources.as_ref().unwrap();
        for part in [&res.requests, &res.limits] {
            let part = part.as_ref().unwrap();
            assert!(
                part.contains_key("cpu") && part.contains_key("memory"),
                "{name}"
            );
        }

        // Mounts: host paths read-only except the data dir; nothing else from the host.
        let volumes: BTreeMap<String, _> = spec
            .volumes
            .iter()
            .flatten()
            .map(|v| (v.name.clone(), v.clone()))
            .collect();
        let mut host_paths = BTreeSet::new();
        for m in c.volume_mounts.iter().flatten() {
            let v = &volumes[&m.name];
            if let Some(hp) = &v.host_path {
                host_paths.insert(hp.path.clone());
                let writable = m.mount_path == "/var/lib/tokenwatch";
                assert_eq!(
                    m.read_only,
                    (!writable).then_some(true),
                    "{name}: {} read-only",
                    m.mount_path
                );
            }
        }
        assert_eq!(
            host_paths,
            BTreeSet::from(
                [
                    "/var/lib/tokenwatch",
                    "/sys/kernel/btf",
                    "/sys/kernel/tracing",
                    "/sys/fs/cgroup",
                    "/var/lib/kubelet/pods"
                ]
                .map(str::to_owned)
            ),
            "{name}"
        );

        // The agent's own token: projected, short-lived, its own audience.
        let token = volumes
            .values()
            .filter_map(|v| v.projected.as_ref())
            .flat_map(|p| p.sources.iter().flatten())
            .find_map(|s| s.service_account_token.clone())
            .expect("a projected token");
        assert!(
            token
                .expiration_seconds
                .is_some_and(|s| (600..=3600).contains(&s))
        );
        let audience = token.audience.unwrap_or_default();
        assert!(!audience.is_empty() && !audience.starts_with("https://kubernetes.default"));
    }
}

#[test]
fn probes_config_and_env_are_what_the_agent_serves_and_reads() {
    let objects = base();
    let spec = pod_spec(&objects);
    let c = &spec.containers[0];
    let metrics = Metrics::default();
    metrics
        .sensor_attached
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let readiness = http::Readiness {
        needs_snapshot: false,
        missing_capabilities: Vec::new(),
    };
    let port = c
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("metrics"))
        .unwrap();
    for probe in [&c.liveness_probe, &c.readiness_probe] {
        let get = probe.as_ref().unwrap().http_get.as_ref().unwrap();
        let path = get.path.as_deref().unwrap();
        let reply = http::route(&http::Method::GET, path, &metrics, &readiness);
        assert_eq!(reply.status, http::StatusCode::OK, "{path}: {reply:?}");
        assert_eq!(
            get.port,
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("metrics".into())
        );
    }
    assert_eq!(
        c.liveness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .as_deref(),
        Some("/healthz")
    );
    assert_eq!(
        c.readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .as_deref(),
        Some("/readyz")
    );

    // Env: every TOKENWATCH_* variable is one the agent reads; it listens on the probed port.
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_tokenwatch"))
        .args(["agent", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    let env: BTreeMap<String, String> = c
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect();
    for name in env.keys().filter(|n| n.starts_with("TOKENWATCH_")) {
        assert!(
            help.contains(&format!("env: {name}=")),
            "{name} is not an agent setting"
        );
    }
    assert_eq!(
        env["TOKENWATCH_LISTEN"],
        format!("0.0.0.0:{}", port.container_port)
    );
    assert!(env.contains_key("NODE_NAME"));
    assert_eq!(c.args.as_deref(), Some(&["agent".to_owned()][..]));

    // The ConfigMap is a valid agent config whose paths are the mounts.
    let cm: ConfigMap = typed(find(&objects, "ConfigMap"));
    let toml = &cm.data.unwrap()["agent.toml"];
    let config = AgentConfig::parse(toml, Path::new("agent.toml")).unwrap();
    assert!(config.in_cluster, "live sync must be on in the cluster");
    let mounts: BTreeMap<String, String> = c
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| (m.mount_path.clone(), m.name.clone()))
        .collect();
    assert_eq!(mounts[&config.data_dir.display().to_string()], "data");
    assert_eq!(
        mounts[&config.kubelet_root.join("pods").display().to_string()],
        "kubelet-pods"
    );
    assert_eq!(
        mounts[&config.cgroup_root.unwrap().display().to_string()],
        "cgroup"
    );
    assert_eq!(
        mounts[env["TOKENWATCH_CONFIG"].rsplit_once('/').unwrap().0],
        "config"
    );
    assert_eq!(
        mounts["/var/run/secrets/kubernetes.io/serviceaccount"], "agent-token",
        "kube-rs's in-cluster config reads the token there"
    );

    // The Service selects the agent pods on the metrics port.
    let svc: Service = typed(find(&objects, "Service"));
    let ds: DaemonSet = typed(find(&objects, "DaemonSet"));
    let pod_labels = ds.spec.unwrap().template.metadata.unwrap().labels.unwrap();
    let svc_spec = svc.spec.unwrap();
    for (k, v) in svc_spec.selector.unwrap() {
        assert_eq!(pod_labels.get(&k), Some(&v));
    }
    assert_eq!(svc_spec.ports.unwrap()[0].port, port.container_port);

    // The ServiceAccount and binding are the ones the pod uses.
    let sa: ServiceAccount = typed(find(&objects, "ServiceAccount"));
    assert_eq!(spec.service_account_name, sa.metadata.name);
    let crb: ClusterRoleBinding = typed(find(&objects, "ClusterRoleBinding"));
    let subject = &crb.subjects.unwrap()[0];
    assert_eq!(Some(&subject.name), sa.metadata.name.as_ref());
    assert_eq!(subject.namespace, sa.metadata.namespace);
    let ns: Namespace = typed(find(&objects, "Namespace"));
    assert_eq!(
        ns.metadata.labels.unwrap()["pod-security.kubernetes.io/enforce"],
        "privileged"
    );
}

/// `FROM image AS name` stages: (name, image, instructions).
fn dockerfile_stages(text: &str) -> Vec<(String, String, Vec<String>)> {
    let mut stages: Vec<(String, String, Vec<String>)> = Vec::new();
    let joined = text.replace("\\\n", " ");
    for line in joined.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        if words[0] == "FROM" {
            let name = match words.as_slice() {
                [_, _, as_, name] if as_.eq_ignore_ascii_case("as") => (*name).to_owned(),
                _ => String::new(),
            };
            stages.push((name, words[1].to_owned(), Vec::new()));
        } else {
            stages
                .last_mut()
                .expect("instruction before FROM")
                .2
                .push(words.join(" "));
        }
    }
    stages
}

#[test]
fn dockerfile_builds_the_binary_the_readme_builds() {
    let text = std::fs::read_to_string(root().join("deploy/Dockerfile")).unwrap();
    let stages = dockerfile_stages(&text);
    assert_eq!(stages.len(), 2, "multi-stage: build and runtime");
    let (build_name, build_image, build) = &stages[0];
    let (_, runtime_image, runtime) = &stages[1];

    // The builder's toolchain is the workspace's rust-version.
    let cargo_toml = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let rust_version = cargo_toml
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .unwrap()
        .trim_matches('"');
    assert!(
        build_image.contains(&format!("rust:{rust_version}")),
        "{build_image}"
    );

    // The same commands as the README and `cargo xtask build --release`.
    let runs: Vec<&str> = build
        .iter()
        .filter_map(|i| i.strip_prefix("RUN "))
        .collect();
    let ran = |cmd: &str| {
        runs.iter()
            .any(|r| r.split("&&").any(|part| part.trim().ends_with(cmd)))
    };
    assert!(ran("cargo xtask bootstrap"), "{runs:?}");
    assert!(ran("cargo build --release -p tokenwatch"), "{runs:?}");
    let xtask = std::fs::read_to_string(root().join("xtask/src/main.rs")).unwrap();
    assert!(
        xtask.contains("\"build\", \"--package\", \"tokenwatch\"")
            && xtask.contains("\"--release\"")
    );
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    assert!(
        readme.contains("docker build -f deploy/Dockerfile"),
        "README describes the image build"
    );
    assert!(
        !build.iter().any(|i| i.contains("CARGO_TARGET_DIR")),
        "the binary path below assumes the default target dir"
    );

    // The runtime copies the binary from where that build puts it.
    let workdir = build
        .iter()
        .rev()
        .find_map(|i| i.strip_prefix("WORKDIR "))
        .expect("WORKDIR in the build stage");
    let copy = runtime
        .iter()
        .find(|i| i.starts_with("COPY --from=") && i.contains("/target/release/tokenwatch"))
        .expect("COPY --from the build stage of the binary");
    let words: Vec<&str> = copy.split_whitespace().collect();
    assert_eq!(words[1], format!("--from={build_name}"));
    assert_eq!(words[2], format!("{workdir}/target/release/tokenwatch"));
    let entry = runtime
        .iter()
        .find_map(|i| i.strip_prefix("ENTRYPOINT "))
        .unwrap();
    let entry: Vec<String> = serde_json::from_str(entry).unwrap();
    assert_eq!(entry[0], words[3]);
    assert!(
        runtime
            .iter()
            .any(|i| i.starts_with("USER ") && !i.contains("USER 0"))
    );
    // An empty base; glibc is copied from the builder's Debian release, which
    // the binary links against (the file list is checked against `cargo xtask
    // image` by tests/tests/container.rs).
    assert!(build_image.ends_with("-bookworm") && runtime_image.starts_with("scratch"));

    // A real build when a container engine runs and it is asked for (slow).
    let engine_up = std::process::Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success());
    if engine_up && std::env::var_os("TOKENWATCH_DOCKER_BUILD").is_some() {
        let status = std::process::Command::new("docker")
            .args([
                "build",
                "-f",
                "deploy/Dockerfile",
                "-t",
                "tokenwatch:test",
                ".",
            ])
            .current_dir(root())
            .status()
            .unwrap();
        assert!(status.success());
    } else {
        eprintln!("no container build (engine up: {engine_up}); the stages were checked instead");
    }
}

#[test]
fn renderer_rejects_what_it_does_not_know() {
    let ctx = serde_json::json!({"Values": {"a": "x"}});
    assert_eq!(
        render_template("k: {{ .Values.a | quote }}", &ctx),
        "k: \"x\""
    );
    assert_eq!(
        render_template("a\n{{- if .Values.a }}\nb{{- end }}", &ctx),
        "a\nb"
    );
    let unknown = std::panic::catch_unwind(|| render_template("{{ include \"x\" . }}", &ctx));
    assert!(unknown.is_err());
    let missing = std::panic::catch_unwind(|| render_template("{{ .Values.b }}", &ctx));
    assert!(missing.is_err());
}
