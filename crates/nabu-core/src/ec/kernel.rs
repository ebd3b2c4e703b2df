//! The portable codec's inner loop: `outputs[r] = Σ_j c[r][j] · inputs[j]` over GF(2^8),
//! byte by byte, with the split-nibble method: `c·x = LO[x & 15] ^ HI[x >> 4]`, where LO and
//! HI are the 16-entry tables of [`super::gf::mul_tables`]. With AVX2 one `vpshufb` looks up
//! 32 bytes at once, as ISA-L's own kernels do.
//!
//! Work proceeds in column blocks of [`BLOCK_BYTES`] so the inputs stay in L1/L2 while every
//! group of [`GROUP_ROWS`] outputs is computed from them; each group keeps its accumulators in
//! registers, so each input vector is loaded once per group.

use std::ops::Range;

use super::gf::TABLE_BYTES;

/// Bytes of every shard processed before moving to the next block of columns.
const BLOCK_BYTES: usize = 16 * 1024;

/// Outputs computed together, one AVX2 accumulator register each.
const GROUP_ROWS: usize = 4;

/// Which inner loop the portable codec runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// 32 bytes per step with `vpshufb`; only chosen when the CPU has AVX2.
    Avx2,
    /// One byte per step; runs everywhere.
    Scalar,
}

impl Kernel {
    /// The fastest kernel this CPU supports.
    pub(crate) fn detect() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            return Kernel::Avx2;
        }
        Kernel::Scalar
    }

    /// The implementation name the portable codec reports.
    pub(crate) fn implementation(self) -> &'static str {
        match self {
            Kernel::Avx2 => "portable-avx2",
            Kernel::Scalar => "portable-scalar",
        }
    }
}

/// Computes every output as the dot product of its row of coefficients (whose tables are
/// `tables`, row-major, [`TABLE_BYTES`] each) with the inputs.
///
/// # Panics
/// If the slices disagree in length or `tables` is not `outputs × inputs` tables (a bug in
/// the caller, which validated everything).
pub(crate) fn dot_products(
    kernel: Kernel,
    tables: &[u8],
    inputs: &[&[u8]],
    outputs: &mut [&mut [u8]],
) {
    let k = inputs.len();
    assert_eq!(tables.len(), outputs.len() * k * TABLE_BYTES, "tables");
    let Some(len) = inputs.first().map(|input| input.len()) else {
        return;
    };
    assert!(inputs.iter().all(|input| input.len() == len), "inputs");
    assert!(outputs.iter().all(|output| output.len() == len), "outputs");
    let group_tables_bytes = GROUP_ROWS * k * TABLE_BYTES;
    for block_start in (0..len).step_by(BLOCK_BYTES) {
        let block = block_start..len.min(block_start + BLOCK_BYTES);
        let groups = outputs.chunks_mut(GROUP_ROWS);
        for (group, group_tables) in groups.zip(tables.chunks(group_tables_bytes)) {
            dot_products_block(kernel, group_tables, inputs, group, block.clone());
        }
    }
}

/// One block of columns for up to [`GROUP_ROWS`] outputs.
fn dot_products_block(
    kernel: Kernel,
    tables: &[u8],
    inputs: &[&[u8]],
    outputs: &mut [&mut [u8]],
    block: Range<usize>,
) {
    let simd_end = match kernel {
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => avx2::dot_products(tables, inputs, outputs, block.clone()),
        _ => block.start,
    };
    scalar_dot_products(tables, inputs, outputs, simd_end..block.end);
}

/// The byte-at-a-time loop: the fallback, and the tail after the last whole vector.
fn scalar_dot_products(
    tables: &[u8],
    inputs: &[&[u8]],
    outputs: &mut [&mut [u8]],
    range: Range<usize>,
) {
    let k = inputs.len();
    for (r, output) in outputs.iter_mut().enumerate() {
        let output = &mut output[range.clone()];
        output.fill(0);
        for (j, input) in inputs.iter().enumerate() {
            let (low, high) = nibble_tables(&tables[(r * k + j) * TABLE_BYTES..]);
            for (out, &x) in output.iter_mut().zip(&input[range.clone()]) {
                *out ^= low[usize::from(x & 0x0f)] ^ high[usize::from(x >> 4)];
            }
        }
    }
}

/// The low- and high-nibble halves of the table at the start of `table`.
fn nibble_tables(table: &[u8]) -> (&[u8; 16], &[u8; 16]) {
    let (low, rest) = table.split_first_chunk::<16>().expect("table has 32 bytes");
    let (high, _) = rest.split_first_chunk::<16>().expect("table has 32 bytes");
    (low, high)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::{
        __m256i, _mm_loadu_si128, _mm256_and_si256, _mm256_broadcastsi128_si256,
        _mm256_loadu_si256, _mm256_set1_epi8, _mm256_setzero_si256, _mm256_shuffle_epi8,
        _mm256_srli_epi64, _mm256_storeu_si256, _mm256_xor_si256,
    };
    use std::ops::Range;

    use super::{GROUP_ROWS, TABLE_BYTES};

    const VECTOR_BYTES: usize = 32;

    /// Computes the whole vectors of `range` for up to [`GROUP_ROWS`] outputs; returns where
    /// the scalar tail starts.
    pub(super) fn dot_products(
        tables: &[u8],
        inputs: &[&[u8]],
        outputs: &mut [&mut [u8]],
        range: Range<usize>,
    ) -> usize {
        assert!(std::arch::is_x86_feature_detected!("avx2"));
        assert!(tables.len() >= outputs.len() * inputs.len() * TABLE_BYTES);
        assert!(inputs.iter().all(|input| input.len() >= range.end));
        assert!(outputs.iter().all(|output| output.len() >= range.end));
        // SAFETY: for all four calls, AVX2 is present (checked above), `tables` holds a table per
        // output and input, and every slice reaches `range.end` (asserted above).
        unsafe {
            match outputs.len() {
                1 => rows::<1>(tables, inputs, outputs, range),
                2 => rows::<2>(tables, inputs, outputs, range),
                3 => rows::<3>(tables, inputs, outputs, range),
                _ => rows::<GROUP_ROWS>(tables, inputs, outputs, range),
            }
        }
    }

    /// The dot products of `R` outputs over the whole vectors of `range`.
    ///
    /// # Safety
    /// The CPU supports AVX2; `outputs.len() == R`; `tables` holds `R × inputs.len()` tables;
    /// every input and output is at least `range.end` bytes long.
    #[target_feature(enable = "avx2")]
    unsafe fn rows<const R: usize>(
        tables: &[u8],
        inputs: &[&[u8]],
        outputs: &mut [&mut [u8]],
        range: Range<usize>,
    ) -> usize {
        debug_assert_eq!(outputs.len(), R);
        let k = inputs.len();
        let low_nibbles = _mm256_set1_epi8(0x0f);
        let mut pos = range.start;
        while pos + VECTOR_BYTES <= range.end {
            let mut sums = [_mm256_setzero_si256(); R];
            for (j, input) in inputs.iter().enumerate() {
                // SAFETY: pos + 32 <= range.end <= input.len().
                let x = unsafe { _mm256_loadu_si256(input.as_ptr().add(pos).cast()) };
                let low = _mm256_and_si256(x, low_nibbles);
                let high = _mm256_and_si256(_mm256_srli_epi64::<4>(x), low_nibbles);
                for (r, sum) in sums.iter_mut().enumerate() {
                    // SAFETY: table (r, j) lies inside `tables` (caller's contract).
                    let (t_low, t_high) = unsafe { load_table(tables, r * k + j) };
                    let product = _mm256_xor_si256(
                        _mm256_shuffle_epi8(t_low, low),
                        _mm256_shuffle_epi8(t_high, high),
                    );
                    *sum = _mm256_xor_si256(*sum, product);
                }
            }
            for (output, sum) in outputs.iter_mut().zip(sums) {
                // SAFETY: pos + 32 <= range.end <= output.len().
                unsafe { _mm256_storeu_si256(output.as_mut_ptr().add(pos).cast(), sum) };
            }
            pos += VECTOR_BYTES;
        }
        pos
    }

    /// Table `index`'s two 16-byte halves, each broadcast to both 128-bit lanes.
    ///
    /// # Safety
    /// `tables` holds more than `index` tables.
    #[target_feature(enable = "avx2")]
    unsafe fn load_table(tables: &[u8], index: usize) -> (__m256i, __m256i) {
        // SAFETY: the caller guarantees bytes index*32 .. index*32+32 are inside `tables`.
        unsafe {
            let table = tables.as_ptr().add(index * TABLE_BYTES);
            let low = _mm_loadu_si128(table.cast());
            let high = _mm_loadu_si128(table.add(16).cast());
            (
                _mm256_broadcastsi128_si256(low),
                _mm256_broadcastsi128_si256(high),
            )
        }
    }
}
