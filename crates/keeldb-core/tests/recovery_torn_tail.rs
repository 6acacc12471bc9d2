//! A log whose end was torn by a crash opens under every policy, keeps every whole record
//! and cuts the torn bytes off before anything new is appended.

mod common;

use std::path::Path;

use common::{
    assert_holds, open, put, read, read_log, record_starts, wal_path, without_trailing_zeros,
    write, write_log, CrashFiles, NAME,
};
use keeldb_core::format::wal::{RECORD_HEADER_LEN, WAL_HEADER_LEN};
use keeldb_core::RecoveryPolicy::{self, Salvage, Strict};

/// A small dimension keeps the records short, so cutting at every byte stays fast.
const DIM: u32 = 4;

/// Opens `dir` under `policy` and returns the collection's stats, after checking it holds
/// `present` and not `absent`. The database is dropped (a crash) on return.
fn open_and_check(
    dir: &Path,
    policy: RecoveryPolicy,
    present: &[u64],
    absent: &[u64],
) -> keeldb_core::CollectionStats {
    let db = open(dir, policy).unwrap_or_else(|e| panic!("open under {policy:?}: {e}"));
    let c = db.collection(NAME).expect("collection");
    assert_holds(&c, present, absent);
    c.stats().expect("stats")
}

#[test]
fn a_last_record_cut_at_every_byte_is_dropped_whole_and_truncated() {
    // A last record cut at any byte is dropped whole, under both policies, and cut off the file.
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, starts) = write_log(dir.path(), DIM, &[&[1], &[2], &[3, 4]]);
    let crash_files = CrashFiles::take(dir.path());
    let last = starts[2];
    let last_len = log.len() - last;
    for policy in [Strict, Salvage] {
        for keep in 1..last_len {
            let context = format!("{policy:?}, {keep} of {last_len} bytes of the last record");
            // Open checkpoints; put back the pre-crash index so each cut starts from the
            // same state. The vector file is left as replay wrote it: replay only writes
            // slots the index does not reference, so that must not matter.
            crash_files.put_back();
            write(&wal_path(dir.path()), &log[..last + keep]);
            let stats = open_and_check(dir.path(), policy, &[1, 2], &[3, 4]);
            assert_eq!(stats.records_replayed, 2, "{context}");
            let torn = without_trailing_zeros(&log[last..last + keep]);
            assert_eq!(stats.torn_bytes_truncated, torn as u64, "{context}");
            assert_eq!(stats.corrupt_records_skipped, 0, "{context}");
            assert_eq!(stats.last_lsn, 2, "{context}");
            assert_eq!(read_log(dir.path()).len(), WAL_HEADER_LEN, "{context}");
            if policy == Strict {
                // Write after recovery, crash again: the new record follows the old ones.
                let db = open(dir.path(), policy).expect("reopen");
                put(&db.collection(NAME).expect("collection"), &[5]);
                drop(db);
                let stats = open_and_check(dir.path(), policy, &[1, 2, 5], &[3, 4]);
                assert_eq!(stats.records_replayed, 1, "{context}");
                assert_eq!(stats.last_lsn, 3, "{context}");
            }
        }
    }
}

#[test]
fn a_torn_first_record_is_truncated_on_disk_at_open() {
    // With nothing to replay (so no checkpoint), recovery itself cuts the torn bytes at open.
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, starts) = write_log(dir.path(), DIM, &[&[1]]);
    assert_eq!(starts, vec![WAL_HEADER_LEN]);
    let crash_files = CrashFiles::take(dir.path());
    for keep in 1..log.len() - WAL_HEADER_LEN {
        crash_files.put_back();
        write(&wal_path(dir.path()), &log[..WAL_HEADER_LEN + keep]);
        let db = open(dir.path(), Strict).expect("open");
        let c = db.collection(NAME).expect("collection");
        let stats = c.stats().expect("stats");
        let torn = without_trailing_zeros(&log[WAL_HEADER_LEN..WAL_HEADER_LEN + keep]);
        assert_eq!(stats.torn_bytes_truncated, torn as u64, "keep {keep}");
        assert_eq!(stats.checkpoints, 0, "keep {keep}");
        assert_eq!(
            read_log(dir.path()).len(),
            WAL_HEADER_LEN,
            "torn bytes still on disk (keep {keep})"
        );
        assert_holds(&c, &[], &[1]);
        put(&c, &[2]);
        drop(c);
        drop(db);
        let crashed = read_log(dir.path());
        assert_eq!(record_starts(&crashed), vec![WAL_HEADER_LEN], "keep {keep}");
        let stats = open_and_check(dir.path(), Strict, &[2], &[1]);
        assert_eq!(stats.records_replayed, 1);
    }
}

#[test]
fn zeros_and_garbage_after_the_last_record_are_a_torn_tail() {
    // Zeros or garbage after the last record are a torn tail under Strict, not an error; the
    // zeros a file ends with are cut but not counted (the writer zero-fills space ahead).
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, starts) = write_log(dir.path(), DIM, &[&[1], &[2]]);
    let crash_files = CrashFiles::take(dir.path());
    let mut sync_markers = Vec::new();
    for i in 0..64u8 {
        sync_markers.extend_from_slice(b"KREC");
        sync_markers.extend_from_slice(&[i; 20]);
    }
    let mut stale_header = log[starts[0]..starts[0] + RECORD_HEADER_LEN + 3].to_vec();
    stale_header[RECORD_HEADER_LEN] ^= 0xFF;
    let tails: Vec<(&str, Vec<u8>)> = vec![
        ("zeros", vec![0u8; 4096]),
        ("ones", vec![0xFF; 100]),
        ("one zero byte", vec![0]),
        ("sync markers", sync_markers),
        (
            "a copy of a whole record header and a partial body",
            stale_header,
        ),
        (
            "pseudo-random bytes",
            (0..3000u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect(),
        ),
    ];
    for (what, tail) in tails {
        crash_files.put_back();
        let mut damaged = log.clone();
        damaged.extend_from_slice(&tail);
        write(&wal_path(dir.path()), &damaged);
        let stats = open_and_check(dir.path(), Strict, &[1, 2], &[]);
        let counted = without_trailing_zeros(&tail) as u64;
        assert_eq!(stats.torn_bytes_truncated, counted, "{what}");
        assert_eq!(stats.records_replayed, 2, "{what}");
        assert_eq!(stats.corrupt_records_skipped, 0, "{what}");
    }
}

#[test]
fn salvage_skips_a_damaged_record_then_cuts_a_torn_tail() {
    // Mid-log damage then a torn end: Salvage skips one and cuts the other; Strict refuses.
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, starts) = write_log(dir.path(), DIM, &[&[1], &[2], &[3], &[4]]);
    let crash_files = CrashFiles::take(dir.path());
    let mut damaged = log.clone();
    damaged[starts[1] + RECORD_HEADER_LEN + 6] ^= 0x04;
    let torn_keep = (log.len() - starts[3]) / 2;
    damaged.truncate(starts[3] + torn_keep);

    write(&wal_path(dir.path()), &damaged);
    let err = open(dir.path(), Strict).expect_err("strict must refuse mid-log damage");
    match err {
        keeldb_core::Error::Corrupted { offset, .. } => assert_eq!(offset, starts[1] as u64),
        other => panic!("expected Corrupted, got {other:?}"),
    }
    assert_eq!(
        read(&wal_path(dir.path())),
        damaged,
        "strict wrote to the log"
    );

    crash_files.put_back();
    let stats = open_and_check(dir.path(), Salvage, &[1, 3], &[2, 4]);
    assert_eq!(stats.records_replayed, 2);
    assert_eq!(stats.corrupt_records_skipped, 1);
    assert_eq!(stats.torn_bytes_truncated, torn_keep as u64);
    assert_eq!(stats.last_lsn, 3);
}

#[test]
fn a_damaged_record_with_nothing_valid_after_it_is_a_torn_tail() {
    // A damaged record with nothing valid after it is a torn tail (rule 4), even under Strict.
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, starts) = write_log(dir.path(), DIM, &[&[1], &[2], &[3]]);
    let mut damaged = log.clone();
    damaged[starts[1] + RECORD_HEADER_LEN + 6] ^= 0x04;
    damaged.truncate(log.len() - 3);
    write(&wal_path(dir.path()), &damaged);
    let stats = open_and_check(dir.path(), Strict, &[1], &[2, 3]);
    assert_eq!(
        stats.torn_bytes_truncated,
        (damaged.len() - starts[1]) as u64
    );
    assert_eq!(stats.corrupt_records_skipped, 0);
}
