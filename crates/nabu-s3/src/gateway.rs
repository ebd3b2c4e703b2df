//! [`Gateway`]: the S3 operations over the ring-aware client. Buckets are namespaces; an
//! object is a key record and its blob. Listing is in `list`, multipart uploads in
//! `multipart`; this file holds buckets and single objects.

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use nabu_client::{Client, ClientError, PutOptions};
use s3s::dto::*;
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::body::{BodyReader, ChunkStream, ExpectedChecksums};
use crate::error::{Missing, s3_error};
use crate::meta::{self, ObjectHeaders};

/// The largest object one PutObject (or one part) may carry: 5 GiB, as in S3.
pub const PUT_BYTES_MAX: u64 = 5 << 30;
/// Deletions a DeleteObjects request runs at once.
const DELETES_INFLIGHT_MAX: usize = 16;
/// Keys a DeleteObjects request may name, as in S3.
const DELETE_OBJECTS_MAX: usize = 1000;

/// Object bodies in flight at once per gateway, PUTs and GETs together. Each holds up to
/// about `stripes_inflight_max` stripes (× (K+M)/K for a PUT), so this bounds the gateway's
/// buffer memory (about 3 GiB with the defaults); more requests wait for a slot.
pub const TRANSFERS_INFLIGHT_MAX: usize = 128;

/// The S3 API over a NabuStore cluster (see the crate docs).
#[derive(Debug, Clone)]
pub struct Gateway {
    pub(crate) client: Client,
    /// Slots for object bodies in flight (`TRANSFERS_INFLIGHT_MAX`).
    pub(crate) transfers: Arc<Semaphore>,
}

impl Gateway {
    /// A gateway over `client`.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            transfers: Arc::new(Semaphore::new(TRANSFERS_INFLIGHT_MAX)),
        }
    }

    /// A slot for one object body in flight.
    pub(crate) async fn transfer_slot(&self) -> OwnedSemaphorePermit {
        self.transfers
            .clone()
            .acquire_owned()
            .await
            .expect("the transfer semaphore is never closed")
    }

    /// `NoSuchBucket` unless `bucket` exists now.
    pub(crate) async fn require_bucket(&self, bucket: &str) -> S3Result<()> {
        match self.client.namespace_exists(bucket).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(s3_error!(
                NoSuchBucket,
                "The specified bucket does not exist."
            )),
            Err(error) => Err(s3_error(error, Missing::Bucket)),
        }
    }

    /// The error for a failed object operation: a missing key in a missing bucket is
    /// `NoSuchBucket`.
    pub(crate) async fn object_error(&self, bucket: &str, error: ClientError) -> S3Error {
        if matches!(error, ClientError::NotFound(_))
            && let Err(missing_bucket) = self.require_bucket(bucket).await
        {
            return missing_bucket;
        }
        s3_error(error, Missing::Key)
    }

    /// Streams a request body into `key`, verifying its checksums; visible only if they match.
    pub(crate) async fn put_body(
        &self,
        bucket: &str,
        key: &[u8],
        reader: &mut BodyReader,
        options: PutOptions,
    ) -> S3Result<(nabu_client::PutReceipt, Checksum)> {
        let _slot = self.transfer_slot().await;
        let receipt = self
            .client
            .put_stream(bucket, key, &mut *reader, options)
            .await;
        match receipt {
            Ok(receipt) => Ok((receipt, reader.computed().cloned().unwrap_or_default())),
            Err(error) => Err(self.object_error(bucket, error).await),
        }
    }
}

/// The checksums a request names, and its trailer.
pub(crate) fn expected_checksums<T>(
    request: &S3Request<T>,
    fields: [&Option<String>; 5],
    content_md5: &Option<String>,
) -> ExpectedChecksums {
    let trailer = request
        .headers
        .get("x-amz-trailer")
        .and_then(|value| value.to_str().ok())
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| name.starts_with("x-amz-checksum-"))
        .zip(request.trailing_headers.clone());
    let [crc32, crc32c, crc64nvme, sha1, sha256] = fields;
    ExpectedChecksums {
        crc32: crc32.clone(),
        crc32c: crc32c.clone(),
        crc64nvme: crc64nvme.clone(),
        sha1: sha1.clone(),
        sha256: sha256.clone(),
        md5: content_md5.clone(),
        trailer,
    }
}

/// The checksums an object was uploaded with, when the request has
/// `x-amz-checksum-mode: ENABLED` (none otherwise, and none for an object uploaded without).
fn checksum_if_asked(mode: Option<&ChecksumMode>, stored: &nabu_client::UserMetadata) -> Checksum {
    if mode.is_none_or(|mode| mode.as_str() != ChecksumMode::ENABLED) {
        return Checksum::default();
    }
    let mut checksum = meta::stored_checksum(stored);
    let any = [
        &checksum.checksum_crc32,
        &checksum.checksum_crc32c,
        &checksum.checksum_crc64nvme,
        &checksum.checksum_sha1,
        &checksum.checksum_sha256,
    ]
    .iter()
    .any(|value| value.is_some());
    if any {
        checksum.checksum_type = Some(ChecksumType::from_static(ChecksumType::FULL_OBJECT));
    }
    checksum
}

/// The options of a put of a whole object.
pub(crate) fn put_options(metadata: nabu_client::UserMetadata) -> PutOptions {
    PutOptions {
        metadata,
        ..PutOptions::default()
    }
}

/// Refuses a declared length over `PUT_BYTES_MAX`.
pub(crate) fn check_length(content_length: Option<i64>) -> S3Result<()> {
    match content_length {
        Some(length) if length as u64 > PUT_BYTES_MAX => Err(s3_error!(
            EntityTooLarge,
            "Your proposed upload exceeds the maximum allowed object size of {PUT_BYTES_MAX} bytes."
        )),
        _ => Ok(()),
    }
}

/// Valid bucket names among namespaces (`kv` and `_…` are not).
fn is_bucket_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

#[async_trait::async_trait]
impl S3 for Gateway {
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let bucket = &req.input.bucket;
        let exists = self.client.namespace_exists(bucket).await;
        if exists.map_err(|error| s3_error(error, Missing::Bucket))? {
            return Err(s3_error!(
                BucketAlreadyOwnedByYou,
                "Your previous request to create the named bucket succeeded and you already own it."
            ));
        }
        let durability = self
            .client
            .namespace_policy("default")
            .await
            .map_err(|error| s3_error(error, Missing::Bucket))?;
        self.client
            .create_namespace(bucket, durability)
            .await
            .map_err(|error| s3_error(error, Missing::Bucket))?;
        Ok(S3Response::new(CreateBucketOutput {
            location: Some(format!("/{bucket}")),
        }))
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.require_bucket(&req.input.bucket).await?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.require_bucket(&req.input.bucket).await?;
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }

    async fn list_buckets(
        &self,
        _req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let namespaces = self
            .client
            .list_namespaces()
            .await
            .map_err(|error| s3_error(error, Missing::Bucket))?;
        let buckets = namespaces
            .into_iter()
            .filter(|namespace| is_bucket_name(&namespace.name))
            .map(|namespace| Bucket {
                name: Some(namespace.name),
                creation_date: Some(if namespace.hlc_timestamp == 0 {
                    Timestamp::from(UNIX_EPOCH)
                } else {
                    meta::timestamp(namespace.hlc_timestamp)
                }),
                bucket_region: None,
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(Owner {
                display_name: Some("nabu".into()),
                id: Some("nabu".into()),
            }),
            ..ListBucketsOutput::default()
        }))
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        let bucket = &req.input.bucket;
        self.require_bucket(bucket).await?;
        if self.bucket_has_objects(bucket).await? {
            return Err(s3_error!(
                BucketNotEmpty,
                "The bucket you tried to delete is not empty."
            ));
        }
        self.abort_all_uploads(bucket).await?;
        match self.client.delete_namespace(bucket).await {
            Ok(()) => Ok(S3Response::new(DeleteBucketOutput::default())),
            Err(ClientError::InvalidArgument(message)) => Err(s3_error!(AccessDenied, "{message}")),
            Err(error) => Err(s3_error(error, Missing::Bucket)),
        }
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let input = &req.input;
        check_length(input.content_length)?;
        self.require_bucket(&input.bucket).await?;
        let headers = ObjectHeaders {
            content_type: input.content_type.clone(),
            content_encoding: input.content_encoding.clone(),
            content_disposition: input.content_disposition.clone(),
            content_language: input.content_language.clone(),
            cache_control: input.cache_control.clone(),
        };
        let metadata = meta::to_stored(&headers, input.metadata.as_ref())?;
        let fields = [
            &input.checksum_crc32,
            &input.checksum_crc32c,
            &input.checksum_crc64nvme,
            &input.checksum_sha1,
            &input.checksum_sha256,
        ];
        let expected = expected_checksums(&req, fields, &input.content_md5);
        let (bucket, key) = (input.bucket.clone(), input.key.clone());
        let mut req = req;
        let mut reader = BodyReader::new(req.input.body.take(), expected, PUT_BYTES_MAX);
        // The checksums verified against the body go into the key record, for GETs and HEADs
        // with `x-amz-checksum-mode: ENABLED`.
        let verified = reader.computed_later();
        let options = PutOptions {
            metadata_at_end: Some(Arc::new(move || {
                verified
                    .get()
                    .map(meta::checksum_entries)
                    .unwrap_or_default()
            })),
            ..put_options(metadata)
        };
        let (receipt, checksum) = self
            .put_body(&bucket, key.as_bytes(), &mut reader, options)
            .await?;
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(meta::etag(&receipt.blob_id)),
            checksum_crc32: checksum.checksum_crc32,
            checksum_crc32c: checksum.checksum_crc32c,
            checksum_crc64nvme: checksum.checksum_crc64nvme,
            checksum_sha1: checksum.checksum_sha1,
            checksum_sha256: checksum.checksum_sha256,
            size: Some(receipt.size as i64),
            ..PutObjectOutput::default()
        }))
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let input = &req.input;
        let (bucket, key) = (&input.bucket, &input.key);
        let slot = self.transfer_slot().await;
        // One key record and one manifest: headers and body describe the same version.
        let object = match self.client.open(bucket, key.as_bytes()).await {
            Ok(object) => object,
            Err(error) => return Err(self.object_error(bucket, error).await),
        };
        let info = &object.info;
        check_preconditions(
            &meta::etag_text(&info.blob_id),
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
        )?;
        let range = match input.range {
            None => None,
            Some(range) => Some(range.check(info.size).map_err(|_| {
                s3_error!(
                    InvalidRange,
                    "The requested range is not satisfiable (object of {} bytes)",
                    info.size
                )
            })?),
        };
        let wanted = range.clone().unwrap_or(0..info.size);
        let mut reader = object
            .reader(wanted.clone())
            .map_err(|error| s3_error(error, Missing::Key))?;
        // The first piece is read before the headers go out, so an unreadable object gets
        // an S3 error instead of a cut-off body.
        let first = match reader.next_chunk().await {
            None => bytes::Bytes::new(),
            Some(Ok(first)) => first,
            Some(Err(error)) => return Err(self.object_error(bucket, error).await),
        };
        let (blob_id, total) = (info.blob_id, info.size);
        let (headers, user) = meta::from_stored(&info.metadata);
        // Checksums describe the whole object: none for a range, as S3 does.
        let checksum = match &range {
            None => checksum_if_asked(input.checksum_mode.as_ref(), &info.metadata),
            Some(_) => Checksum::default(),
        };
        let content_range = range.map(|r| format!("bytes {}-{}/{total}", r.start, r.end - 1));
        Ok(S3Response::new(GetObjectOutput {
            checksum_crc32: checksum.checksum_crc32,
            checksum_crc32c: checksum.checksum_crc32c,
            checksum_crc64nvme: checksum.checksum_crc64nvme,
            checksum_sha1: checksum.checksum_sha1,
            checksum_sha256: checksum.checksum_sha256,
            checksum_type: checksum.checksum_type,
            body: Some(ChunkStream::spawn(first, reader, slot)),
            content_length: Some((wanted.end - wanted.start) as i64),
            content_range,
            accept_ranges: Some("bytes".into()),
            e_tag: Some(meta::etag(&blob_id)),
            last_modified: Some(meta::timestamp(info.hlc_timestamp)),
            metadata: user,
            content_type: headers.content_type,
            content_encoding: headers.content_encoding,
            content_disposition: headers.content_disposition,
            content_language: headers.content_language,
            cache_control: headers.cache_control,
            ..GetObjectOutput::default()
        }))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let input = &req.input;
        let info = match self.client.stat(&input.bucket, input.key.as_bytes()).await {
            Ok(info) => info,
            Err(error) => return Err(self.object_error(&input.bucket, error).await),
        };
        check_preconditions(
            &meta::etag_text(&info.blob_id),
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
        )?;
        let (headers, user) = meta::from_stored(&info.metadata);
        let checksum = checksum_if_asked(input.checksum_mode.as_ref(), &info.metadata);
        Ok(S3Response::new(HeadObjectOutput {
            checksum_crc32: checksum.checksum_crc32,
            checksum_crc32c: checksum.checksum_crc32c,
            checksum_crc64nvme: checksum.checksum_crc64nvme,
            checksum_sha1: checksum.checksum_sha1,
            checksum_sha256: checksum.checksum_sha256,
            checksum_type: checksum.checksum_type,
            content_length: Some(info.size as i64),
            accept_ranges: Some("bytes".into()),
            e_tag: Some(meta::etag(&info.blob_id)),
            last_modified: Some(meta::timestamp(info.hlc_timestamp)),
            metadata: user,
            content_type: headers.content_type,
            content_encoding: headers.content_encoding,
            content_disposition: headers.content_disposition,
            content_language: headers.content_language,
            cache_control: headers.cache_control,
            ..HeadObjectOutput::default()
        }))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let input = &req.input;
        if let Err(error) = self
            .client
            .delete(&input.bucket, input.key.as_bytes())
            .await
        {
            return Err(s3_error(error, Missing::Bucket));
        }
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let input = req.input;
        self.require_bucket(&input.bucket).await?;
        let objects = input.delete.objects;
        if objects.len() > DELETE_OBJECTS_MAX {
            return Err(s3_error!(
                MalformedXML,
                "a DeleteObjects request names at most {DELETE_OBJECTS_MAX} keys"
            ));
        }
        let quiet = input.delete.quiet.unwrap_or(false);
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        let mut tasks = tokio::task::JoinSet::new();
        let mut pending = objects.into_iter().map(|object| object.key);
        loop {
            while tasks.len() < DELETES_INFLIGHT_MAX {
                let Some(key) = pending.next() else { break };
                let (client, bucket) = (self.client.clone(), input.bucket.clone());
                tasks.spawn(async move {
                    let result = client.delete(&bucket, key.as_bytes()).await;
                    (key, result)
                });
            }
            let Some(joined) = tasks.join_next().await else {
                break;
            };
            let (key, result) = joined.expect("delete task panicked");
            match result {
                Ok(()) if quiet => {}
                Ok(()) => deleted.push(DeletedObject {
                    key: Some(key),
                    ..DeletedObject::default()
                }),
                Err(error) => {
                    let error = s3_error(error, Missing::Key);
                    errors.push(Error {
                        code: Some(error.code().as_str().to_owned()),
                        key: Some(key),
                        message: error.message().map(str::to_owned),
                        version_id: None,
                    });
                }
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: Some(errors),
            ..DeleteObjectsOutput::default()
        }))
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let input = &req.input;
        let (source_bucket, source_key) = copy_source(&input.copy_source)?;
        let info = match self
            .client
            .stat(&source_bucket, source_key.as_bytes())
            .await
        {
            Ok(info) => info,
            Err(error) => return Err(self.object_error(&source_bucket, error).await),
        };
        self.require_bucket(&input.bucket).await?;
        let replace = input
            .metadata_directive
            .as_ref()
            .is_some_and(|directive| directive.as_str() == MetadataDirective::REPLACE);
        let metadata = if replace {
            let headers = ObjectHeaders {
                content_type: input.content_type.clone(),
                content_encoding: input.content_encoding.clone(),
                content_disposition: input.content_disposition.clone(),
                content_language: input.content_language.clone(),
                cache_control: input.cache_control.clone(),
            };
            // New headers and user metadata; the same bytes, so the same checksums.
            let mut stored = meta::to_stored(&headers, input.metadata.as_ref())?;
            stored.extend(meta::checksum_entries_of(&info.metadata));
            stored
        } else {
            info.metadata.clone()
        };
        let receipt = self
            .copy_blob(
                (&source_bucket, &source_key, info.blob_id),
                (&input.bucket, input.key.as_bytes()),
                None,
                put_options(metadata),
            )
            .await?;
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(meta::etag(&receipt.blob_id)),
                last_modified: Some(meta::timestamp(receipt.hlc_timestamp)),
                ..CopyObjectResult::default()
            }),
            ..CopyObjectOutput::default()
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        self.require_bucket(&req.input.bucket).await?;
        let output = crate::list::list_objects_v2(&self.client, req.input).await?;
        Ok(S3Response::new(output))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        Ok(S3Response::new(self.create_upload(req.input).await?))
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        Ok(S3Response::new(self.upload_part_body(req).await?))
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        Ok(S3Response::new(
            self.upload_part_from_copy(req.input).await?,
        ))
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        Ok(S3Response::new(self.list_upload_parts(req.input).await?))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        Ok(S3Response::new(self.complete_upload(req.input).await?))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.abort_upload(&req.input.bucket, &req.input.upload_id)
            .await?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }
}

/// `If-Match` / `If-None-Match` against the object's ETag.
fn check_preconditions(
    etag: &str,
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
) -> S3Result<()> {
    let matches = |condition: &ETagCondition| match condition {
        ETagCondition::Any => true,
        ETagCondition::ETag(tag) => tag.value() == etag,
    };
    if let Some(condition) = if_match
        && !matches(condition)
    {
        return Err(s3_error!(
            PreconditionFailed,
            "At least one of the pre-conditions you specified did not hold"
        ));
    }
    if let Some(condition) = if_none_match
        && matches(condition)
    {
        return Err(S3Error::new(S3ErrorCode::NotModified));
    }
    Ok(())
}

/// The bucket and key of a copy source.
pub(crate) fn copy_source(source: &CopySource) -> S3Result<(String, String)> {
    match source {
        CopySource::Bucket { bucket, key, .. } => Ok((bucket.to_string(), key.to_string())),
        _ => Err(s3_error!(
            NotImplemented,
            "only bucket/key copy sources are supported"
        )),
    }
}
