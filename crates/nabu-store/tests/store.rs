//! Integration tests of the chunk store: crash (real `kill -9`), power cut, group commit,
//! injected faults, compaction, multiple data dirs and the format fixture. One binary; the
//! modules live in `tests/store/`.

#[path = "store/compaction.rs"]
mod compaction;
#[path = "store/crash.rs"]
mod crash;
#[path = "store/dirs.rs"]
mod dirs;
#[path = "store/faults.rs"]
mod faults;
#[path = "store/fixture.rs"]
mod fixture;

use std::path::PathBuf;
use std::sync::Arc;

use nabu_store::{FaultDisk, Store, StoreConfig};

/// A deterministic payload for `key`, `len` bytes long.
pub fn payload_for(key: &str, len: usize) -> Vec<u8> {
    let mut payload = vec![0u8; len];
    blake3::Hasher::new()
        .update(key.as_bytes())
        .finalize_xof()
        .fill(&mut payload);
    payload
}

/// A payload length between 0 and `max` chosen by `key`'s hash.
pub fn length_for(key: &str, max: usize) -> usize {
    let hash = blake3::hash(key.as_bytes());
    u32::from_le_bytes(hash.as_bytes()[..4].try_into().expect("4 bytes")) as usize % (max + 1)
}

/// A small-segment config over `dirs`, so tests rotate and compact.
pub fn small_config(dirs: Vec<PathBuf>) -> StoreConfig {
    let mut config = StoreConfig::new(dirs);
    config.segment_bytes_max = 256 << 10;
    config.index_capacity_per_dir = 1 << 12;
    config
}

/// A store over `/d0` of `disk`.
pub fn fault_store(disk: &Arc<FaultDisk>) -> Store {
    Store::open(small_config(vec![PathBuf::from("/d0")]), disk.clone()).expect("open store")
}

/// The value of `key`, as a plain vector.
pub fn read(store: &Store, key: &str) -> Option<Vec<u8>> {
    store
        .get(key.as_bytes())
        .expect("get")
        .map(|payload| payload.to_vec())
}
