//! The caller's memory through the buffer protocol: numpy arrays, `bytearray`, `memoryview`,
//! `bytes`, pinned host memory exported by a framework: anything C-contiguous.

use bytes::Bytes;
use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::PyBufferError;
use pyo3::prelude::*;

use crate::errors::invalid_argument;

/// A caller's buffer, held (exported) for as long as this lives: while it does, Python
/// cannot resize or free the memory (a `bytearray` refuses to resize, numpy keeps the
/// array alive).
#[derive(Debug)]
pub(crate) struct Buffer(PyUntypedBuffer);

impl Buffer {
    /// A C-contiguous buffer to read from.
    pub(crate) fn readable(object: &Bound<'_, PyAny>) -> PyResult<Self> {
        let buffer = PyUntypedBuffer::get(object)?;
        if !buffer.is_c_contiguous() {
            return Err(PyBufferError::new_err(
                "the buffer is not C-contiguous (use numpy.ascontiguousarray)",
            ));
        }
        Ok(Self(buffer))
    }

    /// A C-contiguous, writable buffer to read into.
    pub(crate) fn writable(object: &Bound<'_, PyAny>) -> PyResult<Self> {
        let buffer = Self::readable(object)?;
        if buffer.0.readonly() {
            return Err(PyBufferError::new_err(
                "the buffer is read-only: pass a writable one (bytearray, numpy array, memoryview)",
            ));
        }
        Ok(buffer)
    }

    /// Its length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.0.len_bytes()
    }

    /// Its first byte's address.
    fn address(&self) -> usize {
        self.0.buf_ptr() as usize
    }

    /// The memory as a mutable slice.
    ///
    /// # Safety
    ///
    /// No other slice of this memory may be live while the returned one is (see
    /// [`check_disjoint`] for several buffers at once); Python code that writes the same
    /// memory concurrently races with the read, as with any `readinto`.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn as_mut_slice(&self) -> &mut [u8] {
        if self.len() == 0 {
            return &mut [];
        }
        // SAFETY: the exporter guarantees `len_bytes` contiguous bytes at `buf_ptr` (checked
        // C-contiguous and writable) for as long as the buffer is held, which `self` does;
        // exclusivity is the caller's promise.
        unsafe { std::slice::from_raw_parts_mut(self.0.buf_ptr().cast::<u8>(), self.len()) }
    }

    /// The memory as [`Bytes`] that keep the buffer held until the last clone is dropped:
    /// what a put sends, without a copy.
    pub(crate) fn into_bytes(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for Buffer {
    fn as_ref(&self) -> &[u8] {
        if self.len() == 0 {
            return &[];
        }
        // SAFETY: as in `as_mut_slice`: contiguous, held for as long as `self` lives.
        unsafe { std::slice::from_raw_parts(self.0.buf_ptr().cast::<u8>(), self.len()) }
    }
}

/// Refuses buffers that share memory: reading several values into them at once would
/// write the same bytes from two places.
pub(crate) fn check_disjoint(buffers: &[Buffer]) -> PyResult<()> {
    let mut spans: Vec<(usize, usize)> = buffers
        .iter()
        .filter(|buffer| buffer.len() > 0)
        .map(|buffer| (buffer.address(), buffer.address() + buffer.len()))
        .collect();
    spans.sort_unstable();
    if spans.windows(2).any(|pair| pair[0].1 > pair[1].0) {
        return Err(invalid_argument(
            "the buffers overlap: each value needs memory of its own",
        ));
    }
    Ok(())
}
