//! The management plane: health, readiness, Prometheus metrics and the cluster view.
//!
//! `/healthz` says the process answers; `/readyz` says the store is open and the listeners
//! serve (it turns 503 as shutdown begins, so a load balancer drains the node first);
//! `/metrics` is the Prometheus text format; `/api/v1/cluster` is JSON ([`ClusterView`],
//! public so that `nabu status` and the client parse the same types the node writes). The
//! dashboard page and the rest of `/api/v1` are [`crate::dashboard`]'s routes, merged here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::MembershipKind;
use crate::liveness::MemberState;
use crate::node::{Node, capacity_bytes, until_stopped};

/// `/api/v1/cluster`: this node and the members as it sees them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterView {
    /// This node's id.
    pub node_id: u32,
    /// The ring epoch of the member list.
    pub ring_epoch: u64,
    /// This node's zone.
    pub zone: String,
    /// Seconds since this node started.
    pub uptime_s: u64,
    /// Every member, this node included, in member-list order.
    pub members: Vec<MemberView>,
    /// This node's store.
    pub store: StoreView,
    /// This node's scrubber.
    #[serde(default)]
    pub scrub: ScrubView,
    /// Maintenance this node coordinated (the lowest-id member that is up does).
    #[serde(default)]
    pub maintenance: MaintenanceView,
    /// This node's cache tiers (DRAM, CXL, NVMe) and the CXL memory it found.
    #[serde(default)]
    pub tiers: crate::tier::TiersView,
    /// Where the member list lives and whether this node follows it now.
    #[serde(default)]
    pub membership: MembershipView,
}

/// The membership provider in [`ClusterView`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipView {
    /// `static` or `etcd`.
    pub kind: String,
    /// etcd's endpoints (etcd only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub etcd_endpoints: Vec<String>,
    /// The cluster's key prefix in etcd (etcd only).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub etcd_prefix: String,
    /// Whether the node is registered in etcd and watching the list now (etcd only; while
    /// false it serves on the last list it applied).
    #[serde(default)]
    pub etcd_connected: bool,
}

/// Rebalancing and re-protection in [`ClusterView`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceView {
    /// Whether this node runs a maintenance pass now.
    pub running: bool,
    /// Passes it ran since start.
    pub passes: u64,
    /// Shards it moved to their placement after membership changes.
    pub shards_moved: u64,
    /// Bytes of those shards.
    pub bytes_moved: u64,
    /// Stripes it wrote back to full redundancy after members were lost.
    pub stripes_repaired: u64,
    /// Shards the running rebalance still has to move (counted before it started, less
    /// those moved since; 0 when idle).
    #[serde(default)]
    pub shards_pending: u64,
    /// Bytes of those shards: what is left to move.
    #[serde(default)]
    pub bytes_pending: u64,
    /// Degraded stripes the running re-protection still has to write back.
    #[serde(default)]
    pub stripes_pending: u64,
    /// Members unheard for `repair_after_ms`, as this node sees them.
    pub members_lost: u64,
}

/// The scrubber in [`ClusterView`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScrubView {
    /// Whether scrubbing is on (`scrub_bytes_per_s` > 0).
    pub enabled: bool,
    /// Whether a pass runs now.
    pub running: bool,
    /// Passes finished since start.
    pub passes: u64,
    /// Damaged records found since start.
    pub corrupt_found: u64,
    /// Damaged shards rebuilt since start.
    pub repaired: u64,
    /// The last finished pass.
    pub last_pass: Option<crate::scrub::PassReport>,
}

/// One member in [`ClusterView`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    /// Its node id.
    pub id: u32,
    /// Its zone.
    pub zone: String,
    /// Its ring weight.
    pub weight: u32,
    /// Its data plane address.
    pub data_addr: SocketAddr,
    /// Its peer plane address.
    pub peer_addr: SocketAddr,
    /// Its management address.
    pub http_addr: SocketAddr,
    /// Up, suspect (missed heartbeats) or down, as this node's heartbeats see it.
    pub state: MemberState,
    /// Milliseconds since it last answered a heartbeat (`null`: never).
    pub last_heard_ms_ago: Option<u64>,
}

/// This node's store in [`ClusterView`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreView {
    /// Shards held.
    pub shards: u64,
    /// Key records and manifests held (tombstones included).
    pub meta_entries: u64,
    /// Hints kept: shards to move home or rebuild once their node is up.
    #[serde(default)]
    pub hints_pending: u64,
    /// Bytes of records on disk, garbage not yet compacted included.
    pub bytes_used: u64,
    /// Bytes the data dirs' filesystems hold.
    pub bytes_capacity: u64,
    /// `fdatasync` calls since start.
    pub fdatasyncs: u64,
    /// Per data dir: path and state (`serving`, `poisoned: …`, `failed: …`).
    pub dirs: Vec<DirView>,
}

/// One data dir in [`StoreView`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirView {
    /// The directory.
    pub path: String,
    /// `serving`, or why not.
    pub state: String,
}

/// Serves the management plane on `listener` until `shutdown` turns true.
pub async fn serve(node: Arc<Node>, listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
    let router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/cluster", get(cluster))
        .with_state(Arc::clone(&node))
        .merge(crate::dashboard::routes(node, shutdown.clone()));
    let stopped = async move {
        until_stopped(&mut shutdown).await;
    };
    if let Err(error) = axum::serve(listener, router)
        .with_graceful_shutdown(stopped)
        .await
    {
        tracing::error!(%error, "the management listener failed");
    }
}

async fn readyz(State(node): State<Arc<Node>>) -> Response {
    if node.serving.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn metrics(State(node): State<Arc<Node>>) -> Response {
    let rendered = nabu_client::sim::spawn_blocking(move || {
        let mut text = node.metrics.render(&node.snapshot());
        crate::kv::render_metrics(&node, &mut text);
        crate::tier::render_metrics(&node.tiers_view(), &mut text);
        for source in &node.metrics_sources.0 {
            source(&mut text);
        }
        text
    })
    .await;
    match rendered {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn cluster(State(node): State<Arc<Node>>) -> Response {
    match nabu_client::sim::spawn_blocking(move || cluster_view(&node)).await {
        Ok(view) => Json(view).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// The cluster view (reads statvfs: call off the async threads).
fn maintenance_view(node: &Node) -> MaintenanceView {
    let metrics = &node.metrics;
    let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
    MaintenanceView {
        running: load(&metrics.maintenance_running) > 0,
        passes: load(&metrics.maintenance_passes_total),
        shards_moved: load(&metrics.rebalance_shards_moved_total),
        bytes_moved: load(&metrics.rebalance_bytes_moved_total),
        stripes_repaired: load(&metrics.reprotect_stripes_repaired_total),
        shards_pending: load(&metrics.rebalance_shards_pending),
        bytes_pending: load(&metrics.rebalance_bytes_pending),
        stripes_pending: load(&metrics.reprotect_stripes_pending),
        members_lost: load(&metrics.members_lost),
    }
}

fn scrub_view(node: &Node) -> ScrubView {
    let counters = &node.metrics.scrub;
    ScrubView {
        enabled: node.config.scrub_bytes_per_s > 0,
        running: counters.running.load(Ordering::Relaxed),
        passes: counters.passes_total.load(Ordering::Relaxed),
        corrupt_found: counters.corrupt_found_total.load(Ordering::Relaxed),
        repaired: counters.repaired_total.load(Ordering::Relaxed),
        last_pass: counters.last_report(),
    }
}

fn cluster_view(node: &Node) -> ClusterView {
    let members = node
        .liveness
        .statuses()
        .into_iter()
        .map(|status| MemberView {
            id: status.config.id,
            zone: status.config.zone,
            weight: status.config.weight,
            data_addr: status.config.data_addr,
            peer_addr: status.config.peer_addr,
            http_addr: status.config.http_addr,
            state: status.state,
            last_heard_ms_ago: status.last_heard_ms_ago,
        })
        .collect();
    let stats = node.store.stats();
    let dirs = stats
        .dirs
        .iter()
        .map(|dir| DirView {
            path: dir.path.display().to_string(),
            state: match &dir.state {
                nabu_store::DirState::Serving => "serving".to_owned(),
                nabu_store::DirState::Poisoned { reason } => format!("poisoned: {reason}"),
                nabu_store::DirState::Failed { reason } => format!("failed: {reason}"),
            },
        })
        .collect();
    ClusterView {
        node_id: node.id.0,
        ring_epoch: node.membership.epoch(),
        zone: node.config.zone.clone(),
        uptime_s: node.started.elapsed().as_secs(),
        members,
        store: StoreView {
            shards: node.metrics.shards.load(Ordering::Relaxed).max(0) as u64,
            meta_entries: node.meta.len() as u64,
            hints_pending: node.hints.len() as u64,
            bytes_used: stats.live_bytes + stats.dead_bytes,
            bytes_capacity: capacity_bytes(&node.config.data_dirs),
            fdatasyncs: stats.fdatasyncs,
            dirs,
        },
        scrub: scrub_view(node),
        maintenance: maintenance_view(node),
        tiers: node.tiers_view(),
        membership: MembershipView {
            kind: node.config.membership.name().to_owned(),
            etcd_endpoints: match node.config.membership {
                MembershipKind::Etcd => node.config.etcd_endpoints.clone(),
                MembershipKind::Static => Vec::new(),
            },
            etcd_prefix: match node.config.membership {
                MembershipKind::Etcd => node.config.etcd_prefix.clone(),
                MembershipKind::Static => String::new(),
            },
            etcd_connected: node.metrics.etcd_connected.load(Ordering::Relaxed) == 1,
        },
    }
}
