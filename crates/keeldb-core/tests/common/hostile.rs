//! Hostile files whose declared lengths and counts are 4 GiB (u32::MAX) or whose size is
//! 4 GiB, each with the checksums recomputed so that only the length is hostile. Opened in a
//! child process under a 1 GiB address-space limit (see `child.rs`): each must give a typed
//! error (or a clean open, where the format says the bytes are a torn tail), quickly, in
//! bounded memory, never an abort.

use std::fs::OpenOptions;
use std::path::Path;
use std::time::Duration;

use keeldb_core::format::crc32;
use keeldb_core::format::index::INDEX_HEADER_LEN;

use super::child::{self, Outcome};
use super::{
    config_path, create, fix_crcs, fix_header_crc, frame_len, index_path, put, read, record_starts,
    vectors_path, wal_path, write, RECORD_BODY_LEN_AT,
};

/// u32::MAX: a declared length of 4 GiB.
const FOUR_GIB: u32 = u32::MAX;
/// A child taking longer than this has hung.
pub const DEADLINE: Duration = Duration::from_secs(30);
/// Peak resident memory a child may reach opening a hostile directory.
pub const PEAK_RSS_MAX_KIB: u64 = 256 << 10;

/// A closed collection holding ids 1 to 3 (in the index), then ids 4 to 6 in two log records
/// left by a crash.
pub fn fixture(dir: &Path) {
    let (db, c) = create(dir, 4);
    put(&c, &[1, 2, 3]);
    drop(c);
    db.close().expect("close");
    let db = super::open_ok(dir);
    let c = db.collection(super::NAME).expect("collection");
    put(&c, &[4]);
    put(&c, &[5, 6]);
    drop(c);
    drop(db);
}

fn set_u32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

/// Rewrites the index at `path` with `edit` applied and its trailing CRC recomputed.
fn forge_index(dir: &Path, edit: impl Fn(&mut Vec<u8>)) {
    let path = index_path(dir);
    let mut bytes = read(&path);
    edit(&mut bytes);
    let end = bytes.len() - 4;
    let crc = crc32(&bytes[..end]);
    bytes[end..].copy_from_slice(&crc.to_le_bytes());
    write(&path, &bytes);
}

/// Rewrites the first log record with `edit` applied to it; `whole` recomputes both CRCs
/// (the frame keeps its original length), otherwise only the header's.
fn forge_record(dir: &Path, whole: bool, edit: impl Fn(&mut [u8])) {
    let path = wal_path(dir);
    let mut log = read(&path);
    let start = record_starts(&log)[0];
    let end = start + frame_len(&log[start..]);
    edit(&mut log[start..end]);
    if whole {
        fix_crcs(&mut log[start..end]);
    } else {
        fix_header_crc(&mut log[start..end]);
    }
    write(&path, &log);
}

/// Rewrites a 32-byte file header's dimension field (bytes 12..16) and its CRC (at 28).
fn forge_header_dimension(path: &Path) {
    let mut bytes = read(path);
    set_u32(&mut bytes, 12, FOUR_GIB);
    let crc = crc32(&bytes[..28]);
    bytes[28..32].copy_from_slice(&crc.to_le_bytes());
    write(path, &bytes);
}

/// Extends a file to 4 GiB without writing (a sparse file).
fn make_sparse_4gib(path: &Path) {
    let file = OpenOptions::new().write(true).open(path).expect("open");
    file.set_len(u64::from(FOUR_GIB) + 1).expect("set_len");
}

/// Which results a case may give.
#[derive(Debug, Clone, Copy)]
pub enum Expect {
    /// Refused as damaged.
    Corrupt,
    /// Opens: the format makes the hostile bytes a torn tail, which is cut off.
    OpensOrCorrupt,
    /// A typed error: refused as damaged, or the allocation of the file's size refused
    /// (KEEL_IO), never an abort.
    Typed,
}

/// A hostile length case: its name, how to forge it into the fixture, what it may give.
pub type Case = (&'static str, fn(&Path), Expect);

/// Every hostile length case.
pub const CASES: &[Case] = &[
    (
        "index entry_count = 4 GiB",
        |d| forge_index(d, |b| set_u32(b, 28, FOUR_GIB)),
        Expect::Corrupt,
    ),
    (
        "index free_count = 4 GiB",
        |d| forge_index(d, |b| set_u32(b, 32, FOUR_GIB)),
        Expect::Corrupt,
    ),
    (
        "index slot_high_water and entry_count = 4 GiB",
        |d| {
            forge_index(d, |b| {
                set_u32(b, 24, FOUR_GIB);
                set_u32(b, 28, FOUR_GIB);
                set_u32(b, 32, 0);
            })
        },
        Expect::Corrupt,
    ),
    (
        "index slot_high_water = 4 GiB",
        |d| forge_index(d, |b| set_u32(b, 24, FOUR_GIB)),
        Expect::Corrupt,
    ),
    (
        "index first id: a string of 64 KiB",
        |d| {
            forge_index(d, |b| {
                b[INDEX_HEADER_LEN] = 1; // string tag
                b[INDEX_HEADER_LEN + 1..INDEX_HEADER_LEN + 3]
                    .copy_from_slice(&u16::MAX.to_le_bytes());
            })
        },
        Expect::Corrupt,
    ),
    (
        "index dimension = 4 GiB",
        |d| forge_index(d, |b| set_u32(b, 12, FOUR_GIB)),
        Expect::Corrupt,
    ),
    (
        "log record body_len = 4 GiB",
        |d| forge_record(d, false, |r| set_u32(r, RECORD_BODY_LEN_AT, FOUR_GIB)),
        Expect::Corrupt,
    ),
    (
        "log record body_len = 1 GiB (the limit), past the end of the file",
        |d| forge_record(d, false, |r| set_u32(r, RECORD_BODY_LEN_AT, 1 << 30)),
        Expect::OpensOrCorrupt,
    ),
    (
        "log batch op_count = 4 GiB",
        |d| forge_record(d, true, |r| set_u32(r, 24, FOUR_GIB)),
        Expect::Corrupt,
    ),
    (
        "log header dimension = 4 GiB",
        |d| forge_header_dimension(&wal_path(d)),
        Expect::Corrupt,
    ),
    (
        "vector file dimension = 4 GiB",
        |d| forge_header_dimension(&vectors_path(d)),
        Expect::Corrupt,
    ),
    (
        "config dimension = 4 GiB",
        |d| {
            write(
                &config_path(d),
                br#"{"formatVersion":1,"dimension":4294967295,"metric":"cosine"}"#,
            )
        },
        Expect::Corrupt,
    ),
    (
        "index file of 4 GiB (sparse)",
        |d| make_sparse_4gib(&index_path(d)),
        Expect::Typed,
    ),
    (
        "log file of 4 GiB (sparse)",
        |d| make_sparse_4gib(&wal_path(d)),
        Expect::Typed,
    ),
];

/// Forges `case` into a fresh fixture, opens it in a limited child (with `plant` planted),
/// and checks the outcome. `Err` says what went wrong.
pub fn run_case(case: &Case, plant: Option<&str>) -> Result<Outcome, String> {
    let (name, forge, expect) = case;
    let dir = tempfile::tempdir().expect("tempdir");
    fixture(dir.path());
    forge(dir.path());
    let outcome = child::run("limited-open", dir.path(), plant, DEADLINE);
    let failure = |why: String| {
        Err(format!(
            "{name}: {why}; stderr: {}",
            last_lines(&outcome.stderr)
        ))
    };
    let Some(status) = outcome.status else {
        return failure(format!("hung (killed after {:?})", DEADLINE));
    };
    if !status.success() {
        return failure(format!("the child died: {status}"));
    }
    let result = outcome
        .lines
        .iter()
        .find_map(|l| l.strip_prefix("result "))
        .unwrap_or("none");
    let code = result.split(' ').next().unwrap_or("");
    let allowed = match expect {
        Expect::Corrupt => code == "KEEL_CORRUPT",
        Expect::OpensOrCorrupt => code == "ok" || code == "KEEL_CORRUPT",
        Expect::Typed => code.starts_with("KEEL_"),
    };
    if !allowed {
        return failure(format!("gave {result}, expected {expect:?}"));
    }
    let peak = outcome
        .lines
        .iter()
        .find_map(|l| l.strip_prefix("peak-rss-kib "))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(u64::MAX);
    if peak > PEAK_RSS_MAX_KIB {
        return failure(format!("peak resident memory {peak} KiB"));
    }
    Ok(outcome)
}

fn last_lines(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(4)..].join(" | ")
}
