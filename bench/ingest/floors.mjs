// What the JavaScript side of a write and of a getSync costs before keeldb does anything
// (not part of `npm run bench`): each line times one piece of per-record work on the ingest
// suite's own ~300-byte payloads, in a tight loop, best of 5 passes over 1,000 payloads x
// 200. The flush/none ingest goals need under ~4.5 us per record on the JS thread in all,
// and the getSync goal 2 us per call: these are the parts of that budget the platform (V8 on
// Node 20) takes.
//
//   node bench/ingest/floors.mjs        (after `npm run build`)

import { createRequire } from 'node:module'
import { payloadFor } from '../lib/data.mjs'

const { quickPayloadJson } = createRequire(import.meta.url)('../../dist/payload.js')
const payloads = Array.from({ length: 1000 }, (_, i) => payloadFor(i))
const texts = payloads.map((p) => JSON.stringify(p))
const REPEATS = 200
let sink = 0

/** Best of 5 passes, in microseconds per call of `f(i)`. */
function time(label, f) {
  let best = Infinity
  for (let pass = 0; pass < 5; pass++) {
    const start = process.hrtime.bigint()
    for (let r = 0; r < REPEATS; r++) for (let i = 0; i < payloads.length; i++) sink += f(i)
    best = Math.min(best, Number(process.hrtime.bigint() - start) / (REPEATS * payloads.length))
  }
  console.log(`${label.padEnd(58)} ${(best / 1000).toFixed(3)} us`)
}

console.log(`node ${process.version}; payload JSON ${texts[0].length} bytes (record 0)`)
time('write: JSON.stringify(payload)', (i) => JSON.stringify(payloads[i]).length)
time("write: keeldb's payload check and text (quickPayloadJson)", (i) => quickPayloadJson(payloads[i]).length)
time('read: JSON.parse(payload text)', (i) => JSON.parse(texts[i]).chunk)
time('read: new Float32Array(384)', () => new Float32Array(384).length)
time('read: new Float32Array(384) and JSON.parse', (i) => new Float32Array(384).length + JSON.parse(texts[i]).chunk)
if (sink === 0) console.log('(nothing measured)')
