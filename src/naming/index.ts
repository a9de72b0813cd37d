/**
 * Names: an AGUID is the stable name of a file system, derived from (owner public key, name);
 * a signed head binds it to a VGUID at a sequence number. Verification refuses a head signed by
 * another key (its AGUID would not match), a bad signature, a malformed encoding, and any seq
 * not above the highest already seen; two different heads at one seq are a fork.
 *   head block (dag-cbor): { a: AGUID, v: VGUID, s: seq, t: time ms, n: name, k: pubkey, sig }
 * The signature covers layouts.headSigningPayload (domain tag, AGUID, VGUID, seq, time).
 */
import * as dagCbor from '@ipld/dag-cbor'
import { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'
import { REEF_AGUID, SHA256_CODE, sameBytes } from '../block/index.js'
import { aguidDigest, headSigningPayload } from '../crypto/layouts.js'
import { sign, verify, type KeyPair } from '../crypto/sign.js'
import { ReefError } from '../errors.js'
import type { HeadStore } from '../store/types.js'

const enc = new TextEncoder()
export const MAX_HEAD_BYTES = 1024

export function aguidFor (ownerPublicKey: Uint8Array, name: string | Uint8Array): CID {
  const n = typeof name === 'string' ? enc.encode(name) : name
  return CID.createV1(REEF_AGUID, Digest.create(SHA256_CODE, aguidDigest(ownerPublicKey, n)))
}

export interface SignedHead {
  aguid: CID
  vguid: CID
  seq: bigint
  time: bigint
  name: Uint8Array
  publicKey: Uint8Array
  signature: Uint8Array
}

export function signHead (keys: KeyPair, name: string | Uint8Array, vguid: CID, seq: bigint, time: bigint = BigInt(Date.now())): SignedHead {
  const n = typeof name === 'string' ? enc.encode(name) : name
  const aguid = aguidFor(keys.publicKey, n)
  const signature = sign(headSigningPayload({ aguid: aguid.bytes, vguid: vguid.bytes, seq, time }), keys.secretKey)
  return { aguid, vguid, seq, time, name: n, publicKey: keys.publicKey, signature }
}

export function encodeHead (h: SignedHead): Uint8Array {
  return dagCbor.encode({ a: h.aguid, v: h.vguid, s: h.seq, t: h.time, n: h.name, k: h.publicKey, sig: h.signature })
}

const HEAD_KEYS = ['a', 'k', 'n', 's', 'sig', 't', 'v']

/** Strict decode: exactly the expected fields with the expected types and lengths. */
export function decodeHead (bytes: Uint8Array): SignedHead {
  const bad = (why: string): never => { throw new ReefError('HEAD_MALFORMED', `malformed head: ${why}`) }
  if (bytes.length > MAX_HEAD_BYTES) bad(`${bytes.length} bytes is too large`)
  let o: Record<string, unknown>
  try {
    o = dagCbor.decode(bytes)
  } catch (err) {
    return bad((err as Error).message)
  }
  if (o === null || typeof o !== 'object' || Array.isArray(o)) bad('not a map')
  const keys = Object.keys(o).sort()
  if (keys.join(',') !== HEAD_KEYS.join(',')) bad(`fields ${keys.join(',')}`)
  const aguid = CID.asCID(o.a)
  const vguid = CID.asCID(o.v)
  if (aguid === null || aguid.code !== REEF_AGUID || aguid.multihash.code !== SHA256_CODE || aguid.multihash.digest.length !== 32) return bad('a is not an AGUID')
  if (vguid === null || vguid.multihash.code !== SHA256_CODE || vguid.multihash.digest.length !== 32) return bad('v is not a VGUID')
  const int = (v: unknown, f: string): bigint => {
    if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) return BigInt(v)
    if (typeof v === 'bigint' && v >= 0n && v < 2n ** 64n) return v
    return bad(`${f} is not a u64`)
  }
  const bytesOf = (v: unknown, f: string, len?: number): Uint8Array => {
    if (!(v instanceof Uint8Array) || (len !== undefined && v.length !== len)) return bad(`${f} is not ${len ?? ''} bytes`)
    return v
  }
  return {
    aguid,
    vguid,
    seq: int(o.s, 's'),
    time: int(o.t, 't'),
    name: bytesOf(o.n, 'n'),
    publicKey: bytesOf(o.k, 'k', 32),
    signature: bytesOf(o.sig, 'sig', 64)
  }
}

/**
 * Checks a head on its own (no seq history): layout, key binding, signature. When `expected`
 * is given the head must be for that AGUID.
 */
export function verifyHead (bytes: Uint8Array, expected?: CID): SignedHead {
  const h = decodeHead(bytes)
  const name = h.aguid.toString()
  if (!aguidFor(h.publicKey, h.name).equals(h.aguid)) {
    throw new ReefError('HEAD_WRONG_KEY', `head for ${name} is signed by a key that does not own it`)
  }
  if (expected !== undefined && !expected.equals(h.aguid)) {
    throw new ReefError('HEAD_WRONG_KEY', `head is for ${name}, expected ${String(expected)}`)
  }
  const payload = headSigningPayload({ aguid: h.aguid.bytes, vguid: h.vguid.bytes, seq: h.seq, time: h.time })
  if (!verify(h.signature, payload, h.publicKey)) {
    throw new ReefError('HEAD_BAD_SIGNATURE', `head for ${h.aguid.toString()} seq ${h.seq} has a bad signature`)
  }
  return h
}

/**
 * The rollback-protected view of heads: accepts a head only if it verifies and its seq is
 * higher than any seen before for its AGUID (durably, through the head store).
 */
export class HeadBook {
  constructor (private readonly store: HeadStore) {}

  async accept (bytes: Uint8Array, expected?: CID): Promise<SignedHead> {
    const h = verifyHead(bytes, expected)
    const blocking = await this.store.putHeadIfHigher(h.aguid, h.seq, bytes)
    if (blocking === undefined) return h
    if (blocking.seq === h.seq) {
      if (sameBytes(blocking.bytes, bytes)) return h // the head we already hold: nothing new
      await this.store.recordFork(h.aguid, h.seq, bytes)
      throw new ReefError('HEAD_FORK', `fork: two different heads for ${h.aguid.toString()} at seq ${h.seq}`)
    }
    throw new ReefError('HEAD_ROLLBACK', `head seq ${h.seq} for ${h.aguid.toString()} is not above the highest seen (${blocking.seq})`)
  }

  async current (aguid: CID): Promise<SignedHead | undefined> {
    const e = await this.store.getHead(aguid)
    return e === undefined ? undefined : verifyHead(e.bytes, aguid)
  }

  async forks (aguid: CID): Promise<SignedHead[]> {
    return (await this.store.forks(aguid)).map(f => decodeHead(f.bytes))
  }
}
