//! One open handle per database directory: a second open is refused until the first is
//! closed or dropped, and nothing of the first can write after that.

mod common;

use common::{assert_holds, code, create, open_ok, put, NAME};
use keeldb_core::{Db, DbOptions, Id};

#[test]
fn a_second_open_in_the_same_process_is_locked_until_close() {
    // The flock belongs to the open file description, so the same process is refused too.
    let dir = tempfile::tempdir().expect("tempdir");
    let first = open_ok(dir.path());
    let err = Db::open(dir.path(), DbOptions::default()).expect_err("second open");
    assert_eq!(err.code(), "KEEL_LOCKED");
    assert!(err.to_string().contains("keeldb.lock"), "{err}");
    first.close().expect("close");
    let second = open_ok(dir.path());
    assert_eq!(
        code(Db::open(dir.path(), DbOptions::default())),
        "KEEL_LOCKED"
    );
    second.close().expect("close");
}

#[test]
fn dropping_a_database_releases_its_lock() {
    // A handle dropped without close (a crash, for the lock) lets the next open in.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create(dir.path(), 2);
    put(&c, &[1]);
    drop(c);
    drop(db);
    let db = open_ok(dir.path());
    assert_holds(&db.collection(NAME).expect("collection"), &[1], &[]);
    db.close().expect("close");
}

#[test]
fn a_collection_handle_cannot_write_after_its_database_is_dropped() {
    // A collection handle outliving its dropped database cannot write to the next opener's log.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, old) = create(dir.path(), 2);
    put(&old, &[1]);
    drop(db);
    let db = open_ok(dir.path());
    let new = db.collection(NAME).expect("collection");
    put(&new, &[2]);
    assert_eq!(
        code(old.upsert(&[Id::Int(3)], &[3.0, 3.0], None)),
        "KEEL_CLOSED"
    );
    assert_eq!(code(old.delete(&[Id::Int(1)], None)), "KEEL_CLOSED");
    assert_eq!(code(old.checkpoint()), "KEEL_CLOSED");
    put(&new, &[4]);
    drop(new);
    drop(db);
    let db = open_ok(dir.path());
    let c = db.collection(NAME).expect("collection");
    assert_holds(&c, &[1, 2, 4], &[3]);
    let stats = c.stats().expect("stats");
    assert_eq!(
        (stats.torn_bytes_truncated, stats.corrupt_records_skipped),
        (0, 0)
    );
    db.close().expect("close");
}

#[test]
fn a_failed_open_releases_the_lock() {
    // An open that fails after taking the lock (here on a corrupt collection) gives it back.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, _c) = create(dir.path(), 2);
    db.close().expect("close");
    let config = common::config_path(dir.path());
    let good = common::read(&config);
    common::write(&config, b"garbage");
    assert_eq!(
        code(Db::open(dir.path(), DbOptions::default())),
        "KEEL_CORRUPT"
    );
    common::write(&config, &good);
    open_ok(dir.path()).close().expect("close");
}

#[test]
fn opening_a_path_that_is_a_file_is_an_io_error() {
    // The database path must be a directory.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("file");
    common::write(&file, b"x");
    assert_eq!(code(Db::open(&file, DbOptions::default())), "KEEL_IO");
}
