//! Format fixture: a segment written by format version 1, checked in under
//! `tests/fixtures/segment-v1/`. Later versions must still read it record for record.
//!
//! To regenerate (only when deliberately changing what version 1 looks like, which should be
//! never): `NABU_WRITE_FIXTURE=1 cargo test -p nabu-store --test store fixture::write`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use nabu_store::{DirectIo, FORMAT_VERSION, RealDisk, Store, StoreConfig};

use crate::{payload_for, read};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/segment-v1")
}

fn config(dir: &Path) -> StoreConfig {
    let mut config = StoreConfig::new(vec![dir.to_path_buf()]);
    config.direct_io = DirectIo::Off;
    config
}

/// The fixture's contents after replay: key and payload (`None`: deleted).
fn expected() -> Vec<(&'static str, Option<Vec<u8>>)> {
    vec![
        ("alpha", Some(b"alpha overwritten".to_vec())),
        ("bravo", Some(payload_for("bravo", 4096))),
        ("charlie", Some(payload_for("charlie", 10_000))),
        ("delta", None),
        ("echo", Some(Vec::new())),
    ]
}

/// Writes the fixture; does nothing unless `NABU_WRITE_FIXTURE` is set.
#[test]
fn write_segment_v1_fixture() {
    if std::env::var_os("NABU_WRITE_FIXTURE").is_none() {
        return;
    }
    let dir = fixture_dir();
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::open(config(&dir), Arc::new(RealDisk::new())).expect("open");
    store.put(b"alpha", b"inline payload").expect("put");
    store
        .put(b"bravo", &payload_for("bravo", 4096))
        .expect("put");
    store
        .put(b"charlie", &payload_for("charlie", 10_000))
        .expect("put");
    store.put(b"alpha", b"alpha overwritten").expect("put");
    store.put(b"delta", b"to be deleted").expect("put");
    assert!(store.delete(b"delta").expect("delete"));
    store.put(b"echo", b"").expect("put");
}

#[test]
fn reads_the_segment_v1_fixture() {
    assert_eq!(
        FORMAT_VERSION, 1,
        "a new version keeps this test and adds its own fixture"
    );
    let copy = tempfile::tempdir().expect("tempdir");
    let mut files = 0;
    for entry in std::fs::read_dir(fixture_dir()).expect("fixture present") {
        let path = entry.expect("entry").path();
        std::fs::copy(&path, copy.path().join(path.file_name().expect("name"))).expect("copy");
        files += 1;
    }
    assert_eq!(files, 1, "one segment file");
    let store = Store::open(config(copy.path()), Arc::new(RealDisk::new())).expect("open");
    let stats = store.stats();
    assert_eq!(stats.dirs[0].recovery.records_scanned, 7);
    assert_eq!(stats.dirs[0].recovery.torn_tail_bytes_dropped, 0);
    assert!(stats.dirs[0].recovery.corrupt_regions.is_empty());
    assert_eq!((stats.records, stats.dirs[0].tombstones), (4, 1));
    for (key, want) in expected() {
        assert_eq!(read(&store, key), want, "{key}");
    }
}
