// Where a keeldb ingest run's CPU goes, per thread (not part of `npm run bench`): runs one
// ingest workload in this process and prints records/s with the CPU time per record of the
// JS thread, keeldb's threads (the committer) and the rest, from /proc/self/task/TID/stat;
// the committer's time per group by step and how many writes already waited when each group
// ended (from `stats()`); the machine's disk writes meanwhile; then the CPU time one write() +
// fdatasync of a group's bytes costs this process.
// On a machine with few cores, the sum per record, not either thread alone, sets the rate.
//
//   node bench/ingest/threads.mjs [durability=fsync] [inFlight=64] [records=200000] [payloads=yes|no]
//
// With `no`, records are written without their payload: the share of a record's cost that is
// its JSON payload (checked, serialized and stored) on each thread.

import { closeSync, fdatasyncSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeSync } from 'node:fs'
import { createRequire } from 'node:module'
import os from 'node:os'
import path from 'node:path'
import { logRecordBytes, makePool, record } from '../lib/data.mjs'

const [durability = 'fsync', inFlightArg = '64', recordsArg = '200000', payloadsArg = 'yes'] = process.argv.slice(2)
const payloads = payloadsArg !== 'no'
const inFlight = Number(inFlightArg)
const maxRecords = Number(recordsArg)
const keeldb = createRequire(import.meta.url)('../../dist/index.js')
const work = mkdtempSync(path.join(os.tmpdir(), 'keeldb-threads-'))
const TICK_US = 1e6 / 100 // /proc stat times are in clock ticks (USER_HZ, 100 on Linux)

/** Bytes written so far by the machine's disks (each /sys/block/DEV/stat; loop and zram devices left out). */
function diskBytesWritten() {
  let sectors = 0
  for (const dev of readdirSync('/sys/block')) {
    if (/^(loop|zram|ram)/.test(dev)) continue
    const fields = readFileSync(`/sys/block/${dev}/stat`, 'utf8').trim().split(/\s+/)
    sectors += Number(fields[6])
  }
  return sectors * 512
}

/** CPU ticks per thread: { tid: { name, ticks } }. */
function threadTicks() {
  const out = {}
  for (const tid of readdirSync('/proc/self/task')) {
    const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8')
    const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'))
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    out[tid] = { name, ticks: Number(fields[11]) + Number(fields[12]) }
  }
  return out
}

try {
  const pool = makePool(384)
  const db = await keeldb.open(path.join(work, 'db'), { durability })
  const col = await db.createCollection('v', { dimension: 384 })
  const before = threadTicks()
  const disk0 = diskBytesWritten()
  const t0 = performance.now()
  let next = 0
  const lane = async () => {
    while (next < maxRecords) {
      const r = record(pool, next++)
      await col.upsert(payloads ? { id: r.id, vector: r.vector, payload: r.payload } : { id: r.id, vector: r.vector })
    }
  }
  await Promise.all(Array.from({ length: inFlight }, lane))
  const seconds = (performance.now() - t0) / 1000
  const after = threadTicks()
  const diskMBps = (diskBytesWritten() - disk0) / seconds / 1e6
  const stats = col.stats()
  await db.close()
  const perThread = {}
  for (const [tid, t] of Object.entries(after)) {
    const key = tid === String(process.pid) ? 'js' : t.name.startsWith('keeldb') ? 'keeldb' : 'other'
    perThread[key] = (perThread[key] ?? 0) + t.ticks - (before[tid]?.ticks ?? 0)
  }
  const us = (key) => (((perThread[key] ?? 0) * TICK_US) / maxRecords).toFixed(2)
  const group = stats.walRecords / stats.groupCommits
  const without = payloads ? '' : ' (no payloads)'
  console.log(`${durability}, ${inFlight} in flight${without}: ${Math.round(maxRecords / seconds)} records/s, ${group.toFixed(1)} writes per group`)
  console.log(`CPU per record: JS thread ${us('js')} us, keeldb threads ${us('keeldb')} us, other ${us('other')} us`)
  const perGroup = (micros) => (micros / stats.groupCommits).toFixed(0)
  console.log(
    `committer per group: log and sync ${perGroup(stats.commitLogMicros)} us, apply ${perGroup(stats.commitApplyMicros)} us, ` +
      `answer ${perGroup(stats.commitAnswerMicros)} us; ${(stats.queuedAtGroupEnd / stats.groupCommits).toFixed(1)} writes already queued at each group's end`,
  )
  console.log(`disks wrote ${diskMBps.toFixed(0)} MB/s meanwhile (the log alone: ${((maxRecords * logRecordBytes({ payloads })) / seconds / 1e6).toFixed(0)} MB/s of records)`)

  // One write() + fdatasync of a group's worth of log bytes, in this process.
  const file = path.join(work, 'sync.bin')
  const fd = openSync(file, 'w')
  const bytes = Buffer.alloc(Math.max(1, Math.round(group)) * logRecordBytes({ payloads }), 0x5a)
  writeSync(fd, Buffer.alloc(64 << 20), 0, 64 << 20, 0) // written once, so the syncs below change no size
  fdatasyncSync(fd)
  const n = 1000
  const cpu0 = process.cpuUsage()
  const s0 = performance.now()
  for (let i = 0; i < n; i++) {
    writeSync(fd, bytes, 0, bytes.length, i * bytes.length)
    fdatasyncSync(fd)
  }
  const wall = ((performance.now() - s0) * 1000) / n
  const cpu = process.cpuUsage(cpu0)
  closeSync(fd)
  console.log(`write() of ${bytes.length} bytes + fdatasync: ${wall.toFixed(0)} us wall, ${((cpu.user + cpu.system) / n).toFixed(0)} us CPU (${(cpu.system / n).toFixed(0)} us system)`)
} finally {
  rmSync(work, { recursive: true, force: true })
}
