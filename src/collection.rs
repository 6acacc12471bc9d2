//! `NativeCollection`: a collection handle. Writes take the whole batch in one call (ids and
//! one flat `Float32Array`), copied on the JS thread so the caller may reuse its buffers as
//! soon as the call returns. Reads copy out of the mapping: JavaScript never sees mapped
//! memory.

use std::sync::Arc;

use keeldb_core::search::filter::Filter;
use keeldb_core::search::SEARCH_K_MAX;
use keeldb_core::{Collection, CollectionStats, Id, SearchHit, SearchRequest};
use napi::bindgen_prelude::{AsyncTask, Float32Array, Float32ArraySlice, Float64Array};
use napi::Either;
use napi_derive::napi;

use crate::convert::{napi_result, to_durability, to_id, to_ids};
use crate::job::Job;

/// An open collection (native side of `Collection` in `lib/index.ts`).
#[napi]
pub struct NativeCollection {
    collection: Arc<Collection>,
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
    pub last_lsn: f64,
    pub checkpoint_lsn: f64,
    pub checkpoints: f64,
    pub records_replayed: f64,
    pub corrupt_records_skipped: f64,
    pub torn_bytes_truncated: f64,
    pub warnings: Vec<String>,
    pub poisoned: bool,
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
}

/// A search's arguments, converted and validated on the JS thread.
struct SearchArgs {
    queries: Vec<f32>,
    k: usize,
    filter: Option<Filter>,
    include_vectors: bool,
}

impl SearchArgs {
    /// `filter` is JSON text (`lib/index.ts` checked that it is plain JSON); it is parsed
    /// and validated here, so a bad filter fails before any work is queued.
    fn new(
        queries: Float32ArraySlice,
        k: f64,
        filter: Option<String>,
        include_vectors: bool,
        _include_payloads: bool,
    ) -> keeldb_core::Result<SearchArgs> {
        // PAYLOADS (issue 3): pass `_include_payloads` on to the core and fill
        // `NativeHits` with each hit's payload.
        let k = crate::convert::to_integer("k", k, 1, SEARCH_K_MAX as u64)?;
        let filter = filter.as_deref().map(Filter::parse_json).transpose()?;
        Ok(SearchArgs {
            queries: queries.to_vec(),
            // k <= SEARCH_K_MAX, so it fits.
            k: k as usize,
            filter,
            include_vectors,
        })
    }

    /// The one search path behind both doors.
    fn run(&self, collection: &Collection) -> keeldb_core::Result<NativeHits> {
        let request = SearchRequest {
            k: self.k,
            filter: self.filter.as_ref(),
            include_vectors: self.include_vectors,
        };
        let results = collection.search_batch(&self.queries, &request)?;
        Ok(to_js_hits(results, self.include_vectors))
    }
}

impl NativeCollection {
    pub(crate) fn new(collection: Arc<Collection>) -> Self {
        NativeCollection { collection }
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

    /// Stores `vectors` (`ids.length * dimension` floats) under `ids` as one atomic batch.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn upsert(
        &self,
        ids: Vec<Either<String, f64>>,
        vectors: Float32ArraySlice,
        durability: Option<String>,
    ) -> napi::Result<AsyncTask<Job<()>>> {
        let ids = napi_result(to_ids(ids))?;
        let durability = napi_result(to_durability(durability))?;
        let vectors = vectors.to_vec();
        let collection = Arc::clone(&self.collection);
        Ok(Job::spawn(move || {
            collection.upsert(&ids, &vectors, durability)
        }))
    }

    /// Removes `ids` as one atomic batch; resolves to how many existed.
    #[napi(ts_return_type = "Promise<number>")]
    pub fn delete(
        &self,
        ids: Vec<Either<String, f64>>,
        durability: Option<String>,
    ) -> napi::Result<AsyncTask<Job<f64>>> {
        let ids = napi_result(to_ids(ids))?;
        let durability = napi_result(to_durability(durability))?;
        let collection = Arc::clone(&self.collection);
        Ok(Job::spawn(move || {
            collection.delete(&ids, durability).map(|n| n as f64)
        }))
    }

    /// A copy of the vector stored under `id`, or `null`.
    #[napi(ts_return_type = "Promise<Float32Array | null>")]
    pub fn get(
        &self,
        id: Either<String, f64>,
    ) -> napi::Result<AsyncTask<Job<Option<Float32Array>>>> {
        let id = napi_result(to_id(id))?;
        let collection = Arc::clone(&self.collection);
        Ok(Job::spawn(move || read(&collection, &id)))
    }

    /// `get` on the JS thread.
    #[napi(catch_unwind)]
    pub fn get_sync(&self, id: Either<String, f64>) -> napi::Result<Option<Float32Array>> {
        let id = napi_result(to_id(id))?;
        napi_result(read(&self.collection, &id))
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

/// The one read path behind `get` and `getSync`.
fn read(collection: &Collection, id: &Id) -> keeldb_core::Result<Option<Float32Array>> {
    id.validate()?;
    Ok(collection.get(id)?.map(Float32Array::new))
}

fn to_js_hits(results: Vec<Vec<SearchHit>>, include_vectors: bool) -> NativeHits {
    let total: usize = results.iter().map(Vec::len).sum();
    let mut counts = Vec::with_capacity(results.len());
    let mut ids = Vec::with_capacity(total);
    let mut distances = Vec::with_capacity(total);
    let mut vectors = Vec::new();
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
        }
    }
    NativeHits {
        counts,
        ids,
        distances: Float64Array::new(distances),
        vectors: include_vectors.then(|| Float32Array::new(vectors)),
    }
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
        last_lsn: s.last_lsn as f64,
        checkpoint_lsn: s.checkpoint_lsn as f64,
        checkpoints: s.checkpoints as f64,
        records_replayed: s.records_replayed as f64,
        corrupt_records_skipped: s.corrupt_records_skipped as f64,
        torn_bytes_truncated: s.torn_bytes_truncated as f64,
        warnings: s.warnings,
        poisoned: s.poisoned,
    }
}
