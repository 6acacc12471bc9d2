//! A group commit whose payload frames cannot be written acknowledges none of its records:
//! each fails with KEEL_IO, the collection is poisoned, reading one of their payloads fails
//! with KEEL_POISONED (never stale or corrupt bytes), and reopening recovers them from the
//! log, which had synced them.
//!
//! Needs the `planted-bugs` feature (its fault injection); `npm test` runs it that way.
#![cfg(feature = "planted-bugs")]

mod common;

use common::{code, create, open_ok, payload, put_with_payloads, submit_failing_groups, NAME};
use keeldb_core::planted::Fault;
use keeldb_core::Id;

#[test]
fn a_failed_payload_write_fails_its_whole_group() {
    // The fault is process-wide, so this binary holds this one test.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create(dir.path(), 2);
    put_with_payloads(&c, &[1], 0);

    // The first group fails with the write's error, later ones are refused as poisoned.
    let failed = submit_failing_groups(&c, Fault::PayloadWriteEio, 10..20, true);
    assert!(c.stats().expect("stats").poisoned);

    // What was acknowledged reads back; a failed record's payload is refused, not made up.
    let a = c
        .get_record(&Id::Int(1), true, true)
        .expect("get 1")
        .expect("1 exists");
    assert_eq!(a.payload, Some(payload(1, 0)));
    assert_eq!(
        code(c.get_record(&Id::Int(failed[0]), true, true)),
        "KEEL_POISONED"
    );
    let err = c
        .get_record(&Id::Int(failed[0]), false, true)
        .expect_err("poisoned");
    assert!(err.to_string().contains("write"), "names its cause: {err}");
    drop(c);
    assert_eq!(code(db.close()), "KEEL_POISONED");

    // The log synced the failed group before its payloads were written: reopening replays
    // it, frames and all.
    let db = open_ok(dir.path());
    let c = db.collection(NAME).expect("collection");
    for &n in &failed {
        let record = c
            .get_record(&Id::Int(n), true, true)
            .expect("get")
            .expect("replayed");
        assert_eq!(record.payload, Some(payload(n, 0)), "id {n}");
    }
    assert!(!c.stats().expect("stats").poisoned);
    put_with_payloads(&c, &[2], 0);
    db.close().expect("close");
}
