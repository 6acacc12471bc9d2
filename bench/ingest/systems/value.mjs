// The value the key-value peers (lmdb, classic-level) store for a record: the vector's
// float32 bytes, then the payload's JSON text. `decodeValue` copies the vector out, as
// keeldb's get does; the payload is not parsed (keeldb's get has no payload yet).

export function encodeValue(r) {
  const json = Buffer.from(r.payloadJson)
  const out = Buffer.allocUnsafe(r.vector.byteLength + json.length)
  out.set(new Uint8Array(r.vector.buffer, r.vector.byteOffset, r.vector.byteLength), 0)
  out.set(json, r.vector.byteLength)
  return out
}

export function vectorBytes(v) {
  return Buffer.from(v.buffer, v.byteOffset, v.byteLength)
}

/** A fresh Float32Array holding the first `dimension` floats of `buf`. */
export function decodeValue(buf, dimension = 384) {
  const out = new Float32Array(dimension)
  new Uint8Array(out.buffer).set(buf.subarray(0, dimension * 4))
  return out
}
