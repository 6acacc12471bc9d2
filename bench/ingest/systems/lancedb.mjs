// @lancedb/lancedb: columnar Lance files on local disk. Every `add` writes new data files
// and a new table version, so its natural use is batches; one-record writes are not
// measured (each would be a table version). Lookups by id go through a BTREE scalar index
// on `id`, created after loading. Checked with strace: LanceDB never fsyncs, so it is
// compared at keeldb's 'flush'.
import * as lancedb from '@lancedb/lancedb'
import { withPayload } from './value.mjs'

export const info = {
  name: 'lancedb',
  package: '@lancedb/lancedb',
  modes: { flush: 'default (no fsync at all; strace shows none)' },
  inFlight: false,
  batchOnly: true,
}

function rows(records) {
  return records.map((r) => ({ id: r.id, vector: Array.from(r.vector), payload: JSON.stringify(r.payload) }))
}

export async function open(dir) {
  const db = await lancedb.connect(dir)
  const names = await db.tableNames()
  const table = names.includes('v') ? await db.openTable('v') : null
  return { db, table }
}

export async function putBatch(h, records) {
  if (h.table === null) h.table = await h.db.createTable('v', rows(records))
  else await h.table.add(rows(records))
}

/** After a bulk load: the scalar index a user would build for lookups by id. */
export async function afterLoad(h) {
  await h.table.createIndex('id', { config: lancedb.Index.btree() })
}

export async function get(h, id) {
  const found = await h.table.query().where(`id = ${id}`).limit(1).toArray()
  return found.length === 0 ? undefined : withPayload(Float32Array.from(found[0].vector), found[0].payload)
}

export async function count(h) {
  return h.table.countRows()
}

export async function close(h) {
  h.table?.close()
  h.db.close()
}
