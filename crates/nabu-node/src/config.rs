//! [`NodeConfig`]: one TOML file per node, parsed into a documented struct.
//!
//! Every field has a default that suits `nabu up` on one machine, so a config needs only what
//! has no sensible default: the cluster token (a secret: the file holding it is readable by
//! the node's user only, which is its writer's job). Unknown fields are refused, so a typo
//! fails at start-up instead of silently running with a default. Units are in the names.
//!
//! ```toml
//! id = 2
//! zone = "rack-a"
//! data_dirs = ["/var/lib/nabu/nvme0"]
//! data_addr = "10.0.0.2:7400"
//! peer_addr = "10.0.0.2:7401"
//! http_addr = "10.0.0.2:7402"
//! s3_addr = "10.0.0.2:7700"
//! s3_domains = ["s3.nabu.example"]   # virtual-hosted-style: BUCKET.s3.nabu.example
//! cluster_token = "…64 hex digits…"
//!
//! [[members]]
//! id = 1
//! data_addr = "10.0.0.1:7400"
//! peer_addr = "10.0.0.1:7401"
//! http_addr = "10.0.0.1:7402"
//!
//! [[members]]
//! id = 2
//! zone = "rack-a"
//! data_addr = "10.0.0.2:7400"
//! peer_addr = "10.0.0.2:7401"
//! http_addr = "10.0.0.2:7402"
//!
//! [store]
//! segment_bytes_max = 268435456
//! ```

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nabu_core::ring::{Member, NodeId, Ring, WEIGHT_MAX};
use nabu_proto::ops::MemberEntry;
use nabu_proto::{ClusterToken, Limits};
use nabu_store::{DirectIo, StoreConfig};
use serde::{Deserialize, Serialize};

/// The longest `data_socket` path (a Unix socket address holds 108 bytes, NUL included).
pub const DATA_SOCKET_PATH_BYTES_MAX: usize = 100;

/// Why a config was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("read node config {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for a [`NodeConfig`] (unknown fields included).
    #[error("parse node config {}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's explanation, with the line.
        message: String,
    },
    /// The values are inconsistent or out of range.
    #[error("invalid node config: {0}")]
    Invalid(String),
}

/// The configuration of one storage node. See the module docs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's id, stable for its life (a StatefulSet ordinal on Kubernetes). Default 1.
    pub id: u32,
    /// This node's failure domain (rack, host, zone); placement spreads shards over zones.
    /// Default `"default"`.
    pub zone: String,
    /// One directory per device holding the chunk store's segments. The list and its order
    /// must not change over the node's life. Default `["nabu-data"]`.
    pub data_dirs: Vec<PathBuf>,
    /// The client data plane listener. Default `127.0.0.1:7400`.
    pub data_addr: SocketAddr,
    /// The peer plane listener (shard transfer, heartbeats). Default `127.0.0.1:7401`.
    pub peer_addr: SocketAddr,
    /// The management HTTP listener (`/healthz`, `/readyz`, `/metrics`, `/api/v1/cluster`).
    /// Default `127.0.0.1:7402`.
    pub http_addr: SocketAddr,
    /// A Unix socket path where the data plane is served too, for clients on the same host
    /// (the same protocol and token; no TCP stack in the way). A stale socket file is
    /// replaced at start-up and removed at shutdown. At most 100 bytes. Default: none.
    pub data_socket: Option<PathBuf>,
    /// The S3-compatible API listener, served by the `nabu` binary's gateway (`nabu-s3`)
    /// in the same process, with the static member list as its cluster map. Absent (the
    /// default): no S3 listener. `nabu up` gives every node one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3_addr: Option<SocketAddr>,
    /// Host names S3 clients reach this node under, for virtual-hosted-style addressing: a
    /// request to `BUCKET.NAME[:port]` is for bucket `BUCKET`; requests to an IP address or
    /// to a name itself are path-style. Default `["localhost"]`.
    pub s3_domains: Vec<String>,
    /// The cluster token as hex (16..=256 bytes; `nabu up` generates 32 random bytes).
    /// Required: there is no safe default for a secret.
    pub cluster_token: String,
    /// The static member list, this node included. Empty (the default) means this node alone.
    pub members: Vec<MemberConfig>,
    /// The ring epoch of the static member list. Default 1.
    pub ring_epoch: u64,
    /// This node's ring weight when it adds itself to a member list (etcd join, or a node
    /// alone); a listed member's weight is the list's. Default 1.
    pub weight: u32,
    /// Where the authoritative member list lives: `"static"` (the default: `members` above,
    /// changed with `nabu node add|drain|remove`) or `"etcd"` (the list and its ring epoch
    /// live in etcd at `etcd_endpoints`; the node registers there under a lease, joins by
    /// itself and follows the list through a watch; `members` is then only the list a new
    /// cluster starts from). See docs/membership.md.
    pub membership: MembershipKind,
    /// etcd's client URLs (`http://host:2379`), for `membership = "etcd"`. Default
    /// `["http://127.0.0.1:2379"]`.
    pub etcd_endpoints: Vec<String>,
    /// The key prefix of this cluster's keys in etcd (so clusters can share one etcd):
    /// `<prefix>/members` holds the member list, `<prefix>/nodes/<id>` each registered node.
    /// Default `"/nabu/default"`; `nabu up` derives one from the cluster token.
    pub etcd_prefix: String,
    /// The TTL of the lease a node registers under: a node that stops renewing it (it died,
    /// or lost etcd) leaves `<prefix>/nodes/` this long after. Liveness does not depend on
    /// it (heartbeats decide up and down). Default 10,000 ms; at least 2,000.
    pub etcd_lease_ttl_ms: u64,
    /// Whether a node missing from etcd's member list adds itself (weight and addresses from
    /// this config) when it first registers. A node removed while it runs does not add
    /// itself back. Default true.
    pub etcd_join: bool,
    /// How often this node PINGs every other member's peer plane. Default 500 ms.
    pub heartbeat_interval_ms: u64,
    /// A member not heard from for this long is reported down. Default 2,000 ms.
    pub down_after_ms: u64,
    /// Open connections per listener (data and peer plane each); one more is answered BUSY
    /// and closed. Default 1,024.
    pub connections_max: u32,
    /// Requests in flight per connection; one more is answered BUSY. Default 128.
    pub inflight_max: u32,
    /// The largest body one frame carries; longer bodies are streamed. Default 4 MiB.
    pub frame_body_bytes_max: u32,
    /// The largest body one request may declare. Default 64 MiB less 4 KiB, so that a shard
    /// or value plus its stored header fits one store record (64 MiB).
    pub request_body_bytes_max: u64,
    /// Bytes of streamed request bodies the node buffers at once, over all connections; a
    /// connection whose next body does not fit waits (TCP backpressure). At least
    /// `request_body_bytes_max`. Default 1 GiB.
    pub request_bodies_bytes_max: u64,
    /// A new connection must complete HELLO within this. Default 5,000 ms.
    pub hello_timeout_ms: u64,
    /// A frame, once started, must complete within this; also the longest gap between the
    /// DATA frames of one request body. Default 30,000 ms.
    pub frame_timeout_ms: u64,
    /// A connection with nothing in flight and nothing received for this long is closed.
    /// Default 300,000 ms (5 min).
    pub idle_timeout_ms: u64,
    /// On shutdown, how long requests in flight may take to finish before connections are
    /// dropped. Default 10,000 ms.
    pub shutdown_grace_ms: u64,
    /// How often the hint-replay job looks for hints whose home node is up (and retries
    /// failed ones, with exponential backoff from this). Default 1,000 ms.
    pub hint_replay_interval_ms: u64,
    /// The longest wait before a failed hint is tried again. Default 30,000 ms.
    pub hint_retry_backoff_max_ms: u64,
    /// Hints replayed at once (shards moved home or rebuilt in parallel). Default 2.
    pub hint_replay_concurrency: u32,
    /// Shard bytes the hint-replay job sends per second, over all its transfers, so repair
    /// never starves client traffic. Default 64 MiB/s.
    pub hint_replay_bytes_per_s: u64,
    /// Hints this node keeps at most; a HINT_PUT beyond it is answered BUSY (the writer's
    /// receipt still names the shard). Default 1,000,000 (a few tens of MiB of memory).
    pub hints_max: u32,
    /// How long a member may go unheard before its data is re-protected on the others (the
    /// lowest-id member that is up writes every degraded stripe back to full redundancy).
    /// Default 900,000 ms (15 min): long enough for a restart or a reboot. Also accepted as
    /// `repair_after = "15m"` (a duration: `ms`, `s`, `m`, `h`, `d`).
    #[serde(alias = "repair_after", deserialize_with = "millis_or_duration")]
    pub repair_after_ms: u64,
    /// Bytes per second the coordinator's rebalancing and re-protection send (shards moved,
    /// stripes read and written again), so client traffic keeps the network. Default
    /// 128 MiB/s.
    pub maintenance_bytes_per_s: u64,
    /// Bytes per second the scrubber rereads and verifies (0 turns scrubbing off), so client
    /// traffic keeps the disk. Default 32 MiB/s.
    pub scrub_bytes_per_s: u64,
    /// How long after one scrub pass starts the next starts (the first this long after
    /// start-up; a pass that takes longer is followed at once). Default 604,800,000 ms (a
    /// week: a 4 TB node at the default rate takes about a day and a half per pass).
    pub scrub_interval_ms: u64,
    /// Recent write times kept for garbage collection (an entry of about 50 bytes per shard
    /// or manifest written within the collector's grace period). When full the table is
    /// cleared and sweeps drop nothing for one grace period. Default 1,000,000.
    pub gc_touch_entries_max: u32,
    /// The KV pool's capacity: the most bytes of KV values (with their keys and a fixed
    /// per-entry overhead) this node keeps in memory; a put beyond it evicts. Default 1 GiB;
    /// `nabu up --kv-bytes SIZE` sets it for every local node.
    pub kv_bytes: u64,
    /// The largest single KV value (also the largest RESP `SET` value). At most
    /// `kv_bytes × (1 − kv_pinned_fraction_max)`, so unpinned room for it always exists (a
    /// smaller pool lowers it to that). Default 512 MiB.
    pub kv_value_bytes_max: u64,
    /// The share of `kv_bytes` pinned values may hold at most (a pin beyond it is refused);
    /// what keeps "a put never fails because the pool is full" true. Default 0.5.
    pub kv_pinned_fraction_max: f64,
    /// The KV pool's eviction policy: `"s3-fifo"` (default) or `"lru"` (the baseline).
    pub kv_policy: crate::kv::PolicyKind,
    /// The Redis-protocol (RESP2/RESP3) listener; none when absent (the default). `nabu up`
    /// puts it at the data port + 400.
    pub resp_addr: Option<SocketAddr>,
    /// The password RESP clients give with `AUTH` or `HELLO 3 AUTH`. Required (non-empty)
    /// when `resp_addr` is set: a secret, like the cluster token.
    pub resp_password: String,
    /// Open RESP connections at most; one more is answered `-ERR max number of clients
    /// reached` and closed. Default 1,024.
    pub resp_connections_max: u32,
    /// The chunk store's options.
    pub store: StoreOptions,
    /// The cache tiers over the chunk store (`[tiers]`: DRAM, CXL; see `crate::tier`).
    pub tiers: crate::tier::TierConfig,
}

/// Where a node's authoritative member list lives (`membership` in node.toml): defined
/// in the client, which reads it from `cluster.toml` too.
pub use nabu_client::MembershipKind;

/// One member of the static member list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    /// The member's node id.
    pub id: u32,
    /// Its failure domain. Default `"default"`.
    #[serde(default = "default_zone")]
    pub zone: String,
    /// Relative capacity (the member owns `150 × weight` virtual nodes). Default 1.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Its client data plane address.
    pub data_addr: SocketAddr,
    /// Its peer plane address (where heartbeats go).
    pub peer_addr: SocketAddr,
    /// Its management HTTP address.
    pub http_addr: SocketAddr,
}

impl MemberConfig {
    /// The member as a member list carries it.
    pub fn entry(&self) -> MemberEntry {
        MemberEntry {
            id: NodeId(self.id),
            weight: self.weight,
            zone: self.zone.clone(),
            data_addr: self.data_addr,
            peer_addr: self.peer_addr,
            http_addr: self.http_addr,
        }
    }

    /// The member a member list names.
    pub fn from_entry(entry: &MemberEntry) -> Self {
        Self {
            id: entry.id.0,
            zone: entry.zone.clone(),
            weight: entry.weight,
            data_addr: entry.data_addr,
            peer_addr: entry.peer_addr,
            http_addr: entry.http_addr,
        }
    }
}

/// The chunk store's options; each defaults to [`StoreConfig::new`]'s value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreOptions {
    /// A segment is sealed once it would grow past this. Default 256 MiB.
    pub segment_bytes_max: u64,
    /// `"auto"` (O_DIRECT where the filesystem allows it), `"required"` or `"off"`.
    /// Default `"auto"`.
    pub direct_io: DirectIoOption,
    /// A group commit takes at most this many bytes. Default 8 MiB.
    pub group_commit_bytes_max: usize,
    /// A group commit takes at most this many records (≤ 1,024). Default 256.
    pub group_commit_records_max: usize,
    /// Writes queued per data dir before callers wait. Default 1,024.
    pub write_queue_depth_max: usize,
    /// Compaction rewrites a segment once this fraction of it is dead. Default 0.5.
    pub compaction_dead_fraction_min: f64,
    /// Index entries reserved per data dir at open. Default 1 Mi.
    pub index_capacity_per_dir: usize,
}

/// [`DirectIo`] as it is spelled in the config file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DirectIoOption {
    /// O_DIRECT where the filesystem allows it, else the page cache.
    #[default]
    Auto,
    /// O_DIRECT or fail to open.
    Required,
    /// Always the page cache.
    Off,
}

fn default_zone() -> String {
    "default".to_owned()
}

fn default_weight() -> u32 {
    1
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The default of [`NodeConfig::request_body_bytes_max`]: a store record's largest payload
/// less room for the stored header.
pub const REQUEST_BODY_BYTES_MAX_DEFAULT: u64 = (nabu_store::PAYLOAD_BYTES_MAX - 4096) as u64;

impl Default for NodeConfig {
    fn default() -> Self {
        let limits = Limits::default();
        Self {
            id: 1,
            zone: default_zone(),
            data_dirs: vec![PathBuf::from("nabu-data")],
            data_addr: loopback(7400),
            peer_addr: loopback(7401),
            http_addr: loopback(7402),
            data_socket: None,
            s3_addr: None,
            s3_domains: vec!["localhost".to_owned()],
            cluster_token: String::new(),
            members: Vec::new(),
            ring_epoch: 1,
            weight: 1,
            membership: MembershipKind::Static,
            etcd_endpoints: vec!["http://127.0.0.1:2379".into()],
            etcd_prefix: "/nabu/default".into(),
            etcd_lease_ttl_ms: 10_000,
            etcd_join: true,
            heartbeat_interval_ms: 500,
            down_after_ms: 2000,
            connections_max: limits.connections_max,
            inflight_max: limits.inflight_max,
            frame_body_bytes_max: limits.frame_body_bytes_max,
            request_body_bytes_max: REQUEST_BODY_BYTES_MAX_DEFAULT,
            request_bodies_bytes_max: 1 << 30,
            hello_timeout_ms: limits.hello_timeout.as_millis() as u64,
            frame_timeout_ms: limits.frame_timeout.as_millis() as u64,
            idle_timeout_ms: limits.idle_timeout.as_millis() as u64,
            shutdown_grace_ms: 10_000,
            hint_replay_interval_ms: 1_000,
            hint_retry_backoff_max_ms: 30_000,
            hint_replay_concurrency: 2,
            hint_replay_bytes_per_s: 64 << 20,
            hints_max: 1_000_000,
            repair_after_ms: 900_000,
            maintenance_bytes_per_s: 128 << 20,
            scrub_bytes_per_s: 32 << 20,
            scrub_interval_ms: 7 * 24 * 3_600_000,
            gc_touch_entries_max: 1_000_000,
            kv_bytes: 1 << 30,
            kv_value_bytes_max: 512 << 20,
            kv_pinned_fraction_max: 0.5,
            kv_policy: crate::kv::PolicyKind::S3Fifo,
            resp_addr: None,
            resp_password: String::new(),
            resp_connections_max: 1024,
            store: StoreOptions::default(),
            tiers: crate::tier::TierConfig::default(),
        }
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        let store = StoreConfig::new(Vec::new());
        Self {
            segment_bytes_max: store.segment_bytes_max,
            direct_io: DirectIoOption::Auto,
            group_commit_bytes_max: store.group_commit_bytes_max,
            group_commit_records_max: store.group_commit_records_max,
            write_queue_depth_max: store.write_queue_depth_max,
            compaction_dead_fraction_min: store.compaction_dead_fraction_min,
            index_capacity_per_dir: store.index_capacity_per_dir,
        }
    }
}

impl MemberConfig {
    /// The member entry for a node `id` in `zone` (weight 1) serving on `addrs`.
    pub fn new(id: u32, zone: impl Into<String>, addrs: crate::ListenerAddrs) -> Self {
        Self {
            id,
            zone: zone.into(),
            weight: 1,
            data_addr: addrs.data,
            peer_addr: addrs.peer,
            http_addr: addrs.http,
        }
    }
}

impl NodeConfig {
    /// A config with the defaults, for node `id` over `data_dir`, with `cluster_token` (hex).
    pub fn new(id: u32, data_dir: impl Into<PathBuf>, cluster_token: impl Into<String>) -> Self {
        Self {
            id,
            data_dirs: vec![data_dir.into()],
            cluster_token: cluster_token.into(),
            ..Self::default()
        }
    }

    /// Reads, parses and validates the TOML file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config = Self::from_toml(&text).map_err(|error| match error {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })?;
        Ok(config)
    }

    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|error| ConfigError::Parse {
            path: PathBuf::from("<text>"),
            message: error.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// The config as TOML text (what `nabu up` writes to `node.toml`).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a NodeConfig always serialises")
    }

    /// Checks every field's range and the member list's consistency.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |message: String| Err(ConfigError::Invalid(message));
        if self.data_dirs.is_empty() {
            return fail("data_dirs is empty: name at least one data directory".into());
        }
        if let Err(error) = self.token() {
            return fail(format!(
                "cluster_token: {error} (nabu up generates one; it is hex, 16..=256 bytes)"
            ));
        }
        if let Some(path) = &self.data_socket
            && path.as_os_str().len() > DATA_SOCKET_PATH_BYTES_MAX
        {
            return fail(format!(
                "data_socket {} is longer than {DATA_SOCKET_PATH_BYTES_MAX} bytes (the limit \
                 of a Unix socket address); choose a shorter path",
                path.display()
            ));
        }
        self.validate_durations()?;
        self.validate_limits()?;
        self.validate_members()?;
        self.validate_etcd()?;
        self.validate_kv()?;
        if let Err(error) = self.store_config().validate() {
            return fail(format!("store: {error}"));
        }
        Ok(())
    }

    fn validate_etcd(&self) -> Result<(), ConfigError> {
        if self.membership != MembershipKind::Etcd {
            return Ok(());
        }
        let fail = |message: String| Err(ConfigError::Invalid(message));
        if self.etcd_endpoints.is_empty() {
            return fail("membership = \"etcd\" needs etcd_endpoints (http://host:2379)".into());
        }
        if let Some(bad) = self
            .etcd_endpoints
            .iter()
            .find(|url| !(url.starts_with("http://") || url.starts_with("https://")))
        {
            return fail(format!(
                "etcd_endpoints: {bad:?} is not a URL like http://127.0.0.1:2379"
            ));
        }
        if !self.etcd_prefix.starts_with('/') || self.etcd_prefix.ends_with('/') {
            return fail(format!(
                "etcd_prefix {:?} must start with / and not end with one (like /nabu/prod)",
                self.etcd_prefix
            ));
        }
        if self.etcd_lease_ttl_ms < 2_000 {
            return fail(format!(
                "etcd_lease_ttl_ms ({}) must be at least 2,000 (etcd leases count in seconds)",
                self.etcd_lease_ttl_ms
            ));
        }
        Ok(())
    }

    fn validate_durations(&self) -> Result<(), ConfigError> {
        let positive = [
            ("heartbeat_interval_ms", self.heartbeat_interval_ms),
            ("down_after_ms", self.down_after_ms),
            ("hello_timeout_ms", self.hello_timeout_ms),
            ("frame_timeout_ms", self.frame_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
            ("hint_replay_interval_ms", self.hint_replay_interval_ms),
            (
                "hint_replay_concurrency",
                u64::from(self.hint_replay_concurrency),
            ),
            ("hint_replay_bytes_per_s", self.hint_replay_bytes_per_s),
            ("hints_max", u64::from(self.hints_max)),
            ("scrub_interval_ms", self.scrub_interval_ms),
            ("repair_after_ms", self.repair_after_ms),
            ("maintenance_bytes_per_s", self.maintenance_bytes_per_s),
            ("gc_touch_entries_max", u64::from(self.gc_touch_entries_max)),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(ConfigError::Invalid(format!("{name} must be positive")));
        }
        if self.down_after_ms <= self.heartbeat_interval_ms {
            return Err(ConfigError::Invalid(format!(
                "down_after_ms ({}) must exceed heartbeat_interval_ms ({}), or every member \
                 flaps down between two heartbeats",
                self.down_after_ms, self.heartbeat_interval_ms
            )));
        }
        Ok(())
    }

    fn validate_limits(&self) -> Result<(), ConfigError> {
        let fail = |message: &str| Err(ConfigError::Invalid(message.to_owned()));
        if self.connections_max == 0 || self.inflight_max == 0 {
            return fail("connections_max and inflight_max must be positive");
        }
        if self.hint_retry_backoff_max_ms < self.hint_replay_interval_ms {
            return fail("hint_retry_backoff_max_ms must be at least hint_replay_interval_ms");
        }
        if self.frame_body_bytes_max == 0 {
            return fail("frame_body_bytes_max must be positive");
        }
        if self.request_body_bytes_max > REQUEST_BODY_BYTES_MAX_DEFAULT {
            return fail("request_body_bytes_max is at most 64 MiB less 4 KiB (one store record)");
        }
        if self.request_bodies_bytes_max < self.request_body_bytes_max
            || self.request_bodies_bytes_max > u64::from(u32::MAX)
        {
            return fail(
                "request_bodies_bytes_max must be between request_body_bytes_max and 4 GiB",
            );
        }
        Ok(())
    }

    fn validate_kv(&self) -> Result<(), ConfigError> {
        let fail = |message: &str| Err(ConfigError::Invalid(message.to_owned()));
        if self.kv_bytes < 1 << 20 {
            return fail("kv_bytes must be at least 1 MiB");
        }
        if self.kv_value_bytes_max == 0 {
            return fail("kv_value_bytes_max must be positive");
        }
        if !(0.0..1.0).contains(&self.kv_pinned_fraction_max) {
            return fail("kv_pinned_fraction_max lies in 0..1 (unpinned room must remain)");
        }
        if self.resp_addr.is_some() && self.resp_password.is_empty() {
            return fail("resp_password is required when resp_addr is set (nabu up generates one)");
        }
        if self.resp_connections_max == 0 {
            return fail("resp_connections_max must be positive");
        }
        if self.request_bodies_bytes_max < self.kv_pool_config().value_bytes_max {
            return fail("request_bodies_bytes_max must be at least the largest KV value");
        }
        if let Some(problem) = self.tiers.problem() {
            return fail(problem);
        }
        Ok(())
    }

    /// The KV pool's sizes: pinned bytes at most `kv_pinned_fraction_max` of `kv_bytes`, one
    /// value at most `kv_value_bytes_max` and at most what is left unpinned (less one entry's
    /// overhead and the longest key), so that a put can always make room.
    pub fn kv_pool_config(&self) -> crate::kv::KvPoolConfig {
        let pinned_bytes_max = (self.kv_bytes as f64 * self.kv_pinned_fraction_max) as u64;
        let unpinned = self.kv_bytes - pinned_bytes_max;
        let slack = crate::kv::ENTRY_OVERHEAD_BYTES + 2048;
        crate::kv::KvPoolConfig {
            capacity_bytes: self.kv_bytes,
            value_bytes_max: self.kv_value_bytes_max.min(unpinned.saturating_sub(slack)),
            pinned_bytes_max,
            policy: self.kv_policy,
        }
    }

    fn validate_members(&self) -> Result<(), ConfigError> {
        let fail = |message: String| Err(ConfigError::Invalid(message));
        let members = self.effective_members();
        let Some(own) = members.iter().find(|member| member.id == self.id) else {
            return fail(format!(
                "this node's id {} is missing from members (the list includes this node)",
                self.id
            ));
        };
        if (own.data_addr, own.peer_addr, own.http_addr)
            != (self.data_addr, self.peer_addr, self.http_addr)
        {
            return fail(format!(
                "member {} lists other addresses than this node's data_addr, peer_addr, http_addr",
                self.id
            ));
        }
        if let Some(s3_addr) = self.s3_addr
            && [self.data_addr, self.peer_addr, self.http_addr].contains(&s3_addr)
        {
            return fail(format!(
                "s3_addr {s3_addr} is also this node's data, peer or http address"
            ));
        }
        for domain in &self.s3_domains {
            let label_ok = |label: &str| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            };
            if !domain.split('.').all(label_ok) {
                return fail(format!(
                    "s3_domains entry {domain:?} is not a host name (letters, digits, `-` and \
                     dots; no port, no scheme)"
                ));
            }
        }
        if self.weight > WEIGHT_MAX {
            return fail(format!("weight {} is over {WEIGHT_MAX}", self.weight));
        }
        let mut ids = HashSet::new();
        let mut addrs = HashSet::new();
        for member in &members {
            if !ids.insert(member.id) {
                return fail(format!("member id {} is listed twice", member.id));
            }
            if member.weight > WEIGHT_MAX {
                return fail(format!(
                    "member {} has weight {}, over {WEIGHT_MAX}",
                    member.id, member.weight
                ));
            }
            for addr in [member.data_addr, member.peer_addr, member.http_addr] {
                if !addrs.insert(addr) {
                    return fail(format!("address {addr} is used twice in members"));
                }
            }
        }
        Ok(())
    }

    /// The member list, this node included: `members`, or this node alone when it is empty.
    pub fn effective_members(&self) -> Vec<MemberConfig> {
        if !self.members.is_empty() {
            return self.members.clone();
        }
        vec![self.own_member()]
    }

    /// This node as a member: its zone, `weight` and addresses.
    pub fn own_member(&self) -> MemberConfig {
        MemberConfig {
            id: self.id,
            zone: self.zone.clone(),
            weight: self.weight,
            data_addr: self.data_addr,
            peer_addr: self.peer_addr,
            http_addr: self.http_addr,
        }
    }

    /// The ring of the static member list at `ring_epoch`.
    pub fn ring(&self) -> Result<Ring, ConfigError> {
        let members = self
            .effective_members()
            .into_iter()
            .map(|member| Member {
                id: NodeId(member.id),
                zone: member.zone,
                weight: member.weight,
            })
            .collect();
        Ring::new(self.ring_epoch, members).map_err(|error| ConfigError::Invalid(error.to_string()))
    }

    /// The cluster token, parsed.
    pub fn token(&self) -> Result<ClusterToken, nabu_proto::ProtoError> {
        ClusterToken::from_hex(&self.cluster_token)
    }

    /// The protocol limits of the data and peer plane listeners.
    pub fn limits(&self) -> Limits {
        Limits {
            meta_bytes_max: u16::MAX,
            frame_body_bytes_max: self.frame_body_bytes_max,
            // KV_PUT carries whole values, up to the largest KV value; other ops are held to
            // `request_body_bytes_max` by the handler.
            request_body_bytes_max: self
                .request_body_bytes_max
                .max(self.kv_pool_config().value_bytes_max + (64 << 10)),
            inflight_max: self.inflight_max,
            connections_max: self.connections_max,
            hello_timeout: Duration::from_millis(self.hello_timeout_ms),
            frame_timeout: Duration::from_millis(self.frame_timeout_ms),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
        }
    }

    /// The chunk store's config.
    pub fn store_config(&self) -> StoreConfig {
        let options = &self.store;
        StoreConfig {
            data_dirs: self.data_dirs.clone(),
            segment_bytes_max: options.segment_bytes_max,
            direct_io: match options.direct_io {
                DirectIoOption::Auto => DirectIo::Auto,
                DirectIoOption::Required => DirectIo::Required,
                DirectIoOption::Off => DirectIo::Off,
            },
            group_commit_bytes_max: options.group_commit_bytes_max,
            group_commit_records_max: options.group_commit_records_max,
            write_queue_depth_max: options.write_queue_depth_max,
            compaction_dead_fraction_min: options.compaction_dead_fraction_min,
            index_capacity_per_dir: options.index_capacity_per_dir,
        }
    }
}

/// Parses `10s`, `500ms`, `1.5s`, `2m`, `6h`, `1d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let unit_start = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(unit_start);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 10s, 500ms, 2m, 6h)"))?;
    let seconds = match unit {
        "ms" => number / 1e3,
        "s" | "" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        "d" => number * 86_400.0,
        _ => return Err(format!("{text:?}: unknown unit (ms, s, m, h, d)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

/// A `*_ms` field given as a count of milliseconds or, under its duration alias
/// (`repair_after = "15m"`), as a duration string.
fn millis_or_duration<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Millis {
        Count(u64),
        Text(String),
    }
    match Millis::deserialize(deserializer)? {
        Millis::Count(ms) => Ok(ms),
        Millis::Text(text) => parse_duration(&text)
            .map(|duration| duration.as_millis() as u64)
            .map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "000102030405060708090a0b0c0d0e0f";

    fn member(id: u32, port: u16) -> MemberConfig {
        MemberConfig {
            id,
            zone: "z".into(),
            weight: 1,
            data_addr: loopback(port),
            peer_addr: loopback(port + 1),
            http_addr: loopback(port + 2),
        }
    }

    #[test]
    fn a_token_alone_is_a_valid_config_and_round_trips_through_toml() {
        let config = NodeConfig::from_toml(&format!("cluster_token = \"{TOKEN}\"")).unwrap();
        assert_eq!(config.id, 1);
        assert_eq!(config.effective_members().len(), 1);
        assert_eq!(config.store_config().segment_bytes_max, 256 << 20);
        assert_eq!(NodeConfig::from_toml(&config.to_toml()).unwrap(), config);
    }

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("6h"), Ok(Duration::from_secs(6 * 3600)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert!(parse_duration("10y").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn repair_after_takes_a_duration_or_milliseconds() {
        let parse =
            |line: &str| NodeConfig::from_toml(&format!("cluster_token = \"{TOKEN}\"\n{line}"));
        assert_eq!(
            parse("").unwrap().repair_after_ms,
            900_000,
            "default 15 min"
        );
        assert_eq!(
            parse("repair_after = \"15m\"").unwrap().repair_after_ms,
            900_000
        );
        assert_eq!(
            parse("repair_after = \"3s\"").unwrap().repair_after_ms,
            3_000
        );
        assert_eq!(
            parse("repair_after_ms = 2500").unwrap().repair_after_ms,
            2_500
        );
        let error = parse("repair_after = \"soon\"").unwrap_err().to_string();
        assert!(error.contains("not a duration"), "{error}");
    }

    #[test]
    fn bad_configs_are_refused_with_the_reason() {
        let cases = [
            (String::new(), "cluster_token"),
            (
                format!("cluster_token = \"{TOKEN}\"\nfoo = 1"),
                "unknown field",
            ),
            (
                format!("cluster_token = \"{TOKEN}\"\nheartbeat_interval_ms = 0"),
                "heartbeat_interval_ms",
            ),
            (
                format!("cluster_token = \"{TOKEN}\"\ndown_after_ms = 100"),
                "down_after_ms",
            ),
            (
                format!("cluster_token = \"{TOKEN}\"\nhint_replay_concurrency = 0"),
                "hint_replay_concurrency",
            ),
            (
                format!("cluster_token = \"{TOKEN}\"\nhint_retry_backoff_max_ms = 10"),
                "hint_retry_backoff_max_ms",
            ),
            (
                format!("cluster_token = \"{TOKEN}\"\n[store]\nsegment_bytes_max = 1"),
                "segment_bytes_max",
            ),
            (
                format!("cluster_token = \"{TOKEN}\"\ns3_domains = [\"s3.local:7700\"]"),
                "s3_domains entry \"s3.local:7700\" is not a host name",
            ),
            (
                format!("cluster_token = \"{TOKEN}\"\ns3_domains = [\"\"]"),
                "s3_domains",
            ),
        ];
        for (text, expected) in cases {
            let error = NodeConfig::from_toml(&text).unwrap_err().to_string();
            assert!(error.contains(expected), "{error:?} lacks {expected:?}");
        }
    }

    #[test]
    fn s3_addr_is_optional_round_trips_and_must_not_reuse_a_plane() {
        let config = NodeConfig::from_toml(&format!("cluster_token = \"{TOKEN}\"")).unwrap();
        assert_eq!(config.s3_addr, None);
        assert!(!config.to_toml().contains("s3_addr"));
        let text = format!("cluster_token = \"{TOKEN}\"\ns3_addr = \"127.0.0.1:7700\"");
        let config = NodeConfig::from_toml(&text).unwrap();
        assert_eq!(config.s3_addr, Some(loopback(7700)));
        assert_eq!(NodeConfig::from_toml(&config.to_toml()).unwrap(), config);
        let clash = format!("cluster_token = \"{TOKEN}\"\ns3_addr = \"127.0.0.1:7402\"");
        let error = NodeConfig::from_toml(&clash).unwrap_err().to_string();
        assert!(error.contains("s3_addr"), "{error}");
    }

    #[test]
    fn member_lists_must_hold_this_node_once_with_distinct_addresses() {
        let mut config = NodeConfig::new(1, "d", TOKEN);
        config.members = vec![member(2, 8000)];
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("missing")
        );
        config.data_addr = loopback(8000);
        config.peer_addr = loopback(8001);
        config.http_addr = loopback(8002);
        config.members = vec![member(1, 8000), member(2, 8010), member(2, 8020)];
        assert!(config.validate().unwrap_err().to_string().contains("twice"));
        config.members = vec![member(1, 8000), member(2, 8001)];
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("used twice")
        );
        config.members = vec![member(1, 8000), member(2, 8010)];
        config.validate().unwrap();
        assert_eq!(config.ring().unwrap().members().len(), 2);
        assert_eq!(NodeConfig::from_toml(&config.to_toml()).unwrap(), config);
    }
}
