// Writes issued without awaiting each other share fsyncs (group commit), yet each promise settles on its own outcome.

import test from 'ava'

import { open } from '../lib/index'
import { tempDir } from './helpers'

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
