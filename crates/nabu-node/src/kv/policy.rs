//! Eviction policies of the KV pool: S3-FIFO (the default) and LRU (the baseline).
//!
//! **Why S3-FIFO, and why our own.** KV-cache traffic is full of one-hit wonders (a prompt's
//! chunks written once and never asked for again, scans of long documents) next to hot shared
//! prefixes (system prompts, multi-turn chats). S3-FIFO (Yang et al., SOSP '23) admits every
//! new key to a small FIFO (10% of the bytes) and promotes to the main FIFO only keys that
//! were read again while there; keys evicted from the small queue leave a *ghost* (a hash), and
//! a key that comes back while its ghost is remembered goes straight to main. One-hit wonders
//! so never push hot keys out, and every operation is O(1) with no list splicing on a hit (a
//! hit only bumps a 2-bit counter). The well-kept crates (`quick_cache`, `foyer`, `moka`)
//! own their values and offer no pins, leases or group eviction, which the pool needs and
//! decides per victim, so the policy here tracks keys and sizes only and asks the pool, for
//! each candidate, whether it may go ([`Policy::victim`]).
//!
//! Both policies keep lazy queues: removing a key drops it from the map only, and a queue slot
//! whose generation no longer matches is skipped when it reaches the head.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// A key as the policy sees it (cheap to clone).
pub type PolicyKey = Arc<[u8]>;

/// Which policy a pool runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyKind {
    /// S3-FIFO: small + main FIFO queues and a ghost queue (the default).
    #[default]
    S3Fifo,
    /// Least recently used (the baseline).
    Lru,
}

/// An eviction policy over keys and their sizes.
#[derive(Debug)]
pub enum Policy {
    /// See [`S3Fifo`].
    S3Fifo(S3Fifo),
    /// See [`Lru`].
    Lru(Lru),
}

impl Policy {
    /// A policy of `kind` for a pool of `capacity_bytes`.
    pub fn new(kind: PolicyKind, capacity_bytes: u64) -> Self {
        match kind {
            PolicyKind::S3Fifo => Policy::S3Fifo(S3Fifo::new(capacity_bytes)),
            PolicyKind::Lru => Policy::Lru(Lru::default()),
        }
    }

    /// Starts tracking `key` of `bytes` (not tracked before).
    pub fn insert(&mut self, key: PolicyKey, bytes: u64) {
        match self {
            Policy::S3Fifo(policy) => policy.insert(key, bytes),
            Policy::Lru(policy) => policy.insert(key, bytes),
        }
    }

    /// Notes a hit on `key`.
    pub fn access(&mut self, key: &[u8]) {
        match self {
            Policy::S3Fifo(policy) => policy.access(key),
            Policy::Lru(policy) => policy.access(key),
        }
    }

    /// Stops tracking `key` (deleted, expired or overwritten), if tracked.
    pub fn remove(&mut self, key: &[u8]) {
        match self {
            Policy::S3Fifo(policy) => policy.remove(key),
            Policy::Lru(policy) => policy.remove(key),
        }
    }

    /// Chooses a key to evict among those `evictable` allows, stops tracking it and returns
    /// it; `None` when no tracked key may go. Keys that may not go keep their place (or move
    /// to the back), so one call costs at most a few passes over the tracked keys.
    pub fn victim(&mut self, evictable: &mut dyn FnMut(&[u8]) -> bool) -> Option<PolicyKey> {
        match self {
            Policy::S3Fifo(policy) => policy.victim(evictable),
            Policy::Lru(policy) => policy.victim(evictable),
        }
    }

    /// Keys tracked.
    pub fn len(&self) -> usize {
        match self {
            Policy::S3Fifo(policy) => policy.entries.len(),
            Policy::Lru(policy) => policy.entries.len(),
        }
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The most a key's access counter counts (2 bits, as in the paper).
const FREQUENCY_MAX: u8 = 3;
/// The small queue's share of the capacity, in percent.
const SMALL_QUEUE_PERCENT: u64 = 10;
/// Ghost entries remembered at least (more when more keys are tracked).
const GHOST_ENTRIES_MIN: usize = 1024;

#[derive(Debug)]
struct S3Entry {
    generation: u64,
    bytes: u64,
    frequency: u8,
    in_main: bool,
}

/// S3-FIFO: see the module docs.
#[derive(Debug)]
pub struct S3Fifo {
    small_bytes_target: u64,
    entries: HashMap<PolicyKey, S3Entry>,
    small: VecDeque<(PolicyKey, u64)>,
    main: VecDeque<(PolicyKey, u64)>,
    small_bytes: u64,
    ghost: VecDeque<u64>,
    ghost_set: HashSet<u64>,
    next_generation: u64,
}

fn key_hash(key: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    hasher.finish()
}

impl S3Fifo {
    /// An empty policy for `capacity_bytes`.
    pub fn new(capacity_bytes: u64) -> Self {
        Self {
            small_bytes_target: (capacity_bytes / 100 * SMALL_QUEUE_PERCENT).max(1),
            entries: HashMap::new(),
            small: VecDeque::new(),
            main: VecDeque::new(),
            small_bytes: 0,
            ghost: VecDeque::new(),
            ghost_set: HashSet::new(),
            next_generation: 0,
        }
    }

    fn insert(&mut self, key: PolicyKey, bytes: u64) {
        self.remove(&key);
        self.next_generation += 1;
        let generation = self.next_generation;
        let in_main = self.ghost_set.remove(&key_hash(&key));
        if in_main {
            self.main.push_back((Arc::clone(&key), generation));
        } else {
            self.small.push_back((Arc::clone(&key), generation));
            self.small_bytes += bytes;
        }
        self.entries.insert(
            key,
            S3Entry {
                generation,
                bytes,
                frequency: 0,
                in_main,
            },
        );
    }

    fn access(&mut self, key: &[u8]) {
        if let Some(entry) = self.entries.get_mut(key) {
            entry.frequency = (entry.frequency + 1).min(FREQUENCY_MAX);
        }
    }

    fn remove(&mut self, key: &[u8]) {
        if let Some(entry) = self.entries.remove(key)
            && !entry.in_main
        {
            self.small_bytes -= entry.bytes;
        }
        self.compact_queues();
    }

    /// Drops stale slots once they outnumber live keys, so the queues stay O(live keys).
    fn compact_queues(&mut self) {
        if self.small.len() + self.main.len() <= 2 * self.entries.len() + 64 {
            return;
        }
        let entries = &self.entries;
        let live = |(key, generation): &(PolicyKey, u64)| {
            entries
                .get(key)
                .is_some_and(|entry| entry.generation == *generation)
        };
        self.small.retain(live);
        self.main.retain(live);
    }

    fn remember_ghost(&mut self, key: &[u8]) {
        let hash = key_hash(key);
        if self.ghost_set.insert(hash) {
            self.ghost.push_back(hash);
        }
        let ghosts_max = GHOST_ENTRIES_MIN.max(self.entries.len());
        while self.ghost.len() > ghosts_max {
            if let Some(old) = self.ghost.pop_front() {
                self.ghost_set.remove(&old);
            }
        }
    }

    fn victim(&mut self, evictable: &mut dyn FnMut(&[u8]) -> bool) -> Option<PolicyKey> {
        // Each key moves from small to main at most once and is rotated in main at most
        // FREQUENCY_MAX + 1 times before it is either evicted or found unevictable twice.
        let mut budget = (self.small.len() + self.main.len()) * (FREQUENCY_MAX as usize + 2) + 2;
        // Consecutive main-queue keys that could not go: once every key of main was seen so,
        // the small queue is tried even below its target size.
        let mut main_stuck = 0usize;
        while budget > 0 {
            budget -= 1;
            let from_small = !self.small.is_empty()
                && (self.small_bytes >= self.small_bytes_target
                    || self.main.is_empty()
                    || main_stuck >= self.main.len());
            let queue = if from_small {
                &mut self.small
            } else {
                &mut self.main
            };
            let (key, generation) = queue.pop_front()?;
            let Some(entry) = self
                .entries
                .get_mut(&key)
                .filter(|entry| entry.generation == generation)
            else {
                continue;
            };
            if from_small {
                self.small_bytes -= entry.bytes;
                if entry.frequency > 0 || !evictable(&key) {
                    entry.in_main = true;
                    entry.frequency = 0;
                    self.main.push_back((key, generation));
                    continue;
                }
                self.entries.remove(&key);
                self.remember_ghost(&key);
                return Some(key);
            }
            if entry.frequency > 0 {
                entry.frequency -= 1;
                main_stuck = 0;
                self.main.push_back((key, generation));
                continue;
            }
            if !evictable(&key) {
                main_stuck += 1;
                self.main.push_back((key, generation));
                continue;
            }
            self.entries.remove(&key);
            return Some(key);
        }
        None
    }
}

#[derive(Debug)]
struct LruEntry {
    generation: u64,
}

/// Least recently used, with a lazy queue (a hit pushes a new slot; stale slots are skipped).
#[derive(Debug, Default)]
pub struct Lru {
    entries: HashMap<PolicyKey, LruEntry>,
    queue: VecDeque<(PolicyKey, u64)>,
    next_generation: u64,
}

impl Lru {
    fn insert(&mut self, key: PolicyKey, _bytes: u64) {
        self.next_generation += 1;
        let generation = self.next_generation;
        self.queue.push_back((Arc::clone(&key), generation));
        self.entries.insert(key, LruEntry { generation });
        self.compact();
    }

    fn access(&mut self, key: &[u8]) {
        let Some((key, _)) = self.entries.get_key_value(key) else {
            return;
        };
        let key = Arc::clone(key);
        self.next_generation += 1;
        let generation = self.next_generation;
        if let Some(entry) = self.entries.get_mut(&key) {
            entry.generation = generation;
        }
        self.queue.push_back((key, generation));
        self.compact();
    }

    fn remove(&mut self, key: &[u8]) {
        self.entries.remove(key);
        self.compact();
    }

    fn compact(&mut self) {
        if self.queue.len() <= 2 * self.entries.len() + 64 {
            return;
        }
        let entries = &self.entries;
        self.queue.retain(|(key, generation)| {
            entries
                .get(key)
                .is_some_and(|entry| entry.generation == *generation)
        });
    }

    fn victim(&mut self, evictable: &mut dyn FnMut(&[u8]) -> bool) -> Option<PolicyKey> {
        let mut budget = self.queue.len() + 1;
        while budget > 0 {
            budget -= 1;
            let (key, generation) = self.queue.pop_front()?;
            if self
                .entries
                .get(&key)
                .is_none_or(|entry| entry.generation != generation)
            {
                continue;
            }
            if !evictable(&key) {
                self.queue.push_back((key, generation));
                continue;
            }
            self.entries.remove(&key);
            return Some(key);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn key(n: u32) -> PolicyKey {
        Arc::from(n.to_le_bytes().as_slice())
    }

    #[test]
    fn lru_evicts_the_least_recently_used() {
        let mut lru = Policy::new(PolicyKind::Lru, 100);
        for n in 0..3 {
            lru.insert(key(n), 1);
        }
        lru.access(&key(0));
        assert_eq!(lru.victim(&mut |_| true), Some(key(1)));
        assert_eq!(lru.victim(&mut |_| true), Some(key(2)));
        assert_eq!(lru.victim(&mut |_| true), Some(key(0)));
        assert_eq!(lru.victim(&mut |_| true), None);
    }

    #[test]
    fn s3fifo_keeps_keys_read_again_over_one_hit_wonders() {
        let mut policy = Policy::new(PolicyKind::S3Fifo, 100);
        policy.insert(key(0), 10);
        policy.access(&key(0));
        for n in 1..20 {
            policy.insert(key(n), 10);
        }
        let first: Vec<PolicyKey> = (0..5)
            .map(|_| policy.victim(&mut |_| true).unwrap())
            .collect();
        assert!(!first.contains(&key(0)), "the re-read key went first");
        assert_eq!(first[0], key(1));
    }

    #[test]
    fn a_key_back_from_the_ghost_queue_goes_to_main() {
        let mut s3 = S3Fifo::new(100);
        s3.insert(key(1), 10);
        assert_eq!(s3.victim(&mut |_| true), Some(key(1)));
        s3.insert(key(1), 10);
        assert!(s3.entries[&key(1)].in_main);
    }

    #[test]
    fn unevictable_keys_are_skipped_and_none_means_none_may_go() {
        for kind in [PolicyKind::S3Fifo, PolicyKind::Lru] {
            let mut policy = Policy::new(kind, 100);
            for n in 0..10 {
                policy.insert(key(n), 10);
            }
            let pinned = key(3);
            let victim = policy.victim(&mut |k| k != &pinned[..]).unwrap();
            assert_ne!(victim, pinned);
            assert_eq!(policy.victim(&mut |_| false), None, "{kind:?}");
            assert_eq!(policy.len(), 9);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever the operations, a victim is always a tracked, evictable key, never
        /// returned twice, and the policy tracks exactly the keys inserted and not removed.
        #[test]
        fn victims_are_tracked_evictable_keys(
            kind in prop_oneof![Just(PolicyKind::S3Fifo), Just(PolicyKind::Lru)],
            ops in prop::collection::vec((0u8..4, 0u32..40), 1..400),
        ) {
            let mut policy = Policy::new(kind, 200);
            let mut tracked = HashSet::new();
            for (op, n) in ops {
                let k = key(n);
                match op {
                    0 => {
                        policy.remove(&k);
                        policy.insert(Arc::clone(&k), 10);
                        tracked.insert(k);
                    }
                    1 => policy.access(&k),
                    2 => {
                        policy.remove(&k);
                        tracked.remove(&k);
                    }
                    _ => {
                        let pinned = |k: &[u8]| k[0].is_multiple_of(3);
                        if let Some(victim) = policy.victim(&mut |k| !pinned(k)) {
                            prop_assert!(tracked.remove(&victim));
                            prop_assert!(!pinned(&victim));
                        } else {
                            prop_assert!(tracked.iter().all(|k| pinned(k)));
                        }
                    }
                }
                prop_assert_eq!(policy.len(), tracked.len());
            }
        }
    }
}
