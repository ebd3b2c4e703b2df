//! `cluster.toml` lives in the client library (`nabu_client::cluster_file`), so that every
//! client (these commands, the Python package) finds a cluster the same way.

pub use nabu_client::cluster_file::{ClusterFile, NodeEntry, write_secret_file};
