// Payloads round-trip deep-equal for every JSON type, travel with their vectors, are refused (with nothing written) beyond the limits or when JSON would change them, open fast from the snapshot, and compact while reads go on.

import test, { type ExecutionContext } from 'ava'
import { closeSync, openSync, readdirSync, readFileSync, rmSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { crc32 } from 'node:zlib'

import { open, PAYLOAD_BYTES_MAX, PAYLOAD_DEPTH_MAX, type Collection, type Db, type Id, type JsonValue } from '../lib/index'
import { tempDir } from './helpers'

const DIMENSION = 3
const V = new Float32Array([1, 2, 3])

async function setup(t: ExecutionContext, options: Parameters<typeof open>[1] = {}): Promise<{ db: Db; col: Collection; dir: string }> {
  const dir = tempDir(t)
  const db = await open(dir, options)
  const col = await db.createCollection('docs', { dimension: DIMENSION })
  t.teardown(() => db.close())
  return { db, col, dir }
}

const nested = (levels: number): JsonValue => {
  let v: JsonValue = 'bottom'
  for (let i = 0; i < levels; i++) v = i % 2 === 0 ? [v] : { k: v }
  return v
}

/** One value of every JSON type and the edges of each. */
const VALUES: [string, JsonValue][] = [
  ['true', true],
  ['false', false],
  ['zero', 0],
  ['negative zero', -0],
  ['negative zero inside', { z: [-0, 0, -0.5] }],
  ['negative integer', -42],
  ['fraction', 0.1],
  ['tiny', -2.25e-300],
  ['smallest subnormal', 5e-324],
  ['largest double', Number.MAX_VALUE],
  ['max safe integer', Number.MAX_SAFE_INTEGER],
  ['above 2^53', 2 ** 53 + 2],
  ['above 2^64', 123456789012345680000],
  ['1e21', 1e21],
  ['empty string', ''],
  ['unicode', 'é 😀 中文 \u{10FFFF}'],
  ['escapes', '"\\/\n\r\t\b\f\u0000\u001f\u2028</script>'],
  ['empty array', []],
  ['empty object', {}],
  ['nested arrays', [1, [2, [3, [4, []]]], 'x', null, true]],
  ['object of everything', { s: 's', n: -1.5, b: false, z: null, a: [{}], o: { p: { q: [0] } } }],
  ['odd keys', JSON.parse('{"":1,"a.b":2," ":3,"é":4,"1":5,"0":6,"__proto__":{"x":1},"constructor":7}') as JsonValue],
  ['null-prototype object', Object.assign(Object.create(null) as Record<string, JsonValue>, { a: 1 })],
  ['deepest allowed', nested(PAYLOAD_DEPTH_MAX)],
]

test('every JSON type round-trips deep-equal, through get, getMany and a reopen', async (t) => {
  const dir = tempDir(t)
  let db = await open(dir)
  let col = await db.createCollection('docs', { dimension: DIMENSION })
  await col.upsert(VALUES.map(([name, payload]) => ({ id: name, vector: V, payload })))
  await col.upsert([
    { id: 'none', vector: V },
    { id: 'null', vector: V, payload: null },
  ])
  const check = async (where: string): Promise<void> => {
    for (const [name, payload] of VALUES) {
      const got = await col.get(name)
      t.deepEqual(got, { id: name, vector: V, payload }, `${where}: ${name}`)
    }
    const many = col.getManySync(['none', 'missing', ...VALUES.map(([name]) => name), 'null'])
    t.deepEqual(many, [
      { id: 'none', vector: V, payload: null },
      null,
      ...VALUES.map(([id, payload]) => ({ id, vector: V, payload })),
      { id: 'null', vector: V, payload: null },
    ])
    t.is(col.stats().payloadCount, VALUES.length, `${where}: no payload stored for null or none`)
  }
  await check('written')
  t.true(Object.is((await col.get('negative zero'))?.payload, -0), '-0 stays -0')
  await db.close()
  db = await open(dir)
  col = db.collection('docs')
  await check('reopened')
  await db.close()
})

test('reads leave out the parts asked to, and refuse unknown options', async (t) => {
  const { col } = await setup(t)
  await col.upsert([
    { id: 1, vector: V, payload: { a: 1 } },
    { id: 2, vector: V },
  ])
  t.deepEqual(await col.get(1, { vector: false }), { id: 1, payload: { a: 1 } })
  t.deepEqual(col.getSync(1, { payload: false }), { id: 1, vector: V })
  t.deepEqual(col.getSync(2, { vector: false, payload: false }), { id: 2 })
  t.deepEqual(await col.get(1, { vector: true, payload: true }), { id: 1, vector: V, payload: { a: 1 } })
  t.deepEqual(await col.getMany([2, 3, 1], { vector: false }), [{ id: 2, payload: null }, null, { id: 1, payload: { a: 1 } }])
  t.deepEqual(await col.getMany([]), [])
  await t.throwsAsync(col.get(1, { vectors: false } as never), { code: 'KEEL_INVALID_ARGUMENT' })
  t.throws(() => col.getManySync('1' as never), { code: 'KEEL_INVALID_ARGUMENT' })
  t.throws(() => col.getManySync([1, {}] as never), { code: 'KEEL_INVALID_ARGUMENT' })
  // A returned payload is the caller's own: changing it changes nothing stored.
  const got = await col.get(1)
  ;(got?.payload as { a: number }).a = 99
  t.deepEqual((await col.get(1))?.payload, { a: 1 })
})

test('an upsert replaces the whole record; updatePayload and mergePayload keep the vector', async (t) => {
  const { col } = await setup(t)
  await col.upsert({ id: 'a', vector: V, payload: { title: 'A', tags: ['x'], n: 1 } })
  t.true(await col.mergePayload('a', { n: 2, extra: null, z: -0 }))
  const merged = (await col.get('a'))?.payload as { z: number }
  t.deepEqual(merged, { title: 'A', tags: ['x'], n: 2, extra: null, z: -0 })
  t.true(Object.is(merged.z, -0), 'a merge keeps -0')
  t.true(await col.updatePayload('a', ['now', 'an', 'array']))
  t.deepEqual(await col.get('a'), { id: 'a', vector: V, payload: ['now', 'an', 'array'] })
  await t.throwsAsync(col.mergePayload('a', { x: 1 }), { code: 'KEEL_INVALID_ARGUMENT', message: /not a JSON object/ })
  t.true(await col.updatePayload('a', null))
  t.is((await col.get('a'))?.payload, null)
  t.true(await col.mergePayload('a', { from: 'nothing' }))
  t.deepEqual((await col.get('a'))?.payload, { from: 'nothing' })
  await col.upsert({ id: 'a', vector: [3, 2, 1] })
  t.deepEqual(await col.get('a'), { id: 'a', vector: new Float32Array([3, 2, 1]), payload: null })
  const lastLsn = col.stats().lastLsn
  t.false(await col.updatePayload('missing', { a: 1 }))
  t.false(await col.mergePayload('missing', { a: 1 }))
  t.is(col.stats().lastLsn, lastLsn, 'nothing written for a missing record')
  t.is(col.getSync('missing'), null)
  await t.throwsAsync(col.mergePayload('a', [1] as never), { code: 'KEEL_INVALID_ARGUMENT' })
  await t.throwsAsync(col.mergePayload('a', new Map() as never), { code: 'KEEL_INVALID_ARGUMENT' })
  await t.throwsAsync(col.updatePayload('a', {}, { durability: 'sometimes' } as never), { code: 'KEEL_INVALID_ARGUMENT' })
})

class Point {
  constructor(
    readonly x = 1,
    readonly y = 2,
  ) {}
}

const sparse = [1, 2, 3]
delete sparse[1]
const cyclic: Record<string, unknown> = { a: { b: [] as unknown[] } }
;((cyclic.a as { b: unknown[] }).b).push(cyclic)

/** Values JSON would not give back deep-equal, and the path the error must name. */
const UNSERIALISABLE: [string, unknown, string][] = [
  ['function', { f: () => 1 }, 'payload.f'],
  ['BigInt', { n: 10n }, 'payload.n'],
  ['symbol', [Symbol('s')], 'payload[0]'],
  ['undefined in an object', { u: undefined }, 'payload.u'],
  ['undefined in an array', [undefined], 'payload[0]'],
  ['NaN', { x: Number.NaN }, 'payload.x'],
  ['Infinity', [Number.NEGATIVE_INFINITY], 'payload[0]'],
  ['Date', { when: new Date(0) }, 'payload.when'],
  ['Map', new Map([[1, 2]]), 'payload'],
  ['Set', { s: new Set([1]) }, 'payload.s'],
  ['class instance', { p: new Point() }, 'payload.p'],
  ['typed array', { v: new Float32Array(2) }, 'payload.v'],
  ['boxed string', new String('x'), 'payload'],
  ['cycle', cyclic, 'payload.a.b[0]'],
  ['sparse array', { s: sparse }, 'payload.s[1]'],
  ['lone surrogate', { s: 'a\uD800b' }, 'payload.s'],
  ['lone surrogate key', { ['k\uDC00']: 1 }, 'payload'],
  ['symbol key', { [Symbol('k')]: 1 }, 'payload'],
  ['too deep', nested(PAYLOAD_DEPTH_MAX + 1), 'payload'],
]

for (const [name, payload, path] of UNSERIALISABLE) {
  test(`a payload with ${name} is refused, naming ${path}, and nothing is written`, async (t) => {
    const { col } = await setup(t)
    await col.upsert({ id: 'kept', vector: V, payload: { ok: true } })
    const lastLsn = col.stats().lastLsn
    const batch = [
      { id: 'good', vector: V, payload: { fine: 1 } },
      { id: 'bad', vector: V, payload },
    ]
    const err = await t.throwsAsync(col.upsert(batch), { code: 'KEEL_INVALID_ARGUMENT' })
    t.true(err?.message.includes(`record 1 (id "bad"): ${path}`), err?.message)
    await t.throwsAsync(col.updatePayload('kept', payload), { code: 'KEEL_INVALID_ARGUMENT' })
    if (typeof payload === 'object' && payload !== null && Object.getPrototypeOf(payload) === Object.prototype) {
      await t.throwsAsync(col.mergePayload('kept', payload as Record<string, unknown>), { code: 'KEEL_INVALID_ARGUMENT' })
    }
    t.is(col.stats().lastLsn, lastLsn, 'no log record written')
    t.is(col.getSync('good'), null)
    t.deepEqual(col.getSync('kept')?.payload, { ok: true })
  })
}

test('payloads over 16 MiB of JSON are refused; exactly 16 MiB is stored', async (t) => {
  const { col } = await setup(t)
  const lastLsn = col.stats().lastLsn
  // JSON adds two quotes around a string.
  const atLimit = 'x'.repeat(PAYLOAD_BYTES_MAX - 2)
  const err = await t.throwsAsync(col.upsert({ id: 'big', vector: V, payload: `${atLimit}y` }), { code: 'KEEL_INVALID_ARGUMENT' })
  t.regex(err?.message ?? '', /record 0 \(id "big"\): payload is more than 16777216 bytes of JSON, the limit$/)
  // Multi-byte characters count as their UTF-8 bytes.
  await t.throwsAsync(col.upsert({ id: 'big', vector: V, payload: 'é'.repeat(PAYLOAD_BYTES_MAX / 2) }), {
    code: 'KEEL_INVALID_ARGUMENT',
    message: /payload is 16777218 bytes of JSON, the limit is 16777216/,
  })
  t.is(col.stats().lastLsn, lastLsn)
  await col.upsert({ id: 'big', vector: V, payload: atLimit })
  t.is((await col.get('big', { vector: false }))?.payload, atLimit)
})

test('a clean open reads the payload snapshot and replays no payload record; without it, every one', async (t) => {
  const dir = tempDir(t)
  let db = await open(dir)
  let col = await db.createCollection('docs', { dimension: DIMENSION })
  for (let v = 0; v < 3; v++) {
    await col.upsert(Array.from({ length: 10 }, (_, i) => ({ id: i, vector: V, payload: { i, v } })))
  }
  await col.delete([9])
  await db.close()
  db = await open(dir)
  col = db.collection('docs')
  t.like(col.stats(), { payloadSnapshotUsed: true, payloadRecordsReplayed: 0, payloadCount: 9 })
  await db.close()
  rmSync(join(dir, 'docs', 'payloads.idx'))
  db = await open(dir)
  col = db.collection('docs')
  // 30 stores and one delete frame, all read again.
  t.like(col.stats(), { payloadSnapshotUsed: false, payloadRecordsReplayed: 31, payloadCount: 9 })
  t.deepEqual((await col.getMany([0, 8, 9], { vector: false })).map((r) => r?.payload ?? null), [{ i: 0, v: 2 }, { i: 8, v: 2 }, null])
  await db.close()
})

test('compaction reclaims garbage while reads go on, and keeps every payload', async (t) => {
  // A ratio of 1 never triggers by itself while anything is live: this test compacts by hand.
  const { col, dir } = await setup(t, { compactionGarbageRatio: 1 })
  const ids: Id[] = Array.from({ length: 3000 }, (_, i) => i)
  const payloadFor = (id: Id, v: number): JsonValue => ({ id, v, pad: 'p'.repeat(1000) })
  for (let v = 0; v < 3; v++) await col.upsert(ids.map((id) => ({ id, vector: V, payload: payloadFor(id, v) })))
  const before = col.stats()
  t.true(before.payloadGarbageRatio > 0.6, String(before.payloadGarbageRatio))
  // Three compactions (the later ones rewrite the same live data), each with reads looping
  // over the payloads until it resolves: reads are served, and right, throughout.
  let readsDuring = 0
  for (let round = 0; round < 3; round++) {
    let done = false
    const compaction = col.compact().finally(() => {
      done = true
    })
    for (let from = 0; !done; from = (from + 200) % ids.length) {
      const slice = ids.slice(from, from + 200)
      const got = await col.getMany(slice, { vector: false })
      got.forEach((r, i) => t.deepEqual(r?.payload, payloadFor(from + i, 2)))
      if (!done) readsDuring++
    }
    await compaction
  }
  t.log(`${readsDuring} reads of 200 payloads completed while compactions ran`)
  t.true(readsDuring > 0, 'no read completed during compaction')
  const after = col.stats()
  t.like(after, { compactions: 3, payloadLogGeneration: 4, payloadGarbageBytes: 0, payloadGarbageRatio: 0, payloadCount: 3000 })
  t.true(after.payloadLogBytes < before.payloadLogBytes / 2)
  t.deepEqual(readdirSync(join(dir, 'docs')).filter((f) => f.startsWith('payloads-')), ['payloads-4.log'])
  t.deepEqual((await col.get(2999))?.payload, payloadFor(2999, 2))
})

test('compaction runs by itself past compactionGarbageRatio, and the options are checked', async (t) => {
  const { col } = await setup(t, { compactionGarbageRatio: 0.5, compactionMinBytes: 4096 })
  let largest = 0
  for (let v = 0; v < 50; v++) {
    await col.upsert(Array.from({ length: 10 }, (_, i) => ({ id: i, vector: V, payload: { i, v, text: 'some words' } })), { durability: 'none' })
    largest = Math.max(largest, col.stats().payloadLogBytes)
  }
  const stats = col.stats()
  t.true(stats.compactions >= 5, `${stats.compactions} compactions`)
  t.is(stats.compactionError, null)
  // Below 4096 bytes nothing compacts; past it, a log half garbage does: it never grows far.
  t.true(largest < 3 * 4096, `the payload log grew to ${largest} bytes`)
  t.deepEqual((await col.get(3))?.payload, { i: 3, v: 49, text: 'some words' })
  const dir = tempDir(t)
  for (const bad of [{ compactionGarbageRatio: 0 }, { compactionGarbageRatio: 1.5 }, { compactionMinBytes: -1 }, { compactionMinBytes: 0.5 }]) {
    await t.throwsAsync(open(dir, bad), { code: 'KEEL_INVALID_ARGUMENT' }, JSON.stringify(bad))
  }
})

test('getSync reads payloads appended after open, across a compaction, and reports a damaged frame as KEEL_CORRUPT', async (t) => {
  // getSync reads frames through a mapping of the payload log: frames written after it was
  // made, the next generation after a compaction, and a changed byte (the CRC catches it).
  const { col, dir } = await setup(t, { compactionGarbageRatio: 1 })
  const payloadFor = (id: number, v: number): JsonValue => ({ id, v, text: `record ${id} version ${v}` })
  for (let v = 0; v < 3; v++) {
    for (let id = 0; id < 50; id++) {
      await col.upsert({ id, vector: new Float32Array([id, v, 1]), payload: payloadFor(id, v) })
      t.deepEqual(col.getSync(id), { id, vector: new Float32Array([id, v, 1]), payload: payloadFor(id, v) })
    }
  }
  await col.upsert({ id: 'none', vector: V })
  t.deepEqual(col.getSync('none'), { id: 'none', vector: V, payload: null })
  t.deepEqual(col.getSync('none', { vector: false }), { id: 'none', payload: null })
  t.is(col.getSync('missing'), null)
  await col.compact()
  t.is(col.stats().payloadLogGeneration, 2)
  for (let id = 0; id < 50; id++) t.deepEqual(col.getSync(id)?.payload, payloadFor(id, 2))
  await col.upsert({ id: 7, vector: V, payload: payloadFor(7, 9) })
  t.deepEqual(col.getSync(7), { id: 7, vector: V, payload: payloadFor(7, 9) })
  const vectors = [col.getSync(7)?.vector, col.getSync(7)?.vector]
  t.not(vectors[0], vectors[1], 'every read returns a vector of its own')
  // Change one digit of record 8's payload in place: still JSON, but the frame's CRC fails.
  const log = join(dir, 'docs', 'payloads-2.log')
  const bytes = readFileSync(log)
  const at = bytes.indexOf('"text":"record 8 version 2"')
  t.true(at > 0)
  const fd = openSync(log, 'r+')
  writeSync(fd, '3', at + '"text":"record 8 version '.length)
  closeSync(fd)
  t.throws(() => col.getSync(8), { code: 'KEEL_CORRUPT' })
  t.deepEqual(col.getSync(8, { payload: false }), { id: 8, vector: new Float32Array([8, 2, 1]) })
  t.deepEqual(col.getSync(9)?.payload, payloadFor(9, 2))
})

test('a forged payload frame (checksums recomputed) that is not UTF-8 or not JSON reads as KEEL_CORRUPT', async (t) => {
  // What the open_dir fuzz target found the core hands back for such a frame: the binding
  // and the TypeScript layer refuse it with a typed error instead of returning garbage.
  const { col, dir } = await setup(t)
  await col.upsert({ id: 5, vector: V, payload: { a: 'xyz' } })
  await col.upsert({ id: 6, vector: V, payload: { a: 'uvw' } })
  await col.upsert({ id: 7, vector: V, payload: { a: 'pqr' } })
  await col.checkpoint() // writes the frames, which commits leave buffered, to the file
  const log = join(dir, 'docs', 'payloads-1.log')
  /** Overwrites `from` (in the one frame that has it) with `to`, and recomputes that frame's checksum. */
  const forge = (from: string, to: Buffer): void => {
    const bytes = readFileSync(log)
    const at = bytes.indexOf(from)
    const start = bytes.lastIndexOf('KPAY', at)
    t.true(at > 0 && start > 0)
    const end = start + 24 + bytes.readUInt32LE(start + 8)
    to.copy(bytes, at)
    bytes.writeUInt32LE(crc32(bytes.subarray(start, end)), end)
    const fd = openSync(log, 'r+')
    writeSync(fd, bytes.subarray(start, end + 4), 0, end + 4 - start, start)
    closeSync(fd)
  }
  forge('"xyz"', Buffer.from([0x22, 0xff, 0xfe, 0xfd, 0x22])) // not UTF-8
  forge('"uvw"', Buffer.from('uvw!!')) // UTF-8, not JSON
  forge('"pqr"', Buffer.from('"PQR"')) // JSON: the forgery checks out, so it reads back
  t.deepEqual(col.getSync(7)?.payload, { a: 'PQR' })
  t.throws(() => col.getSync(5), { code: 'KEEL_CORRUPT' })
  t.throws(() => col.getSync(6), { code: 'KEEL_CORRUPT' })
  await t.throwsAsync(col.get(6), { code: 'KEEL_CORRUPT' })
  t.deepEqual(col.getSync(6, { payload: false }), { id: 6, vector: V })
})
