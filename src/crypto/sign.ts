import { createHash } from 'node:crypto'
import * as ed from '@noble/ed25519'
import { sha512 } from '@noble/hashes/sha2.js'

// Enables @noble/ed25519's synchronous API (it ships async-only to stay dependency-free).
ed.hashes.sha512 = sha512

export interface KeyPair {
  secretKey: Uint8Array // 32-byte seed
  publicKey: Uint8Array // 32 bytes
}

export function generateKeyPair (): KeyPair {
  const { secretKey, publicKey } = ed.keygen()
  return { secretKey, publicKey }
}

export function keyPairFromSeed (secretKey: Uint8Array): KeyPair {
  return { secretKey, publicKey: ed.getPublicKey(secretKey) }
}

export function sign (message: Uint8Array, secretKey: Uint8Array): Uint8Array {
  return ed.sign(message, secretKey)
}

/**
 * Signatures already found good, by a digest of (signature, key, message): the same signed head or
 * view record is verified again and again (the DHT validates what it receives, the head books
 * what they store and read, a view mount every round), and a pure-JS ed25519 verification costs
 * about a millisecond: a follower view mount spent 450 ms of a 12 s profile in it. Bounded; the
 * oldest go first.
 */
const goodSignatures = new Map<string, true>()
const GOOD_SIGNATURES_MAX = 8192

/** Verifies; any malformed key or signature is a plain `false`, never an exception. */
export function verify (signature: Uint8Array, message: Uint8Array, publicKey: Uint8Array): boolean {
  if (signature.length !== 64 || publicKey.length !== 32) return false
  const key = createHash('sha256').update(signature).update(publicKey).update(message).digest('base64')
  if (goodSignatures.has(key)) return true
  let ok: boolean
  try {
    ok = ed.verify(signature, message, publicKey)
  } catch {
    return false
  }
  if (ok) {
    if (goodSignatures.size >= GOOD_SIGNATURES_MAX) goodSignatures.delete(goodSignatures.keys().next().value as string)
    goodSignatures.set(key, true)
  }
  return ok
}
