//! The `tokenwatch` binary: parses the command line and hands off to `cli`
//! (one file per subcommand). Nothing imports this crate; the logic is in
//! `tokenwatch_core` (pure) and `tokenwatch_host` (the host side).

use std::process::ExitCode;

use clap::Parser as _;

mod cli;

// The library crates' modules, named from the crate root so that the
// commands say `crate::rbac`, `crate::trail` whichever crate holds them.
use tokenwatch_core::{identity, rbac, replay};
use tokenwatch_host::{agent, kubesync, sensor, snapshot_store, store, trail};

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    cli::run(cli)
}
