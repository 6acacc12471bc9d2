//! Crash and fault checkers on the simulated disk (feature `sim`; `npm run test:sim`).
//!
//! Enumerated: each workload (loads, batches, updates and deletes, checkpoints and payload-log
//! compaction, reopens, group commits) runs once to count its mutating disk operations, then once per
//! operation with the power cut there; each cut is recovered under several damages (only
//! durable bytes, every pending write, seeded subsets, tears and extensions).
//!
//! Simulated: seeded random streams of operations (mixed durabilities, checkpoints,
//! compactions, reopens, flushes) with a random power cut or disk fault; odd seeds run with
//! the default checkpoint threshold rule, which grows with the indexes. A failing seed is
//! printed; `KEELDB_SIM_SEED=<seed>` replays just that one, `KEELDB_SIM_SEEDS=<n>` runs more
//! (from `KEELDB_SIM_FIRST_SEED`, 0 by default).
//!
//! After every recovery: the open succeeds; the state equals the state after some prefix of
//! the issued writes that includes every write acknowledged under `fsync` and every write
//! before a successful checkpoint, flush or close (so: nothing acknowledged lost, no phantom
//! or half record, vectors and payloads from the same write); recovering the same image again
//! gives the same state; a crash right after recovery changes nothing; a write after
//! recovery survives another crash. Under faults: every error is `KEEL_IO` or
//! `KEEL_POISONED`, and once a collection reports itself poisoned it refuses every write.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use keeldb_core::storage::sim::{Damage, Fault, SimDisk};
use keeldb_core::{Collection, Db, DbOptions, Durability, Error, Id, Metric, RecoveryPolicy};

const DB: &str = "/db";
const NAME: &str = "c";
const DIM: usize = 3;

/// One step of a workload.
#[derive(Debug, Clone)]
enum Step {
    /// Upserts `ids` as one batch; each gets a vector and (for even `tag`s) a payload
    /// derived from `tag`.
    Put(Vec<u64>, u32, Durability),
    /// Deletes `ids` as one batch.
    Delete(Vec<u64>, Durability),
    /// Single-id upserts `(id, tag)` queued without waiting for each other (so that they
    /// share log writes and syncs), then awaited.
    Burst(Vec<(u64, u32)>, Durability),
    /// Replaces (or with `None` removes) the payload of an id, if it exists.
    SetPayload(u64, Option<u32>, Durability),
    /// A durability barrier.
    Flush,
    Checkpoint,
    Compact,
    /// Closes the database cleanly and opens it again.
    Reopen,
}

impl Step {
    fn writes(&self) -> bool {
        matches!(
            self,
            Step::Put(..) | Step::Delete(..) | Step::SetPayload(..) | Step::Burst(..)
        )
    }

    fn durability(&self) -> Option<Durability> {
        match self {
            Step::Put(_, _, d)
            | Step::Delete(_, d)
            | Step::SetPayload(_, _, d)
            | Step::Burst(_, d) => Some(*d),
            _ => None,
        }
    }
}

fn vector(id: u64, tag: u32) -> Vec<f32> {
    vec![id as f32, tag as f32, -(tag as f32) / 7.0]
}

fn payload(id: u64, tag: u32) -> Vec<u8> {
    format!(
        r#"{{"id":{id},"tag":{tag},"pad":"{}"}}"#,
        "x".repeat(tag as usize % 40)
    )
    .into_bytes()
}

/// What a collection holds: id -> (vector, payload).
type State = BTreeMap<u64, (Vec<f32>, Option<Vec<u8>>)>;

fn apply(state: &mut State, step: &Step) {
    match step {
        Step::Put(ids, tag, _) => {
            for &id in ids {
                let p = tag.is_multiple_of(2).then(|| payload(id, *tag));
                state.insert(id, (vector(id, *tag), p));
            }
        }
        Step::Burst(writes, d) => writes
            .iter()
            .for_each(|&(id, tag)| apply(state, &Step::Put(vec![id], tag, *d))),
        Step::Delete(ids, _) => ids.iter().for_each(|id| {
            state.remove(id);
        }),
        Step::SetPayload(id, tag, _) => {
            if let Some(entry) = state.get_mut(id) {
                entry.1 = tag.map(|t| payload(*id, t));
            }
        }
        _ => {}
    }
}

fn upsert_args(ids: &[u64], tag: u32) -> (Vec<Id>, Vec<f32>, Vec<Option<Vec<u8>>>) {
    let ids_: Vec<Id> = ids.iter().map(|&i| Id::Int(i)).collect();
    let vectors: Vec<f32> = ids.iter().flat_map(|&i| vector(i, tag)).collect();
    let payloads = ids
        .iter()
        .map(|&i| tag.is_multiple_of(2).then(|| payload(i, tag)))
        .collect();
    (ids_, vectors, payloads)
}

/// Queues every write of a burst, then waits for each outcome, in order. The first half is
/// queued at once and the second half from the completion of the first half's last write,
/// which runs on the committer thread: at `fsync` that is before the first half is applied,
/// so the committer logs the second half while it applies the first (see
/// `Collection::commit_group`); at other durabilities the second half is the next group.
fn burst(
    c: &Arc<Collection>,
    writes: &[(u64, u32)],
    d: Durability,
) -> Vec<keeldb_core::Result<()>> {
    type Outcomes = std::sync::mpsc::Receiver<keeldb_core::Result<()>>;
    fn submit(
        c: &Collection,
        (id, tag): (u64, u32),
        d: Durability,
        then: Box<dyn FnOnce() + Send>,
    ) -> Outcomes {
        let (tx, rx) = std::sync::mpsc::channel();
        let (ids, vectors, payloads) = upsert_args(&[id], tag);
        let payloads: Vec<Option<&[u8]>> = payloads.iter().map(|p| p.as_deref()).collect();
        match c.prepare_upsert_with_payloads(&ids, &vectors, &payloads) {
            Ok(batch) => c.submit(
                batch,
                Some(d),
                Box::new(move |r| {
                    let _ = tx.send(r.map(|_| ()));
                    then();
                }),
            ),
            Err(e) => {
                let _ = tx.send(Err(e));
                then();
            }
        }
        rx
    }
    let (first, second) = writes.split_at(writes.len().div_ceil(2));
    let (second_tx, second_rx) = std::sync::mpsc::channel::<Vec<Outcomes>>();
    let queue_second: Box<dyn FnOnce() + Send> = {
        let (c, second) = (Arc::clone(c), second.to_vec());
        Box::new(move || {
            let receivers = second
                .iter()
                .map(|&write| submit(&c, write, d, Box::new(|| {})))
                .collect();
            let _ = second_tx.send(receivers);
        })
    };
    // Held, so that the first half is one group whatever the timing: runs replay exactly.
    c.hold_commits(true);
    let mut receivers = Vec::with_capacity(writes.len());
    let mut queue_second = Some(queue_second);
    for (i, &write) in first.iter().enumerate() {
        let then = match i + 1 == first.len() {
            true => queue_second.take().expect("once"),
            false => Box::new(|| {}),
        };
        receivers.push(submit(c, write, d, then));
    }
    c.hold_commits(false);
    drop(queue_second); // an empty burst: no second half will come
    let mut outcomes: Vec<_> = receivers
        .into_iter()
        .map(|rx| rx.recv().unwrap_or(Err(Error::Closed("collection"))))
        .collect();
    for rx in second_rx.recv().unwrap_or_default() {
        outcomes.push(rx.recv().unwrap_or(Err(Error::Closed("collection"))));
    }
    outcomes
}

thread_local! {
    /// Whether this thread's runs use the default threshold rule, which grows with the
    /// indexes (odd seeds of the seeded test), rather than an exact one.
    static SCALED_THRESHOLD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn options() -> DbOptions {
    let scaled = SCALED_THRESHOLD.get();
    DbOptions {
        // Small, so that the workloads cross automatic checkpoints (which run after the group
        // is applied; each step waits for the committer to go idle, so they come at the
        // same disk operation in every run). Automatic compaction runs after the answer,
        // concurrently with the next step, which would make runs differ: the workloads
        // compact explicitly.
        // Scaled, the threshold is four times the indexes the last checkpoint wrote (a few
        // hundred bytes here), read at open and after each checkpoint, so checkpoints come
        // at other points of the same workloads.
        checkpoint_threshold_bytes: if scaled { 200 } else { 600 },
        checkpoint_scales_with_index: scaled,
        compaction_min_bytes: u64::MAX,
        compaction_garbage_ratio: 0.5,
        ..DbOptions::default()
    }
}

/// A write issued by a workload.
#[derive(Debug, Clone)]
struct Issued {
    step: Step,
    /// Whether it is sure to be in the log if anything after it in its session is (`false`:
    /// it failed with an I/O error, or a failure came before it was synced, so it may be
    /// missing, and with it everything after it in the session).
    certain: bool,
    /// Which open of the database it was issued in: each reopen replays what the log held
    /// and starts a new session.
    session: u32,
}

/// What a workload did.
#[derive(Debug, Default)]
struct Run {
    /// The writes issued, in order. Writes refused before reaching the log are not listed.
    issued: Vec<Issued>,
    /// Whether the collection was created (or opened): from then on it must exist.
    created: bool,
    /// Writes the recovered state must include: every one before this count.
    must_keep: usize,
    /// The first error, if any.
    error: Option<Error>,
    /// Problems seen while running (a write acknowledged after the handle was poisoned, an
    /// untyped error...).
    violations: Vec<String>,
    /// The disk's operation count after each outcome: equal across runs of one workload
    /// when the run is deterministic.
    ops_after: Vec<u64>,
}

fn open(disk: &Arc<SimDisk>) -> keeldb_core::Result<(Db, Arc<Collection>)> {
    let db = Db::open_in(disk.vfs(), Path::new(DB), options())?;
    let c = match db.collection(NAME) {
        Ok(c) => c,
        Err(Error::NotFound(_)) => db.create_collection(NAME, DIM as u32, Metric::Euclidean)?,
        Err(e) => return Err(e),
    };
    Ok((db, c))
}

/// Runs `steps` on `disk` until the power is cut (or to the end), then drops the handles
/// without closing them. With `keep_going`, steps after an error are still tried (a fault
/// that did not cut the power).
fn run(disk: &Arc<SimDisk>, steps: &[Step], keep_going: bool) -> Run {
    let mut out = Run::default();
    let (mut db, mut c) = match open(disk) {
        Ok(handles) => handles,
        Err(e) => {
            out.error = Some(e);
            return out;
        }
    };
    out.created = true;
    let mut session = 0;
    let mut poisoned = false;
    let trace = std::env::var("KEELDB_SIM_TRACE").is_ok();
    let mut stop = false;
    for step in steps {
        // Each step is one outcome, except a burst: one per write, each a single Put.
        let outcomes: Vec<(Step, keeldb_core::Result<()>)> = match step {
            Step::Burst(writes, d) => writes
                .iter()
                .map(|&(id, tag)| Step::Put(vec![id], tag, *d))
                .zip(burst(&c, writes, *d))
                .collect(),
            _ => {
                let mut changed = true;
                let result = match step {
                    Step::Put(ids, tag, d) => {
                        let (ids, vectors, payloads) = upsert_args(ids, *tag);
                        let payloads: Vec<Option<&[u8]>> =
                            payloads.iter().map(|p| p.as_deref()).collect();
                        c.upsert_with_payloads(&ids, &vectors, &payloads, Some(*d))
                    }
                    Step::Delete(ids, d) => {
                        let ids: Vec<Id> = ids.iter().map(|&i| Id::Int(i)).collect();
                        c.delete(&ids, Some(*d))
                            .map(|removed| changed = removed > 0)
                    }
                    Step::SetPayload(id, tag, d) => {
                        let p = tag.map(|t| payload(*id, t));
                        c.update_payload(&Id::Int(*id), p.as_deref(), false, Some(*d))
                            .map(|exists| changed = exists)
                    }
                    Step::Flush => c.flush(),
                    Step::Checkpoint => c.checkpoint(),
                    Step::Compact => c.compact(),
                    Step::Reopen => {
                        // Reopen even when the close reports an error (a poisoned
                        // collection), which is recorded like any other.
                        let closed = db.close();
                        open(disk).and_then(|(d2, c2)| {
                            db = d2;
                            c = c2;
                            poisoned = false;
                            session += 1;
                            closed
                        })
                    }
                    Step::Burst(..) => unreachable!("handled above"),
                };
                if !changed {
                    // Nothing to change, so nothing was logged or synced: no sync point.
                    continue;
                }
                vec![(step.clone(), result)]
            }
        };
        // Writes are answered before they are applied: let the committer finish, so that
        // the count of disk operations does not depend on thread timing.
        c.wait_for_committer();
        for (step, result) in outcomes {
            out.ops_after.push(disk.ops());
            if trace {
                let checkpoints = c.stats().map(|s| (s.checkpoints, s.checkpoint_at_bytes));
                eprintln!(
                    "  {step:?} -> {result:?} (disk op {}; checkpoints, threshold: {checkpoints:?})",
                    disk.ops()
                );
            }
            if step.writes() {
                let certain = match &result {
                    Ok(()) => Some(true),
                    // KEEL_INTERNAL (a committer panic, which the sim never plants) says the
                    // same: there or not.
                    Err(e) if matches!(e.code(), "KEEL_IO" | "KEEL_INTERNAL") => Some(false),
                    Err(_) => None,
                };
                if let Some(certain) = certain {
                    out.issued.push(Issued {
                        step: step.clone(),
                        certain,
                        session,
                    });
                }
            }
            match result {
                Ok(()) => {
                    if poisoned && step.writes() {
                        out.violations.push(format!(
                            "{step:?} was acknowledged by a poisoned collection"
                        ));
                    }
                    // (A write that found nothing to change logged nothing either.)
                    if step.durability().is_none_or(|d| d == Durability::Fsync) {
                        out.must_keep = out.issued.len();
                    }
                }
                Err(e) => {
                    // A failure may poison the collection, and a poisoned one drops what it
                    // had not yet made durable (as a process crash would): writes
                    // acknowledged since the last sync point without `fsync` are no longer
                    // certain.
                    for entry in &mut out.issued[out.must_keep..] {
                        entry.certain = false;
                    }
                    if !matches!(e.code(), "KEEL_IO" | "KEEL_POISONED" | "KEEL_CLOSED") {
                        out.violations
                            .push(format!("{step:?} failed with {}: {e}", e.code()));
                    }
                    out.error.get_or_insert(e);
                    stop = disk.crashed() || !keep_going;
                    if !stop {
                        poisoned = c.stats().map(|s| s.poisoned).unwrap_or(true);
                    }
                }
            }
        }
        if stop {
            break;
        }
    }
    drop(c);
    drop(db);
    out
}

fn read_state(c: &Collection, ids: u64) -> State {
    let mut state = State::new();
    for id in 0..ids {
        let record = c
            .get_record(&Id::Int(id), true, true)
            .expect("read a record");
        if let Some(r) = record {
            state.insert(id, (r.vector.expect("asked for the vector"), r.payload));
        }
    }
    state
}

/// Opens a crashed disk under `policy` and reads its state; `Err` describes a failed open,
/// a collection that `must_exist` but is gone, or damage reported (a crash alone never
/// damages what was synced, so recovery must find only torn tails).
fn recover(
    disk: &Arc<SimDisk>,
    ids: u64,
    policy: RecoveryPolicy,
    must_exist: bool,
) -> Result<State, String> {
    let options = DbOptions {
        recovery: policy,
        ..options()
    };
    let db = Db::open_in(disk.vfs(), Path::new(DB), options)
        .map_err(|e| format!("open under {policy:?} failed with {}: {e}", e.code()))?;
    let c = match db.collection(NAME) {
        Ok(c) => c,
        Err(Error::NotFound(_)) if !must_exist => return Ok(State::new()),
        Err(e) => return Err(format!("the collection is gone: {e}")),
    };
    let stats = c.stats().map_err(|e| format!("stats: {e}"))?;
    if stats.corrupt_records_skipped > 0 || !stats.warnings.is_empty() {
        return Err(format!(
            "recovery reported damage after a crash: {} skipped, {:?}",
            stats.corrupt_records_skipped, stats.warnings
        ));
    }
    let state = read_state(&c, ids);
    drop(c);
    drop(db);
    Ok(state)
}

/// Every check of one recovery of `crashed` under `damage`. `Err` names what failed.
fn check_recovery(
    crashed: &SimDisk,
    damage: Damage,
    policy: RecoveryPolicy,
    run: &Run,
    ids: u64,
) -> Result<(), String> {
    let disk = crashed.crash(damage);
    let state = recover(&disk, ids, policy, run.created)?;
    // A prefix of the issued writes, keeping at least every acknowledged durable one: the
    // log is one sequence per session, so once an uncertain write is missing, so is
    // everything after it in its session (a reopen replays what the log held then).
    // Candidates: a state, and the session whose rest is dropped.
    let mut candidates: Vec<(State, Option<u32>)> = vec![(State::new(), None)];
    let mut matched = run.must_keep == 0 && state.is_empty();
    for (i, issued) in run.issued.iter().enumerate() {
        if matched {
            break;
        }
        let mut next: Vec<(State, Option<u32>)> = Vec::new();
        let mut keep = |candidate: (State, Option<u32>)| {
            if !next.contains(&candidate) {
                next.push(candidate);
            }
        };
        for (c, dropped) in &candidates {
            let dropped = dropped.filter(|s| *s == issued.session);
            if dropped.is_some() {
                // The rest of this session is missing: a certain write cannot be.
                if !issued.certain {
                    keep((c.clone(), dropped));
                }
                continue;
            }
            let mut applied = c.clone();
            apply(&mut applied, &issued.step);
            keep((applied, None));
            if !issued.certain {
                keep((c.clone(), Some(issued.session)));
            }
        }
        candidates = next;
        matched = i + 1 >= run.must_keep && candidates.iter().any(|(c, _)| *c == state);
    }
    if !matched {
        if std::env::var("KEELDB_SIM_TRACE").is_ok() {
            let mut model = State::new();
            for (i, issued) in run.issued.iter().enumerate() {
                apply(&mut model, &issued.step);
                let differ: Vec<_> = (0..ids)
                    .filter(|id| model.get(id) != state.get(id))
                    .map(|id| {
                        (
                            id,
                            model.get(&id).map(|v| v.0[1]),
                            state.get(&id).map(|v| v.0[1]),
                        )
                    })
                    .collect();
                eprintln!(
                    "after write {}: ids differing (id, model tag, found tag): {differ:?}",
                    i + 1
                );
            }
        }
        return Err(format!(
            "recovered state {state:?} is no prefix of the {} issued writes that keeps the first {}",
            run.issued.len(),
            run.must_keep
        ));
    }
    // The same image recovers to the same state.
    let again = recover(&crashed.crash(damage), ids, policy, run.created)?;
    if again != state {
        return Err(format!(
            "a second recovery of the same image gave {again:?}"
        ));
    }
    // Recovery left its work durable: a crash right after it changes nothing, whatever the
    // crash keeps of what recovery wrote.
    let after = recover(&disk.crash(damage), ids, policy, run.created)?;
    if after != state {
        return Err(format!("a crash right after recovery gave {after:?}"));
    }
    // Crash, reopen, write, crash again.
    let (db, c) = open(&disk).map_err(|e| format!("reopen failed: {e}"))?;
    let id = ids - 1;
    c.upsert_with_payloads(
        &[Id::Int(id)],
        &vector(id, 999),
        &[Some(&payload(id, 999))],
        Some(Durability::Fsync),
    )
    .map_err(|e| format!("a write after recovery failed: {e}"))?;
    drop(c);
    drop(db);
    let mut expected = state;
    expected.insert(id, (vector(id, 999), Some(payload(id, 999))));
    let last = recover(&disk.crash(damage), ids, policy, true)?;
    if last != expected {
        return Err(format!(
            "after a second crash: {last:?}, expected {expected:?}"
        ));
    }
    Ok(())
}

fn damages(point: u64) -> Vec<Damage> {
    let mut out = vec![Damage::DurableOnly, Damage::Everything];
    out.extend((0..3).map(|i| Damage::Seed(point * 1000 + i)));
    out
}

/// What goes wrong at one mutating disk operation of a workload.
#[derive(Debug, Clone, Copy)]
enum Disruption {
    /// The power is cut there.
    PowerCut,
    /// The operation fails with the fault (once, not sticky), the steps go on (a reopen
    /// included), and then the power is cut.
    Fault(Fault),
}

/// Runs `steps` once per mutating operation and disruption, disrupted at that operation,
/// and checks each recovery under several damages. Returns the number of disrupted runs and
/// recoveries checked. `KEELDB_SIM_POINT=<n>` runs only operation `n`, printing what it
/// issued.
fn enumerate_with(name: &str, steps: &[Step], ids: u64, disruptions: &[Disruption]) -> (u64, u64) {
    let clean = SimDisk::new();
    let full = run(&clean, steps, false);
    assert!(
        full.error.is_none(),
        "{name}: the workload fails undisrupted: {full:?}"
    );
    let total = clean.ops();
    let (mut runs, mut recoveries) = (0, 0);
    let only: Option<u64> = std::env::var("KEELDB_SIM_POINT")
        .ok()
        .and_then(|p| p.parse().ok());
    for &disruption in disruptions {
        for point in (1..=total).filter(|p| only.is_none_or(|o| o == *p)) {
            let disk = SimDisk::new();
            let (keep_going, what) = match disruption {
                Disruption::PowerCut => {
                    disk.crash_at(point);
                    (false, "power cut".to_owned())
                }
                Disruption::Fault(fault) => {
                    disk.fail_at(point, fault, false);
                    (true, format!("{fault:?} (then a power cut)"))
                }
            };
            let r = run(&disk, steps, keep_going);
            if only.is_some() {
                eprintln!(
                    "{what}: issued {:?}\nmust keep {} error {:?}",
                    r.issued, r.must_keep, r.error
                );
            }
            assert!(
                r.violations.is_empty(),
                "{name}: {what} at operation {point}: {:?}",
                r.violations
            );
            runs += 1;
            for (k, damage) in damages(point).into_iter().enumerate() {
                // Both policies: a crash alone must never need salvaging.
                let policy = match (point + k as u64) % 2 {
                    0 => RecoveryPolicy::Strict,
                    _ => RecoveryPolicy::Salvage,
                };
                if let Err(why) = check_recovery(&disk, damage, policy, &r, ids) {
                    panic!("{name}: {what} at operation {point} of {total}, {damage:?}, {policy:?}: {why}");
                }
                recoveries += 1;
            }
        }
    }
    (runs, recoveries)
}

/// Cuts the power at every mutating operation of `steps` (see [`enumerate_with`]).
fn enumerate(name: &str, steps: &[Step], ids: u64) -> (u64, u64) {
    enumerate_with(name, steps, ids, &[Disruption::PowerCut])
}

const F: Durability = Durability::Fsync;

fn puts(ids: std::ops::Range<u64>, tag: u32) -> Vec<Step> {
    ids.map(|i| Step::Put(vec![i], tag + i as u32, F)).collect()
}

#[test]
fn crash_at_every_operation_of_loads() {
    let (points, n) = enumerate("loads", &puts(0..8, 0), 9);
    println!("loads: {points} crash points, {n} recoveries");
}

#[test]
fn crash_at_every_operation_of_batches() {
    let steps = vec![
        Step::Put(vec![0, 1, 2], 2, F),
        Step::Put(vec![3, 4, 5, 6], 3, F),
        Step::Delete(vec![1, 4], F),
        Step::Put(vec![1, 2, 7], 4, F),
    ];
    let (points, n) = enumerate("batches", &steps, 9);
    println!("batches: {points} crash points, {n} recoveries");
}

#[test]
fn crash_at_every_operation_of_updates_and_deletes() {
    let mut steps = puts(0..4, 0);
    steps.extend([
        Step::Put(vec![1], 10, F),
        Step::SetPayload(1, Some(12), F),
        Step::SetPayload(2, None, F),
        Step::Delete(vec![0], F),
        Step::SetPayload(0, Some(2), F),
        Step::Put(vec![0], 14, F),
        Step::Delete(vec![3, 2], F),
    ]);
    let (points, n) = enumerate("updates and deletes", &steps, 9);
    println!("updates and deletes: {points} crash points, {n} recoveries");
}

#[test]
fn crash_at_every_operation_of_checkpoints_and_compaction() {
    let mut steps = puts(0..4, 0);
    steps.push(Step::Checkpoint);
    steps.extend(puts(0..4, 20));
    steps.push(Step::Compact);
    steps.extend([Step::Delete(vec![2], F), Step::Put(vec![5], 6, F)]);
    steps.push(Step::Checkpoint);
    let (points, n) = enumerate("checkpoints and compaction", &steps, 9);
    println!("checkpoints and compaction: {points} crash points, {n} recoveries");
}

#[test]
fn crash_at_every_operation_of_reopens() {
    let mut steps = puts(0..3, 0);
    steps.push(Step::Reopen);
    steps.extend([Step::Delete(vec![1], F), Step::Put(vec![4], 8, F)]);
    steps.push(Step::Reopen);
    steps.push(Step::Put(vec![1], 10, F));
    let (points, n) = enumerate("reopens", &steps, 9);
    println!("reopens: {points} crash points, {n} recoveries");
}

#[test]
fn crash_at_every_operation_of_group_commits() {
    // Writes queued together share one log write and one fsync: a power cut can tear that
    // write anywhere, yet only whole records of a prefix may come back.
    let mut steps = vec![Step::Burst((0..6).map(|i| (i, i as u32 * 2)).collect(), F)];
    steps.push(Step::Burst((3..9).map(|i| (i, 40 + i as u32)).collect(), F));
    steps.push(Step::Burst(
        (0..5).map(|i| (i, 60 + i as u32 * 2)).collect(),
        Durability::Flush,
    ));
    steps.push(Step::Put(vec![8], 80, F));
    let (points, n) = enumerate("group commits", &steps, 9);
    println!("group commits: {points} crash points, {n} recoveries");
}

#[test]
fn fault_at_every_operation_of_checkpoints_and_reopens() {
    // Each checkpoint empties the log, and the writes after it go over the old records; a
    // failed checkpoint (at any of its steps) is followed by a reopen on the same disk, which
    // sees what the failed steps left, durable or not, and by more writes.
    let mut steps = puts(0..3, 0);
    steps.extend([
        Step::Checkpoint,
        Step::Put(vec![0, 4], 10, Durability::None),
        Step::Put(vec![1], 12, Durability::Flush),
        Step::Put(vec![5], 14, F),
        Step::Checkpoint,
        Step::Put(vec![2], 16, Durability::None),
        Step::Checkpoint,
        Step::Reopen,
        Step::Put(vec![3], 18, Durability::Flush),
        Step::Put(vec![6, 0], 20, Durability::Flush),
        Step::Put(vec![7], 22, F),
    ]);
    let faults = [Fault::Eio, Fault::Enospc, Fault::SyncLosesData].map(Disruption::Fault);
    let (runs, n) = enumerate_with("checkpoints and reopens", &steps, 9, &faults);
    println!("faults in checkpoints and reopens: {runs} faulted runs, {n} recoveries");
}

/// A random workload of `len` steps over ids `0..ids`.
fn random_steps(rng: &mut fastrand::Rng, len: usize, ids: u64) -> Vec<Step> {
    let durability = |rng: &mut fastrand::Rng| match rng.u8(0..4) {
        0 => Durability::Flush,
        1 => Durability::None,
        _ => Durability::Fsync,
    };
    (0..len)
        .map(|i| match rng.u8(0..20) {
            0..=7 => {
                let n = rng.usize(1..4);
                let batch = (0..n).map(|_| rng.u64(0..ids - 1)).collect::<Vec<_>>();
                let mut batch = batch;
                batch.sort_unstable();
                batch.dedup();
                Step::Put(batch, i as u32, durability(rng))
            }
            8..=10 => Step::Delete(vec![rng.u64(0..ids - 1)], durability(rng)),
            11..=13 => {
                let tag = (rng.bool()).then_some(i as u32 * 2);
                Step::SetPayload(rng.u64(0..ids - 1), tag, durability(rng))
            }
            14 => Step::Flush,
            15 | 16 => Step::Checkpoint,
            17 => Step::Compact,
            18 => {
                let n = rng.usize(2..8);
                let writes = (0..n).map(|k| (rng.u64(0..ids - 1), (i * 10 + k) as u32));
                Step::Burst(writes.collect(), durability(rng))
            }
            _ => Step::Reopen,
        })
        .collect()
}

/// One seeded simulation: a random workload, a random power cut or fault, recovery
/// checked under a damage drawn from the same seed.
fn simulate(seed: u64) -> Result<Vec<u64>, String> {
    SCALED_THRESHOLD.set(seed % 2 == 1);
    let mut rng = fastrand::Rng::with_seed(seed);
    let ids = 10;
    let len = rng.usize(5..40);
    let steps = random_steps(&mut rng, len, ids);
    let clean = SimDisk::new();
    let full = run(&clean, &steps, false);
    if full.error.is_some() {
        return Err(format!("fails without faults: {:?}", full.error));
    }
    let total = clean.ops();
    let disk = SimDisk::new();
    let (keep_going, what) = match rng.u8(0..4) {
        0 => {
            let at = rng.u64(1..=total);
            disk.crash_at(at);
            (false, format!("power cut at {at}"))
        }
        kind => {
            let fault = match kind {
                1 => Fault::Eio,
                2 => Fault::Enospc,
                _ => Fault::SyncLosesData,
            };
            let (at, sticky) = (rng.u64(1..=total), rng.bool());
            disk.fail_at(at, fault, sticky);
            (true, format!("{fault:?} at {at}, sticky {sticky}"))
        }
    };
    let r = run(&disk, &steps, keep_going);
    if std::env::var("KEELDB_SIM_TRACE").is_ok() {
        eprintln!("steps: {steps:?}\nops without faults: {total}; {what}");
        eprintln!(
            "issued {:?}\nmust keep {} error {:?}",
            r.issued, r.must_keep, r.error
        );
    }
    if !r.violations.is_empty() {
        return Err(format!("{:?}", r.violations));
    }
    let damage = match rng.u8(0..4) {
        0 => Damage::DurableOnly,
        1 => Damage::Everything,
        _ => Damage::Seed(rng.u64(..)),
    };
    let damage = match std::env::var("KEELDB_SIM_DAMAGE").as_deref() {
        Ok("durable") => Damage::DurableOnly,
        Ok("all") => Damage::Everything,
        _ => damage,
    };
    let policy = match rng.bool() {
        true => RecoveryPolicy::Strict,
        false => RecoveryPolicy::Salvage,
    };
    check_recovery(&disk, damage, policy, &r, ids)
        .map_err(|why| format!("{what}, {damage:?}, {policy:?}: {why}"))?;
    Ok(r.ops_after)
}

#[test]
fn seeded_random_operations_and_faults() {
    let seeds: Vec<u64> = match std::env::var("KEELDB_SIM_SEED") {
        Ok(seed) => vec![seed.parse().expect("KEELDB_SIM_SEED is a number")],
        Err(_) => {
            let var = |name: &str, default: u64| {
                std::env::var(name)
                    .ok()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(default)
            };
            let (first, n) = (
                var("KEELDB_SIM_FIRST_SEED", 0),
                var("KEELDB_SIM_SEEDS", 300),
            );
            (first..first.saturating_add(n)).collect()
        }
    };
    let mut failures = Vec::new();
    for (i, &seed) in seeds.iter().enumerate() {
        match simulate(seed) {
            Err(why) => failures.push(format!(
                "seed {seed} (replay: KEELDB_SIM_SEED={seed} npm run test:sim): {why}"
            )),
            // Replaying a seed must give the very same run, down to the disk operation.
            Ok(ops) if i < 20 => {
                if simulate(seed).ok().as_ref() != Some(&ops) {
                    failures.push(format!("seed {seed} does not replay exactly"));
                }
            }
            Ok(_) => {}
        }
    }
    println!("simulated {} seeds", seeds.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn bit_flips_in_durable_bytes_give_a_typed_error_or_a_consistent_state() {
    // A disk that flips a bit in what it had made durable: every open either refuses with a
    // typed error or opens, and then every read works and a write is accepted or refused
    // with a typed error. (Which writes survive a flip is the recovery policy's business,
    // checked in tests/recovery_corruption.rs.)
    let mut steps = puts(0..6, 0);
    steps.extend([
        Step::Checkpoint,
        Step::Put(vec![2, 3], 30, F),
        Step::Delete(vec![1], F),
    ]);
    let disk = SimDisk::new();
    let r = run(&disk, &steps, false);
    assert!(r.error.is_none(), "{r:?}");
    let image = disk.crash(Damage::DurableOnly);
    let files = image.files(Path::new(DB)).expect("files");
    let mut rng = fastrand::Rng::with_seed(7);
    let (mut opened, mut refused) = (0, 0);
    for (path, bytes) in files.iter().filter(|(_, b)| !b.is_empty()) {
        for _ in 0..40 {
            let flipped = image.crash(Damage::DurableOnly);
            let offset = rng.u64(0..bytes.len() as u64);
            flipped.flip_bit(path, offset, rng.u8(0..8)).expect("flip");
            for policy in [RecoveryPolicy::Salvage, RecoveryPolicy::Strict] {
                let options = DbOptions {
                    recovery: policy,
                    ..options()
                };
                match Db::open_in(
                    flipped.crash(Damage::DurableOnly).vfs(),
                    Path::new(DB),
                    options,
                ) {
                    Ok(db) => {
                        opened += 1;
                        let c = db.collection(NAME).expect("the collection is listed");
                        for id in 0..8 {
                            // A damaged payload frame is found when it is read.
                            if let Err(e) = c.get_record(&Id::Int(id), true, true) {
                                assert_eq!(e.code(), "KEEL_CORRUPT", "{path:?} @ {offset}: {e}");
                            }
                        }
                        let write = c.upsert(&[Id::Int(9)], &[1.0, 2.0, 3.0], Some(F));
                        if let Err(e) = write {
                            assert!(
                                ["KEEL_IO", "KEEL_CORRUPT", "KEEL_POISONED"].contains(&e.code())
                            );
                        }
                    }
                    Err(e) => {
                        refused += 1;
                        let typed = ["KEEL_CORRUPT", "KEEL_UNSUPPORTED_VERSION", "KEEL_IO"];
                        assert!(typed.contains(&e.code()), "{path:?} @ {offset}: {e}");
                    }
                }
            }
        }
    }
    println!("bit flips: {opened} opens, {refused} typed refusals");
    assert!(
        opened > 0 && refused > 0,
        "flips both tolerated and refused"
    );
}
