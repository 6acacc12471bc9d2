// Batch writes share one reused flat vector array: every batch stores its own vectors, whatever the batches before it, one that failed half-packed, or one written from inside another's packing.

import test, { type ExecutionContext } from 'ava'

import { open, type Collection, type VectorRecord } from '../lib/index'
import { sameBytes, tempDir } from './helpers'

const DIMENSION = 8

async function setup(t: ExecutionContext): Promise<Collection> {
  const db = await open(tempDir(t), { durability: 'none' })
  t.teardown(() => db.close())
  return db.createCollection('c', { dimension: DIMENSION })
}

const vector = (seed: number): Float32Array => Float32Array.from({ length: DIMENSION }, (_, j) => seed * 100 + j)
const batch = (from: number, count: number): VectorRecord[] =>
  Array.from({ length: count }, (_, i) => ({ id: from + i, vector: i % 2 === 0 ? vector(from + i) : Array.from(vector(from + i)) }))

function assertStored(t: ExecutionContext, col: Collection, from: number, count: number): void {
  const wrong: number[] = []
  for (let id = from; id < from + count; id++) {
    const stored = col.getSync(id)?.vector
    if (stored === undefined || !sameBytes(stored, vector(id))) wrong.push(id)
  }
  t.deepEqual(wrong, [], `records ${from} to ${from + count - 1}: these hold another vector`)
}

test('batches of growing and shrinking sizes each store their own vectors', async (t) => {
  const col = await setup(t)
  let from = 0
  for (const count of [3, 1000, 2, 1, 500, 7]) {
    await col.upsert(batch(from, count))
    from += count
  }
  assertStored(t, col, 0, from)
  t.is(col.stats().count, from)
})

test('a batch refused half-packed leaves the next batch whole', async (t) => {
  const col = await setup(t)
  const bad = [...batch(0, 10), { id: 10, vector: [1, 2] }]
  await t.throwsAsync(col.upsert(bad), { code: 'KEEL_DIMENSION_MISMATCH' })
  await col.upsert(batch(100, 10))
  assertStored(t, col, 100, 10)
  t.is(col.stats().count, 10)
})

test('a batch written from a payload getter while another batch is being packed keeps both intact', async (t) => {
  const col = await setup(t)
  let inner: Promise<void> | undefined
  const outer = batch(0, 20)
  Object.defineProperty(outer[10] as object, 'payload', {
    enumerable: true,
    get: () => {
      // Runs mid-pack, after the outer batch filled half of its flat array.
      inner ??= col.upsert(batch(1000, 20))
      return { ok: true }
    },
  })
  await col.upsert(outer)
  t.not(inner, undefined, 'the getter ran')
  await inner
  assertStored(t, col, 0, 20)
  assertStored(t, col, 1000, 20)
})

test("a vector the caller's own getter resizes or detaches mid-pack is refused, never padded from the scratch", async (t) => {
  const col = await setup(t)
  await col.upsert(batch(0, 2)) // leaves records 0 and 1's floats in the scratch
  type Resizable = ArrayBuffer & { resize(bytes: number): void }
  const shrinking = (): Float32Array => {
    const buffer = new (ArrayBuffer as unknown as new (bytes: number, options: { maxByteLength: number }) => Resizable)(DIMENSION * 4, { maxByteLength: DIMENSION * 4 })
    const v = new Float32Array(buffer)
    v.set(vector(9))
    return v
  }
  const shrunk = shrinking()
  const detached = Float32Array.from(vector(9))
  const items = Array.from(vector(9))
  const cases: [string, VectorRecord][] = [
    [
      'payload getter shrinks a resizable buffer',
      {
        id: 9,
        vector: shrunk,
        get payload() {
          ;(shrunk.buffer as Resizable).resize(4)
          return { a: 1 }
        },
      },
    ],
    [
      'payload getter detaches the buffer',
      {
        id: 9,
        vector: detached,
        get payload() {
          structuredClone(detached.buffer, { transfer: [detached.buffer] })
          return { a: 1 }
        },
      },
    ],
  ]
  // An item getter of a number[] that empties the array while its components are read.
  Object.defineProperty(items, 0, {
    get() {
      items.length = 1
      return 900
    },
    enumerable: true,
    configurable: true,
  })
  cases.push(['item getter shortens a number[]', { id: 9, vector: items }])
  for (const [what, record] of cases) {
    const err = await t.throwsAsync(col.upsert([record, { id: 10, vector: vector(10) }]), undefined, what)
    t.is((err as { code?: string } | undefined)?.code, 'KEEL_DIMENSION_MISMATCH', what)
  }
  t.is(col.getSync(9), null, 'nothing stored')
  t.is(col.getSync(10), null, 'nothing of the batch stored')
  assertStored(t, col, 0, 2)
})
