//! `tokenwatch watch`: run the kernel sensor alone and print token accesses
//! and API-server connects as JSON lines on stdout (schema:
//! `docs/events.md`); exec/exit lineage lines only with `--lineage`.

use std::{io::Write as _, net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use crate::sensor::{self, Sensor, SensorConfig, SensorError, event::EventKind};

/// Arguments of `tokenwatch watch`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A path suffix that marks a token file, for `--syscall-path-match`
    /// (repeatable; replaces the defaults). One `*` may stand for one whole
    /// path component.
    #[arg(
        long = "token-path-suffix",
        value_name = "SUFFIX",
        env = "TOKENWATCH_TOKEN_PATH_SUFFIX",
        value_delimiter = ','
    )]
    pub token_path_suffixes: Vec<String>,

    /// Watch this file with a fanotify inode mark (repeatable): every open,
    /// read and close of it is reported, however it is reached.
    #[arg(
        long = "watch-file",
        value_name = "PATH",
        env = "TOKENWATCH_WATCH_FILE",
        value_delimiter = ','
    )]
    pub watch_files: Vec<PathBuf>,

    /// Watch the token volumes under this kubelet root found at start
    /// (a filesystem mark per volume on its own tmpfs, else inode marks).
    #[arg(long, value_name = "DIR", env = "TOKENWATCH_KUBELET_ROOT")]
    pub kubelet_root: Option<PathBuf>,

    /// Also print every exec and exit on the node (the lineage the sensor
    /// keeps to name readers that exited).
    #[arg(long, env = "TOKENWATCH_LINEAGE")]
    pub lineage: bool,

    /// Opt-in: also match the path of every open on the node against the
    /// suffixes, with an eBPF program on every syscall exit. Finds token
    /// files outside known volumes, but costs every syscall on the machine
    /// (about 1.4x on an open+close loop, docs/performance.md), and sees
    /// only open/read/pread64/readv/close by their native syscalls.
    #[arg(long, env = "TOKENWATCH_SYSCALL_PATH_MATCH")]
    pub syscall_path_match: bool,

    /// API-server endpoint HOST:PORT (repeatable). Default: the
    /// environment's KUBERNETES_SERVICE_HOST/_PORT, plus 127.0.0.1:6443.
    #[arg(
        long = "apiserver",
        value_name = "HOST:PORT",
        env = "TOKENWATCH_APISERVER",
        value_delimiter = ','
    )]
    pub apiservers: Vec<String>,

    /// Stop after this long (e.g. `30s`, `5m`); default: until Ctrl-C.
    #[arg(long, value_parser = humantime::parse_duration, env = "TOKENWATCH_DURATION")]
    pub duration: Option<Duration>,

    /// Kernel BTF to read struct offsets from.
    #[arg(long, default_value = sensor::btf::VMLINUX_BTF, env = "TOKENWATCH_BTF")]
    pub btf: PathBuf,

    /// Ring buffer size in bytes (a power of two).
    #[arg(long, default_value_t = SensorConfig::default().ring_buffer_bytes, env = "TOKENWATCH_RING_BUFFER_BYTES")]
    pub ring_buffer_bytes: u32,
}

pub use crate::sensor::default_apiservers;

impl Args {
    /// The sensor configuration these flags describe.
    ///
    /// # Errors
    /// An endpoint that does not resolve.
    pub fn sensor_config(&self) -> Result<SensorConfig, SensorError> {
        let mut config = SensorConfig {
            watch_files: self.watch_files.clone(),
            syscall_path_match: self.syscall_path_match,
            btf_path: self.btf.clone(),
            ring_buffer_bytes: self.ring_buffer_bytes,
            // Without --lineage exec and exit lines are not printed: the
            // sensor keeps the lineage without building them.
            lineage_events: self.lineage,
            ..SensorConfig::default()
        };
        if !self.token_path_suffixes.is_empty() {
            config.path_suffixes.clone_from(&self.token_path_suffixes);
        }
        let apiservers = if self.apiservers.is_empty() {
            default_apiservers()
        } else {
            self.apiservers.clone()
        };
        let mut endpoints: Vec<SocketAddr> = Vec::new();
        for endpoint in &apiservers {
            endpoints.extend(sensor::resolve_endpoint(endpoint)?);
        }
        config.endpoints = endpoints;
        Ok(config)
    }
}

/// Runs the command.
#[must_use]
pub fn run(args: Args) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return super::fail(&err),
    };
    match runtime.block_on(watch(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => super::fail(&err),
    }
}

/// Marks the token volumes found under a kubelet root.
fn watch_kubelet_volumes(sensor: &Sensor, root: &std::path::Path) {
    let cache = crate::identity::IdentityCache::new(crate::identity::KeySet::new());
    let files = match tokenwatch_host::node::discover(root, &cache) {
        Ok(files) => files,
        Err(err) => {
            eprintln!(
                "tokenwatch: cannot list token volumes under {}: {}",
                root.display(),
                super::error_chain(&err)
            );
            return;
        }
    };
    let control = sensor.control();
    for file in files {
        let dir = file.path.ancestors().find(|d| {
            d.parent()
                .and_then(std::path::Path::file_name)
                .is_some_and(|p| p.as_encoded_bytes().starts_with(b"kubernetes.io~"))
        });
        let result = match dir {
            Some(dir) => control.watch_volume_file(dir, &file.path).map(|_| ()),
            None => control.watch_file(&file.path).map(|_| ()),
        };
        if let Err(err) = result {
            eprintln!("tokenwatch: {}", super::error_chain(&err));
        }
    }
}

async fn watch(args: &Args) -> Result<(), SensorError> {
    let config = args.sensor_config()?;
    let mut sensor = Sensor::load(&config)?;
    if let Some(root) = &args.kubelet_root {
        watch_kubelet_volumes(&sensor, root);
    }
    // Tell whoever waits on us (tests, scripts) that the programs are attached.
    eprintln!("tokenwatch: sensor attached; watching");
    let deadline = async {
        match args.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let mut stdout = std::io::stdout().lock();
    let mut printed: u64 = 0;
    loop {
        tokio::select! {
            () = &mut deadline => break,
            _ = tokio::signal::ctrl_c() => break,
            batch = sensor.next_batch() => {
                for event in batch? {
                    if !args.lineage && matches!(event.kind, EventKind::Exec | EventKind::Exit) {
                        continue;
                    }
                    let line = serde_json::to_string(&event).unwrap_or_default();
                    if writeln!(stdout, "{line}").is_err() {
                        // stdout closed (a pipe reader went away): stop quietly.
                        return Ok(());
                    }
                    printed += 1;
                }
                let _ = stdout.flush();
            }
        }
    }
    let losses = sensor.losses();
    eprintln!(
        "tokenwatch: {printed} events, {} dropped by the kernel ring buffer; fanotify: {} overflows, {} without fd, {} dropped by the queue",
        sensor.kernel_drops(),
        losses.overflows,
        losses.fd_failures,
        losses.queue_lost
    );
    Ok(())
}
