// After a SIGKILL amid upserts with and without payloads, deletes, payload replacements and merges (with checkpoints and compactions running), every acknowledged record is there with its vector and payload from the same write, the one in flight is all or nothing, and no record is half there.

import test, { type ExecutionContext } from 'ava'
import { isDeepStrictEqual } from 'node:util'

import { open, type Durability, type Id } from '../lib/index'
import { exited, onLines, sameBytes, spawnFixture, stderrOf, tempDir } from './helpers'
import { CRASH_PAYLOADS, patchFor, payloadFor, vectorFor } from './fixtures/vectors'

/** One operation as the writer announced it. */
interface Op {
  n: number
  op: 'u' | 'd' | 'p' | 'm'
  ids: Id[]
  seeds: number[]
  flags: boolean[]
}

/** A record as the model has it: its vector's seed and its payload (null: none). */
interface Held {
  id: Id
  seed: number
  payload: unknown
}

type Model = Map<string, Held>

const keyOf = (id: Id): string => `${typeof id}:${id}`

/** The model after `op`, and what `op` should have resolved to (deletes: how many existed; payload writes: 1 if the record existed). */
function apply(model: Model, op: Op): { next: Model; result: number } {
  const next = new Map(model)
  const [first] = op.ids
  const held = first === undefined ? undefined : next.get(keyOf(first))
  switch (op.op) {
    case 'u':
      op.ids.forEach((id, i) => {
        const seed = op.seeds[i] as number
        next.set(keyOf(id), { id, seed, payload: op.flags[i] === true ? payloadFor(seed) : null })
      })
      return { next, result: 0 }
    case 'd': {
      const existed = op.ids.filter((id) => next.delete(keyOf(id))).length
      return { next, result: existed }
    }
    case 'p':
      if (held === undefined) return { next, result: 0 }
      next.set(keyOf(held.id), { ...held, payload: op.flags[0] === true ? payloadFor(op.seeds[0] as number) : null })
      return { next, result: 1 }
    case 'm':
      if (held === undefined) return { next, result: 0 }
      next.set(keyOf(held.id), { ...held, payload: { ...(held.payload as object | null), ...patchFor(op.seeds[0] as number) } })
      return { next, result: 1 }
  }
}

const UNIVERSE: Id[] = Array.from({ length: CRASH_PAYLOADS.idsPerKind }, (_, n) => [n, `s${n}`]).flat()

interface ChildRun {
  issued: Op[]
  acked: { op: Op; result: number }[]
}

/** Runs the writer until `killAfter` says its latest acknowledged operation is the last, then SIGKILLs it. */
async function runUntilKilled(t: ExecutionContext, dir: string, args: string[], killAfter: (op: Op, acks: number) => boolean): Promise<ChildRun> {
  const child = spawnFixture('crash-payload-writer.ts', [dir, ...args])
  const stderr = stderrOf(child)
  const run: ChildRun = { issued: [], acked: [] }
  onLines(child, (line) => {
    if (line.startsWith('I ')) run.issued.push(JSON.parse(line.slice(2)) as Op)
    if (line.startsWith('A ')) {
      const [n, result] = line.slice(2).split(' ').map(Number)
      const op = run.issued.find((candidate) => candidate.n === n)
      if (op === undefined) throw new Error(`ack of an operation never issued: ${line}`)
      run.acked.push({ op, result: result as number })
      if (killAfter(op, run.acked.length)) child.kill('SIGKILL')
    }
  })
  t.teardown(() => child.kill('SIGKILL'))
  const { signal } = await exited(child)
  if (signal !== 'SIGKILL') throw new Error(`payload crash writer ended on its own (${signal}): ${stderr()}`)
  return run
}

/** Every way the reopened collection differs from `expected`, one line each. */
async function differences(dir: string, expected: Model): Promise<{ problems: string[]; generation: number }> {
  const db = await open(dir)
  try {
    const col = db.collection(CRASH_PAYLOADS.collection)
    const stats = col.stats()
    const problems: string[] = []
    if (stats.corruptRecordsSkipped !== 0) problems.push(`${stats.corruptRecordsSkipped} corrupt records skipped`)
    if (stats.count !== expected.size) problems.push(`count ${stats.count}, expected ${expected.size}`)
    const got = await col.getMany(UNIVERSE)
    UNIVERSE.forEach((id, i) => {
      const want = expected.get(keyOf(id))
      const record = got[i] ?? null
      if (want === undefined && record !== null) problems.push(`${keyOf(id)} present, expected absent`)
      if (want !== undefined && record === null) problems.push(`${keyOf(id)} absent, expected seed ${want.seed}`)
      if (want === undefined || record === null) return
      if (!sameBytes(record.vector, vectorFor(want.seed, CRASH_PAYLOADS.dimension))) problems.push(`${keyOf(id)}: vector is not seed ${want.seed}'s`)
      if (!isDeepStrictEqual(record.payload, want.payload)) {
        problems.push(`${keyOf(id)}: payload ${JSON.stringify(record.payload)}, expected ${JSON.stringify(want.payload)}`)
      }
    })
    return { problems, generation: stats.payloadLogGeneration }
  } finally {
    await db.close()
  }
}

/** Checks a killed run against `before` and returns the state the database is in now. */
async function verifyRun(t: ExecutionContext, dir: string, before: Model, run: ChildRun): Promise<{ model: Model; generation: number }> {
  let model = before
  for (const { op, result } of run.acked) {
    const applied = apply(model, op)
    t.is(result, applied.result, `#${op.n} (${op.op}) resolved to ${result}, expected ${applied.result}`)
    model = applied.next
  }
  const last = run.issued.at(-1)
  const inFlight = last !== undefined && !run.acked.some(({ op }) => op.n === last.n) ? last : undefined
  const without = await differences(dir, model)
  if (without.problems.length === 0 || inFlight === undefined) {
    t.deepEqual(without.problems, [], `state after ${run.acked.length} acknowledged operations`)
    return { model, generation: without.generation }
  }
  const withInFlight = apply(model, inFlight).next
  const withOne = await differences(dir, withInFlight)
  t.deepEqual(withOne.problems, [], `neither without (${without.problems.slice(0, 5).join('; ')}) nor with the in-flight #${inFlight.n}`)
  return { model: withInFlight, generation: withOne.generation }
}

const randomInt = (min: number, max: number): number => min + Math.floor(Math.random() * (max - min + 1))

for (const durability of ['fsync', 'flush'] as const satisfies readonly Durability[]) {
  test.serial(`${durability}: records with payloads survive SIGKILL whole, four kill/reopen/write cycles`, async (t) => {
    const dir = tempDir(t, `keeldb-crash-payloads-${durability}-`)
    let model: Model = new Map()
    let generation = 1
    for (let cycle = 0; cycle < 4; cycle++) {
      const acks = randomInt(100, 600)
      // Small thresholds, so that checkpoints and compactions (and kills amid them) happen.
      const args = [durability, String(randomInt(1, 2 ** 31)), String(cycle * 1_000_000), String(16 * 1024), String(8 * 1024)]
      t.log(`cycle ${cycle}: ${acks} acks, args ${args.join(' ')}`)
      const run = await runUntilKilled(t, dir, args, (_, n) => n === acks)
      const checked = await verifyRun(t, dir, model, run)
      model = checked.model
      generation = checked.generation
    }
    t.log(`payload log generation ${generation} after four cycles`)
    t.true(generation > 1, 'no compaction ran: the test did not exercise it')
  })
}

test.serial('the check catches half records (negative control: vectors and payloads written as two writes)', async (t) => {
  const dir = tempDir(t, 'keeldb-crash-payloads-control-')
  const args = ['fsync', '11', '0', String(64 << 20), String(64 << 20), '--two-writes']
  // Killed in the 200 ms between an upsert's two writes, once it carried a payload.
  const run = await runUntilKilled(t, dir, args, (op, n) => n >= 20 && op.op === 'u' && op.flags.includes(true))
  let model: Model = new Map()
  for (const { op } of run.acked) model = apply(model, op).next
  const { problems } = await differences(dir, model)
  t.log(problems.join('\n'))
  t.true(problems.some((p) => /payload null, expected \{/.test(p)), 'a planted half record went unnoticed')
})
