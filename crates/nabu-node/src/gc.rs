//! The node's side of garbage collection: remember what was written lately, list held
//! stripes (SHARD_LIST), and sweep what a collector found unreferenced (GC_SWEEP).
//!
//! **Two sweeps, a grace period apart.** A collector marks the stripes and manifests that the
//! cluster's key records reach, then asks nodes to sweep the rest. The first sweep naming an
//! item only *condemns* it; a sweep at least a grace period later drops it if it is still
//! named. A read that resolved a key just before an overwrite or delete took away the last
//! reference can therefore finish (reads must be shorter than the grace period). An item a
//! later collection no longer names (referenced again, e.g. by a copy) is pardoned when that
//! collection's last request arrives, and a write pardons it at once.
//!
//! **Why the node keeps write times.** A PUT running at the same
//! time may have written (or, deduplicated, found already present) a stripe whose key record
//! the mark did not see yet. Such a stripe was *written on this node* during the PUT, so the
//! node refuses to drop anything written within the sweep's grace period; the collector in
//! turn sweeps only while its mark is younger than half the grace period, and a PUT must
//! finish within the other half (`docs/consistency.md` states the rule). Every SHARD_PUT and
//! META_PUT touches its item, whether it stored it or already held it.
//!
//! Write times live in memory (bounded by `gc_touch_entries_max`). After a restart, or after
//! the table overflowed and was cleared, the node cannot tell old items from fresh ones, so it
//! drops nothing until a full grace period has passed.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use nabu_core::id::StripeId;
use nabu_proto::ops::{GcSweepReply, ManifestRef, MetaTable, SweepRun};

use crate::handler::OpError;
use crate::node::Node;
use crate::records::{MetaAddress, is_shard_key};

/// When this node last wrote each recently written item.
#[derive(Debug)]
pub struct Touches {
    started: Instant,
    entries_max: usize,
    state: Mutex<TouchState>,
}

#[derive(Debug, Default)]
struct TouchState {
    written: HashMap<[u8; 32], Instant>,
    /// When the table last overflowed and was cleared.
    forgotten_at: Option<Instant>,
    /// Items condemned: when first, and the collection that last named them.
    condemned: HashMap<[u8; 32], (Instant, u64)>,
}

/// What a sweep may do with an unreferenced item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Condemned a grace period ago and not written since: drop it.
    Drop,
    /// Condemned now, or less than a grace period ago: wait for a later collection.
    Condemned,
    /// Written within the grace period (or the node cannot tell): keep it.
    Recent,
}

impl Touches {
    /// An empty table that holds at most `entries_max` write times.
    pub fn new(entries_max: usize) -> Self {
        Self {
            started: Instant::now(),
            entries_max: entries_max.max(1),
            state: Mutex::new(TouchState::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, TouchState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records that `item` was written now.
    pub fn touch(&self, item: [u8; 32]) {
        let now = Instant::now();
        let mut state = self.state();
        if state.written.len() >= self.entries_max && !state.written.contains_key(&item) {
            tracing::warn!(
                entries = state.written.len(),
                "the write-time table is full: cleared; nothing is swept for a grace period"
            );
            state.written.clear();
            state.forgotten_at = Some(now);
        }
        state.written.insert(item, now);
        state.condemned.remove(&item);
    }

    /// Judges an item a collection (`run`) found unreferenced; see [`Verdict`].
    pub fn judge(&self, item: &[u8; 32], grace: Duration, run: u64) -> Verdict {
        if !self.quiet_for(item, grace) {
            return Verdict::Recent;
        }
        let now = Instant::now();
        let mut state = self.state();
        if let Some((since, last_run)) = state.condemned.get_mut(item) {
            *last_run = run;
            if now.saturating_duration_since(*since) >= grace {
                state.condemned.remove(item);
                return Verdict::Drop;
            }
            return Verdict::Condemned;
        }
        if state.condemned.len() >= self.entries_max {
            return Verdict::Recent; // bounded: condemned by a later collection
        }
        state.condemned.insert(*item, (now, run));
        Verdict::Condemned
    }

    /// Ends collection `run` on this node: items condemned earlier that it did not name are
    /// referenced again, so their condemnation lapses.
    pub fn finish_run(&self, run: u64) {
        self.state()
            .condemned
            .retain(|_, (_, last_run)| *last_run == run);
    }

    /// Whether `item` has gone unwritten for at least `grace` (and the node can tell).
    pub fn quiet_for(&self, item: &[u8; 32], grace: Duration) -> bool {
        let now = Instant::now();
        let state = self.state();
        let older = |at: Instant| now.saturating_duration_since(at) >= grace;
        older(self.started)
            && state.forgotten_at.is_none_or(older)
            && state.written.get(item).is_none_or(|&at| older(at))
    }

    /// Forgets write times older than `age` (bounded work: called from the sweep).
    fn prune(&self, age: Duration) {
        let now = Instant::now();
        self.state()
            .written
            .retain(|_, at| now.saturating_duration_since(*at) < age);
    }
}

/// The item a manifest's write time is kept under.
pub fn manifest_item(address: &MetaAddress) -> [u8; 32] {
    *blake3::hash(&address.store_key()).as_bytes()
}

/// One page of the stripes this node holds a shard of: ascending, after `after`, at most
/// `limit`; and whether more follow.
pub fn list_shards(
    node: &Node,
    after: Option<StripeId>,
    limit: u32,
) -> Result<(Vec<StripeId>, bool), OpError> {
    let mut ids: Vec<StripeId> = node
        .store
        .keys()?
        .iter()
        .filter(|key| is_shard_key(key))
        .map(|key| StripeId::from_bytes(key[1..].try_into().expect("shard keys are 33 bytes")))
        .filter(|id| after.is_none_or(|after| id.as_bytes() > after.as_bytes()))
        .collect();
    ids.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let more = ids.len() > limit as usize;
    ids.truncate(limit as usize);
    Ok((ids, more))
}

/// Condemns or drops the listed shards (with their hints) and manifest copies; see the
/// module docs.
pub fn sweep(
    node: &Node,
    run: SweepRun,
    shards: &[StripeId],
    manifests: &[ManifestRef],
) -> Result<GcSweepReply, OpError> {
    let grace = Duration::from_millis(run.grace_ms);
    let judge = |item: &[u8; 32]| node.touches.judge(item, grace, run.run_id);
    let mut reply = GcSweepReply::default();
    for stripe_id in shards {
        match node.shards.delete_if(stripe_id, judge)? {
            Swept::Deleted(bytes) => {
                reply.shards_deleted += 1;
                reply.bytes_freed += bytes;
                for hint in node.hints.of_stripe(stripe_id) {
                    node.hints.remove(stripe_id, hint.home)?;
                }
            }
            other => reply.count(other),
        }
    }
    for manifest in manifests {
        let address = MetaAddress::new(
            MetaTable::Manifests,
            &manifest.namespace,
            manifest.blob_id.as_bytes(),
        );
        match node.meta.remove_if(&address, judge)? {
            Swept::Deleted(bytes) => {
                reply.manifests_deleted += 1;
                reply.bytes_freed += bytes;
            }
            other => reply.count(other),
        }
    }
    if run.last {
        node.touches.finish_run(run.run_id);
        node.touches.prune(grace);
    }
    if reply.shards_deleted + reply.manifests_deleted > 0 {
        tracing::info!(
            shards = reply.shards_deleted,
            manifests = reply.manifests_deleted,
            kept_recent = reply.kept_recent,
            bytes = reply.bytes_freed,
            "garbage collected"
        );
        let compacted = node.store.compact()?;
        tracing::debug!(?compacted, "compacted after a sweep");
    }
    Ok(reply)
}

/// What a sweep did with one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Swept {
    /// Dropped; this many bytes of records turned into garbage.
    Deleted(u64),
    /// Condemned (now or earlier): kept until a later collection.
    Condemned,
    /// Written within the grace period: kept.
    Recent,
    /// Not held.
    Absent,
}

impl Swept {
    /// What dropping an item held in `bytes` of records comes to under `verdict`.
    pub fn of(verdict: Verdict, bytes: u64) -> Self {
        match verdict {
            Verdict::Drop => Swept::Deleted(bytes),
            Verdict::Condemned => Swept::Condemned,
            Verdict::Recent => Swept::Recent,
        }
    }
}

trait CountSwept {
    fn count(&mut self, swept: Swept);
}

impl CountSwept for GcSweepReply {
    fn count(&mut self, swept: Swept) {
        match swept {
            Swept::Condemned => self.condemned += 1,
            Swept::Recent => self.kept_recent += 1,
            Swept::Deleted(_) | Swept::Absent => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_items_quiet_for_the_grace_period_may_go() {
        let touches = Touches::new(4);
        let grace = Duration::from_millis(50);
        // A fresh node can tell nothing apart yet.
        assert!(!touches.quiet_for(&[1; 32], grace));
        assert!(touches.quiet_for(&[1; 32], Duration::ZERO));
        std::thread::sleep(grace);
        assert!(touches.quiet_for(&[1; 32], grace));
        touches.touch([1; 32]);
        assert!(!touches.quiet_for(&[1; 32], grace));
        assert!(touches.quiet_for(&[2; 32], grace));
    }

    #[test]
    fn an_overflowing_table_forgets_everything_and_so_sweeps_nothing_for_a_while() {
        let touches = Touches::new(2);
        let grace = Duration::from_millis(30);
        std::thread::sleep(grace);
        touches.touch([1; 32]);
        touches.touch([2; 32]);
        assert!(touches.quiet_for(&[9; 32], grace));
        touches.touch([3; 32]); // overflow: cleared
        assert!(
            !touches.quiet_for(&[9; 32], grace),
            "cannot tell after a clear"
        );
        assert!(!touches.quiet_for(&[1; 32], grace));
        assert_eq!(touches.state().written.len(), 1);
    }

    #[test]
    fn an_item_goes_a_grace_period_after_it_was_condemned_unless_pardoned() {
        let touches = Touches::new(16);
        let grace = Duration::from_millis(40);
        std::thread::sleep(grace);
        assert_eq!(touches.judge(&[1; 32], grace, 1), Verdict::Condemned);
        assert_eq!(touches.judge(&[2; 32], grace, 1), Verdict::Condemned);
        assert_eq!(
            touches.judge(&[1; 32], grace, 2),
            Verdict::Condemned,
            "too soon"
        );
        touches.finish_run(2); // run 2 did not name [2]: referenced again
        std::thread::sleep(grace);
        assert_eq!(touches.judge(&[1; 32], grace, 3), Verdict::Drop);
        assert_eq!(
            touches.judge(&[2; 32], grace, 3),
            Verdict::Condemned,
            "pardoned"
        );
        touches.touch([2; 32]);
        assert_eq!(
            touches.judge(&[2; 32], grace, 4),
            Verdict::Recent,
            "written"
        );
    }
}
