//! [`Store`]: the chunk store of one node, over one or more data dirs.
//!
//! A key's data dir is chosen by its BLAKE3 hash, so each dir holds an independent share of the
//! keys: a dir that fails to open is reported in [`Store::stats`] and its keys answer
//! [`StoreError::DirUnavailable`], while the other dirs keep serving. Opening fails only if no
//! dir opens.
//!
//! Every method is synchronous and takes `&self`; async callers use `spawn_blocking`. Writes
//! return once durable (see [`crate::writer`]); reads verify checksums and never return bytes
//! that fail them.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use nabu_core::AlignedBuf;

use crate::compact::{CompactionReport, compact_dir};
use crate::config::StoreConfig;
use crate::dir::DataDir;
use crate::disk::{Disk, IoMode, OpenOptions};
use crate::error::StoreError;
use crate::location::Location;
use crate::recovery::{RecoveryReport, recover_dir};
use crate::segment::{EncodedRecord, KEY_BYTES_MAX, PAYLOAD_BYTES_MAX, RecordKind};
use crate::writer::{WriteOp, WriteRequest, Writer, WriterLimits};

/// The index key of `key`: the first 16 bytes of its BLAKE3 hash, little-endian, with 0 (the
/// index's empty marker) mapped to 1. Two keys share one with probability 2^-128; reads check
/// the full key stored in the record, so a collision reads as not-found, never as wrong data.
pub(crate) fn key_hash(key: &[u8]) -> u128 {
    let hash = blake3::hash(key);
    let prefix = u128::from_le_bytes(hash.as_bytes()[..16].try_into().expect("16 bytes"));
    prefix.max(1)
}

/// The data dir of `key` among `dir_count`: bytes 16..24 of its BLAKE3 hash, independent of
/// the index key.
fn dir_of(key: &[u8], dir_count: usize) -> usize {
    let hash = blake3::hash(key);
    let word = u64::from_le_bytes(hash.as_bytes()[16..24].try_into().expect("8 bytes"));
    (word % dir_count as u64) as usize
}

/// An open data dir: shared state, its queue and its writer thread.
#[derive(Debug)]
struct OpenDir {
    dir: Arc<DataDir>,
    queue: Option<SyncSender<WriteRequest>>,
    writer: Option<JoinHandle<()>>,
    recovery: RecoveryReport,
    /// The dir's lock, released when the store (after its writer thread) is dropped.
    _lock: Option<std::fs::File>,
}

/// A data dir slot: open, or failed at open with the reason.
#[derive(Debug)]
enum DirSlot {
    Open(OpenDir),
    Failed { path: PathBuf, reason: String },
}

/// Health of one data dir.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DirState {
    /// Serving reads and writes.
    Serving,
    /// Serving reads only, since a write or `fdatasync` failed.
    Poisoned { reason: String },
    /// Failed to open; its keys are unavailable.
    Failed { reason: String },
}

/// Counters of one data dir.
#[derive(Clone, Debug, PartialEq)]
pub struct DirStats {
    /// The directory.
    pub path: PathBuf,
    /// Whether it serves.
    pub state: DirState,
    /// The I/O mode its files got (`None` if it failed to open).
    pub io_mode: Option<IoMode>,
    /// Keys holding a value.
    pub records: u64,
    /// Deleted keys whose tombstone is still kept.
    pub tombstones: u64,
    /// Entries in the index (records plus tombstones).
    pub index_entries: u64,
    /// Bytes of records still needed (padding included).
    pub live_bytes: u64,
    /// Bytes of records compaction can reclaim, corrupt regions included.
    pub dead_bytes: u64,
    /// Segment files served.
    pub segments: u64,
    /// Records written since open (puts, tombstones and compaction copies).
    pub records_written: u64,
    /// `pwritev` calls since open.
    pub write_calls: u64,
    /// `fdatasync` calls since open.
    pub fdatasyncs: u64,
    /// What recovery found at open.
    pub recovery: RecoveryReport,
}

/// One live record as [`Store::check_each`] found it.
#[derive(Debug)]
pub struct RecordCheck {
    /// The record's key; `None` when its header block is damaged (the key is not trusted).
    pub key: Option<Vec<u8>>,
    /// The record's bytes on disk: what rereading it cost.
    pub bytes: u64,
    /// `Ok` when the header and payload match their checksums; else why not.
    pub outcome: Result<(), StoreError>,
}

/// Counters of the whole store: per dir, and summed.
#[derive(Clone, Debug, PartialEq)]
pub struct StoreStats {
    /// One entry per configured data dir, in config order.
    pub dirs: Vec<DirStats>,
    /// Sum of the dirs' `records`.
    pub records: u64,
    /// Sum of the dirs' `live_bytes`.
    pub live_bytes: u64,
    /// Sum of the dirs' `dead_bytes`.
    pub dead_bytes: u64,
    /// Sum of the dirs' `records_written`.
    pub records_written: u64,
    /// Sum of the dirs' `write_calls`.
    pub write_calls: u64,
    /// Sum of the dirs' `fdatasyncs`.
    pub fdatasyncs: u64,
}

/// The chunk store of one node. See the module docs.
#[derive(Debug)]
pub struct Store {
    config: StoreConfig,
    dirs: Vec<DirSlot>,
    /// One compaction at a time: tombstone dropping relies on no other copies in flight.
    compaction: Mutex<()>,
}

impl Store {
    /// Opens (creating if needed) and recovers every data dir of `config`.
    #[allow(
        clippy::needless_pass_by_value,
        reason = "the store takes the disk handle, as its callers hand it over"
    )]
    pub fn open(config: StoreConfig, disk: Arc<dyn Disk>) -> Result<Store, StoreError> {
        config.validate()?;
        let mut dirs = Vec::with_capacity(config.data_dirs.len());
        let mut first_error = None;
        for path in &config.data_dirs {
            match open_dir(&config, disk.clone(), path) {
                Ok(open) => dirs.push(DirSlot::Open(open)),
                // Not a failed disk to serve around: another node has it.
                Err(error @ StoreError::DirInUse { .. }) => return Err(error),
                Err(error) => {
                    let reason = error.to_string();
                    dirs.push(DirSlot::Failed {
                        path: path.clone(),
                        reason,
                    });
                    first_error.get_or_insert(error);
                }
            }
        }
        if let Some(error) =
            first_error.filter(|_| !dirs.iter().any(|d| matches!(d, DirSlot::Open(_))))
        {
            return Err(error);
        }
        Ok(Store {
            config,
            dirs,
            compaction: Mutex::new(()),
        })
    }

    /// Stores `payload` under `key`, replacing any value; returns once durable.
    pub fn put(&self, key: &[u8], payload: &[u8]) -> Result<(), StoreError> {
        self.put_parts(key, &[payload])
    }

    /// [`Store::put`] of the concatenation of `parts` (a shard and its trailer, say), without
    /// joining them into one buffer first.
    pub fn put_parts(&self, key: &[u8], parts: &[&[u8]]) -> Result<(), StoreError> {
        check_key(key)?;
        let len: usize = parts.iter().map(|part| part.len()).sum();
        if len > PAYLOAD_BYTES_MAX {
            return Err(StoreError::PayloadTooLarge {
                len,
                max: PAYLOAD_BYTES_MAX,
            });
        }
        let open = self.dir_for(key)?;
        open.dir.check_writable()?;
        let record = EncodedRecord::from_parts(RecordKind::Put, key, parts);
        submit(open, key_hash(key), record).map(drop)
    }

    /// Deletes `key` with a durable tombstone; returns whether it held a value.
    pub fn delete(&self, key: &[u8]) -> Result<bool, StoreError> {
        check_key(key)?;
        let open = self.dir_for(key)?;
        let hash = key_hash(key);
        if open
            .dir
            .locate(hash)
            .is_none_or(|location| location.tombstone)
        {
            return Ok(false);
        }
        open.dir.check_writable()?;
        let record = EncodedRecord::new(RecordKind::Tombstone, key, &[]);
        Ok(submit(open, hash, record)?.replaced_live)
    }

    /// The payload stored under `key`, checksum verified.
    pub fn get(&self, key: &[u8]) -> Result<Option<AlignedBuf>, StoreError> {
        check_key(key)?;
        self.dir_for(key)?.dir.get(key_hash(key), key)
    }

    /// Whether `key` holds a value (index only; the record is not read).
    pub fn contains(&self, key: &[u8]) -> Result<bool, StoreError> {
        check_key(key)?;
        let location = self.dir_for(key)?.dir.locate(key_hash(key));
        Ok(location.is_some_and(|location| !location.tombstone))
    }

    /// The on-disk size of `key`'s record (header, payload and padding), or `None` if it holds
    /// no value (index only; the record is not read). What deleting it turns into garbage.
    pub fn record_bytes(&self, key: &[u8]) -> Result<Option<u64>, StoreError> {
        check_key(key)?;
        let location = self.dir_for(key)?.dir.locate(key_hash(key));
        Ok(location
            .filter(|location| !location.tombstone)
            .map(|location| location.record_bytes() as u64))
    }

    /// Every key holding a value, in disk order (reads each record's header block).
    pub fn keys(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut keys = Vec::new();
        for open in self.open_dirs() {
            for location in live_locations(&open.dir) {
                keys.extend(open.dir.read_key(location)?);
            }
        }
        Ok(keys)
    }

    /// Reads and verifies every live record in disk order, for scrubbing and listing. `visit`
    /// gets each key and its payload, or the error reading it gave (a corrupt record's key is
    /// not trusted, so errors come without one); it returns `Break` to stop.
    pub fn for_each(
        &self,
        mut visit: impl FnMut(Result<(Vec<u8>, AlignedBuf), StoreError>) -> ControlFlow<()>,
    ) {
        for open in self.open_dirs() {
            for location in live_locations(&open.dir) {
                let item = read_live(&open.dir, location);
                let Some(item) = item.transpose() else {
                    continue;
                };
                if visit(item).is_break() {
                    return;
                }
            }
        }
    }

    /// Rereads and verifies every live record in disk order, for scrubbing: `visit` gets one
    /// [`RecordCheck`] per record (records deleted or moved meanwhile are skipped) and returns
    /// `Break` to stop. Unlike [`Store::for_each`] it names the key of a record whose payload
    /// is damaged, so the caller can repair it; only a damaged header block hides the key.
    pub fn check_each(&self, mut visit: impl FnMut(RecordCheck) -> ControlFlow<()>) {
        for open in self.open_dirs() {
            for location in live_locations(&open.dir) {
                let bytes = location.record_bytes() as u64;
                let check = match open.dir.read_key(location) {
                    Ok(None) => continue,
                    Err(error) => RecordCheck {
                        key: None,
                        bytes,
                        outcome: Err(error),
                    },
                    Ok(Some(key)) => match open.dir.get(key_hash(&key), &key) {
                        Ok(None) => continue,
                        Ok(Some(_)) => RecordCheck {
                            key: Some(key),
                            bytes,
                            outcome: Ok(()),
                        },
                        Err(error) => RecordCheck {
                            key: Some(key),
                            bytes,
                            outcome: Err(error),
                        },
                    },
                };
                if visit(check).is_break() {
                    return;
                }
            }
        }
    }

    /// Rewrites sealed segments whose dead fraction reaches
    /// [`StoreConfig::compaction_dead_fraction_min`]; skips dirs that are poisoned.
    pub fn compact(&self) -> Result<CompactionReport, StoreError> {
        let _one_at_a_time = self.compaction.lock().unwrap_or_else(|p| p.into_inner());
        let mut report = CompactionReport::default();
        for open in self.open_dirs() {
            let (Some(queue), None) = (&open.queue, open.dir.poison_reason()) else {
                continue;
            };
            let threshold = self.config.compaction_dead_fraction_min;
            compact_dir(&open.dir, queue, threshold, &mut report)?;
        }
        Ok(report)
    }

    /// Counters of every data dir.
    pub fn stats(&self) -> StoreStats {
        let dirs: Vec<DirStats> = self.dirs.iter().map(dir_stats).collect();
        let sum = |field: fn(&DirStats) -> u64| dirs.iter().map(field).sum();
        StoreStats {
            records: sum(|d| d.records),
            live_bytes: sum(|d| d.live_bytes),
            dead_bytes: sum(|d| d.dead_bytes),
            records_written: sum(|d| d.records_written),
            write_calls: sum(|d| d.write_calls),
            fdatasyncs: sum(|d| d.fdatasyncs),
            dirs,
        }
    }

    /// The data dir that holds `key`.
    pub fn data_dir_for(&self, key: &[u8]) -> &Path {
        match &self.dirs[dir_of(key, self.dirs.len())] {
            DirSlot::Open(open) => &open.dir.path,
            DirSlot::Failed { path, .. } => path,
        }
    }

    /// The configuration the store was opened with.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    fn dir_for(&self, key: &[u8]) -> Result<&OpenDir, StoreError> {
        match &self.dirs[dir_of(key, self.dirs.len())] {
            DirSlot::Open(open) => Ok(open),
            DirSlot::Failed { path, reason } => Err(StoreError::DirUnavailable {
                dir: path.clone(),
                reason: reason.clone(),
            }),
        }
    }

    fn open_dirs(&self) -> impl Iterator<Item = &OpenDir> {
        self.dirs.iter().filter_map(|slot| match slot {
            DirSlot::Open(open) => Some(open),
            DirSlot::Failed { .. } => None,
        })
    }
}

impl Drop for Store {
    /// Closes the queues and waits for the writer threads to finish what they hold.
    fn drop(&mut self) {
        for slot in &mut self.dirs {
            if let DirSlot::Open(open) = slot {
                open.queue.take();
                if let Some(writer) = open.writer.take() {
                    let _ = writer.join();
                }
            }
        }
    }
}

fn check_key(key: &[u8]) -> Result<(), StoreError> {
    if key.is_empty() {
        return Err(StoreError::EmptyKey);
    }
    if key.len() > KEY_BYTES_MAX {
        return Err(StoreError::KeyTooLong {
            len: key.len(),
            max: KEY_BYTES_MAX,
        });
    }
    Ok(())
}

/// Queues a record on its dir's writer and waits for the answer.
fn submit(
    open: &OpenDir,
    key_hash: u128,
    record: EncodedRecord,
) -> Result<crate::writer::WriteAck, StoreError> {
    let (ack, answer) = sync_channel(1);
    let request = WriteRequest {
        key_hash,
        record,
        op: WriteOp::Update,
        ack,
    };
    let gone = || open.dir.poison("writer thread stopped".to_owned());
    let queue = open.queue.as_ref().ok_or_else(gone)?;
    queue.send(request).map_err(|_| gone())?;
    answer.recv().map_err(|_| gone())?
}

fn open_dir(config: &StoreConfig, disk: Arc<dyn Disk>, path: &Path) -> Result<OpenDir, StoreError> {
    let options = OpenOptions {
        create: false,
        direct_io: config.direct_io,
    };
    disk.create_dir_all(path)
        .map_err(|e| StoreError::io("create data dir", path, e))?;
    let lock = disk.lock_dir(path).map_err(|error| match error.kind() {
        std::io::ErrorKind::WouldBlock => StoreError::DirInUse {
            dir: path.to_path_buf(),
        },
        _ => StoreError::io("lock data dir", path, error),
    })?;
    let recovered = recover_dir(&*disk, path, options, config.index_capacity_per_dir)?;
    let dir = Arc::new(DataDir::new(
        path.to_path_buf(),
        disk,
        recovered.io_mode,
        recovered.index,
        recovered.segments,
    ));
    dir.counters
        .live_records
        .store(recovered.live_records, Ordering::Relaxed);
    dir.counters
        .tombstones
        .store(recovered.tombstones, Ordering::Relaxed);
    let limits = WriterLimits {
        segment_bytes_max: config.segment_bytes_max,
        group_commit_bytes_max: config.group_commit_bytes_max,
        group_commit_records_max: config.group_commit_records_max,
        open_options: options,
    };
    let (queue, requests) = sync_channel(config.write_queue_depth_max);
    let writer = Writer::new(
        dir.clone(),
        requests,
        recovered.active,
        recovered.next_segment_id,
        recovered.next_sequence,
        limits,
    )?;
    let name = format!("nabu-writer-{}", path.display());
    let writer = std::thread::Builder::new()
        .name(name)
        .spawn(move || writer.run())
        .map_err(|e| StoreError::io("spawn writer thread for", path, e))?;
    Ok(OpenDir {
        dir,
        queue: Some(queue),
        writer: Some(writer),
        recovery: recovered.report,
        _lock: lock,
    })
}

/// The locations of every live record of `dir`, sorted into disk order.
fn live_locations(dir: &DataDir) -> Vec<Location> {
    let mut locations: Vec<Location> = dir
        .index()
        .iter()
        .map(|(_, packed)| Location::unpack(packed))
        .filter(|location| !location.tombstone)
        .collect();
    locations.sort_unstable_by_key(|location| (location.segment_id, location.offset_blocks));
    locations
}

/// Reads the key and payload at `location`; `None` if it moved or vanished since listed.
fn read_live(
    dir: &DataDir,
    location: Location,
) -> Result<Option<(Vec<u8>, AlignedBuf)>, StoreError> {
    let Some(key) = dir.read_key(location)? else {
        return Ok(None);
    };
    Ok(dir.get(key_hash(&key), &key)?.map(|payload| (key, payload)))
}

fn dir_stats(slot: &DirSlot) -> DirStats {
    let open = match slot {
        DirSlot::Open(open) => open,
        DirSlot::Failed { path, reason } => return failed_dir_stats(path, reason),
    };
    let dir = &open.dir;
    let counters = &dir.counters;
    // The index lock is taken before, never while, the segments lock is held.
    let index_entries = dir.index().len() as u64;
    let (mut record_bytes, mut dead_bytes) = (0, 0);
    let segments = dir.segments();
    for segment in segments.values() {
        record_bytes += segment.usage.record_bytes.load(Ordering::Relaxed);
        dead_bytes += segment.usage.dead_bytes.load(Ordering::Relaxed);
    }
    let state = match dir.poison_reason() {
        None => DirState::Serving,
        Some(reason) => DirState::Poisoned { reason },
    };
    DirStats {
        path: dir.path.clone(),
        state,
        io_mode: Some(dir.io_mode),
        records: counters.live_records.load(Ordering::Relaxed),
        tombstones: counters.tombstones.load(Ordering::Relaxed),
        index_entries,
        live_bytes: record_bytes.saturating_sub(dead_bytes),
        dead_bytes,
        segments: segments.len() as u64,
        records_written: counters.records_written.load(Ordering::Relaxed),
        write_calls: counters.write_calls.load(Ordering::Relaxed),
        fdatasyncs: counters.fdatasyncs.load(Ordering::Relaxed),
        recovery: open.recovery.clone(),
    }
}

fn failed_dir_stats(path: &Path, reason: &str) -> DirStats {
    DirStats {
        path: path.to_path_buf(),
        state: DirState::Failed {
            reason: reason.to_owned(),
        },
        io_mode: None,
        records: 0,
        tombstones: 0,
        index_entries: 0,
        live_bytes: 0,
        dead_bytes: 0,
        segments: 0,
        records_written: 0,
        write_calls: 0,
        fdatasyncs: 0,
        recovery: RecoveryReport::default(),
    }
}
