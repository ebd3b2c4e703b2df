//! One lazily opened connection per node, and the typed requests the client sends.
//!
//! A node whose connect failed is skipped for `node_down_retry_after`, so a dead node costs
//! one refused connect per interval rather than one per shard. A request whose connection
//! broke under it is sent once more on a fresh connection (every op is idempotent).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use nabu_core::id::StripeId;
use nabu_core::ring::NodeId;
use nabu_proto::ops::{
    GcSweepReply, HintPut, ListEntry, ManifestRef, MetaDelete, MetaGet, MetaList, MetaNamespaces,
    MetaPut, NodeStatus, NodeStatusReply, PutOutcome, ShardDelete, ShardGet, ShardInfo,
    ShardLayout, ShardList, ShardPut, ShardStat, SweepRun, decode_list_entries, decode_namespaces,
    decode_stripe_ids, encode_sweep_body,
};
use nabu_proto::ops::{
    MemberEntry, MemberListHeader, MembersGet, MembersGetReply, MembersPut, MembersPutReply,
    decode_members, encode_members,
};
use nabu_proto::{ClusterToken, Meta, ProtoError, Response};

use crate::config::{ClientConfig, Endpoint, MemberAddr};
use crate::connection::{Connection, Reply};
use crate::error::{ClientError, Result};

/// A node's slot: its address, its connection (opened on first use), and until when it is
/// considered down after a failed connect.
#[derive(Debug)]
struct NodeSlot {
    endpoint: Endpoint,
    connection: tokio::sync::Mutex<Option<Connection>>,
    down_until: Mutex<Option<Instant>>,
}

impl NodeSlot {
    fn new(member: &MemberAddr) -> Self {
        Self {
            endpoint: member.data_addr.clone(),
            connection: tokio::sync::Mutex::new(None),
            down_until: Mutex::new(None),
        }
    }
}

/// A value read with META_GET.
#[derive(Debug, Clone)]
pub struct MetaValue {
    /// The stored HLC timestamp.
    pub hlc_timestamp: u64,
    /// Whether it is a tombstone.
    pub deleted: bool,
    /// The value (empty for a tombstone).
    pub value: Bytes,
}

/// Connections to every member.
#[derive(Debug)]
pub struct Pool {
    token: ClusterToken,
    client_name: String,
    requests_inflight_max: usize,
    connect_timeout: Duration,
    request_timeout: Duration,
    node_down_retry_after: Duration,
    /// Per member; members join when the client learns a newer member list.
    nodes: RwLock<HashMap<NodeId, Arc<NodeSlot>>>,
}

impl Pool {
    /// A pool over `members`; connects nothing yet.
    pub fn new(token: ClusterToken, members: &[MemberAddr], config: &ClientConfig) -> Self {
        let nodes = members
            .iter()
            .map(|member| (member.id, Arc::new(NodeSlot::new(member))))
            .collect();
        Self {
            token,
            client_name: config.client_name.clone(),
            requests_inflight_max: config.requests_inflight_per_connection_max,
            connect_timeout: config.connect_timeout,
            request_timeout: config.request_timeout,
            node_down_retry_after: config.node_down_retry_after,
            nodes: RwLock::new(nodes),
        }
    }

    /// Adds the members it does not know yet, and re-addresses those whose TCP address
    /// changed (their connection is dropped). A member reached over a Unix socket keeps it.
    pub fn add_members(&self, members: &[MemberAddr]) {
        let mut nodes = self
            .nodes
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for member in members {
            let known = nodes.get(&member.id);
            let moved = |slot: &Arc<NodeSlot>| {
                matches!(slot.endpoint, Endpoint::Tcp(_)) && slot.endpoint != member.data_addr
            };
            if known.is_none_or(moved) {
                nodes.insert(member.id, Arc::new(NodeSlot::new(member)));
            }
        }
    }

    /// The per-request timeout.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// The open connection to `node`, connecting if there is none.
    async fn connection(&self, node: NodeId) -> Result<Connection> {
        let slot = self
            .nodes
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&node)
            .cloned()
            .ok_or_else(|| ClientError::Connection {
                node,
                reason: "not a member of the cluster map".into(),
            })?;
        let mut connection = slot.connection.lock().await;
        if let Some(open) = connection.as_ref().filter(|c| c.is_open()) {
            return Ok(open.clone());
        }
        let down_until = *slot.down_until.lock().expect("down_until lock");
        if down_until.is_some_and(|until| Instant::now() < until) {
            return Err(ClientError::Connection {
                node,
                reason: "down (a recent connect failed)".into(),
            });
        }
        let connect = Connection::connect(
            node,
            &slot.endpoint,
            &self.token,
            &self.client_name,
            self.requests_inflight_max,
        );
        let result = match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Connection {
                node,
                reason: format!("connect and HELLO took over {:?}", self.connect_timeout),
            }),
        };
        match result {
            Ok(opened) => {
                *connection = Some(opened.clone());
                *slot.down_until.lock().expect("down_until lock") = None;
                Ok(opened)
            }
            Err(error) => {
                *connection = None;
                let until = Instant::now() + self.node_down_retry_after;
                *slot.down_until.lock().expect("down_until lock") = Some(until);
                tracing::debug!(%node, %error, "node unreachable");
                Err(error)
            }
        }
    }

    /// Sends a request to `node` and waits for the reply; retried once on a fresh connection
    /// if the connection it went out on broke.
    pub async fn call<M: Meta>(&self, node: NodeId, meta: &M, body: Bytes) -> Result<Reply> {
        let connection = self.connection(node).await?;
        match connection
            .call(meta, body.clone(), self.request_timeout)
            .await
        {
            Err(ClientError::Connection { .. }) if !connection.is_open() => {
                let connection = self.connection(node).await?;
                connection.call(meta, body, self.request_timeout).await
            }
            result => result,
        }
    }

    /// SHARD_PUT: stores one shard; the node acknowledges once it is durable.
    pub async fn shard_put(
        &self,
        node: NodeId,
        stripe_id: StripeId,
        shard: ShardInfo,
        body: Bytes,
    ) -> Result<PutOutcome> {
        let request = ShardPut { stripe_id, shard };
        match self.call(node, &request, body).await?.meta {
            Response::ShardPut(reply) => Ok(reply.outcome),
            other => Err(unexpected(node, &other)),
        }
    }

    /// SHARD_DELETE: drops `node`'s shard of `stripe_id`; returns whether it held one.
    pub async fn shard_delete(&self, node: NodeId, stripe_id: StripeId) -> Result<bool> {
        match self
            .call(node, &ShardDelete { stripe_id }, Bytes::new())
            .await?
            .meta
        {
            Response::ShardDelete(reply) => Ok(reply.existed),
            other => Err(unexpected(node, &other)),
        }
    }

    /// SHARD_GET of the whole shard: its info and bytes, checked against the shard's length
    /// and CRC32C (a mismatch is [`ClientError::Protocol`]).
    pub async fn shard_get(&self, node: NodeId, stripe_id: StripeId) -> Result<(ShardInfo, Bytes)> {
        let request = ShardGet {
            stripe_id,
            range: None,
        };
        let reply = self.call(node, &request, Bytes::new()).await?;
        let Response::ShardGet(meta) = reply.meta else {
            return Err(unexpected(node, &reply.meta));
        };
        let bad = |reason| ClientError::Protocol {
            node,
            source: ProtoError::InvalidField {
                field: "shard",
                reason,
            },
        };
        if meta.offset != 0 || reply.body.len() as u64 != meta.shard.shard_bytes {
            return Err(bad("a whole-shard read returned part of the shard"));
        }
        // The frames' checksums, verified as they arrived, add up to the body's: no second
        // pass over the bytes.
        if reply.body_crc != meta.shard.shard_crc {
            return Err(bad("the shard failed its CRC32C"));
        }
        Ok((meta.shard, reply.body))
    }

    /// SHARD_STAT: what `node` holds of the stripe (`None`: nothing).
    pub async fn shard_stat(&self, node: NodeId, stripe_id: StripeId) -> Result<Option<ShardInfo>> {
        match self
            .call(node, &ShardStat { stripe_id }, Bytes::new())
            .await
        {
            Ok(Reply {
                meta: Response::ShardStat(reply),
                ..
            }) => Ok(Some(reply.shard)),
            Ok(other) => Err(unexpected(node, &other.meta)),
            Err(error) if error.is_remote_not_found() => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// HINT_PUT: asks `node` to keep a hint (move or rebuild a shard on its home node once
    /// that is up); returns how many hints `node` keeps now.
    pub async fn hint_put(&self, node: NodeId, request: &HintPut) -> Result<u32> {
        match self.call(node, request, Bytes::new()).await?.meta {
            Response::HintPut(reply) => Ok(reply.hints_pending),
            other => Err(unexpected(node, &other)),
        }
    }

    /// META_PUT: whether the value was applied (false: a newer one is stored).
    pub async fn meta_put(&self, node: NodeId, request: &MetaPut, value: Bytes) -> Result<bool> {
        match self.call(node, request, value).await?.meta {
            Response::MetaPut(reply) => Ok(reply.applied),
            other => Err(unexpected(node, &other)),
        }
    }

    /// META_GET: the stored value or tombstone, `None` if the node never heard of the key.
    pub async fn meta_get(&self, node: NodeId, request: &MetaGet) -> Result<Option<MetaValue>> {
        match self.call(node, request, Bytes::new()).await {
            Ok(Reply {
                meta: Response::MetaGet(reply),
                body,
                ..
            }) => Ok(Some(MetaValue {
                hlc_timestamp: reply.hlc_timestamp,
                deleted: reply.deleted,
                value: body,
            })),
            Ok(other) => Err(unexpected(node, &other.meta)),
            Err(error) if error.is_remote_not_found() => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// META_DELETE: whether the tombstone was applied.
    pub async fn meta_delete(&self, node: NodeId, request: &MetaDelete) -> Result<bool> {
        match self.call(node, request, Bytes::new()).await?.meta {
            Response::MetaDelete(reply) => Ok(reply.applied),
            other => Err(unexpected(node, &other)),
        }
    }

    /// META_LIST: one page of entries and the node's continuation (empty on its last page).
    pub async fn meta_list(
        &self,
        node: NodeId,
        request: &MetaList,
    ) -> Result<(Vec<ListEntry>, Vec<u8>)> {
        let reply = self.call(node, request, Bytes::new()).await?;
        let Response::MetaList(meta) = reply.meta else {
            return Err(unexpected(node, &reply.meta));
        };
        let entries = decode_list_entries(&reply.body, meta.entries)
            .map_err(|source| ClientError::Protocol { node, source })?;
        Ok((entries, meta.continuation))
    }

    /// SHARD_LIST: one page of the stripes `node` holds a shard of, and whether more follow.
    pub async fn shard_list(
        &self,
        node: NodeId,
        after: Option<StripeId>,
        limit: u32,
    ) -> Result<(Vec<StripeId>, bool)> {
        let reply = self
            .call(node, &ShardList { after, limit }, Bytes::new())
            .await?;
        let Response::ShardList(meta) = reply.meta else {
            return Err(unexpected(node, &reply.meta));
        };
        let ids = decode_stripe_ids(&reply.body, meta.stripes)
            .map_err(|source| ClientError::Protocol { node, source })?;
        Ok((ids, meta.more))
    }

    /// META_NAMESPACES: one page of the namespaces `node` holds metadata of.
    pub async fn meta_namespaces(
        &self,
        node: NodeId,
        after: &str,
        limit: u32,
    ) -> Result<(Vec<String>, bool)> {
        let request = MetaNamespaces {
            after: after.to_owned(),
            limit,
        };
        let reply = self.call(node, &request, Bytes::new()).await?;
        let Response::MetaNamespaces(meta) = reply.meta else {
            return Err(unexpected(node, &reply.meta));
        };
        let namespaces = decode_namespaces(&reply.body, meta.namespaces)
            .map_err(|source| ClientError::Protocol { node, source })?;
        Ok((namespaces, meta.more))
    }

    /// GC_SWEEP: asks `node` to condemn, or drop if condemned long enough, these shards and
    /// manifests (never what it wrote within the grace period).
    pub async fn gc_sweep(
        &self,
        node: NodeId,
        run: SweepRun,
        shards: &[StripeId],
        manifests: &[ManifestRef],
    ) -> Result<GcSweepReply> {
        let (request, body) = encode_sweep_body(run, shards, manifests)
            .map_err(|source| ClientError::Protocol { node, source })?;
        match self.call(node, &request, Bytes::from(body)).await?.meta {
            Response::GcSweep(reply) => Ok(reply),
            other => Err(unexpected(node, &other)),
        }
    }

    /// MEMBERS_GET: `node`'s ring epoch and member list.
    pub async fn members_get(&self, node: NodeId) -> Result<(u64, Vec<MemberEntry>)> {
        let reply = self.call(node, &MembersGet, Bytes::new()).await?;
        let Response::MembersGet(MembersGetReply(header)) = reply.meta else {
            return Err(unexpected(node, &reply.meta));
        };
        let members = decode_members(&reply.body, header.members)
            .map_err(|source| ClientError::Protocol { node, source })?;
        Ok((header.epoch, members))
    }

    /// MEMBERS_PUT: offers `node` the list at `epoch`; returns whether it took it and the
    /// epoch it is on.
    pub async fn members_put(
        &self,
        node: NodeId,
        epoch: u64,
        members: &[MemberEntry],
    ) -> Result<MembersPutReply> {
        let body =
            encode_members(members).map_err(|source| ClientError::Protocol { node, source })?;
        let header = MemberListHeader {
            epoch,
            members: members.len() as u32,
            body_bytes: body.len() as u32,
        };
        match self
            .call(node, &MembersPut(header), Bytes::from(body))
            .await?
            .meta
        {
            Response::MembersPut(reply) => Ok(reply),
            other => Err(unexpected(node, &other)),
        }
    }

    /// NODE_STATUS.
    pub async fn node_status(&self, node: NodeId) -> Result<NodeStatusReply> {
        match self.call(node, &NodeStatus, Bytes::new()).await?.meta {
            Response::NodeStatus(reply) => Ok(reply),
            other => Err(unexpected(node, &other)),
        }
    }
}

/// A reply of the wrong op (the connection checks ops, so this is a bug somewhere).
fn unexpected(node: NodeId, response: &Response) -> ClientError {
    tracing::error!(%node, op = %response.op(), "reply of an unexpected op");
    ClientError::Protocol {
        node,
        source: ProtoError::InvalidField {
            field: "op",
            reason: "a reply of an unexpected op",
        },
    }
}

/// The shard index a layout names (0 for whole-stripe shards).
pub fn shard_index(layout: &ShardLayout) -> usize {
    match *layout {
        ShardLayout::Whole => 0,
        ShardLayout::Erasure { index, .. } => usize::from(index),
    }
}
