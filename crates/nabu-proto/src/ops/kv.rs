//! KV-cache ops (`0x05xx`): batched put/get/delete/exists, the one-round-trip
//! `KV_PREFIX_LOOKUP`, TTLs, pins and a scan for tooling.
//!
//! KV values live in a node's in-memory KV pool (a cache: acknowledged once in memory, evicted
//! by policy, never durable). Every op names a namespace and a list of keys; the values of a
//! batch travel as one frame body, concatenated in key order, their lengths in the metadata,
//! so a receiver slices them out of the body without copying. A batch's metadata must fit one
//! frame's metadata (`u16::MAX` bytes): senders split larger batches.

use super::impl_meta;
use super::metadata::{KEY_BYTES_MAX, NAMESPACE_BYTES_MAX};
use crate::error::ProtoError;
use crate::wire::{Reader, Writer};

/// The most keys one KV request names.
pub const KV_BATCH_KEYS_MAX: usize = 4096;
/// The most keys one KV_SCAN page may ask for.
pub const KV_SCAN_COUNT_MAX: u32 = 10_000;

fn invalid(field: &'static str, reason: &'static str) -> ProtoError {
    ProtoError::InvalidField { field, reason }
}

fn encode_namespace(writer: &mut Writer<'_>, namespace: &str) -> Result<(), ProtoError> {
    if namespace.is_empty() {
        return Err(invalid("namespace", "a namespace is not empty"));
    }
    writer.str16("namespace", namespace, NAMESPACE_BYTES_MAX)
}

fn decode_namespace(reader: &mut Reader<'_>) -> Result<String, ProtoError> {
    let namespace = reader.str16("namespace", NAMESPACE_BYTES_MAX)?;
    if namespace.is_empty() {
        return Err(invalid("namespace", "a namespace is not empty"));
    }
    Ok(namespace.to_owned())
}

fn encode_key(writer: &mut Writer<'_>, key: &[u8]) -> Result<(), ProtoError> {
    if key.is_empty() {
        return Err(invalid("key", "a key is not empty"));
    }
    writer.bytes16("key", key, KEY_BYTES_MAX)
}

fn decode_key(reader: &mut Reader<'_>) -> Result<Vec<u8>, ProtoError> {
    let key = reader.bytes16("key", KEY_BYTES_MAX)?;
    if key.is_empty() {
        return Err(invalid("key", "a key is not empty"));
    }
    Ok(key.to_vec())
}

fn encode_count(writer: &mut Writer<'_>, count: usize) -> Result<(), ProtoError> {
    if count > KV_BATCH_KEYS_MAX {
        return Err(ProtoError::FieldTooLong {
            field: "count",
            bytes: count,
            max: KV_BATCH_KEYS_MAX,
        });
    }
    writer.u16(count as u16);
    Ok(())
}

fn decode_count(reader: &mut Reader<'_>) -> Result<usize, ProtoError> {
    let count = usize::from(reader.u16("count")?);
    if count > KV_BATCH_KEYS_MAX {
        return Err(ProtoError::FieldTooLong {
            field: "count",
            bytes: count,
            max: KV_BATCH_KEYS_MAX,
        });
    }
    Ok(count)
}

/// `count u16`, then `count` keys (`bytes16`, 1..=1,024 bytes each).
fn encode_keys(writer: &mut Writer<'_>, keys: &[Vec<u8>]) -> Result<(), ProtoError> {
    encode_count(writer, keys.len())?;
    keys.iter().try_for_each(|key| encode_key(writer, key))
}

fn decode_keys(reader: &mut Reader<'_>) -> Result<Vec<Vec<u8>>, ProtoError> {
    let count = decode_count(reader)?;
    (0..count).map(|_| decode_key(reader)).collect()
}

/// The sum of value lengths, refused on overflow.
fn total_bytes(mut lengths: impl Iterator<Item = u64>) -> Result<u64, ProtoError> {
    lengths
        .try_fold(0u64, u64::checked_add)
        .ok_or(invalid("value_bytes", "the values' total length overflows"))
}

/// When a KV_PUT entry is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum KvCondition {
    /// Always (Redis `SET`).
    Always = 0,
    /// Only if the key holds no value (Redis `SET NX`).
    IfAbsent = 1,
    /// Only if the key holds a value (Redis `SET XX`).
    IfPresent = 2,
}

/// One value of a KV_PUT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvPutEntry {
    /// The key.
    pub key: Vec<u8>,
    /// The value's length: its slice of the request body.
    pub value_bytes: u64,
    /// Time to live in milliseconds; 0 = until evicted.
    pub ttl_ms: u64,
    /// Never evicted while pinned (unpinned by KV_PIN or by overwriting without the pin).
    pub pin: bool,
    /// When to store it.
    pub condition: KvCondition,
}

/// KV_PUT request: store a batch of values (the body: the values concatenated in entry order).
///
/// Layout: `namespace str16`, `count u16`, then per entry `key bytes16`, `value_bytes u64`,
/// `ttl_ms u64`, `flags u8` (bit 0 pin; bits 1–2 the condition: 0 always, 1 if absent,
/// 2 if present; other bits 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvPut {
    /// The namespace.
    pub namespace: String,
    /// The values, in body order.
    pub entries: Vec<KvPutEntry>,
}

impl KvPut {
    fn encode_fields(&self, writer: &mut Writer<'_>) -> Result<(), ProtoError> {
        encode_namespace(writer, &self.namespace)?;
        encode_count(writer, self.entries.len())?;
        total_bytes(self.entries.iter().map(|entry| entry.value_bytes))?;
        for entry in &self.entries {
            encode_key(writer, &entry.key)?;
            writer.u64(entry.value_bytes);
            writer.u64(entry.ttl_ms);
            writer.u8(u8::from(entry.pin) | (entry.condition as u8) << 1);
        }
        Ok(())
    }

    fn decode_fields(reader: &mut Reader<'_>) -> Result<Self, ProtoError> {
        let namespace = decode_namespace(reader)?;
        let count = decode_count(reader)?;
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            let key = decode_key(reader)?;
            let value_bytes = reader.u64("value_bytes")?;
            let ttl_ms = reader.u64("ttl_ms")?;
            let flags = reader.u8("flags")?;
            let condition = match flags >> 1 {
                0 => KvCondition::Always,
                1 => KvCondition::IfAbsent,
                2 => KvCondition::IfPresent,
                _ => return Err(invalid("flags", "unknown flag bits or condition")),
            };
            entries.push(KvPutEntry {
                key,
                value_bytes,
                ttl_ms,
                pin: flags & 1 == 1,
                condition,
            });
        }
        total_bytes(entries.iter().map(|entry| entry.value_bytes))?;
        Ok(Self { namespace, entries })
    }
}
impl_meta!(
    KvPut,
    KvPut,
    Request,
    body = |put| put
        .entries
        .iter()
        .fold(0u64, |sum, entry| sum.saturating_add(entry.value_bytes))
);

/// What became of one KV_PUT entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum KvPutOutcome {
    /// Stored.
    Stored = 0,
    /// Not stored: its condition (if absent / if present) did not hold.
    ConditionFailed = 1,
    /// Accepted and dropped at once, as if evicted: a group member whose group head is not
    /// held (LMCache's `<key>metadata` without `<key>kv_bytes`), which must never be visible.
    Dropped = 2,
}

/// KV_PUT response. Layout: `count u16`, then one outcome byte per entry (0 stored,
/// 1 condition failed, 2 dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvPutReply {
    /// Per entry, in request order.
    pub outcomes: Vec<KvPutOutcome>,
}

impl KvPutReply {
    fn encode_fields(&self, writer: &mut Writer<'_>) -> Result<(), ProtoError> {
        encode_count(writer, self.outcomes.len())?;
        self.outcomes
            .iter()
            .for_each(|outcome| writer.u8(*outcome as u8));
        Ok(())
    }

    fn decode_fields(reader: &mut Reader<'_>) -> Result<Self, ProtoError> {
        let count = decode_count(reader)?;
        let outcomes = (0..count)
            .map(|_| match reader.u8("outcome")? {
                0 => Ok(KvPutOutcome::Stored),
                1 => Ok(KvPutOutcome::ConditionFailed),
                2 => Ok(KvPutOutcome::Dropped),
                _ => Err(invalid("outcome", "an outcome is 0, 1 or 2")),
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { outcomes })
    }
}
impl_meta!(KvPutReply, KvPut, Response);

/// Declares a request of `namespace str16` and a key list (and optionally one more field
/// before the keys).
macro_rules! keys_request {
    ($(#[$doc:meta])* $name:ident, $op:ident $(, $field:ident: $kind:ident)?) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name {
            /// The namespace.
            pub namespace: String,
            $(
                #[doc = concat!("`", stringify!($field), "` (see the type's docs).")]
                pub $field: $kind,
            )?
            /// The keys, 0..=4,096 of them.
            pub keys: Vec<Vec<u8>>,
        }

        impl $name {
            fn encode_fields(&self, writer: &mut Writer<'_>) -> Result<(), ProtoError> {
                encode_namespace(writer, &self.namespace)?;
                $(writer.$kind(self.$field);)?
                encode_keys(writer, &self.keys)
            }

            fn decode_fields(reader: &mut Reader<'_>) -> Result<Self, ProtoError> {
                Ok(Self {
                    namespace: decode_namespace(reader)?,
                    $($field: reader.$kind(stringify!($field))?,)?
                    keys: decode_keys(reader)?,
                })
            }
        }
        impl_meta!($name, $op, Request);
    };
}

keys_request!(
    /// KV_GET request: read a batch of values. Layout: `namespace str16`, keys.
    KvGet, KvGet
);
keys_request!(
    /// KV_DELETE request: drop a batch of keys. Layout: `namespace str16`, keys.
    KvDelete, KvDelete
);
keys_request!(
    /// KV_EXISTS request: which keys hold a value; with `lease_ms` > 0 each existing key is
    /// also leased (not evicted) for that long. Layout: `namespace str16`, `lease_ms u64`, keys.
    KvExists, KvExists, lease_ms: u64
);
keys_request!(
    /// KV_PREFIX_LOOKUP request: the length of the longest prefix of `keys` whose keys all
    /// exist, those keys leased for `lease_ms` (0: no lease). The node that receives it asks
    /// each key's owner (KV_EXISTS) in parallel. Layout: `namespace str16`, `lease_ms u64`,
    /// keys in order.
    KvPrefixLookup, KvPrefixLookup, lease_ms: u64
);
keys_request!(
    /// KV_PIN request: pin (`pinned` = 1) or unpin (0) existing keys. Layout: `namespace
    /// str16`, `pinned u8`, keys.
    KvPin, KvPin, pinned: bool
);

/// One key of a KV_GET reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvGetEntry {
    /// Whether the key held a value (a miss is not an error).
    pub found: bool,
    /// The value's length (0 on a miss): its slice of the response body.
    pub value_bytes: u64,
    /// CRC32C of the value, as stored with it and checked by the node before it answered.
    pub crc32c: u32,
}

/// KV_GET response: per key `found u8`, `value_bytes u64`, `crc32c u32` after `count u16`;
/// the body is the found values concatenated in key order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvGetReply {
    /// Per key, in request order.
    pub entries: Vec<KvGetEntry>,
}

impl KvGetReply {
    fn encode_fields(&self, writer: &mut Writer<'_>) -> Result<(), ProtoError> {
        encode_count(writer, self.entries.len())?;
        for entry in &self.entries {
            if !entry.found && (entry.value_bytes != 0 || entry.crc32c != 0) {
                return Err(invalid("value_bytes", "a miss has no value"));
            }
            writer.bool(entry.found);
            writer.u64(entry.value_bytes);
            writer.u32(entry.crc32c);
        }
        total_bytes(self.entries.iter().map(|entry| entry.value_bytes))?;
        Ok(())
    }

    fn decode_fields(reader: &mut Reader<'_>) -> Result<Self, ProtoError> {
        let count = decode_count(reader)?;
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            let entry = KvGetEntry {
                found: reader.bool("found")?,
                value_bytes: reader.u64("value_bytes")?,
                crc32c: reader.u32("crc32c")?,
            };
            if !entry.found && (entry.value_bytes != 0 || entry.crc32c != 0) {
                return Err(invalid("value_bytes", "a miss has no value"));
            }
            entries.push(entry);
        }
        total_bytes(entries.iter().map(|entry| entry.value_bytes))?;
        Ok(Self { entries })
    }
}
impl_meta!(
    KvGetReply,
    KvGet,
    Response,
    body = |reply| reply
        .entries
        .iter()
        .fold(0u64, |sum, entry| sum.saturating_add(entry.value_bytes))
);

/// Declares a reply that is one `u32` count.
macro_rules! count_reply {
    ($(#[$doc:meta])* $name:ident, $op:ident, $field:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name {
            #[doc = concat!("`", stringify!($field), "` (see the type's docs).")]
            pub $field: u32,
        }

        impl $name {
            fn encode_fields(&self, writer: &mut Writer<'_>) -> Result<(), ProtoError> {
                writer.u32(self.$field);
                Ok(())
            }

            fn decode_fields(reader: &mut Reader<'_>) -> Result<Self, ProtoError> {
                Ok(Self {
                    $field: reader.u32(stringify!($field))?,
                })
            }
        }
        impl_meta!($name, $op, Response);
    };
}

count_reply!(
    /// KV_DELETE response (4 bytes): `deleted u32`, how many of the keys held a value.
    KvDeleteReply, KvDelete, deleted
);
count_reply!(
    /// KV_PREFIX_LOOKUP response (4 bytes): `prefix u32`, the length of the longest prefix of
    /// the keys that all exist.
    KvPrefixLookupReply, KvPrefixLookup, prefix
);
count_reply!(
    /// KV_PIN response (4 bytes): `changed u32`, how many keys existed (and are now pinned or
    /// unpinned).
    KvPinReply, KvPin, changed
);

/// KV_EXISTS response: `count u16`, then one bool per key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvExistsReply {
    /// Per key, in request order.
    pub exists: Vec<bool>,
}

impl KvExistsReply {
    fn encode_fields(&self, writer: &mut Writer<'_>) -> Result<(), ProtoError> {
        encode_count(writer, self.exists.len())?;
        self.exists.iter().for_each(|exists| writer.bool(*exists));
        Ok(())
    }

    fn decode_fields(reader: &mut Reader<'_>) -> Result<Self, ProtoError> {
        let count = decode_count(reader)?;
        let exists = (0..count)
            .map(|_| reader.bool("exists"))
            .collect::<Result<_, _>>()?;
        Ok(Self { exists })
    }
}
impl_meta!(KvExistsReply, KvExists, Response);

/// What a KV_TTL request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum KvTtlAction {
    /// Only read the remaining time to live.
    Read = 0,
    /// Set the time to live to `ttl_ms` from now.
    Set = 1,
    /// Remove the time to live.
    Persist = 2,
}

/// KV_TTL request: read or change one key's time to live.
///
/// Layout: `namespace str16`, `key bytes16`, `action u8` (0 read, 1 set, 2 persist),
/// `ttl_ms u64` (used by set; 0 expires the key at once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvTtl {
    /// The namespace.
    pub namespace: String,
    /// The key.
    pub key: Vec<u8>,
    /// What to do.
    pub action: KvTtlAction,
    /// The new time to live (for [`KvTtlAction::Set`]).
    pub ttl_ms: u64,
}

impl KvTtl {
    fn encode_fields(&self, writer: &mut Writer<'_>) -> Result<(), ProtoError> {
        encode_namespace(writer, &self.namespace)?;
        encode_key(writer, &self.key)?;
        writer.u8(self.action as u8);
        writer.u64(self.ttl_ms);
        Ok(())
    }

    fn decode_fields(reader: &mut Reader<'_>) -> Result<Self, ProtoError> {
        Ok(Self {
            namespace: decode_namespace(reader)?,
            key: decode_key(reader)?,
            action: match reader.u8("action")? {
                0 => KvTtlAction::Read,
                1 => KvTtlAction::Set,
                2 => KvTtlAction::Persist,
                _ => return Err(invalid("action", "an action is 0, 1 or 2")),
            },
            ttl_ms: reader.u64("ttl_ms")?,
        })
    }
}
impl_meta!(KvTtl, KvTtl, Request);

/// KV_TTL response (10 bytes): `exists u8`, `has_ttl u8`, `ttl_ms u64` (the remaining time
/// to live after the action; 0 unless `has_ttl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvTtlReply {
    /// Whether the key holds a value (after the action).
    pub exists: bool,
    /// Whether it has a time to live.
    pub has_ttl: bool,
    /// The remaining time to live.
    pub ttl_ms: u64,
}

impl KvTtlReply {
    fn encode_fields(&self, writer: &mut Writer<'_>) -> Result<(), ProtoError> {
        writer.bool(self.exists);
        writer.bool(self.has_ttl);
        writer.u64(self.ttl_ms);
        Ok(())
    }

    fn decode_fields(reader: &mut Reader<'_>) -> Result<Self, ProtoError> {
        Ok(Self {
            exists: reader.bool("exists")?,
            has_ttl: reader.bool("has_ttl")?,
            ttl_ms: reader.u64("ttl_ms")?,
        })
    }
}
impl_meta!(KvTtlReply, KvTtl, Response);

/// KV_SCAN request: one page of this node's keys in a namespace (for tooling: Redis `SCAN`,
/// `DBSIZE`). Layout: `namespace str16`, `cursor u64` (0 to start), `count u32` (0..=10,000;
/// 0 only counts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvScan {
    /// The namespace.
    pub namespace: String,
    /// Where to go on: the previous page's `next_cursor`, 0 for the first page.
    pub cursor: u64,
    /// Keys to return at most.
    pub count: u32,
}

impl KvScan {
    fn encode_fields(&self, writer: &mut Writer<'_>) -> Result<(), ProtoError> {
        if self.count > KV_SCAN_COUNT_MAX {
            return Err(invalid("count", "at most 10,000 keys a page"));
        }
        encode_namespace(writer, &self.namespace)?;
        writer.u64(self.cursor);
        writer.u32(self.count);
        Ok(())
    }

    fn decode_fields(reader: &mut Reader<'_>) -> Result<Self, ProtoError> {
        let scan = Self {
            namespace: decode_namespace(reader)?,
            cursor: reader.u64("cursor")?,
            count: reader.u32("count")?,
        };
        if scan.count > KV_SCAN_COUNT_MAX {
            return Err(invalid("count", "at most 10,000 keys a page"));
        }
        Ok(scan)
    }
}
impl_meta!(KvScan, KvScan, Request);

/// KV_SCAN response (28 bytes): `next_cursor u64` (0: the last page), `keys_total u64` (keys
/// the node holds in the namespace), `entries u32`, `body_bytes u64`. The body is `entries`
/// keys, each `bytes16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvScanReply {
    /// The cursor of the next page; 0 when this was the last.
    pub next_cursor: u64,
    /// Keys in the namespace on this node.
    pub keys_total: u64,
    /// Keys in the body.
    pub entries: u32,
    /// The body's length.
    pub body_bytes: u64,
}

impl KvScanReply {
    fn encode_fields(&self, writer: &mut Writer<'_>) -> Result<(), ProtoError> {
        writer.u64(self.next_cursor);
        writer.u64(self.keys_total);
        writer.u32(self.entries);
        writer.u64(self.body_bytes);
        Ok(())
    }

    fn decode_fields(reader: &mut Reader<'_>) -> Result<Self, ProtoError> {
        Ok(Self {
            next_cursor: reader.u64("next_cursor")?,
            keys_total: reader.u64("keys_total")?,
            entries: reader.u32("entries")?,
            body_bytes: reader.u64("body_bytes")?,
        })
    }
}
impl_meta!(
    KvScanReply,
    KvScan,
    Response,
    body = |reply| reply.body_bytes
);

/// Encodes keys as a KV_SCAN body: each `bytes16`.
pub fn encode_scan_keys(keys: &[Vec<u8>]) -> Result<Vec<u8>, ProtoError> {
    let mut out = Vec::new();
    let mut writer = Writer::new(&mut out);
    keys.iter()
        .try_for_each(|key| encode_key(&mut writer, key))?;
    Ok(out)
}

/// Decodes a KV_SCAN body of exactly `entries` keys.
pub fn decode_scan_keys(body: &[u8], entries: u32) -> Result<Vec<Vec<u8>>, ProtoError> {
    let mut reader = Reader::new(body);
    let keys = (0..entries)
        .map(|_| decode_key(&mut reader))
        .collect::<Result<_, _>>()?;
    reader.finish()?;
    Ok(keys)
}

/// The suffix of a group head: LMCache's `<chunk key>kv_bytes` (the tensor bytes).
pub const KV_GROUP_HEAD_SUFFIX: &[u8] = b"kv_bytes";
/// The suffix of a group member: LMCache's `<chunk key>metadata`, which must never outlive
/// its head (a client that finds the metadata then misses the bytes fails the request).
pub const KV_GROUP_MEMBER_SUFFIX: &[u8] = b"metadata";

/// The group stem of `key`: the key without [`KV_GROUP_HEAD_SUFFIX`] or
/// [`KV_GROUP_MEMBER_SUFFIX`], or the whole key. Keys are placed on the ring by their stem,
/// so a head and its member always live on one node and are evicted there together.
pub fn kv_group_stem(key: &[u8]) -> &[u8] {
    key.strip_suffix(KV_GROUP_HEAD_SUFFIX)
        .or_else(|| key.strip_suffix(KV_GROUP_MEMBER_SUFFIX))
        .unwrap_or(key)
}

/// The head key of a group member (`<stem>metadata` → `<stem>kv_bytes`), or `None` when
/// `key` is not a group member.
pub fn kv_group_head(key: &[u8]) -> Option<Vec<u8>> {
    let stem = key.strip_suffix(KV_GROUP_MEMBER_SUFFIX)?;
    Some([stem, KV_GROUP_HEAD_SUFFIX].concat())
}

/// The member key of a group head (`<stem>kv_bytes` → `<stem>metadata`), or `None` when
/// `key` is not a group head.
pub fn kv_group_member(key: &[u8]) -> Option<Vec<u8>> {
    let stem = key.strip_suffix(KV_GROUP_HEAD_SUFFIX)?;
    Some([stem, KV_GROUP_MEMBER_SUFFIX].concat())
}
