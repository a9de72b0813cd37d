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

/** Byte budget of one node when items report their size: a node closes once it reaches this. */
export const MAX_NODE_BYTES = 128 * 1024

/**
 * `sizeOf` (optional) estimates an item's encoded size: a node also closes once its items reach
 * MAX_NODE_BYTES, so large items (directory entries with big xattrs) cannot make a node too
 * large to be a block. Like the MAX_FANOUT cut, this depends only on the items since the last
 * cut, so edits stay local.
 */
export function group<T> (items: T[], digestOf: (item: T) => Uint8Array, sizeOf?: (item: T) => number): T[][] {
  const groups: T[][] = []
  let cur: T[] = []
  let bytes = 0
  for (const item of items) {
    cur.push(item)
    if (sizeOf !== undefined) bytes += sizeOf(item)
    if (cur.length >= MAX_FANOUT || bytes >= MAX_NODE_BYTES || isBoundary(digestOf(item))) {
      groups.push(cur)
      cur = []
      bytes = 0
    }
  }
  if (cur.length > 0) groups.push(cur)
  return groups
}
