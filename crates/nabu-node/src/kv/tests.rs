use std::time::Duration;

use bytes::Bytes;
use nabu_proto::ops::{KvCondition, KvPutOutcome, KvTtlAction};

use super::*;

const NS: &str = "kv";

fn pool(capacity_bytes: u64, policy: PolicyKind) -> KvPool {
    KvPool::new(KvPoolConfig {
        capacity_bytes,
        value_bytes_max: capacity_bytes / 2,
        pinned_bytes_max: capacity_bytes / 2,
        policy,
    })
}

fn put(pool: &KvPool, key: &[u8], value: &[u8]) -> KvPutOutcome {
    pool.put(
        NS,
        key,
        Bytes::copy_from_slice(value),
        None,
        false,
        KvCondition::Always,
    )
    .unwrap()
}

#[test]
fn values_round_trip_and_misses_are_counted() {
    let pool = pool(1 << 20, PolicyKind::S3Fifo);
    assert_eq!(put(&pool, b"a", b"hello"), KvPutOutcome::Stored);
    assert_eq!(pool.get(NS, b"a").unwrap().0, &b"hello"[..]);
    assert_eq!(pool.get("other", b"a"), None);
    assert_eq!(pool.counters.hits.load(Ordering::Relaxed), 1);
    assert_eq!(pool.counters.misses.load(Ordering::Relaxed), 1);
    assert_eq!(pool.delete(NS, &[b"a".to_vec(), b"a".to_vec()]), 1);
    assert_eq!(pool.gauges(), KvGauges::default());
}

#[test]
fn conditions_follow_nx_and_xx() {
    let pool = pool(1 << 20, PolicyKind::Lru);
    let put_if = |condition| {
        pool.put(NS, b"k", Bytes::from_static(b"v"), None, false, condition)
            .unwrap()
    };
    assert_eq!(
        put_if(KvCondition::IfPresent),
        KvPutOutcome::ConditionFailed
    );
    assert_eq!(put_if(KvCondition::IfAbsent), KvPutOutcome::Stored);
    assert_eq!(put_if(KvCondition::IfAbsent), KvPutOutcome::ConditionFailed);
    assert_eq!(put_if(KvCondition::IfPresent), KvPutOutcome::Stored);
}

#[test]
fn a_full_pool_evicts_instead_of_failing_and_never_evicts_pinned_values() {
    for policy in [PolicyKind::S3Fifo, PolicyKind::Lru] {
        let pool = pool(64 << 10, policy);
        let value = vec![7u8; 1000];
        pool.put(
            NS,
            b"pinned",
            Bytes::from(value.clone()),
            None,
            true,
            KvCondition::Always,
        )
        .unwrap();
        for n in 0..500u32 {
            assert_eq!(put(&pool, &n.to_le_bytes(), &value), KvPutOutcome::Stored);
            assert!(pool.gauges().used_bytes <= 64 << 10);
        }
        assert!(pool.counters.evictions.load(Ordering::Relaxed) > 400);
        assert_eq!(pool.get(NS, b"pinned").unwrap().0, value);
        assert_eq!(pool.pin(NS, &[b"pinned".to_vec()], false).unwrap(), 1);
        assert_eq!(pool.gauges().pinned_bytes, 0);
    }
}

#[test]
fn pins_beyond_the_limit_are_refused_and_oversized_values_too() {
    let pool = pool(64 << 10, PolicyKind::S3Fifo);
    let big = Bytes::from(vec![0u8; 20 << 10]);
    pool.put(NS, b"p1", big.clone(), None, true, KvCondition::Always)
        .unwrap();
    let error = pool
        .put(NS, b"p2", big, None, true, KvCondition::Always)
        .unwrap_err();
    assert!(matches!(error, KvError::PinLimit { .. }), "{error}");
    let error = pool
        .put(
            NS,
            b"x",
            Bytes::from(vec![0u8; 40 << 10]),
            None,
            false,
            KvCondition::Always,
        )
        .unwrap_err();
    assert!(matches!(error, KvError::ValueTooLarge { .. }), "{error}");
}

#[test]
fn leased_values_outlast_unleased_ones() {
    let pool = pool(64 << 10, PolicyKind::S3Fifo);
    let value = vec![1u8; 1000];
    put(&pool, b"leased", &value);
    assert_eq!(
        pool.exists(NS, &[b"leased".to_vec()], Some(Duration::from_secs(60))),
        [true]
    );
    for n in 0..500u32 {
        put(&pool, &n.to_le_bytes(), &value);
    }
    assert!(pool.get(NS, b"leased").is_some());
}

#[test]
fn a_group_member_never_outlives_its_head() {
    let pool = pool(64 << 10, PolicyKind::S3Fifo);
    // A member whose head is absent is dropped at once.
    assert_eq!(put(&pool, b"c0metadata", b"m"), KvPutOutcome::Dropped);
    assert_eq!(pool.exists(NS, &[b"c0metadata".to_vec()], None), [false]);
    let tensor = vec![3u8; 2000];
    for n in 0..200u32 {
        let stem = format!("chunk{n}");
        assert_eq!(
            put(&pool, format!("{stem}kv_bytes").as_bytes(), &tensor),
            KvPutOutcome::Stored
        );
        assert_eq!(
            put(
                &pool,
                format!("{stem}metadata").as_bytes(),
                b"28 bytes of metadata......."
            ),
            KvPutOutcome::Stored
        );
        for m in 0..=n {
            let stem = format!("chunk{m}");
            let member = pool.exists(NS, &[format!("{stem}metadata").into_bytes()], None)[0];
            let head = pool.exists(NS, &[format!("{stem}kv_bytes").into_bytes()], None)[0];
            assert!(!member || head, "{stem}: metadata outlived kv_bytes");
        }
    }
    assert!(pool.counters.evictions.load(Ordering::Relaxed) > 100);
    // Deleting or overwriting the head takes the member too.
    assert_eq!(put(&pool, b"xkv_bytes", b"t"), KvPutOutcome::Stored);
    assert_eq!(put(&pool, b"xmetadata", b"m"), KvPutOutcome::Stored);
    assert_eq!(put(&pool, b"xkv_bytes", b"t2"), KvPutOutcome::Stored);
    assert_eq!(pool.get(NS, b"xmetadata"), None);
}

#[test]
fn ttls_expire_and_can_be_read_changed_and_removed() {
    let pool = pool(1 << 20, PolicyKind::S3Fifo);
    pool.put(
        NS,
        b"t",
        Bytes::from_static(b"v"),
        Some(Duration::from_secs(100)),
        false,
        KvCondition::Always,
    )
    .unwrap();
    let reply = pool.ttl(NS, b"t", KvTtlAction::Read, Duration::ZERO);
    assert!(reply.exists && reply.has_ttl && reply.ttl_ms > 99_000);
    let reply = pool.ttl(NS, b"t", KvTtlAction::Persist, Duration::ZERO);
    assert!(reply.exists && !reply.has_ttl);
    pool.put(
        NS,
        b"gone",
        Bytes::from_static(b"v"),
        Some(Duration::ZERO),
        false,
        KvCondition::Always,
    )
    .unwrap();
    assert_eq!(pool.get(NS, b"gone"), None);
    assert_eq!(pool.counters.expirations.load(Ordering::Relaxed), 1);
    let reply = pool.ttl(NS, b"t", KvTtlAction::Set, Duration::ZERO);
    assert!(!reply.exists);
    assert_eq!(pool.get(NS, b"t"), None);
}

#[test]
fn scans_page_through_one_namespace() {
    let pool = pool(1 << 20, PolicyKind::S3Fifo);
    for n in 0..25u32 {
        put(&pool, format!("k{n}").as_bytes(), b"v");
    }
    pool.put(
        "other",
        b"k",
        Bytes::from_static(b"v"),
        None,
        false,
        KvCondition::Always,
    )
    .unwrap();
    let mut seen = Vec::new();
    let mut cursor = 0;
    loop {
        let (keys, next, total) = pool.scan(NS, cursor, 10);
        assert_eq!(total, 25);
        seen.extend(keys);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 25);
}

#[test]
fn a_lease_protects_only_until_it_ends() {
    let pool = pool(64 << 10, PolicyKind::S3Fifo);
    let value = vec![1u8; 1000];
    put(&pool, b"leased", &value);
    let lease = Duration::from_millis(30);
    let leased_at = Instant::now();
    assert_eq!(pool.exists(NS, &[b"leased".to_vec()], Some(lease)), [true]);
    // Waiting for the lease's own end is the behaviour under test (a clock, not a race).
    std::thread::sleep(lease.saturating_sub(leased_at.elapsed()) + Duration::from_millis(5));
    for n in 0..500u32 {
        put(&pool, &n.to_le_bytes(), &value);
    }
    assert!(
        pool.get(NS, b"leased").is_none(),
        "an ended lease still protected the key"
    );
}
