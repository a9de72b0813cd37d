/**
 * The routing engine behind block placement on a real network: kad-dht's iterative
 * FIND_NODE walk (getClosestPeers) over its routing table. Found peers' addresses go into the
 * peer store, so the transfer that follows can dial them. Counts lookups and the peers each
 * one contacted (CFS's measure of lookup cost).
 */
import type { Libp2p, PeerId } from '@libp2p/interface'
import type { KadDHT } from '@libp2p/kad-dht'
import { kadId } from './placement.js'
import type { Member } from './members.js'
import type { LookupResult, RoutingEngine } from './regions.js'

/** kad-dht's k-bucket size: a lookup returns this many peers when the network holds them. */
export const KAD_BUCKET = 20
/** Bound of one lookup when the caller gives none. */
const LOOKUP_MS = 15_000

export interface LookupStats { lookups: number, contacted: number, failed: number, ms: number }

export function memberOf (id: PeerId, self = false): Member {
  return { id, key: id.toString(), kad: kadId(id.toMultihash().bytes), self }
}

export class KadEngine implements RoutingEngine<Member> {
  readonly full = KAD_BUCKET
  readonly stats: LookupStats = { lookups: 0, contacted: 0, failed: 0, ms: 0 }

  constructor (private readonly libp2p: Libp2p<{ dht: KadDHT }>, readonly self: Member) {}

  async lookup (key: Uint8Array, signal?: AbortSignal): Promise<LookupResult<Member>> {
    const t0 = Date.now()
    this.stats.lookups++
    const peers: Member[] = []
    let failed = 0
    const sig = signal !== undefined ? AbortSignal.any([signal, AbortSignal.timeout(LOOKUP_MS)]) : AbortSignal.timeout(LOOKUP_MS)
    try {
      for await (const e of this.libp2p.services.dht.getClosestPeers(key, { signal: sig })) {
        if (e.name === 'PEER_RESPONSE') this.stats.contacted++
        else if (e.name === 'QUERY_ERROR') failed++
        else if (e.name === 'FINAL_PEER') {
          if (e.peer.id.equals(this.libp2p.peerId)) continue
          peers.push(memberOf(e.peer.id))
          if (e.peer.multiaddrs.length > 0) {
            await this.libp2p.peerStore.merge(e.peer.id, { multiaddrs: e.peer.multiaddrs }).catch(() => {})
          }
        }
      }
    } catch (err) {
      // A walk cut short by its deadline still returns what it found, marked incomplete.
      failed++
      if (signal?.aborted === true) throw err
    } finally {
      this.stats.failed += failed
      this.stats.ms += Date.now() - t0
    }
    return { peers, complete: failed === 0 }
  }

  /** Peers in the routing table. */
  get tableSize (): number {
    return (this.libp2p.services.dht as unknown as { routingTable?: { size: number } }).routingTable?.size ?? 0
  }
}
