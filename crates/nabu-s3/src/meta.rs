//! What S3 says about an object, kept in the key record's user metadata, and the derived
//! headers (ETag, Last-Modified).
//!
//! Entry names: S3 user metadata as `x-amz-meta-<name>` (lower case, as S3 folds it), and
//! the stored standard headers under their own lower-case names (`content-type`,
//! `content-encoding`, `content-disposition`, `content-language`, `cache-control`). Other
//! entries (written by `nabu put` or other tools) are not shown to S3 clients.

use std::time::{Duration, UNIX_EPOCH};

use nabu_client::UserMetadata;
use nabu_core::id::BlobId;
use s3s::dto::{Checksum, ETag, Metadata, Timestamp};
use s3s::{S3Result, s3_error};

/// The prefix of user metadata entries.
const USER_PREFIX: &str = "x-amz-meta-";
/// S3's limit on user metadata: names and values together, in bytes.
pub const USER_METADATA_BYTES_MAX: usize = 2048;

/// The standard headers an object keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectHeaders {
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// `Content-Encoding`.
    pub content_encoding: Option<String>,
    /// `Content-Disposition`.
    pub content_disposition: Option<String>,
    /// `Content-Language`.
    pub content_language: Option<String>,
    /// `Cache-Control`.
    pub cache_control: Option<String>,
}

impl ObjectHeaders {
    fn entries(&self) -> [(&'static str, &Option<String>); 5] {
        [
            ("content-type", &self.content_type),
            ("content-encoding", &self.content_encoding),
            ("content-disposition", &self.content_disposition),
            ("content-language", &self.content_language),
            ("cache-control", &self.cache_control),
        ]
    }
}

/// The stored metadata for an object with `headers` and S3 user metadata `user`; refuses
/// user metadata over S3's 2 KiB.
pub fn to_stored(headers: &ObjectHeaders, user: Option<&Metadata>) -> S3Result<UserMetadata> {
    let mut stored = UserMetadata::new();
    for (name, value) in headers.entries() {
        if let Some(value) = value {
            stored.insert(name.to_owned(), value.clone());
        }
    }
    let mut user_bytes = 0;
    for (name, value) in user.into_iter().flatten() {
        user_bytes += name.len() + value.len();
        stored.insert(
            format!("{USER_PREFIX}{}", name.to_lowercase()),
            value.clone(),
        );
    }
    if user_bytes > USER_METADATA_BYTES_MAX {
        return Err(s3_error!(
            MetadataTooLarge,
            "user metadata is {user_bytes} bytes, at most {USER_METADATA_BYTES_MAX}"
        ));
    }
    Ok(stored)
}

/// The metadata entries of an object's verified upload checksums (`x-amz-checksum-*` as the
/// client sent them, base64); not user metadata, so never returned as `x-amz-meta-*`.
const CHECKSUM_PREFIX: &str = "nabu-checksum-";

/// The stored entries for the checksums an upload was verified against.
pub fn checksum_entries(checksum: &Checksum) -> UserMetadata {
    let mut stored = UserMetadata::new();
    for (name, value) in [
        ("crc32", &checksum.checksum_crc32),
        ("crc32c", &checksum.checksum_crc32c),
        ("crc64nvme", &checksum.checksum_crc64nvme),
        ("sha1", &checksum.checksum_sha1),
        ("sha256", &checksum.checksum_sha256),
    ] {
        if let Some(value) = value {
            stored.insert(format!("{CHECKSUM_PREFIX}{name}"), value.clone());
        }
    }
    stored
}

/// The checksums stored by [`checksum_entries`], for a GET or HEAD with
/// `x-amz-checksum-mode: ENABLED`.
pub fn stored_checksum(stored: &UserMetadata) -> Checksum {
    let get = |name: &str| stored.get(&format!("{CHECKSUM_PREFIX}{name}")).cloned();
    Checksum {
        checksum_crc32: get("crc32"),
        checksum_crc32c: get("crc32c"),
        checksum_crc64nvme: get("crc64nvme"),
        checksum_sha1: get("sha1"),
        checksum_sha256: get("sha256"),
        ..Checksum::default()
    }
}

/// The checksum entries of `stored`, to carry to a copy of the same bytes.
pub fn checksum_entries_of(stored: &UserMetadata) -> UserMetadata {
    stored
        .iter()
        .filter(|(name, _)| name.starts_with(CHECKSUM_PREFIX))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

/// The standard headers and the S3 user metadata (if any) in stored metadata.
pub fn from_stored(stored: &UserMetadata) -> (ObjectHeaders, Option<Metadata>) {
    let get = |name: &str| stored.get(name).cloned();
    let headers = ObjectHeaders {
        content_type: get("content-type"),
        content_encoding: get("content-encoding"),
        content_disposition: get("content-disposition"),
        content_language: get("content-language"),
        cache_control: get("cache-control"),
    };
    let user: Metadata = stored
        .iter()
        .filter_map(|(name, value)| {
            let name = name.strip_prefix(USER_PREFIX)?;
            Some((name.to_owned(), value.clone()))
        })
        .collect();
    (headers, (!user.is_empty()).then_some(user))
}

/// The ETag of a blob: the first 16 bytes of its BLAKE3 id in hex (MD5-shaped, and equal
/// for equal bytes, as an MD5 ETag is).
pub fn etag(blob_id: &BlobId) -> ETag {
    ETag::Strong(etag_text(blob_id))
}

/// The ETag's value without quotes.
pub fn etag_text(blob_id: &BlobId) -> String {
    blob_id.as_bytes()[..16]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// An HLC timestamp's wall-clock part (bits 16..64: milliseconds since the epoch).
pub fn timestamp(hlc_timestamp: u64) -> Timestamp {
    let millis = hlc_timestamp >> 16;
    Timestamp::from(UNIX_EPOCH + Duration::from_millis(millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_and_foreign_entries_stay_hidden() {
        let headers = ObjectHeaders {
            content_type: Some("application/json".into()),
            ..ObjectHeaders::default()
        };
        let user = Metadata::from([("Run".to_owned(), "7".to_owned())]);
        let mut stored = to_stored(&headers, Some(&user)).unwrap();
        assert_eq!(stored.get("x-amz-meta-run").map(String::as_str), Some("7"));
        stored.insert("nabu-tool".into(), "x".into());
        let (back, user) = from_stored(&stored);
        assert_eq!(back, headers);
        assert_eq!(user.unwrap(), Metadata::from([("run".into(), "7".into())]));
    }

    #[test]
    fn user_metadata_over_two_kib_is_refused() {
        let user = Metadata::from([("big".to_owned(), "x".repeat(USER_METADATA_BYTES_MAX))]);
        let error = to_stored(&ObjectHeaders::default(), Some(&user)).unwrap_err();
        assert_eq!(error.code().as_str(), "MetadataTooLarge");
    }

    #[test]
    fn etags_are_32_hex_digits_of_the_blob_id() {
        let id = BlobId::of(b"abc");
        let text = etag_text(&id);
        assert_eq!(text.len(), 32);
        assert!(id.to_string().starts_with(&text));
    }
}
