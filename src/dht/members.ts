/**
 * Who is in the network: the peers that speak the reef block protocol, learnt from libp2p's
 * topology (identify) and dropped when their connection closes. Placement is computed from this
 * view: in a small network every node sees every other, so all agree on the k closest.
 */
import type { PeerId } from '@libp2p/interface'
import { closest, kadId, type KadId } from './placement.js'

export interface Member { id: PeerId, key: string, kad: KadId, self: boolean }

export class Members {
  readonly self: Member
  private readonly peers = new Map<string, Member>()
  private readonly leaveListeners: Array<(m: Member) => void> = []
  private readonly joinListeners: Array<(m: Member) => void> = []

  constructor (selfId: PeerId) {
    this.self = { id: selfId, key: selfId.toString(), kad: kadId(selfId.toMultihash().bytes), self: true }
  }

  add (id: PeerId): void {
    const key = id.toString()
    if (key === this.self.key || this.peers.has(key)) return
    const m: Member = { id, key, kad: kadId(id.toMultihash().bytes), self: false }
    this.peers.set(key, m)
    for (const l of this.joinListeners) l(m)
  }

  remove (id: PeerId): void {
    const m = this.peers.get(id.toString())
    if (m === undefined) return
    this.peers.delete(m.key)
    for (const l of this.leaveListeners) l(m)
  }

  onLeave (fn: (m: Member) => void): void { this.leaveListeners.push(fn) }
  onJoin (fn: (m: Member) => void): void { this.joinListeners.push(fn) }

  get size (): number { return this.peers.size + 1 }
  others (): Member[] { return [...this.peers.values()] }
  get (key: string): Member | undefined { return this.peers.get(key) }

  /** The k members (self included) closest to a block key. */
  closest (blockKey: Uint8Array, k: number): Member[] {
    return closest(kadId(blockKey), [this.self, ...this.peers.values()], k)
  }

  /** Every member ordered by distance to a block key (self included). */
  ranked (blockKey: Uint8Array): Member[] {
    return closest(kadId(blockKey), [this.self, ...this.peers.values()], Infinity)
  }
}
