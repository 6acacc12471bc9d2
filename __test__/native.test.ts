import test from 'ava';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { nativeVersion } from '../lib/index';

const pkg = JSON.parse(readFileSync(join(__dirname, '..', 'package.json'), 'utf8')) as {
  version: string;
};

test('native addon version equals package.json version', (t) => {
  t.is(nativeVersion(), pkg.version);
});
