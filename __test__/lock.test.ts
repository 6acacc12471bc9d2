// One handle at a time per database directory: a second open, in this process or another, gives KEEL_LOCKED until the first is closed or its process dies.

import test from 'ava'

import { open, KeelError } from '../lib/index'
import { exited, onLines, spawnFixture, stderrOf, tempDir } from './helpers'

/** Runs the open-and-hold fixture on `dir` and resolves with its first line ("opened" or a code). */
function openInChild(dir: string, hold: boolean): { first: Promise<string>; kill: () => Promise<void> } {
  const child = spawnFixture('open-and-hold.ts', hold ? [dir, '--hold'] : [dir])
  const stderr = stderrOf(child)
  const first = new Promise<string>((resolve, reject) => {
    onLines(child, resolve)
    child.once('close', (code, signal) => reject(new Error(`child ended (${code ?? signal}) before reporting: ${stderr()}`)))
  })
  const kill = async (): Promise<void> => {
    child.kill('SIGKILL')
    await exited(child)
  }
  return { first, kill }
}

test('a second open in the same process gives KEEL_LOCKED; after close, reopening works', async (t) => {
  const dir = tempDir(t)
  const db = await open(dir)
  await t.throwsAsync(open(dir), { code: 'KEEL_LOCKED', instanceOf: KeelError })
  await t.throwsAsync(open(dir, { recovery: 'strict' }), { code: 'KEEL_LOCKED' })
  t.deepEqual(db.listCollections(), []) // the refused open did not disturb the first handle
  await db.close()
  const again = await open(dir)
  await again.close()
})

test('another process cannot open a directory this process holds, until it is closed', async (t) => {
  const dir = tempDir(t)
  const db = await open(dir)
  const refused = openInChild(dir, false)
  t.teardown(refused.kill)
  t.is(await refused.first, 'KEEL_LOCKED')
  await db.close()
  const allowed = openInChild(dir, false)
  t.teardown(allowed.kill)
  t.is(await allowed.first, 'opened')
})

test('this process cannot open a directory another process holds, until that process dies', async (t) => {
  const dir = tempDir(t)
  const holder = openInChild(dir, true)
  t.teardown(holder.kill)
  t.is(await holder.first, 'opened')
  await t.throwsAsync(open(dir), { code: 'KEEL_LOCKED', instanceOf: KeelError })
  await holder.kill() // SIGKILL: the kernel releases the lock with the process
  const db = await open(dir)
  await db.close()
  t.pass()
})
