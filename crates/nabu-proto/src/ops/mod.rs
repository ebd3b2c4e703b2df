//! Ops and their metadata.
//!
//! Each op has a request metadata type and a response metadata type, each with an exact,
//! canonical encoding (fixed-width little-endian integers, `u16`-length-prefixed byte strings
//! with a bound per field, bools that are 0 or 1, no trailing bytes), so
//! `decode(encode(x)) == x` and every accepted byte string re-encodes to itself. Bodies (shard
//! bytes, key-record and manifest bytes) are never in the metadata: they follow it in the frame
//! and in DATA frames, and the metadata declares their total length up front
//! ([`Meta::body_bytes`]) so the receiver can refuse or reserve before the first body byte.

mod connection;
mod gc;
mod hint;
mod kv;
mod membership;
mod metadata;
mod shard;

use std::fmt;

pub use connection::{
    CLIENT_NAME_BYTES_MAX, HelloReply, HelloRequest, NodeState, NodeStatus, NodeStatusReply, Ping,
    PingReply, Plane,
};
pub use gc::{
    GcSweep, GcSweepReply, ManifestRef, SHARD_LIST_LIMIT_MAX, SWEEP_ITEMS_MAX, ShardList,
    ShardListReply, SweepRun, decode_stripe_ids, decode_sweep_body, encode_stripe_ids,
    encode_sweep_body,
};
pub use hint::{HintKind, HintPut, HintPutReply};
pub use kv::{
    KV_BATCH_KEYS_MAX, KV_GROUP_HEAD_SUFFIX, KV_GROUP_MEMBER_SUFFIX, KV_SCAN_COUNT_MAX,
    KvCondition, KvDelete, KvDeleteReply, KvExists, KvExistsReply, KvGet, KvGetEntry, KvGetReply,
    KvPin, KvPinReply, KvPrefixLookup, KvPrefixLookupReply, KvPut, KvPutEntry, KvPutOutcome,
    KvPutReply, KvScan, KvScanReply, KvTtl, KvTtlAction, KvTtlReply, decode_scan_keys,
    encode_scan_keys, kv_group_head, kv_group_member, kv_group_stem,
};
pub use membership::{
    MEMBERS_MAX, MemberEntry, MemberListHeader, MembersGet, MembersGetReply, MembersPut,
    MembersPutReply, ZONE_BYTES_MAX, decode_members, encode_members,
};
pub use metadata::{
    CONTINUATION_BYTES_MAX, KEY_BYTES_MAX, LIST_LIMIT_MAX, ListEntry, MetaDelete, MetaDeleteReply,
    MetaGet, MetaGetReply, MetaList, MetaListReply, MetaNamespaces, MetaNamespacesReply, MetaPut,
    MetaPutReply, MetaTable, NAMESPACE_BYTES_MAX, decode_list_entries, decode_namespaces,
    encode_list_entries, encode_namespaces,
};
pub use shard::{
    ByteRange, PutOutcome, ShardDelete, ShardDeleteReply, ShardGet, ShardGetReply, ShardInfo,
    ShardLayout, ShardPut, ShardPutReply, ShardStat, ShardStatReply,
};

use crate::error::ProtoError;
use crate::header::FrameKind;

/// An operation (u16 on the wire). The high byte groups them: `0x00` connection, `0x01` shards,
/// `0x02` key records and manifests, `0x03` hints (repair work kept by nodes), `0x04` garbage
/// collection, `0x05` the KV cache, `0x06` membership. Code 0 is never an
/// op.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u16)]
pub enum Op {
    /// Authenticate and learn the node: must be the first request on a connection.
    Hello = 0x0001,
    /// Round trip, nothing else.
    Ping = 0x0002,
    /// The node's state, ring epoch and space.
    NodeStatus = 0x0003,
    /// Store one shard of a stripe.
    ShardPut = 0x0101,
    /// Read one shard (or a byte range of it); the reply names the shard's index.
    ShardGet = 0x0102,
    /// Drop this node's shard of a stripe.
    ShardDelete = 0x0103,
    /// Describe this node's shard of a stripe without reading it.
    ShardStat = 0x0104,
    /// List the stripes this node holds a shard of, a page at a time.
    ShardList = 0x0105,
    /// Write a key record or manifest (last writer wins by HLC timestamp).
    MetaPut = 0x0201,
    /// Read a key record or manifest.
    MetaGet = 0x0202,
    /// Delete a key record or manifest (writes a tombstone).
    MetaDelete = 0x0203,
    /// List key records or manifests by prefix, a page at a time.
    MetaList = 0x0204,
    /// List the namespaces this node holds metadata of, a page at a time.
    MetaNamespaces = 0x0205,
    /// Keep a hint: a shard that belongs on another node, to move or rebuild there.
    HintPut = 0x0301,
    /// Drop shards and manifests no key references, unless written within a grace period.
    GcSweep = 0x0401,
    /// Store a batch of values in the KV pool.
    KvPut = 0x0501,
    /// Read a batch of values from the KV pool.
    KvGet = 0x0502,
    /// Drop a batch of keys from the KV pool.
    KvDelete = 0x0503,
    /// Which of a batch of keys exist (optionally leasing them).
    KvExists = 0x0504,
    /// The longest existing prefix of an ordered key list, leased, in one round trip.
    KvPrefixLookup = 0x0505,
    /// Read or change one key's time to live.
    KvTtl = 0x0506,
    /// One page of this node's keys (tooling).
    KvScan = 0x0507,
    /// Pin or unpin keys.
    KvPin = 0x0508,
    /// The member list (and ring epoch) the node is on.
    MembersGet = 0x0601,
    /// Offer a member list; the node applies it if its epoch is higher than its own.
    MembersPut = 0x0602,
}

impl Op {
    /// Every op, in code order.
    pub const ALL: [Op; 25] = [
        Op::Hello,
        Op::Ping,
        Op::NodeStatus,
        Op::ShardPut,
        Op::ShardGet,
        Op::ShardDelete,
        Op::ShardStat,
        Op::ShardList,
        Op::MetaPut,
        Op::MetaGet,
        Op::MetaDelete,
        Op::MetaList,
        Op::MetaNamespaces,
        Op::HintPut,
        Op::GcSweep,
        Op::KvPut,
        Op::KvGet,
        Op::KvDelete,
        Op::KvExists,
        Op::KvPrefixLookup,
        Op::KvTtl,
        Op::KvScan,
        Op::KvPin,
        Op::MembersGet,
        Op::MembersPut,
    ];

    /// The op with this code, or [`ProtoError::UnknownOp`] (which the receiver answers with an
    /// ERROR frame, code UNKNOWN_OP, and keeps the connection).
    pub fn from_code(code: u16) -> Result<Op, ProtoError> {
        Op::ALL
            .into_iter()
            .find(|op| op.code() == code)
            .ok_or(ProtoError::UnknownOp { op: code })
    }

    /// The wire code.
    pub const fn code(self) -> u16 {
        self as u16
    }

    /// The name the protocol document uses (`SHARD_GET`).
    pub fn name(self) -> &'static str {
        match self {
            Op::Hello => "HELLO",
            Op::Ping => "PING",
            Op::NodeStatus => "NODE_STATUS",
            Op::ShardPut => "SHARD_PUT",
            Op::ShardGet => "SHARD_GET",
            Op::ShardDelete => "SHARD_DELETE",
            Op::ShardStat => "SHARD_STAT",
            Op::ShardList => "SHARD_LIST",
            Op::MetaPut => "META_PUT",
            Op::MetaGet => "META_GET",
            Op::MetaDelete => "META_DELETE",
            Op::MetaList => "META_LIST",
            Op::MetaNamespaces => "META_NAMESPACES",
            Op::HintPut => "HINT_PUT",
            Op::GcSweep => "GC_SWEEP",
            Op::KvPut => "KV_PUT",
            Op::KvGet => "KV_GET",
            Op::KvDelete => "KV_DELETE",
            Op::KvExists => "KV_EXISTS",
            Op::KvPrefixLookup => "KV_PREFIX_LOOKUP",
            Op::KvTtl => "KV_TTL",
            Op::KvScan => "KV_SCAN",
            Op::KvPin => "KV_PIN",
            Op::MembersGet => "MEMBERS_GET",
            Op::MembersPut => "MEMBERS_PUT",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The metadata of one op in one direction.
pub trait Meta: Sized {
    /// The op this metadata belongs to.
    const OP: Op;
    /// [`FrameKind::Request`] or [`FrameKind::Response`].
    const KIND: FrameKind;

    /// Appends the encoding to `out`; fails (writing nothing useful) if a field is over its
    /// bound or inconsistent.
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtoError>;

    /// Decodes exactly `bytes`; any bytes left over are an error.
    fn decode(bytes: &[u8]) -> Result<Self, ProtoError>;

    /// The total body length this metadata declares for its request or response (the sum of
    /// the body bytes of its first frame and all its DATA frames). Zero for bodiless ops.
    fn body_bytes(&self) -> u64 {
        0
    }

    /// The encoding in a new vector.
    fn to_vec(&self) -> Result<Vec<u8>, ProtoError> {
        let mut out = Vec::new();
        self.encode(&mut out)?;
        Ok(out)
    }
}

/// Declares the `Request` and `Response` enums: one variant per op, decoding by op code.
macro_rules! op_enums {
    ($($op:ident => $request:ident, $response:ident;)*) => {
        /// Any request's metadata, decoded by op code (what a server dispatches on).
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Request {
            $(#[doc = concat!("`", stringify!($op), "`")] $op($request),)*
        }

        /// Any response's metadata, decoded by op code (what a client matches on).
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Response {
            $(#[doc = concat!("`", stringify!($op), "`")] $op($response),)*
        }

        impl Request {
            /// Decodes request metadata for the op with this code.
            pub fn decode(op_code: u16, meta: &[u8]) -> Result<Self, ProtoError> {
                Ok(match Op::from_code(op_code)? {
                    $(Op::$op => Self::$op($request::decode(meta)?),)*
                })
            }

            /// The op.
            pub fn op(&self) -> Op {
                match self {
                    $(Self::$op(_) => Op::$op,)*
                }
            }

            /// The body length the request declares.
            pub fn body_bytes(&self) -> u64 {
                match self {
                    $(Self::$op(meta) => meta.body_bytes(),)*
                }
            }

            /// Appends the encoded metadata to `out`.
            pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtoError> {
                match self {
                    $(Self::$op(meta) => meta.encode(out),)*
                }
            }
        }

        impl Response {
            /// Decodes response metadata for the op with this code.
            pub fn decode(op_code: u16, meta: &[u8]) -> Result<Self, ProtoError> {
                Ok(match Op::from_code(op_code)? {
                    $(Op::$op => Self::$op($response::decode(meta)?),)*
                })
            }

            /// The op.
            pub fn op(&self) -> Op {
                match self {
                    $(Self::$op(_) => Op::$op,)*
                }
            }

            /// The body length the response declares.
            pub fn body_bytes(&self) -> u64 {
                match self {
                    $(Self::$op(meta) => meta.body_bytes(),)*
                }
            }

            /// Appends the encoded metadata to `out`.
            pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtoError> {
                match self {
                    $(Self::$op(meta) => meta.encode(out),)*
                }
            }
        }
    };
}

op_enums! {
    Hello => HelloRequest, HelloReply;
    Ping => Ping, PingReply;
    NodeStatus => NodeStatus, NodeStatusReply;
    ShardPut => ShardPut, ShardPutReply;
    ShardGet => ShardGet, ShardGetReply;
    ShardDelete => ShardDelete, ShardDeleteReply;
    ShardStat => ShardStat, ShardStatReply;
    ShardList => ShardList, ShardListReply;
    MetaPut => MetaPut, MetaPutReply;
    MetaGet => MetaGet, MetaGetReply;
    MetaDelete => MetaDelete, MetaDeleteReply;
    MetaList => MetaList, MetaListReply;
    MetaNamespaces => MetaNamespaces, MetaNamespacesReply;
    HintPut => HintPut, HintPutReply;
    GcSweep => GcSweep, GcSweepReply;
    KvPut => KvPut, KvPutReply;
    KvGet => KvGet, KvGetReply;
    KvDelete => KvDelete, KvDeleteReply;
    KvExists => KvExists, KvExistsReply;
    KvPrefixLookup => KvPrefixLookup, KvPrefixLookupReply;
    KvTtl => KvTtl, KvTtlReply;
    KvScan => KvScan, KvScanReply;
    KvPin => KvPin, KvPinReply;
    MembersGet => MembersGet, MembersGetReply;
    MembersPut => MembersPut, MembersPutReply;
}

/// Implements [`Meta`] for a type with inherent `encode_fields`/`decode_fields` methods.
macro_rules! impl_meta {
    ($type:ty, $op:ident, $kind:ident $(, body = |$this:ident| $body:expr)?) => {
        impl $crate::ops::Meta for $type {
            const OP: $crate::ops::Op = $crate::ops::Op::$op;
            const KIND: $crate::header::FrameKind = $crate::header::FrameKind::$kind;

            fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtoError> {
                let start = out.len();
                let result = self.encode_fields(&mut $crate::wire::Writer::new(out));
                if result.is_err() {
                    out.truncate(start);
                }
                result
            }

            fn decode(bytes: &[u8]) -> Result<Self, ProtoError> {
                let mut reader = $crate::wire::Reader::new(bytes);
                let value = Self::decode_fields(&mut reader)?;
                reader.finish()?;
                Ok(value)
            }

            $(fn body_bytes(&self) -> u64 {
                let $this = self;
                $body
            })?
        }
    };
}
pub(crate) use impl_meta;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_codes_are_unique_and_round_trip() {
        for op in Op::ALL {
            assert_eq!(Op::from_code(op.code()), Ok(op));
            assert_ne!(op.code(), 0);
        }
        let mut codes: Vec<u16> = Op::ALL.iter().map(|op| op.code()).collect();
        codes.dedup();
        assert_eq!(codes.len(), Op::ALL.len());
        assert!(codes.is_sorted());
        for unknown in [
            0, 4, 0x0100, 0x0106, 0x0300, 0x0302, 0x0400, 0x0402, 0x0500, 0x0509, 0x0600, 0x0603,
            0xffff,
        ] {
            assert_eq!(
                Op::from_code(unknown),
                Err(ProtoError::UnknownOp { op: unknown })
            );
            assert_eq!(
                Request::decode(unknown, &[]),
                Err(ProtoError::UnknownOp { op: unknown })
            );
            assert_eq!(
                Response::decode(unknown, &[]),
                Err(ProtoError::UnknownOp { op: unknown })
            );
        }
    }
}
