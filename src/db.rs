//! `NativeDb`: a database handle. Closing is the core's business: after `Db::close` every
//! core call returns `Error::Closed`, which crosses as `KEEL_CLOSED`. The handle also owns
//! the database's [`Settler`], through which its collections' queued writes settle.

use std::path::PathBuf;
use std::sync::Arc;

use keeldb_core::db::{
    CHECKPOINT_THRESHOLD_BYTES_DEFAULT, COMPACTION_GARBAGE_RATIO_DEFAULT,
    COMPACTION_MIN_BYTES_DEFAULT,
};
use keeldb_core::{Db, DbOptions};
use napi::bindgen_prelude::AsyncTask;
use napi::Env;
use napi_derive::napi;

use crate::collection::NativeCollection;
use crate::convert::{napi_result, to_integer, to_u32, SAFE_INTEGER_MAX};
use crate::job::Job;
use crate::settle::{SettleFn, Settler};

/// An open database (native side of `Db` in `lib/index.ts`).
#[napi]
pub struct NativeDb {
    db: Arc<Db>,
    settler: Arc<Settler>,
}

/// The numeric options of `open`; `undefined` means the default.
#[napi(object)]
pub struct NativeTuning {
    pub checkpoint_threshold_bytes: Option<f64>,
    pub compaction_garbage_ratio: Option<f64>,
    pub compaction_min_bytes: Option<f64>,
}

/// Opens (creating if needed) the database in `path` and recovers every collection. The
/// option strings are `lib/index.ts`'s validated values. `settle(outcomes, errors)` receives
/// the outcomes of the writes queued by `upsert` and `delete` (see `src/settle.rs`); without
/// it those writes throw (benchmark hooks open databases they never write to).
#[napi(
    ts_args_type = "path: string, durability: string, recovery: string, tuning: NativeTuning, settle?: (outcomes: Float64Array, errors: string[]) => void",
    ts_return_type = "Promise<NativeDb>"
)]
pub fn open_db(
    path: String,
    durability: String,
    recovery: String,
    tuning: NativeTuning,
    settle: Option<SettleFn<'_>>,
) -> napi::Result<AsyncTask<Job<NativeDb>>> {
    let options = napi_result(db_options(durability, recovery, tuning))?;
    let settler = Arc::new(Settler::new(settle)?);
    Ok(Job::spawn(move || {
        let db = Db::open(&PathBuf::from(path), options)?;
        Ok(NativeDb {
            db: Arc::new(db),
            settler,
        })
    }))
}

fn db_options(
    durability: String,
    recovery: String,
    tuning: NativeTuning,
) -> keeldb_core::Result<DbOptions> {
    // A threshold the caller set is exact; the default one grows with the indexes.
    let checkpoint_scales_with_index = tuning.checkpoint_threshold_bytes.is_none();
    let checkpoint_threshold_bytes = match tuning.checkpoint_threshold_bytes {
        None => CHECKPOINT_THRESHOLD_BYTES_DEFAULT,
        Some(n) => to_integer("checkpointThresholdBytes", n, 1, SAFE_INTEGER_MAX)?,
    };
    let compaction_min_bytes = match tuning.compaction_min_bytes {
        None => COMPACTION_MIN_BYTES_DEFAULT,
        Some(n) => to_integer("compactionMinBytes", n, 0, SAFE_INTEGER_MAX)?,
    };
    Ok(DbOptions {
        durability: durability.parse()?,
        recovery: recovery.parse()?,
        checkpoint_threshold_bytes,
        checkpoint_scales_with_index,
        // The core checks the range (above 0, at most 1).
        compaction_garbage_ratio: tuning
            .compaction_garbage_ratio
            .unwrap_or(COMPACTION_GARBAGE_RATIO_DEFAULT),
        compaction_min_bytes,
    })
}

#[napi]
impl NativeDb {
    /// Creates a collection (async: it writes and fsyncs its files).
    #[napi(ts_return_type = "Promise<NativeCollection>")]
    pub fn create_collection(
        &self,
        name: String,
        dimension: f64,
        metric: String,
    ) -> napi::Result<AsyncTask<Job<NativeCollection>>> {
        let dimension = napi_result(to_u32("dimension", dimension))?;
        let metric = napi_result(metric.parse())?;
        let db = Arc::clone(&self.db);
        let settler = Arc::clone(&self.settler);
        Ok(Job::spawn(move || {
            // The core checks the dimension's real range (1 to DIMENSION_MAX).
            let collection = db.create_collection(&name, dimension, metric)?;
            Ok(NativeCollection::new(collection, settler))
        }))
    }

    /// The open collection `name`, or `KEEL_NOT_FOUND`.
    #[napi(catch_unwind)]
    pub fn collection(&self, name: String) -> napi::Result<NativeCollection> {
        let collection = napi_result(self.db.collection(&name))?;
        Ok(NativeCollection::new(collection, Arc::clone(&self.settler)))
    }

    /// Names of every collection, sorted.
    #[napi(catch_unwind)]
    pub fn list_collections(&self) -> napi::Result<Vec<String>> {
        napi_result(self.db.list_collections())
    }

    /// Closes and deletes a collection and its files.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn drop_collection(&self, name: String) -> AsyncTask<Job<()>> {
        let db = Arc::clone(&self.db);
        Job::spawn(move || db.drop_collection(&name))
    }

    /// Checkpoints and closes every collection, then releases the directory lock.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn close(&self) -> AsyncTask<Job<()>> {
        let db = Arc::clone(&self.db);
        Job::spawn(move || db.close())
    }

    /// Keeps Node's event loop alive while JavaScript waits for queued writes (`true`), or
    /// lets it exit (`false`).
    #[napi(catch_unwind)]
    pub fn keep_alive(&self, env: Env, alive: bool) -> napi::Result<()> {
        self.settler.keep_alive(&env, alive)
    }

    /// Releases the settle function once `close` has settled: every write queued before it
    /// has then reported its outcome, and later writes throw `KEEL_CLOSED` without queuing.
    #[napi(catch_unwind)]
    pub fn release_settler(&self) {
        self.settler.release();
    }
}
