//! `tokenwatch agent`: the DaemonSet's process. Reads the TOML config (if
//! any), applies flags and their `TOKENWATCH_*` environment variables on
//! top, and runs until SIGTERM/SIGINT.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use crate::agent::{self, AgentConfig};

/// Arguments of `tokenwatch agent` (each overrides the config file).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// TOML configuration file (see docs/agent.md); flags override it.
    #[arg(long, env = "TOKENWATCH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory of the trail.
    #[arg(long, env = "TOKENWATCH_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// This node's name (default: $NODE_NAME, else the hostname).
    #[arg(long, env = "TOKENWATCH_NODE_NAME")]
    pub node_name: Option<String>,
    /// The kubelet's root directory.
    #[arg(long, env = "TOKENWATCH_KUBELET_ROOT")]
    pub kubelet_root: Option<PathBuf>,
    /// The cgroup v2 mount (auto-detected by default).
    #[arg(long, env = "TOKENWATCH_CGROUP_ROOT")]
    pub cgroup_root: Option<PathBuf>,
    /// RBAC snapshot file or directory (repeatable), reloaded on change.
    #[arg(long, env = "TOKENWATCH_RBAC", value_delimiter = ',')]
    pub rbac: Vec<PathBuf>,
    /// Kubeconfig for live sync of RBAC snapshots and this node's pods.
    #[arg(long, env = "TOKENWATCH_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Live sync with the in-cluster configuration (the pod's own token).
    #[arg(long, env = "TOKENWATCH_IN_CLUSTER")]
    pub in_cluster: bool,
    /// PEM public key of the API server's token signer (repeatable).
    #[arg(long = "key", env = "TOKENWATCH_KEY", value_delimiter = ',')]
    pub keys: Vec<PathBuf>,
    /// JWKS file with the API server's token signing keys (repeatable).
    #[arg(long, env = "TOKENWATCH_JWKS", value_delimiter = ',')]
    pub jwks: Vec<PathBuf>,
    /// Token path suffix (repeatable; replaces the defaults).
    #[arg(
        long = "token-path-suffix",
        env = "TOKENWATCH_TOKEN_PATH_SUFFIX",
        value_delimiter = ','
    )]
    pub token_path_suffixes: Vec<String>,
    /// Opt in to the syscall path-match mode: an eBPF program on every
    /// syscall exit matches opened paths against the suffixes (tokens
    /// outside kubelet volumes). Costs every syscall on the node, about
    /// 1.4x on an open+close loop (docs/performance.md); off by default,
    /// when token volumes are watched by fanotify marks only.
    #[arg(long, env = "TOKENWATCH_SYSCALL_PATH_MATCH")]
    pub syscall_path_match: bool,
    /// API-server endpoint HOST:PORT (repeatable).
    #[arg(
        long = "apiserver",
        env = "TOKENWATCH_APISERVER",
        value_delimiter = ','
    )]
    pub apiservers: Vec<String>,
    /// Address for /healthz, /readyz and /metrics.
    #[arg(long, env = "TOKENWATCH_LISTEN")]
    pub listen: Option<String>,
    /// Also print every entry as a JSON line on stdout.
    #[arg(long, env = "TOKENWATCH_STDOUT")]
    pub stdout: bool,
    /// Also append entries as JSON lines to this file (rotated).
    #[arg(long, env = "TOKENWATCH_OUTPUT_FILE")]
    pub output_file: Option<PathBuf>,
    /// OTLP/HTTP endpoint of an OpenTelemetry collector.
    #[arg(long, env = "TOKENWATCH_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Learning period of the reader baseline (e.g. `10m`).
    #[arg(long, value_parser = humantime::parse_duration, env = "TOKENWATCH_LEARNING_PERIOD")]
    pub learning_period: Option<Duration>,
    /// Window in which a connect counts as the use of a token read before it.
    #[arg(long, value_parser = humantime::parse_duration, env = "TOKENWATCH_USE_WINDOW")]
    pub use_window: Option<Duration>,
    /// The longest span one folded record of a process's repeated token
    /// accesses covers (default 60s).
    #[arg(long, value_parser = humantime::parse_duration, env = "TOKENWATCH_FOLD_WINDOW")]
    pub fold_window: Option<Duration>,
    /// How often appended records are made durable.
    #[arg(long, value_parser = humantime::parse_duration, env = "TOKENWATCH_FLUSH_INTERVAL")]
    pub flush_interval: Option<Duration>,
    /// How often a signed checkpoint of the trail goes to the sinks (default 10s).
    #[arg(long, value_parser = humantime::parse_duration, env = "TOKENWATCH_CHECKPOINT_INTERVAL")]
    pub checkpoint_interval: Option<Duration>,
    /// Checkpoint signing key file (a mounted Secret; default: made in the data dir).
    #[arg(long, env = "TOKENWATCH_CHECKPOINT_KEY")]
    pub checkpoint_key: Option<PathBuf>,
}

impl Args {
    /// The configuration: the file (or defaults), then the flags.
    ///
    /// # Errors
    /// The config file cannot be read or parsed.
    pub fn config(&self) -> Result<AgentConfig, agent::config::ConfigError> {
        let mut c = match &self.config {
            Some(path) => AgentConfig::load(path)?,
            None => AgentConfig::default(),
        };
        let set = |target: &mut PathBuf, value: &Option<PathBuf>| {
            if let Some(v) = value {
                target.clone_from(v);
            }
        };
        set(&mut c.data_dir, &self.data_dir);
        set(&mut c.kubelet_root, &self.kubelet_root);
        if let Some(v) = &self.node_name {
            c.node_name.clone_from(v);
        }
        if self.cgroup_root.is_some() {
            c.cgroup_root.clone_from(&self.cgroup_root);
        }
        let extend_or = |target: &mut Vec<_>, values: &Vec<_>| {
            if !values.is_empty() {
                target.clone_from(values);
            }
        };
        extend_or(&mut c.rbac, &self.rbac);
        if self.kubeconfig.is_some() {
            c.kubeconfig.clone_from(&self.kubeconfig);
        }
        c.in_cluster |= self.in_cluster;
        extend_or(&mut c.keys, &self.keys);
        extend_or(&mut c.jwks, &self.jwks);
        if !self.token_path_suffixes.is_empty() {
            c.token_path_suffixes.clone_from(&self.token_path_suffixes);
        }
        c.syscall_path_match |= self.syscall_path_match;
        if !self.apiservers.is_empty() {
            c.apiservers.clone_from(&self.apiservers);
        }
        if let Some(v) = &self.listen {
            c.listen.clone_from(v);
        }
        c.sinks.stdout |= self.stdout;
        if self.output_file.is_some() {
            c.sinks.file.clone_from(&self.output_file);
        }
        if self.otlp_endpoint.is_some() {
            c.sinks.otlp_endpoint.clone_from(&self.otlp_endpoint);
        }
        if let Some(v) = self.learning_period {
            c.correlate.learning_period = v;
        }
        if let Some(v) = self.use_window {
            c.correlate.use_window = v;
        }
        if let Some(v) = self.fold_window {
            c.correlate.fold_window = v;
        }
        if let Some(v) = self.flush_interval {
            c.trail.flush_interval = v;
        }
        if let Some(v) = self.checkpoint_interval {
            c.trail.checkpoint_interval = v;
        }
        if self.checkpoint_key.is_some() {
            c.trail.checkpoint_key.clone_from(&self.checkpoint_key);
        }
        Ok(c)
    }
}

/// Runs the command.
#[must_use]
pub fn run(args: Args) -> ExitCode {
    let config = match args.config() {
        Ok(config) => config,
        Err(err) => return super::fail(&err),
    };
    agent::limit_allocator_arenas();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return super::fail(&err),
    };
    match runtime.block_on(agent::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => super::fail(&err),
    }
}
