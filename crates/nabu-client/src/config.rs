//! What a client is told: the cluster (members, addresses, token) and its own knobs.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use nabu_core::policy::Durability;
use nabu_core::ring::{Member, NodeId};
use nabu_core::stripe::STRIPE_BYTES_DEFAULT;
use nabu_proto::ClusterToken;

use crate::error::{ClientError, Result};
use crate::format::STRIPE_BYTES_MAX;

/// Where a node's data plane listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `host:port` over TCP (a name is resolved at each connect).
    Tcp(String),
    /// A Unix stream socket (clients on the node's host). Text form `unix:/path`.
    Unix(PathBuf),
}

impl FromStr for Endpoint {
    type Err = ClientError;

    fn from_str(text: &str) -> Result<Self> {
        let text = text.trim();
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(ClientError::InvalidArgument(
                    "a unix endpoint names a socket path: unix:/path".into(),
                ));
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        match text.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(Endpoint::Tcp(text.to_owned()))
            }
            _ => Err(ClientError::InvalidArgument(format!(
                "endpoint {text:?} is neither host:port nor unix:/path"
            ))),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp(address) => f.write_str(address),
            Endpoint::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl From<std::net::SocketAddr> for Endpoint {
    fn from(address: std::net::SocketAddr) -> Self {
        Endpoint::Tcp(address.to_string())
    }
}

/// One member of the cluster as a client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberAddr {
    /// The node's id.
    pub id: NodeId,
    /// Its failure domain (placement spreads stripes over zones first).
    pub zone: String,
    /// Relative capacity (the ring gives it `150 × weight` virtual nodes).
    pub weight: u32,
    /// Its client data plane.
    pub data_addr: Endpoint,
}

impl MemberAddr {
    /// A member of weight 1 in zone `zone`.
    pub fn new(id: u32, zone: impl Into<String>, data_addr: impl Into<Endpoint>) -> Self {
        Self {
            id: NodeId(id),
            zone: zone.into(),
            weight: 1,
            data_addr: data_addr.into(),
        }
    }

    pub(crate) fn ring_member(&self) -> Member {
        Member {
            id: self.id,
            zone: self.zone.clone(),
            weight: self.weight,
        }
    }
}

/// The cluster: its token and members (what `cluster.toml` holds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterMap {
    /// The cluster token every HELLO presents.
    pub token: ClusterToken,
    /// Every member, with its data-plane address.
    pub members: Vec<MemberAddr>,
    /// The ring epoch of this member list (0 for a static `nabu up` cluster).
    pub ring_epoch: u64,
}

impl ClusterMap {
    /// A map at ring epoch 0.
    pub fn new(token: ClusterToken, members: Vec<MemberAddr>) -> Self {
        Self {
            token,
            members,
            ring_epoch: 0,
        }
    }
}

/// Where a cluster's authoritative member list lives (`membership` in `node.toml` and
/// `cluster.toml`; the node re-exports it as `nabu_node::MembershipKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MembershipKind {
    /// The list of the config, changed by `nabu node add|drain|remove` pushing a new list to
    /// every member (MEMBERS_PUT); members catch up from each other.
    #[default]
    Static,
    /// The list and its ring epoch live in etcd (the epoch is the list key's revision).
    Etcd,
}

impl MembershipKind {
    /// `static` or `etcd`, as configs spell it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Static => "static",
            Self::Etcd => "etcd",
        }
    }
}

/// When a read asks for more shards than it needs, because some are slow.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Hedge {
    /// After a fixed delay.
    Fixed(Duration),
    /// After the client's recent shard-read latency at `percentile` (0..1, e.g. 0.99),
    /// clamped to `min..=max` (`max` until enough reads were measured).
    Percentile {
        /// Which latency percentile.
        percentile: f64,
        /// The shortest hedge delay.
        min: Duration,
        /// The longest hedge delay.
        max: Duration,
    },
    /// Never (ask for parity only when a data shard fails).
    Never,
}

/// A client's knobs; [`Default`] gives values that suit a local cluster.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The stripe cut size. Default 4 MiB (1 MiB shards under `ec:4+2`).
    pub stripe_bytes: usize,
    /// Objects smaller than this in an `ec:K+M` namespace are stored as `M+1` whole copies
    /// instead of K+M padded shards. Default 256 KiB; at most `stripe_bytes`.
    pub small_object_bytes: u64,
    /// Stripes one put or get has in flight at once: bounds memory to about
    /// `stripes_inflight_max × stripe_bytes × (K+M)/K` per call. Default 4.
    pub stripes_inflight_max: usize,
    /// Requests in flight per node connection (also capped by the node's HELLO reply).
    /// Default 64.
    pub requests_inflight_per_connection_max: usize,
    /// Connecting plus HELLO. Default 2 s.
    pub connect_timeout: Duration,
    /// One request's round trip, body included. Default 30 s.
    pub request_timeout: Duration,
    /// After a failed connect, requests to that node fail at once for this long (so a dead
    /// node costs one refused connect per interval, not one per shard). Default 1 s.
    pub node_down_retry_after: Duration,
    /// When reads hedge. Default: the p99 of recent shard reads, within 5 ms..=500 ms.
    pub hedge: Hedge,
    /// Timestamps seen in replies are followed at most this far ahead of the local clock.
    /// Default 60 s.
    pub max_clock_skew: Duration,
    /// Nodes beyond a stripe's placement that writes may hand shards off to and reads
    /// search (the ring walk continues this far). Default 6.
    pub handoff_nodes_max: usize,
    /// How often the client asks a few members for a newer member list (`None`: never; it
    /// can still [`crate::Client::refresh_members`] itself). Default 2 s.
    pub members_refresh: Option<Duration>,
    /// Namespace policies known without asking the cluster; [`Default`] leaves it empty and
    /// the client fills in `default` and `kv` from the cluster size.
    pub namespaces: BTreeMap<String, Durability>,
    /// The name this client gives in HELLO (for node logs).
    pub client_name: String,
    /// Check every stripe read against its BLAKE3 id, even when each shard matched the
    /// writer's CRC32C recorded in the manifest (about a core per 2–3 GB/s). Default false:
    /// stripes rebuilt from parity, and stripes of manifests without shard checksums
    /// (version 1), are always checked.
    pub verify_stripe_ids: bool,
    /// The longest a PUT may take from its first shard to its key record; a slower PUT fails
    /// (its stripes stay unreferenced and are collected) rather than commit. Garbage
    /// collection relies on it: its grace period is at least twice this. Default 1 h.
    pub put_deadline: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            stripe_bytes: STRIPE_BYTES_DEFAULT,
            small_object_bytes: 256 << 10,
            stripes_inflight_max: 4,
            requests_inflight_per_connection_max: 64,
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(30),
            node_down_retry_after: Duration::from_secs(1),
            hedge: Hedge::Percentile {
                percentile: 0.99,
                min: Duration::from_millis(5),
                max: Duration::from_millis(500),
            },
            max_clock_skew: Duration::from_secs(60),
            handoff_nodes_max: 6,
            members_refresh: Some(Duration::from_secs(2)),
            namespaces: BTreeMap::new(),
            client_name: concat!("nabu-client/", env!("CARGO_PKG_VERSION")).to_owned(),
            put_deadline: Duration::from_secs(3600),
            verify_stripe_ids: false,
        }
    }
}

impl ClientConfig {
    /// Refuses settings that cannot work.
    pub(crate) fn check(&self) -> Result<()> {
        let refuse = |reason: &str| Err(ClientError::InvalidArgument(reason.to_owned()));
        if self.stripe_bytes == 0 || self.stripe_bytes as u64 > STRIPE_BYTES_MAX {
            return refuse("stripe_bytes must be between 1 byte and 64 MiB");
        }
        if self.small_object_bytes > self.stripe_bytes as u64 {
            return refuse("small_object_bytes must not exceed stripe_bytes");
        }
        if self.stripes_inflight_max == 0 || self.requests_inflight_per_connection_max == 0 {
            return refuse("in-flight bounds must be at least 1");
        }
        if let Hedge::Percentile { percentile, .. } = self.hedge
            && !(0.0..=1.0).contains(&percentile)
        {
            return refuse("the hedge percentile lies in 0..=1");
        }
        Ok(())
    }
}

/// The namespaces every cluster has from the start: `default` is `ec:4+2` (or
/// `replicas:min(3, n)` below six nodes) and `kv` is `replicas:1`.
pub fn builtin_namespaces(nodes: usize) -> BTreeMap<String, Durability> {
    let default = if nodes >= Durability::EC_4_2.width() {
        Durability::EC_4_2
    } else {
        Durability::Replicas {
            copies: nodes.clamp(1, 3) as u8,
        }
    };
    BTreeMap::from([
        ("default".to_owned(), default),
        ("kv".to_owned(), Durability::Replicas { copies: 1 }),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_and_print() {
        let tcp: Endpoint = "127.0.0.1:7400".parse().unwrap();
        assert_eq!(tcp, Endpoint::Tcp("127.0.0.1:7400".into()));
        assert_eq!(tcp.to_string(), "127.0.0.1:7400");
        let unix: Endpoint = "unix:/run/nabu.sock".parse().unwrap();
        assert_eq!(unix.to_string(), "unix:/run/nabu.sock");
        for bad in ["", "host", "host:port", ":80", "unix:"] {
            assert!(bad.parse::<Endpoint>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn builtin_policies_follow_the_cluster_size() {
        assert_eq!(builtin_namespaces(6)["default"], Durability::EC_4_2);
        assert_eq!(
            builtin_namespaces(2)["default"],
            Durability::Replicas { copies: 2 }
        );
        assert_eq!(
            builtin_namespaces(5)["default"],
            Durability::Replicas { copies: 3 }
        );
        assert_eq!(
            builtin_namespaces(8)["kv"],
            Durability::Replicas { copies: 1 }
        );
    }

    #[test]
    fn impossible_settings_are_refused() {
        let config = ClientConfig {
            small_object_bytes: 8 << 20,
            ..ClientConfig::default()
        };
        assert!(config.check().is_err());
        assert!(ClientConfig::default().check().is_ok());
    }
}
