//! Where entries go besides the trail: JSON lines on stdout or to a
//! rotating file, and OTLP logs to an OpenTelemetry collector.
//!
//! Signed trail checkpoints ([`crate::trail::checkpoint`]) go to every sink
//! too, as their own kind of line (`"kind":"checkpoint"`) and, in OTLP, their
//! own kind of log record (`event.name` `tokenwatch.checkpoint`).
//!
//! Each sink has its own thread behind a bounded queue. [`Sinks::send`]
//! never waits: when a sink's queue is full the entry is dropped for that
//! sink and counted (`tokenwatch_userspace_drops_total{sink=...}`), so a
//! slow sink never holds up event intake.

pub mod file;
pub mod otlp;

use std::{
    io::Write as _,
    sync::{
        Arc,
        atomic::Ordering::Relaxed,
        mpsc::{Receiver, SyncSender, TrySendError, sync_channel},
    },
    thread::JoinHandle,
};

use crate::{correlate::TrailEntry, metrics::Metrics, trail::checkpoint::CheckpointLine};

/// Errors setting a sink up.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The output file could not be opened.
    #[error("cannot open the sink file {path}")]
    OpenSinkFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Writing or rotating the output file failed.
    #[error("cannot write the sink file {path}")]
    WriteSinkFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The OTLP endpoint is not an http(s) URL.
    #[error("invalid OTLP endpoint {0:?}: expected http://host:port or https://host:port")]
    ParseOtlpEndpoint(String),
    /// The collector refused or could not be reached.
    #[error("sending logs to the OTLP collector at {url}")]
    SendOtlp {
        /// The URL posted to.
        url: String,
        /// Why.
        #[source]
        source: Box<ureq::Error>,
    },
    /// A sink thread could not be started.
    #[error("cannot start the {0} sink thread")]
    SpawnSink(&'static str, #[source] std::io::Error),
}

/// What goes out.
#[derive(Debug, Clone)]
pub enum Payload {
    /// A trail entry.
    Entry(Arc<TrailEntry>),
    /// A signed checkpoint of the trail.
    Checkpoint(Arc<CheckpointLine>),
}

/// One entry or checkpoint on its way out, with its JSON line, made once.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The entry or checkpoint.
    pub payload: Payload,
    /// `serde_json` of it, without a newline.
    pub line: Arc<str>,
}

struct Lane {
    index: usize,
    tx: SyncSender<Outgoing>,
    thread: JoinHandle<()>,
}

/// The configured sinks.
pub struct Sinks {
    lanes: Vec<Lane>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Sinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sinks")
            .field("lanes", &self.lanes.len())
            .finish()
    }
}

/// What to start.
#[derive(Debug, Clone, Default)]
pub struct SinkConfig {
    /// JSON lines on stdout.
    pub stdout: bool,
    /// JSON lines to a rotating file.
    pub file: Option<file::FileConfig>,
    /// OTLP/HTTP logs.
    pub otlp: Option<otlp::OtlpConfig>,
    /// Queue size per sink.
    pub queue_capacity: usize,
}

fn spawn_lane(
    name: &'static str,
    index: usize,
    capacity: usize,
    body: impl FnOnce(Receiver<Outgoing>) + Send + 'static,
) -> Result<Lane, SinkError> {
    let (tx, rx) = sync_channel(capacity.max(1));
    let thread = std::thread::Builder::new()
        .name(format!("sink-{name}"))
        .spawn(move || body(rx))
        .map_err(|e| SinkError::SpawnSink(name, e))?;
    Ok(Lane { index, tx, thread })
}

impl Sinks {
    /// Starts the configured sinks.
    ///
    /// # Errors
    /// A file that cannot be opened, an invalid OTLP endpoint, a thread that cannot start.
    pub fn start(config: &SinkConfig, metrics: Arc<Metrics>) -> Result<Self, SinkError> {
        let mut lanes = Vec::new();
        let capacity = config.queue_capacity;
        if config.stdout {
            let m = Arc::clone(&metrics);
            lanes.push(spawn_lane("stdout", 0, capacity, move |rx| {
                let mut out = std::io::stdout().lock();
                for item in rx {
                    if writeln!(out, "{}", item.line)
                        .and_then(|()| out.flush())
                        .is_err()
                    {
                        m.sink_errors[0].fetch_add(1, Relaxed);
                    }
                }
            })?);
        }
        if let Some(file_config) = &config.file {
            let mut writer = file::RotatingFile::open(file_config.clone())?;
            let m = Arc::clone(&metrics);
            lanes.push(spawn_lane("file", 1, capacity, move |rx| {
                for item in rx {
                    if let Err(err) = writer.write_line(&item.line) {
                        m.sink_errors[1].fetch_add(1, Relaxed);
                        tracing::warn!(error = %crate::error::error_chain(&err), "file sink");
                    }
                }
                let _ = writer.flush();
            })?);
        }
        if let Some(otlp_config) = &config.otlp {
            let client = otlp::OtlpClient::new(otlp_config.clone())?;
            let m = Arc::clone(&metrics);
            lanes.push(spawn_lane("otlp", 2, capacity, move |rx| {
                client.run(&rx, &m.sink_errors[2]);
            })?);
        }
        Ok(Self { lanes, metrics })
    }

    /// Hands an entry to every sink without waiting; a full queue drops it
    /// for that sink and counts the drop.
    pub fn send(&self, entry: &Arc<TrailEntry>) {
        if self.lanes.is_empty() {
            return;
        }
        let line: Arc<str> = serde_json::to_string(entry.as_ref())
            .unwrap_or_default()
            .into();
        self.send_payload(&Payload::Entry(Arc::clone(entry)), &line);
    }

    /// Hands a signed checkpoint to every sink, as [`Sinks::send`] does an entry.
    pub fn send_checkpoint(&self, checkpoint: CheckpointLine) {
        if self.lanes.is_empty() {
            return;
        }
        let line: Arc<str> = serde_json::to_string(&checkpoint)
            .unwrap_or_default()
            .into();
        self.send_payload(&Payload::Checkpoint(Arc::new(checkpoint)), &line);
    }

    fn send_payload(&self, payload: &Payload, line: &Arc<str>) {
        for lane in &self.lanes {
            let item = Outgoing {
                payload: payload.clone(),
                line: Arc::clone(line),
            };
            match lane.tx.try_send(item) {
                Ok(()) => {}
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                    self.metrics.sink_drops[lane.index].fetch_add(1, Relaxed);
                }
            }
        }
    }

    /// Closes the queues and waits for every sink to write what it holds.
    pub fn close(self) {
        for lane in self.lanes {
            drop(lane.tx);
            let _ = lane.thread.join();
        }
    }
}
