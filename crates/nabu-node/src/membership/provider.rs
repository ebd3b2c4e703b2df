//! Where the authoritative member list lives, behind one trait with two providers:
//! [`StaticMembers`] (the members themselves hold it; a change is pushed to each of them) and
//! [`EtcdMembers`](super::etcd::EtcdMembers) (etcd holds it; nodes watch it).
//!
//! Both give the same two operations, which is all `nabu node add|drain|remove` and a node
//! joining by itself need: read the current list with its ring epoch, and change it against
//! that list (a compare-and-swap in etcd, so two changes at once never lose one of them).

use async_trait::async_trait;
use nabu_client::Client;
use nabu_core::ring::NodeId;
use nabu_proto::ops::MemberEntry;

use crate::config::MembershipKind;

/// A change to a member list: edits the list in place and says whether it changed it
/// (`Ok(false)`: nothing to do, so no new epoch), or refuses with the reason.
pub type MemberEdit<'a> = dyn Fn(&mut Vec<MemberEntry>) -> anyhow::Result<bool> + Send + Sync + 'a;

/// A member list and its ring epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochMembers {
    /// The ring epoch.
    pub epoch: u64,
    /// The members, in list order.
    pub members: Vec<MemberEntry>,
}

/// What [`MemberListProvider::update`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListUpdate {
    /// The list in force after it (the unchanged one when the edit changed nothing).
    pub list: EpochMembers,
    /// Whether this call changed the list.
    pub changed: bool,
    /// Members that did not take the new list yet, and why (static membership only: they
    /// catch up from their peers; under etcd every node follows the list itself).
    pub not_taken: Vec<(NodeId, String)>,
}

/// Where a cluster's authoritative member list lives.
#[async_trait]
pub trait MemberListProvider: Send + Sync + std::fmt::Debug {
    /// Which provider this is.
    fn kind(&self) -> MembershipKind;

    /// The authoritative list now (an empty list at epoch 0 where none was ever written).
    async fn current(&self) -> anyhow::Result<EpochMembers>;

    /// Applies `edit` to the current list and makes the result the next epoch, starting over
    /// from a fresh read when another change got in first.
    async fn update(&self, edit: &MemberEdit<'_>) -> anyhow::Result<ListUpdate>;
}

/// The static provider: every member keeps the list (`members.json`), a change goes to each
/// of them with MEMBERS_PUT at the next epoch, and members that missed it catch up from
/// their peers (HELLO carries the epoch). Two changes made at the same moment from two
/// places can both claim one epoch; the static provider is for clusters one operator runs.
#[derive(Debug, Clone)]
pub struct StaticMembers {
    client: Client,
}

impl StaticMembers {
    /// The list as the members reached through `client` hold it.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

#[async_trait]
impl MemberListProvider for StaticMembers {
    fn kind(&self) -> MembershipKind {
        MembershipKind::Static
    }

    async fn current(&self) -> anyhow::Result<EpochMembers> {
        // Every reachable member is asked: a change is made against the newest list.
        let members = self.client.ring().members().len();
        let (epoch, members) =
            self.client.newest_members(members).await.map_err(|error| {
                anyhow::anyhow!("no member answered with its member list: {error}")
            })?;
        Ok(EpochMembers { epoch, members })
    }

    async fn update(&self, edit: &MemberEdit<'_>) -> anyhow::Result<ListUpdate> {
        let mut list = self.current().await?;
        if !edit(&mut list.members)? {
            return Ok(ListUpdate {
                list,
                changed: false,
                not_taken: Vec::new(),
            });
        }
        list.epoch += 1;
        let refused = self
            .client
            .publish_members(list.epoch, &list.members)
            .await?;
        // A node left out of the list need not take it.
        let not_taken = refused
            .into_iter()
            .filter(|(node, _)| list.members.iter().any(|member| member.id == *node))
            .collect();
        Ok(ListUpdate {
            list,
            changed: true,
            not_taken,
        })
    }
}
