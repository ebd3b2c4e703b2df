//! One data- or peer-plane connection: HELLO, then many requests in flight.
//!
//! The connection task owns the read half: it cuts frames with a [`FrameDecoder`] (which
//! checks every length before buffering it), keeps the books of requests in flight with
//! [`InflightRequests`] (ids, the `inflight_max` bound, streamed bodies adding up), collects
//! streamed request bodies, and starts one task per complete request. Request tasks run
//! concurrently and answer in any order through a bounded queue
//! ([`RESPONSE_QUEUE_FRAMES_MAX`]) to a writer task that owns the write half. The protocol
//! document's connection rules are implemented here; errors it calls fatal are answered with
//! one ERROR frame (request id 0) and the connection is closed, others fail one request.
//!
//! **Why the books are behind a mutex.** A request task marks its request finished *before*
//! it queues the final frame, so by the time the client can reuse the id the reader already
//! knows it is free; with the books owned by the reader alone, a reused id could race the
//! completion notice and be taken for a duplicate (fatal).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use nabu_proto::ops::{HelloReply, Plane};
use nabu_proto::{
    DataOutcome, ErrorCode, ErrorFrame, Frame, FrameDecoder, FrameHeader, FrameKind,
    InflightRequests, Op, ProtoError, Request, authenticate, header::HEADER_BYTES,
    limits::HELLO_META_BYTES_MAX,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, sleep_until, timeout};
use tracing::Instrument;

use crate::handler::{self, OpError, Reply};
use crate::metrics::{Metrics, Traffic};
use crate::node::{Node, until_stopped};

/// Frames queued for one connection's writer before request tasks wait: bounds the memory of
/// responses a slow reader can make the node hold (with frames of at most
/// `frame_body_bytes_max`).
pub const RESPONSE_QUEUE_FRAMES_MAX: usize = 16;
/// Bytes read from the socket at a time once authenticated (more when a frame needs more).
const READ_CHUNK_BYTES: usize = 64 << 10;
/// How long a connection closed for a fatal error keeps draining the peer's bytes.
const LINGER: Duration = Duration::from_millis(500);
/// How many of the peer's bytes it drains at most meanwhile.
const LINGER_BYTES_MAX: usize = 1 << 20;
/// The writer's buffer: small frames are coalesced into one `write`; larger ones bypass it.
const WRITE_BUFFER_BYTES: usize = 64 << 10;

/// Why a connection ends.
#[derive(Debug)]
enum Ending {
    /// The peer closed (or the socket failed): nothing to send.
    Closed,
    /// The node is shutting down: finish the requests in flight, then close.
    Shutdown,
    /// A fatal protocol error: send this ERROR frame (request id 0), then close.
    Fatal(ErrorFrame),
}

impl From<ProtoError> for Ending {
    fn from(error: ProtoError) -> Self {
        Ending::Fatal(ErrorFrame::from_error(&error))
    }
}

/// Holds one unit of a gauge (`nabu_connections_open`, `nabu_requests_inflight`) for as long as
/// it lives, so the gauge stays right when a task is dropped mid-way (at the end of the
/// shutdown grace, or when its connection fails).
struct GaugeHold {
    node: Arc<Node>,
    gauge: fn(&Metrics, Plane) -> &AtomicI64,
    plane: Plane,
}

impl GaugeHold {
    fn new(node: Arc<Node>, plane: Plane, gauge: fn(&Metrics, Plane) -> &AtomicI64) -> Self {
        gauge(&node.metrics, plane).fetch_add(1, Ordering::Relaxed);
        Self { node, gauge, plane }
    }
}

impl Drop for GaugeHold {
    fn drop(&mut self) {
        (self.gauge)(&self.node.metrics, self.plane).fetch_sub(1, Ordering::Relaxed);
    }
}

/// A request whose body is still arriving.
#[derive(Debug)]
struct Pending {
    request: Request,
    body: BytesMut,
    /// CRC32C of `body` so far, combined from its frames' verified checksums.
    body_crc: u32,
    last_frame: Instant,
    budget: Option<OwnedSemaphorePermit>,
}

/// The read half of a connection's stream (TCP or Unix socket).
pub type ReadHalf = Box<dyn AsyncRead + Unpin + Send + Sync>;
/// The write half of a connection's stream.
pub type WriteHalf = Box<dyn AsyncWrite + Unpin + Send + Sync>;

/// The state of one connection (reader side).
struct Connection {
    node: Arc<Node>,
    plane: Plane,
    /// Whose byte counters this connection's traffic goes to (the peer once HELLO named it).
    traffic: Traffic,
    reader: ReadHalf,
    buffer: BytesMut,
    decoder: FrameDecoder,
    authenticated: bool,
    responses: mpsc::Sender<Frame>,
    inflight: Arc<Mutex<InflightRequests>>,
    /// By request id: BTreeMap, so a lost connection fails its requests in the order they
    /// were sent (the same every run, which the deterministic simulation relies on).
    pending: BTreeMap<u64, Pending>,
    requests: JoinSet<()>,
    /// When the first byte of a frame not yet complete arrived.
    frame_started: Option<Instant>,
    /// When a byte last arrived or a request last completed.
    last_activity: Instant,
}

/// Serves one accepted connection until it closes, fails or the node shuts down.
pub async fn serve(
    node: Arc<Node>,
    plane: Plane,
    (reader, writer): (ReadHalf, WriteHalf),
    shutdown: watch::Receiver<bool>,
) {
    let _open = GaugeHold::new(Arc::clone(&node), plane, |metrics, plane| {
        &metrics.plane(plane).connections_open
    });
    let (responses, queue) = mpsc::channel(RESPONSE_QUEUE_FRAMES_MAX);
    let writer =
        tokio::spawn(write_frames(Arc::clone(&node), plane, writer, queue).in_current_span());
    let limits = node.limits;
    let mut connection = Connection {
        plane,
        traffic: Traffic { plane, peer: None },
        reader,
        buffer: BytesMut::with_capacity(HEADER_BYTES + usize::from(HELLO_META_BYTES_MAX)),
        decoder: FrameDecoder::new(limits.before_hello()),
        authenticated: false,
        responses,
        inflight: Arc::new(Mutex::new(InflightRequests::new(&limits))),
        pending: BTreeMap::new(),
        requests: JoinSet::new(),
        frame_started: None,
        last_activity: Instant::now(),
        node,
    };
    let ending = connection.run(shutdown).await;
    connection.close(ending, writer).await;
}

impl Connection {
    async fn run(&mut self, shutdown: watch::Receiver<bool>) -> Ending {
        if let Err(ending) = self.handshake(shutdown.clone()).await {
            return ending;
        }
        match self.serve_requests(shutdown).await {
            Ok(()) => Ending::Closed,
            Err(ending) => ending,
        }
    }

    /// Ends the connection: a fatal error is sent first; requests in flight are finished on a
    /// shutdown and dropped otherwise.
    async fn close(mut self, ending: Ending, writer: JoinHandle<()>) {
        let frame_timeout = self.node.limits.frame_timeout;
        let fatal = matches!(ending, Ending::Fatal(_));
        match ending {
            Ending::Fatal(error) => {
                tracing::debug!(%error, "closing the connection on a fatal error");
                self.requests.shutdown().await;
                if let Ok(frame) = Frame::error(0, 0, &error) {
                    let _ = timeout(frame_timeout, self.responses.send(frame)).await;
                }
            }
            Ending::Shutdown => while self.requests.join_next().await.is_some() {},
            // The peer may have closed only its sending side and still read the replies.
            Ending::Closed => {
                let finished = timeout(frame_timeout, async {
                    while self.requests.join_next().await.is_some() {}
                });
                if finished.await.is_err() {
                    self.requests.shutdown().await;
                }
            }
        }
        drop(self.responses);
        let _ = timeout(frame_timeout, writer).await;
        if fatal {
            linger(&mut self.reader).await;
        }
    }

    /// Reads more bytes: before HELLO no further than the largest HELLO frame, so an
    /// unauthenticated peer can make the node buffer at most that.
    async fn read_more(
        reader: &mut ReadHalf,
        buffer: &mut BytesMut,
        decoder: &FrameDecoder,
        authenticated: bool,
    ) -> Result<(), Ending> {
        let room = if authenticated {
            let needed = decoder.bytes_needed().saturating_sub(buffer.len());
            buffer.reserve(READ_CHUNK_BYTES);
            needed.max(READ_CHUNK_BYTES)
        } else {
            (HEADER_BYTES + usize::from(HELLO_META_BYTES_MAX))
                .saturating_sub(buffer.len())
                .max(1)
        };
        match reader.read_buf(&mut buffer.limit(room)).await {
            Ok(0) | Err(_) => Err(Ending::Closed),
            Ok(_) => Ok(()),
        }
    }

    async fn handshake(&mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), Ending> {
        let deadline = Instant::now() + self.node.limits.hello_timeout;
        loop {
            match self.decoder.decode(&mut self.buffer) {
                Ok(Some(frame)) => return self.accept_hello(&frame).await,
                Ok(None) => {}
                Err(error @ ProtoError::UnsupportedVersion { .. }) => return Err(error.into()),
                Err(error) => {
                    return Err(
                        self.unauthenticated(&format!("the first frame is not a HELLO: {error}"))
                    );
                }
            }
            tokio::select! {
                biased;
                read = Self::read_more(&mut self.reader, &mut self.buffer, &self.decoder, false) => read?,
                _ = sleep_until(deadline) => {
                    return Err(Ending::Fatal(ErrorFrame::new(ErrorCode::TIMEOUT, "no HELLO within hello_timeout")));
                }
                _ = until_stopped(&mut shutdown) => return Err(Ending::Shutdown),
            }
        }
    }

    fn unauthenticated(&self, reason: &str) -> Ending {
        let counters = self.node.metrics.plane(self.plane);
        counters
            .unauthenticated_total
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(reason, "refused an unauthenticated connection");
        Ending::Fatal(ErrorFrame::new(ErrorCode::UNAUTHENTICATED, reason))
    }

    async fn accept_hello(&mut self, frame: &Frame) -> Result<(), Ending> {
        let hello = match authenticate(frame, &self.node.token, self.plane) {
            Ok(hello) => hello,
            Err(error) => return Err(self.unauthenticated(&error.to_string())),
        };
        let limits = self.node.limits;
        let reply = HelloReply {
            node_id: self.node.id,
            ring_epoch: self.node.membership.epoch(),
            features: 0,
            meta_bytes_max: limits.meta_bytes_max,
            frame_body_bytes_max: limits.frame_body_bytes_max,
            request_body_bytes_max: limits.request_body_bytes_max,
            inflight_max: limits.inflight_max,
        };
        let request_id = frame.header().request_id();
        let frame = Frame::from_meta(request_id, &reply, Bytes::new(), false)?;
        self.send(frame).await?;
        self.decoder.set_limits(limits);
        self.authenticated = true;
        if self.plane == Plane::Peer {
            self.traffic.peer = crate::peer::member_of_client_name(&hello.client_name)
                .and_then(|member| self.node.metrics.peer(member));
        }
        self.node.metrics.count_request(Op::Hello, None);
        tracing::debug!(client = %hello.client_name, "authenticated");
        Ok(())
    }

    async fn send(&self, frame: Frame) -> Result<(), Ending> {
        self.responses.send(frame).await.map_err(|_| Ending::Closed)
    }

    /// Answers request `request_id` (of op code `op_code`) with an error.
    async fn send_error(
        &self,
        op_code: u16,
        request_id: u64,
        error: &OpError,
    ) -> Result<(), Ending> {
        if let Ok(op) = Op::from_code(op_code) {
            self.node.metrics.count_request(op, Some(error.code));
        }
        self.send(Frame::error(op_code, request_id, &error.frame())?)
            .await
    }

    async fn serve_requests(&mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), Ending> {
        loop {
            self.process_buffered().await?;
            let deadline = self.next_deadline();
            tokio::select! {
                biased;
                _ = until_stopped(&mut shutdown) => return Err(Ending::Shutdown),
                Some(_) = self.requests.join_next(), if !self.requests.is_empty() => {
                    self.last_activity = Instant::now();
                }
                read = Self::read_more(&mut self.reader, &mut self.buffer, &self.decoder, true) => {
                    read?;
                    self.last_activity = Instant::now();
                }
                _ = sleep_until(deadline) => self.on_deadline().await?,
                // The writer ended (the peer stopped reading, or the socket failed).
                _ = self.responses.closed() => return Err(Ending::Closed),
            }
        }
    }

    /// Handles every complete frame in the buffer.
    async fn process_buffered(&mut self) -> Result<(), Ending> {
        loop {
            match self.decoder.decode(&mut self.buffer) {
                Ok(Some(frame)) => {
                    self.frame_started = None;
                    self.on_frame(frame).await?;
                }
                Ok(None) => break,
                Err(ProtoError::BodyChecksumMismatch { header, computed }) => {
                    self.frame_started = None;
                    self.on_bad_body(&header, computed).await?;
                }
                Err(error) => return Err(error.into()),
            }
        }
        if !self.buffer.is_empty() || !self.decoder.is_at_frame_boundary() {
            self.frame_started.get_or_insert_with(Instant::now);
        }
        Ok(())
    }

    fn books(&self) -> MutexGuard<'_, InflightRequests> {
        self.inflight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn on_frame(&mut self, frame: Frame) -> Result<(), Ending> {
        self.node
            .metrics
            .count_bytes_in(&self.traffic, frame.body().len() as u64);
        match frame.header().kind() {
            FrameKind::Request => self.on_request(frame).await,
            FrameKind::Data => self.on_data(frame).await,
            FrameKind::Error => self.on_abort(frame.header()).await,
            FrameKind::Response => Err(Ending::Fatal(ErrorFrame::new(
                ErrorCode::BAD_FRAME,
                "a node takes no RESPONSE frames",
            ))),
        }
    }

    async fn on_request(&mut self, frame: Frame) -> Result<(), Ending> {
        let (header, meta, body) = frame.into_parts();
        let request_id = header.request_id();
        if self.books().contains(request_id) {
            return Err(ProtoError::DuplicateRequestId { request_id }.into());
        }
        let request = match Request::decode(header.op_code(), &meta) {
            Ok(Request::Hello(_)) => Err(OpError::new(
                ErrorCode::BAD_REQUEST,
                "HELLO was already accepted on this connection",
            )),
            Ok(request) => Ok(request),
            Err(error) => Err(OpError::from(&error)),
        };
        let request = match request {
            Ok(request) => request,
            Err(error) => return self.reject(&header, &error).await,
        };
        let started = self.books().start(&header, request.body_bytes());
        let progress = match started {
            Ok(progress) => progress,
            Err(error) if error.is_fatal() => return Err(error.into()),
            Err(error) => {
                return self
                    .send_error(header.op_code(), request_id, &OpError::from(&error))
                    .await;
            }
        };
        // The decoder verified it: the CRC32C of this frame's body (0 for an empty one).
        let body_crc = if body.is_empty() {
            0
        } else {
            header.body_crc()
        };
        if progress.complete {
            self.spawn_request(request_id, request, (body, body_crc), None);
            return Ok(());
        }
        let budget = self.reserve_body(progress.declared).await;
        let mut collected = BytesMut::with_capacity(progress.declared as usize);
        collected.extend_from_slice(&body);
        let pending = Pending {
            request,
            body: collected,
            body_crc,
            last_frame: Instant::now(),
            budget,
        };
        self.pending.insert(request_id, pending);
        Ok(())
    }

    /// Waits for room for a streamed body of `bytes` in the node-wide body budget.
    async fn reserve_body(&self, bytes: u64) -> Option<OwnedSemaphorePermit> {
        let budget: &Arc<Semaphore> = &self.node.body_budget;
        let permits = u32::try_from(bytes).ok()?;
        Arc::clone(budget).acquire_many_owned(permits).await.ok()
    }

    /// Fails a request before it started; its streamed body, if any, is dropped as it comes.
    async fn reject(&mut self, header: &FrameHeader, error: &OpError) -> Result<(), Ending> {
        let reply_due = self.books().reject(header)?;
        if reply_due {
            self.send_error(header.op_code(), header.request_id(), error)
                .await?;
        }
        Ok(())
    }

    async fn on_data(&mut self, frame: Frame) -> Result<(), Ending> {
        let (header, _, body) = frame.into_parts();
        let request_id = header.request_id();
        let admitted = self.books().data(&header);
        match admitted {
            Err(error) if error.is_fatal() => Err(error.into()),
            Err(error) => {
                self.pending.remove(&request_id);
                self.send_error(header.op_code(), request_id, &OpError::from(&error))
                    .await
            }
            Ok(DataOutcome::Discard) => Ok(()),
            Ok(DataOutcome::Deliver(progress)) => {
                let Some(pending) = self.pending.get_mut(&request_id) else {
                    return Err(ProtoError::UnexpectedData { request_id }.into());
                };
                if !body.is_empty() {
                    pending.body_crc = if pending.body.is_empty() {
                        header.body_crc()
                    } else {
                        crc32c::crc32c_combine(pending.body_crc, header.body_crc(), body.len())
                    };
                }
                pending.body.extend_from_slice(&body);
                pending.last_frame = Instant::now();
                if progress.complete {
                    let pending = self.pending.remove(&request_id).expect("present above");
                    let body = (pending.body.freeze(), pending.body_crc);
                    self.spawn_request(request_id, pending.request, body, pending.budget);
                }
                Ok(())
            }
        }
    }

    /// A body frame failed its checksum: that request fails, the connection goes on.
    async fn on_bad_body(&mut self, header: &FrameHeader, computed: u32) -> Result<(), Ending> {
        let request_id = header.request_id();
        if header.kind() == FrameKind::Request && self.books().contains(request_id) {
            return Err(ProtoError::DuplicateRequestId { request_id }.into());
        }
        self.pending.remove(&request_id);
        let error = OpError::new(
            ErrorCode::CHECKSUM_MISMATCH,
            format!(
                "a body frame of request {request_id} failed its checksum (computed {computed:#010x}); retry"
            ),
        );
        self.reject(header, &error).await
    }

    /// The requester gave up a streamed body: drop it and confirm with CANCELLED.
    async fn on_abort(&mut self, header: &FrameHeader) -> Result<(), Ending> {
        let request_id = header.request_id();
        if request_id == 0 || !self.books().abort(request_id) {
            return Ok(());
        }
        self.pending.remove(&request_id);
        let error = OpError::new(ErrorCode::CANCELLED, "the upload was cancelled");
        self.send_error(header.op_code(), request_id, &error).await
    }

    /// The earliest of: the current frame's deadline, a streamed body's next-frame deadline,
    /// the idle deadline.
    fn next_deadline(&self) -> Instant {
        let limits = &self.node.limits;
        let mut deadline = self.last_activity + limits.idle_timeout;
        if let Some(started) = self.frame_started {
            deadline = deadline.min(started + limits.frame_timeout);
        }
        if let Some(oldest) = self.pending.values().map(|p| p.last_frame).min() {
            deadline = deadline.min(oldest + limits.frame_timeout);
        }
        deadline
    }

    async fn on_deadline(&mut self) -> Result<(), Ending> {
        let now = Instant::now();
        let limits = self.node.limits;
        if self
            .frame_started
            .is_some_and(|started| now >= started + limits.frame_timeout)
        {
            return Err(Ending::Fatal(ErrorFrame::new(
                ErrorCode::TIMEOUT,
                "a frame did not complete within frame_timeout",
            )));
        }
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, pending)| now >= pending.last_frame + limits.frame_timeout)
            .map(|(&id, _)| id)
            .collect();
        for request_id in expired {
            let pending = self.pending.remove(&request_id).expect("listed above");
            self.books().finish(request_id)?;
            let error = OpError::new(
                ErrorCode::TIMEOUT,
                "the request body stopped arriving for frame_timeout",
            );
            self.send_error(pending.request.op().code(), request_id, &error)
                .await?;
        }
        if now >= self.last_activity + limits.idle_timeout {
            let idle = self.books().inflight() == 0 && self.requests.is_empty();
            if idle {
                return Err(Ending::Fatal(ErrorFrame::new(
                    ErrorCode::TIMEOUT,
                    "the connection was idle for idle_timeout",
                )));
            }
            // Requests are running: not idle. Count again from now.
            self.last_activity = now;
        }
        Ok(())
    }

    /// Starts the task that runs a complete request and sends its reply.
    fn spawn_request(
        &mut self,
        request_id: u64,
        request: Request,
        (body, body_crc): (Bytes, u32),
        budget: Option<OwnedSemaphorePermit>,
    ) {
        let node = Arc::clone(&self.node);
        let responses = self.responses.clone();
        let inflight = Arc::clone(&self.inflight);
        let traffic = self.traffic.clone();
        let plane = self.plane;
        let op = request.op();
        let span = tracing::debug_span!("request", node = node.id.0, request_id, %op);
        let hold = GaugeHold::new(Arc::clone(&node), plane, |metrics, _| {
            &metrics.requests_inflight
        });
        self.requests.spawn(
            async move {
                let _inflight = hold;
                let started = Instant::now();
                let result = handler::execute(&node, request, body, body_crc).await;
                drop(budget);
                send_reply(
                    &node, &traffic, &responses, &inflight, op, request_id, result,
                )
                .await;
                node.metrics.record_latency(op, started.elapsed());
            }
            .instrument(span),
        );
    }
}

/// Queues the reply to `request_id`, marking the request finished just before its final
/// frame (see the module docs).
async fn send_reply(
    node: &Node,
    traffic: &Traffic,
    responses: &mpsc::Sender<Frame>,
    inflight: &Mutex<InflightRequests>,
    op: Op,
    request_id: u64,
    result: Result<Reply, OpError>,
) {
    let frames = match &result {
        Ok(reply) => {
            handler::reply_frames(request_id, reply, node.limits.frame_body_bytes_max as usize)
                .map_err(|error| {
                    OpError::new(ErrorCode::INTERNAL, format!("encode the reply: {error}"))
                })
        }
        Err(error) => Err(error.clone()),
    };
    let frames = frames.unwrap_or_else(|error| {
        if error.code == ErrorCode::INTERNAL {
            tracing::error!(%op, message = %error.message, "request failed inside the node");
        } else {
            tracing::debug!(%op, code = %error.code, message = %error.message, "request failed");
        }
        node.metrics.count_request(op, Some(error.code));
        Frame::error(op.code(), request_id, &error.frame())
            .into_iter()
            .collect()
    });
    if result.is_ok() {
        node.metrics.count_request(op, None);
    }
    let last = frames.len().saturating_sub(1);
    for (index, frame) in frames.into_iter().enumerate() {
        if index == last {
            let _ = inflight
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .finish(request_id);
        }
        let body_bytes = frame.body().len() as u64;
        if responses.send(frame).await.is_err() {
            return;
        }
        node.metrics.count_bytes_out(traffic, body_bytes);
    }
}

/// After a fatal error (the writer has sent the ERROR frame and closed its side), reads and
/// drops what the peer still sends for a moment: closing a socket with unread bytes makes
/// the kernel send a reset, which can destroy the ERROR frame before the peer reads it.
async fn linger(reader: &mut ReadHalf) {
    let mut sink = vec![0u8; 16 << 10];
    let mut drained = 0;
    let _ = timeout(LINGER, async {
        while drained < LINGER_BYTES_MAX {
            match reader.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(read) => drained += read,
            }
        }
    })
    .await;
}

/// The writer task: sends queued frames, coalescing small ones, until the queue closes or a
/// write stalls for `frame_timeout`.
async fn write_frames(
    node: Arc<Node>,
    plane: Plane,
    writer: WriteHalf,
    mut queue: mpsc::Receiver<Frame>,
) {
    let stall = node.limits.frame_timeout;
    let mut out = BufWriter::with_capacity(WRITE_BUFFER_BYTES, writer);
    while let Some(frame) = queue.recv().await {
        let write = async {
            out.write_all(&frame.header().encode()).await?;
            out.write_all(frame.meta()).await?;
            out.write_all(frame.body()).await?;
            if queue.is_empty() {
                out.flush().await?;
            }
            std::io::Result::Ok(())
        };
        match timeout(stall, write).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::debug!(%error, ?plane, "writing to the connection failed");
                return;
            }
            Err(_) => {
                tracing::debug!(
                    ?plane,
                    "the peer stopped reading for frame_timeout; closing"
                );
                return;
            }
        }
    }
    let _ = timeout(stall, async {
        out.flush().await?;
        out.shutdown().await
    })
    .await;
}
