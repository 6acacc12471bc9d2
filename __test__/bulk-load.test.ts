// bulkLoad stores every record it reads, in atomic batches, and is durable when it resolves;
// a bad record stops it with a typed error that says how much was stored, and only that much is.

import test from 'ava'

import { KeelError, open, type Collection, type VectorRecord } from '../lib/index'
import { exited, onLines, sameBytes, spawnFixture, stderrOf, tempDir } from './helpers'
import { vectorFor } from './fixtures/vectors'

const DIM = 8

function recordFor(i: number): VectorRecord {
  return { id: i, vector: vectorFor(i, DIM), payload: { n: i, tag: `r${i}` } }
}

async function fresh(t: Parameters<typeof tempDir>[0]): Promise<{ col: Collection; close: () => Promise<void> }> {
  const db = await open(tempDir(t, 'keeldb-bulk-'))
  t.teardown(() => db.close().catch(() => undefined))
  const col = await db.createCollection('v', { dimension: DIM })
  return { col, close: () => db.close() }
}

/** Whether ids 0..count-1 are all stored with their exact vector and payload. */
function allThere(col: Collection, count: number): boolean {
  for (let i = 0; i < count; i++) {
    const r = col.getSync(i)
    const want = recordFor(i)
    if (r === null || !sameBytes(r.vector, want.vector as Float32Array)) return false
    if (JSON.stringify(r.payload) !== JSON.stringify(want.payload)) return false
  }
  return true
}

test('an array: every record stored, in batches of batchSize, and checkpointed at the end', async (t) => {
  const { col } = await fresh(t)
  const records = Array.from({ length: 2_345 }, (_, i) => recordFor(i))
  const before = col.stats()
  t.is(await col.bulkLoad(records, { batchSize: 500 }), 2_345)
  const after = col.stats()
  t.is(after.count, 2_345)
  t.true(allThere(col, 2_345))
  t.is(after.walRecords - before.walRecords, 5, 'one log record per batch of 500')
  t.is(after.checkpoints, before.checkpoints + 1)
  t.is(after.checkpointLsn, after.lastLsn, 'the checkpoint covers every batch')
})

test('an async iterable is read as the load goes, with the default batch size', async (t) => {
  const { col } = await fresh(t)
  async function* source(): AsyncGenerator<VectorRecord> {
    for (let i = 0; i < 2_100; i++) {
      if (i % 300 === 0) await new Promise((resolve) => setImmediate(resolve))
      yield recordFor(i)
    }
  }
  const before = col.stats().walRecords
  t.is(await col.bulkLoad(source()), 2_100)
  t.is(col.stats().walRecords - before, 3, 'batches of 1,000 by default')
  t.is(col.stats().count, 2_100)
  t.true(allThere(col, 2_100))
})

test('a load refused at its first batch has not grown the vector file for the rest', async (t) => {
  const { col } = await fresh(t)
  const before = col.stats().vectorFileBytes
  // 5,000,000 holes: the first record is refused before anything is written.
  const err = await t.throwsAsync(col.bulkLoad(new Array<VectorRecord>(5_000_000)), { instanceOf: KeelError })
  t.is(err?.code, 'KEEL_INVALID_ARGUMENT')
  t.is(col.stats().vectorFileBytes, before)
  // An accepted first batch reserves the array's length.
  t.is(await col.bulkLoad(Array.from({ length: 2_000 }, (_, i) => recordFor(i)), { batchSize: 500 }), 2_000)
  t.true(allThere(col, 2_000))
})

test('a bad record stops the load: typed error, how many were stored, and exactly those are', async (t) => {
  const { col } = await fresh(t)
  const records = Array.from({ length: 3_000 }, (_, i) => recordFor(i))
  const bad = new Float32Array(DIM)
  bad[3] = Number.NaN
  records[1_234] = { id: 1_234, vector: bad }
  const err = await t.throwsAsync(col.bulkLoad(records, { batchSize: 500 }), { instanceOf: KeelError })
  t.is(err?.code, 'KEEL_INVALID_ARGUMENT')
  t.regex(err?.message ?? '', /^bulkLoad stopped after storing 1000 records; the batch of input records 1000\.\.1499 failed \(its record numbers count from its first record\): .*record 234 \(id 1234\)/)
  t.is(col.stats().count, 1_000, 'the batches before the bad one, and nothing of it or after it')
  t.true(allThere(col, 1_000))
  t.is(col.getSync(1_000), null)
  t.is(col.getSync(2_999), null)
})

test("an error thrown by the caller's iterable comes back as it is, after the batches before it are stored", async (t) => {
  const { col } = await fresh(t)
  const mine = new Error('source went away')
  function* source(): Generator<VectorRecord> {
    for (let i = 0; i < 1_050; i++) yield recordFor(i)
    throw mine
  }
  const err = await t.throwsAsync(col.bulkLoad(source(), { batchSize: 500 }))
  t.is(err, mine)
  t.is(col.stats().count, 1_000)
})

test('a KeelError thrown by the iterable is the caller\'s too: it comes back unchanged', async (t) => {
  const { col } = await fresh(t)
  const theirs = new KeelError('KEEL_NOT_FOUND', 'the source collection went away')
  async function* source(): AsyncGenerator<VectorRecord> {
    for (let i = 0; i < 600; i++) yield recordFor(i)
    throw theirs
  }
  const err = await t.throwsAsync(col.bulkLoad(source(), { batchSize: 500 }))
  t.is(err, theirs)
  t.is(col.stats().count, 500)
})

test("a getter of the caller's that throws: KEEL_INTERNAL with the caller's error as cause, as for upsert", async (t) => {
  const { col } = await fresh(t)
  class Mine extends Error {}
  const records = [recordFor(0), { id: 1, get vector(): Float32Array { throw new Mine('getter') } }]
  const err = await t.throwsAsync(col.bulkLoad(records), { instanceOf: KeelError })
  t.is(err?.code, 'KEEL_INTERNAL')
  t.true(err?.cause instanceof Mine, String(err?.cause))
  // No record number in the reason, so no note about how they count.
  t.regex(err?.message ?? '', /^bulkLoad stopped after storing 0 records; the batch of input records 0\.\.1 failed: /)
  t.is(col.stats().count, 0)
})

test('empty input stores nothing and resolves to 0', async (t) => {
  const { col } = await fresh(t)
  t.is(await col.bulkLoad([]), 0)
  t.is(await col.bulkLoad(new Set<VectorRecord>()), 0)
  t.is(col.stats().count, 0)
})

test('a database closed mid-load: KEEL_CLOSED, and exactly the records it counts are there after reopening', async (t) => {
  const dir = tempDir(t, 'keeldb-bulk-close-')
  const db = await open(dir)
  const col = await db.createCollection('v', { dimension: DIM })
  async function* source(): AsyncGenerator<VectorRecord> {
    for (let i = 0; i < 3_000; i++) {
      if (i === 1_500) await db.close()
      yield recordFor(i)
    }
  }
  const err = await t.throwsAsync(col.bulkLoad(source(), { batchSize: 500 }), { instanceOf: KeelError })
  t.is(err?.code, 'KEEL_CLOSED')
  const stored = Number(/^bulkLoad stopped after storing (\d+) records/.exec(err?.message ?? '')?.[1])
  t.is(stored, 1_500, err?.message)
  const again = await open(dir)
  t.teardown(() => again.close().catch(() => undefined))
  t.is(again.collection('v').stats().count, stored)
})

test('bad options or a non-iterable: KEEL_INVALID_ARGUMENT, nothing written', async (t) => {
  const { col } = await fresh(t)
  const records = [recordFor(0)]
  for (const options of [{ batchSize: 0 }, { batchSize: 1.5 }, { batchSize: 100_001 }, { batchSize: '10' }, { batch: 10 }]) {
    const err = await t.throwsAsync(col.bulkLoad(records, options as never), { instanceOf: KeelError })
    t.is(err?.code, 'KEEL_INVALID_ARGUMENT', JSON.stringify(options))
  }
  for (const source of [42, null, { id: 1 }]) {
    const err = await t.throwsAsync(col.bulkLoad(source as never), { instanceOf: KeelError })
    t.is(err?.code, 'KEEL_INVALID_ARGUMENT', String(source))
  }
  t.is(col.stats().count, 0)
  t.is(col.stats().lastLsn, 0)
})

test.serial('durable when it resolves: a loader killed right after still has every record', async (t) => {
  // The database is opened at durability 'none': without bulkLoad's final checkpoint the
  // last batches would still be in the process's log buffer when it dies (checked once by
  // removing the checkpoint: the reopened collection then missed records).
  const dir = tempDir(t, 'keeldb-bulk-kill-')
  const count = 5_000
  const child = spawnFixture('bulk-loader.ts', [dir, String(count)])
  const stderr = stderrOf(child)
  t.teardown(() => child.kill('SIGKILL'))
  let loaded: string | undefined
  onLines(child, (line) => {
    loaded = line
    child.kill('SIGKILL')
  })
  const { signal } = await exited(child)
  t.is(signal, 'SIGKILL', stderr())
  t.is(loaded, `loaded ${count}`, stderr())
  const db = await open(dir)
  t.teardown(() => db.close().catch(() => undefined))
  const col = db.collection('v')
  t.is(col.stats().count, count)
  t.is(col.stats().recordsReplayed, 0, 'nothing was left to replay: the checkpoint had it all')
  for (const i of [0, 699, 700, 2_500, count - 1]) {
    const r = col.getSync(i)
    t.true(r !== null && sameBytes(r.vector, vectorFor(i, 16)) && JSON.stringify(r.payload) === JSON.stringify({ n: i }), `record ${i}`)
  }
})
