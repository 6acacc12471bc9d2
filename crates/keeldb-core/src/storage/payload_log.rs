//! Payload log files: the current generation open for appending and reading, recovery's scan
//! of it, and the next generation being written by compaction.
//!
//! Invariant: frames are only appended, at the end; a frame once written is never modified,
//! so a reader holding an offset (and a handle on the file) reads the same bytes for as long
//! as the generation exists. The same holds for the read-only mapping a log keeps
//! (`FrameView`): it is read only below the bytes written, and dropped before a cut.
//! Nothing here syncs by itself: the collection syncs the log at each checkpoint, before
//! `ids.idx` names a sequence number the log must hold.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::fsio::{self, TEMP_SUFFIX};
use super::vfs::{OpenMode, Vfs, VfsFile, VfsView};
use crate::error::{Error, Result};
use crate::format::payload_index::PayloadLoc;
use crate::format::payload_log::{
    decode_frame_body, decode_frame_header, decode_header, encode_compacted_header, encode_header,
    frame_crc_ok, FrameBody, FrameHeader, FrameKind, FRAME_HEADER_LEN, FRAME_SYNC,
    PAYLOAD_LOG_HEADER_LEN, PAYLOAD_LOG_MAGIC, PAYLOAD_LOG_VERSION,
};
use crate::format::peek_version;
use crate::types::{Id, RecoveryPolicy};

const FILE_PREFIX: &str = "payloads-";
const FILE_SUFFIX: &str = ".log";
/// How much recovery reads at once while scanning a log.
const SCAN_WINDOW_BYTES: usize = 1 << 20;
/// Buffer of the compaction writer.
const COPY_BUFFER_BYTES: usize = 1 << 20;
/// Frames buffered by [`PayloadLogFile::append_buffered`] are written out past this size.
/// Small, so that the buffer is not one of the allocator's huge blocks (see
/// `format::CHUNK_BYTES`), and it grows to at most this and one record's frames: at 8 MiB,
/// grown by doubling, it added 18 MB to the fresh memory the open after a crash of 100k
/// records touched (49 MB to 31 MB), pages that a virtual machine may have to fault in from
/// its host. A write per 256 KiB is still few (about 140 for that replay).
pub const APPEND_BUFFER_BYTES: usize = 256 << 10;
/// Room a log's mapping leaves to grow into, at least: appends show in the mapping without
/// a remap until the log passes the mapped length (then it is mapped again, with twice its
/// length). Address space only; nothing is read or allocated for it.
const VIEW_GROWTH_BYTES_MIN: u64 = 16 << 20;

/// Whether writing out buffered frames also starts their writeback to the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writeback {
    /// Start it now: a sync is due soon after (the checkpoint that ends replay), and can
    /// then wait for I/O that is already under way.
    Start,
    /// Leave it to the kernel or the next sync: a group commit writes out a few KiB at a
    /// time, and starting I/O for each would only add small writes to the disk's queue.
    Later,
}

/// The file name of payload log `generation`.
pub fn file_name(generation: u64) -> String {
    format!("{FILE_PREFIX}{generation}{FILE_SUFFIX}")
}

/// The generation in a payload log's file name (`payloads-<n>.log`, `n` in canonical
/// decimal, at least 1), or `None` for any other name.
pub fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(FILE_PREFIX)?.strip_suffix(FILE_SUFFIX)?;
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    canonical.then(|| digits.parse().ok()).flatten()
}

/// The generations of every payload log in `dir`, ascending.
pub fn list_generations(fs: &dyn Vfs, dir: &Path) -> Result<Vec<u64>> {
    let mut generations = Vec::new();
    let entries = fs
        .read_dir(dir)
        .map_err(|e| Error::io("read directory", dir, e))?;
    for entry in entries {
        if let Some(generation) = parse_file_name(&entry.name) {
            generations.push(generation);
        }
    }
    generations.sort_unstable();
    Ok(generations)
}

/// Deletes payload log `generation` (a superseded one). The caller syncs the directory.
pub fn remove(fs: &dyn Vfs, dir: &Path, generation: u64) -> Result<()> {
    let path = dir.join(file_name(generation));
    match fs.remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove superseded payload log", &path, e)),
    }
}

/// The payload log of the current generation.
#[derive(Debug)]
pub struct PayloadLogFile {
    path: PathBuf,
    generation: u64,
    /// The uid its header names (0: written before format 3).
    uid: u32,
    /// Its header's `based_on` (see `format::payload_log::checkpoint_tag`; 0: not made by a
    /// compaction, or by one before the field).
    based_on: u32,
    file: Arc<dyn VfsFile>,
    /// Bytes in the file, header included; the next frame goes here.
    len: u64,
    /// Frames appended by [`PayloadLogFile::append_buffered`] and not yet written: they
    /// belong right after `len`.
    pending: Vec<u8>,
    /// A read-only mapping, so that reading a frame is a copy, not a system call.
    view: FrameView,
    /// The file holds bytes past `len` that are to be cut (see
    /// [`PayloadLogFile::forget_tail`]).
    tail_forgotten: bool,
    /// Why buffered frames could not be written, once that happened: an index may point at
    /// frames past `len` that never reached the file, and reading one fails with this cause
    /// (the collection is poisoned; reopening rewrites the frames from the write-ahead log).
    unwritten: Option<String>,
}

/// A read-only mapping of a payload log that the log grows into (`map_read_growing`).
///
/// Invariant: only bytes below the log's `len` (written with `write_all_at`, never
/// rewritten) are read through it; anything else is read with `read_at`. It is dropped
/// before the file is cut, and a compaction's new generation gets a mapping of its own.
#[derive(Debug, Default)]
struct FrameView {
    /// `None` before the first [`PayloadLogFile::refresh_view`], or if mapping failed: reads
    /// then go to the file.
    map: Option<Box<dyn VfsView>>,
    /// The length asked for: no remap is needed until the log grows past it.
    reserved: u64,
}

impl PayloadLogFile {
    /// Creates an empty log (its header only) for `generation`, fsynced; the caller syncs
    /// the directory.
    pub fn create(fs: &dyn Vfs, dir: &Path, generation: u64, uid: u32) -> Result<PayloadLogFile> {
        let path = dir.join(file_name(generation));
        let file = fs
            .open(&path, OpenMode::CreateNew)
            .map_err(|e| Error::io("create", &path, e))?;
        file.write_all_at(&encode_header(generation, uid), 0)
            .map_err(|e| Error::io("write", &path, e))?;
        file.sync_all().map_err(|e| Error::io("fsync", &path, e))?;
        Ok(PayloadLogFile {
            path,
            generation,
            uid,
            based_on: 0,
            file,
            len: PAYLOAD_LOG_HEADER_LEN as u64,
            pending: Vec::new(),
            view: FrameView::default(),
            tail_forgotten: false,
            unwritten: None,
        })
    }

    /// Opens log `generation`, checking its header (`UnsupportedVersion` for a newer one;
    /// `Corrupt` for another generation's, or another collection's than `uid`).
    pub fn open(fs: &dyn Vfs, dir: &Path, generation: u64, uid: u32) -> Result<PayloadLogFile> {
        let path = dir.join(file_name(generation));
        let file = fsio::open_regular_rw(fs, &path)?;
        let len = file.len().map_err(|e| Error::io("stat", &path, e))?;
        let mut header = [0u8; PAYLOAD_LOG_HEADER_LEN];
        let got = read_up_to(&*file, &path, 0, &mut header)?;
        // The version before the checksum, as for the other files: a newer keeldb may lay
        // the rest of the header out differently, and its log is newer, not damaged.
        let version = peek_version(&header[..got], &PAYLOAD_LOG_MAGIC);
        if let Some(found) = version.filter(|v| *v > PAYLOAD_LOG_VERSION || *v == 0) {
            return Err(Error::UnsupportedVersion {
                file: path,
                what: "format version",
                found,
                supported: PAYLOAD_LOG_VERSION,
            });
        }
        let header = decode_header(&header[..got])
            .map_err(|e| Error::corrupted(&path, e.offset, e.reason))?;
        if header.generation != generation {
            return Err(Error::corrupted(
                &path,
                16,
                format!(
                    "header names generation {}, the file name {generation}",
                    header.generation
                ),
            ));
        }
        fsio::check_uid(&path, 12, uid, header.uid)?;
        Ok(PayloadLogFile {
            path,
            generation,
            uid: header.uid,
            based_on: header.based_on,
            file,
            len,
            pending: Vec::new(),
            view: FrameView::default(),
            tail_forgotten: false,
            unwritten: None,
        })
    }

    /// Why buffered frames could not be written, if that happened (see
    /// [`PayloadLogFile::write_buffered`]).
    pub fn unwritten(&self) -> Option<&str> {
        self.unwritten.as_deref()
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The generation number.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The uid its header names (0: written before format 3).
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// For a generation a compaction made, the checkpoint tag its header names (0: none).
    pub fn based_on(&self) -> u32 {
        self.based_on
    }

    /// Bytes in the file, header included, and buffered frames.
    pub fn len_bytes(&self) -> u64 {
        self.len + self.pending.len() as u64
    }

    /// Fails if frames are buffered: `what` needs every frame in the file.
    pub fn check_all_written(&self, what: &str) -> Result<()> {
        #[cfg(feature = "planted-bugs")]
        if crate::planted::active(crate::planted::Bug::CheckpointLeavesFramesBuffered) {
            return Ok(());
        }
        if self.pending.is_empty() {
            return Ok(());
        }
        Err(Error::Internal(format!(
            "{} buffered bytes of payload log {} were not written before {what}",
            self.pending.len(),
            self.path.display()
        )))
    }

    /// A handle on the file that stays valid after a compaction swaps the log out.
    pub fn handle(&self) -> Arc<dyn VfsFile> {
        Arc::clone(&self.file)
    }

    /// Appends `bytes` (whole frames) at the end. Not synced. On error the caller poisons
    /// its collection: part of the bytes may be in the file.
    pub fn append(&mut self, bytes: &[u8]) -> Result<()> {
        self.write_buffered(Writeback::Later)?;
        self.write_at_end(bytes)
    }

    /// Appends `bytes` (whole frames) to a buffer that is written out once it passes
    /// `APPEND_BUFFER_BYTES` and by [`PayloadLogFile::write_buffered`]: one write for the
    /// frames of many log records (replay, many commit groups) instead of one each, which
    /// cost more than the rest of replay and, written once per group, an eighth of the
    /// committer's time at durability `none`. Reads find buffered frames in the buffer. A
    /// sync must come after a write-out. If a write-out fails, see
    /// [`PayloadLogFile::write_buffered`].
    pub fn append_buffered(&mut self, bytes: &[u8]) -> Result<()> {
        super::reserve_capped(&mut self.pending, bytes.len(), APPEND_BUFFER_BYTES);
        self.pending.extend_from_slice(bytes);
        if self.pending.len() >= APPEND_BUFFER_BYTES {
            self.write_buffered(Writeback::Later)?;
        }
        Ok(())
    }

    /// Writes out the frames buffered by [`PayloadLogFile::append_buffered`]. If that
    /// fails, the frames are dropped (part of them may be in the file, past `len`), and
    /// reading any frame past `len` fails from then on with `Poisoned` and the cause: the
    /// caller had pointed its index at them, and poisons its collection.
    pub fn write_buffered(&mut self, writeback: Writeback) -> Result<()> {
        let pending = std::mem::take(&mut self.pending);
        let at = self.len;
        if let Err(e) = self.write_at_end(&pending) {
            self.unwritten = Some(e.to_string());
            return Err(e);
        }
        if !pending.is_empty() && writeback == Writeback::Start {
            // Only a hint: a failure to start writing back shows at the sync, if at all.
            let _ = self.file.start_writeback(at, pending.len() as u64);
        }
        // Keep the allocation for the next buffered frames, unless a large record's frames
        // grew it past what `append_buffered` makes room for: memory held for good.
        if pending.capacity() <= 2 * APPEND_BUFFER_BYTES {
            self.pending = pending;
            self.pending.clear();
        }
        Ok(())
    }

    fn write_at_end(&mut self, bytes: &[u8]) -> Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        #[cfg(feature = "planted-bugs")]
        if crate::planted::failing(crate::planted::Fault::PayloadWriteEio) {
            let eio = std::io::Error::from_raw_os_error(libc::EIO);
            return Err(Error::io("write", &self.path, eio));
        }
        self.file
            .write_all_at(bytes, self.len)
            .map_err(|e| Error::io("write", &self.path, e))?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Makes every appended frame durable (fdatasync persists the length too). Buffered
    /// frames must be written out first: a sync that would leave them out fails.
    pub fn sync(&self) -> Result<()> {
        self.check_all_written("its sync")?;
        self.file
            .sync_data()
            .map_err(|e| Error::io("fdatasync", &self.path, e))
    }

    /// Starts writing the file's written frames back to the disk, without waiting (see
    /// `VfsFile::start_writeback`). Only a hint: a failure shows at the next sync, if at all.
    pub fn start_writeback(&self) {
        let _ = self.file.start_writeback(0, self.len);
    }

    /// Cuts the file at `len` and syncs the cut.
    pub fn truncate(&mut self, len: u64) -> Result<()> {
        self.pending.clear();
        // Bytes past the cut may be written again, and pages past the new end must not be
        // touched: no mapping survives a cut.
        self.view = FrameView::default();
        self.file
            .set_len(len)
            .map_err(|e| Error::io("truncate", &self.path, e))?;
        self.sync()?;
        self.len = len;
        Ok(())
    }

    /// Treats the log as ending at `len` without cutting the file yet: opening finds where
    /// the frames to keep end before it knows whether the collection opens, and a refused
    /// open must leave the file as it was. Appends go over the forgotten bytes;
    /// [`PayloadLogFile::cut_forgotten_tail`] cuts what is left of them. Until then nothing
    /// is mapped (a mapping could show the forgotten bytes where new frames now are).
    pub fn forget_tail(&mut self, len: u64) {
        self.pending.clear();
        self.view = FrameView::default();
        self.len = len;
        self.tail_forgotten = true;
    }

    /// Cuts the file after its frames, if [`PayloadLogFile::forget_tail`] left bytes there
    /// (writing out buffered frames first), and maps it again.
    pub fn cut_forgotten_tail(&mut self) -> Result<()> {
        if self.tail_forgotten {
            self.write_buffered(Writeback::Start)?;
            let len = self.len;
            self.truncate(len)?;
            self.tail_forgotten = false;
        }
        self.refresh_view();
        Ok(())
    }

    /// Maps the log again if it has grown past its mapping (or was never mapped), so that
    /// [`PayloadLogFile::read_payload_into`] finds its frames in memory. Called after
    /// appends; cheap when nothing needs doing. A failure to map is not an error: reads
    /// then use the file, as they do for any frame the mapping does not cover.
    pub fn refresh_view(&mut self) {
        if self.tail_forgotten || self.len <= self.view.reserved {
            return;
        }
        let reserved = self
            .len
            .saturating_mul(2)
            .max(self.len.saturating_add(VIEW_GROWTH_BYTES_MIN));
        // Unmap first: the old mapping's address space is not needed twice.
        self.view = FrameView::default();
        self.view = FrameView {
            map: self.file.map_read_growing(reserved).ok(),
            reserved,
        };
    }

    /// The payload of the store frame at `loc`, which must be `id`'s. Any mismatch is
    /// reported as corruption of this file at that offset.
    pub fn read_payload(&self, loc: PayloadLoc, id: &Id) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.read_payload_into(loc, id, &mut out)?;
        Ok(out)
    }

    /// [`PayloadLogFile::read_payload`] into `out` (cleared first), which a caller reading
    /// many payloads reuses: from the mapping when it covers the frame, from the buffer when
    /// the frame is not written yet, else from the file.
    /// The frame's header, length, CRC and id are checked either way.
    pub fn read_payload_into(&self, loc: PayloadLoc, id: &Id, out: &mut Vec<u8>) -> Result<()> {
        out.clear();
        if let Some(cause) = &self.unwritten {
            if loc.offset.saturating_add(u64::from(loc.frame_len)) > self.len {
                return Err(Error::Poisoned {
                    what: format!("payload log {}", self.path.display()),
                    cause: cause.clone(),
                });
            }
        }
        match self.mapped_frame(loc).or_else(|| self.buffered_frame(loc)) {
            Some(frame) => out.extend_from_slice(check_store_frame(frame, &self.path, loc, id)?),
            None => {
                let frame = read_frame(&*self.file, &self.path, loc)?;
                out.extend_from_slice(check_store_frame(&frame, &self.path, loc, id)?);
            }
        }
        Ok(())
    }

    /// The bytes of the frame at `loc` in the mapping, if they were written (below `len`)
    /// and the mapping shows them. Unchecked: the caller checks the frame.
    fn mapped_frame(&self, loc: PayloadLoc) -> Option<&[u8]> {
        let end = loc.offset.checked_add(u64::from(loc.frame_len))?;
        if end > self.len {
            return None;
        }
        let bytes = self.view.map.as_ref()?.bytes();
        bytes.get(usize::try_from(loc.offset).ok()?..usize::try_from(end).ok()?)
    }

    /// The bytes of the frame at `loc` if it is buffered, not written yet (at or past `len`).
    /// Unchecked: the caller checks the frame.
    fn buffered_frame(&self, loc: PayloadLoc) -> Option<&[u8]> {
        let start = usize::try_from(loc.offset.checked_sub(self.len)?).ok()?;
        self.pending
            .get(start..start.checked_add(usize::try_from(loc.frame_len).ok()?)?)
    }

    /// Reads frames from `from` on, handing each one with `lsn <= checkpoint_lsn` to
    /// `visit`, and says where the log must be cut: at the first frame derived from a log
    /// record after the checkpoint (the write-ahead log replays those again), or where the
    /// valid frames end. Damage is mid-log damage, handled per `policy`, when it lies below
    /// `synced_end` (the length the last checkpoint synced: whole frames only, so no crash
    /// explains damage there) or is followed by a frame the checkpoint covers.
    pub fn scan(
        &self,
        from: u64,
        checkpoint_lsn: u64,
        synced_end: u64,
        policy: RecoveryPolicy,
        mut visit: impl FnMut(u64, &FrameHeader, FrameBody<'_>),
    ) -> Result<ScanOutcome> {
        let mut w = Window::new(&*self.file, &self.path, self.len);
        let mut out = ScanOutcome::default();
        let mut pos = from;
        while pos < self.len {
            let Some(header) = w.frame_at(pos)? else {
                match w.next_frame(pos + 1)? {
                    Some((next, h)) if h.lsn <= checkpoint_lsn => {
                        self.damage(policy, pos, next, &mut out)?;
                        pos = next;
                        continue;
                    }
                    // Nothing the checkpoint covers follows: the log is cut here, and log
                    // replay appends what came after the checkpoint again.
                    _ if pos < synced_end => {
                        let reason = format!(
                            "damaged bytes at {pos}, below the {synced_end} the last checkpoint synced"
                        );
                        self.damaged(policy, pos, reason, &mut out)?;
                        break;
                    }
                    _ => {
                        self.check_torn_frame(&mut w, pos, checkpoint_lsn, policy, &mut out)?;
                        break;
                    }
                }
            };
            let Some(kind) = FrameKind::from_byte(header.kind) else {
                return Err(Error::UnsupportedVersion {
                    file: self.path.clone(),
                    what: "payload frame kind",
                    found: u32::from(header.kind),
                    supported: FrameKind::Delete as u32,
                });
            };
            if header.lsn > checkpoint_lsn {
                break;
            }
            let body_at = pos + FRAME_HEADER_LEN as u64;
            let body = w.get(body_at, header.body_len as usize)?;
            let body = decode_frame_body(kind, body).map_err(|e| {
                Error::corrupted(
                    &self.path,
                    body_at + e.offset,
                    format!("frame passed its checksum but {}", e.reason),
                )
            })?;
            visit(pos, &header, body);
            out.frames_read += 1;
            pos += header.frame_len();
        }
        if pos >= self.len && self.len < synced_end {
            let reason = format!(
                "the file is {} bytes, shorter than the {synced_end} the last checkpoint synced",
                self.len
            );
            self.damaged(policy, self.len, reason, &mut out)?;
        }
        out.end_offset = pos;
        Ok(out)
    }

    fn damage(
        &self,
        policy: RecoveryPolicy,
        from: u64,
        to: u64,
        out: &mut ScanOutcome,
    ) -> Result<()> {
        let reason = format!(
            "{} damaged bytes before the payload frame at byte {to}",
            to - from
        );
        self.damaged(policy, from, reason, out)
    }

    fn damaged(
        &self,
        policy: RecoveryPolicy,
        from: u64,
        reason: String,
        out: &mut ScanOutcome,
    ) -> Result<()> {
        match policy {
            RecoveryPolicy::Strict => Err(Error::corrupted(&self.path, from, reason)),
            RecoveryPolicy::Salvage => {
                out.corrupt_ranges_skipped += 1;
                out.warnings.push(format!(
                    "{}: skipped {reason} (from byte {from}); payloads in it are lost",
                    self.path.display()
                ));
                Ok(())
            }
        }
    }

    /// The log ends at `pos` in bytes that are not a whole frame. That is a torn tail,
    /// unless a readable frame header there says the frame came from a record the
    /// checkpoint covers: then bytes that were synced are missing.
    fn check_torn_frame(
        &self,
        w: &mut Window<'_>,
        pos: u64,
        checkpoint_lsn: u64,
        policy: RecoveryPolicy,
        out: &mut ScanOutcome,
    ) -> Result<()> {
        let header = w.get(pos, FRAME_HEADER_LEN)?;
        if let Ok(h) = decode_frame_header(header) {
            if h.lsn <= checkpoint_lsn {
                let reason = format!(
                    "the payload frame at byte {pos} (record {}) is cut short, though a checkpoint covered it",
                    h.lsn
                );
                match policy {
                    RecoveryPolicy::Strict => {
                        return Err(Error::corrupted(&self.path, pos, reason))
                    }
                    RecoveryPolicy::Salvage => {
                        out.corrupt_ranges_skipped += 1;
                        out.warnings
                            .push(format!("{}: {reason}; it is lost", self.path.display()));
                    }
                }
            }
        }
        Ok(())
    }
}

/// What a scan found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanOutcome {
    /// Where the kept frames end: the log is cut here before anything is appended.
    pub end_offset: u64,
    /// Frames handed to `visit`.
    pub frames_read: u64,
    /// Damaged ranges skipped under `Salvage`.
    pub corrupt_ranges_skipped: u64,
    /// One line per skipped range.
    pub warnings: Vec<String>,
}

/// Reads and checks the store frame at `loc` of `file`, which must hold `id`'s payload.
pub fn read_store_frame(
    file: &dyn VfsFile,
    path: &Path,
    loc: PayloadLoc,
    id: &Id,
) -> Result<Vec<u8>> {
    let frame = read_frame(file, path, loc)?;
    check_store_frame(&frame, path, loc, id).map(<[u8]>::to_vec)
}

/// Checks the store frame `frame` read at `loc` (header, length, CRC, kind and id: it must
/// hold `id`'s payload) and returns its payload.
fn check_store_frame<'f>(
    frame: &'f [u8],
    path: &Path,
    loc: PayloadLoc,
    id: &Id,
) -> Result<&'f [u8]> {
    check_frame(frame, path, loc)?;
    let body = &frame[FRAME_HEADER_LEN..frame.len() - 4];
    let corrupt = |reason: String| Error::corrupted(path, loc.offset, reason);
    let parsed = decode_frame_body(FrameKind::Store, body)
        .map_err(|e| corrupt(format!("payload frame: {}", e.reason)))?;
    match parsed.payload {
        Some(payload) if parsed.id == *id && frame[4] == FrameKind::Store as u8 => Ok(payload),
        _ => Err(corrupt(format!(
            "the index points at a frame that is not id {id}'s payload"
        ))),
    }
}

/// Reads the whole frame at `loc`, checking its header, length and CRC.
pub fn read_frame(file: &dyn VfsFile, path: &Path, loc: PayloadLoc) -> Result<Vec<u8>> {
    let mut frame = vec![0u8; loc.frame_len as usize];
    let got = read_up_to(file, path, loc.offset, &mut frame)?;
    check_frame(&frame[..got], path, loc)?;
    Ok(frame)
}

/// Checks that `frame` is the whole `loc.frame_len`-byte frame `loc` names: header, length
/// and CRC.
fn check_frame(frame: &[u8], path: &Path, loc: PayloadLoc) -> Result<()> {
    let intact = frame.len() == loc.frame_len as usize
        && decode_frame_header(frame).is_ok_and(|h| h.frame_len() == u64::from(loc.frame_len))
        && frame_crc_ok(frame);
    match intact {
        true => Ok(()),
        false => Err(Error::corrupted(
            path,
            loc.offset,
            format!("the {}-byte payload frame here is damaged", loc.frame_len),
        )),
    }
}

/// Reads into `buf` from `offset` until it is full or the file ends; returns the count.
fn read_up_to(file: &dyn VfsFile, path: &Path, offset: u64, buf: &mut [u8]) -> Result<usize> {
    file.read_at(buf, offset)
        .map_err(|e| Error::io("read", path, e))
}

/// A read window over a file, so that a scan reads it in large pieces.
struct Window<'f> {
    file: &'f dyn VfsFile,
    path: &'f Path,
    file_len: u64,
    start: u64,
    buf: Vec<u8>,
    /// Bytes of failed frame checks [`Window::next_frame`] may still spend: overlapping
    /// forged headers would otherwise make resynchronizing quadratic (a hang), as in the
    /// log's replay (`wal::replay`, `Resync`).
    resync_budget: u64,
}

impl<'f> Window<'f> {
    fn new(file: &'f dyn VfsFile, path: &'f Path, file_len: u64) -> Self {
        Window {
            file,
            path,
            file_len,
            start: 0,
            buf: Vec::new(),
            resync_budget: file_len.saturating_mul(8).saturating_add(1 << 20),
        }
    }

    /// Bytes `at..at + n`, fewer if the file ends first.
    fn get(&mut self, at: u64, n: usize) -> Result<&[u8]> {
        let end = at.saturating_add(n as u64).min(self.file_len);
        let at = at.min(end);
        let cached = at >= self.start && end <= self.start + self.buf.len() as u64;
        if !cached {
            let want = (n.max(SCAN_WINDOW_BYTES) as u64).min(self.file_len - at) as usize;
            self.buf.resize(want, 0);
            let got = read_up_to(self.file, self.path, at, &mut self.buf)?;
            self.buf.truncate(got);
            self.start = at;
        }
        let from = (at - self.start) as usize;
        let to = ((end - self.start) as usize).min(self.buf.len());
        Ok(&self.buf[from.min(to)..to])
    }

    /// The header of the whole, checksum-valid frame at `pos`, if there is one.
    fn frame_at(&mut self, pos: u64) -> Result<Option<FrameHeader>> {
        let Ok(header) = decode_frame_header(self.get(pos, FRAME_HEADER_LEN)?) else {
            return Ok(None);
        };
        let frame_len = header.frame_len();
        if pos + frame_len > self.file_len {
            return Ok(None);
        }
        Ok(frame_crc_ok(self.get(pos, frame_len as usize)?).then_some(header))
    }

    /// The first whole, checksum-valid frame at or after `from`.
    fn next_frame(&mut self, mut from: u64) -> Result<Option<(u64, FrameHeader)>> {
        let sync = FRAME_SYNC.to_le_bytes();
        while from + FRAME_HEADER_LEN as u64 <= self.file_len {
            // What the window holds from `from` on, if that is a header's worth: asking for a
            // whole window past each candidate would reread it at every marker (a forged log
            // of markers 24 bytes apart made that quadratic).
            let cached_end = self.start + self.buf.len() as u64;
            let ahead = if from >= self.start && from + FRAME_HEADER_LEN as u64 <= cached_end {
                (cached_end - from) as usize
            } else {
                SCAN_WINDOW_BYTES
            };
            let chunk = self.get(from, ahead)?;
            let found = memchr::memmem::find(chunk, &sync);
            let chunk_len = chunk.len() as u64;
            match found {
                Some(i) => {
                    let at = from + i as u64;
                    if let Some(header) = self.frame_at(at)? {
                        return Ok(Some((at, header)));
                    }
                    // A header that checked out but a frame that did not: charge its length.
                    let header = decode_frame_header(self.get(at, FRAME_HEADER_LEN)?).ok();
                    if let Some(header) = header.filter(|h| at + h.frame_len() <= self.file_len) {
                        self.resync_budget = self
                            .resync_budget
                            .checked_sub(header.frame_len())
                            .ok_or_else(|| {
                                Error::corrupted(
                                    self.path,
                                    at,
                                    "damage too dense to resynchronize: forged or overlapping frame headers",
                                )
                            })?;
                    }
                    from = at + 1;
                }
                // Overlap by three bytes: a marker may straddle two chunks.
                None => from += chunk_len.saturating_sub(3).max(1),
            }
        }
        Ok(None)
    }
}

/// The next generation being written by compaction, under a temporary name until
/// [`CompactionWriter::install`] renames it into place.
pub struct CompactionWriter {
    fs: Arc<dyn Vfs>,
    dir: PathBuf,
    temp: PathBuf,
    generation: u64,
    uid: u32,
    file: Arc<dyn VfsFile>,
    /// Bytes not yet written to the file; they start at `len - buffer.len()`.
    buffer: Vec<u8>,
    len: u64,
}

impl CompactionWriter {
    /// Starts `payloads-<generation>.log.tmp` with its header.
    pub fn create(
        fs: Arc<dyn Vfs>,
        dir: &Path,
        generation: u64,
        uid: u32,
    ) -> Result<CompactionWriter> {
        let temp = dir.join(format!("{}{TEMP_SUFFIX}", file_name(generation)));
        let file = fs
            .open(&temp, OpenMode::Replace)
            .map_err(|e| Error::io("create", &temp, e))?;
        let mut writer = CompactionWriter {
            fs,
            dir: dir.to_owned(),
            temp,
            generation,
            uid,
            file,
            buffer: Vec::with_capacity(COPY_BUFFER_BYTES),
            len: 0,
        };
        writer.write(&encode_header(generation, uid))?;
        Ok(writer)
    }

    /// Bytes written so far: the offset the next frame gets.
    pub fn len_bytes(&self) -> u64 {
        self.len
    }

    /// Appends bytes (whole frames).
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.buffer.extend_from_slice(bytes);
        self.len += bytes.len() as u64;
        if self.buffer.len() >= COPY_BUFFER_BYTES {
            self.write_out()?;
        }
        Ok(())
    }

    fn write_out(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let at = self.len - self.buffer.len() as u64;
        self.file
            .write_all_at(&self.buffer, at)
            .map_err(|e| Error::io("write", &self.temp, e))?;
        self.buffer.clear();
        Ok(())
    }

    /// Copies `source[from..to]` to the end.
    pub fn copy_range(
        &mut self,
        source: &dyn VfsFile,
        source_path: &Path,
        from: u64,
        to: u64,
    ) -> Result<()> {
        let mut buf = vec![0u8; COPY_BUFFER_BYTES];
        let mut at = from;
        while at < to {
            let n = ((to - at) as usize).min(buf.len());
            let got = read_up_to(source, source_path, at, &mut buf[..n])?;
            if got < n {
                return Err(Error::corrupted(
                    source_path,
                    at + got as u64,
                    "payload log ended early",
                ));
            }
            self.write(&buf[..n])?;
            at += n as u64;
        }
        Ok(())
    }

    /// Writes out and fsyncs what has been written so far.
    pub fn sync(&mut self) -> Result<()> {
        self.write_out()?;
        self.file
            .sync_all()
            .map_err(|e| Error::io("fsync", &self.temp, e))
    }

    /// Makes the new generation the current one: its header names `based_on`, the
    /// [`checkpoint_tag`](crate::format::payload_log::checkpoint_tag) of the checkpoint
    /// ids.idx holds now; fsync, then rename over its final name. From the rename on, a
    /// crash leaves the new generation current (open takes the one after the generation
    /// ids.idx names, if ids.idx is still the checkpoint `based_on` names); the caller
    /// fsyncs the directory, and an error there must poison the collection. On error the
    /// temporary file is removed and nothing changed.
    pub fn install(mut self, based_on: u32) -> Result<PayloadLogFile> {
        let header = encode_compacted_header(self.generation, self.uid, based_on);
        let written = self.write_out().and_then(|()| {
            self.file
                .write_all_at(&header, 0)
                .map_err(|e| Error::io("write", &self.temp, e))
        });
        if let Err(e) = written.and_then(|()| self.sync()) {
            self.abandon();
            return Err(e);
        }
        let path = self.dir.join(file_name(self.generation));
        if let Err(e) = self.fs.rename(&self.temp, &path) {
            self.abandon();
            return Err(Error::io("rename", &path, e));
        }
        Ok(PayloadLogFile {
            path,
            generation: self.generation,
            uid: self.uid,
            based_on,
            file: self.file,
            len: self.len,
            pending: Vec::new(),
            view: FrameView::default(),
            tail_forgotten: false,
            unwritten: None,
        })
    }

    /// Gives up: removes the temporary file (open would remove it anyway).
    pub fn abandon(self) {
        let _ = self.fs.remove_file(&self.temp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_canonical_file_names_are_generations() {
        assert_eq!(parse_file_name("payloads-1.log"), Some(1));
        assert_eq!(parse_file_name("payloads-120.log"), Some(120));
        for other in [
            "payloads-0.log",
            "payloads-01.log",
            "payloads-.log",
            "payloads-1.log.tmp",
            "payloads-x.log",
            "payloads-+1.log",
            "payloads.idx",
        ] {
            assert_eq!(parse_file_name(other), None, "{other}");
        }
        assert_eq!(parse_file_name(&file_name(7)), Some(7));
    }

    fn store_frame(lsn: u64, id: &Id, payload: &[u8]) -> (Vec<u8>, u32) {
        let mut out = Vec::new();
        let len =
            crate::format::payload_log::encode_frame(&mut out, FrameKind::Store, lsn, id, payload);
        (out, len)
    }

    #[test]
    fn reads_use_the_mapping_only_below_what_was_written_and_never_across_a_cut() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs = crate::storage::vfs::RealFs;
        let mut log = PayloadLogFile::create(&fs, dir.path(), 1, 1).expect("create");
        let id = Id::Int(7);
        let (a, a_len) = store_frame(1, &id, br#"{"a":1}"#);
        let at = log.len_bytes();
        log.append(&a).expect("append");
        let loc = PayloadLoc {
            offset: at,
            frame_len: a_len,
        };
        // Not mapped yet: read from the file.
        assert!(log.mapped_frame(loc).is_none());
        assert_eq!(log.read_payload(loc, &id).expect("read"), br#"{"a":1}"#);
        log.refresh_view();
        assert!(log.mapped_frame(loc).is_some());
        assert_eq!(log.read_payload(loc, &id).expect("read"), br#"{"a":1}"#);
        // A frame past the written end is never looked for in the mapping, though the
        // mapping reaches that far: it is damage, reported as corruption.
        let beyond = PayloadLoc {
            offset: log.len_bytes(),
            frame_len: a_len,
        };
        assert!(log.mapped_frame(beyond).is_none());
        assert_eq!(
            log.read_payload(beyond, &id).map_err(|e| e.code()),
            Err("KEEL_CORRUPT")
        );
        // A cut drops the mapping; the frame written at the same offset afterwards reads.
        log.truncate(at).expect("truncate");
        assert!(log.view.map.is_none());
        let (b, b_len) = store_frame(2, &id, br#"{"b":2}"#);
        log.append(&b).expect("append");
        let loc = PayloadLoc {
            offset: at,
            frame_len: b_len,
        };
        log.refresh_view();
        assert_eq!(log.read_payload(loc, &id).expect("read"), br#"{"b":2}"#);
        // A frame of another id at the offset the index names is corruption too.
        assert_eq!(
            log.read_payload(loc, &Id::Int(8)).map_err(|e| e.code()),
            Err("KEEL_CORRUPT")
        );
    }
}
