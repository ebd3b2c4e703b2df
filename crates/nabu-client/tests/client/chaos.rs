//! A seeded fault harness over the real nodes and client, in process: each seed drives a
//! cluster through a random schedule of puts, overwrites, deletes, node crashes and restarts,
//! a node joining, a node draining, and network faults between the client and the nodes
//! (delayed bytes, dropped connections), and after **every** step checks that every key
//! reads back exactly what its last acknowledged write left (a write that failed may or may
//! not have happened: either outcome is accepted). A node holds at most one shard of a
//! stripe by construction (the stripe id is the shard's key), so no stripe ever has two
//! shards on one node.
//!
//! The schedule is a pure function of the seed (printed on failure, so a failing seed can be
//! replayed with `NABU_CHAOS_SEEDS=<seed>`); the timing of threads and sockets is real, so
//! this is a seeded harness, not a deterministic simulator. CI runs 5 seeds;
//! `NABU_SOAK=1` runs many.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use nabu_client::{Client, ClientConfig, ClientError, ClusterMap, Endpoint, MemberAddr};
use nabu_core::ring::NodeId;
use nabu_proto::ops::MemberEntry;
use rand::{Rng, SeedableRng, rngs::StdRng};

use super::{Faults, MIB, NS, TestCluster, faulty_proxy, random_bytes};

/// Steps per seed.
const STEPS: usize = 20;
/// Keys the schedule writes.
const KEYS: u64 = 8;
/// How long a read may keep failing after a step before the harness calls it a loss.
const READ_DEADLINE: Duration = Duration::from_secs(20);

/// What a key may read back as: one of these values (`None`: not found).
type Expected = Vec<Option<Bytes>>;

/// One seed's run.
struct Run {
    cluster: TestCluster,
    /// The client under test, behind the proxies.
    client: Client,
    /// Publishes member lists (real addresses).
    admin: Client,
    faults: BTreeMap<u32, Arc<Faults>>,
    proxies: BTreeMap<u32, SocketAddr>,
    model: BTreeMap<String, Expected>,
    epoch: u64,
    joined: bool,
    drained: bool,
}

impl Run {
    async fn start() -> Self {
        let cluster = TestCluster::start(7).await;
        let mut faults = BTreeMap::new();
        let mut proxies = BTreeMap::new();
        let mut members = Vec::new();
        for node in &cluster.nodes {
            let state = Arc::new(Faults::default());
            let proxy = faulty_proxy(node.config.data_addr, Arc::clone(&state)).await;
            faults.insert(node.id, state);
            proxies.insert(node.id, proxy);
            members.push(MemberAddr::new(node.id, "default", Endpoint::from(proxy)));
        }
        let config = ClientConfig {
            request_timeout: Duration::from_secs(10),
            members_refresh: None,
            ..ClientConfig::default()
        };
        let client =
            Client::new(ClusterMap::new(cluster.token.clone(), members), config).expect("client");
        let admin = cluster.client();
        let model = (0..KEYS)
            .map(|key| (format!("k{key}"), vec![None]))
            .collect();
        Self {
            cluster,
            client,
            admin,
            faults,
            proxies,
            model,
            epoch: 1,
            joined: false,
            drained: false,
        }
    }

    fn running(&self) -> Vec<u32> {
        let nodes = self.cluster.nodes.iter();
        nodes
            .filter(|node| node.task.is_some())
            .map(|node| node.id)
            .collect()
    }

    fn stopped(&self) -> Vec<u32> {
        let nodes = self.cluster.nodes.iter();
        nodes
            .filter(|node| node.task.is_none())
            .map(|node| node.id)
            .collect()
    }

    /// Publishes `members` at the next epoch; the client under test gets it with its proxies.
    async fn publish(&mut self, members: Vec<MemberEntry>) {
        self.epoch += 1;
        // A node that does not take it now (stopped, or thought down by the admin client)
        // catches up from its peers.
        self.admin
            .publish_members(self.epoch, &members)
            .await
            .expect("publish");
        let proxied: Vec<MemberEntry> = members
            .into_iter()
            .map(|member| MemberEntry {
                data_addr: self.proxies[&member.id.0],
                ..member
            })
            .collect();
        self.client
            .apply_members(self.epoch, &proxied)
            .expect("apply");
    }

    /// One random step; returns its description.
    async fn step(&mut self, rng: &mut StdRng) -> String {
        for faults in self.faults.values() {
            faults.delay_ms.store(0, Ordering::Relaxed);
        }
        match rng.random_range(0..10) {
            0..=2 => {
                let key = format!("k{}", rng.random_range(0..KEYS));
                let length = if rng.random_bool(0.5) {
                    100_000
                } else {
                    4 * MIB + 7
                };
                let bytes = random_bytes(rng.random(), length);
                let result = self.client.put(NS, key.as_bytes(), bytes.clone()).await;
                let expected = self.model.get_mut(&key).expect("key");
                match result {
                    Ok(_) => *expected = vec![Some(bytes)],
                    Err(_) => expected.push(Some(bytes)),
                }
                format!("put {key} ({length} bytes): {}", outcome(&result))
            }
            3 => {
                let key = format!("k{}", rng.random_range(0..KEYS));
                let result = self.client.delete(NS, key.as_bytes()).await;
                let expected = self.model.get_mut(&key).expect("key");
                match &result {
                    Ok(()) | Err(ClientError::NotFound(_)) => *expected = vec![None],
                    Err(_) => expected.push(None),
                }
                format!("delete {key}: {}", outcome(&result))
            }
            4 if self.stopped().is_empty() => {
                let running = self.running();
                let id = running[rng.random_range(0..running.len())];
                self.cluster.stop(NodeId(id)).await;
                format!("crash node {id}")
            }
            4 | 5 if !self.stopped().is_empty() => {
                let id = self.stopped()[0];
                self.cluster.restart(NodeId(id)).await;
                format!("restart node {id}")
            }
            6 => {
                let ids: Vec<u32> = self.faults.keys().copied().collect();
                let id = ids[rng.random_range(0..ids.len())];
                let delay = rng.random_range(5..60);
                self.faults[&id].delay_ms.store(delay, Ordering::Relaxed);
                format!("delay node {id} by {delay} ms per chunk")
            }
            7 => {
                let ids: Vec<u32> = self.faults.keys().copied().collect();
                let id = ids[rng.random_range(0..ids.len())];
                self.faults[&id].generation.fetch_add(1, Ordering::Relaxed);
                format!("drop the client's connections to node {id}")
            }
            8 if !self.joined => {
                self.joined = true;
                let members = self.cluster.join(&[8], self.epoch + 1).await;
                let node = self.cluster.nodes.last().expect("node 8");
                let state = Arc::new(Faults::default());
                let proxy = faulty_proxy(node.config.data_addr, Arc::clone(&state)).await;
                self.faults.insert(8, state);
                self.proxies.insert(8, proxy);
                self.publish(members).await;
                "node 8 joins".to_owned()
            }
            // After the join: `join` lists every node at weight 1.
            9 if self.joined && !self.drained && self.stopped().is_empty() => {
                self.drained = true;
                let id = rng.random_range(2..=7);
                let members: Vec<MemberEntry> = self
                    .admin
                    .ring()
                    .members()
                    .iter()
                    .map(|m| {
                        let node = self
                            .cluster
                            .nodes
                            .iter()
                            .find(|n| n.id == m.id.0)
                            .expect("node");
                        MemberEntry {
                            weight: if m.id.0 == id { 0 } else { m.weight },
                            ..nabu_node::MemberConfig::new(
                                m.id.0,
                                m.zone.clone(),
                                nabu_node::ListenerAddrs {
                                    data: node.config.data_addr,
                                    peer: node.config.peer_addr,
                                    http: node.config.http_addr,
                                },
                            )
                            .entry()
                        }
                    })
                    .collect();
                self.publish(members).await;
                format!("drain node {id}")
            }
            _ => "nothing".to_owned(),
        }
    }

    /// Every key reads back one of its expected values. A read may fail for a while when a
    /// crash and a restart overlap (the client avoids a node whose connect failed for a few
    /// seconds, and refuses to call a key absent unless enough of its nodes say so); it must
    /// succeed within [`READ_DEADLINE`].
    async fn check(&self) -> Result<(), String> {
        for (key, expected) in &self.model {
            let started = std::time::Instant::now();
            let got = loop {
                match self.client.get(NS, key.as_bytes()).await {
                    Ok(bytes) => break Some(bytes),
                    Err(ClientError::NotFound(_)) => break None,
                    Err(error) if started.elapsed() > READ_DEADLINE => {
                        return Err(format!("{key}: read failed for {READ_DEADLINE:?}: {error}"));
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
                }
            };
            if !expected.contains(&got) {
                return Err(format!(
                    "{key}: read {:?} bytes, expected one of {:?}",
                    got.as_ref().map(Bytes::len),
                    expected
                        .iter()
                        .map(|v| v.as_ref().map(Bytes::len))
                        .collect::<Vec<_>>()
                ));
            }
        }
        Ok(())
    }
}

fn outcome<T>(result: &Result<T, ClientError>) -> String {
    match result {
        Ok(_) => "ok".to_owned(),
        Err(error) => format!("failed ({error})"),
    }
}

/// The seeds to run: `NABU_CHAOS_SEEDS` (comma-separated), else 5 (40 with `NABU_SOAK=1`).
fn seeds() -> Vec<u64> {
    if let Ok(list) = std::env::var("NABU_CHAOS_SEEDS") {
        return list
            .split(',')
            .map(|seed| seed.trim().parse().expect("a seed is a number"))
            .collect();
    }
    let count = if std::env::var("NABU_SOAK").is_ok_and(|v| v == "1") {
        40
    } else {
        5
    };
    (1..=count).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_faults_never_lose_an_acknowledged_write() {
    for seed in seeds() {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut run = Run::start().await;
        let mut history = Vec::new();
        for step in 0..STEPS {
            history.push(run.step(&mut rng).await);
            if let Err(failure) = run.check().await {
                panic!(
                    "seed {seed}, step {step}: {failure}\nreplay: NABU_CHAOS_SEEDS={seed}\n\
                     steps:\n  {}",
                    history.join("\n  ")
                );
            }
        }
        println!("seed {seed}: {}", history.join("; "));
    }
}
