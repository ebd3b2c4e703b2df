//! The node's event log: what happened to the cluster as this node saw it, for operators.
//!
//! A bounded ring buffer in memory ([`EVENTS_MAX`] entries by default): the oldest entry goes
//! when a new one does not fit, so recording never blocks, allocates without bound or fails.
//! Every entry gets the next sequence number (1, 2, …; never reused while the process runs)
//! and the wall-clock time, so a reader asks for "everything after N" and learns from the
//! first sequence number it gets whether it missed some. Nothing is persisted: after a
//! restart the log starts empty (and the sequence at 1), which readers see as a restart.
//!
//! Any part of the node records with [`EventLog::record`] (`node.events.record(…)`); the
//! management plane serves the log (`/api/v1/events`) and wakes its Server-Sent-Events
//! streams through [`EventLog::subscribe`].

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// How many entries a node keeps by default.
pub const EVENTS_MAX: usize = 1024;

/// Something that happened. Serialized with a `kind` tag in snake case
/// (`{"kind":"node_down","node":3}`); stripe ids are 64-hex text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// Member `node` answers heartbeats again (or for the first time since this node started).
    NodeUp {
        /// The member.
        node: u32,
    },
    /// Member `node` has not answered heartbeats for `down_after_ms`.
    NodeDown {
        /// The member.
        node: u32,
    },
    /// Moving shards to the placement of a new member list began.
    RebalanceStarted {
        /// The ring epoch being moved to.
        ring_epoch: u64,
    },
    /// A rebalance ended.
    RebalanceFinished {
        /// The ring epoch moved to.
        ring_epoch: u64,
        /// Shards this node moved.
        shards_moved: u64,
        /// Bytes this node moved.
        bytes_moved: u64,
    },
    /// Rebuilding the shards that member `node` held began.
    RepairStarted {
        /// The member whose shards are rebuilt.
        node: u32,
    },
    /// A repair ended.
    RepairFinished {
        /// The member whose shards were rebuilt.
        node: u32,
        /// Shards rebuilt.
        shards_repaired: u64,
        /// Bytes written by the repair.
        bytes: u64,
        /// Shards that could not be rebuilt.
        failed: u64,
    },
    /// A shard held here failed its checksum (which shard of the stripe it is, is learnt
    /// when it is rebuilt: the damaged record is not trusted).
    CorruptionFound {
        /// The stripe (64 hex).
        stripe_id: String,
    },
    /// A corrupt shard was rebuilt from the other shards of its stripe.
    CorruptionRepaired {
        /// The stripe (64 hex).
        stripe_id: String,
        /// The shard's index in its stripe.
        shard_index: u8,
        /// The shard's length.
        bytes: u64,
    },
}

/// One recorded event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventEntry {
    /// Its sequence number: 1 for the first event since start, then one more each time.
    pub seq: u64,
    /// Wall-clock time it was recorded, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The node that recorded it.
    pub reporter: u32,
    /// What happened.
    #[serde(flatten)]
    pub event: Event,
}

/// The bounded log. One per node (`node.events`).
#[derive(Debug)]
pub struct EventLog {
    reporter: u32,
    capacity: usize,
    entries: Mutex<VecDeque<EventEntry>>,
    /// The sequence number of the newest entry (0: none yet).
    newest: watch::Sender<u64>,
}

impl EventLog {
    /// An empty log of node `reporter` that keeps the newest `capacity` entries (at least 1).
    pub fn new(reporter: u32, capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            reporter,
            capacity,
            entries: Mutex::new(VecDeque::with_capacity(capacity)),
            newest: watch::Sender::new(0),
        }
    }

    /// Records `event` now and returns its sequence number. Never blocks on readers.
    pub fn record(&self, event: Event) -> u64 {
        tracing::info!(?event, "event");
        let mut entries = self.lock();
        let seq = entries.back().map_or(1, |entry| entry.seq + 1);
        if entries.len() == self.capacity {
            entries.pop_front();
        }
        entries.push_back(EventEntry {
            seq,
            time_ms: unix_time_ms(),
            reporter: self.reporter,
            event,
        });
        drop(entries);
        self.newest.send_replace(seq);
        seq
    }

    /// The entries with a sequence number above `after`, oldest first, at most `limit` of
    /// them (the newest ones when there are more).
    pub fn since(&self, after: u64, limit: usize) -> Vec<EventEntry> {
        let entries = self.lock();
        let newer = entries.iter().filter(|entry| entry.seq > after);
        let count = newer.clone().count();
        newer.skip(count.saturating_sub(limit)).cloned().collect()
    }

    /// The sequence number of the newest entry (0: none yet).
    pub fn newest_seq(&self) -> u64 {
        *self.newest.borrow()
    }

    /// A receiver that sees the newest sequence number change as events are recorded.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.newest.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<EventEntry>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_time_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_grow_and_the_oldest_entries_go_first() {
        let log = EventLog::new(7, 3);
        assert_eq!(log.newest_seq(), 0);
        for node in 1..=5 {
            assert_eq!(log.record(Event::NodeDown { node }), u64::from(node));
        }
        let kept = log.since(0, 10);
        let seqs: Vec<u64> = kept.iter().map(|entry| entry.seq).collect();
        assert_eq!(seqs, [3, 4, 5], "the capacity bounds the log");
        assert_eq!(kept[0].event, Event::NodeDown { node: 3 });
        assert_eq!(kept[0].reporter, 7);
        assert!(kept[0].time_ms > 0);
        assert_eq!(log.newest_seq(), 5);
        let seqs: Vec<u64> = log.since(3, 10).iter().map(|entry| entry.seq).collect();
        assert_eq!(seqs, [4, 5]);
        let seqs: Vec<u64> = log.since(0, 1).iter().map(|entry| entry.seq).collect();
        assert_eq!(seqs, [5], "a limit keeps the newest entries");
        assert!(log.since(5, 10).is_empty());
    }

    #[test]
    fn subscribers_see_new_events() {
        let log = EventLog::new(1, 8);
        let mut newest = log.subscribe();
        assert!(!newest.has_changed().expect("the log is alive"));
        log.record(Event::CorruptionFound {
            stripe_id: "ab".repeat(32),
        });
        assert!(newest.has_changed().expect("the log is alive"));
        assert_eq!(*newest.borrow_and_update(), 1);
    }

    #[test]
    fn entries_serialize_flat_with_a_kind_tag() {
        let entry = EventEntry {
            seq: 4,
            time_ms: 1_700_000_000_000,
            reporter: 2,
            event: Event::RepairFinished {
                node: 3,
                shards_repaired: 10,
                bytes: 4096,
                failed: 0,
            },
        };
        let json = serde_json::to_value(&entry).expect("serialize");
        assert_eq!(
            json,
            serde_json::json!({
                "seq": 4, "time_ms": 1_700_000_000_000u64, "reporter": 2,
                "kind": "repair_finished", "node": 3, "shards_repaired": 10,
                "bytes": 4096, "failed": 0
            })
        );
        let back: EventEntry = serde_json::from_value(json).expect("deserialize");
        assert_eq!(back, entry);
    }
}
