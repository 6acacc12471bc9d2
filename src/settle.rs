//! Settling queued writes: one threadsafe function per database, called once per batch of
//! outcomes instead of once per write.
//!
//! A promise made by napi-rs (`Env::create_deferred`) carries a threadsafe function of its
//! own: creating, calling and finalizing it cost the JS thread more than the rest of a small
//! write. Instead, `lib/index.ts` makes each write's promise itself and names it by a
//! ticket; the committer thread reports `(ticket, outcome)` here, and the first outcome of
//! an empty [`Settler`] schedules one call of the database's `settle` function, which
//! drains every outcome reported by the time it runs (usually a whole commit group) and
//! settles their promises in one pass.
//!
//! Invariants:
//! - every outcome reported while the threadsafe function is attached is delivered: a call
//!   is scheduled on each empty-to-non-empty transition of the queue, and each call drains
//!   it;
//! - calls already scheduled are delivered after [`Settler::release`] (napi's release mode,
//!   not abort), so closing never drops an outcome of a write accepted before it;
//! - the threadsafe function is weak (it does not keep Node's event loop alive) except
//!   while `lib/index.ts` has writes waiting ([`Settler::keep_alive`]), so a pending write
//!   keeps the process alive as a napi promise would, and an idle or closed database does
//!   not.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use napi::bindgen_prelude::{Float64Array, FnArgs, Function};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Env, Status};

use crate::convert::error_message;

/// The arguments of the JavaScript `settle(outcomes, errors)` function: `outcomes` holds
/// `[ticket, value]` pairs, `value` NaN for a failed write, whose error message (with its
/// `[KEEL_...]` code) is the next one in `errors`.
pub type SettleArgs = FnArgs<(Float64Array, Vec<String>)>;

/// The JavaScript function as `openDb` receives it.
pub type SettleFn<'f> = Function<'f, SettleArgs, ()>;

/// Not callee-handled (no leading error argument), weak (unreferenced at creation).
type Tsfn = ThreadsafeFunction<(), (), SettleArgs, Status, false, true>;

/// Outcomes waiting for the JS thread, in the order they were reported.
#[derive(Default)]
struct Outcomes {
    pairs: Vec<f64>,
    errors: Vec<String>,
}

/// The outcomes of one database's queued writes on their way to JavaScript.
pub struct Settler {
    outcomes: Arc<Mutex<Outcomes>>,
    /// `None` once released (the database was closed) or when `openDb` got no function.
    tsfn: Mutex<Option<Tsfn>>,
}

impl Settler {
    /// Wraps `settle` in a weak threadsafe function whose call drains the outcomes.
    pub fn new(settle: Option<SettleFn<'_>>) -> napi::Result<Settler> {
        let outcomes = Arc::new(Mutex::new(Outcomes::default()));
        let tsfn = match settle {
            None => None,
            Some(f) => {
                let drained = Arc::clone(&outcomes);
                let tsfn: Tsfn = f
                    .build_threadsafe_function::<()>()
                    .callee_handled::<false>()
                    .weak::<true>()
                    .build_callback(move |_| {
                        let Outcomes { pairs, errors } = std::mem::take(&mut *lock(&drained));
                        Ok(FnArgs::from((Float64Array::new(pairs), errors)))
                    })?;
                Some(tsfn)
            }
        };
        Ok(Settler {
            outcomes,
            tsfn: Mutex::new(tsfn),
        })
    }

    /// Whether outcomes can still reach JavaScript. Checked on the JS thread before a write
    /// is queued; [`Settler::release`] also runs there, so the answer holds until the write
    /// is queued, and the write's outcome comes before the committer stops (closing drains
    /// the queue first).
    pub fn is_attached(&self) -> bool {
        lock(&self.tsfn).is_some()
    }

    /// Reports the outcome of the write `ticket` (any thread): a count of records removed,
    /// or an error.
    pub fn settle(&self, ticket: f64, outcome: keeldb_core::Result<u64>) {
        let first = {
            let mut outcomes = lock(&self.outcomes);
            let value = match outcome {
                // Counts are at most a batch's length, exact as a double.
                Ok(n) => n as f64,
                Err(e) => {
                    outcomes.errors.push(error_message(&e));
                    f64::NAN
                }
            };
            outcomes.pairs.extend_from_slice(&[ticket, value]);
            outcomes.pairs.len() == 2
        };
        if first {
            if let Some(tsfn) = lock(&self.tsfn).as_ref() {
                // Non-blocking: the queue is unbounded, so this fails only once Node is
                // tearing the environment down, when nobody is left to settle anything.
                let _ = tsfn.call((), ThreadsafeFunctionCallMode::NonBlocking);
            }
        }
    }

    /// Keeps Node's event loop alive (`true`) while JavaScript waits for outcomes, or lets
    /// it exit (`false`). JS thread only.
    #[expect(
        deprecated,
        reason = "napi-rs 3 deprecates refer/unref in favour of clone/drop, which cannot \
                  make a weak threadsafe function strong for a while and weak again"
    )]
    pub fn keep_alive(&self, env: &Env, alive: bool) -> napi::Result<()> {
        match lock(&self.tsfn).as_mut() {
            Some(tsfn) if alive => tsfn.refer(env),
            Some(tsfn) => tsfn.unref(env),
            None => Ok(()),
        }
    }

    /// Releases the threadsafe function (calls already scheduled are still delivered).
    /// JS thread only, after the database is closed.
    pub fn release(&self) {
        drop(lock(&self.tsfn).take());
    }
}

/// A poisoned lock here only means a thread panicked between two plain pushes; the data is
/// still whole.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
