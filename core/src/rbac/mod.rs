//! RBAC engine: snapshot model, import, aggregation, request-info,
//! authorizer, rule listing, who-can, risk, diff, stored snapshots and
//! least-privilege suggestions from observed calls.
//!
//! Answers "may this user do this request?" exactly as kube-apiserver's RBAC
//! authorizer does, says which binding and role allowed it, lists what a
//! subject may do and who may do a thing, and ranks dangerous permissions.
//!
//! # In-process API
//!
//! ```no_run
//! use std::sync::Arc;
//! use tokenwatch_core::rbac::{Attributes, Authorizer, Snapshot, UserInfo, import, risk};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let report = import::import_paths(&["policy/"], import::DEFAULT_NAMESPACE)?;
//! let snapshot = Arc::new(Snapshot::build(report.objects));
//! let authz = Authorizer::new(Arc::clone(&snapshot));
//! let user = UserInfo::service_account("default", "sa-example");
//! let attrs = Attributes::resource("list", "", "pods", "default", "");
//! let decision = authz.decide(&attrs, &user);
//! println!("{} {}", decision.allowed, decision.reason());
//! for finding in risk::assess(&snapshot, &user) {
//!     println!("{}: {}", finding.check.id(), finding.binding);
//! }
//! # Ok(()) }
//! ```
//!
//! - [`Snapshot`] is immutable and indexed (bindings by subject); build it
//!   once per policy version and share it with `Arc`.
//! - [`Authorizer::decide`] does not allocate; the reason text is formatted
//!   only when asked for ([`Decision::reason`]).
//! - [`UserInfo::service_account`] gives the user and groups a
//!   ServiceAccount token authenticates as.
//!
//! The semantics, reason strings and commands are described in
//! `docs/rbac.md`.

pub mod aggregate;
pub mod authorizer;
pub mod batch;
pub mod diff;
pub mod import;
pub mod model;
pub mod request_info;
pub mod resource_arg;
pub mod risk;
pub mod rules;
pub mod snapshot;
pub mod suggest;
pub mod who_can;

pub use authorizer::{Attributes, Authorizer, Decision, DecisionParts, OwnedAttributes, UserInfo};
pub use model::RbacObjects;
pub use snapshot::Snapshot;
