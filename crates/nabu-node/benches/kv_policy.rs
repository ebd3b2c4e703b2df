//! Hit ratio of the KV pool's eviction policies on a KV-cache trace, side by side:
//! S3-FIFO (the pool's default) against LRU (the baseline), at three pool sizes.
//!
//! The trace models multi-turn chat on an inference cluster: conversations are picked by a
//! Zipf law (a few are very active), each starts from one of a few shared system prompts
//! (also Zipf), and each turn reads the conversation's whole prefix (system prompt chunks,
//! then every earlier turn's chunks) before writing its new chunks; now and then a one-off
//! long document is read and written once (a scan that an LRU lets flush the hot prefixes).
//! Reads that miss are written back, as an engine recomputes and offloads them.
//!
//! `cargo bench -p nabu-node --bench kv_policy` (a deterministic simulation: same seed, same
//! numbers; `KV_TRACE_SEED` changes it).

use std::collections::HashMap;
use std::sync::Arc;

use nabu_node::kv::policy::{Policy, PolicyKind};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One chunk: 256 tokens of a mid-size model's KV cache, about 2 MiB (LMCache's layout).
const CHUNK_BYTES: u64 = 2 << 20;
const CONVERSATIONS: usize = 4_000;
const SYSTEM_PROMPTS: usize = 32;
const SYSTEM_PROMPT_CHUNKS: u64 = 8;
const TURN_CHUNKS: u64 = 2;
const TURNS_MAX: u64 = 24;
const REQUESTS: usize = 150_000;
/// One request in this many is a one-off document of `SCAN_CHUNKS` chunks.
const SCAN_EVERY: usize = 25;
const SCAN_CHUNKS: u64 = 64;

/// Draws ranks 0..n with P(k) ∝ 1 / (k + 1)^s (inverse CDF over a table).
struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut total = 0.0;
        let cumulative = (0..n)
            .map(|k| {
                total += 1.0 / ((k + 1) as f64).powf(s);
                total
            })
            .collect::<Vec<_>>();
        Self {
            cumulative: cumulative.iter().map(|c| c / total).collect(),
        }
    }

    fn sample(&self, rng: &mut StdRng) -> usize {
        let u: f64 = rng.random();
        self.cumulative
            .partition_point(|&c| c < u)
            .min(self.cumulative.len() - 1)
    }
}

/// One request: the chunk keys it reads (each written back on a miss), then the new chunks
/// it writes.
struct Request {
    reads: Vec<Vec<u8>>,
    writes: Vec<Vec<u8>>,
}

/// A cache of keys and sizes under one policy.
struct Cache {
    policy: Policy,
    sizes: HashMap<Arc<[u8]>, u64>,
    used_bytes: u64,
    capacity_bytes: u64,
    hits: u64,
    gets: u64,
}

impl Cache {
    fn new(kind: PolicyKind, capacity_bytes: u64) -> Self {
        Self {
            policy: Policy::new(kind, capacity_bytes),
            sizes: HashMap::new(),
            used_bytes: 0,
            capacity_bytes,
            hits: 0,
            gets: 0,
        }
    }

    fn get(&mut self, key: &[u8]) -> bool {
        self.gets += 1;
        if self.sizes.contains_key(key) {
            self.hits += 1;
            self.policy.access(key);
            true
        } else {
            false
        }
    }

    fn put(&mut self, key: &[u8], bytes: u64) {
        if let Some(old) = self.sizes.remove(key) {
            self.policy.remove(key);
            self.used_bytes -= old;
        }
        while self.used_bytes + bytes > self.capacity_bytes {
            let Some(victim) = self.policy.victim(&mut |_| true) else {
                return;
            };
            self.used_bytes -= self.sizes.remove(&victim).expect("tracked");
        }
        let key: Arc<[u8]> = Arc::from(key);
        self.policy.insert(Arc::clone(&key), bytes);
        self.sizes.insert(key, bytes);
        self.used_bytes += bytes;
    }

    fn read_or_write(&mut self, key: &[u8]) {
        if !self.get(key) {
            self.put(key, CHUNK_BYTES);
        }
    }
}

/// The trace: for each request, the chunk keys it reads (then writes on a miss) in order,
/// and the new chunks it writes; and the bytes of the chunks that are ever read twice or
/// more (the reusable working set: conversations and system prompts, not the documents).
fn trace(seed: u64) -> (Vec<Request>, u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let conversations = Zipf::new(CONVERSATIONS, 1.0);
    let prompts = Zipf::new(SYSTEM_PROMPTS, 1.2);
    let mut prompt_of = HashMap::new();
    let mut turns: HashMap<usize, u64> = HashMap::new();
    let mut unique = std::collections::HashSet::new();
    let mut requests = Vec::with_capacity(REQUESTS);
    for request in 0..REQUESTS {
        if request % SCAN_EVERY == SCAN_EVERY - 1 {
            let document: Vec<Vec<u8>> = (0..SCAN_CHUNKS)
                .map(|chunk| format!("doc{request}/{chunk}").into_bytes())
                .collect();
            requests.push(Request {
                reads: document,
                writes: Vec::new(),
            });
            continue;
        }
        let conversation = conversations.sample(&mut rng);
        let prompt = *prompt_of
            .entry(conversation)
            .or_insert_with(|| prompts.sample(&mut rng));
        let turn = turns.entry(conversation).or_insert(0);
        if *turn >= TURNS_MAX {
            *turn = 0; // the conversation starts over (a new chat from the same user)
        }
        let mut reads: Vec<Vec<u8>> = (0..SYSTEM_PROMPT_CHUNKS)
            .map(|chunk| format!("sys{prompt}/{chunk}").into_bytes())
            .collect();
        reads.extend(
            (0..*turn * TURN_CHUNKS).map(|chunk| format!("c{conversation}/{chunk}").into_bytes()),
        );
        let writes: Vec<Vec<u8>> = (*turn * TURN_CHUNKS..(*turn + 1) * TURN_CHUNKS)
            .map(|chunk| format!("c{conversation}/{chunk}").into_bytes())
            .collect();
        *turn += 1;
        unique.extend(reads.iter().cloned());
        unique.extend(writes.iter().cloned());
        requests.push(Request { reads, writes });
    }
    (requests, unique.len() as u64 * CHUNK_BYTES)
}

fn hit_ratio(kind: PolicyKind, capacity_bytes: u64, requests: &[Request]) -> f64 {
    let mut cache = Cache::new(kind, capacity_bytes);
    for request in requests {
        request
            .reads
            .iter()
            .for_each(|key| cache.read_or_write(key));
        request
            .writes
            .iter()
            .for_each(|key| cache.put(key, CHUNK_BYTES));
    }
    cache.hits as f64 / cache.gets.max(1) as f64
}

fn main() {
    let seed = std::env::var("KV_TRACE_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(7);
    let (requests, working_set_bytes) = trace(seed);
    let gets: usize = requests.iter().map(|request| request.reads.len()).sum();
    println!(
        "KV-cache trace (seed {seed}): {REQUESTS} requests, {gets} chunk reads of {} MiB, \
         reusable working set {:.1} GiB; 1 request in {SCAN_EVERY} is a one-off \
         {SCAN_CHUNKS}-chunk document",
        CHUNK_BYTES >> 20,
        working_set_bytes as f64 / f64::from(1u32 << 30)
    );
    println!(
        "{:>12} {:>20} {:>10} {:>10} {:>12}",
        "pool", "of reusable set", "LRU", "S3-FIFO", "S3-FIFO/LRU"
    );
    for percent in [5u64, 10, 25] {
        let capacity = working_set_bytes * percent / 100;
        let lru = hit_ratio(PolicyKind::Lru, capacity, &requests);
        let s3fifo = hit_ratio(PolicyKind::S3Fifo, capacity, &requests);
        println!(
            "{:>8} GiB {:>19}% {:>9.1}% {:>9.1}% {:>11.2}×",
            capacity >> 30,
            percent,
            lru * 100.0,
            s3fifo * 100.0,
            s3fifo / lru
        );
    }
}
