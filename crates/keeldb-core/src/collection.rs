//! A collection: one directory holding a config, a vector file, an id index and a log.
//!
//! Write path (one writer at a time, under `Collection::writer`):
//! validate and encode the whole batch, reserve vector slots, append the record to the log
//! with the requested durability, then apply it to the in-memory index and the mapping
//! (under a brief write lock on `Collection::state`). A failed append or sync poisons the
//! collection: nothing is acknowledged after bytes whose fate is unknown.
//!
//! Slots are handed out copy-on-write: an upsert always writes a slot that the last
//! checkpoint does not reference, and slots freed since the checkpoint are reused only after
//! the next one. So the checkpointed slots are never written between checkpoints, and replay
//! from the checkpoint, which is deterministic, rebuilds exactly the same state.
//!
//! Checkpoint: msync the vector file, write the index atomically (it records the last
//! applied lsn), and only then empty the log.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::error::{Error, Result};
use crate::format::config::{self, CollectionConfig, COLLECTION_FORMAT_VERSION, CONFIG_BYTES_MAX};
use crate::format::index::{self, IndexSnapshot, INDEX_MAGIC, INDEX_VERSION};
use crate::format::wal::{self as walfmt, BatchEncoder, Op, WAL_HEADER_LEN, WAL_VERSION};
use crate::format::{id_encoded_len, peek_version};
use crate::storage::fsio;
use crate::storage::vectors::VectorFile;
use crate::types::{
    Durability, Id, Metric, RecoveryPolicy, BATCH_RECORDS_MAX, LSN_MAX, WAL_RECORD_BYTES_MAX,
};
use crate::wal::replay::replay;
use crate::wal::writer::WalWriter;

/// The collection's config file.
pub const CONFIG_FILE: &str = "collection.json";
/// The vector file.
pub const VECTORS_FILE: &str = "vectors.dat";
/// The id index written at each checkpoint.
pub const INDEX_FILE: &str = "ids.idx";
/// The write-ahead log.
pub const WAL_FILE: &str = "vectors.wal";

/// Largest id index file keeldb will read (a billion short entries).
const INDEX_BYTES_MAX: u64 = 64 << 30;

/// Settings a collection takes from its database.
#[derive(Debug, Clone, Copy)]
pub struct CollectionOptions {
    /// Durability of writes that do not name one.
    pub durability: Durability,
    /// What replay does with damage in the middle of the log.
    pub recovery: RecoveryPolicy,
    /// The log size past which a write triggers a checkpoint.
    pub checkpoint_threshold_bytes: u64,
}

/// Counters and sizes, for `stats()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionStats {
    /// Live records.
    pub count: u64,
    /// Vector dimension.
    pub dimension: u32,
    /// Distance metric.
    pub metric: Metric,
    /// Size of the vector file.
    pub vector_file_bytes: u64,
    /// Slots the vector file can hold now.
    pub capacity_slots: u64,
    /// Slots handed out so far (live, pending reuse, or free).
    pub slot_high_water: u64,
    /// Size of the log, including bytes not yet written out.
    pub wal_bytes: u64,
    /// Size of the id index file.
    pub index_file_bytes: u64,
    /// Sequence number of the last applied record.
    pub last_lsn: u64,
    /// Sequence number covered by the last checkpoint.
    pub checkpoint_lsn: u64,
    /// Checkpoints run since open (including the one after replay).
    pub checkpoints: u64,
    /// Log records replayed at open.
    pub records_replayed: u64,
    /// Damaged log records skipped at open under `Salvage`.
    pub corrupt_records_skipped: u64,
    /// Bytes of torn log tail cut off at open.
    pub torn_bytes_truncated: u64,
    /// What open skipped or repaired, one line each.
    pub warnings: Vec<String>,
    /// Whether an earlier failure has poisoned the collection.
    pub poisoned: bool,
}

/// The in-memory state readers see.
#[derive(Debug)]
struct State {
    vectors: VectorFile,
    ids: HashMap<Id, u32>,
    /// Free as of the last checkpoint: may be written now.
    free_slots: Vec<u32>,
    /// Freed since the last checkpoint: the checkpoint may still reference them.
    pending_free: Vec<u32>,
    slot_high_water: u32,
    last_lsn: u64,
    checkpoint_lsn: u64,
}

impl State {
    fn take_slot(&mut self) -> u32 {
        self.free_slots.pop().unwrap_or_else(|| {
            self.slot_high_water += 1;
            self.slot_high_water - 1
        })
    }

    /// Slots a batch with `upserts` upserts could need beyond those handed out already.
    fn slots_needed(&self, upserts: usize) -> u64 {
        u64::from(self.slot_high_water) + upserts.saturating_sub(self.free_slots.len()) as u64
    }

    /// Applies one decoded record. Slots were reserved before the record was logged, so
    /// the only failures are bounds errors that would mean a bug.
    /// Returns how many deletes removed a live record.
    fn apply(&mut self, lsn: u64, ops: &[Op<'_>]) -> Result<u64> {
        let upserts = ops
            .iter()
            .filter(|op| matches!(op, Op::Upsert { .. }))
            .count();
        self.vectors.reserve(self.slots_needed(upserts))?;
        let mut removed = 0;
        for op in ops {
            match op {
                Op::Upsert { id, vector_le } => {
                    let slot = self.take_slot();
                    self.vectors.write_slot_le(slot, vector_le)?;
                    if let Some(old) = self.ids.insert(id.clone(), slot) {
                        self.pending_free.push(old);
                    }
                }
                Op::Delete { id } => {
                    if let Some(old) = self.ids.remove(id) {
                        self.pending_free.push(old);
                        removed += 1;
                    }
                }
            }
        }
        self.last_lsn = lsn;
        Ok(removed)
    }

    fn snapshot(&self, dimension: u32) -> IndexSnapshot {
        let mut free_slots = self.free_slots.clone();
        free_slots.extend_from_slice(&self.pending_free);
        IndexSnapshot {
            version: INDEX_VERSION,
            dimension,
            checkpoint_lsn: self.last_lsn,
            slot_high_water: self.slot_high_water,
            entries: self
                .ids
                .iter()
                .map(|(id, slot)| (id.clone(), *slot))
                .collect(),
            free_slots,
        }
    }
}

/// The writer's side: the log and the poison flag.
#[derive(Debug)]
struct Writer {
    wal: WalWriter,
    /// Why writes are refused, once a write, sync or checkpoint failed.
    poisoned: Option<String>,
    checkpoints: u64,
}

impl Writer {
    /// Marks the collection poisoned by `error` and hands the error back.
    fn poison(&mut self, error: Error) -> Error {
        self.poisoned.get_or_insert_with(|| error.to_string());
        error
    }
}

/// What open learned, kept for stats.
#[derive(Debug, Clone, Default)]
struct OpenReport {
    records_replayed: u64,
    corrupt_records_skipped: u64,
    torn_bytes_truncated: u64,
    warnings: Vec<String>,
}

/// An open collection. Shared between threads; every method takes `&self`.
#[derive(Debug)]
pub struct Collection {
    name: String,
    dir: PathBuf,
    config: CollectionConfig,
    options: CollectionOptions,
    report: OpenReport,
    writer: Mutex<Option<Writer>>,
    state: RwLock<Option<State>>,
}

/// Creates a collection's files in `dir` (which must exist and be empty), each durable.
/// The caller renames `dir` into place and syncs the parent.
pub fn create_files(dir: &Path, dimension: u32, metric: Metric) -> Result<()> {
    let config = CollectionConfig {
        format_version: COLLECTION_FORMAT_VERSION,
        dimension,
        metric,
    };
    fsio::write_atomic(dir, CONFIG_FILE, &config::encode(&config))?;
    VectorFile::create(&dir.join(VECTORS_FILE), dimension)?;
    WalWriter::create(&dir.join(WAL_FILE), dimension)?;
    let empty = IndexSnapshot {
        version: INDEX_VERSION,
        dimension,
        ..IndexSnapshot::default()
    };
    fsio::write_atomic(dir, INDEX_FILE, &index::encode(&empty))
}

impl Collection {
    /// Opens the collection in `dir`, replaying its log and checkpointing what was replayed.
    pub fn open(name: &str, dir: &Path, options: CollectionOptions) -> Result<Collection> {
        let config = read_config(dir)?;
        fsio::remove_stale_temps(dir)?;
        let snapshot = read_index(dir, config.dimension)?;
        let vectors = VectorFile::open(&dir.join(VECTORS_FILE), config.dimension)?;
        if u64::from(snapshot.slot_high_water) > vectors.capacity_slots() {
            return Err(Error::corrupted(
                dir.join(VECTORS_FILE),
                vectors.len_bytes(),
                format!(
                    "the index uses {} slots but the file holds {}",
                    snapshot.slot_high_water,
                    vectors.capacity_slots()
                ),
            ));
        }
        let mut state = State {
            vectors,
            ids: snapshot.entries.into_iter().collect(),
            free_slots: snapshot.free_slots,
            pending_free: Vec::new(),
            slot_high_water: snapshot.slot_high_water,
            last_lsn: snapshot.checkpoint_lsn,
            checkpoint_lsn: snapshot.checkpoint_lsn,
        };
        let (wal, report) = recover_log(dir, &config, options.recovery, &mut state)?;
        let needs_checkpoint = wal.len_bytes() > WAL_HEADER_LEN as u64;
        // The open-time checkpoint also empties a torn tail: the planted bug skips it too.
        #[cfg(feature = "planted-bugs")]
        let needs_checkpoint =
            needs_checkpoint && !crate::planted::active(crate::planted::Bug::AppendAfterTornTail);
        let collection = Collection {
            name: name.to_owned(),
            dir: dir.to_owned(),
            config,
            options,
            report,
            writer: Mutex::new(Some(Writer {
                wal,
                poisoned: None,
                checkpoints: 0,
            })),
            state: RwLock::new(Some(state)),
        };
        if needs_checkpoint {
            // The log is cut only inside checkpoint, after the replayed state is durable.
            collection.checkpoint()?;
        }
        Ok(collection)
    }

    /// The collection's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The collection's dimension.
    pub fn dimension(&self) -> u32 {
        self.config.dimension
    }

    /// The collection's metric.
    pub fn metric(&self) -> Metric {
        self.config.metric
    }

    /// Stores `vectors` (a flat array of `ids.len() * dimension` floats) under `ids`, as one
    /// atomic batch: after a crash either every record of it is present or none is.
    pub fn upsert(
        &self,
        ids: &[Id],
        vectors: &[f32],
        durability: Option<Durability>,
    ) -> Result<()> {
        let dim = self.config.dimension as usize;
        check_batch_len(ids.len())?;
        if ids.is_empty() && vectors.is_empty() {
            // Nothing to log; still refuse a closed or poisoned collection.
            let mut guard = self.lock_writer()?;
            return self.usable_writer(&mut guard).map(|_| ());
        }
        if vectors.len() != ids.len() * dim {
            return Err(Error::DimensionMismatch(format!(
                "{} ids need {} floats at dimension {dim}, got {}",
                ids.len(),
                ids.len() * dim,
                vectors.len()
            )));
        }
        let body_bytes: usize =
            ids.iter().map(|id| 1 + id_encoded_len(id)).sum::<usize>() + vectors.len() * 4;
        check_body_len(body_bytes)?;
        let mut enc = BatchEncoder::new(body_bytes);
        for (i, (id, vector)) in ids.iter().zip(vectors.chunks_exact(dim.max(1))).enumerate() {
            validate_id(i, id)?;
            if let Some(j) = vector.iter().position(|v| !v.is_finite()) {
                return Err(Error::invalid(format!(
                    "record {i} (id {id}): component {j} is {}, vectors must be finite",
                    vector[j]
                )));
            }
            enc.upsert(id, vector);
        }
        self.commit(enc, ids.len(), durability).map(|_| ())
    }

    /// Removes `ids` as one atomic batch. Returns how many records it removed (an id given
    /// twice counts once).
    pub fn delete(&self, ids: &[Id], durability: Option<Durability>) -> Result<u64> {
        check_batch_len(ids.len())?;
        if ids.is_empty() {
            let mut guard = self.lock_writer()?;
            return self.usable_writer(&mut guard).map(|_| 0);
        }
        let body_bytes: usize = ids.iter().map(|id| 1 + id_encoded_len(id)).sum();
        check_body_len(body_bytes)?;
        let mut enc = BatchEncoder::new(body_bytes);
        for (i, id) in ids.iter().enumerate() {
            validate_id(i, id)?;
            enc.delete(id);
        }
        self.commit(enc, 0, durability)
    }

    /// Logs and applies an encoded batch with `upserts` upserts; returns how many of its
    /// deletes removed a live record.
    fn commit(
        &self,
        enc: BatchEncoder,
        upserts: usize,
        durability: Option<Durability>,
    ) -> Result<u64> {
        let durability = durability.unwrap_or(self.options.durability);
        let mut writer_guard = self.lock_writer()?;
        let writer = self.usable_writer(&mut writer_guard)?;
        // Only a forged log or index can bring the sequence number to its limit. Refuse the
        // write (nothing is logged) rather than log a record the next replay would refuse as
        // corrupt, which would make every acknowledged write unreachable.
        if writer.wal.next_lsn() > LSN_MAX {
            return Err(Error::corrupted(
                self.dir.join(WAL_FILE),
                0,
                format!("log sequence numbers are exhausted (limit {LSN_MAX})"),
            ));
        }
        // Reserve vector slots first: once the record is logged, applying it must not fail.
        {
            let mut state_guard = self.write_state()?;
            let state = open_state(&mut state_guard)?;
            let needed = state.slots_needed(upserts);
            if let Err(e) = state.vectors.reserve(needed) {
                return Err(writer.poison(e));
            }
        }
        let lsn = writer.wal.next_lsn();
        let record = enc.finish(lsn);
        if let Err(e) = writer.wal.append(&record, durability) {
            return Err(writer.poison(e));
        }
        let applied = {
            let mut state_guard = self.write_state()?;
            let state = open_state(&mut state_guard)?;
            let body = &record[walfmt::RECORD_HEADER_LEN..record.len() - 4];
            walfmt::decode_batch(body, self.config.dimension)
                .map_err(|e| Error::corrupted(&self.dir, e.offset, e.reason))
                .and_then(|ops| state.apply(lsn, &ops))
        };
        let removed = applied.map_err(|e| writer.poison(e))?;
        #[cfg(feature = "planted-bugs")]
        crate::planted::record(crate::planted::EventKind::Ack, &self.dir.join(WAL_FILE));
        if writer.wal.len_bytes() > self.options.checkpoint_threshold_bytes {
            // The write itself is logged as asked, so it is acknowledged even if this
            // checkpoint fails; the failure poisons the collection and the next call says why.
            let _ = self.checkpoint_locked(writer);
        }
        Ok(removed)
    }

    /// Grows the vector file so that `additional` more records fit without a remap, ahead of
    /// a bulk load.
    pub fn reserve(&self, additional: u64) -> Result<()> {
        let mut writer_guard = self.lock_writer()?;
        let writer = self.usable_writer(&mut writer_guard)?;
        let mut state_guard = self.write_state()?;
        let state = open_state(&mut state_guard)?;
        let needed = u64::from(state.slot_high_water).saturating_add(additional);
        state.vectors.reserve(needed).map_err(|e| writer.poison(e))
    }

    /// Copies the vector stored under `id`, if any.
    pub fn get(&self, id: &Id) -> Result<Option<Vec<f32>>> {
        id.validate()?;
        let guard = self.read_state()?;
        let state = guard.as_ref().ok_or(Error::Closed("collection"))?;
        match state.ids.get(id) {
            Some(&slot) => state.vectors.read_slot(slot).map(Some),
            None => Ok(None),
        }
    }

    /// A durability barrier: every write made before this call is fsynced on return.
    pub fn flush(&self) -> Result<()> {
        let mut guard = self.lock_writer()?;
        let writer = self.usable_writer(&mut guard)?;
        writer.wal.sync().map_err(|e| writer.poison(e))
    }

    /// Makes the vector file and the index durable, then empties the log.
    pub fn checkpoint(&self) -> Result<()> {
        let mut guard = self.lock_writer()?;
        let writer = self.usable_writer(&mut guard)?;
        self.checkpoint_locked(writer)
    }

    fn checkpoint_locked(&self, writer: &mut Writer) -> Result<()> {
        self.checkpoint_steps(writer).map_err(|e| writer.poison(e))
    }

    fn checkpoint_steps(&self, writer: &mut Writer) -> Result<()> {
        #[cfg(feature = "planted-bugs")]
        if crate::planted::active(crate::planted::Bug::CutLogEarly) {
            writer.wal.reset()?;
        }
        // Writers are held off by the caller's lock, so the state cannot change between the
        // snapshot and the free-list update below; readers go on meanwhile.
        let snapshot = {
            let guard = self.read_state()?;
            let state = guard.as_ref().ok_or(Error::Closed("collection"))?;
            state.vectors.sync()?;
            state.snapshot(self.config.dimension)
        };
        fsio::write_atomic(&self.dir, INDEX_FILE, &index::encode(&snapshot))?;
        {
            let mut guard = self.write_state()?;
            let state = open_state(&mut guard)?;
            let freed = std::mem::take(&mut state.pending_free);
            state.free_slots.extend(freed);
            state.checkpoint_lsn = snapshot.checkpoint_lsn;
        }
        writer.wal.reset()?;
        writer.checkpoints += 1;
        Ok(())
    }

    /// Counters and sizes.
    pub fn stats(&self) -> Result<CollectionStats> {
        let writer_guard = self.lock_writer()?;
        let writer = writer_guard.as_ref().ok_or(Error::Closed("collection"))?;
        let state_guard = self.read_state()?;
        let state = state_guard.as_ref().ok_or(Error::Closed("collection"))?;
        let index_file_bytes = fs::metadata(self.dir.join(INDEX_FILE))
            .map(|m| m.len())
            .unwrap_or(0);
        Ok(CollectionStats {
            count: state.ids.len() as u64,
            dimension: self.config.dimension,
            metric: self.config.metric,
            vector_file_bytes: state.vectors.len_bytes(),
            capacity_slots: state.vectors.capacity_slots(),
            slot_high_water: u64::from(state.slot_high_water),
            wal_bytes: writer.wal.len_bytes(),
            index_file_bytes,
            last_lsn: state.last_lsn,
            checkpoint_lsn: state.checkpoint_lsn,
            checkpoints: writer.checkpoints,
            records_replayed: self.report.records_replayed,
            corrupt_records_skipped: self.report.corrupt_records_skipped,
            torn_bytes_truncated: self.report.torn_bytes_truncated,
            warnings: self.report.warnings.clone(),
            poisoned: writer.poisoned.is_some(),
        })
    }

    /// Checkpoints (unless poisoned) and releases the files. Later calls get `Closed`;
    /// closing twice is a no-op.
    pub fn close(&self) -> Result<()> {
        let mut guard = self.lock_writer()?;
        let result = match guard.as_mut() {
            Some(writer) if writer.poisoned.is_none() => self.checkpoint_locked(writer),
            _ => Ok(()),
        };
        *guard = None;
        *self.write_state()? = None;
        result
    }

    /// Releases the files without a checkpoint (the collection is being dropped).
    pub fn close_without_checkpoint(&self) -> Result<()> {
        *self.lock_writer()? = None;
        *self.write_state()? = None;
        Ok(())
    }

    fn lock_poisoned(&self) -> Error {
        Error::Poisoned {
            what: format!("collection '{}'", self.name),
            cause: "a thread panicked while holding its lock".to_owned(),
        }
    }

    fn lock_writer(&self) -> Result<MutexGuard<'_, Option<Writer>>> {
        self.writer.lock().map_err(|_| self.lock_poisoned())
    }

    fn read_state(&self) -> Result<RwLockReadGuard<'_, Option<State>>> {
        self.state.read().map_err(|_| self.lock_poisoned())
    }

    fn write_state(&self) -> Result<RwLockWriteGuard<'_, Option<State>>> {
        self.state.write().map_err(|_| self.lock_poisoned())
    }

    fn usable_writer<'g>(&self, guard: &'g mut Option<Writer>) -> Result<&'g mut Writer> {
        match guard.as_mut() {
            None => Err(Error::Closed("collection")),
            Some(Writer {
                poisoned: Some(cause),
                ..
            }) => Err(Error::Poisoned {
                what: format!("collection '{}'", self.name),
                cause: cause.clone(),
            }),
            Some(w) => Ok(w),
        }
    }
}

fn open_state(guard: &mut Option<State>) -> Result<&mut State> {
    guard.as_mut().ok_or(Error::Closed("collection"))
}

fn validate_id(index: usize, id: &Id) -> Result<()> {
    id.validate()
        .map_err(|e| Error::invalid(format!("record {index}: {e}")))
}

fn check_batch_len(len: usize) -> Result<()> {
    if len > BATCH_RECORDS_MAX {
        return Err(Error::invalid(format!(
            "a batch holds at most {BATCH_RECORDS_MAX} records, got {len}"
        )));
    }
    Ok(())
}

fn check_body_len(bytes: usize) -> Result<()> {
    if bytes + 4 > WAL_RECORD_BYTES_MAX as usize {
        return Err(Error::invalid(format!(
            "the batch encodes to {bytes} bytes, more than the {WAL_RECORD_BYTES_MAX}-byte record limit; split it"
        )));
    }
    Ok(())
}

fn read_config(dir: &Path) -> Result<CollectionConfig> {
    let path = dir.join(CONFIG_FILE);
    let bytes = fsio::read_small(&path, CONFIG_BYTES_MAX as u64)?;
    // The version first: a newer config may have fields this build would call corrupt.
    let version = config::peek_format_version(&bytes);
    if let Some(found) = version.filter(|v| *v > COLLECTION_FORMAT_VERSION || *v == 0) {
        return Err(Error::UnsupportedVersion {
            file: path,
            what: "format version",
            found,
            supported: COLLECTION_FORMAT_VERSION,
        });
    }
    config::decode(&bytes).map_err(|e| Error::corrupted(&path, e.offset, e.reason))
}

fn read_index(dir: &Path, dimension: u32) -> Result<IndexSnapshot> {
    let path = dir.join(INDEX_FILE);
    let bytes = fsio::read_small(&path, INDEX_BYTES_MAX)?;
    if let Some(version) = peek_version(&bytes, &INDEX_MAGIC).filter(|v| *v > INDEX_VERSION) {
        return Err(Error::UnsupportedVersion {
            file: path,
            what: "format version",
            found: version,
            supported: INDEX_VERSION,
        });
    }
    let snapshot =
        index::decode(&bytes).map_err(|e| Error::corrupted(&path, e.offset, e.reason))?;
    if snapshot.checkpoint_lsn > LSN_MAX {
        return Err(Error::corrupted(
            &path,
            16,
            format!(
                "checkpoint sequence number {} is above the limit {LSN_MAX}",
                snapshot.checkpoint_lsn
            ),
        ));
    }
    if snapshot.dimension != dimension {
        return Err(Error::corrupted(
            &path,
            12,
            format!(
                "dimension {} differs from the collection's {dimension}",
                snapshot.dimension
            ),
        ));
    }
    Ok(snapshot)
}

/// Replays the log into `state`, cuts a torn tail (fsynced) and returns the writer, which
/// appends right after the last valid record.
fn recover_log(
    dir: &Path,
    config: &CollectionConfig,
    policy: RecoveryPolicy,
    state: &mut State,
) -> Result<(WalWriter, OpenReport)> {
    let path = dir.join(WAL_FILE);
    let file = fsio::open_regular_rw(&path)?;
    let image = fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
    if let Some(version) = peek_version(&image, &walfmt::WAL_MAGIC).filter(|v| *v > WAL_VERSION) {
        return Err(Error::UnsupportedVersion {
            file: path,
            what: "format version",
            found: version,
            supported: WAL_VERSION,
        });
    }
    let header =
        walfmt::decode_header(&image).map_err(|e| Error::corrupted(&path, e.offset, e.reason))?;
    if header.dimension != config.dimension {
        return Err(Error::corrupted(
            &path,
            12,
            format!(
                "dimension {} differs from the collection's {}",
                header.dimension, config.dimension
            ),
        ));
    }
    let checkpoint_lsn = state.checkpoint_lsn;
    let outcome = replay(
        &path,
        &image,
        config.dimension,
        checkpoint_lsn,
        policy,
        |lsn, ops| state.apply(lsn, &ops).map(|_| ()),
    )?;
    #[cfg(feature = "planted-bugs")]
    let image_len = image.len() as u64;
    drop(image);
    #[cfg(feature = "planted-bugs")]
    if crate::planted::active(crate::planted::Bug::AppendAfterTornTail) {
        let next_lsn = outcome.last_lsn.max(checkpoint_lsn) + 1;
        let report = OpenReport::default();
        return Ok((WalWriter::new(path, file, image_len, next_lsn), report));
    }
    if outcome.torn_bytes > 0 {
        file.set_len(outcome.end_offset)
            .map_err(|e| Error::io("truncate torn tail", &path, e))?;
        #[cfg(feature = "planted-bugs")]
        crate::planted::record(crate::planted::EventKind::Truncate, &path);
        file.sync_data()
            .map_err(|e| Error::io("fdatasync", &path, e))?;
        #[cfg(feature = "planted-bugs")]
        crate::planted::record(crate::planted::EventKind::SyncFile, &path);
    }
    let next_lsn = outcome.last_lsn.max(checkpoint_lsn) + 1;
    let report = OpenReport {
        records_replayed: outcome.records_replayed,
        corrupt_records_skipped: outcome.corrupt_records_skipped,
        torn_bytes_truncated: outcome.torn_bytes,
        warnings: outcome.warnings,
    };
    Ok((
        WalWriter::new(path, file, outcome.end_offset, next_lsn),
        report,
    ))
}
