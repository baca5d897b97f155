//! `tokenwatch watch`: the kernel sensor alone, events as JSON lines.

use std::process::ExitCode;

/// Arguments of `tokenwatch watch`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the command.
#[must_use]
pub fn run(_args: Args) -> ExitCode {
    ExitCode::SUCCESS
}
