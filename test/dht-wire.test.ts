/**
 * The block protocol's put requests: the zero-copy reader of canonical puts (wire.ts) takes what
 * encodeRequest makes, as views, and nothing that dag-cbor's strict decoder would refuse or read
 * as another value (random mutations of real requests).
 */
import crypto from 'node:crypto'
import tap from 'tap'
import * as dagCbor from '@ipld/dag-cbor'
import { type ByteList, decodeCanonicalPut, decodeRequest, encodeRequest, type Request } from '../src/dht/wire.js'

/** A message in chunks, as a stream read hands it over (Uint8ArrayList's get and subarray). */
class Chunks implements ByteList {
  readonly byteLength: number
  /** Offset of each chunk. */
  private readonly starts: number[] = []
  constructor (readonly bufs: Uint8Array[]) {
    let n = 0
    for (const b of bufs) { this.starts.push(n); n += b.length }
    this.byteLength = n
  }

  static split (bytes: Uint8Array, maxChunk: number): Chunks {
    const bufs: Uint8Array[] = []
    for (let at = 0; at < bytes.length;) {
      const n = Math.min(bytes.length - at, 1 + crypto.randomInt(maxChunk))
      bufs.push(bytes.subarray(at, at + n))
      at += n
    }
    return new Chunks(bufs)
  }

  /** The chunk holding byte i. */
  private find (i: number): number {
    let lo = 0
    let hi = this.bufs.length - 1
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1
      if (this.starts[mid] <= i) lo = mid
      else hi = mid - 1
    }
    return lo
  }

  get (i: number): number {
    if (i < 0 || i >= this.byteLength) throw new RangeError('index is out of bounds')
    const c = this.find(i)
    return this.bufs[c][i - this.starts[c]]
  }

  subarray (start = 0, end = this.byteLength): Uint8Array {
    if (start === end) return new Uint8Array(0)
    const a = this.find(start)
    const b = this.find(end - 1)
    if (a === b) return this.bufs[a].subarray(start - this.starts[a], end - this.starts[a])
    return Buffer.concat(this.bufs.slice(a, b + 1)).subarray(start - this.starts[a], end - this.starts[a])
  }
}

function putOf (sizes: number[]): Request & { op: 'put' } {
  return { op: 'put', bs: sizes.map(n => [new Uint8Array(crypto.randomBytes(32)), new Uint8Array(crypto.randomBytes(n))]) }
}

/** Deep equality of decoded requests (maps, arrays, byte strings, text). */
function same (a: unknown, b: unknown): boolean {
  if (a instanceof Uint8Array || b instanceof Uint8Array) return a instanceof Uint8Array && b instanceof Uint8Array && Buffer.from(a).equals(Buffer.from(b))
  if (Array.isArray(a) || Array.isArray(b)) return Array.isArray(a) && Array.isArray(b) && a.length === b.length && a.every((x, i) => same(x, b[i]))
  if (a !== null && b !== null && typeof a === 'object' && typeof b === 'object') {
    const ka = Object.keys(a).sort()
    const kb = Object.keys(b).sort()
    return same(ka, kb) && ka.every(k => same((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]))
  }
  return a === b
}

/** The request dag-cbor reads from these bytes, or undefined if it refuses them. */
function viaDagCbor (bytes: Uint8Array): unknown {
  try {
    return dagCbor.decode(bytes)
  } catch {
    return undefined
  }
}

tap.test('canonical puts are read as views, equal to what was encoded', async t => {
  // Lengths on every side of the CBOR head boundaries (23/24, 255/256, 65535/65536).
  for (const sizes of [[], [0], [23, 24, 255, 256], [65535, 65536, 70000], Array.from({ length: 300 }, (_v, i) => i * 7)]) {
    const req = putOf(sizes)
    const bytes = encodeRequest(req)
    const fast = decodeCanonicalPut(bytes)
    t.ok(fast !== undefined, `taken: ${sizes.length} blocks`)
    t.ok(same(fast, req), 'the same value')
    t.ok(same(decodeRequest(bytes), req), 'decodeRequest too')
    if (fast?.op === 'put' && fast.bs.length > 0) t.equal(fast.bs[0][1].buffer, bytes.buffer, 'blocks are views into the request')
    // In chunks, as the stream hands it over: small ones (every block straddles) and 64 KiB ones.
    for (const maxChunk of [7, 65536]) t.ok(same(decodeRequest(Chunks.split(bytes, maxChunk)), req), `read in chunks of up to ${maxChunk} bytes`)
  }
  const big = encodeRequest(putOf([16384, 16384, 16384, 16384]))
  const list = new Chunks([big.subarray(0, 40000), big.subarray(40000)])
  const got = decodeCanonicalPut(list)
  t.equal(got?.op === 'put' ? got.bs[0][1].buffer : undefined, big.buffer, 'a block inside one chunk is a view of it')
})

tap.test('anything else is left to dag-cbor: a mutated request is taken only as dag-cbor reads it', async t => {
  // Small blocks, so that most mutations hit the structure (heads, keys' lengths, names).
  const req = putOf([1, 10, 30])
  const good = encodeRequest(req)
  let taken = 0
  let differ = 0
  const bad: string[] = []
  for (let i = 0; i < 20_000; i++) {
    const b = Uint8Array.from(good)
    const flips = 1 + (i % 3)
    for (let f = 0; f < flips; f++) b[crypto.randomInt(b.length)] = crypto.randomInt(256)
    // Also cut or extend some.
    const bytes = i % 7 === 0 ? b.subarray(0, crypto.randomInt(b.length)) : i % 11 === 0 ? Uint8Array.from([...b, 0]) : b
    const fast = decodeCanonicalPut(i % 2 === 0 ? bytes : Chunks.split(bytes, 40))
    if (fast === undefined) continue
    taken++
    const ref = viaDagCbor(bytes)
    if (ref === undefined || !same(fast, ref)) {
      differ++
      if (bad.length < 3) bad.push(Buffer.from(bytes).toString('hex'))
    }
  }
  t.ok(taken > 0, `${taken} of 20,000 mutated requests are still canonical puts (changed block bytes or keys)`)
  t.equal(differ, 0, `each taken as dag-cbor reads it ${bad.join(' ')}`)
  // Non-canonical forms dag-cbor refuses are refused (by the generic path) as before.
  const op = dagCbor.encode({ op: 'put' })
  t.throws(() => decodeRequest(op), /malformed/, 'a put without blocks')
  const trailing = Uint8Array.from([...good, 0])
  t.equal(decodeCanonicalPut(trailing), undefined, 'trailing bytes: not taken')
  t.throws(() => decodeRequest(trailing), /malformed/)
  t.throws(() => decodeRequest(Chunks.split(trailing, 16)), /malformed/, 'also in chunks')
  // A block length in a longer head than needed (0x59 00 0a instead of 0x4a).
  // a2 62 'bs' 83 | 82 58 20 KEY 41 B | 82 58 20 KEY 4a ...: the second block's head is at 77.
  const at = 5 + 37 + 3 + 32
  t.equal(good[at], 0x4a, 'the second block\'s head')
  const longHead = Uint8Array.from([...good.subarray(0, at), 0x59, 0x00, 0x0a, ...good.subarray(at + 1)])
  t.equal(decodeCanonicalPut(longHead), undefined, 'a non-minimal length: not taken')
  t.throws(() => decodeRequest(longHead), /malformed/)
})
