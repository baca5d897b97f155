//! The trail writer: the last stage of the agent's event path. Records
//! reach it through a bounded queue; a thread of its own appends them to the
//! trail (hash, serialise, index) and hands them to the sinks, so that the
//! event loop never waits for the disk. When the queue is full a record is
//! counted as lost (`tokenwatch_trail_queue_lost_total`, and an `agent`
//! entry once there is room again), never waited for. The queue holds
//! boxed records: a bounded channel allocates its capacity up front, and a
//! record inline is about a kilobyte (65,536 of them would be 80 MiB).

use std::{
    sync::{
        Arc,
        atomic::Ordering::Relaxed,
        mpsc::{Receiver, SyncSender, TrySendError, sync_channel},
    },
    thread::JoinHandle,
};

use crate::{correlate::TrailEntry, metrics::Metrics, sinks::Sinks, trail::Trail};

/// The sending side, held by the event loop.
#[derive(Debug)]
pub struct TrailWriter {
    tx: SyncSender<Box<TrailEntry>>,
    thread: JoinHandle<()>,
    metrics: Arc<Metrics>,
}

/// Errors starting the writer.
#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    /// The thread could not be started.
    #[error("starting the trail writer thread")]
    SpawnThread(#[source] std::io::Error),
}

impl TrailWriter {
    /// Starts the writer thread with a queue of `capacity` records.
    ///
    /// # Errors
    /// [`WriterError::SpawnThread`] if the thread cannot start.
    pub fn start(
        trail: Trail,
        sinks: Arc<Sinks>,
        metrics: Arc<Metrics>,
        capacity: usize,
    ) -> Result<Self, WriterError> {
        let (tx, rx) = sync_channel(capacity.max(1));
        let thread_metrics = Arc::clone(&metrics);
        let thread = std::thread::Builder::new()
            .name("trail-writer".into())
            .spawn(move || write_all(&rx, &trail, &sinks, &thread_metrics))
            .map_err(WriterError::SpawnThread)?;
        Ok(Self {
            tx,
            thread,
            metrics,
        })
    }

    /// Queues a record; `false` (and counted as lost) when the queue is full.
    pub fn record(&self, entry: TrailEntry) -> bool {
        match self.tx.try_send(Box::new(entry)) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.metrics.trail_queue_lost.fetch_add(1, Relaxed);
                false
            }
        }
    }

    /// Queues a record if there is room, without counting a loss when
    /// there is none (for the report of earlier losses, retried later).
    pub fn try_record_uncounted(&self, entry: TrailEntry) -> bool {
        self.tx.try_send(Box::new(entry)).is_ok()
    }

    /// Queues a record, waiting for room: for the agent's own rare entries
    /// (start, stop, losses), which must not be lost and may wait.
    pub fn record_waiting(&self, entry: TrailEntry) {
        if self.tx.send(Box::new(entry)).is_err() {
            self.metrics.trail_queue_lost.fetch_add(1, Relaxed);
        }
    }

    /// Waits until every queued record is appended and handed to the sinks.
    pub fn close(self) {
        drop(self.tx);
        if self.thread.join().is_err() {
            tracing::error!("the trail writer thread panicked");
        }
    }
}

fn write_all(rx: &Receiver<Box<TrailEntry>>, trail: &Trail, sinks: &Sinks, metrics: &Metrics) {
    for entry in rx {
        metrics.entry(entry.kind, entry.findings.iter().map(|f| f.kind));
        match trail.append(&entry) {
            Ok(_) => {
                metrics.trail_appended.fetch_add(1, Relaxed);
                metrics.trail_accesses.fetch_add(entry.accesses(), Relaxed);
            }
            Err(err) => {
                metrics.trail_errors.fetch_add(1, Relaxed);
                tracing::error!(error = %crate::error::error_chain(&err), "trail append failed");
            }
        }
        sinks.send(&Arc::new(*entry));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::correlate::{ENTRY_SCHEMA_VERSION, EntryKind};
    use crate::sinks::SinkConfig;

    fn agent_entry(n: usize) -> TrailEntry {
        TrailEntry {
            schema: ENTRY_SCHEMA_VERSION,
            kind: EntryKind::Agent,
            time: "2026-01-01T00:00:00Z".into(),
            node: "n".into(),
            reader: None,
            token: None,
            rbac: None,
            connection: None,
            findings: Vec::new(),
            message: Some(format!("entry {n}")),
            repeated: None,
        }
    }

    #[test]
    fn records_reach_the_trail_in_order_and_a_full_queue_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let trail = Trail::open(dir.path()).unwrap();
        let metrics = Arc::new(Metrics::default());
        let sinks = Arc::new(Sinks::start(&SinkConfig::default(), Arc::clone(&metrics)).unwrap());
        let writer = TrailWriter::start(trail.clone(), sinks, Arc::clone(&metrics), 1_000).unwrap();
        for n in 0..500 {
            assert!(writer.record(agent_entry(n)));
        }
        writer.close();
        trail.flush().unwrap();
        let records: Vec<_> = trail
            .query(&crate::trail::Query::default())
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(metrics.trail_errors.load(Relaxed), 0);
        assert_eq!(records.len(), 500);
        assert_eq!(
            records[499].entry.message.as_deref(),
            Some("entry 499"),
            "in order"
        );
        assert_eq!(metrics.trail_appended.load(Relaxed), 500);
        assert_eq!(metrics.trail_queue_lost.load(Relaxed), 0);

        // A queue of one that nobody drains (a writer stuck on the disk):
        // the overflow is counted, not waited for.
        let metrics = Arc::new(Metrics::default());
        let (tx, _rx) = sync_channel::<Box<TrailEntry>>(1);
        let stuck = TrailWriter {
            tx,
            thread: std::thread::spawn(|| {}),
            metrics: Arc::clone(&metrics),
        };
        assert!(stuck.record(agent_entry(0)));
        assert!(!stuck.record(agent_entry(1)));
        assert_eq!(metrics.trail_queue_lost.load(Relaxed), 1);
    }
}
