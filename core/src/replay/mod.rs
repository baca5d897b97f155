//! Offline replay for incident review: tokenwatch trails and kube-apiserver
//! audit logs re-evaluated against the RBAC snapshots in force at the time.
//!
//! Data flow, in the order [`replay`] runs it:
//!
//! 1. `input`: every file opened (plain or gzip) and split into JSON records
//!    (JSON lines, `EventList`, arrays), in constant memory; malformed
//!    records are counted with file and line, and the replay goes on.
//! 2. `timeline`: trail records (export lines or bare entries) of every
//!    node, folded per token: readers, the bound pod's addresses, the first
//!    flagged read.
//! 3. `event` + `attributes`: each audit event parsed (borrowing from its
//!    line) and its authorization attributes taken from `verb` +
//!    `objectRef`, or from `requestURI` parsed like the API server does.
//!    Several files are merged by `requestReceivedTimestamp`; only
//!    `ResponseComplete`/`Panic` (or stage-less) events are evaluated, the
//!    other stages are counted.
//! 4. `decide`: the RBAC decision and reason from the snapshot in force,
//!    compared with `authorization.k8s.io/decision`: agree, drift (both
//!    reasons), or outside RBAC.
//! 5. `timeline` again: the call joined to its token (JTI, else subject +
//!    bound pod + time window) and flagged (foreign IP, after a flagged
//!    read, forbidden).
//! 6. `summary`: per subject, calls by verb/resource, denials, dangerous
//!    permissions used vs. held.
//! 7. `report` and `html`: table, JSON lines, one self-contained HTML page.
//!
//! State grows with the number of subjects and tokens, not events: lists
//! kept for display are capped and their counts stay exact.
//!
//! No input stops a replay: `clippy::string_slice` is denied in every
//! module here (text is cut with `get`, `split_once` or on bytes).

#![deny(clippy::string_slice)]

pub mod attributes;
pub mod decide;
pub mod detect;
pub mod event;
pub mod html;
pub mod input;
pub mod json;
pub mod report;
pub mod roles;
pub mod summary;
pub use crate::time;
pub mod timeline;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use self::attributes::attributes;
use self::decide::BoxError;
use self::decide::{Outcome, Policy};
use self::event::{AuditEvent, EventTimes};
use self::input::{InputError, Location, Problems, RecordSource};
use self::report::{EventView, Replayed, Report, Stats};
use self::summary::{SubjectCall, Subjects};
use self::timeline::{CallFacts, TokenIndex};
use crate::correlate::TrailEntry;
use crate::rbac::UserInfo;

/// Errors that stop a replay (malformed records do not: they are counted).
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// An input file could not be opened.
    #[error("cannot read an input")]
    OpenInput {
        /// The input error.
        #[source]
        source: InputError,
    },
    /// An RBAC snapshot could not be loaded.
    #[error("cannot load the RBAC snapshot")]
    LoadSnapshot {
        /// The snapshot store's error.
        #[source]
        source: BoxError,
    },
    /// Nothing to replay.
    #[error("nothing to replay: give --audit and/or --trail inputs")]
    FindInputs,
    /// A trail data directory could not be read.
    #[error("cannot read the trail in {path}")]
    ReadTrail {
        /// The data directory.
        path: String,
        /// The trail store's error.
        #[source]
        source: BoxError,
    },
}

/// Which events to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Only {
    /// Decisions that drifted.
    Drift,
    /// Calls the timeline flagged (foreign IP, after a flagged read).
    Findings,
    /// Denied calls.
    Forbidden,
}

/// Which events and tokens to consider.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    /// The user (effective or authenticated) is this.
    pub subject: Option<String>,
    /// The credential is this JTI.
    pub jti: Option<String>,
    /// The request's namespace, or the ServiceAccount's, is this.
    pub namespace: Option<String>,
    /// At or after (ns).
    pub since: Option<i64>,
    /// At or before (ns).
    pub until: Option<i64>,
}

/// Reads the trail kept in a data directory (the host's sled store
/// implements it: `tokenwatch_host::trail::DataDirTrails`).
pub trait TrailDirs: std::fmt::Debug {
    /// Calls `add` with every entry of the trail in `dir` whose subject and
    /// JTI match `filters` (when set).
    ///
    /// # Errors
    /// The store's, boxed.
    fn read(
        &self,
        dir: &std::path::Path,
        filters: &Filters,
        add: &mut dyn FnMut(&TrailEntry),
    ) -> Result<(), BoxError>;
}

/// What to replay.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Trail export files (JSON lines, plain or gzip), or data directories
    /// (read through [`Options::trail_dirs`]).
    pub trails: Vec<PathBuf>,
    /// How data directories among [`Options::trails`] are read; without
    /// it a directory is an error.
    pub trail_dirs: Option<Arc<dyn TrailDirs>>,
    /// Audit logs.
    pub audits: Vec<PathBuf>,
    /// Filters.
    pub filters: Filters,
    /// Which events to list (`None`: drift, findings and forbidden).
    pub only: Option<Only>,
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// Settings of the default detections.
    pub detect: detect::DetectConfig,
    /// Keep each ServiceAccount's distinct allowed calls, for
    /// [`roles::suggest_roles`].
    pub collect_calls: bool,
}

/// How often (in records) the progress bar is updated.
const PROGRESS_EVERY: u64 = 16_384;

struct Source {
    name: String,
    records: RecordSource,
    has: bool,
    time: i64,
}

impl Source {
    fn advance(&mut self, problems: &mut Problems, merging: bool) {
        self.has = self.records.advance(problems);
        if self.has && merging {
            let (_, bytes) = self.records.record();
            self.time = EventTimes::parse(bytes).map_or(i64::MIN, |t| t.nanos());
        }
    }
}

/// Replays `options` against `policy`; `on_event` gets every listed event
/// as it is evaluated (so JSON output streams).
///
/// # Errors
/// [`ReplayError`] when an input cannot be opened or a snapshot loaded;
/// malformed records are reported in [`Report::problems`] instead.
pub fn replay(
    options: &Options,
    policy: &mut Policy,
    on_event: &mut dyn FnMut(&EventView<'_>),
) -> Result<Report, ReplayError> {
    if options.trails.is_empty() && options.audits.is_empty() {
        return Err(ReplayError::FindInputs);
    }
    let started = Instant::now();
    let mut index = TokenIndex::new();
    let mut problems = Problems::default();
    let mut stats = Stats::default();
    for path in &options.trails {
        if path.is_dir() {
            let dirs = options
                .trail_dirs
                .as_ref()
                .ok_or_else(|| ReplayError::ReadTrail {
                    path: path.display().to_string(),
                    source: "a trail data directory needs the trail store (use the tokenwatch CLI)"
                        .into(),
                })?;
            dirs.read(path, &options.filters, &mut |entry| index.add_entry(entry))
                .map_err(|source| ReplayError::ReadTrail {
                    path: path.display().to_string(),
                    source,
                })?;
        } else {
            let opened = input::open(path).map_err(|source| ReplayError::OpenInput { source })?;
            let mut reader = opened.reader;
            index.read_trail(&path.display().to_string(), &mut *reader, &mut problems);
        }
        stats.trail_files += 1;
    }
    stats.trail_entries = index.trail_entries;
    let mut engine = Engine {
        policy,
        index,
        subjects: Subjects::collecting(options.collect_calls),
        stats,
        problems,
        filters: &options.filters,
        only: options.only,
        user: UserInfo::default(),
        target: String::new(),
        reason: String::new(),
        token_label: String::new(),
        flags: Vec::new(),
        detector: detect::Detector::new(options.detect.clone()),
        on_event,
    };

    let mut sources = Vec::new();
    let mut counters: Vec<Arc<AtomicU64>> = Vec::new();
    let mut total_bytes = 0u64;
    for path in &options.audits {
        let opened = input::open(path).map_err(|source| ReplayError::OpenInput { source })?;
        total_bytes += opened.size.unwrap_or(0);
        counters.push(Arc::clone(&opened.bytes_read));
        let name = path.display().to_string();
        sources.push(Source {
            records: RecordSource::new(name.clone(), opened.reader),
            name,
            has: false,
            time: i64::MIN,
        });
    }
    let progress = progress_bar(options.progress, total_bytes);
    let merging = sources.len() > 1;
    for s in &mut sources {
        s.advance(&mut engine.problems, merging);
    }
    let mut records = 0u64;
    loop {
        let pick = if merging {
            sources
                .iter()
                .enumerate()
                .filter(|(_, s)| s.has)
                .min_by_key(|(_, s)| s.time)
                .map(|(i, _)| i)
        } else {
            sources.first().filter(|s| s.has).map(|_| 0)
        };
        let Some(i) = pick else { break };
        let source = &mut sources[i];
        let expand = {
            let (location, bytes) = source.records.record();
            engine
                .process(location, bytes)
                .map_err(|source| ReplayError::LoadSnapshot { source })?
        };
        if expand {
            source.records.expand_list(&mut engine.problems);
        }
        source.advance(&mut engine.problems, merging);
        records += 1;
        if records.is_multiple_of(PROGRESS_EVERY) {
            let read: u64 = counters.iter().map(|c| c.load(Ordering::Relaxed)).sum();
            progress.set_position(read);
            let secs = started.elapsed().as_secs_f64().max(1e-9);
            progress.set_message(format!(
                "{} events, {:.0} events/s",
                engine.stats.events,
                engine.stats.events as f64 / secs
            ));
        }
    }
    progress.finish_and_clear();
    for s in &sources {
        engine.stats.audit_files.push(report::FileStats {
            path: s.name.clone(),
            lines: s.records.lines_read(),
        });
    }
    let Engine {
        policy,
        index,
        subjects,
        mut stats,
        problems,
        detector,
        ..
    } = engine;
    let (mut detections, dropped) = detector.finish();
    stats.detections_dropped = dropped;
    stats.audit_only_tokens_dropped = index.audit_only_dropped;
    stats.trail_tokens = index.trail_tokens() as u64;
    stats.malformed = problems.count;
    stats.events_before_first_snapshot = policy.events_before_first();
    let elapsed = started.elapsed();
    stats.elapsed_secs = elapsed.as_secs_f64();
    stats.events_per_sec = if elapsed > Duration::ZERO {
        stats.events as f64 / elapsed.as_secs_f64()
    } else {
        0.0
    };
    let snapshots = policy.used_labels();
    let snapshot_of = |i: usize| policy.get(i).map(|s| Arc::clone(s.authorizer.snapshot()));
    let subjects = subjects.finish(&snapshot_of);
    let mut tokens = index.finish();
    if let Some(j) = &options.filters.jti {
        tokens.retain(|t| t.jti.as_deref() == Some(j.as_str()));
    }
    if let Some(s) = &options.filters.subject {
        tokens.retain(|t| t.subject.as_deref() == Some(s.as_str()));
        detections.retain(|d| d.subject == *s);
    }
    stats.detections = detections.len() as u64;
    Ok(Report {
        stats,
        snapshots,
        tokens,
        detections,
        subjects,
        problems,
    })
}

fn progress_bar(enabled: bool, total: u64) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:30} {bytes}/{total_bytes} {msg}",
    ) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

struct Engine<'o> {
    policy: &'o mut Policy,
    index: TokenIndex,
    subjects: Subjects,
    stats: Stats,
    problems: Problems,
    filters: &'o Filters,
    only: Option<Only>,
    /// Reused for every event (no allocation once warmed up).
    user: UserInfo,
    /// Reused for the call's target text.
    target: String,
    /// Reused for a listed event's replayed reason and token label.
    reason: String,
    token_label: String,
    /// Reused for an event's flags.
    flags: Vec<&'static str>,
    detector: detect::Detector,
    on_event: &'o mut dyn FnMut(&EventView<'_>),
}

fn fill_user(user: &mut UserInfo, name: &str, groups: impl Iterator<Item = impl AsRef<str>>) {
    user.name.clear();
    user.name.push_str(name);
    let mut n = 0;
    for g in groups {
        if n < user.groups.len() {
            user.groups[n].clear();
            user.groups[n].push_str(g.as_ref());
        } else {
            user.groups.push(g.as_ref().to_owned());
        }
        n += 1;
    }
    user.groups.truncate(n);
}

/// Writes `resource[/sub] ns/name` (or the path) into `t`.
fn target_into(a: &crate::rbac::Attributes<'_>, t: &mut String) {
    t.clear();
    if !a.is_resource_request {
        t.push_str(a.path);
        return;
    }
    if !a.api_group.is_empty() {
        t.push_str(a.api_group);
        t.push('/');
    }
    t.push_str(a.resource);
    if !a.subresource.is_empty() {
        t.push('/');
        t.push_str(a.subresource);
    }
    if !a.namespace.is_empty() || !a.name.is_empty() {
        t.push(' ');
        t.push_str(a.namespace);
        if !a.name.is_empty() {
            if !a.namespace.is_empty() {
                t.push('/');
            }
            t.push_str(a.name);
        }
    }
}

impl Engine<'_> {
    /// A `create serviceaccounts/token` that names the JTI it issued.
    fn record_mint(&mut self, ev: &AuditEvent<'_>, jti: &str, location: &Location) {
        let by = ev.user.as_ref().map_or("", |u| u.name());
        let o = ev.object_ref.as_ref();
        let text = |t: Option<&event::Text<'_>>| t.map_or("", event::Text::as_str).to_owned();
        let service_account = format!(
            "{}/{}",
            text(o.and_then(|o| o.namespace.as_ref())),
            text(o.and_then(|o| o.name.as_ref()))
        );
        let spec = ev.token_request().and_then(|r| r.spec);
        let bound_to = spec
            .as_ref()
            .and_then(|s| s.bound_object_ref.as_ref())
            .map(|b| {
                let ns = text(o.and_then(|o| o.namespace.as_ref()));
                let mut out = format!("{} {ns}/{}", text(b.kind.as_ref()), text(b.name.as_ref()));
                if let Some(uid) = b.uid.as_ref() {
                    out.push_str(&format!(" (uid {})", uid.as_str()));
                }
                out
            });
        let minting = timeline::Minting {
            time: ev.time_text().to_owned(),
            by: by.to_owned(),
            service_account,
            bound_to,
            audiences: spec
                .as_ref()
                .and_then(|s| s.audiences.as_ref())
                .map(|a| a.iter().map(|t| t.as_str().to_owned()).collect())
                .unwrap_or_default(),
            expiration_seconds: spec.as_ref().and_then(|s| s.expiration_seconds),
            expected_minter: self.detector.config().mint_allowed(by),
            location: location.clone(),
        };
        self.index.record_mint(jti, minting);
    }

    /// Evaluates one record; true when it is an `EventList` to expand.
    fn process(&mut self, location: &Location, bytes: &[u8]) -> Result<bool, BoxError> {
        let mut ev = AuditEvent::default();
        if let Err(e) = ev.read_from(bytes) {
            self.problems
                .record(location.clone(), format!("audit event: {e}"));
            return Ok(false);
        }
        let ev = ev;
        match ev.kind() {
            "" | "Event" => {}
            "EventList" => return Ok(true),
            other => {
                self.problems.record(
                    location.clone(),
                    format!("kind {other:?} is not an audit.k8s.io Event"),
                );
                return Ok(false);
            }
        }
        self.stats.events += 1;
        let stage = ev.stage();
        if !stage.decides() {
            *self.stats.other_stages.entry(stage.as_str()).or_default() += 1;
            // Failed authentications are logged at ResponseStarted.
            self.detector.observe_unauthenticated(&ev, location);
            return Ok(false);
        }
        self.stats.deciding += 1;
        let nanos = ev.time_nanos();
        let f = self.filters;
        let effective = ev.effective_user();
        let user_name = effective.map_or("", |u| u.name());
        let auth_user = ev.user.as_ref();
        if let Some(s) = &f.subject
            && user_name != s
            && auth_user.map_or("", |u| u.name()) != s
        {
            self.stats.filtered_out += 1;
            return Ok(false);
        }
        let jti = auth_user.and_then(|u| u.jti());
        if let Some(j) = &f.jti
            && jti != Some(j.as_str())
        {
            self.stats.filtered_out += 1;
            return Ok(false);
        }
        if (f.since.is_some() || f.until.is_some())
            && nanos
                .is_none_or(|t| f.since.is_some_and(|s| t < s) || f.until.is_some_and(|u| t > u))
        {
            self.stats.filtered_out += 1;
            return Ok(false);
        }
        let attrs = attributes(&ev);
        if let Some(ns) = &f.namespace {
            let request_ns = attrs.as_ref().map_or("", |a| a.as_attributes().namespace);
            let sa_ns =
                crate::rbac::authorizer::split_service_account_user(user_name).map(|(n, _)| n);
            if request_ns != ns && sa_ns != Some(ns.as_str()) {
                self.stats.filtered_out += 1;
                return Ok(false);
            }
        }
        fill_user(
            &mut self.user,
            user_name,
            effective
                .into_iter()
                .flat_map(event::EventUser::group_names),
        );
        // The recorded reason is decoded only where it is shown.
        let recorded = ev.recorded_allowed();
        let code = ev.code();
        let denied = code == Some(403) || recorded == Some(false);

        // Decide.
        let mut outcome = Outcome::NotEvaluated;
        let mut explanation = String::new();
        let mut replayed: Option<Replayed> = None;
        let mut snapshot_idx = None;
        let borrowed = attrs
            .as_ref()
            .ok()
            .map(attributes::EventAttributes::as_attributes);
        match &attrs {
            Err(problem) => {
                outcome = Outcome::Undetermined;
                explanation = problem.to_string();
            }
            Ok(_) => {
                if let Some((idx, snap)) = self.policy.select(nanos)? {
                    snapshot_idx = Some(idx);
                    let a = borrowed.unwrap_or_default();
                    let d = snap.authorizer.decide(&a, &self.user);
                    let masters = self.user.groups.iter().any(|g| g == decide::GROUP_MASTERS);
                    let agrees = !masters && recorded == Some(d.allowed);
                    // The explanation (and the replayed reason it quotes)
                    // is written only for listed events, below.
                    outcome = if agrees {
                        Outcome::Agree
                    } else {
                        decide::outcome(&self.user, ev.recorded().as_ref(), d.allowed)
                    };
                    replayed = Some(Replayed {
                        decision: d.parts(),
                        snapshot: idx,
                    });
                    let allowed_live = recorded.unwrap_or(d.allowed);
                    self.subjects.record(
                        &self.user,
                        &SubjectCall {
                            attributes: borrowed,
                            denied,
                            allowed: allowed_live && !denied,
                            drift: matches!(outcome, Outcome::Drift { .. }),
                            outside_rbac: matches!(outcome, Outcome::OutsideRbac { .. }),
                            time: ev.time_text(),
                            snapshot: Some(idx),
                        },
                        d.wildcards(),
                    );
                }
            }
        }
        if snapshot_idx.is_none() {
            let allowed_live = recorded == Some(true);
            self.subjects.record(
                &self.user,
                &SubjectCall {
                    attributes: borrowed,
                    denied,
                    allowed: allowed_live && !denied,
                    drift: false,
                    outside_rbac: false,
                    time: ev.time_text(),
                    snapshot: None,
                },
                None,
            );
        }
        match outcome {
            Outcome::Agree => self.stats.agree += 1,
            Outcome::Drift { direction } => {
                self.stats.drift += 1;
                *self.stats.drift_by_direction.entry(direction).or_default() += 1;
            }
            Outcome::OutsideRbac { label } => {
                *self.stats.outside_rbac.entry(label).or_default() += 1;
            }
            Outcome::Unrecorded => self.stats.unrecorded += 1,
            Outcome::Undetermined => self.stats.undetermined += 1,
            Outcome::NotEvaluated => self.stats.not_evaluated += 1,
        }
        if denied {
            self.stats.forbidden += 1;
        }
        if code == Some(401) {
            self.detector.observe_unauthenticated(&ev, location);
        }
        let allowed_live =
            !denied && recorded.unwrap_or_else(|| code.is_some_and(|c| (200..400).contains(&c)));
        // Reused from event to event (put back below).
        let mut flags = std::mem::take(&mut self.flags);
        flags.clear();
        self.detector.observe(
            &detect::Observed {
                ev: &ev,
                attrs: borrowed.as_ref(),
                user: user_name,
                auth_user: auth_user.map_or("", |u| u.name()),
                allowed: allowed_live,
                nanos,
                location,
            },
            &mut flags,
        );
        let detected = !flags.is_empty();
        if let Some(issued) = ev.annotation(|a| a.issued_credential_id.as_ref())
            && let Some(jti) = issued
                .strip_prefix(event::JTI_PREFIX)
                .filter(|j| !j.is_empty())
        {
            self.record_mint(&ev, jti, location);
        }

        // Join the token timeline.
        let (pod_uid, pod_name) = auth_user.map_or((None, None), |u| (u.pod_uid(), u.pod_name()));
        let mut token_index = None;
        if jti.is_some() || pod_uid.is_some() || pod_name.is_some() {
            match &borrowed {
                Some(a) => target_into(a, &mut self.target),
                None => {
                    self.target.clear();
                    self.target.push_str(ev.request_uri());
                }
            }
            let facts = CallFacts {
                nanos,
                time: ev.time_text(),
                subject: auth_user.map_or("", |u| u.name()),
                jti,
                pod_uid,
                pod_name,
                verb: ev.verb(),
                target: &self.target,
                code,
                denied,
                source_ip: ev.source_ip(),
                claimed_ips: ev.claimed_slice(),
                outcome: outcome.as_str(),
            };
            token_index = self.index.record_call(&facts, location, &mut flags);
        }
        let finding = detected || flags.iter().any(|f| *f != "forbidden");
        if finding {
            self.stats.flagged_calls += 1;
        }
        let drift = matches!(outcome, Outcome::Drift { .. });
        let listed = match self.only {
            Some(Only::Drift) => drift,
            Some(Only::Forbidden) => denied,
            Some(Only::Findings) => finding,
            None => drift || denied || finding,
        };
        if !listed {
            self.flags = flags;
            return Ok(false);
        }
        // The replayed reason, from what the decision found (no second
        // scan), and the explanation that quotes it.
        let recorded = ev.recorded();
        let replayed = replayed.map(|r| {
            self.reason.clear();
            let snap = self.policy.get(r.snapshot);
            if let (Some(a), Some(snap)) = (borrowed, snap) {
                let d = snap.authorizer.decision(r.decision, &a, &self.user);
                // A `String` takes every write.
                let _ = write!(self.reason, "{}", d.reason());
            }
            let label = snap.map_or("", |s| s.label.as_str());
            if outcome != Outcome::Agree {
                explanation = decide::classify(
                    &self.user,
                    recorded.as_ref(),
                    r.decision.allowed(),
                    &self.reason,
                    label,
                )
                .1;
            }
            (r.decision.allowed(), self.reason.as_str(), label)
        });
        let token = token_index.and_then(|i| self.index.get(i)).map(|t| {
            self.token_label.clear();
            t.write_label(&mut self.token_label);
            self.token_label.as_str()
        });
        let record = EventView {
            location,
            time: ev.time_text(),
            audit_id: ev.audit_id.as_ref().map_or("", event::Text::as_str),
            stage: stage.as_str(),
            user: user_name,
            impersonated_by: ev
                .impersonated_user
                .as_ref()
                .and(auth_user)
                .map(event::EventUser::name),
            verb: ev.verb(),
            attributes: borrowed,
            attributes_from: attrs.as_ref().ok().map(attributes::EventAttributes::source),
            request_uri: ev.request_uri(),
            source_ips: report::SourceIps::Event(ev.source_ips.as_deref().unwrap_or_default()),
            user_agent: ev.user_agent.as_ref().map(event::Text::as_str),
            code,
            recorded: recorded.as_ref(),
            replayed,
            outcome: &outcome,
            explanation: &explanation,
            token,
            flags: &flags,
        };
        (self.on_event)(&record);
        self.flags = flags;
        Ok(false)
    }
}
