// The README's quick start runs as written and prints what its comments promise.

import test from 'ava'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'

const root = join(__dirname, '..')

function quickStart(): string {
  const readme = readFileSync(join(root, 'README.md'), 'utf8')
  const section = readme.split('## Quick start')[1] ?? ''
  const code = /```ts\n([\s\S]*?)```/.exec(section)?.[1]
  if (code === undefined) throw new Error('README has no ```ts block under "## Quick start"')
  return code
}

test('the quick start runs and logs the error code and the count', (t) => {
  const cwd = mkdtempSync(join(tmpdir(), 'keeldb-readme-'))
  // Inside the package, so that `import ... from 'keeldb'` resolves to this checkout.
  const script = join(root, '__test__', `.readme-${process.pid}.mts`)
  try {
    writeFileSync(script, quickStart())
    // The temp cwd has no node_modules: name the loader by its absolute URL.
    const tsx = pathToFileURL(require.resolve('tsx')).href
    const out = execFileSync(process.execPath, ['--import', tsx, script], { cwd, encoding: 'utf8' })
    t.deepEqual(out.trim().split('\n'), ['KEEL_DIMENSION_MISMATCH', '2'])
  } finally {
    rmSync(script, { force: true })
    rmSync(cwd, { recursive: true, force: true })
  }
})
