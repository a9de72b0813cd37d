/**
 * The repair decision, shared by the real Replicator and the scale simulator (bench/scale/sim.ts):
 * given the keys a node holds and, for each, its placement (the k nodes closest to the key, as
 * Regions or a member list found them, self possibly among them), which peers other than self
 * should hold which keys. Pure: no network, no store. The caller asks each target which of its
 * keys it lacks and pushes those.
 *
 * Targets come out grouped by peer, in the order each peer was first met (key order, then
 * placement order), and each peer's keys in key order, so that a caller batching its checks per
 * peer (one has/push exchange per peer per batch) gets a stable, reproducible plan.
 */

export interface RepairTarget<P> {
  peer: P
  /** The keys `peer` should hold, in the order they were given. */
  keys: Uint8Array[]
}

/**
 * For each key, its placement (k closest, self maybe among them): who, other than self, should
 * hold it. `placements[i]` belongs to `keys[i]`. `skip(key)` leaves a key out (for example one
 * already queued for a push). A peer named twice in one placement counts once for that key.
 */
export function planRepair<P extends { key: string, self: boolean }> (
  keys: Uint8Array[],
  placements: P[][],
  skip?: (key: Uint8Array) => boolean
): RepairTarget<P>[] {
  if (placements.length !== keys.length) throw new Error(`planRepair: ${keys.length} keys but ${placements.length} placements`)
  const byPeer = new Map<string, RepairTarget<P>>()
  for (let i = 0; i < keys.length; i++) {
    const key = keys[i]
    if (skip?.(key) === true) continue
    for (const p of placements[i]) {
      if (p.self) continue
      let t = byPeer.get(p.key)
      if (t === undefined) byPeer.set(p.key, t = { peer: p, keys: [] })
      if (t.keys[t.keys.length - 1] !== key) t.keys.push(key)
    }
  }
  return [...byPeer.values()]
}
