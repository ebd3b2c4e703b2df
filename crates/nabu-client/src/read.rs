//! The read path: key record → manifest → stripes, each shard verified against its writer's
//! checksum.
//!
//! For each stripe the client asks the nodes of its placement for *their* shard of it (a
//! node's reply names the shard index it holds, so handed-off shards are found too): first
//! the K nodes expected to hold data shards. A failed, missing, corrupt or mismatched reply
//! makes it ask the next node of the ring walk (parity holders, then handoff nodes); so does
//! a slow one once `hedge_after` passes (hedged read). With all K data shards the stripe is
//! joined; with any K shards it is decoded. Every shard must match the CRC32C its writer
//! recorded in the manifest (a node's own checksum only proves the node returned what it
//! stored); a stripe rebuilt from parity, or read under a version-1 manifest without shard
//! checksums, must also match its BLAKE3 [`StripeId`] before a byte is returned. A stripe with fewer than K obtainable shards makes
//! the read fail with [`ClientError::Unavailable`], naming every such stripe.
//!
//! At most `stripes_inflight_max` stripes are fetched at once per call.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;
use tokio::time::Instant;

use bytes::{Bytes, BytesMut};
use nabu_core::aligned::AlignedBuf;
use nabu_core::ec::{ErasureCodec, ShardSlot, codec_for_id};
use nabu_core::id::{BlobId, StripeId};
use nabu_core::policy::Durability;
use nabu_core::ring::NodeId;
use nabu_core::stripe::shard_bytes;
use nabu_proto::ErrorCode;
use nabu_proto::ops::{MetaTable, ShardInfo, ShardLayout};
use tokio::task::{JoinHandle, JoinSet};

use crate::client::Client;
use crate::error::{ClientError, Result};
use crate::format::{Manifest, StripeEntry, manifest_point};
use crate::pool::shard_index;
use crate::write::codec_error;

/// A shard read's answer: who, when it was asked, and what it said.
type ShardReply = (NodeId, Instant, Result<(ShardInfo, Bytes)>);

/// A stripe's bytes as the shards brought them: its data shards in order, each trimmed to
/// the stripe's length (no copy joins them; a reader copies once, into its own buffer, or
/// hands the pieces on).
#[derive(Debug, Clone, Default)]
struct Pieces(Vec<Bytes>);

impl Pieces {
    /// The pieces of bytes `from..to` of the stripe.
    fn slice(&self, from: usize, to: usize) -> Vec<Bytes> {
        let mut out = Vec::new();
        let mut start = 0;
        for piece in &self.0 {
            let end = start + piece.len();
            let (lo, hi) = (from.max(start), to.min(end));
            if lo < hi {
                out.push(piece.slice(lo - start..hi - start));
            }
            start = end;
        }
        out
    }

    fn len(&self) -> usize {
        self.0.iter().map(Bytes::len).sum()
    }
}

/// Lets [`Bytes`] own a rebuilt shard without copying it.
struct OwnedShard(AlignedBuf);

impl AsRef<[u8]> for OwnedShard {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Why one stripe could not be read.
#[derive(Debug)]
enum StripeFailure {
    /// Fewer than K shards could be obtained.
    Unavailable,
    /// The shards decoded to bytes that do not match the stripe id.
    Corrupt(String),
}

/// What reading a blob's stripes needs, shared by its stripe tasks.
#[derive(Debug)]
pub(crate) struct BlobPlan {
    manifest: Manifest,
    codec: Option<Arc<dyn ErasureCodec>>,
}

impl BlobPlan {
    pub(crate) fn new(manifest: Manifest) -> Result<Arc<Self>> {
        let codec = match manifest.durability {
            Durability::ErasureCoded { data, parity } => Some(
                codec_for_id(manifest.codec, usize::from(data), usize::from(parity))
                    .map_err(|error| codec_error(&error))?,
            ),
            _ => None,
        };
        Ok(Arc::new(Self { manifest, codec }))
    }

    /// The manifest the plan reads.
    pub(crate) fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The stripes' codec (`None` for whole copies).
    pub(crate) fn codec(&self) -> Option<Arc<dyn ErasureCodec>> {
        self.codec.clone()
    }

    /// The stripes holding `range` (clamped to the blob).
    fn stripes_covering(&self, range: &Range<u64>) -> Range<u64> {
        let start = range.start / self.manifest.stripe_bytes;
        let end = range
            .end
            .min(self.manifest.blob_bytes)
            .div_ceil(self.manifest.stripe_bytes);
        if range.start >= range.end.min(self.manifest.blob_bytes) {
            return 0..0;
        }
        start..end
    }

    /// Where stripe `index` starts in the blob.
    fn stripe_start(&self, index: u64) -> u64 {
        index * self.manifest.stripe_bytes
    }
}

/// An object opened with [`Client::open`]: one version of it, whatever later puts do.
#[derive(Debug, Clone)]
pub struct OpenObject {
    client: Client,
    /// What the key record says.
    pub info: crate::ObjectInfo,
    plan: Arc<BlobPlan>,
}

impl OpenObject {
    /// Streams bytes `range` (the end clamped to the object's size) of this version,
    /// reading only the stripes that hold them.
    pub fn reader(&self, range: Range<u64>) -> Result<BlobReader> {
        let range = clamp_range(range, self.plan.manifest.blob_bytes)?;
        Ok(BlobReader::new(
            self.client.clone(),
            self.plan.clone(),
            range,
        ))
    }

    /// Reads bytes `offset..offset + buffer.len()` of this version (the end clamped to the
    /// object's size) straight into `buffer`, stripes in parallel (`stripes_inflight_max`):
    /// each stripe's bytes are copied once, from the shards as they arrive into their place
    /// in `buffer`, with no intermediate buffer for the whole range. Returns the bytes
    /// written; bytes of `buffer` past them are left as they were.
    pub async fn read_into(&self, offset: u64, buffer: &mut [u8]) -> Result<usize> {
        let end = offset.saturating_add(buffer.len() as u64);
        let range = clamp_range(offset..end, self.plan.manifest.blob_bytes)?;
        let written = (range.end - range.start) as usize;
        self.client
            .fetch_range_into(&self.plan, range, &mut buffer[..written])
            .await?;
        Ok(written)
    }
}

/// A blob being streamed in order, a stripe at a time, with the next few prefetched.
#[derive(Debug)]
pub struct BlobReader {
    client: Client,
    plan: Arc<BlobPlan>,
    range: Range<u64>,
    next_stripe: u64,
    end_stripe: u64,
    window: VecDeque<(u64, JoinHandle<Result<Pieces, StripeFailure>>)>,
    /// What is left of the stripe being handed out.
    current: VecDeque<Bytes>,
}

impl Drop for BlobReader {
    fn drop(&mut self) {
        for (_, task) in &self.window {
            task.abort();
        }
    }
}

impl BlobReader {
    /// A reader of `range` (already clamped to the blob) of `plan`'s blob.
    fn new(client: Client, plan: Arc<BlobPlan>, range: Range<u64>) -> Self {
        let stripes = plan.stripes_covering(&range);
        Self {
            client,
            plan,
            range,
            next_stripe: stripes.start,
            end_stripe: stripes.end,
            window: VecDeque::new(),
            current: VecDeque::new(),
        }
    }

    /// The blob's id.
    pub fn blob_id(&self) -> BlobId {
        self.plan.manifest.blob_id
    }

    /// The blob's manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.plan.manifest
    }

    /// The bytes this reader yields in all.
    pub fn len(&self) -> u64 {
        self.range.end - self.range.start
    }

    /// Whether it yields nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next piece of the blob (at most a shard's worth of a stripe), `None` at the end.
    pub async fn next_chunk(&mut self) -> Option<Result<Bytes>> {
        loop {
            if let Some(piece) = self.current.pop_front() {
                return Some(Ok(piece));
            }
            while self.window.len() < self.client.inner.config.stripes_inflight_max
                && self.next_stripe < self.end_stripe
            {
                let index = self.next_stripe;
                let (client, plan) = (self.client.clone(), self.plan.clone());
                let task = tokio::spawn(async move { client.fetch_stripe(&plan, index).await });
                self.window.push_back((index, task));
                self.next_stripe += 1;
            }
            let (index, task) = self.window.pop_front()?;
            let stripe = match task.await.expect("stripe task panicked") {
                Ok(stripe) => stripe,
                Err(failure) => {
                    let failures = vec![(index, failure)];
                    return Some(Err(self.client.stripes_error(&self.plan, failures)));
                }
            };
            let start = self.plan.stripe_start(index);
            let from = self.range.start.saturating_sub(start) as usize;
            let to = (self.range.end - start).min(stripe.len() as u64) as usize;
            self.current = stripe.slice(from, to).into();
        }
    }

    /// Writes everything left to `writer`; returns the bytes written.
    pub async fn write_to<W: tokio::io::AsyncWrite + Unpin>(
        &mut self,
        writer: &mut W,
    ) -> Result<u64> {
        use tokio::io::AsyncWriteExt;
        let mut written = 0;
        while let Some(chunk) = self.next_chunk().await {
            let chunk = chunk?;
            writer
                .write_all(&chunk)
                .await
                .map_err(|source| ClientError::Io {
                    context: "write the object being read".into(),
                    source,
                })?;
            written += chunk.len() as u64;
        }
        Ok(written)
    }
}

impl Client {
    /// The object under `key`, whole.
    pub async fn get(&self, namespace: &str, key: &[u8]) -> Result<Bytes> {
        let plan = self.plan_for_key(namespace, key).await?;
        let size = plan.manifest.blob_bytes;
        self.fetch_range(&plan, 0..size).await
    }

    /// Reads bytes `offset..offset + buffer.len()` of the object under `key` straight into
    /// `buffer` (see [`OpenObject::read_into`]); returns the bytes written (fewer than
    /// `buffer.len()` only when the object ends first).
    pub async fn get_range_into(
        &self,
        namespace: &str,
        key: &[u8],
        offset: u64,
        buffer: &mut [u8],
    ) -> Result<usize> {
        self.open(namespace, key)
            .await?
            .read_into(offset, buffer)
            .await
    }

    /// Bytes `range` of the object under `key` (the end is clamped to the object's size);
    /// only the stripes holding them are read.
    pub async fn get_range(&self, namespace: &str, key: &[u8], range: Range<u64>) -> Result<Bytes> {
        let plan = self.plan_for_key(namespace, key).await?;
        let range = clamp_range(range, plan.manifest.blob_bytes)?;
        self.fetch_range(&plan, range).await
    }

    /// A blob by its id alone (content addressing), in `namespace` (manifests are kept per
    /// namespace, since the namespace's policy decides how the stripes are stored).
    pub async fn get_blob(&self, namespace: &str, blob_id: BlobId) -> Result<Bytes> {
        let manifest = self.read_manifest(namespace, blob_id).await?;
        let plan = BlobPlan::new(manifest)?;
        let size = plan.manifest.blob_bytes;
        self.fetch_range(&plan, 0..size).await
    }

    /// A blob by its id alone, as a stream of pieces in order (see [`Client::get_blob`]).
    pub async fn get_blob_stream(&self, namespace: &str, blob_id: BlobId) -> Result<BlobReader> {
        let manifest = self.read_manifest(namespace, blob_id).await?;
        let plan = BlobPlan::new(manifest)?;
        let range = 0..plan.manifest.blob_bytes;
        Ok(BlobReader::new(self.clone(), plan, range))
    }

    /// The object under `key` as a stream of pieces in order (memory stays bounded by
    /// `stripes_inflight_max` stripes).
    pub async fn get_stream(&self, namespace: &str, key: &[u8]) -> Result<BlobReader> {
        self.get_range_stream(namespace, key, 0..u64::MAX).await
    }

    /// [`Client::get_stream`] of bytes `range`.
    pub async fn get_range_stream(
        &self,
        namespace: &str,
        key: &[u8],
        range: Range<u64>,
    ) -> Result<BlobReader> {
        let plan = self.plan_for_key(namespace, key).await?;
        let range = clamp_range(range, plan.manifest.blob_bytes)?;
        Ok(BlobReader::new(self.clone(), plan, range))
    }

    /// Opens the object under `key` for reading: its key record and manifest are read once,
    /// and [`OpenObject::reader`] then streams any range of it (what a gateway needs to
    /// answer a GET with headers and a body of one version).
    pub async fn open(&self, namespace: &str, key: &[u8]) -> Result<OpenObject> {
        let (record, plan) = self.record_and_plan(namespace, key).await?;
        Ok(OpenObject {
            client: self.clone(),
            info: crate::ObjectInfo {
                blob_id: record.blob_id,
                size: record.blob_bytes,
                hlc_timestamp: record.hlc_timestamp,
                metadata: record.metadata,
            },
            plan,
        })
    }

    /// The manifest of `blob_id` in `namespace`.
    pub async fn read_manifest(&self, namespace: &str, blob_id: BlobId) -> Result<Manifest> {
        let policy = self.namespace_policy(namespace).await?;
        let copies = self.metadata_copies(policy);
        let what = format!("manifest of {blob_id}");
        let stored = self
            .meta_read(
                MetaTable::Manifests,
                namespace,
                blob_id.as_bytes(),
                manifest_point(&blob_id),
                copies,
                &what,
            )
            .await?;
        let value = crate::client::live(stored, || what.clone())?;
        decode_manifest(&value.value, blob_id, what)
    }

    async fn plan_for_key(&self, namespace: &str, key: &[u8]) -> Result<Arc<BlobPlan>> {
        Ok(self.record_and_plan(namespace, key).await?.1)
    }

    async fn record_and_plan(
        &self,
        namespace: &str,
        key: &[u8],
    ) -> Result<(crate::KeyRecord, Arc<BlobPlan>)> {
        let record = self.read_key_record(namespace, key).await?;
        let manifest = self.read_manifest(namespace, record.blob_id).await?;
        if manifest.blob_bytes != record.blob_bytes {
            return Err(ClientError::Corrupt {
                what: format!("manifest of {}", record.blob_id),
                detail: format!(
                    "{} bytes, the key record says {}",
                    manifest.blob_bytes, record.blob_bytes
                ),
            });
        }
        Ok((record, BlobPlan::new(manifest)?))
    }

    /// Reads the stripes holding `range`, at most `stripes_inflight_max` at once, into one
    /// buffer; every unreadable stripe is named in the error.
    async fn fetch_range(&self, plan: &Arc<BlobPlan>, range: Range<u64>) -> Result<Bytes> {
        let mut out = BytesMut::zeroed((range.end - range.start) as usize);
        self.fetch_range_into(plan, range, &mut out).await?;
        Ok(out.freeze())
    }

    /// Reads the stripes holding `range` (within the blob), at most `stripes_inflight_max` at
    /// once, into `out` (exactly as long as the range); every unreadable stripe is named in
    /// the error.
    async fn fetch_range_into(
        &self,
        plan: &Arc<BlobPlan>,
        range: Range<u64>,
        out: &mut [u8],
    ) -> Result<()> {
        assert_eq!(
            out.len() as u64,
            range.end - range.start,
            "buffer fits the range"
        );
        let stripes = plan.stripes_covering(&range);
        let mut failures = Vec::new();
        let mut tasks = JoinSet::new();
        let mut next = stripes.start;
        loop {
            while tasks.len() < self.inner.config.stripes_inflight_max && next < stripes.end {
                let (client, plan, index) = (self.clone(), plan.clone(), next);
                tasks.spawn(async move { (index, client.fetch_stripe(&plan, index).await) });
                next += 1;
            }
            let Some(joined) = tasks.join_next().await else {
                break;
            };
            match joined.expect("stripe task panicked") {
                (index, Ok(stripe)) => {
                    let start = plan.stripe_start(index);
                    let from = range.start.max(start);
                    let to = range.end.min(start + stripe.len() as u64);
                    let mut at = (from - range.start) as usize;
                    for piece in stripe.slice((from - start) as usize, (to - start) as usize) {
                        out[at..at + piece.len()].copy_from_slice(&piece);
                        at += piece.len();
                    }
                }
                (index, Err(failure)) => failures.push((index, failure)),
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(self.stripes_error(plan, failures))
        }
    }

    /// Stripe `index` of `plan` in one buffer (what repair writes again).
    pub(crate) async fn read_stripe(&self, plan: &BlobPlan, index: u64) -> Result<Bytes> {
        match self.fetch_stripe(plan, index).await {
            Ok(Pieces(pieces)) if pieces.len() == 1 => {
                Ok(pieces.into_iter().next().unwrap_or_default())
            }
            Ok(Pieces(pieces)) => Ok(pieces.concat().into()),
            Err(failure) => Err(self.stripes_error(plan, vec![(index, failure)])),
        }
    }

    /// The error for a read whose `failures` (stripe index, why) could not be read.
    fn stripes_error(
        &self,
        plan: &BlobPlan,
        mut failures: Vec<(u64, StripeFailure)>,
    ) -> ClientError {
        failures.sort_by_key(|(index, _)| *index);
        let manifest = &plan.manifest;
        let all_corrupt = failures
            .iter()
            .all(|(_, failure)| matches!(failure, StripeFailure::Corrupt(_)));
        if all_corrupt {
            let details: Vec<String> = failures
                .iter()
                .map(|(index, failure)| match failure {
                    StripeFailure::Corrupt(detail) => format!("stripe {index}: {detail}"),
                    StripeFailure::Unavailable => format!("stripe {index}: unavailable"),
                })
                .collect();
            return ClientError::Corrupt {
                what: format!("blob {}", manifest.blob_id),
                detail: details.join("; "),
            };
        }
        let stripes: Vec<u64> = failures.iter().map(|(index, _)| *index).collect();
        tracing::warn!(blob_id = %manifest.blob_id, ?stripes, "stripes unreadable");
        ClientError::Unavailable {
            blob_id: manifest.blob_id,
            stripes,
            stripe_count: manifest.stripes.len() as u64,
            shards_needed: manifest.durability.shards_needed(),
        }
    }

    /// Reads one stripe from the nodes of its walk (see the module docs).
    async fn fetch_stripe(&self, plan: &BlobPlan, index: u64) -> Result<Pieces, StripeFailure> {
        let durability = plan.manifest.durability;
        let mut fetch = StripeFetch::new(plan, index, self.inner.config.verify_stripe_ids);
        // Nodes reads recently had to hedge around go last (a stable partition: placement
        // order otherwise), so a stalled node costs one hedge delay, not one per stripe.
        // The id the nodes keep this stripe under (whole copies: a derived one).
        let node_stripe_id = plan.manifest.node_stripe_id(index as usize);
        let walk = self.walk(node_stripe_id.ring_point(), durability.width());
        let (fast, slow): (Vec<NodeId>, Vec<NodeId>) =
            walk.into_iter().partition(|&node| !self.is_slow(node));
        let mut candidates: VecDeque<NodeId> = fast.into_iter().chain(slow).collect();
        let mut outstanding: Vec<NodeId> = Vec::new();
        let mut tasks: JoinSet<ShardReply> = JoinSet::new();
        let launch =
            |tasks: &mut JoinSet<_>,
             candidates: &mut VecDeque<NodeId>,
             outstanding: &mut Vec<NodeId>| match candidates.pop_front() {
                Some(node) => {
                    outstanding.push(node);
                    let client = self.clone();
                    let stripe_id = node_stripe_id;
                    tasks.spawn(async move {
                        let started = Instant::now();
                        let result = client.inner.pool.shard_get(node, stripe_id).await;
                        (node, started, result)
                    });
                    true
                }
                None => false,
            };
        for _ in 0..fetch.needed {
            launch(&mut tasks, &mut candidates, &mut outstanding);
        }
        let hedge = self.hedge_after();
        let hedge_timer = tokio::time::sleep(hedge.unwrap_or_default());
        tokio::pin!(hedge_timer);
        let mut hedged = hedge.is_none();
        loop {
            if let Some(result) = fetch.try_finish() {
                match result {
                    Ok(stripe) => {
                        // Nodes still silent after a hedge read around them: slow.
                        if hedged && hedge.is_some() {
                            for &node in &outstanding {
                                self.mark_slow(node);
                            }
                        }
                        return Ok(stripe);
                    }
                    Err(detail) if fetch.whole() => {
                        // A bad replica: try another copy.
                        tracing::warn!(stripe = index, %detail, "replica failed verification");
                        fetch.reset();
                    }
                    Err(detail) => return Err(StripeFailure::Corrupt(detail)),
                }
            }
            if tasks.is_empty() && !launch(&mut tasks, &mut candidates, &mut outstanding) {
                return Err(StripeFailure::Unavailable);
            }
            tokio::select! {
                biased;
                joined = tasks.join_next() => {
                    let Some(joined) = joined else { continue };
                    let (node, started, result) = joined.expect("shard read task panicked");
                    outstanding.retain(|&other| other != node);
                    let accepted = match result {
                        Ok((info, body)) => {
                            let latency = started.elapsed();
                            self.record_latency(latency);
                            if hedge.is_none_or(|hedge| latency < hedge) {
                                self.clear_slow(node);
                            }
                            fetch.accept(node, info, body)
                        }
                        Err(error) => {
                            log_shard_failure(node, node_stripe_id, &error);
                            false
                        }
                    };
                    if !accepted {
                        launch(&mut tasks, &mut candidates, &mut outstanding);
                    }
                }
                () = &mut hedge_timer, if !hedged => {
                    hedged = true;
                    // One more request for every one still outstanding.
                    for _ in 0..tasks.len() {
                        launch(&mut tasks, &mut candidates, &mut outstanding);
                    }
                }
            }
        }
    }
}

/// The shards of one stripe gathered so far.
struct StripeFetch<'a> {
    plan: &'a BlobPlan,
    entry: StripeEntry,
    /// The writer's shard checksums of this stripe (none in version-1 manifests).
    expected_crcs: Option<&'a [u32]>,
    /// [`crate::ClientConfig::verify_stripe_ids`].
    verify_stripe_ids: bool,
    /// K (1 for whole-stripe layouts).
    needed: usize,
    shards: Vec<Option<Bytes>>,
}

impl<'a> StripeFetch<'a> {
    fn new(plan: &'a BlobPlan, index: u64, verify_stripe_ids: bool) -> Self {
        let entry = plan.manifest.stripes[index as usize];
        let durability = plan.manifest.durability;
        let slots = match durability {
            Durability::ErasureCoded { .. } => durability.width(),
            _ => 1,
        };
        Self {
            plan,
            entry,
            expected_crcs: plan.manifest.shard_crcs_of(index as usize),
            verify_stripe_ids,
            needed: durability.shards_needed(),
            shards: vec![None; slots],
        }
    }

    fn whole(&self) -> bool {
        self.plan.codec.is_none()
    }

    fn reset(&mut self) {
        self.shards.iter_mut().for_each(|shard| *shard = None);
    }

    /// Keeps a shard if it is one of this stripe's, with the expected layout, and new.
    fn accept(&mut self, node: NodeId, info: ShardInfo, body: Bytes) -> bool {
        let expected_layout = match self.plan.manifest.durability {
            Durability::ErasureCoded { data, parity } => match info.layout {
                ShardLayout::Erasure {
                    codec,
                    data_shards,
                    parity_shards,
                    ..
                } => {
                    codec == self.plan.manifest.codec
                        && (data_shards, parity_shards) == (data, parity)
                }
                ShardLayout::Whole => false,
            },
            _ => info.layout == ShardLayout::Whole,
        };
        let expected_bytes = match self.plan.codec {
            Some(_) => shard_bytes(self.entry.stripe_bytes as usize, self.needed) as u64,
            None => self.entry.stripe_bytes,
        };
        let index = shard_index(&info.layout);
        // The writer's checksum of this very shard: the node's bytes already matched the
        // checksum the node sent (frame and shard CRC32C); this ties them to the writer's.
        let writers_crc = self
            .expected_crcs
            .map(|crcs| crcs[index.min(crcs.len() - 1)]);
        let fits = expected_layout
            && info.stripe_bytes == self.entry.stripe_bytes
            && info.shard_bytes == expected_bytes
            && index < self.shards.len()
            && writers_crc.is_none_or(|crc| crc == info.shard_crc);
        if !fits {
            tracing::warn!(%node, stripe_id = %self.entry.stripe_id, ?info, "shard does not match the manifest");
            return false;
        }
        if self.shards[index].is_some() {
            return false;
        }
        self.shards[index] = Some(body);
        true
    }

    /// The stripe once enough shards are here (`Err`: it failed verification).
    fn try_finish(&self) -> Option<Result<Pieces, String>> {
        let present = self.shards.iter().flatten().count();
        if present < self.needed {
            return None;
        }
        let stripe_bytes = self.entry.stripe_bytes as usize;
        let stripe = match &self.plan.codec {
            None => Pieces(vec![self.shards[0].clone().expect("present")]),
            Some(codec) => match decode(codec.as_ref(), &self.shards, stripe_bytes) {
                Ok(stripe) => stripe,
                Err(error) => return Some(Err(format!("decode: {error}"))),
            },
        };
        // Every shard matched the writer's checksum; only bytes computed from parity (or
        // read under a version-1 manifest, or when asked) need the stripe's BLAKE3 as well.
        let rebuilt = self.shards[..self.needed].iter().any(Option::is_none);
        let checked = self.expected_crcs.is_some() && !rebuilt && !self.verify_stripe_ids;
        if !checked && stripe_id_of(&stripe) != self.entry.stripe_id {
            return Some(Err(format!(
                "the stripe's BLAKE3 does not match {}",
                self.entry.stripe_id
            )));
        }
        Some(Ok(stripe))
    }
}

/// The stripe id of a stripe's pieces.
fn stripe_id_of(stripe: &Pieces) -> StripeId {
    let mut hasher = blake3::Hasher::new();
    for piece in &stripe.0 {
        hasher.update(piece);
    }
    StripeId::from_bytes(*hasher.finalize().as_bytes())
}

/// The K data shards as the stripe's pieces, rebuilding missing ones from parity first.
fn decode(
    codec: &dyn ErasureCodec,
    shards: &[Option<Bytes>],
    stripe_bytes: usize,
) -> Result<Pieces, nabu_core::ec::EcError> {
    let data_shards = codec.data_shards();
    let shard_len = shard_bytes(stripe_bytes, data_shards);
    let mut rebuilt: Vec<(usize, AlignedBuf)> = (0..data_shards)
        .filter(|&index| shards[index].is_none())
        .map(|index| (index, AlignedBuf::zeroed(shard_len)))
        .collect();
    if !rebuilt.is_empty() {
        let mut slots: Vec<ShardSlot<'_>> = shards
            .iter()
            .map(|shard| match shard {
                Some(bytes) => ShardSlot::Present(&bytes[..]),
                None => ShardSlot::Unavailable,
            })
            .collect();
        for (index, buffer) in rebuilt.iter_mut() {
            slots[*index] = ShardSlot::Rebuild(&mut buffer[..]);
        }
        codec.decode(&mut slots)?;
    }
    let mut rebuilt = rebuilt.into_iter();
    let mut remaining = stripe_bytes;
    let mut pieces = Vec::with_capacity(data_shards);
    for shard in &shards[..data_shards] {
        if remaining == 0 {
            break;
        }
        let bytes = match shard {
            Some(bytes) => bytes.clone(),
            None => Bytes::from_owner(OwnedShard(rebuilt.next().expect("rebuilt in order").1)),
        };
        let take = remaining.min(bytes.len());
        pieces.push(bytes.slice(..take));
        remaining -= take;
    }
    assert_eq!(remaining, 0, "shards shorter than the stripe");
    Ok(Pieces(pieces))
}

fn log_shard_failure(node: NodeId, stripe_id: StripeId, error: &ClientError) {
    match error.remote_code() {
        Some(ErrorCode::CORRUPT) => {
            tracing::warn!(%node, %stripe_id, "node reports its shard corrupt; reading around it")
        }
        Some(ErrorCode::NOT_FOUND) => {
            tracing::debug!(%node, %stripe_id, "node holds no shard of the stripe")
        }
        _ => tracing::debug!(%node, %stripe_id, %error, "shard read failed"),
    }
}

/// `range` with its end clamped to `size`; a start past the end is refused.
fn clamp_range(range: Range<u64>, size: u64) -> Result<Range<u64>> {
    if range.start > range.end || range.start > size {
        return Err(ClientError::InvalidArgument(format!(
            "range {range:?} does not lie in an object of {size} bytes"
        )));
    }
    Ok(range.start..range.end.min(size))
}

/// The manifest stored as `bytes`, which must describe `blob_id` (`what` names it in errors).
pub(crate) fn decode_manifest(bytes: &[u8], blob_id: BlobId, what: String) -> Result<Manifest> {
    let manifest = Manifest::decode(bytes).map_err(|source| ClientError::Format {
        what: what.clone(),
        source,
    })?;
    if manifest.blob_id != blob_id {
        return Err(ClientError::Corrupt {
            what,
            detail: format!("it describes blob {}", manifest.blob_id),
        });
    }
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_slice_across_shard_boundaries() {
        let pieces = Pieces(vec![
            Bytes::from_static(b"abcd"),
            Bytes::from_static(b"efgh"),
            Bytes::from_static(b"ij"),
        ]);
        assert_eq!(pieces.len(), 10);
        let joined = |from, to| pieces.slice(from, to).concat();
        assert_eq!(joined(0, 10), b"abcdefghij");
        assert_eq!(joined(3, 9), b"defghi");
        assert_eq!(joined(4, 8), b"efgh");
        assert_eq!(pieces.slice(4, 8).len(), 1, "one whole piece, no copy");
        assert!(pieces.slice(5, 5).is_empty());
    }
}
