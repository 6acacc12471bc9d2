// Consumes the BUILT package (dist/ + generated loader) through its `exports`
// map, via self-reference (`keeldb` resolves to this package from its root),
// both as ESM and as CommonJS, in a fresh Node process without tsx.
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

const root = join(__dirname, '..');
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string };

function runNode(inputType: 'module' | 'commonjs', source: string): string {
  return execFileSync(process.execPath, [`--input-type=${inputType}`, '-e', source], {
    cwd: root,
    encoding: 'utf8',
    env: { ...process.env, NODE_OPTIONS: '' },
  }).trim();
}

// A script that uses the public API end to end: open, write, read back, a coded error.
const USE_API = `
  const dir = mkdtempSync(join(tmpdir(), 'keeldb-esm-'));
  try {
    const db = await open(dir);
    const col = await db.createCollection('c', { dimension: 2 });
    await col.upsert({ id: 1, vector: [1, 2] });
    const got = await col.get(1);
    let code = 'none';
    try { db.collection('nope'); } catch (err) { code = err instanceof KeelError ? err.code : String(err); }
    await db.close();
    console.log([nativeVersion(), got.id, Array.from(got.vector).join(','), code].join(' '));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
`;

test('ESM: import { open, KeelError } from "keeldb"', (t) => {
  const out = runNode(
    'module',
    `import { open, KeelError, nativeVersion } from 'keeldb';
     import { mkdtempSync, rmSync } from 'node:fs';
     import { tmpdir } from 'node:os';
     import { join } from 'node:path';
     ${USE_API}`,
  );
  t.is(out, `${pkg.version} 1 1,2 KEEL_NOT_FOUND`);
});

test('CJS: require("keeldb")', (t) => {
  const out = runNode(
    'commonjs',
    `const { open, KeelError, nativeVersion } = require('keeldb');
     const { mkdtempSync, rmSync } = require('node:fs');
     const { tmpdir } = require('node:os');
     const { join } = require('node:path');
     (async () => { ${USE_API} })();`,
  );
  t.is(out, `${pkg.version} 1 1,2 KEEL_NOT_FOUND`);
});
