//! `NativeCollection`: a collection handle. Writes take the whole batch in one call (ids and
//! one flat `Float32Array`), copied on the JS thread so the caller may reuse its buffers as
//! soon as the call returns. Reads copy out of the mapping: JavaScript never sees mapped
//! memory.

use std::sync::Arc;

use keeldb_core::{Collection, CollectionStats, Id};
use napi::bindgen_prelude::{AsyncTask, Float32Array, Float32ArraySlice};
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
