//! tokenwatch-core: the pure logic of tokenwatch, with no kernel, runtime,
//! API client or store in its dependencies (no aya, tokio, kube or sled),
//! so that it builds and is tested with the stable toolchain alone.
//!
//! In the order the data flows: [`event`] (what the sensor saw, as plain
//! data) -> [`identity`] (JWT decode and verify) -> [`rbac`] (snapshots and
//! the authorizer) -> [`correlate`] (findings, trail entries) -> [`trail`]
//! (the record and chain model) -> [`replay`] (trails and audit logs
//! against snapshots). [`error`] formats error chains for everyone.

pub mod bytes;
pub mod correlate;
pub mod error;
pub mod event;
pub mod identity;
pub mod rbac;
pub mod replay;
pub mod time;
pub mod trail;
