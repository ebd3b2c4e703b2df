//! Lookup latency of the Robin Hood index at 10 M entries, against the machine's own limit.
//!
//! Run: `cargo bench --locked -p nabu-store --bench index`.
//!
//! - `dependent/*`: each lookup's key comes from the previous lookup's result, so the CPU
//!   cannot overlap DRAM misses: true latency. Hits chase a single random cycle through the
//!   table (every value is the next key). Misses cannot carry data forward, so they are
//!   serialised with `lfence` instead.
//! - `batched/*`: `get_batch` of 32 independent keys, per lookup.
//! - `dependent/dram_floor`: a pointer chase over a random cyclic permutation of cache lines
//!   in a buffer as big as the table, with the same page treatment: the cost of one DRAM miss.
//! - `hashbrown`: `hashbrown::HashMap<u128, u128>` with the same keys and a hasher that takes
//!   the key's low 64 bits (the keys are random already), chased the same way.
//!
//! After criterion, a summary measures each again in one pass and prints its ratio to the
//! floor, plus the insert pauses seen while filling the index from a small start through
//! eleven incremental growths. Under `cargo test` (no `--bench` argument) everything runs once
//! on 100 k entries.

use std::hash::{BuildHasher, Hasher};
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use nabu_store::index::{Region, RobinHoodIndex};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const BENCH_ENTRIES: usize = 10_000_000;
const TEST_ENTRIES: usize = 100_000;
/// Dependent lookups per criterion iteration.
const CHASE_STEPS: usize = 1024;
/// Keys per `get_batch` call.
const BATCH_KEYS: usize = 32;
/// `get_batch` calls per criterion iteration.
const BATCHES_PER_ITERATION: usize = 32;
/// Random absent keys (a power of two) for the miss benchmarks: 16 MiB, read in order.
const MISS_KEYS: usize = 1 << 20;
/// Initial capacity of the benchmark index, so that the fill exercises growth.
const INITIAL_CAPACITY: usize = 4096;
const CACHE_LINE_BYTES: usize = 64;
/// Interleaved rounds of the summary, and lookups per variant per round.
const SUMMARY_ROUNDS: usize = 11;
const SUMMARY_STEPS: usize = 1 << 17;

/// `BuildHasher` for already-random keys: the hash is the key's low 64 bits.
#[derive(Debug, Clone, Copy, Default)]
struct LowBits;

#[derive(Debug, Default)]
struct LowBitsHasher(u64);

impl BuildHasher for LowBits {
    type Hasher = LowBitsHasher;
    fn build_hasher(&self) -> LowBitsHasher {
        LowBitsHasher(0)
    }
}

impl Hasher for LowBitsHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }
    fn write_u128(&mut self, value: u128) {
        self.0 = value as u64;
    }
}

type LowBitsMap = hashbrown::HashMap<u128, u128, LowBits>;

struct Fixture {
    index: RobinHoodIndex,
    hash_map: LowBitsMap,
    /// Present keys in random order; the value of `keys[i]` is the next key of one cycle.
    keys: Vec<u128>,
    miss_keys: Vec<u128>,
    /// Cache lines holding the index of the next line of one random cycle.
    floor: Region,
    fill: FillReport,
}

struct FillReport {
    total: Duration,
    growths: usize,
    /// Per-insert wall time, sorted.
    insert_ns_sorted: Vec<u32>,
    /// The same timer around nothing, as often: how much of the tail is the machine's.
    idle_ns_sorted: Vec<u32>,
}

impl FillReport {
    fn describe(latencies_ns_sorted: &[u32]) -> String {
        let quantile = |q: f64| {
            let rank = ((latencies_ns_sorted.len() as f64 - 1.0) * q) as usize;
            f64::from(latencies_ns_sorted[rank]) / 1e3
        };
        let over = |us: u32| {
            latencies_ns_sorted.len() - latencies_ns_sorted.partition_point(|&ns| ns <= us * 1000)
        };
        format!(
            "p50 {:.2} us, p99.9 {:.1} us, p99.99 {:.1} us, max {:.0} us; {} over 10 us, {} over 100 us",
            quantile(0.5),
            quantile(0.999),
            quantile(0.9999),
            quantile(1.0),
            over(10),
            over(100),
        )
    }
}

/// A uniformly random cyclic permutation (Sattolo): following `next` from any element visits
/// every element once before returning.
fn random_cycle(len: usize, rng: &mut SmallRng) -> Vec<u32> {
    let mut next: Vec<u32> = (0..len as u32).collect();
    for high in (1..len).rev() {
        let low = rng.random_range(0..high);
        next.swap(high, low);
    }
    next
}

fn random_keys(count: usize, rng: &mut SmallRng) -> Vec<u128> {
    // Random 128-bit keys never collide in practice; key 0 is reserved, so force a bit.
    (0..count).map(|_| rng.random::<u128>() | 1).collect()
}

impl Fixture {
    fn build(entries: usize) -> Fixture {
        let mut rng = SmallRng::seed_from_u64(0x1de7);
        let keys = random_keys(entries, &mut rng);
        let miss_keys = random_keys(MISS_KEYS, &mut rng);
        let cycle = random_cycle(entries, &mut rng);

        let mut index = RobinHoodIndex::new(INITIAL_CAPACITY).expect("index");
        let values: Vec<u128> = cycle.iter().map(|&next| keys[next as usize]).collect();
        let mut insert_ns = Vec::with_capacity(entries);
        let mut growths = 0;
        let fill_start = Instant::now();
        for (&key, &value) in keys.iter().zip(&values) {
            let was_growing = index.is_growing();
            let start = Instant::now();
            index.insert(key, value).expect("insert");
            insert_ns.push(start.elapsed().as_nanos().min(u128::from(u32::MAX)) as u32);
            growths += usize::from(!was_growing && index.is_growing());
        }
        index.finish_growth().expect("finish growth");
        let total = fill_start.elapsed();
        drop(values);
        let mut idle_ns: Vec<u32> = (0..entries)
            .map(|position| {
                let start = Instant::now();
                black_box(position);
                start.elapsed().as_nanos().min(u128::from(u32::MAX)) as u32
            })
            .collect();
        insert_ns.sort_unstable();
        idle_ns.sort_unstable();
        let fill = FillReport {
            total,
            growths,
            insert_ns_sorted: insert_ns,
            idle_ns_sorted: idle_ns,
        };

        let mut hash_map = LowBitsMap::with_capacity_and_hasher(entries, LowBits);
        for (position, &key) in keys.iter().enumerate() {
            hash_map.insert(key, keys[cycle[position] as usize]);
        }
        drop(cycle);

        let floor = floor_buffer(index.slot_count() * 32, &mut rng);
        Fixture {
            index,
            hash_map,
            keys,
            miss_keys,
            floor,
            fill,
        }
    }
}

/// A region of `bytes` whose cache lines form one random cycle: each line's first 8 bytes are
/// the index of the next line.
fn floor_buffer(bytes: usize, rng: &mut SmallRng) -> Region {
    let mut region = Region::anonymous(bytes).expect("floor buffer");
    let lines = bytes / CACHE_LINE_BYTES;
    let cycle = random_cycle(lines, rng);
    let memory = region.bytes_mut();
    for (line, &next) in cycle.iter().enumerate() {
        let at = line * CACHE_LINE_BYTES;
        memory[at..at + 8].copy_from_slice(&u64::from(next).to_ne_bytes());
    }
    region
}

/// Follows the floor buffer's cycle for `steps` hops from `line`.
fn chase_floor(memory: &[u8], mut line: usize, steps: usize) -> usize {
    for _ in 0..steps {
        let at = line * CACHE_LINE_BYTES;
        line = u64::from_ne_bytes(memory[at..at + 8].try_into().expect("8 bytes")) as usize;
    }
    line
}

fn chase_index(index: &RobinHoodIndex, mut key: u128, steps: usize) -> u128 {
    for _ in 0..steps {
        key = index.get(key).expect("cycle keys are present");
    }
    key
}

fn chase_hash_map(hash_map: &LowBitsMap, mut key: u128, steps: usize) -> u128 {
    for _ in 0..steps {
        key = *hash_map.get(&key).expect("cycle keys are present");
    }
    key
}

/// Waits for every earlier instruction (so every earlier load) before starting later ones:
/// makes lookups whose results feed nothing forward still run one at a time.
#[inline(always)]
fn serialise() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `lfence` has no operands and no memory effects; SSE2 is part of x86-64.
    unsafe {
        core::arch::x86_64::_mm_lfence();
    }
}

/// Looks up `steps` absent keys one at a time from `cursor`; returns the new cursor.
fn miss_chase(
    lookup: impl Fn(u128) -> Option<u128>,
    keys: &[u128],
    cursor: usize,
    steps: usize,
) -> usize {
    let mask = keys.len() - 1;
    let mut cursor = cursor;
    for _ in 0..steps {
        let found = lookup(keys[cursor]);
        cursor = (cursor + 1 + found.map_or(0, |value| value as usize)) & mask;
        serialise();
    }
    cursor
}

/// Runs `batches` `get_batch` calls over consecutive keys from `cursor`; returns the cursor.
fn batched(index: &RobinHoodIndex, keys: &[u128], cursor: usize, batches: usize) -> usize {
    let mut out = [None; BATCH_KEYS];
    let mut cursor = cursor;
    for _ in 0..batches {
        if cursor + BATCH_KEYS > keys.len() {
            cursor = 0;
        }
        index.get_batch(&keys[cursor..cursor + BATCH_KEYS], &mut out);
        black_box(&out);
        cursor += BATCH_KEYS;
    }
    cursor
}

fn bench_dependent(criterion: &mut Criterion, fixture: &Fixture) {
    let mut group = criterion.benchmark_group("dependent");
    group.throughput(Throughput::Elements(CHASE_STEPS as u64));
    let memory = fixture.floor.bytes();
    let mut line = 0;
    group.bench_function("dram_floor", |bencher| {
        bencher.iter(|| line = chase_floor(memory, line, CHASE_STEPS))
    });
    let mut key = fixture.keys[0];
    group.bench_function("robin_hood_hit", |bencher| {
        bencher.iter(|| key = chase_index(&fixture.index, key, CHASE_STEPS))
    });
    let mut key = fixture.keys[0];
    group.bench_function("hashbrown_hit", |bencher| {
        bencher.iter(|| key = chase_hash_map(&fixture.hash_map, key, CHASE_STEPS))
    });
    let mut cursor = 0;
    group.bench_function("robin_hood_miss_lfence", |bencher| {
        let lookup = |key| fixture.index.get(key);
        bencher.iter(|| cursor = miss_chase(lookup, &fixture.miss_keys, cursor, CHASE_STEPS))
    });
    let mut cursor = 0;
    group.bench_function("hashbrown_miss_lfence", |bencher| {
        let lookup = |key| fixture.hash_map.get(&key).copied();
        bencher.iter(|| cursor = miss_chase(lookup, &fixture.miss_keys, cursor, CHASE_STEPS))
    });
    group.finish();
}

fn bench_batched(criterion: &mut Criterion, fixture: &Fixture) {
    let mut group = criterion.benchmark_group("batched");
    group.throughput(Throughput::Elements(
        (BATCH_KEYS * BATCHES_PER_ITERATION) as u64,
    ));
    let mut cursor = 0;
    group.bench_function("robin_hood_hit_x32", |bencher| {
        bencher
            .iter(|| cursor = batched(&fixture.index, &fixture.keys, cursor, BATCHES_PER_ITERATION))
    });
    let mut cursor = 0;
    group.bench_function("robin_hood_miss_x32", |bencher| {
        bencher.iter(|| {
            cursor = batched(
                &fixture.index,
                &fixture.miss_keys,
                cursor,
                BATCHES_PER_ITERATION,
            )
        })
    });
    group.finish();
}

/// Nanoseconds per element of `run(elements)`.
fn per_element_ns(elements: usize, run: impl FnOnce(usize)) -> f64 {
    let start = Instant::now();
    run(elements);
    start.elapsed().as_secs_f64() * 1e9 / elements as f64
}

/// One summary line: runs `lookups` lookups in round `round`.
type Variant<'a> = dyn Fn(usize, usize) + 'a;

/// Measures every variant in `rounds` interleaved rounds of `steps` lookups (so a burst of
/// noise from other processes hits all of them alike) and prints the median and best round,
/// each as a ratio to the floor's.
fn print_summary(fixture: &Fixture, rounds: usize, steps: usize) {
    let memory = fixture.floor.bytes();
    let index = &fixture.index;
    let variants: [(&str, &Variant); 7] = [
        ("DRAM floor (pointer chase)", &|round, n| {
            black_box(chase_floor(memory, round, n));
        }),
        ("robin hood hit, dependent", &|round, n| {
            black_box(chase_index(index, fixture.keys[round], n));
        }),
        ("robin hood miss, lfence", &|round, n| {
            black_box(miss_chase(
                |key| index.get(key),
                &fixture.miss_keys,
                round * 4096,
                n,
            ));
        }),
        ("hashbrown hit, dependent", &|round, n| {
            black_box(chase_hash_map(&fixture.hash_map, fixture.keys[round], n));
        }),
        ("hashbrown miss, lfence", &|round, n| {
            let lookup = |key| fixture.hash_map.get(&key).copied();
            black_box(miss_chase(lookup, &fixture.miss_keys, round * 4096, n));
        }),
        ("robin hood hit, get_batch x32", &|round, n| {
            black_box(batched(index, &fixture.keys, round * 4096, n / BATCH_KEYS));
        }),
        ("robin hood miss, get_batch x32", &|round, n| {
            black_box(batched(
                index,
                &fixture.miss_keys,
                round * 4096,
                n / BATCH_KEYS,
            ));
        }),
    ];
    let mut samples = vec![Vec::with_capacity(rounds); variants.len()];
    for round in 0..rounds {
        for ((_, run), samples) in variants.iter().zip(&mut samples) {
            samples.push(per_element_ns(steps, |n| run(round, n)));
        }
    }
    for samples in &mut samples {
        samples.sort_by(f64::total_cmp);
    }
    let median = |samples: &[f64]| samples[samples.len() / 2];

    println!(
        "\n== index summary: {} entries, {} slots ({} MiB) ==",
        index.len(),
        index.slot_count(),
        (index.slot_count() * 32) >> 20
    );
    println!(
        "THP mode: {}; index huge pages requested: {}, resident: {} MiB; floor buffer resident: {} MiB",
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .unwrap_or_default()
            .trim(),
        index.huge_pages(),
        index.huge_page_resident_bytes().unwrap_or(0) >> 20,
        fixture.floor.huge_page_resident_bytes().unwrap_or(0) >> 20,
    );
    println!("max probe distance: {}", index.max_probe_distance());
    let fill = &fixture.fill;
    println!(
        "fill from capacity {INITIAL_CAPACITY}: {:.2} s ({:.0} ns/insert), {} growths",
        fill.total.as_secs_f64(),
        fill.total.as_secs_f64() * 1e9 / index.len() as f64,
        fill.growths,
    );
    println!(
        "  insert pauses: {}",
        FillReport::describe(&fill.insert_ns_sorted)
    );
    println!(
        "  timer alone:   {}",
        FillReport::describe(&fill.idle_ns_sorted)
    );
    println!("{rounds} interleaved rounds of {steps} lookups each:");
    println!(
        "{:<34} {:>10} {:>9} {:>10} {:>9}",
        "lookup", "median ns", "x floor", "best ns", "x floor"
    );
    let (floor_median, floor_best) = (median(&samples[0]), samples[0][0]);
    for ((name, _), samples) in variants.iter().zip(&samples) {
        println!(
            "{name:<34} {:>10.1} {:>9.2} {:>10.1} {:>9.2}",
            median(samples),
            median(samples) / floor_median,
            samples[0],
            samples[0] / floor_best
        );
    }
}

fn main() {
    let full_run = std::env::args().any(|argument| argument == "--bench");
    let entries = if full_run {
        BENCH_ENTRIES
    } else {
        TEST_ENTRIES
    };
    let fixture = Fixture::build(entries);
    let mut criterion = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args();
    bench_dependent(&mut criterion, &fixture);
    bench_batched(&mut criterion, &fixture);
    criterion.final_summary();
    if full_run {
        print_summary(&fixture, SUMMARY_ROUNDS, SUMMARY_STEPS);
    } else {
        print_summary(&fixture, 1, 1024);
    }
}
