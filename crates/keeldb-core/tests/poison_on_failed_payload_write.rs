//! A group commit whose payload frames cannot be written acknowledges none of its records:
//! each fails with KEEL_IO, the collection is poisoned, reading one of their payloads fails
//! with KEEL_POISONED (never stale or corrupt bytes), and reopening recovers them from the
//! log, which had synced them.
//!
//! Needs the `planted-bugs` feature (its fault injection); `npm test` runs it that way.
#![cfg(feature = "planted-bugs")]

mod common;

use std::sync::mpsc;

use common::{code, create, ids, open_ok, payload, put_with_payloads, vector, NAME};
use keeldb_core::planted::{inject, Fault};
use keeldb_core::{Durability, Id};

#[test]
fn a_failed_payload_write_fails_its_whole_group() {
    // The fault is process-wide, so this binary holds this one test.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create(dir.path(), 2);
    put_with_payloads(&c, &[1], 0);

    inject(Some(Fault::PayloadWriteEio));
    // Queued without waiting, so that they form groups of several records.
    let (tx, rx) = mpsc::channel();
    for n in 10..20u64 {
        let p = payload(n, 0);
        let batch = c
            .prepare_upsert_with_payloads(&ids(&[n]), &vector(n, 2), &[Some(&p)])
            .expect("valid batch");
        let tx = tx.clone();
        c.submit(
            batch,
            Some(Durability::Fsync),
            Box::new(move |r| tx.send((n, r)).unwrap_or(())),
        );
    }
    drop(tx);
    let outcomes: Vec<_> = rx
        .iter()
        .map(|(n, r)| (n, r.err().map_or("OK", |e| e.code())))
        .collect();
    inject(None);
    assert_eq!(outcomes.len(), 10);
    // The first group fails with the write's error, later ones are refused as poisoned.
    let failed: Vec<u64> = outcomes
        .iter()
        .filter(|(_, code)| *code == "KEEL_IO")
        .map(|&(n, _)| n)
        .collect();
    assert!(!failed.is_empty(), "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .all(|(_, code)| ["KEEL_IO", "KEEL_POISONED"].contains(code)),
        "none is acknowledged: {outcomes:?}"
    );
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
