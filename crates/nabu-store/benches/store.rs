//! The store against the disk it runs on, measured in the same run.
//!
//! Baselines: raw `O_DIRECT` appends of 1 MiB each followed by `fdatasync`, and raw
//! `O_DIRECT` 1 MiB reads — the device's limit for this access pattern. Against them: the
//! store's sequential 1 MiB `put`s (each durable before the next starts) and `get`s. Criterion
//! reports each as bytes/s; a closing pass alternates the four a few times and prints the
//! store/raw ratios (target: at least 0.8).
//!
//! Files go to `NABU_BENCH_DIR` if set, else to Cargo's target tmp dir (same filesystem as the
//! target dir; tmpfs would defeat the point, having no `O_DIRECT`).
//!
//! Run: `cargo bench -p nabu-store --bench store`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use nabu_core::AlignedBuf;
use nabu_store::{DirectIo, Disk, DiskFile, IoMode, OpenOptions, RealDisk, Store, StoreConfig};

/// Bytes per put, get or raw I/O.
const CHUNK_BYTES: usize = 1 << 20;
/// Chunks in the read working set (reads cycle over it).
const READ_SET_CHUNKS: u64 = 128;
/// Chunks per pass of the closing ratio report.
const RATIO_PASS_CHUNKS: u64 = 96;
/// Passes of the closing ratio report (best pass counts).
const RATIO_PASSES: usize = 3;

fn bench_root() -> PathBuf {
    let root = std::env::var_os("NABU_BENCH_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("nabu-store-bench"),
        PathBuf::from,
    );
    std::fs::create_dir_all(&root).expect("create bench dir");
    root
}

fn chunk(seed: u64) -> AlignedBuf {
    let mut buf = AlignedBuf::zeroed(CHUNK_BYTES);
    for (index, word) in buf.chunks_exact_mut(8).enumerate() {
        word.copy_from_slice(
            &(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ index as u64).to_le_bytes(),
        );
    }
    buf
}

fn open_direct(path: &Path) -> Box<dyn DiskFile> {
    let options = OpenOptions {
        create: true,
        direct_io: DirectIo::Auto,
    };
    let file = RealDisk::new().open(path, options).expect("open raw file");
    if file.io_mode() != IoMode::Direct {
        eprintln!(
            "warning: {} does not take O_DIRECT; numbers include the page cache",
            path.display()
        );
    }
    file
}

fn store_config(dir: &Path) -> StoreConfig {
    StoreConfig::new(vec![dir.to_path_buf()])
}

/// Appends `chunks` chunks with an `fdatasync` after each, to a fresh file.
fn raw_appends(root: &Path, chunks: u64) -> Duration {
    let path = root.join("raw-append");
    let _ = std::fs::remove_file(&path);
    let file = open_direct(&path);
    let buf = chunk(1);
    let start = Instant::now();
    for index in 0..chunks {
        file.write_at(buf.as_full(), index * CHUNK_BYTES as u64)
            .expect("write");
        file.sync_data().expect("fdatasync");
    }
    let elapsed = start.elapsed();
    std::fs::remove_file(&path).expect("remove");
    elapsed
}

/// Puts `chunks` 1 MiB payloads, one after another, into a fresh store.
fn store_puts(root: &Path, chunks: u64) -> Duration {
    let dir = root.join("store-put");
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::open(store_config(&dir), Arc::new(RealDisk::new())).expect("open");
    let payload = chunk(2);
    let start = Instant::now();
    for index in 0..chunks {
        store
            .put(format!("chunk-{index}").as_bytes(), &payload)
            .expect("put");
    }
    let elapsed = start.elapsed();
    drop(store);
    std::fs::remove_dir_all(&dir).expect("remove");
    elapsed
}

/// A raw file and a store each holding the read working set.
struct ReadSet {
    raw: Box<dyn DiskFile>,
    store: Store,
}

impl ReadSet {
    fn new(root: &Path) -> Self {
        let raw_path = root.join("raw-read");
        let store_dir = root.join("store-read");
        let _ = std::fs::remove_dir_all(&store_dir);
        let raw = open_direct(&raw_path);
        let store = Store::open(store_config(&store_dir), Arc::new(RealDisk::new())).expect("open");
        for index in 0..READ_SET_CHUNKS {
            let payload = chunk(index);
            raw.write_at(payload.as_full(), index * CHUNK_BYTES as u64)
                .expect("write");
            store
                .put(format!("chunk-{index}").as_bytes(), &payload)
                .expect("put");
        }
        raw.sync_data().expect("fdatasync");
        Self { raw, store }
    }

    fn raw_reads(&self, first: u64, chunks: u64) -> Duration {
        let mut buf = AlignedBuf::zeroed(CHUNK_BYTES);
        let start = Instant::now();
        for index in first..first + chunks {
            let offset = (index % READ_SET_CHUNKS) * CHUNK_BYTES as u64;
            self.raw
                .read_exact_at(buf.as_full_mut(), offset)
                .expect("read");
        }
        start.elapsed()
    }

    fn store_gets(&self, first: u64, chunks: u64) -> Duration {
        let start = Instant::now();
        for index in first..first + chunks {
            let key = format!("chunk-{}", index % READ_SET_CHUNKS);
            let payload = self
                .store
                .get(key.as_bytes())
                .expect("get")
                .expect("present");
            assert_eq!(payload.len(), CHUNK_BYTES);
        }
        start.elapsed()
    }
}

fn benches(criterion: &mut Criterion, root: &Path, reads: &ReadSet) {
    let mut group = criterion.benchmark_group("1MiB");
    group.throughput(Throughput::Bytes(CHUNK_BYTES as u64));
    group.bench_function("raw O_DIRECT append + fdatasync", |bench| {
        bench.iter_custom(|iters| raw_appends(root, iters))
    });
    group.bench_function("store put", |bench| {
        bench.iter_custom(|iters| store_puts(root, iters))
    });
    let mut next = 0;
    group.bench_function("raw O_DIRECT read", |bench| {
        bench.iter_custom(|iters| {
            next += iters;
            reads.raw_reads(next - iters, iters)
        })
    });
    group.bench_function("store get", |bench| {
        bench.iter_custom(|iters| {
            next += iters;
            reads.store_gets(next - iters, iters)
        })
    });
    group.finish();
}

fn bytes_per_second(chunks: u64, elapsed: Duration) -> f64 {
    (chunks * CHUNK_BYTES as u64) as f64 / elapsed.as_secs_f64()
}

/// Alternates raw and store passes and prints each best pass and the store/raw ratios.
fn ratio_report(root: &Path, reads: &ReadSet) {
    let mut best = [0.0f64; 4];
    for pass in 0..RATIO_PASSES {
        let first = pass as u64 * RATIO_PASS_CHUNKS;
        let runs = [
            raw_appends(root, RATIO_PASS_CHUNKS),
            store_puts(root, RATIO_PASS_CHUNKS),
            reads.raw_reads(first, RATIO_PASS_CHUNKS),
            reads.store_gets(first, RATIO_PASS_CHUNKS),
        ];
        for (slot, elapsed) in best.iter_mut().zip(runs) {
            *slot = slot.max(bytes_per_second(RATIO_PASS_CHUNKS, elapsed));
        }
    }
    let mib = |rate: f64| rate / f64::from(1u32 << 20);
    println!(
        "raw append+fdatasync {:>8.1} MiB/s | store put {:>8.1} MiB/s | put/raw {:.2}",
        mib(best[0]),
        mib(best[1]),
        best[1] / best[0]
    );
    println!(
        "raw read             {:>8.1} MiB/s | store get {:>8.1} MiB/s | get/raw {:.2}",
        mib(best[2]),
        mib(best[3]),
        best[3] / best[2]
    );
    let stats = reads.store.stats();
    println!(
        "store io mode {:?}; target ratio >= 0.80",
        stats.dirs[0].io_mode
    );
}

fn main() {
    let root = bench_root();
    let reads = ReadSet::new(&root);
    let mut criterion = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    benches(&mut criterion, &root, &reads);
    criterion.final_summary();
    ratio_report(&root, &reads);
    drop(reads);
    let _ = std::fs::remove_dir_all(&root);
}
