//! Group commit: writes issued without waiting for each other share log writes and syncs.
//!
//! Every write is validated and encoded by its caller, then queued here as a [`Request`]
//! with a completion callback. One committer thread per collection takes everything queued
//! so far as a group: it logs every record of the group, syncs once at the strongest
//! durability any of them asked for, applies them in order and completes each request (a
//! write that deletes nothing as soon as it is logged at `flush` or `fsync`, with readers
//! held off until the group is applied, so that its caller wakes while the committer
//! applies). While it syncs, new requests queue up and form the next group. There is no
//! timer: a lone writer is committed as soon as the committer sees it, and a burst of
//! writers pays one fsync per group instead of one each.
//!
//! Invariant: every request is completed exactly once. A request dropped without being
//! completed (the committer panicked, or the collection went away) completes with an error,
//! so no caller ever waits forever.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::format::wal::BatchEncoder;
use crate::types::Durability;

/// Most log bytes one group carries; the rest of the queue waits for the next group.
pub const GROUP_BYTES_MAX: usize = 64 << 20;

/// Quiet pushes (`CommitQueue::push_quiet`) wake a waiting committer anyway once this many
/// requests wait: a caller that queues a long synchronous run of writes before it calls
/// `CommitQueue::wake` then still has the committer working alongside it. Small, because
/// the JS thread's burst of 64 writes takes several hundred microseconds to queue: with 256,
/// the committer idled through it (the two threads took turns); with 8 it starts on the
/// first writes and the rest form the next group while it syncs (docs/BENCHMARKS.md has the
/// 64-in-flight ingest rows this serves).
pub const QUIET_PENDING_MAX: usize = 8;

/// How long an idle committer polls for the next wake before it blocks on the condvar.
/// Waking a blocked thread costs a futex syscall on the writer's side and, on a virtual
/// machine whose CPU went idle, tens of microseconds before it runs: for a writer that
/// awaits each durable write, that latency came on top of every fsync. Writers that keep
/// the committer busy never reach this wait; one that writes rarely costs this much spinning
/// per write.
pub const SPIN_BEFORE_BLOCK: Duration = Duration::from_micros(100);

/// What a completed request reports: for a delete batch, how many records it removed.
pub type Completion = Box<dyn FnOnce(Result<u64>) + Send>;

/// A validated, encoded batch waiting for its log sequence number.
pub struct PreparedBatch {
    pub(crate) encoder: BatchEncoder,
    pub(crate) upserts: usize,
    /// The batch deletes: its answer is how many records it removed, known only once it is
    /// applied. Any other batch's answer is settled once it is logged (see
    /// [`Request::settled_by_log`]).
    pub(crate) deletes: bool,
}

impl PreparedBatch {
    /// Bytes this batch adds to the log.
    pub fn body_len(&self) -> usize {
        self.encoder.body_len()
    }
}

/// One queued write (or, with no batch, a durability barrier).
pub struct Request {
    pub(crate) batch: Option<PreparedBatch>,
    pub(crate) durability: Durability,
    /// Taken by the first answer. A `Cell`, so that the committer can answer through a
    /// shared borrow while the group's records, decoded in place, borrow the batches.
    done: Cell<Option<Completion>>,
}

impl Request {
    pub(crate) fn new(
        batch: Option<PreparedBatch>,
        durability: Durability,
        done: Completion,
    ) -> Self {
        Request {
            batch,
            durability,
            done: Cell::new(Some(done)),
        }
    }

    /// Reports the outcome to the caller, unless [`Request::answer`] did already.
    pub(crate) fn complete(self, result: Result<u64>) {
        self.answer(result);
    }

    /// Reports the outcome to the caller now; whatever is reported for this request later
    /// goes nowhere.
    pub(crate) fn answer(&self, result: Result<u64>) {
        if let Some(done) = self.done.take() {
            call(done, result);
        }
    }

    /// Whether the caller has its answer.
    pub(crate) fn answered(&self) -> bool {
        let done = self.done.take();
        let answered = done.is_none();
        self.done.set(done);
        answered
    }

    /// Whether this request's answer is settled once its group is logged at `logged`: a
    /// write that deletes nothing answers `Ok(0)`, and reopening applies it from the log if
    /// applying it fails, provided the log record left keeldb's buffer (`flush` or
    /// `fsync`). A delete's answer counts what it removed, which only its apply knows; a
    /// barrier is answered after the apply it waits for.
    pub(crate) fn settled_by_log(&self, logged: Durability) -> bool {
        logged != Durability::None && self.batch.as_ref().is_some_and(|b| !b.deletes)
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        if let Some(done) = self.done.get_mut().take() {
            // Dropped unanswered while the committer unwinds from a panic (a bug): the
            // request was in the group it was committing, which may have logged it, so
            // "closed" (nothing written) would be untrue.
            let error = match (std::thread::panicking(), self.batch.is_some()) {
                (true, true) => Error::Internal(
                    "the committer thread panicked while committing this write (a bug in \
                     keeldb; please report it): it may or may not be stored, which reopening \
                     the database shows"
                        .to_owned(),
                ),
                (true, false) => Error::Internal(
                    "the committer thread panicked before this barrier was done (a bug in \
                     keeldb; please report it): writes before it may or may not be durable, \
                     which reopening the database shows"
                        .to_owned(),
                ),
                (false, _) => Error::Closed("collection"),
            };
            call(done, Err(error));
        }
    }
}

/// Runs a caller's completion. One that panics is the caller's bug, contained here: it must
/// not end the committer thread, which would leave the rest of its group with a wrong answer
/// and every later request with none.
fn call(done: Completion, result: Result<u64>) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || done(result)));
}

#[derive(Default)]
struct QueueState {
    pending: Vec<Request>,
    closed: bool,
    /// While set, the committer leaves queued requests alone (see [`CommitQueue::hold`]).
    held: bool,
    /// The committer is blocked on the condvar. While it is busy with a group it looks at
    /// `pending` again before it waits, so a push needs to wake it only when this is set:
    /// a burst of writers then pays one futex wake per group instead of one per write.
    committer_waiting: bool,
    /// The committer took a group and has not asked for the next one yet (see
    /// [`CommitQueue::wait_idle`]).
    #[cfg(feature = "sim")]
    busy: bool,
}

/// The queue between writers and the committer thread.
#[derive(Default)]
pub struct CommitQueue {
    state: Mutex<QueueState>,
    wake: Condvar,
    /// Set (under the state lock) by whatever would wake the committer: a push, a
    /// [`CommitQueue::wake`] with work queued, a quiet push past [`QUIET_PENDING_MAX`]. A
    /// spinning committer polls it without taking the lock, so a burst of quiet pushes is
    /// still taken as one group, after its wake.
    signalled: AtomicBool,
}

impl CommitQueue {
    /// Queues a request; a closed queue hands it back.
    pub(crate) fn push(&self, request: Request) -> Result<(), Request> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.closed {
            return Err(request);
        }
        state.pending.push(request);
        self.signalled.store(true, Ordering::Release);
        let wake = state.committer_waiting;
        drop(state);
        if wake {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Queues a request without waking the committer, for a caller that queues several in a
    /// row and then calls [`CommitQueue::wake`] once: the committer then starts on all of
    /// them as one group, and the caller pays one futex wake for the lot. A closed queue
    /// hands the request back. Until `wake` is called the request may wait indefinitely,
    /// unless [`QUIET_PENDING_MAX`] requests are waiting.
    pub(crate) fn push_quiet(&self, request: Request) -> Result<(), Request> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.closed {
            return Err(request);
        }
        state.pending.push(request);
        let due = state.pending.len() >= QUIET_PENDING_MAX;
        if due {
            self.signalled.store(true, Ordering::Release);
        }
        let wake = due && state.committer_waiting;
        drop(state);
        if wake {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Wakes the committer if it waits while requests are queued (see
    /// [`CommitQueue::push_quiet`]).
    pub(crate) fn wake(&self) {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if !state.pending.is_empty() {
            self.signalled.store(true, Ordering::Release);
        }
        let wake = state.committer_waiting && !state.pending.is_empty();
        drop(state);
        if wake {
            self.wake.notify_one();
        }
    }

    /// Waits for work and takes the next group: every queued request, up to
    /// [`GROUP_BYTES_MAX`] of log bytes (always at least one request). Returns `None` once
    /// the queue is closed and empty.
    pub(crate) fn next_group(&self) -> Option<Vec<Request>> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        #[cfg(feature = "sim")]
        {
            state.busy = false;
        }
        let mut spun = false;
        while (state.pending.is_empty() || state.held) && !state.closed {
            if !spun {
                // Poll for a wake before blocking (see SPIN_BEFORE_BLOCK); a wake seen here
                // needs no futex on either side.
                spun = true;
                drop(state);
                self.spin_for_signal(SPIN_BEFORE_BLOCK);
                state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            state.committer_waiting = true;
            state = self
                .wake
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            state.committer_waiting = false;
        }
        if state.pending.is_empty() {
            return None;
        }
        Some(self.take_group(&mut state, GROUP_BYTES_MAX))
    }

    /// The next group, of at most `max_bytes` of log bytes, if the queue is not held and its
    /// first request fits, without waiting: for a committer still working on a group (see
    /// `Collection::commit_group`).
    pub(crate) fn try_next_group(&self, max_bytes: usize) -> Option<Vec<Request>> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let first_fits = state
            .pending
            .first()
            .is_some_and(|r| body_len(r) <= max_bytes);
        if !first_fits || state.held {
            return None;
        }
        Some(self.take_group(&mut state, max_bytes))
    }

    /// Takes queued requests up to `max_bytes` of log bytes (at least one).
    fn take_group(&self, state: &mut QueueState, max_bytes: usize) -> Vec<Request> {
        self.signalled.store(false, Ordering::Relaxed);
        let mut bytes = 0usize;
        let take = state
            .pending
            .iter()
            .take_while(|r| {
                bytes += body_len(r);
                bytes <= max_bytes
            })
            .count()
            .max(1);
        #[cfg(feature = "sim")]
        {
            state.busy = true;
        }
        state.pending.drain(..take).collect()
    }

    /// How many requests are queued (held ones included).
    pub(crate) fn len(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pending
            .len()
    }

    /// Polls the wake signal for up to `limit`; returns as soon as it is set.
    fn spin_for_signal(&self, limit: Duration) {
        let start = Instant::now();
        loop {
            for _ in 0..64 {
                if self.signalled.load(Ordering::Acquire) {
                    return;
                }
                std::hint::spin_loop();
            }
            if start.elapsed() >= limit {
                return;
            }
        }
    }

    /// Holds the committer (`true`) so that requests queued meanwhile form one group once it
    /// is released (`false`). For deterministic tests; closing the queue releases it.
    #[cfg(feature = "sim")]
    pub(crate) fn hold(&self, held: bool) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .held = held;
        self.wake.notify_all();
    }

    /// Waits until the committer has finished every group it can take: nothing is queued
    /// (or the queue is held) and it is not working on a group. A writer is answered before
    /// its group is applied, so the simulated-disk tests wait here before they count the
    /// disk's operations, which must not depend on how far the committer got.
    #[cfg(feature = "sim")]
    pub(crate) fn wait_idle(&self) {
        loop {
            {
                let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                if (state.pending.is_empty() || state.held) && !state.busy {
                    return;
                }
            }
            std::thread::sleep(Duration::from_micros(20));
        }
    }

    /// Refuses new requests; the committer drains what is queued, then stops.
    pub(crate) fn close(&self) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .closed = true;
        self.signalled.store(true, Ordering::Release);
        self.wake.notify_all();
    }
}

/// The log bytes of a request's batch (0 for a barrier).
fn body_len(request: &Request) -> usize {
    request.batch.as_ref().map_or(0, PreparedBatch::body_len)
}

/// The strongest durability any request of a group asked for.
pub(crate) fn strongest(group: &[Request]) -> Durability {
    let rank = |d: Durability| match d {
        Durability::None => 0,
        Durability::Flush => 1,
        Durability::Fsync => 2,
    };
    group
        .iter()
        .map(|r| r.durability)
        .max_by_key(|d| rank(*d))
        .unwrap_or(Durability::None)
}

/// The error the other requests of a failed group get: the same code where it says
/// something about the collection's state or about their records, else "poisoned" with the
/// first error as cause. An I/O error stays one: the group's records went to the log
/// together, so each of them may or may not be there, which `KEEL_IO` says and
/// `KEEL_POISONED` (refused, nothing written) would deny.
pub(crate) fn echo(first: &Error, collection: &str) -> Error {
    match first {
        Error::Closed(what) => Error::Closed(what),
        Error::Io { op, path, source } => Error::Io {
            op,
            path: path.clone(),
            // io::Error is not Clone: keep the OS error number where there is one.
            source: match source.raw_os_error() {
                Some(code) => std::io::Error::from_raw_os_error(code),
                None => std::io::Error::new(source.kind(), source.to_string()),
            },
        },
        Error::Internal(message) => Error::Internal(message.clone()),
        Error::Poisoned { what, cause } => Error::Poisoned {
            what: what.clone(),
            cause: cause.clone(),
        },
        other => Error::Poisoned {
            what: format!("collection '{collection}'"),
            cause: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn request(d: Durability, tx: &mpsc::Sender<Result<u64>>) -> Request {
        let tx = tx.clone();
        Request::new(None, d, Box::new(move |r| tx.send(r).unwrap_or(())))
    }

    #[test]
    fn a_dropped_request_completes_with_an_error() {
        let (tx, rx) = mpsc::channel();
        drop(request(Durability::Fsync, &tx));
        assert_eq!(
            rx.recv().ok().map(|r| r.err().map(|e| e.code())),
            Some(Some("KEEL_CLOSED"))
        );
    }

    #[test]
    fn a_push_wakes_a_waiting_committer_and_one_that_is_busy_finds_the_work_anyway() {
        use std::sync::Arc;
        let (tx, rx) = mpsc::channel();
        let q = Arc::new(CommitQueue::default());
        let committer = {
            let q = Arc::clone(&q);
            std::thread::spawn(move || {
                let mut groups = 0;
                while let Some(group) = q.next_group() {
                    groups += 1;
                    for r in group {
                        r.complete(Ok(1));
                    }
                }
                groups
            })
        };
        // Pushes land while the committer waits, while it commits, and between the two;
        // none may be left unanswered.
        for i in 0..2000 {
            assert!(q.push(request(Durability::None, &tx)).is_ok());
            if i % 100 == 0 {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        for _ in 0..2000 {
            let outcome = rx.recv_timeout(std::time::Duration::from_secs(10));
            assert!(matches!(outcome, Ok(Ok(1))), "a request went unanswered");
        }
        q.close();
        assert!(committer.join().is_ok_and(|groups| groups >= 1));
    }

    /// How many of `count` successful outcomes arrive before `limit` runs out.
    fn answered_within(
        rx: &mpsc::Receiver<Result<u64>>,
        count: usize,
        limit: std::time::Duration,
    ) -> usize {
        let deadline = std::time::Instant::now() + limit;
        let mut answered = 0;
        while answered < count {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(Ok(1)) => answered += 1,
                _ => break,
            }
        }
        answered
    }

    #[test]
    fn quiet_pushes_wait_for_one_wake_and_then_commit_as_one_group() {
        use std::sync::Arc;
        use std::time::Duration;
        let ten_seconds = Duration::from_secs(10);
        let (tx, rx) = mpsc::channel();
        let q = Arc::new(CommitQueue::default());
        let (groups_tx, groups_rx) = mpsc::channel();
        let committer = {
            let q = Arc::clone(&q);
            std::thread::spawn(move || {
                while let Some(group) = q.next_group() {
                    let _ = groups_tx.send(group.len());
                    for r in group {
                        r.complete(Ok(1));
                    }
                }
            })
        };
        // Let the committer block first, so the quiet pushes find it waiting.
        std::thread::sleep(Duration::from_millis(50));
        let quiet = QUIET_PENDING_MAX - 1;
        for _ in 0..quiet {
            assert!(q.push_quiet(request(Durability::None, &tx)).is_ok());
        }
        std::thread::sleep(Duration::from_millis(50));
        assert!(rx.try_recv().is_err(), "a quiet push woke the committer");
        q.wake();
        assert_eq!(groups_rx.recv_timeout(ten_seconds).ok(), Some(quiet));
        assert_eq!(answered_within(&rx, quiet, ten_seconds), quiet);
        // A long quiet run starts the committer by itself once QUIET_PENDING_MAX wait.
        std::thread::sleep(Duration::from_millis(50));
        for _ in 0..QUIET_PENDING_MAX {
            assert!(q.push_quiet(request(Durability::None, &tx)).is_ok());
        }
        assert_eq!(
            answered_within(&rx, QUIET_PENDING_MAX, ten_seconds),
            QUIET_PENDING_MAX,
            "a long quiet run was left waiting"
        );
        q.close();
        assert!(committer.join().is_ok());
    }

    #[test]
    fn a_group_takes_everything_queued_and_a_closed_queue_drains_then_stops() {
        let (tx, rx) = mpsc::channel();
        let q = CommitQueue::default();
        for d in [Durability::None, Durability::Fsync, Durability::Flush] {
            assert!(q.push(request(d, &tx)).is_ok());
        }
        let group = q.next_group().expect("group");
        assert_eq!(group.len(), 3);
        assert_eq!(strongest(&group), Durability::Fsync);
        for r in group {
            r.complete(Ok(1));
        }
        assert_eq!(rx.try_iter().count(), 3);
        assert!(q.push(request(Durability::None, &tx)).is_ok());
        q.close();
        assert!(q.push(request(Durability::None, &tx)).is_err());
        assert_eq!(q.next_group().map(|g| g.len()), Some(1));
        assert!(q.next_group().is_none());
    }
}
