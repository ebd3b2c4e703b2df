//! Membership in etcd (`membership = "etcd"`): the authoritative member list and its ring
//! epoch live in etcd, every node registers there under a lease and follows the list with a
//! watch.
//!
//! Keys, under the cluster's `etcd_prefix`:
//! - `<prefix>/members`: the member list as JSON (`{"members": [...]}`, the fields of a
//!   `[[members]]` table). The ring epoch **is this key's `mod_revision`**, so epochs only
//!   grow and every change has one. Changes are compare-and-swap transactions on that
//!   revision (on "the key does not exist" for the first list), so two changes at once never
//!   lose one of them.
//! - `<prefix>/nodes/<id>`: each running node's own entry (zone, weight, addresses), put
//!   under a lease of `etcd_lease_ttl_ms` that the node keeps alive. It says who is running
//!   and registered; it does not decide up or down (heartbeats on the peer plane do) and a
//!   lapsed lease never changes the ring (that would move data on every restart).
//!
//! A node's session: connect, take a lease, register, make sure the list exists (the first
//! node of a new cluster writes its config's `members`) and holds this node (if `etcd_join`,
//! a node adds itself, once per process: a node removed while it runs is not added back),
//! apply the list, then watch the key from the next revision and apply each new list. If
//! etcd cannot be reached, or the watch or lease fails, the node keeps serving on the last
//! list it applied (the data path never waits for etcd) and starts a new session with
//! backoff; the watch resumes from the revision after the last list applied, so a change
//! made meanwhile arrives when etcd returns.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use async_trait::async_trait;
use etcd_client::{
    Client as Etcd, Compare, CompareOp, ConnectOptions, EventType, PutOptions, Txn, TxnOp,
    WatchOptions,
};
use nabu_proto::ops::MemberEntry;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::provider::{EpochMembers, ListUpdate, MemberEdit, MemberListProvider};
use crate::config::{MemberConfig, MembershipKind};
use crate::node::{Node, until_stopped};

/// How long one etcd request may take before the session gives up on it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The first wait before a new session after a failed one; doubled up to the max.
const RETRY_BACKOFF_MIN: Duration = Duration::from_millis(200);
/// The longest wait between sessions.
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The member-list value in etcd.
#[derive(Debug, Serialize, Deserialize)]
struct StoredList {
    members: Vec<MemberConfig>,
}

/// A cluster's member list in etcd: the etcd provider of [`MemberListProvider`].
#[derive(Clone)]
pub struct EtcdMembers {
    etcd: Etcd,
    prefix: String,
}

impl std::fmt::Debug for EtcdMembers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdMembers")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl EtcdMembers {
    /// Connects to etcd at `endpoints` for the cluster under `prefix`.
    pub async fn connect(endpoints: &[String], prefix: &str) -> anyhow::Result<Self> {
        let options = ConnectOptions::new()
            .with_connect_timeout(REQUEST_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT);
        let etcd = tokio::time::timeout(REQUEST_TIMEOUT, Etcd::connect(endpoints, Some(options)))
            .await
            .map_err(|_| anyhow::anyhow!("no answer within {REQUEST_TIMEOUT:?}"))
            .and_then(|connected| connected.map_err(anyhow::Error::from))
            .with_context(|| format!("connect to etcd at {}", endpoints.join(",")))?;
        Ok(Self {
            etcd,
            prefix: prefix.to_owned(),
        })
    }

    /// The key of the member list.
    pub fn members_key(&self) -> String {
        format!("{}/members", self.prefix)
    }

    /// The key node `id` registers under.
    pub fn node_key(&self, id: u32) -> String {
        format!("{}/nodes/{id}", self.prefix)
    }

    /// The ids of the nodes registered now (their leases alive), in id order.
    pub async fn registered(&self) -> anyhow::Result<Vec<u32>> {
        let prefix = format!("{}/nodes/", self.prefix);
        let options = etcd_client::GetOptions::new()
            .with_prefix()
            .with_keys_only();
        let reply = self
            .etcd
            .clone()
            .get(prefix.clone(), Some(options))
            .await
            .context("list registered nodes in etcd")?;
        let mut ids: Vec<u32> = reply
            .kvs()
            .iter()
            .filter_map(|kv| kv.key_str().ok()?.strip_prefix(&prefix)?.parse().ok())
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// The list and its revision, or `None` where no list was written yet.
    async fn read(&self) -> anyhow::Result<Option<EpochMembers>> {
        let reply = self
            .etcd
            .clone()
            .get(self.members_key(), None)
            .await
            .context("read the member list from etcd")?;
        reply
            .kvs()
            .first()
            .map(|kv| decode(kv.value(), kv.mod_revision()))
            .transpose()
    }
}

/// A list from etcd at `revision`, checked.
fn decode(value: &[u8], revision: i64) -> anyhow::Result<EpochMembers> {
    let stored: StoredList =
        serde_json::from_slice(value).context("parse the member list in etcd")?;
    Ok(EpochMembers {
        epoch: u64::try_from(revision).context("a negative etcd revision")?,
        members: stored.members.iter().map(MemberConfig::entry).collect(),
    })
}

fn encode(members: &[MemberEntry]) -> Vec<u8> {
    let stored = StoredList {
        members: members.iter().map(MemberConfig::from_entry).collect(),
    };
    serde_json::to_vec(&stored).expect("a member list serialises")
}

#[async_trait]
impl MemberListProvider for EtcdMembers {
    fn kind(&self) -> MembershipKind {
        MembershipKind::Etcd
    }

    async fn current(&self) -> anyhow::Result<EpochMembers> {
        Ok(self.read().await?.unwrap_or(EpochMembers {
            epoch: 0,
            members: Vec::new(),
        }))
    }

    async fn update(&self, edit: &MemberEdit<'_>) -> anyhow::Result<ListUpdate> {
        let key = self.members_key();
        loop {
            let seen = self.read().await?;
            let mut members = seen
                .as_ref()
                .map(|list| list.members.clone())
                .unwrap_or_default();
            if !edit(&mut members)? {
                let list = seen.unwrap_or(EpochMembers {
                    epoch: 0,
                    members: Vec::new(),
                });
                return Ok(ListUpdate {
                    list,
                    changed: false,
                    not_taken: Vec::new(),
                });
            }
            if !members.iter().any(|member| member.weight > 0) {
                bail!("no member would have a weight above 0: nothing could be placed");
            }
            // Only if nobody changed the list since it was read (or, for the first list,
            // nobody wrote one).
            let unchanged_since = match &seen {
                Some(list) => Compare::mod_revision(
                    key.clone(),
                    CompareOp::Equal,
                    i64::try_from(list.epoch).context("epoch out of etcd's range")?,
                ),
                None => Compare::create_revision(key.clone(), CompareOp::Equal, 0),
            };
            let txn = Txn::new().when([unchanged_since]).and_then([TxnOp::put(
                key.clone(),
                encode(&members),
                None,
            )]);
            let reply = self
                .etcd
                .clone()
                .txn(txn)
                .await
                .context("write the member list to etcd")?;
            if reply.succeeded() {
                let revision = reply
                    .header()
                    .map(|header| header.revision())
                    .context("etcd's reply has no header")?;
                let epoch = u64::try_from(revision).context("a negative etcd revision")?;
                return Ok(ListUpdate {
                    list: EpochMembers { epoch, members },
                    changed: true,
                    not_taken: Vec::new(),
                });
            }
            tracing::debug!("the member list changed under this update; reading it again");
        }
    }
}

/// Follows the member list in etcd for the node's life (see the module docs).
pub(crate) async fn run(node: Arc<Node>, mut shutdown: watch::Receiver<bool>) {
    let mut backoff = RETRY_BACKOFF_MIN;
    let joined = AtomicBool::new(false);
    loop {
        let mut stop = shutdown.clone();
        let result = tokio::select! {
            biased;
            result = session(&node, &joined, &mut shutdown) => result,
            () = until_stopped(&mut stop) => return,
        };
        node.metrics.etcd_connected.store(0, Ordering::Relaxed);
        match result {
            Ok(()) => return,
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    epoch = node.membership.epoch(),
                    retry_in_ms = backoff.as_millis() as u64,
                    "etcd session ended; serving on the last member list"
                );
            }
        }
        tokio::select! {
            biased;
            () = tokio::time::sleep(backoff) => {}
            () = until_stopped(&mut shutdown) => return,
        }
        backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
    }
}

/// One session: register, make sure the list holds this node, then apply every new list
/// until shutdown (`Ok`) or an etcd failure (`Err`).
async fn session(
    node: &Arc<Node>,
    joined: &AtomicBool,
    shutdown: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let config = &node.config;
    let members = EtcdMembers::connect(&config.etcd_endpoints, &config.etcd_prefix).await?;
    let mut etcd = members.etcd.clone();
    let ttl_s = i64::try_from(config.etcd_lease_ttl_ms.div_ceil(1_000)).unwrap_or(i64::MAX);
    let lease = etcd
        .lease_grant(ttl_s, None)
        .await
        .context("take a lease")?
        .id();
    let (mut keeper, mut kept) = etcd
        .lease_keep_alive(lease)
        .await
        .context("keep the lease alive")?;
    // This node as the list has it (its weight there wins), or as its config describes it.
    let own = node
        .membership
        .view()
        .member(config.id)
        .map_or_else(|| config.own_member().entry(), MemberConfig::entry);
    etcd.put(
        members.node_key(config.id),
        serde_json::to_vec(&MemberConfig::from_entry(&own))?,
        Some(PutOptions::new().with_lease(lease)),
    )
    .await
    .context("register this node")?;

    let list = ensure_listed(node, &members, &own, joined).await?;
    apply(node, &list).await;
    node.metrics.etcd_connected.store(1, Ordering::Relaxed);
    tracing::info!(
        epoch = list.epoch,
        members = list.members.len(),
        lease,
        "registered in etcd; following the member list"
    );

    let start = i64::try_from(node.membership.epoch().max(list.epoch) + 1).unwrap_or(i64::MAX);
    let mut changes = etcd
        .watch(
            members.members_key(),
            Some(WatchOptions::new().with_start_revision(start)),
        )
        .await
        .context("watch the member list")?;
    let mut renew = tokio::time::interval(Duration::from_millis(config.etcd_lease_ttl_ms / 3));
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = until_stopped(shutdown) => {
                // Leave the registry now rather than a lease TTL later.
                let _ = tokio::time::timeout(REQUEST_TIMEOUT, etcd.lease_revoke(lease)).await;
                return Ok(());
            }
            _ = renew.tick() => keeper.keep_alive().await.context("renew the lease")?,
            reply = kept.message() => {
                let reply = reply.context("lease keep-alive")?.context("the lease stream ended")?;
                if reply.ttl() <= 0 {
                    bail!("the lease expired (etcd was unreachable for longer than its TTL)");
                }
            }
            reply = changes.message() => {
                let reply = reply.context("watch the member list")?.context("the watch ended")?;
                if reply.canceled() {
                    bail!("etcd cancelled the watch: {}", reply.cancel_reason());
                }
                for event in reply.events() {
                    let Some(kv) = event.kv() else { continue };
                    if event.event_type() == EventType::Delete {
                        tracing::error!("the member list was deleted from etcd; keeping the last one");
                        continue;
                    }
                    match decode(kv.value(), kv.mod_revision()) {
                        Ok(list) => apply(node, &list).await,
                        Err(error) => tracing::error!(error = format!("{error:#}"), "ignoring a member list in etcd"),
                    }
                }
            }
        }
    }
}

/// The list in etcd once it holds this node: written from the config's `members` if none
/// exists, this node added if it is missing and may join.
async fn ensure_listed(
    node: &Arc<Node>,
    members: &EtcdMembers,
    own: &MemberEntry,
    joined: &AtomicBool,
) -> anyhow::Result<EpochMembers> {
    let config = &node.config;
    let first_list: Vec<MemberEntry> = config
        .effective_members()
        .iter()
        .map(MemberConfig::entry)
        .collect();
    let may_join = config.etcd_join && !joined.load(Ordering::Relaxed);
    let edit = |list: &mut Vec<MemberEntry>| {
        let mut changed = false;
        if list.is_empty() {
            // A new cluster: its first node writes the list every node was configured with.
            list.clone_from(&first_list);
            changed = true;
        }
        if may_join && !list.iter().any(|member| member.id == own.id) {
            list.push(own.clone());
            changed = true;
        }
        Ok(changed)
    };
    let ListUpdate { list, changed, .. } = members.update(&edit).await?;
    if list.members.iter().any(|member| member.id == own.id) {
        if changed {
            tracing::info!(
                epoch = list.epoch,
                "this node is on the member list in etcd"
            );
        }
        joined.store(true, Ordering::Relaxed);
    } else if !may_join {
        tracing::warn!(
            "this node is not on the member list in etcd and does not add itself (etcd_join \
             is off, or it was removed): it serves nothing new until `nabu node add` adds it"
        );
    }
    Ok(list)
}

/// Offers `list` to the node (a list at or below its epoch changes nothing).
async fn apply(node: &Arc<Node>, list: &EpochMembers) {
    let taker = Arc::clone(node);
    let EpochMembers { epoch, members } = list.clone();
    let offered =
        nabu_client::sim::spawn_blocking(move || taker.membership.offer(epoch, &members)).await;
    match offered {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) if node.membership.epoch() > list.epoch => tracing::warn!(
            etcd_epoch = list.epoch,
            epoch = node.membership.epoch(),
            "the member list in etcd is older than this node's; keeping this node's (was etcd \
             recreated? a node's last list is in <data dir>/members.json)"
        ),
        Ok(Ok(false)) => {}
        Ok(Err(error)) => {
            tracing::error!(
                epoch,
                error = format!("{error:#}"),
                "refusing a member list from etcd"
            )
        }
        Err(error) => tracing::error!(%error, "applying a member list failed"),
    }
}
