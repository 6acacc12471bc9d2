#!/usr/bin/env bash
# Shows that the simulated-disk crash checkers (crates/keeldb-core/tests/sim_crash.rs) catch
# each planted durability bug: with the bug planted, the checkers must fail; without it,
# they must pass. Exits non-zero if any bug goes unnoticed. (`trust-length` is a decoder bug,
# caught by the hostile-file and fuzz tests instead: `npm run planted-bugs`.)
set -euo pipefail
host="$(rustc -vV | sed -n 's/^host: //p')"
run() {
  cargo test -q -p keeldb-core --release --target "$host" --features sim,planted-bugs \
    --test sim_crash -- --test-threads=2 >/tmp/keeldb-planted-sim.log 2>&1
}
KEELDB_PLANT= run || { echo "the checkers fail with no bug planted"; tail -20 /tmp/keeldb-planted-sim.log; exit 1; }
missed=0
for bug in ack-before-fsync no-dir-fsync append-after-torn-tail cut-log-early ack-chained-early \
  checkpoint-leaves-frames-buffered; do
  if KEELDB_PLANT="$bug" run; then
    echo "MISSED  $bug"
    missed=1
  else

    echo "caught  $bug"
  fi
done
exit "$missed"
