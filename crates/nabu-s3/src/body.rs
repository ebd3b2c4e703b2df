//! Request and response bodies.
//!
//! [`BodyReader`] turns an S3 request body (already de-framed from aws-chunked by `s3s`)
//! into the `AsyncRead` a streaming put consumes, computing the checksums the client sent
//! (`x-amz-checksum-*` as headers or as aws-chunked trailers, and `Content-MD5`) on the way.
//! At the end of the body it compares them and, on a mismatch, fails the read instead of
//! returning end-of-file: the put then fails before its manifest and key record are written,
//! so a corrupted upload never becomes visible.
//!
//! [`ChunkStream`] is the other direction: stripes of a blob, read by a task ahead of the
//! socket through a bounded channel, as the response body of a GET.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use futures_core::Stream;
use nabu_client::{BlobReader, PartHasher, PartHashes};
use s3s::checksum::ChecksumHasher;
use s3s::crypto::{Checksum as _, Crc32, Crc32c, Crc64Nvme, Md5, Sha1, Sha256};
use s3s::dto::{Checksum, StreamingBlob};
use s3s::{S3Error, TrailingHeaders, s3_error};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, mpsc};

/// Stripes a GET reads ahead of the socket (beyond the client's own prefetch window).
const GET_CHUNKS_AHEAD: usize = 2;

/// Why a request body was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BodyError {
    /// A checksum the client sent does not match the bytes.
    #[error("the {algorithm} checksum of the body does not match the one sent")]
    ChecksumMismatch {
        /// `crc32`, `crc32c`, `crc64nvme`, `sha1` or `sha256`.
        algorithm: &'static str,
    },
    /// `Content-MD5` does not match the bytes.
    #[error("the Content-MD5 of the body does not match")]
    Md5Mismatch,
    /// `Content-MD5` is not base64 of 16 bytes.
    #[error("Content-MD5 is not valid")]
    InvalidMd5,
    /// The body is longer than an object (or part) may be.
    #[error("the body exceeds {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// The body could not be read (the client hung up, bad aws-chunked framing).
    #[error("read the request body: {0}")]
    Stream(String),
}

impl BodyError {
    /// The S3 error for it.
    pub fn to_s3(&self) -> S3Error {
        match self {
            BodyError::ChecksumMismatch { .. } => {
                s3_error!(BadDigest, "{self}")
            }
            BodyError::Md5Mismatch => s3_error!(BadDigest, "{self}"),
            BodyError::InvalidMd5 => s3_error!(InvalidDigest, "{self}"),
            BodyError::TooLarge { .. } => s3_error!(EntityTooLarge, "{self}"),
            BodyError::Stream(_) => s3_error!(IncompleteBody, "{self}"),
        }
    }
}

/// The checksums a request carries, base64 as S3 sends them.
#[derive(Debug, Clone, Default)]
pub struct ExpectedChecksums {
    /// `x-amz-checksum-crc32` (and likewise below).
    pub crc32: Option<String>,
    /// `x-amz-checksum-crc32c`.
    pub crc32c: Option<String>,
    /// `x-amz-checksum-crc64nvme`.
    pub crc64nvme: Option<String>,
    /// `x-amz-checksum-sha1`.
    pub sha1: Option<String>,
    /// `x-amz-checksum-sha256`.
    pub sha256: Option<String>,
    /// `Content-MD5`.
    pub md5: Option<String>,
    /// The header named by `x-amz-trailer` (lower case) and where the trailers arrive.
    pub trailer: Option<(String, TrailingHeaders)>,
}

impl ExpectedChecksums {
    fn wants(&self, algorithm: &str, header: &Option<String>) -> bool {
        header.is_some()
            || self
                .trailer
                .as_ref()
                .is_some_and(|(name, _)| name == &format!("x-amz-checksum-{algorithm}"))
    }

    fn hasher(&self) -> ChecksumHasher {
        ChecksumHasher {
            crc32: self.wants("crc32", &self.crc32).then(Crc32::new),
            crc32c: self.wants("crc32c", &self.crc32c).then(Crc32c::new),
            crc64nvme: self
                .wants("crc64nvme", &self.crc64nvme)
                .then(Crc64Nvme::new),
            sha1: self.wants("sha1", &self.sha1).then(Sha1::new),
            sha256: self.wants("sha256", &self.sha256).then(Sha256::new),
        }
    }

    /// The value expected for `algorithm`: its header, else its trailer.
    fn expected(&self, algorithm: &'static str, header: &Option<String>) -> Option<String> {
        if header.is_some() {
            return header.clone();
        }
        let (name, trailers) = self.trailer.as_ref()?;
        if name != &format!("x-amz-checksum-{algorithm}") {
            return None;
        }
        trailers
            .read(|headers| {
                headers
                    .get(name.as_str())
                    .and_then(|value| value.to_str().ok())
                    .map(str::to_owned)
            })
            .flatten()
    }

    /// Compares the computed checksums with the expected ones.
    fn verify(&self, computed: &Checksum, md5: Option<[u8; 16]>) -> Result<(), BodyError> {
        let pairs = [
            ("crc32", &self.crc32, &computed.checksum_crc32),
            ("crc32c", &self.crc32c, &computed.checksum_crc32c),
            ("crc64nvme", &self.crc64nvme, &computed.checksum_crc64nvme),
            ("sha1", &self.sha1, &computed.checksum_sha1),
            ("sha256", &self.sha256, &computed.checksum_sha256),
        ];
        for (algorithm, header, computed) in pairs {
            if let Some(expected) = self.expected(algorithm, header)
                && computed.as_deref() != Some(expected.trim())
            {
                return Err(BodyError::ChecksumMismatch { algorithm });
            }
        }
        if let (Some(expected), Some(md5)) = (&self.md5, md5) {
            let decoded = base64_simd::STANDARD
                .decode_to_vec(expected.trim())
                .map_err(|_| BodyError::InvalidMd5)?;
            if decoded.len() != 16 {
                return Err(BodyError::InvalidMd5);
            }
            if decoded != md5 {
                return Err(BodyError::Md5Mismatch);
            }
        }
        Ok(())
    }
}

/// A request body as `AsyncRead`, verified at its end (see the module docs).
pub struct BodyReader {
    stream: Option<StreamingBlob>,
    pending: Bytes,
    hasher: ChecksumHasher,
    md5: Option<Md5>,
    expected: ExpectedChecksums,
    bytes_read: u64,
    bytes_max: u64,
    /// The checksums computed, once the body ended and matched (shared: the put reads them
    /// into the key record's metadata through [`BodyReader::computed_later`]).
    computed: Arc<OnceLock<Checksum>>,
    /// Stripe chaining values for a later composition (multipart parts).
    part_hasher: Option<PartHasher>,
}

impl std::fmt::Debug for BodyReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyReader")
            .field("bytes_read", &self.bytes_read)
            .field("bytes_max", &self.bytes_max)
            .finish_non_exhaustive()
    }
}

impl BodyReader {
    /// Reads `body` (none: empty), refusing more than `bytes_max` bytes.
    pub fn new(body: Option<StreamingBlob>, expected: ExpectedChecksums, bytes_max: u64) -> Self {
        Self {
            stream: body,
            pending: Bytes::new(),
            hasher: expected.hasher(),
            md5: expected.md5.is_some().then(Md5::new),
            expected,
            bytes_read: 0,
            bytes_max,
            computed: Arc::default(),
            part_hasher: None,
        }
    }

    /// Also computes the stripe chaining values of the body with `hasher`.
    pub fn with_part_hasher(mut self, hasher: Option<PartHasher>) -> Self {
        self.part_hasher = hasher;
        self
    }

    /// The stripe chaining values, once the body was read to its end and matched.
    pub fn take_part_hashes(&mut self) -> Option<PartHashes> {
        self.computed.get()?;
        self.part_hasher.take().map(PartHasher::finish)
    }

    /// The checksums of the whole body, once it was read to its end and matched.
    pub fn computed(&self) -> Option<&Checksum> {
        self.computed.get()
    }

    /// Where the checksums will be once the body ended and matched.
    pub fn computed_later(&self) -> Arc<OnceLock<Checksum>> {
        Arc::clone(&self.computed)
    }

    fn finish(&mut self) -> Result<(), BodyError> {
        let computed = std::mem::take(&mut self.hasher).finalize();
        let md5 = self.md5.take().map(Md5::finalize);
        self.expected.verify(&computed, md5)?;
        let _ = self.computed.set(computed);
        Ok(())
    }
}

fn body_error(error: BodyError) -> io::Error {
    io::Error::other(error)
}

impl AsyncRead for BodyReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.pending.is_empty() {
                let take = buf.remaining().min(this.pending.len());
                buf.put_slice(&this.pending[..take]);
                this.pending.advance(take);
                return Poll::Ready(Ok(()));
            }
            let Some(stream) = this.stream.as_mut() else {
                // The end (or no body at all): verify once.
                if this.computed.get().is_none()
                    && let Err(error) = this.finish()
                {
                    return Poll::Ready(Err(body_error(error)));
                }
                return Poll::Ready(Ok(()));
            };
            match Pin::new(stream).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(bytes))) => {
                    this.bytes_read += bytes.len() as u64;
                    if this.bytes_read > this.bytes_max {
                        let limit = this.bytes_max;
                        return Poll::Ready(Err(body_error(BodyError::TooLarge { limit })));
                    }
                    this.hasher.update(&bytes);
                    if let Some(part_hasher) = &mut this.part_hasher {
                        part_hasher.update(&bytes);
                    }
                    if let Some(md5) = &mut this.md5 {
                        md5.update(&bytes);
                    }
                    this.pending = bytes;
                }
                Poll::Ready(Some(Err(error))) => {
                    let error = BodyError::Stream(error.to_string());
                    return Poll::Ready(Err(body_error(error)));
                }
                Poll::Ready(None) => this.stream = None,
            }
        }
    }
}

/// A GET response body: the pieces of a blob, read ahead by a task.
#[derive(Debug)]
pub struct ChunkStream {
    receiver: mpsc::Receiver<io::Result<Bytes>>,
}

impl ChunkStream {
    /// Streams `first` and then the rest of `reader`, holding `slot` until done. The
    /// reading task stops when the response is dropped (the client hung up).
    pub fn spawn(
        first: Bytes,
        mut reader: BlobReader,
        slot: OwnedSemaphorePermit,
    ) -> StreamingBlob {
        let (sender, receiver) = mpsc::channel(GET_CHUNKS_AHEAD);
        tokio::spawn(async move {
            let _slot = slot;
            if !first.is_empty() && sender.send(Ok(first)).await.is_err() {
                return;
            }
            while let Some(chunk) = reader.next_chunk().await {
                let chunk = chunk.map_err(|error| {
                    tracing::warn!(%error, "GET failed after its headers were sent");
                    io::Error::other(error.to_string())
                });
                let failed = chunk.is_err();
                if sender.send(chunk).await.is_err() || failed {
                    return;
                }
            }
        });
        StreamingBlob::wrap(ChunkStream { receiver })
    }
}

impl Stream for ChunkStream {
    type Item = io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().receiver.poll_recv(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    fn blob(bytes: &'static [u8]) -> Option<StreamingBlob> {
        Some(StreamingBlob::from(s3s::Body::from(Bytes::from_static(
            bytes,
        ))))
    }

    fn base64(bytes: &[u8]) -> String {
        base64_simd::STANDARD.encode_to_string(bytes)
    }

    async fn read(mut reader: BodyReader) -> Result<(Vec<u8>, BodyReader), BodyError> {
        let mut out = Vec::new();
        match reader.read_to_end(&mut out).await {
            Ok(_) => Ok((out, reader)),
            Err(error) => Err(error
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<BodyError>())
                .expect("a body error")
                .clone()),
        }
    }

    #[tokio::test]
    async fn matching_checksums_pass_and_are_reported() {
        let expected = ExpectedChecksums {
            crc32: Some(base64(&Crc32::checksum(b"hello world"))),
            md5: Some(base64(&Md5::checksum(b"hello world"))),
            ..ExpectedChecksums::default()
        };
        let reader = BodyReader::new(blob(b"hello world"), expected.clone(), 100);
        let (bytes, reader) = read(reader).await.unwrap();
        assert_eq!(bytes, b"hello world");
        let computed = reader.computed().unwrap();
        assert_eq!(computed.checksum_crc32, expected.crc32);
        assert_eq!(
            computed.checksum_sha256, None,
            "only what was sent is computed"
        );
    }

    #[tokio::test]
    async fn a_wrong_checksum_fails_the_read_at_the_end() {
        let cases = [
            (
                ExpectedChecksums {
                    crc32c: Some(base64(&Crc32c::checksum(b"other"))),
                    ..ExpectedChecksums::default()
                },
                "crc32c",
            ),
            (
                ExpectedChecksums {
                    sha256: Some(base64(&Sha256::checksum(b"other"))),
                    ..ExpectedChecksums::default()
                },
                "sha256",
            ),
        ];
        for (expected, name) in cases {
            let error = read(BodyReader::new(blob(b"payload"), expected, 100))
                .await
                .unwrap_err();
            assert!(
                matches!(error, BodyError::ChecksumMismatch { algorithm } if algorithm == name),
                "{error:?}"
            );
            assert_eq!(error.to_s3().code().as_str(), "BadDigest");
        }
    }

    #[tokio::test]
    async fn content_md5_is_checked_and_must_be_16_bytes() {
        let wrong = ExpectedChecksums {
            md5: Some(base64(&Md5::checksum(b"other"))),
            ..ExpectedChecksums::default()
        };
        let error = read(BodyReader::new(blob(b"payload"), wrong, 100))
            .await
            .unwrap_err();
        assert!(matches!(error, BodyError::Md5Mismatch));
        let short = ExpectedChecksums {
            md5: Some(base64(b"short")),
            ..ExpectedChecksums::default()
        };
        let error = read(BodyReader::new(blob(b"payload"), short, 100))
            .await
            .unwrap_err();
        assert_eq!(error.to_s3().code().as_str(), "InvalidDigest");
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_refused_and_empty_bodies_are_fine() {
        let error = read(BodyReader::new(
            blob(b"0123456789"),
            ExpectedChecksums::default(),
            9,
        ))
        .await
        .unwrap_err();
        assert!(matches!(error, BodyError::TooLarge { limit: 9 }));
        assert_eq!(error.to_s3().code().as_str(), "EntityTooLarge");
        let (bytes, _) = read(BodyReader::new(None, ExpectedChecksums::default(), 9))
            .await
            .unwrap();
        assert!(bytes.is_empty());
        // No body is an empty body: its checksums are checked too.
        let wrong = ExpectedChecksums {
            md5: Some(base64(&Md5::checksum(b"x"))),
            ..ExpectedChecksums::default()
        };
        let error = read(BodyReader::new(None, wrong, 9)).await.unwrap_err();
        assert!(matches!(error, BodyError::Md5Mismatch));
    }
}
