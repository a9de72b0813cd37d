/**
 * reef's structured blocks are deterministic dag-cbor (sorted map keys, no floats or
 * indefinite lengths), so the same value always encodes to the same bytes and the same BGUID.
 * Decoders here never trust the input: every field is checked and a bad one is BAD_ENCODING.
 */
import * as dagCbor from '@ipld/dag-cbor'
import { CID } from 'multiformats/cid'
import { type Block, DAG_CBOR, makeBlock } from '../block/index.js'
import { ReefError } from '../errors.js'

export function encodeBlock (value: unknown): Block {
  return makeBlock(dagCbor.encode(value), DAG_CBOR)
}

export function decodeCbor (bytes: Uint8Array, what: string): Record<string, unknown> {
  let v: unknown
  try {
    v = dagCbor.decode(bytes)
  } catch (err) {
    throw ReefError.badEncoding(what, err)
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw ReefError.badEncoding(`${what}: not a map`)
  return v as Record<string, unknown>
}

export function field (obj: Record<string, unknown>, key: string, what: string) {
  const v = obj[key]
  const bad = (t: string): never => { throw ReefError.badEncoding(`${what}: field ${key} is not ${t}`) }
  return {
    int (): number {
      if (typeof v === 'bigint' && v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= 0n) return Number(v)
      if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) bad('a non-negative integer')
      return v as number
    },
    bigint (): bigint {
      if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) return BigInt(v)
      if (typeof v !== 'bigint' || v < 0n) bad('a non-negative integer')
      return v as bigint
    },
    str (): string { if (typeof v !== 'string') bad('a string'); return v as string },
    bytes (): Uint8Array { if (!(v instanceof Uint8Array)) bad('bytes'); return v as Uint8Array },
    cid (): CID { const c = CID.asCID(v); if (c === null) bad('a link'); return c as CID },
    array (): unknown[] { if (!Array.isArray(v)) bad('an array'); return v as unknown[] },
    map (): Record<string, unknown> {
      if (v === null || typeof v !== 'object' || Array.isArray(v) || v instanceof Uint8Array) bad('a map')
      return v as Record<string, unknown>
    },
    present (): boolean { return v !== undefined }
  }
}

export function asCid (v: unknown, what: string): CID {
  const c = CID.asCID(v)
  if (c === null) throw ReefError.badEncoding(`${what}: expected a link`)
  return c
}
