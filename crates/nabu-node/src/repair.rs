//! The hint-replay job: moves handed-off shards home and rebuilds missing ones.
//!
//! Every `hint_replay_interval_ms` the job takes the hints ([`crate::hints`]) whose home its
//! heartbeats see up and that are not waiting out a backoff, and replays up to
//! `hint_replay_concurrency` of them at once, sending at most `hint_replay_bytes_per_s`:
//!
//! - **handoff**: SHARD_PUT this node's copy to the home over the peer plane; once the home
//!   has acknowledged it durable, delete the local copy, then the hint;
//! - **repair**: if the home does not hold the shard yet, fetch K shards of the stripe (or one
//!   whole copy) from the members with SHARD_GET, rebuild the shard with the stripe's codec,
//!   check it against the hint's `shard_crc`, SHARD_PUT it to the home, then drop the hint.
//!
//! **Invariants.** Nothing is deleted before the home confirms durability; a failed replay
//! keeps its hint and is retried with exponential backoff (capped at
//! `hint_retry_backoff_max_ms`); a home that stays down keeps the hint forever. Replays are
//! idempotent: a home that already holds the shard answers `already held`. A home holding
//! another shard of the stripe (`CONFLICT`) ends the hint; the local copy stays (readers
//! still find it on the ring walk).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use nabu_client::Pacer;
use nabu_core::AlignedBuf;
use nabu_core::ec::codec_for_id;
use nabu_core::id::StripeId;
use nabu_core::ring::NodeId;
use nabu_proto::ErrorCode;
use nabu_proto::ops::{HintKind, ShardGet, ShardInfo, ShardLayout, ShardPut, ShardStat};
use nabu_proto::{Meta, Response};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout};
use tracing::Instrument;

use crate::hints::Hint;
use crate::node::{Node, until_stopped};
use crate::peer::{PeerConnection, PeerError};
use crate::shards::Owned;

/// The longest one peer request of a replay may take (a shard of a few MiB takes
/// milliseconds; a stuck peer must not hold a replay slot forever).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// What a replay did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Replayed {
    /// A handed-off shard of this many bytes is home and gone from here.
    Moved(u64),
    /// A missing shard of this many bytes was rebuilt on its home.
    Repaired(u64),
    /// Nothing to move: the hint is dropped.
    Dropped(&'static str),
}

/// When a failed hint may be tried again.
#[derive(Debug, Clone, Copy)]
struct Retry {
    at: Instant,
    delay: Duration,
}

/// Replays hints until `shutdown` turns true.
pub async fn run(node: Arc<Node>, mut shutdown: watch::Receiver<bool>) {
    let interval = Duration::from_millis(node.config.hint_replay_interval_ms);
    let pacer = Arc::new(Pacer::new(node.config.hint_replay_bytes_per_s));
    let mut retries: HashMap<(StripeId, u32), Retry> = HashMap::new();
    loop {
        tokio::select! {
            biased;
            () = tokio::time::sleep(interval) => {}
            () = until_stopped(&mut shutdown) => return,
        }
        tokio::select! {
            biased;
            () = replay_round(&node, &pacer, &mut retries) => {}
            () = until_stopped(&mut shutdown) => return,
        }
    }
}

/// Replays every hint that is due, `hint_replay_concurrency` at a time.
async fn replay_round(
    node: &Arc<Node>,
    pacer: &Arc<Pacer>,
    retries: &mut HashMap<(StripeId, u32), Retry>,
) {
    let now = Instant::now();
    retries.retain(|(stripe_id, home), _| node.hints.contains(stripe_id, *home));
    let due: Vec<Hint> = node
        .hints
        .all()
        .into_iter()
        .filter(|hint| node.liveness.is_up(hint.home))
        .filter(|hint| {
            retries
                .get(&(hint.stripe_id, hint.home))
                .is_none_or(|retry| retry.at <= now)
        })
        .collect();
    let concurrency = node.config.hint_replay_concurrency as usize;
    let mut tasks = JoinSet::new();
    for hint in due {
        while tasks.len() >= concurrency {
            settle(node, retries, tasks.join_next().await);
        }
        let span = tracing::debug_span!("hint", stripe = %hint.stripe_id, home = hint.home, kind = ?hint.kind);
        let (node, pacer) = (Arc::clone(node), Arc::clone(pacer));
        tasks.spawn(async move { (hint, replay(&node, &pacer, &hint).await) }.instrument(span));
    }
    while let Some(joined) = tasks.join_next().await {
        settle(node, retries, Some(joined));
    }
}

type Joined = Result<(Hint, anyhow::Result<Replayed>), tokio::task::JoinError>;

/// Counts a finished replay, or schedules its retry.
fn settle(node: &Node, retries: &mut HashMap<(StripeId, u32), Retry>, joined: Option<Joined>) {
    let Some(joined) = joined else { return };
    let (hint, result) = match joined {
        Ok(done) => done,
        Err(error) => {
            tracing::error!(%error, "a hint replay task panicked");
            return;
        }
    };
    let address = (hint.stripe_id, hint.home);
    let metrics = &node.metrics;
    match result {
        Ok(Replayed::Moved(bytes)) => {
            metrics.hints_replayed_total.fetch_add(1, Ordering::Relaxed);
            metrics
                .hint_bytes_moved_total
                .fetch_add(bytes, Ordering::Relaxed);
            retries.remove(&address);
        }
        Ok(Replayed::Repaired(bytes)) => {
            metrics
                .shards_repaired_total
                .fetch_add(1, Ordering::Relaxed);
            metrics
                .hint_bytes_moved_total
                .fetch_add(bytes, Ordering::Relaxed);
            retries.remove(&address);
        }
        Ok(Replayed::Dropped(reason)) => {
            tracing::info!(stripe = %hint.stripe_id, home = hint.home, reason, "hint ended without a transfer");
            metrics.hints_dropped_total.fetch_add(1, Ordering::Relaxed);
            retries.remove(&address);
        }
        Err(error) => {
            let first = Duration::from_millis(node.config.hint_replay_interval_ms);
            let max = Duration::from_millis(node.config.hint_retry_backoff_max_ms);
            let delay = retries
                .get(&address)
                .map_or(first, |retry| (retry.delay * 2).min(max));
            tracing::debug!(stripe = %hint.stripe_id, home = hint.home, error = format!("{error:#}"), ?delay, "hint replay failed; will retry");
            retries.insert(
                address,
                Retry {
                    at: Instant::now() + delay,
                    delay,
                },
            );
        }
    }
}

/// Replays one hint.
async fn replay(node: &Arc<Node>, pacer: &Pacer, hint: &Hint) -> anyhow::Result<Replayed> {
    let mut home = connect(node, hint.home, "hint replay").await?;
    let replayed = match hint.kind {
        HintKind::Handoff => move_home(node, pacer, &mut home, hint).await?,
        HintKind::Repair => repair(node, pacer, &mut home, hint).await?,
    };
    let (stripe_id, home_id) = (hint.stripe_id, hint.home);
    blocking(node, move |node| op(node.hints.remove(&stripe_id, home_id))).await?;
    Ok(replayed)
}

/// Handoff: this node's copy goes home, then is deleted here.
async fn move_home(
    node: &Arc<Node>,
    pacer: &Pacer,
    home: &mut PeerConnection,
    hint: &Hint,
) -> anyhow::Result<Replayed> {
    let stripe_id = hint.stripe_id;
    let Some((info, body)) = local_shard(node, stripe_id).await? else {
        return Ok(Replayed::Dropped("the handed-off copy is gone"));
    };
    if info != hint.shard {
        return Ok(Replayed::Dropped(
            "this node holds another shard of the stripe",
        ));
    }
    let bytes = body.len() as u64;
    pacer.wait(bytes).await;
    if !put_home(node, home, stripe_id, info, body).await? {
        return Ok(Replayed::Dropped(
            "the home holds another shard of the stripe",
        ));
    }
    // The home has it durably: drop the local copy, unless this node is itself one of the
    // stripe's placement nodes (then the copy is not a handoff one; keep it).
    let placed = match info.layout {
        ShardLayout::Erasure {
            data_shards,
            parity_shards,
            ..
        } => usize::from(data_shards) + usize::from(parity_shards),
        ShardLayout::Whole => 0,
    };
    let placement = node
        .membership
        .view()
        .ring
        .placement(stripe_id.ring_point(), placed);
    if !placement.contains(&node.id) {
        blocking(node, move |node| op(node.shards.delete(&stripe_id))).await?;
    }
    Ok(Replayed::Moved(bytes))
}

/// Repair: rebuild the missing shard and put it on its home.
async fn repair(
    node: &Arc<Node>,
    pacer: &Pacer,
    home: &mut PeerConnection,
    hint: &Hint,
) -> anyhow::Result<Replayed> {
    let stat = ShardStat {
        stripe_id: hint.stripe_id,
    };
    match call(home, &stat, Bytes::new()).await {
        Ok((Response::ShardStat(reply), _)) if reply.shard == hint.shard => {
            return Ok(Replayed::Dropped("the home already holds the shard"));
        }
        Ok(_) => {
            return Ok(Replayed::Dropped(
                "the home holds another shard of the stripe",
            ));
        }
        Err(PeerError::Remote(error)) if error.code == ErrorCode::NOT_FOUND => {}
        Err(error) => return Err(error).context("SHARD_STAT the home"),
    }
    let body = rebuild(node, hint).await?;
    let bytes = body.len() as u64;
    pacer.wait(bytes).await;
    if !put_home(node, home, hint.stripe_id, hint.shard, body).await? {
        return Ok(Replayed::Dropped(
            "the home holds another shard of the stripe",
        ));
    }
    Ok(Replayed::Repaired(bytes))
}

/// SHARD_PUT to the home: `true` once durable there, `false` on CONFLICT.
async fn put_home(
    node: &Node,
    home: &mut PeerConnection,
    stripe_id: StripeId,
    shard: ShardInfo,
    body: Bytes,
) -> anyhow::Result<bool> {
    let put = ShardPut { stripe_id, shard };
    match call(home, &put, body).await {
        Ok((Response::ShardPut(_), _)) => Ok(true),
        Ok((other, _)) => anyhow::bail!("SHARD_PUT answered with {}", other.op()),
        Err(PeerError::Remote(error)) if error.code == ErrorCode::CONFLICT => {
            tracing::warn!(%stripe_id, node = node.id.0, message = error.message, "the home node holds another shard of the stripe; keeping the local copy");
            Ok(false)
        }
        Err(error) => Err(error).context("SHARD_PUT to the home"),
    }
}

/// The shard of `hint` rebuilt from the other members' shards, verified against its CRC32C.
async fn rebuild(node: &Arc<Node>, hint: &Hint) -> anyhow::Result<Bytes> {
    let wanted = hint.shard;
    let sources = rebuild_sources(node, hint.stripe_id, hint.home);
    let ShardLayout::Erasure { index, .. } = wanted.layout else {
        // A whole copy: any other copy is the shard.
        for source in sources {
            if let Some((info, body)) = fetch_shard(node, source, hint.stripe_id).await
                && info == wanted
            {
                return Ok(body);
            }
        }
        anyhow::bail!("no member holds a whole copy of the stripe");
    };
    let shards = reconstruct(node, hint.stripe_id, &wanted, &sources).await?;
    let rebuilt = Bytes::from_owner(Owned(
        shards
            .into_iter()
            .nth(usize::from(index))
            .flatten()
            .context("the codec rebuilt the shard")?,
    ));
    let crc = nabu_core::checksum::crc32c(&rebuilt);
    if crc != wanted.shard_crc || rebuilt.len() as u64 != wanted.shard_bytes {
        anyhow::bail!(
            "the rebuilt shard fails its checksum ({crc:#010x}, want {:#010x})",
            wanted.shard_crc
        );
    }
    Ok(rebuilt)
}

/// Rebuilds this node's own shard of `stripe_id` (the scrubber found it damaged) from the
/// other members and writes it back; returns the shard's index (0 for a whole copy) and bytes
/// (0 when the damaged copy was surplus and is dropped instead).
///
/// The damaged record's trailer is not trusted, so what the shard was is learnt from the
/// others: a whole copy is any other member's intact copy; an erasure shard takes the index
/// no other member holds (the lowest, should several be missing), is rebuilt with the
/// stripe's codec, and is written only if the rebuilt stripe matches its BLAKE3 id.
pub(crate) async fn rebuild_local(
    node: &Arc<Node>,
    stripe_id: StripeId,
) -> anyhow::Result<(u8, u64)> {
    let sources = rebuild_sources(node, stripe_id, node.id.0);
    let mut held = Vec::new();
    for &source in &sources {
        if let Some(info) = stat_shard(node, source, stripe_id).await {
            held.push((source, info));
        }
    }
    let Some(&(_, first)) = held.first() else {
        anyhow::bail!("no other member holds a shard of the stripe");
    };
    let (info, body) = match first.layout {
        ShardLayout::Whole => {
            let mut copy = None;
            for &(source, info) in held.iter().filter(|(_, info)| *info == first) {
                if let Some((got, body)) = fetch_shard(node, source, stripe_id).await
                    && got == info
                {
                    copy = Some((info, body));
                    break;
                }
            }
            copy.context("no member serves an intact whole copy")?
        }
        ShardLayout::Erasure {
            codec,
            data_shards,
            parity_shards,
            ..
        } => {
            let width = data_shards.saturating_add(parity_shards);
            let taken: Vec<u8> = held
                .iter()
                .filter_map(|(_, info)| match info.layout {
                    ShardLayout::Erasure { index, .. } if same_geometry(info, &first) => {
                        Some(index)
                    }
                    _ => None,
                })
                .collect();
            let Some(index) = (0..width).find(|index| !taken.contains(index)) else {
                // Every shard of the stripe lives elsewhere: this copy is surplus.
                blocking(node, move |node| op(node.shards.delete(&stripe_id))).await?;
                return Ok((0, 0));
            };
            let layout = ShardLayout::Erasure {
                codec,
                data_shards,
                parity_shards,
                index,
            };
            let wanted = ShardInfo { layout, ..first };
            let holders: Vec<NodeId> = held.iter().map(|(node, _)| *node).collect();
            let shards = reconstruct(node, stripe_id, &wanted, &holders).await?;
            let data = shards[..usize::from(data_shards)].iter().flatten();
            let mut hasher = blake3::Hasher::new();
            let mut left = wanted.stripe_bytes as usize;
            for shard in data {
                let take = left.min(shard.len());
                hasher.update(&shard[..take]);
                left -= take;
            }
            if *hasher.finalize().as_bytes() != *stripe_id.as_bytes() {
                anyhow::bail!("the stripe rebuilt from the others does not match its id");
            }
            let body = Bytes::from_owner(Owned(
                shards
                    .into_iter()
                    .nth(usize::from(index))
                    .flatten()
                    .context("the codec rebuilt the shard")?,
            ));
            let shard_crc = nabu_core::checksum::crc32c(&body);
            (
                ShardInfo {
                    shard_crc,
                    ..wanted
                },
                body,
            )
        }
    };
    let bytes = body.len() as u64;
    let index = match info.layout {
        ShardLayout::Erasure { index, .. } => index,
        ShardLayout::Whole => 0,
    };
    blocking(node, move |node| {
        op(node
            .shards
            .put(&stripe_id, &info, &body, info.shard_crc, &node.touches))
    })
    .await?;
    Ok((index, bytes))
}

/// Whether two erasure shards belong to one coding of a stripe.
fn same_geometry(a: &ShardInfo, b: &ShardInfo) -> bool {
    let geometry = |info: &ShardInfo| match info.layout {
        ShardLayout::Erasure {
            codec,
            data_shards,
            parity_shards,
            ..
        } => Some((codec, data_shards, parity_shards)),
        ShardLayout::Whole => None,
    };
    geometry(a).is_some()
        && geometry(a) == geometry(b)
        && (a.stripe_bytes, a.shard_bytes) == (b.stripe_bytes, b.shard_bytes)
}

/// The members a shard of `stripe_id` can be rebuilt from: every up member but `excluded`,
/// in ring-walk order (the stripe's own nodes first).
fn rebuild_sources(node: &Node, stripe_id: StripeId, excluded: u32) -> Vec<NodeId> {
    let view = node.membership.view();
    view.ring
        .placement(stripe_id.ring_point(), view.members.len())
        .into_iter()
        .filter(|source| source.0 != excluded)
        .filter(|source| *source == node.id || node.liveness.is_up(source.0))
        .collect()
}

/// Every shard of `wanted`'s stripe, rebuilt from K shards of the same coding fetched from
/// `sources` (any but `wanted`'s own index).
async fn reconstruct(
    node: &Arc<Node>,
    stripe_id: StripeId,
    wanted: &ShardInfo,
    sources: &[NodeId],
) -> anyhow::Result<Vec<Option<AlignedBuf>>> {
    let ShardLayout::Erasure {
        codec,
        data_shards,
        parity_shards,
        index,
    } = wanted.layout
    else {
        anyhow::bail!("a whole copy is not rebuilt from parts");
    };
    let (k, width) = (
        usize::from(data_shards),
        usize::from(data_shards) + usize::from(parity_shards),
    );
    let mut shards: Vec<Option<AlignedBuf>> = (0..width).map(|_| None).collect();
    let mut found = 0;
    for &source in sources {
        if found == k {
            break;
        }
        let Some((info, body)) = fetch_shard(node, source, stripe_id).await else {
            continue;
        };
        let ShardLayout::Erasure { index: got, .. } = info.layout else {
            continue;
        };
        let slot = usize::from(got);
        if same_geometry(&info, wanted) && got != index && shards[slot].is_none() {
            shards[slot] = Some(AlignedBuf::copy_from(&body));
            found += 1;
        }
    }
    if found < k {
        anyhow::bail!("only {found} of the {k} shards needed to rebuild are reachable");
    }
    nabu_client::sim::spawn_blocking(move || {
        let codec = codec_for_id(codec, k, width - k)?;
        codec.reconstruct(&mut shards)?;
        anyhow::Ok(shards)
    })
    .await?
}

/// `source`'s info of its shard of `stripe_id`; `None` if it has none or does not answer.
async fn stat_shard(node: &Arc<Node>, source: NodeId, stripe_id: StripeId) -> Option<ShardInfo> {
    let result = async {
        let mut peer = connect(node, source.0, "shard stat").await?;
        match call(&mut peer, &ShardStat { stripe_id }, Bytes::new()).await? {
            (Response::ShardStat(reply), _) => anyhow::Ok(reply.shard),
            (other, _) => anyhow::bail!("SHARD_STAT answered with {}", other.op()),
        }
    };
    result.await.ok()
}

/// `source`'s shard of `stripe_id`, checksum verified; `None` if it has none or fails.
async fn fetch_shard(
    node: &Arc<Node>,
    source: NodeId,
    stripe_id: StripeId,
) -> Option<(ShardInfo, Bytes)> {
    if source == node.id {
        return local_shard(node, stripe_id).await.ok().flatten();
    }
    let result = async {
        let mut peer = connect(node, source.0, "shard rebuild").await?;
        let get = ShardGet {
            stripe_id,
            range: None,
        };
        match call(&mut peer, &get, Bytes::new()).await? {
            (Response::ShardGet(reply), body)
                if reply.offset == 0
                    && body.len() as u64 == reply.shard.shard_bytes
                    && nabu_core::checksum::crc32c(&body) == reply.shard.shard_crc =>
            {
                anyhow::Ok((reply.shard, body))
            }
            _ => anyhow::bail!("a SHARD_GET reply that is not the whole, intact shard"),
        }
    };
    match result.await {
        Ok(shard) => Some(shard),
        Err(error) => {
            tracing::debug!(
                node = source.0,
                error = format!("{error:#}"),
                "no shard from this member"
            );
            None
        }
    }
}

/// This node's shard of `stripe_id`, `None` if it holds none.
async fn local_shard(
    node: &Arc<Node>,
    stripe_id: StripeId,
) -> anyhow::Result<Option<(ShardInfo, Bytes)>> {
    blocking(node, move |node| match node.shards.get(&stripe_id, None) {
        Ok(read) => Ok(Some((read.info, read.body))),
        Err(error) if error.code == ErrorCode::NOT_FOUND => Ok(None),
        Err(error) => op(Err(error)),
    })
    .await
}

/// A peer-plane connection to member `id`, within `frame_timeout_ms`.
async fn connect(node: &Node, id: u32, purpose: &str) -> anyhow::Result<PeerConnection> {
    let addr = node
        .liveness
        .peer_addr(id)
        .with_context(|| format!("node {id} is not a member"))?;
    let connect = PeerConnection::connect(addr, id, &node.token, node.id.0, purpose, node.limits);
    timeout(node.limits.frame_timeout, connect)
        .await
        .with_context(|| format!("connect to node {id}"))?
        .with_context(|| format!("connect to node {id}"))
}

/// An op's result as an `anyhow` one.
fn op<T>(result: Result<T, crate::handler::OpError>) -> anyhow::Result<T> {
    result.map_err(|error| anyhow::anyhow!("{}: {}", error.code.name(), error.message))
}

/// One request within [`REQUEST_TIMEOUT`].
async fn call<M: Meta>(
    peer: &mut PeerConnection,
    meta: &M,
    body: Bytes,
) -> Result<(Response, Bytes), PeerError> {
    let limit = REQUEST_TIMEOUT;
    match timeout(limit, peer.request(meta, body)).await {
        Ok(result) => result,
        Err(_) => Err(anyhow::anyhow!("{} took over {limit:?}", M::OP).into()),
    }
}

/// Runs a store call on the blocking pool.
async fn blocking<T: Send + 'static>(
    node: &Arc<Node>,
    call: impl FnOnce(&Node) -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let node = Arc::clone(node);
    nabu_client::sim::spawn_blocking(move || call(&node)).await?
}
