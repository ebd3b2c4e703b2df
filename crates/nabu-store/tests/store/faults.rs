//! Faults injected through the `FaultDisk` seam: power cut, EIO, ENOSPC, torn writes, bit
//! flips and failed `fdatasync`; plus group commit and the basic contract.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use nabu_store::{DirState, Disk, FaultDisk, KEY_BYTES_MAX, PAYLOAD_BYTES_MAX, StoreError};
use rand::Rng;

use crate::{fault_store, length_for, payload_for, read};

fn segment_files(disk: &FaultDisk) -> Vec<PathBuf> {
    disk.files()
        .into_iter()
        .filter(|path| path.extension().is_some_and(|e| e == "nabu"))
        .collect()
}

/// The file holding `needle` and the offset where it starts.
fn find_bytes(disk: &FaultDisk, needle: &[u8]) -> (PathBuf, u64) {
    for path in segment_files(disk) {
        let bytes = disk.file_bytes(&path).expect("read file");
        if let Some(at) = bytes
            .windows(needle.len())
            .position(|window| window == needle)
        {
            return (path, at as u64);
        }
    }
    panic!("bytes not found on disk")
}

#[test]
fn puts_gets_deletes_and_overwrites_survive_reopen() {
    let disk = FaultDisk::new();
    let store = fault_store(&disk);
    store.put(b"a", b"first").expect("put");
    store.put(b"a", b"second").expect("overwrite");
    store
        .put(b"big", &payload_for("big", 100_000))
        .expect("put");
    store.put(b"gone", b"x").expect("put");
    assert!(store.delete(b"gone").expect("delete"));
    assert!(!store.delete(b"gone").expect("delete again"));
    assert!(!store.delete(b"never").expect("delete missing"));
    assert!(store.contains(b"a").expect("contains"));
    drop(store);
    let store = fault_store(&disk);
    assert_eq!(read(&store, "a"), Some(b"second".to_vec()));
    assert_eq!(read(&store, "big"), Some(payload_for("big", 100_000)));
    assert_eq!(read(&store, "gone"), None);
    let mut keys = store.keys().expect("keys");
    keys.sort();
    assert_eq!(keys, vec![b"a".to_vec(), b"big".to_vec()]);
    let stats = store.stats();
    assert_eq!((stats.records, stats.dirs[0].tombstones), (2, 1));
}

#[test]
fn oversize_and_empty_keys_and_payloads_are_rejected() {
    let disk = FaultDisk::new();
    let store = fault_store(&disk);
    let long_key = vec![b'k'; KEY_BYTES_MAX + 1];
    assert!(matches!(
        store.put(&long_key, b""),
        Err(StoreError::KeyTooLong { .. })
    ));
    assert!(matches!(store.get(b""), Err(StoreError::EmptyKey)));
    let huge = vec![0u8; PAYLOAD_BYTES_MAX + 1];
    assert!(matches!(
        store.put(b"k", &huge),
        Err(StoreError::PayloadTooLarge { .. })
    ));
    store
        .put(&vec![b'k'; KEY_BYTES_MAX], b"longest key")
        .expect("longest key fits");
}

#[test]
fn power_cut_keeps_every_acknowledged_write() {
    let disk = FaultDisk::new();
    disk.set_sync_delay(Some(Duration::from_micros(200)));
    let store = fault_store(&disk);
    let acked = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for writer in 0..8 {
            let (store, acked) = (&store, &acked);
            scope.spawn(move || {
                for index in 0.. {
                    let key = format!("w{writer}-k{index}");
                    let payload = payload_for(&key, length_for(&key, 12_000));
                    if store.put(key.as_bytes(), &payload).is_err() {
                        return;
                    }
                    acked.lock().expect("lock").push(key);
                }
            });
        }
        std::thread::sleep(Duration::from_millis(rand::rng().random_range(20..80)));
        disk.power_cut();
    });
    drop(store);
    disk.power_on();
    let store = fault_store(&disk);
    let acked = acked.into_inner().expect("lock");
    assert!(!acked.is_empty(), "writers made progress before the cut");
    for key in &acked {
        let want = payload_for(key, length_for(key, 12_000));
        assert!(
            read(&store, key) == Some(want),
            "acknowledged {key} lost in power cut"
        );
    }
    store
        .put(b"after", b"power returns")
        .expect("store works after power cut");
    println!("power cut: {} acknowledged writes survived", acked.len());
}

#[test]
fn group_commit_shares_fdatasyncs_among_concurrent_writers() {
    let disk = FaultDisk::new();
    disk.set_sync_delay(Some(Duration::from_millis(1)));
    let store = fault_store(&disk);
    std::thread::scope(|scope| {
        for writer in 0..16 {
            let store = &store;
            scope.spawn(move || {
                for index in 0..25 {
                    let key = format!("w{writer}-k{index}");
                    store
                        .put(key.as_bytes(), &payload_for(&key, 3000))
                        .expect("put");
                }
            });
        }
    });
    let stats = store.stats();
    let ratio = stats.records_written as f64 / stats.fdatasyncs as f64;
    println!(
        "group commit: {} records, {} pwritev, {} fdatasync: {ratio:.1} records per fdatasync",
        stats.records_written, stats.write_calls, stats.fdatasyncs
    );
    assert_eq!(stats.records_written, 400);
    assert!(stats.fdatasyncs < stats.records_written, "{stats:?}");
}

#[test]
fn eio_on_write_poisons_the_dir_and_reads_still_work() {
    let disk = FaultDisk::new();
    let store = fault_store(&disk);
    store.put(b"old", b"kept").expect("put");
    disk.set_write_eio(true);
    assert!(matches!(
        store.put(b"new", b"lost"),
        Err(StoreError::Poisoned { .. })
    ));
    disk.set_write_eio(false);
    assert!(matches!(
        store.put(b"later", b"refused"),
        Err(StoreError::Poisoned { .. })
    ));
    assert!(matches!(
        store.stats().dirs[0].state,
        DirState::Poisoned { .. }
    ));
    assert_eq!(read(&store, "old"), Some(b"kept".to_vec()));
    assert_eq!(read(&store, "new"), None);
    drop(store);
    let store = fault_store(&disk);
    store
        .put(b"later", b"accepted after reopen")
        .expect("reopened store writes");
    assert_eq!(read(&store, "old"), Some(b"kept".to_vec()));
}

#[test]
fn fsync_failure_poisons_the_dir() {
    let disk = FaultDisk::new();
    let store = fault_store(&disk);
    store.put(b"old", b"kept").expect("put");
    disk.set_sync_eio(true);
    assert!(matches!(
        store.put(b"new", b"x"),
        Err(StoreError::Poisoned { .. })
    ));
    disk.set_sync_eio(false);
    // No retry: the kernel may have dropped the pages the failed fdatasync was to persist.
    assert!(matches!(
        store.put(b"new", b"x"),
        Err(StoreError::Poisoned { .. })
    ));
    assert!(matches!(
        store.delete(b"old"),
        Err(StoreError::Poisoned { .. })
    ));
    assert_eq!(read(&store, "old"), Some(b"kept".to_vec()));
    assert_eq!(
        read(&store, "new"),
        None,
        "a record whose fdatasync failed is never visible"
    );
}

#[test]
fn no_space_is_typed_and_leaves_nothing_partial() {
    let disk = FaultDisk::new();
    let store = fault_store(&disk);
    store.put(b"old", &payload_for("old", 10_000)).expect("put");
    disk.set_space_left(Some(8192));
    let error = store
        .put(b"huge", &payload_for("huge", 100_000))
        .expect_err("no space");
    assert!(matches!(error, StoreError::NoSpace { .. }), "{error}");
    assert_eq!(read(&store, "old"), Some(payload_for("old", 10_000)));
    assert_eq!(read(&store, "huge"), None);
    disk.set_space_left(None);
    store
        .put(b"small", b"fits once space is freed")
        .expect("dir is not poisoned");
    drop(store);
    let store = fault_store(&disk);
    assert_eq!(
        store.stats().dirs[0].recovery.torn_tail_bytes_dropped,
        0,
        "ENOSPC was cut back"
    );
    assert_eq!(read(&store, "huge"), None);
    assert_eq!(read(&store, "old"), Some(payload_for("old", 10_000)));
    assert_eq!(
        read(&store, "small"),
        Some(b"fits once space is freed".to_vec())
    );
}

#[test]
fn torn_write_is_dropped_at_recovery_and_the_rest_kept() {
    let disk = FaultDisk::new();
    let store = fault_store(&disk);
    for index in 0..5 {
        let key = format!("k{index}");
        store
            .put(key.as_bytes(), &payload_for(&key, 9000))
            .expect("put");
    }
    disk.tear_next_write(4096 + 1000);
    assert!(store.put(b"torn", &payload_for("torn", 30_000)).is_err());
    assert_eq!(
        read(&store, "k0"),
        Some(payload_for("k0", 9000)),
        "reads survive the failure"
    );
    drop(store);
    disk.power_cut();
    disk.power_on();
    let store = fault_store(&disk);
    let recovery = &store.stats().dirs[0].recovery;
    assert_eq!(recovery.torn_tail_bytes_dropped, 4096 + 1000);
    assert!(recovery.corrupt_regions.is_empty());
    for index in 0..5 {
        let key = format!("k{index}");
        assert_eq!(read(&store, &key), Some(payload_for(&key, 9000)));
    }
    assert_eq!(read(&store, "torn"), None);
    store.put(b"after", b"appends after the cut").expect("put");
    drop(store);
    let store = fault_store(&disk);
    assert_eq!(store.stats().dirs[0].recovery.torn_tail_bytes_dropped, 0);
    assert_eq!(
        read(&store, "after"),
        Some(b"appends after the cut".to_vec())
    );
}

#[test]
fn flipped_bit_reads_as_corrupt_and_recovery_skips_only_that_record() {
    let disk = FaultDisk::new();
    let store = fault_store(&disk);
    for key in ["a", "b", "c"] {
        store
            .put(key.as_bytes(), &payload_for(key, 20_000))
            .expect("put");
    }
    let (file, payload_at) = find_bytes(&disk, &payload_for("b", 20_000));
    disk.flip_bit(&file, payload_at + 5000, 3).expect("flip");
    let record_at = payload_at - 4096;
    match store.get(b"b") {
        Err(StoreError::Corrupt {
            file: bad_file,
            offset,
            ..
        }) => {
            assert_eq!((bad_file, offset), (file.clone(), record_at));
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let mut scrubbed = (0, 0);
    store.for_each(|item| {
        if item.is_ok() {
            scrubbed.0 += 1
        } else {
            scrubbed.1 += 1
        }
        std::ops::ControlFlow::Continue(())
    });
    assert_eq!(scrubbed, (2, 1), "scrub sees two good records and one bad");
    drop(store);
    let store = fault_store(&disk);
    let regions = &store.stats().dirs[0].recovery.corrupt_regions;
    assert_eq!(regions.len(), 1);
    assert_eq!(
        (regions[0].file.as_path(), regions[0].offset),
        (file.as_path(), record_at)
    );
    assert_eq!(read(&store, "a"), Some(payload_for("a", 20_000)));
    assert_eq!(read(&store, "b"), None);
    assert_eq!(read(&store, "c"), Some(payload_for("c", 20_000)));
}

#[test]
fn a_segment_whose_creation_never_finished_is_removed_at_open() {
    let disk = FaultDisk::new();
    let store = fault_store(&disk);
    store.put(b"kept", b"x").expect("put");
    drop(store);
    // A crash while creating the next segment: its file header never became durable.
    let half_made = Path::new("/d0/seg-00000000000000ff.nabu");
    let options = nabu_store::OpenOptions {
        create: true,
        direct_io: nabu_store::DirectIo::Off,
    };
    disk.open(half_made, options)
        .expect("create")
        .write_at(b"NABU", 0)
        .expect("write");
    let store = fault_store(&disk);
    let recovery = &store.stats().dirs[0].recovery;
    assert_eq!(
        recovery.incomplete_segments_removed,
        vec![half_made.to_path_buf()]
    );
    assert_eq!(read(&store, "kept"), Some(b"x".to_vec()));
    store.put(b"next", b"y").expect("put after removal");
}
