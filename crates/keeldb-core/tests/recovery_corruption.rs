//! Damage and forgery in the middle of a log: Salvage skips what it can prove damaged,
//! Strict refuses naming the file and offset, and hostile headers are refused without
//! touching the log.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    assert_holds, code, fix_crcs, fix_header_crc, frame_len, index_path, open, read, wal_path,
    write, write_log, CrashFiles, NAME, RECORD_BODY_LEN_AT, RECORD_LSN_AT,
};
use keeldb_core::format::wal::RECORD_HEADER_LEN;
use keeldb_core::types::WAL_RECORD_BYTES_MAX;
use keeldb_core::Error;
use keeldb_core::RecoveryPolicy::{Salvage, Strict};

const DIM: u32 = 4;

/// A crashed collection whose log holds records for ids 1, 2 and 3 (one record each), with
/// the pre-crash index kept so each damage can start from the same state.
struct Fixture {
    dir: tempfile::TempDir,
    log: Vec<u8>,
    starts: Vec<usize>,
    index: Vec<u8>,
    /// The index and payload files as the crash left them.
    crash_files: CrashFiles,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, starts) = write_log(dir.path(), DIM, &[&[1], &[2], &[3]]);
        let index = read(&index_path(dir.path()));
        let crash_files = CrashFiles::take(dir.path());
        Fixture {
            dir,
            log,
            starts,
            index,
            crash_files,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The record of `record` (0-based), as a mutable slice of `log`.
    fn record<'a>(&self, log: &'a mut [u8], record: usize) -> &'a mut [u8] {
        let start = self.starts[record];
        let len = frame_len(&log[start..]);
        &mut log[start..start + len]
    }

    /// Puts the pre-crash index and payload files back and installs `log` as the
    /// collection's log.
    fn install(&self, log: &[u8]) {
        self.crash_files.put_back();
        write(&wal_path(self.path()), log);
    }
}

fn assert_corrupt_at(err: Error, file: &Path, expected_offset: u64) {
    let message = err.to_string();
    match err {
        Error::Corrupted {
            file: f, offset, ..
        } => {
            assert_eq!(f, file, "{message}");
            assert_eq!(offset, expected_offset, "{message}");
            assert!(message.contains("vectors.wal"), "{message}");
            assert!(
                message.contains(&format!("byte {expected_offset}")),
                "{message}"
            );
        }
        other => panic!("expected KEEL_CORRUPT at {expected_offset}, got {other:?}"),
    }
}

/// Damages the middle record with `damage`, then checks Strict refuses at its start without
/// writing, and Salvage skips it alone with a warning naming its offset.
fn check_middle_damage(fx: &Fixture, damage: impl Fn(&mut [u8]), what: &str) {
    let mut log = fx.log.clone();
    damage(fx.record(&mut log, 1));
    assert_ne!(log, fx.log, "{what}: the damage changed nothing");
    fx.install(&log);
    let err = open(fx.path(), Strict).expect_err(what);
    assert_corrupt_at(err, &wal_path(fx.path()), fx.starts[1] as u64);
    assert_eq!(
        read(&wal_path(fx.path())),
        log,
        "{what}: Strict wrote to the log"
    );

    let db = open(fx.path(), Salvage).unwrap_or_else(|e| panic!("{what}: salvage: {e}"));
    let c = db.collection(NAME).expect("collection");
    assert_holds(&c, &[1, 3], &[2]);
    let stats = c.stats().expect("stats");
    assert_eq!(stats.corrupt_records_skipped, 1, "{what}");
    assert_eq!(stats.records_replayed, 2, "{what}");
    assert_eq!(stats.torn_bytes_truncated, 0, "{what}");
    assert_eq!(stats.warnings.len(), 1, "{what}: {:?}", stats.warnings);
    let warning = &stats.warnings[0];
    assert!(warning.contains("vectors.wal"), "{what}: {warning}");
    assert!(
        warning.contains(&format!("from byte {}", fx.starts[1])),
        "{what}: {warning}"
    );
}

#[test]
fn a_bit_flip_in_a_middle_record_body_is_skipped_or_refused() {
    // One flipped bit in the body of a record with a valid record after it is mid-log damage.
    let fx = Fixture::new();
    check_middle_damage(&fx, |r| r[RECORD_HEADER_LEN + 9] ^= 0x20, "body flip");
}

#[test]
fn a_bit_flip_anywhere_in_a_middle_record_is_skipped_or_refused() {
    // Header, body or trailing CRC: every byte of the middle record is covered by a checksum.
    let fx = Fixture::new();
    let len = frame_len(&fx.log[fx.starts[1]..]);
    for at in 0..len {
        let bit = 1u8 << (at % 8);
        check_middle_damage(&fx, |r| r[at] ^= bit, &format!("flip at record byte {at}"));
    }
}

#[test]
fn an_oversized_declared_length_is_refused_quickly_under_both_policies() {
    // A CRC-valid header declaring more than the record limit is refused fast, under both policies.
    let fx = Fixture::new();
    for record in [1, 2] {
        for declared in [u32::MAX, WAL_RECORD_BYTES_MAX + 1] {
            let mut log = fx.log.clone();
            let r = fx.record(&mut log, record);
            r[RECORD_BODY_LEN_AT..RECORD_BODY_LEN_AT + 4].copy_from_slice(&declared.to_le_bytes());
            fix_header_crc(r);
            for policy in [Strict, Salvage] {
                fx.install(&log);
                let started = Instant::now();
                let err = open(fx.path(), policy).expect_err("oversized length");
                assert!(started.elapsed() < Duration::from_secs(5), "slow refusal");
                assert_corrupt_at(
                    err,
                    &wal_path(fx.path()),
                    (fx.starts[record] + RECORD_BODY_LEN_AT) as u64,
                );
                assert_eq!(
                    read(&wal_path(fx.path())),
                    log,
                    "{policy:?} wrote to the log"
                );
            }
        }
    }
}

#[test]
fn a_declared_length_past_the_end_of_the_file_is_a_torn_tail() {
    // A last record whose valid header promises more bytes than the file has was cut short.
    let fx = Fixture::new();
    let mut log = fx.log.clone();
    let last_len = frame_len(&log[fx.starts[2]..]);
    let r = fx.record(&mut log, 2);
    let declared = (last_len - RECORD_HEADER_LEN - 4 + 1000) as u32;
    r[RECORD_BODY_LEN_AT..RECORD_BODY_LEN_AT + 4].copy_from_slice(&declared.to_le_bytes());
    fix_header_crc(r);
    fx.install(&log);
    let db = open(fx.path(), Strict).expect("a torn tail is not an error");
    let c = db.collection(NAME).expect("collection");
    assert_holds(&c, &[1, 2], &[3]);
    assert_eq!(
        c.stats().expect("stats").torn_bytes_truncated,
        last_len as u64
    );
}

#[test]
fn an_unknown_record_kind_is_refused_and_the_log_left_untouched() {
    // An unknown record kind is refused under both policies and the log is left byte for byte.
    let fx = Fixture::new();
    for record in [1, 2] {
        let mut log = fx.log.clone();
        let r = fx.record(&mut log, record);
        r[4] = 9;
        fix_crcs(r);
        // Torn bytes after it must not be cut either.
        log.extend_from_slice(&[0u8; 10]);
        for policy in [Strict, Salvage] {
            fx.install(&log);
            let err = open(fx.path(), policy).expect_err("unknown kind");
            assert_eq!(err.code(), "KEEL_UNSUPPORTED_VERSION", "{err}");
            assert!(err.to_string().contains("record kind 9"), "{err}");
            assert_eq!(
                read(&wal_path(fx.path())),
                log,
                "{policy:?} changed the log"
            );
            assert_eq!(
                read(&index_path(fx.path())),
                fx.index,
                "{policy:?} checkpointed"
            );
        }
    }
}

#[test]
fn a_sequence_number_that_does_not_increase_is_refused() {
    // Valid CRCs around a repeated or decreasing lsn mean forgery or a keeldb bug: refuse.
    let fx = Fixture::new();
    for lsn in [1u64, 2, 0] {
        let mut log = fx.log.clone();
        let r = fx.record(&mut log, 2);
        r[RECORD_LSN_AT..RECORD_LSN_AT + 8].copy_from_slice(&lsn.to_le_bytes());
        fix_crcs(r);
        for policy in [Strict, Salvage] {
            fx.install(&log);
            assert_eq!(code(open(fx.path(), policy)), "KEEL_CORRUPT", "lsn {lsn}");
            assert_eq!(read(&wal_path(fx.path())), log);
        }
    }
}

#[test]
fn a_sequence_number_near_the_top_of_its_range_is_refused_not_overflowed() {
    // A forged lsn near u64::MAX is refused as corrupt instead of overflowing the next lsn.
    let fx = Fixture::new();
    for lsn in [u64::MAX, u64::MAX - 1] {
        let mut log = fx.log.clone();
        let r = fx.record(&mut log, 2);
        r[RECORD_LSN_AT..RECORD_LSN_AT + 8].copy_from_slice(&lsn.to_le_bytes());
        fix_crcs(r);
        for policy in [Strict, Salvage] {
            fx.install(&log);
            assert_eq!(code(open(fx.path(), policy)), "KEEL_CORRUPT", "lsn {lsn}");
        }
    }
}

#[test]
fn a_record_that_passes_its_checksums_but_does_not_decode_is_refused() {
    // A body with valid CRCs but an unknown op is never applied in part: refuse.
    let fx = Fixture::new();
    let mut log = fx.log.clone();
    let r = fx.record(&mut log, 1);
    r[RECORD_HEADER_LEN + 4] = 7; // the first op byte, after the op count
    fix_crcs(r);
    for policy in [Strict, Salvage] {
        fx.install(&log);
        let err = open(fx.path(), policy).expect_err("undecodable body");
        assert_eq!(err.code(), "KEEL_CORRUPT", "{err}");
        assert!(err.to_string().contains("unknown op 7"), "{err}");
    }
}

/// Opens `dir` under Strict, which must refuse it as corrupt, then under Salvage, which must
/// report one skipped record; returns the salvaged handles and stats.
fn refused_then_salvaged(
    dir: &Path,
) -> (
    keeldb_core::Db,
    std::sync::Arc<keeldb_core::Collection>,
    keeldb_core::CollectionStats,
) {
    let refused = open(dir, Strict).map(|_| ());
    assert_eq!(refused.map_err(|e| e.code()), Err("KEEL_CORRUPT"));
    let db = open(dir, Salvage).expect("salvage");
    let c = db.collection(NAME).expect("c");
    let stats = c.stats().expect("stats");
    assert_eq!(stats.corrupt_records_skipped, 1, "{:?}", stats.warnings);
    (db, c, stats)
}

#[test]
fn an_older_ids_idx_put_back_is_refused_under_strict_and_reported_under_salvage() {
    // ids.idx from an earlier checkpoint, the rest of the collection newer: the records
    // between the two checkpoints were emptied from the log, so nothing can bring them back.
    // No crash leaves that state; opening it must not pass for a clean recovery.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = common::create(dir.path(), DIM);
    common::put_with_payloads(&c, &[1, 2], 0);
    drop(c);
    db.close().expect("close");
    let old_index = read(&index_path(dir.path()));

    // The payload snapshot left newer than ids.idx (a clean close after more writes).
    let db = open(dir.path(), Strict).expect("open");
    let c = db.collection(NAME).expect("c");
    common::put_with_payloads(&c, &[3], 1);
    drop(c);
    db.close().expect("close");
    write(&index_path(dir.path()), &old_index);
    let (db, c, _) = refused_then_salvaged(dir.path());
    assert_holds(&c, &[1, 2], &[3]);
    drop(c);
    db.close().expect("close");

    // Both indexes older than a log that starts after them (a crash after a checkpoint).
    let dir = tempfile::tempdir().expect("tempdir");
    let payload_index = common::payload_index_path(dir.path());
    let (db, c) = common::create(dir.path(), DIM);
    common::put_with_payloads(&c, &[1, 2, 3], 0);
    c.checkpoint().expect("checkpoint");
    let (index_at_3, snapshot_at_3) = (read(&index_path(dir.path())), read(&payload_index));
    common::put_with_payloads(&c, &[4], 2);
    c.checkpoint().expect("checkpoint");
    common::put_with_payloads(&c, &[5], 3);
    drop(c);
    drop(db); // a crash: the log holds the record of 5, after the checkpoint of 4
    write(&index_path(dir.path()), &index_at_3);
    write(&payload_index, &snapshot_at_3);
    let (db, c, stats) = refused_then_salvaged(dir.path());
    assert!(
        stats
            .warnings
            .iter()
            .any(|w| w.contains("is ids.idx older than the log")),
        "{:?}",
        stats.warnings
    );
    // Salvage keeps what the log has: record 5, applied after the missing one (4).
    assert_holds(&c, &[1, 2, 3, 5], &[4]);
    drop(c);
    db.close().expect("close");
}
