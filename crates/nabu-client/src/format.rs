//! The stored formats of the metadata the client writes: manifests, key records and
//! namespace records. Documented byte by byte in `docs/formats/manifest.md`.
//!
//! These values travel as META_PUT bodies and are opaque to nodes, so the client owns their
//! format. Each starts with a 4-byte magic and a version byte and ends with a CRC32C of
//! everything before it, so a damaged or foreign value is refused before any field is
//! trusted; every field has a bound checked before anything is allocated, and a decoder
//! accepts only what its encoder produces (one encoding per value: metadata names sorted and
//! unique, no trailing bytes, stripe lengths consistent with the blob size).

use std::collections::BTreeMap;

use nabu_core::ec::CodecId;
use nabu_core::id::{BlobId, StripeId};
use nabu_core::policy::Durability;

/// User metadata of an object: name → value, sorted by name.
pub type UserMetadata = BTreeMap<String, String>;

/// The most user-metadata entries an object may carry.
pub const USER_METADATA_ENTRIES_MAX: usize = 64;
/// The longest metadata name, in bytes (at least 1).
pub const USER_METADATA_NAME_BYTES_MAX: usize = 128;
/// The longest metadata value, in bytes.
pub const USER_METADATA_VALUE_BYTES_MAX: usize = 2048;
/// The most bytes all metadata entries of an object take, encoded.
pub const USER_METADATA_BYTES_MAX: usize = 8192;
/// The largest stripe a manifest may describe (the protocol's request body bound).
pub const STRIPE_BYTES_MAX: u64 = 64 << 20;
/// The most stripes one manifest may list (4 TiB at 4 MiB stripes; a 40 MiB manifest).
pub const MANIFEST_STRIPES_MAX: u32 = 1 << 20;

/// Magic of a manifest value.
pub const MANIFEST_MAGIC: [u8; 4] = *b"NBMF";
/// Magic of a key record value.
pub const KEY_RECORD_MAGIC: [u8; 4] = *b"NBKR";
/// Magic of a namespace record value.
pub const NAMESPACE_RECORD_MAGIC: [u8; 4] = *b"NBNS";
/// The format version of key records and namespace records (and of manifests without shard
/// checksums, as written before version 2).
pub const FORMAT_VERSION: u8 = 1;
/// The manifest version with per-shard checksums, which this code writes.
pub const MANIFEST_VERSION_SHARD_CRCS: u8 = 2;

/// Why a stored value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// The value ended inside a field.
    #[error("truncated at field {field}")]
    Truncated {
        /// The field being read.
        field: &'static str,
    },
    /// The first four bytes are not the expected magic.
    #[error("bad magic {found:02x?}, expected {expected:02x?}")]
    BadMagic {
        /// The magic this kind of value starts with.
        expected: [u8; 4],
        /// What the value starts with.
        found: [u8; 4],
    },
    /// A version this code does not read.
    #[error("unsupported format version {0} (this code reads versions 1 and 2)")]
    UnsupportedVersion(u8),
    /// The trailing CRC32C does not match the bytes.
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    ChecksumMismatch {
        /// The CRC the value carries.
        stored: u32,
        /// The CRC of its bytes.
        computed: u32,
    },
    /// Bytes left after the last field.
    #[error("{0} trailing bytes")]
    TrailingBytes(usize),
    /// A field over its bound.
    #[error("field {field} is {found}, at most {max}")]
    TooLarge {
        /// The field.
        field: &'static str,
        /// Its value or length.
        found: u64,
        /// The bound.
        max: u64,
    },
    /// A field with a value out of its domain, or inconsistent with another.
    #[error("field {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
}

fn invalid(field: &'static str, reason: &'static str) -> FormatError {
    FormatError::Invalid { field, reason }
}

/// The id whole-stripe copies of `stripe_id` are kept under on nodes (version-2 manifests):
/// BLAKE3 of a domain tag and the stripe id. See [`Manifest::node_stripe_id`].
pub fn whole_copy_id(stripe_id: &StripeId) -> StripeId {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"nabu.whole-copy.v1");
    hasher.update(stripe_id.as_bytes());
    StripeId::from_bytes(*hasher.finalize().as_bytes())
}

/// One stripe of a blob as its manifest lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StripeEntry {
    /// BLAKE3 of the stripe's bytes.
    pub stripe_id: StripeId,
    /// The stripe's length (the cut size, shorter for the last stripe).
    pub stripe_bytes: u64,
}

/// What a blob is made of: size, how its stripes are stored, the stripe list.
/// Stored (replicated) under its blob id; immutable in everything but `created_hlc` and
/// `metadata`, which are those of the latest put of these bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// BLAKE3 of the whole blob.
    pub blob_id: BlobId,
    /// The blob's length.
    pub blob_bytes: u64,
    /// How each stripe is stored: `ec:K+M` shards, or whole-stripe copies (a small object in
    /// an `ec` namespace is stored as `replicas:M+1`).
    pub durability: Durability,
    /// The erasure code of the shards; `CodecId(0)` for whole-stripe layouts.
    pub codec: CodecId,
    /// The cut size: every stripe but the last is this long.
    pub stripe_bytes: u64,
    /// The HLC timestamp of the put that wrote this manifest.
    pub created_hlc: u64,
    /// The stripes in blob order.
    pub stripes: Vec<StripeEntry>,
    /// CRC32C of every shard as the writer made it, [`Manifest::shard_crc_width`] per
    /// stripe in stripe order (shard index order within a stripe; one for whole-stripe
    /// copies, which are identical). Readers check each shard a node returns against it, so
    /// a stripe needs no BLAKE3 pass unless rebuilt from parity. Empty in version-1
    /// manifests, whose readers verify every stripe's BLAKE3.
    pub shard_crcs: Vec<u32>,
    /// User metadata given to that put.
    pub metadata: UserMetadata,
}

impl Manifest {
    /// How many shard checksums each stripe has: K+M for erasure-coded stripes, 1 for
    /// whole-stripe copies.
    pub fn shard_crc_width(&self) -> usize {
        match self.durability {
            Durability::ErasureCoded { .. } => self.durability.width(),
            _ => 1,
        }
    }

    /// The id the nodes keep stripe `index` under (and place it by). For erasure-coded
    /// stripes, and in version-1 manifests, the stripe id itself; for whole-stripe copies
    /// in version-2 manifests, [`whole_copy_id`] of it, so that the same bytes can be one
    /// object's EC stripe and another's small-object copies (a node holds one shard per id).
    pub fn node_stripe_id(&self, index: usize) -> StripeId {
        let stripe_id = self.stripes[index].stripe_id;
        let whole = !matches!(self.durability, Durability::ErasureCoded { .. });
        if whole && !self.shard_crcs.is_empty() {
            whole_copy_id(&stripe_id)
        } else {
            stripe_id
        }
    }

    /// [`Manifest::node_stripe_id`] of every stripe, in order.
    pub fn node_stripe_ids(&self) -> impl Iterator<Item = StripeId> + '_ {
        (0..self.stripes.len()).map(|index| self.node_stripe_id(index))
    }

    /// The writer's shard checksums of stripe `index`, if the manifest has them.
    pub fn shard_crcs_of(&self, index: usize) -> Option<&[u32]> {
        let width = self.shard_crc_width();
        self.shard_crcs.get(index * width..(index + 1) * width)
    }

    /// Checks the manifest's internal consistency (what the decoder also enforces).
    pub fn check(&self) -> Result<(), FormatError> {
        let crcs = self.stripes.len() * self.shard_crc_width();
        if !self.shard_crcs.is_empty() && self.shard_crcs.len() != crcs {
            return Err(invalid(
                "shard_crcs",
                "holds one checksum per shard of every stripe, or none",
            ));
        }
        if self.stripe_bytes == 0 {
            return Err(invalid("stripe_bytes", "the cut size is at least 1"));
        }
        if self.stripe_bytes > STRIPE_BYTES_MAX {
            return Err(FormatError::TooLarge {
                field: "stripe_bytes",
                found: self.stripe_bytes,
                max: STRIPE_BYTES_MAX,
            });
        }
        check_durability_codec(self.durability, self.codec)?;
        let expected_stripes = self.blob_bytes.div_ceil(self.stripe_bytes);
        if self.stripes.len() as u64 != expected_stripes {
            return Err(invalid(
                "stripe_count",
                "does not match blob_bytes / stripe_bytes",
            ));
        }
        let mut remaining = self.blob_bytes;
        for stripe in &self.stripes {
            if stripe.stripe_bytes != remaining.min(self.stripe_bytes) {
                return Err(invalid(
                    "stripe_bytes",
                    "every stripe is full-size except a shorter last one",
                ));
            }
            remaining -= stripe.stripe_bytes;
        }
        check_metadata(&self.metadata)
    }

    /// The encoded value (checks first).
    pub fn encode(&self) -> Result<Vec<u8>, FormatError> {
        self.check()?;
        let stripe_count = u32::try_from(self.stripes.len())
            .ok()
            .filter(|&count| count <= MANIFEST_STRIPES_MAX)
            .ok_or(FormatError::TooLarge {
                field: "stripe_count",
                found: self.stripes.len() as u64,
                max: u64::from(MANIFEST_STRIPES_MAX),
            })?;
        let with_crcs = !self.shard_crcs.is_empty();
        let width = if with_crcs { self.shard_crc_width() } else { 0 };
        let mut out = Vec::with_capacity(80 + self.stripes.len() * (40 + 4 * width));
        out.extend_from_slice(&MANIFEST_MAGIC);
        out.push(if with_crcs {
            MANIFEST_VERSION_SHARD_CRCS
        } else {
            FORMAT_VERSION
        });
        out.extend_from_slice(self.blob_id.as_bytes());
        out.extend_from_slice(&self.blob_bytes.to_le_bytes());
        encode_durability(self.durability, &mut out);
        out.push(self.codec.0);
        out.extend_from_slice(&self.stripe_bytes.to_le_bytes());
        out.extend_from_slice(&self.created_hlc.to_le_bytes());
        out.extend_from_slice(&stripe_count.to_le_bytes());
        for (index, stripe) in self.stripes.iter().enumerate() {
            out.extend_from_slice(stripe.stripe_id.as_bytes());
            out.extend_from_slice(&stripe.stripe_bytes.to_le_bytes());
            for crc in self.shard_crcs_of(index).unwrap_or_default() {
                out.extend_from_slice(&crc.to_le_bytes());
            }
        }
        encode_metadata(&self.metadata, &mut out);
        seal(&mut out);
        Ok(out)
    }

    /// Decodes and checks a stored manifest.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let versions = [FORMAT_VERSION, MANIFEST_VERSION_SHARD_CRCS];
        let (mut reader, version) = Reader::open_versions(bytes, MANIFEST_MAGIC, &versions)?;
        let blob_id = BlobId::from_bytes(reader.array32("blob_id")?);
        let blob_bytes = reader.u64("blob_bytes")?;
        let durability = decode_durability(&mut reader)?;
        let codec = CodecId(reader.u8("codec")?);
        let stripe_bytes = reader.u64("stripe_bytes")?;
        let created_hlc = reader.u64("created_hlc")?;
        let stripe_count = reader.u32("stripe_count")?;
        if stripe_count > MANIFEST_STRIPES_MAX {
            return Err(FormatError::TooLarge {
                field: "stripe_count",
                found: u64::from(stripe_count),
                max: u64::from(MANIFEST_STRIPES_MAX),
            });
        }
        let width = match (version, durability) {
            (FORMAT_VERSION, _) => 0,
            (_, Durability::ErasureCoded { .. }) => durability.width(),
            _ => 1,
        };
        // The count is checked against the bytes present before anything is reserved.
        if reader.remaining() < stripe_count as usize * (40 + 4 * width) {
            return Err(FormatError::Truncated { field: "stripes" });
        }
        let mut stripes = Vec::with_capacity(stripe_count as usize);
        let mut shard_crcs = Vec::with_capacity(stripe_count as usize * width);
        for _ in 0..stripe_count {
            stripes.push(StripeEntry {
                stripe_id: StripeId::from_bytes(reader.array32("stripe_id")?),
                stripe_bytes: reader.u64("stripe_bytes")?,
            });
            for _ in 0..width {
                shard_crcs.push(reader.u32("shard_crc")?);
            }
        }
        let metadata = decode_metadata(&mut reader)?;
        reader.finish()?;
        let manifest = Self {
            blob_id,
            blob_bytes,
            durability,
            codec,
            stripe_bytes,
            created_hlc,
            stripes,
            shard_crcs,
            metadata,
        };
        manifest.check()?;
        Ok(manifest)
    }
}

/// What a key points to: the blob, its size and the user metadata of the put. Stored
/// (replicated) under namespace + key; the HLC timestamp decides the last writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// The blob the key names.
    pub blob_id: BlobId,
    /// The blob's length (so `stat` needs no manifest).
    pub blob_bytes: u64,
    /// The writer's HLC timestamp (the META_PUT timestamp, repeated so the record stands on
    /// its own in backups and repair).
    pub hlc_timestamp: u64,
    /// User metadata of the put.
    pub metadata: UserMetadata,
}

impl KeyRecord {
    /// The encoded value (checks the metadata first).
    pub fn encode(&self) -> Result<Vec<u8>, FormatError> {
        check_metadata(&self.metadata)?;
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&KEY_RECORD_MAGIC);
        out.push(FORMAT_VERSION);
        out.extend_from_slice(self.blob_id.as_bytes());
        out.extend_from_slice(&self.blob_bytes.to_le_bytes());
        out.extend_from_slice(&self.hlc_timestamp.to_le_bytes());
        encode_metadata(&self.metadata, &mut out);
        seal(&mut out);
        Ok(out)
    }

    /// Decodes a stored key record.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let mut reader = Reader::open(bytes, KEY_RECORD_MAGIC)?;
        let record = Self {
            blob_id: BlobId::from_bytes(reader.array32("blob_id")?),
            blob_bytes: reader.u64("blob_bytes")?,
            hlc_timestamp: reader.u64("hlc_timestamp")?,
            metadata: decode_metadata(&mut reader)?,
        };
        reader.finish()?;
        Ok(record)
    }
}

/// A namespace's policy as stored in the `_system` namespace (key `namespace/<name>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamespaceRecord {
    /// The namespace's durability policy.
    pub durability: Durability,
}

impl NamespaceRecord {
    /// The encoded value.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16);
        out.extend_from_slice(&NAMESPACE_RECORD_MAGIC);
        out.push(FORMAT_VERSION);
        encode_durability(self.durability, &mut out);
        seal(&mut out);
        out
    }

    /// Decodes a stored namespace record.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let mut reader = Reader::open(bytes, NAMESPACE_RECORD_MAGIC)?;
        let durability = decode_durability(&mut reader)?;
        reader.finish()?;
        Ok(Self { durability })
    }
}

/// The ring point of a key record: the first 8 bytes (little-endian) of
/// BLAKE3(`"nabu.key-record.v1"` ‖ `u16` namespace length ‖ namespace ‖ key). Part of the
/// placement contract: nodes repairing key records compute the same.
pub fn key_record_point(namespace: &str, key: &[u8]) -> u64 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"nabu.key-record.v1");
    hasher.update(&(namespace.len() as u16).to_le_bytes());
    hasher.update(namespace.as_bytes());
    hasher.update(key);
    let digest = hasher.finalize();
    u64::from_le_bytes(digest.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// The ring point of a blob's manifest: the blob id's own point.
pub fn manifest_point(blob_id: &BlobId) -> u64 {
    blob_id.ring_point()
}

/// Whether `durability` and `codec` agree: erasure layouts name a known code, whole-stripe
/// layouts codec 0.
fn check_durability_codec(durability: Durability, codec: CodecId) -> Result<(), FormatError> {
    match durability {
        Durability::ErasureCoded { .. } if codec.0 == 0 => {
            Err(invalid("codec", "an erasure layout names its code"))
        }
        Durability::Replicas { .. } | Durability::None if codec.0 != 0 => {
            Err(invalid("codec", "a whole-stripe layout has codec 0"))
        }
        _ => Ok(()),
    }
}

/// Durability as three bytes: kind (1 `ec`, 2 `replicas`, 3 `none`), then K and M, R and 0,
/// or 0 and 0.
fn encode_durability(durability: Durability, out: &mut Vec<u8>) {
    let bytes = match durability {
        Durability::ErasureCoded { data, parity } => [1, data, parity],
        Durability::Replicas { copies } => [2, copies, 0],
        Durability::None => [3, 0, 0],
    };
    out.extend_from_slice(&bytes);
}

fn decode_durability(reader: &mut Reader<'_>) -> Result<Durability, FormatError> {
    let kind = reader.u8("durability_kind")?;
    let first = reader.u8("durability_a")?;
    let second = reader.u8("durability_b")?;
    let durability = match (kind, first, second) {
        (1, data, parity) if data >= 1 && usize::from(data) + usize::from(parity) <= 255 => {
            Durability::ErasureCoded { data, parity }
        }
        (2, copies, 0) if copies >= 1 => Durability::Replicas { copies },
        (3, 0, 0) => Durability::None,
        _ => return Err(invalid("durability", "not a valid ec/replicas/none triple")),
    };
    Ok(durability)
}

fn check_metadata(metadata: &UserMetadata) -> Result<(), FormatError> {
    if metadata.len() > USER_METADATA_ENTRIES_MAX {
        return Err(FormatError::TooLarge {
            field: "metadata_count",
            found: metadata.len() as u64,
            max: USER_METADATA_ENTRIES_MAX as u64,
        });
    }
    let mut total = 0;
    for (name, value) in metadata {
        if name.is_empty() {
            return Err(invalid("metadata_name", "a metadata name is not empty"));
        }
        check_len("metadata_name", name.len(), USER_METADATA_NAME_BYTES_MAX)?;
        check_len("metadata_value", value.len(), USER_METADATA_VALUE_BYTES_MAX)?;
        total += 4 + name.len() + value.len();
    }
    check_len("metadata_bytes", total, USER_METADATA_BYTES_MAX)
}

fn check_len(field: &'static str, found: usize, max: usize) -> Result<(), FormatError> {
    if found > max {
        return Err(FormatError::TooLarge {
            field,
            found: found as u64,
            max: max as u64,
        });
    }
    Ok(())
}

/// `u16` count, then per entry `str16` name and `str16` value, names ascending.
fn encode_metadata(metadata: &UserMetadata, out: &mut Vec<u8>) {
    out.extend_from_slice(&(metadata.len() as u16).to_le_bytes());
    for (name, value) in metadata {
        for text in [name, value] {
            out.extend_from_slice(&(text.len() as u16).to_le_bytes());
            out.extend_from_slice(text.as_bytes());
        }
    }
}

fn decode_metadata(reader: &mut Reader<'_>) -> Result<UserMetadata, FormatError> {
    let count = usize::from(reader.u16("metadata_count")?);
    check_len("metadata_count", count, USER_METADATA_ENTRIES_MAX)?;
    let mut metadata = UserMetadata::new();
    let mut previous: Option<String> = None;
    for _ in 0..count {
        let name = reader.str16("metadata_name", USER_METADATA_NAME_BYTES_MAX)?;
        let value = reader.str16("metadata_value", USER_METADATA_VALUE_BYTES_MAX)?;
        if previous
            .as_deref()
            .is_some_and(|previous| previous >= name.as_str())
        {
            return Err(invalid("metadata_name", "names are unique and ascending"));
        }
        previous = Some(name.clone());
        metadata.insert(name, value);
    }
    check_metadata(&metadata)?;
    Ok(metadata)
}

/// Appends the CRC32C of everything so far.
fn seal(out: &mut Vec<u8>) {
    let crc = nabu_core::checksum::crc32c(out);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// Reads fields of a value whose magic, version and trailing CRC were checked on open.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Checks length, magic, version and CRC, and positions after the version byte.
    fn open(bytes: &'a [u8], magic: [u8; 4]) -> Result<Self, FormatError> {
        Ok(Self::open_versions(bytes, magic, &[FORMAT_VERSION])?.0)
    }

    /// [`Reader::open`] for a value that may be any of `versions`; returns the version.
    fn open_versions(
        bytes: &'a [u8],
        magic: [u8; 4],
        versions: &[u8],
    ) -> Result<(Self, u8), FormatError> {
        if bytes.len() < 9 {
            return Err(FormatError::Truncated { field: "header" });
        }
        let found: [u8; 4] = bytes[..4].try_into().expect("4 bytes");
        if found != magic {
            return Err(FormatError::BadMagic {
                expected: magic,
                found,
            });
        }
        if !versions.contains(&bytes[4]) {
            return Err(FormatError::UnsupportedVersion(bytes[4]));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        let stored = u32::from_le_bytes(crc.try_into().expect("4 bytes"));
        let computed = nabu_core::checksum::crc32c(body);
        if stored != computed {
            return Err(FormatError::ChecksumMismatch { stored, computed });
        }
        Ok((Self { bytes: &body[5..] }, bytes[4]))
    }

    fn remaining(&self) -> usize {
        self.bytes.len()
    }

    fn take(&mut self, field: &'static str, count: usize) -> Result<&'a [u8], FormatError> {
        if count > self.bytes.len() {
            return Err(FormatError::Truncated { field });
        }
        let (taken, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Ok(taken)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, FormatError> {
        Ok(self.take(field, 1)?[0])
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, FormatError> {
        Ok(u16::from_le_bytes(
            self.take(field, 2)?.try_into().expect("2"),
        ))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(
            self.take(field, 4)?.try_into().expect("4"),
        ))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(
            self.take(field, 8)?.try_into().expect("8"),
        ))
    }

    fn array32(&mut self, field: &'static str) -> Result<[u8; 32], FormatError> {
        Ok(self.take(field, 32)?.try_into().expect("32"))
    }

    fn str16(&mut self, field: &'static str, max: usize) -> Result<String, FormatError> {
        let length = usize::from(self.u16(field)?);
        check_len(field, length, max)?;
        let bytes = self.take(field, length)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| invalid(field, "not UTF-8"))
    }

    fn finish(self) -> Result<(), FormatError> {
        match self.bytes.len() {
            0 => Ok(()),
            extra => Err(FormatError::TrailingBytes(extra)),
        }
    }
}

#[cfg(test)]
mod tests;
