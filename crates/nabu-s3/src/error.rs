//! Client errors to S3 errors, in one place.
//!
//! `NotFound` means different things per operation (NoSuchKey, NoSuchBucket, NoSuchUpload),
//! so callers name what was missing with [`Missing`]; everything else maps by kind: an
//! unreadable blob or metadata, or a write that could not be made durable, is
//! `ServiceUnavailable` (503, clients retry); corruption is `InternalError` and logged at
//! ERROR (a human must look).

use nabu_client::ClientError;
use s3s::{S3Error, S3ErrorCode, s3_error};

use crate::body::BodyError;

/// What a `NotFound` stands for in the operation at hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// The object key.
    Key,
    /// The bucket.
    Bucket,
    /// The multipart upload.
    Upload,
}

/// The S3 error for a client error.
pub fn s3_error(error: ClientError, missing: Missing) -> S3Error {
    match error {
        ClientError::NotFound(what) => match missing {
            Missing::Key => s3_error!(NoSuchKey, "The specified key does not exist."),
            Missing::Bucket => s3_error!(NoSuchBucket, "The specified bucket does not exist."),
            Missing::Upload => {
                s3_error!(NoSuchUpload, "The specified upload does not exist: {what}")
            }
        },
        ClientError::InvalidArgument(message) if message.starts_with("metadata") => {
            s3_error!(MetadataTooLarge, "{message}")
        }
        ClientError::InvalidArgument(message) => s3_error!(InvalidArgument, "{message}"),
        ClientError::Io { source, context } => match source
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<BodyError>())
        {
            Some(body) => body.to_s3(),
            None => {
                tracing::warn!(%context, error = %source, "gateway I/O failed");
                s3_error!(InternalError, "{context}: {source}")
            }
        },
        error @ (ClientError::Corrupt { .. } | ClientError::Format { .. }) => {
            tracing::error!(%error, "stored data failed verification");
            S3Error::with_message(S3ErrorCode::InternalError, error.to_string())
        }
        error => {
            tracing::warn!(%error, "cluster unavailable for an S3 request");
            S3Error::with_message(S3ErrorCode::ServiceUnavailable, error.to_string())
        }
    }
}
