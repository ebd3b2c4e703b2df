//! Sample metadata for every op and direction, shared by the integration tests.

#![allow(dead_code)] // each test binary uses a different part

use nabu_core::ec::CodecId;
use nabu_core::id::StripeId;
use nabu_core::ring::NodeId;
use nabu_proto::ClusterToken;
use nabu_proto::ops::*;
use nabu_proto::{Request, Response};

/// The token of the protocol document's worked example: bytes 0x00..=0x1f.
pub fn example_token() -> ClusterToken {
    let bytes: Vec<u8> = (0u8..32).collect();
    ClusterToken::new(&bytes).expect("32 bytes is a valid token")
}

/// The HELLO of the protocol document's worked example.
pub fn example_hello() -> HelloRequest {
    HelloRequest {
        plane: Plane::Data,
        features: 0,
        token: example_token(),
        client_name: "example".to_owned(),
    }
}

pub fn stripe_id() -> StripeId {
    StripeId::of(b"a stripe")
}

pub fn erasure_shard() -> ShardInfo {
    ShardInfo {
        layout: ShardLayout::Erasure {
            codec: CodecId::RS_CAUCHY_GF256,
            data_shards: 4,
            parity_shards: 2,
            index: 5,
        },
        stripe_bytes: 4 << 20,
        shard_bytes: 1 << 20,
        shard_crc: 0xdead_beef,
    }
}

pub fn whole_shard() -> ShardInfo {
    ShardInfo {
        layout: ShardLayout::Whole,
        stripe_bytes: 12_345,
        shard_bytes: 12_345,
        shard_crc: 7,
    }
}

/// At least one request of every op, with fields at their edges (empty, longest, largest).
pub fn requests() -> Vec<Request> {
    vec![
        Request::Hello(example_hello()),
        Request::Hello(HelloRequest {
            plane: Plane::Peer,
            features: u64::MAX,
            token: ClusterToken::new(&[0xee; 256]).expect("256 bytes"),
            client_name: "n".repeat(128),
        }),
        Request::Ping(Ping),
        Request::NodeStatus(NodeStatus),
        Request::ShardPut(ShardPut {
            stripe_id: stripe_id(),
            shard: erasure_shard(),
        }),
        Request::ShardPut(ShardPut {
            stripe_id: stripe_id(),
            shard: whole_shard(),
        }),
        Request::ShardGet(ShardGet {
            stripe_id: stripe_id(),
            range: None,
        }),
        Request::ShardGet(ShardGet {
            stripe_id: stripe_id(),
            range: Some(ByteRange {
                offset: 4096,
                bytes: 8192,
            }),
        }),
        Request::ShardDelete(ShardDelete {
            stripe_id: stripe_id(),
        }),
        Request::ShardStat(ShardStat {
            stripe_id: stripe_id(),
        }),
        Request::ShardList(ShardList {
            after: None,
            limit: 1,
        }),
        Request::ShardList(ShardList {
            after: Some(stripe_id()),
            limit: SHARD_LIST_LIMIT_MAX,
        }),
        Request::MetaNamespaces(MetaNamespaces {
            after: String::new(),
            limit: 100,
        }),
        Request::GcSweep(GcSweep {
            grace_ms: 3_600_000,
            run_id: 77,
            last: true,
            shards: 2,
            manifests: 1,
            body_bytes: 64 + 2 + 7 + 32,
        }),
        Request::HintPut(HintPut {
            stripe_id: stripe_id(),
            home: 7,
            kind: HintKind::Handoff,
            shard: erasure_shard(),
        }),
        Request::HintPut(HintPut {
            stripe_id: stripe_id(),
            home: u32::MAX,
            kind: HintKind::Repair,
            shard: whole_shard(),
        }),
        Request::MetaPut(MetaPut {
            table: MetaTable::KeyRecords,
            namespace: "weights".to_owned(),
            key: b"llama-3-8b/model-00001.safetensors".to_vec(),
            hlc_timestamp: 0x0001_8f00_0000_0001,
            value_bytes: 150,
        }),
        Request::MetaGet(MetaGet {
            table: MetaTable::Manifests,
            namespace: "n".repeat(NAMESPACE_BYTES_MAX),
            key: vec![0xff; KEY_BYTES_MAX],
        }),
        Request::MetaDelete(MetaDelete {
            table: MetaTable::KeyRecords,
            namespace: "kv".to_owned(),
            key: vec![0],
            hlc_timestamp: u64::MAX,
        }),
        Request::MetaList(MetaList {
            table: MetaTable::KeyRecords,
            namespace: "weights".to_owned(),
            prefix: Vec::new(),
            continuation: Vec::new(),
            limit: 1,
            include_deleted: false,
        }),
        Request::MetaList(MetaList {
            table: MetaTable::Manifests,
            namespace: "ckpt".to_owned(),
            prefix: b"run-7/".to_vec(),
            continuation: vec![1; CONTINUATION_BYTES_MAX],
            limit: LIST_LIMIT_MAX,
            include_deleted: true,
        }),
        Request::KvPut(KvPut {
            namespace: "kv".to_owned(),
            entries: vec![
                KvPutEntry {
                    key: b"vllm@model@1@0@42kv_bytes".to_vec(),
                    value_bytes: 2 << 20,
                    ttl_ms: 0,
                    pin: false,
                    condition: KvCondition::Always,
                },
                KvPutEntry {
                    key: vec![0xff; KEY_BYTES_MAX],
                    value_bytes: 0,
                    ttl_ms: u64::MAX,
                    pin: true,
                    condition: KvCondition::IfAbsent,
                },
            ],
        }),
        Request::KvGet(KvGet {
            namespace: "kv".to_owned(),
            keys: vec![b"a".to_vec(), b"b".to_vec()],
        }),
        Request::KvDelete(KvDelete {
            namespace: "kv".to_owned(),
            keys: Vec::new(),
        }),
        Request::KvExists(KvExists {
            namespace: "kv".to_owned(),
            lease_ms: 30_000,
            keys: vec![b"a".to_vec()],
        }),
        Request::KvPrefixLookup(KvPrefixLookup {
            namespace: "kv".to_owned(),
            lease_ms: 0,
            keys: (0..64).map(|n: u32| n.to_le_bytes().to_vec()).collect(),
        }),
        Request::KvTtl(KvTtl {
            namespace: "kv".to_owned(),
            key: b"a".to_vec(),
            action: KvTtlAction::Set,
            ttl_ms: 1000,
        }),
        Request::KvScan(KvScan {
            namespace: "kv".to_owned(),
            cursor: 7,
            count: KV_SCAN_COUNT_MAX,
        }),
        Request::KvPin(KvPin {
            namespace: "kv".to_owned(),
            pinned: true,
            keys: vec![b"a".to_vec()],
        }),
        Request::MembersGet(MembersGet),
        Request::MembersPut(MembersPut(MemberListHeader {
            epoch: 2,
            members: 8,
            body_bytes: 400,
        })),
    ]
}

/// At least one response of every op.
pub fn responses() -> Vec<Response> {
    vec![
        Response::Hello(HelloReply {
            node_id: NodeId(3),
            ring_epoch: 42,
            features: 0,
            meta_bytes_max: u16::MAX,
            frame_body_bytes_max: 4 << 20,
            request_body_bytes_max: 64 << 20,
            inflight_max: 128,
        }),
        Response::Ping(PingReply),
        Response::NodeStatus(NodeStatusReply {
            node_id: NodeId(u32::MAX),
            state: NodeState::Draining,
            ring_epoch: 9,
            uptime_s: 3600,
            shards: 1_000_000,
            bytes_used: 1 << 40,
            bytes_capacity: 4 << 40,
            requests_inflight: 17,
            connections: 5,
        }),
        Response::ShardPut(ShardPutReply {
            outcome: PutOutcome::Stored,
        }),
        Response::ShardPut(ShardPutReply {
            outcome: PutOutcome::AlreadyHeld,
        }),
        Response::ShardGet(ShardGetReply {
            shard: erasure_shard(),
            offset: 0,
            body_bytes: 1 << 20,
        }),
        Response::ShardGet(ShardGetReply {
            shard: whole_shard(),
            offset: 345,
            body_bytes: 12_000,
        }),
        Response::ShardDelete(ShardDeleteReply { existed: true }),
        Response::ShardStat(ShardStatReply {
            shard: whole_shard(),
        }),
        Response::HintPut(HintPutReply { hints_pending: 3 }),
        Response::ShardList(ShardListReply {
            stripes: 2,
            more: true,
        }),
        Response::MetaNamespaces(MetaNamespacesReply {
            namespaces: 2,
            more: false,
            body_bytes: 14,
        }),
        Response::GcSweep(GcSweepReply {
            shards_deleted: 5,
            manifests_deleted: 1,
            condemned: 7,
            kept_recent: 2,
            bytes_freed: 1 << 30,
        }),
        Response::KvPut(KvPutReply {
            outcomes: vec![
                KvPutOutcome::Stored,
                KvPutOutcome::ConditionFailed,
                KvPutOutcome::Dropped,
            ],
        }),
        Response::KvGet(KvGetReply {
            entries: vec![
                KvGetEntry {
                    found: true,
                    value_bytes: 5,
                    crc32c: 0xdead_beef,
                },
                KvGetEntry {
                    found: false,
                    value_bytes: 0,
                    crc32c: 0,
                },
            ],
        }),
        Response::KvDelete(KvDeleteReply { deleted: 2 }),
        Response::KvExists(KvExistsReply {
            exists: vec![true, false],
        }),
        Response::KvPrefixLookup(KvPrefixLookupReply { prefix: 64 }),
        Response::KvTtl(KvTtlReply {
            exists: true,
            has_ttl: true,
            ttl_ms: 999,
        }),
        Response::KvScan(KvScanReply {
            next_cursor: 0,
            keys_total: 3,
            entries: 1,
            body_bytes: 3,
        }),
        Response::KvPin(KvPinReply { changed: 1 }),
        Response::MembersGet(MembersGetReply(MemberListHeader {
            epoch: 1,
            members: 6,
            body_bytes: 300,
        })),
        Response::MembersPut(MembersPutReply {
            applied: true,
            epoch: 2,
        }),
        Response::MetaPut(MetaPutReply { applied: false }),
        Response::MetaGet(MetaGetReply {
            hlc_timestamp: 5,
            deleted: false,
            value_bytes: 150,
        }),
        Response::MetaGet(MetaGetReply {
            hlc_timestamp: 6,
            deleted: true,
            value_bytes: 0,
        }),
        Response::MetaDelete(MetaDeleteReply { applied: true }),
        Response::MetaList(MetaListReply {
            entries: 2,
            continuation: b"weights/z".to_vec(),
            body_bytes: 45,
        }),
        Response::MetaList(MetaListReply {
            entries: 0,
            continuation: Vec::new(),
            body_bytes: 0,
        }),
    ]
}

/// Encodes a request's metadata.
pub fn encode_request(request: &Request) -> Vec<u8> {
    let mut out = Vec::new();
    request.encode(&mut out).expect("sample requests encode");
    out
}

/// Encodes a response's metadata.
pub fn encode_response(response: &Response) -> Vec<u8> {
    let mut out = Vec::new();
    response.encode(&mut out).expect("sample responses encode");
    out
}
