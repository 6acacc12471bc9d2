//! Records survive a clean close and reopen, and a crash followed by replay, bit for bit.

mod common;

use common::{create, open_ok, reopen};
use keeldb_core::{Collection, Id};

const DIM: u32 = 4;

/// Vectors whose exact bits a sloppy float path would change.
fn awkward_vectors() -> Vec<(Id, [f32; 4])> {
    vec![
        (Id::from("alpha"), [-0.0, 0.0, 1.0, -1.0]),
        (
            Id::from("subnormal"),
            [
                f32::from_bits(1),
                f32::MIN_POSITIVE / 2.0,
                -f32::from_bits(7),
                0.1,
            ],
        ),
        (
            Id::from("é-ünïcode"),
            [f32::MAX, f32::MIN, f32::EPSILON, 1e-30],
        ),
        (Id::Int(0), [1.5, 2.5, 3.5, 4.5]),
        (Id::Int((1 << 53) - 1), [-7.25, 8.0, 9.0, 10.0]),
        // "1" and 1 are different records.
        (Id::from("1"), [11.0, 12.0, 13.0, 14.0]),
        (Id::Int(1), [21.0, 22.0, 23.0, 24.0]),
    ]
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Writes the workload: awkward vectors one record each, an overwrite, deletes (one of an
/// id that never existed) and a multi-record batch. Returns the number of records written.
fn write_workload(c: &Collection) -> u64 {
    let mut records = 0;
    for (id, v) in awkward_vectors() {
        c.upsert(&[id], &v, None).expect("upsert");
        records += 1;
    }
    c.upsert(&[Id::from("alpha")], &[5.0, 6.0, 7.0, -0.0], None)
        .expect("overwrite");
    records += 1;
    let existing = c
        .delete(&[Id::Int(0), Id::from("never-there")], None)
        .expect("delete");
    assert_eq!(existing, 1, "one of the two deleted ids existed");
    records += 1;
    let batch: Vec<Id> = (100..110).map(Id::Int).collect();
    let flat: Vec<f32> = (100..110)
        .flat_map(|n| [n as f32, -(n as f32), 0.5, 0.25])
        .collect();
    c.upsert(&batch, &flat, None).expect("batch");
    records += 1;
    records
}

fn assert_workload(c: &Collection) {
    for (id, v) in awkward_vectors() {
        let expected = match &id {
            Id::Str(s) if &**s == "alpha" => vec![5.0, 6.0, 7.0, -0.0],
            Id::Int(0) => {
                assert_eq!(c.get(&id).expect("get"), None, "deleted id 0 came back");
                continue;
            }
            _ => v.to_vec(),
        };
        let got = c
            .get(&id)
            .expect("get")
            .unwrap_or_else(|| panic!("{id} lost"));
        assert_eq!(bits(&got), bits(&expected), "bits of {id}");
    }
    assert_eq!(c.get(&Id::from("never-there")).expect("get"), None);
    for n in 100..110u64 {
        let got = c.get(&Id::Int(n)).expect("get").expect("batch record");
        assert_eq!(bits(&got), bits(&[n as f32, -(n as f32), 0.5, 0.25]));
    }
    // 7 awkward, minus the deleted 0, plus 10 from the batch.
    assert_eq!(c.stats().expect("stats").count, 16);
}

#[test]
fn records_survive_close_and_reopen_without_replay() {
    // A clean close checkpoints: everything is there and reopening replays nothing.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create(dir.path(), DIM);
    write_workload(&c);
    assert_workload(&c);
    db.close().expect("close");
    let (db, c) = reopen(dir.path());
    assert_workload(&c);
    let stats = c.stats().expect("stats");
    assert_eq!(stats.records_replayed, 0);
    assert_eq!(
        stats.checkpoints, 0,
        "nothing to replay, so no checkpoint at open"
    );
    assert_eq!(stats.wal_bytes, 32);
    db.close().expect("close");
}

#[test]
fn records_survive_a_crash_through_replay() {
    // Dropping without close leaves every fsynced record in the log; replay restores them all.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create(dir.path(), DIM);
    let records = write_workload(&c);
    let before = c.stats().expect("stats");
    drop(c);
    drop(db);
    let (db, c) = reopen(dir.path());
    assert_workload(&c);
    let after = c.stats().expect("stats");
    assert_eq!(after.records_replayed, records);
    assert_eq!(after.last_lsn, before.last_lsn);
    assert_eq!(
        after.checkpoint_lsn, before.last_lsn,
        "replay is checkpointed at open"
    );
    assert_eq!(after.slot_high_water, before.slot_high_water);
    assert_eq!(
        (after.corrupt_records_skipped, after.torn_bytes_truncated),
        (0, 0)
    );
    assert!(after.warnings.is_empty(), "{:?}", after.warnings);
    // A second crash right after recovery replays nothing: the log was emptied by that
    // checkpoint.
    drop(c);
    drop(db);
    let (db, c) = reopen(dir.path());
    assert_workload(&c);
    assert_eq!(c.stats().expect("stats").records_replayed, 0);
    db.close().expect("close");
}

#[test]
fn lsns_continue_across_a_crash_and_a_reopen() {
    // Writes after recovery get sequence numbers above every earlier one, so they are replayed.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create(dir.path(), DIM);
    common::put(&c, &[1]);
    common::put(&c, &[2]);
    drop(c);
    drop(db);
    let (db, c) = reopen(dir.path());
    assert_eq!(c.stats().expect("stats").last_lsn, 2);
    common::put(&c, &[3]);
    assert_eq!(c.stats().expect("stats").last_lsn, 3);
    drop(c);
    drop(db);
    let (db, c) = reopen(dir.path());
    let stats = c.stats().expect("stats");
    assert_eq!((stats.records_replayed, stats.last_lsn), (1, 3));
    common::assert_holds(&c, &[1, 2, 3], &[]);
    db.close().expect("close");
}

#[test]
fn collections_are_independent_and_all_recovered() {
    // Two collections of different dimensions each replay their own log after a crash.
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open_ok(dir.path());
    let a = db
        .create_collection("a", 2, keeldb_core::Metric::Cosine)
        .expect("a");
    let b = db
        .create_collection("b", 3, keeldb_core::Metric::Dot)
        .expect("b");
    a.upsert(&[Id::Int(1)], &[1.0, 2.0], None).expect("a1");
    b.upsert(&[Id::Int(1)], &[3.0, 4.0, 5.0], None).expect("b1");
    drop((a, b));
    drop(db);
    let db = open_ok(dir.path());
    assert_eq!(db.list_collections().expect("list"), vec!["a", "b"]);
    let a = db.collection("a").expect("a");
    let b = db.collection("b").expect("b");
    assert_eq!(a.get(&Id::Int(1)).expect("get"), Some(vec![1.0, 2.0]));
    assert_eq!(b.get(&Id::Int(1)).expect("get"), Some(vec![3.0, 4.0, 5.0]));
    assert_eq!(b.metric(), keeldb_core::Metric::Dot);
    db.close().expect("close");
}

#[test]
fn deleting_only_missing_ids_reports_none_and_changes_nothing_visible() {
    // A delete of ids that never existed succeeds, reports 0 and leaves the records alone.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create(dir.path(), 2);
    common::put(&c, &[1]);
    let missing = [Id::Int(2), Id::from("1"), Id::from("nope")];
    assert_eq!(c.delete(&missing, None).expect("delete"), 0);
    assert_eq!(c.stats().expect("stats").count, 1);
    drop(c);
    drop(db);
    let (db, c) = reopen(dir.path());
    common::assert_holds(&c, &[1], &[2]);
    assert_eq!(c.stats().expect("stats").records_replayed, 2);
    db.close().expect("close");
}

#[test]
fn a_delete_counts_each_removed_record_once() {
    // The count a delete returns is the number of live records it removed, from the batch
    // as applied: an id given twice counts once, a missing one not at all.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create(dir.path(), 2);
    common::put(&c, &[1, 2]);
    let ids = [Id::Int(1), Id::Int(1), Id::Int(3), Id::Int(2)];
    assert_eq!(c.delete(&ids, None).expect("delete"), 2);
    assert_eq!(c.stats().expect("stats").count, 0);
    db.close().expect("close");
}

#[test]
fn concurrent_writers_leave_a_log_that_replays_in_order() {
    // Writers on several threads leave a log whose lsns increase in file order and replay whole.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create(dir.path(), 2);
    let threads = 4u64;
    let per_thread = 25u64;
    std::thread::scope(|s| {
        for t in 0..threads {
            let c = &c;
            s.spawn(move || {
                for i in 0..per_thread {
                    common::put(c, &[t * 1000 + i]);
                    if i % 5 == 0 {
                        c.delete(&[Id::Int(t * 1000 + i)], None).expect("delete");
                    }
                }
            });
        }
    });
    let before = c.stats().expect("stats");
    drop(c);
    drop(db);
    let (db, c) = reopen(dir.path());
    let after = c.stats().expect("stats");
    assert_eq!(after.records_replayed, before.last_lsn);
    assert_eq!(after.count, before.count);
    assert_eq!(after.count, threads * (per_thread - per_thread / 5));
    for t in 0..threads {
        for i in 0..per_thread {
            let expected = (i % 5 != 0).then(|| common::vector(t * 1000 + i, 2));
            assert_eq!(c.get(&Id::Int(t * 1000 + i)).expect("get"), expected);
        }
    }
    db.close().expect("close");
}
