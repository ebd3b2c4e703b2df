//! CRC32C (Castagnoli), the checksum of every record, frame and shard.
//!
//! One implementation for all of them: `crc-fast`'s carry-less-multiply kernels
//! (PCLMULQDQ/VPCLMULQDQ, chosen at run time) checksum 1 MiB in about 9 µs on this machine,
//! where the `crc32c` crate's three-way CRC32 instruction loop takes about 34 µs; every shard
//! read and written passes through here at least twice. Appending uses the `crc32c` crate's
//! combine step (logarithmic in the length), so nothing is checksummed twice.
//!
//! `crc-fast` picks its kernel by CPU feature at run time (SSE4.2/PCLMULQDQ, AVX2 or
//! AVX-512 with VPCLMULQDQ), so the kernel a machine runs may be one no test here ran. The
//! first call checks it against the `crc32c` crate's on lengths and alignments that cover
//! every kernel's edges, and uses the `crc32c` crate instead if they differ (a wrong checksum
//! would make every node refuse every shard as corrupt); [`fast_kernel_in_use`] tells which,
//! and a node logs a warning at start when it is the slow one.

use std::sync::OnceLock;

/// The kernel this process uses, chosen on first use.
static KERNEL: OnceLock<fn(&[u8]) -> u32> = OnceLock::new();

/// The CRC32C of `bytes`.
pub fn crc32c(bytes: &[u8]) -> u32 {
    (KERNEL.get_or_init(choose_kernel))(bytes)
}

fn fast_kernel(bytes: &[u8]) -> u32 {
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, bytes) as u32
}

/// Whether this process checksums with `crc-fast`'s kernel (false: it disagreed with the
/// reference on this CPU, and the `crc32c` crate's slower one is used).
pub fn fast_kernel_in_use() -> bool {
    std::ptr::fn_addr_eq(
        *KERNEL.get_or_init(choose_kernel),
        fast_kernel as fn(&[u8]) -> u32,
    )
}

/// `crc-fast`'s kernel if it agrees with the portable one on this CPU.
fn choose_kernel() -> fn(&[u8]) -> u32 {
    // Up to a little over 1 MiB (a shard, a frame), at four alignments: the folding loops of
    // the wide kernels run only on long inputs. About 2 ms, once per process.
    let sample: Vec<u8> = (0..(1u32 << 20) + 8)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    let lengths = [
        0,
        1,
        3,
        15,
        16,
        17,
        31,
        63,
        64,
        127,
        128,
        255,
        256,
        257,
        511,
        1024,
        4099,
        65_536,
        262_145,
        1 << 20,
    ];
    for offset in 0..4 {
        for length in lengths {
            let bytes = &sample[offset..offset + length];
            if fast_kernel(bytes) != ::crc32c::crc32c(bytes) {
                return ::crc32c::crc32c;
            }
        }
    }
    fast_kernel
}

/// The CRC32C of the bytes `crc` covers followed by `bytes`.
pub fn crc32c_append(crc: u32, bytes: &[u8]) -> u32 {
    crc32c::crc32c_combine(crc, crc32c(bytes), bytes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_the_reference_crate() {
        let bytes: Vec<u8> = (0..100_003u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
            .collect();
        for cut in [0, 1, 7, 64, 4096, 99_999, 100_003] {
            let (head, tail) = bytes.split_at(cut);
            assert_eq!(crc32c(head), ::crc32c::crc32c(head));
            assert_eq!(crc32c_append(crc32c(head), tail), ::crc32c::crc32c(&bytes));
        }
        // The standard check value of CRC-32/ISCSI.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }
}
