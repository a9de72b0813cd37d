/**
 * Kademlia placement: a block lives on the k nodes whose ids are XOR-closest to its key.
 * Both sides are hashed into one 256-bit id space like kad-dht does (sha256 of the peer id's
 * multihash bytes; sha256 of the block's digest), so block ids and node ids mix uniformly.
 */
import { sha256 } from '../crypto/hash.js'

export type KadId = Uint8Array

export function kadId (bytes: Uint8Array): KadId { return sha256(bytes) }

/** Negative if a is closer to target than b. */
export function compareDistance (target: KadId, a: KadId, b: KadId): number {
  for (let i = 0; i < target.length; i++) {
    const da = a[i] ^ target[i]
    const db = b[i] ^ target[i]
    if (da !== db) return da - db
  }
  return 0
}

/** The k members closest to `target`, closest first. */
export function closest<T extends { kad: KadId }> (target: KadId, members: Iterable<T>, k: number): T[] {
  return [...members].sort((a, b) => compareDistance(target, a.kad, b.kad)).slice(0, k)
}

/**
 * Whether one of `gone` would be among the `n` nodes closest to `target`, next to `closestKnown`
 * (the n closest live nodes a node knows, closest first): only then can a record put on the n
 * closest have lost a holder. A node that knows fewer than n near the target cannot tell: true.
 */
export function wasNear (target: KadId, closestKnown: Array<{ kad: KadId }>, n: number, gone: KadId[]): boolean {
  if (gone.length === 0) return false
  if (closestKnown.length < n) return true
  const farthest = closestKnown[n - 1].kad
  return gone.some(g => compareDistance(target, g, farthest) < 0)
}
