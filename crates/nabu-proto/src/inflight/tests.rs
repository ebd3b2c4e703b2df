use super::*;
use crate::error::ErrorCode;
use crate::header::Flags;

const OP: u16 = 0x0101;

fn request(request_id: u64, body_bytes: usize, more: bool) -> FrameHeader {
    let body = vec![0u8; body_bytes];
    FrameHeader::new(
        FrameKind::Request,
        OP,
        request_id,
        Flags::more_if(more),
        b"meta",
        &body,
    )
    .unwrap()
}

fn data(request_id: u64, body_bytes: usize, more: bool) -> FrameHeader {
    let body = vec![0u8; body_bytes];
    FrameHeader::new(
        FrameKind::Data,
        OP,
        request_id,
        Flags::more_if(more),
        b"",
        &body,
    )
    .unwrap()
}

fn limits(inflight_max: u32, request_body_bytes_max: u64) -> Limits {
    Limits {
        inflight_max,
        request_body_bytes_max,
        ..Limits::default()
    }
}

#[test]
fn single_frame_requests_are_tracked_until_finished() {
    let mut table = InflightRequests::new(&limits(2, 100));
    let progress = table.start(&request(1, 10, false), 10).unwrap();
    assert_eq!(
        progress,
        BodyProgress {
            declared: 10,
            received: 10,
            complete: true
        }
    );
    assert!(table.contains(1));
    assert_eq!(
        table.start(&request(1, 0, false), 0),
        Err(ProtoError::DuplicateRequestId { request_id: 1 })
    );
    table.finish(1).unwrap();
    assert_eq!(table.inflight(), 0);
    table.start(&request(1, 0, false), 0).unwrap(); // the id may be used again
}

#[test]
fn streamed_body_adds_up_to_its_declared_length() {
    let mut table = InflightRequests::new(&limits(4, 100));
    assert!(!table.start(&request(7, 40, true), 100).unwrap().complete);
    assert_eq!(
        table.data(&data(7, 40, true)).unwrap(),
        DataOutcome::Deliver(BodyProgress {
            declared: 100,
            received: 80,
            complete: false
        })
    );
    assert_eq!(
        table.data(&data(7, 20, false)).unwrap(),
        DataOutcome::Deliver(BodyProgress {
            declared: 100,
            received: 100,
            complete: true
        })
    );
    // The body is complete: another DATA frame is a protocol violation.
    let error = table.data(&data(7, 1, false)).unwrap_err();
    assert_eq!(error, ProtoError::UnexpectedData { request_id: 7 });
    assert!(error.is_fatal());
    table.finish(7).unwrap();
}

#[test]
fn body_length_mismatches_fail_the_request_and_drop_the_rest() {
    let mut table = InflightRequests::new(&limits(4, 100));
    // Too long: 60 + 60 > 100, caught at the frame that overshoots.
    table.start(&request(1, 60, true), 100).unwrap();
    let error = table.data(&data(1, 60, true)).unwrap_err();
    assert_eq!(error.code(), ErrorCode::BAD_REQUEST);
    assert!(!error.is_fatal());
    assert!(!table.contains(1));
    assert_eq!(table.data(&data(1, 60, true)), Ok(DataOutcome::Discard));
    assert_eq!(table.data(&data(1, 60, false)), Ok(DataOutcome::Discard));
    assert_eq!(table.discarding(), 0);
    // Too short: the last frame arrives early.
    table.start(&request(2, 10, true), 100).unwrap();
    assert!(matches!(
        table.data(&data(2, 10, false)),
        Err(ProtoError::BodyLengthMismatch {
            declared: 100,
            received: 20,
            ..
        })
    ));
    // A single frame that disagrees with its metadata.
    assert!(matches!(
        table.start(&request(3, 5, false), 6),
        Err(ProtoError::BodyLengthMismatch { .. })
    ));
    assert_eq!(table.inflight(), 0);
}

#[test]
fn oversized_declared_bodies_are_refused_up_front() {
    let mut table = InflightRequests::new(&limits(4, 100));
    let error = table.start(&request(1, 0, true), 101).unwrap_err();
    assert_eq!(error.code(), ErrorCode::TOO_LARGE);
    assert!(!error.is_fatal());
    assert_eq!(table.data(&data(1, 50, false)), Ok(DataOutcome::Discard));
    let error = table.start(&request(2, 0, false), u64::MAX).unwrap_err();
    assert_eq!(error.code(), ErrorCode::TOO_LARGE);
}

#[test]
fn requests_beyond_the_cap_get_busy_and_refused_streams_are_bounded() {
    let mut table = InflightRequests::new(&limits(2, 100));
    table.start(&request(1, 0, false), 0).unwrap();
    table.start(&request(2, 0, false), 0).unwrap();
    let busy = table.start(&request(3, 0, false), 0).unwrap_err();
    assert_eq!(busy.code(), ErrorCode::BUSY);
    assert!(!busy.is_fatal());
    // Refused streamed requests are remembered (to drop their DATA) up to inflight_max ...
    assert!(!table.start(&request(4, 1, true), 2).unwrap_err().is_fatal());
    assert!(!table.start(&request(5, 1, true), 2).unwrap_err().is_fatal());
    assert_eq!(table.discarding(), 2);
    // ... and reusing one of their ids while its DATA is still coming is a duplicate.
    assert!(
        table
            .start(&request(4, 0, false), 0)
            .unwrap_err()
            .is_fatal()
    );
    // One more refused stream cannot be tracked: the connection must close.
    let fatal = table.start(&request(6, 1, true), 2).unwrap_err();
    assert!(fatal.is_fatal());
    assert_eq!(fatal, ProtoError::TooManyStreams { max: 2 });
}

#[test]
fn data_frames_must_match_a_streaming_request() {
    let mut table = InflightRequests::new(&limits(4, 100));
    assert!(table.data(&data(9, 1, false)).unwrap_err().is_fatal());
    table.start(&request(1, 1, true), 2).unwrap();
    let other_op = FrameHeader::new(FrameKind::Data, OP + 1, 1, Flags::NONE, b"", b"x").unwrap();
    assert!(matches!(
        table.data(&other_op),
        Err(ProtoError::OpMismatch {
            request_id: 1,
            expected: OP,
            found: 0x0102
        })
    ));
    // Kinds are checked too.
    assert!(table.start(&data(2, 0, false), 0).is_err());
    assert!(table.data(&request(2, 0, false)).is_err());
}

#[test]
fn rejected_frames_answer_once_and_drop_the_rest_of_the_body() {
    let mut table = InflightRequests::new(&limits(4, 100));
    // A REQUEST whose body checksum failed, never admitted: reply once, drop its DATA.
    assert_eq!(table.reject(&request(1, 10, true)), Ok(true));
    assert_eq!(table.reject(&data(1, 10, true)), Ok(false));
    assert_eq!(table.data(&data(1, 10, false)), Ok(DataOutcome::Discard));
    assert_eq!(table.discarding(), 0);
    // A DATA frame of an admitted request fails its checksum.
    table.start(&request(2, 10, true), 30).unwrap();
    assert_eq!(table.reject(&data(2, 10, true)), Ok(true));
    assert!(!table.contains(2));
    assert_eq!(table.data(&data(2, 10, false)), Ok(DataOutcome::Discard));
    // The node refuses an admitted single-frame request (NOT_FOUND, NO_SPACE, ...).
    table.start(&request(3, 0, false), 0).unwrap();
    assert_eq!(table.reject(&request(3, 0, false)), Ok(true));
    assert_eq!(table.inflight(), 0);
    assert_eq!(table.discarding(), 0);
    // A failed DATA frame of nothing known is a protocol violation.
    assert!(table.reject(&data(8, 1, false)).unwrap_err().is_fatal());
}

#[test]
fn aborts_and_early_answers_drop_the_rest() {
    let mut table = InflightRequests::new(&limits(4, 100));
    table.start(&request(1, 10, true), 50).unwrap();
    assert!(table.abort(1));
    assert!(!table.abort(1));
    assert_eq!(table.inflight(), 0);
    // The node answers (an error) before the body is complete: the rest is dropped.
    table.start(&request(2, 10, true), 50).unwrap();
    table.finish(2).unwrap();
    assert_eq!(table.data(&data(2, 40, false)), Ok(DataOutcome::Discard));
    assert_eq!(table.discarding(), 0);
    // An abort of a request already being discarded is ignored and ends the discarding.
    table.start(&request(3, 10, true), 500).unwrap_err();
    assert!(!table.abort(3));
    assert_eq!(table.discarding(), 0);
}
