//! `tokenwatch who-can VERB RESOURCE[/NAME]`: the subjects allowed, and
//! through which bindings, like kubectl-who-can.

use std::process::ExitCode;

use super::OutputFormat;
use super::rbac::{SnapshotArgs, new_table, print_structured};
use crate::rbac::Attributes;
use crate::rbac::resource_arg::parse_resource_arg;
use crate::rbac::who_can::{NamespaceScope, who_can};

/// Arguments of `tokenwatch who-can`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Verb.
    verb: String,
    /// RESOURCE[.GROUP][/NAME], or a /non/resource/url.
    target: String,
    /// Subresource.
    #[arg(long)]
    subresource: Option<String>,
    /// Namespace whose RoleBindings count (ignored for cluster-scoped
    /// built-in resources and URLs).
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    /// Count RoleBindings of every namespace.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    #[command(flatten)]
    snapshot: SnapshotArgs,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    output: OutputFormat,
}

/// Runs the command.
#[must_use]
pub fn run(args: Args) -> ExitCode {
    let snapshot = match args.snapshot.load() {
        Ok(s) => s,
        Err(e) => return super::fail(&e),
    };
    let parsed = parse_resource_arg(&args.target);
    let sub = args.subresource.clone().unwrap_or_default();
    let (attrs, scope) = if args.target.starts_with('/') {
        (
            Attributes::non_resource(&args.verb, &args.target),
            NamespaceScope::Request,
        )
    } else {
        let cluster_scoped = parsed.known.is_some_and(|k| !k.namespaced);
        let ns = if cluster_scoped || args.all_namespaces {
            ""
        } else {
            args.namespace.as_str()
        };
        let scope = if args.all_namespaces && !cluster_scoped {
            NamespaceScope::All
        } else {
            NamespaceScope::Request
        };
        (
            Attributes::resource(
                &args.verb,
                &parsed.group,
                &parsed.resource,
                ns,
                &parsed.name,
            )
            .with_subresource(&sub),
            scope,
        )
    };
    let result = who_can(&snapshot, &attrs, scope);
    match print_structured(args.output, &result) {
        Ok(true) => return ExitCode::SUCCESS,
        Ok(false) => {}
        Err(e) => return super::fail(&e),
    }
    if result.entries.is_empty() {
        println!(
            "No subjects found with permissions to {} {}",
            args.verb, args.target
        );
    } else {
        let mut t = new_table(&["KIND", "NAME", "NAMESPACE", "BINDING", "ROLE"]);
        for e in &result.entries {
            t.add_row(vec![
                e.kind.clone(),
                e.name.clone(),
                e.namespace.clone(),
                format!("{} {}", e.binding_kind, e.binding),
                format!("{} {}", e.role_kind, e.role),
            ]);
        }
        println!("{t}");
    }
    for b in &result.missing_roles {
        eprintln!("Warning: binding {b} refers to a missing role");
    }
    ExitCode::SUCCESS
}
