//! `nabu bench`: PUT and GET throughput and latency against a running cluster, each figure
//! printed as a ratio to a limit measured in the same run on the same machine.
//!
//! **Why ratios.** A number like "800 MB/s" means nothing without the machine it ran on; "40%
//! of what one loopback TCP connection carries here" or "90% of the data dir's `O_DIRECT`
//! read rate" says how much of the hardware the data path uses, and survives a change of
//! machine. The limits (`limits`) are measured before the cluster is loaded.
//!
//! **What runs.** For each object size × concurrency: a PUT pass of fresh random objects
//! (each stamped with its op number, so nothing is deduplicated), then a GET pass over those
//! objects (cold: nodes read with `O_DIRECT`, so no page cache serves them). Every pass is
//! bounded by `--ops`, `--duration` and a byte cap. Keys live under `bench/<run-id>/` and are
//! deleted at the end. With `--pause-node ID`, a second GET pass of 1 MiB objects runs with
//! that node stopped by SIGSTOP (hedged reads should keep its p99 near the healthy one).

mod limits;
mod report;
pub mod tiers;
mod workload;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use nabu_client::Client;
use nabu_node::parse_duration;
use serde::Serialize;

use crate::cluster_file::ClusterFile;
use crate::commands::{ClusterArg, NamespaceArg};
use limits::{DiskLimits, LoopbackLimits};
use workload::PassPlan;

/// The object size the paused-node pass uses (the "1 MiB GET p99").
const PAUSED_OBJECT_BYTES: u64 = 1 << 20;
/// The concurrency of the paused-node pass.
const PAUSED_CONCURRENCY: usize = 1;

/// Arguments of `nabu bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub cluster: ClusterArg,
    #[command(flatten)]
    pub ns: NamespaceArg,
    /// Object sizes (B, KiB, MiB, GiB; KB, MB, GB are powers of ten), comma-separated.
    #[arg(long, value_delimiter = ',', value_parser = parse_size, default_value = "4KiB,1MiB,64MiB")]
    pub sizes: Vec<u64>,
    /// Tasks issuing requests at once, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    pub concurrency: Vec<usize>,
    /// Time bound of each pass (e.g. 10s, 500ms, 1m).
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub duration: Duration,
    /// Op bound of each pass (a pass stops at whichever bound comes first).
    #[arg(long)]
    pub ops: Option<u64>,
    /// Where to measure the device limits (default: the first node's data dir).
    #[arg(long)]
    pub limits_dir: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Measure only the limits (loopback TCP, the device) and print them, for scripts that
    /// quote other figures against them (scripts/bench-repair). Needs no running cluster
    /// with --limits-dir.
    #[arg(long)]
    pub limits_only: bool,
    /// Stop this node (SIGSTOP, pid from cluster.toml) during an extra 1 MiB GET pass.
    #[arg(long)]
    pub pause_node: Option<u32>,
}

/// PUT or GET.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Put,
    Get,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Put => "PUT",
            Op::Get => "GET",
        }
    }
}

/// p50/p99/max of a set of timed operations, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    pub samples: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

impl Latency {
    /// Nearest-rank percentiles of `samples`.
    pub fn from_samples(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        let at = |quantile: f64| -> f64 {
            if samples.is_empty() {
                return 0.0;
            }
            let rank = (quantile * samples.len() as f64).ceil() as usize;
            samples[rank.clamp(1, samples.len()) - 1].as_secs_f64() * 1e6
        };
        Self {
            samples: samples.len() as u64,
            p50_us: at(0.50),
            p99_us: at(0.99),
            max_us: at(1.0),
        }
    }
}

/// One timed pass.
#[derive(Debug, Clone, Serialize)]
pub struct PassResult {
    pub op: Op,
    pub object_bytes: u64,
    pub concurrency: usize,
    pub ops: u64,
    /// User bytes moved.
    pub bytes: u64,
    pub elapsed_sec: f64,
    pub latency: Latency,
}

impl PassResult {
    /// User bytes per second.
    pub fn bytes_per_sec(&self) -> f64 {
        if self.elapsed_sec > 0.0 {
            self.bytes as f64 / self.elapsed_sec
        } else {
            0.0
        }
    }
}

/// The 1 MiB GET p99 with one node paused, beside the healthy one.
#[derive(Debug, Clone, Serialize)]
pub struct PausedResult {
    pub node: u32,
    pub healthy: PassResult,
    pub paused: PassResult,
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub run_id: String,
    pub nodes: usize,
    pub cores: usize,
    pub namespace: String,
    pub policy: String,
    pub space_overhead: f64,
    pub loopback: LoopbackLimits,
    pub disk: DiskLimits,
    pub passes: Vec<PassResult>,
    pub paused: Option<PausedResult>,
    /// The figures issue 3 sets targets for, as ratios to their limits.
    pub targets: Vec<report::Target>,
}

/// Runs `nabu bench`.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    check_args(&args)?;
    let cluster_file = load_cluster_file(&args.cluster.cluster);
    let limits_dir = limits_dir(&args, cluster_file.as_ref())?;
    if args.limits_only {
        return print_limits(&limits_dir, args.json).await;
    }
    // The benchmark is judged against loopback TCP: it measures the network path, so it
    // never takes a node's Unix socket.
    let tcp = ClusterArg {
        tcp: true,
        ..args.cluster.clone()
    };
    let client = tcp.client().await?;
    let namespace = args.ns.namespace.clone();
    let policy = client
        .namespace_policy(&namespace)
        .await
        .with_context(|| format!("look up namespace {namespace}"))?;
    let run_id = run_id()?;
    eprintln!(
        "measuring limits: loopback TCP, then {}",
        limits_dir.display()
    );
    let loopback = limits::loopback().await?;
    let disk = tokio::task::spawn_blocking(move || limits::disk(&limits_dir))
        .await
        .context("device limit task panicked")??;
    let measured = run_passes(&args, &client, &run_id).await;
    let paused = match (&measured, args.pause_node) {
        (Ok(_), Some(node)) => paused_pass(&args, &client, &run_id, node, cluster_file.as_ref())
            .await
            .map(Some),
        _ => Ok(None),
    };
    // Deleting by listing the run's prefix also finds the objects of a pass that failed.
    let prefix = format!("bench/{run_id}/");
    match workload::delete_prefix(&client, &namespace, &prefix).await {
        Ok(deleted) => eprintln!("deleted {deleted} benchmark objects under {prefix}"),
        Err(error) => eprintln!("warning: could not delete every object under {prefix}: {error:#}"),
    }
    let mut report = Report {
        nodes: client.ring().members().len(),
        cores: cores(),
        namespace,
        policy: policy.to_string(),
        space_overhead: policy.space_overhead(),
        run_id,
        loopback,
        disk,
        passes: measured?,
        paused: paused?,
        targets: Vec::new(),
    };
    report.targets = report::targets(&report);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report::render(&report));
    }
    Ok(())
}

/// `--limits-only`: the limits alone.
async fn print_limits(dir: &Path, json: bool) -> anyhow::Result<()> {
    eprintln!("measuring limits: loopback TCP, then {}", dir.display());
    let loopback = limits::loopback().await?;
    let dir = dir.to_owned();
    let disk = tokio::task::spawn_blocking(move || limits::disk(&dir))
        .await
        .context("device limit task panicked")??;
    if json {
        let both = serde_json::json!({ "loopback": loopback, "disk": disk });
        println!("{}", serde_json::to_string_pretty(&both)?);
    } else {
        println!(
            "loopback TCP {:.2} GB/s (round trip p50 {:.0} µs); {} reads {:.2} GB/s, durable writes {:.2} GB/s ({})",
            loopback.bytes_per_sec / 1e9,
            loopback.round_trip.p50_us,
            if disk.direct { "O_DIRECT" } else { "buffered" },
            disk.read_bytes_per_sec / 1e9,
            disk.durable_write_bytes_per_sec / 1e9,
            disk.dir.display()
        );
    }
    Ok(())
}

fn check_args(args: &BenchArgs) -> anyhow::Result<()> {
    if args.sizes.is_empty() || args.sizes.contains(&0) {
        bail!("--sizes needs at least one size, none of them 0");
    }
    if args.concurrency.is_empty() || args.concurrency.contains(&0) {
        bail!("--concurrency needs at least one value, none of them 0");
    }
    if args.ops == Some(0) {
        bail!("--ops must be at least 1");
    }
    Ok(())
}

/// The cluster file, when `--cluster` names one (not a node address).
fn load_cluster_file(cluster: &str) -> Option<ClusterFile> {
    if cluster.parse::<std::net::SocketAddr>().is_ok() {
        return None;
    }
    ClusterFile::load(Path::new(cluster)).ok()
}

/// `--limits-dir`, else the first node's first data dir, else the current directory.
fn limits_dir(args: &BenchArgs, cluster: Option<&ClusterFile>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = &args.limits_dir {
        return Ok(dir.clone());
    }
    let Some(node) = cluster.and_then(|file| file.nodes.first()) else {
        eprintln!("no cluster file to find a data dir in: measuring the device limits in .");
        return Ok(PathBuf::from("."));
    };
    let config = nabu_node::NodeConfig::load(&node.config)
        .with_context(|| format!("read {}", node.config.display()))?;
    let dir = config
        .data_dirs
        .first()
        .context("the first node has no data dir")?;
    // Relative data dirs are relative to where the node runs; `nabu up` writes absolute ones.
    Ok(dir.clone())
}

/// Every size × concurrency: a PUT pass, then a GET pass of what it stored.
async fn run_passes(
    args: &BenchArgs,
    client: &Client,
    run_id: &str,
) -> anyhow::Result<Vec<PassResult>> {
    let mut passes = Vec::new();
    for &object_bytes in &args.sizes {
        for &concurrency in &args.concurrency {
            let prefix = format!(
                "bench/{run_id}/{}-c{concurrency}/",
                format_size(object_bytes)
            );
            let (put, get) =
                put_then_get(args, client, run_id, &prefix, object_bytes, concurrency).await?;
            passes.push(put);
            passes.push(get);
        }
    }
    Ok(passes)
}

async fn put_then_get(
    args: &BenchArgs,
    client: &Client,
    run_id: &str,
    prefix: &str,
    object_bytes: u64,
    concurrency: usize,
) -> anyhow::Result<(PassResult, PassResult)> {
    let mut plan = PassPlan {
        op: Op::Put,
        namespace: args.ns.namespace.clone(),
        key_prefix: prefix.to_owned(),
        object_bytes,
        concurrency,
        ops_max: args.ops.unwrap_or(u64::MAX),
        duration_max: args.duration,
        objects: 0,
        run_number: u64::from_str_radix(run_id, 16).unwrap_or(0),
    };
    let put = workload::run_pass(client, plan.clone()).await?;
    plan.op = Op::Get;
    plan.objects = put.ops;
    let get = workload::run_pass(client, plan).await?;
    Ok((put, get))
}

/// 1 MiB GETs healthy, then with node `node` stopped by SIGSTOP (resumed with SIGCONT).
async fn paused_pass(
    args: &BenchArgs,
    client: &Client,
    run_id: &str,
    node: u32,
    cluster: Option<&ClusterFile>,
) -> anyhow::Result<PausedResult> {
    let pid = cluster
        .and_then(|file| file.nodes.iter().find(|n| n.id == node))
        .map(|n| n.pid)
        .filter(|&pid| pid != 0)
        .with_context(|| {
            format!("--pause-node {node}: no running node n{node} in the cluster file")
        })?;
    let prefix = format!("bench/{run_id}/paused/");
    let (put, healthy) = put_then_get(
        args,
        client,
        run_id,
        &prefix,
        PAUSED_OBJECT_BYTES,
        PAUSED_CONCURRENCY,
    )
    .await?;
    let plan = PassPlan {
        op: Op::Get,
        namespace: args.ns.namespace.clone(),
        key_prefix: prefix,
        object_bytes: PAUSED_OBJECT_BYTES,
        concurrency: PAUSED_CONCURRENCY,
        ops_max: args.ops.unwrap_or(u64::MAX),
        duration_max: args.duration,
        // The objects the healthy pass wrote (its GETs may have wrapped around them).
        objects: put.ops,
        run_number: 0,
    };
    signal(pid, libc::SIGSTOP)?;
    let paused = workload::run_pass(client, plan).await;
    signal(pid, libc::SIGCONT)?;
    Ok(PausedResult {
        node,
        healthy,
        paused: paused?,
    })
}

fn signal(pid: u32, signal: libc::c_int) -> anyhow::Result<()> {
    // SAFETY: kill(2) with a pid from the cluster file and a valid signal number.
    if unsafe { libc::kill(pid as libc::pid_t, signal) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("signal pid {pid}"));
    }
    Ok(())
}

/// 16 hex digits, random.
fn run_id() -> anyhow::Result<String> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("random run id: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Cores this process may run on (what `nproc` prints).
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Parses `4096`, `4KiB`, `1MiB`, `64MiB`, `1GiB` (also `K`, `M`, `G`, binary) and `1KB`,
/// `1MB`, `1GB` (decimal).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (e.g. 4KiB, 1MiB, 64MiB)"))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit (B, KiB, MiB, GiB, KB, MB, GB)"
            ));
        }
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// `4KiB`, `1MiB`, `64MiB`, or bytes when not a whole number of KiB.
pub fn format_size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{}GiB", b >> 30),
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{}MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{}KiB", b >> 10),
        b => format!("{b}B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1gib"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("2M"), Ok(2 << 20));
        assert_eq!(parse_size("1MB"), Ok(1_000_000));
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("4XB").is_err());
        assert!(parse_size("99999999999GiB").is_err());
        for size in [4096, 1 << 20, 64 << 20, 1 << 30, 1000] {
            assert_eq!(parse_size(&format_size(size)), Ok(size));
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples = (1..=100).map(Duration::from_micros).collect();
        let latency = Latency::from_samples(samples);
        assert_eq!(latency.samples, 100);
        assert_eq!(latency.p50_us, 50.0);
        assert_eq!(latency.p99_us, 99.0);
        assert_eq!(latency.max_us, 100.0);
        assert_eq!(Latency::from_samples(Vec::new()), Latency::default());
    }
}
