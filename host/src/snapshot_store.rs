//! RBAC snapshots kept in the data store, one per import, keyed by time.
//!
//! `tokenwatch rbac import` saves the imported objects (before
//! aggregation, which is recomputed on load) under the tree
//! [`crate::store::trees::RBAC_SNAPSHOTS`]; commands then use "the snapshot
//! as of a time": the newest one imported at or before it.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::rbac::import::{ImportReport, import_paths};
use crate::rbac::model::RbacObjects;
use crate::rbac::snapshot::Snapshot;
use crate::replay::decide::{BoxError, Policy, SnapshotHistory};
use crate::replay::time::{from_system_time, to_system_time};
use crate::store::{self, StoreError, trees};

/// Errors of the snapshot store.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotStoreError {
    /// The underlying store failed.
    #[error("RBAC snapshot store")]
    AccessStore {
        /// The store's error.
        #[source]
        source: StoreError,
    },
    /// No snapshot was imported at or before the time asked for.
    #[error("no RBAC snapshot imported at or before {at} in {data_dir}")]
    FindSnapshot {
        /// The time asked for (RFC 3339).
        at: String,
        /// The data directory searched.
        data_dir: String,
    },
    /// Importing files given directly failed.
    #[error("cannot import RBAC objects")]
    ImportFiles {
        /// The importer's error.
        #[source]
        source: crate::rbac::import::ImportError,
    },
    /// A time given on the command line is not RFC 3339.
    #[error("invalid time {input:?}: expected RFC 3339 (2025-01-31T12:00:00Z) or `now`")]
    ParseTime {
        /// What was given.
        input: String,
        /// humantime's error.
        #[source]
        source: humantime::TimestampError,
    },
}

impl From<StoreError> for SnapshotStoreError {
    fn from(source: StoreError) -> Self {
        Self::AccessStore { source }
    }
}

/// A stored snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredSnapshot {
    /// Import time, RFC 3339 with nanoseconds (also the snapshot's id).
    pub imported_at: String,
    /// Paths given to the import.
    pub sources: Vec<String>,
    /// Objects of other kinds skipped, by kind.
    #[serde(default)]
    pub skipped: BTreeMap<String, usize>,
    /// The RBAC objects.
    pub objects: RbacObjects,
}

/// What `list` shows of a snapshot.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotMeta {
    /// Import time (RFC 3339, nanoseconds); names the snapshot.
    pub imported_at: String,
    /// Paths given to the import.
    pub sources: Vec<String>,
    /// Number of Roles.
    pub roles: usize,
    /// Number of ClusterRoles.
    pub cluster_roles: usize,
    /// Number of RoleBindings.
    pub role_bindings: usize,
    /// Number of ClusterRoleBindings.
    pub cluster_role_bindings: usize,
}

impl From<&StoredSnapshot> for SnapshotMeta {
    fn from(s: &StoredSnapshot) -> Self {
        Self {
            imported_at: s.imported_at.clone(),
            sources: s.sources.clone(),
            roles: s.objects.roles.len(),
            cluster_roles: s.objects.cluster_roles.len(),
            role_bindings: s.objects.role_bindings.len(),
            cluster_role_bindings: s.objects.cluster_role_bindings.len(),
        }
    }
}

/// Parses `now` or an RFC 3339 time.
///
/// # Errors
/// [`SnapshotStoreError::ParseTime`].
pub fn parse_time(input: &str) -> Result<SystemTime, SnapshotStoreError> {
    if input == "now" {
        return Ok(SystemTime::now());
    }
    humantime::parse_rfc3339_weak(input).map_err(|source| SnapshotStoreError::ParseTime {
        input: input.to_owned(),
        source,
    })
}

/// Formats a time as the snapshot id.
#[must_use]
pub fn format_time(t: SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}

/// Saves an import as a snapshot taken at `at` (bumped by a nanosecond
/// while the key is taken).
///
/// # Errors
/// Store failures.
pub fn save(
    db: &sled::Db,
    at: SystemTime,
    sources: Vec<String>,
    report: &ImportReport,
) -> Result<SnapshotMeta, SnapshotStoreError> {
    let tree = store::tree(db, trees::RBAC_SNAPSHOTS)?;
    let mut at = at;
    loop {
        let key = store::time_key(at);
        let stored = StoredSnapshot {
            imported_at: format_time(at),
            sources: sources.clone(),
            skipped: report.skipped.clone(),
            objects: report.objects.clone(),
        };
        let value = store::encode(&stored)?;
        let swapped = tree
            .compare_and_swap(key, None::<&[u8]>, Some(value))
            .map_err(|source| StoreError::WriteRecord {
                tree: trees::RBAC_SNAPSHOTS,
                source,
            })?;
        if swapped.is_ok() {
            db.flush().map_err(|source| StoreError::WriteRecord {
                tree: trees::RBAC_SNAPSHOTS,
                source,
            })?;
            return Ok(SnapshotMeta::from(&stored));
        }
        at += std::time::Duration::from_nanos(1);
    }
}

/// Every snapshot, oldest first.
///
/// # Errors
/// Store failures and undecodable records.
pub fn list(db: &sled::Db) -> Result<Vec<SnapshotMeta>, SnapshotStoreError> {
    let tree = store::tree(db, trees::RBAC_SNAPSHOTS)?;
    let mut out = Vec::new();
    for item in &tree {
        let (_, value) = item.map_err(|source| StoreError::ReadRecord {
            tree: trees::RBAC_SNAPSHOTS,
            source,
        })?;
        let stored: StoredSnapshot = store::decode(&value)?;
        out.push(SnapshotMeta::from(&stored));
    }
    Ok(out)
}

/// The newest snapshot imported at or before `at`.
///
/// # Errors
/// [`SnapshotStoreError::FindSnapshot`] when there is none; store failures.
pub fn load_at(
    db: &sled::Db,
    at: SystemTime,
    data_dir: &Path,
) -> Result<StoredSnapshot, SnapshotStoreError> {
    let tree = store::tree(db, trees::RBAC_SNAPSHOTS)?;
    let key = store::time_key(at);
    let found = tree
        .range(..=key.as_slice())
        .next_back()
        .transpose()
        .map_err(|source| StoreError::ReadRecord {
            tree: trees::RBAC_SNAPSHOTS,
            source,
        })?;
    match found {
        Some((_, value)) => Ok(store::decode(&value)?),
        None => Err(SnapshotStoreError::FindSnapshot {
            at: format_time(at),
            data_dir: data_dir.display().to_string(),
        }),
    }
}

/// Where a command takes its RBAC objects from.
#[derive(Debug, Clone, Copy)]
pub enum SnapshotSource<'a> {
    /// Files or directories imported on the spot.
    Files {
        /// Paths (`-` for standard input).
        paths: &'a [std::path::PathBuf],
        /// Namespace for namespaced objects that name none.
        default_namespace: &'a str,
    },
    /// The stored snapshot as of a time.
    Stored {
        /// Data directory of the store.
        data_dir: &'a Path,
        /// The time.
        at: SystemTime,
    },
}

/// Loads and builds a snapshot from `source`; also returns a description
/// (the paths, or the stored snapshot's time).
///
/// # Errors
/// Import or store failures; no stored snapshot at that time.
pub fn load(source: SnapshotSource<'_>) -> Result<(Snapshot, String), SnapshotStoreError> {
    match source {
        SnapshotSource::Files {
            paths,
            default_namespace,
        } => {
            let report = import_paths(paths, default_namespace)
                .map_err(|source| SnapshotStoreError::ImportFiles { source })?;
            let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
            Ok((Snapshot::build(report.objects), names.join(", ")))
        }
        SnapshotSource::Stored { data_dir, at } => {
            let db = store::open(data_dir)?;
            let stored = load_at(&db, at, data_dir)?;
            let what = format!("snapshot {}", stored.imported_at);
            Ok((Snapshot::build(stored.objects), what))
        }
    }
}

/// The stored snapshots of a data directory, for a replay that picks one
/// per event by time (see [`replay_policy`]).
pub struct StoredSnapshots {
    data_dir: std::path::PathBuf,
    db: sled::Db,
}

impl SnapshotHistory for StoredSnapshots {
    fn load(&mut self, nanos: i64) -> Result<(String, Snapshot), BoxError> {
        let stored = load_at(&self.db, to_system_time(nanos), &self.data_dir)?;
        Ok((
            format!("snapshot {}", stored.imported_at),
            Snapshot::build(stored.objects),
        ))
    }
}

/// The replay policy of a data directory: the snapshot as of `at`, or
/// every stored snapshot chosen per event when `at` is `None`. Also
/// returns the open database, so that the trail of the same directory is
/// read through it (sled allows one opening per directory).
///
/// # Errors
/// Store failures; no snapshot stored (or none at or before `at`).
pub fn replay_policy(
    data_dir: &Path,
    at: Option<SystemTime>,
) -> Result<(Policy, sled::Db), SnapshotStoreError> {
    let db = store::open(data_dir)?;
    if let Some(at) = at {
        let stored = load_at(&db, at, data_dir)?;
        let label = format!("snapshot {}", stored.imported_at);
        return Ok((Policy::fixed(Snapshot::build(stored.objects), label), db));
    }
    let mut times = Vec::new();
    for m in list(&db)? {
        times.push(from_system_time(parse_time(&m.imported_at)?));
    }
    let history = StoredSnapshots {
        data_dir: data_dir.to_owned(),
        db: db.clone(),
    };
    let policy = Policy::history(Box::new(history), times).ok_or_else(|| {
        SnapshotStoreError::FindSnapshot {
            at: "any time".to_owned(),
            data_dir: data_dir.display().to_string(),
        }
    })?;
    Ok((policy, db))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::rbac::import::import_str;

    #[test]
    fn save_list_and_load_as_of() {
        let dir = tempfile::tempdir().unwrap();
        let db = store::open(dir.path()).unwrap();
        let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let one = import_str(
            "a.yaml",
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: a}\n",
        )
        .unwrap();
        let two = import_str(
            "b.yaml",
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: b}\n",
        )
        .unwrap();
        save(&db, t0, vec!["a.yaml".into()], &one).unwrap();
        save(
            &db,
            t0 + Duration::from_secs(60),
            vec!["b.yaml".into()],
            &two,
        )
        .unwrap();
        // Same instant twice: kept apart.
        save(&db, t0, vec!["a.yaml".into()], &one).unwrap();
        let metas = list(&db).unwrap();
        assert_eq!(metas.len(), 3);
        assert_eq!(metas[0].imported_at, "2023-11-14T22:13:20.000000000Z");
        assert_eq!(metas[1].imported_at, "2023-11-14T22:13:20.000000001Z");

        let at = load_at(&db, t0 + Duration::from_secs(30), dir.path()).unwrap();
        assert_eq!(at.objects.cluster_roles[0].name, "a");
        let at = load_at(&db, t0 + Duration::from_secs(60), dir.path()).unwrap();
        assert_eq!(at.objects.cluster_roles[0].name, "b");
        let err = load_at(&db, t0 - Duration::from_secs(1), dir.path()).unwrap_err();
        assert!(matches!(err, SnapshotStoreError::FindSnapshot { .. }));
    }

    #[test]
    fn parses_times() {
        assert!(parse_time("2025-01-31T12:00:00Z").is_ok());
        assert!(parse_time("now").is_ok());
        assert!(matches!(
            parse_time("yesterday"),
            Err(SnapshotStoreError::ParseTime { .. })
        ));
    }
}
