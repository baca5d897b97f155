//! `cargo xtask image`: the agent's container image, written without a
//! daemon, a registry or a pull.
//!
//! The image is an OCI image layout (`oci-layout`, `index.json`,
//! `blobs/sha256/...`) packed in one tar archive, the format `ctr images
//! import`, `skopeo copy oci-archive:` and `podman load` read. It has one
//! uncompressed layer on an empty base: the binary, plus the shared
//! libraries `ldd` says it loads (glibc, libgcc_s, the dynamic loader), at
//! the paths the binary looks for them. `deploy/Dockerfile` describes the
//! same image (`FROM scratch`, the same files, `USER`, `ENTRYPOINT`,
//! `CMD`); the container test (`tests/tests/container.rs`) compares the two.
//!
//! The same writer makes the container test's own small images (a pause
//! program for the pod sandboxes, a token reader for a workload pod).

use std::{
    collections::BTreeSet,
    io::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use sha2::{Digest as _, Sha256};

/// The agent image's default user: non-root, for the CLI (the DaemonSet
/// sets `runAsUser: 0`; docs/capabilities.md says why).
pub const AGENT_USER: &str = "65532:65532";
/// Where the binary is in the image.
pub const AGENT_BINARY: &str = "/usr/local/bin/tokenwatch";
/// The name the DaemonSet refers to (`image:` in the manifests).
pub const AGENT_REF: &str = "tokenwatch:0.1.0";

/// What goes into an image: files at absolute paths, and the config.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// `name:tag`, stored as the archive's image name.
    pub reference: String,
    /// (path in the image, file on this machine).
    pub files: Vec<(String, PathBuf)>,
    /// `USER`.
    pub user: Option<String>,
    /// `ENTRYPOINT`.
    pub entrypoint: Vec<String>,
    /// `CMD`.
    pub cmd: Vec<String>,
}

impl ImageSpec {
    /// An image holding `binary` at `dest` and the shared libraries it loads.
    ///
    /// # Errors
    /// When `ldd` cannot describe the binary.
    pub fn for_binary(reference: &str, binary: &Path, dest: &str) -> anyhow::Result<Self> {
        let mut files = vec![(dest.to_owned(), binary.to_owned())];
        files.extend(shared_libraries(binary)?);
        Ok(Self {
            reference: reference.to_owned(),
            files,
            user: None,
            entrypoint: vec![dest.to_owned()],
            cmd: Vec::new(),
        })
    }

    /// The agent image, as `deploy/Dockerfile` describes it.
    ///
    /// # Errors
    /// When `ldd` cannot describe the binary.
    pub fn agent(binary: &Path) -> anyhow::Result<Self> {
        let mut spec = Self::for_binary(AGENT_REF, binary, AGENT_BINARY)?;
        spec.user = Some(AGENT_USER.to_owned());
        spec.cmd = vec!["--help".to_owned()];
        Ok(spec)
    }
}

/// The shared libraries `binary` loads, as (path in the image, file here):
/// the path `ldd` resolved, so the loader finds them where it looks.
fn shared_libraries(binary: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .with_context(|| format!("running ldd on {}", binary.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        if text.contains("not a dynamic executable")
            || String::from_utf8_lossy(&out.stderr).contains("not a dynamic executable")
        {
            return Ok(Vec::new());
        }
        bail!(
            "ldd {} failed: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    parse_ldd(&text).with_context(|| format!("reading ldd's output for {}", binary.display()))
}

/// Parses `ldd` output: `name => /path (0x...)` and `/path (0x...)` lines;
/// the vDSO has no file and is skipped.
fn parse_ldd(text: &str) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with("linux-vdso") || line.starts_with("statically") {
            continue;
        }
        let path = match line.split_once("=>") {
            Some((name, rest)) => {
                let rest = rest.trim();
                if rest.starts_with("not found") {
                    bail!("the shared library {} is not found", name.trim());
                }
                rest.split_whitespace().next().unwrap_or("")
            }
            None => line.split_whitespace().next().unwrap_or(""),
        };
        if !path.starts_with('/') {
            bail!("unexpected ldd line {line:?}");
        }
        libs.push((path.to_owned(), PathBuf::from(path)));
    }
    Ok(libs)
}

/// A blob: its digest (`sha256:...`) and size.
struct Blob {
    digest: String,
    size: usize,
}

fn put_blob(out: &mut tar::Builder<impl std::io::Write>, bytes: &[u8]) -> anyhow::Result<Blob> {
    let hex = hex_digest(bytes);
    append_file(out, &format!("blobs/sha256/{hex}"), bytes, 0o644)?;
    Ok(Blob {
        digest: format!("sha256:{hex}"),
        size: bytes.len(),
    })
}

fn hex_digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            use std::fmt::Write as _;
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header
}

fn append_file(
    out: &mut tar::Builder<impl std::io::Write>,
    path: &str,
    bytes: &[u8],
    mode: u32,
) -> anyhow::Result<()> {
    let mut h = header(tar::EntryType::Regular, bytes.len() as u64, mode);
    out.append_data(&mut h, path, bytes)
        .with_context(|| format!("writing {path} into the archive"))
}

/// The layer: every file with its parent directories, root-owned, mtime 0,
/// in a stable order (the same inputs give the same digest).
fn layer(spec: &ImageSpec) -> anyhow::Result<Vec<u8>> {
    let mut dirs = BTreeSet::new();
    for (dest, _) in &spec.files {
        let mut parent = Path::new(dest).parent();
        while let Some(p) = parent {
            if p != Path::new("/") {
                dirs.insert(p.to_owned());
            }
            parent = p.parent();
        }
    }
    let mut builder = tar::Builder::new(Vec::new());
    for dir in &dirs {
        let rel = dir.strip_prefix("/").unwrap_or(dir);
        let mut h = header(tar::EntryType::Directory, 0, 0o755);
        builder
            .append_data(&mut h, format!("{}/", rel.display()), std::io::empty())
            .with_context(|| format!("writing {} into the layer", dir.display()))?;
    }
    let mut files = spec.files.clone();
    files.sort();
    files.dedup_by(|a, b| a.0 == b.0);
    for (dest, source) in &files {
        // Follows symlinks: the image gets the library itself.
        let bytes =
            std::fs::read(source).with_context(|| format!("reading {}", source.display()))?;
        let rel = dest.trim_start_matches('/');
        append_file(&mut builder, rel, &bytes, 0o755)?;
    }
    builder.into_inner().context("finishing the layer")
}

/// Writes `spec` as an OCI image layout in a tar archive at `out`, and
/// returns the manifest's digest.
///
/// # Errors
/// When a file cannot be read or the archive written.
pub fn write_archive(spec: &ImageSpec, out: &Path) -> anyhow::Result<String> {
    let layer = layer(spec)?;
    let layer_hex = hex_digest(&layer);
    let mut config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Entrypoint": spec.entrypoint,
        },
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_hex}")]},
        "history": [{"created_by": "cargo xtask image", "comment": "binary and its shared libraries"}],
    });
    if !spec.cmd.is_empty() {
        config["config"]["Cmd"] = serde_json::json!(spec.cmd);
    }
    if let Some(user) = &spec.user {
        config["config"]["User"] = serde_json::json!(user);
    }
    let config = serde_json::to_vec(&config)?;

    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = out.with_extension("tar.tmp");
    let file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut archive = tar::Builder::new(std::io::BufWriter::new(file));
    let layer_blob = put_blob(&mut archive, &layer)?;
    let config_blob = put_blob(&mut archive, &config)?;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_blob.digest, "size": config_blob.size,
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer_blob.digest, "size": layer_blob.size,
        }],
    }))?;
    let manifest_blob = put_blob(&mut archive, &manifest)?;
    let tag = spec
        .reference
        .rsplit_once(':')
        .map_or("latest", |(_, tag)| tag);
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_blob.digest, "size": manifest_blob.size,
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {
                "org.opencontainers.image.ref.name": tag,
                "io.containerd.image.name": full_name(&spec.reference),
            },
        }],
    }))?;
    append_file(&mut archive, "index.json", &index, 0o644)?;
    append_file(
        &mut archive,
        "oci-layout",
        br#"{"imageLayoutVersion":"1.0.0"}"#,
        0o644,
    )?;
    archive
        .into_inner()
        .context("finishing the archive")?
        .flush()
        .context("writing the archive")?;
    std::fs::rename(&tmp, out).with_context(|| format!("renaming to {}", out.display()))?;
    Ok(manifest_blob.digest)
}

/// `name:tag` as containerd and the CRI name it: `docker.io/library/name:tag`.
#[must_use]
pub fn full_name(reference: &str) -> String {
    let first = reference.split('/').next().unwrap_or("");
    if !reference.contains('/') {
        format!("docker.io/library/{reference}")
    } else if first.contains('.') || first.contains(':') || first == "localhost" {
        reference.to_owned()
    } else {
        format!("docker.io/{reference}")
    }
}

/// Options of `cargo xtask image`.
#[derive(clap::Args)]
pub struct Args {
    /// Use the debug build (faster to build; the release image is the one to ship).
    #[arg(long)]
    pub debug: bool,
    /// Where to write the archive.
    #[arg(long, default_value = "target/image/tokenwatch-0.1.0.oci.tar")]
    pub out: PathBuf,
    /// Write the container test's three images instead (into
    /// `target/cri-images/`), as `cargo xtask test` does.
    #[arg(long, conflicts_with_all = ["debug", "out"])]
    pub test_images: bool,
}

/// `cargo xtask image`: builds the agent and writes its image.
///
/// # Errors
/// When the build or the archive fails.
pub fn run(args: &Args) -> anyhow::Result<()> {
    if args.test_images {
        println!("{}", test_images()?.display());
        return Ok(());
    }
    let binary = crate::build(!args.debug)?;
    let spec = ImageSpec::agent(&binary)?;
    let out = if args.out.is_absolute() {
        args.out.clone()
    } else {
        crate::workspace_root().join(&args.out)
    };
    let digest = write_archive(&spec, &out)?;
    println!(
        "{} ({} {digest}): import with `ctr -n k8s.io images import {}`",
        out.display(),
        full_name(&spec.reference),
        out.display()
    );
    Ok(())
}

/// The container test's three images, written into `target/cri-images/`
/// (`agent.oci.tar`, `pause.oci.tar`, `reader.oci.tar`); returns the directory.
///
/// # Errors
/// When a build or an archive fails.
pub fn test_images() -> anyhow::Result<PathBuf> {
    let agent = crate::build(false)?;
    crate::run(crate::cargo().args(["build", "--package", "tokenwatch-tests", "--bins"]))?;
    let bins = crate::target_dir().join("debug");
    let dir = crate::target_dir().join("cri-images");
    write_archive(&ImageSpec::agent(&agent)?, &dir.join("agent.oci.tar"))?;
    write_archive(
        &ImageSpec::for_binary(
            "localhost/tokenwatch-test/pause:1",
            &bins.join("cri-pause"),
            "/pause",
        )?,
        &dir.join("pause.oci.tar"),
    )?;
    write_archive(
        &ImageSpec::for_binary(
            "localhost/tokenwatch-test/reader:1",
            &bins.join("cri-reader"),
            "/usr/bin/cri-reader",
        )?,
        &dir.join("reader.oci.tar"),
    )?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_lines() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        let libs: Vec<String> = parse_ldd(text).unwrap().into_iter().map(|l| l.0).collect();
        assert_eq!(
            libs,
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
        let err = parse_ldd("\tlibfoo.so.1 => not found\n").unwrap_err();
        assert!(err.to_string().contains("libfoo.so.1"), "{err}");
    }

    #[test]
    fn names() {
        assert_eq!(
            full_name("tokenwatch:0.1.0"),
            "docker.io/library/tokenwatch:0.1.0"
        );
        assert_eq!(full_name("org/x:1"), "docker.io/org/x:1");
        assert_eq!(full_name("localhost/x:1"), "localhost/x:1");
    }

    #[test]
    fn archive_is_a_layout_with_matching_digests() {
        let dir = std::env::temp_dir().join(format!("xtask-image-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bin = dir.join("prog");
        std::fs::write(&bin, b"\x7fELF not really").unwrap();
        let spec = ImageSpec {
            reference: "t:1".into(),
            files: vec![("/usr/bin/prog".into(), bin)],
            user: Some("1:1".into()),
            entrypoint: vec!["/usr/bin/prog".into()],
            cmd: vec!["x".into()],
        };
        let out = dir.join("t.tar");
        let digest = write_archive(&spec, &out).unwrap();
        let mut names = Vec::new();
        let mut blobs = std::collections::HashMap::new();
        let mut archive = tar::Archive::new(std::fs::File::open(&out).unwrap());
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().display().to_string();
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
            if let Some(hex) = name.strip_prefix("blobs/sha256/") {
                assert_eq!(hex_digest(&bytes), hex, "blob {name} has another digest");
            }
            blobs.insert(name.clone(), bytes);
            names.push(name);
        }
        assert!(names.contains(&"index.json".to_owned()));
        assert!(names.contains(&"oci-layout".to_owned()));
        let index: serde_json::Value = serde_json::from_slice(&blobs["index.json"]).unwrap();
        assert_eq!(index["manifests"][0]["digest"], digest.as_str());
        let hex = digest.trim_start_matches("sha256:");
        let manifest: serde_json::Value =
            serde_json::from_slice(&blobs[&format!("blobs/sha256/{hex}")]).unwrap();
        let config_hex = manifest["config"]["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:");
        let config: serde_json::Value =
            serde_json::from_slice(&blobs[&format!("blobs/sha256/{config_hex}")]).unwrap();
        assert_eq!(config["config"]["User"], "1:1");
        assert_eq!(config["config"]["Cmd"][0], "x");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
