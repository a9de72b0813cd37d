/**
 * Inode numbers that stay unique when several writers' logs merge (issue 12 item 4).
 *
 * A number is a 14-bit writer prefix above a 37-bit counter, below 2^51 (the mount keeps the
 * numbers above 2^51 for old versions and `.reef`). The counter is the number of the log record
 * that creates the inode, so it never repeats for one writer and needs no state of its own: the
 * log's counter is already persisted in every version (`vv`). The prefix comes from a hash of
 * the writer's public key, so two writers' inodes can share a number only if their prefixes do
 * (about 1 in 16,000 for a pair); the merge handles that case deterministically by giving the
 * later file in merge order a number under MERGE_PREFIX (src/merge/apply.ts).
 *
 * The counter must never go back: a writer's log resumes it from the version it opens (its vv,
 * or for a merge its own entry there; after a lost head root, the version it starts from).
 *
 * Prefix 0 is the legacy range: numbers drawn from the per-file-system counter (`nextIno`)
 * before this scheme, and for entries of foreign trees that carry none. Versions and logs
 * written with them read and replay unchanged.
 */
import { sha256 } from '../crypto/hash.js'

export const COUNTER_BITS = 37
export const PREFIX_BITS = 14
const SPAN = 2 ** COUNTER_BITS
/** Numbers below this are legacy (prefix 0). */
export const LEGACY_LIMIT = SPAN
/** Numbers the merge gives to a file whose writer's number was taken by another's. */
export const MERGE_PREFIX = 1
const FIRST_WRITER_PREFIX = 2
const PREFIXES = 2 ** PREFIX_BITS
const TAG = new TextEncoder().encode('reef/ino-prefix/v1\n')

/** The writer prefix of a public key: 2 .. 2^14-1, from a domain-tagged hash of the key. */
export function inoPrefixOf (writer: Uint8Array): number {
  const h = sha256(Buffer.concat([TAG, writer]))
  const v = (h[0] << 8) | h[1]
  return FIRST_WRITER_PREFIX + (v % (PREFIXES - FIRST_WRITER_PREFIX))
}

/** The inode number made by the log record numbered `n` of the writer with `prefix`. */
export function writerIno (prefix: number, n: number): number | undefined {
  if (!Number.isSafeInteger(n) || n < 1 || n >= SPAN) return undefined
  return prefix * SPAN + n
}

export function prefixOfIno (ino: number): number { return Math.floor(ino / SPAN) }

/** A number under MERGE_PREFIX chosen from `seed` (the caller probes onward from it while taken). */
export function mergeIno (seed: Uint8Array, probe: number): number {
  const h = sha256(Buffer.concat([TAG, seed]))
  let v = 0
  for (let i = 0; i < 5; i++) v = v * 256 + h[i]
  return MERGE_PREFIX * SPAN + ((v + probe) % (SPAN - 2)) + 2
}
