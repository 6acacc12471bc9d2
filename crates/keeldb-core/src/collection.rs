//! A collection: one directory holding a config, a vector file, an id index and a log.
//!
//! Write path: the caller validates and encodes the whole batch and queues it; the
//! collection's committer thread takes everything queued as one group (see `commit`), and,
//! under `Collection::writer`, reserves vector slots, appends the group's records to the log,
//! syncs once at the strongest durability asked for, then applies them in order to the
//! in-memory index and the mapping (under a brief write lock on `Collection::state`). A
//! failed append or sync poisons the collection: nothing is acknowledged after bytes whose
//! fate is unknown.
//!
//! Slots are handed out copy-on-write: an upsert always writes a slot that the last
//! checkpoint does not reference, and slots freed since the checkpoint are reused only after
//! the next one. So the checkpointed slots are never written between checkpoints, and replay
//! from the checkpoint, which is deterministic, rebuilds exactly the same state.
//!
//! Checkpoint: fdatasync the vector file and the payload log, write the index atomically
//! (it records the last applied lsn), then the payload snapshot, and only then empty the log.
//!
//! Payloads travel in the same log record as their vectors (ops 3 and 4), so the log stays
//! the one commit point; the payload log is derived from it on apply (see `payloads`).
//! Compaction rewrites the payload log's live frames to a new generation without holding
//! either lock for the copy (see [`Collection::compact`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{
    mpsc, Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard,
    TryLockError, Weak,
};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::commit::{self, strongest, CommitQueue, Completion, PreparedBatch, Request};
use crate::error::{Error, Result};
use crate::format::config::{self, CollectionConfig, COLLECTION_FORMAT_VERSION, CONFIG_BYTES_MAX};
use crate::format::first_non_finite;
use crate::format::index::{self, IndexHeader, IndexSnapshot, INDEX_MAGIC, INDEX_VERSION};
use crate::format::json::{self, PayloadText};
use crate::format::payload_index::{self, PayloadSnapshot, PAYLOAD_INDEX_VERSION};
use crate::format::payload_log::PAYLOAD_LOG_HEADER_LEN;
use crate::format::wal::{
    self as walfmt, payload_encoded_len, BatchEncoder, Op, WAL_HEADER_LEN, WAL_VERSION,
};
use crate::format::{id_encoded_len, peek_version};
use crate::payloads::{self, PayloadOpenReport, PayloadStore, PAYLOAD_INDEX_FILE};
use crate::search::filter::Filter;
use crate::search::kernels::{self, Isa};
use crate::search::{self, Space};
use crate::storage::fsio;
use crate::storage::payload_log::{self, Writeback};
use crate::storage::vectors::VectorFile;
use crate::storage::vfs::{Vfs, VfsView};
use crate::types::{
    Durability, Id, IdMap, IdMapBuilder, IdRef, Metric, RecoveryPolicy, BATCH_RECORDS_MAX, LSN_MAX,
    WAL_RECORD_BYTES_MAX,
};
use crate::wal::replay::{self, replay};
use crate::wal::writer::WalWriter;

/// The collection's config file.
pub const CONFIG_FILE: &str = "collection.json";
/// The vector file.
pub const VECTORS_FILE: &str = "vectors.dat";
/// Vector bytes replay writes between two starts of their writeback.
const REPLAY_WRITEBACK_BYTES: u64 = 16 << 20;
/// Log bytes the committer logs between two starts of the vector file's and the payload
/// log's writeback. Writes dirty those files far faster than the kernel writes them back on
/// its own (after 30 s, or past a share of memory), so without this a checkpoint found all
/// of them dirty and the writers waited while it wrote them; started every few MiB, the
/// writing overlaps the ingest and the checkpoint waits for the last few MiB.
const COMMIT_WRITEBACK_BYTES: u64 = 8 << 20;
/// Most ids (and slots) replay reserves room for before it starts: a bound on what a forged
/// log can make it allocate ahead (about 100 MB of maps); a log with more records grows the
/// maps past it as it replays.
const REPLAY_RESERVE_MAX: u64 = 1 << 22;

/// The id index written at each checkpoint.
pub const INDEX_FILE: &str = "ids.idx";
/// A checkpoint rewrites both indexes (`ids.idx`, `payloads.idx`) whole, so its cost grows
/// with the collection while the threshold that triggers it does not: the log grows to at
/// least this many times the indexes' size (as the last checkpoint wrote them) before a
/// write triggers one, so the indexes are rewritten once per that many times their size of
/// log, not every few MiB, and replay after a crash stays in proportion to reading them at
/// open. Up to [`INDEX_SCALED_THRESHOLD_MAX`].
const LOG_BYTES_PER_INDEX_BYTE: u64 = 4;
/// Largest threshold the indexes' size makes (past 7-8M records with payloads): the log
/// file, which keeps its size between checkpoints, and the replay after a crash stay
/// bounded (about 0.7 s of replay here) however large the collection grows.
const INDEX_SCALED_THRESHOLD_MAX: u64 = 1 << 30;
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
    /// Whether a write triggers a checkpoint only once the log is also past
    /// `LOG_BYTES_PER_INDEX_BYTE` times the size of the indexes the last one wrote (that
    /// figure at most `INDEX_SCALED_THRESHOLD_MAX`).
    pub checkpoint_scales_with_index: bool,
    /// Share of the payload log (0 to 1) that superseded and delete frames must reach
    /// before a write triggers compaction.
    pub compaction_garbage_ratio: f64,
    /// Payload log size below which compaction never triggers by itself.
    pub compaction_min_bytes: u64,
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
    /// The log size past which a write triggers a checkpoint now (the threshold, or what
    /// the indexes' size makes of it).
    pub checkpoint_at_bytes: u64,
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
    /// Records that have a payload.
    pub payload_count: u64,
    /// Size of the current payload log, header included.
    pub payload_log_bytes: u64,
    /// Bytes of the payload frames records point at.
    pub payload_live_bytes: u64,
    /// Bytes of superseded and delete frames: what compaction reclaims.
    pub payload_garbage_bytes: u64,
    /// Generation of the current payload log (each compaction adds one).
    pub payload_log_generation: u64,
    /// Payload log frames read at open (0 after a clean close: the snapshot covered all).
    pub payload_records_replayed: u64,
    /// Whether open read the payload snapshot instead of the whole payload log.
    pub payload_snapshot_used: bool,
    /// Bytes cut off the payload log at open (frames the log replay writes again).
    pub payload_bytes_truncated: u64,
    /// Compactions run since open.
    pub compactions: u64,
    /// Why the last automatic compaction failed, if it did (automatic compaction then
    /// stops until `compact()` succeeds or the database is reopened).
    pub compaction_error: Option<String>,
    /// Write batches logged since open (one log record each): upserts, deletes and payload
    /// updates.
    pub wal_records: u64,
    /// Group commits since open: each wrote its records at once, with at most one sync. A
    /// payload update commits as a group of its own; barriers (`flush`) log nothing and are
    /// not counted.
    pub group_commits: u64,
    /// fdatasyncs of the log since open (including those of `flush`, checkpoints and
    /// recovery).
    pub wal_syncs: u64,
    /// Where the committer's time went, summed over the group commits since open.
    pub commit_times: CommitTimes,
}

/// The committer's time per step, summed over group commits, and how far it ran behind:
/// with `queued_at_group_end` near `wal_records`, every group found the next one already
/// waiting, so the committer, not the writers, set the pace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitTimes {
    /// Reserving slots, writing the group's records to the log and syncing it.
    pub log_nanos: u64,
    /// Applying the records: vector file, payload log, id index.
    pub apply_nanos: u64,
    /// Completing the requests (handing each outcome to its caller's callback).
    pub answer_nanos: u64,
    /// Requests already queued when each group had been answered, summed (a group the
    /// committer took to log while it applied the one before counts as queued).
    pub queued_at_group_end: u64,
}

/// [`CommitTimes`] as the committer adds to it (the stats read it without a lock).
#[derive(Debug, Default)]
struct CommitClock {
    log_nanos: AtomicU64,
    apply_nanos: AtomicU64,
    answer_nanos: AtomicU64,
    queued_at_group_end: AtomicU64,
}

impl CommitClock {
    fn add(counter: &AtomicU64, since: Instant) {
        Self::add_time(counter, since.elapsed());
    }

    fn add_time(counter: &AtomicU64, time: Duration) {
        let nanos = u64::try_from(time.as_nanos()).unwrap_or(u64::MAX);
        counter.fetch_add(nanos, Ordering::Relaxed);
    }

    fn read(&self) -> CommitTimes {
        CommitTimes {
            log_nanos: self.log_nanos.load(Ordering::Relaxed),
            apply_nanos: self.apply_nanos.load(Ordering::Relaxed),
            answer_nanos: self.answer_nanos.load(Ordering::Relaxed),
            queued_at_group_end: self.queued_at_group_end.load(Ordering::Relaxed),
        }
    }
}

impl CollectionStats {
    /// The share of the payload log's frame bytes that is garbage, from 0 to 1.
    pub fn payload_garbage_ratio(&self) -> f64 {
        garbage_ratio(self.payload_garbage_bytes, self.payload_live_bytes)
    }
}

fn garbage_ratio(garbage: u64, live: u64) -> f64 {
    match garbage + live {
        0 => 0.0,
        total => garbage as f64 / total as f64,
    }
}

/// A record read back; a part left out of the read, or absent, is `None`.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The vector, if asked for.
    pub vector: Option<Vec<f32>>,
    /// The payload's JSON text, if asked for and the record has one.
    pub payload: Option<Vec<u8>>,
}

/// What a search asks for.
#[derive(Debug, Clone, Copy)]
pub struct SearchRequest<'a> {
    /// How many nearest records to return per query, 1 to [`search::SEARCH_K_MAX`].
    pub k: usize,
    /// Only records whose payload matches are candidates.
    pub filter: Option<&'a Filter>,
    /// Whether each hit carries a copy of its vector.
    pub include_vectors: bool,
    /// Whether each hit carries its payload (JSON text).
    pub include_payloads: bool,
}

/// One search result.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    /// The record's id.
    pub id: Id,
    /// Its distance to the query (see `search` for each metric's definition).
    pub distance: f32,
    /// A copy of its vector, when asked for.
    pub vector: Option<Vec<f32>>,
    /// Its payload as JSON text, when asked for and it has one.
    pub payload: Option<Vec<u8>>,
}

/// The in-memory state readers see.
#[derive(Debug)]
struct State {
    vectors: VectorFile,
    ids: IdMap<u32>,
    /// Free as of the last checkpoint: may be written now.
    free_slots: Vec<u32>,
    /// Freed since the last checkpoint: the checkpoint may still reference them.
    pending_free: Vec<u32>,
    slot_high_water: u32,
    last_lsn: u64,
    checkpoint_lsn: u64,
    payloads: PayloadStore,
    /// The id stored in each slot below `slot_high_water` (`None`: free): search's
    /// slot -> id map, kept by `apply_written` next to `ids`, so replay rebuilds it too.
    slot_ids: Vec<Option<Id>>,
    /// Cosine collections: `1/|v|` of each slot's vector, built by the first search (so
    /// opening stays one pass over the index, not over the vectors), then kept by
    /// `apply_written`. `None` until then, and always for other metrics.
    inverse_norms: Option<Vec<f32>>,
    /// The slots [`State::stage_group`] staged, one per upsert in order, and where each
    /// record's begin in them with the high-water mark before it took them (kept for their
    /// allocations).
    batch_slots: Vec<u32>,
    batch_starts: Vec<(usize, u32)>,
    /// Set when writes answered before their apply (see `Collection::commit_group`) could
    /// not be applied: the poison's cause. Reads then refuse with it, since they would miss
    /// writes their callers were told are stored; reopening replays them from the log. (They
    /// refuse too once buffered payload frames could not be written: see
    /// `PayloadStore::lost_frames`.)
    missing_answered: Option<String>,
}

impl State {
    fn take_slot(&mut self) -> u32 {
        self.free_slots.pop().unwrap_or_else(|| {
            self.slot_high_water += 1;
            self.slot_high_water - 1
        })
    }

    /// Grows the vector file so that `upserts` more records fit. Refuses a count past the
    /// u32 slot numbers: handing those out would wrap onto slots in use.
    fn reserve_slots(&mut self, upserts: usize) -> Result<()> {
        let needed = self.slots_needed(upserts);
        if needed > u64::from(u32::MAX) {
            return Err(Error::invalid(format!(
                "{upserts} more records do not fit: a collection holds at most {} vectors",
                u32::MAX
            )));
        }
        self.vectors.reserve(needed)
    }

    /// Slots a batch with `upserts` upserts could need beyond those handed out already.
    fn slots_needed(&self, upserts: usize) -> u64 {
        u64::from(self.slot_high_water)
            .saturating_add(upserts.saturating_sub(self.free_slots.len()) as u64)
    }

    /// Applies decoded records in order: [`State::stage_group`], then
    /// [`State::publish_group`]. On an error (after which the caller poisons the collection)
    /// the records from the one that failed on are applied in no part readers see, and
    /// their slots are free again; a failed vector write fails them all.
    fn apply_group(
        &mut self,
        records: &[(u64, Vec<Op<'_>>)],
        removed: &mut Vec<u64>,
    ) -> Result<()> {
        let staged = self.stage_group(records)?;
        self.publish_group(records, staged, removed)
    }

    /// The first pass of applying decoded records: writes every record's vectors into slots
    /// nothing refers to, gathered into runs of consecutive slots (a group's records take
    /// consecutive fresh slots, so a group is mostly one write). Readers see nothing of it:
    /// the slots stay free (and the high-water mark where it was) until
    /// [`State::publish_group`] takes them, so the committer can stage a group while its
    /// log is still syncing. On an error nothing is taken; the caller poisons the
    /// collection.
    fn stage_group(&mut self, records: &[(u64, Vec<Op<'_>>)]) -> Result<Staged> {
        let upserts = records
            .iter()
            .flat_map(|(_, ops)| ops)
            .filter(|op| matches!(op, Op::Upsert { .. }))
            .count();
        self.reserve_slots(upserts)?;
        let mut slots = std::mem::take(&mut self.batch_slots);
        let mut starts = std::mem::take(&mut self.batch_starts);
        slots.clear();
        starts.clear();
        // Taken as `take_slot` would, without changing the free list or the high-water mark.
        let mut staged = Staged {
            free_len: self.free_slots.len(),
            high_water: self.slot_high_water,
            before: (self.free_slots.len(), self.slot_high_water),
        };
        let mut written = Ok(());
        'records: for (_, ops) in records {
            starts.push((slots.len(), staged.high_water));
            for op in ops {
                if let Op::Upsert { vector_le, .. } = op {
                    let slot = match staged.free_len.checked_sub(1) {
                        Some(last) => {
                            staged.free_len = last;
                            self.free_slots[last]
                        }
                        None => {
                            staged.high_water += 1;
                            staged.high_water - 1
                        }
                    };
                    slots.push(slot);
                    written = self.vectors.write_slot_le(slot, vector_le);
                    if written.is_err() {
                        break 'records;
                    }
                }
            }
        }
        let written = written.and_then(|()| self.vectors.finish_writes());
        self.batch_slots = slots;
        self.batch_starts = starts;
        written.map(|()| staged)
    }

    /// The second pass, for the records [`State::stage_group`] staged (`staged`, the last
    /// call's outcome): takes their slots, then record by record stages its payload frames
    /// and updates the index. Pushes to `removed`, for each record applied, how many of its
    /// deletes removed a live record. On an error the records from the one that failed on
    /// are applied in no part readers see, and their slots are free again.
    fn publish_group(
        &mut self,
        records: &[(u64, Vec<Op<'_>>)],
        staged: Staged,
        removed: &mut Vec<u64>,
    ) -> Result<()> {
        let slots = std::mem::take(&mut self.batch_slots);
        let starts = std::mem::take(&mut self.batch_starts);
        debug_assert_eq!(
            (self.free_slots.len(), self.slot_high_water),
            staged.before,
            "the free list and high-water mark changed between staging and publishing"
        );
        self.free_slots.truncate(staged.free_len);
        self.slot_high_water = staged.high_water;
        let mut result = Ok(());
        for (i, (lsn, ops)) in records.iter().enumerate() {
            let end = starts.get(i + 1).map_or(slots.len(), |&(start, _)| start);
            match self.apply_written(*lsn, ops, &slots[starts[i].0..end]) {
                Ok(n) => removed.push(n),
                Err(e) => {
                    result = Err((i, e));
                    break;
                }
            }
        }
        if let Some(&(start, high_water)) = result.as_ref().err().and_then(|(i, _)| starts.get(*i))
        {
            // The failed records' slots go back: nothing refers to them.
            self.free_slots.extend(
                slots[start..]
                    .iter()
                    .copied()
                    .filter(|&s| s < high_water)
                    .rev(),
            );
            self.slot_high_water = high_water;
        }
        self.batch_slots = slots;
        self.batch_starts = starts;
        result.map_err(|(_, e)| e)
    }

    /// Makes room, before replay inserts its first id (`like`, with a payload or not), for
    /// `additional` more ids and slots: replay inserts thousands of ids a second, and maps
    /// grown by doubling leave behind tables as large as the final one, fresh memory that a
    /// virtual machine may fault in from its host at milliseconds a MiB. Only where the
    /// additions would more than double what a map holds: below that it doubles at most
    /// once anyway, and an estimate too high would double a large map for nothing. Slots
    /// are reserved only for the ids the free list cannot take, and up to the vector file's
    /// capacity, which the slots replay takes fit in as long as the file does not grow.
    /// Only a hint: where memory is short, the maps grow as they fill.
    fn reserve_for_replay(&mut self, like: &Id, with_payload: bool, additional: usize) {
        if additional > self.ids.len() {
            self.ids.try_reserve_like(like, additional);
        }
        if with_payload && additional as u64 > self.payloads.count() {
            self.payloads.try_reserve_like(like, additional);
        }
        let fresh = additional.saturating_sub(self.free_slots.len());
        let slots = (u64::from(self.slot_high_water) + fresh as u64)
            .min(self.vectors.capacity_slots()) as usize;
        let more = slots.saturating_sub(self.slot_ids.len());
        if more > self.slot_ids.len() {
            let _ = self.slot_ids.try_reserve_exact(more);
        }
    }

    /// Applies one record during replay, which no reader sees: its vectors join the run
    /// being gathered (written 256 KiB at a time; the caller finishes the last run with
    /// `finish_bulk_writes`), and an error fails the open, so nothing is given back.
    fn apply_replayed(&mut self, lsn: u64, ops: &[Op<'_>]) -> Result<()> {
        let upserts = ops
            .iter()
            .filter(|op| matches!(op, Op::Upsert { .. }))
            .count();
        self.reserve_slots(upserts)?;
        let mut slots = std::mem::take(&mut self.batch_slots);
        slots.clear();
        let applied = self
            .write_vectors(ops, &mut slots)
            .and_then(|()| self.apply_written(lsn, ops, &slots));
        self.batch_slots = slots;
        applied.map(|_| ())
    }

    /// Takes a slot for each upsert of `ops`, pushes it to `slots` and writes the vector into
    /// it (gathered: see [`VectorFile::write_slot_le`]). The file has room (the caller
    /// reserved it).
    fn write_vectors(&mut self, ops: &[Op<'_>], slots: &mut Vec<u32>) -> Result<()> {
        ops.iter().try_for_each(|op| match op {
            Op::Upsert { vector_le, .. } => {
                let slot = self.take_slot();
                slots.push(slot);
                self.vectors.write_slot_le(slot, vector_le)
            }
            _ => Ok(()),
        })
    }

    /// The rest of applying a record whose vectors are in `slots` (one per upsert, in
    /// order): stages its payload frames (if that fails, nothing has changed), then updates
    /// the index. Returns how many deletes removed a live record.
    fn apply_written(&mut self, lsn: u64, ops: &[Op<'_>], slots: &[u32]) -> Result<u64> {
        let ids = &self.ids;
        self.payloads.stage(lsn, ops, |id| ids.contains_key(id))?;
        let mut removed = 0;
        let mut new_slots = slots.iter().copied();
        for op in ops {
            match op {
                Op::Upsert { id, vector_le, .. } => {
                    let slot = new_slots.next().expect("one slot per upsert");
                    if let Some(old) = self.ids.insert(id.clone(), slot) {
                        self.pending_free.push(old);
                        self.set_slot_id(old, None);
                    }
                    self.set_slot_id(slot, Some(id.clone()));
                    if let Some(norms) = &mut self.inverse_norms {
                        set_grown(norms, slot, kernels::inverse_norm_le(vector_le));
                    }
                }
                Op::Delete { id } => {
                    if let Some(old) = self.ids.remove(id) {
                        self.pending_free.push(old);
                        self.set_slot_id(old, None);
                        removed += 1;
                    }
                }
                Op::SetPayload { .. } => {}
            }
        }
        self.payloads.apply_staged();
        self.last_lsn = lsn;
        Ok(removed)
    }

    fn set_slot_id(&mut self, slot: u32, id: Option<Id>) {
        set_grown(&mut self.slot_ids, slot, id);
    }

    /// Computes `1/|v|` for every live slot (the first cosine search does this once).
    fn build_inverse_norms(&mut self) -> Result<()> {
        if self.inverse_norms.is_none() {
            self.inverse_norms = Some(self.compute_inverse_norms()?);
        }
        Ok(())
    }

    fn compute_inverse_norms(&self) -> Result<Vec<f32>> {
        let dim = self.vectors.dimension();
        let data = self.vectors.slots_f32(self.slot_high_water)?;
        let live = |slot: usize| self.slot_ids.get(slot).is_some_and(Option::is_some);
        Ok(data
            .chunks_exact(dim)
            .enumerate()
            .map(|(slot, v)| match live(slot) {
                true => kernels::inverse_norm(v),
                false => 0.0,
            })
            .collect())
    }

    /// The payload a filter sees for the record in `slot`: `None` (an empty object to a
    /// filter) for a record without one. Payload bytes were validated as JSON when written,
    /// so one that no longer reads or parses was damaged on disk: `Corrupted`.
    fn payload_for_filter(&self, slot: u32) -> Result<Option<serde_json::Value>> {
        let Some(id) = self.slot_ids.get(slot as usize).and_then(Option::as_ref) else {
            return Ok(None);
        };
        let Some(bytes) = self.payloads.get(id)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::corrupted(
                payload_log::file_name(self.payloads.generation()),
                0,
                format!("the payload of {id} is not JSON: {e}"),
            )
        })
    }

    /// Runs a validated request over the live slots (the caller holds the read lock).
    fn search(
        &self,
        metric: Metric,
        queries: &[f32],
        request: &SearchRequest<'_>,
    ) -> Result<Vec<Vec<SearchHit>>> {
        let dim = self.vectors.dimension();
        let slot_count = self.slot_high_water as usize;
        let computed;
        let inverse_norms: &[f32] = match (&self.inverse_norms, metric) {
            (Some(norms), Metric::Cosine) if norms.len() >= slot_count => norms,
            (_, Metric::Cosine) => {
                // The caller builds the norms first; this path only keeps a missed build
                // from turning into a panic.
                computed = self.compute_inverse_norms()?;
                &computed
            }
            _ => &[],
        };
        let space = Space {
            data: self.vectors.slots_f32(self.slot_high_water)?,
            dim,
            slot_count,
            metric,
            inverse_norms,
        };
        let isa = Isa::best();
        let key_of = |slot: usize| self.slot_ids.get(slot).and_then(Option::as_ref);
        // One scan over `range`: the filter's first failure is returned once it is over.
        let scan = |range: std::ops::Range<usize>| {
            let mut failure = None;
            let found = search::exact_search_range(
                &space,
                range,
                queries,
                request.k,
                isa,
                key_of,
                |slot| match request.filter {
                    None => true,
                    Some(filter) => match self.payload_for_filter(slot as u32) {
                        Ok(payload) => filter.matches(payload.as_ref()),
                        Err(e) => {
                            failure.get_or_insert(e);
                            false
                        }
                    },
                },
            );
            failure.map_or(Ok(found), Err)
        };
        let query_count = queries.len() / dim.max(1);
        let found = if search::worth_splitting(query_count, slot_count) {
            let middle = slot_count / 2;
            let (first, second) = std::thread::scope(|threads| {
                let second = threads.spawn(|| scan(middle..slot_count));
                (scan(0..middle), second.join())
            });
            // A panic in the second half is a bug in the scan: pass it on as one.
            let second = second.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            search::merge_halves(first?, second?, request.k)
        } else {
            scan(0..slot_count)?
        };
        found
            .into_iter()
            .map(|hits| {
                hits.into_iter()
                    .map(|hit| {
                        let vector = match request.include_vectors {
                            true => Some(self.vectors.read_slot(hit.slot)?),
                            false => None,
                        };
                        let payload = match request.include_payloads {
                            true => self.payloads.get(hit.key)?,
                            false => None,
                        };
                        Ok(SearchHit {
                            id: hit.key.clone(),
                            distance: hit.distance,
                            vector,
                            payload,
                        })
                    })
                    .collect()
            })
            .collect()
    }

    /// Encodes `ids.idx` for the state as it is into `flush`, a chunk at a time, straight
    /// from the maps (a copy of them, at millions of records, was hundreds of MB to
    /// allocate and free at every checkpoint). Entries go in slot order: opening fills the
    /// slot -> id map front to back, and marks each slot seen, without a cache miss per
    /// entry.
    fn encode_index(
        &self,
        config: &CollectionConfig,
        flush: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        debug_assert_eq!(
            self.slot_ids.iter().flatten().count(),
            self.ids.len(),
            "both directions of the id map agree"
        );
        let header = IndexHeader {
            dimension: config.dimension,
            uid: config.uid,
            checkpoint_lsn: self.last_lsn,
            slot_high_water: self.slot_high_water,
            // The caller synced the payload log just before, under the writer lock.
            payload_generation: self.payloads.generation(),
            payload_log_end: self.payloads.log_bytes(),
        };
        let entries = self
            .slot_ids
            .iter()
            .enumerate()
            .filter_map(|(slot, id)| Some((IdRef::from(id.as_ref()?), slot as u32)));
        let free_slots = self.free_slots.iter().chain(&self.pending_free).copied();
        index::encode_to(&header, entries, free_slots, flush)
    }
}

/// Where [`State::stage_group`] left the free list and the high-water mark: its slots are
/// the free list's last `free_slots.len() - free_len` entries, then fresh slots up to
/// `high_water`.
///
/// `before` is where they were: nothing may change them between the two passes (every
/// change happens under `Collection::writer`, which the committer holds throughout).
#[derive(Debug, Clone, Copy)]
struct Staged {
    free_len: usize,
    high_water: u32,
    before: (usize, u32),
}

/// A group whose records [`Collection::log_group`] wrote to the log (and whose sync it
/// started, if it asked for one), not yet applied.
struct LoggedGroup {
    requests: Vec<Request>,
    durability: Durability,
    first_lsn: u64,
    /// The log bytes it added (see [`COMMIT_WRITEBACK_BYTES`]).
    log_bytes: u64,
    /// Time spent logging it, for [`CommitClock`].
    logged_in: Duration,
}

/// A group [`Collection::finish_group`] applied: its writes not answered yet with their
/// results, and the group it logged next, if it did.
#[derive(Default)]
struct Finished {
    requests: Vec<Request>,
    results: Vec<Result<u64>>,
    /// The error that stopped the group after it was logged, for the writes past `results`.
    logged_but_failed: Option<Error>,
    next: Option<std::result::Result<LoggedGroup, (Vec<Request>, Error)>>,
}

/// How many groups the committer commits at most in one hold of the writer lock, each
/// logged while the one before it was applied (see `Collection::commit_group`). A chain also
/// stops as soon as another thread waits for the lock (`stats`, a checkpoint, `reserve`,
/// a payload update, the first cosine search, close).
pub const CHAIN_GROUPS_MAX: usize = 16;

/// The most log bytes a group may have to be logged while the group before it is applied:
/// readers wait for that log write (the state lock is held from the early answers to the
/// end of the apply, and the zero-filled space ahead of the log is left to its sync), so a
/// larger group is logged as the next group of its own instead.
const CHAIN_BYTES_MAX: usize = 1 << 20;

/// How many upserts the batches of `group` hold.
fn upserts_of(group: &[Request]) -> usize {
    group
        .iter()
        .filter_map(|r| r.batch.as_ref())
        .map(|b| b.upserts)
        .sum()
}

/// The writer's side: the log and the poison flag.
#[derive(Debug)]
struct Writer {
    wal: WalWriter,
    /// Why writes are refused, once a write, sync or checkpoint failed.
    poisoned: Option<String>,
    checkpoints: u64,
    compactions: u64,
    /// Why the last automatic compaction failed; automatic compaction waits until
    /// `compact()` succeeds.
    compaction_error: Option<String>,
    stats: WriteStats,
    /// Log bytes committed since the vector file's and the payload log's writeback was last
    /// started (see [`COMMIT_WRITEBACK_BYTES`]).
    unstarted_bytes: u64,
    /// Bytes of `ids.idx` and `payloads.idx` as the last checkpoint (or open) found them.
    index_bytes: u64,
    /// The log's next lsn when the files last held the whole state: at the end of the last
    /// checkpoint, or at an open that found nothing to replay or repair. After that every
    /// change to what the indexes hold is a log record (`reserve` only grows the vector
    /// file), so while no record has been appended since, a checkpoint would write the
    /// same indexes again, and `close` skips it.
    files_current_at: Option<u64>,
}

/// How writes were committed, for stats: records per group and syncs per record.
#[derive(Debug, Clone, Copy, Default)]
struct WriteStats {
    /// Log records (write batches) committed.
    records: u64,
    /// Groups that logged records: each is one log write and at most one sync.
    groups: u64,
}

impl Writer {
    /// Whether the log has grown enough for a write to trigger a checkpoint: past the
    /// threshold and, when it scales, past [`LOG_BYTES_PER_INDEX_BYTE`] times the indexes'
    /// size (at most [`INDEX_SCALED_THRESHOLD_MAX`]).
    fn checkpoint_due(&self, options: &CollectionOptions) -> bool {
        self.wal.len_bytes() > self.checkpoint_threshold(options)
    }

    /// The log size past which a write triggers a checkpoint now.
    fn checkpoint_threshold(&self, options: &CollectionOptions) -> u64 {
        checkpoint_threshold(
            options.checkpoint_threshold_bytes,
            options.checkpoint_scales_with_index,
            self.index_bytes,
        )
    }

    /// Marks the collection poisoned by `error` and hands the error back.
    fn poison(&mut self, error: Error) -> Error {
        self.poisoned.get_or_insert_with(|| error.to_string());
        error
    }
}

/// The log size past which a write triggers a checkpoint: `threshold`, or when it
/// `scales`, at least [`LOG_BYTES_PER_INDEX_BYTE`] times `index_bytes` (the indexes' size),
/// up to [`INDEX_SCALED_THRESHOLD_MAX`].
fn checkpoint_threshold(threshold: u64, scales: bool, index_bytes: u64) -> u64 {
    let floor = match scales {
        true => index_bytes
            .saturating_mul(LOG_BYTES_PER_INDEX_BYTE)
            .min(INDEX_SCALED_THRESHOLD_MAX),
        false => 0,
    };
    threshold.max(floor)
}

/// What open learned, kept for stats.
#[derive(Debug, Clone, Default)]
struct OpenReport {
    records_replayed: u64,
    corrupt_records_skipped: u64,
    torn_bytes_truncated: u64,
    warnings: Vec<String>,
    payloads: PayloadOpenReport,
}

/// An open collection. Shared between threads (always behind an `Arc`); every method takes
/// `&self`.
pub struct Collection {
    /// The file system the collection's files live on.
    fs: Arc<dyn Vfs>,
    name: String,
    dir: PathBuf,
    config: CollectionConfig,
    options: CollectionOptions,
    report: OpenReport,
    writer: Mutex<Option<Writer>>,
    /// Threads waiting in `lock_writer`: a chain of groups (see `commit_group`) stops for
    /// them.
    writer_waiting: AtomicUsize,
    state: RwLock<Option<State>>,
    /// Held for the whole of a compaction (one at a time), and by close, which waits for a
    /// running one. Always taken before `writer`, never while holding it.
    compaction: Mutex<()>,
    /// Writes waiting for the committer thread.
    queue: Arc<CommitQueue>,
    committer: Mutex<Option<JoinHandle<()>>>,
    /// Where the committer's time goes ([`CollectionStats::commit_times`]).
    clock: CommitClock,
}

impl std::fmt::Debug for Collection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collection")
            .field("name", &self.name)
            .field("dir", &self.dir)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Creates a collection's files in `dir` (which must exist and be empty), each durable.
/// The caller renames `dir` into place and syncs the parent.
pub fn create_files(fs: &dyn Vfs, dir: &Path, dimension: u32, metric: Metric) -> Result<()> {
    let uid = config::new_uid();
    let config = CollectionConfig {
        format_version: COLLECTION_FORMAT_VERSION,
        dimension,
        metric,
        uid,
    };
    fsio::write_atomic(fs, dir, CONFIG_FILE, &config::encode(&config))?;
    VectorFile::create(fs, &dir.join(VECTORS_FILE), dimension, uid)?;
    WalWriter::create(fs, &dir.join(WAL_FILE), dimension, uid)?;
    payloads::create_files(fs, dir, uid)?;
    let empty = IndexSnapshot {
        version: INDEX_VERSION,
        dimension,
        uid,
        payload_generation: 1,
        payload_log_end: PAYLOAD_LOG_HEADER_LEN as u64,
        ..IndexSnapshot::default()
    };
    fsio::write_atomic(fs, dir, INDEX_FILE, &index::encode(&empty))?;
    let no_payloads = PayloadSnapshot {
        version: PAYLOAD_INDEX_VERSION,
        generation: 1,
        checkpoint_lsn: 0,
        log_end: PAYLOAD_LOG_HEADER_LEN as u64,
        entries: Vec::new(),
        uid,
    };
    fsio::write_atomic(
        fs,
        dir,
        PAYLOAD_INDEX_FILE,
        &payload_index::encode(&no_payloads),
    )
}

impl Collection {
    /// Opens the collection in `dir`, replaying its log and checkpointing what was replayed.
    pub fn open(
        fs: Arc<dyn Vfs>,
        name: &str,
        dir: &Path,
        options: CollectionOptions,
    ) -> Result<Arc<Collection>> {
        let config = read_config(&*fs, dir)?;
        fsio::remove_stale_temps(&*fs, dir)?;
        // What open reads must be durable before anything is built on it: a checkpoint whose
        // fsync of this directory failed left its renamed ids.idx visible but perhaps not on
        // the disk, and a handle that trusted it would reuse the slots it frees and log
        // after it, which a crash back to the older ids.idx cannot replay.
        fsio::sync_dir(&*fs, dir)?;
        let (snapshot, index_bytes) = read_index_header(&*fs, dir, &config)?;
        let index_file_bytes = index_bytes.bytes().len() as u64
            + fsio::file_len(&*fs, &dir.join(PAYLOAD_INDEX_FILE)).unwrap_or(0);
        let vectors =
            VectorFile::open(&*fs, &dir.join(VECTORS_FILE), config.dimension, config.uid)?;
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
        // Before format 2 a collection had no payload log: it gets an empty one.
        let upgrading = config.format_version < config::PAYLOADS_FORMAT_VERSION;
        // The two maps an open builds, each most of its time, on two threads: the payload
        // index (and the payload log's recovery, the only I/O meanwhile, so the order of disk
        // operations stays that of one thread) beside the id maps.
        let (id_maps, payloads) = std::thread::scope(|scope| {
            let payloads = scope.spawn(|| {
                PayloadStore::open(
                    &*fs,
                    dir,
                    &snapshot,
                    options.recovery,
                    upgrading,
                    config.uid,
                )
            });
            let id_maps = decode_index_entries(dir, index_bytes.bytes());
            let payloads = payloads
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (id_maps, payloads)
        });
        drop(index_bytes);
        let IndexEntries {
            free_slots,
            ids,
            slot_ids,
        } = id_maps?;
        let (payloads, payload_report) = payloads?;
        let mut state = State {
            vectors,
            ids,
            free_slots,
            pending_free: Vec::new(),
            slot_high_water: snapshot.slot_high_water,
            last_lsn: snapshot.checkpoint_lsn,
            checkpoint_lsn: snapshot.checkpoint_lsn,
            payloads,
            slot_ids,
            inverse_norms: None,
            batch_slots: Vec::new(),
            batch_starts: Vec::new(),
            missing_answered: None,
        };
        let (wal, mut report) = recover_log(&*fs, dir, &config, options.recovery, &mut state)?;
        state.payloads.finish_open(&*fs, dir)?;
        // Only once every file is read, so that a refused open leaves an older collection as
        // the build that wrote it can still open it. Nothing written since carries a uid.
        let upgraded = config.format_version < COLLECTION_FORMAT_VERSION;
        let config = upgrade_config(&*fs, dir, config)?;
        state.payloads.set_uid(config.uid);
        // A payload log replayed without a snapshot gets one now, so the next open is fast.
        let needs_checkpoint = wal.len_bytes() > WAL_HEADER_LEN as u64
            || (!payload_report.snapshot_used
                && state.payloads.log_bytes() > PAYLOAD_LOG_HEADER_LEN as u64);
        report.corrupt_records_skipped += payload_report.corrupt_records_skipped;
        report
            .warnings
            .extend(payload_report.warnings.iter().cloned());
        // Whether the files hold the whole state as opened, so that a close with nothing
        // logged since need not checkpoint: not after a repair or an upgrade this open made
        // in memory only (a damage skipped, a torn tail cut, a payload index rebuilt, files
        // that still carry no uid), which the next checkpoint writes.
        let files_current = !needs_checkpoint
            && !upgraded
            && payload_report.snapshot_used
            && report.corrupt_records_skipped == 0
            && report.torn_bytes_truncated == 0
            && report.warnings.is_empty();
        let files_current_at = files_current.then(|| wal.next_lsn());
        report.payloads = payload_report;
        // The open-time checkpoint also empties a torn tail: the planted bug skips it too.
        #[cfg(feature = "planted-bugs")]
        let needs_checkpoint =
            needs_checkpoint && !crate::planted::active(crate::planted::Bug::AppendAfterTornTail);
        let queue = Arc::new(CommitQueue::default());
        let collection = Arc::new_cyclic(|weak: &Weak<Collection>| Collection {
            fs,
            name: name.to_owned(),
            dir: dir.to_owned(),
            config,
            options,
            report,
            writer_waiting: AtomicUsize::new(0),
            writer: Mutex::new(Some(Writer {
                wal,
                poisoned: None,
                checkpoints: 0,
                compactions: 0,
                compaction_error: None,
                stats: WriteStats::default(),
                unstarted_bytes: 0,
                index_bytes: index_file_bytes,
                files_current_at,
            })),
            state: RwLock::new(Some(state)),
            compaction: Mutex::new(()),
            committer: Mutex::new(spawn_committer(name, Arc::clone(&queue), weak.clone())),
            clock: CommitClock::default(),
            queue,
        });
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
    /// atomic batch: after a crash either every record of it is present or none is. The
    /// records have no payload (an earlier one is dropped).
    pub fn upsert(
        &self,
        ids: &[Id],
        vectors: &[f32],
        durability: Option<Durability>,
    ) -> Result<()> {
        self.upsert_with_payloads(ids, vectors, &[], durability)
    }

    /// [`Collection::upsert`] with a payload per record: `payloads` is empty (no payloads)
    /// or has one entry per id, each JSON text or `None` (no payload). A record's vector
    /// and payload are one write: after a crash both are there or neither is.
    pub fn upsert_with_payloads(
        &self,
        ids: &[Id],
        vectors: &[f32],
        payloads: &[Option<&[u8]>],
        durability: Option<Durability>,
    ) -> Result<()> {
        let batch = self.prepare_upsert_with_payloads(ids, vectors, payloads)?;
        self.submit_and_wait(batch, durability).map(|_| ())
    }

    /// Validates and encodes an upsert batch without payloads; nothing is written. `None`
    /// for an empty batch.
    pub fn prepare_upsert(&self, ids: &[Id], vectors: &[f32]) -> Result<Option<PreparedBatch>> {
        self.prepare_upsert_with_payloads(ids, vectors, &[])
    }

    /// Validates and encodes an upsert batch (see [`Collection::upsert_with_payloads`] for
    /// `payloads`); nothing is written. `None` for an empty batch.
    pub fn prepare_upsert_with_payloads(
        &self,
        ids: &[Id],
        vectors: &[f32],
        payloads: &[Option<&[u8]>],
    ) -> Result<Option<PreparedBatch>> {
        self.prepare_upsert_texts(ids, vectors, payloads, PayloadText::Unchecked)
    }

    /// [`Collection::prepare_upsert_with_payloads`] for payload texts made as `text` says:
    /// [`PayloadText::Serialized`] texts are not parsed again.
    pub fn prepare_upsert_texts(
        &self,
        ids: &[Id],
        vectors: &[f32],
        payloads: &[Option<&[u8]>],
        text: PayloadText,
    ) -> Result<Option<PreparedBatch>> {
        let dim = self.config.dimension as usize;
        if !payloads.is_empty() && payloads.len() != ids.len() {
            return Err(Error::invalid(format!(
                "{} ids need {} payloads (or none), got {}",
                ids.len(),
                ids.len(),
                payloads.len()
            )));
        }
        check_batch_len(ids.len())?;
        if vectors.len() != ids.len() * dim {
            return Err(Error::DimensionMismatch(format!(
                "{} ids need {} floats at dimension {dim}, got {}",
                ids.len(),
                ids.len() * dim,
                vectors.len()
            )));
        }
        if ids.is_empty() {
            return Ok(None);
        }
        let body_bytes: usize = ids.iter().map(|id| 1 + id_encoded_len(id)).sum::<usize>()
            + vectors.len() * 4
            + payloads
                .iter()
                .map(|p| payload_encoded_len(*p))
                .sum::<usize>();
        check_body_len(body_bytes)?;
        let mut enc = BatchEncoder::new(body_bytes);
        for (i, (id, vector)) in ids.iter().zip(vectors.chunks_exact(dim.max(1))).enumerate() {
            validate_id(i, id)?;
            if let Some(j) = first_non_finite(vector) {
                return Err(Error::invalid(format!(
                    "record {i} (id {id}): component {j} is {}, vectors must be finite",
                    vector[j]
                )));
            }
            let payload = payloads.get(i).copied().flatten();
            if let Some(p) = payload {
                json::check_payload(p, text)
                    .map_err(|e| Error::invalid(format!("record {i} (id {id}): {e}")))?;
            }
            enc.upsert_with_payload(id, vector, payload);
        }
        Ok(Some(PreparedBatch {
            encoder: enc,
            upserts: ids.len(),
            deletes: false,
        }))
    }

    /// Replaces the payload of `id` (`None` removes it), keeping its vector; with `merge`,
    /// `payload` must be a JSON object whose keys replace or add those of the stored one
    /// (a shallow merge, resolved here under the writer lock, so concurrent merges never
    /// lose each other's keys and replay stays deterministic). Returns whether `id` exists;
    /// nothing is written when it does not.
    pub fn update_payload(
        &self,
        id: &Id,
        payload: Option<&[u8]>,
        merge: bool,
        durability: Option<Durability>,
    ) -> Result<bool> {
        id.validate()?;
        if let Some(p) = payload {
            json::validate_payload(p).map_err(|e| Error::invalid(format!("id {id}: {e}")))?;
        }
        let patch = match (merge, payload) {
            (false, _) => None,
            (true, Some(p)) if json::is_object(p) => Some(p),
            (true, _) => {
                return Err(Error::invalid(format!(
                    "id {id}: a merge patch must be a JSON object"
                )))
            }
        };
        // Writes issued before this call, possibly still queued, are applied first.
        self.barrier(Durability::None)?;
        let updated = {
            let mut writer_guard = self.lock_writer()?;
            let writer = self.usable_writer(&mut writer_guard)?;
            // Only this writer changes the state, so what is read here holds until the commit.
            let current = {
                let guard = self.read_state()?;
                let state = guard.as_ref().ok_or(Error::Closed("collection"))?;
                match (state.ids.contains_key(id), patch) {
                    (false, _) => None,
                    (true, None) => Some(None),
                    (true, Some(_)) => Some(state.payloads.get(id)?),
                }
            };
            let Some(current) = current else {
                return Ok(false);
            };
            let merged = match patch {
                Some(patch) => Some(
                    json::merge_objects(current.as_deref(), patch)
                        .map_err(|e| Error::invalid(format!("id {id}: {e}")))?,
                ),
                None => None,
            };
            let payload = merged.as_deref().or(payload);
            let mut enc = BatchEncoder::new(1 + id_encoded_len(id) + payload_encoded_len(payload));
            enc.set_payload(id, payload);
            self.commit_locked(writer, enc, 0, durability)?;
            true
        };
        self.maybe_compact();
        Ok(updated)
    }

    /// Removes `ids` as one atomic batch. Returns how many records it removed (an id given
    /// twice counts once).
    pub fn delete(&self, ids: &[Id], durability: Option<Durability>) -> Result<u64> {
        let batch = self.prepare_delete(ids)?;
        self.submit_and_wait(batch, durability)
    }

    /// Validates and encodes a delete batch; nothing is written. `None` for an empty batch.
    pub fn prepare_delete(&self, ids: &[Id]) -> Result<Option<PreparedBatch>> {
        check_batch_len(ids.len())?;
        if ids.is_empty() {
            return Ok(None);
        }
        let body_bytes: usize = ids.iter().map(|id| 1 + id_encoded_len(id)).sum();
        check_body_len(body_bytes)?;
        let mut encoder = BatchEncoder::new(body_bytes);
        for (i, id) in ids.iter().enumerate() {
            validate_id(i, id)?;
            encoder.delete(id);
        }
        Ok(Some(PreparedBatch {
            encoder,
            upserts: 0,
            deletes: true,
        }))
    }

    /// Queues a prepared batch (or, for `None`, an empty write that only checks the
    /// collection is usable) for the committer; `done` gets the outcome, on the committer
    /// thread, once the batch is as durable as asked. This is the door for callers that must
    /// not block, such as the JavaScript binding; writes queued together share log writes
    /// and syncs. `done` must be quick and must not wait for this collection: it may run
    /// while the committer holds the collection's locks (an upsert is answered before it is
    /// applied, under the writer and state locks; the other answers of a group come under
    /// the writer lock when the committer logged the next group before applying it), so a
    /// read, `stats`, a synchronous write, `flush`, `checkpoint` or `close` from it would
    /// wait for the very thread running it.
    /// Queueing more writes from it is fine (`submit`, `submit_quiet`, an empty batch
    /// included). A `done` that panics is contained and harms no other write.
    pub fn submit(
        &self,
        batch: Option<PreparedBatch>,
        durability: Option<Durability>,
        done: Completion,
    ) {
        let durability = durability.unwrap_or(self.options.durability);
        if batch.is_none() {
            // Nothing to log: answer at once, refusing a closed or poisoned collection. While
            // the writer lock is held (a group commits, and this call may come from one of its
            // completions, which run under that lock), after that group instead: waiting for
            // the lock could wait for this very thread.
            let result = match self.writer.try_lock() {
                Ok(mut guard) => self.usable_writer(&mut guard).map(|_| 0),
                Err(TryLockError::Poisoned(_)) => Err(self.lock_poisoned()),
                Err(TryLockError::WouldBlock) => {
                    return self.enqueue(Request::new(None, Durability::None, done));
                }
            };
            // Answered with the lock released, and a panic of `done` contained.
            return Request::new(None, Durability::None, done).complete(result);
        }
        self.enqueue(Request::new(batch, durability, done));
    }

    /// [`Collection::submit`] without waking the committer: the caller queues writes in a
    /// row and then calls [`Collection::wake_committer`] once, so they start as one group
    /// and share one wake. Until then they wait, unless `commit::QUIET_PENDING_MAX` of them
    /// pile up (closing the collection also wakes the committer).
    pub fn submit_quiet(
        &self,
        batch: Option<PreparedBatch>,
        durability: Option<Durability>,
        done: Completion,
    ) {
        let Some(batch) = batch else {
            return self.submit(None, durability, done);
        };
        let durability = durability.unwrap_or(self.options.durability);
        if let Err(request) = self
            .queue
            .push_quiet(Request::new(Some(batch), durability, done))
        {
            request.complete(Err(self.refusal()));
        }
    }

    /// Starts the committer on writes queued by [`Collection::submit_quiet`].
    pub fn wake_committer(&self) {
        self.queue.wake();
    }

    fn enqueue(&self, request: Request) {
        if let Err(request) = self.queue.push(request) {
            request.complete(Err(self.refusal()));
        }
    }

    /// Queues `request`-to-be and waits for its outcome.
    fn wait_for(&self, queue: impl FnOnce(Completion)) -> Result<u64> {
        let (tx, rx) = mpsc::sync_channel(1);
        queue(Box::new(move |result| {
            // The receiver only goes away if the waiting thread did, so nobody needs it.
            let _ = tx.send(result);
        }));
        rx.recv().unwrap_or(Err(Error::Closed("collection")))
    }

    fn submit_and_wait(
        &self,
        batch: Option<PreparedBatch>,
        durability: Option<Durability>,
    ) -> Result<u64> {
        self.wait_for(|done| self.submit(batch, durability, done))
    }

    /// Waits until every write queued before it is committed, then makes the log as durable
    /// as `durability` asks.
    fn barrier(&self, durability: Durability) -> Result<()> {
        self.wait_for(|done| self.enqueue(Request::new(None, durability, done)))
            .map(|_| ())
    }

    /// Commits one group: logs every record, decodes them, syncs once at the strongest
    /// durability asked for (an `fsync` group whose state lock is free writes its vectors
    /// meanwhile: [`State::stage_group`]), answers the writes whose answer their logging
    /// settled, applies the records in order (readers wait for the apply: the state lock is
    /// taken before those answers), answers the rest. Runs on the committer thread; a
    /// payload compaction that came due runs after the group is answered.
    ///
    /// An `fsync` group logs the group queued behind it, if any, between its early answers
    /// and its apply, so that the disk writes the next group's records while this one is
    /// applied instead of waiting for it ([`Collection::finish_group`]). That group is
    /// committed next under the same hold of the writer lock, which nothing else takes
    /// while a logged record is not applied yet (a checkpoint would drop it from the log).
    /// A chain ends after [`CHAIN_GROUPS_MAX`] groups, when a checkpoint is due or another
    /// thread waits for the writer lock, at a group that does not sync or fails, or before
    /// one of over [`CHAIN_BYTES_MAX`].
    fn commit_group(&self, group: Vec<Request>) {
        #[cfg(feature = "planted-bugs")]
        if crate::planted::failing(crate::planted::Fault::CommitterPanic) {
            panic!("planted: the committer panics");
        }
        let mut writer_guard = match self.lock_writer() {
            Ok(guard) => guard,
            Err(e) => return fail_group(group, e, &self.name),
        };
        let writer = match self.usable_writer(&mut writer_guard) {
            Ok(writer) => writer,
            Err(e) => return fail_group(group, e, &self.name),
        };
        let reserve = |upserts| {
            let mut state_guard = self.write_state()?;
            open_state(&mut state_guard)?.reserve_slots(upserts)
        };
        let mut logged = match self.log_group(writer, group, reserve, false) {
            Ok(logged) => logged,
            Err((group, e)) => return fail_group(group, writer.poison(e), &self.name),
        };
        let mut chained = 1;
        let last = loop {
            let mut finished = self.finish_group(writer, logged, chained < CHAIN_GROUPS_MAX);
            let Some(next) = finished.next.take() else {
                break finished;
            };
            // This group failed after the next one was logged (a chain starts only from a
            // usable writer): that one is in the log, is not to be applied past the failure,
            // and reopening replays it, so it fails as this group's logged records did.
            let stop = writer
                .poisoned
                .as_deref()
                .map(|cause| match &finished.logged_but_failed {
                    Some(e) => commit::echo(e, &self.name),
                    None => self.poisoned(cause),
                });
            // The next group is logged: answer this one's rest now, not after the chain. Its
            // writes were queued behind this group: they count as waiting at its end.
            let behind = next.as_ref().map_or(0, |l| l.requests.len());
            self.answer_rest(finished, writer.poisoned.as_deref(), behind);
            match (next, stop) {
                (Ok(next), None) => {
                    logged = next;
                    chained += 1;
                }
                (Ok(next), Some(e)) => {
                    fail_group(next.requests, e, &self.name);
                    break Finished::default();
                }
                (Err((group, e)), _) => {
                    fail_group(group, writer.poison(e), &self.name);
                    break Finished::default();
                }
            }
        };
        if writer.checkpoint_due(&self.options) {
            // The writes themselves are logged as asked, so they are acknowledged even if this
            // checkpoint fails; the failure poisons the collection and the next call says why.
            let _ = self.checkpoint_locked(writer);
        }
        let poisoned = writer.poisoned.clone();
        drop(writer_guard);
        self.answer_rest(last, poisoned.as_deref(), 0);
        self.maybe_compact();
    }

    /// The rest of committing a group [`Collection::log_group`] logged: decodes its records,
    /// stages its vectors if it syncs, finishes its sync, answers early the writes its
    /// logging settled, applies it, and returns what is left to answer. With `may_chain`,
    /// an `fsync` group whose records all decoded, and whose vectors were written if it
    /// staged them (a reader holding the state lock leaves them to the apply), takes the
    /// group queued behind it, if any, and logs it (sync started) after its early answers
    /// and before its apply: that group is in `next`, for the caller to finish next.
    fn finish_group(&self, writer: &mut Writer, logged: LoggedGroup, may_chain: bool) -> Finished {
        let LoggedGroup {
            requests: group,
            durability,
            first_lsn,
            log_bytes,
            logged_in,
        } = logged;
        // Decoding and staging count as applying (`CommitClock`).
        let staging = Instant::now();
        let logged_records = group.iter().filter(|r| r.batch.is_some()).count();
        let mut lsns = first_lsn..;
        let mut records = Vec::with_capacity(logged_records);
        let mut failure = None;
        for batch in group.iter().filter_map(|r| r.batch.as_ref()) {
            let lsn = lsns.next().expect("an unbounded range");
            let record = batch.encoder.record();
            let body = &record[walfmt::RECORD_HEADER_LEN..record.len() - 4];
            match walfmt::decode_batch(body, self.config.dimension) {
                Ok(ops) => records.push((lsn, ops)),
                Err(e) => {
                    failure = Some(Error::corrupted(&self.dir, e.offset, e.reason));
                    break;
                }
            }
        }
        // A group that syncs writes its vectors to slots no reader sees while the log's bytes
        // are on their way to the disk (`log_group` started them), so that the fdatasync
        // waits for less. Other groups have no sync to hide the copy behind: they write them
        // after their early answers, which would otherwise wait for it. So does a group
        // whose lock a reader holds (a search may hold it for a whole scan, and the sync
        // must not wait for that), and one with no vector to write.
        let mut staged = None;
        let has_vectors = || {
            records
                .iter()
                .flat_map(|(_, ops)| ops)
                .any(|op| matches!(op, Op::Upsert { .. }))
        };
        if durability == Durability::Fsync && has_vectors() {
            let try_write = || {
                #[cfg(feature = "planted-bugs")]
                if crate::planted::state_lock_busy() {
                    return Err(TryLockError::WouldBlock);
                }
                self.state.try_write()
            };
            staged = match try_write() {
                Ok(mut state_guard) => {
                    Some(open_state(&mut state_guard).and_then(|state| state.stage_group(&records)))
                }
                Err(TryLockError::WouldBlock) => None,
                Err(TryLockError::Poisoned(_)) => {
                    fail_group(group, writer.poison(self.lock_poisoned()), &self.name);
                    return Finished::default();
                }
            };
        }
        let staged_in = staging.elapsed();
        let syncing = Instant::now();
        if let Err(e) = writer.wal.settle(durability) {
            fail_group(group, writer.poison(e), &self.name);
            return Finished::default();
        }
        CommitClock::add_time(&self.clock.log_nanos, logged_in + syncing.elapsed());
        #[cfg(feature = "planted-bugs")]
        if crate::planted::failing(crate::planted::Fault::CommitterPanicAfterLog) {
            panic!("planted: the committer panics after logging a group");
        }
        let applying = Instant::now();
        writer.stats.records += logged_records as u64;
        // A group of barriers alone (`flush`, the wait of a payload update) logs nothing.
        if logged_records > 0 {
            writer.stats.groups += 1;
        }
        let mut results = Vec::with_capacity(group.len());
        let mut logged_but_failed = None;
        let mut next = None;
        let answered_early;
        {
            let mut state_guard = match self.write_state() {
                Ok(guard) => guard,
                Err(e) => {
                    fail_group(group, writer.poison(e), &self.name);
                    return Finished::default();
                }
            };
            // The group's payload frames join the buffer of earlier groups' frames, which
            // reads find them in, and go to the file with them in one write.
            if let Ok(state) = open_state(&mut state_guard) {
                state.payloads.begin_buffering();
            }
            // The writes whose answer their logging settled are answered now, before they are
            // applied, so that their callers' wake-up overlaps the apply; this lock, held
            // until the group is applied, makes any read issued after an answer wait for it.
            // If applying fails after this (an I/O error: each of these records decoded, so
            // replay can apply it), the collection is poisoned and reads refuse until a reopen
            // applies them from the log. A group whose vectors were written before its sync
            // and failed answers nothing early: it fails.
            let answering_early = Instant::now();
            let decoded = group
                .iter()
                .filter(|r| r.batch.is_some())
                .take(records.len());
            let mut any_early = false;
            let vectors_failed = matches!(staged, Some(Err(_)));
            let early = decoded.filter(|r| !vectors_failed && r.settled_by_log(durability));
            for request in early {
                #[cfg(feature = "planted-bugs")]
                crate::planted::record(crate::planted::EventKind::Ack, &self.dir.join(WAL_FILE));
                request.answer(Ok(0));
                any_early = true;
            }
            answered_early = answering_early.elapsed();
            // The next group's records go to the log now, so that the disk writes them while
            // this group is applied. Its slots are reserved on top of this group's, which
            // are not taken yet. A failure is the next group's: this one is answered first.
            let chain = may_chain
                && durability == Durability::Fsync
                && failure.is_none()
                && !vectors_failed
                && writer.poisoned.is_none()
                && !writer.checkpoint_due(&self.options)
                && self.writer_waiting.load(Ordering::Relaxed) == 0;
            if let Some(next_group) = chain
                .then(|| self.queue.try_next_group(CHAIN_BYTES_MAX))
                .flatten()
            {
                let upserts_here = upserts_of(&group);
                next = Some(match open_state(&mut state_guard) {
                    Ok(state) => self.log_group(
                        writer,
                        next_group,
                        |upserts| state.reserve_slots(upserts.saturating_add(upserts_here)),
                        true,
                    ),
                    Err(e) => Err((next_group, e)),
                });
            }
            #[cfg(feature = "planted-bugs")]
            if crate::planted::active(crate::planted::Bug::AckChainedEarly) {
                for request in next.iter().flatten().flat_map(|next| &next.requests) {
                    crate::planted::record(
                        crate::planted::EventKind::Ack,
                        &self.dir.join(WAL_FILE),
                    );
                    request.answer(Ok(0));
                }
            }
            let next_logged_in = match &next {
                Some(Ok(next)) => next.logged_in,
                _ => Duration::ZERO,
            };
            let mut removed = Vec::with_capacity(records.len());
            let applied = open_state(&mut state_guard).and_then(|state| {
                let staged = staged.unwrap_or_else(|| state.stage_group(&records))?;
                state.publish_group(&records, staged, &mut removed)
            });
            if let Err(e) = applied {
                failure = Some(e);
            }
            // After a failed apply the records that follow are logged but not applied:
            // fail them too, with the same error (reopening replays them, as for any
            // unacknowledged write, so "refused" would be untrue).
            let mut removed = removed.into_iter();
            for request in &group {
                if request.batch.is_none() {
                    results.push(Ok(0)); // a barrier: the group's sync was all it asked for
                } else if let Some(n) = removed.next() {
                    results.push(Ok(n));
                } else {
                    if let Some(e) = failure.take() {
                        let e = writer.poison(e);
                        logged_but_failed = Some(commit::echo(&e, &self.name));
                        results.push(Err(e));
                    }
                    break;
                }
            }
            let written = open_state(&mut state_guard).and_then(|state| state.payloads.end_group());
            if let Err(e) = written {
                // Records applied in memory whose payload frames are not in the file, this
                // group's and possibly earlier groups' (their frames were buffered): none of
                // those not answered yet is acknowledged (reopening replays them all from the
                // log, which holds them), and reads refuse until then.
                let e = writer.poison(e);
                for result in results.iter_mut().filter(|r| r.is_ok()) {
                    *result = Err(commit::echo(&e, &self.name));
                }
                logged_but_failed.get_or_insert(e);
            }
            // The writer was usable when the group began, and the next group's failure to
            // log is not recorded yet: a poison now is this group's.
            if let (Some(cause), Ok(state)) = (&writer.poisoned, open_state(&mut state_guard)) {
                if any_early {
                    state.missing_answered = Some(cause.clone());
                }
            }
            CommitClock::add_time(&self.clock.answer_nanos, answered_early);
            CommitClock::add_time(
                &self.clock.apply_nanos,
                staged_in
                    + (applying
                        .elapsed()
                        .saturating_sub(answered_early + next_logged_in)),
            );
        }
        writer.unstarted_bytes += log_bytes;
        if writer.unstarted_bytes >= COMMIT_WRITEBACK_BYTES {
            writer.unstarted_bytes = 0;
            if let Ok(guard) = self.read_state() {
                if let Some(state) = guard.as_ref() {
                    state.vectors.start_writeback();
                    state.payloads.start_writeback();
                }
            }
        }
        Finished {
            requests: group,
            results,
            logged_but_failed,
            next,
        }
    }

    /// Completes the writes of a finished group that were not answered early: with their
    /// results, or, past the last result, with the error that stopped the group (`poisoned`
    /// is the writer's poison, for a group that ended without one of its own). `behind`
    /// counts the writes of the group logged after it, which were queued behind it.
    fn answer_rest(&self, finished: Finished, poisoned: Option<&str>, behind: usize) {
        let answering = Instant::now();
        let Finished {
            requests,
            results,
            logged_but_failed,
            ..
        } = finished;
        if requests.is_empty() {
            return;
        }
        let mut results = results.into_iter();
        for request in requests {
            let result = results.next().unwrap_or_else(|| {
                Err(match &logged_but_failed {
                    Some(e) => commit::echo(e, &self.name),
                    None => self.poisoned(poisoned.unwrap_or_default()),
                })
            });
            if request.answered() {
                continue; // before the apply
            }
            #[cfg(feature = "planted-bugs")]
            if result.is_ok() {
                crate::planted::record(crate::planted::EventKind::Ack, &self.dir.join(WAL_FILE));
            }
            request.complete(result);
        }
        CommitClock::add(&self.clock.answer_nanos, answering);
        self.clock
            .queued_at_group_end
            .fetch_add((self.queue.len() + behind) as u64, Ordering::Relaxed);
    }

    /// Reserves slots for every upsert of the group (`reserve` is given their count), then
    /// frames and logs its records with consecutive sequence numbers, as durable as the
    /// strongest durability of the group asks except that a sync is only started
    /// ([`crate::wal::writer::WalWriter::start_sync`]): [`Collection::finish_group`] finishes
    /// it with `writer.wal.settle`; with `readers_wait` (the caller holds the state lock) the
    /// zero-filled space ahead of the records is left to that sync. On an error the caller
    /// poisons the collection and fails the group, which it gets back.
    fn log_group(
        &self,
        writer: &mut Writer,
        mut group: Vec<Request>,
        reserve: impl FnOnce(usize) -> Result<()>,
        readers_wait: bool,
    ) -> std::result::Result<LoggedGroup, (Vec<Request>, Error)> {
        let started = Instant::now();
        let durability = strongest(&group);
        let log_bytes_before = writer.wal.len_bytes();
        let logged = (|| {
            // Once a record is logged, applying it must not fail: grow the file first.
            reserve(upserts_of(&group))?;
            let records = group.iter().filter(|r| r.batch.is_some()).count();
            check_lsn_room(writer, records, &self.dir)?;
            let first_lsn = writer.wal.next_lsn();
            for request in group.iter_mut() {
                if let Some(batch) = &mut request.batch {
                    let (lsn, flags) = (writer.wal.next_lsn(), writer.wal.next_record_flags());
                    writer
                        .wal
                        .append(batch.encoder.seal(lsn, flags), Durability::None)?;
                }
            }
            match durability {
                // The zero fill can wait for the sync, outside the lock readers wait for.
                Durability::Fsync => writer.wal.start_sync(!readers_wait)?,
                _ => writer.wal.settle(durability)?,
            }
            Ok(first_lsn)
        })();
        match logged {
            Ok(first_lsn) => Ok(LoggedGroup {
                requests: group,
                durability,
                first_lsn,
                log_bytes: writer.wal.len_bytes().saturating_sub(log_bytes_before),
                logged_in: started.elapsed(),
            }),
            Err(e) => Err((group, e)),
        }
    }

    fn commit_locked(
        &self,
        writer: &mut Writer,
        enc: BatchEncoder,
        upserts: usize,
        durability: Option<Durability>,
    ) -> Result<u64> {
        let durability = durability.unwrap_or(self.options.durability);
        check_lsn_room(writer, 1, &self.dir)?;
        // Reserve vector slots first: once the record is logged, applying it must not fail.
        {
            let mut state_guard = self.write_state()?;
            let state = open_state(&mut state_guard)?;
            if let Err(e) = state.reserve_slots(upserts) {
                return Err(writer.poison(e));
            }
        }
        let lsn = writer.wal.next_lsn();
        let record = enc.finish_with_flags(lsn, writer.wal.next_record_flags());
        if let Err(e) = writer.wal.append(&record, durability) {
            return Err(writer.poison(e));
        }
        // A group of its own, outside the committer: one record, at most one sync.
        writer.stats.records += 1;
        writer.stats.groups += 1;
        let applied = {
            let mut state_guard = self.write_state()?;
            let state = open_state(&mut state_guard)?;
            let body = &record[walfmt::RECORD_HEADER_LEN..record.len() - 4];
            let mut removed = Vec::with_capacity(1);
            walfmt::decode_batch(body, self.config.dimension)
                .map_err(|e| Error::corrupted(&self.dir, e.offset, e.reason))
                .and_then(|ops| state.apply_group(&[(lsn, ops)], &mut removed))
                .map(|()| removed.iter().sum::<u64>())
        };
        let removed = applied.map_err(|e| writer.poison(e))?;
        #[cfg(feature = "planted-bugs")]
        crate::planted::record(crate::planted::EventKind::Ack, &self.dir.join(WAL_FILE));
        if writer.checkpoint_due(&self.options) {
            // The write itself is logged as asked, so it is acknowledged even if this
            // checkpoint fails; the failure poisons the collection and the next call says why.
            let _ = self.checkpoint_locked(writer);
        }
        Ok(removed)
    }

    /// Holds the committer thread (`true`) until released (`false`): writes queued meanwhile
    /// are committed as one group. The simulated-disk tests use it to make group commits
    /// deterministic, so that a failing seed replays exactly.
    #[cfg(feature = "sim")]
    pub fn hold_commits(&self, held: bool) {
        self.queue.hold(held);
    }

    /// Waits until the committer is idle: every write queued so far is applied (or failed),
    /// not only answered. The simulated-disk tests call it after each step, so that the
    /// disk operations a step leaves behind do not depend on thread timing.
    #[cfg(feature = "sim")]
    pub fn wait_for_committer(&self) {
        self.queue.wait_idle();
    }

    /// Grows the vector file so that `additional` more records fit without a remap, ahead of
    /// a bulk load. Slots freed by the last checkpoint count: a load that replaces records it
    /// loaded before reuses them, so reserving for it again does not grow the file.
    pub fn reserve(&self, additional: u64) -> Result<()> {
        // Held so that no group commit reserves or applies meanwhile.
        let mut writer_guard = self.lock_writer()?;
        self.usable_writer(&mut writer_guard)?;
        let mut state_guard = self.write_state()?;
        let state = open_state(&mut state_guard)?;
        // Nothing is logged here, and a failed grow leaves the file's mapping as it was (a
        // later grow starts over), so a failure is reported, not made a poison.
        state.reserve_slots(usize::try_from(additional).unwrap_or(usize::MAX))
    }

    /// Copies the vector stored under `id`, if any.
    pub fn get(&self, id: &Id) -> Result<Option<Vec<f32>>> {
        id.validate()?;
        let guard = self.read_state()?;
        let state = self.readable(&guard)?;
        match state.ids.get(id) {
            Some(&slot) => state.vectors.read_slot(slot).map(Some),
            None => Ok(None),
        }
    }

    /// The `request.k` records nearest to `query`, best first. Exact: every live record
    /// (that the filter accepts) is compared. Reflects every write acknowledged before the
    /// call; it scans under the read lock, so it never sees a half-written vector.
    pub fn search(&self, query: &[f32], request: &SearchRequest<'_>) -> Result<Vec<SearchHit>> {
        if query.len() != self.config.dimension as usize {
            return Err(Error::DimensionMismatch(format!(
                "the query has {} components, the collection's dimension is {}",
                query.len(),
                self.config.dimension
            )));
        }
        Ok(self
            .search_batch(query, request)?
            .into_iter()
            .next()
            .unwrap_or_default())
    }

    /// [`Collection::search`] for many queries (a flat array of `count * dimension`
    /// floats) in one pass over the vectors. Returns one result list per query, in order.
    pub fn search_batch(
        &self,
        queries: &[f32],
        request: &SearchRequest<'_>,
    ) -> Result<Vec<Vec<SearchHit>>> {
        let metric = self.config.metric;
        let count = search::validate_request(
            queries,
            self.config.dimension as usize,
            request.k,
            request.include_vectors,
        )?;
        if count == 0 {
            // Still refuse a closed collection.
            return self.readable(&*self.read_state()?).map(|_| Vec::new());
        }
        {
            let guard = self.read_state()?;
            let state = self.readable(&guard)?;
            if metric != Metric::Cosine || state.inverse_norms.is_some() {
                return state.search(metric, queries, request);
            }
        }
        // The first cosine search computes the inverse norms, under the write lock (one pass
        // over the vectors); from then on writes keep them. It takes the writer lock first,
        // as writes do: a checkpoint holds it and reads the state while it writes the
        // indexes, and a write lock requested meanwhile would make every new reader queue
        // behind it (std's RwLock lets no reader past a waiting writer).
        {
            let _writer = self.lock_writer()?;
            let mut guard = self.write_state()?;
            open_state(&mut guard)?.build_inverse_norms()?;
        }
        let guard = self.read_state()?;
        let state = self.readable(&guard)?;
        state.search(metric, queries, request)
    }

    /// The sum of every float of the live slot range, read in place under the read lock:
    /// the cheapest pass over the bytes a search reads. The benchmark times it as the
    /// memory-bandwidth limit a search is compared with; it is not meant for anything else.
    pub fn memory_scan_for_bench(&self) -> Result<f32> {
        let guard = self.read_state()?;
        let state = self.readable(&guard)?;
        Ok(kernels::sum(
            state.vectors.slots_f32(state.slot_high_water)?,
        ))
    }

    /// The record stored under `id`, with its vector and payload if asked for, read under
    /// one lock so both come from the same write.
    pub fn get_record(&self, id: &Id, vector: bool, payload: bool) -> Result<Option<Record>> {
        id.validate()?;
        let guard = self.read_state()?;
        let state = self.readable(&guard)?;
        read_record(state, id, vector, payload)
    }

    /// [`Collection::get_record`] into buffers the caller owns and reuses, under one lock:
    /// the vector into `vector` (exactly `dimension` floats), the payload's JSON text into
    /// `payload` (cleared first). `None` if no record has `id`; else whether a payload was
    /// read (`false` too when none was asked for). Nothing is allocated once `payload` has
    /// grown to the largest payload read.
    pub fn get_record_into(
        &self,
        id: &Id,
        vector: Option<&mut [f32]>,
        payload: Option<&mut Vec<u8>>,
    ) -> Result<Option<bool>> {
        id.validate()?;
        if let Some(v) = &vector {
            if v.len() != self.config.dimension as usize {
                return Err(Error::DimensionMismatch(format!(
                    "the vector buffer holds {} floats, the collection's dimension is {}",
                    v.len(),
                    self.config.dimension
                )));
            }
        }
        let guard = self.read_state()?;
        let state = self.readable(&guard)?;
        let Some(&slot) = state.ids.get(id) else {
            return Ok(None);
        };
        // Both lookups before either copy: each is a chain of dependent loads that usually
        // misses the cache, and done back to back they overlap.
        let loc = payload.as_ref().and_then(|_| state.payloads.loc(id));
        if let Some(out) = vector {
            state.vectors.read_slot_into(slot, out)?;
        }
        match (payload, loc) {
            (Some(out), Some(loc)) => state.payloads.read_at(loc, id, out).map(|()| Some(true)),
            (Some(out), None) => {
                out.clear();
                Ok(Some(false))
            }
            (None, _) => Ok(Some(false)),
        }
    }

    /// [`Collection::get_record`] for many ids at once (at most `BATCH_RECORDS_MAX`), in
    /// their order, all from the same moment.
    pub fn get_many(&self, ids: &[Id], vector: bool, payload: bool) -> Result<Vec<Option<Record>>> {
        if ids.len() > BATCH_RECORDS_MAX {
            return Err(Error::invalid(format!(
                "one read takes at most {BATCH_RECORDS_MAX} ids, got {}",
                ids.len()
            )));
        }
        for (i, id) in ids.iter().enumerate() {
            validate_id(i, id)?;
        }
        let guard = self.read_state()?;
        let state = self.readable(&guard)?;
        ids.iter()
            .map(|id| read_record(state, id, vector, payload))
            .collect()
    }

    /// Rewrites the payload log's live frames to a new generation and deletes the old one,
    /// reclaiming the space of superseded and delete frames. Reads go on throughout, and so
    /// do writes, except during the last step. Crash-safe at every step (docs/FORMAT.md).
    ///
    /// 1. Under the writer lock: checkpoint, and take the live frames' locations.
    /// 2. No lock: copy those frames to `payloads-<g+1>.log.tmp` and fsync it.
    /// 3. Under the writer lock: copy the frames appended since step 1, fsync, rename to
    ///    `payloads-<g+1>.log`; under the state lock, point the index at the new file;
    ///    fsync the directory, delete `payloads-<g>.log`, checkpoint (a new snapshot).
    pub fn compact(&self) -> Result<()> {
        let token = self.compaction.lock().map_err(|_| self.lock_poisoned())?;
        let result = self.compact_locked(&token);
        if result.is_ok() {
            if let Some(writer) = self.lock_writer()?.as_mut() {
                writer.compaction_error = None;
            }
        }
        result
    }

    /// Compacts if the payload log is big enough and its garbage ratio at the threshold,
    /// unless a compaction is running or the last automatic one failed. The write that
    /// calls this is already acknowledged, so a failure is only recorded for stats.
    fn maybe_compact(&self) {
        if !self.compaction_due() {
            return;
        }
        let Ok(token) = self.compaction.try_lock() else {
            return;
        };
        let failed_before = self
            .lock_writer()
            .map(|g| g.as_ref().is_none_or(|w| w.compaction_error.is_some()))
            .unwrap_or(true);
        if failed_before || !self.compaction_due() {
            return;
        }
        if let Err(e) = self.compact_locked(&token) {
            if let Ok(mut guard) = self.lock_writer() {
                if let Some(writer) = guard.as_mut() {
                    writer.compaction_error = Some(e.to_string());
                }
            }
        }
    }

    fn compaction_due(&self) -> bool {
        let Ok(guard) = self.read_state() else {
            return false;
        };
        let Some(p) = guard.as_ref().map(|s| &s.payloads) else {
            return false;
        };
        p.log_bytes() >= self.options.compaction_min_bytes
            && garbage_ratio(p.garbage_bytes(), p.live_bytes())
                >= self.options.compaction_garbage_ratio
    }

    fn compact_locked(&self, _token: &MutexGuard<'_, ()>) -> Result<()> {
        // Step 1: the live frames as of a durable checkpoint, so that every frame the new
        // generation starts with has a sequence number the index on disk covers.
        let source = {
            let mut guard = self.lock_writer()?;
            let writer = self.usable_writer(&mut guard)?;
            self.checkpoint_locked(writer)?;
            let state_guard = self.read_state()?;
            let state = state_guard.as_ref().ok_or(Error::Closed("collection"))?;
            state.payloads.compaction_source()?
        };
        // Step 2: the bulk of the copy, holding no lock.
        let copy = source.copy(Arc::clone(&self.fs), &self.dir)?;
        // Step 3.
        let mut guard = self.lock_writer()?;
        let writer = match self.usable_writer(&mut guard) {
            Ok(writer) => writer,
            Err(e) => {
                copy.abandon();
                return Err(e);
            }
        };
        // The frames appended since step 1 are copied from the file: buffered ones go there
        // first. A failure leaves the index pointing at frames not in the file.
        let flushed = self.write_state().and_then(|mut state_guard| {
            open_state(&mut state_guard)?
                .payloads
                .write_buffered(Writeback::Later)
        });
        if let Err(e) = flushed {
            copy.abandon();
            return Err(writer.poison(e));
        }
        let installed = {
            let state_guard = self.read_state()?;
            let state = state_guard.as_ref().ok_or(Error::Closed("collection"))?;
            if let Err(e) = state.payloads.check_compaction(&copy) {
                copy.abandon();
                return Err(e);
            }
            state
                .payloads
                .install_compaction(copy, state.checkpoint_lsn)?
        };
        let superseded = {
            let mut state_guard = self.write_state()?;
            let state = open_state(&mut state_guard)?;
            state.payloads.swap(installed)
        };
        // From the rename on, the new generation is current after a crash: a failure
        // now leaves memory and disk possibly apart, so it poisons.
        let finished = fsio::sync_dir(&*self.fs, &self.dir)
            .and_then(|()| payload_log::remove(&*self.fs, &self.dir, superseded))
            .and_then(|()| self.checkpoint_steps(writer));
        finished.map_err(|e| writer.poison(e))?;
        writer.compactions += 1;
        Ok(())
    }

    /// A durability barrier: every write issued before this call (queued or acknowledged)
    /// is fsynced when it returns, whatever durability it asked for.
    pub fn flush(&self) -> Result<()> {
        self.barrier(Durability::Fsync)
    }

    /// Makes the vector file and the index durable, then empties the log.
    pub fn checkpoint(&self) -> Result<()> {
        let mut guard = self.lock_writer()?;
        let writer = self.usable_writer(&mut guard)?;
        self.checkpoint_locked(writer)
    }

    /// Checkpoints, unless the collection is poisoned: its state in memory may then hold
    /// records whose payload frames never reached the file (see
    /// `PayloadStore::end_buffering`), and a checkpoint would make it durable and empty the
    /// log that can still rebuild them.
    fn checkpoint_locked(&self, writer: &mut Writer) -> Result<()> {
        if let Some(cause) = &writer.poisoned {
            return Err(self.poisoned(cause));
        }
        self.checkpoint_steps(writer).map_err(|e| writer.poison(e))
    }

    fn checkpoint_steps(&self, writer: &mut Writer) -> Result<()> {
        #[cfg(feature = "planted-bugs")]
        if crate::planted::active(crate::planted::Bug::CutLogEarly) {
            writer.wal.truncate()?;
        }
        // Writers are held off by the caller's lock, so the state cannot change from here
        // to the free-list update below; readers go on meanwhile. The indexes are encoded
        // straight from it into their files. The index first: a payload snapshot is never
        // ahead of it, so a crash between the two renames leaves an older snapshot, which
        // open uses and replays on from.
        #[cfg(feature = "planted-bugs")]
        let write_out =
            !crate::planted::active(crate::planted::Bug::CheckpointLeavesFramesBuffered);
        #[cfg(not(feature = "planted-bugs"))]
        let write_out = true;
        if write_out {
            open_state(&mut *self.write_state()?)?
                .payloads
                .write_buffered(Writeback::Start)?;
        }
        let checkpoint_lsn = {
            let guard = self.read_state()?;
            let state = guard.as_ref().ok_or(Error::Closed("collection"))?;
            state.vectors.sync()?;
            state.payloads.sync()?;
            let ids_bytes = fsio::write_atomic_with(&*self.fs, &self.dir, INDEX_FILE, |flush| {
                state.encode_index(&self.config, flush)
            })?;
            let payload_bytes =
                fsio::write_atomic_with(&*self.fs, &self.dir, PAYLOAD_INDEX_FILE, |flush| {
                    state.payloads.encode_snapshot(state.last_lsn, flush)
                })?;
            writer.index_bytes = ids_bytes + payload_bytes;
            state.last_lsn
        };
        {
            let mut guard = self.write_state()?;
            let state = open_state(&mut guard)?;
            let freed = std::mem::take(&mut state.pending_free);
            state.free_slots.extend(freed);
            state.checkpoint_lsn = checkpoint_lsn;
        }
        writer.wal.reset()?;
        writer.checkpoints += 1;
        writer.files_current_at = Some(writer.wal.next_lsn());
        Ok(())
    }

    /// Counters and sizes.
    pub fn stats(&self) -> Result<CollectionStats> {
        let writer_guard = self.lock_writer()?;
        let writer = writer_guard.as_ref().ok_or(Error::Closed("collection"))?;
        let state_guard = self.read_state()?;
        let state = state_guard.as_ref().ok_or(Error::Closed("collection"))?;
        let index_file_bytes = fsio::file_len(&*self.fs, &self.dir.join(INDEX_FILE)).unwrap_or(0);
        Ok(CollectionStats {
            count: state.ids.len() as u64,
            dimension: self.config.dimension,
            metric: self.config.metric,
            vector_file_bytes: state.vectors.len_bytes(),
            capacity_slots: state.vectors.capacity_slots(),
            slot_high_water: u64::from(state.slot_high_water),
            wal_bytes: writer.wal.len_bytes(),
            index_file_bytes,
            checkpoint_at_bytes: writer.checkpoint_threshold(&self.options),
            last_lsn: state.last_lsn,
            checkpoint_lsn: state.checkpoint_lsn,
            checkpoints: writer.checkpoints,
            records_replayed: self.report.records_replayed,
            corrupt_records_skipped: self.report.corrupt_records_skipped,
            torn_bytes_truncated: self.report.torn_bytes_truncated,
            warnings: self.report.warnings.clone(),
            poisoned: writer.poisoned.is_some(),
            payload_count: state.payloads.count(),
            payload_log_bytes: state.payloads.log_bytes(),
            payload_live_bytes: state.payloads.live_bytes(),
            payload_garbage_bytes: state.payloads.garbage_bytes(),
            payload_log_generation: state.payloads.generation(),
            payload_records_replayed: self.report.payloads.records_replayed,
            payload_snapshot_used: self.report.payloads.snapshot_used,
            payload_bytes_truncated: self.report.payloads.bytes_truncated,
            compactions: writer.compactions,
            compaction_error: writer.compaction_error.clone(),
            wal_records: writer.stats.records,
            group_commits: writer.stats.groups,
            wal_syncs: writer.wal.syncs(),
            commit_times: self.clock.read(),
        })
    }

    /// Checkpoints (unless poisoned) and releases the files. Later calls get `Closed`;
    /// closing twice is a no-op.
    pub fn close(&self) -> Result<()> {
        // Queued writes are committed first, then a running compaction finishes (it would
        // find the collection closed).
        self.stop_committer();
        let _token = self.compaction.lock().map_err(|_| self.lock_poisoned())?;
        let mut guard = self.lock_writer()?;
        // A poisoned collection cannot checkpoint, and whatever it acknowledged without
        // `fsync` since its last sync is lost with its buffers: say so (the handle is closed
        // all the same).
        let result = match guard.as_mut() {
            Some(writer) => match &writer.poisoned {
                // Nothing written since the files last held the whole state: only the log's
                // zero-filled space goes (a read-only session rewrites no index).
                None if writer.files_current_at == Some(writer.wal.next_lsn()) => {
                    writer.wal.truncate()
                }
                None => self
                    .checkpoint_locked(writer)
                    .and_then(|()| writer.wal.truncate()),
                Some(cause) => Err(self.poisoned(cause)),
            },
            None => Ok(()),
        };
        *guard = None;
        *self.write_state()? = None;
        result
    }

    /// Releases the files without a checkpoint (the collection is being dropped), once a
    /// running compaction has finished writing in its directory.
    pub fn close_without_checkpoint(&self) -> Result<()> {
        self.stop_committer();
        let _token = self.compaction.lock().map_err(|_| self.lock_poisoned())?;
        *self.lock_writer()? = None;
        *self.write_state()? = None;
        Ok(())
    }

    /// Closes the queue and waits for the committer to drain it, unless called from the
    /// committer itself (whose last `Arc` may be the one being dropped).
    fn stop_committer(&self) {
        self.queue.close();
        let handle = self
            .committer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            if handle.thread().id() != std::thread::current().id() {
                // A panic on the committer already failed its requests (they complete on
                // drop); there is nothing more to report here.
                let _ = handle.join();
            }
        }
    }

    /// The error of this collection poisoned by `cause`.
    fn poisoned(&self, cause: &str) -> Error {
        Error::Poisoned {
            what: format!("collection '{}'", self.name),
            cause: cause.to_owned(),
        }
    }

    /// Why the queue refused a write: the poison, if a failure (such as a committer that
    /// panicked, which closes the queue) caused it, else that the collection is closed.
    /// Never waits for the writer lock: a completion run while it is held (a failed group's)
    /// may queue a write, and would deadlock its own thread.
    fn refusal(&self) -> Error {
        match self.writer.try_lock() {
            Ok(guard) => match guard.as_ref().and_then(|w| w.poisoned.as_deref()) {
                Some(cause) => self.poisoned(cause),
                None => Error::Closed("collection"),
            },
            Err(TryLockError::Poisoned(_)) => self.lock_poisoned(),
            Err(TryLockError::WouldBlock) => Error::Closed("collection"),
        }
    }

    fn lock_poisoned(&self) -> Error {
        self.poisoned("a thread panicked while holding its lock")
    }

    fn lock_writer(&self) -> Result<MutexGuard<'_, Option<Writer>>> {
        // Counted while waiting, so that a chain of groups stops for whoever waits.
        self.writer_waiting.fetch_add(1, Ordering::Relaxed);
        let locked = self.writer.lock();
        self.writer_waiting.fetch_sub(1, Ordering::Relaxed);
        locked.map_err(|_| self.lock_poisoned())
    }

    fn read_state(&self) -> Result<RwLockReadGuard<'_, Option<State>>> {
        self.state.read().map_err(|_| self.lock_poisoned())
    }

    fn write_state(&self) -> Result<RwLockWriteGuard<'_, Option<State>>> {
        self.state.write().map_err(|_| self.lock_poisoned())
    }

    /// The state a read may look at: refused when closed, or when it lacks writes that were
    /// answered (see [`State::missing_answered`]).
    fn readable<'g>(&self, guard: &'g Option<State>) -> Result<&'g State> {
        match guard.as_ref() {
            None => Err(Error::Closed("collection")),
            Some(State {
                missing_answered: Some(cause),
                ..
            }) => Err(self.poisoned(cause)),
            Some(state) => match state.payloads.lost_frames() {
                Some(cause) => Err(self.poisoned(cause)),
                None => Ok(state),
            },
        }
    }

    fn usable_writer<'g>(&self, guard: &'g mut Option<Writer>) -> Result<&'g mut Writer> {
        match guard.as_mut() {
            None => Err(Error::Closed("collection")),
            Some(Writer {
                poisoned: Some(cause),
                ..
            }) => Err(self.poisoned(cause)),
            Some(w) => Ok(w),
        }
    }
}

/// Sets `items[index]`, first growing `items` with defaults if it is too short.
fn set_grown<T: Clone + Default>(items: &mut Vec<T>, index: u32, value: T) {
    let index = index as usize;
    if items.len() <= index {
        items.resize(index + 1, T::default());
    }
    items[index] = value;
}

fn open_state(guard: &mut Option<State>) -> Result<&mut State> {
    guard.as_mut().ok_or(Error::Closed("collection"))
}

fn read_record(state: &State, id: &Id, vector: bool, payload: bool) -> Result<Option<Record>> {
    let Some(&slot) = state.ids.get(id) else {
        return Ok(None);
    };
    Ok(Some(Record {
        vector: vector.then(|| state.vectors.read_slot(slot)).transpose()?,
        payload: if payload {
            state.payloads.get(id)?
        } else {
            None
        },
    }))
}

/// Rewrites an older config as format 3, with a new uid, once the collection's files are
/// read (a format-1 collection's payload log created): from then on the log may hold
/// payload ops and files carry the uid, which a build that knows only format 1 or 2 must
/// refuse.
fn upgrade_config(fs: &dyn Vfs, dir: &Path, config: CollectionConfig) -> Result<CollectionConfig> {
    if config.format_version >= COLLECTION_FORMAT_VERSION {
        return Ok(config);
    }
    let upgraded = CollectionConfig {
        format_version: COLLECTION_FORMAT_VERSION,
        // Files written from now on carry it; those written before say 0, which matches.
        uid: match config.uid {
            0 => config::new_uid(),
            uid => uid,
        },
        ..config
    };
    fsio::write_atomic(fs, dir, CONFIG_FILE, &config::encode(&upgraded))?;
    Ok(upgraded)
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

fn read_config(fs: &dyn Vfs, dir: &Path) -> Result<CollectionConfig> {
    let path = dir.join(CONFIG_FILE);
    let bytes = fsio::read_small(fs, &path, CONFIG_BYTES_MAX as u64)?;
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

/// Both directions of the id map, built in one pass over `ids.idx` as it is decoded: the
/// decoder checks every slot, this every id (one hash table, not two: it is most of an
/// open's time).
#[derive(Default)]
struct IdMaps {
    ids: IdMapBuilder<u32>,
    slot_ids: Vec<Option<Id>>,
}

impl index::EntrySink for IdMaps {
    fn reserve(&mut self, entries: usize, slot_high_water: u32) {
        self.ids.reserve(entries);
        self.slot_ids = vec![None; slot_high_water as usize];
    }

    fn entry(&mut self, id: Id, slot: u32) -> std::result::Result<(), String> {
        // The decoder checked the slot against the high-water mark, which sized `slot_ids`.
        if let Some(entry) = self.slot_ids.get_mut(slot as usize) {
            *entry = Some(id.clone());
        }
        self.ids.push(id, slot)
    }
}

/// Reads `ids.idx` and checks its header: the checkpoint's snapshot without its entries or
/// free slots, and the file's bytes, whose entries [`decode_index_entries`] reads.
fn read_index_header(
    fs: &dyn Vfs,
    dir: &Path,
    config: &CollectionConfig,
) -> Result<(IndexSnapshot, Box<dyn VfsView>)> {
    let dimension = config.dimension;
    let path = dir.join(INDEX_FILE);
    let map = fsio::map_small(fs, &path, INDEX_BYTES_MAX)?;
    let bytes = map.bytes();
    if let Some(version) = peek_version(bytes, &INDEX_MAGIC).filter(|v| *v > INDEX_VERSION) {
        return Err(Error::UnsupportedVersion {
            file: path,
            what: "format version",
            found: version,
            supported: INDEX_VERSION,
        });
    }
    let header =
        index::decode_header(bytes).map_err(|e| Error::corrupted(&path, e.offset, e.reason))?;
    if header.checkpoint_lsn > LSN_MAX {
        return Err(Error::corrupted(
            &path,
            16,
            format!(
                "checkpoint sequence number {} is above the limit {LSN_MAX}",
                header.checkpoint_lsn
            ),
        ));
    }
    fsio::check_uid(&path, 36, config.uid, header.uid)?;
    if header.dimension != dimension {
        return Err(Error::corrupted(
            &path,
            12,
            format!(
                "dimension {} differs from the collection's {dimension}",
                header.dimension
            ),
        ));
    }
    Ok((header, map))
}

/// What `ids.idx` holds beyond its header.
struct IndexEntries {
    free_slots: Vec<u32>,
    ids: IdMap<u32>,
    slot_ids: Vec<Option<Id>>,
}

/// Decodes the entries and free slots of `ids.idx` (pure computation, no I/O, so it can run
/// beside the payload log's recovery): the free slots and both directions of the id map.
fn decode_index_entries(dir: &Path, bytes: &[u8]) -> Result<IndexEntries> {
    let path = dir.join(INDEX_FILE);
    let mut maps = IdMaps::default();
    let snapshot = index::decode_with(bytes, &mut maps)
        .map_err(|e| Error::corrupted(&path, e.offset, e.reason))?;
    let ids = maps
        .ids
        .finish()
        .map_err(|reason| Error::corrupted(&path, bytes.len() as u64, reason))?;
    Ok(IndexEntries {
        free_slots: snapshot.free_slots,
        ids,
        slot_ids: maps.slot_ids,
    })
}

/// Replays the log into `state`, cuts a torn tail (fsynced) and returns the writer, which
/// appends right after the last valid record.
fn recover_log(
    fs: &dyn Vfs,
    dir: &Path,
    config: &CollectionConfig,
    policy: RecoveryPolicy,
    state: &mut State,
) -> Result<(WalWriter, OpenReport)> {
    let path = dir.join(WAL_FILE);
    let file = fsio::open_regular_rw(fs, &path)?;
    // Mapped, not read: copying the log into fresh memory (a page fault per 4 KiB) cost
    // replay more than decoding it. Dropped before the file is cut.
    let map = file.map_read().map_err(|e| Error::io("map", &path, e))?;
    let image = map.bytes();
    if let Some(version) = peek_version(image, &walfmt::WAL_MAGIC).filter(|v| *v > WAL_VERSION) {
        return Err(Error::UnsupportedVersion {
            file: path,
            what: "format version",
            found: version,
            supported: WAL_VERSION,
        });
    }
    let header =
        walfmt::decode_header(image).map_err(|e| Error::corrupted(&path, e.offset, e.reason))?;
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
    fsio::check_uid(&path, 16, config.uid, header.uid)?;
    let checkpoint_lsn = state.checkpoint_lsn;
    state.payloads.begin_buffering();
    // Replay dirties the vector file far faster than the kernel writes it back: starting
    // the writeback every few MiB lets the checkpoint after replay wait for I/O that
    // overlapped replay, not start all of it.
    let slot_bytes = u64::from(config.dimension) * 4;
    let mut dirtied_bytes = 0;
    // Ids the log may add: about as many as the ops of its records after the checkpoint
    // (`ops_estimate`), and no more than the log's bytes hold upserts (each one's op, id
    // and vector), than the vector file has slots beside the live records' (a bound only
    // while the file does not grow, which it does after a crash only if the log holds more
    // records than were reserved slots before it), or than REPLAY_RESERVE_MAX. The op
    // counts are not checked yet: a forged log gets the other bounds.
    let in_use = u64::try_from(state.ids.len()).unwrap_or(u64::MAX);
    let upsert_bytes_min = slot_bytes + 1 + crate::format::ID_ENCODED_BYTES_MIN as u64;
    let mut room = Some(
        replay::ops_estimate(image, checkpoint_lsn)
            .min(image.len() as u64 / upsert_bytes_min)
            .min(state.vectors.capacity_slots().saturating_sub(in_use))
            .min(REPLAY_RESERVE_MAX) as usize,
    );
    let outcome = replay(
        &path,
        image,
        config.dimension,
        checkpoint_lsn,
        policy,
        |lsn, ops| {
            if room.is_some() {
                let first = ops.iter().find_map(|op| match op {
                    Op::Upsert { id, payload, .. } => Some((id, payload.is_some())),
                    _ => None,
                });
                if let (Some((id, with_payload)), Some(additional)) = (first, room) {
                    state.reserve_for_replay(id, with_payload, additional);
                    room = None;
                }
            }
            state.apply_replayed(lsn, ops)?;
            let upserts = ops.iter().filter(|op| matches!(op, Op::Upsert { .. }));
            dirtied_bytes += upserts.count() as u64 * slot_bytes;
            if dirtied_bytes >= REPLAY_WRITEBACK_BYTES {
                dirtied_bytes = 0;
                state.vectors.start_writeback();
            }
            Ok(())
        },
    )?;
    state.vectors.finish_bulk_writes()?;
    state.payloads.end_buffering(Writeback::Start)?;
    let image_len = image.len() as u64;
    drop(map);
    #[cfg(feature = "planted-bugs")]
    if crate::planted::active(crate::planted::Bug::AppendAfterTornTail) {
        let next_lsn = outcome.last_lsn.max(checkpoint_lsn) + 1;
        let report = OpenReport::default();
        return Ok((WalWriter::new(path, file, image_len, next_lsn), report));
    }
    if image_len > outcome.end_offset {
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
        payloads: PayloadOpenReport::default(),
    };
    Ok((
        WalWriter::new(path, file, outcome.end_offset, next_lsn),
        report,
    ))
}

impl Drop for Collection {
    fn drop(&mut self) {
        self.stop_committer();
    }
}

/// Starts the committer thread of a collection. It holds only a weak reference, so the
/// collection can be dropped while it waits; it stops when the queue is closed and drained.
fn spawn_committer(
    name: &str,
    queue: Arc<CommitQueue>,
    collection: Weak<Collection>,
) -> Option<JoinHandle<()>> {
    let drained = Arc::clone(&queue);
    let what = format!("collection '{name}'");
    let run = move || {
        let committed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            while let Some(group) = drained.next_group() {
                match collection.upgrade() {
                    Some(c) => c.commit_group(group),
                    None => fail_group(group, Error::Closed("collection"), ""),
                }
            }
        }));
        if committed.is_err() {
            // A bug panicked mid-group (completions cannot: see `commit::call`). What it
            // applied is unknown, so the collection is poisoned; the queue is closed and
            // drained so that no caller waits for a committer that is gone.
            let cause = "the committer thread panicked".to_owned();
            if let Some(c) = collection.upgrade() {
                if let Ok(mut guard) = c.lock_writer() {
                    if let Some(writer) = guard.as_mut() {
                        writer.poisoned.get_or_insert(cause.clone());
                    }
                }
            }
            drained.close();
            while let Some(group) = drained.next_group() {
                let error = Error::Poisoned {
                    what: what.clone(),
                    cause: cause.clone(),
                };
                fail_group(group, error, "");
            }
        }
    };
    let spawned = std::thread::Builder::new()
        .name(format!("keeldb-commit-{name}"))
        .spawn(run);
    if spawned.is_err() {
        // With no thread to drain it, the queue refuses every write with `Closed` rather
        // than leave callers waiting.
        queue.close();
    }
    spawned.ok()
}

/// Refuses to log `records` more records if their sequence numbers would pass `LSN_MAX`.
/// Only a forged log or index can bring the sequence number that far; refusing (nothing is
/// logged) beats logging a record the next replay would refuse as corrupt, which would make
/// every acknowledged write unreachable.
fn check_lsn_room(writer: &Writer, records: usize, dir: &Path) -> Result<()> {
    let last = writer
        .wal
        .next_lsn()
        .saturating_add(records as u64)
        .saturating_sub(1);
    if records > 0 && last > LSN_MAX {
        return Err(Error::corrupted(
            dir.join(WAL_FILE),
            0,
            format!("log sequence numbers are exhausted (limit {LSN_MAX})"),
        ));
    }
    Ok(())
}

/// Completes every request of a group with `first` (the first request) or its echo.
fn fail_group(group: Vec<Request>, first: Error, collection: &str) {
    let echo = commit::echo(&first, collection);
    let mut first = Some(first);
    for request in group {
        let error = first
            .take()
            .unwrap_or_else(|| commit::echo(&echo, collection));
        request.complete(Err(error));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checkpoint_threshold_grows_with_the_indexes_up_to_its_cap() {
        let mib = 1u64 << 20;
        // Small indexes: the threshold itself.
        assert_eq!(checkpoint_threshold(64 * mib, true, 0), 64 * mib);
        assert_eq!(checkpoint_threshold(64 * mib, true, 16 * mib), 64 * mib);
        // Four times the indexes past it (1M records with payloads: 34 MB of indexes).
        assert_eq!(
            checkpoint_threshold(64 * mib, true, 34_000_000),
            136_000_000
        );
        // At most 1 GiB from the indexes...
        assert_eq!(checkpoint_threshold(64 * mib, true, 340_000_000), 1 << 30);
        assert_eq!(checkpoint_threshold(64 * mib, true, u64::MAX), 1 << 30);
        // ...but a larger threshold stays, and an exact one ignores the indexes.
        assert_eq!(checkpoint_threshold(2 << 30, true, 340_000_000), 2 << 30);
        assert_eq!(checkpoint_threshold(200, false, 340_000_000), 200);
    }
}
