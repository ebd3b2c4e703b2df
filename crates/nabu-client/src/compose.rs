//! Composing one object from blobs already stored (an S3 multipart upload's parts) without
//! moving their bytes again.
//!
//! A manifest lists stripes that are all `stripe_bytes` long but the last, and every stripe's
//! shards are found by its [`StripeId`](nabu_core::id::StripeId) alone. So when every part
//! but the last is a whole number of stripes, stored with the layout the composed object
//! needs, the composed manifest is simply the parts' stripe lists end to end: no shard is
//! written. Parts meant for composition are put with `keep_policy_layout`, so that a short
//! last part has the layout of the rest (a node holds a stripe id in one layout only, so it
//! could not be rewritten in another).
//!
//! The blob id must still be the BLAKE3 of all the bytes. BLAKE3 is a tree hash, and with
//! power-of-two stripes every stripe is a subtree of the composed blob's tree; so the id is
//! merged from one chaining value per stripe (`blake3::hazmat`), which depends on the
//! stripe's offset in the composed blob. A caller that saw the bytes pass can supply them
//! ([`PartHasher`], e.g. the S3 gateway for a part, assuming all parts are as long as this
//! one); parts whose chaining values are missing or were computed for another offset (the
//! last, shorter part) are read back once to compute them. A single blob reused whole (an S3
//! CopyObject in one bucket) keeps its id: nothing is read at all.
//!
//! Parts that do not line up (a 50 MiB part under 4 MiB stripes) are copied instead: read
//! in order and put as one stream, bounded memory as any put.
//!
//! The manifest and key record are written last, as by `put`: the object is visible only
//! once complete, and a failed composition changes nothing visible.

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, left_subtree_len, merge_subtrees_non_root, merge_subtrees_root,
};
use bytes::Bytes;
use nabu_core::ec::{CodecId, codec};
use nabu_core::id::BlobId;
use nabu_core::policy::Durability;

use crate::client::{Client, check_key, check_user_namespace};
use crate::error::{ClientError, Result};
use crate::format::Manifest;
use crate::write::{PutOptions, PutReceipt, StripeWritten, codec_error};

/// Bytes of the pipe between the reading and the writing half of a copying composition.
const COPY_PIPE_BYTES: usize = 8 << 20;

/// How [`Client::put_composed`] stored the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComposeMode {
    /// The parts' stripes were reused as they are (at most one small stripe rewritten).
    Reused,
    /// The parts' bytes were read and written again as one new blob.
    Copied,
}

impl Client {
    /// Stores under `key` the concatenation of the blobs `parts` (in order), each stored in
    /// `namespace`: by reusing their stripes where they line up, else by copying (see the
    /// module docs). Visible only once complete.
    pub async fn put_composed(
        &self,
        namespace: &str,
        key: &[u8],
        parts: &[ComposePart],
        options: PutOptions,
    ) -> Result<(PutReceipt, ComposeMode)> {
        check_user_namespace(namespace)?;
        check_key(key)?;
        let mut manifests = Vec::with_capacity(parts.len());
        for part in parts {
            manifests.push(self.read_manifest(namespace, part.blob_id).await?);
        }
        if let Some(receipt) = self
            .compose_reusing(namespace, key, parts, &manifests, &options)
            .await?
        {
            return Ok((receipt, ComposeMode::Reused));
        }
        let blobs: Vec<BlobId> = parts.iter().map(|part| part.blob_id).collect();
        let receipt = self
            .compose_copying(namespace, key, &blobs, options)
            .await?;
        Ok((receipt, ComposeMode::Copied))
    }

    /// Stores under `to` the object under `from` as it is now, with its user metadata,
    /// without moving its bytes: a new key record naming the same blob (the reusing path
    /// with one part reads nothing). Visible only once complete, as any put.
    pub async fn copy(&self, namespace: &str, from: &[u8], to: &[u8]) -> Result<PutReceipt> {
        let info = self.stat(namespace, from).await?;
        let options = PutOptions {
            metadata: info.metadata,
            ..PutOptions::default()
        };
        let parts = [ComposePart::blob(info.blob_id)];
        let (receipt, _) = self.put_composed(namespace, to, &parts, options).await?;
        Ok(receipt)
    }

    /// Renames `from` to `to`: [`Client::copy`], then a tombstone for `from`. The pair is not
    /// atomic, but never loses the object: a failure between the two leaves both keys.
    /// Renaming a key to itself changes nothing.
    pub async fn rename(&self, namespace: &str, from: &[u8], to: &[u8]) -> Result<PutReceipt> {
        let receipt = self.copy(namespace, from, to).await?;
        if from != to {
            self.delete(namespace, from).await?;
        }
        Ok(receipt)
    }

    /// The reusing path; `None` when the parts do not line up.
    async fn compose_reusing(
        &self,
        namespace: &str,
        key: &[u8],
        given: &[ComposePart],
        manifests: &[Manifest],
        options: &PutOptions,
    ) -> Result<Option<PutReceipt>> {
        let policy = self.namespace_policy(namespace).await?;
        let cut = self.inner.config.stripe_bytes;
        let total: u64 = manifests.iter().map(|m| m.blob_bytes).sum();
        let (parts, hashes): (Vec<&Manifest>, Vec<Option<&PartHashes>>) = manifests
            .iter()
            .zip(given)
            .filter(|(m, _)| m.blob_bytes > 0)
            .map(|(m, part)| (m, part.hashes.as_ref()))
            .unzip();
        let Some(first) = parts.first() else {
            return Ok(None);
        };
        // The parts' own layout, if the composed object may have it: the policy's, or the
        // small-object one when the whole object is small.
        let layout = first.durability;
        let small = self.stripe_durability(policy, total.min(cut as u64), cut);
        if layout != policy && layout != small {
            return Ok(None);
        }
        let codec = match layout {
            Durability::ErasureCoded { data, parity } => Some(
                codec(usize::from(data), usize::from(parity))
                    .map_err(|error| codec_error(&error))?,
            ),
            _ => None,
        };
        let codec_id = codec.as_ref().map_or(CodecId(0), |codec| codec.id());
        if !reusable(&parts, cut as u64, layout, codec_id) {
            return Ok(None);
        }
        let mut written = Vec::new();
        for part in &parts {
            for (index, entry) in part.stripes.iter().enumerate() {
                written.push(StripeWritten {
                    index: written.len() as u64,
                    entry: *entry,
                    // The parts' writers' checksums carry over (none from version-1 parts).
                    shard_crcs: part.shard_crcs_of(index).unwrap_or_default().to_vec(),
                    written: layout.width(),
                    missing: Vec::new(),
                });
            }
        }
        let blob_id = match (&parts[..], &written[..]) {
            // One blob reused whole (a copy): its id is already the hash of these bytes.
            ([only], _) => only.blob_id,
            // One stripe: the blob's hash is the stripe's.
            (_, [stripe]) => BlobId::from_bytes(*stripe.entry.stripe_id.as_bytes()),
            _ => self.composed_blob_id(namespace, &parts, &hashes).await?,
        };
        let receipt = self
            .commit(
                namespace,
                key,
                blob_id,
                layout,
                codec.as_deref(),
                written,
                options.metadata.clone(),
            )
            .await?;
        Ok(Some(receipt))
    }

    /// BLAKE3 of the blobs' bytes end to end (two or more stripes, every one but the last a
    /// whole stripe): merged from each stripe's chaining value at its offset, taken from
    /// `hashes` where they were computed for the right offset, else from the part's bytes,
    /// read back (and verified stripe by stripe on the way).
    async fn composed_blob_id(
        &self,
        namespace: &str,
        parts: &[&Manifest],
        hashes: &[Option<&PartHashes>],
    ) -> Result<BlobId> {
        let stripe_bytes = self.inner.config.stripe_bytes as u64;
        let mut chaining_values = Vec::new();
        let mut lengths = Vec::new();
        let mut offset = 0;
        for (part, known) in parts.iter().zip(hashes) {
            let usable = known.filter(|known| {
                known.offset == offset && known.stripe_cvs.len() == part.stripes.len()
            });
            match usable {
                Some(known) => chaining_values.extend_from_slice(&known.stripe_cvs),
                None => {
                    let mut hasher = PartHasher::new(offset, stripe_bytes)
                        .expect("reused parts start on stripe boundaries");
                    let mut reader = self.get_blob_stream(namespace, part.blob_id).await?;
                    while let Some(chunk) = reader.next_chunk().await {
                        hasher.update(&chunk?);
                    }
                    chaining_values.extend(hasher.finish().stripe_cvs);
                }
            }
            lengths.extend(part.stripes.iter().map(|stripe| stripe.stripe_bytes));
            offset += part.blob_bytes;
        }
        Ok(BlobId::from_bytes(
            *root_hash(&chaining_values, &lengths).as_bytes(),
        ))
    }

    /// The copying path: the parts are read in order into a bounded pipe that a streaming
    /// put drains.
    async fn compose_copying(
        &self,
        namespace: &str,
        key: &[u8],
        parts: &[BlobId],
        options: PutOptions,
    ) -> Result<PutReceipt> {
        use tokio::io::AsyncWriteExt;
        let (mut sink, source) = tokio::io::duplex(COPY_PIPE_BYTES);
        let (client, namespace_owned, parts) = (self.clone(), namespace.to_owned(), parts.to_vec());
        let producer = tokio::spawn(async move {
            for part in parts {
                let mut reader = client.get_blob_stream(&namespace_owned, part).await?;
                while let Some(chunk) = reader.next_chunk().await {
                    let chunk: Bytes = chunk?;
                    sink.write_all(&chunk)
                        .await
                        .map_err(|source| ClientError::Io {
                            context: "pass a part on to the composed put".into(),
                            source,
                        })?;
                }
            }
            sink.shutdown().await.map_err(|source| ClientError::Io {
                context: "finish the composed put".into(),
                source,
            })
        });
        let put = self.put_stream(namespace, key, source, options).await;
        let produced = producer.await.expect("composition reader task panicked");
        match (put, produced) {
            (Ok(receipt), Ok(())) => Ok(receipt),
            // A reader failure also breaks the pipe: report the cause, not the symptom.
            (_, Err(error)) => Err(error),
            (Err(error), Ok(())) => Err(error),
        }
    }
}

/// A blob to compose, with the BLAKE3 chaining values of its stripes when the caller
/// computed them while the bytes passed (saves reading the part back to hash it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposePart {
    /// The blob, stored in the namespace of the composition.
    pub blob_id: BlobId,
    /// Its stripes' chaining values, if known.
    pub hashes: Option<PartHashes>,
}

impl ComposePart {
    /// A part whose hashes are not known.
    pub fn blob(blob_id: BlobId) -> Self {
        Self {
            blob_id,
            hashes: None,
        }
    }
}

/// The BLAKE3 chaining values (non-root subtree hashes) of a blob's stripes, as if the blob
/// began `offset` bytes into a larger one. BLAKE3 is a tree hash whose chunk counter depends
/// on the offset, so these are valid only for that offset; `put_composed` merges them into
/// the composed blob's id when the offset proves right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartHashes {
    /// Where the blob was assumed to begin (a multiple of the stripe length).
    pub offset: u64,
    /// One chaining value per stripe, in order.
    pub stripe_cvs: Vec<[u8; 32]>,
}

/// Computes [`PartHashes`] as bytes pass, one subtree per stripe.
#[derive(Debug)]
pub struct PartHasher {
    offset: u64,
    stripe_bytes: u64,
    current: blake3::Hasher,
    current_bytes: u64,
    stripe_cvs: Vec<[u8; 32]>,
}

impl PartHasher {
    /// A hasher for a blob beginning at `offset`; `None` unless `stripe_bytes` is a power of
    /// two of at least one BLAKE3 chunk and `offset` a multiple of it (only such blobs can be
    /// reused in a composition).
    pub fn new(offset: u64, stripe_bytes: u64) -> Option<Self> {
        let valid = stripe_bytes.is_power_of_two()
            && stripe_bytes >= blake3::CHUNK_LEN as u64
            && offset.is_multiple_of(stripe_bytes);
        valid.then(|| Self {
            offset,
            stripe_bytes,
            current: subtree_hasher(offset),
            current_bytes: 0,
            stripe_cvs: Vec::new(),
        })
    }

    /// Feeds the next bytes of the blob.
    pub fn update(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let room = (self.stripe_bytes - self.current_bytes) as usize;
            let (now, later) = bytes.split_at(room.min(bytes.len()));
            self.current.update(now);
            self.current_bytes += now.len() as u64;
            bytes = later;
            if self.current_bytes == self.stripe_bytes {
                self.close_stripe();
            }
        }
    }

    fn close_stripe(&mut self) {
        self.stripe_cvs.push(self.current.finalize_non_root());
        let next = self.offset + self.stripe_bytes * self.stripe_cvs.len() as u64;
        self.current = subtree_hasher(next);
        self.current_bytes = 0;
    }

    /// The chaining values of every stripe fed.
    pub fn finish(mut self) -> PartHashes {
        if self.current_bytes > 0 {
            self.close_stripe();
        }
        PartHashes {
            offset: self.offset,
            stripe_cvs: self.stripe_cvs,
        }
    }
}

fn subtree_hasher(offset: u64) -> blake3::Hasher {
    let mut hasher = blake3::Hasher::new();
    hasher.set_input_offset(offset);
    hasher
}

/// The BLAKE3 root of stripes (two or more) with these chaining values and lengths (all
/// equal powers of two but the last): BLAKE3's left subtree is always the largest power of
/// two below the total, so it ends on a stripe boundary.
fn root_hash(cvs: &[ChainingValue], lengths: &[u64]) -> blake3::Hash {
    assert!(cvs.len() >= 2 && cvs.len() == lengths.len());
    let split = split_point(lengths);
    let (left, right) = (
        merge(&cvs[..split], &lengths[..split]),
        merge(&cvs[split..], &lengths[split..]),
    );
    merge_subtrees_root(&left, &right, Mode::Hash)
}

fn merge(cvs: &[ChainingValue], lengths: &[u64]) -> ChainingValue {
    if let [only] = cvs {
        return *only;
    }
    let split = split_point(lengths);
    let left = merge(&cvs[..split], &lengths[..split]);
    let right = merge(&cvs[split..], &lengths[split..]);
    merge_subtrees_non_root(&left, &right, Mode::Hash)
}

/// How many stripes BLAKE3's left subtree over `lengths` holds.
fn split_point(lengths: &[u64]) -> usize {
    let total: u64 = lengths.iter().sum();
    let left = left_subtree_len(total);
    let mut sum = 0;
    for (index, length) in lengths.iter().enumerate() {
        sum += length;
        if sum == left {
            return index + 1;
        }
    }
    unreachable!("the left subtree ends on a stripe boundary")
}

/// Whether `parts` (non-empty blobs, in order) can be reused under `layout`: every part cut
/// at `cut` and stored with `layout`, every part but the last a whole number of stripes.
fn reusable(parts: &[&Manifest], cut: u64, layout: Durability, codec_id: CodecId) -> bool {
    let Some((last, init)) = parts.split_last() else {
        return false;
    };
    // A version-1 part (no shard checksums) keeps whole copies under other ids than a
    // version-2 manifest names: such parts are rewritten, not reused.
    if parts.iter().any(|m| m.shard_crcs.is_empty()) {
        return false;
    }
    let fits =
        |m: &Manifest| m.stripe_bytes == cut && m.durability == layout && m.codec == codec_id;
    init.iter().all(|m| fits(m) && m.blob_bytes % cut == 0) && fits(last)
}

#[cfg(test)]
mod tests {
    use nabu_core::id::StripeId;

    use super::*;
    use crate::format::StripeEntry;

    fn manifest(bytes: u64, cut: u64, durability: Durability, codec: u8) -> Manifest {
        let count = bytes.div_ceil(cut);
        let stripes: Vec<StripeEntry> = (0..count)
            .map(|index| StripeEntry {
                stripe_id: StripeId::of(&index.to_le_bytes()),
                stripe_bytes: cut.min(bytes - index * cut),
            })
            .collect();
        Manifest {
            blob_id: BlobId::of(&bytes.to_le_bytes()),
            blob_bytes: bytes,
            durability,
            codec: CodecId(codec),
            stripe_bytes: cut,
            created_hlc: 1,
            shard_crcs: vec![7; stripes.len() * crc_width(durability)],
            stripes,
            metadata: Default::default(),
        }
    }

    fn crc_width(durability: Durability) -> usize {
        match durability {
            Durability::ErasureCoded { .. } => durability.width(),
            _ => 1,
        }
    }

    #[test]
    fn merged_stripe_chaining_values_equal_the_hash_of_the_whole() {
        // Small stripes (4 KiB) so that many shapes are cheap: 2..=9 stripes, the last one
        // full or short, cut into parts at various stripe boundaries.
        let stripe = 4096u64;
        let data: Vec<u8> = (0..9 * stripe as usize)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        for stripes in 2..=9u64 {
            for tail in [stripe, 1, 1000, stripe - 1] {
                let total = (stripes - 1) * stripe + tail;
                let bytes = &data[..total as usize];
                for cut in 1..stripes {
                    let at = cut * stripe;
                    let mut cvs = Vec::new();
                    for (offset, piece) in [(0, &bytes[..at as usize]), (at, &bytes[at as usize..])]
                    {
                        let mut hasher = PartHasher::new(offset, stripe).unwrap();
                        for chunk in piece.chunks(777) {
                            hasher.update(chunk);
                        }
                        cvs.extend(hasher.finish().stripe_cvs);
                    }
                    let lengths: Vec<u64> = (0..stripes)
                        .map(|i| if i + 1 == stripes { tail } else { stripe })
                        .collect();
                    assert_eq!(
                        root_hash(&cvs, &lengths),
                        blake3::hash(bytes),
                        "{stripes} stripes, tail {tail}, cut at {cut}"
                    );
                }
            }
        }
    }

    #[test]
    fn part_hashers_need_aligned_offsets_and_power_of_two_stripes() {
        assert!(PartHasher::new(4096, 4096).is_some());
        assert!(PartHasher::new(4095, 4096).is_none());
        assert!(PartHasher::new(0, 3000).is_none());
        assert!(PartHasher::new(0, 512).is_none());
    }

    #[test]
    fn aligned_parts_are_reused_and_misaligned_ones_are_not() {
        let ec = Durability::EC_4_2;
        let small = Durability::Replicas { copies: 3 };
        let cut = 4 << 20;
        let a = manifest(16 << 20, cut, ec, 1);
        let b = manifest(8 << 20, cut, ec, 1);
        let tail = manifest(100, cut, ec, 1);
        let small_tail = manifest(100, cut, small, 0);
        let odd = manifest(5 << 20, cut, ec, 1);
        assert!(reusable(&[&a, &b, &tail], cut, ec, CodecId(1)));
        assert!(
            reusable(&[&a, &odd], cut, ec, CodecId(1)),
            "the last part may be any length"
        );
        assert!(!reusable(&[&odd, &a], cut, ec, CodecId(1)));
        assert!(!reusable(&[&a, &small_tail], cut, ec, CodecId(1)));
        assert!(!reusable(&[&tail, &a], cut, ec, CodecId(1)));
        assert!(!reusable(&[&a], 8 << 20, ec, CodecId(1)));
        assert!(!reusable(&[], cut, ec, CodecId(1)));
    }
}
