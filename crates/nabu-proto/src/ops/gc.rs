//! Garbage-collection ops: SHARD_LIST (which stripes a node holds shards of) and GC_SWEEP
//! (drop shards and manifests no key references any more).
//!
//! A collector marks what the cluster's key records reach, lists what each node holds, and
//! asks each node to sweep the difference. The node decides: the first sweep that names an
//! item condemns it, and only a sweep a grace period later drops it, if nothing wrote it
//! within that period either (a read that began before the item lost its last reference can
//! finish; a write in flight is never swept). See `crates/nabu-node/src/gc.rs`.

use nabu_core::id::{BlobId, StripeId};

use super::impl_meta;
use super::metadata::NAMESPACE_BYTES_MAX;
use crate::error::ProtoError;
use crate::wire::{Reader, Writer};

/// The most stripe ids one SHARD_LIST page holds (2 MiB of body).
pub const SHARD_LIST_LIMIT_MAX: u32 = 65_536;
/// The most items one GC_SWEEP request names (shards and manifests together).
pub const SWEEP_ITEMS_MAX: u32 = 65_536;

fn invalid(field: &'static str, reason: &'static str) -> ProtoError {
    ProtoError::InvalidField { field, reason }
}

/// SHARD_LIST request: one page of the stripe ids this node holds a shard of, in ascending
/// byte order, starting after `after`.
///
/// Layout (37 bytes): `has_after u8` (0 or 1), `after [32]` (zeros when `has_after` is 0),
/// `limit u32` (1..=65536).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardList {
    /// The last stripe id of the previous page; `None` for the first page.
    pub after: Option<StripeId>,
    /// The most stripe ids to return.
    pub limit: u32,
}

impl ShardList {
    fn encode_fields(&self, writer: &mut Writer<'_>) -> Result<(), ProtoError> {
        check_list_limit(self.limit)?;
        writer.bool(self.after.is_some());
        writer.array32(&self.after.map(|id| *id.as_bytes()).unwrap_or_default());
        writer.u32(self.limit);
        Ok(())
    }

    fn decode_fields(reader: &mut Reader<'_>) -> Result<Self, ProtoError> {
        let has_after = reader.bool("has_after")?;
        let after = reader.array32("after")?;
        if !has_after && after != [0; 32] {
            return Err(invalid("after", "is all zeros when has_after is 0"));
        }
        let limit = reader.u32("limit")?;
        check_list_limit(limit)?;
        Ok(Self {
            after: has_after.then(|| StripeId::from_bytes(after)),
            limit,
        })
    }
}
impl_meta!(ShardList, ShardList, Request);

fn check_list_limit(limit: u32) -> Result<(), ProtoError> {
    if limit == 0 || limit > SHARD_LIST_LIMIT_MAX {
        return Err(invalid("limit", "a page holds 1..=65536 stripe ids"));
    }
    Ok(())
}

/// SHARD_LIST response: the page's stripe ids are the body, 32 bytes each.
///
/// Layout (5 bytes): `stripes u32` (0..=65536), `more u8` (1: ask again after the last id).
/// The body is `32 × stripes` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardListReply {
    /// How many stripe ids the body holds.
    pub stripes: u32,
    /// Whether more follow the last one.
    pub more: bool,
}

impl ShardListReply {
    fn encode_fields(&self, writer: &mut Writer<'_>) -> Result<(), ProtoError> {
        if self.stripes > SHARD_LIST_LIMIT_MAX {
            return Err(invalid("stripes", "a page holds at most 65536 stripe ids"));
        }
        writer.u32(self.stripes);
        writer.bool(self.more);
        Ok(())
    }

    fn decode_fields(reader: &mut Reader<'_>) -> Result<Self, ProtoError> {
        let stripes = reader.u32("stripes")?;
        if stripes > SHARD_LIST_LIMIT_MAX {
            return Err(invalid("stripes", "a page holds at most 65536 stripe ids"));
        }
        Ok(Self {
            stripes,
            more: reader.bool("more")?,
        })
    }
}
impl_meta!(
    ShardListReply,
    ShardList,
    Response,
    body = |reply| u64::from(reply.stripes) * 32
);

/// Encodes a list of stripe ids as a body (SHARD_LIST replies, the shard part of GC_SWEEP).
pub fn encode_stripe_ids(ids: &[StripeId]) -> Vec<u8> {
    ids.iter().flat_map(|id| *id.as_bytes()).collect()
}

/// Decodes exactly `count` stripe ids from `body`.
pub fn decode_stripe_ids(body: &[u8], count: u32) -> Result<Vec<StripeId>, ProtoError> {
    let mut reader = Reader::new(body);
    let mut ids = Vec::with_capacity((count as usize).min(body.len() / 32));
    for _ in 0..count {
        ids.push(StripeId::from_bytes(reader.array32("stripe_id")?));
    }
    reader.finish()?;
    Ok(ids)
}

/// A manifest a sweep may drop: its namespace and blob id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ManifestRef {
    /// The namespace.
    pub namespace: String,
    /// The blob the manifest describes.
    pub blob_id: BlobId,
}

/// GC_SWEEP request: condemn this node's shards of `shards` and its copies of `manifests`,
/// or drop those condemned at least `grace_ms` ago; never an item written within `grace_ms`.
///
/// Layout (33 bytes): `grace_ms u64`, `run_id u64`, `last u8` (0 or 1), `shards u32`,
/// `manifests u32`, `body_bytes u64`; at most 65536 items in all. The body ([`encode_sweep_body`]): `shards` stripe ids (32 bytes
/// each), then `manifests` entries of `namespace_len u16`, `namespace`, `blob_id [32]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcSweep {
    /// How long an item must have gone unwritten, and stayed condemned, to be dropped.
    pub grace_ms: u64,
    /// The collection this request belongs to (one collection sends one or more requests
    /// to a node, all with its id).
    pub run_id: u64,
    /// The collection's last request to this node: items condemned earlier but not named
    /// in this collection are referenced again and are pardoned.
    pub last: bool,
    /// How many stripe ids the body starts with.
    pub shards: u32,
    /// How many manifest entries follow them.
    pub manifests: u32,
    /// The body's length.
    pub body_bytes: u64,
}

impl GcSweep {
    fn encode_fields(&self, writer: &mut Writer<'_>) -> Result<(), ProtoError> {
        self.check()?;
        writer.u64(self.grace_ms);
        writer.u64(self.run_id);
        writer.bool(self.last);
        writer.u32(self.shards);
        writer.u32(self.manifests);
        writer.u64(self.body_bytes);
        Ok(())
    }

    fn decode_fields(reader: &mut Reader<'_>) -> Result<Self, ProtoError> {
        let sweep = Self {
            grace_ms: reader.u64("grace_ms")?,
            run_id: reader.u64("run_id")?,
            last: reader.bool("last")?,
            shards: reader.u32("shards")?,
            manifests: reader.u32("manifests")?,
            body_bytes: reader.u64("body_bytes")?,
        };
        sweep.check()?;
        Ok(sweep)
    }

    fn check(&self) -> Result<(), ProtoError> {
        if u64::from(self.shards) + u64::from(self.manifests) > u64::from(SWEEP_ITEMS_MAX) {
            return Err(invalid("shards", "a sweep names at most 65536 items"));
        }
        let smallest = u64::from(self.shards) * 32 + u64::from(self.manifests) * (2 + 1 + 32);
        let largest = u64::from(self.shards) * 32
            + u64::from(self.manifests) * (2 + NAMESPACE_BYTES_MAX as u64 + 32);
        if !(smallest..=largest).contains(&self.body_bytes) {
            return Err(invalid(
                "body_bytes",
                "does not fit the declared shard and manifest counts",
            ));
        }
        Ok(())
    }
}
impl_meta!(GcSweep, GcSweep, Request, body = |sweep| sweep.body_bytes);

/// Which collection a GC_SWEEP request belongs to, and its rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepRun {
    /// [`GcSweep::grace_ms`].
    pub grace_ms: u64,
    /// [`GcSweep::run_id`].
    pub run_id: u64,
    /// [`GcSweep::last`].
    pub last: bool,
}

/// Encodes a GC_SWEEP body and returns it with the request metadata.
pub fn encode_sweep_body(
    run: SweepRun,
    shards: &[StripeId],
    manifests: &[ManifestRef],
) -> Result<(GcSweep, Vec<u8>), ProtoError> {
    let mut body = encode_stripe_ids(shards);
    let mut writer = Writer::new(&mut body);
    for manifest in manifests {
        if manifest.namespace.is_empty() {
            return Err(invalid("namespace", "a namespace is 1..=255 bytes"));
        }
        writer.str16("namespace", &manifest.namespace, NAMESPACE_BYTES_MAX)?;
        writer.array32(manifest.blob_id.as_bytes());
    }
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let sweep = GcSweep {
        grace_ms: run.grace_ms,
        run_id: run.run_id,
        last: run.last,
        shards: count(shards.len()),
        manifests: count(manifests.len()),
        body_bytes: body.len() as u64,
    };
    sweep.check()?;
    Ok((sweep, body))
}

/// Decodes a GC_SWEEP body against its request metadata.
pub fn decode_sweep_body(
    sweep: &GcSweep,
    body: &[u8],
) -> Result<(Vec<StripeId>, Vec<ManifestRef>), ProtoError> {
    let shard_bytes = sweep.shards as usize * 32;
    let (shard_part, manifest_part) = body
        .split_at_checked(shard_bytes)
        .ok_or(invalid("body", "shorter than its stripe ids"))?;
    let shards = decode_stripe_ids(shard_part, sweep.shards)?;
    let mut reader = Reader::new(manifest_part);
    let mut manifests = Vec::with_capacity(sweep.manifests as usize);
    for _ in 0..sweep.manifests {
        let namespace = reader.str16("namespace", NAMESPACE_BYTES_MAX)?;
        if namespace.is_empty() {
            return Err(invalid("namespace", "a namespace is 1..=255 bytes"));
        }
        manifests.push(ManifestRef {
            namespace: namespace.to_owned(),
            blob_id: BlobId::from_bytes(reader.array32("blob_id")?),
        });
    }
    reader.finish()?;
    Ok((shards, manifests))
}

/// GC_SWEEP response: what the node dropped, condemned, and kept because it was written
/// lately.
///
/// Layout (24 bytes): `shards_deleted u32`, `manifests_deleted u32`, `condemned u32`,
/// `kept_recent u32`, `bytes_freed u64` (shard and manifest bytes no longer live on this
/// node).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcSweepReply {
    /// Shards dropped.
    pub shards_deleted: u32,
    /// Manifest copies dropped.
    pub manifests_deleted: u32,
    /// Items condemned, now or earlier, that a later collection may drop once a grace period
    /// has passed since they were first condemned.
    pub condemned: u32,
    /// Items kept because they were written within the grace period (or the node cannot yet
    /// tell: it started, or forgot its write times, less than a grace period ago).
    pub kept_recent: u32,
    /// Bytes no longer live.
    pub bytes_freed: u64,
}

impl GcSweepReply {
    fn encode_fields(&self, writer: &mut Writer<'_>) -> Result<(), ProtoError> {
        writer.u32(self.shards_deleted);
        writer.u32(self.manifests_deleted);
        writer.u32(self.condemned);
        writer.u32(self.kept_recent);
        writer.u64(self.bytes_freed);
        Ok(())
    }

    fn decode_fields(reader: &mut Reader<'_>) -> Result<Self, ProtoError> {
        Ok(Self {
            shards_deleted: reader.u32("shards_deleted")?,
            manifests_deleted: reader.u32("manifests_deleted")?,
            condemned: reader.u32("condemned")?,
            kept_recent: reader.u32("kept_recent")?,
            bytes_freed: reader.u64("bytes_freed")?,
        })
    }
}
impl_meta!(GcSweepReply, GcSweep, Response);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::Meta;

    #[test]
    fn shard_list_round_trips_and_refuses_non_canonical_forms() {
        let first = ShardList {
            after: None,
            limit: 10,
        };
        let bytes = first.to_vec().unwrap();
        assert_eq!(bytes.len(), 37);
        assert_eq!(ShardList::decode(&bytes), Ok(first));
        let mut dirty = bytes.clone();
        dirty[5] = 1;
        assert!(ShardList::decode(&dirty).is_err(), "after must be zeros");
        let next = ShardList {
            after: Some(StripeId::from_bytes([7; 32])),
            limit: SHARD_LIST_LIMIT_MAX,
        };
        assert_eq!(ShardList::decode(&next.to_vec().unwrap()), Ok(next));
        let too_many = ShardList {
            after: None,
            limit: SHARD_LIST_LIMIT_MAX + 1,
        };
        assert!(too_many.to_vec().is_err());
        let reply = ShardListReply {
            stripes: 3,
            more: true,
        };
        assert_eq!(reply.body_bytes(), 96);
        assert_eq!(ShardListReply::decode(&reply.to_vec().unwrap()), Ok(reply));
    }

    #[test]
    fn sweep_bodies_round_trip_and_lengths_are_checked() {
        let shards = [StripeId::from_bytes([1; 32]), StripeId::from_bytes([2; 32])];
        let manifests = [ManifestRef {
            namespace: "weights".into(),
            blob_id: BlobId::from_bytes([3; 32]),
        }];
        let run = SweepRun {
            grace_ms: 5_000,
            run_id: 9,
            last: true,
        };
        let (sweep, body) = encode_sweep_body(run, &shards, &manifests).unwrap();
        assert_eq!(sweep.to_vec().unwrap().len(), 33);
        assert_eq!(sweep.body_bytes, 64 + 2 + 7 + 32);
        assert_eq!(GcSweep::decode(&sweep.to_vec().unwrap()), Ok(sweep));
        let (got_shards, got_manifests) = decode_sweep_body(&sweep, &body).unwrap();
        assert_eq!(got_shards, shards);
        assert_eq!(got_manifests, manifests);
        assert!(decode_sweep_body(&sweep, &body[..body.len() - 1]).is_err());
        let lying = GcSweep {
            body_bytes: 1 << 40,
            ..sweep
        };
        assert!(GcSweep::decode(&lying.to_vec().unwrap_or_default()).is_err());
        assert!(lying.to_vec().is_err());
        let reply = GcSweepReply {
            shards_deleted: 2,
            manifests_deleted: 1,
            condemned: 3,
            kept_recent: 4,
            bytes_freed: 9,
        };
        assert_eq!(GcSweepReply::decode(&reply.to_vec().unwrap()), Ok(reply));
    }
}
