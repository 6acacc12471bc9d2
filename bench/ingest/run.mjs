// The ingest, open and get benchmark: keeldb beside the machine's limits and the stores a
// user would pick instead. Every measurement runs in a fresh child (worker.mjs); systems
// are interleaved within each workload, round after round, and the first round is a
// discarded warm-up, so a noisy neighbour hits every system alike. Writes a JSON file and
// then docs/BENCHMARKS.md's "Ingest, open and get" section and its SVG chart (report.mjs).
//
//   node bench/ingest/run.mjs [--runs 3] [--seconds 1.5] [--only ingest,open,...] ...
//   (see `--help`)

import { execFileSync } from 'node:child_process'
import { mkdirSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { runChild } from '../lib/child.mjs'
import { DIMENSION, logRecordBytes } from '../lib/data.mjs'
import { describeMachine } from '../lib/machine.mjs'
import { summarize } from '../lib/stats.mjs'
import { KEELDB_PAYLOADS } from './systems/keeldb.mjs'
import { writeReport } from './report.mjs'

const here = path.dirname(fileURLToPath(import.meta.url))
const repoRoot = path.resolve(here, '../..')
const worker = path.join(here, 'worker.mjs')

const SECTIONS = ['limits', 'ingest', 'open', 'crash', 'big-open', 'mixed']
const ALL_SYSTEMS = ['keeldb', 'lmdb', 'sqlite', 'level', 'zvec', 'lancedb', 'vectra']

const { values: args } = parseArgs({
  options: {
    runs: { type: 'string', default: '3' },
    seconds: { type: 'string', default: '1.5' },
    'max-records': { type: 'string', default: '200000' },
    'open-records': { type: 'string', default: '100000' },
    'big-open-records': { type: 'string', default: '1000000' },
    'crash-records': { type: 'string', default: '100000' },
    gets: { type: 'string', default: '20000' },
    only: { type: 'string', default: SECTIONS.join(',') },
    systems: { type: 'string', default: ALL_SYSTEMS.join(',') },
    dir: { type: 'string', default: path.join(process.env.KEELDB_BENCH_DIR ?? os.tmpdir(), `keeldb-bench-${process.pid}`) },
    out: { type: 'string', default: path.join(repoRoot, 'bench/results/ingest.json') },
    docs: { type: 'boolean', default: true },
    'no-docs': { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
})

if (args.help) {
  console.log(`node bench/ingest/run.mjs [options]
  --runs N              measured runs per system and workload, after one warm-up (3)
  --seconds S           time cap of one ingest run (1.5)
  --max-records N       record cap of one ingest run (200000)
  --open-records N      records in the stores opened and read by id (100000)
  --big-open-records N  records in keeldb's clean-open goal store; 0 skips it (1000000)
  --crash-records N     records written before the crash that replay measures (100000)
  --gets N              ids looked up per get run (20000)
  --only LIST           sections: ${SECTIONS.join(',')}
  --systems LIST        systems: ${ALL_SYSTEMS.join(',')}
  --dir PATH            scratch directory (removed at the end)
  --out PATH            result JSON (bench/results/ingest.json)
  --no-docs             do not rewrite docs/BENCHMARKS.md and the chart`)
  process.exit(0)
}

const params = {
  runs: Number(args.runs),
  seconds: Number(args.seconds),
  maxRecords: Number(args['max-records']),
  openRecords: Number(args['open-records']),
  bigOpenRecords: Number(args['big-open-records']),
  crashRecords: Number(args['crash-records']),
  gets: Number(args.gets),
  dimension: DIMENSION,
  sections: args.only.split(','),
  systems: args.systems.split(','),
}
const root = args.dir
mkdirSync(root, { recursive: true })

/** The size of keeldb's log record for one record (bench/lib/data.mjs): the limits write records of exactly this size. */
const RECORD_BYTES = logRecordBytes({ dimension: DIMENSION, payloads: KEELDB_PAYLOADS })

/** Ingest workloads: one record per call unless `batch`. */
/**
 * Ingest workloads: one record per call unless `batch`. `limit` is the machine's ceiling for
 * the same work, measured in keeldb's child right before and right after keeldb's run, the
 * higher kept (worker.mjs `pairedLimit`): appends with one fdatasync each, appends grouped 8 or 64 to a write() and
 * an fdatasync, or one write() per record.
 */
const INGEST = [
  { id: 'fsync-1', durability: 'fsync', inFlight: 1, label: 'fsync, 1 in flight', limit: { kind: 'fdatasync' } },
  { id: 'fsync-8', durability: 'fsync', inFlight: 8, label: 'fsync, 8 in flight', limit: { kind: 'group', group: 8 } },
  { id: 'fsync-64', durability: 'fsync', inFlight: 64, label: 'fsync, 64 in flight', limit: { kind: 'group', group: 64 } },
  { id: 'flush-64', durability: 'flush', inFlight: 64, label: 'flush, 64 in flight', limit: { kind: 'write' } },
  { id: 'none-64', durability: 'none', inFlight: 64, label: 'none, 64 in flight', limit: { kind: 'write' } },
  { id: 'flush-batch', durability: 'flush', inFlight: 1, batch: 1000, label: 'flush, batches of 1,000', limit: { kind: 'write' } },
  // keeldb's bulk loader (batches at 'none', two in flight, one checkpoint at the end, all
  // timed): its limit writes the same number of records' bytes in 1 MiB write()s and
  // fdatasyncs once, the disk's sequential write bandwidth.
  { id: 'bulk-load', durability: 'none', inFlight: 1, batch: 1000, bulk: true, systems: ['keeldb'], label: 'bulkLoad, batches of 1,000, durable at the end', limit: { kind: 'disk' } },
]

const started = Date.now()
const log = (msg) => process.stderr.write(`[${((Date.now() - started) / 1000).toFixed(0).padStart(4)}s] ${msg}\n`)

let seq = 0
const scratch = (name) => path.join(root, `${name}-${seq++}`)
const rm = (dir) => rmSync(dir, { recursive: true, force: true })

/** Rotates `list` by `round`, so no system always runs first (or last) in a round. */
const rotate = (list, round) => list.map((_, i) => list[(i + round) % list.length])

const results = {
  suite: 'ingest',
  command: `node bench/ingest/run.mjs ${process.argv.slice(2).join(' ')}`.trim(),
  machine: describeMachine(root, repoRoot),
  params: { ...params, recordBytes: RECORD_BYTES, keeldbPayloads: KEELDB_PAYLOADS },
  systems: {},
  limits: { runs: [] },
  ingest: {},
  open: {},
  crash: {},
  bigOpen: { runs: [] },
  mixed: { runs: [] },
  errors: [],
}

async function probeSystems() {
  for (const name of params.systems) {
    const r = await runChild(worker, { task: 'probe', system: name }, { timeoutMs: 60_000 })
    results.systems[name] = r.error === undefined ? { ...r, available: true } : { name, available: false, error: r.error }
    log(`probe ${name}: ${r.error === undefined ? `${r.package} ${r.version ?? ''}` : `NOT AVAILABLE: ${r.error}`}`)
  }
}

const available = (name) => results.systems[name]?.available === true

async function child(spec, what, options) {
  const r = await runChild(worker, { dimension: DIMENSION, ...spec }, options)
  if (r.error !== undefined) {
    results.errors.push({ what, error: r.error })
    log(`${what}: ERROR ${r.error}`)
  }
  return r
}

async function runLimits() {
  for (let round = 0; round <= params.runs; round++) {
    const dir = scratch('limits')
    mkdirSync(dir)
    const r = await child(
      {
        task: 'limits',
        dir,
        recordBytes: RECORD_BYTES,
        seconds: 0.5,
        groups: [8, 64],
        scanBytes: 256 << 20,
        scanPasses: 8,
        crcBytes: 64 << 20,
        crcPasses: 8,
        noopCalls: 5_000_000,
      },
      'limits',
    )
    rm(dir)
    if (round > 0 && r.error === undefined) results.limits.runs.push(r)
    log(`limits round ${round}: fdatasync ${r.fdatasyncPerSec?.toFixed(0)}/s, write ${r.writePerSec?.toFixed(0)}/s`)
  }
}

function ingestSystems(w) {
  return params.systems.filter((name) => {
    const s = results.systems[name]
    if (!available(name) || s.modes[w.durability] === undefined) return false
    if (w.systems !== undefined && !w.systems.includes(name)) return false
    return w.batch !== undefined || !s.batchOnly
  })
}

async function runIngest() {
  for (const w of INGEST) results.ingest[w.id] = { ...w, runs: {} }
  for (let round = 0; round <= params.runs; round++) {
    for (const w of INGEST) {
      for (const system of rotate(ingestSystems(w), round)) {
        const dir = scratch(`ingest-${w.id}-${system}`)
        const r = await child(
          {
            task: 'ingest',
            system,
            dir,
            durability: w.durability,
            inFlight: w.inFlight,
            batch: w.batch ?? 1,
            bulk: w.bulk ?? false,
            maxRecords: params.maxRecords,
            maxSeconds: params.seconds,
            pairedLimit: system === 'keeldb' ? { ...w.limit, recordBytes: RECORD_BYTES } : undefined,
          },
          `ingest ${w.id} ${system}`,
        )
        rm(dir)
        if (r.error !== undefined) continue
        log(`ingest ${w.id} ${system} round ${round}: ${r.rate.toFixed(0)} records/s`)
        if (round > 0) (results.ingest[w.id].runs[system] ??= []).push(r)
      }
    }
  }
}

/** Systems whose stores are opened and read: vectra is left out (see its note). */
const OPEN_SYSTEMS = ['keeldb', 'lmdb', 'sqlite', 'level', 'zvec', 'lancedb']

async function runOpen() {
  const stores = {}
  for (const system of OPEN_SYSTEMS.filter(available)) {
    const dir = path.join(root, `store-${system}`)
    const batch = system === 'zvec' ? 1000 : 10_000
    const r = await child({ task: 'prepare', system, dir, records: params.openRecords, batch }, `prepare ${system}`, {
      timeoutMs: 1_800_000,
    })
    if (r.error !== undefined) continue
    log(`prepared ${system}: ${params.openRecords} records in ${r.seconds.toFixed(1)} s`)
    stores[system] = dir
    results.open[system] = { prepareSeconds: r.seconds, runs: [] }
  }
  for (let round = 0; round <= params.runs; round++) {
    for (const system of rotate(Object.keys(stores), round)) {
      const r = await child(
        {
          task: 'open',
          system,
          dir: stores[system],
          records: params.openRecords,
          expectRecords: params.openRecords,
          gets: params.gets,
          getSeconds: params.seconds,
        },
        `open ${system}`,
      )
      if (r.error !== undefined) continue
      log(`open ${system} round ${round}: ${r.openMs.toFixed(1)} ms, getSync p50 ${r.getSync?.p50Us?.toFixed(2) ?? '-'} us`)
      if (round > 0) results.open[system].runs.push(r)
    }
  }
  for (const dir of Object.values(stores)) rm(dir)
}

/** Systems crashed and reopened: each at its 'flush' mapping, one record per write. */
const CRASH_SYSTEMS = ['keeldb', 'lmdb', 'sqlite', 'level', 'zvec']

async function runCrash() {
  const crashed = {}
  for (const system of CRASH_SYSTEMS.filter(available)) {
    const dir = path.join(root, `crashed-${system}`)
    const r = await child(
      { task: 'crash', system, dir, records: params.crashRecords, inFlight: 64 },
      `crash ${system}`,
      { expectSignal: 'SIGKILL', timeoutMs: 1_800_000 },
    )
    if (r.signal !== 'SIGKILL') continue
    crashed[system] = dir
    results.crash[system] = { runs: [] }
  }
  for (let round = 0; round <= params.runs; round++) {
    for (const system of rotate(Object.keys(crashed), round)) {
      // Recovery changes the store, so every run opens a fresh copy of the crashed one.
      const dir = scratch(`reopen-${system}`)
      execFileSync('cp', ['-a', crashed[system], dir])
      // The copy leaves hundreds of MB of dirty pages in the very files the open then
      // syncs: write them back first, or the open pays for the copy (after a real crash the
      // files are on disk already).
      execFileSync('sync')
      const r = await child(
        { task: 'open', system, dir, records: params.crashRecords, expectRecords: params.crashRecords, gets: 0 },
        `reopen after crash ${system}`,
      )
      rm(dir)
      if (r.error !== undefined) continue
      log(`reopen after crash ${system} round ${round}: ${r.openMs.toFixed(1)} ms, log ${(r.logBytes / 1e6).toFixed(0)} MB`)
      if (round > 0) results.crash[system].runs.push(r)
    }
  }
  for (const dir of Object.values(crashed)) rm(dir)
}

async function runBigOpen() {
  if (params.bigOpenRecords <= 0 || !available('keeldb')) return
  const dir = path.join(root, 'store-keeldb-big')
  const prep = await child(
    { task: 'prepare', system: 'keeldb', dir, records: params.bigOpenRecords, batch: 10_000, durability: 'none' },
    'prepare keeldb big',
    { timeoutMs: 1_800_000 },
  )
  if (prep.error !== undefined) return
  results.bigOpen.records = params.bigOpenRecords
  results.bigOpen.prepareSeconds = prep.seconds
  log(`prepared keeldb: ${params.bigOpenRecords} records in ${prep.seconds.toFixed(1)} s`)
  for (let round = 0; round <= params.runs; round++) {
    const r = await child(
      { task: 'open', system: 'keeldb', dir, records: params.bigOpenRecords, gets: 0 },
      'open keeldb big',
    )
    if (r.error !== undefined) continue
    log(`open keeldb ${params.bigOpenRecords} round ${round}: ${r.openMs.toFixed(1)} ms`)
    if (round > 0) results.bigOpen.runs.push(r)
  }
  rm(dir)
}

async function runMixed() {
  if (!available('keeldb')) return
  for (let round = 0; round <= params.runs; round++) {
    const dir = scratch('mixed')
    const r = await child(
      { task: 'mixed', dir, durability: 'flush', preload: 20_000, inFlight: 64, maxSeconds: params.seconds },
      'mixed keeldb',
    )
    rm(dir)
    if (r.error !== undefined) continue
    log(`mixed round ${round}: ${r.rate.toFixed(0)} ops/s`)
    if (round > 0) results.mixed.runs.push(r)
  }
}

/** Adds `summary` (median, min, max over runs) for each named metric. */
function summaries() {
  const pick = (runs, f) => summarize(runs.map(f).filter((v) => typeof v === 'number' && Number.isFinite(v)))
  const lim = results.limits.runs
  results.limits.summary = {
    fdatasyncPerSec: pick(lim, (r) => r.fdatasyncPerSec),
    writePerSec: pick(lim, (r) => r.writePerSec),
    writeMBps: pick(lim, (r) => r.writeMBps),
    groupAppend8PerSec: pick(lim, (r) => r.groupAppendPerSec?.[8]),
    groupAppend64PerSec: pick(lim, (r) => r.groupAppendPerSec?.[64]),
    scanGBps: pick(lim, (r) => r.scanGBps),
    crc32GBps: pick(lim, (r) => r.crc32GBps),
    noopNapiNs: pick(lim, (r) => r.noopNapiNs),
  }
  for (const w of Object.values(results.ingest)) {
    w.summary = {}
    for (const [system, runs] of Object.entries(w.runs)) {
      w.summary[system] = {
        rate: pick(runs, (r) => r.rate),
        limit: pick(runs, (r) => r.limit),
        ratioToLimit: pick(runs, (r) => (r.limit ? r.rate / r.limit : undefined)),
        meanGroup: pick(runs, (r) => (r.stats ? r.stats.walRecords / r.stats.groupCommits : undefined)),
        syncsPerRecord: pick(runs, (r) => (r.stats ? r.stats.walSyncs / r.stats.walRecords : undefined)),
      }
    }
  }
  for (const o of Object.values(results.open)) {
    o.summary = {
      openMs: pick(o.runs, (r) => r.openMs),
      firstGetMs: pick(o.runs, (r) => r.firstGetMs),
      getSyncP50Us: pick(o.runs, (r) => r.getSync?.p50Us),
      getSyncVectorP50Us: pick(o.runs, (r) => r.getSyncVector?.p50Us),
      getSyncP99Us: pick(o.runs, (r) => r.getSync?.p99Us),
      getSyncLoopUs: pick(o.runs, (r) => r.getSync?.loopUs),
      getAsyncP50Us: pick(o.runs, (r) => r.getAsync?.p50Us),
      getAsyncP99Us: pick(o.runs, (r) => r.getAsync?.p99Us),
      layers: o.runs[0]?.getSyncLayers
        ? Object.fromEntries(Object.keys(o.runs[0].getSyncLayers).map((k) => [k, pick(o.runs, (r) => r.getSyncLayers?.[k])]))
        : undefined,
    }
  }
  for (const c of Object.values(results.crash)) {
    c.summary = {
      openMs: pick(c.runs, (r) => r.openMs),
      anonMB: pick(c.runs, (r) => r.anonMB),
      logBytes: pick(c.runs, (r) => r.logBytes),
      replayGBps: pick(c.runs, (r) => (r.logBytes > 0 ? r.logBytes / (r.openMs / 1000) / 1e9 : undefined)),
    }
  }
  results.bigOpen.summary = { openMs: pick(results.bigOpen.runs, (r) => r.openMs) }
  results.mixed.summary = { rate: pick(results.mixed.runs, (r) => r.rate) }
}

try {
  await probeSystems()
  const run = { limits: runLimits, ingest: runIngest, open: runOpen, crash: runCrash, 'big-open': runBigOpen, mixed: runMixed }
  for (const section of SECTIONS) if (params.sections.includes(section)) await run[section]()
} finally {
  rm(root)
}
summaries()
results.seconds = (Date.now() - started) / 1000
mkdirSync(path.dirname(args.out), { recursive: true })
writeFileSync(args.out, `${JSON.stringify(results, null, 2)}\n`)
log(`wrote ${path.relative(process.cwd(), args.out)} (${results.errors.length} errors)`)
if (args.docs && !args['no-docs']) {
  const written = writeReport(results, repoRoot)
  log(`wrote ${written.map((p) => path.relative(process.cwd(), p)).join(', ')}`)
}
