#!/usr/bin/env bash
# Where keeldb's time goes, with perf (not part of `npm run bench`): samples
#   1. getSync in a tight loop over a 100k-record store,
#   2. ingest at durability 'none', one record per call, 64 in flight,
#   3. open after a clean close of N records (default 1,000,000; first argument),
# and prints, for each, the share of samples per thread and per library, then the top
# symbols. The release addon is stripped (Cargo.toml `strip = "symbols"`); for symbols inside
# it, build with `CARGO_PROFILE_RELEASE_STRIP=none npm run build:native` first.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
big="${1:-1000000}"
work="$(mktemp -d "${TMPDIR:-/tmp}/keeldb-profile.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cd "$work" # node --perf-basic-prof leaves its logs in the working directory
spec() { printf '{"dimension":384,%s}' "$1"; }
top() {
  # `head` closes the pipe before perf is done: under pipefail that is exit 141, not an error.
  perf report -i "$1" --no-children --sort comm,dso --stdio -g none 2>/dev/null | grep '%' | head -8 || true
  perf report -i "$1" --no-children --sort symbol --stdio -g none 2>/dev/null | grep '%' | head -"${2:-15}" | cut -c1-120 || true
}

node "$here/worker.mjs" "$(spec "\"task\":\"prepare\",\"system\":\"keeldb\",\"dir\":\"$work/s\",\"records\":100000,\"batch\":10000")" >/dev/null
cat >"$work/getloop.mjs" <<JS
import { createRequire } from 'node:module'
const native = createRequire('$here/worker.mjs')('../../index.js')
const db = await native.openDb('$work/s', 'flush', 'salvage', {})
const c = db.collection('v')
const t0 = performance.now()
const reader = c.readHandle()
for (let i = 0; i < 3e6; i++) native.collectionGetSyncInto(reader, (i * 2654435761) % 100000, new Float32Array(384), true)
console.log('native getSync, us per call:', ((performance.now() - t0) / 3e6) * 1000)
await db.close()
JS
echo "== 1. native getSync in a loop"
perf record -q -F 2000 -g -o "$work/get.data" node --perf-basic-prof "$work/getloop.mjs"
top "$work/get.data"

echo "== 2. ingest, durability 'none', 64 in flight"
perf record -q -F 2000 -g -o "$work/ingest.data" node --perf-basic-prof "$here/worker.mjs" \
  "$(spec "\"task\":\"ingest\",\"system\":\"keeldb\",\"dir\":\"$work/i\",\"durability\":\"none\",\"inFlight\":64,\"batch\":1,\"maxRecords\":200000,\"maxSeconds\":3")" |
  sed 's/^@@bench-result //'
top "$work/ingest.data" 25

echo "== 3. open after a clean close of $big records"
node "$here/worker.mjs" "$(spec "\"task\":\"prepare\",\"system\":\"keeldb\",\"dir\":\"$work/b\",\"records\":$big,\"batch\":10000,\"durability\":\"none\"")" >/dev/null
perf record -q -F 5000 -g -o "$work/open.data" node "$here/worker.mjs" \
  "$(spec "\"task\":\"open\",\"system\":\"keeldb\",\"dir\":\"$work/b\",\"records\":$big,\"gets\":0")" |
  sed 's/^@@bench-result //' | cut -c1-120
top "$work/open.data"
