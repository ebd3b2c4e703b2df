//! `nabu serve --config FILE`: one storage node in the foreground — what a container, a
//! systemd unit, or `nabu up` runs, and how a test restarts one killed node.
//!
//! With `s3_addr` in the config the process also serves the S3 API (`nabu-s3`): a gateway
//! whose ring-aware client uses the config's static member list as its cluster map. It
//! lives here, in the binary, because the node library does not depend on the client.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use nabu_client::{Client, ClientConfig, ClusterMap, MemberAddr};
use nabu_node::{Listeners, NodeConfig};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

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
    let s3_listener = match config.s3_addr {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("bind the S3 listener {addr} of node n{}", config.id))?,
        ),
        None => None,
    };
    let mut interrupt = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    let mut terminate = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let (stop_sender, stop) = watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        let _ = stop_sender.send(true);
    });
    let stopped = |mut stop: watch::Receiver<bool>| async move {
        let _ = stop.wait_for(|stopped| *stopped).await;
    };
    let mut node = nabu_node::NodeBuilder::new(config.clone());
    let gateway = match s3_listener {
        Some(listener) => {
            let client = gateway_client(&config)?;
            let service = nabu_s3::service(client, &config.s3_domains);
            let metrics = service.metrics();
            node = node.metrics_source(Arc::new(move |out: &mut String| metrics.render(out)));
            let shutdown = stopped(stop.clone());
            let grace = Duration::from_millis(config.shutdown_grace_ms);
            Some(tokio::spawn(nabu_s3::serve(
                listener, service, shutdown, grace,
            )))
        }
        None => None,
    };
    let node = node.run(listeners, stopped(stop)).await;
    if let Some(gateway) = gateway {
        gateway
            .await
            .context("the S3 gateway task panicked")?
            .context("serve S3")?;
    }
    node
}

/// The client the S3 gateway coordinates with: the static member list, the cluster token.
fn gateway_client(config: &NodeConfig) -> anyhow::Result<Client> {
    let token = config.token().context("cluster_token")?;
    let members = config
        .effective_members()
        .into_iter()
        .map(|member| MemberAddr::new(member.id, member.zone, member.data_addr))
        .collect();
    // The same map the client commands build from cluster.toml.
    let map = ClusterMap::new(token, members);
    let client_config = ClientConfig {
        client_name: format!("s3-gateway n{}", config.id),
        ..ClientConfig::default()
    };
    Client::new(map, client_config).context("start the S3 gateway's client")
}
