//! The segment file format, version 1 (byte by byte in `docs/formats/segment.md`).
//!
//! A segment is an append-only file: a 4 KiB file header, then records, each starting on a
//! 4 KiB boundary and padded with zeros to one. Alignment is what lets the store write and read
//! with `O_DIRECT` straight from and into page-aligned buffers; the per-record CRC32C is what
//! lets recovery tell an intact record from a torn or rotten one.
//!
//! A record whose header, key and payload fit in one 4 KiB block is stored *inline* (payload
//! right after the key). A larger one starts its payload at the record's second block, so a
//! read lands the payload in its own aligned buffer with no copy.

use std::ffi::OsStr;

use nabu_core::{ALIGN_BYTES, AlignedBuf, align_up};

/// The format version this build writes and reads, stored in every file header.
pub const FORMAT_VERSION: u32 = 1;
/// The unit of alignment of records and of `O_DIRECT` I/O.
pub const BLOCK_BYTES: usize = ALIGN_BYTES;
/// The length of the file header; the first record starts here.
pub const FILE_HEADER_BYTES: u64 = BLOCK_BYTES as u64;
/// The first 8 bytes of every segment file.
pub const FILE_MAGIC: [u8; 8] = *b"NABUSEG\0";
/// The first 4 bytes of every record.
pub const RECORD_MAGIC: [u8; 4] = *b"NREC";
/// The length of a record header.
pub const RECORD_HEADER_BYTES: usize = 64;
/// The longest key a record holds.
pub const KEY_BYTES_MAX: usize = 1024;
/// The largest payload a record holds.
pub const PAYLOAD_BYTES_MAX: usize = 64 << 20;

/// Offsets inside a record header.
mod field {
    pub const KIND: usize = 4;
    pub const KEY_LEN: usize = 6;
    pub const PAYLOAD_LEN: usize = 8;
    pub const SEQUENCE: usize = 16;
    pub const SEGMENT_ID: usize = 24;
    pub const RECORD_OFFSET: usize = 32;
    pub const RESERVED: std::ops::Range<usize> = 40..56;
    pub const RECORD_CRC: usize = 56;
    pub const HEADER_CRC: usize = 60;
}

/// What a record says about its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// The key now holds the record's payload.
    Put = 1,
    /// The key is deleted; the record has no payload.
    Tombstone = 2,
}

/// Why bytes are not an intact record or file header. Each message names what failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// The magic bytes are wrong (often: zeros never written).
    #[error("bad magic")]
    BadMagic,
    /// The header's own checksum does not match.
    #[error("header checksum mismatch")]
    HeaderChecksum,
    /// A field holds a value this version never writes.
    #[error("invalid field: {0}")]
    InvalidField(&'static str),
    /// The header names another segment or offset than where it was found.
    #[error("record header belongs at another place")]
    Misplaced,
    /// The checksum over key, payload and header does not match.
    #[error("record checksum mismatch")]
    RecordChecksum,
    /// The file header has a format version this build does not read.
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u32),
}

/// A decoded record header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// Put or tombstone.
    pub kind: RecordKind,
    /// Key length in bytes (1..=[`KEY_BYTES_MAX`]).
    pub key_len: u16,
    /// Payload length in bytes (0 for a tombstone).
    pub payload_len: u32,
    /// The data directory's write sequence number; the highest wins for a key.
    pub sequence: u64,
    /// The segment the record was written to.
    pub segment_id: u64,
    /// The record's byte offset in that segment.
    pub record_offset: u64,
    /// CRC32C over key, payload and header bytes 0..56.
    pub record_crc: u32,
}

/// Where the payload starts, relative to the record's start.
pub fn payload_offset(key_len: usize, payload_len: usize) -> usize {
    if RECORD_HEADER_BYTES + key_len + payload_len <= BLOCK_BYTES {
        RECORD_HEADER_BYTES + key_len
    } else {
        BLOCK_BYTES
    }
}

/// A record's length on disk, padding included: a multiple of [`BLOCK_BYTES`].
pub fn record_bytes(key_len: usize, payload_len: usize) -> usize {
    align_up(payload_offset(key_len, payload_len) + payload_len)
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(bytes[at..at + 2].try_into().expect("2 bytes"))
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

impl RecordHeader {
    /// The record's length on disk.
    pub fn record_bytes(&self) -> usize {
        record_bytes(usize::from(self.key_len), self.payload_len as usize)
    }

    /// Where the payload starts, relative to the record's start.
    pub fn payload_offset(&self) -> usize {
        payload_offset(usize::from(self.key_len), self.payload_len as usize)
    }

    /// Writes the header into `out[..64]`, computing the header checksum.
    pub fn encode(&self, out: &mut [u8]) {
        let out = &mut out[..RECORD_HEADER_BYTES];
        out.fill(0);
        out[..4].copy_from_slice(&RECORD_MAGIC);
        out[field::KIND] = self.kind as u8;
        out[field::KEY_LEN..][..2].copy_from_slice(&self.key_len.to_le_bytes());
        out[field::PAYLOAD_LEN..][..4].copy_from_slice(&self.payload_len.to_le_bytes());
        out[field::SEQUENCE..][..8].copy_from_slice(&self.sequence.to_le_bytes());
        out[field::SEGMENT_ID..][..8].copy_from_slice(&self.segment_id.to_le_bytes());
        out[field::RECORD_OFFSET..][..8].copy_from_slice(&self.record_offset.to_le_bytes());
        out[field::RECORD_CRC..][..4].copy_from_slice(&self.record_crc.to_le_bytes());
        let header_crc = nabu_core::checksum::crc32c(&out[..field::HEADER_CRC]);
        out[field::HEADER_CRC..][..4].copy_from_slice(&header_crc.to_le_bytes());
    }

    /// Decodes and checks a header from `bytes[..64]`: magic, header checksum, and fields.
    /// The record checksum is checked by [`verify_record`].
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let bytes = bytes
            .get(..RECORD_HEADER_BYTES)
            .ok_or(FormatError::BadMagic)?;
        if bytes[..4] != RECORD_MAGIC {
            return Err(FormatError::BadMagic);
        }
        if u32_at(bytes, field::HEADER_CRC)
            != nabu_core::checksum::crc32c(&bytes[..field::HEADER_CRC])
        {
            return Err(FormatError::HeaderChecksum);
        }
        let kind = match bytes[field::KIND] {
            1 => RecordKind::Put,
            2 => RecordKind::Tombstone,
            _ => return Err(FormatError::InvalidField("kind")),
        };
        let header = Self {
            kind,
            key_len: u16_at(bytes, field::KEY_LEN),
            payload_len: u32_at(bytes, field::PAYLOAD_LEN),
            sequence: u64_at(bytes, field::SEQUENCE),
            segment_id: u64_at(bytes, field::SEGMENT_ID),
            record_offset: u64_at(bytes, field::RECORD_OFFSET),
            record_crc: u32_at(bytes, field::RECORD_CRC),
        };
        header.check_fields(bytes)?;
        Ok(header)
    }

    fn check_fields(&self, bytes: &[u8]) -> Result<(), FormatError> {
        if bytes[5] != 0
            || bytes[12..16] != [0; 4]
            || bytes[field::RESERVED].iter().any(|&b| b != 0)
        {
            return Err(FormatError::InvalidField("reserved"));
        }
        if self.key_len == 0 || usize::from(self.key_len) > KEY_BYTES_MAX {
            return Err(FormatError::InvalidField("key length"));
        }
        if self.payload_len as usize > PAYLOAD_BYTES_MAX {
            return Err(FormatError::InvalidField("payload length"));
        }
        if self.kind == RecordKind::Tombstone && self.payload_len != 0 {
            return Err(FormatError::InvalidField("tombstone payload length"));
        }
        Ok(())
    }
}

/// CRC32C over key then payload: the part of the record checksum a caller computes before the
/// writer assigns sequence and place.
pub fn body_crc(key: &[u8], payload: &[u8]) -> u32 {
    nabu_core::checksum::crc32c_append(nabu_core::checksum::crc32c(key), payload)
}

/// The record checksum: the body checksum continued over header bytes 0..56.
fn record_crc(body_crc: u32, header: &[u8]) -> u32 {
    nabu_core::checksum::crc32c_append(body_crc, &header[..field::RECORD_CRC])
}

/// A verified record: its header and the checksum of its key and payload.
#[derive(Clone, Copy, Debug)]
pub struct VerifiedRecord {
    /// The decoded header.
    pub header: RecordHeader,
    /// CRC32C over key then payload.
    pub body_crc: u32,
}

/// Checks that `bytes` (one whole record, padding included) is the intact record that belongs
/// at `record_offset` of segment `segment_id`.
pub fn verify_record(
    bytes: &[u8],
    segment_id: u64,
    record_offset: u64,
) -> Result<VerifiedRecord, FormatError> {
    let header = RecordHeader::decode(bytes)?;
    if header.segment_id != segment_id || header.record_offset != record_offset {
        return Err(FormatError::Misplaced);
    }
    if bytes.len() < header.record_bytes() {
        return Err(FormatError::InvalidField("record length"));
    }
    let key = &bytes[RECORD_HEADER_BYTES..][..usize::from(header.key_len)];
    let payload = &bytes[header.payload_offset()..][..header.payload_len as usize];
    let body_crc = body_crc(key, payload);
    if record_crc(body_crc, bytes) != header.record_crc {
        return Err(FormatError::RecordChecksum);
    }
    Ok(VerifiedRecord { header, body_crc })
}

/// A record laid out in an aligned buffer, ready for the writer to stamp its sequence number
/// and place ([`EncodedRecord::seal`]) and write it as is.
#[derive(Debug)]
pub struct EncodedRecord {
    buf: AlignedBuf,
    kind: RecordKind,
    key_len: u16,
    payload_len: u32,
    body_crc: u32,
}

impl EncodedRecord {
    /// Lays out `key` and `payload`. The caller has checked both lengths.
    pub fn new(kind: RecordKind, key: &[u8], payload: &[u8]) -> Self {
        Self::from_parts(kind, key, &[payload])
    }

    /// A record whose payload is the concatenation of `parts`, copied straight into the
    /// record buffer (the caller need not join them first: one copy of the payload, not two).
    pub fn from_parts(kind: RecordKind, key: &[u8], parts: &[&[u8]]) -> Self {
        let payload_len: usize = parts.iter().map(|part| part.len()).sum();
        assert!(
            (1..=KEY_BYTES_MAX).contains(&key.len()),
            "key length checked by caller"
        );
        assert!(
            payload_len <= PAYLOAD_BYTES_MAX,
            "payload length checked by caller"
        );
        let mut at = payload_offset(key.len(), payload_len);
        let mut buf = AlignedBuf::zeroed(record_bytes(key.len(), payload_len));
        buf[RECORD_HEADER_BYTES..][..key.len()].copy_from_slice(key);
        let mut crc = nabu_core::checksum::crc32c(key);
        for part in parts {
            buf[at..][..part.len()].copy_from_slice(part);
            crc = nabu_core::checksum::crc32c_append(crc, part);
            at += part.len();
        }
        Self {
            buf,
            kind,
            key_len: key.len() as u16,
            payload_len: payload_len as u32,
            body_crc: crc,
        }
    }

    /// Copies an intact record read from disk (compaction), to be sealed at a new place.
    pub fn from_verified(bytes: &[u8], verified: &VerifiedRecord) -> Self {
        let header = verified.header;
        let mut buf = AlignedBuf::zeroed(header.record_bytes());
        buf.copy_from_slice(&bytes[..header.record_bytes()]);
        Self {
            buf,
            kind: header.kind,
            key_len: header.key_len,
            payload_len: header.payload_len,
            body_crc: verified.body_crc,
        }
    }

    /// Writes the header: the record's sequence number and where it goes.
    pub fn seal(&mut self, sequence: u64, segment_id: u64, record_offset: u64) {
        let mut header = RecordHeader {
            kind: self.kind,
            key_len: self.key_len,
            payload_len: self.payload_len,
            sequence,
            segment_id,
            record_offset,
            record_crc: 0,
        };
        header.encode(&mut self.buf);
        header.record_crc = record_crc(self.body_crc, &self.buf);
        header.encode(&mut self.buf);
    }

    /// The record's bytes on disk, padding included.
    pub fn bytes(&self) -> &[u8] {
        self.buf.as_full()
    }

    /// The record's length on disk.
    pub fn len(&self) -> usize {
        self.buf.capacity()
    }

    /// Whether the record is empty (never: every record has a header).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Put or tombstone.
    pub fn kind(&self) -> RecordKind {
        self.kind
    }
}

/// The 4 KiB file header of segment `segment_id`.
pub fn encode_file_header(segment_id: u64) -> AlignedBuf {
    let mut buf = AlignedBuf::zeroed(BLOCK_BYTES);
    buf[..8].copy_from_slice(&FILE_MAGIC);
    buf[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    buf[12..16].copy_from_slice(&(BLOCK_BYTES as u32).to_le_bytes());
    buf[16..24].copy_from_slice(&segment_id.to_le_bytes());
    let crc = nabu_core::checksum::crc32c(&buf[..60]);
    buf[60..64].copy_from_slice(&crc.to_le_bytes());
    buf
}

/// Checks a file header and returns its segment id.
pub fn decode_file_header(bytes: &[u8]) -> Result<u64, FormatError> {
    let bytes = bytes.get(..BLOCK_BYTES).ok_or(FormatError::BadMagic)?;
    if bytes[..8] != FILE_MAGIC {
        return Err(FormatError::BadMagic);
    }
    if u32_at(bytes, 60) != nabu_core::checksum::crc32c(&bytes[..60]) {
        return Err(FormatError::HeaderChecksum);
    }
    let version = u32_at(bytes, 8);
    if version != FORMAT_VERSION {
        return Err(FormatError::UnsupportedVersion(version));
    }
    if u32_at(bytes, 12) as usize != BLOCK_BYTES {
        return Err(FormatError::InvalidField("block size"));
    }
    Ok(u64_at(bytes, 16))
}

/// The file name of segment `segment_id`: `seg-<16 hex digits>.nabu`.
pub fn segment_file_name(segment_id: u64) -> String {
    format!("seg-{segment_id:016x}.nabu")
}

/// The segment id in a file name made by [`segment_file_name`].
pub fn parse_segment_file_name(name: &OsStr) -> Option<u64> {
    let hex = name.to_str()?.strip_prefix("seg-")?.strip_suffix(".nabu")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sealed(key: &[u8], payload: &[u8]) -> EncodedRecord {
        let mut record = EncodedRecord::new(RecordKind::Put, key, payload);
        record.seal(42, 7, 8192);
        record
    }

    #[test]
    fn small_records_are_inline_and_large_ones_start_payload_on_a_block() {
        assert_eq!(payload_offset(10, 100), 74);
        assert_eq!(record_bytes(10, 100), 4096);
        assert_eq!(payload_offset(10, 4096), 4096);
        assert_eq!(record_bytes(10, 4096), 8192);
        assert_eq!(record_bytes(10, 1 << 20), 4096 + (1 << 20));
    }

    #[test]
    fn sealed_records_verify_and_decode() {
        let record = sealed(b"key", &[9u8; 5000]);
        let verified = verify_record(record.bytes(), 7, 8192).expect("intact");
        assert_eq!(verified.header.sequence, 42);
        assert_eq!(verified.header.payload_len, 5000);
        assert_eq!(verified.body_crc, body_crc(b"key", &[9u8; 5000]));
        assert_eq!(
            verify_record(record.bytes(), 7, 0).unwrap_err(),
            FormatError::Misplaced
        );
    }

    #[test]
    fn every_flipped_bit_of_key_payload_or_header_is_caught() {
        let record = sealed(b"key", b"payload");
        let covered = RECORD_HEADER_BYTES + 3 + 7;
        for byte in 0..covered {
            let mut bytes = record.bytes().to_vec();
            bytes[byte] ^= 0x10;
            assert!(
                verify_record(&bytes, 7, 8192).is_err(),
                "flip at {byte} missed"
            );
        }
    }

    #[test]
    fn file_headers_round_trip_and_reject_other_versions() {
        let mut header = encode_file_header(5);
        assert_eq!(decode_file_header(&header), Ok(5));
        header[8] = 2;
        let crc = nabu_core::checksum::crc32c(&header[..60]);
        header[60..64].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            decode_file_header(&header),
            Err(FormatError::UnsupportedVersion(2))
        );
    }

    #[test]
    fn segment_file_names_round_trip() {
        let name = segment_file_name(0xabc);
        assert_eq!(name, "seg-0000000000000abc.nabu");
        assert_eq!(parse_segment_file_name(OsStr::new(&name)), Some(0xabc));
        assert_eq!(parse_segment_file_name(OsStr::new("seg-1.nabu")), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = RecordHeader::decode(&bytes);
            let _ = verify_record(&bytes, 0, 0);
            let _ = decode_file_header(&bytes);
        }

        #[test]
        fn records_round_trip(key in proptest::collection::vec(any::<u8>(), 1..64),
                              payload in proptest::collection::vec(any::<u8>(), 0..9000)) {
            let record = sealed(&key, &payload);
            let verified = verify_record(record.bytes(), 7, 8192).expect("intact");
            let at = verified.header.payload_offset();
            prop_assert_eq!(&record.bytes()[at..at + payload.len()], &payload[..]);
        }
    }
}
