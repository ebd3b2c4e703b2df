//! A node's shared state and its life: open the store, serve the three planes and send
//! heartbeats and replay hints until shutdown, then drain and close the store.

use std::collections::HashSet;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use anyhow::Context;
use nabu_core::ring::NodeId;
use nabu_proto::ops::{NodeState, NodeStatusReply, Plane};
use nabu_proto::{ClusterToken, Limits};
use nabu_store::{DirState, Disk, Store};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::config::MembershipKind;
use crate::events::{EVENTS_MAX, EventLog};
use crate::gc::Touches;
use crate::hints::Hints;
use crate::liveness::{self, Liveness};
use crate::membership::Membership;
use crate::meta::MetaStore;
use crate::metrics::{Metrics, Snapshot};
use crate::records::is_shard_key;
use crate::server::PlaneListener;
use crate::shards::Shards;
use crate::{Listeners, NodeConfig, http, maintenance, repair, scrub, server};

/// Everything the planes share. One per node, behind an `Arc`.
#[derive(Debug)]
pub struct Node {
    /// The validated config.
    pub config: NodeConfig,
    /// This node's id.
    pub id: NodeId,
    /// The member list and its rings (swapped whole when a newer list arrives).
    pub membership: Membership,
    /// The cluster token every HELLO must carry.
    pub token: ClusterToken,
    /// The data and peer planes' limits.
    pub limits: Limits,
    /// The chunk store.
    pub store: Arc<Store>,
    /// Shard ops.
    pub shards: Shards,
    /// Key-record and manifest ops.
    pub meta: MetaStore,
    /// Hints kept for the replay job.
    pub hints: Hints,
    /// Recent write times, so a garbage-collection sweep spares writes in flight.
    pub touches: Touches,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Member states.
    pub liveness: Liveness,
    /// When the node started.
    pub started: Instant,
    /// Whether the listeners are serving (for `/readyz`).
    pub serving: AtomicBool,
    /// Permits, one per byte, for streamed request bodies being collected
    /// (`request_bodies_bytes_max`).
    pub body_budget: Arc<Semaphore>,
    /// The KV pool (the memory tier of `kv` namespaces).
    pub kv: crate::kv::KvPool,
    /// A ring-aware client of the cluster: forwards KV keys to their owners (RESP gateway,
    /// KV_PREFIX_LOOKUP fan-out).
    pub cluster: nabu_client::Client,
    /// The RESP gateway's counters.
    pub resp_metrics: crate::resp::RespCounters,
    /// What happened, as this node saw it: members up and down, repairs, rebalances,
    /// corruption (`node.events.record(Event::…)`).
    pub events: EventLog,
    /// The dashboard's cluster-wide live view (fed while a page or script listens).
    pub dashboard: crate::dashboard::Hub,
    /// More `/metrics` families from beside the node (the S3 gateway).
    pub(crate) metrics_sources: crate::MetricsSources,
}

impl Node {
    /// The cache tiers' view (reads the store's figures).
    pub fn tiers_view(&self) -> crate::tier::TiersView {
        let shards = self.metrics.shards.load(Ordering::Relaxed).max(0) as u64;
        let live_bytes = self.store.stats().live_bytes;
        self.shards.tiers().view(live_bytes, shards)
    }

    /// The NODE_STATUS reply (reads statvfs: call off the async threads).
    pub fn status(&self) -> NodeStatusReply {
        let stats = self.store.stats();
        let writable = stats.dirs.iter().any(|dir| dir.state == DirState::Serving);
        let connections = self.metrics.data.connections_open.load(Ordering::Relaxed)
            + self.metrics.peer.connections_open.load(Ordering::Relaxed);
        NodeStatusReply {
            node_id: self.id,
            state: if writable {
                NodeState::Up
            } else {
                NodeState::ReadOnly
            },
            ring_epoch: self.membership.epoch(),
            uptime_s: self.started.elapsed().as_secs(),
            shards: self.metrics.shards.load(Ordering::Relaxed).max(0) as u64,
            bytes_used: stats.live_bytes + stats.dead_bytes,
            bytes_capacity: capacity_bytes(&self.config.data_dirs),
            requests_inflight: self
                .metrics
                .requests_inflight
                .load(Ordering::Relaxed)
                .max(0) as u32,
            connections: connections.max(0) as u32,
        }
    }

    /// The gauges `/metrics` reads from elsewhere (reads statvfs: call off the async threads).
    pub fn snapshot(&self) -> Snapshot {
        let members = self.liveness.statuses();
        Snapshot {
            members: members
                .iter()
                .map(|m| (m.config.id, m.state.is_alive()))
                .collect(),
            store: Some(self.store.stats()),
            meta_entries: self.meta.len() as u64,
            hints_pending: self.hints.len() as u64,
            bytes_capacity: capacity_bytes(&self.config.data_dirs),
            uptime_s: self.started.elapsed().as_secs(),
            ring_epoch: self.membership.epoch(),
        }
    }
}

/// The total size of the filesystems holding `dirs`, each filesystem counted once.
pub fn capacity_bytes(dirs: &[impl AsRef<Path>]) -> u64 {
    let mut seen = HashSet::new();
    dirs.iter()
        .filter_map(|dir| statvfs(dir.as_ref()))
        .filter(|(fsid, _)| seen.insert(*fsid))
        .map(|(_, bytes)| bytes)
        .sum()
}

/// `(filesystem id, total bytes)` of the filesystem holding `path`.
#[allow(
    clippy::unnecessary_cast,
    reason = "statvfs field types differ between platforms"
)]
fn statvfs(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `path` is NUL-terminated and `stat` is valid for writes of one `statvfs`.
    let result = unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) };
    if result != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled `stat`.
    let stat = unsafe { stat.assume_init() };
    Some((
        stat.f_fsid as u64,
        stat.f_blocks as u64 * stat.f_frsize as u64,
    ))
}

/// Opens the store and builds the shared state.
/// What a node is built from besides its config.
pub(crate) struct Parts {
    pub(crate) disk: Arc<dyn Disk>,
    pub(crate) metrics_sources: crate::MetricsSources,
}

async fn open(config: NodeConfig, parts: Parts) -> anyhow::Result<Arc<Node>> {
    let Parts {
        disk,
        metrics_sources,
    } = parts;
    let store_config = config.store_config();
    let metrics = Arc::new(Metrics::default());
    let hints_max = config.hints_max as usize;
    let (store, meta, hints, shard_count) = nabu_client::sim::spawn_blocking(move || {
        let store = Arc::new(Store::open(store_config, disk).context("open the chunk store")?);
        let shard_count = store
            .keys()
            .context("list the chunk store's keys")?
            .iter()
            .filter(|key| is_shard_key(key))
            .count();
        let meta = MetaStore::open(Arc::clone(&store)).context("rebuild the meta index")?;
        let hints = Hints::open(Arc::clone(&store), hints_max).context("load the hints")?;
        anyhow::Ok((store, meta, hints, shard_count))
    })
    .await??;
    metrics.shards.store(shard_count as i64, Ordering::Relaxed);
    if !nabu_core::checksum::fast_kernel_in_use() {
        tracing::warn!(
            "crc-fast's CRC32C kernel disagrees with the reference on this CPU; checksumming \
             with the crc32c crate's slower one"
        );
    }
    let cxl_hardware = crate::tier::detect_cxl(Path::new("/"));
    let tiers = crate::tier::Tiers::new(&config.tiers, cxl_hardware)
        .context("map the CXL tier's region (tiers.cxl_path, tiers.cxl_bytes)")?;
    let membership = Membership::open(&config)?;
    let view = membership.view();
    let cluster = crate::kv::route::cluster_client(&config)?;
    cluster.apply_members(view.epoch, &view.entries())?;
    Ok(Arc::new(Node {
        id: NodeId(config.id),
        token: config.token()?,
        limits: config.limits(),
        shards: Shards::new(Arc::clone(&store), Arc::clone(&metrics), tiers),
        meta,
        hints,
        touches: Touches::new(config.gc_touch_entries_max as usize),
        store,
        metrics,
        liveness: Liveness::new(
            config.id,
            view.members.clone(),
            Duration::from_millis(config.heartbeat_interval_ms) * 2,
            Duration::from_millis(config.down_after_ms),
        ),
        membership,
        started: Instant::now(),
        serving: AtomicBool::new(false),
        body_budget: Arc::new(Semaphore::new(config.request_bodies_bytes_max as usize)),
        kv: crate::kv::KvPool::new(config.kv_pool_config()),
        cluster,
        resp_metrics: crate::resp::RespCounters::default(),
        events: EventLog::new(config.id, EVENTS_MAX),
        dashboard: crate::dashboard::Hub::default(),
        metrics_sources,
        config,
    }))
}

/// Runs the node until `shutdown`; see [`crate::run`].
pub(crate) async fn serve(
    config: NodeConfig,
    parts: Parts,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let span = tracing::info_span!("node", node = config.id);
    async move {
        let node = open(config, parts).await?;
        let (stop, stopped) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut planes = vec![
            (PlaneListener::tcp(listeners.data), Plane::Data),
            (PlaneListener::tcp(listeners.peer), Plane::Peer),
        ];
        let socket_path = listeners.data_unix.map(|(listener, path)| {
            planes.push((PlaneListener::Unix(listener), Plane::Data));
            path
        });
        for (listener, plane) in planes {
            let serve = server::serve_plane(Arc::clone(&node), listener, plane, stopped.clone());
            tasks.spawn(serve.in_current_span());
        }
        if let Some(resp) = listeners.resp {
            tasks.spawn(
                crate::resp::serve(Arc::clone(&node), resp, stopped.clone()).in_current_span(),
            );
        }
        tasks.spawn(
            http::serve(Arc::clone(&node), listeners.http, stopped.clone()).in_current_span(),
        );
        tasks.spawn(liveness::run(Arc::clone(&node), stopped.clone()).in_current_span());
        tasks.spawn(repair::run(Arc::clone(&node), stopped.clone()).in_current_span());
        tasks.spawn(scrub::run(Arc::clone(&node), stopped.clone()).in_current_span());
        tasks.spawn(maintenance::run(Arc::clone(&node), stopped.clone()).in_current_span());
        if node.config.membership == MembershipKind::Etcd {
            tasks.spawn(
                crate::membership::etcd::run(Arc::clone(&node), stopped.clone()).in_current_span(),
            );
        }
        node.serving.store(true, Ordering::Relaxed);
        tracing::info!(
            members = node.membership.view().members.len(),
            "node serving"
        );
        shutdown.await;
        tracing::info!("shutting down: draining requests in flight");
        node.serving.store(false, Ordering::Relaxed);
        let _ = stop.send(true);
        while let Some(result) = tasks.join_next().await {
            if let Err(error) = result {
                tracing::error!(%error, "a node task failed");
            }
        }
        close_store(node).await;
        if let Some(path) = socket_path {
            let _ = std::fs::remove_file(path);
        }
        tracing::info!("node stopped");
        Ok(())
    }
    .instrument(span)
    .await
}

/// Completes once `shutdown` turns true (or its sender is gone). Returns nothing, so no
/// lock guard of the channel is held across an `await`.
pub async fn until_stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Drops the node's store on the blocking pool (joining its writer threads), once every task
/// holding the node has ended.
async fn close_store(node: Arc<Node>) {
    let _ = nabu_client::sim::spawn_blocking(move || drop(node)).await;
}
