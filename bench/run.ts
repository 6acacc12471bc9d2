// `npm run bench`: keeldb's exact search against the memory-bandwidth limit, against
// itself batched, and against usearch's and hnswlib-node's exact (brute-force) search, all
// on the same data in one run. Each system runs in a fresh child process (child.ts), the
// systems interleaved round by round; the results, with the machine and the date, are
// written to docs/BENCHMARKS.md.
//
// Environment (all optional): KEELDB_BENCH_COUNT (100000), KEELDB_BENCH_DIM (768),
// KEELDB_BENCH_ROUNDS (3), KEELDB_BENCH_REPS (3 per child, after a warm-up),
// KEELDB_BENCH_DIR (a fresh directory under the OS temp dir, removed at the end),
// KEELDB_BENCH_OUT (docs/BENCHMARKS.md; '-' prints the report instead).

import { execFileSync, spawn } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { cpus, loadavg, release, tmpdir, totalmem } from 'node:os'
import { join } from 'node:path'

import { open } from '../dist/index.js'
import { fillRandom, nowMs, RECALL_QUERIES, summary, type Config, type Report } from './common'

const root = join(__dirname, '..')
const SYSTEMS = ['memscan', 'keeldb', 'usearch', 'hnswlib-node'] as const
const LOAD_BATCH = 1000
/** float32 multiply-adds per cycle of one core with AVX-512 (Zen 4: one 512-bit FMA). */
const FMA_LANES_PER_CYCLE = 16

function readProc(path: string): string {
  try {
    return readFileSync(path, 'utf8')
  } catch {
    return ''
  }
}

function envInt(name: string, fallback: number): number {
  const raw = process.env[name]
  if (raw === undefined || raw === '') return fallback
  const n = Number(raw)
  if (!Number.isSafeInteger(n) || n < 1) throw new Error(`${name} must be a positive integer, got ${raw}`)
  return n
}

function log(message: string): void {
  process.stderr.write(`[bench] ${message}\n`)
}

/** Writes the data and query files and loads the data into a keeldb collection. */
async function prepare(config: Config): Promise<{ data: Float32Array; queries: Float32Array; loadMs: number }> {
  const { count, dimension } = config
  const data = new Float32Array(count * dimension)
  for (let i = 0; i < count; i++) fillRandom(data.subarray(i * dimension, (i + 1) * dimension), i)
  const queries = new Float32Array(config.queries * dimension)
  for (let q = 0; q < config.queries; q++) fillRandom(queries.subarray(q * dimension, (q + 1) * dimension), 1_000_000_007 + q)
  writeFileSync(join(config.dir, 'data.f32'), new Uint8Array(data.buffer))
  writeFileSync(join(config.dir, 'queries.f32'), new Uint8Array(queries.buffer))
  const start = nowMs()
  const db = await open(join(config.dir, 'db'))
  const c = await db.createCollection('bench', { dimension, metric: 'cosine' })
  await c.reserve(count)
  for (let i = 0; i < count; i += LOAD_BATCH) {
    const records = []
    for (let j = i; j < Math.min(count, i + LOAD_BATCH); j++) {
      records.push({ id: j, vector: data.subarray(j * dimension, (j + 1) * dimension) })
    }
    await c.upsert(records, { durability: 'none' })
  }
  await db.close()
  return { data, queries, loadMs: nowMs() - start }
}

/** The exact top-k ids of the first queries, in float64 (cosine). */
function reference(config: Config, data: Float32Array, queries: Float32Array): number[][] {
  const { count, dimension, k } = config
  const norms = new Float64Array(count)
  for (let i = 0; i < count; i++) {
    let s = 0
    for (let j = i * dimension; j < (i + 1) * dimension; j++) s += (data[j] as number) * (data[j] as number)
    norms[i] = Math.sqrt(s)
  }
  return Array.from({ length: RECALL_QUERIES }, (_, q) => {
    const query = queries.subarray(q * dimension, (q + 1) * dimension)
    let qn = 0
    for (const x of query) qn += x * x
    const distances = new Float64Array(count)
    for (let i = 0; i < count; i++) {
      let dot = 0
      const base = i * dimension
      for (let j = 0; j < dimension; j++) dot += (query[j] as number) * (data[base + j] as number)
      distances[i] = 1 - dot / (Math.sqrt(qn) * (norms[i] as number))
    }
    const order = Array.from({ length: count }, (_, i) => i).sort((a, b) => (distances[a] as number) - (distances[b] as number))
    return order.slice(0, k)
  })
}

function runChild(system: string, config: Config): Promise<Report> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', join(__dirname, 'child.ts'), system, JSON.stringify(config)], {
      cwd: root,
      env: { ...process.env, NODE_OPTIONS: '' },
      stdio: ['ignore', 'pipe', 'inherit'],
    })
    let out = ''
    child.stdout.setEncoding('utf8')
    child.stdout.on('data', (chunk: string) => {
      out += chunk
    })
    child.on('error', reject)
    child.on('close', (code) => {
      if (code !== 0) return reject(new Error(`${system} child exited with ${String(code)}`))
      try {
        resolve(JSON.parse(out.trim().split('\n').pop() ?? '') as Report)
      } catch (err) {
        reject(new Error(`${system} child printed no report: ${String(err)}`))
      }
    })
  })
}

function machine(): string[] {
  const cpuInfo = readProc('/proc/cpuinfo')
  const flags = new Set((/^flags\s*:(.*)$/m.exec(cpuInfo)?.[1] ?? '').trim().split(/\s+/))
  const simd = ['avx2', 'fma', 'avx512f'].filter((f) => flags.has(f)).join(', ') || 'unknown'
  const hypervisor = flags.has('hypervisor') ? ' (virtual machine)' : ''
  const rustc = (() => {
    try {
      return execFileSync('rustc', ['-V'], { encoding: 'utf8' }).trim()
    } catch {
      return 'rustc unknown'
    }
  })()
  return [
    `- CPU: ${cpus()[0]?.model ?? 'unknown'}, ${cpus().length} logical CPUs${hypervisor}; SIMD: ${simd}`,
    `- Memory: ${(totalmem() / 2 ** 30).toFixed(1)} GiB; OS: Linux ${release()}`,
    `- Node.js ${process.version}; ${rustc}; keeldb built with \`napi build --release\``,
  ]
}

function fmt(ms: number): string {
  return ms >= 100 ? ms.toFixed(0) : ms >= 10 ? ms.toFixed(1) : ms.toFixed(2)
}

interface Row {
  label: string
  system: string
  series: string
  /** Divide by this to get a per-query time (the series times this many queries). */
  perQuery: number
}

type Kind = 'wall' | 'cpu'

async function main(): Promise<void> {
  const config: Config = {
    count: envInt('KEELDB_BENCH_COUNT', 100_000),
    dimension: envInt('KEELDB_BENCH_DIM', 768),
    queries: 32,
    k: 10,
    reps: envInt('KEELDB_BENCH_REPS', 3),
    dir: process.env.KEELDB_BENCH_DIR ?? mkdtempSync(join(tmpdir(), 'keeldb-bench-')),
  }
  const rounds = envInt('KEELDB_BENCH_ROUNDS', 3)
  const out = process.env.KEELDB_BENCH_OUT ?? join(root, 'docs', 'BENCHMARKS.md')
  mkdirSync(config.dir, { recursive: true })
  const started = new Date()
  const loadBefore = loadavg()
  try {
    log(`preparing ${config.count} x ${config.dimension} vectors in ${config.dir}`)
    const { data, queries, loadMs } = await prepare(config)
    log(`keeldb load: ${(loadMs / 1000).toFixed(1)} s; computing the float64 reference`)
    const truth = reference(config, data, queries)
    const reports: Report[] = []
    for (let round = 0; round < rounds; round++) {
      // Rotate the order each round, so no system always runs first or last.
      const order = SYSTEMS.map((_, i) => SYSTEMS[(i + round) % SYSTEMS.length] as string)
      for (const system of order) {
        log(`round ${round + 1}/${rounds}: ${system}`)
        reports.push(await runChild(system, config))
      }
    }
    const text = render(config, rounds, reports, truth, loadMs, started, loadBefore, loadavg())
    if (out === '-') process.stdout.write(text)
    else {
      writeFileSync(out, text)
      log(`wrote ${out}`)
      process.stdout.write(text.slice(text.indexOf('## Results')))
    }
  } finally {
    if (process.env.KEELDB_BENCH_DIR === undefined) rmSync(config.dir, { recursive: true, force: true })
  }
}

function render(
  config: Config,
  rounds: number,
  reports: Report[],
  truth: number[][],
  loadMs: number,
  started: Date,
  loadBefore: number[],
  loadAfter: number[],
): string {
  const of = (system: string, series: string, kind: Kind): number[] =>
    reports.filter((r) => r.system === system).flatMap((r) => r.series[series]?.[kind] ?? [])
  /** Ratios a/b of two series timed side by side in the same child, entry by entry. */
  const paired = (system: string, a: string, b: string, kind: Kind): number[] =>
    reports
      .filter((r) => r.system === system)
      .flatMap((r) => (r.series[a]?.[kind] ?? []).map((x, i) => x / ((r.series[b]?.[kind] ?? [])[i] ?? NaN)))
  const med = (values: number[]): number => summary(values).median
  const q = config.queries
  const rows: Row[] = [
    { label: 'plain memory scan of the same bytes (Rust sum of the mapped f32s), one scan', system: 'memscan', series: 'scan the same bytes', perQuery: 1 },
    { label: 'one single query, native `searchSync` (paired with the scan above)', system: 'memscan', series: 'native single query', perQuery: 1 },
    { label: `${q} single queries, \`await search()\` each`, system: 'keeldb', series: 'single query (search)', perQuery: q },
    { label: `${q} single queries, \`searchSync()\` each`, system: 'keeldb', series: 'single query (searchSync)', perQuery: q },
    { label: `${q} queries in one \`searchBatch()\``, system: 'keeldb', series: 'batch (searchBatch)', perQuery: q },
    { label: `${q} single queries, \`exactSearch\`, 1 thread`, system: 'usearch', series: 'single query (1 thread)', perQuery: q },
    { label: `${q} queries in one \`exactSearch\`, 1 thread`, system: 'usearch', series: 'batch (1 thread)', perQuery: q },
    { label: `${q} queries in one \`exactSearch\`, all threads`, system: 'usearch', series: 'batch (all threads)', perQuery: q },
    { label: `${q} single queries, \`BruteforceSearch.searchKnn\``, system: 'hnswlib-node', series: 'single query', perQuery: q },
  ]
  const scanVsSearch = (kind: Kind) => summary(paired('memscan', 'native single query', 'scan the same bytes', kind))
  const batchGain = (kind: Kind) => summary(paired('keeldb', 'single query (search)', 'batch (searchBatch)', kind))
  const perQuery = (system: string, series: string, kind: Kind, n: number): number => med(of(system, series, kind)) / n
  const recall = (system: string): string => {
    const tops = reports.filter((r) => r.system === system).map((r) => r.topIds)
    const values = tops.flatMap((top) => top.map((ids, i) => ids.filter((id) => (truth[i] ?? []).includes(id)).length / config.k))
    return values.length === 0 ? 'n/a' : Math.min(...values).toFixed(3)
  }
  const notes = [
    ...new Set(
      reports.flatMap((r) => r.notes.filter((n) => !n.startsWith('sum ') && !n.startsWith('first search')).map((n) => `${r.system}: ${n}`)),
    ),
  ]
  const firstSearch = reports
    .filter((r) => r.system === 'keeldb')
    .map((r) => Number(/([\d.]+) ms$/.exec(r.notes[0] ?? '')?.[1] ?? NaN))
  const setup = (system: string): string => `${fmt(summary(reports.filter((r) => r.system === system).map((r) => r.setupMs)).median)} ms`
  const x = (v: number): string => `${v.toFixed(2)}x`
  const lines: string[] = []
  lines.push('# Benchmarks', '')
  lines.push('<!-- Generated by `npm run bench` (bench/run.ts). Do not edit by hand: rerun it. -->', '')
  lines.push(
    'Exact k-nearest-neighbour search over the same data by keeldb, usearch and hnswlib-node,',
    'against the time of a plain pass over the same bytes. What the numbers mean, and how they',
    'were taken, is under [Method](#method).',
    '',
  )
  lines.push('## Results', '')
  lines.push(`Run: \`npm run bench\`, ${started.toISOString()}.`, '')
  lines.push(...machine())
  lines.push(
    `- Load average (1, 5, 15 min) before: ${loadBefore.map((v) => v.toFixed(2)).join(', ')}; after: ${loadAfter.map((v) => v.toFixed(2)).join(', ')}, on ${cpus().length} CPUs shared with other work: wall-clock times include waiting for a CPU, so compare ratios, and CPU times (which do not count that wait) next to them.`,
  )
  lines.push(`- Data: ${config.count.toLocaleString('en')} x ${config.dimension} float32 (${((config.count * config.dimension * 4) / 2 ** 20).toFixed(0)} MiB), uniform in [-1, 1), metric cosine, k = ${config.k}, ${q} queries.`)
  lines.push(`- ${rounds} rounds x ${config.reps} repetitions per system (each round a fresh child process per system, systems interleaved), after one warm-up pass per child.`, '')
  lines.push('### Goals', '')
  lines.push('| goal | wall-clock (median) | CPU time (median) | target | met (wall / CPU) |', '|---|---|---|---|---|')
  const sw = scanVsSearch('wall')
  const sc = scanVsSearch('cpu')
  lines.push(
    `| single-query latency / plain memory scan of the same bytes (${sw.count} back-to-back pairs) | **${x(sw.median)}** | **${x(sc.median)}** | at most 1.3x | ${sw.median <= 1.3 ? 'yes' : 'no'} / ${sc.median <= 1.3 ? 'yes' : 'no'} |`,
  )
  const bw = batchGain('wall')
  const bc = batchGain('cpu')
  lines.push(
    `| throughput of ${q} queries batched / ${q} single queries (${bw.count} side-by-side repetitions) | **${x(bw.median)}** (min ${x(bw.min)}, max ${x(bw.max)}) | **${x(bc.median)}** (min ${x(bc.min)}, max ${x(bc.max)}) | at least 6x | ${bw.median >= 6 ? 'yes' : 'no'} / ${bc.median >= 6 ? 'yes' : 'no'} |`,
  )
  // How far batching can go on this CPU: a batch is arithmetic-bound, a lone query
  // memory-bound. This is arithmetic on the measured scan time, not a measurement.
  const mhz = Number(/^cpu MHz\s*:\s*([\d.]+)/m.exec(readProc('/proc/cpuinfo'))?.[1] ?? NaN)
  const fmas = q * config.count * config.dimension
  const floorMs = fmas / FMA_LANES_PER_CYCLE / (mhz * 1e3)
  const scanCpu = med(of('memscan', 'scan the same bytes', 'cpu'))
  lines.push('')
  lines.push(
    `Bound on the batch gain: ${q} x ${config.count.toLocaleString('en')} x ${config.dimension} = ${(fmas / 1e9).toFixed(2)} G float32 multiply-adds per batch. At ${FMA_LANES_PER_CYCLE} per cycle (one 512-bit FMA per cycle, as on Zen 4) and the nominal ${mhz.toFixed(0)} MHz in /proc/cpuinfo, that is about ${fmt(floorMs)} ms of arithmetic (less if the core runs faster than nominal), against ${fmt(scanCpu)} ms of CPU per memory-bound pass (the median scan above). So ${q} single queries take at most roughly ${x((q * scanCpu) / floorMs)} the time of one batch on this CPU, unless the batch does fewer or cheaper operations (several threads, or lower-precision arithmetic with exact re-ranking).`,
  )
  const publicSingle = perQuery('keeldb', 'single query (search)', 'wall', q)
  const scanWall = med(of('memscan', 'scan the same bytes', 'wall'))
  lines.push('')
  lines.push(
    `Through the public API (\`await search()\`, other child processes): ${fmt(publicSingle)} ms per query against ${fmt(scanWall)} ms per scan, ${x(publicSingle / scanWall)} (not paired, so noisier).`,
    '',
  )
  lines.push('### Times', '')
  lines.push('| system | workload | wall median ms | wall min ms | wall max ms | CPU median ms | wall median ms per query |', '|---|---|---|---|---|---|---|')
  for (const row of rows) {
    const wall = of(row.system, row.series, 'wall')
    if (wall.length === 0) continue
    const s = summary(wall)
    const cpu = summary(of(row.system, row.series, 'cpu'))
    lines.push(`| ${row.system} | ${row.label} | ${fmt(s.median)} | ${fmt(s.min)} | ${fmt(s.max)} | ${fmt(cpu.median)} | ${fmt(s.median / row.perQuery)} |`)
  }
  lines.push('')
  lines.push('### Against the others (medians)', '')
  lines.push('| comparison | wall-clock | CPU time |', '|---|---|---|')
  const ratio = (a: [string, string, number], b: [string, string, number], kind: Kind): string =>
    x(perQuery(a[0], a[1], kind, a[2]) / perQuery(b[0], b[1], kind, b[2]))
  const keelSingle: [string, string, number] = ['keeldb', 'single query (search)', q]
  const keelBatch: [string, string, number] = ['keeldb', 'batch (searchBatch)', q]
  const compare: [string, [string, string, number], [string, string, number]][] = [
    ['usearch exact single query (1 thread) / keeldb single query', ['usearch', 'single query (1 thread)', q], keelSingle],
    [`usearch exact batch of ${q} (1 thread) / keeldb batch of ${q}`, ['usearch', 'batch (1 thread)', q], keelBatch],
    [`usearch exact batch of ${q} (all threads) / keeldb batch of ${q} (1 thread)`, ['usearch', 'batch (all threads)', q], keelBatch],
    ['hnswlib-node brute-force single query / keeldb single query', ['hnswlib-node', 'single query', q], keelSingle],
  ]
  for (const [label, a, b] of compare) lines.push(`| ${label} | ${ratio(a, b, 'wall')} | ${ratio(a, b, 'cpu')} |`)
  lines.push('')
  lines.push('A ratio above 1 means keeldb took less time. CPU time counts every thread of the process.', '')
  lines.push('### Recall and setup', '')
  lines.push(`Recall@${config.k} of the first ${RECALL_QUERIES} queries against a float64 reference computed by the script (lowest over all children):`, '')
  lines.push('| system | recall | setup per child (median) |', '|---|---|---|')
  for (const system of SYSTEMS) lines.push(`| ${system} | ${system === 'memscan' ? 'n/a' : recall(system)} | ${setup(system)} |`)
  lines.push('')
  lines.push(
    `keeldb's load of the data (${(config.count / LOAD_BATCH).toFixed(0)} upserts of ${LOAD_BATCH} records, durability 'none', then close): ${(loadMs / 1000).toFixed(1)} s. Its first search after each open, which computes the cosine inverse norms, took ${fmt(summary(firstSearch).median)} ms (median).`,
    '',
  )
  if (notes.length > 0) lines.push('Notes from the children:', '', ...notes.map((n) => `- ${n}`), '')
  lines.push(METHOD)
  return `${lines.join('\n')}\n`
}

const METHOD = `## Method

- **One run, same data.** \`bench/run.ts\` generates the vectors (seeded, so every run has
  the same data), writes them to a raw file, loads them into a keeldb collection, and
  computes a float64 reference for the recall check. Then, for each round, it starts one
  fresh child process (\`bench/child.ts\`) per system, rotating the order each round. A
  child gets ready (maps or reads the data, builds its structure: "setup"), runs every
  workload once as a warm-up (page faults, JIT, keeldb's lazily built cosine norms), then
  times the workloads in turn, repetition by repetition.
- **The limit.** "Plain memory scan" sums every float of the collection's mapped slots in
  Rust (\`Collection::memory_scan_for_bench\`: the same bytes, the same mapping, one
  thread, sixteen partial sums the compiler vectorises). Nothing that reads every byte
  once can be faster, so it is the fair floor for one exact query. A JavaScript loop over
  a Float32Array would be slower than memory and flatter keeldb. The goal's ratio pairs
  each scan with one single-query search through the native handle (\`searchSync\`, the
  same core call as the public API, on the same thread), back to back, 32 pairs per
  repetition, so both sides of each ratio see the same machine load.
- **Single vs batch.** "32 single queries" awaits \`search()\` 32 times in a row;
  "batched" answers the same 32 queries with one \`searchBatch()\`. The throughput ratio is
  taken per repetition, from the two workloads timed side by side in the same child, then
  the median is reported.
- **The others.** usearch: \`exactSearch\`, its brute-force path, which uses the SIMD
  kernels of its bundled NumKong library (by the author of SimSIMD), over a Float32Array
  in the JS heap, metric \`cos\`, with 1 thread (keeldb scans with one) and with all
  threads. hnswlib-node: a \`BruteforceSearch\` index in space \`cosine\` (it normalises
  at insertion and ranks by inner product), one \`searchKnn\` per query; it has no batch
  call. usearch was installed from the prebuilt binary its npm package ships (nothing is
  downloaded at install); hnswlib-node was compiled from source by node-gyp with its
  default flags, as \`npm install\` does.
- **Noise.** The machine is shared with other builds; each row reports median, min and
  max, the goals are ratios of times measured side by side, and every time is given both
  as wall-clock time and as the process's CPU time (\`process.cpuUsage\`, all threads),
  which waiting for a CPU does not inflate.
`

main().catch((err: unknown) => {
  console.error(err)
  process.exit(1)
})
