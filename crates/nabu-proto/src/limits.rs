//! The bounds of a listener and its connections, with their defaults.
//!
//! The frame decoder enforces the byte bounds before it buffers anything; [`InflightRequests`]
//! enforces the per-connection request bounds. Timeouts and the connection cap are enforced by
//! the node's listener (this crate has no clock and no sockets) but live here so the node, the
//! client and the protocol document share one set of defaults.
//!
//! [`InflightRequests`]: crate::InflightRequests

use std::time::Duration;

/// Limits of one listener (data or peer plane) and each of its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest frame metadata accepted, in bytes. The wire field is a `u16`, so this is at
    /// most 65,535 (the default).
    pub meta_bytes_max: u16,
    /// The largest body one frame may carry, in bytes. A larger body is streamed as several
    /// frames (REQUEST or RESPONSE with `MORE`, then DATA frames). Default 4 MiB: one default
    /// stripe, so a replicated stripe or any `ec:K+M` shard of one goes in a single frame,
    /// while one connection never buffers more than ~4 MiB for a frame.
    pub frame_body_bytes_max: u32,
    /// The largest body one request may declare, over all its frames. Default 64 MiB.
    pub request_body_bytes_max: u64,
    /// Requests in flight per connection (received, final response not yet sent). A request
    /// beyond it gets BUSY. Default 128.
    pub inflight_max: u32,
    /// Open connections per listener; the listener answers one more with an ERROR BUSY frame
    /// (request id 0) and closes it. Default 1,024.
    pub connections_max: u32,
    /// A new connection must complete HELLO within this time. Default 5 s.
    pub hello_timeout: Duration,
    /// Once a frame's first byte has arrived, the rest must arrive within this time. Default 30 s.
    pub frame_timeout: Duration,
    /// A connection with no request in flight and no byte received for this long is closed
    /// (silently: nothing is lost). Default 5 min.
    pub idle_timeout: Duration,
}

impl Limits {
    /// The limits that apply to a connection before its HELLO is accepted: the HELLO has no
    /// body and a small metadata block, so an unauthenticated peer can make the node buffer at
    /// most a few hundred bytes.
    pub fn before_hello(&self) -> Limits {
        Limits {
            meta_bytes_max: HELLO_META_BYTES_MAX,
            frame_body_bytes_max: 0,
            request_body_bytes_max: 0,
            inflight_max: 1,
            ..*self
        }
    }
}

/// The largest HELLO metadata: a token of at most 256 bytes, a client name of at most 128,
/// and the fixed fields, rounded up.
pub const HELLO_META_BYTES_MAX: u16 = 512;

impl Default for Limits {
    fn default() -> Self {
        Self {
            meta_bytes_max: u16::MAX,
            frame_body_bytes_max: 4 << 20,
            request_body_bytes_max: 64 << 20,
            inflight_max: 128,
            connections_max: 1024,
            hello_timeout: Duration::from_secs(5),
            frame_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(300),
        }
    }
}
