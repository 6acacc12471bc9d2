// After a SIGKILL, every acknowledged write survives with its exact bytes, the one in flight is all-or-nothing, and nothing never written appears; a flipped bit in the log is refused (strict) or skipped and reported (salvage).

import test from 'ava'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

import { open } from '../lib/index'
import { exited, onLines, sameBytes, spawnFixture, stderrOf, tempDir } from './helpers'
import { apply, checkRun, differences, runUntilKilled, type Model, type RunOptions } from './fixtures/crash-check'
import { CORRUPT, vectorFor } from './fixtures/vectors'

const randomInt = (min: number, max: number): number => min + Math.floor(Math.random() * (max - min + 1))

for (const durability of ['fsync', 'flush'] as const) {
  test.serial(`${durability}: acknowledged writes survive SIGKILL, four kill/reopen/write cycles`, async (t) => {
    const dir = tempDir(t, `keeldb-crash-${durability}-`)
    let model: Model = new Map()
    for (let cycle = 0; cycle < 4; cycle++) {
      const o: RunOptions = {
        durability,
        killAt: { acks: randomInt(20, 400) },
        rngSeed: randomInt(1, 2 ** 31),
        seedBase: cycle * 1_000_000,
        // Small, so that checkpoints (and crashes around them) happen during the load.
        thresholdBytes: 16 * 1024,
        // The last cycle mixes per-call durabilities and the flush() barrier.
        mixed: cycle === 3,
      }
      t.log(`cycle ${cycle}: ${JSON.stringify(o)}`)
      const run = await runUntilKilled(dir, o)
      t.true(run.acked.length >= (o.killAt as { acks: number }).acks)
      const check = await checkRun(dir, durability, model, run)
      t.deepEqual(check.problems, [], `state after ${check.acked} acknowledged operations, in flight applied: ${check.inFlightApplied}`)
      t.is(check.lost, 0)
      t.log(`${durability}: ${check.acked} acked, in-flight applied: ${check.inFlightApplied}, ${check.replayed} log records replayed`)
      model = check.model
    }
  })
}

test.serial('the check catches lost acknowledged writes (negative control: acks printed before durability "none" writes resolve)', async (t) => {
  const dir = tempDir(t, 'keeldb-crash-control-')
  const run = await runUntilKilled(dir, {
    durability: 'none',
    killAt: { acks: 50 },
    rngSeed: 7,
    seedBase: 0,
    thresholdBytes: 64 << 20,
    ackEarly: true,
  })
  let model: Model = new Map()
  for (const { op } of run.acked) model = apply(model, op)
  const { problems } = await differences(dir, 'none', model)
  t.true(problems.length > 0, 'a planted bug (acknowledging buffered writes) went unnoticed')
  const check = await checkRun(dir, 'none', new Map(), run)
  t.true(check.lost > 0, 'the lost acknowledged operations are counted')
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
