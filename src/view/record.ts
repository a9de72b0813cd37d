/**
 * The signed records of a view, each a small dag-cbor map checked strictly on decode (exactly
 * its fields, their types and lengths), and each signed over its own layout in
 * src/crypto/layouts.ts, so neither can pass for the other or for a file-system head.
 *
 * View record: the owner's signature on one version of the writer list.
 *   { a: viewId, l: list block CID, s: seq (= the list's seq), t: ms, n: view name, k: owner, sig }
 *   The view id must be viewIdFor(k, n): a record signed by any other key is refused.
 * Writer head: a writer's signature on where its log is, in one view.
 *   { w: viewId, k: writer, v: VGUID, r?: newest log record CID, n: its counter (0: none),
 *     l: the list seq the writer wrote under, s: seq of this head, t: ms, sig }
 *   Stored under the writer's slot, writerSlotFor(w, k). Who may write is checked against the
 *   view's list by check.ts, not here: a signature says who, the list says whether.
 */
import * as dagCbor from '@ipld/dag-cbor'
import { CID } from 'multiformats/cid'
import { DAG_CBOR, SHA256_CODE } from '../block/index.js'
import { viewRecordPayload, writerHeadPayload } from '../crypto/layouts.js'
import { sign, verify, type KeyPair } from '../crypto/sign.js'
import { ReefError } from '../errors.js'
import { isViewId, keyHex, viewIdFor, writerSlotFor } from './ids.js'

export const MAX_RECORD_BYTES = 1024

export interface ViewRecord {
  view: CID
  list: CID
  seq: bigint
  time: bigint
  name: Uint8Array
  owner: Uint8Array
  signature: Uint8Array
}

export interface WriterHead {
  view: CID
  writer: Uint8Array
  vguid: CID
  record?: CID
  n: bigint
  listSeq: bigint
  seq: bigint
  time: bigint
  signature: Uint8Array
}

const malformed = (what: string, why: string): never => { throw new ReefError('VIEW_MALFORMED', `malformed ${what}: ${why}`) }

/** Decodes a map with exactly `fields` (optional ones marked '?'), and typed accessors. */
function strict (bytes: Uint8Array, what: string, fields: string[]) {
  const bad = (why: string): never => malformed(what, why)
  if (bytes.length > MAX_RECORD_BYTES) bad(`${bytes.length} bytes is too large`)
  let o: Record<string, unknown>
  try {
    o = dagCbor.decode(bytes)
  } catch (err) {
    return bad((err as Error).message)
  }
  if (o === null || typeof o !== 'object' || Array.isArray(o) || o instanceof Uint8Array) bad('not a map')
  const allowed = new Set(fields.map(f => f.replace('?', '')))
  for (const k of Object.keys(o)) if (!allowed.has(k)) bad(`unexpected field ${k}`)
  for (const f of fields) if (!f.endsWith('?') && o[f] === undefined) bad(`missing field ${f}`)
  return {
    o,
    u64 (f: string): bigint {
      const v = o[f]
      if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) return BigInt(v)
      if (typeof v === 'bigint' && v >= 0n && v < 2n ** 64n) return v
      return bad(`${f} is not a u64`)
    },
    bytes (f: string, len?: number): Uint8Array {
      const v = o[f]
      if (!(v instanceof Uint8Array) || (len !== undefined && v.length !== len)) return bad(`${f} is not ${len ?? ''} bytes`)
      return v
    },
    cid (f: string, check: (c: CID) => boolean, kind: string): CID {
      const c = CID.asCID(o[f])
      if (c === null || !check(c)) return bad(`${f} is not ${kind}`)
      return c
    }
  }
}

const isBlockCid = (c: CID): boolean => c.code === DAG_CBOR && c.multihash.code === SHA256_CODE && c.multihash.digest.length === 32

// View records ---------------------------------------------------------------------------------

export function signViewRecord (keys: KeyPair, name: Uint8Array, list: CID, seq: bigint, time: bigint = BigInt(Date.now())): ViewRecord {
  const view = viewIdFor(keys.publicKey, name)
  const signature = sign(viewRecordPayload({ view: view.bytes, list: list.bytes, seq, time }), keys.secretKey)
  return { view, list, seq, time, name, owner: keys.publicKey, signature }
}

export function encodeViewRecord (r: ViewRecord): Uint8Array {
  return dagCbor.encode({ a: r.view, l: r.list, s: r.seq, t: r.time, n: r.name, k: r.owner, sig: r.signature })
}

export function decodeViewRecord (bytes: Uint8Array): ViewRecord {
  const d = strict(bytes, 'view record', ['a', 'l', 's', 't', 'n', 'k', 'sig'])
  return {
    view: d.cid('a', isViewId, 'a view id'),
    list: d.cid('l', isBlockCid, 'a list block'),
    seq: d.u64('s'),
    time: d.u64('t'),
    name: d.bytes('n'),
    owner: d.bytes('k', 32),
    signature: d.bytes('sig', 64)
  }
}

/**
 * A view record on its own: layout, owner binding (a record for this view signed by any key but
 * its owner's is VIEW_NOT_OWNER) and signature. `expected`: the view it must be for.
 */
export function verifyViewRecord (bytes: Uint8Array, expected?: CID): ViewRecord {
  const r = decodeViewRecord(bytes)
  if (!viewIdFor(r.owner, r.name).equals(r.view)) {
    throw new ReefError('VIEW_NOT_OWNER', `view record for ${String(r.view)} is signed by ${keyHex(r.owner)}, which does not own it`)
  }
  if (expected !== undefined && !expected.equals(r.view)) {
    throw new ReefError('VIEW_MALFORMED', `view record is for ${String(r.view)}, expected ${expected.toString()}`)
  }
  if (!verify(r.signature, viewRecordPayload({ view: r.view.bytes, list: r.list.bytes, seq: r.seq, time: r.time }), r.owner)) {
    throw new ReefError('VIEW_BAD_SIGNATURE', `view record for ${r.view.toString()} seq ${r.seq} has a bad signature`)
  }
  return r
}

// Writer heads ---------------------------------------------------------------------------------

export interface WriterHeadInput { view: CID, vguid: CID, record?: CID, n: bigint, listSeq: bigint, seq: bigint, time?: bigint }

function headPayload (h: Omit<WriterHead, 'signature'>): Uint8Array {
  return writerHeadPayload({
    view: h.view.bytes, writer: h.writer, vguid: h.vguid.bytes, record: h.record?.bytes ?? new Uint8Array(0), n: h.n, listSeq: h.listSeq, seq: h.seq, time: h.time
  })
}

export function signWriterHead (keys: KeyPair, i: WriterHeadInput): WriterHead {
  const h: Omit<WriterHead, 'signature'> = { view: i.view, writer: keys.publicKey, vguid: i.vguid, n: i.n, listSeq: i.listSeq, seq: i.seq, time: i.time ?? BigInt(Date.now()) }
  if (i.record !== undefined) h.record = i.record
  return { ...h, signature: sign(headPayload(h), keys.secretKey) }
}

export function encodeWriterHead (h: WriterHead): Uint8Array {
  const o: Record<string, unknown> = { w: h.view, k: h.writer, v: h.vguid, n: h.n, l: h.listSeq, s: h.seq, t: h.time, sig: h.signature }
  if (h.record !== undefined) o.r = h.record
  return dagCbor.encode(o)
}

export function decodeWriterHead (bytes: Uint8Array): WriterHead {
  const d = strict(bytes, 'writer head', ['w', 'k', 'v', 'r?', 'n', 'l', 's', 't', 'sig'])
  const h: WriterHead = {
    view: d.cid('w', isViewId, 'a view id'),
    writer: d.bytes('k', 32),
    vguid: d.cid('v', isBlockCid, 'a VGUID'),
    n: d.u64('n'),
    listSeq: d.u64('l'),
    seq: d.u64('s'),
    time: d.u64('t'),
    signature: d.bytes('sig', 64)
  }
  if (d.o.r !== undefined) h.record = d.cid('r', isBlockCid, 'a log record')
  if ((h.record === undefined) !== (h.n === 0n)) malformed('writer head', 'a record counter needs its record and the other way round')
  return h
}

/**
 * A writer head on its own: layout and signature by the key it names (a forged one is
 * VIEW_BAD_SIGNATURE). `slot`: the writer slot it must be stored under.
 */
export function verifyWriterHead (bytes: Uint8Array, slot?: CID): WriterHead {
  const h = decodeWriterHead(bytes)
  if (slot !== undefined && !writerSlotFor(h.view, h.writer).equals(slot)) {
    throw new ReefError('VIEW_MALFORMED', `writer head of ${keyHex(h.writer)} in ${String(h.view)} is not for slot ${String(slot)}`)
  }
  if (!verify(h.signature, headPayload(h), h.writer)) {
    throw new ReefError('VIEW_BAD_SIGNATURE', `writer head of ${keyHex(h.writer)} in ${h.view.toString()} seq ${h.seq} has a bad signature`)
  }
  return h
}
