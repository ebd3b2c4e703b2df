//! The cache tiers of a whole node, over real sockets: SHARD_GET through every tier, eviction
//! under tiny tiers, a restart, and the figures in `/metrics` and `/api/v1/cluster`.

use nabu_node::tier::{TierName, TierView};

use super::support::*;
use super::*;

const MIB: usize = 1 << 20;

/// Puts `shard` as a whole copy under its content id.
async fn put_whole(client: &mut Client, shard: &Bytes) {
    put_shard(
        client,
        StripeId::of(shard),
        whole_shard(shard),
        shard.clone(),
    )
    .await;
}

async fn tier(node: &TestNode, name: TierName) -> TierView {
    node.cluster().await.tiers.tier(name).unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_gets_are_byte_identical_from_nvme_cxl_and_dram_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let cxl_path = dir.path().join("cxl-region");
    let node = TestNode::start(|config| {
        config.tiers.dram_bytes = 8 << 20;
        config.tiers.cxl_bytes = 8 << 20;
        config.tiers.cxl_path = Some(cxl_path.clone());
    })
    .await;
    let mut client = node.client().await;
    let shard = pattern(MIB + 4321, 3);
    let stripe_id = StripeId::of(&shard);
    put_shard(&mut client, stripe_id, whole_shard(&shard), shard.clone()).await;
    for (read, served_by) in [(1, TierName::Nvme), (2, TierName::Cxl), (3, TierName::Dram)] {
        assert_eq!(
            get_shard(&mut client, stripe_id).await,
            shard,
            "read {read}"
        );
        assert_eq!(tier(&node, served_by).await.hits, 1, "read {read}");
    }
    // A range of a cached shard is cut from the cached bytes.
    let (reply, body) = client
        .get_shard(stripe_id, Some((MIB as u64, 10_000)))
        .await
        .unwrap();
    assert_eq!((reply.offset, body), (MIB as u64, shard.slice(MIB..)));
    let view = node.cluster().await.tiers;
    let dram = view.tier(TierName::Dram).unwrap();
    assert_eq!((dram.hits, dram.entries, dram.promotions), (2, 1, 1));
    let cxl = view.tier(TierName::Cxl).unwrap();
    assert_eq!(cxl.backing, cxl_path.display().to_string());
    assert_eq!((cxl.entries, cxl.bytes), (0, 0), "promoted out of CXL");
    assert_eq!(view.promote_hits, 2);
    // No CXL on this machine (or a fake root in the unit tests): shown as absent.
    assert_eq!(view.cxl_hardware, nabu_node::tier::detect_cxl("/".as_ref()));
    assert_eq!(
        node.metric("nabu_tier_hits_total{tier=\"dram\"}").await,
        2.0
    );
    assert_eq!(node.metric("nabu_tier_hits_total{tier=\"cxl\"}").await, 1.0);
    assert_eq!(
        node.metric("nabu_tier_hits_total{tier=\"nvme\"}").await,
        1.0
    );
    assert_eq!(
        node.metric("nabu_tier_misses_total{tier=\"cxl\"}").await,
        1.0
    );
    let (_, stats) = get_json(&node, "/api/v1/node").await;
    assert!(stats["hardware"]["cxl"]["present"].is_boolean(), "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_tiers_evict_and_demote_without_losing_a_shard() {
    let node = TestNode::start(|config| {
        config.tiers.dram_bytes = 3 * (68 << 10);
        config.tiers.cxl_bytes = 4 * (64 << 10);
        config.tiers.promote_hits = 1;
    })
    .await;
    let mut client = node.client().await;
    let shards: Vec<Bytes> = (0..16).map(|n| pattern(64 << 10, n)).collect();
    for shard in &shards {
        put_whole(&mut client, shard).await;
    }
    for round in 0..3 {
        for shard in &shards {
            let body = get_shard(&mut client, StripeId::of(shard)).await;
            assert!(body == shard, "round {round}");
        }
    }
    let view = node.cluster().await.tiers;
    for name in [TierName::Dram, TierName::Cxl] {
        let tier = view.tier(name).unwrap();
        assert!(tier.demotions > 0, "{tier:?}");
        assert!(tier.bytes <= tier.capacity_bytes, "{tier:?}");
    }
    assert!(view.tier(TierName::Nvme).unwrap().hits > 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_serves_from_nvme_and_warms_up_again() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_owned();
    let shards: Vec<Bytes> = (0..4).map(|n| pattern(256 << 10, 40 + n)).collect();
    {
        let mut node = TestNode::start(|config| config.data_dirs = vec![data_dir.clone()]).await;
        let mut client = node.client().await;
        for shard in &shards {
            put_whole(&mut client, shard).await;
            for _ in 0..3 {
                assert_eq!(get_shard(&mut client, StripeId::of(shard)).await, shard);
            }
        }
        assert_eq!(tier(&node, TierName::Dram).await.entries, 4);
        node.stop().await;
    }
    let node = TestNode::start(|config| config.data_dirs = vec![data_dir.clone()]).await;
    let mut client = node.client().await;
    assert_eq!(
        tier(&node, TierName::Dram).await.entries,
        0,
        "memory starts cold"
    );
    for shard in &shards {
        assert_eq!(get_shard(&mut client, StripeId::of(shard)).await, shard);
    }
    assert_eq!(tier(&node, TierName::Nvme).await.hits, 4);
    assert_eq!(tier(&node, TierName::Dram).await.hits, 0);
    // Warming: the second read within the window promotes, the third is a DRAM hit.
    for shard in &shards {
        for _ in 0..2 {
            assert_eq!(get_shard(&mut client, StripeId::of(shard)).await, shard);
        }
    }
    let dram = tier(&node, TierName::Dram).await;
    assert_eq!((dram.entries, dram.hits, dram.promotions), (4, 4, 4));
    assert_eq!(tier(&node, TierName::Nvme).await.hits, 8);
}
