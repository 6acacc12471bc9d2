#!/usr/bin/env bash
# The open after a crash, alone and repeated (not part of `npm run bench`): writes RECORDS
# records (default 100,000) one per call, 64 in flight, at 'flush', SIGKILLs the writer, then
# opens a fresh copy of that store RUNS times (default 5), each in a new process after a
# `sync`, and prints per run the open's time, the anonymous memory it left resident and the
# transparent huge pages the machine faulted in meanwhile (/proc/vmstat: system-wide, so
# other work on the machine adds to it). With several addons (paths to .node files), each
# run opens with each of them in turn, so that they are compared side by side.
#
#   bench/ingest/crash-open.sh [records] [runs] [addon.node ...]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
records="${1:-100000}"
runs="${2:-5}"
if ! [[ $records =~ ^[0-9]+$ && $runs =~ ^[0-9]+$ ]]; then
  echo "usage: $0 [records] [runs] [addon.node ...]" >&2
  exit 2
fi
shift $(($# < 2 ? $# : 2))
addons=("$@")
work="$(mktemp -d "${TMPDIR:-/tmp}/keeldb-crash-open.XXXXXX")"
trap 'rm -rf "$work"' EXIT
installed="$repo/keeldb.linux-x64-gnu.node"
saved="$work/installed.node"
cp "$installed" "$saved"
# Replaced by a rename, never rewritten in place: a process that has it loaded keeps its copy.
install_addon() {
  [ "$1" -ef "$installed" ] && return
  cp "$1" "$installed.tmp" && mv -f "$installed.tmp" "$installed"
}
trap 'install_addon "$saved"; rm -rf "$work"' EXIT
spec() { printf '{"system":"keeldb","dimension":384,"records":%s,%s}' "$records" "$1"; }
# The writer SIGKILLs itself: under a shell of its own, whose report of that goes nowhere.
sh -c 'node "$@" >"$0" 2>&1; true' "$work/crash.log" "$here/worker.mjs" \
  "$(spec "\"task\":\"crash\",\"dir\":\"$work/crashed\",\"inFlight\":64")" 2>/dev/null
[ -d "$work/crashed" ] || { echo "the crash run left no store:" >&2; cat "$work/crash.log" >&2; exit 1; }
thp() { awk '/^thp_fault_alloc /{print $2}' /proc/vmstat; }
[ ${#addons[@]} -gt 0 ] || addons=("$saved")
for run in $(seq 1 "$runs"); do
  for addon in "${addons[@]}"; do
    install_addon "$addon"
    rm -rf "$work/open" && cp -a "$work/crashed" "$work/open" && sync
    before=$(thp)
    out=$(node "$here/worker.mjs" "$(spec "\"task\":\"open\",\"dir\":\"$work/open\",\"expectRecords\":$records,\"gets\":0")")
    after=$(thp)
    echo "$out" | node -e '
      const [run, addon, thp] = process.argv.slice(1)
      const r = JSON.parse(require("fs").readFileSync(0, "utf8").split("@@bench-result ")[1])
      console.log(`run ${run} ${addon}: open ${r.openMs.toFixed(1)} ms, ${r.anonMB.toFixed(1)} MB anonymous memory added, ${thp} huge pages faulted, ${(r.logBytes / 1e6).toFixed(0)} MB of log`)
    ' "$run" "$(basename "$addon")" "$((after - before))"
  done
done
