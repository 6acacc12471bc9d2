//! The one door between keeldb and the file system.
//!
//! Every file keeldb opens, writes, syncs, maps, renames or deletes goes through a [`Vfs`]:
//! [`RealFs`] in production, the simulated disk of `storage::sim` in the crash tests, which
//! keeps the bytes a power loss would keep apart from those it might not.
//!
//! Invariant: nothing in the engine calls `std::fs` (or maps a file) except [`RealFs`];
//! a path given to a `Vfs` is always one keeldb built from the database directory.

use std::fmt::Debug;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use memmap2::{Mmap, MmapMut};

/// How a file is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Read only; the file must exist.
    Read,
    /// Read and write; the file must exist.
    ReadWrite,
    /// Read and write a new file; fails if the name exists.
    CreateNew,
    /// Read and write, creating the file or emptying an existing one.
    Replace,
}

/// What a name refers to, without following symlinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symlink, device, socket or anything else keeldb never creates.
    Other,
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's name (lossily converted if it is not UTF-8).
    pub name: String,
    /// What it is.
    pub kind: NodeKind,
}

/// A held exclusive lock; dropping it releases the lock.
pub type LockGuard = Box<dyn Debug + Send + Sync>;

/// A file system.
pub trait Vfs: Debug + Send + Sync {
    /// Opens `path`.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn VfsFile>>;
    /// What `path` is, without following a symlink (`NotFound` if nothing is there).
    fn kind(&self, path: &Path) -> io::Result<NodeKind>;
    /// The entries of directory `dir`, in no particular order.
    fn read_dir(&self, dir: &Path) -> io::Result<Vec<DirEntry>>;
    /// Renames `from` to `to` (same directory), replacing `to` if it is a file.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Unlinks a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Creates a directory; its parent must exist.
    fn create_dir(&self, path: &Path) -> io::Result<()>;
    /// Creates a directory and any missing parents.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Removes a directory and everything in it.
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Makes the creates, renames and unlinks in directory `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes an exclusive lock on the file `path` (creating it), or returns `None` at once
    /// if another holder has it.
    fn try_lock(&self, path: &Path) -> io::Result<Option<LockGuard>>;
}

/// An open file.
#[expect(
    clippy::len_without_is_empty,
    reason = "a file's length is a size in bytes, not a collection's count"
)]
pub trait VfsFile: Debug + Send + Sync {
    /// Reads up to `buf.len()` bytes at `offset`; fewer only at the end of the file.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `offset`, extending the file if needed.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// The file's length.
    fn len(&self) -> io::Result<u64>;
    /// Cuts or extends (with zeros) the file to `len`.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Extends the file to at least `offset + len` with allocated (not sparse) blocks.
    fn allocate(&self, offset: u64, len: u64) -> io::Result<()>;
    /// fdatasync: the data and the length are durable on return.
    fn sync_data(&self) -> io::Result<()>;
    /// fsync: data and metadata are durable on return.
    fn sync_all(&self) -> io::Result<()>;
    /// A hint: start writing the bytes in `offset..offset + len` to the disk now, without
    /// waiting. Durability still takes `sync_data`, which then finds less to write: replay
    /// calls this as it goes, so that the checkpoint after it waits for I/O that overlapped
    /// with replay instead of starting it.
    fn start_writeback(&self, offset: u64, len: u64) -> io::Result<()>;
    /// Maps the whole file for reading and writing.
    fn map_mut(&self) -> io::Result<Box<dyn VfsMap>>;
    /// Maps the whole file for reading only: opening reads its logs and indexes in place
    /// instead of copying each into fresh memory. The file must not shrink while mapped.
    fn map_read(&self) -> io::Result<Box<dyn VfsView>>;
    /// Maps the file for reading with room to grow: `reserve_len` bytes, which may run past
    /// its end, so that bytes written later with [`VfsFile::write_all_at`] show in the
    /// mapping without a remap (the payload log is read this way while it is appended to).
    /// The view's `bytes()` may be longer than the file: the caller must touch only bytes
    /// it knows were written (a page wholly past the end of the file is a SIGBUS), and must
    /// drop the view before cutting the file. A view may also show fewer bytes than were
    /// written (the simulated disk copies the file as it is when mapped); the caller reads
    /// the rest with [`VfsFile::read_at`].
    fn map_read_growing(&self, reserve_len: u64) -> io::Result<Box<dyn VfsView>>;
}

/// A read-only mapping of a whole file.
pub trait VfsView: Debug + Send + Sync {
    /// The mapped bytes.
    fn bytes(&self) -> &[u8];
}

/// A shared mapping of a whole file, read in place and written through [`VfsMap::write`]
/// (so that a simulated disk sees each write). Like any write, one reaches the disk at the
/// file's next `sync_data` at the latest, and (like a kernel writing dirty pages back early)
/// possibly sooner.
pub trait VfsMap: Debug + Send + Sync {
    /// The mapped bytes.
    fn bytes(&self) -> &[u8];
    /// Writes `data` at `offset`; the mapping shows it on return. The caller has checked the
    /// range against `bytes().len()`. On error, any part of `data` may have been written.
    fn write(&mut self, offset: usize, data: &[u8]) -> io::Result<()>;
}

/// The operating system's file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFs;

impl RealFs {
    /// The real file system, shared.
    pub fn shared() -> Arc<dyn Vfs> {
        Arc::new(RealFs)
    }
}

impl Vfs for RealFs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn VfsFile>> {
        let mut options = OpenOptions::new();
        match mode {
            OpenMode::Read => options.read(true),
            OpenMode::ReadWrite => options.read(true).write(true),
            OpenMode::CreateNew => options.read(true).write(true).create_new(true),
            OpenMode::Replace => options.read(true).write(true).create(true).truncate(true),
        };
        Ok(Arc::new(RealFile(options.open(path)?)))
    }

    fn kind(&self, path: &Path) -> io::Result<NodeKind> {
        let file_type = fs::symlink_metadata(path)?.file_type();
        Ok(if file_type.is_file() {
            NodeKind::File
        } else if file_type.is_dir() {
            NodeKind::Dir
        } else {
            NodeKind::Other
        })
    }

    fn read_dir(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let file_type = entry.file_type()?;
            let kind = if file_type.is_file() {
                NodeKind::File
            } else if file_type.is_dir() {
                NodeKind::Dir
            } else {
                NodeKind::Other
            };
            out.push(DirEntry {
                name: entry.file_name().to_string_lossy().into_owned(),
                kind,
            });
        }
        Ok(out)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        fs::create_dir(path)
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir_all(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<LockGuard>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        // flock belongs to the open file description: a second handle in this process is
        // refused like one in another process, and the kernel releases it if we die.
        match file.try_lock() {
            Ok(()) => Ok(Some(Box::new(file))),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }
}

/// A file of the operating system.
#[derive(Debug)]
struct RealFile(File);

impl VfsFile for RealFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut got = 0;
        while got < buf.len() {
            match self.0.read_at(&mut buf[got..], offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(got)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn allocate(&self, offset: u64, len: u64) -> io::Result<()> {
        let too_big = || io::Error::new(io::ErrorKind::InvalidInput, "file size overflow");
        let offset = i64::try_from(offset).map_err(|_| too_big())?;
        let len = i64::try_from(len).map_err(|_| too_big())?;
        match fallocate(&self.0, offset, len) {
            0 => Ok(()),
            rc => Err(io::Error::from_raw_os_error(rc)),
        }
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.0.sync_all()
    }

    fn start_writeback(&self, offset: u64, len: u64) -> io::Result<()> {
        let too_big = || io::Error::new(io::ErrorKind::InvalidInput, "file range overflow");
        let offset = i64::try_from(offset).map_err(|_| too_big())?;
        let len = i64::try_from(len).map_err(|_| too_big())?;
        match sync_file_range_write(&self.0, offset, len) {
            0 => Ok(()),
            _ => Err(io::Error::last_os_error()),
        }
    }

    fn map_mut(&self) -> io::Result<Box<dyn VfsMap>> {
        Ok(Box::new(RealMap {
            map: map_file(&self.0)?,
            file: self.0.try_clone()?,
        }))
    }

    fn map_read(&self) -> io::Result<Box<dyn VfsView>> {
        Ok(Box::new(RealView(map_file_read(&self.0)?)))
    }

    fn map_read_growing(&self, reserve_len: u64) -> io::Result<Box<dyn VfsView>> {
        let len = usize::try_from(reserve_len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "mapping too large"))?;
        Ok(Box::new(RealView(map_file_read_growing(&self.0, len)?)))
    }
}

#[expect(
    unsafe_code,
    reason = "posix_fallocate is a plain libc call on an fd we own"
)]
fn fallocate(file: &File, offset: i64, len: i64) -> i32 {
    // SAFETY: the fd is open and owned by `file` for the duration of the call; the call
    // reads no memory of ours.
    unsafe { libc::posix_fallocate(file.as_raw_fd(), offset, len) }
}

#[expect(
    unsafe_code,
    reason = "sync_file_range is a plain libc call on an fd we own"
)]
fn sync_file_range_write(file: &File, offset: i64, len: i64) -> i32 {
    // SAFETY: the fd is open and owned by `file` for the duration of the call; the call
    // reads no memory of ours.
    unsafe { libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE) }
}

#[expect(unsafe_code, reason = "memory-mapping a file is unsafe by nature")]
fn map_file(file: &File) -> io::Result<MmapMut> {
    // SAFETY: the mapping is only valid while no one truncates or rewrites the file behind
    // our back. keeldb holds an exclusive lock on the database directory while open, the
    // vector file only grows while mapped, and no reference into the mapping outlives a
    // remap (slices borrow the `VectorFile`). keeldb itself rewrites mapped bytes only
    // through `RealMap::write`, which takes `&mut self`, so no slice from `bytes()` is alive
    // while it does. Another program ignoring the lock is outside this contract
    // (docs/ARCHITECTURE.md).
    unsafe { MmapMut::map_mut(file) }
}

#[expect(unsafe_code, reason = "memory-mapping a file is unsafe by nature")]
fn map_file_read(file: &File) -> io::Result<Mmap> {
    // SAFETY: as for `map_file`: keeldb holds the directory's lock, and a file mapped for
    // reading (a log or an index, at open) is neither cut nor rewritten while the mapping
    // lives (callers drop it first).
    unsafe { Mmap::map(file) }
}

#[expect(unsafe_code, reason = "memory-mapping a file is unsafe by nature")]
fn map_file_read_growing(file: &File, len: usize) -> io::Result<Mmap> {
    // SAFETY: as for `map_file_read`, and `VfsFile::map_read_growing` binds the caller to
    // read only bytes it wrote (below the file's end: no page past it is touched, so no
    // SIGBUS) and to drop the mapping before cutting the file. Written bytes are never
    // rewritten while mapped (the payload log only appends), so a slice of them stays valid.
    unsafe { memmap2::MmapOptions::new().len(len).map(file) }
}

/// A read-only mapping of an operating-system file.
#[derive(Debug)]
struct RealView(Mmap);

impl VfsView for RealView {
    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// A shared mapping of an operating-system file, read in place but written with `pwrite` on
/// a descriptor of the same file (the page cache is shared, so the mapping shows each write
/// on return). [`VectorFile`](super::vectors::VectorFile) writes in runs of many slots:
/// a store through the mapping into a fresh page takes a fault that reads the page in (zeros,
/// from the fallocated space) before the store overwrites it, where `pwrite` fills the page
/// cache directly, in large folios for a long write (docs/ARCHITECTURE.md, "Vector
/// writes"). It also reports a failure as an error where a store could only raise SIGBUS.
#[derive(Debug)]
struct RealMap {
    map: MmapMut,
    file: File,
}

impl VfsMap for RealMap {
    fn bytes(&self) -> &[u8] {
        &self.map
    }

    fn write(&mut self, offset: usize, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, offset as u64)
    }
}
