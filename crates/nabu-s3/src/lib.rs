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
pub mod host;
mod keys;
mod list;
mod meta;
pub mod metrics;
mod multipart;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::service::HttpService;
use hyper_util::rt::TokioIo;
use nabu_client::Client;
use s3s::service::{S3Service, S3ServiceBuilder};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
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
/// `domains` are the host names it is reached under, for virtual-hosted-style addressing
/// ([`host::Domains`]). Counted: its [`metrics::Metered::metrics`] render into the node's
/// `/metrics`.
pub fn service(client: Client, domains: &[String]) -> metrics::Metered<S3Service> {
    let mut builder = S3ServiceBuilder::new(Gateway::new(client.clone()));
    builder.set_auth(ClusterKeys::new(client));
    builder.set_host(host::Domains::new(domains));
    metrics::Metered::new(builder.build())
}

/// Serves S3 on `listener` until `shutdown` completes, then drains: it stops accepting, lets
/// every request in flight finish (its connection then closes instead of waiting for the
/// next request; idle connections close at once) for up to `grace`, and drops what still
/// runs after that. A rolling restart so loses no request that was already being served.
pub async fn serve<S>(
    listener: TcpListener,
    service: S,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> std::io::Result<()>
where
    S: HttpService<Incoming> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::ResBody: Send + 'static,
    <S::ResBody as Body>::Data: Send,
    <S::ResBody as Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let slots = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    let (drain, draining) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            biased;
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: wait for connections to close.
                tracing::warn!(%error, "S3 accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let mut draining = draining.clone();
        connections.spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            // Returns nothing, so no guard of the channel is held across an await.
            let drain = async move {
                let _ = draining.wait_for(|draining| *draining).await;
            };
            let result = tokio::select! {
                biased;
                result = connection.as_mut() => result,
                () = drain => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "S3 connection ended with an error");
            }
            drop(slot);
        });
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    let _ = drain.send(true);
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            ?grace,
            "S3 requests still running after the shutdown grace period; dropping them"
        );
        connections.shutdown().await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::sync::oneshot;

    use super::*;

    /// A request that arrives, then a shutdown while it is being served.
    #[tokio::test]
    async fn a_shutdown_lets_requests_in_flight_finish_and_takes_no_new_ones() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (started, serving) = oneshot::channel::<()>();
        let started = Arc::new(std::sync::Mutex::new(Some(started)));
        let (release, released) = watch::channel(false);
        let service = hyper::service::service_fn(move |_request| {
            let (started, mut released) = (Arc::clone(&started), released.clone());
            async move {
                if let Some(started) = started.lock().expect("lock").take() {
                    let _ = started.send(());
                }
                let _ = released.wait_for(|released| *released).await;
                Ok::<_, Infallible>(hyper::Response::new(String::from("all of the body")))
            }
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let server = tokio::spawn(serve(listener, service, shutdown, Duration::from_secs(30)));

        let mut client = TcpStream::connect(addr).await.expect("connect");
        client
            .write_all(b"GET /bucket/key HTTP/1.1\r\nhost: nabu\r\n\r\n")
            .await
            .expect("request");
        serving.await.expect("the request is being served");
        stop.send(()).expect("shut down");
        // The listener is gone once the server has seen the shutdown: new clients are refused.
        let refused = async {
            loop {
                if TcpStream::connect(addr).await.is_err() {
                    return;
                }
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), refused)
            .await
            .expect("new connections are refused while draining");
        assert!(
            !server.is_finished(),
            "the server waits for the request in flight"
        );
        release.send(true).expect("release");
        let mut response = String::new();
        client
            .read_to_string(&mut response)
            .await
            .expect("the whole response, then the connection closes");
        assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
        assert!(response.ends_with("all of the body"), "{response}");
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the server returns once drained")
            .expect("task")
            .expect("serve");
    }
}
