//! The CXL tier's memory: one fixed-size mapped region and an extent allocator over it.
//!
//! **Where the memory comes from.** Anonymous memory by default (on a machine without CXL
//! the tier is then an ordinary second memory region, so the code path is the real one), or
//! a shared mapping of `tiers.cxl_path`: a DAX device (`/dev/daxX.Y`, CXL memory exposed as
//! a character device) or a file on a DAX or tmpfs mount. The region's size is fixed at
//! start (`tiers.cxl_bytes`); nothing is ever allocated outside it, so the tier's byte bound
//! holds by construction. The allocator's own bookkeeping lives in ordinary memory, so the
//! region holds nothing but cached bytes.
//!
//! **Why best-fit extents, not slabs.** The values are shards: mostly one size per layout
//! (1 MiB for `ec:4+2` over 4 MiB stripes, 4 MiB for replicas) with shorter last stripes
//! and small-object replicas in between. Slab classes would waste up to half a class at
//! every boundary for the odd sizes; best-fit over free extents, split on allocation and
//! coalesced with both neighbours on free, wastes at most one 4 KiB granule per value
//! (extents are 4 KiB-aligned, so a copy out lands DMA-ready) and costs O(log n) per
//! operation with two ordered maps. When free bytes suffice but no single extent does
//! (fragmentation), the tier evicts more values until one fits.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use memmap2::{MmapMut, MmapOptions};

/// The allocation granule and alignment of extents.
pub const EXTENT_ALIGN_BYTES: u64 = 4096;

/// A fixed-size memory region (see the module docs).
#[derive(Debug)]
pub struct Region {
    map: MmapMut,
    path: Option<PathBuf>,
}

impl Region {
    /// `bytes` of anonymous memory (rounded down to the granule).
    pub fn anonymous(bytes: u64) -> std::io::Result<Self> {
        let bytes = round_down(bytes);
        let map = MmapOptions::new().len(bytes as usize).map_anon()?;
        Ok(Self { map, path: None })
    }

    /// `bytes` of `path` mapped shared: a DAX device or a file (created and grown to `bytes`
    /// when it is a regular file shorter than that).
    pub fn file(path: &Path, bytes: u64) -> std::io::Result<Self> {
        let bytes = round_down(bytes);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let metadata = file.metadata()?;
        if metadata.is_file() && metadata.len() < bytes {
            file.set_len(bytes)?;
        }
        // SAFETY: the mapping is private to this process's tier: the node owns the file for
        // its life (documented for `tiers.cxl_path`), and every access goes through the
        // allocator's disjoint extents under the tier's lock.
        let map = unsafe { MmapOptions::new().len(bytes as usize).map_mut(&file)? };
        Ok(Self {
            map,
            path: Some(path.to_owned()),
        })
    }

    /// The region's size.
    pub fn len(&self) -> u64 {
        self.map.len() as u64
    }

    /// Whether the region is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The mapped file or device; `None` for anonymous memory.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The bytes of `extent`.
    pub fn bytes(&self, extent: Extent, len: usize) -> &[u8] {
        &self.map[extent.offset as usize..extent.offset as usize + len]
    }

    /// The bytes of `extent`, writable.
    pub fn bytes_mut(&mut self, extent: Extent, len: usize) -> &mut [u8] {
        &mut self.map[extent.offset as usize..extent.offset as usize + len]
    }
}

/// A piece of a region: offset and length, both multiples of [`EXTENT_ALIGN_BYTES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Where it starts.
    pub offset: u64,
    /// How long it is.
    pub len: u64,
}

/// Best-fit allocation of extents in `0..capacity` (see the module docs).
#[derive(Debug)]
pub struct ExtentAllocator {
    capacity: u64,
    used: u64,
    /// Free extents by offset → length.
    by_offset: BTreeMap<u64, u64>,
    /// Free extents by (length, offset), for best fit.
    by_size: BTreeSet<(u64, u64)>,
}

impl ExtentAllocator {
    /// An allocator with all of `0..capacity` free (`capacity` rounded down to the granule).
    pub fn new(capacity: u64) -> Self {
        let capacity = round_down(capacity);
        let mut allocator = Self {
            capacity,
            used: 0,
            by_offset: BTreeMap::new(),
            by_size: BTreeSet::new(),
        };
        if capacity > 0 {
            allocator.add_free(0, capacity);
        }
        allocator
    }

    /// The extent length `bytes` takes (rounded up to the granule; at least one granule).
    pub fn extent_len(bytes: u64) -> u64 {
        bytes.max(1).next_multiple_of(EXTENT_ALIGN_BYTES)
    }

    /// The smallest free extent that holds `bytes`, split off and marked used; `None` when no
    /// single free extent is large enough.
    pub fn allocate(&mut self, bytes: u64) -> Option<Extent> {
        let len = Self::extent_len(bytes);
        let &(free_len, offset) = self.by_size.range((len, 0)..).next()?;
        self.remove_free(offset, free_len);
        if free_len > len {
            self.add_free(offset + len, free_len - len);
        }
        self.used += len;
        Some(Extent { offset, len })
    }

    /// Returns `extent` (from [`allocate`](Self::allocate)), merged with free neighbours.
    pub fn free(&mut self, extent: Extent) {
        let (mut offset, mut len) = (extent.offset, extent.len);
        debug_assert!(offset + len <= self.capacity && self.used >= len);
        self.used -= len;
        if let Some((&before, &before_len)) = self.by_offset.range(..offset).next_back()
            && before + before_len == offset
        {
            self.remove_free(before, before_len);
            offset = before;
            len += before_len;
        }
        if let Some(&after_len) = self.by_offset.get(&(offset + len)) {
            self.remove_free(offset + len, after_len);
            len += after_len;
        }
        self.add_free(offset, len);
    }

    /// Bytes in used extents.
    pub fn used_bytes(&self) -> u64 {
        self.used
    }

    /// The allocator's size.
    pub fn capacity_bytes(&self) -> u64 {
        self.capacity
    }

    /// Free extents (1 when nothing is fragmented).
    pub fn free_extents(&self) -> usize {
        self.by_offset.len()
    }

    fn add_free(&mut self, offset: u64, len: u64) {
        self.by_offset.insert(offset, len);
        self.by_size.insert((len, offset));
    }

    fn remove_free(&mut self, offset: u64, len: u64) {
        self.by_offset.remove(&offset);
        self.by_size.remove(&(len, offset));
    }
}

fn round_down(bytes: u64) -> u64 {
    bytes / EXTENT_ALIGN_BYTES * EXTENT_ALIGN_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_fit_splits_and_free_coalesces_back_to_one_extent() {
        let mut allocator = ExtentAllocator::new(64 * EXTENT_ALIGN_BYTES);
        let a = allocator.allocate(1).unwrap();
        let b = allocator.allocate(3 * EXTENT_ALIGN_BYTES).unwrap();
        let c = allocator.allocate(EXTENT_ALIGN_BYTES + 1).unwrap();
        assert_eq!((a.len, b.len, c.len), (4096, 3 * 4096, 2 * 4096));
        assert_eq!(allocator.used_bytes(), 6 * EXTENT_ALIGN_BYTES);
        // A hole of 3 granules between a and c: a 2-granule value fits there (best fit),
        // not at the large tail.
        allocator.free(b);
        let d = allocator.allocate(2 * EXTENT_ALIGN_BYTES).unwrap();
        assert_eq!(d.offset, b.offset);
        for extent in [a, c, d] {
            allocator.free(extent);
        }
        assert_eq!(allocator.used_bytes(), 0);
        assert_eq!(allocator.free_extents(), 1);
        assert!(allocator.allocate(65 * EXTENT_ALIGN_BYTES).is_none());
        assert!(allocator.allocate(64 * EXTENT_ALIGN_BYTES).is_some());
        assert!(allocator.allocate(1).is_none());
    }

    #[test]
    fn a_file_region_holds_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cxl");
        let mut region = Region::file(&path, 16 * EXTENT_ALIGN_BYTES + 5).unwrap();
        assert_eq!(region.len(), 16 * EXTENT_ALIGN_BYTES);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), region.len());
        let extent = Extent {
            offset: 4096,
            len: 4096,
        };
        region.bytes_mut(extent, 5).copy_from_slice(b"hello");
        assert_eq!(region.bytes(extent, 5), b"hello");
        assert_eq!(region.path(), Some(path.as_path()));
    }
}
