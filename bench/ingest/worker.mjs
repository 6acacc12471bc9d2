// One measurement in a fresh process: `node worker.mjs '<spec JSON>'`. The spec's `task`
// picks what to do; the result goes back to run.mjs as one JSON line (lib/child.mjs).
//
// Tasks:
// - ingest:  create a store, write records (one per call with `inFlight` calls outstanding,
//            or `batch` per call), time until every write is acknowledged;
// - prepare: create a store of `records` records in batches and close it cleanly;
// - crash:   write `records` records at the 'flush' mapping, then SIGKILL this process;
// - open:    time opening a store, then time gets by id (sync and async, per-call);
// - limits:  the machine's ceilings, through the native benchmark hooks;
// - mixed:   keeldb only: upserts, deletes and reads (searches once search exists) at once.

import { closeSync, fdatasyncSync, openSync, readdirSync, readFileSync, rmSync, statSync, writeSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import path from 'node:path'
import { createRequire } from 'node:module'
import { readSpec, report } from '../lib/child.mjs'
import { makePool, record } from '../lib/data.mjs'
import { percentile } from '../lib/stats.mjs'

const spec = readSpec()
const now = () => performance.now()

async function loadSystem(name) {
  return import(`./systems/${name}.mjs`)
}

/**
 * Issues `put(i)` for i = 0, 1, ... with up to `inFlight` outstanding, until `maxRecords`
 * are issued or `maxSeconds` have passed; resolves to how many were written.
 */
async function drive(put, { inFlight, maxRecords, maxSeconds }) {
  const deadline = now() + maxSeconds * 1000
  let next = 0
  async function lane() {
    while (next < maxRecords && now() < deadline) {
      const i = next++
      await put(i)
    }
  }
  await Promise.all(Array.from({ length: inFlight }, lane))
  return next
}

async function writeBatches(sys, h, pool, { batch, maxRecords, maxSeconds, first = 0 }) {
  const deadline = now() + maxSeconds * 1000
  let next = first
  while (next - first < maxRecords && now() < deadline) {
    const records = []
    const end = Math.min(next + batch, first + maxRecords)
    for (let i = next; i < end; i++) records.push(record(pool, i))
    await sys.putBatch(h, records)
    next = end
  }
  return next - first
}

async function ingest() {
  const sys = await loadSystem(spec.system)
  const pool = makePool(spec.dimension)
  // A paired limit (not the disk's) is taken before the run as well as after it, and the
  // higher of the two kept: right after a run the kernel is still writing back the pages it
  // dirtied, and a write() limit measured then ran as low as a third of the rate the same
  // run's own limits rounds measured (docs/BENCHMARKS.md, session 14).
  const paired = spec.pairedLimit !== undefined && spec.pairedLimit.kind !== 'disk'
  const limitBefore = paired ? pairedLimit(spec.pairedLimit, spec.maxSeconds / 2) : undefined
  const h = await sys.open(spec.dir, { durability: spec.durability, create: true, dimension: spec.dimension })
  const inFlight = sys.info.inFlight ? spec.inFlight : 1
  const limits = { maxRecords: spec.maxRecords, maxSeconds: spec.maxSeconds }
  const t0 = now()
  const records = spec.bulk
    ? await sys.bulkLoad(h, generate(pool, limits), spec.batch)
    : spec.batch > 1
      ? await writeBatches(sys, h, pool, { batch: spec.batch, ...limits })
      : await drive((i) => sys.put(h, record(pool, i)), { inFlight, ...limits })
  const seconds = (now() - t0) / 1000
  const stats = sys.stats?.(h)
  await sys.close(h)
  const result = { records, seconds, rate: records / seconds, inFlight, stats }
  if (spec.pairedLimit?.kind === 'disk') result.limit = diskLimit(spec.pairedLimit.recordBytes, records)
  else if (paired) {
    const limitAfter = pairedLimit(spec.pairedLimit, spec.maxSeconds / 2)
    Object.assign(result, { limit: Math.max(limitBefore, limitAfter), limitBefore, limitAfter })
  }
  return result
}

/**
 * The machine's ceiling for the work measured, taken in the same process right before and
 * right after it (see `ingest`), on the same filesystem: on a shared machine whose fsync rate swings from minute to
 * minute, only a ratio measured side by side means something. Records per second.
 */
function pairedLimit({ kind, group = 1, recordBytes }, seconds) {
  const n = nativeHooks()
  const file = path.join(spec.dir, '..', `${path.basename(spec.dir)}.limit`)
  try {
    if (kind === 'fdatasync') return calibrated((c) => n.benchFdatasync(file, recordBytes, c), 20, seconds).rate
    if (kind === 'group') return calibrated((c) => n.benchGroupAppend(file, recordBytes, group, c), 10, seconds).rate * group
    if (kind === 'write') return calibrated((c) => n.benchWrite(file, recordBytes, c), 1000, seconds).rate
    throw new Error(`unknown limit ${kind}`)
  } finally {
    rmSync(file, { force: true })
  }
}

/** Records 0, 1, ... until `maxRecords` are made or `maxSeconds` have passed. */
function* generate(pool, { maxRecords, maxSeconds }) {
  const deadline = now() + maxSeconds * 1000
  for (let i = 0; i < maxRecords && now() < deadline; i++) yield record(pool, i)
}

/**
 * The disk's sequential write bandwidth as records/s: `records` records of `recordBytes`
 * written in 1 MiB write()s to a fresh file, then one fdatasync, all timed (what a bulk load
 * that ends durable cannot beat for its log alone).
 */
function diskLimit(recordBytes, records) {
  const file = path.join(spec.dir, '..', `${path.basename(spec.dir)}.disk`)
  const chunk = randomBytes(1 << 20) // not a constant: some file systems compress
  const fd = openSync(file, 'w')
  try {
    const t0 = now()
    for (let left = recordBytes * records; left > 0; left -= chunk.length) writeSync(fd, chunk, 0, Math.min(left, chunk.length))
    fdatasyncSync(fd)
    return records / ((now() - t0) / 1000)
  } finally {
    closeSync(fd)
    rmSync(file, { force: true })
  }
}

async function prepare() {
  const sys = await loadSystem(spec.system)
  const pool = makePool(spec.dimension)
  const h = await sys.open(spec.dir, { durability: spec.durability ?? 'flush', create: true, dimension: spec.dimension })
  const t0 = now()
  const records = await writeBatches(sys, h, pool, { batch: spec.batch, maxRecords: spec.records, maxSeconds: Infinity })
  await sys.afterLoad?.(h)
  await sys.close(h)
  return { records, seconds: (now() - t0) / 1000 }
}

async function crash() {
  const sys = await loadSystem(spec.system)
  const pool = makePool(spec.dimension)
  // keeldb: a threshold no write reaches, so the whole log is left for replay.
  const h = await sys.open(spec.dir, {
    durability: 'flush',
    create: true,
    dimension: spec.dimension,
    checkpointThresholdBytes: 2 ** 50,
  })
  const inFlight = sys.info.inFlight ? spec.inFlight : 1
  await drive((i) => sys.put(h, record(pool, i)), { inFlight, maxRecords: spec.records, maxSeconds: Infinity })
  // Every write is acknowledged at 'flush' (in the OS): a process crash must keep them all.
  process.kill(process.pid, 'SIGKILL')
}

/** This process's resident anonymous memory (`RssAnon` of /proc/self/status), in bytes. */
function rssAnonBytes() {
  const line = readFileSync('/proc/self/status', 'utf8').match(/^RssAnon:\s+(\d+) kB/m)
  return line === null ? NaN : Number(line[1]) * 1024
}

/** Bytes of the store's files, and of those that are a write-ahead log. */
function diskBytes(dir) {
  let total = 0
  let log = 0
  const walk = (d) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name)
      if (e.isDirectory()) walk(p)
      else if (e.isFile()) {
        const size = statSync(p).size
        total += size
        if (/\.wal$|-wal$|\.log$/.test(e.name)) log += size
      }
    }
  }
  walk(dir)
  return { total, log }
}

/** Times `fn(id)` per call over `ids` (stops at `maxSeconds`); p50/p99 in microseconds. */
async function timeGets(fn, ids, maxSeconds, isAsync) {
  const samples = new Float64Array(ids.length)
  const deadline = now() + maxSeconds * 1000
  let n = 0
  let missing = 0
  for (; n < ids.length && now() < deadline; n++) {
    const t = process.hrtime.bigint()
    const v = isAsync ? await fn(ids[n]) : fn(ids[n])
    samples[n] = Number(process.hrtime.bigint() - t) / 1000
    if (v === undefined || v === null) missing++
  }
  const sorted = samples.subarray(0, n).sort()
  let sum = 0
  for (const s of sorted) sum += s
  return { calls: n, missing, p50Us: percentile(sorted, 50), p99Us: percentile(sorted, 99), meanUs: sum / n }
}

/** Back-to-back sync calls timed as one loop: the per-call cost without the timer's (µs). */
function loopRate(fn, ids, maxSeconds) {
  const deadline = now() + maxSeconds * 1000
  let calls = 0
  const t0 = now()
  while (now() < deadline) {
    for (let k = 0; k < 1000; k++) fn(ids[calls++ % ids.length])
  }
  return ((now() - t0) * 1000) / calls
}

/**
 * Where getSync's time goes, in back-to-back loops (µs per call): a no-op napi call, the
 * allocation of a fresh Float32Array of the vector's size, the native read the public method
 * makes (with that allocation), and the public method. Opens the store through the native loader (the public handle is
 * closed first: the directory lock allows one handle).
 */
async function getSyncLayers(ids, seconds) {
  const n = nativeHooks()
  const db = await n.openDb(spec.dir, 'flush', 'salvage', {})
  const coll = db.collection('v')
  const reader = coll.readHandle()
  const dim = spec.dimension
  const layers = {
    noopNapi: loopRate(() => n.benchNoop(), ids, seconds),
    allocFloat32Array: loopRate(() => new Float32Array(dim), ids, seconds),
    // The native call the public getSync makes: the vector copied into an array allocated
    // here, the payload text returned (not parsed).
    nativeGetSync: loopRate((id) => n.collectionGetSyncInto(reader, id, new Float32Array(dim), true), ids, seconds),
  }
  await db.close()
  return layers
}

function sampleIds(count, records) {
  // A fixed multiplicative walk: the same "random" ids in every process, no repeats.
  const ids = new Array(count)
  for (let k = 0; k < count; k++) ids[k] = (k * 2654435761) % records
  return ids
}

async function open() {
  const sys = await loadSystem(spec.system)
  const before = diskBytes(spec.dir)
  const anonBefore = rssAnonBytes()
  const t0 = now()
  const h = await sys.open(spec.dir, { durability: 'flush', dimension: spec.dimension })
  const openMs = now() - t0
  // Anonymous memory the open left resident (heap, maps; not the page cache of mapped files).
  const anonMB = (rssAnonBytes() - anonBefore) / 1e6
  const t1 = now()
  const first = sys.getSync ? sys.getSync(h, 0) : await sys.get(h, 0)
  const firstGetMs = now() - t1
  if (first === undefined || first === null || first.length !== spec.dimension) {
    throw new Error(`${spec.system}: record 0 is missing after open`)
  }
  const result = { openMs, anonMB, firstGetMs, storeBytes: before.total, logBytes: before.log, stats: sys.stats?.(h) }
  if (spec.expectRecords !== undefined) {
    const found = await sys.count(h)
    result.count = found
    if (found !== spec.expectRecords) throw new Error(`${spec.system}: ${found} records after open, expected ${spec.expectRecords}`)
  }
  if (spec.gets > 0) {
    const ids = sampleIds(spec.gets, spec.records)
    const g = spec.getSeconds
    if (sys.getSync) {
      timeGets((id) => sys.getSync(h, id), ids, g, false) // warm-up: page faults, JIT
      result.getSync = await timeGets((id) => sys.getSync(h, id), ids, g, false)
      result.getSync.loopUs = loopRate((id) => sys.getSync(h, id), ids, Math.min(g, 1))
    }
    if (sys.getSyncVector) {
      timeGets((id) => sys.getSyncVector(h, id), ids, g, false)
      result.getSyncVector = await timeGets((id) => sys.getSyncVector(h, id), ids, g, false)
    }
    if (sys.get) {
      await timeGets((id) => sys.get(h, id), ids.slice(0, 2000), g / 2, true)
      result.getAsync = await timeGets((id) => sys.get(h, id), ids, g, true)
    }
  }
  await sys.close(h)
  if (spec.system === 'keeldb' && spec.gets > 0) {
    result.getSyncLayers = await getSyncLayers(sampleIds(spec.gets, spec.records), Math.min(spec.getSeconds, 1))
    result.getSyncLayers.publicGetSync = result.getSync.loopUs
  }
  return result
}

function nativeHooks() {
  const require = createRequire(import.meta.url)
  return require('../../index.js')
}

/** Runs `hook(count)` with a count scaled so that it takes about `seconds`. */
function calibrated(hook, firstCount, seconds) {
  let count = firstCount
  let elapsed = hook(count)
  while (elapsed < seconds / 4) {
    count = Math.max(count * 2, Math.ceil((count * seconds) / Math.max(elapsed, 1e-6)))
    elapsed = hook(count)
  }
  return { count, seconds: elapsed, rate: count / elapsed }
}

async function limits() {
  const n = nativeHooks()
  const file = path.join(spec.dir, 'limits.dat')
  const rb = spec.recordBytes
  const s = spec.seconds
  const fdatasync = calibrated((c) => n.benchFdatasync(file, rb, c), 20, s)
  const write = calibrated((c) => n.benchWrite(file, rb, c), 1000, s)
  const group = {}
  for (const g of spec.groups) {
    const r = calibrated((c) => n.benchGroupAppend(file, rb, g, c), 10, s)
    group[g] = { ...r, rate: r.rate * g }
  }
  const scanSeconds = n.benchScanSum(spec.scanBytes, spec.scanPasses)
  const crcSeconds = n.benchCrc32(spec.crcBytes, spec.crcPasses)
  for (let i = 0; i < 1e5; i++) n.benchNoop()
  const t0 = now()
  for (let i = 0; i < spec.noopCalls; i++) n.benchNoop()
  const noopNs = ((now() - t0) * 1e6) / spec.noopCalls
  return {
    recordBytes: rb,
    fdatasyncPerSec: fdatasync.rate,
    writePerSec: write.rate,
    writeMBps: (write.rate * rb) / 1e6,
    groupAppendPerSec: Object.fromEntries(Object.entries(group).map(([g, r]) => [g, r.rate])),
    scanGBps: (spec.scanBytes * spec.scanPasses) / scanSeconds / 1e9,
    crc32GBps: (spec.crcBytes * spec.crcPasses) / crcSeconds / 1e9,
    noopNapiNs: noopNs,
  }
}

/**
 * SEARCH SWITCH: the mixed run reads by id until keeldb has search (issue 4); once
 * `Collection.search` exists, its reads become exact searches for the top 10.
 */
async function mixed() {
  const sys = await loadSystem('keeldb')
  const pool = makePool(spec.dimension)
  const h = await sys.open(spec.dir, { durability: spec.durability, create: true, dimension: spec.dimension })
  await writeBatches(sys, h, pool, { batch: 1000, maxRecords: spec.preload, maxSeconds: Infinity })
  const search = typeof h.coll.search === 'function' ? (v) => h.coll.search(v, { k: 10 }) : null
  let nextId = spec.preload
  let nextDelete = 0
  const counts = { upsert: 0, delete: 0, read: 0 }
  const t0 = now()
  const ops = await drive(
    async (i) => {
      const kind = i % 10
      if (kind < 6) {
        counts.upsert++
        await sys.put(h, record(pool, nextId++))
      } else if (kind < 8) {
        counts.delete++
        await h.coll.delete(nextDelete++)
      } else {
        counts.read++
        if (search !== null) await search(pool.vectors[i % pool.vectors.length])
        else sys.getSync(h, (i * 2654435761) % nextId)
      }
    },
    { inFlight: spec.inFlight, maxRecords: Infinity, maxSeconds: spec.maxSeconds },
  )
  const seconds = (now() - t0) / 1000
  const stats = sys.stats(h)
  await sys.close(h)
  return { ops, seconds, rate: ops / seconds, counts, preload: spec.preload, reads: search === null ? 'getSync' : 'search k=10', stats }
}

/** Whether the system's package loads here, and what it is. */
async function probe() {
  const sys = await loadSystem(spec.system)
  const manifest =
    spec.system === 'keeldb'
      ? new URL('../../package.json', import.meta.url)
      : new URL(`../node_modules/${sys.info.package}/package.json`, import.meta.url)
  const { version } = JSON.parse(readFileSync(manifest, 'utf8'))
  return { ...sys.info, version }
}

const tasks = { probe, ingest, prepare, crash, open, limits, mixed }
const task = tasks[spec.task]
if (task === undefined) throw new Error(`unknown task ${spec.task}`)
report(await task())
