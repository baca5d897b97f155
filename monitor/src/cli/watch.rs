//! `tokenwatch watch`: run the kernel sensor alone and print every event as
//! one JSON line on stdout (schema: `docs/events.md`).

use std::{io::Write as _, net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use crate::sensor::{self, Sensor, SensorConfig, SensorError};

/// Arguments of `tokenwatch watch`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A path suffix that marks a token file (repeatable; replaces the
    /// defaults). One `*` may stand for one whole path component.
    #[arg(
        long = "token-path-suffix",
        value_name = "SUFFIX",
        env = "TOKENWATCH_TOKEN_PATH_SUFFIX",
        value_delimiter = ','
    )]
    pub token_path_suffixes: Vec<String>,

    /// Also watch this file by inode (repeatable): caught however it is opened.
    #[arg(
        long = "watch-file",
        value_name = "PATH",
        env = "TOKENWATCH_WATCH_FILE",
        value_delimiter = ','
    )]
    pub watch_files: Vec<PathBuf>,

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
            btf_path: self.btf.clone(),
            ring_buffer_bytes: self.ring_buffer_bytes,
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

async fn watch(args: &Args) -> Result<(), SensorError> {
    let config = args.sensor_config()?;
    let mut sensor = Sensor::load(&config)?;
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
    eprintln!(
        "tokenwatch: {printed} events, {} dropped by the kernel",
        sensor.kernel_drops()
    );
    Ok(())
}
