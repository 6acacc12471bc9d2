// What the numbers were measured on, written into every result file.

import os from 'node:os'
import { execFileSync } from 'node:child_process'
import { statfsSync } from 'node:fs'

function tryRun(cmd, args) {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8' }).trim()
  } catch {
    return null
  }
}

/** CPU, memory, kernel, filesystem of `dir`, Node version and the keeldb commit. */
export function describeMachine(dir, repoRoot) {
  const cpus = os.cpus()
  const fsType = tryRun('stat', ['-f', '-c', '%T', dir])
  const device = tryRun('df', ['--output=source', dir])?.split('\n')[1] ?? null
  let freeBytes = null
  try {
    const s = statfsSync(dir)
    freeBytes = s.bavail * s.bsize
  } catch {}
  return {
    date: new Date().toISOString(),
    cpu: cpus[0]?.model ?? 'unknown',
    cores: cpus.length,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
    dataDir: dir,
    filesystem: fsType,
    device,
    freeBytes,
    commit: tryRun('git', ['-C', repoRoot, 'rev-parse', '--short', 'HEAD']),
    dirty: (tryRun('git', ['-C', repoRoot, 'status', '--porcelain']) ?? '') !== '',
    loadAverage: os.loadavg().map((x) => Math.round(x * 100) / 100),
  }
}
