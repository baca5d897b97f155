//! Correlation: token reads + API-server connects + identity + RBAC ->
//! trail entries and findings. `model` holds what is recorded.

pub mod model;

pub use model::{
    Connection, ENTRY_SCHEMA_VERSION, EntryKind, Finding, FindingKind, PodRef, RbacSummary, Reader,
    RiskItem, Severity, TokenFileRef, TokenInfo, TrailEntry,
};
