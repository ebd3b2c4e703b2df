//! One connection to one node's data plane, with many requests in flight.
//!
//! After the HELLO, two tasks own the socket: a **writer** that takes whole requests (their
//! frames, body cut to the node's frame limit) from a bounded queue and writes them through
//! one buffer, flushing when the queue runs dry, and a **reader** that cuts frames with
//! [`FrameDecoder`] and hands each response to the request waiting on its id (a oneshot in a
//! map bounded by the in-flight semaphore). Streamed response bodies (DATA frames with
//! `MORE`) are assembled up to the length the response declared, never beyond
//! [`RESPONSE_BODY_BYTES_MAX`].
//!
//! A request that times out or is dropped leaves the map at once; a late reply for its id is
//! ignored. When the socket fails, every request in flight on it fails with
//! [`ClientError::Connection`] (their outcomes are unknown; all writes are idempotent) and
//! the connection reports itself closed, so the [`Pool`](crate::pool::Pool) reconnects.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use nabu_core::ring::NodeId;
use nabu_proto::ops::{HelloReply, HelloRequest, Plane};
use nabu_proto::{
    ClusterToken, Frame, FrameDecoder, FrameHeader, FrameKind, Limits, Meta, Op, ProtoError,
    Response,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::AbortHandle;

use crate::config::Endpoint;
use crate::error::{ClientError, Result};

/// Requests queued for the writer task of one connection (each is all frames of one request).
pub const OUTGOING_REQUESTS_MAX: usize = 64;
/// The largest response body the client assembles: the largest KV value (512 MiB, a KV_GET
/// answer) and room for a batch; other responses are at most 64 MiB.
pub const RESPONSE_BODY_BYTES_MAX: u64 = (512 << 20) + (64 << 20);
/// The largest frame body the client accepts from a node, whatever its HELLO says.
const FRAME_BODY_BYTES_MAX: u32 = 16 << 20;
/// The writer's buffer; bodies at least this long bypass it.
const WRITE_BUFFER_BYTES: usize = 64 << 10;
/// How much the reader asks the socket for at a time (beyond what the decoder needs).
const READ_CHUNK_BYTES: usize = 64 << 10;
/// The request id of the HELLO; later requests count up from the next one.
const HELLO_REQUEST_ID: u64 = 1;

type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// A decoded response: its metadata and its whole body.
#[derive(Debug)]
pub struct Reply {
    /// The response metadata.
    pub meta: Response,
    /// The response body (all frames joined).
    pub body: Bytes,
    /// CRC32C of `body`, combined from its frames' verified body checksums: a reader can
    /// check the body against a checksum it expects without another pass over the bytes.
    pub body_crc: u32,
}

/// A request waiting for its reply.
#[derive(Debug)]
struct Pending {
    op: Op,
    reply: oneshot::Sender<Result<Reply>>,
    /// A streamed response body being assembled: its metadata and the bytes so far.
    partial: Option<(Response, BytesMut, u32)>,
}

#[derive(Debug, Default)]
struct State {
    /// By request id: BTreeMap, so a lost connection fails its requests in the order they
    /// were sent (the same every run, which the deterministic simulation relies on).
    pending: BTreeMap<u64, Pending>,
    /// Why the connection closed; `None` while it is open.
    closed: Option<String>,
}

#[derive(Debug)]
struct Shared {
    node: NodeId,
    outgoing: mpsc::Sender<Vec<Frame>>,
    state: Mutex<State>,
    next_request_id: AtomicU64,
    /// Bounds the requests in flight (and so the pending map).
    permits: Semaphore,
    frame_body_bytes_max: usize,
    reader: Mutex<Option<AbortHandle>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The writer ends when the queue's sender (ours) goes; the reader may be parked on a
        // read that never comes.
        if let Some(reader) = self.reader.lock().expect("reader lock").take() {
            reader.abort();
        }
    }
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("connection state lock")
    }

    /// Marks the connection closed and fails every request in flight.
    fn close(&self, reason: &str) {
        let pending = {
            let mut state = self.state();
            if state.closed.is_none() {
                state.closed = Some(reason.to_owned());
            }
            std::mem::take(&mut state.pending)
        };
        if !pending.is_empty() {
            tracing::debug!(node = %self.node, %reason, requests = pending.len(), "connection lost");
        }
        for (_, request) in pending {
            let _ = request.reply.send(Err(self.connection_error(reason)));
        }
    }

    fn connection_error(&self, reason: &str) -> ClientError {
        ClientError::Connection {
            node: self.node,
            reason: reason.to_owned(),
        }
    }

    fn complete(&self, request_id: u64, result: Result<Reply>) {
        if let Some(request) = self.state().pending.remove(&request_id) {
            let _ = request.reply.send(result);
        }
    }
}

/// A handle to one authenticated connection; clones share it.
#[derive(Debug, Clone)]
pub struct Connection {
    shared: Arc<Shared>,
}

impl Connection {
    /// Connects to `endpoint`, authenticates with HELLO and starts the reader and writer
    /// tasks. The caller bounds the time this takes.
    pub async fn connect(
        node: NodeId,
        endpoint: &Endpoint,
        token: &ClusterToken,
        client_name: &str,
        requests_inflight_max: usize,
    ) -> Result<Self> {
        let io_error = |error: std::io::Error| ClientError::Connection {
            node,
            reason: format!("connect to {endpoint}: {error}"),
        };
        let (read_half, write_half): (BoxRead, BoxWrite) = match endpoint {
            Endpoint::Tcp(address) if crate::sim::SimNet::current().is_some() => {
                let addr = address.parse().map_err(|error| {
                    io_error(std::io::Error::new(std::io::ErrorKind::InvalidInput, error))
                })?;
                let stream = crate::sim::connect_tcp(addr).await.map_err(io_error)?;
                let (read_half, write_half) = tokio::io::split(stream);
                (Box::new(read_half), Box::new(write_half))
            }
            Endpoint::Tcp(address) => {
                let stream = tokio::net::TcpStream::connect(address.as_str())
                    .await
                    .map_err(io_error)?;
                stream.set_nodelay(true).map_err(io_error)?;
                let (read_half, write_half) = stream.into_split();
                (Box::new(read_half), Box::new(write_half))
            }
            Endpoint::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(io_error)?;
                let (read_half, write_half) = stream.into_split();
                (Box::new(read_half), Box::new(write_half))
            }
        };
        let mut reader = read_half;
        let mut writer = BufWriter::with_capacity(WRITE_BUFFER_BYTES, write_half);
        let hello = HelloRequest {
            plane: Plane::Data,
            features: 0,
            token: token.clone(),
            client_name: client_name.chars().take(64).collect(),
        };
        let frame = Frame::from_meta(HELLO_REQUEST_ID, &hello, Bytes::new(), false)
            .map_err(|source| ClientError::Protocol { node, source })?;
        write_frame(&mut writer, &frame).await.map_err(io_error)?;
        writer.flush().await.map_err(io_error)?;

        let mut decoder = FrameDecoder::new(Limits::default());
        let mut buffer = BytesMut::with_capacity(READ_CHUNK_BYTES);
        let reply = read_hello_reply(node, &mut reader, &mut decoder, &mut buffer).await?;
        if reply.node_id != node {
            // A port reused by another node of the cluster: its shards are not `node`'s.
            return Err(ClientError::Connection {
                node,
                reason: format!("{endpoint} is node {} now, not {node}", reply.node_id),
            });
        }
        let mut limits = Limits::default();
        limits.frame_body_bytes_max = reply
            .frame_body_bytes_max
            .clamp(limits.frame_body_bytes_max, FRAME_BODY_BYTES_MAX);
        decoder.set_limits(limits);

        let permits = requests_inflight_max.min(reply.inflight_max.max(1) as usize);
        let (outgoing, queue) = mpsc::channel(OUTGOING_REQUESTS_MAX);
        let shared = Arc::new(Shared {
            node,
            outgoing,
            state: Mutex::new(State::default()),
            next_request_id: AtomicU64::new(HELLO_REQUEST_ID + 1),
            permits: Semaphore::new(permits),
            frame_body_bytes_max: reply.frame_body_bytes_max.max(1) as usize,
            reader: Mutex::new(None),
        });
        tokio::spawn(write_loop(queue, writer, Arc::downgrade(&shared)));
        let reader_task = tokio::spawn(read_loop(reader, decoder, buffer, Arc::downgrade(&shared)));
        *shared.reader.lock().expect("reader lock") = Some(reader_task.abort_handle());
        Ok(Self { shared })
    }

    /// The node at the other end.
    pub fn node(&self) -> NodeId {
        self.shared.node
    }

    /// Whether the connection can still carry requests.
    pub fn is_open(&self) -> bool {
        self.shared.state().closed.is_none()
    }

    /// Sends one request (metadata and whole body) and waits for its whole reply, at most
    /// `timeout` in all (waiting for an in-flight slot included).
    pub async fn call<M: Meta>(&self, meta: &M, body: Bytes, timeout: Duration) -> Result<Reply> {
        let node = self.shared.node;
        match tokio::time::timeout(timeout, self.call_inner(meta, body)).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Timeout {
                node,
                op: M::OP,
                after: timeout,
            }),
        }
    }

    async fn call_inner<M: Meta>(&self, meta: &M, body: Bytes) -> Result<Reply> {
        let shared = &self.shared;
        let closed = |shared: &Shared| {
            let reason = shared.state().closed.clone();
            shared.connection_error(reason.as_deref().unwrap_or("connection closed"))
        };
        let _permit = shared.permits.acquire().await.map_err(|_| closed(shared))?;
        let request_id = shared.next_request_id.fetch_add(1, Ordering::Relaxed);
        let frames = request_frames(request_id, meta, &body, shared.frame_body_bytes_max).map_err(
            |source| ClientError::Protocol {
                node: shared.node,
                source,
            },
        )?;
        let (reply, receiver) = oneshot::channel();
        {
            let mut state = shared.state();
            if let Some(reason) = &state.closed {
                return Err(shared.connection_error(reason));
            }
            let pending = Pending {
                op: M::OP,
                reply,
                partial: None,
            };
            state.pending.insert(request_id, pending);
        }
        // Leaves the map however this future ends (reply, timeout, the caller dropping it).
        let _forget = ForgetOnDrop { shared, request_id };
        if shared.outgoing.send(frames).await.is_err() {
            return Err(closed(shared));
        }
        match receiver.await {
            Ok(result) => result,
            Err(_) => Err(closed(shared)),
        }
    }
}

/// Removes a request from the pending map when its caller stops waiting.
struct ForgetOnDrop<'a> {
    shared: &'a Shared,
    request_id: u64,
}

impl Drop for ForgetOnDrop<'_> {
    fn drop(&mut self) {
        self.shared.state().pending.remove(&self.request_id);
    }
}

/// The frames of one request: the REQUEST frame with the first piece of the body, then DATA
/// frames of at most `frame_body_bytes_max` each, `MORE` on all but the last.
fn request_frames<M: Meta>(
    request_id: u64,
    meta: &M,
    body: &Bytes,
    frame_body_bytes_max: usize,
) -> Result<Vec<Frame>, ProtoError> {
    if meta.body_bytes() != body.len() as u64 {
        return Err(ProtoError::InvalidField {
            field: "body",
            reason: "the body is not as long as the metadata declares",
        });
    }
    let first = body.len().min(frame_body_bytes_max);
    let mut frames = Vec::with_capacity(1 + (body.len() - first).div_ceil(frame_body_bytes_max));
    frames.push(Frame::from_meta(
        request_id,
        meta,
        body.slice(..first),
        first < body.len(),
    )?);
    let mut offset = first;
    while offset < body.len() {
        let end = (offset + frame_body_bytes_max).min(body.len());
        frames.push(Frame::data(
            M::OP,
            request_id,
            body.slice(offset..end),
            end < body.len(),
        )?);
        offset = end;
    }
    Ok(frames)
}

async fn write_frame<W: AsyncWrite + Unpin>(writer: &mut W, frame: &Frame) -> std::io::Result<()> {
    writer.write_all(&frame.header().encode()).await?;
    writer.write_all(frame.meta()).await?;
    writer.write_all(frame.body()).await
}

async fn read_hello_reply(
    node: NodeId,
    reader: &mut BoxRead,
    decoder: &mut FrameDecoder,
    buffer: &mut BytesMut,
) -> Result<HelloReply> {
    let protocol = |source| ClientError::Protocol { node, source };
    loop {
        if let Some(frame) = decoder.decode(buffer).map_err(protocol)? {
            return match frame.header().kind() {
                FrameKind::Response => frame.decode_meta::<HelloReply>().map_err(protocol),
                FrameKind::Error => {
                    let error = frame.decode_error().map_err(protocol)?;
                    Err(ClientError::Remote {
                        node,
                        op: Op::Hello,
                        code: error.code,
                        message: error.message,
                    })
                }
                _ => Err(protocol(ProtoError::InvalidField {
                    field: "kind",
                    reason: "a HELLO is answered by a RESPONSE or an ERROR",
                })),
            };
        }
        buffer.reserve(READ_CHUNK_BYTES);
        let read = reader
            .read_buf(buffer)
            .await
            .map_err(|error| ClientError::Connection {
                node,
                reason: format!("read HELLO reply: {error}"),
            })?;
        if read == 0 {
            return Err(ClientError::Connection {
                node,
                reason: "closed by the node during HELLO".into(),
            });
        }
    }
}

async fn write_loop(
    mut queue: mpsc::Receiver<Vec<Frame>>,
    mut writer: BufWriter<BoxWrite>,
    shared: Weak<Shared>,
) {
    while let Some(frames) = queue.recv().await {
        let mut result = Ok(());
        for frame in &frames {
            result = write_frame(&mut writer, frame).await;
            if result.is_err() {
                break;
            }
        }
        if result.is_ok() && queue.is_empty() {
            result = writer.flush().await;
        }
        if let Err(error) = result {
            if let Some(shared) = shared.upgrade() {
                shared.close(&format!("write: {error}"));
            }
            return;
        }
    }
    let _ = writer.shutdown().await;
}

async fn read_loop(
    mut reader: BoxRead,
    mut decoder: FrameDecoder,
    mut buffer: BytesMut,
    shared: Weak<Shared>,
) {
    let reason = loop {
        let Some(strong) = shared.upgrade() else {
            return;
        };
        if let Err(reason) = decode_available(&strong, &mut decoder, &mut buffer) {
            break reason;
        }
        drop(strong);
        let wanted = decoder.bytes_needed().saturating_sub(buffer.len());
        buffer.reserve(wanted.max(READ_CHUNK_BYTES));
        match reader.read_buf(&mut buffer).await {
            Ok(0) => break "closed by the node".to_owned(),
            Ok(_) => {}
            Err(error) => break format!("read: {error}"),
        }
    };
    if let Some(shared) = shared.upgrade() {
        shared.close(&reason);
    }
}

/// Dispatches every complete frame in `buffer`; `Err` is a reason to close the connection.
fn decode_available(
    shared: &Shared,
    decoder: &mut FrameDecoder,
    buffer: &mut BytesMut,
) -> Result<(), String> {
    loop {
        match decoder.decode(buffer) {
            Ok(Some(frame)) => dispatch(shared, frame)?,
            Ok(None) => return Ok(()),
            Err(ProtoError::BodyChecksumMismatch { header, .. }) => {
                let error = ClientError::Protocol {
                    node: shared.node,
                    source: ProtoError::InvalidField {
                        field: "body_crc",
                        reason: "a response body failed its checksum",
                    },
                };
                shared.complete(header.request_id(), Err(error));
            }
            Err(error) => return Err(format!("bad frame from the node: {error}")),
        }
    }
}

/// Routes one frame to the request waiting on its id.
fn dispatch(shared: &Shared, frame: Frame) -> Result<(), String> {
    let header = *frame.header();
    let request_id = header.request_id();
    match header.kind() {
        FrameKind::Request => Err("the node sent a REQUEST frame".into()),
        FrameKind::Error => {
            let error = frame
                .decode_error()
                .map_err(|error| format!("bad ERROR frame: {error}"))?;
            if request_id == 0 {
                return Err(format!("the node closed the connection: {error:?}"));
            }
            let Some(pending) = shared.state().pending.remove(&request_id) else {
                return Ok(()); // the caller stopped waiting
            };
            let _ = pending.reply.send(Err(ClientError::Remote {
                node: shared.node,
                op: pending.op,
                code: error.code,
                message: error.message,
            }));
            Ok(())
        }
        FrameKind::Response | FrameKind::Data => {
            let (_, meta, body) = frame.into_parts();
            let mut state = shared.state();
            let Some(pending) = state.pending.get_mut(&request_id) else {
                return Ok(()); // the caller stopped waiting: drop the late reply
            };
            let outcome = accept_body(pending, &header, &meta, body);
            let finished = match outcome {
                Ok(None) => return Ok(()),
                Ok(Some(reply)) => Ok(reply),
                Err(source) => Err(ClientError::Protocol {
                    node: shared.node,
                    source,
                }),
            };
            let pending = state.pending.remove(&request_id).expect("present");
            drop(state);
            let _ = pending.reply.send(finished);
            Ok(())
        }
    }
}

/// Adds a RESPONSE or DATA frame to a pending request; `Some` when the reply is complete
/// (the frame had no `MORE` flag and the body is as long as the response declared).
fn accept_body(
    pending: &mut Pending,
    header: &FrameHeader,
    meta: &[u8],
    body: Bytes,
) -> Result<Option<Reply>, ProtoError> {
    let (kind, op_code, more) = (header.kind(), header.op_code(), header.more());
    // The decoder verified it: the CRC32C of this frame's body (0 for an empty one).
    let frame_crc = if body.is_empty() {
        0
    } else {
        header.body_crc()
    };
    let broken = |reason| ProtoError::InvalidField {
        field: "frame",
        reason,
    };
    if op_code != pending.op.code() {
        return Err(broken("the reply's op is not the request's"));
    }
    if kind == FrameKind::Response {
        if pending.partial.is_some() {
            return Err(broken("a second RESPONSE frame for one request"));
        }
        let response = Response::decode(op_code, meta)?;
        let declared = response.body_bytes();
        if declared > RESPONSE_BODY_BYTES_MAX {
            return Err(ProtoError::FieldTooLong {
                field: "body_bytes",
                bytes: usize::try_from(declared).unwrap_or(usize::MAX),
                max: RESPONSE_BODY_BYTES_MAX as usize,
            });
        }
        if !more && body.len() as u64 == declared {
            // The common case: the whole reply in one frame, no copy.
            return Ok(Some(Reply {
                meta: response,
                body,
                body_crc: frame_crc,
            }));
        }
        pending.partial = Some((response, BytesMut::with_capacity(declared as usize), 0));
    }
    let Some((response, assembled, crc)) = &mut pending.partial else {
        return Err(broken("a DATA frame before the RESPONSE"));
    };
    let declared = response.body_bytes();
    if (assembled.len() + body.len()) as u64 > declared {
        return Err(broken("the reply body is longer than declared"));
    }
    *crc = if assembled.is_empty() {
        frame_crc
    } else {
        crc32c::crc32c_combine(*crc, frame_crc, body.len())
    };
    assembled.extend_from_slice(&body);
    if more {
        return Ok(None);
    }
    if assembled.len() as u64 != declared {
        return Err(broken("the reply body is shorter than declared"));
    }
    let (meta, assembled, body_crc) = pending.partial.take().expect("checked above");
    Ok(Some(Reply {
        meta,
        body: assembled.freeze(),
        body_crc,
    }))
}

#[cfg(test)]
mod tests;
