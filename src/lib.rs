//! Node.js binding of keeldb: conversions between JavaScript values and `keeldb-core`
//! calls, and nothing else.
//!
//! Invariants:
//! - no storage logic lives here: every method converts its arguments, calls one core
//!   function and converts the result;
//! - a sync method and its async twin share one plain function; the async door only moves
//!   it onto the libuv pool ([`job::Job`]);
//! - no panic crosses into Node: async work runs under `catch_unwind` in `Job::compute`,
//!   sync methods are `#[napi(catch_unwind)]`;
//! - every core error crosses as a JavaScript `Error` whose message is `[KEEL_CODE] message`
//!   ([`convert::to_napi_error`]); `lib/index.ts` turns it into a `KeelError`;
//! - queued writes (`upsert`, `delete`) settle through their database's one threadsafe
//!   function ([`settle::Settler`]), never through a napi promise of their own.
//!
//! The generated `index.js` / `index.d.ts` expose these classes as-is; the public API is the
//! hand-written `lib/index.ts`, which validates options before they reach this crate.
#![deny(clippy::unwrap_used)]
#![deny(unsafe_code)]

pub mod bench;
mod collection;
mod convert;
mod db;
mod job;
mod settle;

use napi_derive::napi;

/// Every Rust allocation of the addon: see the note on `mimalloc` in Cargo.toml.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub use collection::{
    collection_get_sync_into, NativeCollection, NativeCollectionStats, NativeHits, NativeRecord,
    ReadHandle,
};
pub use db::{open_db, NativeDb, NativeTuning};

/// Version of the native addon (the Cargo package version).
#[napi]
pub fn native_version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

/// Test hook: panics on the JS thread, so a test can show that a panic in a sync method
/// reaches JavaScript as an error instead of aborting the process. Not part of the public
/// API (`lib/index.ts` does not export it).
#[napi(catch_unwind)]
pub fn panic_for_test_sync() -> napi::Result<()> {
    panic!("panic_for_test_sync: a deliberate panic on the JS thread")
}

/// Test hook: panics on the libuv pool, so a test can show that a panic in async work
/// rejects the Promise instead of aborting the process. Not part of the public API.
#[napi(ts_return_type = "Promise<void>")]
pub fn panic_for_test_async() -> napi::bindgen_prelude::AsyncTask<job::Job<()>> {
    job::Job::spawn(|| panic!("panic_for_test_async: a deliberate panic on the libuv pool"))
}
