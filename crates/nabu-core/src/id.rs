//! Content ids.
