//! One data directory (one device): its segments, its index, its poison flag and counters,
//! and the read path.
//!
//! Every data dir is independent: its own writer thread, its own sequence numbers, its own
//! index. Losing a dir loses only the keys that hash to it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use nabu_core::AlignedBuf;

use crate::disk::{Disk, DiskFile, IoMode};
use crate::error::StoreError;
use crate::index::RobinHoodIndex as KeyIndex;
use crate::location::Location;
use crate::segment::{self, BLOCK_BYTES, FormatError, RECORD_HEADER_BYTES, RecordKind};

/// How often a read follows a location that compaction moved while it was reading.
const READ_ATTEMPTS_MAX: usize = 8;

/// Byte counts of one segment, for picking compaction candidates.
#[derive(Debug)]
pub(crate) struct SegmentUsage {
    /// Bytes of intact records in the file (padding included).
    pub record_bytes: AtomicU64,
    /// Bytes of records no longer needed, plus corrupt regions.
    pub dead_bytes: AtomicU64,
    /// The lowest sequence number of a dead put record in the file (`u64::MAX` if none): a
    /// tombstone with a lower sequence number cannot have an older value of its key here.
    pub dead_put_sequence_min: AtomicU64,
    /// Bytes of tombstones still in force.
    pub tombstone_bytes: AtomicU64,
    /// The highest sequence number of any tombstone written here (0 if none).
    pub tombstone_sequence_max: AtomicU64,
}

/// One open segment file.
#[derive(Debug)]
pub(crate) struct Segment {
    pub id: u32,
    pub path: PathBuf,
    pub file: Box<dyn DiskFile>,
    pub usage: SegmentUsage,
}

impl Segment {
    pub fn new(id: u32, path: PathBuf, file: Box<dyn DiskFile>) -> Self {
        let usage = SegmentUsage {
            record_bytes: AtomicU64::new(0),
            dead_bytes: AtomicU64::new(0),
            dead_put_sequence_min: AtomicU64::new(u64::MAX),
            tombstone_bytes: AtomicU64::new(0),
            tombstone_sequence_max: AtomicU64::new(0),
        };
        Self {
            id,
            path,
            file,
            usage,
        }
    }

    /// Counts bytes that are no record at all (corrupt regions) into the file's total.
    pub fn add_record_bytes(&self, bytes: u64) {
        self.usage.record_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts an intact record at `location` (in this segment).
    pub fn add_record(&self, location: Location) {
        let bytes = location.record_bytes() as u64;
        self.add_record_bytes(bytes);
        if location.tombstone {
            self.usage
                .tombstone_bytes
                .fetch_add(bytes, Ordering::Relaxed);
            self.usage
                .tombstone_sequence_max
                .fetch_max(location.sequence, Ordering::Relaxed);
        }
    }

    /// Counts bytes that are no record at all (corrupt regions) as dead.
    pub fn add_dead_bytes(&self, bytes: u64) {
        self.usage.dead_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts the record at `location` (in this segment) as dead.
    pub fn mark_dead(&self, location: Location) {
        debug_assert_eq!(location.segment_id, self.id);
        let bytes = location.record_bytes() as u64;
        self.add_dead_bytes(bytes);
        if location.tombstone {
            self.usage
                .tombstone_bytes
                .fetch_sub(bytes, Ordering::Relaxed);
        } else {
            self.usage
                .dead_put_sequence_min
                .fetch_min(location.sequence, Ordering::Relaxed);
        }
    }

    fn corrupt(&self, offset: u64, reason: &dyn ToString) -> StoreError {
        StoreError::Corrupt {
            file: self.path.clone(),
            offset,
            reason: reason.to_string(),
        }
    }
}

/// Operation counters of one data dir.
#[derive(Debug, Default)]
pub(crate) struct DirCounters {
    pub records_written: AtomicU64,
    pub write_calls: AtomicU64,
    pub fdatasyncs: AtomicU64,
    pub bytes_written: AtomicU64,
    pub live_records: AtomicU64,
    pub tombstones: AtomicU64,
}

impl DirCounters {
    /// Updates live record and tombstone counts for an index entry going from `old` to `new`.
    pub fn replace(&self, old: Option<Location>, new: Option<Location>) {
        for (location, delta) in [(old, -1i64), (new, 1)] {
            let Some(location) = location else { continue };
            let counter = if location.tombstone {
                &self.tombstones
            } else {
                &self.live_records
            };
            if delta > 0 {
                counter.fetch_add(1, Ordering::Relaxed);
            } else {
                counter.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

/// The state of one data dir shared by readers, its writer thread and compaction.
#[derive(Debug)]
pub(crate) struct DataDir {
    pub path: PathBuf,
    pub disk: Arc<dyn Disk>,
    pub io_mode: IoMode,
    pub index: RwLock<KeyIndex>,
    pub segments: RwLock<BTreeMap<u32, Arc<Segment>>>,
    /// The segment the writer appends to; compaction never touches it.
    pub active_segment_id: AtomicU32,
    pub counters: DirCounters,
    poisoned: AtomicBool,
    poison_reason: Mutex<Option<String>>,
}

impl DataDir {
    pub fn new(
        path: PathBuf,
        disk: Arc<dyn Disk>,
        io_mode: IoMode,
        index: KeyIndex,
        segments: BTreeMap<u32, Arc<Segment>>,
    ) -> Self {
        Self {
            path,
            disk,
            io_mode,
            index: RwLock::new(index),
            segments: RwLock::new(segments),
            active_segment_id: AtomicU32::new(0),
            counters: DirCounters::default(),
            poisoned: AtomicBool::new(false),
            poison_reason: Mutex::new(None),
        }
    }

    pub fn index(&self) -> RwLockReadGuard<'_, KeyIndex> {
        self.index
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn index_mut(&self) -> RwLockWriteGuard<'_, KeyIndex> {
        self.index
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn segments(&self) -> RwLockReadGuard<'_, BTreeMap<u32, Arc<Segment>>> {
        self.segments
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn segments_mut(&self) -> RwLockWriteGuard<'_, BTreeMap<u32, Arc<Segment>>> {
        self.segments
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn segment(&self, id: u32) -> Option<Arc<Segment>> {
        self.segments().get(&id).cloned()
    }

    /// Marks the record at `location` dead in its segment, if the segment still exists.
    /// Called with the index write lock held, so that compaction never sees a tombstone
    /// before the put records it superseded are marked.
    pub fn mark_dead(&self, location: Location) {
        if let Some(segment) = self.segment(location.segment_id) {
            segment.mark_dead(location);
        }
    }

    /// Refuses further writes, keeping the first reason; returns the error to report.
    pub fn poison(&self, reason: String) -> StoreError {
        let mut slot = self
            .poison_reason
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let reason = slot.get_or_insert(reason).clone();
        self.poisoned.store(true, Ordering::Release);
        StoreError::Poisoned {
            dir: self.path.clone(),
            reason,
        }
    }

    /// Why the dir refuses writes, if it does.
    pub fn poison_reason(&self) -> Option<String> {
        if !self.poisoned.load(Ordering::Acquire) {
            return None;
        }
        self.poison_reason
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// `Ok` unless the dir is poisoned.
    pub fn check_writable(&self) -> Result<(), StoreError> {
        match self.poison_reason() {
            None => Ok(()),
            Some(reason) => Err(StoreError::Poisoned {
                dir: self.path.clone(),
                reason,
            }),
        }
    }

    /// The current location of the key with hash `key_hash`, tombstones included.
    pub fn locate(&self, key_hash: u128) -> Option<Location> {
        self.index().get(key_hash).map(Location::unpack)
    }

    /// Reads the payload stored for `key`, following the location if compaction moves it.
    pub fn get(&self, key_hash: u128, key: &[u8]) -> Result<Option<AlignedBuf>, StoreError> {
        let mut location = self.locate(key_hash);
        for _ in 0..READ_ATTEMPTS_MAX {
            let Some(current) = location.filter(|found| !found.tombstone) else {
                return Ok(None);
            };
            if let Some(segment) = self.segment(current.segment_id) {
                return read_payload(&segment, current, key);
            }
            // Compaction removed the segment after we looked the key up; look again.
            location = self.locate(key_hash);
            if location == Some(current) {
                break;
            }
        }
        Err(StoreError::Corrupt {
            file: self.path.clone(),
            offset: 0,
            reason: "index points to a missing segment".to_owned(),
        })
    }

    /// Reads the key stored at `location` (header block only).
    pub fn read_key(&self, location: Location) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(segment) = self.segment(location.segment_id) else {
            return Ok(None);
        };
        let mut head = AlignedBuf::zeroed(BLOCK_BYTES);
        read_exact(&segment, location.offset(), &mut [head.as_full_mut()])?;
        let header = check_header(&segment, location, &head)?;
        Ok(Some(
            head[RECORD_HEADER_BYTES..][..usize::from(header.key_len)].to_vec(),
        ))
    }
}

fn read_exact(segment: &Segment, offset: u64, bufs: &mut [&mut [u8]]) -> Result<(), StoreError> {
    segment
        .file
        .read_exact_vectored_at(bufs, offset)
        .map_err(|error| {
            if error.kind() == std::io::ErrorKind::UnexpectedEof {
                segment.corrupt(offset, &"record extends past the end of the file")
            } else {
                StoreError::io("read record from", &segment.path, error)
            }
        })
}

/// Decodes the header in `head` and checks it matches what the index said of the record.
fn check_header(
    segment: &Segment,
    location: Location,
    head: &[u8],
) -> Result<segment::RecordHeader, StoreError> {
    let offset = location.offset();
    let header = segment::RecordHeader::decode(head).map_err(|e| segment.corrupt(offset, &e))?;
    let matches = header.segment_id == u64::from(segment.id)
        && header.record_offset == offset
        && header.sequence == location.sequence
        && header.record_bytes() == location.record_bytes()
        && (header.kind == RecordKind::Tombstone) == location.tombstone;
    if !matches {
        return Err(segment.corrupt(offset, &FormatError::Misplaced));
    }
    Ok(header)
}

/// Reads and verifies the record at `location`; `None` if it holds another key (a 128-bit
/// hash-prefix collision, probability 2^-128 per pair).
fn read_payload(
    segment: &Segment,
    location: Location,
    key: &[u8],
) -> Result<Option<AlignedBuf>, StoreError> {
    let offset = location.offset();
    let mut head = AlignedBuf::zeroed(BLOCK_BYTES);
    let mut tail = AlignedBuf::zeroed(location.record_bytes() - BLOCK_BYTES);
    if tail.is_empty() {
        read_exact(segment, offset, &mut [head.as_full_mut()])?;
    } else {
        read_exact(
            segment,
            offset,
            &mut [head.as_full_mut(), tail.as_full_mut()],
        )?;
    }
    let header = check_header(segment, location, &head)?;
    let stored_key = &head[RECORD_HEADER_BYTES..][..usize::from(header.key_len)];
    let payload_len = header.payload_len as usize;
    let payload = if tail.is_empty() {
        AlignedBuf::copy_from(&head[header.payload_offset()..][..payload_len])
    } else {
        tail.set_len(payload_len);
        tail
    };
    let body_crc = segment::body_crc(stored_key, &payload);
    let record_crc = nabu_core::checksum::crc32c_append(body_crc, &head[..56]);
    if record_crc != header.record_crc {
        return Err(segment.corrupt(offset, &FormatError::RecordChecksum));
    }
    Ok((stored_key == key).then_some(payload))
}

/// The path of segment `id` in `dir`.
pub(crate) fn segment_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(segment::segment_file_name(u64::from(id)))
}
