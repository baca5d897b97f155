//! `tokenwatch request-info METHOD URL`: the attributes kube-apiserver
//! derives from a request, as JSON with its field names; where its parser
//! fails, `{"error": "..."}` and exit code 2.

use std::process::ExitCode;

use crate::rbac::request_info;

/// Arguments of `tokenwatch request-info`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// HTTP method (GET, POST, PUT, PATCH, DELETE, HEAD, ...).
    method: String,
    /// Request URI (`/api/v1/pods?watch=1`) or absolute URL.
    url: String,
}

/// Runs the command.
#[must_use]
pub fn run(args: Args) -> ExitCode {
    match request_info::parse(&args.method, &args.url) {
        Ok(info) => match serde_json::to_string_pretty(&info) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => super::fail(&e),
        },
        Err(e) => {
            println!("{}", serde_json::json!({ "error": e.to_string() }));
            ExitCode::from(2)
        }
    }
}
