//! Errors: the Rust-side [`ProtoError`], the wire-side [`ErrorCode`], and the [`ErrorFrame`]
//! that carries one to the peer.
//!
//! Every way a frame, a piece of metadata or a request stream can be wrong is one
//! [`ProtoError`] variant. [`ProtoError::code`] is the one table that maps them to wire codes,
//! and [`ProtoError::is_fatal`] says whether the connection survives: a fatal error means the
//! byte stream can no longer be trusted (bad magic, bad header checksum, a length over the
//! limits) or the peer broke the connection rules, so the receiver sends one ERROR frame and
//! closes; a non-fatal one fails only the request it names, and the connection goes on.

use std::fmt;

use crate::header::FrameHeader;
use crate::wire::{Reader, Writer};

/// The longest message an [`ErrorFrame`] carries, in bytes of UTF-8. Longer messages are cut at
/// a character boundary when the frame is built, so sending an error never fails.
pub const ERROR_MESSAGE_BYTES_MAX: usize = 1024;

/// A wire error code (u16). Unassigned codes are kept as they are, so a newer peer's codes
/// survive a round trip through an older one; [`ErrorCode::name`] calls them `UNKNOWN`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ErrorCode(u16);

/// One table: each code's name, value, whether retrying the same request may succeed, and
/// what it means. The protocol document mirrors it; a test checks the two agree.
macro_rules! error_codes {
    ($($(#[$doc:meta])* $name:ident = $value:literal, retryable = $retryable:literal;)*) => {
        impl ErrorCode {
            $($(#[$doc])* pub const $name: ErrorCode = ErrorCode($value);)*

            /// Every assigned code, in wire order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name),*];

            /// The code's name as the protocol document spells it (`UNKNOWN` if unassigned).
            pub fn name(self) -> &'static str {
                match self.0 {
                    $($value => stringify!($name),)*
                    _ => "UNKNOWN",
                }
            }

            /// Whether sending the same request again (to this node, later) may succeed.
            pub fn is_retryable(self) -> bool {
                match self.0 {
                    $($value => $retryable,)*
                    _ => false,
                }
            }
        }
    };
}

error_codes! {
    /// The frame is malformed (bad magic, bad header checksum, broken framing rules). The
    /// sender closes the connection after this error.
    BAD_FRAME = 1, retryable = false;
    /// A frame body failed its checksum; the request failed and may be sent again.
    CHECKSUM_MISMATCH = 2, retryable = true;
    /// The frame's protocol version is not spoken here; the message names the ones that are.
    UNSUPPORTED_VERSION = 3, retryable = false;
    /// No valid HELLO (cluster token) came first. The connection is closed.
    UNAUTHENTICATED = 4, retryable = false;
    /// The op code is not known to this node.
    UNKNOWN_OP = 5, retryable = false;
    /// A length is over a limit (frame body, request body, a key).
    TOO_LARGE = 6, retryable = false;
    /// The op's metadata is malformed or inconsistent with the body.
    BAD_REQUEST = 7, retryable = false;
    /// Too many requests in flight on this connection, or too many connections.
    BUSY = 8, retryable = true;
    /// The node gave up waiting (for the rest of a body, for a disk, for a peer).
    TIMEOUT = 9, retryable = true;
    /// The sender gave up a request whose body it was streaming.
    CANCELLED = 10, retryable = false;
    /// No such shard, key or manifest on this node.
    NOT_FOUND = 11, retryable = false;
    /// The node already holds a different shard of this stripe (at most one per stripe).
    CONFLICT = 12, retryable = false;
    /// The node's disks are full.
    NO_SPACE = 13, retryable = false;
    /// The stored bytes failed their checksum; read another shard (the node repairs its own).
    CORRUPT = 14, retryable = false;
    /// The node cannot serve this now (starting, draining, read-only after a failed fsync).
    UNAVAILABLE = 15, retryable = true;
    /// A bug on the node; its log says more.
    INTERNAL = 16, retryable = false;
}

impl ErrorCode {
    /// A code from its wire value; any value is kept (see the type's docs).
    pub const fn from_u16(value: u16) -> Self {
        Self(value)
    }

    /// The wire value.
    pub const fn as_u16(self) -> u16 {
        self.0
    }
}

impl fmt::Debug for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.name(), self.0)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything that can be wrong with bytes received, or with a value about to be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    // ---- the frame header: all fatal, the byte stream cannot be trusted any more ----
    /// The first four bytes are not `NABU`.
    #[error("bad magic {found:02x?}, expected \"NABU\"")]
    BadMagic { found: [u8; 4] },
    /// A protocol version this code does not speak.
    #[error("protocol version {version} is not supported (this node speaks 1)")]
    UnsupportedVersion { version: u8 },
    /// A frame kind outside 1..=4.
    #[error("unknown frame kind {kind}")]
    UnknownKind { kind: u8 },
    /// A flag bit that no version-1 frame sets.
    #[error("reserved flag bits set: {flags:#06x}")]
    ReservedFlags { flags: u16 },
    /// A header whose fields break the framing rules (see the protocol document).
    #[error("malformed frame header: {reason}")]
    MalformedHeader { reason: &'static str },
    /// `meta_len` is over the receiver's limit.
    #[error("frame metadata of {meta_bytes} bytes is over the limit of {max}")]
    MetaTooLarge { meta_bytes: u64, max: u64 },
    /// `body_len` is over the receiver's per-frame limit.
    #[error("frame body of {body_bytes} bytes (request {request_id}) is over the limit of {max}")]
    FrameBodyTooLarge {
        request_id: u64,
        body_bytes: u64,
        max: u64,
    },
    /// The header checksum does not match the header and metadata bytes.
    #[error("header checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    HeaderChecksumMismatch { stored: u32, computed: u32 },
    /// The decoder already failed fatally; the connection must be closed.
    #[error("the decoder failed earlier; the connection must be closed")]
    DecoderFailed,

    // ---- one frame's body or op: the request fails, the connection goes on ----
    /// The body checksum does not match the body. The whole (valid) header is kept so the
    /// receiver can fail exactly that request.
    #[error("body checksum mismatch on request {}: stored {:#010x}, computed {computed:#010x}",
        header.request_id(), header.body_crc())]
    BodyChecksumMismatch { header: FrameHeader, computed: u32 },
    /// An op code this code does not know.
    #[error("unknown op {op:#06x}")]
    UnknownOp { op: u16 },

    // ---- one op's metadata (or a list body): the request fails ----
    /// The bytes end inside a field.
    #[error("metadata truncated in field {field}")]
    Truncated { field: &'static str },
    /// Bytes are left over after the last field.
    #[error("{extra} unexpected bytes after the metadata")]
    TrailingBytes { extra: usize },
    /// A length-prefixed field is longer than its bound.
    #[error("field {field} is {bytes} bytes, over the limit of {max}")]
    FieldTooLong {
        field: &'static str,
        bytes: usize,
        max: usize,
    },
    /// A field holds a value outside its domain (a bool that is 7, text that is not UTF-8).
    #[error("field {field} is invalid: {reason}")]
    InvalidField {
        field: &'static str,
        reason: &'static str,
    },

    // ---- the request streams of one connection (see `InflightRequests`) ----
    /// A request id that is still in flight was used again. Fatal: replies would be ambiguous.
    #[error("request id {request_id} is already in flight")]
    DuplicateRequestId { request_id: u64 },
    /// A DATA frame (or an abort) for a request whose body is not streaming. Fatal.
    #[error("DATA frame for request {request_id}, which has no body streaming")]
    UnexpectedData { request_id: u64 },
    /// A DATA frame whose op differs from its request's. Fatal.
    #[error(
        "DATA frame for request {request_id} has op {found:#06x}, the request has {expected:#06x}"
    )]
    OpMismatch {
        request_id: u64,
        expected: u16,
        found: u16,
    },
    /// More requests in flight than the connection allows.
    #[error("request {request_id} refused: {inflight_max} requests already in flight")]
    Busy { request_id: u64, inflight_max: u64 },
    /// Too many refused streamed requests whose bodies are still arriving. Fatal.
    #[error("too many refused streams still arriving (limit {max})")]
    TooManyStreams { max: u64 },
    /// A request declares a body over the receiver's request body limit.
    #[error("request {request_id} declares a body of {declared} bytes, over the limit of {max}")]
    RequestBodyTooLarge {
        request_id: u64,
        declared: u64,
        max: u64,
    },
    /// The body frames of a request add up to more or less than its metadata declared.
    #[error("request {request_id} declared a body of {declared} bytes but sent {received}")]
    BodyLengthMismatch {
        request_id: u64,
        declared: u64,
        received: u64,
    },

    // ---- the HELLO handshake: fatal ----
    /// The first frame was not a valid HELLO with the cluster token.
    #[error("unauthenticated: {reason}")]
    Unauthenticated { reason: &'static str },
}

impl ProtoError {
    /// The wire code for this error: the one mapping table.
    pub fn code(&self) -> ErrorCode {
        use ProtoError::*;
        match self {
            BadMagic { .. }
            | UnknownKind { .. }
            | ReservedFlags { .. }
            | MalformedHeader { .. }
            | HeaderChecksumMismatch { .. }
            | DecoderFailed
            | DuplicateRequestId { .. }
            | UnexpectedData { .. }
            | OpMismatch { .. } => ErrorCode::BAD_FRAME,
            UnsupportedVersion { .. } => ErrorCode::UNSUPPORTED_VERSION,
            MetaTooLarge { .. }
            | FrameBodyTooLarge { .. }
            | FieldTooLong { .. }
            | RequestBodyTooLarge { .. } => ErrorCode::TOO_LARGE,
            BodyChecksumMismatch { .. } => ErrorCode::CHECKSUM_MISMATCH,
            UnknownOp { .. } => ErrorCode::UNKNOWN_OP,
            Truncated { .. }
            | TrailingBytes { .. }
            | InvalidField { .. }
            | BodyLengthMismatch { .. } => ErrorCode::BAD_REQUEST,
            Busy { .. } | TooManyStreams { .. } => ErrorCode::BUSY,
            Unauthenticated { .. } => ErrorCode::UNAUTHENTICATED,
        }
    }

    /// Whether the receiver must close the connection (after one ERROR frame with request
    /// id 0). A non-fatal error fails only its request; see the module docs.
    pub fn is_fatal(&self) -> bool {
        use ProtoError::*;
        match self {
            BadMagic { .. }
            | UnsupportedVersion { .. }
            | UnknownKind { .. }
            | ReservedFlags { .. }
            | MalformedHeader { .. }
            | MetaTooLarge { .. }
            | FrameBodyTooLarge { .. }
            | HeaderChecksumMismatch { .. }
            | DecoderFailed
            | DuplicateRequestId { .. }
            | UnexpectedData { .. }
            | OpMismatch { .. }
            | TooManyStreams { .. }
            | Unauthenticated { .. } => true,
            BodyChecksumMismatch { .. }
            | UnknownOp { .. }
            | Truncated { .. }
            | TrailingBytes { .. }
            | FieldTooLong { .. }
            | InvalidField { .. }
            | Busy { .. }
            | RequestBodyTooLarge { .. }
            | BodyLengthMismatch { .. } => false,
        }
    }
}

/// The metadata of an ERROR frame: a code and a human-readable message.
///
/// Layout: `code u16`, `message_len u16`, `message` (UTF-8, at most
/// [`ERROR_MESSAGE_BYTES_MAX`] bytes). Code 0 is invalid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorFrame {
    /// What went wrong, for programs.
    pub code: ErrorCode,
    /// What went wrong, for people. Never contains secrets.
    pub message: String,
}

impl ErrorFrame {
    /// An error frame, its message cut to [`ERROR_MESSAGE_BYTES_MAX`] bytes at a character
    /// boundary.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let mut message = message.into();
        if message.len() > ERROR_MESSAGE_BYTES_MAX {
            let mut cut = ERROR_MESSAGE_BYTES_MAX;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        Self { code, message }
    }

    /// The error frame that reports `error` to the peer.
    pub fn from_error(error: &ProtoError) -> Self {
        Self::new(error.code(), error.to_string())
    }

    /// Appends the encoded metadata to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtoError> {
        if self.code.0 == 0 {
            return Err(ProtoError::InvalidField {
                field: "code",
                reason: "error code 0 is not assigned",
            });
        }
        let mut writer = Writer::new(out);
        writer.u16(self.code.0);
        writer.str16("message", &self.message, ERROR_MESSAGE_BYTES_MAX)
    }

    /// Decodes ERROR-frame metadata.
    pub fn decode(bytes: &[u8]) -> Result<Self, ProtoError> {
        let mut reader = Reader::new(bytes);
        let code = reader.u16("code")?;
        if code == 0 {
            return Err(ProtoError::InvalidField {
                field: "code",
                reason: "error code 0 is not assigned",
            });
        }
        let message = reader.str16("message", ERROR_MESSAGE_BYTES_MAX)?.to_owned();
        reader.finish()?;
        Ok(Self {
            code: ErrorCode(code),
            message,
        })
    }
}

impl fmt::Display for ErrorFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_nonzero_and_named() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert_ne!(code.as_u16(), 0);
            assert!(seen.insert(code.as_u16()), "{code:?} assigned twice");
            assert_ne!(code.name(), "UNKNOWN");
        }
        assert_eq!(ErrorCode::from_u16(999).name(), "UNKNOWN");
        assert!(ErrorCode::BUSY.is_retryable());
        assert!(!ErrorCode::NOT_FOUND.is_retryable());
    }

    #[test]
    fn error_frame_round_trips_and_cuts_long_messages() {
        let frame = ErrorFrame::new(ErrorCode::NOT_FOUND, "no shard of stripe ab12");
        let mut bytes = Vec::new();
        frame.encode(&mut bytes).unwrap();
        assert_eq!(ErrorFrame::decode(&bytes).unwrap(), frame);

        // '€' is three bytes: 1024 falls inside one, so the cut lands at 1023.
        let long = ErrorFrame::new(ErrorCode::INTERNAL, "€".repeat(500));
        assert!(long.message.len() <= ERROR_MESSAGE_BYTES_MAX);
        assert_eq!(long.message.len(), 1023);
        let mut bytes = Vec::new();
        long.encode(&mut bytes).unwrap();
        assert_eq!(ErrorFrame::decode(&bytes).unwrap(), long);

        let unknown = ErrorFrame::new(ErrorCode::from_u16(4000), "from the future");
        let mut bytes = Vec::new();
        unknown.encode(&mut bytes).unwrap();
        assert_eq!(ErrorFrame::decode(&bytes).unwrap().code.as_u16(), 4000);
    }

    #[test]
    fn error_frame_rejects_code_zero_bad_utf8_and_trailing_bytes() {
        assert!(matches!(
            ErrorFrame::decode(&[0, 0, 0, 0]),
            Err(ProtoError::InvalidField { field: "code", .. })
        ));
        assert!(matches!(
            ErrorFrame::decode(&[1, 0, 1, 0, 0xff]),
            Err(ProtoError::InvalidField {
                field: "message",
                ..
            })
        ));
        assert_eq!(
            ErrorFrame::decode(&[1, 0, 0, 0, 9]),
            Err(ProtoError::TrailingBytes { extra: 1 })
        );
        assert_eq!(
            ErrorFrame::decode(&[1, 0, 5, 0, b'a']),
            Err(ProtoError::Truncated { field: "message" })
        );
        let mut out = Vec::new();
        assert!(
            ErrorFrame::new(ErrorCode::from_u16(0), "x")
                .encode(&mut out)
                .is_err()
        );
    }
}
