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
  nodeId: enc.encode('reef/node-id/v1\0')
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
