#!/usr/bin/env bash
# Builds and runs keeldb's fuzz targets with libFuzzer on stable Rust.
#
#   scripts/fuzz.sh <target|all> [seconds]   run one target (or each in turn) for N seconds
#   scripts/fuzz.sh seeds                    regenerate the committed seed corpora
#   scripts/fuzz.sh list                     name the targets
#   (npm run fuzz -- <target> <seconds> is the same)
#
# How it works without nightly: libfuzzer-sys compiles libFuzzer from its bundled C++ source
# with the system C++ compiler, and rustc's stable codegen flags below add the same
# SanitizerCoverage instrumentation cargo-fuzz adds (no AddressSanitizer: that needs
# nightly's -Zsanitizer; Rust's own bounds and overflow checks stand in for it).
# `--target` keeps build scripts and proc macros uninstrumented.
#
# Inputs libFuzzer finds go to fuzz/target/corpus/<target>/ (not committed); the committed
# seeds in fuzz/corpus/<target>/ and the regression inputs in fuzz/regressions/<target>/ are
# read only. A crashing input is written to fuzz/artifacts/<target>/: copy it into
# fuzz/regressions/<target>/ so that `npm test` replays it for ever
# (crates/keeldb-core/tests/fuzz_corpus.rs).
#
# Environment: FUZZ_JOBS (parallel fuzzing processes, default 1), FUZZ_ARGS (extra libFuzzer
# flags), FUZZ_MAX_LEN (largest input, default 4096).
set -euo pipefail
SELF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
cd "$(dirname "$SELF")/../fuzz"

TARGETS=(wal_replay index_file vector_header collection_config open_dir payload_log payload_index)
HOST="$(rustc -vV | sed -n 's/^host: //p')"
export CARGO_TARGET_DIR="$PWD/target"

instrumented_build() {
  RUSTFLAGS="-Cpasses=sancov-module \
    -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
    -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares \
    --cfg fuzzing -Cdebug-assertions -Coverflow-checks" \
    cargo build --release --target "$HOST" "$@"
}

run_one() {
  local target="$1" seconds="$2"
  local bin="target/$HOST/release/$target"
  local work="target/corpus/$target" artifacts="artifacts/$target"
  mkdir -p "$work" "$artifacts" "corpus/$target" "regressions/$target"
  local log="target/fuzz-$target.log"
  echo "== $target: ${seconds}s, ${FUZZ_JOBS:-1} job(s), log $log"
  set +e
  # shellcheck disable=SC2086
  "$bin" "$work" "corpus/$target" "regressions/$target" \
    -max_total_time="$seconds" -max_len="${FUZZ_MAX_LEN:-4096}" -rss_limit_mb=2048 -timeout=10 \
    -artifact_prefix="$artifacts/" -print_final_stats=1 \
    ${FUZZ_JOBS:+-jobs=$FUZZ_JOBS -workers=$FUZZ_JOBS} ${FUZZ_ARGS:-} >"$log" 2>&1
  local status=$?
  set -e
  # libFuzzer's final stats: total executions and the coverage reached.
  local execs cov corpus
  # With FUZZ_JOBS, each worker logs to fuzz-<n>.log in the current directory.
  local logs=("$log")
  if [ -n "${FUZZ_JOBS:-}" ]; then
    shopt -s nullglob
    logs+=(fuzz-*.log)
    shopt -u nullglob
  fi
  execs="$(cat "${logs[@]}" | awk '/^stat::number_of_executed_units/ {s+=$2} END {print s+0}')"
  cov="$(cat "${logs[@]}" | grep -o 'cov: [0-9]*' | awk '{print $2}' | sort -n | tail -1)"
  corpus="$(find "$work" -type f | wc -l)"
  if [ "$status" -eq 0 ]; then
    echo "   $target: OK, $execs executions in ${seconds}s, coverage $cov edges, working corpus $corpus inputs"
  else
    echo "   $target: FAILED (exit $status), $execs executions; see $log and $artifacts/"
    grep -E 'panicked|ERROR|SUMMARY' "$log" | head -5 || true
  fi
  return "$status"
}

case "${1:-}" in
  list)
    printf '%s\n' "${TARGETS[@]}"
    ;;
  seeds)
    cargo run --release --bin make_seeds -- corpus
    ;;
  all)
    instrumented_build $(printf -- '--bin %s ' "${TARGETS[@]}")
    failed=0
    for t in "${TARGETS[@]}"; do run_one "$t" "${2:-60}" || failed=1; done
    exit "$failed"
    ;;
  "")
    sed -n '2,7p' "$SELF"
    exit 2
    ;;
  *)
    if ! printf '%s\n' "${TARGETS[@]}" | grep -qx "$1"; then
      echo "unknown target '$1'; one of: ${TARGETS[*]}" >&2
      exit 2
    fi
    instrumented_build --bin "$1"
    run_one "$1" "${2:-60}"
    ;;
esac
