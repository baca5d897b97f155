//! Helpers shared by the test suites of every tokenwatch crate (never a
//! dependency of shipped code).
//!
//! - [`tokens`]: real keys made in the test, Kubernetes' own test keys,
//!   and ServiceAccount tokens minted with them (bound and legacy);
//! - [`incident`]: a generated incident (trail lines and audit events of a
//!   stolen token) for the replay tests;
//! - [`fixtures`]: the path of the repository's fixtures (`tests/fixtures`).

pub mod incident;
pub mod tokens;

/// The repository's fixtures.
pub mod fixtures {
    use std::path::{Path, PathBuf};

    /// `tests/fixtures/<rel>`, the data copied into the repository with
    /// its source and licence (see its README).
    #[must_use]
    pub fn path(rel: &str) -> PathBuf {
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures")).join(rel)
    }
}
