//! `nabu bench-tiers`: the cache tiers against no tiers, and a DRAM-tier GET against the
//! loopback floor and against NVMe, all in one run on this machine.
//!
//! Two nodes run in this process, each with its own data dir under `--dir`: one with tiers
//! off (every read from the chunk store, `O_DIRECT` where the filesystem allows), one with a
//! DRAM and a CXL tier (anonymous memory: this machine's CXL stand-in). Both get the same
//! 1 MiB shards, then the same read sequence over SHARD_GET (the node's unit of read, one
//! round trip): Zipf-distributed reads with a one-off scan of every shard in the middle.
//! Reported per node: each tier's share of the reads, mean/p50/p99 GET latency.
//!
//! Then three latencies of a 1 MiB GET, interleaved in batches so a busy machine hurts them
//! alike: the floor (a 64-byte request answered with 1 MiB over one loopback TCP
//! connection: one round trip plus the transfer, no storage), the same shard from the
//! tiered node's DRAM, and from the untiered node's store.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use nabu_client::config::ClientConfig;
use nabu_client::pool::Pool;
use nabu_client::{Endpoint, MemberAddr};
use nabu_core::id::StripeId;
use nabu_core::ring::NodeId;
use nabu_node::tier::{TierConfig, TierName, TiersView};
use nabu_node::{Listeners, NodeBuilder, NodeConfig};
use nabu_proto::ops::{ShardInfo, ShardLayout};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use super::Latency;

/// The shard size of the workload and of the latency cases.
const SHARD_BYTES: usize = 1 << 20;
/// GETs per batch of the interleaved latency cases.
const BATCH: usize = 50;

/// Arguments of `nabu bench-tiers`.
#[derive(Debug, clap::Args)]
pub struct BenchTiersArgs {
    /// Where the two nodes keep their data: use the NVMe filesystem (one that takes
    /// `O_DIRECT`), or the "NVMe" figures are page-cache figures. Removed afterwards.
    #[arg(long, default_value = "./nabu-bench-tiers")]
    pub dir: PathBuf,
    /// Shards stored (1 MiB each) and scanned once.
    #[arg(long, default_value_t = 256)]
    pub shards: u32,
    /// Zipf-distributed reads (the scan comes on top).
    #[arg(long, default_value_t = 3000)]
    pub reads: u32,
    /// The Zipf exponent (1.0: the k-th most popular shard is read 1/k as often as the
    /// first).
    #[arg(long, default_value_t = 1.0)]
    pub zipf_exponent: f64,
    /// The tiered node's DRAM tier.
    #[arg(long, default_value = "32MiB", value_parser = super::parse_size)]
    pub dram_bytes: u64,
    /// The tiered node's CXL tier (anonymous memory).
    #[arg(long, default_value = "64MiB", value_parser = super::parse_size)]
    pub cxl_bytes: u64,
    /// Timed 1 MiB GETs per latency case.
    #[arg(long, default_value_t = 1000)]
    pub samples: u32,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
}

/// One node's replay of the workload.
#[derive(Debug, Clone, Serialize)]
struct Replay {
    tiers: &'static str,
    reads: u64,
    /// Share of the reads each tier served: DRAM, CXL, NVMe.
    hit_ratio_dram: f64,
    hit_ratio_cxl: f64,
    hit_ratio_nvme: f64,
    mean_us: f64,
    latency: Latency,
}

/// The three 1 MiB GET latencies, and two parts of the gap between the DRAM tier and the
/// floor: a PING through the same client (the protocol's own round trip: framing and the
/// tasks on both ends) and CRC32C over 1 MiB (the client checks every byte it receives).
#[derive(Debug, Clone, Serialize)]
struct Gets {
    direct_io: bool,
    ping: Latency,
    crc32c_1mib: Latency,
    floor: Latency,
    dram: Latency,
    nvme: Latency,
    dram_over_floor: f64,
    nvme_over_dram: f64,
}

/// Runs the benchmark (see the module docs).
pub async fn run(args: BenchTiersArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.shards > 0 && args.samples > 0,
        "--shards and --samples must be positive"
    );
    std::fs::create_dir_all(&args.dir).with_context(|| format!("create {}", args.dir.display()))?;
    let work = args.dir.join(format!("run-{}", std::process::id()));
    let result = run_in(&args, &work).await;
    let _ = std::fs::remove_dir_all(&work);
    result
}

async fn run_in(args: &BenchTiersArgs, work: &Path) -> anyhow::Result<()> {
    let direct_io = probe_direct(work)?;
    let off = BenchNode::start(
        &work.join("off"),
        TierConfig {
            dram_bytes: 0,
            cxl_bytes: 0,
            ..TierConfig::default()
        },
    )
    .await?;
    let on = BenchNode::start(
        &work.join("on"),
        TierConfig {
            dram_bytes: args.dram_bytes,
            cxl_bytes: args.cxl_bytes,
            ..TierConfig::default()
        },
    )
    .await?;
    let shards: Vec<(StripeId, ShardInfo, Bytes)> = (0..args.shards).map(shard).collect();
    for (stripe_id, info, body) in &shards {
        for node in [&off, &on] {
            node.pool
                .shard_put(NodeId(1), *stripe_id, *info, body.clone())
                .await
                .context("store a shard")?;
        }
    }
    let sequence = workload(args);
    let mut replays = Vec::new();
    for (node, name) in [(&off, "off"), (&on, "on")] {
        replays.push(replay(node, name, &shards, &sequence).await?);
    }
    let gets = gets(args, direct_io, &off, &on, &shards[0].0).await?;
    off.stop().await;
    on.stop().await;
    if args.json {
        let report = serde_json::json!({ "replays": replays, "gets": gets });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(args, &replays, &gets);
    }
    Ok(())
}

fn print_report(args: &BenchTiersArgs, replays: &[Replay], gets: &Gets) {
    println!(
        "workload: {} Zipf(s={}) reads over {} shards of 1 MiB + a one-off scan of all of them; tiered node: DRAM {} + CXL {}",
        args.reads,
        args.zipf_exponent,
        args.shards,
        super::format_size(args.dram_bytes),
        super::format_size(args.cxl_bytes)
    );
    println!(
        "{:<6} {:>7} {:>7} {:>7} {:>7} {:>9} {:>9} {:>9}",
        "tiers", "reads", "dram", "cxl", "nvme", "mean µs", "p50 µs", "p99 µs"
    );
    for replay in replays {
        println!(
            "{:<6} {:>7} {:>6.1}% {:>6.1}% {:>6.1}% {:>9.0} {:>9.0} {:>9.0}",
            replay.tiers,
            replay.reads,
            replay.hit_ratio_dram * 100.0,
            replay.hit_ratio_cxl * 100.0,
            replay.hit_ratio_nvme * 100.0,
            replay.mean_us,
            replay.latency.p50_us,
            replay.latency.p99_us
        );
    }
    println!(
        "1 MiB GET p50: loopback floor (1 MiB + one round trip) {:.0} µs; DRAM tier {:.0} µs = {:.2}× the floor; NVMe ({}) {:.0} µs = {:.2}× the DRAM tier",
        gets.floor.p50_us,
        gets.dram.p50_us,
        gets.dram_over_floor,
        if gets.direct_io {
            "O_DIRECT"
        } else {
            "buffered: no O_DIRECT here"
        },
        gets.nvme.p50_us,
        gets.nvme_over_dram
    );
    println!(
        "  parts of the gap: PING through the same client {:.0} µs p50; CRC32C of 1 MiB {:.0} µs p50",
        gets.ping.p50_us, gets.crc32c_1mib.p50_us
    );
}

/// A node of the benchmark, in this process.
struct BenchNode {
    pool: Pool,
    http: SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl BenchNode {
    async fn start(dir: &Path, tiers: TierConfig) -> anyhow::Result<Self> {
        let listeners = Listeners::bind_loopback().await?;
        let addrs = listeners.addrs()?;
        let token = "5a".repeat(32);
        let mut config = NodeConfig::new(1, dir, token);
        (config.data_addr, config.peer_addr, config.http_addr) =
            (addrs.data, addrs.peer, addrs.http);
        config.tiers = tiers;
        config.scrub_bytes_per_s = 0;
        config.validate()?;
        let member = MemberAddr::new(1, "default", Endpoint::Tcp(addrs.data.to_string()));
        let pool = Pool::new(config.token()?, &[member], &ClientConfig::default());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(NodeBuilder::new(config).run(listeners, async {
            let _ = stopped.await;
        }));
        let deadline = Instant::now() + Duration::from_secs(30);
        while nabu_node::http_get::get_status(addrs.http, "/readyz").await != Some(200) {
            anyhow::ensure!(
                Instant::now() < deadline,
                "a benchmark node never became ready"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Self {
            pool,
            http: addrs.http,
            stop,
            task,
        })
    }

    async fn tiers(&self) -> anyhow::Result<TiersView> {
        let (_, body) = nabu_node::http_get::get(self.http, "/api/v1/cluster")
            .await
            .context("read a benchmark node's cluster view")?;
        let view: nabu_node::ClusterView = serde_json::from_slice(&body)?;
        Ok(view.tiers)
    }

    async fn get(&self, stripe_id: StripeId) -> anyhow::Result<Duration> {
        let start = Instant::now();
        let (_, body) = self.pool.shard_get(NodeId(1), stripe_id).await?;
        let elapsed = start.elapsed();
        anyhow::ensure!(
            body.len() == SHARD_BYTES,
            "a GET returned {} bytes",
            body.len()
        );
        Ok(elapsed)
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Shard `n`: 1 MiB of bytes distinct per shard, stored whole.
fn shard(n: u32) -> (StripeId, ShardInfo, Bytes) {
    let mut state = u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let body: Bytes = (0..SHARD_BYTES / 8)
        .flat_map(|_| next(&mut state).to_le_bytes())
        .collect();
    let info = ShardInfo {
        layout: ShardLayout::Whole,
        stripe_bytes: SHARD_BYTES as u64,
        shard_bytes: SHARD_BYTES as u64,
        shard_crc: nabu_client::value_crc32c(&body),
    };
    (StripeId::of(&body), info, body)
}

/// xorshift64*: a seeded sequence, the same for both nodes.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// The read sequence: shard indexes, Zipf-distributed, with a scan of every shard (each
/// once, in order) inserted halfway.
fn workload(args: &BenchTiersArgs) -> Vec<u32> {
    let weights: Vec<f64> = (1..=args.shards)
        .map(|rank| 1.0 / f64::from(rank).powf(args.zipf_exponent))
        .collect();
    let total: f64 = weights.iter().sum();
    let mut cumulative = Vec::with_capacity(weights.len());
    let mut sum = 0.0;
    for weight in weights {
        sum += weight / total;
        cumulative.push(sum);
    }
    let mut state = 0x5eed_u64;
    let mut sequence: Vec<u32> = (0..args.reads)
        .map(|_| {
            let uniform = (next(&mut state) >> 11) as f64 / (1u64 << 53) as f64;
            cumulative
                .partition_point(|&c| c < uniform)
                .min(cumulative.len() - 1) as u32
        })
        .collect();
    let middle = sequence.len() / 2;
    sequence.splice(middle..middle, 0..args.shards);
    sequence
}

async fn replay(
    node: &BenchNode,
    name: &'static str,
    shards: &[(StripeId, ShardInfo, Bytes)],
    sequence: &[u32],
) -> anyhow::Result<Replay> {
    let before = node.tiers().await?;
    let mut samples = Vec::with_capacity(sequence.len());
    for &n in sequence {
        samples.push(node.get(shards[n as usize].0).await?);
    }
    let after = node.tiers().await?;
    let reads = sequence.len() as u64;
    let ratio = |tier: TierName| {
        let hits = |view: &TiersView| view.tier(tier).map_or(0, |view| view.hits);
        (hits(&after) - hits(&before)) as f64 / reads as f64
    };
    let mean_us =
        samples.iter().map(Duration::as_secs_f64).sum::<f64>() / samples.len() as f64 * 1e6;
    Ok(Replay {
        tiers: name,
        reads,
        hit_ratio_dram: ratio(TierName::Dram),
        hit_ratio_cxl: ratio(TierName::Cxl),
        hit_ratio_nvme: ratio(TierName::Nvme),
        mean_us,
        latency: Latency::from_samples(samples),
    })
}

/// The three 1 MiB GET latencies, interleaved in batches.
async fn gets(
    args: &BenchTiersArgs,
    direct_io: bool,
    off: &BenchNode,
    on: &BenchNode,
    stripe_id: &StripeId,
) -> anyhow::Result<Gets> {
    let floor_server = FloorServer::start().await?;
    let mut floor_client = TcpStream::connect(floor_server.addr).await?;
    floor_client.set_nodelay(true)?;
    let mut buffer = vec![0u8; SHARD_BYTES];
    // Warm up: the shard is promoted into the tiered node's DRAM.
    for _ in 0..3 {
        on.get(*stripe_id).await?;
        off.get(*stripe_id).await?;
        floor_get(&mut floor_client, &mut buffer).await?;
    }
    let dram_hits = |view: &TiersView| view.tier(TierName::Dram).map_or(0, |view| view.hits);
    let dram_before = dram_hits(&on.tiers().await?);
    let (mut floor, mut dram, mut nvme) = (Vec::new(), Vec::new(), Vec::new());
    let (mut ping, mut crc) = (Vec::new(), Vec::new());
    while floor.len() < args.samples as usize {
        for _ in 0..BATCH {
            let start = Instant::now();
            on.pool
                .call(NodeId(1), &nabu_proto::ops::Ping, Bytes::new())
                .await?;
            ping.push(start.elapsed());
            let start = Instant::now();
            std::hint::black_box(nabu_client::value_crc32c(std::hint::black_box(&buffer)));
            crc.push(start.elapsed());
        }
        for _ in 0..BATCH {
            floor.push(floor_get(&mut floor_client, &mut buffer).await?);
        }
        for _ in 0..BATCH {
            dram.push(on.get(*stripe_id).await?);
        }
        for _ in 0..BATCH {
            nvme.push(off.get(*stripe_id).await?);
        }
    }
    let served_by_dram = dram_hits(&on.tiers().await?) - dram_before;
    anyhow::ensure!(
        served_by_dram == dram.len() as u64,
        "only {served_by_dram} of {} GETs came from the DRAM tier",
        dram.len()
    );
    drop(floor_client);
    floor_server.task.abort();
    let (floor, dram, nvme) = (
        Latency::from_samples(floor),
        Latency::from_samples(dram),
        Latency::from_samples(nvme),
    );
    Ok(Gets {
        direct_io,
        ping: Latency::from_samples(ping),
        crc32c_1mib: Latency::from_samples(crc),
        dram_over_floor: dram.p50_us / floor.p50_us,
        nvme_over_dram: nvme.p50_us / dram.p50_us,
        floor,
        dram,
        nvme,
    })
}

/// A loopback server answering each 8-byte request with 1 MiB.
struct FloorServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl FloorServer {
    async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let _ = socket.set_nodelay(true);
            let reply = vec![0x5au8; SHARD_BYTES];
            let mut request = [0u8; 8];
            while socket.read_exact(&mut request).await.is_ok() {
                if socket.write_all(&reply).await.is_err() {
                    return;
                }
            }
        });
        Ok(Self { addr, task })
    }
}

async fn floor_get(socket: &mut TcpStream, buffer: &mut [u8]) -> anyhow::Result<Duration> {
    let start = Instant::now();
    socket.write_all(&[1u8; 8]).await?;
    socket.read_exact(buffer).await?;
    Ok(start.elapsed())
}

/// Whether files under `dir` can be opened with `O_DIRECT` (what the store's probe decides).
fn probe_direct(dir: &Path) -> anyhow::Result<bool> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let path = dir.join(".direct-probe");
    let opened = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path);
    let _ = std::fs::remove_file(&path);
    match opened {
        Ok(_) => Ok(true),
        Err(error) if error.raw_os_error() == Some(libc::EINVAL) => Ok(false),
        Err(error) => Err(error).with_context(|| format!("probe O_DIRECT in {}", dir.display())),
    }
}
