//! [`AuditEvent`] read by hand with the [`Scanner`]: the same result as
//! the serde derive ([`AuditEvent::parse_reference`]) for every input
//! that one accepts as an object (the `audit_event` fuzz target checks
//! both ways), in about a third of the instructions.
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

/// The members of one object seen so far, to refuse duplicates.
struct Seen(u32);

impl Seen {
    /// Marks member `bit` (named `name`) as seen; an error the second time.
    #[inline(always)]
    fn first(&mut self, s: &Scanner<'_>, bit: u32, name: &'static str) -> Result<(), ScanError> {
        let mask = 1 << bit;
        if self.0 & mask != 0 {
            return Err(s.error(format!("duplicate field `{name}`")));
        }
        self.0 |= mask;
        Ok(())
    }
}

/// Reads a member's value with `read` unless it is `null`.
#[inline(always)]
fn optional<'a, T>(
    s: &mut Scanner<'a>,
    read: impl FnOnce(&mut Scanner<'a>) -> Result<T, ScanError>,
) -> Result<Option<T>, ScanError> {
    if s.null()? {
        Ok(None)
    } else {
        read(s).map(Some)
    }
}

#[inline(always)]
fn text<'a>(s: &mut Scanner<'a>) -> Result<Text<'a>, ScanError> {
    s.string_text().map(Text)
}

fn texts<'a>(s: &mut Scanner<'a>) -> Result<Texts<'a>, ScanError> {
    let mut out = Texts::default();
    s.array("a list of strings", |s| {
        out.push(text(s)?);
        Ok(())
    })?;
    Ok(out)
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
        } else {
            s.skip()?;
        }
        Ok(())
    })?;
    Ok(FirstText(first))
}

fn user<'a>(s: &mut Scanner<'a>) -> Result<EventUser<'a>, ScanError> {
    let mut user = EventUser::default();
    let mut seen = Seen(0);
    s.object("user", |s, key| {
        match key {
            "username" => {
                seen.first(s, 0, "username")?;
                user.username = optional(s, text)?;
            }
            "uid" => {
                seen.first(s, 1, "uid")?;
                user.uid = optional(s, text)?;
            }
            "groups" => {
                seen.first(s, 2, "groups")?;
                user.groups = optional(s, texts)?;
            }
            "extra" => {
                seen.first(s, 3, "extra")?;
                user.extra = optional(s, extra)?;
            }
            _ => {
                s.skip()?;
            }
        }
        Ok(())
    })?;
    Ok(user)
}

fn extra<'a>(s: &mut Scanner<'a>) -> Result<UserExtra<'a>, ScanError> {
    let mut extra = UserExtra::default();
    let mut seen = Seen(0);
    s.object("user.extra", |s, key| {
        let (bit, name, slot) = match key {
            "authentication.kubernetes.io/credential-id" => (
                0,
                "authentication.kubernetes.io/credential-id",
                &mut extra.credential_id,
            ),
            "authentication.kubernetes.io/pod-name" => (
                1,
                "authentication.kubernetes.io/pod-name",
                &mut extra.pod_name,
            ),
            "authentication.kubernetes.io/pod-uid" => (
                2,
                "authentication.kubernetes.io/pod-uid",
                &mut extra.pod_uid,
            ),
            "authentication.kubernetes.io/node-name" => (
                3,
                "authentication.kubernetes.io/node-name",
                &mut extra.node_name,
            ),
            _ => {
                s.skip()?;
                return Ok(());
            }
        };
        seen.first(s, bit, name)?;
        *slot = optional(s, first_text)?;
        Ok(())
    })?;
    Ok(extra)
}

fn object_ref<'a>(s: &mut Scanner<'a>) -> Result<ObjectRef<'a>, ScanError> {
    let mut object = ObjectRef::default();
    let mut seen = Seen(0);
    s.object("objectRef", |s, key| {
        let (bit, name, slot) = match key {
            "resource" => (0, "resource", &mut object.resource),
            "namespace" => (1, "namespace", &mut object.namespace),
            "name" => (2, "name", &mut object.name),
            "apiGroup" => (3, "apiGroup", &mut object.api_group),
            "apiVersion" => (4, "apiVersion", &mut object.api_version),
            "subresource" => (5, "subresource", &mut object.subresource),
            _ => {
                s.skip()?;
                return Ok(());
            }
        };
        seen.first(s, bit, name)?;
        *slot = optional(s, text)?;
        Ok(())
    })?;
    Ok(object)
}

fn response_status<'a>(s: &mut Scanner<'a>) -> Result<ResponseStatus<'a>, ScanError> {
    let mut status = ResponseStatus::default();
    let mut seen = Seen(0);
    s.object("responseStatus", |s, key| {
        match key {
            "code" => {
                seen.first(s, 0, "code")?;
                status.code = optional(s, Scanner::i64)?;
            }
            "status" => {
                seen.first(s, 1, "status")?;
                status.status = optional(s, text)?;
            }
            "reason" => {
                seen.first(s, 2, "reason")?;
                status.reason = optional(s, text)?;
            }
            "message" => {
                seen.first(s, 3, "message")?;
                status.message = optional(s, |s| s.string_raw().map(RawText))?;
            }
            _ => {
                s.skip()?;
            }
        }
        Ok(())
    })?;
    Ok(status)
}

fn annotations<'a>(s: &mut Scanner<'a>) -> Result<Annotations<'a>, ScanError> {
    let mut ann = Annotations::default();
    let mut seen = Seen(0);
    s.object("annotations", |s, key| {
        let (bit, name, slot) = match key {
            "authorization.k8s.io/decision" => {
                (0, "authorization.k8s.io/decision", &mut ann.decision)
            }
            "authorization.k8s.io/reason" => {
                seen.first(s, 1, "authorization.k8s.io/reason")?;
                ann.reason = optional(s, |s| s.string_raw().map(RawText))?;
                return Ok(());
            }
            "authentication.k8s.io/legacy-token" => (
                2,
                "authentication.k8s.io/legacy-token",
                &mut ann.legacy_token,
            ),
            "authentication.k8s.io/legacy-token-manual-secret" => (
                3,
                "authentication.k8s.io/legacy-token-manual-secret",
                &mut ann.legacy_token_manual_secret,
            ),
            "authentication.k8s.io/legacy-token-autogenerated-secret" => (
                4,
                "authentication.k8s.io/legacy-token-autogenerated-secret",
                &mut ann.legacy_token_autogenerated_secret,
            ),
            "authentication.k8s.io/stale-token" => {
                (5, "authentication.k8s.io/stale-token", &mut ann.stale_token)
            }
            "authentication.kubernetes.io/issued-credential-id" => (
                6,
                "authentication.kubernetes.io/issued-credential-id",
                &mut ann.issued_credential_id,
            ),
            _ => {
                s.skip()?;
                return Ok(());
            }
        };
        seen.first(s, bit, name)?;
        *slot = optional(s, text)?;
        Ok(())
    })?;
    Ok(ann)
}

fn metadata<'a>(s: &mut Scanner<'a>) -> Result<EventMetadata<'a>, ScanError> {
    let mut meta = EventMetadata::default();
    let mut seen = Seen(0);
    s.object("metadata", |s, key| {
        if key == "creationTimestamp" {
            seen.first(s, 0, "creationTimestamp")?;
            meta.creation_timestamp = optional(s, text)?;
        } else {
            s.skip()?;
        }
        Ok(())
    })?;
    Ok(meta)
}

/// Reads one event: the whole document, nothing after it.
pub(super) fn event<'a>(text_in: &'a str) -> Result<AuditEvent<'a>, ScanError> {
    let mut s = Scanner::new(text_in);
    let mut ev = AuditEvent::default();
    let mut seen = Seen(0);
    s.object("an audit event", |s, key| {
        // Members holding one string, by far the most.
        let (bit, name, slot): (u32, &'static str, &mut Option<Text<'a>>) = match key {
            "kind" => (0, "kind", &mut ev.kind),
            "apiVersion" => (1, "apiVersion", &mut ev.api_version),
            "level" => (2, "level", &mut ev.level),
            "auditID" => (3, "auditID", &mut ev.audit_id),
            "stage" => (4, "stage", &mut ev.stage),
            "requestURI" => (5, "requestURI", &mut ev.request_uri),
            "verb" => (6, "verb", &mut ev.verb),
            "userAgent" => (7, "userAgent", &mut ev.user_agent),
            "requestReceivedTimestamp" => (
                8,
                "requestReceivedTimestamp",
                &mut ev.request_received_timestamp,
            ),
            "stageTimestamp" => (9, "stageTimestamp", &mut ev.stage_timestamp),
            "timestamp" => (10, "timestamp", &mut ev.timestamp),
            "user" => {
                seen.first(s, 11, "user")?;
                ev.user = optional(s, user)?;
                return Ok(());
            }
            "impersonatedUser" => {
                seen.first(s, 12, "impersonatedUser")?;
                ev.impersonated_user = optional(s, user)?;
                return Ok(());
            }
            "sourceIPs" => {
                seen.first(s, 13, "sourceIPs")?;
                ev.source_ips = optional(s, texts)?;
                return Ok(());
            }
            "objectRef" => {
                seen.first(s, 14, "objectRef")?;
                ev.object_ref = optional(s, object_ref)?;
                return Ok(());
            }
            "responseStatus" => {
                seen.first(s, 15, "responseStatus")?;
                ev.response_status = optional(s, response_status)?;
                return Ok(());
            }
            "metadata" => {
                seen.first(s, 16, "metadata")?;
                ev.metadata = optional(s, metadata)?;
                return Ok(());
            }
            "annotations" => {
                seen.first(s, 17, "annotations")?;
                ev.annotations = optional(s, annotations)?;
                return Ok(());
            }
            "requestObject" => {
                seen.first(s, 18, "requestObject")?;
                ev.request_object = optional(s, |s| s.skip().map(RawJson))?;
                return Ok(());
            }
            _ => {
                s.skip()?;
                return Ok(());
            }
        };
        seen.first(s, bit, name)?;
        *slot = optional(s, text)?;
        Ok(())
    })?;
    s.finish()?;
    Ok(ev)
}

/// Only the time fields, for merging several files.
pub(super) fn times(text_in: &str) -> Result<EventTimes<'_>, ScanError> {
    let mut s = Scanner::new(text_in);
    let mut times = EventTimes::default();
    let mut seen = Seen(0);
    s.object("an audit event", |s, key| {
        let (bit, name, slot) = match key {
            "requestReceivedTimestamp" => (
                0,
                "requestReceivedTimestamp",
                &mut times.request_received_timestamp,
            ),
            "stageTimestamp" => (1, "stageTimestamp", &mut times.stage_timestamp),
            "timestamp" => (2, "timestamp", &mut times.timestamp),
            _ => {
                s.skip()?;
                return Ok(());
            }
        };
        seen.first(s, bit, name)?;
        *slot = optional(s, text)?;
        Ok(())
    })?;
    s.finish()?;
    Ok(times)
}
