//! The incremental frame decoder and the connection rules, driven the way a server drives
//! them: bytes in any split, garbage, truncation, damage, oversized lengths, unknown ops.

mod common;

use bytes::{Bytes, BytesMut};
use common::*;
use nabu_proto::ops::*;
use nabu_proto::{
    ClusterToken, ErrorCode, ErrorFrame, Flags, Frame, FrameDecoder, FrameKind, HEADER_BYTES,
    Limits, ProtoError, Request, authenticate,
};

/// A stream of frames of every kind, with empty and non-empty metadata and bodies.
fn sample_frames() -> Vec<Frame> {
    let put = ShardPut {
        stripe_id: stripe_id(),
        shard: ShardInfo {
            shard_bytes: 10,
            stripe_bytes: 10,
            ..whole_shard()
        },
    };
    vec![
        Frame::from_meta(1, &example_hello(), Bytes::new(), false).unwrap(),
        Frame::from_meta(2, &put, Bytes::from_static(b"0123"), true).unwrap(),
        Frame::from_meta(3, &Ping, Bytes::new(), false).unwrap(),
        Frame::data(Op::ShardPut, 2, Bytes::from_static(b"456789"), false).unwrap(),
        Frame::from_meta(3, &PingReply, Bytes::new(), false).unwrap(),
        Frame::error(
            Op::ShardGet.code(),
            4,
            &ErrorFrame::new(ErrorCode::NOT_FOUND, "no such shard"),
        )
        .unwrap(),
    ]
}

fn concatenated(frames: &[Frame]) -> Vec<u8> {
    frames.iter().flat_map(Frame::to_vec).collect()
}

/// Feeds `chunks` one after another, collecting every frame decoded.
fn decode_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Vec<Frame> {
    let mut decoder = FrameDecoder::new(Limits::default());
    let mut buffer = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        buffer.extend_from_slice(chunk);
        while let Some(frame) = decoder.decode(&mut buffer).unwrap() {
            frames.push(frame);
        }
    }
    assert!(buffer.is_empty());
    assert!(decoder.is_at_frame_boundary());
    frames
}

#[test]
fn many_frames_in_one_buffer() {
    let frames = sample_frames();
    assert_eq!(decode_chunks([&concatenated(&frames)[..]]), frames);
}

#[test]
fn frames_split_at_every_byte_boundary() {
    let frames = sample_frames();
    let bytes = concatenated(&frames);
    for split in 0..=bytes.len() {
        let (first, second) = bytes.split_at(split);
        assert_eq!(decode_chunks([first, second]), frames, "split at {split}");
    }
    // And one byte at a time.
    assert_eq!(decode_chunks(bytes.chunks(1)), frames);
}

#[test]
fn every_truncation_waits_for_more_and_never_errs() {
    let bytes = concatenated(&sample_frames()[..2]);
    for cut in 0..bytes.len() {
        let mut decoder = FrameDecoder::new(Limits::default());
        let mut buffer = BytesMut::from(&bytes[..cut]);
        while decoder.decode(&mut buffer).unwrap().is_some() {}
        assert!(decoder.bytes_needed() > 0);
    }
}

#[test]
fn garbage_wrong_magic_and_wrong_version_close_the_connection() {
    let cases: [(&[u8], ErrorCode); 3] = [
        (
            b"GET / HTTP/1.1\r\nHost: node-1\r\n\r\n",
            ErrorCode::BAD_FRAME,
        ),
        (
            b"*1\r\n$4\r\nPING\r\n-------------------",
            ErrorCode::BAD_FRAME,
        ),
        (&[0u8; 40], ErrorCode::BAD_FRAME),
    ];
    for (bytes, code) in cases {
        let mut decoder = FrameDecoder::new(Limits::default());
        let error = decoder.decode(&mut BytesMut::from(bytes)).unwrap_err();
        assert!(matches!(error, ProtoError::BadMagic { .. }));
        assert_eq!(error.code(), code);
        assert!(error.is_fatal());
    }
    let mut future = sample_frames()[2].to_vec();
    future[4] = 2;
    let mut decoder = FrameDecoder::new(Limits::default());
    let error = decoder
        .decode(&mut BytesMut::from(&future[..]))
        .unwrap_err();
    assert_eq!(error, ProtoError::UnsupportedVersion { version: 2 });
    assert_eq!(error.code(), ErrorCode::UNSUPPORTED_VERSION);
}

#[test]
fn oversized_lengths_are_refused_from_the_header_alone() {
    let small_meta = Limits {
        meta_bytes_max: 16,
        ..Limits::default()
    };
    let small_body = Limits {
        frame_body_bytes_max: 3,
        ..Limits::default()
    };
    // The HELLO's 52-byte metadata is over 16; the PUT's 4-byte body is over 3. Only the 32
    // header bytes are given: the decoder decides without waiting for the rest.
    let frames = sample_frames();
    for (frame, limits) in [(&frames[0], small_meta), (&frames[1], small_body)] {
        let bytes = frame.to_vec();
        let mut buffer = BytesMut::from(&bytes[..HEADER_BYTES]);
        let capacity = buffer.capacity();
        let mut decoder = FrameDecoder::new(limits);
        let error = decoder.decode(&mut buffer).unwrap_err();
        assert!(
            matches!(
                error,
                ProtoError::MetaTooLarge {
                    meta_bytes: 52,
                    max: 16
                } | ProtoError::FrameBodyTooLarge {
                    request_id: 2,
                    body_bytes: 4,
                    max: 3
                }
            ),
            "{error:?}"
        );
        assert_eq!(error.code(), ErrorCode::TOO_LARGE);
        assert!(error.is_fatal());
        assert_eq!(buffer.capacity(), capacity, "nothing reserved");
    }
}

#[test]
fn before_hello_only_a_small_bodiless_frame_is_accepted() {
    let limits = Limits::default().before_hello();
    let mut decoder = FrameDecoder::new(limits);
    let hello = sample_frames()[0].to_vec();
    assert!(
        decoder
            .decode(&mut BytesMut::from(&hello[..]))
            .unwrap()
            .is_some()
    );
    let put = sample_frames()[1].to_vec();
    let error = decoder.decode(&mut BytesMut::from(&put[..])).unwrap_err();
    assert!(matches!(
        error,
        ProtoError::FrameBodyTooLarge { max: 0, .. }
    ));
}

#[test]
fn damaged_header_or_metadata_is_fatal_damaged_body_is_not() {
    let frames = sample_frames();
    let put = frames[1].to_vec();
    // Flip one bit in every byte of the header and metadata: always fatal, never a frame.
    let meta_end = HEADER_BYTES + frames[1].meta().len();
    for at in 0..meta_end {
        let mut damaged = put.clone();
        damaged[at] ^= 0x10;
        let mut decoder = FrameDecoder::new(Limits::default());
        let mut buffer = BytesMut::from(&damaged[..]);
        let mut result = decoder.decode(&mut buffer);
        if let Ok(None) = result {
            // A damaged meta_len can claim more bytes than were sent: the decoder waits (the
            // node's frame timeout bounds that), and the checksum fails once they arrive.
            buffer.resize(buffer.len() + decoder.bytes_needed(), 0);
            result = decoder.decode(&mut buffer);
        }
        match result {
            Err(error) => assert!(error.is_fatal(), "byte {at}: {error}"),
            Ok(frame) => panic!("byte {at}: damage went unnoticed: {frame:?}"),
        }
    }
    // Flip one bit in the body: that request fails, the next frame decodes.
    for at in meta_end..put.len() {
        let mut damaged = put.clone();
        damaged[at] ^= 0x10;
        damaged.extend_from_slice(&frames[2].to_vec());
        let mut decoder = FrameDecoder::new(Limits::default());
        let mut buffer = BytesMut::from(&damaged[..]);
        let error = decoder.decode(&mut buffer).unwrap_err();
        assert_eq!(error.code(), ErrorCode::CHECKSUM_MISMATCH);
        assert!(!error.is_fatal());
        assert_eq!(
            decoder.decode(&mut buffer).unwrap().as_ref(),
            Some(&frames[2])
        );
    }
}

#[test]
fn unknown_ops_get_a_typed_error_and_the_connection_survives() {
    let unknown = Frame::new(
        FrameKind::Request,
        0x7777,
        9,
        Flags::NONE,
        Bytes::from_static(b"whatever"),
        Bytes::new(),
    )
    .unwrap();
    let mut buffer = BytesMut::from(&concatenated(&[unknown, sample_frames()[2].clone()])[..]);
    let mut decoder = FrameDecoder::new(Limits::default());
    let frame = decoder.decode(&mut buffer).unwrap().unwrap();
    let error = Request::decode(frame.header().op_code(), frame.meta()).unwrap_err();
    assert_eq!(error, ProtoError::UnknownOp { op: 0x7777 });
    assert!(!error.is_fatal());
    let reply = Frame::error(
        frame.header().op_code(),
        frame.header().request_id(),
        &ErrorFrame::from_error(&error),
    )
    .unwrap();
    assert_eq!(reply.decode_error().unwrap().code, ErrorCode::UNKNOWN_OP);
    assert!(decoder.decode(&mut buffer).unwrap().is_some());
}

#[test]
fn hello_must_come_first_with_the_right_token_and_plane() {
    let token = example_token();
    let hello = Frame::from_meta(1, &example_hello(), Bytes::new(), false).unwrap();
    let accepted = authenticate(&hello, &token, Plane::Data).unwrap();
    assert_eq!(accepted.client_name, "example");

    let refusals = [
        // Not a HELLO first.
        (
            Frame::from_meta(1, &Ping, Bytes::new(), false).unwrap(),
            Plane::Data,
            &token,
        ),
        // The wrong listener.
        (hello.clone(), Plane::Peer, &token),
        // A HELLO with a body.
        (
            Frame::from_meta(1, &example_hello(), Bytes::from_static(b"x"), false).unwrap(),
            Plane::Data,
            &token,
        ),
        // Malformed metadata.
        (
            Frame::new(
                FrameKind::Request,
                Op::Hello.code(),
                1,
                Flags::NONE,
                Bytes::from_static(b"\x01"),
                Bytes::new(),
            )
            .unwrap(),
            Plane::Data,
            &token,
        ),
    ];
    for (frame, plane, token) in refusals {
        let error = authenticate(&frame, token, plane).unwrap_err();
        assert_eq!(error.code(), ErrorCode::UNAUTHENTICATED);
        assert!(error.is_fatal());
    }
    // The right shape with a token that differs in its last byte only.
    let mut other = token.as_bytes().to_vec();
    *other.last_mut().unwrap() ^= 1;
    let other = ClusterToken::new(&other).unwrap();
    assert_eq!(
        authenticate(&hello, &other, Plane::Data),
        Err(ProtoError::Unauthenticated {
            reason: "wrong cluster token"
        })
    );
}
