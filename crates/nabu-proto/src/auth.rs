//! The cluster token and the HELLO handshake.
//!
//! `nabu up` generates one random token per cluster (32 bytes) and hands it to every node and
//! client through a file or the environment, never the command line. A connection's first
//! frame must be a HELLO carrying it; [`authenticate`] checks that frame and compares tokens
//! in constant time, so the time a refusal takes says nothing about how many bytes matched.
//! The token is not encryption: the planes are meant for trusted networks, or for TLS or a
//! service mesh in front of them.

use std::fmt;

use crate::error::ProtoError;
use crate::frame::Frame;
use crate::header::FrameKind;
use crate::ops::{HelloRequest, Meta, Op, Plane};

/// The shortest token accepted: 128 bits.
pub const CLUSTER_TOKEN_BYTES_MIN: usize = 16;
/// The longest token accepted.
pub const CLUSTER_TOKEN_BYTES_MAX: usize = 256;

/// A cluster token (16..=256 bytes). Its `Debug` form never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterToken(Vec<u8>);

impl ClusterToken {
    /// A token from its bytes; refuses lengths outside 16..=256.
    pub fn new(bytes: &[u8]) -> Result<Self, ProtoError> {
        if bytes.len() < CLUSTER_TOKEN_BYTES_MIN {
            return Err(ProtoError::InvalidField {
                field: "token",
                reason: "a cluster token has at least 16 bytes",
            });
        }
        if bytes.len() > CLUSTER_TOKEN_BYTES_MAX {
            return Err(ProtoError::FieldTooLong {
                field: "token",
                bytes: bytes.len(),
                max: CLUSTER_TOKEN_BYTES_MAX,
            });
        }
        Ok(Self(bytes.to_vec()))
    }

    /// A token from its text form (hex, as `nabu up` writes it; surrounding whitespace is
    /// ignored).
    pub fn from_hex(text: &str) -> Result<Self, ProtoError> {
        let text = text.trim();
        let invalid = ProtoError::InvalidField {
            field: "token",
            reason: "a cluster token's text form is an even number of hex digits",
        };
        if !text.len().is_multiple_of(2) || !text.is_ascii() {
            return Err(invalid);
        }
        let bytes = (0..text.len())
            .step_by(2)
            .map(|at| u8::from_str_radix(&text[at..at + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| invalid)?;
        Self::new(&bytes)
    }

    /// The text form: lowercase hex.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    /// The raw bytes (for encoding a HELLO).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Whether `presented` is this token, in time that depends only on the lengths.
    pub fn matches(&self, presented: &ClusterToken) -> bool {
        constant_time_eq(&self.0, &presented.0)
    }
}

impl fmt::Debug for ClusterToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterToken(<{} bytes, redacted>)", self.0.len())
    }
}

/// Compares two byte strings without an early exit on the first difference. The lengths are
/// compared first; a token's length is not secret (`nabu up` always makes 32 bytes).
pub fn constant_time_eq(left: &[u8], right: &[u8]) -> bool {
    if left.len() != right.len() {
        return false;
    }
    let difference = left
        .iter()
        .zip(right)
        .fold(0u8, |difference, (a, b)| difference | (a ^ b));
    // `black_box` keeps the optimiser from turning the fold back into an early-exit compare.
    std::hint::black_box(difference) == 0
}

/// Checks a connection's first frame: it must be a single-frame HELLO request, for `plane`,
/// carrying `token`. Returns the HELLO for logging (client name, features).
///
/// Every refusal is fatal: the server replies ERROR UNAUTHENTICATED with request id 0 and
/// closes. The reasons are deliberately coarse: a refusal says a token was wrong, not how.
pub fn authenticate(
    frame: &Frame,
    token: &ClusterToken,
    plane: Plane,
) -> Result<HelloRequest, ProtoError> {
    let refuse = |reason| Err(ProtoError::Unauthenticated { reason });
    let header = frame.header();
    if header.kind() != FrameKind::Request || header.op_code() != Op::Hello.code() {
        return refuse("the first frame on a connection must be a HELLO request");
    }
    if header.more() || header.body_len() != 0 {
        return refuse("a HELLO has no body");
    }
    let Ok(hello) = HelloRequest::decode(frame.meta()) else {
        return refuse("the HELLO metadata is malformed");
    };
    if !token.matches(&hello.token) {
        return refuse("wrong cluster token");
    }
    if hello.plane != plane {
        return refuse("the HELLO names a different plane than this listener serves");
    }
    Ok(hello)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_text_form_round_trips_and_debug_is_redacted() {
        let token = ClusterToken::new(&[0xab; 32]).unwrap();
        assert_eq!(ClusterToken::from_hex(&token.to_hex()).unwrap(), token);
        assert_eq!(
            ClusterToken::from_hex(&format!(" {}\n", token.to_hex())).unwrap(),
            token
        );
        assert!(!format!("{token:?}").contains("ab"));
        assert!(ClusterToken::from_hex("abc").is_err());
        assert!(ClusterToken::from_hex(&"zz".repeat(16)).is_err());
        assert!(ClusterToken::from_hex(&"é".repeat(16)).is_err());
        assert!(ClusterToken::new(&[1; 15]).is_err());
        assert!(ClusterToken::new(&[1; 257]).is_err());
    }

    #[test]
    fn constant_time_eq_compares_whole_strings() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"Secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secrets"));
    }
}
