//! Content ids: BLAKE3-256 of the bytes they name.
//!
//! A [`BlobId`] names a whole blob, a [`StripeId`] one stripe of it. Both are plain 32-byte
//! BLAKE3 digests; they are separate types so a stripe id can never be passed where a blob id
//! is meant. The text form is 64 lowercase hex characters, the same as `b3sum` prints.

use std::fmt;
use std::str::FromStr;

/// Why a text id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdParseError {
    /// The text is not 64 characters long.
    #[error("an id is 64 hex characters, got {0}")]
    WrongLength(usize),
    /// A character is not a hex digit.
    #[error("an id is hex, found {0:?} at position {1}")]
    NotHex(char, usize),
}

macro_rules! content_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; 32]);

        impl $name {
            /// The id of `bytes`: their BLAKE3-256 digest.
            pub fn of(bytes: &[u8]) -> Self {
                Self(*blake3::hash(bytes).as_bytes())
            }

            /// An id from its raw digest bytes (as stored in manifests and on the wire).
            pub const fn from_bytes(bytes: [u8; 32]) -> Self {
                Self(bytes)
            }

            /// The raw digest bytes.
            pub const fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// The first 8 bytes as a little-endian integer: the id's position on the ring.
            /// The digest is uniformly random, so no further hashing is needed.
            pub fn ring_point(&self) -> u64 {
                u64::from_le_bytes(self.0[..8].try_into().expect("8 bytes"))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                for byte in self.0 {
                    write!(f, "{byte:02x}")?;
                }
                Ok(())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({self})", stringify!($name))
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;
            fn from_str(text: &str) -> Result<Self, IdParseError> {
                parse_hex_32(text).map(Self)
            }
        }
    };
}

content_id!(
    /// The id of a blob: BLAKE3-256 of all its bytes.
    BlobId
);
content_id!(
    /// The id of a stripe: BLAKE3-256 of the stripe's bytes, so identical stripes (in one
    /// blob or across blobs) share one id and are stored once.
    StripeId
);

fn parse_hex_32(text: &str) -> Result<[u8; 32], IdParseError> {
    if text.len() != 64 {
        return Err(IdParseError::WrongLength(text.chars().count()));
    }
    let mut out = [0u8; 32];
    for (position, c) in text.chars().enumerate() {
        let nibble = c.to_digit(16).ok_or(IdParseError::NotHex(c, position))? as u8;
        out[position / 2] |= nibble << if position % 2 == 0 { 4 } else { 0 };
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_matches_b3sum_and_round_trips() {
        // `printf abc | b3sum`
        let id = BlobId::of(b"abc");
        let text = "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85";
        assert_eq!(id.to_string(), text);
        assert_eq!(text.parse::<BlobId>().unwrap(), id);
        assert_eq!(text.to_uppercase().parse::<BlobId>().unwrap(), id);
    }

    #[test]
    fn bad_text_gets_a_clear_error() {
        assert_eq!("abc".parse::<StripeId>(), Err(IdParseError::WrongLength(3)));
        let bad = format!("{}g", "0".repeat(63));
        assert_eq!(bad.parse::<StripeId>(), Err(IdParseError::NotHex('g', 63)));
        let multibyte = format!("{}é", "0".repeat(62));
        assert!(multibyte.parse::<StripeId>().is_err());
    }
}
