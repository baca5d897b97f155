//! `tokenwatch decode`: what jwt.io shows, for Kubernetes.
//!
//! Exit codes: 0 for a parsed token (expired or not), 1 for a token whose
//! signature fails verification against the given keys, 2 for input that
//! is not a token (or keys that cannot be loaded).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::cli::{OutputFormat, fail};
use crate::identity::{Identity, KeySet, Report, read_token_input, unix_now};

/// Arguments of `tokenwatch decode`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Token file, or a Secret manifest (`kubectl get secret -o yaml|json`);
    /// `-` or nothing reads standard input.
    #[arg(value_name = "FILE|-")]
    pub input: Option<PathBuf>,

    /// PEM public (or private) key to verify with, as given to the API
    /// server's `--service-account-key-file`; repeatable.
    #[arg(long = "key", value_name = "PEM")]
    pub keys: Vec<PathBuf>,

    /// JWKS file to verify with (e.g. `kubectl get --raw /openid/v1/jwks`);
    /// repeatable.
    #[arg(long = "jwks", value_name = "FILE")]
    pub jwks: Vec<PathBuf>,

    /// Issuer URL whose OIDC discovery document (and `jwks_uri`) gives the
    /// keys to verify with.
    #[arg(long, value_name = "URL")]
    pub oidc_issuer: Option<String>,

    /// CA bundle (PEM) to trust for `--oidc-issuer` instead of the public
    /// roots.
    #[arg(long, value_name = "PEM", requires = "oidc_issuer")]
    pub ca_file: Option<PathBuf>,

    /// An audience the API server accepts (its `--api-audiences`); with it,
    /// a token for none of them is flagged. Repeatable.
    #[arg(long = "audience", value_name = "AUD")]
    pub audiences: Vec<String>,

    /// Judge validity at this time (RFC 3339, Unix seconds, or a duration
    /// before now such as 2h) instead of now: for incident review of old tokens.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub at: Option<i64>,

    /// Output format.
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

fn parse_time(text: &str) -> Result<i64, String> {
    if let Ok(secs) = text.parse::<i64>() {
        return Ok(secs);
    }
    let nanos =
        crate::time::parse_bound(text, std::time::SystemTime::now()).map_err(|e| e.to_string())?;
    Ok(nanos.div_euclid(1_000_000_000))
}

fn load_keys(args: &Args) -> Result<KeySet, crate::identity::Error> {
    let mut keys = KeySet::new();
    for path in &args.keys {
        keys.add_pem_file(path)?;
    }
    for path in &args.jwks {
        keys.add_jwks_file(path)?;
    }
    if let Some(issuer) = &args.oidc_issuer {
        keys.add_oidc_issuer(issuer, args.ca_file.as_deref())?;
    }
    Ok(keys)
}

/// Runs the command.
#[must_use]
pub fn run(args: Args) -> ExitCode {
    let keys = match load_keys(&args) {
        Ok(keys) => keys,
        Err(err) => return fail(&err),
    };
    let identity = match read_token_input(args.input.as_deref())
        .and_then(|t| Identity::from_token(&t, &keys))
    {
        Ok(identity) => identity,
        Err(err) => return fail(&err),
    };
    let report = Report::new(&identity, args.at.unwrap_or_else(unix_now), &args.audiences);
    let printed = match args.output {
        OutputFormat::Table => Ok(report.to_table().to_string()),
        OutputFormat::Json => serde_json::to_string_pretty(&report).map_err(|e| e.to_string()),
        OutputFormat::Yaml => serde_yaml_ng::to_string(&report).map_err(|e| e.to_string()),
    };
    let text = match printed {
        Ok(text) => text,
        Err(err) => {
            eprintln!("tokenwatch: cannot format the report: {err}");
            return ExitCode::from(2);
        }
    };
    // A closed pipe (`| head`) is not an error worth a panic.
    let mut stdout = std::io::stdout().lock();
    if let Err(err) = writeln!(stdout, "{}", text.trim_end())
        && err.kind() != std::io::ErrorKind::BrokenPipe
    {
        eprintln!("tokenwatch: cannot write the report: {err}");
        return ExitCode::from(2);
    }
    if report.signature.is_failure() {
        eprintln!("tokenwatch: signature {}", report.signature.describe());
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
