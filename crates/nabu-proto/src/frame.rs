//! Whole frames: building them, and cutting them out of a byte stream as it arrives.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::{ErrorFrame, ProtoError};
use crate::header::{Flags, FrameHeader, FrameKind, HEADER_BYTES};
use crate::limits::Limits;
use crate::ops::{Meta, Op};

/// A frame: header, metadata and body. The metadata and body are [`Bytes`], so a frame cut
/// from a receive buffer shares that buffer instead of copying it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    header: FrameHeader,
    meta: Bytes,
    body: Bytes,
}

impl Frame {
    /// A frame of any kind; computes the header's lengths and checksums.
    pub fn new(
        kind: FrameKind,
        op_code: u16,
        request_id: u64,
        flags: Flags,
        meta: Bytes,
        body: Bytes,
    ) -> Result<Self, ProtoError> {
        let header = FrameHeader::new(kind, op_code, request_id, flags, &meta, &body)?;
        Ok(Self { header, meta, body })
    }

    /// [`Frame::new`] with the body's CRC32C already known (see
    /// [`FrameHeader::with_body_crc`]): a node serving a stored, verified shard whole does
    /// not checksum it again.
    pub fn with_body_crc(
        kind: FrameKind,
        op_code: u16,
        request_id: u64,
        flags: Flags,
        meta: Bytes,
        body: Bytes,
        body_crc: u32,
    ) -> Result<Self, ProtoError> {
        let header =
            FrameHeader::with_body_crc(kind, op_code, request_id, flags, &meta, &body, body_crc)?;
        Ok(Self { header, meta, body })
    }

    /// The REQUEST or RESPONSE frame (per `M::KIND`) carrying `meta` and the first part of
    /// the body; `more` says DATA frames follow.
    pub fn from_meta<M: Meta>(
        request_id: u64,
        meta: &M,
        body: Bytes,
        more: bool,
    ) -> Result<Self, ProtoError> {
        Self::new(
            M::KIND,
            M::OP.code(),
            request_id,
            Flags::more_if(more),
            Bytes::from(meta.to_vec()?),
            body,
        )
    }

    /// A DATA frame: more body for `request_id`, whose first frame had op `op`.
    pub fn data(op: Op, request_id: u64, body: Bytes, more: bool) -> Result<Self, ProtoError> {
        Self::new(
            FrameKind::Data,
            op.code(),
            request_id,
            Flags::more_if(more),
            Bytes::new(),
            body,
        )
    }

    /// An ERROR frame for `request_id` (0: the connection), answering op code `op_code` (0 when
    /// there is no request to name).
    pub fn error(op_code: u16, request_id: u64, error: &ErrorFrame) -> Result<Self, ProtoError> {
        let mut meta = Vec::new();
        error.encode(&mut meta)?;
        Self::new(
            FrameKind::Error,
            op_code,
            request_id,
            Flags::NONE,
            Bytes::from(meta),
            Bytes::new(),
        )
    }

    /// The header.
    pub fn header(&self) -> &FrameHeader {
        &self.header
    }

    /// The metadata bytes.
    pub fn meta(&self) -> &Bytes {
        &self.meta
    }

    /// The body bytes of this frame.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Takes the frame apart.
    pub fn into_parts(self) -> (FrameHeader, Bytes, Bytes) {
        (self.header, self.meta, self.body)
    }

    /// The op, or [`ProtoError::UnknownOp`].
    pub fn op(&self) -> Result<Op, ProtoError> {
        Op::from_code(self.header.op_code())
    }

    /// Decodes the metadata as `M`, after checking that the frame's kind and op are `M`'s.
    pub fn decode_meta<M: Meta>(&self) -> Result<M, ProtoError> {
        if self.header.kind() != M::KIND {
            return Err(ProtoError::InvalidField {
                field: "kind",
                reason: "the frame kind does not match the metadata type",
            });
        }
        if self.header.op_code() != M::OP.code() {
            return Err(ProtoError::InvalidField {
                field: "op",
                reason: "the frame op does not match the metadata type",
            });
        }
        M::decode(&self.meta)
    }

    /// Decodes an ERROR frame's metadata.
    pub fn decode_error(&self) -> Result<ErrorFrame, ProtoError> {
        if self.header.kind() != FrameKind::Error {
            return Err(ProtoError::InvalidField {
                field: "kind",
                reason: "not an ERROR frame",
            });
        }
        ErrorFrame::decode(&self.meta)
    }

    /// The frame's size on the wire.
    pub fn encoded_len(&self) -> usize {
        HEADER_BYTES + self.meta.len() + self.body.len()
    }

    /// Appends the encoded frame to `dst`. (To send a large body without copying it, write
    /// `header().encode()`, `meta()` and `body()` with one vectored write instead.)
    pub fn encode_into(&self, dst: &mut BytesMut) {
        dst.reserve(self.encoded_len());
        dst.put_slice(&self.header.encode());
        dst.put_slice(&self.meta);
        dst.put_slice(&self.body);
    }

    /// The encoded frame.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(&self.header.encode());
        out.extend_from_slice(&self.meta);
        out.extend_from_slice(&self.body);
        out
    }
}

/// Where the decoder is inside the current frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for a 32-byte header.
    Header,
    /// Header decoded and checked against the limits; waiting for the metadata.
    Meta(FrameHeader),
    /// Header checksum verified; waiting for the body.
    Body(FrameHeader),
    /// A fatal error happened; the connection must be closed.
    Failed,
}

/// Cuts frames out of a byte stream, checking each step before buffering the next.
///
/// Feed it the connection's receive buffer: `decode` consumes complete frames from the front
/// and leaves partial ones. The order of checks is what keeps memory bounded:
///
/// 1. 32 header bytes: magic, version, kind, flags, framing rules, and `meta_len` and
///    `body_len` against the [`Limits`]; nothing is reserved before these pass.
/// 2. `meta_len` more bytes (≤ 64 KiB): the header checksum over header and metadata.
/// 3. Only then is room reserved for the body (≤ `frame_body_bytes_max`), and when it is all
///    there, the body checksum is verified.
///
/// So the buffer never needs more than one frame, and a corrupted length is caught at step 1
/// or 2, before it costs memory. Errors at steps 1 and 2 are fatal (the decoder refuses to go
/// on: close the connection); a body checksum mismatch at step 3 consumes the frame, returns
/// [`ProtoError::BodyChecksumMismatch`] with its header, and leaves the decoder at the next
/// frame.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    limits: Limits,
    state: State,
}

impl FrameDecoder {
    /// A decoder enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            state: State::Header,
        }
    }

    /// Changes the limits from the next frame on (e.g. from [`Limits::before_hello`] to the
    /// full limits once HELLO succeeded).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// How many bytes `src` must hold for the next `decode` call to make progress: a reader
    /// that reads no further than this (plus its usual read size) buffers at most one frame.
    pub fn bytes_needed(&self) -> usize {
        match self.state {
            State::Header | State::Failed => HEADER_BYTES,
            State::Meta(header) => usize::from(header.meta_len()),
            State::Body(header) => header.body_len() as usize,
        }
    }

    /// Whether the decoder is between frames (nothing of a frame consumed yet). A connection
    /// closed at a boundary closed cleanly; one closed mid-frame was cut off.
    pub fn is_at_frame_boundary(&self) -> bool {
        self.state == State::Header
    }

    /// Decodes the next complete frame from the front of `src`: `Ok(None)` means more bytes
    /// are needed.
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, ProtoError> {
        let result = self.step(src);
        if matches!(&result, Err(error) if error.is_fatal()) {
            self.state = State::Failed;
        }
        result
    }

    fn step(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, ProtoError> {
        loop {
            match self.state {
                State::Failed => return Err(ProtoError::DecoderFailed),
                State::Header => {
                    let Some(bytes) = src.first_chunk::<HEADER_BYTES>() else {
                        return Ok(None);
                    };
                    let header = FrameHeader::decode(bytes, &self.limits)?;
                    src.advance(HEADER_BYTES);
                    self.state = State::Meta(header);
                    reserve_for(src, usize::from(header.meta_len()));
                }
                State::Meta(header) => {
                    let meta_len = usize::from(header.meta_len());
                    if src.len() < meta_len {
                        return Ok(None);
                    }
                    header.verify_meta(&src[..meta_len])?;
                    self.state = State::Body(header);
                    reserve_for(src, header.payload_len());
                }
                State::Body(header) => {
                    if src.len() < header.payload_len() {
                        return Ok(None);
                    }
                    let meta = src.split_to(usize::from(header.meta_len())).freeze();
                    let body = src.split_to(header.body_len() as usize).freeze();
                    self.state = State::Header;
                    header.verify_body(&body)?;
                    return Ok(Some(Frame { header, meta, body }));
                }
            }
        }
    }
}

/// Makes room for `wanted` bytes in `src` (counting what it already holds). Called only after
/// the lengths passed the limits, so the reservation is bounded.
fn reserve_for(src: &mut BytesMut, wanted: usize) {
    if let Some(missing) = wanted.checked_sub(src.len()) {
        src.reserve(missing);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use crate::ops::{Ping, PingReply};

    fn ping(request_id: u64) -> Frame {
        Frame::from_meta(request_id, &Ping, Bytes::new(), false).unwrap()
    }

    #[test]
    fn a_known_body_checksum_makes_the_same_frame() {
        let body = Bytes::from_static(b"shard bytes");
        let meta = Bytes::from_static(b"m");
        let computed = Frame::new(
            FrameKind::Response,
            0x0102,
            9,
            Flags::NONE,
            meta.clone(),
            body.clone(),
        )
        .unwrap();
        let known = Frame::with_body_crc(
            FrameKind::Response,
            0x0102,
            9,
            Flags::NONE,
            meta,
            body,
            nabu_core::checksum::crc32c(b"shard bytes"),
        )
        .unwrap();
        assert_eq!(known.header(), computed.header());
        assert_eq!(known.to_vec(), computed.to_vec());
    }

    #[test]
    fn frame_kinds_build_and_decode_back() {
        let frames = [
            ping(1),
            Frame::from_meta(2, &PingReply, Bytes::new(), false).unwrap(),
            Frame::data(Op::ShardPut, 3, Bytes::from_static(b"payload"), true).unwrap(),
            Frame::error(
                Op::ShardGet.code(),
                4,
                &ErrorFrame::new(ErrorCode::NOT_FOUND, "gone"),
            )
            .unwrap(),
            Frame::error(0, 0, &ErrorFrame::new(ErrorCode::BUSY, "full")).unwrap(),
        ];
        let mut decoder = FrameDecoder::new(Limits::default());
        for frame in frames {
            let mut buffer = BytesMut::from(&frame.to_vec()[..]);
            let decoded = decoder.decode(&mut buffer).unwrap().unwrap();
            assert_eq!(decoded, frame);
            assert!(buffer.is_empty());
            assert!(decoder.is_at_frame_boundary());
        }
        let error = Frame::error(0, 0, &ErrorFrame::new(ErrorCode::BUSY, "full")).unwrap();
        assert_eq!(error.decode_error().unwrap().code, ErrorCode::BUSY);
        assert!(ping(1).decode_error().is_err());
        assert_eq!(ping(1).decode_meta::<Ping>(), Ok(Ping));
        assert!(ping(1).decode_meta::<PingReply>().is_err());
    }

    #[test]
    fn body_checksum_mismatch_fails_one_frame_and_decoding_goes_on() {
        let bad = Frame::data(Op::ShardPut, 9, Bytes::from_static(b"abc"), false).unwrap();
        let mut bytes = bad.to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        bytes.extend_from_slice(&ping(10).to_vec());
        let mut buffer = BytesMut::from(&bytes[..]);
        let mut decoder = FrameDecoder::new(Limits::default());
        let error = decoder.decode(&mut buffer).unwrap_err();
        assert!(!error.is_fatal());
        assert_eq!(error.code(), ErrorCode::CHECKSUM_MISMATCH);
        assert!(
            matches!(error, ProtoError::BodyChecksumMismatch { header, .. } if header.request_id() == 9)
        );
        assert_eq!(decoder.decode(&mut buffer).unwrap(), Some(ping(10)));
    }

    #[test]
    fn fatal_errors_stop_the_decoder() {
        let mut bytes = ping(1).to_vec();
        bytes[30] ^= 0xff; // the header checksum
        let mut buffer = BytesMut::from(&bytes[..]);
        let mut decoder = FrameDecoder::new(Limits::default());
        assert!(matches!(
            decoder.decode(&mut buffer),
            Err(ProtoError::HeaderChecksumMismatch { .. })
        ));
        buffer.extend_from_slice(&ping(2).to_vec());
        assert_eq!(decoder.decode(&mut buffer), Err(ProtoError::DecoderFailed));
    }

    #[test]
    fn oversized_lengths_are_refused_before_anything_is_reserved() {
        // A header claiming a 4 GiB body: refused from the 32 header bytes alone, and the
        // buffer did not grow towards the claimed size.
        let frame = Frame::data(Op::ShardPut, 1, Bytes::from_static(b"x"), false).unwrap();
        let mut bytes = frame.to_vec();
        bytes[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut buffer = BytesMut::from(&bytes[..HEADER_BYTES]);
        let capacity_before = buffer.capacity();
        let mut decoder = FrameDecoder::new(Limits::default());
        assert!(matches!(
            decoder.decode(&mut buffer),
            Err(ProtoError::FrameBodyTooLarge { .. })
        ));
        assert_eq!(buffer.capacity(), capacity_before);
    }
}
