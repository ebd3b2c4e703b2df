//! Checking, and restoring, every stripe's redundancy across the cluster: `nabu scrub`, and
//! the repair a node starts once a member has been down for `repair_after`.
//!
//! **What is checked.** Every live key of every namespace (reserved `_` namespaces' records
//! too): its key record and its manifest are read (from any copy), and for each stripe of the
//! manifest every node of the stripe's walk (placement, then handoff nodes) is asked which
//! shard it holds (SHARD_STAT). A stripe is **full** when its K+M distinct shards (or its R
//! whole copies) sit on that many distinct reachable nodes, **degraded** when at least K
//! (one copy) are reachable, and **lost** below that.
//!
//! **What repair does** (`repair: true`). A degraded stripe is read (decoded from any K
//! shards, verified against its id) and written again through the writer's own path: nodes
//! that hold their shard answer "already held", each shard of an unreachable node goes to the
//! next walk node holding none of the stripe, with a handoff hint for its home (so a node
//! that comes back gets it back; one that never does is replaced by exactly the node a ring
//! without it would place). Key records and manifests are written again the same way, with
//! their own HLC timestamps (last-writer-wins makes that idempotent). Readers already look
//! along the walk, so a repaired stripe reads at full speed with one more node lost.
//!
//! Re-writing sends a degraded stripe's K+M shards, not only the missing ones; a node-side
//! rebuild that moves only the missing shards is future work.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use nabu_core::id::StripeId;
use nabu_core::policy::Durability;
use nabu_core::ring::NodeId;
use nabu_proto::ops::{LIST_LIMIT_MAX, MemberEntry, MetaTable, PutOutcome, ShardInfo, ShardLayout};
use tokio::task::JoinSet;

use crate::client::Client;
use crate::error::{ClientError, Result};
use crate::format::{KeyRecord, key_record_point, manifest_point};
use crate::pacer::Pacer;
use crate::pool::MetaValue;
use crate::read::{BlobPlan, decode_manifest};

/// How many stripes are checked at once.
const STRIPES_INFLIGHT_MAX: usize = 8;
/// Repair failures a report keeps (the count is exact).
const FAILURES_KEPT_MAX: usize = 20;

/// What a redundancy check does beyond reporting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckOptions {
    /// Write degraded stripes (and their key records and manifests) back to full redundancy.
    pub repair: bool,
    /// Move shards off nodes the current ring no longer places them on (after a membership
    /// change) to placement nodes holding none of the stripe, deleting each old copy only
    /// once its new node has it durably; key records and manifests are written again to
    /// their current placement.
    pub rebalance: bool,
    /// The most bytes per second repair and rebalancing send (stripes rewritten, shards
    /// moved); `None`: as fast as the cluster takes them.
    pub bytes_per_s: Option<u64>,
}

/// What a redundancy check found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedundancyReport {
    /// Namespaces walked.
    pub namespaces: u64,
    /// Live keys found.
    pub keys: u64,
    /// Stripes checked (a stripe shared by several keys is checked for each).
    pub stripes: u64,
    /// Stripes with all their shards on distinct reachable nodes.
    pub stripes_full: u64,
    /// Stripes readable but short of shards.
    pub stripes_degraded: u64,
    /// Stripes with fewer than K shards (one copy) reachable.
    pub stripes_lost: u64,
    /// Shards (or copies) found on nodes outside their stripe's current placement: handed
    /// off, or not moved yet after a membership change.
    pub shards_misplaced: u64,
    /// Bytes of those shards.
    pub bytes_misplaced: u64,
    /// Degraded stripes written back to full redundancy.
    pub stripes_repaired: u64,
    /// Stripe bytes read and written again by repair.
    pub bytes_repaired: u64,
    /// Key records and manifests written again by repair or rebalancing.
    pub metadata_rewritten: u64,
    /// Shards moved to the node the current ring places them on.
    pub shards_moved: u64,
    /// Bytes of those shards.
    pub bytes_moved: u64,
    /// Copies dropped from a node outside the placement once the placement held all shards.
    pub surplus_dropped: u64,
    /// Repairs that failed, and keys that could not be checked.
    pub repair_failures: u64,
    /// The first few repair failures, in words.
    pub failures: Vec<String>,
}

impl RedundancyReport {
    /// Whether every stripe checked is full.
    pub fn all_full(&self) -> bool {
        self.stripes_full == self.stripes
    }

    fn failed(&mut self, what: String) {
        self.repair_failures += 1;
        if self.failures.len() < FAILURES_KEPT_MAX {
            self.failures.push(what);
        }
    }
}

/// One stripe's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StripeState {
    Full,
    Degraded,
    Lost,
}

impl Client {
    /// Checks every stripe's redundancy, and as `options` say restores it or moves shards to
    /// their current placement (see the module docs). `progress` is called after every key.
    /// Nodes that do not answer are tolerated: their shards count as missing.
    pub async fn check_redundancy(
        &self,
        options: CheckOptions,
        mut progress: impl FnMut(&RedundancyReport),
    ) -> Result<RedundancyReport> {
        let mut report = RedundancyReport::default();
        let pacer = options.bytes_per_s.map(|rate| Arc::new(Pacer::new(rate)));
        for namespace in self.reachable_namespaces().await? {
            report.namespaces += 1;
            // Reserved namespaces (`_system`) are replicated like namespace records.
            let copies = if namespace.starts_with('_') {
                self.system_copies()
            } else {
                self.metadata_copies(self.namespace_policy(&namespace).await?)
            };
            let members = self.ring().members().len();
            let mut continuation: Option<Vec<u8>> = None;
            loop {
                let page = self
                    .list_tolerating(
                        &namespace,
                        members,
                        b"",
                        continuation.as_deref(),
                        LIST_LIMIT_MAX,
                    )
                    .await?;
                for listed in &page.keys {
                    report.keys += 1;
                    let pacer = pacer.clone();
                    // One key's trouble (its metadata unreadable for now) is reported, and the
                    // pass goes on with the others.
                    let checked = self
                        .check_key(&namespace, &listed.key, copies, options, pacer, &mut report)
                        .await;
                    if let Err(error) = checked {
                        let key = crate::error::KeyDisplay(&listed.key);
                        report.failed(format!("{namespace}/{key}: {error}"));
                    }
                    progress(&report);
                }
                match page.continuation {
                    Some(next) => continuation = Some(next),
                    None => break,
                }
            }
        }
        Ok(report)
    }

    /// Makes the member list at `epoch` the cluster's: the client takes it, then offers it
    /// (MEMBERS_PUT) to every node of it and of the list before. Returns the nodes that did
    /// not take it, and why (unreachable ones catch up from their peers when they return).
    pub async fn publish_members(
        &self,
        epoch: u64,
        members: &[MemberEntry],
    ) -> Result<Vec<(NodeId, String)>> {
        let before = self.ring();
        self.apply_members(epoch, members)?;
        let mut nodes: BTreeSet<NodeId> = members.iter().map(|member| member.id).collect();
        nodes.extend(before.members().iter().map(|member| member.id));
        let mut refused = Vec::new();
        for node in nodes {
            match self.inner.pool.members_put(node, epoch, members).await {
                Ok(reply) if reply.applied || reply.epoch == epoch => {}
                Ok(reply) => refused.push((node, format!("it is on epoch {}", reply.epoch))),
                Err(error) => refused.push((node, error.to_string())),
            }
        }
        Ok(refused)
    }

    /// Every namespace any reachable node holds metadata of.
    async fn reachable_namespaces(&self) -> Result<BTreeSet<String>> {
        let mut namespaces = BTreeSet::new();
        let mut answered = 0;
        for member in self.ring().members() {
            let mut after = String::new();
            let result: Result<()> = async {
                loop {
                    let (page, more) = self
                        .inner
                        .pool
                        .meta_namespaces(member.id, &after, LIST_LIMIT_MAX)
                        .await?;
                    if let Some(last) = page.last() {
                        after.clone_from(last);
                    }
                    namespaces.extend(page);
                    if !more {
                        return Ok(());
                    }
                }
            }
            .await;
            match result {
                Ok(()) => answered += 1,
                Err(error) => {
                    tracing::warn!(node = %member.id, %error, "node skipped by the redundancy check")
                }
            }
        }
        if answered == 0 {
            return Err(ClientError::MetadataUnavailable {
                what: "the namespace list".into(),
                detail: "no node answered".into(),
            });
        }
        Ok(namespaces)
    }

    /// One key: its key record, its manifest, its stripes.
    async fn check_key(
        &self,
        namespace: &str,
        key: &[u8],
        copies: usize,
        options: CheckOptions,
        pacer: Option<Arc<Pacer>>,
        report: &mut RedundancyReport,
    ) -> Result<()> {
        let rewrite = options.repair || options.rebalance;
        let point = key_record_point(namespace, key);
        let what = format!("key record {namespace}/{}", crate::error::KeyDisplay(key));
        let table = MetaTable::KeyRecords;
        let Some(record) = self
            .read_and_rewrite(table, namespace, key, point, copies, &what, rewrite, report)
            .await?
        else {
            return Ok(()); // deleted since it was listed
        };
        // Reserved namespaces hold other records beside key records; they name no blob.
        let Ok(key_record) = KeyRecord::decode(&record.value) else {
            return Ok(());
        };
        let blob_id = key_record.blob_id;
        let what = format!("manifest of {blob_id}");
        let (table, point) = (MetaTable::Manifests, manifest_point(&blob_id));
        let stored = self
            .read_and_rewrite(
                table,
                namespace,
                blob_id.as_bytes(),
                point,
                copies,
                &what,
                rewrite,
                report,
            )
            .await?
            .ok_or_else(|| ClientError::NotFound(what.clone()))?;
        let manifest = decode_manifest(&stored.value, blob_id, what)?;
        let plan = BlobPlan::new(manifest)?;
        let stripes = plan.manifest().stripes.len() as u64;
        let mut tasks = JoinSet::new();
        for index in 0..stripes {
            while tasks.len() >= STRIPES_INFLIGHT_MAX {
                settle(report, tasks.join_next().await);
            }
            let (client, plan, pacer) = (self.clone(), plan.clone(), pacer.clone());
            tasks.spawn(async move {
                client
                    .check_stripe(&plan, index, options, pacer.as_deref())
                    .await
            });
        }
        while !tasks.is_empty() {
            settle(report, tasks.join_next().await);
        }
        Ok(())
    }

    /// Reads a live metadata value and, with `rewrite`, writes it again to its placement
    /// with its own timestamp (last-writer-wins makes that idempotent) unless every node of
    /// the placement holds it already. `None`: not stored, or a tombstone.
    #[allow(clippy::too_many_arguments)]
    async fn read_and_rewrite(
        &self,
        table: MetaTable,
        namespace: &str,
        key: &[u8],
        point: u64,
        copies: usize,
        what: &str,
        rewrite: bool,
        report: &mut RedundancyReport,
    ) -> Result<Option<MetaValue>> {
        let (value, placed) = self
            .meta_read_placed(table, namespace, key, point, copies, what)
            .await?;
        let value = value.filter(|value| !value.deleted);
        if let Some(value) = &value
            && rewrite
            && !placed
        {
            let (timestamp, bytes) = (value.hlc_timestamp, Some(value.value.clone()));
            self.meta_write(table, namespace, key, point, copies, timestamp, bytes, what)
                .await?;
            report.metadata_rewritten += 1;
        }
        Ok(value)
    }

    /// One stripe: its state, then what `options` ask.
    async fn check_stripe(
        &self,
        plan: &BlobPlan,
        index: u64,
        options: CheckOptions,
        pacer: Option<&Pacer>,
    ) -> Checked {
        let manifest = plan.manifest();
        let layout = manifest.durability;
        let stripe_id = manifest.node_stripe_id(index as usize);
        let (state, answers) = self.stripe_state(stripe_id, layout).await;
        let placement = self
            .ring()
            .placement(stripe_id.ring_point(), layout.width());
        let (misplaced, misplaced_bytes) = answers
            .iter()
            .filter(|(node, _)| !placement.contains(node))
            .filter_map(|(_, info)| info.as_ref())
            .fold((0, 0), |(count, bytes), info| {
                (count + 1, bytes + info.shard_bytes)
            });
        let mut checked = Checked {
            state,
            misplaced,
            misplaced_bytes,
            ..Checked::default()
        };
        let what = |error: ClientError| {
            format!(
                "stripe {index} ({stripe_id}) of blob {}: {error}",
                manifest.blob_id
            )
        };
        if options.rebalance
            && let Err(error) = self
                .rebalance_stripe(stripe_id, layout, &answers, pacer, &mut checked)
                .await
        {
            checked.failure = Some(what(error));
        }
        if state == StripeState::Degraded && options.repair {
            if let Some(pacer) = pacer {
                pacer
                    .wait(plan.manifest().stripes[index as usize].stripe_bytes)
                    .await;
            }
            match self.rewrite_stripe(plan, index).await {
                Ok(bytes) => {
                    checked.state = StripeState::Full;
                    checked.repaired_bytes = bytes;
                }
                Err(error) => checked.failure = Some(what(error)),
            }
        }
        checked
    }

    /// The stripe's state by the shards found along its walk, and every reachable node's
    /// answer (`None`: holds no shard of it), in walk order.
    pub(crate) async fn stripe_state(
        &self,
        stripe_id: StripeId,
        layout: Durability,
    ) -> (StripeState, Vec<(NodeId, Option<ShardInfo>)>) {
        let width = layout.width();
        let walk = self.walk(stripe_id.ring_point(), width);
        let mut asks = JoinSet::new();
        for (position, node) in walk.into_iter().enumerate() {
            let client = self.clone();
            asks.spawn(async move {
                let answer = client.inner.pool.shard_stat(node, stripe_id).await;
                (position, node, answer)
            });
        }
        let mut answers = Vec::new();
        while let Some(joined) = asks.join_next().await {
            let (position, node, answer) = joined.expect("shard stat task panicked");
            if let Ok(info) = answer {
                answers.push((position, node, info));
            }
        }
        answers.sort_by_key(|(position, _, _)| *position);
        let answers: Vec<(NodeId, Option<ShardInfo>)> = answers
            .into_iter()
            .map(|(_, node, info)| (node, info))
            .collect();
        // A node holds one shard per stripe id, so holders are distinct nodes.
        let present = distinct_shards(answers.iter().filter_map(|(_, info)| info.as_ref()));
        let state = if present >= width {
            StripeState::Full
        } else if present >= layout.shards_needed() {
            StripeState::Degraded
        } else {
            StripeState::Lost
        };
        (state, answers)
    }

    /// Moves the stripe's shards held outside its current placement to placement nodes that
    /// hold none of it (walk order), each deleted from its old node once its new one has it
    /// durably; a copy outside the placement whose shard the placement already holds is
    /// dropped once the placement holds every shard. Where every placement node holds a
    /// shard but two of them hold the same one (a hint replay and a move can both deliver
    /// one index), the later of those two makes room for the missing shard.
    async fn rebalance_stripe(
        &self,
        stripe_id: StripeId,
        layout: Durability,
        answers: &[(NodeId, Option<ShardInfo>)],
        pacer: Option<&Pacer>,
        checked: &mut Checked,
    ) -> Result<()> {
        let width = layout.width();
        let placement = self.ring().placement(stripe_id.ring_point(), width);
        let mut placed: Vec<(NodeId, ShardInfo)> = Vec::new();
        let mut free: VecDeque<NodeId> = VecDeque::new();
        let mut outside: Vec<(NodeId, ShardInfo)> = Vec::new();
        for &(node, info) in answers {
            match (placement.contains(&node), info) {
                (true, Some(info)) => placed.push((node, info)),
                (true, None) => free.push_back(node),
                (false, Some(info)) => outside.push((node, info)),
                (false, None) => {}
            }
        }
        for (holder, info) in outside {
            let already_placed = match info.layout {
                ShardLayout::Erasure { index, .. } => placed
                    .iter()
                    .any(|(_, held)| erasure_index(held) == Some(index)),
                ShardLayout::Whole => placed.len() >= width,
            };
            if already_placed {
                if distinct_shards(placed.iter().map(|(_, held)| held)) >= width {
                    self.inner.pool.shard_delete(holder, stripe_id).await?;
                    checked.surplus_dropped += 1;
                }
                continue;
            }
            let home = match free.pop_front() {
                Some(home) => home,
                None => {
                    let Some(position) = later_duplicate(&placed) else {
                        continue;
                    };
                    // Its index stays on the other placement node that holds it.
                    let (node, _) = placed.remove(position);
                    self.inner.pool.shard_delete(node, stripe_id).await?;
                    checked.surplus_dropped += 1;
                    node
                }
            };
            if let Some(pacer) = pacer {
                pacer.wait(info.shard_bytes).await;
            }
            let (got, body) = self.inner.pool.shard_get(holder, stripe_id).await?;
            if got != info {
                continue; // changed under us; the next pass looks again
            }
            let bytes = body.len() as u64;
            // A home that already holds it was given it by another mover: not counted again.
            let stored = match self.inner.pool.shard_put(home, stripe_id, info, body).await {
                Ok(outcome) => outcome == PutOutcome::Stored,
                Err(error) if error.remote_code() == Some(nabu_proto::ErrorCode::CONFLICT) => {
                    continue; // the home took another shard of the stripe meanwhile
                }
                Err(error) => return Err(error),
            };
            self.inner.pool.shard_delete(holder, stripe_id).await?;
            placed.push((home, info));
            if stored {
                checked.moved += 1;
                checked.moved_bytes += bytes;
            }
        }
        Ok(())
    }

    /// Reads stripe `index` of `plan` and writes it again through the writer's path.
    async fn rewrite_stripe(&self, plan: &BlobPlan, index: u64) -> Result<u64> {
        let manifest = plan.manifest();
        let whole = !matches!(manifest.durability, Durability::ErasureCoded { .. });
        if whole && manifest.shard_crcs.is_empty() {
            // Version-1 manifests keep whole copies under the stripe id itself; the writer
            // now uses a derived id, so a rewrite would not be found by this manifest.
            return Err(ClientError::InvalidArgument(
                "whole copies of a version-1 manifest are not rewritten".into(),
            ));
        }
        let stripe: Bytes = self.read_stripe(plan, index).await?;
        let bytes = stripe.len() as u64;
        let written = self
            .write_stripe(index, stripe, manifest.durability, plan.codec())
            .await?;
        if !written.missing.is_empty() {
            return Err(ClientError::NotDurable {
                what: format!("stripe {index}"),
                durable: written.written,
                wanted: manifest.durability.width(),
                required: manifest.durability.width(),
                why: format!("shards {:?} found no node to take them", written.missing),
            });
        }
        Ok(bytes)
    }
}

/// The index of an erasure-coded shard; `None` for a whole copy.
fn erasure_index(info: &ShardInfo) -> Option<u8> {
    match info.layout {
        ShardLayout::Erasure { index, .. } => Some(index),
        ShardLayout::Whole => None,
    }
}

/// The position in `placed` (walk order) of the last erasure-coded shard whose index an
/// earlier entry holds too. Every mover looking at one stripe picks the same one, so two
/// movers never drop both copies of an index.
fn later_duplicate(placed: &[(NodeId, ShardInfo)]) -> Option<usize> {
    (0..placed.len()).rev().find(|&position| {
        let index = erasure_index(&placed[position].1);
        index.is_some()
            && placed[..position]
                .iter()
                .any(|(_, held)| erasure_index(held) == index)
    })
}

/// What checking one stripe found and did.
#[derive(Debug)]
struct Checked {
    state: StripeState,
    misplaced: u64,
    misplaced_bytes: u64,
    repaired_bytes: u64,
    moved: u64,
    moved_bytes: u64,
    surplus_dropped: u64,
    failure: Option<String>,
}

impl Default for Checked {
    fn default() -> Self {
        Self {
            state: StripeState::Lost,
            misplaced: 0,
            misplaced_bytes: 0,
            repaired_bytes: 0,
            moved: 0,
            moved_bytes: 0,
            surplus_dropped: 0,
            failure: None,
        }
    }
}

/// How many distinct shards `infos` hold (erasure indexes; whole copies each count).
fn distinct_shards<'a>(infos: impl Iterator<Item = &'a ShardInfo>) -> usize {
    let (mut indexes, mut copies) = (BTreeSet::new(), 0);
    for info in infos {
        match info.layout {
            ShardLayout::Erasure { index, .. } => {
                indexes.insert(index);
            }
            ShardLayout::Whole => copies += 1,
        }
    }
    indexes.len() + copies
}

/// Counts one checked stripe.
fn settle(
    report: &mut RedundancyReport,
    joined: Option<std::result::Result<Checked, tokio::task::JoinError>>,
) {
    let Some(joined) = joined else { return };
    let checked = joined.expect("stripe check task panicked");
    report.stripes += 1;
    match checked.state {
        StripeState::Full => report.stripes_full += 1,
        StripeState::Degraded => report.stripes_degraded += 1,
        StripeState::Lost => report.stripes_lost += 1,
    }
    if checked.repaired_bytes > 0 {
        report.stripes_repaired += 1;
        report.bytes_repaired += checked.repaired_bytes;
    }
    report.shards_misplaced += checked.misplaced;
    report.bytes_misplaced += checked.misplaced_bytes;
    report.shards_moved += checked.moved;
    report.bytes_moved += checked.moved_bytes;
    report.surplus_dropped += checked.surplus_dropped;
    if let Some(failure) = checked.failure {
        report.failed(failure);
    }
}
