//! The client commands: `put`, `get`, `stat`, `ls`, `rm`, `status`.
//!
//! They find the cluster through `--cluster PATH|ADDR` (default `$NABU_CLUSTER`, else
//! `./nabu-data/cluster.toml`): a `cluster.toml` path, or the management (HTTP) address of
//! any node, in which case the member list comes from its `/api/v1/cluster` and the token from
//! `$NABU_CLUSTER_TOKEN` (secrets never go on the command line).

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use nabu_client::{Client, ClientConfig, ClusterMap, Endpoint, GcOptions, GcPhase, MemberAddr};
use nabu_node::{EtcdMembers, MemberEdit, MemberListProvider, MembershipKind, StaticMembers};
use nabu_proto::ops::MemberEntry;
use tokio::io::{AsyncRead, AsyncWriteExt};

use crate::cluster_file::ClusterFile;
use crate::http_probe;

/// Transfers at least this large get a progress bar (when stderr is a terminal).
const PROGRESS_BYTES_MIN: u64 = 8 << 20;

/// Where the cluster is: shared by every client command.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArg {
    /// A cluster.toml path, or a node's HTTP address (token from $NABU_CLUSTER_TOKEN).
    #[arg(long, env = "NABU_CLUSTER", default_value = "./nabu-data/cluster.toml")]
    pub cluster: String,
    /// Use TCP even for nodes whose Unix socket (`data_socket` in cluster.toml) is on this
    /// host; by default the socket is used where it exists.
    #[arg(long)]
    pub tcp: bool,
}

/// The namespace a command addresses.
#[derive(Debug, Clone, clap::Args)]
pub struct NamespaceArg {
    /// The namespace (an S3 bucket is one).
    #[arg(long = "ns", default_value = "default")]
    pub namespace: String,
}

impl ClusterArg {
    pub(crate) async fn cluster_map(&self) -> anyhow::Result<ClusterMap> {
        Ok(nabu_client::cluster_file::cluster_map(&self.cluster, self.tcp).await?)
    }

    /// Where the cluster's member list lives: etcd where the cluster file (or the node asked)
    /// says so, else the members themselves (reached through `client`).
    pub async fn members_provider(
        &self,
        client: &Client,
    ) -> anyhow::Result<Box<dyn MemberListProvider>> {
        let etcd = match self.cluster.parse::<SocketAddr>() {
            Ok(addr) => {
                let view: nabu_node::ClusterView =
                    serde_json::from_value(cluster_view(addr).await?)
                        .context("parse /api/v1/cluster")?;
                (view.membership.kind == "etcd")
                    .then_some((view.membership.etcd_endpoints, view.membership.etcd_prefix))
            }
            Err(_) => {
                let file = ClusterFile::load(Path::new(&self.cluster))?;
                (file.membership == MembershipKind::Etcd)
                    .then(|| (file.etcd_endpoints.clone(), file.etcd_prefix()))
            }
        };
        Ok(match etcd {
            Some((endpoints, prefix)) => Box::new(EtcdMembers::connect(&endpoints, &prefix).await?),
            None => Box::new(StaticMembers::new(client.clone())),
        })
    }

    /// A client of the cluster.
    pub async fn client(&self) -> anyhow::Result<Client> {
        self.client_with(ClientConfig::default()).await
    }

    /// A client of the cluster with `config`, on the cluster's current member list (the
    /// cluster file may predate a membership change).
    pub async fn client_with(&self, config: ClientConfig) -> anyhow::Result<Client> {
        let client = Client::new(self.cluster_map().await?, config)?;
        // If no node answers, the cluster file's list serves (and the command says what fails).
        let _ = client.refresh_members().await;
        Ok(client)
    }
}

/// The cluster map of a `cluster.toml` read from `path` (see `ClusterFile::cluster_map`).
pub fn cluster_map_from_file(
    file: &ClusterFile,
    path: &str,
    tcp: bool,
) -> anyhow::Result<ClusterMap> {
    Ok(file.cluster_map(path, tcp)?)
}

async fn cluster_view(http_addr: SocketAddr) -> anyhow::Result<serde_json::Value> {
    let (status, body) = http_probe::get(http_addr, "/api/v1/cluster")
        .await
        .with_context(|| format!("node at {http_addr} did not answer"))?;
    if status != 200 {
        bail!("node at {http_addr} answered {status} to /api/v1/cluster");
    }
    serde_json::from_slice(&body).context("parse /api/v1/cluster")
}

fn progress_bar(bytes: u64, verb: &str) -> Option<ProgressBar> {
    if bytes < PROGRESS_BYTES_MIN || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(bytes).with_message(verb.to_owned());
    let template = "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}";
    bar.set_style(
        ProgressStyle::with_template(template)
            .ok()?
            .progress_chars("=> "),
    );
    Some(bar)
}

/// `nabu put [--ns NS] KEY FILE|-`: prints the BlobId.
pub async fn put(
    cluster: &ClusterArg,
    ns: &NamespaceArg,
    key: &str,
    file: &Path,
) -> anyhow::Result<()> {
    let client = cluster.client().await?;
    let receipt = if file == Path::new("-") {
        client
            .put_stream(
                &ns.namespace,
                key.as_bytes(),
                tokio::io::stdin(),
                Default::default(),
            )
            .await?
    } else {
        let source = tokio::fs::File::open(file)
            .await
            .with_context(|| format!("open {}", file.display()))?;
        let bytes = source.metadata().await?.len();
        let bar = progress_bar(bytes, "put");
        let reader: Box<dyn AsyncRead + Unpin + Send> = match &bar {
            Some(bar) => Box::new(bar.wrap_async_read(source)),
            None => Box::new(source),
        };
        let receipt = client
            .put_stream(&ns.namespace, key.as_bytes(), reader, Default::default())
            .await;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        receipt?
    };
    if receipt.shards_missing > 0 {
        eprintln!(
            "warning: {} shard(s) could not be placed (nodes down); stored with reduced redundancy",
            receipt.shards_missing
        );
    }
    println!("{}", receipt.blob_id);
    Ok(())
}

/// `nabu get [--ns NS] KEY [-o FILE|-]`: a failed get leaves no partial file.
pub async fn get(
    cluster: &ClusterArg,
    ns: &NamespaceArg,
    key: &str,
    output: Option<&Path>,
) -> anyhow::Result<()> {
    let client = cluster.client().await?;
    let mut reader = client.get_stream(&ns.namespace, key.as_bytes()).await?;
    let bar = progress_bar(reader.len(), "get");
    let target = output.filter(|path| *path != Path::new("-"));
    let Some(path) = target else {
        let mut stdout = tokio::io::stdout();
        while let Some(chunk) = reader.next_chunk().await {
            stdout.write_all(&chunk?).await.context("write to stdout")?;
        }
        return stdout.flush().await.context("write to stdout");
    };
    let partial = partial_path(path);
    let result = async {
        let mut file = tokio::fs::File::create(&partial)
            .await
            .with_context(|| format!("create {}", partial.display()))?;
        while let Some(chunk) = reader.next_chunk().await {
            let chunk = chunk?;
            file.write_all(&chunk)
                .await
                .with_context(|| format!("write {}", partial.display()))?;
            if let Some(bar) = &bar {
                bar.inc(chunk.len() as u64);
            }
        }
        file.sync_all()
            .await
            .with_context(|| format!("sync {}", partial.display()))?;
        tokio::fs::rename(&partial, path)
            .await
            .with_context(|| format!("rename into {}", path.display()))
    }
    .await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if result.is_err() {
        let _ = tokio::fs::remove_file(&partial).await;
    }
    result
}

fn partial_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.nabu-partial-{}", std::process::id()))
}

/// `nabu stat [--ns NS] KEY`.
pub async fn stat(cluster: &ClusterArg, ns: &NamespaceArg, key: &str) -> anyhow::Result<()> {
    let info = cluster
        .client()
        .await?
        .stat(&ns.namespace, key.as_bytes())
        .await?;
    println!("key:       {}/{key}", ns.namespace);
    println!("size:      {} bytes", info.size);
    println!("blob id:   {}", info.blob_id);
    println!("written:   hlc {}", info.hlc_timestamp);
    for (name, value) in info.metadata.iter() {
        println!("meta:      {name} = {value}");
    }
    Ok(())
}

/// `nabu ls [--ns NS] [PREFIX]`: every key, in order.
pub async fn ls(cluster: &ClusterArg, ns: &NamespaceArg, prefix: &str) -> anyhow::Result<()> {
    let client = cluster.client().await?;
    let mut continuation: Option<Vec<u8>> = None;
    loop {
        let page = client
            .list(
                &ns.namespace,
                prefix.as_bytes(),
                continuation.as_deref(),
                1000,
            )
            .await?;
        for key in &page.keys {
            println!("{}", String::from_utf8_lossy(&key.key));
        }
        match page.continuation {
            Some(next) => continuation = Some(next),
            None => return Ok(()),
        }
    }
}

/// `nabu rm [--ns NS] KEY`.
pub async fn rm(cluster: &ClusterArg, ns: &NamespaceArg, key: &str) -> anyhow::Result<()> {
    cluster
        .client()
        .await?
        .delete(&ns.namespace, key.as_bytes())
        .await?;
    Ok(())
}

/// `nabu gc` arguments.
#[derive(Debug, clap::Args)]
pub struct GcArgs {
    #[command(flatten)]
    cluster: ClusterArg,
    /// Keep anything a node wrote within this long (PUTs in flight are safe as long as no
    /// client's put deadline exceeds half of it).
    #[arg(long, value_parser = nabu_node::parse_duration, default_value = "6h")]
    grace: Duration,
    /// The longest PUT the cluster's clients allow (their `put_deadline`; 1h by default).
    /// The grace period must be at least twice it.
    #[arg(long, value_parser = nabu_node::parse_duration, default_value = "1h")]
    put_deadline: Duration,
    /// Report what would be reclaimed; delete nothing.
    #[arg(long)]
    dry_run: bool,
}

/// `nabu gc`: one mark-and-sweep collection, with a line per phase on a terminal.
pub async fn gc(args: &GcArgs) -> anyhow::Result<()> {
    let config = ClientConfig {
        put_deadline: args.put_deadline,
        ..ClientConfig::default()
    };
    let client = args.cluster.client_with(config).await?;
    let spinner = std::io::stderr().is_terminal().then(|| {
        let spinner = ProgressBar::new_spinner();
        spinner.enable_steady_tick(Duration::from_millis(120));
        spinner
    });
    let options = GcOptions {
        grace: args.grace,
        dry_run: args.dry_run,
    };
    let report = client
        .collect_garbage(options, |phase| {
            if let Some(spinner) = &spinner {
                spinner.set_message(match phase {
                    GcPhase::Mark => "marking: reading key records and manifests",
                    GcPhase::List => "listing the shards each node holds",
                    GcPhase::Sweep => "sweeping unreferenced shards and manifests",
                });
            }
        })
        .await;
    if let Some(spinner) = spinner {
        spinner.finish_and_clear();
    }
    let report = report?;
    println!(
        "live: {} blobs, {} stripes in {} namespaces; {} shards held",
        report.blobs_live, report.stripes_live, report.namespaces, report.shards_held
    );
    println!(
        "unreferenced: {} shards, {} manifest copies",
        report.shards_unreferenced, report.manifests_unreferenced
    );
    if args.dry_run {
        println!("dry run: nothing deleted");
    } else {
        println!(
            "deleted: {} shards, {} manifest copies, {} freed",
            report.shards_deleted,
            report.manifests_deleted,
            human_bytes(report.bytes_freed),
        );
        println!(
            "condemned: {} (a collection {:?} after their condemnation deletes them); \
             kept {} written within {:?}",
            report.condemned, args.grace, report.kept_recent, args.grace
        );
    }
    Ok(())
}

/// `nabu scrub` arguments.
#[derive(Debug, clap::Args)]
pub struct ScrubArgs {
    #[command(flatten)]
    cluster: ClusterArg,
    /// Write degraded stripes (and their key records and manifests) back to full redundancy.
    #[arg(long)]
    repair: bool,
}

/// `nabu scrub`: every stripe's redundancy across the cluster; exits non-zero unless all
/// are full (after the repair, with `--repair`).
pub async fn scrub(args: &ScrubArgs) -> anyhow::Result<()> {
    let client = args.cluster.client().await?;
    let spinner = std::io::stderr().is_terminal().then(|| {
        let spinner = ProgressBar::new_spinner();
        spinner.enable_steady_tick(Duration::from_millis(120));
        spinner
    });
    let started = std::time::Instant::now();
    let options = nabu_client::CheckOptions {
        repair: args.repair,
        rebalance: false,
        bytes_per_s: None,
    };
    let report = client
        .check_redundancy(options, |report| {
            if let Some(spinner) = &spinner {
                spinner.set_message(format!(
                    "{} keys, {} stripes checked ({} degraded, {} repaired)",
                    report.keys, report.stripes, report.stripes_degraded, report.stripes_repaired
                ));
            }
        })
        .await;
    if let Some(spinner) = spinner {
        spinner.finish_and_clear();
    }
    let report = report?;
    println!(
        "{} keys in {} namespaces: {} stripes, {} full, {} degraded, {} lost ({:.1} s)",
        report.keys,
        report.namespaces,
        report.stripes,
        report.stripes_full,
        report.stripes_degraded,
        report.stripes_lost,
        started.elapsed().as_secs_f64()
    );
    if args.repair {
        println!(
            "repaired: {} stripes ({}), {} key records and manifests rewritten",
            report.stripes_repaired,
            human_bytes(report.bytes_repaired),
            report.metadata_rewritten
        );
    }
    for failure in &report.failures {
        println!("failed: {failure}");
    }
    let short = report.stripes_lost
        + report.repair_failures
        + if args.repair {
            0
        } else {
            report.stripes_degraded
        };
    if short > 0 {
        anyhow::bail!(
            "{} stripes lost, {} degraded{}",
            report.stripes_lost,
            report.stripes_degraded,
            if args.repair {
                ", some repairs failed"
            } else {
                " (run with --repair)"
            }
        );
    }
    Ok(())
}

/// `nabu node add ID --addr ADDR`: makes the running node at ADDR a member.
pub async fn node_add(cluster: &ClusterArg, id: u32, addr: &str) -> anyhow::Result<()> {
    let client = cluster.client().await?;
    let provider = cluster.members_provider(&client).await?;
    // The newcomer says what it is: zone, weight and addresses from its own config.
    let endpoint: Endpoint = addr.parse()?;
    let map = ClusterMap::new(
        cluster.cluster_map().await?.token,
        vec![MemberAddr::new(id, "default", endpoint)],
    );
    let config = ClientConfig {
        members_refresh: None,
        ..ClientConfig::default()
    };
    let newcomer = Client::new(map, config)?;
    let (their_epoch, theirs) = newcomer
        .pool()
        .members_get(nabu_core::ring::NodeId(id))
        .await
        .with_context(|| format!("ask node {id} at {addr} what it is (is it running?)"))?;
    let entry = theirs
        .into_iter()
        .find(|member| member.id.0 == id)
        .with_context(|| format!("the node at {addr} does not list itself as node {id}"))?;
    if provider.kind() == MembershipKind::Static {
        let current = provider.current().await?;
        if their_epoch > current.epoch {
            bail!(
                "node {id} is on ring epoch {their_epoch}, past the cluster's {}: it would \
                 refuse the new list (was it part of another cluster? start it on a fresh \
                 data dir)",
                current.epoch
            );
        }
    }
    let edit = |members: &mut Vec<MemberEntry>| {
        if let Some(member) = members.iter().find(|member| member.id.0 == id) {
            bail!("node {id} is already a member (weight {})", member.weight);
        }
        members.push(entry.clone());
        Ok(true)
    };
    change_members(provider.as_ref(), &edit, &format!("node {id} added")).await
}

/// `nabu node drain ID`: weight 0, so the cluster moves everything off the node.
pub async fn node_drain(cluster: &ClusterArg, id: u32) -> anyhow::Result<()> {
    let client = cluster.client().await?;
    let provider = cluster.members_provider(&client).await?;
    let edit = |members: &mut Vec<MemberEntry>| {
        let member = members
            .iter_mut()
            .find(|member| member.id.0 == id)
            .with_context(|| format!("node {id} is not a member"))?;
        if member.weight == 0 {
            bail!("node {id} is draining already (weight 0)");
        }
        member.weight = 0;
        Ok(true)
    };
    change_members(provider.as_ref(), &edit, &format!("node {id} draining")).await
}

/// `nabu node remove ID`: drops a drained, empty node from the member list (`force`: a node
/// that is gone for good; the cluster re-protects what it held).
pub async fn node_remove(cluster: &ClusterArg, id: u32, force: bool) -> anyhow::Result<()> {
    let client = cluster.client().await?;
    let provider = cluster.members_provider(&client).await?;
    if !force {
        let current = provider.current().await?;
        let Some(member) = current.members.iter().find(|member| member.id.0 == id) else {
            bail!("node {id} is not a member");
        };
        if member.weight != 0 {
            bail!(
                "node {id} still owns part of the ring: `nabu node drain {id}` first (or --force for a node that is gone)"
            );
        }
        let status = client
            .pool()
            .node_status(nabu_core::ring::NodeId(id))
            .await
            .with_context(|| format!("ask node {id} how much it holds (--force if it is gone)"))?;
        if status.shards > 0 {
            bail!(
                "node {id} still holds {} shards; wait until draining has moved them (`nabu status`)",
                status.shards
            );
        }
    }
    let edit = |members: &mut Vec<MemberEntry>| {
        let Some(at) = members.iter().position(|member| member.id.0 == id) else {
            bail!("node {id} is not a member");
        };
        if !force && members[at].weight != 0 {
            bail!("node {id} was given weight again meanwhile; not removing it");
        }
        members.remove(at);
        Ok(true)
    };
    change_members(provider.as_ref(), &edit, &format!("node {id} removed")).await
}

/// Changes the member list where it lives and says what happened.
async fn change_members(
    provider: &dyn MemberListProvider,
    edit: &MemberEdit<'_>,
    what: &str,
) -> anyhow::Result<()> {
    let update = provider.update(edit).await?;
    let list = &update.list;
    println!(
        "ring epoch {}: {what}; {} members ({} membership). The cluster moves data to the new \
         placement (progress: `nabu status`).",
        list.epoch,
        list.members.len(),
        provider.kind().name()
    );
    for (node, why) in &update.not_taken {
        eprintln!(
            "warning: node {node} did not take the list yet ({why}); it catches up from its peers"
        );
    }
    Ok(())
}

/// `nabu status`: the ring epoch, one row per member (zone, weight, up/down, capacity used,
/// shards), and the maintenance the coordinating node reports.
pub async fn status(cluster: &ClusterArg) -> anyhow::Result<()> {
    let members = status_members(cluster).await?;
    if let Some(epoch) = members.epoch {
        let kind = members.kind.map_or("", |kind| kind.name());
        println!(
            "ring epoch {epoch}, {} members ({kind} membership)",
            members.rows.len()
        );
    }
    let mut off_etcd = Vec::new();
    println!(
        "{:<6} {:<10} {:>6} {:<6} {:>12} {:>12} {:>10}",
        "node", "zone", "weight", "state", "used", "capacity", "shards"
    );
    let mut coordinated = Vec::new();
    let mut tiers = Vec::new();
    // Heartbeat states as the first node that answers sees them (up, suspect, down).
    let mut heartbeats: Option<serde_json::Value> = None;
    for (id, zone, weight, http_addr) in members.rows {
        let weight = weight.map_or("-".to_owned(), |weight| weight.to_string());
        let view = tokio::time::timeout(Duration::from_secs(3), cluster_view(http_addr)).await;
        match view {
            Ok(Ok(view)) => {
                let store = &view["store"];
                let used = store["bytes_used"].as_u64().unwrap_or(0);
                let capacity = store["bytes_capacity"].as_u64().unwrap_or(0);
                let shards = store["shards"].as_u64().unwrap_or(0);
                let heartbeats = heartbeats.get_or_insert_with(|| view["members"].clone());
                let suspect = heartbeats
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|member| member["id"] == id && member["state"] == "suspect");
                let state = if weight == "0" {
                    "drain"
                } else if suspect {
                    "suspect"
                } else {
                    "up"
                };
                println!(
                    "n{id:<5} {zone:<10} {weight:>6} {state:<6} {:>12} {:>12} {shards:>10}",
                    human_bytes(used),
                    human_bytes(capacity)
                );
                if view["membership"]["kind"] == "etcd"
                    && view["membership"]["etcd_connected"] != true
                {
                    off_etcd.push(id);
                }
                let maintenance = &view["maintenance"];
                if maintenance["passes"].as_u64().unwrap_or(0) > 0 {
                    coordinated.push((id, maintenance.clone()));
                }
                tiers.push((id, view["tiers"].clone()));
            }
            _ => println!(
                "n{id:<5} {zone:<10} {weight:>6} {:<6} {:>12} {:>12} {:>10}",
                "down", "-", "-", "-"
            ),
        }
    }
    if !off_etcd.is_empty() {
        let nodes: Vec<String> = off_etcd.iter().map(|id| format!("n{id}")).collect();
        println!(
            "not connected to etcd now: {} (serving on their last member list)",
            nodes.join(", ")
        );
    }
    for (id, maintenance) in coordinated {
        let number = |field: &str| maintenance[field].as_u64().unwrap_or(0);
        let running = maintenance["running"].as_bool() == Some(true);
        println!(
            "maintenance by n{id}: {}, {} passes; {} shards moved ({}), {} stripes re-protected; {} members lost",
            if running { "running" } else { "idle" },
            number("passes"),
            number("shards_moved"),
            human_bytes(number("bytes_moved")),
            number("stripes_repaired"),
            number("members_lost"),
        );
        if running {
            println!(
                "  left to do: {} shards to move ({}), {} stripes to re-protect",
                number("shards_pending"),
                human_bytes(number("bytes_pending")),
                number("stripes_pending"),
            );
        }
    }
    print_tiers(&tiers);
    Ok(())
}

/// `nabu status`'s tier table: per node and tier, bytes held of the capacity, hits, misses,
/// promotions and demotions; then the CXL memory each node found.
fn print_tiers(tiers: &[(u32, serde_json::Value)]) {
    if tiers.is_empty() {
        return;
    }
    println!(
        "{:<6} {:<5} {:>22} {:>10} {:>10} {:>10} {:>10}",
        "node", "tier", "bytes / capacity", "hits", "misses", "promoted", "demoted"
    );
    for (id, view) in tiers {
        for tier in view["tiers"].as_array().into_iter().flatten() {
            let number = |field: &str| tier[field].as_u64().unwrap_or(0);
            let name = tier["tier"].as_str().unwrap_or("?");
            let held = match name {
                "nvme" => human_bytes(number("bytes")),
                _ if tier["enabled"].as_bool() != Some(true) => "off".to_owned(),
                _ => format!(
                    "{} / {}",
                    human_bytes(number("bytes")),
                    human_bytes(number("capacity_bytes"))
                ),
            };
            println!(
                "n{id:<5} {name:<5} {held:>22} {:>10} {:>10} {:>10} {:>10}",
                number("hits"),
                number("misses"),
                number("promotions"),
                number("demotions"),
            );
        }
        let cxl = &view["cxl_hardware"];
        if cxl["present"].as_bool() == Some(true) {
            let devices = cxl["devices"].as_array().map_or(0, Vec::len);
            let numa: Vec<String> = cxl["memory_only_numa_nodes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|node| {
                    let bytes = node[1].as_u64().unwrap_or(0);
                    format!("node{} ({})", node[0], human_bytes(bytes))
                })
                .collect();
            println!(
                "n{id:<5} cxl memory: {devices} CXL bus devices; memory-only NUMA nodes: {}",
                if numa.is_empty() {
                    "none".to_owned()
                } else {
                    numa.join(", ")
                }
            );
        } else if view.get("cxl_hardware").is_some() {
            println!("n{id:<5} cxl memory: none detected");
        }
    }
}

/// The members `nabu status` shows: (id, zone, weight, HTTP address), and the ring epoch.
struct StatusMembers {
    epoch: Option<u64>,
    kind: Option<MembershipKind>,
    rows: Vec<(u32, String, Option<u32>, SocketAddr)>,
}

async fn status_members(cluster: &ClusterArg) -> anyhow::Result<StatusMembers> {
    // The live member list, when a node answers; else what the cluster file or node says.
    if let Ok(client) = cluster.client().await
        && let Ok(provider) = cluster.members_provider(&client).await
        && let Ok(list) = provider.current().await
        && !list.members.is_empty()
    {
        let rows = list
            .members
            .into_iter()
            .map(|m| (m.id.0, m.zone, Some(m.weight), m.http_addr))
            .collect();
        return Ok(StatusMembers {
            epoch: Some(list.epoch),
            kind: Some(provider.kind()),
            rows,
        });
    }
    if let Ok(addr) = cluster.cluster.parse::<SocketAddr>() {
        let view = cluster_view(addr).await?;
        let members = view["members"]
            .as_array()
            .context("/api/v1/cluster has no members")?;
        let rows = members
            .iter()
            .map(|m| {
                let http: SocketAddr = m["http_addr"].as_str().context("http_addr")?.parse()?;
                let zone = m["zone"].as_str().unwrap_or("default").to_owned();
                let weight = m["weight"].as_u64().map(|weight| weight as u32);
                Ok((m["id"].as_u64().context("id")? as u32, zone, weight, http))
            })
            .collect::<anyhow::Result<_>>()?;
        return Ok(StatusMembers {
            epoch: None,
            kind: None,
            rows,
        });
    }
    let file = ClusterFile::load(Path::new(&cluster.cluster))?;
    let rows = file
        .nodes
        .into_iter()
        .map(|n| (n.id, n.zone, None, n.http_addr))
        .collect();
    Ok(StatusMembers {
        epoch: None,
        kind: None,
        rows,
    })
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `nabu key create`: a new S3 access key, printed as the two environment variables AWS
/// tools read (`eval "$(nabu key create)"`).
pub async fn key_create(cluster: &ClusterArg) -> anyhow::Result<()> {
    let client = cluster.client().await?;
    let key = nabu_s3::create_access_key(&client)
        .await
        .context("create an access key")?;
    println!("AWS_ACCESS_KEY_ID={}", key.access_key_id);
    println!("AWS_SECRET_ACCESS_KEY={}", key.secret_key);
    Ok(())
}

/// `nabu key list`: one line per access key: its id and when it was created (Unix seconds).
/// Secrets are not shown.
pub async fn key_list(cluster: &ClusterArg) -> anyhow::Result<()> {
    let client = cluster.client().await?;
    let keys = nabu_s3::list_access_keys(&client)
        .await
        .context("list access keys")?;
    for key in keys {
        println!("{}\tcreated {}", key.access_key_id, key.created_ms / 1000);
    }
    Ok(())
}

/// `nabu key delete ID`: the key stops working on every node within
/// `nabu_s3::SECRET_CACHE_TTL`.
pub async fn key_delete(cluster: &ClusterArg, access_key_id: &str) -> anyhow::Result<()> {
    let client = cluster.client().await?;
    let deleted = nabu_s3::delete_access_key(&client, access_key_id)
        .await
        .context("delete an access key")?;
    if !deleted {
        bail!("no access key {access_key_id}");
    }
    println!("deleted {access_key_id}");
    Ok(())
}
