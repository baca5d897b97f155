//! What a replay produces, and its table and JSON-lines renderings.
//!
//! JSON lines (`-o json`), schema version [`REPORT_SCHEMA_VERSION`]: one
//! `{"type":"event", ...}` line per listed event, written as it is
//! evaluated, then `token`, `subject` and `malformed` lines, and a final
//! `stats` line. The table rendering shows the same, capped for reading.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::{self, Write};

use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use serde::Serialize;

use super::decide::{DriftDirection, Outcome};
use super::event::{Recorded, Text};
use super::input::{Location, Problems};
use super::summary::SubjectSummary;
use super::timeline::TokenTimeline;
use crate::rbac::{Attributes, OwnedAttributes};

/// Version of the JSON-lines report.
pub const REPORT_SCHEMA_VERSION: u32 = 1;
/// Rows of a token's timeline shown in a table.
pub const TABLE_TIMELINE_ROWS: usize = 60;

/// The snapshot's decision, as the engine keeps it.
#[derive(Debug, Clone)]
pub struct Replayed {
    /// What the snapshot's authorizer found (allowed or not, and by
    /// which rule: the reason is formatted from it when shown).
    pub decision: crate::rbac::DecisionParts,
    /// Snapshot index.
    pub snapshot: usize,
}

/// The snapshot's decision, as reported.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplayedOut {
    /// Allowed.
    pub allowed: bool,
    /// The reason the API server would give.
    pub reason: String,
    /// Which snapshot.
    pub snapshot: String,
}

/// One listed event.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventRecord {
    /// Where it is in the input.
    pub location: Location,
    /// Request time as written.
    pub time: String,
    /// `auditID`.
    pub audit_id: String,
    /// Stage.
    pub stage: &'static str,
    /// The user RBAC decides for.
    pub user: String,
    /// The authenticated user, when it impersonated `user`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub impersonated_by: Option<String>,
    /// Verb.
    pub verb: String,
    /// The attributes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attributes: Option<OwnedAttributes>,
    /// `objectRef` or `requestURI`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attributes_from: Option<&'static str>,
    /// Request URI.
    pub request_uri: String,
    /// Source IPs.
    pub source_ips: Vec<String>,
    /// User agent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// Response code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<i64>,
    /// What the cluster recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recorded: Option<Recorded<'static>>,
    /// What the snapshot decides.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replayed: Option<ReplayedOut>,
    /// The comparison.
    pub outcome: Outcome,
    /// Why, unless they agree.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub explanation: String,
    /// The token it was made with (`JTI=...`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Timeline flags.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<&'static str>,
}

impl EventRecord {
    /// `resource[/sub] ns/name`, or the path.
    #[must_use]
    pub fn target(&self) -> String {
        match &self.attributes {
            Some(a) if a.is_resource_request => {
                let mut t = String::new();
                if !a.api_group.is_empty() {
                    t.push_str(&a.api_group);
                    t.push('/');
                }
                t.push_str(&a.resource);
                if !a.subresource.is_empty() {
                    t.push('/');
                    t.push_str(&a.subresource);
                }
                match (a.namespace.as_str(), a.name.as_str()) {
                    ("", "") => {}
                    ("", n) | (n, "") => {
                        t.push(' ');
                        t.push_str(n);
                    }
                    (ns, n) => {
                        t.push(' ');
                        t.push_str(ns);
                        t.push('/');
                        t.push_str(n);
                    }
                }
                t
            }
            Some(a) => a.path.clone(),
            None => self.request_uri.clone(),
        }
    }

    /// `allow`/`forbid`/`-` as recorded.
    #[must_use]
    pub fn recorded_text(&self) -> &'static str {
        match &self.recorded {
            Some(r) if r.allowed => "allow",
            Some(_) => "forbid",
            None => "-",
        }
    }

    /// `allow`/`deny`/`-` from the snapshot.
    #[must_use]
    pub fn replayed_text(&self) -> &'static str {
        match &self.replayed {
            Some(r) if r.allowed => "allow",
            Some(_) => "deny",
            None => "-",
        }
    }
}

/// A listed event as the replay hands it out ([`super::replay`]'s
/// `on_event`): the same fields as [`EventRecord`], borrowed from the
/// event being replayed, so writing it as a JSON line allocates nothing
/// (the full replay lists about one event in five). [`Self::to_record`]
/// keeps it.
#[derive(Debug, Clone, Copy)]
pub struct EventView<'e> {
    /// Where it is in the input.
    pub location: &'e Location,
    /// Request time as written.
    pub time: &'e str,
    /// `auditID`.
    pub audit_id: &'e str,
    /// Stage.
    pub stage: &'static str,
    /// The user RBAC decides for.
    pub user: &'e str,
    /// The authenticated user, when it impersonated `user`.
    pub impersonated_by: Option<&'e str>,
    /// Verb.
    pub verb: &'e str,
    /// The attributes.
    pub attributes: Option<Attributes<'e>>,
    /// `objectRef` or `requestURI`.
    pub attributes_from: Option<&'static str>,
    /// Request URI.
    pub request_uri: &'e str,
    /// Source IPs.
    pub source_ips: SourceIps<'e>,
    /// User agent.
    pub user_agent: Option<&'e str>,
    /// Response code.
    pub code: Option<i64>,
    /// What the cluster recorded.
    pub recorded: Option<&'e Recorded<'e>>,
    /// What the snapshot decides: allowed, reason, snapshot label.
    pub replayed: Option<(bool, &'e str, &'e str)>,
    /// The comparison.
    pub outcome: &'e Outcome,
    /// Why, unless they agree (empty then).
    pub explanation: &'e str,
    /// The token it was made with (`JTI=...`).
    pub token: Option<&'e str>,
    /// Timeline flags.
    pub flags: &'e [&'static str],
}

/// The source addresses of an [`EventView`]: the event's own list, or a
/// kept record's.
#[derive(Debug, Clone, Copy)]
pub enum SourceIps<'e> {
    /// As the event parsed them.
    Event(&'e [Text<'e>]),
    /// As an [`EventRecord`] keeps them.
    Kept(&'e [String]),
}

impl<'e> SourceIps<'e> {
    /// Each address.
    pub fn iter(self) -> impl Iterator<Item = &'e str> {
        let (event, kept) = match self {
            Self::Event(e) => (e, &[][..]),
            Self::Kept(k) => (&[][..], k),
        };
        event
            .iter()
            .map(Text::as_str)
            .chain(kept.iter().map(String::as_str))
    }
}

impl EventView<'_> {
    /// An owned copy.
    #[must_use]
    pub fn to_record(&self) -> EventRecord {
        EventRecord {
            location: self.location.clone(),
            time: self.time.to_owned(),
            audit_id: self.audit_id.to_owned(),
            stage: self.stage,
            user: self.user.to_owned(),
            impersonated_by: self.impersonated_by.map(str::to_owned),
            verb: self.verb.to_owned(),
            attributes: self.attributes.map(OwnedAttributes::from),
            attributes_from: self.attributes_from,
            request_uri: self.request_uri.to_owned(),
            source_ips: self.source_ips.iter().map(str::to_owned).collect(),
            user_agent: self.user_agent.map(str::to_owned),
            code: self.code,
            recorded: self.recorded.map(|r| r.clone().into_owned()),
            replayed: self
                .replayed
                .map(|(allowed, reason, snapshot)| ReplayedOut {
                    allowed,
                    reason: reason.to_owned(),
                    snapshot: snapshot.to_owned(),
                }),
            outcome: self.outcome.clone(),
            explanation: self.explanation.to_owned(),
            token: self.token.map(str::to_owned),
            flags: self.flags.to_vec(),
        }
    }
}

impl EventRecord {
    /// A borrowed view, as the replay hands events out.
    #[must_use]
    pub fn view(&self) -> EventView<'_> {
        EventView {
            location: &self.location,
            time: &self.time,
            audit_id: &self.audit_id,
            stage: self.stage,
            user: &self.user,
            impersonated_by: self.impersonated_by.as_deref(),
            verb: &self.verb,
            attributes: self.attributes.as_ref().map(OwnedAttributes::as_attributes),
            attributes_from: self.attributes_from,
            request_uri: &self.request_uri,
            source_ips: SourceIps::Kept(&self.source_ips),
            user_agent: self.user_agent.as_deref(),
            code: self.code,
            recorded: self.recorded.as_ref(),
            replayed: self
                .replayed
                .as_ref()
                .map(|r| (r.allowed, r.reason.as_str(), r.snapshot.as_str())),
            outcome: &self.outcome,
            explanation: &self.explanation,
            token: self.token.as_deref(),
            flags: &self.flags,
        }
    }
}

/// Lines read per audit file.
#[derive(Debug, Clone, Serialize)]
pub struct FileStats {
    /// Path.
    pub path: String,
    /// Lines.
    pub lines: u64,
}

/// Counts.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// Audit files.
    pub audit_files: Vec<FileStats>,
    /// Trail files.
    pub trail_files: u64,
    /// Trail entries read.
    pub trail_entries: u64,
    /// Tokens read in the trail.
    pub trail_tokens: u64,
    /// Audit events parsed.
    pub events: u64,
    /// Events at a deciding stage.
    pub deciding: u64,
    /// Events at other stages, per stage (counted, not evaluated).
    pub other_stages: BTreeMap<&'static str, u64>,
    /// Deciding events left out by filters.
    pub filtered_out: u64,
    /// Snapshot and cluster agree.
    pub agree: u64,
    /// Drifted decisions.
    pub drift: u64,
    /// Drift per direction.
    pub drift_by_direction: BTreeMap<DriftDirection, u64>,
    /// Outside RBAC, per label.
    pub outside_rbac: BTreeMap<&'static str, u64>,
    /// No recorded decision.
    pub unrecorded: u64,
    /// Attributes undetermined.
    pub undetermined: u64,
    /// No snapshot given.
    pub not_evaluated: u64,
    /// Denied calls.
    pub forbidden: u64,
    /// Calls flagged by the timeline (foreign IP, after a flagged read).
    pub flagged_calls: u64,
    /// Malformed records.
    pub malformed: u64,
    /// Events older than every stored snapshot (decided against the oldest).
    pub events_before_first_snapshot: u64,
    /// Audit-only tokens over the timeline cap.
    pub audit_only_tokens_dropped: u64,
    /// Detections raised (after filters).
    pub detections: u64,
    /// Detections over the cap, counted only.
    pub detections_dropped: u64,
    /// Wall time.
    pub elapsed_secs: f64,
    /// Events per second.
    pub events_per_sec: f64,
}

/// The whole result.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Counts.
    pub stats: Stats,
    /// Snapshots used.
    pub snapshots: Vec<String>,
    /// Token timelines.
    pub tokens: Vec<TokenTimeline>,
    /// Default detections, most severe first.
    pub detections: Vec<super::detect::Detection>,
    /// Subject summaries.
    pub subjects: Vec<SubjectSummary>,
    /// Malformed records.
    pub problems: Problems,
}

/// Keeps listed events for table/HTML output, up to a cap.
#[derive(Debug, Default)]
pub struct EventList {
    /// Kept.
    pub kept: Vec<EventRecord>,
    /// Listed but not kept.
    pub omitted: u64,
    /// The cap.
    pub max: usize,
}

impl EventList {
    /// A list keeping `max` events.
    #[must_use]
    pub fn new(max: usize) -> Self {
        Self {
            kept: Vec::new(),
            omitted: 0,
            max,
        }
    }

    /// Keeps `e` if there is room.
    pub fn push(&mut self, e: &EventView<'_>) {
        if self.kept.len() < self.max {
            self.kept.push(e.to_record());
        } else {
            self.omitted += 1;
        }
    }
}

/// Writes one JSON line `{"type": kind, "schema": 1, ...value}`; `value`
/// must serialize as a JSON object.
///
/// The line is built in a reused buffer and written at once: serde's
/// `flatten` and a write through `dyn Write` per JSON token cost more than
/// the rest of a listed event.
///
/// # Errors
/// Write errors, and `value` not being an object.
pub fn write_json_line<T: Serialize>(
    out: &mut dyn Write,
    kind: &'static str,
    value: &T,
) -> io::Result<()> {
    thread_local! {
        static LINE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    LINE.with_borrow_mut(|line| {
        line.clear();
        line.extend_from_slice(b"{\"type\":");
        serde_json::to_writer(&mut *line, kind)?;
        line.extend_from_slice(b",\"schema\":");
        line.extend_from_slice(itoa::Buffer::new().format(REPORT_SCHEMA_VERSION).as_bytes());
        let body = line.len();
        serde_json::to_writer(&mut *line, value)?;
        // Splice the value's fields in after ours.
        match line.get(body..) {
            Some(b"{}") => {
                line.truncate(body);
                line.push(b'}');
            }
            Some([b'{', ..]) => line[body] = b',',
            _ => {
                return Err(io::Error::other(format!(
                    "a {kind} record is not a JSON object"
                )));
            }
        }
        line.push(b'\n');
        out.write_all(line)
    })
}

/// Writes one listed event as a JSON line, `{"type":"event","schema":N,...}`:
/// the same bytes as [`write_json_line`] with serde (the test
/// `event_lines_match_serde` holds the two together), written by hand
/// because the full replay writes one for every fifth event and serde's
/// field-by-field path was about a seventh of its instructions.
///
/// # Errors
/// Write errors.
pub fn write_event_line(out: &mut dyn Write, e: &EventView<'_>) -> io::Result<()> {
    thread_local! {
        static LINE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    LINE.with_borrow_mut(|line| {
        line.clear();
        e.push_json_line(line);
        out.write_all(line)
    })
}

impl EventView<'_> {
    /// Appends the event's JSON line (newline included) to `line`.
    fn push_json_line(&self, line: &mut Vec<u8>) {
        use super::json::push_escaped;
        // `,"key":"value"` (`key` written with its comma, quotes and colon).
        let text = |line: &mut Vec<u8>, key: &[u8], value: &str| {
            line.extend_from_slice(key);
            push_escaped(line, value);
        };
        // `,"key":123`.
        let number = |line: &mut Vec<u8>, key: &[u8], digits: &str| {
            line.extend_from_slice(key);
            line.extend_from_slice(digits.as_bytes());
        };
        let texts = |line: &mut Vec<u8>, key: &[u8], values: &mut dyn Iterator<Item = &str>| {
            line.extend_from_slice(key);
            line.push(b'[');
            for (i, v) in values.enumerate() {
                if i > 0 {
                    line.push(b',');
                }
                push_escaped(line, v);
            }
            line.push(b']');
        };
        // `,"key":{"allowed":B,"reason":"...","<last>":"..."}`.
        let decision =
            |line: &mut Vec<u8>, key: &[u8], allowed: bool, reason: &str, last: (&[u8], &str)| {
                line.extend_from_slice(key);
                line.extend_from_slice(if allowed {
                    b"{\"allowed\":true"
                } else {
                    b"{\"allowed\":false"
                });
                text(line, b",\"reason\":", reason);
                text(line, last.0, last.1);
                line.push(b'}');
            };
        line.extend_from_slice(b"{\"type\":\"event\",\"schema\":");
        line.extend_from_slice(itoa::Buffer::new().format(REPORT_SCHEMA_VERSION).as_bytes());
        text(line, b",\"location\":{\"file\":", &self.location.file);
        number(
            line,
            b",\"line\":",
            itoa::Buffer::new().format(self.location.line),
        );
        if let Some(item) = self.location.item {
            number(line, b",\"item\":", itoa::Buffer::new().format(item));
        }
        line.push(b'}');
        text(line, b",\"time\":", self.time);
        text(line, b",\"auditId\":", self.audit_id);
        text(line, b",\"stage\":", self.stage);
        text(line, b",\"user\":", self.user);
        if let Some(by) = self.impersonated_by {
            text(line, b",\"impersonatedBy\":", by);
        }
        text(line, b",\"verb\":", self.verb);
        if let Some(a) = &self.attributes {
            text(line, b",\"attributes\":{\"verb\":", a.verb);
            line.extend_from_slice(if a.is_resource_request {
                b",\"isResourceRequest\":true"
            } else {
                b",\"isResourceRequest\":false"
            });
            for (key, value) in [
                (&b",\"namespace\":"[..], a.namespace),
                (b",\"apiGroup\":", a.api_group),
                (b",\"resource\":", a.resource),
                (b",\"subresource\":", a.subresource),
                (b",\"name\":", a.name),
                (b",\"path\":", a.path),
            ] {
                text(line, key, value);
            }
            line.push(b'}');
        }
        if let Some(from) = self.attributes_from {
            text(line, b",\"attributesFrom\":", from);
        }
        text(line, b",\"requestUri\":", self.request_uri);
        texts(line, b",\"sourceIps\":", &mut self.source_ips.iter());
        if let Some(agent) = self.user_agent {
            text(line, b",\"userAgent\":", agent);
        }
        if let Some(code) = self.code {
            number(line, b",\"code\":", itoa::Buffer::new().format(code));
        }
        if let Some(r) = self.recorded {
            decision(
                line,
                b",\"recorded\":",
                r.allowed,
                &r.reason,
                (b",\"from\":", r.from),
            );
        }
        if let Some((allowed, reason, snapshot)) = self.replayed {
            decision(
                line,
                b",\"replayed\":",
                allowed,
                reason,
                (b",\"snapshot\":", snapshot),
            );
        }
        match self.outcome {
            Outcome::Drift { direction } => {
                text(line, b",\"outcome\":{\"kind\":", "drift");
                text(line, b",\"direction\":", direction.as_str());
            }
            Outcome::OutsideRbac { label } => {
                text(line, b",\"outcome\":{\"kind\":", "outside-rbac");
                text(line, b",\"label\":", label);
            }
            other => text(line, b",\"outcome\":{\"kind\":", other.as_str()),
        }
        line.push(b'}');
        if !self.explanation.is_empty() {
            text(line, b",\"explanation\":", self.explanation);
        }
        if let Some(token) = self.token {
            text(line, b",\"token\":", token);
        }
        if !self.flags.is_empty() {
            texts(line, b",\"flags\":", &mut self.flags.iter().copied());
        }
        line.extend_from_slice(b"}\n");
    }
}

/// Writes the end of a JSON-lines report (events were streamed already).
///
/// # Errors
/// Write errors.
pub fn write_json_tail(out: &mut dyn Write, report: &Report) -> io::Result<()> {
    for d in &report.detections {
        write_json_line(out, "detection", d)?;
    }
    for t in &report.tokens {
        write_json_line(out, "token", t)?;
    }
    for s in &report.subjects {
        write_json_line(out, "subject", s)?;
    }
    for m in &report.problems.kept {
        write_json_line(out, "malformed", m)?;
    }
    #[derive(Serialize)]
    struct Tail<'a> {
        #[serde(flatten)]
        stats: &'a Stats,
        snapshots: &'a [String],
    }
    write_json_line(
        out,
        "stats",
        &Tail {
            stats: &report.stats,
            snapshots: &report.snapshots,
        },
    )
}

fn table() -> Table {
    let mut t = Table::new();
    t.load_style(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic);
    t
}

/// One row of a token's merged timeline: reads and calls by time.
#[derive(Debug, Clone)]
pub struct TimelineRow<'a> {
    /// Time.
    pub time: &'a str,
    /// `read`, `use` or `call`.
    pub what: &'static str,
    /// Who/where: process + pod + node, or source IP.
    pub actor: String,
    /// What: the file read or the request.
    pub detail: String,
    /// Flags or findings.
    pub flags: Vec<Cow<'a, str>>,
}

/// A token's reads and calls merged by time.
#[must_use]
pub fn timeline_rows(t: &TokenTimeline) -> Vec<TimelineRow<'_>> {
    let mut rows: Vec<(i64, TimelineRow<'_>)> = Vec::new();
    if let Some(m) = &t.minted {
        let mut detail = format!("minted for {}", m.service_account);
        if let Some(b) = &m.bound_to {
            detail.push_str(&format!(", bound to {b}"));
        }
        if !m.audiences.is_empty() {
            detail.push_str(&format!(", audiences {}", m.audiences.join(", ")));
        }
        if let Some(s) = m.expiration_seconds {
            detail.push_str(&format!(", lifetime {s} s"));
        }
        rows.push((
            super::time::parse_nanos(&m.time).unwrap_or(i64::MIN),
            TimelineRow {
                time: &m.time,
                what: "mint",
                actor: m.by.clone(),
                detail,
                flags: if m.expected_minter {
                    Vec::new()
                } else {
                    vec![Cow::Borrowed("minted-outside-kubelet")]
                },
            },
        ));
    }
    for r in &t.reads {
        let pod = r
            .pod
            .as_deref()
            .map_or_else(|| "host".to_owned(), |p| format!("pod {p}"));
        let exe = r.exe.as_deref().unwrap_or(&r.comm);
        let what = if r.kind == "token-use" { "use" } else { "read" };
        let mut detail = format!("{exe} read the token");
        if what == "use" {
            detail = format!(
                "{exe} connected to the API server from {}",
                r.source_ip.as_deref().unwrap_or("?")
            );
        }
        if r.count > 1 {
            detail.push_str(&format!(" ({} times, last {})", r.count, r.last_time));
        }
        rows.push((
            super::time::parse_nanos(&r.time).unwrap_or(i64::MIN),
            TimelineRow {
                time: &r.time,
                what,
                actor: format!(
                    "{} (pid {}, uid {}) in {pod} on {}",
                    r.comm, r.tgid, r.uid, r.node
                ),
                detail,
                flags: r
                    .findings
                    .iter()
                    .map(|f| Cow::Borrowed(f.as_str()))
                    .collect(),
            },
        ));
    }
    for c in &t.calls {
        let code = c.code.map_or_else(|| "-".to_owned(), |c| c.to_string());
        rows.push((
            super::time::parse_nanos(&c.time).unwrap_or(i64::MIN),
            TimelineRow {
                time: &c.time,
                what: "call",
                actor: c.source_ip.clone().unwrap_or_else(|| "-".to_owned()),
                detail: format!("{} {} -> {code} ({})", c.verb, c.target, c.outcome),
                flags: c.flags.iter().map(|f| Cow::Borrowed(*f)).collect(),
            },
        ));
    }
    // Stable: the mint row stays first among rows of the same instant.
    rows.sort_by_key(|(t, _)| *t);
    rows.into_iter().map(|(_, r)| r).collect()
}

/// Whether a token belongs in the human-readable outputs: read in the
/// trail, or flagged by the replay.
#[must_use]
pub fn token_shown(t: &TokenTimeline) -> bool {
    t.in_trail || !t.findings.is_empty()
}

/// Writes the table rendering.
///
/// # Errors
/// Write errors.
pub fn write_table(out: &mut dyn Write, report: &Report, events: &EventList) -> io::Result<()> {
    let s = &report.stats;
    writeln!(
        out,
        "Replayed {} audit events ({} evaluated, {} at other stages, {} filtered out) and {} trail records ({} tokens) in {:.2} s ({:.0} events/s).",
        s.events,
        s.deciding - s.filtered_out,
        s.other_stages.values().sum::<u64>(),
        s.filtered_out,
        s.trail_entries,
        s.trail_tokens,
        s.elapsed_secs,
        s.events_per_sec
    )?;
    if report.snapshots.is_empty() {
        writeln!(out, "RBAC: no snapshot given; decisions not evaluated.")?;
    } else {
        writeln!(out, "RBAC: {}", report.snapshots.join("; "))?;
    }
    let outside: u64 = s.outside_rbac.values().sum();
    writeln!(
        out,
        "Decisions: {} agree, {} drift, {} outside RBAC, {} unrecorded, {} undetermined; {} forbidden calls, {} flagged calls, {} malformed records.",
        s.agree,
        s.drift,
        outside,
        s.unrecorded,
        s.undetermined,
        s.forbidden,
        s.flagged_calls,
        s.malformed
    )?;
    if s.events_before_first_snapshot > 0 {
        writeln!(
            out,
            "Note: {} events predate every stored snapshot and were decided against the oldest.",
            s.events_before_first_snapshot
        )?;
    }

    if !report.detections.is_empty() {
        writeln!(out, "\nDETECTIONS")?;
        let mut tab = table();
        tab.set_header([
            "severity", "kind", "subject", "what", "events", "first", "input",
        ]);
        for d in &report.detections {
            tab.add_row([
                d.severity.to_owned(),
                d.kind.to_owned(),
                d.subject.clone(),
                d.message.clone(),
                d.count.to_string(),
                d.first_time.clone(),
                d.location.to_string(),
            ]);
        }
        writeln!(out, "{tab}")?;
    }

    let shown: Vec<&TokenTimeline> = report.tokens.iter().filter(|t| token_shown(t)).collect();
    if !shown.is_empty() {
        writeln!(out, "\nTOKEN TIMELINES")?;
    }
    for t in &shown {
        writeln!(out)?;
        let pod = t.bound_pod.as_ref().map_or_else(
            || "-".to_owned(),
            |p| {
                let name = match (&p.namespace, &p.name) {
                    (Some(ns), Some(n)) => format!("{ns}/{n}"),
                    (None, Some(n)) => n.clone(),
                    _ => String::new(),
                };
                format!("{name} (uid {})", p.uid)
            },
        );
        writeln!(
            out,
            "Token {}  subject {}  bound pod {}  node {}  {} reads, {} calls{}",
            t.label(),
            t.subject.as_deref().unwrap_or("-"),
            pod,
            t.node_name.as_deref().unwrap_or("-"),
            t.reads_total,
            t.calls_total,
            if t.in_trail {
                ""
            } else {
                "  (not in the trail)"
            }
        )?;
        for f in &t.findings {
            writeln!(out, "  [{}] {}: {}", f.severity, f.kind, f.message)?;
        }
        let mut tab = table();
        tab.set_header(["time", "what", "who / from", "detail", "flags"]);
        let rows = timeline_rows(t);
        let n = rows.len();
        for r in rows.into_iter().take(TABLE_TIMELINE_ROWS) {
            tab.add_row([
                r.time.to_owned(),
                r.what.to_owned(),
                r.actor,
                r.detail,
                r.flags.join(", "),
            ]);
        }
        writeln!(out, "{tab}")?;
        if n > TABLE_TIMELINE_ROWS {
            writeln!(
                out,
                "  ... {} more rows (-o json has them all)",
                n - TABLE_TIMELINE_ROWS
            )?;
        }
    }
    let hidden = report.tokens.len() - shown.len();
    if hidden > 0 {
        writeln!(
            out,
            "\n{hidden} more tokens seen only in the audit log, unflagged (-o json lists them)."
        )?;
    }

    if !events.kept.is_empty() {
        writeln!(out, "\nEVENTS")?;
        let mut tab = table();
        tab.set_header([
            "time", "user", "verb", "target", "code", "cluster", "snapshot", "outcome", "flags",
            "why",
        ]);
        for e in &events.kept {
            let user = match &e.impersonated_by {
                Some(by) => format!("{} (as by {by})", e.user),
                None => e.user.clone(),
            };
            tab.add_row([
                e.time.clone(),
                user,
                e.verb.clone(),
                e.target(),
                e.code.map_or_else(|| "-".to_owned(), |c| c.to_string()),
                e.recorded_text().to_owned(),
                e.replayed_text().to_owned(),
                e.outcome.as_str().to_owned(),
                e.flags.join(", "),
                e.explanation.clone(),
            ]);
        }
        writeln!(out, "{tab}")?;
        if events.omitted > 0 {
            writeln!(
                out,
                "... {} more events (raise --max-rows, or use -o json)",
                events.omitted
            )?;
        }
    }

    if !report.subjects.is_empty() {
        writeln!(out, "\nSUBJECTS")?;
        let mut tab = table();
        tab.set_header([
            "subject",
            "calls",
            "denied",
            "drift",
            "top verbs/resources",
            "dangerous used",
            "hints",
        ]);
        for sub in &report.subjects {
            let mut top: Vec<(&String, &u64)> = sub.by_verb_resource.iter().collect();
            top.sort_by(|a, b| b.1.cmp(a.1));
            let top: Vec<String> = top
                .iter()
                .take(4)
                .map(|(k, v)| format!("{k} x{v}"))
                .collect();
            let used: Vec<String> = sub.used.iter().map(|(k, v)| format!("{k} x{v}")).collect();
            tab.add_row([
                sub.user.clone(),
                sub.calls.to_string(),
                sub.denied.to_string(),
                sub.drift.to_string(),
                top.join("\n"),
                used.join("\n"),
                sub.hints.join("\n"),
            ]);
        }
        writeln!(out, "{tab}")?;
    }

    if report.problems.count > 0 {
        writeln!(
            out,
            "\nMALFORMED INPUT ({} records skipped)",
            report.problems.count
        )?;
        for m in &report.problems.kept {
            writeln!(out, "  {}: {}", m.location, m.error)?;
        }
        if report.problems.count > report.problems.kept.len() as u64 {
            writeln!(
                out,
                "  ... {} more",
                report.problems.count - report.problems.kept.len() as u64
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_carry_type_and_schema_before_the_fields() {
        #[derive(Serialize)]
        struct Empty {}
        let mut out = Vec::new();
        write_json_line(
            &mut out,
            "subject",
            &serde_json::json!({"user": "é\"x", "n": 1}),
        )
        .unwrap();
        write_json_line(&mut out, "stats", &Empty {}).unwrap();
        let err = write_json_line(&mut out, "token", &[1, 2]).unwrap_err();
        assert!(
            err.to_string()
                .contains("token record is not a JSON object"),
            "{err}"
        );
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                r#"{"type":"subject","schema":1,"n":1,"user":"é\"x"}"#,
                r#"{"type":"stats","schema":1}"#,
            ]
        );
        for line in lines {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["schema"], REPORT_SCHEMA_VERSION);
        }
    }

    /// Strings that cross the escaper's 8-byte words at every offset, with
    /// every byte class serde_json treats apart.
    fn hostile(seed: u64) -> String {
        const PIECES: [&str; 14] = [
            "a",
            "ns-1",
            "\"",
            "\\",
            "\n",
            "\r",
            "\t",
            "\u{8}",
            "\u{c}",
            "\u{1}",
            "\u{1f}",
            "\u{7f}",
            "é",
            "日本語 €",
        ];
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let len = usize::try_from(x % 23).unwrap();
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                PIECES[usize::try_from(x % 14).unwrap()]
            })
            .collect()
    }

    fn record(seed: u64) -> EventRecord {
        let t = |k: u64| hostile(seed * 31 + k);
        let some = |k: u64| !seed.is_multiple_of(k);
        let outcomes = [
            Outcome::Agree,
            Outcome::Drift {
                direction: DriftDirection::AllowedLiveDeniedSnapshot,
            },
            Outcome::Drift {
                direction: DriftDirection::DeniedLiveAllowedSnapshot,
            },
            Outcome::OutsideRbac {
                label: "system:masters",
            },
            Outcome::Unrecorded,
            Outcome::Undetermined,
            Outcome::NotEvaluated,
        ];
        EventRecord {
            location: Location {
                file: t(1).into(),
                line: seed * 7919,
                item: some(3).then_some(seed),
            },
            time: t(2),
            audit_id: t(3),
            stage: ["ResponseComplete", "Panic", "ResponseStarted"][(seed % 3) as usize],
            user: t(4),
            impersonated_by: some(4).then(|| t(5)),
            verb: t(6),
            attributes: some(5).then(|| OwnedAttributes {
                verb: t(7),
                is_resource_request: seed.is_multiple_of(2),
                namespace: t(8),
                api_group: t(9),
                resource: t(10),
                subresource: t(11),
                name: t(12),
                path: t(13),
            }),
            attributes_from: some(6).then_some("objectRef"),
            request_uri: t(14),
            source_ips: (0..seed % 4).map(|k| t(15 + k)).collect(),
            user_agent: some(7).then(|| t(20)),
            code: some(8).then_some(i64::try_from(seed).unwrap() * 37 - 500),
            recorded: some(9).then(|| Recorded {
                allowed: seed % 2 == 1,
                reason: Cow::Owned(t(21)),
                from: "annotation",
            }),
            replayed: some(10).then(|| ReplayedOut {
                allowed: seed % 3 == 1,
                reason: t(22),
                snapshot: t(23),
            }),
            outcome: outcomes[(seed % 7) as usize].clone(),
            explanation: t(24),
            token: some(11).then(|| t(25)),
            flags: ["forbidden", "foreign-ip", "claimed-address", "é\""][..(seed % 5) as usize]
                .to_vec(),
        }
    }

    #[test]
    fn event_lines_match_serde() {
        let mut by_hand = Vec::new();
        let mut by_serde = Vec::new();
        for seed in 0..3_000 {
            let e = record(seed);
            by_hand.clear();
            by_serde.clear();
            write_event_line(&mut by_hand, &e.view()).unwrap();
            write_json_line(&mut by_serde, "event", &e).unwrap();
            // The view keeps every field.
            let kept = serde_json::to_value(e.view().to_record()).unwrap();
            assert_eq!(kept, serde_json::to_value(&e).unwrap(), "seed {seed}");
            assert_eq!(
                String::from_utf8_lossy(&by_hand),
                String::from_utf8_lossy(&by_serde),
                "seed {seed}"
            );
        }
    }

    #[test]
    fn drift_directions_are_named_as_serde_names_them() {
        for d in [
            DriftDirection::AllowedLiveDeniedSnapshot,
            DriftDirection::DeniedLiveAllowedSnapshot,
        ] {
            assert_eq!(serde_json::to_value(d).unwrap(), d.as_str());
        }
    }
}
