//! `tokenwatch trail query|export|verify|stats|prune`: read, export, check
//! and prune the audit trail in `--data-dir`.
//!
//! While an agent holds the data directory (sled lets one process open
//! it), `query`, `export`, `stats` and `verify` ask that agent over its
//! socket in the directory ([`crate::trail::live`]) and print the same.
//! `prune` does not: retention is the running agent's own job.
//!
//! Exit codes: 0 on success; `verify` exits 1 when the chain is broken
//! (naming the first record that does not match); 2 on errors, including a
//! data directory held by another process that does not answer.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use super::OutputFormat;
use super::rbac::{new_table, print_structured};
use crate::store::{self, StoreError};
use crate::trail::live::{self, LiveError};
use crate::trail::{self, Query, Record, Trail, TrailError, VerifyReport};

/// Arguments of `tokenwatch trail`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: TrailCommand,
}

#[derive(Debug, clap::Subcommand)]
enum TrailCommand {
    /// Records matching filters, oldest first (the most selective index is
    /// used, then every filter is checked).
    Query(QueryArgs),
    /// The records matching filters as JSON lines, exactly as stored
    /// (schema in docs/trail.md). Unfiltered, the output verifies on its own.
    Export(ExportArgs),
    /// Walk the hash chain (or an exported file); exit 1 naming the first
    /// record that does not match.
    Verify(VerifyArgs),
    /// Record counts, first and last record, retention totals, sizes.
    Stats(StatsArgs),
    /// Delete the oldest records by age and/or size; the rest still verifies.
    Prune(PruneArgs),
    /// The checkpoint signing key's public half (verifier key, fingerprint)
    /// and the trail's origin; or make a new key file for a Secret.
    Key(KeyArgs),
}

/// Filters shared by `query` and `export`.
#[derive(Debug, clap::Args)]
struct Filters {
    /// Token subject, e.g. `system:serviceaccount:shop:web`.
    #[arg(long)]
    subject: Option<String>,
    /// Reader pod: `namespace/name`, a pod UID, or a name with `--namespace`.
    #[arg(long)]
    pod: Option<String>,
    /// Namespace of the reader pod or of the token.
    #[arg(short, long)]
    namespace: Option<String>,
    /// Token JTI (the `credential-id` in API-server audit logs).
    #[arg(long)]
    jti: Option<String>,
    /// Finding kind, e.g. `foreign-token`, `host-reader`, `legacy-token`.
    #[arg(long)]
    finding: Option<String>,
    /// Appended at or after: RFC 3339, or a duration ago (`1h`, `7d`).
    #[arg(long)]
    since: Option<String>,
    /// Appended at or before: RFC 3339, or a duration ago (`1h`, `7d`).
    #[arg(long)]
    until: Option<String>,
    /// At most this many records.
    #[arg(long)]
    limit: Option<usize>,
}

impl Filters {
    fn query(&self) -> Result<Query, TrailError> {
        let now = SystemTime::now();
        let time = |t: &Option<String>| t.as_deref().map(|s| trail::parse_time(s, now)).transpose();
        Ok(Query {
            subject: self.subject.clone(),
            pod: self.pod.clone(),
            namespace: self.namespace.clone(),
            jti: self.jti.clone(),
            finding: self
                .finding
                .as_deref()
                .map(trail::parse_finding)
                .transpose()?,
            since: time(&self.since)?,
            until: time(&self.until)?,
            limit: self.limit,
        })
    }
}

#[derive(Debug, clap::Args)]
struct QueryArgs {
    #[command(flatten)]
    filters: Filters,
    /// Data directory of the store.
    #[arg(long, env = store::DATA_DIR_ENV, default_value = store::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    #[arg(short, long, value_enum, default_value_t)]
    output: OutputFormat,
}

#[derive(Debug, clap::Args)]
struct ExportArgs {
    #[command(flatten)]
    filters: Filters,
    /// Write to this file instead of standard output.
    #[arg(short = 'f', long)]
    file: Option<PathBuf>,
    /// Data directory of the store.
    #[arg(long, env = store::DATA_DIR_ENV, default_value = store::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
}

#[derive(Debug, clap::Args)]
struct VerifyArgs {
    /// Verify this exported trail (JSON lines; `-` = standard input)
    /// instead of the store.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Collected sink output with signed checkpoints (JSON lines or signed
    /// notes, several nodes mixed): the trail must contain each trusted
    /// checkpoint's record with its hash. Exit 1 naming one it cannot match.
    #[arg(long, value_name = "FILE", num_args = 1..)]
    checkpoints: Vec<PathBuf>,
    /// Trusted checkpoint key (`name+id+key`, from `tokenwatch trail key`),
    /// or a file of them, one a line. Default: the keys the trail recorded
    /// (a data dir only; pin one from outside the node to rely on it).
    #[arg(long = "key", value_name = "KEY|FILE")]
    keys: Vec<String>,
    /// The trail's origin (default: the data dir's; for an export, the one
    /// whose trusted checkpoints match it).
    #[arg(long)]
    origin: Option<String>,
    /// Data directory of the store.
    #[arg(long, env = store::DATA_DIR_ENV, default_value = store::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    #[arg(short, long, value_enum, default_value_t)]
    output: OutputFormat,
}

#[derive(Debug, clap::Args)]
struct KeyArgs {
    /// Read this key file (a mounted Secret) instead of the data dir's.
    #[arg(long, env = "TOKENWATCH_CHECKPOINT_KEY")]
    checkpoint_key: Option<PathBuf>,
    /// Write a new key (mode 0600, never over an existing file) here and
    /// print its public half, e.g. to make a Secret for every node.
    #[arg(long, value_name = "FILE", conflicts_with = "checkpoint_key")]
    generate: Option<PathBuf>,
    /// Key name of a generated key.
    #[arg(long, default_value = trail::checkpoint_key::PEM_KEY_NAME, requires = "generate")]
    name: String,
    /// Data directory of the store.
    #[arg(long, env = store::DATA_DIR_ENV, default_value = store::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    #[arg(short, long, value_enum, default_value_t)]
    output: OutputFormat,
}

#[derive(Debug, clap::Args)]
struct StatsArgs {
    /// Data directory of the store.
    #[arg(long, env = store::DATA_DIR_ENV, default_value = store::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    #[arg(short, long, value_enum, default_value_t)]
    output: OutputFormat,
}

#[derive(Debug, clap::Args)]
struct PruneArgs {
    /// Delete records appended longer ago than this (`30d`, `12h`).
    #[arg(long)]
    max_age: Option<humantime::Duration>,
    /// Then delete the oldest until the rest take at most this (`500MiB`).
    #[arg(long)]
    max_bytes: Option<String>,
    /// Data directory of the store.
    #[arg(long, env = store::DATA_DIR_ENV, default_value = store::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    #[arg(short, long, value_enum, default_value_t)]
    output: OutputFormat,
}

/// Runs `tokenwatch trail`.
#[must_use]
pub fn run(args: Args) -> ExitCode {
    let result = match args.command {
        TrailCommand::Query(a) => query(&a),
        TrailCommand::Export(a) => export(&a),
        TrailCommand::Verify(a) => verify(&a),
        TrailCommand::Stats(a) => stats(&a),
        TrailCommand::Prune(a) => prune(&a),
        TrailCommand::Key(a) => key(&a),
    };
    result.unwrap_or_else(|e| super::fail(&e))
}

/// Errors of the commands: the trail's, or writing to stdout.
#[derive(Debug, thiserror::Error)]
enum CommandError {
    /// The trail failed.
    #[error(transparent)]
    UseTrail(#[from] TrailError),
    /// Asking the running agent failed.
    #[error(transparent)]
    AskAgent(#[from] LiveError),
    /// Writing the output failed.
    #[error("cannot write the output")]
    WriteOutput(#[source] std::io::Error),
    /// Checking checkpoints failed.
    #[error(transparent)]
    CheckCheckpoints(#[from] trail::vouch::VouchError),
    /// The checkpoint key could not be read or made.
    #[error(transparent)]
    UseKey(#[from] trail::checkpoint_key::KeyFileError),
}

/// The trail itself, or the agent that holds it.
enum Store {
    Local(Trail),
    Agent(PathBuf),
}

/// Opens the trail in `data_dir`; when a running agent holds it and
/// answers on its socket there, the agent.
fn open(data_dir: &Path) -> Result<Store, CommandError> {
    match Trail::open_existing(data_dir) {
        Ok(trail) => Ok(Store::Local(trail)),
        Err(TrailError::OpenStore {
            source: StoreError::LockDatabase { .. },
        }) if live::socket_path(data_dir).exists() => Ok(Store::Agent(data_dir.to_owned())),
        Err(e) => Err(e.into()),
    }
}

/// Matching records with their stored lines, from either source.
type Rows = Box<dyn Iterator<Item = Result<(Record, Vec<u8>), CommandError>>>;

fn rows(store: Store, q: &Query) -> Result<Rows, CommandError> {
    match store {
        Store::Local(trail) => {
            let mut iter = trail.query(q)?;
            Ok(Box::new(std::iter::from_fn(move || {
                iter.next_raw().map(|r| r.map_err(CommandError::from))
            })))
        }
        Store::Agent(dir) => {
            let mut client = live::Client::send(&dir, &live::Request::Export { query: q.into() })?;
            let mut n = 0u64;
            Ok(Box::new(std::iter::from_fn(move || {
                let line = match client.next_line() {
                    Ok(line) => line?,
                    Err(e) => return Some(Err(e.into())),
                };
                n += 1;
                Some(agent_row(n, line))
            })))
        }
    }
}

/// A line the agent sent: a record, or the error that cut the answer short.
fn agent_row(n: u64, line: Vec<u8>) -> Result<(Record, Vec<u8>), CommandError> {
    #[derive(serde::Deserialize)]
    struct Cut {
        error: String,
    }
    if let Ok(cut) = serde_json::from_slice::<Cut>(&line) {
        return Err(LiveError::Refused(cut.error).into());
    }
    let record = trail::record::decode_line(n, &line)
        .map_err(trail::TrailError::from)?
        .record;
    Ok((record, line))
}

fn query(a: &QueryArgs) -> Result<ExitCode, CommandError> {
    let q = a.filters.query()?;
    let iter = rows(open(&a.data_dir)?, &q)?;
    let mut out = std::io::stdout().lock();
    let write = CommandError::WriteOutput;
    match a.output {
        OutputFormat::Json => {
            // The stored lines, as an array: the export schema.
            out.write_all(b"[").map_err(write)?;
            let mut first = true;
            for item in iter {
                let (_, line) = item?;
                out.write_all(if first { b"\n" } else { b",\n" })
                    .map_err(write)?;
                out.write_all(&line).map_err(write)?;
                first = false;
            }
            out.write_all(if first { b"]\n" } else { b"\n]\n" })
                .map_err(write)?;
        }
        OutputFormat::Yaml => {
            let records = iter
                .map(|r| r.map(|(record, _)| record))
                .collect::<Result<Vec<_>, _>>()?;
            drop(out);
            print_structured(a.output, &records).map_err(write)?;
        }
        OutputFormat::Table => {
            let mut t = new_table(&[
                "SEQ", "TIME", "KIND", "COUNT", "SUBJECT", "POD", "PROCESS", "FINDINGS",
            ]);
            let mut n = 0usize;
            let mut accesses = 0u64;
            for r in iter {
                let (r, _) = r?;
                let e = &r.entry;
                let process = e
                    .reader
                    .as_ref()
                    .map(|p| format!("{}[{}]", p.comm, p.tgid))
                    .unwrap_or_default();
                accesses += e.accesses();
                // A folded record: its count and the span it covers.
                let count = match &e.repeated {
                    Some(rep) => format!("{} ({} .. {})", rep.count, rep.first, rep.last),
                    None if e.accesses() > 0 => "1".to_owned(),
                    None => "-".to_owned(),
                };
                t.add_row(vec![
                    r.seq.to_string(),
                    r.time.clone(),
                    e.kind.as_str().to_owned(),
                    count,
                    e.subject().unwrap_or("-").to_owned(),
                    e.pod_key().unwrap_or_else(|| "-".to_owned()),
                    process,
                    trail::finding_names(e),
                ]);
                n += 1;
            }
            if n == 0 {
                writeln!(out, "no record matches").map_err(write)?;
            } else {
                writeln!(out, "{t}").map_err(write)?;
                writeln!(
                    out,
                    "{n} record(s); {accesses} token access(es) (a folded record counts its repeats)"
                )
                .map_err(write)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn export(a: &ExportArgs) -> Result<ExitCode, CommandError> {
    let q = a.filters.query()?;
    let rows = rows(open(&a.data_dir)?, &q)?;
    let out: Box<dyn std::io::Write> = match &a.file {
        Some(path) => Box::new(std::fs::File::create(path).map_err(CommandError::WriteOutput)?),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut out = std::io::BufWriter::new(out);
    let write = |source| TrailError::WriteExport { source };
    let mut n = 0u64;
    for item in rows {
        let (_, line) = item?;
        out.write_all(&line).map_err(write)?;
        out.write_all(b"\n").map_err(write)?;
        n += 1;
    }
    out.flush().map_err(write)?;
    tracing::info!(records = n, "trail exported");
    Ok(ExitCode::SUCCESS)
}

fn verify(a: &VerifyArgs) -> Result<ExitCode, CommandError> {
    if !a.checkpoints.is_empty() {
        return verify_checkpoints(a);
    }
    let (report, what) = match &a.file {
        Some(path) if path.as_os_str() == "-" => (
            trail::verify::verify_lines(std::io::stdin().lock())?,
            "exported trail (stdin)".to_owned(),
        ),
        Some(path) => {
            let file =
                std::fs::File::open(path).map_err(|source| TrailError::ReadExport { source })?;
            (
                trail::verify::verify_lines(std::io::BufReader::new(file))?,
                format!("exported trail {}", path.display()),
            )
        }
        None => match open(&a.data_dir)? {
            Store::Local(trail) => (
                trail.verify()?,
                format!("trail in {}", a.data_dir.display()),
            ),
            Store::Agent(dir) => (
                live::verify(&dir)?,
                format!("trail in {} (asked the running agent)", dir.display()),
            ),
        },
    };
    let code = if report.intact {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    };
    if print_structured(a.output, &report).map_err(CommandError::WriteOutput)? {
        return Ok(code);
    }
    print_verify(&report, &what);
    Ok(code)
}

fn print_verify(report: &VerifyReport, what: &str) {
    let range = match (report.first_seq, report.last_seq) {
        (Some(f), Some(l)) => format!(" (records {f} to {l})"),
        _ => String::new(),
    };
    match &report.failure {
        None => {
            println!("{what}: intact, {} records checked{range}", report.checked);
            if let Some(a) = &report.anchor {
                println!(
                    "  starts after record {} ({} pruned by retention), anchor hash {}",
                    a.seq, a.pruned_records, a.hash
                );
            }
            if let Some(h) = &report.last_hash {
                println!("  last hash {h}");
            }
        }
        Some(m) => {
            println!(
                "{what}: BROKEN at record {} ({}): {}",
                m.seq,
                m.problem.as_str(),
                m.detail
            );
            println!("  {} records before it matched{range}", report.checked);
        }
    }
}

/// `trail verify --checkpoints`: the chain, then the collected checkpoints.
fn verify_checkpoints(a: &VerifyArgs) -> Result<ExitCode, CommandError> {
    use trail::vouch::{self, TrailSource};
    let set = vouch::read_collected(&a.checkpoints)?;
    let keys = vouch::parse_keys(&a.keys)?;
    let source = match &a.file {
        Some(path) => TrailSource::File(path),
        None => TrailSource::Dir(&a.data_dir),
    };
    let v = vouch::vouch(source, &set, &keys, a.origin.as_deref())?;
    let code = if v.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    };
    if print_structured(a.output, &v).map_err(CommandError::WriteOutput)? {
        return Ok(code);
    }
    print_verify(&v.chain, &v.what);
    print!("{}", checkpoint_text(&v.checkpoints));
    Ok(code)
}

/// The checkpoint judgement in words (shared with `replay --checkpoints`).
#[must_use]
pub fn checkpoint_text(r: &trail::checkpoint::CheckpointReport) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let origin = r.origin.as_deref().unwrap_or("?");
    let _ = writeln!(
        s,
        "checkpoints: {} read, {} of this trail ({origin}) matched, {} failed, {} pruned",
        r.read,
        r.matched,
        r.failures.len(),
        r.pruned
    );
    for k in &r.trusted_keys {
        let _ = writeln!(s, "  trusted key {k}");
    }
    for f in &r.failures {
        let _ = writeln!(
            s,
            "  FAILED {} ({}): {}",
            f.checkpoint,
            f.problem.as_str(),
            f.detail
        );
    }
    match &r.vouched {
        Some(v) => {
            let _ = writeln!(s, "  vouched for up to record {} by the {v}", v.seq);
        }
        None => {
            let _ = writeln!(s, "  no record is vouched for by a checkpoint");
        }
    }
    if r.unvouched_records > 0 {
        let _ = writeln!(
            s,
            "  {} records after it (up to record {}) are not vouched for: appended after the last checkpoint collected (after a crash, or not shipped yet); not evidence of tampering",
            r.unvouched_records, r.last_seq
        );
    }
    for n in &r.not_trusted {
        let _ = writeln!(
            s,
            "  not trusted: {} checkpoints of {} (node {}, key {}): {}, first at {}",
            n.count,
            n.origin,
            n.node,
            n.keys.join(","),
            n.reason.as_str(),
            n.first_source
        );
    }
    for u in &r.unreadable {
        let _ = writeln!(s, "  unreadable checkpoint at {}: {}", u.source, u.error);
    }
    s
}

fn key(a: &KeyArgs) -> Result<ExitCode, CommandError> {
    use trail::checkpoint_key;
    let (signer, file) = if let Some(path) = &a.generate {
        (checkpoint_key::generate_file(path, &a.name)?, path.clone())
    } else {
        let path = a
            .checkpoint_key
            .clone()
            .unwrap_or_else(|| checkpoint_key::key_path(&a.data_dir));
        (checkpoint_key::load(&path)?, path)
    };
    // The origin, when the data dir has a trail (asking its agent if it runs).
    let origin = if a.generate.is_some() || !a.data_dir.is_dir() {
        None
    } else {
        match open(&a.data_dir) {
            Ok(Store::Local(trail)) => trail.origin()?,
            Ok(Store::Agent(dir)) => live::stats(&dir)?.origin,
            Err(_) => None,
        }
    };
    let v = signer.verifier();
    #[derive(serde::Serialize)]
    struct KeyInfo {
        name: String,
        verifier_key: String,
        key_id: String,
        fingerprint: String,
        public_key: String,
        file: PathBuf,
        #[serde(skip_serializing_if = "Option::is_none")]
        origin: Option<String>,
    }
    let info = KeyInfo {
        name: v.name().to_owned(),
        verifier_key: v.to_string(),
        key_id: v.id_hex(),
        fingerprint: v.fingerprint(),
        public_key: v.public_base64(),
        file,
        origin,
    };
    if print_structured(a.output, &info).map_err(CommandError::WriteOutput)? {
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = new_table(&["", ""]);
    t.add_row(vec!["name".to_owned(), info.name]);
    t.add_row(vec!["verifier key".to_owned(), info.verifier_key]);
    t.add_row(vec!["key id".to_owned(), info.key_id]);
    t.add_row(vec!["fingerprint".to_owned(), info.fingerprint]);
    t.add_row(vec!["public key (Ed25519)".to_owned(), info.public_key]);
    t.add_row(vec!["file".to_owned(), info.file.display().to_string()]);
    if let Some(o) = info.origin {
        t.add_row(vec!["trail origin".to_owned(), o]);
    }
    println!("{t}");
    Ok(ExitCode::SUCCESS)
}

fn stats(a: &StatsArgs) -> Result<ExitCode, CommandError> {
    let s = match open(&a.data_dir)? {
        Store::Local(trail) => trail.stats()?,
        Store::Agent(dir) => live::stats(&dir)?,
    };
    if print_structured(a.output, &s).map_err(CommandError::WriteOutput)? {
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = new_table(&["", ""]);
    t.add_row(vec!["records".to_owned(), s.records.to_string()]);
    if let Some(f) = &s.first {
        t.add_row(vec!["first".to_owned(), format!("{} at {}", f.seq, f.time)]);
    }
    if let Some(l) = &s.last {
        t.add_row(vec!["last".to_owned(), format!("{} at {}", l.seq, l.time)]);
        t.add_row(vec!["last hash".to_owned(), l.hash.clone()]);
    }
    t.add_row(vec![
        "pruned".to_owned(),
        format!("{} records, {} bytes", s.pruned_records, s.pruned_bytes),
    ]);
    t.add_row(vec![
        "logical bytes".to_owned(),
        s.logical_bytes.to_string(),
    ]);
    t.add_row(vec!["disk bytes".to_owned(), s.disk_bytes.to_string()]);
    for (kind, n) in &s.findings {
        t.add_row(vec![format!("finding {kind}"), n.to_string()]);
    }
    println!("{t}");
    Ok(ExitCode::SUCCESS)
}

fn prune(a: &PruneArgs) -> Result<ExitCode, CommandError> {
    let max_bytes = a.max_bytes.as_deref().map(trail::parse_size).transpose()?;
    let trail = Trail::open_existing(&a.data_dir)?;
    let report = trail.apply_retention(a.max_age.map(Into::into), max_bytes)?;
    trail.flush()?;
    if print_structured(a.output, &report).map_err(CommandError::WriteOutput)? {
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "pruned {} records ({} bytes)",
        report.pruned_records, report.pruned_bytes
    );
    if let Some(anchor) = &report.anchor {
        println!(
            "  the trail now starts after record {} ({} pruned in all)",
            anchor.seq, anchor.pruned_records
        );
    }
    Ok(ExitCode::SUCCESS)
}
