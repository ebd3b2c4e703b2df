//! The serving node's cluster-wide live view, fed to every `/api/v1/stream` listener.
//!
//! While at least one listener is connected, a collector task samples every member's
//! `/api/v1/node` each [`TICK`] (this node's own counters directly), all members in parallel
//! with a [`FETCH_TIMEOUT`] each, so a stopped member cannot hold the others back. From the
//! samples of the last [`WINDOW_TICKS`] ticks it computes rates, windowed latency quantiles
//! and per-link peer traffic ([`LiveView`]), serializes that once and broadcasts it; new
//! events of any member's log are fetched and broadcast as they appear (members' up/down
//! events only from this node's log: liveness is shown as this node's heartbeats see it, the
//! same as `/api/v1/cluster`). When the last listener leaves, the collector stops; a page
//! costs the cluster nothing when nobody looks.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinSet;

use super::stats::{Hardware, NodeGauges, NodeStats, node_stats};
use crate::events::{Event, EventEntry, unix_time_ms};
use crate::liveness::MemberState;
use crate::metrics::quantile_us;
use crate::node::{Node, until_stopped};

/// How often the live view is sampled and sent.
pub const TICK: Duration = Duration::from_millis(500);
/// The longest wait for one member's counters in a tick.
pub const FETCH_TIMEOUT: Duration = Duration::from_millis(400);
/// Rates and quantiles are computed over this many ticks (one second).
pub const WINDOW_TICKS: usize = 2;
/// Events kept for listeners that connect later.
pub const RECENT_EVENTS_MAX: usize = 200;
/// Events fetched from one member per tick.
const EVENTS_PER_FETCH_MAX: usize = 100;
/// Messages a slow listener may fall behind before it skips some.
const CHANNEL_MESSAGES_MAX: usize = 256;

/// One message to listeners: a serialized [`LiveView`] or [`EventEntry`].
#[derive(Debug, Clone)]
pub enum HubMessage {
    /// `event: stats`.
    Stats(Arc<str>),
    /// `event: event`.
    Event(Arc<str>),
}

/// The live view's hub: one per node (`node.dashboard`), idle until someone listens.
#[derive(Debug, Default)]
pub struct Hub {
    state: Mutex<HubState>,
    hardware: OnceLock<Hardware>,
}

#[derive(Debug, Default)]
struct HubState {
    /// Present while the collector runs.
    sender: Option<broadcast::Sender<HubMessage>>,
    /// The newest live view.
    latest: Option<Arc<str>>,
    /// The newest events, oldest first, at most [`RECENT_EVENTS_MAX`].
    recent: VecDeque<Arc<str>>,
}

impl Hub {
    /// A new listener: what it missed (recent events, then the newest view) and the channel of
    /// what comes next. Starts the collector if none runs.
    pub fn subscribe(
        &self,
        node: &Arc<Node>,
        shutdown: watch::Receiver<bool>,
    ) -> (Vec<HubMessage>, broadcast::Receiver<HubMessage>) {
        let mut state = self.lock();
        let receiver = match &state.sender {
            Some(sender) => sender.subscribe(),
            None => {
                let (sender, receiver) = broadcast::channel(CHANNEL_MESSAGES_MAX);
                state.sender = Some(sender);
                tokio::spawn(collect(Arc::downgrade(node), shutdown));
                receiver
            }
        };
        let mut backlog: Vec<HubMessage> = state
            .recent
            .iter()
            .cloned()
            .map(HubMessage::Event)
            .collect();
        backlog.extend(state.latest.clone().map(HubMessage::Stats));
        (backlog, receiver)
    }

    /// This machine's hardware, detected on first use.
    pub fn hardware(&self) -> &Hardware {
        self.hardware.get_or_init(Hardware::detect)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sends `message` to every listener; false when none is left (the collector then
    /// stops, under the same lock a new listener takes to find it running).
    fn publish(&self, message: HubMessage) -> bool {
        let mut state = self.lock();
        match &message {
            HubMessage::Stats(view) => state.latest = Some(Arc::clone(view)),
            HubMessage::Event(event) => {
                if state.recent.len() == RECENT_EVENTS_MAX {
                    state.recent.pop_front();
                }
                state.recent.push_back(Arc::clone(event));
            }
        }
        let listening = state
            .sender
            .as_ref()
            .is_some_and(|sender| sender.send(message).is_ok());
        if !listening {
            state.sender = None;
        }
        listening
    }

    fn stop(&self) {
        self.lock().sender = None;
    }
}

/// The cluster as the serving node sees it now: `event: stats` of `/api/v1/stream`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveView {
    /// When it was sampled, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The node that serves it.
    pub serving_node: u32,
    /// The ring epoch of its member list (a change: fetch `/api/v1/ring` again).
    pub ring_epoch: u64,
    /// Every member, in member-list order.
    pub nodes: Vec<LiveNode>,
    /// Peer-plane links with traffic in the window.
    pub links: Vec<LiveLink>,
}

/// One member in [`LiveView`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveNode {
    /// Its id.
    pub id: u32,
    /// Its zone.
    pub zone: String,
    /// Its ring weight.
    pub weight: u32,
    /// Its management address.
    pub http_addr: SocketAddr,
    /// Up or down, as the serving node's heartbeats see it.
    pub state: MemberState,
    /// Whether its counters answered this tick (the fields below are absent otherwise).
    pub reachable: bool,
    /// Its gauges and its rates over the window.
    #[serde(flatten)]
    pub sample: Option<LiveSample>,
}

/// A reachable member's numbers in [`LiveNode`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveSample {
    /// Its gauges and the totals shown as they are (flattened into this object).
    #[serde(flatten)]
    pub gauges: NodeGauges,
    /// Data-plane bytes received per second.
    pub data_in_bytes_per_s: f64,
    /// Data-plane bytes sent per second.
    pub data_out_bytes_per_s: f64,
    /// Peer-plane bytes received per second.
    pub peer_in_bytes_per_s: f64,
    /// Peer-plane bytes sent per second.
    pub peer_out_bytes_per_s: f64,
    /// Requests answered per second.
    pub ops_per_s: f64,
    /// Hint-replay bytes sent per second (repair progress).
    pub repair_bytes_per_s: f64,
    /// Bytes the scrubber rereads per second.
    pub scrub_bytes_per_s: f64,
    /// Bytes rebalancing moves per second.
    pub rebalance_bytes_per_s: f64,
    /// KV pool hits among its reads in the window (`null`: no reads).
    pub kv_hit_ratio: Option<f64>,
    /// Latency quantiles over the window, per op class.
    pub latency: Vec<ClassLatency>,
}

/// One op class's latency in [`LiveSample`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassLatency {
    /// `read`, `write`, `kv` or `control`.
    pub class: String,
    /// Median in microseconds (`null`: no request in the window).
    pub p50_us: Option<u64>,
    /// 99th percentile in microseconds.
    pub p99_us: Option<u64>,
    /// Requests of the class in the window.
    pub count: u64,
}

/// Peer-plane traffic between two members in [`LiveView`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveLink {
    /// The member with the smaller id.
    pub a: u32,
    /// The other.
    pub b: u32,
    /// Bytes per second both ways, as both ends counted them.
    pub bytes_per_s: f64,
}

/// Samples the cluster every tick until nobody listens, the node stops or shuts down.
async fn collect(node: Weak<Node>, mut shutdown: watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut history: HashMap<u32, VecDeque<NodeStats>> = HashMap::new();
    let mut events_seen: HashMap<u32, u64> = HashMap::new();
    loop {
        tokio::select! {
            biased;
            _ = until_stopped(&mut shutdown) => break,
            _ = ticks.tick() => {}
        }
        let Some(node) = node.upgrade() else { return };
        let samples = sample_members(&node).await;
        let mut listening = true;
        for entry in new_events(&node, &samples, &mut events_seen).await {
            let Ok(json) = serde_json::to_string(&entry) else {
                continue;
            };
            listening &= node.dashboard.publish(HubMessage::Event(json.into()));
        }
        let view = live_view(&node, &samples, &mut history);
        if let Ok(json) = serde_json::to_string(&view) {
            listening &= node.dashboard.publish(HubMessage::Stats(json.into()));
        }
        if !listening {
            return;
        }
    }
    if let Some(node) = node.upgrade() {
        node.dashboard.stop();
    }
}

/// The counters of every member that answered in time, by member id.
async fn sample_members(node: &Arc<Node>) -> HashMap<u32, NodeStats> {
    let view = node.membership.view();
    let mut tasks = JoinSet::new();
    for member in &view.members {
        let node = Arc::clone(node);
        let http_addr = member.http_addr;
        let member_id = member.id;
        let own = member.id == node.id.0;
        tasks.spawn(async move {
            let stats = if own {
                nabu_client::sim::spawn_blocking(move || {
                    node_stats(&node, node.dashboard.hardware())
                })
                .await
                .ok()
            } else {
                fetch_json(http_addr, "/api/v1/node").await
            };
            (member_id, stats)
        });
    }
    let mut samples = HashMap::new();
    while let Some(joined) = tasks.join_next().await {
        if let Ok((member_id, Some(stats))) = joined {
            samples.insert(member_id, stats);
        }
    }
    samples
}

/// `GET path` on a member's management plane, parsed; `None` on any failure or timeout.
async fn fetch_json<T: serde::de::DeserializeOwned>(addr: SocketAddr, path: &str) -> Option<T> {
    let (status, body) = tokio::time::timeout(FETCH_TIMEOUT, crate::http_get::get(addr, path))
        .await
        .ok()??;
    if status != 200 {
        return None;
    }
    serde_json::from_slice(&body).ok()
}

/// The events members recorded since the last look (`events_seen`: member → newest sequence
/// number seen), oldest first. A member whose sequence went back restarted: read it anew.
async fn new_events(
    node: &Arc<Node>,
    samples: &HashMap<u32, NodeStats>,
    events_seen: &mut HashMap<u32, u64>,
) -> Vec<EventEntry> {
    let mut tasks = JoinSet::new();
    for member in &node.membership.view().members {
        let Some(stats) = samples.get(&member.id) else {
            continue;
        };
        let seen = events_seen.get(&member.id).copied().unwrap_or(0);
        if stats.events_seq == seen {
            continue;
        }
        let after = if stats.events_seq < seen { 0 } else { seen };
        let own = member.id == node.id.0;
        let node = Arc::clone(node);
        let http_addr = member.http_addr;
        tasks.spawn(async move {
            if own {
                Some(node.events.since(after, EVENTS_PER_FETCH_MAX))
            } else {
                let path = format!("/api/v1/events?after={after}&limit={EVENTS_PER_FETCH_MAX}");
                fetch_json::<Vec<EventEntry>>(http_addr, &path).await
            }
        });
    }
    let mut entries = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let Ok(Some(fetched)) = joined else { continue };
        if let Some(last) = fetched.last() {
            events_seen.insert(last.reporter, last.seq);
        }
        let own_view = |entry: &EventEntry| {
            let liveness = matches!(entry.event, Event::NodeUp { .. } | Event::NodeDown { .. });
            !liveness || entry.reporter == node.id.0
        };
        entries.extend(fetched.into_iter().filter(own_view));
    }
    entries.sort_by_key(|entry| (entry.time_ms, entry.reporter, entry.seq));
    entries
}

/// The live view from this tick's `samples` and the window kept in `history` (updated).
fn live_view(
    node: &Node,
    samples: &HashMap<u32, NodeStats>,
    history: &mut HashMap<u32, VecDeque<NodeStats>>,
) -> LiveView {
    let statuses = node.liveness.statuses();
    history.retain(|id, _| statuses.iter().any(|status| status.config.id == *id));
    let mut nodes = Vec::with_capacity(statuses.len());
    for status in statuses {
        let id = status.config.id;
        let window = history.entry(id).or_default();
        let sample = samples.get(&id).map(|stats| {
            push_sample(window, stats);
            live_sample(window)
        });
        nodes.push(LiveNode {
            id,
            zone: status.config.zone,
            weight: status.config.weight,
            http_addr: status.config.http_addr,
            state: status.state,
            reachable: sample.is_some(),
            sample,
        });
    }
    LiveView {
        time_ms: unix_time_ms(),
        serving_node: node.id.0,
        ring_epoch: node.membership.epoch(),
        nodes,
        links: live_links(history),
    }
}

/// Adds `stats` to a member's `window` of the last [`WINDOW_TICKS`] + 1 samples. After a
/// restart (uptime went back) the window starts again from the member's start: its counters
/// began at 0 then, so the first rates count from there rather than from the next sample.
fn push_sample(window: &mut VecDeque<NodeStats>, stats: &NodeStats) {
    let restarted = window
        .back()
        .is_some_and(|last| last.gauges.uptime_s > stats.gauges.uptime_s);
    if restarted {
        window.clear();
        window.push_back(stats.at_start());
    }
    window.push_back(stats.clone());
    if window.len() > WINDOW_TICKS + 1 {
        window.pop_front();
    }
}

/// Gauges of the newest sample in `window`, rates between its oldest and newest.
fn live_sample(window: &VecDeque<NodeStats>) -> LiveSample {
    let newest = window.back().expect("a window holds the sample just taken");
    let oldest = window
        .front()
        .expect("a window holds the sample just taken");
    let seconds = newest.time_ms.saturating_sub(oldest.time_ms) as f64 / 1000.0;
    let rate = |field: fn(&NodeStats) -> u64| {
        if seconds > 0.0 {
            field(newest).saturating_sub(field(oldest)) as f64 / seconds
        } else {
            0.0
        }
    };
    let kv_reads = (newest.kv_hits_total + newest.kv_misses_total)
        .saturating_sub(oldest.kv_hits_total + oldest.kv_misses_total);
    let kv_hits = newest.kv_hits_total.saturating_sub(oldest.kv_hits_total);
    let latency = newest
        .latency
        .iter()
        .map(|histogram| {
            let before = oldest
                .latency
                .iter()
                .find(|old| old.class == histogram.class);
            let counts: Vec<u64> = histogram
                .counts
                .iter()
                .enumerate()
                .map(|(index, &count)| {
                    let old = before.and_then(|old| old.counts.get(index)).copied();
                    count.saturating_sub(old.unwrap_or(0))
                })
                .collect();
            ClassLatency {
                class: histogram.class.clone(),
                p50_us: quantile_us(&counts, 0.5),
                p99_us: quantile_us(&counts, 0.99),
                count: counts.iter().sum(),
            }
        })
        .collect();
    LiveSample {
        gauges: newest.gauges.clone(),
        data_in_bytes_per_s: rate(|s| s.data_bytes_in_total),
        data_out_bytes_per_s: rate(|s| s.data_bytes_out_total),
        peer_in_bytes_per_s: rate(|s| s.peer_bytes_in_total),
        peer_out_bytes_per_s: rate(|s| s.peer_bytes_out_total),
        ops_per_s: rate(|s| s.requests_total),
        repair_bytes_per_s: rate(|s| s.hint_bytes_moved_total),
        scrub_bytes_per_s: rate(|s| s.scrub_bytes_checked_total),
        rebalance_bytes_per_s: rate(|s| s.rebalance_bytes_moved_total),
        kv_hit_ratio: (kv_reads > 0).then(|| kv_hits as f64 / kv_reads as f64),
        latency,
    }
}

/// Links with traffic over each member's window: every peer-plane byte is counted by the end
/// that accepted its connection, so a link's rate is the sum of both ends' counters.
fn live_links(history: &HashMap<u32, VecDeque<NodeStats>>) -> Vec<LiveLink> {
    let mut links: HashMap<(u32, u32), f64> = HashMap::new();
    for window in history.values() {
        let (Some(oldest), Some(newest)) = (window.front(), window.back()) else {
            continue;
        };
        let seconds = newest.time_ms.saturating_sub(oldest.time_ms) as f64 / 1000.0;
        if seconds <= 0.0 {
            continue;
        }
        for peer in &newest.peers {
            let before = oldest.peers.iter().find(|old| old.member == peer.member);
            let total = |p: &super::stats::PeerTraffic| p.bytes_in_total + p.bytes_out_total;
            let bytes = total(peer).saturating_sub(before.map_or(0, total));
            if bytes > 0 {
                let pair = (
                    newest.node_id.min(peer.member),
                    newest.node_id.max(peer.member),
                );
                *links.entry(pair).or_default() += bytes as f64 / seconds;
            }
        }
    }
    let mut links: Vec<LiveLink> = links
        .into_iter()
        .map(|((a, b), bytes_per_s)| LiveLink { a, b, bytes_per_s })
        .collect();
    links.sort_by_key(|link| (link.a, link.b));
    links
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dashboard::stats::{ClassHistogram, PeerTraffic};
    use crate::metrics::{LATENCY_BUCKETS, latency_bucket};

    fn stats(node_id: u32, time_ms: u64, scale: u64) -> NodeStats {
        let mut counts = vec![0; LATENCY_BUCKETS];
        counts[latency_bucket(100)] = 90 * scale;
        counts[latency_bucket(5000)] = 10 * scale;
        NodeStats {
            node_id,
            time_ms,
            zone: "z".to_owned(),
            gauges: NodeGauges {
                uptime_s: time_ms / 1000,
                ..NodeGauges::default()
            },
            data_bytes_in_total: 1000 * scale,
            data_bytes_out_total: 500 * scale,
            peer_bytes_in_total: 0,
            peer_bytes_out_total: 0,
            requests_total: 100 * scale,
            latency: vec![ClassHistogram {
                class: "read".to_owned(),
                counts,
            }],
            peers: vec![PeerTraffic {
                member: 9,
                bytes_in_total: 10 * scale,
                bytes_out_total: 0,
            }],
            hint_bytes_moved_total: 0,
            scrub_bytes_checked_total: 0,
            rebalance_bytes_moved_total: 0,
            kv_hits_total: 3 * scale,
            kv_misses_total: scale,
            events_seq: 0,
        }
    }

    #[test]
    fn rates_and_quantiles_come_from_the_window() {
        let window: VecDeque<NodeStats> = [stats(1, 10_000, 1), stats(1, 12_000, 3)].into();
        let sample = live_sample(&window);
        assert_eq!(sample.data_in_bytes_per_s, 1000.0, "2000 bytes in 2 s");
        assert_eq!(sample.ops_per_s, 100.0);
        assert_eq!(sample.kv_hit_ratio, Some(0.75));
        let read = &sample.latency[0];
        assert_eq!(read.count, 200);
        assert!((100..=125).contains(&read.p50_us.expect("counted")));
        assert!((5000..=6250).contains(&read.p99_us.expect("counted")));
        let single: VecDeque<NodeStats> = [stats(1, 10_000, 1)].into();
        assert_eq!(
            live_sample(&single).ops_per_s,
            0.0,
            "one sample: no rate yet"
        );
    }

    #[test]
    fn a_restarted_node_counts_from_its_start() {
        // Sampled at 10 s of uptime, then again 3 s after a restart with 1 of its ×1 counts.
        let mut window = VecDeque::new();
        push_sample(&mut window, &stats(1, 9_000, 4));
        push_sample(&mut window, &stats(1, 10_000, 5));
        let mut after = stats(1, 20_000, 1);
        after.gauges.uptime_s = 3;
        push_sample(&mut window, &after);
        assert_eq!(window.len(), 2, "the start and the new sample");
        let sample = live_sample(&window);
        assert!((sample.data_in_bytes_per_s - 1000.0 / 3.0).abs() < 1e-9);
        assert_eq!(sample.latency[0].count, 100);
    }

    #[test]
    fn links_add_both_ends() {
        let mut history = HashMap::new();
        history.insert(1, [stats(1, 0, 1), stats(1, 1000, 2)].into());
        let mut other = stats(9, 0, 1);
        other.peers[0].member = 1;
        let mut later = stats(9, 1000, 4);
        later.peers[0].member = 1;
        history.insert(9, [other, later].into());
        let links = live_links(&history);
        assert_eq!(
            links,
            [LiveLink {
                a: 1,
                b: 9,
                bytes_per_s: 10.0 + 30.0
            }]
        );
    }
}
