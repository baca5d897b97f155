//! RBAC engine benchmarks (issue 4): can-i decisions per second, who-can
//! latency, import of 10,000 objects.
//!
//! The snapshot is Kubernetes' default policy (`tests/fixtures/k8s-bootstrap-rbac`)
//! plus 1,000 generated Roles/ClusterRoles and 5,000 generated bindings.
//! Run: `cargo bench -p tokenwatch --bench rbac`.

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokenwatch_core::rbac::import::{Importer, import_str};
use tokenwatch_core::rbac::who_can::{NamespaceScope, who_can};
use tokenwatch_core::rbac::{Attributes, Authorizer, Snapshot, UserInfo};

const NAMESPACES: usize = 50;
const FIXTURES: [&str; 6] = [
    "cluster-roles.yaml",
    "cluster-role-bindings.yaml",
    "namespace-roles.yaml",
    "namespace-role-bindings.yaml",
    "controller-roles-featuregates.yaml",
    "controller-role-bindings.yaml",
];

/// A small deterministic generator (64-bit LCG).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        usize::try_from((self.0 >> 33) % n as u64).unwrap_or(0)
    }
}

const VERBS: [&str; 7] = [
    "get", "list", "watch", "create", "update", "patch", "delete",
];
const RESOURCES: [(&str, &str); 10] = [
    ("", "pods"),
    ("", "configmaps"),
    ("", "secrets"),
    ("", "services"),
    ("apps", "deployments"),
    ("apps", "statefulsets"),
    ("batch", "jobs"),
    ("networking.k8s.io", "ingresses"),
    ("coordination.k8s.io", "leases"),
    ("", "pods/log"),
];

fn rule_yaml(out: &mut String, rng: &mut Lcg) {
    let (g, r) = RESOURCES[rng.next(RESOURCES.len())];
    let v1 = VERBS[rng.next(VERBS.len())];
    let v2 = VERBS[rng.next(VERBS.len())];
    let _ = writeln!(
        out,
        "- apiGroups: [\"{g}\"]\n  resources: [\"{r}\"]\n  verbs: [\"{v1}\", \"{v2}\"]"
    );
    if rng.next(8) == 0 {
        let _ = writeln!(out, "  resourceNames: [\"name-{}\"]", rng.next(20));
    }
}

/// `roles` Roles/ClusterRoles (half each) and `bindings` bindings (one in
/// five a ClusterRoleBinding), as multi-document YAML.
fn generated_yaml(roles: usize, bindings: usize) -> String {
    let mut rng = Lcg(42);
    let mut out = String::new();
    for i in 0..roles {
        if i % 2 == 0 {
            let _ = writeln!(
                out,
                "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: gen-clusterrole-{i}\nrules:"
            );
        } else {
            let _ = writeln!(
                out,
                "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: gen-role-{i}\n  namespace: ns-{}\nrules:",
                i % NAMESPACES
            );
        }
        for _ in 0..(2 + rng.next(4)) {
            rule_yaml(&mut out, &mut rng);
        }
    }
    for i in 0..bindings {
        let ns = rng.next(NAMESPACES);
        let subjects = match rng.next(3) {
            0 => format!(
                "- kind: ServiceAccount\n  name: sa-{}\n  namespace: ns-{ns}",
                rng.next(40)
            ),
            1 => format!(
                "- kind: User\n  apiGroup: rbac.authorization.k8s.io\n  name: user-{}",
                rng.next(200)
            ),
            _ => format!(
                "- kind: Group\n  apiGroup: rbac.authorization.k8s.io\n  name: team-{}",
                rng.next(30)
            ),
        };
        if i % 5 == 0 {
            let role = 2 * rng.next(roles / 2);
            let _ = writeln!(
                out,
                "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: gen-crb-{i}\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: gen-clusterrole-{role}\nsubjects:\n{subjects}"
            );
        } else {
            // Roles live in ns-(i % NAMESPACES) for odd i: pick one in this namespace, or a ClusterRole.
            let (kind, name) = if rng.next(2) == 0 {
                let odd = (0..roles)
                    .filter(|j| j % 2 == 1 && j % NAMESPACES == ns)
                    .nth(rng.next(10))
                    .unwrap_or(1);
                ("Role", format!("gen-role-{odd}"))
            } else {
                (
                    "ClusterRole",
                    format!("gen-clusterrole-{}", 2 * rng.next(roles / 2)),
                )
            };
            let _ = writeln!(
                out,
                "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: gen-rb-{i}\n  namespace: ns-{ns}\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: {kind}\n  name: {name}\nsubjects:\n{subjects}"
            );
        }
    }
    out
}

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/k8s-bootstrap-rbac")
}

fn snapshot() -> Snapshot {
    let mut importer = Importer::default();
    for f in FIXTURES {
        importer
            .add_path(&fixtures_dir().join(f))
            .expect("default policy imports");
    }
    importer
        .add_text("generated.yaml", &generated_yaml(1_000, 5_000))
        .expect("generated policy imports");
    Snapshot::build(importer.finish().objects)
}

struct Request {
    user: UserInfo,
    verb: &'static str,
    group: &'static str,
    resource: &'static str,
    sub: &'static str,
    namespace: String,
    name: String,
}

fn requests(n: usize) -> Vec<Request> {
    let mut rng = Lcg(7);
    (0..n)
        .map(|_| {
            let ns = rng.next(NAMESPACES);
            let user = match rng.next(4) {
                0 => {
                    UserInfo::service_account(&format!("ns-{ns}"), &format!("sa-{}", rng.next(40)))
                }
                1 => UserInfo::impersonated(
                    &format!("user-{}", rng.next(200)),
                    &[format!("team-{}", rng.next(30))],
                ),
                2 => UserInfo::service_account("kube-system", "deployment-controller"),
                _ => UserInfo::service_account(&format!("ns-{ns}"), "default"),
            };
            let (group, res) = RESOURCES[rng.next(RESOURCES.len())];
            let (resource, sub) = res.split_once('/').unwrap_or((res, ""));
            Request {
                user,
                verb: VERBS[rng.next(VERBS.len())],
                group,
                resource,
                sub,
                namespace: format!("ns-{ns}"),
                name: if rng.next(3) == 0 {
                    format!("name-{}", rng.next(20))
                } else {
                    String::new()
                },
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let snap = Arc::new(snapshot());
    let authz = Authorizer::new(Arc::clone(&snap));
    let reqs = requests(4_096);
    let attrs: Vec<Attributes<'_>> = reqs
        .iter()
        .map(|r| {
            Attributes::resource(r.verb, r.group, r.resource, &r.namespace, &r.name)
                .with_subresource(r.sub)
        })
        .collect();
    let allowed = reqs
        .iter()
        .zip(&attrs)
        .filter(|(r, a)| authz.decide(a, &r.user).allowed)
        .count();
    eprintln!(
        "snapshot: {} objects, {} bindings; mix: {allowed}/{} allowed",
        snap.objects().len(),
        snap.bindings().len(),
        reqs.len()
    );

    let mut g = c.benchmark_group("can-i");
    g.throughput(Throughput::Elements(reqs.len() as u64));
    g.bench_function("decide mix of 4096", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for (r, a) in reqs.iter().zip(&attrs) {
                n += usize::from(authz.decide(black_box(a), &r.user).allowed);
            }
            black_box(n)
        });
    });
    g.finish();

    let mut g = c.benchmark_group("who-can");
    let secrets = Attributes::resource("get", "", "secrets", "ns-7", "");
    g.bench_function("get secrets -n ns-7", |b| {
        b.iter(|| {
            black_box(
                who_can(&snap, black_box(&secrets), NamespaceScope::Request)
                    .entries
                    .len(),
            )
        });
    });
    let pods = Attributes::resource("create", "", "pods", "", "");
    g.bench_function("create pods -A", |b| {
        b.iter(|| {
            black_box(
                who_can(&snap, black_box(&pods), NamespaceScope::All)
                    .entries
                    .len(),
            )
        });
    });
    g.finish();

    let text = generated_yaml(4_000, 6_000);
    let mut g = c.benchmark_group("import");
    g.throughput(Throughput::Elements(10_000));
    g.sample_size(10);
    g.bench_function("10k objects: parse + build snapshot", |b| {
        b.iter(|| {
            let report = import_str("generated.yaml", black_box(&text)).expect("imports");
            black_box(Snapshot::build(report.objects).bindings().len())
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
