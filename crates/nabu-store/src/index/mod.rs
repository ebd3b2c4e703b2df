//! The index: shard key → location, one per storage node.
//!
//! [`RobinHoodIndex`] is an open-addressing hash table with Robin Hood insertion and
//! backward-shift deletion, whose 32-byte slots (key, value) fill **one flat memory region**.
//!
//! Why this shape:
//!
//! - **One flat region, no pointers.** The table is nothing but slots, so the same bytes work
//!   in anonymous memory (the default, with transparent huge pages where the kernel allows, so a
//!   lookup costs one DRAM miss and rarely a TLB walk), in a file mapped from a CXL or DAX
//!   device, or in an ordinary file that survives a restart. See [`Backing`].
//! - **Robin Hood ordering** keeps probe sequences short and even (10 M entries in 2^24 slots:
//!   mean distance from home 0.74 slots, longest 15; two slots share a cache line), and lets a
//!   miss stop at the first resident that is closer to its home than the probe: misses cost
//!   about what hits cost. **Backward-shift deletion** keeps that true under churn: no
//!   tombstones, so the table never degrades and never needs a rebuild.
//! - **Keys are used as their own hash.** A key is the first 16 bytes of a BLAKE3 hash, already
//!   uniform; its top bits pick the home slot, so there is no hashing cost, and a table is
//!   ordered by home slot, which growth relies on. Key `0` is reserved as the empty-slot
//!   marker: [`RobinHoodIndex::insert`] rejects it with [`IndexError::ReservedKey`] (the store
//!   maps a zero hash prefix to 1 before it gets here), and `get`/`remove` of 0 find nothing.
//! - **Growth without long pauses.** At 7/8 load the index switches to a table twice the size
//!   and every later insert or remove first moves at least [`MIGRATION_SLOTS_PER_OP`] old slots
//!   across, always cutting where no remaining entry has its home before the cut, so nothing
//!   left behind is separated from its home. Lookups consult the old table only for keys whose
//!   home has not been migrated. The old table is empty and unmapped after
//!   `old slot_count / 128` changes, long before the new one can fill. Fresh memory is the
//!   other pause: a first touch of a huge page zeroes 2 MiB inside the insert that touches it.
//!   So with anonymous backing a helper thread (`nabu-index-prefault`) maps the next table at
//!   1/2 load and faults it in one huge page at a time (`MADV_POPULATE_WRITE`); growth starts
//!   as soon as it is done, and at the latest at 7/8 load, when the helper is stopped (waiting
//!   for at most one huge page) and the pages it did not reach fault in on first touch. The
//!   worst pause of one insert or remove is then: migrating 128 slots plus the rest of a run
//!   (a run is rarely longer than the longest probe distance), plus, only if the helper fell
//!   behind, one huge-page fault (about 0.1 ms on bare metal, a few ms in some VMs), plus, for
//!   file backing (no helper), creating `<path>.next` and its page faults. Memory: from 1/2
//!   load until growth ends, the index holds both tables (3x the smaller one).
//!
//! The index is not synchronised: reads take `&self`, changes `&mut self`, so the store wraps
//! it in a lock (a `RwLock` lets lookups run in parallel).

mod header;
pub mod region;
mod table;
#[cfg(test)]
mod tests;

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use header::{HEADER_BYTES, Header};
pub use region::{PageKind, Region};
use table::{SLOT_BYTES, Table, slots_for};

/// Old slots migrated to the new table by every insert and remove while the index grows.
pub const MIGRATION_SLOTS_PER_OP: usize = 128;

/// Lookups of a [`RobinHoodIndex::get_batch`] whose home slots are being fetched ahead of the
/// one being probed: enough to overlap DRAM misses, few enough to stay within the core's
/// line-fill buffers.
pub const BATCH_PREFETCH_DISTANCE: usize = 16;

/// Where the slots live.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Backing {
    /// Anonymous memory, huge pages where the kernel allows. Lost on exit.
    #[default]
    Anonymous,
    /// A file mapped shared, created (or truncated) at this path: on a DAX file system or a CXL
    /// memory device it puts the index there; on an ordinary file system it lets the index
    /// survive restarts (see [`RobinHoodIndex::open_file`]). The index owns the file: nothing
    /// else may write or truncate it while the index is open. Growth writes `<path>.next` and
    /// renames it over `path` when done.
    File(PathBuf),
}

/// What [`RobinHoodIndex::open_file`] found. Anything but `Clean` means the file's contents
/// cannot be trusted: the index comes back **empty** and the caller rebuilds it from the
/// segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenStatus {
    /// Closed with `mark_clean(expected_generation)`, and every slot checked out.
    Clean,
    /// Not closed cleanly (crash, or changed after the last `mark_clean`).
    NotClean,
    /// Closed cleanly, but for another generation of the segments.
    GenerationMismatch {
        /// The generation the file was marked clean with.
        found: u64,
    },
    /// Marked clean, but the slots break the table's invariants (media corruption).
    Corrupt {
        /// The first broken invariant.
        reason: &'static str,
    },
}

impl OpenStatus {
    /// Whether the index came back with its contents.
    pub fn is_clean(&self) -> bool {
        *self == OpenStatus::Clean
    }
}

/// Errors from the index.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// Key 0 marks empty slots and cannot be stored.
    #[error("key 0 is reserved as the empty-slot marker")]
    ReservedKey,
    /// The requested size does not fit this machine's address space.
    #[error("an index of {entries} entries does not fit in the address space")]
    CapacityOverflow {
        /// Entries asked for.
        entries: usize,
    },
    /// Mapping memory or file I/O failed.
    #[error("index: {action}: {source}")]
    Io {
        /// What was being done, e.g. "create index file".
        action: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// The file does not start with the index magic.
    #[error("not an index file (bad magic)")]
    BadMagic,
    /// The file was written by an incompatible version.
    #[error("index file format version {found} is not supported (this build reads {supported})")]
    UnsupportedVersion {
        /// Version in the file.
        found: u32,
        /// Version this build reads and writes.
        supported: u32,
    },
    /// The file's length does not match its header.
    #[error("index file is {file_bytes} bytes but its header says {expected_bytes}")]
    SizeMismatch {
        /// Actual length.
        file_bytes: u64,
        /// Length the header implies.
        expected_bytes: u64,
    },
    /// The header is malformed (checksum, slot size, slot count or flag).
    #[error("corrupt index file header: {0}")]
    CorruptHeader(&'static str),
    /// The slots break the table's invariants.
    #[error("corrupt index: {0}")]
    Corrupt(&'static str),
}

fn io_error(action: &'static str) -> impl FnOnce(io::Error) -> IndexError {
    move |source| IndexError::Io { action, source }
}

/// Shard key → location map for one storage node. See the [module docs](self).
pub struct RobinHoodIndex {
    /// The table new entries go to (the bigger one while growing).
    current: Table,
    /// The table being emptied into `current`, while growing.
    growth: Option<Growth>,
    /// Present for file backing.
    file: Option<FileState>,
    /// Anonymous backing only: the next, twice as big region, being faulted in by a helper
    /// thread that hands it back when done.
    prefaulting: Option<Prefault>,
    /// Old slots each change migrates while growing ([`MIGRATION_SLOTS_PER_OP`]; tests lower
    /// it to stretch growths over more operations).
    migration_slots_per_op: usize,
}

/// An incremental migration from `old` into the current table. Old slots are visited in
/// position order starting at `start` (a run boundary); `done` of them have been emptied.
#[derive(Debug)]
struct Growth {
    old: Table,
    start: usize,
    done: usize,
}

impl Growth {
    /// Whether `key` may still be in the old table: its home has not been migrated. (Runs are
    /// only cut where no entry has its home before the cut, so every entry whose home lies in
    /// the migrated range has been moved.)
    #[inline(always)]
    fn may_hold(&self, key: u128) -> bool {
        (self.old.home(key).wrapping_sub(self.start) & self.old.mask()) >= self.done
    }

    fn is_done(&self) -> bool {
        self.done == self.old.slot_count()
    }
}

#[derive(Debug)]
struct FileState {
    path: PathBuf,
    /// Generation written in the header.
    generation: u64,
    /// Whether the header on disk says clean: the next change must clear it first.
    header_clean: bool,
}

impl fmt::Debug for RobinHoodIndex {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("RobinHoodIndex")
            .field("len", &self.len())
            .field("slot_count", &self.current.slot_count())
            .field("growing", &self.growth.is_some())
            .field("prefaulting", &self.prefaulting.is_some())
            .field("page_kind", &self.current.region().page_kind())
            .field("file", &self.file)
            .finish()
    }
}

impl RobinHoodIndex {
    /// An index in anonymous memory sized to hold `capacity_entries` before it grows.
    pub fn new(capacity_entries: usize) -> Result<RobinHoodIndex, IndexError> {
        Self::with_backing(capacity_entries, Backing::Anonymous)
    }

    /// An empty index sized to hold `capacity_entries` before it grows, in the given backing.
    /// A file is created or truncated; a stale `<path>.next` from an interrupted growth is
    /// removed.
    pub fn with_backing(
        capacity_entries: usize,
        backing: Backing,
    ) -> Result<RobinHoodIndex, IndexError> {
        let slot_count = slots_for(capacity_entries).ok_or(IndexError::CapacityOverflow {
            entries: capacity_entries,
        })?;
        match backing {
            Backing::Anonymous => Ok(RobinHoodIndex {
                current: anonymous_table(slot_count)?,
                growth: None,
                file: None,
                migration_slots_per_op: MIGRATION_SLOTS_PER_OP,
                prefaulting: None,
            }),
            Backing::File(path) => {
                remove_stale_next(&path)?;
                let current = file_table(&path, slot_count, 0)?;
                Ok(RobinHoodIndex {
                    current,
                    growth: None,
                    file: Some(FileState {
                        path,
                        generation: 0,
                        header_clean: false,
                    }),
                    migration_slots_per_op: MIGRATION_SLOTS_PER_OP,
                    prefaulting: None,
                })
            }
        }
    }

    /// Opens an index file written by [`Backing::File`]. A malformed header (magic, version,
    /// size, checksum) is an error. Otherwise the index is returned with what was found: its
    /// contents only if it was marked clean with `expected_generation` and every slot checks
    /// out (one sequential scan); in every other case it is returned empty, to be rebuilt.
    pub fn open_file(
        path: impl AsRef<Path>,
        expected_generation: u64,
    ) -> Result<(RobinHoodIndex, OpenStatus), IndexError> {
        let path = path.as_ref().to_path_buf();
        remove_stale_next(&path)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_error("open index file"))?;
        let header = read_header(&file)?;
        let slot_count = usize::try_from(header.slot_count)
            .map_err(|_| IndexError::CorruptHeader("slot count exceeds the address space"))?;
        let entry_count = usize::try_from(header.entry_count)
            .map_err(|_| IndexError::CorruptHeader("entry count exceeds the address space"))?;
        let slot_bytes = slot_count
            .checked_mul(SLOT_BYTES)
            .ok_or(IndexError::CorruptHeader(
                "slot count exceeds the address space",
            ))?;
        let region = Region::open_file(&file, HEADER_BYTES, slot_bytes)
            .map_err(io_error("map index file"))?;
        let current = Table::new(region, entry_count);
        let status = if !header.clean {
            OpenStatus::NotClean
        } else if header.generation != expected_generation {
            OpenStatus::GenerationMismatch {
                found: header.generation,
            }
        } else {
            match current.verify() {
                Ok(()) => OpenStatus::Clean,
                Err(reason) => OpenStatus::Corrupt { reason },
            }
        };
        let mut index = RobinHoodIndex {
            current,
            growth: None,
            file: Some(FileState {
                path,
                generation: header.generation,
                header_clean: header.clean,
            }),
            migration_slots_per_op: MIGRATION_SLOTS_PER_OP,
            prefaulting: None,
        };
        if !status.is_clean() {
            index.clear()?;
        }
        Ok((index, status))
    }

    /// The value stored for `key`.
    #[inline]
    pub fn get(&self, key: u128) -> Option<u128> {
        if let Some(growth) = &self.growth
            && growth.may_hold(key)
            && let Some(value) = growth.old.get(key)
        {
            return Some(value);
        }
        self.current.get(key)
    }

    /// Looks up every key of `keys` into the same position of `out`. Faster per key than
    /// [`get`](Self::get) for more than a few keys: the home slots of the next
    /// [`BATCH_PREFETCH_DISTANCE`] keys are prefetched while one is probed, so their DRAM misses
    /// overlap.
    ///
    /// # Panics
    ///
    /// If `keys` and `out` differ in length.
    pub fn get_batch(&self, keys: &[u128], out: &mut [Option<u128>]) {
        assert_eq!(keys.len(), out.len(), "get_batch needs one output per key");
        for &key in keys.iter().take(BATCH_PREFETCH_DISTANCE) {
            self.prefetch(key);
        }
        for (index, (&key, result)) in keys.iter().zip(out.iter_mut()).enumerate() {
            if let Some(&ahead) = keys.get(index + BATCH_PREFETCH_DISTANCE) {
                self.prefetch(ahead);
            }
            *result = self.get(key);
        }
    }

    /// Starts loading the cache line(s) where `key` would be found.
    #[inline(always)]
    fn prefetch(&self, key: u128) {
        if let Some(growth) = &self.growth
            && growth.may_hold(key)
        {
            growth.old.prefetch(key);
        }
        self.current.prefetch(key);
    }

    /// Stores `value` for `key`, returning the value it replaces.
    ///
    /// # Errors
    ///
    /// [`IndexError::ReservedKey`] for key 0. For file backing, I/O errors from marking the
    /// file dirty (first change after [`mark_clean`](Self::mark_clean)) or from growth
    /// (creating or renaming `<path>.next`); a failed insert leaves the entries unchanged.
    pub fn insert(&mut self, key: u128, value: u128) -> Result<Option<u128>, IndexError> {
        if key == 0 {
            return Err(IndexError::ReservedKey);
        }
        self.ensure_dirty()?;
        self.prepare_or_start_growth()?;
        self.migrate_step(self.migration_slots_per_op)?;
        if let Some(growth) = &mut self.growth
            && growth.may_hold(key)
            && let Some(previous) = growth.old.replace(key, value)
        {
            return Ok(Some(previous));
        }
        Ok(self.current.insert(key, value))
    }

    /// Removes `key`, returning its value.
    ///
    /// # Errors
    ///
    /// For file backing only: I/O errors from marking the file dirty or finishing a growth.
    pub fn remove(&mut self, key: u128) -> Result<Option<u128>, IndexError> {
        if key == 0 {
            return Ok(None);
        }
        self.ensure_dirty()?;
        self.migrate_step(self.migration_slots_per_op)?;
        if let Some(growth) = &mut self.growth
            && growth.may_hold(key)
            && let Some(value) = growth.old.remove(key)
        {
            return Ok(Some(value));
        }
        Ok(self.current.remove(key))
    }

    /// Makes growths migrate `slots` old slots per change instead of [`MIGRATION_SLOTS_PER_OP`].
    #[cfg(test)]
    pub(crate) fn set_migration_slots_per_op(&mut self, slots: usize) {
        self.migration_slots_per_op = slots;
    }

    /// Entries stored.
    pub fn len(&self) -> usize {
        self.current.len() + self.growth.as_ref().map_or(0, |growth| growth.old.len())
    }

    /// Whether no entry is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries the index holds before it next grows.
    pub fn capacity(&self) -> usize {
        self.current.grow_at()
    }

    /// Slots of the current table (memory is `slot_count() * 32` bytes, twice that plus the
    /// old table while growing).
    pub fn slot_count(&self) -> usize {
        self.current.slot_count()
    }

    /// Whether an incremental growth is in progress.
    pub fn is_growing(&self) -> bool {
        self.growth.is_some()
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (u128, u128)> + '_ {
        let old = self.growth.iter().flat_map(|growth| growth.old.iter());
        old.chain(self.current.iter())
    }

    /// Whether huge pages were requested and accepted for the current table (see
    /// [`huge_page_resident_bytes`](Self::huge_page_resident_bytes) for what the kernel did).
    pub fn huge_pages(&self) -> bool {
        self.current.region().huge_pages()
    }

    /// Bytes of the current table mapped by huge pages right now, from `/proc/self/smaps`.
    /// A diagnostic; `None` where the kernel does not say.
    pub fn huge_page_resident_bytes(&self) -> Option<u64> {
        self.current.region().huge_page_resident_bytes()
    }

    /// The longest distance of an entry from its home slot (one scan; a diagnostic).
    pub fn max_probe_distance(&self) -> usize {
        let old = self
            .growth
            .as_ref()
            .map_or(0, |growth| growth.old.max_probe_distance());
        old.max(self.current.max_probe_distance())
    }

    /// Checks every table invariant (one scan). An error means memory or the file was
    /// corrupted.
    pub fn verify(&self) -> Result<(), IndexError> {
        if let Some(growth) = &self.growth {
            growth.old.verify().map_err(IndexError::Corrupt)?;
        }
        self.current.verify().map_err(IndexError::Corrupt)
    }

    /// Removes every entry, keeping the current size.
    pub fn clear(&mut self) -> Result<(), IndexError> {
        self.ensure_dirty()?;
        if let Some(growth) = &mut self.growth {
            growth.old.clear();
            growth.done = growth.old.slot_count();
        }
        self.finish_growth()?;
        self.current.clear();
        Ok(())
    }

    /// Completes a growth in progress now (an O(n) pause). `mark_clean` does this first.
    pub fn finish_growth(&mut self) -> Result<(), IndexError> {
        self.migrate_step(usize::MAX)
    }

    /// Writes every slot back to the file (`msync`). No-op for anonymous memory.
    pub fn flush(&self) -> Result<(), IndexError> {
        if let Some(growth) = &self.growth {
            growth
                .old
                .region()
                .flush()
                .map_err(io_error("flush index"))?;
        }
        self.current
            .region()
            .flush()
            .map_err(io_error("flush index"))
    }

    /// Records that the file matches the segments of `generation`: finishes any growth,
    /// flushes every slot, then writes and flushes a header saying clean (the order makes a
    /// crash in between read as not clean). The next change clears the flag again, durably,
    /// before it touches a slot. No-op for anonymous memory.
    pub fn mark_clean(&mut self, generation: u64) -> Result<(), IndexError> {
        if self.file.is_none() {
            return Ok(());
        }
        self.finish_growth()?;
        self.current
            .region()
            .flush()
            .map_err(io_error("flush index"))?;
        self.write_header(true, generation)?;
        let file = self.file.as_mut().expect("checked above");
        sync_parent_directory(&file.path)?;
        file.generation = generation;
        file.header_clean = true;
        Ok(())
    }

    /// Durably marks the file not clean (done automatically before the first change after
    /// [`mark_clean`](Self::mark_clean)). No-op for anonymous memory.
    pub fn mark_dirty(&mut self) -> Result<(), IndexError> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        self.write_header(false, file.generation)?;
        if let Some(file) = &mut self.file {
            file.header_clean = false;
        }
        Ok(())
    }

    fn ensure_dirty(&mut self) -> Result<(), IndexError> {
        if self.file.as_ref().is_some_and(|file| file.header_clean) {
            self.mark_dirty()?;
        }
        Ok(())
    }

    /// Writes and flushes the header of the table that lives at `path` (the old one while
    /// growing; `<path>.next` is created dirty).
    fn write_header(&mut self, clean: bool, generation: u64) -> Result<(), IndexError> {
        let table = match &mut self.growth {
            Some(growth) => &mut growth.old,
            None => &mut self.current,
        };
        let header = Header {
            slot_count: table.slot_count() as u64,
            entry_count: table.len() as u64,
            generation,
            clean,
        };
        let region = table.region_mut();
        header.encode(region.file_prefix_mut());
        region
            .flush_prefix(HEADER_BYTES)
            .map_err(io_error("write index header"))
    }

    /// Runs before every insert. At 3/4 load (anonymous backing) a helper thread starts
    /// faulting in the next table; growth starts when that table is ready, or at the latest at
    /// 7/8 load (stopping the helper: whatever it has not reached faults in on first touch). A
    /// growth that could not keep up (only possible for the smallest tables) is finished
    /// first.
    fn prepare_or_start_growth(&mut self) -> Result<(), IndexError> {
        let len = self.len();
        if self.growth.is_some() {
            if len >= self.current.grow_at() {
                self.finish_growth()?;
                self.start_growth()?;
            }
            return Ok(());
        }
        let prepared = self.prefaulting.as_ref().is_some_and(Prefault::is_done);
        if prepared || len >= self.current.grow_at() {
            return self.start_growth();
        }
        let next_bytes = self.current.slot_count() * 2 * SLOT_BYTES;
        if len >= self.current.prepare_at()
            && next_bytes >= PREFAULT_MIN_BYTES
            && self.prefaulting.is_none()
            && self.file.is_none()
        {
            self.prefaulting = Prefault::spawn(self.current.slot_count() * 2);
        }
        Ok(())
    }

    fn start_growth(&mut self) -> Result<(), IndexError> {
        debug_assert!(self.growth.is_none());
        let slot_count = self.current.slot_count();
        let doubled = slot_count
            .checked_mul(2)
            .filter(|doubled| doubled.checked_mul(SLOT_BYTES).is_some())
            .ok_or(IndexError::CapacityOverflow {
                entries: self.len().saturating_mul(2),
            })?;
        let prefaulted = self.prefaulting.take().and_then(Prefault::finish);
        let bigger = match (prefaulted, &self.file) {
            (Some(region), _) => Table::new(region, 0),
            (None, None) => anonymous_table(doubled)?,
            (None, Some(file)) => file_table(&next_path(&file.path), doubled, file.generation)?,
        };
        let old = std::mem::replace(&mut self.current, bigger);
        let start = old.first_run_start();
        self.growth = Some(Growth {
            old,
            start,
            done: 0,
        });
        Ok(())
    }

    /// Moves at least `budget` old slots (and the rest of the run the last one is in) into
    /// the current table; when the old table is empty, retires it.
    fn migrate_step(&mut self, budget: usize) -> Result<(), IndexError> {
        let Some(growth) = &mut self.growth else {
            return Ok(());
        };
        let total = growth.old.slot_count();
        let mask = growth.old.mask();
        let mut visited = 0usize;
        while growth.done < total {
            let position = (growth.start + growth.done) & mask;
            if visited >= budget && growth.old.is_run_start(position) {
                break;
            }
            if let Some((key, value)) = growth.old.take(position) {
                self.current.insert_absent(key, value);
            }
            growth.done += 1;
            visited += 1;
        }
        if growth.is_done() {
            debug_assert_eq!(growth.old.len(), 0);
            if let Some(file) = &self.file {
                std::fs::rename(next_path(&file.path), &file.path)
                    .map_err(io_error("rename grown index file into place"))?;
            }
            self.growth = None;
        }
        Ok(())
    }
}

/// Smallest next table worth a helper thread: below this, faulting in the pages costs less
/// than starting a thread.
const PREFAULT_MIN_BYTES: usize = region::HUGE_PAGE_BYTES;

/// Bytes the prefault helper populates per system call: one huge page, so that stopping it
/// waits for at most one huge page to be zeroed.
const PREFAULT_CHUNK_BYTES: usize = region::HUGE_PAGE_BYTES;

/// The next, twice as big table of an anonymous index, being faulted in by a helper thread
/// (`MADV_POPULATE_WRITE`, one huge page at a time) so that growth finds its pages present
/// instead of zeroing them inside inserts. The helper owns the region outright and hands it
/// back when done or told to stop, so nothing is shared but the stop flag.
#[derive(Debug)]
struct Prefault {
    stop: Arc<AtomicBool>,
    helper: JoinHandle<Region>,
}

impl Prefault {
    /// Maps memory for `slot_count` slots and starts the helper. `None` if memory or a thread
    /// is not available now: growth then maps its table itself and pays the faults as it goes.
    fn spawn(slot_count: usize) -> Option<Prefault> {
        let region = Region::anonymous(slot_count.checked_mul(SLOT_BYTES)?).ok()?;
        let stop = Arc::new(AtomicBool::new(false));
        let helper_stop = Arc::clone(&stop);
        let helper = std::thread::Builder::new()
            .name("nabu-index-prefault".to_owned())
            .spawn(move || {
                let mut offset = 0;
                while offset < region.len() && !helper_stop.load(Ordering::Relaxed) {
                    let len = PREFAULT_CHUNK_BYTES.min(region.len() - offset);
                    if region.populate_range(offset, len).is_err() {
                        break; // Old kernel: pages fault in on first touch instead.
                    }
                    offset += len;
                }
                region
            })
            .ok()?;
        Some(Prefault { stop, helper })
    }

    fn is_done(&self) -> bool {
        self.helper.is_finished()
    }

    /// Stops the helper (waiting for at most one chunk) and takes the region, populated or
    /// not. `None` only if the helper panicked.
    fn finish(self) -> Option<Region> {
        self.stop.store(true, Ordering::Relaxed);
        self.helper.join().ok()
    }
}

impl Drop for RobinHoodIndex {
    fn drop(&mut self) {
        // Let a helper that is still faulting in an unwanted table stop early; it drops the
        // region itself.
        if let Some(prefault) = &self.prefaulting {
            prefault.stop.store(true, Ordering::Relaxed);
        }
    }
}

fn anonymous_table(slot_count: usize) -> Result<Table, IndexError> {
    let region =
        Region::anonymous(slot_count * SLOT_BYTES).map_err(io_error("map anonymous memory"))?;
    Ok(Table::new(region, 0))
}

/// Creates an empty table file at `path` whose header (not clean) is already on disk.
fn file_table(path: &Path, slot_count: usize, generation: u64) -> Result<Table, IndexError> {
    let mut region = Region::create_file(path, HEADER_BYTES, slot_count * SLOT_BYTES)
        .map_err(io_error("create index file"))?;
    let header = Header {
        slot_count: slot_count as u64,
        entry_count: 0,
        generation,
        clean: false,
    };
    header.encode(region.file_prefix_mut());
    region
        .flush_prefix(HEADER_BYTES)
        .map_err(io_error("write index header"))?;
    Ok(Table::new(region, 0))
}

fn read_header(mut file: &File) -> Result<Header, IndexError> {
    let file_bytes = file.metadata().map_err(io_error("stat index file"))?.len();
    let header_len = file_bytes.min(HEADER_BYTES as u64) as usize;
    let mut bytes = vec![0u8; header_len];
    file.read_exact(&mut bytes)
        .map_err(io_error("read index header"))?;
    Header::decode(&bytes, file_bytes)
}

/// Where growth builds the bigger table of a file-backed index.
fn next_path(path: &Path) -> PathBuf {
    let mut next = path.as_os_str().to_owned();
    next.push(".next");
    PathBuf::from(next)
}

fn remove_stale_next(path: &Path) -> Result<(), IndexError> {
    match std::fs::remove_file(next_path(path)) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(IndexError::Io {
            action: "remove stale grown index file",
            source,
        }),
    }
}

/// Makes a rename of `path` durable.
fn sync_parent_directory(path: &Path) -> Result<(), IndexError> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    File::open(parent)
        .and_then(|directory| directory.sync_all())
        .map_err(io_error("sync index directory"))
}
