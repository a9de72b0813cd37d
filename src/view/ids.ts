/**
 * Names in a view. A view id is an AGUID of its own kind: the hash of (owner key, view name)
 * under its own domain tag and multicodec, so it can never be mistaken for (or collide with) the
 * AGUID of a single-writer file system of the same owner and name. A writer slot names one
 * writer's place in one view; its head is stored under it (locally and on the DHT).
 * Keys are written as 64 lowercase hex digits, the form `reef id` prints and `reef view` takes
 * (the same form the log's version vectors use for writers).
 */
import { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'
import { parseGuid, SHA256_CODE } from '../block/index.js'
import { viewIdDigest, writerSlotDigest } from '../crypto/layouts.js'
import { ReefError } from '../errors.js'

/** Private-use multicodecs (beside REEF_AGUID 0x300001): a view id and a writer slot. */
export const REEF_VIEW = 0x300002
export const REEF_WRITER_SLOT = 0x300003

const enc = new TextEncoder()

export function viewIdFor (owner: Uint8Array, name: string | Uint8Array): CID {
  const n = typeof name === 'string' ? enc.encode(name) : name
  return CID.createV1(REEF_VIEW, Digest.create(SHA256_CODE, viewIdDigest(owner, n)))
}

export function writerSlotFor (view: CID, writer: Uint8Array): CID {
  return CID.createV1(REEF_WRITER_SLOT, Digest.create(SHA256_CODE, writerSlotDigest(view.bytes, writer)))
}

export const isViewId = (c: CID): boolean => c.code === REEF_VIEW && c.multihash.code === SHA256_CODE && c.multihash.digest.length === 32
export const isWriterSlot = (c: CID): boolean => c.code === REEF_WRITER_SLOT && c.multihash.code === SHA256_CODE && c.multihash.digest.length === 32

/** A view id given on the command line; anything else (an AGUID, a block id) is BAD_GUID. */
export function parseViewId (text: string): CID {
  const c = parseGuid(text)
  if (!isViewId(c)) throw ReefError.badGuid(text, 'not a view id (reef view create prints one)')
  return c
}

export const keyHex = (key: Uint8Array): string => Buffer.from(key.buffer, key.byteOffset, key.byteLength).toString('hex')

/** A writer key as `reef id` prints it: 64 hex digits (case-insensitive, surrounding blanks ignored). */
export function parseKey (text: string): Uint8Array {
  const s = text.trim().toLowerCase()
  if (!/^[0-9a-f]{64}$/.test(s)) {
    const shown = JSON.stringify(text.length > 80 ? text.slice(0, 77) + '...' : text)
    throw new ReefError('VIEW_BAD_KEY', `malformed writer key ${shown}: expected 64 hex digits, the form \`reef id\` prints`)
  }
  return new Uint8Array(Buffer.from(s, 'hex'))
}
