// @zvec/zvec: an in-process vector database with a write-ahead log. Its API is synchronous
// (`upsertSync`, `fetchSync`), so there are no writes in flight; a batch is one
// `upsertSync(docs)` call of at most 1,024 docs (its limit). A FLAT index (exact search, as
// keeldb's) so that ingest does not pay for building a graph. Ids are strings in zvec.
// Checked with strace: zvec does not fdatasync per write (5 fdatasyncs for 2,000 upserts),
// so it is compared at keeldb's 'flush'.
import * as z from '@zvec/zvec'
import { withPayload } from './value.mjs'

export const info = {
  name: 'zvec',
  package: '@zvec/zvec',
  modes: { flush: 'default (no sync per write: strace shows 5 fdatasyncs for 2,000 upserts)' },
  inFlight: false,
}

export const BATCH_MAX = 1024

function schema(dimension) {
  return new z.ZVecCollectionSchema({
    name: 'vectors',
    vectors: {
      name: 'embedding',
      dataType: z.ZVecDataType.VECTOR_FP32,
      dimension,
      indexParams: { indexType: z.ZVecIndexType.FLAT, metricType: z.ZVecMetricType.COSINE },
    },
    fields: { name: 'payload', dataType: z.ZVecDataType.STRING },
  })
}

function doc(r) {
  return { id: String(r.id), vectors: { embedding: r.vector }, fields: { payload: JSON.stringify(r.payload) } }
}

function check(status) {
  for (const s of Array.isArray(status) ? status : [status]) {
    if (!s.ok) throw new Error(`zvec: ${s.code} ${s.message}`)
  }
}

export async function open(dir, { create = false, dimension } = {}) {
  return { c: create ? z.ZVecCreateAndOpen(dir, schema(dimension)) : z.ZVecOpen(dir) }
}

export function put(h, r) {
  check(h.c.upsertSync(doc(r)))
}

export function putBatch(h, records) {
  for (let i = 0; i < records.length; i += BATCH_MAX) {
    check(h.c.upsertSync(records.slice(i, i + BATCH_MAX).map(doc)))
  }
}

export function getSync(h, id) {
  const key = String(id)
  const found = h.c.fetchSync({ ids: key, outputFields: ['payload'] })[key]
  return found === undefined ? undefined : withPayload(Float32Array.from(found.vectors.embedding), found.fields.payload)
}

export function count(h) {
  return h.c.stats.docCount
}

export async function close(h) {
  h.c.closeSync()
}
