//! `nabu serve --config FILE`: one storage node in the foreground — what a container, a
//! systemd unit, or `nabu up` runs, and how a test restarts one killed node.

use std::path::PathBuf;

use anyhow::Context;
use nabu_node::{Listeners, NodeConfig};
use tokio::signal::unix::{SignalKind, signal};

/// Arguments of `nabu serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The node's config file (`node.toml`).
    #[arg(long)]
    pub config: PathBuf,
}

/// Serves until SIGINT or SIGTERM, then shuts down gracefully.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = NodeConfig::load(&args.config)?;
    let listeners = Listeners::bind(&config)
        .await
        .with_context(|| format!("bind the listeners of node n{}", config.id))?;
    let mut interrupt = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    let mut terminate = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let shutdown = async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    };
    nabu_node::run(config, listeners, shutdown).await
}
