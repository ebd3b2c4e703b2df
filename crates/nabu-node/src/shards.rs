//! Shard ops over the chunk store: a node holds at most one shard per stripe.
//!
//! Every method is synchronous (the store is); the connection's request task calls them
//! through `spawn_blocking`. Checksums are checked at both ends: the body against the
//! declared `shard_crc` before anything is written, and the stored bytes against the stored
//! `shard_crc` on every read (on top of the store's own record CRC), so bad bytes are never
//! served. A shard found corrupt is counted and logged once; a later PUT of the same shard
//! rewrites it (the repair path for a node's own copy).
//!
//! **Reads go through the cache tiers** ([`crate::tier`]): SHARD_GET is served from DRAM or
//! CXL memory when a tier holds the shard, else from the store, filling a tier by policy.
//! Every write of a shard (put, delete, sweep) drops it from the tiers after the store
//! changed. SHARD_STAT and the scrubber read the store itself.
//!
//! **A different shard of a held stripe is a CONFLICT.** The stripe id names the shard on a
//! node, so a SHARD_PUT whose shard info (index, layout, lengths, checksum) differs from the
//! held shard's is refused with `CONFLICT` and nothing changes; the caller must delete first.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use nabu_core::AlignedBuf;
use nabu_core::id::StripeId;
use nabu_proto::ErrorCode;
use nabu_proto::ops::{ByteRange, PutOutcome, ShardInfo};
use nabu_store::{Store, StoreError};

use crate::gc::{Swept, Touches, Verdict};
use crate::handler::OpError;
use crate::metrics::Metrics;
use crate::records::{SHARD_TRAILER_BYTES, decode_shard, shard_key, shard_trailer};
use crate::tier::{TierRead, Tiers};

/// Lock stripes serialising check-then-write per stripe id (two puts of different shards of
/// one stripe must not both succeed).
const WRITE_LOCKS: usize = 64;
/// The most corrupt shards remembered (so each is logged once); past it, each is logged
/// every time it is read, which is noisy but bounded.
const CORRUPT_REMEMBERED_MAX: usize = 65_536;

/// The shard side of a node.
#[derive(Debug)]
pub struct Shards {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    write_locks: Vec<Mutex<()>>,
    corrupt: Mutex<HashSet<StripeId>>,
    tiers: Tiers,
}

/// A shard read from disk, checksum verified.
#[derive(Debug)]
pub struct ShardRead {
    /// The stored shard's info.
    pub info: ShardInfo,
    /// Where the body starts in the shard.
    pub offset: u64,
    /// The bytes served (the whole shard or the range asked for, clipped).
    pub body: Bytes,
}

/// Lets [`Bytes`] slice an [`AlignedBuf`] without copying it.
pub(crate) struct Owned(pub(crate) AlignedBuf);

impl AsRef<[u8]> for Owned {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Shards {
    /// The shard side over `store`, reads cached by `tiers`.
    pub fn new(store: Arc<Store>, metrics: Arc<Metrics>, tiers: Tiers) -> Self {
        Self {
            store,
            metrics,
            write_locks: (0..WRITE_LOCKS).map(|_| Mutex::new(())).collect(),
            corrupt: Mutex::new(HashSet::new()),
            tiers,
        }
    }

    /// The cache tiers over the store.
    pub fn tiers(&self) -> &Tiers {
        &self.tiers
    }

    fn lock(&self, stripe_id: &StripeId) -> std::sync::MutexGuard<'_, ()> {
        let slot = usize::from(stripe_id.as_bytes()[0]) % WRITE_LOCKS;
        self.write_locks[slot]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stores `shard` as this node's shard of `stripe_id`, durably.
    pub fn put(
        &self,
        stripe_id: &StripeId,
        info: &ShardInfo,
        shard: &[u8],
        shard_crc: u32,
        touches: &Touches,
    ) -> Result<PutOutcome, OpError> {
        if shard.len() as u64 != info.shard_bytes {
            return Err(OpError::new(
                ErrorCode::BAD_REQUEST,
                "the body is not shard_bytes long",
            ));
        }
        // `shard_crc` is the body's checksum, verified as its frames arrived: no second pass.
        debug_assert_eq!(
            nabu_core::checksum::crc32c(shard),
            shard_crc,
            "the body's combined checksum"
        );
        let computed = shard_crc;
        if computed != info.shard_crc {
            return Err(OpError::new(
                ErrorCode::CHECKSUM_MISMATCH,
                format!(
                    "shard of stripe {stripe_id}: body crc {computed:#010x}, shard_crc {:#010x}",
                    info.shard_crc
                ),
            ));
        }
        let key = shard_key(stripe_id);
        let _guard = self.lock(stripe_id);
        // Before anything else: a collector must not sweep a stripe a PUT is reusing.
        touches.touch(*stripe_id.as_bytes());
        match self.read_verified(stripe_id) {
            Ok(Some((held, _))) if held == *info => return Ok(PutOutcome::AlreadyHeld),
            Ok(Some((held, _))) => {
                return Err(OpError::new(
                    ErrorCode::CONFLICT,
                    format!(
                        "this node holds another shard of stripe {stripe_id} ({:?})",
                        held.layout
                    ),
                ));
            }
            // Missing, or held but corrupt: the put (re)writes it.
            Ok(None) | Err(_) => {}
        }
        let existed = self.store.contains(&key)?;
        self.store.put_parts(&key, &[shard, &shard_trailer(info)])?;
        self.tiers.invalidate(&key);
        if !existed {
            self.metrics.shards.fetch_add(1, Ordering::Relaxed);
        }
        self.forget_corrupt(stripe_id);
        Ok(PutOutcome::Stored)
    }

    /// Reads this node's shard of `stripe_id` (or `range` of it).
    pub fn get(
        &self,
        stripe_id: &StripeId,
        range: Option<ByteRange>,
    ) -> Result<ShardRead, OpError> {
        let (info, record) = self
            .read_through(stripe_id)?
            .ok_or_else(|| not_found(stripe_id))?;
        cut(info, &record, range)
    }

    /// The shard (or `range` of it) if the DRAM tier holds it; `None` otherwise (then call
    /// [`get`](Self::get) off the async threads). Never blocks on the disk.
    pub fn get_from_dram(
        &self,
        stripe_id: &StripeId,
        range: Option<ByteRange>,
    ) -> Option<Result<ShardRead, OpError>> {
        let hit = self.tiers.read_dram(&shard_key(stripe_id))?;
        Some(cut(hit.info, &hit.body, range))
    }

    /// The info of this node's shard of `stripe_id` (the shard is read and verified).
    pub fn stat(&self, stripe_id: &StripeId) -> Result<ShardInfo, OpError> {
        Ok(self
            .read_verified(stripe_id)?
            .ok_or_else(|| not_found(stripe_id))?
            .0)
    }

    /// Drops this node's shard of `stripe_id`; returns whether it held one.
    pub fn delete(&self, stripe_id: &StripeId) -> Result<bool, OpError> {
        let _guard = self.lock(stripe_id);
        let key = shard_key(stripe_id);
        let existed = self.store.delete(&key)?;
        self.tiers.invalidate(&key);
        if existed {
            self.metrics.shards.fetch_sub(1, Ordering::Relaxed);
        }
        self.forget_corrupt(stripe_id);
        Ok(existed)
    }

    /// Drops this node's shard of `stripe_id` if `judge` (asked under the stripe's lock, so no
    /// PUT slips in between) says so (GC_SWEEP).
    pub fn delete_if(
        &self,
        stripe_id: &StripeId,
        judge: impl FnOnce(&[u8; 32]) -> Verdict,
    ) -> Result<Swept, OpError> {
        let key = shard_key(stripe_id);
        let _guard = self.lock(stripe_id);
        let Some(bytes) = self.store.record_bytes(&key)? else {
            return Ok(Swept::Absent);
        };
        let swept = Swept::of(judge(stripe_id.as_bytes()), bytes);
        if let Swept::Deleted(_) = swept {
            let existed = self.store.delete(&key)?;
            self.tiers.invalidate(&key);
            if existed {
                self.metrics.shards.fetch_sub(1, Ordering::Relaxed);
            }
            self.forget_corrupt(stripe_id);
        }
        Ok(swept)
    }

    /// The shard and its info from the first tier holding it: DRAM, CXL, then the store
    /// (whose read then fills a memory tier by policy).
    fn read_through(&self, stripe_id: &StripeId) -> Result<Option<(ShardInfo, Bytes)>, OpError> {
        if !self.tiers.enabled() {
            let read = self.read_verified(stripe_id)?;
            if read.is_some() {
                self.tiers.nvme.hits.fetch_add(1, Ordering::Relaxed);
            }
            return Ok(read);
        }
        let key = shard_key(stripe_id);
        let (heat, generation) = match self.tiers.read(&key) {
            TierRead::Hit(hit) => return Ok(Some((hit.info, hit.body))),
            TierRead::Miss { heat, generation } => (heat, generation),
        };
        let read = self.read_verified(stripe_id)?;
        if let Some((info, body)) = &read {
            self.tiers.filled(&key, *info, body, heat, generation);
        }
        Ok(read)
    }

    /// The stored shard and its info; `CORRUPT` if the store's record checksum fails.
    ///
    /// The record's CRC32C (checked by the store on every read) covers the shard and its
    /// trailer, and the shard matched `shard_crc` before it was written, so the shard's own
    /// checksum is not computed again here (debug builds do): one pass over the bytes, and
    /// `shard_crc` can go out as the reply frame's body checksum without another.
    fn read_verified(&self, stripe_id: &StripeId) -> Result<Option<(ShardInfo, Bytes)>, OpError> {
        let record = match self.store.get(&shard_key(stripe_id)) {
            Ok(None) => return Ok(None),
            Ok(Some(record)) => record,
            Err(StoreError::Corrupt { reason, .. }) => {
                return Err(self.corrupt_found(stripe_id, &reason));
            }
            Err(error) => return Err(error.into()),
        };
        let Some((info, shard_len)) = decode_shard(&record) else {
            return Err(self.corrupt_found(stripe_id, "the shard record's trailer is damaged"));
        };
        debug_assert_eq!(shard_len + SHARD_TRAILER_BYTES, record.len());
        let record = Bytes::from_owner(Owned(record)).slice(..shard_len);
        debug_assert_eq!(
            nabu_core::checksum::crc32c(&record),
            info.shard_crc,
            "stored shard vs shard_crc"
        );
        Ok(Some((info, record)))
    }

    /// Counts a corrupt read, logs the shard once, and returns the CORRUPT error.
    fn corrupt_found(&self, stripe_id: &StripeId, reason: &str) -> OpError {
        self.metrics
            .corrupt_reads_total
            .fetch_add(1, Ordering::Relaxed);
        let first_time = {
            let mut corrupt = self
                .corrupt
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            corrupt.len() >= CORRUPT_REMEMBERED_MAX || corrupt.insert(*stripe_id)
        };
        if first_time {
            self.metrics
                .corrupt_shards_total
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(stripe = %stripe_id, reason, "stored shard failed its checksum; refusing to serve it");
        }
        OpError::new(
            ErrorCode::CORRUPT,
            format!("this node's shard of stripe {stripe_id} is corrupt; read another shard"),
        )
    }

    fn forget_corrupt(&self, stripe_id: &StripeId) {
        self.corrupt
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(stripe_id);
    }
}

/// `range` of a whole shard's `record` (clipped to its end; all of it for `None`).
fn cut(info: ShardInfo, record: &Bytes, range: Option<ByteRange>) -> Result<ShardRead, OpError> {
    let (offset, length) = match range {
        None => (0, info.shard_bytes),
        Some(range) if range.offset >= info.shard_bytes => {
            return Err(OpError::new(
                ErrorCode::BAD_REQUEST,
                format!(
                    "range starts at {} but the shard has {} bytes",
                    range.offset, info.shard_bytes
                ),
            ));
        }
        Some(range) => (
            range.offset,
            range.bytes.min(info.shard_bytes - range.offset),
        ),
    };
    let body = record.slice(offset as usize..(offset + length) as usize);
    Ok(ShardRead { info, offset, body })
}

fn not_found(stripe_id: &StripeId) -> OpError {
    OpError::new(
        ErrorCode::NOT_FOUND,
        format!("no shard of stripe {stripe_id} on this node"),
    )
}

/// Maps a store error to its wire error: the one place this is decided for the store.
impl From<StoreError> for OpError {
    fn from(error: StoreError) -> Self {
        let code = match &error {
            StoreError::NoSpace { .. } => ErrorCode::NO_SPACE,
            StoreError::Poisoned { .. } | StoreError::DirUnavailable { .. } => {
                ErrorCode::UNAVAILABLE
            }
            StoreError::Corrupt { .. } => ErrorCode::CORRUPT,
            StoreError::EmptyKey | StoreError::KeyTooLong { .. } => ErrorCode::BAD_REQUEST,
            StoreError::PayloadTooLarge { .. } => ErrorCode::TOO_LARGE,
            _ => ErrorCode::INTERNAL,
        };
        if code == ErrorCode::INTERNAL {
            tracing::error!(%error, "chunk store failed");
        }
        OpError::new(code, error.to_string())
    }
}
