//! `tokenwatch can-i`: `kubectl auth can-i` against an RBAC snapshot.
//!
//! Prints `yes`, or `no` (with ` - <reason>` when the authorizer gave one),
//! and exits 0 for yes, 1 for no, 2 for an error. `--batch` answers JSON
//! lines; `--list` prints the rules the user holds.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::ExitCode;

use serde::Serialize;

use super::OutputFormat;
use super::rbac::{SnapshotArgs, print_structured};
use crate::rbac::authorizer::{Decision, OwnedAttributes};
use crate::rbac::model::{PolicyRule, Subject};
use crate::rbac::request_info;
use crate::rbac::resource_arg::parse_resource_arg;
use crate::rbac::{Attributes, Snapshot, UserInfo, batch};

/// Arguments of `tokenwatch can-i`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  tokenwatch can-i list pods --as system:serviceaccount:default:sa-example --rbac policy/\n  tokenwatch can-i get /healthz --as jane\n  tokenwatch can-i --request 'GET /api/v1/namespaces/default/pods?watch=1' --as jane\n  tokenwatch can-i --list -n kube-system --as system:serviceaccount:kube-system:default\n  tokenwatch can-i --batch requests.jsonl"
)]
pub struct Args {
    /// Verb: get, list, watch, create, update, patch, delete, ... (or `*`).
    #[arg(required_unless_present_any = ["request", "batch", "list"])]
    verb: Option<String>,
    /// RESOURCE[.GROUP][/NAME], or a /non/resource/url.
    #[arg(required_unless_present_any = ["request", "batch", "list"])]
    target: Option<String>,
    /// Subresource, e.g. `log` or `exec`.
    #[arg(long)]
    subresource: Option<String>,
    /// Namespace of the request.
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    /// Ask about all namespaces (the empty namespace).
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// The user to ask for; `system:serviceaccount:NS:NAME` for a ServiceAccount.
    #[arg(long = "as", value_name = "USER", required_unless_present = "batch")]
    as_user: Option<String>,
    /// A group of the user. Repeatable.
    #[arg(long = "as-group", value_name = "GROUP")]
    as_group: Vec<String>,
    /// Use exactly the `--as-group` list: no ServiceAccount groups, no
    /// `system:authenticated`.
    #[arg(long)]
    no_implicit_groups: bool,
    /// Decide an HTTP request instead: 'METHOD URL'.
    #[arg(long, value_name = "METHOD URL", conflicts_with_all = ["verb", "target", "list", "batch"])]
    request: Option<String>,
    /// Read JSON-lines requests from FILE (`-` = stdin), write one answer per line.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["verb", "target", "list"])]
    batch: Option<PathBuf>,
    /// List every rule the user holds in the namespace.
    #[arg(long, conflicts_with_all = ["verb", "target"])]
    list: bool,
    #[command(flatten)]
    snapshot: SnapshotArgs,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    output: OutputFormat,
}

impl Args {
    fn user(&self) -> UserInfo {
        let name = self.as_user.clone().unwrap_or_default();
        if self.no_implicit_groups {
            UserInfo::new(name, self.as_group.clone())
        } else {
            UserInfo::impersonated(&name, &self.as_group)
        }
    }

    fn namespace(&self) -> &str {
        if self.all_namespaces {
            ""
        } else {
            &self.namespace
        }
    }
}

/// The `-o json` form of a decision.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Report<'a> {
    allowed: bool,
    reason: String,
    attributes: OwnedAttributes,
    user: &'a UserInfo,
    #[serde(skip_serializing_if = "Option::is_none")]
    binding: Option<Ref<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<Ref<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<&'a Subject>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<&'a PolicyRule>,
}

#[derive(Debug, Serialize)]
struct Ref<'a> {
    kind: &'a str,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<&'a str>,
}

fn report<'a>(d: &Decision<'a>, attrs: &Attributes<'_>, user: &'a UserInfo) -> Report<'a> {
    let binding = d.binding();
    Report {
        allowed: d.allowed,
        reason: d.reason().to_string(),
        attributes: OwnedAttributes::from(*attrs),
        user,
        binding: binding.map(|b| Ref {
            kind: b.kind(),
            name: &b.name,
            namespace: b.namespace.as_deref(),
        }),
        role: d.role().map(|r| Ref {
            kind: if r.namespace.is_some() {
                "Role"
            } else {
                "ClusterRole"
            },
            name: &r.name,
            namespace: r.namespace.as_deref(),
        }),
        subject: d.subject(),
        rule: d.rule(),
    }
}

/// Runs the command.
#[must_use]
pub fn run(args: Args) -> ExitCode {
    let snapshot = match args.snapshot.load() {
        Ok(s) => s,
        Err(e) => return super::fail(&e),
    };
    if let Some(path) = &args.batch {
        return run_batch(&snapshot, path);
    }
    let user = args.user();
    if args.list {
        return super::rules::print_rules(&snapshot, &user, args.namespace(), args.output);
    }
    let info;
    let attrs = if let Some(req) = &args.request {
        let Some((method, url)) = req.trim().split_once(char::is_whitespace) else {
            eprintln!("tokenwatch: --request wants 'METHOD URL', got {req:?}");
            return ExitCode::from(2);
        };
        info = match request_info::parse(method, url.trim()) {
            Ok(i) => i,
            Err(e) => return super::fail(&e),
        };
        Attributes::from_request_info(&info)
    } else {
        let verb = args.verb.as_deref().unwrap_or_default();
        let target = args.target.as_deref().unwrap_or_default();
        if target.starts_with('/') {
            Attributes::non_resource(verb, target)
        } else {
            let parsed = parse_resource_arg(target);
            match parsed.known {
                Some(k)
                    if !k.namespaced
                        && !args.namespace().is_empty()
                        && args.namespace != "default" =>
                {
                    eprintln!("Warning: resource '{}' is not namespace scoped", k.resource);
                }
                None if parsed.resource != "*" => {
                    tracing::info!(resource = %parsed.resource, group = %parsed.group, "not a built-in resource; using it as typed");
                }
                _ => {}
            }
            info = request_info::RequestInfo {
                is_resource_request: true,
                verb: verb.to_owned(),
                api_group: parsed.group,
                namespace: args.namespace().to_owned(),
                resource: parsed.resource,
                subresource: args.subresource.clone().unwrap_or_default(),
                name: parsed.name,
                ..request_info::RequestInfo::default()
            };
            Attributes::from_request_info(&info)
        }
    };
    let decision = crate::rbac::authorizer::decide(&snapshot, &attrs, &user);
    match print_structured(args.output, &report(&decision, &attrs, &user)) {
        Ok(true) => {}
        Ok(false) => {
            if decision.allowed {
                println!("yes");
            } else {
                let reason = decision.reason().to_string();
                if reason.is_empty() {
                    println!("no");
                } else {
                    println!("no - {reason}");
                }
            }
        }
        Err(e) => return super::fail(&e),
    }
    if decision.allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn run_batch(snapshot: &Snapshot, path: &std::path::Path) -> ExitCode {
    let stdout = std::io::stdout().lock();
    let result = if path.as_os_str() == "-" {
        // Standard input is a stream: answer each line as it comes.
        let input: Box<dyn BufRead> = Box::new(std::io::stdin().lock());
        batch::run(snapshot, input, std::io::BufWriter::new(stdout), true)
    } else {
        match std::fs::File::open(path) {
            Ok(f) => batch::run(
                snapshot,
                BufReader::new(f),
                std::io::BufWriter::new(stdout),
                false,
            ),
            Err(e) => {
                eprintln!("tokenwatch: cannot open {}: {e}", path.display());
                return ExitCode::from(2);
            }
        }
    };
    match result {
        Ok(stats) if stats.malformed > 0 => {
            eprintln!("tokenwatch: {} malformed lines", stats.malformed);
            ExitCode::from(2)
        }
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => super::fail(&e),
    }
}
