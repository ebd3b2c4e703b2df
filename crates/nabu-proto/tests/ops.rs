//! Every op's metadata: round trips, exact layouts, and refusals of malformed or out-of-domain
//! values.

mod common;

use std::collections::HashSet;

use bytes::{Bytes, BytesMut};
use common::*;
use nabu_core::ec::CodecId;
use nabu_proto::ops::*;
use nabu_proto::{
    ErrorCode, Frame, FrameDecoder, FrameKind, Limits, ProtoError, Request, Response,
};

#[test]
fn every_op_has_request_and_response_samples() {
    let request_ops: HashSet<Op> = requests().iter().map(Request::op).collect();
    let response_ops: HashSet<Op> = responses().iter().map(Response::op).collect();
    for op in Op::ALL {
        assert!(request_ops.contains(&op), "no request sample for {op}");
        assert!(response_ops.contains(&op), "no response sample for {op}");
    }
}

#[test]
fn every_request_round_trips_through_metadata_and_frames() {
    let mut decoder = FrameDecoder::new(Limits::default());
    for (request_id, request) in (1..).zip(requests()) {
        let meta = encode_request(&request);
        assert_eq!(
            Request::decode(request.op().code(), &meta).unwrap(),
            request
        );
        let frame = Frame::new(
            FrameKind::Request,
            request.op().code(),
            request_id,
            nabu_proto::Flags::NONE,
            Bytes::from(meta),
            Bytes::new(),
        )
        .unwrap();
        let mut buffer = BytesMut::from(&frame.to_vec()[..]);
        let decoded = decoder.decode(&mut buffer).unwrap().unwrap();
        assert_eq!(decoded.header().request_id(), request_id);
        assert_eq!(
            Request::decode(decoded.header().op_code(), decoded.meta()).unwrap(),
            request
        );
    }
}

#[test]
fn every_response_round_trips() {
    for response in responses() {
        let meta = encode_response(&response);
        assert_eq!(
            Response::decode(response.op().code(), &meta).unwrap(),
            response
        );
    }
}

#[test]
fn typed_frame_helpers_round_trip() {
    let put = ShardPut {
        stripe_id: stripe_id(),
        shard: whole_shard(),
    };
    let frame = Frame::from_meta(5, &put, Bytes::from(vec![1u8; 100]), true).unwrap();
    assert_eq!(frame.header().kind(), FrameKind::Request);
    assert_eq!(frame.op(), Ok(Op::ShardPut));
    assert!(frame.header().more());
    assert_eq!(frame.decode_meta::<ShardPut>().unwrap(), put);
    assert_eq!(put.body_bytes(), 12_345);
    let reply = ShardPutReply {
        outcome: PutOutcome::Stored,
    };
    let frame = Frame::from_meta(5, &reply, Bytes::new(), false).unwrap();
    assert_eq!(frame.header().kind(), FrameKind::Response);
    assert_eq!(frame.decode_meta::<ShardPutReply>().unwrap(), reply);
}

#[test]
fn fixed_layouts_have_the_documented_sizes() {
    let size = |request: Request| encode_request(&request).len();
    assert_eq!(size(Request::Ping(Ping)), 0);
    assert_eq!(size(Request::NodeStatus(NodeStatus)), 0);
    let put = ShardPut {
        stripe_id: stripe_id(),
        shard: erasure_shard(),
    };
    assert_eq!(size(Request::ShardPut(put)), 56);
    let get = ShardGet {
        stripe_id: stripe_id(),
        range: None,
    };
    assert_eq!(size(Request::ShardGet(get)), 49);
    let hint = HintPut {
        stripe_id: stripe_id(),
        home: 2,
        kind: HintKind::Repair,
        shard: erasure_shard(),
    };
    assert_eq!(size(Request::HintPut(hint)), 61);
    let delete = ShardDelete {
        stripe_id: stripe_id(),
    };
    assert_eq!(size(Request::ShardDelete(delete)), 32);
    // HELLO: plane 1 + features 8 + (2 + 32) token + (2 + 7) name.
    assert_eq!(size(Request::Hello(example_hello())), 52);

    let sizes: Vec<(Op, usize)> = responses()
        .iter()
        .map(|response| (response.op(), encode_response(response).len()))
        .collect();
    for (op, expected) in [
        (Op::Hello, 38),
        (Op::Ping, 0),
        (Op::NodeStatus, 53),
        (Op::ShardPut, 1),
        (Op::ShardGet, 40),
        (Op::ShardDelete, 1),
        (Op::ShardStat, 24),
        (Op::HintPut, 4),
        (Op::MetaPut, 1),
        (Op::MetaGet, 17),
        (Op::MetaDelete, 1),
    ] {
        assert!(
            sizes.contains(&(op, expected)),
            "{op} response is not {expected} bytes"
        );
    }
}

#[test]
fn shard_put_layout_is_pinned_byte_by_byte() {
    let put = ShardPut {
        stripe_id: nabu_core::id::StripeId::from_bytes([0xaa; 32]),
        shard: erasure_shard(),
    };
    let bytes = put.to_vec().unwrap();
    let mut expected = vec![0xaa; 32];
    expected.extend_from_slice(&[1, 4, 2, 5]); // codec, K, M, index
    expected.extend_from_slice(&(4u64 << 20).to_le_bytes());
    expected.extend_from_slice(&(1u64 << 20).to_le_bytes());
    expected.extend_from_slice(&0xdead_beefu32.to_le_bytes());
    assert_eq!(bytes, expected);
}

/// A metadata decoder for one direction, by op code.
type Decode = dyn Fn(u16, &[u8]) -> Result<(), ProtoError>;

#[test]
fn every_truncation_and_extension_of_every_sample_is_refused() {
    let check = |op: Op, meta: &[u8], decode: &Decode| {
        for cut in 0..meta.len() {
            let error = decode(op.code(), &meta[..cut]).unwrap_err();
            assert_eq!(error.code(), ErrorCode::BAD_REQUEST, "{op}: {error}");
            assert!(!error.is_fatal(), "{op}: {error}");
        }
        let mut longer = meta.to_vec();
        longer.push(0);
        assert_eq!(
            decode(op.code(), &longer),
            Err(ProtoError::TrailingBytes { extra: 1 }),
            "{op}"
        );
    };
    for request in requests() {
        check(request.op(), &encode_request(&request), &|op, meta| {
            Request::decode(op, meta).map(drop)
        });
    }
    for response in responses() {
        check(response.op(), &encode_response(&response), &|op, meta| {
            Response::decode(op, meta).map(drop)
        });
    }
}

/// Decodes a request after `edit` changed its encoding; the refusal's field name.
fn refused_field(request: &Request, edit: impl FnOnce(&mut Vec<u8>)) -> &'static str {
    let mut meta = encode_request(request);
    edit(&mut meta);
    match Request::decode(request.op().code(), &meta) {
        Err(ProtoError::InvalidField { field, .. }) => field,
        Err(ProtoError::FieldTooLong { field, .. }) => field,
        other => panic!("expected a refused field, got {other:?}"),
    }
}

#[test]
fn out_of_domain_values_are_refused_with_the_field_named() {
    let hello = Request::Hello(example_hello());
    assert_eq!(refused_field(&hello, |m| m[0] = 3), "plane");
    // Token length 15: below the minimum.
    assert_eq!(
        refused_field(&hello, |m| {
            m[9] = 15;
            m.drain(11 + 15..11 + 32);
        }),
        "token"
    );
    assert_eq!(
        refused_field(&hello, |m| {
            let name_at = 11 + 32 + 2;
            m[name_at] = 0xff;
        }),
        "client_name"
    );

    let put = |shard: ShardInfo| {
        Request::ShardPut(ShardPut {
            stripe_id: stripe_id(),
            shard,
        })
    };
    // Index 6 of a 4+2 stripe; K = 0; K + M > 255; whole stripe with K set.
    assert_eq!(
        refused_field(&put(erasure_shard()), |m| m[35] = 6),
        "shard_index"
    );
    assert_eq!(
        refused_field(&put(erasure_shard()), |m| m[33] = 0),
        "data_shards"
    );
    assert_eq!(
        refused_field(&put(erasure_shard()), |m| {
            m[33] = 200;
            m[34] = 100;
        }),
        "parity_shards"
    );
    assert_eq!(
        refused_field(&put(whole_shard()), |m| m[33] = 1),
        "data_shards"
    );
    // A whole-stripe shard shorter than its stripe; erasure shards too short for the stripe.
    assert_eq!(
        refused_field(&put(whole_shard()), |m| m[44] ^= 1),
        "shard_bytes"
    );
    assert_eq!(
        refused_field(&put(erasure_shard()), |m| m[44..52]
            .copy_from_slice(&1u64.to_le_bytes())),
        "shard_bytes"
    );

    let get = Request::ShardGet(ShardGet {
        stripe_id: stripe_id(),
        range: None,
    });
    assert_eq!(refused_field(&get, |m| m[32] = 2), "has_range");
    assert_eq!(refused_field(&get, |m| m[33] = 1), "range_offset");
    assert_eq!(refused_field(&get, |m| m[32] = 1), "range_bytes"); // empty range
    assert_eq!(
        refused_field(&get, |m| {
            m[32] = 1;
            m[33..41].copy_from_slice(&u64::MAX.to_le_bytes());
            m[41] = 2;
        }),
        "range_bytes"
    );

    let list = requests()
        .into_iter()
        .find(|r| matches!(r, Request::MetaList(_)))
        .unwrap();
    assert_eq!(refused_field(&list, |m| m[0] = 9), "table");
    let limit_at = 1 + 2 + "weights".len() + 2 + 2;
    assert_eq!(
        refused_field(&list, |m| m[limit_at..limit_at + 4].fill(0)),
        "limit"
    );
    assert_eq!(
        refused_field(&list, |m| m[limit_at..limit_at + 4]
            .copy_from_slice(&(LIST_LIMIT_MAX + 1).to_le_bytes())),
        "limit"
    );

    let meta_get = Request::MetaGet(MetaGet {
        table: MetaTable::KeyRecords,
        namespace: "ns".to_owned(),
        key: b"k".to_vec(),
    });
    // Empty namespace; empty key; a key length over the bound.
    let error = Request::decode(Op::MetaGet.code(), &[1, 0, 0, 1, 0, b'k']).unwrap_err();
    assert!(matches!(
        error,
        ProtoError::InvalidField {
            field: "namespace",
            ..
        }
    ));
    assert_eq!(
        refused_field(&meta_get, |m| {
            m[5..7].fill(0);
            m.truncate(7);
        }),
        "key"
    );
    let error = refused_field(&meta_get, |m| {
        m[5..7].copy_from_slice(&1025u16.to_le_bytes())
    });
    assert_eq!(error, "key");
}

#[test]
fn reply_invariants_are_checked_both_ways() {
    let tombstone_with_value = MetaGetReply {
        hlc_timestamp: 1,
        deleted: true,
        value_bytes: 1,
    };
    assert!(tombstone_with_value.to_vec().is_err());
    let mut bytes = MetaGetReply {
        hlc_timestamp: 1,
        deleted: true,
        value_bytes: 0,
    }
    .to_vec()
    .unwrap();
    bytes[9] = 1;
    assert!(MetaGetReply::decode(&bytes).is_err());

    let outside = ShardGetReply {
        shard: whole_shard(),
        offset: 12_000,
        body_bytes: 346,
    };
    assert!(outside.to_vec().is_err());
    let overflow = ShardGetReply {
        shard: whole_shard(),
        offset: u64::MAX,
        body_bytes: 1,
    };
    assert!(overflow.to_vec().is_err());

    assert!(ShardPutReply::decode(&[3]).is_err());
    assert!(NodeStatusReply::decode(&[0; 53]).is_err()); // state 0
    let bad_codec = ShardInfo {
        layout: ShardLayout::Erasure {
            codec: CodecId(0),
            data_shards: 1,
            parity_shards: 0,
            index: 0,
        },
        ..erasure_shard()
    };
    let put = ShardPut {
        stripe_id: stripe_id(),
        shard: bad_codec,
    };
    assert!(put.to_vec().is_err());
}

#[test]
fn senders_cannot_encode_out_of_bound_fields() {
    let long_key = MetaPut {
        table: MetaTable::KeyRecords,
        namespace: "ns".to_owned(),
        key: vec![b'k'; KEY_BYTES_MAX + 1],
        hlc_timestamp: 0,
        value_bytes: 0,
    };
    let error = long_key.to_vec().unwrap_err();
    assert_eq!(error.code(), ErrorCode::TOO_LARGE);
    let mut out = vec![9];
    assert!(long_key.encode(&mut out).is_err());
    assert_eq!(out, [9], "a failed encode leaves the buffer as it was");

    let empty_namespace = MetaGet {
        table: MetaTable::KeyRecords,
        namespace: String::new(),
        key: b"k".to_vec(),
    };
    assert!(empty_namespace.to_vec().is_err());
    let long_name = HelloRequest {
        client_name: "x".repeat(129),
        ..example_hello()
    };
    assert!(long_name.to_vec().is_err());
    let zero_limit = MetaList {
        table: MetaTable::KeyRecords,
        namespace: "ns".to_owned(),
        prefix: Vec::new(),
        continuation: Vec::new(),
        limit: 0,
        include_deleted: false,
    };
    assert!(zero_limit.to_vec().is_err());
}

#[test]
fn list_entries_round_trip_and_refuse_bad_bodies() {
    let entries = vec![
        ListEntry {
            key: b"weights/a".to_vec(),
            hlc_timestamp: 10,
            deleted: false,
            value_bytes: 150,
        },
        ListEntry {
            key: b"weights/b".to_vec(),
            hlc_timestamp: 11,
            deleted: true,
            value_bytes: 0,
        },
    ];
    let body = encode_list_entries(&entries).unwrap();
    assert_eq!(body.len(), 2 * (2 + 9 + 8 + 1 + 8));
    assert_eq!(decode_list_entries(&body, 2).unwrap(), entries);
    assert_eq!(decode_list_entries(&[], 0).unwrap(), Vec::new());
    assert!(decode_list_entries(&body, 1).is_err()); // trailing entry
    assert!(decode_list_entries(&body, 3).is_err()); // missing entry
    assert!(decode_list_entries(&body, LIST_LIMIT_MAX + 1).is_err());
    // A huge claimed count over a tiny body allocates nothing much and fails.
    assert!(decode_list_entries(&body[..5], LIST_LIMIT_MAX).is_err());
    let bad = vec![ListEntry {
        deleted: true,
        value_bytes: 1,
        ..entries[0].clone()
    }];
    assert!(encode_list_entries(&bad).is_err());
}

#[test]
fn kv_layouts_are_pinned_and_bad_values_refused() {
    let put = KvPut {
        namespace: "kv".to_owned(),
        entries: vec![KvPutEntry {
            key: b"k".to_vec(),
            value_bytes: 5,
            ttl_ms: 7,
            pin: true,
            condition: KvCondition::IfPresent,
        }],
    };
    let bytes = put.to_vec().unwrap();
    // namespace (2 + 2), count 1, key (2 + 1), value_bytes 5, ttl_ms 7, flags pin | 2 << 1.
    let expected = [
        &[2, 0, b'k', b'v', 1, 0, 1, 0, b'k'][..],
        &5u64.to_le_bytes(),
        &7u64.to_le_bytes(),
        &[0b101],
    ]
    .concat();
    assert_eq!(bytes, expected);
    assert_eq!(put.body_bytes(), 5);
    let mut bad_flags = bytes.clone();
    *bad_flags.last_mut().unwrap() = 0b1000;
    assert!(KvPut::decode(&bad_flags).is_err());

    let miss_with_bytes = KvGetReply {
        entries: vec![KvGetEntry {
            found: false,
            value_bytes: 1,
            crc32c: 0,
        }],
    };
    assert!(miss_with_bytes.to_vec().is_err());
    let overflow = KvPut {
        namespace: "kv".to_owned(),
        entries: vec![
            KvPutEntry {
                key: b"a".to_vec(),
                value_bytes: u64::MAX,
                ttl_ms: 0,
                pin: false,
                condition: KvCondition::Always,
            };
            2
        ],
    };
    assert!(overflow.to_vec().is_err());
    let scan = KvScan {
        namespace: "kv".to_owned(),
        cursor: 0,
        count: KV_SCAN_COUNT_MAX + 1,
    };
    assert!(scan.to_vec().is_err());
    let too_many = KvGet {
        namespace: "kv".to_owned(),
        keys: vec![b"k".to_vec(); KV_BATCH_KEYS_MAX + 1],
    };
    assert!(too_many.to_vec().is_err());
    let keys = vec![b"a".to_vec(), vec![0xff; KEY_BYTES_MAX]];
    let body = encode_scan_keys(&keys).unwrap();
    assert_eq!(decode_scan_keys(&body, 2).unwrap(), keys);
    assert!(decode_scan_keys(&body, 1).is_err());
    assert!(decode_scan_keys(&body, 3).is_err());
}

#[test]
fn kv_groups_pair_lmcache_keys() {
    assert_eq!(kv_group_stem(b"chunk@1kv_bytes"), b"chunk@1");
    assert_eq!(kv_group_stem(b"chunk@1metadata"), b"chunk@1");
    assert_eq!(kv_group_stem(b"plain"), b"plain");
    assert_eq!(kv_group_head(b"c@1metadata").unwrap(), b"c@1kv_bytes");
    assert_eq!(kv_group_member(b"c@1kv_bytes").unwrap(), b"c@1metadata");
    assert_eq!(kv_group_head(b"c@1kv_bytes"), None);
    assert_eq!(kv_group_member(b"c@1metadata"), None);
}
