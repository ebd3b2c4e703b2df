//! Whole nodes in-process on port 0, driven over real sockets with raw protocol frames: the
//! handshake, shard and metadata ops, hostile input on every listener, on-disk corruption,
//! heartbeats and the management plane.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use nabu_core::id::StripeId;
use nabu_node::{Listeners, MemberConfig, MemberState, NodeConfig};
use nabu_proto::ops::{
    HelloRequest, MetaDelete, MetaDeleteReply, MetaGetReply, MetaList, MetaListReply, MetaPutReply,
    MetaTable, NodeStatus, NodeStatusReply, Ping, Plane, PutOutcome, ShardGet, ShardPut, ShardStat,
    ShardStatReply, decode_list_entries,
};
use nabu_proto::{ClusterToken, ErrorCode, ErrorFrame, Flags, Frame, FrameKind, Op};
use support::*;
use tokio::time::{Instant, sleep};

// ---- the handshake ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_token_is_unauthenticated_and_closed() {
    let node = TestNode::start(|_| {}).await;
    let wrong = ClusterToken::new(&[9; 32]).unwrap();
    for (addr, plane) in [
        (node.addrs.data, Plane::Data),
        (node.addrs.peer, Plane::Peer),
    ] {
        let mut client = Client::connect(addr).await;
        assert_eq!(
            client.hello(plane, &wrong).await,
            Err(ErrorCode::UNAUTHENTICATED)
        );
        assert!(client.recv().await.is_none(), "closed after the refusal");
    }
    // The right token on the wrong plane is refused too.
    let mut client = Client::connect(node.addrs.peer).await;
    assert_eq!(
        client.hello(Plane::Data, &token()).await,
        Err(ErrorCode::UNAUTHENTICATED)
    );
    assert!(
        node.metric("nabu_unauthenticated_total{plane=\"data\"}")
            .await
            >= 1.0
    );
    node.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_before_hello_is_refused() {
    let node = TestNode::start(|_| {}).await;
    let mut client = Client::connect(node.addrs.data).await;
    let get = ShardGet {
        stripe_id: StripeId::of(b"x"),
        range: None,
    };
    client
        .send(&Frame::from_meta(1, &get, Bytes::new(), false).unwrap())
        .await;
    assert_eq!(client.closed_with().await, [ErrorCode::UNAUTHENTICATED]);
    // A second HELLO on an authenticated connection fails that request only.
    let mut client = node.client().await;
    let hello = HelloRequest {
        plane: Plane::Data,
        features: 0,
        token: token(),
        client_name: "again".into(),
    };
    assert_eq!(
        client.error(&hello, Bytes::new()).await,
        ErrorCode::BAD_REQUEST
    );
    client
        .ok::<_, nabu_proto::ops::PingReply>(&Ping, Bytes::new())
        .await;
}

// ---- shards ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_put_get_stat_delete_round_trip_with_ranges_and_a_multi_frame_body() {
    let node = TestNode::start(|_| {}).await;
    let mut client = node.client().await;
    let (small, big) = (pattern(1000, 1), pattern(9 << 20, 2));
    let (small_id, big_id) = (StripeId::of(&small), StripeId::of(&big));
    let stored = put_shard(&mut client, small_id, whole_shard(&small), small.clone()).await;
    assert_eq!(stored, PutOutcome::Stored);
    // 9 MiB goes as a REQUEST frame and two DATA frames of at most 4 MiB, and comes back so.
    let stored = put_shard(&mut client, big_id, erasure_shard(&big, 3), big.clone()).await;
    assert_eq!(stored, PutOutcome::Stored);
    let (reply, body) = client.get_shard(big_id, None).await.unwrap();
    assert_eq!(
        reply.shard,
        erasure_shard(&big, 3),
        "the reader learns the index"
    );
    assert_eq!((reply.offset, reply.body_bytes), (0, big.len() as u64));
    assert!(body == big, "9 MiB read back intact over several frames");

    let (reply, body) = client.get_shard(small_id, Some((100, 50))).await.unwrap();
    assert_eq!(
        (reply.offset, reply.body_bytes, body),
        (100, 50, small.slice(100..150))
    );
    let (reply, body) = client.get_shard(small_id, Some((990, 1000))).await.unwrap();
    assert_eq!((reply.offset, body), (990, small.slice(990..)), "clipped");
    let past_end = client.get_shard(small_id, Some((1000, 1))).await;
    assert_eq!(past_end.unwrap_err(), ErrorCode::BAD_REQUEST);

    assert_eq!(client.stat_shard(small_id).await, Ok(whole_shard(&small)));
    let (status, _) = client
        .ok::<_, NodeStatusReply>(&NodeStatus, Bytes::new())
        .await;
    assert_eq!(status.shards, 2);
    assert!(status.bytes_used >= big.len() as u64 && status.bytes_capacity > status.bytes_used);

    assert!(client.delete_shard(small_id).await);
    assert!(
        !client.delete_shard(small_id).await,
        "deleting a missing shard succeeds"
    );
    assert_eq!(
        client.get_shard(small_id, None).await.unwrap_err(),
        ErrorCode::NOT_FOUND
    );
    assert_eq!(client.stat_shard(small_id).await, Err(ErrorCode::NOT_FOUND));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_reput_is_idempotent_and_another_shard_of_the_stripe_conflicts() {
    let node = TestNode::start(|_| {}).await;
    let mut client = node.client().await;
    let shard = pattern(5000, 3);
    let stripe_id = StripeId::of(b"stripe");
    assert_eq!(
        put_shard(
            &mut client,
            stripe_id,
            erasure_shard(&shard, 0),
            shard.clone()
        )
        .await,
        PutOutcome::Stored
    );
    assert_eq!(
        put_shard(
            &mut client,
            stripe_id,
            erasure_shard(&shard, 0),
            shard.clone()
        )
        .await,
        PutOutcome::AlreadyHeld
    );
    let put = ShardPut {
        stripe_id,
        shard: erasure_shard(&shard, 1),
    };
    assert_eq!(client.error(&put, shard.clone()).await, ErrorCode::CONFLICT);
    // A body that does not match its declared checksum is refused before anything is written.
    let other = StripeId::of(b"other");
    let mut lying = whole_shard(&shard);
    lying.shard_crc ^= 1;
    assert_eq!(
        client
            .error(
                &ShardPut {
                    stripe_id: other,
                    shard: lying
                },
                shard.clone()
            )
            .await,
        ErrorCode::CHECKSUM_MISMATCH
    );
    assert_eq!(
        client
            .error(&ShardStat { stripe_id: other }, Bytes::new())
            .await,
        ErrorCode::NOT_FOUND
    );
    let (stat, _) = client
        .ok::<_, ShardStatReply>(&ShardStat { stripe_id }, Bytes::new())
        .await;
    assert_eq!(stat.shard, erasure_shard(&shard, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_on_disk_is_corrupt_never_served_and_counted_once() {
    let node =
        TestNode::start(|config| config.store.direct_io = nabu_node::DirectIoOption::Off).await;
    let mut client = node.client().await;
    let shard = pattern(64 << 10, 4);
    let stripe_id = StripeId::of(&shard);
    put_shard(&mut client, stripe_id, whole_shard(&shard), shard.clone()).await;
    flip_byte_of(&node.data_dir, &shard[1000..1064]);

    for _ in 0..3 {
        assert_eq!(
            client
                .error(
                    &ShardGet {
                        stripe_id,
                        range: None
                    },
                    Bytes::new()
                )
                .await,
            ErrorCode::CORRUPT
        );
    }
    assert_eq!(
        node.metric("nabu_corrupt_shards_total").await,
        1.0,
        "one corrupt shard"
    );
    assert_eq!(node.metric("nabu_corrupt_reads_total").await, 3.0);
    // Writing the shard again repairs this node's copy.
    assert_eq!(
        put_shard(&mut client, stripe_id, whole_shard(&shard), shard.clone()).await,
        PutOutcome::Stored
    );
    let body = get_shard(&mut client, stripe_id).await;
    assert_eq!(body, shard);
}
// ---- metadata ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_last_writer_wins_tombstones_and_sorted_paginated_listing() {
    let node = TestNode::start(|_| {}).await;
    let mut client = node.client().await;
    assert!(client.put_value("model/a", 20, b"v20").await);
    assert!(
        !client.put_value("model/a", 10, b"v10").await,
        "an older write is not applied"
    );
    let (reply, body) = client
        .ok::<_, MetaGetReply>(&get_meta("model/a"), Bytes::new())
        .await;
    assert_eq!(
        (reply.hlc_timestamp, reply.deleted, &body[..]),
        (20, false, &b"v20"[..])
    );

    let delete = MetaDelete {
        table: MetaTable::KeyRecords,
        namespace: "ns".into(),
        key: b"model/a".to_vec(),
        hlc_timestamp: 30,
    };
    let (deleted, _) = client.ok::<_, MetaDeleteReply>(&delete, Bytes::new()).await;
    assert!(deleted.applied);
    assert!(
        !client.put_value("model/a", 25, b"v25").await,
        "the tombstone beats an older put"
    );
    let (reply, body) = client
        .ok::<_, MetaGetReply>(&get_meta("model/a"), Bytes::new())
        .await;
    assert!(reply.deleted && body.is_empty() && reply.hlc_timestamp == 30);
    assert_eq!(
        client.error(&get_meta("never"), Bytes::new()).await,
        ErrorCode::NOT_FOUND
    );

    for key in ["model/d", "model/b", "other", "model/c", "model/e"] {
        client.put_value(key, 1, b"x").await;
    }
    let listed = list_all(&mut client, b"model/", 2).await;
    assert_eq!(
        listed,
        ["model/b", "model/c", "model/d", "model/e"],
        "sorted, tombstone hidden"
    );
}

/// Every key under `prefix` in namespace `ns`, fetched `page` at a time.
async fn list_all(client: &mut Client, prefix: &[u8], page: u32) -> Vec<String> {
    let mut listed = Vec::new();
    let mut continuation = Vec::new();
    loop {
        let list = MetaList {
            table: MetaTable::KeyRecords,
            namespace: "ns".into(),
            prefix: prefix.to_vec(),
            continuation,
            limit: page,
            include_deleted: false,
        };
        let (reply, body) = client.ok::<_, MetaListReply>(&list, Bytes::new()).await;
        let entries = decode_list_entries(&body, reply.entries).unwrap();
        assert!(entries.len() <= page as usize);
        listed.extend(
            entries
                .into_iter()
                .map(|e| String::from_utf8(e.key).unwrap()),
        );
        if reply.continuation.is_empty() {
            return listed;
        }
        continuation = reply.continuation;
    }
}

// ---- hostile input ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_on_every_listener_gets_errors_and_stored_data_survives() {
    let node = TestNode::start(|config| config.hello_timeout_ms = 1000).await;
    let mut writer = node.client().await;
    let shard = pattern(10_000, 5);
    let stripe_id = StripeId::of(&shard);
    put_shard(&mut writer, stripe_id, whole_shard(&shard), shard.clone()).await;
    let (value_put, value) = (put_meta("k", 1, b"value"), Bytes::from_static(b"value"));
    writer.ok::<_, MetaPutReply>(&value_put, value).await;

    for addr in [node.addrs.data, node.addrs.peer] {
        hostile_frames_before_hello(addr).await;
    }
    hostile_frames_after_hello(&node).await;
    hostile_http(node.addrs.http).await;

    node.assert_alive().await;
    let mut reader = node.client().await;
    let body = get_shard(&mut reader, stripe_id).await;
    assert_eq!(body, shard, "stored shard intact");
    let (_, body) = reader
        .ok::<_, MetaGetReply>(&get_meta("k"), Bytes::new())
        .await;
    assert_eq!(&body[..], b"value", "stored value intact");
}

async fn hostile_frames_before_hello(addr: SocketAddr) {
    let hello = HelloRequest {
        plane: Plane::Data,
        features: 0,
        token: token(),
        client_name: "x".into(),
    };
    let good = Frame::from_meta(1, &hello, Bytes::new(), false)
        .unwrap()
        .to_vec();
    let mut oversized = good.clone();
    oversized[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
    let mut bad_version = good.clone();
    bad_version[4] = 9;
    let cases: Vec<(&str, Vec<u8>, Option<ErrorCode>)> = vec![
        (
            "garbage",
            b"GET / HTTP/1.1\r\n\r\n and more garbage bytes".to_vec(),
            Some(ErrorCode::UNAUTHENTICATED),
        ),
        (
            "oversized length",
            oversized,
            Some(ErrorCode::UNAUTHENTICATED),
        ),
        (
            "unsupported version",
            bad_version,
            Some(ErrorCode::UNSUPPORTED_VERSION),
        ),
        (
            "random bytes",
            (0..4096u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect(),
            Some(ErrorCode::UNAUTHENTICATED),
        ),
        // A truncated HELLO, then silence: the node gives up after hello_timeout.
        ("truncated", good[..40].to_vec(), Some(ErrorCode::TIMEOUT)),
    ];
    for (name, bytes, expected) in cases {
        let mut client = Client::connect(addr).await;
        client.send_raw(&bytes).await;
        let codes = client.closed_with().await;
        assert_eq!(codes.first().copied(), expected, "{name}: {codes:?}");
    }
}

async fn hostile_frames_after_hello(node: &TestNode) {
    let mut client = node.client().await;
    // An unknown op, malformed metadata, a body on a bodiless op, a body failing its checksum:
    // each fails its request only, and the connection goes on.
    client.send(&raw_request(0x0999, 7, b"", b"")).await;
    assert_eq!(client.recv_error().await, (7, ErrorCode::UNKNOWN_OP));
    client
        .send(&raw_request(Op::ShardGet.code(), 8, b"short", b""))
        .await;
    assert_eq!(client.recv_error().await, (8, ErrorCode::BAD_REQUEST));
    client
        .send(&raw_request(Op::Ping.code(), 9, b"", b"body"))
        .await;
    assert_eq!(client.recv_error().await, (9, ErrorCode::BAD_REQUEST));
    let shard = pattern(100, 6);
    let put = ShardPut {
        stripe_id: StripeId::of(&shard),
        shard: whole_shard(&shard),
    };
    let mut damaged = Frame::from_meta(10, &put, shard.clone(), false)
        .unwrap()
        .to_vec();
    *damaged.last_mut().unwrap() ^= 1;
    client.send_raw(&damaged).await;
    assert_eq!(
        client.recv_error().await,
        (10, ErrorCode::CHECKSUM_MISMATCH)
    );
    client
        .ok::<_, nabu_proto::ops::PingReply>(&Ping, Bytes::new())
        .await;

    // Fatal: a frame claiming a 4 GiB body; a damaged header followed by garbage.
    for bytes in [
        oversized_ping(),
        b"NABU\x01\x01garbage-garbage-garbage-garbage!".to_vec(),
    ] {
        let mut client = node.client().await;
        client.send_raw(&bytes).await;
        let codes = client.closed_with().await;
        assert!(
            matches!(codes[..], [ErrorCode::TOO_LARGE] | [ErrorCode::BAD_FRAME]),
            "{codes:?}"
        );
    }
    // A frame cut off mid-way, then the connection closed: nothing breaks.
    let mut client = node.client().await;
    client.send_raw(&oversized_ping()[..20]).await;
    drop(client);
}

/// A REQUEST frame with arbitrary op code, metadata and body (valid checksums).
fn raw_request(op_code: u16, request_id: u64, meta: &'static [u8], body: &'static [u8]) -> Frame {
    let (meta, body) = (Bytes::from_static(meta), Bytes::from_static(body));
    Frame::new(
        FrameKind::Request,
        op_code,
        request_id,
        Flags::NONE,
        meta,
        body,
    )
    .unwrap()
}

fn oversized_ping() -> Vec<u8> {
    let mut bytes = Frame::from_meta(3, &Ping, Bytes::new(), false)
        .unwrap()
        .to_vec();
    bytes[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
    bytes
}

async fn hostile_http(addr: SocketAddr) {
    let requests: [&[u8]; 4] = [
        b"\x00\x01garbage\r\n\r\n",
        b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
        b"POST /api/v1/cluster HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 3\r\n\r\nabc",
    ];
    for request in requests {
        let (status, _) = http_raw(addr, request).await.unwrap_or((0, String::new()));
        assert!(
            status == 0 || status >= 400,
            "{status} for {:?}",
            String::from_utf8_lossy(request)
        );
    }
}

// ---- limits ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_answered_busy() {
    let node = TestNode::start(|config| config.connections_max = 1).await;
    let first = node.client().await;
    let mut second = Client::connect(node.addrs.data).await;
    assert_eq!(second.closed_with().await, [ErrorCode::BUSY]);
    drop(first);
    let deadline = Instant::now() + WAIT;
    loop {
        let mut client = Client::connect(node.addrs.data).await;
        if client.hello(Plane::Data, &token()).await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "the slot never came back");
        sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_inflight_max_are_busy_and_an_upload_can_be_cancelled() {
    let node = TestNode::start(|config| config.inflight_max = 1).await;
    let mut client = node.client().await;
    let shard = pattern(10_000, 9);
    let stripe_id = StripeId::of(&shard);
    let put = ShardPut {
        stripe_id,
        shard: whole_shard(&shard),
    };
    // The first frame of a streamed body: the request stays in flight.
    client
        .send(&Frame::from_meta(100, &put, shard.slice(..4000), true).unwrap())
        .await;
    client
        .send(&Frame::from_meta(101, &Ping, Bytes::new(), false).unwrap())
        .await;
    assert_eq!(client.recv_error().await, (101, ErrorCode::BUSY));
    // The requester gives the upload up; the node confirms and stores nothing.
    let cancel = ErrorFrame::new(ErrorCode::CANCELLED, "giving up");
    client
        .send(&Frame::error(Op::ShardPut.code(), 100, &cancel).unwrap())
        .await;
    assert_eq!(client.recv_error().await, (100, ErrorCode::CANCELLED));
    assert_eq!(
        client.error(&ShardStat { stripe_id }, Bytes::new()).await,
        ErrorCode::NOT_FOUND
    );
    // A body streamed in three frames completes normally.
    let id = client.start(&put, shard.clone(), 4000).await;
    let (reply, _) = client.reply(id).await;
    assert_eq!(
        reply
            .decode_meta::<nabu_proto::ops::ShardPutReply>()
            .unwrap()
            .outcome,
        PutOutcome::Stored
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_frames_and_idle_connections_time_out() {
    let node = TestNode::start(|config| {
        config.frame_timeout_ms = 200;
        config.idle_timeout_ms = 300;
    })
    .await;
    // Half a frame, then nothing: TIMEOUT and closed.
    let mut client = node.client().await;
    client
        .send_raw(
            &Frame::from_meta(5, &Ping, Bytes::new(), false)
                .unwrap()
                .to_vec()[..20],
        )
        .await;
    assert_eq!(client.closed_with().await, [ErrorCode::TIMEOUT]);
    // A streamed body whose next frame never comes: that request times out, then the idle
    // connection is closed.
    let mut client = node.client().await;
    let shard = pattern(1000, 10);
    let put = ShardPut {
        stripe_id: StripeId::of(&shard),
        shard: whole_shard(&shard),
    };
    client
        .send(&Frame::from_meta(6, &put, shard.slice(..10), true).unwrap())
        .await;
    assert_eq!(client.recv_error().await, (6, ErrorCode::TIMEOUT));
    assert_eq!(client.closed_with().await, [ErrorCode::TIMEOUT]);
    node.assert_alive().await;
}

// ---- liveness and the management plane ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_report_a_stopped_member_down_within_down_after() {
    let down_after = Duration::from_millis(600);
    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(Listeners::bind_loopback().await.unwrap());
    }
    let members: Vec<MemberConfig> = listeners
        .iter()
        .enumerate()
        .map(|(index, l)| {
            MemberConfig::new(
                index as u32 + 1,
                format!("zone-{index}"),
                l.addrs().unwrap(),
            )
        })
        .collect();
    let mut nodes = Vec::new();
    for (index, listeners) in listeners.into_iter().enumerate() {
        let members = members.clone();
        let node = TestNode::start_on(listeners, index as u32 + 1, move |config| {
            config.members = members;
            config.heartbeat_interval_ms = 100;
            config.down_after_ms = down_after.as_millis() as u64;
        })
        .await;
        nodes.push(node);
    }
    for node in &nodes {
        wait_for_states(node, &[MemberState::Up; 3], WAIT).await;
    }
    let view = nodes[0].cluster().await;
    assert_eq!(
        (
            view.node_id,
            view.members.len(),
            view.members[2].zone.as_str()
        ),
        (1, 3, "zone-2")
    );
    assert_eq!(nodes[0].metric("nabu_member_up{member=\"3\"}").await, 1.0);

    nodes[2].stop().await;
    let stopped_at = Instant::now();
    let expected = [MemberState::Up, MemberState::Up, MemberState::Down];
    for node in &nodes[..2] {
        // Down within down_after of the last answer, plus one heartbeat and scheduling slack.
        wait_for_states(node, &expected, down_after * 3).await;
    }
    assert!(stopped_at.elapsed() < down_after * 3);
    assert_eq!(nodes[0].metric("nabu_member_up{member=\"3\"}").await, 0.0);

    // Every change of state is in the event log, once.
    let events = wait_for_events(&nodes[0], 3).await;
    let changes: Vec<(&str, u64)> = events
        .iter()
        .map(|event| {
            (
                event["kind"].as_str().unwrap(),
                event["node"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(changes[..2].contains(&("node_up", 2)), "{changes:?}");
    assert!(changes[..2].contains(&("node_up", 3)), "{changes:?}");
    assert_eq!(changes[2..], [("node_down", 3)]);
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3]);
    let (_, later) = http_get(nodes[0].addrs.http, "/api/v1/events?after=2")
        .await
        .unwrap();
    let later: Vec<serde_json::Value> = serde_json::from_str(&later).unwrap();
    assert_eq!(later.len(), 1, "only the events after sequence number 2");
}

/// `node`'s event log once it holds `count` entries (member state changes are recorded up to
/// 250 ms after the heartbeats see them).
async fn wait_for_events(node: &TestNode, count: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = http_get(node.addrs.http, "/api/v1/events").await.unwrap();
        assert_eq!(status, 200);
        let events: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
        if events.len() >= count {
            return events;
        }
        assert!(Instant::now() < deadline, "events: {events:?}");
        sleep(Duration::from_millis(25)).await;
    }
}

async fn wait_for_states(node: &TestNode, expected: &[MemberState], within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let view = node.cluster().await;
        let states: Vec<MemberState> = view.members.iter().map(|m| m.state).collect();
        if states == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {} sees {states:?}, expected {expected:?}",
            view.node_id
        );
        sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_plane_serves_health_readiness_metrics_and_the_cluster_view() {
    let mut node = TestNode::start(|_| {}).await;
    assert_eq!(http_get(node.addrs.http, "/healthz").await.unwrap().0, 200);
    assert_eq!(http_get(node.addrs.http, "/readyz").await.unwrap().0, 200);
    let mut client = node.client().await;
    let shard = pattern(3000, 7);
    put_shard(
        &mut client,
        StripeId::of(&shard),
        whole_shard(&shard),
        shard.clone(),
    )
    .await;
    assert_eq!(node.metric("nabu_shards").await, 1.0);
    assert!(
        node.metric("nabu_requests_total{op=\"SHARD_PUT\",outcome=\"ok\"}")
            .await
            >= 1.0
    );
    assert!(node.metric("nabu_bytes_in_total{plane=\"data\"}").await >= 3000.0);
    assert!(node.metric("nabu_store_fdatasyncs_total").await >= 1.0);
    assert_eq!(
        node.metric("nabu_connections_open{plane=\"data\"}").await,
        1.0
    );
    let view = node.cluster().await;
    assert_eq!(view.store.shards, 1);
    assert_eq!(view.members[0].state, MemberState::Up);
    drop(client);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_a_restart_on_the_same_dirs() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_owned();
    let shard = pattern(2000, 8);
    let stripe_id = StripeId::of(&shard);
    {
        let configure = |config: &mut NodeConfig| config.data_dirs = vec![data_dir.clone()];
        let mut node = TestNode::start(configure).await;
        let mut client = node.client().await;
        put_shard(&mut client, stripe_id, whole_shard(&shard), shard.clone()).await;
        let (write, value) = (put_meta("kept", 5, b"v"), Bytes::from_static(b"v"));
        client.ok::<_, MetaPutReply>(&write, value).await;
        node.stop().await;
    }
    let node = TestNode::start(|config| config.data_dirs = vec![data_dir.clone()]).await;
    let mut client = node.client().await;
    let body = get_shard(&mut client, stripe_id).await;
    assert_eq!(body, shard);
    let (reply, _) = client
        .ok::<_, MetaGetReply>(&get_meta("kept"), Bytes::new())
        .await;
    assert_eq!(reply.hlc_timestamp, 5);
    assert_eq!(node.metric("nabu_shards").await, 1.0);
    assert_eq!(node.metric("nabu_meta_entries").await, 1.0);
}

// ---- the dashboard's API ----

async fn get_json(node: &TestNode, path: &str) -> (u16, serde_json::Value) {
    let (status, body) = http_get(node.addrs.http, path).await.unwrap();
    let json = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{path}: {body}"));
    (status, json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_api_serves_the_page_ring_placement_counters_and_the_stream() {
    let node = TestNode::start(|_| {}).await;
    let (status, page) = http_get(node.addrs.http, "/").await.unwrap();
    assert_eq!(status, 200);
    assert!(
        page.contains("/dashboard/app.js"),
        "the page loads its script"
    );
    for asset in ["/dashboard/app.js", "/dashboard/style.css"] {
        assert_eq!(
            http_get(node.addrs.http, asset).await.unwrap().0,
            200,
            "{asset}"
        );
    }

    let (status, ring) = get_json(&node, "/api/v1/ring").await;
    assert_eq!(status, 200);
    assert_eq!(
        ring["points"].as_array().unwrap().len(),
        150,
        "one node of weight 1"
    );
    let (_, demo) = get_json(&node, "/api/v1/ring?demo=1000").await;
    assert_eq!(demo["points"].as_array().unwrap().len(), 150_000);
    assert_eq!(demo["demo"], true);
    assert_eq!(get_json(&node, "/api/v1/ring?demo=0").await.0, 400);

    // Placement is the ring's: the key record's point and nodes as the client computes them.
    let (status, placement) = get_json(&node, "/api/v1/placement?key=models/a.bin").await;
    assert_eq!(status, 200);
    let point = nabu_client::format::key_record_point("default", b"models/a.bin");
    assert_eq!(placement["key_record"]["point"], format!("{point:016x}"));
    assert_eq!(
        placement["key_record"]["nodes"],
        serde_json::json!([{"id": 1, "state": "up"}])
    );
    assert_eq!(placement["object"], serde_json::Value::Null, "no such key");
    let (_, placement) = get_json(&node, "/api/v1/placement?key=models/a.bin&demo=1000").await;
    let expected: Vec<u32> = nabu_node::dashboard::demo_ring(1000)
        .placement(point, 3)
        .into_iter()
        .map(|id| id.0)
        .collect();
    let placed: Vec<u32> = placement["key_record"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|node| node["id"].as_u64().unwrap() as u32)
        .collect();
    assert_eq!(
        (placement["durability"].as_str(), placed),
        (Some("ec:4+2"), expected)
    );
    let (status, missing) = get_json(&node, "/api/v1/placement?key=a&namespace=nope").await;
    assert_eq!(status, 404, "{missing}");

    let (_, counters) = get_json(&node, "/api/v1/node").await;
    assert_eq!(counters["node_id"], 1);
    assert!(counters["requests_total"].as_u64().is_some());
    assert_eq!(
        counters["latency"].as_array().unwrap().len(),
        4,
        "one histogram per op class"
    );

    let stats = first_stream_stats(node.addrs.http).await;
    assert_eq!(stats["serving_node"], 1);
    assert_eq!(stats["nodes"][0]["state"], "up");
    assert_eq!(stats["nodes"][0]["reachable"], true);
}

/// The first `event: stats` message of `/api/v1/stream`, parsed.
async fn first_stream_stats(addr: SocketAddr) -> serde_json::Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = "GET /api/v1/stream HTTP/1.1\r\nHost: node\r\n\r\n";
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let deadline = Instant::now() + WAIT;
    loop {
        let text = String::from_utf8_lossy(&received);
        if let Some(start) = text.find("event: stats\ndata: ") {
            let data = &text[start + "event: stats\ndata: ".len()..];
            if let Some(end) = data.find('\n') {
                return serde_json::from_str(&data[..end]).unwrap();
            }
        }
        let mut chunk = [0u8; 4096];
        let read = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .expect("a stats message within WAIT")
            .unwrap();
        assert!(read > 0, "the stream ended: {text}");
        received.extend_from_slice(&chunk[..read]);
    }
}

#[path = "node/tiers.rs"]
mod tiers;
