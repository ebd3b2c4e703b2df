//! Garbage collection: space comes back once no key references a blob's stripes.
//!
//! Identical stripes are stored once (a stripe's id is its BLAKE3), so a stripe may belong to
//! many blobs and a blob to many keys; deleting or overwriting one key must not drop bytes
//! another still uses. Rather than keep reference counts in step across nodes (one lost
//! decrement leaks, one extra drops live data), the collector marks and sweeps:
//!
//! 1. **Every node must answer** (a node that cannot be asked might hold the only copy of a
//!    key record that keeps something alive).
//! 2. **Mark:** every namespace any node holds metadata of (META_NAMESPACES, reserved `_`
//!    namespaces included, where values that are not key records are skipped); in each, every
//!    live key record on *every* node — stale replicas included, so an older value a reader
//!    may still be served keeps its bytes — gives a blob; each blob's manifest gives its
//!    stripes.
//! 3. **List:** each node's stripes (SHARD_LIST) and manifests (META_LIST); what the mark did
//!    not reach is a candidate.
//! 4. **Sweep:** each node condemns a candidate the first time; a collection at least `grace`
//!    later drops it if it is still unreferenced and the node did not write it within `grace`
//!    (GC_SWEEP; see `crates/nabu-node/src/gc.rs`). So space comes back after two
//!    collections a grace period apart, and a read that resolved a key before its last
//!    reference went has `grace` to finish.
//!
//! **Why that is safe against PUTs in flight.** A PUT writes (or finds, deduplicated) its
//! stripes on their nodes, then its manifest, then the key record. If the mark missed the key
//! record, the record was written after the mark began, so the PUT touched its stripes no
//! earlier than `put_deadline` before the mark began ([`ClientConfig::put_deadline`]: a
//! slower PUT fails instead of committing). The collector sweeps only while its mark is
//! younger than `grace / 2`, and refuses a `grace` below `2 × put_deadline`, so every such
//! stripe was written within `grace` of the sweep and its node keeps it.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use nabu_core::id::{BlobId, StripeId};
use nabu_core::ring::NodeId;
use nabu_proto::ops::{
    LIST_LIMIT_MAX, ManifestRef, MetaGet, MetaList, MetaTable, SHARD_LIST_LIMIT_MAX,
    SWEEP_ITEMS_MAX, SweepRun,
};
use tokio::task::JoinSet;

use crate::client::Client;
use crate::config::ClientConfig;
use crate::error::{ClientError, Result};
use crate::format::{KeyRecord, Manifest};

/// Key records read at once from one node while marking.
const MARK_READS_INFLIGHT_MAX: usize = 64;

/// How to collect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcOptions {
    /// Items written on a node within this long are kept. At least `2 × put_deadline`.
    pub grace: Duration,
    /// Mark and list, report what would go, drop nothing.
    pub dry_run: bool,
}

/// What a collection found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Namespaces walked.
    pub namespaces: u64,
    /// Distinct blobs the key records reach.
    pub blobs_live: u64,
    /// Distinct stripes those blobs use.
    pub stripes_live: u64,
    /// Shards held on all nodes together.
    pub shards_held: u64,
    /// Shards no live blob uses.
    pub shards_unreferenced: u64,
    /// Manifest copies no live key reaches.
    pub manifests_unreferenced: u64,
    /// Shards dropped.
    pub shards_deleted: u64,
    /// Manifest copies dropped.
    pub manifests_deleted: u64,
    /// Unreferenced items condemned (now, or by an earlier collection less than a grace
    /// period ago): a collection a grace period after their condemnation drops them.
    pub condemned: u64,
    /// Unreferenced items kept because their node wrote them within the grace period (or
    /// restarted within it).
    pub kept_recent: u64,
    /// Bytes of records that turned into garbage (the disk space returns as segments are
    /// compacted).
    pub bytes_freed: u64,
}

/// The phases a collection goes through, for progress output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GcPhase {
    /// Reading key records and manifests.
    Mark,
    /// Listing what each node holds.
    List,
    /// Asking nodes to drop what nothing references.
    Sweep,
}

/// What one node holds that the mark did not reach.
#[derive(Debug, Default)]
struct Candidates {
    shards_held: u64,
    shards: Vec<StripeId>,
    manifests: Vec<ManifestRef>,
}

impl Client {
    /// Runs one mark-and-sweep collection over the whole cluster; see the module docs.
    /// `phase` is called as each phase begins.
    pub async fn collect_garbage(
        &self,
        options: GcOptions,
        phase: impl Fn(GcPhase),
    ) -> Result<GcReport> {
        check_grace(&self.inner.config, options.grace)?;
        let mark_started = Instant::now();
        let nodes: Vec<NodeId> = self.ring().members().iter().map(|m| m.id).collect();
        self.require_every_node(&nodes).await?;

        phase(GcPhase::Mark);
        let namespaces = self.all_namespaces(&nodes).await?;
        let mut blobs = BTreeSet::new();
        for namespace in &namespaces {
            for &node in &nodes {
                for blob_id in self.blobs_named_on(node, namespace).await? {
                    blobs.insert((namespace.clone(), blob_id));
                }
            }
        }
        // Every copy of every live manifest, on every node: no policy lookup needed, and a
        // copy that differs (a retried PUT) cannot hide a stripe.
        let mut stripes = HashSet::new();
        let mut candidates: HashMap<NodeId, Candidates> = HashMap::new();
        for &node in &nodes {
            let found = candidates.entry(node).or_default();
            for namespace in &namespaces {
                self.manifests_on(node, namespace, &blobs, &mut stripes, &mut found.manifests)
                    .await?;
            }
        }

        phase(GcPhase::List);
        let mut report = GcReport {
            namespaces: namespaces.len() as u64,
            blobs_live: blobs.len() as u64,
            stripes_live: stripes.len() as u64,
            ..GcReport::default()
        };
        for (&node, found) in &mut candidates {
            self.unreferenced_shards_on(node, &stripes, found).await?;
            report.shards_held += found.shards_held;
            report.shards_unreferenced += found.shards.len() as u64;
            report.manifests_unreferenced += found.manifests.len() as u64;
        }
        if options.dry_run {
            return Ok(report);
        }
        if mark_started.elapsed() > options.grace / 2 {
            return Err(ClientError::InvalidArgument(format!(
                "marking took {:?}, more than half the grace period ({:?}): nothing was swept; \
                 run again with a longer --grace",
                mark_started.elapsed(),
                options.grace
            )));
        }

        phase(GcPhase::Sweep);
        let run_id = self.inner.hlc.now();
        let grace_ms = u64::try_from(options.grace.as_millis()).unwrap_or(u64::MAX);
        for (node, found) in candidates {
            let batch = SWEEP_ITEMS_MAX as usize;
            let shard_batches = found.shards.chunks(batch).map(|shards| (shards, &[][..]));
            let manifest_batches = found.manifests.chunks(batch).map(|m| (&[][..], m));
            let mut batches: Vec<_> = shard_batches.chain(manifest_batches).collect();
            if batches.is_empty() {
                batches.push((&[][..], &[][..])); // still ends the run: pardons lapse
            }
            let count = batches.len();
            for (sent, (shards, manifests)) in batches.into_iter().enumerate() {
                let run = SweepRun {
                    grace_ms,
                    run_id,
                    last: sent + 1 == count,
                };
                let swept = self
                    .inner
                    .pool
                    .gc_sweep(node, run, shards, manifests)
                    .await?;
                report.shards_deleted += u64::from(swept.shards_deleted);
                report.manifests_deleted += u64::from(swept.manifests_deleted);
                report.condemned += u64::from(swept.condemned);
                report.kept_recent += u64::from(swept.kept_recent);
                report.bytes_freed += swept.bytes_freed;
            }
        }
        Ok(report)
    }

    async fn require_every_node(&self, nodes: &[NodeId]) -> Result<()> {
        let mut tasks = JoinSet::new();
        for &node in nodes {
            let client = self.clone();
            tasks.spawn(async move { (node, client.inner.pool.node_status(node).await) });
        }
        let mut down = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            if let (_, Err(error)) = joined.expect("status task panicked") {
                down.push(error.to_string()); // it names the node
            }
        }
        if down.is_empty() {
            return Ok(());
        }
        down.sort();
        Err(ClientError::MetadataUnavailable {
            what: "garbage collection".into(),
            detail: format!(
                "it needs every node, and {} did not answer ({})",
                down.len(),
                down.join("; ")
            ),
        })
    }

    async fn all_namespaces(&self, nodes: &[NodeId]) -> Result<BTreeSet<String>> {
        let mut namespaces = BTreeSet::new();
        for &node in nodes {
            let mut after = String::new();
            loop {
                let (page, more) = self
                    .inner
                    .pool
                    .meta_namespaces(node, &after, LIST_LIMIT_MAX)
                    .await?;
                if let Some(last) = page.last() {
                    after.clone_from(last);
                }
                namespaces.extend(page);
                if !more {
                    break;
                }
            }
        }
        Ok(namespaces)
    }

    /// The blobs the live key records `node` holds in `namespace` point to.
    async fn blobs_named_on(&self, node: NodeId, namespace: &str) -> Result<HashSet<BlobId>> {
        let mut blobs = HashSet::new();
        let mut continuation = Vec::new();
        loop {
            let request = MetaList {
                table: MetaTable::KeyRecords,
                namespace: namespace.to_owned(),
                prefix: Vec::new(),
                continuation: continuation.clone(),
                limit: LIST_LIMIT_MAX,
                include_deleted: false,
            };
            let (entries, next) = self.inner.pool.meta_list(node, &request).await?;
            let mut reads = JoinSet::new();
            for entry in entries {
                while reads.len() >= MARK_READS_INFLIGHT_MAX {
                    blobs.extend(join_read(&mut reads).await?);
                }
                let client = self.clone();
                let request = MetaGet {
                    table: MetaTable::KeyRecords,
                    namespace: namespace.to_owned(),
                    key: entry.key,
                };
                reads.spawn(async move {
                    let value = client.inner.pool.meta_get(node, &request).await?;
                    let value = value.filter(|v| !v.deleted).map(|v| v.value);
                    match decode_blob(value, &request) {
                        // Reserved namespaces (`_system`: namespace records, credentials)
                        // hold other values beside key records; those reference no blob.
                        Err(ClientError::Format { .. }) if request.namespace.starts_with('_') => {
                            Ok(None)
                        }
                        result => result,
                    }
                });
            }
            while !reads.is_empty() {
                blobs.extend(join_read(&mut reads).await?);
            }
            if next.is_empty() {
                return Ok(blobs);
            }
            continuation = next;
        }
    }

    /// Reads the manifests `node` holds in `namespace`: the stripes of live ones join
    /// `stripes`, the others are `unreferenced`.
    async fn manifests_on(
        &self,
        node: NodeId,
        namespace: &str,
        blobs: &BTreeSet<(String, BlobId)>,
        stripes: &mut HashSet<StripeId>,
        unreferenced: &mut Vec<ManifestRef>,
    ) -> Result<()> {
        let mut continuation = Vec::new();
        loop {
            let request = MetaList {
                table: MetaTable::Manifests,
                namespace: namespace.to_owned(),
                prefix: Vec::new(),
                continuation: continuation.clone(),
                limit: LIST_LIMIT_MAX,
                include_deleted: true,
            };
            let (entries, next) = self.inner.pool.meta_list(node, &request).await?;
            let mut reads = JoinSet::new();
            for entry in entries {
                let Ok(bytes) = <[u8; 32]>::try_from(&entry.key[..]) else {
                    continue; // not a manifest address; leave it alone
                };
                let blob_id = BlobId::from_bytes(bytes);
                if !blobs.contains(&(namespace.to_owned(), blob_id)) {
                    unreferenced.push(ManifestRef {
                        namespace: namespace.to_owned(),
                        blob_id,
                    });
                    continue;
                }
                while reads.len() >= MARK_READS_INFLIGHT_MAX {
                    stripes.extend(join_read(&mut reads).await?);
                }
                let client = self.clone();
                let request = MetaGet {
                    table: MetaTable::Manifests,
                    namespace: namespace.to_owned(),
                    key: entry.key,
                };
                reads.spawn(async move {
                    let value = client.inner.pool.meta_get(node, &request).await?;
                    decode_stripes(value.filter(|v| !v.deleted).map(|v| v.value), blob_id)
                });
            }
            while !reads.is_empty() {
                stripes.extend(join_read(&mut reads).await?);
            }
            if next.is_empty() {
                return Ok(());
            }
            continuation = next;
        }
    }

    /// Lists `node`'s shards into `found`: all are counted, those of no live stripe kept.
    async fn unreferenced_shards_on(
        &self,
        node: NodeId,
        stripes: &HashSet<StripeId>,
        found: &mut Candidates,
    ) -> Result<()> {
        let mut after = None;
        loop {
            let (page, more) = self
                .inner
                .pool
                .shard_list(node, after, SHARD_LIST_LIMIT_MAX)
                .await?;
            after = page.last().copied();
            found.shards_held += page.len() as u64;
            found
                .shards
                .extend(page.into_iter().filter(|id| !stripes.contains(id)));
            if !more {
                return Ok(());
            }
        }
    }
}

/// Refuses a grace period too short to protect PUTs in flight.
fn check_grace(config: &ClientConfig, grace: Duration) -> Result<()> {
    if grace < config.put_deadline * 2 {
        return Err(ClientError::InvalidArgument(format!(
            "the grace period ({grace:?}) must be at least twice put_deadline ({:?}), or a \
             PUT in flight could lose its stripes",
            config.put_deadline
        )));
    }
    Ok(())
}

async fn join_read<T: 'static>(reads: &mut JoinSet<Result<T>>) -> Result<T> {
    reads
        .join_next()
        .await
        .expect("a read is pending")
        .expect("read task panicked")
}

/// The stripes a manifest names (none for a copy deleted since it was listed).
fn decode_stripes(value: Option<Bytes>, blob_id: BlobId) -> Result<Vec<StripeId>> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let manifest = Manifest::decode(&value).map_err(|source| ClientError::Format {
        what: format!("manifest of {blob_id}"),
        source,
    })?;
    // The ids the nodes keep the stripes under (whole copies: derived ones).
    Ok(manifest.node_stripe_ids().collect())
}

/// The blob a key record names; `None` for a record deleted since it was listed.
fn decode_blob(value: Option<Bytes>, request: &MetaGet) -> Result<Option<BlobId>> {
    let Some(value) = value else {
        return Ok(None);
    };
    let record = KeyRecord::decode(&value).map_err(|source| ClientError::Format {
        what: format!(
            "key record {}/{}",
            request.namespace,
            String::from_utf8_lossy(&request.key)
        ),
        source,
    })?;
    Ok(Some(record.blob_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grace_period_shorter_than_two_put_deadlines_is_refused() {
        let config = ClientConfig {
            put_deadline: Duration::from_secs(60),
            ..ClientConfig::default()
        };
        assert!(check_grace(&config, Duration::from_secs(119)).is_err());
        assert!(check_grace(&config, Duration::from_secs(120)).is_ok());
    }
}
