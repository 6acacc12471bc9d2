// lmdb (lmdb-js): a B+tree in one memory map. `put` is asynchronous and lmdb-js commits
// every put issued before its write thread gets to them as one transaction, so writes in
// flight share a commit, as keeldb's do. Key: the integer id (ordered-binary); value: the
// vector's bytes followed by the JSON payload.
import { open as lmdbOpen } from 'lmdb'
import { decodeValue, encodeValue } from './value.mjs'

export const info = {
  name: 'lmdb',
  package: 'lmdb',
  modes: { fsync: 'default (durable: fsync at each commit)', flush: '`noSync: true`' },
  inFlight: true,
}

export async function open(dir, { durability = 'flush' } = {}) {
  const db = lmdbOpen({ path: dir, encoding: 'binary', noSync: durability !== 'fsync', compression: false })
  return { db }
}

export function put(h, r) {
  return h.db.put(r.id, encodeValue(r))
}

export function putBatch(h, records) {
  return h.db.transaction(() => {
    for (const r of records) h.db.put(r.id, encodeValue(r))
  })
}

export function getSync(h, id) {
  const buf = h.db.getBinary(id)
  return buf === undefined ? undefined : decodeValue(buf)
}

export function count(h) {
  return h.db.getCount()
}

export async function close(h) {
  await h.db.close()
}
