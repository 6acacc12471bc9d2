//! Files that keeldb did not write, or that a newer keeldb wrote, are refused at open with a
//! typed error naming them, never a panic and never a guess.

mod common;

/// Tests of this binary run one at a time. Some spawn child processes, and a child holds
/// copies of the parent's file descriptors between its fork and its exec: a test that closes
/// a database and reopens it in that instant would find the lock still held (flock belongs
/// to the open file description, which the child's copy keeps alive) and fail with
/// `KEEL_LOCKED`.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use common::{
    code, coll_dir, config_path, create, fix_crcs, flat, frame_len, ids, index_path, open_ok, put,
    read, read_log, vectors_path, wal_path, write, write_log, NAME, RECORD_LSN_AT,
};
use keeldb_core::format::crc32;
use keeldb_core::format::index::{self, IndexSnapshot, INDEX_VERSION};
use keeldb_core::types::LSN_MAX;
use keeldb_core::{Db, DbOptions, Error};

const DIM: u32 = 4;

/// A database with collection [`NAME`] holding ids 1..=3, closed cleanly (so the index
/// references three slots and the log is empty).
fn closed_fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create(dir.path(), DIM);
    put(&c, &[1, 2, 3]);
    db.close().expect("close");
    dir
}

fn open_err(dir: &Path) -> Error {
    match Db::open(dir, DbOptions::default()) {
        Ok(_) => panic!("open of a hostile database succeeded"),
        Err(e) => e,
    }
}

/// Asserts the error is `expected_code` and names `file`.
fn assert_refused(err: &Error, expected_code: &str, file: &Path) {
    assert_eq!(err.code(), expected_code, "{err}");
    let name = file.file_name().expect("file name").to_string_lossy();
    assert!(
        err.to_string().contains(&*name),
        "{err} does not name {name}"
    );
}

/// Rewrites the u32 version at bytes 8..12 of a file; with `fix_crc_at`, also the header
/// CRC stored there over the bytes before it (a newer keeldb might lay the rest out
/// differently, so both must be refused as "newer", not as "corrupt").
fn set_version(path: &Path, version: u32, fix_crc_at: Option<usize>) {
    let mut bytes = read(path);
    bytes[8..12].copy_from_slice(&version.to_le_bytes());
    if let Some(at) = fix_crc_at {
        let crc = crc32(&bytes[..at]);
        bytes[at..at + 4].copy_from_slice(&crc.to_le_bytes());
    }
    write(path, &bytes);
}

#[test]
fn a_newer_config_format_version_is_unsupported() {
    let _serial = serial();
    // formatVersion 4 is refused as newer, even with fields or values this build cannot parse.
    for config in [
        r#"{"formatVersion":4,"dimension":4,"metric":"euclidean"}"#,
        r#"{"formatVersion":4,"dimension":4,"metric":"euclidean","payloads":true}"#,
        r#"{"formatVersion":4,"dimension":4,"metric":"hamming"}"#,
        r#"{"formatVersion":4}"#,
    ] {
        let dir = closed_fixture();
        write(&config_path(dir.path()), config.as_bytes());
        let err = open_err(dir.path());
        assert_refused(&err, "KEEL_UNSUPPORTED_VERSION", &config_path(dir.path()));
    }
}

#[test]
fn a_file_of_another_collection_is_refused_not_read() {
    let _serial = serial();
    // Two collections of the same dimension in one database, each with its own records and
    // payloads. A file of the other one put in place of this one's opened cleanly and served
    // the other's vectors and payloads, under strict too (robustness review); every file's
    // header now carries its collection's uid.
    let setup = || {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = open_ok(dir.path());
        for (name, v) in [(NAME, 0), ("other", 1)] {
            let c = db
                .create_collection(name, DIM, keeldb_core::Metric::Euclidean)
                .expect("create");
            common::put_with_payloads(&c, &[1, 2, 3], v);
        }
        db.close().expect("close");
        dir
    };
    let other = |dir: &Path, file: &Path| dir.join("other").join(file.file_name().expect("name"));
    let files = |dir: &Path| {
        [
            vectors_path(dir),
            wal_path(dir),
            index_path(dir),
            common::payload_log_path(dir, 1),
        ]
    };
    for policy in [
        keeldb_core::RecoveryPolicy::Strict,
        keeldb_core::RecoveryPolicy::Salvage,
    ] {
        for i in 0..4 {
            let dir = setup();
            let file = files(dir.path())[i].clone();
            fs::copy(other(dir.path(), &file), &file).expect("copy the other's file");
            match common::open(dir.path(), policy) {
                Ok(_) => panic!("{} of another collection was read", file.display()),
                Err(err) => {
                    assert_refused(&err, "KEEL_CORRUPT", &file);
                    assert!(err.to_string().contains("another collection"), "{err}");
                }
            }
        }
    }
    // The payload snapshot is only an accelerator: another's is set aside like a damaged
    // one, and the payload log replayed whole.
    let dir = setup();
    let snapshot = common::payload_index_path(dir.path());
    fs::copy(other(dir.path(), &snapshot), &snapshot).expect("copy the other's snapshot");
    let db = common::open(dir.path(), keeldb_core::RecoveryPolicy::Strict).expect("opens");
    let c = db.collection(NAME).expect("collection");
    let stats = c.stats().expect("stats");
    assert!(
        stats
            .warnings
            .iter()
            .any(|w| w.contains("another collection")),
        "{:?}",
        stats.warnings
    );
    let want: Vec<_> = (1..=3)
        .map(|n| (n, common::Want::Present(n, Some(common::payload(n, 0)))))
        .collect();
    assert_eq!(common::differences(&c, &want), Vec::<String>::new());
    drop(c);
    db.close().expect("close");
}

#[test]
fn garbage_empty_or_inconsistent_configs_are_corrupt() {
    let _serial = serial();
    // A config that is not valid version-1 JSON for these data files is corrupt.
    for config in [
        "",
        "not json",
        "\u{0}\u{1}\u{2}",
        "{}",
        r#"{"formatVersion":1,"dimension":0,"metric":"euclidean"}"#,
        r#"{"formatVersion":1,"dimension":4,"metric":"euclidean","x":1}"#,
        r#"{"formatVersion":"1","dimension":4,"metric":"euclidean"}"#,
        r#"{"formatVersion":1,"dimension":8,"metric":"euclidean"}"#,
        r#"[1,2,3]"#,
    ] {
        let dir = closed_fixture();
        write(&config_path(dir.path()), config.as_bytes());
        assert_eq!(
            code(Db::open(dir.path(), DbOptions::default())),
            "KEEL_CORRUPT",
            "{config}"
        );
    }
    let dir = closed_fixture();
    write(&config_path(dir.path()), &vec![b' '; 5000]);
    assert_eq!(
        code(Db::open(dir.path(), DbOptions::default())),
        "KEEL_CORRUPT"
    );
}

#[test]
fn newer_binary_headers_are_unsupported() {
    let _serial = serial();
    // A newer log, index, vector file, payload log or payload snapshot is refused as newer,
    // whatever its header CRC says.
    type PathOf = fn(&Path) -> std::path::PathBuf;
    let files: [(PathOf, Option<usize>); 5] = [
        (wal_path, Some(28)),
        (vectors_path, Some(28)),
        (index_path, None),
        (|dir| common::payload_log_path(dir, 1), Some(28)),
        (common::payload_index_path, None),
    ];
    for (path_of, crc_at) in files {
        for fix_crc in [false, true] {
            let dir = closed_fixture();
            let path = path_of(dir.path());
            let crc_at = if fix_crc { crc_at } else { None };
            set_version(&path, 3, crc_at);
            if fix_crc && crc_at.is_none() {
                // An index's CRC covers the whole file and sits at its end.
                let mut bytes = read(&path);
                let end = bytes.len() - 4;
                let crc = crc32(&bytes[..end]);
                bytes[end..].copy_from_slice(&crc.to_le_bytes());
                write(&path, &bytes);
            }
            let err = open_err(dir.path());
            assert_refused(&err, "KEEL_UNSUPPORTED_VERSION", &path);
        }
    }
}

#[test]
fn empty_data_files_are_corrupt() {
    let _serial = serial();
    // A zero-length log, index or vector file is not something keeldb ever leaves behind.
    for path_of in [wal_path, index_path, vectors_path] {
        let dir = closed_fixture();
        let path = path_of(dir.path());
        write(&path, b"");
        assert_refused(&open_err(dir.path()), "KEEL_CORRUPT", &path);
    }
}

#[test]
fn a_truncated_vector_file_is_corrupt() {
    let _serial = serial();
    // A vector file shorter than its header, or than the slots the index uses, is refused.
    let dir = closed_fixture();
    let path = vectors_path(dir.path());
    let original = read(&path);
    for len in [1usize, 100, 4095, 4096, 4096 + 16 * 2, 4096 + 16 * 3 - 1] {
        write(&path, &original[..len]);
        assert_refused(&open_err(dir.path()), "KEEL_CORRUPT", &path);
    }
    // Exactly the three used slots is enough: nothing is lost.
    write(&path, &original[..4096 + 16 * 3]);
    let db = open_ok(dir.path());
    common::assert_holds(&db.collection(NAME).expect("collection"), &[1, 2, 3], &[]);
    db.close().expect("close");
}

#[test]
fn a_truncated_or_bit_flipped_index_is_corrupt() {
    let _serial = serial();
    // The index is written atomically, so any damage to it is refused (under every policy).
    let dir = closed_fixture();
    let path = index_path(dir.path());
    let original = read(&path);
    for cut in [0, 8, 39, 40, original.len() / 2, original.len() - 1] {
        write(&path, &original[..cut]);
        assert_refused(&open_err(dir.path()), "KEEL_CORRUPT", &path);
    }
    for at in 0..original.len() {
        let mut bad = original.clone();
        bad[at] ^= 1 << (at % 8);
        write(&path, &bad);
        let err = open_err(dir.path());
        // A flip in the version field reads as a newer version, before the CRC is checked.
        if (8..12).contains(&at) && u32::from_le_bytes(bad[8..12].try_into().expect("4")) > 1 {
            assert_refused(&err, "KEEL_UNSUPPORTED_VERSION", &path);
        } else {
            assert_refused(&err, "KEEL_CORRUPT", &path);
        }
    }
}

#[test]
fn a_forged_index_is_checked_against_the_vector_file_and_the_lsn_limit() {
    let _serial = serial();
    // An index whose CRC holds but whose contents the other files contradict is refused.
    let dir = closed_fixture();
    let path = index_path(dir.path());
    let good = index::decode(&read(&path)).expect("decode");
    let vectors_bytes = fs::metadata(vectors_path(dir.path())).expect("stat").len();
    let capacity = ((vectors_bytes - 4096) / (u64::from(DIM) * 4)) as u32;
    let forged = [
        (
            IndexSnapshot {
                checkpoint_lsn: u64::MAX,
                ..good.clone()
            },
            path.clone(),
        ),
        (
            IndexSnapshot {
                dimension: 8,
                ..good.clone()
            },
            path.clone(),
        ),
        // One id in two slots (the decoder checks slots; the open checks ids).
        (
            IndexSnapshot {
                entries: {
                    let mut e = good.entries.clone();
                    e[1].0 = e[0].0.clone();
                    e
                },
                ..good.clone()
            },
            path.clone(),
        ),
        // More slots than the vector file holds: the vector file is the one found short.
        (
            IndexSnapshot {
                slot_high_water: capacity + 1,
                free_slots: (3..=capacity).collect(),
                ..good.clone()
            },
            vectors_path(dir.path()),
        ),
    ];
    for (snapshot, named) in forged {
        assert_eq!(snapshot.version, INDEX_VERSION);
        write(&path, &index::encode(&snapshot));
        assert_refused(&open_err(dir.path()), "KEEL_CORRUPT", &named);
    }
}

#[test]
fn a_damaged_log_header_or_a_log_of_another_dimension_is_corrupt() {
    let _serial = serial();
    // A damaged log header, or a log of another dimension, is corrupt and named.
    let dir = closed_fixture();
    let path = wal_path(dir.path());
    let original = read(&path);
    for at in (0..32).filter(|at| !(8..12).contains(at)) {
        let mut bad = original.clone();
        bad[at] ^= 0x01;
        write(&path, &bad);
        assert_refused(&open_err(dir.path()), "KEEL_CORRUPT", &path);
    }
    // A log copied from a collection of dimension 8.
    let other = tempfile::tempdir().expect("tempdir");
    let (db, c) = create(other.path(), 8);
    put(&c, &[1]);
    drop(c);
    drop(db);
    write(&path, &read_log(other.path()));
    let err = open_err(dir.path());
    assert_refused(&err, "KEEL_CORRUPT", &path);
    assert!(err.to_string().contains("dimension 8"), "{err}");
}

#[test]
fn symlinks_are_refused_not_followed() {
    let _serial = serial();
    // A collection directory or data file that is a symlink is refused, even to a good target.
    let dir = closed_fixture();
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let moved = elsewhere.path().join("moved");
    fs::rename(coll_dir(dir.path()), &moved).expect("move the collection away");
    symlink(&moved, coll_dir(dir.path())).expect("symlink");
    assert_refused(&open_err(dir.path()), "KEEL_CORRUPT", &coll_dir(dir.path()));
    fs::remove_file(coll_dir(dir.path())).expect("remove symlink");
    fs::rename(&moved, coll_dir(dir.path())).expect("move back");

    type PathOf = fn(&Path) -> std::path::PathBuf;
    let files: [PathOf; 4] = [config_path, index_path, vectors_path, wal_path];
    for path_of in files {
        let path = path_of(dir.path());
        let target = elsewhere.path().join("target");
        fs::rename(&path, &target).expect("move the file away");
        symlink(&target, &path).expect("symlink");
        assert_refused(&open_err(dir.path()), "KEEL_CORRUPT", &path);
        fs::remove_file(&path).expect("remove symlink");
        fs::rename(&target, &path).expect("move back");
    }
    // Everything put back: it opens.
    let db = open_ok(dir.path());
    common::assert_holds(&db.collection(NAME).expect("collection"), &[1, 2, 3], &[]);
    db.close().expect("close");
}

#[test]
fn a_leftover_that_is_a_symlink_is_unlinked_without_touching_its_target() {
    let _serial = serial();
    // Clearing `.dropping-*` at open removes a symlink itself, never what it points to.
    let dir = tempfile::tempdir().expect("tempdir");
    open_ok(dir.path()).close().expect("close"); // a database (open refuses other directories)
    let outside = tempfile::tempdir().expect("tempdir");
    let precious = outside.path().join("precious");
    write(&precious, b"keep me");
    symlink(outside.path(), dir.path().join(".dropping-x")).expect("symlink");
    let db = open_ok(dir.path());
    assert!(!dir.path().join(".dropping-x").exists());
    assert_eq!(read(&precious), b"keep me");
    db.close().expect("close");
}

#[test]
fn a_regular_file_with_a_collection_name_is_refused() {
    let _serial = serial();
    // Every entry named like a collection must be a collection directory.
    let dir = tempfile::tempdir().expect("tempdir");
    open_ok(dir.path()).close().expect("close"); // a database (open refuses other directories)
    write(&dir.path().join("README"), b"not a collection");
    assert_refused(
        &open_err(dir.path()),
        "KEEL_CORRUPT",
        &dir.path().join("README"),
    );
    // Names with a dot are never collections and are left alone.
    fs::remove_file(dir.path().join("README")).expect("remove");
    write(&dir.path().join("notes.txt"), b"mine");
    let db = open_ok(dir.path());
    assert!(db.list_collections().expect("list").is_empty());
    db.close().expect("close");
    assert_eq!(read(&dir.path().join("notes.txt")), b"mine");
}

#[test]
fn a_collection_missing_a_file_is_an_error_naming_it() {
    let _serial = serial();
    // A collection directory without one of its four files does not open.
    type PathOf = fn(&Path) -> std::path::PathBuf;
    let files: [PathOf; 4] = [config_path, index_path, vectors_path, wal_path];
    for path_of in files {
        let dir = closed_fixture();
        let path = path_of(dir.path());
        fs::remove_file(&path).expect("remove");
        let err = open_err(dir.path());
        assert_eq!(err.code(), "KEEL_CORRUPT", "{err}");
        assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
    }
}

#[test]
fn a_forged_sequence_number_at_the_limit_refuses_writes_and_loses_none() {
    let _serial = serial();
    // A record claiming the last sequence number (only a forged file can: 2^62 writes) opens,
    // but the next write is refused, not logged where the next replay would refuse it
    // (found by the wal_replay fuzz target; fuzz/regressions/wal_replay/lsn-at-limit-*).
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, starts) = write_log(dir.path(), DIM, &[&[1], &[2]]);
    let last = starts[1];
    let end = last + frame_len(&log[last..]);
    log[last + RECORD_LSN_AT..last + RECORD_LSN_AT + 8].copy_from_slice(&LSN_MAX.to_le_bytes());
    fix_crcs(&mut log[last..end]);
    write(&wal_path(dir.path()), &log);
    let db = open_ok(dir.path());
    let c = db.collection(NAME).expect("collection");
    common::assert_holds(&c, &[1, 2], &[]);
    assert_eq!(
        code(c.upsert(&ids(&[3]), &flat(&[3], DIM), None)),
        "KEEL_CORRUPT"
    );
    drop(c);
    drop(db); // a crash: whatever was logged must replay
    let db = open_ok(dir.path());
    common::assert_holds(&db.collection(NAME).expect("collection"), &[1, 2], &[3]);
    db.close().expect("close");
}

#[test]
#[ignore = "runs only as the child process of another test (tests/common/child.rs)"]
fn child_process() {
    let _serial = serial();
    common::child::main();
}

#[test]
fn declared_lengths_of_4_gib_give_typed_errors_in_bounded_memory() {
    let _serial = serial();
    // Every length or count field set to 4 GiB (checksums recomputed), and files of 4 GiB,
    // opened in a child limited to 1 GiB of address space: a typed error, fast, small.
    let mut failures = Vec::new();
    for case in common::hostile::CASES {
        match common::hostile::run_case(case, None) {
            Ok(outcome) => eprintln!("{}: {:?} in {:?}", case.0, outcome.lines, outcome.elapsed),
            Err(failure) => failures.push(failure),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_directory_held_by_another_process_is_locked_until_it_lets_go() {
    let _serial = serial();
    // Another process holding the directory gets KEEL_LOCKED here; once it closes, or is
    // killed, the directory opens with everything in it.
    let dir = closed_fixture();
    for kill in [false, true] {
        let mut holder = common::child::spawn("hold", dir.path(), None);
        let mut out = common::child::reader(&mut holder);
        common::child::wait_for_line(&mut out, "held");
        assert_eq!(
            code(Db::open(dir.path(), DbOptions::default())),
            "KEEL_LOCKED"
        );
        if kill {
            holder.kill().expect("kill the holder");
        } else {
            drop(holder.stdin.take()); // the holder closes the database and exits
            common::child::wait_for_line(&mut out, "released");
        }
        let status = holder.wait().expect("wait for the holder");
        assert_eq!(status.success(), !kill, "{status}");
        let db = open_ok(dir.path());
        common::assert_holds(&db.collection(NAME).expect("collection"), &[1, 2, 3], &[]);
        db.close().expect("close");
    }
}
