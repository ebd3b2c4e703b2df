//! NabuStore's pure core: everything about *what* is stored and *where*, nothing about how
//! bytes move. No I/O, no async, no clock: every function here is deterministic, which is what
//! lets every node and every client compute the same placement on their own.

pub mod aligned;
pub mod checksum;
pub mod ec;
pub mod id;
pub mod policy;
pub mod ring;
pub mod stripe;

pub use aligned::{ALIGN_BYTES, AlignedBuf, align_up};
