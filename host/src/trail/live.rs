//! The running agent's trail, for the `trail` commands.
//!
//! sled lets one process open a data directory, so while the agent runs,
//! `tokenwatch trail query|export|stats|verify` cannot open the store
//! themselves. The agent therefore answers them on a Unix socket in the
//! data directory ([`SOCKET_NAME`], mode 0600: whoever may read the store
//! may ask). There is no network listener for this: the trail names pods,
//! subjects and JTIs, which `/metrics` never does.
//!
//! The protocol is JSON lines. The client sends one [`Request`] line; the
//! agent answers with one [`Status`] line, then, for `export`, the stored
//! record lines (the export schema, `docs/trail.md`), or, for `stats` and
//! `verify`, one JSON line with the result; then it closes the connection.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{Query, Trail, TrailError, TrailStats, VerifyReport};
use crate::store;

/// The socket's file name in the data directory.
pub const SOCKET_NAME: &str = "agent.sock";

/// The socket of the agent that owns `data_dir`.
#[must_use]
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_NAME)
}

/// What the client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    /// The stored lines of the records matching a query.
    Export {
        /// The filters.
        query: WireQuery,
    },
    /// `trail stats`.
    Stats,
    /// `trail verify`.
    Verify,
}

/// A [`Query`] on the wire: times as nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct WireQuery {
    pub subject: Option<String>,
    pub pod: Option<String>,
    pub namespace: Option<String>,
    pub jti: Option<String>,
    pub finding: Option<String>,
    pub since_unix_nanos: Option<u64>,
    pub until_unix_nanos: Option<u64>,
    pub limit: Option<usize>,
}

impl From<&Query> for WireQuery {
    fn from(q: &Query) -> Self {
        Self {
            subject: q.subject.clone(),
            pod: q.pod.clone(),
            namespace: q.namespace.clone(),
            jti: q.jti.clone(),
            finding: q.finding.map(|f| f.as_str().to_owned()),
            since_unix_nanos: q.since.map(store::unix_nanos),
            until_unix_nanos: q.until.map(store::unix_nanos),
            limit: q.limit,
        }
    }
}

impl WireQuery {
    /// The query, or the name of the finding kind that does not exist.
    fn query(&self) -> Result<Query, TrailError> {
        let at = |n: u64| UNIX_EPOCH + Duration::from_nanos(n);
        Ok(Query {
            subject: self.subject.clone(),
            pod: self.pod.clone(),
            namespace: self.namespace.clone(),
            jti: self.jti.clone(),
            finding: self
                .finding
                .as_deref()
                .map(super::parse_finding)
                .transpose()?,
            since: self.since_unix_nanos.map(at),
            until: self.until_unix_nanos.map(at),
            limit: self.limit,
        })
    }
}

/// The first line of every answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Whether what follows is the answer.
    pub ok: bool,
    /// Why not, in words (the error chain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Errors talking to the agent.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// The socket could not be reached.
    #[error("cannot reach the running agent at {path}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Sending or reading failed midway.
    #[error("the connection to the running agent failed")]
    Transfer(#[source] std::io::Error),
    /// The agent answered something that is not the protocol.
    #[error("the running agent's answer is not understood: {0}")]
    Decode(String),
    /// The agent could not do it.
    #[error("the running agent could not answer: {0}")]
    Refused(String),
}

/// A connection to the agent for one request.
#[derive(Debug)]
pub struct Client {
    lines: BufReader<UnixStream>,
}

impl Client {
    /// Sends `request` to the agent owning `data_dir` and reads the status.
    ///
    /// # Errors
    /// [`LiveError`]: unreachable, broken, or the agent's own error.
    pub fn send(data_dir: &Path, request: &Request) -> Result<Self, LiveError> {
        let path = socket_path(data_dir);
        let mut stream = UnixStream::connect(&path).map_err(|source| LiveError::Connect {
            path: path.clone(),
            source,
        })?;
        // A live agent answers at once; a wedged one should not hang the CLI.
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(LiveError::Transfer)?;
        let mut line = serde_json::to_vec(request).map_err(|e| LiveError::Decode(e.to_string()))?;
        line.push(b'\n');
        stream.write_all(&line).map_err(LiveError::Transfer)?;
        let mut client = Self {
            lines: BufReader::new(stream),
        };
        let status: Status = client
            .next_json()?
            .ok_or_else(|| LiveError::Decode("the agent closed without answering".into()))?;
        if !status.ok {
            return Err(LiveError::Refused(status.error.unwrap_or_default()));
        }
        Ok(client)
    }

    /// The next line, without its newline; `None` at the end.
    ///
    /// # Errors
    /// [`LiveError::Transfer`].
    pub fn next_line(&mut self) -> Result<Option<Vec<u8>>, LiveError> {
        let mut line = Vec::new();
        let n = self
            .lines
            .read_until(b'\n', &mut line)
            .map_err(LiveError::Transfer)?;
        if n == 0 {
            return Ok(None);
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        Ok(Some(line))
    }

    /// The next line as JSON.
    ///
    /// # Errors
    /// [`LiveError::Transfer`], [`LiveError::Decode`].
    pub fn next_json<T: serde::de::DeserializeOwned>(&mut self) -> Result<Option<T>, LiveError> {
        self.next_line()?
            .map(|line| serde_json::from_slice(&line).map_err(|e| LiveError::Decode(e.to_string())))
            .transpose()
    }
}

/// Asks the agent for its stats.
///
/// # Errors
/// [`LiveError`].
pub fn stats(data_dir: &Path) -> Result<TrailStats, LiveError> {
    Client::send(data_dir, &Request::Stats)?
        .next_json()?
        .ok_or_else(|| LiveError::Decode("no stats in the answer".into()))
}

/// Asks the agent to verify its trail.
///
/// # Errors
/// [`LiveError`].
pub fn verify(data_dir: &Path) -> Result<VerifyReport, LiveError> {
    Client::send(data_dir, &Request::Verify)?
        .next_json()?
        .ok_or_else(|| LiveError::Decode("no report in the answer".into()))
}

/// Answers one request line on `out`, as the agent does (blocking: run it
/// off the event loop). Any bytes are answered: what is not a request gets
/// a status line naming why.
///
/// # Errors
/// Only writing to `out`.
pub fn answer(
    trail: &Trail,
    request_line: &[u8],
    out: &mut impl std::io::Write,
) -> std::io::Result<()> {
    let status = |out: &mut dyn std::io::Write, error: Option<String>| {
        let mut line = serde_json::to_vec(&Status {
            ok: error.is_none(),
            error,
        })
        .unwrap_or_default();
        line.push(b'\n');
        out.write_all(&line)
    };
    let request: Request = match serde_json::from_slice(request_line) {
        Ok(r) => r,
        Err(e) => return status(out, Some(format!("not a request: {e}"))),
    };
    let fail = |e: &TrailError| Some(crate::error::error_chain(e));
    match request {
        Request::Export { query } => {
            let iter = query.query().and_then(|q| trail.query(&q));
            let mut iter = match iter {
                Ok(iter) => iter,
                Err(e) => return status(out, fail(&e)),
            };
            status(out, None)?;
            while let Some(item) = iter.next_raw() {
                match item {
                    Ok((_, line)) => {
                        out.write_all(&line)?;
                        out.write_all(b"\n")?;
                    }
                    // Mid-stream: the client sees the line is not a record.
                    Err(e) => {
                        let text = serde_json::json!({ "error": crate::error::error_chain(&e) });
                        writeln!(out, "{text}")?;
                        break;
                    }
                }
            }
            Ok(())
        }
        Request::Stats => match trail.stats() {
            Ok(s) => {
                status(out, None)?;
                writeln!(out, "{}", serde_json::to_string(&s).unwrap_or_default())
            }
            Err(e) => status(out, fail(&e)),
        },
        Request::Verify => match trail.verify() {
            Ok(r) => {
                status(out, None)?;
                writeln!(out, "{}", serde_json::to_string(&r).unwrap_or_default())
            }
            Err(e) => status(out, fail(&e)),
        },
    }
}

/// Binds the socket in `data_dir` (replacing a stale one), mode 0600.
///
/// # Errors
/// Binding or setting its mode fails.
pub fn bind(data_dir: &Path) -> std::io::Result<std::os::unix::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = socket_path(data_dir);
    // The data directory is ours (sled's lock says so): a socket left there
    // is from an agent that died.
    let _ = std::fs::remove_file(&path);
    let listener = std::os::unix::net::UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves requests on `listener` until the task is dropped; each in a
/// blocking task (a query can walk the whole trail).
pub async fn serve(listener: std::os::unix::net::UnixListener, trail: Trail) {
    let listener = match listener
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UnixListener::from_std(listener))
    {
        Ok(l) => l,
        Err(err) => {
            tracing::error!(error = %err, "cannot serve the trail socket");
            return;
        }
    };
    let mut failures = 0;
    loop {
        let stream =
            crate::net::next_connection("trail socket", &mut failures, || listener.accept()).await;
        let trail = trail.clone();
        tokio::task::spawn_blocking(move || {
            let Ok(stream) = stream.into_std() else {
                return;
            };
            if stream.set_nonblocking(false).is_err()
                || stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .is_err()
            {
                return;
            }
            let mut reader = BufReader::new(&stream).take(64 * 1024);
            let mut line = Vec::new();
            if reader.read_until(b'\n', &mut line).is_err() {
                return;
            }
            let mut out = std::io::BufWriter::new(&stream);
            if let Err(err) = answer(&trail, &line, &mut out).and_then(|()| out.flush()) {
                tracing::debug!(error = %err, "trail socket client went away");
            }
        });
    }
}
