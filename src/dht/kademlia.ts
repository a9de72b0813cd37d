/**
 * Kademlia's two pieces, written against contacts and a request function only, so that the real
 * network (src/dht/router.ts, over libp2p streams) and the scale simulator (bench/scale) run the
 * same code:
 *   - RoutingTable: k-buckets indexed by the number of leading bits a contact shares with this
 *     node. A bucket keeps its contacts least recently seen first and prefers old contacts
 *     (Maymounkov and Mazieres, section 2.2): a new contact enters a full bucket only in the
 *     place of one that has failed.
 *   - lookup: the iterative walk. Up to `alpha` requests in flight, always to the closest
 *     contacts not yet asked; it ends when the `k` closest contacts it knows of have all
 *     answered (or failed), or after `maxQueries` requests.
 */
import { compareDistance, type KadId } from './placement.js'

export interface Contact { key: string, kad: KadId }

/** kad-dht's and the paper's bucket size: a lookup returns this many contacts. */
export const BUCKET_SIZE = 20
/** Requests in flight during a lookup (the paper's alpha). */
export const ALPHA = 3
/** Bound of one lookup's requests: far above what a walk needs (about alpha * log2 N). */
export const MAX_QUERIES = 200

/** Leading zero bits of a XOR b (256 when equal). */
export function sharedBits (a: KadId, b: KadId): number {
  for (let i = 0; i < a.length; i++) {
    const x = a[i] ^ b[i]
    if (x !== 0) return i * 8 + Math.clz32(x) - 24
  }
  return a.length * 8
}

/** Sorted copy, closest to `target` first. */
export function byDistance<C extends { kad: KadId }> (target: KadId, list: Iterable<C>): C[] {
  return [...list].sort((a, b) => compareDistance(target, a.kad, b.kad))
}

export type AddResult = 'added' | 'updated' | 'full' | 'self'

export class RoutingTable<C extends Contact> {
  /** Bucket i holds the contacts sharing exactly i leading bits with self, least recently seen first. */
  private readonly buckets = new Map<number, C[]>()
  private readonly index = new Map<string, number>()
  /** When each bucket last had a contact added or seen (refresh targets stale ones). */
  private readonly touched = new Map<number, number>()

  /** Buckets count as touched at creation: a new node's join lookup fills them, not a refresh. */
  private readonly born: number

  constructor (readonly self: Contact, readonly bucketSize = BUCKET_SIZE, private readonly now: () => number = Date.now) {
    this.born = now()
  }

  get size (): number { return this.index.size }
  has (key: string): boolean { return this.index.has(key) }

  get (key: string): C | undefined {
    const b = this.index.get(key)
    return b === undefined ? undefined : this.buckets.get(b)?.find(c => c.key === key)
  }

  bucketOf (kad: KadId): number { return sharedBits(this.self.kad, kad) }

  /**
   * A contact was seen (it answered, or asked something of us). Known: it moves to its bucket's
   * tail. New: it is appended if the bucket has room; otherwise 'full', and the caller may check
   * the bucket's oldest contact (`oldest`) and `replace` it if it is gone.
   */
  add (c: C): AddResult {
    if (c.key === this.self.key) return 'self'
    const i = this.bucketOf(c.kad)
    let bucket = this.buckets.get(i)
    if (bucket === undefined) this.buckets.set(i, bucket = [])
    this.touched.set(i, this.now())
    const at = bucket.findIndex(x => x.key === c.key)
    if (at >= 0) {
      bucket.splice(at, 1)
      bucket.push(c)
      return 'updated'
    }
    if (bucket.length >= this.bucketSize) return 'full'
    bucket.push(c)
    this.index.set(c.key, i)
    return 'added'
  }

  /** The least recently seen contact of the bucket `kad` falls in. */
  oldest (kad: KadId): C | undefined { return this.buckets.get(this.bucketOf(kad))?.[0] }

  /** Puts `fresh` in the place of `gone` (which failed to answer). */
  replace (gone: string, fresh: C): boolean {
    if (!this.remove(gone)) return false
    return this.add(fresh) === 'added'
  }

  remove (key: string): boolean {
    const i = this.index.get(key)
    if (i === undefined) return false
    const bucket = this.buckets.get(i) as C[]
    bucket.splice(bucket.findIndex(x => x.key === key), 1)
    if (bucket.length === 0) this.buckets.delete(i)
    this.index.delete(key)
    return true
  }

  all (): C[] {
    const out: C[] = []
    for (const b of this.buckets.values()) out.push(...b)
    return out
  }

  /** The `n` contacts closest to a target. */
  closest (target: KadId, n: number): C[] {
    return byDistance(target, this.all()).slice(0, n)
  }

  /** Bucket indexes (below `depth`) not touched for `ageMs`: refresh looks up a key in each. */
  stale (ageMs: number, depth: number): number[] {
    const now = this.now()
    const out: number[] = []
    for (let i = 0; i < depth; i++) {
      if (now - (this.touched.get(i) ?? this.born) >= ageMs) out.push(i)
    }
    return out
  }

  /** The number of buckets that hold contacts (about log2 N in a network of N nodes). */
  get depth (): number {
    let d = 0
    for (const i of this.buckets.keys()) d = Math.max(d, i + 1)
    return d
  }
}

/** A key sharing exactly `bits` leading bits with `self` (the rest random): refreshes bucket `bits`. */
export function keyInBucket (self: KadId, bits: number, random: (n: number) => Uint8Array): KadId {
  const k = random(self.length)
  const whole = Math.floor(bits / 8)
  for (let i = 0; i < whole; i++) k[i] = self[i]
  if (whole < self.length) {
    const rest = bits % 8
    const keep = rest === 0 ? 0 : 0xff << (8 - rest) & 0xff
    const flip = 0x80 >> rest
    k[whole] = (self[whole] & keep) | (~self[whole] & flip) | (k[whole] & ~(keep | flip) & 0xff)
  }
  return k
}

export interface LookupOptions {
  alpha?: number
  /** Size of the result (and of the set whose answers end the walk). */
  k?: number
  maxQueries?: number
  signal?: AbortSignal
}

export interface Walk<C> {
  /** The closest contacts that answered, closest first (at most k; self never included). */
  peers: C[]
  /**
   * Sequential requests on the path to the closest contact found, that contact's own answer
   * counted: 1 when it was in the caller's table, 2 when a table contact named it, and so on.
   */
  hops: number
  /** Requests sent. */
  queries: number
  /** Requests that failed (the contact is dead, refused, or too slow). */
  failed: C[]
  /** False if the walk stopped at `maxQueries` or an abort before its end condition. */
  complete: boolean
  /** Every contact met that has not failed, closest first (answered or not): a cut-short walk's best guess. */
  met: C[]
}

interface Candidate<C> { c: C, depth: number, state: 'new' | 'asking' | 'answered' | 'failed' }

/**
 * The iterative lookup of `target`, starting from `start` (the caller's closest contacts).
 * `ask(c)` sends c a FIND_NODE and resolves to the contacts c knows closest to the target, or
 * rejects. `selfKey` is never asked and never returned.
 */
export async function lookup<C extends Contact> (
  target: KadId,
  start: C[],
  ask: (c: C) => Promise<C[]>,
  selfKey: string,
  opts: LookupOptions = {}
): Promise<Walk<C>> {
  const alpha = opts.alpha ?? ALPHA
  const k = opts.k ?? BUCKET_SIZE
  const maxQueries = opts.maxQueries ?? MAX_QUERIES
  const seen = new Map<string, Candidate<C>>()
  // Candidates closest first; failed ones stay (marked) so they are not added again.
  const order: Array<Candidate<C>> = []
  const insert = (c: C, depth: number): void => {
    if (c.key === selfKey || seen.has(c.key)) return
    const e: Candidate<C> = { c, depth, state: 'new' }
    seen.set(c.key, e)
    let lo = 0
    let hi = order.length
    while (lo < hi) {
      const mid = (lo + hi) >> 1
      if (compareDistance(target, order[mid].c.kad, c.kad) < 0) lo = mid + 1
      else hi = mid
    }
    order.splice(lo, 0, e)
  }
  for (const c of start) insert(c, 0)
  const failed: C[] = []
  let queries = 0
  let inflight = 0
  let wake: (() => void) | undefined

  /** The next contact to ask: the closest one not yet asked among the k closest live ones. */
  const next = (): Candidate<C> | undefined => {
    let live = 0
    for (const e of order) {
      if (e.state === 'failed') continue
      if (e.state === 'new') return e
      if (++live >= k) return undefined
    }
    return undefined
  }
  const launch = (e: Candidate<C>): void => {
    e.state = 'asking'
    queries++
    inflight++
    ask(e.c).then(found => {
      e.state = 'answered'
      for (const f of found) insert(f, e.depth + 1)
    }, () => {
      e.state = 'failed'
      failed.push(e.c)
    }).finally(() => {
      inflight--
      wake?.()
    })
  }
  let complete = true
  const onAbort = (): void => wake?.()
  opts.signal?.addEventListener('abort', onAbort, { once: true })
  for (;;) {
    if (opts.signal?.aborted === true) { complete = false; break }
    let e: Candidate<C> | undefined
    while (inflight < alpha && queries < maxQueries && (e = next()) !== undefined) launch(e)
    if (inflight === 0) {
      if (next() !== undefined) complete = false
      break
    }
    await new Promise<void>(resolve => { wake = resolve })
    wake = undefined
  }
  opts.signal?.removeEventListener('abort', onAbort)
  // Requests still in flight after an abort finish on their own; their answers are ignored.
  const peers = order.filter(e => e.state === 'answered').slice(0, k)
  const hops = peers.length > 0 ? peers[0].depth + 1 : 0
  const met = order.filter(e => e.state !== 'failed').slice(0, k).map(e => e.c)
  return { peers: peers.map(e => e.c), hops, queries, failed, complete, met }
}
