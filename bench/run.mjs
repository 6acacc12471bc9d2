// `npm run bench`: runs every suite in bench/ (each folder with a run.mjs), one after the
// other, each in its own process; extra arguments go to every suite. Each suite writes its
// JSON to bench/results/ and its own section of docs/BENCHMARKS.md.
import { spawnSync } from 'node:child_process'
import { existsSync, readdirSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))
const suites = readdirSync(here, { withFileTypes: true })
  .filter((e) => e.isDirectory() && e.name !== 'node_modules' && existsSync(path.join(here, e.name, 'run.mjs')))
  .map((e) => e.name)
  .sort()
let failed = 0
for (const suite of suites) {
  console.error(`== bench/${suite}`)
  const r = spawnSync(process.execPath, [path.join(here, suite, 'run.mjs'), ...process.argv.slice(2)], { stdio: 'inherit' })
  if (r.status !== 0) {
    failed++
    console.error(`bench/${suite} failed (${r.signal ?? `exit ${r.status}`})`)
  }
}
process.exit(failed === 0 ? 0 : 1)
