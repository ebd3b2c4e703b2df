//! Multipart uploads and copies.
//!
//! An upload lives in its bucket's namespace under keys no S3 client can name: they start
//! with byte `0xFF`, which never occurs in UTF-8 (S3 keys are UTF-8), so they sort after
//! every object and listings stop before them.
//!
//! - `0xFF "mpu/" <upload id>`: the upload record, an empty object whose metadata holds the
//!   object key (`nabu-upload-key`) and the object's metadata;
//! - `0xFF "mpu/" <upload id> "/" <part number, 5 digits>`: each part, an ordinary object
//!   stored with the bucket's durability (re-uploading a part number overwrites it).
//!
//! Complete composes the object from the parts' blobs ([`Client::put_composed`]): where the
//! parts are whole stripes (64 MiB parts under 4 MiB stripes) their stripes are reused and no
//! shard is written again; the key record is written last, so the object appears only then.
//! Afterwards the part keys and the record are deleted.
//!
//! The composed blob's id is BLAKE3 of all its bytes. So that Complete need not read the
//! parts back to hash them, UploadPart computes each stripe's BLAKE3 chaining value as the
//! body passes, assuming every part is as long as this one (its offset is then
//! `(part number − 1) × length`), and keeps them in the part's key record
//! (`nabu-cv-offset`, `nabu-cvs-<n>`). Complete uses them where the assumption held; only a
//! part where it did not (typically the shorter last one) is read back.

use std::ops::Range;

use bytes::Bytes;
use nabu_client::{
    Client, ClientError, ComposePart, ObjectInfo, PartHasher, PartHashes, PutOptions, PutReceipt,
    UserMetadata,
};
use nabu_core::id::BlobId;
use s3s::dto::*;
use s3s::{S3Request, S3Result, s3_error};
use tokio::task::JoinSet;

use crate::body::BodyReader;
use crate::error::{Missing, s3_error};
use crate::gateway::{Gateway, PUT_BYTES_MAX, check_length, copy_source, expected_checksums};
use crate::list::list_keys;
use crate::meta::{self, ObjectHeaders};

/// The first byte of every key the gateway keeps for itself.
pub const HIDDEN_KEY_BYTE: u8 = 0xFF;
/// The metadata entry of an upload record naming the object key.
const UPLOAD_KEY_ENTRY: &str = "nabu-upload-key";
/// Part numbers run 1..=this, as in S3.
const PART_NUMBER_MAX: i32 = 10_000;
/// Every part but the last is at least this long, as in S3.
const PART_BYTES_MIN: u64 = 5 << 20;
/// Metadata reads or deletes one multipart request runs at once.
const METADATA_INFLIGHT_MAX: usize = 32;
/// Bytes of the pipe between the read and the write half of a streamed copy.
const COPY_PIPE_BYTES: usize = 8 << 20;

fn upload_prefix() -> Vec<u8> {
    let mut key = vec![HIDDEN_KEY_BYTE];
    key.extend_from_slice(b"mpu/");
    key
}

fn upload_key(upload_id: &str) -> Vec<u8> {
    let mut key = upload_prefix();
    key.extend_from_slice(upload_id.as_bytes());
    key
}

fn part_prefix(upload_id: &str) -> Vec<u8> {
    let mut key = upload_key(upload_id);
    key.push(b'/');
    key
}

fn part_key(upload_id: &str, part_number: i32) -> Vec<u8> {
    let mut key = part_prefix(upload_id);
    key.extend_from_slice(format!("{part_number:05}").as_bytes());
    key
}

/// Parts keep the bucket's layout even when short, so that Complete can reuse their stripes
/// (see `Client::put_composed`).
fn part_options(metadata: Option<UserMetadata>) -> PutOptions {
    PutOptions {
        metadata: metadata.unwrap_or_default(),
        keep_policy_layout: true,
        metadata_at_end: None,
    }
}

/// The metadata entry holding the offset a part's stripe hashes assume.
const HASHES_OFFSET_ENTRY: &str = "nabu-cv-offset";
/// The metadata entries holding the hashes, in hex: `nabu-cvs-0`, `nabu-cvs-1`, …
const HASHES_ENTRY_PREFIX: &str = "nabu-cvs-";
/// Chaining values per entry: 2,048 hex digits, the longest metadata value.
const HASHES_PER_ENTRY: usize = 32;
/// Entries at most (within the 8 KiB a key record's metadata may hold): parts of up to
/// 96 stripes (384 MiB) keep their hashes; longer ones are read back at Complete.
const HASHES_ENTRIES_MAX: usize = 3;

/// A part's stripe hashes as key-record metadata; `None` if they do not fit.
fn encode_hashes(hashes: &PartHashes) -> Option<UserMetadata> {
    let chunks: Vec<&[[u8; 32]]> = hashes.stripe_cvs.chunks(HASHES_PER_ENTRY).collect();
    if chunks.len() > HASHES_ENTRIES_MAX {
        return None;
    }
    let mut metadata = UserMetadata::new();
    metadata.insert(HASHES_OFFSET_ENTRY.to_owned(), hashes.offset.to_string());
    for (index, chunk) in chunks.iter().enumerate() {
        let hex: String = chunk.iter().flatten().map(|b| format!("{b:02x}")).collect();
        metadata.insert(format!("{HASHES_ENTRY_PREFIX}{index}"), hex);
    }
    Some(metadata)
}

/// The stripe hashes a part's metadata holds, if any (and well formed).
fn decode_hashes(metadata: &UserMetadata) -> Option<PartHashes> {
    let offset = metadata.get(HASHES_OFFSET_ENTRY)?.parse().ok()?;
    let mut stripe_cvs = Vec::new();
    for index in 0..HASHES_ENTRIES_MAX {
        let Some(hex) = metadata.get(&format!("{HASHES_ENTRY_PREFIX}{index}")) else {
            break;
        };
        if !hex.len().is_multiple_of(64) {
            return None;
        }
        for cv in hex.as_bytes().chunks(64) {
            let mut bytes = [0u8; 32];
            for (slot, pair) in bytes.iter_mut().zip(cv.chunks(2)) {
                *slot = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
            }
            stripe_cvs.push(bytes);
        }
    }
    Some(PartHashes { offset, stripe_cvs })
}

fn no_such_upload() -> s3s::S3Error {
    s3_error!(
        NoSuchUpload,
        "The specified multipart upload does not exist."
    )
}

fn check_part_number(part_number: i32) -> S3Result<()> {
    if !(1..=PART_NUMBER_MAX).contains(&part_number) {
        return Err(s3_error!(
            InvalidArgument,
            "Part number must be an integer between 1 and {PART_NUMBER_MAX}, inclusive"
        ));
    }
    Ok(())
}

/// The ETag text a client sent, without quotes.
fn etag_value(etag: &ETag) -> &str {
    etag.value().trim_matches('"')
}

impl Gateway {
    pub(crate) async fn create_upload(
        &self,
        input: CreateMultipartUploadInput,
    ) -> S3Result<CreateMultipartUploadOutput> {
        self.require_bucket(&input.bucket).await?;
        let headers = ObjectHeaders {
            content_type: input.content_type.clone(),
            content_encoding: input.content_encoding.clone(),
            content_disposition: input.content_disposition.clone(),
            content_language: input.content_language.clone(),
            cache_control: input.cache_control.clone(),
        };
        let mut metadata = meta::to_stored(&headers, input.metadata.as_ref())?;
        metadata.insert(UPLOAD_KEY_ENTRY.to_owned(), input.key.clone());
        let mut id = [0u8; 16];
        getrandom::fill(&mut id).map_err(|error| s3_error!(InternalError, "random: {error}"))?;
        let upload_id: String = id.iter().map(|byte| format!("{byte:02x}")).collect();
        let options = crate::gateway::put_options(metadata);
        self.client
            .put_with(
                &input.bucket,
                &upload_key(&upload_id),
                Bytes::new(),
                options,
            )
            .await
            .map_err(|error| s3_error(error, Missing::Bucket))?;
        Ok(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(upload_id),
            ..CreateMultipartUploadOutput::default()
        })
    }

    /// The object metadata of upload `upload_id` for `key`; `NoSuchUpload` if there is none.
    async fn load_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> S3Result<UserMetadata> {
        let valid_id = upload_id.len() == 32 && upload_id.bytes().all(|b| b.is_ascii_hexdigit());
        if !valid_id {
            return Err(no_such_upload());
        }
        let info = match self.client.stat(bucket, &upload_key(upload_id)).await {
            Ok(info) => info,
            Err(ClientError::NotFound(_)) => return Err(no_such_upload()),
            Err(error) => return Err(s3_error(error, Missing::Upload)),
        };
        let mut metadata = info.metadata;
        if metadata.remove(UPLOAD_KEY_ENTRY).as_deref() != Some(key) {
            return Err(no_such_upload());
        }
        Ok(metadata)
    }

    pub(crate) async fn upload_part_body(
        &self,
        mut req: S3Request<UploadPartInput>,
    ) -> S3Result<UploadPartOutput> {
        let input = &req.input;
        check_length(input.content_length)?;
        check_part_number(input.part_number)?;
        self.load_upload(&input.bucket, &input.key, &input.upload_id)
            .await?;
        let fields = [
            &input.checksum_crc32,
            &input.checksum_crc32c,
            &input.checksum_crc64nvme,
            &input.checksum_sha1,
            &input.checksum_sha256,
        ];
        let expected = expected_checksums(&req, fields, &input.content_md5);
        let bucket = input.bucket.clone();
        let key = part_key(&input.upload_id, input.part_number);
        // Assume every part is as long as this one: right for all parts but a shorter last
        // one, whose hashes Complete computes again (see `Client::put_composed`).
        let stripe_bytes = self.client.config().stripe_bytes as u64;
        let hasher = input
            .content_length
            .and_then(|length| u64::try_from(length).ok())
            .filter(|&length| length > 0)
            .and_then(|length| {
                let offset = length.checked_mul(u64::try_from(input.part_number - 1).ok()?)?;
                PartHasher::new(offset, stripe_bytes)
            });
        let mut reader = BodyReader::new(req.input.body.take(), expected, PUT_BYTES_MAX)
            .with_part_hasher(hasher);
        let (receipt, checksum) = self
            .put_body(&bucket, &key, &mut reader, part_options(None))
            .await?;
        if let Some(hashes) = reader.take_part_hashes()
            && let Some(metadata) = encode_hashes(&hashes)
        {
            // The hashes are known only at the end of the body, after the put chose its
            // metadata: a second key record over the same blob carries them (a metadata
            // write; no stripe moves).
            let parts = [ComposePart::blob(receipt.blob_id)];
            let options = part_options(Some(metadata));
            if let Err(error) = self
                .client
                .put_composed(&bucket, &key, &parts, options)
                .await
            {
                return Err(self.object_error(&bucket, error).await);
            }
        }
        Ok(UploadPartOutput {
            e_tag: Some(meta::etag(&receipt.blob_id)),
            checksum_crc32: checksum.checksum_crc32,
            checksum_crc32c: checksum.checksum_crc32c,
            checksum_crc64nvme: checksum.checksum_crc64nvme,
            checksum_sha1: checksum.checksum_sha1,
            checksum_sha256: checksum.checksum_sha256,
            ..UploadPartOutput::default()
        })
    }

    pub(crate) async fn upload_part_from_copy(
        &self,
        input: UploadPartCopyInput,
    ) -> S3Result<UploadPartCopyOutput> {
        check_part_number(input.part_number)?;
        self.load_upload(&input.bucket, &input.key, &input.upload_id)
            .await?;
        let (source_bucket, source_key) = copy_source(&input.copy_source)?;
        let info = self.stat_object(&source_bucket, &source_key).await?;
        let range = match &input.copy_source_range {
            None => None,
            Some(text) => {
                let invalid = || s3_error!(InvalidRange, "x-amz-copy-source-range {text:?}");
                let range = s3s::dto::Range::parse(text).map_err(|_| invalid())?;
                Some(range.check(info.size).map_err(|_| invalid())?)
            }
        };
        let target_key = part_key(&input.upload_id, input.part_number);
        let receipt = self
            .copy_blob(
                (&source_bucket, &source_key, info.blob_id),
                (&input.bucket, &target_key),
                range,
                part_options(None),
            )
            .await?;
        Ok(UploadPartCopyOutput {
            copy_part_result: Some(CopyPartResult {
                e_tag: Some(meta::etag(&receipt.blob_id)),
                last_modified: Some(meta::timestamp(receipt.hlc_timestamp)),
                ..CopyPartResult::default()
            }),
            ..UploadPartCopyOutput::default()
        })
    }

    /// The key record of an object; `NoSuchKey` / `NoSuchBucket` when missing.
    pub(crate) async fn stat_object(&self, bucket: &str, key: &str) -> S3Result<ObjectInfo> {
        match self.client.stat(bucket, key.as_bytes()).await {
            Ok(info) => Ok(info),
            Err(error) => Err(self.object_error(bucket, error).await),
        }
    }

    /// Stores under `target` the bytes of `source` (or its `range`): within one bucket and
    /// whole, by reusing the blob (no bytes move); otherwise streamed through a pipe.
    pub(crate) async fn copy_blob(
        &self,
        source: (&str, &str, BlobId),
        target: (&str, &[u8]),
        range: Option<Range<u64>>,
        options: PutOptions,
    ) -> S3Result<PutReceipt> {
        let (source_bucket, source_key, blob_id) = source;
        let (target_bucket, target_key) = target;
        if range.is_none() && source_bucket == target_bucket {
            let parts = [ComposePart::blob(blob_id)];
            return match self
                .client
                .put_composed(target_bucket, target_key, &parts, options)
                .await
            {
                Ok((receipt, _)) => Ok(receipt),
                Err(error) => Err(self.object_error(source_bucket, error).await),
            };
        }
        let _slot = self.transfer_slot().await;
        let mut reader = match self
            .client
            .get_range_stream(
                source_bucket,
                source_key.as_bytes(),
                range.unwrap_or(0..u64::MAX),
            )
            .await
        {
            Ok(reader) => reader,
            Err(error) => return Err(self.object_error(source_bucket, error).await),
        };
        let (mut sink, pipe) = tokio::io::duplex(COPY_PIPE_BYTES);
        let producer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            while let Some(chunk) = reader.next_chunk().await {
                let chunk = chunk?;
                if sink.write_all(&chunk).await.is_err() {
                    // The put stopped reading; its own error says why.
                    return Ok(());
                }
            }
            let _ = sink.shutdown().await;
            Ok::<(), ClientError>(())
        });
        let put = self
            .client
            .put_stream(target_bucket, target_key, pipe, options)
            .await;
        let produced = producer.await.expect("copy reader task panicked");
        match (put, produced) {
            (Ok(receipt), Ok(())) => Ok(receipt),
            (_, Err(error)) | (Err(error), Ok(())) => {
                Err(self.object_error(target_bucket, error).await)
            }
        }
    }

    pub(crate) async fn list_upload_parts(
        &self,
        input: ListPartsInput,
    ) -> S3Result<ListPartsOutput> {
        self.load_upload(&input.bucket, &input.key, &input.upload_id)
            .await?;
        let max_parts = input.max_parts.unwrap_or(1000).clamp(1, 1000) as usize;
        let marker = input.part_number_marker.unwrap_or(0);
        let continuation = (marker > 0).then(|| part_key(&input.upload_id, marker));
        let prefix = part_prefix(&input.upload_id);
        let (keys, _) = list_keys(
            &self.client,
            &input.bucket,
            &prefix,
            continuation,
            max_parts + 1,
        )
        .await
        .map_err(|error| s3_error(error, Missing::Upload))?;
        let mut numbers: Vec<i32> = keys
            .iter()
            .filter_map(|listed| std::str::from_utf8(&listed.key[prefix.len()..]).ok())
            .filter_map(|number| number.parse().ok())
            .collect();
        let truncated = numbers.len() > max_parts;
        numbers.truncate(max_parts);
        let infos = self
            .stat_parts(&input.bucket, &input.upload_id, &numbers)
            .await?;
        let parts = numbers
            .iter()
            .zip(infos)
            .filter_map(|(&number, info)| {
                let info = info?;
                Some(Part {
                    part_number: Some(number),
                    size: Some(info.size as i64),
                    e_tag: Some(meta::etag(&info.blob_id)),
                    last_modified: Some(meta::timestamp(info.hlc_timestamp)),
                    ..Part::default()
                })
            })
            .collect();
        Ok(ListPartsOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            max_parts: Some(max_parts as i32),
            part_number_marker: input.part_number_marker,
            next_part_number_marker: numbers.last().copied(),
            is_truncated: Some(truncated),
            parts: Some(parts),
            ..ListPartsOutput::default()
        })
    }

    /// The key records of parts `numbers` of an upload (`None`: no such part), in order.
    async fn stat_parts(
        &self,
        bucket: &str,
        upload_id: &str,
        numbers: &[i32],
    ) -> S3Result<Vec<Option<ObjectInfo>>> {
        let mut found = vec![None; numbers.len()];
        let mut tasks = JoinSet::new();
        let mut next = 0;
        loop {
            while tasks.len() < METADATA_INFLIGHT_MAX && next < numbers.len() {
                let (client, bucket) = (self.client.clone(), bucket.to_owned());
                let key = part_key(upload_id, numbers[next]);
                let slot = next;
                tasks.spawn(async move { (slot, client.stat(&bucket, &key).await) });
                next += 1;
            }
            let Some(joined) = tasks.join_next().await else {
                break;
            };
            match joined.expect("part stat task panicked") {
                (slot, Ok(info)) => found[slot] = Some(info),
                (_, Err(ClientError::NotFound(_))) => {}
                (_, Err(error)) => return Err(s3_error(error, Missing::Upload)),
            }
        }
        Ok(found)
    }

    pub(crate) async fn complete_upload(
        &self,
        input: CompleteMultipartUploadInput,
    ) -> S3Result<CompleteMultipartUploadOutput> {
        let metadata = self
            .load_upload(&input.bucket, &input.key, &input.upload_id)
            .await?;
        let requested = input
            .multipart_upload
            .and_then(|upload| upload.parts)
            .unwrap_or_default();
        if requested.is_empty() {
            return Err(s3_error!(
                MalformedXML,
                "CompleteMultipartUpload names no parts"
            ));
        }
        let mut numbers = Vec::with_capacity(requested.len());
        for part in &requested {
            let number = part
                .part_number
                .ok_or_else(|| s3_error!(InvalidPart, "a part has no PartNumber"))?;
            if numbers.last().is_some_and(|&last| number <= last) {
                return Err(s3_error!(
                    InvalidPartOrder,
                    "The list of parts was not in ascending order."
                ));
            }
            numbers.push(number);
        }
        let infos = self
            .stat_parts(&input.bucket, &input.upload_id, &numbers)
            .await?;
        let mut blobs = Vec::with_capacity(infos.len());
        for (index, (part, info)) in requested.iter().zip(&infos).enumerate() {
            let number = numbers[index];
            let Some(info) = info else {
                return Err(s3_error!(InvalidPart, "part {number} was not uploaded"));
            };
            if let Some(etag) = &part.e_tag
                && etag_value(etag) != meta::etag_text(&info.blob_id)
            {
                return Err(s3_error!(
                    InvalidPart,
                    "part {number}'s ETag does not match"
                ));
            }
            if index + 1 < infos.len() && info.size < PART_BYTES_MIN {
                return Err(s3_error!(
                    EntityTooSmall,
                    "part {number} is {} bytes; every part but the last is at least {PART_BYTES_MIN}",
                    info.size
                ));
            }
            blobs.push(ComposePart {
                blob_id: info.blob_id,
                hashes: decode_hashes(&info.metadata),
            });
        }
        let options = crate::gateway::put_options(metadata);
        // Composing may read the parts back or copy them: it counts as a transfer.
        let slot = self.transfer_slot().await;
        let (receipt, mode) = match self
            .client
            .put_composed(&input.bucket, input.key.as_bytes(), &blobs, options)
            .await
        {
            Ok(done) => done,
            Err(error) => return Err(self.object_error(&input.bucket, error).await),
        };
        drop(slot);
        tracing::debug!(bucket = %input.bucket, key = %input.key, parts = blobs.len(), ?mode, "multipart upload completed");
        self.delete_upload(&input.bucket, &input.upload_id).await;
        Ok(CompleteMultipartUploadOutput {
            bucket: Some(input.bucket.clone()),
            key: Some(input.key.clone()),
            e_tag: Some(meta::etag(&receipt.blob_id)),
            location: Some(format!("/{}/{}", input.bucket, input.key)),
            ..CompleteMultipartUploadOutput::default()
        })
    }

    pub(crate) async fn abort_upload(&self, bucket: &str, upload_id: &str) -> S3Result<()> {
        let valid_id = upload_id.len() == 32 && upload_id.bytes().all(|b| b.is_ascii_hexdigit());
        let exists = valid_id
            && match self.client.stat(bucket, &upload_key(upload_id)).await {
                Ok(_) => true,
                Err(ClientError::NotFound(_)) => false,
                Err(error) => return Err(s3_error(error, Missing::Upload)),
            };
        if !exists {
            return Err(no_such_upload());
        }
        self.delete_upload(bucket, upload_id).await;
        Ok(())
    }

    /// Deletes an upload's parts and record (failures are logged: they leave only hidden
    /// keys behind).
    async fn delete_upload(&self, bucket: &str, upload_id: &str) {
        if let Err(error) = delete_prefix(&self.client, bucket, &part_prefix(upload_id)).await {
            tracing::warn!(%error, bucket, upload_id, "could not delete the parts of an upload");
        }
        if let Err(error) = self.client.delete(bucket, &upload_key(upload_id)).await {
            tracing::warn!(%error, bucket, upload_id, "could not delete an upload record");
        }
    }

    /// Deletes every unfinished upload of `bucket` (before the bucket itself goes).
    pub(crate) async fn abort_all_uploads(&self, bucket: &str) -> S3Result<()> {
        delete_prefix(&self.client, bucket, &upload_prefix())
            .await
            .map_err(|error| s3_error(error, Missing::Bucket))
    }

    /// Whether `bucket` holds any object (uploads in progress do not count).
    pub(crate) async fn bucket_has_objects(&self, bucket: &str) -> S3Result<bool> {
        let (keys, _) = list_keys(&self.client, bucket, b"", None, 1)
            .await
            .map_err(|error| s3_error(error, Missing::Bucket))?;
        Ok(keys
            .first()
            .is_some_and(|listed| listed.key.first() != Some(&HIDDEN_KEY_BYTE)))
    }
}

/// Deletes every key of `namespace` starting with `prefix`.
async fn delete_prefix(client: &Client, namespace: &str, prefix: &[u8]) -> Result<(), ClientError> {
    loop {
        let (keys, _) = list_keys(client, namespace, prefix, None, 1000).await?;
        if keys.is_empty() {
            return Ok(());
        }
        let mut tasks = JoinSet::new();
        for listed in keys {
            if tasks.len() >= METADATA_INFLIGHT_MAX
                && let Some(joined) = tasks.join_next().await
            {
                joined.expect("delete task panicked")?;
            }
            let (client, namespace) = (client.clone(), namespace.to_owned());
            tasks.spawn(async move { client.delete(&namespace, &listed.key).await });
        }
        while let Some(joined) = tasks.join_next().await {
            joined.expect("delete task panicked")?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_hashes_round_trip_through_metadata_and_oversized_ones_are_dropped() {
        let hashes = PartHashes {
            offset: 64 << 20,
            stripe_cvs: (0..40u8).map(|i| [i; 32]).collect(),
        };
        let metadata = encode_hashes(&hashes).unwrap();
        assert!(metadata.values().all(|value| value.len() <= 2048));
        assert_eq!(decode_hashes(&metadata), Some(hashes));
        let too_many = PartHashes {
            offset: 0,
            stripe_cvs: vec![[0; 32]; HASHES_PER_ENTRY * HASHES_ENTRIES_MAX + 1],
        };
        assert_eq!(encode_hashes(&too_many), None);
        assert_eq!(decode_hashes(&UserMetadata::new()), None);
    }

    #[test]
    fn hidden_keys_cannot_be_named_by_s3() {
        // S3 keys are UTF-8, in which 0xFF never occurs.
        assert!(std::str::from_utf8(&upload_key("00")).is_err());
        assert!(part_key("ab", 7).ends_with(b"/00007"));
    }
}
