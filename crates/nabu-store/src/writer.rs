//! The writer thread of one data dir: group commit.
//!
//! Callers lay out their record (copy and checksum the payload) on their own thread and queue
//! it. The writer takes every request waiting, up to the group-commit bounds, stamps sequence
//! numbers and places, writes them with one `pwritev`, issues one `fdatasync`, then updates the
//! index and acknowledges them all. Sixteen concurrent writers thus cost far fewer
//! `fdatasync`s than writes, and a record becomes visible to readers only once it is durable.
//!
//! Failures: ENOSPC truncates the batch away and answers [`StoreError::NoSpace`]; the dir keeps
//! working. Any other write error and any `fdatasync` error poison the dir: after a failed
//! `fdatasync` the kernel may have dropped the dirty pages and marked them clean, so retrying
//! would report success for data that is gone (the "fsyncgate" lesson).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender};

use crate::dir::{DataDir, Segment, segment_path};
use crate::disk::{OpenOptions, is_no_space};
use crate::error::StoreError;
use crate::location::{Location, SEQUENCE_MAX};
use crate::segment::{self, FILE_HEADER_BYTES};

/// What a queued write does to the index once durable.
#[derive(Clone, Copy, Debug)]
pub(crate) enum WriteOp {
    /// A put or a delete (the record's kind says which).
    Update,
    /// A compaction copy of the record at `from`: it takes over only if the index still
    /// points there, and keeps the original sequence number.
    Relocate { from: Location },
}

/// The answer to a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WriteAck {
    /// Whether the key held a live value before (for `delete`).
    pub replaced_live: bool,
}

/// One queued write.
#[derive(Debug)]
pub(crate) struct WriteRequest {
    pub key_hash: u128,
    pub record: segment::EncodedRecord,
    pub op: WriteOp,
    pub ack: SyncSender<Result<WriteAck, StoreError>>,
}

/// Bounds and options the writer runs under.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WriterLimits {
    pub segment_bytes_max: u64,
    pub group_commit_bytes_max: usize,
    pub group_commit_records_max: usize,
    pub open_options: OpenOptions,
}

/// The segment being appended to and where its intact part ends.
#[derive(Debug)]
struct ActiveSegment {
    segment: Arc<Segment>,
    end: u64,
}

/// The writer thread's state.
#[derive(Debug)]
pub(crate) struct Writer {
    dir: Arc<DataDir>,
    queue: Receiver<WriteRequest>,
    /// Requests taken from the queue but left for the next batch (past a rotation).
    held_back: VecDeque<WriteRequest>,
    active: ActiveSegment,
    next_segment_id: u32,
    next_sequence: u64,
    limits: WriterLimits,
}

impl Writer {
    /// Prepares the writer, creating a first segment if recovery left none to append to.
    pub fn new(
        dir: Arc<DataDir>,
        queue: Receiver<WriteRequest>,
        active: Option<(Arc<Segment>, u64)>,
        next_segment_id: u32,
        next_sequence: u64,
        limits: WriterLimits,
    ) -> Result<Self, StoreError> {
        let (segment, end) = match active {
            Some(active) => active,
            None => (
                create_segment(&dir, next_segment_id, limits.open_options)?,
                FILE_HEADER_BYTES,
            ),
        };
        let next_segment_id = next_segment_id.max(segment.id + 1);
        dir.active_segment_id.store(segment.id, Ordering::Release);
        let active = ActiveSegment { segment, end };
        let held_back = VecDeque::new();
        Ok(Self {
            dir,
            queue,
            held_back,
            active,
            next_segment_id,
            next_sequence,
            limits,
        })
    }

    /// Serves the queue until every sender is gone.
    pub fn run(mut self) {
        while let Some(batch) = self.next_batch() {
            self.commit(batch);
        }
    }

    /// Blocks for one request, then takes whatever else is waiting, up to the bounds.
    fn next_batch(&mut self) -> Option<Vec<WriteRequest>> {
        let first = match self.held_back.pop_front() {
            Some(request) => request,
            None => self.queue.recv().ok()?,
        };
        let mut bytes = first.record.len();
        let mut batch = vec![first];
        while batch.len() < self.limits.group_commit_records_max
            && bytes < self.limits.group_commit_bytes_max
        {
            let next = match self.held_back.pop_front() {
                Some(request) => request,
                None => match self.queue.try_recv() {
                    Ok(request) => request,
                    Err(_) => break,
                },
            };
            bytes += next.record.len();
            batch.push(next);
        }
        Some(batch)
    }

    /// Makes `batch` durable and visible, or fails all of it.
    fn commit(&mut self, mut batch: Vec<WriteRequest>) {
        if let Err(error) = self.prepare_segment(batch[0].record.len() as u64) {
            return fail_all(batch, &error, &self.dir);
        }
        let fits = self.records_that_fit(&batch);
        for request in batch.drain(fits..).rev() {
            self.held_back.push_front(request);
        }
        let locations = match self.place(&mut batch) {
            Ok(locations) => locations,
            Err(error) => return fail_all(batch, &error, &self.dir),
        };
        if let Err(error) = self.write_and_sync(&batch) {
            return fail_all(batch, &error, &self.dir);
        }
        self.publish(batch, &locations);
    }

    /// Checks the dir may be written and rotates if the next record would overfill the segment.
    fn prepare_segment(&mut self, first_record_bytes: u64) -> Result<(), StoreError> {
        self.dir.check_writable()?;
        let has_records = self.active.end > FILE_HEADER_BYTES;
        if has_records && self.active.end + first_record_bytes > self.limits.segment_bytes_max {
            self.rotate()?;
        }
        Ok(())
    }

    /// How many leading requests of `batch` fit in the active segment (at least one).
    fn records_that_fit(&self, batch: &[WriteRequest]) -> usize {
        let mut end = self.active.end;
        let mut fits = 0;
        for request in batch {
            end += request.record.len() as u64;
            if fits > 0 && end > self.limits.segment_bytes_max {
                break;
            }
            fits += 1;
        }
        fits
    }

    /// Stamps each record with its sequence number and place.
    fn place(&mut self, batch: &mut [WriteRequest]) -> Result<Vec<Location>, StoreError> {
        let segment_id = self.active.segment.id;
        let mut offset = self.active.end;
        let mut locations = Vec::with_capacity(batch.len());
        for request in batch.iter_mut() {
            let sequence = match request.op {
                WriteOp::Relocate { from } => from.sequence,
                WriteOp::Update => {
                    if self.next_sequence > SEQUENCE_MAX {
                        return Err(self.dir.poison("sequence numbers exhausted".to_owned()));
                    }
                    self.next_sequence += 1;
                    self.next_sequence - 1
                }
            };
            request.record.seal(sequence, u64::from(segment_id), offset);
            let header = segment::RecordHeader::decode(request.record.bytes())
                .expect("a record just sealed decodes");
            locations.push(Location::of(segment_id, offset, &header));
            offset += request.record.len() as u64;
        }
        Ok(locations)
    }

    /// One `pwritev` of the whole batch, then one `fdatasync`.
    fn write_and_sync(&mut self, batch: &[WriteRequest]) -> Result<(), StoreError> {
        let segment = &self.active.segment;
        let start = self.active.end;
        let bufs: Vec<&[u8]> = batch.iter().map(|request| request.record.bytes()).collect();
        let bytes: usize = bufs.iter().map(|buf| buf.len()).sum();
        let counters = &self.dir.counters;
        counters.write_calls.fetch_add(1, Ordering::Relaxed);
        if let Err(error) = segment.file.write_vectored_at(&bufs, start) {
            return Err(self.undo_failed_write(&error, start));
        }
        counters.fdatasyncs.fetch_add(1, Ordering::Relaxed);
        if let Err(error) = segment.file.sync_data() {
            let path = segment.path.display();
            return Err(self.dir.poison(format!("fdatasync {path} failed: {error}")));
        }
        counters
            .records_written
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        counters
            .bytes_written
            .fetch_add(bytes as u64, Ordering::Relaxed);
        self.active.end = start + bytes as u64;
        Ok(())
    }

    /// After a failed write: on ENOSPC cut the file back so nothing partial stays; otherwise
    /// (or if the cut fails) poison the dir.
    fn undo_failed_write(&self, error: &std::io::Error, start: u64) -> StoreError {
        let segment = &self.active.segment;
        let path = segment.path.display();
        if !is_no_space(error) {
            return self
                .dir
                .poison(format!("write to {path} at {start} failed: {error}"));
        }
        match segment.file.set_len(start) {
            Ok(()) => StoreError::NoSpace {
                dir: self.dir.path.clone(),
            },
            Err(cut) => self
                .dir
                .poison(format!("truncate {path} after ENOSPC failed: {cut}")),
        }
    }

    /// Seals the active segment (one more `fdatasync`, which also persists any truncation)
    /// and starts the next.
    fn rotate(&mut self) -> Result<(), StoreError> {
        let old = &self.active.segment;
        self.dir.counters.fdatasyncs.fetch_add(1, Ordering::Relaxed);
        if let Err(error) = old.file.sync_data() {
            let path = old.path.display();
            return Err(self.dir.poison(format!("fdatasync {path} failed: {error}")));
        }
        let id = self.next_segment_id;
        let segment = create_segment(&self.dir, id, self.limits.open_options)?;
        self.next_segment_id = id
            .checked_add(1)
            .ok_or_else(|| self.dir.poison("segment ids exhausted".to_owned()))?;
        self.dir.active_segment_id.store(id, Ordering::Release);
        self.active = ActiveSegment {
            segment,
            end: FILE_HEADER_BYTES,
        };
        Ok(())
    }

    /// Updates the index for a durable batch and acknowledges each request.
    fn publish(&self, batch: Vec<WriteRequest>, locations: &[Location]) {
        let mut answers = Vec::with_capacity(batch.len());
        let mut dead = Vec::new();
        {
            let mut index = self.dir.index_mut();
            for (request, &location) in batch.iter().zip(locations) {
                self.active.segment.add_record(location);
                let current = index.get(request.key_hash).map(Location::unpack);
                if let WriteOp::Relocate { from } = request.op
                    && current != Some(from)
                {
                    dead.push(location);
                    answers.push(Ok(WriteAck {
                        replaced_live: false,
                    }));
                    continue;
                }
                let answer = match index.insert(request.key_hash, location.pack()) {
                    Ok(_) => {
                        dead.extend(current);
                        self.dir.counters.replace(current, Some(location));
                        Ok(WriteAck {
                            replaced_live: current.is_some_and(|old| !old.tombstone),
                        })
                    }
                    Err(source) => Err(StoreError::Index {
                        dir: self.dir.path.clone(),
                        source,
                    }),
                };
                answers.push(answer);
            }
            for location in dead {
                self.dir.mark_dead(location);
            }
        }
        for (request, answer) in batch.into_iter().zip(answers) {
            let _ = request.ack.send(answer);
        }
    }
}

/// Answers every request of a failed batch with `error` (rebuilt per request).
fn fail_all(batch: Vec<WriteRequest>, error: &StoreError, dir: &DataDir) {
    for request in batch {
        let _ = request.ack.send(Err(same_error(error, dir)));
    }
}

/// A copy of a batch-level error for one request.
fn same_error(error: &StoreError, dir: &DataDir) -> StoreError {
    match error {
        StoreError::NoSpace { dir } => StoreError::NoSpace { dir: dir.clone() },
        StoreError::Poisoned { dir, reason } => StoreError::Poisoned {
            dir: dir.clone(),
            reason: reason.clone(),
        },
        other => StoreError::Poisoned {
            dir: dir.path.clone(),
            reason: other.to_string(),
        },
    }
}

/// Creates segment `id`: file header written and synced, then the directory synced, so the
/// segment exists durably before any record goes in.
pub(crate) fn create_segment(
    dir: &DataDir,
    id: u32,
    options: OpenOptions,
) -> Result<Arc<Segment>, StoreError> {
    let path = segment_path(&dir.path, id);
    let create = OpenOptions {
        create: true,
        ..options
    };
    let failed = |action: &str, error: std::io::Error| {
        if is_no_space(&error) {
            let _ = dir.disk.remove_file(&path);
            return StoreError::NoSpace {
                dir: dir.path.clone(),
            };
        }
        dir.poison(format!("{action} {} failed: {error}", path.display()))
    };
    let file = dir
        .disk
        .open(&path, create)
        .map_err(|e| failed("create", e))?;
    file.write_at(segment::encode_file_header(u64::from(id)).as_full(), 0)
        .and_then(|()| file.sync_data())
        .map_err(|e| failed("write header of", e))?;
    dir.disk
        .sync_dir(&dir.path)
        .map_err(|e| failed("fsync directory of", e))?;
    let segment = Arc::new(Segment::new(id, path, file));
    dir.segments_mut().insert(id, segment.clone());
    Ok(segment)
}
