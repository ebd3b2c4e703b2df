//! Opening a data dir: scan every segment, verify every record, rebuild the index.
//!
//! Rules (also in `docs/formats/segment.md`):
//! - Segments are scanned in id order, records in file order; for each key the record with the
//!   highest sequence number wins (on a tie, the later place: a compaction copy), and a winning
//!   tombstone keeps the key deleted.
//! - The newest segment's tail after its last intact record is a torn write: it is truncated
//!   away (and the truncation synced) so new records follow intact ones.
//! - Bad bytes anywhere else are a corrupt region: reported, counted dead, skipped, left on
//!   disk for scrub and repair to see. Recovery never fails because of them.
//! - A newest segment whose file header never became durable is a crash during creation: it is
//!   removed. An older segment with a bad file header is reported and left alone.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nabu_core::AlignedBuf;

use crate::dir::{Segment, segment_path};
use crate::disk::{Disk, DiskFile, IoMode, OpenOptions};
use crate::error::StoreError;
use crate::index::RobinHoodIndex as KeyIndex;
use crate::location::{Location, SEQUENCE_MAX};
use crate::scan::{ScannedRecord, scan_segment};
use crate::segment::{self, BLOCK_BYTES, FILE_HEADER_BYTES, FORMAT_VERSION, FormatError};

/// A run of bytes that failed verification and was skipped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorruptRegion {
    /// The segment file.
    pub file: PathBuf,
    /// Where the bad bytes start.
    pub offset: u64,
    /// How many bytes are bad.
    pub bytes: u64,
}

/// What opening a data dir found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segment files scanned.
    pub segments_scanned: u64,
    /// Intact records found (every version, tombstones included).
    pub records_scanned: u64,
    /// Bytes cut from the newest segment's end: a torn write.
    pub torn_tail_bytes_dropped: u64,
    /// Bad regions skipped; their records are lost.
    pub corrupt_regions: Vec<CorruptRegion>,
    /// Newest segments removed because their creation never completed.
    pub incomplete_segments_removed: Vec<PathBuf>,
    /// Older segments whose file header is unreadable, left on disk and not served.
    pub unreadable_segments: Vec<PathBuf>,
}

/// A data dir as recovery left it.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub io_mode: IoMode,
    pub index: KeyIndex,
    pub segments: BTreeMap<u32, Arc<Segment>>,
    /// The newest segment and where its intact part ends, to append after.
    pub active: Option<(Arc<Segment>, u64)>,
    pub next_segment_id: u32,
    pub next_sequence: u64,
    pub live_records: u64,
    pub tombstones: u64,
    pub report: RecoveryReport,
}

/// Opens and recovers the data dir at `dir`, creating it if missing.
pub(crate) fn recover_dir(
    disk: &dyn Disk,
    dir: &Path,
    options: OpenOptions,
    index_capacity: usize,
) -> Result<Recovered, StoreError> {
    disk.create_dir_all(dir)
        .map_err(|e| StoreError::io("create data dir", dir, e))?;
    let ids = list_segment_ids(disk, dir)?;
    let index = KeyIndex::new(index_capacity).map_err(|source| StoreError::Index {
        dir: dir.to_path_buf(),
        source,
    })?;
    let mut state = Recovered {
        io_mode: probe_io_mode(disk, dir, options)?,
        index,
        segments: BTreeMap::new(),
        active: None,
        next_segment_id: ids.last().map_or(1, |&last| last + 1),
        next_sequence: 1,
        live_records: 0,
        tombstones: 0,
        report: RecoveryReport::default(),
    };
    for (position, &id) in ids.iter().enumerate() {
        let newest = position + 1 == ids.len();
        recover_segment(disk, dir, id, newest, options, &mut state)?;
    }
    for (_, packed) in state.index.iter() {
        if Location::unpack(packed).tombstone {
            state.tombstones += 1;
        } else {
            state.live_records += 1;
        }
    }
    Ok(state)
}

/// The ids of the segment files in `dir`, ascending. Files with other names are ignored.
fn list_segment_ids(disk: &dyn Disk, dir: &Path) -> Result<Vec<u32>, StoreError> {
    let names = disk
        .list_dir(dir)
        .map_err(|e| StoreError::io("list data dir", dir, e))?;
    let mut ids = Vec::new();
    for name in names {
        let Some(id) = segment::parse_segment_file_name(&name) else {
            continue;
        };
        let id = u32::try_from(id).map_err(|_| {
            StoreError::Config(format!(
                "segment id {id:#x} in {} is out of range",
                dir.display()
            ))
        })?;
        ids.push(id);
    }
    ids.sort_unstable();
    if ids.last() == Some(&u32::MAX) {
        return Err(StoreError::Config(format!(
            "{} has used up segment ids",
            dir.display()
        )));
    }
    Ok(ids)
}

/// Which I/O mode files in `dir` get, found by opening a probe file.
fn probe_io_mode(disk: &dyn Disk, dir: &Path, options: OpenOptions) -> Result<IoMode, StoreError> {
    let probe = dir.join("direct-io.probe");
    let open = OpenOptions {
        create: true,
        ..options
    };
    let mode = disk
        .open(&probe, open)
        .map_err(|e| StoreError::io("open", &probe, e))?
        .io_mode();
    disk.remove_file(&probe)
        .map_err(|e| StoreError::io("remove", &probe, e))?;
    Ok(mode)
}

fn recover_segment(
    disk: &dyn Disk,
    dir: &Path,
    id: u32,
    newest: bool,
    options: OpenOptions,
    state: &mut Recovered,
) -> Result<(), StoreError> {
    let path = segment_path(dir, id);
    let file = disk
        .open(&path, options)
        .map_err(|e| StoreError::io("open segment", &path, e))?;
    let file_len = file
        .len()
        .map_err(|e| StoreError::io("stat segment", &path, e))?;
    if let Err(error) = check_file_header(&*file, id, file_len) {
        if let FormatError::UnsupportedVersion(found) = error {
            return Err(StoreError::UnsupportedVersion {
                file: path,
                found,
                supported: FORMAT_VERSION,
            });
        }
        drop(file);
        return set_aside_bad_segment(disk, dir, path, newest, &mut state.report);
    }
    let segment = Arc::new(Segment::new(id, path.clone(), file));
    state.segments.insert(id, segment.clone());
    state.report.segments_scanned += 1;
    let mut failure = None;
    let summary =
        scan_segment(
            &*segment.file,
            u64::from(id),
            file_len,
            &mut |record| match apply_record(state, dir, &segment, &record) {
                Ok(()) => ControlFlow::Continue(()),
                Err(error) => {
                    failure = Some(error);
                    ControlFlow::Break(())
                }
            },
        )
        .map_err(|e| StoreError::io("scan segment", &path, e))?;
    if let Some(error) = failure {
        return Err(error);
    }
    let mut regions = summary.corrupt_regions.clone();
    if newest {
        if summary.tail_bytes() > 0 {
            truncate_tail(&segment, summary.intact_end)?;
            state.report.torn_tail_bytes_dropped += summary.tail_bytes();
        }
        state.active = Some((segment.clone(), summary.intact_end));
    } else if summary.tail_bytes() > 0 {
        regions.push((summary.intact_end, summary.tail_bytes()));
    }
    for (offset, bytes) in regions {
        segment.add_dead_bytes(bytes);
        segment.add_record_bytes(bytes);
        let region = CorruptRegion {
            file: path.clone(),
            offset,
            bytes,
        };
        state.report.corrupt_regions.push(region);
    }
    Ok(())
}

fn check_file_header(file: &dyn DiskFile, id: u32, file_len: u64) -> Result<(), FormatError> {
    if file_len < FILE_HEADER_BYTES {
        return Err(FormatError::BadMagic);
    }
    let mut header = AlignedBuf::zeroed(BLOCK_BYTES);
    file.read_exact_at(header.as_full_mut(), 0)
        .map_err(|_| FormatError::BadMagic)?;
    if segment::decode_file_header(&header)? != u64::from(id) {
        return Err(FormatError::Misplaced);
    }
    Ok(())
}

/// A newest segment with a bad file header is an interrupted creation: remove it. An older
/// one is damage: report it and leave it.
fn set_aside_bad_segment(
    disk: &dyn Disk,
    dir: &Path,
    path: PathBuf,
    newest: bool,
    report: &mut RecoveryReport,
) -> Result<(), StoreError> {
    if !newest {
        report.unreadable_segments.push(path);
        return Ok(());
    }
    disk.remove_file(&path)
        .map_err(|e| StoreError::io("remove incomplete segment", &path, e))?;
    disk.sync_dir(dir)
        .map_err(|e| StoreError::io("sync data dir", dir, e))?;
    report.incomplete_segments_removed.push(path);
    Ok(())
}

fn truncate_tail(segment: &Segment, intact_end: u64) -> Result<(), StoreError> {
    let file = &segment.file;
    file.set_len(intact_end)
        .and_then(|()| file.sync_data())
        .map_err(|e| StoreError::io("truncate torn tail of", &segment.path, e))
}

/// Applies one intact record to the index: the newest record of a key wins.
fn apply_record(
    state: &mut Recovered,
    dir: &Path,
    segment: &Segment,
    record: &ScannedRecord<'_>,
) -> Result<(), StoreError> {
    let header = record.verified.header;
    if header.sequence > SEQUENCE_MAX {
        return Err(StoreError::Corrupt {
            file: segment.path.clone(),
            offset: record.offset,
            reason: format!("sequence number {} is out of range", header.sequence),
        });
    }
    let location = Location::of(segment.id, record.offset, &header);
    let key_hash = crate::store::key_hash(record.key());
    state.report.records_scanned += 1;
    segment.add_record(location);
    state.next_sequence = state.next_sequence.max(header.sequence.saturating_add(1));
    let dead = match state.index.get(key_hash).map(Location::unpack) {
        Some(current) if !location.is_newer_than(current) => Some(location),
        current => {
            state
                .index
                .insert(key_hash, location.pack())
                .map_err(|source| StoreError::Index {
                    dir: dir.to_path_buf(),
                    source,
                })?;
            current
        }
    };
    if let Some(owner) = dead.and_then(|dead| state.segments.get(&dead.segment_id)) {
        owner.mark_dead(dead.expect("owner found for it"));
    }
    Ok(())
}
