//! An `fsync` group logs the group queued behind it between its early answers and its
//! apply, so that the disk writes the next group's records meanwhile, and the committer
//! finishes that group next under the same hold of the writer lock
//! (`Collection::commit_group`). These tests queue the next group from a completion of the
//! first, which runs right after the first group's sync: the second group is then queued
//! exactly when the committer looks for one. The simulated-disk tests (`sim_crash.rs`,
//! whose bursts queue their second half the same way) check what a crash leaves.
//!
//! Needs the `planted-bugs` feature (its fault injection and event observer); `npm test`
//! runs it that way, one test at a time (both are process-wide).
#![cfg(feature = "planted-bugs")]

mod common;

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use common::{big_payload, create, open_ok, NAME};
use keeldb_core::collection::CHAIN_GROUPS_MAX;
use keeldb_core::format::vectors::VECTORS_HEADER_LEN;
use keeldb_core::planted::{self, inject, EventKind, Fault};
use keeldb_core::storage::vectors::INITIAL_BYTES;
use keeldb_core::{Collection, Db, DbOptions, Durability, Id, Metric, PreparedBatch, Result};

type Outcome = (String, Result<u64>);

/// Pushes `label` to `seen` at each log write, until `planted::stop_observing`.
fn record_log_writes(seen: &Arc<Mutex<Vec<String>>>, label: &'static str) {
    let seen = Arc::clone(seen);
    planted::observe(move |event| {
        if event.kind == EventKind::Write {
            seen.lock().expect("lock").push(label.into());
        }
    });
}

/// Queues an upsert of `id` at `durability`; its outcome goes to `tx` under `label`, then
/// `then` runs (on the committer thread).
fn upsert(
    c: &Collection,
    id: u64,
    vector: &[f32],
    durability: Durability,
    label: &str,
    tx: &mpsc::Sender<Outcome>,
    then: impl FnOnce() + Send + 'static,
) {
    let batch = c.prepare_upsert(&[Id::Int(id)], vector).expect("valid");
    let (tx, label) = (tx.clone(), label.to_owned());
    let done = move |r| {
        tx.send((label, r)).unwrap_or(());
        then();
    };
    c.submit(batch, Some(durability), Box::new(done));
}

/// Submits `a` at `fsync`; the answer of A, which comes before A is applied, injects `fault`
/// and queues B (`queue_b`, given the collection and the outcomes' sender). Returns A's
/// outcome and B's, with the fault lifted.
fn a_then_b_under(
    c: &Arc<Collection>,
    a: Option<PreparedBatch>,
    fault: Fault,
    queue_b: impl FnOnce(&Collection, &mpsc::Sender<Outcome>) + Send + 'static,
) -> [Outcome; 2] {
    let (tx, rx) = mpsc::channel::<Outcome>();
    let c2 = Arc::clone(c);
    let a_done = move |r| {
        tx.send(("A".into(), r)).unwrap_or(());
        inject(Some(fault));
        queue_b(&c2, &tx);
    };
    c.submit(a, Some(Durability::Fsync), Box::new(a_done));
    let outcomes: Vec<Outcome> = rx.iter().collect();
    inject(None);
    let [a, b]: [Outcome; 2] = outcomes.try_into().expect("two outcomes");
    assert_eq!((a.0.as_str(), b.0.as_str()), ("A", "B"));
    [a, b]
}

/// An upsert of 9, then group A (an upsert of 1 and a delete of 9) queued from its answer,
/// then group B (`b_records` upserts in one batch, at `b_durability`) queued from the
/// answer of A's upsert. Each upsert is answered right after its group's sync, before the
/// group is applied, so the next group is queued exactly when the committer looks for one;
/// A's delete is answered after A is applied. With `waiter`, the answer of A's upsert first
/// starts a thread that waits for the writer lock (`stats`). Returns what happened in what
/// order, log writes included; checks the outcomes, and that a reopen after a crash finds
/// them.
fn nine_a_b(b_records: u64, b_durability: Durability, waiter: bool) -> Vec<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create(dir.path(), 2);
    let b_ids: Vec<Id> = (100..100 + b_records).map(Id::Int).collect();
    let b = c
        .prepare_upsert(&b_ids, &vec![2.0; b_ids.len() * 2])
        .expect("valid");
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let stats_thread = Arc::new(Mutex::new(None));
    let (tx, rx) = mpsc::channel::<Outcome>();
    let queue_b = {
        let (c, tx, seen) = (Arc::clone(&c), tx.clone(), Arc::clone(&seen));
        let stats_thread = Arc::clone(&stats_thread);
        move || {
            seen.lock().expect("lock").push("A upsert answered".into());
            if waiter {
                let (started_tx, started) = mpsc::channel();
                let c = Arc::clone(&c);
                *stats_thread.lock().expect("lock") = Some(std::thread::spawn(move || {
                    started_tx.send(()).unwrap_or(());
                    c.stats().expect("stats").count
                }));
                started.recv().expect("started");
                // Long enough for it to be waiting for the lock this thread holds.
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            c.submit(
                b,
                Some(b_durability),
                Box::new(move |r| {
                    seen.lock().expect("lock").push("B answered".into());
                    tx.send(("B".into(), r)).unwrap_or(());
                }),
            );
        }
    };
    let queue_a = {
        let (c, tx, seen) = (Arc::clone(&c), tx.clone(), Arc::clone(&seen));
        let a = c.prepare_upsert(&[Id::Int(1)], &[1.0, 1.0]).expect("valid");
        let delete = c.prepare_delete(&[Id::Int(9)]).expect("valid");
        move || {
            let (a_tx, delete_tx) = (tx.clone(), tx);
            let a_done = move |r| {
                a_tx.send(("A upsert".into(), r)).unwrap_or(());
                queue_b();
            };
            let delete_done = move |r| {
                seen.lock().expect("lock").push("A delete answered".into());
                delete_tx.send(("A delete".into(), r)).unwrap_or(());
            };
            c.submit(a, Some(Durability::Fsync), Box::new(a_done));
            c.submit(delete, Some(Durability::Fsync), Box::new(delete_done));
        }
    };
    record_log_writes(&seen, "log write");
    let nine = c.prepare_upsert(&[Id::Int(9)], &[9.0, 9.0]).expect("valid");
    let nine_tx = tx.clone();
    let nine_done = move |r| {
        nine_tx.send(("9".into(), r)).unwrap_or(());
        queue_a();
    };
    c.submit(nine, Some(Durability::Fsync), Box::new(nine_done));
    drop(tx);
    let outcomes: Vec<Outcome> = rx.iter().collect();
    planted::stop_observing();
    let outcomes: Vec<(&str, u64)> = outcomes
        .iter()
        .map(|(label, r)| (label.as_str(), *r.as_ref().expect(label)))
        .collect();
    assert_eq!(
        outcomes,
        [("9", 0), ("A upsert", 0), ("A delete", 1), ("B", 0)]
    );
    if let Some(thread) = stats_thread.lock().expect("lock").take() {
        thread.join().expect("stats");
    }
    let stats = c.stats().expect("stats");
    assert_eq!(stats.group_commits, 3); // 9, A, B
    drop(c);
    drop(db); // a crash: the log has every group
    let db = open_ok(dir.path());
    let c = db.collection(NAME).expect("collection");
    assert_eq!(c.stats().expect("stats").count, 1 + b_records);
    assert_eq!(c.get(&Id::Int(1)).expect("get"), Some(vec![1.0, 1.0]));
    assert_eq!(c.get(&Id::Int(100)).expect("get"), Some(vec![2.0, 2.0]));
    assert_eq!(c.get(&Id::Int(9)).expect("get"), None);
    db.close().expect("close");
    let seen = seen.lock().expect("lock").clone();
    seen
}

/// The order when B is logged after A is applied (A is logged while 9 is applied).
const B_AFTER_A: [&str; 6] = [
    "log write",
    "log write",
    "A upsert answered",
    "A delete answered",
    "log write",
    "B answered",
];

#[test]
fn the_next_group_is_logged_before_the_group_before_it_is_applied() {
    // A's log write comes right after 9's, and B's between A's early and late answers.
    let expected = [
        "log write",
        "log write",
        "A upsert answered",
        "log write",
        "A delete answered",
        "B answered",
    ];
    assert_eq!(nine_a_b(1, Durability::Fsync, false), expected);
    // A group that does not sync itself is logged behind one that does all the same.
    assert_eq!(nine_a_b(1, Durability::Flush, false), expected);
}

#[test]
fn a_group_of_over_a_mib_is_logged_after_the_group_before_it_is_applied() {
    // Readers wait for a log write made while a group is applied: a large one waits its turn.
    let b_records = 100_000;
    let b_ids: Vec<Id> = (0..b_records).map(Id::Int).collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let (_db, c) = create(dir.path(), 2);
    let b = c.prepare_upsert(&b_ids, &vec![2.0; b_ids.len() * 2]);
    let bytes = b.expect("valid").expect("a batch").body_len();
    assert!(bytes > 1 << 20, "B is {bytes} bytes");
    assert_eq!(nine_a_b(b_records, Durability::Fsync, false), B_AFTER_A);
}

#[test]
fn a_chain_stops_for_a_thread_waiting_for_the_writer_lock() {
    // A `stats` call (or a checkpoint, a payload update, close) waits for the writer lock,
    // which the committer holds through a chain: it gets the lock after A, not after B.
    assert_eq!(nine_a_b(1, Durability::Fsync, true), B_AFTER_A);
}

#[test]
fn a_group_logged_while_the_one_before_is_applied_reserves_room_for_both() {
    // Group A fills the vector file exactly; B, queued from A's answer, needs it to grow, and
    // growing fails. Room for B is reserved (on top of A's slots, not taken yet when B is
    // logged) before B is logged, so B fails without reaching the log: a reopen does not
    // bring it back.
    let dir = tempfile::tempdir().expect("tempdir");
    let dimension = 16_384; // 64 KiB slots: the initial file holds 255 of them
    let capacity = (INITIAL_BYTES as usize - VECTORS_HEADER_LEN) / (dimension * 4);
    let (db, c) = create(dir.path(), dimension as u32);
    let ids: Vec<Id> = (0..capacity as u64).map(Id::Int).collect();
    let vectors = vec![0.5f32; capacity * dimension];
    let a = c.prepare_upsert(&ids, &vectors).expect("valid");
    let [a, b] = a_then_b_under(&c, a, Fault::VectorGrowEnospc, move |c, tx| {
        upsert(
            c,
            1_000,
            &vec![1.0; dimension],
            Durability::Fsync,
            "B",
            tx,
            || {},
        );
    });
    assert_eq!(*a.1.as_ref().expect("A is stored"), 0);
    let err = b.1.as_ref().expect_err("the file cannot grow");
    assert_eq!(err.code(), "KEEL_IO", "{err}");
    assert!(c.stats().expect("stats").poisoned);
    drop(c);
    db.close().expect_err("the collection is poisoned");
    let db = open_ok(dir.path());
    let c = db.collection(NAME).expect("collection");
    assert_eq!(
        c.stats().expect("stats").count,
        capacity as u64,
        "B was never logged"
    );
    assert_eq!(c.get(&Id::Int(1_000)).expect("get"), None);
    db.close().expect("close");
}

#[test]
fn a_group_logged_behind_one_that_fails_to_apply_fails_too() {
    // A's upsert is answered before A is applied; its completion makes payload writes fail
    // and queues B, so A's apply fails after B is logged. A stays acknowledged (reads
    // refuse until a reopen replays it). B is not applied past that failure and not
    // acknowledged: it fails with A's error, KEEL_IO, since it is in the log, and a reopen
    // replays both.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create(dir.path(), 2);
    let p = big_payload(1, 0); // written by its own group, not left buffered
    let a = c
        .prepare_upsert_with_payloads(&[Id::Int(1)], &[1.0, 1.0], &[Some(&p)])
        .expect("valid");
    let [a, b] = a_then_b_under(&c, a, Fault::PayloadWriteEio, |c, tx| {
        upsert(c, 2, &[2.0, 2.0], Durability::Fsync, "B", tx, || {});
    });
    assert_eq!(*a.1.as_ref().expect("A is acknowledged"), 0);
    let err = b.1.as_ref().expect_err("B is not applied");
    assert_eq!(err.code(), "KEEL_IO", "{err}");
    let read = c
        .get(&Id::Int(1))
        .expect_err("A is acknowledged and not applied");
    assert_eq!(read.code(), "KEEL_POISONED", "{read}");
    drop(c);
    db.close().expect_err("the collection is poisoned");
    let db = open_ok(dir.path());
    let c = db.collection(NAME).expect("collection");
    assert_eq!(c.get(&Id::Int(1)).expect("get"), Some(vec![1.0, 1.0]));
    assert_eq!(c.get(&Id::Int(2)).expect("get"), Some(vec![2.0, 2.0]));
    db.close().expect("close");
}

#[test]
fn a_chained_group_whose_sync_fails_is_not_acknowledged() {
    // B is logged while A is applied, then its own sync fails: A stays acknowledged and
    // applied (reads go on), B fails with KEEL_IO, and the collection refuses writes.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create(dir.path(), 2);
    let a = c.prepare_upsert(&[Id::Int(1)], &[1.0, 1.0]).expect("valid");
    let [a, b] = a_then_b_under(&c, a, Fault::LogSyncEio, |c, tx| {
        upsert(c, 2, &[2.0, 2.0], Durability::Fsync, "B", tx, || {});
    });
    assert_eq!(*a.1.as_ref().expect("A is acknowledged"), 0);
    let err = b.1.as_ref().expect_err("B's sync failed");
    assert_eq!(err.code(), "KEEL_IO", "{err}");
    assert!(err.to_string().contains("fdatasync"), "{err}");
    assert_eq!(
        c.get(&Id::Int(1)).expect("A is applied"),
        Some(vec![1.0, 1.0])
    );
    assert_eq!(c.get(&Id::Int(2)).expect("B is not"), None);
    let refused = c.upsert(&[Id::Int(3)], &[3.0, 3.0], None);
    assert_eq!(refused.expect_err("poisoned").code(), "KEEL_POISONED");
    drop(c);
    db.close().expect_err("the collection is poisoned");
}

#[test]
fn a_due_checkpoint_is_not_put_off_by_a_chain_of_groups() {
    // Each write's answer queues the next, so every group finds the next one queued; with a
    // tiny threshold every group also makes a checkpoint due, and the chain stops for it
    // each time rather than run on (up to 16 groups) with the log past its threshold.
    let dir = tempfile::tempdir().expect("tempdir");
    let options = DbOptions {
        checkpoint_threshold_bytes: 1,
        checkpoint_scales_with_index: false,
        ..DbOptions::default()
    };
    let db = Db::open(dir.path(), options).expect("open");
    let c = db
        .create_collection(NAME, 2, Metric::Euclidean)
        .expect("create");
    let writes = 12u64;
    let before = c.stats().expect("stats").checkpoints;
    let (tx, rx) = mpsc::channel::<Outcome>();
    fn relay(c: Arc<Collection>, n: u64, last: u64, tx: mpsc::Sender<Outcome>) {
        let (c2, tx2) = (Arc::clone(&c), tx.clone());
        let next = move || {
            if n < last {
                relay(c2, n + 1, last, tx2);
            }
        };
        upsert(&c, n, &[n as f32, 0.0], Durability::Fsync, "w", &tx, next);
    }
    relay(Arc::clone(&c), 0, writes - 1, tx);
    let outcomes: Vec<Outcome> = rx.iter().collect();
    assert_eq!(outcomes.len() as u64, writes);
    assert!(outcomes.iter().all(|(_, r)| r.is_ok()), "{outcomes:?}");
    let stats = c.stats().expect("stats");
    assert_eq!(stats.count, writes);
    assert_eq!(stats.checkpoints - before, writes, "one after each group");
    drop(c);
    db.close().expect("close");
}

#[test]
fn a_chain_ends_after_chain_groups_max_groups() {
    // Group k is an upsert of k and a delete (answered once the group is applied); the
    // upsert's answer, which comes before the apply, queues group k + 1. Within a chain the
    // next group's log write comes between those two answers; after CHAIN_GROUPS_MAX
    // groups the chain ends, so that group is applied and answered before the next is
    // logged, and a new chain starts.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create(dir.path(), 2);
    let groups = 2 * CHAIN_GROUPS_MAX as u64 + 8;
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let (tx, rx) = mpsc::channel::<Outcome>();
    fn group(
        c: Arc<Collection>,
        k: u64,
        last: u64,
        tx: mpsc::Sender<Outcome>,
        seen: Arc<Mutex<Vec<String>>>,
    ) {
        let (c2, tx2, seen2) = (Arc::clone(&c), tx.clone(), Arc::clone(&seen));
        let upserted = move || {
            seen2.lock().expect("lock").push(format!("u{k}"));
            if k < last {
                group(c2, k + 1, last, tx2, seen2);
            }
        };
        upsert(
            &c,
            k,
            &[k as f32, 0.0],
            Durability::Fsync,
            "u",
            &tx,
            upserted,
        );
        let delete = c.prepare_delete(&[Id::Int(1_000_000 + k)]).expect("valid");
        let done = move |r| {
            seen.lock().expect("lock").push(format!("d{k}"));
            tx.send(("d".into(), r)).unwrap_or(());
        };
        c.submit(delete, Some(Durability::Fsync), Box::new(done));
    }
    record_log_writes(&seen, "log");
    group(Arc::clone(&c), 0, groups - 1, tx, Arc::clone(&seen));
    let outcomes: Vec<Outcome> = rx.iter().collect();
    planted::stop_observing();
    assert_eq!(outcomes.len() as u64, 2 * groups);
    assert!(outcomes.iter().all(|(_, r)| r.is_ok()), "{outcomes:?}");
    let seen = seen.lock().expect("lock").clone();
    let logs: Vec<usize> = (0..seen.len()).filter(|&i| seen[i] == "log").collect();
    assert_eq!(logs.len() as u64, groups, "{seen:?}");
    let deleted = |k: u64| {
        seen.iter()
            .position(|e| *e == format!("d{k}"))
            .expect("answered")
    };
    let chained: Vec<u64> = (0..groups - 1)
        .filter(|&k| logs[k as usize + 1] < deleted(k))
        .collect();
    let expected: Vec<u64> = (0..groups - 1)
        .filter(|k| (k + 1) % CHAIN_GROUPS_MAX as u64 != 0)
        .collect();
    assert_eq!(chained, expected, "{seen:?}");
    assert_eq!(c.stats().expect("stats").group_commits, groups);
    drop(c);
    db.close().expect("close");
}
