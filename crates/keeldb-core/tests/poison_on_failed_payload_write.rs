//! A group commit whose payload frames cannot be written after the log synced it: its
//! upserts are acknowledged (the sync settled them), its delete is not (its count needed the
//! apply), the collection is poisoned, every read refuses with KEEL_POISONED (it would miss
//! acknowledged writes; never stale or corrupt bytes), and reopening recovers the group from
//! the log.
//!
//! Needs the `planted-bugs` feature (its fault injection); `npm test` runs it that way, one
//! test at a time (the fault is process-wide).
#![cfg(feature = "planted-bugs")]

mod common;

use common::{
    big_payload, code, create, open_ok, payload, put_with_payloads, reopen, submit_failing_groups,
    NAME,
};
use keeldb_core::planted::Fault;
use keeldb_core::Id;

#[test]
fn a_failed_payload_write_poisons_and_its_group_is_recovered_from_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create(dir.path(), 2);
    put_with_payloads(&c, &[1], 0);

    let (upserts, delete) = submit_failing_groups(&c, Fault::PayloadWriteEio, 10..20, true, true);
    let err = c
        .get_record(&Id::Int(10), false, true)
        .expect_err("poisoned");
    assert!(err.to_string().contains("write"), "names its cause: {err}");
    drop(c);
    assert_eq!(code(db.close()), "KEEL_POISONED");

    // The log synced the failed group before its payloads were written: reopening replays
    // it, frames and all, and a group logged behind it (KEEL_IO) too.
    let db = open_ok(dir.path());
    let c = db.collection(NAME).expect("collection");
    for (n, outcome) in upserts {
        let record = c.get_record(&Id::Int(n), true, true).expect("get");
        match outcome {
            "OK" | "KEEL_IO" => assert_eq!(
                record.and_then(|r| r.payload),
                Some(big_payload(n, 0)),
                "id {n}"
            ),
            _ => assert_eq!(record, None, "id {n}, refused"),
        }
    }
    // A delete refused as poisoned never reached the log; one that failed with the group
    // was logged with it, and is replayed too.
    let one = c.get_record(&Id::Int(1), true, true).expect("get 1");
    match delete {
        "KEEL_POISONED" => assert_eq!(one.and_then(|r| r.payload), Some(payload(1, 0))),
        _ => assert_eq!(one, None, "delete: {delete}"),
    }
    assert!(!c.stats().expect("stats").poisoned);
    put_with_payloads(&c, &[2], 0);
    db.close().expect("close");
}

#[test]
fn frames_left_buffered_by_earlier_groups_are_refused_not_lost_when_their_write_fails() {
    // Commit groups leave their payload frames buffered. A write outside a group (a payload
    // update) writes them out before its own frame, and that write fails: the groups were
    // acknowledged, so every read refuses (even one without a payload), and reopening
    // rebuilds their frames from the log. The update failed after it was logged (KEEL_IO:
    // its outcome is unknown, it was not refused), so reopening applies it too.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create(dir.path(), 2);
    put_with_payloads(&c, &[1], 0);
    put_with_payloads(&c, &[2], 0);
    assert_eq!(
        c.get_record(&Id::Int(2), false, true)
            .expect("read from the buffer")
            .and_then(|r| r.payload),
        Some(payload(2, 0))
    );
    keeldb_core::planted::inject(Some(Fault::PayloadWriteEio));
    let update = c.update_payload(&Id::Int(1), Some(&payload(1, 1)), false, None);
    keeldb_core::planted::inject(None);
    assert_eq!(code(update), "KEEL_IO");
    assert!(c.stats().expect("stats").poisoned);
    assert_eq!(
        code(c.get_record(&Id::Int(2), false, true)),
        "KEEL_POISONED"
    );
    assert_eq!(code(c.get(&Id::Int(2))), "KEEL_POISONED");
    drop(c);
    assert_eq!(code(db.close()), "KEEL_POISONED");

    let (db, c) = reopen(dir.path());
    for (n, v) in [(1, 1), (2, 0)] {
        let record = c.get_record(&Id::Int(n), false, true).expect("get");
        assert_eq!(
            record.and_then(|r| r.payload),
            Some(payload(n, v)),
            "id {n}"
        );
    }
    db.close().expect("close");
}

#[test]
fn a_checkpoint_that_cannot_write_buffered_frames_poisons_and_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create(dir.path(), 2);
    put_with_payloads(&c, &[1], 0);
    keeldb_core::planted::inject(Some(Fault::PayloadWriteEio));
    let checkpoint = c.checkpoint();
    keeldb_core::planted::inject(None);
    assert_eq!(code(checkpoint), "KEEL_IO");
    assert_eq!(
        code(c.get_record(&Id::Int(1), false, true)),
        "KEEL_POISONED"
    );
    drop(c);
    assert_eq!(code(db.close()), "KEEL_POISONED");

    let (db, c) = reopen(dir.path());
    let record = c.get_record(&Id::Int(1), false, true).expect("get");
    assert_eq!(record.and_then(|r| r.payload), Some(payload(1, 0)));
    db.close().expect("close");
}

#[test]
fn a_close_whose_checkpoint_fails_is_keel_io_and_the_next_open_replays_the_log() {
    // The frames of acknowledged writes stay buffered until the checkpoint at close writes
    // them out; when that write fails, close reports it (README: `db.close()`), the
    // database is closed all the same, and the log still holds every record.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create(dir.path(), 2);
    put_with_payloads(&c, &[1, 2, 3], 0);
    drop(c);
    keeldb_core::planted::inject(Some(Fault::PayloadWriteEio));
    let closed = db.close();
    keeldb_core::planted::inject(None);
    assert_eq!(code(closed), "KEEL_IO");
    let db = open_ok(dir.path());
    let c = db.collection(NAME).expect("collection");
    for n in 1..=3 {
        let record = c.get_record(&Id::Int(n), true, true).expect("get");
        assert_eq!(
            record.and_then(|r| r.payload),
            Some(payload(n, 0)),
            "id {n}"
        );
    }
    drop(c);
    db.close().expect("close");
}
