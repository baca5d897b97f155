//! tokenwatch: a node-level audit and token-usage monitor for Kubernetes.
//!
//! One module per stage of the data's path, in the order the data flows:
//! `sensor` (eBPF) -> `node` (host facts) -> `identity` (JWT) -> `rbac`
//! (authorizer) -> `correlate` -> `trail` -> `replay`; `cli` holds the
//! clap commands, one thin file each.

pub mod agent;
pub mod cli;
pub mod correlate;
pub mod identity;
pub mod kubesync;
pub mod node;
pub mod rbac;
pub mod replay;
pub mod sensor;
pub mod sinks;
pub mod store;
pub mod trail;
