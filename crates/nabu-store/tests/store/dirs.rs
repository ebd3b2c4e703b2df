//! Several data dirs: each holds only the keys that hash to it, so losing or damaging one
//! loses only its own keys.

use std::path::PathBuf;
use std::sync::Arc;

use nabu_store::{DirState, RealDisk, Store, StoreError};

use crate::{payload_for, read, small_config};

fn keys() -> Vec<String> {
    (0..60).map(|index| format!("key-{index}")).collect()
}

fn fill(dirs: &[PathBuf]) {
    let store = Store::open(small_config(dirs.to_vec()), Arc::new(RealDisk::new())).expect("open");
    for key in keys() {
        store
            .put(key.as_bytes(), &payload_for(&key, 6000))
            .expect("put");
    }
    let per_dir: Vec<u64> = store.stats().dirs.iter().map(|dir| dir.records).collect();
    assert!(
        per_dir.iter().all(|&records| records > 0),
        "keys spread over dirs: {per_dir:?}"
    );
}

fn dirs_in(root: &std::path::Path) -> Vec<PathBuf> {
    (0..3)
        .map(|index| root.join(format!("disk{index}")))
        .collect()
}

#[test]
fn losing_one_dirs_files_loses_only_its_keys() {
    let root = tempfile::tempdir().expect("tempdir");
    let dirs = dirs_in(root.path());
    fill(&dirs);
    for entry in std::fs::read_dir(&dirs[1]).expect("list") {
        std::fs::remove_file(entry.expect("entry").path()).expect("remove");
    }
    // Rot every record header in dir 2: its keys must read as missing, never as wrong data.
    for entry in std::fs::read_dir(&dirs[2]).expect("list") {
        let path = entry.expect("entry").path();
        let mut bytes = std::fs::read(&path).expect("read");
        for block in (4096..bytes.len()).step_by(4096) {
            bytes[block + 20] ^= 0xff;
        }
        std::fs::write(&path, bytes).expect("write");
    }
    let store = Store::open(small_config(dirs.clone()), Arc::new(RealDisk::new())).expect("open");
    for key in keys() {
        let got = read(&store, &key);
        if store.data_dir_for(key.as_bytes()) == dirs[0] {
            assert_eq!(
                got,
                Some(payload_for(&key, 6000)),
                "{key} in the intact dir"
            );
        } else {
            assert_eq!(got, None, "{key} in a damaged dir");
        }
    }
    let recovery = &store.stats().dirs[2].recovery;
    // Rotten records are a corrupt region, or, at the end of the newest segment, a torn tail.
    assert!(!recovery.corrupt_regions.is_empty() || recovery.torn_tail_bytes_dropped > 0);
}

#[test]
fn a_dir_that_fails_to_open_leaves_the_others_serving() {
    let root = tempfile::tempdir().expect("tempdir");
    let dirs = dirs_in(root.path());
    fill(&dirs);
    std::fs::remove_dir_all(&dirs[1]).expect("remove dir");
    std::fs::write(&dirs[1], b"not a directory").expect("replace with a file");
    let store = Store::open(small_config(dirs.clone()), Arc::new(RealDisk::new())).expect("open");
    assert!(matches!(
        store.stats().dirs[1].state,
        DirState::Failed { .. }
    ));
    for key in keys() {
        let in_failed_dir = store.data_dir_for(key.as_bytes()) == dirs[1];
        match store.get(key.as_bytes()) {
            Err(StoreError::DirUnavailable { .. }) if in_failed_dir => {}
            Ok(Some(payload)) if !in_failed_dir => {
                assert_eq!(&payload[..], payload_for(&key, 6000))
            }
            other => panic!("{key}: unexpected {other:?}"),
        }
    }
    store
        .put(b"still-writable", b"yes")
        .unwrap_or_else(|error| {
            assert!(
                matches!(error, StoreError::DirUnavailable { .. }),
                "{error}"
            );
        });
}

#[test]
fn a_data_dir_in_use_is_refused_until_its_store_closes() {
    let root = tempfile::tempdir().expect("tempdir");
    let dirs = dirs_in(root.path());
    let disk = || Arc::new(RealDisk::new());
    let first = Store::open(small_config(dirs.clone()), disk()).expect("open");
    // Sharing one dir of several is enough to be refused (not served around as a failed
    // disk would be): two stores appending to one dir would each miss the other's records.
    let other = vec![root.path().join("other"), dirs[1].clone()];
    let error = Store::open(small_config(other.clone()), disk()).expect_err("a dir in use");
    assert!(
        matches!(&error, StoreError::DirInUse { dir } if *dir == dirs[1]),
        "{error}"
    );
    assert!(
        error.to_string().contains("in use by another process"),
        "{error}"
    );
    drop(first);
    Store::open(small_config(other), disk()).expect("open once the first store closed");
}
