//! Time checks, as the API server makes them, with its one-minute leeway
//! (go-jose's `DefaultLeeway`):
//!
//! - **expired** when `now - 60 s > exp`;
//! - **not yet valid** when `now + 60 s < nbf`, or `now + 60 s < iat`
//!   (issued in the future);
//! - **stale** when valid but `now > warnafter` (no leeway): the token was
//!   issued with an extended lifetime and should have been refreshed; the
//!   API server still accepts it and records an `authentication.k8s.io/stale-token`
//!   audit annotation;
//! - **never expires** when there is no `exp` (every legacy token).

use serde::Serialize;

use super::claims::{ClaimsSummary, TokenKind};

/// The API server's clock-skew leeway on `exp`, `nbf` and `iat`.
pub const LEEWAY_SECS: i64 = 60;

/// The outcome of the time checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ValidityState {
    /// Within `nbf`..`exp` (with leeway), not past `warnafter`.
    Valid,
    /// Valid, but past `warnafter`.
    Stale,
    /// Before `nbf` or `iat` (beyond the leeway).
    NotYetValid,
    /// After `exp` (beyond the leeway).
    Expired,
    /// No `exp`.
    NeverExpires,
}

/// The time checks at one instant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Validity {
    /// The outcome.
    pub state: ValidityState,
    /// The instant checked (Unix seconds).
    pub checked_at: i64,
    /// Seconds until `exp` (negative once past it), when there is an `exp`.
    pub expires_in: Option<i64>,
    /// The outcome in plain words, e.g. "expires in 47m", "expired 3h ago".
    pub description: String,
}

impl Validity {
    /// Checks `summary` at `now` (Unix seconds).
    #[must_use]
    pub fn check(kind: TokenKind, summary: &ClaimsSummary, now: i64) -> Self {
        let expires_in = summary.expires_at.map(|exp| exp.saturating_sub(now));
        let starts = [summary.not_before, summary.issued_at]
            .into_iter()
            .flatten()
            .filter(|&t| now.saturating_add(LEEWAY_SECS) < t)
            .max();
        let (state, description) = if let Some(start) = starts {
            (
                ValidityState::NotYetValid,
                format!("not valid for another {}", describe_duration(start - now)),
            )
        } else if let Some(exp) = summary.expires_at {
            if now.saturating_sub(LEEWAY_SECS) > exp {
                (
                    ValidityState::Expired,
                    format!("expired {} ago", describe_duration(now - exp)),
                )
            } else {
                let left = if exp >= now {
                    format!("expires in {}", describe_duration(exp - now))
                } else {
                    format!(
                        "expired {} ago, within the 1m leeway",
                        describe_duration(now - exp)
                    )
                };
                match summary.warn_after {
                    Some(warn) if now > warn => (
                        ValidityState::Stale,
                        format!("stale since {} ago ({left})", describe_duration(now - warn)),
                    ),
                    _ => (ValidityState::Valid, left),
                }
            }
        } else {
            let words = if kind == TokenKind::Legacy {
                "never expires (legacy token)"
            } else {
                "never expires (no exp claim)"
            };
            (ValidityState::NeverExpires, words.to_owned())
        };
        Self {
            state,
            checked_at: now,
            expires_in,
            description,
        }
    }

    /// Whether the API server would accept the token on time grounds.
    #[must_use]
    pub fn is_accepted(&self) -> bool {
        matches!(
            self.state,
            ValidityState::Valid | ValidityState::Stale | ValidityState::NeverExpires
        )
    }
}

/// A duration in the largest whole unit that fits: `42s`, `47m`, `3h`,
/// `2h 5m` under ten hours, `12d`.
#[must_use]
pub fn describe_duration(secs: i64) -> String {
    let s = secs.unsigned_abs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..36_000 if (s % 3600) / 60 != 0 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        3600..172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound(iat: i64, exp: i64, warn: Option<i64>) -> ClaimsSummary {
        ClaimsSummary {
            issued_at: Some(iat),
            not_before: Some(iat),
            expires_at: Some(exp),
            warn_after: warn,
            ..ClaimsSummary::default()
        }
    }

    #[test]
    fn leeway_is_one_minute_on_both_ends() {
        let s = bound(1000, 2000, None);
        let at = |now| Validity::check(TokenKind::Bound, &s, now).state;
        assert_eq!(at(940), ValidityState::Valid, "60 s early is within leeway");
        assert_eq!(at(939), ValidityState::NotYetValid);
        assert_eq!(at(2060), ValidityState::Valid, "60 s late is within leeway");
        assert_eq!(at(2061), ValidityState::Expired);
    }

    #[test]
    fn warnafter_makes_it_stale_without_leeway() {
        let s = bound(0, 31_536_000, Some(3607));
        assert_eq!(
            Validity::check(TokenKind::Bound, &s, 3607).state,
            ValidityState::Valid
        );
        let v = Validity::check(TokenKind::Bound, &s, 3608 + 7200);
        assert_eq!(v.state, ValidityState::Stale);
        assert!(
            v.description.starts_with("stale since 2h ago"),
            "{}",
            v.description
        );
        assert!(v.is_accepted());
    }

    #[test]
    fn plain_words() {
        let s = bound(0, 10_000, None);
        assert_eq!(
            Validity::check(TokenKind::Bound, &s, 10_000 - 47 * 60).description,
            "expires in 47m"
        );
        assert_eq!(
            Validity::check(TokenKind::Bound, &s, 10_000 + 3 * 3600).description,
            "expired 3h ago"
        );
        let legacy = ClaimsSummary::default();
        let v = Validity::check(TokenKind::Legacy, &legacy, 5);
        assert_eq!(v.state, ValidityState::NeverExpires);
        assert!(v.description.starts_with("never expires"));
        assert_eq!(describe_duration(59), "59s");
        assert_eq!(describe_duration(3600 + 5 * 60), "1h 5m");
        assert_eq!(describe_duration(30 * 3600), "30h");
        assert_eq!(describe_duration(300 * 86_400), "300d");
    }
}
