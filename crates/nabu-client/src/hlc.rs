//! A hybrid logical clock: the timestamps that order writes to one key (last writer wins).
//!
//! A timestamp is `physical_ms << 16 | logical`: wall-clock milliseconds since the Unix epoch
//! in the high 48 bits, a counter in the low 16. [`Hlc::now`] never returns the same value
//! twice and never goes backwards, even if the wall clock does; [`Hlc::observe`] pulls the
//! clock forward past timestamps seen in replies, so a client that has read a value writes
//! after it even when its own wall clock is behind the writer's. A timestamp from a clock
//! more than [`Hlc::max_forward_skew`] ahead is not followed (one node with a wild clock must
//! not drag every client into the future); see `docs/consistency.md`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Bits of a timestamp that hold the logical counter.
pub const HLC_LOGICAL_BITS: u32 = 16;

/// The physical part (milliseconds since the Unix epoch) of a timestamp.
pub fn physical_ms(timestamp: u64) -> u64 {
    timestamp >> HLC_LOGICAL_BITS
}

/// The logical counter of a timestamp.
pub fn logical(timestamp: u64) -> u64 {
    timestamp & ((1 << HLC_LOGICAL_BITS) - 1)
}

/// A timestamp at `physical_ms` with counter 0.
pub fn from_physical_ms(physical_ms: u64) -> u64 {
    physical_ms << HLC_LOGICAL_BITS
}

/// A hybrid logical clock, shared by all tasks of one client (lock-free).
#[derive(Debug)]
pub struct Hlc {
    last: AtomicU64,
    max_forward_skew: Duration,
}

impl Hlc {
    /// A clock that follows observed timestamps at most `max_forward_skew` ahead of its own
    /// wall clock.
    pub fn new(max_forward_skew: Duration) -> Self {
        Self {
            last: AtomicU64::new(0),
            max_forward_skew,
        }
    }

    /// The skew bound given to [`Hlc::new`].
    pub fn max_forward_skew(&self) -> Duration {
        self.max_forward_skew
    }

    /// A new timestamp, greater than every one this clock returned or observed before.
    pub fn now(&self) -> u64 {
        self.now_at(wall_clock_ms())
    }

    /// [`Hlc::now`] with the wall clock given (tests).
    pub fn now_at(&self, wall_ms: u64) -> u64 {
        let wall = from_physical_ms(wall_ms);
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            // The counter may carry into the millisecond: harmless, it stays monotonic.
            let next = wall.max(last.saturating_add(1));
            match self
                .last
                .compare_exchange_weak(last, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(current) => last = current,
            }
        }
    }

    /// Moves the clock past `timestamp` (seen in a reply), unless it is more than the skew
    /// bound ahead of the wall clock. Returns whether it was followed.
    pub fn observe(&self, timestamp: u64) -> bool {
        self.observe_at(timestamp, wall_clock_ms())
    }

    /// [`Hlc::observe`] with the wall clock given (tests).
    pub fn observe_at(&self, timestamp: u64, wall_ms: u64) -> bool {
        let skew_ms = u64::try_from(self.max_forward_skew.as_millis()).unwrap_or(u64::MAX);
        if physical_ms(timestamp) > wall_ms.saturating_add(skew_ms) {
            return false;
        }
        self.last.fetch_max(timestamp, Ordering::AcqRel);
        true
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_strictly_monotonic_even_when_the_wall_clock_goes_back() {
        let clock = Hlc::new(Duration::from_secs(60));
        let first = clock.now_at(1_000);
        assert_eq!(physical_ms(first), 1_000);
        let second = clock.now_at(1_000);
        assert_eq!((physical_ms(second), logical(second)), (1_000, 1));
        let after_going_back = clock.now_at(900);
        assert!(after_going_back > second);
        let later = clock.now_at(2_000);
        assert_eq!(later, from_physical_ms(2_000));
        let mut previous = later;
        for _ in 0..100_000 {
            let next = clock.now_at(2_000);
            assert!(next > previous);
            previous = next;
        }
    }

    #[test]
    fn observed_timestamps_move_the_clock_forward_within_the_skew_bound() {
        let clock = Hlc::new(Duration::from_secs(1));
        let seen = from_physical_ms(1_500) + 7;
        assert!(clock.observe_at(seen, 1_000));
        assert!(clock.now_at(1_000) > seen);
        // Ten seconds ahead: not followed.
        let wild = from_physical_ms(11_000);
        assert!(!clock.observe_at(wild, 1_000));
        assert!(clock.now_at(1_000) < wild);
    }

    #[test]
    fn concurrent_callers_never_share_a_timestamp() {
        let clock = std::sync::Arc::new(Hlc::new(Duration::from_secs(1)));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let clock = clock.clone();
                std::thread::spawn(move || (0..10_000).map(|_| clock.now()).collect::<Vec<_>>())
            })
            .collect();
        let mut all: Vec<u64> = threads
            .into_iter()
            .flat_map(|thread| thread.join().unwrap())
            .collect();
        let count = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), count);
    }
}
