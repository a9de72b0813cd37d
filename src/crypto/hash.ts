import { createHash } from 'node:crypto'
import { sha256 as nobleSha256 } from '@noble/hashes/sha2.js'

/**
 * sha256 used for every BGUID. Bulk hashing goes through node:crypto (OpenSSL, ~10x faster
 * than pure JS here); test/crypto.test.ts proves it agrees with @noble/hashes byte for byte.
 */
export function sha256 (bytes: Uint8Array): Uint8Array {
  const d = createHash('sha256').update(bytes).digest()
  return new Uint8Array(d.buffer, d.byteOffset, d.byteLength)
}

/** The pure-JS reference implementation (@noble/hashes), for cross-checks and small inputs. */
export function sha256Noble (bytes: Uint8Array): Uint8Array {
  return nobleSha256(bytes)
}

/** sha256 over several parts without concatenating them first. */
export function sha256Parts (parts: Uint8Array[]): Uint8Array {
  const h = createHash('sha256')
  for (const p of parts) h.update(p)
  const d = h.digest()
  return new Uint8Array(d.buffer, d.byteOffset, d.byteLength)
}
