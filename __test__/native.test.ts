// The native addon loads, matches the package version, and turns a Rust panic into a JavaScript error instead of aborting the process.

import test from 'ava'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'

import type * as NativeBinding from '../index.js'
import { nativeVersion } from '../lib/index'

// eslint-disable-next-line @typescript-eslint/no-require-imports
const native = require('../index.js') as typeof NativeBinding

const pkg = JSON.parse(readFileSync(join(__dirname, '..', 'package.json'), 'utf8')) as {
  version: string
}

test('native addon version equals package.json version', (t) => {
  t.is(nativeVersion(), pkg.version)
})

test('a panic in a sync native method throws a JavaScript error', (t) => {
  t.throws(() => native.panicForTestSync(), { message: /deliberate panic on the JS thread/ })
  t.is(nativeVersion(), pkg.version) // the addon still works
})

test('a panic in async native work rejects the promise', async (t) => {
  await t.throwsAsync(native.panicForTestAsync(), { message: /deliberate panic on the libuv pool/ })
  t.is(nativeVersion(), pkg.version)
})
