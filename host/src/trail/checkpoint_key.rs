//! The node's checkpoint signing key on disk: `checkpoint.key` in the data
//! directory, created (mode 0600, never overwritten) on the agent's first
//! start, or a file the operator mounts (a Kubernetes Secret) given with
//! `--checkpoint-key`. Formats are in [`super::checkpoint::CheckpointSigner::parse`].

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use super::checkpoint::{CheckpointError, CheckpointSigner};

/// The key file's name in the data directory.
pub const KEY_FILE: &str = "checkpoint.key";

/// Name given to a PEM key (which carries none): one name for every node
/// that mounts the same Secret, so one verifier key covers them all.
pub const PEM_KEY_NAME: &str = "tokenwatch-checkpoints";

/// Errors loading or creating the key.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The key file could not be read.
    #[error("cannot read the checkpoint key {path}")]
    ReadKeyFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The key file could not be created.
    #[error("cannot create the checkpoint key {path}")]
    CreateKeyFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The key file holds no key we read.
    #[error("the checkpoint key {path} is not usable")]
    ParseKeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: CheckpointError,
    },
    /// A new key could not be made.
    #[error("cannot generate a checkpoint key")]
    GenerateKey(#[source] CheckpointError),
}

/// The key's file in `data_dir`.
#[must_use]
pub fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join(KEY_FILE)
}

/// The default key name of a node: `tokenwatch/<node>`, spaces and `+`
/// (which no Kubernetes node name has) replaced by `_`.
#[must_use]
pub fn key_name(node: &str) -> String {
    let node: String = node
        .chars()
        .map(|c| {
            if c.is_whitespace() || c == '+' {
                '_'
            } else {
                c
            }
        })
        .collect();
    format!("tokenwatch/{node}")
}

/// Reads a key file. A group- or world-readable file is used, with a warning.
///
/// # Errors
/// [`KeyFileError::ReadKeyFile`], [`KeyFileError::ParseKeyFile`].
pub fn load(path: &Path) -> Result<CheckpointSigner, KeyFileError> {
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|source| {
        KeyFileError::ReadKeyFile {
            path: path.to_owned(),
            source,
        }
    })?);
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), mode = format!("{:o}", meta.permissions().mode() & 0o777), "the checkpoint key is readable by others than its owner");
    }
    CheckpointSigner::parse(&text, PEM_KEY_NAME).map_err(|source| KeyFileError::ParseKeyFile {
        path: path.to_owned(),
        source,
    })
}

/// Writes a new key named `name` to `path` (mode 0600; an existing file
/// is an error, never overwritten).
///
/// # Errors
/// [`KeyFileError::CreateKeyFile`], [`KeyFileError::GenerateKey`].
pub fn generate_file(path: &Path, name: &str) -> Result<CheckpointSigner, KeyFileError> {
    let signer = CheckpointSigner::generate(name).map_err(KeyFileError::GenerateKey)?;
    write_new(path, &signer)?;
    Ok(signer)
}

fn write_new(path: &Path, signer: &CheckpointSigner) -> Result<(), KeyFileError> {
    let create = |source| KeyFileError::CreateKeyFile {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(create)?;
    file.write_all(signer.private_text().as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(create)
}

/// The key in `data_dir`, created (mode 0600) under [`key_name`]`(node)`
/// when there is none. Returns the signer and whether it was created.
///
/// # Errors
/// As [`load`]; [`KeyFileError::CreateKeyFile`], [`KeyFileError::GenerateKey`].
pub fn load_or_create(
    data_dir: &Path,
    node: &str,
) -> Result<(CheckpointSigner, bool), KeyFileError> {
    let path = key_path(data_dir);
    if path.exists() {
        return Ok((load(&path)?, false));
    }
    let signer = CheckpointSigner::generate(&key_name(node)).map_err(KeyFileError::GenerateKey)?;
    let create = |source| KeyFileError::CreateKeyFile {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(data_dir).map_err(create)?;
    // create_new: two agents starting at once never overwrite each other's key.
    match write_new(&path, &signer) {
        Ok(()) => Ok((signer, true)),
        Err(KeyFileError::CreateKeyFile { source, .. })
            if source.kind() == std::io::ErrorKind::AlreadyExists =>
        {
            Ok((load(&path)?, false))
        }
        Err(e) => Err(e),
    }
}
