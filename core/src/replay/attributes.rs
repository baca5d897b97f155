//! Authorization attributes of an audit event, as the API server computed
//! them for the authorizer.
//!
//! - With an `objectRef` that names a resource: the event's `verb` and the
//!   `objectRef` fields (`apiGroup`, `resource`, `subresource`,
//!   `namespace`, `name`), borrowed, no allocation.
//! - Otherwise (non-resource requests, trimmed events): the `requestURI`
//!   parsed by [`crate::rbac::request_info::parse`] exactly as the API
//!   server's RequestInfo does, with the method the verb stands for
//!   (`list`/`watch`/`get` -> GET, `create` -> POST, `update` -> PUT,
//!   `patch` -> PATCH, `delete`/`deletecollection` -> DELETE; a
//!   non-resource verb is the lower-cased method already). The recorded
//!   verb is kept: it is what the authorizer was asked.

use serde::Serialize;

use super::event::{AuditEvent, Text};
use crate::rbac::request_info::{self, RequestInfo, RequestInfoError};
use crate::rbac::{Attributes, OwnedAttributes};

/// Why an event's attributes could not be determined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(rename_all = "kebab-case", tag = "problem")]
pub enum AttributesProblem {
    /// The event has no verb.
    #[error("the event has no verb")]
    MissingVerb,
    /// The event has neither an `objectRef` with a resource nor a `requestURI`.
    #[error("the event has neither objectRef.resource nor requestURI")]
    MissingRequest,
    /// The `requestURI` does not parse the way the API server would need.
    #[error("requestURI: {message}")]
    ParseRequestUri {
        /// The parser's message.
        message: String,
    },
}

impl From<RequestInfoError> for AttributesProblem {
    fn from(e: RequestInfoError) -> Self {
        Self::ParseRequestUri {
            message: e.to_string(),
        }
    }
}

/// Attributes borrowed from the event, or parsed from its URI.
#[derive(Debug, Clone)]
pub enum EventAttributes<'e> {
    /// From `verb` + `objectRef`.
    ObjectRef(Attributes<'e>),
    /// From `requestURI`.
    RequestUri(RequestInfo),
}

impl EventAttributes<'_> {
    /// The attributes.
    #[must_use]
    pub fn as_attributes(&self) -> Attributes<'_> {
        match self {
            Self::ObjectRef(a) => *a,
            Self::RequestUri(info) => Attributes::from_request_info(info),
        }
    }

    /// `objectRef` or `requestURI`.
    #[must_use]
    pub fn source(&self) -> &'static str {
        match self {
            Self::ObjectRef(_) => "objectRef",
            Self::RequestUri(_) => "requestURI",
        }
    }

    /// An owned copy.
    #[must_use]
    pub fn to_owned_attributes(&self) -> OwnedAttributes {
        OwnedAttributes::from(self.as_attributes())
    }
}

fn text<'e>(t: Option<&'e Text<'_>>) -> &'e str {
    t.map_or("", Text::as_str)
}

/// The HTTP method a verb was derived from.
#[must_use]
pub fn method_for_verb(verb: &str) -> String {
    match verb {
        "get" | "list" | "watch" => "GET".to_owned(),
        "create" => "POST".to_owned(),
        "update" => "PUT".to_owned(),
        "patch" => "PATCH".to_owned(),
        "delete" | "deletecollection" => "DELETE".to_owned(),
        other => other.to_ascii_uppercase(),
    }
}

/// The attributes of `event`.
///
/// # Errors
/// [`AttributesProblem`] when the event does not say enough.
pub fn attributes<'e>(event: &'e AuditEvent<'_>) -> Result<EventAttributes<'e>, AttributesProblem> {
    let verb = event.verb();
    if verb.is_empty() {
        return Err(AttributesProblem::MissingVerb);
    }
    if let Some(o) = &event.object_ref {
        let resource = text(o.resource.as_ref());
        if !resource.is_empty() {
            return Ok(EventAttributes::ObjectRef(Attributes {
                verb,
                is_resource_request: true,
                namespace: text(o.namespace.as_ref()),
                api_group: text(o.api_group.as_ref()),
                resource,
                subresource: text(o.subresource.as_ref()),
                name: text(o.name.as_ref()),
                path: "",
            }));
        }
    }
    let uri = event.request_uri();
    if uri.is_empty() {
        return Err(AttributesProblem::MissingRequest);
    }
    let mut info = request_info::parse(&method_for_verb(verb), uri)?;
    verb.clone_into(&mut info.verb);
    Ok(EventAttributes::RequestUri(info))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs_of(json: &str) -> Result<OwnedAttributes, AttributesProblem> {
        let ev = AuditEvent::parse(json.as_bytes()).unwrap();
        attributes(&ev).map(|a| a.to_owned_attributes())
    }

    #[test]
    fn from_object_ref() {
        let a = attrs_of(r#"{"verb":"create","requestURI":"/api/v1/namespaces/d/pods/p/exec?command=sh","objectRef":{"resource":"pods","namespace":"d","name":"p","apiVersion":"v1","subresource":"exec"}}"#).unwrap();
        assert_eq!(
            (a.verb.as_str(), a.resource.as_str(), a.subresource.as_str()),
            ("create", "pods", "exec")
        );
        assert_eq!((a.namespace.as_str(), a.name.as_str()), ("d", "p"));
        assert!(a.is_resource_request);
        let a = attrs_of(r#"{"verb":"update","objectRef":{"resource":"deployments","apiGroup":"apps","namespace":"d","name":"x"}}"#).unwrap();
        assert_eq!(a.api_group, "apps");
    }

    #[test]
    fn from_request_uri_like_the_api_server() {
        let a = attrs_of(r#"{"verb":"get","requestURI":"/healthz"}"#).unwrap();
        assert!(!a.is_resource_request);
        assert_eq!((a.verb.as_str(), a.path.as_str()), ("get", "/healthz"));
        let a = attrs_of(r#"{"verb":"watch","requestURI":"/apis/apps/v1/namespaces/x/deployments?watch=true&fieldSelector=metadata.name%3Dweb"}"#).unwrap();
        assert_eq!(
            (
                a.verb.as_str(),
                a.api_group.as_str(),
                a.resource.as_str(),
                a.name.as_str()
            ),
            ("watch", "apps", "deployments", "web")
        );
        let a = attrs_of(r#"{"verb":"deletecollection","requestURI":"/api/v1/namespaces/x/pods"}"#)
            .unwrap();
        assert_eq!(
            (a.verb.as_str(), a.namespace.as_str()),
            ("deletecollection", "x")
        );
        // objectRef without a resource: fall back to the URI.
        let a = attrs_of(r#"{"verb":"get","requestURI":"/version","objectRef":{}}"#).unwrap();
        assert_eq!(a.path, "/version");
    }

    #[test]
    fn problems() {
        assert_eq!(
            attrs_of(r#"{"requestURI":"/api"}"#),
            Err(AttributesProblem::MissingVerb)
        );
        assert_eq!(
            attrs_of(r#"{"verb":"get"}"#),
            Err(AttributesProblem::MissingRequest)
        );
        assert!(matches!(
            attrs_of(r#"{"verb":"get","requestURI":"/api/v1/%zz"}"#),
            Err(AttributesProblem::ParseRequestUri { .. })
        ));
        assert_eq!(method_for_verb("post"), "POST");
    }
}
