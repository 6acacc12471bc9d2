// Shared by the test files (not a test itself: ava only runs *.test.ts).

import type { ExecutionContext } from 'ava'
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

export const root = join(__dirname, '..')

/** A fresh directory under os.tmpdir(), removed when the test ends. */
export function tempDir(t: ExecutionContext, prefix = 'keeldb-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** Whether two float arrays hold exactly the same bytes (so -0, subnormals etc. count). */
export function sameBytes(a: Float32Array, b: Float32Array): boolean {
  return Buffer.compare(
    Buffer.from(a.buffer, a.byteOffset, a.byteLength),
    Buffer.from(b.buffer, b.byteOffset, b.byteLength),
  ) === 0
}

/** Starts a TypeScript fixture from __test__/fixtures in a child `node --import tsx`. */
export function spawnFixture(name: string, args: string[]): ChildProcessWithoutNullStreams {
  return spawn(process.execPath, ['--import', 'tsx', join(__dirname, 'fixtures', name), ...args], {
    cwd: root,
    env: { ...process.env, NODE_OPTIONS: '' },
  })
}

/** Resolves with each complete stdout line of `child` until it exits. */
export function onLines(child: ChildProcessWithoutNullStreams, onLine: (line: string) => void): void {
  let buffered = ''
  child.stdout.setEncoding('utf8')
  child.stdout.on('data', (chunk: string) => {
    buffered += chunk
    let newline = buffered.indexOf('\n')
    while (newline >= 0) {
      onLine(buffered.slice(0, newline))
      buffered = buffered.slice(newline + 1)
      newline = buffered.indexOf('\n')
    }
  })
}

/** Collects stderr, for failure messages. */
export function stderrOf(child: ChildProcessWithoutNullStreams): () => string {
  let text = ''
  child.stderr.setEncoding('utf8')
  child.stderr.on('data', (chunk: string) => {
    text += chunk
  })
  return () => text
}

/** Resolves once `child` has exited and its streams are closed. */
export function exited(child: ChildProcessWithoutNullStreams): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) {
      resolve({ code: child.exitCode, signal: child.signalCode })
      return
    }
    child.once('close', (code, signal) => resolve({ code, signal }))
  })
}
