//! Compaction of the payload log: it reclaims superseded and deleted frames, reads and
//! writes go on while it runs, it triggers itself past the garbage ratio, and a crash at
//! any of its steps leaves the old generation or the new one, never a mix.

mod common;

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{
    coll_dir, create, differences, ids, index_path, index_snapshot, payload, payload_index_path,
    payload_log_path, put, put_with_payloads, read, write, Want, NAME,
};
use keeldb_core::format::payload_log::{encode_header, PAYLOAD_LOG_HEADER_LEN};
use keeldb_core::format::{index, payload_index};
use keeldb_core::{Db, DbOptions, Durability, RecoveryPolicy};

const DIM: u32 = 4;

fn latest(ns: std::ops::Range<u64>, v: u64) -> Vec<(u64, Want)> {
    ns.map(|n| (n, Want::Present(n, Some(payload(n, v)))))
        .collect()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(coll_dir(dir))
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn compaction_reclaims_garbage_and_keeps_every_payload() {
    // Overwrites and deletes make garbage; compact() rewrites only live frames, once reopened too.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create(dir.path(), DIM);
    for v in 0..5 {
        put_with_payloads(&c, &(0..50).collect::<Vec<_>>(), v);
    }
    c.delete(&ids(&(40..50).collect::<Vec<_>>()), None)
        .expect("delete");
    put(&c, &[30]); // drops 30's payload
    let before = c.stats().expect("stats");
    assert!(
        before.payload_garbage_ratio() > 0.75,
        "{}",
        before.payload_garbage_ratio()
    );
    c.compact().expect("compact");
    let after = c.stats().expect("stats");
    assert_eq!(after.compactions, 1);
    assert_eq!(after.payload_log_generation, 2);
    assert_eq!(after.payload_garbage_bytes, 0);
    assert_eq!(after.payload_live_bytes, before.payload_live_bytes);
    assert_eq!(after.payload_log_bytes, after.payload_live_bytes + 32);
    assert_eq!(after.payload_count, 39);
    assert!(
        !payload_log_path(dir.path(), 1).exists(),
        "the old generation is deleted"
    );
    let mut want = latest(0..40, 4);
    want[30] = (30, Want::Present(30, None));
    want.extend((40..50).map(|n| (n, Want::Absent)));
    assert_eq!(differences(&c, &want), Vec::<String>::new());
    // Writes after compaction go to the new generation and survive a crash.
    put_with_payloads(&c, &[7], 9);
    want[7] = (7, Want::Present(7, Some(payload(7, 9))));
    drop(c);
    drop(db);
    let db = Db::open(dir.path(), DbOptions::default()).expect("reopen");
    let c = db.collection(NAME).expect("collection");
    assert_eq!(differences(&c, &want), Vec::<String>::new());
    let stats = c.stats().expect("stats");
    assert!(stats.payload_snapshot_used);
    assert_eq!(stats.payload_log_generation, 2);
    drop(c);
    db.close().expect("close");
    assert_eq!(
        files_in(dir.path()),
        [
            "collection.json",
            "ids.idx",
            "payloads-2.log",
            "payloads.idx",
            "vectors.dat",
            "vectors.wal"
        ]
    );
}

/// A 2 KiB payload, so that copying a few thousand takes long enough for writes to land
/// between compaction's first and last steps.
fn big(n: u64, v: u64) -> Vec<u8> {
    format!(r#"{{"n":{n},"v":{v},"pad":"{}"}}"#, "p".repeat(2000)).into_bytes()
}

fn put_big(c: &keeldb_core::Collection, ns: &[u64], v: u64) {
    let payloads: Vec<Vec<u8>> = ns.iter().map(|&n| big(n, v)).collect();
    let refs: Vec<Option<&[u8]>> = payloads.iter().map(|p| Some(p.as_slice())).collect();
    c.upsert_with_payloads(
        &ids(ns),
        &common::flat(ns, DIM),
        &refs,
        Some(Durability::None),
    )
    .expect("upsert");
}

#[test]
fn reads_and_writes_go_on_while_compaction_runs() {
    // Readers never see a missing or wrong payload and writers are never refused during
    // repeated compactions; writes made while one ran are in the new generation, and every
    // acknowledged write is there after a crash.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create(dir.path(), DIM);
    let all: Vec<u64> = (0..2000).collect();
    for v in 0..2 {
        put_big(&c, &all, v);
    }
    let stop = AtomicBool::new(false);
    let (reads, last_v, tail_frames) = std::thread::scope(|s| {
        let readers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let mut reads = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let got = c
                            .get_many(&ids(&all), true, true)
                            .expect("read during compaction");
                        for (n, record) in all.iter().zip(got) {
                            let record = record.unwrap_or_else(|| panic!("id {n} missing"));
                            let text =
                                String::from_utf8(record.payload.expect("payload")).expect("utf8");
                            assert!(text.starts_with(&format!("{{\"n\":{n},")), "id {n}: {text}");
                        }
                        reads += 1;
                    }
                    reads
                })
            })
            .collect();
        let writer = s.spawn(|| {
            let mut v = 2;
            while !stop.load(Ordering::Relaxed) {
                // Overwrites, and a new id each time whose frame is never superseded.
                put_big(&c, &all[..5], v);
                put_big(&c, &[10_000 + v], v);
                v += 1;
            }
            v - 1
        });
        // Stops the other threads however this one ends: a failed compaction would otherwise
        // leave the scope waiting for them forever instead of failing the test.
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let stopping = StopOnDrop(&stop);
        // Frames written while a compaction copied are its tail: count them.
        let mut tail_frames = 0;
        for _ in 0..5 {
            let before = c.stats().expect("stats").last_lsn;
            c.compact().expect("compact");
            tail_frames += c.stats().expect("stats").last_lsn - before;
        }
        drop(stopping);
        let last_v = writer.join().expect("writer");
        let reads: u64 = readers.into_iter().map(|r| r.join().expect("reader")).sum();
        (reads, last_v, tail_frames)
    });
    assert!(
        reads > 0 && tail_frames > 0,
        "{reads} reads, {tail_frames} writes during compactions"
    );
    assert!(
        c.stats().expect("stats").compactions >= 5,
        "writes may add automatic ones"
    );
    let want: Vec<(u64, Want)> = all
        .iter()
        .map(|&n| {
            (
                n,
                Want::Present(n, Some(big(n, if n < 5 { last_v } else { 1 }))),
            )
        })
        .chain((2..=last_v).map(|v| {
            (
                10_000 + v,
                Want::Present(10_000 + v, Some(big(10_000 + v, v))),
            )
        }))
        .collect();
    assert_eq!(differences(&c, &want), Vec::<String>::new());
    c.flush().expect("flush");
    drop(c);
    drop(db); // crash
    let db = Db::open(dir.path(), DbOptions::default()).expect("reopen");
    let c = db.collection(NAME).expect("collection");
    assert_eq!(differences(&c, &want), Vec::<String>::new());
    db.close().expect("close");
}

#[test]
fn compaction_triggers_itself_past_the_garbage_ratio() {
    // With a small minimum size, overwriting the same records compacts automatically and
    // the log stays bounded.
    let dir = tempfile::tempdir().expect("tempdir");
    let options = DbOptions {
        compaction_garbage_ratio: 0.5,
        compaction_min_bytes: 8 << 10,
        ..DbOptions::default()
    };
    let db = Db::open(dir.path(), options).expect("open");
    let c = db
        .create_collection(NAME, DIM, keeldb_core::Metric::Cosine)
        .expect("create");
    let ns: Vec<u64> = (0..20).collect();
    let mut largest = 0;
    for v in 0..100 {
        put_with_payloads(&c, &ns, v);
        let stats = c.stats().expect("stats");
        largest = largest.max(stats.payload_log_bytes);
        assert_eq!(stats.compaction_error, None);
    }
    let stats = c.stats().expect("stats");
    assert!(stats.compactions >= 10, "{} compactions", stats.compactions);
    assert!(largest < 4 * (8 << 10), "the log grew to {largest} bytes");
    assert_eq!(differences(&c, &latest(0..20, 99)), Vec::<String>::new());
    db.close().expect("close");
    // An out-of-range ratio is refused.
    for ratio in [0.0, 1.5, f64::NAN] {
        let bad = DbOptions {
            compaction_garbage_ratio: ratio,
            ..DbOptions::default()
        };
        assert_eq!(
            common::code(Db::open(dir.path(), bad)),
            "KEEL_INVALID_ARGUMENT",
            "{ratio}"
        );
    }
}

/// A compaction crash point: its name, the files (gen 1 log, gen 2 log, temp file, the
/// checkpoint's ids.idx and payloads.idx) and the generation open must settle on.
type Case<'a> = (
    &'static str,
    Option<&'a [u8]>,
    Option<&'a [u8]>,
    Option<&'a [u8]>,
    (&'a [u8], &'a [u8]),
    u64,
);

#[test]
fn a_crash_at_any_step_of_compaction_leaves_the_old_generation_or_the_new() {
    // The directory as each step leaves it: a partial temp file, the new generation renamed
    // in beside the old with the old snapshot, the old one not yet deleted, the snapshot
    // not yet rewritten. Every one opens to the same records, on the right generation.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create(dir.path(), DIM);
    for v in 0..4 {
        put_with_payloads(&c, &(0..30).collect::<Vec<_>>(), v);
    }
    c.checkpoint().expect("checkpoint");
    let old_log = read(&payload_log_path(dir.path(), 1));
    let old_ids = read(&index_path(dir.path()));
    let old_snapshot = read(&payload_index_path(dir.path()));
    let old_checkpoint = (&old_ids[..], &old_snapshot[..]);
    c.compact().expect("compact");
    let new_log = read(&payload_log_path(dir.path(), 2));
    let new_ids = read(&index_path(dir.path()));
    let new_snapshot = read(&payload_index_path(dir.path()));
    let new_checkpoint = (&new_ids[..], &new_snapshot[..]);
    drop(c);
    db.close().expect("close");
    let want = latest(0..30, 3);
    let temp = coll_dir(dir.path()).join("payloads-2.log.tmp");
    let p1 = payload_log_path(dir.path(), 1);
    let p2 = payload_log_path(dir.path(), 2);
    // (step, files present: gen 1 log, gen 2 log, temp file, snapshot; expected generation)
    let cases: [Case<'_>; 5] = [
        (
            "copying",
            Some(&old_log),
            None,
            Some(&new_log[..new_log.len() / 2]),
            old_checkpoint,
            1,
        ),
        (
            "before the rename",
            Some(&old_log),
            None,
            Some(&new_log),
            old_checkpoint,
            1,
        ),
        (
            "after the rename",
            Some(&old_log),
            Some(&new_log),
            None,
            old_checkpoint,
            2,
        ),
        (
            "after deleting the old log",
            None,
            Some(&new_log),
            None,
            old_checkpoint,
            2,
        ),
        (
            "after the new snapshot",
            Some(&old_log),
            Some(&new_log),
            None,
            new_checkpoint,
            2,
        ),
    ];
    let strict = DbOptions {
        recovery: RecoveryPolicy::Strict,
        ..DbOptions::default()
    };
    for (step, gen1, gen2, tmp, (ids_index, snapshot), generation) in cases {
        for (path, bytes) in [(&p1, gen1), (&p2, gen2), (&temp, tmp)] {
            match bytes {
                Some(bytes) => write(path, bytes),
                None => {
                    let _ = fs::remove_file(path);
                }
            }
        }
        write(&index_path(dir.path()), ids_index);
        write(&payload_index_path(dir.path()), snapshot);
        let db = Db::open(dir.path(), strict).expect(step);
        let c = db.collection(NAME).expect("collection");
        let stats = c.stats().expect("stats");
        assert_eq!(stats.payload_log_generation, generation, "{step}");
        assert_eq!(stats.corrupt_records_skipped, 0, "{step}");
        assert_eq!(stats.warnings, Vec::<String>::new(), "{step}");
        assert_eq!(differences(&c, &want), Vec::<String>::new(), "{step}");
        assert!(!temp.exists(), "{step}: the temp file is removed");
        assert_eq!(
            p1.exists(),
            generation == 1,
            "{step}: only the current generation is kept"
        );
        drop(c);
        db.close().expect("close");
    }
}

#[test]
fn a_damaged_frame_stops_compaction_without_harm() {
    // Compaction checks each frame it copies: damage is reported, never laundered, and the
    // collection keeps working on the old generation.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create(dir.path(), DIM);
    put_with_payloads(&c, &[1, 2, 3], 0);
    c.checkpoint().expect("checkpoint");
    let mut log = read(&payload_log_path(dir.path(), 1));
    let at = log.len() - 10;
    log[at] ^= 1;
    write(&payload_log_path(dir.path(), 1), &log);
    assert_eq!(common::code(c.compact()), "KEEL_CORRUPT");
    let stats = c.stats().expect("stats");
    assert!(!stats.poisoned);
    assert_eq!((stats.payload_log_generation, stats.compactions), (1, 0));
    assert!(!coll_dir(dir.path()).join("payloads-2.log.tmp").exists());
    put_with_payloads(&c, &[4], 0);
    assert_eq!(
        differences(&c, &[(4, Want::Present(4, Some(payload(4, 0))))]),
        Vec::<String>::new()
    );
    drop(c);
    db.close().expect("close");
}

/// Opens the collection in `dir` under `recovery`, whether the database's open or the
/// collection's reports a failure.
/// Collection [`NAME`] in `dir` holding ids 0..10, each with payload version 0.
fn ten_with_payloads(dir: &Path) -> (Db, std::sync::Arc<keeldb_core::Collection>) {
    let (db, c) = create(dir, DIM);
    put_with_payloads(&c, &(0..10).collect::<Vec<_>>(), 0);
    (db, c)
}

/// Opens `dir` under `recovery`, checks that ids 0..10 hold payload version `v`, closes it
/// and returns its stats as opened.
fn reopened_holding(dir: &Path, recovery: RecoveryPolicy, v: u64) -> keeldb_core::CollectionStats {
    let (db, c) = open_collection(dir, recovery).expect("opens");
    let stats = c.stats().expect("stats");
    assert_eq!(differences(&c, &latest(0..10, v)), Vec::<String>::new());
    drop(c);
    db.close().expect("close");
    stats
}

fn open_collection(
    dir: &Path,
    recovery: RecoveryPolicy,
) -> keeldb_core::Result<(Db, std::sync::Arc<keeldb_core::Collection>)> {
    let db = common::open(dir, recovery)?;
    let c = db.collection(NAME)?;
    Ok((db, c))
}

/// Opens `dir` under each policy: each is refused with KEEL_CORRUPT naming `file`, and
/// changes no file. `wrong` says what an open that succeeded would have done.
fn refused_under_either_policy(dir: &Path, file: &str, wrong: &str) {
    let before = common::tree(dir);
    for policy in [RecoveryPolicy::Strict, RecoveryPolicy::Salvage] {
        match open_collection(dir, policy) {
            Ok(_) => panic!("{policy:?}: {wrong}"),
            Err(e) => {
                assert_eq!(e.code(), "KEEL_CORRUPT", "{policy:?}");
                assert!(e.to_string().contains(file), "{e}");
            }
        }
        assert_eq!(common::tree(dir), before, "a refused open changes no file");
    }
}

#[test]
fn a_payload_log_of_a_generation_no_compaction_made_is_refused_under_either_policy() {
    // A stray payloads-9.log with a valid header and no frames, beside a collection whose
    // ids.idx names generation 1. Taken as the newest generation, it used to drop every
    // payload and delete the real log, under either policy and without a warning. Left in
    // place under salvage, it would pass for a compaction's once a later checkpoint named
    // generation 8: it is refused under both.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = ten_with_payloads(dir.path());
    drop(c);
    db.close().expect("close");
    write(&payload_log_path(dir.path(), 9), &encode_header(9, 0));
    refused_under_either_policy(
        dir.path(),
        "payloads-9.log",
        "a stray payload log was accepted",
    );
    fs::remove_file(payload_log_path(dir.path(), 9)).expect("move the stray away");
    reopened_holding(dir.path(), RecoveryPolicy::Strict, 0);
}

#[test]
fn an_older_generation_put_back_is_left_alone_and_not_read() {
    // Only the generation just before the current one is a compaction's leftover, and only
    // that one is deleted. An older one (a backup copy put back) is the user's: open warns
    // and leaves it.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = ten_with_payloads(dir.path());
    c.checkpoint().expect("checkpoint");
    let gen1 = read(&payload_log_path(dir.path(), 1));
    c.compact().expect("compact");
    put_with_payloads(&c, &(0..10).collect::<Vec<_>>(), 1);
    c.compact().expect("compact again");
    drop(c);
    db.close().expect("close");
    assert_eq!(index_snapshot(dir.path()).payload_generation, 3);
    write(&payload_log_path(dir.path(), 1), &gen1);
    let stats = reopened_holding(dir.path(), RecoveryPolicy::Strict, 1);
    assert_eq!(stats.payload_log_generation, 3);
    assert_eq!(stats.corrupt_records_skipped, 0);
    assert!(
        stats
            .warnings
            .iter()
            .any(|w| w.contains("payloads-1.log") && w.contains("left in place")),
        "{:?}",
        stats.warnings
    );
    assert!(
        payload_log_path(dir.path(), 1).exists(),
        "the user's copy is still there"
    );
}

#[test]
fn a_missing_current_generation_is_refused_under_strict_and_read_around_under_salvage() {
    // ids.idx names generation 2 (a compaction ran), but only generation 1 is there: the
    // payloads compaction wrote are gone. Strict refuses; salvage reads what there is.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = ten_with_payloads(dir.path());
    c.checkpoint().expect("checkpoint");
    let gen1 = read(&payload_log_path(dir.path(), 1));
    c.compact().expect("compact");
    drop(c);
    db.close().expect("close");
    assert_eq!(index_snapshot(dir.path()).payload_generation, 2);
    fs::remove_file(payload_log_path(dir.path(), 2)).expect("remove generation 2");
    write(&payload_log_path(dir.path(), 1), &gen1);
    let before = common::tree(dir.path());
    let refused = open_collection(dir.path(), RecoveryPolicy::Strict);
    assert_eq!(common::code(refused), "KEEL_CORRUPT");
    assert_eq!(
        common::tree(dir.path()),
        before,
        "a refused open changes no file"
    );

    let stats = reopened_holding(dir.path(), RecoveryPolicy::Salvage, 0);
    assert_eq!(stats.payload_log_generation, 1);
    assert_eq!(stats.corrupt_records_skipped, 1);
}

#[test]
fn the_largest_generation_is_refused_by_compaction_not_wrapped() {
    // Generation u64::MAX (a forged ids.idx and log name it) used to wrap to 0 on the next
    // compaction: payloads-0.log, which no open lists, so the collection never opened again.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = ten_with_payloads(dir.path());
    drop(c);
    db.close().expect("close");
    let mut log = read(&payload_log_path(dir.path(), 1));
    log[..PAYLOAD_LOG_HEADER_LEN].copy_from_slice(&encode_header(u64::MAX, 0));
    fs::remove_file(payload_log_path(dir.path(), 1)).expect("remove generation 1");
    write(&payload_log_path(dir.path(), u64::MAX), &log);
    let mut snapshot = index::decode(&read(&index_path(dir.path()))).expect("decode ids.idx");
    snapshot.payload_generation = u64::MAX;
    write(&index_path(dir.path()), &index::encode(&snapshot));
    let mut payloads =
        payload_index::decode(&read(&payload_index_path(dir.path()))).expect("decode");
    payloads.generation = u64::MAX;
    write(
        &payload_index_path(dir.path()),
        &payload_index::encode(&payloads),
    );

    let (db, c) = open_collection(dir.path(), RecoveryPolicy::Strict).expect("opens");
    assert_eq!(c.stats().expect("stats").payload_log_generation, u64::MAX);
    assert_eq!(common::code(c.compact()), "KEEL_CORRUPT");
    assert_eq!(differences(&c, &latest(0..10, 0)), Vec::<String>::new());
    drop(c);
    db.close().expect("close");
    reopened_holding(dir.path(), RecoveryPolicy::Strict, 0);
}

#[test]
fn a_next_generation_without_the_uid_ids_idx_has_is_not_this_collections() {
    // Generation P+1 is what a crash after a compaction's rename leaves, so its name alone
    // made it current. Another collection's log of that generation written before format 3
    // (uid 0, which matches any) was read, and this collection's log deleted. Once ids.idx
    // carries the uid, every compaction since wrote it: a P+1 without it is refused.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = ten_with_payloads(dir.path());
    drop(c);
    db.close().expect("close");
    assert_ne!(index_snapshot(dir.path()).uid, 0);
    write(&payload_log_path(dir.path(), 2), &encode_header(2, 0));
    refused_under_either_policy(
        dir.path(),
        "payloads-2.log",
        "another collection's next generation was read",
    );
}

#[test]
fn the_generation_below_is_deleted_only_if_its_header_says_it_is_ours() {
    // A compaction's leftover is the generation just below the current one, and only that
    // one is deleted: first its header must name that generation and this collection.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = ten_with_payloads(dir.path());
    c.compact().expect("compact");
    c.compact().expect("compact again");
    drop(c);
    db.close().expect("close");
    let foreign = encode_header(2, index_snapshot(dir.path()).uid ^ 1);
    write(&payload_log_path(dir.path(), 2), &foreign);
    let stats = reopened_holding(dir.path(), RecoveryPolicy::Strict, 0);
    assert_eq!(stats.payload_log_generation, 3);
    assert!(
        stats.warnings.iter().any(|w| w.contains("payloads-2.log")),
        "{:?}",
        stats.warnings
    );
    assert_eq!(
        read(&payload_log_path(dir.path(), 2)),
        foreign,
        "left as it was"
    );
}

#[test]
fn a_backup_copied_over_a_directory_compacted_since_is_refused() {
    // A backup's files copied over the live directory after a compaction there: ids.idx and
    // payloads-1.log are the backup's, payloads-2.log the live compaction's. By their names
    // that is a crash between step 3's rename and its checkpoint, and open used to take
    // generation 2 (payloads the backup's log never had) and delete the backup's own log.
    // Generation 2's header names the checkpoint it was made beside, which this ids.idx
    // is not: refused under either policy, nothing changed, and with the file moved away
    // the backup opens as it was taken.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = ten_with_payloads(dir.path());
    c.checkpoint().expect("checkpoint");
    drop(c);
    db.close().expect("close");
    let backup: Vec<(std::path::PathBuf, Vec<u8>)> = fs::read_dir(coll_dir(dir.path()))
        .expect("read dir")
        .map(|e| {
            let path = e.expect("entry").path();
            let bytes = read(&path);
            (path, bytes)
        })
        .collect();
    let (db, c) = open_collection(dir.path(), RecoveryPolicy::Strict).expect("reopen");
    for v in 1..4 {
        put_with_payloads(&c, &(0..10).collect::<Vec<_>>(), v);
    }
    c.compact().expect("compact");
    drop(c);
    db.close().expect("close");
    assert!(!payload_log_path(dir.path(), 1).exists());
    for (path, bytes) in &backup {
        write(path, bytes);
    }
    assert!(
        payload_log_path(dir.path(), 2).exists(),
        "the live compaction's is left"
    );
    refused_under_either_policy(
        dir.path(),
        "payloads-2.log",
        "the newer compaction's log was taken for the backup's",
    );
    let Err(why) = open_collection(dir.path(), RecoveryPolicy::Strict) else {
        panic!("refused above, opened now");
    };
    let why = why.to_string();
    assert!(
        why.contains("ids.idx is not the one it was made beside, as when a backup"),
        "{why}"
    );
    fs::remove_file(payload_log_path(dir.path(), 2)).expect("move it away");
    reopened_holding(dir.path(), RecoveryPolicy::Strict, 0);
}
