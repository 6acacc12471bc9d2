// keeldb through its public API (dist/, built by `npm run build`), as a user calls it.
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const keeldb = require('../../../dist/index.js')

/**
 * PAYLOAD SWITCH. On: keeldb stores the same ~300-byte JSON payload per record as every peer.
 * Off only to compare with runs made before keeldb had payloads.
 */
export const KEELDB_PAYLOADS = true

export const info = {
  name: 'keeldb',
  package: 'keeldb (this repo)',
  modes: { fsync: "durability 'fsync'", flush: "durability 'flush'", none: "durability 'none'" },
  inFlight: true,
}

const toRecord = KEELDB_PAYLOADS
  ? (r) => ({ id: r.id, vector: r.vector, payload: r.payload })
  : (r) => ({ id: r.id, vector: r.vector })

export async function open(dir, { durability = 'flush', create = false, dimension, checkpointThresholdBytes } = {}) {
  const options = { durability }
  if (checkpointThresholdBytes !== undefined) options.checkpointThresholdBytes = checkpointThresholdBytes
  const db = await keeldb.open(dir, options)
  const coll = create ? await db.createCollection('v', { dimension, metric: 'cosine' }) : db.collection('v')
  return { db, coll }
}

export function put(h, r) {
  return h.coll.upsert(toRecord(r))
}

export function putBatch(h, records) {
  return h.coll.upsert(records.map(toRecord))
}

/** `records` (an iterable of bench records) through `Collection.bulkLoad`; resolves to how many it stored. */
export function bulkLoad(h, records, batchSize) {
  function* mapped() {
    for (const r of records) yield toRecord(r)
  }
  return h.coll.bulkLoad(mapped(), { batchSize })
}

export function getSync(h, id) {
  return h.coll.getSync(id)?.vector
}

/** The vector alone (`{ payload: false }`): what the getSync goal's number would be without a payload. */
export function getSyncVector(h, id) {
  return h.coll.getSync(id, { payload: false })?.vector
}

export async function get(h, id) {
  return (await h.coll.get(id))?.vector
}

export function count(h) {
  return h.coll.stats().count
}

export function stats(h) {
  const s = h.coll.stats()
  return { walRecords: s.walRecords, groupCommits: s.groupCommits, walSyncs: s.walSyncs, walBytes: s.walBytes, recordsReplayed: s.recordsReplayed }
}

export async function close(h) {
  await h.db.close()
}
