//! The agent: the DaemonSet's process. It joins the sensor, node, identity,
//! rbac, correlate and trail modules, and serves health and metrics.
//!
//! ```text
//! fanotify reader thread (token accesses, reader named from /proc + pidfd)
//!   ══► bounded queue (full: tokenwatch_fanotify_queue_lost_total)
//! eBPF ring buffer (connects, exec/exit lineage; full: kernel drops)
//!   ──► event loop: enrich (cgroup -> pod, (dev, ino) -> identity, volume owner)
//!                   ──► Correlator (repeats folded, connects held 1 s for their read)
//!   ══► bounded queue (full: tokenwatch_trail_queue_lost_total)
//! trail writer thread ──► trail (hash chain, sled) ──► sinks (stdout, file, OTLP)
//! kubelet volumes (inotify) ──► fanotify marks: one filesystem mark per token
//!                               volume on its own tmpfs, else inode marks
//! losses (fanotify overflow, fd failure, either queue) ──► /metrics and an agent entry
//! RBAC files (polled) ──► snapshot ──► Correlator
//! API server (kubesync reflectors) ──► stored snapshot + pod metadata ──► Correlator, enrich
//! every second ──► folded records and held connects that are due, loss counters, baseline
//! timers ──► trail flush (durable seq), retention, cgroup cache cleanup
//! timer (and start, shutdown) ──► signed checkpoint of the durable head ──► sinks, trail tree
//! <data dir>/agent.sock ──► `tokenwatch trail query|export|stats|verify` while running
//! SIGTERM / SIGINT ──► detach, record what is pending, flush the trail, exit 0
//! ```
//!
//! [`run`] is three stages: [`start`], [`Agent::event_loop`], [`Agent::shutdown`].
//! No stage waits on another's output: the event loop only ever `try_send`s
//! to the trail writer (the agent's own rare entries wait for room).

pub mod checkpoint;
pub mod config;
pub mod enrich;
pub mod http;
pub mod writer;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, atomic::Ordering::Relaxed},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::sync::mpsc;

pub use self::config::AgentConfig;
use self::{enrich::Enricher, writer::TrailWriter};
use crate::caps;
use crate::metrics::Metrics;
use crate::{
    correlate::{
        CorrelateConfig, Correlator, ENTRY_SCHEMA_VERSION, EntryKind, RbacContext, TrailEntry,
        baseline::BaselineConfig,
    },
    identity::{IdentityCache, KeySet},
    kubesync,
    node::{CgroupResolver, TokenWatcher, WatchChange, WatchHandle},
    rbac::{Snapshot, import},
    sensor::{Sensor, SensorConfig, SensorEvent},
    sinks::{SinkConfig, Sinks, file::FileConfig, otlp::OtlpConfig},
    snapshot_store,
    trail::Trail,
};

/// Errors starting or running the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The sensor could not be loaded.
    #[error("starting the sensor")]
    StartSensor(#[source] crate::sensor::SensorError),
    /// The trail could not be opened or written.
    #[error("opening the trail in {path}")]
    OpenTrail {
        /// The data dir.
        path: PathBuf,
        /// Why.
        #[source]
        source: crate::trail::TrailError,
    },
    /// The RBAC files could not be imported.
    #[error("loading the RBAC snapshot")]
    LoadRbac(#[source] import::ImportError),
    /// A key file could not be loaded.
    #[error("loading signing keys")]
    LoadKeys(#[source] crate::identity::Error),
    /// The kubelet volume watcher could not start.
    #[error("watching the kubelet's token volumes")]
    WatchVolumes(#[source] crate::node::Error),
    /// The cgroup v2 hierarchy could not be found.
    #[error("finding the cgroup v2 hierarchy")]
    FindCgroups(#[source] crate::node::Error),
    /// The metrics address could not be bound.
    #[error("listening on {addr}")]
    BindListener {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A sink could not start.
    #[error("starting the sinks")]
    StartSinks(#[source] crate::sinks::SinkError),
    /// An endpoint did not resolve.
    #[error("resolving API-server endpoints")]
    ResolveEndpoints(#[source] crate::sensor::SensorError),
    /// The trail writer could not start.
    #[error("starting the trail writer")]
    StartWriter(#[source] writer::WriterError),
    /// The checkpoint task could not start.
    #[error("starting trail checkpoints")]
    StartCheckpoints(#[source] checkpoint::CheckpointTaskError),
    /// Waiting for a signal failed.
    #[error("installing signal handlers")]
    InstallSignals(#[source] std::io::Error),
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn rfc3339_now() -> String {
    humantime::format_rfc3339_nanos(SystemTime::now()).to_string()
}

/// The RBAC files' identity: paths and modification times, to notice changes.
fn rbac_stamp(paths: &[PathBuf]) -> Vec<(PathBuf, Option<SystemTime>)> {
    let mut stamp = Vec::new();
    for path in paths {
        let mut push = |p: &Path| {
            stamp.push((
                p.to_owned(),
                std::fs::metadata(p).and_then(|m| m.modified()).ok(),
            ));
        };
        push(path);
        if let Ok(entries) = std::fs::read_dir(path) {
            let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            files.sort();
            for file in files {
                push(&file);
            }
        }
    }
    stamp
}

/// Loads the RBAC files into a snapshot context.
fn load_rbac(paths: &[PathBuf]) -> Result<RbacContext, AgentError> {
    let report =
        import::import_paths(paths, import::DEFAULT_NAMESPACE).map_err(AgentError::LoadRbac)?;
    let label = format!(
        "files:{}@{}",
        paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(","),
        rfc3339_now()
    );
    Ok(RbacContext::new(
        Arc::new(Snapshot::build(report.objects)),
        label,
    ))
}

/// Live sync with the API server and whether its channels are still open.
struct LiveSync {
    handles: kubesync::SyncHandles,
    on: bool,
    rbac_open: bool,
    pods_open: bool,
}

impl LiveSync {
    fn is_on(&self) -> bool {
        self.on
    }
}

/// Starts live sync when a kubeconfig or in-cluster config is set; when
/// the client cannot be built the agent runs on its files.
async fn start_live_sync(config: &AgentConfig, db: &sled::Db, node: &str) -> LiveSync {
    let off = || LiveSync {
        handles: kubesync::SyncHandles::disabled(),
        on: false,
        rbac_open: false,
        pods_open: false,
    };
    if config.kubeconfig.is_none() && !config.in_cluster {
        return off();
    }
    let source = config.kubeconfig.as_ref().map_or_else(
        || "api-server (in-cluster)".to_owned(),
        |p| format!("api-server (kubeconfig {})", p.display()),
    );
    match kubesync::client(config.kubeconfig.as_deref(), config.in_cluster).await {
        Ok(client) => {
            tracing::info!(%source, "live sync of RBAC and this node's pods");
            LiveSync {
                handles: kubesync::start(
                    &client,
                    Some(db.clone()),
                    kubesync::SyncConfig {
                        node_name: Some(node.to_owned()),
                        source,
                        ..kubesync::SyncConfig::default()
                    },
                ),
                on: true,
                rbac_open: true,
                pods_open: true,
            }
        }
        Err(err) => {
            tracing::error!(error = %crate::error::error_chain(&err), "no live sync with the API server; using the RBAC files");
            off()
        }
    }
}

/// The newest stored snapshot, if any.
fn load_stored_rbac(db: &sled::Db, data_dir: &Path) -> Option<RbacContext> {
    let stored = snapshot_store::load_at(db, SystemTime::now(), data_dir).ok()?;
    Some(RbacContext::new(
        Arc::new(Snapshot::build(stored.objects)),
        format!("stored@{}", stored.imported_at),
    ))
}

fn correlate_config(config: &AgentConfig) -> CorrelateConfig {
    let c = &config.correlate;
    let mut baseline = BaselineConfig {
        learning_period: c.learning_period,
        allow: c.reader_allowlist.clone(),
        ..BaselineConfig::default()
    };
    if let Some(never) = &c.never_learn {
        baseline.never_learn.clone_from(never);
    }
    CorrelateConfig {
        node_name: config.effective_node_name(),
        use_window: c.use_window,
        host_readers: c.host_readers.clone(),
        host_api_clients: c.host_api_clients.clone(),
        baseline,
        finding_repeat: c.finding_repeat,
        fold_window: c.fold_window,
    }
}

fn agent_entry(node: &str, message: String) -> TrailEntry {
    TrailEntry {
        schema: ENTRY_SCHEMA_VERSION,
        kind: EntryKind::Agent,
        time: rfc3339_now(),
        node: node.to_owned(),
        reader: None,
        token: None,
        rbac: None,
        connection: None,
        findings: Vec::new(),
        message: Some(message),
        repeated: None,
    }
}

/// Makes appended records durable, off the event loop (an fsync can take
/// tens of milliseconds, during which the ring buffer must keep draining).
async fn flush_trail(trail: &Trail, metrics: &Metrics) {
    let trail = trail.clone();
    match tokio::task::spawn_blocking(move || trail.flush()).await {
        Ok(Ok(seq)) => metrics.trail_durable_seq.store(seq, Relaxed),
        Ok(Err(err)) => {
            tracing::error!(error = %crate::error::error_chain(&err), "trail flush failed");
        }
        Err(err) => tracing::error!(error = %err, "trail flush task failed"),
    }
}

/// Flushes on a timer and applies retention every minute, in its own task.
async fn maintain_trail(
    trail: Trail,
    metrics: Arc<Metrics>,
    flush_every: Duration,
    max_age: Duration,
    max_bytes: u64,
) {
    let mut flush_tick = tokio::time::interval(flush_every);
    let mut retention_tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            // Nothing new, nothing to fsync: an idle agent stays asleep.
            _ = flush_tick.tick() => if trail.unflushed() {
                flush_trail(&trail, &metrics).await;
            },
            _ = retention_tick.tick() => {
                let trail = trail.clone();
                let stats = tokio::task::spawn_blocking(move || {
                    if let Err(err) = trail.apply_retention(Some(max_age), Some(max_bytes)) {
                        tracing::warn!(error = %crate::error::error_chain(&err), "trail retention");
                    }
                    trail.stats()
                })
                .await;
                if let Ok(Ok(stats)) = stats {
                    metrics.trail_bytes.store(stats.disk_bytes, Relaxed);
                }
            }
        }
    }
}

/// Brings back what earlier runs learned.
fn restore_baseline(correlator: &mut Correlator, db: &sled::Db) {
    match crate::baseline_store::load(db) {
        Ok(stored) if !stored.is_empty() => {
            let n = stored.len();
            correlator.baseline_mut().restore(
                stored,
                crate::sensor::event::monotonic_now_ns(),
                crate::store::unix_nanos(SystemTime::now()),
            );
            tracing::info!(workloads = n, "restored the learned baseline");
        }
        Ok(_) => {}
        Err(err) => {
            tracing::warn!(error = %crate::error::error_chain(&err), "cannot load the learned baseline; learning anew");
        }
    }
}

/// Stores what the baseline learned since the last call (durable with the
/// trail's next flush: one database).
fn store_baseline(correlator: &mut Correlator, trail: &Trail) {
    let changed = correlator.baseline_mut().take_changed(
        crate::sensor::event::monotonic_now_ns(),
        crate::store::unix_nanos(SystemTime::now()),
    );
    if changed.is_empty() {
        return;
    }
    match crate::baseline_store::save(trail.db(), &changed) {
        Ok(()) => trail.note_db_write(),
        Err(err) => {
            tracing::warn!(error = %crate::error::error_chain(&err), workloads = changed.len(), "cannot store the learned baseline");
        }
    }
}

/// Loads keys for signature verification.
fn load_keys(config: &AgentConfig) -> Result<KeySet, AgentError> {
    let mut keys = KeySet::new();
    for path in &config.keys {
        keys.add_pem_file(path).map_err(AgentError::LoadKeys)?;
    }
    for path in &config.jwks {
        keys.add_jwks_file(path).map_err(AgentError::LoadKeys)?;
    }
    Ok(keys)
}

/// The volume directory of a kubelet token file: the ancestor whose parent
/// is the volume plugin's directory (`kubernetes.io~projected`, `~secret`).
fn volume_dir(path: &Path) -> Option<&Path> {
    path.ancestors().find(|dir| {
        dir.parent()
            .and_then(Path::file_name)
            .is_some_and(|plugin| plugin.as_encoded_bytes().starts_with(b"kubernetes.io~"))
    })
}

/// Marks a discovered token file: its volume's filesystem when the volume
/// is a tmpfs of its own, else the file's inode.
fn watch_token_file(control: &crate::sensor::SensorControl, file: &crate::node::TokenFile) {
    let result = match volume_dir(&file.path) {
        Some(dir) => control.watch_volume_file(dir, &file.path).map(|_| ()),
        None => control.watch_file(&file.path).map(|_| ()),
    };
    if let Err(err) = result {
        tracing::warn!(path = %file.path.display(), error = %crate::error::error_chain(&err), "cannot watch a token file");
    }
}

/// The agent entry recording sensor losses between two counter snapshots.
fn loss_message(
    before: crate::sensor::fanotify::Losses,
    now: crate::sensor::fanotify::Losses,
) -> String {
    format!(
        "sensor lost token accesses: {} fanotify queue overflow(s) (each lost an unknown number of events), {} event(s) without a file descriptor, {} event(s) dropped by the agent's full queue (totals since start: {}, {}, {})",
        now.overflows.saturating_sub(before.overflows),
        now.fd_failures.saturating_sub(before.fd_failures),
        now.queue_lost.saturating_sub(before.queue_lost),
        now.overflows,
        now.fd_failures,
        now.queue_lost,
    )
}

/// Gives the heap's free pages back to the kernel. Loading the sensor
/// parses the kernel's BTF (megabytes, freed at once), which the allocator
/// would otherwise keep: ~10 MiB of the idle agent's RSS (issue 13).
fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks the allocator's own state.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Limits the allocator to two arenas. Call before the agent's threads
/// start. By default glibc gives each thread that allocates an arena of its
/// own (up to 8 per core), and the agent's threads (fanotify reader,
/// runtime workers, trail writer, sled's) each kept 10 to 20 MiB of freed
/// memory in theirs under load: 95 MiB peak RSS against 96 MiB allowed
/// (issue 13). Its threads rarely allocate at once, so two arenas cost no
/// measurable contention.
pub fn limit_allocator_arenas() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets the allocator's own parameter.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Runs the agent until SIGTERM or SIGINT. Call inside a tokio runtime.
///
/// Three stages: [`start`] (outputs, sources, the sensor), [`Agent::event_loop`]
/// (until a signal), [`Agent::shutdown`] (detach, record what is pending,
/// make it durable). An agent whose sensor cannot load for want of a
/// required capability stays up unready instead ([`Unready::wait`]).
///
/// # Errors
/// Whatever fails at start; once running, failures are logged and counted.
pub async fn run(config: AgentConfig) -> Result<(), AgentError> {
    match start(config).await? {
        Started::Running(mut agent) => {
            agent.event_loop().await;
            agent.shutdown().await;
        }
        Started::Unready(unready) => unready.wait().await,
    }
    tracing::info!("agent stopped");
    Ok(())
}

/// What [`start`] leads to.
pub enum Started {
    /// The sensor is attached: run [`Agent::event_loop`], then [`Agent::shutdown`].
    Running(Box<Agent>),
    /// The sensor could not load for want of a required capability.
    Unready(Box<Unready>),
}

/// The outputs: the trail (through its writer), the sinks, the endpoints.
struct Outputs {
    node: String,
    trail: Trail,
    writer: TrailWriter,
    sinks: Arc<Sinks>,
    metrics: Arc<Metrics>,
    checkpointer: checkpoint::Checkpointer,
    http_task: tokio::task::JoinHandle<()>,
    live_task: Option<tokio::task::JoinHandle<()>>,
    trail_socket: PathBuf,
}

impl Outputs {
    /// An `agent` entry: rare, and never dropped (waits for room).
    fn note(&self, message: String) {
        self.writer.record_waiting(agent_entry(&self.node, message));
    }

    /// Stops everything after the last record: the writer drains its queue,
    /// the trail is made durable, the checkpoint of the final head goes out,
    /// the sinks deliver what they hold.
    async fn close(self) {
        let Self {
            trail,
            writer,
            sinks,
            metrics,
            checkpointer,
            http_task,
            live_task,
            trail_socket,
            ..
        } = self;
        let _ = tokio::task::spawn_blocking(move || writer.close()).await;
        flush_trail(&trail, &metrics).await;
        checkpointer.emit(&sinks).await;
        http_task.abort();
        if let Some(task) = live_task {
            task.abort();
            let _ = std::fs::remove_file(&trail_socket);
        }
        // The checkpoint's copy in the tree: durable too.
        let _ = tokio::task::spawn_blocking(move || trail.flush()).await;
        match Arc::try_unwrap(sinks) {
            Ok(sinks) => {
                let _ = tokio::task::spawn_blocking(move || sinks.close()).await;
            }
            Err(_) => tracing::warn!("sinks still shared at shutdown: not waiting for them"),
        }
    }
}

/// The trail, sinks, checkpointer, HTTP endpoint and trail socket.
async fn start_outputs(
    config: &AgentConfig,
    node: &str,
    metrics: &Arc<Metrics>,
    missing_required: &[&'static str],
) -> Result<Outputs, AgentError> {
    let trail = Trail::open(&config.data_dir).map_err(|source| AgentError::OpenTrail {
        path: config.data_dir.clone(),
        source,
    })?;
    let sinks = Arc::new(
        Sinks::start(
            &SinkConfig {
                stdout: config.sinks.stdout,
                file: config.sinks.file.clone().map(|path| FileConfig {
                    path,
                    max_bytes: config.sinks.file_max_bytes,
                    keep: config.sinks.file_keep,
                }),
                otlp: config
                    .sinks
                    .otlp_endpoint
                    .clone()
                    .map(|endpoint| OtlpConfig {
                        endpoint,
                        timeout: Duration::from_secs(5),
                    }),
                queue_capacity: config.sinks.queue_capacity,
            },
            Arc::clone(metrics),
        )
        .map_err(AgentError::StartSinks)?,
    );
    let checkpointer = checkpoint::Checkpointer::new(config, node, &trail)
        .map_err(AgentError::StartCheckpoints)?;
    let writer = TrailWriter::start(
        trail.clone(),
        Arc::clone(&sinks),
        Arc::clone(metrics),
        config.trail.queue_capacity,
    )
    .map_err(AgentError::StartWriter)?;
    // HTTP: health, readiness, metrics.
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|source| AgentError::BindListener {
            addr: config.listen.clone(),
            source,
        })?;
    let readiness = Arc::new(http::Readiness {
        needs_snapshot: !config.rbac.is_empty(),
        missing_capabilities: missing_required.to_vec(),
    });
    let http_task = tokio::spawn(http::serve(listener, Arc::clone(metrics), readiness));
    // The trail commands ask the running agent on a socket in the data dir.
    let trail_socket = crate::trail::live::socket_path(&config.data_dir);
    let live_task = match crate::trail::live::bind(&config.data_dir) {
        Ok(socket) => Some(tokio::spawn(crate::trail::live::serve(
            socket,
            trail.clone(),
        ))),
        Err(err) => {
            tracing::warn!(socket = %trail_socket.display(), error = %err, "`tokenwatch trail` commands cannot ask this agent while it runs");
            None
        }
    };
    Ok(Outputs {
        node: node.to_owned(),
        trail,
        writer,
        sinks,
        metrics: Arc::clone(metrics),
        checkpointer,
        http_task,
        live_task,
        trail_socket,
    })
}

/// An agent whose sensor could not load for want of a required capability:
/// up and unready, so the pod shows why instead of crash-looping.
pub struct Unready {
    outputs: Outputs,
    watch: Option<WatchHandle>,
    signals: Signals,
}

impl Unready {
    /// Waits for SIGTERM or SIGINT, then records the stop and closes.
    pub async fn wait(mut self) {
        self.signals.recv().await;
        self.outputs.note("agent stopped".to_owned());
        if let Some(watch) = &self.watch {
            watch.abort();
        }
        self.outputs.close().await;
    }
}

/// SIGTERM and SIGINT.
struct Signals {
    term: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Self, AgentError> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate()).map_err(AgentError::InstallSignals)?,
            interrupt: signal(SignalKind::interrupt()).map_err(AgentError::InstallSignals)?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}

/// A running agent: the event loop's state.
pub struct Agent {
    config: AgentConfig,
    outputs: Outputs,
    correlator: Correlator,
    enricher: Enricher,
    sensor: Sensor,
    control: crate::sensor::SensorControl,
    watch_rx: mpsc::Receiver<WatchChange>,
    live: LiveSync,
    /// Set once the API server has supplied a snapshot: the files are only the fallback.
    api_rbac: bool,
    stamp: Vec<(PathBuf, Option<SystemTime>)>,
    signals: Signals,
    maintenance: tokio::task::JoinHandle<()>,
    checkpoints: tokio::task::JoinHandle<()>,
    reported_losses: crate::sensor::fanotify::Losses,
    reported_trail_lost: u64,
}

/// Stage 1: outputs first (so that everything after can be recorded), then
/// RBAC, live sync, the kubelet volumes, cgroups, and the sensor with every
/// discovered token already watched.
///
/// # Errors
/// Whatever cannot start; see [`AgentError`].
pub async fn start(config: AgentConfig) -> Result<Started, AgentError> {
    let metrics = Arc::new(Metrics::default());
    let node = config.effective_node_name();
    // The capabilities docs/capabilities.md lists: one line for each missing one.
    let missing = caps::effective().map(caps::missing).unwrap_or_default();
    metrics
        .capabilities_missing
        .store(caps::mask(&missing), Relaxed);
    // A required one is named with the sensor's failure, in one line.
    for need in missing.iter().filter(|n| !n.required) {
        tracing::warn!(
            capability = need.name,
            "degraded: {} is missing: {}",
            need.name,
            need.without
        );
    }
    let missing_required: Vec<&'static str> = missing
        .iter()
        .filter(|n| n.required)
        .map(|n| n.name)
        .collect();
    let outputs = start_outputs(&config, &node, &metrics, &missing_required).await?;

    // RBAC.
    let mut correlator = Correlator::new(correlate_config(&config));
    restore_baseline(&mut correlator, outputs.trail.db());
    let stamp = rbac_stamp(&config.rbac);
    if !config.rbac.is_empty() {
        let rbac = load_rbac(&config.rbac)?;
        outputs.note(format!("loaded RBAC snapshot {}", rbac.label()));
        correlator.set_rbac(rbac);
        metrics.snapshot_loaded_unix.store(unix_now(), Relaxed);
    }
    let live = start_live_sync(&config, outputs.trail.db(), &node).await;
    if live.is_on()
        && config.rbac.is_empty()
        // Until the API server answers, the newest snapshot an earlier sync stored.
        && let Some(rbac) = load_stored_rbac(outputs.trail.db(), &config.data_dir)
    {
        outputs.note(format!("loaded RBAC snapshot {}", rbac.label()));
        correlator.set_rbac(rbac);
        metrics.snapshot_loaded_unix.store(unix_now(), Relaxed);
    }

    // Kubelet volumes, identities, cgroups.
    let identities = Arc::new(IdentityCache::new(load_keys(&config)?));
    let (watch_tx, watch_rx) = mpsc::channel::<WatchChange>(4096);
    let watch = if config.kubelet_root.is_dir() {
        Some(
            TokenWatcher::new(config.kubelet_root.clone(), Arc::clone(&identities))
                .spawn(watch_tx)
                .map_err(AgentError::WatchVolumes)?,
        )
    } else {
        tracing::warn!(
            kubelet_root = %config.kubelet_root.display(),
            "no kubelet root here: token files are recognised by their path suffix only"
        );
        drop(watch_tx);
        None
    };
    let cgroups =
        CgroupResolver::new(config.cgroup_root.clone()).map_err(AgentError::FindCgroups)?;
    let enricher = Enricher::new(cgroups, identities, watch);

    // The sensor.
    let mut endpoints = Vec::new();
    let apiservers = if config.apiservers.is_empty() {
        crate::sensor::default_apiservers()
    } else {
        config.apiservers.clone()
    };
    for endpoint in &apiservers {
        endpoints.extend(
            crate::sensor::resolve_endpoint(endpoint).map_err(AgentError::ResolveEndpoints)?,
        );
    }
    let signals = Signals::install()?;
    let loaded = Sensor::load(&SensorConfig {
        path_suffixes: config.token_path_suffixes.clone(),
        syscall_path_match: config.syscall_path_match,
        endpoints,
        ring_buffer_bytes: config
            .ring_buffer_bytes
            .unwrap_or(if config.syscall_path_match {
                8 * 1024 * 1024
            } else {
                2 * 1024 * 1024
            }),
        ..SensorConfig::default()
    });
    let sensor = match loaded {
        Ok(sensor) => sensor,
        Err(err) if !missing_required.is_empty() => {
            let missing = missing_required.join(", ");
            let without: Vec<&str> = caps::NEEDS
                .iter()
                .filter(|n| missing_required.contains(&n.name))
                .map(|n| n.without)
                .collect();
            tracing::error!(error = %crate::error::error_chain(&err), "not ready: {missing} is missing: {}; /readyz answers 503 until the agent is stopped", without.join("; "));
            outputs.note(format!("sensor not loaded: missing {missing}"));
            flush_trail(&outputs.trail, &metrics).await;
            return Ok(Started::Unready(Box::new(Unready {
                outputs,
                watch: enricher.watch,
                signals,
            })));
        }
        Err(err) => return Err(AgentError::StartSensor(err)),
    };
    let control = sensor.control();
    metrics.sensor_attached.store(true, Relaxed);
    outputs.note(format!(
        "agent started on {node}; watching {} API-server endpoint(s)",
        apiservers.len()
    ));
    tracing::info!(node = %node, data_dir = %config.data_dir.display(), "agent running");

    let maintenance = tokio::spawn(maintain_trail(
        outputs.trail.clone(),
        Arc::clone(&metrics),
        config.trail.flush_interval,
        config.trail.max_age,
        config.trail.max_bytes,
    ));
    let checkpoints = tokio::spawn(outputs.checkpointer.clone().run(Arc::clone(&outputs.sinks)));
    // Volumes found before the sensor started.
    if let Some(watch) = &enricher.watch {
        for file in watch.files() {
            watch_token_file(&control, &file);
        }
    }
    metrics
        .watched_inodes
        .store(control.watched_files() as u64, Relaxed);
    let reported_losses = sensor.losses();
    release_freed_memory();
    Ok(Started::Running(Box::new(Agent {
        config,
        outputs,
        correlator,
        enricher,
        sensor,
        control,
        watch_rx,
        live,
        api_rbac: false,
        stamp,
        signals,
        maintenance,
        checkpoints,
        reported_losses,
        reported_trail_lost: 0,
    })))
}

impl Agent {
    /// Stage 2: sensor batches through enrichment and correlation to the
    /// trail writer's queue, volume changes to the sensor's marks, RBAC and
    /// pod updates to the correlator and enricher, timers; until a signal.
    pub async fn event_loop(&mut self) {
        let mut second_tick = tokio::time::interval(Duration::from_secs(1));
        let mut slow_tick = tokio::time::interval(Duration::from_secs(60));
        let mut rbac_tick = tokio::time::interval(self.config.rbac_reload_interval);
        loop {
            tokio::select! {
                () = self.signals.recv() => break,
                Some(change) = self.watch_rx.recv() => self.volume_changed(change),
                batch = self.sensor.next_batch() => match batch {
                    Ok(batch) => self.process(batch),
                    Err(err) => tracing::error!(error = %crate::error::error_chain(&err), "reading the ring buffer"),
                },
                _ = second_tick.tick() => self.every_second(),
                changed = self.live.handles.rbac.changed(), if self.live.rbac_open => {
                    if changed.is_err() { self.live.rbac_open = false; continue; }
                    let update = self.live.handles.rbac.borrow_and_update().clone();
                    if let Some(update) = update {
                        self.outputs.note(format!("RBAC snapshot {} from the API server ({} objects)", update.label, update.objects.len()));
                        self.correlator.set_rbac(RbacContext::new(update.snapshot, update.label));
                        self.outputs.metrics.snapshot_loaded_unix.store(unix_now(), Relaxed);
                        self.api_rbac = true;
                    }
                }
                changed = self.live.handles.pods.changed(), if self.live.pods_open => {
                    if changed.is_err() { self.live.pods_open = false; continue; }
                    self.enricher.api_pods = self.live.handles.pods.borrow_and_update().clone();
                }
                _ = rbac_tick.tick() => self.reload_rbac_files(),
                _ = slow_tick.tick() => {
                    let removed = self.enricher.cgroups.forget_removed();
                    tracing::debug!(removed, "forgot removed cgroups");
                    self.enricher.refresh_pods();
                    release_freed_memory();
                }
            }
        }
    }

    /// One sensor batch: counted, enriched, correlated, queued for the trail.
    fn process(&mut self, batch: Vec<SensorEvent>) {
        let metrics = &self.outputs.metrics;
        if let Some(last) = batch.last() {
            let now = crate::sensor::event::monotonic_now_ns();
            metrics
                .queue_lag_ns
                .store(now.saturating_sub(last.monotonic_ns), Relaxed);
        }
        for event in batch {
            metrics.event(event.kind);
            let enriched = self.enricher.enrich(event);
            for entry in self.correlator.observe(enriched) {
                self.outputs.writer.record(entry);
            }
        }
    }

    fn volume_changed(&mut self, change: WatchChange) {
        match change {
            WatchChange::Add(id) => {
                if let Some(file) = self.enricher.watch.as_ref().and_then(|w| w.file(id)) {
                    watch_token_file(&self.control, &file);
                }
            }
            WatchChange::Remove(id) => {
                if let Err(err) = self.control.unwatch_file(id.dev, id.ino) {
                    tracing::warn!(error = %crate::error::error_chain(&err), "unwatching a token file");
                }
            }
        }
        self.outputs
            .metrics
            .watched_inodes
            .store(self.control.watched_files() as u64, Relaxed);
        self.enricher.refresh_pods();
    }

    /// Folded records and held connects that are due, loss counters (and an
    /// `agent` entry when they moved), the learned baseline.
    fn every_second(&mut self) {
        let now = crate::sensor::event::monotonic_now_ns();
        for entry in self.correlator.tick(now) {
            self.outputs.writer.record(entry);
        }
        let metrics = &self.outputs.metrics;
        metrics
            .kernel_drops
            .store(self.sensor.kernel_drops(), Relaxed);
        let losses = self.sensor.losses();
        if losses != self.reported_losses {
            self.outputs
                .note(loss_message(self.reported_losses, losses));
            self.reported_losses = losses;
        }
        metrics.fanotify_overflows.store(losses.overflows, Relaxed);
        metrics
            .fanotify_fd_failures
            .store(losses.fd_failures, Relaxed);
        metrics
            .fanotify_queue_lost
            .store(losses.queue_lost, Relaxed);
        // Records lost to a full trail queue: said once there is room again.
        let lost = metrics.trail_queue_lost.load(Relaxed);
        if lost != self.reported_trail_lost {
            let entry = agent_entry(
                &self.outputs.node,
                format!(
                    "the trail writer's queue was full: {} record(s) lost (total since start: {lost})",
                    lost - self.reported_trail_lost
                ),
            );
            if self.outputs.writer.try_record_uncounted(entry) {
                self.reported_trail_lost = lost;
            }
        }
        store_baseline(&mut self.correlator, &self.outputs.trail);
    }

    fn reload_rbac_files(&mut self) {
        if self.config.rbac.is_empty() || self.api_rbac {
            return;
        }
        let now_stamp = rbac_stamp(&self.config.rbac);
        if now_stamp == self.stamp {
            return;
        }
        self.stamp = now_stamp;
        match load_rbac(&self.config.rbac) {
            Ok(rbac) => {
                self.outputs
                    .note(format!("reloaded RBAC snapshot {}", rbac.label()));
                self.correlator.set_rbac(rbac);
                self.outputs
                    .metrics
                    .snapshot_loaded_unix
                    .store(unix_now(), Relaxed);
            }
            Err(err) => {
                tracing::error!(error = %crate::error::error_chain(&err), "RBAC files changed but do not load; keeping the previous snapshot");
            }
        }
    }

    /// Stage 3: detach first, record what is pending (held connects,
    /// folded repeats), make it durable, stop the outputs.
    pub async fn shutdown(self) {
        let Self {
            outputs,
            mut correlator,
            enricher,
            sensor,
            maintenance,
            checkpoints,
            ..
        } = self;
        outputs
            .metrics
            .kernel_drops
            .store(sensor.kernel_drops(), Relaxed);
        drop(sensor);
        maintenance.abort();
        checkpoints.abort();
        let _ = checkpoints.await;
        outputs.metrics.sensor_attached.store(false, Relaxed);
        for entry in correlator.drain() {
            outputs.writer.record_waiting(entry);
        }
        let m = &outputs.metrics;
        outputs.note(format!(
            "agent stopped; the sensor reported {} token access(es) since start, {} lost to the trail writer's full queue",
            m.events(crate::sensor::event::EventKind::TokenAccess),
            m.trail_queue_lost.load(Relaxed),
        ));
        store_baseline(&mut correlator, &outputs.trail);
        if let Some(watch) = &enricher.watch {
            watch.abort();
        }
        outputs.close().await;
    }
}
