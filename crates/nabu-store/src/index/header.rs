//! The header of a file-backed index.
//!
//! The file is one 4 KiB header followed by `slot_count` slots of 32 bytes. The header's first
//! 48 bytes, all integers little-endian:
//!
//! | bytes  | field          | meaning                                                      |
//! |--------|----------------|--------------------------------------------------------------|
//! | 0..8   | magic          | `NABUIDX\0`                                                  |
//! | 8..12  | format_version | 1                                                            |
//! | 12..16 | slot_bytes     | 32                                                           |
//! | 16..24 | slot_count     | a power of two, at least [`super::table::MIN_SLOTS`]         |
//! | 24..32 | entry_count    | occupied slots, valid only when `clean` is 1                 |
//! | 32..40 | generation     | caller's value from the last `mark_clean`                    |
//! | 40..44 | clean          | 1 = slots and entry count were flushed by `mark_clean`, else 0 |
//! | 44..48 | crc32c         | CRC-32C of bytes 0..44                                       |
//!
//! The rest of the 4 KiB is zero. A slot is the key (u128 LE) then the value (u128 LE); key 0
//! marks an empty slot.
//!
//! Crash model: `clean` is cleared and flushed before the first change after a `mark_clean`,
//! and set only after every slot has been flushed, so a torn or lost write of the slots always
//! leaves `clean = 0`. A torn header fails its checksum.

use super::IndexError;
use super::table::{MIN_SLOTS, SLOT_BYTES};

/// Bytes in front of the first slot.
pub(crate) const HEADER_BYTES: usize = 4096;

const MAGIC: [u8; 8] = *b"NABUIDX\0";
pub(crate) const FORMAT_VERSION: u32 = 1;
const ENCODED_BYTES: usize = 48;

/// The decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) slot_count: u64,
    pub(crate) entry_count: u64,
    pub(crate) generation: u64,
    pub(crate) clean: bool,
}

impl Header {
    /// Writes the header (and zeroes nothing else: the file starts zeroed).
    pub(crate) fn encode(&self, out: &mut [u8]) {
        let out = &mut out[..ENCODED_BYTES];
        out[0..8].copy_from_slice(&MAGIC);
        out[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out[12..16].copy_from_slice(&(SLOT_BYTES as u32).to_le_bytes());
        out[16..24].copy_from_slice(&self.slot_count.to_le_bytes());
        out[24..32].copy_from_slice(&self.entry_count.to_le_bytes());
        out[32..40].copy_from_slice(&self.generation.to_le_bytes());
        out[40..44].copy_from_slice(&u32::from(self.clean).to_le_bytes());
        let crc = nabu_core::checksum::crc32c(&out[..44]);
        out[44..48].copy_from_slice(&crc.to_le_bytes());
    }

    /// Decodes and validates a header read from a file of `file_bytes` bytes.
    pub(crate) fn decode(bytes: &[u8], file_bytes: u64) -> Result<Header, IndexError> {
        if file_bytes < HEADER_BYTES as u64 || bytes.len() < ENCODED_BYTES {
            return Err(IndexError::SizeMismatch {
                file_bytes,
                expected_bytes: HEADER_BYTES as u64,
            });
        }
        if bytes[0..8] != MAGIC {
            return Err(IndexError::BadMagic);
        }
        let version = read_u32(bytes, 8);
        if version != FORMAT_VERSION {
            return Err(IndexError::UnsupportedVersion {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let crc = read_u32(bytes, 44);
        if crc != nabu_core::checksum::crc32c(&bytes[..44]) {
            return Err(IndexError::CorruptHeader("checksum mismatch"));
        }
        if read_u32(bytes, 12) != SLOT_BYTES as u32 {
            return Err(IndexError::CorruptHeader("slot size is not 32 bytes"));
        }
        let slot_count = read_u64(bytes, 16);
        if !slot_count.is_power_of_two() || slot_count < MIN_SLOTS as u64 {
            return Err(IndexError::CorruptHeader(
                "slot count is not a power of two >= 64",
            ));
        }
        let expected_bytes = slot_count
            .checked_mul(SLOT_BYTES as u64)
            .and_then(|slot_bytes| slot_bytes.checked_add(HEADER_BYTES as u64))
            .ok_or(IndexError::CorruptHeader("slot count overflows"))?;
        if expected_bytes != file_bytes {
            return Err(IndexError::SizeMismatch {
                file_bytes,
                expected_bytes,
            });
        }
        let clean = match read_u32(bytes, 40) {
            0 => false,
            1 => true,
            _ => return Err(IndexError::CorruptHeader("clean flag is neither 0 nor 1")),
        };
        Ok(Header {
            slot_count,
            entry_count: read_u64(bytes, 24),
            generation: read_u64(bytes, 32),
            clean,
        })
    }
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_bytes(slot_count: u64) -> u64 {
        HEADER_BYTES as u64 + slot_count * SLOT_BYTES as u64
    }

    #[test]
    fn header_round_trips() {
        let header = Header {
            slot_count: 1024,
            entry_count: 700,
            generation: 0xdead_beef,
            clean: true,
        };
        let mut bytes = vec![0u8; HEADER_BYTES];
        header.encode(&mut bytes);
        assert_eq!(Header::decode(&bytes, file_bytes(1024)).unwrap(), header);
    }

    #[test]
    fn header_rejects_every_single_bit_flip() {
        let header = Header {
            slot_count: 64,
            entry_count: 3,
            generation: 9,
            clean: false,
        };
        let mut bytes = vec![0u8; HEADER_BYTES];
        header.encode(&mut bytes);
        for bit in 0..ENCODED_BYTES * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(
                Header::decode(&flipped, file_bytes(64)).is_err(),
                "bit {bit} flip accepted"
            );
        }
        assert!(matches!(
            Header::decode(&bytes, file_bytes(128)),
            Err(IndexError::SizeMismatch { .. })
        ));
        assert!(matches!(
            Header::decode(&bytes[..10], 10),
            Err(IndexError::SizeMismatch { .. })
        ));
    }
}
