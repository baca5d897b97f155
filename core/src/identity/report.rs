//! What `tokenwatch decode` shows: an [`Identity`] at one instant, with
//! warnings, as a table for people or a serializable [`Report`] for
//! machines.
//!
//! Warnings:
//! - `legacy-token`: a Secret-based token, which never expires and is
//!   bound to no pod;
//! - `stale`: past `warnafter`; `expired` and `not-yet-valid`;
//! - `audience`: with expected audiences given, none of the token's is
//!   among them (the API server would refuse it); without, a bound token
//!   with no audience, or whose audiences do not look like an API server's
//!   (neither the issuer nor a `kubernetes.default.svc` URL): a token meant
//!   for another service (a heuristic, said as such);
//! - `subject`: `sub` differs from the ServiceAccount username (the API
//!   server refuses such a legacy token);
//! - `not-service-account`: a JWT that is not a ServiceAccount token;
//! - `algorithm`: an algorithm the API server never accepts.

use std::time::{Duration, UNIX_EPOCH};

use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use serde::Serialize;

use super::claims::TokenKind;
use super::validity::{Validity, ValidityState};
use super::verify::{ACCEPTED_ALGORITHMS, SignatureCheck};
use super::{Header, Identity, UserInfo};

/// What a warning is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WarningKind {
    /// A legacy, Secret-based token.
    LegacyToken,
    /// Past `warnafter`.
    Stale,
    /// Past `exp` (with leeway).
    Expired,
    /// Before `nbf`/`iat` (with leeway).
    NotYetValid,
    /// An audience problem.
    Audience,
    /// `sub` does not match the ServiceAccount.
    Subject,
    /// Not a ServiceAccount token.
    NotServiceAccount,
    /// An algorithm the API server never accepts.
    Algorithm,
}

/// One warning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// What it is about.
    pub kind: WarningKind,
    /// In plain words.
    pub message: String,
}

/// A decoded token at one instant, as `tokenwatch decode` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// legacy, bound or other.
    pub kind: TokenKind,
    /// The JOSE header.
    pub header: Header,
    /// The claims, as decoded.
    pub claims: serde_json::Value,
    /// The Kubernetes user, for ServiceAccount tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<UserInfo>,
    /// The time checks.
    pub validity: Validity,
    /// The signature result.
    pub signature: SignatureCheck,
    /// `sha256:<hex>` of the token.
    pub fingerprint: String,
    /// The JWT ID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// Warnings, most important first.
    pub warnings: Vec<Warning>,
}

fn looks_like_api_server_audience(aud: &str, issuer: Option<&str>) -> bool {
    issuer.is_some_and(|iss| iss.trim_end_matches('/') == aud.trim_end_matches('/'))
        || aud.contains("kubernetes.default.svc")
}

impl Report {
    /// Builds the report of `identity` at `now` (Unix seconds).
    /// `expected_audiences` are the API server's `--api-audiences`, when
    /// known.
    #[must_use]
    pub fn new(identity: &Identity, now: i64, expected_audiences: &[String]) -> Self {
        let validity = identity.validity_at(now);
        let mut warnings = Vec::new();
        let mut warn = |kind, message: String| warnings.push(Warning { kind, message });
        let summary = &identity.summary;
        match identity.kind {
            TokenKind::Legacy => warn(
                WarningKind::LegacyToken,
                "legacy Secret-based token: it never expires and is bound to no pod; \
                 anyone who copies it keeps access until the Secret is deleted"
                    .to_owned(),
            ),
            TokenKind::Other => warn(
                WarningKind::NotServiceAccount,
                "not a Kubernetes ServiceAccount token (no kubernetes.io claims)".to_owned(),
            ),
            TokenKind::Bound => {}
        }
        match validity.state {
            ValidityState::Stale => warn(
                WarningKind::Stale,
                format!(
                    "stale: past warnafter; the kubelet should have replaced it, so a process is \
                     holding on to an old token ({})",
                    validity.description
                ),
            ),
            ValidityState::Expired => warn(WarningKind::Expired, validity.description.clone()),
            ValidityState::NotYetValid => {
                warn(WarningKind::NotYetValid, validity.description.clone());
            }
            ValidityState::Valid | ValidityState::NeverExpires => {}
        }
        if identity.kind != TokenKind::Legacy {
            let auds = &summary.audiences;
            if !expected_audiences.is_empty() {
                if !auds.iter().any(|a| expected_audiences.contains(a)) {
                    warn(
                        WarningKind::Audience,
                        format!(
                            "audiences [{}] include none of [{}]: the API server would refuse it",
                            auds.join(", "),
                            expected_audiences.join(", ")
                        ),
                    );
                }
            } else if identity.kind == TokenKind::Bound {
                if auds.is_empty() {
                    warn(
                        WarningKind::Audience,
                        "bound token without an audience".to_owned(),
                    );
                } else if !auds
                    .iter()
                    .any(|a| looks_like_api_server_audience(a, summary.issuer.as_deref()))
                {
                    warn(
                        WarningKind::Audience,
                        format!(
                            "audiences [{}] do not look like an API server's (the issuer or \
                             https://kubernetes.default.svc...): the token is likely meant for \
                             another service; the API server accepts it only if one is in its \
                             --api-audiences",
                            auds.join(", ")
                        ),
                    );
                }
            }
        }
        if let (Some(user), Some(sub)) = (&identity.user, summary.subject.as_deref())
            && user.username != sub
        {
            warn(
                WarningKind::Subject,
                format!(
                    "sub {sub:?} is not the ServiceAccount's username {:?}",
                    user.username
                ),
            );
        }
        if !ACCEPTED_ALGORITHMS.contains(&identity.header.alg.as_str()) {
            warn(
                WarningKind::Algorithm,
                format!(
                    "alg {}: the API server never accepts ServiceAccount tokens signed with it",
                    identity.header.alg
                ),
            );
        }
        Self {
            kind: identity.kind,
            header: identity.header.clone(),
            claims: identity.claims.clone(),
            user: identity.user.clone(),
            validity,
            signature: identity.signature.clone(),
            fingerprint: identity.fingerprint.clone(),
            jti: identity.summary.jti.clone(),
            warnings,
        }
    }

    /// The report as a two-column table.
    #[must_use]
    pub fn to_table(&self) -> Table {
        let mut table = Table::new();
        table
            .load_style(UTF8_FULL_CONDENSED)
            .set_content_arrangement(ContentArrangement::Dynamic)
            .set_header(["FIELD", "VALUE"]);
        if table.width().is_none() {
            // Not a terminal: wrap long values at a readable width anyway.
            table.set_width(150);
        }
        let mut row = |field: &str, value: String| {
            table.add_row([field.to_owned(), value]);
        };
        row("kind", self.kind.as_str().to_owned());
        row("algorithm", self.header.alg.clone());
        if let Some(kid) = &self.header.kid {
            row("key id", kid.clone());
        }
        let claim_str = |name: &str| {
            self.claims
                .get(name)
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
        };
        if let Some(iss) = claim_str("iss") {
            row("issuer", iss);
        }
        if let Some(sub) = claim_str("sub") {
            row("subject", sub);
        }
        match self.claims.get("aud") {
            Some(serde_json::Value::String(a)) => row("audiences", a.clone()),
            Some(serde_json::Value::Array(a)) => row(
                "audiences",
                a.iter()
                    .filter_map(serde_json::Value::as_str)
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
            _ => {}
        }
        if let Some(user) = &self.user {
            row("user", user.username.clone());
            if let Some(uid) = &user.uid {
                row("uid", uid.clone());
            }
            row("groups", user.groups.join("\n"));
            for (key, values) in &user.extra {
                row(&format!("extra: {key}"), values.join("\n"));
            }
        }
        for (field, claim) in [
            ("issued at", "iat"),
            ("not before", "nbf"),
            ("expires", "exp"),
        ] {
            if let Some(t) = self.claims.get(claim).and_then(serde_json::Value::as_i64) {
                row(field, format_time(t));
            }
        }
        if let Some(w) = self
            .claims
            .get("kubernetes.io")
            .and_then(|k| k.get("warnafter"))
            .and_then(serde_json::Value::as_i64)
        {
            row("warn after", format_time(w));
        }
        row("validity", self.validity.description.clone());
        row("signature", self.signature.describe());
        row("fingerprint", self.fingerprint.clone());
        if let Some(jti) = &self.jti {
            row("jti", jti.clone());
        }
        if !self.warnings.is_empty() {
            row(
                "warnings",
                self.warnings
                    .iter()
                    .map(|w| format!("- {}", w.message))
                    .collect::<Vec<_>>()
                    .join("\n"),
            );
        }
        row("header", pretty(&self.header));
        row("claims", pretty(&self.claims));
        table
    }
}

fn pretty<T: Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// RFC 3339 (UTC, seconds) for a Unix time; the raw number when out of range.
#[must_use]
pub fn format_time(secs: i64) -> String {
    u64::try_from(secs)
        .ok()
        .and_then(|s| UNIX_EPOCH.checked_add(Duration::from_secs(s)))
        .map_or_else(
            || secs.to_string(),
            |t| humantime::format_rfc3339_seconds(t).to_string(),
        )
}
