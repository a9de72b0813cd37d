/**
 * Block routing on a real network: reef's Kademlia (src/dht/kademlia.ts) over the block service's
 * 'near' request. The routing table holds the peers this node has heard from directly: peers
 * that connected and speak reef, peers that asked it something, peers that answered it. A lookup
 * walks toward a key asking up to ALPHA peers at a time; the addresses of the peers they name go
 * into libp2p's peer store, so the next request can dial them. No node knows every other, and
 * none dials everyone: a lookup contacts about alpha * log2 N peers, over short-lived
 * connections (the trimmer in connections.ts closes them when idle).
 *
 * Joins need nothing else: a new node looks itself up, and every node it asks on the way adds it
 * to its own table (the paper's join). Refresh: every REFRESH_MS the buckets not touched for
 * STALE_MS are refreshed by a lookup of a random key in each (at most MAX_REFRESH per pass), and
 * the node looks itself up again, so its neighbourhood stays exact.
 */
import crypto from 'node:crypto'
import type { Libp2p, PeerId } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import type { BlockService } from './blocks.js'
import { BUCKET_SIZE, keyInBucket, lookup, RoutingTable, sharedBits, type Walk } from './kademlia.js'
import type { Member } from './members.js'
import { kadId, type KadId } from './placement.js'
import type { LookupResult, RoutingEngine } from './regions.js'

const REFRESH_MS = 60_000
const STALE_MS = 10 * 60_000
const MAX_REFRESH = 8
/** Hop counts remembered for status (the newest). */
const HOPS_KEPT = 1024
/** Failed requests in a row that drop a contact from the table. */
const FAILS_TO_DROP = 2
/** Pause before a failed request is tried once more. */
const RETRY_MS = 250
/** Addresses kept per named peer. */
const MAX_ADDRS = 8
/**
 * How long a peer's addresses, as this node answers and merges them, are taken from memory
 * instead of libp2p's peer store. Every 'near' answer names 20 peers and every request names
 * 20 more; through the peer store each one was a locked, protobuf-decoded read or a merge (12%
 * of a 64-node network's CPU while it read). Addresses change rarely (a restart on a new port),
 * and a stale one costs a failed dial to a peer that is also reachable by its other addresses.
 */
const ADDR_TTL_MS = 60_000
/** Peers whose addresses are kept in memory (the cache is cleared when it grows past this). */
const ADDR_CACHE = 4096

/** Values by peer, each trusted for ADDR_TTL_MS; at most ADDR_CACHE of them. */
class Recent<V> {
  private readonly map = new Map<string, { v: V, at: number }>()

  get (key: string, now: number): V | undefined {
    const e = this.map.get(key)
    return e !== undefined && now - e.at <= ADDR_TTL_MS ? e.v : undefined
  }

  set (key: string, v: V, now: number): void {
    if (this.map.size >= ADDR_CACHE) this.map.clear()
    this.map.set(key, { v, at: now })
  }
}

/** A walk as a RoutingEngine lookup answers it: cut short by its deadline, the closest contacts it met, asked or not. */
function resultOf (w: Walk<Member>): LookupResult<Member> {
  return { peers: w.complete ? w.peers : w.met, complete: w.complete && w.failed.length === 0, failed: w.failed.length, cut: !w.complete }
}

export function memberOf (id: PeerId, self = false): Member {
  return { id, key: id.toString(), kad: kadId(id.toMultihash().bytes), self }
}

export interface RouterStats {
  lookups: number
  queries: number
  failedQueries: number
  refreshes: number
  added: number
  removed: number
}

export interface RouterStatus extends RouterStats { table: number, depth: number, hopsP50: number, hopsP95: number }

export type RouteEvent = { kind: 'added', m: Member } | { kind: 'removed', m: Member }

/**
 * Contacts a block lookup walks to (its result size, and the set whose answers end it). Placement
 * needs the k closest (3); ten leave a margin for dead and refusing peers and still enumerate a
 * key region holding k nodes, at about half the requests of a 20-contact walk (each request may
 * cost a new connection and its handshakes under a connection bound).
 */
export const WALK_SIZE = 10

export class Router implements RoutingEngine<Member> {
  readonly full = WALK_SIZE
  readonly table: RoutingTable<Member>
  readonly stats: RouterStats = { lookups: 0, queries: 0, failedQueries: 0, refreshes: 0, added: 0, removed: 0 }
  private readonly hops: number[] = []
  private readonly listeners: Array<(e: RouteEvent) => void> = []
  private readonly walked: Array<(target: KadId, res: LookupResult<Member>) => void> = []
  private timer?: NodeJS.Timeout
  private refreshing?: Promise<void>
  private lastSelfLookup = 0
  private stopped = false

  constructor (
    private readonly libp2p: Libp2p,
    private readonly service: BlockService,
    readonly self: Member,
    private readonly opts: { log?: (line: string) => void, addrFilter?: (ma: Multiaddr) => boolean } = {}
  ) {
    this.table = new RoutingTable<Member>(self)
  }

  onChange (fn: (e: RouteEvent) => void): void { this.listeners.push(fn) }

  private emit (e: RouteEvent): void { for (const l of this.listeners) l(e) }

  /** A peer was heard from directly (it connected speaking reef, asked us, or answered us). */
  seen (id: PeerId): void {
    if (this.stopped) return
    const m = this.table.get(id.toString()) ?? memberOf(id)
    if (this.table.add(m) === 'added') {
      this.stats.added++
      this.emit({ kind: 'added', m })
    }
  }

  /** Addresses last merged into the peer store per peer (as one string). */
  private readonly merged = new Recent<string>()
  /** What this node answers for a peer in 'near' (multiaddr/p2p/id strings). */
  private readonly answers = new Recent<string[]>()

  /** Consecutive failed requests per contact (cleared when it answers). */
  private readonly failures = new Map<string, number>()

  /**
   * A peer failed a request: after FAILS_TO_DROP in a row (or at once, `dead`, when a liveness
   * check failed) it leaves the table; it is added again when heard from. One failure is often a
   * busy or refusing peer, not a gone one.
   */
  failed (key: string, dead = false): void {
    const n = (this.failures.get(key) ?? 0) + 1
    if (!dead && n < FAILS_TO_DROP) {
      if (this.failures.size > 4096) this.failures.clear()
      this.failures.set(key, n)
      return
    }
    this.failures.delete(key)
    const m = this.table.get(key)
    if (m === undefined || !this.table.remove(key)) return
    this.stats.removed++
    this.emit({ kind: 'removed', m })
  }

  /**
   * RoutingEngine: the prefix length of the region a lookup is likely to enumerate, from this
   * node's own neighbourhood (the table knows it completely: the WALK_SIZE contacts closest to
   * self span a subtree of about the size of any other's, ids being uniform). 0 when the table
   * holds fewer: a lookup then meets every node there is.
   */
  regionBits (): number | undefined {
    const near = this.table.closest(this.self.kad, WALK_SIZE)
    if (near.length < WALK_SIZE) return 0
    return sharedBits(this.self.kad, near[near.length - 1].kad) + 1
  }

  /** RoutingEngine: the contacts of the table, less those whose last request failed. */
  known (): Member[] {
    return this.table.all().filter(m => !this.failures.has(m.key))
  }

  /** RoutingEngine: the closest nodes to a block key (its kad id is sha256 of the key). */
  async lookup (key: Uint8Array, signal?: AbortSignal): Promise<LookupResult<Member>> {
    return resultOf(await this.walk(kadId(key), signal))
  }

  /** Told of what the table's own walks (self lookups, bucket refreshes) found: see Regions.learn. */
  onWalked (fn: (target: KadId, res: LookupResult<Member>) => void): void { this.walked.push(fn) }

  /** A refresh walk, its answer passed on (`onWalked`). */
  private async maintain (target: KadId): Promise<void> {
    const res = resultOf(await this.walk(target, AbortSignal.timeout(15_000)))
    for (const l of this.walked) l(target, res)
  }

  /** The iterative walk toward a kad id. */
  async walk (target: KadId, signal?: AbortSignal): Promise<Walk<Member>> {
    this.stats.lookups++
    const w = await lookup(target, this.table.closest(target, BUCKET_SIZE), async c => await this.ask(c, target, signal), this.self.key, { signal, k: WALK_SIZE })
    this.stats.queries += w.queries
    this.stats.failedQueries += w.failed.length
    for (const f of w.failed) this.failed(f.key)
    if (w.peers.length > 0) {
      this.hops.push(w.hops)
      if (this.hops.length > HOPS_KEPT) this.hops.shift()
    }
    return w
  }

  private async ask (c: Member, target: KadId, signal?: AbortSignal): Promise<Member[]> {
    if (signal?.aborted === true) throw signal.reason
    let list: string[]
    const t0 = Date.now()
    try {
      list = await this.service.nearOf(c.id, target)
    } catch (err) {
      // Once more after a moment if it failed fast: a peer at its connection ceiling refuses,
      // then has room. One that let the request time out is not asked twice.
      if (Date.now() - t0 > 1000) throw err
      await new Promise(resolve => setTimeout(resolve, RETRY_MS))
      signal?.throwIfAborted()
      list = await this.service.nearOf(c.id, target)
    }
    this.failures.delete(c.key)
    this.seen(c.id)
    const byPeer = new Map<string, Multiaddr[]>()
    for (const s of list) {
      const at = s.lastIndexOf('/p2p/')
      if (at < 0) continue
      const id = s.slice(at + 5)
      let ma: Multiaddr
      try {
        ma = multiaddr(s.slice(0, at))
      } catch {
        continue
      }
      if (this.opts.addrFilter !== undefined && !this.opts.addrFilter(ma)) continue
      let addrs = byPeer.get(id)
      if (addrs === undefined) byPeer.set(id, addrs = [])
      if (addrs.length < MAX_ADDRS) addrs.push(ma)
    }
    const out: Member[] = []
    for (const [id, addrs] of byPeer) {
      if (id === this.self.key) continue
      let pid: PeerId
      try {
        pid = peerIdFromString(id)
      } catch {
        continue
      }
      if (addrs.length > 0) {
        // Into the peer store only when they differ from what was merged lately.
        const joined = addrs.map(a => a.toString()).sort().join(' ')
        const now = Date.now()
        if (this.merged.get(id, now) !== joined) {
          this.merged.set(id, joined, now)
          await this.libp2p.peerStore.merge(pid, { multiaddrs: addrs }).catch(() => {})
        }
      }
      out.push(this.table.get(id) ?? memberOf(pid))
    }
    return out
  }

  /** Answers a peer's 'near' request: the contacts closest to `target`, as multiaddr/p2p/id strings. */
  async near (from: PeerId, target: KadId): Promise<string[]> {
    this.seen(from)
    const out: string[] = []
    const now = Date.now()
    for (const m of this.table.closest(target, BUCKET_SIZE)) {
      if (m.key === from.toString()) continue
      let lines = this.answers.get(m.key, now)
      if (lines === undefined) {
        lines = []
        try {
          const p = await this.libp2p.peerStore.get(m.id)
          for (const a of p.addresses) {
            if (this.opts.addrFilter !== undefined && !this.opts.addrFilter(a.multiaddr)) continue
            if (lines.length >= 2) break
            lines.push(`${a.multiaddr.toString()}/p2p/${m.key}`)
          }
        } catch {}
        // A peer without addresses yet is looked up again next time.
        if (lines.length === 0) continue
        this.answers.set(m.key, lines, now)
      }
      out.push(...lines)
    }
    return out
  }

  start (): void {
    this.timer = setInterval(() => { void this.refresh() }, REFRESH_MS)
    this.timer.unref()
  }

  /**
   * Looks this node up (its neighbours learn of it and it of them), then refreshes stale buckets.
   * One pass at a time; `force` looks itself up even if it did recently (a join).
   */
  async refresh (force = false): Promise<void> {
    if (this.refreshing !== undefined) return await this.refreshing
    this.refreshing = (async () => {
      // Just after a dial the table may still be empty: a peer enters it once identify says it
      // speaks reef, asynchronously. A join waits for that (bounded).
      for (let i = 0; force && i < 100 && this.table.size === 0 && !this.stopped; i++) await new Promise(resolve => setTimeout(resolve, 50))
      if (this.table.size === 0 || this.stopped) return
      this.stats.refreshes++
      const now = Date.now()
      if (force || now - this.lastSelfLookup >= STALE_MS / 2) {
        this.lastSelfLookup = now
        await this.maintain(this.self.kad).catch(() => {})
      }
      const depth = Math.min(this.table.depth + 1, 64)
      for (const bits of this.table.stale(STALE_MS, depth).slice(0, MAX_REFRESH)) {
        if (this.stopped) break
        await this.maintain(keyInBucket(this.self.kad, bits, n => crypto.randomBytes(n))).catch(() => {})
      }
    })().finally(() => { this.refreshing = undefined })
    await this.refreshing
  }

  status (): RouterStatus {
    const h = [...this.hops].sort((a, b) => a - b)
    const q = (p: number): number => h.length === 0 ? 0 : h[Math.min(h.length - 1, Math.floor(p * h.length))]
    return { ...this.stats, table: this.table.size, depth: this.table.depth, hopsP50: q(0.5), hopsP95: q(0.95) }
  }

  async stop (): Promise<void> {
    this.stopped = true
    if (this.timer !== undefined) clearInterval(this.timer)
    await this.refreshing?.catch(() => {})
  }
}
