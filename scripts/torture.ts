// `npm run torture`: SIGKILL torture of the built package, as long as asked.
//
// For each durability mode under test, one database directory goes through cycles of: start
// a writer child process (upserts single and batched, deletes, re-upserts of the same ids,
// optionally a random per-call durability and the flush() barrier), kill it with SIGKILL at a
// random moment (after it is ready, or counted from its start so that it can land while it
// opens and recovers), reopen the directory and check every id against the model of the
// acknowledged operations: each acknowledged write present with the exact bytes of its latest
// acknowledged version, each acknowledged delete absent, the one operation in flight all or
// nothing, and no id or version that nothing acknowledged explains.
//
//   npm run torture -- [--seconds N | --cycles N] [--modes fsync,flush] [--seed S] [--keep]
//
// --seconds is the total across modes (default 60); --cycles is per mode and wins over it.
// The seed fixes every choice of the parent (each child's operation stream, kill delay,
// checkpoint threshold and mixing), one stream per mode; where exactly a kill lands in the
// operation stream still depends on timing.
// Exit status 0 only if nothing was lost. A failing run prints the command that replays its
// seed and keeps its directory.
//
// The shared check is __test__/fixtures/crash-check.ts, which `npm test` also runs (a few
// cycles, in __test__/crash.test.ts).

import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'

import type { Durability } from '../lib/index'
import { checkRun, runUntilKilled, type KillAt, type Model } from '../__test__/fixtures/crash-check'
import { prng } from '../__test__/fixtures/vectors'

const MODES: readonly Durability[] = ['fsync', 'flush']
const THRESHOLDS = [4 << 10, 16 << 10, 256 << 10, 64 << 20]

interface Totals {
  cycles: number
  acked: number
  recovered: number
  lost: number
  phantoms: number
  inFlightApplied: number
  /** Kills that landed before the writer had opened and recovered the database. */
  killedInOpen: number
  replayed: number
  failures: string[]
}

function parse(): { seconds: number; cycles: number | undefined; modes: Durability[]; seed: number; keep: boolean } {
  const { values } = parseArgs({
    options: {
      seconds: { type: 'string' },
      cycles: { type: 'string' },
      modes: { type: 'string', default: MODES.join(',') },
      seed: { type: 'string' },
      keep: { type: 'boolean', default: false },
    },
  })
  const modes = (values.modes ?? '').split(',').filter((m) => m !== '')
  for (const mode of modes) {
    if (!MODES.includes(mode as Durability)) throw new Error(`--modes: '${mode}' is not one of ${MODES.join(', ')} (a 'none' write may be lost by design)`)
  }
  const number = (name: string, value: string | undefined, fallback: number | undefined): number | undefined => {
    if (value === undefined) return fallback
    const n = Number(value)
    if (!Number.isSafeInteger(n) || n < 0) throw new Error(`--${name} must be a non-negative integer, got '${value}'`)
    return n
  }
  return {
    seconds: number('seconds', values.seconds, 60) as number,
    cycles: number('cycles', values.cycles, undefined),
    modes: modes as Durability[],
    seed: number('seed', values.seed, Math.floor(Math.random() * 2 ** 31)) as number,
    keep: values.keep === true,
  }
}

/** The parent's choices for one cycle, all drawn from the run's seeded stream. */
function drawCycle(random: () => number): { killAt: KillAt; rngSeed: number; thresholdBytes: number; mixed: boolean } {
  const rngSeed = 1 + Math.floor(random() * (2 ** 31 - 1))
  const thresholdBytes = THRESHOLDS[Math.floor(random() * THRESHOLDS.length)] as number
  const mixed = random() < 0.5
  const k = random()
  // Mostly shortly after ready (skewed towards small delays), sometimes counted from the
  // spawn, so that the kill can land while the child opens and recovers.
  const killAt: KillAt = k < 0.2 ? { spawnMs: Math.floor(random() * 400) } : { ms: 1 + Math.floor(random() ** 2 * 1500) }
  return { killAt, rngSeed, thresholdBytes, mixed }
}

async function tortureMode(mode: Durability, o: ReturnType<typeof parse>, deadline: number, random: () => number): Promise<Totals> {
  const dir = mkdtempSync(join(tmpdir(), `keeldb-torture-${mode}-`))
  const totals: Totals = { cycles: 0, acked: 0, recovered: 0, lost: 0, phantoms: 0, inFlightApplied: 0, killedInOpen: 0, replayed: 0, failures: [] }
  let model: Model = new Map()
  for (let cycle = 0; o.cycles !== undefined ? cycle < o.cycles : Date.now() < deadline; cycle++) {
    const c = drawCycle(random)
    const run = await runUntilKilled(dir, { durability: mode, seedBase: cycle * 1_000_000, ...c })
    const check = await checkRun(dir, mode, model, run)
    totals.cycles++
    totals.acked += check.acked
    totals.recovered += check.acked - check.lost
    totals.lost += check.lost
    totals.phantoms += check.phantoms
    totals.inFlightApplied += check.inFlightApplied ? 1 : 0
    totals.killedInOpen += run.ready ? 0 : 1
    totals.replayed += check.replayed
    const line = `${mode} cycle ${cycle}: ${JSON.stringify(c)} acked ${check.acked}, lost ${check.lost}, phantoms ${check.phantoms}, in flight applied ${check.inFlightApplied}, replayed ${check.replayed}`
    if (check.problems.length > 0) {
      totals.failures.push(`${line}\n    ${check.problems.slice(0, 10).join('\n    ')}`)
      process.stdout.write(`FAIL ${line}\n`)
      break // the model no longer describes the directory
    }
    if (cycle % 25 === 0) process.stdout.write(`${line}\n`)
    model = check.model
  }
  if (totals.failures.length > 0 || o.keep) process.stdout.write(`${mode}: directory kept at ${dir}\n`)
  else rmSync(dir, { recursive: true, force: true })
  return totals
}

async function main(): Promise<void> {
  const o = parse()
  const started = Date.now()
  process.stdout.write(
    `keeldb torture: seed ${o.seed}, modes ${o.modes.join(',')}, ${o.cycles !== undefined ? `${o.cycles} cycles per mode` : `${o.seconds}s`}, ${new Date(started).toISOString()}\n`,
  )
  const results = new Map<Durability, Totals>()
  for (const [i, mode] of o.modes.entries()) {
    const deadline = started + (o.seconds * 1000 * (i + 1)) / o.modes.length
    // One stream per mode, so that a failing mode replays on its own.
    const random = prng(o.seed + MODES.indexOf(mode))
    results.set(mode, await tortureMode(mode, o, deadline, random))
  }
  const seconds = ((Date.now() - started) / 1000).toFixed(0)
  process.stdout.write(`\nsummary (seed ${o.seed}, ${seconds}s):\n`)
  process.stdout.write('mode   cycles  killed in open  acknowledged  recovered  lost  phantoms  in-flight applied  records replayed\n')
  let failed = false
  for (const [mode, t] of results) {
    process.stdout.write(
      `${mode.padEnd(6)} ${String(t.cycles).padStart(6)}  ${String(t.killedInOpen).padStart(14)}  ${String(t.acked).padStart(12)}  ${String(t.recovered).padStart(9)}  ${String(t.lost).padStart(4)}  ${String(t.phantoms).padStart(8)}  ${String(t.inFlightApplied).padStart(17)}  ${String(t.replayed).padStart(16)}\n`,
    )
    for (const f of t.failures) process.stdout.write(`  ${f}\n`)
    failed ||= t.failures.length > 0 || t.lost > 0 || t.phantoms > 0
  }
  if (failed) {
    for (const [mode, t] of results) {
      if (t.failures.length > 0) process.stdout.write(`FAILED. Replay: npm run torture -- --seed ${o.seed} --modes ${mode} --cycles ${t.cycles}\n`)
    }
    process.exitCode = 1
  } else {
    process.stdout.write('OK: every acknowledged operation recovered, nothing unexplained appeared.\n')
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`torture failed: ${err instanceof Error ? err.stack : String(err)}\n`)
  process.exitCode = 2
})
