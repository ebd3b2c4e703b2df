//! Cutting blobs into stripes and stripes into shards.
//!
//! A blob is cut into fixed-size stripes (the last one shorter); under `ec:K+M` each stripe is
//! cut into K equal data shards. Shard lengths are rounded up to 4 KiB so every shard is a
//! DMA-ready [`AlignedBuf`]; the zero padding is part of the coded data and is trimmed again
//! on read using the stripe length the manifest records.

use std::ops::Range;

use crate::aligned::{AlignedBuf, align_up};

/// The default stripe size: 4 MiB (1 MiB shards under `ec:4+2`).
pub const STRIPE_BYTES_DEFAULT: usize = 4 << 20;

/// How a blob is cut into stripes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StripeLayout {
    stripe_bytes: usize,
}

impl Default for StripeLayout {
    fn default() -> Self {
        Self::new(STRIPE_BYTES_DEFAULT)
    }
}

impl StripeLayout {
    /// A layout with stripes of `stripe_bytes`.
    ///
    /// # Panics
    /// If `stripe_bytes` is zero (a configuration bug caught at start-up).
    pub fn new(stripe_bytes: usize) -> Self {
        assert!(stripe_bytes > 0, "stripe size must be positive");
        Self { stripe_bytes }
    }

    /// The full stripe size.
    pub fn stripe_bytes(&self) -> usize {
        self.stripe_bytes
    }

    /// How many stripes a blob of `blob_bytes` has. An empty blob has none.
    pub fn stripe_count(&self, blob_bytes: u64) -> u64 {
        blob_bytes.div_ceil(self.stripe_bytes as u64)
    }

    /// The byte range of stripe `index` within a blob of `blob_bytes`.
    pub fn stripe_range(&self, blob_bytes: u64, index: u64) -> Range<u64> {
        let start = index * self.stripe_bytes as u64;
        start.min(blob_bytes)..(start + self.stripe_bytes as u64).min(blob_bytes)
    }

    /// The stripes that hold the bytes `range` of a blob of `blob_bytes`: what a ranged read
    /// must fetch, and no more. The range is clamped to the blob.
    pub fn stripes_covering(&self, blob_bytes: u64, range: Range<u64>) -> Range<u64> {
        let end = range.end.min(blob_bytes);
        if range.start >= end {
            return 0..0;
        }
        let stripe = self.stripe_bytes as u64;
        range.start / stripe..end.div_ceil(stripe)
    }
}

/// The length of each of the `data_shards` shards of a stripe of `stripe_bytes`: an equal
/// share, rounded up to 4 KiB.
pub fn shard_bytes(stripe_bytes: usize, data_shards: usize) -> usize {
    align_up(stripe_bytes.div_ceil(data_shards.max(1))).max(crate::ALIGN_BYTES)
}

/// Cuts `stripe` into `data_shards` aligned, zero-padded shards of [`shard_bytes`] each.
pub fn split_stripe(stripe: &[u8], data_shards: usize) -> Vec<AlignedBuf> {
    let shard_len = shard_bytes(stripe.len(), data_shards);
    (0..data_shards)
        .map(|index| {
            let mut shard = AlignedBuf::zeroed(shard_len);
            let start = (index * shard_len).min(stripe.len());
            let end = (start + shard_len).min(stripe.len());
            shard[..end - start].copy_from_slice(&stripe[start..end]);
            shard
        })
        .collect()
}

/// Joins data shards back into the stripe's `stripe_bytes` bytes, appending to `out`.
///
/// # Panics
/// If the shards hold fewer than `stripe_bytes` bytes (the caller checked the manifest).
pub fn join_stripe(data: &[&[u8]], stripe_bytes: usize, out: &mut Vec<u8>) {
    let mut remaining = stripe_bytes;
    for shard in data {
        let take = remaining.min(shard.len());
        out.extend_from_slice(&shard[..take]);
        remaining -= take;
    }
    assert_eq!(remaining, 0, "shards shorter than the stripe");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_cut_into_full_stripes_and_a_short_tail() {
        let layout = StripeLayout::new(4 << 20);
        let blob = (10 << 20) + 5;
        assert_eq!(layout.stripe_count(blob), 3);
        assert_eq!(layout.stripe_count(0), 0);
        assert_eq!(layout.stripe_range(blob, 2), (8 << 20)..blob);
        assert_eq!(layout.stripes_covering(blob, 0..1), 0..1);
        assert_eq!(
            layout.stripes_covering(blob, (4 << 20) - 1..(4 << 20) + 1),
            0..2
        );
        assert_eq!(layout.stripes_covering(blob, blob - 1..u64::MAX), 2..3);
        assert_eq!(layout.stripes_covering(blob, blob..blob + 10), 0..0);
    }

    #[test]
    fn split_and_join_round_trip_with_aligned_padding() {
        for stripe_len in [0, 1, 4095, 4096 * 4, 4096 * 4 + 1, 1_000_003] {
            let stripe: Vec<u8> = (0..stripe_len).map(|i| (i * 31 % 251) as u8).collect();
            let shards = split_stripe(&stripe, 4);
            assert_eq!(shards.len(), 4);
            for shard in &shards {
                assert_eq!(shard.len(), shard_bytes(stripe_len, 4));
                assert_eq!(shard.len() % 4096, 0);
            }
            let slices: Vec<&[u8]> = shards.iter().map(|s| &s[..]).collect();
            let mut joined = Vec::new();
            join_stripe(&slices, stripe_len, &mut joined);
            assert_eq!(joined, stripe);
        }
    }
}
