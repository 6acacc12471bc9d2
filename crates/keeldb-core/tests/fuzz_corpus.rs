//! Every committed fuzz seed and every input a fuzzer once crashed on still passes its fuzz
//! target's checks: the libFuzzer targets in fuzz/ and this test share one definition
//! (fuzz/src/checks.rs), so a bug a fuzzer found stays fixed without building the fuzzer.

#[path = "../../../fuzz/src/checks.rs"]
#[allow(
    dead_code,
    reason = "the checks module also serves the fuzz crate, which uses all of it"
)]
mod checks;

use std::fs;
use std::path::Path;

/// Runs `check` on every file in `dir` (a missing directory holds no inputs), returning how
/// many it ran.
fn run_dir(dir: &Path, check: fn(&[u8])) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut count = 0;
    for entry in entries {
        let path = entry.expect("read corpus directory").path();
        let bytes = fs::read(&path).expect("read corpus input");
        let outcome = std::panic::catch_unwind(|| check(&bytes));
        assert!(outcome.is_ok(), "{} fails its fuzz check", path.display());
        count += 1;
    }
    count
}

#[test]
fn committed_seeds_and_regressions_pass_their_fuzz_checks() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    for (target, check) in checks::TARGETS {
        let seeds = run_dir(&fuzz.join("corpus").join(target), check);
        let regressions = run_dir(&fuzz.join("regressions").join(target), check);
        assert!(seeds > 0, "no committed seeds for fuzz target {target}");
        eprintln!("{target}: {seeds} seeds, {regressions} regression inputs");
    }
}

#[test]
fn the_open_dir_fixture_opens_as_it_is() {
    // Otherwise every open_dir input would be refused and the target would check nothing
    // about directories that open.
    assert_eq!(checks::fixture_count(), Some(8));
}
