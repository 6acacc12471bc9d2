//! The async door: one generic `napi::Task` that runs a boxed closure on the libuv pool.
//!
//! The closure returns a `keeldb_core::Result` of a value that is already a JavaScript
//! value type (`()`, `f64`, `Option<Float32Array>`, a native class, ...), so `resolve` only
//! hands it over. Panics are caught in `compute`: napi-rs runs `compute` inside an
//! `extern "C"` callback, where an unwinding panic would abort the process.

use std::panic::{catch_unwind, AssertUnwindSafe};

use napi::bindgen_prelude::{AsyncTask, ToNapiValue, TypeName};
use napi::{Env, Task};

use crate::convert::{panic_error, to_napi_error};

type Work<T> = Box<dyn FnOnce() -> keeldb_core::Result<T> + Send>;

/// A unit of work for the libuv pool, created with [`Job::spawn`].
pub struct Job<T> {
    work: Option<Work<T>>,
}

impl<T> Job<T>
where
    T: ToNapiValue + TypeName + Send + 'static,
{
    /// Wraps `work` in an `AsyncTask`: returned from a `#[napi]` method, it becomes a
    /// Promise that settles with `work`'s result.
    pub fn spawn(
        work: impl FnOnce() -> keeldb_core::Result<T> + Send + 'static,
    ) -> AsyncTask<Job<T>> {
        AsyncTask::new(Job {
            work: Some(Box::new(work)),
        })
    }
}

impl<T> Task for Job<T>
where
    T: ToNapiValue + TypeName + Send + 'static,
{
    type Output = T;
    type JsValue = T;

    fn compute(&mut self) -> napi::Result<T> {
        let work = self
            .work
            .take()
            .ok_or_else(|| panic_error("a keeldb job was computed twice".to_owned()))?;
        // The closure owns everything it touches (Arc handles, copied arguments), and the
        // core's locks report poisoning as errors, so observing state after a caught panic
        // is safe: at worst the next call gets KEEL_POISONED.
        match catch_unwind(AssertUnwindSafe(work)) {
            Ok(result) => result.map_err(|e| to_napi_error(&e)),
            Err(payload) => Err(napi::bindgen_prelude::panic_to_error(payload)),
        }
    }

    fn resolve(&mut self, _env: Env, output: T) -> napi::Result<T> {
        Ok(output)
    }
}
