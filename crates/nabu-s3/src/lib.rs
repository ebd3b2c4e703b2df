//! NabuStore's S3-compatible gateway: what boto3, the AWS CLI, s3fs/fsspec and vLLM's Run:ai
//! model streamer speak, served by every node over the ring-aware client.
//!
//! **Why a gateway on the client.** An S3 client does not know the ring, so each node runs
//! this gateway as its coordinator: the gateway cuts, encodes and fans out stripes itself
//! ([`nabu_client::Client`]), one hop as for a native client. Any node answers for any
//! bucket; there is no S3 state outside the cluster's own metadata.
//!
//! **What `s3s` does and what this crate does.** The `s3s` crate (pinned `=0.14.1`) parses
//! HTTP into typed S3 operations (path-style and absolute-form targets), checks SigV4 header
//! and presigned signatures against the secrets [`ClusterKeys`] looks up, decodes aws-chunked
//! bodies, and writes S3's XML and error documents. This crate maps the operations onto
//! namespaces and keys ([`Gateway`]):
//! - a bucket is a namespace (created with the `default` namespace's durability);
//! - an object is a key record and its blob; ETag is the blob's BLAKE3 (first 16 bytes),
//!   Last-Modified the key record's HLC time, headers and `x-amz-meta-*` its user metadata;
//! - GetObject streams only the stripes holding the requested range;
//! - bodies are verified against the CRC/SHA/MD5 checksums the client sent before the key
//!   record is written (`body`);
//! - multipart uploads keep their parts under hidden keys and compose the object at Complete,
//!   reusing the parts' stripes when they are whole stripes (`multipart`).
//!
//! **Invariants.** An object is visible only once all of it is durable and verified (the key
//! record is written last, by the client). Every request is authenticated: no anonymous
//! access. Every in-flight count is bounded: connections (`CONNECTIONS_MAX`), object bodies
//! in flight (`TRANSFERS_INFLIGHT_MAX`, which bounds buffer memory), per-request fan-outs.
//! Errors map to S3 codes in one place (`error`).

mod body;
mod error;
mod gateway;
mod keys;
mod list;
mod meta;
mod multipart;

use std::future::Future;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use nabu_client::Client;
use s3s::service::{S3Service, S3ServiceBuilder};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

pub use body::BodyError;
pub use gateway::{Gateway, PUT_BYTES_MAX, TRANSFERS_INFLIGHT_MAX};
pub use keys::{
    ACCESS_KEY_PREFIX, AccessKey, ClusterKeys, KeyError, SECRET_CACHE_TTL, create_access_key,
    delete_access_key, get_access_key, list_access_keys,
};

/// Open S3 connections per node; one more waits until one closes.
pub const CONNECTIONS_MAX: usize = 1024;

/// The S3 service over `client`: every request must be signed by a key in the cluster.
pub fn service(client: Client) -> S3Service {
    let mut builder = S3ServiceBuilder::new(Gateway::new(client.clone()));
    builder.set_auth(ClusterKeys::new(client));
    builder.build()
}

/// Serves S3 on `listener` until `shutdown` completes; then stops accepting and closes the
/// open connections.
pub async fn serve(
    listener: TcpListener,
    service: S3Service,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: wait for connections to close.
                tracing::warn!(%error, "S3 accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        connections.spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "S3 connection ended with an error");
            }
            drop(slot);
        });
        while connections.try_join_next().is_some() {}
    }
    connections.shutdown().await;
    Ok(())
}
