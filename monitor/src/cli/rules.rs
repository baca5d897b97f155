//! `tokenwatch rules`: every rule a user holds in a namespace, like
//! `kubectl auth can-i --list` (also reached as `can-i --list`).

use std::process::ExitCode;

use serde::Serialize;

use super::OutputFormat;
use super::rbac::{SnapshotArgs, new_table, print_structured};
use crate::rbac::rules::{HeldRule, rules_for, table_rows};
use crate::rbac::{Snapshot, UserInfo};

/// Arguments of `tokenwatch rules`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The user; `system:serviceaccount:NS:NAME` for a ServiceAccount.
    #[arg(long = "as", value_name = "USER")]
    as_user: String,
    /// A group of the user. Repeatable.
    #[arg(long = "as-group", value_name = "GROUP")]
    as_group: Vec<String>,
    /// Use exactly the `--as-group` list.
    #[arg(long)]
    no_implicit_groups: bool,
    /// Namespace.
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    /// Cluster-wide rules only (the empty namespace).
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
    let user = if args.no_implicit_groups {
        UserInfo::new(args.as_user.clone(), args.as_group.clone())
    } else {
        UserInfo::impersonated(&args.as_user, &args.as_group)
    };
    let ns = if args.all_namespaces {
        ""
    } else {
        &args.namespace
    };
    print_rules(&snapshot, &user, ns, args.output)
}

#[derive(Serialize)]
struct RulesReport<'a> {
    user: &'a UserInfo,
    namespace: &'a str,
    rules: &'a [HeldRule<'a>],
    errors: &'a [&'a str],
}

/// Prints the rules `user` holds in `namespace` (shared with `can-i --list`).
#[must_use]
pub fn print_rules(
    snapshot: &Snapshot,
    user: &UserInfo,
    namespace: &str,
    output: OutputFormat,
) -> ExitCode {
    let held = rules_for(snapshot, user, namespace);
    let report = RulesReport {
        user,
        namespace,
        rules: &held.rules,
        errors: &held.errors,
    };
    match print_structured(output, &report) {
        Ok(true) => return ExitCode::SUCCESS,
        Ok(false) => {}
        Err(e) => return super::fail(&e),
    }
    let mut t = new_table(&["Resources", "Non-Resource URLs", "Resource Names", "Verbs"]);
    for row in table_rows(&held.rules) {
        t.add_row(vec![
            row.resources,
            format!("[{}]", row.non_resource_urls.join(" ")),
            format!("[{}]", row.resource_names.join(" ")),
            format!("[{}]", row.verbs.join(" ")),
        ]);
    }
    println!("{t}");
    for e in &held.errors {
        eprintln!("Warning: RBAC: {e}");
    }
    ExitCode::SUCCESS
}
