// Runs one measurement in a fresh Node.js process, so that no system inherits another's
// heap, threads, page-cache warmth of its own making, or JIT state. The child prints one JSON
// line starting with RESULT_PREFIX; everything else it prints is passed through to stderr.

import { spawn } from 'node:child_process'

export const RESULT_PREFIX = '@@bench-result '

/**
 * Runs `node script JSON(spec)` and resolves to the result object the child printed, or to
 * `{ error }` if it failed, printed nothing or outlived `timeoutMs`. `expectSignal` names a
 * signal the child is meant to die of (a crash test); it then resolves to `{ signal }`.
 */
export function runChild(script, spec, { timeoutMs = 300_000, expectSignal } = {}) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--expose-gc', script, JSON.stringify(spec)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let out = ''
    let err = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (err += d))
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      const line = out.split('\n').find((l) => l.startsWith(RESULT_PREFIX))
      if (expectSignal !== undefined && signal === expectSignal) return resolve({ signal })
      if (code === 0 && line !== undefined) return resolve(JSON.parse(line.slice(RESULT_PREFIX.length)))
      const why = signal !== null ? `killed by ${signal}` : `exit code ${code}`
      const tail = (err || out).trim().split('\n').slice(-6).join('\n')
      resolve({ error: `${why}: ${tail}` })
    })
  })
}

/** In a child: prints `result` for the parent. */
export function report(result) {
  process.stdout.write(`${RESULT_PREFIX}${JSON.stringify(result)}\n`)
}

/** In a child: parses the spec the parent passed. */
export function readSpec() {
  return JSON.parse(process.argv[2] ?? '{}')
}
