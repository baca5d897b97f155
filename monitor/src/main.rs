//! The `tokenwatch` binary: parses the command line and hands off to `cli`.

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = tokenwatch::cli::Cli::parse();
    tokenwatch::cli::run(cli)
}
