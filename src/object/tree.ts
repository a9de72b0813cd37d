/**
 * Content-defined B-tree grouping shared by file trees and directories: a node boundary
 * falls after an item whose key hash has a rare property (about 1 in FANOUT) or when a node is
 * full. Boundaries depend on the items themselves, not on their positions, so an edit rebuilds
 * only the nodes around it and the path to the root; everything else keeps its BGUID.
 */
export const FANOUT = 128
export const MAX_FANOUT = 1024

/** True when the item with this 32-byte digest ends a node. */
export function isBoundary (digest: Uint8Array): boolean {
  // P(first byte < 2) = 1/128 = 1/FANOUT.
  return digest[0] < 256 / FANOUT
}

export function group<T> (items: T[], digestOf: (item: T) => Uint8Array): T[][] {
  const groups: T[][] = []
  let cur: T[] = []
  for (const item of items) {
    cur.push(item)
    if (cur.length >= MAX_FANOUT || isBoundary(digestOf(item))) {
      groups.push(cur)
      cur = []
    }
  }
  if (cur.length > 0) groups.push(cur)
  return groups
}
