//! Ring lookup cost: one `placement_into` (binary search over `150 × N` points plus the walk
//! to six distinct nodes) at 6, 64 and 1000 nodes, with and without zones.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use nabu_core::ring::{Member, Ring};

fn ring(nodes: u32, zones: u32) -> Ring {
    let members = (0..nodes).map(|id| Member::new(id, format!("zone-{}", id % zones)));
    Ring::new(1, members.collect()).expect("valid members")
}

fn lookups(c: &mut Criterion) {
    let mut group = c.benchmark_group("ring_placement_ec_4_2");
    group
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    group.throughput(Throughput::Elements(1));
    for (nodes, zones) in [(6, 1), (64, 1), (1000, 1), (64, 4), (1000, 10)] {
        let ring = ring(nodes, zones);
        let mut point = 0x9e37_79b9_7f4a_7c15u64;
        let mut placement = Vec::with_capacity(6);
        let id = BenchmarkId::from_parameter(format!("{nodes}_nodes_{zones}_zones"));
        group.bench_function(id, |b| {
            b.iter(|| {
                point = point
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ring.placement_into(black_box(point), 6, &mut placement);
                black_box(placement.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, lookups);
criterion_main!(benches);
