//! tokenwatch-host: everything of tokenwatch that touches the host, over
//! the pure logic of `tokenwatch_core`.
//!
//! In the order the data flows: [`sensor`] (eBPF programs, loading,
//! attaching, the ring buffer) -> [`node`] (kubelet volumes, token files,
//! cgroup -> pod) and [`kubesync`] (live RBAC and pods from the API server)
//! -> the core's identity, RBAC and correlation -> [`trail`] (the sled
//! store: append, index, query, verify, retention) and [`sinks`] (JSON
//! lines, OTLP); [`agent`] runs them all. [`store`] is the one place sled
//! is opened; [`snapshot_store`] keeps RBAC snapshots in it.
//!
//! The core's modules are imported at the crate root (privately), so that
//! `crate::rbac` names `tokenwatch_core::rbac` here; nothing in this crate
//! is visible to the core (the compiler enforces it, and the layering test
//! in `monitor/tests/layering.rs` checks the edges).

pub mod agent;
pub mod baseline_store;
pub mod caps;
pub mod kubesync;
pub mod metrics;
pub mod net;
pub mod node;
pub mod sensor;
pub mod sinks;
pub mod snapshot_store;
pub mod store;
pub mod trail;

use tokenwatch_core::{correlate, error, event, identity, rbac, replay, time};
