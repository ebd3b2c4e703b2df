//! Cluster maintenance one node coordinates: **rebalancing** after a membership change and
//! **re-protection** after a member is lost.
//!
//! Every node makes its cluster client follow the member list. The lowest-id member that is
//! up coordinates (so the cluster does the work once; should it go down, the next one takes
//! over, and every step is idempotent; a node waits `down_after_ms` after start before it
//! may, so that it has heard from the others) by running
//! [`nabu_client::Client::check_redundancy`] through its cluster client:
//!
//! - when the ring epoch changes (and once after start on an epoch above 1, in case a change
//!   was cut short): with `rebalance`, so shards held outside their stripe's new placement
//!   move to it and key records and manifests are written to theirs; passes repeat until one
//!   moves nothing (a client still on the old ring may have written meanwhile);
//! - when a member has not answered heartbeats for `repair_after_ms`: with `repair`, so each
//!   degraded stripe is written back to full redundancy (a lost node's shard goes to the next
//!   node of its walk, with a handoff hint home).
//!
//! A pass that leaves failures is retried after `hint_retry_backoff_max_ms`; a member that
//! comes back and is lost again is handled again.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use nabu_client::{CheckOptions, RedundancyReport};
use tokio::sync::watch;

use crate::config::MembershipKind;
use crate::events::Event;
use crate::liveness::{MemberState, MemberStatus};
use crate::node::{Node, until_stopped};

/// Rebalancing passes after one change at most before the coordinator waits for the next
/// tick (each pass after the first only finds what clients on the old ring wrote meanwhile).
const REBALANCE_PASSES_MAX: usize = 5;

/// Follows membership and coordinates maintenance until `shutdown` turns true.
pub async fn run(node: Arc<Node>, mut shutdown: watch::Receiver<bool>) {
    let tick = Duration::from_millis(node.config.hint_replay_interval_ms);
    let retry = Duration::from_millis(node.config.hint_retry_backoff_max_ms);
    let mut changes = node.membership.subscribe();
    let mut covered: BTreeSet<u32> = BTreeSet::new();
    let start_epoch = node.membership.epoch();
    let mut rebalanced = if start_epoch > 1 { 0 } else { start_epoch };
    let mut next_try = Instant::now();
    loop {
        tokio::select! {
            biased;
            () = tokio::time::sleep(tick) => {}
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
                let view = node.membership.view();
                if let Err(error) = node.cluster.apply_members(view.epoch, &view.entries()) {
                    tracing::error!(%error, "the cluster client refused the member list");
                }
                next_try = Instant::now();
            }
            () = until_stopped(&mut shutdown) => return,
        }
        let statuses = node.liveness.statuses();
        let lost = lost_members(&node, &statuses);
        node.metrics
            .members_lost
            .store(lost.len() as u64, Ordering::Relaxed);
        covered.retain(|id| lost.contains(id));
        let epoch = node.membership.epoch();
        let options = CheckOptions {
            repair: !lost.is_subset(&covered),
            rebalance: rebalanced < epoch,
            bytes_per_s: Some(node.config.maintenance_bytes_per_s),
        };
        // A node that just started has not heard from anyone yet and would think itself the
        // lowest-id member that is up.
        let settling = node.started.elapsed() < Duration::from_millis(node.config.down_after_ms);
        // Under etcd, a new node runs on its config's list until it has read etcd's: it is
        // not a member yet and must not coordinate anything.
        let unsynced = node.config.membership == MembershipKind::Etcd
            && node.membership.epoch() <= node.config.ring_epoch;
        if !(options.repair || options.rebalance)
            || Instant::now() < next_try
            || settling
            || unsynced
        {
            continue;
        }
        let coordinator = statuses
            .iter()
            .filter(|status| status.state.is_alive())
            .map(|status| status.config.id)
            .min();
        if coordinator != Some(node.id.0) {
            continue;
        }
        let done = tokio::select! {
            biased;
            done = coordinate(&node, options, &lost) => done,
            () = until_stopped(&mut shutdown) => return,
        };
        if done {
            if options.repair {
                covered = lost;
            }
            if options.rebalance {
                rebalanced = epoch;
            }
        } else {
            next_try = Instant::now() + retry;
        }
    }
}

/// Runs passes until one needs nothing more; returns whether the work is done.
async fn coordinate(node: &Node, options: CheckOptions, lost: &BTreeSet<u32>) -> bool {
    let metrics = &node.metrics;
    let epoch = node.membership.epoch();
    if options.repair {
        tracing::warn!(
            ?lost,
            "members down longer than repair_after: restoring redundancy"
        );
        for &member in lost {
            node.events.record(Event::RepairStarted { node: member });
        }
    }
    if options.rebalance {
        tracing::info!(
            epoch,
            "moving shards to the placement of the new member list"
        );
        node.events
            .record(Event::RebalanceStarted { ring_epoch: epoch });
    }
    let mut totals = RedundancyReport::default();
    metrics.maintenance_running.store(1, Ordering::Relaxed);
    let plan = plan_work(node, options).await;
    let mut done = false;
    for pass in 1..=REBALANCE_PASSES_MAX {
        let started = Instant::now();
        let (moved_before, bytes_before, repaired_before) = (
            totals.shards_moved,
            totals.bytes_moved,
            totals.stripes_repaired,
        );
        let checked = node
            .cluster
            .check_redundancy(options, |so_far| {
                plan.show_left(
                    metrics,
                    moved_before + so_far.shards_moved,
                    bytes_before + so_far.bytes_moved,
                    repaired_before + so_far.stripes_repaired,
                );
            })
            .await;
        metrics
            .maintenance_passes_total
            .fetch_add(1, Ordering::Relaxed);
        let report = match checked {
            Ok(report) => report,
            Err(error) => {
                tracing::warn!(%error, "a maintenance pass failed; will retry");
                break;
            }
        };
        metrics
            .reprotect_stripes_repaired_total
            .fetch_add(report.stripes_repaired, Ordering::Relaxed);
        metrics
            .rebalance_shards_moved_total
            .fetch_add(report.shards_moved, Ordering::Relaxed);
        metrics
            .rebalance_bytes_moved_total
            .fetch_add(report.bytes_moved, Ordering::Relaxed);
        totals.shards_moved += report.shards_moved;
        totals.bytes_moved += report.bytes_moved;
        totals.stripes_repaired += report.stripes_repaired;
        totals.bytes_repaired += report.bytes_repaired;
        totals.repair_failures = report.repair_failures + report.stripes_lost;
        let clean = report.repair_failures == 0 && report.stripes_lost == 0;
        tracing::info!(
            pass,
            epoch,
            stripes = report.stripes,
            repaired = report.stripes_repaired,
            moved = report.shards_moved,
            bytes_moved = report.bytes_moved,
            lost_stripes = report.stripes_lost,
            failures = report.repair_failures,
            seconds = started.elapsed().as_secs_f64(),
            "maintenance pass finished{}",
            if clean {
                ""
            } else {
                " with failures; will retry"
            }
        );
        if !clean {
            break;
        }
        if !options.rebalance {
            done = true;
            break;
        }
        if report.shards_moved == 0 {
            // Shards still outside their placement with none moved: a placement node did
            // not answer, or there is no room (a drain leaves fewer nodes than a stripe is
            // wide). Not done: tried again after the retry interval.
            done = report.shards_misplaced == 0;
            if !done {
                tracing::warn!(
                    epoch,
                    misplaced = report.shards_misplaced,
                    retry_in_ms = node.config.hint_retry_backoff_max_ms,
                    "shards outside their placement could not move (a placement node is \
                     unreachable, or fewer nodes than a stripe is wide have weight)"
                );
            }
            break;
        }
    }
    metrics.maintenance_running.store(0, Ordering::Relaxed);
    // Idle: nothing is left to do until the next run counts again.
    Plan::default().show_left(metrics, 0, 0, 0);
    if options.rebalance {
        node.events.record(Event::RebalanceFinished {
            ring_epoch: epoch,
            shards_moved: totals.shards_moved,
            bytes_moved: totals.bytes_moved,
        });
    }
    if options.repair {
        for &member in lost {
            node.events.record(Event::RepairFinished {
                node: member,
                shards_repaired: totals.stripes_repaired,
                bytes: totals.bytes_repaired,
                failed: totals.repair_failures,
            });
        }
    }
    done
}

/// The work a maintenance run starts with, counted by a check that changes nothing: what
/// `nabu status`, `/metrics` and `/api/v1/cluster` show as left to do while passes run.
#[derive(Debug, Default)]
struct Plan {
    shards: u64,
    bytes: u64,
    stripes_degraded: u64,
}

impl Plan {
    /// Publishes what is left of the plan after `moved` shards (`bytes_moved` bytes) moved
    /// and `repaired` stripes were re-protected. Later passes may find work the plan did not
    /// count (writes on the old ring meanwhile); the figures then stay at 0 until done.
    fn show_left(
        &self,
        metrics: &crate::metrics::Metrics,
        moved: u64,
        bytes_moved: u64,
        repaired: u64,
    ) {
        let left = [
            (&metrics.rebalance_shards_pending, self.shards, moved),
            (&metrics.rebalance_bytes_pending, self.bytes, bytes_moved),
            (
                &metrics.reprotect_stripes_pending,
                self.stripes_degraded,
                repaired,
            ),
        ];
        for (gauge, planned, done) in left {
            gauge.store(planned.saturating_sub(done), Ordering::Relaxed);
        }
    }
}

/// Counts the shards outside their placement (when rebalancing) and the degraded stripes
/// (when repairing) before anything moves; an unreadable cluster plans nothing (the passes
/// report their own failures). The count is one more walk of every stripe's holders
/// (SHARD_STAT, which verifies each shard on its node), the price of an honest "left to do".
async fn plan_work(node: &Node, options: CheckOptions) -> Plan {
    let counted = node
        .cluster
        .check_redundancy(CheckOptions::default(), |_| {})
        .await;
    let plan = match counted {
        Ok(report) => {
            let only = |wanted: bool, count: u64| if wanted { count } else { 0 };
            Plan {
                shards: only(options.rebalance, report.shards_misplaced),
                bytes: only(options.rebalance, report.bytes_misplaced),
                stripes_degraded: only(options.repair, report.stripes_degraded),
            }
        }
        Err(error) => {
            tracing::debug!(%error, "could not count the maintenance work ahead");
            Plan::default()
        }
    };
    tracing::info!(
        shards = plan.shards,
        bytes = plan.bytes,
        stripes_degraded = plan.stripes_degraded,
        "maintenance work ahead"
    );
    plan.show_left(&node.metrics, 0, 0, 0);
    plan
}

/// Members not heard from for `repair_after_ms` (never heard: since this node started).
fn lost_members(node: &Node, statuses: &[MemberStatus]) -> BTreeSet<u32> {
    let repair_after = node.config.repair_after_ms;
    let since_start = node.started.elapsed().as_millis() as u64;
    statuses
        .iter()
        .filter(|status| status.state == MemberState::Down)
        .filter(|status| status.last_heard_ms_ago.unwrap_or(since_start) >= repair_after)
        .map(|status| status.config.id)
        .collect()
}
