//! The scrubber: rereads every record this node stores, at a bounded rate, and repairs the
//! shards that fail their checksums.
//!
//! A **pass** walks the store in disk order ([`nabu_store::Store::check_each`]), rereading
//! each record's header and payload and checking both CRC32Cs, at most `scrub_bytes_per_s`
//! bytes per second so that client traffic keeps the disk. Passes start `scrub_interval_ms`
//! apart (the first that long after start-up); a pass that takes longer is followed at once.
//! `scrub_bytes_per_s = 0` turns scrubbing off.
//!
//! A **damaged shard** is rebuilt from the other members' shards of its stripe
//! ([`crate::repair::rebuild_local`]): its index is the one no other member holds, the
//! rebuilt stripe must match its BLAKE3 id before the shard is written back, and a whole copy
//! is taken from another member's intact copy. The damaged record is overwritten in place of
//! nothing else; until then reads of it fail their checksum and readers use other shards.
//! A damaged key record, manifest or hint is counted and logged, not rewritten here (the
//! other copies of metadata serve reads; `nabu gc` and writers rewrite it). A record whose
//! header block is damaged cannot name its key and is counted as unattributable.
//!
//! Each pass's figures (records and bytes checked, damage found and repaired, how long it
//! took) are kept in [`ScrubCounters`], exported in `/metrics` and `/api/v1/cluster`.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use nabu_core::id::StripeId;
use nabu_store::RecordCheck;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::events::Event;
use crate::node::{Node, until_stopped};
use crate::records::is_shard_key;

/// The scrubber's counters and the last pass's report.
#[derive(Debug, Default)]
pub struct ScrubCounters {
    /// Passes finished.
    pub passes_total: AtomicU64,
    /// Records reread and checked.
    pub records_checked_total: AtomicU64,
    /// Bytes reread.
    pub bytes_checked_total: AtomicU64,
    /// Damaged records found (shards, metadata and unattributable ones).
    pub corrupt_found_total: AtomicU64,
    /// Damaged shards rebuilt and written back.
    pub repaired_total: AtomicU64,
    /// Damaged records a pass could not repair.
    pub unrepaired_total: AtomicU64,
    /// Whether a pass is running.
    pub running: AtomicBool,
    /// The last finished pass.
    pub last_pass: Mutex<Option<PassReport>>,
}

/// What one scrub pass found and did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PassReport {
    /// Records reread.
    pub records: u64,
    /// Bytes reread.
    pub bytes: u64,
    /// Damaged shards found.
    pub corrupt_shards: u64,
    /// Damaged key records, manifests or hints found (not rewritten by the scrubber).
    pub corrupt_other: u64,
    /// Damaged records whose header hides the key.
    pub unattributable: u64,
    /// Damaged shards rebuilt and written back.
    pub repaired: u64,
    /// Damaged shards that could not be rebuilt (too few other shards reachable).
    pub unrepaired: u64,
    /// Seconds the pass took, repairs included.
    pub seconds: f64,
}

impl ScrubCounters {
    /// The Prometheus families: name, kind, help, value.
    pub fn families(&self) -> [(&'static str, &'static str, &'static str, f64); 8] {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let last = self.last_report();
        [
            (
                "nabu_scrub_passes_total",
                "counter",
                "Scrub passes finished.",
                load(&self.passes_total) as f64,
            ),
            (
                "nabu_scrub_records_checked_total",
                "counter",
                "Records the scrubber reread and checked.",
                load(&self.records_checked_total) as f64,
            ),
            (
                "nabu_scrub_bytes_checked_total",
                "counter",
                "Bytes the scrubber reread.",
                load(&self.bytes_checked_total) as f64,
            ),
            (
                "nabu_scrub_corrupt_found_total",
                "counter",
                "Damaged records the scrubber found.",
                load(&self.corrupt_found_total) as f64,
            ),
            (
                "nabu_scrub_repaired_total",
                "counter",
                "Damaged shards the scrubber rebuilt.",
                load(&self.repaired_total) as f64,
            ),
            (
                "nabu_scrub_unrepaired_total",
                "counter",
                "Damaged records the scrubber could not repair.",
                load(&self.unrepaired_total) as f64,
            ),
            (
                "nabu_scrub_running",
                "gauge",
                "1 while a scrub pass runs.",
                f64::from(u8::from(self.running.load(Ordering::Relaxed))),
            ),
            (
                "nabu_scrub_last_pass_seconds",
                "gauge",
                "How long the last scrub pass took.",
                last.map_or(0.0, |report| report.seconds),
            ),
        ]
    }

    /// The last finished pass's report.
    pub fn last_report(&self) -> Option<PassReport> {
        self.last_pass
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// Runs scrub passes until `shutdown` turns true.
pub async fn run(node: Arc<Node>, mut shutdown: watch::Receiver<bool>) {
    if node.config.scrub_bytes_per_s == 0 {
        return;
    }
    let interval = Duration::from_millis(node.config.scrub_interval_ms);
    let mut next = Instant::now() + interval;
    loop {
        tokio::select! {
            biased;
            () = tokio::time::sleep_until(next) => {}
            () = until_stopped(&mut shutdown) => return,
        }
        next = Instant::now() + interval;
        let stop = shutdown.clone();
        tokio::select! {
            biased;
            () = pass(&node, &stop) => {}
            () = until_stopped(&mut shutdown) => return,
        }
    }
}

/// One pass: reread everything, then repair what was damaged.
async fn pass(node: &Arc<Node>, shutdown: &watch::Receiver<bool>) {
    let started = Instant::now();
    let counters = &node.metrics.scrub;
    counters.running.store(true, Ordering::Relaxed);
    tracing::info!("scrub pass started");
    let (checking, stop) = (Arc::clone(node), shutdown.clone());
    let found = nabu_client::sim::spawn_blocking(move || check_all(&checking, &stop)).await;
    let (mut report, damaged) = match found {
        Ok(found) => found,
        Err(error) => {
            tracing::error!(%error, "the scrub pass panicked");
            counters.running.store(false, Ordering::Relaxed);
            return;
        }
    };
    for &stripe_id in &damaged {
        node.events.record(Event::CorruptionFound {
            stripe_id: stripe_id.to_string(),
        });
    }
    for stripe_id in damaged {
        match crate::repair::rebuild_local(node, stripe_id).await {
            Ok((shard_index, bytes)) => {
                report.repaired += 1;
                counters.repaired_total.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%stripe_id, shard_index, bytes, "scrub repaired a damaged shard");
                node.events.record(Event::CorruptionRepaired {
                    stripe_id: stripe_id.to_string(),
                    shard_index,
                    bytes,
                });
            }
            Err(error) => {
                report.unrepaired += 1;
                counters.unrepaired_total.fetch_add(1, Ordering::Relaxed);
                tracing::error!(%stripe_id, error = format!("{error:#}"), "scrub could not repair a damaged shard");
            }
        }
    }
    let unrepaired_other = report.corrupt_other + report.unattributable;
    counters
        .unrepaired_total
        .fetch_add(unrepaired_other, Ordering::Relaxed);
    report.seconds = started.elapsed().as_secs_f64();
    tracing::info!(
        records = report.records,
        bytes = report.bytes,
        corrupt_shards = report.corrupt_shards,
        repaired = report.repaired,
        seconds = report.seconds,
        "scrub pass finished"
    );
    counters.passes_total.fetch_add(1, Ordering::Relaxed);
    *counters
        .last_pass
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(report);
    counters.running.store(false, Ordering::Relaxed);
}

/// Rereads every record at the configured rate; returns the pass's counts and the damaged
/// shards' stripe ids. Stops early when `shutdown` turns true.
fn check_all(node: &Node, shutdown: &watch::Receiver<bool>) -> (PassReport, Vec<StripeId>) {
    let counters = &node.metrics.scrub;
    let bytes_per_s = node.config.scrub_bytes_per_s as f64;
    let started = Instant::now();
    let mut report = PassReport::default();
    let mut damaged = Vec::new();
    node.store.check_each(|check: RecordCheck| {
        if *shutdown.borrow() {
            return ControlFlow::Break(());
        }
        report.records += 1;
        report.bytes += check.bytes;
        counters
            .records_checked_total
            .fetch_add(1, Ordering::Relaxed);
        counters
            .bytes_checked_total
            .fetch_add(check.bytes, Ordering::Relaxed);
        if let Err(error) = check.outcome {
            counters.corrupt_found_total.fetch_add(1, Ordering::Relaxed);
            match check.key {
                Some(key) if is_shard_key(&key) => {
                    report.corrupt_shards += 1;
                    let stripe_id = StripeId::from_bytes(key[1..].try_into().expect("33-byte key"));
                    tracing::warn!(%stripe_id, %error, "scrub found a damaged shard");
                    damaged.push(stripe_id);
                }
                Some(_) => {
                    report.corrupt_other += 1;
                    tracing::error!(%error, "scrub found a damaged metadata or hint record");
                }
                None => {
                    report.unattributable += 1;
                    tracing::error!(%error, "scrub found a record whose header is damaged");
                }
            }
        }
        // Pace: the bytes reread so far may not be ahead of the rate.
        let due = Duration::from_secs_f64(report.bytes as f64 / bytes_per_s);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
        ControlFlow::Continue(())
    });
    (report, damaged)
}
