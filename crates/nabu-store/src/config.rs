//! [`StoreConfig`]: every knob of the chunk store, each with a default that suits one NVMe
//! device per data dir.

use std::path::PathBuf;

use crate::disk::DirectIo;
use crate::error::StoreError;
use crate::segment::{BLOCK_BYTES, PAYLOAD_BYTES_MAX};

/// The most records one `pwritev` takes (Linux `IOV_MAX`), and so the most one group commit
/// may batch.
pub const GROUP_COMMIT_RECORDS_LIMIT: usize = 1024;

/// Configuration of a [`crate::Store`].
#[derive(Clone, Debug, PartialEq)]
pub struct StoreConfig {
    /// One directory per device. A key's directory is chosen by its hash, so the list (and its
    /// order) must not change over the store's life. Created if missing.
    pub data_dirs: Vec<PathBuf>,
    /// A segment is sealed and a new one started once the next batch would grow it past this
    /// (a single larger record still gets a segment of its own). Default 256 MiB.
    pub segment_bytes_max: u64,
    /// Whether segments bypass the page cache. Default [`DirectIo::Auto`].
    pub direct_io: DirectIo,
    /// A group commit stops taking requests once it holds this many bytes. Default 8 MiB.
    pub group_commit_bytes_max: usize,
    /// A group commit stops taking requests once it holds this many records (at most
    /// [`GROUP_COMMIT_RECORDS_LIMIT`]). Default 256.
    pub group_commit_records_max: usize,
    /// Requests waiting for a data dir's writer thread before `put`/`delete` block.
    /// Default 1024.
    pub write_queue_depth_max: usize,
    /// `compact` rewrites a sealed segment once at least this fraction of its record bytes is
    /// dead (overwritten, deleted or corrupt). Default 0.5.
    pub compaction_dead_fraction_min: f64,
    /// Index entries each data dir reserves room for at open. Default 1 Mi.
    pub index_capacity_per_dir: usize,
}

impl StoreConfig {
    /// A config with the documented defaults over `data_dirs`.
    pub fn new(data_dirs: Vec<PathBuf>) -> Self {
        Self {
            data_dirs,
            segment_bytes_max: 256 << 20,
            direct_io: DirectIo::Auto,
            group_commit_bytes_max: 8 << 20,
            group_commit_records_max: 256,
            write_queue_depth_max: 1024,
            compaction_dead_fraction_min: 0.5,
            index_capacity_per_dir: 1 << 20,
        }
    }

    /// Checks every field's range.
    pub fn validate(&self) -> Result<(), StoreError> {
        let fail = |message: &str| Err(StoreError::Config(message.to_owned()));
        if self.data_dirs.is_empty() {
            return fail("data_dirs is empty");
        }
        let max_segment = (u64::from(u32::MAX) + 1) * BLOCK_BYTES as u64;
        if self.segment_bytes_max < 2 * BLOCK_BYTES as u64 || self.segment_bytes_max >= max_segment
        {
            return fail("segment_bytes_max must be between 8 KiB and 16 TiB");
        }
        if !(1..=GROUP_COMMIT_RECORDS_LIMIT).contains(&self.group_commit_records_max) {
            return fail("group_commit_records_max must be between 1 and 1024");
        }
        if self.group_commit_bytes_max == 0 || self.write_queue_depth_max == 0 {
            return fail("group_commit_bytes_max and write_queue_depth_max must be positive");
        }
        if !(0.0..=1.0).contains(&self.compaction_dead_fraction_min) {
            return fail("compaction_dead_fraction_min must be between 0 and 1");
        }
        debug_assert!(PAYLOAD_BYTES_MAX < max_segment as usize);
        Ok(())
    }
}
