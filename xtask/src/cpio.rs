//! A writer for the `newc` cpio format the kernel unpacks as an initramfs
//! (`Documentation/driver-api/early-userspace/buffer-format.rst`): a
//! 110-byte ASCII header per entry (`070701` and thirteen 8-digit hex
//! fields), the NUL-terminated name, the data, each padded to 4 bytes, and
//! a `TRAILER!!!` entry at the end.
//!
//! Besides entries made from bytes, it copies host paths faithfully: every
//! symlink met on the way (`/lib64 -> usr/lib64`, a library's soname link)
//! becomes the same symlink in the archive, so a dynamic loader or an
//! interpreter finds its files where it would on the host.

use std::{
    collections::BTreeSet,
    fs::File,
    io::{BufWriter, Write as _},
    os::unix::{ffi::OsStrExt as _, fs::PermissionsExt as _},
    path::{Component, Path, PathBuf},
};

use anyhow::{Context as _, bail};

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;

/// An initramfs being written.
pub struct Writer {
    out: BufWriter<File>,
    next_ino: u32,
    /// Archive paths written so far (absolute, as in the guest).
    written: BTreeSet<PathBuf>,
    /// Bytes of file data written.
    pub data_bytes: u64,
}

/// `a/b/../c` -> `a/c`, lexically (only for paths whose prefixes hold no symlinks).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(name) => out.push(name),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

impl Writer {
    /// Starts an archive at `path`.
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self {
            out: BufWriter::new(file),
            next_ino: 1,
            written: BTreeSet::new(),
            data_bytes: 0,
        })
    }

    fn pad(&mut self, len: u64) -> anyhow::Result<()> {
        let rem = usize::try_from(len % 4).unwrap_or(0);
        if rem != 0 {
            self.out.write_all(&[0u8; 4][..4 - rem])?;
        }
        Ok(())
    }

    fn header(&mut self, name: &Path, mode: u32, size: u64) -> anyhow::Result<()> {
        let rel = name.strip_prefix("/").unwrap_or(name);
        let name_bytes = rel.as_os_str().as_bytes();
        let size32 = u32::try_from(size)
            .with_context(|| format!("{} is over 4 GiB, too big for newc", name.display()))?;
        let namesize = u32::try_from(name_bytes.len() + 1).context("name too long")?;
        let ino = self.next_ino;
        self.next_ino += 1;
        let nlink = if mode & S_IFDIR == S_IFDIR { 2 } else { 1 };
        let header = format!(
            "070701{ino:08x}{mode:08x}{:08x}{:08x}{nlink:08x}{:08x}{size32:08x}{:08x}{:08x}{:08x}{:08x}{namesize:08x}{:08x}",
            0, 0, 0, 0, 0, 0, 0, 0
        );
        self.out.write_all(header.as_bytes())?;
        self.out.write_all(name_bytes)?;
        self.out.write_all(&[0])?;
        self.pad(110 + u64::from(namesize))?;
        Ok(())
    }

    /// A directory and its missing parents.
    pub fn dir(&mut self, path: &Path) -> anyhow::Result<()> {
        if path == Path::new("/") || self.written.contains(path) {
            return Ok(());
        }
        if let Some(parent) = path.parent() {
            self.dir(parent)?;
        }
        self.header(path, S_IFDIR | 0o755, 0)?;
        self.written.insert(path.to_owned());
        Ok(())
    }

    /// A file with `data` and permission bits `perm`.
    pub fn bytes(&mut self, path: &Path, data: &[u8], perm: u32) -> anyhow::Result<()> {
        if let Some(parent) = path.parent() {
            self.dir(parent)?;
        }
        if !self.written.insert(path.to_owned()) {
            bail!("{} is already in the initramfs", path.display());
        }
        self.header(path, S_IFREG | (perm & 0o7777), data.len() as u64)?;
        self.out.write_all(data)?;
        self.data_bytes += data.len() as u64;
        self.pad(data.len() as u64)
    }

    /// The host file `src` (symlinks followed) as the guest's `path`.
    pub fn file_from(&mut self, path: &Path, src: &Path) -> anyhow::Result<()> {
        let data = std::fs::read(src).with_context(|| format!("reading {}", src.display()))?;
        let perm = std::fs::metadata(src)?.permissions().mode();
        self.bytes(path, &data, perm)
    }

    /// A symlink `path -> target`.
    pub fn symlink(&mut self, path: &Path, target: &Path) -> anyhow::Result<()> {
        if let Some(parent) = path.parent() {
            self.dir(parent)?;
        }
        if !self.written.insert(path.to_owned()) {
            return Ok(());
        }
        let target = target.as_os_str().as_bytes();
        self.header(path, S_IFLNK | 0o777, target.len() as u64)?;
        self.out.write_all(target)?;
        self.pad(target.len() as u64)
    }

    /// The host path `path` at the same place in the guest, with every
    /// symlink on the way (directories and the file itself) reproduced.
    pub fn host_path(&mut self, path: &Path) -> anyhow::Result<()> {
        if !path.is_absolute() {
            bail!("{} is not an absolute path", path.display());
        }
        let parts: Vec<Component<'_>> = path.components().skip(1).collect();
        let mut current = PathBuf::from("/");
        for (i, part) in parts.iter().enumerate() {
            current.push(part);
            let meta = std::fs::symlink_metadata(&current)
                .with_context(|| format!("examining {}", current.display()))?;
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&current)?;
                self.symlink(&current, &target)?;
                let base = current.parent().unwrap_or(Path::new("/"));
                let mut resolved = normalize(&base.join(&target));
                for rest in &parts[i + 1..] {
                    resolved.push(rest);
                }
                return self.host_path(&resolved);
            }
            let last = i + 1 == parts.len();
            if meta.is_dir() {
                self.dir(&current)?;
            } else if last {
                if self.written.contains(&current) {
                    return Ok(());
                }
                return self.file_from(&current, &current);
            } else {
                bail!("{} is not a directory", current.display());
            }
        }
        Ok(())
    }

    /// Every file under the host directory `root` (recursively), skipping
    /// directories whose name is in `skip`.
    pub fn host_tree(&mut self, root: &Path, skip: &[&str]) -> anyhow::Result<()> {
        self.host_path(root)?;
        let mut entries: Vec<_> = std::fs::read_dir(root)
            .with_context(|| format!("reading {}", root.display()))?
            .collect::<Result<_, _>>()?;
        entries.sort_by_key(std::fs::DirEntry::file_name);
        for entry in entries {
            let path = entry.path();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                if skip.iter().any(|s| entry.file_name() == *s) {
                    continue;
                }
                self.host_tree(&path, skip)?;
            } else if kind.is_symlink() {
                self.symlink(&path, &std::fs::read_link(&path)?)?;
            } else if kind.is_file() {
                self.file_from(&path, &path)?;
            }
        }
        Ok(())
    }

    /// Writes the trailer and flushes.
    pub fn finish(mut self) -> anyhow::Result<()> {
        self.header(Path::new("TRAILER!!!"), 0, 0)?;
        self.out.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_resolves_parent_components() {
        assert_eq!(
            normalize(Path::new("/usr/lib64/../lib/x86_64-linux-gnu/ld.so")),
            PathBuf::from("/usr/lib/x86_64-linux-gnu/ld.so")
        );
    }

    /// The archive lists back with busybox's `cpio -t`, names and symlinks intact.
    #[test]
    fn an_archive_lists_back_with_cpio() {
        let dir = tempfile_dir();
        let archive = dir.join("a.cpio");
        let mut w = Writer::create(&archive).unwrap();
        w.bytes(Path::new("/etc/hostname"), "vm-é\n".as_bytes(), 0o644)
            .unwrap();
        w.symlink(Path::new("/lib64"), Path::new("usr/lib64"))
            .unwrap();
        w.finish().unwrap();
        let data = std::fs::read(&archive).unwrap();
        assert_eq!(data.len() % 4, 0);
        assert!(data.starts_with(b"070701"));
        // busybox-static is one of the VM test's tools (`ensure_test_tools`).
        let busybox = Path::new("/bin/busybox");
        assert!(
            busybox.exists(),
            "/bin/busybox is missing: install busybox-static (`cargo xtask test` does)"
        );
        let mut cmd = std::process::Command::new(busybox);
        cmd.arg("cpio");
        let out = cmd
            .args(["-t", "-F"])
            .arg(&archive)
            .output()
            .expect("run cpio");
        let listing = String::from_utf8_lossy(&out.stdout);
        let names: Vec<&str> = listing.lines().collect();
        assert_eq!(names, vec!["etc", "etc/hostname", "lib64"], "{out:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-cpio-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
