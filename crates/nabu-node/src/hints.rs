//! Hints: shards that belong on another node, kept durably until they are there.
//!
//! A writer whose placement node was down sends HINT_PUT (DESIGN.md §3): to the node that took
//! the shard in its place (a *handoff* hint: move this shard home), or, when no node could take
//! it, to nodes holding other shards of the stripe (a *repair* hint: rebuild the missing shard
//! on its home). Each hint is one store record (`records::hint_key`), so it survives restarts;
//! an in-memory table mirrors the records for the replay job ([`crate::repair`]), bounded by
//! `hints_max`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use nabu_core::id::StripeId;
use nabu_proto::ErrorCode;
use nabu_proto::ops::{HintKind, HintPut, ShardInfo};
use nabu_store::{Store, StoreError};

use crate::handler::OpError;
use crate::node::Node;
use crate::records::{decode_hint, encode_hint, hint_key, parse_hint_key};

/// One hint: shard `shard` of `stripe_id` belongs on node `home`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hint {
    /// The stripe.
    pub stripe_id: StripeId,
    /// The node the shard belongs on.
    pub home: u32,
    /// Move this node's copy, or rebuild.
    pub kind: HintKind,
    /// The shard that belongs on `home`.
    pub shard: ShardInfo,
}

/// The hints this node keeps.
#[derive(Debug)]
pub struct Hints {
    store: Arc<Store>,
    table: Mutex<HashMap<(StripeId, u32), (HintKind, ShardInfo)>>,
    hints_max: usize,
}

impl Hints {
    /// Loads the hint records of `store` (a record that does not decode is skipped and
    /// logged: a hint is advice, the shards themselves are elsewhere).
    pub fn open(store: Arc<Store>, hints_max: usize) -> Result<Self, StoreError> {
        let mut table = HashMap::new();
        for key in store.keys()? {
            let Some(address) = parse_hint_key(&key) else {
                continue;
            };
            let record = match store.get(&key) {
                Ok(Some(record)) => record,
                Ok(None) => continue,
                Err(error) => {
                    tracing::warn!(%error, "skipping an unreadable hint record at start-up");
                    continue;
                }
            };
            match decode_hint(&record) {
                Some(hint) => {
                    table.insert(address, hint);
                }
                None => tracing::warn!("skipping a hint record that does not decode"),
            }
        }
        Ok(Self {
            store,
            table: Mutex::new(table),
            hints_max,
        })
    }

    fn table(&self) -> MutexGuard<'_, HashMap<(StripeId, u32), (HintKind, ShardInfo)>> {
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Keeps `hint` durably (replacing one for the same stripe and home); returns how many
    /// hints are kept now.
    pub fn put(&self, hint: Hint) -> Result<usize, OpError> {
        let address = (hint.stripe_id, hint.home);
        {
            let table = self.table();
            if table.len() >= self.hints_max && !table.contains_key(&address) {
                return Err(OpError::new(
                    ErrorCode::BUSY,
                    format!("this node keeps hints_max = {} hints", self.hints_max),
                ));
            }
        }
        let key = hint_key(&hint.stripe_id, hint.home);
        self.store.put(&key, &encode_hint(hint.kind, &hint.shard))?;
        let mut table = self.table();
        table.insert(address, (hint.kind, hint.shard));
        Ok(table.len())
    }

    /// Forgets the hint for `stripe_id` and `home`, durably.
    pub fn remove(&self, stripe_id: &StripeId, home: u32) -> Result<(), OpError> {
        self.store.delete(&hint_key(stripe_id, home))?;
        self.table().remove(&(*stripe_id, home));
        Ok(())
    }

    /// Whether a hint for `stripe_id` and `home` is kept.
    pub fn contains(&self, stripe_id: &StripeId, home: u32) -> bool {
        self.table().contains_key(&(*stripe_id, home))
    }

    /// Every hint kept, in no particular order.
    pub fn all(&self) -> Vec<Hint> {
        self.matching(|_| true)
    }

    /// The hints kept for `stripe_id` (any home).
    pub fn of_stripe(&self, stripe_id: &StripeId) -> Vec<Hint> {
        self.matching(|id| id == stripe_id)
    }

    /// The matching hints in (stripe, home) order: replay then goes in the same order every
    /// time, whatever the table's hashing (the deterministic simulation relies on it).
    fn matching(&self, wanted: impl Fn(&StripeId) -> bool) -> Vec<Hint> {
        let mut hints: Vec<Hint> = self
            .table()
            .iter()
            .filter(|((id, _), _)| wanted(id))
            .map(|(&(stripe_id, home), &(kind, shard))| Hint {
                stripe_id,
                home,
                kind,
                shard,
            })
            .collect();
        hints.sort_unstable_by_key(|hint| (hint.stripe_id, hint.home));
        hints
    }

    /// How many hints are kept.
    pub fn len(&self) -> usize {
        self.table().len()
    }
}

/// HINT_PUT: checks the hint against this node and keeps it; returns the hints kept now.
pub fn put_hint(node: &Node, put: &HintPut) -> Result<usize, OpError> {
    if put.home == node.id.0 {
        return Err(OpError::new(
            ErrorCode::BAD_REQUEST,
            "a hint names another node as the shard's home, not this one",
        ));
    }
    if node.liveness.peer_addr(put.home).is_none() {
        return Err(OpError::new(
            ErrorCode::BAD_REQUEST,
            format!("node {} is not a member", put.home),
        ));
    }
    if put.kind == HintKind::Handoff && node.shards.stat(&put.stripe_id)? != put.shard {
        return Err(OpError::new(
            ErrorCode::NOT_FOUND,
            format!(
                "this node holds another shard of stripe {} than the hint names",
                put.stripe_id
            ),
        ));
    }
    node.hints.put(Hint {
        stripe_id: put.stripe_id,
        home: put.home,
        kind: put.kind,
        shard: put.shard,
    })
}
