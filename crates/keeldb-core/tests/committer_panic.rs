//! A committer thread that panics (a bug: planted here) leaves no caller waiting: its group
//! gets KEEL_INTERNAL (its outcome is unknown: the group may be logged), every later write
//! is refused, the collection is poisoned, reads go on, and reopening recovers what was
//! acknowledged and what the group logged.
//!
//! Needs the `planted-bugs` feature (its fault injection); `npm test` runs it that way, one
//! test at a time (the fault is process-wide).
#![cfg(feature = "planted-bugs")]

mod common;

use std::sync::{mpsc, Arc};
use std::time::Duration;

use common::{create, open_ok, NAME};
use keeldb_core::planted::{inject, Fault};
use keeldb_core::{Collection, Id};

/// A synchronous upsert of `id` on another thread; its error code, or "HUNG" after 10 s.
fn upsert_code(c: &Arc<Collection>, id: u64) -> &'static str {
    on_thread(c, move |c| {
        c.upsert(&[Id::Int(id)], &[id as f32, 1.0], None)
    })
}

/// `write` on another thread; its error code, or "HUNG" after 10 s.
fn on_thread<T>(
    c: &Arc<Collection>,
    write: impl FnOnce(&Collection) -> keeldb_core::Result<T> + Send + 'static,
) -> &'static str {
    let (tx, rx) = mpsc::channel();
    let c = Arc::clone(c);
    std::thread::spawn(move || {
        let outcome = write(&c);
        tx.send(outcome.err().map_or("OK", |e| e.code()))
            .unwrap_or(());
    });
    rx.recv_timeout(Duration::from_secs(10)).unwrap_or("HUNG")
}

#[test]
fn a_committer_that_panics_refuses_every_write_instead_of_stranding_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create(dir.path(), 2);
    assert_eq!(upsert_code(&c, 1), "OK");
    inject(Some(Fault::CommitterPanic));
    // The group the committer panicked on: its outcome unknown to the caller (here it was
    // never logged).
    assert_eq!(upsert_code(&c, 2), "KEEL_INTERNAL");
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

#[test]
fn a_write_whose_committer_panicked_after_logging_it_is_not_called_closed() {
    // Before, a request dropped by the unwinding committer said KEEL_CLOSED (nothing
    // written), though its group was in the log and a reopen applied it.
    for delete in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (db, c) = create(dir.path(), 2);
        assert_eq!(upsert_code(&c, 1), "OK");
        inject(Some(Fault::CommitterPanicAfterLog));
        let code = match delete {
            true => on_thread(&c, |c| c.delete(&[Id::Int(1)], None)),
            false => upsert_code(&c, 2),
        };
        inject(None);
        assert_eq!(code, "KEEL_INTERNAL", "delete: {delete}");
        assert_eq!(upsert_code(&c, 3), "KEEL_POISONED");
        drop(c);
        assert_eq!(db.close().err().map(|e| e.code()), Some("KEEL_POISONED"));
        // The group was logged and synced before the panic: reopening applies it.
        let db = open_ok(dir.path());
        let c = db.collection(NAME).expect("collection");
        let one = c.get(&Id::Int(1)).expect("get 1");
        let two = c.get(&Id::Int(2)).expect("get 2");
        match delete {
            true => assert_eq!((one, two), (None, None)),
            false => assert_eq!((one, two), (Some(vec![1.0, 1.0]), Some(vec![2.0, 1.0]))),
        }
        assert_eq!(c.get(&Id::Int(3)).expect("get 3"), None);
        db.close().expect("close");
    }
}
