//! Claims -> kind and summary.
//!
//! The two ServiceAccount layouts, as kube-apiserver writes them:
//!
//! - **legacy** (Secret-based, the token controller's): `iss:
//!   kubernetes/serviceaccount`, `sub`, and the flat private claims
//!   `kubernetes.io/serviceaccount/{namespace, secret.name,
//!   service-account.name, service-account.uid}`; no `exp`, `aud` or `jti`.
//!   The API server refuses one that lacks any of those five.
//! - **bound** (TokenRequest, projected volumes): `iss`, `sub`, `aud`,
//!   `exp`, `iat`, `nbf`, `jti` and the nested private claim `kubernetes.io:
//!   {namespace, serviceaccount{name,uid}, pod{name,uid} | secret{name,uid},
//!   node{name,uid}, warnafter}`. The API server looks the ServiceAccount up
//!   by namespace, name and UID, so those three are required.
//!
//! Anything else that is a well-formed JWT is [`TokenKind::Other`] (an OIDC
//! ID token, a cloud workload token): reported, with no Kubernetes user.

use serde::{Deserialize, Deserializer, Serialize};

use super::Error;

/// The issuer of legacy tokens.
pub const LEGACY_ISSUER: &str = "kubernetes/serviceaccount";

/// The kind of token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    /// Secret-based, never expires.
    Legacy,
    /// TokenRequest / projected: time-bound, audience-bound, object-bound.
    Bound,
    /// A JWT that is not a ServiceAccount token.
    Other,
}

impl TokenKind {
    /// Lower-case name, as printed.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Legacy => "legacy",
            Self::Bound => "bound",
            Self::Other => "other",
        }
    }
}

/// A reference to a Kubernetes object in the claims (`pod`, `node`,
/// `secret`, `serviceaccount`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    /// The object's name.
    pub name: String,
    /// The object's UID, when the claims carry it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// The claims that matter, typed. Times are Unix seconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimsSummary {
    /// `iss`.
    pub issuer: Option<String>,
    /// `sub`.
    pub subject: Option<String>,
    /// `aud` (a single string becomes a one-element list).
    pub audiences: Vec<String>,
    /// `iat`.
    pub issued_at: Option<i64>,
    /// `nbf`.
    pub not_before: Option<i64>,
    /// `exp`.
    pub expires_at: Option<i64>,
    /// `jti`.
    pub jti: Option<String>,
    /// The ServiceAccount's namespace.
    pub namespace: Option<String>,
    /// The ServiceAccount.
    pub service_account: Option<ObjectRef>,
    /// The pod the token is bound to.
    pub pod: Option<ObjectRef>,
    /// The node the token is bound to (or the pod's node).
    pub node: Option<ObjectRef>,
    /// The Secret: the token's own for legacy tokens, the bound object for
    /// Secret-bound tokens.
    pub secret: Option<ObjectRef>,
    /// `kubernetes.io.warnafter`: after it, the API server calls the token
    /// stale (it was issued with an extended lifetime).
    pub warn_after: Option<i64>,
}

#[derive(Deserialize)]
struct RawClaims {
    iss: Option<String>,
    sub: Option<String>,
    #[serde(default, deserialize_with = "audiences")]
    aud: Vec<String>,
    #[serde(default, deserialize_with = "numeric_date")]
    exp: Option<i64>,
    #[serde(default, deserialize_with = "numeric_date")]
    iat: Option<i64>,
    #[serde(default, deserialize_with = "numeric_date")]
    nbf: Option<i64>,
    jti: Option<String>,
    #[serde(rename = "kubernetes.io")]
    kubernetes: Option<RawKubernetes>,
    #[serde(rename = "kubernetes.io/serviceaccount/namespace")]
    legacy_namespace: Option<String>,
    #[serde(rename = "kubernetes.io/serviceaccount/secret.name")]
    legacy_secret_name: Option<String>,
    #[serde(rename = "kubernetes.io/serviceaccount/service-account.name")]
    legacy_sa_name: Option<String>,
    #[serde(rename = "kubernetes.io/serviceaccount/service-account.uid")]
    legacy_sa_uid: Option<String>,
}

#[derive(Deserialize)]
struct RawKubernetes {
    namespace: Option<String>,
    serviceaccount: Option<RawRef>,
    pod: Option<RawRef>,
    secret: Option<RawRef>,
    node: Option<RawRef>,
    #[serde(default, deserialize_with = "numeric_date")]
    warnafter: Option<i64>,
}

#[derive(Deserialize)]
struct RawRef {
    name: Option<String>,
    uid: Option<String>,
}

impl RawRef {
    fn into_ref(self) -> Option<ObjectRef> {
        let name = non_empty(self.name)?;
        Some(ObjectRef {
            name,
            uid: non_empty(self.uid),
        })
    }
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

/// `aud` is a string or an array of strings (RFC 7519 4.1.3).
fn audiences<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Aud {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<Aud>::deserialize(d)? {
        None => Vec::new(),
        Some(Aud::One(s)) => vec![s],
        Some(Aud::Many(v)) => v,
    })
}

/// A NumericDate: JSON number of seconds, possibly fractional (go-jose
/// accepts floats and truncates them).
fn numeric_date<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    if let Some(i) = n.as_i64() {
        return Ok(Some(i));
    }
    match n.as_f64() {
        #[expect(
            clippy::cast_possible_truncation,
            reason = "checked to be in i64 range just above"
        )]
        Some(f) if f.is_finite() && f.abs() < 9.0e18 => Ok(Some(f.trunc() as i64)),
        _ => Err(serde::de::Error::custom("a date claim is out of range")),
    }
}

/// Classifies decoded claims and extracts the summary.
pub(crate) fn classify(claims: &serde_json::Value) -> Result<(TokenKind, ClaimsSummary), Error> {
    let raw = RawClaims::deserialize(claims).map_err(|source| Error::DecodeClaims { source })?;
    let mut summary = ClaimsSummary {
        issuer: raw.iss,
        subject: raw.sub,
        audiences: raw.aud,
        issued_at: raw.iat,
        not_before: raw.nbf,
        expires_at: raw.exp,
        jti: non_empty(raw.jti),
        ..ClaimsSummary::default()
    };
    if let Some(k) = raw.kubernetes {
        let namespace = non_empty(k.namespace).ok_or(Error::FindClaim {
            claim: "kubernetes.io.namespace",
        })?;
        let sa = k.serviceaccount.ok_or(Error::FindClaim {
            claim: "kubernetes.io.serviceaccount",
        })?;
        let sa_name = non_empty(sa.name).ok_or(Error::FindClaim {
            claim: "kubernetes.io.serviceaccount.name",
        })?;
        let sa_uid = non_empty(sa.uid).ok_or(Error::FindClaim {
            claim: "kubernetes.io.serviceaccount.uid",
        })?;
        summary.namespace = Some(namespace);
        summary.service_account = Some(ObjectRef {
            name: sa_name,
            uid: Some(sa_uid),
        });
        summary.pod = k.pod.and_then(RawRef::into_ref);
        summary.secret = k.secret.and_then(RawRef::into_ref);
        summary.node = k.node.and_then(RawRef::into_ref);
        summary.warn_after = k.warnafter.filter(|&w| w != 0);
        return Ok((TokenKind::Bound, summary));
    }
    let has_legacy_claims = raw.legacy_namespace.is_some()
        || raw.legacy_sa_name.is_some()
        || raw.legacy_sa_uid.is_some()
        || raw.legacy_secret_name.is_some();
    if has_legacy_claims || summary.issuer.as_deref() == Some(LEGACY_ISSUER) {
        if summary.subject.as_deref().is_none_or(str::is_empty) {
            return Err(Error::FindClaim { claim: "sub" });
        }
        let namespace = non_empty(raw.legacy_namespace).ok_or(Error::FindClaim {
            claim: "kubernetes.io/serviceaccount/namespace",
        })?;
        let secret = non_empty(raw.legacy_secret_name).ok_or(Error::FindClaim {
            claim: "kubernetes.io/serviceaccount/secret.name",
        })?;
        let name = non_empty(raw.legacy_sa_name).ok_or(Error::FindClaim {
            claim: "kubernetes.io/serviceaccount/service-account.name",
        })?;
        let uid = non_empty(raw.legacy_sa_uid).ok_or(Error::FindClaim {
            claim: "kubernetes.io/serviceaccount/service-account.uid",
        })?;
        summary.namespace = Some(namespace);
        summary.service_account = Some(ObjectRef {
            name,
            uid: Some(uid),
        });
        summary.secret = Some(ObjectRef {
            name: secret,
            uid: None,
        });
        return Ok((TokenKind::Legacy, summary));
    }
    Ok((TokenKind::Other, summary))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn bound_claims_are_summarised() {
        let claims = json!({
            "aud": "https://kubernetes.default.svc", "exp": 1_700_003_600, "iat": 1_700_000_000.7,
            "nbf": 1_700_000_000, "iss": "https://k8s", "jti": "j-1", "sub": "system:serviceaccount:ns:sa",
            "kubernetes.io": {"namespace": "ns", "serviceaccount": {"name": "sa", "uid": "u-sa"},
                "pod": {"name": "p", "uid": "u-p"}, "node": {"name": "n", "uid": "u-n"}, "warnafter": 1_700_000_600}
        });
        let (kind, s) = classify(&claims).expect("bound");
        assert_eq!(kind, TokenKind::Bound);
        assert_eq!(s.audiences, ["https://kubernetes.default.svc"]);
        assert_eq!(s.issued_at, Some(1_700_000_000));
        assert_eq!(s.pod.as_ref().map(|p| p.name.as_str()), Some("p"));
        assert_eq!(s.node.and_then(|n| n.uid).as_deref(), Some("u-n"));
        assert_eq!(s.warn_after, Some(1_700_000_600));
        assert_eq!(s.jti.as_deref(), Some("j-1"));
    }

    #[test]
    fn legacy_claims_need_all_five() {
        let full = json!({
            "iss": LEGACY_ISSUER, "sub": "system:serviceaccount:test:my-service-account",
            "kubernetes.io/serviceaccount/namespace": "test",
            "kubernetes.io/serviceaccount/secret.name": "my-secret",
            "kubernetes.io/serviceaccount/service-account.name": "my-service-account",
            "kubernetes.io/serviceaccount/service-account.uid": "12345"
        });
        let (kind, s) = classify(&full).expect("legacy");
        assert_eq!(kind, TokenKind::Legacy);
        assert_eq!(s.secret.map(|r| r.name).as_deref(), Some("my-secret"));
        for missing in [
            "kubernetes.io/serviceaccount/namespace",
            "kubernetes.io/serviceaccount/secret.name",
            "kubernetes.io/serviceaccount/service-account.name",
            "kubernetes.io/serviceaccount/service-account.uid",
            "sub",
        ] {
            let mut claims = full.clone();
            claims.as_object_mut().map(|o| o.remove(missing));
            match classify(&claims) {
                Err(Error::FindClaim { claim }) => assert_eq!(claim, missing),
                other => panic!("{missing}: {other:?}"),
            }
        }
    }

    #[test]
    fn bound_without_serviceaccount_uid_is_an_error() {
        let claims =
            json!({"kubernetes.io": {"namespace": "ns", "serviceaccount": {"name": "sa"}}});
        assert!(matches!(
            classify(&claims),
            Err(Error::FindClaim {
                claim: "kubernetes.io.serviceaccount.uid"
            })
        ));
    }

    #[test]
    fn other_jwts_are_other() {
        let claims =
            json!({"iss": "https://accounts.example", "sub": "alice", "aud": ["app"], "exp": 1});
        assert_eq!(classify(&claims).expect("other").0, TokenKind::Other);
    }

    #[test]
    fn wrong_claim_types_are_decode_errors() {
        let claims = json!({"exp": "tomorrow"});
        assert!(matches!(classify(&claims), Err(Error::DecodeClaims { .. })));
    }
}
