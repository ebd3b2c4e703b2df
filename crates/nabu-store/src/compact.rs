//! Compaction: reclaiming the space of dead records.
//!
//! A sealed segment whose dead fraction reaches the threshold is rewritten: each record the
//! index still points to is copied forward through the writer thread (same sequence number, so
//! "highest sequence wins" still holds after a crash), the copies are synced, the index is
//! switched only where it still points to the old place, and then the old file is removed and
//! the directory synced. A crash at any point leaves either the old record or both; both is
//! harmless (equal sequence numbers, the later place wins).
//!
//! A tombstone is copied forward too, unless no other segment holds a dead put record with a
//! lower sequence number (each segment tracks that minimum; a put record is marked dead, under
//! the index lock, the moment something supersedes it). Only then can no older value of its
//! key exist anywhere to be resurrected, and the tombstone is dropped from index and disk.
//!
//! A segment with corrupt regions is not removed: the bad bytes stay for scrub and repair to
//! see, and removing them could let an older version of a key whose newest record was lost in
//! them come back after a restart.

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use crate::dir::{DataDir, Segment};
use crate::error::StoreError;
use crate::location::Location;
use crate::scan::{ScannedRecord, scan_segment};
use crate::segment::EncodedRecord;
use crate::writer::{WriteAck, WriteOp, WriteRequest};

/// Compaction copies in flight at once per segment before waiting for acknowledgements.
const COMPACTION_INFLIGHT_MAX: usize = 64;

/// What one `compact` call did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompactionReport {
    /// Segments rewritten and removed.
    pub segments_compacted: u64,
    /// Live records (and needed tombstones) copied forward.
    pub records_moved: u64,
    /// Tombstones no longer needed, dropped.
    pub tombstones_dropped: u64,
    /// File bytes removed (before counting the copies' new bytes).
    pub bytes_reclaimed: u64,
    /// Candidates left in place because they hold corrupt regions.
    pub segments_skipped_corrupt: u64,
}

type Ack = Receiver<Result<WriteAck, StoreError>>;

/// Compacts every sealed segment of `dir` whose dead fraction is at least `dead_fraction_min`.
pub(crate) fn compact_dir(
    dir: &DataDir,
    queue: &SyncSender<WriteRequest>,
    dead_fraction_min: f64,
    report: &mut CompactionReport,
) -> Result<(), StoreError> {
    dir.check_writable()?;
    // Removing one segment can make another's tombstones droppable, so pick again until no
    // segment qualifies that was not already tried.
    let mut tried = std::collections::BTreeSet::new();
    loop {
        let candidates = candidates(dir, dead_fraction_min);
        let fresh: Vec<_> = candidates
            .into_iter()
            .filter(|s| tried.insert(s.id))
            .collect();
        if fresh.is_empty() {
            return Ok(());
        }
        for segment in fresh {
            compact_segment(dir, queue, &segment, report)?;
        }
    }
}

/// Sealed segments whose reclaimable fraction reaches `dead_fraction_min`, oldest first.
fn candidates(dir: &DataDir, dead_fraction_min: f64) -> Vec<Arc<Segment>> {
    let active = dir.active_segment_id.load(Ordering::Acquire);
    let sealed: Vec<_> = dir
        .segments()
        .range(..active)
        .map(|(_, s)| s.clone())
        .collect();
    sealed
        .into_iter()
        .filter(|segment| reclaimable_fraction(dir, segment) >= dead_fraction_min)
        .collect()
}

/// The fraction of a segment's record bytes that compaction would free: dead records, plus
/// its tombstones if all of them could be dropped now.
fn reclaimable_fraction(dir: &DataDir, segment: &Segment) -> f64 {
    let usage = &segment.usage;
    let total = usage.record_bytes.load(Ordering::Relaxed);
    let mut reclaimable = usage.dead_bytes.load(Ordering::Relaxed);
    let tombstone_max = usage.tombstone_sequence_max.load(Ordering::Relaxed);
    if tombstone_max < dead_put_sequence_min_elsewhere(dir, segment.id) {
        reclaimable += usage.tombstone_bytes.load(Ordering::Relaxed);
    }
    if total == 0 {
        1.0
    } else {
        reclaimable as f64 / total as f64
    }
}

/// The lowest sequence number of a dead put record in any segment but `except`.
fn dead_put_sequence_min_elsewhere(dir: &DataDir, except: u32) -> u64 {
    let segments = dir.segments();
    let others = segments.values().filter(|segment| segment.id != except);
    let minima = others.map(|segment| segment.usage.dead_put_sequence_min.load(Ordering::Relaxed));
    minima.min().unwrap_or(u64::MAX)
}

/// Copies forward what is live in one segment.
struct Mover<'a> {
    dir: &'a DataDir,
    queue: &'a SyncSender<WriteRequest>,
    dead_put_sequence_min_elsewhere: u64,
    in_flight: VecDeque<Ack>,
    droppable_tombstones: Vec<(u128, Location)>,
    records_moved: u64,
}

impl Mover<'_> {
    fn visit(&mut self, segment: &Segment, record: &ScannedRecord<'_>) -> Result<(), StoreError> {
        let location = Location::of(segment.id, record.offset, &record.verified.header);
        let key_hash = crate::store::key_hash(record.key());
        if self.dir.locate(key_hash) != Some(location) {
            return Ok(());
        }
        if location.tombstone && location.sequence < self.dead_put_sequence_min_elsewhere {
            self.droppable_tombstones.push((key_hash, location));
            return Ok(());
        }
        let (ack, answer) = sync_channel(1);
        let copy = EncodedRecord::from_verified(record.bytes, &record.verified);
        let op = WriteOp::Relocate { from: location };
        let request = WriteRequest {
            key_hash,
            record: copy,
            op,
            ack,
        };
        self.queue
            .send(request)
            .map_err(|_| writer_gone(self.dir))?;
        self.in_flight.push_back(answer);
        self.records_moved += 1;
        if self.in_flight.len() >= COMPACTION_INFLIGHT_MAX {
            self.wait_oldest()?;
        }
        Ok(())
    }

    fn wait_oldest(&mut self) -> Result<(), StoreError> {
        match self.in_flight.pop_front() {
            Some(answer) => answer.recv().map_err(|_| writer_gone(self.dir))?.map(drop),
            None => Ok(()),
        }
    }

    fn wait_all(&mut self) -> Result<(), StoreError> {
        while !self.in_flight.is_empty() {
            self.wait_oldest()?;
        }
        Ok(())
    }
}

fn writer_gone(dir: &DataDir) -> StoreError {
    dir.poison("writer thread stopped".to_owned())
}

fn compact_segment(
    dir: &DataDir,
    queue: &SyncSender<WriteRequest>,
    segment: &Segment,
    report: &mut CompactionReport,
) -> Result<(), StoreError> {
    let file_len = segment
        .file
        .len()
        .map_err(|e| StoreError::io("stat", &segment.path, e))?;
    let mut mover = Mover {
        dir,
        queue,
        dead_put_sequence_min_elsewhere: dead_put_sequence_min_elsewhere(dir, segment.id),
        in_flight: VecDeque::new(),
        droppable_tombstones: Vec::new(),
        records_moved: 0,
    };
    let mut failure = None;
    let summary = scan_segment(
        &*segment.file,
        u64::from(segment.id),
        file_len,
        &mut |record| match mover.visit(segment, &record) {
            Ok(()) => ControlFlow::Continue(()),
            Err(error) => {
                failure = Some(error);
                ControlFlow::Break(())
            }
        },
    );
    let waited = mover.wait_all();
    report.records_moved += mover.records_moved;
    if let Some(error) = failure {
        return Err(error);
    }
    let summary = summary.map_err(|e| StoreError::io("scan segment", &segment.path, e))?;
    waited?;
    if !summary.corrupt_regions.is_empty() || summary.tail_bytes() > 0 {
        report.segments_skipped_corrupt += 1;
        return Ok(());
    }
    report.tombstones_dropped += drop_tombstones(dir, &mover.droppable_tombstones);
    remove_segment(dir, segment)?;
    report.segments_compacted += 1;
    report.bytes_reclaimed += file_len;
    Ok(())
}

/// Removes tombstones from the index where they are still the newest word on their key.
fn drop_tombstones(dir: &DataDir, tombstones: &[(u128, Location)]) -> u64 {
    let mut index = dir.index_mut();
    let mut dropped = 0;
    for &(key_hash, location) in tombstones {
        // A failed removal (only possible for a file-backed index that cannot mark itself
        // dirty) keeps the tombstone, which is always safe.
        if index.get(key_hash) == Some(location.pack()) && index.remove(key_hash).is_ok() {
            dir.counters.replace(Some(location), None);
            dropped += 1;
        }
    }
    dropped
}

/// Forgets the segment, then removes its file durably. Readers holding it keep an open handle.
fn remove_segment(dir: &DataDir, segment: &Segment) -> Result<(), StoreError> {
    dir.segments_mut().remove(&segment.id);
    dir.disk
        .remove_file(&segment.path)
        .map_err(|e| StoreError::io("remove compacted segment", &segment.path, e))?;
    dir.disk
        .sync_dir(&dir.path)
        .map_err(|e| StoreError::io("fsync directory", &dir.path, e))
}
