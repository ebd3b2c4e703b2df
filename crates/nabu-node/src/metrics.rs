//! The node's counters and their Prometheus text rendering.
//!
//! **Why hand-written rather than `prometheus-client`.** The metric set is small and fixed
//! (every label value is known up front: ops, error codes, planes, member ids), so each
//! counter is one relaxed atomic in a flat array — no registry, no locks, no allocation on
//! the request path — and rendering is one function that writes the text format (version
//! 0.0.4: `# HELP`, `# TYPE`, `name{labels} value`). A crate would add a dependency and
//! dynamic label maps for no gain; the test parses the output to keep the format honest.
//!
//! **Latency histograms.** Each op class ([`OpClass`]) has a [`LatencyHistogram`]: fixed
//! log-scale buckets (four per power of two of microseconds, so a reported quantile is within
//! 25% of the truth) of relaxed atomics, recorded once per answered request. Readers take
//! cumulative snapshots and subtract two of them for a window's quantiles
//! ([`quantile_us`]); `/metrics` renders them as a Prometheus histogram with one bucket
//! boundary per power of two.
//!
//! **Per-peer traffic.** The peer plane's bytes are also counted per member (the member a
//! connection's HELLO names): bytes in and out of each peer-plane link, as the server side of
//! that link sees them. Each peer-plane byte is counted once, by the node that accepted the
//! connection, so a link's traffic is the sum of both ends' counters for each other.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use nabu_proto::ops::Plane;
use nabu_proto::{ErrorCode, Op};

/// Outcome label values: `ok`, then one per error code (index = code), then `other`.
const OUTCOMES: usize = 18;

/// The counters of one plane (data or peer).
#[derive(Debug, Default)]
pub struct PlaneCounters {
    /// Connections open now.
    pub connections_open: AtomicI64,
    /// Connections accepted since start.
    pub connections_total: AtomicU64,
    /// Connections refused at `connections_max`.
    pub connections_refused_total: AtomicU64,
    /// Connections closed for a failed HELLO.
    pub unauthenticated_total: AtomicU64,
    /// Request and DATA frame body bytes received.
    pub bytes_in_total: AtomicU64,
    /// Response and DATA frame body bytes sent.
    pub bytes_out_total: AtomicU64,
}

/// Every counter of a node.
#[derive(Debug)]
pub struct Metrics {
    /// `[op index][outcome]`: requests answered.
    requests: Vec<[AtomicU64; OUTCOMES]>,
    /// The data plane's counters.
    pub data: PlaneCounters,
    /// The peer plane's counters.
    pub peer: PlaneCounters,
    /// Requests in flight over all connections.
    pub requests_inflight: AtomicI64,
    /// Distinct shards found corrupt on read.
    pub corrupt_shards_total: AtomicU64,
    /// Reads refused because the stored bytes failed a checksum.
    pub corrupt_reads_total: AtomicU64,
    /// Shards held (maintained on put and delete; counted at start-up).
    pub shards: AtomicI64,
    /// Handoff hints completed: the shard is on its home node and gone from here.
    pub hints_replayed_total: AtomicU64,
    /// Repair hints completed: a missing shard was rebuilt and put on its home node.
    pub shards_repaired_total: AtomicU64,
    /// Hints ended without moving anything (home already had the shard, holds another shard
    /// of the stripe, or the local copy is gone).
    pub hints_dropped_total: AtomicU64,
    /// Shard bytes sent to home nodes by hint replay.
    pub hint_bytes_moved_total: AtomicU64,
    /// The scrubber's counters.
    pub scrub: crate::scrub::ScrubCounters,
    /// Members not heard from for `repair_after_ms`.
    pub members_lost: AtomicU64,
    /// 1 while this node's etcd session is up (registered and watching; `membership = "etcd"`).
    pub etcd_connected: AtomicU64,
    /// Maintenance passes (rebalancing, re-protection) this node coordinated.
    pub maintenance_passes_total: AtomicU64,
    /// 1 while this node coordinates a maintenance pass.
    pub maintenance_running: AtomicU64,
    /// Stripes those passes wrote back to full redundancy.
    pub reprotect_stripes_repaired_total: AtomicU64,
    /// Shards those passes moved to their placement after a membership change.
    pub rebalance_shards_moved_total: AtomicU64,
    /// Bytes of those shards.
    pub rebalance_bytes_moved_total: AtomicU64,
    /// Shards the running rebalance still has to move: counted by a check before it starts,
    /// less those moved since (0 when idle).
    pub rebalance_shards_pending: AtomicU64,
    /// Bytes of those shards.
    pub rebalance_bytes_pending: AtomicU64,
    /// Degraded stripes the running re-protection still has to write back (0 when idle).
    pub reprotect_stripes_pending: AtomicU64,
    /// Request latency, one histogram per [`OpClass`] (indexed by [`OpClass::index`]).
    latency: [LatencyHistogram; OpClass::ALL.len()],
    /// Peer-plane bytes per member, in the order members first connected; at most
    /// [`PEER_COUNTERS_MAX`].
    peers: RwLock<Vec<Arc<PeerCounters>>>,
}

/// The most members whose peer-plane traffic is counted apart (the member list is far
/// smaller; the bound keeps HELLOs naming ever new ids from growing the table).
pub const PEER_COUNTERS_MAX: usize = 4096;

/// Peer-plane traffic with one member.
#[derive(Debug)]
pub struct PeerCounters {
    /// The member's id.
    pub member: u32,
    /// Frame body bytes received from it.
    pub bytes_in_total: AtomicU64,
    /// Frame body bytes sent to it.
    pub bytes_out_total: AtomicU64,
}

/// Whose counters a connection's bytes go to: its plane's, and on the peer plane the
/// member's once its HELLO has named it.
#[derive(Debug, Clone)]
pub struct Traffic {
    /// The plane.
    pub plane: Plane,
    /// The peer member's counters, if known.
    pub peer: Option<Arc<PeerCounters>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Op::ALL
                .iter()
                .map(|_| std::array::from_fn(|_| AtomicU64::new(0)))
                .collect(),
            data: PlaneCounters::default(),
            peer: PlaneCounters::default(),
            requests_inflight: AtomicI64::new(0),
            corrupt_shards_total: AtomicU64::new(0),
            corrupt_reads_total: AtomicU64::new(0),
            shards: AtomicI64::new(0),
            hints_replayed_total: AtomicU64::new(0),
            shards_repaired_total: AtomicU64::new(0),
            hints_dropped_total: AtomicU64::new(0),
            hint_bytes_moved_total: AtomicU64::new(0),
            scrub: crate::scrub::ScrubCounters::default(),
            members_lost: AtomicU64::new(0),
            etcd_connected: AtomicU64::new(0),
            maintenance_passes_total: AtomicU64::new(0),
            maintenance_running: AtomicU64::new(0),
            reprotect_stripes_repaired_total: AtomicU64::new(0),
            rebalance_shards_moved_total: AtomicU64::new(0),
            rebalance_bytes_moved_total: AtomicU64::new(0),
            rebalance_shards_pending: AtomicU64::new(0),
            rebalance_bytes_pending: AtomicU64::new(0),
            reprotect_stripes_pending: AtomicU64::new(0),
            latency: std::array::from_fn(|_| LatencyHistogram::default()),
            peers: RwLock::new(Vec::new()),
        }
    }
}

fn outcome_index(outcome: Option<ErrorCode>) -> usize {
    match outcome {
        None => 0,
        Some(code) if (1..OUTCOMES as u16 - 1).contains(&code.as_u16()) => {
            usize::from(code.as_u16())
        }
        Some(_) => OUTCOMES - 1,
    }
}

fn outcome_label(index: usize) -> &'static str {
    match index {
        0 => "ok",
        i if i == OUTCOMES - 1 => "other",
        i => ErrorCode::from_u16(i as u16).name(),
    }
}

/// Gauges read from elsewhere at render time.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// `(member id, up)` for every member.
    pub members: Vec<(u32, bool)>,
    /// The chunk store's counters.
    pub store: Option<nabu_store::StoreStats>,
    /// Meta entries (values and tombstones) held.
    pub meta_entries: u64,
    /// Hints kept, not yet replayed.
    pub hints_pending: u64,
    /// Bytes the data dirs' filesystems can hold.
    pub bytes_capacity: u64,
    /// Seconds since start.
    pub uptime_s: u64,
    /// The ring epoch of the member list this node runs on.
    pub ring_epoch: u64,
}

impl Metrics {
    /// The counters of `plane`.
    pub fn plane(&self, plane: Plane) -> &PlaneCounters {
        match plane {
            Plane::Data => &self.data,
            Plane::Peer => &self.peer,
        }
    }

    /// Counts one answered request of `op`: `None` for success, else the error's code.
    pub fn count_request(&self, op: Op, outcome: Option<ErrorCode>) {
        let op_index = Op::ALL.iter().position(|&o| o == op).unwrap_or(0);
        self.requests[op_index][outcome_index(outcome)].fetch_add(1, Ordering::Relaxed);
    }

    /// Requests answered since start, every op and outcome together.
    pub fn requests_total(&self) -> u64 {
        self.requests
            .iter()
            .flatten()
            .map(|counter| counter.load(Ordering::Relaxed))
            .sum()
    }

    /// Records how long a request of `op` took, from its last byte in to its reply queued.
    pub fn record_latency(&self, op: Op, elapsed: Duration) {
        self.latency[OpClass::of(op).index()].record(elapsed);
    }

    /// The latency histogram of `class`.
    pub fn latency(&self, class: OpClass) -> &LatencyHistogram {
        &self.latency[class.index()]
    }

    /// Peer-plane traffic per member that has connected, in the order they first did.
    pub fn peers(&self) -> Vec<Arc<PeerCounters>> {
        self.peers
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The counters of member `member`'s peer-plane traffic (made on its first connection;
    /// `None` past [`PEER_COUNTERS_MAX`] members).
    pub fn peer(&self, member: u32) -> Option<Arc<PeerCounters>> {
        let mut peers = self
            .peers
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(peer) = peers.iter().find(|peer| peer.member == member) {
            return Some(Arc::clone(peer));
        }
        if peers.len() >= PEER_COUNTERS_MAX {
            return None;
        }
        let peer = Arc::new(PeerCounters {
            member,
            bytes_in_total: AtomicU64::new(0),
            bytes_out_total: AtomicU64::new(0),
        });
        peers.push(Arc::clone(&peer));
        Some(peer)
    }

    /// Counts `bytes` of frame bodies received on a connection.
    pub fn count_bytes_in(&self, traffic: &Traffic, bytes: u64) {
        let plane = self.plane(traffic.plane);
        plane.bytes_in_total.fetch_add(bytes, Ordering::Relaxed);
        if let Some(peer) = &traffic.peer {
            peer.bytes_in_total.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// Counts `bytes` of frame bodies sent on a connection.
    pub fn count_bytes_out(&self, traffic: &Traffic, bytes: u64) {
        let plane = self.plane(traffic.plane);
        plane.bytes_out_total.fetch_add(bytes, Ordering::Relaxed);
        if let Some(peer) = &traffic.peer {
            peer.bytes_out_total.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        let mut out = String::with_capacity(8192);
        self.render_requests(&mut out);
        self.render_planes(&mut out);
        let load = |value: &AtomicI64| value.load(Ordering::Relaxed).max(0) as u64;
        let simple = [
            (
                "nabu_requests_inflight",
                "gauge",
                "Requests in flight over all connections.",
                load(&self.requests_inflight),
            ),
            (
                "nabu_shards",
                "gauge",
                "Shards held by this node.",
                load(&self.shards),
            ),
            (
                "nabu_ring_epoch",
                "gauge",
                "The ring epoch of the member list this node runs on.",
                snapshot.ring_epoch,
            ),
            (
                "nabu_corrupt_shards_total",
                "counter",
                "Distinct shards found corrupt on read.",
                self.corrupt_shards_total.load(Ordering::Relaxed),
            ),
            (
                "nabu_corrupt_reads_total",
                "counter",
                "Reads refused because stored bytes failed a checksum.",
                self.corrupt_reads_total.load(Ordering::Relaxed),
            ),
            (
                "nabu_hints_pending",
                "gauge",
                "Hints kept: shards to move or rebuild on a node that was down.",
                snapshot.hints_pending,
            ),
            (
                "nabu_hints_replayed_total",
                "counter",
                "Handed-off shards moved to their home node.",
                self.hints_replayed_total.load(Ordering::Relaxed),
            ),
            (
                "nabu_shards_repaired_total",
                "counter",
                "Missing shards rebuilt and put on their home node.",
                self.shards_repaired_total.load(Ordering::Relaxed),
            ),
            (
                "nabu_hints_dropped_total",
                "counter",
                "Hints ended with nothing to move (already home, conflicting, or gone).",
                self.hints_dropped_total.load(Ordering::Relaxed),
            ),
            (
                "nabu_hint_bytes_moved_total",
                "counter",
                "Shard bytes sent to home nodes by hint replay.",
                self.hint_bytes_moved_total.load(Ordering::Relaxed),
            ),
            (
                "nabu_members_lost",
                "gauge",
                "Members not heard from for repair_after_ms.",
                self.members_lost.load(Ordering::Relaxed),
            ),
            (
                "nabu_etcd_connected",
                "gauge",
                "1 while the node is registered in etcd and watching the member list.",
                self.etcd_connected.load(Ordering::Relaxed),
            ),
            (
                "nabu_maintenance_passes_total",
                "counter",
                "Maintenance passes (rebalancing, re-protection) this node coordinated.",
                self.maintenance_passes_total.load(Ordering::Relaxed),
            ),
            (
                "nabu_maintenance_running",
                "gauge",
                "1 while this node coordinates a maintenance pass.",
                self.maintenance_running.load(Ordering::Relaxed),
            ),
            (
                "nabu_reprotect_stripes_repaired_total",
                "counter",
                "Stripes written back to full redundancy after members were lost.",
                self.reprotect_stripes_repaired_total
                    .load(Ordering::Relaxed),
            ),
            (
                "nabu_rebalance_shards_moved_total",
                "counter",
                "Shards moved to their placement after membership changes.",
                self.rebalance_shards_moved_total.load(Ordering::Relaxed),
            ),
            (
                "nabu_rebalance_bytes_moved_total",
                "counter",
                "Bytes of shards moved to their placement after membership changes.",
                self.rebalance_bytes_moved_total.load(Ordering::Relaxed),
            ),
            (
                "nabu_rebalance_shards_pending",
                "gauge",
                "Shards the running rebalance still has to move to their placement.",
                self.rebalance_shards_pending.load(Ordering::Relaxed),
            ),
            (
                "nabu_rebalance_bytes_pending",
                "gauge",
                "Bytes the running rebalance still has to move to their placement.",
                self.rebalance_bytes_pending.load(Ordering::Relaxed),
            ),
            (
                "nabu_reprotect_stripes_pending",
                "gauge",
                "Degraded stripes the running re-protection still has to write back.",
                self.reprotect_stripes_pending.load(Ordering::Relaxed),
            ),
            (
                "nabu_meta_entries",
                "gauge",
                "Key records and manifests (tombstones included) held.",
                snapshot.meta_entries,
            ),
            (
                "nabu_bytes_capacity",
                "gauge",
                "Bytes the data dirs' filesystems can hold.",
                snapshot.bytes_capacity,
            ),
            (
                "nabu_uptime_seconds",
                "gauge",
                "Seconds since the node started.",
                snapshot.uptime_s,
            ),
        ];
        for (name, kind, help, value) in simple {
            family(&mut out, name, kind, help);
            let _ = writeln!(out, "{name} {value}");
        }
        for (name, kind, help, value) in self.scrub.families() {
            family(&mut out, name, kind, help);
            let _ = writeln!(out, "{name} {value}");
        }
        render_members(&mut out, &snapshot.members);
        self.render_peers(&mut out);
        self.render_latency(&mut out);
        if let Some(store) = &snapshot.store {
            render_store(&mut out, store);
        }
        out
    }

    fn render_requests(&self, out: &mut String) {
        family(
            out,
            "nabu_requests_total",
            "counter",
            "Requests answered, by op and outcome (ok or the error code).",
        );
        for (op, row) in Op::ALL.iter().zip(&self.requests) {
            for (index, counter) in row.iter().enumerate() {
                let value = counter.load(Ordering::Relaxed);
                if value > 0 || index == 0 {
                    let outcome = outcome_label(index);
                    let _ = writeln!(
                        out,
                        "nabu_requests_total{{op=\"{op}\",outcome=\"{outcome}\"}} {value}"
                    );
                }
            }
        }
    }

    fn render_planes(&self, out: &mut String) {
        type Field = fn(&PlaneCounters) -> u64;
        let families: [(&str, &str, &str, Field); 6] = [
            (
                "nabu_connections_open",
                "gauge",
                "Connections open now.",
                |p| p.connections_open.load(Ordering::Relaxed).max(0) as u64,
            ),
            (
                "nabu_connections_total",
                "counter",
                "Connections accepted.",
                |p| p.connections_total.load(Ordering::Relaxed),
            ),
            (
                "nabu_connections_refused_total",
                "counter",
                "Connections refused at connections_max.",
                |p| p.connections_refused_total.load(Ordering::Relaxed),
            ),
            (
                "nabu_unauthenticated_total",
                "counter",
                "Connections closed for a missing or wrong HELLO.",
                |p| p.unauthenticated_total.load(Ordering::Relaxed),
            ),
            (
                "nabu_bytes_in_total",
                "counter",
                "Frame body bytes received.",
                |p| p.bytes_in_total.load(Ordering::Relaxed),
            ),
            (
                "nabu_bytes_out_total",
                "counter",
                "Frame body bytes sent.",
                |p| p.bytes_out_total.load(Ordering::Relaxed),
            ),
        ];
        for (name, kind, help, field) in families {
            family(out, name, kind, help);
            for (plane, counters) in [("data", &self.data), ("peer", &self.peer)] {
                let _ = writeln!(out, "{name}{{plane=\"{plane}\"}} {}", field(counters));
            }
        }
    }
}

impl Metrics {
    fn render_peers(&self, out: &mut String) {
        type Field = fn(&PeerCounters) -> &AtomicU64;
        let families: [(&str, &str, Field); 2] = [
            (
                "nabu_peer_bytes_in_total",
                "Peer-plane frame body bytes received from each member (server side).",
                |p| &p.bytes_in_total,
            ),
            (
                "nabu_peer_bytes_out_total",
                "Peer-plane frame body bytes sent to each member (server side).",
                |p| &p.bytes_out_total,
            ),
        ];
        for (name, help, field) in families {
            family(out, name, "counter", help);
            for peer in &self.peers() {
                let value = field(peer).load(Ordering::Relaxed);
                let _ = writeln!(out, "{name}{{member=\"{}\"}} {value}", peer.member);
            }
        }
    }

    fn render_latency(&self, out: &mut String) {
        let name = "nabu_request_duration_seconds";
        family(
            out,
            name,
            "histogram",
            "Request latency by op class, from the request's last byte to its reply queued.",
        );
        for class in OpClass::ALL {
            let histogram = self.latency(class);
            let counts = histogram.counts();
            let class = class.name();
            let mut cumulative = 0;
            // One boundary per power of two: the first bucket of each octave starts there.
            for (octave, chunk) in counts[1..].chunks(LATENCY_SUBBUCKETS).enumerate() {
                cumulative += chunk.iter().sum::<u64>();
                let le_seconds = (1u64 << (octave + 1)) as f64 / 1e6;
                let _ = writeln!(
                    out,
                    "{name}_bucket{{class=\"{class}\",le=\"{le_seconds}\"}} {}",
                    cumulative + counts[0]
                );
            }
            let total: u64 = counts.iter().sum();
            let sum_seconds = histogram.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(
                out,
                "{name}_bucket{{class=\"{class}\",le=\"+Inf\"}} {total}"
            );
            let _ = writeln!(out, "{name}_sum{{class=\"{class}\"}} {sum_seconds}");
            let _ = writeln!(out, "{name}_count{{class=\"{class}\"}} {total}");
        }
    }
}

/// Op classes that get a latency histogram each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpClass {
    /// Shard and metadata reads and listings.
    Read,
    /// Shard and metadata writes and deletes, hints, garbage-collection sweeps.
    Write,
    /// KV pool ops.
    Kv,
    /// HELLO, PING, NODE_STATUS, MEMBERS_GET/PUT.
    Control,
}

impl OpClass {
    /// Every class, in index order.
    pub const ALL: [OpClass; 4] = [OpClass::Read, OpClass::Write, OpClass::Kv, OpClass::Control];

    /// The class of `op`.
    pub fn of(op: Op) -> Self {
        match op {
            Op::ShardGet
            | Op::ShardStat
            | Op::ShardList
            | Op::MetaGet
            | Op::MetaList
            | Op::MetaNamespaces => OpClass::Read,
            Op::ShardPut
            | Op::ShardDelete
            | Op::MetaPut
            | Op::MetaDelete
            | Op::HintPut
            | Op::GcSweep => OpClass::Write,
            Op::KvPut
            | Op::KvGet
            | Op::KvDelete
            | Op::KvExists
            | Op::KvPrefixLookup
            | Op::KvTtl
            | Op::KvScan
            | Op::KvPin => OpClass::Kv,
            Op::Hello | Op::Ping | Op::NodeStatus | Op::MembersGet | Op::MembersPut => {
                OpClass::Control
            }
        }
    }

    /// Its position in [`OpClass::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Its label (`read`, `write`, `kv`, `control`).
    pub fn name(self) -> &'static str {
        match self {
            OpClass::Read => "read",
            OpClass::Write => "write",
            OpClass::Kv => "kv",
            OpClass::Control => "control",
        }
    }
}

/// Sub-buckets per power of two in a [`LatencyHistogram`].
pub const LATENCY_SUBBUCKETS: usize = 4;
/// Powers of two a [`LatencyHistogram`] covers: 1 µs to 2^36 µs (19 hours).
const LATENCY_OCTAVES: usize = 36;
/// Buckets of a [`LatencyHistogram`]: one for 0 µs, then [`LATENCY_SUBBUCKETS`] per octave.
pub const LATENCY_BUCKETS: usize = 1 + LATENCY_OCTAVES * LATENCY_SUBBUCKETS;

/// A fixed-bucket log-scale histogram of microseconds. Bucket 0 holds 0 µs; bucket
/// `1 + 4e + s` holds `[2^e (1 + s/4), 2^e (1 + (s+1)/4))` µs; longer times go to the last.
#[derive(Debug)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; LATENCY_BUCKETS],
    sum_us: AtomicU64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl LatencyHistogram {
    /// Counts one `elapsed`.
    pub fn record(&self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.buckets[latency_bucket(us)].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Every bucket's count since start (subtract two snapshots for a window).
    pub fn counts(&self) -> [u64; LATENCY_BUCKETS] {
        std::array::from_fn(|index| self.buckets[index].load(Ordering::Relaxed))
    }
}

/// The bucket of a latency of `us` microseconds.
pub fn latency_bucket(us: u64) -> usize {
    if us == 0 {
        return 0;
    }
    let octave = 63 - us.leading_zeros() as usize;
    // The two bits after the leading one: which quarter of the octave.
    let quarter = (((u128::from(us)) << 2) >> octave) as usize - LATENCY_SUBBUCKETS;
    (1 + octave * LATENCY_SUBBUCKETS + quarter).min(LATENCY_BUCKETS - 1)
}

/// The upper end of bucket `index`, in microseconds (rounded up).
pub fn latency_bucket_upper_us(index: usize) -> u64 {
    if index == 0 {
        return 0;
    }
    let octave = (index - 1) / LATENCY_SUBBUCKETS;
    let quarter = (index - 1) % LATENCY_SUBBUCKETS;
    let scaled = (LATENCY_SUBBUCKETS + quarter + 1) as u64;
    (scaled << octave).div_ceil(LATENCY_SUBBUCKETS as u64)
}

/// The `quantile` (0.0–1.0) of a histogram's `counts`, as its bucket's upper end in
/// microseconds; `None` when the counts are all zero.
pub fn quantile_us(counts: &[u64], quantile: f64) -> Option<u64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((total as f64 * quantile.clamp(0.0, 1.0)).ceil() as u64).max(1);
    let mut seen = 0;
    counts.iter().enumerate().find_map(|(index, count)| {
        seen += count;
        (seen >= rank).then(|| latency_bucket_upper_us(index))
    })
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn render_members(out: &mut String, members: &[(u32, bool)]) {
    family(
        out,
        "nabu_member_up",
        "gauge",
        "1 if the member answers heartbeats, else 0.",
    );
    for (id, up) in members {
        let _ = writeln!(out, "nabu_member_up{{member=\"{id}\"}} {}", u8::from(*up));
    }
}

fn render_store(out: &mut String, store: &nabu_store::StoreStats) {
    let families = [
        (
            "nabu_store_records",
            "gauge",
            "Store keys holding a value (shards and meta records).",
            store.records,
        ),
        (
            "nabu_store_live_bytes",
            "gauge",
            "Bytes of records still needed.",
            store.live_bytes,
        ),
        (
            "nabu_store_dead_bytes",
            "gauge",
            "Bytes compaction can reclaim.",
            store.dead_bytes,
        ),
        (
            "nabu_store_records_written_total",
            "counter",
            "Records written since start.",
            store.records_written,
        ),
        (
            "nabu_store_write_calls_total",
            "counter",
            "pwritev calls since start.",
            store.write_calls,
        ),
        (
            "nabu_store_fdatasyncs_total",
            "counter",
            "fdatasync calls since start.",
            store.fdatasyncs,
        ),
    ];
    for (name, kind, help, value) in families {
        family(out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }
    family(
        out,
        "nabu_store_dir_serving",
        "gauge",
        "1 if the data dir serves reads and writes.",
    );
    for dir in &store.dirs {
        let path = escape_label(&dir.path.display().to_string());
        let serving = u8::from(dir.state == nabu_store::DirState::Serving);
        let _ = writeln!(out, "nabu_store_dir_serving{{dir=\"{path}\"}} {serving}");
    }
}

/// Escapes a label value per the text format: backslash, double quote and newline.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_op_and_outcome() {
        let metrics = Metrics::default();
        metrics.count_request(Op::ShardGet, None);
        metrics.count_request(Op::ShardGet, Some(ErrorCode::CORRUPT));
        metrics.count_request(Op::ShardGet, Some(ErrorCode::from_u16(999)));
        let text = metrics.render(&Snapshot::default());
        assert!(text.contains("nabu_requests_total{op=\"SHARD_GET\",outcome=\"ok\"} 1"));
        assert!(text.contains("nabu_requests_total{op=\"SHARD_GET\",outcome=\"CORRUPT\"} 1"));
        assert!(text.contains("nabu_requests_total{op=\"SHARD_GET\",outcome=\"other\"} 1"));
        assert_eq!(escape_label("a\"b\\c\n"), "a\\\"b\\\\c\\n");
    }

    #[test]
    fn latency_buckets_are_quarter_octaves() {
        assert_eq!(latency_bucket(0), 0);
        assert_eq!(latency_bucket(1), 1);
        assert_eq!(latency_bucket(2), 5);
        assert_eq!(latency_bucket(3), 7);
        assert_eq!(latency_bucket(1000), latency_bucket(1023));
        assert_eq!(latency_bucket(u64::MAX), LATENCY_BUCKETS - 1);
        for us in [1, 2, 3, 5, 100, 999, 1000, 1024, 65_537, 10_000_000] {
            let bucket = latency_bucket(us);
            let upper = latency_bucket_upper_us(bucket);
            assert!(
                upper >= us,
                "{us} µs is at most its bucket's upper end {upper}"
            );
            assert!(
                upper as f64 <= us as f64 * 1.25 + 1.0,
                "{us} µs: {upper} is within 25%"
            );
            assert!(
                latency_bucket_upper_us(bucket - 1) <= us,
                "{us} µs is above the bucket below"
            );
        }
    }

    #[test]
    fn quantiles_come_from_bucket_counts() {
        let histogram = LatencyHistogram::default();
        assert_eq!(quantile_us(&histogram.counts(), 0.5), None);
        for _ in 0..98 {
            histogram.record(Duration::from_micros(100));
        }
        histogram.record(Duration::from_millis(10));
        histogram.record(Duration::from_millis(10));
        let counts = histogram.counts();
        let p50 = quantile_us(&counts, 0.5).expect("counted");
        let p99 = quantile_us(&counts, 0.99).expect("counted");
        assert!((100..=125).contains(&p50), "p50 {p50}");
        assert!((10_000..=12_500).contains(&p99), "p99 {p99}");
        // A window: the difference of two snapshots.
        histogram.record(Duration::from_secs(1));
        let window: Vec<u64> = histogram
            .counts()
            .iter()
            .zip(counts)
            .map(|(now, before)| now - before)
            .collect();
        let p50 = quantile_us(&window, 0.5).expect("counted");
        assert!((1_000_000..=1_250_000).contains(&p50), "window p50 {p50}");
    }

    #[test]
    fn peer_traffic_and_latency_are_rendered() {
        let metrics = Metrics::default();
        let peer = metrics.peer(2);
        let again = metrics.peer(2).expect("counted");
        assert!(
            Arc::ptr_eq(peer.as_ref().expect("counted"), &again),
            "one per member"
        );
        let traffic = Traffic {
            plane: Plane::Peer,
            peer,
        };
        metrics.count_bytes_in(&traffic, 10);
        metrics.count_bytes_out(&traffic, 7);
        let data = Traffic {
            plane: Plane::Data,
            peer: None,
        };
        metrics.count_bytes_in(&data, 5);
        metrics.record_latency(Op::ShardGet, Duration::from_micros(3));
        let text = metrics.render(&Snapshot::default());
        assert!(text.contains("nabu_peer_bytes_in_total{member=\"2\"} 10"));
        assert!(text.contains("nabu_peer_bytes_out_total{member=\"2\"} 7"));
        assert!(text.contains("nabu_bytes_in_total{plane=\"peer\"} 10"));
        assert!(text.contains("nabu_bytes_in_total{plane=\"data\"} 5"));
        assert!(
            text.contains("nabu_request_duration_seconds_bucket{class=\"read\",le=\"0.000002\"} 0")
        );
        assert!(
            text.contains("nabu_request_duration_seconds_bucket{class=\"read\",le=\"0.000004\"} 1")
        );
        assert!(text.contains("nabu_request_duration_seconds_count{class=\"read\"} 1"));
    }
}
