//! The tiers over a real chunk store, through [`Shards`]: what each tier serves, that
//! eviction and writes never lose or stale data, and that the byte bounds hold under
//! concurrent load.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use nabu_core::ec::CodecId;
use nabu_core::id::StripeId;
use nabu_proto::ErrorCode;
use nabu_proto::ops::{PutOutcome, ShardInfo, ShardLayout};
use nabu_store::{RealDisk, Store, StoreConfig};
use rand::{Rng, SeedableRng};

use super::*;
use crate::gc::Touches;
use crate::metrics::Metrics;
use crate::shards::Shards;

const SHARD_BYTES: usize = 64 << 10;

fn shards_with(dir: &std::path::Path, config: &TierConfig) -> Shards {
    let store = Store::open(
        StoreConfig::new(vec![dir.to_owned()]),
        Arc::new(RealDisk::new()),
    )
    .unwrap();
    let tiers = Tiers::new(config, CxlHardware::default()).unwrap();
    Shards::new(Arc::new(store), Arc::new(Metrics::default()), tiers)
}

fn config(dram_bytes: u64, cxl_bytes: u64) -> TierConfig {
    TierConfig {
        dram_bytes,
        cxl_bytes,
        ..TierConfig::default()
    }
}

/// Shard `index` of a stripe: distinct bytes per (n, index).
fn shard(n: u32, index: u8, len: usize) -> (StripeId, ShardInfo, Bytes) {
    let stripe_id = StripeId::of(&n.to_le_bytes());
    let body: Bytes = (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).wrapping_add(n) as u8 ^ index)
        .collect();
    let info = ShardInfo {
        layout: ShardLayout::Erasure {
            codec: CodecId(1),
            data_shards: 4,
            parity_shards: 2,
            index,
        },
        stripe_bytes: len as u64 * 4,
        shard_bytes: len as u64,
        shard_crc: nabu_core::checksum::crc32c(&body),
    };
    (stripe_id, info, body)
}

fn put(shards: &Shards, (stripe_id, info, body): &(StripeId, ShardInfo, Bytes)) {
    let outcome = shards
        .put(
            stripe_id,
            info,
            body,
            nabu_core::checksum::crc32c(body),
            &Touches::new(16),
        )
        .unwrap();
    assert_eq!(outcome, PutOutcome::Stored);
}

fn read(shards: &Shards, stripe_id: &StripeId) -> (ShardInfo, Bytes) {
    let read = shards.get(stripe_id, None).unwrap();
    (read.info, read.body)
}

fn hits(tier: Option<&MemoryTier>) -> u64 {
    tier.unwrap().counters.hits.load(Ordering::Relaxed)
}

#[test]
fn reads_are_byte_identical_through_nvme_cxl_and_dram() {
    let dir = tempfile::tempdir().unwrap();
    let shards = shards_with(dir.path(), &config(8 << 20, 8 << 20));
    let tiers = shards.tiers();
    let wanted = shard(1, 3, SHARD_BYTES + 123);
    put(&shards, &wanted);
    // First read: NVMe, which fills CXL (one read is not hot enough for DRAM).
    assert_eq!(read(&shards, &wanted.0), (wanted.1, wanted.2.clone()));
    assert_eq!(tiers.nvme.hits.load(Ordering::Relaxed), 1);
    assert_eq!(tiers.cxl().unwrap().entries(), 1);
    // Second: CXL serves it and, at promote_hits = 2, moves it up to DRAM.
    assert_eq!(read(&shards, &wanted.0), (wanted.1, wanted.2.clone()));
    assert_eq!(hits(tiers.cxl()), 1);
    assert_eq!(
        (
            tiers.dram().unwrap().entries(),
            tiers.cxl().unwrap().entries()
        ),
        (1, 0),
        "exclusive: the promoted shard left CXL"
    );
    // Third: DRAM, and ranges are cut from the cached bytes.
    assert_eq!(read(&shards, &wanted.0), (wanted.1, wanted.2.clone()));
    let range = nabu_proto::ops::ByteRange {
        offset: 1000,
        bytes: 5000,
    };
    let ranged = shards.get(&wanted.0, Some(range)).unwrap();
    assert_eq!(ranged.body, wanted.2.slice(1000..6000));
    assert_eq!(hits(tiers.dram()), 2);
    assert_eq!(tiers.nvme.hits.load(Ordering::Relaxed), 1);
    // The checksum the reply frame carries is the bytes' own.
    assert_eq!(
        nabu_core::checksum::crc32c(&read(&shards, &wanted.0).1),
        wanted.1.shard_crc
    );
}

#[test]
fn without_cxl_a_one_off_scan_never_enters_dram() {
    let dir = tempfile::tempdir().unwrap();
    let shards = shards_with(dir.path(), &config(8 << 20, 0));
    let all: Vec<_> = (0..40).map(|n| shard(n, 0, SHARD_BYTES)).collect();
    all.iter().for_each(|wanted| put(&shards, wanted));
    for wanted in &all {
        assert_eq!(read(&shards, &wanted.0).1, wanted.2);
    }
    let dram = shards.tiers().dram().unwrap();
    assert_eq!(dram.entries(), 0, "one read each is not hot enough");
    assert_eq!(dram.counters.misses.load(Ordering::Relaxed), 40);
    // A second read within the window promotes.
    assert_eq!(read(&shards, &all[7].0).1, all[7].2);
    assert_eq!(dram.entries(), 1);
    assert_eq!(dram.counters.promotions.load(Ordering::Relaxed), 1);
}

#[test]
fn eviction_demotes_dram_to_cxl_to_nvme_and_never_loses_a_shard() {
    let dir = tempfile::tempdir().unwrap();
    // Room for about 3 shards in DRAM and 5 in CXL; 30 shards read in a skewed order.
    let charge = heap_charge(SHARD_BYTES);
    let shards = shards_with(dir.path(), &config(3 * charge, 5 * SHARD_BYTES as u64));
    let all: Vec<_> = (0..30)
        .map(|n| shard(n, (n % 6) as u8, SHARD_BYTES))
        .collect();
    all.iter().for_each(|wanted| put(&shards, wanted));
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..2_000 {
        // Skewed: half the reads go to the first four shards.
        let n = if rng.random_bool(0.5) {
            rng.random_range(0..4)
        } else {
            rng.random_range(0..30)
        };
        assert_eq!(read(&shards, &all[n].0), (all[n].1, all[n].2.clone()));
    }
    let tiers = shards.tiers();
    let (dram, cxl) = (tiers.dram().unwrap(), tiers.cxl().unwrap());
    assert!(dram.counters.demotions.load(Ordering::Relaxed) > 0);
    assert!(cxl.counters.demotions.load(Ordering::Relaxed) > 0);
    assert!(hits(Some(dram)) > 0 && hits(Some(cxl)) > 0);
    dram.check_books();
    cxl.check_books();
    // Everything evicted from memory is still served whole from NVMe.
    for wanted in &all {
        assert_eq!(read(&shards, &wanted.0), (wanted.1, wanted.2.clone()));
    }
}

#[test]
fn a_deleted_or_replaced_shard_is_never_served_from_memory() {
    let dir = tempfile::tempdir().unwrap();
    let shards = shards_with(dir.path(), &config(8 << 20, 8 << 20));
    let old = shard(5, 1, SHARD_BYTES);
    put(&shards, &old);
    for _ in 0..3 {
        read(&shards, &old.0);
    }
    assert_eq!(shards.tiers().dram().unwrap().entries(), 1);
    assert!(shards.delete(&old.0).unwrap());
    let error = shards.get(&old.0, None).unwrap_err();
    assert_eq!(error.code, ErrorCode::NOT_FOUND);
    // Another shard of the same stripe (a rebalance moved a different index here).
    let new = shard(5, 4, SHARD_BYTES);
    put(&shards, &new);
    for _ in 0..3 {
        assert_eq!(read(&shards, &new.0), (new.1, new.2.clone()));
    }
}

#[test]
fn a_fill_racing_a_write_is_refused_by_the_generation() {
    let dir = tempfile::tempdir().unwrap();
    let shards = shards_with(dir.path(), &config(8 << 20, 0));
    let tiers = shards.tiers();
    let old = shard(9, 0, SHARD_BYTES);
    put(&shards, &old);
    let key = crate::records::shard_key(&old.0);
    // A reader misses (hot already), reads NVMe ... and a delete lands before it fills.
    tiers.read(&key);
    let TierRead::Miss { heat, generation } = tiers.read(&key) else {
        panic!("nothing is cached yet");
    };
    assert!(heat >= 2);
    assert!(shards.delete(&old.0).unwrap());
    tiers.filled(&key, old.1, &old.2, heat, generation);
    assert_eq!(
        tiers.dram().unwrap().entries(),
        0,
        "the stale fill was refused"
    );
}

#[test]
fn heat_counts_reads_within_the_window_only_and_stays_bounded() {
    let mut heat = Heat::new(Duration::from_secs(10), 4);
    let start = Instant::now();
    assert_eq!(heat.touch(1, start), 1);
    assert_eq!(heat.touch(1, start + Duration::from_secs(9)), 2);
    // The window has passed: counting starts again.
    assert_eq!(heat.touch(1, start + Duration::from_secs(10)), 1);
    for hash in 2..=4 {
        heat.touch(hash, start + Duration::from_secs(10));
    }
    assert_eq!(heat.entries.len(), 4);
    // Full, and every entry is fresh: the table is cleared rather than grown.
    heat.touch(5, start + Duration::from_secs(11));
    assert!(heat.entries.len() <= 4);
    // Full with stale entries: only those go.
    heat.touch(6, start + Duration::from_secs(30));
    assert!(heat.entries.len() <= 4);
}

#[test]
fn byte_bounds_hold_under_concurrent_reads_and_writes() {
    let dir = tempfile::tempdir().unwrap();
    let charge = heap_charge(SHARD_BYTES);
    let mut tier_config = config(6 * charge, 9 * SHARD_BYTES as u64);
    tier_config.promote_hits = 1;
    let shards = Arc::new(shards_with(dir.path(), &tier_config));
    // Mixed sizes so the CXL region fragments.
    let all: Arc<Vec<_>> = Arc::new(
        (0..48)
            .map(|n| shard(n, 0, SHARD_BYTES / (1 + n as usize % 3) + 17 * n as usize))
            .collect(),
    );
    all.iter().for_each(|wanted| put(&shards, wanted));
    let done = Arc::new(AtomicBool::new(false));
    let checker = {
        let (shards, done) = (Arc::clone(&shards), Arc::clone(&done));
        std::thread::spawn(move || {
            let tiers = shards.tiers();
            let (dram, cxl) = (tiers.dram().unwrap(), tiers.cxl().unwrap());
            let mut checks = 0u64;
            while !done.load(Ordering::SeqCst) || checks == 0 {
                assert!(dram.used_bytes() <= dram.capacity_bytes());
                assert!(cxl.used_bytes() <= cxl.capacity_bytes());
                checks += 1;
                if checks.is_multiple_of(64) {
                    dram.check_books();
                    cxl.check_books();
                }
            }
            checks
        })
    };
    let readers: Vec<_> = (0..6)
        .map(|thread| {
            let (shards, all) = (Arc::clone(&shards), Arc::clone(&all));
            std::thread::spawn(move || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(thread);
                for step in 0..600 {
                    let n = (rng.random_range(0.0f64..1.0).powi(3) * all.len() as f64) as usize;
                    let wanted = &all[n];
                    // Writers: a few threads delete and put back now and then.
                    if thread < 2 && step % 37 == 0 {
                        let _ = shards.delete(&wanted.0);
                        let _ = shards.put(
                            &wanted.0,
                            &wanted.1,
                            &wanted.2,
                            wanted.1.shard_crc,
                            &Touches::new(16),
                        );
                        continue;
                    }
                    match shards.get(&wanted.0, None) {
                        Ok(read) => {
                            assert_eq!((read.info, read.body), (wanted.1, wanted.2.clone()))
                        }
                        Err(error) => assert_eq!(error.code, ErrorCode::NOT_FOUND),
                    }
                }
            })
        })
        .collect();
    for reader in readers {
        reader.join().unwrap();
    }
    done.store(true, Ordering::SeqCst);
    let checks = checker.join().unwrap();
    assert!(checks > 0);
    let tiers = shards.tiers();
    let (dram, cxl) = (tiers.dram().unwrap(), tiers.cxl().unwrap());
    dram.check_books();
    cxl.check_books();
    assert!(dram.counters.demotions.load(Ordering::Relaxed) > 0);
    assert!(cxl.counters.demotions.load(Ordering::Relaxed) > 0);
}

#[test]
fn the_tiers_table_parses_with_defaults_and_bad_values_are_refused() {
    let config = crate::NodeConfig::from_toml(
        "cluster_token = \"5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a\"\n\
         [tiers]\ncxl_bytes = 1048576\ncxl_path = \"/dev/dax0.0\"\n",
    )
    .unwrap();
    assert_eq!(config.tiers.dram_bytes, TierConfig::default().dram_bytes);
    assert_eq!(
        config.tiers.cxl_path.as_deref(),
        Some("/dev/dax0.0".as_ref())
    );
    config.validate().unwrap();
    let refused = |tiers: &str| {
        let text = format!(
            "cluster_token = \"{}\"\n[tiers]\n{tiers}\n",
            "5a".repeat(32)
        );
        crate::NodeConfig::from_toml(&text).unwrap_err().to_string()
    };
    assert!(refused("promote_hits = 0").contains("tiers.promote_hits"));
    assert!(refused("promote_window_ms = 0").contains("tiers.promote_window_ms"));
    assert!(refused("cxl_path = \"/dev/dax0.0\"").contains("tiers.cxl_bytes"));
    let typo = format!(
        "cluster_token = \"{}\"\n[tiers]\ndram_byte = 1\n",
        "5a".repeat(32)
    );
    assert!(
        crate::NodeConfig::from_toml(&typo).is_err(),
        "unknown fields are refused"
    );
}
