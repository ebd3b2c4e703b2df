use super::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashSet;

/// Property tests run a fixed, bounded number of cases from a fixed seed so CI is
/// deterministic; set `PROPTEST_RNG_SEED`/`PROPTEST_CASES` to explore further.
fn config(cases: u32) -> Config {
    let seed = std::env::var("PROPTEST_RNG_SEED")
        .ok()
        .and_then(|s| s.parse().ok());
    let cases_env = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok());
    Config {
        cases: cases_env.unwrap_or(cases),
        rng_seed: RngSeed::Fixed(seed.unwrap_or(0x6e61_6275)),
        failure_persistence: None,
        ..Config::default()
    }
}

fn members(ids: &[u32], zones: u32) -> Vec<Member> {
    ids.iter()
        .map(|&id| Member::new(id, format!("z{}", id % zones.max(1))))
        .collect()
}

fn stripe_points(seed: u64, count: usize) -> Vec<u64> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..count).map(|_| rng.random()).collect()
}

/// Distinct node ids for a cluster of `count` nodes plus one newcomer.
fn node_ids(count: usize) -> impl Strategy<Value = Vec<u32>> {
    // A BTreeSet, not a HashSet: its order must not depend on the process's hash seed.
    proptest::collection::btree_set(any::<u32>(), count + 1)
        .prop_map(|set| set.into_iter().collect::<Vec<_>>())
        .prop_shuffle()
}

#[test]
fn placements_are_deterministic_distinct_and_zone_spread() {
    let strategy = (node_ids(12), 1u32..8, 1usize..=8, any::<u64>());
    proptest!(config(64), |((ids, zones, width, seed) in strategy)| {
        let ring = Ring::new(1, members(&ids, zones)).unwrap();
        let mut shuffled = members(&ids, zones);
        shuffled.reverse();
        let same = Ring::new(1, shuffled).unwrap();
        for point in stripe_points(seed, 200) {
            let nodes = ring.placement(point, width);
            prop_assert_eq!(&nodes, &same.placement(point, width));
            prop_assert_eq!(nodes.len(), width.min(ids.len()));
            let distinct: HashSet<_> = nodes.iter().collect();
            prop_assert_eq!(distinct.len(), nodes.len());
            let zones_used: HashSet<_> =
                nodes.iter().map(|n| &ring.member(*n).unwrap().zone).collect();
            let zones_present = ids.iter().map(|id| id % zones).collect::<HashSet<_>>().len();
            prop_assert_eq!(zones_used.len(), zones_present.min(width));
        }
    });
}

/// Moves caused by one membership change, over `points`, with shard indexes carried by
/// `reassign` the way rebalancing carries them.
struct Moves {
    shards_moved: usize,
    shards_total: usize,
    most_in_one_stripe: usize,
}

fn moves(before: &Ring, after: &Ring, points: &[u64], width: usize) -> Moves {
    let mut result = Moves {
        shards_moved: 0,
        shards_total: 0,
        most_in_one_stripe: 0,
    };
    for &point in points {
        let old = initial_assignment(&before.placement(point, width));
        let placement = after.placement(point, width);
        let new = reassign(&old, &placement);
        // After rebalancing, the shards sit exactly on the new placement.
        let mut sorted_new = new.clone();
        sorted_new.sort();
        let mut sorted_placement = placement.clone();
        sorted_placement.sort();
        assert_eq!(sorted_new, sorted_placement, "point {point:#x}");
        let moved = old.iter().zip(&new).filter(|(a, b)| a != b).count();
        result.shards_moved += moved;
        result.shards_total += width;
        result.most_in_one_stripe = result.most_in_one_stripe.max(moved);
    }
    result
}

#[test]
fn adding_a_node_moves_its_fair_share_and_one_shard_per_stripe_at_most() {
    let strategy = (6usize..=64).prop_flat_map(|n| (node_ids(n), any::<u64>()));
    proptest!(config(12), |((ids, seed) in strategy)| {
        let (existing, newcomer) = ids.split_at(ids.len() - 1);
        let points = stripe_points(seed, 60_000);
        // Equal nodes in one zone: the newcomer's fair share is 1/(N+1) of all shards.
        let before = Ring::new(1, members(existing, 1)).unwrap();
        let after = Ring::new(2, members(&ids, 1)).unwrap();
        let moved = moves(&before, &after, &points, 6);
        let ideal = moved.shards_total as f64 / ids.len() as f64;
        let ratio = moved.shards_moved as f64 / ideal;
        prop_assert!(moved.most_in_one_stripe <= 1, "a stripe moved {} shards", moved.most_in_one_stripe);
        prop_assert!(ratio <= 1.1, "{} nodes + n{}: moved {:.3}× the ideal", existing.len(), newcomer[0], ratio);
        // Over three zones the newcomer may also open a zone of its own; still one shard
        // per stripe at most.
        let before = Ring::new(1, members(existing, 3)).unwrap();
        let after = Ring::new(2, members(&ids, 3)).unwrap();
        let moved = moves(&before, &after, &points[..10_000], 6);
        prop_assert!(moved.most_in_one_stripe <= 1, "zoned: a stripe moved {} shards", moved.most_in_one_stripe);
    });
}

#[test]
fn removing_a_node_moves_only_its_own_shards() {
    let strategy = (7usize..=40).prop_flat_map(|n| (node_ids(n), any::<u64>()));
    proptest!(config(12), |((ids, seed) in strategy)| {
        let gone = NodeId(ids[0]);
        let before = Ring::new(1, members(&ids, 4)).unwrap();
        let after = Ring::new(2, members(&ids[1..], 4)).unwrap();
        for point in stripe_points(seed, 5_000) {
            let old = initial_assignment(&before.placement(point, 6));
            let new = reassign(&old, &after.placement(point, 6));
            for (index, (a, b)) in old.iter().zip(&new).enumerate() {
                prop_assert!(a == b || *a == gone, "shard {} moved off {} though {} left", index, a, gone);
            }
        }
    });
}

#[test]
fn weight_scales_the_share_and_zero_weight_receives_nothing() {
    let mut list = members(&[1, 2, 3, 4], 1);
    list[0].weight = 3;
    list[3].weight = 0;
    let ring = Ring::new(1, list).unwrap();
    let share: std::collections::HashMap<_, _> = ring.ownership().into_iter().collect();
    assert!((share[&NodeId(1)] - 0.6).abs() < 0.06, "{share:?}");
    assert_eq!(share[&NodeId(4)], 0.0);
    for point in stripe_points(7, 2_000) {
        assert!(!ring.placement(point, 3).contains(&NodeId(4)));
    }
}

#[test]
fn bad_member_lists_are_refused() {
    let duplicate = vec![Member::new(1, "a"), Member::new(1, "b")];
    assert_eq!(
        Ring::new(1, duplicate).unwrap_err(),
        RingError::DuplicateNode(NodeId(1))
    );
    let mut heavy = Member::new(2, "a");
    heavy.weight = WEIGHT_MAX + 1;
    assert!(matches!(
        Ring::new(1, vec![heavy]),
        Err(RingError::WeightTooLarge { .. })
    ));
    let empty = Ring::new(1, Vec::new()).unwrap();
    assert!(empty.placement(42, 6).is_empty());
}

#[test]
fn the_ring_point_function_never_changes() {
    // Placement is a contract with data already on disk: these values must never change.
    let ring = Ring::new(1, members(&[1, 2, 3, 4, 5, 6, 7, 8], 1)).unwrap();
    let placement = ring.placement(0x0123_4567_89ab_cdef, 6);
    assert_eq!(vnode_point(NodeId(0), 0), 0x7073_ea22_3daa_cfd6);
    assert_eq!(placement, [5, 6, 2, 1, 4, 8].map(NodeId));
    assert_eq!(ring.vnodes().count(), 1200);
}

#[test]
fn load_balance_over_6_and_64_equal_nodes() {
    for (nodes, bound) in [(6usize, 1.01), (64, 1.2)] {
        let ids: Vec<u32> = (1..=nodes as u32).collect();
        let ring = Ring::new(1, members(&ids, 1)).unwrap();
        let mut shards = std::collections::HashMap::<NodeId, usize>::new();
        for point in stripe_points(nodes as u64, 100_000) {
            for node in ring.placement(point, 6) {
                *shards.entry(node).or_default() += 1;
            }
        }
        let max = *shards.values().max().unwrap() as f64;
        let mean = shards.values().sum::<usize>() as f64 / nodes as f64;
        eprintln!(
            "{nodes} nodes, ec:4+2, 100000 stripes: max/mean shards per node = {:.3}",
            max / mean
        );
        assert!(
            max / mean <= bound,
            "{nodes} nodes: max/mean {:.3}",
            max / mean
        );
    }
}
