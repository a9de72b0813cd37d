/**
 * The reef block protocol (/reef/block/1.0.0, and /reef/block-get/1.0.0 for gets alone) on
 * libp2p streams: one length-prefixed dag-cbor request, one response, per stream.
 *   put  { op: 'put', bs: [[digest, bytes]...] }      -> { ok: true, have: [stored?...] }
 *   get  { op: 'get', k: digest }                      -> { ok: true, d } | { ok: false, e }
 *   has  { op: 'has', ks: [digest...] (<= MAX_HAS) }   -> { ok: true, have: [bool...] }
 *   near { op: 'near', t: kad id }                     -> { ok: true, ps: [multiaddr/p2p/id...] }
 *        (Kademlia's FIND_NODE: the contacts the node knows closest to t, on BLOCK_GET_PROTOCOL)
 * Every field is checked; anything else is refused and the stream closed. Received blocks are
 * verified against their digest before they are stored or used.
 */
import * as dagCbor from '@ipld/dag-cbor'
import { MAX_BLOCK_SIZE } from '../block/index.js'
import { ReefError } from '../errors.js'

export const BLOCK_PROTOCOL = '/reef/block/1.0.0'
/**
 * Single-block gets (the foreground read path) on a protocol of their own, served from a pool
 * of slots that puts and repair checks cannot take: however busy replication and repair keep
 * BLOCK_PROTOCOL, a read waits only for other reads. Same framing; only 'get' is accepted.
 */
export const BLOCK_GET_PROTOCOL = '/reef/block-get/1.0.0'
/** Largest request frame on BLOCK_GET_PROTOCOL: a get or a near carries one 32-byte key. */
export const MAX_GET_REQUEST = 256
export const MAX_HAS = 1024
/** Largest frame either side accepts: one block plus a small envelope. */
export const MAX_FRAME = MAX_BLOCK_SIZE + 64 * 1024
/** A put request batches blocks up to this many bytes. */
export const PUT_BATCH_BYTES = 1024 * 1024

export type Request =
  | { op: 'put', bs: Array<[Uint8Array, Uint8Array]> }
  | { op: 'get', k: Uint8Array }
  | { op: 'has', ks: Uint8Array[] }
  | { op: 'near', t: Uint8Array }

export type Response =
  | { ok: true, d?: Uint8Array, have?: boolean[], ps?: string[] }
  | { ok: false, e: string }

const bad = (why: string): never => { throw new ReefError('BAD_ENCODING', `malformed block protocol message: ${why}`) }
const isKey = (v: unknown): v is Uint8Array => v instanceof Uint8Array && v.length === 32

function decodeMap (bytes: Uint8Array): Record<string, unknown> {
  if (bytes.length > MAX_FRAME) bad('frame too large')
  let v: unknown
  try {
    v = dagCbor.decode(bytes)
  } catch (err) {
    return bad((err as Error).message)
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v) || v instanceof Uint8Array) bad('not a map')
  return v as Record<string, unknown>
}

export function encodeRequest (r: Request): Uint8Array { return dagCbor.encode(r) }
export function encodeResponse (r: Response): Uint8Array { return dagCbor.encode(r) }

/**
 * A message as a stream read hands it over: its chunks (yamux frames, noise messages) in a list,
 * as Uint8ArrayList has them. `subarray` is a view when the range lies in one chunk, a copy
 * otherwise.
 */
export interface ByteList {
  readonly byteLength: number
  get: (index: number) => number
  subarray: (start?: number, end?: number) => Uint8Array
}

/**
 * A put request in its canonical encoding (the only one dag-cbor's strict decoder accepts, and
 * what encodeRequest makes), read without copying its blocks: each is a view into the chunk of
 * the message it lies in (a copy only when it straddles two). It is most of what a replica
 * reads, and joining the chunks, then dag-cbor copying every block out, cost a receiving node
 * about 3 ms of CPU per MiB of its 15-20. Undefined for anything else, which the generic
 * decoder then takes or refuses as before: this accepts exactly what dag-cbor would, as the
 * same value (test/dht-wire.test.ts).
 */
export function decodeCanonicalPut (bytes: Uint8Array | ByteList): Request | undefined {
  const length = bytes.byteLength
  const byte = bytes instanceof Uint8Array ? (i: number) => bytes[i] : (i: number) => bytes.get(i)
  let at = 0
  // A head: major type and argument, minimal (canonical) encoding only; undefined otherwise.
  const head = (major: number): number | undefined => {
    if (at >= length || byte(at) >> 5 !== major) return undefined
    const info = byte(at++) & 0x1f
    if (info < 24) return info
    const n = info === 24 ? 1 : info === 25 ? 2 : info === 26 ? 4 : 0
    if (n === 0 || at + n > length) return undefined
    let v = 0
    for (let i = 0; i < n; i++) v = v * 256 + byte(at++)
    return v >= (n === 1 ? 24 : 2 ** (4 * n)) ? v : undefined
  }
  const text = (s: string): boolean => {
    if (head(3) !== s.length || at + s.length > length) return false
    for (let i = 0; i < s.length; i++) if (byte(at++) !== s.charCodeAt(i)) return false
    return true
  }
  const byteString = (): Uint8Array | undefined => {
    const len = head(2)
    if (len === undefined || at + len > length) return undefined
    at += len
    return bytes.subarray(at - len, at)
  }
  if (head(5) !== 2 || !text('bs')) return undefined
  const n = head(4)
  if (n === undefined || n > MAX_HAS) return undefined
  const bs: Array<[Uint8Array, Uint8Array]> = []
  for (let i = 0; i < n; i++) {
    if (head(4) !== 2) return undefined
    const k = byteString()
    const d = k === undefined ? undefined : byteString()
    if (k === undefined || d === undefined) return undefined
    bs.push([k, d])
  }
  if (!text('op') || !text('put') || at !== length) return undefined
  return { op: 'put', bs }
}

export function decodeRequest (bytes: Uint8Array | ByteList): Request {
  if (bytes.byteLength > MAX_FRAME) bad('frame too large')
  const o: Record<string, unknown> = decodeCanonicalPut(bytes) ?? decodeMap(bytes instanceof Uint8Array ? bytes : bytes.subarray())
  switch (o.op) {
    case 'put': {
      if (!Array.isArray(o.bs) || o.bs.length > MAX_HAS || Object.keys(o).length !== 2) bad('put')
      for (const pair of o.bs as unknown[]) {
        if (!Array.isArray(pair) || pair.length !== 2 || !isKey(pair[0]) || !(pair[1] instanceof Uint8Array) || pair[1].length > MAX_BLOCK_SIZE) bad('put entry')
      }
      return { op: 'put', bs: o.bs as Array<[Uint8Array, Uint8Array]> }
    }
    case 'get':
      if (!isKey(o.k) || Object.keys(o).length !== 2) bad('get')
      return { op: 'get', k: o.k as Uint8Array }
    case 'has':
      if (!Array.isArray(o.ks) || o.ks.length > MAX_HAS || !o.ks.every(isKey) || Object.keys(o).length !== 2) bad('has')
      return { op: 'has', ks: o.ks as Uint8Array[] }
    case 'near':
      if (!isKey(o.t) || Object.keys(o).length !== 2) bad('near')
      return { op: 'near', t: o.t as Uint8Array }
    default:
      return bad(`unknown op ${String(o.op)}`)
  }
}

export function decodeResponse (bytes: Uint8Array): Response {
  const o = decodeMap(bytes)
  if (o.ok === true) {
    const r: Response = { ok: true }
    if (o.d !== undefined) {
      if (!(o.d instanceof Uint8Array) || o.d.length > MAX_BLOCK_SIZE) bad('response data')
      r.d = o.d as Uint8Array
    }
    if (o.have !== undefined) {
      if (!Array.isArray(o.have) || o.have.length > MAX_HAS || !o.have.every(b => typeof b === 'boolean')) bad('response have')
      r.have = o.have as boolean[]
    }
    if (o.ps !== undefined) {
      if (!Array.isArray(o.ps) || o.ps.length > MAX_HAS || !o.ps.every(p => typeof p === 'string' && p.length < 512)) bad('response peers')
      r.ps = o.ps as string[]
    }
    return r
  }
  if (o.ok === false && typeof o.e === 'string') return { ok: false, e: o.e.slice(0, 200) }
  return bad('response')
}
