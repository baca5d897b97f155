//! [`AuditEvent`] read by hand with the [`Scanner`]: the same result as
//! the serde derive ([`AuditEvent::parse_reference`]) for every input
//! that one accepts as an object (the `audit_event` fuzz target checks
//! both ways), 1.2 to 1.6 times as fast per event (`cargo bench -p
//! tokenwatch-core --bench event_parse`).
//!
//! As with the derive: members are matched by their decoded names, unknown
//! members are skipped (and checked), `null` is an absent field, a member
//! given twice is an error, and a value of the wrong type is an error. One
//! difference: the derive also reads a struct written as a JSON array of
//! its fields in order; here every struct must be an object.

use super::{
    Annotations, AuditEvent, EventMetadata, EventTimes, EventUser, FirstText, ObjectRef, RawJson,
    RawText, ResponseStatus, Text, Texts, UserExtra,
};
use crate::replay::json::{ScanError, Scanner};

/// A `match` on a member's decoded name, compared with
/// [`crate::bytes::same`] (inline word compares): a `match` on `&str` calls
/// libc's `memcmp` for every arm of the key's length.
macro_rules! by_name {
    ($key:expr, { $($name:expr => $arm:expr,)+ } else $other:expr) => {{
        let key: &[u8] = $key.as_bytes();
        $(if crate::bytes::same(key, $name.as_bytes()) { $arm } else)+ { $other }
    }};
}

/// The members of one object seen so far, to refuse duplicates.
struct Seen(u32);

impl Seen {
    /// Notes member number `bit` (named `name`); an error when it came
    /// before.
    #[inline(always)]
    fn mark(&mut self, s: &Scanner<'_>, bit: u32, name: &'static str) -> Result<(), ScanError> {
        let mask = 1 << bit;
        if self.0 & mask != 0 {
            return Err(s.error(format!("duplicate field `{name}`")));
        }
        self.0 |= mask;
        Ok(())
    }

    /// Reads member number `bit` (named `name`) into `slot` with `read`
    /// (`null` leaves it absent); an error when the member came before.
    #[inline(always)]
    fn read<'a, T>(
        &mut self,
        s: &mut Scanner<'a>,
        bit: u32,
        name: &'static str,
        slot: &mut Option<T>,
        read: impl FnOnce(&mut Scanner<'a>) -> Result<T, ScanError>,
    ) -> Result<(), ScanError> {
        self.mark(s, bit, name)?;
        *slot = if s.null()? { None } else { Some(read(s)?) };
        Ok(())
    }

    /// As [`Self::read`], for a struct: `read` fills it where it lies
    /// (structs of the event are hundreds of bytes, and returning them by
    /// value copied each twice).
    #[inline(always)]
    fn read_into<'a, T: Default>(
        &mut self,
        s: &mut Scanner<'a>,
        bit: u32,
        name: &'static str,
        slot: &mut Option<T>,
        read: impl FnOnce(&mut Scanner<'a>, &mut T) -> Result<(), ScanError>,
    ) -> Result<(), ScanError> {
        self.mark(s, bit, name)?;
        if s.null()? {
            *slot = None;
            Ok(())
        } else {
            read(s, slot.insert(T::default()))
        }
    }
}

/// Skips a member the replay does not read (it is still checked).
#[inline(always)]
fn skip(s: &mut Scanner<'_>) -> Result<(), ScanError> {
    s.skip().map(drop)
}

#[inline(always)]
fn text<'a>(s: &mut Scanner<'a>) -> Result<Text<'a>, ScanError> {
    s.string_text().map(Text)
}

#[inline(always)]
fn raw_text<'a>(s: &mut Scanner<'a>) -> Result<RawText<'a>, ScanError> {
    s.string_raw().map(RawText)
}

fn texts<'a>(s: &mut Scanner<'a>, out: &mut Texts<'a>) -> Result<(), ScanError> {
    s.array("a list of strings", |s| {
        out.push(text(s)?);
        Ok(())
    })
}

/// A list whose first string is kept, or a bare string.
fn first_text<'a>(s: &mut Scanner<'a>) -> Result<FirstText<'a>, ScanError> {
    if s.peek() == Some(b'"') {
        return text(s).map(|t| FirstText(Some(t)));
    }
    let mut first = None;
    s.array("a list of strings", |s| {
        if first.is_none() {
            first = Some(text(s)?);
            Ok(())
        } else {
            skip(s)
        }
    })?;
    Ok(FirstText(first))
}

fn user<'a>(s: &mut Scanner<'a>, user: &mut EventUser<'a>) -> Result<(), ScanError> {
    let mut seen = Seen(0);
    s.object("user", |s, key| {
        by_name!(key, {
        "username" => seen.read(s, 0, "username", &mut user.username, text),
        "uid" => seen.read(s, 1, "uid", &mut user.uid, text),
        "groups" => seen.read_into(s, 2, "groups", &mut user.groups, texts),
        "extra" => seen.read_into(s, 3, "extra", &mut user.extra, extra),
    } else skip(s))
    })
}

fn extra<'a>(s: &mut Scanner<'a>, extra: &mut UserExtra<'a>) -> Result<(), ScanError> {
    const CREDENTIAL_ID: &str = "authentication.kubernetes.io/credential-id";
    const POD_NAME: &str = "authentication.kubernetes.io/pod-name";
    const POD_UID: &str = "authentication.kubernetes.io/pod-uid";
    const NODE_NAME: &str = "authentication.kubernetes.io/node-name";
    let mut seen = Seen(0);
    s.object("user.extra", |s, key| {
        by_name!(key, {
        CREDENTIAL_ID => seen.read(s, 0, CREDENTIAL_ID, &mut extra.credential_id, first_text),
        POD_NAME => seen.read(s, 1, POD_NAME, &mut extra.pod_name, first_text),
        POD_UID => seen.read(s, 2, POD_UID, &mut extra.pod_uid, first_text),
        NODE_NAME => seen.read(s, 3, NODE_NAME, &mut extra.node_name, first_text),
    } else skip(s))
    })
}

fn object_ref<'a>(s: &mut Scanner<'a>, o: &mut ObjectRef<'a>) -> Result<(), ScanError> {
    let mut seen = Seen(0);
    s.object("objectRef", |s, key| {
        by_name!(key, {
        "resource" => seen.read(s, 0, "resource", &mut o.resource, text),
        "namespace" => seen.read(s, 1, "namespace", &mut o.namespace, text),
        "name" => seen.read(s, 2, "name", &mut o.name, text),
        "apiGroup" => seen.read(s, 3, "apiGroup", &mut o.api_group, text),
        "apiVersion" => seen.read(s, 4, "apiVersion", &mut o.api_version, text),
        "subresource" => seen.read(s, 5, "subresource", &mut o.subresource, text),
    } else skip(s))
    })
}

fn response_status<'a>(
    s: &mut Scanner<'a>,
    status: &mut ResponseStatus<'a>,
) -> Result<(), ScanError> {
    let mut seen = Seen(0);
    s.object("responseStatus", |s, key| {
        by_name!(key, {
        "code" => seen.read(s, 0, "code", &mut status.code, Scanner::i64),
        "status" => seen.read(s, 1, "status", &mut status.status, text),
        "reason" => seen.read(s, 2, "reason", &mut status.reason, text),
        "message" => seen.read(s, 3, "message", &mut status.message, raw_text),
    } else skip(s))
    })
}

fn annotations<'a>(s: &mut Scanner<'a>, a: &mut Annotations<'a>) -> Result<(), ScanError> {
    const DECISION: &str = "authorization.k8s.io/decision";
    const REASON: &str = "authorization.k8s.io/reason";
    const LEGACY: &str = "authentication.k8s.io/legacy-token";
    const LEGACY_MANUAL: &str = "authentication.k8s.io/legacy-token-manual-secret";
    const LEGACY_AUTO: &str = "authentication.k8s.io/legacy-token-autogenerated-secret";
    const STALE: &str = "authentication.k8s.io/stale-token";
    const ISSUED: &str = "authentication.kubernetes.io/issued-credential-id";
    let mut seen = Seen(0);
    s.object("annotations", |s, key| {
        by_name!(key, {
        DECISION => seen.read(s, 0, DECISION, &mut a.decision, text),
        REASON => seen.read(s, 1, REASON, &mut a.reason, raw_text),
        LEGACY => seen.read(s, 2, LEGACY, &mut a.legacy_token, text),
        LEGACY_MANUAL => seen.read(s, 3, LEGACY_MANUAL, &mut a.legacy_token_manual_secret, text),
        LEGACY_AUTO => seen.read(
            s,
            4,
            LEGACY_AUTO,
            &mut a.legacy_token_autogenerated_secret,
            text,
        ),
        STALE => seen.read(s, 5, STALE, &mut a.stale_token, text),
        ISSUED => seen.read(s, 6, ISSUED, &mut a.issued_credential_id, text),
    } else skip(s))
    })
}

fn metadata<'a>(s: &mut Scanner<'a>, meta: &mut EventMetadata<'a>) -> Result<(), ScanError> {
    let mut seen = Seen(0);
    s.object("metadata", |s, key| {
        by_name!(key, {
        "creationTimestamp" => seen.read(
            s,
            0,
            "creationTimestamp",
            &mut meta.creation_timestamp,
            text,
        ),
    } else skip(s))
    })
}

/// Reads one document with `read` when it is UTF-8 (checked once here).
/// Otherwise serde_json reads it with the derive, as before the reader:
/// it accepts bad bytes in the members it skips and reports them in the
/// ones it reads.
pub(super) fn document<'a, T: serde::Deserialize<'a>>(
    bytes: &'a [u8],
    read: impl FnOnce(&'a str) -> Result<T, ScanError>,
) -> Result<T, ScanError> {
    match simdutf8::basic::from_utf8(bytes) {
        Ok(text) => read(text),
        Err(_) => serde_json::from_slice(bytes).map_err(|e| ScanError::from_serde(&e)),
    }
}

/// Reads one event into `ev` (a fresh default; left as read so far on an
/// error) when it is UTF-8; otherwise serde_json reads it, as
/// [`document`] does.
pub(super) fn event_document<'a>(
    bytes: &'a [u8],
    ev: &mut AuditEvent<'a>,
) -> Result<(), ScanError> {
    match simdutf8::basic::from_utf8(bytes) {
        Ok(text) => event(text, ev),
        Err(_) => {
            *ev = serde_json::from_slice(bytes).map_err(|e| ScanError::from_serde(&e))?;
            Ok(())
        }
    }
}

/// Reads one event: the whole document, nothing after it.
fn event<'a>(input: &'a str, ev: &mut AuditEvent<'a>) -> Result<(), ScanError> {
    let mut s = Scanner::new(input);
    let mut seen = Seen(0);
    s.object("an audit event", |s, key| {
        by_name!(key, {
        "kind" => seen.read(s, 0, "kind", &mut ev.kind, text),
        "apiVersion" => seen.read(s, 1, "apiVersion", &mut ev.api_version, text),
        "level" => seen.read(s, 2, "level", &mut ev.level, text),
        "auditID" => seen.read(s, 3, "auditID", &mut ev.audit_id, text),
        "stage" => seen.read(s, 4, "stage", &mut ev.stage, text),
        "requestURI" => seen.read(s, 5, "requestURI", &mut ev.request_uri, text),
        "verb" => seen.read(s, 6, "verb", &mut ev.verb, text),
        "userAgent" => seen.read(s, 7, "userAgent", &mut ev.user_agent, text),
        "requestReceivedTimestamp" => seen.read(
            s,
            8,
            "requestReceivedTimestamp",
            &mut ev.request_received_timestamp,
            text,
        ),
        "stageTimestamp" => seen.read(s, 9, "stageTimestamp", &mut ev.stage_timestamp, text),
        "timestamp" => seen.read(s, 10, "timestamp", &mut ev.timestamp, text),
        "user" => seen.read_into(s, 11, "user", &mut ev.user, user),
        "impersonatedUser" => seen.read_into(
            s,
            12,
            "impersonatedUser",
            &mut ev.impersonated_user,
            user,
        ),
        "sourceIPs" => seen.read_into(s, 13, "sourceIPs", &mut ev.source_ips, texts),
        "objectRef" => seen.read_into(s, 14, "objectRef", &mut ev.object_ref, object_ref),
        "responseStatus" => seen.read_into(
            s,
            15,
            "responseStatus",
            &mut ev.response_status,
            response_status,
        ),
        "metadata" => seen.read_into(s, 16, "metadata", &mut ev.metadata, metadata),
        "annotations" => seen.read_into(s, 17, "annotations", &mut ev.annotations, annotations),
        "requestObject" => seen.read(s, 18, "requestObject", &mut ev.request_object, |s| {
            s.skip().map(RawJson)
        }),
    } else skip(s))
    })?;
    s.finish()
}

/// Only the time fields, for merging several files.
pub(super) fn times(input: &str) -> Result<EventTimes<'_>, ScanError> {
    let mut s = Scanner::new(input);
    let mut t = EventTimes::default();
    let mut seen = Seen(0);
    s.object("an audit event", |s, key| {
        by_name!(key, {
        "requestReceivedTimestamp" => seen.read(
            s,
            0,
            "requestReceivedTimestamp",
            &mut t.request_received_timestamp,
            text,
        ),
        "stageTimestamp" => seen.read(s, 1, "stageTimestamp", &mut t.stage_timestamp, text),
        "timestamp" => seen.read(s, 2, "timestamp", &mut t.timestamp, text),
    } else skip(s))
    })?;
    s.finish()?;
    Ok(t)
}
