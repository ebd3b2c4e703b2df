//! `nabu up`: the embedded default — N node processes on 127.0.0.1, nothing else to install.
//!
//! The first run creates `<dir>/cluster.toml` (cluster token, one `[[node]]` per node) and
//! `<dir>/n<id>/node.toml`; later runs on the same `--dir` reuse them, so the same nodes come
//! back with the same data. Each node is a separate `nabu serve --config` process, so tests
//! and operators can kill and restart any one of them. `nabu up` prints the endpoints, then a
//! line containing `ready` once every node answers `/readyz`, and stops every node cleanly on
//! SIGINT or SIGTERM.

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};
use tokio::signal::unix::{SignalKind, signal};

use nabu_node::MembershipKind;

use crate::cluster_file::{ClusterFile, NodeEntry, write_secret_file};
use crate::http_probe;
use crate::node_config::LocalSettings;

/// Most nodes one `nabu up` starts (ports are laid out in blocks of 100).
pub const NODES_MAX: usize = 100;
/// How long `nabu up` waits for every node to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a node gets to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Arguments of `nabu up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Number of node processes (default 6, or as many as an existing cluster in --dir has).
    #[arg(long)]
    pub nodes: Option<usize>,
    /// Directory for the cluster file, node configs, data and logs.
    #[arg(long, default_value = "./nabu-data")]
    pub dir: PathBuf,
    /// First port: node i listens on BASE+i-1 (data), BASE+100+i-1 (peer), BASE+200+i-1
    /// (HTTP), BASE+300+i-1 (S3) and BASE+400+i-1 (RESP). 0 picks free ports (below the
    /// kernel's ephemeral range, so a restarted node gets them back).
    #[arg(long, default_value_t = 7400)]
    pub base_port: u16,
    /// The KV pool's capacity on every local node (e.g. 256MiB, 4GiB); written into each
    /// node's config, also for an existing cluster. Default: the node default (1 GiB).
    #[arg(long, value_name = "SIZE", value_parser = crate::bench::parse_size)]
    pub kv_bytes: Option<u64>,
    /// The DRAM cache tier's capacity on every local node (0 turns it off); written into
    /// each node's config. Default: the node default (256 MiB).
    #[arg(long, value_name = "SIZE", value_parser = crate::bench::parse_size)]
    pub tier_dram_bytes: Option<u64>,
    /// The CXL cache tier's capacity on every local node (anonymous memory unless a node's
    /// `tiers.cxl_path` names a DAX device or file). Default: the node default (off).
    #[arg(long, value_name = "SIZE", value_parser = crate::bench::parse_size)]
    pub tier_cxl_bytes: Option<u64>,
    /// Where the member list lives: `static` (in the nodes; the default for a new cluster)
    /// or `etcd` (in the etcd at --etcd: nodes register under a lease, join by themselves
    /// and watch the list). Kept in cluster.toml for later runs.
    #[arg(long, value_enum)]
    pub membership: Option<MembershipArg>,
    /// etcd's client URL(s), comma-separated, for `--membership etcd` (default
    /// http://127.0.0.1:2379). etcd must be running; `nabu up` does not start it.
    #[arg(long, value_name = "URL", value_delimiter = ',')]
    pub etcd: Vec<String>,
}

/// `--membership`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MembershipArg {
    /// The member list lives in the nodes (the embedded default: nothing else to run).
    Static,
    /// The member list lives in etcd.
    Etcd,
}

/// The RESP port's offset from the data port in a fixed port layout (the S3 gateway uses
/// +300).
const RESP_PORT_OFFSET: u16 = 400;

/// Runs `nabu up` until SIGINT/SIGTERM.
pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    fs::create_dir_all(&args.dir).with_context(|| format!("create {}", args.dir.display()))?;
    let dir = args.dir.canonicalize().context("resolve --dir")?;
    let cluster_path = dir.join("cluster.toml");
    let mut cluster = if cluster_path.exists() {
        reuse_cluster(&cluster_path, args.nodes)?
    } else {
        create_cluster(&dir, args.nodes.unwrap_or(6), args.base_port)?
    };
    ensure_resp(&mut cluster)?;
    choose_membership(&mut cluster, &args)?;
    if cluster.membership == MembershipKind::Etcd {
        let endpoints = cluster.etcd_endpoints.join(",");
        let members =
            nabu_node::EtcdMembers::connect(&cluster.etcd_endpoints, &cluster.etcd_prefix())
                .await
                .with_context(|| format!("--membership etcd: is etcd running at {endpoints}?"))?;
        let current = nabu_node::MemberListProvider::current(&members)
            .await
            .with_context(|| format!("--membership etcd: read the member list from {endpoints}"))?;
        println!(
            "membership: etcd at {endpoints} (prefix {}), {}",
            cluster.etcd_prefix(),
            match current.epoch {
                0 => "a new member list".to_owned(),
                epoch => format!("member list at ring epoch {epoch}"),
            }
        );
    }
    let settings = LocalSettings {
        resp_password: cluster.resp_password.clone(),
        kv_bytes: args.kv_bytes,
        tier_dram_bytes: args.tier_dram_bytes,
        tier_cxl_bytes: args.tier_cxl_bytes,
        membership: cluster.membership,
        etcd_endpoints: cluster.etcd_endpoints.clone(),
        etcd_prefix: cluster.etcd_prefix(),
    };
    update_node_configs(&cluster, &settings)?;
    let mut children = Vec::with_capacity(cluster.nodes.len());
    for node in &mut cluster.nodes {
        let child = spawn_node(&dir, node)?;
        node.pid = child.id().unwrap_or(0);
        children.push(child);
    }
    cluster.save(&cluster_path)?;
    print_endpoints(&dir, &cluster);
    if let Err(error) = wait_ready(&cluster, &mut children).await {
        stop_all(&mut children).await;
        return Err(error);
    }
    if let Err(error) = ensure_dev_key(&mut cluster, &cluster_path).await {
        stop_all(&mut children).await;
        return Err(error);
    }
    println!(
        "ready: {} nodes serving (cluster file {}). Stop with Ctrl-C.",
        cluster.nodes.len(),
        cluster_path.display()
    );
    supervise(&cluster, &mut children).await?;
    stop_all(&mut children).await;
    for node in &mut cluster.nodes {
        node.pid = 0;
    }
    cluster.save(&cluster_path)?;
    println!("stopped: all nodes shut down");
    Ok(())
}

/// Applies `--membership` and `--etcd` to the cluster (kept in cluster.toml), checking that
/// etcd answers before any node starts.
fn choose_membership(cluster: &mut ClusterFile, args: &UpArgs) -> anyhow::Result<()> {
    match args.membership {
        Some(MembershipArg::Etcd) => cluster.membership = MembershipKind::Etcd,
        Some(MembershipArg::Static) => cluster.membership = MembershipKind::Static,
        None if !args.etcd.is_empty() && cluster.membership == MembershipKind::Static => {
            bail!("--etcd is for --membership etcd")
        }
        None => {}
    }
    match cluster.membership {
        MembershipKind::Etcd => {
            if !args.etcd.is_empty() {
                cluster.etcd_endpoints.clone_from(&args.etcd);
            } else if cluster.etcd_endpoints.is_empty() {
                cluster.etcd_endpoints = vec!["http://127.0.0.1:2379".into()];
            }
        }
        MembershipKind::Static => cluster.etcd_endpoints.clear(),
    }
    Ok(())
}

fn reuse_cluster(path: &Path, nodes: Option<usize>) -> anyhow::Result<ClusterFile> {
    let cluster = ClusterFile::load(path)?;
    if let Some(wanted) = nodes
        && wanted != cluster.nodes.len()
    {
        bail!(
            "the cluster in {} has {} nodes, not {wanted}; run without --nodes, or use another --dir",
            path.display(),
            cluster.nodes.len()
        );
    }
    for node in &cluster.nodes {
        if node.pid != 0 && process_alive(node.pid) {
            bail!(
                "node n{} of {} is still running (pid {}); stop it before `nabu up`",
                node.id,
                path.display(),
                node.pid
            );
        }
    }
    Ok(cluster)
}

/// `<dir>/n<id>/data.sock`, or none if that is too long for a socket address (the node then
/// serves TCP only; clients fall back to it).
fn data_socket_path(dir: &Path, id: u32) -> Option<PathBuf> {
    let path = dir.join(format!("n{id}")).join("data.sock");
    if path.as_os_str().len() <= nabu_node::DATA_SOCKET_PATH_BYTES_MAX {
        return Some(path);
    }
    eprintln!(
        "note: {} is too long for a Unix socket path; node {id} serves TCP only",
        path.display()
    );
    None
}

fn create_cluster(dir: &Path, nodes: usize, base_port: u16) -> anyhow::Result<ClusterFile> {
    if nodes == 0 || nodes > NODES_MAX {
        bail!("--nodes must be between 1 and {NODES_MAX}, got {nodes}");
    }
    let token = random_token()?;
    let addresses = node_addresses(nodes, base_port)?;
    let absolute_dir =
        std::path::absolute(dir).with_context(|| format!("resolve {}", dir.display()))?;
    let used: Vec<u16> = addresses
        .iter()
        .flat_map(|(data, peer, http, s3)| [data.port(), peer.port(), http.port(), s3.port()])
        .collect();
    let resp_addrs = resp_addresses(nodes, base_port, &used)?;
    let entries: Vec<NodeEntry> = addresses
        .iter()
        .zip(resp_addrs)
        .enumerate()
        .map(
            |(index, (&(data_addr, peer_addr, http_addr, s3_addr), resp_addr))| {
                let id = index as u32 + 1;
                NodeEntry {
                    id,
                    zone: "default".into(),
                    pid: 0,
                    data_addr,
                    peer_addr,
                    http_addr,
                    data_socket: data_socket_path(&absolute_dir, id),
                    s3_addr: Some(s3_addr),
                    resp_addr: Some(resp_addr),
                    config: dir.join(format!("n{id}")).join("node.toml"),
                }
            },
        )
        .collect();
    for entry in &entries {
        let node_dir = dir.join(format!("n{}", entry.id));
        fs::create_dir_all(node_dir.join("data"))
            .with_context(|| format!("create {}", node_dir.display()))?;
        let data_dir = node_dir.join("data");
        let text = crate::node_config::render(
            entry,
            &entries,
            &token,
            &data_dir,
            &LocalSettings::default(),
        )?;
        write_secret_file(&entry.config, &text)?;
    }
    Ok(ClusterFile {
        cluster_token: token,
        s3_access_key: None,
        s3_secret_key: None,
        resp_password: Some(random_secret(16)?),
        membership: MembershipKind::Static,
        etcd_endpoints: Vec::new(),
        nodes: entries,
    })
}

/// Creates the development S3 key once the cluster is up, if the cluster file has none, and
/// records it at the top level of the cluster file (`s3_access_key`, `s3_secret_key`).
async fn ensure_dev_key(cluster: &mut ClusterFile, path: &Path) -> anyhow::Result<()> {
    if cluster.s3_access_key.is_some() {
        return Ok(());
    }
    let map = crate::commands::cluster_map_from_file(cluster, &path.display().to_string(), false)?;
    let client = nabu_client::Client::new(map, nabu_client::ClientConfig::default())?;
    let key = nabu_s3::create_access_key(&client)
        .await
        .context("create the development S3 access key")?;
    cluster.s3_access_key = Some(key.access_key_id);
    cluster.s3_secret_key = Some(key.secret_key);
    Ok(cluster.save(path)?)
}

/// The RESP address of each node: data port + 400 in the fixed layout, free ports with
/// `--base-port 0` (none of `used`, the other planes' ports).
fn resp_addresses(nodes: usize, base_port: u16, used: &[u16]) -> anyhow::Result<Vec<SocketAddr>> {
    let address = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    if base_port == 0 {
        let ports = free_ports(nodes + used.len())?;
        let free = ports.into_iter().filter(|port| !used.contains(port));
        return Ok(free.take(nodes).map(address).collect());
    }
    (0..nodes)
        .map(|index| {
            u16::try_from(usize::from(base_port) + usize::from(RESP_PORT_OFFSET) + index)
                .map(address)
                .context("--base-port too high for this many nodes")
        })
        .collect()
}

/// Gives a cluster written before the RESP endpoint existed its password and addresses
/// (data port + 400 where that port is free, else a free port).
fn ensure_resp(cluster: &mut ClusterFile) -> anyhow::Result<()> {
    if cluster.resp_password.is_none() {
        cluster.resp_password = Some(random_secret(16)?);
    }
    for node in &mut cluster.nodes {
        if node.resp_addr.is_some() {
            continue;
        }
        let preferred = node.data_addr.port().checked_add(RESP_PORT_OFFSET);
        let port = match preferred {
            Some(port) if TcpListener::bind(("127.0.0.1", port)).is_ok() => port,
            _ => free_ports(1)?[0],
        };
        node.resp_addr = Some(SocketAddr::new(node.data_addr.ip(), port));
    }
    Ok(())
}

/// Writes what `nabu up` owns (RESP endpoint and password, `--kv-bytes`) into every node's
/// config, keeping the rest of each file.
fn update_node_configs(cluster: &ClusterFile, settings: &LocalSettings) -> anyhow::Result<()> {
    for node in &cluster.nodes {
        let mut config = nabu_node::NodeConfig::load(&node.config)
            .with_context(|| format!("load the config of node n{}", node.id))?;
        let before = config.clone();
        crate::node_config::apply(&mut config, node, settings);
        if config != before {
            config
                .validate()
                .with_context(|| format!("update the config of node n{}", node.id))?;
            write_secret_file(&node.config, &config.to_toml())?;
        }
    }
    Ok(())
}

/// The four addresses of a node: data, peer, HTTP, S3.
type NodeAddresses = (SocketAddr, SocketAddr, SocketAddr, SocketAddr);

/// The addresses of each node: fixed blocks from `base_port`, or free ports when it is 0
/// (see [`free_ports`]).
fn node_addresses(nodes: usize, base_port: u16) -> anyhow::Result<Vec<NodeAddresses>> {
    let address = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    if base_port == 0 {
        let ports = free_ports(nodes * 4)?;
        return Ok(ports
            .chunks(4)
            .map(|p| (address(p[0]), address(p[1]), address(p[2]), address(p[3])))
            .collect());
    }
    (0..nodes)
        .map(|index| {
            let port = |block: usize| {
                u16::try_from(usize::from(base_port) + block * NODES_MAX + index)
                    .context("--base-port too high for this many nodes")
            };
            Ok((
                address(port(0)?),
                address(port(1)?),
                address(port(2)?),
                address(port(3)?),
            ))
        })
        .collect()
}

/// The lowest port `--base-port 0` picks from.
const FREE_PORT_LOW: u16 = 10_000;

/// `count` distinct ports that are free now, chosen at random *below* the kernel's ephemeral
/// range: a node restarted later (`nabu serve` after a kill) must get its ports back, and
/// ports in the ephemeral range may meanwhile be handed to any program's outgoing connection
/// or port-0 listener.
fn free_ports(count: usize) -> anyhow::Result<Vec<u16>> {
    let ephemeral_low = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let high = ephemeral_low.max(FREE_PORT_LOW + 1_000);
    let span = u32::from(high - FREE_PORT_LOW);
    let mut ports = Vec::with_capacity(count);
    for _ in 0..count * 100 {
        if ports.len() == count {
            return Ok(ports);
        }
        let mut random = [0u8; 4];
        getrandom::fill(&mut random).map_err(|e| anyhow::anyhow!("pick a port: {e}"))?;
        let port = FREE_PORT_LOW + (u32::from_le_bytes(random) % span) as u16;
        if !ports.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            ports.push(port);
        }
    }
    if ports.len() == count {
        return Ok(ports);
    }
    anyhow::bail!(
        "found only {} free ports in {FREE_PORT_LOW}..{high}",
        ports.len()
    )
}

fn random_token() -> anyhow::Result<String> {
    random_secret(32)
}

/// `bytes` random bytes as hex.
fn random_secret(bytes: usize) -> anyhow::Result<String> {
    let mut random = vec![0u8; bytes];
    getrandom::fill(&mut random).map_err(|e| anyhow::anyhow!("generate a secret: {e}"))?;
    Ok(random.iter().map(|b| format!("{b:02x}")).collect())
}

fn spawn_node(dir: &Path, node: &NodeEntry) -> anyhow::Result<Child> {
    let log_path = dir.join(format!("n{}", node.id)).join("node.log");
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("open {}", log_path.display()))?;
    let exe = std::env::current_exe().context("find the nabu binary")?;
    Command::new(exe)
        .arg("serve")
        .arg("--config")
        .arg(&node.config)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("start node n{}", node.id))
}

fn print_endpoints(dir: &Path, cluster: &ClusterFile) {
    println!(
        "NabuStore local cluster: {} nodes in {}",
        cluster.nodes.len(),
        dir.display()
    );
    println!(
        "{:<5} {:<8} {:<22} {:<22} {:<29} {:<22} http (dashboard, /metrics, /api/v1)",
        "node", "pid", "data", "peer", "s3", "resp (redis)"
    );
    for node in &cluster.nodes {
        let s3 = node
            .s3_addr
            .map_or_else(|| "-".to_owned(), |addr| format!("http://{addr}"));
        let resp = node
            .resp_addr
            .map_or("-".to_owned(), |addr| addr.to_string());
        println!(
            "n{:<4} {:<8} {:<22} {:<22} {:<29} {:<22} http://{}/",
            node.id, node.pid, node.data_addr, node.peer_addr, s3, resp, node.http_addr
        );
    }
    if let Some(node) = cluster.nodes.iter().find(|node| node.resp_addr.is_some()) {
        let addr = node.resp_addr.expect("found with one");
        println!(
            "redis: redis-cli -h {} -p {} --user default --pass \"$(grep ^resp_password {} | cut -d'\"' -f2)\"",
            addr.ip(),
            addr.port(),
            dir.join("cluster.toml").display()
        );
    }
    println!(
        "S3: path-style, any region; access key and secret: s3_access_key and s3_secret_key in \
         {}/cluster.toml",
        dir.display()
    );
    if let Some(node) = cluster.nodes.first() {
        println!(
            "dashboard: http://{}/ (every node serves it; API: docs/api.md)",
            node.http_addr
        );
    }
}

async fn wait_ready(cluster: &ClusterFile, children: &mut [Child]) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    for (node, child) in cluster.nodes.iter().zip(children.iter_mut()) {
        let mut delay = Duration::from_millis(20);
        loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "node n{} exited during start-up ({status}); see {}",
                    node.id,
                    node.config.with_file_name("node.log").display()
                );
            }
            if http_probe::get_status(node.http_addr, "/readyz").await == Some(200) {
                break;
            }
            if Instant::now() > deadline {
                bail!("node n{} was not ready within {READY_TIMEOUT:?}", node.id);
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(250));
        }
    }
    Ok(())
}

/// Waits for SIGINT or SIGTERM, reporting nodes that exit on their own meanwhile (a killed
/// node is left for the operator or test to restart with `nabu serve`).
async fn supervise(cluster: &ClusterFile, children: &mut [Child]) -> anyhow::Result<()> {
    let mut interrupt = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    let mut terminate = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut exited = vec![false; children.len()];
    loop {
        let watch = async {
            loop {
                for (index, child) in children.iter_mut().enumerate() {
                    if !exited[index]
                        && let Ok(Some(status)) = child.try_wait()
                    {
                        return (index, status);
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        tokio::select! {
            _ = interrupt.recv() => return Ok(()),
            _ = terminate.recv() => return Ok(()),
            (index, status) = watch => {
                exited[index] = true;
                let node = &cluster.nodes[index];
                eprintln!(
                    "node n{} exited ({status}); restart it with: nabu serve --config {}",
                    node.id,
                    node.config.display()
                );
            }
        }
    }
}

async fn stop_all(children: &mut [Child]) {
    for child in children.iter() {
        if let Some(pid) = child.id() {
            // SAFETY: kill(2) with a pid we spawned and a valid signal number.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        }
    }
    for child in children.iter_mut() {
        if tokio::time::timeout(STOP_TIMEOUT, child.wait())
            .await
            .is_err()
        {
            eprintln!("a node did not stop within {STOP_TIMEOUT:?}; killing it");
            let _ = child.kill().await;
        }
    }
}

fn process_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}
