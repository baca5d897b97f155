//! The Kubernetes user a ServiceAccount token authenticates as, built the
//! way kube-apiserver builds it, so that joins with its audit log
//! (`user.username`, `user.groups`, `user.extra`) are exact.
//!
//! - username `system:serviceaccount:<namespace>:<name>`, UID the
//!   ServiceAccount's UID;
//! - groups `system:serviceaccounts`, `system:serviceaccounts:<namespace>`,
//!   then `system:authenticated` (added by the API server to every
//!   authenticated user), in that order;
//! - extras, bound tokens only: `authentication.kubernetes.io/pod-name` and
//!   `pod-uid` (both, only when the pod reference has both),
//!   `authentication.kubernetes.io/credential-id` = `JTI=<jti>` (when the
//!   token has a `jti`), `authentication.kubernetes.io/node-name` (when the
//!   claims name a node) and `node-uid` (only alongside node-name). Legacy
//!   tokens carry no extras.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::claims::{ClaimsSummary, TokenKind};

/// Prefix of every ServiceAccount username.
pub const USERNAME_PREFIX: &str = "system:serviceaccount:";
/// The group of all ServiceAccounts.
pub const ALL_SERVICE_ACCOUNTS_GROUP: &str = "system:serviceaccounts";
/// Prefix of the per-namespace ServiceAccount group.
pub const NAMESPACE_GROUP_PREFIX: &str = "system:serviceaccounts:";
/// The group every authenticated user is in.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";
/// Extra key: the bound pod's name.
pub const POD_NAME_KEY: &str = "authentication.kubernetes.io/pod-name";
/// Extra key: the bound pod's UID.
pub const POD_UID_KEY: &str = "authentication.kubernetes.io/pod-uid";
/// Extra key: the node's name.
pub const NODE_NAME_KEY: &str = "authentication.kubernetes.io/node-name";
/// Extra key: the node's UID.
pub const NODE_UID_KEY: &str = "authentication.kubernetes.io/node-uid";
/// Extra key: the credential ID, `JTI=<jti>` for ServiceAccount tokens.
pub const CREDENTIAL_ID_KEY: &str = "authentication.kubernetes.io/credential-id";

/// A Kubernetes user (`user.Info`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    /// The username.
    pub username: String,
    /// The ServiceAccount's UID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// The groups, in the API server's order.
    pub groups: Vec<String>,
    /// The extras (sorted by key).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, Vec<String>>,
}

/// `system:serviceaccount:<namespace>:<name>`.
#[must_use]
pub fn make_username(namespace: &str, name: &str) -> String {
    format!("{USERNAME_PREFIX}{namespace}:{name}")
}

/// `JTI=<jti>`, or nothing for an empty JTI.
#[must_use]
pub fn credential_id_for_jti(jti: &str) -> Option<String> {
    (!jti.is_empty()).then(|| format!("JTI={jti}"))
}

impl UserInfo {
    /// The user for a classified token; `None` for [`TokenKind::Other`].
    #[must_use]
    pub fn from_summary(kind: TokenKind, summary: &ClaimsSummary) -> Option<Self> {
        if kind == TokenKind::Other {
            return None;
        }
        let namespace = summary.namespace.as_deref()?;
        let sa = summary.service_account.as_ref()?;
        let mut extra = BTreeMap::new();
        if kind == TokenKind::Bound {
            if let Some(pod) = &summary.pod
                && let Some(uid) = pod.uid.as_deref().filter(|u| !u.is_empty())
            {
                extra.insert(POD_NAME_KEY.to_owned(), vec![pod.name.clone()]);
                extra.insert(POD_UID_KEY.to_owned(), vec![uid.to_owned()]);
            }
            if let Some(id) = summary.jti.as_deref().and_then(credential_id_for_jti) {
                extra.insert(CREDENTIAL_ID_KEY.to_owned(), vec![id]);
            }
            if let Some(node) = &summary.node {
                extra.insert(NODE_NAME_KEY.to_owned(), vec![node.name.clone()]);
                if let Some(uid) = node.uid.as_deref().filter(|u| !u.is_empty()) {
                    extra.insert(NODE_UID_KEY.to_owned(), vec![uid.to_owned()]);
                }
            }
        }
        Some(Self {
            username: make_username(namespace, &sa.name),
            uid: sa.uid.clone(),
            groups: vec![
                ALL_SERVICE_ACCOUNTS_GROUP.to_owned(),
                format!("{NAMESPACE_GROUP_PREFIX}{namespace}"),
                AUTHENTICATED_GROUP.to_owned(),
            ],
            extra,
        })
    }

    /// The credential ID extra, the key of the join with audit logs.
    #[must_use]
    pub fn credential_id(&self) -> Option<&str> {
        self.extra
            .get(CREDENTIAL_ID_KEY)?
            .first()
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::claims::ObjectRef;

    fn object(name: &str, uid: Option<&str>) -> Option<ObjectRef> {
        Some(ObjectRef {
            name: name.to_owned(),
            uid: uid.map(str::to_owned),
        })
    }

    fn bound() -> ClaimsSummary {
        ClaimsSummary {
            namespace: Some("team-a".into()),
            service_account: object("builder", Some("sa-uid")),
            pod: object("builder-0", Some("pod-uid")),
            node: object("node-1", Some("node-uid")),
            jti: Some("7d2b".into()),
            ..ClaimsSummary::default()
        }
    }

    #[test]
    fn bound_user_has_every_extra() {
        let user = UserInfo::from_summary(TokenKind::Bound, &bound()).expect("user");
        assert_eq!(user.username, "system:serviceaccount:team-a:builder");
        assert_eq!(user.uid.as_deref(), Some("sa-uid"));
        assert_eq!(
            user.groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:team-a",
                "system:authenticated"
            ]
        );
        let keys: Vec<&str> = user.extra.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                CREDENTIAL_ID_KEY,
                NODE_NAME_KEY,
                NODE_UID_KEY,
                POD_NAME_KEY,
                POD_UID_KEY
            ]
        );
        assert_eq!(user.credential_id(), Some("JTI=7d2b"));
    }

    #[test]
    fn partial_references_follow_the_api_server_rules() {
        let mut s = bound();
        s.pod = object("builder-0", None); // pod extras need name and uid
        s.node = object("node-1", None); // node-name alone is fine
        s.jti = None;
        let user = UserInfo::from_summary(TokenKind::Bound, &s).expect("user");
        let keys: Vec<&str> = user.extra.keys().map(String::as_str).collect();
        assert_eq!(keys, [NODE_NAME_KEY]);
    }

    #[test]
    fn legacy_user_has_no_extras_and_other_has_no_user() {
        let user = UserInfo::from_summary(TokenKind::Legacy, &bound()).expect("user");
        assert!(user.extra.is_empty());
        assert!(UserInfo::from_summary(TokenKind::Other, &bound()).is_none());
    }
}
