//! A committer thread that panics (a bug: planted here) leaves no caller waiting: its group
//! and every later write are refused, the collection is poisoned, reads go on, and reopening
//! recovers what was acknowledged.
//!
//! Needs the `planted-bugs` feature (its fault injection); `npm test` runs it that way.
#![cfg(feature = "planted-bugs")]

mod common;

use std::sync::{mpsc, Arc};
use std::time::Duration;

use common::{create, open_ok, NAME};
use keeldb_core::planted::{inject, Fault};
use keeldb_core::{Collection, Id};

/// A synchronous upsert of `id` on another thread; its error code, or "HUNG" after 10 s.
fn upsert_code(c: &Arc<Collection>, id: u64) -> &'static str {
    let (tx, rx) = mpsc::channel();
    let c = Arc::clone(c);
    std::thread::spawn(move || {
        let outcome = c.upsert(&[Id::Int(id)], &[id as f32, 1.0], None);
        tx.send(outcome.err().map_or("OK", |e| e.code()))
            .unwrap_or(());
    });
    rx.recv_timeout(Duration::from_secs(10)).unwrap_or("HUNG")
}

#[test]
fn a_committer_that_panics_refuses_every_write_instead_of_stranding_it() {
    // The fault is process-wide, so this binary holds this one test.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create(dir.path(), 2);
    assert_eq!(upsert_code(&c, 1), "OK");
    inject(Some(Fault::CommitterPanic));
    // The group the committer panicked on was never logged: refused.
    assert_ne!(upsert_code(&c, 2), "HUNG");
    inject(None);
    // The committer is gone: later writes are refused with the poison, not left waiting.
    assert_eq!(upsert_code(&c, 3), "KEEL_POISONED");
    assert_eq!(
        c.flush().err().map(|e| e.code()),
        Some("KEEL_POISONED"),
        "a barrier needs the committer too"
    );
    assert!(c.stats().expect("stats").poisoned);
    assert_eq!(c.get(&Id::Int(1)).expect("get"), Some(vec![1.0, 1.0]));
    drop(c);
    assert_eq!(db.close().err().map(|e| e.code()), Some("KEEL_POISONED"));
    let db = open_ok(dir.path());
    let c = db.collection(NAME).expect("collection");
    assert_eq!(c.get(&Id::Int(1)).expect("get"), Some(vec![1.0, 1.0]));
    assert_eq!(c.get(&Id::Int(3)).expect("get"), None);
    db.close().expect("close");
}
