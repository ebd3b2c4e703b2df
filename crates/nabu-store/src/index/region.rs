//! One flat, page-aligned memory region: anonymous memory (huge pages where the kernel allows)
//! or a shared mapping of a file.
//!
//! The index keeps every slot in one of these, and nothing else: no pointers, no allocator
//! metadata. That is what lets the same table live on a CXL or DAX device (map a file there) or
//! survive a restart (map an ordinary file). The region is public so that benchmarks and other
//! tiers can measure or use memory with exactly the same page treatment as the index.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;
use std::ptr::NonNull;

use memmap2::{MmapMut, MmapOptions};

/// Size of an x86-64 / aarch64 (4 KiB granule) huge page: 2 MiB.
pub const HUGE_PAGE_BYTES: usize = 2 << 20;

/// `log2(HUGE_PAGE_BYTES)`, the `MAP_HUGE_*` shift passed to `mmap` with `MAP_HUGETLB`.
#[cfg(target_os = "linux")]
const HUGE_PAGE_SHIFT: u8 = 21;

/// Which kind of pages back a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageKind {
    /// Ordinary base pages (4 KiB on x86-64): small regions, file mappings, or a kernel
    /// without transparent huge pages.
    Base,
    /// Transparent huge pages were requested with `madvise(MADV_HUGEPAGE)` and the kernel's
    /// THP mode is not `never`. The kernel still decides page by page at fault time;
    /// [`Region::huge_page_resident_bytes`] says how much actually took.
    TransparentHuge,
    /// Explicit huge pages from the hugetlbfs pool (`MAP_HUGETLB`), reserved at map time.
    HugeTlb,
}

/// A flat, zero-initialised memory region of `len()` bytes whose start is page-aligned (and
/// 2 MiB-aligned for anonymous regions of at least 2 MiB, so that huge pages can map it).
///
/// File-backed regions map the whole file shared; the usable bytes start at `data_offset` so
/// the file can carry a header in front of them. Like every shared file mapping, the file must
/// not be written by anyone else while it is mapped.
#[derive(Debug)]
pub struct Region {
    map: MmapMut,
    data_offset: usize,
    data_len: usize,
    page_kind: PageKind,
    file_backed: bool,
}

impl Region {
    /// Maps `data_len` bytes of zeroed anonymous memory.
    ///
    /// Regions of at least 2 MiB first try explicit huge pages (`MAP_HUGETLB`, which fails at
    /// once when the hugetlbfs pool is too small), then fall back silently to ordinary memory
    /// aligned to 2 MiB with `madvise(MADV_HUGEPAGE)`. Pages are faulted in on first touch.
    pub fn anonymous(data_len: usize) -> io::Result<Region> {
        assert!(data_len > 0, "a region needs at least one byte");
        if data_len >= HUGE_PAGE_BYTES
            && let Some(region) = Self::anonymous_hugetlb(data_len)
        {
            return Ok(region);
        }
        // Over-allocate by one huge page so the data can start on a 2 MiB boundary: only touched
        // pages consume memory, so the slack costs address space, not RAM.
        let wants_huge = data_len >= HUGE_PAGE_BYTES;
        let map_len = if wants_huge {
            data_len
                .checked_add(HUGE_PAGE_BYTES)
                .ok_or_else(|| io::Error::other("region size overflows usize"))?
        } else {
            data_len
        };
        let map = MmapOptions::new().len(map_len).map_anon()?;
        let address = map.as_ptr() as usize;
        let data_offset = if wants_huge {
            address.next_multiple_of(HUGE_PAGE_BYTES) - address
        } else {
            0
        };
        let page_kind = if wants_huge && advise_huge_pages(&map, data_offset, data_len) {
            PageKind::TransparentHuge
        } else {
            PageKind::Base
        };
        Ok(Region {
            map,
            data_offset,
            data_len,
            page_kind,
            file_backed: false,
        })
    }

    #[cfg(target_os = "linux")]
    fn anonymous_hugetlb(data_len: usize) -> Option<Region> {
        let map_len = data_len.checked_next_multiple_of(HUGE_PAGE_BYTES)?;
        let map = MmapOptions::new()
            .len(map_len)
            .huge(Some(HUGE_PAGE_SHIFT))
            .map_anon()
            .ok()?;
        Some(Region {
            map,
            data_offset: 0,
            data_len,
            page_kind: PageKind::HugeTlb,
            file_backed: false,
        })
    }

    #[cfg(not(target_os = "linux"))]
    fn anonymous_hugetlb(_data_len: usize) -> Option<Region> {
        None
    }

    /// Creates (or truncates) the file at `path` to `data_offset + data_len` zero bytes and maps
    /// it shared. The file is sparse until written.
    pub fn create_file(path: &Path, data_offset: usize, data_len: usize) -> io::Result<Region> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        let file_len = data_offset
            .checked_add(data_len)
            .ok_or_else(|| io::Error::other("region size overflows usize"))?;
        file.set_len(file_len as u64)?;
        Self::map_file(&file, data_offset, data_len)
    }

    /// Maps an existing file shared; the usable bytes are `data_offset..data_offset + data_len`.
    /// The caller has checked that the file is exactly that long.
    pub fn open_file(file: &File, data_offset: usize, data_len: usize) -> io::Result<Region> {
        Self::map_file(file, data_offset, data_len)
    }

    fn map_file(file: &File, data_offset: usize, data_len: usize) -> io::Result<Region> {
        // SAFETY: a shared mapping is only unsound if the file is changed behind our back
        // (truncated or written by another process) while mapped. The index owns its file
        // exclusively by contract (documented on `Backing::File` and `Region`), and every length
        // we later slice with is checked against the mapping's length.
        let map = unsafe {
            MmapOptions::new()
                .len(data_offset + data_len)
                .map_mut(file)?
        };
        Ok(Region {
            map,
            data_offset,
            data_len,
            page_kind: PageKind::Base,
            file_backed: true,
        })
    }

    /// Number of usable bytes.
    pub fn len(&self) -> usize {
        self.data_len
    }

    /// Always false: regions have at least one byte.
    pub fn is_empty(&self) -> bool {
        self.data_len == 0
    }

    /// The usable bytes.
    #[inline]
    pub fn bytes(&self) -> &[u8] {
        &self.map[self.data_offset..self.data_offset + self.data_len]
    }

    /// A pointer to the first usable byte, for owners that keep a typed view of the region.
    /// The mapping never moves while the region lives.
    pub(crate) fn data_pointer(&mut self) -> NonNull<u8> {
        let pointer = self.map.as_mut_ptr().wrapping_add(self.data_offset);
        NonNull::new(pointer).expect("a mapping is never at address 0")
    }

    /// The usable bytes, writable.
    #[inline]
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.map[self.data_offset..self.data_offset + self.data_len]
    }

    /// The bytes of a file in front of the usable ones (its header), writable.
    pub(crate) fn file_prefix_mut(&mut self) -> &mut [u8] {
        assert!(self.file_backed, "only file regions have a header");
        &mut self.map[..self.data_offset]
    }

    /// Which pages back the region (what was requested and accepted; see
    /// [`Region::huge_page_resident_bytes`] for what the kernel actually did).
    pub fn page_kind(&self) -> PageKind {
        self.page_kind
    }

    /// Whether huge pages were requested and accepted for this region.
    pub fn huge_pages(&self) -> bool {
        self.page_kind != PageKind::Base
    }

    /// Bytes of the region currently mapped by huge pages, read from `/proc/self/smaps`
    /// (`AnonHugePages` plus hugetlb lines of the mapping that holds the data). `None` when the
    /// kernel does not say (not Linux, or smaps unreadable). Costs a read of smaps: for
    /// diagnostics, not hot paths.
    pub fn huge_page_resident_bytes(&self) -> Option<u64> {
        let address = self.bytes().as_ptr() as usize;
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        huge_bytes_in_smaps(&smaps, address)
    }

    /// Faults the pages of usable bytes `offset..offset + len` in, writable, without writing
    /// to them (`MADV_POPULATE_WRITE`, Linux 5.14+), so that first touches later cost nothing.
    /// Blocks for as long as the kernel takes to allocate and zero the pages. Elsewhere, and on
    /// older kernels (an error), the pages fault in on first touch as usual.
    pub fn populate_range(&self, offset: usize, len: usize) -> io::Result<()> {
        assert!(
            offset <= self.data_len && len <= self.data_len - offset,
            "range outside the region"
        );
        #[cfg(target_os = "linux")]
        self.map.advise_range(
            memmap2::Advice::PopulateWrite,
            self.data_offset + offset,
            len,
        )?;
        Ok(())
    }

    /// Writes the whole mapping back to its file (`msync`, synchronous). No-op for anonymous
    /// memory.
    pub fn flush(&self) -> io::Result<()> {
        if self.is_file_backed() {
            self.map.flush()?;
        }
        Ok(())
    }

    /// Writes the first `prefix_len` bytes of the mapping (the header) back to its file.
    pub(crate) fn flush_prefix(&self, prefix_len: usize) -> io::Result<()> {
        if self.is_file_backed() {
            self.map.flush_range(0, prefix_len)?;
        }
        Ok(())
    }

    fn is_file_backed(&self) -> bool {
        self.file_backed
    }
}

/// Sends `madvise(MADV_HUGEPAGE)` for the data range and reports whether transparent huge pages
/// can be used for it (the call succeeded and the kernel's THP mode is not `never`).
#[cfg(target_os = "linux")]
fn advise_huge_pages(map: &MmapMut, offset: usize, len: usize) -> bool {
    let advised = map
        .advise_range(memmap2::Advice::HugePage, offset, len)
        .is_ok();
    advised && transparent_huge_pages_enabled()
}

#[cfg(not(target_os = "linux"))]
fn advise_huge_pages(_map: &MmapMut, _offset: usize, _len: usize) -> bool {
    false
}

/// Reads `/sys/kernel/mm/transparent_hugepage/enabled` (e.g. `always [madvise] never`).
#[cfg(target_os = "linux")]
fn transparent_huge_pages_enabled() -> bool {
    match std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled") {
        Ok(mode) => !mode.contains("[never]"),
        Err(_) => false,
    }
}

/// Finds the smaps entry whose address range holds `address` and sums its huge-page lines.
fn huge_bytes_in_smaps(smaps: &str, address: usize) -> Option<u64> {
    let mut in_mapping = false;
    let mut found = false;
    let mut huge_kib = 0u64;
    for line in smaps.lines() {
        if let Some((start, end)) = mapping_range(line) {
            if found {
                break;
            }
            in_mapping = (start..end).contains(&address);
            found = in_mapping;
            continue;
        }
        if !in_mapping {
            continue;
        }
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        if matches!(name, "AnonHugePages" | "Private_Hugetlb" | "Shared_Hugetlb") {
            let kib = rest.trim().trim_end_matches("kB").trim();
            huge_kib += kib.parse::<u64>().ok()?;
        }
    }
    found.then_some(huge_kib * 1024)
}

/// Parses the `start-end` address range at the head of an smaps mapping line.
fn mapping_range(line: &str) -> Option<(usize, usize)> {
    let range = line.split_whitespace().next()?;
    let (start, end) = range.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    Some((start, end))
}

/// Hints the CPU to start loading the cache line holding `pointer` into all cache levels.
/// Never faults, whatever the address.
#[inline(always)]
pub fn prefetch_read<T>(pointer: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` is only a hint: it cannot fault or read memory architecturally,
    // whatever the address, and SSE is part of the x86-64 baseline.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(pointer.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = pointer;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smaps_parsing_finds_the_mapping_and_sums_huge_pages() {
        let smaps = "\
7f0000000000-7f0000400000 rw-p 00000000 00:00 0
Size:               4096 kB
AnonHugePages:      2048 kB
Private_Hugetlb:       0 kB
7f0000400000-7f0000800000 rw-p 00000000 00:00 0
AnonHugePages:      4096 kB
";
        assert_eq!(
            huge_bytes_in_smaps(smaps, 0x7f00_0000_1000),
            Some(2048 * 1024)
        );
        assert_eq!(
            huge_bytes_in_smaps(smaps, 0x7f00_0040_0000),
            Some(4096 * 1024)
        );
        assert_eq!(huge_bytes_in_smaps(smaps, 0x1000), None);
    }

    #[test]
    fn anonymous_region_is_zeroed_aligned_and_writable() {
        let mut region = Region::anonymous(4 * HUGE_PAGE_BYTES).expect("map");
        assert_eq!(region.len(), 4 * HUGE_PAGE_BYTES);
        assert_eq!(region.bytes().as_ptr() as usize % HUGE_PAGE_BYTES, 0);
        assert!(region.bytes().iter().step_by(4096).all(|&b| b == 0));
        region.bytes_mut().fill(7);
        assert!(region.bytes().iter().step_by(4096).all(|&b| b == 7));
        // Whether huge pages took depends on the kernel; the report must at least be readable
        // on Linux.
        if cfg!(target_os = "linux") {
            assert!(region.huge_page_resident_bytes().is_some());
        }
    }
}
