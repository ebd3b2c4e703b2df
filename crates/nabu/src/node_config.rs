//! The `node.toml` that `nabu up` writes for each node: `nabu_node::NodeConfig` with the
//! local cluster's static member list, so the file is exactly what `nabu serve` reads.

use std::path::Path;

use nabu_node::{ListenerAddrs, MemberConfig, NodeConfig};

use crate::cluster_file::NodeEntry;

/// The TOML text of node `entry`'s config in a cluster of `all` nodes.
pub fn render(
    entry: &NodeEntry,
    all: &[NodeEntry],
    token: &str,
    data_dir: &Path,
) -> anyhow::Result<String> {
    let mut config = NodeConfig::new(entry.id, data_dir, token);
    config.zone = entry.zone.clone();
    config.data_addr = entry.data_addr;
    config.peer_addr = entry.peer_addr;
    config.http_addr = entry.http_addr;
    config.data_socket.clone_from(&entry.data_socket);
    config.s3_addr = entry.s3_addr;
    config.members = all.iter().map(member).collect();
    config.validate()?;
    Ok(config.to_toml())
}

fn member(entry: &NodeEntry) -> MemberConfig {
    let addrs = ListenerAddrs {
        data: entry.data_addr,
        peer: entry.peer_addr,
        http: entry.http_addr,
    };
    MemberConfig::new(entry.id, entry.zone.clone(), addrs)
}
