// The value the key-value peers (lmdb, classic-level) store for a record: the vector's
// float32 bytes, then the payload's JSON text. Every system does the same work per record as
// keeldb's API does inside: the payload object is serialized with JSON.stringify on each
// write and parsed with JSON.parse on each read, and the vector is copied out.

export function encodeValue(r) {
  const json = Buffer.from(JSON.stringify(r.payload))
  const out = Buffer.allocUnsafe(r.vector.byteLength + json.length)
  out.set(new Uint8Array(r.vector.buffer, r.vector.byteOffset, r.vector.byteLength), 0)
  out.set(json, r.vector.byteLength)
  return out
}

export function vectorBytes(v) {
  return Buffer.from(v.buffer, v.byteOffset, v.byteLength)
}

/** A fresh Float32Array holding the first `dimension` floats of `buf`. */
export function decodeVector(buf, dimension = 384) {
  const out = new Float32Array(dimension)
  new Uint8Array(out.buffer).set(buf.subarray(0, dimension * 4))
  return out
}

/**
 * The vector of a stored value, after parsing its payload as keeldb's get does (the parsed
 * payload is kept on the returned array so that the work cannot be skipped).
 */
export function decodeValue(buf, dimension = 384) {
  const vector = decodeVector(buf, dimension)
  vector.payload = JSON.parse(buf.toString('utf8', dimension * 4))
  return vector
}

/** The vector of a row whose payload is JSON text, after parsing the payload. */
export function withPayload(vector, text) {
  vector.payload = JSON.parse(text)
  return vector
}
