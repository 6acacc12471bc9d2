// Search returns exactly the k nearest records of a float64 reference for every metric, through deletes, updates and reopen, and refuses bad queries, options and filters with their codes.

import test from 'ava'

import { open, KeelError, SEARCH_K_MAX, type Collection, type Filter, type Id, type Metric, type SearchHit } from '../lib/index'
import { sameBytes, tempDir } from './helpers'
import { vectorFor } from './fixtures/vectors'

const DIM = 24

/** The float64 distance the README documents for `metric`. */
function distance(metric: Metric, q: Float32Array, v: Float32Array): number {
  let dot = 0
  let qq = 0
  let vv = 0
  let l2 = 0
  for (let i = 0; i < q.length; i++) {
    const a = q[i] as number
    const b = v[i] as number
    dot += a * b
    qq += a * a
    vv += b * b
    l2 += (a - b) * (a - b)
  }
  if (metric === 'dot') return -dot
  if (metric === 'euclidean') return Math.sqrt(l2)
  return qq * vv === 0 ? 1 : 1 - dot / Math.sqrt(qq * vv)
}

/** A model of what the collection holds: id -> vector. */
type Model = Map<Id, Float32Array>

/**
 * Checks `hits` against the float64 ranking of `model`: as many hits as min(k, records),
 * each a live record with its distance right up to float32 rounding, best first, and the
 * same set as the reference (a record tying the k-th distance within rounding may stand in).
 */
function assertNearest(t: import('ava').ExecutionContext, metric: Metric, model: Model, query: Float32Array, k: number, hits: SearchHit[]): void {
  const want = [...model].map(([id, v]) => ({ id, d: distance(metric, query, v) })).sort((a, b) => a.d - b.d)
  t.is(hits.length, Math.min(k, want.length), 'hit count')
  const eps = 1e-4
  const top = new Set(want.slice(0, hits.length).map((w) => w.id))
  const kth = want[hits.length - 1]?.d ?? 0
  let previous = -Infinity
  for (const hit of hits) {
    const stored = model.get(hit.id)
    if (stored === undefined) return t.fail(`hit ${String(hit.id)} is not a live record`)
    const exact = distance(metric, query, stored)
    t.true(Math.abs(hit.distance - exact) <= eps * Math.max(1, Math.abs(exact)), `distance of ${String(hit.id)}: ${hit.distance} vs ${exact}`)
    t.true(top.has(hit.id) || Math.abs(exact - kth) <= eps * Math.max(1, Math.abs(kth)), `${String(hit.id)} is not among the ${hits.length} nearest`)
    t.true(hit.distance >= previous, 'best first')
    previous = hit.distance
  }
}

/** Loads 600 records (integer and string ids), deletes every fifth, updates every seventh. */
async function load(t: import('ava').ExecutionContext, c: Collection): Promise<Model> {
  const model: Model = new Map()
  const records = Array.from({ length: 600 }, (_, i) => ({ id: i % 2 === 0 ? i : `s${i}`, vector: vectorFor(i, DIM) }))
  await c.upsert(records, { durability: 'none' })
  for (const r of records) model.set(r.id, r.vector)
  const doomed = records.filter((_, i) => i % 5 === 0).map((r) => r.id)
  t.is(await c.delete(doomed), doomed.length)
  for (const id of doomed) model.delete(id)
  for (const r of records.filter((_, i) => i % 7 === 3)) {
    const vector = vectorFor(10_000 + Number(String(r.id).replace('s', '')), DIM)
    await c.upsert({ id: r.id, vector })
    model.set(r.id, vector)
  }
  await c.upsert({ id: 'zero', vector: new Float32Array(DIM) })
  model.set('zero', new Float32Array(DIM))
  return model
}

const QUERIES = Array.from({ length: 6 }, (_, q) => vectorFor(50_000 + q, DIM))

async function checkAll(t: import('ava').ExecutionContext, c: Collection, metric: Metric, model: Model): Promise<void> {
  for (const k of [1, 10, 1000]) {
    const batch = await c.searchBatch(QUERIES, { k, includeVector: true })
    t.is(batch.length, QUERIES.length)
    const flat = new Float32Array(QUERIES.length * DIM)
    QUERIES.forEach((q, i) => flat.set(q, i * DIM))
    t.deepEqual(c.searchBatchSync(flat, { k, includeVector: true }), batch, 'flat and array forms agree')
    for (const [i, query] of QUERIES.entries()) {
      const hits = batch[i] ?? []
      assertNearest(t, metric, model, query, k, hits)
      for (const hit of hits) {
        const stored = model.get(hit.id)
        t.true(hit.vector !== undefined && stored !== undefined && sameBytes(hit.vector, stored), 'exact vector bytes')
      }
      // One query alone gets exactly what it got in the batch.
      t.deepEqual(await c.search(query, { k, includeVector: true }), hits)
      t.deepEqual(c.searchSync(Array.from(query), { k, includeVector: true }), hits)
    }
  }
}

for (const metric of ['cosine', 'dot', 'euclidean'] as const) {
  test(`${metric}: exact against a float64 reference, after deletes, updates and reopen`, async (t) => {
    const dir = tempDir(t)
    let db = await open(dir)
    let c = await db.createCollection('c', { dimension: DIM, metric })
    t.deepEqual(await c.search(QUERIES[0] as Float32Array), [], 'an empty collection has no hits')
    const model = await load(t, c)
    await checkAll(t, c, metric, model)
    // Defaults: k = 10, no vectors.
    const plain = await c.search(QUERIES[0] as Float32Array)
    t.is(plain.length, 10)
    t.false('vector' in (plain[0] as SearchHit))
    // A record written after a search is found by the next one.
    const fresh = vectorFor(99_999, DIM)
    await c.upsert({ id: 'fresh', vector: fresh })
    model.set('fresh', fresh)
    // (Under dot, a longer vector may beat a record's own; checkAll covers it.)
    if (metric !== 'dot') t.is((await c.search(fresh, { k: 1 }))[0]?.id, 'fresh')
    await checkAll(t, c, metric, model)
    await db.close()
    db = await open(dir)
    c = db.collection('c')
    await checkAll(t, c, metric, model)
    await db.close()
  })
}

test('ties come back in id order, ids as stored', async (t) => {
  const db = await open(tempDir(t))
  const c = await db.createCollection('c', { dimension: 3, metric: 'euclidean' })
  const v = [1, 2, 3]
  await c.upsert([5, 'b', 'a', 2, 'aa'].map((id) => ({ id, vector: v })))
  await c.upsert({ id: 'far', vector: [9, 9, 9] })
  const hits = await c.search(v, { k: 5 })
  t.deepEqual(hits.map((h) => h.id), ['a', 'aa', 'b', 2, 5]) // strings by UTF-8 bytes, then integers
  t.true(hits.every((h) => h.distance === 0))
  t.is(typeof hits[3]?.id, 'number')
  // k larger than the collection returns everything.
  t.is((await c.search(v, { k: SEARCH_K_MAX })).length, 6)
  await db.close()
})

test('filters: accepted and evaluated natively (a record without a payload is an empty object)', async (t) => {
  const db = await open(tempDir(t))
  const c = await db.createCollection('c', { dimension: 4 })
  await c.upsert(Array.from({ length: 30 }, (_, i) => ({ id: i, vector: vectorFor(i, 4) })))
  const q = vectorFor(100, 4)
  const all = await c.search(q, { k: 30 })
  t.is(all.length, 30)
  t.deepEqual(await c.search(q, { k: 30, filter: { a: { $exists: false } } }), all)
  t.deepEqual(await c.search(q, { k: 30, filter: {} }), all)
  t.deepEqual(await c.search(q, { k: 30, filter: { 'a.b': { $ne: 1 }, $not: { c: 2 } } }), all)
  t.deepEqual(await c.search(q, { k: 30, filter: { missing: null } }), all) // null matches a missing field
  t.deepEqual(await c.search(q, { k: 30, filter: { toJSON: 'x' } }), []) // a key like any other
  t.deepEqual(await c.search(q, { k: 30, filter: { a: 1 } }), [])
  t.deepEqual(await c.search(q, { k: 30, filter: { $or: [{ a: { $gt: 0 } }, { b: { $in: ['x'] } }] } }), [])
  t.deepEqual(c.searchBatchSync([q, q], { k: 3, filter: { a: { $exists: true } } }), [[], []])
  await db.close()
})

test('null matches any branch of a dotted path that ends without a value, as in MongoDB 9.0', async (t) => {
  const db = await open(tempDir(t))
  const c = await db.createCollection('c', { dimension: 2 })
  const payloads: [string, unknown][] = [
    ['one element lacks lang', { eds: [{ lang: 'en' }, {}] }],
    ['all have lang', { eds: [{ lang: 'en' }] }],
    ['empty array', { eds: [] }],
    ['scalars', { eds: [1, 2] }],
    ['a string', { eds: 'x' }],
  ]
  await c.upsert(payloads.map(([id, payload]) => ({ id, vector: [1, 0], payload })))
  const ids = async (filter: Filter) => (await c.search([1, 0], { k: 10, filter })).map((h) => h.id).sort()
  const nulls = ['a string', 'empty array', 'one element lacks lang', 'scalars']
  t.deepEqual(await ids({ 'eds.lang': null }), nulls)
  t.deepEqual(await ids({ 'eds.lang': { $in: [null] } }), nulls)
  t.deepEqual(await ids({ 'eds.lang': { $ne: null } }), ['all have lang'])
  t.deepEqual(await ids({ 'eds.lang': { $exists: true } }), ['all have lang', 'one element lacks lang'])
  await db.close()
})

test('bad filters are KEEL_INVALID_ARGUMENT naming the bad part', async (t) => {
  const db = await open(tempDir(t))
  const c = await db.createCollection('c', { dimension: 2 })
  await c.upsert({ id: 1, vector: [1, 0] })
  const cyclic: Record<string, unknown> = {}
  cyclic.self = cyclic
  // 41 objects, each referring twice to the next: 2^40 paths, walked once each before the
  // size was counted during the walk.
  let shared: Record<string, unknown> = { leaf: 'x' }
  for (let i = 0; i < 40; i++) shared = { l: shared, r: shared }
  // A literal value 40 arrays deep passes the JS walk (64 levels of objects and arrays) and
  // meets the native limit on values (32); one 70 deep stops at the JS walk.
  const deep = (levels: number): unknown => {
    let v: unknown = 1
    for (let i = 0; i < levels; i++) v = [v]
    return v
  }
  const hiddenToJson = { title: 'nothing-has-this' }
  Object.defineProperty(hiddenToJson, 'toJSON', { value: () => ({}), enumerable: false })
  const cases: [unknown, RegExp][] = [
    [{ a: shared }, /^invalid filter: more than 1048576 bytes of JSON, the limit$/],
    [{ t: '\ud800' }, /at 't': a string with a lone surrogate is not JSON/],
    [{ ['\udc00']: 1 }, /invalid filter: a key with a lone surrogate is not JSON/],
    [hiddenToJson, /a toJSON method is not JSON/],
    [{ price: { $foo: 1 } }, /at 'price\.\$foo': unknown operator \$foo/],
    [{ $where: 'x' }, /at '\$where': unknown operator/],
    [{ price: { $gt: [1] } }, /at 'price\.\$gt': needs a number or a string, got an array/],
    [{ price: { $lt: null } }, /at 'price\.\$lt': needs a number or a string/],
    [{ tags: { $in: 'red' } }, /at 'tags\.\$in': needs an array of values/],
    [{ tags: { $exists: 'yes' } }, /at 'tags\.\$exists': needs true or false/],
    [{ $or: [] }, /at '\$or': needs at least one filter/],
    [{ $and: { a: 1 } }, /at '\$and': needs an array of filters/],
    [{ 'a..b': 1 }, /at 'a\.\.b': bad field path/],
    [{ 'a.$b': 1 }, /bad field path: step '\$b'/],
    [{ a: { b: { $gt: 1 } } }, /dotted path/],
    [{ a: { $gt: 1, b: 2 } }, /mixes operators and the field 'b'/],
    [{ a: undefined }, /at 'a': undefined is not a JSON value/],
    [{ a: Number.NaN }, /at 'a': NaN is not a JSON number/],
    [{ a: { $lt: Infinity } }, /at 'a\.\$lt': Infinity is not a JSON number/],
    [{ a: new Date(0) }, /at 'a': a Date is not a plain object/],
    [{ a: () => 1 }, /at 'a': function/],
    [cyclic, /at 'self': the filter refers to itself/],
    [{ a: deep(40) }, /at 'a': the value nests deeper than 32 levels$/],
    [{ a: deep(70) }, /the filter nests deeper than 64 levels of objects and arrays$/],
    ['price > 1', /a filter must be an object/],
    [[{ a: 1 }], /a filter must be an object, got an array/],
    [null, /a filter must be an object, got null/],
  ]
  for (const [filter, message] of cases) {
    for (const call of [
      () => c.search([1, 0], { filter: filter as never }),
      async () => c.searchSync([1, 0], { filter: filter as never }),
      () => c.searchBatch([[1, 0]], { filter: filter as never }),
    ]) {
      const err = await t.throwsAsync(call, { instanceOf: KeelError, message })
      t.is(err?.code, 'KEEL_INVALID_ARGUMENT', String(message))
    }
  }
  await db.close()
})

test('bad queries and options get their codes, and nothing is searched after close', async (t) => {
  const db = await open(tempDir(t))
  const c = await db.createCollection('c', { dimension: 3 })
  await c.upsert({ id: 1, vector: [1, 2, 3] })
  const code = async (call: () => unknown): Promise<string | undefined> =>
    (await t.throwsAsync(async () => call(), { instanceOf: KeelError }))?.code
  t.is(await code(() => c.search([1, 2])), 'KEEL_DIMENSION_MISMATCH')
  t.is(await code(() => c.searchSync(new Float32Array(4))), 'KEEL_DIMENSION_MISMATCH')
  t.is(await code(() => c.searchBatch([[1, 2, 3], [1, 2]])), 'KEEL_DIMENSION_MISMATCH')
  t.is(await code(() => c.searchBatch(new Float32Array(7))), 'KEEL_DIMENSION_MISMATCH')
  t.is(await code(() => c.search([1, Number.NaN, 3])), 'KEEL_INVALID_ARGUMENT')
  t.is(await code(() => c.search(new Float32Array([1, Infinity, 3]))), 'KEEL_INVALID_ARGUMENT')
  t.is(await code(() => c.searchBatch([[1, 2, 3], [0, 0, Number.NaN]])), 'KEEL_INVALID_ARGUMENT')
  t.is(await code(() => c.search('abc' as never)), 'KEEL_INVALID_ARGUMENT')
  t.is(await code(() => c.searchBatch(42 as never)), 'KEEL_INVALID_ARGUMENT')
  for (const options of [{ k: 0 }, { k: 1.5 }, { k: SEARCH_K_MAX + 1 }, { k: '3' }, { top: 3 }, { includeVector: 1 }, { includePayload: 'no' }]) {
    t.is(await code(() => c.search([1, 2, 3], options as never)), 'KEEL_INVALID_ARGUMENT', JSON.stringify(options))
  }
  const nan = await t.throwsAsync(c.search([1, Number.NaN, 3]))
  t.regex(nan?.message ?? '', /component 1 is NaN/)
  t.deepEqual(await c.searchBatch([]), [])
  await db.close()
  t.is(await code(() => c.search([1, 2, 3])), 'KEEL_CLOSED')
  t.is(await code(() => c.searchBatchSync([])), 'KEEL_CLOSED')
})
