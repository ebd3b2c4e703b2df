//! Shard ops: SHARD_PUT, SHARD_GET, SHARD_DELETE, SHARD_STAT.
//!
//! A node holds at most one shard of any stripe, so a stripe id names the shard on that node;
//! the node records the shard's index and tells readers (shard indexes are assigned when a
//! stripe is written and carried through membership changes, not recomputed: see
//! ARCHITECTURE.md).

use nabu_core::ec::CodecId;
use nabu_core::id::StripeId;

use super::impl_meta;
use crate::error::ProtoError;
use crate::wire::{Reader, Writer};

/// How a shard relates to its stripe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShardLayout {
    /// The shard is the whole stripe (`replicas:R` and `none`). Wire: codec 0, then three 0s.
    Whole,
    /// Shard `index` of an erasure-coded stripe of `data_shards` + `parity_shards` shards
    /// (indexes below `data_shards` are data, the rest parity).
    Erasure {
        /// The erasure code (never 0, which means [`ShardLayout::Whole`] on the wire).
        codec: CodecId,
        /// K: data shards per stripe, at least 1.
        data_shards: u8,
        /// M: parity shards per stripe; K + M ≤ 255.
        parity_shards: u8,
        /// This shard's index, below K + M.
        index: u8,
    },
}

impl ShardLayout {
    fn encode(&self, writer: &mut Writer<'_>) {
        let (codec, data, parity, index) = match *self {
            ShardLayout::Whole => (0, 0, 0, 0),
            ShardLayout::Erasure {
                codec,
                data_shards,
                parity_shards,
                index,
            } => (codec.0, data_shards, parity_shards, index),
        };
        for byte in [codec, data, parity, index] {
            writer.u8(byte);
        }
    }

    fn decode(reader: &mut Reader<'_>) -> Result<Self, ProtoError> {
        let codec = reader.u8("codec")?;
        let data_shards = reader.u8("data_shards")?;
        let parity_shards = reader.u8("parity_shards")?;
        let index = reader.u8("shard_index")?;
        let layout = if codec == 0 {
            ShardLayout::Whole
        } else {
            ShardLayout::Erasure {
                codec: CodecId(codec),
                data_shards,
                parity_shards,
                index,
            }
        };
        if codec == 0 && (data_shards, parity_shards, index) != (0, 0, 0) {
            return Err(invalid(
                "data_shards",
                "a whole-stripe shard has K = M = index = 0",
            ));
        }
        layout.check()?;
        Ok(layout)
    }

    fn check(&self) -> Result<(), ProtoError> {
        if let ShardLayout::Erasure {
            codec,
            data_shards,
            parity_shards,
            index,
        } = *self
        {
            if codec.0 == 0 {
                return Err(invalid("codec", "codec 0 means a whole stripe"));
            }
            if data_shards == 0 {
                return Err(invalid(
                    "data_shards",
                    "an erasure code has at least 1 data shard",
                ));
            }
            let width = u16::from(data_shards) + u16::from(parity_shards);
            if width > 255 {
                return Err(invalid("parity_shards", "K + M is at most 255"));
            }
            if u16::from(index) >= width {
                return Err(invalid("shard_index", "the shard index is below K + M"));
            }
        }
        Ok(())
    }
}

fn invalid(field: &'static str, reason: &'static str) -> ProtoError {
    ProtoError::InvalidField { field, reason }
}

/// What a node knows about the shard it holds of one stripe.
///
/// Layout (24 bytes): `codec u8`, `data_shards u8`, `parity_shards u8`, `shard_index u8`,
/// `stripe_bytes u64`, `shard_bytes u64`, `shard_crc u32` (CRC32C of the whole shard).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShardInfo {
    /// How the shard relates to its stripe.
    pub layout: ShardLayout,
    /// The stripe's length before coding (the last stripe of a blob is shorter).
    pub stripe_bytes: u64,
    /// The shard's length. A whole-stripe shard is `stripe_bytes` long; K erasure shards hold
    /// at least `stripe_bytes` together.
    pub shard_bytes: u64,
    /// CRC32C of the whole shard, recorded by the writer and verified by the node on every
    /// read from disk and by the reader of a whole shard.
    pub shard_crc: u32,
}

impl ShardInfo {
    pub(super) fn encode(&self, writer: &mut Writer<'_>) -> Result<(), ProtoError> {
        self.check()?;
        self.layout.encode(writer);
        writer.u64(self.stripe_bytes);
        writer.u64(self.shard_bytes);
        writer.u32(self.shard_crc);
        Ok(())
    }

    pub(super) fn decode(reader: &mut Reader<'_>) -> Result<Self, ProtoError> {
        let info = Self {
            layout: ShardLayout::decode(reader)?,
            stripe_bytes: reader.u64("stripe_bytes")?,
            shard_bytes: reader.u64("shard_bytes")?,
            shard_crc: reader.u32("shard_crc")?,
        };
        info.check()?;
        Ok(info)
    }

    fn check(&self) -> Result<(), ProtoError> {
        self.layout.check()?;
        match self.layout {
            ShardLayout::Whole if self.shard_bytes != self.stripe_bytes => Err(invalid(
                "shard_bytes",
                "a whole-stripe shard is as long as the stripe",
            )),
            ShardLayout::Erasure { data_shards, .. }
                if u128::from(self.shard_bytes) * u128::from(data_shards)
                    < u128::from(self.stripe_bytes) =>
            {
                Err(invalid("shard_bytes", "K shards must hold the stripe"))
            }
            _ => Ok(()),
        }
    }
}

/// A byte range inside a shard: `bytes` (≥ 1) bytes from `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ByteRange {
    /// The first byte.
    pub offset: u64,
    /// How many bytes, at least 1; `offset + bytes` does not overflow.
    pub bytes: u64,
}

/// SHARD_PUT request: store one shard; the body is the shard (`shard_bytes` bytes).
///
/// Layout (56 bytes): `stripe_id [32]`, then [`ShardInfo`] (24).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardPut {
    /// The stripe the shard belongs to.
    pub stripe_id: StripeId,
    /// The shard's layout, lengths and checksum; the node checks the body against them
    /// before it acknowledges.
    pub shard: ShardInfo,
}

impl ShardPut {
    fn encode_fields(&self, writer: &mut Writer<'_>) -> Result<(), ProtoError> {
        writer.array32(self.stripe_id.as_bytes());
        self.shard.encode(writer)
    }

    fn decode_fields(reader: &mut Reader<'_>) -> Result<Self, ProtoError> {
        Ok(Self {
            stripe_id: StripeId::from_bytes(reader.array32("stripe_id")?),
            shard: ShardInfo::decode(reader)?,
        })
    }
}
impl_meta!(
    ShardPut,
    ShardPut,
    Request,
    body = |put| put.shard.shard_bytes
);

/// What a SHARD_PUT did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PutOutcome {
    /// The shard is now durable on this node.
    Stored = 1,
    /// The node already held this very shard (same index and checksum); nothing was written.
    AlreadyHeld = 2,
}

/// SHARD_PUT response, sent once the shard is durable.
///
/// Layout (1 byte): `outcome u8` (1 stored, 2 already held).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardPutReply {
    /// What the put did.
    pub outcome: PutOutcome,
}

impl ShardPutReply {
    fn encode_fields(&self, writer: &mut Writer<'_>) -> Result<(), ProtoError> {
        writer.u8(self.outcome as u8);
        Ok(())
    }

    fn decode_fields(reader: &mut Reader<'_>) -> Result<Self, ProtoError> {
        let outcome = match reader.u8("outcome")? {
            1 => PutOutcome::Stored,
            2 => PutOutcome::AlreadyHeld,
            _ => return Err(invalid("outcome", "an outcome is 1 or 2")),
        };
        Ok(Self { outcome })
    }
}
impl_meta!(ShardPutReply, ShardPut, Response);

/// SHARD_GET request: read this node's shard of a stripe, whole or a byte range of it.
///
/// Layout (49 bytes): `stripe_id [32]`, `has_range u8` (0 or 1), `range_offset u64`,
/// `range_bytes u64` (both 0 when `has_range` is 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardGet {
    /// The stripe.
    pub stripe_id: StripeId,
    /// The bytes wanted; `None` for the whole shard. A range past the shard's end is clipped
    /// by the node; a range starting at or past the end is BAD_REQUEST.
    pub range: Option<ByteRange>,
}

impl ShardGet {
    fn encode_fields(&self, writer: &mut Writer<'_>) -> Result<(), ProtoError> {
        writer.array32(self.stripe_id.as_bytes());
        let range = self.range.unwrap_or(ByteRange {
            offset: 0,
            bytes: 0,
        });
        if self.range.is_some() {
            check_range(range.offset, range.bytes)?;
        }
        writer.bool(self.range.is_some());
        writer.u64(range.offset);
        writer.u64(range.bytes);
        Ok(())
    }

    fn decode_fields(reader: &mut Reader<'_>) -> Result<Self, ProtoError> {
        let stripe_id = StripeId::from_bytes(reader.array32("stripe_id")?);
        let has_range = reader.bool("has_range")?;
        let offset = reader.u64("range_offset")?;
        let bytes = reader.u64("range_bytes")?;
        let range = if has_range {
            check_range(offset, bytes)?;
            Some(ByteRange { offset, bytes })
        } else if (offset, bytes) != (0, 0) {
            return Err(invalid("range_offset", "no range: offset and length are 0"));
        } else {
            None
        };
        Ok(Self { stripe_id, range })
    }
}
impl_meta!(ShardGet, ShardGet, Request);

fn check_range(offset: u64, bytes: u64) -> Result<(), ProtoError> {
    if bytes == 0 {
        return Err(invalid("range_bytes", "a range has at least 1 byte"));
    }
    if offset.checked_add(bytes).is_none() {
        return Err(invalid("range_bytes", "the range's end overflows"));
    }
    Ok(())
}

/// SHARD_GET response: the shard's description and the bytes served (the body).
///
/// Layout (40 bytes): [`ShardInfo`] (24), `offset u64`, `body_bytes u64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardGetReply {
    /// The shard this node holds, including its index.
    pub shard: ShardInfo,
    /// Where in the shard the body starts (0 for a whole-shard read).
    pub offset: u64,
    /// The body's length (the range after clipping); `offset + body_bytes ≤ shard_bytes`.
    pub body_bytes: u64,
}

impl ShardGetReply {
    fn check(&self) -> Result<(), ProtoError> {
        match self.offset.checked_add(self.body_bytes) {
            Some(end) if end <= self.shard.shard_bytes => Ok(()),
            _ => Err(invalid("body_bytes", "the body lies inside the shard")),
        }
    }

    fn encode_fields(&self, writer: &mut Writer<'_>) -> Result<(), ProtoError> {
        self.check()?;
        self.shard.encode(writer)?;
        writer.u64(self.offset);
        writer.u64(self.body_bytes);
        Ok(())
    }

    fn decode_fields(reader: &mut Reader<'_>) -> Result<Self, ProtoError> {
        let reply = Self {
            shard: ShardInfo::decode(reader)?,
            offset: reader.u64("offset")?,
            body_bytes: reader.u64("body_bytes")?,
        };
        reply.check()?;
        Ok(reply)
    }
}
impl_meta!(
    ShardGetReply,
    ShardGet,
    Response,
    body = |reply| reply.body_bytes
);

/// Declares a request whose metadata is one stripe id (32 bytes).
macro_rules! stripe_request {
    ($(#[$doc:meta])* $name:ident, $op:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name {
            /// The stripe.
            pub stripe_id: StripeId,
        }

        impl $name {
            fn encode_fields(&self, writer: &mut Writer<'_>) -> Result<(), ProtoError> {
                writer.array32(self.stripe_id.as_bytes());
                Ok(())
            }

            fn decode_fields(reader: &mut Reader<'_>) -> Result<Self, ProtoError> {
                Ok(Self {
                    stripe_id: StripeId::from_bytes(reader.array32("stripe_id")?),
                })
            }
        }
        impl_meta!($name, $op, Request);
    };
}

stripe_request!(
    /// SHARD_DELETE request: drop this node's shard of the stripe. Layout: `stripe_id [32]`.
    ShardDelete, ShardDelete
);
stripe_request!(
    /// SHARD_STAT request: describe this node's shard of the stripe. Layout: `stripe_id [32]`.
    ShardStat, ShardStat
);

/// SHARD_DELETE response. Layout (1 byte): `existed u8` (0 or 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardDeleteReply {
    /// Whether the node held a shard of the stripe (deleting a missing shard succeeds).
    pub existed: bool,
}

impl ShardDeleteReply {
    fn encode_fields(&self, writer: &mut Writer<'_>) -> Result<(), ProtoError> {
        writer.bool(self.existed);
        Ok(())
    }

    fn decode_fields(reader: &mut Reader<'_>) -> Result<Self, ProtoError> {
        Ok(Self {
            existed: reader.bool("existed")?,
        })
    }
}
impl_meta!(ShardDeleteReply, ShardDelete, Response);

/// SHARD_STAT response. Layout (24 bytes): [`ShardInfo`]. A missing shard is NOT_FOUND.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardStatReply {
    /// The shard this node holds.
    pub shard: ShardInfo,
}

impl ShardStatReply {
    fn encode_fields(&self, writer: &mut Writer<'_>) -> Result<(), ProtoError> {
        self.shard.encode(writer)
    }

    fn decode_fields(reader: &mut Reader<'_>) -> Result<Self, ProtoError> {
        Ok(Self {
            shard: ShardInfo::decode(reader)?,
        })
    }
}
impl_meta!(ShardStatReply, ShardStat, Response);
