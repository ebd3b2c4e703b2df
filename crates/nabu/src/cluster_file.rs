//! `cluster.toml`: what `nabu up` writes and every client command reads.
//!
//! Cluster-wide keys sit at the top level (`cluster_token`, the development S3 key
//! `s3_access_key`/`s3_secret_key`, `resp_password`); each node is one `[[node]]` table.
//! Scripts and docs rely on these names: keep
//! them. The file holds secrets, so it is written with mode 0600.

use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use nabu_node::MembershipKind;
use serde::{Deserialize, Serialize};

/// The whole file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// The shared secret every data- and peer-plane connection presents (hex).
    pub cluster_token: String,
    /// The S3 access key id `nabu up` created for development (absent until it did).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_access_key: Option<String>,
    /// Its secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_secret_key: Option<String>,
    /// The password of every node's Redis-protocol endpoint (`AUTH` / `HELLO 3 AUTH`),
    /// generated on the first `nabu up` (added to an older file on its next `nabu up`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resp_password: Option<String>,
    /// Where the member list lives: `"static"` (the default; omitted) or `"etcd"`.
    #[serde(default, skip_serializing_if = "is_static")]
    pub membership: MembershipKind,
    /// etcd's client URLs (`membership = "etcd"`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub etcd_endpoints: Vec<String>,
    /// One entry per node.
    #[serde(rename = "node")]
    pub nodes: Vec<NodeEntry>,
}

/// One node of a local cluster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    /// The node's id (its directory is `n<id>`).
    pub id: u32,
    /// Failure domain.
    pub zone: String,
    /// The process id of the running node, as last started by `nabu up` (0 when stopped).
    pub pid: u32,
    /// Client data plane (binary protocol).
    pub data_addr: SocketAddr,
    /// Peer plane (shard transfer, heartbeats).
    pub peer_addr: SocketAddr,
    /// Management HTTP (`/healthz`, `/readyz`, `/metrics`, `/api/v1/cluster`).
    pub http_addr: SocketAddr,
    /// The data plane's Unix socket, for clients on this host (absent when the path would
    /// be too long for a socket address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_socket: Option<PathBuf>,
    /// The S3-compatible API (absent in clusters created before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_addr: Option<SocketAddr>,
    /// Redis-protocol endpoint (RESP2/RESP3; password `resp_password`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resp_addr: Option<SocketAddr>,
    /// The node's own config file, for `nabu serve --config`.
    pub config: PathBuf,
}

fn is_static(kind: &MembershipKind) -> bool {
    *kind == MembershipKind::Static
}

impl ClusterFile {
    /// The cluster's key prefix in etcd: `/nabu/` and a digest of the cluster token, so
    /// clusters sharing one etcd never mix (and the token itself is not written there).
    pub fn etcd_prefix(&self) -> String {
        let digest = blake3::hash(self.cluster_token.as_bytes()).to_hex();
        format!("/nabu/{}", &digest[..16])
    }

    /// Reads and validates `path`.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = fs::read_to_string(path)
            .with_context(|| format!("read cluster file {}", path.display()))?;
        let file: Self = toml::from_str(&text)
            .with_context(|| format!("parse cluster file {}", path.display()))?;
        if file.nodes.is_empty() {
            bail!("cluster file {} lists no [[node]]", path.display());
        }
        Ok(file)
    }

    /// Writes the file atomically (temp file + rename) with mode 0600.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        write_secret_file(path, &toml::to_string_pretty(self)?)
    }
}

/// Writes `text` to `path` atomically with mode 0600 (it holds secrets).
pub fn write_secret_file(path: &Path, text: &str) -> anyhow::Result<()> {
    let temp = path.with_extension("toml.tmp");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)
        .with_context(|| format!("create {}", temp.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("write {}", temp.display()))?;
    fs::rename(&temp, path).with_context(|| format!("rename {} into place", temp.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_the_contract_names() {
        let file = ClusterFile {
            cluster_token: "ab".repeat(32),
            s3_access_key: Some("NABUABCDEFGHIJKLMNOP".into()),
            s3_secret_key: Some("cd".repeat(20)),
            resp_password: Some("cd".repeat(16)),
            membership: MembershipKind::Etcd,
            etcd_endpoints: vec!["http://127.0.0.1:2379".into()],
            nodes: vec![NodeEntry {
                id: 1,
                zone: "default".into(),
                pid: 42,
                data_addr: "127.0.0.1:7400".parse().unwrap(),
                peer_addr: "127.0.0.1:7500".parse().unwrap(),
                http_addr: "127.0.0.1:7600".parse().unwrap(),
                data_socket: Some("/tmp/n1/data.sock".into()),
                s3_addr: Some("127.0.0.1:7700".parse().unwrap()),
                resp_addr: Some("127.0.0.1:7800".parse().unwrap()),
                config: "/tmp/n1/node.toml".into(),
            }],
        };
        let text = toml::to_string_pretty(&file).unwrap();
        for name in [
            "cluster_token",
            "[[node]]",
            "id",
            "pid",
            "data_addr",
            "peer_addr",
            "http_addr",
            "s3_addr",
            "s3_access_key",
            "s3_secret_key",
            "resp_addr",
            "resp_password",
            "config",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
        assert_eq!(toml::from_str::<ClusterFile>(&text).unwrap(), file);
    }
}
