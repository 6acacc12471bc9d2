// The quick payload check agrees with the full one: whatever it accepts, the full check accepts with the same JSON text (which JSON.parse gives back deep-equal, -0 included), and whatever the full check refuses, it leaves to the full check.

import test from 'ava'

import { checkedPayloadJson, PAYLOAD_BYTES_MAX, PAYLOAD_DEPTH_MAX, quickPayloadJson } from '../lib/payload'

class Refused extends Error {
  constructor(readonly path: string) {
    super(path)
  }
}
const fail = (path: string): never => {
  throw new Refused(path)
}

/** The full check's verdict: the text, or the path it refused. */
function full(value: unknown): { text: string } | { refused: string } {
  try {
    return { text: checkedPayloadJson(value, 'payload', fail) }
  } catch (err) {
    if (err instanceof Refused) return { refused: err.path }
    throw err
  }
}

/** Asserts the agreement for `value`; returns what the quick check gave. */
function agree(t: { fail(m: string): void; is(a: unknown, b: unknown, m?: string): void }, value: unknown, name: string): string | undefined {
  const quick = quickPayloadJson(value)
  const verdict = full(value)
  if (quick !== undefined) {
    if ('refused' in verdict) t.fail(`${name}: the quick check accepted what the full one refused at ${verdict.refused}`)
    else t.is(quick, verdict.text, name)
  }
  return quick
}

/** Deep equality that tells -0 from 0 and a hole from undefined. */
function sameJson(a: unknown, b: unknown): boolean {
  if (typeof a === 'number' || typeof b === 'number') return Object.is(a, b)
  if (typeof a !== 'object' || a === null || typeof b !== 'object' || b === null) return a === b
  if (Array.isArray(a) !== Array.isArray(b)) return false
  const ka = Object.keys(a)
  const kb = Object.keys(b)
  return ka.length === kb.length && ka.every((k, i) => k === kb[i] && sameJson((a as never)[k], (b as never)[k]))
}

const nested = (levels: number): unknown => {
  let v: unknown = 'bottom'
  for (let i = 0; i < levels; i++) v = i % 2 === 0 ? [v] : { k: v }
  return v
}

test('common payloads take the quick path and round-trip', (t) => {
  const payloads: unknown[] = [
    { title: 'Document 1', url: 'https://example.com/1', tags: ['a', 'b'], chunk: 3, draft: false, parent: null },
    { z: [-0, 0, -0.5] },
    -0,
    'é 😀 中文',
    [1, [2, [3, []]], 'x', null, true],
    Object.assign(Object.create(null) as object, { a: 1 }),
    JSON.parse('{"":1,"__proto__":{"x":1},"constructor":7,"1":5}'),
    nested(PAYLOAD_DEPTH_MAX),
  ]
  for (const [i, p] of payloads.entries()) {
    const text = agree(t, p, `payload ${i}`)
    if (text === undefined) {
      t.fail(`payload ${i} should take the quick path`)
      continue
    }
    t.true(sameJson(JSON.parse(text), p), `payload ${i} round-trips`)
  }
})

const sparse = [1, 2, 3]
delete sparse[1]

test('every refused payload is left to the full check', (t) => {
  const cyclic: Record<string, unknown> = { a: { b: [] as unknown[] } }
  ;(cyclic.a as { b: unknown[] }).b.push(cyclic)
  const refused: unknown[] = [
    { f: () => 1 },
    { n: 10n },
    [Symbol('s')],
    { u: undefined },
    [undefined],
    { x: Number.NaN },
    [Number.NEGATIVE_INFINITY],
    { when: new Date(0) },
    new Map([[1, 2]]),
    { s: new Set([1]) },
    { v: new Float32Array(2) },
    new String('x'),
    cyclic,
    { s: sparse },
    { s: 'a\uD800b' },
    { ['k\uDC00']: 1 },
    { [Symbol('k')]: 1 },
    nested(PAYLOAD_DEPTH_MAX + 1),
  ]
  for (const [i, p] of refused.entries()) {
    t.is(quickPayloadJson(p), undefined, `value ${i}`)
    t.true('refused' in full(p), `value ${i} is refused by the full check`)
  }
})

test('a cycle through many keys ends the quick check at once, though it keeps no ancestors', (t) => {
  const o: Record<string, unknown> = {}
  for (let k = 0; k < 8; k++) o[`k${k}`] = o
  const started = Date.now()
  t.is(quickPayloadJson(o), undefined)
  t.deepEqual(full(o), { refused: 'payload.k0' })
  t.true(Date.now() - started < 5000)
})

test('a value that toJSON would replace is refused, enumerable or not', (t) => {
  const object = { title: 'real' }
  Object.defineProperty(object, 'toJSON', { value: () => ({ title: 'substituted' }), enumerable: false })
  const array = [1, 2]
  Object.defineProperty(array, 'toJSON', { value: () => 'substituted', enumerable: false })
  for (const [i, p] of [object, { nested: [array] }, { toJSON: () => 1 }].entries()) {
    t.is(quickPayloadJson(p), undefined, `value ${i}`)
    t.true('refused' in full(p), `value ${i} is refused by the full check`)
  }
})

test('a key named toJSON that holds data is written like any other; a getter there is refused', (t) => {
  const value = { toJSON: 'x', n: 1 }
  t.is(quickPayloadJson(value), undefined, 'the quick check leaves any toJSON to the full one')
  t.deepEqual(full(value), { text: '{"toJSON":"x","n":1}' })
  // A getter may give data to the check and a function to JSON.stringify's second read.
  let reads = 0
  const tricky = {
    title: 'real',
    get toJSON(): unknown {
      reads++
      return reads > 1 ? () => ({ title: 'substituted' }) : undefined
    },
  }
  t.is(quickPayloadJson(tricky), undefined)
  t.true('refused' in full(tricky))
})

test("a getter that checks a payload of its own does not spend the outer payload's size budget", (t) => {
  const inner = 'i'.repeat(10 * 1024 * 1024)
  const outer = {
    get first(): string {
      t.truthy(quickPayloadJson(inner)) // 10 MiB of the limit, in a nested check
      t.true('text' in full(inner))
      return 'x'
    },
    rest: 'o'.repeat(10 * 1024 * 1024),
  }
  t.is(quickPayloadJson(outer)?.length, 10 * 1024 * 1024 + 23) // {"first":"x","rest":"..."}
  t.true('text' in full(outer))
})

test('shared parts are counted at each reference, so a small graph over the size limit is refused without walking it whole', (t) => {
  // 41 objects, each referring twice to the next: 2^40 paths to the leaf, a JSON text of
  // terabytes. Counting the text as the walk goes stops it at the limit.
  let shared: Record<string, unknown> = { leaf: 'x' }
  for (let i = 0; i < 40; i++) shared = { l: shared, r: shared }
  t.is(quickPayloadJson(shared), undefined)
  t.deepEqual(full(shared), { refused: 'payload' })
  // The count is a lower bound of the text's bytes: a payload of exactly the limit passes.
  const atLimit = 'x'.repeat(PAYLOAD_BYTES_MAX - 2)
  t.is(Buffer.byteLength(JSON.stringify(atLimit)), PAYLOAD_BYTES_MAX)
  t.is(agree(t, atLimit, 'at the limit')?.length, PAYLOAD_BYTES_MAX)
  const over = { k: 'x'.repeat(PAYLOAD_BYTES_MAX - 7) } // {"k":"..."} is the limit + 1
  t.is(Buffer.byteLength(JSON.stringify(over)), PAYLOAD_BYTES_MAX + 1)
  t.is(quickPayloadJson(over), undefined)
  t.deepEqual(full(over), { refused: 'payload' })
})

test('a payload of many objects takes the quick path', (t) => {
  const many = Array.from({ length: 20_000 }, (_, i) => ({ i, tags: ['x'] }))
  t.is(agree(t, many, 'many'), JSON.stringify(many))
})

test('an enumerable key on Object.prototype changes neither verdict', (t) => {
  const proto = Object.prototype as Record<string, unknown>
  proto.polluted = () => 1
  try {
    agree(t, { a: 1 }, 'polluted')
    t.deepEqual(full({ a: 1 }), { text: '{"a":1}' })
  } finally {
    delete proto.polluted
  }
})

/** xorshift32, for reproducible random payloads. */
function generator(seed: number): () => number {
  let x = seed >>> 0 || 1
  return () => {
    x ^= x << 13
    x >>>= 0
    x ^= x >>> 17
    x ^= x << 5
    x >>>= 0
    return x / 2 ** 32
  }
}

test('random payloads, some with one bad value somewhere, get the same verdict from both checks', (t) => {
  const random = generator(0x5eed)
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)] as T
  const badLeaves: (() => unknown)[] = [
    () => Number.NaN,
    () => undefined,
    () => () => 1,
    () => 1n,
    () => Symbol('s'),
    () => new Date(0),
    () => 'x\uD83D',
    () => Number.POSITIVE_INFINITY,
  ]
  const goodLeaves: (() => unknown)[] = [
    () => -0,
    () => 0,
    () => random() * 1e6 - 5e5,
    () => 'word',
    () => '😀',
    () => '',
    () => true,
    () => null,
  ]
  let quickAccepted = 0
  let refused = 0
  for (let n = 0; n < 3000; n++) {
    const badChance = n % 2 === 0 ? 0 : 0.02
    const make = (depth: number): unknown => {
      const r = random()
      if (depth > 0 && r < badChance) return pick(badLeaves)()
      if (depth >= 6 || r < 0.5) return pick(goodLeaves)()
      if (r < 0.75) {
        const a = Array.from({ length: Math.floor(random() * 5) }, () => make(depth + 1))
        if (random() < badChance * 5 && a.length > 1) delete a[0]
        return a
      }
      const o: Record<string | symbol, unknown> = random() < 0.1 ? (Object.create(null) as Record<string, unknown>) : {}
      const keys = Math.floor(random() * 5)
      for (let k = 0; k < keys; k++) o[pick(['a', 'b c', '', '__proto__', 'é', '\uDC00', '7'])] = make(depth + 1)
      if (random() < badChance) o[Symbol('k')] = 1
      return o
    }
    const value = make(0)
    const text = agree(t, value, `random payload ${n}`)
    if (text !== undefined) {
      quickAccepted++
      t.true(sameJson(JSON.parse(text), value), `random payload ${n} round-trips`)
    }
    if ('refused' in full(value)) refused++
  }
  // Both verdicts must have come up often, or the test checks nothing.
  t.true(quickAccepted > 1000, `quick accepted ${quickAccepted}`)
  t.true(refused > 100, `refused ${refused}`)
})
