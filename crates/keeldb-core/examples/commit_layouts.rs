//! Measures the disk side of a group commit laid out two ways, the question behind
//! docs/ARCHITECTURE.md ("Why the log carries the vectors"), on the file system of `<dir>`
//! (default: the current directory):
//!
//!   cargo run --release -p keeldb-core --example commit_layouts -- [dir] [rounds] [group]
//!
//! Each way commits groups of `group` records (default 32, about what 64 writes in flight
//! form in `npm run bench:ingest`) of a 1,536-byte vector and a 330-byte payload for 2 s,
//! with no CPU work beside the I/O, and prints records per second. keeldb's log carries
//! every record whole, so each vector reaches the disk twice (log, then vector file); the
//! other ways write each vector once, in its slot, and log only a reference to it:
//! - `log-carries` (keeldb): append the group's records (1,883 bytes each) to the log and
//!   fdatasync it; then write the vectors to the vector file and the payload frames to the
//!   payload log without a sync, with a writeback hint every 8 MiB of log, and a checkpoint
//!   (fdatasync of both, log restarted from its start) every 35,000 records (~64 MiB of log);
//! - `in-place`: write the vectors to their slots and the records without their vectors (394
//!   bytes each) to the log, then fdatasync both files at once (two threads), replay being
//!   left to check each vector against a checksum in its record; payload frames as above;
//! - `in-place-ordered`: the same, but the vector file's fdatasync ends before the log is
//!   written, so replay needs no check.
//!
//! The in-place ways run twice: over fresh fallocated space, as keeldb's vector file grows
//! (so each sync also commits the extents it converts), and over space written before, as
//! when slots are reused (`+rewrite`). The log is written over zeros, as keeldb's writer
//! keeps zeros ahead of its records so that its syncs change no metadata. Ways take turns
//! within each round, so that a noisy machine weighs on each alike.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

const VECTOR: usize = 1536;
const PAYLOAD: usize = 330;
/// A log record carrying an upsert with its vector and payload (bench/lib/data.mjs).
const RECORD_WHOLE: usize = 1883;
/// The same record with a slot number and a vector checksum instead of the vector.
const RECORD_REFERENCE: usize = RECORD_WHOLE - VECTOR + 47;
const CHECKPOINT_RECORDS: usize = 35_000;
const WRITEBACK_HINT_BYTES: usize = 8 << 20;
const GROWTH: u64 = 64 << 20;
const RUN: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, PartialEq)]
enum Way {
    LogCarries,
    InPlace { ordered: bool, rewrite: bool },
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| ".".into());
    let rounds: usize = args.next().map_or(Ok(3), |s| s.parse())?;
    let group: usize = args.next().map_or(Ok(32), |s| s.parse())?;
    let scratch = tempfile::tempdir_in(&dir)?;
    let ways = [
        ("log-carries", Way::LogCarries),
        (
            "in-place",
            Way::InPlace {
                ordered: false,
                rewrite: false,
            },
        ),
        (
            "in-place-ordered",
            Way::InPlace {
                ordered: true,
                rewrite: false,
            },
        ),
        (
            "in-place+rewrite",
            Way::InPlace {
                ordered: false,
                rewrite: true,
            },
        ),
        (
            "in-place-ordered+rewrite",
            Way::InPlace {
                ordered: true,
                rewrite: true,
            },
        ),
    ];
    println!("groups of {group} records; records/s per way, round by round");
    for round in 0..rounds {
        for (name, way) in ways {
            let rate = measure(scratch.path(), way, group)?;
            println!("round {round}  {name:<26} {rate:>9.0}");
        }
    }
    Ok(())
}

fn create(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
}

fn zero_fill(file: &File, bytes: u64) -> std::io::Result<()> {
    let zeros = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < bytes {
        file.write_all_at(&zeros, at)?;
        at += zeros.len() as u64;
    }
    file.sync_all()
}

#[expect(
    unsafe_code,
    reason = "posix_fallocate and sync_file_range on files this example owns"
)]
mod sys {
    use super::*;

    pub fn fallocate(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
        // SAFETY: a plain syscall on an open descriptor this process owns.
        let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), offset as i64, len as i64) };
        match rc {
            0 => Ok(()),
            e => Err(std::io::Error::from_raw_os_error(e)),
        }
    }

    pub fn start_writeback(file: &File) {
        // SAFETY: as above; the call only starts writeback, its result is a hint's.
        unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
    }
}

/// Records per second of `way` over `RUN`, in fresh files under `dir`.
fn measure(dir: &Path, way: Way, group: usize) -> std::io::Result<f64> {
    let log = create(&dir.join("log"))?;
    let vectors = create(&dir.join("vectors"))?;
    let payloads = create(&dir.join("payloads"))?;
    let record = if way == Way::LogCarries {
        RECORD_WHOLE
    } else {
        RECORD_REFERENCE
    };
    zero_fill(
        &log,
        ((CHECKPOINT_RECORDS + group) * record) as u64 + (1 << 20),
    )?;
    let mut vectors_len = 0;
    if let Way::InPlace { rewrite: true, .. } = way {
        // More than any run here writes: ~150k records/s for 2 s.
        vectors_len = 512 << 20;
        zero_fill(&vectors, vectors_len)?;
    }
    let log_bytes = vec![7u8; group * record];
    let vector_bytes = vec![9u8; group * VECTOR];
    let payload_bytes = vec![5u8; group * PAYLOAD];
    let (mut log_at, mut vectors_at, mut payloads_at) = (0u64, 0u64, 0u64);
    let (mut since_hint, mut since_checkpoint, mut records) = (0, 0, 0);
    let started = Instant::now();
    while started.elapsed() < RUN {
        if vectors_at + vector_bytes.len() as u64 > vectors_len {
            sys::fallocate(&vectors, vectors_len, GROWTH)?;
            vectors_len += GROWTH;
        }
        match way {
            Way::LogCarries => {
                log.write_all_at(&log_bytes, log_at)?;
                log.sync_data()?;
                vectors.write_all_at(&vector_bytes, vectors_at)?;
            }
            Way::InPlace { ordered, .. } => {
                vectors.write_all_at(&vector_bytes, vectors_at)?;
                if ordered {
                    vectors.sync_data()?;
                    log.write_all_at(&log_bytes, log_at)?;
                    log.sync_data()?;
                } else {
                    log.write_all_at(&log_bytes, log_at)?;
                    std::thread::scope(|s| {
                        let vector_sync = s.spawn(|| vectors.sync_data());
                        let log_sync = log.sync_data();
                        vector_sync
                            .join()
                            .expect("the sync thread does not panic")
                            .and(log_sync)
                    })?;
                }
            }
        }
        payloads.write_all_at(&payload_bytes, payloads_at)?;
        log_at += log_bytes.len() as u64;
        vectors_at += vector_bytes.len() as u64;
        payloads_at += payload_bytes.len() as u64;
        records += group;
        since_hint += log_bytes.len();
        since_checkpoint += group;
        if since_hint >= WRITEBACK_HINT_BYTES {
            sys::start_writeback(&vectors);
            sys::start_writeback(&payloads);
            since_hint = 0;
        }
        if since_checkpoint >= CHECKPOINT_RECORDS {
            vectors.sync_data()?;
            payloads.sync_data()?;
            log_at = 0;
            since_checkpoint = 0;
        }
    }
    Ok(records as f64 / started.elapsed().as_secs_f64())
}
