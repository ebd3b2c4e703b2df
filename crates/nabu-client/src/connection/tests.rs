//! The connection against a scripted fake node on a Unix socket: streamed bodies in both
//! directions, replies out of order, ERROR frames, and a connection lost mid-request.

use std::path::PathBuf;

use nabu_proto::ops::{MetaGet, MetaGetReply, MetaPut, MetaPutReply, MetaTable, Ping, PingReply};
use nabu_proto::{ErrorCode, ErrorFrame};
use tokio::net::{UnixListener, UnixStream};

use super::*;

/// The fake node's frame limit: small, so bodies are streamed in several frames.
const FAKE_FRAME_BODY_BYTES_MAX: u32 = 1000;
/// The value the fake node serves for META_GET: long enough to need DATA frames.
const VALUE_BYTES: usize = 2500;

fn token() -> ClusterToken {
    ClusterToken::new(&[9u8; 32]).unwrap()
}

async fn next_frame(
    stream: &mut UnixStream,
    decoder: &mut FrameDecoder,
    buffer: &mut BytesMut,
) -> Option<Frame> {
    loop {
        if let Some(frame) = decoder.decode(buffer).expect("client frames are valid") {
            return Some(frame);
        }
        if stream.read_buf(buffer).await.expect("read") == 0 {
            return None;
        }
    }
}

async fn send(stream: &mut UnixStream, frames: &[Frame]) {
    for frame in frames {
        stream.write_all(&frame.to_vec()).await.expect("write");
    }
}

/// Serves one connection: HELLO; META_PUT bodies are collected across frames and answered
/// with how many frames they took (in `applied`: true when more than one); META_GET is
/// answered with a streamed value; PINGs are held and answered in reverse order once two
/// arrived; a PING with request id ≥ 100 makes the node hang up.
async fn fake_node(listener: UnixListener) {
    let (mut stream, _) = listener.accept().await.expect("accept");
    let mut decoder = FrameDecoder::new(Limits::default());
    let mut buffer = BytesMut::new();
    let hello = next_frame(&mut stream, &mut decoder, &mut buffer)
        .await
        .unwrap();
    let request: HelloRequest = hello.decode_meta().expect("a HELLO first");
    assert_eq!(request.token, token());
    let reply = HelloReply {
        node_id: NodeId(4),
        ring_epoch: 1,
        features: 0,
        meta_bytes_max: u16::MAX,
        frame_body_bytes_max: FAKE_FRAME_BODY_BYTES_MAX,
        request_body_bytes_max: 64 << 20,
        inflight_max: 8,
    };
    send(
        &mut stream,
        &[Frame::from_meta(hello.header().request_id(), &reply, Bytes::new(), false).unwrap()],
    )
    .await;
    let mut put_frames = 0;
    let mut held_pings = Vec::new();
    while let Some(frame) = next_frame(&mut stream, &mut decoder, &mut buffer).await {
        let id = frame.header().request_id();
        assert!(frame.body().len() <= FAKE_FRAME_BODY_BYTES_MAX as usize);
        match frame.op().unwrap() {
            Op::MetaPut => {
                put_frames += 1;
                if !frame.header().more() {
                    let reply = MetaPutReply {
                        applied: put_frames > 1,
                    };
                    send(
                        &mut stream,
                        &[Frame::from_meta(id, &reply, Bytes::new(), false).unwrap()],
                    )
                    .await;
                    put_frames = 0;
                }
            }
            Op::MetaGet => {
                let value = Bytes::from(vec![7u8; VALUE_BYTES]);
                let reply = MetaGetReply {
                    hlc_timestamp: 5,
                    deleted: false,
                    value_bytes: VALUE_BYTES as u64,
                };
                send(
                    &mut stream,
                    &[
                        Frame::from_meta(id, &reply, value.slice(..1000), true).unwrap(),
                        Frame::data(Op::MetaGet, id, value.slice(1000..2000), true).unwrap(),
                        Frame::data(Op::MetaGet, id, value.slice(2000..), false).unwrap(),
                    ],
                )
                .await;
            }
            Op::Ping if id >= 100 => return,
            Op::Ping => {
                held_pings.push(id);
                if held_pings.len() == 2 {
                    for id in held_pings.drain(..).rev() {
                        send(
                            &mut stream,
                            &[Frame::from_meta(id, &PingReply, Bytes::new(), false).unwrap()],
                        )
                        .await;
                    }
                }
            }
            other => {
                let error = ErrorFrame::new(ErrorCode::NOT_FOUND, format!("no {other}"));
                send(
                    &mut stream,
                    &[Frame::error(other.code(), id, &error).unwrap()],
                )
                .await;
            }
        }
    }
}

fn socket_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("node.sock")
}

#[tokio::test]
async fn streams_bodies_both_ways_and_matches_replies_by_id() {
    let dir = tempfile::tempdir().unwrap();
    let listener = UnixListener::bind(socket_path(&dir)).unwrap();
    let server = tokio::spawn(fake_node(listener));
    let endpoint = Endpoint::Unix(socket_path(&dir));
    let connection = Connection::connect(NodeId(4), &endpoint, &token(), "test", 16)
        .await
        .unwrap();
    let timeout = Duration::from_secs(5);

    // A 2,500-byte value goes out in three frames; the node says it saw more than one.
    let value = Bytes::from(vec![1u8; VALUE_BYTES]);
    let put = MetaPut {
        table: MetaTable::KeyRecords,
        namespace: "ns".into(),
        key: b"k".to_vec(),
        hlc_timestamp: 1,
        value_bytes: value.len() as u64,
    };
    let reply = connection.call(&put, value, timeout).await.unwrap();
    assert!(matches!(
        reply.meta,
        Response::MetaPut(MetaPutReply { applied: true })
    ));

    // A streamed reply is assembled whole.
    let get = MetaGet {
        table: MetaTable::KeyRecords,
        namespace: "ns".into(),
        key: b"k".to_vec(),
    };
    let reply = connection.call(&get, Bytes::new(), timeout).await.unwrap();
    assert_eq!(reply.body, vec![7u8; VALUE_BYTES]);

    // Two requests answered in reverse order both complete.
    let (first, second) = tokio::join!(
        connection.call(&Ping, Bytes::new(), timeout),
        connection.call(&Ping, Bytes::new(), timeout)
    );
    assert!(first.is_ok() && second.is_ok());

    // An ERROR frame fails only its request.
    let error = connection
        .call(
            &nabu_proto::ops::ShardStat {
                stripe_id: nabu_core::id::StripeId::of(b"x"),
            },
            Bytes::new(),
            timeout,
        )
        .await
        .unwrap_err();
    assert_eq!(error.remote_code(), Some(ErrorCode::NOT_FOUND));
    assert!(connection.is_open());

    // The node hangs up with a request in flight: it fails, and the connection says closed.
    connection
        .shared
        .next_request_id
        .store(100, Ordering::Relaxed);
    let error = connection
        .call(&Ping, Bytes::new(), timeout)
        .await
        .unwrap_err();
    assert!(matches!(error, ClientError::Connection { .. }), "{error}");
    assert!(!connection.is_open());
    server.await.unwrap();
}

#[tokio::test]
async fn a_wrong_token_is_refused_at_hello() {
    let dir = tempfile::tempdir().unwrap();
    let listener = UnixListener::bind(socket_path(&dir)).unwrap();
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut decoder = FrameDecoder::new(Limits::default());
        let mut buffer = BytesMut::new();
        next_frame(&mut stream, &mut decoder, &mut buffer)
            .await
            .unwrap();
        let error = ErrorFrame::new(ErrorCode::UNAUTHENTICATED, "wrong token");
        send(&mut stream, &[Frame::error(0, 0, &error).unwrap()]).await;
    });
    let endpoint = Endpoint::Unix(socket_path(&dir));
    let error = Connection::connect(NodeId(4), &endpoint, &token(), "test", 16)
        .await
        .unwrap_err();
    assert_eq!(error.remote_code(), Some(ErrorCode::UNAUTHENTICATED));
    server.await.unwrap();
}
