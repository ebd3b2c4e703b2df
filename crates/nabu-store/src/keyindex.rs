//! A stand-in for `crate::index::RobinHoodIndex` (being written beside this module), with the
//! same method names and signatures, so swapping it in is a one-line change of the `use` in
//! `dir.rs`. It maps the first 16 bytes of a key's BLAKE3 hash (never 0) to a packed
//! [`crate::location::Location`].

use std::collections::HashMap;

/// The index could not take an entry.
#[derive(Debug, thiserror::Error)]
#[error("index is full")]
pub struct IndexError;

/// `u128 -> u128` map over `std::collections::HashMap`.
#[derive(Debug, Default)]
pub(crate) struct KeyIndex {
    map: HashMap<u128, u128>,
}

impl KeyIndex {
    pub fn new(capacity: usize) -> Result<Self, IndexError> {
        Ok(Self {
            map: HashMap::with_capacity(capacity),
        })
    }

    pub fn get(&self, key: u128) -> Option<u128> {
        self.map.get(&key).copied()
    }

    pub fn insert(&mut self, key: u128, value: u128) -> Result<Option<u128>, IndexError> {
        Ok(self.map.insert(key, value))
    }

    pub fn remove(&mut self, key: u128) -> Option<u128> {
        self.map.remove(&key)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = (u128, u128)> + '_ {
        self.map.iter().map(|(&key, &value)| (key, value))
    }
}
