//! Payloads: stored and read back byte for byte with their vectors, replaced and merged
//! without the vector, bounded by the limits, and kept across reopening.

mod common;

use common::{
    code, config_path, create, differences, flat, ids, open_ok, payload, payload_index_path,
    payload_log_path, put, put_with_payloads, read, read_log, vector, Want, NAME,
};
use keeldb_core::format::wal::WAL_HEADER_LEN;
use keeldb_core::types::{PAYLOAD_BYTES_MAX, PAYLOAD_DEPTH_MAX};
use keeldb_core::{Id, Record, RecoveryPolicy};

const DIM: u32 = 4;

#[test]
fn payloads_round_trip_with_their_vectors_and_survive_reopening() {
    // What was written is what is read, with the vector or without, before and after reopening.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create(dir.path(), DIM);
    put_with_payloads(&c, &[1, 2, 3], 0);
    put(&c, &[4]);
    let texts: [&[u8]; 5] = [
        b"null",
        b"[]",
        b"\"\xc3\xa9\xf0\x9f\x98\x80\"",
        b"-1.5e-300",
        b" {\"a\" : {} } ",
    ];
    for (i, text) in texts.iter().enumerate() {
        c.upsert_with_payloads(
            &[Id::from(format!("s{i}").as_str())],
            &vector(9, DIM),
            &[Some(text)],
            None,
        )
        .expect("upsert");
    }
    let check = |c: &keeldb_core::Collection| {
        let want: Vec<(u64, Want)> = vec![
            (1, Want::Present(1, Some(payload(1, 0)))),
            (2, Want::Present(2, Some(payload(2, 0)))),
            (3, Want::Present(3, Some(payload(3, 0)))),
            (4, Want::Present(4, None)),
            (5, Want::Absent),
        ];
        assert_eq!(differences(c, &want), Vec::<String>::new());
        for (i, text) in texts.iter().enumerate() {
            let id = Id::from(format!("s{i}").as_str());
            let got = c.get_record(&id, false, true).expect("get");
            assert_eq!(
                got,
                Some(Record {
                    vector: None,
                    payload: Some(text.to_vec())
                })
            );
        }
        assert_eq!(
            c.get_record(&Id::Int(1), true, false).expect("get"),
            Some(Record {
                vector: Some(vector(1, DIM)),
                payload: None
            })
        );
        let many = c.get_many(&ids(&[3, 5, 4]), false, true).expect("get many");
        assert_eq!(
            many,
            vec![
                Some(Record {
                    vector: None,
                    payload: Some(payload(3, 0))
                }),
                None,
                Some(Record {
                    vector: None,
                    payload: None
                }),
            ]
        );
        assert_eq!(
            c.stats().expect("stats").payload_count,
            3 + texts.len() as u64
        );
    };
    check(&c);
    drop(c);
    db.close().expect("close");
    let db = open_ok(dir.path());
    let c = db.collection(NAME).expect("collection");
    check(&c);
    let stats = c.stats().expect("stats");
    assert!(stats.payload_snapshot_used);
    assert_eq!(stats.payload_records_replayed, 0);
    db.close().expect("close");
}

#[test]
fn an_upsert_without_a_payload_drops_the_old_one_and_deletes_drop_both() {
    // Upsert replaces the whole record; a delete leaves nothing behind, and both survive reopening.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create(dir.path(), DIM);
    put_with_payloads(&c, &[1, 2, 3], 0);
    // In one batch: 1 gets a payload then loses it; 2 is deleted; 3 is overwritten.
    c.upsert_with_payloads(
        &ids(&[1, 1, 3]),
        &flat(&[1, 1, 3], DIM),
        &[Some(b"1"), None, Some(b"3")],
        None,
    )
    .expect("upsert");
    c.delete(&ids(&[2]), None).expect("delete");
    put(&c, &[2]);
    let want = [
        (1, Want::Present(1, None)),
        (2, Want::Present(2, None)),
        (3, Want::Present(3, Some(b"3".to_vec()))),
    ];
    assert_eq!(differences(&c, &want), Vec::<String>::new());
    drop(c);
    drop(db); // a crash: the log replays it all
    let db = open_ok(dir.path());
    let c = db.collection(NAME).expect("collection");
    assert_eq!(differences(&c, &want), Vec::<String>::new());
    assert_eq!(c.stats().expect("stats").payload_count, 1);
    db.close().expect("close");
}

#[test]
fn update_and_merge_keep_the_vector_and_resolve_at_write_time() {
    // updatePayload replaces or clears; merge is shallow, in place; a missing id writes nothing.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create(dir.path(), DIM);
    put_with_payloads(&c, &[1], 0);
    put(&c, &[2]);
    assert!(c
        .update_payload(
            &Id::Int(1),
            Some(br#"{"a":1,"b":{"x":1},"c":3}"#),
            false,
            None
        )
        .expect("set"));
    assert!(c
        .update_payload(
            &Id::Int(1),
            Some(br#"{"b":{"y":2},"d":[null]}"#),
            true,
            None
        )
        .expect("merge"));
    assert!(c
        .update_payload(&Id::Int(2), Some(br#"{"new":true}"#), true, None)
        .expect("merge into none"));
    let lsn = c.stats().expect("stats").last_lsn;
    assert!(!c
        .update_payload(&Id::Int(7), Some(b"1"), false, None)
        .expect("missing"));
    assert!(!c
        .update_payload(&Id::Int(7), Some(b"{}"), true, None)
        .expect("missing"));
    assert_eq!(
        c.stats().expect("stats").last_lsn,
        lsn,
        "nothing logged for a missing id"
    );
    let want = [
        (
            1,
            Want::Present(1, Some(br#"{"a":1,"b":{"y":2},"c":3,"d":[null]}"#.to_vec())),
        ),
        (2, Want::Present(2, Some(br#"{"new":true}"#.to_vec()))),
        (7, Want::Absent),
    ];
    assert_eq!(differences(&c, &want), Vec::<String>::new());
    drop(c);
    drop(db);
    let db = open_ok(dir.path());
    let c = db.collection(NAME).expect("collection");
    assert_eq!(differences(&c, &want), Vec::<String>::new());
    assert!(c
        .update_payload(&Id::Int(1), None, false, None)
        .expect("clear"));
    assert_eq!(
        differences(&c, &[(1, Want::Present(1, None))]),
        Vec::<String>::new()
    );
    db.close().expect("close");
}

#[test]
fn concurrent_merges_lose_no_key() {
    // Merges resolved under the writer lock: eight threads' keys all end up in the payload.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create(dir.path(), DIM);
    put_with_payloads(&c, &[1], 0);
    std::thread::scope(|s| {
        for t in 0..8 {
            let c = &c;
            s.spawn(move || {
                for k in 0..10 {
                    let patch = format!(r#"{{"t{t}k{k}":{k}}}"#);
                    c.update_payload(
                        &Id::Int(1),
                        Some(patch.as_bytes()),
                        true,
                        Some(keeldb_core::Durability::None),
                    )
                    .expect("merge");
                }
            });
        }
    });
    let got = c
        .get_record(&Id::Int(1), false, true)
        .expect("get")
        .and_then(|r| r.payload);
    let text = String::from_utf8(got.expect("payload")).expect("utf8");
    for t in 0..8 {
        for k in 0..10 {
            assert!(
                text.contains(&format!("\"t{t}k{k}\":{k}")),
                "t{t}k{k} lost: {text}"
            );
        }
    }
    db.close().expect("close");
}

#[test]
fn payloads_beyond_the_limits_are_refused_and_nothing_is_written() {
    // Oversized, too deep, not JSON, not UTF-8, or a bad merge: KEEL_INVALID_ARGUMENT, log untouched.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create(dir.path(), DIM);
    put_with_payloads(&c, &[1], 0);
    c.checkpoint().expect("checkpoint");
    let too_big = {
        let mut s = vec![b'"'; PAYLOAD_BYTES_MAX + 1];
        s[1..PAYLOAD_BYTES_MAX].fill(b'a');
        s
    };
    let too_deep = format!(
        "{}{}",
        "[".repeat(PAYLOAD_DEPTH_MAX + 1),
        "]".repeat(PAYLOAD_DEPTH_MAX + 1)
    );
    let bad: [&[u8]; 6] = [
        &too_big,
        too_deep.as_bytes(),
        b"",
        b"{",
        b"\"\xff\"",
        b"1 2",
    ];
    for payload in bad {
        // A batch with one bad payload writes none of its records.
        let err = c.upsert_with_payloads(
            &ids(&[2, 3]),
            &flat(&[2, 3], DIM),
            &[Some(b"{}"), Some(payload)],
            None,
        );
        assert_eq!(code(err), "KEEL_INVALID_ARGUMENT");
        let err = c.update_payload(&Id::Int(1), Some(payload), false, None);
        assert_eq!(code(err), "KEEL_INVALID_ARGUMENT");
    }
    assert_eq!(
        code(c.update_payload(&Id::Int(1), Some(b"[1]"), true, None)),
        "KEEL_INVALID_ARGUMENT"
    );
    c.update_payload(&Id::Int(1), Some(b"[1]"), false, None)
        .expect("set an array");
    assert_eq!(
        code(c.update_payload(&Id::Int(1), Some(b"{}"), true, None)),
        "KEEL_INVALID_ARGUMENT",
        "merge into an array"
    );
    let wrong_count = c.upsert_with_payloads(&ids(&[2, 3]), &flat(&[2, 3], DIM), &[None], None);
    assert_eq!(code(wrong_count), "KEEL_INVALID_ARGUMENT");
    // A merge whose result would pass the size limit is refused too.
    let half = format!("{{\"a\":\"{}\"}}", "a".repeat(PAYLOAD_BYTES_MAX / 2 + 8));
    let other = format!("{{\"b\":\"{}\"}}", "b".repeat(PAYLOAD_BYTES_MAX / 2 + 8));
    c.update_payload(&Id::Int(1), Some(half.as_bytes()), false, None)
        .expect("half");
    assert_eq!(
        code(c.update_payload(&Id::Int(1), Some(other.as_bytes()), true, None)),
        "KEEL_INVALID_ARGUMENT"
    );
    let stats = c.stats().expect("stats");
    assert_eq!(stats.count, 1);
    assert_eq!(
        stats.last_lsn,
        stats.checkpoint_lsn + 2,
        "only the two good updates were logged"
    );
    drop(c);
    db.close().expect("close");
}

#[test]
fn a_payload_at_the_size_limit_is_accepted() {
    // Exactly PAYLOAD_BYTES_MAX bytes of JSON and PAYLOAD_DEPTH_MAX levels are allowed.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create(dir.path(), DIM);
    let mut big = vec![b'a'; PAYLOAD_BYTES_MAX];
    big[0] = b'"';
    big[PAYLOAD_BYTES_MAX - 1] = b'"';
    let deep = format!(
        "{}{}",
        "[".repeat(PAYLOAD_DEPTH_MAX),
        "]".repeat(PAYLOAD_DEPTH_MAX)
    );
    c.upsert_with_payloads(
        &ids(&[1, 2]),
        &flat(&[1, 2], DIM),
        &[Some(&big), Some(deep.as_bytes())],
        None,
    )
    .expect("upsert at the limits");
    drop(c);
    drop(db);
    let db = open_ok(dir.path());
    let c = db.collection(NAME).expect("collection");
    let got = c.get_many(&ids(&[1, 2]), false, true).expect("get");
    assert_eq!(got[0].as_ref().and_then(|r| r.payload.as_ref()), Some(&big));
    assert_eq!(
        got[1].as_ref().and_then(|r| r.payload.as_deref()),
        Some(deep.as_bytes())
    );
    db.close().expect("close");
}

/// A collection as a build before payloads left it: ids 1 and 2, no payload files, no
/// uids, config format 1.
fn format_1_image() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create(dir.path(), DIM);
    put(&c, &[1, 2]);
    drop(c);
    db.close().expect("close");
    std::fs::remove_file(payload_log_path(dir.path(), 1)).expect("remove");
    std::fs::remove_file(payload_index_path(dir.path())).expect("remove");
    common::forget_uids(dir.path(), 1);
    dir
}

#[test]
fn a_format_1_collection_is_upgraded_when_opened() {
    // A collection from before payloads opens, gains a payload log, and says format 3.
    let dir = format_1_image();
    let db = open_ok(dir.path());
    let c = db.collection(NAME).expect("collection");
    let config = String::from_utf8(read(&config_path(dir.path()))).expect("utf8");
    assert!(config.contains("\"formatVersion\": 3"), "{config}");
    assert!(config.contains("\"uid\": "), "{config}");
    put_with_payloads(&c, &[3], 0);
    let want = [
        (1, Want::Present(1, None)),
        (3, Want::Present(3, Some(payload(3, 0)))),
    ];
    assert_eq!(differences(&c, &want), Vec::<String>::new());
    drop(c);
    db.close().expect("close");
    let db = open_ok(dir.path());
    let c = db.collection(NAME).expect("collection");
    assert_eq!(differences(&c, &want), Vec::<String>::new());
    db.close().expect("close");
}

#[test]
fn a_crash_while_a_format_1_collection_gets_its_payload_log_leaves_one_that_opens() {
    // The new log is written under a temporary name and renamed into place: a crash leaves
    // a partial temp file (removed at the next open), never a payloads-1.log shorter than
    // its header, which open would refuse under either policy.
    let dir = format_1_image();
    let partial = common::coll_dir(dir.path()).join("payloads-1.log.tmp");
    std::fs::write(&partial, b"KEELPAY").expect("a crash mid-header");
    let db =
        keeldb_core::Db::open(dir.path(), common::options(RecoveryPolicy::Strict)).expect("opens");
    let c = db.collection(NAME).expect("collection");
    assert_eq!(
        differences(
            &c,
            &[(1, Want::Present(1, None)), (2, Want::Present(2, None))]
        ),
        Vec::<String>::new()
    );
    assert!(!partial.exists());
    drop(c);
    db.close().expect("close");
}

#[test]
fn a_format_2_collection_gets_a_uid_and_keeps_its_files() {
    // Before format 3 no file named its collection: they all read as uid 0, which matches
    // the uid the upgrade gives the collection, and the files written since carry it.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create(dir.path(), DIM);
    put_with_payloads(&c, &[1, 2], 0);
    drop(c);
    db.close().expect("close");
    common::forget_uids(dir.path(), 2);
    let want = [
        (1, Want::Present(1, Some(payload(1, 0)))),
        (2, Want::Present(2, Some(payload(2, 0)))),
        (3, Want::Present(3, Some(payload(3, 1)))),
    ];
    for round in 0..2 {
        let db = keeldb_core::Db::open(dir.path(), common::options(RecoveryPolicy::Strict))
            .expect("open");
        let c = db.collection(NAME).expect("collection");
        if round == 0 {
            put_with_payloads(&c, &[3], 1);
            c.compact().expect("compact");
        }
        assert_eq!(
            differences(&c, &want),
            Vec::<String>::new(),
            "round {round}"
        );
        assert_eq!(c.stats().expect("stats").warnings, Vec::<String>::new());
        drop(c);
        db.close().expect("close");
    }
    let config = String::from_utf8(read(&config_path(dir.path()))).expect("utf8");
    assert!(config.contains("\"formatVersion\": 3"), "{config}");
    let uid = common::index_snapshot(dir.path()).uid;
    assert_ne!(uid, 0, "the checkpoints since wrote the new uid");
    assert!(config.contains(&format!("\"uid\": {uid}")), "{config}");
}

#[test]
fn a_refused_open_leaves_a_format_2_collection_as_its_build_wrote_it() {
    // The upgrade to format 3 rewrites the config only once every file is read: a refused
    // open must leave the collection to the build that wrote it.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create(dir.path(), DIM);
    put_with_payloads(&c, &[1], 0);
    put_with_payloads(&c, &[2], 0);
    drop(c);
    drop(db); // a crash: both records stay in the log
    common::forget_uids(dir.path(), 2);
    let config = read(&config_path(dir.path()));
    let mut log = read_log(dir.path());
    let first = common::record_starts(&log)[0];
    log[first + 40] ^= 0xff; // inside the first record's body; the second stays valid
    write_log_bytes(dir.path(), &log);
    let refused = keeldb_core::Db::open(dir.path(), common::options(RecoveryPolicy::Strict));
    assert_eq!(code(refused), "KEEL_CORRUPT");
    assert_eq!(
        read(&config_path(dir.path())),
        config,
        "the config is as format 2 wrote it"
    );
}

fn write_log_bytes(dir: &std::path::Path, bytes: &[u8]) {
    std::fs::write(common::wal_path(dir), bytes).expect("write the log");
}

#[test]
fn a_format_2_collection_without_its_payload_log_is_corrupt() {
    // Payloads are never silently dropped: a missing payload log refuses the open.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create(dir.path(), DIM);
    put_with_payloads(&c, &[1], 0);
    drop(c);
    db.close().expect("close");
    std::fs::remove_file(payload_log_path(dir.path(), 1)).expect("remove");
    let err = keeldb_core::Db::open(dir.path(), keeldb_core::DbOptions::default());
    assert_eq!(code(err), "KEEL_CORRUPT");
    assert_eq!(read_log(dir.path()).len(), WAL_HEADER_LEN);
}
