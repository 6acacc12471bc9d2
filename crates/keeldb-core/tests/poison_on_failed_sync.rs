//! A failed log sync is never retried and never acknowledged: the write that hit it fails
//! with KEEL_IO, the collection refuses every later write with KEEL_POISONED (even once the
//! disk works again), reads go on, and reopening recovers from the log.
//!
//! Needs the `planted-bugs` feature (its fault injection); `npm test` runs it that way.
#![cfg(feature = "planted-bugs")]

mod common;

use common::{create, open_ok, NAME};
use keeldb_core::planted::{inject, Fault};
use keeldb_core::{Durability, Id};

fn code<T: std::fmt::Debug>(r: keeldb_core::Result<T>) -> &'static str {
    r.err().map_or("OK", |e| e.code())
}

#[test]
fn a_failed_fsync_poisons_until_reopen() {
    // The fault is process-wide, so this binary holds this one test.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create(dir.path(), 2);
    c.upsert(&[Id::from("a")], &[1.0, 2.0], None).expect("a");
    let high_water = c.stats().expect("stats").slot_high_water;

    inject(Some(Fault::LogSyncEio));
    assert_eq!(
        code(c.upsert(&[Id::from("b")], &[3.0, 4.0], None)),
        "KEEL_IO"
    );
    inject(None); // the disk works again: keeldb must still not trust what it wrote
    assert_eq!(
        code(c.upsert(&[Id::from("c")], &[5.0, 6.0], None)),
        "KEEL_POISONED"
    );
    assert_eq!(
        code(c.upsert(&[Id::from("c")], &[5.0, 6.0], Some(Durability::None))),
        "KEEL_POISONED"
    );
    assert_eq!(code(c.delete(&[Id::from("a")], None)), "KEEL_POISONED");
    assert_eq!(code(c.flush()), "KEEL_POISONED");
    assert_eq!(code(c.checkpoint()), "KEEL_POISONED");
    let err = c
        .upsert(&[Id::from("d")], &[0.0, 0.0], None)
        .expect_err("poisoned");
    assert!(
        err.to_string().contains("fdatasync"),
        "names its cause: {err}"
    );
    // Reads go on from what was acknowledged. "b"'s vector was written into the next slot
    // while the sync ran, but the slot was never taken: nothing of "b" shows.
    let slots = std::fs::read(dir.path().join(NAME).join("vectors.dat")).expect("read");
    let at = 4096 + high_water as usize * 8;
    let written: Vec<f32> = slots[at..at + 8]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
        .collect();
    assert_eq!(written, [3.0, 4.0], "written before the sync");
    assert_eq!(c.get(&Id::from("a")).expect("get"), Some(vec![1.0, 2.0]));
    assert_eq!(c.get(&Id::from("b")).expect("get"), None);
    let stats = c.stats().expect("stats");
    assert!(stats.poisoned);
    assert_eq!((stats.count, stats.slot_high_water), (1, high_water));
    drop(c);
    // Close skips the checkpoint of a poisoned collection and says why, closing it anyway.
    assert_eq!(code(db.close()), "KEEL_POISONED");
    db.close().expect("closing twice is a no-op");

    let db = open_ok(dir.path());
    let c = db.collection(NAME).expect("collection");
    assert_eq!(c.get(&Id::from("a")).expect("get"), Some(vec![1.0, 2.0]));
    // "b" was written but never acknowledged: it may or may not be there. "c" and "d" were
    // refused before anything was logged: they are not.
    assert_eq!(c.get(&Id::from("c")).expect("get"), None);
    assert_eq!(c.get(&Id::from("d")).expect("get"), None);
    assert!(!c.stats().expect("stats").poisoned);
    c.upsert(&[Id::from("e")], &[7.0, 8.0], None)
        .expect("writes work after reopen");
    db.close().expect("close");
}
