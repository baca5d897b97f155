//! Re-deciding an event against the RBAC snapshot in force at its time,
//! and comparing with what the live API server recorded.
//!
//! - [`Policy`] picks the snapshot: the files given (`--rbac`), the stored
//!   snapshot as of `--at`, or, per event, the newest stored snapshot
//!   imported at or before the event (events older than every snapshot use
//!   the oldest, and are counted).
//! - [`classify`] compares: the same answer is [`Outcome::Agree`]; a
//!   different one is [`Outcome::Drift`] with both reasons, unless the user
//!   is outside RBAC's reach ([`Outcome::OutsideRbac`]: `system:masters`,
//!   the Node authorizer's `system:node:*` users, or an allow whose reason
//!   is another authorizer's, e.g. a webhook's).

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use super::event::Recorded;
use crate::rbac::import::{ImportError, import_paths};
use crate::rbac::{Authorizer, Snapshot, UserInfo};

/// An error of a store the core does not know (the host's sled store).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Stored RBAC snapshots, loaded one at a time by import time (the host's
/// data directory implements it: `tokenwatch_host::snapshot_store`).
pub trait SnapshotHistory {
    /// The snapshot imported at `nanos` (one of the times the policy was
    /// made with): its label and the snapshot.
    ///
    /// # Errors
    /// The store's, boxed.
    fn load(&mut self, nanos: i64) -> Result<(String, Snapshot), BoxError>;
}

/// The group the API server lets through before any authorizer.
pub const GROUP_MASTERS: &str = "system:masters";
/// User name prefix of kubelets (decided by the Node authorizer first).
pub const NODE_USER_PREFIX: &str = "system:node:";

/// Which way the snapshot and the live cluster disagreed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DriftDirection {
    /// The cluster allowed what the snapshot denies.
    AllowedLiveDeniedSnapshot,
    /// The cluster denied what the snapshot allows.
    DeniedLiveAllowedSnapshot,
}

impl DriftDirection {
    /// The name the JSON report uses (serde's kebab-case).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AllowedLiveDeniedSnapshot => "allowed-live-denied-snapshot",
            Self::DeniedLiveAllowedSnapshot => "denied-live-allowed-snapshot",
        }
    }
}

/// The result of comparing one event's decisions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Outcome {
    /// Snapshot and cluster gave the same answer.
    Agree,
    /// They differ.
    Drift {
        /// Which way.
        direction: DriftDirection,
    },
    /// The user is not decided by RBAC alone.
    OutsideRbac {
        /// `system:masters`, `node-authorizer` or `other-authorizer`.
        label: &'static str,
    },
    /// The event records no decision to compare with.
    Unrecorded,
    /// The event's attributes could not be determined.
    Undetermined,
    /// No RBAC snapshot was given.
    NotEvaluated,
}

impl Outcome {
    /// A short name for tables.
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Agree => "agree",
            Self::Drift { .. } => "drift",
            Self::OutsideRbac { label } => label,
            Self::Unrecorded => "unrecorded",
            Self::Undetermined => "undetermined",
            Self::NotEvaluated => "not-evaluated",
        }
    }
}

/// Compares the recorded decision with the snapshot's: the outcome
/// [`classify`] gives, without its explanation (a replay writes the
/// explanation only for the events it lists).
#[must_use]
pub fn outcome(
    user: &UserInfo,
    recorded: Option<&Recorded<'_>>,
    replayed_allowed: bool,
) -> Outcome {
    if user.groups.iter().any(|g| g == GROUP_MASTERS) {
        return Outcome::OutsideRbac {
            label: "system:masters",
        };
    }
    let Some(rec) = recorded else {
        return Outcome::Unrecorded;
    };
    if rec.allowed == replayed_allowed {
        return Outcome::Agree;
    }
    if !rec.allowed {
        return Outcome::Drift {
            direction: DriftDirection::DeniedLiveAllowedSnapshot,
        };
    }
    if user.name.starts_with(NODE_USER_PREFIX) {
        Outcome::OutsideRbac {
            label: "node-authorizer",
        }
    } else if !rec.reason.is_empty() && !rec.reason.starts_with("RBAC:") {
        Outcome::OutsideRbac {
            label: "other-authorizer",
        }
    } else {
        Outcome::Drift {
            direction: DriftDirection::AllowedLiveDeniedSnapshot,
        }
    }
}

/// Compares the recorded decision with the snapshot's; returns the
/// outcome ([`outcome`]) and, unless they agree, an explanation naming
/// both reasons.
#[must_use]
pub fn classify(
    user: &UserInfo,
    recorded: Option<&Recorded<'_>>,
    replayed_allowed: bool,
    replayed_reason: &str,
    snapshot: &str,
) -> (Outcome, String) {
    let outcome = outcome(user, recorded, replayed_allowed);
    let snap_reason = if replayed_reason.is_empty() {
        "no RBAC rule allows it"
    } else {
        replayed_reason
    };
    let live_reason = match recorded {
        Some(rec) if !rec.reason.is_empty() => &*rec.reason,
        _ => "no reason recorded",
    };
    let why = match outcome {
        Outcome::OutsideRbac {
            label: "system:masters",
        } => "members of system:masters are allowed before any authorizer runs; RBAC is not consulted"
            .to_owned(),
        Outcome::Unrecorded => format!(
            "no recorded decision; snapshot {snapshot} would {}: {snap_reason}",
            if replayed_allowed { "allow" } else { "deny" }
        ),
        Outcome::OutsideRbac {
            label: "node-authorizer",
        } => format!(
            "the cluster allowed it ({live_reason}); kubelets are authorized by the Node authorizer before RBAC, which alone would deny: {snap_reason}"
        ),
        Outcome::OutsideRbac { .. } => format!(
            "another authorizer allowed it ({live_reason}); RBAC alone (snapshot {snapshot}) would deny: {snap_reason}"
        ),
        Outcome::Drift {
            direction: DriftDirection::AllowedLiveDeniedSnapshot,
        } => format!(
            "the cluster allowed it ({live_reason}) but snapshot {snapshot} denies: {snap_reason}; the cluster held a grant the snapshot lacks, or another authorizer allowed it"
        ),
        Outcome::Drift {
            direction: DriftDirection::DeniedLiveAllowedSnapshot,
        } => format!(
            "the cluster denied it ({live_reason}) but snapshot {snapshot} allows: {snap_reason}; the snapshot grants what the cluster did not have at the time"
        ),
        Outcome::Agree | Outcome::Undetermined | Outcome::NotEvaluated => String::new(),
    };
    (outcome, why)
}

/// One snapshot in use.
#[derive(Debug, Clone)]
pub struct PolicySnapshot {
    /// What it is: the paths, or `snapshot <time>`.
    pub label: String,
    /// Its authorizer.
    pub authorizer: Authorizer,
}

/// Where decisions come from.
pub enum Policy {
    /// No RBAC input: decisions are not evaluated.
    None,
    /// One snapshot for every event.
    Fixed(PolicySnapshot),
    /// The stored snapshots, chosen per event by time.
    Stored {
        /// Where they are loaded from.
        history: Box<dyn SnapshotHistory>,
        /// Import times (ns), oldest first.
        times: Vec<i64>,
        /// Loaded on first use.
        loaded: Vec<Option<PolicySnapshot>>,
        /// Events decided against the oldest snapshot because they predate all.
        before_first: u64,
    },
}

impl Policy {
    /// From `--rbac` files.
    ///
    /// # Errors
    /// Import failures.
    pub fn from_files(paths: &[PathBuf], default_namespace: &str) -> Result<Self, ImportError> {
        let snapshot = Snapshot::build(import_paths(paths, default_namespace)?.objects);
        let label = match paths {
            [one] => one.display().to_string(),
            [first, rest @ ..] => format!("{} and {} more files", first.display(), rest.len()),
            [] => "no files".to_owned(),
        };
        Ok(Self::fixed(snapshot, label))
    }

    /// One snapshot.
    #[must_use]
    pub fn fixed(snapshot: Snapshot, label: String) -> Self {
        Self::Fixed(PolicySnapshot {
            label,
            authorizer: Authorizer::new(Arc::new(snapshot)),
        })
    }

    /// Every snapshot of `history`, chosen per event by time; `times` are
    /// their import times (ns), which need not be sorted. `None` when there
    /// are none.
    #[must_use]
    pub fn history(history: Box<dyn SnapshotHistory>, mut times: Vec<i64>) -> Option<Self> {
        if times.is_empty() {
            return None;
        }
        times.sort_unstable();
        let loaded = (0..times.len()).map(|_| None).collect();
        Some(Self::Stored {
            history,
            times,
            loaded,
            before_first: 0,
        })
    }

    /// The snapshot for an event at `nanos` (unknown time: the newest), and
    /// its index among the snapshots used.
    ///
    /// # Errors
    /// Store failures while loading a snapshot the first time.
    pub fn select(
        &mut self,
        nanos: Option<i64>,
    ) -> Result<Option<(usize, &PolicySnapshot)>, BoxError> {
        match self {
            Self::None => Ok(None),
            Self::Fixed(s) => Ok(Some((0, s))),
            Self::Stored {
                history,
                times,
                loaded,
                before_first,
            } => {
                let idx = match nanos {
                    None => times.len() - 1,
                    Some(t) => {
                        let after = times.partition_point(|&s| s <= t);
                        if after == 0 {
                            *before_first += 1;
                            0
                        } else {
                            after - 1
                        }
                    }
                };
                if loaded[idx].is_none() {
                    let (label, snapshot) = history.load(times[idx])?;
                    loaded[idx] = Some(PolicySnapshot {
                        label,
                        authorizer: Authorizer::new(Arc::new(snapshot)),
                    });
                }
                Ok(loaded[idx].as_ref().map(|s| (idx, s)))
            }
        }
    }

    /// A snapshot already selected once, by index.
    #[must_use]
    pub fn get(&self, idx: usize) -> Option<&PolicySnapshot> {
        match self {
            Self::None => None,
            Self::Fixed(s) => Some(s),
            Self::Stored { loaded, .. } => loaded.get(idx).and_then(Option::as_ref),
        }
    }

    /// Labels of the snapshots used so far.
    #[must_use]
    pub fn used_labels(&self) -> Vec<String> {
        match self {
            Self::None => Vec::new(),
            Self::Fixed(s) => vec![s.label.clone()],
            Self::Stored { loaded, .. } => {
                loaded.iter().flatten().map(|s| s.label.clone()).collect()
            }
        }
    }

    /// Events older than every stored snapshot.
    #[must_use]
    pub fn events_before_first(&self) -> u64 {
        match self {
            Self::Stored { before_first, .. } => *before_first,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(allowed: bool, reason: &str) -> Recorded<'_> {
        Recorded {
            allowed,
            reason: reason.into(),
            from: "annotation",
        }
    }

    #[test]
    fn classification() {
        let sa = UserInfo::service_account("shop", "web");
        assert_eq!(
            classify(
                &sa,
                Some(&rec(true, "RBAC: allowed by x")),
                true,
                "RBAC: allowed by x",
                "s"
            )
            .0,
            Outcome::Agree
        );
        let (o, why) = classify(
            &sa,
            Some(&rec(true, "RBAC: allowed by RoleBinding \"a/shop\"")),
            false,
            "",
            "s",
        );
        assert_eq!(
            o,
            Outcome::Drift {
                direction: DriftDirection::AllowedLiveDeniedSnapshot
            }
        );
        assert!(
            why.contains("RoleBinding \"a/shop\"") && why.contains("no RBAC rule allows it"),
            "{why}"
        );
        let (o, why) = classify(
            &sa,
            Some(&rec(false, "")),
            true,
            "RBAC: allowed by ClusterRoleBinding \"c\"",
            "s",
        );
        assert_eq!(
            o,
            Outcome::Drift {
                direction: DriftDirection::DeniedLiveAllowedSnapshot
            }
        );
        assert!(why.contains("ClusterRoleBinding \"c\""));
        let masters = UserInfo::new("admin", vec![GROUP_MASTERS.to_owned()]);
        assert_eq!(
            classify(&masters, Some(&rec(true, "")), false, "", "s").0,
            Outcome::OutsideRbac {
                label: "system:masters"
            }
        );
        let webhook = classify(
            &sa,
            Some(&rec(true, "EKS Access Policy: allowed")),
            false,
            "",
            "s",
        )
        .0;
        assert_eq!(
            webhook,
            Outcome::OutsideRbac {
                label: "other-authorizer"
            }
        );
        let node = UserInfo::new("system:node:n1", vec!["system:nodes".to_owned()]);
        assert_eq!(
            classify(&node, Some(&rec(true, "")), false, "", "s").0,
            Outcome::OutsideRbac {
                label: "node-authorizer"
            }
        );
        assert_eq!(classify(&sa, None, true, "", "s").0, Outcome::Unrecorded);
    }
}
