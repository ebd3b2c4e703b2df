//! `cluster.toml`: what `nabu up` writes and every client (the `nabu` commands, the Python
//! package) reads, and [`cluster_map`], how a client finds the cluster from a `--cluster`
//! value: a `cluster.toml` path or the management (HTTP) address of any node.
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

use nabu_proto::ClusterToken;
use serde::{Deserialize, Serialize};

use crate::config::{ClusterMap, Endpoint, MemberAddr, MembershipKind};
use crate::error::{ClientError, Result};

/// Where clients look for the cluster when told nothing (`$NABU_CLUSTER` overrides it).
pub const CLUSTER_DEFAULT: &str = "./nabu-data/cluster.toml";
/// The environment variable naming the cluster (a path or an address).
pub const CLUSTER_ENV: &str = "NABU_CLUSTER";
/// The environment variable holding the cluster token when the cluster is given as an
/// address (secrets never go on a command line).
pub const CLUSTER_TOKEN_ENV: &str = "NABU_CLUSTER_TOKEN";

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
    pub fn load(path: &Path) -> Result<Self> {
        let text = fs::read_to_string(path).map_err(|source| ClientError::Io {
            context: format!("read cluster file {}", path.display()),
            source,
        })?;
        let file: Self = toml::from_str(&text).map_err(|error| {
            ClientError::InvalidArgument(format!("parse cluster file {}: {error}", path.display()))
        })?;
        if file.nodes.is_empty() {
            return Err(ClientError::InvalidArgument(format!(
                "cluster file {} lists no [[node]]",
                path.display()
            )));
        }
        Ok(file)
    }

    /// Writes the file atomically (temp file + rename) with mode 0600.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = toml::to_string_pretty(self).map_err(|error| {
            ClientError::InvalidArgument(format!("encode cluster file: {error}"))
        })?;
        write_secret_file(path, &text)
    }

    /// The cluster map of this file (`path` names it in errors): each node by its Unix
    /// socket where the file names one that exists on this host (unless `tcp`), else by TCP.
    pub fn cluster_map(&self, path: &str, tcp: bool) -> Result<ClusterMap> {
        let token = ClusterToken::from_hex(&self.cluster_token).map_err(|error| {
            ClientError::InvalidArgument(format!("cluster_token in {path}: {error}"))
        })?;
        let members = self
            .nodes
            .iter()
            .map(|node| {
                let socket = node
                    .data_socket
                    .as_ref()
                    .filter(|path| !tcp && is_socket(path));
                let endpoint = match socket {
                    Some(path) => Endpoint::Unix(path.clone()),
                    None => Endpoint::from(node.data_addr),
                };
                MemberAddr::new(node.id, node.zone.clone(), endpoint)
            })
            .collect();
        Ok(ClusterMap::new(token, members))
    }
}

fn is_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    fs::metadata(path).is_ok_and(|meta| meta.file_type().is_socket())
}

/// The `--cluster` value a client uses when given none: `$NABU_CLUSTER`, else
/// [`CLUSTER_DEFAULT`].
pub fn default_cluster() -> String {
    std::env::var(CLUSTER_ENV).unwrap_or_else(|_| CLUSTER_DEFAULT.to_owned())
}

/// The cluster map named by `cluster`: a `cluster.toml` path (see
/// [`ClusterFile::cluster_map`]), or the management (HTTP) address of any node, in which case
/// the member list comes from its `/api/v1/cluster` and the token from `$NABU_CLUSTER_TOKEN`.
pub async fn cluster_map(cluster: &str, tcp: bool) -> Result<ClusterMap> {
    if let Ok(addr) = cluster.parse::<SocketAddr>() {
        return cluster_map_from_node(addr).await;
    }
    ClusterFile::load(Path::new(cluster))?.cluster_map(cluster, tcp)
}

/// The cluster map as the node at management address `addr` sees it (token from
/// `$NABU_CLUSTER_TOKEN`).
pub async fn cluster_map_from_node(addr: SocketAddr) -> Result<ClusterMap> {
    let invalid = |reason: String| ClientError::InvalidArgument(reason);
    let token = std::env::var(CLUSTER_TOKEN_ENV).map_err(|_| {
        invalid(format!(
            "the cluster is given as an address: set {CLUSTER_TOKEN_ENV} to the cluster token"
        ))
    })?;
    let token = ClusterToken::from_hex(token.trim())
        .map_err(|error| invalid(format!("{CLUSTER_TOKEN_ENV}: {error}")))?;
    let (status, body) = crate::http_get::get(addr, "/api/v1/cluster")
        .await
        .ok_or_else(|| ClientError::Io {
            context: format!("ask the node at {addr} for the cluster"),
            source: std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "no answer"),
        })?;
    if status != 200 {
        return Err(invalid(format!(
            "node at {addr} answered {status} to /api/v1/cluster"
        )));
    }
    let view: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|error| invalid(format!("parse /api/v1/cluster of {addr}: {error}")))?;
    let members = view["members"]
        .as_array()
        .ok_or_else(|| invalid(format!("/api/v1/cluster of {addr} has no members")))?
        .iter()
        .map(|member| {
            let id = member["id"]
                .as_u64()
                .ok_or_else(|| invalid("member id".into()))?;
            let zone = member["zone"].as_str().unwrap_or("default");
            let data: SocketAddr = member["data_addr"]
                .as_str()
                .and_then(|text| text.parse().ok())
                .ok_or_else(|| invalid(format!("member {id}: data_addr")))?;
            Ok(MemberAddr::new(id as u32, zone, data))
        })
        .collect::<Result<_>>()?;
    Ok(ClusterMap::new(token, members))
}

/// Writes `text` to `path` atomically with mode 0600 (it holds secrets).
pub fn write_secret_file(path: &Path, text: &str) -> Result<()> {
    let io = |context: String| move |source| ClientError::Io { context, source };
    let temp = path.with_extension("toml.tmp");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)
        .map_err(io(format!("create {}", temp.display())))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io(format!("write {}", temp.display())))?;
    fs::rename(&temp, path).map_err(io(format!("rename {} into place", temp.display())))
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
