//! `tokenwatch rbac import|list-snapshots|diff|risk`, and the flags every
//! RBAC command shares (`--rbac`, `--at`, `--data-dir`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use comfy_table::Table;
use serde::Serialize;

use super::OutputFormat;
use crate::rbac::import::{DEFAULT_NAMESPACE, Importer};
use crate::rbac::{Snapshot, UserInfo, diff, risk};
use crate::snapshot_store::{self, SnapshotSource, SnapshotStoreError};
use crate::store;

/// Where RBAC objects come from: files given with `--rbac`, or the stored
/// snapshot as of `--at`.
#[derive(Debug, Clone, clap::Args)]
pub struct SnapshotArgs {
    /// RBAC objects to use instead of a stored snapshot: YAML/JSON files or
    /// directories (`-` = standard input). Repeatable.
    #[arg(long = "rbac", value_name = "PATH")]
    pub rbac: Vec<PathBuf>,
    /// Namespace for Roles/RoleBindings in `--rbac` files that name none.
    #[arg(long, value_name = "NS", default_value = DEFAULT_NAMESPACE)]
    pub rbac_namespace: String,
    /// Use the stored snapshot as of this time (RFC 3339, or `now`).
    #[arg(long, value_name = "TIME", default_value = "now")]
    pub at: String,
    /// Data directory of the store.
    #[arg(long, env = store::DATA_DIR_ENV, default_value = store::DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
}

impl SnapshotArgs {
    /// Loads the snapshot these flags name.
    ///
    /// # Errors
    /// Import/store failures, a bad `--at`.
    pub fn load(&self) -> Result<Snapshot, SnapshotStoreError> {
        let source = if self.rbac.is_empty() {
            SnapshotSource::Stored {
                data_dir: &self.data_dir,
                at: snapshot_store::parse_time(&self.at)?,
            }
        } else {
            SnapshotSource::Files {
                paths: &self.rbac,
                default_namespace: &self.rbac_namespace,
            }
        };
        let (snapshot, what) = snapshot_store::load(source)?;
        tracing::debug!(source = %what, "RBAC snapshot loaded");
        let agg = snapshot.aggregation();
        if !agg.converged {
            tracing::warn!(
                passes = agg.passes,
                "ClusterRole aggregation did not settle (cyclic selectors)"
            );
        }
        Ok(snapshot)
    }
}

/// Prints a value as JSON or YAML; `false` for the table format.
pub(crate) fn print_structured<T: Serialize>(
    format: OutputFormat,
    value: &T,
) -> Result<bool, std::io::Error> {
    let text = match format {
        OutputFormat::Table => return Ok(false),
        OutputFormat::Json => serde_json::to_string_pretty(value).map_err(std::io::Error::other)?,
        OutputFormat::Yaml => serde_yaml_ng::to_string(value).map_err(std::io::Error::other)?,
    };
    println!("{}", text.trim_end());
    Ok(true)
}

/// A table with the house style.
pub(crate) fn new_table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(comfy_table::presets::NOTHING);
    t.set_header(header.iter().copied());
    t
}

/// Arguments of `tokenwatch rbac`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: RbacCommand,
}

#[derive(Debug, clap::Subcommand)]
enum RbacCommand {
    /// Import RBAC objects from files or directories and store them as a
    /// timestamped snapshot.
    Import(ImportArgs),
    /// List the stored snapshots.
    ListSnapshots(ListArgs),
    /// List the RBAC objects from the API server once and store them as a
    /// snapshot (a laptop with a kubeconfig).
    Pull(PullArgs),
    /// Show who gained and lost which permissions between two snapshots
    /// (each a stored snapshot time, or a file/directory).
    Diff(DiffArgs),
    /// Rank subjects by dangerous permissions, or assess one user (`--as`).
    Risk(RiskArgs),
}

#[derive(Debug, clap::Args)]
struct ImportArgs {
    /// YAML/JSON files or directories (`-` = standard input).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Namespace for Roles/RoleBindings that name none.
    #[arg(long, default_value = DEFAULT_NAMESPACE)]
    namespace: String,
    /// Record the snapshot as taken at this time instead of now (RFC 3339).
    #[arg(long)]
    at: Option<String>,
    #[arg(long, env = store::DATA_DIR_ENV, default_value = store::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    #[arg(short, long, value_enum, default_value_t)]
    output: OutputFormat,
}

#[derive(Debug, clap::Args)]
struct PullArgs {
    /// Kubeconfig (default: `$KUBECONFIG`, else `~/.kube/config`).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Use the in-cluster configuration (inside a pod) instead.
    #[arg(long, conflicts_with = "kubeconfig")]
    in_cluster: bool,
    #[arg(long, env = store::DATA_DIR_ENV, default_value = store::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    #[arg(short, long, value_enum, default_value_t)]
    output: OutputFormat,
}

#[derive(Debug, clap::Args)]
struct ListArgs {
    #[arg(long, env = store::DATA_DIR_ENV, default_value = store::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    #[arg(short, long, value_enum, default_value_t)]
    output: OutputFormat,
}

#[derive(Debug, clap::Args)]
struct DiffArgs {
    /// The earlier snapshot: a time (RFC 3339 or `now`) or a path.
    before: String,
    /// The later snapshot: a time (RFC 3339 or `now`) or a path.
    after: String,
    /// Namespace for objects without one, when A or B is a path.
    #[arg(long, default_value = DEFAULT_NAMESPACE)]
    rbac_namespace: String,
    #[arg(long, env = store::DATA_DIR_ENV, default_value = store::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    #[arg(short, long, value_enum, default_value_t)]
    output: OutputFormat,
}

#[derive(Debug, clap::Args)]
struct RiskArgs {
    /// Assess this user only (with the groups the API server would add).
    #[arg(long = "as", value_name = "USER")]
    as_user: Option<String>,
    /// Groups of the `--as` user. Repeatable.
    #[arg(long = "as-group", value_name = "GROUP")]
    as_group: Vec<String>,
    /// Use exactly the `--as-group` list, adding no implicit group.
    #[arg(long)]
    no_implicit_groups: bool,
    /// Show only the first N subjects.
    #[arg(long)]
    top: Option<usize>,
    #[command(flatten)]
    snapshot: SnapshotArgs,
    #[arg(short, long, value_enum, default_value_t)]
    output: OutputFormat,
}

/// Runs `tokenwatch rbac`.
#[must_use]
pub fn run(args: Args) -> ExitCode {
    match args.command {
        RbacCommand::Import(a) => import(&a),
        RbacCommand::ListSnapshots(a) => list(&a),
        RbacCommand::Pull(a) => pull(&a),
        RbacCommand::Diff(a) => run_diff(&a),
        RbacCommand::Risk(a) => run_risk(&a),
    }
}

fn pull(a: &PullArgs) -> ExitCode {
    let kubeconfig = if a.in_cluster {
        None
    } else {
        // KUBECONFIG may list several files; the first one is used.
        a.kubeconfig
            .as_ref()
            .and_then(|p| std::env::split_paths(p).next())
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".kube/config")))
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return super::fail(&e),
    };
    let pulled = runtime.block_on(async {
        let client = crate::kubesync::client(kubeconfig.as_deref(), a.in_cluster).await?;
        crate::kubesync::pull(&client).await
    });
    let report = match pulled {
        Ok(report) => report,
        Err(e) => return super::fail(&e),
    };
    let db = match store::open(&a.data_dir) {
        Ok(db) => db,
        Err(e) => return super::fail(&e),
    };
    let source = kubeconfig.as_ref().map_or_else(
        || "api-server (in-cluster)".to_owned(),
        |p| format!("api-server (kubeconfig {})", p.display()),
    );
    let meta = match crate::kubesync::save_pulled(&db, &source, &report) {
        Ok(m) => m,
        Err(e) => return super::fail(&e),
    };
    match print_structured(a.output, &meta) {
        Ok(true) => return ExitCode::SUCCESS,
        Ok(false) => {}
        Err(e) => return super::fail(&e),
    }
    println!(
        "snapshot {} stored in {}",
        meta.imported_at,
        a.data_dir.display()
    );
    println!(
        "  {} ClusterRoles, {} ClusterRoleBindings, {} Roles, {} RoleBindings from the API server",
        meta.cluster_roles, meta.cluster_role_bindings, meta.roles, meta.role_bindings,
    );
    ExitCode::SUCCESS
}

fn import(a: &ImportArgs) -> ExitCode {
    let mut importer = Importer::new(&a.namespace);
    for p in &a.paths {
        if let Err(e) = importer.add_path(p) {
            return super::fail(&e);
        }
    }
    let report = importer.finish();
    let at = match a.at.as_deref().map(snapshot_store::parse_time).transpose() {
        Ok(t) => t.unwrap_or_else(SystemTime::now),
        Err(e) => return super::fail(&e),
    };
    let db = match store::open(&a.data_dir) {
        Ok(db) => db,
        Err(e) => return super::fail(&e),
    };
    let sources = a.paths.iter().map(|p| p.display().to_string()).collect();
    let meta = match snapshot_store::save(&db, at, sources, &report) {
        Ok(m) => m,
        Err(e) => return super::fail(&e),
    };
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Summary<'a> {
        snapshot: &'a snapshot_store::SnapshotMeta,
        skipped: &'a std::collections::BTreeMap<String, usize>,
        identical_duplicates: usize,
        files: usize,
        documents: usize,
    }
    let summary = Summary {
        snapshot: &meta,
        skipped: &report.skipped,
        identical_duplicates: report.identical_duplicates,
        files: report.files,
        documents: report.documents,
    };
    match print_structured(a.output, &summary) {
        Ok(true) => return ExitCode::SUCCESS,
        Ok(false) => {}
        Err(e) => return super::fail(&e),
    }
    println!(
        "snapshot {} stored in {}",
        meta.imported_at,
        a.data_dir.display()
    );
    println!(
        "  {} ClusterRoles, {} ClusterRoleBindings, {} Roles, {} RoleBindings from {} files ({} documents)",
        meta.cluster_roles,
        meta.cluster_role_bindings,
        meta.roles,
        meta.role_bindings,
        report.files,
        report.documents
    );
    if report.skipped_total() > 0 {
        let kinds: Vec<String> = report
            .skipped
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        println!(
            "  skipped {} other objects: {}",
            report.skipped_total(),
            kinds.join(", ")
        );
    }
    if report.identical_duplicates > 0 {
        println!(
            "  {} identical duplicates kept once",
            report.identical_duplicates
        );
    }
    ExitCode::SUCCESS
}

fn list(a: &ListArgs) -> ExitCode {
    let db = match store::open(&a.data_dir) {
        Ok(db) => db,
        Err(e) => return super::fail(&e),
    };
    let metas = match snapshot_store::list(&db) {
        Ok(m) => m,
        Err(e) => return super::fail(&e),
    };
    match print_structured(a.output, &metas) {
        Ok(true) => return ExitCode::SUCCESS,
        Ok(false) => {}
        Err(e) => return super::fail(&e),
    }
    let mut t = new_table(&[
        "IMPORTED AT",
        "CLUSTERROLES",
        "CLUSTERROLEBINDINGS",
        "ROLES",
        "ROLEBINDINGS",
        "SOURCES",
    ]);
    for m in &metas {
        t.add_row(vec![
            m.imported_at.clone(),
            m.cluster_roles.to_string(),
            m.cluster_role_bindings.to_string(),
            m.roles.to_string(),
            m.role_bindings.to_string(),
            m.sources.join(", "),
        ]);
    }
    println!("{t}");
    ExitCode::SUCCESS
}

fn load_either(
    spec: &str,
    data_dir: &Path,
    default_namespace: &str,
) -> Result<Snapshot, SnapshotStoreError> {
    let path = PathBuf::from(spec);
    let source = if path.exists() {
        SnapshotSource::Files {
            paths: std::slice::from_ref(&path),
            default_namespace,
        }
    } else {
        SnapshotSource::Stored {
            data_dir,
            at: snapshot_store::parse_time(spec)?,
        }
    };
    snapshot_store::load(source).map(|(s, _)| s)
}

fn run_diff(a: &DiffArgs) -> ExitCode {
    let before = match load_either(&a.before, &a.data_dir, &a.rbac_namespace) {
        Ok(s) => s,
        Err(e) => return super::fail(&e),
    };
    let after = match load_either(&a.after, &a.data_dir, &a.rbac_namespace) {
        Ok(s) => s,
        Err(e) => return super::fail(&e),
    };
    let changes = diff::diff(&before, &after);
    match print_structured(a.output, &changes) {
        Ok(true) => return ExitCode::SUCCESS,
        Ok(false) => {}
        Err(e) => return super::fail(&e),
    }
    if changes.is_empty() {
        println!("no permission changed");
        return ExitCode::SUCCESS;
    }
    let mut t = new_table(&["SUBJECT", "CHANGE", "PERMISSION", "VIA"]);
    for c in &changes {
        t.add_row(vec![
            c.subject.to_string(),
            if c.gained { "+ gained" } else { "- lost" }.to_owned(),
            c.permission.to_string(),
            c.via.clone(),
        ]);
    }
    println!("{t}");
    ExitCode::SUCCESS
}

fn rule_summary(rule: &crate::rbac::model::PolicyRule) -> String {
    let mut parts = vec![format!("verbs={}", rule.verbs.join(","))];
    if !rule.api_groups.is_empty() {
        let groups: Vec<&str> = rule
            .api_groups
            .iter()
            .map(|g| if g.is_empty() { "\"\"" } else { g.as_str() })
            .collect();
        parts.push(format!("apiGroups={}", groups.join(",")));
    }
    if !rule.resources.is_empty() {
        parts.push(format!("resources={}", rule.resources.join(",")));
    }
    if !rule.resource_names.is_empty() {
        parts.push(format!("resourceNames={}", rule.resource_names.join(",")));
    }
    if !rule.non_resource_urls.is_empty() {
        parts.push(format!(
            "nonResourceURLs={}",
            rule.non_resource_urls.join(",")
        ));
    }
    parts.join(" ")
}

fn findings_table(findings: &[risk::RiskFinding]) -> Table {
    let mut t = new_table(&["SEVERITY", "CHECK", "SCOPE", "BINDING", "ROLE", "RULE"]);
    for f in findings {
        t.add_row(vec![
            format!("{:?}", f.severity).to_lowercase(),
            f.check.id().to_owned(),
            f.namespace.clone().unwrap_or_else(|| "cluster".to_owned()),
            format!("{} {}", f.binding_kind, f.binding),
            format!("{} {}", f.role_kind, f.role),
            format!("#{} {}", f.rule_index, rule_summary(&f.rule)),
        ]);
    }
    t
}

fn run_risk(a: &RiskArgs) -> ExitCode {
    let snapshot = match a.snapshot.load() {
        Ok(s) => s,
        Err(e) => return super::fail(&e),
    };
    if let Some(user) = &a.as_user {
        let info = if a.no_implicit_groups {
            UserInfo::new(user.clone(), a.as_group.clone())
        } else {
            UserInfo::impersonated(user, &a.as_group)
        };
        let findings = risk::assess(&snapshot, &info);
        match print_structured(a.output, &findings) {
            Ok(true) => return ExitCode::SUCCESS,
            Ok(false) => {}
            Err(e) => return super::fail(&e),
        }
        if findings.is_empty() {
            println!("no dangerous permission found for {user}");
        } else {
            println!("{}", findings_table(&findings));
        }
        return ExitCode::SUCCESS;
    }
    let mut ranked = risk::rank(&snapshot);
    if let Some(n) = a.top {
        ranked.truncate(n);
    }
    match print_structured(a.output, &ranked) {
        Ok(true) => return ExitCode::SUCCESS,
        Ok(false) => {}
        Err(e) => return super::fail(&e),
    }
    let mut t = new_table(&["SUBJECT", "MAX", "SCORE", "CHECKS", "VIA"]);
    for s in &ranked {
        let mut checks: Vec<&str> = s.findings.iter().map(|f| f.check.id()).collect();
        checks.sort_unstable();
        checks.dedup();
        let mut via: Vec<String> = s
            .findings
            .iter()
            .map(|f| format!("{} {}", f.binding_kind, f.binding))
            .collect();
        via.sort();
        via.dedup();
        let who = if s.namespace.is_empty() {
            format!("{} {}", s.kind, s.name)
        } else {
            format!("{} {}/{}", s.kind, s.namespace, s.name)
        };
        t.add_row(vec![
            who,
            format!("{:?}", s.max_severity).to_lowercase(),
            s.score.to_string(),
            checks.join(","),
            via.join(", "),
        ]);
    }
    println!("{t}");
    ExitCode::SUCCESS
}
