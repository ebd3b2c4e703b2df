//! The NabuStore storage node as a library: what `nabu serve` and each node of `nabu up` run.
//!
//! **Why a library.** The daemon takes already-bound listeners and a shutdown future
//! ([`run`]), so tests (this crate's, the client's, the binary's) start whole nodes in-process
//! on port 0 and stop them deterministically; the `nabu` binary is a thin `main` over it.
//!
//! **What a node is.** Three listeners:
//! - the client **data plane** and the **peer plane**: the binary protocol of
//!   `docs/formats/protocol.md` (one connection handler, checked against the plane the HELLO
//!   names): shard and metadata ops over the chunk store ([`nabu_store::Store`]);
//! - the **management plane**: HTTP `/healthz`, `/readyz`, `/metrics` (Prometheus text),
//!   `/api/v1/cluster` (JSON), and the live [`dashboard`] at `/` with its JSON and
//!   Server-Sent-Events API (`/api/v1/...`, `docs/api.md`);
//! - optionally the **Redis-protocol gateway** ([`resp`], `resp_addr`): RESP2/RESP3 over the
//!   in-memory KV pool ([`kv`]), each key forwarded to its owner node.
//!
//! and background jobs: **liveness**, a PING to every other member's peer plane every
//! `heartbeat_interval_ms` (a member not heard from for `down_after_ms` is down), and **hint
//! replay** (`repair`): shards that writers handed off to this node, or asked it to rebuild,
//! go to their home node once it is up again (`hints`: HINT_PUT, kept durably), and the
//! **scrubber** (`scrub`), which rereads every record at `scrub_bytes_per_s` and rebuilds
//! damaged shards from the other members. One node also coordinates **maintenance**
//! (`maintenance`): rebalancing after a membership change, re-protection once a member has
//! been lost for `repair_after_ms`.
//! What happens to the cluster (members up and down, repairs, corruption) goes to a bounded
//! in-memory [`events`] log.
//!
//! **Invariants.** No input from a socket makes the node panic; every queue, table and buffer
//! has a named bound (`connections_max`, `inflight_max`, the protocol's frame limits,
//! [`RESPONSE_QUEUE_FRAMES_MAX`]); a byte that fails its checksum is never served (the
//! request gets CORRUPT and the shard is counted and logged once).

mod config;
mod connection;
pub mod dashboard;
pub mod events;
mod gc;
mod handler;
mod hints;
mod http;
/// The minimal management-plane GET lives in the client (clients read `/api/v1/cluster`).
pub use nabu_client::http_get;
pub mod kv;
mod liveness;
mod maintenance;
mod membership;
mod meta;
mod metrics;
mod node;
mod peer;
mod records;
mod repair;
pub mod resp;
mod scrub;
mod server;
mod shards;
pub mod testing;
pub mod tier;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use nabu_store::{Disk, RealDisk};
use tokio::net::{TcpListener, UnixListener};

pub use config::{
    ConfigError, DATA_SOCKET_PATH_BYTES_MAX, DirectIoOption, MemberConfig, MembershipKind,
    NodeConfig, REQUEST_BODY_BYTES_MAX_DEFAULT, StoreOptions, parse_duration,
};
pub use connection::RESPONSE_QUEUE_FRAMES_MAX;
pub use http::{
    ClusterView, DirView, MaintenanceView, MemberView, MembershipView, ScrubView, StoreView,
};
pub use liveness::{MemberState, RECONNECT_BACKOFF_MAX};
pub use membership::etcd::EtcdMembers;
pub use membership::provider::{
    EpochMembers, ListUpdate, MemberEdit, MemberListProvider, StaticMembers,
};
pub use scrub::PassReport;

/// The listeners of a node, already bound (so tests bind port 0 and read the ports).
#[derive(Debug)]
pub struct Listeners {
    /// The client data plane.
    pub data: TcpListener,
    /// The peer plane.
    pub peer: TcpListener,
    /// The management HTTP plane.
    pub http: TcpListener,
    /// The data plane on a Unix socket, if configured, and its path (removed at shutdown).
    pub data_unix: Option<(UnixListener, PathBuf)>,
    /// The Redis-protocol gateway, if the node serves one (`resp_addr`).
    pub resp: Option<TcpListener>,
}

/// The addresses the three listeners are bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerAddrs {
    /// The client data plane.
    pub data: SocketAddr,
    /// The peer plane.
    pub peer: SocketAddr,
    /// The management HTTP plane.
    pub http: SocketAddr,
}

impl Listeners {
    /// Binds the addresses of `config` (and its `data_socket`).
    pub async fn bind(config: &NodeConfig) -> io::Result<Self> {
        let listeners = Self::bind_addrs(config.data_addr, config.peer_addr, config.http_addr);
        let mut listeners = listeners.await?;
        if let Some(path) = &config.data_socket {
            listeners = listeners.with_data_socket(path)?;
        }
        if let Some(addr) = config.resp_addr {
            listeners.resp = Some(TcpListener::bind(addr).await.map_err(|error| {
                io::Error::new(error.kind(), format!("bind resp {addr}: {error}"))
            })?);
        }
        Ok(listeners)
    }

    /// Serves the data plane on a Unix socket at `path` too, replacing a stale socket file
    /// (a file there that is not a socket is an error, never removed).
    pub fn with_data_socket(mut self, path: &Path) -> io::Result<Self> {
        use std::os::unix::fs::FileTypeExt;
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)?,
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "data_socket {}: a file that is not a socket is there",
                        path.display()
                    ),
                ));
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
        let listener = UnixListener::bind(path).map_err(|error| {
            io::Error::new(
                error.kind(),
                format!("bind data_socket {}: {error}", path.display()),
            )
        })?;
        self.data_unix = Some((listener, path.to_owned()));
        Ok(self)
    }

    /// Binds three fresh ports on 127.0.0.1 (port 0): for tests.
    pub async fn bind_loopback() -> io::Result<Self> {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Self::bind_addrs(any, any, any).await
    }

    async fn bind_addrs(data: SocketAddr, peer: SocketAddr, http: SocketAddr) -> io::Result<Self> {
        let bind = |addr: SocketAddr, plane: &'static str| async move {
            TcpListener::bind(addr).await.map_err(|error| {
                io::Error::new(error.kind(), format!("bind {plane} {addr}: {error}"))
            })
        };
        Ok(Self {
            data: bind(data, "data plane").await?,
            peer: bind(peer, "peer plane").await?,
            http: bind(http, "http").await?,
            data_unix: None,
            resp: None,
        })
    }

    /// The bound addresses.
    pub fn addrs(&self) -> io::Result<ListenerAddrs> {
        Ok(ListenerAddrs {
            data: self.data.local_addr()?,
            peer: self.peer.local_addr()?,
            http: self.http.local_addr()?,
        })
    }
}

/// Runs a node until `shutdown` completes, then stops accepting, lets requests in flight
/// finish (at most `shutdown_grace_ms`), flushes and returns. Uses the real filesystem.
pub async fn run(
    config: NodeConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    NodeBuilder::new(config).run(listeners, shutdown).await
}

/// Appends more Prometheus text to the node's `/metrics` (families of something running in
/// the node's process beside it: the S3 gateway).
pub type MetricsSource = Arc<dyn Fn(&mut String) + Send + Sync>;

/// Builds a node with non-default parts: a [`Disk`] other than [`RealDisk`] (tests inject
/// `nabu_store::FaultDisk`), more metrics for `/metrics`.
#[derive(Debug)]
pub struct NodeBuilder {
    config: NodeConfig,
    disk: Arc<dyn Disk>,
    metrics_sources: MetricsSources,
}

/// The [`MetricsSource`]s a node renders after its own families.
#[derive(Clone, Default)]
pub(crate) struct MetricsSources(pub(crate) Vec<MetricsSource>);

impl std::fmt::Debug for MetricsSources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} metrics sources", self.0.len())
    }
}

impl NodeBuilder {
    /// A builder over the real filesystem.
    pub fn new(config: NodeConfig) -> Self {
        Self {
            config,
            disk: Arc::new(RealDisk::new()),
            metrics_sources: MetricsSources::default(),
        }
    }

    /// Adds `source`'s families to `/metrics`, after the node's own.
    pub fn metrics_source(mut self, source: MetricsSource) -> Self {
        self.metrics_sources.0.push(source);
        self
    }

    /// Uses `disk` for the chunk store.
    pub fn disk(mut self, disk: Arc<dyn Disk>) -> Self {
        self.disk = disk;
        self
    }

    /// Runs the node; see [`run`].
    pub async fn run(
        self,
        listeners: Listeners,
        shutdown: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        self.config.validate().context("validate the node config")?;
        let parts = node::Parts {
            disk: self.disk,
            metrics_sources: self.metrics_sources,
        };
        node::serve(self.config, parts, listeners, shutdown).await
    }
}
