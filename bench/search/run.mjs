// Runs the search suite (bench/search/run.ts, TypeScript) under tsx, for bench/run.mjs.
import { spawnSync } from 'node:child_process'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))
const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(here, 'run.ts'), ...process.argv.slice(2)], { stdio: 'inherit' })
process.exit(r.status ?? 1)
