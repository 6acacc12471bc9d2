//! `NativeCollection`: a collection handle. Writes take the whole batch in one call (ids, one
//! flat `Float32Array`, and the payloads as one buffer of concatenated UTF-8 JSON texts with
//! their byte lengths), copied on the JS thread so the caller may reuse its buffers as soon
//! as the call returns. Reads copy out of the mapping and the payload log: JavaScript never
//! sees mapped memory. Payloads cross as JSON text; `lib/index.ts` stringifies and parses.
//! Queued writes return nothing: `lib/index.ts` names each by a ticket, and its outcome
//! comes back through the database's [`Settler`].

use std::cell::RefCell;
use std::sync::Arc;

use keeldb_core::search::filter::Filter;
use keeldb_core::search::SEARCH_K_MAX;
use keeldb_core::{
    Collection, CollectionStats, Error, Id, PayloadText, Record, SearchHit, SearchRequest,
};
use napi::bindgen_prelude::{
    AsyncTask, BufferSlice, External, Float32Array, Float32ArraySlice, Float64Array,
    Uint32ArraySlice,
};
use napi::{Either, Env, JsString};
use napi_derive::napi;

use crate::convert::{napi_result, to_durability, to_id, to_ids, to_napi_error, JsId};
use crate::job::Job;
use crate::settle::Settler;

/// An open collection (native side of `Collection` in `lib/index.ts`).
#[napi]
pub struct NativeCollection {
    collection: Arc<Collection>,
    settler: Arc<Settler>,
}

/// `Collection.stats()`: counters and sizes. Integers cross as numbers (all stay far below
/// 2^53 in practice).
#[napi(object)]
pub struct NativeCollectionStats {
    pub count: f64,
    pub dimension: u32,
    pub metric: String,
    pub vector_file_bytes: f64,
    pub capacity_slots: f64,
    pub slot_high_water: f64,
    pub wal_bytes: f64,
    pub index_file_bytes: f64,
    pub checkpoint_at_bytes: f64,
    pub last_lsn: f64,
    pub checkpoint_lsn: f64,
    pub checkpoints: f64,
    pub records_replayed: f64,
    pub corrupt_records_skipped: f64,
    pub torn_bytes_truncated: f64,
    pub warnings: Vec<String>,
    pub poisoned: bool,
    pub payload_count: f64,
    pub payload_log_bytes: f64,
    pub payload_live_bytes: f64,
    pub payload_garbage_bytes: f64,
    pub payload_garbage_ratio: f64,
    pub payload_log_generation: f64,
    pub payload_records_replayed: f64,
    pub payload_snapshot_used: bool,
    pub payload_bytes_truncated: f64,
    pub compactions: f64,
    pub compaction_error: Option<String>,
    pub wal_records: f64,
    pub group_commits: f64,
    pub wal_syncs: f64,
    pub commit_log_micros: f64,
    pub commit_apply_micros: f64,
    pub commit_answer_micros: f64,
    pub queued_at_group_end: f64,
}

/// A record read back: `vector` and `payload` (JSON text) are absent when not asked for, and
/// `payload` also when the record has none.
#[napi(object)]
pub struct NativeRecord {
    pub vector: Option<Float32Array>,
    pub payload: Option<String>,
}

/// The payloads of a batch as they cross, split into one entry per record (none at all when
/// the batch has no payloads): `bytes` holds the texts back to back, `lengths` each one's
/// byte length (0: that record has no payload). The slices borrow JavaScript's buffers,
/// which stay put for the call; the batch is encoded before it returns, so the caller may
/// reuse them at once.
fn split_payloads<'a>(
    bytes: Option<&'a [u8]>,
    lengths: Option<&[u32]>,
    records: usize,
) -> keeldb_core::Result<Vec<Option<&'a [u8]>>> {
    let (bytes, lengths) = match (bytes, lengths) {
        (None, None) => return Ok(Vec::new()),
        (Some(bytes), Some(lengths)) => (bytes, lengths),
        _ => {
            return Err(Error::InvalidArgument(
                "payload bytes and lengths go together".into(),
            ))
        }
    };
    let total: u64 = lengths.iter().map(|&n| u64::from(n)).sum();
    if lengths.len() != records || total != bytes.len() as u64 {
        return Err(Error::InvalidArgument(format!(
            "{} payload lengths summing to {total} for {records} records and {} bytes",
            lengths.len(),
            bytes.len()
        )));
    }
    let mut at = 0;
    Ok(lengths
        .iter()
        .map(|&n| {
            // The lengths sum to bytes.len(), checked above, so every range is in bounds.
            let text = &bytes[at..at + n as usize];
            at += n as usize;
            (n > 0).then_some(text)
        })
        .collect())
}

/// The hits of one search call, flat: query `q` has `counts[q]` hits, which follow those
/// of the queries before it in `ids`, `distances` and (when asked for) `vectors`
/// (`dimension` floats per hit). Flat arrays cross the boundary in a few conversions
/// instead of one object per hit; `lib/index.ts` builds the objects.
#[napi(object)]
pub struct NativeHits {
    pub counts: Vec<u32>,
    pub ids: Vec<Either<String, f64>>,
    pub distances: Float64Array,
    pub vectors: Option<Float32Array>,
    /// Each hit's payload as JSON text (`null`: none), when payloads were asked for.
    pub payloads: Option<Vec<Option<String>>>,
}

/// A search's arguments, converted and validated on the JS thread.
struct SearchArgs {
    queries: Vec<f32>,
    k: usize,
    filter: Option<Filter>,
    include_vectors: bool,
    include_payloads: bool,
}

impl SearchArgs {
    /// `filter` is JSON text (`lib/index.ts` checked that it is plain JSON); it is parsed
    /// and validated here, so a bad filter fails before any work is queued.
    fn new(
        queries: Float32ArraySlice,
        k: f64,
        filter: Option<String>,
        include_vectors: bool,
        include_payloads: bool,
    ) -> keeldb_core::Result<SearchArgs> {
        let k = crate::convert::to_integer("k", k, 1, SEARCH_K_MAX as u64)?;
        let filter = filter.as_deref().map(Filter::parse_json).transpose()?;
        Ok(SearchArgs {
            queries: queries.to_vec(),
            // k <= SEARCH_K_MAX, so it fits.
            k: k as usize,
            filter,
            include_vectors,
            include_payloads,
        })
    }

    /// The one search path behind both doors.
    fn run(&self, collection: &Collection) -> keeldb_core::Result<NativeHits> {
        let request = SearchRequest {
            k: self.k,
            filter: self.filter.as_ref(),
            include_vectors: self.include_vectors,
            include_payloads: self.include_payloads,
        };
        let results = collection.search_batch(&self.queries, &request)?;
        to_js_hits(results, self.include_vectors, self.include_payloads)
    }
}

impl NativeCollection {
    pub(crate) fn new(collection: Arc<Collection>, settler: Arc<Settler>) -> Self {
        NativeCollection {
            collection,
            settler,
        }
    }

    /// Queues `batch` without waking the committer (JavaScript calls `wakeCommitter` once
    /// after the writes of a tick, so they start as one group); the committer thread reports
    /// its outcome under `ticket` once it is as durable as asked. Refuses (nothing queued) when no outcome could reach
    /// JavaScript any more: the database was closed and its settle function released.
    fn submit(
        &self,
        ticket: f64,
        batch: Option<keeldb_core::PreparedBatch>,
        durability: Option<keeldb_core::Durability>,
    ) -> napi::Result<()> {
        if !self.settler.is_attached() {
            return Err(to_napi_error(&Error::Closed("database")));
        }
        let settler = Arc::clone(&self.settler);
        self.collection.submit_quiet(
            batch,
            durability,
            Box::new(move |outcome| settler.settle(ticket, outcome)),
        );
        Ok(())
    }
}

#[napi]
impl NativeCollection {
    /// The collection's name.
    #[napi(getter)]
    pub fn name(&self) -> String {
        self.collection.name().to_owned()
    }

    /// The collection's dimension.
    #[napi(getter)]
    pub fn dimension(&self) -> u32 {
        self.collection.dimension()
    }

    /// The collection's metric: 'cosine', 'dot' or 'euclidean'.
    #[napi(getter)]
    pub fn metric(&self) -> String {
        self.collection.metric().as_str().to_owned()
    }

    /// Stores `vectors` (`ids.length * dimension` floats) under `ids` as one atomic batch,
    /// with payloads when `payloadBytes` and `payloadLengths` are given. Throws for a bad
    /// batch; otherwise the outcome is settled later under `ticket`.
    #[napi(catch_unwind)]
    pub fn upsert(
        &self,
        ticket: f64,
        #[napi(ts_arg_type = "Array<string | number>")] ids: Vec<JsId<'_>>,
        vectors: Float32ArraySlice,
        durability: Option<String>,
        payload_bytes: Option<BufferSlice>,
        payload_lengths: Option<Uint32ArraySlice>,
    ) -> napi::Result<()> {
        let ids = napi_result(to_ids(ids))?;
        let durability = napi_result(to_durability(durability))?;
        let payloads = napi_result(split_payloads(
            payload_bytes.as_deref(),
            payload_lengths.as_deref(),
            ids.len(),
        ))?;
        // Validated and encoded here, on the calling thread (a bad batch throws before
        // anything is queued); the committer shares log writes and syncs between writes
        // issued together and reports this one once it is durable.
        let batch = napi_result(self.collection.prepare_upsert_texts(
            &ids,
            &vectors,
            &payloads,
            PayloadText::Serialized,
        ))?;
        self.submit(ticket, batch, durability)
    }

    /// [`NativeCollection::upsert`] of one record, its payload (if any) as JSON text: the
    /// common call, without an id array or a packed payload buffer to build and convert.
    #[napi(catch_unwind)]
    pub fn upsert_one(
        &self,
        ticket: f64,
        #[napi(ts_arg_type = "string | number")] id: JsId<'_>,
        vector: Float32ArraySlice,
        durability: Option<String>,
        payload: Option<String>,
    ) -> napi::Result<()> {
        // Worded as the batch door words it (`to_ids`), so both report the same message.
        let id =
            napi_result(to_id(id).map_err(|e| Error::InvalidArgument(format!("record 0: {e}"))))?;
        let durability = napi_result(to_durability(durability))?;
        let payloads = payload.as_deref().map(|text| [Some(text.as_bytes())]);
        let batch = napi_result(self.collection.prepare_upsert_texts(
            std::slice::from_ref(&id),
            &vector,
            payloads.as_ref().map_or(&[][..], |p| &p[..]),
            PayloadText::Serialized,
        ))?;
        self.submit(ticket, batch, durability)
    }

    /// Starts the committer on the writes queued since the last call. `lib/index.ts` calls
    /// it from a microtask after each `upsert`/`delete`, so the writes issued in one tick of
    /// the event loop share one wake (a futex syscall) and start as one group.
    #[napi(catch_unwind)]
    pub fn wake_committer(&self) {
        self.collection.wake_committer();
    }

    /// Replaces (or with `merge`, shallow-merges into) the payload of `id`; `null` removes
    /// it. Resolves to whether `id` exists.
    #[napi(ts_return_type = "Promise<boolean>")]
    pub fn update_payload(
        &self,
        #[napi(ts_arg_type = "string | number")] id: JsId<'_>,
        payload: Option<String>,
        merge: bool,
        durability: Option<String>,
    ) -> napi::Result<AsyncTask<Job<bool>>> {
        let id = napi_result(to_id(id))?;
        let durability = napi_result(to_durability(durability))?;
        let collection = Arc::clone(&self.collection);
        Ok(Job::spawn(move || {
            collection.update_payload(
                &id,
                payload.as_deref().map(str::as_bytes),
                merge,
                durability,
            )
        }))
    }

    /// Rewrites the payload log without its garbage; reads and writes go on meanwhile.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn compact(&self) -> AsyncTask<Job<()>> {
        let collection = Arc::clone(&self.collection);
        Job::spawn(move || collection.compact())
    }

    /// Removes `ids` as one atomic batch; its outcome, settled under `ticket`, is how many
    /// existed.
    #[napi(catch_unwind)]
    pub fn delete(
        &self,
        ticket: f64,
        #[napi(ts_arg_type = "Array<string | number>")] ids: Vec<JsId<'_>>,
        durability: Option<String>,
    ) -> napi::Result<()> {
        let ids = napi_result(to_ids(ids))?;
        let durability = napi_result(to_durability(durability))?;
        let batch = napi_result(self.collection.prepare_delete(&ids))?;
        self.submit(ticket, batch, durability)
    }

    /// The record under `id` with the parts asked for, or `null`.
    #[napi(ts_return_type = "Promise<NativeRecord | null>")]
    pub fn get(
        &self,
        #[napi(ts_arg_type = "string | number")] id: JsId<'_>,
        vector: bool,
        payload: bool,
    ) -> napi::Result<AsyncTask<Job<Option<NativeRecord>>>> {
        let id = napi_result(to_id(id))?;
        let collection = Arc::clone(&self.collection);
        Ok(Job::spawn(move || read(&collection, &id, vector, payload)))
    }

    /// A handle on this collection for [`collection_get_sync_into`], the read hot path: a
    /// plain function taking it costs about a third of a microsecond less per call than a
    /// method (napi-rs unwraps `this`, checks its type tag and tracks a borrow of it on
    /// every method call). It keeps the core collection alive like this object does, and
    /// after `close()` reads through it fail with `KEEL_CLOSED`.
    #[napi(ts_return_type = "ExternalObject<'CollectionReadHandle'>")]
    pub fn read_handle(&self) -> External<ReadHandle> {
        External::new(ReadHandle(Arc::clone(&self.collection)))
    }

    /// The records under `ids`, in order (`null` for a missing one), read at one moment.
    #[napi(ts_return_type = "Promise<Array<NativeRecord | null>>")]
    pub fn get_many(
        &self,
        #[napi(ts_arg_type = "Array<string | number>")] ids: Vec<JsId<'_>>,
        vector: bool,
        payload: bool,
    ) -> napi::Result<AsyncTask<Job<Vec<Option<NativeRecord>>>>> {
        let ids = napi_result(to_ids(ids))?;
        let collection = Arc::clone(&self.collection);
        Ok(Job::spawn(move || {
            read_many(&collection, &ids, vector, payload)
        }))
    }

    /// `getMany` on the JS thread.
    #[napi(catch_unwind)]
    pub fn get_many_sync(
        &self,
        #[napi(ts_arg_type = "Array<string | number>")] ids: Vec<JsId<'_>>,
        vector: bool,
        payload: bool,
    ) -> napi::Result<Vec<Option<NativeRecord>>> {
        let ids = napi_result(to_ids(ids))?;
        napi_result(read_many(&self.collection, &ids, vector, payload))
    }

    /// A durability barrier for every write made before it.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn flush(&self) -> AsyncTask<Job<()>> {
        let collection = Arc::clone(&self.collection);
        Job::spawn(move || collection.flush())
    }

    /// Makes the vector file and the index durable, then empties the log.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn checkpoint(&self) -> AsyncTask<Job<()>> {
        let collection = Arc::clone(&self.collection);
        Job::spawn(move || collection.checkpoint())
    }

    /// Grows the vector file so `additional` more records fit without a remap.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn reserve(&self, additional: f64) -> napi::Result<AsyncTask<Job<()>>> {
        let additional = napi_result(crate::convert::to_integer(
            "additional",
            additional,
            0,
            crate::convert::SAFE_INTEGER_MAX,
        ))?;
        let collection = Arc::clone(&self.collection);
        Ok(Job::spawn(move || collection.reserve(additional)))
    }

    /// The `k` nearest records to each query of `queries` (`count * dimension` floats),
    /// best first, as one flat [`NativeHits`]. `filter` is JSON text or `undefined`.
    #[napi(ts_return_type = "Promise<NativeHits>")]
    pub fn search(
        &self,
        queries: Float32ArraySlice,
        k: f64,
        filter: Option<String>,
        include_vectors: bool,
        include_payloads: bool,
    ) -> napi::Result<AsyncTask<Job<NativeHits>>> {
        let args = napi_result(SearchArgs::new(
            queries,
            k,
            filter,
            include_vectors,
            include_payloads,
        ))?;
        let collection = Arc::clone(&self.collection);
        Ok(Job::spawn(move || args.run(&collection)))
    }

    /// `search` on the JS thread.
    #[napi(catch_unwind)]
    pub fn search_sync(
        &self,
        queries: Float32ArraySlice,
        k: f64,
        filter: Option<String>,
        include_vectors: bool,
        include_payloads: bool,
    ) -> napi::Result<NativeHits> {
        let args = napi_result(SearchArgs::new(
            queries,
            k,
            filter,
            include_vectors,
            include_payloads,
        ))?;
        napi_result(args.run(&self.collection))
    }

    /// Benchmark hook, not public API: sums every float of the live slot range in place,
    /// the memory-bandwidth limit `npm run bench` compares a search with.
    #[napi(catch_unwind)]
    pub fn memory_scan_for_bench(&self) -> napi::Result<f64> {
        napi_result(self.collection.memory_scan_for_bench()).map(f64::from)
    }

    /// Counters and sizes.
    #[napi(catch_unwind)]
    pub fn stats(&self) -> napi::Result<NativeCollectionStats> {
        napi_result(self.collection.stats()).map(to_js_stats)
    }
}

/// What [`NativeCollection::read_handle`] hands out.
pub struct ReadHandle(Arc<Collection>);

/// `getSync` as `lib/index.ts` calls it, through a [`ReadHandle`]: the vector is copied
/// into `vector`, a fresh `Float32Array` of `dimension` floats that the caller allocated for
/// this call (or `null` when not asked for), and the payload's JSON text is the return
/// value: `false` when there is no record under `id`, `null` when it has no payload (or
/// none was asked for). One value back instead of a two-element array to build and fill
/// (napi sets each element through V8's generic property path), no ArrayBuffer made here,
/// and no method-call overhead: about 0.5 us less per call than the `getSync` method it
/// replaced, which returned a `[vector, payload]` array.
#[napi(catch_unwind, ts_return_type = "string | null | false")]
pub fn collection_get_sync_into<'env>(
    env: &'env Env,
    #[napi(ts_arg_type = "ExternalObject<'CollectionReadHandle'>")] handle: &External<ReadHandle>,
    #[napi(ts_arg_type = "string | number")] id: JsId<'_>,
    vector: Option<Float32ArraySlice<'_>>,
    payload: bool,
) -> napi::Result<Either<JsString<'env>, Option<bool>>> {
    let collection = &handle.0;
    let id = napi_result(to_id(id))?;
    let mut vector = vector;
    let vector_out = vector.as_mut().map(typed_array_contents);
    READ_SCRATCH.with_borrow_mut(|scratch| {
        let found =
            collection.get_record_into(&id, vector_out, payload.then_some(&mut scratch.payload));
        match napi_result(found)? {
            None => Ok(Either::B(Some(false))),
            Some(false) => Ok(Either::B(None)),
            Some(true) => {
                let text = napi_result(payload_str(&scratch.payload))?;
                Ok(Either::A(env.create_string(text)?))
            }
        }
    })
}

/// The read path behind `get`.
fn read(
    collection: &Collection,
    id: &Id,
    vector: bool,
    payload: bool,
) -> keeldb_core::Result<Option<NativeRecord>> {
    collection
        .get_record(id, vector, payload)?
        .map(to_js_record)
        .transpose()
}

/// The one read path behind `getMany` and `getManySync`.
fn read_many(
    collection: &Collection,
    ids: &[Id],
    vector: bool,
    payload: bool,
) -> keeldb_core::Result<Vec<Option<NativeRecord>>> {
    collection
        .get_many(ids, vector, payload)?
        .into_iter()
        .map(|r| r.map(to_js_record).transpose())
        .collect()
}

/// The elements of a typed array JavaScript passed in, to write into.
#[expect(
    unsafe_code,
    reason = "napi-rs gives mutable access to a typed array's elements only through unsafe"
)]
fn typed_array_contents<'a>(array: &'a mut Float32ArraySlice<'_>) -> &'a mut [f32] {
    // SAFETY: the slice points at the backing store of a typed array argument, which V8
    // keeps alive for the whole call. No JavaScript runs during the call (it is synchronous,
    // on the JS thread), so nothing else reads or writes the elements while the returned
    // borrow lives; the borrow ends before the call returns. lib/index.ts passes a
    // `Float32Array` it allocated for this call alone, so no other view sees the writes
    // half-done.
    unsafe { array.as_mut() }
}

/// The buffer `getSync` reads payloads into, kept per thread (it runs on the JS thread) so
/// a read allocates nothing once it has grown to the largest payload. (The vector goes
/// straight into the caller's array.)
#[derive(Default)]
struct ReadScratch {
    payload: Vec<u8>,
}

thread_local! {
    static READ_SCRATCH: RefCell<ReadScratch> = RefCell::default();
}

/// A stored payload's JSON text, borrowed. It was checked when written; bytes that fail
/// now were changed on disk.
fn payload_str(bytes: &[u8]) -> keeldb_core::Result<&str> {
    std::str::from_utf8(bytes).map_err(|e| Error::Corrupted {
        file: "payload log".into(),
        offset: e.valid_up_to() as u64,
        reason: "a stored payload is not UTF-8".into(),
    })
}

/// A stored payload's JSON text as a string. It was checked when written; bytes that fail
/// now were changed on disk.
fn payload_text(bytes: Vec<u8>) -> keeldb_core::Result<String> {
    String::from_utf8(bytes).map_err(|e| Error::Corrupted {
        file: "payload log".into(),
        offset: e.utf8_error().valid_up_to() as u64,
        reason: "a stored payload is not UTF-8".into(),
    })
}

fn to_js_record(record: Record) -> keeldb_core::Result<NativeRecord> {
    let payload = record.payload.map(payload_text).transpose()?;
    Ok(NativeRecord {
        vector: record.vector.map(Float32Array::new),
        payload,
    })
}

fn to_js_hits(
    results: Vec<Vec<SearchHit>>,
    include_vectors: bool,
    include_payloads: bool,
) -> keeldb_core::Result<NativeHits> {
    let total: usize = results.iter().map(Vec::len).sum();
    let mut counts = Vec::with_capacity(results.len());
    let mut ids = Vec::with_capacity(total);
    let mut distances = Vec::with_capacity(total);
    let mut vectors = Vec::new();
    let mut payloads = Vec::new();
    for hits in results {
        // At most SEARCH_K_MAX hits per query.
        counts.push(hits.len() as u32);
        for hit in hits {
            ids.push(match hit.id {
                Id::Str(s) => Either::A(s.into_string()),
                // Integer ids are at most 2^53 - 1, exact as a double.
                Id::Int(n) => Either::B(n as f64),
            });
            distances.push(f64::from(hit.distance));
            if let Some(v) = hit.vector {
                vectors.extend_from_slice(&v);
            }
            if include_payloads {
                payloads.push(hit.payload.map(payload_text).transpose()?);
            }
        }
    }
    Ok(NativeHits {
        counts,
        ids,
        distances: Float64Array::new(distances),
        vectors: include_vectors.then(|| Float32Array::new(vectors)),
        payloads: include_payloads.then_some(payloads),
    })
}

fn to_js_stats(s: CollectionStats) -> NativeCollectionStats {
    NativeCollectionStats {
        count: s.count as f64,
        dimension: s.dimension,
        metric: s.metric.as_str().to_owned(),
        vector_file_bytes: s.vector_file_bytes as f64,
        capacity_slots: s.capacity_slots as f64,
        slot_high_water: s.slot_high_water as f64,
        wal_bytes: s.wal_bytes as f64,
        index_file_bytes: s.index_file_bytes as f64,
        checkpoint_at_bytes: s.checkpoint_at_bytes as f64,
        last_lsn: s.last_lsn as f64,
        checkpoint_lsn: s.checkpoint_lsn as f64,
        checkpoints: s.checkpoints as f64,
        records_replayed: s.records_replayed as f64,
        corrupt_records_skipped: s.corrupt_records_skipped as f64,
        torn_bytes_truncated: s.torn_bytes_truncated as f64,
        payload_garbage_ratio: s.payload_garbage_ratio(),
        warnings: s.warnings,
        poisoned: s.poisoned,
        payload_count: s.payload_count as f64,
        payload_log_bytes: s.payload_log_bytes as f64,
        payload_live_bytes: s.payload_live_bytes as f64,
        payload_garbage_bytes: s.payload_garbage_bytes as f64,
        payload_log_generation: s.payload_log_generation as f64,
        payload_records_replayed: s.payload_records_replayed as f64,
        payload_snapshot_used: s.payload_snapshot_used,
        payload_bytes_truncated: s.payload_bytes_truncated as f64,
        compactions: s.compactions as f64,
        compaction_error: s.compaction_error,
        wal_records: s.wal_records as f64,
        group_commits: s.group_commits as f64,
        wal_syncs: s.wal_syncs as f64,
        commit_log_micros: s.commit_times.log_nanos as f64 / 1e3,
        commit_apply_micros: s.commit_times.apply_nanos as f64 / 1e3,
        commit_answer_micros: s.commit_times.answer_nanos as f64 / 1e3,
        queued_at_group_end: s.commit_times.queued_at_group_end as f64,
    }
}
