//! `NativeCollection`: a collection handle. Writes take the whole batch in one call (ids and
//! one flat `Float32Array`), copied on the JS thread so the caller may reuse its buffers as
//! soon as the call returns. Reads copy out of the mapping: JavaScript never sees mapped
//! memory.

use std::sync::Arc;

use keeldb_core::{Collection, CollectionStats, Id};
use napi::bindgen_prelude::{AsyncTask, Float32Array, Float32ArraySlice, Object, ToNapiValue};
use napi::{Either, Env};
use napi_derive::napi;

use crate::convert::{napi_result, to_durability, to_id, to_ids, to_napi_error};
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
    pub wal_records: f64,
    pub group_commits: f64,
    pub wal_syncs: f64,
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
    /// Validated and encoded on the calling thread (a bad batch throws before anything is
    /// queued), then queued for the collection's committer, which shares log writes and
    /// syncs between writes issued together; the promise settles when it is durable.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn upsert<'env>(
        &self,
        env: &'env Env,
        ids: Vec<Either<String, f64>>,
        vectors: Float32ArraySlice,
        durability: Option<String>,
    ) -> napi::Result<Object<'env>> {
        let ids = napi_result(to_ids(ids))?;
        let durability = napi_result(to_durability(durability))?;
        let batch = napi_result(self.collection.prepare_upsert(&ids, &vectors))?;
        submit(env, &self.collection, batch, durability, |_| ())
    }

    /// Removes `ids` as one atomic batch; resolves to how many records it removed.
    #[napi(ts_return_type = "Promise<number>")]
    pub fn delete<'env>(
        &self,
        env: &'env Env,
        ids: Vec<Either<String, f64>>,
        durability: Option<String>,
    ) -> napi::Result<Object<'env>> {
        let ids = napi_result(to_ids(ids))?;
        let durability = napi_result(to_durability(durability))?;
        let batch = napi_result(self.collection.prepare_delete(&ids))?;
        submit(env, &self.collection, batch, durability, |removed| removed as f64)
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

    /// `get` on the JS thread. The vector is copied into an ArrayBuffer that V8 allocates
    /// and owns: handing V8 the `Vec` as an external buffer instead (as `Float32Array::new`
    /// does) costs a finalizer and a global handle per call, and keeps every freed vector
    /// alive until V8 sweeps it, which made this call twice as slow (bench/ingest/profile.sh).
    #[napi(catch_unwind, ts_return_type = "Float32Array | null")]
    pub fn get_sync<'env>(
        &self,
        env: &'env Env,
        id: Either<String, f64>,
    ) -> napi::Result<Option<Float32ArraySlice<'env>>> {
        let id = napi_result(to_id(id))?;
        napi_result(read_vec(&self.collection, &id))?
            .map(|vector| Float32ArraySlice::copy_from(env, vector))
            .transpose()
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

    /// Counters and sizes.
    #[napi(catch_unwind)]
    pub fn stats(&self) -> napi::Result<NativeCollectionStats> {
        napi_result(self.collection.stats()).map(to_js_stats)
    }
}

/// Queues `batch` and returns a promise that the committer thread settles (through a
/// threadsafe function) once the batch is durable; `map` turns the core's outcome into the
/// resolved value.
fn submit<'env, T>(
    env: &'env Env,
    collection: &Collection,
    batch: Option<keeldb_core::PreparedBatch>,
    durability: Option<keeldb_core::Durability>,
    map: fn(u64) -> T,
) -> napi::Result<Object<'env>>
where
    T: ToNapiValue + Send + 'static,
{
    let (deferred, promise) = env.create_deferred::<T, _>()?;
    collection.submit(
        batch,
        durability,
        Box::new(move |result| match result {
            Ok(value) => deferred.resolve(move |_| Ok(map(value))),
            Err(e) => deferred.reject(to_napi_error(&e)),
        }),
    );
    Ok(promise)
}

/// The one read path behind `get` and `getSync`.
fn read_vec(collection: &Collection, id: &Id) -> keeldb_core::Result<Option<Vec<f32>>> {
    id.validate()?;
    collection.get(id)
}

/// `read_vec` for the libuv pool, where no `Env` exists to allocate a V8-owned buffer.
fn read(collection: &Collection, id: &Id) -> keeldb_core::Result<Option<Float32Array>> {
    Ok(read_vec(collection, id)?.map(Float32Array::new))
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
        wal_records: s.wal_records as f64,
        group_commits: s.group_commits as f64,
        wal_syncs: s.wal_syncs as f64,
    }
}
