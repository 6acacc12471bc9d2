// Filtered search sees each record's stored payload (and its updates, deletes and reopen), and hits carry payloads unless asked not to.

import test from 'ava'

import { open, type JsonValue } from '../lib/index'
import { tempDir } from './helpers'

const DIM = 3

function vectorOf(i: number): number[] {
  return [Math.sin(i * 1.3), Math.cos(i * 0.7), (i % 17) / 17]
}

function payloadOf(i: number): JsonValue | undefined {
  if (i % 10 === 0) return undefined // some records have no payload
  return { group: i % 3, nested: { score: i }, tags: i % 2 === 0 ? ['even'] : ['odd', 'x'] }
}

/** The ids of the k nearest records (euclidean, float64) among those `keep` accepts. */
function reference(query: number[], k: number, keep: (i: number) => boolean, n: number): number[] {
  const scored: Array<[number, number]> = []
  for (let i = 0; i < n; i++) {
    if (!keep(i)) continue
    const v = Float32Array.from(vectorOf(i))
    const d = Math.sqrt(v.reduce((sum, x, j) => sum + (x - (query[j] ?? 0)) ** 2, 0))
    scored.push([d, i])
  }
  return scored.sort((a, b) => a[0] - b[0]).slice(0, k).map(([, i]) => i)
}

test('filters run against stored payloads and follow updates, deletes and reopen', async (t) => {
  const dir = tempDir(t)
  let db = await open(dir)
  let col = await db.createCollection('c', { dimension: DIM, metric: 'euclidean' })
  const n = 300
  await col.upsert(Array.from({ length: n }, (_, i) => ({ id: i, vector: vectorOf(i), payload: payloadOf(i) })))
  const query = [0.2, -0.4, 0.5]
  const group1 = (i: number): boolean => i % 10 !== 0 && i % 3 === 1
  const filter = { group: 1, 'nested.score': { $gte: 50 }, tags: 'odd' }
  const accepted = (i: number): boolean => group1(i) && i >= 50 && i % 2 === 1

  const hits = await col.search(query, { k: 10, filter })
  t.deepEqual(hits.map((h) => h.id), reference(query, 10, accepted, n))
  for (const h of hits) t.deepEqual(h.payload, payloadOf(h.id as number) ?? null)
  t.false('payload' in ((await col.search(query, { k: 3, includePayload: false }))[0] ?? {}))
  t.deepEqual((await col.search(query, { k: 5, filter: { group: { $exists: false } } })).map((h) => h.id), reference(query, 5, (i) => i % 10 === 0, n))

  // An update moves a record out of the filter, a delete removes another.
  const [first, second] = hits
  t.true(await col.updatePayload(first?.id ?? -1, { group: 2 }))
  await col.delete(second?.id ?? -1)
  const gone = new Set([first?.id, second?.id])
  const after = await col.search(query, { k: 10, filter })
  t.deepEqual(after.map((h) => h.id), reference(query, 10, (i) => accepted(i) && !gone.has(i), n))

  await db.close()
  db = await open(dir)
  col = db.collection('c')
  t.deepEqual(col.searchSync(query, { k: 10, filter }).map((h) => h.id), after.map((h) => h.id))
  await db.close()
})
