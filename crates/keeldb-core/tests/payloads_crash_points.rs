//! A record is atomic: cut the log and the payload log at every write boundary (and inside
//! every write) of a record or a batch, and open finds each record whole or absent, every
//! acknowledged write intact. Checkpoints interrupted at every step, a torn or damaged
//! payload log, and a bad snapshot never lose or mix records.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;

use common::{
    code, coll_dir, create, differences, flat, ids, open, payload, payload_index_path,
    payload_log_path, put, put_with_payloads, read, trim_log, vectors_path, write, Want, NAME,
};
use keeldb_core::format::crc32;
use keeldb_core::format::payload_log::{FRAME_HEADER_LEN, PAYLOAD_LOG_HEADER_LEN};
use keeldb_core::{Collection, Db, DbOptions, Id, RecoveryPolicy};

const DIM: u32 = 4;

/// Every file of the collection but the vector file, by name.
#[derive(Clone)]
struct Files(BTreeMap<String, Vec<u8>>);

impl Files {
    fn take(dir: &Path) -> Files {
        let mut files = BTreeMap::new();
        for entry in fs::read_dir(coll_dir(dir)).expect("read dir") {
            let entry = entry.expect("entry");
            let name = entry.file_name().to_string_lossy().into_owned();
            if name != "vectors.dat" {
                files.insert(name, read(&entry.path()));
            }
        }
        Files(files)
    }

    fn get(&self, name: &str) -> &[u8] {
        self.0.get(name).unwrap_or_else(|| panic!("no {name}"))
    }

    fn with(&self, name: &str, bytes: &[u8]) -> Files {
        let mut files = self.clone();
        files.0.insert(name.to_owned(), bytes.to_vec());
        files
    }

    /// Makes the collection directory hold exactly these files (the vector file aside).
    fn restore(&self, dir: &Path) {
        for entry in fs::read_dir(coll_dir(dir)).expect("read dir") {
            let entry = entry.expect("entry");
            let name = entry.file_name().to_string_lossy().into_owned();
            if name != "vectors.dat" && !self.0.contains_key(&name) {
                fs::remove_file(entry.path()).expect("remove");
            }
        }
        for (name, bytes) in &self.0 {
            write(&coll_dir(dir).join(name), bytes);
        }
    }
}

/// The byte range in which two versions of the vector file differ, and both versions of it.
struct VectorDiff {
    at: u64,
    old: Vec<u8>,
    new: Vec<u8>,
}

impl VectorDiff {
    fn between(old: &[u8], new: &[u8]) -> VectorDiff {
        let first = old.iter().zip(new).position(|(a, b)| a != b).unwrap_or(0);
        let last = old
            .iter()
            .zip(new)
            .rposition(|(a, b)| a != b)
            .map_or(0, |i| i + 1);
        VectorDiff {
            at: first as u64,
            old: old[first..last.max(first)].to_vec(),
            new: new[first..last.max(first)].to_vec(),
        }
    }

    fn put(&self, dir: &Path, newer: bool) {
        let file = fs::OpenOptions::new()
            .write(true)
            .open(vectors_path(dir))
            .expect("open");
        file.write_all_at(if newer { &self.new } else { &self.old }, self.at)
            .expect("write");
    }
}

/// A temporary directory on /dev/shm (tmpfs) if the machine has one, else the default: the
/// crash points are states of files, which do not need a disk to be checked.
fn fast_tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    match shm.is_dir() {
        true => tempfile::tempdir_in(shm).or_else(|_| tempfile::tempdir()),
        false => tempfile::tempdir(),
    }
    .expect("tempdir")
}

/// Opens `dir` under `policy` and returns what differs from `want`.
fn check(dir: &Path, policy: RecoveryPolicy, want: &[(u64, Want)]) -> Vec<String> {
    let db = open(dir, policy).unwrap_or_else(|e| panic!("open: {e}"));
    let c = db.collection(NAME).expect("collection");
    let problems = differences(&c, want);
    drop(c);
    drop(db);
    problems
}

/// The ids every scenario looks at.
const UNIVERSE: [u64; 6] = [1, 2, 3, 4, 9, 10];

fn state(entries: &[(u64, Want)]) -> Vec<(u64, Want)> {
    UNIVERSE
        .iter()
        .map(|&n| {
            let want = entries
                .iter()
                .find(|(m, _)| *m == n)
                .map_or(Want::Absent, |(_, w)| w.clone());
            (n, want)
        })
        .collect()
}

fn p(n: u64, v: u64) -> Option<Vec<u8>> {
    Some(payload(n, v))
}

/// One write of a scenario.
type Write = Box<dyn Fn(&Collection)>;

/// The writes of the scenario, each one log record: upserts with and without payloads
/// (a batch), a merge, a delete of records with payloads, an upsert dropping a payload,
/// and a payload cleared.
fn writes() -> Vec<(&'static str, Write)> {
    vec![
        (
            "batch upsert",
            Box::new(|c: &Collection| {
                let (p2, p9) = (payload(2, 1), payload(9, 1));
                c.upsert_with_payloads(
                    &ids(&[2, 9, 4]),
                    &flat(&[2, 9, 4], DIM),
                    &[Some(&p2), Some(&p9), None],
                    None,
                )
                .expect("upsert");
            }),
        ),
        (
            "merge",
            Box::new(|c: &Collection| {
                assert!(c
                    .update_payload(&Id::Int(1), Some(br#"{"m":1}"#), true, None)
                    .expect("merge"));
            }),
        ),
        (
            "delete",
            Box::new(|c: &Collection| {
                assert_eq!(c.delete(&ids(&[2, 3]), None).expect("delete"), 2);
            }),
        ),
        (
            "upsert dropping a payload",
            Box::new(|c: &Collection| put(c, &[1])),
        ),
        (
            "clear",
            Box::new(|c: &Collection| {
                assert!(c
                    .update_payload(&Id::Int(9), None, false, None)
                    .expect("clear"));
            }),
        ),
    ]
}

/// The state after each write of [`writes`] (index 0: before any).
fn states() -> Vec<Vec<(u64, Want)>> {
    let merged = {
        let mut text = payload(1, 0);
        text.pop();
        text.extend_from_slice(br#","m":1}"#);
        text
    };
    let s0 = state(&[
        (1, Want::Present(1, p(1, 0))),
        (2, Want::Present(2, p(2, 0))),
        (3, Want::Present(3, p(3, 0))),
        (10, Want::Present(10, None)),
    ]);
    let s1 = state(&[
        (1, Want::Present(1, p(1, 0))),
        (2, Want::Present(2, p(2, 1))),
        (3, Want::Present(3, p(3, 0))),
        (4, Want::Present(4, None)),
        (9, Want::Present(9, p(9, 1))),
        (10, Want::Present(10, None)),
    ]);
    let s2 = state(&[
        (1, Want::Present(1, Some(merged.clone()))),
        (2, Want::Present(2, p(2, 1))),
        (3, Want::Present(3, p(3, 0))),
        (4, Want::Present(4, None)),
        (9, Want::Present(9, p(9, 1))),
        (10, Want::Present(10, None)),
    ]);
    let s3 = state(&[
        (1, Want::Present(1, Some(merged))),
        (4, Want::Present(4, None)),
        (9, Want::Present(9, p(9, 1))),
        (10, Want::Present(10, None)),
    ]);
    let s4 = state(&[
        (1, Want::Present(1, None)),
        (4, Want::Present(4, None)),
        (9, Want::Present(9, p(9, 1))),
        (10, Want::Present(10, None)),
    ]);
    let s5 = state(&[
        (1, Want::Present(1, None)),
        (4, Want::Present(4, None)),
        (9, Want::Present(9, None)),
        (10, Want::Present(10, None)),
    ]);
    vec![s0, s1, s2, s3, s4, s5]
}

/// Sets up the checkpointed starting state, runs every write, and returns the files after
/// each (index 0: before any write) and the vector file's change.
fn run_scenario(dir: &Path) -> (Vec<Files>, VectorDiff) {
    let (db, c) = create(dir, DIM);
    put_with_payloads(&c, &[1, 2, 3], 0);
    put(&c, &[10]);
    c.checkpoint().expect("checkpoint");
    let vectors_before = read(&vectors_path(dir));
    let mut files = vec![Files::take(dir)];
    for (_, write) in writes() {
        write(&c);
        files.push(Files::take(dir));
    }
    let vectors_after = read(&vectors_path(dir));
    drop(c);
    drop(db); // crash: nothing checkpointed since the start
    (files, VectorDiff::between(&vectors_before, &vectors_after))
}

/// Offsets worth cutting a payload log at between `from` and `to`: every frame boundary,
/// a byte into each frame, the middle of its header and of its body, and its last byte.
fn payload_cuts(log: &[u8], from: usize, to: usize) -> Vec<usize> {
    let mut cuts = vec![from];
    let mut at = from;
    while at + FRAME_HEADER_LEN <= to {
        let body = u32::from_le_bytes(log[at + 8..at + 12].try_into().expect("4 bytes")) as usize;
        let end = at + FRAME_HEADER_LEN + body + 4;
        cuts.extend([
            at + 1,
            at + FRAME_HEADER_LEN / 2,
            at + FRAME_HEADER_LEN + body / 2,
            end - 1,
            end,
        ]);
        at = end;
    }
    assert_eq!(at, to, "whole frames");
    cuts.dedup();
    cuts
}

#[test]
fn every_cut_of_the_log_and_the_payload_log_leaves_each_record_whole_or_absent() {
    // For each write: the log cut at every byte of its record, crossed with the payload log
    // cut at every frame boundary and inside every frame (and ahead, and with garbage after).
    // Thousands of opens, each with fsyncs: on tmpfs when there is one, where they are free.
    let dir = fast_tempdir();
    let (files, vectors) = run_scenario(dir.path());
    let states = states();
    let wal = trim_log(files.last().expect("files").get("vectors.wal")).to_vec();
    let plog = files.last().expect("files").get("payloads-1.log").to_vec();
    let mut garbage = plog.clone();
    garbage.extend(std::iter::repeat_n(0u8, 300));
    garbage.extend_from_slice(b"KPAY not a frame at all");
    let mut opens = 0;
    for (k, (name, _)) in writes().iter().enumerate() {
        let (wal_from, wal_to) = (
            trim_log(files[k].get("vectors.wal")).len(),
            trim_log(files[k + 1].get("vectors.wal")).len(),
        );
        let (plog_from, plog_to) = (
            files[k].get("payloads-1.log").len(),
            files[k + 1].get("payloads-1.log").len(),
        );
        let mut plog_states: Vec<Vec<u8>> = payload_cuts(&plog, plog_from, plog_to)
            .into_iter()
            .map(|cut| plog[..cut].to_vec())
            .collect();
        plog_states.push(plog.clone()); // the payload log got further than the log
        plog_states.push(files[0].get("payloads-1.log").to_vec()); // or lost every frame since the checkpoint
        plog_states.push(garbage.clone());
        for wal_cut in wal_from + 1..=wal_to {
            let whole = wal_cut == wal_to;
            let want = &states[if whole { k + 1 } else { k }];
            for (i, plog_state) in plog_states.iter().enumerate() {
                files[0]
                    .with("vectors.wal", &wal[..wal_cut])
                    .with("payloads-1.log", plog_state)
                    .restore(dir.path());
                vectors.put(dir.path(), (wal_cut + i) % 2 == 0);
                let problems = check(dir.path(), RecoveryPolicy::Strict, want);
                assert!(
                    problems.is_empty(),
                    "write {k} ({name}), log cut at {wal_cut} of {wal_from}..{wal_to}, payload log state {i}: {problems:?}"
                );
                opens += 1;
            }
        }
        // And the payload log cut at every byte, with the record lost or whole.
        for plog_cut in plog_from..=plog_to {
            for (wal_cut, after) in [(wal_to - 1, k), (wal_to, k + 1)] {
                files[0]
                    .with("vectors.wal", &wal[..wal_cut])
                    .with("payloads-1.log", &plog[..plog_cut])
                    .restore(dir.path());
                vectors.put(dir.path(), true);
                let problems = check(dir.path(), RecoveryPolicy::Strict, &states[after]);
                assert!(problems.is_empty(), "write {k} ({name}), payload log cut at {plog_cut}, log at {wal_cut}: {problems:?}");
                opens += 1;
            }
        }
    }
    assert!(opens > 1000, "only {opens} crash points");
}

#[test]
fn a_checkpoint_interrupted_at_every_step_loses_nothing() {
    // Old or new ids.idx, old or new snapshot, log kept or emptied: open rebuilds the same
    // state, from the snapshot when it is usable.
    let dir = fast_tempdir();
    let (files, vectors) = run_scenario(dir.path());
    let final_state = states().pop().expect("states");
    let before = files.last().expect("files").clone();
    // The checkpoint the next open runs produces the "after" files.
    before.restore(dir.path());
    vectors.put(dir.path(), true);
    let db = open(dir.path(), RecoveryPolicy::Strict).expect("open");
    drop(db);
    let after = Files::take(dir.path());
    let empty_wal = trim_log(after.get("vectors.wal"));
    assert!(empty_wal.len() < trim_log(before.get("vectors.wal")).len());
    let cases = [
        // (ids.idx, payloads.idx, log, snapshot used, what the step was)
        (&before, &before, &before, true, "before the index rename"),
        (
            &after,
            &before,
            &before,
            true,
            "between the index and the snapshot renames",
        ),
        (&after, &after, &before, true, "before the log was emptied"),
        (&after, &after, &after, true, "after the checkpoint"),
    ];
    for (index, snapshot, log, snapshot_used, step) in cases {
        before
            .with("ids.idx", index.get("ids.idx"))
            .with("payloads.idx", snapshot.get("payloads.idx"))
            .with("vectors.wal", log.get("vectors.wal"))
            .with("payloads-1.log", after.get("payloads-1.log"))
            .restore(dir.path());
        let db = open(dir.path(), RecoveryPolicy::Strict).expect(step);
        let c = db.collection(NAME).expect("collection");
        assert_eq!(
            differences(&c, &final_state),
            Vec::<String>::new(),
            "{step}"
        );
        let stats = c.stats().expect("stats");
        assert_eq!(stats.payload_snapshot_used, snapshot_used, "{step}");
        assert_eq!(stats.corrupt_records_skipped, 0, "{step}");
    }
    // A snapshot ahead of the index is never written so: ids.idx is an older copy. Here the
    // log still holds every record since it, so salvage loses nothing, but says so; strict
    // refuses.
    let ahead = before
        .with("payloads.idx", after.get("payloads.idx"))
        .with("payloads-1.log", after.get("payloads-1.log"));
    ahead.restore(dir.path());
    let refused = open(dir.path(), RecoveryPolicy::Strict).map(|_| ());
    assert_eq!(refused.map_err(|e| e.code()), Err("KEEL_CORRUPT"));
    ahead.restore(dir.path());
    let db = open(dir.path(), RecoveryPolicy::Salvage).expect("salvage");
    let c = db.collection(NAME).expect("collection");
    assert_eq!(differences(&c, &final_state), Vec::<String>::new());
    let stats = c.stats().expect("stats");
    assert!(!stats.payload_snapshot_used);
    assert_eq!(stats.corrupt_records_skipped, 1);
    assert!(
        stats.warnings[0].contains("ahead of ids.idx"),
        "{:?}",
        stats.warnings
    );
}

/// A closed collection with payloads written in several checkpointed steps; returns the
/// payload log and the offset of each of its frames.
fn closed_with_frames(dir: &Path) -> (Vec<u8>, Vec<usize>) {
    let (db, c) = create(dir, DIM);
    for v in 0..3 {
        put_with_payloads(&c, &[1, 2, 3, 4], v);
    }
    drop(c);
    db.close().expect("close");
    let log = read(&payload_log_path(dir, 1));
    let mut starts = Vec::new();
    let mut at = PAYLOAD_LOG_HEADER_LEN;
    while at < log.len() {
        starts.push(at);
        at += FRAME_HEADER_LEN
            + u32::from_le_bytes(log[at + 8..at + 12].try_into().expect("4")) as usize
            + 4;
    }
    assert_eq!(starts.len(), 12);
    (log, starts)
}

fn latest() -> Vec<(u64, Want)> {
    (1..=4).map(|n| (n, Want::Present(n, p(n, 2)))).collect()
}

#[test]
fn a_torn_payload_log_never_stops_an_open() {
    // Garbage, zeros or half a frame after the last frame the checkpoint covered are cut off.
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, _) = closed_with_frames(dir.path());
    let mut half_frame = Vec::new();
    keeldb_core::format::payload_log::encode_frame(
        &mut half_frame,
        keeldb_core::format::payload_log::FrameKind::Store,
        999,
        &Id::Int(1),
        b"{\"torn\":true}",
    );
    half_frame.truncate(half_frame.len() / 2);
    for tail in [
        vec![0u8; 4096],
        b"garbage KPAY garbage".to_vec(),
        half_frame,
    ] {
        let mut torn = log.clone();
        torn.extend_from_slice(&tail);
        write(&payload_log_path(dir.path(), 1), &torn);
        for policy in [RecoveryPolicy::Strict, RecoveryPolicy::Salvage] {
            let db = open(dir.path(), policy).expect("open");
            let c = db.collection(NAME).expect("collection");
            assert_eq!(differences(&c, &latest()), Vec::<String>::new());
            let stats = c.stats().expect("stats");
            assert_eq!(stats.corrupt_records_skipped, 0);
            drop(c);
            db.close().expect("close");
            write(&payload_log_path(dir.path(), 1), &torn);
        }
        assert_eq!(read(&payload_log_path(dir.path(), 1)).len(), torn.len());
        let db = open(dir.path(), RecoveryPolicy::Strict).expect("open");
        let stats = db.collection(NAME).expect("c").stats().expect("stats");
        assert_eq!(stats.payload_bytes_truncated, tail.len() as u64);
        drop(db);
        assert_eq!(
            read(&payload_log_path(dir.path(), 1)),
            log,
            "the tail was cut, durably"
        );
    }
}

#[test]
fn damage_in_the_middle_of_the_payload_log_follows_the_recovery_policy() {
    // A flipped bit or an unknown marker in a frame the checkpoint covers, with frames after
    // it: strict refuses naming the file and offset; salvage skips it, counts and warns.
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, starts) = closed_with_frames(dir.path());
    let snapshot = read(&payload_index_path(dir.path()));
    // Frame 4 is id 1's second version; frame 8 (its third) supersedes it.
    for (what, damage) in [("bit flip", 0usize), ("unknown marker", 1)] {
        let mut bad = log.clone();
        let at = starts[4];
        if damage == 0 {
            bad[at + FRAME_HEADER_LEN + 3] ^= 0x20;
        } else {
            bad[at..at + 4].copy_from_slice(b"XXXX");
        }
        write(&payload_log_path(dir.path(), 1), &bad);
        // Without the snapshot, open replays the whole payload log and meets the damage.
        fs::remove_file(payload_index_path(dir.path())).expect("remove snapshot");
        let err = open(dir.path(), RecoveryPolicy::Strict).map(|_| ());
        match &err {
            Err(keeldb_core::Error::Corrupted { file, offset, .. }) => {
                assert_eq!(
                    (file.as_path(), *offset),
                    (payload_log_path(dir.path(), 1).as_path(), at as u64),
                    "{what}"
                );
            }
            other => panic!("{what}: expected KEEL_CORRUPT, got {other:?}"),
        }
        assert_eq!(
            read(&payload_log_path(dir.path(), 1)),
            bad,
            "{what}: a refused open changes nothing"
        );
        let db = open(dir.path(), RecoveryPolicy::Salvage).expect("salvage");
        let c = db.collection(NAME).expect("collection");
        let stats = c.stats().expect("stats");
        assert_eq!(stats.corrupt_records_skipped, 1, "{what}");
        assert!(
            stats
                .warnings
                .iter()
                .any(|w| w.contains("payloads-1.log") && w.contains(&format!("byte {at}"))),
            "{what}: {:?}",
            stats.warnings
        );
        assert_eq!(differences(&c, &latest()), Vec::<String>::new(), "{what}");
        drop(c);
        drop(db);
        write(&payload_log_path(dir.path(), 1), &log);
        write(&payload_index_path(dir.path()), &snapshot);
    }
}

#[test]
fn a_payload_frame_of_an_unknown_kind_is_refused_as_newer() {
    // A checksum-valid frame whose kind this build does not know: KEEL_UNSUPPORTED_VERSION.
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, starts) = closed_with_frames(dir.path());
    let at = starts[2];
    let len = FRAME_HEADER_LEN
        + u32::from_le_bytes(log[at + 8..at + 12].try_into().expect("4")) as usize
        + 4;
    log[at + 4] = 9;
    let crc = crc32(&log[at..at + 20]);
    log[at + 20..at + 24].copy_from_slice(&crc.to_le_bytes());
    let crc = crc32(&log[at..at + len - 4]);
    log[at + len - 4..at + len].copy_from_slice(&crc.to_le_bytes());
    write(&payload_log_path(dir.path(), 1), &log);
    fs::remove_file(payload_index_path(dir.path())).expect("remove snapshot");
    for policy in [RecoveryPolicy::Strict, RecoveryPolicy::Salvage] {
        assert_eq!(code(open(dir.path(), policy)), "KEEL_UNSUPPORTED_VERSION");
    }
}

#[test]
fn a_payload_log_cut_inside_what_a_checkpoint_covered_is_damage() {
    // Losing synced bytes is not a torn tail: strict refuses, salvage opens and reports it.
    // (Without the snapshot this shows only once the frame's header is whole: a cut inside
    // a header looks like any torn tail.)
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, starts) = closed_with_frames(dir.path());
    write(
        &payload_log_path(dir.path(), 1),
        &log[..starts[11] + FRAME_HEADER_LEN + 3],
    );
    fs::remove_file(payload_index_path(dir.path())).expect("remove snapshot");
    assert_eq!(
        code(open(dir.path(), RecoveryPolicy::Strict)),
        "KEEL_CORRUPT"
    );
    let db = open(dir.path(), RecoveryPolicy::Salvage).expect("salvage");
    let stats = db.collection(NAME).expect("c").stats().expect("stats");
    assert_eq!(stats.corrupt_records_skipped, 1);
    drop(db);
    // With the snapshot, a log shorter than it covers is caught the same way.
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, starts) = closed_with_frames(dir.path());
    write(&payload_log_path(dir.path(), 1), &log[..starts[11]]);
    assert_eq!(
        code(open(dir.path(), RecoveryPolicy::Strict)),
        "KEEL_CORRUPT"
    );
    let db = open(dir.path(), RecoveryPolicy::Salvage).expect("salvage");
    assert_eq!(
        db.collection(NAME)
            .expect("c")
            .stats()
            .expect("stats")
            .corrupt_records_skipped,
        1
    );
}

#[test]
fn a_bad_or_stale_snapshot_falls_back_to_replaying_the_whole_payload_log() {
    // A damaged, missing or wrong-generation snapshot costs a full replay, never a record.
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, starts) = closed_with_frames(dir.path());
    let good = read(&payload_index_path(dir.path()));
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 1;
    let mut other_generation = good.clone();
    other_generation[16] = 7;
    let crc_at = other_generation.len() - 4;
    let crc = crc32(&other_generation[..crc_at]);
    other_generation[crc_at..].copy_from_slice(&crc.to_le_bytes());
    for (what, snapshot, warns) in [
        ("damaged", Some(flipped), true),
        ("missing", None, false),
        ("other generation", Some(other_generation), false),
    ] {
        match &snapshot {
            Some(bytes) => write(&payload_index_path(dir.path()), bytes),
            None => fs::remove_file(payload_index_path(dir.path())).expect("remove"),
        }
        let db = open(dir.path(), RecoveryPolicy::Strict).expect(what);
        let c = db.collection(NAME).expect("collection");
        let stats = c.stats().expect("stats");
        assert!(!stats.payload_snapshot_used, "{what}");
        assert_eq!(
            stats.payload_records_replayed,
            starts.len() as u64,
            "{what}"
        );
        assert_eq!(
            stats.warnings.iter().any(|w| w.contains("payloads.idx")),
            warns,
            "{what}"
        );
        assert_eq!(differences(&c, &latest()), Vec::<String>::new(), "{what}");
        drop(c);
        drop(db);
        // That open wrote a good snapshot again: the next one replays nothing.
        let db = Db::open(dir.path(), DbOptions::default()).expect("reopen");
        let stats = db.collection(NAME).expect("c").stats().expect("stats");
        assert!(
            stats.payload_snapshot_used && stats.payload_records_replayed == 0,
            "{what}"
        );
        drop(db);
        write(&payload_index_path(dir.path()), &good);
    }
}
