//! `tokenwatch replay`: trails and kube-apiserver audit logs re-evaluated
//! against the RBAC snapshot in force at the time; token timelines, drift
//! and subject summaries (`docs/replay.md`). The logic is in
//! [`crate::replay`].

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::ValueEnum;

use crate::rbac::import::DEFAULT_NAMESPACE;
use crate::replay::decide::Policy;
use crate::replay::report::{self, EventList};
use crate::replay::{self as engine, Filters, Only, Options, html, time};
use crate::snapshot_store;
use crate::store;
use crate::trail;
use crate::trail::DataDirTrails;

/// Output of `replay`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum ReplayOutput {
    /// Summary, token timelines, listed events and subjects as tables.
    #[default]
    Table,
    /// JSON lines: events as they are evaluated, then tokens, subjects, stats.
    Json,
    /// One self-contained HTML page for an incident ticket.
    Html,
}

/// Which events to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnlyArg {
    /// Decisions where the snapshot and the cluster disagree.
    Drift,
    /// Calls flagged by the token timeline (foreign IP, after a flagged read).
    Findings,
    /// Denied (403) calls.
    Forbidden,
}

/// Arguments of `tokenwatch replay`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A tokenwatch trail: a `trail export` JSON-lines file (plain or gzip),
    /// or a data directory. Repeatable (several nodes).
    #[arg(long = "trail", value_name = "DIR|FILE")]
    trail: Vec<PathBuf>,
    /// A kube-apiserver audit log: JSON lines or an EventList, plain or
    /// gzip (`-` = standard input). Repeatable; merged by time.
    #[arg(long = "audit", value_name = "FILE")]
    audit: Vec<PathBuf>,
    /// RBAC objects (files or directories) to decide with, for every event.
    /// Without it, the stored snapshots of the data directory are chosen
    /// per event by time.
    #[arg(long = "rbac", value_name = "PATH")]
    rbac: Vec<PathBuf>,
    /// Namespace for Roles/RoleBindings in `--rbac` files that name none.
    #[arg(long, value_name = "NS", default_value = DEFAULT_NAMESPACE)]
    rbac_namespace: String,
    /// Decide every event with the stored snapshot as of this time (RFC 3339 or `now`).
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
    /// Data directory (stored RBAC snapshots).
    #[arg(long, env = store::DATA_DIR_ENV, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Only this subject (user name, e.g. `system:serviceaccount:NS:NAME`).
    #[arg(long, value_name = "USER")]
    subject: Option<String>,
    /// Only calls made with this token JTI.
    #[arg(long, value_name = "JTI")]
    jti: Option<String>,
    /// Only requests in this namespace, or by ServiceAccounts of it.
    #[arg(short = 'n', long, value_name = "NS")]
    namespace: Option<String>,
    /// Only events at or after this time (RFC 3339).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Only events at or before this time (RFC 3339).
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// List only these events (default: drift, findings and forbidden).
    #[arg(long, value_enum)]
    only: Option<OnlyArg>,
    /// Events kept for table and HTML output (counts stay exact).
    #[arg(long, default_value_t = 1000)]
    max_rows: usize,
    /// Distinct secrets one subject must read within `--secrets-window`
    /// to raise `secrets-burst`.
    #[arg(long, value_name = "N", default_value_t = 10)]
    secrets_burst: usize,
    /// The window of `--secrets-burst`, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    secrets_window: u64,
    /// A user allowed to mint ServiceAccount tokens without a finding,
    /// besides the nodes' kubelets (`system:node:*`). Repeatable; replaces
    /// the default, `system:kube-controller-manager`.
    #[arg(long = "mint-allow", value_name = "USER")]
    mint_allow: Vec<String>,
    /// Print, instead of the report, a least-privilege Role/ClusterRole
    /// (YAML; JSON lines with `-o json`) per ServiceAccount for the calls
    /// the cluster allowed it, checked both ways against the snapshot, with
    /// the dangerous permissions its bindings grant now.
    #[arg(long)]
    suggest_roles: bool,
    /// Never draw the progress bar (it is drawn only on a terminal anyway).
    #[arg(long)]
    no_progress: bool,
    /// Collected sink output with signed checkpoints (JSON lines or signed
    /// notes, several nodes mixed): shows, per `--trail`, up to which record
    /// it is vouched for and any checkpoint it cannot match.
    #[arg(long, value_name = "FILE", num_args = 1..)]
    checkpoints: Vec<PathBuf>,
    /// Trusted checkpoint key (`name+id+key`) or a file of them; default:
    /// the keys each data directory's trail recorded.
    #[arg(
        long = "checkpoint-key",
        value_name = "KEY|FILE",
        requires = "checkpoints"
    )]
    checkpoint_keys: Vec<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    output: ReplayOutput,
}

/// Per trail: the chain and the collected checkpoints
/// (`trail verify --checkpoints`), or why it could not be checked.
fn vouch_trails(
    args: &Args,
) -> Result<Vec<Result<trail::vouch::Vouching, String>>, trail::vouch::VouchError> {
    use trail::vouch::{self, TrailSource};
    let set = vouch::read_collected(&args.checkpoints)?;
    let keys = vouch::parse_keys(&args.checkpoint_keys)?;
    Ok(args
        .trail
        .iter()
        .map(|path| {
            let source = if path.is_dir() {
                TrailSource::Dir(path)
            } else {
                TrailSource::File(path)
            };
            vouch::vouch(source, &set, &keys, None)
                .map_err(|e| format!("{}: {}", path.display(), super::error_chain(&e)))
        })
        .collect())
}

/// Writes the per-trail checkpoint results after the report.
fn write_vouching(
    out: &mut dyn std::io::Write,
    json: bool,
    results: &[Result<trail::vouch::Vouching, String>],
) -> std::io::Result<()> {
    for r in results {
        match (r, json) {
            (Ok(v), true) => report::write_json_line(out, "checkpoints", v)?,
            (Err(e), true) => {
                report::write_json_line(out, "checkpoints", &serde_json::json!({"error": e}))?;
            }
            (Ok(v), false) => {
                let state = if !v.chain.intact {
                    "chain BROKEN"
                } else if v.checkpoints.passed() {
                    "chain intact"
                } else {
                    "chain intact but CHECKPOINTS FAIL"
                };
                writeln!(out, "\n{}: {state}", v.what)?;
                out.write_all(super::trail::checkpoint_text(&v.checkpoints).as_bytes())?;
            }
            (Err(e), false) => writeln!(out, "\ncheckpoints not checked: {e}")?,
        }
    }
    Ok(())
}

/// Errors of the command's arguments.
#[derive(Debug, thiserror::Error)]
pub enum ReplayArgsError {
    /// A time flag is not RFC 3339.
    #[error("--{flag} {value:?}: expected an RFC 3339 time such as 2025-01-31T12:00:00Z")]
    ParseTime {
        /// The flag.
        flag: &'static str,
        /// Its value.
        value: String,
    },
}

fn parse_time_flag(
    flag: &'static str,
    value: Option<&String>,
) -> Result<Option<i64>, ReplayArgsError> {
    value
        .map(|v| {
            time::parse_bound(v, std::time::SystemTime::now()).map_err(|_| {
                ReplayArgsError::ParseTime {
                    flag,
                    value: v.clone(),
                }
            })
        })
        .transpose()
}

/// The policy, and how trail data directories are read (through the
/// snapshots' open store when they share a directory).
fn policy(args: &Args) -> Result<(Policy, DataDirTrails), Box<dyn std::error::Error>> {
    if !args.rbac.is_empty() {
        let policy = Policy::from_files(&args.rbac, &args.rbac_namespace)?;
        return Ok((policy, DataDirTrails::default()));
    }
    let data_dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => {
            let d = PathBuf::from(store::DEFAULT_DATA_DIR);
            if !d.exists() {
                tracing::warn!("no --rbac and no data directory: decisions are not evaluated");
                return Ok((Policy::None, DataDirTrails::default()));
            }
            d
        }
    };
    let at = args
        .at
        .as_deref()
        .map(snapshot_store::parse_time)
        .transpose()?;
    let (policy, db) = snapshot_store::replay_policy(&data_dir, at)?;
    Ok((policy, DataDirTrails::sharing(&data_dir, db)))
}

/// Runs the command.
#[must_use]
pub fn run(args: Args) -> ExitCode {
    let filters = match (
        parse_time_flag("since", args.since.as_ref()),
        parse_time_flag("until", args.until.as_ref()),
    ) {
        (Ok(since), Ok(until)) => Filters {
            subject: args.subject.clone(),
            jti: args.jti.clone(),
            namespace: args.namespace.clone(),
            since,
            until,
        },
        (Err(e), _) | (_, Err(e)) => return super::fail(&e),
    };
    let (mut policy, trail_dirs) = match policy(&args) {
        Ok(p) => p,
        Err(e) => return super::fail(e.as_ref()),
    };
    let options = Options {
        trails: args.trail.clone(),
        trail_dirs: Some(std::sync::Arc::new(trail_dirs)),
        audits: args.audit.clone(),
        filters,
        only: args.only.map(|o| match o {
            OnlyArg::Drift => Only::Drift,
            OnlyArg::Findings => Only::Findings,
            OnlyArg::Forbidden => Only::Forbidden,
        }),
        progress: !args.no_progress && std::io::stderr().is_terminal(),
        collect_calls: args.suggest_roles,
        detect: {
            let mut d = engine::detect::DetectConfig {
                secrets_burst: args.secrets_burst,
                secrets_window_secs: args.secrets_window,
                ..engine::detect::DetectConfig::default()
            };
            if !args.mint_allow.is_empty() {
                d.mint_allow.clone_from(&args.mint_allow);
            }
            d
        },
    };
    let vouching = if args.checkpoints.is_empty() {
        Vec::new()
    } else {
        match vouch_trails(&args) {
            Ok(v) => v,
            Err(e) => return super::fail(&e),
        }
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut events = EventList::new(args.max_rows);
    let mut write_error: Option<std::io::Error> = None;
    let json = args.output == ReplayOutput::Json;
    let suggest = args.suggest_roles;
    let result = engine::replay(&options, &mut policy, &mut |e| {
        if suggest {
        } else if json {
            if write_error.is_none()
                && let Err(err) = report::write_event_line(&mut out, e)
            {
                write_error = Some(err);
            }
        } else {
            events.push(e);
        }
    });
    let report = match result {
        Ok(r) => r,
        Err(e) => return super::fail(&e),
    };
    let written = match args.output {
        _ if suggest => {
            let suggestions = engine::roles::suggest_roles(&report, &policy);
            if json {
                suggestions
                    .iter()
                    .try_for_each(|s| report::write_json_line(&mut out, "suggestion", s))
            } else {
                out.write_all(engine::roles::to_yaml(&suggestions).as_bytes())
            }
        }
        ReplayOutput::Json => report::write_json_tail(&mut out, &report)
            .and_then(|()| write_vouching(&mut out, true, &vouching)),
        ReplayOutput::Table => report::write_table(&mut out, &report, &events)
            .and_then(|()| write_vouching(&mut out, false, &vouching)),
        ReplayOutput::Html => {
            // The page stays one document: the checkpoint results go to stderr.
            let _ = write_vouching(&mut std::io::stderr().lock(), false, &vouching);
            out.write_all(html::render(&report, &events, "tokenwatch replay").as_bytes())
        }
    };
    if let Some(e) = write_error.or(written.err()).or_else(|| out.flush().err()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            return ExitCode::SUCCESS;
        }
        return super::fail(&e);
    }
    if report.problems.count > 0 {
        eprintln!(
            "tokenwatch: {} malformed records skipped (first: {})",
            report.problems.count,
            report
                .problems
                .kept
                .first()
                .map_or_else(String::new, |m| format!("{}: {}", m.location, m.error))
        );
    }
    // The process ends here and its memory goes back whole: the report's
    // many small allocations (every kept call's strings) are not freed one
    // by one after the last line was written. Only memory: the policy,
    // which may hold a store, is dropped as usual.
    std::mem::forget(report);
    std::mem::forget(events);
    ExitCode::SUCCESS
}
