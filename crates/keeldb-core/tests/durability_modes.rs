//! Each durability mode puts log bytes where it promises: `None` in keeldb's buffer until a
//! flush, checkpoint or close, `Flush` in the file, `Fsync` in the file and synced.

mod common;

use std::path::Path;

use common::{assert_holds, flat, ids, open_ok, read_log, with_durability, NAME};
use keeldb_core::format::wal::WAL_HEADER_LEN;
use keeldb_core::wal::writer::{BUFFER_BYTES_MAX, PREALLOC_MIN_BYTES};
use keeldb_core::{Collection, Db, Durability, Metric};

fn create_with(
    dir: &Path,
    durability: Durability,
    dimension: u32,
) -> (Db, std::sync::Arc<Collection>) {
    let db = Db::open(dir, with_durability(durability)).expect("open");
    let c = db
        .create_collection(NAME, dimension, Metric::Cosine)
        .expect("create");
    (db, c)
}

fn put_with(c: &Collection, ns: &[u64], durability: Option<Durability>) {
    c.upsert(&ids(ns), &flat(ns, c.dimension()), durability)
        .expect("upsert");
}

fn log_len_on_disk(dir: &Path) -> u64 {
    read_log(dir).len() as u64
}

fn reopen_holds(dir: &Path, present: &[u64], absent: &[u64]) -> u64 {
    let db = open_ok(dir);
    let c = db.collection(NAME).expect("collection");
    assert_holds(&c, present, absent);
    let replayed = c.stats().expect("stats").records_replayed;
    db.close().expect("close");
    replayed
}

#[test]
fn none_buffers_until_flush_makes_it_durable() {
    // `None` keeps records in memory until `flush()`, after which a crash loses nothing.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create_with(dir.path(), Durability::None, 4);
    put_with(&c, &[1], None);
    put_with(&c, &[2, 3], None);
    let stats = c.stats().expect("stats");
    assert!(stats.wal_bytes > WAL_HEADER_LEN as u64);
    assert_eq!(
        log_len_on_disk(dir.path()),
        WAL_HEADER_LEN as u64,
        "None wrote to the file"
    );
    assert_holds(&c, &[1, 2, 3], &[]);
    c.flush().expect("flush");
    assert_eq!(log_len_on_disk(dir.path()), stats.wal_bytes);
    drop(c);
    drop(db);
    assert_eq!(reopen_holds(dir.path(), &[1, 2, 3], &[]), 2);
}

#[test]
fn unflushed_none_writes_are_lost_whole_by_a_crash() {
    // Without a flush, a crash loses the buffered records, but never leaves part of one.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create_with(dir.path(), Durability::None, 4);
    put_with(&c, &[1], Some(Durability::Fsync));
    put_with(&c, &[2], None);
    drop(c);
    drop(db);
    let db = open_ok(dir.path());
    let c = db.collection(NAME).expect("collection");
    assert_holds(&c, &[1], &[2]);
    let stats = c.stats().expect("stats");
    assert_eq!((stats.records_replayed, stats.torn_bytes_truncated), (1, 0));
    db.close().expect("close");
}

#[test]
fn none_writes_out_its_buffer_once_it_passes_the_limit() {
    // The buffer is bounded: past BUFFER_BYTES_MAX the records go to the file.
    let dir = tempfile::tempdir().expect("tempdir");
    let dimension = 1024; // 4 KiB a vector
    let (db, c) = create_with(dir.path(), Durability::None, dimension);
    let mut n = 0;
    while log_len_on_disk(dir.path()) == WAL_HEADER_LEN as u64 {
        let batch: Vec<u64> = (n..n + 16).collect();
        put_with(&c, &batch, None);
        n += 16;
        assert!(
            c.stats().expect("stats").wal_bytes <= (BUFFER_BYTES_MAX as u64) * 2,
            "the buffer grew past its limit"
        );
    }
    assert_eq!(
        log_len_on_disk(dir.path()),
        c.stats().expect("stats").wal_bytes
    );
    drop(c);
    drop(db);
    reopen_holds(dir.path(), &(0..n).collect::<Vec<_>>(), &[n]);
}

#[test]
fn flush_mode_hands_each_record_to_the_os() {
    // `Flush` puts every acknowledged record in the file at once, so a process crash keeps it.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create_with(dir.path(), Durability::Flush, 4);
    put_with(&c, &[1], None);
    put_with(&c, &[2], None);
    assert_eq!(
        log_len_on_disk(dir.path()),
        c.stats().expect("stats").wal_bytes
    );
    drop(c);
    drop(db);
    assert_eq!(reopen_holds(dir.path(), &[1, 2], &[]), 2);
}

#[test]
fn a_write_can_ask_for_more_durability_than_the_default() {
    // A per-call durability overrides the default and writes out earlier buffered records too.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create_with(dir.path(), Durability::None, 4);
    put_with(&c, &[1], None);
    put_with(&c, &[2], Some(Durability::Fsync));
    assert_eq!(
        log_len_on_disk(dir.path()),
        c.stats().expect("stats").wal_bytes
    );
    put_with(&c, &[3], None);
    drop(c);
    drop(db);
    assert_eq!(reopen_holds(dir.path(), &[1, 2], &[3]), 2);
}

#[test]
fn checkpoint_and_close_make_buffered_writes_durable() {
    // A checkpoint captures applied-but-buffered records in the index; close checkpoints.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create_with(dir.path(), Durability::None, 4);
    put_with(&c, &[1], None);
    c.checkpoint().expect("checkpoint");
    put_with(&c, &[2], None);
    drop(c);
    drop(db);
    assert_eq!(reopen_holds(dir.path(), &[1], &[2]), 0);

    let db = Db::open(dir.path(), with_durability(Durability::None)).expect("open");
    let c = db.collection(NAME).expect("collection");
    put_with(&c, &[3], None);
    db.close().expect("close");
    assert_eq!(reopen_holds(dir.path(), &[1, 3], &[2]), 0);
}

#[test]
fn the_log_keeps_zeroed_space_ahead_so_most_syncs_do_not_grow_the_file() {
    // The first synced write zero-fills space after the log's records; the writes after it
    // land in that space without changing the file's length (their syncs flush data only),
    // and a crash leaves the zeros, which recovery cuts without calling them torn.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create_with(dir.path(), Durability::Fsync, 4);
    put_with(&c, &[1], None);
    let file_len = || {
        std::fs::metadata(common::wal_path(dir.path()))
            .expect("stat")
            .len()
    };
    let after_first = file_len();
    let records = log_len_on_disk(dir.path());
    assert!(
        after_first >= records + PREALLOC_MIN_BYTES / 2,
        "{after_first} bytes on disk for {records} bytes of records"
    );
    for n in 2..=20 {
        put_with(&c, &[n], None);
    }
    assert_eq!(file_len(), after_first, "a write grew the file");
    assert!(log_len_on_disk(dir.path()) > records);
    drop(c);
    drop(db); // a crash: no checkpoint
    let db = open_ok(dir.path());
    let c = db.collection(NAME).expect("collection");
    let all: Vec<u64> = (1..=20).collect();
    assert_holds(&c, &all, &[]);
    let stats = c.stats().expect("stats");
    assert_eq!(
        (stats.records_replayed, stats.torn_bytes_truncated),
        (20, 0)
    );
}

#[test]
fn a_checkpoint_empties_the_log_in_place_and_close_truncates_it() {
    // After a checkpoint the next records are written over the old ones from the start of
    // the file, which keeps its length; a crash then recovers exactly the new records. A
    // clean close leaves the log as just its header.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create_with(dir.path(), Durability::Fsync, 4);
    let file_len = || {
        std::fs::metadata(common::wal_path(dir.path()))
            .expect("stat")
            .len()
    };
    for n in 1..=10 {
        put_with(&c, &[n], None);
    }
    let before = file_len();
    c.checkpoint().expect("checkpoint");
    assert_eq!(file_len(), before, "the checkpoint cut the file");
    assert_eq!(log_len_on_disk(dir.path()), WAL_HEADER_LEN as u64);
    put_with(&c, &[11], None);
    put_with(&c, &[12], None);
    assert_eq!(
        file_len(),
        before,
        "a write after the checkpoint grew the file"
    );
    drop(c);
    drop(db); // a crash
    let db = open_ok(dir.path());
    let c = db.collection(NAME).expect("collection");
    let all: Vec<u64> = (1..=12).collect();
    assert_holds(&c, &all, &[]);
    let stats = c.stats().expect("stats");
    assert_eq!((stats.records_replayed, stats.torn_bytes_truncated), (2, 0));
    drop(c);
    db.close().expect("close");
    assert_eq!(
        file_len(),
        WAL_HEADER_LEN as u64,
        "close left more than the header"
    );
}
