//! Erasure coding: K data shards plus M parity shards per stripe, any K of which rebuild it.
//!
//! **The codec id names the code, not the implementation.** Every stripe's manifest records a
//! [`CodecId`]. It pins the generator matrix and the field (today one code: Reed–Solomon over
//! GF(2^8), polynomial 0x11d, with ISA-L's `gf_gen_cauchy1_matrix` Cauchy matrix), so any
//! implementation of that code can read what any other wrote, and a faster one can arrive later
//! without rewriting data. A new *code* gets a new id; a new *implementation* does not.
//!
//! **Two implementations of one code.** [`isal()`] calls Intel's ISA-L (the seed's choice, see
//! DESIGN.md §3), loaded at run time with `libloading`, so the binary builds and runs on a
//! machine without `libisal.so.2`. [`portable()`] is the same matrix arithmetic in pure Rust (AVX2
//! split-nibble tables where the CPU has them, scalar otherwise), byte-for-byte identical: it is
//! what keeps old data readable wherever ISA-L is missing. The tests check the two against each
//! other and against parity bytes hard-coded from ISA-L, so the code can never silently change.
//! [`codec()`] hands out the one that measured fastest on this kind of CPU.
//!
//! Shard lengths are arbitrary (no alignment or multiple-of-32 requirement); all shards of one
//! stripe have the same length. Bad input is reported as an [`EcError`], never a panic.

mod codec;
mod gf;
mod isal;
mod kernel;

#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;

use crate::aligned::AlignedBuf;

use self::codec::{IsalBackend, MatrixCodec, PortableBackend};
use self::kernel::Kernel;

/// Identifies an erasure *code* (generator matrix and field), recorded with every stripe.
///
/// The geometry (K and M) is recorded beside it; together they determine every parity byte.
/// Two implementations that share an id produce identical shards and decode each other's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CodecId(pub u8);

impl CodecId {
    /// Reed–Solomon over GF(2^8) (polynomial 0x11d) with the systematic Cauchy generator of
    /// ISA-L's `gf_gen_cauchy1_matrix`: identity for the first K rows, then row `i`
    /// (K ≤ i < K+M), column `j` is `1 / (i XOR j)`.
    pub const RS_CAUCHY_GF256: CodecId = CodecId(1);
}

impl fmt::Display for CodecId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            CodecId::RS_CAUCHY_GF256 => f.write_str("rs-cauchy-gf256"),
            CodecId(other) => write!(f, "codec-{other}"),
        }
    }
}

/// The most shards (K + M) one stripe may have: Cauchy rows need distinct field elements, and
/// a shard's index then fits in one byte.
pub const STRIPE_SHARDS_MAX: usize = 255;

/// Which group of shards an [`EcError::WrongShardCount`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardRole {
    /// The K data shards given to `encode`.
    Data,
    /// The M parity shards given to `encode`.
    Parity,
    /// All K + M shards of a stripe, given to `decode` or `reconstruct`.
    Stripe,
}

impl fmt::Display for ShardRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ShardRole::Data => "data",
            ShardRole::Parity => "parity",
            ShardRole::Stripe => "stripe",
        })
    }
}

/// Why an erasure-coding call failed. Every variant is caused by the caller's input or the
/// machine, never by the data's contents.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum EcError {
    /// K must be at least 1 and K + M at most [`STRIPE_SHARDS_MAX`].
    #[error("invalid geometry {data_shards}+{parity_shards}: need K >= 1 and K + M <= 255")]
    InvalidGeometry {
        data_shards: usize,
        parity_shards: usize,
    },
    /// A call was given the wrong number of shards.
    #[error("expected {expected} {role} shards, got {found}")]
    WrongShardCount {
        role: ShardRole,
        expected: usize,
        found: usize,
    },
    /// Shards of one stripe differ in length. `index` is the shard's position in the stripe
    /// (parity shard `p` is index K + p).
    #[error("shard {index} is {found} bytes long, expected {expected}")]
    ShardLengthMismatch {
        index: usize,
        expected: usize,
        found: usize,
    },
    /// Fewer than K shards survive: the stripe cannot be rebuilt.
    #[error("only {present} shards present, {needed} needed to rebuild")]
    TooFewShards { present: usize, needed: usize },
    /// No implementation is known for the codec id read from a manifest.
    #[error("unknown erasure codec {0}")]
    UnknownCodec(CodecId),
    /// The named implementation cannot run here (for ISA-L: the library did not load).
    #[error("erasure codec implementation {0} is not available on this machine")]
    Unavailable(&'static str),
    /// K surviving rows of the generator formed a singular matrix. Impossible for a Cauchy
    /// code (every square submatrix is invertible); reported rather than panicking.
    #[error("decode matrix is singular")]
    SingularDecodeMatrix,
}

/// One shard's role in a [`ErasureCodec::decode`] call.
#[derive(Debug)]
pub enum ShardSlot<'a> {
    /// A surviving shard's bytes.
    Present(&'a [u8]),
    /// A lost shard to rebuild into this buffer (overwritten; same length as the others).
    Rebuild(&'a mut [u8]),
    /// A lost shard the caller does not need.
    Unavailable,
}

/// An erasure code implementation. Stripes have K data shards (index 0..K) followed by M
/// parity shards (index K..K+M), all of one length.
pub trait ErasureCodec: Send + Sync + fmt::Debug {
    /// The code this implements; recorded with every stripe it encodes.
    fn id(&self) -> CodecId;

    /// Which implementation this is, for logs and benchmarks: `"isa-l"`, `"portable-avx2"`,
    /// `"portable-scalar"`.
    fn implementation(&self) -> &'static str;

    /// K, the number of data shards per stripe.
    fn data_shards(&self) -> usize;

    /// M, the number of parity shards per stripe.
    fn parity_shards(&self) -> usize;

    /// K + M.
    fn stripe_shards(&self) -> usize {
        self.data_shards() + self.parity_shards()
    }

    /// Computes the M parity shards of the K `data` shards, overwriting `parity`. All slices
    /// must have the same length.
    fn encode(&self, data: &[&[u8]], parity: &mut [&mut [u8]]) -> Result<(), EcError>;

    /// Rebuilds every [`ShardSlot::Rebuild`] slot from the first K [`ShardSlot::Present`] ones,
    /// into the caller's buffers (no allocation on the data path). `shards` has K + M entries.
    fn decode(&self, shards: &mut [ShardSlot<'_>]) -> Result<(), EcError>;

    /// Rebuilds every missing (`None`) entry of a K + M stripe into a new [`AlignedBuf`] of
    /// the shards' common length.
    fn reconstruct(&self, shards: &mut [Option<AlignedBuf>]) -> Result<(), EcError> {
        reconstruct_prefix(self, shards, self.stripe_shards())
    }

    /// Like [`ErasureCodec::reconstruct`], but rebuilds only missing data shards (index < K);
    /// missing parity stays `None`. This is the degraded-read path.
    fn reconstruct_data(&self, shards: &mut [Option<AlignedBuf>]) -> Result<(), EcError> {
        reconstruct_prefix(self, shards, self.data_shards())
    }
}

/// Rebuilds the missing entries among `shards[..wanted_end]` through [`ErasureCodec::decode`].
fn reconstruct_prefix<C: ErasureCodec + ?Sized>(
    codec: &C,
    shards: &mut [Option<AlignedBuf>],
    wanted_end: usize,
) -> Result<(), EcError> {
    let shard_bytes = shards.iter().flatten().map(|shard| shard.len()).next();
    let mut rebuilt: Vec<(usize, AlignedBuf)> = shards
        .iter()
        .enumerate()
        .take(wanted_end)
        .filter(|(_, shard)| shard.is_none())
        .map(|(index, _)| (index, AlignedBuf::zeroed(shard_bytes.unwrap_or(0))))
        .collect();
    if rebuilt.is_empty() {
        // Still validate, so a malformed stripe is reported even when nothing is missing.
        let mut slots = slots_for(shards, &mut []);
        return codec.decode(&mut slots);
    }
    let mut slots = slots_for(shards, &mut rebuilt);
    codec.decode(&mut slots)?;
    for (index, buf) in rebuilt {
        shards[index] = Some(buf);
    }
    Ok(())
}

/// Decode slots over a stripe: present shards as inputs, `rebuilt` buffers as outputs.
fn slots_for<'a>(
    shards: &'a [Option<AlignedBuf>],
    rebuilt: &'a mut [(usize, AlignedBuf)],
) -> Vec<ShardSlot<'a>> {
    let mut slots: Vec<ShardSlot<'a>> = shards
        .iter()
        .map(|shard| match shard {
            Some(buf) => ShardSlot::Present(&buf[..]),
            None => ShardSlot::Unavailable,
        })
        .collect();
    for (index, buf) in rebuilt.iter_mut() {
        slots[*index] = ShardSlot::Rebuild(&mut buf[..]);
    }
    slots
}

/// The fastest available implementation of [`CodecId::RS_CAUCHY_GF256`] for K + M.
///
/// Chosen by CPU features, from what `benches/ec.rs` measured (4+2, 1 MiB shards, AMD EPYC
/// with AVX2 and no AVX-512): [`portable()`]'s AVX2 kernel encoded at ~8 GiB/s where ISA-L 2.30
/// (whose dispatcher runs its AVX2 kernel there) managed ~4.5 GiB/s. So: the portable AVX2
/// kernel on AVX2 CPUs without AVX-512; ISA-L where it has wider kernels than ours (AVX-512,
/// not measured here) or ours would be scalar (no AVX2); portable when ISA-L does not load.
/// All produce the same bytes, so the choice never affects what is stored. Callers that
/// measured otherwise can pin one with [`isal()`] or [`portable()`].
pub fn codec(data_shards: usize, parity_shards: usize) -> Result<Arc<dyn ErasureCodec>, EcError> {
    if portable_is_fastest() {
        return portable(data_shards, parity_shards);
    }
    match isal(data_shards, parity_shards) {
        Err(EcError::Unavailable(_)) => portable(data_shards, parity_shards),
        other => other,
    }
}

/// Whether this CPU runs our AVX2 kernel and lacks the AVX-512 that ISA-L has kernels for.
fn portable_is_fastest() -> bool {
    #[cfg(target_arch = "x86_64")]
    let has_avx512 = std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw");
    #[cfg(not(target_arch = "x86_64"))]
    let has_avx512 = false;
    Kernel::detect() == Kernel::Avx2 && !has_avx512
}

/// The fastest available implementation of the code a manifest names.
pub fn codec_for_id(
    id: CodecId,
    data_shards: usize,
    parity_shards: usize,
) -> Result<Arc<dyn ErasureCodec>, EcError> {
    match id {
        CodecId::RS_CAUCHY_GF256 => codec(data_shards, parity_shards),
        other => Err(EcError::UnknownCodec(other)),
    }
}

/// The pure-Rust implementation (AVX2 if the CPU has it, scalar otherwise). Always available.
pub fn portable(
    data_shards: usize,
    parity_shards: usize,
) -> Result<Arc<dyn ErasureCodec>, EcError> {
    portable_with_kernel(data_shards, parity_shards, Kernel::detect())
}

/// The pure-Rust implementation with a chosen inner loop (tests use it to reach the scalar one).
fn portable_with_kernel(
    data_shards: usize,
    parity_shards: usize,
    kernel: Kernel,
) -> Result<Arc<dyn ErasureCodec>, EcError> {
    let backend = PortableBackend::new(kernel);
    Ok(Arc::new(MatrixCodec::new(
        backend,
        data_shards,
        parity_shards,
    )?))
}

/// The ISA-L implementation, or [`EcError::Unavailable`] if `libisal.so.2` (or `libisal.so`)
/// does not load on this machine.
pub fn isal(data_shards: usize, parity_shards: usize) -> Result<Arc<dyn ErasureCodec>, EcError> {
    check_geometry(data_shards, parity_shards)?;
    let library = isal::library().ok_or(EcError::Unavailable("isa-l"))?;
    let backend = IsalBackend::new(library);
    Ok(Arc::new(MatrixCodec::new(
        backend,
        data_shards,
        parity_shards,
    )?))
}

/// Checks K >= 1 and K + M <= [`STRIPE_SHARDS_MAX`].
fn check_geometry(data_shards: usize, parity_shards: usize) -> Result<(), EcError> {
    let valid = data_shards >= 1
        && data_shards
            .checked_add(parity_shards)
            .is_some_and(|total| total <= STRIPE_SHARDS_MAX);
    if valid {
        Ok(())
    } else {
        Err(EcError::InvalidGeometry {
            data_shards,
            parity_shards,
        })
    }
}
