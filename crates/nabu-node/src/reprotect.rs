//! Re-protection after a member is lost: once a member has not answered heartbeats for
//! `repair_after_ms`, the lowest-id member that is up checks every stripe of the cluster and
//! writes the degraded ones back to full redundancy ([`nabu_client::Client::check_redundancy`]
//! through this node's cluster client): each shard of the lost member goes to the next node
//! of its stripe's walk, with a handoff hint home, and key records and manifests are written
//! again the same way.
//!
//! One node coordinates so that the cluster does the work once; should it go down, the next
//! lowest-id member takes over (the check is idempotent). A run that leaves failures is
//! retried after `hint_retry_backoff_max_ms`; a member that comes back and is lost again is
//! handled again.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::liveness::{MemberState, MemberStatus};
use crate::node::{Node, until_stopped};

/// Watches for lost members until `shutdown` turns true.
pub async fn run(node: Arc<Node>, mut shutdown: watch::Receiver<bool>) {
    let tick = Duration::from_millis(node.config.hint_replay_interval_ms);
    let retry = Duration::from_millis(node.config.hint_retry_backoff_max_ms);
    let mut covered: BTreeSet<u32> = BTreeSet::new();
    let mut next_try = Instant::now();
    loop {
        tokio::select! {
            () = tokio::time::sleep(tick) => {}
            () = until_stopped(&mut shutdown) => return,
        }
        let statuses = node.liveness.statuses();
        let lost = lost_members(&node, &statuses);
        node.metrics
            .members_lost
            .store(lost.len() as u64, Ordering::Relaxed);
        covered.retain(|id| lost.contains(id));
        if lost.is_subset(&covered) || Instant::now() < next_try {
            continue;
        }
        let coordinator = statuses
            .iter()
            .filter(|status| status.state == MemberState::Up)
            .map(|status| status.config.id)
            .min();
        if coordinator != Some(node.id.0) {
            continue;
        }
        tracing::warn!(
            ?lost,
            "members down longer than repair_after: restoring redundancy"
        );
        let started = Instant::now();
        let checked = tokio::select! {
            checked = node.cluster.check_redundancy(true, |_| {}) => checked,
            () = until_stopped(&mut shutdown) => return,
        };
        node.metrics
            .reprotect_runs_total
            .fetch_add(1, Ordering::Relaxed);
        match checked {
            Ok(report) => {
                node.metrics
                    .reprotect_stripes_repaired_total
                    .fetch_add(report.stripes_repaired, Ordering::Relaxed);
                let clean = report.repair_failures == 0 && report.stripes_lost == 0;
                tracing::info!(
                    stripes = report.stripes,
                    repaired = report.stripes_repaired,
                    bytes = report.bytes_repaired,
                    lost_stripes = report.stripes_lost,
                    failures = report.repair_failures,
                    seconds = started.elapsed().as_secs_f64(),
                    "redundancy restored{}",
                    if clean { "" } else { " in part; will retry" }
                );
                if clean {
                    covered = lost;
                } else {
                    next_try = Instant::now() + retry;
                }
            }
            Err(error) => {
                tracing::warn!(%error, "restoring redundancy failed; will retry");
                next_try = Instant::now() + retry;
            }
        }
    }
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
