//! `nabu`: one binary, several roles. `nabu up` runs a local cluster (the embedded default),
//! `nabu serve` runs one storage node (and its S3 gateway), the client commands talk to a
//! running cluster, and `nabu key` manages S3 access keys.
//! Failures print one clear line on stderr and exit non-zero.

mod bench;
mod cluster_file;
mod commands;
mod http_probe;
mod kv_bench;
mod node_config;
mod serve;
mod up;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// NabuStore: storage for AI inference.
#[derive(Debug, Parser)]
#[command(name = "nabu", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a local cluster of N node processes on 127.0.0.1 (the embedded default).
    Up(up::UpArgs),
    /// Run one storage node from its config file.
    Serve(serve::ServeArgs),
    /// Store FILE (or stdin with `-`) under KEY; prints the BlobId.
    Put {
        #[command(flatten)]
        cluster: commands::ClusterArg,
        #[command(flatten)]
        ns: commands::NamespaceArg,
        /// The key.
        key: String,
        /// The file to store, or `-` for stdin.
        file: PathBuf,
    },
    /// Fetch KEY to stdout or to a file (a failed get leaves no partial file).
    Get {
        #[command(flatten)]
        cluster: commands::ClusterArg,
        #[command(flatten)]
        ns: commands::NamespaceArg,
        /// The key.
        key: String,
        /// Where to write: a file, or `-` for stdout (the default).
        #[arg(short = 'o', long = "output")]
        output: Option<PathBuf>,
    },
    /// Show size, BlobId and metadata of KEY.
    Stat {
        #[command(flatten)]
        cluster: commands::ClusterArg,
        #[command(flatten)]
        ns: commands::NamespaceArg,
        /// The key.
        key: String,
    },
    /// List keys (optionally only those starting with PREFIX), in order.
    Ls {
        #[command(flatten)]
        cluster: commands::ClusterArg,
        #[command(flatten)]
        ns: commands::NamespaceArg,
        /// Only keys starting with this.
        #[arg(default_value = "")]
        prefix: String,
    },
    /// Delete KEY.
    Rm {
        #[command(flatten)]
        cluster: commands::ClusterArg,
        #[command(flatten)]
        ns: commands::NamespaceArg,
        /// The key.
        key: String,
    },
    /// One row per node: zone, up/down, capacity used, shards.
    Status {
        #[command(flatten)]
        cluster: commands::ClusterArg,
    },
    /// Reclaim the space of blobs no key references any more (mark and sweep; every node
    /// must be up). Items written within the grace period are kept.
    Gc(commands::GcArgs),
    /// Check every stripe's redundancy across the cluster (full, degraded, lost); with
    /// --repair, write degraded stripes back to full redundancy.
    Scrub(commands::ScrubArgs),
    /// PUT/GET throughput and latency, each as a ratio to limits measured in the same run.
    Bench(bench::BenchArgs),
    /// `prefix_lookup` latency (p50/p99) against the round-trip floor measured in the same run.
    KvBench(kv_bench::KvBenchArgs),
    /// Cache tiers off vs on under a Zipf workload with a scan, and a 1 MiB GET from DRAM
    /// against the loopback floor and NVMe, in one run (two nodes in this process).
    BenchTiers(bench::tiers::BenchTiersArgs),
    /// Change the member list: add a running node, drain one, remove a drained one.
    Node {
        #[command(subcommand)]
        action: NodeAction,
    },
    /// Manage the S3 access keys stored in the cluster.
    Key {
        #[command(subcommand)]
        action: KeyAction,
    },
}

#[derive(Debug, Subcommand)]
enum NodeAction {
    /// Make node ID (started with `nabu serve --config`, listening at --addr) a member; the
    /// cluster moves its share of the data to it.
    Add {
        #[command(flatten)]
        cluster: commands::ClusterArg,
        /// The node's id.
        id: u32,
        /// Its data-plane address (host:port); it tells its other addresses itself.
        #[arg(long)]
        addr: String,
    },
    /// Give node ID weight 0: the cluster moves everything off it while it keeps serving.
    Drain {
        #[command(flatten)]
        cluster: commands::ClusterArg,
        /// The node's id.
        id: u32,
    },
    /// Drop node ID from the member list once drained and empty.
    Remove {
        #[command(flatten)]
        cluster: commands::ClusterArg,
        /// The node's id.
        id: u32,
        /// Remove it even if not drained: it is gone for good, and the cluster re-protects
        /// what it held.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
enum KeyAction {
    /// Create an access key; prints AWS_ACCESS_KEY_ID=… and AWS_SECRET_ACCESS_KEY=….
    Create {
        #[command(flatten)]
        cluster: commands::ClusterArg,
    },
    /// List access key ids and when they were created.
    List {
        #[command(flatten)]
        cluster: commands::ClusterArg,
    },
    /// Delete an access key (every node refuses it within seconds).
    Delete {
        #[command(flatten)]
        cluster: commands::ClusterArg,
        /// The access key id.
        access_key_id: String,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Nodes log their work; a client command prints its result or one error line, so its
    // library logs stay quiet unless RUST_LOG asks for them.
    let serving = matches!(cli.command, Command::Up(_) | Command::Serve(_));
    // `s3s` logs every S3 error reply (a missing key, a bad signature) at ERROR; the
    // gateway logs what needs a human itself, so s3s stays quiet unless RUST_LOG asks.
    init_tracing(if serving { "info,s3s=off" } else { "error" });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(&anyhow::Error::new(error).context("start the async runtime")),
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Up(args) => up::run(args).await,
            Command::Serve(args) => serve::run(args).await,
            Command::Put {
                cluster,
                ns,
                key,
                file,
            } => commands::put(&cluster, &ns, &key, &file).await,
            Command::Get {
                cluster,
                ns,
                key,
                output,
            } => commands::get(&cluster, &ns, &key, output.as_deref()).await,
            Command::Stat { cluster, ns, key } => commands::stat(&cluster, &ns, &key).await,
            Command::Ls {
                cluster,
                ns,
                prefix,
            } => commands::ls(&cluster, &ns, &prefix).await,
            Command::Rm { cluster, ns, key } => commands::rm(&cluster, &ns, &key).await,
            Command::Status { cluster } => commands::status(&cluster).await,
            Command::Gc(args) => commands::gc(&args).await,
            Command::Scrub(args) => commands::scrub(&args).await,
            Command::Node { action } => match action {
                NodeAction::Add { cluster, id, addr } => {
                    commands::node_add(&cluster, id, &addr).await
                }
                NodeAction::Drain { cluster, id } => commands::node_drain(&cluster, id).await,
                NodeAction::Remove { cluster, id, force } => {
                    commands::node_remove(&cluster, id, force).await
                }
            },
            Command::Bench(args) => bench::run(args).await,
            Command::Key { action } => match action {
                KeyAction::Create { cluster } => commands::key_create(&cluster).await,
                KeyAction::List { cluster } => commands::key_list(&cluster).await,
                KeyAction::Delete {
                    cluster,
                    access_key_id,
                } => commands::key_delete(&cluster, &access_key_id).await,
            },
            Command::KvBench(args) => kv_bench::run(args).await,
            Command::BenchTiers(args) => bench::tiers::run(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => fail(&error),
    }
}

fn fail(error: &anyhow::Error) -> std::process::ExitCode {
    eprintln!("error: {error:#}");
    std::process::ExitCode::FAILURE
}

/// Logs go to stderr; `RUST_LOG` filters them (default `default_level`).
fn init_tracing(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
