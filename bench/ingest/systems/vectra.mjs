// vectra: a JSON file (index.json) held in memory and rewritten whole at the end of every
// update, with the payload as item metadata. One write is one `upsertItem` (one update, so
// one rewrite of the file: its cost grows with the index); a batch is one
// `beginUpdate`/`endUpdate`. It writes with `fs.writeFile` and never fsyncs, so it is
// compared at keeldb's 'flush' (and a crash mid-write can leave a torn index.json).
import { LocalIndex } from 'vectra'

export const info = {
  name: 'vectra',
  package: 'vectra',
  modes: { flush: 'default (`fs.writeFile` of the whole index, no fsync)' },
  inFlight: false,
}

function item(r) {
  return { id: String(r.id), vector: Array.from(r.vector), metadata: r.payload }
}

export async function open(dir, { create = false } = {}) {
  const index = new LocalIndex(dir)
  if (create) await index.createIndex({ version: 1 })
  else await index.getIndexStats() // loads index.json, as the first query would
  return { index }
}

export function put(h, r) {
  return h.index.upsertItem(item(r))
}

export async function putBatch(h, records) {
  await h.index.beginUpdate()
  for (const r of records) await h.index.upsertItem(item(r))
  await h.index.endUpdate()
}

export async function get(h, id) {
  const found = await h.index.getItem(String(id))
  return found === undefined ? undefined : Float32Array.from(found.vector)
}

export async function count(h) {
  return (await h.index.getIndexStats()).items
}

export async function close() {}
