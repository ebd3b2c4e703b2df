//! The index against a `HashMap` model, backward-shift deletion at the edges of runs, and the
//! file backing's clean/dirty/corrupt handling.

use std::collections::HashMap;

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

/// A key whose top 16 bits are `home_prefix` (so it lands near a chosen home slot in small
/// tables) and whose other bits are `low`.
fn key_with_prefix(home_prefix: u16, low: u64) -> u128 {
    (u128::from(home_prefix) << 112) | u128::from(low) | 1
}

/// Applies one operation to both the index and the model and checks they agree.
fn apply(index: &mut RobinHoodIndex, model: &mut HashMap<u128, u128>, op: Op) {
    match op {
        Op::Insert(key, value) => {
            let got = index.insert(key, value).expect("insert");
            assert_eq!(got, model.insert(key, value), "insert {key:#x}");
        }
        Op::Remove(key) => {
            let got = index.remove(key).expect("remove");
            assert_eq!(got, model.remove(&key), "remove {key:#x}");
        }
        Op::Get(key) => assert_eq!(index.get(key), model.get(&key).copied(), "get {key:#x}"),
    }
    assert_eq!(index.len(), model.len());
}

fn assert_same_contents(index: &RobinHoodIndex, model: &HashMap<u128, u128>) {
    index.verify().expect("invariants hold");
    let mut entries: Vec<_> = index.iter().collect();
    entries.sort_unstable();
    let mut expected: Vec<_> = model.iter().map(|(&key, &value)| (key, value)).collect();
    expected.sort_unstable();
    assert_eq!(entries, expected);
    let keys: Vec<u128> = expected.iter().map(|&(key, _)| key).collect();
    let mut batch = vec![None; keys.len()];
    index.get_batch(&keys, &mut batch);
    assert!(
        batch
            .iter()
            .zip(&expected)
            .all(|(got, &(_, value))| *got == Some(value))
    );
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Insert(u128, u128),
    Remove(u128),
    Get(u128),
}

/// Keys from a small pool so operations collide; half of them share a few top-bit prefixes
/// so they pile into the same runs.
fn op_strategy() -> impl Strategy<Value = Op> {
    let key = prop_oneof![
        (0u16..4, 0u64..24).prop_map(|(prefix, low)| key_with_prefix(prefix * 0x4000, low * 2)),
        (any::<u16>(), 0u64..4).prop_map(|(prefix, low)| key_with_prefix(prefix, low * 2)),
    ];
    prop_oneof![
        3 => (key.clone(), any::<u128>()).prop_map(|(key, value)| Op::Insert(key, value)),
        2 => key.clone().prop_map(Op::Remove),
        2 => key.prop_map(Op::Get),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn model_agrees_under_random_operations(ops in prop::collection::vec(op_strategy(), 1..600)) {
        let mut index = RobinHoodIndex::new(1).expect("index");
        let mut model = HashMap::new();
        for op in ops {
            apply(&mut index, &mut model, op);
        }
        assert_same_contents(&index, &model);
    }
}

#[test]
fn model_agrees_over_a_million_operations_across_growths() {
    const SEED: u64 = 0x0006_1b05_7a11;
    const OPERATIONS: usize = 1_000_000;
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut index = RobinHoodIndex::new(8).expect("index");
    // Stretch every growth over many operations so that most changes happen mid-migration.
    index.set_migration_slots_per_op(1);
    let mut model = HashMap::new();
    let mut live_keys: Vec<u128> = Vec::new();
    let (mut growths, mut removes_while_growing, mut inserts_while_growing) = (0, 0, 0);
    for step in 0..OPERATIONS {
        let was_growing = index.is_growing();
        let roll = rng.random_range(0..100);
        // Mostly inserts early (several doublings), then balanced churn with shrinking phases.
        let insert_share = if step < OPERATIONS / 2 { 60 } else { 45 };
        let op = if roll < insert_share || live_keys.is_empty() {
            let key = if !live_keys.is_empty() && rng.random_bool(0.2) {
                live_keys[rng.random_range(0..live_keys.len())]
            } else {
                rng.random::<u128>() | 1
            };
            if !model.contains_key(&key) {
                live_keys.push(key);
            }
            Op::Insert(key, rng.random())
        } else if roll < insert_share + 30 {
            let slot = rng.random_range(0..live_keys.len());
            Op::Remove(live_keys.swap_remove(slot))
        } else if rng.random_bool(0.5) {
            Op::Get(live_keys[rng.random_range(0..live_keys.len())])
        } else {
            Op::Get(rng.random::<u128>() | 1)
        };
        match op {
            Op::Remove(_) if was_growing => removes_while_growing += 1,
            Op::Insert(..) if was_growing => inserts_while_growing += 1,
            _ => {}
        }
        apply(&mut index, &mut model, op);
        if !was_growing && index.is_growing() {
            growths += 1;
            index.verify().expect("invariants hold when growth starts");
        }
        if step % 100_000 == 0 {
            index
                .verify()
                .unwrap_or_else(|error| panic!("seed {SEED:#x} step {step}: {error}"));
        }
    }
    assert_same_contents(&index, &model);
    assert!(growths >= 10, "only {growths} growths");
    assert!(
        removes_while_growing > 20_000 && inserts_while_growing > 20_000,
        "{removes_while_growing} removes and {inserts_while_growing} inserts while growing"
    );
}

#[test]
fn lookups_during_growth_see_both_tables() {
    let mut index = RobinHoodIndex::new(100).expect("index");
    let mut model = HashMap::new();
    let mut rng = StdRng::seed_from_u64(7);
    while !index.is_growing() {
        apply(
            &mut index,
            &mut model,
            Op::Insert(rng.random::<u128>() | 1, 5),
        );
    }
    // Right after growth starts most entries are still in the old table.
    for (&key, &value) in &model {
        assert_eq!(index.get(key), Some(value));
    }
    assert_same_contents(&index, &model);
    index.finish_growth().expect("finish");
    assert!(!index.is_growing());
    assert_same_contents(&index, &model);
}

#[test]
fn growth_into_a_prefaulted_table_keeps_every_entry() {
    // 2^16 slots (2 MiB): the next table (4 MiB) is prefaulted by the helper from 1/2 load.
    let mut index = RobinHoodIndex::new(40_000).expect("index");
    assert_eq!(index.slot_count(), 1 << 16);
    let mut model = HashMap::new();
    let mut rng = StdRng::seed_from_u64(8);
    while index.len() <= 1 << 15 {
        apply(
            &mut index,
            &mut model,
            Op::Insert(rng.random::<u128>() | 1, rng.random()),
        );
    }
    assert!(index.prefaulting.is_some(), "helper started at 1/2 load");
    while !index.is_growing() {
        apply(
            &mut index,
            &mut model,
            Op::Insert(rng.random::<u128>() | 1, rng.random()),
        );
    }
    assert!(index.prefaulting.is_none() && index.slot_count() == 1 << 17);
    assert_same_contents(&index, &model);
    index.finish_growth().expect("finish");
    assert_same_contents(&index, &model);
}

#[test]
fn backward_shift_keeps_every_key_findable() {
    // 64 slots: the home of a key is its top 6 bits. Build long runs that share homes, that
    // straddle each other and that wrap from the last slot to the first, then delete from the
    // front, middle and back of each run.
    let home_prefix = |home: u16| home << 10;
    let mut keys = Vec::new();
    for (home, count) in [(3u16, 6u64), (5, 4), (6, 3), (62, 4), (63, 3), (0, 2)] {
        for low in 0..count {
            keys.push(key_with_prefix(
                home_prefix(home),
                low * 2 + u64::from(home) * 64,
            ));
        }
    }
    for removal_order in [0usize, 1, 2] {
        let mut index = RobinHoodIndex::new(40).expect("index");
        assert_eq!(index.slot_count(), 64);
        let mut model = HashMap::new();
        for (value, &key) in keys.iter().enumerate() {
            apply(&mut index, &mut model, Op::Insert(key, value as u128));
        }
        assert!(index.max_probe_distance() >= 5, "runs are long");
        let mut order = keys.clone();
        match removal_order {
            0 => {}
            1 => order.reverse(),
            _ => order.sort_by_key(|key| (key % 7, *key)),
        }
        for key in order {
            apply(&mut index, &mut model, Op::Remove(key));
            assert_same_contents(&index, &model);
        }
        assert!(index.is_empty());
    }
}

#[test]
fn key_zero_is_rejected_and_never_found() {
    let mut index = RobinHoodIndex::new(10).expect("index");
    assert!(matches!(index.insert(0, 1), Err(IndexError::ReservedKey)));
    index.insert(1, 2).expect("insert");
    assert_eq!(index.get(0), None);
    assert_eq!(index.remove(0).expect("remove"), None);
    assert_eq!(index.len(), 1);
}

#[test]
fn capacity_is_honoured_without_growth() {
    let mut index = RobinHoodIndex::new(1000).expect("index");
    assert!(index.capacity() >= 1000);
    let mut rng = StdRng::seed_from_u64(3);
    for _ in 0..1000 {
        index.insert(rng.random::<u128>() | 1, 1).expect("insert");
    }
    assert!(!index.is_growing());
    assert!(matches!(
        RobinHoodIndex::new(usize::MAX),
        Err(IndexError::CapacityOverflow { .. })
    ));
}

fn fill(index: &mut RobinHoodIndex, count: usize, seed: u64) -> HashMap<u128, u128> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut model = HashMap::new();
    for _ in 0..count {
        apply(
            index,
            &mut model,
            Op::Insert(rng.random::<u128>() | 1, rng.random()),
        );
    }
    model
}

#[test]
fn file_index_survives_drop_and_reopen_when_marked_clean() {
    let directory = tempfile::tempdir().expect("tempdir");
    let path = directory.path().join("index");
    let mut index = RobinHoodIndex::with_backing(16, Backing::File(path.clone())).expect("create");
    // 3000 entries from a 16-entry start: several growths through `index.next` renames.
    let model = fill(&mut index, 3000, 11);
    index.mark_clean(42).expect("mark clean");
    drop(index);
    assert!(!directory.path().join("index.next").exists());

    let (mut index, status) = RobinHoodIndex::open_file(&path, 42).expect("reopen");
    assert_eq!(status, OpenStatus::Clean);
    assert_same_contents(&index, &model);

    // A change after mark_clean makes the file dirty on disk at once.
    index.insert(5, 6).expect("insert");
    drop(index);
    let (index, status) = RobinHoodIndex::open_file(&path, 42).expect("reopen");
    assert_eq!(status, OpenStatus::NotClean);
    assert!(
        index.is_empty(),
        "a dirty index comes back empty, to be rebuilt"
    );
}

#[test]
fn file_index_detects_dirty_close_and_generation_mismatch() {
    let directory = tempfile::tempdir().expect("tempdir");
    let path = directory.path().join("index");
    let mut index = RobinHoodIndex::with_backing(100, Backing::File(path.clone())).expect("create");
    fill(&mut index, 50, 12);
    drop(index); // never marked clean: a crash, as far as the file can tell
    let (mut index, status) = RobinHoodIndex::open_file(&path, 0).expect("reopen");
    assert_eq!(status, OpenStatus::NotClean);
    assert!(index.is_empty());

    let model = fill(&mut index, 50, 13);
    index.mark_clean(7).expect("mark clean");
    drop(index);
    let (mut index, status) = RobinHoodIndex::open_file(&path, 8).expect("reopen");
    assert_eq!(status, OpenStatus::GenerationMismatch { found: 7 });
    assert!(index.is_empty());

    // Rebuild, then a clean reopen with the right generation.
    for (&key, &value) in &model {
        index.insert(key, value).expect("insert");
    }
    index.mark_clean(8).expect("mark clean");
    drop(index);
    let (index, status) = RobinHoodIndex::open_file(&path, 8).expect("reopen");
    assert!(status.is_clean());
    assert_same_contents(&index, &model);
}

#[test]
fn file_index_rejects_corrupt_header_and_flags_corrupt_slots() {
    use std::io::{Seek, SeekFrom, Write};
    let directory = tempfile::tempdir().expect("tempdir");
    let path = directory.path().join("index");
    let mut index = RobinHoodIndex::with_backing(100, Backing::File(path.clone())).expect("create");
    fill(&mut index, 60, 14);
    index.mark_clean(1).expect("mark clean");
    drop(index);
    let pristine = std::fs::read(&path).expect("read");
    let write_variant = |edit: &dyn Fn(&mut Vec<u8>)| {
        let mut bytes = pristine.clone();
        edit(&mut bytes);
        std::fs::write(&path, &bytes).expect("write");
    };

    write_variant(&|bytes| bytes[0] ^= 0xff);
    assert!(matches!(
        RobinHoodIndex::open_file(&path, 1),
        Err(IndexError::BadMagic)
    ));
    write_variant(&|bytes| bytes[8] = 9);
    assert!(matches!(
        RobinHoodIndex::open_file(&path, 1),
        Err(IndexError::UnsupportedVersion { found: 9, .. })
    ));
    write_variant(&|bytes| bytes[17] ^= 1);
    assert!(matches!(
        RobinHoodIndex::open_file(&path, 1),
        Err(IndexError::CorruptHeader(_))
    ));
    write_variant(&|bytes| bytes.truncate(bytes.len() - 32));
    assert!(matches!(
        RobinHoodIndex::open_file(&path, 1),
        Err(IndexError::SizeMismatch { .. })
    ));
    write_variant(&|bytes| bytes.truncate(10));
    assert!(matches!(
        RobinHoodIndex::open_file(&path, 1),
        Err(IndexError::SizeMismatch { .. })
    ));

    // A slot zeroed behind a clean header: the entry count no longer matches.
    write_variant(&|_| {});
    let slot = (0..pristine.len() / 32 - 128)
        .map(|slot| HEADER_BYTES + slot * 32)
        .find(|&at| pristine[at..at + 16].iter().any(|&b| b != 0))
        .expect("an occupied slot");
    let mut file = OpenOptions::new().write(true).open(&path).expect("open");
    file.seek(SeekFrom::Start(slot as u64)).expect("seek");
    file.write_all(&[0u8; 32]).expect("write");
    drop(file);
    let (index, status) = RobinHoodIndex::open_file(&path, 1).expect("open");
    assert!(matches!(status, OpenStatus::Corrupt { .. }), "{status:?}");
    assert!(index.is_empty());
}

#[test]
fn file_index_removes_stale_next_file_from_interrupted_growth() {
    let directory = tempfile::tempdir().expect("tempdir");
    let path = directory.path().join("index");
    let mut index = RobinHoodIndex::with_backing(16, Backing::File(path.clone())).expect("create");
    fill(&mut index, 40, 15);
    while !index.is_growing() {
        index.insert(rand::random::<u128>() | 1, 0).expect("insert");
    }
    assert!(directory.path().join("index.next").exists());
    drop(index); // a crash mid-growth
    let (index, status) = RobinHoodIndex::open_file(&path, 0).expect("reopen");
    assert_eq!(status, OpenStatus::NotClean);
    assert!(index.is_empty());
    assert!(!directory.path().join("index.next").exists());
}

#[test]
fn anonymous_index_reports_huge_pages() {
    // 2^16 slots * 32 B = 2 MiB: big enough to ask for huge pages.
    let mut index = RobinHoodIndex::new(50_000).expect("index");
    let mut rng = StdRng::seed_from_u64(5);
    for _ in 0..1000 {
        index.insert(rng.random::<u128>() | 1, 0).expect("insert");
    }
    if index.huge_pages() && cfg!(target_os = "linux") {
        assert!(index.huge_page_resident_bytes().is_some());
    }
}
