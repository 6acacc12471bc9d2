// A collection handle keeps its database open: after the program drops every reference to the Db and the garbage collector runs, writes through the collection still succeed.

import test from 'ava'
import { spawn } from 'node:child_process'
import { join } from 'node:path'

import { exited, onLines, root, spawnFixture, stderrOf, tempDir } from './helpers'

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

test('each open collection holds one thread and at most four file descriptors until close (README)', async (t) => {
  const n = 20
  const child = spawnFixture('collection-resources.ts', [tempDir(t), String(n)])
  const stderr = stderrOf(child)
  const lines: string[] = []
  onLines(child, (line) => lines.push(line))
  const { code } = await exited(child)
  t.is(code, 0, stderr())
  type Count = { threads: number; fds: number }
  const { before, open, after } = JSON.parse(lines[0] ?? '{}') as { before: Count; open: Count; after: Count }
  t.log(`${n} collections: +${open.threads - before.threads} threads, +${open.fds - before.fds} fds`)
  t.is(open.threads - before.threads, n, 'one committer thread each')
  t.true(open.fds - before.fds <= 4 * n, `${open.fds - before.fds} fds for ${n} collections`)
  // close() gives back every collection's, the first one's and the database's lock too.
  t.true(after.threads < before.threads, 'the committers are gone')
  t.true(after.fds < before.fds, 'the files are closed')
})
