//! NabuStore's ring-aware client: it erasure-codes and fans out shards itself (one network
//! hop), reads K shards in parallel and decodes around missing, slow or corrupt ones. The S3
//! and Redis gateways use it as their coordinator.
//!
//! **Why the client does the work.** Placement is a pure function of the ring and an id
//! (`nabu_core::ring`), so a client that knows the member list computes where every shard
//! lives without asking anyone; encoding at the client saves the hop through a coordinator
//! node and spreads the CPU over clients.
//!
//! **Data model** (DESIGN.md §1): namespace → key → *key record* → *manifest* (by blob id) →
//! stripes → shards. Key records and manifests are small values replicated on
//! `max(3, M+1)` nodes with META ops; stripes are `ec:K+M` shards or whole copies. Formats:
//! `docs/formats/manifest.md`; ordering and visibility: `docs/consistency.md`.
//!
//! **Map.**
//! - [`Client`] (`client`): cluster map, ring, namespace policies, metadata reads and writes,
//!   `stat`, `list`, `delete`; `write`: `put`; `read`: `get`, ranges, streams; `compose`:
//!   an object from stored blobs (multipart uploads); `system`: cluster metadata in `_system`
//!   (namespaces, gateway access keys).
//! - [`connection`]: one multiplexed connection per node (writer and reader tasks, requests
//!   matched by id); [`pool`]: one lazily opened connection per node, typed requests.
//! - [`format`]: the manifest, key-record and namespace-record encodings.
//! - [`hlc`]: the hybrid logical clock that orders writes (last writer wins).
//! - [`kv`]: the KV-cache calls (batched put/get/delete/exists, `prefix_lookup`) against
//!   the nodes' in-memory KV pools, each key on its ring owner.
//!
//! **Invariants.** Nothing is visible before all of it is durable: the key record is written
//! last, after the manifest, after every stripe. No two shards of one stripe go to one node.
//! Every shard returned matched its writer's CRC32C (kept in the manifest), and every stripe
//! rebuilt from parity its BLAKE3. Every queue and in-flight
//! count is bounded by a named constant or config field (`stripes_inflight_max`,
//! `requests_inflight_per_connection_max`, [`connection::OUTGOING_REQUESTS_MAX`],
//! [`connection::RESPONSE_BODY_BYTES_MAX`]).
//!
//! **Shards off their home node** are made a node's job with HINT_PUT (handoff: move it home;
//! repair: rebuild it there); the nodes replay hints once the home is up, and the
//! [`PutReceipt`] still names shards that found no node.
//!
//! **Space comes back** through [`Client::collect_garbage`] (`gc`): mark what the key records
//! reach, sweep the rest on each node, sparing anything written within a grace period.
//!
//! **Deliberately absent (later work):** ring epochs that change while a client runs.

mod client;
pub mod cluster_file;
mod compose;
pub mod config;
pub mod connection;
mod error;
pub mod format;
mod gc;
pub mod hlc;
pub mod http_get;
pub mod kv;
mod list;
mod pacer;
pub mod pool;
mod read;
mod redundancy;
pub mod sim;
mod system;
mod write;

pub use client::{Client, ListPage, ListedKey, ObjectInfo, SYSTEM_NAMESPACE};
pub use compose::{ComposeMode, ComposePart, PartHasher, PartHashes};
pub use config::{
    ClientConfig, ClusterMap, Endpoint, Hedge, MemberAddr, MembershipKind, builtin_namespaces,
};
pub use error::{ClientError, Result};
pub use format::{FormatError, KeyRecord, Manifest, StripeEntry, UserMetadata};
pub use gc::{GcOptions, GcPhase, GcReport};
pub use hlc::Hlc;
pub use kv::{KvItem, kv_point, value_crc32c};
pub use pacer::Pacer;
pub use read::{BlobReader, OpenObject};
pub use redundancy::{CheckOptions, RedundancyReport};
pub use system::NamespaceInfo;
pub use write::{MetadataAtEnd, MissingShard, PutOptions, PutReceipt, REPAIR_HINT_COPIES};
