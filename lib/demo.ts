// `npm start`: load a sizeable collection, close, reopen, verify every vector, print stats.
//
// The data directory is ./keeldb-demo-data unless KEELDB_DEMO_DIR says otherwise; the demo
// collection found there is replaced. Vectors come from a seeded generator, so the verify
// pass can regenerate each one and compare it bit for bit.

import { spawn } from 'node:child_process'

import { open, type Collection } from './index'

const DATA_DIR = process.env.KEELDB_DEMO_DIR ?? './keeldb-demo-data'
const COLLECTION = 'demo'
const COUNT = Number(process.env.KEELDB_DEMO_COUNT ?? 100_000)
const DIMENSION = 384
const BATCH = 1_000
/** Records a child process writes before it is killed, to show replay at reopen. */
const CRASH_COUNT = Math.min(20_000, COUNT)

/** The vector of record `id`: a small xorshift stream seeded by the id. */
function vectorFor(id: number): Float32Array {
  const v = new Float32Array(DIMENSION)
  let s = (id + 1) * 0x9e3779b1
  for (let i = 0; i < DIMENSION; i++) {
    s ^= s << 13
    s ^= s >>> 17
    s ^= s << 5
    v[i] = ((s >>> 0) / 0x1_0000_0000) * 2 - 1
  }
  return v
}

function progress(label: string, done: number, total: number, startedMs: number): void {
  if (!process.stdout.isTTY && done !== total) return
  const width = 30
  const filled = Math.round((done / total) * width)
  const seconds = (performance.now() - startedMs) / 1000
  const rate = Math.round(done / Math.max(seconds, 1e-9))
  const bar = '#'.repeat(filled) + '-'.repeat(width - filled)
  const line = `${label} [${bar}] ${done}/${total} ${rate.toLocaleString('en-US')}/s`
  process.stdout.write(process.stdout.isTTY ? `\r${line}` : `${line}\n`)
  if (done === total && process.stdout.isTTY) process.stdout.write('\n')
}

function ms(startedMs: number): string {
  return `${(performance.now() - startedMs).toFixed(1)} ms`
}

async function load(col: Collection): Promise<void> {
  const started = performance.now()
  function* records(): Generator<{ id: number; vector: Float32Array }> {
    for (let id = 0; id < COUNT; id++) {
      yield { id, vector: vectorFor(id) }
      if ((id + 1) % 10_000 === 0 || id + 1 === COUNT) progress('load  ', id + 1, COUNT, started)
    }
  }
  // Batches at durability 'none', two in flight, then one checkpoint: durable when it resolves.
  const stored = await col.bulkLoad(records(), { batchSize: BATCH })
  console.log(`loaded ${stored} vectors of dimension ${DIMENSION} in ${ms(started)} (bulkLoad, batches of ${BATCH}, durable at the end)`)
}

/**
 * Child mode: overwrite the first CRASH_COUNT records with new vectors, report each batch once
 * its promise resolved, then wait to be killed. Nothing is checkpointed: the writes live only
 * in the log, and the parent's reopen replays them.
 */
async function crashChild(): Promise<void> {
  const db = await open(DATA_DIR)
  const col = db.collection(COLLECTION)
  for (let first = 0; first < CRASH_COUNT; first += BATCH) {
    const records = []
    for (let id = first; id < first + BATCH; id++) records.push({ id, vector: vectorFor(id + COUNT) })
    await col.upsert(records)
    process.stdout.write(`acked ${first + BATCH}\n`)
  }
  setInterval(() => {}, 1000) // stay alive until SIGKILL
}

/** Runs the child and kills it with SIGKILL once it has reported every batch acknowledged. */
async function writeThenKill(): Promise<void> {
  const child = spawn(process.execPath, [__filename, '--crash-child'], { stdio: ['ignore', 'pipe', 'inherit'] })
  const started = performance.now()
  await new Promise<void>((resolve, reject) => {
    let buffered = ''
    child.stdout.on('data', (chunk: Buffer) => {
      buffered += chunk.toString()
      const acked = Number(/acked (\d+)\n$/.exec(buffered)?.[1] ?? 0)
      if (acked > 0) progress('crash ', acked, CRASH_COUNT, started)
      if (acked === CRASH_COUNT) {
        child.kill('SIGKILL')
        resolve()
      }
    })
    child.on('exit', (code, signal) => {
      if (signal !== 'SIGKILL') reject(new Error(`crash child exited early (${code ?? signal})`))
    })
  })
  await new Promise((resolve) => child.once('close', resolve))
  console.log(`a child process overwrote ${CRASH_COUNT} vectors (fsync) and was killed with SIGKILL before closing`)
}

function verify(col: Collection): number {
  const started = performance.now()
  let bad = 0
  for (let id = 0; id < COUNT; id++) {
    const got = col.getSync(id)
    const want = vectorFor(id < CRASH_COUNT ? id + COUNT : id)
    if (got === null || Buffer.compare(Buffer.from(got.vector.buffer, got.vector.byteOffset, got.vector.byteLength), Buffer.from(want.buffer)) !== 0) {
      bad++
    }
    if ((id + 1) % 10_000 === 0 || id + 1 === COUNT) progress('verify', id + 1, COUNT, started)
  }
  console.log(`verified ${COUNT} vectors in ${ms(started)}: ${bad === 0 ? 'all exact' : `${bad} WRONG`}`)
  return bad
}

async function main(): Promise<void> {
  console.log(`keeldb demo: ${COUNT} vectors x ${DIMENSION} in ${DATA_DIR}`)
  let started = performance.now()
  let db = await open(DATA_DIR)
  if (db.listCollections().includes(COLLECTION)) await db.dropCollection(COLLECTION)
  const col = await db.createCollection(COLLECTION, { dimension: DIMENSION, metric: 'cosine' })
  console.log(`opened in ${ms(started)}`)

  await load(col)

  started = performance.now()
  await db.close()
  console.log(`closed (checkpoint) in ${ms(started)}`)

  started = performance.now()
  db = await open(DATA_DIR)
  console.log(`reopened after a clean close in ${ms(started)}; log records replayed: ${db.collection(COLLECTION).stats().recordsReplayed}`)
  await db.close()

  await writeThenKill()

  started = performance.now()
  db = await open(DATA_DIR)
  const reopened = db.collection(COLLECTION)
  const afterCrash = reopened.stats()
  console.log(
    `reopened after the crash in ${ms(started)}, replaying ${afterCrash.recordsReplayed} log records ` +
      `(${afterCrash.tornBytesTruncated} torn bytes cut)`,
  )

  const bad = verify(reopened)
  console.log('stats:', reopened.stats())
  await db.close()
  if (bad > 0) process.exitCode = 1
}

const run = process.argv.includes('--crash-child') ? crashChild : main
run().catch((err: unknown) => {
  console.error(err)
  process.exitCode = 1
})
