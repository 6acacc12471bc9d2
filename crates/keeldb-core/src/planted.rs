//! Planted bugs and an I/O event observer, for tests only.
//!
//! Compiled only with the `planted-bugs` feature, which no normal build enables: every hook
//! in the engine is a `#[cfg(feature = "planted-bugs")]` line, so release builds carry none
//! of this. It exists to show, once and repeatably, that the reliability checks catch the
//! bugs they are meant to catch (`npm run planted-bugs`, docs/RELIABILITY.md):
//!
//! - [`plant`] (or the `KEELDB_PLANT` environment variable, read on first use) switches on
//!   one [`Bug`] at a time;
//! - [`observe`] installs a callback that sees every write, sync, rename, truncation and
//!   acknowledgement the engine makes, in order, which the crash-simulation harness in
//!   `tests/planted_bugs.rs` uses to rebuild what a power loss at each point would leave.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::RwLock;

/// A bug that can be planted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bug {
    /// A write under `Durability::Fsync` is acknowledged after `write(2)` but before the
    /// log's `fdatasync`.
    AckBeforeFsync,
    /// An atomic file replacement renames the temp file into place without fsyncing the
    /// directory afterwards.
    NoDirFsync,
    /// Recovery leaves a torn log tail in place and the writer appends after it. Two layers
    /// remove a torn tail today (the truncation in recovery, then the open-time checkpoint,
    /// which empties the log), so this bug skips both.
    AppendAfterTornTail,
    /// A checkpoint empties the log before the vector file and the index are durable.
    CutLogEarly,
    /// Decoders reserve memory for a declared count before checking it against the bytes
    /// that are actually there.
    TrustLength,
    /// A group the committer logs while it applies the group before it (see
    /// `Collection::commit_group`) is acknowledged as soon as it is logged, before its
    /// `fdatasync`.
    AckChainedEarly,
    /// A checkpoint syncs the payload log and snapshots its index without first writing out
    /// the frames commit groups left buffered (and the checks that refuse that are skipped),
    /// then empties the log that could rebuild them.
    CheckpointLeavesFramesBuffered,
}

impl Bug {
    /// Every plantable bug.
    pub const ALL: [Bug; 7] = [
        Bug::AckBeforeFsync,
        Bug::NoDirFsync,
        Bug::AppendAfterTornTail,
        Bug::CutLogEarly,
        Bug::TrustLength,
        Bug::AckChainedEarly,
        Bug::CheckpointLeavesFramesBuffered,
    ];

    /// The bug's name, as `KEELDB_PLANT` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Bug::AckBeforeFsync => "ack-before-fsync",
            Bug::NoDirFsync => "no-dir-fsync",
            Bug::AppendAfterTornTail => "append-after-torn-tail",
            Bug::CutLogEarly => "cut-log-early",
            Bug::TrustLength => "trust-length",
            Bug::AckChainedEarly => "ack-chained-early",
            Bug::CheckpointLeavesFramesBuffered => "checkpoint-leaves-frames-buffered",
        }
    }

    /// The bug named `name`.
    pub fn from_name(name: &str) -> Option<Bug> {
        Bug::ALL.into_iter().find(|b| b.name() == name)
    }
}

/// `None` until first read; then the planted bug, if any.
static PLANTED: RwLock<Option<Option<Bug>>> = RwLock::new(None);

/// Plants `bug` (or none) for the whole process, overriding `KEELDB_PLANT`.
pub fn plant(bug: Option<Bug>) {
    let mut guard = PLANTED.write().unwrap_or_else(|e| e.into_inner());
    *guard = Some(bug);
}

/// The planted bug: the last [`plant`], else `KEELDB_PLANT`, else none.
pub fn planted() -> Option<Bug> {
    if let Some(bug) = *PLANTED.read().unwrap_or_else(|e| e.into_inner()) {
        return bug;
    }
    let from_env = std::env::var("KEELDB_PLANT")
        .ok()
        .and_then(|name| Bug::from_name(&name));
    plant(from_env);
    from_env
}

/// Whether `bug` is planted.
pub(crate) fn active(bug: Bug) -> bool {
    planted() == Some(bug)
}

/// What the engine just did to the file system (or told its caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Bytes were handed to the OS (`write(2)`) at the end of a file.
    Write,
    /// A file's data was made durable (`fsync` or `fdatasync`).
    SyncFile,
    /// A directory was fsynced.
    SyncDir,
    /// A file was renamed to `path`.
    Rename,
    /// A file was cut to a shorter length.
    Truncate,
    /// An upsert or delete returned success to its caller.
    Ack,
}

/// One observed event: what, and on which path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// The file or directory (for `Rename`, the new name; for `Ack`, the collection's log).
    pub path: PathBuf,
}

type Observer = Box<dyn Fn(&Event) + Send + Sync>;

static OBSERVER: RwLock<Option<Observer>> = RwLock::new(None);

/// Calls `observer` with every event from now on, in the thread that caused it, after the
/// operation succeeded. The observer must not call back into keeldb.
pub fn observe(observer: impl Fn(&Event) + Send + Sync + 'static) {
    *OBSERVER.write().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(observer));
}

/// Removes the observer.
pub fn stop_observing() {
    *OBSERVER.write().unwrap_or_else(|e| e.into_inner()) = None;
}

/// Reports an event to the observer, if there is one.
pub(crate) fn record(kind: EventKind, path: &Path) {
    if let Some(observer) = OBSERVER.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
        observer(&Event {
            kind,
            path: path.to_owned(),
        });
    }
}

/// A fault to inject: an operation fails the way a disk can make it fail. Unlike a [`Bug`],
/// keeldb's code is unchanged; what is tested is how it handles the failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Every `fdatasync` of a write-ahead log fails with EIO.
    LogSyncEio,
    /// Every write of payload frames to a payload log fails with EIO.
    PayloadWriteEio,
    /// Every write of a vector into the vector file fails with EIO.
    VectorWriteEio,
    /// Every growth of the vector file fails with ENOSPC.
    VectorGrowEnospc,
    /// The committer thread panics as it starts a group (a stand-in for a bug).
    CommitterPanic,
    /// The committer thread panics once a group is logged and synced, before it is
    /// answered (a stand-in for a bug).
    CommitterPanicAfterLog,
}

static FAULT: RwLock<Option<Fault>> = RwLock::new(None);
/// Operations the injected fault lets succeed before it fails them all.
static SPARED: AtomicU64 = AtomicU64::new(0);

/// Injects `fault` (or none) for the whole process from now on.
pub fn inject(fault: Option<Fault>) {
    inject_after(fault, 0);
}

/// Injects `fault` (or none) for the whole process, sparing the first `spared` operations
/// it applies to: a fault in the middle of a batch rather than at its start.
pub fn inject_after(fault: Option<Fault>, spared: u64) {
    let mut injected = FAULT.write().unwrap_or_else(|e| e.into_inner());
    SPARED.store(spared, Ordering::SeqCst);
    *injected = fault;
}

/// Whether `fault` is injected (and has spared the operations it was asked to spare).
pub(crate) fn failing(fault: Fault) -> bool {
    if *FAULT.read().unwrap_or_else(|e| e.into_inner()) != Some(fault) {
        return false;
    }
    SPARED
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_err()
}

/// Whether the committer finds the state lock held by a reader when it would write an
/// `fsync` group's vectors during the log's sync (see [`busy_state_lock`]).
static STATE_LOCK_BUSY: AtomicBool = AtomicBool::new(false);

/// Makes the committer find the state lock busy (`true`) when it would write an `fsync`
/// group's vectors during the log's sync, as when a search holds it: alongside a [`Fault`],
/// it tests the path that writes them after the answers instead.
pub fn busy_state_lock(busy: bool) {
    STATE_LOCK_BUSY.store(busy, Ordering::SeqCst);
}

/// Whether [`busy_state_lock`] is set.
pub(crate) fn state_lock_busy() -> bool {
    STATE_LOCK_BUSY.load(Ordering::SeqCst)
}
