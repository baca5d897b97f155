//! The kube-apiserver audit event (`audit.k8s.io/v1` and `v1beta1` `Event`),
//! reduced to what the replay reads, borrowed from the input line.
//!
//! - Strings borrow from the input unless they hold escapes ([`Text`]).
//! - Fields the replay does not need (`requestObject`, `responseObject`,
//!   Panther's `p_*` enrichment, ...) are skipped by the JSON parser, not
//!   built.
//! - Every field is optional: trimmed test events lack `apiVersion`,
//!   `stage` or `verb`. A wrong type (`{"kind": 0}`) is an error.
//! - [`AuditEvent::time_nanos`] is `requestReceivedTimestamp`, else
//!   `stageTimestamp`, else the v1beta1 `timestamp`, else
//!   `metadata.creationTimestamp`.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

use super::json::ScanError;
use super::time::parse_nanos;

mod read;

/// Prefix of the credential id of a bound token in `user.extra`.
pub const JTI_PREFIX: &str = "JTI=";

/// A string borrowed from the input when it has no escapes, owned otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Text<'a>(pub Cow<'a, str>);

impl Text<'_> {
    /// The string.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

/// Strings of a short list kept inline by [`Texts`].
const INLINE_TEXTS: usize = 4;

/// A list of strings (`groups`, `sourceIPs`): up to four are kept inline,
/// so most events parse without allocating for their lists; longer lists
/// move to the heap. Reads as a slice.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Texts<'a> {
    inline: [Text<'a>; INLINE_TEXTS],
    len: usize,
    /// Every element, once there are more than fit inline.
    spilled: Vec<Text<'a>>,
}

impl<'a> Texts<'a> {
    /// Appends one.
    pub fn push(&mut self, text: Text<'a>) {
        if !self.spilled.is_empty() {
            self.spilled.push(text);
        } else if let Some(slot) = self.inline.get_mut(self.len) {
            *slot = text;
            self.len += 1;
        } else {
            self.spilled.reserve(INLINE_TEXTS * 2);
            self.spilled
                .extend(self.inline.iter_mut().map(std::mem::take));
            self.spilled.push(text);
        }
    }
}

impl<'a> std::ops::Deref for Texts<'a> {
    type Target = [Text<'a>];

    fn deref(&self) -> &Self::Target {
        if self.spilled.is_empty() {
            self.inline.get(..self.len).unwrap_or_default()
        } else {
            &self.spilled
        }
    }
}

impl<'s, 'a> IntoIterator for &'s Texts<'a> {
    type Item = &'s Text<'a>;
    type IntoIter = std::slice::Iter<'s, Text<'a>>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Texts<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextsVisitor;
        impl<'de> Visitor<'de> for TextsVisitor {
            type Value = Texts<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of strings")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Texts::default();
                while let Some(t) = seq.next_element::<Text<'de>>()? {
                    out.push(t);
                }
                Ok(out)
            }
        }
        deserializer.deserialize_seq(TextsVisitor)
    }
}

/// A string kept as the input wrote it, escapes and quotes included, and
/// decoded only when read: for long texts most events never show
/// (`authorization.k8s.io/reason`, a 403's message), whose `\"` escapes
/// would otherwise cost an allocation on every event. Not a string (`0`,
/// `{}`) is an error, as for [`Text`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawText<'a>(&'a str);

impl<'a> RawText<'a> {
    /// The decoded string: borrowed when it has no escapes.
    #[must_use]
    pub fn decode(&self) -> Cow<'a, str> {
        let inner = self
            .0
            .strip_prefix('"')
            .and_then(|s| s.strip_suffix('"'))
            .unwrap_or_default();
        if !inner.contains('\\') {
            return Cow::Borrowed(inner);
        }
        // The parser checked the escapes when it read the event.
        serde_json::from_str::<String>(self.0).map_or(Cow::Borrowed(""), Cow::Owned)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for RawText<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = <&'a serde_json::value::RawValue>::deserialize(deserializer)?;
        if raw.get().starts_with('"') {
            Ok(RawText(raw.get()))
        } else {
            Err(de::Error::invalid_type(
                de::Unexpected::Other(raw.get().get(..1).unwrap_or("value")),
                &"a string",
            ))
        }
    }
}

/// The authenticated (or impersonated) user of a request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct EventUser<'a> {
    /// User name.
    #[serde(borrow, default)]
    pub username: Option<Text<'a>>,
    /// User UID.
    #[serde(borrow, default)]
    pub uid: Option<Text<'a>>,
    /// Groups.
    #[serde(borrow, default)]
    pub groups: Option<Texts<'a>>,
    /// The extras the replay joins on.
    #[serde(borrow, default)]
    pub extra: Option<UserExtra<'a>>,
}

impl<'a> EventUser<'a> {
    /// The user name, or empty.
    #[must_use]
    pub fn name(&self) -> &str {
        self.username.as_ref().map_or("", Text::as_str)
    }

    /// The groups (none when absent).
    pub fn group_names(&self) -> impl Iterator<Item = &str> {
        self.groups.iter().flatten().map(Text::as_str)
    }

    fn extra(&self) -> Option<&UserExtra<'a>> {
        self.extra.as_ref()
    }

    /// `authentication.kubernetes.io/credential-id` (`JTI=<jti>` for bound tokens).
    #[must_use]
    pub fn credential_id(&self) -> Option<&str> {
        first(self.extra().and_then(|e| e.credential_id.as_ref()))
    }

    /// The JTI of the bound token that authenticated the request.
    #[must_use]
    pub fn jti(&self) -> Option<&str> {
        self.credential_id()
            .and_then(|c| c.strip_prefix(JTI_PREFIX))
            .filter(|j| !j.is_empty())
    }

    /// `authentication.kubernetes.io/pod-name`.
    #[must_use]
    pub fn pod_name(&self) -> Option<&str> {
        first(self.extra().and_then(|e| e.pod_name.as_ref()))
    }

    /// `authentication.kubernetes.io/pod-uid`.
    #[must_use]
    pub fn pod_uid(&self) -> Option<&str> {
        first(self.extra().and_then(|e| e.pod_uid.as_ref()))
    }

    /// `authentication.kubernetes.io/node-name`.
    #[must_use]
    pub fn node_name(&self) -> Option<&str> {
        first(self.extra().and_then(|e| e.node_name.as_ref()))
    }
}

fn first<'s>(values: Option<&'s FirstText<'_>>) -> Option<&'s str> {
    values.and_then(|v| v.0.as_ref()).map(Text::as_str)
}

/// The first string of a list (`user.extra` values are lists of one);
/// the rest is skipped without allocating. A bare string is taken too.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FirstText<'a>(pub Option<Text<'a>>);

impl<'de: 'a, 'a> Deserialize<'de> for FirstText<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FirstVisitor;
        impl<'de> Visitor<'de> for FirstVisitor {
            type Value = FirstText<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of strings")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let first: Option<Text<'de>> = seq.next_element()?;
                while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(FirstText(first))
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(FirstText(Some(Text(Cow::Borrowed(v)))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(FirstText(Some(Text(Cow::Owned(v.to_owned())))))
            }
        }
        deserializer.deserialize_any(FirstVisitor)
    }
}

/// `user.extra`: only the keys the replay joins on; others are skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct UserExtra<'a> {
    /// `authentication.kubernetes.io/credential-id`.
    #[serde(borrow, default, rename = "authentication.kubernetes.io/credential-id")]
    pub credential_id: Option<FirstText<'a>>,
    /// `authentication.kubernetes.io/pod-name`.
    #[serde(borrow, default, rename = "authentication.kubernetes.io/pod-name")]
    pub pod_name: Option<FirstText<'a>>,
    /// `authentication.kubernetes.io/pod-uid`.
    #[serde(borrow, default, rename = "authentication.kubernetes.io/pod-uid")]
    pub pod_uid: Option<FirstText<'a>>,
    /// `authentication.kubernetes.io/node-name`.
    #[serde(borrow, default, rename = "authentication.kubernetes.io/node-name")]
    pub node_name: Option<FirstText<'a>>,
}

/// `objectRef`: the object a resource request was about.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef<'a> {
    /// Resource, e.g. `pods`.
    #[serde(borrow, default)]
    pub resource: Option<Text<'a>>,
    /// Namespace.
    #[serde(borrow, default)]
    pub namespace: Option<Text<'a>>,
    /// Name.
    #[serde(borrow, default)]
    pub name: Option<Text<'a>>,
    /// API group (absent or empty for the core group).
    #[serde(borrow, default)]
    pub api_group: Option<Text<'a>>,
    /// API version.
    #[serde(borrow, default)]
    pub api_version: Option<Text<'a>>,
    /// Subresource, e.g. `exec`.
    #[serde(borrow, default)]
    pub subresource: Option<Text<'a>>,
}

/// `responseStatus`, as far as the replay reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ResponseStatus<'a> {
    /// HTTP status code.
    #[serde(default)]
    pub code: Option<i64>,
    /// `Success` or `Failure`.
    #[serde(borrow, default)]
    pub status: Option<Text<'a>>,
    /// Machine-readable reason, e.g. `Forbidden`.
    #[serde(borrow, default)]
    pub reason: Option<Text<'a>>,
    /// Message, e.g. the RBAC denial.
    #[serde(borrow, default)]
    pub message: Option<RawText<'a>>,
}

/// The annotations the replay reads (authorizer, authenticator, token
/// minting); other annotations are skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Annotations<'a> {
    /// `authorization.k8s.io/decision`: `allow` or `forbid`.
    #[serde(borrow, default, rename = "authorization.k8s.io/decision")]
    pub decision: Option<Text<'a>>,
    /// `authorization.k8s.io/reason`.
    #[serde(borrow, default, rename = "authorization.k8s.io/reason")]
    pub reason: Option<RawText<'a>>,
    /// `authentication.k8s.io/legacy-token`: the subject of a legacy
    /// (Secret-based) ServiceAccount token that authenticated the request.
    #[serde(borrow, default, rename = "authentication.k8s.io/legacy-token")]
    pub legacy_token: Option<Text<'a>>,
    /// `authentication.k8s.io/legacy-token-manual-secret` (1.28+): the
    /// Secret of a legacy token created by hand.
    #[serde(
        borrow,
        default,
        rename = "authentication.k8s.io/legacy-token-manual-secret"
    )]
    pub legacy_token_manual_secret: Option<Text<'a>>,
    /// `authentication.k8s.io/legacy-token-autogenerated-secret` (1.28+):
    /// the Secret of a legacy token the token controller generated.
    #[serde(
        borrow,
        default,
        rename = "authentication.k8s.io/legacy-token-autogenerated-secret"
    )]
    pub legacy_token_autogenerated_secret: Option<Text<'a>>,
    /// `authentication.k8s.io/stale-token`: a bound token presented past
    /// the point where it would have expired without the extended expiry.
    #[serde(borrow, default, rename = "authentication.k8s.io/stale-token")]
    pub stale_token: Option<Text<'a>>,
    /// `authentication.kubernetes.io/issued-credential-id` (1.30+): on a
    /// `create serviceaccounts/token`, the minted token's `JTI=<jti>`.
    #[serde(
        borrow,
        default,
        rename = "authentication.kubernetes.io/issued-credential-id"
    )]
    pub issued_credential_id: Option<Text<'a>>,
}

/// The parts of a `TokenRequest` (`requestObject` of a `create
/// serviceaccounts/token` at level `Request` or above) the replay keeps.
/// `status.token` (the token itself, in `responseObject` at
/// `RequestResponse`) is never read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct TokenRequest<'a> {
    /// `spec`.
    #[serde(borrow, default)]
    pub spec: Option<TokenRequestSpec<'a>>,
}

/// `TokenRequest.spec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRequestSpec<'a> {
    /// Audiences asked for.
    #[serde(borrow, default)]
    pub audiences: Option<Vec<Text<'a>>>,
    /// Lifetime asked for, in seconds.
    #[serde(default)]
    pub expiration_seconds: Option<i64>,
    /// The object the token is bound to (a Pod, Secret or Node).
    #[serde(borrow, default)]
    pub bound_object_ref: Option<BoundObjectRef<'a>>,
}

/// `TokenRequest.spec.boundObjectRef`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct BoundObjectRef<'a> {
    /// `Pod`, `Secret` or `Node`.
    #[serde(borrow, default)]
    pub kind: Option<Text<'a>>,
    /// Name.
    #[serde(borrow, default)]
    pub name: Option<Text<'a>>,
    /// UID.
    #[serde(borrow, default)]
    pub uid: Option<Text<'a>>,
}

/// `metadata` (v1beta1 events carry `creationTimestamp` there).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct EventMetadata<'a> {
    /// `creationTimestamp`.
    #[serde(borrow, default, rename = "creationTimestamp")]
    pub creation_timestamp: Option<Text<'a>>,
}

/// One audit event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent<'a> {
    /// `Event` (or `EventList` for a list read as one line).
    #[serde(borrow, default)]
    pub kind: Option<Text<'a>>,
    /// `audit.k8s.io/v1` or `v1beta1`.
    #[serde(borrow, default)]
    pub api_version: Option<Text<'a>>,
    /// Audit level.
    #[serde(borrow, default)]
    pub level: Option<Text<'a>>,
    /// Unique per request (shared by the request's stages).
    #[serde(borrow, default, rename = "auditID")]
    pub audit_id: Option<Text<'a>>,
    /// `RequestReceived`, `ResponseStarted`, `ResponseComplete` or `Panic`.
    #[serde(borrow, default)]
    pub stage: Option<Text<'a>>,
    /// The request URI.
    #[serde(borrow, default, rename = "requestURI")]
    pub request_uri: Option<Text<'a>>,
    /// The Kubernetes verb (lower-cased method for non-resource requests).
    #[serde(borrow, default)]
    pub verb: Option<Text<'a>>,
    /// The authenticated user.
    #[serde(borrow, default)]
    pub user: Option<EventUser<'a>>,
    /// The user impersonated, if any: RBAC decides for this one.
    #[serde(borrow, default)]
    pub impersonated_user: Option<EventUser<'a>>,
    /// Client addresses, the client's own first.
    #[serde(borrow, default, rename = "sourceIPs")]
    pub source_ips: Option<Texts<'a>>,
    /// User agent.
    #[serde(borrow, default)]
    pub user_agent: Option<Text<'a>>,
    /// The object of a resource request.
    #[serde(borrow, default)]
    pub object_ref: Option<ObjectRef<'a>>,
    /// The response status.
    #[serde(borrow, default)]
    pub response_status: Option<ResponseStatus<'a>>,
    /// When the API server received the request.
    #[serde(borrow, default)]
    pub request_received_timestamp: Option<Text<'a>>,
    /// When this stage was reached.
    #[serde(borrow, default)]
    pub stage_timestamp: Option<Text<'a>>,
    /// v1beta1's event time.
    #[serde(borrow, default)]
    pub timestamp: Option<Text<'a>>,
    /// Object metadata.
    #[serde(borrow, default)]
    pub metadata: Option<EventMetadata<'a>>,
    /// The authorizer's annotations.
    #[serde(borrow, default)]
    pub annotations: Option<Annotations<'a>>,
    /// The request body (level `Request` and above), kept unparsed: only a
    /// `TokenRequest` is ever decoded from it ([`Self::token_request`]).
    #[serde(borrow, default)]
    pub request_object: Option<RawJson<'a>>,
}

/// A JSON value kept as the input wrote it (checked, not built).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawJson<'a>(pub &'a str);

impl<'de: 'a, 'a> Deserialize<'de> for RawJson<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        <&'a serde_json::value::RawValue>::deserialize(deserializer).map(|raw| RawJson(raw.get()))
    }
}

/// The stage of an event, and whether it is the one that decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "PascalCase")]
pub enum Stage {
    /// `RequestReceived`: counted only.
    RequestReceived,
    /// `ResponseStarted` (long-running requests): counted only.
    ResponseStarted,
    /// `ResponseComplete`: decides.
    ResponseComplete,
    /// `Panic`: decides.
    Panic,
    /// No stage (trimmed test events): decides, as the only record there is.
    Missing,
    /// A stage this build does not know: counted only.
    Other,
}

impl Stage {
    /// Whether events of this stage are evaluated (the others are counted).
    #[must_use]
    pub fn decides(self) -> bool {
        matches!(self, Self::ResponseComplete | Self::Panic | Self::Missing)
    }

    /// The name as the API server writes it (`-` when missing).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RequestReceived => "RequestReceived",
            Self::ResponseStarted => "ResponseStarted",
            Self::ResponseComplete => "ResponseComplete",
            Self::Panic => "Panic",
            Self::Missing => "-",
            Self::Other => "other",
        }
    }
}

/// The decision the live API server recorded, and where it was read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Recorded<'e> {
    /// Allowed.
    pub allowed: bool,
    /// `authorization.k8s.io/reason`, or the response message for a 403.
    pub reason: Cow<'e, str>,
    /// `annotation` (`authorization.k8s.io/decision`) or `status` (inferred
    /// from the response code when the annotation is absent).
    pub from: &'static str,
}

impl Recorded<'_> {
    /// An owned copy.
    #[must_use]
    pub fn into_owned(self) -> Recorded<'static> {
        Recorded {
            allowed: self.allowed,
            reason: Cow::Owned(self.reason.into_owned()),
            from: self.from,
        }
    }
}

impl<'a> AuditEvent<'a> {
    /// Parses one event from JSON (the hand-written reader, `read.rs`).
    ///
    /// The line is checked as UTF-8 once (the API server writes UTF-8), so
    /// strings need not be checked again. A line that is not UTF-8 goes to
    /// serde_json (as in [`Self::parse_reference`]), which accepts bad
    /// bytes in the members it skips (and reports them in the ones it reads).
    ///
    /// # Errors
    /// Malformed JSON or UTF-8, a struct that is not an object, a member
    /// given twice or of the wrong type, with the line and column.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ScanError> {
        let mut ev = Self::default();
        ev.read_from(bytes)?;
        Ok(ev)
    }

    /// [`Self::parse`] into `self`, a fresh `AuditEvent::default()`,
    /// where it lies (an event is over a kilobyte, and the replay reads
    /// one per line). On an error `self` holds part of the event: discard
    /// it.
    ///
    /// # Errors
    /// As [`Self::parse`].
    pub(crate) fn read_from(&mut self, bytes: &'a [u8]) -> Result<(), ScanError> {
        debug_assert!(*self == Self::default(), "read_from needs a fresh event");
        read::event_document(bytes, self)
    }

    /// Parses one event with serde_json and the derived `Deserialize`: the
    /// reference [`Self::parse`] is checked against (tests, the
    /// `audit_event` fuzz target). 1.2 to 1.6 times as slow.
    ///
    /// # Errors
    /// serde_json's error.
    pub fn parse_reference(bytes: &'a [u8]) -> Result<Self, serde_json::Error> {
        match std::str::from_utf8(bytes) {
            Ok(text) => serde_json::from_str(text),
            // Let the parser locate and report the bad byte.
            Err(_) => serde_json::from_slice(bytes),
        }
    }

    /// The kind, or empty.
    #[must_use]
    pub fn kind(&self) -> &str {
        self.kind.as_ref().map_or("", Text::as_str)
    }

    /// The stage.
    #[must_use]
    pub fn stage(&self) -> Stage {
        match self.stage.as_ref().map(Text::as_str) {
            None => Stage::Missing,
            Some("ResponseComplete") => Stage::ResponseComplete,
            Some("Panic") => Stage::Panic,
            Some("RequestReceived") => Stage::RequestReceived,
            Some("ResponseStarted") => Stage::ResponseStarted,
            Some(_) => Stage::Other,
        }
    }

    /// The verb, or empty.
    #[must_use]
    pub fn verb(&self) -> &str {
        self.verb.as_ref().map_or("", Text::as_str)
    }

    /// The request URI, or empty.
    #[must_use]
    pub fn request_uri(&self) -> &str {
        self.request_uri.as_ref().map_or("", Text::as_str)
    }

    /// The user RBAC decides for: the impersonated user, else the user.
    #[must_use]
    pub fn effective_user(&self) -> Option<&EventUser<'a>> {
        self.impersonated_user.as_ref().or(self.user.as_ref())
    }

    /// The address the connection came from: the last `sourceIPs` entry
    /// (the API server appends the remote address after what
    /// `X-Forwarded-For` and `X-Real-Ip` claimed).
    #[must_use]
    pub fn source_ip(&self) -> Option<&str> {
        self.source_ips
            .as_ref()
            .and_then(|v| v.last())
            .map(Text::as_str)
            .filter(|ip| !ip.is_empty())
    }

    /// The addresses the client claimed (`X-Forwarded-For`, `X-Real-Ip`):
    /// every `sourceIPs` entry before the last.
    pub fn claimed_ips(&self) -> impl Iterator<Item = &str> {
        self.claimed_slice()
            .iter()
            .map(Text::as_str)
            .filter(|ip| !ip.is_empty())
    }

    /// The claimed `sourceIPs` entries (all but the last).
    #[must_use]
    pub fn claimed_slice(&self) -> &[Text<'a>] {
        let ips = self.source_ips.as_deref().unwrap_or_default();
        ips.get(..ips.len().saturating_sub(1)).unwrap_or_default()
    }

    /// The annotations, or none.
    #[must_use]
    pub fn annotation<'s>(
        &'s self,
        pick: impl for<'x> Fn(&'x Annotations<'a>) -> Option<&'x Text<'a>>,
    ) -> Option<&'s str> {
        self.annotations.as_ref().and_then(pick).map(Text::as_str)
    }

    /// The `TokenRequest` of a `create serviceaccounts/token`, when the
    /// audit level recorded the request body and it decodes; `None`
    /// otherwise (a body of another shape is not an error).
    #[must_use]
    pub fn token_request(&self) -> Option<TokenRequest<'_>> {
        self.request_object
            .and_then(|raw| serde_json::from_str(raw.0).ok())
    }

    /// `objectRef.resource`, `objectRef.subresource` (empty when absent).
    #[must_use]
    pub fn object_resource(&self) -> (&str, &str) {
        let o = self.object_ref.as_ref();
        (
            o.and_then(|o| o.resource.as_ref()).map_or("", Text::as_str),
            o.and_then(|o| o.subresource.as_ref())
                .map_or("", Text::as_str),
        )
    }

    /// The response code.
    #[must_use]
    pub fn code(&self) -> Option<i64> {
        self.response_status.as_ref().and_then(|s| s.code)
    }

    /// The event time in nanoseconds (see the module docs for the order).
    #[must_use]
    pub fn time_nanos(&self) -> Option<i64> {
        [
            self.request_received_timestamp.as_ref(),
            self.stage_timestamp.as_ref(),
            self.timestamp.as_ref(),
            self.metadata
                .as_ref()
                .and_then(|m| m.creation_timestamp.as_ref()),
        ]
        .into_iter()
        .flatten()
        .find_map(|t| parse_nanos(t.as_str()))
    }

    /// The time text the event carries (the same field [`Self::time_nanos`] uses).
    #[must_use]
    pub fn time_text(&self) -> &str {
        [
            self.request_received_timestamp.as_ref(),
            self.stage_timestamp.as_ref(),
            self.timestamp.as_ref(),
            self.metadata
                .as_ref()
                .and_then(|m| m.creation_timestamp.as_ref()),
        ]
        .into_iter()
        .flatten()
        .next()
        .map_or("", Text::as_str)
    }

    /// The decision the API server recorded: the `authorization.k8s.io`
    /// annotations, else inferred from the status (2xx/3xx allowed; a 403
    /// whose message is an authorization denial, `... cannot ...`, denied).
    /// `None` when neither tells.
    #[must_use]
    pub fn recorded(&self) -> Option<Recorded<'a>> {
        let (allowed, from, reason) = self.recorded_raw()?;
        Some(Recorded {
            allowed,
            reason: reason.map_or(Cow::Borrowed(""), |r| r.decode()),
            from,
        })
    }

    /// Whether [`Self::recorded`] says allowed, without decoding its reason.
    #[must_use]
    pub fn recorded_allowed(&self) -> Option<bool> {
        self.recorded_raw().map(|(allowed, _, _)| allowed)
    }

    /// [`Self::recorded`]'s decision, where it was read, and its reason
    /// still encoded.
    fn recorded_raw(&self) -> Option<(bool, &'static str, Option<RawText<'a>>)> {
        let ann = self.annotations.as_ref();
        let reason = ann.and_then(|a| a.reason);
        match ann.and_then(|a| a.decision.as_ref()).map(Text::as_str) {
            Some("allow") => return Some((true, "annotation", reason)),
            Some("forbid") => return Some((false, "annotation", reason)),
            _ => {}
        }
        let status = self.response_status.as_ref()?;
        let code = status.code?;
        if (200..400).contains(&code) {
            return Some((true, "status", reason));
        }
        let message = status.message?;
        (code == 403 && message.decode().contains(" cannot ")).then_some((
            false,
            "status",
            Some(message),
        ))
    }
}

/// Only the time fields: what merging several files needs before the
/// whole event is parsed.
#[derive(Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventTimes<'a> {
    /// `requestReceivedTimestamp`.
    #[serde(borrow, default)]
    pub request_received_timestamp: Option<Text<'a>>,
    /// `stageTimestamp`.
    #[serde(borrow, default)]
    pub stage_timestamp: Option<Text<'a>>,
    /// `timestamp`.
    #[serde(borrow, default)]
    pub timestamp: Option<Text<'a>>,
}

impl<'a> EventTimes<'a> {
    /// Reads the time fields of one event (the rest is skipped, and checked).
    ///
    /// # Errors
    /// As [`AuditEvent::parse`].
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ScanError> {
        read::document(bytes, read::times)
    }

    /// Nanoseconds of the first field that parses; `i64::MIN` when none does
    /// (such events sort first and stay in file order).
    #[must_use]
    pub fn nanos(&self) -> i64 {
        [
            self.request_received_timestamp.as_ref(),
            self.stage_timestamp.as_ref(),
            self.timestamp.as_ref(),
        ]
        .into_iter()
        .flatten()
        .find_map(|t| parse_nanos(t.as_str()))
        .unwrap_or(i64::MIN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENT: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a1","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/shop/secrets?limit=500","verb":"list","user":{"username":"system:serviceaccount:shop:web","uid":"u","groups":["system:serviceaccounts","system:serviceaccounts:shop","system:authenticated"],"extra":{"authentication.kubernetes.io/credential-id":["JTI=j-1"],"authentication.kubernetes.io/pod-name":["web-0"],"authentication.kubernetes.io/pod-uid":["p-1"],"other":["x"]}},"sourceIPs":["10.0.0.5"],"objectRef":{"resource":"secrets","namespace":"shop","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":200},"requestObject":{"big":[1,2,3]},"requestReceivedTimestamp":"2025-01-01T00:00:00.000001Z","stageTimestamp":"2025-01-01T00:00:00.1Z","annotations":{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":"RBAC: allowed by ClusterRoleBinding \"x\" of ClusterRole \"y\" to ServiceAccount \"web/shop\"","pod-security.kubernetes.io/enforce-policy":"privileged:latest"}}"#;

    #[test]
    fn parses_and_borrows() {
        let ev = AuditEvent::parse(EVENT.as_bytes()).unwrap();
        assert_eq!(ev.kind(), "Event");
        assert_eq!(ev.stage(), Stage::ResponseComplete);
        assert!(matches!(ev.verb.as_ref().unwrap().0, Cow::Borrowed("list")));
        let user = ev.effective_user().unwrap();
        assert_eq!(user.name(), "system:serviceaccount:shop:web");
        assert_eq!(user.jti(), Some("j-1"));
        assert_eq!(user.pod_name(), Some("web-0"));
        assert_eq!(user.pod_uid(), Some("p-1"));
        assert_eq!(ev.source_ip(), Some("10.0.0.5"));
        assert_eq!(ev.time_nanos(), Some(1_735_689_600_000_001_000));
        let rec = ev.recorded().unwrap();
        assert!(rec.allowed);
        assert_eq!(rec.from, "annotation");
        assert!(rec.reason.contains("\"web/shop\""));
    }

    #[test]
    fn every_member_is_read_as_the_derive_reads_it() {
        // Every member the reader knows, with a value each, and unknown
        // members of each length the reader groups names by.
        let event = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"RequestResponse","auditID":"a-1","stage":"ResponseComplete","requestURI":"/api/v1/pods?x=\u00e9","verb":"create","userAgent":"ua/1","requestReceivedTimestamp":"2025-01-01T00:00:00.1Z","stageTimestamp":"2025-01-01T00:00:01Z","timestamp":"2025-01-01T00:00:02Z","user":{"username":"u","uid":"1","groups":["g"],"extra":{"authentication.kubernetes.io/credential-id":["JTI=j"],"authentication.kubernetes.io/pod-name":["p"],"authentication.kubernetes.io/pod-uid":["pu"],"authentication.kubernetes.io/node-name":["n"],"authentication.kubernetes.io/node-uid":["nu"]}},"impersonatedUser":{"username":"v","groups":["h"]},"sourceIPs":["10.0.0.1","10.0.0.2"],"objectRef":{"resource":"pods","namespace":"ns","name":"p","apiGroup":"","apiVersion":"v1","subresource":"exec"},"responseStatus":{"metadata":{},"code":201,"status":"Success","reason":"r","message":"m"},"metadata":{"creationTimestamp":"2025-01-01T00:00:03Z"},"annotations":{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":"why","authentication.kubernetes.io/issued-credential-id":"JTI=k"},"requestObject":{"spec":{"audiences":["a"]}},"xxxx":1,"xxxxx":[],"xxxxxxx":{},"xxxxxxxx":"","xxxxxxxxx":null,"xxxxxxxxxx":true,"xxxxxxxxxxx":0,"xxxxxxxxxxxxx":"","xxxxxxxxxxxxxx":"","xxxxxxxxxxxxxxxx":"","xxxxxxxxxxxxxxxxxxxxxxxx":"","responseObject":{"k":"v"}}"#;
        let ours = AuditEvent::parse(event.as_bytes()).unwrap();
        let theirs = AuditEvent::parse_reference(event.as_bytes()).unwrap();
        assert_eq!(ours, theirs);
        // Each member was read (none fell to the skip of its length).
        assert!(ours.kind.is_some() && ours.api_version.is_some() && ours.level.is_some());
        assert!(ours.audit_id.is_some() && ours.stage.is_some() && ours.request_uri.is_some());
        assert!(ours.verb.is_some() && ours.user_agent.is_some() && ours.timestamp.is_some());
        assert!(ours.request_received_timestamp.is_some() && ours.stage_timestamp.is_some());
        assert!(ours.user.is_some() && ours.impersonated_user.is_some());
        assert!(ours.source_ips.is_some() && ours.object_ref.is_some());
        assert!(ours.response_status.is_some() && ours.metadata.is_some());
        assert!(ours.annotations.is_some() && ours.request_object.is_some());
        // And each, given twice, is refused.
        for name in [
            "kind",
            "apiVersion",
            "level",
            "auditID",
            "stage",
            "requestURI",
            "verb",
            "userAgent",
            "requestReceivedTimestamp",
            "stageTimestamp",
            "timestamp",
            "user",
            "impersonatedUser",
            "sourceIPs",
            "objectRef",
            "responseStatus",
            "metadata",
            "annotations",
            "requestObject",
        ] {
            let value = if matches!(
                name,
                "user"
                    | "impersonatedUser"
                    | "objectRef"
                    | "responseStatus"
                    | "metadata"
                    | "annotations"
                    | "requestObject"
            ) {
                "{}"
            } else if name == "sourceIPs" {
                "[]"
            } else {
                "\"x\""
            };
            let twice = format!(r#"{{"{name}":{value},"{name}":{value}}}"#);
            let err = AuditEvent::parse(twice.as_bytes()).unwrap_err();
            assert!(err.what().contains("duplicate field"), "{name}: {err}");
        }
    }

    #[test]
    fn wrong_types_are_errors() {
        assert!(AuditEvent::parse(br#"{"kind": 0}"#).is_err());
        assert!(AuditEvent::parse(br#"{"user": "bob"}"#).is_err());
        assert!(AuditEvent::parse(br#"{"kind":"Event","verb":"get""#).is_err());
        assert!(AuditEvent::parse(b"[1,2]").is_err());
        // Nulls are absent values.
        let ev = AuditEvent::parse(br#"{"kind":"Event","objectRef":null,"verb":null}"#).unwrap();
        assert!(ev.object_ref.is_none());
        assert_eq!(ev.stage(), Stage::Missing);
    }

    #[test]
    fn recorded_decision_from_status_when_not_annotated() {
        let ev = AuditEvent::parse(
            br#"{"responseStatus":{"code":403,"reason":"Forbidden","message":"pods is forbidden: User \"bob\" cannot list resource \"pods\""}}"#,
        )
        .unwrap();
        let rec = ev.recorded().unwrap();
        assert!(!rec.allowed);
        assert_eq!(rec.from, "status");
        // A 403 from admission is not an authorization decision.
        let ev = AuditEvent::parse(
            br#"{"responseStatus":{"code":403,"message":"pods \"x\" is forbidden: violates PodSecurity"}}"#,
        )
        .unwrap();
        assert_eq!(ev.recorded(), None);
        let ev = AuditEvent::parse(br#"{"responseStatus":{"code":201}}"#).unwrap();
        assert!(ev.recorded().unwrap().allowed);
    }

    #[test]
    fn long_lists_and_escaped_texts_read_as_written() {
        let ev = AuditEvent::parse(
            r#"{"sourceIPs":["a","b","c","d","\u00e9","f"],"user":{"groups":["g1","g\"2"]},"annotations":{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":"RBAC: allowed by \"r\u00e9\" \\ ok"}}"#
                .as_bytes(),
        )
        .unwrap();
        let ips: Vec<&str> = ev.source_ips.iter().flatten().map(Text::as_str).collect();
        assert_eq!(ips, ["a", "b", "c", "d", "\u{e9}", "f"]);
        assert_eq!(ev.source_ip(), Some("f"));
        assert_eq!(ev.claimed_slice().len(), 5);
        let groups: Vec<&str> = ev.user.as_ref().unwrap().group_names().collect();
        assert_eq!(groups, ["g1", "g\"2"]);
        let rec = ev.recorded().unwrap();
        assert_eq!(rec.reason, "RBAC: allowed by \"r\u{e9}\" \\ ok");
        assert_eq!(ev.recorded_allowed(), Some(true));
        // Exactly four stay inline; none is an empty list.
        let ev = AuditEvent::parse(br#"{"sourceIPs":["1","2","3","4"]}"#).unwrap();
        let four = ev.source_ips.as_ref().unwrap();
        assert_eq!(four.len(), 4);
        assert!(four.spilled.is_empty());
        assert!(Texts::default().is_empty());
        // A reason or message that is not a string is an error, as before.
        assert!(
            AuditEvent::parse(br#"{"annotations":{"authorization.k8s.io/reason":0}}"#).is_err()
        );
        assert!(AuditEvent::parse(br#"{"responseStatus":{"message":{}}}"#).is_err());
        assert!(AuditEvent::parse(br#"{"sourceIPs":[1]}"#).is_err());
    }

    #[test]
    fn merge_times() {
        let t: EventTimes<'_> =
            serde_json::from_str(r#"{"stageTimestamp":"2025-01-01T00:00:00Z","x":{}}"#).unwrap();
        assert_eq!(t.nanos(), 1_735_689_600_000_000_000);
        let t: EventTimes<'_> = serde_json::from_str("{}").unwrap();
        assert_eq!(t.nanos(), i64::MIN);
    }
}
