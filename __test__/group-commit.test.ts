// Writes issued without awaiting each other share fsyncs (group commit), yet each promise settles on its own outcome.

import test from 'ava'
import { execFileSync } from 'node:child_process'

import { KeelError, open } from '../lib/index'
import { root, tempDir } from './helpers'

test('64 fsync writes in flight share fsyncs and all land', async (t) => {
  const db = await open(tempDir(t))
  const col = await db.createCollection('c', { dimension: 4 })
  const before = col.stats()
  const writes = Array.from({ length: 64 }, (_, i) => col.upsert({ id: i, vector: [i, 1, 2, 3] }))
  await Promise.all(writes)
  const after = col.stats()
  const records = after.walRecords - before.walRecords
  const syncs = after.walSyncs - before.walSyncs
  t.is(records, 64)
  t.is(after.count, 64)
  t.true(syncs <= 16, `64 writes in flight took ${syncs} fsyncs in ${after.groupCommits - before.groupCommits} groups`)
  // The committer's clock: logging synced, so it took time; the rest is time too, and the
  // writes counted waiting behind groups are at most the writes that could wait.
  t.true(after.commitLogMicros > before.commitLogMicros)
  t.true(after.commitApplyMicros > before.commitApplyMicros)
  t.true(after.commitAnswerMicros > before.commitAnswerMicros)
  t.true(after.queuedAtGroupEnd >= before.queuedAtGroupEnd && after.queuedAtGroupEnd - before.queuedAtGroupEnd <= 64 * 64)
  t.log(`64 writes in flight: ${syncs} fsyncs, ${after.groupCommits - before.groupCommits} groups`)
  await db.close()
})

test('a bad write in a burst rejects alone; the others land', async (t) => {
  const db = await open(tempDir(t))
  const col = await db.createCollection('c', { dimension: 2 })
  const outcomes = await Promise.allSettled([
    col.upsert({ id: 'a', vector: [1, 2] }),
    col.upsert({ id: 'b', vector: [1, Number.NaN] }),
    col.upsert({ id: 'c', vector: [3, 4] }),
    col.delete('a'),
  ])
  t.deepEqual(
    outcomes.map((o) => o.status),
    ['fulfilled', 'rejected', 'fulfilled', 'fulfilled'],
  )
  const rejected = outcomes[1]
  t.is(rejected.status === 'rejected' ? (rejected.reason as { code?: string }).code : undefined, 'KEEL_INVALID_ARGUMENT')
  t.is(outcomes[3].status === 'fulfilled' ? outcomes[3].value : undefined, 1) // the delete ran after the first upsert
  t.is(col.getSync('a'), null)
  t.not(col.getSync('c'), null)
  t.is(col.getSync('b'), null)
  await db.close()
})

test('writes still in flight when close is called complete before it returns', async (t) => {
  const dir = tempDir(t)
  let db = await open(dir)
  const col = await db.createCollection('c', { dimension: 2 })
  const writes = Array.from({ length: 20 }, (_, i) => col.upsert({ id: i, vector: [i, i] }))
  await db.close()
  const settled = await Promise.allSettled(writes)
  t.true(settled.every((s) => s.status === 'fulfilled'))
  db = await open(dir)
  t.is(db.collection('c').stats().count, 20)
  await db.close()
})

test('a payload merge waits for writes issued before it, even unawaited ones', async (t) => {
  const db = await open(tempDir(t))
  const col = await db.createCollection('c', { dimension: 2 })
  const upsert = col.upsert({ id: 'a', vector: [1, 2], payload: { x: 1 } }) // not awaited yet
  t.true(await col.mergePayload('a', { y: 2 }))
  await upsert
  t.deepEqual(col.getSync('a')?.payload, { x: 1, y: 2 })
  await db.close()
})

test('hundreds of writes in flight with mixed durability and deletes all settle with their own value', async (t) => {
  const db = await open(tempDir(t), { durability: 'flush' })
  const a = await db.createCollection('a', { dimension: 2 })
  const b = await db.createCollection('b', { dimension: 2 })
  const durabilities = [undefined, 'fsync', 'flush', 'none'] as const
  const writes: Promise<number | void>[] = []
  for (let i = 0; i < 400; i++) {
    const col = i % 2 === 0 ? a : b
    const durability = durabilities[i % 4]
    writes.push(col.upsert({ id: i, vector: [i, 1] }, durability === undefined ? undefined : { durability }))
    // Every 10th record is deleted right after it was written, and a delete of an id that
    // was never written counts 0: each promise must get its own count, not a neighbour's.
    if (i % 10 === 0) writes.push(col.delete([i, 100_000 + i], { durability: 'fsync' }))
  }
  const values = await Promise.all(writes)
  const counts = values.filter((v) => v !== undefined)
  t.is(counts.length, 40)
  t.true(counts.every((v) => v === 1), `delete counts: ${counts.join(',')}`)
  t.true(values.filter((v) => v === undefined).length === 400, 'every upsert resolves to undefined')
  t.is(a.stats().count + b.stats().count, 360)
  await db.close()
})

test('thousands of writes in flight, some refused before queueing, settle by their own ticket across waves', async (t) => {
  // The waiting writes live in a ring by ticket: it must grow while thousands wait, skip
  // tickets whose write threw before it was queued, and be reused after it wraps.
  const db = await open(tempDir(t), { durability: 'none' })
  const fast = await db.createCollection('fast', { dimension: 2 })
  const slow = await db.createCollection('slow', { dimension: 2 })
  for (let wave = 0; wave < 3; wave++) {
    const writes: Promise<number | void>[] = []
    const expected: (number | undefined | 'refused')[] = []
    for (let i = 0; i < 3000; i++) {
      const id = wave * 10_000 + i
      if (i % 7 === 3) {
        writes.push(fast.upsert({ id, vector: [1, 2, 3] }))
        expected.push('refused')
      } else if (i % 11 === 5) {
        // Deletes of one written id and one never written: the count must be this write's.
        // (Write i - 1 was an upsert into the collection of its parity: 5 % 7 and 4 % 11
        // are neither refusal nor delete, nor are the neighbours of later i % 11 === 5.)
        writes.push((i % 2 === 1 ? fast : slow).delete([id - 1, id + 100_000]))
        expected.push((i - 1) % 7 === 3 ? 0 : 1)
      } else {
        // 'slow' fsyncs now and then, so its outcomes come back behind 'fast''s.
        const col = i % 2 === 0 ? fast : slow
        writes.push(col.upsert({ id, vector: [i, 1] }, i % 50 === 0 ? { durability: 'fsync' } : undefined))
        expected.push(undefined)
      }
    }
    const outcomes = await Promise.allSettled(writes)
    outcomes.forEach((o, i) => {
      if (expected[i] === 'refused') {
        if (o.status !== 'rejected' || (o.reason as KeelError).code !== 'KEEL_DIMENSION_MISMATCH') t.fail(`wave ${wave} write ${i}: ${o.status}`)
      } else if (o.status !== 'fulfilled' || o.value !== expected[i]) {
        t.fail(`wave ${wave} write ${i}: ${o.status} ${o.status === 'fulfilled' ? String(o.value) : String(o.reason)}, expected ${String(expected[i])}`)
      }
    })
  }
  t.pass()
  await db.close()
})

test('a write that fails in the committer rejects alone, with its code, amid writes that land', async (t) => {
  // Writes to a dropped collection's handle pass validation but find its queue closed: they
  // fail on the way through the committer path, in the same settle batch as good writes.
  const db = await open(tempDir(t))
  const dropped = await db.createCollection('dropped', { dimension: 2 })
  const live = await db.createCollection('live', { dimension: 2 })
  await db.dropCollection('dropped')
  const outcomes = await Promise.allSettled(
    Array.from({ length: 30 }, (_, i) =>
      i % 3 === 1 ? dropped.upsert({ id: i, vector: [1, 2] }) : live.upsert({ id: i, vector: [1, 2] }),
    ),
  )
  outcomes.forEach((o, i) => {
    if (i % 3 === 1) {
      t.is(o.status, 'rejected', `write ${i}`)
      t.is(o.status === 'rejected' ? (o.reason as KeelError).code : undefined, 'KEEL_CLOSED')
      t.true(o.status === 'rejected' && o.reason instanceof KeelError)
    } else {
      t.is(o.status, 'fulfilled', `write ${i}`)
    }
  })
  t.is(live.stats().count, 20)
  await t.throwsAsync(dropped.delete(1), { code: 'KEEL_CLOSED', instanceOf: KeelError })
  await db.close()
})

test('writes after close reject with KEEL_CLOSED and nothing is queued', async (t) => {
  const db = await open(tempDir(t))
  const col = await db.createCollection('c', { dimension: 2 })
  await db.close()
  await t.throwsAsync(col.upsert({ id: 1, vector: [1, 2] }), { code: 'KEEL_CLOSED', instanceOf: KeelError })
  await t.throwsAsync(col.delete(1), { code: 'KEEL_CLOSED', instanceOf: KeelError })
  // Bad input is still reported as such on a closed collection.
  await t.throwsAsync(col.upsert({ id: 1, vector: [1] }), { code: 'KEEL_DIMENSION_MISMATCH' })
})

/** Runs `source` (CommonJS, `keeldb` = the built package) in a fresh Node; its stdout. */
function runScript(dir: string, source: string): string {
  return execFileSync(process.execPath, ['-e', `const keeldb = require('./dist/index.js'); const dir = ${JSON.stringify(dir)};\n${source}`], {
    cwd: root,
    encoding: 'utf8',
    timeout: 60_000,
    env: { ...process.env, NODE_OPTIONS: '' },
  }).trim()
}

test('a pending write keeps Node running until it lands; an open or closed database does not', (t) => {
  const dir = tempDir(t)
  // Nothing awaits the write: only the pending write itself can keep the process alive.
  t.is(
    runScript(
      dir,
      `keeldb.open(dir).then(async (db) => {
        const col = await db.createCollection('c', { dimension: 2 })
        col.upsert({ id: 1, vector: [1, 2] }, { durability: 'fsync' }).then(() => console.log('landed'))
      })`,
    ),
    'landed',
  )
  // An open database with nothing in flight, and a closed one, let the process exit (the
  // execFileSync timeout fails the test otherwise).
  t.is(runScript(dir, `keeldb.open(dir).then((db) => { db.collection('c'); console.log('open') })`), 'open')
  t.is(
    runScript(
      dir,
      `keeldb.open(dir).then(async (db) => {
        await db.collection('c').upsert({ id: 2, vector: [3, 4] })
        await db.close()
        console.log('closed')
      })`,
    ),
    'closed',
  )
})
