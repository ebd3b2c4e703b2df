//! The write path: cut → hash → encode → fan out shards → manifest → key record.
//!
//! A put reads its input one stripe at a time and keeps at most `stripes_inflight_max`
//! stripes in flight (bounded memory whatever the object's size). Each stripe is hashed
//! (its [`StripeId`]), erasure-coded, and its shards sent in parallel to the stripe's
//! placement, shard `i` to the `i`-th node; a shard whose node fails goes to the next node of
//! the ring walk that holds no shard of the stripe (hinted handoff). A stripe is acknowledged
//! at K+1 durable shards (two copies for replicas); fewer fail the put. Shards that found no
//! node are counted in the [`PutReceipt`] and logged.
//!
//! **Hints.** A shard not on its placement node (its *home*) is made someone's job with
//! HINT_PUT: a handed-off shard's holder gets a *handoff* hint (move it home when the home is
//! up); a shard that found no node gets a *repair* hint on [`REPAIR_HINT_COPIES`] nodes that
//! hold other shards of the stripe (rebuild it on the home). The nodes replay hints in the
//! background (`nabu_node`'s hint replay). A hint that cannot be sent is logged; the put still
//! succeeds, its receipt naming the shard.
//!
//! Only when every stripe is durable is the manifest written, and only when the manifest is
//! durable is the key record written: so a reader never sees a key whose bytes are not all
//! there. A failed put leaves unreferenced shards behind (garbage for the collector) and
//! changes nothing visible.

use std::sync::Arc;
use tokio::time::Instant;

use bytes::{Bytes, BytesMut};
use nabu_core::aligned::AlignedBuf;
use nabu_core::ec::{CodecId, ErasureCodec, codec};
use nabu_core::id::{BlobId, StripeId};
use nabu_core::policy::Durability;
use nabu_core::ring::NodeId;
use nabu_core::stripe::split_stripe;
use nabu_proto::ErrorCode;
use nabu_proto::ops::{HintKind, HintPut, MetaTable, Op, ShardInfo, ShardLayout};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::task::JoinSet;

use crate::client::{Client, check_key, check_user_namespace, fan_out};
use crate::error::{ClientError, KeyDisplay, Result};
use crate::format::{
    KeyRecord, Manifest, StripeEntry, UserMetadata, key_record_point, manifest_point, whole_copy_id,
};

/// How many nodes holding shards of a stripe are asked to rebuild a shard that found no node:
/// two, so that the repair survives the loss of one of them (rebuilding is idempotent).
pub const REPAIR_HINT_COPIES: usize = 2;

/// What a put stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutReceipt {
    /// BLAKE3 of the bytes.
    pub blob_id: BlobId,
    /// The object's length.
    pub size: u64,
    /// How its stripes are stored (`replicas:M+1` for a small object in an `ec` namespace).
    pub durability: Durability,
    /// How many stripes.
    pub stripes: u64,
    /// Shards (or whole-stripe copies) acknowledged durable, over all stripes.
    pub shards_written: u64,
    /// Shards that found no node (the put was acknowledged without them).
    pub shards_missing: u64,
    /// Which ones, for repair.
    pub missing: Vec<MissingShard>,
    /// The HLC timestamp of the key record.
    pub hlc_timestamp: u64,
}

/// A shard a put could not place (recorded for repair).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MissingShard {
    /// The stripe's index in the blob.
    pub stripe: u64,
    /// The stripe.
    pub stripe_id: StripeId,
    /// The shard index that is missing (0 for whole-stripe copies).
    pub shard_index: u8,
}

/// Metadata a put learns only from its body: called once the body has been read to its end,
/// before the key record is written.
pub type MetadataAtEnd = Arc<dyn Fn() -> UserMetadata + Send + Sync>;

/// Options of a put.
#[derive(Clone, Default)]
pub struct PutOptions {
    /// User metadata stored with the key (at most 64 entries, 8 KiB).
    pub metadata: UserMetadata,
    /// Store every stripe with the namespace's policy, even when the object is small enough
    /// to be kept as whole copies. Blobs that will be composed into a larger object
    /// ([`Client::put_composed`], S3 multipart parts) need this: a node holds one stripe id in
    /// one layout only, so the small tail of a composed object must already have the layout
    /// of the rest.
    pub keep_policy_layout: bool,
    /// Entries added to `metadata` once the body has been read to its end (the S3 gateway
    /// stores the checksums it verified on the way); the same limits apply to the sum.
    pub metadata_at_end: Option<MetadataAtEnd>,
}

impl std::fmt::Debug for PutOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PutOptions")
            .field("metadata", &self.metadata)
            .field("keep_policy_layout", &self.keep_policy_layout)
            .field("metadata_at_end", &self.metadata_at_end.is_some())
            .finish()
    }
}

/// A stripe once durable.
#[derive(Debug)]
pub(crate) struct StripeWritten {
    pub(crate) index: u64,
    pub(crate) entry: StripeEntry,
    /// The CRC32C of each shard (one for whole-stripe copies), for the manifest.
    pub(crate) shard_crcs: Vec<u32>,
    pub(crate) written: usize,
    pub(crate) missing: Vec<u8>,
}

/// Where a put's bytes come from.
enum Source<R> {
    /// Bytes in memory: stripes are zero-copy slices.
    Bytes { bytes: Bytes, offset: usize },
    /// A stream, read a stripe at a time.
    Reader(R),
}

impl<R: AsyncRead + Unpin> Source<R> {
    /// The next stripe: `stripe_bytes` long, shorter only at the end, empty after it.
    async fn next_stripe(&mut self, stripe_bytes: usize) -> Result<Bytes> {
        match self {
            Source::Bytes { bytes, offset } => {
                let end = (*offset + stripe_bytes).min(bytes.len());
                let stripe = bytes.slice(*offset..end);
                *offset = end;
                Ok(stripe)
            }
            Source::Reader(reader) => {
                let mut stripe = BytesMut::with_capacity(stripe_bytes);
                while stripe.len() < stripe_bytes {
                    let read =
                        reader
                            .read_buf(&mut stripe)
                            .await
                            .map_err(|source| ClientError::Io {
                                context: "read the object to put".into(),
                                source,
                            })?;
                    if read == 0 {
                        break;
                    }
                }
                Ok(stripe.freeze())
            }
        }
    }
}

/// An [`AlignedBuf`] as the owner of a [`Bytes`] (shards go to the socket without a copy).
struct ShardBuf(AlignedBuf);

impl AsRef<[u8]> for ShardBuf {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Client {
    /// Stores `bytes` under `key` (overwriting: last writer wins).
    pub async fn put(
        &self,
        namespace: &str,
        key: &[u8],
        bytes: impl Into<Bytes>,
    ) -> Result<PutReceipt> {
        let source: Source<tokio::io::Empty> = Source::Bytes {
            bytes: bytes.into(),
            offset: 0,
        };
        self.put_source(namespace, key, source, PutOptions::default())
            .await
    }

    /// [`Client::put`] with options (user metadata).
    pub async fn put_with(
        &self,
        namespace: &str,
        key: &[u8],
        bytes: impl Into<Bytes>,
        options: PutOptions,
    ) -> Result<PutReceipt> {
        let source: Source<tokio::io::Empty> = Source::Bytes {
            bytes: bytes.into(),
            offset: 0,
        };
        self.put_source(namespace, key, source, options).await
    }

    /// Stores what `reader` yields until its end, a stripe at a time (memory stays bounded
    /// by `stripes_inflight_max` stripes, whatever the length).
    pub async fn put_stream<R: AsyncRead + Unpin + Send>(
        &self,
        namespace: &str,
        key: &[u8],
        reader: R,
        options: PutOptions,
    ) -> Result<PutReceipt> {
        self.put_source(namespace, key, Source::Reader(reader), options)
            .await
    }

    async fn put_source<R: AsyncRead + Unpin>(
        &self,
        namespace: &str,
        key: &[u8],
        mut source: Source<R>,
        options: PutOptions,
    ) -> Result<PutReceipt> {
        check_user_namespace(namespace)?;
        check_key(key)?;
        let what = format!("{namespace}/{}", KeyDisplay(key));
        // Refuse bad metadata before any byte is sent.
        let probe = KeyRecord {
            blob_id: BlobId::of(b""),
            blob_bytes: 0,
            hlc_timestamp: 0,
            metadata: options.metadata.clone(),
        };
        probe.encode().map_err(|error| {
            ClientError::InvalidArgument(format!("metadata of {what}: {error}"))
        })?;
        let policy = self.namespace_policy(namespace).await?;
        self.check_durability(policy)?;
        let started = Instant::now();
        let stripe_bytes = self.inner.config.stripe_bytes;
        let first = source.next_stripe(stripe_bytes).await?;
        let layout = if options.keep_policy_layout {
            policy
        } else {
            self.stripe_durability(policy, first.len() as u64, stripe_bytes)
        };
        let codec = match layout {
            Durability::ErasureCoded { data, parity } => Some(
                codec(usize::from(data), usize::from(parity))
                    .map_err(|error| codec_error(&error))?,
            ),
            _ => None,
        };

        let mut hasher = blake3::Hasher::new();
        let mut tasks: JoinSet<Result<StripeWritten>> = JoinSet::new();
        let mut written = Vec::new();
        let mut stripe = first;
        let mut index = 0u64;
        while !stripe.is_empty() {
            hasher.update(&stripe);
            while tasks.len() >= self.inner.config.stripes_inflight_max {
                written.push(join_stripe_task(&mut tasks).await?);
            }
            let at_end = stripe.len() < stripe_bytes;
            let (client, codec) = (self.clone(), codec.clone());
            tasks.spawn(async move { client.write_stripe(index, stripe, layout, codec).await });
            index += 1;
            if at_end {
                break;
            }
            stripe = source.next_stripe(stripe_bytes).await?;
        }
        while !tasks.is_empty() {
            written.push(join_stripe_task(&mut tasks).await?);
        }
        written.sort_by_key(|stripe| stripe.index);
        let blob_id = BlobId::from_bytes(*hasher.finalize().as_bytes());
        let mut metadata = options.metadata;
        if let Some(at_end) = &options.metadata_at_end {
            metadata.extend(at_end());
            let probe = KeyRecord {
                blob_id,
                blob_bytes: 0,
                hlc_timestamp: 0,
                metadata: metadata.clone(),
            };
            probe.encode().map_err(|error| {
                ClientError::InvalidArgument(format!("metadata of {what}: {error}"))
            })?;
        }
        // Garbage collection spares stripes written within its grace period, which is at
        // least twice this: a PUT slower than it must not make its stripes reachable.
        let deadline = self.inner.config.put_deadline;
        if started.elapsed() > deadline {
            return Err(ClientError::InvalidArgument(format!(
                "put of {what} took {:?}, longer than put_deadline ({deadline:?}); nothing \
                 became visible: retry it, or raise put_deadline (and the collector's grace)",
                started.elapsed()
            )));
        }
        self.commit(
            namespace,
            key,
            blob_id,
            layout,
            codec.as_deref(),
            written,
            metadata,
        )
        .await
    }

    /// How a blob whose first stripe is `first_bytes` long is stored under `policy`: an
    /// object that ended below `small_object_bytes` in an `ec:K+M` namespace becomes
    /// `replicas:M+1`.
    pub(crate) fn stripe_durability(
        &self,
        policy: Durability,
        first_bytes: u64,
        stripe_bytes: usize,
    ) -> Durability {
        let small =
            first_bytes < self.inner.config.small_object_bytes && first_bytes < stripe_bytes as u64;
        match policy {
            Durability::ErasureCoded { parity, .. } if small => {
                let nodes = self.ring().members().len();
                let copies = (usize::from(parity) + 1).min(nodes).max(1);
                Durability::Replicas {
                    copies: copies as u8,
                }
            }
            other => other,
        }
    }

    /// Writes the manifest, then the key record, once every stripe is durable.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn commit(
        &self,
        namespace: &str,
        key: &[u8],
        blob_id: BlobId,
        layout: Durability,
        codec: Option<&dyn ErasureCodec>,
        written: Vec<StripeWritten>,
        metadata: UserMetadata,
    ) -> Result<PutReceipt> {
        let policy = self.namespace_policy(namespace).await?;
        let copies = self.metadata_copies(policy);
        let size = written.iter().map(|stripe| stripe.entry.stripe_bytes).sum();
        let mut missing = Vec::new();
        for stripe in &written {
            missing.extend(stripe.missing.iter().map(|&shard_index| MissingShard {
                stripe: stripe.index,
                stripe_id: stripe.entry.stripe_id,
                shard_index,
            }));
        }
        let manifest = Manifest {
            blob_id,
            blob_bytes: size,
            durability: layout,
            codec: codec.map_or(CodecId(0), |codec| codec.id()),
            stripe_bytes: self.inner.config.stripe_bytes as u64,
            created_hlc: self.inner.hlc.now(),
            stripes: written.iter().map(|stripe| stripe.entry).collect(),
            // All stripes' checksums, or none (a composed blob with a version-1 part).
            shard_crcs: if written.iter().all(|stripe| !stripe.shard_crcs.is_empty()) {
                written
                    .iter()
                    .flat_map(|stripe| stripe.shard_crcs.iter().copied())
                    .collect()
            } else {
                Vec::new()
            },
            metadata: metadata.clone(),
        };
        let value = manifest.encode().map_err(|source| ClientError::Format {
            what: format!("manifest of {blob_id}"),
            source,
        })?;
        let what = format!("manifest of {blob_id}");
        self.meta_write(
            MetaTable::Manifests,
            namespace,
            blob_id.as_bytes(),
            manifest_point(&blob_id),
            copies,
            manifest.created_hlc,
            Some(Bytes::from(value)),
            &what,
        )
        .await?;

        let hlc_timestamp = self.inner.hlc.now();
        let record = KeyRecord {
            blob_id,
            blob_bytes: size,
            hlc_timestamp,
            metadata,
        };
        let value = record.encode().map_err(|source| ClientError::Format {
            what: "key record".into(),
            source,
        })?;
        let what = format!("key record {namespace}/{}", KeyDisplay(key));
        self.meta_write(
            MetaTable::KeyRecords,
            namespace,
            key,
            key_record_point(namespace, key),
            copies,
            hlc_timestamp,
            Some(Bytes::from(value)),
            &what,
        )
        .await?;
        Ok(PutReceipt {
            blob_id,
            size,
            durability: layout,
            stripes: written.len() as u64,
            shards_written: written.iter().map(|stripe| stripe.written as u64).sum(),
            shards_missing: missing.len() as u64,
            missing,
            hlc_timestamp,
        })
    }

    /// Hashes, encodes and fans out one stripe; fails if fewer than K+1 shards (two copies)
    /// became durable.
    pub(crate) async fn write_stripe(
        &self,
        index: u64,
        stripe: Bytes,
        layout: Durability,
        codec: Option<Arc<dyn ErasureCodec>>,
    ) -> Result<StripeWritten> {
        let content_id = StripeId::of(&stripe);
        // Where the nodes keep it: whole copies under a derived id (see
        // `Manifest::node_stripe_id`), so one stripe may be stored in both layouts.
        let stripe_id = match layout {
            Durability::ErasureCoded { .. } => content_id,
            _ => whole_copy_id(&content_id),
        };
        let (infos, bodies) = encode_shards(&stripe, layout, codec.as_deref())?;
        let width = layout.width();
        let walk = self.walk(stripe_id.ring_point(), width);
        let send = |slot: usize, node| {
            let (client, info, body) = (self.clone(), infos[slot], bodies[slot].clone());
            async move {
                let pool = &client.inner.pool;
                pool.shard_put(node, stripe_id, info, body).await.map(drop)
            }
        };
        let required = (layout.shards_needed() + 1).min(width);
        let mut fan = fan_out(&walk, width, &send).await;
        // A node holding another shard of this very stripe: the cluster stores these bytes
        // already (stripe ids are content ids), and rebalancing has moved its shards since,
        // so they no longer sit at the slots this walk gives them. Complete that stripe
        // where it is instead.
        let stored =
            fan.durable() < width && fan.failures.iter().any(|(_, e)| holds_other_shard(e));
        if stored {
            fan = self
                .complete_stored_stripe(stripe_id, layout, &infos, &bodies)
                .await;
        }
        if fan.durable() < required {
            // Short of its quorum, most often because nodes were slow to accept a connection
            // on a busy host (a failed connect is not retried for `node_down_retry_after`):
            // one more round after that. Shard puts are idempotent (held shards answer
            // "already held").
            tracing::info!(stripe = index, %stripe_id, durable = fan.durable(), required, "stripe short of its quorum; trying once more");
            tokio::time::sleep(self.inner.config.node_down_retry_after).await;
            fan = fan_out(&walk, width, &send).await;
        }
        let durable = fan.durable();
        if durable < required {
            for (node, error) in &fan.failures {
                tracing::warn!(%node, %error, stripe = index, %stripe_id, "shard write failed");
            }
            return Err(ClientError::NotDurable {
                what: format!("stripe {index} ({stripe_id})"),
                durable,
                wanted: width,
                required,
                why: fan.why(),
            });
        }
        if !stored {
            self.send_hints(index, stripe_id, &walk, &infos, &fan.placed)
                .await;
        }
        let missing: Vec<u8> = (0..width)
            .filter(|&slot| fan.placed[slot].is_none())
            .map(|slot| slot as u8)
            .collect();
        if !missing.is_empty() {
            tracing::warn!(
                stripe = index,
                %stripe_id,
                ?missing,
                durable,
                width,
                "stripe written without some shards; they are recorded for repair"
            );
        }
        let crc_width = match layout {
            Durability::ErasureCoded { .. } => width,
            _ => 1, // copies are identical
        };
        Ok(StripeWritten {
            index,
            entry: StripeEntry {
                stripe_id: content_id,
                stripe_bytes: stripe.len() as u64,
            },
            shard_crcs: infos[..crc_width]
                .iter()
                .map(|info| info.shard_crc)
                .collect(),
            written: durable,
            missing,
        })
    }
}

/// Whether `error` is a node's answer that it holds another shard of the stripe.
fn holds_other_shard(error: &ClientError) -> bool {
    matches!(
        error,
        ClientError::Remote {
            op: Op::ShardPut,
            code: ErrorCode::CONFLICT,
            ..
        }
    )
}

impl Client {
    /// Completes a stripe some nodes hold already: every node of its walk is asked which
    /// shard it holds ([`Client::stripe_state`]), and each shard no node holds goes to a node
    /// of the walk that holds none of the stripe (in walk order). Where each shard is now is
    /// the result.
    async fn complete_stored_stripe(
        &self,
        stripe_id: StripeId,
        layout: Durability,
        infos: &[ShardInfo],
        bodies: &[Bytes],
    ) -> crate::client::FanOut {
        let width = infos.len();
        let (_, answers) = self.stripe_state(stripe_id, layout).await;
        let mut placed = vec![None; width];
        let mut failures = Vec::new();
        let mut free = Vec::new();
        for (node, held) in answers {
            match held {
                Some(info) => {
                    if let ShardLayout::Erasure { index, .. } = info.layout
                        && let Some(slot) = placed.get_mut(usize::from(index))
                        && slot.is_none()
                        && info == infos[usize::from(index)]
                    {
                        *slot = Some(node);
                    }
                }
                None => free.push(node),
            }
        }
        let mut puts = JoinSet::new();
        let mut free = free.into_iter();
        for slot in (0..width).filter(|&slot| placed[slot].is_none()) {
            let Some(node) = free.next() else { break };
            let (client, info, body) = (self.clone(), infos[slot], bodies[slot].clone());
            puts.spawn(async move {
                let put = client
                    .inner
                    .pool
                    .shard_put(node, stripe_id, info, body)
                    .await;
                (slot, node, put)
            });
        }
        for (slot, node, put) in puts.join_all().await {
            match put {
                Ok(_) => placed[slot] = Some(node),
                Err(error) => failures.push((node, error)),
            }
        }
        tracing::debug!(%stripe_id, held = placed.iter().flatten().count(), width, "completed a stripe the cluster already stored");
        crate::client::FanOut { placed, failures }
    }

    /// Sends the hints of one written stripe (see the module docs): `placed[slot]` is where
    /// shard `slot` went, `walk[slot]` its home.
    async fn send_hints(
        &self,
        index: u64,
        stripe_id: StripeId,
        walk: &[NodeId],
        infos: &[ShardInfo],
        placed: &[Option<NodeId>],
    ) {
        let holders: Vec<NodeId> = placed.iter().flatten().copied().collect();
        let mut tasks = JoinSet::new();
        for (slot, (&home, &shard)) in walk.iter().zip(infos).enumerate() {
            let hint = |kind| HintPut {
                stripe_id,
                home: home.0,
                kind,
                shard,
            };
            let targets: Vec<(NodeId, HintPut)> = match placed[slot] {
                Some(node) if node == home => continue,
                Some(node) => vec![(node, hint(HintKind::Handoff))],
                None => holders
                    .iter()
                    .take(REPAIR_HINT_COPIES)
                    .map(|&holder| (holder, hint(HintKind::Repair)))
                    .collect(),
            };
            for (node, request) in targets {
                let client = self.clone();
                tasks.spawn(async move {
                    let result = client.inner.pool.hint_put(node, &request).await;
                    (node, request, result)
                });
            }
        }
        while let Some(joined) = tasks.join_next().await {
            let (node, request, result) = joined.expect("hint task panicked");
            if let Err(error) = result {
                tracing::warn!(%node, %error, stripe = index, %stripe_id, home = request.home, kind = ?request.kind, "could not leave a hint; the shard stays off its home node");
            }
        }
    }
}

async fn join_stripe_task(tasks: &mut JoinSet<Result<StripeWritten>>) -> Result<StripeWritten> {
    tasks
        .join_next()
        .await
        .expect("a task is in flight")
        .expect("stripe write task panicked")
}

/// The shards of one stripe and their infos: K data + M parity shards (aligned, padded), or
/// `width` references to the whole stripe.
fn encode_shards(
    stripe: &Bytes,
    layout: Durability,
    codec: Option<&dyn ErasureCodec>,
) -> Result<(Vec<ShardInfo>, Vec<Bytes>)> {
    let stripe_bytes = stripe.len() as u64;
    let Durability::ErasureCoded { data, parity } = layout else {
        let info = ShardInfo {
            layout: ShardLayout::Whole,
            stripe_bytes,
            shard_bytes: stripe_bytes,
            shard_crc: nabu_core::checksum::crc32c(stripe),
        };
        let width = layout.width();
        return Ok((vec![info; width], vec![stripe.clone(); width]));
    };
    let codec = codec.expect("an erasure layout has a codec");
    let mut shards = split_stripe(stripe, usize::from(data));
    let shard_len = shards[0].len();
    let mut parity_shards: Vec<AlignedBuf> =
        (0..parity).map(|_| AlignedBuf::zeroed(shard_len)).collect();
    {
        let data_refs: Vec<&[u8]> = shards.iter().map(|shard| &shard[..]).collect();
        let mut parity_refs: Vec<&mut [u8]> = parity_shards
            .iter_mut()
            .map(|shard| &mut shard[..])
            .collect();
        codec
            .encode(&data_refs, &mut parity_refs)
            .map_err(|error| codec_error(&error))?;
    }
    shards.extend(parity_shards);
    let mut infos = Vec::with_capacity(shards.len());
    let mut bodies = Vec::with_capacity(shards.len());
    for (index, shard) in shards.into_iter().enumerate() {
        infos.push(ShardInfo {
            layout: ShardLayout::Erasure {
                codec: codec.id(),
                data_shards: data,
                parity_shards: parity,
                index: index as u8,
            },
            stripe_bytes,
            shard_bytes: shard_len as u64,
            shard_crc: nabu_core::checksum::crc32c(&shard),
        });
        bodies.push(Bytes::from_owner(ShardBuf(shard)));
    }
    Ok((infos, bodies))
}

pub(crate) fn codec_error(error: &nabu_core::ec::EcError) -> ClientError {
    ClientError::InvalidArgument(format!("erasure codec: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_carry_their_index_length_and_checksum() {
        let stripe = Bytes::from((0..100_000u32).map(|i| i as u8).collect::<Vec<u8>>());
        let codec = codec(4, 2).unwrap();
        let (infos, bodies) =
            encode_shards(&stripe, Durability::EC_4_2, Some(codec.as_ref())).unwrap();
        assert_eq!(infos.len(), 6);
        for (index, (info, body)) in infos.iter().zip(&bodies).enumerate() {
            assert_eq!(info.shard_bytes, body.len() as u64);
            assert_eq!(info.shard_bytes % 4096, 0);
            assert_eq!(info.stripe_bytes, 100_000);
            assert_eq!(info.shard_crc, nabu_core::checksum::crc32c(body));
            assert!(
                matches!(info.layout, ShardLayout::Erasure { index: i, .. } if usize::from(i) == index)
            );
        }
        assert_eq!(&bodies[0][..10], &stripe[..10]);
        let (infos, bodies) =
            encode_shards(&stripe, Durability::Replicas { copies: 3 }, None).unwrap();
        assert_eq!((infos.len(), bodies.len()), (3, 3));
        assert!(bodies.iter().all(|body| body == &stripe));
        assert_eq!(infos[0].layout, ShardLayout::Whole);
    }
}
