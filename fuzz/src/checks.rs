//! The properties each fuzz target checks, as plain functions of the input bytes.
//!
//! One function per decoder. Each must return normally for every input: a panic (including a
//! failed `assert!` below, an out-of-bounds index or an overflow, which the fuzz build checks)
//! is a finding. Kept free of libFuzzer so that `crates/keeldb-core/tests/fuzz_corpus.rs` runs
//! the same checks over the committed corpus and regression inputs in every `npm test`.
//!
//! To add a target for a new decoder: write its `pub fn` here and add it to [`TARGETS`], a
//! three-line file in `fuzz/fuzz_targets/`, a `[[bin]]` in `fuzz/Cargo.toml`, seeds in
//! `src/bin/make_seeds.rs`, and its name in `TARGETS` of `scripts/fuzz.sh`.

use std::fs;
use std::path::Path;

use keeldb_core::format::payload_index::{self, PayloadLoc, PAYLOAD_INDEX_HEADER_LEN};
use keeldb_core::format::payload_log::{
    decode_frame_body, decode_frame_header, decode_header as decode_payload_log_header,
    encode_frame, encode_header as encode_payload_log_header, frame_crc_ok, FrameKind,
    FRAME_BODY_BYTES_MAX, FRAME_HEADER_LEN, FRAME_OVERHEAD, PAYLOAD_LOG_HEADER_LEN,
    PAYLOAD_LOG_VERSION,
};
use keeldb_core::format::wal::{
    decode_batch, encode_header as encode_wal_header, BatchEncoder, Op, RECORD_HEADER_LEN,
    WAL_HEADER_LEN,
};
use keeldb_core::format::{config, f32s_from_le, index, vectors};
use keeldb_core::storage::payload_log::{
    read_frame, read_store_frame, PayloadLogFile, ScanOutcome,
};
use keeldb_core::wal::replay::replay;
use keeldb_core::{Db, DbOptions, Error, Id, RecoveryPolicy};

/// A fuzz target's check: it panics on a finding.
pub type Check = fn(&[u8]);

/// The targets, by name, for drivers that pick one at run time.
pub const TARGETS: [(&str, Check); 7] = [
    ("wal_replay", wal_replay),
    ("index_file", index_file),
    ("vector_header", vector_header),
    ("collection_config", collection_config),
    ("open_dir", open_dir),
    ("payload_log", payload_log),
    ("payload_index", payload_index),
];

/// Recomputes the CRC stored at `at` over the bytes before it, when the input is long enough.
/// The fuzzer cannot forge a checksum by mutation; with this (chosen by a control bit of the
/// input) it explores what the decoders do past the checksum with forged files.
pub fn fix_crc_at(bytes: &mut [u8], at: usize) {
    if bytes.len() >= at + 4 {
        let crc = keeldb_core::format::crc32(&bytes[..at]);
        bytes[at..at + 4].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Recomputes an index file's trailing CRC.
pub fn fix_index_crc(bytes: &mut [u8]) {
    if let Some(at) = bytes.len().checked_sub(4) {
        fix_crc_at(bytes, at);
    }
}

/// Recomputes both CRCs of every record frame found by walking declared lengths from the
/// end of the file header (a frame that does not start with the sync marker, or does not
/// fit, ends the walk), and the file header's CRC.
pub fn fix_wal_crcs(image: &mut [u8]) {
    fix_crc_at(image, WAL_HEADER_LEN - 4);
    let mut pos = WAL_HEADER_LEN;
    while pos + RECORD_HEADER_LEN <= image.len() && image[pos..pos + 4] == *b"KREC" {
        fix_crc_at(&mut image[pos..], RECORD_HEADER_LEN - 4);
        let body_len = u32::from_le_bytes([
            image[pos + 8],
            image[pos + 9],
            image[pos + 10],
            image[pos + 11],
        ]);
        let frame_len = RECORD_HEADER_LEN + body_len as usize + 4;
        if image.len() - pos < frame_len {
            break;
        }
        fix_crc_at(&mut image[pos..pos + frame_len], frame_len - 4);
        pos += frame_len;
    }
}

/// Re-encodes decoded ops as a record, so a decoded batch can be compared with its source.
fn encode_ops(ops: &[Op<'_>], lsn: u64) -> Vec<u8> {
    let mut enc = BatchEncoder::new(64);
    for op in ops {
        match op {
            Op::Upsert {
                id,
                vector_le,
                payload,
            } => {
                let mut vector = vec![0f32; vector_le.len() / 4];
                f32s_from_le(vector_le, &mut vector);
                enc.upsert_with_payload(id, &vector, *payload);
            }
            Op::Delete { id } => enc.delete(id),
            Op::SetPayload { id, payload } => enc.set_payload(id, *payload),
        }
    }
    enc.finish(lsn)
}

/// One replay of `image`: the outcome (or the error's code) and every applied record,
/// re-encoded.
type ReplayRun = (Result<(u64, u64, u64), &'static str>, Vec<(u64, Vec<u8>)>);

fn run_replay(
    image: &[u8],
    dimension: u32,
    checkpoint_lsn: u64,
    policy: RecoveryPolicy,
) -> ReplayRun {
    let mut applied: Vec<(u64, Vec<u8>)> = Vec::new();
    let result = replay(
        Path::new("fuzz.wal"),
        image,
        dimension,
        checkpoint_lsn,
        policy,
        |lsn, ops| {
            assert!(
                lsn > checkpoint_lsn,
                "record {lsn} at or below the checkpoint was applied"
            );
            if let Some((last, _)) = applied.last() {
                assert!(lsn > *last, "record {lsn} applied after {last}");
            }
            let record = encode_ops(ops, lsn);
            // The body round-trips: re-encoding what was decoded decodes to the same ops.
            let body = &record[RECORD_HEADER_LEN..record.len() - 4];
            assert_eq!(decode_batch(body, dimension).as_deref(), Ok(ops));
            applied.push((lsn, record));
            Ok(())
        },
    );
    let summary = result
        .map(|out| {
            // Not counted as torn: zeros at the end of the tail (the writer's zero-filled
            // space) and the old records a checkpoint's emptying wrote the log over.
            assert!(
                out.end_offset + out.torn_bytes <= image.len() as u64,
                "valid bytes and torn tail overrun the image"
            );
            assert!(out.end_offset >= WAL_HEADER_LEN as u64);
            assert_eq!(out.records_replayed, applied.len() as u64);
            (out.end_offset, out.torn_bytes, out.last_lsn)
        })
        .map_err(|e| e.code());
    (summary, applied)
}

/// Log replay. Byte 0 chooses the dimension (bits 0-1: 1 to 4), the policy (bit 2), the
/// checkpoint lsn (bits 3-5) and whether record CRCs are recomputed (bit 6, see
/// [`fix_wal_crcs`]); with bit 7 set the rest is the whole file, header included, otherwise
/// the rest follows a valid header.
///
/// Asserts: replay never panics; the valid bytes and the torn tail lie within the file;
/// applied records have increasing lsns above the checkpoint and bodies that round-trip;
/// recovery is idempotent (replaying the file cut at the end of its valid bytes applies the
/// same records and finds nothing torn); and a record appended there, as the writer would
/// after recovery, is replayed next.
pub fn wal_replay(data: &[u8]) {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let dimension = u32::from(control & 0x03) + 1;
    let policy = if control & 0x04 == 0 {
        RecoveryPolicy::Salvage
    } else {
        RecoveryPolicy::Strict
    };
    let checkpoint_lsn = u64::from((control >> 3) & 0x07);
    let mut image: Vec<u8> = if control & 0x80 != 0 {
        match keeldb_core::format::wal::decode_header(rest) {
            Ok(header) if header.dimension == dimension && header.version == 1 => rest.to_vec(),
            _ => return,
        }
    } else {
        let mut image = encode_wal_header(dimension, 0).to_vec();
        image.extend_from_slice(rest);
        image
    };
    if control & 0x40 != 0 {
        fix_wal_crcs(&mut image);
    }
    let (result, applied) = run_replay(&image, dimension, checkpoint_lsn, policy);
    let Ok((end_offset, _torn, last_lsn)) = result else {
        return;
    };
    let end = usize::try_from(end_offset).unwrap_or(usize::MAX);
    let kept = &image[..end];
    let (again, applied_again) = run_replay(kept, dimension, checkpoint_lsn, policy);
    assert_eq!(
        again.map(|(end, torn, _)| (end, torn)),
        Ok((end_offset, 0)),
        "recovery is not idempotent"
    );
    assert_eq!(
        applied_again, applied,
        "a cut at the valid end changed what replays"
    );

    // What the writer appends after recovery is found by the next replay. (Past LSN_MAX,
    // reachable only with a forged file, the writer refuses to append: nothing to check.)
    let next_lsn = last_lsn.max(checkpoint_lsn) + 1;
    if next_lsn > keeldb_core::types::LSN_MAX {
        return;
    }
    let mut enc = BatchEncoder::new(16);
    enc.upsert(&Id::Int(1), &vec![0.5; dimension as usize]);
    let mut appended = kept.to_vec();
    appended.extend_from_slice(&enc.finish(next_lsn));
    let (after, applied_after) = run_replay(&appended, dimension, checkpoint_lsn, policy);
    assert_eq!(after.map(|(_, torn, lsn)| (torn, lsn)), Ok((0, next_lsn)));
    assert_eq!(applied_after.last().map(|(lsn, _)| *lsn), Some(next_lsn));
}

/// The id index file. Byte 0, bit 0: recompute the trailing CRC of the rest (a forged
/// file). Asserts: decoding never panics; a decoded index re-encodes to bytes that decode to
/// the same index, whose slots are exactly `0..slot_high_water`.
pub fn index_file(data: &[u8]) {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = rest.to_vec();
    if control & 1 != 0 {
        fix_index_crc(&mut bytes);
    }
    let _ = keeldb_core::format::peek_version(&bytes, &index::INDEX_MAGIC);
    let Ok(snapshot) = index::decode(&bytes) else {
        return;
    };
    let mut slots: Vec<u32> = snapshot
        .entries
        .iter()
        .map(|(_, slot)| *slot)
        .chain(snapshot.free_slots.iter().copied())
        .collect();
    slots.sort_unstable();
    assert!(slots.iter().copied().eq(0..snapshot.slot_high_water));
    let again = index::decode(&index::encode(&snapshot)).expect("a decoded index re-encodes");
    assert_eq!(
        again,
        index::IndexSnapshot {
            version: index::INDEX_VERSION,
            ..snapshot
        }
    );
}

/// The vector file header. Byte 0, bit 0: recompute the header CRC of the rest. Asserts:
/// decoding never panics, and the header of the decoded dimension round-trips.
pub fn vector_header(data: &[u8]) {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = rest.to_vec();
    if control & 1 != 0 {
        fix_crc_at(&mut bytes, 28);
    }
    let _ = keeldb_core::format::peek_version(&bytes, &vectors::VECTORS_MAGIC);
    let Ok((_version, dimension, uid)) = vectors::decode_header(&bytes) else {
        return;
    };
    assert_eq!(
        vectors::decode_header(&vectors::encode_header(dimension, uid)),
        Ok((vectors::VECTORS_VERSION, dimension, uid))
    );
}

/// The collection config. Asserts: decoding and version peeking never panic, and a decoded
/// config round-trips.
pub fn collection_config(data: &[u8]) {
    let _ = config::peek_format_version(data);
    let Ok(decoded) = config::decode(data) else {
        return;
    };
    assert_eq!(config::decode(&config::encode(&decoded)), Ok(decoded));
}

/// The files of the `open_dir` fixture, in the order its input names them.
pub const FIXTURE_FILES: [&str; 6] = [
    "collection.json",
    "ids.idx",
    "vectors.dat",
    "vectors.wal",
    "payloads-1.log",
    "payloads.idx",
];
/// Indexes of the payload files in [`FIXTURE_FILES`].
const PAYLOAD_LOG: usize = 4;
const PAYLOAD_SNAPSHOT: usize = 5;
/// The fixture's dimension.
pub const FIXTURE_DIMENSION: u32 = 4;
/// Slots the fixture's trimmed vector file has room for, so that a replay needs no growth.
const FIXTURE_SLOTS: usize = 64;

/// The bytes of a valid collection `c` of dimension 4: ids 1 to 6 and "s" checkpointed
/// (then, through the log: 2 replaced, 8 added, 3 deleted, 1's payload merged, "t" added:
/// four records after the checkpoint, 8 records in all), and the vector file trimmed to 64 slots so every fuzz run stays small. Most
/// records have a JSON payload: the payload log holds the checkpointed frames (a snapshot
/// points at them) and the frames of the records after the checkpoint.
pub fn fixture_files() -> [Vec<u8>; 6] {
    static FILES: std::sync::OnceLock<[Vec<u8>; 6]> = std::sync::OnceLock::new();
    FILES.get_or_init(build_fixture).clone()
}

fn build_fixture() -> [Vec<u8>; 6] {
    let dir = scratch_dir();
    let dim = FIXTURE_DIMENSION as usize;
    let ids = |ns: &[u64]| ns.iter().map(|&n| Id::Int(n)).collect::<Vec<_>>();
    let vecs = |ns: &[u64]| {
        ns.iter()
            .flat_map(|&n| (0..dim).map(move |j| n as f32 + j as f32 / 8.0))
            .collect::<Vec<f32>>()
    };
    let db = Db::open(dir.path(), DbOptions::default()).expect("fixture: open");
    let c = db
        .create_collection("c", FIXTURE_DIMENSION, keeldb_core::Metric::Cosine)
        .expect("fixture: create");
    let payloads: [Option<&[u8]>; 6] = [
        Some(br#"{"n":1}"#),
        Some(br#"{"n":2,"tags":["a","b"]}"#),
        None,
        Some(b"[1,2,3]"),
        Some(br#""text""#),
        Some(b"null"),
    ];
    c.upsert_with_payloads(
        &ids(&[1, 2, 3, 4, 5, 6]),
        &vecs(&[1, 2, 3, 4, 5, 6]),
        &payloads,
        None,
    )
    .expect("fixture: upsert");
    c.upsert_with_payloads(
        &[Id::from("s")],
        &vecs(&[7]),
        &[Some(br#"{"s":true}"#)],
        None,
    )
    .expect("fixture: upsert");
    db.close().expect("fixture: close");
    let db = Db::open(dir.path(), DbOptions::default()).expect("fixture: reopen");
    let c = db.collection("c").expect("fixture: collection");
    c.upsert_with_payloads(
        &ids(&[2, 8]),
        &vecs(&[20, 8]),
        &[Some(br#"{"n":20}"#), Some(br#"{"n":8}"#)],
        None,
    )
    .expect("fixture: upsert");
    c.delete(&ids(&[3, 9]), None).expect("fixture: delete");
    c.update_payload(&Id::Int(1), Some(br#"{"m":1}"#), true, None)
        .expect("fixture: merge a payload");
    c.upsert(&[Id::from("t")], &vecs(&[10]), None)
        .expect("fixture: upsert");
    drop(c);
    drop(db); // a crash: the three records stay in the log
    let col = dir.path().join("c");
    let read = |name: &str| fs::read(col.join(name)).expect("fixture: read");
    let mut vectors = read("vectors.dat");
    vectors.truncate(vectors::VECTORS_HEADER_LEN + FIXTURE_SLOTS * dim * 4);
    [
        read("collection.json"),
        read("ids.idx"),
        vectors,
        read("vectors.wal"),
        read("payloads-1.log"),
        read("payloads.idx"),
    ]
}

/// A scratch directory on tmpfs when there is one (fsync is then nearly free), else in the
/// system temp directory.
fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let builder = {
        let mut b = tempfile::Builder::new();
        b.prefix("keeldb-fuzz-");
        b
    };
    if shm.is_dir() {
        if let Ok(dir) = builder.tempdir_in(shm) {
            return dir;
        }
    }
    builder.tempdir().expect("scratch directory")
}

/// Applies the edits an `open_dir` input describes to the fixture's files. Byte 0 says
/// which checksums to recompute after the edits (bit 0 the index's, bit 1 the log's header
/// and records, bit 2 the vector file header's, bit 3 the payload log's header and frames,
/// bit 4 the payload snapshot's); then comes a list of edits, each
/// `[control u8][at u16][len u8][len bytes]`: control bits 0-1 pick the file (with bit 4
/// clear: config, index, vectors, log; with bit 4 set: bit 0 picks the payload log or the
/// payload snapshot), bits 2-3 the edit (0 replace the whole file by the bytes, 1 overwrite
/// at `at`, 2 truncate to `at`, 3 append).
pub fn edited_files(data: &[u8]) -> [Vec<u8>; 6] {
    let mut files = fixture_files();
    let Some((&fix, mut rest)) = data.split_first() else {
        return files;
    };
    while let [control, a0, a1, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (bytes, next) = tail.split_at(len);
        rest = next;
        let file = match control & 0x10 {
            0 => &mut files[usize::from(control & 0x03)],
            _ => &mut files[PAYLOAD_LOG + usize::from(control & 0x01)],
        };
        let at = usize::from(u16::from_le_bytes([*a0, *a1]));
        match (control >> 2) & 0x03 {
            0 => *file = bytes.to_vec(),
            1 => {
                let end = at + bytes.len();
                if file.len() < end {
                    file.resize(end, 0);
                }
                file[at..end].copy_from_slice(bytes);
            }
            2 => file.truncate(at),
            _ => file.extend_from_slice(bytes),
        }
    }
    if fix & 1 != 0 {
        fix_index_crc(&mut files[1]);
    }
    if fix & 2 != 0 {
        fix_wal_crcs(&mut files[3]);
    }
    if fix & 4 != 0 {
        fix_crc_at(&mut files[2], 28);
    }
    if fix & 8 != 0 {
        fix_payload_log_crcs(&mut files[PAYLOAD_LOG]);
    }
    if fix & 16 != 0 {
        fix_index_crc(&mut files[PAYLOAD_SNAPSHOT]);
    }
    files
}

/// Opening a whole database directory whose collection files were edited by the input (see
/// [`edited_files`]). Asserts: open returns (a typed error or a database), never panics; a
/// refused open leaves the config, index and log as they were and the vector file's
/// referenced slots too (replay may grow it and write free slots before meeting damage); and a database that opens is usable: every
/// live id reads back, a new write is acknowledged, and after close the directory reopens
/// with that write in it.
pub fn open_dir(data: &[u8]) {
    let files = edited_files(data);
    let dir = scratch_dir();
    let col = dir.path().join("c");
    fs::create_dir(&col).expect("create the collection directory");
    for (name, bytes) in FIXTURE_FILES.iter().zip(&files) {
        fs::write(col.join(name), bytes).expect("write a fixture file");
    }
    let db = match Db::open(dir.path(), DbOptions::default()) {
        Ok(db) => db,
        Err(e) => {
            assert_typed(&e);
            for (name, bytes) in FIXTURE_FILES.iter().zip(&files) {
                let now = fs::read(col.join(name)).unwrap_or_default();
                let same = match *name {
                    // Replay may have grown the vector file and written slots before it met
                    // the damage; the slots the index references must be untouched.
                    "vectors.dat" => {
                        let kept = referenced_vector_bytes(&files).min(bytes.len());
                        now.len() >= kept && now[..kept] == bytes[..kept]
                    }
                    // Opening cuts the frames after the checkpoint (replay writes them
                    // again); what the checkpoint synced must be untouched.
                    "payloads-1.log" => {
                        let kept = synced_payload_bytes(&files).min(bytes.len());
                        now.len() >= kept && now[..kept] == bytes[..kept]
                    }
                    _ => now == *bytes,
                };
                assert!(same, "a refused open changed {name}");
            }
            return;
        }
    };
    let c = db.collection("c").expect("the collection opened");
    let stats = c.stats().expect("stats");
    let dim = stats.dimension as usize;
    let probe: Vec<Id> = (0..12)
        .map(Id::Int)
        .chain([Id::from("s"), Id::from("t")])
        .collect();
    // With the log's or the payload log's checksums recomputed over edited bytes, a frame
    // can be a forgery that checks out: its payload is whatever the input made it (the
    // binding and lib/index.ts refuse one that is not UTF-8 JSON with KEEL_CORRUPT).
    let forged_payloads = data.first().is_some_and(|fix| fix & (2 | 8) != 0);
    let mut live = 0;
    for id in &probe {
        // Otherwise a payload that reads back is JSON: keeldb wrote it after checking it, and
        // a damaged frame is refused by its checksum. One that does not read is an error.
        match c.get_record(id, true, true) {
            Ok(Some(record)) => {
                assert_eq!(record.vector.map(|v| v.len()), Some(dim));
                if let Some(payload) = record.payload.filter(|_| !forged_payloads) {
                    assert!(
                        serde_json::from_slice::<serde_json::Value>(&payload).is_ok(),
                        "the payload of {id} read back as something other than JSON"
                    );
                }
                live += 1;
            }
            Ok(None) => {}
            Err(e) => assert_eq!(e.code(), "KEEL_CORRUPT", "reading {id}: {e}"),
        }
    }
    assert!(live <= stats.count);
    let marker = vec![0.25f32; dim];
    let marker_payload: &[u8] = br#"{"fuzz":"marker"}"#;
    c.upsert_with_payloads(
        &[Id::from("fuzz-marker")],
        &marker,
        &[Some(marker_payload)],
        None,
    )
    .expect("a database that opened accepts a write");
    drop(c);
    db.close().expect("close");
    let db = Db::open(dir.path(), DbOptions::default()).expect("reopen after a clean close");
    let c = db.collection("c").expect("collection after reopen");
    let record = c
        .get_record(&Id::from("fuzz-marker"), true, true)
        .expect("get the marker");
    assert_eq!(record.as_ref().and_then(|r| r.vector.clone()), Some(marker));
    assert_eq!(
        record.and_then(|r| r.payload),
        Some(marker_payload.to_vec())
    );
    db.close().expect("close after reopen");
}

/// How many records the unedited fixture opens with (`None` if it does not open): unless
/// it opens, `open_dir` only ever checks refusals (it did, from when collections gained
/// payload files until the fixture had them).
pub fn fixture_count() -> Option<u64> {
    let dir = scratch_dir();
    let col = dir.path().join("c");
    fs::create_dir(&col).expect("create the collection directory");
    for (name, bytes) in FIXTURE_FILES.iter().zip(fixture_files()) {
        fs::write(col.join(name), bytes).expect("write a fixture file");
    }
    let opened = Db::open(dir.path(), DbOptions::default());
    opened
        .as_ref()
        .ok()
        .and_then(|db| db.collection("c").ok())
        .and_then(|c| c.stats().ok())
        .map(|s| s.count)
}

/// How many leading bytes of the payload log the fixture's index says its checkpoint synced
/// (all of them when the index does not decode, since open then fails before the payload
/// log is opened).
fn synced_payload_bytes(files: &[Vec<u8>; 6]) -> usize {
    match index::decode(&files[1]) {
        Ok(i) => usize::try_from(i.payload_log_end).unwrap_or(usize::MAX),
        Err(_) => usize::MAX,
    }
}

/// How many leading bytes of the vector file hold the header and the slots the index
/// references (the whole file when the config or the index does not decode, since open then
/// fails before mapping it).
fn referenced_vector_bytes(files: &[Vec<u8>; 6]) -> usize {
    let decoded = config::decode(&files[0])
        .ok()
        .zip(index::decode(&files[1]).ok());
    match decoded {
        Some((c, i)) => vectors::VECTORS_HEADER_LEN
            .saturating_add((i.slot_high_water as usize).saturating_mul(c.dimension as usize * 4)),
        None => usize::MAX,
    }
}

/// An error from opening hostile files must be one of the codes a damaged directory can give.
fn assert_typed(e: &Error) {
    assert!(
        matches!(e.code(), "KEEL_CORRUPT" | "KEEL_UNSUPPORTED_VERSION"),
        "unexpected error for hostile files: {} {e}",
        e.code()
    );
}

/// Recomputes a payload log's header CRC and both CRCs of every frame found by walking
/// declared lengths from the end of the header (a frame that does not start with the sync
/// marker, or does not fit, ends the walk), as [`fix_wal_crcs`] does for the log.
pub fn fix_payload_log_crcs(image: &mut [u8]) {
    fix_crc_at(image, PAYLOAD_LOG_HEADER_LEN - 4);
    let mut pos = PAYLOAD_LOG_HEADER_LEN;
    while pos + FRAME_HEADER_LEN <= image.len() && image[pos..pos + 4] == *b"KPAY" {
        fix_crc_at(&mut image[pos..], FRAME_HEADER_LEN - 4);
        let body_len = u32::from_le_bytes([
            image[pos + 8],
            image[pos + 9],
            image[pos + 10],
            image[pos + 11],
        ]);
        let frame_len = FRAME_OVERHEAD + body_len as usize;
        if image.len() - pos < frame_len {
            break;
        }
        fix_crc_at(&mut image[pos..pos + frame_len], frame_len - 4);
        pos += frame_len;
    }
}

/// The payload log. Byte 0 chooses the checkpoint lsn (bits 0-2), the policy (bit 3),
/// whether the header and frame CRCs are recomputed (bit 4, see [`fix_payload_log_crcs`]),
/// whether the rest is the whole file (bit 5) or frames after a valid header of generation 1,
/// and the length the checkpoint synced, as `ids.idx` would record it (bits 6-7: the header,
/// the whole file, half of it, or past its end).
///
/// First the decoders on the bare rest (see [`payload_log_decoders`]). Then the file is
/// opened and scanned as recovery does (`PayloadLogFile::open`, `scan`). Asserts: neither
/// panics, and an error is typed; what the scan hands over checks out (see [`run_scan`]);
/// recovery is idempotent (the log cut where the scan says, as `PayloadStore::open` cuts it,
/// scans to the same frames); and a frame appended there, as the collection does when it
/// replays a log record after the checkpoint, is found by the next scan.
pub fn payload_log(data: &[u8]) {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    payload_log_decoders(rest);
    let checkpoint_lsn = u64::from(control & 0x07);
    let policy = if control & 0x08 == 0 {
        RecoveryPolicy::Salvage
    } else {
        RecoveryPolicy::Strict
    };
    let mut image = if control & 0x20 != 0 {
        rest.to_vec()
    } else {
        [&encode_payload_log_header(1, 0)[..], rest].concat()
    };
    if control & 0x10 != 0 {
        fix_payload_log_crcs(&mut image);
    }
    let synced_end = match control >> 6 {
        0 => PAYLOAD_LOG_HEADER_LEN as u64,
        1 => image.len() as u64,
        2 => image.len() as u64 / 2,
        _ => image.len() as u64 + 64,
    };
    // Name the file after the generation its header names, so a forged header is read past.
    let generation = decode_payload_log_header(&image).map_or(1, |h| h.generation);
    let dir = scratch_dir();
    let name = keeldb_core::storage::payload_log::file_name(generation);
    fs::write(dir.path().join(name), &image).expect("write the payload log");
    let mut log = match PayloadLogFile::open(
        &keeldb_core::storage::vfs::RealFs,
        dir.path(),
        generation,
        0,
    ) {
        Ok(log) => log,
        Err(e) => return assert_typed(&e),
    };
    let (first, visited) = match run_scan(&log, checkpoint_lsn, synced_end, policy) {
        Ok(scanned) => scanned,
        Err(e) => return assert_typed(&e),
    };

    log.truncate(first.end_offset).expect("cut the log");
    // What the next checkpoint records as synced: no more than what is left.
    let synced_end = synced_end.min(first.end_offset);
    let (again, visited_again) = run_scan(&log, checkpoint_lsn, synced_end, policy)
        .expect("a log cut where its scan said scans again");
    assert_eq!(
        again.end_offset, first.end_offset,
        "recovery is not idempotent"
    );
    assert_eq!(
        visited_again, visited,
        "a cut at the valid end changed what is read"
    );
    assert!(again.corrupt_ranges_skipped <= first.corrupt_ranges_skipped);

    let next_lsn = checkpoint_lsn + 1;
    let mut frame = Vec::new();
    encode_frame(&mut frame, FrameKind::Store, next_lsn, &Id::Int(1), b"{}");
    log.append(&frame).expect("append a frame");
    let (after, visited_after) =
        run_scan(&log, next_lsn, synced_end, policy).expect("a log with an appended frame scans");
    assert_eq!(after.end_offset, first.end_offset + frame.len() as u64);
    assert_eq!(
        visited_after.len(),
        visited.len() + 1,
        "the appended frame was not read"
    );
    assert_eq!(visited_after[..visited.len()], visited[..]);
}

/// A frame a scan handed over: offset, length, lsn, kind byte, id and payload.
type ScannedFrame = (u64, u64, u64, u8, Id, Option<Vec<u8>>);

/// Scans `log` from the end of its header as recovery does, and checks what comes back:
/// only frames the checkpoint covers, in order and not overlapping (back to back unless
/// damage was reported), each of which reads back whole through `read_frame` (and, for a
/// store, `read_store_frame`); the outcome's counts agree with what was handed over, `Strict`
/// skips nothing, and the log is to be cut right after the last frame kept.
fn run_scan(
    log: &PayloadLogFile,
    checkpoint_lsn: u64,
    synced_end: u64,
    policy: RecoveryPolicy,
) -> Result<(ScanOutcome, Vec<ScannedFrame>), Error> {
    let mut frames: Vec<ScannedFrame> = Vec::new();
    let from = PAYLOAD_LOG_HEADER_LEN as u64;
    let outcome = log.scan(
        from,
        checkpoint_lsn,
        synced_end,
        policy,
        |offset, header, body| {
            assert!(
                header.lsn <= checkpoint_lsn,
                "a frame of record {} was read past checkpoint {checkpoint_lsn}",
                header.lsn
            );
            let payload = body.payload.map(<[u8]>::to_vec);
            frames.push((
                offset,
                header.frame_len(),
                header.lsn,
                header.kind,
                body.id,
                payload,
            ));
        },
    )?;
    assert_eq!(outcome.frames_read, frames.len() as u64);
    assert_eq!(
        outcome.corrupt_ranges_skipped,
        outcome.warnings.len() as u64
    );
    if policy == RecoveryPolicy::Strict {
        assert_eq!(outcome.corrupt_ranges_skipped, 0, "strict skipped damage");
    }
    let file = log.handle();
    let mut end = from;
    for (offset, frame_len, _lsn, kind, id, payload) in &frames {
        assert!(*offset >= end, "frame at {offset} overlaps the one before");
        if outcome.corrupt_ranges_skipped == 0 {
            assert_eq!(
                *offset, end,
                "a gap before frame at {offset}, with no damage reported"
            );
        }
        let loc = PayloadLoc {
            offset: *offset,
            frame_len: u32::try_from(*frame_len).expect("frame length is within its limit"),
        };
        read_frame(&*file, log.path(), loc).expect("a scanned frame reads back");
        assert_eq!(payload.is_some(), *kind == FrameKind::Store as u8);
        if let Some(payload) = payload {
            let read = read_store_frame(&*file, log.path(), loc, id)
                .expect("a scanned payload reads back");
            assert_eq!(read, *payload);
        }
        end = offset + frame_len;
    }
    assert_eq!(
        outcome.end_offset, end,
        "the log would be cut elsewhere than after the last frame kept"
    );
    assert!(outcome.end_offset <= log.len_bytes());
    Ok((outcome, frames))
}

/// The payload log's decoders on bare bytes: the file header, a frame header, the trailing
/// CRC, and a frame body of either kind (the bytes themselves, and the body of the frame
/// they start with). Asserts: none panics; a header or frame that decodes re-encodes to a
/// value that decodes the same, and to the very same bytes when its reserved bytes are zero;
/// a body that decodes re-encodes to the same bytes; a declared length is within its limit.
fn payload_log_decoders(bytes: &[u8]) {
    if let Ok(header) = decode_payload_log_header(bytes) {
        let encoded = encode_payload_log_header(header.generation, header.uid);
        let again = decode_payload_log_header(&encoded).expect("an encoded header decodes");
        assert_eq!(
            (again.version, again.generation, again.uid),
            (PAYLOAD_LOG_VERSION, header.generation, header.uid)
        );
        let canonical = header.version == PAYLOAD_LOG_VERSION
            && bytes[12..16] == [0; 4]
            && bytes[24..28] == [0; 4];
        if canonical {
            assert_eq!(encoded[..], bytes[..PAYLOAD_LOG_HEADER_LEN]);
        }
    }
    let _ = frame_crc_ok(bytes);
    body_round_trips(FrameKind::Store, bytes);
    body_round_trips(FrameKind::Delete, bytes);
    let Ok(header) = decode_frame_header(bytes) else {
        return;
    };
    assert!(header.body_len <= FRAME_BODY_BYTES_MAX);
    let Some(frame) = usize::try_from(header.frame_len())
        .ok()
        .and_then(|len| bytes.get(..len))
    else {
        return;
    };
    let body = &frame[FRAME_HEADER_LEN..frame.len() - 4];
    body_round_trips(FrameKind::Store, body);
    body_round_trips(FrameKind::Delete, body);
    let (Some(kind), true) = (FrameKind::from_byte(header.kind), frame_crc_ok(frame)) else {
        return;
    };
    let Ok(decoded) = decode_frame_body(kind, body) else {
        return;
    };
    let mut again = Vec::new();
    let payload = decoded.payload.unwrap_or_default();
    let len = encode_frame(&mut again, kind, header.lsn, &decoded.id, payload);
    assert_eq!(len as usize, frame.len());
    if frame[5..8] == [0; 3] {
        assert_eq!(again, frame, "a decoded frame re-encodes to other bytes");
    }
}

/// Decodes `body` as a frame body of `kind`; if it decodes, checks the payload's limits and
/// that encoding the id and payload again gives back `body`.
fn body_round_trips(kind: FrameKind, body: &[u8]) {
    let Ok(decoded) = decode_frame_body(kind, body) else {
        return;
    };
    assert_eq!(decoded.payload.is_some(), kind == FrameKind::Store);
    if let Some(payload) = decoded.payload {
        assert!(!payload.is_empty() && payload.len() <= keeldb_core::types::PAYLOAD_BYTES_MAX);
    }
    let mut frame = Vec::new();
    encode_frame(
        &mut frame,
        kind,
        0,
        &decoded.id,
        decoded.payload.unwrap_or_default(),
    );
    assert_eq!(
        &frame[FRAME_HEADER_LEN..frame.len() - 4],
        body,
        "a decoded frame body re-encodes to other bytes"
    );
}

/// The payload snapshot (`payloads.idx`). Byte 0, bit 0: recompute the trailing CRC of the
/// rest (a forged file). Asserts: version peeking and decoding never panic; a decoded
/// snapshot keeps the promises of `payload_index::decode` (valid ids, none twice, every frame
/// between the log header and `log_end`); it re-encodes to bytes that decode to the same
/// snapshot, and to the very same bytes when its version is this build's and its reserved
/// fields are zero.
pub fn payload_index(data: &[u8]) {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = rest.to_vec();
    if control & 1 != 0 {
        fix_index_crc(&mut bytes);
    }
    let _ = keeldb_core::format::peek_version(&bytes, &payload_index::PAYLOAD_INDEX_MAGIC);
    let Ok(snapshot) = payload_index::decode(&bytes) else {
        return;
    };
    assert!(snapshot.log_end >= PAYLOAD_LOG_HEADER_LEN as u64);
    let mut ids = std::collections::HashSet::new();
    for (id, loc) in &snapshot.entries {
        assert!(id.validate().is_ok(), "invalid id {id} decoded");
        assert!(ids.insert(id), "id {id} decoded twice");
        let inside = loc.offset >= PAYLOAD_LOG_HEADER_LEN as u64
            && loc.frame_len as usize > FRAME_OVERHEAD
            && loc.offset.saturating_add(u64::from(loc.frame_len)) <= snapshot.log_end;
        assert!(
            inside,
            "frame {loc:?} outside the covered log {}",
            snapshot.log_end
        );
    }
    let encoded = payload_index::encode(&snapshot);
    let canonical = snapshot.version == payload_index::PAYLOAD_INDEX_VERSION
        && bytes[12..16] == [0; 4]
        && bytes[PAYLOAD_INDEX_HEADER_LEN - 4..PAYLOAD_INDEX_HEADER_LEN] == [0; 4];
    if canonical {
        assert_eq!(
            encoded, bytes,
            "a decoded snapshot re-encodes to other bytes"
        );
    }
    assert_eq!(
        payload_index::decode(&encoded),
        Ok(payload_index::PayloadSnapshot {
            version: payload_index::PAYLOAD_INDEX_VERSION,
            ..snapshot
        })
    );
}
