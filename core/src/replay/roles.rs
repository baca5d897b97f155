//! `replay --suggest-roles`: per ServiceAccount, the least-privilege roles
//! for the calls the cluster allowed it ([`crate::rbac::suggest`]), checked
//! against the snapshot of its last call, side by side with the dangerous
//! permissions its current bindings grant and which of them it never used.

use serde::Serialize;

use super::decide::Policy;
use super::report::Report;
use super::summary::HeldPermission;
use crate::rbac::UserInfo;
use crate::rbac::model::RbacObjects;
use crate::rbac::suggest::{self, SuggestError};

/// One ServiceAccount's suggestion.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleSuggestion {
    /// The ServiceAccount user.
    pub subject: String,
    /// Distinct allowed calls it was made from.
    pub calls: usize,
    /// Distinct allowed calls over the cap (not in the suggestion).
    pub calls_dropped: u64,
    /// The snapshot the check ran against (`-` without one).
    pub snapshot: String,
    /// The roles and bindings.
    pub objects: RbacObjects,
    /// `ok`, or why the check failed.
    pub check: String,
    /// Dangerous permissions the current bindings grant, with use counts.
    pub held: Vec<HeldPermission>,
    /// Held and never used.
    pub hints: Vec<String>,
}

/// Suggestions for every ServiceAccount with allowed calls, by name.
#[must_use]
pub fn suggest_roles(report: &Report, policy: &Policy) -> Vec<RoleSuggestion> {
    let mut out = Vec::new();
    for s in &report.subjects {
        if s.observed.is_empty() {
            continue;
        }
        let Ok(suggestion) = suggest::suggest(&s.user, &s.observed) else {
            continue;
        };
        let snap = s.snapshot.and_then(|i| policy.get(i));
        let current = snap.map_or_else(RbacObjects::default, |p| {
            p.authorizer.snapshot().objects().clone()
        });
        let user = UserInfo::new(s.user.clone(), s.groups.clone());
        let check = match suggest::check(&suggestion.objects, &user, &s.observed, &current) {
            Ok(()) => "ok".to_owned(),
            Err(
                e @ (SuggestError::DenyObservedCall { .. }
                | SuggestError::GrantUnobserved { .. }
                | SuggestError::ParseServiceAccount { .. }),
            ) => e.to_string(),
        };
        out.push(RoleSuggestion {
            subject: s.user.clone(),
            calls: suggestion.calls,
            calls_dropped: s.observed_dropped,
            snapshot: snap.map_or_else(|| "-".to_owned(), |p| p.label.clone()),
            objects: suggestion.objects,
            check,
            held: s.held.clone(),
            hints: s.hints.clone(),
        });
    }
    out.sort_by(|a, b| a.subject.cmp(&b.subject));
    out
}

/// The suggestions as YAML documents, each ServiceAccount's preceded by
/// comments: the check, what it holds now, what it never used.
#[must_use]
pub fn to_yaml(suggestions: &[RoleSuggestion]) -> String {
    let mut out = String::new();
    for s in suggestions {
        out.push_str(&format!(
            "# {}: {} distinct allowed calls{}; checked against {}: {}\n",
            s.subject,
            s.calls,
            if s.calls_dropped > 0 {
                format!(" (+{} over the cap, not covered)", s.calls_dropped)
            } else {
                String::new()
            },
            s.snapshot,
            if s.check == "ok" {
                "every observed call stays allowed with this in place of its own bindings, and it grants nothing else"
            } else {
                &s.check
            }
        ));
        for h in &s.held {
            out.push_str(&format!(
                "#   holds now: {} ({}) {} through {} ({}), used {} times\n",
                h.check, h.severity, h.scope, h.binding, h.role, h.used
            ));
        }
        for hint in &s.hints {
            out.push_str(&format!("#   {hint}\n"));
        }
        match suggest::to_yaml(&s.objects) {
            Ok(y) => out.push_str(&y),
            Err(e) => out.push_str(&format!("# cannot render: {e}\n")),
        }
    }
    out
}
