//! NabuStore's binary wire protocol: the frames that the data plane (clients, gateways) and
//! the peer plane (node to node) exchange over TCP and Unix sockets.
//!
//! **Why a crate of its own, with no sockets and no async.** Every byte this crate parses
//! comes from the network, so it is the code most exposed to garbage, truncation and
//! malice. Keeping it to pure functions over byte slices and [`bytes::BytesMut`] makes it easy
//! to test exhaustively and to fuzz, and lets the node, the client and the gateways share one
//! implementation whatever their I/O. The node and client crates own sockets, timeouts and
//! tasks; this crate owns what the bytes mean.
//!
//! **What is here.**
//! - [`FrameHeader`]: the fixed 32-byte little-endian header (magic, version, kind, op,
//!   request id, flags, lengths, two CRC32C checksums) and its checks.
//! - [`Frame`] and [`FrameDecoder`]: whole frames, and an incremental decoder that cuts them
//!   from a receive buffer, checking every length against [`Limits`] *before* buffering what
//!   it announces.
//! - [`ops`]: one metadata type per op and direction, each with an exact encoding and a
//!   decoder that refuses anything else.
//! - [`ErrorCode`], [`ErrorFrame`], [`ProtoError`]: typed errors, one mapping table from Rust
//!   errors to wire codes, and which errors close the connection.
//! - [`InflightRequests`]: the per-connection bookkeeping of many requests in flight with
//!   streamed bodies, bounded everywhere.
//! - [`ClusterToken`] and [`authenticate`]: the HELLO handshake with a constant-time compare.
//!
//! The format is documented byte by byte in `docs/formats/protocol.md`; a test checks the
//! document's worked example against this code.
//!
//! **Invariant:** no input makes this crate panic or allocate more than the limits allow; a
//! test feeds random bytes to every decoder.

pub mod auth;
pub mod error;
pub mod frame;
pub mod header;
pub mod inflight;
pub mod limits;
pub mod ops;
mod wire;

pub use auth::{ClusterToken, authenticate, constant_time_eq};
pub use error::{ErrorCode, ErrorFrame, ProtoError};
pub use frame::{Frame, FrameDecoder};
pub use header::{Flags, FrameHeader, FrameKind, HEADER_BYTES, MAGIC, PROTOCOL_VERSION};
pub use inflight::{BodyProgress, DataOutcome, InflightRequests};
pub use limits::Limits;
pub use ops::{Meta, Op, Request, Response};
