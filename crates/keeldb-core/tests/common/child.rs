//! Part of a test run in a child process: the test binary re-executes itself, running only
//! its ignored `child_process` test, with the case and the directory in the environment.
//! Used to hold a database from another process, and to open hostile files under a limit on
//! address space (so a huge allocation fails in the child, not in the test runner).
//!
//! Every test binary that uses this declares:
//!
//! ```ignore
//! #[test]
//! #[ignore = "runs only as the child process of another test (tests/common/child.rs)"]
//! fn child_process() {
//!     common::child::main();
//! }
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use keeldb_core::{Db, DbOptions};

const CASE_ENV: &str = "KEELDB_TEST_CHILD_CASE";
const DIR_ENV: &str = "KEELDB_TEST_CHILD_DIR";
/// Address space a `limited-open` child may use: far below any declared length tested, far
/// above what opening a small collection needs.
pub const ADDRESS_SPACE_LIMIT_BYTES: u64 = 1 << 30;

/// Starts this test binary as a child running `case` on `dir`, with pipes for its standard
/// streams. `plant` sets `KEELDB_PLANT` in the child (none: removed).
pub fn spawn(case: &str, dir: &Path, plant: Option<&str>) -> Child {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut cmd = Command::new(exe);
    cmd.args([
        "--ignored",
        "--exact",
        "child_process",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CASE_ENV, case)
    .env(DIR_ENV, dir)
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    match plant {
        Some(bug) => cmd.env("KEELDB_PLANT", bug),
        None => cmd.env_remove("KEELDB_PLANT"),
    };
    cmd.spawn().expect("spawn the child test process")
}

/// How a child ended.
#[derive(Debug)]
pub struct Outcome {
    /// Exit status (`None` if it was killed for running past the deadline).
    pub status: Option<ExitStatus>,
    /// What the child said (lines it printed after `child: `).
    pub lines: Vec<String>,
    /// Everything it wrote to stderr.
    pub stderr: String,
    /// How long it ran.
    pub elapsed: Duration,
}

/// Runs `case` on `dir` in a child to the end, killing it after `deadline` (a hang).
pub fn run(case: &str, dir: &Path, plant: Option<&str>, deadline: Duration) -> Outcome {
    let started = Instant::now();
    let mut child = spawn(case, dir, plant);
    drop(child.stdin.take());
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break Some(status);
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_string(&mut stdout);
    }
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut stderr);
    }
    Outcome {
        status,
        lines: child_lines(&stdout),
        stderr,
        elapsed: started.elapsed(),
    }
}

/// Reads the child's `child: ` lines from `reader` until one equals `line`.
pub fn wait_for_line(reader: &mut impl BufRead, line: &str) {
    let mut buf = String::new();
    loop {
        buf.clear();
        let n = reader.read_line(&mut buf).expect("read the child's output");
        assert!(n > 0, "the child ended before printing '{line}'");
        if child_line(buf.trim_end()) == Some(line) {
            return;
        }
    }
}

/// What the child said on `line`, if anything: the test harness may have printed its own
/// text (`test child_process ... `) on the same line before it.
fn child_line(line: &str) -> Option<&str> {
    line.split_once("child: ").map(|(_, said)| said)
}

fn child_lines(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(child_line)
        .map(str::to_owned)
        .collect()
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "child: {line}");
    let _ = out.flush();
}

/// The child's side: runs the case named in the environment.
pub fn main() {
    let case = std::env::var(CASE_ENV).expect("run only as a child process (case not set)");
    let dir = std::env::var(DIR_ENV).expect("run only as a child process (dir not set)");
    let dir = Path::new(&dir);
    match case.as_str() {
        // Opens the database, says "held", and keeps it open until stdin closes.
        "hold" => {
            let db = Db::open(dir, DbOptions::default()).expect("the child opens the database");
            say("held");
            let mut rest = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut rest);
            db.close().expect("the child closes the database");
            say("released");
        }
        // Opens the database with its address space limited, and says how it went and the
        // peak resident memory.
        "limited-open" => {
            limit_address_space(ADDRESS_SPACE_LIMIT_BYTES);
            let result = Db::open(dir, DbOptions::default());
            match &result {
                Ok(_) => say("result ok"),
                Err(e) => say(&format!("result {} {e}", e.code())),
            }
            drop(result);
            say(&format!("peak-rss-kib {}", peak_rss_kib()));
        }
        other => panic!("unknown child case {other}"),
    }
}

/// Limits this process's address space, so that an allocation of a declared length fails
/// here instead of being granted by overcommit.
fn limit_address_space(bytes: u64) {
    let limit = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: bytes,
    };
    // SAFETY: setrlimit reads the struct we pass by pointer for the duration of the call and
    // keeps no reference to it; lowering a limit cannot break memory safety.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) };
    assert_eq!(rc, 0, "setrlimit(RLIMIT_AS) failed");
}

/// Peak resident set size of this process (VmHWM), in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Reads lines from a running child's stdout.
pub fn reader(child: &mut Child) -> BufReader<std::process::ChildStdout> {
    BufReader::new(child.stdout.take().expect("piped stdout"))
}
