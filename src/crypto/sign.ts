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

/** Verifies; any malformed key or signature is a plain `false`, never an exception. */
export function verify (signature: Uint8Array, message: Uint8Array, publicKey: Uint8Array): boolean {
  if (signature.length !== 64 || publicKey.length !== 32) return false
  try {
    return ed.verify(signature, message, publicKey)
  } catch {
    return false
  }
}
