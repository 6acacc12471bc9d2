// The payload checks of the write path: a payload is stored as its JSON text, and must come
// back from JSON.parse deep-equal to what was written, or be refused naming the path of the
// first value that would not. Two checks decide it: `quickCheck`, an allocation-free pass
// that accepts the common payloads and is unsure of everything else, and `PayloadCheck`, the
// full check that names the problem. They must agree (`__test__/payload-check.test.ts`):
// whatever the quick check accepts, the full one accepts with the same text.
//
// Internal: `lib/index.ts` wraps refusals into KeelError (this module knows no error codes)
// and re-exports PAYLOAD_DEPTH_MAX.

/**
 * Deepest nesting of arrays and objects a payload may have (`{}` is 1, `{ a: [] }` is 2).
 *
 * @example
 * ```ts
 * import { PAYLOAD_DEPTH_MAX } from 'keeldb'
 * console.log(PAYLOAD_DEPTH_MAX) // 64
 * ```
 */
export const PAYLOAD_DEPTH_MAX = 64

/**
 * Most bytes one record's payload may take as JSON text (UTF-8): 16 MiB.
 *
 * @example
 * ```ts
 * import { PAYLOAD_BYTES_MAX } from 'keeldb'
 * if (Buffer.byteLength(JSON.stringify(meta)) > PAYLOAD_BYTES_MAX) console.warn('too big to store')
 * ```
 */
export const PAYLOAD_BYTES_MAX = 16 * 1024 * 1024

/**
 * What the checks have left of their byte budget: the JSON text of what they have walked is
 * at least `budget - left` bytes. A value that shares parts (`{ a: x, b: x }`, not a cycle)
 * is written out once per reference, so a few dozen objects can stand for gigabytes of
 * text; counting the text while walking refuses those at the size limit instead of
 * walking, then stringifying, each shared part once per path to it (exponential time on
 * the JS thread). The count is a lower bound: a string's UTF-16 length plus its quotes (the
 * UTF-8 text is no shorter), a key's plus `"":`, 1 byte per number, 4 per literal, 2 per
 * array or object; commas and escapes are not counted.
 */
let bytesLeft = 0

/**
 * The lower bound {@link bytesLeft} counts for one value, not counting what it contains;
 * the filter check counts with it too.
 */
export function jsonOwnBytes(v: unknown): number {
  switch (typeof v) {
    case 'string':
      return v.length + 2
    case 'number':
      return 1
    case 'object':
      return v === null ? 4 : 2
    default:
      return 4
  }
}

/**
 * How a refusal is reported: `path` names the value, `problem` says what is wrong with it;
 * `tooLarge` when the problem is the payload's size, not a value JSON would change.
 */
export type PayloadFail = (path: string, problem: string, tooLarge?: boolean) => never

/** A value for a message: `a Date`, `an array`, `the string "x"`, `number NaN`. */
export function describe(value: unknown): string {
  if (value === null || value === undefined) return String(value)
  if (typeof value === 'string') return `the string ${JSON.stringify(value)}`
  if (typeof value !== 'object' && typeof value !== 'function') return `${typeof value} ${String(value)}`
  // The caller's object: a revoked Proxy, a trap or a `constructor` getter may throw, and a
  // message about bad input must not become another error.
  try {
    if (Array.isArray(value)) return 'an array'
    if (typeof value === 'function') return `function ${String(value)}`
    const name: unknown = (value as { constructor?: { name?: unknown } }).constructor?.name
    if (typeof name !== 'string' || name === '') return 'a null-prototype object'
    return `${/^[AEIO]/.test(name) ? 'an' : 'a'} ${name}` // a Uint8Array, a URL
  } catch {
    return 'an object that throws when inspected'
  }
}

/**
 * Whether `JSON.stringify` could call a `toJSON` of `v` (own or inherited, enumerable or
 * not) instead of writing `v`: a `toJSON` that holds a function, or a getter (which may give
 * a function when `JSON.stringify` reads it again). A key named `toJSON` that holds data is
 * written like any other. (The quick check is coarser: any `toJSON` sends a payload here.)
 */
export function hasToJson(v: object): boolean {
  for (let o: object | null = v; o !== null; o = Object.getPrototypeOf(o) as object | null) {
    const own = Object.getOwnPropertyDescriptor(o, 'toJSON')
    if (own !== undefined) return own.get !== undefined || typeof own.value === 'function'
  }
  return false
}

/** `isWellFormed` is in Node 20 but not in the ES2022 typings. */
export const wellFormed = (s: string): boolean => (s as string & { isWellFormed(): boolean }).isWellFormed()

function keyPath(path: string, key: string): string {
  return /^[A-Za-z_$][\w$]*$/.test(key) ? `${path}.${key}` : `${path}[${JSON.stringify(key)}]`
}

/**
 * The JSON text of a payload {@link quickCheck} accepts, `undefined` for the rest (which
 * {@link checkedPayloadJson} then accepts or refuses, naming the path). Callers try this
 * first and build the description of the payload for a message only when it gives
 * `undefined`.
 */
export function quickPayloadJson(value: unknown): string | undefined {
  // Saved and restored: a getter of the payload may write another payload meanwhile.
  const outer = bytesLeft
  bytesLeft = PAYLOAD_BYTES_MAX
  let verdict: number
  try {
    verdict = quickCheck(value, 0)
  } finally {
    bytesLeft = outer
  }
  if (verdict === QUICK_UNSURE) return undefined
  return verdict === QUICK_NEGATIVE_ZERO ? stringifyKeepingNegativeZero(value) : JSON.stringify(value)
}

/**
 * The full check: returns the JSON text, or calls `fail` with the path of the first value
 * JSON would change. `where` names the payload (a function when that costs work to spell out).
 */
export function checkedPayloadJson(value: unknown, where: string | (() => string), fail: PayloadFail): string {
  const check = new PayloadCheck(where, fail)
  const outer = bytesLeft
  bytesLeft = PAYLOAD_BYTES_MAX
  try {
    check.walk(value, 0)
  } finally {
    bytesLeft = outer
  }
  return check.negativeZero ? stringifyKeepingNegativeZero(value) : JSON.stringify(value)
}

/** {@link quickCheck}'s verdicts; the two accepting ones combine with `|`. */
const QUICK_UNSURE = 0
const QUICK_OK = 1
const QUICK_NEGATIVE_ZERO = 3

/**
 * What {@link PayloadCheck} decides, in one allocation-free pass, for the payloads it can be
 * sure of; `QUICK_UNSURE` means "ask the full check" (which names the problem), never
 * "refused". Everything it accepts the full check accepts: the same tests on the same values
 * (a hole in an array reads as `undefined`, which it does not accept, and `for...in` visits
 * every key `Object.keys` gives, and possibly more), and no cycle passes since a cycle is
 * deeper than {@link PAYLOAD_DEPTH_MAX}. It keeps no ancestors: the first path around a
 * cycle reaches that depth and its "unsure" ends the whole walk, so a cycle costs at most
 * {@link PAYLOAD_DEPTH_MAX} times the rest of the payload before the full check names it.
 * Writes take this path: `PayloadCheck`'s stacks, `Object.keys` arrays and
 * `switch (typeof ...)` cost more than `JSON.stringify` itself.
 */
function quickCheck(v: unknown, depth: number): number {
  if ((bytesLeft -= jsonOwnBytes(v)) < 0) return QUICK_UNSURE
  if (typeof v === 'string') return wellFormed(v) ? QUICK_OK : QUICK_UNSURE
  if (typeof v === 'number') {
    // NaN and the infinities give NaN; -0 is the only zero whose reciprocal is negative.
    if (v - v !== 0) return QUICK_UNSURE
    return v === 0 && 1 / v < 0 ? QUICK_NEGATIVE_ZERO : QUICK_OK
  }
  if (typeof v === 'boolean' || v === null) return QUICK_OK
  if (typeof v !== 'object') return QUICK_UNSURE
  if (depth >= PAYLOAD_DEPTH_MAX) return QUICK_UNSURE
  let verdict = QUICK_OK
  if (Array.isArray(v)) {
    // JSON gives back a plain array of the indexed items: a subclass, or keys beside the
    // items, would not come back; the full check names them.
    // (`Object.keys` is the cheapest count of them here: ~70 ns for a short array, half a
    // `for...in`.)
    if (Object.getPrototypeOf(v) !== Array.prototype || Object.keys(v).length !== v.length) return QUICK_UNSURE
    if (Object.getOwnPropertySymbols(v).length !== 0 || 'toJSON' in v) return QUICK_UNSURE
    for (let i = 0; i < v.length; i++) {
      const item: unknown = v[i]
      const sub = item === undefined ? QUICK_UNSURE : quickCheck(item, depth + 1)
      if (sub === QUICK_UNSURE) return QUICK_UNSURE
      verdict |= sub
    }
    return verdict
  }
  const proto: unknown = Object.getPrototypeOf(v)
  if (proto !== Object.prototype && proto !== null) return QUICK_UNSURE
  if (Object.getOwnPropertySymbols(v).length !== 0 || 'toJSON' in v) return QUICK_UNSURE
  for (const key in v) {
    if ((bytesLeft -= key.length + 3) < 0 || !wellFormed(key)) return QUICK_UNSURE
    const sub = quickCheck((v as Record<string, unknown>)[key], depth + 1)
    if (sub === QUICK_UNSURE) return QUICK_UNSURE
    verdict |= sub
  }
  return verdict
}

/**
 * The full check, one payload per instance. The path is kept as a stack of keys and indices
 * and spelled out only for an error: building a string per key cost more than the check.
 */
class PayloadCheck {
  negativeZero = false
  /** What the payload is, for a message; a function when that costs work to spell out. */
  readonly #where: string | (() => string)
  readonly #ancestors: object[] = []
  readonly #path: (string | number)[] = []
  readonly #report: PayloadFail

  constructor(where: string | (() => string), report: PayloadFail) {
    this.#where = where
    this.#report = report
  }

  walk(v: unknown, depth: number): void {
    if ((bytesLeft -= jsonOwnBytes(v)) < 0) this.#tooLarge()
    switch (typeof v) {
      case 'string':
        if (!wellFormed(v)) this.#fail('is a string with a lone surrogate, which JSON cannot carry')
        return
      case 'boolean':
        return
      case 'number':
        if (!Number.isFinite(v)) this.#fail(`is ${v}, which JSON cannot carry`)
        if (Object.is(v, -0)) this.negativeZero = true
        return
      case 'object':
        break
      default:
        this.#fail(`is ${typeof v === 'undefined' ? 'undefined' : `a ${typeof v}`}, which JSON cannot carry`)
    }
    if (v === null) return
    if (depth >= PAYLOAD_DEPTH_MAX) this.#fail(`nests deeper than ${PAYLOAD_DEPTH_MAX} levels of arrays and objects`)
    const ancestors = this.#ancestors
    if (ancestors.includes(v)) this.#fail('refers back to a value that contains it (a cycle)')
    ancestors.push(v)
    const path = this.#path
    if (Array.isArray(v)) {
      if (Object.getPrototypeOf(v) !== Array.prototype) {
        const kind = (v as { constructor?: { name?: string } }).constructor?.name ?? 'null-prototype'
        this.#fail(`is an array of class ${kind}, which JSON gives back as a plain array`)
      }
      const extra = Object.keys(v).find((key) => !/^(0|[1-9]\d*)$/.test(key))
      if (extra !== undefined) this.#fail(`is an array with a key ${JSON.stringify(extra)} beside its items, which JSON drops`)
      if (Object.getOwnPropertySymbols(v).length > 0) this.#fail('has symbol keys, which JSON drops')
      if (hasToJson(v)) this.#fail('has a toJSON method, which JSON.stringify calls instead of writing the array')
      for (let i = 0; i < v.length; i++) {
        path.push(i)
        if (!(i in v)) this.#fail('is a hole in a sparse array, which JSON gives back as null')
        this.walk(v[i], depth + 1)
        path.pop()
      }
    } else {
      const proto: unknown = Object.getPrototypeOf(v)
      if (proto !== Object.prototype && proto !== null) {
        this.#fail(`is ${describe(v)}, not a plain object, which JSON does not give back as such`)
      }
      if (Object.getOwnPropertySymbols(v).length > 0) this.#fail('has symbol keys, which JSON drops')
      if (hasToJson(v)) this.#fail('has a toJSON method, which JSON.stringify calls instead of writing the object')
      for (const key of Object.keys(v)) {
        if ((bytesLeft -= key.length + 3) < 0) this.#tooLarge()
        if (!wellFormed(key)) this.#fail('has a key with a lone surrogate')
        path.push(key)
        this.walk((v as Record<string, unknown>)[key], depth + 1)
        path.pop()
      }
    }
    ancestors.pop()
  }

  #tooLarge(): never {
    const at = typeof this.#where === 'string' ? this.#where : this.#where()
    return this.#report(at, `is more than ${PAYLOAD_BYTES_MAX} bytes of JSON, the limit`, true)
  }

  #fail(problem: string): never {
    let at = typeof this.#where === 'string' ? this.#where : this.#where()
    for (const step of this.#path) at = typeof step === 'number' ? `${at}[${step}]` : keyPath(at, step)
    return this.#report(at, problem)
  }
}

/**
 * `JSON.stringify` for a value the checks accepted, except that -0 is written `-0.0`, which
 * `JSON.parse` gives back as -0 (`JSON.stringify` writes `0`). Only used when there is a -0.
 */
function stringifyKeepingNegativeZero(v: unknown): string {
  if (typeof v === 'number') return Object.is(v, -0) ? '-0.0' : JSON.stringify(v)
  if (typeof v !== 'object' || v === null) return JSON.stringify(v)
  if (Array.isArray(v)) return `[${v.map(stringifyKeepingNegativeZero).join(',')}]`
  const fields = Object.keys(v).map((k) => `${JSON.stringify(k)}:${stringifyKeepingNegativeZero((v as Record<string, unknown>)[k])}`)
  return `{${fields.join(',')}}`
}

