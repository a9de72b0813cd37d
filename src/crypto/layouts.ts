/**
 * Every signed or hashed byte layout in reef, each behind its own domain tag, so a signature or
 * hash made for one purpose can never be replayed as another (after hypercore's lib/caps.js).
 * Changing any layout here changes names on disk and on the wire: bump the tag's version.
 */
import { sha256Parts } from './hash.js'

const enc = new TextEncoder()

export const DOMAIN = {
  aguid: enc.encode('reef/aguid/v1\0'),
  head: enc.encode('reef/head/v1\0'),
  nodeId: enc.encode('reef/node-id/v1\0'),
  // Views (src/view): a shared file system's name, its owner-signed writer list, and the slot
  // and head of each writer in it.
  viewId: enc.encode('reef/view-id/v1\0'),
  viewRecord: enc.encode('reef/view-record/v1\0'),
  writerSlot: enc.encode('reef/writer-slot/v1\0'),
  writerHead: enc.encode('reef/writer-head/v1\0')
} as const

function u32be (n: number): Uint8Array {
  const b = new Uint8Array(4)
  new DataView(b.buffer).setUint32(0, n)
  return b
}

function u64be (n: bigint): Uint8Array {
  const b = new Uint8Array(8)
  new DataView(b.buffer).setBigUint64(0, n)
  return b
}

/** Length-prefixed field: keeps variable-length fields unambiguous inside one layout. */
function lp (bytes: Uint8Array): Uint8Array[] {
  return [u32be(bytes.length), bytes]
}

/** AGUID digest = sha256(tag || len(pub) || pub || len(name) || name). */
export function aguidDigest (ownerPublicKey: Uint8Array, name: Uint8Array): Uint8Array {
  return sha256Parts([DOMAIN.aguid, ...lp(ownerPublicKey), ...lp(name)])
}

export interface HeadFields {
  aguid: Uint8Array // CID bytes of the AGUID
  vguid: Uint8Array // CID bytes of the version root
  seq: bigint
  time: bigint // milliseconds since the epoch
}

/** The exact bytes a head signature covers: tag || aguid || vguid || seq (u64) || time (u64). */
export function headSigningPayload (h: HeadFields): Uint8Array {
  const parts = [DOMAIN.head, ...lp(h.aguid), ...lp(h.vguid), u64be(h.seq), u64be(h.time)]
  let len = 0
  for (const p of parts) len += p.length
  const out = new Uint8Array(len)
  let off = 0
  for (const p of parts) { out.set(p, off); off += p.length }
  return out
}

function concat (parts: Uint8Array[]): Uint8Array {
  let len = 0
  for (const p of parts) len += p.length
  const out = new Uint8Array(len)
  let off = 0
  for (const p of parts) { out.set(p, off); off += p.length }
  return out
}

/** View id digest = sha256(tag || len(owner) || owner || len(name) || name): an AGUID of its own kind. */
export function viewIdDigest (ownerPublicKey: Uint8Array, name: Uint8Array): Uint8Array {
  return sha256Parts([DOMAIN.viewId, ...lp(ownerPublicKey), ...lp(name)])
}

/** A writer's slot in a view (the key its head is stored under) = sha256(tag || view || writer). */
export function writerSlotDigest (view: Uint8Array, writer: Uint8Array): Uint8Array {
  return sha256Parts([DOMAIN.writerSlot, ...lp(view), ...lp(writer)])
}

/** What the owner signs for a version of a view's writer list: tag || view || list || seq || time. */
export function viewRecordPayload (r: { view: Uint8Array, list: Uint8Array, seq: bigint, time: bigint }): Uint8Array {
  return concat([DOMAIN.viewRecord, ...lp(r.view), ...lp(r.list), u64be(r.seq), u64be(r.time)])
}

export interface WriterHeadFields {
  view: Uint8Array // CID bytes of the view id
  writer: Uint8Array // 32-byte ed25519 public key
  vguid: Uint8Array // CID bytes of the writer's newest version root
  record: Uint8Array // CID bytes of its newest log record, empty when it has none
  n: bigint // that record's counter (0: none)
  listSeq: bigint // the view list version the writer wrote under
  seq: bigint
  time: bigint
}

/** What a writer signs for its head in a view: tag || view || writer || vguid || record || n || listSeq || seq || time. */
export function writerHeadPayload (h: WriterHeadFields): Uint8Array {
  return concat([DOMAIN.writerHead, ...lp(h.view), ...lp(h.writer), ...lp(h.vguid), ...lp(h.record), u64be(h.n), u64be(h.listSeq), u64be(h.seq), u64be(h.time)])
}
