//! The I/O seam: every byte the store moves to or from a device goes through [`Disk`] and
//! [`DiskFile`].
//!
//! Why a seam: crash safety is only as good as the tests that break the disk on purpose. The
//! production implementation, [`RealDisk`], is a thin layer over positioned I/O
//! (`pread`/`pwrite`/`preadv`/`pwritev`, `fdatasync`) with `O_DIRECT` where the filesystem
//! takes it; the test implementation, [`crate::fault::FaultDisk`], keeps files in memory and
//! can fail writes, run out of space, tear writes, flip bits, fail `fdatasync` and cut power.
//!
//! All methods take `&self` and are positioned (no shared file cursor), so one open file can
//! serve many reader threads and one writer thread at once.

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// Whether to bypass the page cache with `O_DIRECT`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DirectIo {
    /// Try `O_DIRECT`; fall back to buffered I/O when the filesystem refuses it (`EINVAL`,
    /// as tmpfs does).
    #[default]
    Auto,
    /// Use `O_DIRECT` or fail to open.
    Required,
    /// Always use the page cache.
    Off,
}

/// The I/O mode an open file actually got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoMode {
    /// `O_DIRECT`: offsets, lengths and buffer addresses must be 4 KiB-aligned.
    Direct,
    /// Through the page cache.
    Buffered,
}

/// How to open a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenOptions {
    /// Create the file if it does not exist.
    pub create: bool,
    /// Whether to ask for `O_DIRECT`.
    pub direct_io: DirectIo,
}

/// A filesystem as the store sees it: files by path, and the few directory operations whose
/// durability matters (`sync_dir` after a create, rename or remove).
pub trait Disk: Send + Sync + fmt::Debug {
    /// Opens `path` for reading and writing.
    fn open(&self, path: &Path, options: OpenOptions) -> io::Result<Box<dyn DiskFile>>;
    /// Creates `path` and its parents if missing.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// The names of the entries directly inside `path`.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<OsString>>;
    /// Removes the file at `path` (durable only after [`Disk::sync_dir`]).
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Renames `from` to `to`, replacing `to` (durable only after [`Disk::sync_dir`]).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the entries of directory `path` durable (`fsync` on the directory).
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Holds directory `path` for this store alone until the returned guard drops, or fails
    /// with [`io::ErrorKind::WouldBlock`] while another holder has it. Disks no other
    /// process can see (the fault-injecting test disk) need no lock and hold nothing.
    fn lock_dir(&self, path: &Path) -> io::Result<Option<File>> {
        let _ = path;
        Ok(None)
    }
}

/// The file in each data dir whose advisory lock (`flock`) marks the dir as in use.
pub const LOCK_FILE_NAME: &str = "LOCK";

/// One open file, positioned I/O only.
///
/// `read_at` and `write_at` move whole buffers or fail: a short read means end of file, and is
/// reported as the count read; a short write is retried until done or an error occurs.
pub trait DiskFile: Send + Sync + fmt::Debug {
    /// Reads into `buf` from `offset`; returns the bytes read, fewer than `buf.len()` only at
    /// end of file.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Reads into `bufs` in order, as one contiguous range starting at `offset`; returns the
    /// bytes read, fewer than the total only at end of file.
    fn read_vectored_at(&self, bufs: &mut [&mut [u8]], offset: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `offset`.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Writes all of `bufs`, in order, as one contiguous range starting at `offset`.
    fn write_vectored_at(&self, bufs: &[&[u8]], offset: u64) -> io::Result<()>;
    /// `fdatasync`: makes the file's data, and its size if that changed, durable.
    fn sync_data(&self) -> io::Result<()>;
    /// The file's length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Truncates or extends (with zeros) the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// The I/O mode the file was opened with.
    fn io_mode(&self) -> IoMode;

    /// Reads exactly `buf.len()` bytes at `offset`, or fails with `UnexpectedEof`.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let wanted = buf.len();
        let read = self.read_at(buf, offset)?;
        short_read_check(read, wanted)
    }

    /// Reads exactly the total length of `bufs` at `offset`, or fails with `UnexpectedEof`.
    fn read_exact_vectored_at(&self, bufs: &mut [&mut [u8]], offset: u64) -> io::Result<()> {
        let wanted = bufs.iter().map(|buf| buf.len()).sum();
        let read = self.read_vectored_at(bufs, offset)?;
        short_read_check(read, wanted)
    }
}

fn short_read_check(read: usize, wanted: usize) -> io::Result<()> {
    if read == wanted {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("read {read} of {wanted} bytes before end of file"),
        ))
    }
}

/// Whether `error` means the device is out of space.
pub fn is_no_space(error: &io::Error) -> bool {
    error.raw_os_error() == Some(libc::ENOSPC) || error.kind() == io::ErrorKind::StorageFull
}

/// The operating system's filesystem.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealDisk;

impl RealDisk {
    /// A handle to the real filesystem.
    pub fn new() -> Self {
        Self
    }

    fn open_with(path: &Path, create: bool, direct: bool) -> io::Result<File> {
        let mut options = fs::OpenOptions::new();
        options.read(true).write(true).create(create);
        if direct {
            options.custom_flags(libc::O_DIRECT);
        }
        options.open(path)
    }
}

impl Disk for RealDisk {
    fn open(&self, path: &Path, options: OpenOptions) -> io::Result<Box<dyn DiskFile>> {
        let (file, mode) = match options.direct_io {
            DirectIo::Off => (
                Self::open_with(path, options.create, false)?,
                IoMode::Buffered,
            ),
            DirectIo::Required => (Self::open_with(path, options.create, true)?, IoMode::Direct),
            DirectIo::Auto => match Self::open_with(path, options.create, true) {
                Ok(file) => (file, IoMode::Direct),
                Err(error) if error.raw_os_error() == Some(libc::EINVAL) => (
                    Self::open_with(path, options.create, false)?,
                    IoMode::Buffered,
                ),
                Err(error) => return Err(error),
            },
        };
        Ok(Box::new(RealFile { file, mode }))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }

    /// An exclusive `flock` on `path/LOCK`: the kernel drops it when the holder closes the
    /// file or dies, so a crashed node never leaves a stale lock behind.
    fn lock_dir(&self, path: &Path) -> io::Result<Option<File>> {
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path.join(LOCK_FILE_NAME))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(fs::TryLockError::WouldBlock) => Err(io::ErrorKind::WouldBlock.into()),
            Err(fs::TryLockError::Error(error)) => Err(error),
        }
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<OsString>> {
        fs::read_dir(path)?
            .map(|entry| entry.map(|entry| entry.file_name()))
            .collect()
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }
}

/// A file opened by [`RealDisk`].
#[derive(Debug)]
struct RealFile {
    file: File,
    mode: IoMode,
}

/// The most slices one `preadv`/`pwritev` call takes (Linux `IOV_MAX`).
const IOV_MAX: usize = 1024;

/// Where a vectored transfer stands: the slice it is in and the bytes done of that slice.
#[derive(Clone, Copy, Default)]
struct VectorCursor {
    slice: usize,
    done_in_slice: usize,
}

impl VectorCursor {
    /// Moves past `bytes` transferred bytes and any empty slices.
    fn advance(&mut self, lengths: &[usize], mut bytes: usize) {
        while self.slice < lengths.len() {
            let remaining = lengths[self.slice] - self.done_in_slice;
            if bytes < remaining {
                self.done_in_slice += bytes;
                return;
            }
            bytes -= remaining;
            self.slice += 1;
            self.done_in_slice = 0;
        }
    }
}

impl RealFile {
    fn offset_for_libc(offset: u64) -> io::Result<libc::off_t> {
        libc::off_t::try_from(offset)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))
    }

    /// Runs one `preadv` (`write == false`) or `pwritev` over `iovecs`, retrying `EINTR`.
    fn transfer(&self, iovecs: &[libc::iovec], offset: u64, write: bool) -> io::Result<usize> {
        let offset = Self::offset_for_libc(offset)?;
        let count = libc::c_int::try_from(iovecs.len()).expect("at most IOV_MAX slices");
        loop {
            let done = if write {
                // SAFETY: every iovec points into a live `&[u8]` borrowed by the caller for the
                // whole call, and the kernel only reads from them.
                unsafe { libc::pwritev(self.file.as_raw_fd(), iovecs.as_ptr(), count, offset) }
            } else {
                // SAFETY: every iovec points into a live `&mut [u8]` borrowed exclusively by
                // the caller for the whole call; the kernel writes at most `iov_len` bytes each.
                unsafe { libc::preadv(self.file.as_raw_fd(), iovecs.as_ptr(), count, offset) }
            };
            if let Ok(done) = usize::try_from(done) {
                return Ok(done);
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(error);
            }
        }
    }

    fn iovecs(starts: &[*mut u8], lengths: &[usize], cursor: VectorCursor) -> Vec<libc::iovec> {
        (cursor.slice..starts.len())
            .take(IOV_MAX)
            .map(|index| {
                let skip = if index == cursor.slice {
                    cursor.done_in_slice
                } else {
                    0
                };
                libc::iovec {
                    // SAFETY: skip <= lengths[index], so the pointer stays inside the slice.
                    iov_base: unsafe { starts[index].add(skip) }.cast(),
                    iov_len: lengths[index] - skip,
                }
            })
            .collect()
    }
}

impl DiskFile for RealFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(read) => done += read,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        Ok(done)
    }

    fn read_vectored_at(&self, bufs: &mut [&mut [u8]], offset: u64) -> io::Result<usize> {
        let lengths: Vec<usize> = bufs.iter().map(|buf| buf.len()).collect();
        let starts: Vec<*mut u8> = bufs.iter_mut().map(|buf| buf.as_mut_ptr()).collect();
        let mut cursor = VectorCursor::default();
        let mut total = 0;
        while cursor.slice < bufs.len() {
            let iovecs = Self::iovecs(&starts, &lengths, cursor);
            let read = self.transfer(&iovecs, offset + total as u64, false)?;
            if read == 0 {
                break;
            }
            total += read;
            cursor.advance(&lengths, read);
        }
        Ok(total)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    fn write_vectored_at(&self, bufs: &[&[u8]], offset: u64) -> io::Result<()> {
        let lengths: Vec<usize> = bufs.iter().map(|buf| buf.len()).collect();
        // The pointers are only ever read through (pwritev); *mut is what iovec wants.
        let starts: Vec<*mut u8> = bufs.iter().map(|buf| buf.as_ptr().cast_mut()).collect();
        let mut cursor = VectorCursor::default();
        cursor.advance(&lengths, 0);
        let mut total = 0;
        while cursor.slice < bufs.len() {
            let iovecs = Self::iovecs(&starts, &lengths, cursor);
            let written = self.transfer(&iovecs, offset + total as u64, true)?;
            if written == 0 {
                return Err(io::Error::from(io::ErrorKind::WriteZero));
            }
            total += written;
            cursor.advance(&lengths, written);
        }
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn io_mode(&self) -> IoMode {
        self.mode
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nabu_core::AlignedBuf;

    fn open(dir: &Path, name: &str) -> Box<dyn DiskFile> {
        let options = OpenOptions {
            create: true,
            direct_io: DirectIo::Auto,
        };
        RealDisk::new()
            .open(&dir.join(name), options)
            .expect("open")
    }

    #[test]
    fn vectored_writes_and_reads_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = open(dir.path(), "data");
        let first = AlignedBuf::copy_from(&[1u8; 4096]);
        let second = AlignedBuf::copy_from(&[2u8; 8192]);
        file.write_vectored_at(&[first.as_full(), second.as_full()], 4096)
            .expect("write");
        file.sync_data().expect("sync");
        assert_eq!(file.len().expect("len"), 4096 * 4);
        let mut head = AlignedBuf::zeroed(4096);
        let mut tail = AlignedBuf::zeroed(8192);
        let read = file
            .read_vectored_at(&mut [head.as_full_mut(), tail.as_full_mut()], 4096)
            .expect("read");
        assert_eq!(read, 4096 * 3);
        assert_eq!(head, first);
        assert_eq!(tail, second);
        let mut past_end = AlignedBuf::zeroed(8192);
        assert_eq!(
            file.read_at(past_end.as_full_mut(), 4096 * 3)
                .expect("read"),
            4096
        );
        assert!(
            file.read_exact_at(past_end.as_full_mut(), 4096 * 3)
                .is_err()
        );
    }

    #[test]
    fn directory_operations_work() {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = RealDisk::new();
        drop(open(dir.path(), "a"));
        disk.rename(&dir.path().join("a"), &dir.path().join("b"))
            .expect("rename");
        disk.sync_dir(dir.path()).expect("sync dir");
        assert_eq!(
            disk.list_dir(dir.path()).expect("list"),
            vec![OsString::from("b")]
        );
        disk.remove_file(&dir.path().join("b")).expect("remove");
        assert!(disk.list_dir(dir.path()).expect("list").is_empty());
    }

    #[test]
    fn direct_io_falls_back_only_in_auto_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = open(dir.path(), "probe");
        let off = OpenOptions {
            create: true,
            direct_io: DirectIo::Off,
        };
        let buffered = RealDisk::new()
            .open(&dir.path().join("plain"), off)
            .expect("open");
        assert_eq!(buffered.io_mode(), IoMode::Buffered);
        // Either mode is fine for Auto; Required must agree with what Auto found.
        let required = OpenOptions {
            create: true,
            direct_io: DirectIo::Required,
        };
        let strict = RealDisk::new().open(&dir.path().join("strict"), required);
        assert_eq!(strict.is_ok(), file.io_mode() == IoMode::Direct);
    }
}
