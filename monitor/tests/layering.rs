//! The layering of docs/architecture.md, checked:
//!
//! - crate edges: `tokenwatch-core` has no aya, tokio, kube or sled
//!   anywhere in its normal dependencies (direct or not, with the features
//!   a build of the core alone enables: `cargo tree -p tokenwatch-core`),
//!   nor any other tokenwatch crate; `tokenwatch-host` may use the core
//!   only; nothing depends on the binary crate `tokenwatch` (`cargo metadata`);
//! - module edges, from the sources: within each library crate, the
//!   top-level modules' `crate::...` references form no cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("monitor/ is inside the workspace")
        .to_owned()
}

fn metadata() -> Value {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(workspace_root())
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON")
}

/// Package name by id, and each package's normal (non-dev, non-build)
/// dependencies by name.
struct Graph {
    names: BTreeMap<String, String>,
    normal_deps: BTreeMap<String, Vec<String>>,
}

impl Graph {
    fn new(meta: &Value) -> Self {
        let mut names = BTreeMap::new();
        for p in meta["packages"].as_array().expect("packages") {
            names.insert(
                p["id"].as_str().expect("id").to_owned(),
                p["name"].as_str().expect("name").to_owned(),
            );
        }
        let mut normal_deps: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for node in meta["resolve"]["nodes"].as_array().expect("resolve") {
            let id = node["id"].as_str().expect("id").to_owned();
            let mut deps = Vec::new();
            for d in node["deps"].as_array().expect("deps") {
                let normal = d["dep_kinds"]
                    .as_array()
                    .expect("dep_kinds")
                    .iter()
                    .any(|k| k["kind"].is_null());
                if normal {
                    deps.push(d["pkg"].as_str().expect("pkg").to_owned());
                }
            }
            normal_deps.insert(id, deps);
        }
        Self { names, normal_deps }
    }

    fn id_of(&self, name: &str) -> String {
        self.names
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(id, _)| id.clone())
            .unwrap_or_else(|| panic!("package {name} is not in the workspace"))
    }

    fn direct(&self, name: &str) -> BTreeSet<String> {
        self.normal_deps[&self.id_of(name)]
            .iter()
            .map(|id| self.names[id].clone())
            .collect()
    }
}

/// Every package a build of `tokenwatch-core` alone links, by name. (The
/// metadata's resolve unifies features over the workspace, where the host
/// turns on `monitor-common/user`; `cargo tree -p` resolves them as a build
/// of the core alone does.)
fn core_closure() -> BTreeSet<String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "--locked",
            "-p",
            "tokenwatch-core",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .current_dir(workspace_root())
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("cargo tree prints UTF-8");
    let names: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    assert!(
        names.contains("serde"),
        "cargo tree listed no dependencies: {text}"
    );
    names
}

const FORBIDDEN_IN_CORE: [&str; 4] = ["aya", "tokio", "kube", "sled"];

#[test]
fn crate_edges_follow_the_architecture() {
    let graph = Graph::new(&metadata());
    let core = core_closure();
    let forbidden: Vec<&String> = core
        .iter()
        .filter(|n| {
            FORBIDDEN_IN_CORE.contains(&n.as_str())
                || n.starts_with("aya-")
                || n.starts_with("tokio-")
                || n.starts_with("kube-")
                || (n.starts_with("tokenwatch") && n.as_str() != "tokenwatch-core")
        })
        .collect();
    assert!(
        forbidden.is_empty(),
        "tokenwatch-core must not depend on {forbidden:?} (docs/architecture.md)"
    );
    let host: Vec<String> = graph
        .direct("tokenwatch-host")
        .into_iter()
        .filter(|n| n.starts_with("tokenwatch"))
        .collect();
    assert_eq!(
        host,
        ["tokenwatch-core"],
        "tokenwatch-host's tokenwatch crates"
    );
    for (id, deps) in &graph.normal_deps {
        let binary = graph.id_of("tokenwatch");
        assert!(
            !deps.contains(&binary),
            "{} depends on the binary crate tokenwatch; nothing may",
            graph.names[id]
        );
    }
}

/// The top-level module each `crate::NAME` reference in `text` names
/// (`use crate::{a::b, c}` names `a` and `c`). Line comments are skipped.
fn referenced_modules(text: &str) -> BTreeSet<String> {
    let code: String = text
        .lines()
        .map(|l| l.split_once("//").map_or(l, |(code, _)| code))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level items of the group: identifiers at depth 0.
            let mut depth = 0usize;
            let mut start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        rest = &group[i..];
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && (c.is_alphanumeric() || c == '_') => {
                        let ident: String = group[i..]
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect();
                        out.insert(ident);
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            let ident: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !ident.is_empty() {
                out.insert(ident);
            }
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read source dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Edges between the top-level modules of the crate whose sources are in `src`.
fn module_edges(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let module_of = |path: &Path| -> Option<String> {
        let rel = path.strip_prefix(src).ok()?;
        let first = rel.components().next()?.as_os_str().to_str()?;
        let name = first.strip_suffix(".rs").unwrap_or(first);
        (name != "lib" && name != "main").then(|| name.to_owned())
    };
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(f)).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let Some(from) = module_of(file) else {
            continue;
        };
        let text = std::fs::read_to_string(file).expect("read source");
        for to in referenced_modules(&text) {
            if to != from && modules.contains(&to) {
                edges.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    edges
}

/// A cycle among `edges`, if there is one, as the path that closes it.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(pos) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[pos..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, edges, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|n| visit(n, edges, &mut Vec::new(), &mut done))
}

#[test]
fn no_module_cycles_in_the_library_crates() {
    for krate in ["core", "host"] {
        let edges = module_edges(&workspace_root().join(krate).join("src"));
        assert!(!edges.is_empty(), "{krate}: no module edges found at all");
        if let Some(cycle) = find_cycle(&edges) {
            panic!("{krate}: the modules {} form a cycle", cycle.join(" -> "));
        }
    }
}

#[test]
fn the_checker_sees_groups_and_cycles() {
    let refs = referenced_modules(
        "use crate::{agent::metrics::Metrics, correlate::{A, B}, store};\n\
         // crate::commented\nlet x = crate::trail::x();",
    );
    let names: Vec<&str> = refs.iter().map(String::as_str).collect();
    assert_eq!(names, ["agent", "correlate", "store", "trail"]);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    edges.entry("a".into()).or_default().insert("b".into());
    edges.entry("b".into()).or_default().insert("c".into());
    assert_eq!(find_cycle(&edges), None);
    edges.entry("c".into()).or_default().insert("a".into());
    assert_eq!(
        find_cycle(&edges).expect("a cycle"),
        ["a", "b", "c", "a"].map(String::from)
    );
}
