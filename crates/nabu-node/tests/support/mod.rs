//! Test support: a node in-process on port 0, a raw protocol client, an HTTP getter and a
//! Prometheus text checker. Private to the `node` test binary (a folder, so cargo does not
//! build it as a test binary of its own).

#![allow(dead_code, reason = "each test uses some of the helpers")]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use nabu_core::id::StripeId;
use nabu_node::{ClusterView, ListenerAddrs, Listeners, NodeBuilder, NodeConfig};
use nabu_proto::ops::{
    ByteRange, HelloRequest, MetaGet, MetaPut, MetaPutReply, MetaTable, Ping, Plane, PutOutcome,
    ShardDelete, ShardDeleteReply, ShardGet, ShardGetReply, ShardInfo, ShardLayout, ShardPut,
    ShardPutReply, ShardStat, ShardStatReply,
};
use nabu_proto::{ClusterToken, ErrorCode, Frame, FrameDecoder, FrameKind, Limits, Meta};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};

/// The cluster token of this test process, random: nextest runs each test in its own process
/// and tests run in parallel, so a port freed by a stopped node may be bound by another test's
/// node; a shared token would let heartbeats or clients reach the wrong cluster.
pub fn token_hex() -> &'static str {
    static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TOKEN.get_or_init(|| {
        use rand::RngCore;
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        secret.iter().map(|byte| format!("{byte:02x}")).collect()
    })
}
/// How long any single wait in these tests may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

pub fn token() -> ClusterToken {
    ClusterToken::from_hex(token_hex()).unwrap()
}

// ---- a node under test ----

pub struct TestNode {
    pub addrs: ListenerAddrs,
    pub data_dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl TestNode {
    pub async fn start(configure: impl FnOnce(&mut NodeConfig)) -> TestNode {
        let listeners = Listeners::bind_loopback().await.unwrap();
        Self::start_on(listeners, 1, configure).await
    }

    pub async fn start_on(
        listeners: Listeners,
        id: u32,
        configure: impl FnOnce(&mut NodeConfig),
    ) -> TestNode {
        Self::start_with(listeners, id, configure, None).await
    }

    pub async fn start_with(
        listeners: Listeners,
        id: u32,
        configure: impl FnOnce(&mut NodeConfig),
        disk: Option<Arc<dyn nabu_store::Disk>>,
    ) -> TestNode {
        let dir = tempfile::tempdir().unwrap();
        let addrs = listeners.addrs().unwrap();
        let data_dir = dir.path().join("data");
        let mut config = NodeConfig::new(id, &data_dir, token_hex());
        (config.data_addr, config.peer_addr, config.http_addr) =
            (addrs.data, addrs.peer, addrs.http);
        configure(&mut config);
        let (stop, stopped) = oneshot::channel::<()>();
        let mut builder = NodeBuilder::new(config);
        if let Some(disk) = disk {
            builder = builder.disk(disk);
        }
        let task = tokio::spawn(builder.run(listeners, async {
            let _ = stopped.await;
        }));
        let node = TestNode {
            addrs,
            data_dir,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        };
        node.wait_ready().await;
        node
    }

    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok((200, _)) = http_get(self.addrs.http, "/readyz").await {
                return;
            }
            assert!(Instant::now() < deadline, "node never became ready");
            sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn client(&self) -> Client {
        let mut client = Client::connect(self.addrs.data).await;
        client
            .hello(Plane::Data, &token())
            .await
            .expect("HELLO accepted");
        client
    }

    pub async fn stop(&mut self) {
        let _ = self.stop.take().unwrap().send(());
        let task = self.task.take().unwrap();
        timeout(WAIT, task)
            .await
            .expect("node stops in time")
            .unwrap()
            .unwrap();
    }

    pub async fn metric(&self, name: &str) -> f64 {
        let (status, text) = http_get(self.addrs.http, "/metrics").await.unwrap();
        assert_eq!(status, 200);
        check_prometheus_text(&text);
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("metric {name} missing"))
    }

    pub async fn cluster(&self) -> ClusterView {
        let (status, body) = http_get(self.addrs.http, "/api/v1/cluster").await.unwrap();
        assert_eq!(status, 200);
        serde_json::from_str(&body).unwrap()
    }

    /// Whether the node still serves: a fresh connection PINGs it.
    pub async fn assert_alive(&self) {
        let mut client = self.client().await;
        let (reply, _) = client.call(&Ping, Bytes::new()).await;
        assert_eq!(reply.header().kind(), FrameKind::Response);
        assert_eq!(http_get(self.addrs.http, "/healthz").await.unwrap().0, 200);
    }
}

// ---- a raw protocol client ----

pub struct Client {
    stream: TcpStream,
    decoder: FrameDecoder,
    buffer: BytesMut,
    next_id: u64,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        Client {
            stream: TcpStream::connect(addr).await.unwrap(),
            decoder: FrameDecoder::new(Limits::default()),
            buffer: BytesMut::new(),
            next_id: 1,
        }
    }

    pub fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub async fn hello(&mut self, plane: Plane, token: &ClusterToken) -> Result<(), ErrorCode> {
        let hello = HelloRequest {
            plane,
            features: 0,
            token: token.clone(),
            client_name: "test".into(),
        };
        let id = self.id();
        self.send(&Frame::from_meta(id, &hello, Bytes::new(), false).unwrap())
            .await;
        let reply = self.recv().await.expect("a reply to HELLO");
        match reply.header().kind() {
            FrameKind::Response => Ok(()),
            _ => Err(reply.decode_error().unwrap().code),
        }
    }

    pub async fn send(&mut self, frame: &Frame) {
        self.send_raw(&frame.to_vec()).await;
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        // The node may have closed already; the test checks what it answered.
        let _ = self.stream.write_all(bytes).await;
    }

    /// The next frame, or `None` once the node closed the connection.
    pub async fn recv(&mut self) -> Option<Frame> {
        timeout(WAIT, async {
            loop {
                if let Some(frame) = self.decoder.decode(&mut self.buffer).unwrap() {
                    return Some(frame);
                }
                match self.stream.read_buf(&mut self.buffer).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("the node answers in time")
    }

    /// Sends a request (its body cut into frames of `frame_bytes`) without waiting.
    pub async fn start<M: Meta>(&mut self, meta: &M, body: Bytes, frame_bytes: usize) -> u64 {
        let id = self.id();
        let pieces: Vec<Bytes> = if body.is_empty() {
            vec![Bytes::new()]
        } else {
            body.chunks(frame_bytes)
                .map(Bytes::copy_from_slice)
                .collect()
        };
        let last = pieces.len() - 1;
        for (index, piece) in pieces.into_iter().enumerate() {
            let frame = if index == 0 {
                Frame::from_meta(id, meta, piece, index < last).unwrap()
            } else {
                Frame::data(M::OP, id, piece, index < last).unwrap()
            };
            self.send(&frame).await;
        }
        id
    }

    /// The reply to `id`: its first frame (RESPONSE or ERROR) and its whole body.
    pub async fn reply(&mut self, id: u64) -> (Frame, Bytes) {
        let first = self.recv().await.expect("a reply");
        assert_eq!(first.header().request_id(), id);
        let mut body = BytesMut::from(&first.body()[..]);
        let mut more = first.header().more();
        while more {
            let next = self.recv().await.expect("the rest of the body");
            assert_eq!(next.header().kind(), FrameKind::Data);
            body.extend_from_slice(next.body());
            more = next.header().more();
        }
        (first, body.freeze())
    }

    pub async fn call<M: Meta>(&mut self, meta: &M, body: Bytes) -> (Frame, Bytes) {
        let id = self.start(meta, body, 4 << 20).await;
        self.reply(id).await
    }

    pub async fn ok<M: Meta, R: Meta>(&mut self, meta: &M, body: Bytes) -> (R, Bytes) {
        let (frame, body) = self.call(meta, body).await;
        if frame.header().kind() == FrameKind::Error {
            panic!("{} failed: {}", M::OP, frame.decode_error().unwrap());
        }
        (frame.decode_meta::<R>().unwrap(), body)
    }

    pub async fn error<M: Meta>(&mut self, meta: &M, body: Bytes) -> ErrorCode {
        let (frame, _) = self.call(meta, body).await;
        assert_eq!(
            frame.header().kind(),
            FrameKind::Error,
            "{} should fail",
            M::OP
        );
        frame.decode_error().unwrap().code
    }

    /// Reads until the node closes; returns the ERROR codes it sent on the way.
    pub async fn closed_with(&mut self) -> Vec<ErrorCode> {
        let mut codes = Vec::new();
        while let Some(frame) = self.recv().await {
            if let Ok(error) = frame.decode_error() {
                codes.push(error.code);
            }
        }
        codes
    }
}

impl Client {
    /// SHARD_GET: the reply and body, or the error code.
    pub async fn get_shard(
        &mut self,
        stripe_id: StripeId,
        range: Option<(u64, u64)>,
    ) -> Result<(ShardGetReply, Bytes), ErrorCode> {
        let range = range.map(|(offset, bytes)| ByteRange { offset, bytes });
        let (frame, body) = self
            .call(&ShardGet { stripe_id, range }, Bytes::new())
            .await;
        match frame.decode_error() {
            Ok(error) => Err(error.code),
            Err(_) => Ok((frame.decode_meta().unwrap(), body)),
        }
    }

    /// SHARD_STAT: the shard info, or the error code.
    pub async fn stat_shard(&mut self, stripe_id: StripeId) -> Result<ShardInfo, ErrorCode> {
        let (frame, _) = self.call(&ShardStat { stripe_id }, Bytes::new()).await;
        match frame.decode_error() {
            Ok(error) => Err(error.code),
            Err(_) => Ok(frame.decode_meta::<ShardStatReply>().unwrap().shard),
        }
    }

    /// META_PUT of `value` at `key` in namespace `ns`: whether it was applied.
    pub async fn put_value(&mut self, key: &str, hlc_timestamp: u64, value: &[u8]) -> bool {
        let put = put_meta(key, hlc_timestamp, value);
        let body = Bytes::copy_from_slice(value);
        self.ok::<_, MetaPutReply>(&put, body).await.0.applied
    }

    /// The next frame, which must be an ERROR: its request id and code.
    pub async fn recv_error(&mut self) -> (u64, ErrorCode) {
        let frame = self.recv().await.expect("an ERROR frame");
        (
            frame.header().request_id(),
            frame.decode_error().unwrap().code,
        )
    }

    /// SHARD_DELETE: whether the shard existed.
    pub async fn delete_shard(&mut self, stripe_id: StripeId) -> bool {
        let delete = ShardDelete { stripe_id };
        self.ok::<_, ShardDeleteReply>(&delete, Bytes::new())
            .await
            .0
            .existed
    }
}

pub fn whole_shard(bytes: &[u8]) -> ShardInfo {
    ShardInfo {
        layout: ShardLayout::Whole,
        stripe_bytes: bytes.len() as u64,
        shard_bytes: bytes.len() as u64,
        shard_crc: crc32c::crc32c(bytes),
    }
}

pub fn erasure_shard(bytes: &[u8], index: u8) -> ShardInfo {
    ShardInfo {
        layout: ShardLayout::Erasure {
            codec: nabu_core::ec::CodecId(1),
            data_shards: 4,
            parity_shards: 2,
            index,
        },
        stripe_bytes: bytes.len() as u64 * 4,
        shard_bytes: bytes.len() as u64,
        shard_crc: crc32c::crc32c(bytes),
    }
}

pub fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

pub async fn put_shard(
    client: &mut Client,
    stripe_id: StripeId,
    shard: ShardInfo,
    bytes: Bytes,
) -> PutOutcome {
    let (reply, _) = client
        .ok::<_, ShardPutReply>(&ShardPut { stripe_id, shard }, bytes)
        .await;
    reply.outcome
}

/// The whole shard of `stripe_id` the node holds (GET must succeed).
pub async fn get_shard(client: &mut Client, stripe_id: StripeId) -> Bytes {
    let request = ShardGet {
        stripe_id,
        range: None,
    };
    let (_, body) = client.ok::<_, ShardGetReply>(&request, Bytes::new()).await;
    body
}

// ---- HTTP ----

pub async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    http_raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
}

pub async fn http_raw(addr: SocketAddr, request: &[u8]) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(request).await?;
    let mut response = Vec::new();
    timeout(WAIT, stream.read_to_end(&mut response)).await??;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Checks the Prometheus text format: every sample line is `name{labels} value` with a
/// `# TYPE` line for its family before it (a histogram's samples are `<family>_bucket`,
/// `_sum` and `_count`).
pub fn check_prometheus_text(text: &str) {
    let mut typed = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            if kind == "histogram" {
                typed.extend(["_bucket", "_sum", "_count"].map(|suffix| format!("{name}{suffix}")));
            } else {
                typed.insert(name.to_owned());
            }
            continue;
        }
        if line.starts_with("# HELP ") || line.is_empty() {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        value
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad name in {line:?}"
        );
        if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
            assert!(
                labels.starts_with('{') && labels.ends_with('}'),
                "bad labels in {line:?}"
            );
            for pair in labels[1..labels.len() - 1].split(',') {
                let (key, quoted) = pair.split_once('=').unwrap();
                assert!(
                    !key.is_empty() && quoted.starts_with('"') && quoted.ends_with('"'),
                    "{line:?}"
                );
            }
        }
        assert!(typed.contains(name), "sample before its # TYPE: {line:?}");
    }
}

/// Finds `needle` in the files under `dir` and flips one bit of it there.
pub fn flip_byte_of(dir: &Path, needle: &[u8]) {
    let mut stack = vec![dir.to_owned()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            stack.extend(
                std::fs::read_dir(&path)
                    .unwrap()
                    .map(|entry| entry.unwrap().path()),
            );
            continue;
        }
        let mut bytes = std::fs::read(&path).unwrap();
        if let Some(at) = bytes
            .windows(needle.len())
            .position(|window| window == needle)
        {
            bytes[at + 7] ^= 0x10;
            std::fs::write(&path, &bytes).unwrap();
            return;
        }
    }
    panic!(
        "the shard bytes are not in any file under {}",
        dir.display()
    );
}

pub fn put_meta(key: &str, hlc_timestamp: u64, value: &[u8]) -> MetaPut {
    MetaPut {
        table: MetaTable::KeyRecords,
        namespace: "ns".into(),
        key: key.as_bytes().to_vec(),
        hlc_timestamp,
        value_bytes: value.len() as u64,
    }
}

pub fn get_meta(key: &str) -> MetaGet {
    MetaGet {
        table: MetaTable::KeyRecords,
        namespace: "ns".into(),
        key: key.as_bytes().to_vec(),
    }
}
