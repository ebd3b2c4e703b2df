//! The [`Client`]: cluster map, ring, connections, clock, namespace policies, and the
//! metadata paths (key records, manifests, namespace records, listing, delete).
//!
//! Metadata values are written to `copies = max(3, M+1)` nodes (capped at the cluster size):
//! the ring placement of the key record's point (or the blob id, for manifests), with hinted
//! handoff along the ring walk when a node is down. A write is acknowledged at `copies − 1`
//! durable copies (one more than needed to survive the next loss), like stripes at K+1.
//! Reads ask the placement's nodes and take the value with the highest HLC timestamp.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use nabu_core::policy::Durability;
use nabu_core::ring::{NodeId, Ring};
use nabu_proto::ops::MemberEntry;
use nabu_proto::ops::{
    KEY_BYTES_MAX, LIST_LIMIT_MAX, MetaDelete, MetaGet, MetaList, MetaPut, MetaTable,
    NAMESPACE_BYTES_MAX,
};
use tokio::task::JoinSet;

use crate::config::{ClientConfig, ClusterMap, Endpoint, Hedge, MemberAddr, builtin_namespaces};
use crate::error::{ClientError, KeyDisplay, Result};
use crate::format::{KeyRecord, NamespaceRecord, UserMetadata, key_record_point};
use crate::hlc::Hlc;
use crate::pool::{MetaValue, Pool};

/// The namespace holding cluster metadata (namespace policies), replicated like key records.
pub const SYSTEM_NAMESPACE: &str = "_system";
/// How long reads ask a node last after they had to hedge around it.
pub(crate) const SLOW_NODE_AVOID_FOR: Duration = Duration::from_secs(2);
/// Recent shard-read latencies kept for the percentile hedge.
const LATENCY_SAMPLES_MAX: usize = 512;
/// Samples between two recomputations of the hedge delay (and the least before the first).
const LATENCY_RECOMPUTE_EVERY: u64 = 32;

/// A ring-aware NabuStore client. Cheap to clone (one shared state); use one per process.
#[derive(Debug, Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: ClientConfig,
    /// The ring placing data now, and the one before the last membership change (whose
    /// nodes may still hold data the rebalancer has not moved yet).
    pub(crate) rings: RwLock<Rings>,
    pub(crate) pool: Pool,
    pub(crate) hlc: Hlc,
    pub(crate) namespaces: RwLock<BTreeMap<String, Durability>>,
    pub(crate) latency: LatencyTracker,
    /// Member-list refreshes so far (which member is asked first rotates).
    pub(crate) refreshes: std::sync::atomic::AtomicUsize,
    /// Nodes a read had to hedge around, and until when reads try them last.
    pub(crate) slow_nodes: Mutex<HashMap<NodeId, Instant>>,
}

/// The current ring and the previous one.
#[derive(Debug, Clone)]
pub(crate) struct Rings {
    pub(crate) current: Arc<Ring>,
    pub(crate) previous: Option<Arc<Ring>>,
}

/// What `stat` tells about a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The blob the key names.
    pub blob_id: nabu_core::id::BlobId,
    /// Its length.
    pub size: u64,
    /// The HLC timestamp of the put that wrote it.
    pub hlc_timestamp: u64,
    /// User metadata of that put.
    pub metadata: UserMetadata,
}

/// One key of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedKey {
    /// The key.
    pub key: Vec<u8>,
    /// The HLC timestamp of its key record.
    pub hlc_timestamp: u64,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage {
    /// Live keys in ascending byte order.
    pub keys: Vec<ListedKey>,
    /// Pass back for the next page; `None` on the last page.
    pub continuation: Option<Vec<u8>>,
}

/// Where each slot of a fan-out landed.
#[derive(Debug)]
pub(crate) struct FanOut {
    /// Per slot, the node that acknowledged it, if any.
    pub(crate) placed: Vec<Option<NodeId>>,
    /// Nodes that failed, with why.
    pub(crate) failures: Vec<(NodeId, ClientError)>,
}

impl FanOut {
    pub(crate) fn durable(&self) -> usize {
        self.placed.iter().flatten().count()
    }

    /// Why the failed nodes did not take their copy, for an error message: `node 2 answered
    /// …; node 5: …`.
    pub(crate) fn why(&self) -> String {
        let answers: Vec<String> = self
            .failures
            .iter()
            .map(|(node, error)| {
                let answer = error.to_string();
                // Most errors name their node already.
                if answer.starts_with(&format!("node {node}")) {
                    answer
                } else {
                    format!("node {node}: {answer}")
                }
            })
            .collect();
        answers.join("; ")
    }
}

impl Client {
    /// A client of `cluster`; connects to nodes lazily, on first use.
    pub fn new(cluster: ClusterMap, config: ClientConfig) -> Result<Self> {
        config.check()?;
        let ClusterMap {
            token,
            members,
            ring_epoch,
        } = cluster;
        if members.is_empty() {
            return Err(ClientError::InvalidArgument(
                "the cluster map has no members".into(),
            ));
        }
        let ring_members = members.iter().map(|m| m.ring_member()).collect();
        let ring = Ring::new(ring_epoch, ring_members)
            .map_err(|error| ClientError::InvalidArgument(error.to_string()))?;
        let mut namespaces = builtin_namespaces(members.len());
        namespaces.extend(config.namespaces.clone());
        let inner = Inner {
            pool: Pool::new(token, &members, &config),
            rings: RwLock::new(Rings {
                current: Arc::new(ring),
                previous: None,
            }),
            hlc: Hlc::new(config.max_clock_skew),
            namespaces: RwLock::new(namespaces),
            latency: LatencyTracker::default(),
            slow_nodes: Mutex::new(HashMap::new()),
            refreshes: std::sync::atomic::AtomicUsize::new(0),
            config,
        };
        let client = Self {
            inner: Arc::new(inner),
        };
        client.spawn_members_refresh();
        Ok(client)
    }

    /// Refreshes the member list every `members_refresh` while the client lives (needs a
    /// Tokio runtime; without one the client refreshes only when asked).
    fn spawn_members_refresh(&self) {
        let Some(every) = self.inner.config.members_refresh else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak = Arc::downgrade(&self.inner);
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(inner) = weak.upgrade() else { return };
                if let Err(error) = (Client { inner }).refresh_members().await {
                    tracing::debug!(%error, "member list refresh failed");
                }
            }
        });
    }

    /// The ring the client places data with.
    pub fn ring(&self) -> Arc<Ring> {
        Arc::clone(&self.rings().current)
    }

    /// The ring before the last membership change this client saw, if any.
    pub fn previous_ring(&self) -> Option<Arc<Ring>> {
        self.rings().previous
    }

    pub(crate) fn rings(&self) -> Rings {
        self.inner
            .rings
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Takes the member list at `epoch` if it is newer than the client's: the ring is rebuilt
    /// (the old one kept as [`Client::previous_ring`]) and new members get connections.
    /// Returns whether anything changed.
    pub fn apply_members(&self, epoch: u64, members: &[MemberEntry]) -> Result<bool> {
        if !members.iter().any(|member| member.weight > 0) {
            return Err(ClientError::InvalidArgument(
                "a member list needs a member with a weight above 0".into(),
            ));
        }
        let addrs: Vec<MemberAddr> = members
            .iter()
            .map(|member| MemberAddr {
                id: member.id,
                zone: member.zone.clone(),
                weight: member.weight,
                data_addr: Endpoint::from(member.data_addr),
            })
            .collect();
        let ring = Ring::new(epoch, addrs.iter().map(MemberAddr::ring_member).collect())
            .map_err(|error| ClientError::InvalidArgument(error.to_string()))?;
        let mut rings = self
            .inner
            .rings
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if epoch <= rings.current.epoch() {
            return Ok(false);
        }
        self.inner.pool.add_members(&addrs);
        let previous = std::mem::replace(&mut rings.current, Arc::new(ring));
        rings.previous = Some(previous);
        tracing::info!(epoch, members = members.len(), "member list changed");
        Ok(true)
    }

    /// Asks up to three members (a different first one each time) for their member list and
    /// applies the newest ([`Client::apply_members`]). Returns whether it changed.
    pub async fn refresh_members(&self) -> Result<bool> {
        let (epoch, members) = self.newest_members(3).await?;
        self.apply_members(epoch, &members)
    }

    /// The newest member list among the first `asked` members that answer (a different
    /// first one each call): its epoch and members.
    pub async fn newest_members(&self, asked: usize) -> Result<(u64, Vec<MemberEntry>)> {
        let ring = self.ring();
        let members = ring.members();
        let start = self
            .inner
            .refreshes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut newest: Option<(u64, Vec<MemberEntry>)> = None;
        let (mut answered, mut last_error) = (0, None);
        for offset in 0..members.len() {
            let member = &members[(start + offset) % members.len()];
            match self.inner.pool.members_get(member.id).await {
                Ok(list) => {
                    if newest.as_ref().is_none_or(|(epoch, _)| list.0 > *epoch) {
                        newest = Some(list);
                    }
                    answered += 1;
                    if answered == asked {
                        break;
                    }
                }
                Err(error) => last_error = Some(error),
            }
        }
        newest.ok_or_else(|| {
            last_error.unwrap_or_else(|| ClientError::InvalidArgument("no members".into()))
        })
    }

    /// The client's configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The per-node connections and typed requests (for tools and tests that talk to one
    /// node, e.g. SHARD_STAT).
    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// The client's hybrid logical clock.
    pub fn clock(&self) -> &Hlc {
        &self.inner.hlc
    }

    /// The nodes a value at ring `point` is written to first, then handed off to, in order:
    /// the placement `width` wide followed by up to `handoff_nodes_max` more nodes of the walk.
    ///
    /// After a membership change the previous ring's placement follows the current one
    /// (before the handoff nodes): until the rebalancer has moved a stripe, its shards are
    /// there. Draining members (weight 0) come last.
    pub fn walk(&self, point: u64, width: usize) -> Vec<NodeId> {
        let rings = self.rings();
        let nodes = rings.current.members().len();
        let length = (width + self.inner.config.handoff_nodes_max).min(nodes);
        let mut walk = rings.current.placement(point, length);
        if let Some(previous) = &rings.previous {
            let old: Vec<NodeId> = previous
                .placement(point, width)
                .into_iter()
                .filter(|node| !walk[..width.min(walk.len())].contains(node))
                .collect();
            walk.retain(|node| !old.contains(node));
            let at = width.min(walk.len());
            walk.splice(at..at, old);
        }
        // Draining members own no part of the ring but hold what they held until they are
        // empty: last, so reads and the rebalancer still find it (even after a later change
        // has replaced the ring they last owned part of).
        for member in rings.current.members() {
            if member.weight == 0 && !walk.contains(&member.id) {
                walk.push(member.id);
            }
        }
        walk
    }

    /// How many nodes hold each key record and manifest of a namespace with `durability`.
    pub fn metadata_copies(&self, durability: Durability) -> usize {
        let nodes = self.ring().members().len();
        durability
            .losses_tolerated()
            .max(2)
            .saturating_add(1)
            .min(nodes)
    }

    /// The nodes a key record's copies go to (its placement, before any handoff).
    pub fn key_record_nodes(
        &self,
        namespace: &str,
        key: &[u8],
        durability: Durability,
    ) -> Vec<NodeId> {
        let copies = self.metadata_copies(durability);
        let point = key_record_point(namespace, key);
        self.ring().placement(point, copies)
    }

    /// The durability policy of `namespace`: the built-in ones, those in the config, or one
    /// created with [`Client::create_namespace`] (read from the `_system` namespace).
    pub async fn namespace_policy(&self, namespace: &str) -> Result<Durability> {
        check_namespace(namespace)?;
        let cached = self
            .inner
            .namespaces
            .read()
            .expect("namespaces lock")
            .get(namespace)
            .copied();
        if let Some(durability) = cached {
            return Ok(durability);
        }
        let key = namespace_record_key(namespace);
        let copies = self.system_copies();
        let point = key_record_point(SYSTEM_NAMESPACE, &key);
        let what = format!("namespace {namespace}");
        let stored = self
            .meta_read(
                MetaTable::KeyRecords,
                SYSTEM_NAMESPACE,
                &key,
                point,
                copies,
                &what,
            )
            .await?;
        let value = live(stored, || what.clone())?;
        let record = NamespaceRecord::decode(&value.value)
            .map_err(|source| ClientError::Format { what, source })?;
        let mut cache = self.inner.namespaces.write().expect("namespaces lock");
        cache.insert(namespace.to_owned(), record.durability);
        Ok(record.durability)
    }

    /// Creates (or changes) a namespace's policy, stored in the `_system` namespace so every
    /// client finds it. A changed policy applies to later puts only.
    pub async fn create_namespace(&self, namespace: &str, durability: Durability) -> Result<()> {
        check_user_namespace(namespace)?;
        self.check_durability(durability)?;
        let key = namespace_record_key(namespace);
        let value = Bytes::from(NamespaceRecord { durability }.encode());
        let point = key_record_point(SYSTEM_NAMESPACE, &key);
        let hlc = self.inner.hlc.now();
        let what = format!("namespace {namespace}");
        let copies = self.system_copies();
        self.meta_write(
            MetaTable::KeyRecords,
            SYSTEM_NAMESPACE,
            &key,
            point,
            copies,
            hlc,
            Some(value),
            &what,
        )
        .await?;
        let mut cache = self.inner.namespaces.write().expect("namespaces lock");
        cache.insert(namespace.to_owned(), durability);
        Ok(())
    }

    pub(crate) fn system_copies(&self) -> usize {
        3.min(self.ring().members().len())
    }

    /// Refuses a policy the cluster cannot place.
    pub(crate) fn check_durability(&self, durability: Durability) -> Result<()> {
        let nodes = self.ring().members().len();
        if durability.width() > nodes {
            return Err(ClientError::InvalidArgument(format!(
                "policy {durability} needs {} nodes, the cluster has {nodes}",
                durability.width()
            )));
        }
        Ok(())
    }

    /// The key record of `key` (newest by HLC); `NotFound` if none or deleted.
    pub async fn stat(&self, namespace: &str, key: &[u8]) -> Result<ObjectInfo> {
        let record = self.read_key_record(namespace, key).await?;
        Ok(ObjectInfo {
            blob_id: record.blob_id,
            size: record.blob_bytes,
            hlc_timestamp: record.hlc_timestamp,
            metadata: record.metadata,
        })
    }

    pub(crate) async fn read_key_record(&self, namespace: &str, key: &[u8]) -> Result<KeyRecord> {
        check_key(key)?;
        let durability = self.namespace_policy(namespace).await?;
        let copies = self.metadata_copies(durability);
        let point = key_record_point(namespace, key);
        let what = format!("key record {namespace}/{}", KeyDisplay(key));
        let stored = self
            .meta_read(MetaTable::KeyRecords, namespace, key, point, copies, &what)
            .await?;
        let value = live(stored, || format!("{namespace}/{}", KeyDisplay(key)))?;
        KeyRecord::decode(&value.value).map_err(|source| ClientError::Format { what, source })
    }

    /// Deletes `key`: a tombstone with a newer HLC timestamp than any put this client has
    /// made or seen. Deleting a missing key succeeds. The blob's bytes stay while other keys
    /// name them (space comes back through garbage collection, later work).
    pub async fn delete(&self, namespace: &str, key: &[u8]) -> Result<()> {
        check_key(key)?;
        let durability = self.namespace_policy(namespace).await?;
        let copies = self.metadata_copies(durability);
        let point = key_record_point(namespace, key);
        let hlc = self.inner.hlc.now();
        let what = format!("tombstone of {namespace}/{}", KeyDisplay(key));
        self.meta_write(
            MetaTable::KeyRecords,
            namespace,
            key,
            point,
            copies,
            hlc,
            None,
            &what,
        )
        .await
    }

    /// Lists live keys starting with `prefix`, after `continuation`, at most `limit`
    /// (1..=10,000): asks every node (scatter-gather), merges in key order, keeps each key's
    /// newest record and drops deleted keys. Tolerates `copies − 1` unreachable nodes.
    pub async fn list(
        &self,
        namespace: &str,
        prefix: &[u8],
        continuation: Option<&[u8]>,
        limit: u32,
    ) -> Result<ListPage> {
        let durability = self.namespace_policy(namespace).await?;
        let tolerated = self.metadata_copies(durability).saturating_sub(1);
        self.list_tolerating(namespace, tolerated, prefix, continuation, limit)
            .await
    }

    /// [`Client::list`] that fails once more than `tolerated` nodes are unreachable.
    pub(crate) async fn list_tolerating(
        &self,
        namespace: &str,
        tolerated: usize,
        prefix: &[u8],
        continuation: Option<&[u8]>,
        limit: u32,
    ) -> Result<ListPage> {
        if limit == 0 || limit > LIST_LIMIT_MAX {
            return Err(ClientError::InvalidArgument(format!(
                "a list limit lies in 1..={LIST_LIMIT_MAX}"
            )));
        }
        let request = MetaList {
            table: MetaTable::KeyRecords,
            namespace: namespace.to_owned(),
            prefix: prefix.to_vec(),
            continuation: continuation.unwrap_or_default().to_vec(),
            limit,
            include_deleted: true,
        };
        let mut tasks = JoinSet::new();
        for member in self.ring().members() {
            let (client, request, node) = (self.clone(), request.clone(), member.id);
            tasks.spawn(async move { (node, client.inner.pool.meta_list(node, &request).await) });
        }
        let mut pages = Vec::new();
        let mut failed = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined.expect("list task panicked") {
                (_, Ok(page)) => pages.push(page),
                (node, Err(error)) => failed.push(format!("{node}: {error}")),
            }
        }
        if failed.len() > tolerated {
            return Err(ClientError::MetadataUnavailable {
                what: format!("listing of {namespace}"),
                detail: format!(
                    "{} nodes failed, {tolerated} tolerated: {}",
                    failed.len(),
                    failed.join("; ")
                ),
            });
        }
        for (entries, _) in &pages {
            for entry in entries {
                self.inner.hlc.observe(entry.hlc_timestamp);
            }
        }
        Ok(crate::list::merge_pages(pages, limit as usize))
    }

    /// Reads a metadata value from the nodes of its placement and returns the newest
    /// (tombstones included); `None` when the placement's answers agree nothing is stored.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn meta_read(
        &self,
        table: MetaTable,
        namespace: &str,
        key: &[u8],
        point: u64,
        copies: usize,
        what: &str,
    ) -> Result<Option<MetaValue>> {
        let (value, _) = self
            .meta_read_placed(table, namespace, key, point, copies, what)
            .await?;
        Ok(value)
    }

    /// [`Client::meta_read`], and whether every node of the value's current placement holds
    /// that newest value (so nothing needs writing to put it in place).
    pub(crate) async fn meta_read_placed(
        &self,
        table: MetaTable,
        namespace: &str,
        key: &[u8],
        point: u64,
        copies: usize,
        what: &str,
    ) -> Result<(Option<MetaValue>, bool)> {
        let walk = self.walk(point, copies);
        let request = MetaGet {
            table,
            namespace: namespace.to_owned(),
            key: key.to_vec(),
        };
        let ask = |node: NodeId| {
            let (client, request) = (self.clone(), request.clone());
            async move { client.inner.pool.meta_get(node, &request).await }
        };
        let required = required_copies(copies);
        let primary = &walk[..copies.min(walk.len())];
        let answers = self
            .gather(primary, required, self.hedge_after(), &ask)
            .await;
        let failed_primaries = primary.len() - answers.iter().filter(|a| a.is_ok()).count();
        let mut answers: Vec<Option<MetaValue>> = answers.into_iter().flatten().collect();
        let primary_timestamps: Vec<Option<u64>> = answers
            .iter()
            .map(|answer| answer.as_ref().map(|value| value.hlc_timestamp))
            .collect();
        let absent_primaries = answers.iter().filter(|answer| answer.is_none()).count();
        // After a membership change, until the rebalancer has rewritten it, a value may sit
        // only on the previous ring's placement (or be newer there, written by a client
        // still on that ring): those nodes are asked too when a primary lacks it.
        let moved_from: Vec<NodeId> = match (&self.rings().previous, absent_primaries) {
            (Some(previous), 1..) => previous
                .placement(point, copies)
                .into_iter()
                .filter(|node| !primary.contains(node))
                .collect(),
            _ => Vec::new(),
        };
        if !moved_from.is_empty() {
            let more = self
                .gather(&moved_from, moved_from.len(), self.hedge_after(), &ask)
                .await;
            answers.extend(more.into_iter().flatten());
        }
        if failed_primaries > 0 || absent_primaries > 0 {
            // Some primaries are unreachable, or lack the value: it may have been handed off
            // (those primaries were unreachable when it was written, and its hints have not
            // been replayed to them yet). Every handoff node is asked; after the first answer
            // the slower ones get the same grace period as primaries (a handed-off copy is
            // found on any of them). A key no node holds pays this one extra parallel round.
            let handoff = &walk[primary.len()..];
            let more = self
                .gather(handoff, 1.min(handoff.len()), self.hedge_after(), &ask)
                .await;
            answers.extend(more.into_iter().flatten());
        }
        let newest = answers
            .into_iter()
            .flatten()
            .max_by_key(|value| value.hlc_timestamp);
        if let Some(value) = newest {
            self.inner.hlc.observe(value.hlc_timestamp);
            let placed = primary_timestamps.len() == primary.len()
                && primary_timestamps
                    .iter()
                    .all(|timestamp| *timestamp == Some(value.hlc_timestamp));
            return Ok((Some(value), placed));
        }
        if failed_primaries == 0 || absent_primaries >= required {
            return Ok((None, failed_primaries == 0));
        }
        Err(ClientError::MetadataUnavailable {
            what: what.to_owned(),
            detail: format!(
                "{failed_primaries} of its {} nodes unreachable and no copy found elsewhere",
                primary.len()
            ),
        })
    }

    /// Writes a metadata value (`None`: a tombstone) to `copies` nodes of its placement, with
    /// handoff; succeeds at `copies − 1` durable copies (all of them below 3).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn meta_write(
        &self,
        table: MetaTable,
        namespace: &str,
        key: &[u8],
        point: u64,
        copies: usize,
        hlc_timestamp: u64,
        value: Option<Bytes>,
        what: &str,
    ) -> Result<()> {
        let walk = self.walk(point, copies);
        let fan_out = fan_out(&walk, copies, |_, node| {
            let client = self.clone();
            let (namespace, key, value) = (namespace.to_owned(), key.to_vec(), value.clone());
            async move {
                let pool = &client.inner.pool;
                match value {
                    Some(value) => {
                        let request = MetaPut {
                            table,
                            namespace,
                            key,
                            hlc_timestamp,
                            value_bytes: value.len() as u64,
                        };
                        pool.meta_put(node, &request, value).await.map(drop)
                    }
                    None => {
                        let request = MetaDelete {
                            table,
                            namespace,
                            key,
                            hlc_timestamp,
                        };
                        pool.meta_delete(node, &request).await.map(drop)
                    }
                }
            }
        })
        .await;
        let required = required_copies(copies);
        if fan_out.durable() < required {
            for (node, error) in &fan_out.failures {
                tracing::warn!(%node, %error, what, "metadata write failed");
            }
            return Err(ClientError::NotDurable {
                what: what.to_owned(),
                durable: fan_out.durable(),
                wanted: copies,
                required,
                why: fan_out.why(),
            });
        }
        if fan_out.durable() < copies {
            tracing::warn!(
                what,
                durable = fan_out.durable(),
                copies,
                "metadata under-replicated"
            );
        }
        Ok(())
    }

    /// When a read should ask for more than it needs; `None`: never.
    pub(crate) fn hedge_after(&self) -> Option<Duration> {
        match self.inner.config.hedge {
            Hedge::Fixed(delay) => Some(delay),
            Hedge::Never => None,
            Hedge::Percentile { min, max, .. } => Some(
                self.inner
                    .latency
                    .hedge_delay()
                    .map_or(max, |d| d.clamp(min, max)),
            ),
        }
    }

    /// Marks `node` slow: a read had to hedge around it. Reads ask it last for
    /// [`SLOW_NODE_AVOID_FOR`] (each hedge around it again extends that), so one stalled node
    /// costs one hedge delay, not one per read.
    pub(crate) fn mark_slow(&self, node: NodeId) {
        let until = Instant::now() + SLOW_NODE_AVOID_FOR;
        let mut slow = self.inner.slow_nodes.lock().expect("slow nodes lock");
        if slow.insert(node, until).is_none() {
            tracing::debug!(%node, "node is slow: reads ask it last for a while");
        }
    }

    /// Forgets that `node` was slow (it answered in time).
    pub(crate) fn clear_slow(&self, node: NodeId) {
        let mut slow = self.inner.slow_nodes.lock().expect("slow nodes lock");
        slow.remove(&node);
    }

    /// Whether reads should ask `node` last.
    pub(crate) fn is_slow(&self, node: NodeId) -> bool {
        let mut slow = self.inner.slow_nodes.lock().expect("slow nodes lock");
        match slow.get(&node) {
            Some(&until) if until > Instant::now() => true,
            Some(_) => {
                slow.remove(&node);
                false
            }
            None => false,
        }
    }

    /// Records one shard read's latency for the percentile hedge.
    pub(crate) fn record_latency(&self, latency: Duration) {
        if let Hedge::Percentile { percentile, .. } = self.inner.config.hedge {
            self.inner.latency.record(latency, percentile);
        }
    }
}

/// The least durable copies a write of `copies` is acknowledged at.
pub(crate) fn required_copies(copies: usize) -> usize {
    if copies >= 3 { copies - 1 } else { copies }
}

/// Sends slot `i` to `walk[i]` for every slot below `width`, all in parallel; a slot whose
/// node fails goes to the next unused node of `walk` beyond `width` (hinted handoff). A node
/// is used at most once, so no two slots land on one node.
pub(crate) async fn fan_out<F, Fut>(walk: &[NodeId], width: usize, send: F) -> FanOut
where
    F: Fn(usize, NodeId) -> Fut,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let width_placed = width.min(walk.len());
    let mut candidates: VecDeque<NodeId> = walk[width_placed..].iter().copied().collect();
    let mut placed = vec![None; width];
    let mut failures = Vec::new();
    let mut tasks = JoinSet::new();
    let spawn = |tasks: &mut JoinSet<_>, slot: usize, node: NodeId| {
        let future = send(slot, node);
        tasks.spawn(async move { (slot, node, future.await) });
    };
    for (slot, &node) in walk.iter().take(width_placed).enumerate() {
        spawn(&mut tasks, slot, node);
    }
    while let Some(joined) = tasks.join_next().await {
        let (slot, node, result) = joined.expect("fan-out task panicked");
        match result {
            Ok(()) => placed[slot] = Some(node),
            Err(error) => {
                tracing::debug!(%node, slot, %error, "write failed, handing off");
                failures.push((node, error));
                if let Some(next) = candidates.pop_front() {
                    spawn(&mut tasks, slot, next);
                }
            }
        }
    }
    FanOut { placed, failures }
}

/// The value a metadata read found, or `NotFound` (named by `what`) when it found nothing
/// or a tombstone.
pub(crate) fn live(stored: Option<MetaValue>, what: impl FnOnce() -> String) -> Result<MetaValue> {
    match stored {
        Some(value) if !value.deleted => Ok(value),
        _ => Err(ClientError::NotFound(what())),
    }
}

impl Client {
    /// Asks every node of `nodes` in parallel; once `enough` have answered successfully,
    /// waits at most `grace` for the rest (forever if `None`), and not at all for nodes
    /// marked slow; nodes still silent when the grace period ends are marked slow.
    /// Unanswered nodes count as failed.
    async fn gather<F, Fut, T>(
        &self,
        nodes: &[NodeId],
        enough: usize,
        grace: Option<Duration>,
        ask: &F,
    ) -> Vec<Result<T>>
    where
        F: Fn(NodeId) -> Fut,
        Fut: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        let mut tasks = JoinSet::new();
        for &node in nodes {
            let asked = ask(node);
            tasks.spawn(async move { (node, asked.await) });
        }
        let mut pending: Vec<NodeId> = nodes.to_vec();
        let mut answers: Vec<Result<T>> = Vec::with_capacity(nodes.len());
        let mut deadline: Option<Instant> = None;
        loop {
            // Only successful answers count towards `enough`: failures that arrive first
            // (nodes that are down answer fastest) must not start the grace period and cut
            // off the live nodes still answering.
            let succeeded = answers.iter().filter(|answer| answer.is_ok()).count();
            if succeeded >= enough {
                if pending.iter().all(|&node| self.is_slow(node)) {
                    break;
                }
                if deadline.is_none() {
                    deadline = grace.map(|grace| Instant::now() + grace);
                }
            }
            let next = match deadline {
                Some(deadline) => {
                    match tokio::time::timeout_at(deadline, tasks.join_next()).await {
                        Ok(next) => next,
                        Err(_) => {
                            for &node in &pending {
                                self.mark_slow(node);
                            }
                            break;
                        }
                    }
                }
                None => tasks.join_next().await,
            };
            match next {
                Some(joined) => {
                    let (node, answer) = joined.expect("metadata task panicked");
                    pending.retain(|&other| other != node);
                    answers.push(answer);
                }
                None => break,
            }
        }
        answers
    }
}

/// The `_system` key of a namespace's policy record.
pub(crate) fn namespace_record_key(namespace: &str) -> Vec<u8> {
    format!("namespace/{namespace}").into_bytes()
}

pub(crate) fn check_namespace(namespace: &str) -> Result<()> {
    if namespace.is_empty() || namespace.len() > NAMESPACE_BYTES_MAX {
        return Err(ClientError::InvalidArgument(format!(
            "a namespace is 1..={NAMESPACE_BYTES_MAX} bytes: {namespace:?}"
        )));
    }
    Ok(())
}

/// A namespace users may write to: not the reserved `_…` ones.
pub(crate) fn check_user_namespace(namespace: &str) -> Result<()> {
    check_namespace(namespace)?;
    if namespace.starts_with('_') {
        return Err(ClientError::InvalidArgument(format!(
            "namespaces starting with `_` are reserved: {namespace:?}"
        )));
    }
    Ok(())
}

pub(crate) fn check_key(key: &[u8]) -> Result<()> {
    if key.is_empty() || key.len() > KEY_BYTES_MAX {
        return Err(ClientError::InvalidArgument(format!(
            "a key is 1..={KEY_BYTES_MAX} bytes, got {}",
            key.len()
        )));
    }
    Ok(())
}

/// Recent shard-read latencies (a bounded ring of samples) and the hedge delay computed
/// from them.
#[derive(Debug, Default)]
pub(crate) struct LatencyTracker {
    samples: Mutex<VecDeque<u32>>,
    recorded: std::sync::atomic::AtomicU64,
    /// The percentile in microseconds; 0 until enough samples.
    delay_us: std::sync::atomic::AtomicU64,
}

impl LatencyTracker {
    fn record(&self, latency: Duration, percentile: f64) {
        use std::sync::atomic::Ordering;
        let micros = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
        let mut samples = self.samples.lock().expect("latency lock");
        if samples.len() == LATENCY_SAMPLES_MAX {
            samples.pop_front();
        }
        samples.push_back(micros);
        let recorded = self.recorded.fetch_add(1, Ordering::Relaxed) + 1;
        if recorded.is_multiple_of(LATENCY_RECOMPUTE_EVERY) {
            let mut sorted: Vec<u32> = samples.iter().copied().collect();
            drop(samples);
            sorted.sort_unstable();
            let rank = ((sorted.len() - 1) as f64 * percentile).round() as usize;
            self.delay_us
                .store(u64::from(sorted[rank]).max(1), Ordering::Relaxed);
        }
    }

    fn hedge_delay(&self) -> Option<Duration> {
        match self.delay_us.load(std::sync::atomic::Ordering::Relaxed) {
            0 => None,
            micros => Some(Duration::from_micros(micros)),
        }
    }
}
