//! One NabuStore node's disks: append-only segment files, group commit, crash recovery,
//! compaction and the Robin Hood index. No network.

pub mod index;
