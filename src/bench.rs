//! Benchmark hooks: the machine's own limits, measured natively so that `bench/` can set
//! keeldb's numbers beside what the disk, the memory and napi allow. Not part of the public
//! API: `lib/index.ts` does not export them, and only `bench/` calls them (through the
//! generated loader). Each hook runs on the JS thread and returns the seconds its loop took;
//! the caller turns that into a rate.
//!
//! Invariant: a hook only touches the file it is given, which it creates (truncating), and
//! leaves behind for the caller to remove.

use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::io::Write;
use std::time::Instant;

use napi_derive::napi;

/// Largest buffer a memory or checksum hook allocates (4 GiB).
pub const BENCH_BUFFER_BYTES_MAX: f64 = (4u64 << 30) as f64;

/// Largest record a file hook writes (64 MiB).
pub const BENCH_RECORD_BYTES_MAX: f64 = (64u64 << 20) as f64;

fn to_usize(what: &str, value: f64, max: f64) -> napi::Result<usize> {
    if !(value.is_finite() && value.fract() == 0.0 && value >= 1.0 && value <= max) {
        return Err(napi::Error::from_reason(format!(
            "{what} must be an integer from 1 to {max}, got {value}"
        )));
    }
    // The check above makes the cast exact.
    Ok(value as usize)
}

fn create(path: &str) -> napi::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| napi::Error::from_reason(format!("bench: cannot create {path}: {e}")))
}

fn io(path: &str, what: &str, e: std::io::Error) -> napi::Error {
    napi::Error::from_reason(format!("bench: {what} {path}: {e}"))
}

/// A no-op napi call: the fixed cost of crossing from JavaScript into the addon and back.
#[napi]
pub fn bench_noop() {}

/// Appends `records` records of `record_bytes` each to a fresh file at `path`, one
/// `write()` and one `fdatasync()` per record: the ceiling of durable writes made one at a
/// time.
#[napi]
pub fn bench_fdatasync(path: String, record_bytes: f64, records: f64) -> napi::Result<f64> {
    bench_appends(&path, record_bytes, 1.0, records, true)
}

/// Appends `records` records of `record_bytes` each to a fresh file at `path`, one
/// `write()` per record and no sync: the ceiling of writes handed to the OS one at a time.
#[napi]
pub fn bench_write(path: String, record_bytes: f64, records: f64) -> napi::Result<f64> {
    bench_appends(&path, record_bytes, 1.0, records, false)
}

/// Appends `groups` groups of `group_records` records of `record_bytes` each to a fresh
/// file at `path`, one `write()` and one `fdatasync()` per group: the ceiling of group
/// commit with that many writes per group.
#[napi]
pub fn bench_group_append(
    path: String,
    record_bytes: f64,
    group_records: f64,
    groups: f64,
) -> napi::Result<f64> {
    bench_appends(&path, record_bytes, group_records, groups, true)
}

fn bench_appends(
    path: &str,
    record_bytes: f64,
    group_records: f64,
    groups: f64,
    sync: bool,
) -> napi::Result<f64> {
    let record_bytes = to_usize("recordBytes", record_bytes, BENCH_RECORD_BYTES_MAX)?;
    let group_records = to_usize("groupRecords", group_records, 1e6)?;
    let groups = to_usize("groups", groups, 1e9)?;
    let group_bytes = record_bytes
        .checked_mul(group_records)
        .filter(|n| (*n as f64) <= BENCH_RECORD_BYTES_MAX)
        .ok_or_else(|| napi::Error::from_reason("bench: group larger than 64 MiB".to_owned()))?;
    let group = vec![0x5au8; group_bytes];
    let mut file = create(path)?;
    let start = Instant::now();
    for _ in 0..groups {
        file.write_all(&group).map_err(|e| io(path, "write", e))?;
        if sync {
            file.sync_data().map_err(|e| io(path, "fdatasync", e))?;
        }
    }
    Ok(start.elapsed().as_secs_f64())
}

fn filled_buffer(bytes: f64) -> napi::Result<Vec<f32>> {
    let bytes = to_usize("bytes", bytes, BENCH_BUFFER_BYTES_MAX)?;
    // Touch every page before timing, so the scan measures reads, not page faults.
    Ok((0..bytes / 4).map(|i| (i % 251) as f32).collect())
}

/// Sums a `bytes`-long buffer of f32 `passes` times (eight independent lanes, so the
/// compiler vectorizes it): the memory scan bandwidth an exact search can hope for.
#[napi]
pub fn bench_scan_sum(bytes: f64, passes: u32) -> napi::Result<f64> {
    let data = filled_buffer(bytes)?;
    let start = Instant::now();
    for _ in 0..passes {
        let mut lanes = [0f32; 8];
        for chunk in black_box(&data).chunks_exact(8) {
            for (lane, v) in lanes.iter_mut().zip(chunk) {
                *lane += v;
            }
        }
        black_box(lanes);
    }
    Ok(start.elapsed().as_secs_f64())
}

/// Checksums a `bytes`-long buffer with crc32fast (the checksum of every log record)
/// `passes` times.
#[napi]
pub fn bench_crc32(bytes: f64, passes: u32) -> napi::Result<f64> {
    let data = filled_buffer(bytes)?;
    let raw: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    let start = Instant::now();
    for _ in 0..passes {
        black_box(crc32fast::hash(black_box(&raw)));
    }
    Ok(start.elapsed().as_secs_f64())
}
