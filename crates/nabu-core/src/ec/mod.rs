//! Erasure coding (placeholder module; the codec lands in the next commit).
