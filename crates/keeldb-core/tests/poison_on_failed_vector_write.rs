//! A batch whose vectors cannot be written to the vector file is not acknowledged and not
//! applied in part: it fails with KEEL_IO, the collection is poisoned, readers see every
//! record as it was before the batch (none of its upserts or deletes), and reopening
//! recovers the batch from the log, which had synced it. A group commit's vectors are
//! written together, so a failed write fails every record of the group.
//!
//! Needs the `planted-bugs` feature (its fault injection); `npm test` runs it that way, one
//! test at a time (the fault is process-wide).
#![cfg(feature = "planted-bugs")]

mod common;

use common::{
    code, create, ids, open_ok, payload, put_with_payloads, submit_failing_groups, vector, NAME,
};
use keeldb_core::planted::{inject, inject_after, Fault};
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
    assert_eq!(code(result), "KEEL_IO");
    assert!(c.stats().expect("stats").poisoned);
    assert_eq!(code(c.delete(&ids(&[3]), None)), "KEEL_POISONED");

    // Readers see the collection as it was before the batch: no part of it applied.
    assert_eq!([record(&c, 1), record(&c, 3)], before);
    assert_eq!((record(&c, 30), record(&c, 31)), (None, None));
    assert_eq!(c.stats().expect("stats").count, 2);
    // The batch's slots are free again.
    assert_eq!(c.stats().expect("stats").slot_high_water, high_water);
    drop(c);
    assert_eq!(code(db.close()), "KEEL_POISONED");

    // The log had synced the batch before it was applied: reopening replays it whole.
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
fn a_failed_vector_write_fails_its_whole_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create(dir.path(), 2);
    put_with_payloads(&c, &[1], 0);
    let high_water = c.stats().expect("stats").slot_high_water;

    let failed = submit_failing_groups(&c, Fault::VectorWriteEio, 10..20, false);
    // None is applied, and the first group's slots are free again.
    let stats = c.stats().expect("stats");
    assert!(stats.poisoned);
    assert_eq!((stats.count, stats.slot_high_water), (1, high_water));
    for n in 10..20 {
        assert_eq!(record(&c, n), None, "id {n}");
    }
    drop(c);
    assert_eq!(code(db.close()), "KEEL_POISONED");

    // The log synced the failed group before its vectors were written: reopening replays
    // it whole.
    let db = open_ok(dir.path());
    let c = db.collection(NAME).expect("collection");
    for &n in &failed {
        assert_eq!(record(&c, n), Some((vector(n, 2), None)), "id {n}");
    }
    assert!(!c.stats().expect("stats").poisoned);
    db.close().expect("close");
}
