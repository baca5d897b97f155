//! Folding repeated token accesses into one record with an exact count.
//!
//! A process that reads a token in a loop would otherwise write one record
//! (and one identical finding) per read: tens of thousands a second that
//! neither the trail nor its reader can use. The first access of a
//! combination is recorded at once by the correlator; the accesses after it
//! are counted here and written as one folded record ([`TrailEntry`] with
//! [`Repeated`]) that covers at most one window (60 s by default).
//!
//! A combination is (process, pod, token, findings). The process is its pid
//! and start time, so two processes are never folded together, even with
//! the same executable in the same pod; the pod follows from the process;
//! the token is the file's (device, inode): a rotated token is a new inode
//! and so a new combination. The findings are checked again when a window
//! ends (the correlator evaluates the next access in full): when they
//! changed, that access is a new combination and is recorded at once.
//!
//! A folded record is written when its window has passed (on the next
//! access or on the agent's timer), shortly after its process exited, and
//! at shutdown; never later than one window plus the timer's period after
//! the access it counts. Every access the sensor reported is counted in
//! exactly one record: the first record stands for one, a folded record for
//! its `count`.

use std::collections::HashMap;

use super::model::{Repeated, TrailEntry};

/// `/proc` gives start times in clock ticks, the kernel in ns: a process
/// is keyed by its start tick so that both name it the same.
use crate::event::PROC_TICK_NS as TICK_NS;

/// Folds kept at most; beyond, accesses are recorded one by one (nothing is
/// lost, only not folded) until idle folds are swept.
const MAX_FOLDS: usize = 65_536;

/// How long after a process's exit its fold is written: accesses it made
/// just before exiting may be read after the exit record.
const EXIT_GRACE_NS: u64 = 1_000_000_000;

/// How long an exit is remembered for accesses that arrive after it.
const EXITS_KEPT_NS: u64 = 10_000_000_000;

/// One combination's process and token file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FoldKey {
    tgid: u32,
    start_tick: u64,
    dev: u64,
    ino: u64,
}

impl FoldKey {
    /// The key of process `tgid` started at `start_ns` (since boot, either
    /// precision) accessing the file `(dev, ino)`.
    #[must_use]
    pub fn new(tgid: u32, start_ns: u64, dev: u64, ino: u64) -> Self {
        Self {
            tgid,
            start_tick: start_ns / TICK_NS,
            dev,
            ino,
        }
    }
}

#[derive(Debug)]
struct Fold {
    /// The finding kinds of the combination ([`super::FindingKind::set_of`]
    /// of what applied, before the repeat interval thinned them).
    kinds: u16,
    /// The combination's first record: reader, token, RBAC and findings
    /// of the folded record (boxed: a fold is kept per live reader).
    template: Box<TrailEntry>,
    /// Accesses counted since the last record (0: nothing pending).
    count: u64,
    /// Monotonic ns of the first counted access: the window's start.
    window_start_ns: u64,
    /// Monotonic ns of the latest access of this combination.
    last_ns: u64,
    first_time: String,
    last_time: String,
    /// `seen` of the counted accesses (open, access, close), as bits.
    seen: u8,
    /// Monotonic ns when the process's exit was seen.
    exited_ns: Option<u64>,
}

impl Fold {
    /// The folded record of what is pending, if anything.
    fn take(&mut self) -> Option<TrailEntry> {
        if self.count == 0 {
            return None;
        }
        let mut entry = (*self.template).clone();
        entry.time.clone_from(&self.last_time);
        if let Some(file) = entry.token.as_mut().and_then(|t| t.file.as_mut()) {
            file.seen = SEEN
                .iter()
                .filter(|(bit, _)| self.seen & bit != 0)
                .map(|(_, name)| (*name).to_owned())
                .collect();
        }
        entry.repeated = Some(Repeated {
            count: self.count,
            first: std::mem::take(&mut self.first_time),
            last: std::mem::take(&mut self.last_time),
        });
        self.count = 0;
        self.seen = 0;
        Some(entry)
    }
}

const SEEN: [(u8, &str); 3] = [(1, "open"), (2, "access"), (4, "close")];

/// `seen` names (`open`, `access`, `close`) as bits.
#[must_use]
pub fn seen_bits(seen: &[&str]) -> u8 {
    SEEN.iter()
        .filter(|(_, name)| seen.contains(name))
        .fold(0, |bits, (bit, _)| bits | bit)
}

/// What [`Folds::count`] did with an access.
#[derive(Debug)]
pub enum Counted {
    /// Counted in the open window of its combination: nothing to record.
    Folded,
    /// Not counted: the correlator evaluates it in full, then calls
    /// [`Folds::record`]. `closed` is the combination's folded record whose
    /// window had passed, to be written first.
    Evaluate {
        /// The folded record the access closed, if one was pending.
        closed: Option<Box<TrailEntry>>,
    },
}

/// The open folds, by combination.
#[derive(Debug)]
pub struct Folds {
    window_ns: u64,
    open: HashMap<FoldKey, Fold>,
    /// Processes (pid, start tick) whose exit was seen lately, and when:
    /// a short-lived reader's exit often arrives before its access (two
    /// queues), and its fold must not wait a window to be written.
    exits: HashMap<(u32, u64), u64>,
}

impl Folds {
    /// Folds whose records cover at most `window_ns`.
    #[must_use]
    pub fn new(window_ns: u64) -> Self {
        Self {
            window_ns: window_ns.max(1),
            open: HashMap::new(),
            exits: HashMap::new(),
        }
    }

    /// Open folds (for tests and metrics).
    #[must_use]
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// Whether no fold is open.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Counts an access at `now_ns` (`time` its RFC 3339 time) when its
    /// combination has a fold whose window is open. Allocation-free unless
    /// it opens a window (then it keeps `time`).
    pub fn count(&mut self, key: FoldKey, now_ns: u64, time: &str, seen: u8) -> Counted {
        let Some(fold) = self.open.get_mut(&key) else {
            return Counted::Evaluate { closed: None };
        };
        let passed = now_ns.saturating_sub(fold.window_start_ns) >= self.window_ns;
        if fold.count == 0 && passed {
            // The findings were evaluated a window ago: again, in full.
            return Counted::Evaluate { closed: None };
        }
        if fold.count == 0 {
            // A repeat within a window of the combination's evaluation: it
            // opens a window of its own.
            fold.count = 1;
            fold.window_start_ns = now_ns;
            fold.last_ns = now_ns;
            fold.first_time.clear();
            fold.first_time.push_str(time);
            fold.last_time.clear();
            fold.last_time.push_str(time);
            fold.seen = seen;
            return Counted::Folded;
        }
        if !passed {
            fold.count += 1;
            fold.last_ns = fold.last_ns.max(now_ns);
            fold.last_time.clear();
            fold.last_time.push_str(time);
            fold.seen |= seen;
            return Counted::Folded;
        }
        Counted::Evaluate {
            closed: fold.take().map(Box::new),
        }
    }

    /// After a full evaluation of an access of `key` whose findings are
    /// `kinds`: `true` when it repeats its combination (count it: the
    /// caller records nothing), `false` when it is a new combination (the
    /// caller records `entry` at once; it becomes the template).
    pub fn record(
        &mut self,
        key: FoldKey,
        kinds: u16,
        entry: &TrailEntry,
        now_ns: u64,
        seen: u8,
    ) -> bool {
        if let Some(fold) = self.open.get_mut(&key)
            && fold.kinds == kinds
        {
            fold.count = 1;
            fold.window_start_ns = now_ns;
            fold.last_ns = now_ns;
            fold.first_time.clone_from(&entry.time);
            fold.last_time.clone_from(&entry.time);
            fold.seen = seen;
            return true;
        }
        if self.open.len() >= MAX_FOLDS && !self.open.contains_key(&key) {
            self.sweep_idle(now_ns);
            if self.open.len() >= MAX_FOLDS {
                return false;
            }
        }
        let exited_ns = self.exits.get(&(key.tgid, key.start_tick)).copied();
        self.open.insert(
            key,
            Fold {
                kinds,
                template: Box::new(entry.clone()),
                count: 0,
                window_start_ns: now_ns,
                last_ns: now_ns,
                first_time: String::new(),
                last_time: String::new(),
                seen: 0,
                exited_ns,
            },
        );
        false
    }

    /// The process `tgid` started at `start_ns` exited at `now_ns`: its
    /// folds, and those its late accesses open, are written after a grace
    /// period (by [`Folds::due`]).
    pub fn exited(&mut self, tgid: u32, start_ns: u64, now_ns: u64) {
        let start_tick = start_ns / TICK_NS;
        for (key, fold) in &mut self.open {
            if key.tgid == tgid && key.start_tick == start_tick {
                fold.exited_ns = Some(now_ns);
            }
        }
        if start_ns != 0 {
            self.exits.insert((tgid, start_tick), now_ns);
        }
    }

    /// The folded records due at `now_ns`: windows that have passed and
    /// processes that exited; forgets folds idle for a window and those of
    /// exited processes.
    pub fn due(&mut self, now_ns: u64) -> Vec<TrailEntry> {
        let window = self.window_ns;
        self.exits
            .retain(|_, at| now_ns.saturating_sub(*at) < EXITS_KEPT_NS);
        let mut out = Vec::new();
        self.open.retain(|_, fold| {
            let exited = fold
                .exited_ns
                .is_some_and(|at| now_ns.saturating_sub(at) >= EXIT_GRACE_NS);
            let passed = fold.count > 0 && now_ns.saturating_sub(fold.window_start_ns) >= window;
            if exited || passed {
                out.extend(fold.take());
            }
            let idle = fold.count == 0 && now_ns.saturating_sub(fold.last_ns) >= window;
            !(exited || idle)
        });
        sort_by_time(&mut out);
        out
    }

    /// Every pending folded record (at shutdown); forgets every fold.
    pub fn drain(&mut self) -> Vec<TrailEntry> {
        let mut out: Vec<TrailEntry> = self
            .open
            .drain()
            .filter_map(|(_, mut fold)| fold.take())
            .collect();
        sort_by_time(&mut out);
        out
    }

    fn sweep_idle(&mut self, now_ns: u64) {
        let window = self.window_ns;
        self.open
            .retain(|_, fold| fold.count > 0 || now_ns.saturating_sub(fold.last_ns) < window);
    }
}

/// RFC 3339 UTC times of one format sort as strings.
fn sort_by_time(entries: &mut [TrailEntry]) {
    entries.sort_by(|a, b| a.time.cmp(&b.time));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::correlate::model::{
        ENTRY_SCHEMA_VERSION, EntryKind, Finding, FindingKind, Severity, TokenFileRef, TokenInfo,
    };

    const S: u64 = 1_000_000_000;

    fn first(time: &str) -> TrailEntry {
        TrailEntry {
            schema: ENTRY_SCHEMA_VERSION,
            kind: EntryKind::TokenRead,
            time: time.into(),
            node: "n".into(),
            reader: None,
            token: Some(TokenInfo {
                file: Some(TokenFileRef {
                    seen: vec!["open".into()],
                    ..TokenFileRef::default()
                }),
                ..TokenInfo::default()
            }),
            rbac: None,
            connection: None,
            findings: vec![Finding {
                kind: FindingKind::HostReader,
                severity: Severity::High,
                reason: "r".into(),
            }],
            message: None,
            repeated: None,
        }
    }

    fn t(s: u64) -> String {
        format!("2026-01-01T00:{:02}:{:02}Z", s / 60, s % 60)
    }

    #[test]
    fn repeats_fold_into_one_record_per_window_with_exact_counts() {
        let mut folds = Folds::new(60 * S);
        let key = FoldKey::new(10, 5 * S, 1, 2);
        let kinds = FindingKind::HostReader.bit();
        assert!(matches!(
            folds.count(key, 0, &t(0), 1),
            Counted::Evaluate { closed: None }
        ));
        assert!(!folds.record(key, kinds, &first(&t(0)), 0, 1));
        // 100 repeats within the first window (seconds 1..=100 would pass it).
        for s in 1..=59 {
            assert!(matches!(folds.count(key, s * S, &t(s), 2), Counted::Folded));
        }
        assert!(folds.due(59 * S).is_empty(), "window still open");
        // Second 61: the window that opened at 1 has passed.
        let Counted::Evaluate { closed: Some(rec) } = folds.count(key, 61 * S, &t(61), 2) else {
            panic!("the window should close")
        };
        let r = rec.repeated.as_ref().unwrap();
        assert_eq!(
            (r.count, r.first.as_str(), r.last.as_str()),
            (59, &*t(1), &*t(59))
        );
        assert_eq!(rec.time, t(59));
        assert_eq!(rec.findings.len(), 1);
        assert_eq!(rec.token.unwrap().file.unwrap().seen, vec!["access"]);
        // Same findings: a repeat, counted in a new window.
        assert!(folds.record(key, kinds, &first(&t(61)), 61 * S, 2));
        assert!(matches!(
            folds.count(key, 62 * S, &t(62), 4),
            Counted::Folded
        ));
        let out = folds.due(200 * S);
        assert_eq!(out.len(), 1);
        let r = out[0].repeated.as_ref().unwrap();
        assert_eq!((r.count, r.first.as_str()), (2, &*t(61)));
        assert_eq!(
            out[0].token.as_ref().unwrap().file.as_ref().unwrap().seen,
            vec!["access", "close"]
        );
        // Idle for a window: forgotten.
        assert!(folds.due(400 * S).is_empty());
        assert!(folds.is_empty());
    }

    #[test]
    fn changed_findings_are_a_new_combination() {
        let mut folds = Folds::new(60 * S);
        let key = FoldKey::new(10, 5 * S, 1, 2);
        assert!(!folds.record(key, FindingKind::HostReader.bit(), &first(&t(0)), 0, 1));
        assert!(matches!(folds.count(key, S, &t(1), 1), Counted::Folded));
        let Counted::Evaluate { closed: Some(_) } = folds.count(key, 70 * S, &t(70), 1) else {
            panic!()
        };
        let kinds = FindingKind::HostReader.bit() | FindingKind::ExpiredToken.bit();
        assert!(!folds.record(key, kinds, &first(&t(70)), 70 * S, 1));
    }

    #[test]
    fn processes_and_files_are_never_folded_together() {
        let mut folds = Folds::new(60 * S);
        let a = FoldKey::new(10, 5 * S, 1, 2);
        let b = FoldKey::new(11, 5 * S, 1, 2);
        let reused = FoldKey::new(10, 9 * S, 1, 2);
        let rotated = FoldKey::new(10, 5 * S, 1, 3);
        assert!(!folds.record(a, 0, &first(&t(0)), 0, 1));
        for other in [b, reused, rotated] {
            assert!(matches!(
                folds.count(other, S, &t(1), 1),
                Counted::Evaluate { closed: None }
            ));
        }
        // Start times in ticks and in ns name the same process.
        assert_eq!(FoldKey::new(10, 5 * S + 3_000_000, 1, 2), a);
    }

    #[test]
    fn an_exited_processes_fold_is_written_after_the_grace() {
        let mut folds = Folds::new(60 * S);
        let key = FoldKey::new(10, 5 * S, 1, 2);
        assert!(!folds.record(key, 0, &first(&t(0)), 0, 1));
        assert!(matches!(folds.count(key, S, &t(1), 1), Counted::Folded));
        folds.exited(10, 5 * S, 2 * S);
        assert!(folds.due(2 * S).is_empty(), "within the grace");
        let out = folds.due(3 * S);
        assert_eq!(out[0].repeated.as_ref().unwrap().count, 1);
        assert!(folds.is_empty());
        assert_eq!(out[0].accesses(), 1);
    }

    #[test]
    fn an_access_that_arrives_after_its_exit_is_written_after_the_grace_too() {
        let mut folds = Folds::new(60 * S);
        let key = FoldKey::new(10, 5 * S, 1, 2);
        folds.exited(10, 5 * S, S);
        assert!(!folds.record(key, 0, &first(&t(1)), S, 1));
        assert!(matches!(folds.count(key, S + 1, &t(1), 4), Counted::Folded));
        let out = folds.due(3 * S);
        assert_eq!(out.len(), 1);
        assert!(folds.is_empty(), "not kept for a window");
        // Another process with the pid (another start) is not affected.
        let other = FoldKey::new(10, 9 * S, 1, 2);
        assert!(!folds.record(other, 0, &first(&t(2)), 2 * S, 1));
        assert!(folds.due(4 * S).is_empty());
        assert_eq!(folds.len(), 1);
    }

    #[test]
    fn drain_writes_everything_pending() {
        let mut folds = Folds::new(60 * S);
        for tgid in 0..3 {
            let key = FoldKey::new(tgid, 0, 1, 2);
            assert!(!folds.record(key, 0, &first(&t(0)), 0, 1));
            for s in 1..=u64::from(tgid) + 1 {
                let _ = folds.count(key, s * S, &t(s), 1);
            }
        }
        let out = folds.drain();
        let total: u64 = out.iter().map(TrailEntry::accesses).sum();
        assert_eq!(total, 1 + 2 + 3);
        assert!(folds.is_empty());
    }
}
