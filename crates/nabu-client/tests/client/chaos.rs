//! Fault schedules over the real nodes and client, in process, on two networks:
//!
//! - **Simulation** (`simulated_seeds_replay_exactly…`): one thread, virtual time (a
//!   current-thread Tokio runtime, paused), the in-memory network of `nabu_client::sim`, and
//!   the nodes' blocking work run inline on that thread. Nothing else decides the order of
//!   events, so a seed is an execution: each runs twice and the traces (every step's
//!   outcome, the bytes and chunks the network carried, the virtual time taken) must match.
//! - **Real sockets** (`seeded_faults_never_lose…`): loopback TCP through a fault-injecting
//!   proxy in front of each node's data and peer planes, real threads and real time; the
//!   schedule is the seed's, the interleaving the machine's.
//!
//! A seed drives a cluster through a random schedule of puts, overwrites, deletes, node
//! crashes (the node's task aborted wherever it is: no shutdown, requests in flight) and
//! restarts, a node joining, a node draining, and faults on every link — client to node and
//! node to node: delayed bytes, connections losing a chunk (and with it the connection)
//! every N chunks, dropped connections. After **every** step it checks that every key reads
//! back exactly what its last acknowledged write left (a write that failed may or may not
//! have happened: either outcome is accepted), and that every stripe keeps enough distinct
//! shards on the running nodes. At the end it heals everything and checks that repair and
//! rebalancing bring every stripe to its full width on distinct nodes, one shard of each
//! index. A failure prints the seed and the steps; `NABU_SIM_SEEDS=<seed>` (or
//! `NABU_CHAOS_SEEDS`) replays it. CI runs 10 seeds of each; `NABU_SOAK=1` runs 100.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use nabu_client::sim::{LinkFaults, SimNet};
use nabu_client::{
    CheckOptions, Client, ClientConfig, ClientError, ClusterMap, Endpoint, MemberAddr,
};
use nabu_core::policy::Durability;
use nabu_core::ring::NodeId;
use nabu_node::{ListenerAddrs, Listeners, MemberConfig};
use nabu_proto::ops::ShardLayout;
use rand::{Rng, SeedableRng, rngs::StdRng};
use tokio::net::TcpListener;
// Virtual under simulation, so retries and deadlines are part of the execution.
use tokio::time::Instant;

use super::{
    Faults, MIB, NS, TestCluster, TestNode, faulty_proxy, fresh_token, node_config, random_bytes,
    spawn_node,
};

/// Steps per seed.
const STEPS: usize = 20;
/// Keys the schedule writes.
const KEYS: u64 = 8;
/// How long a read may keep failing after a step before the harness calls it a loss.
const READ_DEADLINE: Duration = Duration::from_secs(20);
/// How long repair and rebalancing may take to settle a healed cluster.
const SETTLE_DEADLINE: Duration = Duration::from_secs(60);
/// Nodes a run starts with; one more joins.
const NODES: u32 = 7;

/// What a key may read back as: one of these values (`None`: not found).
type Expected = Vec<Option<Bytes>>;

/// How a run's bytes travel.
#[derive(Clone)]
enum Network {
    /// Loopback TCP through a [`faulty_proxy`] in front of each node's data and peer planes.
    Proxies,
    /// The in-memory network installed on the simulation's thread.
    Sim(SimNet),
}

/// The faults on the links into one node, on either network.
enum NodeFaults {
    Proxy(Arc<Faults>),
    /// Its data and peer addresses' links.
    Sim([Arc<LinkFaults>; 2]),
}

impl NodeFaults {
    fn delay(&self, ms: u64) {
        match self {
            NodeFaults::Proxy(faults) => faults.delay_ms.store(ms, Ordering::Relaxed),
            NodeFaults::Sim(links) => links
                .iter()
                .for_each(|link| link.delay_ms.store(ms, Ordering::Relaxed)),
        }
    }

    fn cut_every(&self, chunks: u64) {
        match self {
            NodeFaults::Proxy(faults) => faults.cut_every.store(chunks, Ordering::Relaxed),
            NodeFaults::Sim(links) => links
                .iter()
                .for_each(|link| link.cut_every.store(chunks, Ordering::Relaxed)),
        }
    }

    fn drop_connections(&self) {
        match self {
            NodeFaults::Proxy(faults) => {
                faults.generation.fetch_add(1, Ordering::Relaxed);
            }
            NodeFaults::Sim(links) => links.iter().for_each(|link| {
                link.generation.fetch_add(1, Ordering::Relaxed);
            }),
        }
    }
}

/// Where a node really listens, and where everyone reaches it (behind proxies: the proxies'
/// addresses; simulated: the same); its http plane is not proxied.
#[derive(Clone, Copy)]
struct Addrs {
    real: ListenerAddrs,
    advertised: ListenerAddrs,
}

/// One seed's run.
struct Run {
    cluster: TestCluster,
    /// The client under test; it reaches every node through the proxies, and publishes the
    /// member lists.
    client: Client,
    network: Network,
    faults: BTreeMap<u32, NodeFaults>,
    addrs: BTreeMap<u32, Addrs>,
    /// The member list last published (advertised addresses).
    members: Vec<MemberConfig>,
    model: BTreeMap<String, Expected>,
    epoch: u64,
    joined: bool,
    drained: bool,
}

/// Binds a node's listeners on loopback and puts the network's faults in front of its data
/// and peer planes: a proxy each, or the simulated links into their addresses (the TCP
/// listeners then only reserve the addresses; the node accepts from the simulated network).
async fn bind(network: &Network) -> (Listeners, Addrs, NodeFaults) {
    let listeners = Listeners::bind_loopback().await.expect("bind");
    let real = listeners.addrs().expect("addrs");
    match network {
        Network::Proxies => {
            let faults = Arc::new(Faults::default());
            let advertised = ListenerAddrs {
                data: faulty_proxy(real.data, Arc::clone(&faults)).await,
                peer: faulty_proxy(real.peer, Arc::clone(&faults)).await,
                http: real.http,
            };
            (
                listeners,
                Addrs { real, advertised },
                NodeFaults::Proxy(faults),
            )
        }
        Network::Sim(net) => {
            let links = [net.faults(real.data), net.faults(real.peer)];
            let addrs = Addrs {
                real,
                advertised: real,
            };
            (listeners, addrs, NodeFaults::Sim(links))
        }
    }
}

/// Waits until no store holds `data_dir` (a crashed node's last tasks may still hold it for
/// a moment after its task was aborted).
async fn until_unlocked(data_dir: &Path) {
    let lock = data_dir.join(nabu_store::LOCK_FILE_NAME);
    let started = Instant::now();
    loop {
        match std::fs::File::open(&lock).map(|file| file.try_lock()) {
            Ok(Err(std::fs::TryLockError::WouldBlock)) => {}
            _ => return,
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{} still locked 30 s after its node crashed",
            data_dir.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Run {
    async fn start(network: Network) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let token = fresh_token();
        let mut faults = BTreeMap::new();
        let mut addrs = BTreeMap::new();
        let mut bound = Vec::new();
        for id in 1..=NODES {
            let (listeners, node_addrs, node_faults) = bind(&network).await;
            faults.insert(id, node_faults);
            addrs.insert(id, node_addrs);
            bound.push((id, listeners));
        }
        let members: Vec<MemberConfig> = addrs
            .iter()
            .map(|(id, addrs)| MemberConfig::new(*id, "default", addrs.advertised))
            .collect();
        let client_members = members
            .iter()
            .map(|m| MemberAddr::new(m.id, "default", Endpoint::from(m.data_addr)))
            .collect();
        let mut cluster = TestCluster {
            _dir: dir,
            token,
            members: client_members,
            nodes: Vec::new(),
        };
        for (id, listeners) in bound {
            let config = Self::config(&cluster, id, addrs[&id], members.clone(), 1);
            cluster.spawn(config, listeners);
        }
        let config = ClientConfig {
            request_timeout: Duration::from_secs(10),
            members_refresh: None,
            ..ClientConfig::default()
        };
        let map = ClusterMap::new(cluster.token.clone(), cluster.members.clone());
        let client = Client::new(map, config).expect("client");
        let model = (0..KEYS)
            .map(|key| (format!("k{key}"), vec![None]))
            .collect();
        Self {
            cluster,
            client,
            network,
            faults,
            addrs,
            members,
            model,
            epoch: 1,
            joined: false,
            drained: false,
        }
    }

    /// Node `id`'s config: it advertises its proxies' addresses, and has no Unix socket (so
    /// every byte to it passes a proxy).
    fn config(
        cluster: &TestCluster,
        id: u32,
        addrs: Addrs,
        members: Vec<MemberConfig>,
        epoch: u64,
    ) -> nabu_node::NodeConfig {
        let mut config = node_config(
            cluster._dir.path(),
            &cluster.token,
            id,
            addrs.advertised,
            members,
        );
        config.data_socket = None;
        config.ring_epoch = epoch;
        // The scrubber's pass is one long blocking scan (inline under simulation); the
        // schedule checks shards itself.
        config.scrub_bytes_per_s = 0;
        config
    }

    /// `text` with this run's addresses and temp dir replaced by names (`n3.data`, `<dir>`):
    /// they differ between two runs of one seed, the execution must not.
    fn anonymize(&self, text: &str) -> String {
        let mut text = text.replace(&self.cluster._dir.path().display().to_string(), "<dir>");
        for (id, addrs) in &self.addrs {
            for (listener, plane) in [(addrs.real, "real"), (addrs.advertised, "")] {
                for (addr, name) in [
                    (listener.data, "data"),
                    (listener.peer, "peer"),
                    (listener.http, "http"),
                ] {
                    text = replace_whole(&text, &addr.to_string(), &format!("n{id}.{name}{plane}"));
                }
            }
        }
        text
    }

    fn node(&mut self, id: u32) -> &mut TestNode {
        let nodes = self.cluster.nodes.iter_mut();
        nodes.into_iter().find(|node| node.id == id).expect("node")
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

    /// Kills node `id` the hard way: its task is aborted wherever it is, with requests in
    /// flight, nothing drained and no shutdown run.
    async fn crash(&mut self, id: u32) {
        let node = self.node(id);
        let task = node.task.take().expect("running");
        task.abort();
        let _ = task.await;
        // Only now: dropping the stop sender would start a graceful shutdown.
        node.stop.take();
    }

    /// Starts a crashed node again on its data dir and real addresses.
    async fn restart(&mut self, id: u32) {
        let real = self.addrs[&id].real;
        let node = self.node(id);
        until_unlocked(&node.data_dir).await;
        let bind = |addr| async move { TcpListener::bind(addr).await.expect("rebind") };
        let listeners = Listeners {
            data: bind(real.data).await,
            peer: bind(real.peer).await,
            http: bind(real.http).await,
            data_unix: None,
            resp: None,
        };
        let (stop, task) = spawn_node(node.config.clone(), listeners);
        node.stop = Some(stop);
        node.task = Some(task);
    }

    /// Publishes `members` at the next epoch through the client under test.
    async fn publish(&mut self, members: Vec<MemberConfig>) {
        self.epoch += 1;
        let entries: Vec<_> = members.iter().map(MemberConfig::entry).collect();
        // A node that does not take it now (crashed, or unreachable) catches up from its
        // peers.
        self.client
            .publish_members(self.epoch, &entries)
            .await
            .expect("publish");
        self.members = members;
    }

    /// Clears every network fault.
    fn heal_network(&self) {
        for faults in self.faults.values() {
            faults.delay(0);
            faults.cut_every(0);
        }
    }

    /// A node picked by `rng` among those with proxies.
    fn any_node(&self, rng: &mut StdRng) -> u32 {
        let ids: Vec<u32> = self.faults.keys().copied().collect();
        ids[rng.random_range(0..ids.len())]
    }

    /// One random step; returns its description. A step's network fault lasts until the
    /// next step, so the check after it runs under it.
    async fn step(&mut self, rng: &mut StdRng) -> String {
        self.heal_network();
        match rng.random_range(0..11) {
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
                self.crash(id).await;
                format!("crash node {id}")
            }
            4 | 5 if !self.stopped().is_empty() => {
                let id = self.stopped()[0];
                self.restart(id).await;
                format!("restart node {id}")
            }
            6 => {
                let id = self.any_node(rng);
                let delay = rng.random_range(5..60);
                self.faults[&id].delay(delay);
                format!("delay every byte to and from node {id} by {delay} ms per chunk")
            }
            7 => {
                let id = self.any_node(rng);
                self.faults[&id].drop_connections();
                format!("drop every open connection to node {id}")
            }
            8 => {
                let id = self.any_node(rng);
                let every = rng.random_range(3..40);
                self.faults[&id].cut_every(every);
                format!("lose the connections to node {id} every {every} chunks")
            }
            9 if !self.joined => {
                self.joined = true;
                let id = NODES + 1;
                let (listeners, addrs, faults) = bind(&self.network).await;
                self.faults.insert(id, faults);
                self.addrs.insert(id, addrs);
                let mut members = self.members.clone();
                members.push(MemberConfig::new(id, "default", addrs.advertised));
                let config =
                    Self::config(&self.cluster, id, addrs, members.clone(), self.epoch + 1);
                self.cluster.spawn(config, listeners);
                self.publish(members).await;
                format!("node {id} joins")
            }
            10 if self.joined && !self.drained && self.stopped().is_empty() => {
                self.drained = true;
                let id = rng.random_range(2..=NODES);
                let mut members = self.members.clone();
                for member in &mut members {
                    if member.id == id {
                        member.weight = 0;
                    }
                }
                self.publish(members).await;
                format!("drain node {id}")
            }
            _ => "nothing".to_owned(),
        }
    }

    /// The shards of every stripe of every key that has one acknowledged value: which
    /// running node holds which shard (by SHARD_STAT), per stripe.
    async fn holders(
        &self,
    ) -> Result<Vec<(String, Durability, Vec<(NodeId, ShardLayout)>)>, String> {
        let mut stripes = Vec::new();
        for (key, expected) in &self.model {
            if !matches!(expected.as_slice(), [Some(_)]) {
                continue;
            }
            let info = self
                .client
                .stat(NS, key.as_bytes())
                .await
                .map_err(|e| format!("{key}: stat: {e}"))?;
            let manifest = self
                .client
                .read_manifest(NS, info.blob_id)
                .await
                .map_err(|e| format!("{key}: manifest: {e}"))?;
            for (index, stripe_id) in manifest.node_stripe_ids().enumerate() {
                let mut held = Vec::new();
                for id in self.running() {
                    let node = NodeId(id);
                    match self.client.pool().shard_stat(node, stripe_id).await {
                        Ok(Some(info)) => held.push((node, info.layout)),
                        Ok(None) => {}
                        Err(error) => return Err(format!("{key}: shard stat on {node}: {error}")),
                    }
                }
                stripes.push((format!("{key} stripe {index}"), manifest.durability, held));
            }
        }
        Ok(stripes)
    }

    /// Every stripe of every acknowledged value keeps enough distinct shards on the running
    /// nodes to be read: K distinct indexes of an erasure-coded stripe, a copy of a
    /// replicated one. (A node keys its shards by stripe id, so it cannot hold two of one
    /// stripe; what could go wrong is a placement that lands a stripe's shards on fewer
    /// nodes than it needs, and that shows here and, fully, after settling.) Retried for
    /// [`READ_DEADLINE`], as reads are, since the step's network fault still holds.
    async fn check_shards(&self) -> Result<(), String> {
        let started = Instant::now();
        let failure = loop {
            let failure = match self.holders().await {
                Ok(stripes) => stripes.into_iter().find_map(|(what, durability, held)| {
                    let distinct = distinct_shards(&held);
                    let needed = match durability {
                        Durability::ErasureCoded { data, .. } => usize::from(data),
                        _ => 1,
                    };
                    (distinct < needed).then(|| {
                        format!(
                            "{what} ({durability}): {distinct} shards on running nodes: {held:?}"
                        )
                    })
                }),
                Err(error) => Some(error),
            };
            match failure {
                None => return Ok(()),
                Some(failure) if started.elapsed() > READ_DEADLINE => break failure,
                Some(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        };
        Err(failure)
    }

    /// Heals everything (network, crashed nodes), then waits until repair and rebalancing
    /// report every stripe full and in place, and checks that on the nodes themselves: each
    /// erasure-coded stripe has K+M shards on K+M distinct nodes, one of each index; each
    /// replicated stripe its copies on distinct nodes.
    async fn settle_and_check(&mut self) -> Result<(), String> {
        self.heal_network();
        for id in self.stopped() {
            self.restart(id).await;
        }
        let client = &self.client;
        let options = CheckOptions {
            repair: true,
            rebalance: true,
            bytes_per_s: None,
        };
        let started = Instant::now();
        loop {
            let last = match client.check_redundancy(options, |_| {}).await {
                Ok(report) if report.all_full() && report.shards_misplaced == 0 => break,
                Ok(report) => format!("{report:?}"),
                Err(error) => error.to_string(),
            };
            if started.elapsed() > SETTLE_DEADLINE {
                return Err(format!(
                    "repair and rebalancing did not settle in {SETTLE_DEADLINE:?}: {last}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        // A restarted node may still be thought down by the client for a moment.
        let started = Instant::now();
        let stripes = loop {
            match self.holders().await {
                Ok(stripes) => break stripes,
                Err(error) if started.elapsed() > READ_DEADLINE => return Err(error),
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        };
        for (what, durability, held) in stripes {
            if distinct_shards(&held) < durability.width() {
                return Err(format!("{what} ({durability}) after settling: {held:?}"));
            }
        }
        Ok(())
    }

    /// Every key reads back one of its expected values. A read may fail for a while when a
    /// crash and a restart overlap (the client avoids a node whose connect failed for a few
    /// seconds, and refuses to call a key absent unless enough of its nodes say so); it must
    /// succeed within [`READ_DEADLINE`].
    async fn check(&self) -> Result<(), String> {
        for (key, expected) in &self.model {
            let started = Instant::now();
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

/// `text` with each `addr` (an `ip:port`) not followed by another digit replaced by `name`.
fn replace_whole(text: &str, addr: &str, name: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(addr) {
        let after = &rest[at + addr.len()..];
        out.push_str(&rest[..at]);
        if after.starts_with(|c: char| c.is_ascii_digit()) {
            out.push_str(addr);
        } else {
            out.push_str(name);
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// How many distinct shards `held` (per node, the layout of the shard it holds) counts: the
/// distinct indexes of an erasure-coded stripe, the nodes holding a whole copy.
fn distinct_shards(held: &[(NodeId, ShardLayout)]) -> usize {
    let indexes: BTreeSet<Option<u8>> = held
        .iter()
        .map(|(_, layout)| match layout {
            ShardLayout::Erasure { index, .. } => Some(*index),
            ShardLayout::Whole => None,
        })
        .collect();
    if indexes.contains(&None) {
        held.len()
    } else {
        indexes.len()
    }
}

fn outcome<T>(result: &Result<T, ClientError>) -> String {
    match result {
        Ok(_) => "ok".to_owned(),
        Err(error) => format!("failed ({error})"),
    }
}

/// The seeds to run: `$var` (comma-separated), else 10 (100 with `NABU_SOAK=1`).
fn seeds(var: &str) -> Vec<u64> {
    if let Ok(list) = std::env::var(var) {
        return list
            .split(',')
            .map(|seed| seed.trim().parse().expect("a seed is a number"))
            .collect();
    }
    let count = if std::env::var("NABU_SOAK").is_ok_and(|v| v == "1") {
        100
    } else {
        10
    };
    (1..=count).collect()
}

/// Runs seed `seed`'s schedule on `network` and returns its trace: each step with its
/// outcome (the run's addresses and paths replaced by names, so two runs compare), then the
/// time it took and, simulated, what the network carried. Panics with the seed and the
/// steps at the first failed check.
async fn run_seed(seed: u64, network: Network) -> Vec<String> {
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut run = Run::start(network).await;
    let mut history = Vec::new();
    let fail = |step: &str, failure: String, history: &[String]| -> ! {
        panic!(
            "seed {seed}, {step}: {failure}\nreplay: NABU_SIM_SEEDS={seed} (simulated) or \
             NABU_CHAOS_SEEDS={seed} (real sockets)\nsteps:\n  {}",
            history.join("\n  ")
        )
    };
    for step in 0..STEPS {
        let done = run.step(&mut rng).await;
        history.push(run.anonymize(&done));
        if let Network::Sim(net) = &run.network {
            let bytes = net.counters().bytes.load(Ordering::Relaxed);
            history.push(format!(
                "  after step {step}: {bytes} bytes, {} ms",
                started.elapsed().as_millis()
            ));
        }
        if let Err(failure) = run.check().await {
            fail(&format!("step {step}"), run.anonymize(&failure), &history);
        }
        if let Err(failure) = run.check_shards().await {
            fail(&format!("step {step}"), run.anonymize(&failure), &history);
        }
    }
    if let Err(failure) = run.settle_and_check().await {
        fail("after healing", run.anonymize(&failure), &history);
    }
    history.push(format!(
        "settled after {} ms",
        started.elapsed().as_millis()
    ));
    if let Network::Sim(net) = &run.network {
        let counters = net.counters();
        let count = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
        history.push(format!(
            "network: {} connections, {} chunks, {} bytes, {} chunks lost",
            count(&counters.connections),
            count(&counters.chunks),
            count(&counters.bytes),
            count(&counters.lost)
        ));
    }
    history
}

/// Seed `seed` on the simulated network: one thread, virtual time.
fn simulate(seed: u64) -> Vec<String> {
    let net = SimNet::new();
    let _installed = net.install();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    runtime.block_on(run_seed(seed, Network::Sim(net)))
}

#[test]
fn simulated_seeds_replay_exactly_and_never_lose_an_acknowledged_write() {
    for seed in seeds("NABU_SIM_SEEDS") {
        let first = simulate(seed);
        let second = simulate(seed);
        if first != second {
            let at = first.iter().zip(&second).position(|(a, b)| a != b);
            let line = |trace: &[String]| at.and_then(|at| trace.get(at).cloned());
            panic!(
                "seed {seed} ran two ways (nondeterminism): first difference at line {at:?}: \
                 {:?} vs {:?}\nfirst run:\n  {}\nsecond run:\n  {}",
                line(&first),
                line(&second),
                first.join("\n  "),
                second.join("\n  ")
            );
        }
        println!("seed {seed}: {}", first.join("; "));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_faults_never_lose_an_acknowledged_write() {
    for seed in seeds("NABU_CHAOS_SEEDS") {
        let history = run_seed(seed, Network::Proxies).await;
        println!("seed {seed}: {}", history.join("; "));
    }
}
