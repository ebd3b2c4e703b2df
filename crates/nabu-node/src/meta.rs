//! Key records and manifests: opaque values by (table, namespace, key), last writer wins.
//!
//! Values live in the chunk store (see [`crate::records`]); an in-memory ordered index of
//! every address with its timestamp, tombstone flag and value length answers LIST without
//! touching the disk, and is rebuilt from the store at start-up. (It grows with the number of
//! addresses a node holds: metadata is small and replicated on few nodes, unlike shards.)
//!
//! **Last writer wins.** A write carries the writer's hybrid-logical-clock timestamp. It is
//! applied if its timestamp is newer than the stored one. At an equal timestamp the same
//! write again (a retry) reports `applied` without writing anything, and two different writes
//! are ordered deterministically — a tombstone beats a value, and of two values the greater
//! byte string wins — so every replica converges on the same winner whatever order the writes
//! arrive in. A DELETE writes a tombstone (kept, with its timestamp) so that an older PUT that
//! arrives late cannot bring the value back; tombstones are not collected yet.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use nabu_proto::ErrorCode;
use nabu_proto::ops::{ListEntry, MetaTable};
use nabu_store::Store;

use crate::gc::{Swept, Touches, Verdict, manifest_item};
use crate::handler::OpError;
use crate::records::{MetaAddress, MetaKey, classify_meta_key, decode_meta, encode_meta};

/// Lock stripes serialising check-then-write per address.
const WRITE_LOCKS: usize = 64;

/// What the index knows of one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The stored write's timestamp.
    pub hlc_timestamp: u64,
    /// Whether it is a tombstone.
    pub deleted: bool,
    /// The value's length (0 for a tombstone).
    pub value_bytes: u64,
}

/// A value read back.
#[derive(Debug)]
pub struct MetaValue {
    /// The index entry.
    pub entry: Entry,
    /// The value (empty for a tombstone).
    pub value: Bytes,
}

/// A page of a listing.
#[derive(Debug)]
pub struct ListPage {
    /// Entries in key order.
    pub entries: Vec<ListEntry>,
    /// The token for the next page; empty on the last page.
    pub continuation: Vec<u8>,
}

/// The metadata side of a node.
#[derive(Debug)]
pub struct MetaStore {
    store: Arc<Store>,
    index: Mutex<BTreeMap<MetaAddress, Entry>>,
    write_locks: Vec<Mutex<()>>,
}

impl MetaStore {
    /// Opens the metadata side over `store`, rebuilding the index from the store's keys.
    pub fn open(store: Arc<Store>) -> Result<Self, nabu_store::StoreError> {
        let mut index = BTreeMap::new();
        for key in store.keys()? {
            if classify_meta_key(&key) == MetaKey::Other {
                continue;
            }
            let record = match store.get(&key) {
                Ok(Some(record)) => record,
                Ok(None) => continue,
                Err(error) => {
                    tracing::warn!(%error, "skipping an unreadable meta record at start-up");
                    continue;
                }
            };
            let Some(record) = decode_meta(&record) else {
                tracing::warn!("skipping a meta record that does not decode");
                continue;
            };
            let entry = Entry {
                hlc_timestamp: record.hlc_timestamp,
                deleted: record.deleted,
                value_bytes: record.value.len() as u64,
            };
            index.insert(record.address, entry);
        }
        Ok(Self {
            store,
            index: Mutex::new(index),
            write_locks: (0..WRITE_LOCKS).map(|_| Mutex::new(())).collect(),
        })
    }

    /// Addresses held (values and tombstones).
    pub fn len(&self) -> usize {
        self.index().len()
    }

    fn index(&self) -> MutexGuard<'_, BTreeMap<MetaAddress, Entry>> {
        self.index
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock(&self, address: &MetaAddress) -> MutexGuard<'_, ()> {
        let hash = blake3::hash(&address.store_key());
        let slot = usize::from(hash.as_bytes()[0]) % WRITE_LOCKS;
        self.write_locks[slot]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Writes `value` at `hlc_timestamp` unless a newer write is stored; returns `applied`.
    pub fn put(
        &self,
        address: MetaAddress,
        hlc_timestamp: u64,
        value: &[u8],
        touches: &Touches,
    ) -> Result<bool, OpError> {
        // Before the write, under no lock: a collector must not sweep a manifest a PUT is
        // (re)writing, even when the stored copy wins.
        touches.touch(manifest_item(&address));
        self.write(address, hlc_timestamp, false, value)
    }

    /// Drops the record at `address` outright (no tombstone) if `judge` (asked under the
    /// address's lock) says so: GC_SWEEP of manifests, which are immutable and
    /// content-addressed (a later PUT of the same blob writes the same stripes again).
    pub fn remove_if(
        &self,
        address: &MetaAddress,
        judge: impl FnOnce(&[u8; 32]) -> Verdict,
    ) -> Result<Swept, OpError> {
        let _guard = self.lock(address);
        if !self.index().contains_key(address) {
            return Ok(Swept::Absent);
        }
        let key = address.store_key();
        let bytes = self.store.record_bytes(&key)?.unwrap_or(0);
        let swept = Swept::of(judge(&manifest_item(address)), bytes);
        if let Swept::Deleted(_) = swept {
            self.store.delete(&key)?;
            self.index().remove(address);
        }
        Ok(swept)
    }

    /// Writes a tombstone at `hlc_timestamp` unless a newer write is stored.
    pub fn delete(&self, address: MetaAddress, hlc_timestamp: u64) -> Result<bool, OpError> {
        self.write(address, hlc_timestamp, true, &[])
    }

    fn write(
        &self,
        address: MetaAddress,
        hlc_timestamp: u64,
        deleted: bool,
        value: &[u8],
    ) -> Result<bool, OpError> {
        let _guard = self.lock(&address);
        let stored = self.index().get(&address).copied();
        if let Some(stored) = stored {
            match self.compare(&address, &stored, hlc_timestamp, deleted, value)? {
                Ordering::Less => return Ok(false),
                Ordering::Equal => return Ok(true),
                Ordering::Greater => {}
            }
        }
        let record = encode_meta(&address, hlc_timestamp, deleted, value);
        self.store.put(&address.store_key(), &record)?;
        let entry = Entry {
            hlc_timestamp,
            deleted,
            value_bytes: value.len() as u64,
        };
        self.index().insert(address, entry);
        Ok(true)
    }

    /// Orders an incoming write against the stored one (see the module docs).
    fn compare(
        &self,
        address: &MetaAddress,
        stored: &Entry,
        hlc_timestamp: u64,
        deleted: bool,
        value: &[u8],
    ) -> Result<Ordering, OpError> {
        let by_time = hlc_timestamp.cmp(&stored.hlc_timestamp);
        if by_time != Ordering::Equal {
            return Ok(by_time);
        }
        let by_kind = deleted.cmp(&stored.deleted);
        if by_kind != Ordering::Equal || deleted {
            return Ok(by_kind);
        }
        let stored_value = self.get(address)?.value;
        Ok(value.cmp(&stored_value[..]))
    }

    /// The stored value or tombstone at `address`; `NOT_FOUND` if never written.
    pub fn get(&self, address: &MetaAddress) -> Result<MetaValue, OpError> {
        let entry = self.index().get(address).copied().ok_or_else(|| {
            OpError::new(
                ErrorCode::NOT_FOUND,
                "no such key record or manifest on this node",
            )
        })?;
        if entry.deleted {
            return Ok(MetaValue {
                entry,
                value: Bytes::new(),
            });
        }
        let record = self.store.get(&address.store_key())?.ok_or_else(|| {
            OpError::new(
                ErrorCode::INTERNAL,
                "the meta index names a record the store lacks",
            )
        })?;
        let record = decode_meta(&record).filter(|record| record.address == *address);
        let Some(record) = record else {
            return Err(OpError::new(
                ErrorCode::CORRUPT,
                "the stored meta record is damaged",
            ));
        };
        let entry = Entry {
            hlc_timestamp: record.hlc_timestamp,
            deleted: record.deleted,
            value_bytes: record.value.len() as u64,
        };
        Ok(MetaValue {
            entry,
            value: Bytes::from(record.value),
        })
    }

    /// One page of the namespaces holding any address (tombstones included) of either table,
    /// after `after`, ascending; and whether more follow. Skips from one namespace to the next
    /// through the ordered index, so a page costs `O(limit · log n)`.
    pub fn namespaces(&self, after: &str, limit: u32) -> (Vec<String>, bool) {
        let index = self.index();
        let mut found = std::collections::BTreeSet::new();
        for table in [MetaTable::KeyRecords, MetaTable::Manifests] {
            let mut cursor = after.to_owned();
            let mut lower = if after.is_empty() {
                Bound::Included(MetaAddress::new(table, "", b""))
            } else {
                Bound::Excluded(MetaAddress::new(table, &cursor, &[0xff; 1025]))
            };
            while found.len() <= limit as usize {
                let next = index
                    .range((lower, Bound::Unbounded))
                    .next()
                    .filter(|(address, _)| address.table == table as u8);
                let Some((address, _)) = next else { break };
                cursor.clone_from(&address.namespace);
                found.insert(cursor.clone());
                // Every key of a namespace sorts before this bound (keys are ≤ 1,024 bytes).
                lower = Bound::Excluded(MetaAddress::new(table, &cursor, &[0xff; 1025]));
            }
        }
        let more = found.len() > limit as usize;
        (found.into_iter().take(limit as usize).collect(), more)
    }

    /// One page of `namespace` in `table`: keys starting with `prefix`, after `continuation`
    /// (exclusive; empty for the first page), at most `limit` of them.
    pub fn list(
        &self,
        table: MetaTable,
        namespace: &str,
        prefix: &[u8],
        continuation: &[u8],
        limit: u32,
        include_deleted: bool,
    ) -> ListPage {
        // Resume after the continuation, unless it sorts before the prefix (then the prefix's
        // first key is the start).
        let lower = if !continuation.is_empty() && continuation >= prefix {
            Bound::Excluded(MetaAddress::new(table, namespace, continuation))
        } else {
            Bound::Included(MetaAddress::new(table, namespace, prefix))
        };
        let index = self.index();
        let mut matching = index
            .range((lower, Bound::Unbounded))
            .take_while(|(address, _)| {
                address.table == table as u8
                    && address.namespace == namespace
                    && address.key.starts_with(prefix)
            })
            .filter(|(_, entry)| include_deleted || !entry.deleted);
        let entries: Vec<ListEntry> = matching
            .by_ref()
            .take(limit as usize)
            .map(|(address, entry)| ListEntry {
                key: address.key.clone(),
                hlc_timestamp: entry.hlc_timestamp,
                deleted: entry.deleted,
                value_bytes: entry.value_bytes,
            })
            .collect();
        let more = matching.next().is_some();
        let continuation = match entries.last() {
            Some(last) if more => last.key.clone(),
            _ => Vec::new(),
        };
        ListPage {
            entries,
            continuation,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use nabu_store::{RealDisk, StoreConfig};

    use super::*;

    fn open(dir: &std::path::Path) -> MetaStore {
        let store = Store::open(
            StoreConfig::new(vec![dir.to_owned()]),
            Arc::new(RealDisk::new()),
        )
        .unwrap();
        MetaStore::open(Arc::new(store)).unwrap()
    }

    fn touches() -> Touches {
        Touches::new(16)
    }

    fn address(key: &str) -> MetaAddress {
        MetaAddress::new(MetaTable::KeyRecords, "ns", key.as_bytes())
    }

    #[test]
    fn last_writer_wins_and_tombstones_stop_older_puts() {
        let dir = tempfile::tempdir().unwrap();
        let meta = open(dir.path());
        assert!(meta.put(address("k"), 10, b"ten", &touches()).unwrap());
        assert!(!meta.put(address("k"), 9, b"nine", &touches()).unwrap());
        assert!(
            meta.put(address("k"), 10, b"ten", &touches()).unwrap(),
            "a retry is applied"
        );
        assert!(
            meta.put(address("k"), 10, b"zzz", &touches()).unwrap(),
            "the greater value wins a tie"
        );
        assert!(!meta.put(address("k"), 10, b"aaa", &touches()).unwrap());
        assert!(meta.delete(address("k"), 11).unwrap());
        assert!(!meta.put(address("k"), 10, b"late", &touches()).unwrap());
        let read = meta.get(&address("k")).unwrap();
        assert!(read.entry.deleted);
        assert_eq!(read.entry.hlc_timestamp, 11);
        drop(meta);
        let meta = open(dir.path());
        assert!(
            meta.get(&address("k")).unwrap().entry.deleted,
            "the index is rebuilt"
        );
        assert_eq!(
            meta.get(&address("never")).unwrap_err().code,
            ErrorCode::NOT_FOUND
        );
    }

    #[test]
    fn list_pages_through_a_prefix_in_key_order() {
        let dir = tempfile::tempdir().unwrap();
        let meta = open(dir.path());
        for key in ["b/2", "a/1", "b/1", "b/3", "c"] {
            meta.put(address(key), 1, key.as_bytes(), &touches())
                .unwrap();
        }
        meta.delete(address("b/2"), 2).unwrap();
        let page = meta.list(MetaTable::KeyRecords, "ns", b"b/", b"", 1, false);
        assert_eq!(page.entries[0].key, b"b/1");
        let page = meta.list(
            MetaTable::KeyRecords,
            "ns",
            b"b/",
            &page.continuation,
            1,
            false,
        );
        assert_eq!(page.entries[0].key, b"b/3");
        assert!(page.continuation.is_empty());
        let all = meta.list(MetaTable::KeyRecords, "ns", b"", b"", 100, true);
        let keys: Vec<_> = all.entries.iter().map(|e| e.key.clone()).collect();
        assert_eq!(
            keys,
            [
                b"a/1".to_vec(),
                b"b/1".to_vec(),
                b"b/2".to_vec(),
                b"b/3".to_vec(),
                b"c".to_vec()
            ]
        );
        assert!(
            meta.list(MetaTable::Manifests, "ns", b"", b"", 100, true)
                .entries
                .is_empty()
        );
    }

    #[test]
    fn a_manifest_goes_once_condemned_and_quiet_for_the_grace_period() {
        let dir = tempfile::tempdir().unwrap();
        let meta = open(dir.path());
        let touches = &Touches::new(16);
        let manifest = MetaAddress::new(MetaTable::Manifests, "ns", &[7; 32]);
        meta.put(manifest.clone(), 1, b"manifest", touches).unwrap();
        let judge = |grace| move |item: &[u8; 32]| touches.judge(item, grace, 1);
        let hour = Duration::from_secs(3600);
        assert_eq!(
            meta.remove_if(&manifest, judge(hour)).unwrap(),
            Swept::Recent
        );
        let now = Duration::ZERO;
        assert_eq!(
            meta.remove_if(&manifest, judge(now)).unwrap(),
            Swept::Condemned
        );
        let swept = meta.remove_if(&manifest, judge(now)).unwrap();
        assert!(
            matches!(swept, Swept::Deleted(bytes) if bytes >= 8),
            "{swept:?}"
        );
        assert_eq!(meta.get(&manifest).unwrap_err().code, ErrorCode::NOT_FOUND);
        drop(meta);
        let meta = open(dir.path());
        let code = meta.get(&manifest).unwrap_err().code;
        assert_eq!(code, ErrorCode::NOT_FOUND, "durably");
        assert_eq!(
            meta.remove_if(&manifest, judge(now)).unwrap(),
            Swept::Absent
        );
    }

    #[test]
    fn namespaces_are_listed_once_each_across_both_tables() {
        let dir = tempfile::tempdir().unwrap();
        let meta = open(dir.path());
        let touches = touches();
        for (table, namespace, key) in [
            (MetaTable::KeyRecords, "b", &b"1"[..]),
            (MetaTable::KeyRecords, "b", &[0xff; 1024][..]),
            (MetaTable::KeyRecords, "d", b"1"),
            (MetaTable::Manifests, "a", &[1; 32][..]),
            (MetaTable::Manifests, "b", &[1; 32][..]),
            (MetaTable::Manifests, "c", &[1; 32][..]),
        ] {
            meta.put(MetaAddress::new(table, namespace, key), 1, b"v", &touches)
                .unwrap();
        }
        meta.delete(MetaAddress::new(MetaTable::KeyRecords, "d", b"1"), 2)
            .unwrap();
        assert_eq!(
            meta.namespaces("", 10),
            (vec!["a".into(), "b".into(), "c".into(), "d".into()], false)
        );
        assert_eq!(meta.namespaces("", 2), (vec!["a".into(), "b".into()], true));
        assert_eq!(
            meta.namespaces("b", 2),
            (vec!["c".into(), "d".into()], false)
        );
        assert_eq!(meta.namespaces("d", 2), (vec![], false));
    }
}
