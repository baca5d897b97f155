//! The agent's configuration: a TOML file, overridden by flags and their
//! `TOKENWATCH_*` environment variables (see `cli/agent.rs`). Every field
//! has a default, so an empty file (or none) runs the agent on this machine
//! with a local data dir, the default token suffixes and endpoints.

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;

/// Errors reading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the config file {path}")]
    ReadConfig {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (unknown keys are errors).
    #[error("invalid config file {path}")]
    ParseConfig {
        /// The file.
        path: PathBuf,
        /// What and where.
        #[source]
        source: toml::de::Error,
    },
}

/// Durations in the config are written like `10m`, `1h`, `200ms`.
mod human {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// This node's name in every trail entry. Default: `$NODE_NAME`, else the hostname.
    pub node_name: String,
    /// Where the trail (sled) lives. Default: `./tokenwatch-data`.
    pub data_dir: PathBuf,
    /// The kubelet's root directory, scanned and watched for token volumes.
    pub kubelet_root: PathBuf,
    /// The cgroup v2 mount (auto-detected when empty).
    pub cgroup_root: Option<PathBuf>,
    /// RBAC snapshot files or directories (YAML/JSON), reloaded when they change.
    pub rbac: Vec<PathBuf>,
    /// How often the RBAC files are checked for changes.
    #[serde(with = "human")]
    pub rbac_reload_interval: Duration,
    /// Kubeconfig for live sync with the API server (RBAC snapshots, this node's pods).
    pub kubeconfig: Option<PathBuf>,
    /// Live sync with the in-cluster configuration (the pod's own token); the DaemonSet sets it.
    pub in_cluster: bool,
    /// PEM public keys the API server signs tokens with (`--service-account-key-file`).
    pub keys: Vec<PathBuf>,
    /// JWKS files with the API server's signing keys.
    pub jwks: Vec<PathBuf>,
    /// Path suffixes that mark a token (one `*` = one path component);
    /// used only in the syscall path-match mode.
    pub token_path_suffixes: Vec<String>,
    /// The opt-in syscall path-match mode (costs every syscall; docs/sensor.md).
    pub syscall_path_match: bool,
    /// API-server endpoints `HOST:PORT`. Empty: `$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT` and `127.0.0.1:6443`.
    pub apiservers: Vec<String>,
    /// Address of the health, readiness and metrics endpoint.
    pub listen: String,
    /// Ring buffer size in bytes; default 2 MiB (it carries lineage and
    /// connects: ~5,000 records), 8 MiB with `syscall_path_match` (token
    /// reads go through it too).
    pub ring_buffer_bytes: Option<u32>,
    /// Correlation settings.
    pub correlate: CorrelateSection,
    /// Trail settings.
    pub trail: TrailSection,
    /// Output sinks besides the trail.
    pub sinks: SinksSection,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            node_name: String::new(),
            data_dir: PathBuf::from(crate::store::DEFAULT_DATA_DIR),
            // Where the kubelet keeps pod volumes on every distribution we know.
            kubelet_root: PathBuf::from("/var/lib/kubelet"),
            cgroup_root: None,
            rbac: Vec::new(),
            // Cheap (a stat per file) and quick enough for policy changes.
            rbac_reload_interval: Duration::from_secs(5),
            // No API access unless asked for: files and tokens are enough to run.
            kubeconfig: None,
            in_cluster: false,
            keys: Vec::new(),
            jwks: Vec::new(),
            token_path_suffixes: crate::sensor::pattern::DEFAULT_SUFFIXES
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            syscall_path_match: false,
            apiservers: Vec::new(),
            // Loopback by default; the DaemonSet sets 0.0.0.0:9464 for Prometheus.
            listen: "127.0.0.1:9464".to_owned(),
            ring_buffer_bytes: None,
            correlate: CorrelateSection::default(),
            trail: TrailSection::default(),
            sinks: SinksSection::default(),
        }
    }
}

/// `[correlate]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorrelateSection {
    /// How long after a token read a connect counts as its use.
    #[serde(with = "human")]
    pub use_window: Duration,
    /// How long a new workload's token readers are learned.
    #[serde(with = "human")]
    pub learning_period: Duration,
    /// Minimum time between identical token/subject findings for one reader.
    #[serde(with = "human")]
    pub finding_repeat: Duration,
    /// The longest span one folded record of a process's repeated accesses covers.
    #[serde(with = "human")]
    pub fold_window: Duration,
    /// Executables always expected to read their pod's token.
    pub reader_allowlist: Vec<String>,
    /// Executables never learned as normal readers (shells, file tools).
    pub never_learn: Option<Vec<String>>,
    /// Host executables allowed to read pods' tokens.
    pub host_readers: Vec<String>,
    /// Host executables allowed to contact the API server without a token.
    pub host_api_clients: Vec<String>,
}

impl Default for CorrelateSection {
    fn default() -> Self {
        let c = crate::correlate::CorrelateConfig::default();
        Self {
            use_window: c.use_window,
            learning_period: c.baseline.learning_period,
            finding_repeat: c.finding_repeat,
            fold_window: c.fold_window,
            reader_allowlist: Vec::new(),
            never_learn: None,
            host_readers: c.host_readers,
            host_api_clients: c.host_api_clients,
        }
    }
}

/// `[trail]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrailSection {
    /// How often appended records are made durable (fsync).
    #[serde(with = "human")]
    pub flush_interval: Duration,
    /// Records older than this are pruned.
    #[serde(with = "human")]
    pub max_age: Duration,
    /// The trail is pruned (oldest first) to stay under this many bytes.
    pub max_bytes: u64,
    /// How often a signed checkpoint of the trail goes to the sinks (also at start and shutdown).
    #[serde(with = "human")]
    pub checkpoint_interval: Duration,
    /// The checkpoint signing key (e.g. a mounted Secret). Default: `checkpoint.key` in the data dir, made on first start.
    pub checkpoint_key: Option<PathBuf>,
    /// Records waiting for the trail writer at most; beyond, a record is
    /// counted as lost (`tokenwatch_trail_queue_lost_total`), never waited for.
    pub queue_capacity: usize,
}

impl Default for TrailSection {
    fn default() -> Self {
        Self {
            // A crash loses at most this much.
            flush_interval: Duration::from_millis(200),
            // A month of history for incident review.
            max_age: Duration::from_secs(30 * 86_400),
            // 1 GiB per node.
            max_bytes: 1 << 30,
            // What a node root can cut from the trail unnoticed: at most this much.
            checkpoint_interval: Duration::from_secs(10),
            checkpoint_key: None,
            // Folded, a node writes a few records a second: 64 k is minutes
            // of a burst of new readers.
            queue_capacity: 65_536,
        }
    }
}

/// `[sinks]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SinksSection {
    /// Print every entry as a JSON line on stdout.
    pub stdout: bool,
    /// Append JSON lines to this file, rotating it.
    pub file: Option<PathBuf>,
    /// Rotate the file when it reaches this size.
    pub file_max_bytes: u64,
    /// Rotated files kept (`file.1` ... `file.N`).
    pub file_keep: u32,
    /// OTLP/HTTP endpoint of an OpenTelemetry collector (e.g. `http://otel:4318`); logs go to `/v1/logs`.
    pub otlp_endpoint: Option<String>,
    /// Entries each sink may hold before it drops (and counts) new ones.
    pub queue_capacity: usize,
}

impl Default for SinksSection {
    fn default() -> Self {
        Self {
            stdout: false,
            file: None,
            // 100 MiB x 5 files.
            file_max_bytes: 100 * 1024 * 1024,
            file_keep: 5,
            otlp_endpoint: None,
            // Seconds of a busy node's entries.
            queue_capacity: 10_000,
        }
    }
}

impl AgentConfig {
    /// Parses TOML text (`path` only names it in errors).
    ///
    /// # Errors
    /// [`ConfigError::ParseConfig`] naming the key and line.
    pub fn parse(text: &str, path: &std::path::Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|source| ConfigError::ParseConfig {
            path: path.to_owned(),
            source,
        })
    }

    /// Reads a TOML file.
    ///
    /// # Errors
    /// The file cannot be read or parsed.
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadConfig {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// The node name to record: configured, else `$NODE_NAME`, else the hostname.
    #[must_use]
    pub fn effective_node_name(&self) -> String {
        if !self.node_name.is_empty() {
            return self.node_name.clone();
        }
        std::env::var("NODE_NAME")
            .ok()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map_or_else(|_| "unknown".to_owned(), |h| h.trim().to_owned())
            })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn empty_file_is_the_defaults() {
        let config = AgentConfig::parse("", Path::new("empty.toml")).unwrap();
        assert_eq!(config, AgentConfig::default());
        assert_eq!(config.correlate.use_window, Duration::from_secs(600));
        assert_eq!(config.listen, "127.0.0.1:9464");
        assert_eq!(config.trail.checkpoint_interval, Duration::from_secs(10));
    }

    #[test]
    fn every_section_parses() {
        let text = r#"
node_name = "node-a"
data_dir = "/var/lib/tokenwatch"
rbac = ["/etc/tokenwatch/rbac"]
rbac_reload_interval = "30s"
kubeconfig = "/etc/tokenwatch/kubeconfig"
in_cluster = true
apiservers = ["10.96.0.1:443"]
listen = "0.0.0.0:9464"

[correlate]
use_window = "5m"
learning_period = "1h"
finding_repeat = "30m"
fold_window = "10s"
reader_allowlist = ["/app/server"]
never_learn = ["sh"]
host_readers = ["kubelet", "node-agent"]

[trail]
flush_interval = "100ms"
max_age = "7d"
max_bytes = 1048576
checkpoint_interval = "30s"
checkpoint_key = "/etc/tokenwatch/checkpoint/key"
queue_capacity = 4096

[sinks]
stdout = true
file = "/var/log/tokenwatch.jsonl"
file_keep = 3
otlp_endpoint = "http://otel-collector:4318"
queue_capacity = 100
"#;
        let c = AgentConfig::parse(text, Path::new("full.toml")).unwrap();
        assert_eq!(c.node_name, "node-a");
        assert_eq!(c.rbac_reload_interval, Duration::from_secs(30));
        assert_eq!(
            c.kubeconfig.as_deref(),
            Some(Path::new("/etc/tokenwatch/kubeconfig"))
        );
        assert!(c.in_cluster);
        assert_eq!(c.correlate.learning_period, Duration::from_secs(3600));
        assert_eq!(c.correlate.never_learn, Some(vec!["sh".to_owned()]));
        assert_eq!(c.correlate.fold_window, Duration::from_secs(10));
        assert_eq!(c.trail.queue_capacity, 4096);
        assert_eq!(c.trail.max_age, Duration::from_secs(7 * 86_400));
        assert_eq!(c.trail.checkpoint_interval, Duration::from_secs(30));
        assert_eq!(
            c.trail.checkpoint_key.as_deref(),
            Some(Path::new("/etc/tokenwatch/checkpoint/key"))
        );
        assert_eq!(c.sinks.file_keep, 3);
        assert_eq!(
            c.sinks.otlp_endpoint.as_deref(),
            Some("http://otel-collector:4318")
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let err = AgentConfig::parse("lisen = \"x\"", Path::new("a.toml")).unwrap_err();
        let text = crate::error::error_chain(&err);
        assert!(text.contains("a.toml") && text.contains("lisen"), "{text}");
        let err =
            AgentConfig::parse("[trail]\nmax_age = \"forever\"", Path::new("b.toml")).unwrap_err();
        let text = crate::error::error_chain(&err);
        assert!(
            text.contains("b.toml") && text.contains("max_age"),
            "{text}"
        );
    }
}
