//! The seam for deterministic simulation: an in-memory network and inline blocking work.
//!
//! Nothing here is active in a real deployment. A simulation test runs the real nodes and
//! the real client on one thread (a current-thread Tokio runtime with paused time) and
//! installs a [`SimNet`] on that thread. While one is installed:
//!
//! - client connections to a TCP endpoint ([`crate::connection::Connection::connect`]), the
//!   nodes' peer connections and their accept loops go through the `SimNet` instead of the
//!   kernel: each connection is a pair of in-memory pipes joined by two forwarding tasks that
//!   apply the destination's [`LinkFaults`] (delay per chunk in virtual time, a chunk lost
//!   with its connection every N chunks, every open connection dropped, connections refused);
//! - [`spawn_blocking`] runs its closure as an ordinary task on that thread instead of on
//!   Tokio's blocking pool, so disk work happens at a point the schedule fixes rather than
//!   whenever another thread gets to it.
//!
//! With one thread, virtual time, and faults decided by the schedule, a seed replays the
//! same execution: the simulation test runs a seed twice and compares the traces. Keeping it
//! so is a rule for the node and client code: nothing that decides what runs next may come
//! from a random source — every `tokio::select!` is `biased` (polled in order, not in
//! tokio's random order), maps whose iteration order starts work are ordered (a connection's
//! pending requests by id; hints are replayed in stripe order), and timers read
//! `tokio::time::Instant`, never `std::time::Instant`. The test catches a breach as a trace
//! that differs between two runs of one seed.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{
    AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Bytes each in-memory pipe buffers (a socket buffer's worth).
const PIPE_BYTES: usize = 256 << 10;

thread_local! {
    static CURRENT: RefCell<Option<SimNet>> = const { RefCell::new(None) };
}

/// A byte stream: a TCP or Unix socket, or an in-memory pipe of a [`SimNet`].
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// Faults on the links into one node, changed by the simulation between steps.
#[derive(Debug, Default)]
pub struct LinkFaults {
    /// Milliseconds (virtual) each forwarded chunk waits.
    pub delay_ms: AtomicU64,
    /// When not 0, a connection loses its Nth chunk (each way) and is cut there.
    pub cut_every: AtomicU64,
    /// Bumped to drop every connection opened before.
    pub generation: AtomicU64,
    /// While set, new connections are refused (as a crashed host's are).
    pub refuse: AtomicBool,
}

/// What a [`SimNet`] carried: the simulation folds it into its trace.
#[derive(Debug, Default)]
pub struct NetCounters {
    /// Connections made.
    pub connections: AtomicU64,
    /// Chunks forwarded.
    pub chunks: AtomicU64,
    /// Bytes forwarded.
    pub bytes: AtomicU64,
    /// Chunks lost to `cut_every` or a dropped generation.
    pub lost: AtomicU64,
}

/// An in-memory network of listeners by address.
#[derive(Clone, Debug, Default)]
pub struct SimNet {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    listeners: Mutex<HashMap<SocketAddr, mpsc::UnboundedSender<DuplexStream>>>,
    faults: Mutex<BTreeMap<SocketAddr, Arc<LinkFaults>>>,
    counters: NetCounters,
}

/// The accepting end of a [`SimNet`] address.
#[derive(Debug)]
pub struct SimListener {
    addr: SocketAddr,
    accepted: mpsc::UnboundedReceiver<DuplexStream>,
}

impl SimListener {
    /// The next connection to this address.
    pub async fn accept(&mut self) -> io::Result<DuplexStream> {
        self.accepted.recv().await.ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotConnected, "the simulated network closed")
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl SimNet {
    /// A new, empty network.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes this network the current thread's until the guard drops.
    pub fn install(&self) -> InstallGuard {
        CURRENT.with(|current| *current.borrow_mut() = Some(self.clone()));
        InstallGuard(())
    }

    /// The network installed on this thread, if any.
    pub fn current() -> Option<SimNet> {
        CURRENT.with(|current| current.borrow().clone())
    }

    /// Listens on `addr`, replacing an earlier listener there (a restarted node).
    pub fn listen(&self, addr: SocketAddr) -> SimListener {
        let (sender, accepted) = mpsc::unbounded_channel();
        self.inner
            .listeners
            .lock()
            .expect("listeners")
            .insert(addr, sender);
        SimListener { addr, accepted }
    }

    /// The faults of the links into `addr` (created on first use).
    pub fn faults(&self, addr: SocketAddr) -> Arc<LinkFaults> {
        let mut faults = self.inner.faults.lock().expect("faults");
        Arc::clone(faults.entry(addr).or_default())
    }

    /// What the network carried so far.
    pub fn counters(&self) -> &NetCounters {
        &self.inner.counters
    }

    /// Connects to `addr`: refused unless a listener is there (and its links accept).
    pub fn connect(&self, addr: SocketAddr) -> io::Result<DuplexStream> {
        let refused = || {
            io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("{addr}: connection refused (simulated)"),
            )
        };
        let faults = self.faults(addr);
        if faults.refuse.load(Ordering::Relaxed) {
            return Err(refused());
        }
        let listener = self
            .inner
            .listeners
            .lock()
            .expect("listeners")
            .get(&addr)
            .cloned();
        let listener = listener.ok_or_else(refused)?;
        let (ours, near) = tokio::io::duplex(PIPE_BYTES);
        let (far, theirs) = tokio::io::duplex(PIPE_BYTES);
        listener.send(theirs).map_err(|_| refused())?;
        self.inner
            .counters
            .connections
            .fetch_add(1, Ordering::Relaxed);
        let generation = faults.generation.load(Ordering::Relaxed);
        let (near_read, near_write) = tokio::io::split(near);
        let (far_read, far_write) = tokio::io::split(far);
        let link = Link {
            faults,
            generation,
            net: Arc::clone(&self.inner),
        };
        tokio::spawn(link.clone().forward(near_read, far_write));
        tokio::spawn(link.forward(far_read, near_write));
        Ok(ours)
    }
}

/// Uninstalls the thread's [`SimNet`] when dropped.
#[derive(Debug)]
pub struct InstallGuard(());

impl Drop for InstallGuard {
    fn drop(&mut self) {
        CURRENT.with(|current| current.borrow_mut().take());
    }
}

/// One direction of one simulated connection.
#[derive(Clone)]
struct Link {
    faults: Arc<LinkFaults>,
    generation: u64,
    net: Arc<Inner>,
}

impl Link {
    /// Copies `from` to `to` chunk by chunk with the faults applied, until `from` ends or a
    /// fault cuts the connection; either way `to`'s reader then sees the end (and closes its
    /// side, which ends the other direction).
    async fn forward(self, mut from: ReadHalf<DuplexStream>, mut to: WriteHalf<DuplexStream>) {
        self.copy(&mut from, &mut to).await;
        let _ = to.shutdown().await;
    }

    async fn copy(&self, from: &mut ReadHalf<DuplexStream>, to: &mut WriteHalf<DuplexStream>) {
        let counters = &self.net.counters;
        let mut buffer = vec![0u8; 64 << 10];
        let mut chunks = 0u64;
        while let Ok(read @ 1..) = from.read(&mut buffer).await {
            chunks += 1;
            let delay = self.faults.delay_ms.load(Ordering::Relaxed);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            let cut_every = self.faults.cut_every.load(Ordering::Relaxed);
            if (cut_every > 0 && chunks.is_multiple_of(cut_every))
                || self.faults.generation.load(Ordering::Relaxed) != self.generation
            {
                counters.lost.fetch_add(1, Ordering::Relaxed);
                return;
            }
            if to.write_all(&buffer[..read]).await.is_err() {
                return;
            }
            counters.chunks.fetch_add(1, Ordering::Relaxed);
            counters.bytes.fetch_add(read as u64, Ordering::Relaxed);
        }
    }
}

/// Connects to `addr` over the installed [`SimNet`], or over TCP (no delay) when none is.
pub async fn connect_tcp(addr: SocketAddr) -> io::Result<Box<dyn Stream>> {
    match SimNet::current() {
        Some(net) => Ok(Box::new(net.connect(addr)?)),
        None => {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream))
        }
    }
}

/// Runs blocking `work` on Tokio's blocking pool, or, under a [`SimNet`], as a task on the
/// simulation's thread (the same `JoinHandle`, so callers need not know).
pub fn spawn_blocking<F, R>(work: F) -> JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    if SimNet::current().is_some() {
        tokio::spawn(async move { work() })
    } else {
        tokio::task::spawn_blocking(work)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_connection_carries_bytes_both_ways_and_faults_apply() {
        let net = SimNet::new();
        let _installed = net.install();
        let addr: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        assert_eq!(
            net.connect(addr).expect_err("no listener").kind(),
            io::ErrorKind::ConnectionRefused
        );
        let mut listener = net.listen(addr);
        let mut client = connect_tcp(addr).await.expect("connect");
        let mut server = listener.accept().await.expect("accept");
        client.write_all(b"ping").await.expect("write");
        let mut got = [0u8; 4];
        server.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"ping");

        // 40 ms of virtual delay per chunk: the reply takes exactly that long.
        net.faults(addr).delay_ms.store(40, Ordering::Relaxed);
        let started = tokio::time::Instant::now();
        server.write_all(b"pong").await.expect("write");
        client.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"pong");
        assert_eq!(started.elapsed(), Duration::from_millis(40));

        // A dropped generation cuts the open connection; a refusing address takes no new one.
        net.faults(addr).generation.fetch_add(1, Ordering::Relaxed);
        client
            .write_all(b"lost")
            .await
            .expect("write into the pipe");
        assert_eq!(server.read(&mut got).await.expect("eof"), 0);
        net.faults(addr).refuse.store(true, Ordering::Relaxed);
        assert!(net.connect(addr).is_err());
        assert!(net.counters().lost.load(Ordering::Relaxed) >= 1);
    }

    #[tokio::test(start_paused = true)]
    async fn blocking_work_runs_on_the_simulation_thread_under_a_net() {
        let here = std::thread::current().id();
        let pooled = spawn_blocking(move || std::thread::current().id())
            .await
            .expect("join");
        assert_ne!(pooled, here);
        let _installed = SimNet::new().install();
        let inline = spawn_blocking(move || std::thread::current().id())
            .await
            .expect("join");
        assert_eq!(inline, here);
    }
}
