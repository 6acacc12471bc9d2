// What one durable group costs the disk, by the group's size (not part of `npm run bench`):
// a write() of N KiB over space the file already has, then fdatasync, repeated, for N from 4
// to 256 KiB, sizes interleaved over 5 rounds; prints the median time per write+fdatasync and
// a straight line fitted to the medians (fixed microseconds + microseconds per KiB).
//
// It is the model behind the fsync ingest rows: a group of fsync writes costs the disk about
// the fixed part once plus the per-KiB part for every byte the group dirtied, which is its log
// records and, written back while the log syncs, its vectors and payload frames (threads.mjs
// prints both byte rates). With 64 writes in flight a group holds about 32 of them, since the
// other half is queued behind the sync.
//
//   node bench/ingest/synccost.mjs [dir=os.tmpdir()] [syncs per size and round=200]

import { closeSync, fdatasyncSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'

const [dirArg = os.tmpdir(), perArg = '200'] = process.argv.slice(2)
const per = Number(perArg)
const sizesKiB = [4, 16, 32, 64, 128, 256]
const SPACE = 64 << 20
const work = mkdtempSync(path.join(dirArg, 'keeldb-synccost-'))
try {
  const fd = openSync(path.join(work, 'sync.bin'), 'w')
  // Written and synced once, so that the syncs below change no size (as keeldb's log does).
  writeSync(fd, Buffer.alloc(SPACE), 0, SPACE, 0)
  fdatasyncSync(fd)
  const samples = new Map(sizesKiB.map((kib) => [kib, []]))
  let at = 0
  for (let round = 0; round < 5; round++) {
    for (const kib of round % 2 === 0 ? sizesKiB : [...sizesKiB].reverse()) {
      const bytes = Buffer.alloc(kib << 10, 0x5a)
      const t0 = process.hrtime.bigint()
      for (let i = 0; i < per; i++) {
        if (at + bytes.length > SPACE) at = 0
        writeSync(fd, bytes, 0, bytes.length, at)
        fdatasyncSync(fd)
        at += bytes.length
      }
      samples.get(kib).push(Number(process.hrtime.bigint() - t0) / 1000 / per)
    }
  }
  closeSync(fd)
  const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1]
  const points = sizesKiB.map((kib) => [kib, median(samples.get(kib))])
  console.log(`write() + fdatasync over existing space, ${per} per size and round, median of 5 rounds (${work}):`)
  for (const [kib, us] of points) {
    const all = samples.get(kib)
    console.log(`  ${String(kib).padStart(3)} KiB: ${us.toFixed(1)} us (${Math.min(...all).toFixed(1)}-${Math.max(...all).toFixed(1)})`)
  }
  // Least squares through the medians.
  const n = points.length
  const mx = points.reduce((s, [x]) => s + x, 0) / n
  const my = points.reduce((s, [, y]) => s + y, 0) / n
  const slope =
    points.reduce((s, [x, y]) => s + (x - mx) * (y - my), 0) / points.reduce((s, [x]) => s + (x - mx) ** 2, 0)
  console.log(`fit: ${(my - slope * mx).toFixed(0)} us + ${slope.toFixed(3)} us per KiB (${(1024 / slope / 1000).toFixed(2)} GB/s past the fixed part)`)
} finally {
  rmSync(work, { recursive: true, force: true })
}
