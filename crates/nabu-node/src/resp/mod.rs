//! The Redis-protocol gateway (`resp_addr`): RESP2 and RESP3 (`HELLO 3`) over the KV pool, so
//! LMCache's `redis://` backends, redis-py, redis-cli and redis-benchmark reach NabuStore
//! with no change on their side. Each key goes to its owner node ([`crate::kv::route`]).
//!
//! **One connection.** The task reads into one buffer, cuts every complete command off its
//! front ([`parse`]), runs them in order ([`commands`]), and writes their replies in one go once
//! no complete command is left (pipelining: many commands in flight, answered in order).
//! A command whose value is still arriving makes the buffer reserve exactly the bytes it
//! needs and the socket is read into place, so a 100 MB `SET` is neither copied nor
//! re-scanned; a large `GET` reply is written from the stored value itself ([`reply`]).
//!
//! **Bounds and bad input.** Before AUTH a command has at most 10 arguments of 16 KiB (as in
//! Redis); after it, at most 1 Mi arguments, a value at most the pool's largest value
//! (`kv_value_bytes_max`), a command at most that plus 64 MiB. Input that is not RESP or over
//! a bound is answered `-ERR Protocol error: …` and the connection is closed (its byte
//! stream cannot be resynchronised); an unknown command or bad arguments get `-ERR …` and the
//! connection goes on. At most `resp_connections_max` connections; one more is answered
//! `-ERR max number of clients reached` and closed. Large values being read take their bytes
//! from the node's budget for request bodies in flight (`request_bodies_bytes_max`, shared
//! with the data plane) before any buffer is reserved. Nothing a client sends can stop the
//! node.

pub mod commands;
pub mod parse;
pub mod reply;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::node::{Node, until_stopped};
use commands::Session;
use parse::{ParseLimits, Parsed, parse};
use reply::{Piece, Replies};

/// Bytes read from the socket at a time (more when a value needs more).
const READ_CHUNK_BYTES: usize = 64 << 10;
/// Replies buffered before they are written even though more commands are waiting.
const REPLY_FLUSH_BYTES: usize = 4 << 20;
/// How long a connection closed for bad input keeps draining the client's bytes.
const LINGER: Duration = Duration::from_millis(500);
/// How many of the client's bytes it drains at most meanwhile.
const LINGER_BYTES_MAX: usize = 1 << 20;
/// How long the accept loop pauses after an accept error.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The gateway's counters (rendered with the KV pool's in `/metrics`).
#[derive(Debug, Default)]
pub struct RespCounters {
    /// Connections open now.
    pub connections_open: AtomicU64,
    /// Connections accepted since start.
    pub connections_total: AtomicU64,
    /// Connections refused at `resp_connections_max`.
    pub connections_refused_total: AtomicU64,
    /// Commands answered.
    pub commands_total: AtomicU64,
    /// Commands answered with an error.
    pub errors_total: AtomicU64,
    /// Wrong passwords.
    pub auth_failures_total: AtomicU64,
    /// Connections closed for malformed or oversized input.
    pub protocol_errors_total: AtomicU64,
}

/// The parser's bounds before and after AUTH.
fn limits(node: &Node, authenticated: bool) -> ParseLimits {
    if !authenticated {
        return ParseLimits {
            args_max: 10,
            bulk_bytes_max: 16 << 10,
            command_bytes_max: 256 << 10,
        };
    }
    let value_bytes_max = node.kv.config().value_bytes_max as usize;
    ParseLimits {
        args_max: 1 << 20,
        bulk_bytes_max: value_bytes_max,
        command_bytes_max: value_bytes_max + (64 << 20),
    }
}

/// Serves RESP on `listener` until `shutdown` turns true, then lets connections finish
/// their current command (at most `shutdown_grace_ms`).
pub async fn serve(node: Arc<Node>, listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
    let connections_max = node.config.resp_connections_max as usize;
    let permits = Arc::new(Semaphore::new(connections_max));
    let mut connections = JoinSet::new();
    let mut next_id = 0u64;
    loop {
        tokio::select! {
            biased;
            _ = until_stopped(&mut shutdown) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                        node.resp_metrics.connections_refused_total.fetch_add(1, Ordering::Relaxed);
                        let _ = stream.try_write(b"-ERR max number of clients reached\r\n");
                        continue;
                    };
                    next_id += 1;
                    node.resp_metrics.connections_total.fetch_add(1, Ordering::Relaxed);
                    let span = tracing::debug_span!("resp", node = node.id.0, %peer);
                    let serve = connection(Arc::clone(&node), stream, next_id, shutdown.clone());
                    connections.spawn(async move {
                        serve.await;
                        drop(permit);
                    }.instrument(span));
                }
                Err(error) => {
                    tracing::warn!(%error, "RESP accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
        }
    }
    drop(listener);
    let grace = Duration::from_millis(node.config.shutdown_grace_ms);
    crate::server::drain(&mut connections, grace, "RESP").await;
}

/// Keeps `connections_open` right however the connection ends.
struct OpenGauge(Arc<Node>);

impl Drop for OpenGauge {
    fn drop(&mut self) {
        self.0
            .resp_metrics
            .connections_open
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves one connection until the client closes or QUITs, its input breaks the protocol,
/// or the node shuts down.
async fn connection(
    node: Arc<Node>,
    stream: TcpStream,
    id: u64,
    mut shutdown: watch::Receiver<bool>,
) {
    node.resp_metrics
        .connections_open
        .fetch_add(1, Ordering::Relaxed);
    let _open = OpenGauge(Arc::clone(&node));
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let mut buffer = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let mut session = Session {
        authenticated: false,
        protocol: 2,
        name: None,
        id,
        quit: false,
    };
    let mut replies = Replies::new(2);
    // Permits of the node's body budget held for a large command being read (see below).
    let mut budget: Option<OwnedSemaphorePermit> = None;
    loop {
        let need = loop {
            match parse(&mut buffer, &limits(&node, session.authenticated)) {
                Ok(Parsed::Command(args)) if args.is_empty() => {}
                Ok(Parsed::Command(args)) => {
                    budget = None;
                    commands::dispatch(&node, &mut session, args, &mut replies).await;
                    if session.quit {
                        let _ = write_replies(&mut writer, &mut replies).await;
                        return;
                    }
                    if replies.pending_bytes() >= REPLY_FLUSH_BYTES
                        && write_replies(&mut writer, &mut replies).await.is_err()
                    {
                        return;
                    }
                }
                Ok(Parsed::Incomplete(need)) => break need,
                Err(error) => {
                    node.resp_metrics
                        .protocol_errors_total
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%error, "closing a RESP connection on bad input");
                    replies.error(&format!("ERR {error}"));
                    let _ = write_replies(&mut writer, &mut replies).await;
                    linger(&mut reader, &mut writer).await;
                    return;
                }
            }
        };
        if write_replies(&mut writer, &mut replies).await.is_err() {
            return;
        }
        // A large value is read into a buffer of its own size: its bytes come out of the
        // node's budget for request bodies in flight (`request_bodies_bytes_max`, shared with
        // the data plane), so a thousand clients each announcing 512 MiB make most of them
        // wait (TCP backpressure) instead of making the node reserve 512 GiB.
        let missing = need.saturating_sub(buffer.len());
        if budget.is_none() && missing >= reply::LARGE_VALUE_BYTES {
            let permits = need.min(node.config.request_bodies_bytes_max as usize) as u32;
            let acquire = Arc::clone(&node.body_budget).acquire_many_owned(permits);
            tokio::select! {
                biased;
                acquired = acquire => match acquired {
                    Ok(permit) => budget = Some(permit),
                    Err(_) => return,
                },
                _ = until_stopped(&mut shutdown) => return,
            }
        }
        tokio::select! {
            biased;
            read = read_more(&mut reader, &mut buffer, need) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
            _ = until_stopped(&mut shutdown) => return,
        }
    }
}

/// After an error that closes the connection: stops writing and drains what the client
/// already sent (at most [`LINGER_BYTES_MAX`] for [`LINGER`]), so the kernel does not answer
/// the unread bytes with a reset that could destroy the error reply in flight.
async fn linger(reader: &mut OwnedReadHalf, writer: &mut OwnedWriteHalf) {
    let _ = writer.shutdown().await;
    let drain = async {
        let mut sink = vec![0u8; 64 << 10];
        let mut drained = 0;
        while drained < LINGER_BYTES_MAX {
            match reader.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(read) => drained += read,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// Reads more input: a value still arriving (at least [`reply::LARGE_VALUE_BYTES`] missing)
/// is read straight into a buffer reserved for exactly the rest of its command, and no
/// further, so the value later shares its allocation with nothing else.
async fn read_more(
    reader: &mut OwnedReadHalf,
    buffer: &mut BytesMut,
    need: usize,
) -> std::io::Result<usize> {
    let missing = need.saturating_sub(buffer.len());
    if missing >= reply::LARGE_VALUE_BYTES {
        buffer.reserve(missing);
        let mut limited = BufMut::limit(&mut *buffer, missing);
        reader.read_buf(&mut limited).await
    } else {
        buffer.reserve(READ_CHUNK_BYTES);
        reader.read_buf(buffer).await
    }
}

/// Writes every pending reply: buffered pieces and large values each with one `write_all`.
async fn write_replies(writer: &mut OwnedWriteHalf, replies: &mut Replies) -> std::io::Result<()> {
    for piece in replies.take() {
        match piece {
            Piece::Buffer(bytes) => writer.write_all(&bytes).await?,
            Piece::Value(bytes) => writer.write_all(&bytes).await?,
        }
    }
    Ok(())
}
