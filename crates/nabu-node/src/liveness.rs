//! Liveness: which members answer heartbeats.
//!
//! Failure detection needs no consensus (DESIGN.md §5): every node keeps one long-lived,
//! authenticated peer-plane connection to every other member and sends a PING each
//! `heartbeat_interval_ms`; a member whose last answer is older than `down_after_ms` (or that
//! never answered) is down. A broken connection is re-made with exponential backoff, capped
//! at [`RECONNECT_BACKOFF_MAX`], so a dead member costs one connect attempt per backoff.
//! Nothing here changes placement: the state is reported (`/api/v1/cluster`, `/metrics`) for
//! clients and operators to act on, and every change of a member's state is recorded in the
//! node's event log ([`Event::NodeUp`], [`Event::NodeDown`]), checked every
//! [`TRANSITION_CHECK_INTERVAL_MAX`] at most.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use nabu_proto::ops::Ping;
use nabu_proto::{Frame, FrameKind, Limits};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout};
use tracing::Instrument;

use crate::config::MemberConfig;
use crate::events::Event;
use crate::node::{Node, until_stopped};
use crate::peer::PeerConnection;

/// The longest wait between two attempts to reach a member.
pub const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// The longest time between two looks for members that changed state (the event log and the
/// dashboard learn of a change at most this late after `down_after_ms` says so).
pub const TRANSITION_CHECK_INTERVAL_MAX: Duration = Duration::from_millis(250);

/// Whether a member answers heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    /// Heard from within `down_after_ms` (this node itself is always up).
    Up,
    /// Not heard from for `down_after_ms`, or never.
    Down,
}

/// One member and when it last answered.
#[derive(Debug)]
struct Slot {
    config: MemberConfig,
    /// Milliseconds after `started` of the last answer, plus one; 0 = never.
    last_heard_ms: AtomicU64,
}

/// The member table of one node.
#[derive(Debug)]
pub struct Liveness {
    self_id: u32,
    started: Instant,
    down_after: Duration,
    slots: Vec<Slot>,
}

/// A member's state as reported.
#[derive(Debug, Clone)]
pub struct MemberStatus {
    /// The member.
    pub config: MemberConfig,
    /// Up or down.
    pub state: MemberState,
    /// Milliseconds since it last answered (`None`: never; `Some(0)` for this node).
    pub last_heard_ms_ago: Option<u64>,
}

impl Liveness {
    /// The table for `members`, none heard from yet.
    pub fn new(self_id: u32, members: Vec<MemberConfig>, down_after: Duration) -> Self {
        let slots = members
            .into_iter()
            .map(|config| Slot {
                config,
                last_heard_ms: AtomicU64::new(0),
            })
            .collect();
        Self {
            self_id,
            started: Instant::now(),
            down_after,
            slots,
        }
    }

    fn heard(&self, index: usize) {
        let since_start = self.started.elapsed().as_millis() as u64 + 1;
        self.slots[index]
            .last_heard_ms
            .store(since_start, Ordering::Relaxed);
    }

    /// Whether member `id` answers heartbeats (this node always does).
    pub fn is_up(&self, id: u32) -> bool {
        self.statuses()
            .iter()
            .any(|status| status.config.id == id && status.state == MemberState::Up)
    }

    /// The peer-plane address of member `id`.
    pub fn peer_addr(&self, id: u32) -> Option<SocketAddr> {
        self.slots
            .iter()
            .find(|slot| slot.config.id == id)
            .map(|slot| slot.config.peer_addr)
    }

    /// Every member's state, in member-list order.
    pub fn statuses(&self) -> Vec<MemberStatus> {
        let now_ms = self.started.elapsed().as_millis() as u64 + 1;
        let down_after_ms = self.down_after.as_millis() as u64;
        self.slots
            .iter()
            .map(|slot| {
                let last_heard_ms_ago = if slot.config.id == self.self_id {
                    Some(0)
                } else {
                    match slot.last_heard_ms.load(Ordering::Relaxed) {
                        0 => None,
                        heard => Some(now_ms.saturating_sub(heard)),
                    }
                };
                let up = last_heard_ms_ago.is_some_and(|ago| ago <= down_after_ms);
                MemberStatus {
                    config: slot.config.clone(),
                    state: if up {
                        MemberState::Up
                    } else {
                        MemberState::Down
                    },
                    last_heard_ms_ago,
                }
            })
            .collect()
    }

    /// The state every member starts in, as [`Liveness::changes`] sees it: this node up, the
    /// others down until they answer.
    fn initial_states(&self) -> Vec<MemberState> {
        self.slots
            .iter()
            .map(|slot| {
                if slot.config.id == self.self_id {
                    MemberState::Up
                } else {
                    MemberState::Down
                }
            })
            .collect()
    }

    /// The members whose state is no longer the one in `known` (updated in place), as events.
    fn changes(&self, known: &mut [MemberState]) -> Vec<Event> {
        self.statuses()
            .into_iter()
            .zip(known.iter_mut())
            .filter(|(status, known)| status.state != **known)
            .map(|(status, known)| {
                *known = status.state;
                let node = status.config.id;
                match status.state {
                    MemberState::Up => Event::NodeUp { node },
                    MemberState::Down => Event::NodeDown { node },
                }
            })
            .collect()
    }
}

/// Sends heartbeats to every other member until `shutdown` turns true.
pub async fn run(node: Arc<Node>, mut shutdown: watch::Receiver<bool>) {
    let mut tasks = JoinSet::new();
    for (index, slot) in node.liveness.slots.iter().enumerate() {
        if slot.config.id == node.liveness.self_id {
            continue;
        }
        let span = tracing::debug_span!("heartbeat", node = node.id.0, member = slot.config.id);
        tasks.spawn(heartbeat_member(Arc::clone(&node), index).instrument(span));
    }
    tasks.spawn(record_changes(Arc::clone(&node)).in_current_span());
    until_stopped(&mut shutdown).await;
    tasks.shutdown().await;
}

/// Records every member's change of state in the event log.
async fn record_changes(node: Arc<Node>) {
    let heartbeat = Duration::from_millis(node.config.heartbeat_interval_ms);
    let mut ticks = tokio::time::interval(heartbeat.min(TRANSITION_CHECK_INTERVAL_MAX));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut known = node.liveness.initial_states();
    loop {
        ticks.tick().await;
        for event in node.liveness.changes(&mut known) {
            node.events.record(event);
        }
    }
}

/// Keeps one connection to member `index` and PINGs it, reconnecting with backoff.
async fn heartbeat_member(node: Arc<Node>, index: usize) {
    let interval = Duration::from_millis(node.config.heartbeat_interval_ms);
    let mut backoff = interval;
    loop {
        let started = Instant::now();
        if let Err(error) = ping_member(&node, index, interval).await {
            tracing::debug!(%error, "heartbeat connection failed");
        }
        if started.elapsed() > RECONNECT_BACKOFF_MAX {
            backoff = interval;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
    }
}

/// Connects to member `index`, authenticates, and PINGs it every `interval` until a PING
/// fails or goes unanswered for `down_after_ms`.
async fn ping_member(node: &Node, index: usize, interval: Duration) -> anyhow::Result<()> {
    let member = &node.liveness.slots[index].config;
    let answer_timeout = Duration::from_millis(node.config.down_after_ms);
    let mut peer = timeout(
        answer_timeout,
        PeerConnection::connect(
            member.peer_addr,
            member.id,
            &node.token,
            node.id.0,
            "heartbeat",
            Limits::default(),
        ),
    )
    .await??;
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let request = peer.next_request_id();
        let ping = Frame::from_meta(request, &Ping, Bytes::new(), false)?;
        let reply = timeout(answer_timeout, peer.call(ping)).await??;
        if reply.header().kind() != FrameKind::Response {
            anyhow::bail!(
                "member {} answered PING with {:?}",
                member.id,
                reply.header().kind()
            );
        }
        node.liveness.heard(index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u32) -> MemberConfig {
        let addr = SocketAddr::from(([127, 0, 0, 1], 1000 + id as u16));
        MemberConfig {
            id,
            zone: "z".to_owned(),
            weight: 1,
            data_addr: addr,
            peer_addr: addr,
            http_addr: addr,
        }
    }

    #[test]
    fn state_changes_become_events_once() {
        let down_after = Duration::from_millis(20);
        let liveness = Liveness::new(1, vec![member(1), member(2), member(3)], down_after);
        let mut known = liveness.initial_states();
        assert_eq!(
            liveness.changes(&mut known),
            [],
            "nobody answered yet: no change"
        );
        liveness.heard(1);
        liveness.heard(2);
        assert_eq!(
            liveness.changes(&mut known),
            [Event::NodeUp { node: 2 }, Event::NodeUp { node: 3 }]
        );
        assert_eq!(liveness.changes(&mut known), [], "reported once");
        // Let down_after pass without an answer from member 3.
        let heard_again = std::time::Instant::now() + down_after * 2;
        while std::time::Instant::now() < heard_again {
            liveness.heard(1);
            std::thread::yield_now();
        }
        assert_eq!(liveness.changes(&mut known), [Event::NodeDown { node: 3 }]);
    }
}
