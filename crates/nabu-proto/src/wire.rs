//! Field-level encoding: fixed-width little-endian integers and length-prefixed byte strings.
//!
//! [`Reader`] checks every length against both its bound and the bytes actually present
//! *before* it copies anything, so a decoder never allocates more than its input holds.
//! [`Writer`] checks the same bounds on the sending side, so an over-long key is an error
//! where it is produced rather than a frame the peer refuses.

use crate::error::ProtoError;

/// Appends fields to a byte vector.
#[derive(Debug)]
pub(crate) struct Writer<'a> {
    out: &'a mut Vec<u8>,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(out: &'a mut Vec<u8>) -> Self {
        Self { out }
    }

    pub(crate) fn u8(&mut self, value: u8) {
        self.out.push(value);
    }

    pub(crate) fn bool(&mut self, value: bool) {
        self.out.push(u8::from(value));
    }

    pub(crate) fn u16(&mut self, value: u16) {
        self.out.extend_from_slice(&value.to_le_bytes());
    }

    pub(crate) fn u32(&mut self, value: u32) {
        self.out.extend_from_slice(&value.to_le_bytes());
    }

    pub(crate) fn u64(&mut self, value: u64) {
        self.out.extend_from_slice(&value.to_le_bytes());
    }

    pub(crate) fn array32(&mut self, value: &[u8; 32]) {
        self.out.extend_from_slice(value);
    }

    /// A `u16` length, then the bytes; `max` is at most `u16::MAX`.
    pub(crate) fn bytes16(
        &mut self,
        field: &'static str,
        value: &[u8],
        max: usize,
    ) -> Result<(), ProtoError> {
        let max = max.min(usize::from(u16::MAX));
        let length = u16::try_from(value.len())
            .ok()
            .filter(|&length| usize::from(length) <= max)
            .ok_or(ProtoError::FieldTooLong {
                field,
                bytes: value.len(),
                max,
            })?;
        self.u16(length);
        self.out.extend_from_slice(value);
        Ok(())
    }

    /// Like [`Writer::bytes16`], for UTF-8 text.
    pub(crate) fn str16(
        &mut self,
        field: &'static str,
        value: &str,
        max: usize,
    ) -> Result<(), ProtoError> {
        self.bytes16(field, value.as_bytes(), max)
    }
}

/// Reads fields from the front of a byte slice.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    fn take(&mut self, field: &'static str, count: usize) -> Result<&'a [u8], ProtoError> {
        if count > self.bytes.len() {
            return Err(ProtoError::Truncated { field });
        }
        let (taken, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], ProtoError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(field, N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, ProtoError> {
        Ok(self.array::<1>(field)?[0])
    }

    /// A strict bool: 0 or 1, anything else is refused (one encoding per value).
    pub(crate) fn bool(&mut self, field: &'static str) -> Result<bool, ProtoError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(ProtoError::InvalidField {
                field,
                reason: "a bool is 0 or 1",
            }),
        }
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, ProtoError> {
        self.array(field).map(u16::from_le_bytes)
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, ProtoError> {
        self.array(field).map(u32::from_le_bytes)
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, ProtoError> {
        self.array(field).map(u64::from_le_bytes)
    }

    pub(crate) fn array32(&mut self, field: &'static str) -> Result<[u8; 32], ProtoError> {
        self.array(field)
    }

    /// A `u16` length, then that many bytes; the length is checked against `max` first.
    pub(crate) fn bytes16(
        &mut self,
        field: &'static str,
        max: usize,
    ) -> Result<&'a [u8], ProtoError> {
        let length = usize::from(self.u16(field)?);
        if length > max {
            return Err(ProtoError::FieldTooLong {
                field,
                bytes: length,
                max,
            });
        }
        self.take(field, length)
    }

    /// Like [`Reader::bytes16`], for UTF-8 text.
    pub(crate) fn str16(&mut self, field: &'static str, max: usize) -> Result<&'a str, ProtoError> {
        std::str::from_utf8(self.bytes16(field, max)?).map_err(|_| ProtoError::InvalidField {
            field,
            reason: "not UTF-8",
        })
    }

    /// Succeeds only if every byte was read: each value has exactly one encoding.
    pub(crate) fn finish(self) -> Result<(), ProtoError> {
        match self.bytes.len() {
            0 => Ok(()),
            extra => Err(ProtoError::TrailingBytes { extra }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_little_endian() {
        let mut out = Vec::new();
        let mut writer = Writer::new(&mut out);
        writer.u8(7);
        writer.bool(true);
        writer.u16(0x0102);
        writer.u32(0x0304_0506);
        writer.u64(0x0708_090a_0b0c_0d0e);
        writer.bytes16("name", b"abc", 3).unwrap();
        assert_eq!(
            out,
            [
                7, 1, 2, 1, 6, 5, 4, 3, 0x0e, 0x0d, 0x0c, 0x0b, 0x0a, 9, 8, 7, 3, 0, b'a', b'b',
                b'c'
            ]
        );
        let mut reader = Reader::new(&out);
        assert_eq!(reader.u8("a").unwrap(), 7);
        assert!(reader.bool("b").unwrap());
        assert_eq!(reader.u16("c").unwrap(), 0x0102);
        assert_eq!(reader.u32("d").unwrap(), 0x0304_0506);
        assert_eq!(reader.u64("e").unwrap(), 0x0708_090a_0b0c_0d0e);
        assert_eq!(reader.bytes16("name", 3).unwrap(), b"abc");
        reader.finish().unwrap();
    }

    #[test]
    fn lengths_are_checked_before_reading_and_writing() {
        let mut out = Vec::new();
        let error = Writer::new(&mut out)
            .bytes16("key", b"abcd", 3)
            .unwrap_err();
        assert_eq!(
            error,
            ProtoError::FieldTooLong {
                field: "key",
                bytes: 4,
                max: 3
            }
        );
        assert!(out.is_empty(), "nothing is written on error");
        // A length far beyond the input is refused by its bound, then by the input's end.
        assert_eq!(
            Reader::new(&[0xff, 0xff]).bytes16("key", 10),
            Err(ProtoError::FieldTooLong {
                field: "key",
                bytes: 0xffff,
                max: 10
            })
        );
        assert_eq!(
            Reader::new(&[5, 0, 1]).bytes16("key", 10),
            Err(ProtoError::Truncated { field: "key" })
        );
        assert_eq!(
            Reader::new(&[2]).bool("flag"),
            Err(ProtoError::InvalidField {
                field: "flag",
                reason: "a bool is 0 or 1"
            })
        );
        assert_eq!(
            Reader::new(&[1, 2]).u32("n"),
            Err(ProtoError::Truncated { field: "n" })
        );
    }
}
