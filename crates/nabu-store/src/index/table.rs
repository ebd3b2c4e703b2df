//! One open-addressing Robin Hood table over a [`Region`]: the probing, insertion, backward-shift
//! deletion and the helpers incremental growth needs. Knows nothing about files or growth
//! policy; `mod.rs` owns those.
//!
//! Invariant (checked by [`Table::verify`]): for every occupied slot at position `p` with probe
//! distance `d > 0`, slot `p - 1` is occupied with distance `>= d - 1`, and if that distance is
//! exactly `d - 1` (the same home) its key is smaller. Equivalently, along a run of occupied
//! slots the home slots never decrease and keys sharing a home ascend; since the home is the
//! key's top bits, a run is sorted by key. It is what lets a lookup stop at the first resident
//! that is closer to its home than the probe is, or shares its home with a bigger key (a miss
//! costs about as much as a hit), and what lets growth migrate a table run by run.

use std::ptr::NonNull;

use super::region::{Region, prefetch_read};

/// Bytes per slot: a u128 key and a u128 value.
pub(crate) const SLOT_BYTES: usize = 32;

/// The smallest table, in slots.
pub(crate) const MIN_SLOTS: usize = 64;

/// Tables grow when an insert finds them 7/8 full.
const MAX_LOAD_NUMERATOR: usize = 7;
const MAX_LOAD_DENOMINATOR: usize = 8;

/// One slot, exactly as it lies in memory and in an index file: key then value, both
/// little-endian. Key 0 marks an empty slot. Aligned to 32 bytes so that a slot never straddles
/// two cache lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, align(32))]
pub(crate) struct Slot {
    key_le: u128,
    value_le: u128,
}

const _: () = assert!(size_of::<Slot>() == SLOT_BYTES);

impl Slot {
    const EMPTY: Slot = Slot {
        key_le: 0,
        value_le: 0,
    };

    fn new(key: u128, value: u128) -> Slot {
        Slot {
            key_le: key.to_le(),
            value_le: value.to_le(),
        }
    }

    #[inline(always)]
    fn key(&self) -> u128 {
        u128::from_le(self.key_le)
    }

    #[inline(always)]
    fn value(&self) -> u128 {
        u128::from_le(self.value_le)
    }
}

/// The number of slots for a table that must hold `entries` without growing, or `None` on
/// overflow.
pub(crate) fn slots_for(entries: usize) -> Option<usize> {
    // Smallest power of two whose growth threshold is at least `entries`.
    let needed = entries
        .checked_mul(MAX_LOAD_DENOMINATOR)?
        .div_ceil(MAX_LOAD_NUMERATOR);
    let slots = needed.max(MIN_SLOTS).checked_next_power_of_two()?;
    slots.checked_mul(SLOT_BYTES)?;
    Some(slots)
}

/// A Robin Hood table whose slots fill a region.
#[derive(Debug)]
pub(crate) struct Table {
    region: Region,
    /// The first slot: the start of `region`'s usable bytes. Cached so that a lookup is pure
    /// arithmetic and one load, with no call into the mapping.
    first_slot: NonNull<Slot>,
    /// `log2(slot count)`.
    bits: u32,
    /// `64 - bits`: the home slot of a key is the top `bits` bits of its high half.
    home_shift: u32,
    len: usize,
}

// SAFETY: `first_slot` points into the mapping that `region` owns (and the mapping never moves
// or changes size while the table lives). Access through it follows Rust's borrow rules via
// `&self`/`&mut self`, exactly as if the table held the slice itself, so the table may move to
// or be shared with other threads like any other owner of plain memory.
unsafe impl Send for Table {}
// SAFETY: see `Send`; shared access only reads.
unsafe impl Sync for Table {}

impl Table {
    /// Wraps a region holding `region.len() / SLOT_BYTES` slots, of which `len` are occupied.
    pub(crate) fn new(mut region: Region, len: usize) -> Table {
        let slot_count = region.len() / SLOT_BYTES;
        assert!(
            slot_count.is_power_of_two() && slot_count >= MIN_SLOTS,
            "slot count {slot_count} must be a power of two >= {MIN_SLOTS}"
        );
        assert_eq!(region.len(), slot_count * SLOT_BYTES);
        let first_slot = region.data_pointer().cast::<Slot>();
        assert!(first_slot.is_aligned(), "slots must be 32-byte aligned");
        let bits = slot_count.trailing_zeros();
        Table {
            region,
            first_slot,
            bits,
            home_shift: 64 - bits,
            len,
        }
    }

    #[inline(always)]
    fn slots(&self) -> &[Slot] {
        // SAFETY: `first_slot` starts the region's usable bytes, which `new` checked are 32-byte
        // aligned and exactly `slot_count` whole slots; `Slot` is two plain integers, valid for
        // every bit pattern (the mapping is zero-filled or a file's bytes); the slice borrows
        // `self`, which owns the mapping, so the memory outlives it and no `&mut` view exists.
        unsafe { std::slice::from_raw_parts(self.first_slot.as_ptr(), self.slot_count()) }
    }

    #[inline(always)]
    fn slots_mut(&mut self) -> &mut [Slot] {
        // SAFETY: as in `slots`; the slice borrows `self` mutably, so it is the only view.
        unsafe { std::slice::from_raw_parts_mut(self.first_slot.as_ptr(), self.slot_count()) }
    }

    pub(crate) fn region(&self) -> &Region {
        &self.region
    }

    pub(crate) fn region_mut(&mut self) -> &mut Region {
        &mut self.region
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn slot_count(&self) -> usize {
        1 << self.bits
    }

    #[inline(always)]
    pub(crate) fn mask(&self) -> usize {
        self.slot_count() - 1
    }

    /// Entries the table holds before it must grow.
    pub(crate) fn grow_at(&self) -> usize {
        self.slot_count() / MAX_LOAD_DENOMINATOR * MAX_LOAD_NUMERATOR
    }

    /// Entries at which the next, bigger table starts being prepared (1/2 load).
    pub(crate) fn prepare_at(&self) -> usize {
        self.slot_count() / 2
    }

    /// The home slot: the key's top bits. Keys are already uniformly random (a BLAKE3 prefix),
    /// so they need no further hashing.
    #[inline(always)]
    pub(crate) fn home(&self, key: u128) -> usize {
        let high_half = (key >> 64) as u64;
        (high_half >> self.home_shift) as usize
    }

    /// How far the resident at `position` lies from its home slot.
    #[inline(always)]
    fn distance(&self, key: u128, position: usize) -> usize {
        position.wrapping_sub(self.home(key)) & self.mask()
    }

    /// Starts loading the cache line of `key`'s home slot.
    #[inline(always)]
    pub(crate) fn prefetch(&self, key: u128) {
        prefetch_read(&raw const self.slots()[self.home(key)]);
    }

    /// The position of `key`, if present. Stops at an empty slot or at a resident closer to
    /// its home than the probe is to `key`'s.
    #[inline(always)]
    fn find(&self, key: u128) -> Option<usize> {
        let slots = self.slots();
        let mask = self.mask();
        let mut position = self.home(key);
        // The bound only matters for a table corrupted behind our back: a valid table always
        // ends a probe at an empty slot or an early exit.
        for probe_distance in 0..slots.len() {
            let resident = slots[position].key();
            if resident == 0 {
                return None;
            }
            if resident == key {
                return Some(position);
            }
            if self.belongs_before(key, probe_distance, resident, position) {
                return None;
            }
            position = (position + 1) & mask;
        }
        None
    }

    /// Whether `key`, probed `probe_distance` slots from its home, belongs before `resident`
    /// at `position`: the resident is closer to its home, or it has the same home and a bigger
    /// key. (Ordering equal homes by key lets a miss stop halfway through a group of keys that
    /// share its home instead of at its end.)
    #[inline(always)]
    fn belongs_before(
        &self,
        key: u128,
        probe_distance: usize,
        resident: u128,
        position: usize,
    ) -> bool {
        let resident_distance = self.distance(resident, position);
        resident_distance < probe_distance
            || (resident_distance == probe_distance && resident > key)
    }

    #[inline(always)]
    pub(crate) fn get(&self, key: u128) -> Option<u128> {
        self.find(key)
            .map(|position| self.slots()[position].value())
    }

    /// Replaces the value of `key` if it is present; returns the previous value.
    pub(crate) fn replace(&mut self, key: u128, value: u128) -> Option<u128> {
        let position = self.find(key)?;
        let slot = &mut self.slots_mut()[position];
        let previous = slot.value();
        *slot = Slot::new(key, value);
        Some(previous)
    }

    /// Inserts or updates `key` (never 0); returns the previous value. The caller keeps the load
    /// below 100% (growth policy), so an empty slot always exists.
    pub(crate) fn insert(&mut self, key: u128, value: u128) -> Option<u128> {
        debug_assert_ne!(key, 0, "key 0 marks empty slots");
        let mask = self.mask();
        let mut position = self.home(key);
        for probe_distance in 0..=mask {
            let resident = self.slots()[position].key();
            if resident == key {
                return self.replace_at(position, key, value);
            }
            if resident == 0 || self.belongs_before(key, probe_distance, resident, position) {
                self.place_at(position, Slot::new(key, value));
                return None;
            }
            position = (position + 1) & mask;
        }
        panic!("index table has no empty slot: its load invariant is broken");
    }

    /// Inserts `key`, which the caller knows is absent (growth moving entries over).
    pub(crate) fn insert_absent(&mut self, key: u128, value: u128) {
        debug_assert!(self.find(key).is_none(), "insert_absent of a present key");
        let mask = self.mask();
        let mut position = self.home(key);
        for probe_distance in 0..=mask {
            let resident = self.slots()[position].key();
            if resident == 0 || self.belongs_before(key, probe_distance, resident, position) {
                self.place_at(position, Slot::new(key, value));
                return;
            }
            position = (position + 1) & mask;
        }
        panic!("index table has no empty slot: its load invariant is broken");
    }

    fn replace_at(&mut self, position: usize, key: u128, value: u128) -> Option<u128> {
        let slot = &mut self.slots_mut()[position];
        let previous = slot.value();
        *slot = Slot::new(key, value);
        Some(previous)
    }

    /// Puts `slot` at `position`, first shifting the run from `position` up to the next empty
    /// slot one place to the right (the Robin Hood displacement: every shifted resident moves
    /// one further from home, and their order, hence the invariant, is kept).
    fn place_at(&mut self, position: usize, slot: Slot) {
        let mask = self.mask();
        let slots = self.slots_mut();
        let mut empty = position;
        let mut run_length = 0;
        while slots[empty].key() != 0 {
            empty = (empty + 1) & mask;
            run_length += 1;
            assert!(run_length <= mask, "index table has no empty slot");
        }
        while empty != position {
            let previous = (empty.wrapping_sub(1)) & mask;
            slots[empty] = slots[previous];
            empty = previous;
        }
        slots[position] = slot;
        self.len += 1;
    }

    /// Removes `key`, shifting the rest of its run back one place (no tombstones); returns the
    /// value it had.
    pub(crate) fn remove(&mut self, key: u128) -> Option<u128> {
        let position = self.find(key)?;
        let value = self.slots()[position].value();
        self.remove_at(position);
        Some(value)
    }

    /// Empties `position` and closes the gap: each following resident that is not at its home
    /// moves back one slot, up to the first empty slot or resident at its home.
    fn remove_at(&mut self, position: usize) {
        let mask = self.mask();
        let mut hole = position;
        loop {
            let next = (hole + 1) & mask;
            let resident = self.slots()[next];
            if resident.key() == 0 || self.distance(resident.key(), next) == 0 {
                break;
            }
            self.slots_mut()[hole] = resident;
            hole = next;
        }
        self.slots_mut()[hole] = Slot::EMPTY;
        self.len -= 1;
    }

    /// Whether a run may be cut before `position`: its slot is empty or holds an entry at its
    /// home, so no entry at or after `position` has its home before it.
    pub(crate) fn is_run_start(&self, position: usize) -> bool {
        let key = self.slots()[position].key();
        key == 0 || self.distance(key, position) == 0
    }

    /// The first position where a run may be cut (one exists: the table is never full).
    pub(crate) fn first_run_start(&self) -> usize {
        (0..self.slot_count())
            .find(|&position| self.is_run_start(position))
            .expect("a table below full load has an empty slot")
    }

    /// Empties `position` without shifting anything, returning what it held. Only growth uses
    /// this, on whole runs at a time, so that no remaining entry is cut off from its home.
    pub(crate) fn take(&mut self, position: usize) -> Option<(u128, u128)> {
        let slot = std::mem::replace(&mut self.slots_mut()[position], Slot::EMPTY);
        if slot.key() == 0 {
            return None;
        }
        self.len -= 1;
        Some((slot.key(), slot.value()))
    }

    /// Empties every slot.
    pub(crate) fn clear(&mut self) {
        self.slots_mut().fill(Slot::EMPTY);
        self.len = 0;
    }

    /// The occupied slots, in slot order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u128, u128)> + '_ {
        self.slots()
            .iter()
            .filter(|slot| slot.key() != 0)
            .map(|slot| (slot.key(), slot.value()))
    }

    /// The longest probe distance of any entry (a diagnostic: one sequential scan).
    pub(crate) fn max_probe_distance(&self) -> usize {
        let slots = self.slots();
        (0..slots.len())
            .filter(|&position| slots[position].key() != 0)
            .map(|position| self.distance(slots[position].key(), position))
            .max()
            .unwrap_or(0)
    }

    /// Checks the Robin Hood invariant, the entry count and that an empty slot exists: after
    /// this succeeds every entry is findable and every probe ends. One sequential scan.
    pub(crate) fn verify(&self) -> Result<(), &'static str> {
        let slots = self.slots();
        let mask = self.mask();
        let mut occupied = 0usize;
        for position in 0..slots.len() {
            let key = slots[position].key();
            if key == 0 {
                continue;
            }
            occupied += 1;
            let distance = self.distance(key, position);
            if distance == 0 {
                continue;
            }
            let previous_position = position.wrapping_sub(1) & mask;
            let previous = slots[previous_position].key();
            if previous == 0 {
                return Err("an entry is cut off from its home by an empty slot");
            }
            let previous_distance = self.distance(previous, previous_position);
            if distance > previous_distance + 1 {
                return Err("Robin Hood order is broken");
            }
            if distance == previous_distance + 1 && previous >= key {
                return Err("keys sharing a home slot are out of order");
            }
        }
        if occupied != self.len {
            return Err("entry count does not match the occupied slots");
        }
        if occupied >= slots.len() {
            return Err("no empty slot");
        }
        Ok(())
    }
}
