/**
 * Placement by Kademlia lookups, batched by key region. A lookup for target T returns the
 * `full` nodes the network holds closest to T; every node XOR-closer to T than the farthest of
 * them was found. So if the farthest lies at distance d, with z leading zero bits, the subtree
 * of ids sharing T's first z+1 bits is enumerated completely. When that subtree holds at least
 * k nodes, the k closest to ANY key under its prefix are among them (a node outside the
 * subtree is farther from that key than every node inside): one lookup serves every key of the
 * region, and a put of B blocks costs about min(B, regions) lookups instead of B (the idea of
 * kubo's sweep provider). Regions expire after `ttlMs` and are dropped on churn: a member that
 * failed, or a new node seen inside a region's prefix.
 *
 * Written against RoutingEngine only, so that a simulator can drive the same code.
 */
import { byDistance, sharedBits } from './kademlia.js'
import { compareDistance, kadId, type KadId } from './placement.js'

export interface Peer { key: string, kad: KadId, self: boolean }

export interface LookupResult<P extends Peer> {
  /** Closest first, self not included. */
  peers: P[]
  /** False if some peer failed to answer during the walk (the result may miss nodes). */
  complete: boolean
  /** Requests of the walk that failed. */
  failed?: number
  /** The walk stopped before its end condition (a deadline): `peers` is its best guess. */
  cut?: boolean
}

export interface RoutingEngine<P extends Peer> {
  readonly self: P
  /** Iterative lookup: the (up to `full`) closest nodes the network knows to a key. */
  lookup: (key: Uint8Array, signal?: AbortSignal) => Promise<LookupResult<P>>
  /** How many nodes a complete lookup returns when the network holds that many (Kademlia's bucket size). */
  readonly full: number
  /**
   * The prefix length a lookup's region is likely to have (judged from local knowledge, e.g. the
   * routing table around this node), or undefined: lets `closestMany` run lookups for different
   * regions at once without two of them enumerating the same one.
   */
  regionBits?: () => number | undefined
  /**
   * The peers this node knows of now (its routing table), or undefined. A walk's answer misses
   * a peer that joined while it ran (a join meets its neighbours while they meet it); `learn`
   * adds those that fall in the region it caches.
   */
  known?: () => P[]
}

/** Lifetime of a region whose lookup saw a peer fail. */
const INCOMPLETE_TTL_MS = 15_000

/**
 * Lookups a put's placement runs at once (`closestMany`'s concurrency for the replicator): the
 * three lookups in flight the default connection bound leaves room for. One at a time, a put
 * spanning R key regions waited R lookups before its first push (a 16-node network: 2-3).
 */
export const LOOKUPS_IN_FLIGHT = 3

/** Keyspace order is distance from zero. */
const ZERO = new Uint8Array(32)

interface Region<P> { len: number, prefix: string, target: KadId, members: P[], at: number, ttl: number }

export interface RegionStats { lookups: number, hits: number, regions: number, dropped: number, failedRequests: number }

function prefixOf (id: KadId, len: number): string {
  const bytes = Buffer.from(id.subarray(0, Math.ceil(len / 8)))
  if (len % 8 !== 0) bytes[bytes.length - 1] &= 0xff << (8 - len % 8)
  return `${len}:${bytes.toString('hex')}`
}

export class Regions<P extends Peer> {
  private readonly byPrefix = new Map<string, Region<P>>()
  /** Prefix lengths present in the cache, so a key is matched with one map probe per length. */
  private readonly lengths = new Map<number, number>()
  readonly stats: RegionStats = { lookups: 0, hits: 0, regions: 0, dropped: 0, failedRequests: 0 }
  private readonly listeners: Array<(cause: 'join' | 'leave') => void> = []
  /** Prefix length of the region enumerated last (regions elsewhere are about as long). */
  private lastLen?: number

  constructor (readonly engine: RoutingEngine<P>, readonly k: number, private readonly opts: { ttlMs?: number, now?: () => number } = {}) {}

  private now (): number { return this.opts.now?.() ?? Date.now() }

  /** Called when a region is dropped for churn (placement may have changed: repair), with its cause. */
  onChurn (fn: (cause: 'join' | 'leave') => void): void { this.listeners.push(fn) }

  /** The k closest to a key from a cached region, or undefined (no network traffic). */
  cached (key: Uint8Array, kad = kadId(key)): P[] | undefined {
    for (const len of this.lengths.keys()) {
      const r = this.byPrefix.get(prefixOf(kad, len))
      if (r === undefined) continue
      if (this.now() - r.at > r.ttl) {
        this.remove(r)
        continue
      }
      this.stats.hits++
      return closestK(kad, r.members, this.k)
    }
    return undefined
  }

  /** The k closest nodes (self may be one) to a key: from the cache, or by one lookup. */
  async closest (key: Uint8Array, signal?: AbortSignal): Promise<P[]> {
    const kad = kadId(key)
    return this.cached(key, kad) ?? await this.lookup(key, kad, signal)
  }

  /**
   * The k closest for each key, in key order. Keys are taken in keyspace order, so each lookup
   * enumerates a region that serves the keys after it. Up to `concurrency` lookups run at once,
   * each for a key outside the regions the lookups in flight are expected to enumerate (see
   * `expectedBits`); a key inside one waits for that lookup, then is served by its region (or,
   * if the region turned out narrower, is looked up in the next pass). `onResolved` hears of
   * each key as soon as its answer is known, so a caller can act on a region's keys while the
   * other lookups are still walking.
   */
  async closestMany (keys: Uint8Array[], signal?: AbortSignal, concurrency = 1, onResolved?: (i: number, closest: P[]) => void): Promise<P[][]> {
    const kads = keys.map(k => kadId(k))
    const byKeyspace = (a: number, b: number): number => compareDistance(ZERO, kads[a], kads[b])
    let todo = keys.map((_k, i) => i).sort(byKeyspace)
    const out: P[][] = new Array(keys.length)
    const resolve = (i: number, closest: P[]): void => {
      out[i] = closest
      onResolved?.(i, closest)
    }
    let failure: { err: unknown } | undefined
    // Each pass resolves at least its first key (nothing is in flight when a pass starts).
    for (let pass = 0; todo.length > 0 && pass <= keys.length; pass++) {
      const later: number[] = []
      const inflight = new Map<Promise<void>, { kad: KadId, len: number, waiting: number[], done: boolean }>()
      for (const i of todo) {
        for (;;) {
          if (failure !== undefined) break
          if (signal?.aborted === true) throw signal.reason
          const hit = this.cached(keys[i], kads[i])
          if (hit !== undefined) { resolve(i, hit); break }
          const covering = [...inflight.values()].find(f => !f.done && sharedBits(kads[i], f.kad) >= f.len)
          if (covering !== undefined) { covering.waiting.push(i); break }
          if (inflight.size >= Math.max(1, concurrency)) {
            await Promise.race(inflight.keys())
            continue
          }
          const f = { kad: kads[i], len: this.expectedBits(), waiting: [] as number[], done: false }
          const p: Promise<void> = this.lookup(keys[i], kads[i], signal)
            .then(closest => {
              f.done = true
              resolve(i, closest)
              for (const j of f.waiting) {
                const got = this.cached(keys[j], kads[j])
                if (got !== undefined) resolve(j, got)
                else later.push(j)
              }
            }, err => { f.done = true; failure ??= { err } })
            .finally(() => inflight.delete(p))
          inflight.set(p, f)
          break
        }
      }
      await Promise.all(inflight.keys())
      if (failure !== undefined) throw failure.err
      todo = later.sort(byKeyspace)
    }
    return out
  }

  /**
   * The prefix length a new lookup's region is expected to have: the engine's estimate, else
   * that of the region enumerated last, less one bit (regions vary in length; one guessed too
   * narrow costs a second lookup of the same region, one guessed too wide only waits for it);
   * 0 (every key waits for the lookup) when neither is known.
   */
  private expectedBits (): number {
    return Math.max(0, (this.engine.regionBits?.() ?? this.lastLen ?? 0) - 1)
  }

  private async lookup (key: Uint8Array, kad: KadId, signal?: AbortSignal): Promise<P[]> {
    return closestK(kad, await this.lookupAll(key, signal, kad), this.k)
  }

  /** Every node one lookup found (self included), closest first; caches the region it enumerated. */
  async lookupAll (key: Uint8Array, signal?: AbortSignal, kad = kadId(key)): Promise<P[]> {
    this.stats.lookups++
    const res = await this.engine.lookup(key, signal)
    this.stats.failedRequests += res.failed ?? 0
    return this.learn(kad, res)
  }

  /**
   * What a walk toward `kad` found, closest first (self included); the region it enumerated is
   * cached. Also fed the routing table's own walks (a join's self lookup, bucket refreshes),
   * which enumerate regions as well: a node's first put then finds its own neighbourhood's
   * keys placed without a lookup.
   */
  learn (kad: KadId, res: LookupResult<P>): P[] {
    // The walk's answer, and the peers the table met meanwhile: a region cached without a peer
    // that had already joined would place keys off their k closest for the region's lifetime
    // (`peerSeen` drops only regions cached before the peer was seen). Peers the table holds
    // outside the region are filtered out below like the walk's own.
    const byKey = new Map<string, P>([[this.engine.self.key, this.engine.self]])
    for (const p of res.peers) byKey.set(p.key, p)
    for (const p of this.engine.known?.() ?? []) if (!byKey.has(p.key)) byKey.set(p.key, p)
    const all = closestK(kad, [...byKey.values()], Infinity)
    let len: number
    let ttl = this.opts.ttlMs ?? 5 * 60_000
    if (res.peers.length >= this.engine.full) {
      const far = res.peers.reduce((f, p) => compareDistance(kad, p.kad, f.kad) > 0 ? p : f)
      len = sharedBits(kad, far.kad) + 1
    } else {
      // Fewer than `full` answered: the walk met every node there is. If some peer failed to
      // answer (in a small network, usually a dead one still in others' tables), the answer is
      // trusted briefly only, so a live peer that was merely slow is not left out for long.
      len = 0
      if (!res.complete) ttl = Math.min(ttl, INCOMPLETE_TTL_MS)
    }
    const members = all.filter(p => sharedBits(kad, p.kad) >= len)
    if (res.cut !== true) this.lastLen = len
    // A walk cut short (a deadline, an abort) enumerated nothing for sure: its answer is not kept.
    if (members.length >= this.k && res.cut !== true) this.add({ len, prefix: prefixOf(kad, len), target: kad, members, at: this.now(), ttl })
    return all
  }

  private add (r: Region<P>): void {
    const old = this.byPrefix.get(r.prefix)
    if (old !== undefined) this.remove(old)
    // Regions nest: a new one replaces the cached ones it overlaps, so a key has one answer.
    for (const o of [...this.byPrefix.values()]) {
      if (sharedBits(o.target, r.target) >= Math.min(o.len, r.len)) this.remove(o)
    }
    this.byPrefix.set(r.prefix, r)
    this.lengths.set(r.len, (this.lengths.get(r.len) ?? 0) + 1)
    this.stats.regions = this.byPrefix.size
  }

  private remove (r: Region<P>): void {
    if (this.byPrefix.get(r.prefix) !== r) return
    this.byPrefix.delete(r.prefix)
    const n = (this.lengths.get(r.len) ?? 1) - 1
    if (n <= 0) this.lengths.delete(r.len)
    else this.lengths.set(r.len, n)
    this.stats.regions = this.byPrefix.size
  }

  /** A peer left: regions holding it no longer know their k closest (repair follows). */
  peerGone (peerKey: string): void {
    if (this.suspect(peerKey)) this.churned('leave')
  }

  /** A peer failed a request: its regions are looked up again (a dead peer drops out); true if any. */
  suspect (peerKey: string): boolean {
    let any = false
    for (const r of [...this.byPrefix.values()]) {
      if (r.members.some(m => m.key === peerKey)) { this.remove(r); any = true }
    }
    return any
  }

  /** A peer was seen (joined the routing table): a region under its prefix that lacks it is stale. */
  peerSeen (peer: Peer): void {
    let any = false
    for (const r of [...this.byPrefix.values()]) {
      if (sharedBits(peer.kad, r.target) >= r.len && !r.members.some(m => m.key === peer.key)) {
        this.remove(r)
        any = true
      }
    }
    if (any) this.churned('join')
  }

  /** Whether a peer is a member of some cached region (placement depends on it). */
  holdsPeer (peerKey: string): boolean {
    for (const r of this.byPrefix.values()) if (r.members.some(m => m.key === peerKey)) return true
    return false
  }

  clear (): void {
    this.byPrefix.clear()
    this.lengths.clear()
    this.stats.regions = 0
  }

  private churned (cause: 'join' | 'leave'): void {
    this.stats.dropped++
    for (const l of this.listeners) l(cause)
  }
}

export function closestK<P extends { kad: KadId }> (target: KadId, peers: P[], k: number): P[] {
  return byDistance(target, peers).slice(0, k)
}
