//! tokenwatch's task runner: `cargo xtask <command>`.
//!
//! - `bootstrap`: the nightly toolchain with `rust-src`, and `bpf-linker`
//!   (built from crates.io against the nightly's own libLLVM when missing);
//! - `build`, `run -- ARGS`: build the agent (eBPF embedded) and run it;
//! - `test`: formatting, clippy, unit and integration tests, then the
//!   root-only eBPF tests (skipped without root unless
//!   `TOKENWATCH_REQUIRE_EBPF=1`, which CI sets, turns the skip into a failure),
//!   then the same kernel tests in VMs on 5.10, 6.1 and 6.12 (`--no-vm`
//!   skips those, for a developer's quick run);
//! - `vm-test [--kernel 5.10|6.1|6.12|all]`: only the kernel tests in qemu
//!   VMs on Debian's 5.10, 6.1 and 6.12 cloud kernels (see `vm.rs`);
//! - `bench sensor`: the sensor overhead benchmark (see `bench.rs`);
//! - `bench replay`: audit-log replay against jq (see `bench_replay.rs`);
//! - `bench agent`: the agent under load and idle (see `bench_agent.rs`);
//! - `image`: the agent's OCI image archive, no daemon, no pull (see `image.rs`).

mod bench;
mod bench_agent;
mod bench_hooks;
mod bench_replay;
mod bootstrap;
mod cpio;
mod image;
mod vm;

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "tokenwatch build, test and benchmark tasks")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building the eBPF programs needs (idempotent).
    Bootstrap,
    /// Build the tokenwatch binary with its eBPF programs.
    Build {
        /// Build with optimisations.
        #[arg(long)]
        release: bool,
    },
    /// Build, then run tokenwatch (as root) with the given arguments.
    Run {
        /// Build with optimisations.
        #[arg(long)]
        release: bool,
        /// Arguments for tokenwatch.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Run every check and test: lints, unit and integration tests, the
    /// kernel tests on the host (they need root), then the kernel tests in
    /// VMs on Linux 5.10, 6.1 and 6.12.
    Test {
        /// Skip `cargo fmt --check` and clippy.
        #[arg(long)]
        no_lint: bool,
        /// Skip the kernel tests in VMs (5.10, 6.1, 6.12; about 12 minutes
        /// of emulation): for a developer's quick run. CI runs them.
        #[arg(long)]
        no_vm: bool,
        /// How the VM tests run (`--kernel` picks one of them).
        #[command(flatten)]
        vm: vm::VmArgs,
    },
    /// Write the agent's OCI image (a tar archive of an image layout).
    Image(image::Args),
    /// The root-only kernel tests in qemu VMs on other kernels.
    VmTest(vm::VmArgs),
    /// Run a benchmark and print its figures.
    Bench {
        #[command(subcommand)]
        which: bench::Which,
    },
}

/// The workspace root (xtask lives one level below it).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
        .to_owned()
}

/// Runs a command, failing with the command line when it does not succeed.
fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd.status().with_context(|| format!("starting {shown}"))?;
    if !status.success() {
        bail!("{shown} failed with {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Builds the binary and returns its path.
fn build(release: bool) -> anyhow::Result<PathBuf> {
    bootstrap::ensure()?;
    let mut cmd = cargo();
    cmd.args(["build", "--package", "tokenwatch", "--bin", "tokenwatch"]);
    if release {
        cmd.arg("--release");
    }
    run(&mut cmd)?;
    let profile = if release { "release" } else { "debug" };
    Ok(target_dir().join(profile).join("tokenwatch"))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from)
}

fn test(no_lint: bool, vm: Option<&vm::VmArgs>) -> anyhow::Result<()> {
    bootstrap::ensure()?;
    bootstrap::ensure_test_tools(vm.is_some())?;
    if !no_lint {
        run(cargo().args(["fmt", "--all", "--", "--check"]))?;
        run(cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
        run(cargo().args([
            "clippy",
            "--package",
            "tokenwatch-tests",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
    }
    // Everything that needs no privileges.
    run(cargo().args([
        "test",
        "--workspace",
        "--exclude",
        "monitor-ebpf",
        "--exclude",
        "tokenwatch-tests",
    ]))?;
    // The kernel tests: real programs on the real kernel.
    let require = std::env::var("TOKENWATCH_REQUIRE_EBPF").is_ok_and(|v| v == "1");
    if !is_root() {
        if require {
            bail!("the eBPF tests need root and TOKENWATCH_REQUIRE_EBPF=1 forbids skipping them");
        }
        eprintln!(
            "xtask: SKIPPING the eBPF tests: they need root (run `sudo -E cargo xtask test`, \
             or set TOKENWATCH_REQUIRE_EBPF=1 to make this a failure)"
        );
    } else {
        // The container test's images: the agent (debug build), a pause program
        // and a token reader, written by `image.rs` and imported by the test.
        let images = image::test_images()?;
        // One test binary at a time, its tests in parallel: each loads its own sensor.
        run(cargo()
            .args([
                "test",
                "--package",
                "tokenwatch-tests",
                "--",
                "--test-threads",
                "2",
            ])
            .env("TOKENWATCH_CRI_IMAGES", &images))?;
    }
    // The same kernel tests on the other kernels nodes run, in VMs (no root needed).
    match vm {
        Some(args) => vm::vm_test(args),
        None => {
            eprintln!(
                "xtask: SKIPPING the kernel tests on 5.10, 6.1 and 6.12 (`--no-vm`; CI runs them)"
            );
            Ok(())
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Task::Bootstrap => bootstrap::ensure(),
        Task::Build { release } => build(release).map(|path| println!("{}", path.display())),
        Task::Run { release, args } => {
            let binary = build(release)?;
            let mut cmd = if is_root() {
                Command::new(&binary)
            } else {
                eprintln!("xtask: not root; running through sudo");
                let mut sudo = Command::new("sudo");
                sudo.arg("-E").arg(&binary);
                sudo
            };
            run(cmd.args(args))
        }
        Task::Test { no_lint, no_vm, vm } => test(no_lint, (!no_vm).then_some(&vm)),
        Task::Image(args) => image::run(&args),
        Task::VmTest(args) => vm::vm_test(&args),
        Task::Bench { which } => bench::run(which),
    }
}
