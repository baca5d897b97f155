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
