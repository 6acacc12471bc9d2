// The README's search example runs as written and prints what its comments promise.

import test from 'ava'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'

const root = join(__dirname, '..')

function searchExample(): string {
  const readme = readFileSync(join(root, 'README.md'), 'utf8')
  const section = readme.split('\n## Search\n')[1] ?? ''
  const code = /```ts\n([\s\S]*?)```/.exec(section)?.[1]
  if (code === undefined) throw new Error('README has no ```ts block under "## Search"')
  return code
}

test('the search example runs and logs the hits its comments show', (t) => {
  const cwd = mkdtempSync(join(tmpdir(), 'keeldb-readme-search-'))
  // Inside the package, so that `import ... from 'keeldb'` resolves to this checkout.
  const script = join(root, '__test__', `.readme-search-${process.pid}.mts`)
  try {
    writeFileSync(script, searchExample())
    // The temp cwd has no node_modules: name the loader by its absolute URL.
    const tsx = pathToFileURL(require.resolve('tsx')).href
    const out = execFileSync(process.execPath, ['--import', tsx, script], { cwd, encoding: 'utf8' })
    t.deepEqual(out.trim().split('\n'), ['a 0.10, b 1.00', 'a 7 Float32Array(3) [ 5, 5, 5 ]'])
  } finally {
    rmSync(script, { force: true })
    rmSync(cwd, { recursive: true, force: true })
  }
})
