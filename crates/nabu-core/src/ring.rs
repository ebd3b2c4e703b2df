//! The consistent-hash ring: which nodes hold a stripe.
//!
//! Each member owns `150 × weight` virtual nodes, points on a 64-bit circle derived from its
//! id by BLAKE3, so every node and client computes the same ring from the same member list.
//! The placement of an id is a pure function of `(members, id)`: start at the id's point,
//! walk clockwise, and collect distinct nodes — spread over distinct zones first — until the
//! policy's width.
//!
//! # Placement is a set; shard indexes are assigned, not recomputed
//!
//! A placement is the *set* of nodes a stripe lives on (listed in walk order). Adding one
//! node changes that set by at most one member (the newcomer in, the node it displaced out)
//! and removing a node changes only the sets it was in, by exactly one member — the greedy
//! walk over a sequence behaves like a matroid basis. Which shard *index* sits on which node
//! is fixed when the stripe is written (`i`-th node in walk order gets shard `i`, see
//! [`initial_assignment`]) and after that only changes through [`reassign`], which keeps
//! every shard whose node is still placed and hands each orphaned shard to a newcomer. So a
//! membership change moves at most one shard of any stripe, and in total about `1/(N+1)` of
//! all shards, the ideal.
//!
//! Recomputing indexes from the walk instead ("the i-th distinct node gets shard i") would
//! shift every shard after the newcomer's position (up to K+M−1 needless moves); no rule that
//! derives indexes from the member set alone can avoid that for every change (see
//! ARCHITECTURE.md), so readers learn a shard's index from the node that holds it.

use std::fmt;

/// Virtual nodes per unit of weight.
pub const VNODES_PER_WEIGHT: u32 = 150;

/// A storage node's id, stable for the node's life (a StatefulSet ordinal on Kubernetes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u32);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// One member of the ring as the member list describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The node's id.
    pub id: NodeId,
    /// Failure domain (rack, host, availability zone). Placement spreads over zones first.
    pub zone: String,
    /// Relative capacity: the node owns `150 × weight` virtual nodes. Zero owns none (a
    /// draining node keeps serving what it holds but receives nothing new).
    pub weight: u32,
}

impl Member {
    /// A member of weight 1 in `zone`.
    pub fn new(id: u32, zone: impl Into<String>) -> Self {
        Self {
            id: NodeId(id),
            zone: zone.into(),
            weight: 1,
        }
    }
}

/// Why a member list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// Two members share an id.
    #[error("node {0} is listed twice in the member list")]
    DuplicateNode(NodeId),
    /// A weight so large the ring would not fit in memory.
    #[error("node {node} has weight {weight}; at most {max} is supported")]
    WeightTooLarge { node: NodeId, weight: u32, max: u32 },
}

/// The largest weight one member may have (1,000 weight units are 150,000 virtual nodes).
pub const WEIGHT_MAX: u32 = 1000;

/// The ring built from one member list. Cheap to share (`Arc`), immutable; a membership
/// change builds a new ring with the next epoch.
#[derive(Clone)]
pub struct Ring {
    epoch: u64,
    members: Vec<Member>,
    /// Virtual node points, sorted ascending (struct-of-arrays: the binary search touches
    /// only this array).
    points: Vec<u64>,
    /// For each point, the index into `members` of its owner.
    owners: Vec<u32>,
    /// For each member, the index of its zone among the ring's distinct zones.
    zone_of_member: Vec<u32>,
    /// For each zone, how many of its members own virtual nodes.
    zone_sizes: Vec<u32>,
    /// How many members own virtual nodes.
    weighted_members: usize,
    /// For each value of a point's top [`BUCKET_BITS`] bits, the index of the first point at
    /// or above that bucket's start: turns the binary search over `150 × N` points (17 cache
    /// misses at 1000 nodes) into one table read and a search over a couple of points.
    buckets: Vec<u32>,
    /// How many zones have a member that owns virtual nodes.
    weighted_zones: usize,
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("epoch", &self.epoch)
            .field("members", &self.members.len())
            .field("vnodes", &self.points.len())
            .finish()
    }
}

impl Ring {
    /// Builds the ring of `members` at `epoch`. The order of `members` does not matter.
    pub fn new(epoch: u64, mut members: Vec<Member>) -> Result<Self, RingError> {
        members.sort_by_key(|member| member.id);
        for pair in members.windows(2) {
            if pair[0].id == pair[1].id {
                return Err(RingError::DuplicateNode(pair[0].id));
            }
        }
        if let Some(member) = members.iter().find(|m| m.weight > WEIGHT_MAX) {
            return Err(RingError::WeightTooLarge {
                node: member.id,
                weight: member.weight,
                max: WEIGHT_MAX,
            });
        }
        let mut zone_names: Vec<&str> = members.iter().map(|m| m.zone.as_str()).collect();
        zone_names.sort_unstable();
        zone_names.dedup();
        let zone_of_member: Vec<u32> = members
            .iter()
            .map(|m| {
                zone_names
                    .binary_search(&m.zone.as_str())
                    .expect("zone listed") as u32
            })
            .collect();
        let mut vnodes: Vec<(u64, u32)> = Vec::new();
        for (index, member) in members.iter().enumerate() {
            let count = member.weight * VNODES_PER_WEIGHT;
            vnodes.extend((0..count).map(|vnode| (vnode_point(member.id, vnode), index as u32)));
        }
        // Ties between points are broken by owner so the order is total and deterministic.
        vnodes.sort_unstable();
        let mut zone_sizes = vec![0u32; zone_names.len()];
        for (member, &zone) in members.iter().zip(&zone_of_member) {
            zone_sizes[zone as usize] += u32::from(member.weight > 0);
        }
        let weighted_members = members.iter().filter(|m| m.weight > 0).count();
        let weighted_zones = zone_sizes.iter().filter(|&&size| size > 0).count();
        let points: Vec<u64> = vnodes.iter().map(|&(point, _)| point).collect();
        let buckets = (0..1u64 << BUCKET_BITS)
            .map(|bucket| points.partition_point(|&p| p < bucket << (64 - BUCKET_BITS)) as u32)
            .collect();
        Ok(Self {
            buckets,
            weighted_members,
            weighted_zones,
            epoch,
            points,
            owners: vnodes.iter().map(|&(_, owner)| owner).collect(),
            members,
            zone_of_member,
            zone_sizes,
        })
    }

    /// The membership epoch this ring was built for.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The members, sorted by id.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The member with `id`, if listed.
    pub fn member(&self, id: NodeId) -> Option<&Member> {
        self.members
            .binary_search_by_key(&id, |m| m.id)
            .ok()
            .map(|index| &self.members[index])
    }

    /// Every virtual node as `(point, owner)`, in ring order (for the dashboard).
    pub fn vnodes(&self) -> impl Iterator<Item = (u64, NodeId)> + '_ {
        let owners = self.owners.iter().map(|&o| self.members[o as usize].id);
        self.points.iter().copied().zip(owners)
    }

    /// Each member's share of the ring (the arcs ending at its virtual nodes), summing to 1.
    pub fn ownership(&self) -> Vec<(NodeId, f64)> {
        let mut arcs = vec![0u128; self.members.len()];
        let count = self.points.len();
        for index in 0..count {
            let previous = self.points[(index + count - 1) % count];
            let arc = self.points[index].wrapping_sub(previous);
            let arc = if arc == 0 && count == 1 {
                u64::MAX
            } else {
                arc
            };
            arcs[self.owners[index] as usize] += u128::from(arc);
        }
        let total = arcs.iter().sum::<u128>().max(1) as f64;
        let ids = self.members.iter().map(|m| m.id);
        ids.zip(arcs.iter().map(|&arc| arc as f64 / total))
            .collect()
    }

    /// The nodes that hold `point` under a policy `width` shards wide, in walk order.
    /// Returns fewer than `width` nodes only when the ring has fewer members with weight.
    pub fn placement(&self, point: u64, width: usize) -> Vec<NodeId> {
        let mut nodes = Vec::with_capacity(width);
        self.placement_into(point, width, &mut nodes);
        nodes
    }

    /// [`Ring::placement`] into a caller's buffer (cleared first), for hot paths.
    ///
    /// Zones are filled in levels: level 1 takes the first node of every zone in walk order,
    /// level 2 the second, and so on, until `width` nodes. So a stripe spans as many zones as
    /// it can, and adding or removing one node still changes the set by one exchange.
    pub fn placement_into(&self, point: u64, width: usize, nodes: &mut Vec<NodeId>) {
        nodes.clear();
        let width = width.min(crate::policy::STRIPE_WIDTH_MAX);
        if self.points.is_empty() || width == 0 {
            return;
        }
        let start = self.first_point_at_or_after(point);
        if self.weighted_zones == 1 {
            // One zone (a local cluster): the first `width` distinct nodes, one walk.
            for &owner in self.walk_owners(start) {
                let id = self.members[owner as usize].id;
                if !nodes.contains(&id) {
                    nodes.push(id);
                    if nodes.len() == width {
                        break;
                    }
                }
            }
            return;
        }
        // The zone of each node chosen so far, parallel to `nodes` (on the stack: placement
        // is on every request's path).
        let mut zones = [0u32; crate::policy::STRIPE_WIDTH_MAX];
        for level in 1.. {
            // A zone is full at this level once it holds `level` nodes or all it has.
            let full = |zones: &[u32], zone: u32| {
                let held = zones.iter().filter(|&&z| z == zone).count();
                held >= level.min(self.zone_sizes[zone as usize] as usize)
            };
            let chosen = &zones[..nodes.len()];
            let full_already = (0..chosen.len())
                .filter(|&i| !chosen[..i].contains(&chosen[i]) && full(chosen, chosen[i]))
                .count();
            // The pass ends when every zone is full at this level (or after one turn).
            let mut hungry_zones = self.weighted_zones - full_already;
            for &owner in self.walk_owners(start) {
                if nodes.len() == width || hungry_zones == 0 {
                    break;
                }
                let owner = owner as usize;
                let (id, zone) = (self.members[owner].id, self.zone_of_member[owner]);
                if nodes.contains(&id) || full(&zones[..nodes.len()], zone) {
                    continue;
                }
                zones[nodes.len()] = zone;
                nodes.push(id);
                if full(&zones[..nodes.len()], zone) {
                    hungry_zones -= 1;
                }
            }
            if nodes.len() == width || nodes.len() == self.weighted_members {
                return;
            }
        }
    }
}

impl Ring {
    /// The owners of every point in walk order from index `start`: one turn of the ring, as
    /// two slices chained (no division per step).
    fn walk_owners(&self, start: usize) -> impl Iterator<Item = &u32> {
        let start = start.min(self.owners.len());
        self.owners[start..].iter().chain(&self.owners[..start])
    }

    /// The index of the first point at or after `point` (`points.len()` wraps to 0 in the
    /// walk's modulo).
    fn first_point_at_or_after(&self, point: u64) -> usize {
        let bucket = (point >> (64 - BUCKET_BITS)) as usize;
        let low = self.buckets[bucket] as usize;
        let high = match self.buckets.get(bucket + 1) {
            Some(&next) => next as usize,
            None => self.points.len(),
        };
        low + self.points[low..high].partition_point(|&p| p < point)
    }
}

/// Bits of a point that index [`Ring`]'s bucket table (2^16 entries, 256 KiB).
const BUCKET_BITS: u32 = 16;

/// The ring point of virtual node `vnode` of node `id`: BLAKE3 of a fixed domain tag, the id
/// and the vnode number. Part of the placement contract: changing it moves all data.
pub fn vnode_point(id: NodeId, vnode: u32) -> u64 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"nabu.ring.vnode.v1");
    hasher.update(&id.0.to_le_bytes());
    hasher.update(&vnode.to_le_bytes());
    let digest = hasher.finalize();
    u64::from_le_bytes(digest.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// Which node holds each shard index of a stripe written at `placement`: shard `i` on the
/// `i`-th node.
pub fn initial_assignment(placement: &[NodeId]) -> Vec<NodeId> {
    placement.to_vec()
}

/// The new shard-index → node assignment of a stripe after a membership change: every shard
/// whose node is still in `placement` stays; each other shard goes to a node of `placement`
/// that holds none, in walk order. Indexes that cannot be given a node (the new placement is
/// narrower) keep their old node, so the caller sees nothing is lost.
pub fn reassign(current: &[NodeId], placement: &[NodeId]) -> Vec<NodeId> {
    let mut newcomers = placement.iter().filter(|node| !current.contains(node));
    current
        .iter()
        .map(|node| match placement.contains(node) {
            true => *node,
            false => newcomers.next().copied().unwrap_or(*node),
        })
        .collect()
}

#[cfg(test)]
mod tests;
