//! The limits `nabu bench` judges the cluster against, measured in the same run on the same
//! machine: one loopback TCP connection (throughput and round-trip floor) and the data dir's
//! device (`O_DIRECT` reads at queue depth 16, durable 1 MiB writes each followed by
//! `fdatasync`).
//!
//! They are ceilings for one part of the path each, not for the whole: a GET moves every byte
//! over loopback at least once, a cold GET reads it from the device, a PUT writes it (times
//! the policy's space overhead) durably.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use nabu_core::AlignedBuf;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::Latency;

/// Bytes one loopback throughput pass sends.
const LOOPBACK_PASS_BYTES: u64 = 1 << 30;
/// Loopback throughput passes (the best one counts: the machine is shared).
const LOOPBACK_PASSES: usize = 3;
/// The size of each loopback write (and read buffer).
const LOOPBACK_WRITE_BYTES: usize = 4 << 20;
/// Ping-pong round trips timed (after [`ROUND_TRIPS_WARMUP`] untimed ones).
const ROUND_TRIPS: usize = 5000;
const ROUND_TRIPS_WARMUP: usize = 200;
/// The ping and pong message size.
const PING_BYTES: usize = 64;

/// The size of the device test file.
const DISK_FILE_BYTES: u64 = 256 << 20;
/// The size of each device read and write.
const DISK_IO_BYTES: usize = 1 << 20;
/// Reads in flight at once in the read test.
const DISK_QUEUE_DEPTH: usize = 16;
/// The durable-write test stops after this long even if the file is not full.
const DISK_WRITE_TIME_MAX: Duration = Duration::from_secs(15);
/// Read passes over the file continue until this much time has been spent (at least one).
const DISK_READ_TIME_MIN: Duration = Duration::from_secs(1);

/// One loopback TCP connection on this machine.
#[derive(Debug, Clone, Serialize)]
pub struct LoopbackLimits {
    /// Best single-connection throughput, bytes per second.
    pub bytes_per_sec: f64,
    /// Round trip of a 64-byte ping-pong.
    pub round_trip: Latency,
}

/// The data dir's device.
#[derive(Debug, Clone, Serialize)]
pub struct DiskLimits {
    /// Where the test file was.
    pub dir: PathBuf,
    /// Whether `O_DIRECT` was used (false: the filesystem refused it, e.g. tmpfs, and the
    /// figures are buffered — page-cache speed for reads).
    pub direct: bool,
    /// 1 MiB reads, 16 in flight.
    pub read_bytes_per_sec: f64,
    /// 1 MiB writes, each followed by `fdatasync`, one at a time.
    pub durable_write_bytes_per_sec: f64,
    /// The test file's size.
    pub file_bytes: u64,
}

/// Measures single-connection loopback throughput and the round-trip floor.
pub async fn loopback() -> anyhow::Result<LoopbackLimits> {
    let mut best = 0.0f64;
    for _ in 0..LOOPBACK_PASSES {
        best = best.max(loopback_pass(LOOPBACK_PASS_BYTES).await?);
    }
    Ok(LoopbackLimits {
        bytes_per_sec: best,
        round_trip: round_trips().await?,
    })
}

async fn loopback_pass(total_bytes: u64) -> anyhow::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("bind loopback")?;
    let addr = listener.local_addr()?;
    let receiver = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await?;
        let mut buffer = vec![0u8; LOOPBACK_WRITE_BYTES];
        let mut received = 0u64;
        loop {
            let read = socket.read(&mut buffer).await?;
            if read == 0 {
                return Ok::<u64, io::Error>(received);
            }
            received += read as u64;
        }
    });
    let mut sender = TcpStream::connect(addr).await.context("connect loopback")?;
    sender.set_nodelay(true)?;
    let chunk = vec![0x5au8; LOOPBACK_WRITE_BYTES];
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < total_bytes {
        sender.write_all(&chunk).await.context("loopback send")?;
        sent += chunk.len() as u64;
    }
    sender.shutdown().await?;
    let received = receiver.await.context("loopback receiver")??;
    let elapsed = start.elapsed().as_secs_f64();
    anyhow::ensure!(
        received == sent,
        "loopback lost bytes: {received} of {sent}"
    );
    Ok(sent as f64 / elapsed)
}

async fn round_trips() -> anyhow::Result<Latency> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("bind loopback")?;
    let addr = listener.local_addr()?;
    let echo = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await?;
        socket.set_nodelay(true)?;
        let mut message = [0u8; PING_BYTES];
        while socket.read_exact(&mut message).await.is_ok() {
            socket.write_all(&message).await?;
        }
        Ok::<(), io::Error>(())
    });
    let mut socket = TcpStream::connect(addr).await.context("connect loopback")?;
    socket.set_nodelay(true)?;
    let mut message = [7u8; PING_BYTES];
    let mut samples = Vec::with_capacity(ROUND_TRIPS);
    for trip in 0..ROUND_TRIPS_WARMUP + ROUND_TRIPS {
        let start = Instant::now();
        socket.write_all(&message).await?;
        socket.read_exact(&mut message).await?;
        if trip >= ROUND_TRIPS_WARMUP {
            samples.push(start.elapsed());
        }
    }
    drop(socket);
    echo.await.context("loopback echo")??;
    Ok(Latency::from_samples(samples))
}

/// Measures the device under `dir` with a temporary file (removed afterwards).
pub fn disk(dir: &Path) -> anyhow::Result<DiskLimits> {
    let path = dir.join(format!(".nabu-bench-{}.tmp", std::process::id()));
    let result = disk_at(dir, &path);
    let _ = std::fs::remove_file(&path);
    result
}

fn disk_at(dir: &Path, path: &Path) -> anyhow::Result<DiskLimits> {
    let (file, direct) = open_direct(path).with_context(|| format!("create {}", path.display()))?;
    let (file_bytes, durable_write_bytes_per_sec) =
        durable_writes(&file).with_context(|| format!("write {}", path.display()))?;
    let file = Arc::new(file);
    let read_bytes_per_sec =
        parallel_reads(&file, file_bytes).with_context(|| format!("read {}", path.display()))?;
    Ok(DiskLimits {
        dir: dir.to_path_buf(),
        direct,
        read_bytes_per_sec,
        durable_write_bytes_per_sec,
        file_bytes,
    })
}

/// Opens `path` with `O_DIRECT`, or buffered when the filesystem refuses it (`EINVAL`).
fn open_direct(path: &Path) -> io::Result<(File, bool)> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(true);
    let direct = options.clone().custom_flags(libc::O_DIRECT).open(path);
    match direct {
        Ok(file) => Ok((file, true)),
        Err(error) if error.raw_os_error() == Some(libc::EINVAL) => {
            Ok((options.open(path)?, false))
        }
        Err(error) => Err(error),
    }
}

/// Sequential 1 MiB writes, each followed by `fdatasync`; returns (bytes written, rate).
fn durable_writes(file: &File) -> io::Result<(u64, f64)> {
    let mut buffer = AlignedBuf::zeroed(DISK_IO_BYTES);
    getrandom::fill(&mut buffer).map_err(|e| io::Error::other(e.to_string()))?;
    let start = Instant::now();
    let mut written = 0u64;
    while written < DISK_FILE_BYTES && start.elapsed() < DISK_WRITE_TIME_MAX {
        // Vary the block so that no layer below can deduplicate or compress it away.
        buffer[..8].copy_from_slice(&written.to_le_bytes());
        file.write_all_at(&buffer, written)?;
        file.sync_data()?;
        written += DISK_IO_BYTES as u64;
    }
    Ok((written, written as f64 / start.elapsed().as_secs_f64()))
}

/// 1 MiB reads of the whole file, [`DISK_QUEUE_DEPTH`] in flight (one thread each); passes
/// repeat until [`DISK_READ_TIME_MIN`] has passed. Returns the rate.
fn parallel_reads(file: &Arc<File>, file_bytes: u64) -> io::Result<f64> {
    let start = Instant::now();
    let mut read = 0u64;
    while read == 0 || start.elapsed() < DISK_READ_TIME_MIN {
        read += read_pass(file, file_bytes)?;
    }
    Ok(read as f64 / start.elapsed().as_secs_f64())
}

fn read_pass(file: &Arc<File>, file_bytes: u64) -> io::Result<u64> {
    let next_offset = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..DISK_QUEUE_DEPTH)
        .map(|_| {
            let (file, next_offset) = (file.clone(), next_offset.clone());
            std::thread::spawn(move || -> io::Result<u64> {
                let mut buffer = AlignedBuf::zeroed(DISK_IO_BYTES);
                let mut read = 0u64;
                loop {
                    let offset = next_offset.fetch_add(DISK_IO_BYTES as u64, Ordering::Relaxed);
                    if offset >= file_bytes {
                        return Ok(read);
                    }
                    file.read_exact_at(&mut buffer, offset)?;
                    read += DISK_IO_BYTES as u64;
                }
            })
        })
        .collect();
    let mut total = 0;
    for reader in readers {
        total += reader
            .join()
            .map_err(|_| io::Error::other("reader thread panicked"))??;
    }
    Ok(total)
}
