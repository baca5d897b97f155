//! Export: the records a query selects, as JSON lines, byte for byte as
//! they are stored (the record line of [`super::record`], schema
//! [`super::TRAIL_SCHEMA_VERSION`]). An unfiltered export is a complete,
//! independently verifiable chain (see `docs/trail.md`); a filtered one
//! lets each record's own hash be checked, but not the links between them.

use std::io::Write;

use super::query::Query;
use super::{Trail, TrailError};

impl Trail {
    /// Writes the records `q` selects to `out`, one line each; returns how
    /// many were written.
    ///
    /// # Errors
    /// Reading or decoding a record fails (naming it), or writing fails.
    pub fn export<W: Write>(&self, mut out: W, q: &Query) -> Result<u64, TrailError> {
        let write = |source| TrailError::WriteExport { source };
        let mut n = 0;
        let mut iter = self.query(q)?;
        while let Some(item) = iter.next_raw() {
            let (_, line) = item?;
            out.write_all(&line).map_err(write)?;
            out.write_all(b"\n").map_err(write)?;
            n += 1;
        }
        out.flush().map_err(write)?;
        Ok(n)
    }
}

/// Reads trails kept in data directories for a replay, sharing a database
/// that is already open (the one the RBAC snapshots came from: sled allows
/// one opening of a directory per process).
#[derive(Debug, Default)]
pub struct DataDirTrails {
    open: Option<(std::path::PathBuf, sled::Db)>,
}

impl DataDirTrails {
    /// Reads `data_dir`'s trail through `db`, and any other directory by
    /// opening it.
    #[must_use]
    pub fn sharing(data_dir: &std::path::Path, db: sled::Db) -> Self {
        Self {
            open: Some((data_dir.to_owned(), db)),
        }
    }
}

fn same_dir(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

impl crate::replay::TrailDirs for DataDirTrails {
    fn read(
        &self,
        dir: &std::path::Path,
        filters: &crate::replay::Filters,
        add: &mut dyn FnMut(&crate::correlate::TrailEntry),
    ) -> Result<(), crate::replay::decide::BoxError> {
        let trail = match &self.open {
            Some((open_dir, db)) if same_dir(open_dir, dir) => Trail::with_db(db.clone()),
            _ => Trail::open_existing(dir),
        }?;
        let query = Query {
            subject: filters.subject.clone(),
            jti: filters.jti.clone(),
            ..Query::default()
        };
        for record in trail.query(&query)? {
            add(&record?.entry);
        }
        Ok(())
    }
}
