//! The `node.toml` that `nabu up` writes for each node: `nabu_node::NodeConfig` with the
//! local cluster's static member list, so the file is exactly what `nabu serve` reads.

use std::path::Path;

use nabu_node::{ListenerAddrs, MemberConfig, MembershipKind, NodeConfig};

use crate::cluster_file::NodeEntry;

/// Local settings `nabu up` writes into every node's config.
#[derive(Debug, Clone, Default)]
pub struct LocalSettings {
    /// The RESP password (with the node's `resp_addr`, the RESP endpoint is served).
    pub resp_password: Option<String>,
    /// `--kv-bytes`: the KV pool's capacity (else the node's default).
    pub kv_bytes: Option<u64>,
    /// Where the member list lives (`--membership`).
    pub membership: MembershipKind,
    /// etcd's client URLs (`--etcd`).
    pub etcd_endpoints: Vec<String>,
    /// The cluster's key prefix in etcd.
    pub etcd_prefix: String,
}

/// The TOML text of node `entry`'s config in a cluster of `all` nodes.
pub fn render(
    entry: &NodeEntry,
    all: &[NodeEntry],
    token: &str,
    data_dir: &Path,
    settings: &LocalSettings,
) -> anyhow::Result<String> {
    let mut config = NodeConfig::new(entry.id, data_dir, token);
    config.zone = entry.zone.clone();
    config.data_addr = entry.data_addr;
    config.peer_addr = entry.peer_addr;
    config.http_addr = entry.http_addr;
    config.data_socket.clone_from(&entry.data_socket);
    config.s3_addr = entry.s3_addr;
    config.members = all.iter().map(member).collect();
    apply(&mut config, entry, settings);
    config.validate()?;
    Ok(config.to_toml())
}

/// Sets what `nabu up` owns in an existing node config: the RESP endpoint and password, the
/// membership settings, and the KV pool's capacity when `--kv-bytes` was given. Everything
/// else is left as it is.
pub fn apply(config: &mut NodeConfig, entry: &NodeEntry, settings: &LocalSettings) {
    if let (Some(addr), Some(password)) = (entry.resp_addr, &settings.resp_password) {
        config.resp_addr = Some(addr);
        config.resp_password = password.clone();
    }
    if let Some(kv_bytes) = settings.kv_bytes {
        config.kv_bytes = kv_bytes;
    }
    config.membership = settings.membership;
    if settings.membership == MembershipKind::Etcd {
        config.etcd_endpoints.clone_from(&settings.etcd_endpoints);
        config.etcd_prefix.clone_from(&settings.etcd_prefix);
    }
}

fn member(entry: &NodeEntry) -> MemberConfig {
    let addrs = ListenerAddrs {
        data: entry.data_addr,
        peer: entry.peer_addr,
        http: entry.http_addr,
    };
    MemberConfig::new(entry.id, entry.zone.clone(), addrs)
}
