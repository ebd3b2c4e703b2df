//! The Robin Hood index (lands in the next commit).
