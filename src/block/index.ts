/**
 * Blocks: immutable byte strings named by their BGUID, the sha256 of their bytes written as a
 * CIDv1 (codec raw for opaque data, dag-cbor for reef's structured blocks). Stores key blocks by
 * the 32-byte digest, so the codec only says how to decode, never what the bytes are.
 */
import { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'
import { ReefError } from '../errors.js'
import { sha256 } from '../crypto/hash.js'

export const SHA256_CODE = 0x12
export const RAW = 0x55
export const DAG_CBOR = 0x71
/** Private-use multicodec (0x300000-0x3fffff) marking a CID as an AGUID rather than a block. */
export const REEF_AGUID = 0x300001
/** Largest block any store accepts: the biggest chunk is 1 MiB, structured blocks stay below. */
export const MAX_BLOCK_SIZE = 2 * 1024 * 1024

export { CID }

export interface Block {
  cid: CID
  bytes: Uint8Array
}

export function cidFor (bytes: Uint8Array, codec: number = RAW): CID {
  return CID.createV1(codec, Digest.create(SHA256_CODE, sha256(bytes)))
}

export function makeBlock (bytes: Uint8Array, codec: number = RAW): Block {
  if (bytes.length > MAX_BLOCK_SIZE) {
    throw new ReefError('BLOCK_TOO_LARGE', `block of ${bytes.length} bytes exceeds the ${MAX_BLOCK_SIZE}-byte limit`)
  }
  return { cid: cidFor(bytes, codec), bytes }
}

/** The digest a store keys a block by. Only sha256 CIDs name reef blocks. */
export function blockKey (cid: CID): Uint8Array {
  if (cid.multihash.code !== SHA256_CODE || cid.multihash.digest.length !== 32) {
    throw ReefError.badGuid(cid.toString(), 'not a sha256 block id')
  }
  return cid.multihash.digest
}

export function sameBytes (a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

/** Throws BLOCK_CORRUPT unless `bytes` hash to `cid`. Called on every block read from any store. */
export function verifyBlock (cid: CID, bytes: Uint8Array, where: string): Uint8Array {
  if (!sameBytes(sha256(bytes), blockKey(cid))) throw ReefError.blockCorrupt(cid.toString(), where)
  return bytes
}

/** Parses a BGUID/VGUID/AGUID string; any malformed text is a BAD_GUID error. */
export function parseGuid (text: string): CID {
  let cid: CID
  try {
    cid = CID.parse(text.trim())
  } catch (err) {
    throw ReefError.badGuid(text, (err as Error).message)
  }
  if (cid.version !== 1) throw ReefError.badGuid(text, 'reef GUIDs are CIDv1')
  if (cid.multihash.code !== SHA256_CODE || cid.multihash.digest.length !== 32) {
    throw ReefError.badGuid(text, 'reef GUIDs use sha256')
  }
  return cid
}

export function cidFromKey (key: Uint8Array, codec: number = RAW): CID {
  return CID.createV1(codec, Digest.create(SHA256_CODE, key))
}

export function isAguid (cid: CID): boolean { return cid.code === REEF_AGUID }
