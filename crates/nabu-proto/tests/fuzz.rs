//! Property tests standing in for fuzzing: random and mutated bytes into every decoder.
//! Nothing may panic; whatever a metadata decoder accepts must re-encode to the same bytes
//! (one encoding per value); the request table stays within its bounds.

mod common;

use bytes::{Bytes, BytesMut};
use common::*;
use nabu_proto::ops::*;
use nabu_proto::{
    ErrorFrame, Flags, Frame, FrameDecoder, FrameHeader, FrameKind, InflightRequests, Limits,
    ProtoError, Request, Response,
};
use proptest::prelude::*;

/// Every op code, plus a few that are not ops.
fn op_codes() -> Vec<u16> {
    let mut codes: Vec<u16> = Op::ALL.iter().map(|op| op.code()).collect();
    codes.extend([0, 0x0005, 0x0106, 0x0402, 0xffff]);
    codes
}

/// Runs the decoder over `bytes` cut into `chunk`-byte reads until it stops making progress.
fn drive_decoder(bytes: &[u8], chunk: usize, limits: Limits) {
    let mut decoder = FrameDecoder::new(limits);
    let mut buffer = BytesMut::new();
    for piece in bytes.chunks(chunk.max(1)) {
        buffer.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buffer) {
                Ok(Some(frame)) => {
                    // Whatever comes out is consistent with its header.
                    assert_eq!(frame.meta().len(), usize::from(frame.header().meta_len()));
                    assert_eq!(frame.body().len(), frame.header().body_len() as usize);
                }
                Ok(None) => break,
                Err(error) if error.is_fatal() => {
                    assert_eq!(decoder.decode(&mut buffer), Err(ProtoError::DecoderFailed));
                    return;
                }
                Err(_) => {}
            }
        }
        // Buffering stays bounded: at most one frame's worth plus the last read.
        let limits = decoder.limits();
        let frame_max =
            32 + usize::from(limits.meta_bytes_max) + limits.frame_body_bytes_max as usize;
        assert!(buffer.len() <= frame_max + chunk);
    }
}

/// Checks that any metadata a decoder accepts re-encodes to exactly the same bytes.
fn check_canonical(op_code: u16, bytes: &[u8]) {
    if let Ok(request) = Request::decode(op_code, bytes) {
        let mut again = Vec::new();
        request.encode(&mut again).unwrap();
        assert_eq!(
            again, bytes,
            "request {op_code:#06x} re-encodes differently"
        );
    }
    if let Ok(response) = Response::decode(op_code, bytes) {
        let mut again = Vec::new();
        response.encode(&mut again).unwrap();
        assert_eq!(
            again, bytes,
            "response {op_code:#06x} re-encodes differently"
        );
    }
}

fn valid_stream() -> Vec<u8> {
    let put = ShardPut {
        stripe_id: stripe_id(),
        shard: whole_shard(),
    };
    let frames = [
        Frame::from_meta(1, &example_hello(), Bytes::new(), false).unwrap(),
        Frame::from_meta(2, &put, Bytes::from(vec![7u8; 100]), true).unwrap(),
        Frame::data(Op::ShardPut, 2, Bytes::from(vec![8u8; 50]), false).unwrap(),
        Frame::error(0, 0, &ErrorFrame::new(nabu_proto::ErrorCode::BUSY, "busy")).unwrap(),
    ];
    frames.iter().flat_map(Frame::to_vec).collect()
}

proptest! {
    // 256 cases each keeps the whole file well under a second; no failure-persistence file,
    // since integration tests have no lib.rs beside them to put it next to.
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_bytes_never_panic_the_frame_decoder(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        chunk in 1usize..64,
        magic_prefix in any::<bool>(),
    ) {
        // Half the inputs start with a valid magic and version so the fuzzing gets past them.
        let mut input = if magic_prefix { b"NABU\x01".to_vec() } else { Vec::new() };
        input.extend_from_slice(&bytes);
        drive_decoder(&input, chunk, Limits::default());
        drive_decoder(&input, chunk, Limits::default().before_hello());
    }

    #[test]
    fn mutated_valid_streams_never_panic_the_frame_decoder(
        mutations in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        chunk in 1usize..300,
    ) {
        let mut bytes = valid_stream();
        let length = bytes.len();
        for (at, value) in mutations {
            bytes[at % length] = value;
        }
        drive_decoder(&bytes, chunk, Limits::default());
    }

    #[test]
    fn random_bytes_never_panic_metadata_decoders_and_accepted_ones_are_canonical(
        bytes in proptest::collection::vec(any::<u8>(), 0..160),
        count in 0u32..20_000,
    ) {
        for op_code in op_codes() {
            check_canonical(op_code, &bytes);
        }
        let _ = ErrorFrame::decode(&bytes);
        if let Ok(entries) = decode_list_entries(&bytes, count) {
            prop_assert_eq!(encode_list_entries(&entries).unwrap(), bytes.clone());
        }
        let token_text: String = String::from_utf8_lossy(&bytes).chars().take(80).collect();
        let _ = nabu_proto::ClusterToken::from_hex(&token_text);
    }

    #[test]
    fn mutated_sample_metadata_never_panics_and_stays_canonical(
        sample in any::<prop::sample::Index>(),
        mutations in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut encoded: Vec<(u16, Vec<u8>)> = requests()
            .iter()
            .map(|request| (request.op().code(), encode_request(request)))
            .collect();
        encoded.extend(
            responses()
                .iter()
                .map(|response| (response.op().code(), encode_response(response))),
        );
        let (op_code, mut bytes) = sample.get(&encoded).clone();
        if !bytes.is_empty() {
            for (at, value) in mutations {
                let position = at.index(bytes.len());
                bytes[position] = value;
            }
        }
        check_canonical(op_code, &bytes);
        let keep = cut.index(bytes.len() + 1);
        check_canonical(op_code, &bytes[..keep]);
    }

    #[test]
    fn meta_put_round_trips_for_any_fields(
        namespace in proptest::collection::vec(any::<char>(), 1..40),
        key in proptest::collection::vec(any::<u8>(), 1..KEY_BYTES_MAX),
        hlc_timestamp in any::<u64>(),
        value_bytes in any::<u64>(),
        manifests in any::<bool>(),
    ) {
        let namespace: String = namespace.into_iter().collect();
        let put = MetaPut {
            table: if manifests { MetaTable::Manifests } else { MetaTable::KeyRecords },
            namespace,
            key,
            hlc_timestamp,
            value_bytes,
        };
        match put.to_vec() {
            Ok(bytes) => prop_assert_eq!(MetaPut::decode(&bytes).unwrap(), put),
            // Up to 40 chars of up to 4 bytes can exceed the 255-byte namespace bound.
            Err(error) => prop_assert!(put.namespace.len() > NAMESPACE_BYTES_MAX, "{}", error),
        }
    }

    #[test]
    fn request_table_stays_within_its_bounds(
        steps in proptest::collection::vec((0u8..5, 1u64..6, 0u32..40, any::<bool>(), 0u64..80), 0..200),
    ) {
        let limits = Limits {
            inflight_max: 3,
            request_body_bytes_max: 64,
            ..Limits::default()
        };
        let mut table = InflightRequests::new(&limits);
        for (action, request_id, body_bytes, more, declared) in steps {
            let body = vec![0u8; body_bytes as usize];
            let kind = if action == 1 { FrameKind::Data } else { FrameKind::Request };
            let meta: &[u8] = if kind == FrameKind::Data { b"" } else { b"m" };
            let header = FrameHeader::new(kind, 0x0101, request_id, Flags::more_if(more), meta, &body)
                .unwrap();
            let result = match action {
                0 => table.start(&header, declared).map(drop),
                1 => table.data(&header).map(drop),
                2 => table.reject(&header).map(drop),
                3 => table.finish(request_id),
                _ => {
                    table.abort(request_id);
                    Ok(())
                }
            };
            if matches!(&result, Err(error) if error.is_fatal()) {
                // The connection would close here; go on with a fresh one.
                table = InflightRequests::new(&limits);
            }
            prop_assert!(table.inflight() <= 3);
            prop_assert!(table.discarding() <= 3);
        }
    }
}
