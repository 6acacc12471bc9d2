//! Measures the ways of writing vector slots that docs/ARCHITECTURE.md ("Vector writes")
//! compares, on the file system of `<dir>` (default: the current directory):
//!
//!   cargo run --release -p keeldb-core --example vector_writes -- [dir] [rounds]
//!
//! Each way writes 100,000 slots of 1,536 bytes (dimension 384) into a fresh file,
//! fallocated as keeldb's vector file is, then writes the same slots again as a replay
//! after a crash would (the pages still cached): once with stores through the mapping
//! (keeldb before session 6), once with one `pwrite` per MiB (keeldb's replay now). The
//! ways, in turn within each round so that a noisy machine weighs on each alike:
//! - `store`: copies through a shared mapping, slot by slot;
//! - `pwrite-1`: one `pwrite` per slot;
//! - `pwrite-32`: one `pwrite` per 32 consecutive slots (a commit group of about that many
//!   records writes one run).

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

const SLOT: usize = 1536;
const SLOTS: usize = 100_000;
const HEADER: usize = 4096;
const REPLAY_RUN_SLOTS: usize = (1 << 20) / SLOT;

#[derive(Clone, Copy)]
enum Way {
    Store,
    Pwrite(usize),
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| ".".into());
    let rounds: usize = args.next().map_or(Ok(3), |s| s.parse())?;
    let scratch = tempfile::tempdir_in(&dir)?;
    let ways = [
        ("store", Way::Store),
        ("pwrite-1", Way::Pwrite(1)),
        ("pwrite-32", Way::Pwrite(32)),
    ];
    println!(
        "way        write (us/slot)  then replay by stores (ms)  then replay by 1 MiB pwrites (ms)"
    );
    for round in 0..rounds {
        for (name, way) in ways {
            for replay in [Way::Store, Way::Pwrite(REPLAY_RUN_SLOTS)] {
                let path = scratch
                    .path()
                    .join(format!("{name}-{round}-{}", replay_name(replay)));
                let (write_us, replay_ms) = measure(&path, way, replay)?;
                std::fs::remove_file(&path)?;
                match replay {
                    Way::Store => print!("{name:<10} {write_us:>15.2}  {replay_ms:>26.1}"),
                    Way::Pwrite(_) => println!("  {replay_ms:>33.1}"),
                }
            }
        }
    }
    Ok(())
}

fn replay_name(way: Way) -> &'static str {
    match way {
        Way::Store => "store",
        Way::Pwrite(_) => "pwrite",
    }
}

/// Writes every slot of a fresh file at `path` the way `way` says, then all of them again
/// the way `replay` says; returns microseconds per slot of the first pass and milliseconds
/// of the second.
fn measure(path: &Path, way: Way, replay: Way) -> Result<(f64, f64), Box<dyn std::error::Error>> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)?;
    let len = HEADER + SLOTS * SLOT;
    // SAFETY: plain FFI call on an open descriptor; the arguments are in range.
    #[expect(unsafe_code, reason = "posix_fallocate through libc")]
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len as libc::off_t) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc).into());
    }
    // SAFETY: the file is this program's own fresh scratch file, neither cut nor written
    // by anyone else while mapped; slices of the mapping live only inside `write_all`.
    #[expect(unsafe_code, reason = "memory-mapping a file is unsafe by nature")]
    let mut map = unsafe { memmap2::MmapMut::map_mut(&file)? };
    let vectors: Vec<u8> = (0..REPLAY_RUN_SLOTS * SLOT).map(|i| i as u8).collect();
    let start = Instant::now();
    write_all(&file, &mut map, way, &vectors)?;
    let write_us = start.elapsed().as_secs_f64() * 1e6 / SLOTS as f64;
    let start = Instant::now();
    write_all(&file, &mut map, replay, &vectors)?;
    let replay_ms = start.elapsed().as_secs_f64() * 1e3;
    Ok((write_us, replay_ms))
}

fn write_all(
    file: &File,
    map: &mut memmap2::MmapMut,
    way: Way,
    vectors: &[u8],
) -> std::io::Result<()> {
    let run = match way {
        Way::Store => 1,
        Way::Pwrite(run) => run,
    };
    for first in (0..SLOTS).step_by(run) {
        let bytes = &vectors[..(run.min(SLOTS - first)) * SLOT];
        let at = HEADER + first * SLOT;
        match way {
            Way::Store => map[at..at + bytes.len()].copy_from_slice(bytes),
            Way::Pwrite(_) => file.write_all_at(bytes, at as u64)?,
        }
    }
    Ok(())
}
