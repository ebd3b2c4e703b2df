//! The KV pool: a node's in-memory cache of KV-namespace values (the memory tier of `kv`
//! namespaces), and the RESP gateway's and KV ops' shared view of it.
//!
//! **Cache semantics.** A value is acknowledged once it is in this node's memory; nothing is
//! durable. The pool holds at most `kv_bytes` (values, keys and a fixed per-entry overhead);
//! a put that does not fit evicts unpinned, unleased values chosen by the policy
//! ([`policy`]: S3-FIFO, or LRU as the baseline) until it fits, so **a put never fails
//! because the pool is full**. Pinned values are never evicted; their total is bounded by
//! `kv_pinned_bytes_max` (a pin over it is refused), which is what keeps that promise.
//! Leased values (KV_EXISTS / KV_PREFIX_LOOKUP with a lease) are evicted only when nothing
//! else can go. Expired values (TTL) read as misses and are dropped when met.
//!
//! **Groups.** LMCache stores each chunk as `<key>kv_bytes`, then `<key>metadata`, and tests
//! existence on the metadata; a metadata key that outlives its bytes turns into a failed
//! request. So a `…metadata` key is a *member* of the `…kv_bytes` *head* with the same stem
//! (placed on the same node, see `nabu_proto::ops::kv_group_stem`): whenever a head leaves
//! the pool (evicted, expired, deleted, overwritten, corrupt) its member leaves with it, and a
//! member put while its head is absent is dropped at once.
//!
//! **Integrity.** Each value's CRC32C is computed when it is stored and checked on every read;
//! a mismatch is counted, logged, dropped and answered as a miss (never served).

pub mod ops;
pub mod policy;
pub mod route;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use nabu_proto::ops::{
    KvCondition, KvPutOutcome, KvTtlAction, KvTtlReply, kv_group_head, kv_group_member,
};

pub use policy::{Policy, PolicyKind};

/// Bytes charged per entry on top of its key and value (map slots, queue slots, bookkeeping).
pub const ENTRY_OVERHEAD_BYTES: u64 = 128;

/// Why a KV pool call failed (never because the pool is full).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// The value is larger than one value may be.
    #[error("a value of {bytes} bytes is over this node's kv_value_bytes_max of {max}")]
    ValueTooLarge {
        /// The value's length.
        bytes: u64,
        /// The limit.
        max: u64,
    },
    /// Pinning this value would pin more than `kv_pinned_bytes_max`.
    #[error(
        "pinning {bytes} more bytes would exceed kv_pinned_bytes_max ({max}); unpin some first"
    )]
    PinLimit {
        /// The bytes the pin needs.
        bytes: u64,
        /// The limit.
        max: u64,
    },
}

/// The pool's sizes and policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvPoolConfig {
    /// The most bytes the pool holds.
    pub capacity_bytes: u64,
    /// The largest value.
    pub value_bytes_max: u64,
    /// The most bytes pinned values may hold.
    pub pinned_bytes_max: u64,
    /// The eviction policy.
    pub policy: PolicyKind,
}

/// The pool's counters (read by `/metrics`).
#[derive(Debug, Default)]
pub struct KvCounters {
    /// Reads that found a value.
    pub hits: AtomicU64,
    /// Reads that found none (expired, corrupt and never-written alike).
    pub misses: AtomicU64,
    /// Values stored.
    pub puts: AtomicU64,
    /// Values evicted to make room (group members included).
    pub evictions: AtomicU64,
    /// Values dropped because they expired.
    pub expirations: AtomicU64,
    /// Values whose CRC32C did not match on read.
    pub corrupt: AtomicU64,
}

/// A point-in-time view of the pool's gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KvGauges {
    /// Bytes held (values, keys, overhead).
    pub used_bytes: u64,
    /// Bytes held by pinned entries.
    pub pinned_bytes: u64,
    /// Entries held.
    pub entries: u64,
}

#[derive(Debug)]
struct Entry {
    value: Bytes,
    crc32c: u32,
    charge: u64,
    expires_at: Option<Instant>,
    lease_until: Option<Instant>,
    pinned: bool,
    scan_id: u64,
}

impl Entry {
    fn expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    fn leased(&self, now: Instant) -> bool {
        self.lease_until.is_some_and(|until| until > now)
    }
}

#[derive(Debug)]
struct State {
    entries: HashMap<Arc<[u8]>, Entry>,
    /// Entries in insertion order, for KV_SCAN cursors.
    scan_order: BTreeMap<u64, Arc<[u8]>>,
    next_scan_id: u64,
    policy: Policy,
    used_bytes: u64,
    pinned_bytes: u64,
}

/// Why an entry leaves the pool (what is counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leaving {
    Evicted,
    Expired,
    Removed,
}

/// The KV pool. See the module docs.
#[derive(Debug)]
pub struct KvPool {
    config: KvPoolConfig,
    state: Mutex<State>,
    /// Counters.
    pub counters: KvCounters,
}

/// The pool key of `key` in `namespace`: `namespace_len u8 ‖ namespace ‖ key`.
pub fn pool_key(namespace: &str, key: &[u8]) -> Vec<u8> {
    let namespace = &namespace.as_bytes()[..namespace.len().min(255)];
    let mut out = Vec::with_capacity(1 + namespace.len() + key.len());
    out.push(namespace.len() as u8);
    out.extend_from_slice(namespace);
    out.extend_from_slice(key);
    out
}

/// The namespace bytes and key of a pool key.
fn split_pool_key(pool_key: &[u8]) -> (&[u8], &[u8]) {
    let namespace_len = usize::from(pool_key[0]);
    pool_key[1..].split_at(namespace_len)
}

fn charge(key: &[u8], value: &Bytes) -> u64 {
    key.len() as u64 + value.len() as u64 + ENTRY_OVERHEAD_BYTES
}

impl KvPool {
    /// An empty pool.
    pub fn new(config: KvPoolConfig) -> Self {
        Self {
            state: Mutex::new(State {
                entries: HashMap::new(),
                scan_order: BTreeMap::new(),
                next_scan_id: 1,
                policy: Policy::new(config.policy, config.capacity_bytes),
                used_bytes: 0,
                pinned_bytes: 0,
            }),
            config,
            counters: KvCounters::default(),
        }
    }

    /// The pool's configuration.
    pub fn config(&self) -> KvPoolConfig {
        self.config
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a bug; the state stays consistent between calls.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The gauges now.
    pub fn gauges(&self) -> KvGauges {
        let state = self.state();
        KvGauges {
            used_bytes: state.used_bytes,
            pinned_bytes: state.pinned_bytes,
            entries: state.entries.len() as u64,
        }
    }

    /// Stores `value` under `key` in `namespace`; see the module docs for eviction and groups.
    pub fn put(
        &self,
        namespace: &str,
        key: &[u8],
        value: Bytes,
        ttl: Option<Duration>,
        pin: bool,
        condition: KvCondition,
    ) -> Result<KvPutOutcome, KvError> {
        let max = self.config.value_bytes_max;
        if value.len() as u64 > max {
            return Err(KvError::ValueTooLarge {
                bytes: value.len() as u64,
                max,
            });
        }
        let crc32c = nabu_client::value_crc32c(&value);
        let pool_key: Arc<[u8]> = Arc::from(pool_key(namespace, key));
        let now = Instant::now();
        let mut state = self.state();
        let exists = state
            .entries
            .get(&pool_key)
            .is_some_and(|entry| !entry.expired(now));
        let condition_holds = match condition {
            KvCondition::Always => true,
            KvCondition::IfAbsent => !exists,
            KvCondition::IfPresent => exists,
        };
        if !condition_holds {
            return Ok(KvPutOutcome::ConditionFailed);
        }
        let charge = charge(&pool_key, &value);
        if pin {
            let already = state
                .entries
                .get(&pool_key)
                .filter(|e| e.pinned)
                .map_or(0, |e| e.charge);
            let pinned_after = state.pinned_bytes - already + charge;
            if pinned_after > self.config.pinned_bytes_max {
                return Err(KvError::PinLimit {
                    bytes: charge,
                    max: self.config.pinned_bytes_max,
                });
            }
        }
        // Overwriting a head drops its member: the old metadata describes the old bytes.
        self.remove_locked(&mut state, &pool_key, Leaving::Removed);
        if let Some(head) = kv_group_head(key) {
            let head = self::pool_key(namespace, &head);
            if state
                .entries
                .get(&head[..])
                .is_none_or(|entry| entry.expired(now))
            {
                return Ok(KvPutOutcome::Dropped);
            }
        }
        self.make_room(&mut state, charge, now);
        let scan_id = state.next_scan_id;
        state.next_scan_id += 1;
        state.scan_order.insert(scan_id, Arc::clone(&pool_key));
        state.used_bytes += charge;
        if pin {
            state.pinned_bytes += charge;
        }
        state.policy.insert(Arc::clone(&pool_key), charge);
        state.entries.insert(
            pool_key,
            Entry {
                value,
                crc32c,
                charge,
                expires_at: ttl.map(|ttl| now + ttl),
                lease_until: None,
                pinned: pin,
                scan_id,
            },
        );
        self.counters.puts.fetch_add(1, Ordering::Relaxed);
        Ok(KvPutOutcome::Stored)
    }

    /// Evicts until `charge` more bytes fit: first what the policy picks among unpinned,
    /// unleased entries, then (only if nothing else can go) leased ones. Pinned bytes are at
    /// most `pinned_bytes_max` and a value at most `value_bytes_max`, and the config checks
    /// that both fit the capacity together, so this always makes room.
    fn make_room(&self, state: &mut State, charge: u64, now: Instant) {
        let capacity = self.config.capacity_bytes;
        let mut respect_leases = true;
        while state.used_bytes + charge > capacity {
            let entries = &state.entries;
            let mut evictable = |key: &[u8]| {
                entries.get(key).is_some_and(|entry| {
                    !entry.pinned && (entry.expired(now) || !respect_leases || !entry.leased(now))
                })
            };
            match state.policy.victim(&mut evictable) {
                Some(victim) => {
                    let expired = state.entries.get(&victim).is_some_and(|e| e.expired(now));
                    let leaving = if expired {
                        Leaving::Expired
                    } else {
                        Leaving::Evicted
                    };
                    self.drop_entry(state, &victim, leaving);
                }
                None if respect_leases => respect_leases = false,
                None => {
                    tracing::error!(
                        used = state.used_bytes,
                        charge,
                        capacity,
                        "the KV pool found nothing to evict; storing over capacity"
                    );
                    return;
                }
            }
        }
    }

    /// Removes `pool_key` (already out of the policy or not) and, for a head, its member.
    fn drop_entry(&self, state: &mut State, pool_key: &[u8], leaving: Leaving) -> bool {
        let Some(entry) = state.entries.remove(pool_key) else {
            return false;
        };
        state.policy.remove(pool_key);
        state.scan_order.remove(&entry.scan_id);
        state.used_bytes -= entry.charge;
        if entry.pinned {
            state.pinned_bytes -= entry.charge;
        }
        let counter = match leaving {
            Leaving::Evicted => Some(&self.counters.evictions),
            Leaving::Expired => Some(&self.counters.expirations),
            Leaving::Removed => None,
        };
        if let Some(counter) = counter {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        let (namespace, key) = split_pool_key(pool_key);
        if let Some(member) = kv_group_member(key) {
            let mut member_key = Vec::with_capacity(1 + namespace.len() + member.len());
            member_key.push(namespace.len() as u8);
            member_key.extend_from_slice(namespace);
            member_key.extend_from_slice(&member);
            let member_leaving = if leaving == Leaving::Removed {
                Leaving::Removed
            } else {
                Leaving::Evicted
            };
            self.drop_entry(state, &member_key, member_leaving);
        }
        true
    }

    fn remove_locked(&self, state: &mut State, pool_key: &[u8], leaving: Leaving) -> bool {
        self.drop_entry(state, pool_key, leaving)
    }

    /// Reads one value: `Some((value, crc32c))` on a hit. The CRC is checked before the value
    /// is returned (outside the lock).
    pub fn get(&self, namespace: &str, key: &[u8]) -> Option<(Bytes, u32)> {
        let pool_key = pool_key(namespace, key);
        let now = Instant::now();
        let found = {
            let mut state = self.state();
            match state.entries.get(&pool_key[..]) {
                Some(entry) if entry.expired(now) => {
                    self.drop_entry(&mut state, &pool_key, Leaving::Expired);
                    None
                }
                Some(entry) => {
                    let found = (entry.value.clone(), entry.crc32c);
                    state.policy.access(&pool_key);
                    Some(found)
                }
                None => None,
            }
        };
        let Some((value, crc)) = found else {
            self.counters.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let computed = nabu_client::value_crc32c(&value);
        if computed != crc {
            self.counters.corrupt.fetch_add(1, Ordering::Relaxed);
            self.counters.misses.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                namespace,
                key_bytes = key.len(),
                stored = crc,
                computed,
                "a KV value failed its CRC32C; dropped and answered as a miss"
            );
            let mut state = self.state();
            let same = state
                .entries
                .get(&pool_key[..])
                .is_some_and(|e| e.crc32c == crc && e.value.as_ptr() == value.as_ptr());
            if same {
                self.drop_entry(&mut state, &pool_key, Leaving::Removed);
            }
            return None;
        }
        self.counters.hits.fetch_add(1, Ordering::Relaxed);
        Some((value, crc))
    }

    /// Which keys hold a live value; with a lease, each existing key is leased until
    /// `now + lease` (a longer lease already held is kept). A group member exists only with
    /// its head.
    pub fn exists(&self, namespace: &str, keys: &[Vec<u8>], lease: Option<Duration>) -> Vec<bool> {
        let now = Instant::now();
        let mut state = self.state();
        keys.iter()
            .map(|key| {
                let pool_key = pool_key(namespace, key);
                let live = self.live(&mut state, &pool_key, now)
                    && kv_group_head(key).is_none_or(|head| {
                        self.live(&mut state, &self::pool_key(namespace, &head), now)
                    });
                if live
                    && let Some(lease) = lease
                    && let Some(entry) = state.entries.get_mut(&pool_key[..])
                {
                    let until = now + lease;
                    entry.lease_until = Some(entry.lease_until.map_or(until, |old| old.max(until)));
                }
                live
            })
            .collect()
    }

    /// Whether `pool_key` holds a live value (dropping it if it expired).
    fn live(&self, state: &mut State, pool_key: &[u8], now: Instant) -> bool {
        match state.entries.get(pool_key) {
            Some(entry) if entry.expired(now) => {
                self.drop_entry(state, pool_key, Leaving::Expired);
                false
            }
            Some(_) => true,
            None => false,
        }
    }

    /// Deletes keys; returns how many distinct keys held a live value when the call began (a
    /// group member deleted with its head still counts).
    pub fn delete(&self, namespace: &str, keys: &[Vec<u8>]) -> u32 {
        let now = Instant::now();
        let mut state = self.state();
        let mut pool_keys: Vec<Vec<u8>> = keys.iter().map(|key| pool_key(namespace, key)).collect();
        pool_keys.sort();
        pool_keys.dedup();
        let live: Vec<bool> = pool_keys
            .iter()
            .map(|pool_key| self.live(&mut state, pool_key, now))
            .collect();
        for (pool_key, live) in pool_keys.iter().zip(&live) {
            if *live {
                self.drop_entry(&mut state, pool_key, Leaving::Removed);
            }
        }
        live.iter().filter(|live| **live).count() as u32
    }

    /// Pins or unpins existing keys; returns how many existed. A pin over
    /// `kv_pinned_bytes_max` is refused whole.
    pub fn pin(&self, namespace: &str, keys: &[Vec<u8>], pinned: bool) -> Result<u32, KvError> {
        let now = Instant::now();
        let mut state = self.state();
        let pool_keys: Vec<Vec<u8>> = keys.iter().map(|key| pool_key(namespace, key)).collect();
        if pinned {
            let more: u64 = pool_keys
                .iter()
                .filter_map(|key| state.entries.get(&key[..]))
                .filter(|entry| !entry.pinned && !entry.expired(now))
                .map(|entry| entry.charge)
                .sum();
            if state.pinned_bytes + more > self.config.pinned_bytes_max {
                return Err(KvError::PinLimit {
                    bytes: more,
                    max: self.config.pinned_bytes_max,
                });
            }
        }
        let mut changed = 0;
        for pool_key in &pool_keys {
            if !self.live(&mut state, pool_key, now) {
                continue;
            }
            let State {
                entries,
                pinned_bytes,
                ..
            } = &mut *state;
            if let Some(entry) = entries.get_mut(&pool_key[..]) {
                changed += 1;
                if entry.pinned != pinned {
                    entry.pinned = pinned;
                    if pinned {
                        *pinned_bytes += entry.charge;
                    } else {
                        *pinned_bytes -= entry.charge;
                    }
                }
            }
        }
        Ok(changed)
    }

    /// Reads or changes one key's time to live.
    pub fn ttl(
        &self,
        namespace: &str,
        key: &[u8],
        action: KvTtlAction,
        ttl: Duration,
    ) -> KvTtlReply {
        let now = Instant::now();
        let pool_key = pool_key(namespace, key);
        let mut state = self.state();
        if !self.live(&mut state, &pool_key, now) {
            return KvTtlReply {
                exists: false,
                has_ttl: false,
                ttl_ms: 0,
            };
        }
        if action == KvTtlAction::Set && ttl.is_zero() {
            self.drop_entry(&mut state, &pool_key, Leaving::Removed);
            return KvTtlReply {
                exists: false,
                has_ttl: false,
                ttl_ms: 0,
            };
        }
        let Some(entry) = state.entries.get_mut(&pool_key[..]) else {
            return KvTtlReply {
                exists: false,
                has_ttl: false,
                ttl_ms: 0,
            };
        };
        match action {
            KvTtlAction::Read => {}
            KvTtlAction::Set => entry.expires_at = Some(now + ttl),
            KvTtlAction::Persist => entry.expires_at = None,
        }
        match entry.expires_at {
            Some(at) => KvTtlReply {
                exists: true,
                has_ttl: true,
                ttl_ms: at.saturating_duration_since(now).as_millis() as u64,
            },
            None => KvTtlReply {
                exists: true,
                has_ttl: false,
                ttl_ms: 0,
            },
        }
    }

    /// One page of keys in `namespace` after `cursor` (0: from the start), at most `count`:
    /// `(keys, next_cursor (0 when done), keys_total)`. Keys held for the whole scan are
    /// returned at least once; a key overwritten meanwhile may be returned twice.
    pub fn scan(&self, namespace: &str, cursor: u64, count: u32) -> (Vec<Vec<u8>>, u64, u64) {
        let state = self.state();
        let prefix = pool_key(namespace, b"");
        let in_namespace = |key: &Arc<[u8]>| key.starts_with(&prefix);
        let keys_total = state.entries.keys().filter(|key| in_namespace(key)).count() as u64;
        let mut keys = Vec::new();
        let mut next_cursor = 0;
        for (&scan_id, key) in state.scan_order.range(cursor.max(1)..) {
            if keys.len() as u32 >= count {
                next_cursor = scan_id;
                break;
            }
            if in_namespace(key) {
                keys.push(key[prefix.len()..].to_vec());
            }
        }
        (keys, next_cursor, keys_total)
    }
}

#[cfg(test)]
mod tests;

/// Appends the KV pool's and the RESP gateway's metrics (Prometheus text) to `out`.
pub fn render_metrics(node: &crate::node::Node, out: &mut String) {
    use std::fmt::Write;
    let gauges = node.kv.gauges();
    let counters = &node.kv.counters;
    let resp = &node.resp_metrics;
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    let families = [
        (
            "nabu_kv_capacity_bytes",
            "gauge",
            "The KV pool's capacity (kv_bytes).",
            node.kv.config().capacity_bytes,
        ),
        (
            "nabu_kv_used_bytes",
            "gauge",
            "Bytes held by the KV pool (values, keys, overhead).",
            gauges.used_bytes,
        ),
        (
            "nabu_kv_pinned_bytes",
            "gauge",
            "Bytes held by pinned KV entries.",
            gauges.pinned_bytes,
        ),
        (
            "nabu_kv_entries",
            "gauge",
            "KV entries held.",
            gauges.entries,
        ),
        (
            "nabu_kv_hits_total",
            "counter",
            "KV reads that found a value.",
            load(&counters.hits),
        ),
        (
            "nabu_kv_misses_total",
            "counter",
            "KV reads that found none.",
            load(&counters.misses),
        ),
        (
            "nabu_kv_puts_total",
            "counter",
            "KV values stored.",
            load(&counters.puts),
        ),
        (
            "nabu_kv_evictions_total",
            "counter",
            "KV values evicted to make room (group members included).",
            load(&counters.evictions),
        ),
        (
            "nabu_kv_expirations_total",
            "counter",
            "KV values dropped because their TTL passed.",
            load(&counters.expirations),
        ),
        (
            "nabu_kv_corrupt_total",
            "counter",
            "KV values that failed their CRC32C on read (dropped, never served).",
            load(&counters.corrupt),
        ),
        (
            "nabu_resp_connections_open",
            "gauge",
            "RESP connections open now.",
            load(&resp.connections_open),
        ),
        (
            "nabu_resp_connections_total",
            "counter",
            "RESP connections accepted.",
            load(&resp.connections_total),
        ),
        (
            "nabu_resp_commands_total",
            "counter",
            "RESP commands answered.",
            load(&resp.commands_total),
        ),
        (
            "nabu_resp_errors_total",
            "counter",
            "RESP commands answered with an error.",
            load(&resp.errors_total),
        ),
        (
            "nabu_resp_auth_failures_total",
            "counter",
            "RESP AUTH or HELLO AUTH attempts with a wrong password.",
            load(&resp.auth_failures_total),
        ),
        (
            "nabu_resp_protocol_errors_total",
            "counter",
            "RESP connections closed for malformed input.",
            load(&resp.protocol_errors_total),
        ),
    ];
    for (name, kind, help, value) in families {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name} {value}");
    }
}
