//! Checkpoints: triggered by the log size, safe to interrupt at every step, and the only
//! point where freed vector slots become reusable; replay rebuilds the exact same state.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{
    assert_holds, checkpoint_every_write, create, index_path, index_snapshot, open_ok,
    payload_index_path, put, put_with_payloads, read, read_log, reopen, vector, wal_path, write,
    NAME,
};
use keeldb_core::format::index::IndexSnapshot;
use keeldb_core::format::wal::WAL_HEADER_LEN;
use keeldb_core::{Collection, Db, DbOptions, Durability, Id, Metric};

const DIM: u32 = 4;

fn create_with(dir: &Path, options: DbOptions) -> (Db, std::sync::Arc<Collection>) {
    let db = Db::open(dir, options).expect("open");
    let c = db
        .create_collection(NAME, DIM, Metric::Euclidean)
        .expect("create");
    (db, c)
}

#[test]
fn the_log_is_checkpointed_once_it_passes_the_threshold() {
    // A write taking the log past the threshold checkpoints, and the log drops to its header.
    let dir = tempfile::tempdir().expect("tempdir");
    let threshold = 200;
    let options = DbOptions {
        checkpoint_threshold_bytes: threshold,
        checkpoint_scales_with_index: false,
        ..DbOptions::default()
    };
    let (db, c) = create_with(dir.path(), options);
    let mut checkpoints = 0;
    for n in 0..20 {
        let before = c.stats().expect("stats").wal_bytes;
        put(&c, &[n]);
        let stats = c.stats().expect("stats");
        if stats.wal_bytes < before {
            checkpoints += 1;
            assert_eq!(stats.wal_bytes, WAL_HEADER_LEN as u64, "write {n}");
            assert_eq!(stats.checkpoint_lsn, stats.last_lsn, "write {n}");
            assert_eq!(read_log(dir.path()).len(), WAL_HEADER_LEN);
        }
        assert!(
            stats.wal_bytes <= threshold,
            "write {n}: {} bytes",
            stats.wal_bytes
        );
        assert_eq!(stats.checkpoints, checkpoints, "write {n}");
    }
    assert!(checkpoints >= 5, "only {checkpoints} checkpoints");
    drop(c);
    drop(db);
    let db = Db::open(dir.path(), options).expect("reopen");
    let c = db.collection(NAME).expect("collection");
    assert_holds(&c, &(0..20).collect::<Vec<_>>(), &[]);
    assert!(c.stats().expect("stats").records_replayed < 4);
    db.close().expect("close");
}

#[test]
fn the_default_threshold_grows_with_the_indexes_a_checkpoint_rewrites() {
    // A checkpoint rewrites ids.idx and payloads.idx whole: with the default (scaling)
    // threshold, the log must also pass four times their size before a write triggers one,
    // so a large collection is not rewritten every few writes. An exact threshold (the
    // test above) ignores their size.
    let dir = tempfile::tempdir().expect("tempdir");
    let threshold = 200;
    let options = DbOptions {
        checkpoint_threshold_bytes: threshold,
        ..DbOptions::default()
    };
    let (db, c) = create_with(dir.path(), options);
    // One batch, then an explicit checkpoint: indexes of 2,000 ids, far past the threshold.
    put(&c, &(0..2_000).collect::<Vec<_>>());
    c.checkpoint().expect("checkpoint");
    let index_bytes = read(&index_path(dir.path())).len() as u64
        + read(&payload_index_path(dir.path())).len() as u64;
    let floor = 4 * index_bytes;
    assert!(floor > 20 * threshold, "indexes of {index_bytes} bytes");
    assert_eq!(c.stats().expect("stats").checkpoint_at_bytes, floor);
    let checkpoints = c.stats().expect("stats").checkpoints;
    let mut n = 2_000;
    // Every write below the floor leaves the log growing.
    loop {
        let before = c.stats().expect("stats").wal_bytes;
        put(&c, &[n]);
        n += 1;
        let stats = c.stats().expect("stats");
        if stats.wal_bytes < before {
            // The write that took the log past the floor checkpointed, and none before it.
            assert!(
                before > floor - 200,
                "checkpointed at {before} of {floor} bytes"
            );
            assert_eq!(stats.checkpoints, checkpoints + 1);
            break;
        }
        assert!(
            stats.wal_bytes <= floor,
            "{} bytes, floor {floor}",
            stats.wal_bytes
        );
        assert_eq!(stats.checkpoints, checkpoints, "write {n}");
    }
    // After a reopen, the floor comes from the index files found (those of the checkpoint
    // close ran).
    drop(c);
    db.close().expect("close");
    let index_bytes = read(&index_path(dir.path())).len() as u64
        + read(&payload_index_path(dir.path())).len() as u64;
    let db = Db::open(dir.path(), options).expect("reopen");
    let c = db.collection(NAME).expect("collection");
    assert_eq!(
        c.stats().expect("stats").checkpoint_at_bytes,
        4 * index_bytes
    );
    for m in n..n + 100 {
        put(&c, &[m]);
        let stats = c.stats().expect("stats");
        assert_eq!(stats.checkpoints, 0, "{} log bytes", stats.wal_bytes);
    }
    assert!(c.stats().expect("stats").wal_bytes > 20 * threshold);
    db.close().expect("close");
}

#[test]
fn a_crash_between_the_index_rename_and_the_log_truncation_replays_nothing_twice() {
    // Records the new index already covers are skipped: the checkpointed state, slots included.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create_with(dir.path(), DbOptions::default());
    put(&c, &[1, 2]);
    put(&c, &[1]); // overwrite: takes a new slot, frees one
    c.delete(&[Id::Int(2)], None).expect("delete");
    put(&c, &[3]);
    let log = read_log(dir.path());
    c.checkpoint().expect("checkpoint");
    let checkpointed = c.stats().expect("stats");
    let index = index_snapshot(dir.path());
    drop(c);
    drop(db);
    // The log truncation never reached the disk.
    write(&wal_path(dir.path()), &log);

    let db = open_ok(dir.path());
    let c = db.collection(NAME).expect("collection");
    let stats = c.stats().expect("stats");
    assert_eq!(stats.records_replayed, 0);
    assert_eq!(stats.last_lsn, checkpointed.last_lsn);
    assert_eq!(stats.slot_high_water, checkpointed.slot_high_water);
    assert_eq!(stats.count, 2);
    assert_holds(&c, &[1, 3], &[2]);
    assert_eq!(index_snapshot(dir.path()), index);
    assert_eq!(
        read_log(dir.path()).len(),
        WAL_HEADER_LEN,
        "skipped log kept"
    );

    // Writes after that recovery get new sequence numbers and are replayed after a crash.
    put(&c, &[4]);
    drop(c);
    drop(db);
    let db = open_ok(dir.path());
    let c = db.collection(NAME).expect("collection");
    let stats = c.stats().expect("stats");
    assert_eq!(
        (stats.records_replayed, stats.last_lsn),
        (1, checkpointed.last_lsn + 1)
    );
    assert_holds(&c, &[1, 3, 4], &[2]);
    db.close().expect("close");
}

#[test]
fn a_crash_before_the_index_rename_replays_everything_from_the_old_index() {
    // The old index plus the whole log rebuild the state though the vector file moved on.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create_with(dir.path(), DbOptions::default());
    put(&c, &[1, 2, 3]);
    c.checkpoint().expect("first checkpoint");
    let old_index = read(&index_path(dir.path()));
    put(&c, &[1]);
    c.delete(&[Id::Int(2)], None).expect("delete");
    put(&c, &[4, 5]);
    let log = read_log(dir.path());
    let before = c.stats().expect("stats");
    c.checkpoint().expect("second checkpoint");
    drop(c);
    drop(db);
    write(&index_path(dir.path()), &old_index);
    write(&wal_path(dir.path()), &log);

    let db = open_ok(dir.path());
    let c = db.collection(NAME).expect("collection");
    let stats = c.stats().expect("stats");
    assert_eq!(stats.records_replayed, 3);
    assert_eq!(stats.slot_high_water, before.slot_high_water);
    assert_eq!(stats.last_lsn, before.last_lsn);
    assert_holds(&c, &[1, 3, 4, 5], &[2]);
    db.close().expect("close");
}

#[test]
fn freed_slots_are_reused_only_after_a_checkpoint() {
    // Slots freed by overwrites and deletes are handed out again only after a checkpoint.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create_with(dir.path(), DbOptions::default());
    let hw = |c: &Collection| c.stats().expect("stats").slot_high_water;
    put(&c, &(0..10).collect::<Vec<_>>());
    assert_eq!(hw(&c), 10);
    for round in 1..=5 {
        put(&c, &[0]);
        assert_eq!(
            hw(&c),
            10 + round,
            "an overwrite must not reuse a slot before a checkpoint"
        );
    }
    c.delete(&(5..10).map(Id::Int).collect::<Vec<_>>(), None)
        .expect("delete");
    put(&c, &[20]);
    assert_eq!(hw(&c), 16);
    c.checkpoint().expect("checkpoint");
    // 5 overwritten-away slots and 5 deleted ones are free now.
    put(&c, &(30..40).collect::<Vec<_>>());
    assert_eq!(
        hw(&c),
        16,
        "freed slots were not reused after the checkpoint"
    );
    put(&c, &[40]);
    assert_eq!(hw(&c), 17);
    drop(c);
    drop(db);
    let db = open_ok(dir.path());
    let c = db.collection(NAME).expect("collection");
    assert_eq!(hw(&c), 17);
    let live: Vec<u64> = (0..5).chain([20]).chain(30..41).collect();
    assert_holds(&c, &live, &[5, 6, 7, 8, 9]);
    db.close().expect("close");
}

#[test]
fn writes_lost_in_a_crash_never_touch_a_checkpointed_vector() {
    // A write whose record a crash lost never landed in a slot the last checkpoint references.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create_with(dir.path(), DbOptions::default());
    put(&c, &[1, 2]);
    c.checkpoint().expect("checkpoint");
    let lost = Some(Durability::None);
    c.delete(&[Id::Int(1)], lost).expect("delete");
    put_with(&c, &[3], lost);
    c.upsert(&[Id::Int(2)], &vector(22, DIM), lost)
        .expect("overwrite");
    assert_eq!(
        read_log(dir.path()).len(),
        WAL_HEADER_LEN,
        "nothing logged yet"
    );
    drop(c);
    drop(db);
    let db = open_ok(dir.path());
    let c = db.collection(NAME).expect("collection");
    assert_holds(&c, &[1, 2], &[3]);
    db.close().expect("close");
}

fn put_with(c: &Collection, ns: &[u64], durability: Option<Durability>) {
    c.upsert(&common::ids(ns), &common::flat(ns, DIM), durability)
        .expect("upsert");
}

#[test]
fn repeated_overwrites_with_checkpoints_keep_the_vector_file_bounded() {
    // With a checkpoint after every write, one id overwritten many times uses two slots.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create_with(dir.path(), checkpoint_every_write());
    let first = c.stats().expect("stats");
    for round in 0..200u64 {
        c.upsert(&[Id::Int(1)], &vector(round, DIM), None)
            .expect("overwrite");
        let stats = c.stats().expect("stats");
        assert!(
            stats.slot_high_water <= 2,
            "round {round}: {}",
            stats.slot_high_water
        );
        assert_eq!(stats.checkpoints, round + 1);
        assert_eq!(stats.wal_bytes, WAL_HEADER_LEN as u64);
    }
    let last = c.stats().expect("stats");
    assert_eq!(last.vector_file_bytes, first.vector_file_bytes);
    assert_eq!(c.get(&Id::Int(1)).expect("get"), Some(vector(199, DIM)));
    drop(c);
    drop(db);
    let db = open_ok(dir.path());
    let c = db.collection(NAME).expect("collection");
    assert_eq!(c.get(&Id::Int(1)).expect("get"), Some(vector(199, DIM)));
    assert_eq!(c.stats().expect("stats").records_replayed, 0);
    db.close().expect("close");
}

/// A workload with overwrites, deletes and a repeated id inside one batch, around two
/// checkpoints; the second one finds slots both free and freed since the first, so replay
/// starts from a free list whose order matters.
fn workload(c: &Collection) {
    put(c, &(0..8).collect::<Vec<_>>());
    put(c, &[1, 2]);
    c.delete(&[Id::Int(3), Id::Int(4), Id::Int(99)], None)
        .expect("delete");
    c.checkpoint().expect("checkpoint");
    put(c, &[10]);
    c.delete(&[Id::Int(5)], None).expect("delete");
    c.checkpoint().expect("checkpoint");
    // Replayed after the crash from here on: six records.
    put(c, &[10, 11, 12]);
    put(c, &[0, 0, 5]);
    c.delete(&[Id::Int(10)], None).expect("delete");
    c.upsert(&[Id::from("s")], &[-0.0, 1.0, 2.0, 3.0], None)
        .expect("string id");
    put(c, &[13, 14, 15, 16, 17]);
    put(c, &[11]);
}

#[test]
fn replay_rebuilds_exactly_the_state_before_the_crash() {
    // Replay is deterministic: its checkpoint equals the index a clean close writes, slot for slot.
    let crashed = tempfile::tempdir().expect("tempdir");
    let (db, c) = create_with(crashed.path(), DbOptions::default());
    workload(&c);
    let before = c.stats().expect("stats");
    drop(c);
    drop(db);
    let db = open_ok(crashed.path());
    let c = db.collection(NAME).expect("collection");
    let after = c.stats().expect("stats");
    assert_eq!(after.records_replayed, 6);
    assert_eq!(
        (after.count, after.slot_high_water, after.last_lsn),
        (before.count, before.slot_high_water, before.last_lsn)
    );
    let replayed = index_snapshot(crashed.path());
    db.close().expect("close");

    let clean = tempfile::tempdir().expect("tempdir");
    let (db, c) = create_with(clean.path(), DbOptions::default());
    workload(&c);
    db.close().expect("close");
    let closed = index_snapshot(clean.path());
    // Two collections, two uids: everything else is equal.
    assert_eq!(
        IndexSnapshot { uid: 0, ..replayed },
        IndexSnapshot {
            uid: 0,
            ..closed.clone()
        }
    );
    assert!(
        !closed.free_slots.is_empty(),
        "the workload should leave free slots"
    );

    // And the vectors in those slots are the same.
    let a = open_ok(crashed.path());
    let b = open_ok(clean.path());
    let (ca, cb) = (
        a.collection(NAME).expect("a"),
        b.collection(NAME).expect("b"),
    );
    for (id, _) in &closed.entries {
        assert_eq!(ca.get(id).expect("get"), cb.get(id).expect("get"), "{id}");
    }
    a.close().expect("close");
    b.close().expect("close");
}

#[test]
fn a_close_with_nothing_written_since_the_last_checkpoint_rewrites_no_index() {
    // Reads, a reserve and a checkpoint leave the indexes as the files hold them: close only
    // cuts the log to its header. One write since the last checkpoint, and close writes both
    // indexes anew (a rename: a new inode), and the write survives the reopen.
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let inodes = || {
        let ino = |p: PathBuf| fs::metadata(p).expect("index file").ino();
        (
            ino(index_path(dir.path())),
            ino(payload_index_path(dir.path())),
        )
    };
    let (db, c) = create(dir.path(), 2);
    put_with_payloads(&c, &[1, 2], 0);
    drop(c);
    db.close().expect("close");
    let written = inodes();

    let (db, c) = reopen(dir.path());
    assert_holds(&c, &[1, 2], &[3]);
    c.reserve(100).expect("reserve");
    c.checkpoint().expect("checkpoint"); // nothing new: rewrites them, then close need not
    let checkpointed = inodes();
    assert_ne!(checkpointed, written);
    drop(c);
    db.close().expect("close");
    assert_eq!(
        inodes(),
        checkpointed,
        "a close after only reads rewrote an index"
    );
    assert_eq!(
        fs::metadata(wal_path(dir.path())).expect("log").len(),
        WAL_HEADER_LEN as u64,
        "the closed log is its header"
    );

    let (db, c) = reopen(dir.path());
    assert_holds(&c, &[1, 2], &[3]);
    drop(c);
    db.close().expect("close");
    assert_eq!(
        inodes(),
        checkpointed,
        "a close after an open rewrote an index"
    );

    // A write, then a checkpoint: the files hold it, and close rewrites nothing again.
    let (db, c) = reopen(dir.path());
    put_with_payloads(&c, &[3], 0);
    c.checkpoint().expect("checkpoint");
    let with_three = inodes();
    drop(c);
    db.close().expect("close");
    assert_eq!(
        inodes(),
        with_three,
        "a close right after a checkpoint rewrote an index"
    );

    let (db, c) = reopen(dir.path());
    put_with_payloads(&c, &[4], 0);
    drop(c);
    db.close().expect("close");
    let (ids_after, payloads_after) = inodes();
    assert!(ids_after != with_three.0 && payloads_after != with_three.1);
    let (db, c) = reopen(dir.path());
    assert_holds(&c, &[1, 2, 3, 4], &[]);
    assert_eq!(c.stats().expect("stats").records_replayed, 0);
    db.close().expect("close");
}

#[test]
fn a_close_after_an_open_that_repaired_in_memory_writes_the_repair() {
    // A vector-only collection whose payloads.idx is gone: open rebuilds the (empty) payload
    // index from the log with nothing to replay and no checkpoint of its own, so the close,
    // with nothing logged, must still write the index again.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create(dir.path(), 2);
    put(&c, &[1, 2]);
    drop(c);
    db.close().expect("close");
    fs::remove_file(payload_index_path(dir.path())).expect("remove payloads.idx");

    let (db, c) = reopen(dir.path());
    assert!(!c.stats().expect("stats").payload_snapshot_used);
    drop(c);
    db.close().expect("close");
    assert!(
        payload_index_path(dir.path()).exists(),
        "close wrote no payloads.idx"
    );
    let (db, c) = reopen(dir.path());
    assert!(c.stats().expect("stats").payload_snapshot_used);
    assert_holds(&c, &[1, 2], &[3]);
    db.close().expect("close");
}
