//! [`FaultDisk`]: an in-memory [`Disk`] that breaks on purpose.
//!
//! Every file keeps two images: the *volatile* one (what reads see: the page cache and the
//! device's write cache) and the *durable* one (what survives power loss). `sync_data` copies
//! the volatile image to the durable one; [`FaultDisk::power_cut`] throws the volatile images
//! away. Directory entries work the same way: a create, rename or remove is durable only after
//! `sync_dir` on its directory. That is the model `docs/formats/segment.md` assumes of a real
//! device, so a store that survives `FaultDisk` survives what that model promises.
//!
//! Faults: EIO on write, ENOSPC after a byte budget (the part that fits lands, as a short
//! write would), a torn write (a prefix of one write lands — durably — and the call fails, as
//! when power fails mid-write), a flipped bit, a failing `fdatasync`, a slow `fdatasync`, and a
//! power cut. It is public so other crates' tests can use it.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use nabu_core::ALIGN_BYTES;

use crate::disk::{DirectIo, Disk, DiskFile, IoMode, OpenOptions};

/// Faults armed on a [`FaultDisk`].
#[derive(Debug, Default, Clone)]
struct FaultPlan {
    write_eio: bool,
    sync_eio: bool,
    space_left_bytes: Option<u64>,
    torn_next_write_bytes: Option<usize>,
    sync_delay: Option<Duration>,
}

/// A file's contents: what reads see and what survives power loss.
#[derive(Debug, Default)]
struct Images {
    volatile: Vec<u8>,
    durable: Vec<u8>,
    /// The lowest volatile offset changed since the last sync.
    dirty_from: usize,
}

impl Images {
    fn write(&mut self, offset: usize, bytes: &[u8]) {
        let end = offset + bytes.len();
        if self.volatile.len() < end {
            self.volatile.resize(end, 0);
        }
        self.volatile[offset..end].copy_from_slice(bytes);
        self.dirty_from = self.dirty_from.min(offset);
    }

    /// Writes `bytes` to both images, as sectors that reached the medium before a failure.
    fn write_through(&mut self, offset: usize, bytes: &[u8]) {
        let dirty_from = self.dirty_from;
        self.write(offset, bytes);
        self.dirty_from = dirty_from;
        let end = offset + bytes.len();
        if self.durable.len() < end {
            self.durable.resize(end, 0);
        }
        self.durable[offset..end].copy_from_slice(bytes);
    }

    fn sync(&mut self) {
        let from = self
            .dirty_from
            .min(self.volatile.len())
            .min(self.durable.len());
        self.durable.resize(self.volatile.len(), 0);
        self.durable[from..].copy_from_slice(&self.volatile[from..]);
        self.dirty_from = self.volatile.len();
    }

    fn lose_unsynced(&mut self) {
        self.volatile.clone_from(&self.durable);
        self.dirty_from = self.volatile.len();
    }
}

type Node = Arc<Mutex<Images>>;

/// The directory tree: entries as reads see them and as they survive power loss.
#[derive(Debug, Default)]
struct Namespace {
    live: BTreeMap<PathBuf, Node>,
    durable: BTreeMap<PathBuf, Node>,
    dirs: BTreeSet<PathBuf>,
}

#[derive(Debug, Default)]
struct Shared {
    /// `true` while powered; held for reading by every operation, for writing by a cut.
    power: RwLock<bool>,
    namespace: Mutex<Namespace>,
    plan: Mutex<FaultPlan>,
    write_calls: AtomicU64,
    sync_calls: AtomicU64,
    bytes_written: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic in another test thread must not hide this one's result.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn eio(what: &str) -> io::Error {
    io::Error::other(format!("injected EIO: {what}"))
}

impl Shared {
    fn powered(&self) -> io::Result<std::sync::RwLockReadGuard<'_, bool>> {
        let on = self
            .power
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if *on {
            Ok(on)
        } else {
            Err(io::Error::from_raw_os_error(libc::EIO))
        }
    }
}

/// An in-memory disk with injectable faults; see the module docs.
#[derive(Debug, Default)]
pub struct FaultDisk {
    shared: Arc<Shared>,
}

impl FaultDisk {
    /// An empty, powered disk with no faults armed.
    pub fn new() -> Arc<Self> {
        let disk = Self::default();
        *disk.shared.power.write().expect("fresh lock") = true;
        Arc::new(disk)
    }

    /// Makes every write fail with EIO (`true`) or stop failing (`false`).
    pub fn set_write_eio(&self, fail: bool) {
        lock(&self.shared.plan).write_eio = fail;
    }

    /// Makes every `sync_data` fail with EIO (`true`) or stop failing (`false`).
    pub fn set_sync_eio(&self, fail: bool) {
        lock(&self.shared.plan).sync_eio = fail;
    }

    /// Lets only `bytes` more bytes be written (then ENOSPC); `None` removes the limit.
    pub fn set_space_left(&self, bytes: Option<u64>) {
        lock(&self.shared.plan).space_left_bytes = bytes;
    }

    /// Tears the next write: its first `prefix_bytes` land durably and the call fails with EIO.
    pub fn tear_next_write(&self, prefix_bytes: usize) {
        lock(&self.shared.plan).torn_next_write_bytes = Some(prefix_bytes);
    }

    /// Makes each `sync_data` take `delay`, like a real device flush.
    pub fn set_sync_delay(&self, delay: Option<Duration>) {
        lock(&self.shared.plan).sync_delay = delay;
    }

    /// Flips bit `bit` (0–7) of the byte at `offset` of `path`, in both images.
    pub fn flip_bit(&self, path: &Path, offset: u64, bit: u8) -> io::Result<()> {
        let node = self.node(path)?;
        let mut images = lock(&node);
        let images = &mut *images;
        let offset = usize::try_from(offset).expect("in-memory offset");
        for image in [&mut images.volatile, &mut images.durable] {
            if let Some(byte) = image.get_mut(offset) {
                *byte ^= 1 << (bit % 8);
            }
        }
        Ok(())
    }

    /// The bytes reads of `path` see now.
    pub fn file_bytes(&self, path: &Path) -> io::Result<Vec<u8>> {
        let node = self.node(path)?;
        let bytes = lock(&node).volatile.clone();
        Ok(bytes)
    }

    /// The paths of all files, as reads see them now.
    pub fn files(&self) -> Vec<PathBuf> {
        lock(&self.shared.namespace).live.keys().cloned().collect()
    }

    /// Cuts power: every byte and directory entry not made durable is lost, and every
    /// operation fails with EIO until [`FaultDisk::power_on`].
    pub fn power_cut(&self) {
        let mut on = self
            .shared
            .power
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *on = false;
        let mut namespace = lock(&self.shared.namespace);
        for node in namespace.live.values().chain(namespace.durable.values()) {
            lock(node).lose_unsynced();
        }
        namespace.live = namespace.durable.clone();
    }

    /// Restores power after [`FaultDisk::power_cut`]; the disk holds what was durable.
    pub fn power_on(&self) {
        *self
            .shared
            .power
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = true;
    }

    /// Calls of `write_at`/`write_vectored_at` so far.
    pub fn write_calls(&self) -> u64 {
        self.shared.write_calls.load(Ordering::Relaxed)
    }

    /// Calls of `sync_data` so far.
    pub fn sync_calls(&self) -> u64 {
        self.shared.sync_calls.load(Ordering::Relaxed)
    }

    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.shared.bytes_written.load(Ordering::Relaxed)
    }

    fn node(&self, path: &Path) -> io::Result<Node> {
        lock(&self.shared.namespace)
            .live
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    fn parent_exists(namespace: &Namespace, path: &Path) -> bool {
        path.parent()
            .is_none_or(|parent| namespace.dirs.contains(parent))
    }
}

impl Disk for FaultDisk {
    fn open(&self, path: &Path, options: OpenOptions) -> io::Result<Box<dyn DiskFile>> {
        let _on = self.shared.powered()?;
        let mut namespace = lock(&self.shared.namespace);
        let node = match namespace.live.get(path) {
            Some(node) => node.clone(),
            None if options.create && Self::parent_exists(&namespace, path) => {
                let node = Node::default();
                namespace.live.insert(path.to_path_buf(), node.clone());
                node
            }
            None => return Err(io::Error::from(io::ErrorKind::NotFound)),
        };
        let mode = match options.direct_io {
            DirectIo::Off => IoMode::Buffered,
            DirectIo::Auto | DirectIo::Required => IoMode::Direct,
        };
        Ok(Box::new(FaultFile {
            shared: self.shared.clone(),
            node,
            mode,
        }))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let _on = self.shared.powered()?;
        let mut namespace = lock(&self.shared.namespace);
        if namespace.live.contains_key(path) {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        namespace
            .dirs
            .extend(path.ancestors().map(Path::to_path_buf));
        Ok(())
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<OsString>> {
        let _on = self.shared.powered()?;
        let namespace = lock(&self.shared.namespace);
        if !namespace.dirs.contains(path) {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        let files = namespace
            .live
            .keys()
            .filter(|file| file.parent() == Some(path));
        let dirs = namespace
            .dirs
            .iter()
            .filter(|dir| dir.parent() == Some(path));
        Ok(files
            .chain(dirs)
            .filter_map(|entry| entry.file_name())
            .map(OsString::from)
            .collect())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let _on = self.shared.powered()?;
        let mut namespace = lock(&self.shared.namespace);
        namespace
            .live
            .remove(path)
            .map(drop)
            .ok_or_else(|| io::ErrorKind::NotFound.into())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let _on = self.shared.powered()?;
        let mut namespace = lock(&self.shared.namespace);
        let node = namespace.live.remove(from).ok_or(io::ErrorKind::NotFound)?;
        namespace.live.insert(to.to_path_buf(), node);
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let _on = self.shared.powered()?;
        let mut namespace = lock(&self.shared.namespace);
        let namespace = &mut *namespace;
        namespace
            .durable
            .retain(|file, _| file.parent() != Some(path));
        for (file, node) in &namespace.live {
            if file.parent() == Some(path) {
                namespace.durable.insert(file.clone(), node.clone());
            }
        }
        Ok(())
    }
}

/// A file of a [`FaultDisk`].
#[derive(Debug)]
struct FaultFile {
    shared: Arc<Shared>,
    node: Node,
    mode: IoMode,
}

impl FaultFile {
    /// Rejects what `O_DIRECT` would reject: unaligned offsets, lengths or addresses.
    fn check_alignment(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let aligned = offset.is_multiple_of(ALIGN_BYTES as u64)
            && buf.len().is_multiple_of(ALIGN_BYTES)
            && (buf.as_ptr() as usize).is_multiple_of(ALIGN_BYTES);
        if self.mode == IoMode::Direct && !aligned {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        Ok(())
    }

    fn write_faulty(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
        let _on = self.shared.powered()?;
        let offset = usize::try_from(offset).expect("in-memory offset");
        let mut plan = lock(&self.shared.plan);
        let mut images = lock(&self.node);
        self.shared.write_calls.fetch_add(1, Ordering::Relaxed);
        if plan.write_eio {
            return Err(eio("write"));
        }
        if let Some(prefix) = plan.torn_next_write_bytes.take() {
            images.write_through(offset, &bytes[..prefix.min(bytes.len())]);
            return Err(eio("torn write"));
        }
        if let Some(left) = plan.space_left_bytes.as_mut() {
            let fits = usize::try_from(*left)
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            *left -= fits as u64;
            if fits < bytes.len() {
                images.write(offset, &bytes[..fits]);
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
        }
        images.write(offset, bytes);
        self.shared
            .bytes_written
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

impl DiskFile for FaultFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let _on = self.shared.powered()?;
        self.check_alignment(offset, buf)?;
        let images = lock(&self.node);
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(images.volatile.len());
        let available = &images.volatile[start..];
        let read = available.len().min(buf.len());
        buf[..read].copy_from_slice(&available[..read]);
        Ok(read)
    }

    fn read_vectored_at(&self, bufs: &mut [&mut [u8]], offset: u64) -> io::Result<usize> {
        let mut total = 0;
        for buf in bufs.iter_mut() {
            let wanted = buf.len();
            let read = self.read_at(buf, offset + total as u64)?;
            total += read;
            if read < wanted {
                break;
            }
        }
        Ok(total)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.check_alignment(offset, buf)?;
        self.write_faulty(buf, offset)
    }

    fn write_vectored_at(&self, bufs: &[&[u8]], offset: u64) -> io::Result<()> {
        for buf in bufs {
            self.check_alignment(offset, buf)?;
        }
        self.write_faulty(&bufs.concat(), offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        let delay = {
            let _on = self.shared.powered()?;
            self.shared.sync_calls.fetch_add(1, Ordering::Relaxed);
            let plan = lock(&self.shared.plan);
            if plan.sync_eio {
                return Err(eio("fdatasync"));
            }
            plan.sync_delay
        };
        if let Some(delay) = delay {
            std::thread::sleep(delay);
        }
        let _on = self.shared.powered()?;
        lock(&self.node).sync();
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        let _on = self.shared.powered()?;
        Ok(lock(&self.node).volatile.len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let _on = self.shared.powered()?;
        let len = usize::try_from(len).expect("in-memory length");
        let mut images = lock(&self.node);
        images.volatile.resize(len, 0);
        images.dirty_from = images.dirty_from.min(len);
        Ok(())
    }

    fn io_mode(&self) -> IoMode {
        self.mode
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nabu_core::AlignedBuf;

    const CREATE: OpenOptions = OpenOptions {
        create: true,
        direct_io: DirectIo::Auto,
    };

    #[test]
    fn power_cut_keeps_only_synced_bytes_and_entries() {
        let disk = FaultDisk::new();
        disk.create_dir_all(Path::new("/d")).expect("mkdir");
        let synced = disk.open(Path::new("/d/synced"), CREATE).expect("open");
        let page = AlignedBuf::copy_from(&[7u8; 4096]);
        synced.write_at(page.as_full(), 0).expect("write");
        synced.sync_data().expect("sync");
        disk.sync_dir(Path::new("/d")).expect("sync dir");
        synced.write_at(page.as_full(), 4096).expect("write");
        let unlisted = disk.open(Path::new("/d/unlisted"), CREATE).expect("open");
        unlisted.write_at(page.as_full(), 0).expect("write");
        unlisted.sync_data().expect("sync");

        disk.power_cut();
        assert!(synced.len().is_err(), "a powered-off disk fails every call");
        disk.power_on();
        assert_eq!(disk.files(), vec![PathBuf::from("/d/synced")]);
        assert_eq!(
            disk.file_bytes(Path::new("/d/synced")).expect("read"),
            vec![7u8; 4096]
        );
    }

    #[test]
    fn direct_mode_rejects_unaligned_io() {
        let disk = FaultDisk::new();
        disk.create_dir_all(Path::new("/d")).expect("mkdir");
        let file = disk.open(Path::new("/d/f"), CREATE).expect("open");
        let page = AlignedBuf::copy_from(&[1u8; 4096]);
        assert!(file.write_at(&page[..100], 0).is_err());
        assert!(file.write_at(page.as_full(), 100).is_err());
        file.write_at(page.as_full(), 0).expect("aligned write");
    }

    #[test]
    fn space_budget_lands_a_prefix_then_fails() {
        let disk = FaultDisk::new();
        disk.create_dir_all(Path::new("/d")).expect("mkdir");
        let file = disk.open(Path::new("/d/f"), CREATE).expect("open");
        disk.set_space_left(Some(4096));
        let pages = AlignedBuf::copy_from(&[3u8; 8192]);
        let error = file.write_at(pages.as_full(), 0).expect_err("no space");
        assert!(crate::disk::is_no_space(&error));
        assert_eq!(file.len().expect("len"), 4096);
    }
}
