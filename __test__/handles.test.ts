// A collection handle keeps its database open: after the program drops every reference to the Db and the garbage collector runs, writes through the collection still succeed.

import test from 'ava'
import { spawn } from 'node:child_process'
import { join } from 'node:path'

import { exited, onLines, root, stderrOf, tempDir } from './helpers'

test('a collection outlives a garbage-collected Db object (found by npm run torture)', async (t) => {
  const dir = tempDir(t, 'keeldb-gc-')
  const child = spawn(process.execPath, ['--expose-gc', '--import', 'tsx', join(__dirname, 'fixtures', 'gc-db.ts'), dir], {
    cwd: root,
    env: { ...process.env, NODE_OPTIONS: '' },
  })
  const stderr = stderrOf(child)
  const lines: string[] = []
  onLines(child, (line) => lines.push(line))
  const { code } = await exited(child)
  t.is(code, 0, stderr())
  t.deepEqual(lines, ['ok'], 'the write through the collection was refused after GC')
})
