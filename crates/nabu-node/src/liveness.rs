//! Liveness: which members answer heartbeats.
//!
//! Failure detection needs no consensus (DESIGN.md §5): every node keeps one long-lived,
//! authenticated peer-plane connection to every other member and sends a PING each
//! `heartbeat_interval_ms`; a member whose last answer is older than two heartbeat intervals
//! is **suspect** (still counted as up: nothing is routed around it yet, but operators see
//! it), and one whose last answer is older than `down_after_ms` (or that never answered) is
//! **down**. A broken connection is re-made with exponential backoff, capped
//! at [`RECONNECT_BACKOFF_MAX`], so a dead member costs one connect attempt per backoff.
//! Nothing here changes placement: the state is reported (`/api/v1/cluster`, `/metrics`) for
//! clients and operators to act on, and every change of a member's state is recorded in the
//! node's event log ([`Event::NodeUp`], [`Event::NodeDown`]), checked every
//! [`TRANSITION_CHECK_INTERVAL_MAX`] at most. The table follows the member list: a new member
//! gets a heartbeat task, a removed one loses it; a peer that says (in its HELLO reply) it is
//! on a newer ring epoch is asked for its member list, and every tenth heartbeat asks for it
//! anyway, so a node that missed a change catches up within seconds.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use nabu_proto::ops::{MembersGet, Ping, decode_members};
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

/// Heartbeats between two asks for a member's list (10 × 500 ms by default).
const MEMBERS_CHECK_EVERY: u64 = 10;

/// The longest wait between two attempts to reach a member.
pub const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// The longest time between two looks for members that changed state (the event log and the
/// dashboard learn of a change at most this late after `down_after_ms` says so).
pub const TRANSITION_CHECK_INTERVAL_MAX: Duration = Duration::from_millis(250);

/// Whether a member answers heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    /// Heard from within two heartbeat intervals (this node itself is always up).
    Up,
    /// Missed heartbeats: not heard from for two heartbeat intervals, but within
    /// `down_after_ms`. Still a member in good standing (reads and writes go to it).
    Suspect,
    /// Not heard from for `down_after_ms`, or never.
    Down,
}

impl MemberState {
    /// Up or suspect: not (yet) given up on.
    pub fn is_alive(self) -> bool {
        self != MemberState::Down
    }
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
    suspect_after: Duration,
    down_after: Duration,
    slots: RwLock<Vec<Arc<Slot>>>,
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
    /// The table for `members`, none heard from yet. A member is suspect after
    /// `suspect_after` without an answer (capped at `down_after`), down after `down_after`.
    pub fn new(
        self_id: u32,
        members: Vec<MemberConfig>,
        suspect_after: Duration,
        down_after: Duration,
    ) -> Self {
        let liveness = Self {
            self_id,
            started: Instant::now(),
            suspect_after: suspect_after.min(down_after),
            down_after,
            slots: RwLock::new(Vec::new()),
        };
        liveness.set_members(members);
        liveness
    }

    /// Follows a new member list: members still listed keep what was heard of them.
    pub fn set_members(&self, members: Vec<MemberConfig>) {
        let mut slots = self.slots.write().unwrap_or_else(|p| p.into_inner());
        let known: HashMap<u32, Arc<Slot>> =
            slots.drain(..).map(|slot| (slot.config.id, slot)).collect();
        *slots = members
            .into_iter()
            .map(|config| match known.get(&config.id) {
                Some(slot) if slot.config == config => Arc::clone(slot),
                Some(slot) => Arc::new(Slot {
                    config,
                    last_heard_ms: AtomicU64::new(slot.last_heard_ms.load(Ordering::Relaxed)),
                }),
                None => Arc::new(Slot {
                    config,
                    last_heard_ms: AtomicU64::new(0),
                }),
            })
            .collect();
    }

    fn slots(&self) -> Vec<Arc<Slot>> {
        self.slots.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn heard(&self, slot: &Slot) {
        let since_start = self.started.elapsed().as_millis() as u64 + 1;
        slot.last_heard_ms.store(since_start, Ordering::Relaxed);
    }

    /// Whether member `id` answers heartbeats, or missed only a few (up or suspect; this
    /// node always is).
    pub fn is_up(&self, id: u32) -> bool {
        self.statuses()
            .iter()
            .any(|status| status.config.id == id && status.state.is_alive())
    }

    /// The peer-plane address of member `id`.
    pub fn peer_addr(&self, id: u32) -> Option<SocketAddr> {
        self.slots()
            .iter()
            .find(|slot| slot.config.id == id)
            .map(|slot| slot.config.peer_addr)
    }

    /// Every member's state, in member-list order.
    pub fn statuses(&self) -> Vec<MemberStatus> {
        let now_ms = self.started.elapsed().as_millis() as u64 + 1;
        let down_after_ms = self.down_after.as_millis() as u64;
        let suspect_after_ms = self.suspect_after.as_millis() as u64;
        self.slots()
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
                let state = match last_heard_ms_ago {
                    Some(ago) if ago <= suspect_after_ms => MemberState::Up,
                    Some(ago) if ago <= down_after_ms => MemberState::Suspect,
                    _ => MemberState::Down,
                };
                MemberStatus {
                    config: slot.config.clone(),
                    state,
                    last_heard_ms_ago,
                }
            })
            .collect()
    }

    /// The members whose state is no longer the one in `known` (member → state, updated in
    /// place), as events. A member not in `known` was down (this node: up), so a new member
    /// makes an event only once it answers; members no longer listed leave `known`.
    fn changes(&self, known: &mut HashMap<u32, MemberState>) -> Vec<Event> {
        let statuses = self.statuses();
        known.retain(|id, _| statuses.iter().any(|status| status.config.id == *id));
        let mut events = Vec::new();
        for status in statuses {
            let node = status.config.id;
            let initial = if node == self.self_id {
                MemberState::Up
            } else {
                MemberState::Down
            };
            let known = known.entry(node).or_insert(initial);
            // Events tell up from down; suspect counts as up here (missing a heartbeat
            // or two on a busy host is not news).
            let state = if status.state.is_alive() {
                MemberState::Up
            } else {
                MemberState::Down
            };
            if *known != state {
                *known = state;
                events.push(match state {
                    MemberState::Down => Event::NodeDown { node },
                    _ => Event::NodeUp { node },
                });
            }
        }
        events
    }
}

/// Sends heartbeats to every other member until `shutdown` turns true, following changes of
/// the member list.
pub async fn run(node: Arc<Node>, mut shutdown: watch::Receiver<bool>) {
    let mut tasks = JoinSet::new();
    let mut running: HashMap<u32, (Arc<Slot>, tokio::task::AbortHandle)> = HashMap::new();
    let mut changes = node.membership.subscribe();
    tasks.spawn(record_changes(Arc::clone(&node)).in_current_span());
    loop {
        let slots = node.liveness.slots();
        running.retain(|id, (slot, task)| {
            let listed = slots.iter().any(|s| Arc::ptr_eq(s, slot));
            if !listed {
                tracing::debug!(member = id, "heartbeats stop: no longer listed as it was");
                task.abort();
            }
            listed
        });
        for slot in slots {
            let id = slot.config.id;
            if id == node.liveness.self_id || running.contains_key(&id) {
                continue;
            }
            let span = tracing::debug_span!("heartbeat", node = node.id.0, member = id);
            let task = tasks
                .spawn(heartbeat_member(Arc::clone(&node), Arc::clone(&slot)).instrument(span));
            running.insert(id, (slot, task));
        }
        tokio::select! {
            biased;
            changed = changes.changed() => {
                if changed.is_err() {
                    break;
                }
                node.liveness.set_members(node.membership.view().members.clone());
            }
            () = until_stopped(&mut shutdown) => break,
        }
    }
    tasks.shutdown().await;
}

/// Records every member's change of state in the event log (members as the list changes:
/// a new member is down until it answers, a removed one is forgotten).
async fn record_changes(node: Arc<Node>) {
    let heartbeat = Duration::from_millis(node.config.heartbeat_interval_ms);
    let mut ticks = tokio::time::interval(heartbeat.min(TRANSITION_CHECK_INTERVAL_MAX));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut known = HashMap::new();
    loop {
        ticks.tick().await;
        for event in node.liveness.changes(&mut known) {
            node.events.record(event);
        }
    }
}

/// Keeps one connection to member `slot` and PINGs it, reconnecting with backoff.
async fn heartbeat_member(node: Arc<Node>, slot: Arc<Slot>) {
    let interval = Duration::from_millis(node.config.heartbeat_interval_ms);
    let mut backoff = interval;
    loop {
        let started = Instant::now();
        if let Err(error) = ping_member(&node, &slot, interval).await {
            tracing::debug!(%error, "heartbeat connection failed");
        }
        if started.elapsed() > RECONNECT_BACKOFF_MAX {
            backoff = interval;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
    }
}

/// Connects to member `slot`, authenticates, and PINGs it every `interval` until a PING
/// fails or goes unanswered for `down_after_ms`. A member on a newer ring epoch is asked for
/// its member list first.
async fn ping_member(node: &Arc<Node>, slot: &Slot, interval: Duration) -> anyhow::Result<()> {
    let member = &slot.config;
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
    if peer.ring_epoch > node.membership.epoch() {
        catch_up(node, &mut peer, None).await?;
    }
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tick: u64 = 0;
    loop {
        ticks.tick().await;
        tick += 1;
        // Now and then the member's list too: a node that missed a push while its
        // connections stayed up must not stay on an old ring.
        if tick.is_multiple_of(MEMBERS_CHECK_EVERY) {
            timeout(
                answer_timeout,
                catch_up(node, &mut peer, Some(node.membership.epoch())),
            )
            .await??;
        }
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
        node.liveness.heard(slot);
    }
}

/// Takes the member list of `peer` if its epoch is above `known` (`None`: the peer said it is
/// on a newer one).
async fn catch_up(
    node: &Arc<Node>,
    peer: &mut PeerConnection,
    known: Option<u64>,
) -> anyhow::Result<()> {
    let (reply, body) = peer.request(&MembersGet, Bytes::new()).await?;
    let nabu_proto::Response::MembersGet(nabu_proto::ops::MembersGetReply(header)) = reply else {
        anyhow::bail!("MEMBERS_GET answered with {}", reply.op());
    };
    if known.is_some_and(|epoch| header.epoch <= epoch) {
        return Ok(());
    }
    let members = decode_members(&body, header.members)?;
    let taker = Arc::clone(node);
    let offered =
        nabu_client::sim::spawn_blocking(move || taker.membership.offer(header.epoch, &members));
    if offered.await?? {
        tracing::info!(
            epoch = header.epoch,
            "caught up with a peer's newer member list"
        );
    }
    Ok(())
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
        let liveness = Liveness::new(
            1,
            vec![member(1), member(2), member(3)],
            down_after / 2,
            down_after,
        );
        let mut known = HashMap::new();
        assert_eq!(
            liveness.changes(&mut known),
            [],
            "nobody answered yet: no change"
        );
        let slots = liveness.slots();
        liveness.heard(&slots[1]);
        liveness.heard(&slots[2]);
        assert_eq!(
            liveness.changes(&mut known),
            [Event::NodeUp { node: 2 }, Event::NodeUp { node: 3 }]
        );
        assert_eq!(liveness.changes(&mut known), [], "reported once");
        // Let down_after pass without an answer from member 3.
        let heard_again = std::time::Instant::now() + down_after * 2;
        while std::time::Instant::now() < heard_again {
            liveness.heard(&slots[1]);
            std::thread::yield_now();
        }
        assert_eq!(liveness.changes(&mut known), [Event::NodeDown { node: 3 }]);
    }

    #[test]
    fn a_member_is_suspect_after_missed_heartbeats_then_down() {
        let (suspect_after, down_after) = (Duration::from_millis(40), Duration::from_secs(3600));
        let liveness = Liveness::new(1, vec![member(1), member(2)], suspect_after, down_after);
        let state_of_2 = |liveness: &Liveness| liveness.statuses()[1].state;
        assert_eq!(
            state_of_2(&liveness),
            MemberState::Down,
            "never heard: down"
        );
        liveness.heard(&liveness.slots()[1]);
        assert_eq!(state_of_2(&liveness), MemberState::Up);
        let quiet_until = std::time::Instant::now() + suspect_after * 2;
        while std::time::Instant::now() < quiet_until {
            std::thread::yield_now();
        }
        assert_eq!(state_of_2(&liveness), MemberState::Suspect);
        assert!(liveness.is_up(2), "a suspect member is still routed to");
        assert_eq!(liveness.statuses()[0].state, MemberState::Up, "this node");
        let mut known = HashMap::from([(2, MemberState::Up)]);
        assert_eq!(liveness.changes(&mut known), [], "suspect is not an event");
        let down = Liveness::new(1, vec![member(1), member(2)], suspect_after, suspect_after);
        down.heard(&down.slots()[1]);
        let quiet_until = std::time::Instant::now() + suspect_after * 2;
        while std::time::Instant::now() < quiet_until {
            std::thread::yield_now();
        }
        assert_eq!(
            state_of_2(&down),
            MemberState::Down,
            "past down_after: down"
        );
    }
}
