//! Key-record and manifest ops: META_PUT, META_GET, META_DELETE, META_LIST.
//!
//! Key records (key → blob id, size, user metadata) and manifests (a blob's stripe list) are
//! small values stored replicated on metadata holders. The values themselves travel as frame
//! bodies, opaque to this crate; the metadata addresses them and carries the hybrid-logical-
//! clock timestamp that decides the last writer.

use super::impl_meta;
use crate::error::ProtoError;
use crate::wire::{Reader, Writer};

/// The longest namespace name, in bytes of UTF-8 (at least 1).
pub const NAMESPACE_BYTES_MAX: usize = 255;
/// The longest key, in bytes (at least 1). Keys are bytes, not text: the Redis gateway stores
/// binary keys. 1,024 is S3's key limit.
pub const KEY_BYTES_MAX: usize = 1024;
/// The longest continuation token of a listing, in bytes.
pub const CONTINUATION_BYTES_MAX: usize = KEY_BYTES_MAX;
/// The most entries one META_LIST page may ask for or return.
pub const LIST_LIMIT_MAX: u32 = 10_000;

/// Which table a META op addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MetaTable {
    /// Key records: namespace + key → the blob the key points to.
    KeyRecords = 1,
    /// Manifests: namespace + blob id (as the key) → size, policy, stripe list.
    Manifests = 2,
}

fn invalid(field: &'static str, reason: &'static str) -> ProtoError {
    ProtoError::InvalidField { field, reason }
}

/// The address every META op starts with: `table u8`, `namespace_len u16`, `namespace`
/// (UTF-8, 1..=255 bytes), then (for all but META_LIST) `key_len u16`, `key` (1..=1024 bytes).
fn encode_table_namespace(
    writer: &mut Writer<'_>,
    table: MetaTable,
    namespace: &str,
) -> Result<(), ProtoError> {
    if namespace.is_empty() {
        return Err(invalid("namespace", "a namespace is not empty"));
    }
    writer.u8(table as u8);
    writer.str16("namespace", namespace, NAMESPACE_BYTES_MAX)
}

fn decode_table_namespace(reader: &mut Reader<'_>) -> Result<(MetaTable, String), ProtoError> {
    let table = match reader.u8("table")? {
        1 => MetaTable::KeyRecords,
        2 => MetaTable::Manifests,
        _ => {
            return Err(invalid(
                "table",
                "a table is 1 (key records) or 2 (manifests)",
            ));
        }
    };
    let namespace = reader.str16("namespace", NAMESPACE_BYTES_MAX)?;
    if namespace.is_empty() {
        return Err(invalid("namespace", "a namespace is not empty"));
    }
    Ok((table, namespace.to_owned()))
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

/// META_PUT request: write a value (the body, `value_bytes` long) unless a newer one is stored.
///
/// Layout: address (table, namespace, key), `hlc_timestamp u64`, `value_bytes u64`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaPut {
    /// The table.
    pub table: MetaTable,
    /// The namespace.
    pub namespace: String,
    /// The key (for manifests, the blob id's 32 bytes).
    pub key: Vec<u8>,
    /// The writer's hybrid-logical-clock timestamp: the value with the highest one wins.
    pub hlc_timestamp: u64,
    /// The value's length: the request body.
    pub value_bytes: u64,
}

impl MetaPut {
    fn encode_fields(&self, writer: &mut Writer<'_>) -> Result<(), ProtoError> {
        encode_table_namespace(writer, self.table, &self.namespace)?;
        encode_key(writer, &self.key)?;
        writer.u64(self.hlc_timestamp);
        writer.u64(self.value_bytes);
        Ok(())
    }

    fn decode_fields(reader: &mut Reader<'_>) -> Result<Self, ProtoError> {
        let (table, namespace) = decode_table_namespace(reader)?;
        Ok(Self {
            table,
            namespace,
            key: decode_key(reader)?,
            hlc_timestamp: reader.u64("hlc_timestamp")?,
            value_bytes: reader.u64("value_bytes")?,
        })
    }
}
impl_meta!(MetaPut, MetaPut, Request, body = |put| put.value_bytes);

/// Declares a reply whose metadata is one `applied` bool (1 byte).
macro_rules! applied_reply {
    ($(#[$doc:meta])* $name:ident, $op:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name {
            /// False when the node already held a newer timestamp (the write lost, which is
            /// not an error: last writer wins).
            pub applied: bool,
        }

        impl $name {
            fn encode_fields(&self, writer: &mut Writer<'_>) -> Result<(), ProtoError> {
                writer.bool(self.applied);
                Ok(())
            }

            fn decode_fields(reader: &mut Reader<'_>) -> Result<Self, ProtoError> {
                Ok(Self {
                    applied: reader.bool("applied")?,
                })
            }
        }
        impl_meta!($name, $op, Response);
    };
}

applied_reply!(
    /// META_PUT response, sent once the value is durable. Layout: `applied u8`.
    MetaPutReply, MetaPut
);
applied_reply!(
    /// META_DELETE response, sent once the tombstone is durable. Layout: `applied u8`.
    MetaDeleteReply, MetaDelete
);

/// META_GET request. Layout: address (table, namespace, key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaGet {
    /// The table.
    pub table: MetaTable,
    /// The namespace.
    pub namespace: String,
    /// The key.
    pub key: Vec<u8>,
}

impl MetaGet {
    fn encode_fields(&self, writer: &mut Writer<'_>) -> Result<(), ProtoError> {
        encode_table_namespace(writer, self.table, &self.namespace)?;
        encode_key(writer, &self.key)
    }

    fn decode_fields(reader: &mut Reader<'_>) -> Result<Self, ProtoError> {
        let (table, namespace) = decode_table_namespace(reader)?;
        Ok(Self {
            table,
            namespace,
            key: decode_key(reader)?,
        })
    }
}
impl_meta!(MetaGet, MetaGet, Request);

/// Checks the rule shared by replies and list entries: a tombstone has no value.
fn check_tombstone(deleted: bool, value_bytes: u64) -> Result<(), ProtoError> {
    if deleted && value_bytes != 0 {
        return Err(invalid("value_bytes", "a tombstone has no value"));
    }
    Ok(())
}

/// META_GET response: the stored value (the body) or its tombstone. A key never written is
/// NOT_FOUND; a deleted one is a tombstone, so a coordinator repairing replicas can tell
/// "deleted at T" from "never heard of it".
///
/// Layout (17 bytes): `hlc_timestamp u64`, `deleted u8`, `value_bytes u64` (0 if deleted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetaGetReply {
    /// The stored value's (or tombstone's) timestamp.
    pub hlc_timestamp: u64,
    /// Whether the key was deleted at `hlc_timestamp`.
    pub deleted: bool,
    /// The value's length: the response body.
    pub value_bytes: u64,
}

impl MetaGetReply {
    fn encode_fields(&self, writer: &mut Writer<'_>) -> Result<(), ProtoError> {
        check_tombstone(self.deleted, self.value_bytes)?;
        writer.u64(self.hlc_timestamp);
        writer.bool(self.deleted);
        writer.u64(self.value_bytes);
        Ok(())
    }

    fn decode_fields(reader: &mut Reader<'_>) -> Result<Self, ProtoError> {
        let reply = Self {
            hlc_timestamp: reader.u64("hlc_timestamp")?,
            deleted: reader.bool("deleted")?,
            value_bytes: reader.u64("value_bytes")?,
        };
        check_tombstone(reply.deleted, reply.value_bytes)?;
        Ok(reply)
    }
}
impl_meta!(
    MetaGetReply,
    MetaGet,
    Response,
    body = |reply| reply.value_bytes
);

/// META_DELETE request: write a tombstone unless a newer value is stored.
///
/// Layout: address (table, namespace, key), `hlc_timestamp u64`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaDelete {
    /// The table.
    pub table: MetaTable,
    /// The namespace.
    pub namespace: String,
    /// The key.
    pub key: Vec<u8>,
    /// The deleter's hybrid-logical-clock timestamp.
    pub hlc_timestamp: u64,
}

impl MetaDelete {
    fn encode_fields(&self, writer: &mut Writer<'_>) -> Result<(), ProtoError> {
        encode_table_namespace(writer, self.table, &self.namespace)?;
        encode_key(writer, &self.key)?;
        writer.u64(self.hlc_timestamp);
        Ok(())
    }

    fn decode_fields(reader: &mut Reader<'_>) -> Result<Self, ProtoError> {
        let (table, namespace) = decode_table_namespace(reader)?;
        Ok(Self {
            table,
            namespace,
            key: decode_key(reader)?,
            hlc_timestamp: reader.u64("hlc_timestamp")?,
        })
    }
}
impl_meta!(MetaDelete, MetaDelete, Request);

fn check_limit(limit: u32) -> Result<(), ProtoError> {
    if limit == 0 || limit > LIST_LIMIT_MAX {
        return Err(invalid("limit", "a page holds 1..=10000 entries"));
    }
    Ok(())
}

/// META_LIST request: one page of keys starting with `prefix`, in key order.
///
/// Layout: `table u8`, `namespace_len u16`, `namespace`, `prefix_len u16`, `prefix`
/// (0..=1024 bytes), `continuation_len u16`, `continuation` (0..=1024 bytes; empty for the
/// first page), `limit u32` (1..=10000), `include_deleted u8`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaList {
    /// The table.
    pub table: MetaTable,
    /// The namespace.
    pub namespace: String,
    /// Only keys starting with these bytes (empty: all keys).
    pub prefix: Vec<u8>,
    /// The previous page's continuation token, opaque to the client; empty for the first page.
    pub continuation: Vec<u8>,
    /// The most entries to return.
    pub limit: u32,
    /// Whether tombstones are listed too (for replica repair).
    pub include_deleted: bool,
}

impl MetaList {
    fn encode_fields(&self, writer: &mut Writer<'_>) -> Result<(), ProtoError> {
        check_limit(self.limit)?;
        encode_table_namespace(writer, self.table, &self.namespace)?;
        writer.bytes16("prefix", &self.prefix, KEY_BYTES_MAX)?;
        writer.bytes16("continuation", &self.continuation, CONTINUATION_BYTES_MAX)?;
        writer.u32(self.limit);
        writer.bool(self.include_deleted);
        Ok(())
    }

    fn decode_fields(reader: &mut Reader<'_>) -> Result<Self, ProtoError> {
        let (table, namespace) = decode_table_namespace(reader)?;
        let list = Self {
            table,
            namespace,
            prefix: reader.bytes16("prefix", KEY_BYTES_MAX)?.to_vec(),
            continuation: reader
                .bytes16("continuation", CONTINUATION_BYTES_MAX)?
                .to_vec(),
            limit: reader.u32("limit")?,
            include_deleted: reader.bool("include_deleted")?,
        };
        check_limit(list.limit)?;
        Ok(list)
    }
}
impl_meta!(MetaList, MetaList, Request);

/// META_LIST response: the page's entries are the body ([`encode_list_entries`]).
///
/// Layout: `entries u32` (0..=10000), `continuation_len u16`, `continuation` (empty: this was
/// the last page), `body_bytes u64`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaListReply {
    /// How many entries the body holds.
    pub entries: u32,
    /// Pass this back for the next page; empty when the listing is complete.
    pub continuation: Vec<u8>,
    /// The body's length.
    pub body_bytes: u64,
}

impl MetaListReply {
    fn encode_fields(&self, writer: &mut Writer<'_>) -> Result<(), ProtoError> {
        if self.entries > LIST_LIMIT_MAX {
            return Err(invalid("entries", "a page holds at most 10000 entries"));
        }
        writer.u32(self.entries);
        writer.bytes16("continuation", &self.continuation, CONTINUATION_BYTES_MAX)?;
        writer.u64(self.body_bytes);
        Ok(())
    }

    fn decode_fields(reader: &mut Reader<'_>) -> Result<Self, ProtoError> {
        let entries = reader.u32("entries")?;
        if entries > LIST_LIMIT_MAX {
            return Err(invalid("entries", "a page holds at most 10000 entries"));
        }
        Ok(Self {
            entries,
            continuation: reader
                .bytes16("continuation", CONTINUATION_BYTES_MAX)?
                .to_vec(),
            body_bytes: reader.u64("body_bytes")?,
        })
    }
}
impl_meta!(
    MetaListReply,
    MetaList,
    Response,
    body = |reply| reply.body_bytes
);

/// One entry of a META_LIST page.
///
/// Layout: `key_len u16`, `key` (1..=1024 bytes), `hlc_timestamp u64`, `deleted u8`,
/// `value_bytes u64` (0 if deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    /// The key.
    pub key: Vec<u8>,
    /// The value's (or tombstone's) timestamp.
    pub hlc_timestamp: u64,
    /// Whether this is a tombstone.
    pub deleted: bool,
    /// The value's length (not sent: GET it).
    pub value_bytes: u64,
}

/// The smallest encoded entry: a 1-byte key.
const LIST_ENTRY_BYTES_MIN: usize = 2 + 1 + 8 + 1 + 8;

/// Encodes a META_LIST page body.
pub fn encode_list_entries(entries: &[ListEntry]) -> Result<Vec<u8>, ProtoError> {
    if entries.len() > LIST_LIMIT_MAX as usize {
        return Err(invalid("entries", "a page holds at most 10000 entries"));
    }
    let mut out = Vec::new();
    let mut writer = Writer::new(&mut out);
    for entry in entries {
        check_tombstone(entry.deleted, entry.value_bytes)?;
        encode_key(&mut writer, &entry.key)?;
        writer.u64(entry.hlc_timestamp);
        writer.bool(entry.deleted);
        writer.u64(entry.value_bytes);
    }
    Ok(out)
}

/// Decodes a META_LIST page body holding exactly `count` entries (from the reply's metadata).
/// Allocates no more than the body's size justifies, whatever `count` says.
pub fn decode_list_entries(body: &[u8], count: u32) -> Result<Vec<ListEntry>, ProtoError> {
    if count > LIST_LIMIT_MAX {
        return Err(invalid("entries", "a page holds at most 10000 entries"));
    }
    let mut entries = Vec::with_capacity((count as usize).min(body.len() / LIST_ENTRY_BYTES_MIN));
    let mut reader = Reader::new(body);
    for _ in 0..count {
        let entry = ListEntry {
            key: decode_key(&mut reader)?,
            hlc_timestamp: reader.u64("hlc_timestamp")?,
            deleted: reader.bool("deleted")?,
            value_bytes: reader.u64("value_bytes")?,
        };
        check_tombstone(entry.deleted, entry.value_bytes)?;
        entries.push(entry);
    }
    reader.finish()?;
    Ok(entries)
}

/// META_NAMESPACES request: one page of the namespaces this node holds key records or
/// manifests of (tombstones included), in byte order, after `after`.
///
/// Layout: `after_len u16`, `after` (0..=255 bytes; empty for the first page), `limit u32`
/// (1..=10000).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaNamespaces {
    /// The last namespace of the previous page (exclusive); empty for the first page.
    pub after: String,
    /// The most namespaces to return.
    pub limit: u32,
}

impl MetaNamespaces {
    fn encode_fields(&self, writer: &mut Writer<'_>) -> Result<(), ProtoError> {
        check_limit(self.limit)?;
        writer.str16("after", &self.after, NAMESPACE_BYTES_MAX)?;
        writer.u32(self.limit);
        Ok(())
    }

    fn decode_fields(reader: &mut Reader<'_>) -> Result<Self, ProtoError> {
        let after = reader.str16("after", NAMESPACE_BYTES_MAX)?.to_owned();
        let limit = reader.u32("limit")?;
        check_limit(limit)?;
        Ok(Self { after, limit })
    }
}
impl_meta!(MetaNamespaces, MetaNamespaces, Request);

/// META_NAMESPACES response: the page's namespaces are the body, each `namespace_len u16`,
/// `namespace`.
///
/// Layout: `namespaces u32` (0..=10000), `more u8`, `body_bytes u64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetaNamespacesReply {
    /// How many namespaces the body holds.
    pub namespaces: u32,
    /// Whether more follow the last one.
    pub more: bool,
    /// The body's length.
    pub body_bytes: u64,
}

impl MetaNamespacesReply {
    fn encode_fields(&self, writer: &mut Writer<'_>) -> Result<(), ProtoError> {
        if self.namespaces > LIST_LIMIT_MAX {
            return Err(invalid("namespaces", "a page holds at most 10000 entries"));
        }
        writer.u32(self.namespaces);
        writer.bool(self.more);
        writer.u64(self.body_bytes);
        Ok(())
    }

    fn decode_fields(reader: &mut Reader<'_>) -> Result<Self, ProtoError> {
        let reply = Self {
            namespaces: reader.u32("namespaces")?,
            more: reader.bool("more")?,
            body_bytes: reader.u64("body_bytes")?,
        };
        if reply.namespaces > LIST_LIMIT_MAX {
            return Err(invalid("namespaces", "a page holds at most 10000 entries"));
        }
        Ok(reply)
    }
}
impl_meta!(
    MetaNamespacesReply,
    MetaNamespaces,
    Response,
    body = |reply| reply.body_bytes
);

/// Encodes a META_NAMESPACES page body.
pub fn encode_namespaces(namespaces: &[String]) -> Result<Vec<u8>, ProtoError> {
    let mut out = Vec::new();
    let mut writer = Writer::new(&mut out);
    for namespace in namespaces {
        if namespace.is_empty() {
            return Err(invalid("namespace", "a namespace is 1..=255 bytes"));
        }
        writer.str16("namespace", namespace, NAMESPACE_BYTES_MAX)?;
    }
    Ok(out)
}

/// Decodes a META_NAMESPACES page body holding exactly `count` namespaces.
pub fn decode_namespaces(body: &[u8], count: u32) -> Result<Vec<String>, ProtoError> {
    let mut reader = Reader::new(body);
    let mut namespaces = Vec::with_capacity((count as usize).min(body.len() / 3));
    for _ in 0..count {
        let namespace = reader.str16("namespace", NAMESPACE_BYTES_MAX)?;
        if namespace.is_empty() {
            return Err(invalid("namespace", "a namespace is 1..=255 bytes"));
        }
        namespaces.push(namespace.to_owned());
    }
    reader.finish()?;
    Ok(namespaces)
}
