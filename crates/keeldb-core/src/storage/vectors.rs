//! The memory-mapped vector file: fixed-size f32 slots after a header page.
//!
//! Invariants:
//! - every slot access is checked against the mapped length before it happens;
//! - the file only grows while open, geometrically (at least 2x, at least
//!   [`GROWTH_FLOOR_BYTES`]), and the new range is allocated with `posix_fallocate`, so a
//!   write through the mapping can never hit a hole on a full disk (which would be a SIGBUS);
//! - callers never write a slot that the last checkpoint's index refers to (the collection
//!   hands out slots copy-on-write), so an unsynced page written back early can only touch
//!   bytes that replay rewrites anyway.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use memmap2::MmapMut;

use super::fsio;
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

/// An open, mapped vector file.
#[derive(Debug)]
pub struct VectorFile {
    path: PathBuf,
    file: File,
    map: MmapMut,
    slot_bytes: usize,
}

impl VectorFile {
    /// Creates a vector file of [`INITIAL_BYTES`] for vectors of `dimension`, durable on
    /// return (the caller syncs the directory).
    pub fn create(path: &Path, dimension: u32) -> Result<()> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| Error::io("create", path, e))?;
        file.write_all(&encode_header(dimension))
            .map_err(|e| Error::io("write", path, e))?;
        allocate(&file, path, VECTORS_HEADER_LEN as u64, INITIAL_BYTES)?;
        file.sync_all().map_err(|e| Error::io("fsync", path, e))?;
        #[cfg(feature = "planted-bugs")]
        crate::planted::record(crate::planted::EventKind::SyncFile, path);
        Ok(())
    }

    /// Opens and maps the vector file of a collection of `dimension`.
    pub fn open(path: &Path, dimension: u32) -> Result<VectorFile> {
        let file = fsio::open_regular_rw(path)?;
        let len = file
            .metadata()
            .map_err(|e| Error::io("stat", path, e))?
            .len();
        if len < VECTORS_HEADER_LEN as u64 {
            return Err(Error::corrupted(
                path,
                len,
                format!(
                    "vector file is {len} bytes, shorter than its {VECTORS_HEADER_LEN}-byte header"
                ),
            ));
        }
        let map = map_file(&file, path)?;
        // A newer version is refused as such before its header is checked with this
        // build's layout.
        if let Some(version) = peek_version(&map, &VECTORS_MAGIC).filter(|v| *v > VECTORS_VERSION) {
            return Err(Error::UnsupportedVersion {
                file: path.into(),
                what: "format version",
                found: version,
                supported: VECTORS_VERSION,
            });
        }
        let (_version, found_dimension) =
            decode_header(&map).map_err(|e| Error::corrupted(path, e.offset, e.reason))?;
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
        })
    }

    /// Floats per slot.
    pub fn dimension(&self) -> usize {
        self.slot_bytes / 4
    }

    /// How many slots fit in the file as it is now.
    pub fn capacity_slots(&self) -> u64 {
        ((self.map.len() - VECTORS_HEADER_LEN) / self.slot_bytes) as u64
    }

    /// Size of the file in bytes.
    pub fn len_bytes(&self) -> u64 {
        self.map.len() as u64
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
        allocate(&self.file, &self.path, old_len, new_len)?;
        self.map = map_file(&self.file, &self.path)?;
        Ok(())
    }

    fn slot_range(&self, slot: u32) -> Result<std::ops::Range<usize>> {
        let start = VECTORS_HEADER_LEN + slot as usize * self.slot_bytes;
        let end = start + self.slot_bytes;
        if end > self.map.len() {
            return Err(Error::corrupted(
                &self.path,
                start as u64,
                format!(
                    "slot {slot} lies beyond the end of the {}-byte file",
                    self.map.len()
                ),
            ));
        }
        debug_assert_eq!(start % 4, 0, "slots are f32-aligned");
        Ok(start..end)
    }

    /// Writes little-endian vector bytes (exactly one slot's worth) into `slot`.
    pub fn write_slot_le(&mut self, slot: u32, vector_le: &[u8]) -> Result<()> {
        let range = self.slot_range(slot)?;
        debug_assert_eq!(vector_le.len(), self.slot_bytes);
        self.map[range].copy_from_slice(vector_le);
        Ok(())
    }

    /// Writes a vector into `slot`.
    pub fn write_slot(&mut self, slot: u32, vector: &[f32]) -> Result<()> {
        let range = self.slot_range(slot)?;
        debug_assert_eq!(vector.len() * 4, self.slot_bytes);
        for (dst, v) in self.map[range].chunks_exact_mut(4).zip(vector) {
            dst.copy_from_slice(&v.to_le_bytes());
        }
        Ok(())
    }

    /// Copies the vector in `slot` out of the mapping.
    pub fn read_slot(&self, slot: u32) -> Result<Vec<f32>> {
        let range = self.slot_range(slot)?;
        let mut out = vec![0f32; self.slot_bytes / 4];
        f32s_from_le(&self.map[range], &mut out);
        Ok(out)
    }

    /// The first `count` slots as floats, read in place (search scans them without copying).
    /// The slice borrows `self`, so it cannot outlive a remap.
    pub fn slots_f32(&self, count: u32) -> Result<&[f32]> {
        let end = (count as usize)
            .checked_mul(self.slot_bytes)
            .and_then(|b| b.checked_add(VECTORS_HEADER_LEN))
            .filter(|&end| end <= self.map.len())
            .ok_or_else(|| {
                Error::corrupted(
                    &self.path,
                    self.map.len() as u64,
                    format!(
                        "{count} slots lie beyond the end of the {}-byte file",
                        self.map.len()
                    ),
                )
            })?;
        // The mapping is page-aligned and the header is one page, so the cast cannot fail on
        // alignment; it is checked anyway rather than assumed.
        bytemuck::try_cast_slice(&self.map[VECTORS_HEADER_LEN..end]).map_err(|e| {
            Error::corrupted(
                &self.path,
                VECTORS_HEADER_LEN as u64,
                format!("the slots cannot be read as f32: {e}"),
            )
        })
    }

    /// Makes every write through the mapping, and the file's size, durable.
    pub fn sync(&self) -> Result<()> {
        self.map
            .flush()
            .map_err(|e| Error::io("msync", &self.path, e))?;
        self.file
            .sync_data()
            .map_err(|e| Error::io("fdatasync", &self.path, e))?;
        #[cfg(feature = "planted-bugs")]
        crate::planted::record(crate::planted::EventKind::SyncFile, &self.path);
        Ok(())
    }
}

/// Extends `file` from `old_len` to `new_len` with allocated (not sparse) blocks.
fn allocate(file: &File, path: &Path, old_len: u64, new_len: u64) -> Result<()> {
    let offset = i64::try_from(old_len).map_err(|_| Error::invalid("file offset overflow"))?;
    let len = i64::try_from(new_len - old_len).map_err(|_| Error::invalid("file size overflow"))?;
    let rc = fallocate(file, offset, len);
    if rc != 0 {
        return Err(Error::io(
            "posix_fallocate",
            path,
            std::io::Error::from_raw_os_error(rc),
        ));
    }
    Ok(())
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

#[expect(unsafe_code, reason = "memory-mapping a file is unsafe by nature")]
fn map_file(file: &File, path: &Path) -> Result<MmapMut> {
    // SAFETY: the mapping is only valid while no one truncates or rewrites the file behind
    // our back. keeldb holds an exclusive flock on the database directory while open, the
    // file only grows while mapped, and we never hand out references into the mapping that
    // outlive a remap (reads copy). Another program ignoring the lock is outside this
    // contract (documented in docs/ARCHITECTURE.md).
    unsafe { MmapMut::map_mut(file) }.map_err(|e| Error::io("mmap", path, e))
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

    #[test]
    fn grows_geometrically_and_keeps_contents() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("vectors.dat");
        VectorFile::create(&path, 1024).expect("create");
        let mut vf = VectorFile::open(&path, 1024).expect("open");
        assert_eq!(vf.len_bytes(), INITIAL_BYTES);
        let first = vf.capacity_slots();
        vf.write_slot(0, &[1.5; 1024]).expect("write");
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
    fn wrong_dimension_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("vectors.dat");
        VectorFile::create(&path, 8).expect("create");
        assert_eq!(
            VectorFile::open(&path, 9).err().map(|e| e.code()),
            Some("KEEL_CORRUPT")
        );
    }
}
