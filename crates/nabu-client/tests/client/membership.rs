//! Membership change against real nodes: two nodes join a running cluster while a writer and
//! a reader run, and the cluster moves close to the ideal share of shards to them; a drained
//! node ends with no shards while reads go on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use nabu_client::{CheckOptions, Client};
use nabu_core::ring::NodeId;
use nabu_node::{Listeners, MemberConfig};
use nabu_proto::ops::MemberEntry;
use tokio::task::JoinHandle;

use super::repair::eventually;
use super::{MIB, NS, TestCluster, TestNode, assert_same, node_config, random_bytes, spawn_node};

impl TestCluster {
    /// The member list of the running cluster with nodes `joining` added (bound now, started
    /// on that list at `epoch`), in id order.
    pub(super) async fn join(&mut self, joining: &[u32], epoch: u64) -> Vec<MemberEntry> {
        let mut bound = Vec::new();
        for &id in joining {
            let (listeners, addrs) = self.bind(id).await;
            bound.push((id, listeners, addrs));
        }
        let mut members: Vec<MemberConfig> = self.nodes[0].config.members.clone();
        members.extend(
            bound
                .iter()
                .map(|(id, _, addrs)| MemberConfig::new(*id, "default", *addrs)),
        );
        for (id, listeners, addrs) in bound {
            let mut config = node_config(self._dir.path(), &self.token, id, addrs, members.clone());
            config.ring_epoch = epoch;
            self.spawn(config, listeners);
        }
        members.iter().map(MemberConfig::entry).collect()
    }

    /// Binds node `id`'s listeners (loopback ports and its data socket).
    pub(super) async fn bind(&self, id: u32) -> (Listeners, nabu_node::ListenerAddrs) {
        let socket = self._dir.path().join(format!("node-{id}.sock"));
        let listeners = Listeners::bind_loopback().await.expect("bind");
        let listeners = listeners.with_data_socket(&socket).expect("bind socket");
        let addrs = listeners.addrs().expect("addrs");
        (listeners, addrs)
    }

    /// Starts a node on `listeners` with `config` and keeps it with the others.
    pub(super) fn spawn(&mut self, config: nabu_node::NodeConfig, listeners: Listeners) {
        let (stop, task) = spawn_node(config.clone(), listeners);
        self.nodes.push(TestNode {
            id: config.id,
            data_dir: config.data_dirs[0].clone(),
            config,
            stop: Some(stop),
            task: Some(task),
        });
    }
}

/// A write the writer made, and how many members the ring it used had.
struct Acked {
    object: (String, Bytes),
    members: usize,
}

/// A writer that puts new 4 MiB objects (one stripe each) until stopped; returns what was
/// acknowledged.
fn spawn_writer(client: &Client, stop: &Arc<AtomicBool>) -> JoinHandle<Vec<Acked>> {
    let (client, stop) = (client.clone(), Arc::clone(stop));
    tokio::spawn(async move {
        let mut acked = Vec::new();
        let mut seed = 50_000;
        while !stop.load(Ordering::Relaxed) {
            let key = format!("live/{seed}");
            let bytes = random_bytes(seed, 4 * MIB);
            let members = client.ring().members().len();
            client
                .put(NS, key.as_bytes(), bytes.clone())
                .await
                .expect("a put during the membership change");
            acked.push(Acked {
                object: (key, bytes),
                members,
            });
            seed += 1;
        }
        acked
    })
}

/// A reader that reads `objects` round and round until stopped; returns the reads done.
fn spawn_reader(
    client: &Client,
    objects: &Arc<Vec<(String, Bytes)>>,
    stop: &Arc<AtomicBool>,
    reads: &Arc<AtomicU64>,
) -> JoinHandle<()> {
    let (client, objects, stop, reads) = (
        client.clone(),
        Arc::clone(objects),
        Arc::clone(stop),
        Arc::clone(reads),
    );
    tokio::spawn(async move {
        for (key, bytes) in objects.iter().cycle() {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let got = client
                .get(NS, key.as_bytes())
                .await
                .unwrap_or_else(|error| panic!("a read during the membership change: {error}"));
            assert_same(&got, bytes, key);
            reads.fetch_add(1, Ordering::Relaxed);
        }
    })
}

/// Whether every stripe is full and every shard on its current placement.
pub(super) async fn settled(client: &Client) -> bool {
    let report = client
        .check_redundancy(CheckOptions::default(), |_| {})
        .await
        .expect("check");
    report.all_full() && report.shards_misplaced == 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_join_while_a_writer_and_a_reader_run_and_take_their_share() {
    let mut cluster = TestCluster::start(6).await;
    two_nodes_join_under_load(&mut cluster, async |cluster, client| {
        let members = cluster.join(&[7, 8], 2).await;
        let refused = client.publish_members(2, &members).await.expect("publish");
        assert!(refused.is_empty(), "every node takes the list: {refused:?}");
    })
    .await;
}

/// Nodes 7 and 8 join a 6-node cluster (through `join`) while a writer and a reader run: no
/// read fails, every acknowledged write reads back, and the shards moved stay within 1.25×
/// the ideal 2/8 of all shards.
pub(super) async fn two_nodes_join_under_load(
    cluster: &mut TestCluster,
    join: impl AsyncFnOnce(&mut TestCluster, &Client),
) {
    let client = cluster.client();
    let mut objects = Vec::new();
    for seed in 0..48u64 {
        let key = format!("before/{seed}");
        let bytes = random_bytes(10_000 + seed, 4 * MIB);
        client
            .put(NS, key.as_bytes(), bytes.clone())
            .await
            .expect("put");
        objects.push((key, bytes));
    }
    let objects = Arc::new(objects);
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let writer = spawn_writer(&client, &stop);
    let reader = spawn_reader(&client, &objects, &stop, &reads);

    join(cluster, &client).await;
    eventually("the shards sit on their new 8-node placement", || async {
        client.ring().members().len() == 8 && settled(&client).await
    })
    .await;

    stop.store(true, Ordering::Relaxed);
    reader.await.expect("reader");
    let acked = writer.await.expect("writer");
    assert!(
        reads.load(Ordering::Relaxed) > 0,
        "the reader read during the change"
    );
    for (key, bytes) in objects
        .iter()
        .chain(acked.iter().map(|write| &write.object))
    {
        let got = client.get(NS, key.as_bytes()).await.expect("get");
        assert_same(&got, bytes, key);
    }
    // The move is close to ideal: 2 of 8 nodes are new, so 2/8 of the shards.
    // Node 1 coordinates, unless a busy machine made a node miss its heartbeats for a while.
    let mut moved = 0;
    for id in 1..=8 {
        moved += cluster
            .metric(NodeId(id), "nabu_rebalance_shards_moved_total")
            .await;
    }
    // What an old ring placed (each object one stripe): the first objects and the writer's
    // made before it saw all 8 nodes.
    let old_ring_writes = acked.iter().filter(|write| write.members < 8).count();
    let shards = (objects.len() + old_ring_writes) as u64 * 6;
    let ideal = shards as f64 * 2.0 / 8.0;
    println!(
        "join: {moved} of {shards} shards moved ({:.2}× the ideal {ideal}); {} writes and {} \
         reads during the change",
        moved as f64 / ideal,
        acked.len(),
        reads.load(Ordering::Relaxed)
    );
    // The same bytes again, under new keys: their stripes are stored already, with shards
    // the rebalancer moved off the slots a writer would pick; the puts complete them.
    for (key, bytes) in objects.iter() {
        let again = format!("again/{key}");
        client
            .put(NS, again.as_bytes(), bytes.clone())
            .await
            .unwrap_or_else(|error| panic!("a put of bytes stored before the change: {error}"));
        assert_same(
            &client.get(NS, again.as_bytes()).await.expect("get"),
            bytes,
            &again,
        );
    }
    assert!(moved > 0, "nothing moved");
    assert!(
        moved as f64 <= 1.25 * ideal,
        "{moved} shards moved, over 1.25 × the ideal {ideal}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_node_ends_empty_while_reads_run() {
    let cluster = TestCluster::start(7).await;
    let client = cluster.client();
    let mut objects = Vec::new();
    for seed in 0..16u64 {
        let key = format!("drain/{seed}");
        let bytes = random_bytes(20_000 + seed, 4 * MIB + 1_000);
        client
            .put(NS, key.as_bytes(), bytes.clone())
            .await
            .expect("put");
        objects.push((key, bytes));
    }
    let drained = NodeId(4);
    assert!(
        cluster.metric(drained, "nabu_shards").await > 0,
        "node 4 holds shards"
    );
    let objects = Arc::new(objects);
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let reader = spawn_reader(&client, &objects, &stop, &reads);

    // Weight 0: node 4 owns no part of the ring any more.
    let members: Vec<MemberEntry> = cluster.nodes[0]
        .config
        .members
        .iter()
        .map(|member| MemberEntry {
            weight: if member.id == drained.0 {
                0
            } else {
                member.weight
            },
            ..member.entry()
        })
        .collect();
    let refused = client.publish_members(2, &members).await.expect("publish");
    assert!(refused.is_empty(), "every node takes the list: {refused:?}");
    eventually("node 4 holds no shard", || async {
        cluster.metric(drained, "nabu_shards").await == 0 && settled(&client).await
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    reader.await.expect("reader");
    assert!(
        reads.load(Ordering::Relaxed) > 0,
        "the reader read during the drain"
    );
    for (key, bytes) in objects.iter() {
        let got = client.get(NS, key.as_bytes()).await.expect("get");
        assert_same(&got, bytes, key);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_on_the_new_ring_reads_everything_before_anything_moved() {
    let mut cluster = TestCluster::start(6).await;
    let writer = cluster.client();
    let mut objects = Vec::new();
    for seed in 0..48u64 {
        let key = format!("early/{seed}");
        let bytes = random_bytes(40_000 + seed, 64 * 1024 + seed as usize);
        writer
            .put(NS, key.as_bytes(), bytes.clone())
            .await
            .expect("put");
        objects.push((key, bytes));
    }
    // Six empty nodes are up, and a client runs on a ring of all twelve, which no node knows
    // yet: nothing has moved, and many keys have every metadata copy's new home on a new,
    // empty node.
    for id in 7..=12 {
        cluster.start_alone(id, |_| {}).await;
    }
    let mut members: Vec<MemberEntry> = cluster
        .nodes
        .iter()
        .map(|node| {
            let addrs = nabu_node::ListenerAddrs {
                data: node.config.data_addr,
                peer: node.config.peer_addr,
                http: node.config.http_addr,
            };
            MemberConfig::new(node.id, "default", addrs).entry()
        })
        .collect();
    members.sort_by_key(|member| member.id);
    let reader = cluster.client();
    assert!(reader.apply_members(2, &members).expect("apply"));
    for (key, bytes) in &objects {
        let got = reader
            .get(NS, key.as_bytes())
            .await
            .unwrap_or_else(|error| panic!("{key} on the new ring: {error}"));
        assert_same(&got, bytes, key);
    }
    // What a rebalance would have to move (the figure `nabu status` shows as left to move):
    // counted without moving anything. Every object is stored as whole copies of its
    // 64 KiB + seed bytes, so the misplaced bytes are that many copies of such sizes.
    let plan = reader
        .check_redundancy(CheckOptions::default(), |_| {})
        .await
        .expect("check");
    assert!(
        plan.shards_misplaced > 0,
        "twelve nodes: copies are misplaced"
    );
    assert_eq!(
        (plan.shards_moved, plan.bytes_moved),
        (0, 0),
        "a check moves nothing"
    );
    let (smallest, largest) = (64 * 1024, 64 * 1024 + 47);
    assert!(
        (plan.shards_misplaced * smallest..=plan.shards_misplaced * largest)
            .contains(&plan.bytes_misplaced),
        "{} misplaced copies hold {} bytes",
        plan.shards_misplaced,
        plan.bytes_misplaced
    );
}
