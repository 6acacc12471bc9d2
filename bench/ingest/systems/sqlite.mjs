// better-sqlite3 in WAL mode: one table (id INTEGER PRIMARY KEY, vector BLOB, payload TEXT).
// Its API is synchronous, so there are never writes in flight: each `put` is its own
// transaction and the "in flight" rows measure it one at a time.
import Database from 'better-sqlite3'
import path from 'node:path'
import { mkdirSync } from 'node:fs'
import { decodeVector, vectorBytes, withPayload } from './value.mjs'

export const info = {
  name: 'better-sqlite3',
  package: 'better-sqlite3',
  modes: { fsync: '`journal_mode=WAL`, `synchronous=FULL`', flush: '`journal_mode=WAL`, `synchronous=NORMAL`' },
  inFlight: false,
}

export async function open(dir, { durability = 'flush', create = false } = {}) {
  mkdirSync(dir, { recursive: true })
  const db = new Database(path.join(dir, 'db.sqlite'))
  db.pragma('journal_mode = WAL')
  db.pragma(`synchronous = ${durability === 'fsync' ? 'FULL' : 'NORMAL'}`)
  if (create) db.exec('CREATE TABLE v (id INTEGER PRIMARY KEY, vector BLOB NOT NULL, payload TEXT NOT NULL)')
  const insert = db.prepare('INSERT OR REPLACE INTO v (id, vector, payload) VALUES (?, ?, ?)')
  const select = db.prepare('SELECT vector, payload FROM v WHERE id = ?').raw()
  const many = db.transaction((records) => {
    for (const r of records) insert.run(r.id, vectorBytes(r.vector), JSON.stringify(r.payload))
  })
  return { db, insert, select, many }
}

export function put(h, r) {
  h.insert.run(r.id, vectorBytes(r.vector), JSON.stringify(r.payload))
}

export function putBatch(h, records) {
  h.many(records)
}

export function getSync(h, id) {
  const row = h.select.get(id)
  return row === undefined ? undefined : withPayload(decodeVector(row[0]), row[1])
}

export function count(h) {
  return h.db.prepare('SELECT count(*) FROM v').pluck().get()
}

export async function close(h) {
  h.db.close()
}
