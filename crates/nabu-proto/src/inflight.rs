//! The request streams of one connection, as the server sees them.
//!
//! Many requests share a connection, and a request's body may arrive over several frames
//! (REQUEST with `MORE`, then DATA frames, the last without `MORE`), interleaved with other
//! requests' frames. [`InflightRequests`] is the pure bookkeeping for that: it enforces the
//! rules of the protocol document ("Requests in flight") so the node's connection task only
//! does I/O:
//!
//! - request ids are unique among requests in flight;
//! - at most `inflight_max` requests are in flight (more: BUSY);
//! - a body adds up to exactly the length its metadata declared, which is at most
//!   `request_body_bytes_max` (else TOO_LARGE or BAD_REQUEST);
//! - DATA frames belong to a request whose body is still arriving, with the same op;
//! - after a request with a streamed body has been refused, its remaining DATA frames are
//!   dropped quietly (the client may have sent them before it saw the ERROR). At most
//!   `inflight_max` such refused streams are tracked; more closes the connection.
//!
//! Every table here is bounded by `inflight_max`.

use std::collections::{HashMap, HashSet};

use crate::error::ProtoError;
use crate::header::{FrameHeader, FrameKind};
use crate::limits::Limits;

/// How much of a request's body has arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyProgress {
    /// The total its metadata declared.
    pub declared: u64,
    /// The bytes received so far, including the frame just admitted.
    pub received: u64,
    /// Whether that frame was the last (`received == declared`).
    pub complete: bool,
}

/// What to do with an admitted DATA frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataOutcome {
    /// Hand its body to the request.
    Deliver(BodyProgress),
    /// Drop it: its request was refused already (and answered).
    Discard,
}

#[derive(Debug, Clone, Copy)]
struct Live {
    op_code: u16,
    /// `Some` while DATA frames are still expected.
    body: Option<BodyProgress>,
}

/// The requests in flight on one connection (server side).
#[derive(Debug, Clone)]
pub struct InflightRequests {
    inflight_max: usize,
    request_body_bytes_max: u64,
    live: HashMap<u64, Live>,
    discarding: HashSet<u64>,
}

impl InflightRequests {
    /// An empty table enforcing `limits.inflight_max` and `limits.request_body_bytes_max`.
    pub fn new(limits: &Limits) -> Self {
        Self {
            inflight_max: limits.inflight_max as usize,
            request_body_bytes_max: limits.request_body_bytes_max,
            live: HashMap::new(),
            discarding: HashSet::new(),
        }
    }

    /// Requests in flight.
    pub fn inflight(&self) -> usize {
        self.live.len()
    }

    /// Refused streamed requests whose remaining DATA frames are being dropped.
    pub fn discarding(&self) -> usize {
        self.discarding.len()
    }

    /// Whether `request_id` is in flight.
    pub fn contains(&self, request_id: u64) -> bool {
        self.live.contains_key(&request_id)
    }

    /// Admits a REQUEST frame whose (decoded) metadata declares a body of
    /// `body_bytes_declared`.
    ///
    /// On a non-fatal error the request is already forgotten (and, if its body continues,
    /// marked for discarding): reply ERROR with the error's code and carry on. On a fatal one,
    /// close the connection.
    pub fn start(
        &mut self,
        header: &FrameHeader,
        body_bytes_declared: u64,
    ) -> Result<BodyProgress, ProtoError> {
        let request_id = header.request_id();
        if header.kind() != FrameKind::Request {
            return Err(ProtoError::MalformedHeader {
                reason: "only a REQUEST frame starts a request",
            });
        }
        if self.live.contains_key(&request_id) || self.discarding.contains(&request_id) {
            return Err(ProtoError::DuplicateRequestId { request_id });
        }
        let refusal = if self.live.len() >= self.inflight_max {
            Some(ProtoError::Busy {
                request_id,
                inflight_max: self.inflight_max as u64,
            })
        } else if body_bytes_declared > self.request_body_bytes_max {
            Some(ProtoError::RequestBodyTooLarge {
                request_id,
                declared: body_bytes_declared,
                max: self.request_body_bytes_max,
            })
        } else {
            length_mismatch(header, body_bytes_declared, u64::from(header.body_len()))
        };
        if let Some(error) = refusal {
            return Err(self.refuse(header, error));
        }
        let progress = BodyProgress {
            declared: body_bytes_declared,
            received: header.body_len().into(),
            complete: !header.more(),
        };
        let body = header.more().then_some(progress);
        let live = Live {
            op_code: header.op_code(),
            body,
        };
        self.live.insert(request_id, live);
        Ok(progress)
    }

    /// Admits a DATA frame. Errors behave as in [`InflightRequests::start`].
    pub fn data(&mut self, header: &FrameHeader) -> Result<DataOutcome, ProtoError> {
        let request_id = header.request_id();
        if header.kind() != FrameKind::Data {
            return Err(ProtoError::MalformedHeader {
                reason: "only a DATA frame continues a body",
            });
        }
        if self.discarding.contains(&request_id) {
            if !header.more() {
                self.discarding.remove(&request_id);
            }
            return Ok(DataOutcome::Discard);
        }
        let Some(live) = self.live.get_mut(&request_id) else {
            return Err(ProtoError::UnexpectedData { request_id });
        };
        let Some(mut progress) = live.body else {
            return Err(ProtoError::UnexpectedData { request_id });
        };
        if live.op_code != header.op_code() {
            return Err(ProtoError::OpMismatch {
                request_id,
                expected: live.op_code,
                found: header.op_code(),
            });
        }
        progress.received = progress.received.saturating_add(header.body_len().into());
        progress.complete = !header.more();
        if let Some(error) = length_mismatch(header, progress.declared, progress.received) {
            self.live.remove(&request_id);
            return Err(self.refuse(header, error));
        }
        live.body = header.more().then_some(progress);
        Ok(DataOutcome::Deliver(progress))
    }

    /// The request of `header`'s frame failed on this frame (its body checksum, its metadata,
    /// or the node refused it). Forgets the request, arranges for the rest of its body to be
    /// dropped, and says whether an ERROR reply is due (false if the request was refused
    /// before, so it has been answered already). Fatal only if too many refused streams are
    /// still arriving, or for a DATA frame of no known request.
    pub fn reject(&mut self, header: &FrameHeader) -> Result<bool, ProtoError> {
        let request_id = header.request_id();
        if self.discarding.contains(&request_id) {
            if !header.more() {
                self.discarding.remove(&request_id);
            }
            return Ok(false);
        }
        if self.live.remove(&request_id).is_none() && header.kind() == FrameKind::Data {
            return Err(ProtoError::UnexpectedData { request_id });
        }
        if header.more() {
            self.discard(request_id)?;
        }
        Ok(true)
    }

    /// The peer sent an ERROR frame for `request_id`: it gives up the body it was streaming.
    /// Forgets the request and says whether it was in flight (then reply ERROR CANCELLED to
    /// confirm); an abort of an unknown or already refused request is ignored.
    pub fn abort(&mut self, request_id: u64) -> bool {
        if self.discarding.remove(&request_id) {
            return false;
        }
        self.live.remove(&request_id).is_some()
    }

    /// The final frame for `request_id` has been sent (a RESPONSE or DATA frame without
    /// `MORE`, or an ERROR): the id may be used again. If the request's body was still
    /// arriving (the node answered early), the rest of it is dropped.
    pub fn finish(&mut self, request_id: u64) -> Result<(), ProtoError> {
        match self.live.remove(&request_id) {
            Some(Live { body: Some(_), .. }) => self.discard(request_id),
            _ => Ok(()),
        }
    }

    fn discard(&mut self, request_id: u64) -> Result<(), ProtoError> {
        if self.discarding.len() >= self.inflight_max {
            return Err(ProtoError::TooManyStreams {
                max: self.inflight_max as u64,
            });
        }
        self.discarding.insert(request_id);
        Ok(())
    }

    /// Turns a refusal of `header`'s request into the error to return: the refusal itself, or
    /// a fatal error if its body continues and cannot be tracked for discarding.
    fn refuse(&mut self, header: &FrameHeader, refusal: ProtoError) -> ProtoError {
        if header.more()
            && let Err(fatal) = self.discard(header.request_id())
        {
            return fatal;
        }
        refusal
    }
}

/// A body is over its declared length as soon as it is, and must equal it at its last frame.
fn length_mismatch(header: &FrameHeader, declared: u64, received: u64) -> Option<ProtoError> {
    let wrong = received > declared || (!header.more() && received != declared);
    wrong.then_some(ProtoError::BodyLengthMismatch {
        request_id: header.request_id(),
        declared,
        received,
    })
}

#[cfg(test)]
mod tests;
