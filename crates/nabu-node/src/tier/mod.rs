//! Cache tiers of one node's shards: DRAM → CXL memory → NVMe (the chunk store).
//!
//! **What is where.** The NVMe tier is the chunk store ([`nabu_store::Store`]): it always
//! holds the durable copy of every shard, so the two memory tiers above it are caches and
//! dropping anything from them never loses data. The DRAM tier keeps shards as the very
//! buffers the store read (a hit is served without a copy); the CXL tier keeps them in a
//! fixed mapped [`region::Region`] (anonymous memory, or a DAX device or file from
//! `tiers.cxl_path`) carved by a best-fit [`region::ExtentAllocator`]. A shard lives in at
//! most one memory tier at a time (exclusive caching, so the two budgets add up).
//!
//! **Fill, promotion, demotion.** A read tries DRAM, then CXL, then NVMe. Every read that
//! misses DRAM counts one access in a [`Heat`] table (per shard, within
//! `tiers.promote_window_ms`); once a shard has `tiers.promote_hits` accesses in its
//! window it is promoted into DRAM (from CXL, or straight from NVMe). A shard read from
//! NVMe that is not hot enough yet enters the CXL tier (when there is one). Each memory tier
//! evicts with S3-FIFO ([`crate::kv::policy`]): one-off scans pass through its small queue
//! without pushing hot shards out. A shard evicted from DRAM is demoted to CXL; one evicted
//! from CXL is dropped (NVMe still has it).
//!
//! **Why our S3-FIFO, not a crate.** Evaluated: `foyer` (a hybrid memory + disk cache) owns
//! its disk tier (its own block engine and format), but our lower tier is the chunk store
//! that must stay the single durable copy, and the CXL tier is memory we map ourselves;
//! `moka` (W-TinyLFU) applies evictions and size accounting asynchronously in batches, so its
//! weighted size may pass the bound for a while, which the tiers must never do;
//! `quick_cache` (CLOCK-Pro, close to S3-FIFO) splits the capacity over shards (a 1 MiB
//! value does not fit a small cache's shard) and owns values, where the CXL tier must free
//! an extent in its region on eviction. The KV pool's S3-FIFO already tracks keys and sizes
//! only and lets the owner keep the values, which is exactly what both memory tiers need,
//! with no new dependency.
//!
//! **Never stale.** A write (put, delete, sweep) of a shard changes the store, then bumps
//! the shard's slot in a table of generations, then removes the shard from both tiers. A
//! fill remembers the generation before its NVMe read and inserts only if it is unchanged,
//! checked under the tier's lock: either the write's bump comes first (the fill is refused)
//! or its removal comes after the insert (the fill is undone). Demotions and promotions
//! carry the generation of the original fill the same way.
//!
//! **Bounds.** Each memory tier charges every value before inserting it and evicts until the
//! charge fits, under its lock; a value larger than the tier is not admitted. The DRAM tier
//! charges a value's buffer (length rounded up to a page, plus a page for the record's
//! trailer and padding); the CXL tier its extent, inside a region of exactly its size.

pub mod detect;
pub mod region;
mod view;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use nabu_core::AlignedBuf;
use nabu_proto::ops::ShardInfo;
use serde::{Deserialize, Serialize};

use crate::kv::policy::{Policy, PolicyKey, PolicyKind};
use region::{Extent, ExtentAllocator, Region};

pub use detect::{CxlHardware, detect_cxl};
pub use view::{TierView, TiersView, render_metrics};

/// Slots in the table of generations (see the module docs): a write to one shard blocks the
/// fill of another only when both hash to one slot.
const GENERATION_SLOTS: usize = 1 << 16;

/// The `[tiers]` table of `node.toml`. Every field has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TierConfig {
    /// The DRAM tier's capacity: the most bytes of shards kept in ordinary memory; 0 turns
    /// the tier off. Default 256 MiB; `nabu up --tier-dram-bytes SIZE` sets it.
    pub dram_bytes: u64,
    /// The CXL tier's capacity (the size of its mapped region); 0 (the default) turns the
    /// tier off. `nabu up --tier-cxl-bytes SIZE` sets it.
    pub cxl_bytes: u64,
    /// What the CXL tier maps: a DAX device (`/dev/dax0.0`) or a file (on a DAX or tmpfs
    /// mount; created and sized to `cxl_bytes` if shorter). Owned by this node alone;
    /// nothing in it survives a restart. Absent (the default): anonymous memory.
    pub cxl_path: Option<PathBuf>,
    /// The window in which reads of one shard are counted towards its promotion.
    /// Default 60,000 ms.
    pub promote_window_ms: u64,
    /// Reads of one shard within `promote_window_ms` that promote it into DRAM. Default 2
    /// (so a one-off scan never enters DRAM); 1 fills DRAM on every NVMe read.
    pub promote_hits: u32,
    /// Shards whose recent reads are remembered at most (about 40 bytes each); when full,
    /// entries older than the window are dropped, and if none is, all are. Default 1,000,000.
    pub heat_entries_max: u32,
}

impl Default for TierConfig {
    fn default() -> Self {
        Self {
            dram_bytes: 256 << 20,
            cxl_bytes: 0,
            cxl_path: None,
            promote_window_ms: 60_000,
            promote_hits: 2,
            heat_entries_max: 1_000_000,
        }
    }
}

impl TierConfig {
    /// Why these values cannot run, if they cannot.
    pub fn problem(&self) -> Option<&'static str> {
        if self.promote_hits == 0 {
            return Some("tiers.promote_hits must be at least 1");
        }
        if self.promote_window_ms == 0 {
            return Some("tiers.promote_window_ms must be positive");
        }
        if self.heat_entries_max == 0 {
            return Some("tiers.heat_entries_max must be positive");
        }
        if self.cxl_path.is_some() && self.cxl_bytes == 0 {
            return Some("tiers.cxl_path needs tiers.cxl_bytes (the region's size)");
        }
        None
    }
}

/// The three tiers, by name (a label in `/metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TierName {
    /// Ordinary memory.
    Dram,
    /// The second memory region.
    Cxl,
    /// The chunk store.
    Nvme,
}

impl TierName {
    /// Its label.
    pub fn label(self) -> &'static str {
        match self {
            TierName::Dram => "dram",
            TierName::Cxl => "cxl",
            TierName::Nvme => "nvme",
        }
    }
}

/// One tier's counters.
#[derive(Debug, Default)]
pub struct TierCounters {
    /// Reads this tier served.
    pub hits: AtomicU64,
    /// Reads that asked this tier and went on to the next one down.
    pub misses: AtomicU64,
    /// Shards that entered this tier from a lower one (fills and promotions).
    pub promotions: AtomicU64,
    /// Shards that left this tier for a lower one (evictions: to CXL, or dropped because
    /// NVMe holds them).
    pub demotions: AtomicU64,
}

/// A shard held by a memory tier, as read out of it.
#[derive(Debug, Clone)]
pub struct CachedShard {
    /// The shard's info.
    pub info: ShardInfo,
    /// The shard's bytes.
    pub body: Bytes,
    /// The generation of its slot when it was read from NVMe (see the module docs).
    pub generation: u64,
}

/// What [`Tiers::read`] found.
#[derive(Debug)]
pub enum TierRead {
    /// A memory tier held the shard.
    Hit(CachedShard),
    /// Neither did: read NVMe, then call [`Tiers::filled`] with these.
    Miss {
        /// Accesses in the shard's window, this one included.
        heat: u32,
        /// The shard slot's generation before the NVMe read.
        generation: u64,
    },
}

/// The memory tiers of one node, their admission table and counters.
#[derive(Debug)]
pub struct Tiers {
    config: TierConfig,
    dram: Option<MemoryTier>,
    cxl: Option<MemoryTier>,
    /// Reads served by the chunk store (hits) after both memory tiers missed.
    pub nvme: TierCounters,
    heat: Mutex<Heat>,
    generations: Box<[AtomicU64]>,
    /// CXL memory found on this machine at start.
    pub cxl_hardware: CxlHardware,
}

impl Tiers {
    /// The tiers `config` asks for; `cxl_hardware` is what detection found (shown, not
    /// required: without CXL the CXL tier is an ordinary memory region).
    pub fn new(config: &TierConfig, cxl_hardware: CxlHardware) -> std::io::Result<Self> {
        let dram = (config.dram_bytes > 0).then(|| MemoryTier::new(config.dram_bytes, None));
        let cxl = if config.cxl_bytes == 0 {
            None
        } else {
            let region = match &config.cxl_path {
                Some(path) => Region::file(path, config.cxl_bytes)?,
                None => Region::anonymous(config.cxl_bytes)?,
            };
            Some(MemoryTier::new(region.len(), Some(region)))
        };
        Ok(Self {
            config: config.clone(),
            dram,
            cxl,
            nvme: TierCounters::default(),
            heat: Mutex::new(Heat::new(
                Duration::from_millis(config.promote_window_ms),
                config.heat_entries_max as usize,
            )),
            generations: (0..GENERATION_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            cxl_hardware,
        })
    }

    /// Whether any memory tier is on.
    pub fn enabled(&self) -> bool {
        self.dram.is_some() || self.cxl.is_some()
    }

    /// The config the tiers run with.
    pub fn config(&self) -> &TierConfig {
        &self.config
    }

    /// The DRAM tier, if on.
    pub fn dram(&self) -> Option<&MemoryTier> {
        self.dram.as_ref()
    }

    /// The CXL tier, if on.
    pub fn cxl(&self) -> Option<&MemoryTier> {
        self.cxl.as_ref()
    }

    /// `key` if the DRAM tier holds it (a hit is counted; a miss is not, since the caller
    /// goes on with [`read`](Self::read), which counts it): cheap enough for an async
    /// thread, so a DRAM hit skips the blocking pool.
    pub fn read_dram(&self, key: &[u8]) -> Option<CachedShard> {
        self.dram.as_ref()?.get_if_held(key)
    }

    /// Looks for `key` in DRAM, then CXL (promoting it into DRAM when hot enough).
    pub fn read(&self, key: &[u8]) -> TierRead {
        if let Some(dram) = &self.dram
            && let Some(hit) = dram.get(key, false)
        {
            return TierRead::Hit(hit);
        }
        let heat = self.heat().touch(key_hash(key), Instant::now());
        let promote = self.dram.is_some() && heat >= self.config.promote_hits;
        if let Some(cxl) = &self.cxl
            && let Some(hit) = cxl.get(key, promote)
        {
            if promote {
                self.insert_dram(key, &hit);
            }
            return TierRead::Hit(hit);
        }
        TierRead::Miss {
            heat,
            generation: self.generation(key),
        }
    }

    /// After a miss, `key` was read from NVMe: counts the NVMe hit and fills a memory tier
    /// by policy (DRAM when hot enough, else CXL).
    pub fn filled(&self, key: &[u8], info: ShardInfo, body: &Bytes, heat: u32, generation: u64) {
        self.nvme.hits.fetch_add(1, Ordering::Relaxed);
        let shard = CachedShard {
            info,
            body: body.clone(),
            generation,
        };
        if self.dram.is_some() && heat >= self.config.promote_hits {
            self.insert_dram(key, &shard);
        } else if let Some(cxl) = &self.cxl {
            cxl.insert(key, &shard, || self.generation(key) == generation);
        }
    }

    /// Drops `key` from every memory tier after a write changed it in the store (see the
    /// module docs: call after the store changed).
    pub fn invalidate(&self, key: &[u8]) {
        self.generations[slot(key)].fetch_add(1, Ordering::SeqCst);
        if let Some(cxl) = &self.cxl {
            cxl.remove(key);
        }
        if let Some(dram) = &self.dram {
            dram.remove(key);
        }
    }

    fn insert_dram(&self, key: &[u8], shard: &CachedShard) {
        let Some(dram) = &self.dram else { return };
        let victims = dram.insert(key, shard, || self.generation(key) == shard.generation);
        for (victim_key, victim) in victims {
            if let Some(cxl) = &self.cxl {
                cxl.insert(&victim_key, &victim, || {
                    self.generation(&victim_key) == victim.generation
                });
            }
        }
    }

    fn generation(&self, key: &[u8]) -> u64 {
        self.generations[slot(key)].load(Ordering::SeqCst)
    }

    fn heat(&self) -> MutexGuard<'_, Heat> {
        self.heat
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn key_hash(key: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    hasher.finish()
}

fn slot(key: &[u8]) -> usize {
    key_hash(key) as usize % GENERATION_SLOTS
}

/// Reads per shard within the promotion window, bounded (see [`TierConfig::heat_entries_max`]).
#[derive(Debug)]
struct Heat {
    window: Duration,
    entries_max: usize,
    /// Key hash → (when its window started, reads in it).
    entries: HashMap<u64, (Instant, u32)>,
}

impl Heat {
    fn new(window: Duration, entries_max: usize) -> Self {
        Self {
            window,
            entries_max,
            entries: HashMap::new(),
        }
    }

    /// Counts a read of `hash`; returns the reads in its current window, this one included.
    fn touch(&mut self, hash: u64, now: Instant) -> u32 {
        if self.entries.len() >= self.entries_max && !self.entries.contains_key(&hash) {
            let window = self.window;
            self.entries
                .retain(|_, (start, _)| now.duration_since(*start) < window);
            if self.entries.len() >= self.entries_max {
                self.entries.clear();
            }
        }
        let (start, reads) = self.entries.entry(hash).or_insert((now, 0));
        if now.duration_since(*start) >= self.window {
            (*start, *reads) = (now, 0);
        }
        *reads = reads.saturating_add(1);
        *reads
    }
}

/// One memory tier: values, their S3-FIFO policy and the bytes charged, under one lock.
#[derive(Debug)]
pub struct MemoryTier {
    capacity_bytes: u64,
    inner: Mutex<Inner>,
    /// Bytes charged now (a copy of the figure kept under the lock, for gauges and tests).
    used_bytes: AtomicU64,
    /// Values held now.
    entries: AtomicU64,
    /// Hits, misses, promotions, demotions.
    pub counters: TierCounters,
}

#[derive(Debug)]
struct Inner {
    values: HashMap<PolicyKey, Entry>,
    policy: Policy,
    used_bytes: u64,
    /// The CXL tier's memory; `None` for DRAM (values are the store's buffers).
    region: Option<(Region, ExtentAllocator)>,
}

#[derive(Debug)]
struct Entry {
    info: ShardInfo,
    stored: Stored,
    charge: u64,
    generation: u64,
}

/// What [`MemoryTier::release`] did.
#[derive(Debug)]
enum Released {
    /// The key was not held.
    Absent,
    /// A DRAM value, handed back.
    Heap(CachedShard),
    /// A CXL value, its extent freed.
    Freed,
}

#[derive(Debug)]
enum Stored {
    Heap(Bytes),
    Extent { extent: Extent, len: usize },
}

impl MemoryTier {
    fn new(capacity_bytes: u64, region: Option<Region>) -> Self {
        let region = region.map(|region| {
            let allocator = ExtentAllocator::new(region.len());
            (region, allocator)
        });
        Self {
            capacity_bytes,
            inner: Mutex::new(Inner {
                values: HashMap::new(),
                policy: Policy::new(PolicyKind::S3Fifo, capacity_bytes),
                used_bytes: 0,
                region,
            }),
            used_bytes: AtomicU64::new(0),
            entries: AtomicU64::new(0),
            counters: TierCounters::default(),
        }
    }

    /// The tier's capacity.
    pub fn capacity_bytes(&self) -> u64 {
        self.capacity_bytes
    }

    /// Bytes charged now.
    pub fn used_bytes(&self) -> u64 {
        self.used_bytes.load(Ordering::SeqCst)
    }

    /// Values held now.
    pub fn entries(&self) -> u64 {
        self.entries.load(Ordering::Relaxed)
    }

    /// The mapped file or device of a CXL tier (`None`: anonymous memory or DRAM).
    pub fn region_path(&self) -> Option<PathBuf> {
        let inner = self.lock();
        let (region, _) = inner.region.as_ref()?;
        region.path().map(PathBuf::from)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `key`'s value if held as a heap value, counted as a hit; nothing is counted when it
    /// is not held.
    fn get_if_held(&self, key: &[u8]) -> Option<CachedShard> {
        let mut inner = self.lock();
        let entry = inner.values.get(key)?;
        let Stored::Heap(body) = &entry.stored else {
            return None;
        };
        let shard = CachedShard {
            info: entry.info,
            body: body.clone(),
            generation: entry.generation,
        };
        inner.policy.access(key);
        drop(inner);
        self.counters.hits.fetch_add(1, Ordering::Relaxed);
        Some(shard)
    }

    /// `key`'s value (counted as a hit or a miss); with `take`, it also leaves the tier (a
    /// promotion upward).
    fn get(&self, key: &[u8], take: bool) -> Option<CachedShard> {
        let mut inner = self.lock();
        let Some(entry) = inner.values.get(key) else {
            drop(inner);
            self.counters.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let body = match &entry.stored {
            Stored::Heap(body) => body.clone(),
            Stored::Extent { extent, len } => {
                let (region, _) = inner.region.as_ref().expect("an extent lives in a region");
                let copy = AlignedBuf::copy_from(region.bytes(*extent, *len));
                Bytes::from_owner(crate::shards::Owned(copy)).slice(..*len)
            }
        };
        let shard = CachedShard {
            info: entry.info,
            body,
            generation: entry.generation,
        };
        if take {
            inner.policy.remove(key);
            self.release(&mut inner, key);
        } else {
            inner.policy.access(key);
        }
        drop(inner);
        self.counters.hits.fetch_add(1, Ordering::Relaxed);
        Some(shard)
    }

    /// Inserts `shard` under `key` if `current` (asked under the lock) says its generation
    /// still holds, evicting until it fits; returns the evicted values of a DRAM tier (for
    /// demotion; a CXL tier's are dropped).
    fn insert(
        &self,
        key: &[u8],
        shard: &CachedShard,
        current: impl FnOnce() -> bool,
    ) -> Vec<(PolicyKey, CachedShard)> {
        let len = shard.body.len();
        let mut victims = Vec::new();
        let mut inner = self.lock();
        if inner.values.contains_key(key) || !current() {
            return victims;
        }
        let stored = loop {
            match &mut inner.region {
                Some((region, allocator)) => {
                    if ExtentAllocator::extent_len(len as u64) > allocator.capacity_bytes() {
                        return victims;
                    }
                    if let Some(extent) = allocator.allocate(len as u64) {
                        region.bytes_mut(extent, len).copy_from_slice(&shard.body);
                        break Stored::Extent { extent, len };
                    }
                }
                None => {
                    let charge = heap_charge(len);
                    if charge > self.capacity_bytes {
                        return victims;
                    }
                    if inner.used_bytes + charge <= self.capacity_bytes {
                        break Stored::Heap(shard.body.clone());
                    }
                }
            }
            let Some(victim) = inner.policy.victim(&mut |_| true) else {
                return victims;
            };
            match self.release(&mut inner, &victim) {
                Released::Absent => {}
                Released::Freed => {
                    self.counters.demotions.fetch_add(1, Ordering::Relaxed);
                }
                Released::Heap(evicted) => {
                    self.counters.demotions.fetch_add(1, Ordering::Relaxed);
                    victims.push((victim, evicted));
                }
            }
        };
        let charge = match &stored {
            Stored::Heap(_) => heap_charge(len),
            Stored::Extent { extent, .. } => extent.len,
        };
        let key: PolicyKey = key.into();
        inner.policy.insert(key.clone(), charge);
        inner.values.insert(
            key,
            Entry {
                info: shard.info,
                stored,
                charge,
                generation: shard.generation,
            },
        );
        inner.used_bytes += charge;
        debug_assert!(inner.used_bytes <= self.capacity_bytes);
        self.used_bytes.store(inner.used_bytes, Ordering::SeqCst);
        self.entries.fetch_add(1, Ordering::Relaxed);
        self.counters.promotions.fetch_add(1, Ordering::Relaxed);
        victims
    }

    /// Drops `key` if held.
    fn remove(&self, key: &[u8]) {
        let mut inner = self.lock();
        if inner.values.contains_key(key) {
            inner.policy.remove(key);
            self.release(&mut inner, key);
        }
    }

    /// Removes `key`'s value (already gone from the policy) and returns its charge to the
    /// budget; a heap value is handed back (for demotion), an extent freed.
    fn release(&self, inner: &mut Inner, key: &[u8]) -> Released {
        let Some(entry) = inner.values.remove(key) else {
            return Released::Absent;
        };
        inner.used_bytes -= entry.charge;
        self.used_bytes.store(inner.used_bytes, Ordering::SeqCst);
        self.entries.fetch_sub(1, Ordering::Relaxed);
        match entry.stored {
            Stored::Heap(body) => Released::Heap(CachedShard {
                info: entry.info,
                body,
                generation: entry.generation,
            }),
            Stored::Extent { extent, .. } => {
                if let Some((_, allocator)) = &mut inner.region {
                    allocator.free(extent);
                }
                Released::Freed
            }
        }
    }

    /// Checks the tier's books under its lock: the charges add up to `used_bytes`, which is
    /// within the capacity, and a region's allocator agrees (tests).
    #[cfg(test)]
    fn check_books(&self) {
        let inner = self.lock();
        let charged: u64 = inner.values.values().map(|entry| entry.charge).sum();
        assert_eq!(charged, inner.used_bytes);
        assert!(inner.used_bytes <= self.capacity_bytes);
        assert_eq!(inner.values.len(), inner.policy.len());
        if let Some((_, allocator)) = &inner.region {
            assert_eq!(allocator.used_bytes(), inner.used_bytes);
        }
    }
}

/// What a DRAM value is charged: its buffer, rounded up to a page, plus a page for the
/// store record's trailer and padding the buffer also holds.
fn heap_charge(len: usize) -> u64 {
    (len as u64).next_multiple_of(4096) + 4096
}
