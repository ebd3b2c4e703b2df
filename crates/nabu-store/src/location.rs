//! Where a record lives, packed into the index's 128-bit value.
//!
//! Packing (low bit first): segment id (32 bits), offset in 4 KiB blocks (32 bits: segments up
//! to 16 TiB), record length in blocks (16 bits: records up to 256 MiB), tombstone flag
//! (1 bit), sequence number (47 bits). The sequence number travels with the location so that
//! recovery and compaction can tell which of two records for one key is newer without reading
//! either; the tombstone flag keeps deletes in the index, so compaction knows whether a
//! tombstone is still the newest word on its key.

use crate::segment::{BLOCK_BYTES, RecordHeader, RecordKind};

/// The largest sequence number a location can carry.
pub(crate) const SEQUENCE_MAX: u64 = (1 << 47) - 1;

/// A record's place on disk and what the index needs to know about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Location {
    pub segment_id: u32,
    pub offset_blocks: u32,
    pub record_blocks: u16,
    pub tombstone: bool,
    pub sequence: u64,
}

impl Location {
    /// The location of a record with `header` at `offset` of segment `segment_id`.
    ///
    /// # Panics
    /// If the numbers do not fit (checked earlier: segment ids, segment size and sequence
    /// numbers are bounded where they are made).
    pub fn of(segment_id: u32, offset: u64, header: &RecordHeader) -> Self {
        assert_eq!(offset % BLOCK_BYTES as u64, 0, "records are block-aligned");
        Self {
            segment_id,
            offset_blocks: u32::try_from(offset / BLOCK_BYTES as u64).expect("segment size"),
            record_blocks: u16::try_from(header.record_bytes() / BLOCK_BYTES).expect("record size"),
            tombstone: header.kind == RecordKind::Tombstone,
            sequence: header.sequence,
        }
    }

    pub fn offset(self) -> u64 {
        u64::from(self.offset_blocks) * BLOCK_BYTES as u64
    }

    pub fn record_bytes(self) -> usize {
        usize::from(self.record_blocks) * BLOCK_BYTES
    }

    /// Orders two records of one key: the higher sequence number wins; on a tie (a record
    /// and its compaction copy) the later place wins.
    pub fn is_newer_than(self, other: Location) -> bool {
        (self.sequence, self.segment_id, self.offset_blocks)
            > (other.sequence, other.segment_id, other.offset_blocks)
    }

    pub fn pack(self) -> u128 {
        assert!(
            self.sequence <= SEQUENCE_MAX,
            "sequence numbers are bounded"
        );
        u128::from(self.segment_id)
            | u128::from(self.offset_blocks) << 32
            | u128::from(self.record_blocks) << 64
            | u128::from(self.tombstone) << 80
            | u128::from(self.sequence) << 81
    }

    pub fn unpack(packed: u128) -> Self {
        Self {
            segment_id: packed as u32,
            offset_blocks: (packed >> 32) as u32,
            record_blocks: (packed >> 64) as u16,
            tombstone: (packed >> 80) & 1 == 1,
            sequence: (packed >> 81) as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_round_trip_through_packing() {
        for location in [
            Location {
                segment_id: 1,
                offset_blocks: 1,
                record_blocks: 1,
                tombstone: false,
                sequence: 1,
            },
            Location {
                segment_id: u32::MAX,
                offset_blocks: u32::MAX,
                record_blocks: u16::MAX,
                tombstone: true,
                sequence: SEQUENCE_MAX,
            },
        ] {
            assert_eq!(Location::unpack(location.pack()), location);
        }
    }
}
