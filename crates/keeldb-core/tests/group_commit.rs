//! Group commit: writes queued together share log writes and syncs, every one is completed
//! exactly once, and none is lost or reordered.

mod common;

use std::sync::mpsc;
use std::sync::Arc;

use common::{create, open_ok, NAME};
use keeldb_core::{Collection, Durability, Id, Result};

/// Queues one single-record upsert per `(id, vector)` through the non-blocking door without
/// waiting, then returns a receiver of their outcomes (closed once all have completed).
fn submit_all(
    c: &Arc<Collection>,
    records: impl IntoIterator<Item = (Id, Vec<f32>)>,
    durability: Durability,
) -> mpsc::Receiver<Result<u64>> {
    let (tx, rx) = mpsc::channel();
    for (id, vector) in records {
        let batch = c.prepare_upsert(&[id], &vector).expect("valid batch");
        let tx = tx.clone();
        c.submit(
            batch,
            Some(durability),
            Box::new(move |r| tx.send(r).unwrap_or(())),
        );
    }
    rx
}

/// Reopens `dir` and returns how many records collection [`NAME`] holds.
fn count_after_reopen(dir: &std::path::Path) -> u64 {
    let db = open_ok(dir);
    let count = db
        .collection(NAME)
        .expect("c")
        .stats()
        .expect("stats")
        .count;
    db.close().expect("close");
    count
}

#[test]
fn a_burst_of_fsync_writes_shares_syncs_and_every_one_lands() {
    // 64 writes issued without awaiting each other complete once each, all durable, with
    // far fewer fsyncs than writes.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create(dir.path(), 2);
    let before = c.stats().expect("stats");
    let records = (0..64u64).map(|i| (Id::Int(i), vec![i as f32, -(i as f32)]));
    let outcomes: Vec<_> = submit_all(&c, records, Durability::Fsync).iter().collect();
    assert_eq!(outcomes.len(), 64);
    assert!(outcomes.iter().all(|r| r.is_ok()), "{outcomes:?}");
    let after = c.stats().expect("stats");
    let records = after.wal_records - before.wal_records;
    let syncs = after.wal_syncs - before.wal_syncs;
    assert_eq!(records, 64);
    assert!(
        after.group_commits - before.group_commits <= 16 && syncs <= 16,
        "64 queued writes took {} groups and {syncs} syncs",
        after.group_commits - before.group_commits
    );
    drop(c);
    drop(db); // a crash: only the log has the writes
    let db = open_ok(dir.path());
    let c = db.collection(NAME).expect("collection");
    for i in 0..64u64 {
        assert_eq!(
            c.get(&Id::Int(i)).expect("get"),
            Some(vec![i as f32, -(i as f32)])
        );
    }
    db.close().expect("close");
}

#[test]
fn writes_of_one_caller_apply_in_the_order_issued() {
    // Overwrites of one id queued back to back leave the last one, before and after replay.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create(dir.path(), 2);
    let versions = (0..50u32).map(|v| (Id::from("x"), vec![v as f32, 0.0]));
    assert!(submit_all(&c, versions, Durability::Flush)
        .iter()
        .all(|r| r.is_ok()));
    assert_eq!(c.get(&Id::from("x")).expect("get"), Some(vec![49.0, 0.0]));
    drop(c);
    drop(db);
    let db = open_ok(dir.path());
    let c = db.collection(NAME).expect("collection");
    assert_eq!(c.get(&Id::from("x")).expect("get"), Some(vec![49.0, 0.0]));
    db.close().expect("close");
}

#[test]
fn flush_is_a_barrier_for_writes_still_queued() {
    // Writes queued with durability none, then flush: after flush returns and a crash, all
    // of them are there.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create(dir.path(), 2);
    let rx = submit_all(
        &c,
        (0..20u64).map(|i| (Id::Int(i), vec![1.0, 2.0])),
        Durability::None,
    );
    c.flush().expect("flush");
    assert_eq!(rx.iter().filter(|r| r.is_ok()).count(), 20);
    drop(c);
    drop(db);
    assert_eq!(count_after_reopen(dir.path()), 20);
}

#[test]
fn close_commits_what_is_queued_and_later_writes_are_refused() {
    // Closing waits for queued writes (they succeed and survive), then refuses new ones.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create(dir.path(), 2);
    let rx = submit_all(
        &c,
        (0..30u64).map(|i| (Id::Int(i), vec![0.5, 0.5])),
        Durability::Fsync,
    );
    db.close().expect("close");
    assert_eq!(rx.iter().filter(|r| r.is_ok()).count(), 30);
    let late = c.upsert(&[Id::Int(99)], &[0.0, 0.0], None);
    assert_eq!(late.err().map(|e| e.code()), Some("KEEL_CLOSED"));
    assert_eq!(count_after_reopen(dir.path()), 30);
}

#[test]
fn threads_writing_at_once_each_get_their_own_outcome() {
    // Eight threads writing fsync'd batches concurrently: every write lands exactly once.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create(dir.path(), 2);
    let handles: Vec<_> = (0..8u64)
        .map(|t| {
            let c = Arc::clone(&c);
            std::thread::spawn(move || {
                for i in 0..25u64 {
                    let id = Id::Int(t * 1000 + i);
                    c.upsert(&[id], &[t as f32, i as f32], None)
                        .expect("upsert");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("thread");
    }
    let stats = c.stats().expect("stats");
    assert_eq!((stats.count, stats.wal_records), (200, 200));
    assert!(stats.wal_syncs <= stats.group_commits + 1, "{stats:?}");
    db.close().expect("close");
}

#[test]
fn stats_time_the_committer_and_count_the_writes_queued_behind_each_group() {
    // The first write's completion queues two more (it runs on the committer thread, after
    // its group is answered), so when that group ends two writes wait behind it.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create(dir.path(), 2);
    let before = c.stats().expect("stats").commit_times;
    let (tx, rx) = mpsc::channel();
    let follow_ups = {
        let (c, tx) = (Arc::clone(&c), tx.clone());
        move |outcome: Result<u64>| {
            tx.send(outcome).unwrap_or(());
            for i in 1..3u64 {
                let batch = c.prepare_upsert(&[Id::Int(i)], &[1.0, 0.0]).expect("valid");
                let tx = tx.clone();
                c.submit(
                    batch,
                    Some(Durability::Fsync),
                    Box::new(move |r| tx.send(r).unwrap_or(())),
                );
            }
        }
    };
    let first = c.prepare_upsert(&[Id::Int(0)], &[0.0, 1.0]).expect("valid");
    c.submit(first, Some(Durability::Fsync), Box::new(follow_ups));
    drop(tx);
    let outcomes: Vec<_> = rx.iter().collect();
    assert_eq!(outcomes.len(), 3);
    assert!(outcomes.iter().all(|r| r.is_ok()), "{outcomes:?}");
    let after = c.stats().expect("stats").commit_times;
    assert!(
        after.queued_at_group_end >= before.queued_at_group_end + 2,
        "{before:?} -> {after:?}"
    );
    assert!(after.log_nanos > before.log_nanos, "{after:?}");
    assert!(after.apply_nanos > before.apply_nanos, "{after:?}");
    assert!(after.answer_nanos > before.answer_nanos, "{after:?}");
    drop(c);
    db.close().expect("close");
}

#[test]
fn a_completion_that_panics_harms_no_other_write() {
    // A caller's callback that panics is the caller's bug: the other write of its group is
    // still answered, and the committer goes on.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create(dir.path(), 2);
    let (tx, rx) = mpsc::channel();
    let first = c.prepare_upsert(&[Id::Int(1)], &[1.0, 2.0]).expect("valid");
    c.submit_quiet(
        first,
        None,
        Box::new(|_| panic!("a caller's callback panics (this test's planted fault)")),
    );
    let second = c.prepare_upsert(&[Id::Int(2)], &[3.0, 4.0]).expect("valid");
    c.submit_quiet(second, None, Box::new(move |r| tx.send(r).unwrap_or(())));
    c.wake_committer();
    let answer = rx.recv_timeout(std::time::Duration::from_secs(10));
    assert!(matches!(answer, Ok(Ok(_))), "{answer:?}");
    c.upsert(&[Id::Int(3)], &[5.0, 6.0], None)
        .expect("a later write");
    assert_eq!(c.stats().expect("stats").count, 3);
    drop(c);
    db.close().expect("close");
}

#[test]
fn a_read_issued_the_moment_a_write_is_answered_sees_it() {
    // An upsert at `flush` or `fsync` is answered as soon as its group is logged, before it
    // is applied; the committer takes the state lock first, so a read that follows the
    // answer waits for the apply. A reader thread spins on each answer and reads at once,
    // racing the apply.
    for durability in [Durability::Flush, Durability::Fsync] {
        read_right_after_each_answer(durability);
    }
}

fn read_right_after_each_answer(durability: Durability) {
    use std::sync::atomic::{AtomicU64, Ordering};
    const WRITES: u64 = 300;
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create(dir.path(), 2);
    let answered = Arc::new(AtomicU64::new(0)); // 1 + the id last answered
    let checked = Arc::new(AtomicU64::new(0)); // 1 + the id the reader last read
    let reader = {
        let (c, answered, checked) = (Arc::clone(&c), Arc::clone(&answered), Arc::clone(&checked));
        std::thread::spawn(move || {
            let mut missed = Vec::new();
            while checked.load(Ordering::Relaxed) < WRITES {
                let n = answered.load(Ordering::Acquire);
                if n == checked.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                    continue;
                }
                match c.get(&Id::Int(n - 1)) {
                    Ok(Some(_)) => {}
                    other => missed.push((n - 1, other.map_err(|e| e.code()))),
                }
                checked.store(n, Ordering::Release);
            }
            missed
        })
    };
    for n in 0..WRITES {
        let batch = c
            .prepare_upsert(&[Id::Int(n)], &[n as f32, 1.0])
            .expect("valid");
        let answered = Arc::clone(&answered);
        let (tx, rx) = mpsc::sync_channel(1);
        c.submit(
            batch,
            Some(durability),
            Box::new(move |r| {
                answered.store(n + 1, Ordering::Release);
                tx.send(r).unwrap_or(());
            }),
        );
        assert_eq!(rx.recv().expect("answered").ok(), Some(0));
        while checked.load(Ordering::Acquire) <= n {
            std::hint::spin_loop();
        }
    }
    let missed = reader.join().expect("reader");
    assert!(
        missed.is_empty(),
        "{durability:?}: answered but not readable: {missed:?}"
    );
    drop(c);
    db.close().expect("close");
}

#[test]
fn a_completion_may_queue_an_empty_write() {
    // Completions of upserts run while the committer holds the writer lock; an empty write
    // (which checks the collection is usable) queued from one is answered after that group
    // instead of waiting for the lock its own thread holds.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create(dir.path(), 2);
    let (tx, rx) = mpsc::channel();
    let inner = Arc::clone(&c);
    let batch = c.prepare_upsert(&[Id::Int(1)], &[1.0, 0.0]).expect("valid");
    c.submit(
        batch,
        Some(Durability::Flush),
        Box::new(move |outer| {
            let tx = tx.clone();
            tx.send(outer).unwrap_or(());
            inner.submit(None, None, Box::new(move |r| tx.send(r).unwrap_or(())));
        }),
    );
    let answers: Vec<_> = (0..2)
        .map(|_| rx.recv_timeout(std::time::Duration::from_secs(10)))
        .collect();
    if answers.iter().any(Result::is_err) {
        // Dropping the handles would join a committer that waits for itself.
        std::mem::forget(c);
        std::mem::forget(db);
        panic!("the committer waits for itself: {answers:?}");
    }
    let answers: Vec<_> = answers
        .into_iter()
        .map(|a| a.expect("answer").ok())
        .collect();
    assert_eq!(answers, [Some(0), Some(0)]);
    drop(c);
    db.close().expect("close");
}

#[test]
fn an_empty_write_is_answered_with_no_lock_held() {
    // An empty write is answered at once on the caller's thread: its completion may read
    // the collection (`stats` takes the writer lock), and one that panics harms nothing.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create(dir.path(), 2);
    let (tx, rx) = mpsc::channel();
    let caller = {
        let c = Arc::clone(&c);
        std::thread::spawn(move || {
            let inner = Arc::clone(&c);
            c.submit(
                None,
                None,
                Box::new(move |r| tx.send((r.ok(), inner.stats().is_ok())).unwrap_or(())),
            );
            c.submit(None, None, Box::new(|_| panic!("the caller's bug")));
        })
    };
    let answer = rx.recv_timeout(std::time::Duration::from_secs(10));
    if answer.is_err() {
        std::mem::forget(c);
        std::mem::forget(db);
        panic!("the completion waits for a lock its own call holds");
    }
    assert_eq!(answer.expect("answer"), (Some(0), true));
    caller.join().expect("a completion's panic is contained");
    c.upsert(&[Id::Int(1)], &[1.0, 0.0], None)
        .expect("the collection still takes writes");
    drop(c);
    db.close().expect("close");
}

#[test]
fn stats_count_payload_updates_as_records_and_barriers_as_nothing() {
    // `walRecords` counts every log record, so `walSyncs / walRecords` is fsyncs per write
    // for payload updates too; a `flush` barrier logs nothing and is no group commit.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create(dir.path(), 2);
    c.upsert(&[Id::Int(1)], &[1.0, 0.0], None).expect("upsert");
    let before = c.stats().expect("stats");
    assert!(c
        .update_payload(&Id::Int(1), Some(br#"{"a":1}"#), false, None)
        .expect("update"));
    assert!(c
        .update_payload(&Id::Int(1), Some(br#"{"b":2}"#), true, None)
        .expect("merge"));
    c.flush().expect("flush");
    let after = c.stats().expect("stats");
    let counted = (
        after.wal_records - before.wal_records,
        after.group_commits - before.group_commits,
        after.wal_syncs - before.wal_syncs,
    );
    assert_eq!(counted, (2, 2, 2), "records, groups, syncs");
    drop(c);
    db.close().expect("close");
}
