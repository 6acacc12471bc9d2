// The records every system ingests: dimension-384 float32 vectors and ~300-byte JSON
// payloads, generated deterministically (same seed, same data in every child process) from a
// small pool that is cycled, so that generating data costs nothing inside a timed loop.

export const DIMENSION = 384
export const POOL_SIZE = 1024

/** xorshift32: a fast deterministic generator; returns floats in [-1, 1). */
function generator(seed) {
  let x = seed >>> 0 || 1
  return () => {
    x ^= x << 13
    x >>>= 0
    x ^= x >>> 17
    x ^= x << 5
    x >>>= 0
    return x / 2 ** 31 - 1
  }
}

const WORDS = ['keel', 'vector', 'durable', 'commit', 'replay', 'ledger', 'harbour', 'anchor', 'signal', 'lattice']

/** A ~300-byte JSON-able payload for record `i`, like a document's metadata. */
export function payloadFor(i) {
  const w = (k) => WORDS[(i * 7 + k * 3) % WORDS.length]
  const payload = {
    title: `Document ${i}: ${w(0)} ${w(1)} ${w(2)}`,
    url: `https://example.com/docs/${i}/${w(3)}-${w(4)}`,
    tags: [w(5), w(6), w(7)],
    createdAt: new Date(Date.UTC(2024, 0, 1) + i * 60_000).toISOString(),
    lang: 'en',
    chunk: i % 97,
    summary: `${w(8)} ${w(9)} `.repeat(7).trim(),
  }
  return payload
}

/**
 * keeldb's log record for one upsert of one integer id (docs/FORMAT.md): a 24-byte header,
 * the batch body (op_count u32, op u8, id tag u8 + u64, the vector) and a 4-byte CRC: 1,578
 * bytes at dimension 384, plus, with a payload, its length (u32) and JSON text (op 3).
 */
export function logRecordBytes({ dimension = DIMENSION, payloads = true } = {}) {
  const payload = payloads ? 4 + Buffer.byteLength(JSON.stringify(payloadFor(0))) : 0
  return 24 + (4 + 1 + 1 + 8 + 4 * dimension) + 4 + payload
}

/** The pool: `POOL_SIZE` vectors and their payloads (object and JSON text). */
export function makePool(dimension = DIMENSION) {
  const next = generator(0x6b65656c)
  const vectors = []
  const payloads = []
  const payloadJson = []
  for (let i = 0; i < POOL_SIZE; i++) {
    const v = new Float32Array(dimension)
    for (let j = 0; j < dimension; j++) v[j] = next()
    vectors.push(v)
    const p = payloadFor(i)
    payloads.push(p)
    payloadJson.push(JSON.stringify(p))
  }
  return { dimension, vectors, payloads, payloadJson }
}

/** Record `i` of the workload: integer id `i`, vector and payload from the pool. */
export function record(pool, i) {
  const k = i % POOL_SIZE
  return { id: i, vector: pool.vectors[k], payload: pool.payloads[k], payloadJson: pool.payloadJson[k] }
}

/** Mean payload size in bytes (JSON text, UTF-8), for the docs. */
export function meanPayloadBytes(pool) {
  let total = 0
  for (const s of pool.payloadJson) total += Buffer.byteLength(s)
  return total / pool.payloadJson.length
}
