//! A collection's payloads: the in-memory id-to-frame index over the payload log, kept in
//! step with the write-ahead log; recovery of both at open; and compaction's copy.
//!
//! Invariant: the payload log holds nothing the write-ahead log and the last checkpoint do
//! not justify. Every frame repeats an applied log record and carries its sequence number.
//! At each checkpoint the log is fsynced before `ids.idx` names the checkpoint's sequence
//! number `C`, so the frames with `lsn <= C` are durable, and they come first in the file:
//! frames are appended in log order, and compaction copies the state as of a checkpoint
//! before the frames appended since. Opening therefore keeps exactly the frames with
//! `lsn <= C` and cuts the log at the first later one; replaying the write-ahead log
//! appends those again.
//!
//! Invariant: a reader finds every payload frame the index points at, in the file or in the
//! log's buffer (a commit group's frames stay buffered with earlier groups' until the buffer
//! fills or a write outside a group, a checkpoint or a compaction writes them out), and the
//! index is changed in the same critical section as
//! the vector index, so a reader sees a record's vector and payload from the same write.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::index::IndexSnapshot;
use crate::format::payload_index::{
    self, PayloadLoc, PayloadSnapshot, PAYLOAD_INDEX_CHECKPOINT_LSN_AT, PAYLOAD_INDEX_MAGIC,
    PAYLOAD_INDEX_VERSION,
};
use crate::format::payload_log::{checkpoint_tag, encode_frame, FrameKind, PAYLOAD_LOG_HEADER_LEN};
use crate::format::wal::Op;
use crate::format::{peek_version, DecodeError};
use crate::storage::fsio;
use crate::storage::payload_log::{self, CompactionWriter, PayloadLogFile, Writeback};
use crate::storage::vfs::{Vfs, VfsFile};
use crate::types::{Id, IdMap, IdMapBuilder, RecoveryPolicy};

/// The payload snapshot file, written at each checkpoint.
pub const PAYLOAD_INDEX_FILE: &str = "payloads.idx";
/// The staging buffers of [`PayloadStore::stage`] are kept between records up to this
/// size (a batch of thousands of records grows them further, once).
const STAGING_BYTES_KEPT_MAX: usize = 1 << 20;
/// Largest payload snapshot keeldb will read.
const PAYLOAD_INDEX_BYTES_MAX: u64 = 64 << 30;

/// What opening the payload log found, for stats.
#[derive(Debug, Clone, Default)]
pub struct PayloadOpenReport {
    /// Whether a valid snapshot was read (so only frames after it were replayed).
    pub snapshot_used: bool,
    /// Frames read from the payload log.
    pub records_replayed: u64,
    /// Bytes cut off its end (frames of records after the checkpoint, or a torn tail).
    pub bytes_truncated: u64,
    /// Damaged ranges skipped under `Salvage`.
    pub corrupt_records_skipped: u64,
    /// One line per problem found.
    pub warnings: Vec<String>,
}

/// The payloads of a collection.
#[derive(Debug)]
pub struct PayloadStore {
    log: PayloadLogFile,
    index: IdMap<PayloadLoc>,
    /// Sum of the frame lengths the index points at.
    live_bytes: u64,
    /// Between [`PayloadStore::begin_buffering`] and [`PayloadStore::end_buffering`]: frames
    /// are buffered, not written one log record at a time.
    buffering: bool,
    /// The index changes [`PayloadStore::stage`] made ready and
    /// [`PayloadStore::apply_staged`] makes; kept, like `frames`, so that staging a record
    /// allocates nothing once they have grown (replay stages one record after another).
    staged: Vec<PayloadChange>,
    /// The frames of the record being staged, encoded before they are appended.
    frames: Vec<u8>,
    /// Generations below the current one that open found (left by a compaction that crashed
    /// after its rename): deleted by [`PayloadStore::finish_open`].
    superseded: Vec<u64>,
    /// The collection's uid, written into the snapshot and a compaction's new generation.
    uid: u32,
}

/// A change staged by [`PayloadStore::stage`]: `id`'s payload is now at `loc`, or gone.
#[derive(Debug)]
struct PayloadChange {
    id: Id,
    loc: Option<PayloadLoc>,
}

/// What compaction copies: the live frames as of a checkpoint, in a generation that stays
/// readable through the handle whatever happens to the store meanwhile.
#[derive(Debug)]
pub struct CompactionSource {
    file: Arc<dyn VfsFile>,
    path: PathBuf,
    generation: u64,
    uid: u32,
    /// The log's length at the checkpoint: frames after it are copied at the end.
    end: u64,
    /// Live frames, by offset.
    live: Vec<PayloadLoc>,
}

/// The new generation with the live frames copied, and where each one went.
pub struct CompactionCopy {
    writer: CompactionWriter,
    /// `(old offset, new offset)`, sorted by old offset.
    moved: Vec<(u64, u64)>,
    end: u64,
}

impl PayloadStore {
    /// Opens the current payload log of the collection in `dir` and rebuilds the index as
    /// of `checkpoint_lsn` (from the snapshot if it is valid and not ahead of the
    /// checkpoint, else from the whole log), cutting the log after the last frame kept.
    /// `upgrading`: the collection is of format 1, which had no payload log; one is
    /// created. Otherwise a missing payload log is corruption.
    pub fn open(
        fs: &dyn Vfs,
        dir: &Path,
        checkpoint: &IndexSnapshot,
        policy: RecoveryPolicy,
        upgrading: bool,
        uid: u32,
    ) -> Result<(PayloadStore, PayloadOpenReport)> {
        let checkpoint_lsn = checkpoint.checkpoint_lsn;
        let mut report = PayloadOpenReport::default();
        let (mut log, superseded) =
            open_current_generation(fs, dir, checkpoint, upgrading, uid, policy, &mut report)?;
        // What the checkpoint synced of this generation (a compaction may have installed a
        // newer one since): at least the header.
        let synced_end = match checkpoint.payload_generation == log.generation() {
            true => checkpoint.payload_log_end,
            false => PAYLOAD_LOG_HEADER_LEN as u64,
        };
        let snapshot = read_snapshot(fs, dir, &log, checkpoint_lsn, uid, policy, &mut report)?;
        // A log shorter than what was synced is reported once: by the snapshot's check if
        // that found it.
        let synced_end = match report.corrupt_records_skipped {
            0 => synced_end,
            _ => synced_end.min(log.len_bytes()),
        };
        let (mut index, mut live_bytes, from) = match snapshot {
            Some((s, loaded)) => {
                report.snapshot_used = true;
                (loaded.index, loaded.live_bytes, s.log_end)
            }
            None => (IdMap::default(), 0, PAYLOAD_LOG_HEADER_LEN as u64),
        };
        let outcome = log.scan(
            from,
            checkpoint_lsn,
            synced_end,
            policy,
            |offset, header, body| {
                let old = match body.payload {
                    Some(_) => {
                        let frame_len = u32::try_from(header.frame_len()).unwrap_or(u32::MAX);
                        live_bytes += u64::from(frame_len);
                        index.insert(body.id, PayloadLoc { offset, frame_len })
                    }
                    None => index.remove(&body.id),
                };
                live_bytes -= old.map_or(0, |old| u64::from(old.frame_len));
            },
        )?;
        report.records_replayed = outcome.frames_read;
        report.corrupt_records_skipped += outcome.corrupt_ranges_skipped;
        report.warnings.extend(outcome.warnings);
        if outcome.end_offset < log.len_bytes() {
            // Cut by `finish_open`, once the collection is known to open.
            report.bytes_truncated = log.len_bytes() - outcome.end_offset;
            log.forget_tail(outcome.end_offset);
        }
        log.refresh_view();
        Ok((
            PayloadStore {
                log,
                index,
                live_bytes,
                buffering: false,
                staged: Vec::new(),
                frames: Vec::new(),
                superseded,
                uid,
            },
            report,
        ))
    }

    /// The collection's uid from now on (an older collection gets one when it is upgraded,
    /// after this store was opened).
    pub fn set_uid(&mut self, uid: u32) {
        self.uid = uid;
    }

    /// Whether `id` has a payload.
    pub fn contains(&self, id: &Id) -> bool {
        self.index.contains_key(id)
    }

    /// A copy of `id`'s payload, if it has one.
    pub fn get(&self, id: &Id) -> Result<Option<Vec<u8>>> {
        match self.index.get(id) {
            Some(&loc) => self.log.read_payload(loc, id).map(Some),
            None => Ok(None),
        }
    }

    /// Where `id`'s payload frame is, if it has one.
    pub fn loc(&self, id: &Id) -> Option<PayloadLoc> {
        self.index.get(id).copied()
    }

    /// The payload of `id`'s frame at `loc` (from [`PayloadStore::loc`]) into `out`
    /// (cleared first). The frame is checked as by [`PayloadStore::get`].
    pub fn read_at(&self, loc: PayloadLoc, id: &Id, out: &mut Vec<u8>) -> Result<()> {
        self.log.read_payload_into(loc, id, out)
    }

    /// Appends the frames the ops of record `lsn` call for and stages the index changes
    /// to make, by [`PayloadStore::apply_staged`], once the vector side is applied too.
    /// `exists` says whether an id has a record before this batch. The index does not
    /// change here, so a failed append leaves it as it was (and the collection is poisoned
    /// by the caller).
    pub fn stage(&mut self, lsn: u64, ops: &[Op<'_>], exists: impl Fn(&Id) -> bool) -> Result<()> {
        // Existence and payload presence of the ids this batch touched so far. A batch of
        // one op (one write, or a replayed record of one) needs no map: nothing came before.
        let mut touched: HashMap<&Id, (bool, bool), foldhash::fast::RandomState> =
            HashMap::default();
        if ops.len() > 1 {
            touched.reserve(ops.len());
        }
        let mut frames = std::mem::take(&mut self.frames);
        frames.clear();
        let changes = &mut self.staged;
        changes.clear();
        let base = self.log.len_bytes();
        for op in ops {
            let id = op.id();
            let (exists_now, has_payload) = touched
                .get(id)
                .copied()
                .unwrap_or_else(|| (exists(id), self.index.contains_key(id)));
            let (exists_after, payload) = match op {
                Op::Upsert { payload, .. } => (true, *payload),
                Op::Delete { .. } => (false, None),
                Op::SetPayload { .. } if !exists_now => {
                    continue; // the record was deleted by an earlier op: nothing to set
                }
                Op::SetPayload { payload, .. } => (true, *payload),
            };
            match payload {
                Some(p) => {
                    let offset = base + frames.len() as u64;
                    let frame_len = encode_frame(&mut frames, FrameKind::Store, lsn, id, p);
                    changes.push(PayloadChange {
                        id: id.clone(),
                        loc: Some(PayloadLoc { offset, frame_len }),
                    });
                }
                None if has_payload => {
                    encode_frame(&mut frames, FrameKind::Delete, lsn, id, &[]);
                    changes.push(PayloadChange {
                        id: id.clone(),
                        loc: None,
                    });
                }
                None => {}
            }
            if ops.len() > 1 {
                touched.insert(id, (exists_after, payload.is_some()));
            }
        }
        let appended = match self.buffering {
            true => self.log.append_buffered(&frames),
            false => self.log.append(&frames),
        };
        // Kept for the next record unless a large batch grew it: memory held for good.
        if frames.capacity() <= STAGING_BYTES_KEPT_MAX {
            self.frames = frames;
        }
        appended?;
        self.log.refresh_view();
        Ok(())
    }

    /// The collection opens: cuts the payload log's frames after the checkpoint that
    /// [`PayloadStore::open`] found (replay has written the log's records again since) and
    /// deletes the generations the current one superseded. Until this runs the files are as
    /// opening found them, so a refused open changes nothing.
    pub fn finish_open(&mut self, fs: &dyn Vfs, dir: &Path) -> Result<()> {
        self.log.cut_forgotten_tail()?;
        for &old in &self.superseded {
            payload_log::remove(fs, dir, old)?;
        }
        if !self.superseded.is_empty() {
            fsio::sync_dir(fs, dir)?;
        }
        self.superseded.clear();
        Ok(())
    }

    /// Frames are buffered from now on until [`PayloadStore::end_buffering`] (log replay)
    /// or [`PayloadStore::end_group`] (a group of commits, whose frames stay buffered). The
    /// index changes as usual, so it points at frames that are not in the file yet; reads
    /// find them in the buffer, and [`PayloadStore::write_buffered`] must come before a sync.
    pub fn begin_buffering(&mut self) {
        self.buffering = true;
    }

    /// Ends a group of commits: the frames stay buffered, for later groups to add to, until
    /// the buffer fills or [`PayloadStore::write_buffered`]; appends outside a group write
    /// them out first. The write-ahead log holds every buffered frame's record, so this
    /// file, which replay rebuilds after the checkpoint, need not have them for a write to
    /// be acknowledged. Fails as [`PayloadStore::write_buffered`] does if a write-out during
    /// the group failed: then frames of earlier groups may be lost too, which are in the log
    /// (their writes were answered once logged as asked).
    pub fn end_group(&mut self) -> Result<()> {
        self.buffering = false;
        self.check_written()
    }

    /// Ends buffering and writes out the buffered frames (after replay), as
    /// [`PayloadStore::write_buffered`].
    pub fn end_buffering(&mut self, writeback: Writeback) -> Result<()> {
        self.buffering = false;
        self.write_buffered(writeback)
    }

    /// Writes out the buffered frames. Fails if they, or frames written out earlier while
    /// buffering, did not reach the file: then the index points at frames that are not
    /// there (reading one fails with `Poisoned`), and the caller must poison its collection
    /// and acknowledge none of the records it applied since `begin_buffering` that it has
    /// not answered already (those are in the log, which a reopen replays).
    pub fn write_buffered(&mut self, writeback: Writeback) -> Result<()> {
        self.log.write_buffered(writeback)?;
        self.check_written()?;
        self.log.refresh_view();
        Ok(())
    }

    /// Why buffered frames could not be written, if that happened: the index then points
    /// at frames that are not in the file, of writes that may have been acknowledged (their
    /// records are in the write-ahead log), so the collection refuses every read until a
    /// reopen rebuilds them.
    pub fn lost_frames(&self) -> Option<&str> {
        self.log.unwritten()
    }

    fn check_written(&self) -> Result<()> {
        match self.log.unwritten() {
            Some(cause) => Err(Error::Poisoned {
                what: format!("payload log {}", self.log.path().display()),
                cause: cause.to_owned(),
            }),
            None => Ok(()),
        }
    }

    /// Makes room in the index for `additional` more ids of `like`'s kind (for replay).
    pub fn try_reserve_like(&mut self, like: &Id, additional: usize) {
        self.index.try_reserve_like(like, additional);
    }

    /// Applies the changes the last [`PayloadStore::stage`] staged to the index.
    pub fn apply_staged(&mut self) {
        for PayloadChange { id, loc } in self.staged.drain(..) {
            let old = match loc {
                Some(loc) => {
                    self.live_bytes += u64::from(loc.frame_len);
                    self.index.insert(id, loc)
                }
                None => self.index.remove(&id),
            };
            if let Some(old) = old {
                self.live_bytes -= u64::from(old.frame_len);
            }
        }
        if self.staged.capacity() * std::mem::size_of::<PayloadChange>() > STAGING_BYTES_KEPT_MAX {
            self.staged = Vec::new();
        }
    }

    /// Makes every frame appended so far durable.
    pub fn sync(&self) -> Result<()> {
        self.log.sync()
    }

    /// Starts writing the payload log's written frames back, without waiting (a hint).
    pub fn start_writeback(&self) {
        self.log.start_writeback();
    }

    /// Encodes the snapshot file (`payloads.idx`) of the index as it is, covering the
    /// log records up to `checkpoint_lsn`, into `flush` a chunk at a time. Every frame must
    /// be written out first ([`PayloadStore::write_buffered`]).
    pub fn encode_snapshot(
        &self,
        checkpoint_lsn: u64,
        flush: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        self.log.check_all_written("its snapshot")?;
        payload_index::encode_to(
            self.uid,
            self.log.generation(),
            checkpoint_lsn,
            self.log.len_bytes(),
            self.index.iter_ref().map(|(id, loc)| (id, *loc)),
            flush,
        )
    }

    /// Ids with a payload.
    pub fn count(&self) -> u64 {
        self.index.len() as u64
    }

    /// Size of the payload log.
    pub fn log_bytes(&self) -> u64 {
        self.log.len_bytes()
    }

    /// Bytes of the frames the index points at.
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// Bytes of superseded and delete frames: what compaction would reclaim.
    pub fn garbage_bytes(&self) -> u64 {
        (self.log.len_bytes() - PAYLOAD_LOG_HEADER_LEN as u64).saturating_sub(self.live_bytes)
    }

    /// The generation of the current log.
    pub fn generation(&self) -> u64 {
        self.log.generation()
    }

    /// What compaction copies, taken right after a checkpoint (which wrote every frame out:
    /// the copy reads them from the file).
    pub fn compaction_source(&self) -> Result<CompactionSource> {
        self.log.check_all_written("a compaction")?;
        let mut live: Vec<PayloadLoc> = self.index.values().copied().collect();
        live.sort_unstable();
        Ok(CompactionSource {
            file: self.log.handle(),
            path: self.log.path().to_owned(),
            generation: self.log.generation(),
            uid: self.uid,
            end: self.log.len_bytes(),
            live,
        })
    }

    /// Checks, before anything is installed, that every index entry compaction did not see
    /// change was copied: afterwards the swap cannot fail.
    pub fn check_compaction(&self, copy: &CompactionCopy) -> Result<()> {
        for (id, loc) in self.index.iter_ref() {
            let copied = loc.offset >= copy.end
                || copy
                    .moved
                    .binary_search_by_key(&loc.offset, |&(old, _)| old)
                    .is_ok();
            if !copied {
                return Err(Error::corrupted(
                    self.log.path(),
                    loc.offset,
                    format!("compaction did not copy id {id}'s payload"),
                ));
            }
        }
        Ok(())
    }

    /// Copies the frames appended since the compaction source was taken to the new
    /// generation, fsyncs it and renames it into place. Called under the writer lock (so
    /// nothing is appended meanwhile) and a read lock. On error nothing was installed and
    /// the temporary file is gone.
    pub fn install_compaction(
        &self,
        copy: CompactionCopy,
        checkpoint_lsn: u64,
    ) -> Result<InstalledCompaction> {
        let CompactionCopy {
            mut writer,
            moved,
            end,
            ..
        } = copy;
        let tail_start = writer.len_bytes();
        let copied = writer
            .copy_range(
                &*self.log.handle(),
                self.log.path(),
                end,
                self.log.len_bytes(),
            )
            .and_then(|()| writer.sync());
        if let Err(e) = copied {
            writer.abandon();
            return Err(e);
        }
        let log = writer.install(checkpoint_tag(checkpoint_lsn))?;
        Ok(InstalledCompaction {
            log,
            moved,
            end,
            tail_start,
        })
    }

    /// Points the index at the installed generation and makes it the current log. Returns
    /// the superseded generation, for the caller to delete. Called under the state lock.
    pub fn swap(&mut self, installed: InstalledCompaction) -> u64 {
        let InstalledCompaction {
            log,
            moved,
            end,
            tail_start,
        } = installed;
        for loc in self.index.values_mut() {
            loc.offset = if loc.offset >= end {
                loc.offset - end + tail_start
            } else {
                // `check_compaction` found every one of these.
                moved
                    .binary_search_by_key(&loc.offset, |&(old, _)| old)
                    .map_or(loc.offset, |at| moved[at].1)
            };
        }
        let old = std::mem::replace(&mut self.log, log);
        self.log.refresh_view();
        old.generation()
    }
}

/// A new generation renamed into place, not yet swapped in.
pub struct InstalledCompaction {
    log: PayloadLogFile,
    moved: Vec<(u64, u64)>,
    end: u64,
    tail_start: u64,
}

impl CompactionSource {
    /// Copies every live frame (checking each one's CRC: a damaged frame stops compaction
    /// rather than being laundered into the new generation) into the next generation's
    /// temporary file, without any lock: the source frames are never modified.
    pub fn copy(self, fs: Arc<dyn Vfs>, dir: &Path) -> Result<CompactionCopy> {
        let generation = self.generation.checked_add(1).ok_or_else(|| {
            Error::corrupted(
                dir.join(payload_log::file_name(self.generation)),
                0,
                "the payload log's generation is the largest there is: it cannot be compacted",
            )
        })?;
        let mut writer = CompactionWriter::create(fs, dir, generation, self.uid)?;
        let mut moved = Vec::with_capacity(self.live.len());
        for loc in &self.live {
            let frame = match payload_log::read_frame(&*self.file, &self.path, *loc) {
                Ok(frame) => frame,
                Err(e) => {
                    writer.abandon();
                    return Err(e);
                }
            };
            moved.push((loc.offset, writer.len_bytes()));
            if let Err(e) = writer.write(&frame) {
                writer.abandon();
                return Err(e);
            }
        }
        if let Err(e) = writer.sync() {
            writer.abandon();
            return Err(e);
        }
        Ok(CompactionCopy {
            writer,
            moved,
            end: self.end,
        })
    }
}

impl CompactionCopy {
    /// Gives up (the collection closed meanwhile): removes the temporary file.
    pub fn abandon(self) {
        self.writer.abandon();
    }
}

/// Creates the payload log of a new collection (generation 1), fsynced.
pub fn create_files(fs: &dyn Vfs, dir: &Path, uid: u32) -> Result<()> {
    PayloadLogFile::create(fs, dir, 1, uid).map(|_| ())
}

/// Opens the current generation and says which lower one to delete (`finish_open` deletes
/// it once the collection's files are read): the one just below it, which a crash after a
/// compaction's rename leaves, if its header names that generation and this collection.
///
/// ids.idx (`checkpoint`) names the generation its checkpoint synced, `expected`, and the
/// uid it was written with, `index_uid`. A compaction renames `expected + 1` into place
/// before the checkpoint that names it, so the current log is the highest of those two that
/// exists, and once ids.idx has a uid, a compaction's `expected + 1` has it too. A higher
/// generation refuses the open under either policy: it is not this collection's, or ids.idx
/// is an older copy, and left in place it would pass for a compaction's once a later
/// checkpoint named the generation below it. Other lower ones are left alone, unread, with
/// a warning. When neither of the two exists, `strict` refuses and `salvage` reads the
/// highest lower one (an older ids.idx put back after compactions leaves that state).
/// `expected` 0 (an ids.idx of version 1, which did not name it) takes the highest and
/// deletes the rest. A format-1 collection (`upgrading`) without a payload log gets an
/// empty generation 1, renamed into place whole.
fn open_current_generation(
    fs: &dyn Vfs,
    dir: &Path,
    checkpoint: &IndexSnapshot,
    upgrading: bool,
    uid: u32,
    policy: RecoveryPolicy,
    report: &mut PayloadOpenReport,
) -> Result<(PayloadLogFile, Vec<u64>)> {
    let (expected, index_uid) = (checkpoint.payload_generation, checkpoint.uid);
    let generations = payload_log::list_generations(fs, dir)?;
    let Some(&highest) = generations.last() else {
        if !upgrading {
            return Err(Error::corrupted(
                dir.join(payload_log::file_name(expected.max(1))),
                0,
                "the collection has no payload log (payloads-<n>.log): file is missing",
            ));
        }
        // Renamed into place whole: a crash leaves no log or one open accepts.
        let header = crate::format::payload_log::encode_header(1, uid);
        fsio::write_atomic(fs, dir, &payload_log::file_name(1), &header)?;
        return Ok((PayloadLogFile::open(fs, dir, 1, uid)?, Vec::new()));
    };
    if expected == 0 {
        let superseded = generations[..generations.len() - 1].to_vec();
        return Ok((PayloadLogFile::open(fs, dir, highest, uid)?, superseded));
    }
    let next = expected.saturating_add(1);
    if highest > next {
        return Err(Error::corrupted(
            dir.join(payload_log::file_name(highest)),
            0,
            format!(
                "payload log generation {highest} is newer than any compaction of this \
                 collection made: ids.idx names generation {expected}, and a compaction makes \
                 at most {next}. Either the file is not this collection's, or ids.idx is an \
                 older copy; move the file away (or put back the matching ids.idx)"
            ),
        ));
    }
    let current = if generations.contains(&next) {
        Some(next)
    } else {
        generations.contains(&expected).then_some(expected)
    };
    let Some(current) = current else {
        let reason = format!(
            "ids.idx names payload log generation {expected}, which is missing (the \
             generations there are {generations:?})"
        );
        let path = dir.join(payload_log::file_name(expected));
        if policy == RecoveryPolicy::Strict {
            return Err(Error::corrupted(path, 0, reason));
        }
        report.corrupt_records_skipped += 1;
        report.warnings.push(format!(
            "{}: {reason}; read generation {highest} instead",
            path.display()
        ));
        return Ok((PayloadLogFile::open(fs, dir, highest, uid)?, Vec::new()));
    };
    let log = PayloadLogFile::open(fs, dir, current, uid)?;
    if current != expected && log.based_on() != 0 {
        let ours = checkpoint_tag(checkpoint.checkpoint_lsn);
        if log.based_on() != ours {
            // A compaction renamed it into place beside another ids.idx than this one: this
            // ids.idx is older (a backup copied over a newer directory) or newer, and in
            // either case P+1 is not the compaction a crash interrupted.
            return Err(Error::corrupted(
                log.path(),
                24,
                format!(
                    "payload log generation {next} was made by a compaction after a checkpoint \
                     (tag {:#010x}) that ids.idx does not hold (its checkpoint at sequence \
                     number {} has tag {ours:#010x}): ids.idx is not the one it was made \
                     beside, as when a backup is copied over a newer directory. Restore \
                     backups into an empty directory, or move this file away",
                    log.based_on(),
                    checkpoint.checkpoint_lsn
                ),
            ));
        }
    }
    if current != expected && index_uid != 0 && log.uid() != index_uid {
        // ids.idx was written with a uid, so every compaction since wrote it too: a P+1
        // without it is not this collection's compaction.
        return Err(Error::corrupted(
            log.path(),
            12,
            format!(
                "payload log generation {next} names uid {}, but ids.idx names {index_uid}: \
                 this collection's compaction did not write it; move it away",
                log.uid()
            ),
        ));
    }
    // The generation just below the current one is the one a compaction replaced: a crash
    // before its step 5 deleted it leaves it (beside ids.idx of either generation). Its
    // header is checked before it is marked for deletion; older ones are left alone.
    let replaced = current - 1;
    let mut leftover = Vec::new();
    for old in generations.iter().copied().filter(|&g| g < current) {
        let ours = old == replaced && PayloadLogFile::open(fs, dir, old, uid).is_ok();
        match ours {
            true => leftover.push(old),
            false => report.warnings.push(format!(
                "{}: payload log generation {old} is not the one the current {current} \
                 replaced; left in place and not read",
                dir.join(payload_log::file_name(old)).display()
            )),
        }
    }
    Ok((log, leftover))
}

/// The snapshot, if it can be used: valid, of the current generation, not ahead of the
/// checkpoint and within the log. A missing or stale one is normal after some crashes; a
/// damaged one, or one claiming more log than there is, is reported.
fn read_snapshot(
    fs: &dyn Vfs,
    dir: &Path,
    log: &PayloadLogFile,
    checkpoint_lsn: u64,
    uid: u32,
    policy: RecoveryPolicy,
    report: &mut PayloadOpenReport,
) -> Result<Option<(PayloadSnapshot, LoadedIndex)>> {
    let path = dir.join(PAYLOAD_INDEX_FILE);
    match fs.kind(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        _ => {}
    }
    let map = fsio::map_small(fs, &path, PAYLOAD_INDEX_BYTES_MAX)?;
    let bytes = map.bytes();
    if let Some(v) =
        peek_version(bytes, &PAYLOAD_INDEX_MAGIC).filter(|v| *v > PAYLOAD_INDEX_VERSION)
    {
        return Err(Error::UnsupportedVersion {
            file: path,
            what: "format version",
            found: v,
            supported: PAYLOAD_INDEX_VERSION,
        });
    }
    let mut sink = IndexSink::default();
    let decoded = payload_index::decode_with(bytes, &mut sink).and_then(|s| {
        let index = sink
            .builder
            .finish()
            .map_err(|reason| DecodeError::new(bytes.len(), reason))?;
        let live_bytes = sink.live_bytes;
        Ok((s, LoadedIndex { index, live_bytes }))
    });
    let (snapshot, index) = match decoded {
        Ok(decoded) => decoded,
        Err(e) => {
            // Only an accelerator: the log itself is intact, so replay it whole.
            report.warnings.push(format!(
                "{}: unreadable at byte {} ({}); replayed the whole payload log",
                path.display(),
                e.offset,
                e.reason
            ));
            return Ok(None);
        }
    };
    if let Err(e) = fsio::check_uid(&path, 12, uid, snapshot.uid) {
        // Another collection's: only an accelerator, like a damaged one.
        report
            .warnings
            .push(format!("{e}; replayed the whole payload log"));
        return Ok(None);
    }
    if snapshot.checkpoint_lsn > checkpoint_lsn {
        // Written right after ids.idx, a snapshot is never ahead of it: ids.idx is older
        // than the rest of the collection (an older copy put back), and whatever the
        // checkpoints in between emptied from the log is gone.
        let reason = format!(
            "the payload snapshot is a checkpoint at record {}, ahead of ids.idx at record \
             {checkpoint_lsn}: ids.idx is older than the collection's other files",
            snapshot.checkpoint_lsn
        );
        match policy {
            RecoveryPolicy::Strict => {
                let at = PAYLOAD_INDEX_CHECKPOINT_LSN_AT as u64;
                return Err(Error::corrupted(&path, at, reason));
            }
            RecoveryPolicy::Salvage => {
                report.corrupt_records_skipped += 1;
                report.warnings.push(format!(
                    "{}: {reason}; replayed the whole payload log up to ids.idx",
                    path.display()
                ));
                return Ok(None);
            }
        }
    }
    if snapshot.generation != log.generation() {
        return Ok(None);
    }
    if snapshot.log_end > log.len_bytes() {
        let reason = format!(
            "the snapshot covers {} bytes of payload log, the file has {}",
            snapshot.log_end,
            log.len_bytes()
        );
        match policy {
            RecoveryPolicy::Strict => {
                return Err(Error::corrupted(log.path(), log.len_bytes(), reason))
            }
            RecoveryPolicy::Salvage => {
                report.corrupt_records_skipped += 1;
                report.warnings.push(format!(
                    "{}: {reason}; replayed what is there",
                    log.path().display()
                ));
                return Ok(None);
            }
        }
    }
    Ok(Some((snapshot, index)))
}

/// The payload index as the snapshot file has it.
struct LoadedIndex {
    index: IdMap<PayloadLoc>,
    /// Sum of its frame lengths (summed while decoding: a pass over a table of a million
    /// entries afterwards costs as much as a tenth of the open).
    live_bytes: u64,
}

/// Builds the index straight from the snapshot file.
#[derive(Default)]
struct IndexSink {
    builder: IdMapBuilder<PayloadLoc>,
    live_bytes: u64,
}

impl payload_index::EntrySink for IndexSink {
    fn reserve(&mut self, entries: usize) {
        self.builder.reserve(entries);
    }

    fn entry(&mut self, id: Id, loc: PayloadLoc) -> std::result::Result<(), String> {
        self.live_bytes += u64::from(loc.frame_len);
        self.builder.push(id, loc)
    }
}
