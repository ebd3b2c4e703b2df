//! KV calls on behalf of a client that is not ring-aware (the RESP gateway) or that asked one
//! node for the whole answer (KV_PREFIX_LOOKUP): keys are grouped by owner, this node's own
//! keys go straight to its pool, the others to their owners over the data plane (owners in
//! parallel), through the node's [`nabu_client::Client`].
//!
//! A cache answers an unreachable owner with misses (GET, EXISTS, prefix lookup) rather than
//! errors; writes and deletes report the error.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use nabu_client::{ClientConfig, ClientError, ClusterMap, Endpoint, KvItem, MemberAddr};
use nabu_core::ring::NodeId;
use nabu_proto::ops::{KV_SCAN_COUNT_MAX, KvPutOutcome, KvTtlAction, KvTtlReply};
use tokio::task::JoinSet;

use super::KvError;
use crate::NodeConfig;
use crate::config::ConfigError;
use crate::node::Node;

/// Why a routed KV call failed.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// This node's pool refused it.
    #[error(transparent)]
    Local(#[from] KvError),
    /// The owner node refused it or could not be reached.
    #[error(transparent)]
    Remote(#[from] ClientError),
}

/// The node's client of its own cluster (connects lazily, on the first forwarded key).
pub fn cluster_client(config: &NodeConfig) -> Result<nabu_client::Client, ConfigError> {
    let members = config
        .effective_members()
        .into_iter()
        .map(|member| MemberAddr {
            id: NodeId(member.id),
            zone: member.zone,
            weight: member.weight,
            data_addr: Endpoint::from(member.data_addr),
        })
        .collect();
    let token = config
        .token()
        .map_err(|error| ConfigError::Invalid(format!("cluster_token: {error}")))?;
    let cluster = ClusterMap {
        token,
        members,
        ring_epoch: config.ring_epoch,
    };
    let client_config = ClientConfig {
        client_name: format!("nabu-node/{} kv-forward", config.id),
        ..ClientConfig::default()
    };
    nabu_client::Client::new(cluster, client_config)
        .map_err(|error| ConfigError::Invalid(format!("the KV forwarding client: {error}")))
}

fn is_unreachable(error: &ClientError) -> bool {
    matches!(
        error,
        ClientError::Connection { .. } | ClientError::Timeout { .. }
    )
}

/// Runs `local` for this node's share of `keys` and `remote` for each other owner's (both
/// given the indexes of their keys), owners in parallel; returns one result per key in
/// order. `on_unreachable` fills the keys of an owner that cannot be reached (`None`: the
/// error is returned).
async fn per_owner<T, L, R, F>(
    node: &Arc<Node>,
    namespace: &str,
    keys: &[Vec<u8>],
    local: L,
    remote: R,
    on_unreachable: Option<T>,
) -> Result<Vec<T>, RouteError>
where
    T: Clone + Send + 'static,
    L: Fn(&Node, &[usize]) -> Result<Vec<T>, RouteError>,
    R: Fn(nabu_client::Client, NodeId, String, &[usize]) -> F,
    F: Future<Output = Result<Vec<T>, ClientError>> + Send + 'static,
{
    let groups = node.cluster.kv_group_by_owner(namespace, keys);
    let mut results: Vec<Option<T>> = vec![None; keys.len()];
    let mut calls = Vec::new();
    for (owner, indexes) in groups {
        if owner == node.id {
            let values = local(node, &indexes)?;
            for (index, value) in indexes.into_iter().zip(values) {
                results[index] = Some(value);
            }
            continue;
        }
        let call = remote(node.cluster.clone(), owner, namespace.to_owned(), &indexes);
        calls.push(async move { (owner, indexes, call.await) });
    }
    // One remote owner (the common case for one key) is awaited in place; several in
    // parallel tasks.
    let mut answers = Vec::with_capacity(calls.len());
    if calls.len() == 1 {
        answers.push(calls.pop().expect("one call").await);
    } else {
        let mut tasks = JoinSet::new();
        calls.into_iter().for_each(|call| {
            tasks.spawn(call);
        });
        while let Some(joined) = tasks.join_next().await {
            answers.push(joined.expect("a KV forwarding task panicked"));
        }
    }
    for (owner, indexes, result) in answers {
        match result {
            Ok(values) => {
                for (index, value) in indexes.into_iter().zip(values) {
                    results[index] = Some(value);
                }
            }
            Err(error) if is_unreachable(&error) && on_unreachable.is_some() => {
                tracing::debug!(%owner, %error, "KV owner unreachable; answering misses");
                for index in indexes {
                    results[index] = on_unreachable.clone();
                }
            }
            Err(error) => return Err(error.into()),
        }
    }
    Ok(results
        .into_iter()
        .map(|result| result.expect("every key answered"))
        .collect())
}

fn pick(keys: &[Vec<u8>], indexes: &[usize]) -> Vec<Vec<u8>> {
    indexes.iter().map(|&index| keys[index].clone()).collect()
}

/// Reads `keys`: each value or `None`.
pub async fn get(
    node: &Arc<Node>,
    namespace: &str,
    keys: &[Vec<u8>],
) -> Result<Vec<Option<Bytes>>, RouteError> {
    per_owner(
        node,
        namespace,
        keys,
        |node, indexes| {
            Ok(indexes
                .iter()
                .map(|&index| node.kv.get(namespace, &keys[index]).map(|(value, _)| value))
                .collect())
        },
        |client, owner, namespace, indexes| {
            let batch = pick(keys, indexes);
            async move { client.kv_get_on(owner, &namespace, &batch).await }
        },
        Some(None),
    )
    .await
}

/// Which of `keys` exist, leasing them for `lease_ms` (0: no lease).
pub async fn exists(
    node: &Arc<Node>,
    namespace: &str,
    keys: &[Vec<u8>],
    lease_ms: u64,
) -> Result<Vec<bool>, RouteError> {
    let lease = (lease_ms > 0).then(|| Duration::from_millis(lease_ms));
    per_owner(
        node,
        namespace,
        keys,
        |node, indexes| Ok(node.kv.exists(namespace, &pick(keys, indexes), lease)),
        |client, owner, namespace, indexes| {
            let batch = pick(keys, indexes);
            async move {
                client
                    .kv_exists_on(owner, &namespace, &batch, lease_ms)
                    .await
            }
        },
        Some(false),
    )
    .await
}

/// The length of the longest prefix of `keys` that all exist (leased for `lease_ms`). Keys
/// after the first missing one that exist are leased too (the owners are asked in parallel,
/// before anyone knows where the prefix ends); their leases simply run out.
pub async fn prefix_lookup(
    node: &Arc<Node>,
    namespace: &str,
    keys: &[Vec<u8>],
    lease_ms: u64,
) -> Result<usize, RouteError> {
    let found = exists(node, namespace, keys, lease_ms).await?;
    Ok(found
        .iter()
        .position(|exists| !exists)
        .unwrap_or(found.len()))
}

/// Stores `items` (distinct keys), each on its owner: the outcome of each in order.
pub async fn put(
    node: &Arc<Node>,
    namespace: &str,
    items: Vec<KvItem>,
) -> Result<Vec<KvPutOutcome>, RouteError> {
    let keys: Vec<Vec<u8>> = items.iter().map(|item| item.key.clone()).collect();
    per_owner(
        node,
        namespace,
        &keys,
        |node, indexes| {
            indexes
                .iter()
                .map(|&index| put_local(node, namespace, &items[index]))
                .collect()
        },
        |client, owner, namespace, indexes| {
            let batch: Vec<KvItem> = indexes.iter().map(|&index| items[index].clone()).collect();
            async move { client.kv_put_on(owner, &namespace, &batch).await }
        },
        None,
    )
    .await
}

fn put_local(node: &Node, namespace: &str, item: &KvItem) -> Result<KvPutOutcome, RouteError> {
    let ttl = (item.ttl_ms > 0).then(|| Duration::from_millis(item.ttl_ms));
    Ok(node.kv.put(
        namespace,
        &item.key,
        item.value.clone(),
        ttl,
        item.pin,
        item.condition,
    )?)
}

/// Deletes `keys` (distinct): how many held a value.
pub async fn delete(
    node: &Arc<Node>,
    namespace: &str,
    keys: &[Vec<u8>],
) -> Result<u64, RouteError> {
    // KV_DELETE answers one count per batch: it stands at the batch's first key, zeros at the
    // others, so the per-key results add up to the total.
    let counts = per_owner(
        node,
        namespace,
        keys,
        |node, indexes| {
            let mut counts = vec![0; indexes.len()];
            counts[0] = u64::from(node.kv.delete(namespace, &pick(keys, indexes)));
            Ok(counts)
        },
        |client, owner, namespace, indexes| {
            let batch = pick(keys, indexes);
            async move {
                let deleted = client.kv_delete_on(owner, &namespace, &batch).await?;
                let mut counts = vec![0; batch.len()];
                counts[0] = deleted;
                Ok(counts)
            }
        },
        None,
    )
    .await?;
    Ok(counts.iter().sum())
}

/// Reads or changes one key's time to live.
pub async fn ttl(
    node: &Arc<Node>,
    namespace: &str,
    key: &[u8],
    action: KvTtlAction,
    ttl_ms: u64,
) -> Result<KvTtlReply, RouteError> {
    let owner = node.cluster.kv_owner(namespace, key);
    if owner == node.id {
        return Ok(node
            .kv
            .ttl(namespace, key, action, Duration::from_millis(ttl_ms)));
    }
    Ok(node
        .cluster
        .kv_ttl_on(owner, namespace, key, action, ttl_ms)
        .await?)
}

/// Member ids in a fixed order (for SCAN cursors).
fn member_ids(node: &Node) -> Vec<NodeId> {
    let mut ids: Vec<NodeId> = node.cluster.ring().members().iter().map(|m| m.id).collect();
    ids.sort();
    ids
}

/// Bits of a SCAN cursor that hold the node's own cursor; the bits above name the member.
const SCAN_NODE_CURSOR_BITS: u32 = 48;

/// One SCAN page over the whole cluster: `(next cursor, keys)`. The cursor's high 16 bits
/// name the member (by position in id order), the low 48 bits that member's KV_SCAN cursor.
/// An unreachable member is skipped.
pub async fn scan(
    node: &Arc<Node>,
    namespace: &str,
    cursor: u64,
    count: u32,
) -> Result<(u64, Vec<Vec<u8>>), RouteError> {
    let members = member_ids(node);
    let mut member = (cursor >> SCAN_NODE_CURSOR_BITS) as usize;
    let mut node_cursor = cursor & ((1 << SCAN_NODE_CURSOR_BITS) - 1);
    let count = count.clamp(1, KV_SCAN_COUNT_MAX);
    while member < members.len() {
        let id = members[member];
        let page = if id == node.id {
            let (keys, next, _) = node.kv.scan(namespace, node_cursor, count);
            Ok((next, keys))
        } else {
            node.cluster
                .kv_scan_on(id, namespace, node_cursor, count)
                .await
                .map(|(reply, keys)| (reply.next_cursor, keys))
        };
        let (next, keys) = match page {
            Ok(page) => page,
            Err(error) if is_unreachable(&error) => (0, Vec::new()),
            Err(error) => return Err(error.into()),
        };
        let next_cursor = if next != 0 {
            ((member as u64) << SCAN_NODE_CURSOR_BITS) | next
        } else if member + 1 < members.len() {
            (member as u64 + 1) << SCAN_NODE_CURSOR_BITS
        } else {
            0
        };
        if !keys.is_empty() || next_cursor == 0 {
            return Ok((next_cursor, keys));
        }
        member = (next_cursor >> SCAN_NODE_CURSOR_BITS) as usize;
        node_cursor = next_cursor & ((1 << SCAN_NODE_CURSOR_BITS) - 1);
    }
    Ok((0, Vec::new()))
}

/// Keys held in `namespace` over the whole cluster (unreachable members count 0).
pub async fn dbsize(node: &Arc<Node>, namespace: &str) -> Result<u64, RouteError> {
    let mut total = 0;
    for id in member_ids(node) {
        if id == node.id {
            total += node.kv.scan(namespace, 0, 0).2;
            continue;
        }
        match node.cluster.kv_scan_on(id, namespace, 0, 0).await {
            Ok((reply, _)) => total += reply.keys_total,
            Err(error) if is_unreachable(&error) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(total)
}
