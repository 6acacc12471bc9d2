//! Collections are created, found, listed and dropped by name; bad arguments and closed
//! handles get typed errors, and a refused write leaves no trace.

mod common;

use std::fs;

use common::{code, create, open_ok, put, read_log, write, NAME};
use keeldb_core::{Collection, Db, DbOptions, Id, Metric};

#[test]
fn collections_are_created_found_listed_and_dropped() {
    // The name space of a database: create, exists, not found, list (sorted), drop, re-create.
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open_ok(dir.path());
    assert!(db.list_collections().expect("list").is_empty());
    assert_eq!(code(db.collection("a")), "KEEL_NOT_FOUND");
    let b = db.create_collection("b", 3, Metric::Cosine).expect("b");
    db.create_collection("a", 2, Metric::Dot).expect("a");
    assert_eq!(
        code(db.create_collection("a", 2, Metric::Dot)),
        "KEEL_EXISTS"
    );
    assert_eq!(db.list_collections().expect("list"), vec!["a", "b"]);
    assert_eq!(
        (b.name(), b.dimension(), b.metric()),
        ("b", 3, Metric::Cosine)
    );
    b.upsert(&[Id::Int(1)], &[1.0, 2.0, 3.0], None)
        .expect("upsert");

    db.drop_collection("b").expect("drop");
    assert_eq!(code(db.collection("b")), "KEEL_NOT_FOUND");
    assert_eq!(code(db.drop_collection("b")), "KEEL_NOT_FOUND");
    assert!(!dir.path().join("b").exists());
    assert_eq!(
        code(b.get(&Id::Int(1))),
        "KEEL_CLOSED",
        "a dropped collection's handle"
    );
    assert_eq!(db.list_collections().expect("list"), vec!["a"]);

    // The name is free again, and the new collection starts empty.
    let b = db
        .create_collection("b", 5, Metric::Euclidean)
        .expect("re-create");
    assert_eq!(b.get(&Id::Int(1)).expect("get"), None);
    assert_eq!(b.dimension(), 5);
    db.drop_collection("a").expect("drop a");
    drop(b);
    drop(db);

    // A crash after the drops: only the re-created collection comes back.
    let db = open_ok(dir.path());
    assert_eq!(db.list_collections().expect("list"), vec!["b"]);
    assert_eq!(db.collection("b").expect("b").dimension(), 5);
    db.close().expect("close");
}

#[test]
fn bad_names_dimensions_and_options_are_invalid_arguments() {
    // Names must be [A-Za-z0-9_-]{1,64}; dimensions 1..=65536; the threshold at least 1.
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open_ok(dir.path());
    let long = "x".repeat(65);
    for name in [
        "",
        ".",
        "..",
        ".creating-a",
        "a/b",
        "../a",
        "a b",
        "é",
        "a.b",
        &long,
    ] {
        let result = db.create_collection(name, 2, Metric::Cosine);
        assert_eq!(code(result), "KEEL_INVALID_ARGUMENT", "name {name:?}");
        assert_eq!(
            code(db.drop_collection(name)),
            "KEEL_INVALID_ARGUMENT",
            "{name:?}"
        );
    }
    db.create_collection(&"x".repeat(64), 1, Metric::Cosine)
        .expect("64-byte name");
    for dimension in [0, 65_537, u32::MAX] {
        let result = db.create_collection("d", dimension, Metric::Cosine);
        assert_eq!(
            code(result),
            "KEEL_INVALID_ARGUMENT",
            "dimension {dimension}"
        );
    }
    assert!(
        !dir.path().join("d").exists(),
        "a refused create left files"
    );
    assert!(!dir.path().join(".creating-d").exists());
    db.close().expect("close");

    let options = DbOptions {
        checkpoint_threshold_bytes: 0,
        ..DbOptions::default()
    };
    assert_eq!(code(Db::open(dir.path(), options)), "KEEL_INVALID_ARGUMENT");
}

#[test]
fn leftovers_of_interrupted_creates_and_drops_are_removed_at_open() {
    // `.creating-*` and `.dropping-*` directories are half-made or half-deleted collections.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create(dir.path(), 2);
    put(&c, &[1]);
    db.close().expect("close");
    // A half-deleted collection and a half-created one, with files in them.
    fs::create_dir(dir.path().join(".creating-new")).expect("mkdir");
    write(&dir.path().join(".creating-new/collection.json"), b"{}");
    fs::rename(dir.path().join(NAME), dir.path().join(".dropping-c")).expect("rename");
    fs::create_dir(dir.path().join(".dropping-old")).expect("mkdir");
    write(
        &dir.path().join(".dropping-old/payloads-3.log.tmp"),
        b"half a compaction",
    );
    // What keeldb never writes in a leftover is someone else's: open refuses, touching nothing.
    for (foreign, what) in [
        (".creating-backup/precious.txt", "a file"),
        (".dropping-x/deep/er", "a directory"),
    ] {
        let at = dir.path().join(foreign);
        fs::create_dir_all(at.parent().expect("parent")).expect("mkdir");
        if what == "a file" {
            write(&at, b"my data");
        } else {
            fs::create_dir(&at).expect("mkdir");
        }
        let before = common::tree(dir.path());
        assert_eq!(
            code(Db::open(dir.path(), DbOptions::default())),
            "KEEL_CORRUPT",
            "{what}"
        );
        assert_eq!(common::tree(dir.path()), before, "{what}: nothing removed");
        let top = foreign.split('/').next().expect("top");
        fs::remove_dir_all(dir.path().join(top)).expect("clean up");
    }
    let db = open_ok(dir.path());
    assert!(db.list_collections().expect("list").is_empty());
    for leftover in [".creating-new", ".dropping-c", ".dropping-old"] {
        assert!(!dir.path().join(leftover).exists(), "{leftover} survived");
    }
    // A stale staging directory does not block creating that name.
    fs::create_dir(dir.path().join(".creating-new")).expect("mkdir");
    write(&dir.path().join(".creating-new/vectors.dat"), b"stale");
    let c = db
        .create_collection("new", 2, Metric::Cosine)
        .expect("create");
    put(&c, &[7]);
    db.close().expect("close");
    let db = open_ok(dir.path());
    common::assert_holds(&db.collection("new").expect("new"), &[7], &[]);
    db.close().expect("close");
}

#[test]
fn a_directory_that_is_not_a_database_is_refused_and_left_as_it_was() {
    // Open takes leftovers for its own and deletes them: in a directory of someone else's
    // files it must refuse before it locks, creates or deletes anything.
    let dir = tempfile::tempdir().expect("tempdir");
    let precious = dir.path().join(".creating-backup/precious.txt");
    fs::create_dir(dir.path().join(".creating-backup")).expect("mkdir");
    write(&precious, b"my data");
    fs::create_dir(dir.path().join("src")).expect("mkdir");
    write(&dir.path().join("src/main.c"), b"int main;");
    let before = common::tree(dir.path());
    let refused = Db::open(dir.path(), DbOptions::default());
    assert_eq!(code(refused), "KEEL_INVALID_ARGUMENT");
    assert_eq!(
        common::tree(dir.path()),
        before,
        "nothing is written or removed"
    );
    assert_eq!(
        code(Db::open(std::path::Path::new(""), DbOptions::default())),
        "KEEL_INVALID_ARGUMENT"
    );

    // The root of a new volume holds lost+found, and nothing else of anyone's.
    let volume = tempfile::tempdir().expect("tempdir");
    fs::create_dir(volume.path().join("lost+found")).expect("mkdir");
    open_ok(volume.path()).close().expect("close");

    // A database copied without its lock file is still known by its collections.
    let db_dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create(db_dir.path(), 2);
    put(&c, &[1, 2]);
    db.close().expect("close");
    fs::remove_file(db_dir.path().join("keeldb.lock")).expect("remove the lock file");
    let db = open_ok(db_dir.path());
    common::assert_holds(&db.collection(NAME).expect("c"), &[1, 2], &[]);
    db.close().expect("close");

    // ...but a leftover it holds that is not keeldb's refuses the open before anything is
    // written, lock file included.
    fs::remove_file(db_dir.path().join("keeldb.lock")).expect("remove the lock file");
    fs::create_dir(db_dir.path().join(".creating-backup")).expect("mkdir");
    write(
        &db_dir.path().join(".creating-backup/precious.txt"),
        b"my data",
    );
    let before = common::tree(db_dir.path());
    assert_eq!(
        code(Db::open(db_dir.path(), DbOptions::default())),
        "KEEL_CORRUPT"
    );
    assert_eq!(
        common::tree(db_dir.path()),
        before,
        "nothing is written or removed"
    );
}

fn assert_collection_closed(c: &Collection) {
    let id = [Id::Int(1)];
    assert_eq!(
        code(c.upsert(&id, &[1.0, 2.0], None)),
        "KEEL_CLOSED",
        "upsert"
    );
    assert_eq!(code(c.delete(&id, None)), "KEEL_CLOSED", "delete");
    assert_eq!(code(c.get(&id[0])), "KEEL_CLOSED", "get");
    assert_eq!(code(c.flush()), "KEEL_CLOSED", "flush");
    assert_eq!(code(c.checkpoint()), "KEEL_CLOSED", "checkpoint");
    assert_eq!(code(c.stats()), "KEEL_CLOSED", "stats");
    c.close().expect("closing twice is a no-op");
}

#[test]
fn closed_handles_refuse_every_call() {
    // After close, every method of the database and of its collections says so.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create(dir.path(), 2);
    put(&c, &[1]);
    db.close().expect("close");
    assert_collection_closed(&c);
    assert_eq!(code(db.collection(NAME)), "KEEL_CLOSED");
    assert_eq!(code(db.list_collections()), "KEEL_CLOSED");
    assert_eq!(
        code(db.create_collection("x", 2, Metric::Cosine)),
        "KEEL_CLOSED"
    );
    assert_eq!(code(db.drop_collection(NAME)), "KEEL_CLOSED");
    db.close().expect("closing twice is a no-op");
    assert!(!dir.path().join("x").exists());

    // A collection closed on its own: its handle is closed, the database goes on.
    let db = open_ok(dir.path());
    let c = db.collection(NAME).expect("collection");
    c.close().expect("close the collection");
    assert_collection_closed(&c);
    assert_eq!(
        code(db.collection(NAME).expect("still listed").get(&Id::Int(1))),
        "KEEL_CLOSED"
    );
    db.close().expect("close");
    let db = open_ok(dir.path());
    common::assert_holds(&db.collection(NAME).expect("collection"), &[1], &[]);
    db.close().expect("close");
}

#[test]
fn refused_input_writes_nothing() {
    // Every invalid batch is refused whole, before the log: lsn, count and log bytes stay.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create(dir.path(), 2);
    put(&c, &[1, 2]);
    // (A read of too many ids is refused too, in its own words.)
    let too_many = vec![Id::Int(1); keeldb_core::types::BATCH_RECORDS_MAX + 1];
    let err = c.get_many(&too_many, true, true).expect_err("too many ids");
    assert_eq!(err.code(), "KEEL_INVALID_ARGUMENT");
    assert!(
        err.to_string()
            .contains("one read takes at most 1000000 ids"),
        "{err}"
    );
    let before = c.stats().expect("stats");
    let log_before = read_log(dir.path());
    let long_id = Id::from("a".repeat(513).as_str());
    let cases: Vec<(&str, Vec<Id>, Vec<f32>, &str)> = vec![
        (
            "NaN",
            vec![Id::Int(5)],
            vec![0.0, f32::NAN],
            "KEEL_INVALID_ARGUMENT",
        ),
        (
            "+inf",
            vec![Id::Int(5)],
            vec![f32::INFINITY, 0.0],
            "KEEL_INVALID_ARGUMENT",
        ),
        (
            "-inf",
            vec![Id::Int(5)],
            vec![0.0, f32::NEG_INFINITY],
            "KEEL_INVALID_ARGUMENT",
        ),
        (
            "NaN in the last record of a batch",
            vec![Id::Int(5), Id::Int(6)],
            vec![1.0, 2.0, 3.0, f32::NAN],
            "KEEL_INVALID_ARGUMENT",
        ),
        (
            "short",
            vec![Id::Int(5)],
            vec![1.0],
            "KEEL_DIMENSION_MISMATCH",
        ),
        (
            "long",
            vec![Id::Int(5)],
            vec![1.0, 2.0, 3.0],
            "KEEL_DIMENSION_MISMATCH",
        ),
        (
            "one vector short in a batch",
            vec![Id::Int(5), Id::Int(6)],
            vec![1.0, 2.0, 3.0],
            "KEEL_DIMENSION_MISMATCH",
        ),
        (
            "no ids, some floats",
            vec![],
            vec![1.0, 2.0],
            "KEEL_DIMENSION_MISMATCH",
        ),
        (
            "empty string id",
            vec![Id::from("")],
            vec![1.0, 2.0],
            "KEEL_INVALID_ARGUMENT",
        ),
        (
            "513-byte id",
            vec![long_id.clone()],
            vec![1.0, 2.0],
            "KEEL_INVALID_ARGUMENT",
        ),
        (
            "2^53",
            vec![Id::Int(1 << 53)],
            vec![1.0, 2.0],
            "KEEL_INVALID_ARGUMENT",
        ),
        (
            "bad id after a good one",
            vec![Id::Int(5), Id::Int(u64::MAX)],
            vec![1.0, 2.0, 3.0, 4.0],
            "KEEL_INVALID_ARGUMENT",
        ),
    ];
    for (what, ids, vectors, expected) in cases {
        assert_eq!(code(c.upsert(&ids, &vectors, None)), expected, "{what}");
    }
    for ids in [
        vec![Id::from("")],
        vec![Id::Int(1), long_id],
        vec![Id::Int(1 << 60)],
    ] {
        assert_eq!(
            code(c.delete(&ids, None)),
            "KEEL_INVALID_ARGUMENT",
            "{ids:?}"
        );
    }
    let after = c.stats().expect("stats");
    assert_eq!(after.last_lsn, before.last_lsn);
    assert_eq!(after.count, before.count);
    assert_eq!(after.wal_bytes, before.wal_bytes);
    assert_eq!(after.slot_high_water, before.slot_high_water);
    assert!(!after.poisoned);
    assert_eq!(read_log(dir.path()), log_before);
    common::assert_holds(&c, &[1, 2], &[5, 6]);
    // The collection still takes good writes.
    put(&c, &[3]);
    drop(c);
    drop(db);
    let db = open_ok(dir.path());
    let c = db.collection(NAME).expect("collection");
    common::assert_holds(&c, &[1, 2, 3], &[5, 6]);
    assert_eq!(c.stats().expect("stats").records_replayed, 2);
    db.close().expect("close");
}

#[test]
fn reserve_makes_room_counting_the_slots_a_checkpoint_freed() {
    // 4 KiB slots, so the 16 MiB file the collection starts with holds about 4,000.
    let dir = tempfile::tempdir().expect("tempdir");
    let (_db, c) = create(dir.path(), 1024);
    let ns: Vec<u64> = (0..1000).collect();
    put(&c, &ns);
    c.checkpoint().expect("checkpoint");
    // Replacing every record takes new slots (copy-on-write); the next checkpoint frees the
    // old ones.
    put(&c, &ns);
    c.checkpoint().expect("checkpoint");
    let s = c.stats().expect("stats");
    assert_eq!(s.slot_high_water, 2000);
    let room = s.capacity_slots - s.slot_high_water;
    // Loading the same records again fits in the freed slots plus the room left: no growth.
    c.reserve(1000 + room).expect("reserve");
    assert_eq!(
        c.stats().expect("stats").vector_file_bytes,
        s.vector_file_bytes,
        "reserve grew the file for records the freed slots hold"
    );
    c.reserve(1000 + room + 1).expect("reserve");
    let grown = c.stats().expect("stats");
    assert!(grown.vector_file_bytes > s.vector_file_bytes);
    assert!(grown.capacity_slots > s.capacity_slots);
    // The records are untouched by either reserve.
    assert_eq!(grown.count, 1000);
    for n in [0, 999] {
        assert_eq!(
            c.get(&Id::Int(n)).expect("get"),
            Some(common::vector(n, 1024))
        );
    }
}

#[test]
fn reserve_past_the_slot_space_is_refused_and_poisons_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_db, c) = create(dir.path(), 1);
    let before = c.stats().expect("stats");
    for additional in [u64::from(u32::MAX) + 1, u64::MAX] {
        let err = c.reserve(additional).expect_err("past the slot space");
        assert_eq!(err.code(), "KEEL_INVALID_ARGUMENT", "{err}");
    }
    let after = c.stats().expect("stats");
    assert!(!after.poisoned);
    assert_eq!(after.vector_file_bytes, before.vector_file_bytes);
    put(&c, &[7]);
    assert_eq!(c.get(&Id::Int(7)).expect("get"), Some(common::vector(7, 1)));
}
