//! One NabuStore node's disks: append-only segment files, group commit, crash recovery,
//! compaction and the Robin Hood index. No network.
//!
//! Why this shape: an acknowledged write must survive `kill -9` and power loss, and a node
//! serves shards at device speed. So records are 4 KiB-aligned and written with `O_DIRECT`
//! where the filesystem allows, many writers share one `fdatasync` (group commit), every
//! record carries a CRC32C that is checked on every read and at every open, and all I/O goes
//! through the [`disk::Disk`] seam so tests can tear writes, flip bits and cut power.
//!
//! Entry points: [`Store::open`] with a [`StoreConfig`]; [`RealDisk`] in production,
//! [`FaultDisk`] in tests. The on-disk format is in `docs/formats/segment.md`.

mod compact;
mod config;
mod dir;
pub mod disk;
mod error;
pub mod fault;
pub mod index;

mod location;
mod recovery;
mod scan;
pub mod segment;
mod store;
mod writer;

pub use compact::CompactionReport;
pub use config::{GROUP_COMMIT_RECORDS_LIMIT, StoreConfig};
pub use disk::{DirectIo, Disk, DiskFile, IoMode, LOCK_FILE_NAME, OpenOptions, RealDisk};
pub use error::StoreError;
pub use fault::FaultDisk;
pub use index::IndexError;
pub use recovery::{CorruptRegion, RecoveryReport};
pub use segment::{FORMAT_VERSION, KEY_BYTES_MAX, PAYLOAD_BYTES_MAX};
pub use store::{DirState, DirStats, RecordCheck, Store, StoreStats};
