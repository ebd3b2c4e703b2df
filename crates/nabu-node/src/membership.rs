//! The member list this node is on, and how it changes.
//!
//! A member list is versioned by its **ring epoch**. The node starts on the list of its config
//! (`members`, `ring_epoch`) or, if newer, the one it last applied (kept in
//! `<first data dir>/members.json`). MEMBERS_PUT offers a list: the node takes it only if its
//! epoch is higher, writes it durably (temp file, fsync, rename) before anything uses it, then
//! swaps it in and tells the jobs that follow membership (liveness, the cluster client, the
//! rebalancer) through a watch channel. So the same list pushed twice, or late, changes
//! nothing, and a restart never goes back to an older ring.
//!
//! The previous ring is kept beside the current one: until the rebalancer has moved a stripe,
//! its shards are where the previous ring placed them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::Context;
use nabu_core::ring::{Member, NodeId, Ring};
use nabu_proto::ops::MemberEntry;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::{MemberConfig, NodeConfig};

pub mod etcd;
pub mod provider;

/// The file a node keeps its last applied member list in.
pub const MEMBERS_FILE: &str = "members.json";

/// A member list and the rings it makes.
#[derive(Debug)]
pub struct MemberView {
    /// The list's ring epoch.
    pub epoch: u64,
    /// The members, in list order.
    pub members: Vec<MemberConfig>,
    /// The ring of this list.
    pub ring: Ring,
    /// The ring of the list before it (none until the first change this node saw).
    pub previous: Option<Ring>,
}

impl MemberView {
    /// Member `id`, if listed.
    pub fn member(&self, id: u32) -> Option<&MemberConfig> {
        self.members.iter().find(|member| member.id == id)
    }

    /// The list as MEMBERS_GET sends it.
    pub fn entries(&self) -> Vec<MemberEntry> {
        self.members.iter().map(MemberConfig::entry).collect()
    }
}

/// What `members.json` holds.
#[derive(Debug, Serialize, Deserialize)]
struct Persisted {
    epoch: u64,
    members: Vec<MemberConfig>,
}

/// The node's member list, swapped whole on change.
#[derive(Debug)]
pub struct Membership {
    view: RwLock<Arc<MemberView>>,
    changed: watch::Sender<u64>,
    path: PathBuf,
}

impl Membership {
    /// The list of `config`, or the one kept in the first data dir if that is newer.
    pub fn open(config: &NodeConfig) -> anyhow::Result<Self> {
        let path = config
            .data_dirs
            .first()
            .context("a node has a data dir")?
            .join(MEMBERS_FILE);
        let mut epoch = config.ring_epoch;
        let mut members = config.effective_members();
        if let Some(kept) = read_persisted(&path)?
            && kept.epoch > epoch
        {
            tracing::info!(
                epoch = kept.epoch,
                "starting on the member list applied last"
            );
            (epoch, members) = (kept.epoch, kept.members);
        }
        let ring = ring_of(epoch, &members)?;
        let view = MemberView {
            epoch,
            members,
            ring,
            previous: None,
        };
        Ok(Self {
            view: RwLock::new(Arc::new(view)),
            changed: watch::Sender::new(epoch),
            path,
        })
    }

    /// The current list.
    pub fn view(&self) -> Arc<MemberView> {
        Arc::clone(&self.view.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// The epoch now.
    pub fn epoch(&self) -> u64 {
        self.view().epoch
    }

    /// A receiver that sees each new epoch.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Applies the list at `epoch` if it is newer than the current one (blocking: it writes
    /// and syncs a file). Returns whether it did; an invalid list is an error and changes
    /// nothing.
    pub fn offer(&self, epoch: u64, entries: &[MemberEntry]) -> anyhow::Result<bool> {
        let members: Vec<MemberConfig> = entries.iter().map(MemberConfig::from_entry).collect();
        let mut ids: Vec<u32> = members.iter().map(|member| member.id).collect();
        ids.sort_unstable();
        ids.dedup();
        anyhow::ensure!(ids.len() == members.len(), "a member id is listed twice");
        anyhow::ensure!(
            members.iter().any(|member| member.weight > 0),
            "no member has a weight above 0: nothing could be placed"
        );
        let ring = ring_of(epoch, &members)?;
        let mut view = self.view.write().unwrap_or_else(|p| p.into_inner());
        if epoch <= view.epoch {
            return Ok(false);
        }
        write_persisted(&self.path, epoch, &members)?;
        let previous = Some(view.ring.clone());
        *view = Arc::new(MemberView {
            epoch,
            members,
            ring,
            previous,
        });
        drop(view);
        tracing::info!(epoch, members = ids.len(), "member list changed");
        self.changed.send_replace(epoch);
        Ok(true)
    }
}

fn ring_of(epoch: u64, members: &[MemberConfig]) -> anyhow::Result<Ring> {
    let ring_members = members
        .iter()
        .map(|member| Member {
            id: NodeId(member.id),
            zone: member.zone.clone(),
            weight: member.weight,
        })
        .collect();
    Ring::new(epoch, ring_members).context("build the ring of the member list")
}

fn read_persisted(path: &Path) -> anyhow::Result<Option<Persisted>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .with_context(|| format!("parse {}", path.display())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error).with_context(|| format!("read {}", path.display())),
    }
}

/// Writes the list durably: a temp file, synced, renamed over the old one, the dir synced.
fn write_persisted(path: &Path, epoch: u64, members: &[MemberConfig]) -> anyhow::Result<()> {
    use std::io::Write;
    let text = serde_json::to_vec_pretty(&Persisted {
        epoch,
        members: members.to_vec(),
    })?;
    let temp = path.with_extension("json.tmp");
    let mut file =
        std::fs::File::create(&temp).with_context(|| format!("create {}", temp.display()))?;
    file.write_all(&text)?;
    file.sync_all()?;
    std::fs::rename(&temp, path).with_context(|| format!("rename to {}", path.display()))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
