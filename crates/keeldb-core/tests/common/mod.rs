//! Helpers shared by the integration tests: opening databases, writing logs with known
//! records, walking and forging log frames, and checking what a collection holds.
//!
//! A "crash" here is dropping a `Db` without `close()`: nothing is checkpointed, so the log
//! keeps every acknowledged record, as after a process kill.

#![allow(
    dead_code,
    reason = "every test binary compiles this module but uses a different subset of it"
)]

pub mod child;
pub mod hostile;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use keeldb_core::format::crc32;
use keeldb_core::format::index::{self, IndexSnapshot};
use keeldb_core::format::wal::{RECORD_HEADER_LEN, RECORD_SYNC, WAL_HEADER_LEN};
use keeldb_core::{Collection, Db, DbOptions, Durability, Id, Metric, RecoveryPolicy, Result};

/// The collection every fixture uses.
pub const NAME: &str = "c";
/// Offset of the header CRC inside a record header.
pub const RECORD_HEADER_CRC_AT: usize = RECORD_HEADER_LEN - 4;
/// Offset of `body_len` inside a record header.
pub const RECORD_BODY_LEN_AT: usize = 8;
/// Offset of `lsn` inside a record header.
pub const RECORD_LSN_AT: usize = 12;

/// Database options with the given recovery policy and defaults otherwise.
pub fn options(recovery: RecoveryPolicy) -> DbOptions {
    DbOptions {
        recovery,
        ..DbOptions::default()
    }
}

/// Opens `dir` under `recovery`.
pub fn open(dir: &Path, recovery: RecoveryPolicy) -> Result<Db> {
    Db::open(dir, options(recovery))
}

/// Opens `dir` with default options, panicking with the error if it fails.
pub fn open_ok(dir: &Path) -> Db {
    Db::open(dir, DbOptions::default()).expect("open the database")
}

/// Opens the database in `dir` (`open_ok`) and its collection `NAME`.
pub fn reopen(dir: &Path) -> (Db, Arc<Collection>) {
    let db = open_ok(dir);
    let c = db.collection(NAME).expect("collection");
    (db, c)
}

/// Opens `dir` and creates collection [`NAME`] of `dimension` in it.
pub fn create(dir: &Path, dimension: u32) -> (Db, Arc<Collection>) {
    let db = open_ok(dir);
    let c = db
        .create_collection(NAME, dimension, Metric::Euclidean)
        .expect("create the collection");
    (db, c)
}

/// The directory of collection [`NAME`].
pub fn coll_dir(dir: &Path) -> PathBuf {
    dir.join(NAME)
}

/// The log of collection [`NAME`].
pub fn wal_path(dir: &Path) -> PathBuf {
    coll_dir(dir).join("vectors.wal")
}

/// The id index of collection [`NAME`].
pub fn index_path(dir: &Path) -> PathBuf {
    coll_dir(dir).join("ids.idx")
}

/// The vector file of collection [`NAME`].
pub fn vectors_path(dir: &Path) -> PathBuf {
    coll_dir(dir).join("vectors.dat")
}

/// The config file of collection [`NAME`].
pub fn config_path(dir: &Path) -> PathBuf {
    coll_dir(dir).join("collection.json")
}

/// Reads a whole file.
pub fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Replaces a whole file.
pub fn write(path: &Path, bytes: &[u8]) {
    fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Every file and directory under `dir` (paths relative to it) with a file's contents, sorted:
/// to check that a refused call changed nothing on disk.
pub fn tree(dir: &Path) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    fn walk(root: &Path, at: &Path, out: &mut Vec<(PathBuf, Option<Vec<u8>>)>) {
        for entry in fs::read_dir(at).expect("read_dir") {
            let path = entry.expect("entry").path();
            let relative = path.strip_prefix(root).expect("under the root").to_owned();
            if path.is_dir() {
                out.push((relative, None));
                walk(root, &path, out);
            } else {
                out.push((relative, Some(read(&path))));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// The files a recovering open rewrites when it checkpoints (ids.idx, payloads.idx and the
/// payload logs), as a crash left them, so that a test can open the same crash image again
/// and again. Putting back ids.idx alone would leave the payload snapshot the last open wrote
/// newer than it: an older ids.idx, which open reports.
pub struct CrashFiles {
    files: Vec<(PathBuf, Option<Vec<u8>>)>,
    dir: PathBuf,
}

impl CrashFiles {
    /// The files of the collection in `dir` now (`None`: absent), every payload log
    /// generation included.
    pub fn take(dir: &Path) -> CrashFiles {
        let mut paths = vec![index_path(dir), payload_index_path(dir)];
        paths.extend(payload_log_paths(dir));
        CrashFiles {
            files: paths
                .into_iter()
                .map(|path| {
                    let bytes = fs::read(&path).ok();
                    (path, bytes)
                })
                .collect(),
            dir: dir.to_owned(),
        }
    }

    /// Writes them back, removing those that were absent and any payload log that was not
    /// there when they were taken.
    pub fn put_back(&self) {
        for path in payload_log_paths(&self.dir) {
            if !self.files.iter().any(|(taken, _)| *taken == path) {
                fs::remove_file(&path).expect("remove a payload log the image did not have");
            }
        }
        for (path, bytes) in &self.files {
            match bytes {
                Some(bytes) => write(path, bytes),
                None => {
                    let _ = fs::remove_file(path);
                }
            }
        }
    }
}

/// The payload logs (`payloads-N.log`, every generation) of collection [`NAME`].
fn payload_log_paths(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = fs::read_dir(coll_dir(dir))
        .expect("list the collection's directory")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("payloads-") && name.ends_with(".log"))
        })
        .collect();
    paths.sort();
    paths
}

/// Rewrites collection [`NAME`]'s files as a build before format 3 wrote them: a uid of 0 in
/// every header (checksums fixed), and no uid in collection.json, which says `version`.
pub fn forget_uids(dir: &Path, version: u32) {
    let zero_at = |path: &Path, at: usize, crc_at: Option<usize>| {
        let Ok(mut bytes) = fs::read(path) else {
            return; // a file this test removed
        };
        bytes[at..at + 4].fill(0);
        let crc_at = crc_at.unwrap_or(bytes.len() - 4);
        let crc = keeldb_core::format::crc32(&bytes[..crc_at]);
        bytes[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
        write(path, &bytes);
    };
    zero_at(&vectors_path(dir), 16, Some(28));
    zero_at(&wal_path(dir), 16, Some(28));
    zero_at(&index_path(dir), 36, None);
    zero_at(&payload_index_path(dir), 12, None);
    for path in payload_log_paths(dir) {
        zero_at(&path, 12, Some(28));
    }
    let config = String::from_utf8(read(&config_path(dir))).expect("utf8");
    let config: serde_json::Value = serde_json::from_str(&config).expect("config json");
    write(
        &config_path(dir),
        format!(
            r#"{{"formatVersion":{version},"dimension":{},"metric":{}}}"#,
            config["dimension"], config["metric"]
        )
        .as_bytes(),
    );
}

/// The vector every fixture stores under integer id `n`: distinct per id and component.
pub fn vector(n: u64, dimension: u32) -> Vec<f32> {
    (0..dimension).map(|j| n as f32 * 10.0 + j as f32).collect()
}

/// Integer ids.
pub fn ids(ns: &[u64]) -> Vec<Id> {
    ns.iter().map(|&n| Id::Int(n)).collect()
}

/// The flat vectors of `ns`, for `upsert`.
pub fn flat(ns: &[u64], dimension: u32) -> Vec<f32> {
    ns.iter().flat_map(|&n| vector(n, dimension)).collect()
}

/// Upserts integer ids `ns` as one batch (one log record) with default durability.
pub fn put(c: &Collection, ns: &[u64]) {
    c.upsert(&ids(ns), &flat(ns, c.dimension()), None)
        .expect("upsert");
}

/// Creates collection [`NAME`] in `dir`, writes one fsynced record per batch, and crashes.
/// Returns the log and the offset at which each record starts.
pub fn write_log(dir: &Path, dimension: u32, batches: &[&[u64]]) -> (Vec<u8>, Vec<usize>) {
    let (db, c) = create(dir, dimension);
    for batch in batches {
        put(&c, batch);
    }
    drop(c);
    drop(db);
    let log = read_log(dir);
    let starts = record_starts(&log);
    assert_eq!(starts.len(), batches.len(), "one record per batch");
    (log, starts)
}

/// The log of the collection in `dir` as its records end: the whole records from the
/// header on, in increasing lsn order, without what follows them (the zero-filled space
/// the writer keeps, the old records an emptying of the log left after the new ones, a
/// torn record; see docs/FORMAT.md). For tests that take the log apart or measure it.
pub fn read_log(dir: &Path) -> Vec<u8> {
    let mut log = read(&wal_path(dir));
    log.truncate(trim_log(&log).len());
    log
}

/// `log` up to the end of its last whole record (see [`read_log`]).
pub fn trim_log(log: &[u8]) -> &[u8] {
    let lsn_at = |at: usize| {
        let bytes = &log[at + RECORD_LSN_AT..at + RECORD_LSN_AT + 8];
        u64::from_le_bytes(bytes.try_into().expect("8 bytes"))
    };
    let mut at = WAL_HEADER_LEN.min(log.len());
    let mut last_lsn = 0;
    while at + RECORD_HEADER_LEN <= log.len()
        && log[at..at + 4] == RECORD_SYNC.to_le_bytes()
        && lsn_at(at) > last_lsn
        && at + frame_len(&log[at..]) <= log.len()
    {
        last_lsn = lsn_at(at);
        at += frame_len(&log[at..]);
    }
    &log[..at]
}

/// The bytes `bytes` holds before the zeros it ends with: what replay counts as torn when
/// they follow the last whole record.
pub fn without_trailing_zeros(bytes: &[u8]) -> usize {
    bytes.len() - bytes.iter().rev().take_while(|&&b| b == 0).count()
}

/// The offset of every record in a well-formed log (without the zero-filled space after
/// it), found by walking the declared lengths.
pub fn record_starts(log: &[u8]) -> Vec<usize> {
    let log = trim_log(log);
    let mut starts = Vec::new();
    let mut at = WAL_HEADER_LEN;
    while at < log.len() {
        starts.push(at);
        at += frame_len(&log[at..]);
    }
    assert_eq!(at, log.len(), "the log ends with a whole record");
    starts
}

/// The length of the frame starting at `record[0]`, as its header declares.
pub fn frame_len(record: &[u8]) -> usize {
    let len = u32::from_le_bytes(
        record[RECORD_BODY_LEN_AT..RECORD_BODY_LEN_AT + 4]
            .try_into()
            .expect("4 bytes"),
    );
    RECORD_HEADER_LEN + len as usize + 4
}

/// Recomputes the header CRC of the record starting at `record[0]`.
pub fn fix_header_crc(record: &mut [u8]) {
    let crc = crc32(&record[..RECORD_HEADER_CRC_AT]);
    record[RECORD_HEADER_CRC_AT..RECORD_HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
}

/// Recomputes both CRCs of the whole frame `record` (header first, then body), so that
/// only the fields a test changed are hostile.
pub fn fix_crcs(record: &mut [u8]) {
    fix_header_crc(record);
    let crc_at = record.len() - 4;
    let crc = crc32(&record[..crc_at]);
    record[crc_at..].copy_from_slice(&crc.to_le_bytes());
}

/// Asserts that `c` holds exactly the fixture vector of each id in `present` and nothing
/// under any id in `absent`.
pub fn assert_holds(c: &Collection, present: &[u64], absent: &[u64]) {
    for &n in present {
        let got = c.get(&Id::Int(n)).expect("get");
        assert_eq!(
            got,
            Some(vector(n, c.dimension())),
            "id {n} should be present"
        );
    }
    for &n in absent {
        assert_eq!(
            c.get(&Id::Int(n)).expect("get"),
            None,
            "id {n} should be absent"
        );
    }
}

/// The error code of `result`, or a panic naming the unexpected success.
pub fn code<T>(result: Result<T>) -> &'static str {
    match result {
        Ok(_) => panic!("expected an error, got success"),
        Err(e) => e.code(),
    }
}

/// The id index of collection [`NAME`] as written by the last checkpoint, entries sorted so
/// that two snapshots of the same state compare equal.
pub fn index_snapshot(dir: &Path) -> IndexSnapshot {
    let mut snapshot = index::decode(&read(&index_path(dir))).expect("decode the index");
    snapshot.entries.sort();
    snapshot
}

/// Options with a tiny checkpoint threshold: every write checkpoints.
pub fn checkpoint_every_write() -> DbOptions {
    DbOptions {
        checkpoint_threshold_bytes: 1,
        checkpoint_scales_with_index: false,
        ..DbOptions::default()
    }
}

/// Options whose writes use `durability` unless they name one.
pub fn with_durability(durability: Durability) -> DbOptions {
    DbOptions {
        durability,
        ..DbOptions::default()
    }
}

/// The payload log of generation `generation` of collection [`NAME`].
pub fn payload_log_path(dir: &Path, generation: u64) -> PathBuf {
    coll_dir(dir).join(format!("payloads-{generation}.log"))
}

/// The payload snapshot of collection [`NAME`].
pub fn payload_index_path(dir: &Path) -> PathBuf {
    coll_dir(dir).join("payloads.idx")
}

/// The payload every fixture stores under integer id `n` in version `v`: an object with
/// nested values and a string that grows with `n`, so frames differ in length.
pub fn payload(n: u64, v: u64) -> Vec<u8> {
    format!(
        r#"{{"n":{n},"v":{v},"tags":["t{n}",{{"deep":[{v},null,true]}}],"text":"{}"}}"#,
        "x".repeat((n % 7) as usize)
    )
    .into_bytes()
}

/// Payload version `v` of `n` padded past the payload log's write buffer: a commit group
/// that stores it writes its frames (and those buffered before them) while it is applied.
/// Smaller frames stay buffered past their group, until the buffer fills or a checkpoint.
pub fn big_payload(n: u64, v: u64) -> Vec<u8> {
    let pad = "p".repeat(keeldb_core::storage::payload_log::APPEND_BUFFER_BYTES);
    format!(r#"{{"n":{n},"v":{v},"pad":"{pad}"}}"#).into_bytes()
}

/// With `fault` injected, upserts each of `ns` as a write of its own at fsync (with payload
/// `big_payload(n, 0)` when `with_payloads`, so that the group writes its frames), then
/// deletes id 1, all queued quietly and then woken so that they mostly form one group, and
/// waits for every outcome. The first group fails
/// after it was logged, and later groups are refused as poisoned, except one the committer
/// logged while it applied the first (possible with `answered_early`): that one fails with
/// KEEL_IO, and reopening replays it. A delete in the first group is not acknowledged (its
/// answer is a count only its apply knows). With
/// `answered_early`, the fault hits after the group's upserts were answered (an upsert's
/// answer is settled by the sync, and reopening replays it): they are acknowledged, and
/// every read then refuses with KEEL_POISONED, since it would miss them. Without, the fault
/// hits before any answer: the upserts get KEEL_IO, and reads go on. Returns each upsert's
/// id with its outcome's code ("OK" when acknowledged), then the delete's code.
#[cfg(feature = "planted-bugs")]
pub fn submit_failing_groups(
    c: &Collection,
    fault: keeldb_core::planted::Fault,
    ns: std::ops::Range<u64>,
    with_payloads: bool,
    answered_early: bool,
) -> (Vec<(u64, &'static str)>, &'static str) {
    // The caller's last write may have been answered before it was applied: wait for that
    // apply, so that the fault does not hit it.
    c.flush().expect("flush");
    keeldb_core::planted::inject(Some(fault));
    let (tx, rx) = std::sync::mpsc::channel();
    for n in ns.clone() {
        let p = big_payload(n, 0);
        let payloads = [with_payloads.then_some(p.as_slice())];
        let batch = c
            .prepare_upsert_with_payloads(&ids(&[n]), &vector(n, c.dimension()), &payloads)
            .expect("valid batch");
        let tx = tx.clone();
        c.submit_quiet(
            batch,
            Some(Durability::Fsync),
            Box::new(move |r| tx.send((n, r)).unwrap_or(())),
        );
    }
    let delete = c.prepare_delete(&ids(&[1])).expect("valid batch");
    let done = tx.clone();
    c.submit_quiet(
        delete,
        Some(Durability::Fsync),
        Box::new(move |r| done.send((0, r)).unwrap_or(())),
    );
    c.wake_committer();
    drop(tx);
    let outcomes: Vec<_> = rx
        .iter()
        .map(|(n, r)| (n, r.err().map_or("OK", |e| e.code())))
        .collect();
    keeldb_core::planted::inject(None);
    assert_eq!(outcomes.len(), ns.clone().count() + 1);
    let (deleted, upserted): (Vec<_>, Vec<_>) = outcomes.into_iter().partition(|&(n, _)| n == 0);
    let first_group = if answered_early { "OK" } else { "KEEL_IO" };
    let in_first = upserted
        .iter()
        .take_while(|&&(_, code)| code == first_group)
        .count();
    let logged_behind = match answered_early {
        true => upserted[in_first..]
            .iter()
            .take_while(|&&(_, code)| code == "KEEL_IO")
            .count(),
        false => 0,
    };
    assert!(
        in_first > 0
            && upserted[in_first + logged_behind..]
                .iter()
                .all(|&(_, code)| code == "KEEL_POISONED"),
        "the first group's upserts get {first_group}, later ones are refused: {upserted:?}"
    );
    let delete = deleted[0].1;
    assert!(
        ["KEEL_IO", "KEEL_POISONED"].contains(&delete),
        "the delete is not: {delete}"
    );
    assert!(c.stats().expect("stats").poisoned);
    if !answered_early {
        // Nothing acknowledged is missing: reads go on, without the failed group.
        assert!(c.get(&Id::Int(1)).expect("get 1").is_some());
        assert_eq!(c.get(&Id::Int(ns.start)).expect("get"), None);
        return (upserted, delete);
    }
    fn refused<T>(r: Result<T>) -> Option<&'static str> {
        r.err().map(|e| e.code())
    }
    for n in [1, ns.start] {
        let id = Id::Int(n);
        assert_eq!(refused(c.get(&id)), Some("KEEL_POISONED"), "get {n}");
        assert_eq!(
            refused(c.get_record(&id, false, true)),
            Some("KEEL_POISONED"),
            "get_record {n}"
        );
        assert_eq!(
            refused(c.get_record_into(&id, None, Some(&mut Vec::new()))),
            Some("KEEL_POISONED"),
            "get_record_into {n}"
        );
    }
    assert_eq!(
        refused(c.get_many(&ids(&[1, ns.start]), true, true)),
        Some("KEEL_POISONED")
    );
    let query = vector(1, c.dimension());
    assert_eq!(
        refused(c.search(
            &query,
            &keeldb_core::SearchRequest {
                k: 3,
                filter: None,
                include_vectors: false,
                include_payloads: false,
            }
        )),
        Some("KEEL_POISONED")
    );
    (upserted, delete)
}

/// Upserts integer ids `ns` as one batch, each with payload version `v`.
pub fn put_with_payloads(c: &Collection, ns: &[u64], v: u64) {
    let payloads: Vec<Vec<u8>> = ns.iter().map(|&n| payload(n, v)).collect();
    let refs: Vec<Option<&[u8]>> = payloads.iter().map(|p| Some(p.as_slice())).collect();
    c.upsert_with_payloads(&ids(ns), &flat(ns, c.dimension()), &refs, None)
        .expect("upsert with payloads");
}

/// What a test expects of one id: absent, or its vector seed and payload (if any).
#[derive(Clone, PartialEq)]
pub enum Want {
    /// No record.
    Absent,
    /// The record holds `vector(seed)` and this payload.
    Present(u64, Option<Vec<u8>>),
}

impl std::fmt::Debug for Want {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Want::Absent => write!(f, "absent"),
            Want::Present(seed, payload) => write!(
                f,
                "vector {seed} with payload {:?}",
                payload.as_deref().map(String::from_utf8_lossy)
            ),
        }
    }
}

/// The differences between what `c` holds and `want` (id, expected), one line each.
pub fn differences(c: &Collection, want: &[(u64, Want)]) -> Vec<String> {
    let mut problems = Vec::new();
    for (n, expected) in want {
        let got = c
            .get_record(&Id::Int(*n), true, true)
            .unwrap_or_else(|e| panic!("get {n}: {e}"));
        let ok = match (expected, &got) {
            (Want::Absent, None) => true,
            (Want::Present(seed, payload), Some(record)) => {
                record.vector.as_deref() == Some(vector(*seed, c.dimension()).as_slice())
                    && record.payload == *payload
            }
            _ => false,
        };
        if !ok {
            let shown = got.map(|r| {
                (
                    r.vector.map(|v| v[0]),
                    r.payload.map(|p| String::from_utf8_lossy(&p).into_owned()),
                )
            });
            problems.push(format!("id {n}: expected {expected:?}, got {shown:?}"));
        }
    }
    problems
}
