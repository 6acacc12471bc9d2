// classic-level (LevelDB): an LSM tree. `put` runs on the libuv pool, and LevelDB merges
// concurrent writers into one log write (and one sync), so writes in flight share a commit.
// Key: the id as 8 big-endian bytes; value: vector bytes then the JSON payload.
import { ClassicLevel } from 'classic-level'
import { decodeValue, encodeValue } from './value.mjs'

export const info = {
  name: 'classic-level',
  package: 'classic-level',
  modes: { fsync: '`{ sync: true }` on every write', flush: '`{ sync: false }` (the default)' },
  inFlight: true,
}

function key(id) {
  const k = Buffer.allocUnsafe(8)
  k.writeBigUInt64BE(BigInt(id))
  return k
}

export async function open(dir, { durability = 'flush' } = {}) {
  const db = new ClassicLevel(dir, { keyEncoding: 'buffer', valueEncoding: 'buffer' })
  await db.open()
  return { db, sync: durability === 'fsync' }
}

export function put(h, r) {
  return h.db.put(key(r.id), encodeValue(r), { sync: h.sync })
}

export function putBatch(h, records) {
  return h.db.batch(records.map((r) => ({ type: 'put', key: key(r.id), value: encodeValue(r) })), { sync: h.sync })
}

export function getSync(h, id) {
  const buf = h.db.getSync(key(id))
  return buf === undefined ? undefined : decodeValue(buf)
}

export async function get(h, id) {
  const buf = await h.db.get(key(id))
  return buf === undefined ? undefined : decodeValue(buf)
}

export async function count(h) {
  let n = 0
  for await (const _ of h.db.keys()) n++
  return n
}

export async function close(h) {
  await h.db.close()
}
