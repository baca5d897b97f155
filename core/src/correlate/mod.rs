//! Correlation: token reads + API-server connects + identity + RBAC ->
//! trail entries with findings.
//!
//! - `model`: what is recorded ([`TrailEntry`] and its parts);
//! - `baseline`: the learned readers per workload (`unexpected-reader`);
//! - `engine`: the [`Correlator`], pure logic fed with [`Enriched`] events;
//! - `fold`: repeated accesses folded into one record with an exact count.

pub mod baseline;
pub mod engine;
pub mod fold;
pub mod model;

pub use engine::{CorrelateConfig, Correlator, Enriched, RbacContext};
pub use model::{
    Connection, ENTRY_SCHEMA_VERSION, EntryKind, Finding, FindingKind, PodRef, RbacSummary, Reader,
    Repeated, RiskItem, Severity, TokenFileRef, TokenInfo, TrailEntry,
};
