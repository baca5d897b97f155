//! Command-line interface: one file per subcommand, no logic of its own.
//!
//! Every command returns an [`ExitCode`]; errors are printed here with their
//! whole chain, once, and map to exit code 2 unless a command says otherwise.

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

pub mod agent;
pub mod can_i;
pub mod decode;
pub mod rbac;
pub mod replay;
pub mod request_info;
pub mod rules;
pub mod trail;
pub mod watch;
pub mod who_can;

/// Node-level ServiceAccount token audit and usage monitor for Kubernetes.
#[derive(Debug, Parser)]
#[command(name = "tokenwatch", version, about, long_about = None)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "TOKENWATCH_LOG_FORMAT")]
    pub log_format: LogFormat,

    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `tokenwatch=debug`.
    #[arg(long, global = true, default_value = "warn", env = "TOKENWATCH_LOG")]
    pub log: String,

    #[command(subcommand)]
    pub command: Command,
}

/// How logs are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Output format shared by the commands that print results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum OutputFormat {
    /// Aligned columns for people.
    #[default]
    Table,
    /// JSON for machines.
    Json,
    /// YAML.
    Yaml,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: sensor, correlation, RBAC, trail, metrics (the DaemonSet's process).
    Agent(agent::Args),
    /// Run the kernel sensor alone and print its events as JSON lines.
    Watch(watch::Args),
    /// Decode a ServiceAccount token (file, stdin or Secret manifest): kind,
    /// user, groups, extras, validity, warnings, and the signature with keys.
    Decode(decode::Args),
    /// May a user do this? Like `kubectl auth can-i`, against an RBAC snapshot.
    CanI(can_i::Args),
    /// Who may do this? The subjects and the bindings that allow them.
    WhoCan(who_can::Args),
    /// Every rule a user holds in a namespace.
    Rules(rules::Args),
    /// RBAC snapshots: import, list-snapshots, diff, risk.
    Rbac(rbac::Args),
    /// The attributes kube-apiserver derives from METHOD URL, as JSON.
    RequestInfo(request_info::Args),
    /// Replay trails and kube-apiserver audit logs against RBAC snapshots:
    /// drift, token timelines, subject summaries.
    Replay(replay::Args),
    /// The audit trail: query, export, verify, stats, prune.
    Trail(trail::Args),
}

/// Sets up logging and runs the chosen command.
#[must_use]
pub fn run(cli: Cli) -> ExitCode {
    init_logging(cli.log_format, &cli.log);
    match cli.command {
        Command::Agent(args) => agent::run(args),
        Command::Watch(args) => watch::run(args),
        Command::Decode(args) => decode::run(args),
        Command::CanI(args) => can_i::run(args),
        Command::WhoCan(args) => who_can::run(args),
        Command::Rules(args) => rules::run(args),
        Command::Rbac(args) => rbac::run(args),
        Command::RequestInfo(args) => request_info::run(args),
        Command::Replay(args) => replay::run(args),
        Command::Trail(args) => trail::run(args),
    }
}

fn init_logging(format: LogFormat, filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours only on a terminal: a container runtime's log file keeps
        // escape codes verbatim (seen in the CRI container test).
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    // A second call (tests that run several commands in one process) is harmless.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Prints an error with its whole `source()` chain on one line, prefixed
/// with `tokenwatch:`, and returns exit code 2. Output cut short by its
/// reader (`tokenwatch trail export | head`: a broken pipe) is not an
/// error: nothing is printed and the exit code is 0, as for tools killed
/// by SIGPIPE.
pub fn fail(err: &(dyn std::error::Error + 'static)) -> ExitCode {
    if is_broken_pipe(err) {
        return ExitCode::SUCCESS;
    }
    eprintln!("tokenwatch: {}", error_chain(err));
    ExitCode::from(2)
}

/// Whether the error, or one of its sources, is writing to a closed pipe.
fn is_broken_pipe(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        {
            return true;
        }
        next = e.source();
    }
    false
}

pub use tokenwatch_core::error::error_chain;
