//! The scrubber against real nodes: bit rot flipped into about 1% of the stored shards is
//! found by rereading, each damaged shard exactly once, and rebuilt in place from the others.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use nabu_core::ring::NodeId;
use nabu_proto::ops::ShardLayout;
use rand::seq::SliceRandom;
use rand::{SeedableRng, rngs::StdRng};

use super::repair::eventually;
use super::{MIB, NS, TestCluster, assert_same, flip_byte_of, random_bytes, shard_holders};

/// 50 objects of one 4 MiB stripe each: 300 shards of 1 MiB over six nodes.
const OBJECTS: u64 = 50;
/// About 1% of them.
const FLIPPED: usize = 3;

/// `name` summed over every running node.
async fn cluster_total(cluster: &TestCluster, name: &str) -> u64 {
    let mut total = 0;
    for node in cluster.nodes.iter().filter(|node| node.task.is_some()) {
        total += cluster.metric(NodeId(node.id), name).await;
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scrubber_finds_every_flipped_shard_once_and_rebuilds_it() {
    let cluster = TestCluster::start_configured(6, BTreeMap::new(), |config| {
        config.scrub_bytes_per_s = 512 << 20;
        config.scrub_interval_ms = 300;
    })
    .await;
    let client = cluster.client();
    let mut objects = Vec::new();
    for seed in 0..OBJECTS {
        let bytes = random_bytes(1_000 + seed, 4 * MIB);
        let key = format!("rot/{seed}");
        let receipt = client
            .put(NS, key.as_bytes(), bytes.clone())
            .await
            .expect("put");
        let manifest = client
            .read_manifest(NS, receipt.blob_id)
            .await
            .expect("manifest");
        assert_eq!(manifest.stripes.len(), 1, "one stripe per object");
        objects.push((key, bytes, manifest.stripes[0].stripe_id));
    }

    // Damage data shards of distinct stripes, each in the middle of its MiB on its holder.
    let mut picks: Vec<usize> = (0..objects.len()).collect();
    picks.shuffle(&mut StdRng::seed_from_u64(7));
    let mut damaged = Vec::new();
    for (n, &object) in picks.iter().take(FLIPPED).enumerate() {
        let (_, bytes, stripe_id) = &objects[object];
        let index = (n % 4) as u8;
        let holders = shard_holders(&cluster, &client, *stripe_id).await;
        let &(holder, _) = holders
            .iter()
            .find(|(_, held)| *held == index)
            .expect("the shard's holder");
        let middle = usize::from(index) * MIB + MIB / 2;
        assert!(
            flip_byte_of(&cluster.node(holder).data_dir, &bytes[middle..middle + 64]),
            "shard bytes found on disk"
        );
        damaged.push((object, holder, index));
    }
    let flipped_at = Instant::now();

    eventually("every damaged shard is rebuilt", || async {
        cluster_total(&cluster, "nabu_scrub_repaired_total").await >= FLIPPED as u64
    })
    .await;
    let took = flipped_at.elapsed();
    // Two more passes everywhere: nothing new is found, nothing is found twice.
    let mut passes = BTreeMap::new();
    for node in &cluster.nodes {
        let id = NodeId(node.id);
        passes.insert(id, cluster.metric(id, "nabu_scrub_passes_total").await);
    }
    eventually("two more scrub passes on every node", || async {
        for (&id, &before) in &passes {
            if cluster.metric(id, "nabu_scrub_passes_total").await < before + 2 {
                return false;
            }
        }
        true
    })
    .await;
    let found = cluster_total(&cluster, "nabu_scrub_corrupt_found_total").await;
    let repaired = cluster_total(&cluster, "nabu_scrub_repaired_total").await;
    let unrepaired = cluster_total(&cluster, "nabu_scrub_unrepaired_total").await;
    let checked = cluster_total(&cluster, "nabu_scrub_records_checked_total").await;
    println!(
        "scrub: {FLIPPED} of {} shards flipped; found {found}, repaired {repaired} within {took:?} \
         ({checked} records checked in all)",
        OBJECTS * 6
    );
    assert_eq!(
        found, FLIPPED as u64,
        "each damaged shard found exactly once"
    );
    assert_eq!(repaired, FLIPPED as u64);
    assert_eq!(unrepaired, 0);
    // The holders' event logs (the dashboard's Events view) say so too.
    let (mut found_events, mut repaired_events) = (0, 0);
    for node in &cluster.nodes {
        let id = NodeId(node.id);
        found_events += cluster.events_of_kind(id, "corruption_found").await;
        repaired_events += cluster.events_of_kind(id, "corruption_repaired").await;
    }
    assert_eq!((found_events, repaired_events), (FLIPPED, FLIPPED));

    // Each rebuilt shard is back on its node under its index, and serves.
    for &(object, holder, index) in &damaged {
        let stripe_id = objects[object].2;
        let info = client
            .pool()
            .shard_stat(holder, stripe_id)
            .await
            .expect("stat the rebuilt shard")
            .expect("the holder has its shard again");
        assert!(
            matches!(info.layout, ShardLayout::Erasure { index: got, .. } if got == index),
            "the rebuilt shard keeps its index: {info:?}"
        );
        client
            .pool()
            .shard_get(holder, stripe_id)
            .await
            .expect("the rebuilt shard serves");
    }
    // Every stripe still has six shards on six nodes, and every object reads back exactly.
    for (key, bytes, stripe_id) in &objects {
        let holders = shard_holders(&cluster, &client, *stripe_id).await;
        let indexes: BTreeSet<u8> = holders.iter().map(|(_, index)| *index).collect();
        assert_eq!(indexes, (0..6).collect(), "{key}: {holders:?}");
        let got = client.get(NS, key.as_bytes()).await.expect("get");
        assert_same(&got, bytes, key);
    }
}
