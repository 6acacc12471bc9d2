// Ingest into a collection that already holds many records (not part of `npm run bench`):
// bulk-loads `preload` records, then writes `records` more one per call with 64 in flight
// at `durability`, and prints the rate and the checkpoints the writes triggered. Every
// checkpoint rewrites the collection's id and payload indexes whole, so their size, which
// grows with the collection, is part of what a write costs; compare runs with different
// `preload` (each in a fresh process) to see whether ingest slows down as the collection
// grows. Last, it times one `checkpoint()` (writes wait while one runs) and prints the
// process's peak resident memory.
//
//   node bench/ingest/scale.mjs [preload=1000000] [durability=fsync] [records=300000]
//
// The records are those of the ingest suite (`bench/lib/data.mjs`: dimension 384, ~300-byte
// payloads). Set KEELDB_REPO to measure another build of keeldb (a directory holding its
// `dist/` and `.node` file).

import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs'
import { createRequire } from 'node:module'
import os from 'node:os'
import path from 'node:path'
import { makePool, record } from '../lib/data.mjs'

const [preloadArg = '1000000', durability = 'fsync', recordsArg = '300000'] = process.argv.slice(2)
const preload = Number(preloadArg)
const count = Number(recordsArg)
const IN_FLIGHT = 64
const repo = process.env.KEELDB_REPO ?? path.join(import.meta.dirname, '..', '..')
const keeldb = createRequire(path.join(repo, 'package.json'))('./dist/index.js')
const work = mkdtempSync(path.join(os.tmpdir(), 'keeldb-scale-'))

/** Bytes of the collection's index files (`ids.idx`, `payloads.idx`). */
function indexBytes(dir) {
  return readdirSync(dir)
    .filter((f) => f.endsWith('.idx'))
    .reduce((sum, f) => sum + statSync(path.join(dir, f)).size, 0)
}

try {
  const pool = makePool(384)
  const db = await keeldb.open(path.join(work, 'db'), { durability })
  const col = await db.createCollection('v', { dimension: 384 })
  const toWrite = (i) => {
    const r = record(pool, i)
    return { id: r.id, vector: r.vector, payload: r.payload }
  }
  if (preload > 0) {
    const t = performance.now()
    await col.bulkLoad((function* () {
      for (let i = 0; i < preload; i++) yield toWrite(i)
    })())
    console.log(`preloaded ${preload} records in ${((performance.now() - t) / 1000).toFixed(1)} s`)
  }
  const before = col.stats()
  const idx = indexBytes(path.join(work, 'db', 'v'))
  let next = preload
  const end = preload + count
  const t0 = performance.now()
  const lane = async () => {
    while (next < end) await col.upsert(toWrite(next++))
  }
  await Promise.all(Array.from({ length: IN_FLIGHT }, lane))
  const seconds = (performance.now() - t0) / 1000
  const after = col.stats()
  // Then one checkpoint, timed alone: writes wait for it (it holds the writer lock).
  const c0 = performance.now()
  await col.checkpoint()
  const checkpointMs = performance.now() - c0
  console.log(
    `${preload} records, indexes ${(idx / 1e6).toFixed(1)} MB: ${count} more at ${durability}, ${IN_FLIGHT} in flight: ` +
      `${Math.round(count / seconds)} records/s, ${after.checkpoints - before.checkpoints} checkpoints; ` +
      `a checkpoint() after them took ${checkpointMs.toFixed(0)} ms; peak RSS ${(process.resourceUsage().maxRSS / 1024).toFixed(0)} MB`,
  )
  await db.close()
} finally {
  rmSync(work, { recursive: true, force: true })
}
