//! `/api/v1/ring` and `/api/v1/placement`: the node's own [`Ring`] as the page draws it, and
//! where a key's data goes, answered by the same placement code the client writes with (the
//! page never hashes anything itself).
//!
//! **Demo mode.** `?demo=N` (1 ≤ N ≤ [`DEMO_NODES_MAX`]) answers for a synthetic member list
//! of N weight-1 nodes (ids 1..=N, in `N / 100` zones, at least 1 and at most 10) instead of
//! the node's own, so a 1,000-node ring (150,000 virtual nodes) can be looked at and timed on
//! a laptop. Nothing else changes: the same ring code builds it.

use std::sync::Arc;

use nabu_client::{Client, ClientError, Manifest};
use nabu_core::policy::Durability;
use nabu_core::ring::{Member, NodeId, Ring, initial_assignment};
use serde::{Deserialize, Serialize};

use crate::liveness::MemberState;
use crate::node::Node;

/// The largest synthetic member list `?demo=N` builds.
pub const DEMO_NODES_MAX: u32 = 2000;
/// Stripes of an object whose placement `/api/v1/placement` lists.
pub const PLACEMENT_STRIPES_MAX: usize = 16;

/// `/api/v1/ring`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RingView {
    /// Whether this is a synthetic member list (`?demo=N`).
    pub demo: bool,
    /// The ring epoch.
    pub ring_epoch: u64,
    /// The members, ordered by id.
    pub members: Vec<RingMember>,
    /// Every virtual node's ring point, its top 32 bits (`point >> 32`), ascending: enough
    /// to draw (the arc ending at a point belongs to that point's owner).
    pub points: Vec<u32>,
    /// Each point's owner, as an index into `members`.
    pub owners: Vec<u32>,
}

/// One member in [`RingView`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RingMember {
    /// Its id.
    pub id: u32,
    /// Its zone.
    pub zone: String,
    /// Its weight (150 virtual nodes per unit).
    pub weight: u32,
    /// Its share of the ring (0–1; the shares add up to 1).
    pub share: f64,
}

/// The query of `/api/v1/ring`.
#[derive(Debug, Default, Deserialize)]
pub struct RingQuery {
    /// A synthetic member list of this many nodes.
    pub demo: Option<u32>,
}

/// The ring a request asks about: the node's current one, or a synthetic one (`?demo=N`).
#[derive(Debug)]
pub enum RingChoice {
    /// The node's member list and ring as they are now.
    Own(Arc<crate::membership::MemberView>),
    /// A synthetic ring.
    Demo(Ring),
}

impl RingChoice {
    /// The ring `demo` asks for: the synthetic one of `demo` nodes, or the node's own.
    pub fn of(node: &Node, demo: Option<u32>) -> Result<Self, String> {
        let Some(nodes) = demo else {
            return Ok(Self::Own(node.membership.view()));
        };
        if !(1..=DEMO_NODES_MAX).contains(&nodes) {
            return Err(format!(
                "demo takes 1 to {DEMO_NODES_MAX} nodes, not {nodes}"
            ));
        }
        Ok(Self::Demo(demo_ring(nodes)))
    }

    /// The ring.
    pub fn ring(&self) -> &Ring {
        match self {
            Self::Own(view) => &view.ring,
            Self::Demo(ring) => ring,
        }
    }
}

/// A synthetic ring of `nodes` weight-1 members (ids 1..=nodes) in `nodes / 100` zones
/// (at least 1, at most 10), epoch 0.
pub fn demo_ring(nodes: u32) -> Ring {
    let zones = (nodes / 100).clamp(1, 10);
    let members = (1..=nodes)
        .map(|id| Member::new(id, format!("zone-{}", (id - 1) % zones)))
        .collect();
    Ring::new(0, members).expect("distinct ids of weight 1 make a valid ring")
}

/// The ring as [`RingView`].
pub fn ring_view(ring: &Ring, demo: bool) -> RingView {
    let members = ring.members();
    let shares = ring.ownership();
    let index_of = |id: NodeId| {
        members
            .binary_search_by_key(&id, |member| member.id)
            .unwrap_or(0) as u32
    };
    let (points, owners) = ring
        .vnodes()
        .map(|(point, owner)| ((point >> 32) as u32, index_of(owner)))
        .unzip();
    RingView {
        demo,
        ring_epoch: ring.epoch(),
        members: members
            .iter()
            .zip(shares)
            .map(|(member, (_, share))| RingMember {
                id: member.id.0,
                zone: member.zone.clone(),
                weight: member.weight,
                share,
            })
            .collect(),
        points,
        owners,
    }
}

/// The query of `/api/v1/placement`.
#[derive(Debug, Deserialize)]
pub struct PlacementQuery {
    /// The key (UTF-8).
    pub key: String,
    /// Its namespace (`default` when absent).
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Answer for a synthetic member list of this many nodes.
    pub demo: Option<u32>,
}

fn default_namespace() -> String {
    "default".to_owned()
}

/// `/api/v1/placement`: where a key's record and its object's shards are placed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlacementView {
    /// The namespace.
    pub namespace: String,
    /// The key.
    pub key: String,
    /// The namespace's durability (`ec:4+2`, `replicas:3`, …).
    pub durability: String,
    /// Whether this answers for a synthetic member list.
    pub demo: bool,
    /// The key record's copies (placed by namespace and key).
    pub key_record: PointPlacement,
    /// The object the key names now, when it has one (never in demo mode).
    pub object: Option<ObjectPlacement>,
    /// Why the object could not be looked up, when that failed for another reason than
    /// "no such key".
    pub object_error: Option<String>,
}

/// Nodes placed from one ring point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointPlacement {
    /// The point (64-bit, as 16 hex digits: JSON numbers cannot hold it exactly).
    pub point: String,
    /// The point's position on the ring, 0–1 (for drawing).
    pub fraction: f64,
    /// The nodes, in walk order; for a stripe, shard `i` goes to `nodes[i]`.
    pub nodes: Vec<PlacedNode>,
}

/// One placed node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlacedNode {
    /// The node.
    pub id: u32,
    /// Up or down as this node's heartbeats see it (always up in demo mode).
    pub state: MemberState,
}

/// The object part of [`PlacementView`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectPlacement {
    /// Its blob id (64 hex).
    pub blob_id: String,
    /// Its length in bytes.
    pub size: u64,
    /// How many stripes it has.
    pub stripes_total: usize,
    /// The first [`PLACEMENT_STRIPES_MAX`] stripes: shard `i` on `nodes[i]`.
    pub stripes: Vec<StripePlacement>,
}

/// One stripe in [`ObjectPlacement`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StripePlacement {
    /// The stripe id (64 hex).
    pub stripe_id: String,
    /// Where its shards go.
    #[serde(flatten)]
    pub placement: PointPlacement,
}

/// Why a placement question has no answer.
#[derive(Debug)]
pub enum PlacementError {
    /// The question is malformed (`demo` out of range).
    BadRequest(String),
    /// The namespace does not exist.
    NotFound(String),
    /// The cluster could not answer.
    Unavailable(String),
}

/// Answers `query` with the node's ring (or a demo ring) and the namespace's policy.
pub async fn placement(
    node: &Node,
    query: PlacementQuery,
) -> Result<PlacementView, PlacementError> {
    let demo = query.demo.is_some();
    let durability = if demo {
        Durability::EC_4_2
    } else {
        match node.cluster.namespace_policy(&query.namespace).await {
            Ok(durability) => durability,
            Err(ClientError::NotFound(what)) => return Err(PlacementError::NotFound(what)),
            Err(error) => return Err(PlacementError::Unavailable(error.to_string())),
        }
    };
    let choice = RingChoice::of(node, query.demo).map_err(PlacementError::BadRequest)?;
    let ring = choice.ring();
    let placer = Placer { node, ring, demo };
    let key = query.key.as_bytes();
    let point = nabu_client::format::key_record_point(&query.namespace, key);
    let copies = if demo {
        demo_metadata_copies(durability, ring.members().len())
    } else {
        node.cluster.metadata_copies(durability)
    };
    let key_record = placer.place(point, ring.placement(point, copies));
    let (object, object_error) = if demo {
        (None, None)
    } else {
        match object_manifest(&node.cluster, &query.namespace, key).await {
            Ok(manifest) => (Some(placer.object(&manifest)), None),
            Err(ClientError::NotFound(_)) => (None, None),
            Err(error) => (None, Some(error.to_string())),
        }
    };
    Ok(PlacementView {
        namespace: query.namespace,
        key: query.key,
        durability: durability.to_string(),
        demo,
        key_record,
        object,
        object_error,
    })
}

/// Places points on one ring and reports the placed nodes' health.
struct Placer<'a> {
    node: &'a Node,
    ring: &'a Ring,
    demo: bool,
}

impl Placer<'_> {
    /// `nodes`, placed from `point`, with their health (all up in demo mode).
    fn place(&self, point: u64, nodes: Vec<NodeId>) -> PointPlacement {
        let state = |id: NodeId| {
            if self.demo || self.node.liveness.is_up(id.0) {
                MemberState::Up
            } else {
                MemberState::Down
            }
        };
        PointPlacement {
            point: format!("{point:016x}"),
            fraction: point as f64 / 2f64.powi(64),
            nodes: nodes
                .into_iter()
                .map(|id| PlacedNode {
                    id: id.0,
                    state: state(id),
                })
                .collect(),
        }
    }

    /// Where the shards of `manifest`'s first [`PLACEMENT_STRIPES_MAX`] stripes go: shard `i`
    /// of a stripe to the `i`-th node of its placement.
    fn object(&self, manifest: &Manifest) -> ObjectPlacement {
        let width = manifest.durability.width();
        let stripes = manifest.stripes.iter().take(PLACEMENT_STRIPES_MAX);
        let stripes = stripes
            .map(|stripe| {
                let point = stripe.stripe_id.ring_point();
                let shards = initial_assignment(&self.ring.placement(point, width));
                StripePlacement {
                    stripe_id: stripe.stripe_id.to_string(),
                    placement: self.place(point, shards),
                }
            })
            .collect();
        ObjectPlacement {
            blob_id: manifest.blob_id.to_string(),
            size: manifest.blob_bytes,
            stripes_total: manifest.stripes.len(),
            stripes,
        }
    }
}

/// How many key-record copies a namespace of `durability` keeps on a ring of `members`
/// nodes: `nabu_client::Client::metadata_copies`'s rule (one more than the losses tolerated,
/// at least 3), which the client applies to its own ring only; a demo ring is another.
fn demo_metadata_copies(durability: Durability, members: usize) -> usize {
    durability
        .losses_tolerated()
        .max(2)
        .saturating_add(1)
        .min(members)
}

/// The manifest of the object `key` names now.
async fn object_manifest(
    client: &Client,
    namespace: &str,
    key: &[u8],
) -> Result<Manifest, ClientError> {
    let info = client.stat(namespace, key).await?;
    client.read_manifest(namespace, info.blob_id).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_demo_ring_of_1000_nodes_has_150_000_vnodes_in_10_zones() {
        let ring = demo_ring(1000);
        let view = ring_view(&ring, true);
        assert_eq!(view.members.len(), 1000);
        assert_eq!(view.points.len(), 150_000);
        assert_eq!(view.owners.len(), 150_000);
        assert!(
            view.points.windows(2).all(|pair| pair[0] <= pair[1]),
            "ascending"
        );
        let zones: std::collections::BTreeSet<&str> =
            view.members.iter().map(|m| m.zone.as_str()).collect();
        assert_eq!(zones.len(), 10);
        let shares: f64 = view.members.iter().map(|m| m.share).sum();
        assert!((shares - 1.0).abs() < 1e-9);
    }

    #[test]
    fn the_view_matches_the_ring_it_shows() {
        let ring = demo_ring(6);
        let view = ring_view(&ring, true);
        assert_eq!(view.points.len(), 900);
        for ((point, owner), (&drawn, &index)) in
            ring.vnodes().zip(view.points.iter().zip(&view.owners))
        {
            assert_eq!((point >> 32) as u32, drawn);
            assert_eq!(view.members[index as usize].id, owner.0);
        }
    }
}
