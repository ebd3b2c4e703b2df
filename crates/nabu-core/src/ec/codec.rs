//! The matrix codec both implementations share: input validation, decode planning (which
//! survivors, which decode matrix) and the decode-table cache. A [`Backend`] supplies only the
//! field arithmetic and the bulk multiply, from ISA-L or from pure Rust.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use super::gf;
use super::isal::IsaLibrary;
use super::kernel::{self, Kernel};
use super::{CodecId, EcError, ErasureCodec, ShardRole, ShardSlot, check_geometry};

/// How many erasure patterns' decode tables a codec keeps. 4+2 has 6·5/2 + 6 + 1 patterns;
/// wide codes can have millions, so the cache starts over when full.
const DECODE_TABLES_CACHED_MAX: usize = 256;

/// Field arithmetic and bulk multiply-accumulate for [`MatrixCodec`].
pub(crate) trait Backend: Send + Sync + fmt::Debug + 'static {
    /// The implementation name reported by [`ErasureCodec::implementation`].
    fn implementation(&self) -> &'static str;
    /// The (K+M)×K Cauchy generator, row-major.
    fn cauchy_matrix(&self, data_shards: usize, parity_shards: usize) -> Vec<u8>;
    /// The inverse of the n×n `matrix`, `None` if singular.
    fn invert(&self, matrix: Vec<u8>, n: usize) -> Option<Vec<u8>>;
    /// A product in GF(2^8).
    fn mul(&self, a: u8, b: u8) -> u8;
    /// Multiply tables for a rows×k coefficient matrix, in ISA-L's `ec_init_tables` layout.
    fn init_tables(&self, k: usize, rows: usize, coefficients: &[u8]) -> Vec<u8>;
    /// `outputs[r] = Σ_j coefficient(r, j) · inputs[j]`; all slices have one length.
    fn dot_products(&self, tables: &[u8], inputs: &[&[u8]], outputs: &mut [&mut [u8]]);
}

/// Pure Rust: [`gf`] for the algebra, [`kernel`] for the bulk work.
#[derive(Debug)]
pub(crate) struct PortableBackend {
    kernel: Kernel,
}

impl PortableBackend {
    pub(crate) fn new(kernel: Kernel) -> Self {
        Self { kernel }
    }
}

impl Backend for PortableBackend {
    fn implementation(&self) -> &'static str {
        self.kernel.implementation()
    }
    fn cauchy_matrix(&self, data_shards: usize, parity_shards: usize) -> Vec<u8> {
        gf::cauchy_matrix(data_shards, parity_shards)
    }
    fn invert(&self, matrix: Vec<u8>, n: usize) -> Option<Vec<u8>> {
        gf::invert(matrix, n)
    }
    fn mul(&self, a: u8, b: u8) -> u8 {
        gf::mul(a, b)
    }
    fn init_tables(&self, _k: usize, _rows: usize, coefficients: &[u8]) -> Vec<u8> {
        gf::mul_tables(coefficients)
    }
    fn dot_products(&self, tables: &[u8], inputs: &[&[u8]], outputs: &mut [&mut [u8]]) {
        kernel::dot_products(self.kernel, tables, inputs, outputs);
    }
}

/// ISA-L for everything, matrices included, so the comparison tests check our algebra too.
#[derive(Debug)]
pub(crate) struct IsalBackend {
    library: &'static IsaLibrary,
}

impl IsalBackend {
    pub(crate) fn new(library: &'static IsaLibrary) -> Self {
        Self { library }
    }
}

impl Backend for IsalBackend {
    fn implementation(&self) -> &'static str {
        "isa-l"
    }
    fn cauchy_matrix(&self, data_shards: usize, parity_shards: usize) -> Vec<u8> {
        self.library.cauchy_matrix(data_shards, parity_shards)
    }
    fn invert(&self, matrix: Vec<u8>, n: usize) -> Option<Vec<u8>> {
        self.library.invert(matrix, n)
    }
    fn mul(&self, a: u8, b: u8) -> u8 {
        self.library.mul(a, b)
    }
    fn init_tables(&self, k: usize, rows: usize, coefficients: &[u8]) -> Vec<u8> {
        self.library.init_tables(k, rows, coefficients)
    }
    fn dot_products(&self, tables: &[u8], inputs: &[&[u8]], outputs: &mut [&mut [u8]]) {
        self.library.dot_products(tables, inputs, outputs);
    }
}

/// A set of shard indices (< 256) as a bitmap: the decode cache's key material.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
struct ShardSet([u64; 4]);

impl ShardSet {
    fn insert(&mut self, index: usize) {
        self.0[index / 64] |= 1 << (index % 64);
    }
}

/// Identifies a decode: which shards it reads and which it rebuilds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct DecodeKey {
    survivors: ShardSet,
    rebuilt: ShardSet,
}

/// What one decode call reads and writes, validated.
struct DecodePlan<'a> {
    /// The first K present shards, in index order.
    survivor_indices: Vec<usize>,
    survivors: Vec<&'a [u8]>,
    /// The shards to rebuild, in index order.
    rebuilt_indices: Vec<usize>,
    outputs: Vec<&'a mut [u8]>,
}

/// The Cauchy Reed–Solomon code over a [`Backend`].
pub(crate) struct MatrixCodec<B> {
    backend: B,
    data_shards: usize,
    parity_shards: usize,
    /// The (K+M)×K generator, row-major.
    generator: Vec<u8>,
    /// Multiply tables of the M parity rows, built once.
    encode_tables: Vec<u8>,
    decode_tables: Mutex<HashMap<DecodeKey, Arc<Vec<u8>>>>,
}

impl<B: fmt::Debug> fmt::Debug for MatrixCodec<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MatrixCodec")
            .field("backend", &self.backend)
            .field("data_shards", &self.data_shards)
            .field("parity_shards", &self.parity_shards)
            .finish_non_exhaustive()
    }
}

impl<B: Backend> MatrixCodec<B> {
    pub(crate) fn new(
        backend: B,
        data_shards: usize,
        parity_shards: usize,
    ) -> Result<Self, EcError> {
        check_geometry(data_shards, parity_shards)?;
        let generator = backend.cauchy_matrix(data_shards, parity_shards);
        let parity_rows = &generator[data_shards * data_shards..];
        let encode_tables = backend.init_tables(data_shards, parity_shards, parity_rows);
        Ok(Self {
            backend,
            data_shards,
            parity_shards,
            generator,
            encode_tables,
            decode_tables: Mutex::new(HashMap::new()),
        })
    }

    /// Checks `shards` and splits it into the first K survivors and the outputs.
    fn plan<'a>(&self, shards: &'a mut [ShardSlot<'_>]) -> Result<DecodePlan<'a>, EcError> {
        let expected = self.data_shards + self.parity_shards;
        if shards.len() != expected {
            let found = shards.len();
            return Err(EcError::WrongShardCount {
                role: ShardRole::Stripe,
                expected,
                found,
            });
        }
        check_lengths(
            shards
                .iter()
                .enumerate()
                .filter_map(|(index, slot)| match slot {
                    ShardSlot::Present(bytes) => Some((index, bytes.len())),
                    ShardSlot::Rebuild(bytes) => Some((index, bytes.len())),
                    ShardSlot::Unavailable => None,
                }),
        )?;
        let mut plan = DecodePlan {
            survivor_indices: Vec::with_capacity(self.data_shards),
            survivors: Vec::with_capacity(self.data_shards),
            rebuilt_indices: Vec::new(),
            outputs: Vec::new(),
        };
        let mut present = 0;
        for (index, slot) in shards.iter_mut().enumerate() {
            match slot {
                ShardSlot::Present(bytes) => {
                    present += 1;
                    if plan.survivors.len() < self.data_shards {
                        plan.survivor_indices.push(index);
                        plan.survivors.push(*bytes);
                    }
                }
                ShardSlot::Rebuild(bytes) => {
                    plan.rebuilt_indices.push(index);
                    plan.outputs.push(&mut **bytes);
                }
                ShardSlot::Unavailable => {}
            }
        }
        if !plan.outputs.is_empty() && present < self.data_shards {
            return Err(EcError::TooFewShards {
                present,
                needed: self.data_shards,
            });
        }
        Ok(plan)
    }

    /// The multiply tables that rebuild `rebuilt` from `survivors`, from the cache if there.
    fn decode_tables(
        &self,
        survivors: &[usize],
        rebuilt: &[usize],
    ) -> Result<Arc<Vec<u8>>, EcError> {
        let key = DecodeKey {
            survivors: shard_set(survivors),
            rebuilt: shard_set(rebuilt),
        };
        let lock = || {
            self.decode_tables
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
        };
        if let Some(tables) = lock().get(&key) {
            return Ok(Arc::clone(tables));
        }
        let matrix = self.decode_matrix(survivors, rebuilt)?;
        let tables = Arc::new(
            self.backend
                .init_tables(self.data_shards, rebuilt.len(), &matrix),
        );
        let mut cache = lock();
        if cache.len() >= DECODE_TABLES_CACHED_MAX {
            cache.clear();
        }
        cache.insert(key, Arc::clone(&tables));
        Ok(tables)
    }

    /// Row r of the result rebuilds shard `rebuilt[r]` from the `survivors`: the generator's
    /// row for that shard times the inverse of the survivors' K×K submatrix.
    fn decode_matrix(&self, survivors: &[usize], rebuilt: &[usize]) -> Result<Vec<u8>, EcError> {
        let k = self.data_shards;
        let square: Vec<u8> = survivors
            .iter()
            .flat_map(|&row| self.generator_row(row))
            .copied()
            .collect();
        let inverse = self
            .backend
            .invert(square, k)
            .ok_or(EcError::SingularDecodeMatrix)?;
        let mut matrix = Vec::with_capacity(rebuilt.len() * k);
        for &row in rebuilt {
            let generator_row = self.generator_row(row);
            matrix.extend((0..k).map(|col| {
                (0..k).fold(0, |sum, j| {
                    sum ^ self.backend.mul(generator_row[j], inverse[j * k + col])
                })
            }));
        }
        Ok(matrix)
    }

    fn generator_row(&self, row: usize) -> &[u8] {
        &self.generator[row * self.data_shards..][..self.data_shards]
    }
}

fn shard_set(indices: &[usize]) -> ShardSet {
    let mut set = ShardSet::default();
    for &index in indices {
        set.insert(index);
    }
    set
}

/// Checks that every `(index, length)` has the first one's length.
fn check_lengths(mut shards: impl Iterator<Item = (usize, usize)>) -> Result<(), EcError> {
    let Some((_, expected)) = shards.next() else {
        return Ok(());
    };
    match shards.find(|&(_, found)| found != expected) {
        Some((index, found)) => Err(EcError::ShardLengthMismatch {
            index,
            expected,
            found,
        }),
        None => Ok(()),
    }
}

impl<B: Backend> ErasureCodec for MatrixCodec<B> {
    fn id(&self) -> CodecId {
        CodecId::RS_CAUCHY_GF256
    }

    fn implementation(&self) -> &'static str {
        self.backend.implementation()
    }

    fn data_shards(&self) -> usize {
        self.data_shards
    }

    fn parity_shards(&self) -> usize {
        self.parity_shards
    }

    fn encode(&self, data: &[&[u8]], parity: &mut [&mut [u8]]) -> Result<(), EcError> {
        check_count(ShardRole::Data, self.data_shards, data.len())?;
        check_count(ShardRole::Parity, self.parity_shards, parity.len())?;
        let data_lengths = data.iter().map(|shard| shard.len());
        let parity_lengths = parity.iter().map(|shard| shard.len());
        check_lengths(data_lengths.chain(parity_lengths).enumerate())?;
        self.backend.dot_products(&self.encode_tables, data, parity);
        Ok(())
    }

    fn decode(&self, shards: &mut [ShardSlot<'_>]) -> Result<(), EcError> {
        let mut plan = self.plan(shards)?;
        if plan.outputs.is_empty() {
            return Ok(());
        }
        let tables = self.decode_tables(&plan.survivor_indices, &plan.rebuilt_indices)?;
        self.backend
            .dot_products(&tables, &plan.survivors, &mut plan.outputs);
        Ok(())
    }
}

fn check_count(role: ShardRole, expected: usize, found: usize) -> Result<(), EcError> {
    if found == expected {
        Ok(())
    } else {
        Err(EcError::WrongShardCount {
            role,
            expected,
            found,
        })
    }
}
