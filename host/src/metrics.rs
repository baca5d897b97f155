//! The agent's counters and gauges, rendered in the Prometheus text format.
//! Plain atomics: the event loop increments, the HTTP task reads.

use std::{
    fmt::Write as _,
    sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
};

use crate::{
    correlate::{EntryKind, FindingKind},
    event::EventKind,
};

const EVENT_KINDS: [EventKind; 8] = [
    EventKind::TokenAccess,
    EventKind::TokenOpen,
    EventKind::TokenRead,
    EventKind::TokenClose,
    EventKind::Connect,
    EventKind::ConnectResult,
    EventKind::Exec,
    EventKind::Exit,
];
const ENTRY_KINDS: [EntryKind; 4] = [
    EntryKind::TokenRead,
    EntryKind::TokenUse,
    EntryKind::ApiContact,
    EntryKind::Agent,
];

fn event_name(kind: EventKind) -> &'static str {
    match kind {
        EventKind::TokenAccess => "token_access",
        EventKind::TokenOpen => "token_open",
        EventKind::TokenRead => "token_read",
        EventKind::TokenClose => "token_close",
        EventKind::Connect => "connect",
        EventKind::ConnectResult => "connect_result",
        EventKind::Exec => "exec",
        EventKind::Exit => "exit",
    }
}

/// Every metric the agent exports.
#[derive(Debug, Default)]
pub struct Metrics {
    events: [AtomicU64; 8],
    entries: [AtomicU64; 4],
    findings: [AtomicU64; 9],
    /// Records the kernel could not reserve (a gauge of the kernel's counter).
    pub kernel_drops: AtomicU64,
    /// Entries the sinks dropped because their queue was full, per sink.
    pub sink_drops: [AtomicU64; 3],
    /// Entries the sinks failed to deliver, per sink.
    pub sink_errors: [AtomicU64; 3],
    /// Entries the trail failed to append (logged; the agent goes on).
    pub trail_errors: AtomicU64,
    /// Nanoseconds between the newest event's kernel time and its processing.
    pub queue_lag_ns: AtomicU64,
    /// Trail records appended since start.
    pub trail_appended: AtomicU64,
    /// Highest trail seq known durable.
    pub trail_durable_seq: AtomicU64,
    /// Trail size on disk, bytes.
    pub trail_bytes: AtomicU64,
    /// Unix time the RBAC snapshot in force was loaded (0: none).
    pub snapshot_loaded_unix: AtomicU64,
    /// Token inodes watched in the kernel.
    pub watched_inodes: AtomicU64,
    /// The sensor is attached.
    pub sensor_attached: AtomicBool,
    /// Capabilities of [`crate::caps::NEEDS`] the process lacks (bit i: `NEEDS[i]`).
    pub capabilities_missing: AtomicU64,
    /// fanotify `FAN_Q_OVERFLOW` events (the kernel's queue was full; how
    /// many events were lost each time is not known).
    pub fanotify_overflows: AtomicU64,
    /// fanotify events whose fd the kernel could not open for the agent.
    pub fanotify_fd_failures: AtomicU64,
    /// fanotify events lost because the agent's own queue was full.
    pub fanotify_queue_lost: AtomicU64,
    /// Trail records lost because the trail writer's queue was full.
    pub trail_queue_lost: AtomicU64,
    /// Token accesses the appended records stand for (a folded record
    /// counts its repeats): equals the sensor's token-access events when
    /// nothing was lost.
    pub trail_accesses: AtomicU64,
}

/// Sink indexes into `sink_drops` / `sink_errors`.
pub const SINK_NAMES: [&str; 3] = ["stdout", "file", "otlp"];

impl Metrics {
    /// Counts one sensor event.
    pub fn event(&self, kind: EventKind) {
        if let Some(i) = EVENT_KINDS.iter().position(|k| *k == kind) {
            self.events[i].fetch_add(1, Relaxed);
        }
    }

    /// Counts one trail entry and its findings.
    pub fn entry(&self, kind: EntryKind, findings: impl Iterator<Item = FindingKind>) {
        if let Some(i) = ENTRY_KINDS.iter().position(|k| *k == kind) {
            self.entries[i].fetch_add(1, Relaxed);
        }
        for finding in findings {
            if let Some(i) = FindingKind::ALL.iter().position(|k| *k == finding) {
                self.findings[i].fetch_add(1, Relaxed);
            }
        }
    }

    /// Sensor events counted of `kind`.
    #[must_use]
    pub fn events(&self, kind: EventKind) -> u64 {
        EVENT_KINDS
            .iter()
            .position(|k| *k == kind)
            .map_or(0, |i| self.events[i].load(Relaxed))
    }

    /// Findings counted of `kind`.
    #[must_use]
    pub fn findings(&self, kind: FindingKind) -> u64 {
        FindingKind::ALL
            .iter()
            .position(|k| *k == kind)
            .map_or(0, |i| self.findings[i].load(Relaxed))
    }

    /// The Prometheus text exposition, `now_unix` for the snapshot age.
    #[must_use]
    pub fn render(&self, now_unix: u64) -> String {
        fn header(out: &mut String, name: &str, kind: &str, help: &str) {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        }
        fn single(
            out: &mut String,
            name: &str,
            kind: &str,
            help: &str,
            value: impl std::fmt::Display,
        ) {
            header(out, name, kind, help);
            let _ = writeln!(out, "{name} {value}");
        }
        let mut out = String::new();
        header(
            &mut out,
            "tokenwatch_events_total",
            "counter",
            "Sensor events processed, by kind.",
        );
        for (i, kind) in EVENT_KINDS.iter().enumerate() {
            let _ = writeln!(
                out,
                "tokenwatch_events_total{{kind=\"{}\"}} {}",
                event_name(*kind),
                self.events[i].load(Relaxed)
            );
        }
        header(
            &mut out,
            "tokenwatch_entries_total",
            "counter",
            "Trail entries recorded, by kind.",
        );
        for (i, kind) in ENTRY_KINDS.iter().enumerate() {
            let _ = writeln!(
                out,
                "tokenwatch_entries_total{{kind=\"{}\"}} {}",
                kind.as_str(),
                self.entries[i].load(Relaxed)
            );
        }
        header(
            &mut out,
            "tokenwatch_findings_total",
            "counter",
            "Findings, by kind.",
        );
        for (i, kind) in FindingKind::ALL.iter().enumerate() {
            let _ = writeln!(
                out,
                "tokenwatch_findings_total{{kind=\"{}\"}} {}",
                kind.as_str(),
                self.findings[i].load(Relaxed)
            );
        }
        single(
            &mut out,
            "tokenwatch_kernel_drops_total",
            "counter",
            "Records the kernel could not reserve in the ring buffer.",
            self.kernel_drops.load(Relaxed),
        );
        header(
            &mut out,
            "tokenwatch_userspace_drops_total",
            "counter",
            "Entries a sink dropped because its queue was full.",
        );
        for (i, sink) in SINK_NAMES.iter().enumerate() {
            let _ = writeln!(
                out,
                "tokenwatch_userspace_drops_total{{sink=\"{sink}\"}} {}",
                self.sink_drops[i].load(Relaxed)
            );
        }
        header(
            &mut out,
            "tokenwatch_sink_errors_total",
            "counter",
            "Entries a sink failed to deliver.",
        );
        for (i, sink) in SINK_NAMES.iter().enumerate() {
            let _ = writeln!(
                out,
                "tokenwatch_sink_errors_total{{sink=\"{sink}\"}} {}",
                self.sink_errors[i].load(Relaxed)
            );
        }
        single(
            &mut out,
            "tokenwatch_trail_errors_total",
            "counter",
            "Entries the trail failed to append.",
            self.trail_errors.load(Relaxed),
        );
        let lag = self.queue_lag_ns.load(Relaxed) as f64 / 1e9;
        single(
            &mut out,
            "tokenwatch_queue_lag_seconds",
            "gauge",
            "Time from the kernel seeing the newest event to the agent processing it.",
            format!("{lag:.6}"),
        );
        single(
            &mut out,
            "tokenwatch_trail_records_appended_total",
            "counter",
            "Trail records appended since the agent started.",
            self.trail_appended.load(Relaxed),
        );
        single(
            &mut out,
            "tokenwatch_trail_durable_seq",
            "gauge",
            "Highest trail sequence number known to be on disk.",
            self.trail_durable_seq.load(Relaxed),
        );
        single(
            &mut out,
            "tokenwatch_trail_bytes",
            "gauge",
            "Size of the trail on disk.",
            self.trail_bytes.load(Relaxed),
        );
        let loaded = self.snapshot_loaded_unix.load(Relaxed);
        let age = if loaded == 0 {
            -1.0
        } else {
            now_unix.saturating_sub(loaded) as f64
        };
        single(
            &mut out,
            "tokenwatch_rbac_snapshot_age_seconds",
            "gauge",
            "Age of the RBAC snapshot in force (-1: none loaded).",
            age,
        );
        single(
            &mut out,
            "tokenwatch_watched_inodes",
            "gauge",
            "Token files watched (fanotify marks: one filesystem mark per token volume, or inode marks).",
            self.watched_inodes.load(Relaxed),
        );
        single(
            &mut out,
            "tokenwatch_fanotify_overflows_total",
            "counter",
            "fanotify queue overflows (FAN_Q_OVERFLOW; each lost an unknown number of token accesses).",
            self.fanotify_overflows.load(Relaxed),
        );
        single(
            &mut out,
            "tokenwatch_fanotify_fd_failures_total",
            "counter",
            "Token-volume events whose file descriptor the kernel could not open for the agent (lost).",
            self.fanotify_fd_failures.load(Relaxed),
        );
        single(
            &mut out,
            "tokenwatch_fanotify_queue_lost_total",
            "counter",
            "Token accesses lost because the agent's own queue was full.",
            self.fanotify_queue_lost.load(Relaxed),
        );
        single(
            &mut out,
            "tokenwatch_trail_queue_lost_total",
            "counter",
            "Trail records lost because the trail writer's queue was full (never waited for).",
            self.trail_queue_lost.load(Relaxed),
        );
        single(
            &mut out,
            "tokenwatch_trail_accesses_total",
            "counter",
            "Token accesses the appended trail records stand for (folded repeats counted): tokenwatch_events_total{kind=\"token_access\"} when nothing was lost.",
            self.trail_accesses.load(Relaxed),
        );
        single(
            &mut out,
            "tokenwatch_sensor_attached",
            "gauge",
            "1 while the sensor (fanotify marks and eBPF programs) is attached.",
            u64::from(self.sensor_attached.load(Relaxed)),
        );
        header(
            &mut out,
            "tokenwatch_capability_missing",
            "gauge",
            "1 for each capability of docs/capabilities.md the agent lacks (required ones keep it unready, the others degrade it).",
        );
        let missing = self.capabilities_missing.load(Relaxed);
        for (i, need) in crate::caps::NEEDS.iter().enumerate() {
            let _ = writeln!(
                out,
                "tokenwatch_capability_missing{{capability=\"{}\",required=\"{}\"}} {}",
                need.name,
                need.required,
                (missing >> i) & 1
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_once_with_labels() {
        let m = Metrics::default();
        m.event(EventKind::TokenRead);
        m.event(EventKind::TokenRead);
        m.entry(EntryKind::TokenRead, [FindingKind::HostReader].into_iter());
        m.sink_drops[2].fetch_add(3, Relaxed);
        let text = m.render(100);
        assert!(
            text.contains("tokenwatch_events_total{kind=\"token_read\"} 2"),
            "{text}"
        );
        assert!(text.contains("tokenwatch_findings_total{kind=\"host-reader\"} 1"));
        assert!(text.contains("tokenwatch_userspace_drops_total{sink=\"otlp\"} 3"));
        assert!(text.contains("tokenwatch_rbac_snapshot_age_seconds -1"));
        m.capabilities_missing.store(0b100, Relaxed);
        let text = m.render(100);
        assert!(text.contains(
            "tokenwatch_capability_missing{capability=\"CAP_SYS_PTRACE\",required=\"false\"} 1"
        ));
        assert!(text.contains(
            "tokenwatch_capability_missing{capability=\"CAP_SYS_ADMIN\",required=\"true\"} 0"
        ));
        for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
            let name = line.split_whitespace().nth(2).unwrap();
            assert_eq!(
                text.matches(&format!("# TYPE {name} ")).count(),
                1,
                "{name} declared twice"
            );
        }
    }
}
