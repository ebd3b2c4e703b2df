//! Membership in etcd, against a real etcd server (`nabu_node::testing::EtcdServer`) and real
//! nodes: nodes register and join by themselves while a writer and a reader run, the ring
//! epoch is the etcd revision of the list, the data path goes on while etcd is down, and a
//! join made meanwhile completes once it is back; concurrent list changes never lose one.

use std::collections::BTreeMap;

use nabu_client::Client;
use nabu_core::ring::NodeId;
use nabu_node::testing::EtcdServer;
use nabu_node::{EtcdMembers, MemberListProvider, MembershipKind, NodeConfig};
use nabu_proto::ops::MemberEntry;

use super::membership::{settled, two_nodes_join_under_load};
use super::repair::eventually;
use super::{MIB, NS, TestCluster, assert_same, node_config, random_bytes};

/// Makes a node follow the member list in etcd at `url` under `prefix`.
fn etcd_membership(url: &str, prefix: &str) -> impl Fn(&mut NodeConfig) + use<> {
    let (url, prefix) = (url.to_owned(), prefix.to_owned());
    move |config: &mut NodeConfig| {
        config.membership = MembershipKind::Etcd;
        config.etcd_endpoints = vec![url.clone()];
        config.etcd_prefix.clone_from(&prefix);
        config.etcd_lease_ttl_ms = 4_000;
    }
}

impl TestCluster {
    /// Starts node `id` alone on its member list, as a new machine would be (under etcd it
    /// registers and joins by itself), configured by `configure`.
    pub(super) async fn start_alone(&mut self, id: u32, configure: impl Fn(&mut NodeConfig)) {
        let (listeners, addrs) = self.bind(id).await;
        let mut config = node_config(self._dir.path(), &self.token, id, addrs, Vec::new());
        configure(&mut config);
        self.spawn(config, listeners);
    }

    /// Waits until every node runs on the list in etcd, `members` long, at the list's ring
    /// epoch (its etcd revision); returns that epoch.
    async fn on_etcd_list(&self, client: &Client, etcd: &EtcdMembers, members: usize) -> u64 {
        let epoch = std::sync::atomic::AtomicU64::new(0);
        eventually("every node runs on etcd's member list", || async {
            let Ok(list) = etcd.current().await else {
                return false;
            };
            epoch.store(list.epoch, std::sync::atomic::Ordering::Relaxed);
            if list.members.len() != members {
                return false;
            }
            for node in &self.nodes {
                match client.pool().members_get(NodeId(node.id)).await {
                    Ok((node_epoch, _)) if node_epoch == list.epoch => {}
                    _ => return false,
                }
            }
            true
        })
        .await;
        epoch.into_inner()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_cluster_takes_two_nodes_that_join_by_themselves_under_load() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = EtcdServer::start(dir.path()).await;
    let prefix = "/nabu/test-join";
    let configure = etcd_membership(&server.url(), prefix);
    let mut cluster = TestCluster::start_configured(6, BTreeMap::new(), &configure).await;
    let etcd = EtcdMembers::connect(&[server.url()], prefix)
        .await
        .expect("etcd");
    let first = cluster.on_etcd_list(&cluster.client(), &etcd, 6).await;
    assert!(first > 1, "the epoch is the list's etcd revision: {first}");

    two_nodes_join_under_load(&mut cluster, async |cluster, _client| {
        for id in [7, 8] {
            cluster.start_alone(id, &configure).await;
        }
    })
    .await;

    let client = cluster.client();
    let last = cluster.on_etcd_list(&client, &etcd, 8).await;
    assert!(
        last > first,
        "each join is a new revision: {first} → {last}"
    );
    assert_eq!(
        etcd.registered().await.expect("registered"),
        (1..=8).collect::<Vec<u32>>(),
        "every running node is registered under its lease"
    );
    // A node that stops revokes its lease: it leaves the registry, not the member list.
    cluster.stop(NodeId(8)).await;
    eventually("node 8 leaves the registry", || async {
        etcd.registered().await.expect("registered") == (1..=7).collect::<Vec<u32>>()
    })
    .await;
    assert_eq!(etcd.current().await.expect("list").members.len(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_etcd_down_reads_and_writes_go_on_and_a_join_completes_when_it_returns() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = EtcdServer::start(dir.path()).await;
    let prefix = "/nabu/test-outage";
    let configure = etcd_membership(&server.url(), prefix);
    let mut cluster = TestCluster::start_configured(6, BTreeMap::new(), &configure).await;
    let client = cluster.client();
    let etcd = EtcdMembers::connect(&[server.url()], prefix)
        .await
        .expect("etcd");
    let epoch = cluster.on_etcd_list(&client, &etcd, 6).await;
    let mut objects = Vec::new();
    let put = async |objects: &mut Vec<(String, bytes::Bytes)>, seed: u64| {
        let key = format!("outage/{seed}");
        let bytes = random_bytes(30_000 + seed, 4 * MIB + 10);
        client
            .put(NS, key.as_bytes(), bytes.clone())
            .await
            .expect("a put");
        objects.push((key, bytes));
    };
    for seed in 0..8 {
        put(&mut objects, seed).await;
    }

    server.kill();
    // The data path never waits for etcd: writes and reads go on, on the last list.
    for seed in 8..16 {
        put(&mut objects, seed).await;
    }
    for (key, bytes) in &objects {
        let got = client
            .get(NS, key.as_bytes())
            .await
            .expect("a read with etcd down");
        assert_same(&got, bytes, key);
    }
    // A new node starts meanwhile: it serves, but cannot join until etcd is back.
    cluster.start_alone(7, &configure).await;
    assert!(
        cluster.metric(NodeId(7), "nabu_ring_epoch").await < epoch,
        "node 7 runs on its own list until it reaches etcd"
    );
    assert_eq!(cluster.metric(NodeId(7), "nabu_etcd_connected").await, 0);
    assert_eq!(cluster.metric(NodeId(1), "nabu_etcd_connected").await, 0);
    assert_eq!(client.ring().members().len(), 6);

    server.restart().await;
    eventually(
        "node 7 joined and the shards sit on the 7-node placement",
        || async { client.ring().members().len() == 7 && settled(&client).await },
    )
    .await;
    cluster.on_etcd_list(&client, &etcd, 7).await;
    for id in 1..=7 {
        assert_eq!(cluster.metric(NodeId(id), "nabu_etcd_connected").await, 1);
    }
    for (key, bytes) in &objects {
        let got = client
            .get(NS, key.as_bytes())
            .await
            .expect("a read after the join");
        assert_same(&got, bytes, key);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_member_list_changes_in_etcd_lose_none() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = EtcdServer::start(dir.path()).await;
    let etcd = EtcdMembers::connect(&[server.url()], "/nabu/test-cas")
        .await
        .expect("etcd");
    assert_eq!(etcd.current().await.expect("empty").epoch, 0);
    let mut changes = tokio::task::JoinSet::new();
    for id in 1..=8u32 {
        let etcd = etcd.clone();
        changes.spawn(async move {
            let entry = MemberEntry {
                id: NodeId(id),
                weight: 1,
                zone: "default".into(),
                data_addr: ([127, 0, 0, 1], 10_000 + id as u16).into(),
                peer_addr: ([127, 0, 0, 1], 11_000 + id as u16).into(),
                http_addr: ([127, 0, 0, 1], 12_000 + id as u16).into(),
            };
            let add = |members: &mut Vec<MemberEntry>| {
                members.push(entry.clone());
                Ok(true)
            };
            let update = etcd.update(&add).await.expect("update");
            assert!(update.changed);
            update.list.epoch
        });
    }
    let mut epochs: Vec<u64> = changes.join_all().await;
    epochs.sort_unstable();
    epochs.dedup();
    assert_eq!(epochs.len(), 8, "every change is its own epoch: {epochs:?}");
    let list = etcd.current().await.expect("list");
    let mut ids: Vec<u32> = list.members.iter().map(|member| member.id.0).collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..=8).collect::<Vec<u32>>(), "no change was lost");
    assert_eq!(list.epoch, *epochs.last().expect("epochs"));
    // An edit that refuses changes nothing.
    let refuse = |_: &mut Vec<MemberEntry>| anyhow::bail!("no");
    assert!(etcd.update(&refuse).await.is_err());
    assert_eq!(etcd.current().await.expect("list").epoch, list.epoch);
}
