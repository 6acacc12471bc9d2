// Shared by the benchmark's orchestrator (run.ts) and its per-system children (child.ts).

import { closeSync, openSync, readSync } from 'node:fs'

/** What one run measures; the orchestrator passes it to every child. */
export interface Config {
  /** Vectors in the data set. */
  count: number
  /** Floats per vector. */
  dimension: number
  /** Queries per batch (and single queries per run). */
  queries: number
  /** Neighbours per query. */
  k: number
  /** Measured repetitions per child, after one warm-up. */
  reps: number
  /** Working directory: data files and the keeldb database. */
  dir: string
}

/** Times of one series, one value per repetition, in milliseconds. */
export interface Times {
  /** Elapsed (wall-clock) time. */
  wall: number[]
  /** CPU time of the whole process (all threads), which descheduling does not inflate. */
  cpu: number[]
}

/** One child's report: named series of times, plus top-k ids for recall. */
export interface Report {
  system: string
  /** Time to get the system ready (read or map the data, build its structure). */
  setupMs: number
  /** Each measured series. */
  series: Record<string, Times>
  /** Top-k ids of the first `RECALL_QUERIES` queries. */
  topIds: number[][]
  /** Anything worth printing (instruction set, thread counts). */
  notes: string[]
}

/** How many queries the recall check compares with the float64 reference. */
export const RECALL_QUERIES = 4

/** Fills `out` with floats in [-1, 1) from a xorshift32 stream seeded by `seed`. */
export function fillRandom(out: Float32Array, seed: number): Float32Array {
  let s = (Math.imul(seed + 1, 0x9e3779b1) ^ (seed >>> 16)) | 1
  for (let i = 0; i < out.length; i++) {
    s ^= s << 13
    s ^= s >>> 17
    s ^= s << 5
    out[i] = ((s >>> 0) / 0x1_0000_0000) * 2 - 1
  }
  return out
}

/** Reads a whole file of little-endian float32s (the data and query files). */
export function readFloats(path: string, floats: number): Float32Array {
  const out = new Float32Array(floats)
  const bytes = new Uint8Array(out.buffer)
  const fd = openSync(path, 'r')
  try {
    let done = 0
    while (done < bytes.length) {
      const n = readSync(fd, bytes, done, Math.min(1 << 26, bytes.length - done), done)
      if (n === 0) throw new Error(`${path} is shorter than ${bytes.length} bytes`)
      done += n
    }
  } finally {
    closeSync(fd)
  }
  return out
}

/** CPU time of this process (user + system, all threads) in milliseconds. */
export function cpuMs(): number {
  const { user, system } = process.cpuUsage()
  return (user + system) / 1000
}

/** Milliseconds since an arbitrary origin, sub-microsecond resolution. */
export function nowMs(): number {
  return Number(process.hrtime.bigint()) / 1e6
}

/** Median, min, max and count. */
export function summary(values: number[]): { median: number; min: number; max: number; count: number } {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  const median = sorted.length % 2 === 1 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2
  return { median, min: sorted[0] ?? NaN, max: sorted[sorted.length - 1] ?? NaN, count: sorted.length }
}
