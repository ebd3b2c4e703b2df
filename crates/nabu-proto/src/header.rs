//! The 32-byte frame header.
//!
//! ```text
//! offset size field
//!      0    4 magic        "NABU"
//!      4    1 version      1
//!      5    1 kind         1 REQUEST, 2 RESPONSE, 3 ERROR, 4 DATA
//!      6    2 op           op code (u16)
//!      8    8 request_id   chosen by the requester, unique among its requests in flight
//!     16    2 flags        bit 0 MORE: DATA frames of this request id follow
//!     18    2 meta_len     bytes of op metadata after the header
//!     20    4 body_len     bytes of body after the metadata
//!     24    4 body_crc     CRC32C of the body (0 for an empty body)
//!     28    4 header_crc   CRC32C of bytes 0..28, then the metadata
//! ```
//!
//! The header checksum covers the metadata too, and sits in the header, so a receiver verifies
//! header and metadata (at most 64 KiB) *before* it buffers a body of up to
//! `frame_body_bytes_max`: a corrupted length is caught before it costs memory. The body has
//! its own checksum, so a damaged body fails one request rather than the connection.

use crate::error::ProtoError;
use crate::limits::Limits;

/// The first four bytes of every frame.
pub const MAGIC: [u8; 4] = *b"NABU";
/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u8 = 1;
/// The size of a frame header.
pub const HEADER_BYTES: usize = 32;
/// Bytes of the header covered by `header_crc` (everything before it).
const HEADER_CRC_OFFSET: usize = 28;

/// What a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// A request: op metadata and the first part of its body.
    Request = 1,
    /// The successful reply to a request: op metadata and the first part of its body.
    Response = 2,
    /// A failed request (or, with request id 0, a failed connection): metadata is an
    /// [`ErrorFrame`](crate::ErrorFrame), no body. Final for its request id.
    Error = 3,
    /// More body for a request or response whose frame had `MORE` set. No metadata.
    Data = 4,
}

impl FrameKind {
    /// The kind with this wire value.
    pub fn from_u8(value: u8) -> Result<Self, ProtoError> {
        match value {
            1 => Ok(Self::Request),
            2 => Ok(Self::Response),
            3 => Ok(Self::Error),
            4 => Ok(Self::Data),
            kind => Err(ProtoError::UnknownKind { kind }),
        }
    }
}

/// Frame flags (u16). Version 1 defines one bit; the rest must be zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(u16);

impl Flags {
    /// No flags.
    pub const NONE: Flags = Flags(0);
    /// More DATA frames of this request id follow (the body is streamed).
    pub const MORE: Flags = Flags(1);
    const KNOWN: u16 = Self::MORE.0;

    /// `MORE` if `more`, else none.
    pub const fn more_if(more: bool) -> Flags {
        if more { Self::MORE } else { Self::NONE }
    }

    /// Flags from their wire value; unknown bits are refused.
    pub fn from_u16(bits: u16) -> Result<Self, ProtoError> {
        if bits & !Self::KNOWN != 0 {
            return Err(ProtoError::ReservedFlags { flags: bits });
        }
        Ok(Self(bits))
    }

    /// The wire value.
    pub const fn bits(self) -> u16 {
        self.0
    }

    /// Whether `MORE` is set.
    pub const fn more(self) -> bool {
        self.0 & Self::MORE.0 != 0
    }
}

/// A decoded (or built) frame header. Its fields are consistent by construction: build one
/// with [`FrameHeader::new`], which computes lengths and checksums, or decode one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameHeader {
    version: u8,
    kind: FrameKind,
    op_code: u16,
    request_id: u64,
    flags: Flags,
    meta_len: u16,
    body_len: u32,
    body_crc: u32,
    header_crc: u32,
}

impl FrameHeader {
    /// The header for a frame with this metadata and body; checks the framing rules and the
    /// field widths (metadata ≤ 65,535 bytes, body ≤ 4 GiB − 1) but not a receiver's limits.
    pub fn new(
        kind: FrameKind,
        op_code: u16,
        request_id: u64,
        flags: Flags,
        meta: &[u8],
        body: &[u8],
    ) -> Result<Self, ProtoError> {
        let meta_len = u16::try_from(meta.len()).map_err(|_| ProtoError::MetaTooLarge {
            meta_bytes: meta.len() as u64,
            max: u64::from(u16::MAX),
        })?;
        let body_len = u32::try_from(body.len()).map_err(|_| ProtoError::FrameBodyTooLarge {
            request_id,
            body_bytes: body.len() as u64,
            max: u64::from(u32::MAX),
        })?;
        check_framing_rules(kind, request_id, flags, meta_len, body_len)?;
        let mut header = Self {
            version: PROTOCOL_VERSION,
            kind,
            op_code,
            request_id,
            flags,
            meta_len,
            body_len,
            body_crc: nabu_core::checksum::crc32c(body),
            header_crc: 0,
        };
        header.header_crc = header.compute_header_crc(meta);
        Ok(header)
    }

    /// [`FrameHeader::new`] with the body's CRC32C already known (a checksum stored with
    /// the bytes and verified with them), so the body is not read again. A wrong `body_crc`
    /// makes the receiver refuse the frame; debug builds check it.
    pub fn with_body_crc(
        kind: FrameKind,
        op_code: u16,
        request_id: u64,
        flags: Flags,
        meta: &[u8],
        body: &[u8],
        body_crc: u32,
    ) -> Result<Self, ProtoError> {
        debug_assert_eq!(
            nabu_core::checksum::crc32c(body),
            body_crc,
            "a wrong known body CRC"
        );
        let mut header = Self::new(kind, op_code, request_id, flags, meta, &[])?;
        header.body_len = u32::try_from(body.len()).map_err(|_| ProtoError::FrameBodyTooLarge {
            request_id,
            body_bytes: body.len() as u64,
            max: u64::from(u32::MAX),
        })?;
        check_framing_rules(kind, request_id, flags, header.meta_len, header.body_len)?;
        header.body_crc = if body.is_empty() { 0 } else { body_crc };
        header.header_crc = header.compute_header_crc(meta);
        Ok(header)
    }

    /// Decodes and checks a header: magic, version, kind, flags, the framing rules and the
    /// receiver's `limits`, all before a single byte of metadata or body is buffered. The
    /// header checksum needs the metadata: call [`FrameHeader::verify_meta`] next.
    ///
    /// Every error here is fatal (the connection must be closed).
    pub fn decode(bytes: &[u8; HEADER_BYTES], limits: &Limits) -> Result<Self, ProtoError> {
        let field = |offset: usize, width: usize| &bytes[offset..offset + width];
        let u16_at = |offset| u16::from_le_bytes([bytes[offset], bytes[offset + 1]]);
        let u32_at = |offset: usize| {
            let mut word = [0u8; 4];
            word.copy_from_slice(field(offset, 4));
            u32::from_le_bytes(word)
        };
        let mut magic = [0u8; 4];
        magic.copy_from_slice(field(0, 4));
        if magic != MAGIC {
            return Err(ProtoError::BadMagic { found: magic });
        }
        if bytes[4] != PROTOCOL_VERSION {
            return Err(ProtoError::UnsupportedVersion { version: bytes[4] });
        }
        let kind = FrameKind::from_u8(bytes[5])?;
        let mut request_id = [0u8; 8];
        request_id.copy_from_slice(field(8, 8));
        let header = Self {
            version: bytes[4],
            kind,
            op_code: u16_at(6),
            request_id: u64::from_le_bytes(request_id),
            flags: Flags::from_u16(u16_at(16))?,
            meta_len: u16_at(18),
            body_len: u32_at(20),
            body_crc: u32_at(24),
            header_crc: u32_at(28),
        };
        check_framing_rules(
            kind,
            header.request_id,
            header.flags,
            header.meta_len,
            header.body_len,
        )?;
        if header.meta_len > limits.meta_bytes_max {
            return Err(ProtoError::MetaTooLarge {
                meta_bytes: header.meta_len.into(),
                max: limits.meta_bytes_max.into(),
            });
        }
        if header.body_len > limits.frame_body_bytes_max {
            return Err(ProtoError::FrameBodyTooLarge {
                request_id: header.request_id,
                body_bytes: header.body_len.into(),
                max: limits.frame_body_bytes_max.into(),
            });
        }
        Ok(header)
    }

    /// The 32 header bytes.
    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut bytes = self.encode_without_crc();
        bytes[HEADER_CRC_OFFSET..].copy_from_slice(&self.header_crc.to_le_bytes());
        bytes
    }

    fn encode_without_crc(&self) -> [u8; HEADER_BYTES] {
        let mut bytes = [0u8; HEADER_BYTES];
        bytes[0..4].copy_from_slice(&MAGIC);
        bytes[4] = self.version;
        bytes[5] = self.kind as u8;
        bytes[6..8].copy_from_slice(&self.op_code.to_le_bytes());
        bytes[8..16].copy_from_slice(&self.request_id.to_le_bytes());
        bytes[16..18].copy_from_slice(&self.flags.bits().to_le_bytes());
        bytes[18..20].copy_from_slice(&self.meta_len.to_le_bytes());
        bytes[20..24].copy_from_slice(&self.body_len.to_le_bytes());
        bytes[24..28].copy_from_slice(&self.body_crc.to_le_bytes());
        bytes
    }

    fn compute_header_crc(&self, meta: &[u8]) -> u32 {
        let head = self.encode_without_crc();
        nabu_core::checksum::crc32c_append(
            nabu_core::checksum::crc32c(&head[..HEADER_CRC_OFFSET]),
            meta,
        )
    }

    /// Checks the header checksum over the header and `meta` (which must be `meta_len` bytes).
    /// A mismatch is fatal: the lengths that frame the stream cannot be trusted.
    pub fn verify_meta(&self, meta: &[u8]) -> Result<(), ProtoError> {
        if meta.len() != usize::from(self.meta_len) {
            return Err(ProtoError::MalformedHeader {
                reason: "metadata length differs from meta_len",
            });
        }
        let computed = self.compute_header_crc(meta);
        if computed != self.header_crc {
            return Err(ProtoError::HeaderChecksumMismatch {
                stored: self.header_crc,
                computed,
            });
        }
        Ok(())
    }

    /// Checks the body checksum. A mismatch fails this frame's request, not the connection.
    pub fn verify_body(&self, body: &[u8]) -> Result<(), ProtoError> {
        if body.len() != self.body_len as usize {
            return Err(ProtoError::MalformedHeader {
                reason: "body length differs from body_len",
            });
        }
        let computed = nabu_core::checksum::crc32c(body);
        if computed != self.body_crc {
            return Err(ProtoError::BodyChecksumMismatch {
                header: *self,
                computed,
            });
        }
        Ok(())
    }

    /// The protocol version.
    pub fn version(&self) -> u8 {
        self.version
    }
    /// The frame kind.
    pub fn kind(&self) -> FrameKind {
        self.kind
    }
    /// The raw op code; [`Op::from_code`](crate::Op::from_code) names it.
    pub fn op_code(&self) -> u16 {
        self.op_code
    }
    /// The request id (0 only on a connection-level ERROR frame).
    pub fn request_id(&self) -> u64 {
        self.request_id
    }
    /// The flags.
    pub fn flags(&self) -> Flags {
        self.flags
    }
    /// Whether DATA frames of this request id follow.
    pub fn more(&self) -> bool {
        self.flags.more()
    }
    /// Bytes of metadata after the header.
    pub fn meta_len(&self) -> u16 {
        self.meta_len
    }
    /// Bytes of body after the metadata.
    pub fn body_len(&self) -> u32 {
        self.body_len
    }
    /// The body's CRC32C.
    pub fn body_crc(&self) -> u32 {
        self.body_crc
    }
    /// The CRC32C of header bytes 0..28 and the metadata.
    pub fn header_crc(&self) -> u32 {
        self.header_crc
    }
    /// Bytes of metadata and body after the header.
    pub fn payload_len(&self) -> usize {
        usize::from(self.meta_len) + self.body_len as usize
    }
}

/// The rules every header obeys whatever the op (see the protocol document, "Frames").
fn check_framing_rules(
    kind: FrameKind,
    request_id: u64,
    flags: Flags,
    meta_len: u16,
    body_len: u32,
) -> Result<(), ProtoError> {
    let broken = |reason| Err(ProtoError::MalformedHeader { reason });
    match kind {
        FrameKind::Error if flags.more() => broken("an ERROR frame is final: MORE is not allowed"),
        FrameKind::Error if body_len != 0 => broken("an ERROR frame has no body"),
        FrameKind::Error => Ok(()),
        _ if request_id == 0 => broken("request id 0 is reserved for connection-level errors"),
        FrameKind::Data if meta_len != 0 => broken("a DATA frame has no metadata"),
        FrameKind::Request | FrameKind::Response | FrameKind::Data => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> FrameHeader {
        FrameHeader::new(
            FrameKind::Request,
            0x0102,
            0x1122_3344_5566_7788,
            Flags::MORE,
            b"meta",
            b"body!",
        )
        .unwrap()
    }

    #[test]
    fn header_layout_is_32_bytes_little_endian() {
        let header = sample();
        let bytes = header.encode();
        assert_eq!(&bytes[0..4], b"NABU");
        assert_eq!(bytes[4], 1);
        assert_eq!(bytes[5], 1);
        assert_eq!(bytes[6..8], [0x02, 0x01]);
        assert_eq!(
            bytes[8..16],
            [0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11]
        );
        assert_eq!(bytes[16..18], [1, 0]);
        assert_eq!(bytes[18..20], [4, 0]);
        assert_eq!(bytes[20..24], [5, 0, 0, 0]);
        assert_eq!(
            bytes[24..28],
            nabu_core::checksum::crc32c(b"body!").to_le_bytes()
        );
        let mut covered = bytes[..28].to_vec();
        covered.extend_from_slice(b"meta");
        assert_eq!(
            bytes[28..32],
            nabu_core::checksum::crc32c(&covered).to_le_bytes()
        );

        let decoded = FrameHeader::decode(&bytes, &Limits::default()).unwrap();
        assert_eq!(decoded, header);
        decoded.verify_meta(b"meta").unwrap();
        decoded.verify_body(b"body!").unwrap();
    }

    #[test]
    fn checksums_catch_damage() {
        let header = sample();
        assert!(matches!(
            header.verify_meta(b"mETa"),
            Err(ProtoError::HeaderChecksumMismatch { .. })
        ));
        assert!(matches!(
            header.verify_body(b"body?"),
            Err(ProtoError::BodyChecksumMismatch { header: h, .. }) if h == header
        ));
        assert!(matches!(
            header.verify_body(b"body"),
            Err(ProtoError::MalformedHeader { .. })
        ));
        // Every single-bit flip in bytes 6..28 (the fields the checksum covers and the
        // structural checks may let through) is caught by one check or another.
        let bytes = header.encode();
        for byte in 0..HEADER_BYTES {
            for bit in 0..8 {
                let mut damaged = bytes;
                damaged[byte] ^= 1 << bit;
                let caught = FrameHeader::decode(&damaged, &Limits::default())
                    .and_then(|h| h.verify_meta(b"meta"));
                assert!(
                    caught.is_err(),
                    "flip of byte {byte} bit {bit} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn decode_refuses_bad_headers_with_typed_errors() {
        let limits = Limits::default();
        let good = sample().encode();
        let with = |offset: usize, value: &[u8]| {
            let mut bytes = good;
            bytes[offset..offset + value.len()].copy_from_slice(value);
            FrameHeader::decode(&bytes, &limits)
        };
        assert_eq!(
            with(0, b"HTTP"),
            Err(ProtoError::BadMagic { found: *b"HTTP" })
        );
        assert_eq!(
            with(4, &[2]),
            Err(ProtoError::UnsupportedVersion { version: 2 })
        );
        assert_eq!(with(5, &[0]), Err(ProtoError::UnknownKind { kind: 0 }));
        assert_eq!(with(5, &[5]), Err(ProtoError::UnknownKind { kind: 5 }));
        assert_eq!(
            with(16, &[2, 0]),
            Err(ProtoError::ReservedFlags { flags: 2 })
        );
        assert!(matches!(
            with(8, &[0; 8]),
            Err(ProtoError::MalformedHeader { .. })
        ));
        // DATA with metadata; ERROR with MORE; ERROR with a body.
        assert!(matches!(
            with(5, &[4]),
            Err(ProtoError::MalformedHeader { .. })
        ));
        assert!(matches!(
            with(5, &[3]),
            Err(ProtoError::MalformedHeader { .. })
        ));
        let small = Limits {
            meta_bytes_max: 3,
            frame_body_bytes_max: 4,
            ..limits
        };
        assert_eq!(
            FrameHeader::decode(&good, &small),
            Err(ProtoError::MetaTooLarge {
                meta_bytes: 4,
                max: 3
            })
        );
        let small = Limits {
            frame_body_bytes_max: 4,
            ..limits
        };
        assert_eq!(
            FrameHeader::decode(&good, &small),
            Err(ProtoError::FrameBodyTooLarge {
                request_id: 0x1122_3344_5566_7788,
                body_bytes: 5,
                max: 4
            })
        );
        // The largest lengths the fields can hold are refused by the default limits.
        let huge = with(18, &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(huge, Err(ProtoError::FrameBodyTooLarge { .. })));
    }

    #[test]
    fn new_enforces_the_framing_rules() {
        let new = |kind, id, flags, meta: &[u8], body: &[u8]| {
            FrameHeader::new(kind, 1, id, flags, meta, body)
        };
        assert!(new(FrameKind::Request, 0, Flags::NONE, b"", b"").is_err());
        assert!(new(FrameKind::Data, 1, Flags::NONE, b"m", b"").is_err());
        assert!(new(FrameKind::Error, 1, Flags::MORE, b"m", b"").is_err());
        assert!(new(FrameKind::Error, 1, Flags::NONE, b"m", b"b").is_err());
        assert!(new(FrameKind::Error, 0, Flags::NONE, b"m", b"").is_ok());
        let too_much_meta = vec![0u8; 65_536];
        assert!(matches!(
            new(FrameKind::Request, 1, Flags::NONE, &too_much_meta, b""),
            Err(ProtoError::MetaTooLarge { .. })
        ));
        assert_eq!(
            Flags::from_u16(0x8000),
            Err(ProtoError::ReservedFlags { flags: 0x8000 })
        );
        assert_eq!(
            FrameHeader::new(FrameKind::Data, 1, 1, Flags::NONE, b"", b"")
                .unwrap()
                .body_crc(),
            0
        );
    }
}
