//! `nabu kv-bench`: the client-observed latency of `prefix_lookup` over N keys (one round trip
//! to one node, which asks every owner in parallel), against the round-trip floor measured in
//! the same run (PING to the same node on the same connection).

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use nabu_client::KvItem;
use nabu_proto::ops::Ping;

use crate::commands::ClusterArg;

/// Arguments of `nabu kv-bench`.
#[derive(Debug, clap::Args)]
pub struct KvBenchArgs {
    #[command(flatten)]
    pub cluster: ClusterArg,
    /// Keys per lookup (an ordered chunk list, all present).
    #[arg(long, default_value_t = 64)]
    pub keys: usize,
    /// Timed lookups (and as many timed PINGs).
    #[arg(long, default_value_t = 2000)]
    pub iterations: usize,
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// Runs the benchmark and prints one table.
pub async fn run(args: KvBenchArgs) -> anyhow::Result<()> {
    ensure!(
        args.keys > 0 && args.iterations > 0,
        "--keys and --iterations must be positive"
    );
    let client = args.cluster.client().await?;
    let stamp = Instant::now().elapsed().as_nanos() ^ u128::from(std::process::id());
    let keys: Vec<Vec<u8>> = (0..args.keys)
        .map(|n| format!("kv-bench/{stamp:x}/{n}kv_bytes").into_bytes())
        .collect();
    let items = keys
        .iter()
        .map(|key| KvItem::new(key.clone(), vec![7u8; 4096]))
        .collect();
    client
        .kv_put("kv", items)
        .await
        .context("put the lookup keys")?;
    let entry = client.kv_owner("kv", &keys[0]);
    let mut floor = Vec::with_capacity(args.iterations);
    let mut lookup = Vec::with_capacity(args.iterations);
    for round in 0..args.iterations + 50 {
        let started = Instant::now();
        client
            .pool()
            .call(entry, &Ping, bytes::Bytes::new())
            .await
            .context("PING")?;
        let ping = started.elapsed();
        let started = Instant::now();
        let prefix = client
            .kv_prefix_lookup("kv", &keys, 10_000)
            .await
            .context("prefix_lookup")?;
        let took = started.elapsed();
        ensure!(
            prefix == keys.len(),
            "prefix_lookup found {prefix} of {} keys",
            keys.len()
        );
        if round >= 50 {
            floor.push(ping);
            lookup.push(took);
        }
    }
    client
        .kv_delete("kv", &keys)
        .await
        .context("delete the lookup keys")?;
    floor.sort();
    lookup.sort();
    let owners = client.kv_group_by_owner("kv", &keys).len();
    println!(
        "prefix_lookup of {} keys on {owners} owner nodes, {} rounds (node {entry} fans out)",
        keys.len(),
        args.iterations
    );
    println!("{:<22} {:>10} {:>10}", "", "p50", "p99");
    let (floor_p50, floor_p99) = (percentile(&floor, 0.5), percentile(&floor, 0.99));
    let (lookup_p50, lookup_p99) = (percentile(&lookup, 0.5), percentile(&lookup, 0.99));
    println!(
        "{:<22} {:>10.1?} {:>10.1?}",
        "round trip (PING)", floor_p50, floor_p99
    );
    println!(
        "{:<22} {:>10.1?} {:>10.1?}",
        "prefix_lookup", lookup_p50, lookup_p99
    );
    println!(
        "{:<22} {:>9.2}× {:>9.2}×",
        "ratio",
        lookup_p50.as_secs_f64() / floor_p50.as_secs_f64(),
        lookup_p99.as_secs_f64() / floor_p99.as_secs_f64()
    );
    Ok(())
}
