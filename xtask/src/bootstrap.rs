//! Makes sure the eBPF build has what it needs, installing what is missing:
//!
//! 1. a nightly toolchain (rustup's `nightly`) with the `rust-src` component
//!    (the programs are built with `-Z build-std=core`);
//! 2. `bpf-linker`, which has no prebuilt binary here: it is built from
//!    crates.io against the nightly's own `libLLVM` (same LLVM major as the
//!    rustc that emits the bitcode), through a prefix directory whose
//!    `lib/libLLVM.so` points at the nightly's library.
//!
//! Each step checks first, so a second run takes well under a second.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::run;

const NIGHTLY: &str = "nightly";

fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().with_context(|| format!("starting {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn rustup() -> Command {
    Command::new("rustup")
}

/// The nightly toolchain, installed when missing.
fn ensure_nightly() -> anyhow::Result<()> {
    let installed = output(rustup().args(["toolchain", "list"]))
        .context("rustup is needed to manage the nightly toolchain for the eBPF build")?;
    if installed.lines().any(|l| l.starts_with("nightly")) {
        return Ok(());
    }
    eprintln!("xtask: installing the nightly toolchain (for the eBPF programs)");
    run(rustup().args(["toolchain", "install", NIGHTLY, "--profile", "minimal"]))
        .context("cannot install the nightly toolchain; the eBPF programs need it")
}

/// `rust-src` for the nightly, installed when missing.
fn ensure_rust_src() -> anyhow::Result<()> {
    let components =
        output(rustup().args(["component", "list", "--installed", "--toolchain", NIGHTLY]))?;
    if components.lines().any(|l| l.starts_with("rust-src")) {
        return Ok(());
    }
    eprintln!("xtask: adding rust-src to the nightly toolchain");
    run(rustup().args(["component", "add", "rust-src", "--toolchain", NIGHTLY]))
        .context("cannot add rust-src to the nightly toolchain")
}

/// Where cargo installs binaries.
fn cargo_bin_dir() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
        .join("bin")
}

fn bpf_linker_works() -> bool {
    let in_path = Command::new("bpf-linker").arg("--version").output();
    let in_cargo_bin = Command::new(cargo_bin_dir().join("bpf-linker"))
        .arg("--version")
        .output();
    in_path.is_ok_and(|o| o.status.success()) || in_cargo_bin.is_ok_and(|o| o.status.success())
}

/// The nightly's `lib/libLLVM.so.<major>.<minor>-rust-...` and its major version.
fn nightly_llvm() -> anyhow::Result<(PathBuf, u32)> {
    let sysroot =
        output(Command::new("rustc").args([&format!("+{NIGHTLY}"), "--print", "sysroot"]))?;
    let lib = Path::new(sysroot.trim()).join("lib");
    let entries = std::fs::read_dir(&lib).with_context(|| format!("reading {}", lib.display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(version) = name.strip_prefix("libLLVM.so.")
            && name.contains("-rust-")
            && let Some(major) = version
                .split('.')
                .next()
                .and_then(|m| m.parse::<u32>().ok())
        {
            return Ok((entry.path(), major));
        }
    }
    bail!(
        "the nightly toolchain at {} ships no libLLVM.so.*-rust-* to build bpf-linker against",
        lib.display()
    )
}

/// `bpf-linker`, built from crates.io against the nightly's LLVM when missing.
fn ensure_bpf_linker() -> anyhow::Result<()> {
    if bpf_linker_works() {
        return Ok(());
    }
    let (libllvm, major) = nightly_llvm()?;
    let prefix = crate::target_dir().join("xtask").join("llvm-prefix");
    let prefix_lib = prefix.join("lib");
    std::fs::create_dir_all(&prefix_lib)
        .with_context(|| format!("creating {}", prefix_lib.display()))?;
    let link = prefix_lib.join("libLLVM.so");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&libllvm, &link)
        .with_context(|| format!("linking {} to {}", link.display(), libllvm.display()))?;
    eprintln!(
        "xtask: building bpf-linker against the nightly's LLVM {major} ({}); this takes a minute or two",
        libllvm.display()
    );
    run(Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["install", "bpf-linker", "--force", "--locked", "--no-default-features", "--features"])
        .arg(format!("llvm-{major}"))
        .env("LLVM_PREFIX", &prefix)
        // The linker loads libLLVM at run time from the nightly's lib directory.
        .env("RUSTFLAGS", format!("-C link-arg=-Wl,-rpath,{}", libllvm.parent().unwrap_or(&prefix_lib).display())))
    .with_context(|| {
        format!("cannot build bpf-linker with feature llvm-{major}; the eBPF programs cannot be linked without it")
    })?;
    if !bpf_linker_works() {
        bail!(
            "bpf-linker was installed but does not run; check {}",
            cargo_bin_dir().display()
        );
    }
    Ok(())
}

/// Everything the eBPF build needs; quick when it is all there.
pub fn ensure() -> anyhow::Result<()> {
    ensure_nightly()?;
    ensure_rust_src()?;
    ensure_bpf_linker()?;
    // aya-build runs `cargo +nightly` through rustup and needs bpf-linker on PATH.
    let bin = cargo_bin_dir();
    let path = std::env::var_os("PATH").unwrap_or_default();
    if !std::env::split_paths(&path).any(|p| p == bin) {
        let joined = std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(&path)))
            .context("extending PATH with cargo's bin directory")?;
        // SAFETY: xtask is single-threaded at this point; children inherit PATH.
        unsafe { std::env::set_var("PATH", joined) };
    }
    Ok(())
}

/// Debian packages the VM tests (`cargo xtask vm-test`) need, each with a
/// file it installs: qemu; a static busybox for the guest's init and
/// shell tools; Debian's python3 for the simulated node in the guest;
/// objcopy to strip the test binaries; dpkg-deb to unpack the kernels.
const VM_TOOLS: [(&str, &str); 5] = [
    ("/usr/bin/qemu-system-x86_64", "qemu-system-x86"),
    ("/bin/busybox", "busybox-static"),
    ("/usr/bin/python3", "python3"),
    ("/usr/bin/objcopy", "binutils"),
    ("/usr/bin/dpkg-deb", "dpkg"),
];

/// Installs Debian `packages` (one `apt-get update` first).
fn apt_install(packages: &[&str], why: &str) -> anyhow::Result<()> {
    eprintln!(
        "xtask: installing {} (Debian) for {why}",
        packages.join(" ")
    );
    run(Command::new("apt-get").args(["update", "-qq"])).with_context(|| {
        format!(
            "apt-get update failed; cannot install {}",
            packages.join(" ")
        )
    })?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .with_context(|| {
        format!(
            "cannot install {} from Debian's packages",
            packages.join(" ")
        )
    })
}

/// The packages of [`VM_TOOLS`] whose file is missing.
fn missing_vm_tools() -> Vec<&'static str> {
    VM_TOOLS
        .iter()
        .filter(|(file, _)| !Path::new(file).exists())
        .map(|(_, package)| *package)
        .collect()
}

/// What `cargo xtask vm-test` needs on the host, installed when missing
/// (as root), or named.
pub fn ensure_vm_tools() -> anyhow::Result<()> {
    let missing = missing_vm_tools();
    if missing.is_empty() {
        return Ok(());
    }
    if !crate::is_root() {
        bail!(
            "the VM tests need Debian packages that are missing: {} (run as root, or `apt-get install` them; \
             `cargo xtask test --no-vm` skips the VM tests)",
            missing.join(" ")
        );
    }
    apt_install(&missing, "the kernel tests in VMs")
}

/// Debian packages the root-only tests and the sensor bench use, each with
/// a file that shows it is installed.
const TEST_PACKAGES: [(&str, &str, &str); 11] = [
    (
        "/usr/bin/chromium",
        "chromium",
        "the replay report's browser test",
    ),
    (
        "/usr/include/liburing.h",
        "liburing-dev",
        "the sensor test's io_uring reader (built with cc at test time)",
    ),
    ("/usr/bin/cc", "gcc", "the sensor test's C helpers"),
    (
        "/usr/sbin/capsh",
        "libcap2-bin",
        "the capability test (bounding set as the DaemonSet's)",
    ),
    ("/usr/sbin/auditctl", "auditd", "`cargo xtask bench sensor`"),
    (
        "/usr/bin/bpftrace",
        "bpftrace",
        "`cargo xtask bench sensor`",
    ),
    (
        "/usr/bin/containerd",
        "containerd",
        "the container test (containerd's CRI, `ctr images import`)",
    ),
    ("/usr/sbin/runc", "runc", "the container test"),
    (
        "/usr/lib/cni/bridge",
        "containernetworking-plugins",
        "the container test's pod network",
    ),
    (
        "/usr/bin/protoc",
        "protobuf-compiler",
        "the container test's CRI client (tests/build.rs)",
    ),
    (
        "/usr/sbin/ip",
        "iproute2",
        "the container test's network namespace",
    ),
];

/// Installs the Debian packages the root-only tests and benches need
/// (chromium, liburing-dev, gcc, libcap2-bin, auditd, bpftrace; containerd,
/// runc, the CNI plugins, protoc and iproute2 for the container test) and,
/// with `vm`, what the VM tests need ([`VM_TOOLS`]), when missing.
///
/// # Errors
/// apt-get fails.
pub fn ensure_test_tools(vm: bool) -> anyhow::Result<()> {
    let mut missing: Vec<(&str, &str)> = TEST_PACKAGES
        .iter()
        .filter(|(path, _, _)| !Path::new(path).exists())
        .map(|(_, package, why)| (*package, *why))
        .collect();
    if vm {
        missing.extend(
            missing_vm_tools()
                .into_iter()
                .map(|package| (package, "the kernel tests in VMs")),
        );
    }
    if missing.is_empty() {
        return Ok(());
    }
    if !crate::is_root() {
        for (package, why) in &missing {
            eprintln!("xtask: {package} ({why}) is missing and installing it needs root");
        }
        return Ok(());
    }
    for (package, why) in &missing {
        eprintln!("xtask: installing {package} (Debian) for {why}");
    }
    let packages: Vec<&str> = missing.iter().map(|(package, _)| *package).collect();
    apt_install(&packages, "the tests")
}
