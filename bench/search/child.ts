// One system, in its own process: gets ready, warms up, then times `reps` repetitions of
// each workload and prints one JSON report on stdout. Started by run.ts.

import { join } from 'node:path'

import { cpuMs, nowMs, readFloats, RECALL_QUERIES, type Config, type Report } from './common'

type Workloads = Record<string, () => Promise<void> | void>

function record(report: Report, name: string, wall: number, cpu: number): void {
  const times = (report.series[name] ??= { wall: [], cpu: [] })
  times.wall.push(wall)
  times.cpu.push(cpu)
}

async function measure(report: Report, reps: number, workloads: Workloads): Promise<void> {
  // One warm-up pass of everything (page faults, lazily built structures, JIT), then the
  // repetitions, interleaving the workloads so that drifting machine load hits them alike.
  for (const run of Object.values(workloads)) await run()
  for (let rep = 0; rep < reps; rep++) {
    for (const [name, run] of Object.entries(workloads)) {
      const wall = nowMs()
      const cpu = cpuMs()
      await run()
      record(report, name, nowMs() - wall, cpuMs() - cpu)
    }
  }
}

function queryList(queries: Float32Array, config: Config): Float32Array[] {
  return Array.from({ length: config.queries }, (_, q) => queries.subarray(q * config.dimension, (q + 1) * config.dimension))
}

/**
 * The memory-bandwidth limit, paired with keeldb's scan: each repetition alternates a plain
 * sum of the mapped bytes with one native single-query search, 32 times, both on this
 * thread, so each pair runs back to back under the same machine load.
 */
async function memscan(config: Config, report: Report, queries: Float32Array): Promise<void> {
  // The native handle directly: the public API does not expose the benchmark hook.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const native = require('../../index.js') as typeof import('../../index.js')
  const start = nowMs()
  const db = await native.openDb(join(config.dir, 'db'), 'fsync', 'salvage', {})
  const c = db.collection('bench')
  report.setupMs = nowMs() - start
  const list = queryList(queries, config)
  let sink = 0
  const pair = (time: boolean): void => {
    for (const q of list) {
      let wall = nowMs()
      let cpu = cpuMs()
      sink += c.memoryScanForBench()
      if (time) record(report, 'scan the same bytes', nowMs() - wall, cpuMs() - cpu)
      wall = nowMs()
      cpu = cpuMs()
      c.searchSync(q, config.k, undefined, false, false)
      if (time) record(report, 'native single query', nowMs() - wall, cpuMs() - cpu)
    }
  }
  pair(false)
  for (let rep = 0; rep < config.reps; rep++) pair(true)
  report.notes.push(`sum ${sink.toExponential(3)} (keeps the scan from being optimised away)`)
  await db.close()
}

async function keeldb(config: Config, report: Report, queries: Float32Array): Promise<void> {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { open } = require('../../dist/index.js') as typeof import('../../dist/index.js')
  const start = nowMs()
  const db = await open(join(config.dir, 'db'))
  const c = db.collection('bench')
  report.setupMs = nowMs() - start
  const list = queryList(queries, config)
  const k = config.k
  const first = nowMs()
  const top = await c.searchBatch(list.slice(0, RECALL_QUERIES), { k })
  report.notes.push(`first search after open (builds the cosine inverse norms): ${(nowMs() - first).toFixed(1)} ms`)
  report.topIds = top.map((hits) => hits.map((h) => Number(h.id)))
  await measure(report, config.reps, {
    'single query (search)': async () => {
      for (const q of list) await c.search(q, { k })
    },
    'single query (searchSync)': () => {
      for (const q of list) c.searchSync(q, { k })
    },
    'batch (searchBatch)': async () => {
      await c.searchBatch(queries, { k })
    },
  })
  await db.close()
}

async function usearch(config: Config, report: Report, queries: Float32Array): Promise<void> {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { exactSearch, MetricKind } = require('usearch') as typeof import('usearch')
  const start = nowMs()
  const data = readFloats(join(config.dir, 'data.f32'), config.count * config.dimension)
  report.setupMs = nowMs() - start
  const { dimension, k } = config
  const list = queryList(queries, config)
  const top = exactSearch(data, queries.subarray(0, RECALL_QUERIES * dimension), dimension, k, MetricKind.Cos, 1)
  report.topIds = Array.from({ length: RECALL_QUERIES }, (_, q) => Array.from(top.keys.subarray(q * k, (q + 1) * k), Number))
  report.notes.push('exactSearch over a Float32Array in the JS heap, metric cos')
  await measure(report, config.reps, {
    'single query (1 thread)': () => {
      for (const q of list) exactSearch(data, q, dimension, k, MetricKind.Cos, 1)
    },
    'batch (1 thread)': () => {
      exactSearch(data, queries, dimension, k, MetricKind.Cos, 1)
    },
    'batch (all threads)': () => {
      exactSearch(data, queries, dimension, k, MetricKind.Cos, 0)
    },
  })
}

async function hnswlib(config: Config, report: Report, queries: Float32Array): Promise<void> {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { BruteforceSearch } = require('hnswlib-node') as typeof import('hnswlib-node')
  const { dimension, count, k } = config
  const start = nowMs()
  const data = readFloats(join(config.dir, 'data.f32'), count * dimension)
  const index = new BruteforceSearch('cosine', dimension)
  index.initIndex(count)
  for (let i = 0; i < count; i++) index.addPoint(Array.from(data.subarray(i * dimension, (i + 1) * dimension)), i)
  report.setupMs = nowMs() - start
  const list = queryList(queries, config).map((q) => Array.from(q))
  report.topIds = list.slice(0, RECALL_QUERIES).map((q) => {
    const { neighbors, distances } = index.searchKnn(q, k)
    // searchKnn does not promise an order: sort by distance.
    return neighbors.map((id, i) => ({ id, d: distances[i] as number })).sort((a, b) => a.d - b.d).map((x) => x.id)
  })
  report.notes.push(`BruteforceSearch, space cosine; setup converts and adds ${count} number[] points`)
  await measure(report, config.reps, {
    'single query': () => {
      for (const q of list) index.searchKnn(q, k)
    },
  })
}

async function main(): Promise<void> {
  const [system, configJson] = process.argv.slice(2)
  const config = JSON.parse(configJson ?? '{}') as Config
  const report: Report = { system: system ?? '?', setupMs: 0, series: {}, topIds: [], notes: [] }
  const queries = readFloats(join(config.dir, 'queries.f32'), config.queries * config.dimension)
  switch (system) {
    case 'memscan':
      await memscan(config, report, queries)
      break
    case 'keeldb':
      await keeldb(config, report, queries)
      break
    case 'usearch':
      await usearch(config, report, queries)
      break
    case 'hnswlib-node':
      await hnswlib(config, report, queries)
      break
    default:
      throw new Error(`unknown system ${String(system)}`)
  }
  process.stdout.write(`${JSON.stringify(report)}\n`)
}

main().catch((err: unknown) => {
  console.error(err)
  process.exit(1)
})
