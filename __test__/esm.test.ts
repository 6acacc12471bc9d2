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

test('ESM: import { nativeVersion } from "keeldb"', (t) => {
  const out = runNode(
    'module',
    "import { nativeVersion } from 'keeldb'; console.log(nativeVersion());",
  );
  t.is(out, pkg.version);
});

test('CJS: require("keeldb")', (t) => {
  const out = runNode('commonjs', "console.log(require('keeldb').nativeVersion());");
  t.is(out, pkg.version);
});
