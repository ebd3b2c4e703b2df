//! The store's typed errors. Callers branch on them: `NoSpace` means "try another node",
//! `Poisoned` means "this data dir needs a human", `Corrupt` means "repair from peers".

use std::io;
use std::path::PathBuf;

use crate::index::IndexError;

/// Everything a [`crate::Store`] call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Keys must have at least one byte.
    #[error("key is empty")]
    EmptyKey,
    /// The key is longer than [`crate::segment::KEY_BYTES_MAX`].
    #[error("key is {len} bytes, more than the {max}-byte limit")]
    KeyTooLong { len: usize, max: usize },
    /// The payload is larger than [`crate::segment::PAYLOAD_BYTES_MAX`].
    #[error("payload is {len} bytes, more than the {max}-byte limit")]
    PayloadTooLarge { len: usize, max: usize },
    /// A stored record failed its checks; its bytes are never returned as data.
    #[error("corrupt record in {} at offset {offset}: {reason}", file.display())]
    Corrupt {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
    /// The data dir refuses writes since a write or `fdatasync` failed; reads still work.
    #[error("data dir {} refuses writes after an I/O failure: {reason}", dir.display())]
    Poisoned { dir: PathBuf, reason: String },
    /// The data dir's device is full; nothing of the failed write is visible.
    #[error("no space left on the device of {}", dir.display())]
    NoSpace { dir: PathBuf },
    /// Another store (another node process, most likely) has the data dir open.
    #[error(
        "data dir {} is in use by another process (it holds the lock on its LOCK file); \
         two nodes must not share a data dir",
        dir.display()
    )]
    DirInUse { dir: PathBuf },
    /// The data dir failed to open, so its keys cannot be served.
    #[error("data dir {} is unavailable: {reason}", dir.display())]
    DirUnavailable { dir: PathBuf, reason: String },
    /// A segment was written by a format version this build does not read.
    #[error("{} has segment format version {found}; this build reads version {supported}", file.display())]
    UnsupportedVersion {
        file: PathBuf,
        found: u32,
        supported: u32,
    },
    /// An I/O call failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The index of a data dir refused an entry.
    #[error("index of {}: {source}", dir.display())]
    Index {
        dir: PathBuf,
        #[source]
        source: IndexError,
    },
    /// The configuration is unusable.
    #[error("invalid store config: {0}")]
    Config(String),
}

impl StoreError {
    /// An [`StoreError::Io`] with what was being done and to which path.
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
