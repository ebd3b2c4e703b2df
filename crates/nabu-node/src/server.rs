//! The accept loop of the data and peer planes: the connection cap and graceful shutdown.
//!
//! A listener holds at most `connections_max` connections (a semaphore's permits). One more is
//! answered with ERROR BUSY (request id 0) by a non-blocking write — the frame is a few dozen
//! bytes and the new socket's send buffer is empty — and closed, so refusing costs no task and
//! cannot be slowed down by the refused peer. On shutdown the loop stops accepting, each
//! connection stops reading and finishes the requests it has, and whatever is still running
//! after `shutdown_grace_ms` is dropped.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use nabu_client::sim::{SimListener, SimNet};
use nabu_proto::ops::Plane;
use nabu_proto::{ErrorCode, ErrorFrame, Frame};
use tokio::io::DuplexStream;
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::connection::{self, ReadHalf, WriteHalf};
use crate::node::{Node, until_stopped};

/// How long the accept loop pauses after an accept error (out of file descriptors, say),
/// so it does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// A listener of the binary protocol: TCP, or a Unix socket for same-host clients.
#[derive(Debug)]
pub enum PlaneListener {
    /// TCP.
    Tcp(TcpListener),
    /// A Unix stream socket.
    Unix(UnixListener),
    /// An address of the simulated network ([`nabu_client::sim`]), and the TCP listener
    /// that keeps the address reserved.
    Sim {
        /// Where connections arrive.
        listener: SimListener,
        /// Held, not used.
        _reservation: TcpListener,
    },
}

/// An accepted connection.
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    Sim(DuplexStream),
}

impl Stream {
    /// Writes what fits without waiting (a refusal: the new socket's buffer is empty).
    fn try_write(&self, bytes: &[u8]) {
        let _ = match self {
            Stream::Tcp(stream) => stream.try_write(bytes),
            Stream::Unix(stream) => stream.try_write(bytes),
            Stream::Sim(_) => Ok(0),
        };
    }

    fn into_halves(self) -> (ReadHalf, WriteHalf) {
        match self {
            Stream::Tcp(stream) => {
                let _ = stream.set_nodelay(true);
                let (read, write) = stream.into_split();
                (Box::new(read), Box::new(write))
            }
            Stream::Unix(stream) => {
                let (read, write) = stream.into_split();
                (Box::new(read), Box::new(write))
            }
            Stream::Sim(stream) => {
                let (read, write) = tokio::io::split(stream);
                (Box::new(read), Box::new(write))
            }
        }
    }
}

impl PlaneListener {
    /// `listener`, or, while a simulated network is installed on this thread, its address on
    /// that network (the TCP listener is kept only for its address).
    pub fn tcp(listener: TcpListener) -> Self {
        match (SimNet::current(), listener.local_addr()) {
            (Some(net), Ok(addr)) => PlaneListener::Sim {
                listener: net.listen(addr),
                _reservation: listener,
            },
            _ => PlaneListener::Tcp(listener),
        }
    }

    /// The next connection and where it came from.
    async fn accept(&mut self) -> std::io::Result<(Stream, String)> {
        match self {
            PlaneListener::Tcp(listener) => {
                let (stream, peer) = listener.accept().await?;
                Ok((Stream::Tcp(stream), peer.to_string()))
            }
            PlaneListener::Unix(listener) => {
                let (stream, _) = listener.accept().await?;
                Ok((Stream::Unix(stream), "unix socket".to_owned()))
            }
            PlaneListener::Sim { listener, .. } => {
                let stream = listener.accept().await?;
                Ok((
                    Stream::Sim(stream),
                    format!("simulated peer of {}", listener.addr()),
                ))
            }
        }
    }
}

/// Serves `plane` on `listener` until `shutdown` turns true, then drains.
pub async fn serve_plane(
    node: Arc<Node>,
    mut listener: PlaneListener,
    plane: Plane,
    mut shutdown: watch::Receiver<bool>,
) {
    let connections_max = node.limits.connections_max as usize;
    let permits = Arc::new(Semaphore::new(connections_max));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            _ = until_stopped(&mut shutdown) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let counters = node.metrics.plane(plane);
                    let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                        counters.connections_refused_total.fetch_add(1, Ordering::Relaxed);
                        refuse(&stream, connections_max);
                        continue;
                    };
                    counters.connections_total.fetch_add(1, Ordering::Relaxed);
                    let span = tracing::debug_span!("connection", node = node.id.0, ?plane, %peer);
                    let halves = stream.into_halves();
                    let serve = connection::serve(Arc::clone(&node), plane, halves, shutdown.clone());
                    connections.spawn(async move {
                        serve.await;
                        drop(permit);
                    }.instrument(span));
                }
                Err(error) => {
                    tracing::warn!(%error, ?plane, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
        }
    }
    drop(listener);
    let grace = Duration::from_millis(node.config.shutdown_grace_ms);
    drain(&mut connections, grace, &format!("{plane:?} plane")).await;
}

/// Lets the connections of a stopped listener finish their requests for `grace`, then drops
/// whatever still runs (shared by every listener of the node).
pub(crate) async fn drain(connections: &mut JoinSet<()>, grace: Duration, listener: &str) {
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            listener,
            connections = connections.len(),
            "requests still in flight after shutdown_grace_ms; dropping their connections"
        );
        connections.shutdown().await;
    }
}

/// Answers a connection over the cap with ERROR BUSY, without waiting on the peer.
fn refuse(stream: &Stream, connections_max: usize) {
    let error = ErrorFrame::new(
        ErrorCode::BUSY,
        format!("this listener has its maximum of {connections_max} connections; retry later"),
    );
    if let Ok(frame) = Frame::error(0, 0, &error) {
        stream.try_write(&frame.to_vec());
    }
    tracing::debug!("refused a connection over connections_max");
}
