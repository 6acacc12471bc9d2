//! A group that syncs (`fsync`) writes its vectors (into slots no reader sees) after its
//! records are logged and before any of its writes is answered, while the log's sync runs
//! (when no reader holds the state lock, as in these tests).
//! A batch whose vectors cannot be written then fails with KEEL_IO and is applied in no
//! part: the collection is poisoned (later writes refused), reads go on without it, and
//! reopening replays it from the log, which holds it (KEEL_IO: it may be there or not). A
//! group commit's vectors are written together, so a failed write fails the whole group.
//! A group that does not sync writes its vectors after its early answers: an upsert at
//! `flush` stays acknowledged (reads refuse until a reopen replays it), one at `none` is not
//! answered early and fails.
//!
//! Needs the `planted-bugs` feature (its fault injection); `npm test` runs it that way, one
//! test at a time (the fault is process-wide).
#![cfg(feature = "planted-bugs")]

mod common;

use common::{
    code, create, ids, open_ok, payload, put_with_payloads, submit_failing_groups, vector, NAME,
};
use keeldb_core::planted::{busy_state_lock, inject, inject_after, Fault};
use keeldb_core::{Collection, Durability, Id};

/// The vector and payload of `n`, or `None` if absent.
fn record(c: &Collection, n: u64) -> Option<(Vec<f32>, Option<Vec<u8>>)> {
    c.get_record(&Id::Int(n), true, true)
        .expect("get")
        .map(|r| (r.vector.expect("vector"), r.payload))
}

#[test]
fn a_failed_vector_write_applies_nothing_of_its_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create(dir.path(), 2);
    put_with_payloads(&c, &[1, 2, 3], 0);
    // 2's slot (the second of three) is free after the checkpoint, so the batch below
    // writes two runs: 30 into that slot, then 1 and 31 into fresh slots after the third.
    c.delete(&ids(&[2]), None).expect("delete");
    c.checkpoint().expect("checkpoint");
    let before = [record(&c, 1), record(&c, 3)];
    let high_water = c.stats().expect("stats").slot_high_water;

    // One batch: a new 30, an update of 1 (new vector and payload), a new 31. The first
    // run is written, the second fails.
    let p = payload(1, 5);
    let batch_ids = ids(&[30, 1, 31]);
    let vectors: Vec<f32> = [vector(30, 2), vector(7, 2), vector(31, 2)].concat();
    inject_after(Some(Fault::VectorWriteEio), 1);
    let result = c.upsert_with_payloads(
        &batch_ids,
        &vectors,
        &[None, Some(&p), None],
        Some(Durability::Fsync),
    );
    inject(None);
    let err = result.expect_err("its vectors were not written");
    assert_eq!(err.code(), "KEEL_IO");
    assert!(err.to_string().contains("vectors"), "names the file: {err}");
    let stats = c.stats().expect("stats");
    assert!(stats.poisoned);
    assert_eq!(code(c.delete(&ids(&[3]), None)), "KEEL_POISONED");

    // No part of the batch is applied, no slot is taken, and reads go on without it.
    assert_eq!((stats.count, stats.slot_high_water), (2, high_water));
    assert_eq!([record(&c, 1), record(&c, 3)], before);
    assert_eq!((record(&c, 30), record(&c, 31)), (None, None));
    drop(c);
    assert_eq!(code(db.close()), "KEEL_POISONED");

    // The log had the batch: reopening replays it whole.
    let db = open_ok(dir.path());
    let c = db.collection(NAME).expect("collection");
    assert_eq!(record(&c, 1), Some((vector(7, 2), Some(p))));
    assert_eq!(record(&c, 30), Some((vector(30, 2), None)));
    assert_eq!(record(&c, 31), Some((vector(31, 2), None)));
    assert_eq!(record(&c, 3), before[1]);
    assert_eq!(record(&c, 2), None);
    assert!(!c.stats().expect("stats").poisoned);
    db.close().expect("close");
}

#[test]
fn a_failed_vector_write_leaves_its_whole_group_to_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create(dir.path(), 2);
    put_with_payloads(&c, &[1], 0);
    let high_water = c.stats().expect("stats").slot_high_water;

    let (upserts, delete) = submit_failing_groups(&c, Fault::VectorWriteEio, 10..20, false, false);
    // None is applied, and no slot is taken.
    let stats = c.stats().expect("stats");
    assert_eq!((stats.count, stats.slot_high_water), (1, high_water));
    drop(c);
    assert_eq!(code(db.close()), "KEEL_POISONED");

    // The failed group was logged, and synced after its vectors failed: reopening replays
    // it whole (its writes got KEEL_IO: there or not); the groups refused as poisoned never
    // reached the log.
    let db = open_ok(dir.path());
    let c = db.collection(NAME).expect("collection");
    for (n, outcome) in upserts {
        let expected = (outcome == "KEEL_IO").then(|| (vector(n, 2), None));
        assert_eq!(record(&c, n), expected, "id {n}, {outcome}");
    }
    // A delete refused as poisoned never reached the log; one that failed with a group was
    // logged with it, and is replayed too.
    let one = record(&c, 1).is_some();
    assert_eq!(one, delete == "KEEL_POISONED", "delete: {delete}");
    assert!(!c.stats().expect("stats").poisoned);
    db.close().expect("close");
}

#[test]
fn an_upsert_still_in_keeldbs_buffer_is_not_acknowledged_before_its_apply() {
    // At `none` the record is only in keeldb's log buffer when the group is applied, and a
    // poisoned collection never writes that buffer out: the write must fail, not be
    // acknowledged and then lost. At `flush` it is in the file: acknowledged, and a reopen
    // applies it.
    for (durability, expected) in [(Durability::None, "KEEL_IO"), (Durability::Flush, "OK")] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (db, c) = create(dir.path(), 2);
        put_with_payloads(&c, &[1], 0);
        c.flush().expect("flush");
        inject(Some(Fault::VectorWriteEio));
        let result = c.upsert(&ids(&[7]), &vector(7, 2), Some(durability));
        let _ = c.flush(); // a barrier: the group is over
        inject(None);
        let outcome = result.err().map_or("OK", |e| e.code());
        assert_eq!(outcome, expected, "{durability:?}");
        assert!(c.stats().expect("stats").poisoned);
        if outcome == "OK" {
            // Acknowledged but not applied: a read would miss it, so reads refuse.
            assert_eq!(code(c.get(&Id::Int(1))), "KEEL_POISONED", "{durability:?}");
        }
        drop(c);
        assert_eq!(code(db.close()), "KEEL_POISONED");
        let db = open_ok(dir.path());
        let c = db.collection(NAME).expect("collection");
        if outcome == "OK" {
            assert_eq!(record(&c, 7), Some((vector(7, 2), None)), "{durability:?}");
        }
        assert!(record(&c, 1).is_some());
        db.close().expect("close");
    }
}

#[test]
fn an_fsync_group_that_finds_a_reader_in_the_way_writes_its_vectors_after_its_answers() {
    // The committer does not wait for a reader (a search holds the state lock for its whole
    // scan) to write an fsync group's vectors during the sync: the group is answered first,
    // as a flush group is, so a failed vector write leaves the upsert acknowledged, reads
    // refuse rather than miss it, and a reopen applies it.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create(dir.path(), 2);
    put_with_payloads(&c, &[1], 0);
    c.flush().expect("flush");
    busy_state_lock(true);
    inject(Some(Fault::VectorWriteEio));
    let result = c.upsert(&ids(&[7]), &vector(7, 2), Some(Durability::Fsync));
    let _ = c.flush(); // a barrier: the group is over
    inject(None);
    busy_state_lock(false);
    assert_eq!(
        result.ok(),
        Some(()),
        "answered before its vectors were written"
    );
    assert_eq!(code(c.get(&Id::Int(1))), "KEEL_POISONED");
    drop(c);
    assert_eq!(code(db.close()), "KEEL_POISONED");
    let db = open_ok(dir.path());
    let c = db.collection(NAME).expect("collection");
    assert_eq!(record(&c, 7), Some((vector(7, 2), None)));
    db.close().expect("close");
}
