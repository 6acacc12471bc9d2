// Bad input is refused with its code before anything is written: a batch with one bad record leaves the collection unchanged.

import test, { type ExecutionContext } from 'ava'
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

import { open, KeelError, type Collection, type Db, type Id } from '../lib/index'
import { tempDir } from './helpers'

const DIMENSION = 4
const KEPT = new Float32Array([1, 2, 3, 4])
const GOOD = [0.5, 0.5, 0.5, 0.5]

/** A collection holding one record, 'kept'. */
async function setup(t: ExecutionContext): Promise<{ db: Db; col: Collection; dir: string }> {
  const dir = tempDir(t)
  const db = await open(dir)
  const col = await db.createCollection('docs', { dimension: DIMENSION })
  await col.upsert({ id: 'kept', vector: KEPT })
  t.teardown(() => db.close())
  return { db, col, dir }
}

/** Asserts the collection still holds exactly 'kept' and nothing reached the log since. */
async function unchanged(t: ExecutionContext, col: Collection, lastLsn: number, ids: Id[] = []): Promise<void> {
  const stats = col.stats()
  t.is(stats.count, 1, 'count unchanged')
  t.is(stats.lastLsn, lastLsn, 'no log record written')
  t.deepEqual((await col.get('kept'))?.vector, KEPT)
  for (const id of ids) t.is(col.getSync(id), null, `${String(id)} not written`)
}

const BAD_IDS: [string, unknown][] = [
  ['empty string', ''],
  ['513 UTF-8 bytes (257 two-byte chars)', 'é'.repeat(257)],
  ['negative', -1],
  ['fractional', 1.5],
  ['unsafe integer', 2 ** 53],
  ['NaN', Number.NaN],
  ['Infinity', Number.POSITIVE_INFINITY],
  ['boolean', true],
  ['null', null],
  ['object', { id: 1 }],
  ['bigint', 1n],
]

for (const [what, id] of BAD_IDS) {
  test(`id ${what}: KEEL_INVALID_ARGUMENT on upsert, delete and get; nothing written`, async (t) => {
    const { col } = await setup(t)
    const lsn = col.stats().lastLsn
    const invalid = { code: 'KEEL_INVALID_ARGUMENT', instanceOf: KeelError }
    await t.throwsAsync(col.upsert({ id: id as Id, vector: GOOD }), invalid)
    await t.throwsAsync(col.upsert([{ id: 'x', vector: GOOD }, { id: id as Id, vector: GOOD }, { id: 'y', vector: GOOD }]), invalid)
    await t.throwsAsync(col.delete(['kept', id as Id]), invalid) // 'kept' is not deleted either
    await t.throwsAsync(col.get(id as Id), invalid)
    t.throws(() => col.getSync(id as Id), invalid)
    await unchanged(t, col, lsn, ['x', 'y'])
  })
}

test('the longest ids are accepted: 512 UTF-8 bytes and Number.MAX_SAFE_INTEGER (controls)', async (t) => {
  const { col } = await setup(t)
  const longest = 'é'.repeat(256)
  await col.upsert([{ id: longest, vector: GOOD }, { id: Number.MAX_SAFE_INTEGER, vector: GOOD }, { id: 0, vector: GOOD }])
  t.is(col.getSync(longest)?.id, longest)
  t.is(col.getSync(Number.MAX_SAFE_INTEGER)?.id, Number.MAX_SAFE_INTEGER)
  t.is(col.stats().count, 4)
})

const BAD_VECTORS: [string, unknown, string][] = [
  ['too short', [1, 2, 3], 'KEEL_DIMENSION_MISMATCH'],
  ['too long (Float32Array)', new Float32Array(5), 'KEEL_DIMENSION_MISMATCH'],
  ['empty', [], 'KEEL_DIMENSION_MISMATCH'],
  ['NaN', [1, Number.NaN, 3, 4], 'KEEL_INVALID_ARGUMENT'],
  ['Infinity', new Float32Array([1, 2, Number.POSITIVE_INFINITY, 4]), 'KEEL_INVALID_ARGUMENT'],
  ['-Infinity', [Number.NEGATIVE_INFINITY, 2, 3, 4], 'KEEL_INVALID_ARGUMENT'],
  ['beyond float32 range (Infinity once converted)', [1e39, 2, 3, 4], 'KEEL_INVALID_ARGUMENT'],
  ['a non-number component', [1, 'two', 3, 4], 'KEEL_INVALID_ARGUMENT'],
  ['a Float64Array', new Float64Array(4), 'KEEL_INVALID_ARGUMENT'],
  ['a string', 'abcd', 'KEEL_INVALID_ARGUMENT'],
  ['missing', undefined, 'KEEL_INVALID_ARGUMENT'],
]

for (const [what, vector, code] of BAD_VECTORS) {
  test(`vector ${what}: ${code}, alone or as record 1 of a batch of 3; nothing written`, async (t) => {
    const { col } = await setup(t)
    const lsn = col.stats().lastLsn
    await t.throwsAsync(col.upsert({ id: 'x', vector: vector as number[] }), { code, instanceOf: KeelError })
    const err = await t.throwsAsync(
      col.upsert([
        { id: 'x', vector: GOOD },
        { id: 'y', vector: vector as number[] },
        { id: 'z', vector: GOOD },
      ]),
      { code },
    )
    t.regex(err?.message ?? '', /record 1\b/, 'the message names the bad record')
    await unchanged(t, col, lsn, ['x', 'y', 'z'])
  })
}

test('records that are not objects: KEEL_INVALID_ARGUMENT, nothing written', async (t) => {
  const { col } = await setup(t)
  const lsn = col.stats().lastLsn
  await t.throwsAsync(col.upsert(null as never), { code: 'KEEL_INVALID_ARGUMENT' })
  await t.throwsAsync(col.upsert([{ id: 'x', vector: GOOD }, 42 as never]), { code: 'KEEL_INVALID_ARGUMENT' })
  await unchanged(t, col, lsn, ['x'])
})

test('write options: unknown key or bad durability is KEEL_INVALID_ARGUMENT, nothing written', async (t) => {
  const { col } = await setup(t)
  const lsn = col.stats().lastLsn
  const invalid = { code: 'KEEL_INVALID_ARGUMENT', instanceOf: KeelError }
  const err = await t.throwsAsync(col.upsert({ id: 'x', vector: GOOD }, { durable: 'fsync' } as never), invalid)
  t.regex(err?.message ?? '', /durable/)
  await t.throwsAsync(col.upsert({ id: 'x', vector: GOOD }, { durability: 'sometimes' } as never), invalid)
  await t.throwsAsync(col.delete('kept', { durability: 'fsync', extra: 1 } as never), invalid)
  await unchanged(t, col, lsn, ['x'])
})

test('write options: the shapes read without the schema are exactly the valid ones', async (t) => {
  // Absent, null, {}, { durability: undefined } and each valid durability are accepted;
  // a class instance, an inherited key or a non-string value go to the schema and fail there.
  const { col } = await setup(t)
  for (const options of [undefined, null, {}, { durability: undefined }, { durability: 'fsync' }, { durability: 'flush' }, { durability: 'none' }]) {
    await t.notThrowsAsync(col.upsert({ id: 'ok', vector: GOOD }, options as never), JSON.stringify(options))
  }
  t.is(await col.delete('ok', {}), 1)
  const lsn = col.stats().lastLsn
  const invalid = { code: 'KEEL_INVALID_ARGUMENT', instanceOf: KeelError }
  await t.throwsAsync(col.upsert({ id: 'x', vector: GOOD }, { durability: 1 } as never), invalid)
  await t.throwsAsync(col.upsert({ id: 'x', vector: GOOD }, 'fsync' as never), invalid)
  await t.throwsAsync(col.delete('kept', Object.assign(Object.create({ extra: 1 }), { durability: 'fsync' }) as never), invalid)
  await unchanged(t, col, lsn, ['x'])
})

test('get options: unknown key or non-boolean is KEEL_INVALID_ARGUMENT, sync and async', async (t) => {
  const { col } = await setup(t)
  const invalid = { code: 'KEEL_INVALID_ARGUMENT', instanceOf: KeelError }
  for (const options of [{ vectors: true }, { payload: 'yes' }, { vector: 1 }, 'vector', new Map(), new Date(0)]) {
    const err = t.throws(() => col.getSync('kept', options as never), invalid, JSON.stringify(options))
    t.regex(err?.message ?? '', /^invalid get options: /)
    await t.throwsAsync(col.get('kept', options as never), invalid)
    await t.throwsAsync(col.getMany(['kept'], options as never), invalid)
  }
  t.deepEqual(Object.keys(col.getSync('kept', { vector: true, payload: undefined }) ?? {}), ['id', 'vector', 'payload'])
  // null is no options, as for the other methods.
  t.deepEqual(Object.keys(col.getSync('kept', null as never) ?? {}), ['id', 'vector', 'payload'])
  t.is((await col.getMany(['kept'], null as never)).length, 1)
})

const BAD_OPEN_OPTIONS: [string, unknown][] = [
  ['unknown key', { durabilty: 'fsync' }],
  ['bad durability', { durability: 'always' }],
  ['bad recovery', { recovery: 'lenient' }],
  ['threshold 0', { checkpointThresholdBytes: 0 }],
  ['negative threshold', { checkpointThresholdBytes: -1 }],
  ['fractional threshold', { checkpointThresholdBytes: 1.5 }],
  ['unsafe threshold', { checkpointThresholdBytes: 2 ** 53 }],
  ['string threshold', { checkpointThresholdBytes: '64' }],
  ['options not an object', 'fsync'],
  ['options a Date', new Date(0)],
  ['options a class instance', new (class Options {
    durability = 'fsync'
  })()],
]

for (const [what, options] of BAD_OPEN_OPTIONS) {
  test(`open options, ${what}: KEEL_INVALID_ARGUMENT, no directory created`, async (t) => {
    const dir = join(tempDir(t), 'db')
    await t.throwsAsync(open(dir, options as never), { code: 'KEEL_INVALID_ARGUMENT', instanceOf: KeelError })
    t.false(existsSync(dir))
  })
}

test('open refuses an empty path, a NUL in the path, and a directory that is not a database, touching nothing', async (t) => {
  const cwd = readdirSync('.')
  await t.throwsAsync(open(''), { code: 'KEEL_INVALID_ARGUMENT', instanceOf: KeelError })
  await t.throwsAsync(open(join(tempDir(t), 'a\0b')), { code: 'KEEL_INVALID_ARGUMENT', instanceOf: KeelError })
  t.deepEqual(readdirSync('.'), cwd, 'no keeldb.lock in the current directory')
  const dir = tempDir(t)
  mkdirSync(join(dir, '.creating-backup'))
  writeFileSync(join(dir, '.creating-backup', 'precious.txt'), 'my data')
  await t.throwsAsync(open(dir), { code: 'KEEL_INVALID_ARGUMENT', message: /is not a keeldb database/ })
  t.deepEqual(readdirSync(dir), ['.creating-backup'])
  t.is(readFileSync(join(dir, '.creating-backup', 'precious.txt'), 'utf8'), 'my data')
})

const BAD_COLLECTIONS: [string, unknown, unknown][] = [
  ['empty name', '', { dimension: 4 }],
  ['name with a space', 'a b', { dimension: 4 }],
  ['name with a slash', '../x', { dimension: 4 }],
  ['name of 65 bytes', 'x'.repeat(65), { dimension: 4 }],
  ['non-ASCII name', 'é', { dimension: 4 }],
  ['name not a string', 7, { dimension: 4 }],
  ['dimension 0', 'ok', { dimension: 0 }],
  ['negative dimension', 'ok', { dimension: -3 }],
  ['fractional dimension', 'ok', { dimension: 1.5 }],
  ['dimension above 65,536', 'ok', { dimension: 65_537 }],
  ['dimension above 2^32', 'ok', { dimension: 2 ** 32 + 4 }],
  ['dimension as a string', 'ok', { dimension: '4' }],
  ['dimension NaN', 'ok', { dimension: Number.NaN }],
  ['dimension missing', 'ok', {}],
  ['bad metric', 'ok', { dimension: 4, metric: 'manhattan' }],
  ['unknown key', 'ok', { dimension: 4, metrc: 'dot' }],
  ['options missing', 'ok', undefined],
]

for (const [what, name, options] of BAD_COLLECTIONS) {
  test(`createCollection, ${what}: KEEL_INVALID_ARGUMENT, nothing created`, async (t) => {
    const { db, dir } = await setup(t)
    await t.throwsAsync(db.createCollection(name as string, options as never), {
      code: 'KEEL_INVALID_ARGUMENT',
      instanceOf: KeelError,
    })
    t.deepEqual(db.listCollections(), ['docs'])
    t.deepEqual(readdirSync(dir).sort(), ['docs', 'keeldb.lock'])
  })
}

test.serial('a key some library added to Object.prototype is no option: options stay valid and mean what they say', async (t) => {
  const proto = Object.prototype as Record<string, unknown>
  proto.polluted = 1
  // Keys that are options: an options object that leaves them out must not inherit them.
  proto.durability = 'none'
  proto.vector = false
  proto.k = 0
  try {
    const db = await open(tempDir(t), {})
    const col = await db.createCollection('c', { dimension: 2, metric: 'dot' })
    await col.upsert({ id: 1, vector: [1, 0] }, { durability: 'fsync' })
    const syncs = col.stats().walSyncs
    await col.upsert({ id: 3, vector: [1, 1] }, {}) // the database's default, fsync
    t.true(col.stats().walSyncs > syncs, 'fsynced, not the inherited none')
    t.deepEqual(col.getSync(1, { payload: false })?.vector, new Float32Array([1, 0]))
    t.deepEqual(col.getSync(1, {})?.vector, new Float32Array([1, 0]))
    t.is((await col.search([1, 0], { k: 1 })).length, 1)
    t.is((await col.search([1, 0], {})).length, 2)
    t.is(await col.bulkLoad([{ id: 2, vector: [0, 1] }], { batchSize: 10 }), 1)
    await db.close()
  } finally {
    delete proto.polluted
    delete proto.durability
    delete proto.vector
    delete proto.k
  }
})

test('a vector on shared memory that another thread keeps changing is never stored with a NaN', async (t) => {
  // The check for NaN and the copy into the log each read the vector: on a SharedArrayBuffer
  // another thread can write between the two. A worker flips the last component between
  // NaN and 1 while the same shared vector is written again and again (with the check and
  // the copy reading it in place, about 1 write in 400 stored a NaN).
  const { Worker } = await import('node:worker_threads')
  const dimension = 8192
  const db = await open(tempDir(t), { durability: 'none' })
  t.teardown(() => db.close())
  const col = await db.createCollection('shared', { dimension })
  const shared = new Float32Array(new SharedArrayBuffer(dimension * 4))
  shared.fill(1)
  const flags = new Int32Array(new SharedArrayBuffer(4))
  const worker = new Worker(
    `const { workerData: { shared, flags } } = require('node:worker_threads')
     const bits = new Int32Array(shared.buffer)
     const nan = new Int32Array(new Float32Array([NaN]).buffer)[0]
     const one = new Int32Array(new Float32Array([1]).buffer)[0]
     while (Atomics.load(flags, 0) === 0) {
       Atomics.store(bits, bits.length - 1, nan)
       Atomics.store(bits, bits.length - 1, one)
     }`,
    { eval: true, workerData: { shared, flags } },
  )
  t.teardown(() => {
    Atomics.store(flags, 0, 1)
    return worker.terminate()
  })
  let stored = 0
  let refused = 0
  for (let id = 0; id < 6000; id++) {
    try {
      await col.upsert({ id, vector: shared })
      stored++
    } catch (err) {
      t.is((err as KeelError).code, 'KEEL_INVALID_ARGUMENT')
      refused++
    }
  }
  Atomics.store(flags, 0, 1)
  const withNaN: number[] = []
  for (let id = 0; id < 6000; id++) {
    const v = col.getSync(id)?.vector
    if (v !== undefined && v.some((x) => Number.isNaN(x))) withNaN.push(id)
  }
  t.deepEqual(withNaN, [], `${stored} stored, ${refused} refused`)
  t.is(stored + refused, 6000)
})
