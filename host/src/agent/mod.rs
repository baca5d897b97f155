//! The agent: the DaemonSet's process. It joins the sensor, node, identity,
//! rbac, correlate and trail modules, and serves health and metrics.
//!
//! ```text
//! sensor (fanotify token accesses, eBPF connects + lineage)
//!   ──► enrich (cgroup -> pod, (dev, ino) -> identity, volume owner)
//!   ──► Correlator ──► trail (hash chain, sled) ──► sinks (stdout, file, OTLP)
//! kubelet volumes (inotify) ──► fanotify marks: one filesystem mark per token
//!                               volume on its own tmpfs, else inode marks
//! sensor losses (overflow, fd failure, queue) ──► /metrics and an agent entry
//! RBAC files (polled) ──► snapshot ──► Correlator
//! API server (kubesync reflectors) ──► stored snapshot + pod metadata ──► Correlator, enrich
//! timers ──► trail flush (durable seq), retention, cgroup cache cleanup
//! timer (and start, shutdown) ──► signed checkpoint of the durable head ──► sinks, trail tree
//! <data dir>/agent.sock ──► `tokenwatch trail query|export|stats|verify` while running
//! SIGTERM / SIGINT ──► detach, record what is pending, flush the trail, exit 0
//! ```

pub mod checkpoint;
pub mod config;
pub mod http;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, atomic::Ordering::Relaxed},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::sync::mpsc;

pub use self::config::AgentConfig;
use crate::caps;
use crate::metrics::Metrics;
use crate::{
    correlate::{
        CorrelateConfig, Correlator, ENTRY_SCHEMA_VERSION, Enriched, EntryKind, PodRef,
        RbacContext, TrailEntry, baseline::BaselineConfig,
    },
    identity::{Identity, IdentityCache, KeySet},
    kubesync,
    node::{Attribution, CgroupResolver, FileId, PodMeta, TokenWatcher, WatchChange, WatchHandle},
    rbac::{Snapshot, import},
    sensor::{Sensor, SensorConfig, SensorEvent, event::Detail},
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

/// Everything the event loop consults to enrich an event.
struct Enricher {
    cgroups: CgroupResolver,
    identities: Arc<IdentityCache>,
    /// The kubelet volume watcher; `None` on a machine without a kubelet.
    watch: Option<WatchHandle>,
    pods: HashMap<String, PodMeta>,
    /// This node's pods as the API server describes them (live sync).
    api_pods: kubesync::PodMap,
    /// Identity per (dev, ino) for files found by path (not discovered volumes).
    by_file: HashMap<(u64, u64), Option<Arc<Identity>>>,
}

impl Enricher {
    fn refresh_pods(&mut self) {
        if let Some(watch) = &self.watch {
            self.pods = watch.pods().into_iter().collect();
        }
    }

    fn pod(&self, cgroup_id: u64) -> Option<PodRef> {
        match self.cgroups.resolve(cgroup_id) {
            Attribution::Host => None,
            Attribution::Pod {
                pod_uid,
                container_id,
                runtime,
                ..
            } => {
                let meta = self.pods.get(&pod_uid);
                // The API server's view first (every pod, legacy tokens too), then the token's.
                let api = self.api_pods.get(&pod_uid);
                let image = api.zip(container_id.as_ref()).and_then(|(p, id)| {
                    // Container IDs from the cgroup and from the status agree
                    // in full; a shortened one matches by prefix.
                    p.container_images.get(id).cloned().or_else(|| {
                        p.container_images
                            .iter()
                            .find(|(full, _)| full.starts_with(id.as_str()))
                            .map(|(_, image)| image.clone())
                    })
                });
                Some(PodRef {
                    name: api
                        .map(|p| p.name.clone())
                        .or_else(|| meta.map(|m| m.name.clone())),
                    namespace: api
                        .map(|p| p.namespace.clone())
                        .or_else(|| meta.map(|m| m.namespace.clone())),
                    uid: pod_uid,
                    container_id,
                    runtime: runtime.map(|r| format!("{r:?}").to_lowercase()),
                    image,
                    workload: api.and_then(|p| p.workload.clone()),
                    service_account: api
                        .and_then(|p| p.service_account.clone())
                        .or_else(|| meta.map(|m| m.service_account.clone())),
                    labels: api.map(|p| p.labels.clone()).unwrap_or_default(),
                })
            }
        }
    }

    /// The identity of the token file behind a file event: from the
    /// discovered volumes, else by reading it through the process's view.
    fn identity(
        &mut self,
        event: &SensorEvent,
        dev: u64,
        ino: u64,
        fd: i32,
        path: Option<&str>,
    ) -> Option<Arc<Identity>> {
        if let Some(found) = self.identities.get(FileId { dev, ino }) {
            return Some(found);
        }
        if let Some(cached) = self.by_file.get(&(dev, ino)) {
            return cached.clone();
        }
        let tgid = event.process.tgid;
        let mut candidates = Vec::new();
        if event.kind == crate::sensor::event::EventKind::TokenAccess {
            // fanotify: the path is the file as the agent sees it.
            if let Some(p) = path {
                candidates.push(PathBuf::from(p));
            }
        } else {
            candidates.push(PathBuf::from(format!("/proc/{tgid}/fd/{fd}")));
            if let Some(p) = path.filter(|p| p.starts_with('/')) {
                candidates.push(PathBuf::from(format!("/proc/{tgid}/root{p}")));
            }
        }
        let mut found = None;
        for candidate in candidates {
            if let Ok((id, identity)) = self.identities.load(&candidate)
                && id.dev == dev
                && id.ino == ino
            {
                found = Some(identity);
                break;
            }
        }
        if found.is_some() || self.by_file.len() < 65_536 {
            self.by_file.insert((dev, ino), found.clone());
        }
        found
    }

    fn enrich(&mut self, event: SensorEvent) -> Enriched {
        let pod = self.pod(event.process.cgroup_id);
        let (identity, volume_pod_uid) = match &event.detail {
            Detail::File(f) => {
                let id = FileId {
                    dev: f.dev,
                    ino: f.ino,
                };
                let volume = self
                    .watch
                    .as_ref()
                    .and_then(|w| w.file(id))
                    .map(|t| t.pod_uid);
                let identity = if matches!(event.kind, crate::sensor::event::EventKind::TokenClose)
                {
                    None
                } else {
                    self.identity(&event, f.dev, f.ino, f.fd, f.path.as_deref())
                };
                (identity, volume)
            }
            _ => (None, None),
        };
        Enriched {
            event,
            pod,
            identity,
            volume_pod_uid,
        }
    }
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

/// The running agent's outputs.
struct Outputs {
    trail: Trail,
    sinks: Arc<Sinks>,
    metrics: Arc<Metrics>,
}

impl Outputs {
    fn record(&self, entry: TrailEntry) {
        self.metrics
            .entry(entry.kind, entry.findings.iter().map(|f| f.kind));
        match self.trail.append(&entry) {
            Ok(_) => {
                self.metrics.trail_appended.fetch_add(1, Relaxed);
            }
            Err(err) => {
                self.metrics.trail_errors.fetch_add(1, Relaxed);
                tracing::error!(error = %crate::error::error_chain(&err), "trail append failed");
            }
        }
        self.sinks.send(&Arc::new(entry));
    }

    async fn flush(&self) {
        flush_trail(&self.trail, &self.metrics).await;
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
            _ = flush_tick.tick() => flush_trail(&trail, &metrics).await,
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
fn store_baseline(correlator: &mut Correlator, db: &sled::Db) {
    let changed = correlator.baseline_mut().take_changed(
        crate::sensor::event::monotonic_now_ns(),
        crate::store::unix_nanos(SystemTime::now()),
    );
    if changed.is_empty() {
        return;
    }
    if let Err(err) = crate::baseline_store::save(db, &changed) {
        tracing::warn!(error = %crate::error::error_chain(&err), workloads = changed.len(), "cannot store the learned baseline");
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

/// Runs the agent until SIGTERM or SIGINT. Call inside a tokio runtime.
///
/// # Errors
/// Whatever fails at start; once running, failures are logged and counted.
pub async fn run(config: AgentConfig) -> Result<(), AgentError> {
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

    // Outputs first, so that everything after can be recorded.
    let trail = Trail::open(&config.data_dir).map_err(|source| AgentError::OpenTrail {
        path: config.data_dir.clone(),
        source,
    })?;
    let sinks = Sinks::start(
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
        Arc::clone(&metrics),
    )
    .map_err(AgentError::StartSinks)?;
    let checkpointer = checkpoint::Checkpointer::new(&config, &node, &trail)
        .map_err(AgentError::StartCheckpoints)?;
    let outputs = Outputs {
        trail,
        sinks: Arc::new(sinks),
        metrics: Arc::clone(&metrics),
    };

    // HTTP: health, readiness, metrics.
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|source| AgentError::BindListener {
            addr: config.listen.clone(),
            source,
        })?;
    let readiness = Arc::new(http::Readiness {
        needs_snapshot: !config.rbac.is_empty(),
        missing_capabilities: missing_required.clone(),
    });
    let http_task = tokio::spawn(http::serve(listener, Arc::clone(&metrics), readiness));
    // The trail commands ask the running agent on a socket in the data dir.
    let trail_socket = crate::trail::live::socket_path(&config.data_dir);
    let live_task = match crate::trail::live::bind(&config.data_dir) {
        Ok(socket) => Some(tokio::spawn(crate::trail::live::serve(
            socket,
            outputs.trail.clone(),
        ))),
        Err(err) => {
            tracing::warn!(socket = %trail_socket.display(), error = %err, "`tokenwatch trail` commands cannot ask this agent while it runs");
            None
        }
    };

    // RBAC.
    let mut correlator = Correlator::new(correlate_config(&config));
    restore_baseline(&mut correlator, outputs.trail.db());
    let mut stamp = rbac_stamp(&config.rbac);
    if !config.rbac.is_empty() {
        let rbac = load_rbac(&config.rbac)?;
        outputs.record(agent_entry(
            &node,
            format!("loaded RBAC snapshot {}", rbac.label()),
        ));
        correlator.set_rbac(rbac);
        metrics.snapshot_loaded_unix.store(unix_now(), Relaxed);
    }
    let mut live = start_live_sync(&config, outputs.trail.db(), &node).await;
    if live.is_on() && config.rbac.is_empty() {
        // Until the API server answers, the newest snapshot an earlier sync stored.
        if let Some(rbac) = load_stored_rbac(outputs.trail.db(), &config.data_dir) {
            outputs.record(agent_entry(
                &node,
                format!("loaded RBAC snapshot {}", rbac.label()),
            ));
            correlator.set_rbac(rbac);
            metrics.snapshot_loaded_unix.store(unix_now(), Relaxed);
        }
    }
    // Set once the API server has supplied a snapshot: the files are only the fallback.
    let mut api_rbac = false;

    // Kubelet volumes, identities, cgroups.
    let identities = Arc::new(IdentityCache::new(load_keys(&config)?));
    let (watch_tx, mut watch_rx) = mpsc::channel::<WatchChange>(4096);
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
    let mut enricher = Enricher {
        cgroups,
        identities,
        watch,
        pods: HashMap::new(),
        api_pods: Arc::new(HashMap::new()),
        by_file: HashMap::new(),
    };

    // The sensor, with every discovered token inode already watched.
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
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(AgentError::InstallSignals)?;
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(AgentError::InstallSignals)?;
    let loaded = Sensor::load(&SensorConfig {
        path_suffixes: config.token_path_suffixes.clone(),
        syscall_path_match: config.syscall_path_match,
        endpoints,
        ring_buffer_bytes: config.ring_buffer_bytes,
        ..SensorConfig::default()
    });
    let mut sensor = match loaded {
        Ok(sensor) => sensor,
        Err(err) if !missing_required.is_empty() => {
            // Stay up, unready, so the pod shows why instead of crash-looping.
            let missing = missing_required.join(", ");
            let without: Vec<&str> = caps::NEEDS
                .iter()
                .filter(|n| missing_required.contains(&n.name))
                .map(|n| n.without)
                .collect();
            tracing::error!(error = %crate::error::error_chain(&err), "not ready: {missing} is missing: {}; /readyz answers 503 until the agent is stopped", without.join("; "));
            outputs.record(agent_entry(
                &node,
                format!("sensor not loaded: missing {missing}"),
            ));
            outputs.flush().await;
            tokio::select! {
                _ = term.recv() => {}
                _ = interrupt.recv() => {}
            }
            outputs.record(agent_entry(&node, "agent stopped".to_owned()));
            outputs.flush().await;
            if let Some(watch) = &enricher.watch {
                watch.abort();
            }
            http_task.abort();
            if let Some(task) = live_task {
                task.abort();
                let _ = std::fs::remove_file(&trail_socket);
            }
            let Outputs { sinks, .. } = outputs;
            if let Ok(sinks) = Arc::try_unwrap(sinks) {
                let _ = tokio::task::spawn_blocking(move || sinks.close()).await;
            }
            tracing::info!("agent stopped");
            return Ok(());
        }
        Err(err) => return Err(AgentError::StartSensor(err)),
    };
    let control = sensor.control();
    metrics.sensor_attached.store(true, Relaxed);
    outputs.record(agent_entry(
        &node,
        format!(
            "agent started on {node}; watching {} API-server endpoint(s)",
            apiservers.len()
        ),
    ));
    tracing::info!(node = %node, data_dir = %config.data_dir.display(), "agent running");

    let maintenance = tokio::spawn(maintain_trail(
        outputs.trail.clone(),
        Arc::clone(&metrics),
        config.trail.flush_interval,
        config.trail.max_age,
        config.trail.max_bytes,
    ));
    let checkpoints = tokio::spawn(checkpointer.clone().run(Arc::clone(&outputs.sinks)));
    let mut drops_tick = tokio::time::interval(Duration::from_secs(1));
    let mut slow_tick = tokio::time::interval(Duration::from_secs(60));
    let mut rbac_tick = tokio::time::interval(config.rbac_reload_interval);
    // Volumes found before the sensor started.
    if let Some(watch) = &enricher.watch {
        for file in watch.files() {
            watch_token_file(&control, &file);
        }
    }
    metrics
        .watched_inodes
        .store(control.watched_files() as u64, Relaxed);
    let mut reported_losses = sensor.losses();
    loop {
        tokio::select! {
            _ = interrupt.recv() => break,
            _ = term.recv() => break,
            Some(change) = watch_rx.recv() => {
                match change {
                    WatchChange::Add(id) => {
                        if let Some(file) = enricher.watch.as_ref().and_then(|w| w.file(id)) {
                            watch_token_file(&control, &file);
                        }
                    }
                    WatchChange::Remove(id) => {
                        if let Err(err) = control.unwatch_file(id.dev, id.ino) {
                            tracing::warn!(error = %crate::error::error_chain(&err), "unwatching a token file");
                        }
                    }
                }
                metrics.watched_inodes.store(control.watched_files() as u64, Relaxed);
                enricher.refresh_pods();
            }
            batch = sensor.next_batch() => {
                let batch = match batch {
                    Ok(batch) => batch,
                    Err(err) => { tracing::error!(error = %crate::error::error_chain(&err), "reading the ring buffer"); continue; }
                };
                if let Some(last) = batch.last() {
                    let now = crate::sensor::event::monotonic_now_ns();
                    metrics.queue_lag_ns.store(now.saturating_sub(last.monotonic_ns), Relaxed);
                }
                for event in batch {
                    metrics.event(event.kind);
                    let enriched = enricher.enrich(event);
                    for entry in correlator.observe(enriched) {
                        outputs.record(entry);
                    }
                }
            }
            _ = drops_tick.tick() => {
                metrics.kernel_drops.store(sensor.kernel_drops(), Relaxed);
                let losses = sensor.losses();
                if losses != reported_losses {
                    outputs.record(agent_entry(&node, loss_message(reported_losses, losses)));
                    reported_losses = losses;
                }
                metrics.fanotify_overflows.store(losses.overflows, Relaxed);
                metrics.fanotify_fd_failures.store(losses.fd_failures, Relaxed);
                metrics.fanotify_queue_lost.store(losses.queue_lost, Relaxed);
                store_baseline(&mut correlator, outputs.trail.db());
            }
            changed = live.handles.rbac.changed(), if live.rbac_open => {
                if changed.is_err() { live.rbac_open = false; continue; }
                let update = live.handles.rbac.borrow_and_update().clone();
                if let Some(update) = update {
                    outputs.record(agent_entry(&node, format!("RBAC snapshot {} from the API server ({} objects)", update.label, update.objects.len())));
                    correlator.set_rbac(RbacContext::new(update.snapshot, update.label));
                    metrics.snapshot_loaded_unix.store(unix_now(), Relaxed);
                    api_rbac = true;
                }
            }
            changed = live.handles.pods.changed(), if live.pods_open => {
                if changed.is_err() { live.pods_open = false; continue; }
                enricher.api_pods = live.handles.pods.borrow_and_update().clone();
            }
            _ = rbac_tick.tick() => {
                if config.rbac.is_empty() || api_rbac { continue; }
                let now_stamp = rbac_stamp(&config.rbac);
                if now_stamp != stamp {
                    stamp = now_stamp;
                    match load_rbac(&config.rbac) {
                        Ok(rbac) => {
                            outputs.record(agent_entry(&node, format!("reloaded RBAC snapshot {}", rbac.label())));
                            correlator.set_rbac(rbac);
                            metrics.snapshot_loaded_unix.store(unix_now(), Relaxed);
                        }
                        Err(err) => tracing::error!(error = %crate::error::error_chain(&err), "RBAC files changed but do not load; keeping the previous snapshot"),
                    }
                }
            }
            _ = slow_tick.tick() => {
                let removed = enricher.cgroups.forget_removed();
                tracing::debug!(removed, "forgot removed cgroups");
                enricher.refresh_pods();
            }
        }
    }

    // Shutdown: detach first, record what is pending, make it durable.
    metrics.kernel_drops.store(sensor.kernel_drops(), Relaxed);
    drop(sensor);
    maintenance.abort();
    checkpoints.abort();
    let _ = checkpoints.await;
    metrics.sensor_attached.store(false, Relaxed);
    for entry in correlator.drain() {
        outputs.record(entry);
    }
    outputs.record(agent_entry(&node, "agent stopped".to_owned()));
    store_baseline(&mut correlator, outputs.trail.db());
    outputs.flush().await;
    checkpointer.emit(&outputs.sinks).await;
    if let Some(watch) = &enricher.watch {
        watch.abort();
    }
    http_task.abort();
    if let Some(task) = live_task {
        task.abort();
        let _ = std::fs::remove_file(&trail_socket);
    }
    let Outputs { sinks, trail, .. } = outputs;
    // The checkpoint's copy in the tree: durable too.
    let _ = tokio::task::spawn_blocking(move || trail.flush()).await;
    match Arc::try_unwrap(sinks) {
        Ok(sinks) => {
            let _ = tokio::task::spawn_blocking(move || sinks.close()).await;
        }
        Err(_) => tracing::warn!("sinks still shared at shutdown: not waiting for them"),
    }
    tracing::info!("agent stopped");
    Ok(())
}
