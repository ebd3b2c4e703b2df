//! Durability policies of namespaces: `ec:K+M`, `replicas:R` or `none`.
//!
//! The text forms are what people type in configs and on the command line, so parsing is
//! strict and every refusal says what was expected.

use std::fmt;
use std::str::FromStr;

/// The largest total shard count of a stripe (K+M or R): the erasure code works over GF(2^8)
/// and the ring must find that many distinct nodes, so the bound is a sanity limit, not a
/// promise that 255 nodes are practical.
pub const STRIPE_WIDTH_MAX: usize = 255;

/// How a namespace protects its data against node loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Durability {
    /// Reed–Solomon: each stripe becomes `data` data shards and `parity` parity shards, each on
    /// its own node; any `data` of them rebuild the stripe.
    ErasureCoded { data: u8, parity: u8 },
    /// Each stripe is copied whole to `copies` distinct nodes.
    Replicas { copies: u8 },
    /// One copy, no protection: a lost node loses its data (recomputable KV cache).
    None,
}

impl Durability {
    /// The default for weights and checkpoints: `ec:4+2` (1.5× raw space, survives any two
    /// node losses).
    pub const EC_4_2: Self = Self::ErasureCoded { data: 4, parity: 2 };

    /// How many distinct nodes one stripe occupies.
    pub fn width(&self) -> usize {
        match *self {
            Self::ErasureCoded { data, parity } => usize::from(data) + usize::from(parity),
            Self::Replicas { copies } => usize::from(copies),
            Self::None => 1,
        }
    }

    /// How many shards must survive to read a stripe.
    pub fn shards_needed(&self) -> usize {
        match *self {
            Self::ErasureCoded { data, .. } => usize::from(data),
            Self::Replicas { .. } | Self::None => 1,
        }
    }

    /// How many nodes may be lost without losing data.
    pub fn losses_tolerated(&self) -> usize {
        self.width() - self.shards_needed()
    }

    /// Raw bytes stored per user byte (ignoring padding of short stripes).
    pub fn space_overhead(&self) -> f64 {
        self.width() as f64 / self.shards_needed() as f64
    }
}

/// Why a policy text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid durability policy {text:?}: {reason} (expected `ec:K+M`, `replicas:R` or `none`)")]
pub struct PolicyParseError {
    text: String,
    reason: &'static str,
}

impl FromStr for Durability {
    type Err = PolicyParseError;

    fn from_str(text: &str) -> Result<Self, PolicyParseError> {
        let refuse = |reason| PolicyParseError {
            text: text.to_owned(),
            reason,
        };
        let count = |digits: &str| -> Result<u8, PolicyParseError> {
            let value: usize = digits.trim().parse().map_err(|_| refuse("not a number"))?;
            u8::try_from(value).map_err(|_| refuse("count too large"))
        };
        let policy = match text.trim().split_once(':') {
            None if text.trim() == "none" => Self::None,
            Some(("ec", shape)) => {
                let (data, parity) = shape.split_once('+').ok_or_else(|| refuse("missing `+`"))?;
                let (data, parity) = (count(data)?, count(parity)?);
                if data == 0 {
                    return Err(refuse("K must be at least 1"));
                }
                Self::ErasureCoded { data, parity }
            }
            Some(("replicas", copies)) => match count(copies)? {
                0 => return Err(refuse("R must be at least 1")),
                copies => Self::Replicas { copies },
            },
            _ => return Err(refuse("unknown kind")),
        };
        if policy.width() > STRIPE_WIDTH_MAX {
            return Err(refuse("more than 255 shards per stripe"));
        }
        Ok(policy)
    }
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ErasureCoded { data, parity } => write!(f, "ec:{data}+{parity}"),
            Self::Replicas { copies } => write!(f, "replicas:{copies}"),
            Self::None => f.write_str("none"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms_round_trip() {
        for text in [
            "ec:4+2",
            "ec:8+3",
            "ec:1+0",
            "replicas:3",
            "replicas:1",
            "none",
        ] {
            let policy: Durability = text.parse().unwrap();
            assert_eq!(policy.to_string(), text);
        }
        assert_eq!("ec:4+2".parse::<Durability>().unwrap(), Durability::EC_4_2);
    }

    #[test]
    fn shape_figures() {
        assert_eq!(Durability::EC_4_2.width(), 6);
        assert_eq!(Durability::EC_4_2.losses_tolerated(), 2);
        assert_eq!(Durability::EC_4_2.space_overhead(), 1.5);
        let replicas = Durability::Replicas { copies: 3 };
        assert_eq!((replicas.width(), replicas.losses_tolerated()), (3, 2));
        assert_eq!(Durability::None.losses_tolerated(), 0);
    }

    #[test]
    fn bad_policies_are_refused_with_the_reason() {
        for (text, reason) in [
            ("ec:0+2", "K must be at least 1"),
            ("ec:4-2", "missing `+`"),
            ("ec:x+2", "not a number"),
            ("ec:200+100", "more than 255 shards"),
            ("ec:4+999", "count too large"),
            ("replicas:0", "R must be at least 1"),
            ("mirror:2", "unknown kind"),
            ("", "unknown kind"),
        ] {
            let error = text.parse::<Durability>().unwrap_err().to_string();
            assert!(error.contains(reason), "{text:?}: {error}");
        }
    }
}
