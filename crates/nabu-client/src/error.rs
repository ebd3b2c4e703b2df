//! The client's typed errors: what a caller can branch on.
//!
//! Per-node failures (a refused connection, a timeout, an ERROR frame) are mostly handled
//! inside the client — a shard goes to another node, a read decodes around a missing shard —
//! and surface only when they decide the outcome. So the variants callers meet most are the
//! outcome ones: [`ClientError::NotFound`], [`ClientError::Unavailable`] (naming the stripes
//! that cannot be read), [`ClientError::NotDurable`] and [`ClientError::Corrupt`].

use std::fmt;
use std::io;
use std::time::Duration;

use nabu_core::id::BlobId;
use nabu_core::ring::NodeId;
use nabu_proto::{ErrorCode, Op, ProtoError};

use crate::format::FormatError;

/// Everything a client call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The key (or blob, or namespace) does not exist, or was deleted.
    #[error("not found: {0}")]
    NotFound(String),

    /// Some stripes of a blob have fewer readable shards than decoding needs.
    #[error(
        "blob {blob_id} is unavailable: stripes {stripes:?} of {stripe_count} are unreadable \
         (fewer than {shards_needed} of their shards could be read)"
    )]
    Unavailable {
        /// The blob.
        blob_id: BlobId,
        /// The indexes (0-based, in blob order) of the unreadable stripes, ascending.
        stripes: Vec<u64>,
        /// How many stripes the blob has.
        stripe_count: u64,
        /// How many shards of a stripe a read needs (K, or 1 for replicas).
        shards_needed: usize,
    },

    /// A key record, manifest or listing could not be read from enough nodes to give an
    /// authoritative answer.
    #[error("{what} is unavailable: {detail}")]
    MetadataUnavailable {
        /// What was being read (`key record default/weights.bin`).
        what: String,
        /// Why: how many of its nodes answered.
        detail: String,
    },

    /// A write could not make enough copies durable; nothing became visible.
    #[error(
        "{what} is not durable: {durable} of {wanted} copies written, {required} required{}",
        if why.is_empty() { String::new() } else { format!(" ({why})") }
    )]
    NotDurable {
        /// What was being written (`stripe 3 of blob …`, `key record …`).
        what: String,
        /// Copies (shards, replicas) acknowledged durable.
        durable: usize,
        /// Copies the policy places.
        wanted: usize,
        /// The least the client acknowledges.
        required: usize,
        /// What the nodes that did not take a copy answered (`node 3: no space left …`), one
        /// line per distinct answer; empty where nothing failed outright.
        why: String,
    },

    /// Bytes failed verification after every alternative was tried (a stripe whose BLAKE3
    /// does not match its id, a manifest that contradicts its key record).
    #[error("{what} is corrupt: {detail}")]
    Corrupt {
        /// What failed verification.
        what: String,
        /// How.
        detail: String,
    },

    /// A stored key record or manifest could not be decoded.
    #[error("{what} is malformed: {source}")]
    Format {
        /// What was being decoded.
        what: String,
        /// The decoding error.
        #[source]
        source: FormatError,
    },

    /// A node answered with an ERROR frame.
    #[error("node {node} answered {op} with {code}: {message}")]
    Remote {
        /// The node.
        node: NodeId,
        /// The request's op.
        op: Op,
        /// The wire error code.
        code: ErrorCode,
        /// The node's message.
        message: String,
    },

    /// A node sent bytes that break the protocol (or the client could not encode a request).
    #[error("node {node}: protocol error: {source}")]
    Protocol {
        /// The node.
        node: NodeId,
        /// What was wrong.
        #[source]
        source: ProtoError,
    },

    /// A node did not answer in time.
    #[error("node {node}: {op} timed out after {after:?}")]
    Timeout {
        /// The node.
        node: NodeId,
        /// The request's op.
        op: Op,
        /// The time waited.
        after: Duration,
    },

    /// The connection to a node failed or was lost; requests in flight on it have unknown
    /// outcomes (every write is idempotent, so they may be retried).
    #[error("node {node}: {reason}")]
    Connection {
        /// The node.
        node: NodeId,
        /// Why (connect refused, reset, closed by the node, marked down recently).
        reason: String,
    },

    /// Reading the caller's input stream failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },

    /// The call's arguments are invalid (an empty key, a range past the end, an unknown
    /// namespace policy text, a configuration the cluster cannot satisfy).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl ClientError {
    /// Whether this error came from one node and another node may do better (the caller of a
    /// per-node request tries elsewhere).
    pub fn is_node_failure(&self) -> bool {
        matches!(
            self,
            ClientError::Remote { .. }
                | ClientError::Protocol { .. }
                | ClientError::Timeout { .. }
                | ClientError::Connection { .. }
        )
    }

    /// The wire code if a node answered with an ERROR frame.
    pub fn remote_code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Remote { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether a node said it holds nothing under this address (ERROR `NOT_FOUND`).
    pub fn is_remote_not_found(&self) -> bool {
        self.remote_code() == Some(ErrorCode::NOT_FOUND)
    }
}

/// The client's result type.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// A short display of a byte key: UTF-8 when it is, else hex (for error messages and logs).
pub(crate) struct KeyDisplay<'a>(pub &'a [u8]);

impl fmt::Display for KeyDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(self.0) {
            Ok(text) if !text.chars().any(char::is_control) => f.write_str(text),
            _ => {
                f.write_str("0x")?;
                for byte in self.0 {
                    write!(f, "{byte:02x}")?;
                }
                Ok(())
            }
        }
    }
}
