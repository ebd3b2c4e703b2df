//! The KV-cache client: batched put/get/delete/exists against the nodes' in-memory KV pools,
//! and the one-round-trip `prefix_lookup`.
//!
//! **Placement.** A KV key lives on exactly one node (`kv` namespaces are `replicas:1`: a
//! cache, where a miss is fine): the first node of the ring walk from [`kv_point`] of its
//! *group stem* (`nabu_proto::ops::kv_group_stem`), so LMCache's `<key>kv_bytes` and
//! `<key>metadata` always share a node and are evicted there together.
//!
//! **Batches.** The `*_on` calls address one node; the plain calls group keys by owner and
//! send one request per owner in parallel, each cut so its metadata fits a frame
//! ([`BATCH_META_BYTES_MAX`]) and its values one request body ([`BATCH_BODY_BYTES_MAX`], a
//! single larger value travels alone). Values come back as slices of the response body (no
//! copy) after their CRC32C is checked.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use nabu_core::ring::NodeId;
use nabu_proto::ops::{
    KV_BATCH_KEYS_MAX, KvCondition, KvDelete, KvExists, KvGet, KvPin, KvPrefixLookup, KvPut,
    KvPutEntry, KvPutOutcome, KvScan, KvScanReply, KvTtl, KvTtlAction, KvTtlReply,
    decode_scan_keys, kv_group_stem,
};
use nabu_proto::{Meta, ProtoError, Response};
use tokio::task::JoinSet;

use crate::client::Client;
use crate::error::{ClientError, Result};

/// The most metadata bytes one KV request's batch takes (a frame's metadata is at most
/// `u16::MAX` bytes; the rest is room for the fixed fields).
pub const BATCH_META_BYTES_MAX: usize = 60_000;
/// The most value bytes one KV_PUT batch carries (one value larger than this goes alone).
pub const BATCH_BODY_BYTES_MAX: u64 = 16 << 20;

/// The ring point of a KV key: BLAKE3 of `"nabu.kv.v1"`, the namespace length (u16 LE), the
/// namespace and the key's group stem; the first 8 bytes, little-endian.
pub fn kv_point(namespace: &str, key: &[u8]) -> u64 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"nabu.kv.v1");
    hasher.update(&(namespace.len() as u16).to_le_bytes());
    hasher.update(namespace.as_bytes());
    hasher.update(kv_group_stem(key));
    let digest = hasher.finalize();
    u64::from_le_bytes(digest.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// The CRC32C (Castagnoli, as iSCSI) of a KV value: [`nabu_core::checksum::crc32c`], the
/// checksum of every record, frame and shard.
pub fn value_crc32c(value: &[u8]) -> u32 {
    nabu_core::checksum::crc32c(value)
}

/// One value to put.
#[derive(Debug, Clone)]
pub struct KvItem {
    /// The key.
    pub key: Vec<u8>,
    /// The value.
    pub value: Bytes,
    /// Time to live in milliseconds; 0 = until evicted.
    pub ttl_ms: u64,
    /// Never evicted while pinned.
    pub pin: bool,
    /// When to store it.
    pub condition: KvCondition,
}

impl KvItem {
    /// An unconditional, unpinned put without a time to live.
    pub fn new(key: impl Into<Vec<u8>>, value: impl Into<Bytes>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
            ttl_ms: 0,
            pin: false,
            condition: KvCondition::Always,
        }
    }
}

/// Cuts `0..lengths.len()` into consecutive batches whose key bytes (plus `per_key` each)
/// stay under [`BATCH_META_BYTES_MAX`], whose values stay under [`BATCH_BODY_BYTES_MAX`] and
/// which hold at most [`KV_BATCH_KEYS_MAX`] keys.
fn batches(
    key_lengths: &[usize],
    value_lengths: &[u64],
    per_key: usize,
) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let (mut meta, mut body) = (0usize, 0u64);
    for (index, key_length) in key_lengths.iter().enumerate() {
        let key_meta = key_length + per_key;
        let value = value_lengths.get(index).copied().unwrap_or(0);
        let full = index > start
            && (meta + key_meta > BATCH_META_BYTES_MAX
                || body + value > BATCH_BODY_BYTES_MAX
                || index - start >= KV_BATCH_KEYS_MAX);
        if full {
            out.push(start..index);
            start = index;
            (meta, body) = (0, 0);
        }
        meta += key_meta;
        body += value;
    }
    if start < key_lengths.len() {
        out.push(start..key_lengths.len());
    }
    out
}

fn unexpected(node: NodeId) -> ClientError {
    ClientError::Protocol {
        node,
        source: ProtoError::InvalidField {
            field: "op",
            reason: "a reply of an unexpected op",
        },
    }
}

fn bad_reply(node: NodeId, reason: &'static str) -> ClientError {
    ClientError::Protocol {
        node,
        source: ProtoError::InvalidField {
            field: "kv reply",
            reason,
        },
    }
}

impl Client {
    /// The node that owns `key` in KV namespace `namespace`.
    pub fn kv_owner(&self, namespace: &str, key: &[u8]) -> NodeId {
        self.ring().placement(kv_point(namespace, key), 1)[0]
    }

    /// The indexes of `keys` grouped by owner.
    pub fn kv_group_by_owner(
        &self,
        namespace: &str,
        keys: &[Vec<u8>],
    ) -> BTreeMap<NodeId, Vec<usize>> {
        let mut groups: BTreeMap<NodeId, Vec<usize>> = BTreeMap::new();
        for (index, key) in keys.iter().enumerate() {
            groups
                .entry(self.kv_owner(namespace, key))
                .or_default()
                .push(index);
        }
        groups
    }

    /// KV_PUT of `items` on `node` (whatever their owner), cut into batches; the outcome of
    /// each item in order.
    pub async fn kv_put_on(
        &self,
        node: NodeId,
        namespace: &str,
        items: &[KvItem],
    ) -> Result<Vec<KvPutOutcome>> {
        let key_lengths: Vec<usize> = items.iter().map(|item| item.key.len()).collect();
        let value_lengths: Vec<u64> = items.iter().map(|item| item.value.len() as u64).collect();
        let mut outcomes = Vec::with_capacity(items.len());
        for range in batches(&key_lengths, &value_lengths, 19) {
            let batch = &items[range];
            let request = KvPut {
                namespace: namespace.to_owned(),
                entries: batch
                    .iter()
                    .map(|item| KvPutEntry {
                        key: item.key.clone(),
                        value_bytes: item.value.len() as u64,
                        ttl_ms: item.ttl_ms,
                        pin: item.pin,
                        condition: item.condition,
                    })
                    .collect(),
            };
            let body = match batch {
                [one] => one.value.clone(),
                many => {
                    let total = many.iter().map(|item| item.value.len()).sum();
                    let mut body = BytesMut::with_capacity(total);
                    many.iter()
                        .for_each(|item| body.extend_from_slice(&item.value));
                    body.freeze()
                }
            };
            let reply = self.inner.pool.call(node, &request, body).await?;
            let Response::KvPut(reply) = reply.meta else {
                return Err(unexpected(node));
            };
            if reply.outcomes.len() != batch.len() {
                return Err(bad_reply(
                    node,
                    "KV_PUT answered another number of outcomes",
                ));
            }
            outcomes.extend(reply.outcomes);
        }
        Ok(outcomes)
    }

    /// KV_GET of `keys` on `node`: each value (CRC32C-checked) or `None` for a miss.
    pub async fn kv_get_on(
        &self,
        node: NodeId,
        namespace: &str,
        keys: &[Vec<u8>],
    ) -> Result<Vec<Option<Bytes>>> {
        let key_lengths: Vec<usize> = keys.iter().map(Vec::len).collect();
        let mut values = Vec::with_capacity(keys.len());
        for range in batches(&key_lengths, &[], 2) {
            let request = KvGet {
                namespace: namespace.to_owned(),
                keys: keys[range.clone()].to_vec(),
            };
            let reply = self.inner.pool.call(node, &request, Bytes::new()).await?;
            let Response::KvGet(meta) = reply.meta else {
                return Err(unexpected(node));
            };
            if meta.entries.len() != range.len() {
                return Err(bad_reply(node, "KV_GET answered another number of keys"));
            }
            let mut offset = 0usize;
            for entry in meta.entries {
                if !entry.found {
                    values.push(None);
                    continue;
                }
                let end = offset + entry.value_bytes as usize;
                if end > reply.body.len() {
                    return Err(bad_reply(node, "KV_GET values overrun the body"));
                }
                let value = reply.body.slice(offset..end);
                if value_crc32c(&value) != entry.crc32c {
                    return Err(ClientError::Corrupt {
                        what: "a KV value".into(),
                        detail: format!("its CRC32C from node {node} does not match"),
                    });
                }
                offset = end;
                values.push(Some(value));
            }
        }
        Ok(values)
    }

    /// KV_EXISTS of `keys` on `node`, leasing the existing ones for `lease_ms` (0: no lease).
    pub async fn kv_exists_on(
        &self,
        node: NodeId,
        namespace: &str,
        keys: &[Vec<u8>],
        lease_ms: u64,
    ) -> Result<Vec<bool>> {
        let key_lengths: Vec<usize> = keys.iter().map(Vec::len).collect();
        let mut exists = Vec::with_capacity(keys.len());
        for range in batches(&key_lengths, &[], 2) {
            let request = KvExists {
                namespace: namespace.to_owned(),
                lease_ms,
                keys: keys[range.clone()].to_vec(),
            };
            let Response::KvExists(reply) = self
                .inner
                .pool
                .call(node, &request, Bytes::new())
                .await?
                .meta
            else {
                return Err(unexpected(node));
            };
            if reply.exists.len() != range.len() {
                return Err(bad_reply(node, "KV_EXISTS answered another number of keys"));
            }
            exists.extend(reply.exists);
        }
        Ok(exists)
    }

    /// KV_DELETE of `keys` on `node`: how many held a value.
    pub async fn kv_delete_on(
        &self,
        node: NodeId,
        namespace: &str,
        keys: &[Vec<u8>],
    ) -> Result<u64> {
        let request = |keys: Vec<Vec<u8>>| KvDelete {
            namespace: namespace.to_owned(),
            keys,
        };
        let count = |response| match response {
            Response::KvDelete(reply) => Some(reply.deleted),
            _ => None,
        };
        self.kv_count_on(node, keys, request, count).await
    }

    /// KV_PIN (or unpin) of `keys` on `node`: how many existed.
    pub async fn kv_pin_on(
        &self,
        node: NodeId,
        namespace: &str,
        keys: &[Vec<u8>],
        pinned: bool,
    ) -> Result<u64> {
        let request = |keys: Vec<Vec<u8>>| KvPin {
            namespace: namespace.to_owned(),
            pinned,
            keys,
        };
        let count = |response| match response {
            Response::KvPin(reply) => Some(reply.changed),
            _ => None,
        };
        self.kv_count_on(node, keys, request, count).await
    }

    /// Sends `keys` to `node` in frame-sized batches of `request`s and adds up the count
    /// each reply carries.
    async fn kv_count_on<M: Meta>(
        &self,
        node: NodeId,
        keys: &[Vec<u8>],
        request: impl Fn(Vec<Vec<u8>>) -> M,
        count: impl Fn(Response) -> Option<u32>,
    ) -> Result<u64> {
        let key_lengths: Vec<usize> = keys.iter().map(Vec::len).collect();
        let mut total = 0;
        for range in batches(&key_lengths, &[], 2) {
            let meta = request(keys[range].to_vec());
            let reply = self.inner.pool.call(node, &meta, Bytes::new()).await?;
            total += u64::from(count(reply.meta).ok_or_else(|| unexpected(node))?);
        }
        Ok(total)
    }

    /// KV_TTL of one key on `node`.
    pub async fn kv_ttl_on(
        &self,
        node: NodeId,
        namespace: &str,
        key: &[u8],
        action: KvTtlAction,
        ttl_ms: u64,
    ) -> Result<KvTtlReply> {
        let request = KvTtl {
            namespace: namespace.to_owned(),
            key: key.to_vec(),
            action,
            ttl_ms,
        };
        match self
            .inner
            .pool
            .call(node, &request, Bytes::new())
            .await?
            .meta
        {
            Response::KvTtl(reply) => Ok(reply),
            _ => Err(unexpected(node)),
        }
    }

    /// KV_SCAN of one page on `node`: the reply and its keys.
    pub async fn kv_scan_on(
        &self,
        node: NodeId,
        namespace: &str,
        cursor: u64,
        count: u32,
    ) -> Result<(KvScanReply, Vec<Vec<u8>>)> {
        let request = KvScan {
            namespace: namespace.to_owned(),
            cursor,
            count,
        };
        let reply = self.inner.pool.call(node, &request, Bytes::new()).await?;
        let Response::KvScan(meta) = reply.meta else {
            return Err(unexpected(node));
        };
        let keys = decode_scan_keys(&reply.body, meta.entries)
            .map_err(|source| ClientError::Protocol { node, source })?;
        Ok((meta, keys))
    }

    /// KV_PREFIX_LOOKUP sent to `node`, which asks every owner in parallel: the length of the
    /// longest prefix of `keys` that all exist, leased for `lease_ms`.
    pub async fn kv_prefix_lookup_on(
        &self,
        node: NodeId,
        namespace: &str,
        keys: &[Vec<u8>],
        lease_ms: u64,
    ) -> Result<usize> {
        let request = KvPrefixLookup {
            namespace: namespace.to_owned(),
            lease_ms,
            keys: keys.to_vec(),
        };
        match self
            .inner
            .pool
            .call(node, &request, Bytes::new())
            .await?
            .meta
        {
            Response::KvPrefixLookup(reply) => Ok(reply.prefix as usize),
            _ => Err(unexpected(node)),
        }
    }

    /// Puts `items`, each on its owner, owners in parallel; the outcome of each in order.
    pub async fn kv_put(&self, namespace: &str, items: Vec<KvItem>) -> Result<Vec<KvPutOutcome>> {
        let keys: Vec<Vec<u8>> = items.iter().map(|item| item.key.clone()).collect();
        let groups = self.kv_group_by_owner(namespace, &keys);
        let mut tasks = JoinSet::new();
        for (node, indexes) in groups {
            let client = self.clone();
            let namespace = namespace.to_owned();
            let batch: Vec<KvItem> = indexes.iter().map(|&index| items[index].clone()).collect();
            tasks.spawn(async move {
                let outcomes = client.kv_put_on(node, &namespace, &batch).await;
                (indexes, outcomes)
            });
        }
        let mut outcomes = vec![KvPutOutcome::Stored; items.len()];
        while let Some(joined) = tasks.join_next().await {
            let (indexes, result) = joined.expect("a KV put task panicked");
            for (index, outcome) in indexes.into_iter().zip(result?) {
                outcomes[index] = outcome;
            }
        }
        Ok(outcomes)
    }

    /// Gets `keys`, each from its owner, owners in parallel: each value or `None` (a miss;
    /// an unreachable owner reads as misses too: this is a cache).
    pub async fn kv_get(&self, namespace: &str, keys: &[Vec<u8>]) -> Result<Vec<Option<Bytes>>> {
        let groups = self.kv_group_by_owner(namespace, keys);
        let mut tasks = JoinSet::new();
        for (node, indexes) in groups {
            let client = self.clone();
            let namespace = namespace.to_owned();
            let batch: Vec<Vec<u8>> = indexes.iter().map(|&index| keys[index].clone()).collect();
            tasks.spawn(async move {
                let values = client.kv_get_on(node, &namespace, &batch).await;
                (node, indexes, values)
            });
        }
        let mut values = vec![None; keys.len()];
        while let Some(joined) = tasks.join_next().await {
            let (node, indexes, result) = joined.expect("a KV get task panicked");
            match result {
                Ok(found) => indexes
                    .into_iter()
                    .zip(found)
                    .for_each(|(i, v)| values[i] = v),
                Err(error @ (ClientError::Connection { .. } | ClientError::Timeout { .. })) => {
                    tracing::debug!(%node, %error, "KV owner unreachable: misses");
                }
                Err(error) => return Err(error),
            }
        }
        Ok(values)
    }

    /// Deletes `keys`, each on its owner: how many held a value.
    pub async fn kv_delete(&self, namespace: &str, keys: &[Vec<u8>]) -> Result<u64> {
        let mut deleted = 0;
        for (node, indexes) in self.kv_group_by_owner(namespace, keys) {
            let batch: Vec<Vec<u8>> = indexes.iter().map(|&index| keys[index].clone()).collect();
            deleted += self.kv_delete_on(node, namespace, &batch).await?;
        }
        Ok(deleted)
    }

    /// The length of the longest prefix of `keys` that all exist, those keys leased for
    /// `lease_ms`: one round trip to the owner of the first key, which asks the others.
    pub async fn kv_prefix_lookup(
        &self,
        namespace: &str,
        keys: &[Vec<u8>],
        lease_ms: u64,
    ) -> Result<usize> {
        let Some(first) = keys.first() else {
            return Ok(0);
        };
        let node = self.kv_owner(namespace, first);
        self.kv_prefix_lookup_on(node, namespace, keys, lease_ms)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_respect_every_bound() {
        assert_eq!(batches(&[], &[], 2), Vec::<std::ops::Range<usize>>::new());
        assert_eq!(batches(&[10; 3], &[], 2), vec![0..3]);
        let big = (BATCH_BODY_BYTES_MAX / 2) + 1;
        assert_eq!(batches(&[1; 3], &[big; 3], 19), vec![0..1, 1..2, 2..3]);
        assert_eq!(
            batches(&[1; 2], &[BATCH_BODY_BYTES_MAX * 4, 1], 19),
            vec![0..1, 1..2]
        );
        let keys = vec![1000usize; 200];
        let cut = batches(&keys, &[], 2);
        assert!(cut.iter().all(|r| r.len() * 1002 <= BATCH_META_BYTES_MAX));
        assert_eq!(cut.iter().map(|r| r.len()).sum::<usize>(), 200);
        assert_eq!(batches(&[1; 5000], &[], 2).len(), 2);
    }

    #[test]
    fn value_crc32c_is_crc32c() {
        let data: Vec<u8> = (0..1_000_003u32)
            .map(|n| n.wrapping_mul(2_654_435_761) as u8)
            .collect();
        for length in [0, 1, 7, 63, 64, 255, 4096, 65_537, 1_000_003] {
            assert_eq!(
                value_crc32c(&data[..length]),
                nabu_core::checksum::crc32c(&data[..length])
            );
        }
    }

    #[test]
    fn a_group_head_and_its_member_share_a_point() {
        let stem = b"vllm@meta-llama/Llama-3.1-8B-Instruct@1@0@7193353375021096452";
        let head = [&stem[..], b"kv_bytes"].concat();
        let member = [&stem[..], b"metadata"].concat();
        assert_eq!(kv_point("kv", &head), kv_point("kv", &member));
        assert_ne!(kv_point("kv", &head), kv_point("other", &head));
    }
}
