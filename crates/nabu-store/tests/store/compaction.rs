//! Compaction reclaims the space of deleted and overwritten records, keeps every live one, and
//! never lets a deleted key come back, across restarts.

use std::path::Path;
use std::sync::Arc;

use nabu_store::{RealDisk, Store};

use crate::{payload_for, read, small_config};

fn segment_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("list")
        .map(|entry| entry.expect("entry").metadata().expect("stat").len())
        .sum()
}

fn open(dir: &Path) -> Store {
    Store::open(
        small_config(vec![dir.to_path_buf()]),
        Arc::new(RealDisk::new()),
    )
    .expect("open")
}

fn key(index: usize) -> String {
    format!("key-{index}")
}

#[test]
fn compaction_reclaims_space_and_keeps_live_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    for index in 0..200 {
        store
            .put(key(index).as_bytes(), &payload_for(&key(index), 5000))
            .expect("put");
    }
    for index in (0..200).filter(|index| index % 10 != 0) {
        assert!(store.delete(key(index).as_bytes()).expect("delete"));
    }
    for index in (0..200).step_by(20) {
        store
            .put(key(index).as_bytes(), &payload_for("overwritten", 3000))
            .expect("overwrite");
    }
    let before = segment_bytes(dir.path());
    let report = store.compact().expect("compact");
    let after = segment_bytes(dir.path());
    println!("compaction: {report:?}, segment bytes {before} -> {after}");
    assert!(report.segments_compacted > 0);
    assert!(after < before / 2, "space reclaimed: {before} -> {after}");
    let check = |store: &Store| {
        for index in 0..200 {
            let want = match index {
                _ if index % 20 == 0 => Some(payload_for("overwritten", 3000)),
                _ if index % 10 == 0 => Some(payload_for(&key(index), 5000)),
                _ => None,
            };
            assert_eq!(read(store, &key(index)), want, "{}", key(index));
        }
    };
    check(&store);
    drop(store);
    let store = open(dir.path());
    check(&store);
    assert_eq!(store.stats().records, 20);
}

#[test]
fn deleted_keys_stay_deleted_after_compaction_and_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    for round in 0..3 {
        for index in 0..100 {
            let payload = payload_for(&format!("{round}-{index}"), 4000);
            store.put(key(index).as_bytes(), &payload).expect("put");
        }
    }
    for index in 0..90 {
        store.delete(key(index).as_bytes()).expect("delete");
    }
    // Fill more segments so the tombstones' segments are sealed and compactable.
    for index in 0..100 {
        store
            .put(
                format!("filler-{index}").as_bytes(),
                &payload_for("f", 4000),
            )
            .expect("put");
    }
    for _ in 0..2 {
        store.compact().expect("compact");
        for index in 0..100 {
            store
                .delete(format!("filler-{index}").as_bytes())
                .expect("delete filler");
        }
    }
    store.compact().expect("compact");
    drop(store);
    let store = open(dir.path());
    store.compact().expect("compact after restart");
    drop(store);
    let store = open(dir.path());
    for index in 0..100 {
        let want = (index >= 90).then(|| payload_for(&format!("2-{index}"), 4000));
        assert_eq!(
            read(&store, &key(index)),
            want,
            "{} resurrected or lost",
            key(index)
        );
    }
    println!("after compactions: {:?}", store.stats().dirs[0]);
}
