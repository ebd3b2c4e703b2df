//! 4 KiB-aligned, zero-initialised heap buffers.
//!
//! Shards travel from the erasure coder to disk (O_DIRECT) and to the network (later, RDMA
//! or GPUDirect). All of those want page-aligned memory whose length is a whole number of
//! pages, so shard buffers are allocated that way once and never copied into an aligned
//! bounce buffer later.

use std::alloc::{self, Layout};
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// The alignment (and length granularity) of every [`AlignedBuf`]: one 4 KiB page, the
/// logical block size O_DIRECT needs on every device NabuStore targets.
pub const ALIGN_BYTES: usize = 4096;

/// Rounds `bytes` up to the next multiple of [`ALIGN_BYTES`].
pub const fn align_up(bytes: usize) -> usize {
    bytes.div_ceil(ALIGN_BYTES) * ALIGN_BYTES
}

/// A heap buffer whose start address is 4 KiB-aligned and whose capacity is a multiple of
/// 4 KiB. Its visible length (`len`) may be shorter than the capacity; the bytes between are
/// zero and belong to the buffer (O_DIRECT writes send them too).
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    capacity: usize,
}

// SAFETY: AlignedBuf owns its allocation exclusively, like a Vec<u8>.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared references only hand out `&[u8]`, like a Vec<u8>.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// A zeroed buffer of `len` visible bytes and `align_up(len)` capacity.
    pub fn zeroed(len: usize) -> Self {
        let capacity = align_up(len).max(ALIGN_BYTES);
        let layout = Self::layout(capacity);
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            alloc::handle_alloc_error(layout)
        };
        Self { ptr, len, capacity }
    }

    /// An aligned copy of `bytes`.
    pub fn copy_from(bytes: &[u8]) -> Self {
        let mut buf = Self::zeroed(bytes.len());
        buf.copy_from_slice(bytes);
        buf
    }

    /// The allocated length, a multiple of [`ALIGN_BYTES`].
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Changes the visible length. Bytes uncovered by growing are whatever the buffer held
    /// there (zero unless written through [`AlignedBuf::as_full_mut`]).
    ///
    /// # Panics
    /// If `len` exceeds the capacity (a bug in the caller).
    pub fn set_len(&mut self, len: usize) {
        assert!(
            len <= self.capacity,
            "len {len} > capacity {}",
            self.capacity
        );
        self.len = len;
    }

    /// The whole allocation, including the zero padding after `len`.
    pub fn as_full(&self) -> &[u8] {
        // SAFETY: ptr is valid for `capacity` initialised bytes for the lifetime of self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.capacity) }
    }

    /// The whole allocation, mutable.
    pub fn as_full_mut(&mut self) -> &mut [u8] {
        // SAFETY: ptr is valid for `capacity` initialised bytes and we hold `&mut self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.capacity) }
    }

    fn layout(capacity: usize) -> Layout {
        Layout::from_size_align(capacity, ALIGN_BYTES).expect("aligned buffer layout")
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.as_full()[..self.len]
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        let len = self.len;
        &mut self.as_full_mut()[..len]
    }
}

impl Clone for AlignedBuf {
    fn clone(&self) -> Self {
        let mut copy = Self::zeroed(self.capacity);
        copy.as_full_mut().copy_from_slice(self.as_full());
        copy.len = self.len;
        copy
    }
}

impl PartialEq for AlignedBuf {
    fn eq(&self, other: &Self) -> bool {
        self[..] == other[..]
    }
}

impl Eq for AlignedBuf {}

impl fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len)
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `zeroed` with exactly this layout.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), Self::layout(self.capacity)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_page_aligned_and_padded_with_zeros() {
        for len in [0, 1, 4095, 4096, 4097, 1 << 20] {
            let buf = AlignedBuf::zeroed(len);
            assert_eq!(buf.as_ptr() as usize % ALIGN_BYTES, 0);
            assert_eq!(buf.len(), len);
            assert_eq!(buf.capacity() % ALIGN_BYTES, 0);
            assert!(buf.capacity() >= len);
            assert!(buf.as_full().iter().all(|&b| b == 0));
        }
    }

    #[test]
    fn copies_compare_by_visible_bytes() {
        let a = AlignedBuf::copy_from(b"nabu");
        let b = a.clone();
        assert_eq!(a, b);
        assert_eq!(&b[..], b"nabu");
    }
}
