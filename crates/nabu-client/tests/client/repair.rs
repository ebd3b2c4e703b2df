//! Hinted handoff and repair against real nodes: shards that could not go to a down node
//! reach it once it is back (handed-off shards move home; missing shards are rebuilt), and a
//! hint outlives restarts while its home stays down.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use nabu_client::{Client, PutReceipt};
use nabu_core::id::StripeId;
use nabu_core::policy::Durability;
use nabu_core::ring::NodeId;
use nabu_node::Listeners;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{MIB, NS, TestCluster, assert_same, random_bytes, shard_holders, spawn_node};

/// How long hint replay may take once a node is back: heartbeats reconnect within 5 s (their
/// backoff cap), replay rounds run every 200 ms here.
const REPLAY_DEADLINE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);

impl TestCluster {
    /// Starts a stopped node again on its data dir and addresses.
    pub(super) async fn restart(&mut self, id: NodeId) {
        let node = self
            .nodes
            .iter_mut()
            .find(|node| node.id == id.0)
            .expect("node");
        assert!(node.task.is_none(), "node {id} is running");
        let config = node.config.clone();
        let bind = |addr| async move { TcpListener::bind(addr).await.expect("rebind") };
        let listeners = Listeners {
            data: bind(config.data_addr).await,
            peer: bind(config.peer_addr).await,
            http: bind(config.http_addr).await,
            data_unix: None,
            resp: None,
        };
        let socket = config
            .data_socket
            .as_deref()
            .expect("test nodes have a socket");
        let listeners = listeners.with_data_socket(socket).expect("rebind socket");
        let (stop, task) = spawn_node(config, listeners);
        node.stop = Some(stop);
        node.task = Some(task);
    }

    /// One unlabelled metric of node `id`, read from `/metrics`.
    pub(super) async fn metric(&self, id: NodeId, name: &str) -> u64 {
        let addr = self.node(id).config.http_addr;
        let mut stream = TcpStream::connect(addr).await.expect("connect http");
        let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut text = String::new();
        stream.read_to_string(&mut text).await.expect("read");
        let prefix = format!("{name} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {name} in /metrics"))
            .trim()
            .parse()
            .expect("a number")
    }

    /// How many events of `kind` node `id`'s event log holds (`/api/v1/events`).
    pub(super) async fn events_of_kind(&self, id: NodeId, kind: &str) -> usize {
        let addr = self.node(id).config.http_addr;
        let mut stream = TcpStream::connect(addr).await.expect("connect http");
        let request =
            format!("GET /api/v1/events HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut text = String::new();
        stream.read_to_string(&mut text).await.expect("read");
        text.matches(&format!("\"kind\":\"{kind}\"")).count()
    }

    /// `nabu_hints_pending` summed over the running nodes.
    async fn hints_pending(&self) -> u64 {
        let mut total = 0;
        for node in self.nodes.iter().filter(|node| node.task.is_some()) {
            total += self.metric(NodeId(node.id), "nabu_hints_pending").await;
        }
        total
    }
}

/// Polls `done` every [`POLL`] until it holds, failing after [`REPLAY_DEADLINE`] with `what`.
pub(super) async fn eventually<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while !done().await {
        assert!(
            started.elapsed() < REPLAY_DEADLINE,
            "not within {REPLAY_DEADLINE:?}: {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The stripes of a put, from its manifest.
async fn stripes_of(client: &Client, receipt: &PutReceipt) -> Vec<StripeId> {
    let manifest = client
        .read_manifest(NS, receipt.blob_id)
        .await
        .expect("manifest");
    manifest
        .stripes
        .iter()
        .map(|entry| entry.stripe_id)
        .collect()
}

/// Whether every stripe has its six shards, one of each index, on its six placement nodes.
async fn all_shards_home(cluster: &TestCluster, client: &Client, stripes: &[StripeId]) -> bool {
    for &stripe_id in stripes {
        let holders = shard_holders(cluster, client, stripe_id).await;
        let nodes: BTreeSet<NodeId> = holders.iter().map(|(node, _)| *node).collect();
        assert_eq!(
            nodes.len(),
            holders.len(),
            "one shard per node: {holders:?}"
        );
        let placement: BTreeSet<NodeId> = client
            .ring()
            .placement(stripe_id.ring_point(), 6)
            .into_iter()
            .collect();
        let indexes: BTreeSet<u8> = holders.iter().map(|(_, index)| *index).collect();
        if nodes != placement || indexes != (0..6).collect() {
            return false;
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_nodes_one_down_the_missing_shards_are_rebuilt_when_it_returns() {
    let mut cluster = TestCluster::start(6).await;
    let client = cluster.client();
    let down = NodeId(3);
    cluster.stop(down).await;
    let bytes = random_bytes(30, 10 * MIB + 1);
    let receipt = client.put(NS, b"repair", bytes.clone()).await.expect("put");
    assert_eq!((receipt.shards_written, receipt.shards_missing), (15, 3));
    assert!(
        cluster.hints_pending().await >= 3,
        "every missing shard left a repair hint"
    );

    cluster.restart(down).await;
    let stat_client = cluster.client();
    eventually("node 3 holds the missing shard of every stripe", || async {
        for missing in &receipt.missing {
            let stat = stat_client.pool().shard_stat(down, missing.stripe_id).await;
            let Ok(Some(info)) = stat else { return false };
            let nabu_proto::ops::ShardLayout::Erasure { index, .. } = info.layout else {
                panic!("an ec shard");
            };
            assert_eq!(index, missing.shard_index, "the missing index, rebuilt");
        }
        true
    })
    .await;
    let stripes = stripes_of(&client, &receipt).await;
    assert!(all_shards_home(&cluster, &stat_client, &stripes).await);
    eventually("hints drained", || async {
        cluster.hints_pending().await == 0
    })
    .await;
    let repaired: u64 = {
        let mut total = 0;
        for id in 1..=6 {
            total += cluster
                .metric(NodeId(id), "nabu_shards_repaired_total")
                .await;
        }
        total
    };
    assert!(repaired >= 3, "{repaired} shards counted repaired");
    // Two more nodes down (sparing the metadata): four shards per stripe are left, the rebuilt
    // one among them, so the read decodes with it.
    let key_nodes = client.key_record_nodes(NS, b"repair", Durability::EC_4_2);
    let manifest_nodes = client
        .ring()
        .placement(receipt.blob_id.ring_point(), key_nodes.len());
    let others: Vec<NodeId> = [1, 2, 4, 5, 6].into_iter().map(NodeId).collect();
    let pair = others
        .iter()
        .flat_map(|&a| others.iter().map(move |&b| [a, b]))
        .find(|pair| {
            let spares = |nodes: &[NodeId]| nodes.iter().any(|n| !pair.contains(n));
            pair[0] < pair[1] && spares(&key_nodes) && spares(&manifest_nodes)
        })
        .expect("two nodes that spare the metadata");
    for id in pair {
        cluster.stop(id).await;
    }
    assert_same(
        &cluster.client().get(NS, b"repair").await.expect("get"),
        &bytes,
        "after repair, two other nodes down",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_nodes_one_down_handed_off_shards_move_home_when_it_returns() {
    let mut cluster = TestCluster::start(8).await;
    let client = cluster.client();
    let bytes = random_bytes(31, 12 * MIB);
    let first_stripe = StripeId::of(&bytes[..4 * MIB]);
    let down = client.ring().placement(first_stripe.ring_point(), 6)[2];
    cluster.stop(down).await;
    let receipt = client.put(NS, b"moves", bytes.clone()).await.expect("put");
    assert_eq!((receipt.shards_written, receipt.shards_missing), (18, 0));
    let stripes = stripes_of(&client, &receipt).await;
    assert!(!all_shards_home(&cluster, &client, &stripes).await);
    let handed_off = cluster.hints_pending().await;
    assert!(handed_off >= 1, "the handoff nodes keep hints");

    cluster.restart(down).await;
    let fresh = cluster.client();
    eventually(
        "every shard on its placement node, none left on handoff nodes",
        || all_shards_home(&cluster, &fresh, &stripes),
    )
    .await;
    eventually("hints drained", || async {
        cluster.hints_pending().await == 0
    })
    .await;
    let mut replayed = 0;
    for id in client.ring().members().iter().map(|member| member.id) {
        replayed += cluster.metric(id, "nabu_hints_replayed_total").await;
    }
    assert_eq!(replayed, handed_off, "each handoff hint replayed once");
    assert_same(
        &fresh.get(NS, b"moves").await.expect("get"),
        &bytes,
        "after the move home",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hint_whose_home_stays_down_is_kept_across_a_restart_of_its_holder() {
    let mut cluster = TestCluster::start(8).await;
    let client = cluster.client();
    let bytes = random_bytes(32, 4 * MIB);
    let stripe_id = StripeId::of(&bytes);
    let placement = client.ring().placement(stripe_id.ring_point(), 6);
    let home = placement[2];
    cluster.stop(home).await;
    let receipt = client.put(NS, b"kept", bytes.clone()).await.expect("put");
    assert_eq!(receipt.shards_missing, 0);
    let holders = shard_holders(&cluster, &client, stripe_id).await;
    let (holder, _) = *holders
        .iter()
        .find(|(node, index)| *index == 2 && !placement.contains(node))
        .expect("shard 2 went to a handoff node");
    assert_eq!(cluster.metric(holder, "nabu_hints_pending").await, 1);

    // Let the replay job run several rounds (every 200 ms) while the home is down: nothing to
    // wait for but time, since the point is that nothing happens.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(cluster.metric(holder, "nabu_hints_pending").await, 1);
    cluster.stop(holder).await;
    cluster.restart(holder).await;
    let fresh = cluster.client();
    eventually("the holder serves again", || async {
        fresh.pool().shard_stat(holder, stripe_id).await.is_ok()
    })
    .await;
    assert_eq!(
        cluster.metric(holder, "nabu_hints_pending").await,
        1,
        "the hint was loaded from disk"
    );
    assert!(
        fresh
            .pool()
            .shard_stat(holder, stripe_id)
            .await
            .expect("stat")
            .is_some()
    );

    cluster.restart(home).await;
    // The replay puts the shard home, deletes the holder's copy, then drops the hint: all
    // three are waited for.
    eventually(
        "shard 2 is home, gone from the holder, its hint done",
        || async {
            let home_has = matches!(fresh.pool().shard_stat(home, stripe_id).await, Ok(Some(_)));
            let holder_has = matches!(
                fresh.pool().shard_stat(holder, stripe_id).await,
                Ok(Some(_))
            );
            home_has && !holder_has && cluster.metric(holder, "nabu_hints_pending").await == 0
        },
    )
    .await;
    assert_same(
        &fresh.get(NS, b"kept").await.expect("get"),
        &bytes,
        "after the move home",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_lost_for_good_is_re_protected_and_two_more_losses_lose_nothing() {
    let mut cluster =
        TestCluster::start_configured(8, std::collections::BTreeMap::new(), |config| {
            config.repair_after_ms = 3_000;
        })
        .await;
    let client = cluster.client();
    // Erasure-coded objects of three stripes (the last one short), and small objects kept
    // as whole copies.
    let mut objects = Vec::new();
    for seed in 0..10u64 {
        let (key, length) = match seed % 2 {
            0 => (format!("big/{seed}"), 9 * MIB),
            _ => (format!("small/{seed}"), 100_000),
        };
        let bytes = random_bytes(2_000 + seed, length);
        client
            .put(NS, key.as_bytes(), bytes.clone())
            .await
            .expect("put");
        objects.push((key, bytes));
    }
    let before = client
        .check_redundancy(nabu_client::CheckOptions::default(), |_| {})
        .await
        .expect("check");
    assert!(before.all_full(), "{before:?}");
    assert_eq!(before.keys, objects.len() as u64);

    // Node 5 is lost for good; node 1 (the lowest id up) restores redundancy.
    let lost = NodeId(5);
    cluster.stop(lost).await;
    let stopped_at = Instant::now();
    eventually("every stripe is back at full redundancy", || async {
        let report = client
            .check_redundancy(nabu_client::CheckOptions::default(), |_| {})
            .await
            .expect("check");
        report.all_full() && report.stripes == before.stripes
    })
    .await;
    let took = stopped_at.elapsed();
    // The lowest-id node that is up coordinates: node 1, unless a busy machine made a
    // node miss its heartbeats for a while (then it did too).
    let (mut repaired, mut coordinators) = (0, Vec::new());
    for node in cluster.nodes.iter().filter(|node| node.task.is_some()) {
        let id = NodeId(node.id);
        let rewritten = cluster
            .metric(id, "nabu_reprotect_stripes_repaired_total")
            .await;
        if rewritten > 0 {
            coordinators.push(id);
        }
        repaired += rewritten;
    }
    println!(
        "re-protection: {repaired} of {} stripes rewritten by {coordinators:?}; full \
         redundancy {took:?} after the loss (repair_after 3 s)",
        before.stripes
    );
    assert!(repaired >= 1, "a node restored redundancy");

    // Two more nodes lost: every object still reads back exactly.
    for id in [2, 3] {
        cluster.stop(NodeId(id)).await;
    }
    for (key, bytes) in &objects {
        let got = client.get(NS, key.as_bytes()).await.expect("get");
        assert_same(&got, bytes, key);
    }
}
