// What a caller passes is stored as passed, or refused with KEEL_INVALID_ARGUMENT and nothing
// written: never converted into something else on the way (found by a review of the
// TypeScript layer; each test failed before its fix).

import test, { type ExecutionContext } from 'ava'

import { open, KeelError, type Collection } from '../lib/index'
import { readdirSync } from 'node:fs'
import { join } from 'node:path'
import { tempDir } from './helpers'

async function setup(t: ExecutionContext, dimension = 3): Promise<Collection> {
  const db = await open(tempDir(t))
  t.teardown(() => db.close().catch(() => undefined))
  return db.createCollection('docs', { dimension })
}

const invalid = { code: 'KEEL_INVALID_ARGUMENT', instanceOf: KeelError }

test('string ids with a lone surrogate are refused, not stored as U+FFFD where they would meet', async (t) => {
  const col = await setup(t)
  await t.throwsAsync(col.upsert({ id: '\ud800', vector: [1, 0, 0] }), invalid)
  await t.throwsAsync(col.upsert([{ id: 'x\udc00', vector: [1, 0, 0] }]), invalid)
  t.throws(() => col.getSync('\udfff'), invalid)
  await t.throwsAsync(col.get('\udfff'), invalid)
  await t.throwsAsync(col.getMany(['ok', '\udfff']), invalid)
  await t.throwsAsync(col.delete('\udbff'), invalid)
  await t.throwsAsync(col.updatePayload('\udbff', { a: 1 }), invalid)
  t.is(col.stats().count, 0)
  // Well-formed text outside the BMP is an id like any other.
  await col.upsert({ id: 'emoji \u{1F600}', vector: [1, 0, 0] })
  t.deepEqual((await col.get('emoji \u{1F600}'))?.vector, new Float32Array([1, 0, 0]))
})

for (const [what, bad] of [
  ['null', null],
  ['a numeric string', '1'],
  ['a boolean', true],
  ['a nested array', [1]],
  ['an object with valueOf', { valueOf: () => 1 }],
  ['a BigInt', 1n],
  ['a hole', undefined],
] as const) {
  test(`a vector component that is ${what} is refused, not converted, in writes and queries`, async (t) => {
    const col = await setup(t)
    const vector = [bad, 0, 0] as never as number[]
    if (what === 'a hole') delete vector[0]
    await t.throwsAsync(col.upsert({ id: 'x', vector }), invalid)
    await t.throwsAsync(col.upsert([{ id: 'y', vector: [0, 0, 1] }, { id: 'z', vector }]), invalid)
    await t.throwsAsync(col.bulkLoad([{ id: 'w', vector }]), invalid)
    await t.throwsAsync(col.search(vector), invalid)
    t.throws(() => col.searchSync(vector), invalid)
    await t.throwsAsync(col.searchBatch([[0, 0, 1], vector]), invalid)
    t.is(col.stats().count, 0)
  })
}

test('searchBatch refuses a hole in its queries instead of searching with a zero vector', async (t) => {
  const col = await setup(t)
  await col.upsert({ id: 'a', vector: [1, 0, 0] })
  // eslint-disable-next-line no-sparse-arrays
  const holed = [[1, 0, 0], , [0, 1, 0]] as number[][]
  const error = await t.throwsAsync(col.searchBatch(holed), invalid)
  t.regex(error?.message ?? '', /query 1/)
  t.throws(() => col.searchBatchSync(holed), invalid)
})

test('a filter JSON would change (a hole, a symbol key, keys beside array items) is refused', async (t) => {
  const col = await setup(t)
  await col.upsert([
    { id: 'a', vector: [1, 0, 0], payload: { n: 1 } },
    { id: 'b', vector: [0, 1, 0] },
  ])
  // eslint-disable-next-line no-sparse-arrays
  await t.throwsAsync(col.search([1, 0, 0], { filter: { n: { $in: [2, , 3] as never } } }), invalid)
  await t.throwsAsync(col.search([1, 0, 0], { filter: { [Symbol('n')]: 5 } as never }), invalid)
  await t.throwsAsync(col.search([1, 0, 0], { filter: { n: { $in: Object.assign([2], { x: 1 }) } } }), invalid)
  // The same filters written plainly still run.
  t.deepEqual((await col.search([1, 0, 0], { filter: { n: { $in: [1, 3] } } })).map((h) => h.id), ['a'])
})

test('mergePayload writes back every stored number bit for bit', async (t) => {
  const col = await setup(t)
  // Doubles a best-effort parser rounds to a neighbour (found by a sweep of random values).
  const score = 0.9104448494177477
  const other = 0.12034211419755003
  await col.upsert({ id: 'a', vector: [1, 0, 0], payload: { score } })
  t.true(await col.mergePayload('a', { views: 1 }))
  t.deepEqual((await col.get('a'))?.payload, { score, views: 1 })
  t.true(await col.mergePayload('a', { other }))
  t.deepEqual((await col.get('a'))?.payload, { score, views: 1, other })
  const randoms = Array.from({ length: 500 }, () => Math.random())
  await col.updatePayload('a', { randoms })
  t.true(await col.mergePayload('a', { more: true }))
  t.deepEqual((await col.get('a'))?.payload, { randoms, more: true })
})

test('reserve past what a collection can hold is refused, allocates nothing and does not poison', async (t) => {
  const col = await setup(t, 1)
  const before = col.stats().vectorFileBytes
  await t.throwsAsync(col.reserve(2 ** 33), invalid)
  await t.throwsAsync(col.reserve(Number.MAX_SAFE_INTEGER), invalid)
  t.is(col.stats().vectorFileBytes, before)
  t.false(col.stats().poisoned)
  await col.upsert({ id: 'a', vector: [1] })
  t.is(col.stats().count, 1)
  const wide = await setup(t, 65_536)
  await t.throwsAsync(wide.reserve(Number.MAX_SAFE_INTEGER), invalid)
  t.false(wide.stats().poisoned)
  await wide.upsert({ id: 'a', vector: new Float32Array(65_536) })
})

test('payload arrays JSON would give back changed (keys beside the items, a subclass) are refused', async (t) => {
  const col = await setup(t)
  const tags = Object.assign(['x'], { note: 'JSON drops this' })
  const error = await t.throwsAsync(col.upsert({ id: 'a', vector: [1, 0, 0], payload: { tags } }), invalid)
  t.regex(error?.message ?? '', /payload\.tags/)
  class Tags extends Array<string> {}
  await t.throwsAsync(col.upsert({ id: 'b', vector: [1, 0, 0], payload: Tags.from(['x']) }), invalid)
  const symbolic = Object.assign(['x'], { [Symbol('s')]: 1 })
  await t.throwsAsync(col.upsert({ id: 'c', vector: [1, 0, 0], payload: symbolic }), invalid)
  t.is(col.stats().count, 0)
  // Plain arrays, nested or empty, still go through.
  await col.upsert({ id: 'd', vector: [1, 0, 0], payload: { tags: ['x', ['y'], []] } })
  t.deepEqual((await col.get('d'))?.payload, { tags: ['x', ['y'], []] })
})

test('get and getMany read their options once', async (t) => {
  const col = await setup(t)
  await col.upsert({ id: 'a', vector: [1, 0, 0], payload: { p: 1 } })
  const options: { vector?: boolean } = { vector: false }
  const pending = col.get('a', options)
  const many = col.getMany(['a'], options)
  options.vector = true
  t.deepEqual(await pending, { id: 'a', payload: { p: 1 } })
  t.deepEqual(await many, [{ id: 'a', payload: { p: 1 } }])
})

test('a batch past the record limit is refused before its vectors are copied', async (t) => {
  const col = await setup(t, 65_536)
  const vector = new Float32Array(65_536)
  // 70,000 x 65,536 floats is more than a typed array can hold: this used to fail inside
  // the copy, reported as a keeldb bug (KEEL_INTERNAL).
  const records = Array.from({ length: 70_000 }, (_, i) => ({ id: i, vector }))
  const error = await t.throwsAsync(col.upsert(records), invalid)
  t.regex(error?.message ?? '', /record limit/)
  t.is(col.stats().count, 0)
})

test('updatePayload refuses undefined (a missing argument) instead of removing the payload', async (t) => {
  const col = await setup(t)
  await col.upsert({ id: 'a', vector: [1, 0, 0], payload: { keep: true } })
  await t.throwsAsync(col.updatePayload('a', undefined), invalid)
  t.deepEqual((await col.get('a'))?.payload, { keep: true })
  t.true(await col.updatePayload('a', null))
  t.is((await col.get('a'))?.payload, null)
})

test("an exception from the caller's own getter comes back as the cause, not blamed on keeldb", async (t) => {
  const col = await setup(t)
  const thrown = new Error('the getter failed')
  const payload = {
    get title(): string {
      throw thrown
    },
  }
  const error = await t.throwsAsync(col.upsert({ id: 'a', vector: [1, 0, 0], payload }), {
    code: 'KEEL_INTERNAL',
    instanceOf: KeelError,
  })
  t.is(error?.cause, thrown)
  t.notRegex(error?.message ?? '', /in keeldb/)
  t.is(col.stats().count, 0)
})

test("every method that reads the caller's input gives a getter's exception back as a KeelError", async (t) => {
  const dir = tempDir(t)
  const db = await open(dir)
  t.teardown(() => db.close().catch(() => undefined))
  const col = await db.createCollection('docs', { dimension: 2 })
  await col.upsert({ id: 'a', vector: [1, 0], payload: { v: 1 } })
  const thrown = new Error('the getter failed')
  const boom = {
    get x(): never {
      throw thrown
    },
  }
  const throwing = (key: string): object =>
    Object.defineProperty({}, key, {
      enumerable: true,
      get: () => {
        throw thrown
      },
    })
  const calls: [string, () => unknown][] = [
    ['updatePayload', () => col.updatePayload('a', boom)],
    ['mergePayload', () => col.mergePayload('a', boom)],
    ['search filter', () => col.search([1, 0], { filter: boom as never })],
    ['searchSync filter', () => col.searchSync([1, 0], { filter: boom as never })],
    ['search query', () => col.search(new Proxy([1, 0], { get: (target, key) => (key === '1' ? boom.x : Reflect.get(target, key)) }))],
    ['searchBatch queries', () => col.searchBatch(new Proxy([[1, 0]], { get: () => boom.x }))],
    ['get options', () => col.get('a', throwing('vector') as never)],
    ['getSync options', () => col.getSync('a', throwing('payload') as never)],
    ['getSync options Proxy', () => col.getSync('a', new Proxy({}, { ownKeys: () => boom.x }) as never)],
    ['updatePayload options', () => col.updatePayload('a', { v: 2 }, new Proxy({}, { ownKeys: () => boom.x }) as never)],
    ['getMany ids', () => col.getMany(new Proxy(['a'], { get: () => boom.x }))],
    ['createCollection options', () => db.createCollection('x', throwing('dimension') as never)],
    ['open options', () => open(join(dir, 'other'), throwing('durability') as never)],
    ['bulkLoad options', () => col.bulkLoad([], throwing('batchSize') as never)],
  ]
  for (const [what, call] of calls) {
    const error = await t.throwsAsync(async () => call(), { code: 'KEEL_INTERNAL', instanceOf: KeelError }, what)
    t.is(error?.cause, thrown, what)
  }
  t.deepEqual((await col.get('a'))?.payload, { v: 1 })
})

test('a Proxy of a Float32Array, or an object given its prototype, is refused as a vector and as a query', async (t) => {
  const col = await setup(t, 2)
  const fakes = [
    new Proxy(new Float32Array(2), {}),
    Object.setPrototypeOf({ length: 2 }, Float32Array.prototype),
    Object.setPrototypeOf(new Uint8Array(8), Float32Array.prototype),
    Object.setPrototypeOf(new DataView(new ArrayBuffer(8)), Float32Array.prototype),
  ]
  for (const fake of fakes) {
    await t.throwsAsync(col.upsert({ id: 'a', vector: fake }), invalid)
    await t.throwsAsync(col.upsert([{ id: 'a', vector: fake }]), invalid)
    await t.throwsAsync(col.search(fake), invalid)
    t.throws(() => col.searchBatchSync(fake), invalid)
  }
  t.is(col.stats().count, 0)
})

test('a revoked Proxy, or an object whose constructor getter throws, in any argument is a KeelError', async (t) => {
  const dir = tempDir(t)
  const db = await open(join(dir, 'db'))
  t.teardown(() => db.close().catch(() => undefined))
  const col = await db.createCollection('docs', { dimension: 2 })
  await col.upsert({ id: 'a', vector: [1, 0], payload: { v: 1 } })
  const revocable = Proxy.revocable({}, {})
  revocable.revoke()
  const sly: unknown = Object.create({
    get constructor(): never {
      throw new Error('the constructor getter')
    },
  })
  for (const [name, h] of [
    ['revoked Proxy', revocable.proxy],
    ['throwing constructor', sly],
  ] as const) {
    const x = h as never
    const calls: [string, () => unknown][] = [
      ['open path', () => open(x)],
      ['open options', () => open(join(dir, 'other'), x)],
      ['createCollection name', () => db.createCollection(x, { dimension: 2 })],
      ['createCollection options', () => db.createCollection('x', x)],
      ['collection', () => db.collection(x)],
      ['dropCollection', () => db.dropCollection(x)],
      ['upsert record', () => col.upsert(x)],
      ['upsert id', () => col.upsert({ id: x, vector: [1, 0] })],
      ['upsert vector', () => col.upsert({ id: 'b', vector: x })],
      ['upsert payload', () => col.upsert({ id: 'b', vector: [1, 0], payload: x })],
      ['upsert batch record', () => col.upsert([x])],
      ['upsert options', () => col.upsert({ id: 'b', vector: [1, 0] }, x)],
      ['delete ids', () => col.delete(x)],
      ['delete options', () => col.delete('b', x)],
      ['get id', () => col.get(x)],
      ['get options', () => col.get('a', x)],
      ['getSync id', () => col.getSync(x)],
      ['getSync options', () => col.getSync('a', x)],
      ['getMany ids', () => col.getMany(x)],
      ['getMany options', () => col.getMany(['a'], x)],
      ['getManySync ids', () => col.getManySync(x)],
      ['getManySync options', () => col.getManySync(['a'], x)],
      ['updatePayload id', () => col.updatePayload(x, { v: 2 })],
      ['updatePayload payload', () => col.updatePayload('a', x)],
      ['updatePayload options', () => col.updatePayload('a', { v: 2 }, x)],
      ['mergePayload id', () => col.mergePayload(x, { v: 2 })],
      ['mergePayload patch', () => col.mergePayload('a', x)],
      ['mergePayload options', () => col.mergePayload('a', { v: 2 }, x)],
      ['search query', () => col.search(x)],
      ['search options', () => col.search([1, 0], x)],
      ['search filter', () => col.search([1, 0], { filter: x })],
      ['search k', () => col.search([1, 0], { k: x })],
      ['searchSync query', () => col.searchSync(x)],
      ['searchSync filter', () => col.searchSync([1, 0], { filter: x })],
      ['searchBatch queries', () => col.searchBatch(x)],
      ['searchBatch options', () => col.searchBatch([[1, 0]], x)],
      ['searchBatchSync queries', () => col.searchBatchSync(x)],
      ['bulkLoad records', () => col.bulkLoad(x)],
      ['bulkLoad options', () => col.bulkLoad([], x)],
      ['reserve', () => col.reserve(x)],
    ]
    for (const [what, call] of calls) {
      await t.throwsAsync(async () => call(), { instanceOf: KeelError }, `${name}, ${what}`)
    }
  }
  t.is(col.stats().count, 1)
  t.deepEqual((await col.get('a'))?.payload, { v: 1 })
})

test('a Float32Array whose own length lies is measured by its real length', async (t) => {
  const col = await setup(t)
  await col.upsert([
    { id: 'a', vector: [1, 2, 3] },
    { id: 'b', vector: [4, 5, 6] },
  ])
  const short = new Float32Array([9, 9])
  Object.defineProperty(short, 'length', { value: 3 })
  const long = new Float32Array([9, 9, 9, 9])
  Object.defineProperty(long, 'length', { value: 3 })
  const mismatch = { code: 'KEEL_DIMENSION_MISMATCH', instanceOf: KeelError }
  for (const liar of [short, long]) {
    await t.throwsAsync(col.upsert({ id: 'x', vector: liar }), mismatch)
    await t.throwsAsync(col.upsert([{ id: 'x', vector: [0, 0, 0] }, { id: 'y', vector: liar }]), mismatch)
    await t.throwsAsync(col.search(liar), mismatch)
    t.throws(() => col.searchBatchSync([liar, liar]), mismatch)
  }
  t.is(col.stats().count, 2)
})

test('a number[] vector is read once, by index, for what is checked and what is stored', async (t) => {
  const col = await setup(t)
  const withIterator = [1, 2, 3]
  Object.defineProperty(withIterator, Symbol.iterator, {
    value: function* () {
      yield* [100, 200, 300]
    },
  })
  await col.upsert({ id: 'it', vector: withIterator })
  t.deepEqual(col.getSync('it')?.vector, new Float32Array([1, 2, 3]))
  const [hit] = col.searchSync(withIterator, { k: 1, includeVector: true })
  t.is(hit?.id, 'it')
  t.true((hit?.distance ?? 1) < 1e-6) // [1, 2, 3] itself, not [100, 200, 300] (also at 0: cosine)
  t.deepEqual(hit?.vector, new Float32Array([1, 2, 3]))
  // A getter that answers 1 the first time and 42 after: the 1 is checked and stored.
  const readOnce = (): number[] => {
    const v = [0, 2, 3]
    let reads = 0
    Object.defineProperty(v, 0, { enumerable: true, get: () => (reads++ === 0 ? 1 : 42) })
    return v
  }
  await col.upsert({ id: 'one', vector: readOnce() })
  await col.upsert([{ id: 'batch', vector: readOnce() }, { id: 'other', vector: [0, 0, 1] }])
  t.deepEqual(col.getSync('one')?.vector, new Float32Array([1, 2, 3]))
  t.deepEqual(col.getSync('batch')?.vector, new Float32Array([1, 2, 3]))
  // Searched with [1, 2, 3]: 'one' (or its twin 'batch') first, at distance 0; had the 42
  // been read instead, the nearest would be at 0.65.
  const [first] = col.searchSync(readOnce(), { k: 1 })
  t.true(first?.id === 'one' || first?.id === 'batch')
  t.true((first?.distance ?? 1) < 1e-6)
})

test('open refuses a path with a lone surrogate instead of opening its U+FFFD twin', async (t) => {
  const dir = tempDir(t)
  await t.throwsAsync(open(join(dir, 'a\ud800b')), invalid)
  t.deepEqual(readdirSync(dir), [])
})

test('an id of -0 is the id 0 everywhere it comes back', async (t) => {
  const col = await setup(t)
  await col.upsert({ id: -0, vector: [1, 0, 0] })
  t.true(Object.is(col.getSync(-0)?.id, 0))
  t.true(Object.is((await col.get(-0))?.id, 0))
  t.true(Object.is(col.getManySync([-0])[0]?.id, 0))
  t.true(Object.is(col.searchSync([1, 0, 0], { k: 1 })[0]?.id, 0))
  t.is(await col.delete(-0), 1)
})
