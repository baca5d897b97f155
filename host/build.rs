//! Builds the kernel programs in `monitor-ebpf` (nightly, bpfel, through
//! aya-build) into `OUT_DIR` so that `sensor` can embed them.
//!
//! `cargo xtask bootstrap` installs what this needs (the nightly's
//! `rust-src` and `bpf-linker`). With `AYA_BUILD_SKIP=1` the eBPF build is
//! skipped and the binary is built without kernel programs: everything but
//! the sensor works, and loading the sensor fails with a clear error. The
//! pure-logic modules are developed and tested that way without nightly.

use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    println!("cargo::rustc-check-cfg=cfg(tokenwatch_no_ebpf)");
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    let skip =
        std::env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        println!("cargo:rustc-cfg=tokenwatch_no_ebpf");
        return Ok(());
    }
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?;
    let root = std::path::Path::new(&manifest_dir)
        .parent()
        .ok_or_else(|| anyhow!("{manifest_dir} has no parent directory"))?;
    let ebpf_dir = root.join("monitor-ebpf");
    let ebpf_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow!("monitor-ebpf path is not UTF-8"))?;
    println!(
        "cargo:rerun-if-changed={root}/monitor-common/src",
        root = root.display()
    );
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "monitor-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
    .context(
        "building the eBPF programs failed; run `cargo xtask bootstrap` to install the nightly \
         rust-src component and bpf-linker, or set AYA_BUILD_SKIP=1 to build without them",
    )
}
