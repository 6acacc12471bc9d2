// After a SIGKILL, every acknowledged write survives with its exact bytes, the one in flight is all-or-nothing, and nothing never written appears; a flipped bit in the log is refused (strict) or skipped and reported (salvage).

import test, { type ExecutionContext } from 'ava'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

import { open, type Durability, type Id } from '../lib/index'
import { exited, onLines, sameBytes, spawnFixture, stderrOf, tempDir } from './helpers'
import { CORRUPT, CRASH, vectorFor } from './fixtures/vectors'

/** One operation as the writer announced it. */
interface Op {
  n: number
  op: 'u' | 'd'
  ids: Id[]
  seeds: number[]
}

/** What the collection should hold: id key -> the seed of the vector stored under it. */
type Model = Map<string, { id: Id; seed: number }>

const keyOf = (id: Id): string => `${typeof id}:${id}`

function apply(model: Model, op: Op): Model {
  const next = new Map(model)
  op.ids.forEach((id, i) => {
    if (op.op === 'u') next.set(keyOf(id), { id, seed: op.seeds[i] as number })
    else next.delete(keyOf(id))
  })
  return next
}

/** Every id the writer can use. */
const UNIVERSE: Id[] = Array.from({ length: CRASH.idsPerKind }, (_, n) => [n, `s${n}`]).flat()

interface ChildRun {
  issued: Op[]
  /** Acknowledged operations with what they resolved to (for deletes: how many existed). */
  acked: { op: Op; result: number }[]
}

interface RunOptions {
  durability: Durability
  acksBeforeKill: number
  rngSeed: number
  seedBase: number
  thresholdBytes: number
  ackEarly?: boolean
}

/** Runs the crash writer until it has acknowledged `acksBeforeKill` operations, then SIGKILLs it. */
async function runUntilKilled(t: ExecutionContext, dir: string, o: RunOptions): Promise<ChildRun> {
  const args = [dir, o.durability, String(o.rngSeed), String(o.seedBase), String(o.thresholdBytes)]
  const child = spawnFixture('crash-writer.ts', o.ackEarly === true ? [...args, '--ack-early'] : args)
  const stderr = stderrOf(child)
  const run: ChildRun = { issued: [], acked: [] }
  onLines(child, (line) => {
    if (line.startsWith('I ')) run.issued.push(JSON.parse(line.slice(2)) as Op)
    if (line.startsWith('A ')) {
      const [n, result] = line.slice(2).split(' ').map(Number)
      const op = run.issued.find((candidate) => candidate.n === n)
      if (op === undefined) throw new Error(`ack of an operation never issued: ${line}`)
      run.acked.push({ op, result: result as number })
      if (run.acked.length === o.acksBeforeKill) child.kill('SIGKILL')
    }
  })
  t.teardown(() => child.kill('SIGKILL'))
  const { signal } = await exited(child)
  if (signal !== 'SIGKILL') throw new Error(`crash writer ended on its own (${signal}): ${stderr()}`)
  return run
}

/** Differences between `expected` and what the reopened database holds, as readable lines. */
async function differences(dir: string, durability: Durability, expected: Model): Promise<{ problems: string[]; replayed: number }> {
  const db = await open(dir, { durability })
  try {
    const col = db.collection(CRASH.collection)
    const stats = col.stats()
    const problems: string[] = []
    if (stats.corruptRecordsSkipped !== 0) problems.push(`${stats.corruptRecordsSkipped} corrupt records skipped`)
    if (stats.count !== expected.size) problems.push(`count ${stats.count}, expected ${expected.size}`)
    for (const id of UNIVERSE) {
      const want = expected.get(keyOf(id))
      const got = col.getSync(id)
      if (want === undefined && got !== null) problems.push(`${keyOf(id)} present, expected absent`)
      if (want !== undefined && got === null) problems.push(`${keyOf(id)} absent, expected seed ${want.seed}`)
      if (want !== undefined && got !== null && !sameBytes(got.vector, vectorFor(want.seed, CRASH.dimension))) {
        problems.push(`${keyOf(id)} holds other bytes than seed ${want.seed}`)
      }
    }
    return { problems, replayed: stats.recordsReplayed }
  } finally {
    await db.close()
  }
}

/**
 * Checks a killed run against `before` (the state the run started from) and returns the state
 * the database is in now: every acknowledged operation applied, plus the one in flight if it
 * made it (all of it or none of it).
 */
async function verifyRun(t: ExecutionContext, dir: string, durability: Durability, before: Model, run: ChildRun): Promise<Model> {
  let model = before
  for (const { op, result } of run.acked) {
    if (op.op === 'd') {
      const existed = op.ids.filter((id) => model.has(keyOf(id))).length
      t.is(result, existed, `delete #${op.n} resolved to ${result}, ${existed} of its ids existed`)
    }
    model = apply(model, op)
  }
  const last = run.issued.at(-1)
  const inFlight = last !== undefined && !run.acked.some(({ op }) => op.n === last.n) ? last : undefined
  const without = await differences(dir, durability, model)
  if (without.problems.length === 0 || inFlight === undefined) {
    t.deepEqual(without.problems, [], `state after ${run.acked.length} acknowledged operations`)
    t.log(`${durability}: ${run.acked.length} acked, in flight: none or not applied, ${without.replayed} log records replayed`)
    return model
  }
  const withInFlight = apply(model, inFlight)
  const withOne = await differences(dir, durability, withInFlight)
  t.deepEqual(withOne.problems, [], `neither without (${without.problems.join('; ')}) nor with the in-flight #${inFlight.n}`)
  t.log(`${durability}: ${run.acked.length} acked, in-flight #${inFlight.n} applied, ${without.replayed} log records replayed`)
  return withInFlight
}

const randomInt = (min: number, max: number): number => min + Math.floor(Math.random() * (max - min + 1))

for (const durability of ['fsync', 'flush'] as const) {
  test.serial(`${durability}: acknowledged writes survive SIGKILL, four kill/reopen/write cycles`, async (t) => {
    const dir = tempDir(t, `keeldb-crash-${durability}-`)
    let model: Model = new Map()
    for (let cycle = 0; cycle < 4; cycle++) {
      const o: RunOptions = {
        durability,
        acksBeforeKill: randomInt(20, 400),
        rngSeed: randomInt(1, 2 ** 31),
        seedBase: cycle * 1_000_000,
        // Small, so that checkpoints (and crashes around them) happen during the load.
        thresholdBytes: 16 * 1024,
      }
      t.log(`cycle ${cycle}: ${JSON.stringify(o)}`)
      const run = await runUntilKilled(t, dir, o)
      t.true(run.acked.length >= o.acksBeforeKill)
      model = await verifyRun(t, dir, durability, model, run)
    }
  })
}

test.serial('the check catches lost acknowledged writes (negative control: acks printed before durability "none" writes resolve)', async (t) => {
  const dir = tempDir(t, 'keeldb-crash-control-')
  const run = await runUntilKilled(t, dir, {
    durability: 'none',
    acksBeforeKill: 50,
    rngSeed: 7,
    seedBase: 0,
    thresholdBytes: 64 << 20,
    ackEarly: true,
  })
  let model: Model = new Map()
  for (const { op } of run.acked) model = apply(model, op)
  const { problems } = await differences(dir, 'none', model)
  t.true(problems.length > 0, 'a planted bug (acknowledging buffered writes) went unnoticed')
})

/** Offsets and body lengths of the records of a log image (32-byte file header, then frames of a 24-byte header starting "KREC", the body and a 4-byte CRC). */
function logRecords(image: Buffer): { offset: number; bodyBytes: number }[] {
  const records = []
  let offset = 32
  while (offset + 24 <= image.length && image.toString('latin1', offset, offset + 4) === 'KREC') {
    const bodyBytes = image.readUInt32LE(offset + 8)
    records.push({ offset, bodyBytes })
    offset += 24 + bodyBytes + 4
  }
  return records
}

test.serial('a flipped bit mid-log: strict refuses with KEEL_CORRUPT, salvage skips one record, warns, keeps the rest', async (t) => {
  const dir = tempDir(t, 'keeldb-corrupt-')
  const child = spawnFixture('corrupt-writer.ts', [dir])
  const stderr = stderrOf(child)
  t.teardown(() => child.kill('SIGKILL'))
  onLines(child, (line) => {
    if (line === 'done') child.kill('SIGKILL')
  })
  const { signal } = await exited(child)
  t.is(signal, 'SIGKILL', stderr())

  const walPath = join(dir, CORRUPT.collection, 'vectors.wal')
  const image = readFileSync(walPath)
  const records = logRecords(image)
  t.is(records.length, CORRUPT.batches, 'one log record per batch, none checkpointed away')
  const middle = records[Math.floor(CORRUPT.batches / 2)] as { offset: number; bodyBytes: number }
  const flipAt = middle.offset + 24 + Math.floor(middle.bodyBytes / 2)
  image.writeUInt8(image.readUInt8(flipAt) ^ 0x10, flipAt)
  writeFileSync(walPath, image)

  await t.throwsAsync(open(dir, { recovery: 'strict' }), { code: 'KEEL_CORRUPT' })
  t.true(readFileSync(walPath).equals(image), 'a refused open leaves the log as it was')

  const warnings: Error[] = []
  const onWarning = (w: Error): void => {
    warnings.push(w)
  }
  process.on('warning', onWarning)
  t.teardown(() => process.off('warning', onWarning))
  const db = await open(dir, { recovery: 'salvage' })
  await new Promise((resolve) => setImmediate(resolve)) // warnings are emitted on the next tick
  const col = db.collection(CORRUPT.collection)
  t.is(col.stats().corruptRecordsSkipped, 1)
  const warning = warnings.find((w) => (w as Error & { code?: string }).code === 'KEEL_CORRUPT_RECORDS_SKIPPED')
  t.truthy(warning, 'a KEEL_CORRUPT_RECORDS_SKIPPED warning was emitted')
  t.regex(warning?.message ?? '', /'c'.*\b1\b/)

  const damagedBatch = Math.floor(CORRUPT.batches / 2)
  for (let b = 0; b < CORRUPT.batches; b++) {
    for (let i = 0; i < CORRUPT.records; i++) {
      const got = col.getSync(`b${b}-${i}`)
      if (b === damagedBatch) {
        t.is(got, null, `b${b}-${i} was in the damaged record`)
      } else {
        t.true(got !== null && sameBytes(got.vector, vectorFor(b * CORRUPT.records + i, CORRUPT.dimension)), `b${b}-${i} kept`)
      }
    }
  }
  t.is(col.stats().count, (CORRUPT.batches - 1) * CORRUPT.records)
  await db.close()
})
