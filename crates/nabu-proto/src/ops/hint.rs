//! Hint ops: HINT_PUT.
//!
//! A writer that could not put a shard on its placement node (the node was down) tells a live
//! node so: either the node that took the shard in its place (hinted handoff: "this shard
//! belongs on `home`; move it there when `home` is back") or a node holding another shard of
//! the stripe when no node could take it ("shard `index` of this stripe is missing on `home`;
//! rebuild it there"). The node keeps the hint durably and replays it in the background once
//! its heartbeats see `home` up.

use nabu_core::id::StripeId;

use super::impl_meta;
use super::shard::ShardInfo;
use crate::error::ProtoError;
use crate::wire::{Reader, Writer};

/// What a hint asks of the node that keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum HintKind {
    /// The node holds this very shard in `home`'s place: copy it to `home`, then drop its own
    /// copy once `home` has acknowledged it durable.
    Handoff = 1,
    /// The shard is missing: rebuild it (from K shards of the stripe, or a whole copy) and put
    /// it on `home`. The node's own shard of the stripe, if any, is kept.
    Repair = 2,
}

/// HINT_PUT request: keep a hint durably (bodiless).
///
/// Layout (61 bytes): `stripe_id [32]`, `home u32` (the node the shard belongs on),
/// `kind u8` (1 handoff, 2 repair), then [`ShardInfo`] (24) of the shard that belongs on
/// `home` (its index, lengths and checksum, so a rebuilt shard can be verified).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HintPut {
    /// The stripe.
    pub stripe_id: StripeId,
    /// The node the shard belongs on.
    pub home: u32,
    /// Move or rebuild.
    pub kind: HintKind,
    /// The shard that belongs on `home`.
    pub shard: ShardInfo,
}

impl HintPut {
    fn encode_fields(&self, writer: &mut Writer<'_>) -> Result<(), ProtoError> {
        writer.array32(self.stripe_id.as_bytes());
        writer.u32(self.home);
        writer.u8(self.kind as u8);
        self.shard.encode(writer)
    }

    fn decode_fields(reader: &mut Reader<'_>) -> Result<Self, ProtoError> {
        let stripe_id = StripeId::from_bytes(reader.array32("stripe_id")?);
        let home = reader.u32("home")?;
        let kind = match reader.u8("kind")? {
            1 => HintKind::Handoff,
            2 => HintKind::Repair,
            _ => {
                return Err(ProtoError::InvalidField {
                    field: "kind",
                    reason: "a hint kind is 1 (handoff) or 2 (repair)",
                });
            }
        };
        Ok(Self {
            stripe_id,
            home,
            kind,
            shard: ShardInfo::decode(reader)?,
        })
    }
}
impl_meta!(HintPut, HintPut, Request);

/// HINT_PUT response, sent once the hint is durable.
///
/// Layout (4 bytes): `hints_pending u32`: hints the node keeps now, this one included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HintPutReply {
    /// Hints the node keeps now (saturating at `u32::MAX`).
    pub hints_pending: u32,
}

impl HintPutReply {
    fn encode_fields(&self, writer: &mut Writer<'_>) -> Result<(), ProtoError> {
        writer.u32(self.hints_pending);
        Ok(())
    }

    fn decode_fields(reader: &mut Reader<'_>) -> Result<Self, ProtoError> {
        Ok(Self {
            hints_pending: reader.u32("hints_pending")?,
        })
    }
}
impl_meta!(HintPutReply, HintPut, Response);
