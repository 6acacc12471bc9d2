//! Times opening a database, for profiling open and replay without Node.js in the way
//! (`perf record` on this binary sees keeldb's own symbols when built with
//! `CARGO_PROFILE_RELEASE_STRIP=none CARGO_PROFILE_RELEASE_DEBUG=1`).
//!
//!   cargo run --release -p keeldb-core --example open_timing -- <store> [runs] [in-place]
//!
//! Each run copies `<store>` (a database directory, e.g. one the ingest bench's worker
//! prepared or crashed) to a scratch directory next to it, so that recovery, which changes
//! the store, starts from the same bytes every time, and then times `Db::open`. `in-place`
//! opens `<store>` itself instead (for a cleanly closed store, which opening does not
//! change; a profile then sees no copying). With 0 runs it opens and closes `<store>` once,
//! so that its checkpoint is rewritten by this build.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use keeldb_core::db::{Db, DbOptions};
use keeldb_core::types::Durability;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let store = PathBuf::from(args.next().ok_or("usage: open_timing <store> [runs]")?);
    let runs: usize = args.next().map_or(Ok(3), |s| s.parse())?;
    if runs == 0 {
        return Ok(Db::open(&store, DbOptions::default())?.close()?);
    }
    let in_place = args.next().as_deref() == Some("in-place");
    for run in 0..runs {
        let scratch = match in_place {
            true => store.clone(),
            false => store.with_extension(format!("open-timing-{run}")),
        };
        if !in_place {
            copy_dir(&store, &scratch)?;
        }
        let options = DbOptions {
            durability: Durability::Flush,
            ..DbOptions::default()
        };
        let cpu0 = cpu_ms();
        let t0 = Instant::now();
        let db = Db::open(&scratch, options)?;
        let open_ms = t0.elapsed().as_secs_f64() * 1e3;
        let cpu = cpu_ms() - cpu0;
        // CPU time summed over threads: steadier than the wall time on a shared machine.
        let mut line = format!("run {run}: open {open_ms:.1} ms (cpu {cpu:.1} ms)");
        for name in db.list_collections()? {
            let stats = db.collection(&name)?.stats()?;
            line += &format!(
                "; {name}: {} records, {} log records replayed",
                stats.count, stats.records_replayed
            );
        }
        println!("{line}");
        db.close()?;
        if !in_place {
            std::fs::remove_dir_all(&scratch)?;
        }
    }
    Ok(())
}

/// User and system CPU time of the process so far, over all its threads.
fn cpu_ms() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes one `rusage` into the pointer it is given, which is valid
    // (zeroed, so it is initialised whatever the call does).
    #[expect(unsafe_code, reason = "getrusage is a plain libc call")]
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let ms = |t: libc::timeval| t.tv_sec as f64 * 1e3 + t.tv_usec as f64 / 1e3;
    ms(usage.ru_utime) + ms(usage.ru_stime)
}

fn copy_dir(from: &Path, to: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let _ = std::fs::remove_dir_all(to);
    let status = Command::new("cp").arg("-a").arg(from).arg(to).status()?;
    if !status.success() {
        return Err(format!("cp -a {} {} failed: {status}", from.display(), to.display()).into());
    }
    Ok(())
}
