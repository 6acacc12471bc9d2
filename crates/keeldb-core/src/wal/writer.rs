//! Appends framed records to the log, buffering, writing and syncing per [`Durability`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::wal::{
    encode_header, RECORD_FLAG_AFTER_SYNC, RECORD_HEADER_LEN, WAL_HEADER_LEN,
};
use crate::storage::vfs::{OpenMode, Vfs, VfsFile};
use crate::types::Durability;

/// Under [`Durability::None`], buffered log bytes are written out once they pass this size.
pub const BUFFER_BYTES_MAX: usize = 1 << 20;

/// Before a sync, the log makes sure it has zero-filled space ahead of its records: a write
/// into space the file already has changes no metadata, so its fdatasync flushes the data
/// alone, where an append also updates the file size (a metadata write, and a journal
/// commit where there is a journal): fsync one write at a time went from 0.59x to 0.90x of
/// the raw append+fdatasync rate with this and the committer's spin (the run of
/// docs/BENCHMARKS.md at the time; later runs have their own figure). The space is extended
/// by the log's own size (at least `PREALLOC_MIN_BYTES`, at most `PREALLOC_MAX_BYTES`)
/// whenever less than half of that is left, so one sync commits the new length for many;
/// after a checkpoint the log is written over from its start (`WalWriter::reset`), so the
/// space it already has serves again. Writes that are not synced (`Flush`, `None`) append
/// without it: they gain nothing from the zeros, which cost a second copy of every log
/// byte. Replay reads the zeros as the end of the log (docs/FORMAT.md).
pub const PREALLOC_MIN_BYTES: u64 = 64 << 10;
/// See [`PREALLOC_MIN_BYTES`].
pub const PREALLOC_MAX_BYTES: u64 = 8 << 20;

/// The log of one collection, open for appending.
#[derive(Debug)]
pub struct WalWriter {
    path: PathBuf,
    file: Arc<dyn VfsFile>,
    /// Bytes of records in the file (header included); the next write goes here.
    written_len: u64,
    /// Length of the file: zeros from `written_len` on (see [`PREALLOC_MIN_BYTES`]).
    file_len: u64,
    /// Bytes appended but not yet handed to the OS.
    buffer: Vec<u8>,
    /// Whether everything written so far has been fdatasynced.
    synced: bool,
    /// Where the bytes written since the last sync begin (meaningful while `!synced`).
    unsynced_from: u64,
    next_lsn: u64,
    syncs: u64,
}

impl WalWriter {
    /// Creates an empty log (just its header), durable on return; the caller syncs the
    /// directory.
    pub fn create(fs: &dyn Vfs, path: &Path, dimension: u32, uid: u32) -> Result<()> {
        let file = fs
            .open(path, OpenMode::CreateNew)
            .map_err(|e| Error::io("create", path, e))?;
        file.write_all_at(&encode_header(dimension, uid), 0)
            .map_err(|e| Error::io("write", path, e))?;
        file.sync_all().map_err(|e| Error::io("fsync", path, e))?;
        #[cfg(feature = "planted-bugs")]
        crate::planted::record(crate::planted::EventKind::SyncFile, path);
        Ok(())
    }

    /// Wraps a log file that replay has checked: its valid bytes end at `end_offset`, and
    /// nothing after that offset remains (replay truncated any torn tail).
    pub fn new(path: PathBuf, file: Arc<dyn VfsFile>, end_offset: u64, next_lsn: u64) -> Self {
        WalWriter {
            path,
            file,
            written_len: end_offset,
            file_len: end_offset,
            buffer: Vec::new(),
            synced: true,
            unsynced_from: end_offset,
            next_lsn,
            syncs: 0,
        }
    }

    /// The sequence number the next record gets.
    pub fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    /// The flags of the record appended next: [`RECORD_FLAG_AFTER_SYNC`] when everything
    /// before it is durable (nothing buffered, nothing written since the last sync).
    pub fn next_record_flags(&self) -> u8 {
        if self.synced && self.buffer.is_empty() {
            RECORD_FLAG_AFTER_SYNC
        } else {
            0
        }
    }

    /// Size of the log including bytes still buffered.
    pub fn len_bytes(&self) -> u64 {
        self.written_len + self.buffer.len() as u64
    }

    /// Appends a record framed with `lsn == self.next_lsn()`, and returns once it is as
    /// durable as `durability` asks. On error the caller must poison its handle: the bytes
    /// may or may not be in the file.
    pub fn append(&mut self, record: &[u8], durability: Durability) -> Result<()> {
        self.buffer.extend_from_slice(record);
        self.next_lsn += 1;
        self.settle(durability)
    }

    /// Makes everything appended so far as durable as `durability` asks: nothing more for
    /// `None` (until the buffer passes [`BUFFER_BYTES_MAX`]), written out for `Flush`,
    /// written out and fdatasynced for `Fsync`.
    pub fn settle(&mut self, durability: Durability) -> Result<()> {
        match durability {
            Durability::None if self.buffer.len() < BUFFER_BYTES_MAX => Ok(()),
            Durability::None | Durability::Flush => self.write_out(),
            #[cfg(feature = "planted-bugs")]
            Durability::Fsync if crate::planted::active(crate::planted::Bug::AckBeforeFsync) => {
                self.write_out()
            }
            Durability::Fsync => self.sync(),
        }
    }

    /// How many fdatasyncs this log has done since open.
    pub fn syncs(&self) -> u64 {
        self.syncs
    }

    /// Hands buffered bytes to the OS.
    pub fn write_out(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        self.file
            .write_all_at(&self.buffer, self.written_len)
            .map_err(|e| Error::io("write", &self.path, e))?;
        if self.synced {
            self.unsynced_from = self.written_len;
        }
        self.written_len += self.buffer.len() as u64;
        self.buffer.clear();
        self.synced = false;
        self.file_len = self.file_len.max(self.written_len);
        #[cfg(feature = "planted-bugs")]
        crate::planted::record(crate::planted::EventKind::Write, &self.path);
        Ok(())
    }

    /// Extends the zero-filled space ahead of the records if less than half of what the
    /// log's size calls for is left (see [`PREALLOC_MIN_BYTES`]).
    fn extend_zeros(&mut self) -> Result<()> {
        let room = self
            .written_len
            .clamp(PREALLOC_MIN_BYTES, PREALLOC_MAX_BYTES);
        if self.file_len - self.written_len < room / 2 {
            // Zeros, not fallocate: a write into an unwritten extent converts it, which is
            // a metadata change again at the next sync.
            let zeros = vec![0u8; (self.written_len + room - self.file_len) as usize];
            self.file
                .write_all_at(&zeros, self.file_len)
                .map_err(|e| Error::io("write", &self.path, e))?;
            self.file_len += zeros.len() as u64;
        }
        Ok(())
    }

    /// The first half of a sync: hands every appended record to the OS (with the
    /// zero-filled space, if due and `fill`) and starts writing them to the disk, without
    /// waiting. What the caller does before the [`WalWriter::sync`] that must follow overlaps
    /// the disk's work, and the fdatasync then waits only for what is left. The records are
    /// not durable until that sync. Without `fill` (for a caller that holds a lock readers
    /// wait for) the sync extends the zero-filled space instead, if due, before its fdatasync.
    pub fn start_sync(&mut self, fill: bool) -> Result<()> {
        self.write_out()?;
        if !self.synced {
            if fill {
                self.extend_zeros()?;
            }
            // Only a hint: if it fails, the fdatasync writes the bytes itself.
            let _ = self
                .file
                .start_writeback(self.unsynced_from, self.file_len - self.unsynced_from);
        }
        Ok(())
    }

    /// Makes every appended record durable (write, zero-filled space if due, then
    /// fdatasync, which also persists the file's new length).
    pub fn sync(&mut self) -> Result<()> {
        self.write_out()?;
        if !self.synced {
            self.extend_zeros()?;
            #[cfg(feature = "planted-bugs")]
            if crate::planted::failing(crate::planted::Fault::LogSyncEio) {
                let eio = std::io::Error::from_raw_os_error(libc::EIO);
                return Err(Error::io("fdatasync", &self.path, eio));
            }
            self.file
                .sync_data()
                .map_err(|e| Error::io("fdatasync", &self.path, e))?;
            self.synced = true;
            self.syncs += 1;
            #[cfg(feature = "planted-bugs")]
            crate::planted::record(crate::planted::EventKind::SyncFile, &self.path);
        }
        Ok(())
    }

    /// Empties the log after a checkpoint made every record in it redundant: drops the
    /// buffer, and the next record goes right after the header, over the old records. The
    /// file keeps its length and the kernel its cached pages, so the writes that follow
    /// overwrite in place (no metadata at their syncs, no fresh page-cache pages), where
    /// cutting the file made every generation of the log pay for growing it again. The
    /// first record header's worth after the file header is zeroed (not synced) so that a
    /// log emptied and then closed uncleanly reads as empty; if the zeros are lost, replay
    /// finds old records, all at or below the checkpoint, and skips them (docs/FORMAT.md).
    pub fn reset(&mut self) -> Result<()> {
        self.buffer.clear();
        let start = WAL_HEADER_LEN as u64;
        let zeros = [0u8; RECORD_HEADER_LEN];
        let n = (self.file_len.saturating_sub(start) as usize).min(zeros.len());
        if n > 0 {
            self.file
                .write_all_at(&zeros[..n], start)
                .map_err(|e| Error::io("write", &self.path, e))?;
        }
        self.written_len = start;
        self.synced = true;
        Ok(())
    }

    /// Cuts the file back to its header and fsyncs the cut: at close, after the last
    /// checkpoint, so a closed log is just its header and the next open reads nothing.
    pub fn truncate(&mut self) -> Result<()> {
        self.buffer.clear();
        self.file
            .set_len(WAL_HEADER_LEN as u64)
            .map_err(|e| Error::io("truncate", &self.path, e))?;
        #[cfg(feature = "planted-bugs")]
        crate::planted::record(crate::planted::EventKind::Truncate, &self.path);
        self.file
            .sync_data()
            .map_err(|e| Error::io("fdatasync", &self.path, e))?;
        #[cfg(feature = "planted-bugs")]
        crate::planted::record(crate::planted::EventKind::SyncFile, &self.path);
        self.written_len = WAL_HEADER_LEN as u64;
        self.file_len = self.written_len;
        self.synced = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::wal::BatchEncoder;
    use crate::storage::vfs::RealFs;
    use crate::types::Id;

    /// A new log in `dir` with one record appended (buffered).
    fn log_with_a_record(dir: &Path) -> WalWriter {
        let path = dir.join("test.wal");
        WalWriter::create(&RealFs, &path, 2, 7).expect("create");
        let file = RealFs.open(&path, OpenMode::ReadWrite).expect("open");
        let mut wal = WalWriter::new(path, file, WAL_HEADER_LEN as u64, 1);
        let mut batch = BatchEncoder::new(32);
        batch.upsert(&Id::Int(1), &[1.0, 2.0]);
        let record = batch.finish_with_flags(wal.next_lsn(), wal.next_record_flags());
        wal.append(&record, Durability::None).expect("append");
        wal
    }

    #[test]
    fn a_start_without_fill_leaves_the_zero_fill_to_the_sync() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut wal = log_with_a_record(dir.path());
        let on_disk = |wal: &WalWriter| wal.file.len().expect("len");
        wal.start_sync(false).expect("start");
        assert_eq!(on_disk(&wal), wal.len_bytes(), "the records only");
        wal.sync().expect("sync");
        assert!(on_disk(&wal) >= wal.len_bytes() + PREALLOC_MIN_BYTES / 2);

        let other = tempfile::tempdir().expect("tempdir");
        let mut wal = log_with_a_record(other.path());
        wal.start_sync(true).expect("start");
        assert!(on_disk(&wal) >= wal.len_bytes() + PREALLOC_MIN_BYTES / 2);
    }
}
