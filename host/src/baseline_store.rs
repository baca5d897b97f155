//! The learned baseline (`tokenwatch_core::correlate::baseline`) in the
//! store: one value per workload and image in the [`trees::BASELINE`]
//! tree, saved as the agent learns and loaded at start.

use crate::correlate::baseline::StoredWorkload;
use crate::store::{self, StoreError, trees};

fn stored_key(w: &StoredWorkload) -> Vec<u8> {
    let mut key = w.namespace.as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(w.workload.as_bytes());
    key.push(0);
    key.extend_from_slice(w.image.as_bytes());
    key
}

/// Stores workloads (replacing what was stored for them) in the
/// [`trees::BASELINE`] tree; durable with the database's next flush.
///
/// # Errors
/// Opening the tree, encoding, or writing fails.
pub fn save(db: &sled::Db, workloads: &[StoredWorkload]) -> Result<(), StoreError> {
    let tree = store::tree(db, trees::BASELINE)?;
    let mut batch = sled::Batch::default();
    for w in workloads {
        batch.insert(stored_key(w), store::encode(w)?);
    }
    tree.apply_batch(batch)
        .map_err(|source| StoreError::WriteRecord {
            tree: trees::BASELINE,
            source,
        })
}

/// Every stored workload. One that does not decode is skipped with a
/// warning naming it (the rest are still restored).
///
/// # Errors
/// Opening or reading the tree fails.
pub fn load(db: &sled::Db) -> Result<Vec<StoredWorkload>, StoreError> {
    let tree = store::tree(db, trees::BASELINE)?;
    let mut out = Vec::new();
    for kv in &tree {
        let (key, value) = kv.map_err(|source| StoreError::ReadRecord {
            tree: trees::BASELINE,
            source,
        })?;
        match store::decode::<StoredWorkload>(&value) {
            Ok(w) => out.push(w),
            Err(err) => tracing::warn!(
                key = %String::from_utf8_lossy(&key).replace('\0', "/"),
                error = %crate::error::error_chain(&err),
                "skipping a stored baseline workload that does not decode"
            ),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_workloads_load_back() {
        let dir = tempfile::tempdir().unwrap();
        let db = store::open(dir.path()).unwrap();
        let web = StoredWorkload {
            namespace: "shop".into(),
            workload: "Deployment/web".into(),
            image: String::new(),
            first_seen_unix_nanos: 1_800_000_000_000_000_000,
            readers: vec!["/app/server".into()],
        };
        save(&db, std::slice::from_ref(&web)).unwrap();
        drop(db);
        let db = store::open(dir.path()).unwrap();
        assert_eq!(load(&db).unwrap(), [web]);
    }

    #[test]
    fn a_stored_value_that_does_not_decode_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let db = store::open(dir.path()).unwrap();
        let good = StoredWorkload {
            namespace: "shop".into(),
            workload: "web".into(),
            image: "registry.example/web:1.4".into(),
            first_seen_unix_nanos: 1,
            readers: vec!["/app/server".into()],
        };
        save(&db, std::slice::from_ref(&good)).unwrap();
        store::tree(&db, trees::BASELINE)
            .unwrap()
            .insert(b"shop\0broken", b"\x01{not json".as_slice())
            .unwrap();
        assert_eq!(load(&db).unwrap(), [good]);
    }
}
