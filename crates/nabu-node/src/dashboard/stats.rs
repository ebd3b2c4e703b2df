//! `/api/v1/node`: one node's counters, cumulative since it started, and what it runs on.
//!
//! Counters, not rates: any reader (the serving node's [`super::Hub`], a script) turns two
//! samples into rates and windowed latency quantiles, and a missed sample loses nothing.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::events::unix_time_ms;
use crate::metrics::OpClass;
use crate::node::{Node, capacity_bytes};

/// This node's counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStats {
    /// The node's id.
    pub node_id: u32,
    /// When the sample was taken, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// Its zone.
    pub zone: String,
    /// What the live view passes on as it is (flattened into this object).
    #[serde(flatten)]
    pub gauges: NodeGauges,
    /// Data-plane frame body bytes received.
    pub data_bytes_in_total: u64,
    /// Data-plane frame body bytes sent.
    pub data_bytes_out_total: u64,
    /// Peer-plane frame body bytes received.
    pub peer_bytes_in_total: u64,
    /// Peer-plane frame body bytes sent.
    pub peer_bytes_out_total: u64,
    /// Requests answered (every op, every outcome).
    pub requests_total: u64,
    /// Latency histograms, one per op class.
    pub latency: Vec<ClassHistogram>,
    /// Peer-plane traffic per member, as this node's side of each link counted it.
    pub peers: Vec<PeerTraffic>,
    /// Shard bytes sent home by hint replay.
    pub hint_bytes_moved_total: u64,
    /// Bytes the scrubber has reread.
    pub scrub_bytes_checked_total: u64,
    /// Bytes this node's rebalancing passes moved to their new placement.
    pub rebalance_bytes_moved_total: u64,
    /// KV pool reads that found their value.
    pub kv_hits_total: u64,
    /// KV pool reads that did not.
    pub kv_misses_total: u64,
    /// The sequence number of the newest entry in this node's event log.
    pub events_seq: u64,
}

/// A node's gauges and the totals shown as they are (not as rates): in [`NodeStats`] and,
/// unchanged, in the live view (`super::LiveSample`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NodeGauges {
    /// Seconds since the node started (a smaller value than before means a restart).
    pub uptime_s: u64,
    /// What it serves: `storage` always, `s3` and `resp` when it has those listeners.
    pub roles: Vec<String>,
    /// What it runs on.
    pub hardware: Hardware,
    /// Bytes of records on disk, garbage not yet compacted included.
    pub bytes_used: u64,
    /// Bytes the data dirs' filesystems hold.
    pub bytes_capacity: u64,
    /// Shards held.
    pub shards: u64,
    /// Hints kept, not yet replayed (repair work waiting).
    pub hints_pending: u64,
    /// Handed-off shards moved home.
    pub hints_replayed_total: u64,
    /// Missing shards rebuilt and put home.
    pub shards_repaired_total: u64,
    /// Whether a scrub pass runs now.
    pub scrub_running: bool,
    /// Damaged records the scrubber found.
    pub scrub_corrupt_found_total: u64,
    /// Damaged shards the scrubber rebuilt.
    pub scrub_repaired_total: u64,
    /// Members not heard from for `repair_after_ms` (lost, being re-protected).
    pub members_lost: u64,
    /// Stripes this node's re-protection runs wrote back to full redundancy.
    pub reprotect_stripes_repaired_total: u64,
    /// Whether this node coordinates a maintenance pass (rebalancing, re-protection) now.
    pub maintenance_running: bool,
    /// Shards this node's rebalancing passes moved to their new placement.
    pub rebalance_shards_moved_total: u64,
    /// Bytes the KV pool holds.
    pub kv_used_bytes: u64,
    /// The KV pool's capacity.
    pub kv_capacity_bytes: u64,
}

impl NodeStats {
    /// The same node's counters when it started: every counter this struct turns into rates
    /// at 0, `uptime_s` seconds before this sample (gauges as now).
    pub fn at_start(&self) -> NodeStats {
        NodeStats {
            time_ms: self.time_ms.saturating_sub(self.gauges.uptime_s * 1000),
            gauges: NodeGauges {
                uptime_s: 0,
                ..self.gauges.clone()
            },
            data_bytes_in_total: 0,
            data_bytes_out_total: 0,
            peer_bytes_in_total: 0,
            peer_bytes_out_total: 0,
            requests_total: 0,
            latency: self
                .latency
                .iter()
                .map(|histogram| ClassHistogram {
                    class: histogram.class.clone(),
                    counts: vec![0; histogram.counts.len()],
                })
                .collect(),
            peers: self
                .peers
                .iter()
                .map(|peer| PeerTraffic {
                    member: peer.member,
                    bytes_in_total: 0,
                    bytes_out_total: 0,
                })
                .collect(),
            hint_bytes_moved_total: 0,
            scrub_bytes_checked_total: 0,
            rebalance_bytes_moved_total: 0,
            kv_hits_total: 0,
            kv_misses_total: 0,
            events_seq: 0,
            ..self.clone()
        }
    }
}

/// One op class's latency histogram in [`NodeStats`]: bucket counts since start, laid out as
/// `crate::metrics::LatencyHistogram` documents (quarter octaves of microseconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassHistogram {
    /// `read`, `write`, `kv` or `control`.
    pub class: String,
    /// Count per bucket.
    pub counts: Vec<u64>,
}

/// One peer-plane link in [`NodeStats`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerTraffic {
    /// The other member.
    pub member: u32,
    /// Bytes received from it.
    pub bytes_in_total: u64,
    /// Bytes sent to it.
    pub bytes_out_total: u64,
}

/// What a node runs on, detected once at start.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Hardware {
    /// CPUs this process may run on.
    pub cpus: u32,
    /// Physical memory (`MemTotal`), if known.
    pub memory_bytes: Option<u64>,
    /// NVIDIA GPUs the driver lists (`/proc/driver/nvidia/gpus`), by model name.
    pub gpus: Vec<String>,
    /// CXL memory (`/sys/bus/cxl/devices`, memory-only NUMA nodes).
    #[serde(default)]
    pub cxl: crate::tier::CxlHardware,
}

impl Hardware {
    /// Looks at this machine (reads a few `/proc` files: call off the async threads).
    pub fn detect() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |cpus| cpus.get() as u32);
        let memory_bytes = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|meminfo| {
                let line = meminfo.lines().find(|line| line.starts_with("MemTotal:"))?;
                let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
                Some(kib * 1024)
            });
        let mut gpus: Vec<String> = std::fs::read_dir("/proc/driver/nvidia/gpus")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|gpu| std::fs::read_to_string(gpu.path().join("information")).ok())
            .filter_map(|information| {
                let line = information
                    .lines()
                    .find(|line| line.starts_with("Model:"))?;
                Some(line.trim_start_matches("Model:").trim().to_owned())
            })
            .collect();
        gpus.sort();
        Self {
            cpus,
            memory_bytes,
            gpus,
            cxl: crate::tier::detect_cxl(std::path::Path::new("/")),
        }
    }
}

/// Samples `node`'s counters (reads statvfs: call off the async threads).
pub fn node_stats(node: &Node, hardware: &Hardware) -> NodeStats {
    let metrics = &node.metrics;
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    let store = node.store.stats();
    let mut roles = vec!["storage".to_owned()];
    if node.config.s3_addr.is_some() {
        roles.push("s3".to_owned());
    }
    if node.config.resp_addr.is_some() {
        roles.push("resp".to_owned());
    }
    NodeStats {
        node_id: node.id.0,
        time_ms: unix_time_ms(),
        zone: node.config.zone.clone(),
        gauges: NodeGauges {
            uptime_s: node.started.elapsed().as_secs(),
            roles,
            hardware: hardware.clone(),
            bytes_used: store.live_bytes + store.dead_bytes,
            bytes_capacity: capacity_bytes(&node.config.data_dirs),
            shards: metrics.shards.load(Ordering::Relaxed).max(0) as u64,
            hints_pending: node.hints.len() as u64,
            hints_replayed_total: load(&metrics.hints_replayed_total),
            shards_repaired_total: load(&metrics.shards_repaired_total),
            scrub_running: metrics.scrub.running.load(Ordering::Relaxed),
            scrub_corrupt_found_total: load(&metrics.scrub.corrupt_found_total),
            scrub_repaired_total: load(&metrics.scrub.repaired_total),
            members_lost: load(&metrics.members_lost),
            reprotect_stripes_repaired_total: load(&metrics.reprotect_stripes_repaired_total),
            maintenance_running: load(&metrics.maintenance_running) > 0,
            rebalance_shards_moved_total: load(&metrics.rebalance_shards_moved_total),
            kv_used_bytes: node.kv.gauges().used_bytes,
            kv_capacity_bytes: node.kv.config().capacity_bytes,
        },
        data_bytes_in_total: load(&metrics.data.bytes_in_total),
        data_bytes_out_total: load(&metrics.data.bytes_out_total),
        peer_bytes_in_total: load(&metrics.peer.bytes_in_total),
        peer_bytes_out_total: load(&metrics.peer.bytes_out_total),
        requests_total: metrics.requests_total(),
        latency: OpClass::ALL
            .iter()
            .map(|&class| ClassHistogram {
                class: class.name().to_owned(),
                counts: metrics.latency(class).counts().to_vec(),
            })
            .collect(),
        peers: metrics
            .peers()
            .iter()
            .filter(|peer| peer.member != node.id.0)
            .map(|peer| PeerTraffic {
                member: peer.member,
                bytes_in_total: load(&peer.bytes_in_total),
                bytes_out_total: load(&peer.bytes_out_total),
            })
            .collect(),
        hint_bytes_moved_total: load(&metrics.hint_bytes_moved_total),
        scrub_bytes_checked_total: load(&metrics.scrub.bytes_checked_total),
        rebalance_bytes_moved_total: load(&metrics.rebalance_bytes_moved_total),
        kv_hits_total: load(&node.kv.counters.hits),
        kv_misses_total: load(&node.kv.counters.misses),
        events_seq: node.events.newest_seq(),
    }
}
