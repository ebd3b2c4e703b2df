//! Composing one object from blobs already stored (an S3 multipart upload's parts) without
//! moving their bytes again.
//!
//! A manifest lists stripes that are all `stripe_bytes` long but the last, and every stripe's
//! shards are found by its [`StripeId`](nabu_core::id::StripeId) alone. So when every part
//! but the last is a whole number of stripes, stored with the layout the composed object
//! needs, the composed manifest is simply the parts' stripe lists end to end: no shard is
//! written. Parts meant for composition are put with `keep_policy_layout`, so that a short
//! last part has the layout of the rest (a node holds a stripe id in one layout only, so it
//! could not be rewritten in another). The blob id is the BLAKE3 of all the bytes, so the
//! parts are read once to hash them; nothing else is sent. A single blob reused whole (an S3
//! CopyObject in one bucket) keeps its id: nothing is read at all.
//!
//! Parts that do not line up (a 50 MiB part under 4 MiB stripes) are copied instead: read
//! in order and put as one stream, bounded memory as any put.
//!
//! The manifest and key record are written last, as by `put`: the object is visible only
//! once complete, and a failed composition changes nothing visible.

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
        parts: &[BlobId],
        options: PutOptions,
    ) -> Result<(PutReceipt, ComposeMode)> {
        check_user_namespace(namespace)?;
        check_key(key)?;
        let mut manifests = Vec::with_capacity(parts.len());
        for &part in parts {
            manifests.push(self.read_manifest(namespace, part).await?);
        }
        if let Some(receipt) = self
            .compose_reusing(namespace, key, &manifests, &options)
            .await?
        {
            return Ok((receipt, ComposeMode::Reused));
        }
        let receipt = self.compose_copying(namespace, key, parts, options).await?;
        Ok((receipt, ComposeMode::Copied))
    }

    /// The reusing path; `None` when the parts do not line up.
    async fn compose_reusing(
        &self,
        namespace: &str,
        key: &[u8],
        manifests: &[Manifest],
        options: &PutOptions,
    ) -> Result<Option<PutReceipt>> {
        let policy = self.namespace_policy(namespace).await?;
        let cut = self.inner.config.stripe_bytes;
        let total: u64 = manifests.iter().map(|m| m.blob_bytes).sum();
        let parts: Vec<&Manifest> = manifests.iter().filter(|m| m.blob_bytes > 0).collect();
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
            for entry in &part.stripes {
                written.push(StripeWritten {
                    index: written.len() as u64,
                    entry: *entry,
                    written: layout.width(),
                    missing: Vec::new(),
                });
            }
        }
        let blob_id = match parts[..] {
            // One blob reused whole (a copy): its id is already the hash of these bytes.
            [only] => only.blob_id,
            _ => self.hash_blobs(namespace, &parts).await?,
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

    /// BLAKE3 of the blobs' bytes end to end (read back from the cluster, verified stripe by
    /// stripe on the way).
    async fn hash_blobs(&self, namespace: &str, parts: &[&Manifest]) -> Result<BlobId> {
        let mut hasher = blake3::Hasher::new();
        for part in parts {
            let mut reader = self.get_blob_stream(namespace, part.blob_id).await?;
            while let Some(chunk) = reader.next_chunk().await {
                hasher.update(&chunk?);
            }
        }
        Ok(BlobId::from_bytes(*hasher.finalize().as_bytes()))
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

/// Whether `parts` (non-empty blobs, in order) can be reused under `layout`: every part cut
/// at `cut` and stored with `layout`, every part but the last a whole number of stripes.
fn reusable(parts: &[&Manifest], cut: u64, layout: Durability, codec_id: CodecId) -> bool {
    let Some((last, init)) = parts.split_last() else {
        return false;
    };
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
        let stripes = (0..count)
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
            stripes,
            metadata: Default::default(),
        }
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
