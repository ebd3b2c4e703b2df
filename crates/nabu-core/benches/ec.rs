//! Erasure coding, 4+2 on 4 MiB stripes (four 1 MiB data shards): encode, and decode with two
//! data shards lost, in bytes of stripe data per second.
//!
//! The baseline is ISA-L called directly through its C API with precomputed tables (what a C
//! program would do), measured in the same run as our `isal` codec (through the trait) and our
//! `portable` codec. Run: `cargo bench --locked -p nabu-core --bench ec`.

use std::ffi::c_int;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use libloading::Library;
use nabu_core::AlignedBuf;
use nabu_core::ec::{self, ErasureCodec, ShardSlot};
use rand::{Rng, SeedableRng, rngs::StdRng};

const K: usize = 4;
const M: usize = 2;
const SHARD_BYTES: usize = 1 << 20;
const STRIPE_DATA_BYTES: u64 = (K * SHARD_BYTES) as u64;
/// Shards lost in the decode benchmarks: two data shards, the worst case for a read.
const LOST: [usize; 2] = [0, 1];

type Measurement = criterion::measurement::WallTime;
type GenMatrixFn = unsafe extern "C" fn(*mut u8, c_int, c_int);
type InitTablesFn = unsafe extern "C" fn(c_int, c_int, *mut u8, *mut u8);
type EncodeDataFn = unsafe extern "C" fn(c_int, c_int, c_int, *mut u8, *mut *mut u8, *mut *mut u8);
type InvertMatrixFn = unsafe extern "C" fn(*mut u8, *mut u8, c_int) -> c_int;

/// ISA-L's C API, used as a C program would: tables built once, then `ec_encode_data`.
struct RawIsal {
    encode_data: EncodeDataFn,
    encode_tables: Vec<u8>,
    decode_tables: Vec<u8>,
    _library: Library,
}

impl RawIsal {
    fn load() -> Option<Self> {
        // SAFETY: loading ISA-L runs only its CPU-dispatch initialisers.
        let library = unsafe { Library::new("libisal.so.2") }.ok()?;
        // SAFETY: the signatures are those of isa-l/erasure_code.h.
        let (gen_matrix, init_tables, encode_data, invert) = unsafe {
            (
                *library.get::<GenMatrixFn>(b"gf_gen_cauchy1_matrix").ok()?,
                *library.get::<InitTablesFn>(b"ec_init_tables").ok()?,
                *library.get::<EncodeDataFn>(b"ec_encode_data").ok()?,
                *library.get::<InvertMatrixFn>(b"gf_invert_matrix").ok()?,
            )
        };
        let mut matrix = vec![0u8; (K + M) * K];
        let mut encode_tables = vec![0u8; 32 * K * M];
        let mut decode_tables = vec![0u8; 32 * K * LOST.len()];
        let mut inverse = vec![0u8; K * K];
        // SAFETY: every buffer has the size the C API documents for these K, M.
        unsafe {
            gen_matrix(matrix.as_mut_ptr(), (K + M) as c_int, K as c_int);
            init_tables(
                K as c_int,
                M as c_int,
                matrix[K * K..].as_mut_ptr(),
                encode_tables.as_mut_ptr(),
            );
            // Survivors are rows 2..6; the lost data rows of the inverse rebuild shards 0 and 1.
            let mut square = matrix[2 * K..].to_vec();
            assert_eq!(
                invert(square.as_mut_ptr(), inverse.as_mut_ptr(), K as c_int),
                0
            );
            let rows = LOST.len() as c_int;
            init_tables(
                K as c_int,
                rows,
                inverse.as_mut_ptr(),
                decode_tables.as_mut_ptr(),
            );
        }
        Some(Self {
            encode_data,
            encode_tables,
            decode_tables,
            _library: library,
        })
    }

    fn run(&self, tables: &[u8], inputs: &[&[u8]], outputs: &mut [AlignedBuf]) {
        let mut inputs: Vec<*mut u8> = inputs.iter().map(|s| s.as_ptr().cast_mut()).collect();
        let mut outputs: Vec<*mut u8> = outputs.iter_mut().map(|s| s.as_mut_ptr()).collect();
        // SAFETY: all buffers are SHARD_BYTES long; tables match (K, outputs.len()).
        unsafe {
            (self.encode_data)(
                SHARD_BYTES as c_int,
                K as c_int,
                outputs.len() as c_int,
                tables.as_ptr().cast_mut(),
                inputs.as_mut_ptr(),
                outputs.as_mut_ptr(),
            );
        }
    }
}

/// A random 4+2 stripe, parity included.
fn stripe() -> Vec<AlignedBuf> {
    let mut rng = StdRng::seed_from_u64(42);
    let mut shards: Vec<AlignedBuf> = (0..K + M)
        .map(|_| AlignedBuf::zeroed(SHARD_BYTES))
        .collect();
    for shard in &mut shards[..K] {
        rng.fill(&mut shard[..]);
    }
    let (data, parity) = shards.split_at_mut(K);
    let data: Vec<&[u8]> = data.iter().map(|s| &s[..]).collect();
    let mut parity: Vec<&mut [u8]> = parity.iter_mut().map(|s| &mut s[..]).collect();
    ec::portable(K, M)
        .unwrap()
        .encode(&data, &mut parity)
        .unwrap();
    shards
}

fn outputs() -> Vec<AlignedBuf> {
    (0..M).map(|_| AlignedBuf::zeroed(SHARD_BYTES)).collect()
}

fn codecs() -> Vec<(&'static str, Arc<dyn ErasureCodec>)> {
    let mut codecs = Vec::new();
    match ec::isal(K, M) {
        Ok(codec) => codecs.push(("isal-trait", codec)),
        Err(error) => eprintln!("skipping the isal codec: {error}"),
    }
    codecs.push(("portable", ec::portable(K, M).unwrap()));
    codecs
}

fn encode(c: &mut Criterion) {
    let stripe = stripe();
    let data: Vec<&[u8]> = stripe[..K].iter().map(|s| &s[..]).collect();
    let mut parity = outputs();
    let mut group = group(c, "ec_4+2_encode");
    if let Some(raw) = RawIsal::load() {
        group.bench_function("isal-raw", |b| {
            b.iter(|| raw.run(&raw.encode_tables, black_box(&data), &mut parity))
        });
    } else {
        eprintln!("libisal.so.2 did not load: no ISA-L baseline");
    }
    for (name, codec) in codecs() {
        group.bench_function(format!("{name} ({})", codec.implementation()), |b| {
            b.iter(|| {
                let mut parity: Vec<&mut [u8]> = parity.iter_mut().map(|s| &mut s[..]).collect();
                codec.encode(black_box(&data), &mut parity).unwrap();
            })
        });
    }
    group.finish();
}

fn decode(c: &mut Criterion) {
    let stripe = stripe();
    let survivors: Vec<&[u8]> = stripe[LOST.len()..K + LOST.len()]
        .iter()
        .map(|s| &s[..])
        .collect();
    let mut rebuilt = outputs();
    let mut group = group(c, "ec_4+2_decode_2_data_lost");
    if let Some(raw) = RawIsal::load() {
        group.bench_function("isal-raw", |b| {
            b.iter(|| raw.run(&raw.decode_tables, black_box(&survivors), &mut rebuilt))
        });
        assert!(
            rebuilt[..] == stripe[..LOST.len()],
            "raw ISA-L decode is wrong"
        );
    }
    for (name, codec) in codecs() {
        group.bench_function(format!("{name} decode into buffers"), |b| {
            b.iter(|| decode_into(codec.as_ref(), &stripe, &mut rebuilt))
        });
        assert!(
            rebuilt[..] == stripe[..LOST.len()],
            "{name} decode is wrong"
        );
        let mut shards: Vec<Option<AlignedBuf>> = stripe.iter().cloned().map(Some).collect();
        group.bench_function(format!("{name} reconstruct_data (allocates)"), |b| {
            b.iter(|| {
                for index in LOST {
                    shards[index] = None;
                }
                codec.reconstruct_data(black_box(&mut shards)).unwrap();
            })
        });
    }
    group.finish();
}

/// Rebuilds the lost shards into `rebuilt` through [`ErasureCodec::decode`].
fn decode_into(codec: &dyn ErasureCodec, stripe: &[AlignedBuf], rebuilt: &mut [AlignedBuf]) {
    let [rebuilt_0, rebuilt_1] = rebuilt else {
        unreachable!("two lost shards")
    };
    let mut slots = [
        ShardSlot::Rebuild(rebuilt_0),
        ShardSlot::Rebuild(rebuilt_1),
        ShardSlot::Present(&stripe[2]),
        ShardSlot::Present(&stripe[3]),
        ShardSlot::Present(&stripe[4]),
        ShardSlot::Present(&stripe[5]),
    ];
    codec.decode(black_box(&mut slots)).unwrap();
}

fn group<'c>(c: &'c mut Criterion, name: &str) -> BenchmarkGroup<'c, Measurement> {
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Bytes(STRIPE_DATA_BYTES));
    group
}

fn config() -> Criterion {
    Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(20)
}

criterion_group! { name = benches; config = config(); targets = encode, decode }
criterion_main!(benches);
