//! The vector file: fixed-size f32 slots after a header page, read through a shared
//! mapping and written in runs.
//!
//! Invariants:
//! - every slot access is checked against the mapped length before it happens;
//! - the file only grows while open, geometrically (at least 2x, at least
//!   [`GROWTH_FLOOR_BYTES`]), and the new range is allocated with `posix_fallocate`, so (on
//!   a file system that writes in place) a slot write never fails for want of space and a
//!   read through the mapping never hits a hole (which would be a SIGBUS);
//! - callers never write a slot that the last checkpoint's index refers to (the collection
//!   hands out slots copy-on-write), so an unsynced page written back early can only touch
//!   bytes that replay rewrites or that nothing on disk refers to;
//! - slot writes are gathered into runs of consecutive slots and reach the file, one write
//!   per run, at [`VectorFile::finish_writes`] at the latest: until then the slots read as
//!   they were, so callers write only slots nothing refers to, and finish before anything
//!   reads them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::fsio;
use super::vfs::{OpenMode, Vfs, VfsFile, VfsMap};
use crate::error::{Error, Result};
use crate::format::vectors::{
    decode_header, encode_header, VECTORS_HEADER_LEN, VECTORS_MAGIC, VECTORS_VERSION,
};
use crate::format::{f32s_from_le, peek_version, put_f32s};

// Search reads the little-endian slots in place as native f32 ([`VectorFile::slots_f32`]).
#[cfg(not(target_endian = "little"))]
compile_error!(
    "keeldb reads its little-endian vector file in place: big-endian targets are not supported"
);

/// Size of a new vector file.
pub const INITIAL_BYTES: u64 = 16 << 20;
/// The smallest step the file grows by.
pub const GROWTH_FLOOR_BYTES: u64 = 64 << 20;
/// The longest run of slots gathered before it is written. Replay writes runs this long; a
/// group commit's run is its records' vectors (tens of KiB). The buffer stays below the
/// allocator's huge blocks, which come back as fresh pages each time (see
/// `format::CHUNK_BYTES`), and grows to at most this and one vector.
const RUN_MAX_BYTES: usize = 256 << 10;

/// An open, mapped vector file.
#[derive(Debug)]
pub struct VectorFile {
    path: PathBuf,
    file: Arc<dyn VfsFile>,
    map: Box<dyn VfsMap>,
    slot_bytes: usize,
    /// Slots written but not yet in the file: consecutive, from byte `run_start`. One
    /// write per run, not per slot: on Linux a write of many pages fills the page cache in
    /// large folios at a fraction of the per-page cost of small writes or of stores through
    /// the mapping into fresh pages (docs/ARCHITECTURE.md, "Vector writes").
    run: Vec<u8>,
    run_start: usize,
}

impl VectorFile {
    /// Creates a vector file of [`INITIAL_BYTES`] for vectors of `dimension`, durable on
    /// return (the caller syncs the directory).
    pub fn create(fs: &dyn Vfs, path: &Path, dimension: u32, uid: u32) -> Result<()> {
        let file = fs
            .open(path, OpenMode::CreateNew)
            .map_err(|e| Error::io("create", path, e))?;
        file.write_all_at(&encode_header(dimension, uid), 0)
            .map_err(|e| Error::io("write", path, e))?;
        allocate(&*file, path, VECTORS_HEADER_LEN as u64, INITIAL_BYTES)?;
        file.sync_all().map_err(|e| Error::io("fsync", path, e))?;
        #[cfg(feature = "planted-bugs")]
        crate::planted::record(crate::planted::EventKind::SyncFile, path);
        Ok(())
    }

    /// Opens and maps the vector file of a collection of `dimension` and `uid`.
    pub fn open(fs: &dyn Vfs, path: &Path, dimension: u32, uid: u32) -> Result<VectorFile> {
        let file = fsio::open_regular_rw(fs, path)?;
        let len = file.len().map_err(|e| Error::io("stat", path, e))?;
        if len < VECTORS_HEADER_LEN as u64 {
            return Err(Error::corrupted(
                path,
                len,
                format!(
                    "vector file is {len} bytes, shorter than its {VECTORS_HEADER_LEN}-byte header"
                ),
            ));
        }
        let map = map_file(&*file, path)?;
        // A newer version is refused as such before its header is checked with this
        // build's layout.
        if let Some(version) =
            peek_version(map.bytes(), &VECTORS_MAGIC).filter(|v| *v > VECTORS_VERSION)
        {
            return Err(Error::UnsupportedVersion {
                file: path.into(),
                what: "format version",
                found: version,
                supported: VECTORS_VERSION,
            });
        }
        let (_version, found_dimension, found_uid) =
            decode_header(map.bytes()).map_err(|e| Error::corrupted(path, e.offset, e.reason))?;
        fsio::check_uid(path, 16, uid, found_uid)?;
        if found_dimension != dimension {
            return Err(Error::corrupted(
                path,
                12,
                format!("dimension {found_dimension} differs from the collection's {dimension}"),
            ));
        }
        Ok(VectorFile {
            path: path.into(),
            file,
            map,
            slot_bytes: dimension as usize * 4,
            run: Vec::new(),
            run_start: 0,
        })
    }

    /// Floats per slot.
    pub fn dimension(&self) -> usize {
        self.slot_bytes / 4
    }

    /// How many slots fit in the file as it is now.
    pub fn capacity_slots(&self) -> u64 {
        ((self.map.bytes().len() - VECTORS_HEADER_LEN) / self.slot_bytes) as u64
    }

    /// Size of the file in bytes.
    pub fn len_bytes(&self) -> u64 {
        self.map.bytes().len() as u64
    }

    /// Makes sure slots `0..slot_count` exist, growing the file if they do not.
    pub fn reserve(&mut self, slot_count: u64) -> Result<()> {
        if slot_count <= self.capacity_slots() {
            return Ok(());
        }
        let needed = slot_count
            .checked_mul(self.slot_bytes as u64)
            .and_then(|b| b.checked_add(VECTORS_HEADER_LEN as u64))
            .ok_or_else(|| Error::invalid(format!("{slot_count} slots overflow the file size")))?;
        let old_len = self.len_bytes();
        let new_len = needed
            .max(old_len.saturating_mul(2))
            .max(old_len + GROWTH_FLOOR_BYTES);
        allocate(&*self.file, &self.path, old_len, new_len)?;
        self.map = map_file(&*self.file, &self.path)?;
        Ok(())
    }

    fn slot_range(&self, slot: u32) -> Result<std::ops::Range<usize>> {
        let start = VECTORS_HEADER_LEN + slot as usize * self.slot_bytes;
        let end = start + self.slot_bytes;
        if end > self.map.bytes().len() {
            return Err(Error::corrupted(
                &self.path,
                start as u64,
                format!(
                    "slot {slot} lies beyond the end of the {}-byte file",
                    self.map.bytes().len()
                ),
            ));
        }
        debug_assert_eq!(start % 4, 0, "slots are f32-aligned");
        Ok(start..end)
    }

    /// Writes little-endian vector bytes (exactly one slot's worth) into `slot`: gathered
    /// into the current run, so the slot holds them only after [`VectorFile::finish_writes`]
    /// (or an error from this call or that one, after which any slot written since the
    /// last finish may hold anything).
    pub fn write_slot_le(&mut self, slot: u32, vector_le: &[u8]) -> Result<()> {
        let range = match self.slot_range(slot) {
            Ok(range) => range,
            Err(e) => {
                self.run.clear();
                return Err(e);
            }
        };
        debug_assert_eq!(vector_le.len(), self.slot_bytes);
        if !self.run.is_empty() && range.start != self.run_start + self.run.len() {
            self.finish_writes()?;
        }
        if self.run.is_empty() {
            self.run_start = range.start;
        }
        super::reserve_capped(&mut self.run, vector_le.len(), RUN_MAX_BYTES);
        self.run.extend_from_slice(vector_le);
        if self.run.len() >= RUN_MAX_BYTES {
            self.finish_writes()?;
        }
        Ok(())
    }

    /// [`VectorFile::write_slot_le`] for a vector of floats.
    pub fn write_slot(&mut self, slot: u32, vector: &[f32]) -> Result<()> {
        debug_assert_eq!(vector.len() * 4, self.slot_bytes);
        // Little-endian targets only (checked at compile time above): the f32s' own bytes
        // are the slot's.
        self.write_slot_le(slot, bytemuck::cast_slice(vector))
    }

    /// Writes the run gathered so far, so that every slot written holds its vector.
    pub fn finish_writes(&mut self) -> Result<()> {
        if self.run.is_empty() {
            return Ok(());
        }
        let run = std::mem::take(&mut self.run);
        let written = self.write_at(self.run_start, &run);
        self.run = run;
        self.run.clear();
        written
    }

    /// [`VectorFile::finish_writes`], then frees the run's buffer: for replay, which gathers
    /// 256 KiB at a time, where a commit group's runs are tens of KiB (a collection keeps the
    /// buffer its largest group needed).
    pub fn finish_bulk_writes(&mut self) -> Result<()> {
        let finished = self.finish_writes();
        self.run = Vec::new();
        finished
    }

    fn write_at(&mut self, offset: usize, bytes: &[u8]) -> Result<()> {
        #[cfg(feature = "planted-bugs")]
        if crate::planted::failing(crate::planted::Fault::VectorWriteEio) {
            let eio = std::io::Error::from_raw_os_error(libc::EIO);
            return Err(Error::io("write", &self.path, eio));
        }
        self.map
            .write(offset, bytes)
            .map_err(|e| Error::io("write", &self.path, e))
    }

    /// Starts writing the slots written so far back to the disk, without waiting (see
    /// `VfsFile::start_writeback`). Only a hint: a failure shows at the next sync, if at all.
    pub fn start_writeback(&self) {
        let _ = self.file.start_writeback(0, self.len_bytes());
    }

    /// Copies the vector in `slot` into `out`, which holds exactly one vector: a caller
    /// that has its own buffer (a JavaScript `Float32Array`) gets one copy, no allocation.
    pub fn read_slot_into(&self, slot: u32, out: &mut [f32]) -> Result<()> {
        let range = self.slot_range(slot)?;
        debug_assert_eq!(out.len() * 4, self.slot_bytes);
        // Little-endian targets only (checked at compile time above): the slot's bytes are
        // the f32s' own.
        bytemuck::cast_slice_mut::<f32, u8>(out).copy_from_slice(&self.map.bytes()[range]);
        Ok(())
    }

    /// Copies the vector in `slot` out of the mapping.
    pub fn read_slot(&self, slot: u32) -> Result<Vec<f32>> {
        let range = self.slot_range(slot)?;
        let mut out = vec![0f32; self.slot_bytes / 4];
        f32s_from_le(&self.map.bytes()[range], &mut out);
        Ok(out)
    }

    /// The first `count` slots as floats, read in place (search scans them without copying).
    /// The slice borrows `self`, so it cannot outlive a remap.
    pub fn slots_f32(&self, count: u32) -> Result<&[f32]> {
        let end = (count as usize)
            .checked_mul(self.slot_bytes)
            .and_then(|b| b.checked_add(VECTORS_HEADER_LEN))
            .filter(|&end| end <= self.map.bytes().len())
            .ok_or_else(|| {
                Error::corrupted(
                    &self.path,
                    self.map.bytes().len() as u64,
                    format!(
                        "{count} slots lie beyond the end of the {}-byte file",
                        self.map.bytes().len()
                    ),
                )
            })?;
        // The mapping is page-aligned and the header is one page, so the cast cannot fail on
        // alignment; it is checked anyway rather than assumed.
        bytemuck::try_cast_slice(&self.map.bytes()[VECTORS_HEADER_LEN..end]).map_err(|e| {
            Error::corrupted(
                &self.path,
                VECTORS_HEADER_LEN as u64,
                format!("the slots cannot be read as f32: {e}"),
            )
        })
    }

    /// Makes every slot written and finished, and the file's size, durable. One fdatasync:
    /// slots are written with `pwrite`, never stored through the mapping, so there is no
    /// dirty mapping for an msync to flush (it would only sync the file a second time).
    pub fn sync(&self) -> Result<()> {
        debug_assert!(self.run.is_empty(), "slots written but not finished");
        self.file
            .sync_data()
            .map_err(|e| Error::io("fdatasync", &self.path, e))?;
        #[cfg(feature = "planted-bugs")]
        crate::planted::record(crate::planted::EventKind::SyncFile, &self.path);
        Ok(())
    }
}

/// Extends `file` from `old_len` to `new_len` with allocated (not sparse) blocks.
fn allocate(file: &dyn VfsFile, path: &Path, old_len: u64, new_len: u64) -> Result<()> {
    #[cfg(feature = "planted-bugs")]
    if crate::planted::failing(crate::planted::Fault::VectorGrowEnospc) {
        let enospc = std::io::Error::from_raw_os_error(libc::ENOSPC);
        return Err(Error::io("posix_fallocate", path, enospc));
    }
    file.allocate(old_len, new_len - old_len)
        .map_err(|e| Error::io("posix_fallocate", path, e))
}

fn map_file(file: &dyn VfsFile, path: &Path) -> Result<Box<dyn VfsMap>> {
    file.map_mut().map_err(|e| Error::io("mmap", path, e))
}

/// Encodes `vector` as the little-endian bytes of one slot.
pub fn vector_to_le(vector: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(vector.len() * 4);
    put_f32s(&mut out, vector);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::vfs::RealFs;

    /// A new vector file of `dimension` in a temporary directory (kept alive by the caller).
    fn fresh(dimension: u32) -> (tempfile::TempDir, VectorFile) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("vectors.dat");
        VectorFile::create(&RealFs, &path, dimension, 1).expect("create");
        let vf = VectorFile::open(&RealFs, &path, dimension, 1).expect("open");
        (dir, vf)
    }

    #[test]
    fn grows_geometrically_and_keeps_contents() {
        let (_dir, mut vf) = fresh(1024);
        assert_eq!(vf.len_bytes(), INITIAL_BYTES);
        let first = vf.capacity_slots();
        vf.write_slot(0, &[1.5; 1024]).expect("write");
        vf.finish_writes().expect("finish");
        vf.reserve(first + 1).expect("grow");
        assert!(vf.len_bytes() >= INITIAL_BYTES + GROWTH_FLOOR_BYTES);
        assert_eq!(vf.read_slot(0).expect("read"), vec![1.5; 1024]);
        assert_eq!(vf.slots_f32(1).expect("view"), &[1.5; 1024][..]);
        let capacity = u32::try_from(vf.capacity_slots()).expect("fits");
        assert_eq!(
            vf.slots_f32(capacity).expect("all").len(),
            capacity as usize * 1024
        );
        assert_eq!(
            vf.slots_f32(capacity + 1).err().map(|e| e.code()),
            Some("KEEL_CORRUPT")
        );
        let beyond = u32::try_from(vf.capacity_slots()).expect("fits");
        assert_eq!(
            vf.read_slot(beyond).err().map(|e| e.code()),
            Some("KEEL_CORRUPT")
        );
    }

    #[test]
    fn slots_are_written_in_runs_that_show_once_finished() {
        let (_dir, mut vf) = fresh(4);
        // Two runs (0..=1, then 5) and, past RUN_MAX_BYTES, runs cut at that length.
        vf.write_slot(0, &[1.0; 4]).expect("write");
        vf.write_slot(1, &[2.0; 4]).expect("write");
        assert_eq!(
            vf.read_slot(1).expect("read"),
            vec![0.0; 4],
            "not yet finished"
        );
        vf.write_slot(5, &[3.0; 4]).expect("write");
        assert_eq!(
            vf.read_slot(1).expect("read"),
            vec![2.0; 4],
            "a new run wrote the last"
        );
        let long = (RUN_MAX_BYTES / 16 + 10) as u32;
        vf.reserve(u64::from(6 + long)).expect("grow");
        for slot in 6..6 + long {
            vf.write_slot(slot, &[slot as f32; 4]).expect("write");
        }
        assert!(
            vf.run.capacity() >= RUN_MAX_BYTES,
            "a long run's buffer is kept"
        );
        vf.finish_bulk_writes().expect("finish");
        assert_eq!(vf.run.capacity(), 0, "and freed by finish_bulk_writes");
        for (slot, value) in [(0, 1.0), (1, 2.0), (2, 0.0), (5, 3.0), (6, 6.0)] {
            assert_eq!(
                vf.read_slot(slot).expect("read"),
                vec![value; 4],
                "slot {slot}"
            );
        }
        let last = 5 + long;
        assert_eq!(vf.read_slot(last).expect("read"), vec![last as f32; 4]);
        // A slot beyond the file fails, and drops the run gathered so far.
        vf.write_slot(last + 1, &[9.0; 4]).expect("write");
        let beyond = u32::try_from(vf.capacity_slots()).expect("fits");
        assert_eq!(
            vf.write_slot(beyond, &[9.0; 4]).err().map(|e| e.code()),
            Some("KEEL_CORRUPT")
        );
        vf.finish_writes().expect("nothing left to write");
        assert_eq!(vf.read_slot(last + 1).expect("read"), vec![0.0; 4]);
    }

    #[test]
    fn wrong_dimension_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("vectors.dat");
        VectorFile::create(&RealFs, &path, 8, 1).expect("create");
        assert_eq!(
            VectorFile::open(&RealFs, &path, 9, 1)
                .err()
                .map(|e| e.code()),
            Some("KEEL_CORRUPT")
        );
    }
}
