//! The node's counters and their Prometheus text rendering.
//!
//! **Why hand-written rather than `prometheus-client`.** The metric set is small and fixed
//! (every label value is known up front: ops, error codes, planes, member ids), so each
//! counter is one relaxed atomic in a flat array — no registry, no locks, no allocation on
//! the request path — and rendering is one function that writes the text format (version
//! 0.0.4: `# HELP`, `# TYPE`, `name{labels} value`). A crate would add a dependency and
//! dynamic label maps for no gain; the test parses the output to keep the format honest.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

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
            maintenance_passes_total: AtomicU64::new(0),
            maintenance_running: AtomicU64::new(0),
            reprotect_stripes_repaired_total: AtomicU64::new(0),
            rebalance_shards_moved_total: AtomicU64::new(0),
            rebalance_bytes_moved_total: AtomicU64::new(0),
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
        self.scrub.render(&mut out);
        render_members(&mut out, &snapshot.members);
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
}
